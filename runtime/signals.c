/*
 * SIGINT/SIGTERM: an orderly shutdown of the tree, then a forced one.
 *
 * rt->signals_seen is 1 while a shutdown that a signal started is in
 * progress: from the signal that sent the root its shutdown exit signal
 * until the root ends (then the run is over) or refuses it with
 * tp_refuse_shutdown (back to 0). A signal while it is 0 starts a new
 * orderly shutdown; any other signal kills every actor and leaves it at 2
 * for good (nothing left to refuse). Set by scheduler 0's loop (the signal
 * event), cleared by the root's thread, hence atomic.
 */
#include "actors/actor.h"
#include "runtime/runtime.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>

static void kill_live(tpi_actor *a, void *arg)
{
    if (a->behavior)
        tpi_send_reason(arg, TP_PID_NONE, tpi_actor_pid(a), TPI_SIG_EXIT,
                        TP_REASON_KILL, 0, 0);
}

/* The forced shutdown: kill every actor, with the other schedulers
 * parked. While one is stuck in a handler, try again in 100 ms from this
 * loop (which meanwhile serves its own actors, signals and sockets), not
 * in a loop that would hold the world for the stuck handler's whole run. */
static void kill_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tp_runtime *rt = arg;
    if (tpi_world_stop(rt) != 0) {
        struct timeval again = {0, 100000};
        if (event_base_once(rt->scheds[0].base, -1, EV_TIMEOUT, kill_all, rt,
                            &again) != 0)
            fputs("troupe: cannot kill the actors (out of memory)\n", stderr);
        return;
    }
    tpi_table_each(rt->table, kill_live, rt);
    tpi_world_resume(rt);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tp_runtime *rt = arg;
    int seen = __atomic_load_n(&rt->signals_seen, __ATOMIC_RELAXED), next;
    /* A CAS, not a store: a refusal between the load and here makes this
     * signal an orderly shutdown again, never a kill the root was told it
     * had avoided. release: pairs with the acquire load in
     * tp_refuse_shutdown, which then reads rt->root (written on this
     * thread before the loop ran). */
    do
        next = seen == 0 ? 1 : 2;
    while (!__atomic_compare_exchange_n(&rt->signals_seen, &seen, next, false,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    if (next == 1)
        tpi_send_reason(rt, TP_PID_NONE, rt->root, TPI_SIG_EXIT,
                        TP_REASON_SHUTDOWN, 0, 0);
    else /* every actor's state: the other schedulers park meanwhile */
        kill_all(-1, 0, rt);
}

int tp_refuse_shutdown(tp_ctx *ctx)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    tp_runtime *rt = tpi_actor_rt(a);
    /* acquire: pairs with the release in on_signal (see there). A refusal
     * racing a second signal either comes first (the signal starts a new
     * orderly shutdown) or finds 2 and fails (the signal forces). */
    if (__atomic_load_n(&rt->signals_seen, __ATOMIC_ACQUIRE) != 1 ||
        tpi_actor_pid(a) != rt->root)
        return TP_ESTATE;
    int busy = 1; /* relaxed: only the value is handed over */
    if (!__atomic_compare_exchange_n(&rt->signals_seen, &busy, 0, false,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return TP_ESTATE;
    return 0;
}

int tp_runtime_handle_signals(tp_runtime *rt)
{
    if (!rt)
        return TP_EINVAL;
    if (atomic_load(&rt->state) != TPI_RT_NEW || rt->sig_ev[0])
        return TP_ESTATE;
    static const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        rt->sig_ev[i] =
            evsignal_new(rt->scheds[0].base, sigs[i], on_signal, rt);
        if (!rt->sig_ev[i] || evsignal_add(rt->sig_ev[i], NULL) != 0) {
            tpi_signals_free(rt);
            return TP_ESYS;
        }
    }
    /* A peer closing a socket must be an error on that socket, never the
     * end of the process. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

void tpi_signals_free(tp_runtime *rt)
{
    for (int i = 0; i < 2; i++)
        if (rt->sig_ev[i]) {
            event_free(rt->sig_ev[i]);
            rt->sig_ev[i] = NULL;
        }
}
