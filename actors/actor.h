/*
 * Actors: the slot table, messages, and the per-actor state the runtime
 * keeps. Internal (tpi_) API shared by actors/ and runtime/.
 */
#ifndef TPI_ACTOR_H
#define TPI_ACTOR_H

#include "mailbox/mailbox.h"
#include "runtime/service.h" /* tpi_resource, the msgpack primitives */
#include "troupe.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct tpi_sched tpi_sched;
typedef struct tpi_timer tpi_timer;

/* tpi_msg.flags */
enum {
    TPI_MSG_REQUEST = 1u << 0, /* carries a reply handle (reply_to, ref) */
    TPI_MSG_REPLIED = 1u << 1, /* the handle was answered or taken */
    TPI_MSG_TIMER = 1u << 2,   /* from a user timer; ref = timer id */
    TPI_MSG_SYNTH =
        1u << 3, /* runtime-made reply (timeout): drop quietly if unmatched */
    TPI_MSG_VIA_LINK = 1u << 4, /* TPI_SIG_EXIT from a linked actor's death */
    TPI_MSG_OWNED = 1u << 5,    /* data is a separate buffer to free */
    /* Not a fixed-size node (the others are recycled): a flag for the
     * rare case, so "small, no request, nothing owned, not static" is one
     * test of the flags against zero. */
    TPI_MSG_LARGE = 1u << 6,
    TPI_MSG_STATIC = 1u << 7, /* not allocated (the start message) */
    TPI_MSG_SETTLED =
        1u << 8, /* passed the filters once (deferred, replayed) */
    /* made by tpi_msg_new_int: the value kept at TPI_MSG_INT_AT, its
     * bytes packed on demand (tpi_msg_bytes) */
    TPI_MSG_INT = 1u << 9,
    /* The tag is < 0: a runtime message (set by tpi_msg_init), so that
     * dispatch tells a user message seen for the first time with one test
     * of the flags. */
    TPI_MSG_SYS = 1u << 10,
    /* TPI_SIG_EXIT counted in its slot's exits (actors/send.c) */
    TPI_MSG_COUNTED = 1u << 11,
};

struct tp_msg {
    tpi_mpsc_node node;
    tp_pid from;
    tp_pid reply_to; /* requests: who waits for the reply */
    tp_ref ref;      /* reply/oneshot/monitor ref, or timer id */
    int32_t tag;
    uint32_t to_gen; /* generation of the addressee, checked on delivery */
    int32_t status;  /* TP_TAG_REPLY: 0 or a TP_E* code */
    uint32_t flags;
    size_t len;
    char *data;
    char inl[]; /* small payloads live here */
};
typedef struct tp_msg tpi_msg;

/* A set of pids, v[0..n) in no particular order (actors/pidset.c);
 * zero-initialised is empty. */
typedef struct tpi_pidvec {
    tp_pid *v;
    uint32_t n, cap;
    uint32_t *idx; /* position + 1 per cell (0: empty), or NULL */
    uint32_t idx_cap;
} tpi_pidvec;
/* Add p unless it is there: 0 or TP_ENOMEM. */
int tpi_pidset_add(tpi_pidvec *pv, tp_pid p);
/* Remove p: false if it was not there. */
bool tpi_pidset_del(tpi_pidvec *pv, tp_pid p);
void tpi_pidset_free(tpi_pidvec *pv);

typedef struct tpi_refpid {
    tp_ref ref;
    tp_pid pid;
} tpi_refpid;

typedef struct tpi_refvec {
    tpi_refpid *v;
    uint32_t n, cap;
} tpi_refvec;

/* A pending oneshot/call: the value for ref is awaited by this actor. */
typedef struct tpi_pending {
    struct tpi_pending *next;
    tp_ref ref;
    tp_timer timer; /* timeout timer, 0 if none */
} tpi_pending;

struct tp_reply_handle {
    struct tp_reply_handle *next;
    tp_pid to;
    tp_ref ref;
};

/* A plain FIFO of messages owned by one actor (deferred, replay). */
typedef struct tpi_msglist {
    tpi_msg *head, *tail;
} tpi_msglist;

/* Rarely used per-actor state, allocated on first use so an idle actor
 * stays small. Touched only by the thread running the actor, except the
 * waiter list (under the waiter lock). */
typedef struct tpi_actor_ext {
    tpi_pidvec links;
    tpi_refvec watchers;        /* monitors on me: (ref, watcher) */
    tpi_refvec monitoring;      /* my monitors: (ref, target) */
    tpi_pending *pending;       /* awaited oneshots/calls */
    tpi_pending *pending_spare; /* up to TPI_PENDING_SPARE, for reuse */
    uint32_t pending_nspare;
    struct tp_reply_handle *replies; /* taken reply obligations */
    tpi_timer *timers;               /* timers owned by this actor */
    tpi_resource *resources;
    tpi_msglist stash;         /* deferred, in arrival order */
    tpi_msglist replay;        /* deferred being offered again */
    struct tpi_actor_obs *obs; /* issue 8: counters (actors/info.c) */
    char *name;
    tp_reason reason;   /* exit reason (text owned here) */
    tp_timer rto_timer; /* receive timeout timer, 0 if none */
    int rto_ms;         /* receive timeout, < 0 if off */
    /* backpressure: whom I wait on (wait lock) */
    struct tpi_actor *wait_next;
    tp_pid waiting_on;
} tpi_actor_ext;

/* tpi_actor.flags (owner-thread only) */
enum {
    TPI_ACT_TRAP = 1u << 0,
    TPI_ACT_EXITING = 1u << 1,
    TPI_ACT_START = 1u << 3,    /* TP_TAG_START not yet delivered */
    TPI_ACT_OBS = 1u << 4,      /* issue 8: keeps counters (ext->obs) */
    TPI_ACT_OBS_TIME = 1u << 5, /* issue 8: and sums handler time */
    TPI_ACT_PINNED = 1u << 6,   /* has events on its home loop: never moves */
    TPI_ACT_ENDHOOK = 1u << 7,  /* tell the node service when it ends */
    /* What the turn would otherwise read from ext, a cache line away:
     * ext->replay may hold messages, ext->rto_ms >= 0. */
    TPI_ACT_REPLAY = 1u << 8,
    TPI_ACT_RTO = 1u << 9,
    TPI_ACT_BECAME = 1u << 10, /* the running call changed behavior */
    /* Moved with resources detached: its new home attaches them before
     * its next turn (turn_start). */
    TPI_ACT_MOVED = 1u << 11,
};
/* The exit kind is kept in flags from this bit up, so it survives OOM. */
#define TPI_ACT_EXIT_SHIFT 16

/* The fields of a slot that few actors use, kept per chunk of the table
 * beside the slots (tpi_table_cold), so an idle actor's slot stays small. */
typedef struct tpi_slot_cold {
    void (*state_free)(void *); /* the actor's, if it has one */
    struct tpi_actor *waiters;  /* actors paused on it (wait lock) */
    /* Exit signals in the slot's mailbox (for any generation): an actor
     * with one does not park on backpressure (actors/send.c). */
    _Atomic uint32_t exits;
} tpi_slot_cold;

/* An actor lives in a slot of the table. Slots are never freed while the
 * runtime lives, so any thread may read a slot's generation and push to
 * its mailbox even after the actor ended: a message whose to_gen no longer
 * matches is a dead letter when it is taken out. */
typedef struct tpi_actor {
    tpi_mailbox mb;
    tpi_mpsc_node rq;     /* local run-queue link (home thread) */
    tpi_mpsc_node inj;    /* inject-queue link, owned by the pending notes */
    tp_behavior behavior; /* NULL when the slot is free */
    void *state;
    /* The scheduler the actor runs on. Written (release) only by whoever
     * owns the actor's scheduling: its spawner, or its home scheduler
     * handing it, queued, to another (runtime/sched.c). */
    _Atomic(tpi_sched *) home;
    tpi_actor_ext *ext;
    union {
        tp_pid parent; /* live: the spawner, TP_PID_NONE from outside */
        /* free, at the head of a magazine in the table's depot: the next
         * magazine's head (index + 1, 0 = none) and this one's size */
        struct {
            uint32_t next, n;
        } mag;
    };
    /* The slot's pid word: its generation << 32 | its index + 1, the pid
     * of the actor living in it (tpi_slot_gen, tpi_slot_index,
     * tpi_actor_pid). One word, so a pid is checked against its slot with
     * one load and one comparison. */
    _Atomic uint64_t id;
    uint32_t flags;
    union {
        uint32_t free_next; /* free slot: free list link (index + 1), 0 = end */
        uint32_t partner;   /* live: index + 1 of the actor it last sent to
                               (owner thread; runtime/sched.c keeps the two
                               together when it moves one) */
    };
    _Atomic uint8_t paused; /* backpressure pause; see actors/send.c */
    /* Someone runs or queues it: the scheduling flag of mailbox/mailbox.h,
     * plain, its home thread's (or a spawner's, or whoever holds it while
     * handing it over with a note). */
    bool sched;
    /* Senders pause on it as on a mailbox over capacity, while it still
     * takes its messages (tpi_svc_congest, runtime/service.h). Written on
     * the owner's thread, read by senders; in what was padding. */
    _Atomic uint8_t congested;
    /* issue 8: dead letters addressed to this slot's latest actor: low 8
     * bits of its generation << 24 | count (actors/info.c). Fits in
     * what was padding, so a slot stays the same size. */
    _Atomic uint32_t obs_dead;
} tpi_actor;

/* An idle actor costs its slot (bench/troupe_bench.c's idle workload
 * counts it, with the pid the benchmark keeps, as at most 128 bytes). */
_Static_assert(sizeof(tpi_actor) <= 112, "an idle actor stays small");

/* acquire: pairs with the release store that moved a (runtime/sched.c),
 * so a thread that finds itself a's home also sees the mailbox FIFO as the
 * previous home left it. */
static inline tpi_sched *tpi_home(tpi_actor *a)
{
    return atomic_load_explicit(&a->home, memory_order_acquire);
}

#define TPI_SLOT_BITS 32
/* Generations count modulo 2^24, so a pid fits the remote-pid form of
 * nodes (runtime/node/node_int.h) and never has TPI_PID_REMOTE set. */
#define TPI_GEN_MASK 0xffffffu
/* A slot's generation is odd while an actor lives in it and even while it
 * is free: spawn and death each add one. */
static inline uint32_t tpi_gen_next(uint32_t gen)
{
    return (gen + 1) & TPI_GEN_MASK;
}
static inline uint32_t tpi_pid_index(tp_pid p) { return (uint32_t)p - 1u; }
static inline uint32_t tpi_pid_gen(tp_pid p) { return (uint32_t)(p >> 32); }
static inline tp_pid tpi_pid_make(uint32_t index, uint32_t gen)
{
    return ((tp_pid)gen << 32) | (tp_pid)(index + 1u);
}
/* a's current pid, live or not (relaxed: see the callers' own orders). */
static inline tp_pid tpi_actor_pid(tpi_actor *a)
{
    return atomic_load_explicit(&a->id, memory_order_relaxed);
}
/* The slot's generation, relaxed (a reader ordered otherwise). */
static inline uint32_t tpi_slot_gen(tpi_actor *a)
{
    return tpi_pid_gen(tpi_actor_pid(a));
}
/* acquire: pairs with the release of tpi_slot_set_gen, so a reader that
 * finds the actor live also sees it set up. */
static inline uint32_t tpi_slot_gen_acquire(tpi_actor *a)
{
    return tpi_pid_gen(atomic_load_explicit(&a->id, memory_order_acquire));
}
/* Does pid name the actor living in slot a, found by pid's index (so only
 * the generation can differ)? acquire, as tpi_slot_gen_acquire. */
static inline bool tpi_slot_is(tpi_actor *a, tp_pid pid)
{
    return atomic_load_explicit(&a->id, memory_order_acquire) == pid;
}
/* The slot's index in its table (set when the table made it). */
static inline uint32_t tpi_slot_index(tpi_actor *a)
{
    return tpi_pid_index(tpi_actor_pid(a));
}
/* A new generation for the slot: release, so that whoever reads it
 * (acquire) sees what the slot's owner did before (a spawn's set-up, a
 * death's end). */
static inline void tpi_slot_set_gen(tpi_actor *a, uint32_t gen)
{
    atomic_store_explicit(&a->id, tpi_pid_make(tpi_slot_index(a), gen),
                          memory_order_release);
}

/* ---- actors/table.c: slots (any thread) */

/* The slot of an empty send hint (runtime/runtime.h): its pid word is no
 * pid, so TP_PID_NONE, which such a hint holds, finds no actor there. */
extern tpi_actor tpi_no_slot;
typedef struct tpi_table tpi_table;
int tpi_table_new(tpi_table **out);
void tpi_table_free(tpi_table *t);
/* A magazine: free slots linked through free_next, head index + 1 (0 =
 * none), n of them. */
typedef struct tpi_slot_mag {
    uint32_t head, n;
} tpi_slot_mag;
/* A thread's stock of free slots (one per scheduler, owner thread only):
 * two magazines, as in Bonwick and Adams's magazine allocator
 * ("Magazines and Vmem", USENIX 2001); zero-initialised is empty. */
typedef struct tpi_slot_cache {
    tpi_slot_mag cur, spare;
} tpi_slot_cache;
/* A free slot (or a new one), or NULL when out of memory / slots; from c
 * first when given (NULL: the shared list only). */
tpi_actor *tpi_table_take(tpi_table *t, tpi_slot_cache *c);
void tpi_table_put(tpi_table *t, tpi_slot_cache *c, tpi_actor *a);
/* The slot for pid's index, or NULL if it was never allocated or pid's
 * generation is even (no pid carries one). It may hold another
 * generation: compare before use. */
tpi_actor *tpi_table_slot(tpi_table *t, tp_pid pid);
/* The slot at index (any state), or NULL if it was never allocated. */
tpi_actor *tpi_table_at(tpi_table *t, uint32_t index);
uint64_t tpi_table_slots(tpi_table *t);
/* Slot a's inline state block (TP_INLINE_STATE_MAX bytes, 16-aligned),
 * or NULL when out of memory. */
void *tpi_table_state(tpi_table *t, tpi_actor *a);
/* Slot a's cold fields, zero until set; NULL if none were made in its
 * chunk yet (make: make them; then NULL only when out of memory). */
tpi_slot_cold *tpi_table_cold(tpi_table *t, tpi_actor *a, bool make);
/* Visit every slot ever allocated (teardown). */
void tpi_table_each(tpi_table *t, void (*fn)(tpi_actor *, void *), void *arg);

/* ---- actors/msg.c */
/* A message with room for len payload bytes copied in (data may be NULL
 * to leave them for the caller). NULL on out of memory. */
tpi_msg *tpi_msg_new(int32_t tag, const void *data, size_t len);
void tpi_msg_free(tpi_msg *m);
/* ---- actors/node_cache.c: small message nodes, recycled by scheduler
 * threads only; the fast paths are inline (one thread-local list, no
 * atomic). */
/* The thread-local variables of every message's path (the node cache
 * below, the running scheduler) are initial-exec: one load at a fixed
 * offset from the thread pointer, where the default model of
 * position-independent code calls __tls_get_addr in the shared library.
 * They are a few words of static TLS, which glibc keeps room for even in a
 * dlopened library. */
#define TPI_TLS_FAST __attribute__((tls_model("initial-exec")))

#ifndef TPI_NO_POOL
#define TPI_NODE_CACHE_MAX 4096 /* nodes a thread keeps */
typedef struct tpi_node_cache {
    tpi_msg *head;
    unsigned n;
    /* TPI_NODE_CACHE_MAX on a scheduler thread that caches, until its
     * loop ends; 0 otherwise. One compare tells "keep it here". */
    unsigned lim;
} tpi_node_cache;
extern _Thread_local tpi_node_cache tpi_tls_nodes TPI_TLS_FAST;
/* From the depot, or NULL (always on a thread that does not cache). */
tpi_msg *tpi_node_refill(void);
/* Keep m's node; false if this thread does not cache (free it). */
bool tpi_node_put_slow(tpi_msg *m);

/* A node of this thread's cache (uninitialised), or NULL if it is empty. */
static inline tpi_msg *tpi_node_pop(void)
{
    tpi_node_cache *c = &tpi_tls_nodes;
    tpi_msg *m = c->head;
    if (!m)
        return NULL;
    /* relaxed: a thread-private list */
    c->head =
        (tpi_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
    c->n--;
    return m;
}

/* A cached node (uninitialised), or NULL: allocate one. */
static inline tpi_msg *tpi_node_get(void)
{
    tpi_msg *m = tpi_node_pop();
    return m ? m : tpi_node_refill();
}

/* Keep m's node for reuse; false if not cached (free it). */
static inline bool tpi_node_put(tpi_msg *m)
{
    tpi_node_cache *c = &tpi_tls_nodes;
    if (c->n >= c->lim)
        return tpi_node_put_slow(m);
    atomic_store_explicit(&m->node.next, (tpi_mpsc_node *)c->head,
                          memory_order_relaxed);
    c->head = m;
    c->n++;
    return true;
}
#else
static inline tpi_msg *tpi_node_pop(void) { return NULL; }
static inline tpi_msg *tpi_node_get(void) { return NULL; }
static inline bool tpi_node_put(tpi_msg *m)
{
    (void)m;
    return false;
}
#endif
/* tpi_msg_free of a message known to be a small node (not TPI_MSG_LARGE,
 * neither OWNED nor STATIC): kept here for reuse when this thread caches. */
static inline void tpi_msg_recycle(tpi_msg *m)
{
    if (!tpi_node_put(m))
        tpi_msg_free(m);
}

/* tpi_msg_free, with the common case inline: a small node kept here. */
static inline void tpi_msg_release(tpi_msg *m)
{
    if (!(m->flags & (TPI_MSG_LARGE | TPI_MSG_OWNED | TPI_MSG_STATIC)))
        tpi_msg_recycle(m);
    else
        tpi_msg_free(m);
}

/* Payloads up to this many bytes use one node size, recycled through the
 * per-thread caches (actors/node_cache.c). */
#define TPI_SMALL_PAYLOAD 48

/* A new message's header, for len bytes of payload in place (the caller
 * writes them, then inl[len] = '\0'). */
static inline void tpi_msg_init(tpi_msg *m, int32_t tag, uint32_t flags,
                                size_t len)
{
    *m = (tpi_msg){.tag = tag,
                   .flags = flags | (tag < 0 ? TPI_MSG_SYS : 0),
                   .len = len,
                   .data = len ? m->inl : NULL};
}

/* Where an int message keeps its value: after the widest packed int and
 * its terminating byte, 8-aligned (the header is). */
#define TPI_MSG_INT_AT 16
_Static_assert(TPI_MSG_INT_AT >= 10 && TPI_MSG_INT_AT % 8 == 0 &&
                   TPI_MSG_INT_AT + 8 <= TPI_SMALL_PAYLOAD,
               "an int message's value fits a small node, aligned");

/* A message whose payload is the msgpack int v, with the node cache
 * inline: every tp_send_int, tp_call_int and tp_reply_int. The value is
 * kept as it is (TPI_MSG_INT), and packed only when its bytes are asked
 * for (tpi_msg_bytes): tp_msg_int, the common way to read it, needs no
 * bytes at all. NULL when out of memory. */
static inline void tpi_msg_fill_int(tpi_msg *m, int32_t tag, int64_t v)
{
    tpi_msg_init(m, tag, TPI_MSG_INT, 0); /* not packed */
    memcpy(m->inl + TPI_MSG_INT_AT, &v, sizeof v);
}

/* Pack an int message's value into its payload (actors/msg.c). */
void tpi_msg_pack_int(tpi_msg *m);

/* m's payload bytes (m->data, m->len) are there: every reader of them
 * but tp_msg_int calls this first. Only m's holder reads or packs it. */
static inline void tpi_msg_bytes(tpi_msg *m)
{
    if ((m->flags & TPI_MSG_INT) && !m->len) /* a packed int is 1+ bytes */
        tpi_msg_pack_int(m);
}

static inline tpi_msg *tpi_msg_new_int(int32_t tag, int64_t v)
{
    tpi_msg *m = tpi_node_get();
    if (!m && !(m = tpi_msg_new(tag, NULL, 9)))
        return NULL;
    tpi_msg_fill_int(m, tag, v);
    return m;
}

/* Return this thread's cached message nodes to the allocator; it caches
 * no more until it runs a scheduler again. */
void tpi_msg_cache_flush(void);
/* And the nodes parked between threads (when no runtime is left). */
void tpi_msg_depot_flush(void);
/* A message carrying a reason [kind, code, text] as its payload. */
tpi_msg *tpi_msg_reason_new(int32_t tag, tp_reason r);
void tpi_msglist_push(tpi_msglist *l, tpi_msg *m);
tpi_msg *tpi_msglist_pop(tpi_msglist *l);
/* Owner thread: drop a's deferred messages (kept with TP_DEFER, or being
 * offered again) that cannot come any more: the DOWN of monitor ref
 * (timer false), the messages of timer ref (timer true). How many. */
int tpi_deferred_forget(tpi_actor *a, tp_ref ref, bool timer);
/* Prepend all of src to dst, emptying src. */
void tpi_msglist_prepend(tpi_msglist *dst, tpi_msglist *src);

/* ---- actors/actor.c */
tpi_actor_ext *tpi_actor_ext_get(tpi_actor *a); /* NULL on out of memory */
int tpi_spawn(tp_runtime *rt, tpi_actor *parent, tp_behavior b, void *state,
              const tp_spawn_opts *opts, tp_pid *pid_out);
/* Run one turn of a scheduled actor (scheduler thread). Returns a measure
 * of the work done: the messages taken from its mailbox, plus one. */
unsigned tpi_actor_turn(tpi_sched *s, tpi_actor *a);
/* Run m through a's filters (timers, pending replies, signals) and, if it
 * is still wanted, a's behavior, with s->cur set to a. Consumes m unless
 * the behavior deferred it (then a keeps it). */
void tpi_actor_dispatch(tpi_sched *s, tpi_actor *a, tpi_msg *m);
/* Owner thread, with TPI_ACT_REPLAY set: the next deferred message to
 * offer again (moved to the caller), the flag cleared when it was the
 * last. */
tpi_msg *tpi_actor_replay_pop(tpi_actor *a);
/* Free a's rarely used state (links, monitors, names, taken obligations:
 * no messages, timers or pending calls, which go first). */
void tpi_actor_release_ext(tpi_actor *a);
/* The reason a (exiting) ends with. */
tp_reason tpi_actor_exit_reason(tpi_actor *a);
/* Restart a's receive timeout (after a handled message), if it has one. */
void tpi_rto_rearm(tpi_actor *a);
/* Set the exit reason of a running actor (ends after its turn). */
void tpi_actor_set_exit(tpi_actor *a, tp_reason r);
/* A free slot's stray mail (pushed after its actor's last drain): dead
 * letters. Its home, or whoever claimed the slot. */
void tpi_actor_flush(tp_runtime *rt, tpi_actor *a);
/* End a spawned-but-never-run or still-live actor at teardown. */
void tpi_actor_teardown(tpi_actor *a, void *rt);
/* The actor running a behavior on this thread with this ctx, or NULL. */
tpi_actor *tpi_ctx_actor(tp_ctx *ctx);
/* Its scheduler (this thread's), or NULL. */
tpi_sched *tpi_ctx_sched(tp_ctx *ctx);

int tpi_resource_add(tpi_actor *a, tpi_resource *r); /* TP_ENOMEM */

/* ---- actors/remote.c */
/* Deliver m to a remote pid through the node service (or as a dead
 * letter). Consumes m. */
int tpi_remote_deliver(tp_runtime *rt, tp_pid to, tpi_msg *m);
/* An actor flagged TPI_ACT_ENDHOOK ended. */
void tpi_remote_ended(tp_runtime *rt, tp_pid pid);
/* The call (caller, ref) timed out: the node service keeps nothing for it. */
void tpi_remote_call_expired(tp_runtime *rt, tp_pid caller, tp_ref ref);
/* A scheduler thread starts (on) or ends a batch of turns: sends to remote
 * pids in between may leave together at its end (actors/remote.c). */
void tpi_remote_batch(tp_runtime *rt, bool on);

/* ---- actors/send.c */
/* Deliver m to pid. Ownership: m is consumed in every case. Returns 0, or
 * TP_EINVAL for a pid that can never be valid. A dead addressee makes m a
 * dead letter (answered as the signal requires). from_actor is the sending
 * actor (NULL from foreign threads); user sends may pause it. */
int tpi_deliver(tp_runtime *rt, tpi_actor *from_actor, tp_pid to, tpi_msg *m);
/* Handle a message whose addressee has ended. Consumes m. */
void tpi_dead_letter(tp_runtime *rt, tp_pid to, tpi_msg *m);
/* The same, for a message taken out of an ending actor's own mailbox:
 * links and monitors it asked for learn the real reason, not noproc. */
void tpi_dead_letter_why(tp_runtime *rt, tp_pid to, tpi_msg *m, tp_reason why);
/* End of a turn in which a send overfilled target: a (holding its
 * scheduling flag) is parked on target, or, if target drained meanwhile,
 * queued again. */
void tpi_pause(tp_runtime *rt, tpi_actor *a, tp_pid target);
/* a's mailbox went from >= capacity to below it, or a ended: resume the
 * actors paused on it and wake blocked foreign senders. */
void tpi_drained(tp_runtime *rt, tpi_actor *a);
/* Resume a paused actor (its own mailbox overflowed, or a signal came). */
void tpi_unpause(tp_runtime *rt, tpi_actor *a);
/* An exit signal m is taken out of a's mailbox (handled, or a dead
 * letter): uncounted (see tpi_pause). */
void tpi_exit_taken(tp_runtime *rt, tpi_actor *a, tpi_msg *m);
/* 0 if (data, len) may be sent: no payload, or one valid msgpack object
 * within max_payload; else TP_EINVAL or TP_E2BIG. */
int tpi_payload_valid(tp_runtime *rt, const void *data, size_t len);
/* Build a message from (data, len) for a send: copied, and validated
 * unless check is false (bytes our own packers made). On error nothing is
 * allocated. */
int tpi_msg_for_send(tp_runtime *rt, int32_t tag, const void *data, size_t len,
                     bool check, tpi_msg **out);
/* The same for a send by the actor behind ctx to `to` (*a_out: that
 * actor): TP_ESTATE outside a behavior, TP_EINVAL for no pid. */
int tpi_msg_for_ctx(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data,
                    size_t len, bool check, tpi_actor **a_out, tpi_msg **out);
/* tpi_msg_for_ctx for an int payload (tpi_msg_new_int), with the
 * scheduler running the ctx's actor (its s->cur). */
int tpi_int_for_ctx(tp_ctx *ctx, tp_pid to, int32_t tag, int64_t v,
                    tpi_sched **s_out, tpi_msg **out);
/* Send m (a user message, tag >= 0; consumed) from a, in its turn on this
 * thread, as tp_send does: from is a, counted as sent. */
int tpi_send_own(tpi_actor *a, tp_pid to, tpi_msg *m);
/* Send the reply m (TP_TAG_REPLY, its ref and status set; consumed) from
 * a, in its turn on this thread: not counted as sent, never a cause to
 * pause a. */
int tpi_reply_own(tpi_actor *a, tp_pid to, tpi_msg *m);

/* ---- actors/signal.c: links, monitors, exit signals */
/* Link a new (not yet run) child and its parent on the parent's thread. */
int tpi_link_spawned(tpi_actor *parent, tpi_actor *child);
/* Handle a signal tag addressed to a live actor; returns true if the
 * message must then be given to the behavior (EXIT for trappers, DOWN). */
bool tpi_signal_handle(tpi_actor *a, tpi_msg *m);
/* Deliver a reason-carrying signal or message (EXIT, DOWN). */
int tpi_send_reason(tp_runtime *rt, tp_pid from, tp_pid to, int32_t tag,
                    tp_reason r, tp_ref ref, uint32_t flags);
/* Announce a's death to links and monitors. */
void tpi_signal_death(tpi_actor *a, tp_reason r);

/* ---- actors/call.c */
/* True if a reply message matches a pending ref (removes it). */
bool tpi_pending_take(tpi_actor *a, tp_ref ref);
/* a's call ref was refused before it left (too big for a node's frames):
 * forget it, no answer will come. a's thread. */
void tpi_call_refused(tpi_actor *a, tp_ref ref);
/* After a behavior returned for m: answer TP_ENOREPLY if due. */
void tpi_reply_settle(tpi_actor *a, tpi_msg *m);
/* Answer every pending obligation of a dying actor with TP_ENOPROC. */
void tpi_replies_fail(tpi_actor *a);
void tpi_pending_free_all(tpi_actor *a);
/* Send a runtime-made reply (status) for (to, ref). */
void tpi_reply_status(tp_runtime *rt, tp_pid to, tp_ref ref, int status);

/* ---- actors/names.c */
typedef struct tpi_names tpi_names;
int tpi_names_new(tpi_names **out);
void tpi_names_free(tpi_names *n);
void tpi_names_release(tpi_names *n, const char *name, tp_pid pid);

/* ---- actors/payload.c */
int tpi_payload_check(const void *data, size_t len);
/* Read a payload that is exactly one msgpack int64; TP_EPROTO if not. */
int tpi_read_int(const void *data, size_t len, int64_t *out);
#endif
