/*
 * Request/reply over oneshot channels. A oneshot is a (pid, ref) pair; the
 * receiving actor keeps the ref in its pending list until a value, an
 * error or a timeout arrives for it, so exactly one is delivered and any
 * later one is dropped and counted as late.
 *
 * A reply obligation always has exactly one owner: the request message in
 * flight (a dead letter answers TP_ENOPROC), the behavior handling it
 * (returning without replying answers TP_ENOREPLY), or the actor that took
 * it (ending while holding it answers TP_ENOPROC). So a caller never hangs.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

static tp_runtime *rt_of(tpi_actor *a) { return tpi_actor_rt(a); }

/* The reply m (TP_TAG_REPLY; consumed) to the oneshot (to, ref). */
static int send_reply_msg(tp_runtime *rt, tp_pid from, tp_pid to, tp_ref ref,
                          int status, tpi_msg *m)
{
    m->from = from;
    m->ref = ref;
    m->status = status;
    return tpi_deliver(rt, NULL, to, m);
}

static int send_reply(tp_runtime *rt, tp_pid from, tp_pid to, tp_ref ref,
                      int status, const void *data, size_t len)
{
    tpi_msg *m = tpi_msg_new(TP_TAG_REPLY, data, len);
    return m ? send_reply_msg(rt, from, to, ref, status, m) : TP_ENOMEM;
}

void tpi_reply_status(tp_runtime *rt, tp_pid to, tp_ref ref, int status)
{
    send_reply(rt, TP_PID_NONE, to, ref, status, NULL, 0);
}

/* Entries an actor keeps for its next calls: a client awaiting one reply
 * at a time allocates once, not per call. */
#define TPI_PENDING_SPARE 8

static tpi_pending *pending_get(tpi_actor_ext *x)
{
    tpi_pending *p = x->pending_spare;
    if (!p)
        return tpi_alloc(sizeof *p);
    x->pending_spare = p->next;
    x->pending_nspare--;
    return p;
}

static void pending_put(tpi_actor_ext *x, tpi_pending *p)
{
    if (x->pending_nspare >= TPI_PENDING_SPARE) {
        tpi_free(p);
        return;
    }
    p->next = x->pending_spare;
    x->pending_spare = p;
    x->pending_nspare++;
}

static int pending_add(tpi_actor *a, int timeout_ms, tp_ref *ref_out)
{
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    tpi_pending *p = x ? pending_get(x) : NULL;
    if (!p)
        return TP_ENOMEM;
    p->ref = tpi_ref_new(rt_of(a));
    p->timer = 0;
    if (timeout_ms >= 0) {
        int rc = tpi_timer_start(a, TPI_TIMER_CALL,
                                 (uint64_t)timeout_ms * 1000000u, 0, 0, NULL, 0,
                                 p->ref, &p->timer);
        if (rc) {
            pending_put(x, p);
            return rc;
        }
    }
    p->next = x->pending;
    x->pending = p;
    *ref_out = p->ref;
    return 0;
}

static inline bool pending_take(tpi_actor *a, tp_ref ref)
{
    if (!a->ext)
        return false;
    for (tpi_pending **pp = &a->ext->pending; *pp; pp = &(*pp)->next)
        if ((*pp)->ref == ref) {
            tpi_pending *p = *pp;
            *pp = p->next;
            if (p->timer)
                tpi_timer_cancel(a, p->timer);
            pending_put(a->ext, p);
            return true;
        }
    return false;
}

/* Two entry points: with a third call site of tpi_pending_take (the
 * refused call), LTO no longer inlined it on the reply path and a local
 * call cost 13 instructions more (callgrind, ask). */
bool tpi_pending_take(tpi_actor *a, tp_ref ref) { return pending_take(a, ref); }

void tpi_call_refused(tpi_actor *a, tp_ref ref) { (void)pending_take(a, ref); }

void tpi_pending_free_all(tpi_actor *a)
{
    if (!a->ext)
        return;
    /* The timers go with tpi_timers_free_all. */
    tpi_pending *lists[] = {a->ext->pending, a->ext->pending_spare};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        for (tpi_pending *p = lists[i], *n; p; p = n) {
            n = p->next;
            tpi_free(p);
        }
    a->ext->pending = a->ext->pending_spare = NULL;
    a->ext->pending_nspare = 0;
}

void tpi_reply_settle(tpi_actor *a, tpi_msg *m)
{
    if (tp_msg_wants_reply(m)) {
        /* Ending while handling it is "ended before replying". */
        int status = (a->flags & TPI_ACT_EXITING) ? TP_ENOPROC : TP_ENOREPLY;
        m->flags |= TPI_MSG_REPLIED;
        send_reply(rt_of(a), tpi_actor_pid(a), m->reply_to, m->ref, status,
                   NULL, 0);
    }
}

void tpi_replies_fail(tpi_actor *a)
{
    if (!a->ext)
        return;
    for (tp_reply_handle *r = a->ext->replies, *n; r; r = n) {
        n = r->next;
        send_reply(rt_of(a), tpi_actor_pid(a), r->to, r->ref, TP_ENOPROC, NULL,
                   0);
        tpi_free(r);
    }
    a->ext->replies = NULL;
}

/* ----------------------------------------------------------------- API */

/* The request m (consumed) from a to `to`, its reply awaited under a new
 * ref. */
static int call_msg(tpi_actor *a, tp_pid to, tpi_msg *m, int timeout_ms,
                    tp_ref *ref_out)
{
    tp_ref ref;
    int rc = pending_add(a, timeout_ms, &ref);
    if (rc) {
        tpi_msg_free(m);
        return rc;
    }
    m->reply_to = tpi_actor_pid(a);
    m->ref = ref;
    m->flags |= TPI_MSG_REQUEST;
    if ((rc = tpi_send_own(a, to, m)) != 0) {
        tpi_call_refused(a, ref); /* nothing left: no reply will come */
        return rc;
    }
    if (ref_out)
        *ref_out = ref;
    return 0;
}

static int call_bytes(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data,
                      size_t len, bool check, int timeout_ms, tp_ref *ref_out)
{
    tpi_actor *a;
    tpi_msg *m;
    int rc = tpi_msg_for_ctx(ctx, to, tag, data, len, check, &a, &m);
    return rc ? rc : call_msg(a, to, m, timeout_ms, ref_out);
}

int tp_call(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data, size_t len,
            int timeout_ms, tp_ref *ref_out)
{
    return call_bytes(ctx, to, tag, data, len, true, timeout_ms, ref_out);
}

int tp_call_int(tp_ctx *ctx, tp_pid to, int32_t tag, int64_t v, int timeout_ms,
                tp_ref *ref_out)
{
    tpi_sched *s;
    tpi_msg *m;
    int rc = tpi_int_for_ctx(ctx, to, tag, v, &s, &m);
    return rc ? rc : call_msg(s->cur, to, m, timeout_ms, ref_out);
}

/* The actor that may answer request now; else NULL and *rc the error. */
static tpi_actor *replier(tp_ctx *ctx, const tp_msg *request, int *rc)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    *rc = !a                             ? TP_ESTATE
          : !request                     ? TP_EINVAL
          : !tp_msg_wants_reply(request) ? TP_ENOENT
                                         : 0;
    return *rc ? NULL : a;
}

/* a answers request with m (consumed; NULL: out of memory). */
static int reply_with(tpi_actor *a, const tp_msg *request, tpi_msg *m)
{
    if (!m)
        return TP_ENOMEM;
    m->ref = request->ref;
    m->status = 0;
    int rc = tpi_reply_own(a, request->reply_to, m);
    if (rc == 0)
        ((tpi_msg *)request)->flags |= TPI_MSG_REPLIED;
    return rc;
}

int tp_reply(tp_ctx *ctx, const tp_msg *request, const void *data, size_t len)
{
    int rc;
    tpi_actor *a = replier(ctx, request, &rc);
    if (a && !(rc = tpi_payload_valid(rt_of(a), data, len)))
        rc = reply_with(a, request, tpi_msg_new(TP_TAG_REPLY, data, len));
    return rc;
}

int tp_reply_int(tp_ctx *ctx, const tp_msg *request, int64_t v)
{
    int rc;
    tpi_actor *a = replier(ctx, request, &rc);
    return a ? reply_with(a, request, tpi_msg_new_int(TP_TAG_REPLY, v)) : rc;
}

tp_reply_handle *tp_reply_take(tp_ctx *ctx, const tp_msg *request)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a || !tp_msg_wants_reply(request))
        return NULL;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    tp_reply_handle *r = x ? tpi_alloc(sizeof *r) : NULL;
    if (!r)
        return NULL;
    r->to = request->reply_to;
    r->ref = request->ref;
    r->next = x->replies;
    x->replies = r;
    ((tpi_msg *)request)->flags |= TPI_MSG_REPLIED;
    return r;
}

/* Take r off a's obligations; TP_EINVAL if it is not one of them. */
static int handle_unlink(tpi_actor *a, tp_reply_handle *r)
{
    tp_reply_handle **pp = a->ext ? &a->ext->replies : NULL;
    while (pp && *pp && *pp != r)
        pp = &(*pp)->next;
    if (!pp || !*pp)
        return TP_EINVAL;
    *pp = r->next;
    return 0;
}

int tpi_svc_reply_status(tp_ctx *ctx, tp_reply_handle *h, int status)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a || !h)
        return a ? TP_EINVAL : TP_ESTATE;
    int rc = handle_unlink(a, h);
    if (rc)
        return rc;
    send_reply(rt_of(a), TP_PID_NONE, h->to, h->ref, status, NULL, 0);
    tpi_free(h);
    return 0;
}

void tpi_svc_oneshot_cancel(tp_ctx *ctx, tp_ref ref)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (a)
        tpi_pending_take(a, ref);
}

int tp_forward(tp_ctx *ctx, tp_pid to, const tp_msg *msg)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (!msg || to == TP_PID_NONE || msg->tag < 0)
        return TP_EINVAL;
    tpi_msg_bytes((tpi_msg *)msg);
    tpi_msg *m = tpi_msg_new(msg->tag, msg->data, msg->len);
    if (!m)
        return TP_ENOMEM;
    m->from = msg->from;
    bool request = tp_msg_wants_reply(msg);
    if (request) {
        m->reply_to = msg->reply_to;
        m->ref = msg->ref;
        m->flags |= TPI_MSG_REQUEST;
    }
    TPI_STAT(rt_of(a), sent, 1);
    int rc = tpi_deliver(rt_of(a), a, to, m);
    if (!rc && request) /* `to` owns the obligation now; refused, it stays */
        ((tpi_msg *)msg)->flags |= TPI_MSG_REPLIED;
    return rc;
}

int tp_reply_send(tp_ctx *ctx, tp_reply_handle *r, const void *data, size_t len)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a || !r)
        return a ? TP_EINVAL : TP_ESTATE;
    if (handle_unlink(a, r) != 0)
        return TP_EINVAL; /* not an obligation of this actor */
    int rc = tpi_payload_valid(rt_of(a), data, len);
    rc = rc ? rc
            : send_reply(rt_of(a), tpi_actor_pid(a), r->to, r->ref, 0, data,
                         len);
    if (rc)
        send_reply(rt_of(a), tpi_actor_pid(a), r->to, r->ref, TP_ENOREPLY, NULL,
                   0);
    tpi_free(r);
    return rc;
}

int tp_oneshot_new(tp_ctx *ctx, int timeout_ms, tp_oneshot *tx)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (!tx)
        return TP_EINVAL;
    tp_ref ref;
    int rc = pending_add(a, timeout_ms, &ref);
    if (rc)
        return rc;
    tx->pid = tpi_actor_pid(a);
    tx->ref = ref;
    return 0;
}

int tp_oneshot_send(tp_ctx *ctx, tp_runtime *rt, tp_oneshot tx,
                    const void *data, size_t len)
{
    tpi_actor *a = ctx ? tpi_ctx_actor(ctx) : NULL;
    if (ctx && !a)
        return TP_ESTATE;
    if (a)
        rt = rt_of(a);
    if (!rt || tx.pid == TP_PID_NONE || tx.ref == 0)
        return TP_EINVAL;
    int rc = tpi_payload_valid(rt, data, len);
    if (rc)
        return rc;
    return send_reply(rt, a ? tpi_actor_pid(a) : TP_PID_NONE, tx.pid, tx.ref, 0,
                      data, len);
}
