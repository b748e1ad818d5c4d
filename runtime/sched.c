/*
 * A scheduler: one libevent loop on one thread. Ready actors wait in a
 * plain local FIFO and are drained in batches from a single libevent
 * callback (never one libevent event per message). Other threads hand
 * actors over through an MPSC inject queue and wake the loop through an
 * eventfd, only when no wake-up is already pending.
 *
 * Load balancing is work requesting, not stealing (Acar, Charguéraud and
 * Rainey, "Scheduling parallel programs by work stealing with private
 * deques", PPoPP 2013): a scheduler that runs out of work sets its bit in
 * rt->idle and sleeps in its loop; a scheduler whose run queue has stayed
 * non-empty for a while checks the mask between turns and hands half of its
 * movable queued actors to an idle one, each with the actor it last sent
 * to if that one is idle here (a pair that talks stays together). Only an
 * actor's home thread ever moves it, while it holds the actor's scheduling
 * flag without running it (queued here, or idle and claimed), so nobody
 * can be running it or pushing to its home-only FIFO at that moment. An
 * actor answering one message from a lower-numbered scheduler follows its
 * sender there (tpi_sched_follow), so pairs a share split come together.
 * Actors that own timers or resources that cannot move (isolated-worker
 * channels: events on their home's base) never move; a socket moves with
 * its actor (its events leave the old loop before the move, rehome, and
 * are made on the new one before the actor's next turn).
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runq.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <event2/event.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define TURNS_PER_CALLBACK 256
/* Callbacks libevent may run between two polls (tpi_sched_init). */
#define MAX_CALLBACKS_PER_POLL 256
/* How long a run queue must stay non-empty before we share it. A pair of
 * actors passing one message back and forth empties the queue every turn
 * and so stays together; a backlog that drains within this time is not
 * worth a wake-up (tens of microseconds) and the loss of locality. */
#define SHARE_AFTER_NS 500000
/* Messages handled between two looks at the clock within a batch. */
#define CLOCK_EVERY 16

_Thread_local tpi_sched *tpi_tls_sched TPI_TLS_FAST;
#define tls_sched tpi_tls_sched

/* xorshift64*: small, fast, and the same sequence for the same seed. */
static uint64_t next_random(tpi_sched *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 0x2545F4914F6CDD1Dull;
}

static tpi_actor *actor_of(tpi_mpsc_node *n)
{
    return (tpi_actor *)((char *)n - offsetof(tpi_actor, rq));
}

/* Unlink n (after prev, or the head) from the local run queue. */
static void rq_unlink(tpi_sched *s, tpi_mpsc_node *prev, tpi_mpsc_node *n)
{
    tpi_mpsc_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
    if (prev)
        atomic_store_explicit(&prev->next, next, memory_order_relaxed);
    else
        s->rq_head = next;
    if (s->rq_tail == n)
        s->rq_tail = prev;
    s->rq_n--;
}

/* The deterministic mode: any ready actor may go next, a seeded pick
 * among them. The walk is linear, which test-sized queues can afford. */
static __attribute__((noinline)) tpi_actor *rq_pop_det(tpi_sched *s)
{
    if (s->rq_slot) { /* queued when the queue was empty: its head now */
        tpi_mpsc_node *h = &s->rq_slot->rq;
        /* relaxed: plain links, as in tpi_rq_push */
        atomic_store_explicit(&h->next, s->rq_head, memory_order_relaxed);
        if (!s->rq_head)
            s->rq_tail = h;
        s->rq_head = h;
        s->rq_slot = NULL;
        s->rq_n++;
    }
    tpi_mpsc_node *n = s->rq_head, *prev = NULL;
    if (!n)
        return NULL;
    for (uint64_t k = next_random(s) % s->rq_n; k > 0; k--) {
        prev = n;
        n = atomic_load_explicit(&n->next, memory_order_relaxed);
    }
    rq_unlink(s, prev, n);
    tpi_actor *a = actor_of(n);
    s->hash = (s->hash ^ (tpi_slot_index(a) + 1)) *
              0x100000001b3ull; /* FNV-1a */
    return a;
}

static inline tpi_actor *rq_pop(tpi_sched *s)
{
    if (s->det)
        return rq_pop_det(s);
    tpi_actor *a = s->rq_slot;
    if (a) {
        s->rq_slot = NULL;
        /* Counted only while others wait (alone, nobody was starved), and
         * reset when the queue's head goes. */
        if (s->rq_head)
            s->next_runs++;
        return a;
    }
    tpi_mpsc_node *n = s->rq_head;
    if (!n)
        return NULL;
    /* relaxed: plain links of our own list */
    tpi_mpsc_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
    s->rq_head = next;
    if (!next)
        s->rq_tail = NULL;
    s->rq_n--;
    s->next_runs = 0;
    return actor_of(n);
}

/* The run event, due now as a timer: libevent activates due timers only
 * after its next poll, so the next batch runs after the sockets and
 * timers that poll found (see tpi_sched_init). */
static void kick_after_poll(tpi_sched *s)
{
    static const struct timeval now = {0, 0};
    s->run_active = true;
    if (event_add(s->run_ev, &now) != 0)
        event_active(s->run_ev, EV_TIMEOUT, 0); /* out of memory: at once */
}

static tpi_actor *actor_of_inj(tpi_mpsc_node *n)
{
    return (tpi_actor *)((char *)n - offsetof(tpi_actor, inj));
}

static void write_wake_fd(tpi_sched *s);

/* Hand a to s's inject queue (any thread; the caller owns a's pending
 * notes, having added the first of them). */
static void inject(tpi_sched *s, tpi_actor *a)
{
    tpi_mpscq_push(&s->inject, &a->inj);
    tpi_sched_wake(s);
}

/* s handles the notes of a (see mailbox/mailbox.h): the scheduling duty
 * handed over (TPI_NOTE_READY: queue it), or remote mail for an owner
 * that may have gone idle. Until the notes are cleared nobody else may
 * take a's slot (tpi_spawn claims a free slot by its notes), so a free
 * slot's stray mail is flushed here, as dead letters, before. */
static void on_note(tpi_sched *s, tpi_actor *a)
{
    tpi_sched *h = tpi_home(a);
    if (h != s) { /* moved after the note was sent: on to its home */
        inject(h, a);
        return;
    }
    tpi_mailbox *mb = &a->mb;
    bool queued = false;
    uint32_t seen = tpi_mailbox_notes(mb);
    do {
        if ((seen & TPI_NOTE_READY) && !queued) {
            tpi_rq_push(s, &a->rq); /* its sender holds sched for it */
            queued = true;
        } else if (!a->sched && tpi_mailbox_remote_waiting(mb)) {
            if (a->behavior) {
                a->sched = true;
                tpi_rq_push(s, &a->rq);
                queued = true;
            } else {
                tpi_actor_flush(s->rt, a);
            }
        }
    } while (!tpi_mailbox_notes_done(mb, &seen));
}

static void drain_inject(tpi_sched *s)
{
    for (tpi_mpsc_node *n; (n = tpi_mpscq_pop_wait(&s->inject));)
        on_note(s, actor_of_inj(n));
    if (tpi_sched_has_ready(s))
        tpi_sched_kick(s);
}

static void write_wake_fd(tpi_sched *s)
{
    uint64_t one = 1;
    while (write(s->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void tpi_sched_wake(tpi_sched *s)
{
    /* Only the pusher that flips the flag wakes s; the loop clears it
     * before draining, so a later push wakes again. A spinning loop looks
     * at the flag itself. seq_cst, the flip then the look at spinning,
     * against loop()'s clear of spinning then its look at the flag: either
     * we see it spinning and it sees the flag, or we write the eventfd. */
    if (!atomic_exchange_explicit(&s->wake_pending, 1, memory_order_seq_cst) &&
        !atomic_load_explicit(&s->spinning, memory_order_seq_cst))
        write_wake_fd(s);
}

void tpi_sched_ready(tpi_actor *a)
{
    tpi_sched *s = tpi_home(a);
    if (tls_sched == s) {
        tpi_sched_queue(s, a);
        return;
    }
    if (tpi_mailbox_note(&a->mb, TPI_NOTE_READY))
        inject(s, a);
}

void tpi_sched_notify(tpi_actor *a)
{
    if (tpi_mailbox_note(&a->mb, 1))
        inject(tpi_home(a), a);
}

/* May a leave this thread? Not if something of it lives on this loop
 * and cannot move (its timers; resources that pin it). */
static bool movable(tpi_actor *a)
{
    return !(a->flags & TPI_ACT_PINNED) && (!a->ext || !a->ext->timers);
}

/* a leaves this thread (its home, between turns) for to: its resources
 * take their events off this loop; the new home attaches them before a's
 * next turn. Then the home changes. (A resource that cannot move is on an
 * actor moved only before its first turn, by tpi_sched_place: its events
 * are not made yet.) */
static void rehome(tpi_actor *a, tpi_sched *to)
{
    if (a->ext && a->ext->resources) {
        for (tpi_resource *r = a->ext->resources; r; r = r->next)
            if (r->detach)
                r->detach(r);
        a->flags |= TPI_ACT_MOVED;
    }
    /* release: pairs with tpi_home's acquire; our last writes to a (its
     * FIFO, its resources) are visible to the thread that finds itself
     * a's home. */
    atomic_store_explicit(&a->home, to, memory_order_release);
}

/* Move a (in our run queue, or idle and claimed by us: we hold sched) to
 * scheduler to, handing it the duty: append it to the chain first..last,
 * unless notes of a are pending already (they reach `to` and queue it). */
static void move_one(tpi_sched *to, tpi_actor *a, tpi_mpsc_node **first,
                     tpi_mpsc_node **last)
{
    rehome(a, to);
    if (!tpi_mailbox_note(&a->mb, TPI_NOTE_READY))
        return;
    atomic_store_explicit(&a->inj.next, NULL, memory_order_relaxed);
    if (*last)
        atomic_store_explicit(&(*last)->next, &a->inj, memory_order_relaxed);
    else
        *first = &a->inj;
    *last = &a->inj;
}

/* The actor a last sent to, if it lives here and sits idle: claimed, so
 * that it can move along with a (a pair that talks stays on one thread).
 * NULL if not. */
static tpi_actor *claim_partner(tpi_sched *s, tpi_actor *a)
{
    /* A slot queued only to flush an ended actor's mail has no partner:
     * the field is then the free-list link, which others may write. */
    if (!a->behavior || !a->partner)
        return NULL;
    tpi_actor *p = tpi_table_at(s->rt->table, a->partner - 1);
    if (!p || p == a)
        return NULL;
    /* Only a live actor whose setup is over, before any plain field is
     * read: a free slot (even generation) may be claimed and set up by a
     * spawn on another thread right now, even while its home is still
     * us. Acquire on each: the generation turns odd after the spawner set
     * the home (both release), and a spawner from outside clears the
     * notes it claimed only after its last write (release). Nonzero notes
     * may also be remote mail: that queues p anyway. Once live with its
     * home here, p can end and be freed only on this thread. */
    if (!(tpi_slot_gen_acquire(p) & 1u) || tpi_home(p) != s ||
        tpi_mailbox_notes(&p->mb) || p->sched || !p->behavior)
        return NULL;
    p->sched = true;
    /* Ours now: nobody runs or queues it. Only we move it, so its home
     * is still us; it must own nothing tied to this loop. */
    if (movable(p))
        return p;
    /* Idle again. Remote mail seen now has a note pending (it found the
     * stack empty while p was idle): that note queues p. */
    p->sched = false;
    return NULL;
}

/* Hand about half of our queued movable actors (and the idle actors they
 * last sent to) to an idle scheduler. */
static void share(tpi_sched *s, uint64_t idle)
{
    tp_runtime *rt = s->rt;
    unsigned id = (unsigned)__builtin_ctzll(idle);
    uint64_t bit = 1ull << id;
    /* relaxed: the mask is a hint. Clearing the bit claims the idle one,
     * so two busy schedulers do not both feed it. */
    if (!(atomic_fetch_and_explicit(&rt->idle, ~bit, memory_order_relaxed) &
          bit))
        return;
    tpi_sched *to = &rt->scheds[id];
    uint32_t want = s->rq_n / 2, moved = 0;
    tpi_mpsc_node *first = NULL, *last = NULL, *prev = NULL, *n = s->rq_head;
    while (n && moved < want) {
        tpi_mpsc_node *next =
            atomic_load_explicit(&n->next, memory_order_relaxed);
        tpi_actor *a = actor_of(n);
        /* Its partner first: once a is handed over (move_one), a pending
         * note may let its new home run it. A socket goes only with the
         * actor it talks to, or if it talks to none: that actor left here
         * would call it back at its next answer (tpi_sched_follow), and
         * each move of a socket costs system calls on both loops. */
        bool can = movable(a);
        tpi_actor *p = can ? claim_partner(s, a) : NULL;
        if (!can || (!p && a->partner && a->ext && a->ext->resources)) {
            prev = n;
            n = next;
            continue;
        }
        rq_unlink(s, prev, n);
        move_one(to, a, &first, &last);
        moved++;
        if (p)
            move_one(to, p, &first, &last);
        n = next;
    }
    if (!moved) { /* all pinned: it stays idle for someone else */
        atomic_fetch_or_explicit(&rt->idle, bit, memory_order_relaxed);
        return;
    }
    if (first)
        tpi_mpscq_push_chain(&to->inject, first, last);
    tpi_sched_wake(to);
    s->backlog_ns = 0;
}

/* The run queue holds a backlog now: has it been there long enough? */
static bool backlog_aged(tpi_sched *s)
{
    uint64_t now = tpi_now_ns();
    if (!s->backlog_ns)
        s->backlog_ns = now;
    return now - s->backlog_ns >= SHARE_AFTER_NS;
}

bool tpi_sched_follow(tpi_sched *s, tpi_actor *a, tp_pid from)
{
    tp_runtime *rt = s->rt;
    tpi_actor *f = rt->nsched > 1 ? tpi_table_slot(rt->table, from) : NULL;
    tpi_sched *to = f ? tpi_home(f) : NULL;
    /* Toward lower ids only, so two actors never chase each other. */
    if (!to || to->id >= s->id || !movable(a))
        return false;
    /* It keeps its flag: queued there, it is released by its new home,
     * the only thread that pushes to its FIFO from now on. */
    rehome(a, to);
    tpi_sched_ready(a);
    return true;
}

void tpi_sched_place(tpi_sched *s, tpi_actor *a, tpi_sched *to)
{
    if (to == s)
        return;
    if (s->rq_slot == a) { /* the first its spawner readied */
        s->rq_slot = NULL;
    } else {
        /* a was queued last, by its spawn: the walk is short in practice. */
        tpi_mpsc_node *prev = NULL, *n = s->rq_head;
        while (n && n != &a->rq) {
            prev = n;
            n = atomic_load_explicit(&n->next, memory_order_relaxed);
        }
        if (!n)
            return;
        rq_unlink(s, prev, n);
    }
    tpi_mpsc_node *first = NULL, *last = NULL;
    move_one(to, a, &first, &last); /* as share() hands one over */
    if (first)
        tpi_mpscq_push_chain(&to->inject, first, last);
    tpi_sched_wake(to);
}

/* Woken (wake_pending seen set): the inject queue and the stop flags. */
static void woken(tpi_sched *s)
{
    /* seq_cst: the clear must precede our reads of the inject queue, so a
     * push we miss sees 0 and writes the eventfd again. An exchange, not
     * a store: a read-modify-write continues the release sequences of the
     * pushers' exchanges, which the queue's acquire reads rely on in the
     * C11 model (same instruction on x86). */
    (void)atomic_exchange_explicit(&s->wake_pending, 0, memory_order_seq_cst);
    tp_runtime *rt = s->rt;
    /* acquire: pairs with tpi_sched_stop_all's release. */
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire)) {
        event_base_loopbreak(s->base);
        return;
    }
    /* relaxed: a hint; the world lock decides. */
    if (atomic_load_explicit(&rt->world_stop, memory_order_relaxed))
        tpi_world_safepoint(s);
    drain_inject(s);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t v;
    while (read(fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    woken(arg);
}

/* Nothing else on s's loop: no socket, timer or signal event of anyone
 * added or pending, only its wake-up event. A poll between two batches is
 * then a system call that can only report wake-ups, and what they announce
 * is in the inject queue, which each batch drains first; so the batches
 * go on without it. (Counted by libevent, in a few loads.) */
static bool loop_quiet(tpi_sched *s)
{
    return event_base_get_num_events(s->base, EVENT_BASE_COUNT_ADDED |
                                                  EVENT_BASE_COUNT_ACTIVE) <=
           s->own_events;
}

/* on_run goes on with another batch: actors are ready, nothing waits in
 * the poll, and the run (or this loop) is not being stopped. */
static bool run_on(tpi_sched *s)
{
    /* acquire: pairs with tpi_sched_stop_all's release. */
    return tpi_sched_has_ready(s) && !s->det && loop_quiet(s) &&
           !atomic_load_explicit(&s->rt->stopping, memory_order_acquire) &&
           !event_base_got_break(s->base);
}

/* One batch: the safe point, the inject queue, then up to
 * TURNS_PER_CALLBACK turns. */
static void batch(tpi_sched *s)
{
    tp_runtime *rt = s->rt;
    /* relaxed: a hint; the world lock decides. The safe point of a busy
     * scheduler is here, between two batches (and in on_wake, which a
     * stopper triggers), not between every two turns. */
    if (atomic_load_explicit(&rt->world_stop, memory_order_relaxed))
        tpi_world_safepoint(s);
    drain_inject(s);
    /* relaxed: a hint. Busy again: nobody should feed us now. */
    if (tpi_sched_has_ready(s) &&
        (atomic_load_explicit(&rt->idle, memory_order_relaxed) & s->bit))
        atomic_fetch_and_explicit(&rt->idle, ~s->bit, memory_order_relaxed);
    /* A backlog that outlived SHARE_AFTER_NS may be shared. The clock is
     * read at the start of a batch and then after every CLOCK_EVERY
     * messages, and only with several schedulers and a backlog. */
    bool multi = rt->nsched > 1;
    bool may_share = multi && s->rq_n >= 2 && backlog_aged(s);
    unsigned work = 0;
    tpi_remote_batch(rt, true); /* node frames leave together, at its end */
    tpi_sched_tick_batch(s);    /* odd while turns run: the stuck watch */
    for (int i = 0; !multi && i < TURNS_PER_CALLBACK; i++) {
        /* One scheduler: nothing to share, nobody to check. */
        tpi_actor *a = rq_pop(s);
        if (!a)
            break;
        tpi_actor_turn(s, a);
    }
    for (int i = 0; multi && i < TURNS_PER_CALLBACK; i++) {
        tpi_actor *a = rq_pop(s);
        if (!a)
            break;
        if (!s->rq_n) { /* ran dry: no backlog */
            s->backlog_ns = 0;
            may_share = false;
            work = 0;
        }
        work += tpi_actor_turn(s, a);
        /* relaxed load below: a hint, re-checked under its own protocol. */
        if (s->rq_n >= 2 && !may_share && work >= CLOCK_EVERY) {
            work = 0;
            may_share = backlog_aged(s);
        }
        if (may_share && s->rq_n >= 2) {
            uint64_t idle =
                atomic_load_explicit(&rt->idle, memory_order_relaxed) & ~s->bit;
            if (idle) {
                share(s, idle);
                may_share = false;
            }
        }
    }
    tpi_sched_tick_batch(s);
    tpi_remote_batch(rt, false);
}

static void on_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tpi_sched *s = arg;
    tp_runtime *rt = s->rt;
    do
        batch(s);
    while (run_on(s));
    /* Back to libevent between batches so sockets and timers are served:
     * still busy, we run again after its next poll. */
    s->run_active = false;
    if (tpi_sched_has_ready(s)) {
        kick_after_poll(s);
        return;
    }
    tpi_runtime_credits_back(s); /* may end the run */
    if (s->det)
        tpi_timers_advance(s); /* virtual time: on to the next deadline */
    else if (rt->nsched > 1)   /* relaxed: a hint for busy schedulers */
        atomic_fetch_or_explicit(&rt->idle, s->bit, memory_order_relaxed);
}

tp_ref tpi_ref_block(tpi_sched *s)
{
    /* relaxed: only uniqueness matters. */
    tp_ref r = atomic_fetch_add_explicit(&s->rt->next_ref, TPI_REF_BLOCK,
                                         memory_order_relaxed);
    s->ref_next = r + 1;
    s->ref_end = r + TPI_REF_BLOCK;
    return r;
}

int tpi_sched_init(tpi_sched *s, tp_runtime *rt, unsigned id)
{
    s->rt = rt;
    s->direct = rt->table;
    s->id = id;
    s->bit = 1ull << id;
    s->budget = rt->cfg.batch;
    s->busy_wait_ns = (uint64_t)rt->cfg.busy_wait_us * 1000u;
    s->next_max = TPI_NEXT_RUNS_MAX;
    s->ref_next = s->ref_end = 0; /* no block yet */
    for (unsigned i = 0; i < TPI_SLOT_HINTS; i++)
        s->hints[i] = (tpi_slot_hint){TP_PID_NONE, &tpi_no_slot};
    s->wake_fd = -1;
    tpi_mpscq_init(&s->inject);
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return TP_ENOMEM;
    /* Each base is used by one thread only: no libevent locks.
     *
     * Fairness without a poll per event. libevent runs every active
     * callback before it polls again, and one that re-activates itself
     * runs again in the same round, so a run queue that never empties
     * would starve sockets and timers. Ours does not re-activate itself:
     * a batch that leaves actors ready re-arms the run event as a timer
     * due now (kick_after_poll), which libevent turns active only after
     * its next poll. One loop iteration is therefore one poll, every
     * socket and timer callback it found, then one batch of at most
     * TURNS_PER_CALLBACK turns. (A limit of one callback between polls,
     * as before, cost an epoll_wait per ready socket.) The callback limit
     * below only bounds other callbacks that re-activate themselves. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_max_dispatch_interval(cfg, NULL, MAX_CALLBACKS_PER_POLL,
                                           0);
    s->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!s->base)
        return TP_ENOMEM;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0)
        return TP_ESYS;
    s->run_ev = event_new(s->base, -1, 0, on_run, s);
    s->wake_ev =
        event_new(s->base, s->wake_fd, EV_READ | EV_PERSIST, on_wake, s);
    if (!s->run_ev || !s->wake_ev || event_add(s->wake_ev, NULL) != 0 ||
        tpi_timers_init(s) != 0)
        return TP_ENOMEM;
    /* The wake-up event, and whatever libevent adds for itself. */
    s->own_events = event_base_get_num_events(s->base, EVENT_BASE_COUNT_ADDED);
    return 0;
}

void tpi_sched_fini(tpi_sched *s)
{
    tpi_timer_heap_free(&s->timers);
    if (s->timers.ev)
        event_free(s->timers.ev);
    if (s->run_ev)
        event_free(s->run_ev);
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->base)
        event_base_free(s->base);
}

/* The loop returns from its busy wait: a wake-up that counted on the spin
 * gets its eventfd write, as if it had found the loop asleep (a later run
 * of the loop reads it). seq_cst: see tpi_sched_wake. */
static int spin_end(tpi_sched *s, int rc)
{
    atomic_store_explicit(&s->spinning, 0, memory_order_seq_cst);
    if (atomic_load_explicit(&s->wake_pending, memory_order_seq_cst))
        write_wake_fd(s);
    return rc;
}

/* The loop, with the busy wait (tp_config.busy_wait_us): after a round
 * that ran actors it polls without blocking, and sleeps in the poll only
 * once busy_wait_ns have passed with no work. A loop asleep in epoll_wait
 * must be woken by whoever brings it work: the peer writing to one of its
 * sockets or another scheduler writing its eventfd pays for the wake-up
 * (on a VM an interrupt to another CPU, microseconds), and the work waits
 * until the thread is scheduled again. BEAM's schedulers wait the same way
 * (+sbwt). Each round of the wait yields the CPU, so a runnable thread
 * that shares it is not held up by a scheduler with nothing to do. Work is
 * told by the stuck watch's tick, which every batch and turn moves.
 * Returns as event_base_loop(base, 0) does: when the loop is broken. */
static int loop(tpi_sched *s)
{
    if (!s->busy_wait_ns)
        return event_base_loop(s->base, 0);
    int rc;
    /* relaxed: our own thread's counter. */
    uint64_t seen = atomic_load_explicit(&s->tick, memory_order_relaxed);
    while (!(rc = event_base_loop(s->base, EVLOOP_ONCE)) &&
           !event_base_got_break(s->base)) {
        uint64_t since = 0;
        /* seq_cst: see tpi_sched_wake. */
        atomic_store_explicit(&s->spinning, 1, memory_order_seq_cst);
        for (;;) {
            /* relaxed: a hint; woken's seq_cst clear orders the drain. A
             * break made outside the loop lasts only until its next run,
             * which clears it: ours to act on now. */
            if (atomic_load_explicit(&s->wake_pending, memory_order_relaxed)) {
                woken(s);
                if (event_base_got_break(s->base))
                    return spin_end(s, 0);
            }
            uint64_t t = atomic_load_explicit(&s->tick, memory_order_relaxed);
            uint64_t now = tpi_now_ns();
            if (t != seen) {
                seen = t;
                since = now;
            } else if (now - since >= s->busy_wait_ns) {
                /* also at once when the wake-up brought no work. seq_cst:
                 * see tpi_sched_wake; a flag set meanwhile is ours. */
                atomic_store_explicit(&s->spinning, 0, memory_order_seq_cst);
                if (!atomic_load_explicit(&s->wake_pending,
                                          memory_order_seq_cst))
                    break;
                atomic_store_explicit(&s->spinning, 1, memory_order_seq_cst);
                continue;
            }
            sched_yield();
            if ((rc = event_base_loop(s->base, EVLOOP_NONBLOCK)) != 0 ||
                event_base_got_break(s->base))
                return spin_end(s, rc);
        }
    }
    return rc;
}

int tpi_sched_run(tpi_sched *s)
{
    tls_sched = s;
    tpi_world_enter(s);
    drain_inject(s);
    int rc = loop(s);
    tpi_world_leave(s);
    tls_sched = NULL;
    tpi_msg_cache_flush(); /* this thread's nodes, before it goes */
    return rc < 0 ? TP_ESYS : 0;
}

void tpi_sched_stop(tpi_sched *s) { event_base_loopbreak(s->base); }

void tpi_sched_stop_all(tp_runtime *rt)
{
    /* release: pairs with on_wake's acquire. */
    atomic_store_explicit(&rt->stopping, 1, memory_order_release);
    for (unsigned i = 0; i < rt->nsched; i++) {
        tpi_sched *s = &rt->scheds[i];
        if (s == tls_sched) {
            /* Our own base: never another thread's, they are NOLOCK. */
            tpi_sched_stop(s);
        } else {
            /* Unconditional: a pending wake-up may already have been
             * consumed before stopping was set. */
            write_wake_fd(s);
        }
    }
}
