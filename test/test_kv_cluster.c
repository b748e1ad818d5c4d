/*
 * troupe-kv in cluster mode (examples/kv/cluster.c): a real nats-server
 * with JetStream and three troupe-kv nodes a, b, c, driven with the real
 * redis-cli. Every key is reachable from every node, whichever node owns
 * it; a node killed with kill -9 makes its keys answer "-ERR ...
 * unavailable" within a bounded time while the others keep serving
 * theirs; restarted on its snapshot, its keys are back everywhere. A node
 * started with another --shards is refused. The survivors' logs must say
 * that c went down and, after the restart, that its shards were fetched
 * again: a restarted node numbers its actors as before, so stale shard
 * pids would reach the new shards too, and only the log shows that the
 * directory followed NODEDOWN and NODEUP.
 *
 * Keys are placed as the nodes place them (kv_shard_of over all shards,
 * global shard g on member g / SHARDS), so each step names keys of every
 * owner.
 */
#include "kv_test.h"
#include "node/node_test.h"

#include "examples/kv/kv.h"

#define SHARDS "2" /* per node */
#define NODES "a,b,c"
#define KEYS 2 /* per owner and writer */

static const char *const names[3] = {"a", "b", "c"};
static server nodes[3];
static char dbfiles[3][96], logs[3][96];      /* logs: each node's stderr */
static kv_server layout = {.nshards = 3 * 2}; /* for kv_shard_of */

/* The member that owns key. */
static unsigned owner(const char *key)
{
    return kv_shard_of(&layout, key, strlen(key)) / 2;
}

/* keys[o][w][i]: owned by node o, first written through node w;
 * probes[o]: owned by node o, never written. */
static char keys[3][3][KEYS][32], probes[3][32];

static void make_keys(void)
{
    unsigned have[3][3] = {{0}};
    for (unsigned n = 0, left = 3 * 3 * KEYS; left; n++) {
        char k[32];
        snprintf(k, sizeof k, "key:%u", n);
        unsigned o = owner(k), w = n % 3;
        if (have[o][w] < KEYS) {
            strcpy(keys[o][w][have[o][w]++], k);
            left--;
        }
    }
    for (unsigned n = 0, left = 3; left; n++) {
        char k[32];
        snprintf(k, sizeof k, "probe:%u", n);
        if (!probes[owner(k)][0]) {
            strcpy(probes[owner(k)], k);
            left--;
        }
    }
}

static void start_node(unsigned i, const char *shards)
{
    int saved = dup(2), fd = open(logs[i], O_WRONLY | O_CREAT | O_APPEND, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2); /* the child's stderr */
    close(fd);
    nodes[i] =
        start((const char *[]){"--dbfile", dbfiles[i], "--shards", shards,
                               "--cluster", nt_nats.url, "--node", names[i],
                               "--nodes", NODES, NULL});
    dup2(saved, 2);
    close(saved);
}

/* Poll node i's log until it holds line at least times times; fail
 * after 5 s. Each node says when another goes down or comes up, even
 * with --quiet: the proof that it changed its shard directory. */
static void await_log(unsigned i, const char *line, int times)
{
    double t0 = tpt_now_ms();
    for (;;) {
        char buf[1 << 14] = {0};
        FILE *f = fopen(logs[i], "r");
        assert_non_null(f);
        (void)!fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        int n = 0;
        for (const char *p = buf; (p = strstr(p, line)) != NULL; p++)
            n++;
        if (n >= times)
            return;
        if (tpt_now_ms() - t0 > 5000)
            fail_msg("node %s said '%s' %d times, want %d; its log:\n%s",
                     names[i], line, n, times, buf);
        usleep(20000);
    }
}

/* GET key through the RESP client on port: the rendered reply. */
static const char *get(uint16_t port, const char *key)
{
    client *c = dial(port);
    CMD(c, "GET", key);
    hangup(c);
    return last;
}

/* Poll until GET key on port answers as wanted (an exact reply, or any
 * error containing "unavailable" for want NULL); fail after deadline_ms. */
static void await_get(uint16_t port, const char *key, const char *want,
                      double deadline_ms)
{
    double t0 = tpt_now_ms();
    for (;;) {
        const char *r = get(port, key);
        if (want ? strcmp(r, want) == 0
                 : r[0] == '-' && strstr(r, "unavailable") != NULL)
            return;
        if (tpt_now_ms() - t0 > deadline_ms)
            fail_msg("GET %s on port %u: '%s' after %.0f ms, want %s", key,
                     (unsigned)port, r, deadline_ms,
                     want ? want : "an 'unavailable' error");
        usleep(20000);
    }
}

/* Wait until every node has found every other: a key of each owner
 * answers on each node. */
static void await_cluster(void)
{
    for (unsigned n = 0; n < 3; n++)
        for (unsigned o = 0; o < 3; o++)
            await_get(nodes[n].port, probes[o], "(nil)", 15000);
}

/* Run troupe-kv as node c with --shards 3 (the others run SHARDS): it
 * must stop at once with status 1, saying why on stderr. */
static void expect_refused(void)
{
    char errfile[96], msg[1024] = {0};
    snprintf(errfile, sizeof errfile, "/tmp/troupe-kv-cluster-%d.err",
             (int)getpid());
    const char *argv[] = {kv_bin,     "--port", "0",         "--no-persist",
                          "--shards", "3",      "--cluster", nt_nats.url,
                          "--node",   "c",      "--nodes",   NODES,
                          "--quiet",  NULL};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        dup2(open("/dev/null", O_WRONLY), 1);
        execv(kv_bin, (char *const *)argv);
        _exit(127);
    }
    double t0 = tpt_now_ms();
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (tpt_now_ms() - t0 > 10000) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("a node with --shards 3 was not refused");
        }
        usleep(20000);
    }
    FILE *f = fopen(errfile, "r");
    assert_non_null(f);
    (void)!fread(msg, 1, sizeof msg - 1, f);
    fclose(f);
    unlink(errfile);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1 ||
        !strstr(msg, "every node needs the same"))
        fail_msg("refused node: status %#x, stderr '%s'", st, msg);
}

/* redis-cli SET key to "v-key" through node n. */
static void cli_set(unsigned n, const char *key)
{
    char args[96];
    snprintf(args, sizeof args, "SET %.40s v-%.40s", key, key);
    cli_expect(nodes[n].port, args, "OK");
}

/* redis-cli GET key through node n answers "v-key". */
static void cli_get(unsigned n, const char *key)
{
    char args[64], want[64];
    snprintf(args, sizeof args, "GET %.40s", key);
    snprintf(want, sizeof want, "v-%.40s", key);
    cli_expect(nodes[n].port, args, want);
}

static void test_every_key_from_every_node(void **unused)
{
    (void)unused;
    for (unsigned i = 0; i < 3; i++) {
        unlink(dbfiles[i]);
        start_node(i, SHARDS);
    }
    await_cluster();
    for (unsigned o = 0; o < 3; o++)
        for (unsigned w = 0; w < 3; w++)
            for (unsigned i = 0; i < KEYS; i++) {
                cli_set(w, keys[o][w][i]);
                for (unsigned n = 0; n < 3; n++)
                    cli_get(n, keys[o][w][i]);
            }
    /* One command over keys of every owner, from every node. */
    char args[128], want[128];
    snprintf(args, sizeof args, "MGET %s %s %s", keys[0][1][0], keys[1][2][0],
             keys[2][0][0]);
    snprintf(want, sizeof want, "v-%s\nv-%s\nv-%s", keys[0][1][0],
             keys[1][2][0], keys[2][0][0]);
    for (unsigned n = 0; n < 3; n++)
        cli_expect(nodes[n].port, args, want);
    /* Commands over every shard see the remote ones too. */
    char count[16];
    snprintf(count, sizeof count, "%d", 3 * 3 * KEYS);
    for (unsigned n = 0; n < 3; n++)
        cli_expect(nodes[n].port, "DBSIZE", count);
    /* Each node saves its own shards. */
    for (unsigned n = 0; n < 3; n++)
        cli_expect(nodes[n].port, "SAVE", "OK");
}

/* A key of the wanted owner, named prefix:N. */
static void key_of(unsigned o, const char *prefix, char *out, size_t size)
{
    for (unsigned n = 0;; n++) {
        if (snprintf(out, size, "%.16s:%u", prefix, n) >= (int)size)
            fail_msg("key too long");
        if (owner(out) == o)
            return;
    }
}

/* RENAME moves a value to the new key's shard, which answers the client:
 * through every node, between every two owners, and RENAMENX back. The
 * connection's pid crosses nodes in the move (the destination must
 * answer the right actor, and not crash), and the source's batch counts
 * as answered though the answer comes from elsewhere. */
static void test_rename_across_nodes(void **unused)
{
    (void)unused;
    for (unsigned n = 0; n < 3; n++)
        for (unsigned src = 0; src < 3; src++)
            for (unsigned dst = 0; dst < 3; dst++) {
                char from[32], to[32], want[48];
                key_of(src, "ren-from", from, sizeof from);
                key_of(dst, "ren-to", to, sizeof to);
                snprintf(want, sizeof want, "$v-%s", from);
                client *c = dial(nodes[n].port);
                EXPECT_REPLY(c, "+OK", "SET", from, want + 1);
                EXPECT_REPLY(c, "+OK", "RENAME", from, to);
                for (unsigned r = 0; r < 3; r++) {
                    assert_string_equal(get(nodes[r].port, to), want);
                    assert_string_equal(get(nodes[r].port, from), "(nil)");
                }
                EXPECT_REPLY(c, ":1", "RENAMENX", to, from);
                EXPECT_REPLY(c, ":0", "RENAMENX", from, from);
                for (unsigned r = 0; r < 3; r++) {
                    assert_string_equal(get(nodes[r].port, from), want);
                    assert_string_equal(get(nodes[r].port, to), "(nil)");
                }
                EXPECT_REPLY(c, ":1", "DEL", from);
                hangup(c);
            }
}

/* Read one line (without "\r\n") into out. */
static void read_line(client *c, char *out, size_t size)
{
    size_t n = 0;
    int ch;
    while ((ch = getb(c)) >= 0 && ch != '\n')
        if (n < size - 1)
            out[n++] = (char)ch;
    out[n] = '\0';
    if (ch < 0)
        fail_msg("EOF or timeout while reading a reply");
    if (n && out[n - 1] == '\r')
        out[n - 1] = '\0';
}

/* Read one array of count bulks of len bytes each, every byte 'x'. */
static void expect_bulks(client *c, long count, long len)
{
    char line[256], want[32];
    read_line(c, line, sizeof line);
    snprintf(want, sizeof want, "*%ld", count);
    assert_string_equal(line, want);
    snprintf(want, sizeof want, "$%ld", len);
    for (long i = 0; i < count; i++) {
        read_line(c, line, sizeof line);
        assert_string_equal(line, want);
        for (long b = 0; b < len; b++)
            assert_int_equal(getb(c), 'x');
        read_line(c, line, sizeof line);
        assert_string_equal(line, "");
    }
}

/* A reply of 3 MiB from a shard on another node (the node link carries
 * 1 MiB frames): an MGET over many keys is split under the link's limit
 * and arrives whole, many times over (so the split messages are counted
 * right); a single 3 MiB reply (LRANGE) answers an error instead of
 * leaving the client waiting; from the owner's own node it arrives. A
 * 2 MiB request to a shard there answers "too large for the link", not
 * "unavailable". */
static void test_big_replies_across_nodes(void **unused)
{
    (void)unused;
    enum { N = 48, LEN = 64 << 10 }; /* 3 MiB */
    static char val[LEN + 1];
    memset(val, 'x', LEN);
    const unsigned o = 1, n = 0; /* owner b, read through a */
    char keys_[N][32];
    const char *argv[N + 1] = {"MGET"};
    client *c = dial(nodes[n].port);
    for (unsigned i = 0; i < N; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "big%u", i);
        key_of(o, prefix, keys_[i], sizeof keys_[i]);
        argv[i + 1] = keys_[i];
        EXPECT_REPLY(c, "+OK", "SET", keys_[i], val);
        char len[16];
        snprintf(len, sizeof len, ":%u", i + 1);
        EXPECT_REPLY(c, len, "RPUSH", "biglist", val);
    }
    for (int round = 0; round < 3; round++) {
        cmdv(c, N + 1, argv);
        expect_bulks(c, N, LEN);
    }
    EXPECT_REPLY(c, ":1", "EXISTS", keys_[0]); /* still in step */
    client *home = dial(nodes[owner("biglist")].port);
    cmdv(home, 4, (const char *[]){"LRANGE", "biglist", "0", "-1"});
    expect_bulks(home, N, LEN);
    hangup(home);
    unsigned away = (owner("biglist") + 1) % 3;
    client *far = dial(nodes[away].port);
    assert_true(strstr(CMD(far, "LRANGE", "biglist", "0", "-1"), "too large") !=
                NULL);
    EXPECT_REPLY(far, "+PONG", "PING");
    hangup(far);
    EXPECT_REPLY(c, ":1", "DEL", "biglist");
    /* A request over the link's 1 MiB frames: a clear error at once (not
     * "unavailable": the shard is up), and the connection goes on. */
    static char huge[(2 << 20) + 1];
    memset(huge, 'y', sizeof huge - 1);
    char hkey[32];
    key_of(o, "huge", hkey, sizeof hkey);
    assert_true(strstr(CMD(c, "SET", hkey, huge),
                       "request too large for the link") != NULL);
    EXPECT_REPLY(c, ":0", "EXISTS", hkey);
    EXPECT_REPLY(c, "+PONG", "PING");
    hangup(c);
}

/* A node of the cluster that is not troupe-kv (node "x", run here) sends
 * node a's shards what only a's own coordinator sends: KV_TAG_SNAPSHOT
 * 1, "freeze and send me your data". The shards drop it: no part comes
 * back and writes go on. Before, any node could freeze every shard of
 * another (all writes refused) and get a copy of its data, sent with a
 * raw pointer of a's heap; a forged KV_TAG_PART made a's coordinator
 * free any address. The shards' pids come from a's directory, which
 * answers any node's hello (CL_HELLO, 100 in examples/kv/cluster.c). */
typedef struct forger {
    int hello_status, parts, sent;
    bool waited;
} forger;

enum { FORGE_HELLO = 100, FORGE_WAITED = 200 };

static int forger_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    forger *f = state;
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tp_pid dir;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: EXPECT_EQ(tp_monitor_node(ctx, "a", true), 0); break;
    case TP_TAG_NODEUP: /* a heard from: it can be called */
        EXPECT_EQ(tp_whereis_global(rt, "kv.a", &dir), 0);
        EXPECT_EQ(tp_call(ctx, dir, FORGE_HELLO, NULL, 0, 5000, NULL), 0);
        break;
    case TP_TAG_REPLY: {
        uint64_t per;
        const char *members;
        const void *ids;
        size_t members_len, ids_len;
        int64_t uptime;
        f->hello_status = tp_msg_status(msg);
        if (f->hello_status ||
            tp_msg_scanf(msg, "[u S l y]", &per, &members, &members_len,
                         &uptime, &ids, &ids_len) != 0)
            return tp_exit(ctx, TP_REASON_NORMAL);
        for (size_t i = 0; i + 8 <= ids_len; i += 8) {
            tp_pid shard;
            EXPECT_EQ(tp_node_pid(rt, "a", kv_get64((const char *)ids + i),
                                  &shard),
                      0);
            EXPECT_EQ(tp_send_int(ctx, shard, KV_TAG_SNAPSHOT, 1), 0);
            f->sent++;
        }
        /* A part would come back within a round trip: wait a few. */
        tp_send_after(ctx, 500, FORGE_WAITED, NULL, 0, NULL);
        break;
    }
    case KV_TAG_PART: f->parts++; break;
    case FORGE_WAITED: f->waited = true; return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_forged_from_another_node(void **unused)
{
    (void)unused;
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tp_node_opts o;
    tp_node_opts_init(&o);
    o.urls = nt_nats.url;
    o.name = "x";
    o.cluster = "kv";
    assert_int_equal(tp_runtime_set_node(rt, &o), 0);
    forger f = {0};
    tpt_watchdog(1);
    int rc = tp_run(rt, forger_root, &f, NULL);
    tpt_watchdog(0);
    tp_runtime_free(rt);
    assert_int_equal(rc, 0);
    TPT_CHECK();
    assert_int_equal(f.hello_status, 0);
    assert_int_equal(f.sent, 2); /* SHARDS */
    assert_true(f.waited);
    assert_int_equal(f.parts, 0);
    /* a's shards still take writes, from every node */
    char key[32];
    for (unsigned n = 0; n < 3; n++) {
        key_of(0,
               n == 0   ? "forged-a"
               : n == 1 ? "forged-b"
                        : "forged-c",
               key, sizeof key);
        cli_set(n, key);
        cli_get(n, key);
    }
}

static void test_killed_node_and_back(void **unused)
{
    (void)unused;
    const unsigned dead = 2; /* c */
    double killed = tpt_now_ms();
    assert_int_equal(stop(&nodes[dead], SIGKILL), -1);
    /* Its keys fail fast from the survivors; theirs are still read and
     * written there. */
    for (unsigned n = 0; n < 2; n++) {
        await_get(nodes[n].port, keys[dead][n][0], NULL, 5000);
        printf("node %s: c's key unavailable %.0f ms after the kill\n",
               names[n], tpt_now_ms() - killed);
        await_log(n, "node c down: shards 4-5 unavailable", 1);
        for (unsigned o = 0; o < 2; o++)
            for (unsigned w = 0; w < 3; w++) {
                cli_get(n, keys[o][w][0]);
                cli_set(n, keys[o][w][1]);
            }
    }
    /* A node that disagrees on --shards is refused; the others serve on. */
    expect_refused();
    cli_get(1, keys[0][0][0]);
    /* Back on its snapshot: every key, from every node. */
    start_node(dead, SHARDS);
    await_cluster();
    for (unsigned n = 0; n < 2; n++) /* its new pids, fetched again */
        await_log(n, "node c up: shards 4-5 reachable", 2);
    for (unsigned o = 0; o < 3; o++)
        for (unsigned w = 0; w < 3; w++)
            for (unsigned i = 0; i < KEYS; i++)
                for (unsigned n = 0; n < 3; n++)
                    cli_get(n, keys[o][w][i]);
    cli_set(0, probes[dead]);
    for (unsigned n = 0; n < 3; n++)
        cli_get(n, probes[dead]);
    for (unsigned n = 0; n < 3; n++)
        assert_int_equal(stop(&nodes[n], SIGTERM), 0);
}

/* The cluster again on a server with a 256 KiB max_payload (1 MiB by
 * default): a reply from a shard on another node is split below the
 * node's limit in force, so a 100 KB value still crosses, and one too big
 * for a message between nodes answers the "too large" error at once.
 * Before, shards split for 1 MiB messages whatever the server allowed:
 * a 300 KB reply was refused at publish, lost, and the client waited for
 * ever. */
static void test_smaller_server(void **unused)
{
    (void)unused;
    char conf[64];
    snprintf(conf, sizeof conf, "/tmp/troupe-kv-small.%d.conf", (int)getpid());
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "max_payload: %d\n", 256 << 10);
    fclose(f);
    const char *const *normal = nt_nats.args;
    static const char *args[16];
    int n = 0;
    for (; normal && normal[n] && n < 12; n++)
        args[n] = normal[n];
    args[n++] = "-c";
    args[n++] = conf;
    args[n] = NULL;
    nt_nats_kill();
    nt_nats.args = args;
    assert_int_equal(nt_nats_restart(), 0);
    for (unsigned i = 0; i < 3; i++) { /* empty: the probes are unset */
        unlink(dbfiles[i]);
        start_node(i, SHARDS);
    }
    await_cluster();
    static char mid[(100 << 10) + 1], big[(300 << 10) + 1];
    memset(mid, 'm', sizeof mid - 1);
    memset(big, 'b', sizeof big - 1);
    char kmid[32], kbig[32];
    key_of(0, "mid", kmid, sizeof kmid);
    key_of(0, "big", kbig, sizeof kbig);
    client *home = dial(nodes[0].port), *far = dial(nodes[1].port);
    EXPECT_REPLY(home, "+OK", "SET", kmid, mid);
    EXPECT_REPLY(home, "+OK", "SET", kbig, big);
    static char got[sizeof big + 16]; /* "$" and the value */
    cmdv(far, 2, (const char *[]){"GET", kmid});
    reply_into(far, got, sizeof got);
    assert_int_equal(strlen(got), 1 + sizeof mid - 1);
    assert_true(strstr(CMD(far, "GET", kbig), "too large") != NULL);
    EXPECT_REPLY(far, "+PONG", "PING");
    cmdv(home, 2, (const char *[]){"GET", kbig}); /* local: no node limit */
    reply_into(home, got, sizeof got);
    assert_int_equal(strlen(got), 1 + sizeof big - 1);
    hangup(far);
    hangup(home);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(stop(&nodes[i], SIGTERM), 0);
    nt_nats_kill(); /* teardown's server as it was */
    nt_nats.args = normal;
    assert_int_equal(nt_nats_restart(), 0);
    unlink(conf);
}

static int setup(void **unused)
{
    (void)unused;
    if (kvt_setup() != 0 || nt_nats_up(true, NULL) != 0)
        return -1;
    for (unsigned i = 0; i < 3; i++) {
        snprintf(dbfiles[i], sizeof dbfiles[i],
                 "/tmp/troupe-kv-cluster-%d-%s.tkv", (int)getpid(), names[i]);
        snprintf(logs[i], sizeof logs[i], "/tmp/troupe-kv-cluster-%d-%s.log",
                 (int)getpid(), names[i]);
        unlink(logs[i]);
    }
    make_keys();
    return 0;
}

static int teardown(void **unused)
{
    (void)unused;
    for (unsigned i = 0; i < 3; i++) {
        if (nodes[i].pid > 0 && waitpid(nodes[i].pid, NULL, WNOHANG) == 0)
            stop(&nodes[i], SIGKILL);
        unlink(dbfiles[i]);
        unlink(logs[i]);
    }
    nt_nats_down();
    return 0;
}

int main(void)
{
    if (!have_redis_cli())
        return 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_key_from_every_node),
        cmocka_unit_test(test_rename_across_nodes),
        cmocka_unit_test(test_big_replies_across_nodes),
        cmocka_unit_test(test_forged_from_another_node),
        cmocka_unit_test(test_killed_node_and_back),
        cmocka_unit_test(test_smaller_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
