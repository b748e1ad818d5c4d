#define _POSIX_C_SOURCE 200809L
/*
 * troupe's side of the benchmark workloads (../shared/BENCH.md), written
 * with the public API only, as a user would: msgpack payloads through
 * tp_send_int / tp_msg_int, replies through tp_call.
 *
 *   troupe-bench <pingpong|ring|skynet|fanin|ask|idle|big> <threads>
 */
#include "troupe.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { T_GO, T_MSG, T_STOP };

static double t_start, t_end;
static uint64_t result, n_units;
static long extra_bytes_per_actor = -1;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t msg_int(const tp_msg *m)
{
    int64_t v = 0;
    if (tp_msg_int(m, &v) != 0) {
        fprintf(stderr, "bad payload\n");
        exit(3);
    }
    return v;
}

static void done(uint64_t r)
{
    t_end = now();
    result = r;
}

/* ------------------------------------------------------------ pingpong */

/* Round trips; a third command-line argument changes it (callgrind runs
 * at two sizes give instructions per message without the setup). */
static int64_t pp_rounds = 1000000;

static int pong(tp_ctx *ctx, void *st, const tp_msg *m)
{
    if (tp_msg_tag(m) == T_MSG)
        return tp_send_int(ctx, tp_msg_from(m), T_MSG, msg_int(m) + 1);
    if (tp_msg_tag(m) == T_STOP)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int ping(tp_ctx *ctx, void *st, const tp_msg *m)
{
    tp_pid peer = *(tp_pid *)st;
    if (tp_msg_tag(m) == T_GO)
        return tp_send_int(ctx, peer, T_MSG, 0);
    if (tp_msg_tag(m) == T_MSG) {
        int64_t v = msg_int(m);
        if (v < pp_rounds)
            return tp_send_int(ctx, peer, T_MSG, v);
        done((uint64_t)v);
        tp_send_int(ctx, peer, T_STOP, 0);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int pingpong_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    static tp_pid pong_pid;
    t_start = now();
    tp_pid p;
    tp_spawn(ctx, pong, NULL, NULL, &pong_pid);
    tp_spawn(ctx, ping, &pong_pid, NULL, &p);
    tp_send_int(ctx, p, T_GO, 0);
    n_units = 2 * (uint64_t)pp_rounds;
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* ---------------------------------------------------------------- ring */

#define RING_N 10000
#define RING_HOPS 1000000

typedef struct ring_node {
    tp_pid next;
    int index;
} ring_node;

static ring_node ring_nodes[RING_N];

static int ring_member(tp_ctx *ctx, void *st, const tp_msg *m)
{
    ring_node *n = st;
    switch (tp_msg_tag(m)) {
    case T_GO: /* the next pid, sent to close the ring */
        n->next = (tp_pid)msg_int(m);
        break;
    case T_MSG: {
        int64_t v = msg_int(m);
        if (v == 0) {
            /* Linked to the root, which is linked to every member: this
             * shutdown ends the whole ring, as in an OTP tree. */
            done((uint64_t)n->index);
            tp_exit(ctx, TP_REASON_SHUTDOWN);
        } else {
            tp_send_int(ctx, n->next, T_MSG, v - 1);
        }
        break;
    }
    }
    return TP_HANDLED;
}

static int ring_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    if (tp_msg_tag(m) != TP_TAG_START)
        return TP_HANDLED;
    t_start = now();
    tp_spawn_opts o = {.flags = TP_SPAWN_LINK};
    tp_pid next = TP_PID_NONE, last = TP_PID_NONE;
    for (int i = RING_N - 1; i >= 0; i--) {
        ring_nodes[i] = (ring_node){next, i};
        tp_spawn(ctx, ring_member, &ring_nodes[i], &o, &next);
        if (i == RING_N - 1)
            last = next;
    }
    tp_send_int(ctx, last, T_GO, (int64_t)next);
    tp_send_int(ctx, next, T_MSG, RING_HOPS);
    n_units = RING_HOPS;
    return TP_HANDLED;
}

/* -------------------------------------------------------------- skynet */

typedef struct sky {
    tp_pid parent;
    int64_t ordinal, sum;
    int level, pending;
} sky;

/* A leaf needs no state of its own: its ordinal rides in the state pointer
 * and its parent is the sender of its start message (the spawner). */
static int sky_leaf(tp_ctx *ctx, void *st, const tp_msg *m)
{
    tp_send_int(ctx, tp_msg_from(m), T_MSG, (int64_t)(intptr_t)st);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static int sky_node(tp_ctx *ctx, void *st, const tp_msg *m)
{
    sky *s = st;
    if (tp_msg_tag(m) == TP_TAG_START) {
        for (int i = 0; i < 10; i++) {
            int64_t ord = s->ordinal * 10 + i;
            int rc;
            if (s->level + 1 == 6) {
                rc = tp_spawn(ctx, sky_leaf, (void *)(intptr_t)ord, NULL, NULL);
            } else {
                /* A small state: kept in the child's table slot, no
                 * malloc and no free per actor. */
                sky c = {tp_self(ctx), ord, 0, s->level + 1, 0};
                rc = tp_spawn_inline(ctx, sky_node, &c, sizeof c, NULL, NULL);
            }
            if (rc != 0)
                return rc;
        }
        s->pending = 10;
        return TP_HANDLED;
    }
    if (tp_msg_tag(m) == T_MSG) {
        s->sum += msg_int(m);
        if (--s->pending == 0) {
            if (s->parent)
                tp_send_int(ctx, s->parent, T_MSG, s->sum);
            else
                done((uint64_t)s->sum);
            tp_exit(ctx, TP_REASON_NORMAL);
        }
    }
    return TP_HANDLED;
}

/* --------------------------------------------------------------- fanin */

#define FANIN_PRODUCERS 4
#define FANIN_EACH 1000000
#define FANIN_BATCH 64

typedef struct producer {
    tp_pid consumer;
    int64_t next;
} producer;

static producer producers[FANIN_PRODUCERS];

static int fanin_producer(tp_ctx *ctx, void *st, const tp_msg *m)
{
    producer *p = st;
    /* A bounded batch per turn, then yield: the runtime pauses us between
     * turns while the consumer's mailbox is over its capacity. */
    for (int i = 0; i < FANIN_BATCH && p->next < FANIN_EACH; i++)
        tp_send_int(ctx, p->consumer, T_MSG, p->next++);
    if (p->next < FANIN_EACH)
        return tp_send_int(ctx, tp_self(ctx), T_GO, 0);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

typedef struct consumer {
    uint64_t sum, got;
} consumer;

static int fanin_consumer(tp_ctx *ctx, void *st, const tp_msg *m)
{
    consumer *c = st;
    if (tp_msg_tag(m) != T_MSG)
        return TP_HANDLED;
    c->sum += (uint64_t)msg_int(m);
    if (++c->got == (uint64_t)FANIN_PRODUCERS * FANIN_EACH) {
        done(c->sum);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int fanin_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    static consumer c;
    t_start = now();
    tp_spawn_opts o = {.mailbox_capacity = 1024};
    tp_pid cons;
    tp_spawn(ctx, fanin_consumer, &c, &o, &cons);
    for (int i = 0; i < FANIN_PRODUCERS; i++) {
        producers[i] = (producer){cons, 0};
        tp_spawn(ctx, fanin_producer, &producers[i], NULL, NULL);
    }
    n_units = (uint64_t)FANIN_PRODUCERS * FANIN_EACH;
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* ----------------------------------------------------------------- ask */

#define ASK_N 1000000

static int ask_server(tp_ctx *ctx, void *st, const tp_msg *m)
{
    int64_t *counter = st;
    if (tp_msg_tag(m) == T_MSG) {
        *counter += msg_int(m);
        return tp_reply_int(ctx, m, *counter);
    }
    if (tp_msg_tag(m) == T_STOP)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

typedef struct client {
    tp_pid server;
    int64_t asked, last;
} client;

static int ask_client(tp_ctx *ctx, void *st, const tp_msg *m)
{
    client *c = st;
    tp_ref ref;
    if (tp_msg_tag(m) == TP_TAG_REPLY) {
        if (tp_msg_status(m) != 0)
            return tp_msg_status(m);
        c->last = msg_int(m);
    }
    if (tp_msg_tag(m) == TP_TAG_START || tp_msg_tag(m) == TP_TAG_REPLY) {
        if (c->asked++ < ASK_N)
            return tp_call_int(ctx, c->server, T_MSG, 1, -1, &ref);
        done((uint64_t)c->last);
        tp_send_int(ctx, c->server, T_STOP, 0);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int ask_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    static int64_t counter;
    static client c;
    t_start = now();
    tp_spawn(ctx, ask_server, &counter, NULL, &c.server);
    tp_spawn(ctx, ask_client, &c, NULL, NULL);
    n_units = ASK_N;
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* ---------------------------------------------------------------- idle */

#define IDLE_N 1000000
#define IDLE_SPAWN_BATCH 10000

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

static atomic_uint_fast64_t idle_ended; /* ended on any scheduler thread */

static int idle_actor(tp_ctx *ctx, void *st, const tp_msg *m)
{
    if (tp_msg_tag(m) == T_STOP) {
        if (atomic_fetch_add(&idle_ended, 1) + 1 == IDLE_N)
            done(IDLE_N);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

typedef struct idle_root_st {
    tp_pid *pids;
    int spawned;
    long rss0;
} idle_root_st;

static int idle_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    idle_root_st *r = st;
    if (tp_msg_tag(m) == TP_TAG_START) {
        r->rss0 = rss_bytes();
        t_start = now();
        n_units = IDLE_N;
    }
    if (r->spawned < IDLE_N) {
        /* Spawn in batches so the children take their start message
         * between batches, as they would in a live system. */
        for (int i = 0; i < IDLE_SPAWN_BATCH; i++, r->spawned++)
            if (tp_spawn(ctx, idle_actor, NULL, NULL, &r->pids[r->spawned]) !=
                0)
                return TP_ENOMEM;
        return tp_send_int(ctx, tp_self(ctx), T_GO, 0);
    }
    /* Every child has run its start message (they were queued before
     * this self-message): now they are idle. */
    extra_bytes_per_actor = (rss_bytes() - r->rss0) / IDLE_N;
    for (int i = 0; i < IDLE_N; i++)
        tp_send_int(ctx, r->pids[i], T_STOP, 0);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* ----------------------------------------------------------------- big */

/* Many independent pingpong pairs, all started together: the parallel
 * workload. Each pair does BIG_ROUNDS round trips like pingpong (ping sends
 * v, pong replies v + 1); the last pair to finish reports the sum of the
 * final values. Pairs finish on any scheduler thread, hence the atomics. */
#define BIG_PAIRS 1000
#define BIG_ROUNDS 4000

typedef struct big_pair {
    tp_pid pong;
} big_pair;

static big_pair big_pairs[BIG_PAIRS];
static atomic_uint_fast64_t big_sum, big_finished;

static int big_ping(tp_ctx *ctx, void *st, const tp_msg *m)
{
    big_pair *p = st;
    if (tp_msg_tag(m) == T_GO)
        return tp_send_int(ctx, p->pong, T_MSG, 0);
    if (tp_msg_tag(m) == T_MSG) {
        int64_t v = msg_int(m);
        if (v < BIG_ROUNDS)
            return tp_send_int(ctx, p->pong, T_MSG, v);
        /* Add before counting: the last pair to count sees every sum. */
        atomic_fetch_add(&big_sum, (uint64_t)v);
        if (atomic_fetch_add(&big_finished, 1) + 1 == BIG_PAIRS)
            done(atomic_load(&big_sum));
        tp_send_int(ctx, p->pong, T_STOP, 0);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int big_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    static tp_pid pings[BIG_PAIRS];
    t_start = now();
    for (int i = 0; i < BIG_PAIRS; i++) {
        tp_spawn(ctx, pong, NULL, NULL, &big_pairs[i].pong);
        tp_spawn(ctx, big_ping, &big_pairs[i], NULL, &pings[i]);
    }
    /* Every pair exists: start them all. */
    for (int i = 0; i < BIG_PAIRS; i++)
        tp_send_int(ctx, pings[i], T_GO, 0);
    n_units = 2 * (uint64_t)BIG_PAIRS * BIG_ROUNDS;
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && strcmp(argv[1], "pingpong") == 0)) {
        fprintf(stderr,
                "usage: %s <pingpong|ring|skynet|fanin|ask|idle|big> "
                "<threads>\n"
                "       %s pingpong <threads> <round trips>\n",
                argv[0], argv[0]);
        return 2;
    }
    if (argc == 4 && (pp_rounds = atoll(argv[3])) <= 0)
        return 2;
    const char *bench = argv[1];
    int threads = atoi(argv[2]);
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = threads > 0 ? (unsigned)threads : 1;
    tp_runtime *rt;
    if (tp_runtime_new(&cfg, &rt) != 0)
        return 1;
    uint64_t want;
    int rc;
    static sky sky_root;
    idle_root_st idle = {0};
    if (strcmp(bench, "pingpong") == 0) {
        want = (uint64_t)pp_rounds;
        rc = tp_run(rt, pingpong_root, NULL, NULL);
    } else if (strcmp(bench, "ring") == 0) {
        want = 0; /* the holder at 0 is ring index 0 */
        rc = tp_run(rt, ring_root, NULL, NULL);
    } else if (strcmp(bench, "skynet") == 0) {
        want = 499999500000ull;
        sky_root = (sky){TP_PID_NONE, 0, 0, 0, 0};
        t_start = now();
        n_units = 1111111;
        rc = tp_run(rt, sky_node, &sky_root, NULL);
    } else if (strcmp(bench, "fanin") == 0) {
        want = 1999998000000ull;
        rc = tp_run(rt, fanin_root, NULL, NULL);
    } else if (strcmp(bench, "ask") == 0) {
        want = ASK_N;
        rc = tp_run(rt, ask_root, NULL, NULL);
    } else if (strcmp(bench, "idle") == 0) {
        want = IDLE_N;
        idle.pids = malloc(sizeof(tp_pid) * IDLE_N);
        rc = tp_run(rt, idle_root, &idle, NULL);
        free(idle.pids);
    } else if (strcmp(bench, "big") == 0) {
        want = (uint64_t)BIG_PAIRS * BIG_ROUNDS;
        rc = tp_run(rt, big_root, NULL, NULL);
    } else {
        fprintf(stderr, "unknown bench %s\n", bench);
        return 2;
    }
    tp_runtime_free(rt);
    uint64_t check = strcmp(bench, "ring") == 0 ? n_units : result;
    bool ok = rc == 0 && result == want;
    printf("bench=%s impl=troupe threads=%d n=%" PRIu64
           " seconds=%.6f check=%" PRIu64,
           bench, threads, n_units, t_end - t_start, check);
    if (extra_bytes_per_actor >= 0)
        printf(" bytes_per_actor=%ld", extra_bytes_per_actor);
    printf("\n");
    if (!ok) {
        fprintf(stderr,
                "check failed: rc=%d result=%" PRIu64 " want=%" PRIu64 "\n", rc,
                result, want);
        return 1;
    }
    return 0;
}
