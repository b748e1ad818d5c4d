/*
 * The core's side of the service door (runtime/service.h): everything a
 * service may ask of the actors and the loops, by pid. Service state and
 * lingering things are torn down by tp_runtime_free (tpi_svc_stop_all,
 * tpi_svc_free_all), so the core names no service.
 */
#include "runtime/service.h"
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <signal.h>
#include <string.h>

/* ---------------------------------------------------------- state */

void *tpi_svc_get(tp_runtime *rt, tpi_svc_id id, const tpi_svc_ops *ops)
{
    /* acquire: pairs with the release store below, so a state seen here
     * is fully made. */
    void *st = atomic_load_explicit(&rt->svc[id], memory_order_acquire);
    if (st || !ops)
        return st;
    pthread_mutex_lock(&rt->svc_lock);
    st = atomic_load_explicit(&rt->svc[id], memory_order_relaxed);
    if (!st && (st = ops->make(rt)) != NULL) {
        rt->svc_ops[id] = ops;
        atomic_store_explicit(&rt->svc[id], st, memory_order_release);
    }
    pthread_mutex_unlock(&rt->svc_lock);
    return st;
}

int tpi_svc_start_all(tp_runtime *rt)
{
    for (int i = 0; i < TPI_SVC_MAX; i++) {
        void *st = atomic_load_explicit(&rt->svc[i], memory_order_acquire);
        int rc = st && rt->svc_ops[i]->start ? rt->svc_ops[i]->start(rt, st)
                                             : 0;
        if (rc) {
            tpi_svc_end_all(rt); /* the ones started, and this one */
            return rc;
        }
    }
    return 0;
}

void tpi_svc_end_all(tp_runtime *rt)
{
    for (int i = TPI_SVC_MAX; i-- > 0;) {
        void *st = atomic_load_explicit(&rt->svc[i], memory_order_acquire);
        if (st && rt->svc_ops[i]->end)
            rt->svc_ops[i]->end(rt, st);
    }
}

void tpi_svc_stop_all(tp_runtime *rt)
{
    for (int i = 0; i < TPI_SVC_MAX; i++) {
        void *st = atomic_load_explicit(&rt->svc[i], memory_order_acquire);
        if (st && rt->svc_ops[i]->stop)
            rt->svc_ops[i]->stop(rt, st);
    }
}

void tpi_svc_free_all(tp_runtime *rt)
{
    for (tpi_linger *l; (l = rt->linger) != NULL;) {
        tpi_linger_remove(rt, l);
        l->finish(l);
    }
    for (int i = 0; i < TPI_SVC_MAX; i++) {
        void *st = atomic_load_explicit(&rt->svc[i], memory_order_acquire);
        if (st)
            rt->svc_ops[i]->free(rt, st);
        atomic_store_explicit(&rt->svc[i], NULL, memory_order_relaxed);
    }
}

/* ------------------------------------------------------------ run */

tpi_phase tpi_svc_phase(tp_runtime *rt)
{
    switch (atomic_load(&rt->state)) {
    case TPI_RT_NEW: return TPI_PHASE_NEW;
    case TPI_RT_RUNNING: return TPI_PHASE_RUNNING;
    default: return TPI_PHASE_DONE;
    }
}

bool tpi_svc_may_read(tp_runtime *rt)
{
    tpi_sched *s = tpi_sched_current();
    return (s && s->rt == rt) || atomic_load(&rt->state) != TPI_RT_RUNNING;
}

struct event_base *tpi_svc_main_base(tp_runtime *rt)
{
    return rt->scheds[0].base;
}

tp_ref tpi_svc_ref(tp_runtime *rt) { return tpi_ref_new(rt); }

int tpi_svc_stopped(tp_runtime *rt, void (*fn)(void *arg), void *arg)
{
    tpi_sched *s = tpi_sched_current();
    bool stop = s && s->rt == rt; /* else rt is not running */
    int rc = stop ? tpi_world_stop(rt) : 0;
    if (rc)
        return rc;
    fn(arg);
    if (stop)
        tpi_world_resume(rt);
    return 0;
}

/* ------------------------------------------------------- messages */

static int post(tp_runtime *rt, tp_pid to, const tpi_envelope *e, tpi_msg *m)
{
    m->from = e->from;
    m->ref = e->ref;
    m->status = e->status;
    if (e->request) {
        m->reply_to = e->reply_to;
        m->flags |= TPI_MSG_REQUEST;
    }
    if (e->via_link)
        m->flags |= TPI_MSG_VIA_LINK;
    return tpi_deliver(rt, NULL, to, m);
}

int tpi_svc_post(tp_runtime *rt, tp_pid to, const tpi_envelope *e, bool check)
{
    int rc = check ? tpi_payload_valid(rt, e->data, e->len) : 0;
    if (rc)
        return rc;
    tpi_msg *m = tpi_msg_new(e->tag, e->data, e->len);
    return m ? post(rt, to, e, m) : TP_ENOMEM;
}

int tpi_svc_post_reason(tp_runtime *rt, tp_pid from, tp_pid to, int32_t tag,
                        tp_reason r, tp_ref ref, bool via_link)
{
    return tpi_send_reason(rt, from, to, tag, r, ref,
                           via_link ? TPI_MSG_VIA_LINK : 0);
}

int tpi_svc_post_int(tp_runtime *rt, tp_pid to, int32_t tag, int64_t v)
{
    char buf[9];
    tpi_envelope e = {.tag = tag, .data = buf, .len = tpi_pack_int(buf, v)};
    return tpi_svc_post(rt, to, &e, false);
}

/* pid's slot if pid is the actor living there now, else NULL. */
static tpi_actor *live(tp_runtime *rt, tp_pid pid)
{
    tpi_actor *a = pid ? tpi_table_slot(rt->table, pid) : NULL;
    /* relaxed: an estimate; the slot itself is never freed. */
    if (!a || tpi_slot_gen(a) != tpi_pid_gen(pid))
        return NULL;
    return a;
}

int tpi_svc_mailbox(tp_runtime *rt, tp_pid pid, uint64_t *count, uint64_t *cap)
{
    tpi_actor *a = live(rt, pid);
    if (!a)
        return TP_ENOPROC;
    uint32_t c = tpi_mailbox_cap(&a->mb);
    *count = tpi_mailbox_count(&a->mb);
    *cap = c == TPI_MAILBOX_UNBOUNDED ? UINT64_MAX : c;
    return 0;
}

bool tpi_svc_full(tp_runtime *rt, tp_pid pid)
{
    uint64_t n, cap;
    return tpi_svc_mailbox(rt, pid, &n, &cap) == 0 && n >= cap;
}

/* ------------------------------------------------------ resources */

int tpi_svc_attach(tp_ctx *ctx, tp_pid pid, tpi_resource *r,
                   struct event_base **base)
{
    tpi_actor *self = tpi_ctx_actor(ctx);
    if (!self)
        return TP_ESTATE;
    tp_runtime *rt = tpi_actor_rt(self);
    tpi_actor *a = live(rt, pid);
    /* Only an actor on this very loop that cannot be moved meanwhile: the
     * caller, or its child not yet run (only its home thread, which is
     * ours, could move it, between turns). */
    if (!a || tpi_home(a) != tpi_home(self) ||
        (a != self && !(a->flags & TPI_ACT_START)))
        return TP_ESTATE;
    if (tpi_resource_add(a, r) != 0)
        return TP_ENOMEM;
    if (!r->detach)
        a->flags |= TPI_ACT_PINNED;
    if (base)
        *base = tpi_home(a)->base;
    return 0;
}

struct event_base *tpi_svc_loop(tp_ctx *ctx, bool pin)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return NULL;
    if (pin)
        a->flags |= TPI_ACT_PINNED;
    return tpi_home(a)->base;
}

tpi_resource *tpi_svc_resource(tp_ctx *ctx, void (*close)(tpi_resource *))
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a || !a->ext)
        return NULL;
    for (tpi_resource *r = a->ext->resources; r; r = r->next)
        if (r->close == close)
            return r;
    return NULL;
}

unsigned tpi_svc_threads(tp_runtime *rt) { return rt->nsched; }

int tpi_svc_place(tp_ctx *ctx, tp_pid pid, unsigned sched)
{
    tpi_actor *self = tpi_ctx_actor(ctx);
    if (!self)
        return TP_ESTATE;
    tp_runtime *rt = tpi_actor_rt(self);
    if (sched >= rt->nsched)
        return TP_EINVAL;
    tpi_actor *a = live(rt, pid);
    tpi_sched *here = tpi_home(self);
    /* Not run yet and queued here by its spawn: only this thread could
     * run or move it, and it does neither during this turn. */
    if (!a || a == self || tpi_home(a) != here || !(a->flags & TPI_ACT_START))
        return TP_ESTATE;
    tpi_sched_place(here, a, &rt->scheds[sched]);
    return 0;
}

/* ------------------------------------------------------- lingering */

void tpi_linger_add(tp_runtime *rt, tpi_linger *l)
{
    pthread_mutex_lock(&rt->svc_lock);
    l->prev = NULL;
    l->next = rt->linger;
    if (rt->linger)
        rt->linger->prev = l;
    rt->linger = l;
    pthread_mutex_unlock(&rt->svc_lock);
}

void tpi_linger_remove(tp_runtime *rt, tpi_linger *l)
{
    pthread_mutex_lock(&rt->svc_lock);
    if (l->prev)
        l->prev->next = l->next;
    else if (rt->linger == l)
        rt->linger = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
    pthread_mutex_unlock(&rt->svc_lock);
}

/* ----------------------------------------------------- congestion */

int tpi_svc_congest(tp_runtime *rt, tp_pid pid, bool on)
{
    tpi_actor *a = live(rt, pid);
    if (!a)
        return TP_ENOPROC;
    /* relaxed: senders read it as they read mailbox counts. A pauser
     * registers, fences, then reads it (tpi_pause); the clear is followed
     * by tpi_drained's fence before the waiters are read, so one of the
     * two sees the other, as for a count lowered below capacity. */
    atomic_store_explicit(&a->congested, on, memory_order_relaxed);
    if (!on)
        tpi_drained(rt, a);
    return 0;
}

/* ------------------------------------------------------------ SIGPIPE */

void tpi_svc_no_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
        !(sa.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
}
