/*
 * Timers: one binary heap per scheduler behind a single libevent timer
 * event (not one event per actor or per timer). A timer belongs to the
 * actor that set it, sits in that actor's list, and dies with it.
 *
 * "Nothing after cancel": a fired one-shot timer stays in its owner's list
 * until its message is taken out of the mailbox; cancelling it meanwhile
 * removes it, and the message, finding no timer, is dropped.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <event2/event.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#define NOT_IN_HEAP UINT32_MAX

uint64_t tpi_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec tpi_timespec_in(clockid_t clock, uint64_t ns)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec += (long)(ns % 1000000000u);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

uint64_t tpi_clock_ns(tpi_timer_heap *h)
{
    return h->virtual_time ? h->vclock : tpi_now_ns();
}

/* ---------------------------------------------------------------- heap */

static bool earlier(const tpi_timer *a, const tpi_timer *b)
{
    /* Equal deadlines fire in the order they were set. */
    return a->deadline_ns < b->deadline_ns ||
           (a->deadline_ns == b->deadline_ns && a->id < b->id);
}

static void place(tpi_timer_heap *h, uint32_t i, tpi_timer *t)
{
    h->v[i] = t;
    t->heap_index = i;
}

static void sift_up(tpi_timer_heap *h, uint32_t i)
{
    tpi_timer *t = h->v[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!earlier(t, h->v[p]))
            break;
        place(h, i, h->v[p]);
        i = p;
    }
    place(h, i, t);
}

static void sift_down(tpi_timer_heap *h, uint32_t i)
{
    tpi_timer *t = h->v[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && earlier(h->v[c + 1], h->v[c]))
            c++;
        if (!earlier(h->v[c], t))
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, t);
}

static int heap_push(tpi_timer_heap *h, tpi_timer *t)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 64;
        tpi_timer **v = tpi_realloc(h->v, cap * sizeof *v);
        if (!v)
            return TP_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    place(h, h->n++, t);
    sift_up(h, h->n - 1);
    return 0;
}

static void heap_remove(tpi_timer_heap *h, tpi_timer *t)
{
    uint32_t i = t->heap_index;
    t->heap_index = NOT_IN_HEAP;
    if (--h->n == i)
        return;
    place(h, i, h->v[h->n]);
    if (i > 0 && earlier(h->v[i], h->v[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

/* Point the libevent timer at the earliest deadline. */
static void rearm(tpi_timer_heap *h)
{
    if (h->virtual_time)
        return; /* the scheduler advances the clock itself */
    if (h->n == 0) {
        if (h->armed_ns)
            evtimer_del(h->ev);
        h->armed_ns = 0;
        return;
    }
    uint64_t due = h->v[0]->deadline_ns;
    if (due == h->armed_ns)
        return;
    uint64_t now = tpi_clock_ns(h);
    uint64_t d = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(d / 1000000000u),
                         (suseconds_t)((d % 1000000000u + 999) / 1000)};
    /* Not armed (out of memory in libevent's heap): the next change tries
     * again, where a recorded deadline would have skipped it. */
    h->armed_ns = evtimer_add(h->ev, &tv) == 0 ? due : 0;
}

void tpi_timer_heap_free(tpi_timer_heap *h)
{
    /* Timers are owned by actors; by now every actor has been torn down
     * and freed its own. */
    tpi_free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

/* ---------------------------------------------------------- ownership */

static void timer_free(tp_runtime *rt, tpi_timer *t)
{
    tpi_free(t->data);
    tpi_free(t);
    TPI_STAT(rt, timers, -1);
}

static tpi_timer *unlink_owned(tpi_actor *a, tp_timer id)
{
    if (!a->ext)
        return NULL;
    for (tpi_timer **pp = &a->ext->timers; *pp; pp = &(*pp)->next_owned)
        if ((*pp)->id == id) {
            tpi_timer *t = *pp;
            *pp = t->next_owned;
            return t;
        }
    return NULL;
}

static tpi_timer *find_owned(tpi_actor *a, tp_timer id)
{
    for (tpi_timer *t = a->ext ? a->ext->timers : NULL; t; t = t->next_owned)
        if (t->id == id)
            return t;
    return NULL;
}

int tpi_timer_start(tpi_actor *a, tpi_timer_kind kind, uint64_t delay_ns,
                    uint64_t interval_ns, int32_t tag, const void *data,
                    size_t len, tp_ref ref, tp_timer *id_out)
{
    tp_runtime *rt = tpi_actor_rt(a);
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    tpi_timer *t = x ? tpi_calloc(sizeof *t) : NULL;
    if (!t)
        return TP_ENOMEM;
    if (len) {
        t->data = tpi_alloc(len);
        if (!t->data) {
            tpi_free(t);
            return TP_ENOMEM;
        }
        memcpy(t->data, data, len);
    }
    t->owner = a;
    t->kind = kind;
    t->deadline_ns = tpi_clock_ns(&tpi_home(a)->timers) + delay_ns;
    t->interval_ns = interval_ns;
    t->tag = tag;
    t->len = len;
    t->ref = ref;
    t->id = tpi_ref_new(rt);
    tpi_timer_heap *h = &tpi_home(a)->timers;
    TPI_STAT(rt, timers, 1);
    if (heap_push(h, t) != 0) {
        timer_free(rt, t);
        return TP_ENOMEM;
    }
    t->next_owned = x->timers;
    x->timers = t;
    rearm(h);
    if (id_out)
        *id_out = t->id;
    return 0;
}

static void drop(tpi_actor *a, tpi_timer *t)
{
    if (t->heap_index != NOT_IN_HEAP) {
        heap_remove(&tpi_home(a)->timers, t);
        rearm(&tpi_home(a)->timers);
    }
    timer_free(tpi_actor_rt(a), t);
}

bool tpi_timer_cancel(tpi_actor *a, tp_timer id)
{
    tpi_timer *t = unlink_owned(a, id);
    if (!t)
        return false;
    drop(a, t);
    return true;
}

bool tpi_timer_claim(tpi_actor *a, tp_timer id)
{
    tpi_timer *t = find_owned(a, id);
    if (!t)
        return false; /* cancelled after it fired */
    if (t->kind == TPI_TIMER_ONCE)
        drop(a, unlink_owned(a, id));
    return true;
}

void tpi_timers_free_all(tpi_actor *a)
{
    if (!a->ext)
        return;
    while (a->ext->timers) {
        tpi_timer *t = a->ext->timers;
        a->ext->timers = t->next_owned;
        drop(a, t);
    }
}

/* --------------------------------------------------------------- firing */

/* Build the message a due timer delivers; NULL on out of memory. */
static tpi_msg *fire_msg(tpi_timer *t)
{
    tpi_msg *m;
    switch (t->kind) {
    case TPI_TIMER_ONCE:
    case TPI_TIMER_INTERVAL:
        m = tpi_msg_new(t->tag, t->data, t->len);
        if (m) {
            m->flags |= TPI_MSG_TIMER;
            m->ref = t->id;
        }
        return m;
    case TPI_TIMER_CALL:
        m = tpi_msg_new(TP_TAG_REPLY, NULL, 0);
        if (m) {
            m->flags |= TPI_MSG_SYNTH;
            m->status = TP_ETIMEDOUT;
            m->ref = t->ref;
        }
        return m;
    case TPI_TIMER_RECV:
        m = tpi_msg_new(TP_TAG_TIMEOUT, NULL, 0);
        if (m)
            m->ref = t->id;
        return m;
    }
    return NULL;
}

/* Fire every timer due at now. */
static void fire_due(tpi_sched *s, uint64_t now)
{
    tpi_timer_heap *h = &s->timers;
    h->armed_ns = 0;
    while (h->n && h->v[0]->deadline_ns <= now) {
        tpi_timer *t = h->v[0];
        heap_remove(h, t);
        tpi_actor *a = t->owner;
        tpi_msg *m = fire_msg(t);
        if (!m) {
            /* Out of memory: try again shortly rather than lose it. */
            t->deadline_ns = now + 1000000u;
            heap_push(h, t);
            break;
        }
        m->from = tpi_actor_pid(a);
        if (t->kind == TPI_TIMER_INTERVAL) {
            t->deadline_ns += t->interval_ns;
            if (t->deadline_ns <= now)
                t->deadline_ns = now + t->interval_ns;
            if (heap_push(h, t) != 0)
                tpi_timer_cancel(a, t->id);
        } else if (t->kind != TPI_TIMER_ONCE) {
            /* Call and receive timeouts are settled by their message. */
            timer_free(s->rt, unlink_owned(a, t->id));
        }
        tpi_deliver(s->rt, NULL, m->from, m);
    }
    rearm(h);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tpi_sched *s = arg;
    fire_due(s, tpi_clock_ns(&s->timers));
}

bool tpi_timers_advance(tpi_sched *s)
{
    tpi_timer_heap *h = &s->timers;
    if (h->n == 0)
        return false;
    if (h->v[0]->deadline_ns > h->vclock)
        h->vclock = h->v[0]->deadline_ns;
    fire_due(s, h->vclock);
    return true;
}

uint64_t tp_now_ms(tp_ctx *ctx)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    return (a ? tpi_clock_ns(&tpi_home(a)->timers) : tpi_now_ns()) / 1000000u;
}

int tpi_timers_init(tpi_sched *s)
{
    s->timers.ev = evtimer_new(s->base, on_timer, s);
    return s->timers.ev ? 0 : TP_ENOMEM;
}

/* ----------------------------------------------------------------- API */

static int user_timer(tp_ctx *ctx, tpi_timer_kind kind, unsigned ms,
                      int32_t tag, const void *data, size_t len, tp_timer *id)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    /* Over INT_MAX is a negative int converted (a "time left" gone below
     * 0): a timer for 49 days instead of one now. */
    if (tag < 0 || ms > INT_MAX || (kind == TPI_TIMER_INTERVAL && ms == 0))
        return TP_EINVAL;
    int rc = tpi_payload_valid(tpi_actor_rt(a), data, len);
    if (rc)
        return rc;
    uint64_t ns = (uint64_t)ms * 1000000u;
    return tpi_timer_start(a, kind, ns, kind == TPI_TIMER_INTERVAL ? ns : 0,
                           tag, data, len, 0, id);
}

int tp_send_after(tp_ctx *ctx, unsigned ms, int32_t tag, const void *data,
                  size_t len, tp_timer *id_out)
{
    return user_timer(ctx, TPI_TIMER_ONCE, ms, tag, data, len, id_out);
}

int tp_send_interval(tp_ctx *ctx, unsigned ms, int32_t tag, const void *data,
                     size_t len, tp_timer *id_out)
{
    return user_timer(ctx, TPI_TIMER_INTERVAL, ms, tag, data, len, id_out);
}

int tp_timer_cancel(tp_ctx *ctx, tp_timer id)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    tpi_timer *t = find_owned(a, id);
    /* Only user timers; call and receive timeouts have their own API. */
    if (!t || (t->kind != TPI_TIMER_ONCE && t->kind != TPI_TIMER_INTERVAL))
        return TP_ENOENT;
    tpi_timer_cancel(a, id);
    tpi_deferred_forget(a, id, true); /* an interval's ticks deferred */
    return 0;
}
