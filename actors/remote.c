/*
 * Remote pids: the core's side of nodes. A pid with TPI_PID_REMOTE set is
 * an actor of another node; a send to it leaves through the node
 * service's route (runtime/service.h, tpi_svc_set_remote), and one its
 * node cannot take is answered as a dead letter with reason noconnection.
 * Sends made in a batch of turns may leave together at its end
 * (tpi_remote_batch, called by the scheduler around each batch).
 */
#include "actors/actor.h"
#include "runtime/runtime.h"

void tpi_svc_set_remote(tp_runtime *rt, const tpi_remote_ops *ops, void *state)
{
    rt->remote = ops;
    rt->remote_state = state;
}

int tpi_svc_watch_end(tp_ctx *ctx)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    a->flags |= TPI_ACT_ENDHOOK;
    return 0;
}

/* The runtime whose batch of turns this thread runs, if a node's. */
static _Thread_local tp_runtime *batch_of;

void tpi_remote_batch(tp_runtime *rt, bool on)
{
    if (!rt->remote)
        return;
    batch_of = on ? rt : NULL;
    if (!on)
        rt->remote->flush(rt->remote_state);
}

bool tpi_svc_batching(tp_runtime *rt) { return batch_of == rt; }

void tpi_remote_ended(tp_runtime *rt, tp_pid pid)
{
    if (rt->remote && rt->remote->ended)
        rt->remote->ended(rt->remote_state, pid);
}

void tpi_remote_call_expired(tp_runtime *rt, tp_pid caller, tp_ref ref)
{
    if (rt->remote && rt->remote->call_expired)
        rt->remote->call_expired(rt->remote_state, caller, ref);
}

int tpi_remote_deliver(tp_runtime *rt, tp_pid to, tpi_msg *m)
{
    int rc = TP_ENOCONN;
    if (rt->remote) {
        tpi_msg_bytes(m);
        tpi_envelope e = {.tag = m->tag,
                          .from = m->from,
                          .reply_to = m->reply_to,
                          .ref = m->ref,
                          .status = m->status,
                          .request = (m->flags & TPI_MSG_REQUEST) != 0,
                          .via_link = (m->flags & TPI_MSG_VIA_LINK) != 0,
                          .data = m->data,
                          .len = m->len};
        rc = rt->remote->deliver(rt->remote_state, m->from, to, &e);
    }
    if (rc == 0 || rc == TP_E2BIG || rc == TP_ENOMEM) {
        /* Sent, or refused before it was numbered (too big for a frame,
         * out of memory): the sender is told, and nothing is lost that a
         * later message could overtake. A call refused so gets no answer
         * (tp_call drops its pending entry); a forward's obligation stays
         * with the forwarder. */
        tpi_msg_free(m);
        return rc;
    }
    tpi_dead_letter_why(rt, to, m, (tp_reason){TP_EXIT_NOCONNECTION, 0, NULL});
    return 0;
}
