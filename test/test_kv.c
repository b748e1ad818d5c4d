/*
 * troupe-kv, the demo service, driven over loopback like any Redis client
 * would: a small RESP client written here, plus the real redis-cli when it
 * is installed (skipped otherwise). Every command of the issue, expiry,
 * AUTH, pipelining, SAVE/BGSAVE surviving a restart, SIGTERM saving (and
 * saving again on a later SIGTERM after a failed save), client limits,
 * and bad input (each bad client gets one protocol error and is dropped;
 * the others are unaffected).
 */
#include "kv_test.h"

#include <sys/stat.h>

/* --------------------------------------------------------------- tests */

static void test_commands(void **unused)
{
    unlink(dbfile);
    server s = start(NULL);
    client *c = dial(s.port);
    EXPECT_REPLY(c, "+PONG", "PING");
    EXPECT_REPLY(c, "$hi", "PING", "hi");
    EXPECT_REPLY(c, "$hello world", "ECHO", "hello world");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v1");
    EXPECT_REPLY(c, "$v1", "GET", "k");
    EXPECT_REPLY(c, "(nil)", "GET", "missing");
    EXPECT_REPLY(c, "(nil)", "SET", "k", "v2", "NX");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v2", "XX");
    EXPECT_REPLY(c, "(nil)", "SET", "nope", "x", "XX");
    EXPECT_REPLY(c, "+OK", "SET", "fresh", "x", "NX");
    EXPECT_REPLY(c, "-ERR syntax error", "SET", "k", "v", "NX", "XX");
    EXPECT_REPLY(c, "-ERR invalid expire time in 'set' command", "SET", "k",
                 "v", "EX", "0");
    EXPECT_REPLY(c, ":1", "INCR", "n");
    EXPECT_REPLY(c, ":11", "INCRBY", "n", "10");
    EXPECT_REPLY(c, ":10", "DECR", "n");
    EXPECT_REPLY(c, "-ERR value is not an integer or out of range", "INCR",
                 "k");
    EXPECT_REPLY(c, "+OK", "SET", "big", "9223372036854775807");
    EXPECT_REPLY(c, "-ERR increment or decrement would overflow", "INCR",
                 "big");
    EXPECT_REPLY(c, "+OK", "MSET", "a", "1", "b", "2", "c", "3");
    EXPECT_REPLY(c, "[1,2,(nil),3]", "MGET", "a", "b", "zz", "c");
    EXPECT_REPLY(c, ":2", "EXISTS", "a", "b", "zz");
    EXPECT_REPLY(c, ":2", "DEL", "a", "b", "zz");
    EXPECT_REPLY(c, ":0", "EXISTS", "a");
    EXPECT_REPLY(c, ":5", "DBSIZE"); /* k fresh n big c */
    EXPECT_REPLY(c, ":-1", "TTL", "k");
    EXPECT_REPLY(c, ":-2", "TTL", "zz");
    EXPECT_REPLY(c, ":1", "EXPIRE", "k", "100");
    EXPECT_REPLY(c, ":100", "TTL", "k");
    EXPECT_REPLY(c, ":0", "EXPIRE", "zz", "100");
    EXPECT_REPLY(c, ":1", "PEXPIRE", "c", "100000");
    CMD(c, "INFO");
    assert_non_null(strstr(last, "actors_alive:"));
    /* k and c expire: counted over every shard */
    assert_non_null(strstr(last, "db0:keys=5,expires=2,avg_ttl=0\r\n"));
    EXPECT_REPLY(c, ":1", "PERSIST", "k");
    CMD(c, "INFO", "keyspace");
    assert_non_null(strstr(last, "db0:keys=5,expires=1,avg_ttl=0\r\n"));
    EXPECT_REPLY(c, "+OK", "FLUSHALL");
    EXPECT_REPLY(c, ":0", "DBSIZE");
    EXPECT_REPLY(c, "-ERR wrong number of arguments for 'get' command", "GET");
    assert_non_null(
        strstr(CMD(c, "NOSUCH", "x"), "-ERR unknown command 'NOSUCH'"));
    EXPECT_REPLY(c, "+OK", "QUIT");
    EXPECT_REPLY(c, "EOF", "PING");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

static void test_expiry(void **unused)
{
    server s = start((const char *[]){"--no-persist", NULL});
    client *c = dial(s.port);
    EXPECT_REPLY(c, "+OK", "SET", "px", "v", "PX", "400");
    EXPECT_REPLY(c, "+OK", "SET", "ex", "v", "EX", "100");
    EXPECT_REPLY(c, "+OK", "SET", "e2", "v");
    EXPECT_REPLY(c, ":1", "PEXPIRE", "e2", "400");
    EXPECT_REPLY(c, "$v", "GET", "px");
    usleep(800 * 1000);
    EXPECT_REPLY(c, "(nil)", "GET", "px");
    EXPECT_REPLY(c, ":0", "EXISTS", "e2");
    EXPECT_REPLY(c, "$v", "GET", "ex");
    EXPECT_REPLY(c, ":1", "EXPIRE", "ex", "-1"); /* in the past: deleted */
    EXPECT_REPLY(c, "(nil)", "GET", "ex");
    /* Active expiry removes keys nobody reads. */
    EXPECT_REPLY(c, "+OK", "SET", "lonely", "v", "PX", "50");
    usleep(400 * 1000);
    EXPECT_REPLY(c, ":0", "DBSIZE");
    hangup(c);
    assert_int_equal(stop(&s, SIGINT), 0);
}

static void test_auth(void **unused)
{
    server s = start(
        (const char *[]){"--no-persist", "--requirepass", "s3cret", NULL});
    client *c = dial(s.port);
    EXPECT_REPLY(c, "-NOAUTH Authentication required.", "GET", "k");
    assert_string_equal(CMD(c, "AUTH", "wrong"),
                        "-WRONGPASS invalid username-password pair or user is "
                        "disabled.");
    EXPECT_REPLY(c, "+OK", "AUTH", "s3cret");
    EXPECT_REPLY(c, "(nil)", "GET", "k");
    client *d = dial(s.port);
    EXPECT_REPLY(d, "+OK", "AUTH", "default", "s3cret");
    EXPECT_REPLY(d, "+PONG", "PING");
    hangup(c);
    hangup(d);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* 3000 commands in one write; replies come back in order even though the
 * keys live on different shards. */
static void test_pipelining(void **unused)
{
    server s = start((const char *[]){"--no-persist", NULL});
    client *c = dial(s.port);
    size_t cap = 1 << 20, n = 0;
    char *req = malloc(cap);
    for (int i = 0; i < 1000; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "key:%d", i);
        snprintf(v, sizeof v, "%d", i * 7);
        n += (size_t)snprintf(req + n, cap - n,
                              "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n"
                              "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n"
                              "*2\r\n$4\r\nINCR\r\n$%zu\r\n%s\r\n",
                              strlen(k), k, strlen(v), v, strlen(k), k,
                              strlen(k), k);
    }
    send_raw(c, req, n);
    for (int i = 0; i < 1000; i++) {
        char want[64];
        reply_into(c, last, sizeof last);
        assert_string_equal(last, "+OK");
        reply_into(c, last, sizeof last);
        snprintf(want, sizeof want, "$%d", i * 7);
        assert_string_equal(last, want);
        reply_into(c, last, sizeof last);
        snprintf(want, sizeof want, ":%d", i * 7 + 1);
        assert_string_equal(last, want);
    }
    /* inline commands (redis-benchmark's PING_INLINE) pipeline too */
    send_raw(c, "PING\r\nECHO x\r\n", 14);
    assert_string_equal((reply_into(c, last, sizeof last), last), "+PONG");
    assert_string_equal((reply_into(c, last, sizeof last), last), "$x");
    free(req);
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* SAVE and BGSAVE write a snapshot that a restart loads (even after a
 * crash: SIGKILL); SIGTERM saves on its own. */
static void test_snapshot_restart(void **unused)
{
    unlink(dbfile);
    server s = start(NULL);
    client *c = dial(s.port);
    EXPECT_REPLY(c, "+OK", "SET", "saved", "1");
    EXPECT_REPLY(c, "+OK", "SET", "ttl", "x", "EX", "1000");
    EXPECT_REPLY(c, "+OK", "SAVE");
    EXPECT_REPLY(c, "+OK", "SET", "bg", "2");
    EXPECT_REPLY(c, "+Background saving started", "BGSAVE");
    usleep(300 * 1000);
    EXPECT_REPLY(c, "+OK", "SET", "unsaved", "3");
    hangup(c);
    assert_int_equal(stop(&s, SIGKILL), -1); /* a crash: no save */

    s = start(NULL);
    c = dial(s.port);
    EXPECT_REPLY(c, "$1", "GET", "saved");
    EXPECT_REPLY(c, "$2", "GET", "bg");
    EXPECT_REPLY(c, "(nil)", "GET", "unsaved");
    assert_true(atoi(CMD(c, "TTL", "ttl") + 1) > 990);
    /* acknowledged, never SAVEd: SIGTERM must save it */
    EXPECT_REPLY(c, "+OK", "SET", "term", "4");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);

    s = start(NULL);
    c = dial(s.port);
    EXPECT_REPLY(c, "$4", "GET", "term");
    EXPECT_REPLY(c, "$1", "GET", "saved");
    /* SHUTDOWN saves too, and closes the connection */
    EXPECT_REPLY(c, "+OK", "SET", "shut", "5");
    EXPECT_REPLY(c, "EOF", "SHUTDOWN");
    hangup(c);
    assert_int_equal(stop(&s, 0), 0);
    s = start(NULL);
    c = dial(s.port);
    EXPECT_REPLY(c, "$5", "GET", "shut");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
    unlink(dbfile);
}

/* Wait up to 10 s for the file at path to contain text. */
static bool file_has(const char *path, const char *text)
{
    double t0 = tpt_now_ms();
    char buf[4096];
    while (tpt_now_ms() - t0 < 10000) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        if (strstr(buf, text))
            return true;
        usleep(5000);
    }
    return false;
}

static char fs_dir[160], fs_path[192], fs_log[192];

/* The files of test_sigterm_after_failed_save; main removes them too, in
 * case a failed run left them. */
static void failed_save_cleanup(void)
{
    snprintf(fs_dir, sizeof fs_dir, "%s.d", dbfile);
    snprintf(fs_path, sizeof fs_path, "%s/dump.tkv", fs_dir);
    snprintf(fs_log, sizeof fs_log, "%s.log", dbfile);
    unlink(fs_path);
    rmdir(fs_dir);
    unlink(fs_log);
}

/* SIGTERM whose save fails (the dump directory is gone): the server keeps
 * serving, and a later SIGTERM is an orderly shutdown again that saves
 * every write acknowledged in between (not a forced kill that loses them). */
static void test_sigterm_after_failed_save(void **unused)
{
    failed_save_cleanup();
    const char *dir = fs_dir, *path = fs_path, *log = fs_log;
    assert_int_equal(mkdir(dir, 0755), 0);
    /* the server's stderr (its log) goes to a file we can read */
    server s = start_logged((const char *[]){"--dbfile", path, NULL}, log);
    client *c = dial(s.port);
    EXPECT_REPLY(c, "+OK", "SET", "before", "1");

    /* A directory that is gone, not a read-only one: the tests may run as
     * root, whom permissions do not stop. */
    assert_int_equal(rmdir(dir), 0);
    kill(s.pid, SIGTERM);
    if (!file_has(log, "cannot save before exit; still running"))
        fail_msg("the failed save was not reported");
    /* the shards thaw right after: writes are acknowledged again */
    double t0 = tpt_now_ms();
    while (strcmp(CMD(c, "SET", "between", "2"), "+OK") != 0) {
        if (tpt_now_ms() - t0 > 10000)
            fail_msg("writes not accepted again: '%s'", last);
        usleep(5000);
    }
    EXPECT_REPLY(c, "+OK", "SET", "before", "1b");
    hangup(c);

    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(stop(&s, SIGTERM), 0); /* saved, then ended */

    s = start((const char *[]){"--dbfile", path, NULL});
    c = dial(s.port);
    EXPECT_REPLY(c, "$1b", "GET", "before");
    EXPECT_REPLY(c, "$2", "GET", "between");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
    failed_save_cleanup();
}

/* Each malformed request gets one protocol error, then the connection is
 * closed; a client connected alongside never notices. */
static void test_bad_input(void **unused)
{
    server s =
        start((const char *[]){"--no-persist", "--max-request", "4096", NULL});
    client *good = dial(s.port);
    EXPECT_REPLY(good, "+OK", "SET", "k", "v");
    static const struct {
        const char *req;
        const char *err;
    } bad[] = {
        {"*2\r\n$3\r\nGET\r\n$-5\r\n", "invalid bulk length"},
        {"*1\r\n$99999999999999\r\n", "invalid bulk length"},
        {"*1\r\n$5000\r\n", "invalid bulk length"}, /* over the limit */
        {"*99999999\r\n", "invalid multibulk length"},
        {"*-\r\n", "invalid multibulk length"},
        {"*1\r\nGET\r\n", "expected '$', got 'G'"},
        {"*1\r\n$3\r\nGETxx\r\njunk after the bad frame",
         "bulk not terminated"},
        {"*2\r\n$3\r\nGET\r\n$4090\r\n", "request too large"},
        {"*1\r\n$123456789012345678901234567890\r\n", "invalid bulk length"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        client *c = dial(s.port);
        EXPECT_REPLY(c, "+PONG", "PING");
        send_raw(c, bad[i].req, strlen(bad[i].req));
        reply_into(c, last, sizeof last);
        if (!strstr(last, "-ERR Protocol error: ") || !strstr(last, bad[i].err))
            fail_msg("request %zu: got '%s', want '%s'", i, last, bad[i].err);
        reply_into(c, last, sizeof last);
        assert_string_equal(last, "EOF");
        hangup(c);
        EXPECT_REPLY(good, "$v", "GET", "k");
    }
    /* An inline line longer than 64 KiB */
    client *c = dial(s.port);
    char *junk = malloc(70000);
    memset(junk, 'a', 70000);
    send_raw(c, junk, 70000);
    reply_into(c, last, sizeof last);
    assert_non_null(strstr(last, "too big inline request"));
    free(junk);
    hangup(c);
    EXPECT_REPLY(good, "+PONG", "PING");
    hangup(good);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* Replies and error texts as Redis 7.0 gives them, for the commands the
 * connection answers itself. */
static void test_redis7_replies(void **unused)
{
    server s = start((const char *[]){"--no-persist", NULL});
    client *c = dial(s.port);
    EXPECT_REPLY(c, "-ERR syntax error", "FLUSHALL", "bogus");
    EXPECT_REPLY(c, "-ERR syntax error", "FLUSHDB", "bogus");
    EXPECT_REPLY(c, "+OK", "SET", "k", "v");
    EXPECT_REPLY(c, ":1", "DBSIZE"); /* not flushed by the bad ones */
    EXPECT_REPLY(c, "+OK", "FLUSHDB", "ASYNC");
    EXPECT_REPLY(c, "+OK", "FLUSHALL", "sync");
    EXPECT_REPLY(c, ":0", "DBSIZE");
    EXPECT_REPLY(c, "-ERR syntax error", "BGSAVE", "bogus");
    EXPECT_REPLY(c, "-ERR syntax error", "BGSAVE", "SCHEDULE", "x");
    EXPECT_REPLY(c,
                 "-ERR unknown command 'foo', with args beginning with: 'a' "
                 "'b' ",
                 "foo", "a", "b");
    EXPECT_REPLY(c, "-ERR unknown subcommand 'anything'. Try CLIENT HELP.",
                 "CLIENT", "anything");
    EXPECT_REPLY(c, "-ERR wrong number of arguments for 'client' command",
                 "CLIENT");
    EXPECT_REPLY(c,
                 "-ERR wrong number of arguments for 'client|setname' "
                 "command",
                 "CLIENT", "SETNAME");
    EXPECT_REPLY(c,
                 "-ERR Client names cannot contain spaces, newlines or "
                 "special characters.",
                 "CLIENT", "SETNAME", "a b");
    EXPECT_REPLY(c, "(nil)", "CLIENT", "GETNAME");
    EXPECT_REPLY(c, "+OK", "CLIENT", "SETNAME", "first");
    EXPECT_REPLY(c, "$first", "CLIENT", "GETNAME");
    long id = atol(CMD(c, "CLIENT", "ID") + 1);
    assert_true(id > 0);
    client *d = dial(s.port);
    long id2 = atol(CMD(d, "CLIENT", "ID") + 1);
    assert_true(id2 > id);
    /* CLIENT LIST: a line per client with its real fields */
    CMD(c, "CLIENT", "LIST");
    char want[96];
    snprintf(want, sizeof want, "id=%ld addr=127.0.0.1:", id);
    assert_non_null(strstr(last, want));
    assert_non_null(strstr(last, " name=first age="));
    assert_non_null(strstr(last, " cmd=client|list "));
    snprintf(want, sizeof want, "id=%ld ", id2);
    assert_non_null(strstr(last, want));
    assert_non_null(strstr(last, " cmd=client|id "));
    CMD(c, "CLIENT", "INFO");
    snprintf(want, sizeof want, "id=%ld ", id2);
    assert_null(strstr(last, want)); /* only this client */
    /* CLIENT KILL ID: the other client is disconnected */
    snprintf(want, sizeof want, "%ld", id2);
    EXPECT_REPLY(c, ":1", "CLIENT", "KILL", "ID", want);
    /* gone at once, though its actor may not have ended yet */
    EXPECT_REPLY(c, ":0", "CLIENT", "KILL", "ID", want);
    EXPECT_REPLY(d, "EOF", "PING");
    hangup(d);
    EXPECT_REPLY(c, "-ERR No such client", "CLIENT", "KILL", "1.2.3.4:5");
    /* COMMAND COUNT: every command troupe-kv runs */
    assert_true(atol(CMD(c, "COMMAND", "COUNT") + 1) > 30);
    EXPECT_REPLY(c, "[]", "COMMAND", "DOCS", "get");
    EXPECT_REPLY(c, "-ERR unknown subcommand 'bogus'. Try COMMAND HELP.",
                 "COMMAND", "bogus");
    /* CONFIG GET: what redis-benchmark asks first */
    EXPECT_REPLY(c, "[save,]", "CONFIG", "GET", "save");
    EXPECT_REPLY(c, "[appendonly,no]", "CONFIG", "GET", "appendonly");
    EXPECT_REPLY(c, "[]", "CONFIG", "GET", "nosuch");
    EXPECT_REPLY(c, "+OK", "SELECT", "0");
    EXPECT_REPLY(c, "-ERR DB index is out of range", "SELECT", "1");
    /* INFO sections */
    CMD(c, "INFO", "stats");
    assert_non_null(strstr(last, "# Stats\r\n"));
    assert_non_null(strstr(last, "total_commands_processed:"));
    assert_non_null(strstr(last, "rejected_connections:0\r\n"));
    assert_null(strstr(last, "# Server"));
    assert_null(strstr(last, "# Keyspace"));
    EXPECT_REPLY(c, "+OK", "SET", "k", "v");
    CMD(c, "INFO");
    static const char *const sections[] = {"# Server\r\n",
                                           "# Clients\r\n",
                                           "# Memory\r\n",
                                           "# Persistence\r\n",
                                           "# Stats\r\n",
                                           "# Keyspace\r\ndb0:keys=1,"};
    for (size_t i = 0; i < sizeof sections / sizeof *sections; i++)
        if (!strstr(last, sections[i]))
            fail_msg("INFO lacks '%s'", sections[i]);
    CMD(c, "INFO", "clients", "keyspace");
    assert_non_null(strstr(last, "connected_clients:1\r\n"));
    assert_non_null(strstr(last, "db0:keys=1,"));
    assert_null(strstr(last, "# Stats"));
    EXPECT_REPLY(c, "$", "INFO", "nosuch");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* KEYS merges every shard's keys; RANDOMKEY finds a key whichever shard
 * has it; SCAN's cursor is checked. */
static void test_keyspace_walks(void **unused)
{
    server s = start((const char *[]){"--no-persist", "--shards", "4", NULL});
    client *c = dial(s.port);
    EXPECT_REPLY(c, "(nil)", "RANDOMKEY");
    EXPECT_REPLY(c, "[]", "KEYS", "*");
    EXPECT_REPLY(c, "+OK", "SET", "only", "1");
    EXPECT_REPLY(c, "$only", "RANDOMKEY");
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        EXPECT_REPLY(c, "+OK", "SET", k, "v");
    }
    CMD(c, "KEYS", "k1*"); /* k1, k10..k19 */
    int n = 0;
    for (const char *p = last; (p = strstr(p, "k1")); p++)
        n++;
    assert_int_equal(n, 11);
    /* SCAN (walked across shards by test_kv_types): a cursor naming no
     * shard of ours starts over, like cursor 0 */
    static char first[sizeof last];
    memcpy(first, CMD(c, "SCAN", "0", "COUNT", "1000"), sizeof first);
    assert_true(first[0] == '[');
    EXPECT_REPLY(c, first, "SCAN", "17732923532771328", "COUNT", "1000");
    EXPECT_REPLY(c, "-ERR invalid cursor", "SCAN", "x");
    EXPECT_REPLY(c, "-ERR invalid cursor", "SCAN", "99999999999999999999");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* Read exactly the bytes of want (pushes are compared byte for byte with
 * Redis's RESP2). */
static void expect_raw(client *c, const char *want)
{
    size_t n = strlen(want);
    char got[512];
    assert_true(n < sizeof got);
    for (size_t i = 0; i < n; i++) {
        int ch = getb(c);
        if (ch < 0)
            fail_msg("EOF after '%.*s', want '%s'", (int)i, got, want);
        got[i] = (char)ch;
    }
    got[n] = '\0';
    assert_string_equal(got, want);
}

/* Ask until the reply is want (bounded), e.g. a count that follows a
 * subscriber's end. */
static void await_reply(client *c, const char *want, int argc,
                        const char **argv)
{
    double t0 = tpt_now_ms();
    for (;;) {
        cmdv(c, argc, argv);
        reply_into(c, last, sizeof last);
        if (!strcmp(last, want))
            return;
        if (tpt_now_ms() - t0 > 10000)
            fail_msg("got '%s', want '%s'", last, want);
        usleep(1000);
    }
}

/* PUBLISH / SUBSCRIBE / PSUBSCRIBE, byte for byte as Redis 7.0 (RESP2);
 * a subscriber that disconnects is removed from its channel. */
static void test_pubsub(void **unused)
{
    server s = start((const char *[]){"--no-persist", NULL});
    client *sub = dial(s.port), *psub = dial(s.port), *pub = dial(s.port);
    cmdv(sub, 3, (const char *[]){"SUBSCRIBE", "news", "sport"});
    expect_raw(sub, "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
                    "*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n");
    cmdv(psub, 2, (const char *[]){"PSUBSCRIBE", "n*"});
    expect_raw(psub, "*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:1\r\n");
    EXPECT_REPLY(pub, ":2", "PUBLISH", "news", "hello");
    expect_raw(sub, "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n");
    expect_raw(psub, "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n"
                     "$5\r\nhello\r\n");
    EXPECT_REPLY(pub, ":1", "PUBLISH", "sport", "goal");
    expect_raw(sub, "*3\r\n$7\r\nmessage\r\n$5\r\nsport\r\n$4\r\ngoal\r\n");
    EXPECT_REPLY(pub, ":0", "PUBLISH", "other", "x");
    EXPECT_REPLY(pub, "[news,:1,sport,:1,zz,:0]", "PUBSUB", "NUMSUB", "news",
                 "sport", "zz");
    EXPECT_REPLY(pub, ":1", "PUBSUB", "NUMPAT");
    EXPECT_REPLY(pub, "[news]", "PUBSUB", "CHANNELS", "n*");
    CMD(pub, "CLIENT", "LIST");
    assert_non_null(strstr(last, " flags=P db=0 sub=2 psub=0 "));
    assert_non_null(strstr(last, " flags=P db=0 sub=0 psub=1 "));
    /* the subscribed context */
    cmdv(sub, 2, (const char *[]){"GET", "k"});
    expect_raw(sub, "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / "
                    "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in "
                    "this context\r\n");
    cmdv(sub, 1, (const char *[]){"PING"});
    expect_raw(sub, "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    cmdv(sub, 2, (const char *[]){"UNSUBSCRIBE", "news"});
    expect_raw(sub, "*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    EXPECT_REPLY(pub, ":1", "PUBLISH", "news", "psub only");
    expect_raw(psub, "*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n"
                     "$9\r\npsub only\r\n");
    cmdv(sub, 1, (const char *[]){"UNSUBSCRIBE"});
    expect_raw(sub, "*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:0\r\n");
    EXPECT_REPLY(sub, "+PONG", "PING"); /* out of the context */
    /* RESET leaves every channel and pattern, silently */
    cmdv(sub, 3, (const char *[]){"PSUBSCRIBE", "a*", "b*"});
    expect_raw(sub, "*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:1\r\n"
                    "*3\r\n$10\r\npsubscribe\r\n$2\r\nb*\r\n:2\r\n");
    EXPECT_REPLY(sub, "+RESET", "RESET");
    EXPECT_REPLY(sub, "$x", "ECHO", "x");
    EXPECT_REPLY(pub, ":0", "PUBLISH", "abc", "x");
    /* a subscriber that ends is removed: its channel's count drops */
    client *gone = dial(s.port);
    cmdv(gone, 2, (const char *[]){"SUBSCRIBE", "x"});
    expect_raw(gone, "*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n");
    EXPECT_REPLY(pub, "[x,:1]", "PUBSUB", "NUMSUB", "x");
    hangup(gone);
    await_reply(pub, "[x,:0]", 3, (const char *[]){"PUBSUB", "NUMSUB", "x"});
    EXPECT_REPLY(pub, ":0", "PUBLISH", "x", "nobody");
    hangup(psub);
    await_reply(pub, ":0", 2, (const char *[]){"PUBSUB", "NUMPAT"});
    hangup(sub);
    hangup(pub);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* The password from a file or the environment, never on the command
 * line (where /proc/PID/cmdline shows it). */
static void test_password_file_and_env(void **unused)
{
    char path[sizeof dbfile + 8];
    snprintf(path, sizeof path, "%s.pass", dbfile);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("from-file\n", f);
    fclose(f);
    server s = start(
        (const char *[]){"--no-persist", "--requirepass-file", path, NULL});
    client *c = dial(s.port);
    EXPECT_REPLY(c, "-NOAUTH Authentication required.", "PING");
    EXPECT_REPLY(c,
                 "-WRONGPASS invalid username-password pair or user is "
                 "disabled.",
                 "AUTH", "from-file\n");
    EXPECT_REPLY(c, "+OK", "AUTH", "from-file");
    EXPECT_REPLY(c, "+PONG", "PING");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
    unlink(path);

    setenv("TROUPE_KV_PASSWORD", "from-env", 1);
    s = start((const char *[]){"--no-persist", NULL});
    unsetenv("TROUPE_KV_PASSWORD");
    char cmdline[4096], procpath[64];
    snprintf(procpath, sizeof procpath, "/proc/%d/cmdline", (int)s.pid);
    f = fopen(procpath, "r");
    assert_non_null(f);
    size_t n = fread(cmdline, 1, sizeof cmdline, f);
    fclose(f);
    assert_null(memmem(cmdline, n, "from-env", 8));
    c = dial(s.port);
    EXPECT_REPLY(c, "-NOAUTH Authentication required.", "PING");
    EXPECT_REPLY(c, "+OK", "AUTH", "from-env");
    EXPECT_REPLY(c, "+PONG", "PING");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0);
    /* an unreadable file is refused at start */
    char bad[sizeof dbfile + 16];
    snprintf(bad, sizeof bad, "%s.nosuch", dbfile);
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd,
             "%s --no-persist --port 0 --requirepass-file %s 2>/dev/null",
             kv_bin, bad);
    assert_int_not_equal(system(cmd), 0);
}

/* A fresh server, and a command (fmt has one %u: its port) started with
 * its output to read. */
static FILE *run_against(server *s, const char *fmt)
{
    *s = start((const char *[]){"--no-persist", NULL});
    char cmd[256];
    snprintf(cmd, sizeof cmd, fmt, (unsigned)s->port);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    return f;
}

/* redis-cli subscribes and receives what another redis-cli publishes. */
static void test_redis_cli_pubsub(void **unused)
{
    if (!have_redis_cli())
        skip();
    server s;
    FILE *sub = run_against(&s, "timeout 10 redis-cli -p %u SUBSCRIBE ch 2>&1");
    client *c = dial(s.port);
    await_reply(c, "[ch,:1]", 3, (const char *[]){"PUBSUB", "NUMSUB", "ch"});
    cli_expect(s.port, "PUBLISH ch hi", "1");
    cli_expect(s.port, "PUBLISH other x", "0");
    char line[128], got[512] = "";
    for (int i = 0; i < 6 && fgets(line, sizeof line, sub); i++)
        strncat(got, line, sizeof got - strlen(got) - 1);
    assert_string_equal(got, "subscribe\nch\n1\nmessage\nch\nhi\n");
    hangup(c);
    assert_int_equal(stop(&s, SIGTERM), 0); /* the subscriber sees EOF */
    pclose(sub);
}

/* redis-benchmark's default suite (no -t) runs every test without an
 * error (it asks CONFIG GET save/appendonly first). */
static void test_redis_benchmark(void **unused)
{
    if (system("command -v redis-benchmark >/dev/null 2>&1") != 0) {
        fprintf(stderr, "redis-benchmark not installed: skipped\n");
        skip();
    }
    server s;
    FILE *f = run_against(&s, "redis-benchmark -p %u -q -n 2000 2>&1");
    static char out[1 << 16];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    assert_int_equal(pclose(f), 0);
    static const char *const tests[] = {"PING_INLINE: ",
                                        "PING_MBULK: ",
                                        "SET: ",
                                        "GET: ",
                                        "INCR: ",
                                        "LPUSH: ",
                                        "RPUSH: ",
                                        "LPOP: ",
                                        "RPOP: ",
                                        "SADD: ",
                                        "HSET: ",
                                        "SPOP: ",
                                        "ZADD: ",
                                        "ZPOPMIN: ",
                                        "LRANGE_100 (first 100 elements): ",
                                        "LRANGE_600 (first 600 elements): ",
                                        "MSET (10 keys): "};
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        char want[96];
        snprintf(want, sizeof want, "%srequests per second", tests[i]);
        /* the final line of a test: "<name>: <n> requests per second" */
        const char *p = strstr(out, tests[i]);
        bool done = false;
        for (; p; p = strstr(p + 1, tests[i]))
            done |= strncmp(p + strlen(tests[i]), "rps=", 4) != 0 &&
                    strstr(p, "requests per second") != NULL;
        if (!done)
            fail_msg("redis-benchmark did not finish '%s':\n%s", tests[i], out);
    }
    if (strstr(out, "ERR") || strstr(out, "rror"))
        fail_msg("redis-benchmark reported an error:\n%s", out);
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* The real redis-cli, unchanged, when installed (Debian redis-tools):
 * every command of the issue, expiry, pipelining (--pipe). */
static void test_redis_cli(void **unused)
{
    if (!have_redis_cli())
        skip();
    server s = start((const char *[]){"--no-persist", NULL});
    char cmd[512];
    static const char *const script[][2] = {
        {"PING", "PONG"},         {"ECHO hi", "hi"},
        {"SET cli hello", "OK"},  {"GET cli", "hello"},
        {"SET cli other NX", ""}, {"SET cli world XX", "OK"},
        {"SET fresh v XX", ""},   {"INCRBY ctr 5", "5"},
        {"INCR ctr", "6"},        {"DECR ctr", "5"},
        {"MSET a 1 b 2", "OK"},   {"MGET cli ctr a b", "world\n5\n1\n2"},
        {"DEL a b", "2"},         {"EXISTS cli a", "1"},
        {"SET t v EX 50", "OK"},  {"TTL t", "50"},
        {"EXPIRE cli 100", "1"},  {"TTL cli", "100"},
        {"DBSIZE", "3"},          {"FLUSHALL", "OK"},
        {"DBSIZE", "0"},
    };
    for (size_t i = 0; i < sizeof script / sizeof script[0]; i++)
        cli_expect(s.port, script[i][0], script[i][1]);
    /* INFO reports the runtime's statistics */
    snprintf(cmd, sizeof cmd, "redis-cli -p %u INFO | grep -q '^actors_alive:'",
             (unsigned)s.port);
    assert_int_equal(system(cmd), 0);
    /* expiry: a 1 ms key is gone by the next command (another process) */
    cli_expect(s.port, "SET p v PX 1", "OK");
    cli_expect(s.port, "EXISTS p", "0");
    /* redis-cli --pipe: a mass insert */
    snprintf(cmd, sizeof cmd,
             "for i in $(seq 1 500); do printf 'SET m:%%s %%s\\r\\n' $i $i; "
             "done | redis-cli -p %u --pipe 2>&1 | grep -q 'errors: 0, "
             "replies: 500'",
             (unsigned)s.port);
    assert_int_equal(system(cmd), 0);
    cli_expect(s.port, "QUIT", "OK");
    assert_int_equal(stop(&s, SIGTERM), 0);
}

/* redis-cli against AUTH, SAVE and a restart, and SIGTERM saving. */
static void test_redis_cli_persistence(void **unused)
{
    if (!have_redis_cli())
        skip();
    unlink(dbfile);
    server s = start((const char *[]){"--requirepass", "sekrit", NULL});
    char want[128];
    snprintf(want, sizeof want, "NOAUTH Authentication required.");
    cli_expect(s.port, "GET k", want);
    cli_expect(s.port, "-a sekrit --no-auth-warning SET k saved", "OK");
    cli_expect(s.port, "-a sekrit --no-auth-warning SAVE", "OK");
    cli_expect(s.port, "-a sekrit --no-auth-warning SET k2 on-sigterm", "OK");
    assert_int_equal(stop(&s, SIGTERM), 0); /* SIGTERM saves first */
    s = start((const char *[]){"--requirepass", "sekrit", NULL});
    cli_expect(s.port, "-a sekrit --no-auth-warning GET k", "saved");
    cli_expect(s.port, "-a sekrit --no-auth-warning GET k2", "on-sigterm");
    cli_expect(s.port, "-a sekrit --no-auth-warning BGSAVE",
               "Background saving started");
    assert_int_equal(stop(&s, SIGTERM), 0);
    unlink(dbfile);
}

int main(void)
{
    if (kvt_setup() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_snapshot_restart),
        cmocka_unit_test(test_sigterm_after_failed_save),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_redis7_replies),
        cmocka_unit_test(test_keyspace_walks),
        cmocka_unit_test(test_pubsub),
        cmocka_unit_test(test_password_file_and_env),
        cmocka_unit_test(test_redis_cli),
        cmocka_unit_test(test_redis_cli_persistence),
        cmocka_unit_test(test_redis_cli_pubsub),
        cmocka_unit_test(test_redis_benchmark),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(dbfile);
    failed_save_cleanup();
    return rc;
}
