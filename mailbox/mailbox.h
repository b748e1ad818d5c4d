/*
 * A mailbox: a plain FIFO for senders on the owner's home scheduler thread
 * (no atomic per message) and a lock-free MPSC queue for every other
 * thread, plus the owner's scheduling flag.
 *
 * The flag is held by whoever is responsible for running the owner: set
 * by the push that finds the owner idle (that pusher queues it), kept
 * while it is queued, running, paused or has deferred messages to replay,
 * and cleared by the owner's scheduler at the end of a turn that leaves
 * nothing to do — which then looks at the remote queue again, because a
 * remote push may have raced the clear. So exactly one party ever queues
 * it.
 *
 * Per-sender FIFO holds because a sender uses one queue for a receiver as
 * long as neither moves to another thread, the consumer moves remote
 * messages into the local FIFO in their queue order, and a local push
 * first moves any remote messages in (a sender or receiver that moved may
 * have left some there). The mailbox knows nothing of actors.
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

typedef struct tpi_mailbox {
    tpi_mpsc_node *lhead, *ltail; /* local FIFO: home thread only */
    tpi_mpscq q;                  /* remote senders */
    _Atomic uint32_t local;  /* home pushes - all pops; one writer (home) */
    _Atomic uint32_t remote; /* remote messages ever announced */
    _Atomic uint32_t
        scheduled; /* 1 while someone is responsible for the owner */
    /* TPI_MAILBOX_UNBOUNDED: no bound. Set at spawn; senders read it even
     * as the slot changes owners (tpi_mailbox_cap). */
    _Atomic uint32_t capacity;
} tpi_mailbox;

static inline void tpi_mailbox_init(tpi_mailbox *mb, uint32_t capacity)
{
    mb->lhead = mb->ltail = NULL;
    tpi_mpscq_init(&mb->q);
    atomic_init(&mb->local, 0);
    atomic_init(&mb->remote, 0);
    atomic_init(&mb->scheduled, 0);
    atomic_init(&mb->capacity, capacity);
}

/* relaxed: a bound set at spawn; the counts carry their own ordering. */
static inline uint32_t tpi_mailbox_cap(tpi_mailbox *mb)
{
    return atomic_load_explicit(&mb->capacity, memory_order_relaxed);
}

/* Claim the duty to queue the owner; true if the caller must queue it. */
static inline bool tpi_mailbox_claim(tpi_mailbox *mb)
{
    /* relaxed pre-check: a set flag stays set until its holder clears it
     * on this mailbox's home thread (or the holder is us). The exchange
     * is seq_cst: it pairs with the clear in tpi_mailbox_release. */
    return !atomic_load_explicit(&mb->scheduled, memory_order_relaxed) &&
           !atomic_exchange(&mb->scheduled, 1);
}

/* Home thread: are remote messages queued that are not in the local FIFO
 * yet? An estimate (relaxed); tpi_mailbox_release decides for good. */
static inline bool tpi_mailbox_remote_waiting(tpi_mailbox *mb)
{
    /* Between two calls of tpi_mailbox_take_remote only pushers move the
     * queue's head, and that call leaves it at the stub only when nothing
     * is queued: one load tells. relaxed: our own earlier remote pushes,
     * and those of a sender that moved to this thread, are ordered before
     * this load by that move (the release and acquire of the actor's
     * home). */
    return atomic_load_explicit(&mb->q.head, memory_order_relaxed) !=
           &mb->q.stub;
}

static inline uint32_t tpi_mailbox_take_remote(tpi_mailbox *mb);
static __attribute__((noinline, cold, unused)) void
tpi_mailbox_take_remote_cold(tpi_mailbox *mb);

/* Home thread: n at the end of the local FIFO. */
static inline void tpi_mailbox_append(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    if (mb->ltail)
        atomic_store_explicit(&mb->ltail->next, n, memory_order_relaxed);
    else
        mb->lhead = n;
    mb->ltail = n;
}

/* Home thread only. Returns true if the caller must queue the owner. */
static inline bool tpi_mailbox_push_local(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    /* Remote messages queued before this push go first, or a sender that
     * changed sides would see its messages overtake each other. Rare: out
     * of line, so the senders' path stays small. */
    if (tpi_mailbox_remote_waiting(mb))
        tpi_mailbox_take_remote_cold(mb);
    tpi_mailbox_append(mb, n);
    /* relaxed load and store: the home thread is the only writer, and a
     * reader that sees the new message early or late only over- or
     * under-counts by a message that really was pushed. */
    atomic_store_explicit(&mb->local,
                          atomic_load_explicit(&mb->local,
                                               memory_order_relaxed) +
                              1,
                          memory_order_relaxed);
    return tpi_mailbox_claim(mb);
}

/* Any thread, after a successful tpi_mailbox_reserve (or the increment in
 * tpi_mailbox_push_remote): queue n, which is already counted. Returns
 * true if the caller must queue the owner. */
static inline bool tpi_mailbox_push_reserved(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    tpi_mpscq_push(&mb->q, n);
    /* seq_cst load after the queue's seq_cst exchange: pairs with the
     * seq_cst clear then read of the queue in tpi_mailbox_release, so
     * either we see the flag clear (and claim it) or the releaser sees
     * our node (and claims it again). */
    return !atomic_load(&mb->scheduled) && !atomic_exchange(&mb->scheduled, 1);
}

/* Any thread. Returns true if the caller must queue the owner. */
static inline bool tpi_mailbox_push_remote(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    /* seq_cst: counted before it is queued (the consumer waits for the
     * link of a node it knows is coming, tpi_mpscq_pop_known), and before
     * the pusher reads the counts and the owner's pause flag
     * (actors/send.c pairs with that). */
    atomic_fetch_add(&mb->remote, 1);
    return tpi_mailbox_push_reserved(mb, n);
}

/* Consumer: move the remote messages queued so far to the local FIFO, in
 * order; returns how many. Those queued meanwhile wait for the next call,
 * so a stream of remote pushes cannot keep the consumer here. The counts
 * do not change. */
static inline uint32_t tpi_mailbox_take_remote(tpi_mailbox *mb)
{
    tpi_mpscq *q = &mb->q;
    /* acquire: the newest node pushed so far; it and every older one are
     * linked (or about to be: pop_known waits) in front of it. The stub:
     * nothing is queued (see the end). */
    tpi_mpsc_node *last = atomic_load_explicit(&q->head, memory_order_acquire);
    if (last == &q->stub)
        return 0;
    /* last is still queued: only this consumer pops, and a pop that takes
     * the newest node first requeues the stub behind it. */
    uint32_t n = 0;
    tpi_mpsc_node *node;
    do {
        node = tpi_mpscq_pop_known(q);
        tpi_mailbox_append(mb, node);
        n++;
    } while (node != last);
    /* Taking last may have requeued the stub behind a node pushed at that
     * moment. While the stub is the newest, take the nodes in front of
     * it, so that we never leave the head at the stub with a node
     * queued: tpi_mailbox_remote_waiting reads the head alone. acquire:
     * as above. */
    while (q->tail != &q->stub &&
           atomic_load_explicit(&q->head, memory_order_acquire) == &q->stub) {
        tpi_mailbox_append(mb, tpi_mpscq_pop_known(q));
        n++;
    }
    return n;
}

/* tpi_mailbox_take_remote, not inlined (for tpi_mailbox_push_local). */
static __attribute__((noinline, cold, unused)) void
tpi_mailbox_take_remote_cold(tpi_mailbox *mb)
{
    tpi_mailbox_take_remote(mb);
}

/* Consumer: the oldest local message, or NULL. */
static inline tpi_mpsc_node *tpi_mailbox_pop(tpi_mailbox *mb)
{
    tpi_mpsc_node *n = mb->lhead;
    if (!n)
        return NULL;
    mb->lhead = atomic_load_explicit(&n->next, memory_order_relaxed);
    if (!mb->lhead)
        mb->ltail = NULL;
    /* release (a plain store on x86): pairs with the loads of local
     * (acquire) in tpi_mailbox_count and tpi_mailbox_read, so a reader
     * that sees this pop also sees the announcement of a remote message
     * it removes: it never counts that message out without in. */
    atomic_store_explicit(&mb->local,
                          atomic_load_explicit(&mb->local,
                                               memory_order_relaxed) -
                              1,
                          memory_order_release);
    return n;
}

/* Consumer, holding the flag with nothing left to do: give it up. Returns
 * true if a remote push raced us and the caller must queue the owner
 * again (it holds the flag once more). */
static inline bool tpi_mailbox_release(tpi_mailbox *mb)
{
    /* seq_cst clear, then seq_cst read of the queue's head (enough, as in
     * tpi_mailbox_remote_waiting): pairs with the exchange then flag read
     * of tpi_mailbox_push_reserved. */
    atomic_store(&mb->scheduled, 0);
    return atomic_load(&mb->q.head) != &mb->q.stub && tpi_mailbox_claim(mb);
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
