/*
 * Stop the world: for the few readers of every actor's state (the actor
 * dump, the metrics page, the second SIGINT), which must not race the
 * threads running those actors. The stopper raises world_stop and wakes
 * every scheduler; each parks at its next safe point — between two batches,
 * or in its wake-up callback — until the stopper resumes them. Safe points
 * are checked with one relaxed load per batch of turns. A scheduler stuck
 * in a handler never reaches one: the stopper gives up after a while and
 * lets the parked ones go, so one stuck actor and a dump or a scrape do
 * not freeze every scheduler.
 */
#include "runtime/runtime.h"

#include <time.h>

void tpi_world_enter(tpi_sched *s)
{
    tp_runtime *rt = s->rt;
    pthread_mutex_lock(&rt->world_lock);
    rt->world_running++;
    pthread_mutex_unlock(&rt->world_lock);
}

void tpi_world_leave(tpi_sched *s)
{
    tp_runtime *rt = s->rt;
    pthread_mutex_lock(&rt->world_lock);
    rt->world_running--;
    pthread_cond_broadcast(&rt->world_cond); /* a stopper waits for fewer */
    pthread_mutex_unlock(&rt->world_lock);
}

/* World lock held: park s until the current stopper resumes. */
static void park(tp_runtime *rt)
{
    rt->world_parked++;
    pthread_cond_broadcast(&rt->world_cond);
    while (rt->world_owner)
        pthread_cond_wait(&rt->world_cond, &rt->world_lock);
    rt->world_parked--;
    pthread_cond_broadcast(&rt->world_cond); /* a next stopper waits */
}

void tpi_world_safepoint(tpi_sched *s)
{
    tp_runtime *rt = s->rt;
    pthread_mutex_lock(&rt->world_lock);
    if (rt->world_owner && rt->world_owner != s)
        park(rt);
    pthread_mutex_unlock(&rt->world_lock);
}

/* World lock held: the world runs again (the stopper is done, or gave
 * up). */
static void release(tp_runtime *rt)
{
    rt->world_owner = NULL;
    atomic_store_explicit(&rt->world_stop, 0, memory_order_relaxed);
    pthread_cond_broadcast(&rt->world_cond);
}

void tpi_world_foreign_enter(tp_runtime *rt)
{
    pthread_mutex_lock(&rt->world_lock);
    rt->world_foreign_waiting++; /* the next stopper lets it in first */
    while (rt->world_owner)
        pthread_cond_wait(&rt->world_cond, &rt->world_lock);
    rt->world_foreign_waiting--;
    rt->world_foreign++;
    pthread_cond_broadcast(&rt->world_cond); /* a next stopper waits */
    pthread_mutex_unlock(&rt->world_lock);
}

void tpi_world_foreign_leave(tp_runtime *rt)
{
    pthread_mutex_lock(&rt->world_lock);
    rt->world_foreign--;
    pthread_cond_broadcast(&rt->world_cond); /* a stopper waits for it */
    pthread_mutex_unlock(&rt->world_lock);
}

/* World lock held: every running scheduler but the stopper parked, and
 * no other thread in the middle of a spawn. */
static bool all_stopped(const tp_runtime *rt)
{
    return rt->world_parked + 1 >= rt->world_running && !rt->world_foreign;
}

int tpi_world_stop(tp_runtime *rt)
{
    /* With one scheduler too: other threads may be spawning. */
    tpi_sched *me = tpi_sched_current();
    pthread_mutex_lock(&rt->world_lock);
    if (me && rt->world_owner == me) { /* a reader inside a reader */
        rt->world_depth++;
        pthread_mutex_unlock(&rt->world_lock);
        return 0;
    }
    /* Another stopper first: we are one of those it waits for. Then the
     * schedulers the last stop parked leave (each runs a batch before its
     * next safe point) and waiting spawners get in: readers stopping the
     * world again and again must not starve them. */
    while (rt->world_owner || rt->world_parked || rt->world_foreign_waiting)
        if (rt->world_owner)
            park(rt);
        else
            pthread_cond_wait(&rt->world_cond, &rt->world_lock);
    rt->world_owner = me;
    /* relaxed: the flag only makes schedulers take the lock. */
    atomic_store_explicit(&rt->world_stop, 1, memory_order_relaxed);
    pthread_mutex_unlock(&rt->world_lock);
    for (unsigned i = 0; i < rt->nsched; i++)
        if (&rt->scheds[i] != me)
            tpi_sched_wake(&rt->scheds[i]);
    /* world_cond waits on CLOCK_MONOTONIC */
    struct timespec until =
        tpi_timespec_in(CLOCK_MONOTONIC, TPI_WORLD_WAIT_MS * 1000000ull);
    pthread_mutex_lock(&rt->world_lock);
    /* Every running scheduler but us (at a safe point ourselves). */
    int rc = 0;
    while (!all_stopped(rt) && rc == 0)
        rc = pthread_cond_timedwait(&rt->world_cond, &rt->world_lock, &until);
    bool stopped = all_stopped(rt);
    if (!stopped)
        release(rt);
    pthread_mutex_unlock(&rt->world_lock);
    return stopped ? 0 : TP_ETIMEDOUT;
}

void tpi_world_resume(tp_runtime *rt)
{
    pthread_mutex_lock(&rt->world_lock);
    if (rt->world_depth) {
        rt->world_depth--;
        pthread_mutex_unlock(&rt->world_lock);
        return;
    }
    release(rt);
    pthread_mutex_unlock(&rt->world_lock);
}
