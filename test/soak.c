/*
 * troupe-soak: the load and fault workloads mixed, round after round, for
 * a given time; after each round it prints the process's RSS and open fd
 * count so test/soak.sh can check they stay flat after warm-up. Not part
 * of ctest (test/soak.sh runs it).
 *
 *   troupe-soak <seconds> [seed]      (runs at least two rounds)
 *
 * Each round, in one runtime: a random mesh of 1,000 actors passing
 * messages with TTLs (conservation: every message sent is accounted for),
 * a fan-in flood into a capacity-1024 mailbox, 100,000 timers set and
 * cancelled (and some left to fire), and spawn/exit churn. Rounds use
 * fresh runtimes so a leak across runtime lifetimes shows as RSS growth.
 */
#define _GNU_SOURCE
#include "troupe.h"

#include <dirent.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { T_HOP = 1, T_FLOOD, T_TICK, T_CHURN, T_DONE };

#define MESH_N 1000
#define MESH_SEEDS 5000
#define FLOOD_PRODUCERS 4
#define FLOOD_EACH 50000
#define TIMERS 100000
#define CHURN 100000

typedef struct round_st {
    uint64_t rng;  /* the root's */
    uint64_t seed; /* read-only during a round */
    tp_pid mesh[MESH_N];
    uint64_t hops_sent, flood_got, ticks;
    /* counted by many actors, which may run on different threads */
    _Atomic uint64_t hops_done, churned;
    int phases_left;
} round_st;

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static round_st R;

/* Actors on several threads draw random numbers: one generator each. */
static uint64_t *thread_rng(void)
{
    static _Thread_local uint64_t x;
    if (!x)
        x = R.seed ^ (uint64_t)(uintptr_t)&x;
    return &x;
}
static tp_pid root_pid;

static void phase_done(tp_ctx *ctx) { tp_send_int(ctx, root_pid, T_DONE, 0); }

/* mesh: a message carries its TTL; at 0 it is counted as done */
static int mesh_node(tp_ctx *ctx, void *st, const tp_msg *m)
{
    if (tp_msg_tag(m) == T_HOP) {
        int64_t ttl = 0;
        tp_msg_int(m, &ttl);
        if (ttl > 0) {
            tp_send_int(ctx, R.mesh[rnd(thread_rng()) % MESH_N], T_HOP,
                        ttl - 1);
        } else if (atomic_fetch_add(&R.hops_done, 1) + 1 == MESH_SEEDS) {
            phase_done(ctx);
        }
    } else if (tp_msg_tag(m) == T_DONE) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* flood: producers push bounded batches into one consumer */
typedef struct producer {
    tp_pid to;
    int sent;
} producer;

static producer prods[FLOOD_PRODUCERS];

static int flood_producer(tp_ctx *ctx, void *st, const tp_msg *m)
{
    producer *p = st;
    for (int i = 0; i < 64 && p->sent < FLOOD_EACH; i++, p->sent++)
        tp_send_int(ctx, p->to, T_FLOOD, p->sent);
    if (p->sent < FLOOD_EACH)
        return tp_send_int(ctx, tp_self(ctx), T_FLOOD, 0);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static int flood_consumer(tp_ctx *ctx, void *st, const tp_msg *m)
{
    if (tp_msg_tag(m) == T_FLOOD &&
        ++R.flood_got == (uint64_t)FLOOD_PRODUCERS * FLOOD_EACH) {
        phase_done(ctx);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* timers: set many, cancel most, let the rest fire */
static int timer_actor(tp_ctx *ctx, void *st, const tp_msg *m)
{
    static tp_timer ids[1000];
    if (tp_msg_tag(m) == TP_TAG_START) {
        for (int i = 0; i < TIMERS; i++) {
            tp_send_after(ctx, 1 + (unsigned)(rnd(thread_rng()) % 20), T_TICK,
                          NULL, 0, &ids[i % 1000]);
            if (i % 1000 != 999) /* keep 1 in 1000 */
                tp_timer_cancel(ctx, ids[i % 1000]);
        }
    } else if (tp_msg_tag(m) == T_TICK && ++R.ticks == TIMERS / 1000) {
        phase_done(ctx);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* churn: spawn short-lived actors in waves */
static int churn_child(tp_ctx *ctx, void *st, const tp_msg *m)
{
    uint64_t n = atomic_fetch_add(&R.churned, 1) + 1;
    return tp_exit(ctx,
                   (n % 7) ? TP_REASON_NORMAL : TP_REASON_ERROR(1, "churn"));
}

static int churner(tp_ctx *ctx, void *st, const tp_msg *m)
{
    int *left = st;
    for (int i = 0; i < 1000 && *left > 0; i++, (*left)--)
        tp_spawn(ctx, churn_child, NULL, NULL, NULL);
    if (*left > 0)
        return tp_send_int(ctx, tp_self(ctx), T_CHURN, 0);
    phase_done(ctx);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static int soak_root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    static int churn_left;
    if (tp_msg_tag(m) == TP_TAG_START) {
        root_pid = tp_self(ctx);
        for (int i = 0; i < MESH_N; i++)
            tp_spawn(ctx, mesh_node, NULL, NULL, &R.mesh[i]);
        for (int i = 0; i < MESH_SEEDS; i++, R.hops_sent++)
            tp_send_int(ctx, R.mesh[rnd(&R.rng) % MESH_N], T_HOP,
                        (int64_t)(rnd(&R.rng) % 50));
        tp_spawn_opts o = {.mailbox_capacity = 1024};
        tp_pid cons;
        tp_spawn(ctx, flood_consumer, NULL, &o, &cons);
        for (int i = 0; i < FLOOD_PRODUCERS; i++) {
            prods[i] = (producer){cons, 0};
            tp_spawn(ctx, flood_producer, &prods[i], NULL, NULL);
        }
        tp_spawn(ctx, timer_actor, NULL, NULL, NULL);
        churn_left = CHURN;
        tp_spawn(ctx, churner, &churn_left, NULL, NULL);
        R.phases_left = 4;
    } else if (tp_msg_tag(m) == T_DONE && --R.phases_left == 0) {
        for (int i = 0; i < MESH_N; i++)
            tp_send_int(ctx, R.mesh[i], T_DONE, 0);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* Bytes malloc has handed out and not had back, over all its arenas: a
 * leak shows here even when per-thread arenas make RSS jump. */
static size_t heap_kb(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (mi.uordblks + mi.hblkhd) / 1024;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n - 1; /* the directory's own fd */
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <seconds> [seed]\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[1]);
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0)
                             : (uint64_t)time(NULL);
    printf("soak: %.0f s, seed %" PRIu64 "\n", secs, seed);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 1;; round++) {
        memset(&R, 0, sizeof R);
        R.rng = R.seed = seed + (uint64_t)round;
        tp_runtime *rt;
        if (tp_runtime_new(NULL, &rt) != 0)
            return 1;
        int st = tp_run(rt, soak_root, NULL, NULL);
        tp_stats s;
        tp_runtime_stats(rt, &s);
        tp_runtime_free(rt);
        bool ok = st == 0 && s.actors_alive == 0 && R.hops_done == MESH_SEEDS &&
                  R.flood_got == (uint64_t)FLOOD_PRODUCERS * FLOOD_EACH &&
                  R.ticks == TIMERS / 1000 && R.churned == CHURN &&
                  s.timers_active == 0;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double el = (double)(t.tv_sec - t0.tv_sec) +
                    (t.tv_nsec - t0.tv_nsec) / 1e9;
        printf("round=%d t=%.0f rss_kb=%ld fds=%d ok=%d heap_kb=%zu\n", round,
               el, rss_kb(), fd_count(), ok, heap_kb());
        fflush(stdout);
        if (!ok) {
            fprintf(stderr, "soak: round %d lost work (seed %" PRIu64 ")\n",
                    round, seed);
            return 1;
        }
        if (el >= secs &&
            round >= 2) /* two rounds at least: a before and after */
            return 0;
    }
}
