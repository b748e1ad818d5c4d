/*
 * The runtime: schedulers (each a libevent loop), timers, run accounting.
 */
#ifndef TPI_RUNTIME_H
#define TPI_RUNTIME_H

#include "actors/actor.h"

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>

struct event_base;
struct event;

/* ---- runtime/timer.c: a binary heap per scheduler behind one event */
typedef enum {
    TPI_TIMER_ONCE,     /* user send_after */
    TPI_TIMER_INTERVAL, /* user send_interval */
    TPI_TIMER_CALL,     /* call/oneshot timeout: ref */
    TPI_TIMER_RECV      /* receive timeout */
} tpi_timer_kind;

struct tpi_timer {
    tpi_timer *next_owned; /* owner's list */
    tpi_actor *owner;
    uint64_t deadline_ns;
    uint64_t interval_ns;
    tp_timer id;
    tp_ref ref;
    int32_t tag;
    uint32_t heap_index; /* UINT32_MAX when not in the heap (fired) */
    tpi_timer_kind kind;
    size_t len;
    char *data;
};

typedef struct tpi_timer_heap {
    tpi_timer **v;
    uint32_t n, cap;
    struct event *ev;
    uint64_t armed_ns; /* deadline the event is set for, 0 if none */
    bool virtual_time; /* deterministic mode: no libevent timer */
    uint64_t vclock;   /* virtual now, in ns */
} tpi_timer_heap;

int tpi_timer_start(tpi_actor *a, tpi_timer_kind kind, uint64_t delay_ns,
                    uint64_t interval_ns, int32_t tag, const void *data,
                    size_t len, tp_ref ref, tp_timer *id_out);
/* Cancel a timer of a; true if one was found (and is now gone). */
bool tpi_timer_cancel(tpi_actor *a, tp_timer id);
/* A TPI_MSG_TIMER message arrived: true if it is still wanted. */
bool tpi_timer_claim(tpi_actor *a, tp_timer id);
void tpi_timers_free_all(tpi_actor *a);
int tpi_timers_init(tpi_sched *s);
/* The timers' clock: monotonic, or virtual in the deterministic mode. */
uint64_t tpi_clock_ns(tpi_timer_heap *h);
/* Deterministic mode, nothing ready: jump the virtual clock to the next
 * deadline and fire what is due. False if no timer is pending. */
bool tpi_timers_advance(tpi_sched *s);
void tpi_timer_heap_free(tpi_timer_heap *h);

/* Event counters. Each scheduler counts its own (one writer: a relaxed
 * load and store, no read-modify-write on the hot path); other threads
 * count into the runtime's with atomic adds. Readers sum them. */
typedef struct tpi_stats {
    _Atomic uint64_t sent, spawned, exited, dead_letters, late_replies, timers;
    /* issue 8: exits by tp_exit_kind, restarts (actors/info.c) */
    _Atomic uint64_t exit_kinds[TP_EXIT_KIND_MAX + 1], restarts;
    /* observed actors born minus ended here (wraps below 0 per thread;
     * the sum over threads is right) */
    _Atomic uint64_t observed;
} tpi_stats;

#define TPI_STAT(rt, field, d)                                                 \
    tpi_stat_add((rt), offsetof(tpi_stats, field), (int64_t)(d))
void tpi_stat_add_shared(tp_runtime *rt, size_t field, int64_t d);

/* ---- runtime/sched.c */
/* Schedulers sit side by side in rt->scheds, each written all the time by
 * its own thread: a line of their own (two, against adjacent-line
 * prefetch), or every message pays for false sharing. */
#define TPI_SCHED_ALIGN 128
/* The inline send's pid -> slot hints (actors/send.c), direct-mapped by
 * the pid's low bits. Slots never move nor go away while the runtime
 * lives, so an entry always names the right slot; whether the actor in it
 * is still that pid's is checked after, as for any lookup. */
#define TPI_SLOT_HINTS 64
typedef struct tpi_slot_hint {
    tp_pid pid; /* TP_PID_NONE: empty, and slot is &tpi_no_slot */
    tpi_actor *slot;
} tpi_slot_hint;
struct tpi_sched {
    _Alignas(TPI_SCHED_ALIGN) tp_runtime *rt;
    /* rt->table, one load nearer for the inline send (actors/send.c);
     * NULL in an isolated worker, whose sends all go through its host. */
    tpi_table *direct;
    unsigned id;  /* index in rt->scheds */
    uint64_t bit; /* 1 << id, in rt->idle */
    struct event_base *base;
    struct event *run_ev;
    struct event *wake_ev;
    int wake_fd;
    _Atomic int wake_pending;
    /* In the busy wait (runtime/sched.c, loop): it looks at wake_pending
     * between polls, so a wake-up needs no eventfd write. */
    _Atomic int spinning;
    int own_events; /* events of its own on its base (runtime/sched.c) */
    bool run_active;
    tpi_mpscq inject;       /* actors made ready by other threads */
    tpi_mpsc_node *rq_head; /* local run queue, plain links */
    tpi_mpsc_node *rq_tail;
    uint32_t rq_n;       /* ready actors in the local queue, not the slot */
    tpi_actor *rq_slot;  /* the next slot: runs before the queue's head */
    uint32_t next_runs;  /* turns taken from the next slot in a row */
    uint32_t next_max;   /* how many it may take (0: no next slot) */
    uint64_t backlog_ns; /* since when the run queue has not run dry */
    bool det;            /* deterministic test mode (tp_config.seed) */
    unsigned budget;     /* messages per turn: cfg.batch, 1 when det */
    uint64_t rng;        /* its generator state */
    uint64_t hash;       /* its schedule signature */
    tpi_actor *cur;      /* actor in its turn */
    /* Its pid: the sender of what it sends, and the stuck watch's actor
     * (relaxed: the monitor reads it, see tpi_sched_tick_turn). */
    _Atomic tp_pid cur_pid;
    tp_pid pause_on;          /* a send this turn overfilled this pid */
    tp_pid full_seen;         /* the inline send's last on_full this turn */
    tp_ref ref_next, ref_end; /* its block of refs (tpi_ref_new) */
    tpi_timer_heap timers;
    tpi_slot_cache slots; /* free actor slots kept by this thread */
    /* Credits of the live count (tpi_runtime_actor_born), written by this
     * thread only; atomic for tp_runtime_stats, which subtracts them. */
    _Atomic uint32_t credits;
    tpi_stats stats;
    /* Stuck-handler watch (runtime/monitor.c), a seqlock written by this
     * thread with cur_pid: see tpi_sched_tick_turn. */
    _Atomic uint64_t tick;
    _Atomic int32_t tick_tag;
    pthread_t thread; /* schedulers 1..n-1: their own threads */
    tpi_slot_hint hints[TPI_SLOT_HINTS];
    uint64_t busy_wait_ns; /* tp_config.busy_wait_us (runtime/sched.c) */
};

int tpi_sched_init(tpi_sched *s, tp_runtime *rt, unsigned id);
void tpi_sched_fini(tpi_sched *s);
/* Run s's loop on this thread until the runtime stops (or, in an isolated
 * worker, until tpi_sched_stop). */
int tpi_sched_run(tpi_sched *s);
/* Break s's loop; s's own thread only. */
void tpi_sched_stop(tpi_sched *s);
/* Stop every scheduler of rt (any thread): the run is over. */
void tpi_sched_stop_all(tp_runtime *rt);
/* Wake s's loop (any thread), e.g. to reach a safe point. */
void tpi_sched_wake(tpi_sched *s);
/* Put a on its scheduler's run queue (any thread). The caller must hold
 * a's scheduling duty (mb.sched, set by its local push that found a idle,
 * or held since); from another thread the duty is handed over with a
 * note (TPI_NOTE_READY). */
void tpi_sched_ready(tpi_actor *a);
/* tpi_sched_queue, tpi_sched_queue_next: runtime/runq.h */
/* A remote push found a's remote stack empty (any thread): note its home,
 * which queues a if it is idle. */
void tpi_sched_notify(tpi_actor *a);
/* End of a turn of a (scheduling flag held, nothing left to do) that took
 * one message, from `from`, through the remote queue: if that sender lives on another scheduler with
 * a lower id, move a there and queue it (true), so actors that talk across
 * threads end up on one; false leaves a to the caller. Home thread. */
bool tpi_sched_follow(tpi_sched *s, tpi_actor *a, tp_pid from);
/* Move a, spawned on s by the running turn and queued there without having
 * run, to scheduler `to` (a no-op if to is s). Home thread. */
void tpi_sched_place(tpi_sched *s, tpi_actor *a, tpi_sched *to);
/* The scheduler running on this thread, or NULL (TPI_TLS_FAST: see
 * actors/actor.h). */
extern _Thread_local tpi_sched *tpi_tls_sched TPI_TLS_FAST;
static inline tpi_sched *tpi_sched_current(void) { return tpi_tls_sched; }

/* a starts running behavior calls on s (a turn, or an isolated worker's
 * message); tpi_sched_leave when they end. */
static inline void tpi_sched_enter(tpi_sched *s, tpi_actor *a, tp_pid pid)
{
    s->cur = a;
    atomic_store_explicit(&s->cur_pid, pid, memory_order_relaxed);
    s->pause_on = TP_PID_NONE;
    s->full_seen = TP_PID_NONE;
}
static inline void tpi_sched_leave(tpi_sched *s) { s->cur = NULL; }

/* The stuck-handler watch: tick is odd while a batch runs turns
 * (tpi_sched_tick_batch, runtime/sched.c) and grows by 2 at the start of each
 * turn (actors/actor.c), so an odd tick that stays the same means a turn
 * (at most tp_config.batch behavior calls, nearly always one stuck call)
 * has not ended; the pair (cur_pid, tick_tag) names the actor and the
 * message its behavior was last given. Per turn one store of the tick,
 * per call one of the tag; one writer, so loads and stores, no
 * read-modify-write. */
static inline void tpi_sched_tick_add(tpi_sched *s, uint64_t d)
{
    /* release: the monitor reads tick (acquire), the pair, then tick
     * again; the pair written before this store belongs to the tick. */
    atomic_store_explicit(&s->tick,
                          atomic_load_explicit(&s->tick, memory_order_relaxed) +
                              d,
                          memory_order_release);
}

/* A turn starts (after tpi_sched_enter stored its pid). */
static inline void tpi_sched_tick_turn(tpi_sched *s)
{
    tpi_sched_tick_add(s, 2);
}

/* A batch starts or ends running turns: the tick changes parity. */
static inline void tpi_sched_tick_batch(tpi_sched *s)
{
    tpi_sched_tick_add(s, 1);
}

static inline void tpi_sched_tick(tpi_sched *s, int32_t tag)
{
    /* relaxed: a call that is stuck wrote it long before the monitor
     * reports it. */
    atomic_store_explicit(&s->tick_tag, tag, memory_order_relaxed);
}

/* ---- runtime/world.c: stop the world */
/* Park every other scheduler at a safe point (between turns), so the
 * caller may read any actor's state; a scheduler thread of rt only (it is
 * one of those counted). 0, or
 * TP_ETIMEDOUT when one has not parked within TPI_WORLD_WAIT_MS (a
 * handler that runs on, stuck): then nothing is stopped, and the others
 * run on rather than wait with the stopper. */
#define TPI_WORLD_WAIT_MS 1000
int tpi_world_stop(tp_runtime *rt);
void tpi_world_resume(tp_runtime *rt);
/* A thread that is not one of rt's schedulers sets up an actor's slot (a
 * spawn): it waits while the world is stopped, and a stopper waits for it
 * to leave, so readers never see a slot half made. */
void tpi_world_foreign_enter(tp_runtime *rt);
void tpi_world_foreign_leave(tp_runtime *rt);
/* A scheduler at a safe point: park if the world is being stopped. */
void tpi_world_safepoint(tpi_sched *s);
/* A scheduler enters or leaves its loop (stoppers wait only for running
 * schedulers). */
void tpi_world_enter(tpi_sched *s);
void tpi_world_leave(tpi_sched *s);

/* ---- runtime/monitor.c: the stuck-handler report */
int tpi_monitor_start(tp_runtime *rt);
void tpi_monitor_stop(tp_runtime *rt);

/* ---- runtime/runtime.c */
struct tp_runtime {
    tp_config cfg;
    tpi_table *table;
    tpi_names *names;
    tpi_sched *scheds; /* cfg.threads; [0] runs on tp_run's thread */
    unsigned nsched;
    _Atomic int stopping; /* the run is over: loops end */
    /* Written from every scheduler thread: each on a line of its own. */
    _Alignas(64) _Atomic unsigned next_home; /* round robin, outside spawns */
    _Alignas(64) _Atomic uint64_t idle;      /* bit i: scheduler i ran dry */
    /* runtime/world.c; world_stop is read by every scheduler every turn */
    _Alignas(64) pthread_mutex_t world_lock;
    pthread_cond_t world_cond;
    _Atomic int world_stop;         /* a stopper is waiting or running */
    tpi_sched *world_owner;         /* who stopped it (world lock) */
    unsigned world_parked;          /* schedulers parked (world lock) */
    unsigned world_depth;           /* nested stops by the owner (world lock) */
    unsigned world_running;         /* schedulers in their loop (world lock) */
    unsigned world_foreign;         /* other threads spawning (world lock) */
    unsigned world_foreign_waiting; /* ... waiting to (world lock) */
    struct tpi_monitor *monitor;    /* runtime/monitor.c, while running */
    /* Actors alive, plus TPI_LIVE_RUN once tp_run has begun: one word, so
     * a spawn from outside and the end of the run are ordered. */
    _Alignas(64) _Atomic uint64_t live;
    _Alignas(64) tpi_stats stats; /* counted off the scheduler threads */
    _Alignas(64) _Atomic uint64_t next_ref;
    _Atomic int state; /* TPI_RT_NEW, RUNNING, DONE */
    tp_pid root;
    tp_reason root_reason;
    char root_text[TP_REASON_TEXT_MAX + 1];
    struct event *sig_ev[2]; /* SIGINT, SIGTERM when handled */
    int signals_seen;
    /* guards paused/waiters/waiting_on of every actor (slow path) */
    pthread_mutex_t wait_lock;
    /* foreign blocking senders wait here for a mailbox to drain */
    pthread_mutex_t fw_lock;
    pthread_cond_t fw_cond;
    _Atomic int fw_waiters;
    /* runtime/service.c: services' state (made on first use) and the
     * things that outlive their actor; svc_lock guards making and the
     * linger list. */
    pthread_mutex_t svc_lock;
    void *_Atomic svc[TPI_SVC_MAX];
    const tpi_svc_ops *svc_ops[TPI_SVC_MAX];
    tpi_linger *linger;
    /* Set only in an isolated worker process (runtime/host.c), where
     * every delivery goes to the hosted actor or leaves over the channel. */
    struct tpi_host *host;
    /* A node service's route for remote pids (actors/remote.c). */
    const tpi_remote_ops *remote;
    void *remote_state;
    /* TP_OBSERVE_* for new actors (actors/info.c) */
    unsigned observe;
};

enum { TPI_RT_NEW, TPI_RT_RUNNING, TPI_RT_DONE };
#define TPI_LIVE_RUN (1ull << 63)

/* runtime/service.c, called by tp_runtime_free: services stop what may
 * still deliver to actors (before the actors are torn down); then every
 * lingering thing is finished and every service state freed (after them,
 * before the loops go). */
void tpi_svc_stop_all(tp_runtime *rt);
/* tp_run: services' start hooks (0, or the first error, after which every
 * end hook ran) and end hooks. */
int tpi_svc_start_all(tp_runtime *rt);
void tpi_svc_end_all(tp_runtime *rt);
void tpi_svc_free_all(tp_runtime *rt);

/* ---- runtime/host.c */
/* rt->host's share of tpi_deliver: consumes m, returns what it does. */
int tpi_host_route(struct tpi_host *h, tp_pid to, tpi_msg *m);

/* The runtime an actor belongs to. */
static inline tp_runtime *tpi_actor_rt(tpi_actor *a) { return tpi_home(a)->rt; }

/* Refs a scheduler takes from rt->next_ref at a time. */
#define TPI_REF_BLOCK 4096
/* s's next ref, from a new block (runtime/sched.c). */
tp_ref tpi_ref_block(tpi_sched *s);

/* A ref unique in rt. A scheduler of rt takes them from a block of its
 * own, so that a call or a timer does not bump a counter shared by every
 * thread (an atomic read-modify-write, and a cache line that moves
 * between cores with several schedulers); other threads take one from
 * the shared counter. */
static inline tp_ref tpi_ref_new(tp_runtime *rt)
{
    tpi_sched *s = tpi_sched_current();
    if (s && s->rt == rt) {
        if (s->ref_next != s->ref_end)
            return s->ref_next++;
        return tpi_ref_block(s);
    }
    /* relaxed: only uniqueness matters. */
    return atomic_fetch_add_explicit(&rt->next_ref, 1, memory_order_relaxed);
}

/* Count on s's own counters: s is the scheduler running this thread. */
static inline void tpi_stat_own(tpi_sched *s, size_t field, int64_t d)
{
    _Atomic uint64_t *c = (_Atomic uint64_t *)((char *)&s->stats + field);
    /* relaxed load and store: this thread is the only writer. */
    atomic_store_explicit(c,
                          atomic_load_explicit(c, memory_order_relaxed) +
                              (uint64_t)d,
                          memory_order_relaxed);
}

static inline void tpi_stat_add(tp_runtime *rt, size_t field, int64_t d)
{
    tpi_sched *s = tpi_sched_current();
    if (s && s->rt == rt)
        tpi_stat_own(s, field, d);
    else
        tpi_stat_add_shared(rt, field, d);
}

/* An actor is ending with r: counters and the root's reason. */
void tpi_runtime_actor_ended(tp_runtime *rt, tpi_actor *a, tp_reason r);
/* The run's live count (rt->live) counts the actors alive plus the
 * credits the schedulers hold: an actor spawned by an actor spends one of
 * its scheduler's credits and an actor ending on a scheduler gives one
 * back to that scheduler, so neither touches the shared word, which every
 * spawn and end on every thread would otherwise contend for. A scheduler
 * takes TPI_LIVE_CREDITS at a time, gives back what it holds above twice
 * that, and all it holds when its run queue runs dry; so the count can
 * reach zero only once every actor has ended and every scheduler with
 * nothing to run has given its credits back. */
#define TPI_LIVE_CREDITS 64
/* An actor spawned by an actor running on s: counted. */
void tpi_runtime_actor_born(tpi_sched *s);
/* An ended actor is fully gone: stops the run when it was the last. */
void tpi_runtime_actor_gone(tp_runtime *rt);
/* The same for an actor that ended in a turn on s, from s's run queue
 * (whose running dry gives the credit back). */
void tpi_runtime_actor_gone_on(tpi_sched *s);
/* s's run queue ran dry: its credits back to the count (s's thread). */
void tpi_runtime_credits_back(tpi_sched *s);
/* ---- actors/info.c: per-actor counters, actor info */
/* Per-actor counters of an observed actor (owner thread only). */
typedef struct tpi_actor_obs {
    uint64_t handled, deferred, handler_ns, hwm, restarts;
} tpi_actor_obs;
/* At spawn: reset the slot's dead-letter count; observe a if asked
 * (TPI_ACT_OBS*, ext->obs). TP_ENOMEM leaves a's ext to the caller. */
int tpi_obs_spawn(tp_runtime *rt, tpi_actor *a, unsigned spawn_flags);
/* An observed actor's behavior call: time it and count it (actor.c). */
void tpi_obs_turn(tpi_actor *a);
/* m, addressed to pid, is about to become a dead letter: counted for pid
 * if it is a user message (tag >= 0). Any thread. */
void tpi_obs_dead_letter(tp_runtime *rt, tp_pid to, const tpi_msg *m);

/* ---- runtime/signals.c */
void tpi_signals_free(tp_runtime *rt);

/* Wake foreign senders blocked on a full mailbox. */
void tpi_runtime_wake_foreign(tp_runtime *rt);

#endif
