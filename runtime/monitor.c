/*
 * The stuck-handler report: a thread that samples every scheduler's tick
 * (odd while turns run, new at each turn: tpi_sched_tick_turn) a few times per
 * stuck_ms, as Go's sysmon does. The same odd tick seen for stuck_ms means
 * one behavior call has run that long: it is reported (actor, tag, how
 * long), then again each time that duration doubles. The schedulers pay
 * only the stores around each call; nothing else is shared.
 */
#include "runtime/alloc.h"
#include "runtime/service.h"
#include "runtime/runtime.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

typedef struct watch {
    uint64_t tick;     /* last odd tick seen, 0 if none */
    uint64_t since_ns; /* when we first saw it */
    uint64_t next_ms;  /* report when the call has run this long */
} watch;

struct tpi_monitor {
    tp_runtime *rt;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop; /* under lock */
    watch w[];
};

static void report(tp_runtime *rt, tp_pid pid, int32_t tag, uint64_t ms)
{
    if (rt->cfg.on_stuck) {
        rt->cfg.on_stuck(rt->cfg.stuck_arg, pid, tag, ms);
        return;
    }
    char b[32];
    fprintf(stderr,
            "troupe: actor %s has been handling tag %" PRId32 " for %" PRIu64
            " ms\n",
            tpi_pidstr(pid, b, sizeof b), tag, ms);
}

static void sample(struct tpi_monitor *m, unsigned i, uint64_t now)
{
    tpi_sched *s = &m->rt->scheds[i];
    watch *w = &m->w[i];
    /* seqlock read: acquire the tick, read the pair, then re-read the
     * tick after an acquire fence; an unchanged odd tick means the pair
     * is the running call's. */
    uint64_t t = atomic_load_explicit(&s->tick, memory_order_acquire);
    tp_pid pid = atomic_load_explicit(&s->cur_pid, memory_order_relaxed);
    int32_t tag = atomic_load_explicit(&s->tick_tag, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (!(t & 1) || atomic_load_explicit(&s->tick, memory_order_relaxed) != t) {
        w->tick = 0;
        return;
    }
    if (w->tick != t) {
        *w = (watch){t, now, m->rt->cfg.stuck_ms};
        return;
    }
    uint64_t ms = (now - w->since_ns) / 1000000u;
    if (ms >= w->next_ms) {
        report(m->rt, pid, tag, ms);
        w->next_ms *= 2;
    }
}

static void *monitor_main(void *arg)
{
    struct tpi_monitor *m = arg;
    uint64_t period_ns = (uint64_t)m->rt->cfg.stuck_ms * 1000000u / 4;
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec +
                      period_ns;
        ts = (struct timespec){(time_t)(at / 1000000000u),
                               (long)(at % 1000000000u)};
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
        if (m->stop)
            break;
        uint64_t now = tpi_now_ns();
        for (unsigned i = 0; i < m->rt->nsched; i++)
            sample(m, i, now);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int tpi_monitor_start(tp_runtime *rt)
{
    if (!rt->cfg.stuck_ms)
        return 0;
    struct tpi_monitor *m = tpi_calloc(sizeof *m + rt->nsched * sizeof m->w[0]);
    if (!m)
        return TP_ENOMEM;
    m->rt = rt;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->lock, NULL);
    if (pthread_create(&m->thread, NULL, monitor_main, m) != 0) {
        pthread_cond_destroy(&m->cond);
        pthread_mutex_destroy(&m->lock);
        tpi_free(m);
        return TP_ESYS;
    }
    rt->monitor = m;
    return 0;
}

void tpi_monitor_stop(tp_runtime *rt)
{
    struct tpi_monitor *m = rt->monitor;
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stop = true;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    tpi_free(m);
    rt->monitor = NULL;
}
