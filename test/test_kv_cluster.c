/*
 * troupe-kv in cluster mode (examples/kv/cluster.c): a real nats-server
 * with JetStream and three troupe-kv nodes a, b, c, driven with the real
 * redis-cli. Every key is reachable from every node, whichever node owns
 * it; a node killed with kill -9 makes its keys answer "-ERR ...
 * unavailable" within a bounded time while the others keep serving
 * theirs; restarted on its snapshot, its keys are back everywhere. A node
 * started with another --shards is refused.
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
static char dbfiles[3][96];
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
    nodes[i] =
        start((const char *[]){"--dbfile", dbfiles[i], "--shards", shards,
                               "--cluster", nt_nats.url, "--node", names[i],
                               "--nodes", NODES, NULL});
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
    /* Commands over every shard see the remote ones too. */
    char count[16];
    snprintf(count, sizeof count, "%d", 3 * 3 * KEYS);
    for (unsigned n = 0; n < 3; n++)
        cli_expect(nodes[n].port, "DBSIZE", count);
    /* Each node saves its own shards. */
    for (unsigned n = 0; n < 3; n++)
        cli_expect(nodes[n].port, "SAVE", "OK");
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

static int setup(void **unused)
{
    (void)unused;
    if (kvt_setup() != 0 || nt_nats_up(true, NULL) != 0)
        return -1;
    for (unsigned i = 0; i < 3; i++)
        snprintf(dbfiles[i], sizeof dbfiles[i],
                 "/tmp/troupe-kv-cluster-%d-%s.tkv", (int)getpid(), names[i]);
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
        cmocka_unit_test(test_killed_node_and_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
