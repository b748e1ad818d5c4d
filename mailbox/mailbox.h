/*
 * A mailbox: a plain FIFO for senders on the owner's home scheduler thread
 * (no atomic per message), a lock-free stack for every other thread, and
 * the owner's cross-thread notes.
 *
 * The owner's scheduling flag (sched, kept by the owner beside the
 * mailbox: actors/actor.h) is a plain field of the home thread: set by the
 * local push that finds the owner idle (that pusher queues it), kept
 * while it is queued, running, paused or has deferred messages to replay,
 * and cleared by the home at the end of a turn that leaves nothing to do.
 * Neither costs an atomic read-modify-write.
 *
 * Other threads push onto the remote stack (newest first, one pointer; the
 * home takes all of it at once and reverses it into the FIFO). A remote
 * push that finds the stack empty must tell the home, which may be idle:
 * it adds a note (tpi_mailbox_note) and, if it was the first, hands the
 * owner to the home's inject queue (runtime/sched.c). The invariant that
 * makes this enough: while the stack is not empty, the owner is scheduled
 * (its home checks the stack before it clears sched) or a note is
 * pending. The home reads the stack, then clears sched: both plain, as a
 * push that comes after the read finds the stack as the home left it,
 * empty, and notes. One location, so no fence is needed.
 *
 * Per-sender FIFO holds because a sender uses one side for a receiver as
 * long as neither moves to another thread, the home moves remote messages
 * into the local FIFO in push order, and a local push first moves any
 * remote messages in (a sender or receiver that moved may have left some
 * there). The mailbox knows nothing of actors.
 *
 * The count (what capacity is checked against) is local + remote, modulo
 * 2^32. remote counts every remote message ever announced and is never
 * lowered; local is the home thread's pushes minus every pop, remote ones
 * included (so it wraps below zero). Moving remote messages into the local
 * FIFO changes neither: a reader can never see a moving message counted
 * twice or not at all. A remote push is announced (counted) before it is
 * queued, and a foreign sender that must respect the capacity reserves its
 * place with a compare-and-swap on remote, which only ever grows, so it
 * cannot be fooled by a value that went away and came back.
 */
#ifndef TPI_MAILBOX_H
#define TPI_MAILBOX_H

#include "mailbox/mpscq.h"

#include <stdbool.h>
#include <stdint.h>

#define TPI_MAILBOX_UNBOUNDED UINT32_MAX
/* notes: a transfer of the scheduling duty (the sender holds sched and
 * the owner must be queued on its home); the low bits count mail notes. */
#define TPI_NOTE_READY (1u << 31)

typedef struct tpi_mailbox {
    /* Local FIFO, home thread: circular, ltail->next is the oldest (one
     * pointer per mailbox instead of two). NULL when empty. */
    tpi_mpsc_node *ltail;
    _Atomic(tpi_mpsc_node *) rstack; /* remote pushes, newest first */
    _Atomic uint32_t local;  /* home pushes - all pops; one writer (home) */
    _Atomic uint32_t remote; /* remote messages ever announced */
    /* TPI_MAILBOX_UNBOUNDED: no bound. Set at spawn; senders read it even
     * as the slot changes owners (tpi_mailbox_cap). */
    _Atomic uint32_t capacity;
    _Atomic uint32_t notes; /* pending cross-thread notes (see above) */
} tpi_mailbox;

static inline void tpi_mailbox_init(tpi_mailbox *mb, uint32_t capacity)
{
    mb->ltail = NULL;
    atomic_init(&mb->rstack, NULL);
    atomic_init(&mb->local, 0);
    atomic_init(&mb->remote, 0);
    atomic_init(&mb->capacity, capacity);
    atomic_init(&mb->notes, 0);
}

/* relaxed: a bound set at spawn; the counts carry their own ordering. */
static inline uint32_t tpi_mailbox_cap(tpi_mailbox *mb)
{
    return atomic_load_explicit(&mb->capacity, memory_order_relaxed);
}

/* Home thread: are remote messages waiting that are not in the local FIFO
 * yet? relaxed: the stack is one location, so a push this load misses
 * found it as the home left it (empty, after a take) and notes the home;
 * our own earlier remote pushes, and those of a sender that moved to this
 * thread, are ordered before it by that move (the release and acquire of
 * the actor's home). */
static inline bool tpi_mailbox_remote_waiting(tpi_mailbox *mb)
{
    return atomic_load_explicit(&mb->rstack, memory_order_relaxed) != NULL;
}

/* Home thread: is the local FIFO empty? */
static inline bool tpi_mailbox_local_empty(tpi_mailbox *mb)
{
    return !mb->ltail;
}

/* Home thread: the chain first..last (linked through next, last's next
 * unset) at the end of the local FIFO. */
static inline void tpi_mailbox_splice(tpi_mailbox *mb, tpi_mpsc_node *first,
                                      tpi_mpsc_node *last)
{
    tpi_mpsc_node *t = mb->ltail;
    /* relaxed: home-thread links (atomic only as remote pushers see the
     * same nodes' field). */
    atomic_store_explicit(&last->next,
                          t ? atomic_load_explicit(&t->next,
                                                   memory_order_relaxed)
                            : first,
                          memory_order_relaxed);
    if (t)
        atomic_store_explicit(&t->next, first, memory_order_relaxed);
    mb->ltail = last;
}

/* Home thread: n at the end of the local FIFO. */
static inline void tpi_mailbox_append(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    tpi_mailbox_splice(mb, n, n);
}

/* Home thread: move the remote messages pushed so far to the local FIFO,
 * oldest first; returns how many. The counts do not change. */
static inline uint32_t tpi_mailbox_take_remote(tpi_mailbox *mb)
{
    if (!tpi_mailbox_remote_waiting(mb))
        return 0;
    /* acquire: pairs with the release of each push, so the nodes'
     * contents are visible. */
    tpi_mpsc_node *n =
        atomic_exchange_explicit(&mb->rstack, NULL, memory_order_acquire);
    tpi_mpsc_node *first = NULL, *last = n;
    uint32_t k = 0;
    while (n) { /* reverse: newest first becomes oldest first */
        tpi_mpsc_node *next =
            atomic_load_explicit(&n->next, memory_order_relaxed);
        atomic_store_explicit(&n->next, first, memory_order_relaxed);
        first = n;
        n = next;
        k++;
    }
    if (!first)
        return 0;
    tpi_mailbox_splice(mb, first, last);
    return k;
}

/* tpi_mailbox_take_remote, not inlined (for a local pusher that finds
 * remote messages waiting: rare). */
static __attribute__((noinline, cold, unused)) void
tpi_mailbox_take_remote_cold(tpi_mailbox *mb)
{
    tpi_mailbox_take_remote(mb);
}

/* Home thread only, when no remote message waits: remote messages queued
 * before this push must go first (tpi_mailbox_take_remote), or a sender
 * that changed sides would see its messages overtake each other. Then the
 * caller queues the owner if it was idle. Returns the new local count
 * (see tpi_mailbox_count_home). */
static inline uint32_t tpi_mailbox_push_local(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    tpi_mailbox_append(mb, n);
    /* relaxed load and store: the home thread is the only writer, and a
     * reader that sees the new message early or late only over- or
     * under-counts by a message that really was pushed. */
    uint32_t local = atomic_load_explicit(&mb->local, memory_order_relaxed) + 1;
    atomic_store_explicit(&mb->local, local, memory_order_relaxed);
    return local;
}

/* Any thread, after a successful tpi_mailbox_reserve (or the increment in
 * tpi_mailbox_push_remote): push n, which is already counted. Returns
 * true if the stack was empty: the caller must note the home
 * (tpi_mailbox_note with 1). */
static inline bool tpi_mailbox_push_reserved(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    tpi_mpsc_node *old =
        atomic_load_explicit(&mb->rstack, memory_order_relaxed);
    do
        atomic_store_explicit(&n->next, old, memory_order_relaxed);
    /* release: publishes n's contents (and older pushes of ours) to the
     * home's acquire exchange. Only the home removes nodes, all at once,
     * so a node reused meanwhile (ABA) is harmless: n->next is exactly
     * the head we replace. */
    while (!atomic_compare_exchange_weak_explicit(&mb->rstack, &old, n,
                                                  memory_order_release,
                                                  memory_order_relaxed));
    return old == NULL;
}

/* Any thread. Returns true if the caller must note the home. */
static inline bool tpi_mailbox_push_remote(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    /* seq_cst: counted before it is queued, and before the pusher reads
     * the counts and the owner's pause flag (actors/send.c pairs with
     * that). */
    atomic_fetch_add(&mb->remote, 1);
    return tpi_mailbox_push_reserved(mb, n);
}

/* Any thread: add a note (1 for mail, TPI_NOTE_READY for a transfer of
 * the scheduling duty). True if none was pending: the caller must hand
 * the owner to its home's inject queue, which then handles the notes
 * (tpi_mailbox_notes_done). acq_rel: the release publishes our push (or
 * the state we hand over) to the home's acquire of the notes; the
 * acquire orders us after an earlier note's handling. */
static inline bool tpi_mailbox_note(tpi_mailbox *mb, uint32_t note)
{
    uint32_t old =
        note == TPI_NOTE_READY
            ? atomic_fetch_or_explicit(&mb->notes, note, memory_order_acq_rel)
            : atomic_fetch_add_explicit(&mb->notes, note, memory_order_acq_rel);
    return old == 0;
}

/* Home thread handling the notes: those pending (acquire: pairs with the
 * release of tpi_mailbox_note, so the pushes and hand-overs they announce
 * are visible). */
static inline uint32_t tpi_mailbox_notes(tpi_mailbox *mb)
{
    return atomic_load_explicit(&mb->notes, memory_order_acquire);
}

/* Home thread: the notes *seen were handled; clear them. False, with *seen
 * updated, if more came meanwhile (handle those too, then call again).
 * acq_rel: as tpi_mailbox_note; a failed one acquires the newer notes. */
static inline bool tpi_mailbox_notes_done(tpi_mailbox *mb, uint32_t *seen)
{
    return atomic_compare_exchange_strong_explicit(&mb->notes, seen, 0,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire);
}

/* Home thread: does the local FIFO hold exactly one message? */
static inline bool tpi_mailbox_local_one(tpi_mailbox *mb)
{
    tpi_mpsc_node *t = mb->ltail;
    /* relaxed: home-thread links */
    return t && atomic_load_explicit(&t->next, memory_order_relaxed) == t;
}

/* Consumer: one message left the local FIFO. */
static inline void tpi_mailbox_popped(tpi_mailbox *mb)
{
    /* release (a plain store on x86): pairs with the loads of local
     * (acquire) in tpi_mailbox_count and tpi_mailbox_read, so a reader
     * that sees this pop also sees the announcement of a remote message
     * it removes: it never counts that message out without in. */
    atomic_store_explicit(&mb->local,
                          atomic_load_explicit(&mb->local,
                                               memory_order_relaxed) -
                              1,
                          memory_order_release);
}

/* Consumer: the oldest local message, or NULL. */
static inline tpi_mpsc_node *tpi_mailbox_pop(tpi_mailbox *mb)
{
    tpi_mpsc_node *t = mb->ltail;
    if (!t)
        return NULL;
    tpi_mpsc_node *n = atomic_load_explicit(&t->next, memory_order_relaxed);
    if (n == t)
        mb->ltail = NULL;
    else
        atomic_store_explicit(&t->next,
                              atomic_load_explicit(&n->next,
                                                   memory_order_relaxed),
                              memory_order_relaxed);
    tpi_mailbox_popped(mb);
    return n;
}

/* Consumer, when tpi_mailbox_local_one: that message. */
static inline tpi_mpsc_node *tpi_mailbox_pop_last(tpi_mailbox *mb)
{
    tpi_mpsc_node *n = mb->ltail;
    mb->ltail = NULL;
    tpi_mailbox_popped(mb);
    return n;
}

/* Messages waiting, local and remote, announced remote pushes included:
 * local, then remote. Exact on the home thread (the only writer of local).
 * From another thread never too low, even as messages move between the
 * queues; it may be too high by the messages popped while it reads (a
 * thread stalled between the two loads), so a decision that puts someone
 * to sleep until the mailbox drains takes tpi_mailbox_count_exact. */
static inline uint32_t tpi_mailbox_count(tpi_mailbox *mb)
{
    /* seq_cst loads (plain loads on x86, the same instruction as acquire
     * on AArch64). Acquire pairs with the release store of a pop: a
     * reader that sees a remote message popped also sees it announced.
     * seq_cst puts them after the caller's own seq_cst operations in the
     * single total order, which the backpressure handshakes need (a
     * blocked foreign sender's registration against the fence of
     * tpi_drained, actors/send.c). */
    uint32_t l = atomic_load(&mb->local);
    return l + atomic_load(&mb->remote);
}

/* tpi_mailbox_count on the home thread, which knows local (the value
 * its last push returned): no reload of the value it just stored. */
static inline uint32_t tpi_mailbox_count_home(tpi_mailbox *mb, uint32_t local)
{
    return local + atomic_load(&mb->remote); /* seq_cst: as above */
}

/* The count as one value: local, then remote, then local again, until
 * local has not moved in between. Then the sum lies between two counts
 * the mailbox really had while the call ran, so it is one of the counts it
 * had (they move by one): never too low, never too high. *remote_out: the
 * value of remote it used. */
static inline uint32_t tpi_mailbox_read(tpi_mailbox *mb, uint32_t *remote_out)
{
    uint32_t l, r;
    do {
        /* seq_cst: as in tpi_mailbox_count. */
        l = atomic_load(&mb->local);
        r = atomic_load(&mb->remote);
        /* relaxed: ordered after the load of remote by its acquire. */
    } while (l != atomic_load_explicit(&mb->local, memory_order_relaxed));
    *remote_out = r;
    return l + r;
}

/* The count, never too low nor too high (tpi_mailbox_read). */
static inline uint32_t tpi_mailbox_count_exact(tpi_mailbox *mb)
{
    uint32_t r;
    return tpi_mailbox_read(mb, &r);
}

/* Any thread: count one more remote message, but only if that leaves the
 * mailbox within its capacity. On true the caller must queue exactly one
 * message with tpi_mailbox_push_reserved; on false nothing changed.
 * Concurrent reservations never take the count over the capacity
 * together: each one's compare-and-swap fails if remote moved after the
 * count it checked. Home-thread pushes are not reservations and may. */
static inline bool tpi_mailbox_reserve(tpi_mailbox *mb)
{
    uint32_t cap = tpi_mailbox_cap(mb);
    for (;;) {
        uint32_t r, count = tpi_mailbox_read(mb, &r);
        if (cap != TPI_MAILBOX_UNBOUNDED && (uint64_t)count + 1 > cap)
            return false;
        /* seq_cst, as the increment of tpi_mailbox_push_remote. Since we
         * read local before remote, and local only drops without home
         * pushes, the count is still at most what we checked. */
        if (atomic_compare_exchange_weak(&mb->remote, &r, r + 1))
            return true;
    }
}

#endif
