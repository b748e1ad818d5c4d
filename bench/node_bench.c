#define _GNU_SOURCE
/*
 * Two troupe nodes through one local nats-server (issue 16's benchmark):
 *
 *   troupe-node-bench <rtt|tput> <threads> [n]
 *
 * This process is node "A"; it starts nats-server on a free loopback port
 * (or uses $NATS_URL when set) and node "B" as a child process (this same
 * program, run with --peer). Both run <threads> scheduler threads.
 *
 *   rtt   an actor on A makes n sequential tp_call round trips (a msgpack
 *         integer) to an echo actor on B; default n 20,000
 *   tput  an actor on A sends n one-way tp_send_int messages to a counting
 *         actor on B, then one tp_call that B answers with its count (the
 *         ack of the last); default n 500,000
 *
 * Before timing, 1,000 round trips warm the path (both implementations
 * in bench/peers/ do the same). The timed part runs from the first call or
 * send until the last reply. One line, as the other benchmarks print:
 *
 *   bench=rtt impl=troupe threads=1 n=20000 seconds=... check=20000 us_per_rtt=...
 *   bench=tput impl=troupe threads=1 n=500000 seconds=... check=500000 msgs_per_s=...
 *
 * check is the number of echoes that matched (rtt) or of messages B counted
 * in order (tput); the program exits non-zero when it is not n, or when
 * either node saw the other go down during the run (then its calls fail).
 * With NODE_BENCH_DEBUG set, both nodes log NODEUP/NODEDOWN/HELLO times.
 */
#include "troupe.h"
#include "troupe/node.h"

#include "node_util.h"

#include <inttypes.h>
#include <stdlib.h>

#include <nats/nats.h>

#define CLUSTER "nbench"
#define WARMUP 1000
#define CALL_TIMEOUT_MS 30000
#define SEND_CHUNK 4096  /* one-way sends per turn, then a self-message */
#define TIME_LIMIT_S 120 /* the whole program, whatever happens */

enum {
    T_HELLO = 1, /* B -> A: [p p] B's root and its server */
    T_ECHO,      /* call: reply the payload */
    T_MSG,       /* one-way: counted */
    T_DONE,      /* call: reply the count of T_MSG so far, and reset it */
    T_MORE,      /* A's root to itself: send the next chunk */
};

static int run_node(const char *name, const char *url, unsigned threads,
                    tp_behavior root, void *state, tp_pid parent_id,
                    tp_pid *parent)
{
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = threads;
    tp_runtime *rt;
    if (tp_runtime_new(&cfg, &rt) != 0)
        return -1;
    tp_node_opts o;
    tp_node_opts_init(&o);
    o.urls = url;
    o.name = name;
    o.cluster = CLUSTER;
    if (tp_runtime_set_node(rt, &o) != 0 ||
        (parent && tp_node_pid(rt, "A", parent_id, parent) != 0)) {
        tp_runtime_free(rt);
        return -1;
    }
    int rc = tp_run(rt, root, state, NULL);
    tp_runtime_free(rt);
    return rc;
}

/* ------------------------------------------------------------------ B */

static tp_pid b_parent; /* A's root, as a pid of B */

static int b_server(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int64_t *count = state;
    int64_t v;
    size_t len;
    const void *data;
    switch (tp_msg_tag(msg)) {
    case T_ECHO:
        data = tp_msg_data(msg, &len);
        return tp_reply(ctx, msg, data, len);
    case T_MSG:
        /* Counted only in order: a lost or reordered message shows. */
        if (tp_msg_int(msg, &v) == 0 && v == *count)
            ++*count;
        return TP_HANDLED;
    case T_DONE:
        v = *count;
        *count = 0;
        return tp_reply_int(ctx, msg, v);
    }
    return TP_HANDLED;
}

typedef struct b_root_st {
    tp_pid server;
    int64_t count;
} b_root_st;

static int b_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    b_root_st *b = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        if (tp_spawn(ctx, b_server, &b->count, NULL, &b->server) != 0)
            return tp_exit(ctx, TP_REASON_ERROR(TP_ENOMEM, "spawn"));
        return tp_monitor_node(ctx, "A", true);
    case TP_TAG_NODEUP:
        if (getenv("NODE_BENCH_DEBUG"))
            fprintf(stderr, "B: NODEUP at %.3f\n", nu_now());
        return tp_sendf(ctx, b_parent, T_HELLO, "[pp]", tp_self(ctx),
                        b->server);
    case TP_TAG_NODEDOWN: /* A is done (it left) or gone: end */
        if (getenv("NODE_BENCH_DEBUG")) {
            tp_node_stats st;
            tp_node_stats_get(tp_ctx_runtime(ctx), &st);
            fprintf(stderr,
                    "B: NODEDOWN at %.3f: in %" PRIu64 " out %" PRIu64
                    " dropped %" PRIu64 " reconnects %" PRIu64 "\n",
                    nu_now(), st.frames_in, st.frames_out, st.dropped,
                    st.reconnects);
        }
        tp_kill(ctx, b->server);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int peer_main(int argc, char **argv)
{
    /* --peer URL PARENT_ID THREADS */
    if (argc != 5)
        return 2;
    /* Bounded: it ends when A leaves or goes down, or at the alarm. (No
     * parent-death signal: A forks it from a scheduler thread.) */
    alarm(TIME_LIMIT_S);
    static b_root_st b;
    int rc = run_node("B", argv[2], (unsigned)atoi(argv[4]), b_root, &b,
                      strtoull(argv[3], NULL, 10), &b_parent);
    nats_CloseAndWait(10000); /* its threads gone before exit */
    return rc == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ A */

static nu_nats nats; /* (its url also when $NATS_URL names another) */
static unsigned n_threads = 1;

typedef struct a_root_st {
    bool tput;
    int64_t n;
    pid_t child;
    tp_pid server;
    int64_t warm_left; /* warm-up round trips still to make */
    int64_t next;      /* next value to call with (rtt) or send (tput) */
    int64_t check;
    double t0, t1;
    bool done, failed;
} a_root_st;

static pid_t start_peer(tp_pid parent)
{
    char id[32], th[16];
    snprintf(id, sizeof id, "%" PRIu64, (uint64_t)parent);
    snprintf(th, sizeof th, "%u", n_threads);
    const char *args[] = {"--peer", nats.url, id, th, NULL};
    return nu_run_self(args);
}

static int a_fail(tp_ctx *ctx, a_root_st *a, const char *why)
{
    tp_node_stats st;
    tp_node_stats_get(tp_ctx_runtime(ctx), &st);
    fprintf(stderr,
            "node-bench: %s (at %" PRId64 ", warm-up left %" PRId64
            "; frames out %" PRIu64 " in %" PRIu64 ", dropped %" PRIu64
            ", send failed %" PRIu64 ", reconnects %" PRIu64 ")\n",
            why, a->next, a->warm_left, st.frames_out, st.frames_in, st.dropped,
            st.send_failed, st.reconnects);
    a->failed = true;
    return tp_exit(ctx, TP_REASON_ERROR(TP_EINVAL, "bench failed"));
}

static int a_call(tp_ctx *ctx, a_root_st *a, int tag, int64_t v)
{
    tp_ref ref;
    return tp_call_int(ctx, a->server, tag, v, CALL_TIMEOUT_MS, &ref);
}

/* Start the timed part. */
static int a_start(tp_ctx *ctx, a_root_st *a)
{
    a->next = 0;
    a->t0 = nu_now();
    if (!a->tput)
        return a_call(ctx, a, T_ECHO, a->next);
    return tp_send(ctx, tp_self(ctx), T_MORE, NULL, 0);
}

static int a_finish(tp_ctx *ctx, a_root_st *a, int64_t check)
{
    a->t1 = nu_now();
    a->check = check;
    a->done = true;
    return tp_exit(ctx, TP_REASON_NORMAL); /* B sees us leave and ends */
}

static int a_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    a_root_st *a = state;
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    int64_t v = 0;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        tp_monitor_node(ctx, "B", true);
        a->child = start_peer(tp_self(ctx));
        if (a->child < 0)
            return a_fail(ctx, a, "cannot start the peer node");
        return TP_HANDLED;
    case T_HELLO: {
        tp_pid root;
        if (getenv("NODE_BENCH_DEBUG"))
            fprintf(stderr, "A: HELLO at %.3f\n", nu_now());
        if (a->server != TP_PID_NONE)
            return TP_HANDLED; /* B saw us down and up again: the call in
                                  flight fails, and with it the run */
        if (tp_unpackf(data, len, "[pp]", &root, &a->server) != 0)
            return a_fail(ctx, a, "bad hello");
        a->warm_left = WARMUP;
        return a_call(ctx, a, T_ECHO, -1);
    }
    case T_MORE: { /* tput: the next chunk of one-way sends */
        int64_t end = a->next + SEND_CHUNK;
        if (end > a->n)
            end = a->n;
        for (; a->next < end; a->next++)
            if (tp_send_int(ctx, a->server, T_MSG, a->next) != 0)
                return a_fail(ctx, a, "send failed");
        if (a->next < a->n)
            return tp_send(ctx, tp_self(ctx), T_MORE, NULL, 0);
        return a_call(ctx, a, T_DONE, 0); /* the ack of the last */
    }
    case TP_TAG_REPLY:
        if (tp_msg_status(msg) != 0 || tp_msg_int(msg, &v) != 0) {
            char why[64];
            snprintf(why, sizeof why, "call failed with status %d",
                     tp_msg_status(msg));
            return a_fail(ctx, a, why);
        }
        if (a->warm_left > 0) {
            if (--a->warm_left > 0)
                return a_call(ctx, a, T_ECHO, -1);
            return a_start(ctx, a);
        }
        if (a->tput)
            return a_finish(ctx, a, v);
        if (v != a->next)
            return a_fail(ctx, a, "wrong echo");
        if (++a->next < a->n)
            return a_call(ctx, a, T_ECHO, a->next);
        return a_finish(ctx, a, a->next);
    case TP_TAG_NODEDOWN:
        if (!a->done)
            return a_fail(ctx, a, "node B went down");
        return TP_HANDLED;
    }
    return TP_HANDLED;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--peer") == 0)
        return peer_main(argc, argv);
    if (argc < 3 || argc > 4 ||
        (strcmp(argv[1], "rtt") != 0 && strcmp(argv[1], "tput") != 0)) {
        fprintf(stderr, "usage: %s <rtt|tput> <threads> [n]\n", argv[0]);
        return 2;
    }
    alarm(TIME_LIMIT_S);
    static a_root_st a;
    a.tput = strcmp(argv[1], "tput") == 0;
    n_threads = (unsigned)atoi(argv[2]);
    if (n_threads < 1)
        n_threads = 1;
    a.n = argc == 4 ? atoll(argv[3]) : a.tput ? 500000 : 20000;
    if (a.n <= 0)
        return 2;
    if (!nu_self_init())
        return 2;

    if (nu_nats_env_or_start(&nats, "node-bench") != 0)
        return 1;
    int rc = run_node("A", nats.url, n_threads, a_root, &a, 0, NULL);
    int st = a.child > 0 ? nu_wait(a.child) : 0;
    nu_nats_stop(&nats, SIGTERM);
    nats_CloseAndWait(10000); /* its threads gone before exit */
    bool ok = rc == 0 && a.done && !a.failed && a.check == a.n;
    double secs = a.t1 - a.t0;
    printf("bench=%s impl=troupe threads=%u n=%" PRId64
           " seconds=%.6f check=%" PRId64,
           argv[1], n_threads, a.n, secs, a.check);
    if (a.tput)
        printf(" msgs_per_s=%.0f\n", secs > 0 ? a.n / secs : 0);
    else
        printf(" us_per_rtt=%.2f\n", secs > 0 ? secs * 1e6 / a.n : 0);
    if (!ok) {
        fprintf(stderr,
                "node-bench: check failed: rc=%d check=%" PRId64
                " want=%" PRId64 " peer status=%d\n",
                rc, a.check, a.n, st);
        return 1;
    }
    return 0;
}
