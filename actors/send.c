/*
 * Sending: delivery into mailboxes, dead letters, and backpressure.
 *
 * Backpressure (after Pony): a user send that leaves the target's mailbox
 * over capacity pauses the sender once its behavior returns, unless the
 * sender's own mailbox is over capacity. A paused actor keeps its mailbox's
 * scheduling flag, so pushes never queue it; it resumes when the target
 * drains below capacity or ends, or when its own mailbox overflows or an
 * exit signal arrives (or, counted in its slot, is already in its mailbox
 * when it would park). A paused actor's mailbox is therefore never over
 * capacity, so a cycle of paused actors (each waiting on an overfull one)
 * cannot form: no deadlock, and no message is ever dropped. A congested
 * actor (tpi_svc_congest: its output is backed up) counts as full for its
 * senders, whatever its mailbox holds, until its owner clears it.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runq.h"
#include "runtime/runtime.h"

#include <string.h>

static bool over(tpi_mailbox *mb, uint64_t count)
{
    uint32_t cap = tpi_mailbox_cap(mb);
    return cap != TPI_MAILBOX_UNBOUNDED && count > cap;
}

/* relaxed: read like the counts; see tpi_svc_congest. */
static bool congested(tpi_actor *a)
{
    return atomic_load_explicit(&a->congested, memory_order_relaxed);
}

/* A user send to a must pause its sender. */
static bool full(tpi_actor *a)
{
    return over(&a->mb, tpi_mailbox_count(&a->mb)) || congested(a);
}

/* The same, before parking a sender until a drains: a count a really had
 * (tpi_mailbox_count_exact), since one too high could park it for good. */
static bool full_exact(tpi_actor *a)
{
    return over(&a->mb, tpi_mailbox_count_exact(&a->mb)) || congested(a);
}

/* A user send from `from` has left a over capacity (or a is congested):
 * pause the sender once its behavior returns, unless it is over its own;
 * resume a if it was paused (or it could wait on us for good). */
static void on_full(tp_runtime *rt, tpi_actor *from, tpi_actor *a, tp_pid to)
{
    if (from && from != a && !over(&from->mb, tpi_mailbox_count(&from->mb)))
        tpi_home(from)->pause_on = to;
    /* seq_cst: after our push (a seq_cst increment when remote), against
     * the fence in tpi_pause; tpi_unpause re-checks under the wait lock. */
    if (atomic_load_explicit(&a->paused, memory_order_seq_cst))
        tpi_unpause(rt, a);
}

/* On a's home thread s, with no remote message waiting in a's mailbox:
 * m into a's local FIFO, and a queued if it was idle (the push found it
 * so: now we hold its flag). running: a batch runs on s (its run event is
 * active already). Returns the local count (tpi_mailbox_push_local). */
static inline __attribute__((always_inline)) uint32_t
push_here_clear(tpi_sched *s, tpi_actor *a, tpi_msg *m, bool running)
{
    uint32_t local = tpi_mailbox_push_local(&a->mb, &m->node);
    if (!a->sched) {
        a->sched = true;
        tpi_sched_queue_next_running(s, a);
        if (!running)
            tpi_sched_kick(s);
    }
    return local;
}

/* The same, whatever waits in a's mailbox (rare: a sender or a that
 * changed threads may have left remote messages there). */
static inline uint32_t push_here(tpi_sched *s, tpi_actor *a, tpi_msg *m)
{
    if (tpi_mailbox_remote_waiting(&a->mb))
        tpi_mailbox_take_remote_cold(&a->mb);
    return push_here_clear(s, a, m, false);
}

/* An exit signal m for a is counted in a's slot before it is pushed
 * (and marked, so only a counted one is uncounted when taken out): a
 * pausing actor that sees the count does not park. Out of memory it goes
 * uncounted; then only a sender that finds a parked resumes it. */
static void exit_counted(tp_runtime *rt, tpi_actor *a, tpi_msg *m)
{
    tpi_slot_cold *c = tpi_table_cold(rt->table, a, true);
    if (c) {
        /* seq_cst: against the fence in tpi_pause (see tpi_deliver) */
        atomic_fetch_add_explicit(&c->exits, 1, memory_order_seq_cst);
        m->flags |= TPI_MSG_COUNTED;
    }
}

void tpi_exit_taken(tp_runtime *rt, tpi_actor *a, tpi_msg *m)
{
    if (m->flags & TPI_MSG_COUNTED) {
        m->flags &= ~(uint32_t)TPI_MSG_COUNTED;
        /* relaxed: only a lower count; it stays >= the signals queued */
        atomic_fetch_sub_explicit(&tpi_table_cold(rt->table, a, false)->exits,
                                  1, memory_order_relaxed);
    }
}

/* An exit signal waits in a's mailbox (after tpi_pause's fence). */
static bool exit_waiting(tp_runtime *rt, tpi_actor *a)
{
    tpi_slot_cold *c = tpi_table_cold(rt->table, a, false);
    return c && atomic_load_explicit(&c->exits, memory_order_relaxed) != 0;
}

int tpi_deliver(tp_runtime *rt, tpi_actor *from, tp_pid to, tpi_msg *m)
{
    if (rt->host) /* an isolated worker process sends over its channel */
        return tpi_host_route(rt->host, to, m);
    if (to & TPI_PID_REMOTE) /* an actor of another node */
        return tpi_remote_deliver(rt, to, m);
    tpi_actor *a = tpi_table_slot(rt->table, to);
    if (!a) {
        if (to == TP_PID_NONE || (uint32_t)to == 0) {
            tpi_msg_free(m);
            return TP_EINVAL;
        }
        tpi_dead_letter(rt, to, m);
        return 0;
    }
    m->to_gen = tpi_pid_gen(to);
    /* acquire: pairs with the release bump at death; a stale pid is
     * turned away here, and a death racing this push is caught when the
     * message is taken out (to_gen no longer matches). */
    if (tpi_slot_gen_acquire(a) != m->to_gen) {
        tpi_obs_dead_letter(rt, to, m); /* counted against the ended actor */
        tpi_dead_letter(rt, to, m);
        return 0;
    }
    int32_t tag = m->tag;
    if (tag == TPI_SIG_EXIT)
        exit_counted(rt, a, m);
    /* The local FIFO belongs to a's home thread; every other thread uses
     * the remote stack. */
    tpi_sched *s = tpi_sched_current();
    if (s == tpi_home(a))
        push_here(s, a, m);
    else if (tpi_mailbox_push_remote(&a->mb, &m->node))
        tpi_sched_notify(a);
    if (from)
        from->partner = tpi_slot_index(a) + 1;
    if (tag >= 0 && full(a)) {
        on_full(rt, from, a, to);
    } else if (tag == TPI_SIG_EXIT &&
               atomic_load_explicit(&a->paused, memory_order_seq_cst)) {
        /* seq_cst: after the count, against tpi_pause's fence: it saw
         * the count and did not park, or we see it parked */
        tpi_unpause(rt, a);
    }
    return 0;
}

void tpi_dead_letter(tp_runtime *rt, tp_pid to, tpi_msg *m)
{
    tpi_dead_letter_why(rt, to, m, (tp_reason){TP_EXIT_NOPROC, 0, NULL});
}

void tpi_dead_letter_why(tp_runtime *rt, tp_pid to, tpi_msg *m, tp_reason why)
{
    tpi_msg *r = NULL;
    switch (m->tag) {
    case TPI_SIG_LINK: /* linking a dead actor: an exit signal back */
        r = tpi_msg_reason_new(TPI_SIG_EXIT, why);
        if (r)
            r->flags |= TPI_MSG_VIA_LINK;
        break;
    case TPI_SIG_MONITOR:
        r = tpi_msg_reason_new(TP_TAG_DOWN, why);
        if (r)
            r->ref = m->ref;
        break;
    default:
        if (m->tag >= 0) {
            TPI_STAT(rt, dead_letters, 1);
            /* Its node is gone, or it is (a local actor is, whatever
             * reason it ended with: noconnection too). */
            bool unreachable = why.kind == TP_EXIT_NOCONNECTION &&
                               (to & TPI_PID_REMOTE);
            if (tp_msg_wants_reply(m))
                tpi_reply_status(rt, m->reply_to, m->ref,
                                 unreachable ? TP_ENOCONN : TP_ENOPROC);
        }
        break;
    }
    if (r) {
        r->from = to;
        tpi_deliver(rt, NULL, m->from, r);
    }
    tpi_msg_free(m);
}

/* ---------------------------------------------------------- backpressure */

/* Every store to a waiter list link, under the wait lock: relaxed atomic,
 * because tpi_drained peeks at a list head without the lock. */
static void link_store(tpi_actor **pp, tpi_actor *v)
{
    __atomic_store_n(pp, v, __ATOMIC_RELAXED);
}

void tpi_pause(tp_runtime *rt, tpi_actor *a, tp_pid target)
{
    tpi_actor *t = tpi_table_slot(rt->table, target);
    tpi_slot_cold *tc = t ? tpi_table_cold(rt->table, t, true) : NULL;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    bool parked = false;
    if (tc && x) { /* out of memory: not parked, it sends over the bound */
        pthread_mutex_lock(&rt->wait_lock);
        x->waiting_on = target;
        x->wait_next = tc->waiters;
        link_store(&tc->waiters, a);
        atomic_store_explicit(&a->paused, 1, memory_order_relaxed);
        /* seq_cst: our registration must be visible before we read the
         * target's count, as its drain reads waiters after lowering the
         * count (tpi_drained); one of the two sees the other. Likewise our
         * own count: a sender that overfills us after its push reads
         * paused (tpi_deliver), so it unpauses us or we see it here. A
         * paused actor's mailbox is never over capacity, or two actors
         * flooding each other from two threads could both park. */
        atomic_thread_fence(memory_order_seq_cst);
        parked = tpi_slot_gen_acquire(t) == tpi_pid_gen(target) &&
                 full_exact(t) && !over(&a->mb, tpi_mailbox_count(&a->mb)) &&
                 !exit_waiting(rt, a);
        if (!parked) {
            for (tpi_actor **pp = &tc->waiters; *pp;
                 pp = &(*pp)->ext->wait_next)
                if (*pp == a) {
                    link_store(pp, x->wait_next);
                    break;
                }
            atomic_store_explicit(&a->paused, 0, memory_order_relaxed);
        }
        pthread_mutex_unlock(&rt->wait_lock);
    }
    if (!parked) /* it still holds its flag: back to the run queue */
        tpi_sched_ready(a);
}

void tpi_unpause(tp_runtime *rt, tpi_actor *a)
{
    pthread_mutex_lock(&rt->wait_lock);
    if (!atomic_load_explicit(&a->paused, memory_order_relaxed)) {
        pthread_mutex_unlock(&rt->wait_lock);
        return;
    }
    atomic_store_explicit(&a->paused, 0, memory_order_relaxed);
    /* Made when a paused on it (tpi_pause). */
    tpi_slot_cold *tc =
        tpi_table_cold(rt->table, tpi_table_slot(rt->table, a->ext->waiting_on),
                       false);
    for (tpi_actor **pp = &tc->waiters; *pp; pp = &(*pp)->ext->wait_next)
        if (*pp == a) {
            link_store(pp, a->ext->wait_next);
            break;
        }
    pthread_mutex_unlock(&rt->wait_lock);
    tpi_sched_ready(a);
}

void tpi_drained(tp_runtime *rt, tpi_actor *a)
{
    if (a->ext)
        for (tpi_resource *r = a->ext->resources; r; r = r->next)
            if (r->drained)
                r->drained(r);
    /* seq_cst: pairs with the fences in tpi_pause and tp_runtime_send: the
     * count we lowered is visible to them, or their registration to us. */
    atomic_thread_fence(memory_order_seq_cst);
    /* relaxed: the fence above orders it; the list itself is read under
     * the lock. A plain field with GCC atomics, as pausers link it through
     * pointers to pointers (link_store). A congested actor is still full
     * for its senders, however short its mailbox: they wait for the clear,
     * which calls us again (congested is only written on a's thread, as
     * is this call). */
    tpi_slot_cold *c = tpi_table_cold(rt->table, a, false);
    if (!congested(a) && c && __atomic_load_n(&c->waiters, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&rt->wait_lock);
        /* Senders on other threads may have filled a again since our
         * caller saw it below capacity, and paused on it: resumed now,
         * each would send once more over the soft bound. They wait for
         * the next drain instead, which comes, as later turns take the
         * mailbox below capacity again. An ended actor (no behavior)
         * resumes them all. */
        tpi_actor *w = a->behavior && over(&a->mb, tpi_mailbox_count(&a->mb))
                           ? NULL
                           : c->waiters;
        if (w)
            link_store(&c->waiters, NULL);
        for (tpi_actor *p = w; p; p = p->ext->wait_next)
            atomic_store_explicit(&p->paused, 0, memory_order_relaxed);
        pthread_mutex_unlock(&rt->wait_lock);
        while (w) {
            tpi_actor *next = w->ext->wait_next;
            tpi_sched_ready(w);
            w = next;
        }
    }
    tpi_runtime_wake_foreign(rt);
}

/* ----------------------------------------------------------------- API */

int tpi_payload_valid(tp_runtime *rt, const void *data, size_t len)
{
    if (!data && len)
        return TP_EINVAL;
    if (len > rt->cfg.max_payload)
        return TP_E2BIG;
    if (len && tpi_payload_check(data, len) != 0)
        return TP_EINVAL;
    return 0;
}

int tpi_msg_for_send(tp_runtime *rt, int32_t tag, const void *data, size_t len,
                     bool check, tpi_msg **out)
{
    if (tag < 0)
        return TP_EINVAL;
    int rc = check ? tpi_payload_valid(rt, data, len) : 0;
    if (rc)
        return rc;
    tpi_msg *m = tpi_msg_new(tag, data, len);
    if (!m)
        return TP_ENOMEM;
    *out = m;
    return 0;
}

/* The end of a user send by s->cur that left b over capacity (or b is
 * congested). Out of line: the senders' paths end in a call to it. */
static __attribute__((noinline)) int sent_full(tpi_sched *s, tpi_actor *b,
                                               tp_pid to)
{
    if (s->full_seen != to) {
        on_full(s->rt, s->cur, b, to);
        /* Now we pause on b when this call returns, and b is not paused:
         * on_full resumed it, and b, homed here, cannot run (nor pause,
         * nor move) before our turn ends. The next sends of this call that
         * find b full have nothing to add. */
        if (s->pause_on == to)
            s->full_seen = to;
    }
    return 0;
}

/* The end of a send by s->cur to b, live and homed on s (to is its pid):
 * into its local FIFO (clear: no remote message waits there), queued if
 * idle, and for a user message the full check. Consumes m. */
static inline __attribute__((always_inline)) int push_to(tpi_sched *s,
                                                         tpi_actor *b,
                                                         tp_pid to, tpi_msg *m,
                                                         bool user, bool clear)
{
    m->to_gen = tpi_pid_gen(to);
    uint32_t local = clear ? push_here_clear(s, b, m, true)
                           : push_here(s, b, m);
    s->cur->partner = (uint32_t)to; /* b's index + 1, from the pid */
    if (user &&
        (over(&b->mb, tpi_mailbox_count_home(&b->mb, local)) || congested(b)))
        return sent_full(s, b, to);
    return 0;
}

/* A send by the actor in its turn on this thread's scheduler s (s->cur).
 * The common case, inline: a message (the caller checked that `to` is
 * not TP_PID_NONE, which empty hints hold) to a live actor of this
 * runtime homed on s, as tpi_deliver would deliver it; the rest goes
 * through tpi_deliver. A user message (tag >= 0; user, a constant at
 * each call) is counted as sent and may fill its receiver; a reply is
 * neither, as in tpi_deliver. Consumes m. */
static inline __attribute__((always_inline)) int
send_from(tpi_sched *s, tp_pid to, tpi_msg *m, bool user)
{
    tpi_table *t = s->direct;
    m->from = atomic_load_explicit(&s->cur_pid, memory_order_relaxed);
    if (user)
        tpi_stat_own(s, offsetof(tpi_stats, sent), 1);
    tpi_slot_hint *h = &s->hints[(uint32_t)to & (TPI_SLOT_HINTS - 1)];
    tpi_actor *b = h->slot;
    if (h->pid != to) { /* only local pids of this runtime are kept */
        if (!t || (to & TPI_PID_REMOTE) || !(b = tpi_table_slot(t, to)))
            return tpi_deliver(s->rt, s->cur, to, m);
        *h = (tpi_slot_hint){to, b};
    }
    /* The generation first (acquire, as in tpi_deliver), then the home: a
     * spawn sets the home before it makes the generation live. */
    if (!tpi_slot_is(b, to) || tpi_home(b) != s)
        return tpi_deliver(s->rt, s->cur, to, m);
    return push_to(s, b, to, m, user, false);
}

int tpi_msg_for_ctx(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data,
                    size_t len, bool check, tpi_actor **a_out, tpi_msg **out)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (to == TP_PID_NONE)
        return TP_EINVAL;
    *a_out = a;
    return tpi_msg_for_send(tpi_actor_rt(a), tag, data, len, check, out);
}

int tpi_send_own(tpi_actor *a, tp_pid to, tpi_msg *m)
{
    return send_from(tpi_home(a), to, m, true);
}

int tpi_reply_own(tpi_actor *a, tp_pid to, tpi_msg *m)
{
    return to == TP_PID_NONE ? tpi_deliver(tpi_actor_rt(a), a, to, m)
                             : send_from(tpi_home(a), to, m, false);
}

static int send_bytes(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data,
                      size_t len, bool check)
{
    tpi_actor *a;
    tpi_msg *m;
    int rc = tpi_msg_for_ctx(ctx, to, tag, data, len, check, &a, &m);
    return rc ? rc : tpi_send_own(a, to, m);
}

int tp_send(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data, size_t len)
{
    return send_bytes(ctx, to, tag, data, len, true);
}

int tpi_int_for_ctx(tp_ctx *ctx, tp_pid to, int32_t tag, int64_t v,
                    tpi_sched **s_out, tpi_msg **out)
{
    tpi_sched *s = tpi_ctx_sched(ctx);
    if (!s)
        return TP_ESTATE;
    if (to == TP_PID_NONE || tag < 0)
        return TP_EINVAL;
    if (!(*out = tpi_msg_new_int(tag, v)))
        return TP_ENOMEM;
    *s_out = s;
    return 0;
}

/* send_from out of line: what send_fast leaves to the general path. */
static __attribute__((noinline)) int send_from_slow(tpi_sched *s, tp_pid to,
                                                    tpi_msg *m)
{
    if (to == TP_PID_NONE) { /* send_fast leaves it to us (empty hints) */
        tpi_msg_free(m);
        return TP_EINVAL;
    }
    return send_from(s, to, m, true);
}

/* send_from for a user message, when the common case is its whole path:
 * to is in the hints, live and homed on s, with no remote message waiting,
 * and a batch is running (its run event active). That path calls nothing,
 * and everything else leaves through a tail call, so the caller's fast
 * path needs no stack frame (about 15 instructions of saved registers per
 * send). Consumes m. */
static inline __attribute__((always_inline)) int
send_fast(tpi_sched *s, tp_pid to, tpi_msg *m)
{
    tpi_slot_hint *h = &s->hints[(uint32_t)to & (TPI_SLOT_HINTS - 1)];
    tpi_actor *b = h->slot;
    /* acquire on the generation, then the home: as in send_from. */
    if (h->pid != to || !tpi_slot_is(b, to) || tpi_home(b) != s ||
        tpi_mailbox_remote_waiting(&b->mb) || !s->run_active)
        return send_from_slow(s, to, m);
    m->from = atomic_load_explicit(&s->cur_pid, memory_order_relaxed);
    tpi_stat_own(s, offsetof(tpi_stats, sent), 1);
    return push_to(s, b, to, m, true, true);
}

/* tp_send_int's answer when ctx is in no turn here, or the tag is < 0. */
static __attribute__((noinline)) int send_int_refused(tp_ctx *ctx)
{
    return tpi_ctx_sched(ctx) ? TP_EINVAL : TP_ESTATE;
}

/* tp_send_int when this thread's node cache is empty (always in the
 * sanitizer builds, which cache nothing): the same path, with a node from
 * the allocator. */
static __attribute__((noinline)) int send_int_alloc(tpi_sched *s, tp_pid to,
                                                    int32_t tag, int64_t v)
{
    tpi_msg *m = tpi_msg_new_int(tag, v);
    return m ? send_fast(s, to, m) : TP_ENOMEM;
}

int tp_send_int(tp_ctx *ctx, tp_pid to, int32_t tag, int64_t v)
{
    tpi_sched *s = tpi_sched_current();
    tpi_msg *m;
    /* A NULL ctx matches only an s->cur of NULL (tpi_ctx_sched);
     * TP_PID_NONE fails send_fast's hint (tpi_no_slot). */
    if (!s || !ctx || (tpi_actor *)ctx != s->cur || tag < 0)
        return send_int_refused(ctx);
    if (!(m = tpi_node_pop()))
        return send_int_alloc(s, to, tag, v);
    tpi_msg_fill_int(m, tag, v);
    return send_fast(s, to, m);
}

int tp_send_move(tp_ctx *ctx, tp_pid to, int32_t tag, void *buf, size_t len)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    int rc = 0;
    if (!a)
        rc = TP_ESTATE;
    else if (to == TP_PID_NONE || tag < 0)
        rc = TP_EINVAL;
    else
        rc = tpi_payload_valid(tpi_actor_rt(a), buf, len);
    tpi_msg *m = rc ? NULL : tpi_msg_new(tag, NULL, 0);
    if (!rc && !m)
        rc = TP_ENOMEM;
    if (rc) {
        tpi_free(buf);
        return rc;
    }
    if (len) {
        m->data = buf;
        m->len = len;
        m->flags |= TPI_MSG_OWNED;
    } else {
        tpi_free(buf);
    }
    return tpi_send_own(a, to, m);
}

int tp_sendf(tp_ctx *ctx, tp_pid to, int32_t tag, const char *fmt, ...)
{
    void *buf;
    size_t len;
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_vpackf(&buf, &len, fmt, ap);
    va_end(ap);
    return rc ? rc : tp_send_move(ctx, to, tag, buf, len);
}

/* A foreign sender's place in a's mailbox (a was live when looked up):
 * 1 when the mailbox now counts our message (tpi_mailbox_reserve), and
 * we must push it; 0 when a ended or the run is over while we waited, so
 * the message goes the ordinary way (a dead letter); TP_EFULL when the
 * mailbox is full or a congested and we may not wait. */
static int foreign_reserve(tp_runtime *rt, tpi_actor *a, tp_pid to, bool block)
{
    if (!congested(a) && tpi_mailbox_reserve(&a->mb))
        return 1;
    /* Blocking needs a running scheduler to drain the mailbox. */
    if (!block || atomic_load(&rt->state) != TPI_RT_RUNNING)
        return TP_EFULL;
    int rc = 0;
    pthread_mutex_lock(&rt->fw_lock);
    /* seq_cst increment: our seq_cst reads of the count below
     * (tpi_mailbox_read) come after it in the single total order; pairs
     * with the fence in tpi_drained, which lowers the count (or clears
     * congested) before it reads fw_waiters. One of the two sees the
     * other, and a broadcast needs the lock we hold until we wait. (No
     * fence here: GCC's ThreadSanitizer refuses them.) congested is read
     * seq_cst too, for the same reason: its clear is a relaxed store
     * before that fence, and a relaxed read here could miss it. */
    atomic_fetch_add(&rt->fw_waiters, 1);
    while (tpi_pid_gen(atomic_load(&a->id)) == tpi_pid_gen(to) &&
           atomic_load(&rt->state) == TPI_RT_RUNNING) {
        if (!atomic_load_explicit(&a->congested, memory_order_seq_cst) &&
            tpi_mailbox_reserve(&a->mb)) {
            rc = 1;
            break;
        }
        pthread_cond_wait(&rt->fw_cond, &rt->fw_lock);
    }
    atomic_fetch_sub(&rt->fw_waiters, 1);
    pthread_mutex_unlock(&rt->fw_lock);
    return rc;
}

/* Queue a foreign message for which foreign_reserve made room: the end of
 * tpi_deliver for a sender that is no actor. Pushed even if a ended
 * meanwhile (a counted place must be filled): then to_gen no longer
 * matches, and the message is a dead letter when it is taken out. */
static int deliver_reserved(tp_runtime *rt, tpi_actor *a, tp_pid to, tpi_msg *m)
{
    m->to_gen = tpi_pid_gen(to);
    if (tpi_mailbox_push_reserved(&a->mb, &m->node))
        tpi_sched_notify(a);
    /* seq_cst: as in tpi_deliver, a paused receiver whose own mailbox
     * is now full resumes to drain it. */
    if (full(a) && atomic_load_explicit(&a->paused, memory_order_seq_cst))
        tpi_unpause(rt, a);
    return 0;
}

static int foreign_send(tp_runtime *rt, tp_pid to, int32_t tag,
                        const void *data, size_t len, bool block)
{
    if (!rt || to == TP_PID_NONE)
        return TP_EINVAL;
    tpi_msg *m;
    int rc = tpi_msg_for_send(rt, tag, data, len, true, &m);
    if (rc)
        return rc;
    /* A live local actor's mailbox takes a reservation, so that this send
     * never takes it over capacity, even against other foreign senders.
     * Remote pids and an isolated worker's sends leave through their
     * routes; a dead pid is a dead letter. */
    tpi_actor *a = rt->host || (to & TPI_PID_REMOTE)
                       ? NULL
                       : tpi_table_slot(rt->table, to);
    /* acquire: as in tpi_deliver. */
    if (a && tpi_slot_gen_acquire(a) == tpi_pid_gen(to)) {
        rc = foreign_reserve(rt, a, to, block);
        if (rc < 0) {
            tpi_msg_free(m);
            return rc;
        }
        if (rc > 0) {
            TPI_STAT(rt, sent, 1);
            return deliver_reserved(rt, a, to, m);
        }
    }
    TPI_STAT(rt, sent, 1);
    return tpi_deliver(rt, NULL, to, m);
}

int tp_runtime_send(tp_runtime *rt, tp_pid to, int32_t tag, const void *data,
                    size_t len)
{
    return foreign_send(rt, to, tag, data, len, true);
}

int tp_runtime_try_send(tp_runtime *rt, tp_pid to, int32_t tag,
                        const void *data, size_t len)
{
    return foreign_send(rt, to, tag, data, len, false);
}
