/* SIGINT/SIGTERM: an orderly shutdown of the tree, then a forced one. */
#include "actors/actor.h"
#include "runtime/runtime.h"

#include <event2/event.h>
#include <signal.h>

static void kill_live(tpi_actor *a, void *arg)
{
    if (a->behavior)
        tpi_send_reason(arg, TP_PID_NONE, tpi_actor_pid(a), TPI_SIG_EXIT,
                        TP_REASON_KILL, 0, 0);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tp_runtime *rt = arg;
    if (rt->signals_seen++ == 0)
        tpi_send_reason(rt, TP_PID_NONE, rt->root, TPI_SIG_EXIT,
                        TP_REASON_SHUTDOWN, 0, 0);
    else { /* every actor's state: the other schedulers park meanwhile */
        tpi_world_stop(rt);
        tpi_table_each(rt->table, kill_live, rt);
        tpi_world_resume(rt);
    }
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
