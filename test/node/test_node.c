/*
 * Nodes through a real nats-server: remote send, call, reply and oneshot;
 * pids in payloads; links, monitors and exit signals across nodes; a
 * killed node (kill -9) and a hung one (SIGSTOP) breaking every relation
 * with noconnection; a taken name refused; hostile frames dropped.
 *
 * The group setup starts nats-server on a free loopback port (Debian's
 * nats-server, installed by dev.sh and CI). Each test runs this process
 * as node "A" and starts a peer node "B" as a child process: this same
 * program, run with --peer (see peer_main).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <nats/nats.h>

#include "tp_test.h"
#include "troupe/node.h"

#define CLUSTER "t"
#define HB_MS 300

enum {
    T_HELLO = 1, /* peer -> A: [p p] its root and its server */
    T_ECHO,      /* call: reply the payload */
    T_PING,      /* -> T_PONG to the sender */
    T_PONG,
    T_ONESHOT, /* [p u]: send 7 on that oneshot */
    T_EXIT,    /* the server ends with error "boom" */
    T_HOLD,    /* call: never answered; T_HELD to the caller first */
    T_HELD,
    T_LINK, /* the server links to the sender */
};

static char nats_url[64];
static pid_t nats_pid;
static char self_exe[1024];

/* ------------------------------------------------------------ nats-server */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int start_nats(void **state)
{
    (void)state;
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        return -1;
    self_exe[n] = '\0';
    int port = free_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(nats_url, sizeof nats_url, "nats://127.0.0.1:%d", port);
    nats_pid = fork();
    if (nats_pid == 0) {
        execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", ps,
               (char *)NULL);
        execl("/usr/sbin/nats-server", "nats-server", "-a", "127.0.0.1", "-p",
              ps, (char *)NULL);
        fprintf(stderr, "test_node: cannot run nats-server: %s\n",
                strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 500 && !port_open(port); i++) {
        int st;
        if (waitpid(nats_pid, &st, WNOHANG) == nats_pid)
            return -1; /* it did not start: every test fails */
        usleep(10000);
    }
    return port_open(port) ? 0 : -1;
}

static int stop_nats(void **state)
{
    (void)state;
    if (nats_pid > 0) {
        kill(nats_pid, SIGTERM);
        waitpid(nats_pid, NULL, 0);
    }
    nats_Close();
    return 0;
}

/* ------------------------------------------------------------------ peer */

static tp_pid peer_parent; /* A's root, as a pid of the peer */

static int peer_server(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    switch (tp_msg_tag(msg)) {
    case T_ECHO: tp_reply(ctx, msg, data, len); break;
    case T_PING: tp_send(ctx, tp_msg_from(msg), T_PONG, NULL, 0); break;
    case T_ONESHOT: {
        tp_oneshot tx;
        if (tp_unpackf(data, len, "[pu]", &tx.pid, &tx.ref) == 0)
            tp_oneshot_send(ctx, tp_ctx_runtime(ctx), tx, "\x07", 1);
        break;
    }
    case T_EXIT: return tp_exit(ctx, TP_REASON_ERROR(TP_EINVAL, "boom"));
    case T_HOLD:
        tp_send(ctx, tp_msg_from(msg), T_HELD, NULL, 0);
        (void)tp_reply_take(ctx, msg); /* kept, never answered */
        break;
    case T_LINK: tp_link(ctx, tp_msg_from(msg)); break;
    }
    return TP_HANDLED;
}

/* The peer: node "name" of the cluster, that tells A (whose root is
 * parent_id at node A) its pids once it sees A, serves, and ends when its
 * server ends or A goes down. */
typedef struct peer {
    tp_pid server;
} peer;

static int peer_main_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    peer *p = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        tp_spawn(ctx, peer_server, NULL, NULL, &p->server);
        tp_monitor(ctx, p->server, NULL);
        tp_monitor_node(ctx, "A", true);
        break;
    case TP_TAG_NODEUP:
        tp_sendf(ctx, peer_parent, T_HELLO, "[pp]", tp_self(ctx), p->server);
        break;
    case TP_TAG_DOWN:
    case TP_TAG_NODEDOWN:
        tp_kill(ctx, p->server);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int peer_main(int argc, char **argv)
{
    /* --peer NAME URL PARENT_ID */
    if (argc != 5)
        return 2;
    tp_runtime *rt;
    tp_config cfg;
    tp_config_init(&cfg);
    if (tp_runtime_new(&cfg, &rt) != 0)
        return 2;
    tp_node_opts o;
    tp_node_opts_init(&o);
    o.urls = argv[3];
    o.name = argv[2];
    o.cluster = CLUSTER;
    o.heartbeat_ms = HB_MS;
    if (tp_runtime_set_node(rt, &o) != 0 ||
        tp_node_pid(rt, "A", strtoull(argv[4], NULL, 10), &peer_parent) != 0)
        return 2;
    peer p = {0};
    int rc = tp_run(rt, peer_main_root, &p, NULL);
    tp_runtime_free(rt);
    nats_Close();
    return rc < 0 ? 10 - rc : rc;
}

static pid_t start_peer(const char *name, tp_pid parent)
{
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)parent);
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_exe, self_exe, "--peer", name, nats_url, id, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* ------------------------------------------------------------- A's side */

/* A runtime that is node A (or another name), run with root. */
static int run_node(const char *name, tp_behavior root, void *state,
                    tp_runtime **keep)
{
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tp_node_opts o;
    tp_node_opts_init(&o);
    o.urls = nats_url;
    o.name = name;
    o.cluster = CLUSTER;
    o.heartbeat_ms = HB_MS;
    assert_int_equal(tp_runtime_set_node(rt, &o), 0);
    tp_spawn_opts so = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_watchdog(1);
    int rc = tp_run(rt, root, state, &so);
    tpt_watchdog(0);
    if (keep)
        *keep = rt;
    else
        tp_runtime_free(rt);
    return rc;
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* -------------------------------------------------------- the basics */

typedef struct basics {
    pid_t child;
    tp_pid peer_root, server;
    tp_ref echo_ref, oneshot_ref, dead_ref, mon_ref;
    int step;
    char node[TP_NODE_NAME_MAX + 1];
    tp_reason down, exit;
    char down_text[64], exit_text[64];
    int dead_status;
    bool pong, oneshot, echo;
} basics;

static int basics_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    basics *b = state;
    tp_runtime *rt = tp_ctx_runtime(ctx);
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT(!tp_pid_is_remote(tp_self(ctx)));
        b->child = start_peer("B", tp_self(ctx));
        EXPECT(b->child > 0);
        break;
    case T_HELLO: {
        EXPECT_EQ(tp_unpackf(data, len, "[pp]", &b->peer_root, &b->server), 0);
        EXPECT_EQ(tp_msg_from(msg), b->peer_root); /* a pid in a payload */
        EXPECT(tp_pid_is_remote(b->server));
        EXPECT_EQ(tp_pid_node(rt, b->server, b->node, sizeof b->node), 0);
        EXPECT(strcmp(b->node, "B") == 0);
        EXPECT_EQ(tp_call(ctx, b->server, T_ECHO, "\xa2hi", 3, 5000,
                          &b->echo_ref),
                  0);
        EXPECT_EQ(tp_send(ctx, b->server, T_PING, NULL, 0), 0);
        tp_oneshot tx;
        EXPECT_EQ(tp_oneshot_new(ctx, 5000, &tx), 0);
        b->oneshot_ref = tx.ref;
        EXPECT_EQ(tp_sendf(ctx, b->server, T_ONESHOT, "[pu]", tx.pid, tx.ref),
                  0);
        break;
    }
    case T_PONG:
        EXPECT_EQ(tp_msg_from(msg), b->server);
        b->pong = true;
        break;
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) == b->echo_ref) {
            EXPECT_EQ(tp_msg_status(msg), 0);
            EXPECT(len == 3 && memcmp(data, "\xa2hi", 3) == 0);
            b->echo = true;
        } else if (tp_msg_ref(msg) == b->oneshot_ref) {
            int64_t v = 0;
            EXPECT_EQ(tp_msg_int(msg, &v), 0);
            EXPECT_EQ(v, 7);
            b->oneshot = true;
        } else if (tp_msg_ref(msg) == b->dead_ref) {
            b->dead_status = tp_msg_status(msg);
            /* Last: end the peer by killing its root (it ends with it). */
            EXPECT_EQ(tp_kill(ctx, b->peer_root), 0);
        }
        if (b->echo && b->oneshot && b->pong && b->step == 0) {
            b->step = 1; /* now the link and monitor across nodes */
            EXPECT_EQ(tp_link(ctx, b->server), 0);
            EXPECT_EQ(tp_monitor(ctx, b->server, &b->mon_ref), 0);
            EXPECT_EQ(tp_send(ctx, b->server, T_EXIT, NULL, 0), 0);
        }
        break;
    case TP_TAG_EXIT:
        EXPECT_EQ(tp_msg_from(msg), b->server);
        EXPECT_EQ(tp_msg_reason(msg, &b->exit), 0);
        snprintf(b->exit_text, sizeof b->exit_text, "%s",
                 b->exit.text ? b->exit.text : "");
        break;
    case TP_TAG_DOWN:
        if (tp_msg_ref(msg) != b->mon_ref)
            break;
        EXPECT_EQ(tp_msg_reason(msg, &b->down), 0);
        snprintf(b->down_text, sizeof b->down_text, "%s",
                 b->down.text ? b->down.text : "");
        /* A call to the dead server: TP_ENOPROC from its node. */
        EXPECT_EQ(tp_call(ctx, b->server, T_ECHO, "\xc0", 1, 5000,
                          &b->dead_ref),
                  0);
        break;
    case TP_TAG_NODEDOWN: return tp_exit(ctx, TP_REASON_NORMAL);
    }
    if (tp_msg_tag(msg) == TP_TAG_START || tp_msg_tag(msg) == T_HELLO)
        tp_monitor_node(ctx, "B", true);
    return TP_HANDLED;
}

static void test_basics(void **unused)
{
    (void)unused;
    tpt_reset();
    static basics b;
    memset(&b, 0, sizeof b);
    tp_runtime *rt;
    assert_int_equal(run_node("A", basics_root, &b, &rt), 0);
    tp_node_stats st;
    tp_node_stats_get(rt, &st);
    tp_runtime_free(rt);
    int cst = wait_child(b.child);
    TPT_CHECK();
    assert_true(WIFEXITED(cst));
    assert_true(b.echo && b.pong && b.oneshot);
    assert_int_equal(b.exit.kind, TP_EXIT_ERROR);
    assert_string_equal(b.exit_text, "boom");
    assert_int_equal(b.down.kind, TP_EXIT_ERROR);
    assert_int_equal(b.down.code, TP_EINVAL);
    assert_string_equal(b.down_text, "boom");
    assert_int_equal(b.dead_status, TP_ENOPROC);
    assert_true(st.frames_in >= 6 && st.frames_out >= 6);
    assert_int_equal(st.dropped, 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--peer") == 0)
        return peer_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
    };
    return cmocka_run_group_tests(tests, start_nats, stop_nats);
}
