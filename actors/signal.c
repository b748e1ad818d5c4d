/*
 * Links, monitors and exit signals, with Erlang's semantics. Every change
 * to another actor's link or monitor set travels to it as a signal in its
 * mailbox, so it is applied by the thread running that actor, in order
 * with the messages the same sender sent before.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"
#include "troupe/node.h"

#include <string.h>

/* ------------------------------------------------------- small vectors */

static int refs_add(tpi_refvec *rv, tp_ref ref, tp_pid pid)
{
    if (rv->n == rv->cap && tpi_grow((void **)&rv->v, &rv->cap, sizeof *rv->v))
        return TP_ENOMEM;
    rv->v[rv->n++] = (tpi_refpid){ref, pid};
    return 0;
}

/* Remove the entry with ref and, unless it is TP_PID_NONE, pid; its pid
 * in *out. A ref is unique only in the runtime that made it: a signal
 * from another node may carry a ref equal to one of ours, so a signal
 * matches its sender too. */
static bool refs_del(tpi_refvec *rv, tp_ref ref, tp_pid pid, tp_pid *out)
{
    for (uint32_t i = 0; i < rv->n; i++)
        if (rv->v[i].ref == ref &&
            (pid == TP_PID_NONE || rv->v[i].pid == pid)) {
            if (out)
                *out = rv->v[i].pid;
            rv->v[i] = rv->v[--rv->n];
            return true;
        }
    return false;
}

/* ------------------------------------------------------------- signals */

static tp_runtime *rt_of(tpi_actor *a) { return tpi_actor_rt(a); }

/* Send a bare signal (no payload) from a. */
static int signal_to(tpi_actor *a, tp_pid to, int32_t tag, tp_ref ref)
{
    tpi_msg *m = tpi_msg_new(tag, NULL, 0);
    if (!m)
        return TP_ENOMEM;
    m->from = tpi_actor_pid(a);
    m->ref = ref;
    return tpi_deliver(rt_of(a), NULL, to, m);
}

int tpi_send_reason(tp_runtime *rt, tp_pid from, tp_pid to, int32_t tag,
                    tp_reason r, tp_ref ref, uint32_t flags)
{
    tpi_msg *m = tpi_msg_reason_new(tag, r);
    if (!m)
        return TP_ENOMEM;
    m->from = from;
    m->ref = ref;
    m->flags |= flags;
    return tpi_deliver(rt, NULL, to, m);
}

bool tpi_signal_handle(tpi_actor *a, tpi_msg *m)
{
    tpi_actor_ext *x = a->ext;
    switch (m->tag) {
    case TPI_SIG_LINK:
        x = tpi_actor_ext_get(a);
        /* Out of memory: the link cannot be kept, so tell the linker as if
         * we had ended (it learns the link failed instead of trusting it). */
        if (!x || tpi_pidset_add(&x->links, m->from) != 0)
            tpi_send_reason(rt_of(a), tpi_actor_pid(a), m->from, TPI_SIG_EXIT,
                            TP_REASON_ERROR(TP_ENOMEM, "link failed"), 0,
                            TPI_MSG_VIA_LINK);
        return false;
    case TPI_SIG_UNLINK:
        if (x)
            tpi_pidset_del(&x->links, m->from);
        return false;
    case TPI_SIG_MONITOR:
        x = tpi_actor_ext_get(a);
        if (!x || refs_add(&x->watchers, m->ref, m->from) != 0)
            tpi_send_reason(rt_of(a), tpi_actor_pid(a), m->from, TP_TAG_DOWN,
                            TP_REASON_ERROR(TP_ENOMEM, "monitor failed"),
                            m->ref, 0);
        return false;
    case TPI_SIG_DEMONITOR:
        if (x)
            refs_del(&x->watchers, m->ref, m->from, NULL);
        return false;
    case TP_TAG_DOWN:
        /* Only monitors still active here; after tp_demonitor, dropped.
         * It comes from the monitored actor (or on its behalf). */
        return x && refs_del(&x->monitoring, m->ref, m->from, NULL);
    case TPI_SIG_EXIT: {
        tpi_exit_taken(rt_of(a), a, m);
        tp_reason r;
        if (tp_msg_reason(m, &r) != 0)
            return false;
        bool via_link = m->flags & TPI_MSG_VIA_LINK;
        /* A link exit from an actor we are no longer linked to (unlinked
         * meanwhile) is void, as in Erlang. */
        if (via_link && !(x && tpi_pidset_del(&x->links, m->from)))
            return false;
        if (!via_link && r.kind == TP_EXIT_KILL) {
            tpi_actor_set_exit(a, (tp_reason){TP_EXIT_KILLED, 0, NULL});
            return false;
        }
        if (a->flags & TPI_ACT_TRAP) {
            m->tag = TP_TAG_EXIT;
            return true;
        }
        if (r.kind != TP_EXIT_NORMAL)
            tpi_actor_set_exit(a, r);
        return false;
    }
    case TP_TAG_NODEDOWN: /* from a node service: for the behavior */
    case TP_TAG_NODEUP: return true;
    default: return false;
    }
}

void tpi_signal_death(tpi_actor *a, tp_reason r)
{
    tpi_actor_ext *x = a->ext;
    if (!x)
        return;
    tp_runtime *rt = rt_of(a);
    tp_pid self = tpi_actor_pid(a);
    for (uint32_t i = 0; i < x->links.n; i++)
        tpi_send_reason(rt, self, x->links.v[i], TPI_SIG_EXIT, r, 0,
                        TPI_MSG_VIA_LINK);
    for (uint32_t i = 0; i < x->watchers.n; i++)
        tpi_send_reason(rt, self, x->watchers.v[i].pid, TP_TAG_DOWN, r,
                        x->watchers.v[i].ref, 0);
    for (uint32_t i = 0; i < x->monitoring.n; i++)
        signal_to(a, x->monitoring.v[i].pid, TPI_SIG_DEMONITOR,
                  x->monitoring.v[i].ref);
    tpi_pidset_free(&x->links);
    tpi_free(x->watchers.v);
    tpi_free(x->monitoring.v);
    memset(&x->watchers, 0, sizeof x->watchers);
    memset(&x->monitoring, 0, sizeof x->monitoring);
}

/* ----------------------------------------------------------------- API */

int tp_link(tp_ctx *ctx, tp_pid pid)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (pid == TP_PID_NONE)
        return TP_EINVAL;
    if (pid == tpi_actor_pid(a))
        return 0;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (!x || tpi_pidset_add(&x->links, pid) != 0)
        return TP_ENOMEM;
    int rc = signal_to(a, pid, TPI_SIG_LINK, 0);
    if (rc)
        tpi_pidset_del(&x->links, pid);
    return rc;
}

int tp_unlink(tp_ctx *ctx, tp_pid pid)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (pid == TP_PID_NONE)
        return TP_EINVAL;
    if (!a->ext || !tpi_pidset_del(&a->ext->links, pid))
        return 0;
    /* Out of memory here leaves the peer's half: its exit signal will find
     * no link on our side and be ignored, so the result is the same. */
    signal_to(a, pid, TPI_SIG_UNLINK, 0);
    return 0;
}

int tp_trap_exit(tp_ctx *ctx, bool on)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (on)
        a->flags |= TPI_ACT_TRAP;
    else
        a->flags &= ~(uint32_t)TPI_ACT_TRAP;
    return 0;
}

int tp_monitor(tp_ctx *ctx, tp_pid pid, tp_ref *ref_out)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (pid == TP_PID_NONE)
        return TP_EINVAL;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    tp_ref ref = tpi_ref_new(rt_of(a));
    if (!x || refs_add(&x->monitoring, ref, pid) != 0)
        return TP_ENOMEM;
    int rc = signal_to(a, pid, TPI_SIG_MONITOR, ref);
    if (rc) {
        refs_del(&x->monitoring, ref, TP_PID_NONE, NULL);
        return rc;
    }
    if (ref_out)
        *ref_out = ref;
    return 0;
}

int tp_demonitor(tp_ctx *ctx, tp_ref ref)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    tp_pid target;
    if (!a->ext || !refs_del(&a->ext->monitoring, ref, TP_PID_NONE, &target))
        /* Its DOWN came and was deferred: dropped, as Erlang's
         * demonitor(Ref, [flush]) drops one left in the mailbox. */
        return tpi_deferred_forget(a, ref, false) ? 0 : TP_ENOENT;
    /* Out of memory leaves a stale watcher entry at the target; its DOWN
     * will find no monitor here and be dropped. */
    signal_to(a, target, TPI_SIG_DEMONITOR, ref);
    return 0;
}

int tp_exit_signal(tp_ctx *ctx, tp_pid to, tp_reason reason)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (to == TP_PID_NONE || reason.kind < TP_EXIT_NORMAL ||
        reason.kind > TP_EXIT_KIND_MAX)
        return TP_EINVAL;
    if (to == tpi_actor_pid(a) && reason.kind == TP_EXIT_KILL) {
        /* Killing oneself needs no trip through the mailbox. */
        tpi_actor_set_exit(a, (tp_reason){TP_EXIT_KILLED, 0, NULL});
        return 0;
    }
    return tpi_send_reason(rt_of(a), tpi_actor_pid(a), to, TPI_SIG_EXIT, reason,
                           0, 0);
}

int tp_kill(tp_ctx *ctx, tp_pid to)
{
    return tp_exit_signal(ctx, to, TP_REASON_KILL);
}

/* TP_SPAWN_LINK: the child has not run yet and lives on the spawner's
 * thread, so both halves are set directly, atomically with the spawn. */
int tpi_link_spawned(tpi_actor *parent, tpi_actor *child)
{
    tpi_actor_ext *px = tpi_actor_ext_get(parent);
    tpi_actor_ext *cx = tpi_actor_ext_get(child);
    tp_pid pp = tpi_actor_pid(parent), cp = tpi_actor_pid(child);
    if (!px || !cx || tpi_pidset_add(&cx->links, pp) != 0)
        return TP_ENOMEM;
    if (tpi_pidset_add(&px->links, cp) != 0)
        return TP_ENOMEM;
    return 0;
}

int tp_runtime_exit_signal(tp_runtime *rt, tp_pid to, tp_reason reason)
{
    if (!rt || to == TP_PID_NONE || reason.kind < TP_EXIT_NORMAL ||
        reason.kind > TP_EXIT_KIND_MAX)
        return TP_EINVAL;
    return tpi_send_reason(rt, TP_PID_NONE, to, TPI_SIG_EXIT, reason, 0, 0);
}
