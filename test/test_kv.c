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
    CMD(c, "INFO");
    assert_non_null(strstr(last, "actors_alive:"));
    assert_non_null(strstr(last, "db0:keys=5"));
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
    int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(logfd >= 0);
    int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
    dup2(logfd, 2);
    server s = start((const char *[]){"--dbfile", path, NULL});
    dup2(saved, 2);
    close(saved);
    close(logfd);
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

static void test_max_clients(void **unused)
{
    server s =
        start((const char *[]){"--no-persist", "--maxclients", "2", NULL});
    client *a = dial(s.port), *b = dial(s.port);
    EXPECT_REPLY(a, "+PONG", "PING");
    EXPECT_REPLY(b, "+PONG", "PING");
    client *c = dial(s.port);
    reply_into(c, last, sizeof last);
    assert_string_equal(last, "-ERR max number of clients reached");
    hangup(c);
    hangup(b);
    usleep(100 * 1000);
    c = dial(s.port);
    EXPECT_REPLY(c, "+PONG", "PING");
    hangup(c);
    hangup(a);
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
        cmocka_unit_test(test_max_clients),
        cmocka_unit_test(test_redis_cli),
        cmocka_unit_test(test_redis_cli_persistence),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(dbfile);
    failed_save_cleanup();
    return rc;
}
