/*
 * Hosting one actor by hand (runtime/host.h), for the isolated worker
 * process. The stand-in actor is driven through the same dispatch as a
 * scheduler's turn (actors/actor.c), so filters, deferral, replay and
 * receive timeouts behave as they do in the parent; the runtime's host
 * hook (tpi_deliver) sends every delivery here instead of into a mailbox.
 */
#include "runtime/host.h"
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <event2/event.h>

struct tpi_host {
    tp_runtime *rt;
    tpi_sched *s;
    tpi_actor *w; /* the stand-in */
    tp_pid self;
    struct event *lev;
    tpi_msglist local; /* messages to itself */
    const tpi_host_ops *ops;
    void *arg;
    bool stopped;
};

/* Run m, then whatever a tp_become put up for replay; report the end. */
static void run(tpi_host *h, tpi_msg *m)
{
    tpi_actor *a = h->w;
    tpi_sched_enter(h->s, a, tpi_actor_pid(a));
    tpi_actor_dispatch(h->s, a, m);
    while ((a->flags & (TPI_ACT_EXITING | TPI_ACT_REPLAY)) == TPI_ACT_REPLAY)
        tpi_actor_dispatch(h->s, a, tpi_actor_replay_pop(a));
    tpi_sched_leave(h->s);
    if (a->flags & TPI_ACT_EXITING)
        h->ops->ended(h->arg, tpi_actor_exit_reason(a));
}

/* Every delivery made in this process (tpi_deliver). Consumes m. */
int tpi_host_route(tpi_host *h, tp_pid to, tpi_msg *m)
{
    int rc = 0;
    if (to == h->self && !(m->flags & TPI_MSG_REQUEST) &&
        (m->tag >= 0 || m->tag == TP_TAG_TIMEOUT)) {
        m->to_gen = tpi_pid_gen(to);
        tpi_msglist_push(&h->local, m); /* timers and sends to itself */
        event_active(h->lev, EV_TIMEOUT, 0);
        return 0;
    }
    tpi_msg_bytes(m);
    tpi_envelope e = {.tag = m->tag,
                      .ref = m->ref,
                      .status = m->status,
                      .data = m->data,
                      .len = m->len};
    if (m->tag == TP_TAG_REPLY ||
        (m->tag >= 0 && !(m->flags & TPI_MSG_REQUEST)))
        rc = h->ops->out(h->arg, to, &e);
    else
        rc = TP_ESTATE; /* calls, links, monitors, exit signals */
    tpi_msg_free(m);
    return rc;
}

static void on_local(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tpi_host *h = arg;
    for (tpi_msg *m; !h->stopped && (m = tpi_msglist_pop(&h->local));)
        run(h, m);
    if (!h->stopped)
        h->ops->ran(h->arg);
}

int tpi_host_new(tp_behavior b, void *state, const tpi_host_ops *ops, void *arg,
                 tpi_host **out)
{
    tpi_host *h = tpi_calloc(sizeof *h);
    if (!h)
        return TP_ENOMEM;
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 1; /* one actor, run by hand on this thread */
    int rc = tp_runtime_new(&cfg, &h->rt);
    if (rc) {
        tpi_free(h);
        return rc;
    }
    h->rt->host = h;
    h->s = &h->rt->scheds[0];
    h->s->direct = NULL;
    h->ops = ops;
    h->arg = arg;
    h->w = tpi_calloc(sizeof *h->w);
    h->lev = event_new(h->s->base, -1, 0, on_local, h);
    if (!h->w || !h->lev) {
        tpi_host_free(h);
        return TP_ENOMEM;
    }
    h->w->behavior = b;
    h->w->state = state;
    atomic_init(&h->w->home, h->s);
    *out = h;
    return 0;
}

struct event_base *tpi_host_base(tpi_host *h) { return h->s->base; }

int tpi_host_start(tpi_host *h, tp_pid self, tp_pid from)
{
    h->self = self;
    atomic_store_explicit(&h->w->id, self, memory_order_relaxed);
    tpi_msg start = {.tag = TP_TAG_START,
                     .from = from,
                     .to_gen = tpi_pid_gen(self),
                     .flags = TPI_MSG_STATIC | TPI_MSG_SYS};
    run(h, &start);
    return 0;
}

int tpi_host_post(tpi_host *h, const tpi_envelope *e)
{
    if (h->self == TP_PID_NONE)
        return TP_ESTATE;
    tpi_msg *m = tpi_msg_new(e->tag, e->data, e->len);
    if (!m)
        return TP_ENOMEM;
    m->from = e->from;
    m->ref = e->ref;
    if (e->request) {
        m->flags |= TPI_MSG_REQUEST;
        m->reply_to = h->self; /* routed back out as a reply */
    }
    m->to_gen = tpi_pid_gen(h->self);
    run(h, m);
    return 0;
}

void tpi_host_run(tpi_host *h) { tpi_sched_run(h->s); }

void tpi_host_stop(tpi_host *h)
{
    if (!h->stopped) {
        h->stopped = true;
        tpi_sched_stop(h->s);
    }
}

static void free_list(tpi_msglist *l)
{
    for (tpi_msg *m; (m = tpi_msglist_pop(l));)
        tpi_msg_free(m);
}

void tpi_host_free(tpi_host *h)
{
    free_list(&h->local);
    tpi_actor *a = h->w;
    if (a && a->ext) { /* ours to free: it is in no table */
        free_list(&a->ext->stash);
        free_list(&a->ext->replay);
        tpi_pending_free_all(a);
        tpi_timers_free_all(a);
        tpi_actor_release_ext(a);
    }
    tpi_free(a);
    if (h->lev)
        event_free(h->lev);
    tp_runtime_free(h->rt);
    tpi_free(h);
}
