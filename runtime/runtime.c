/* The runtime handle: configuration, run, accounting, statistics. */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 64 /* schedulers are bits in rt->idle */
#define MAX_BUSY_WAIT_US 1000000u

/* Runtimes alive in the process: the last one freed empties the message
 * node depot shared by all threads (actors/node_cache.c). */
static _Atomic unsigned runtimes;

/* TROUPE_THREADS, else the online CPUs (at least 1, at most 64). */
static unsigned default_threads(void)
{
    const char *env = getenv("TROUPE_THREADS");
    long n = env && *env ? strtol(env, NULL, 10)
                         : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}

/* TROUPE_BUSY_WAIT_US, else 50 us: long enough to bridge the gaps between
 * a service's requests under load (docs/performance.md, troupe-kv), short
 * enough that a pause costs little. At most one second. */
static unsigned default_busy_wait(void)
{
    const char *env = getenv("TROUPE_BUSY_WAIT_US");
    long n = env && *env ? strtol(env, NULL, 10) : 50;
    return n < 0 ? 0 : n > MAX_BUSY_WAIT_US ? MAX_BUSY_WAIT_US : (unsigned)n;
}

void tp_config_init(tp_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->threads = default_threads();
    cfg->mailbox_capacity = TP_MAILBOX_DEFAULT;
    cfg->max_payload = 64u << 20;
    cfg->batch = 64;
    cfg->stuck_ms = 1000;
    cfg->busy_wait_us = default_busy_wait();
}

int tp_runtime_new(const tp_config *cfg, tp_runtime **out)
{
    tp_config c;
    tp_config_init(&c);
    if (cfg)
        c = *cfg;
    if (!out || c.mailbox_capacity == 0 || c.batch == 0 || c.max_payload == 0 ||
        c.max_payload > UINT32_MAX || c.threads > MAX_THREADS ||
        c.busy_wait_us > MAX_BUSY_WAIT_US)
        return TP_EINVAL;
    if (c.threads == 0)
        c.threads = default_threads();
    if (c.seed) /* the deterministic mode is one thread's schedule */
        c.threads = 1;
    tp_runtime *rt = tpi_calloc_aligned(sizeof *rt, _Alignof(tp_runtime));
    if (!rt)
        return TP_ENOMEM;
    rt->cfg = c;
    /* relaxed: a count; the depot has its own lock */
    atomic_fetch_add_explicit(&runtimes, 1, memory_order_relaxed);
    atomic_init(&rt->next_ref, 1);
    pthread_mutex_init(&rt->wait_lock, NULL);
    pthread_mutex_init(&rt->svc_lock, NULL);
    pthread_mutex_init(&rt->fw_lock, NULL);
    pthread_cond_init(&rt->fw_cond, NULL);
    pthread_mutex_init(&rt->world_lock, NULL);
    pthread_condattr_t ca; /* a stopper's deadline is monotonic */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->world_cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = tpi_table_new(&rt->table);
    if (!rc)
        rc = tpi_names_new(&rt->names);
    if (!rc && !(rt->scheds = tpi_calloc_aligned(c.threads * sizeof *rt->scheds,
                                                 TPI_SCHED_ALIGN)))
        rc = TP_ENOMEM;
    for (unsigned i = 0; !rc && i < c.threads; i++) {
        rc = tpi_sched_init(&rt->scheds[i], rt, i);
        rt->nsched = i + 1; /* to fini what was begun */
    }
    if (!rc && c.seed) {
        rt->scheds[0].det = true;
        rt->scheds[0].budget = 1;   /* one message per turn: interleave */
        rt->scheds[0].next_max = 0; /* its own pick: no next slot */
        rt->scheds[0].rng = c.seed;
        rt->scheds[0].timers.virtual_time = true;
        rt->scheds[0].busy_wait_ns = 0; /* its loop polls only when idle */
    }
    if (rc) {
        tp_runtime_free(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

void tp_runtime_free(tp_runtime *rt)
{
    if (!rt || atomic_load(&rt->state) == TPI_RT_RUNNING)
        return;
    tpi_svc_stop_all(rt); /* e.g. pool threads that may deliver to actors */
    if (rt->table)
        tpi_table_each(rt->table, tpi_actor_teardown, rt);
    tpi_svc_free_all(rt); /* lingering sockets and workers; before the loops */
    tpi_signals_free(rt);
    for (unsigned i = 0; i < rt->nsched; i++)
        tpi_sched_fini(&rt->scheds[i]);
    tpi_free_aligned(rt->scheds);
    tpi_names_free(rt->names);
    tpi_table_free(rt->table);
    pthread_cond_destroy(&rt->world_cond);
    pthread_mutex_destroy(&rt->world_lock);
    pthread_cond_destroy(&rt->fw_cond);
    pthread_mutex_destroy(&rt->fw_lock);
    pthread_mutex_destroy(&rt->wait_lock);
    pthread_mutex_destroy(&rt->svc_lock);
    tpi_free_aligned(rt);
    tpi_msg_cache_flush();
    if (atomic_fetch_sub_explicit(&runtimes, 1, memory_order_relaxed) == 1)
        tpi_msg_depot_flush();
}

static void *sched_main(void *arg)
{
    tpi_sched_run(arg);
    return NULL;
}

/* Start schedulers 1..n-1 on their own threads; 0 runs on ours. */
static int start_threads(tp_runtime *rt, unsigned *started)
{
    for (*started = 1; *started < rt->nsched; (*started)++) {
        tpi_sched *s = &rt->scheds[*started];
        if (pthread_create(&s->thread, NULL, sched_main, s) != 0)
            return TP_ESYS;
    }
    return 0;
}

static void join_threads(tp_runtime *rt, unsigned started)
{
    for (unsigned i = 1; i < started; i++)
        pthread_join(rt->scheds[i].thread, NULL);
}

int tp_run(tp_runtime *rt, tp_behavior root, void *state,
           const tp_spawn_opts *opts)
{
    if (!rt || !root)
        return TP_EINVAL;
    int expect = TPI_RT_NEW;
    if (!atomic_compare_exchange_strong(&rt->state, &expect, TPI_RT_RUNNING))
        return TP_ESTATE;
    /* relaxed: read by the schedulers we start next (thread creation
     * orders it); every other scheduler starts out with nothing to do. */
    atomic_store_explicit(&rt->idle, ((1ull << (rt->nsched - 1)) - 1) << 1,
                          memory_order_relaxed);
    /* The run's own count, held while the root is spawned: the run ends
     * when the count drops to zero after this, never before. */
    atomic_fetch_add_explicit(&rt->live, TPI_LIVE_RUN + 1,
                              memory_order_relaxed);
    unsigned started = 1;
    /* Services first (a node connects to its cluster): the root may use
     * them from its first message on. */
    int rc = tpi_svc_start_all(rt);
    bool services = rc == 0;
    if (!rc)
        rc = start_threads(rt, &started);
    if (!rc)
        rc = tpi_monitor_start(rt);
    if (!rc)
        rc = tpi_spawn(rt, NULL, root, state, opts, &rt->root);
    tpi_runtime_actor_gone(rt);
    if (rc == 0)
        rc = tpi_sched_run(&rt->scheds[0]);
    else
        tpi_sched_stop_all(rt);
    join_threads(rt, started);
    tpi_monitor_stop(rt);
    if (services)
        tpi_svc_end_all(rt);
    atomic_store(&rt->state, TPI_RT_DONE);
    tpi_runtime_wake_foreign(rt);
    if (rc)
        return rc;
    tp_exit_kind k = rt->root_reason.kind;
    return k == TP_EXIT_NORMAL || k == TP_EXIT_SHUTDOWN ? 0 : 1;
}

int tp_runtime_root_reason(tp_runtime *rt, tp_reason *out)
{
    if (!rt || !out)
        return TP_EINVAL;
    if (atomic_load(&rt->state) != TPI_RT_DONE || rt->root == TP_PID_NONE)
        return TP_ESTATE;
    *out = rt->root_reason;
    return 0;
}

int tp_runtime_spawn(tp_runtime *rt, tp_behavior b, void *state,
                     const tp_spawn_opts *opts, tp_pid *pid_out)
{
    if (!rt)
        return TP_EINVAL;
    if (atomic_load(&rt->state) == TPI_RT_DONE)
        return TP_ESTATE;
    return tpi_spawn(rt, NULL, b, state, opts, pid_out);
}

void tpi_runtime_actor_ended(tp_runtime *rt, tpi_actor *a, tp_reason r)
{
    TPI_STAT(rt, exited, 1);
    if (a->flags & TPI_ACT_OBS)
        TPI_STAT(rt, observed, -1);
    if (r.kind >= TP_EXIT_NORMAL && r.kind <= TP_EXIT_KIND_MAX) /* issue 8 */
        tpi_stat_add(rt,
                     offsetof(tpi_stats, exit_kinds) +
                         (size_t)r.kind * sizeof rt->stats.exit_kinds[0],
                     1);
    /* relaxed: the root's own end comes after its spawn wrote it (its
     * scheduling orders them); any other actor's pid differs from both
     * the old and the new value (see spawn in actors/actor.c) */
    if (tpi_actor_pid(a) == __atomic_load_n(&rt->root, __ATOMIC_RELAXED)) {
        rt->root_reason = r;
        if (r.text) {
            strncpy(rt->root_text, r.text, TP_REASON_TEXT_MAX);
            rt->root_reason.text = rt->root_text;
        }
    }
}

/* Take n from the live count; the run ends when it was the last. */
static void live_drop(tp_runtime *rt, uint64_t n)
{
    /* acq_rel: the last one out sees every other actor's end. */
    if (atomic_fetch_sub_explicit(&rt->live, n, memory_order_acq_rel) ==
        (TPI_LIVE_RUN | n))
        tpi_sched_stop_all(rt);
}

/* relaxed, on s->credits: s's thread is its only writer; others only
 * estimate with it (tp_runtime_stats). */
void tpi_runtime_actor_born(tpi_sched *s)
{
    uint32_t c = atomic_load_explicit(&s->credits, memory_order_relaxed);
    if (!c) {
        /* relaxed: the spawner is alive and counted, so the count is
         * above zero and this cannot race the end of the run. */
        atomic_fetch_add_explicit(&s->rt->live, TPI_LIVE_CREDITS,
                                  memory_order_relaxed);
        c = TPI_LIVE_CREDITS;
    }
    atomic_store_explicit(&s->credits, c - 1, memory_order_relaxed);
}

void tpi_runtime_actor_gone(tp_runtime *rt) { live_drop(rt, 1); }

void tpi_runtime_actor_gone_on(tpi_sched *s)
{
    uint32_t c = atomic_load_explicit(&s->credits, memory_order_relaxed) + 1;
    if (c > 2 * TPI_LIVE_CREDITS) { /* we keep some: not the end */
        live_drop(s->rt, c - TPI_LIVE_CREDITS);
        c = TPI_LIVE_CREDITS;
    }
    atomic_store_explicit(&s->credits, c, memory_order_relaxed);
}

void tpi_runtime_credits_back(tpi_sched *s)
{
    uint32_t c = atomic_load_explicit(&s->credits, memory_order_relaxed);
    if (c) {
        atomic_store_explicit(&s->credits, 0, memory_order_relaxed);
        live_drop(s->rt, c);
    }
}

void tpi_runtime_wake_foreign(tp_runtime *rt)
{
    /* Callers fenced (tpi_drained) or changed state with seq_cst. */
    if (atomic_load_explicit(&rt->fw_waiters, memory_order_relaxed)) {
        pthread_mutex_lock(&rt->fw_lock);
        pthread_cond_broadcast(&rt->fw_cond);
        pthread_mutex_unlock(&rt->fw_lock);
    }
}

void tp_runtime_stats(tp_runtime *rt, tp_stats *out)
{
    if (!rt || !out)
        return;
    memset(out, 0, sizeof *out);
    /* relaxed: an estimate (exact when the schedulers are idle). */
    uint64_t live = atomic_load_explicit(&rt->live, memory_order_relaxed) &
                    ~TPI_LIVE_RUN;
    for (unsigned i = 0; i < rt->nsched; i++)
        live -=
            atomic_load_explicit(&rt->scheds[i].credits, memory_order_relaxed);
    out->actors_alive = (int64_t)live < 0 ? 0 : live;
    out->slots = tpi_table_slots(rt->table);
    out->schedule_hash = rt->scheds[0].hash;
    for (unsigned i = 0; i <= rt->nsched; i++) {
        const tpi_stats *st = i ? &rt->scheds[i - 1].stats : &rt->stats;
        /* relaxed: estimates; each counter has one writer or is atomic. */
#define SUM_(f) atomic_load_explicit(&st->f, memory_order_relaxed)
        out->actors_spawned += SUM_(spawned);
        out->actors_exited += SUM_(exited);
        out->messages_sent += SUM_(sent);
        out->dead_letters += SUM_(dead_letters);
        out->late_replies += SUM_(late_replies);
        out->timers_active += SUM_(timers);
#undef SUM_
    }
}

void tpi_stat_add_shared(tp_runtime *rt, size_t field, int64_t d)
{
    _Atomic uint64_t *c = (_Atomic uint64_t *)((char *)&rt->stats + field);
    /* relaxed: a counter; off the scheduler threads several may add. */
    atomic_fetch_add_explicit(c, (uint64_t)d, memory_order_relaxed);
}
