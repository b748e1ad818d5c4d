/*
 * A mailbox: a plain FIFO for senders on the owner's home scheduler thread
 * (no atomic per message) and a lock-free MPSC queue for every other
 * thread, plus the owner's scheduling flag.
 *
 * The flag is held by whoever is responsible for running the owner: set
 * by the push that finds the owner idle (that pusher queues it), kept
 * while it is queued, running, paused or has deferred messages to replay,
 * and cleared by the owner's scheduler at the end of a turn that leaves
 * nothing to do — which then re-checks the remote count, because a remote
 * push may have raced the clear. So exactly one party ever queues it.
 *
 * Per-sender FIFO holds because a sender uses one queue for a receiver as
 * long as neither moves to another thread, the consumer moves remote
 * messages into the local FIFO in their queue order, and a local push
 * first moves any remote messages in (a sender or receiver that moved may
 * have left some there). The mailbox knows nothing of actors.
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
    _Atomic uint32_t lcount;      /* local messages; one writer (home) */
    _Atomic uint32_t rcount;      /* remote messages announced */
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
    atomic_init(&mb->lcount, 0);
    atomic_init(&mb->rcount, 0);
    atomic_init(&mb->scheduled, 0);
    atomic_init(&mb->capacity, capacity);
}

/* relaxed: a bound for estimates (see tpi_mailbox_count). */
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

static inline uint32_t tpi_mailbox_take_remote(tpi_mailbox *mb);

/* Home thread only. Returns true if the caller must queue the owner. */
static inline bool tpi_mailbox_push_local(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    /* relaxed: our own earlier remote pushes (made before the owner or we
     * moved to this thread) are ordered before this load by that move. If
     * any are queued they go first, or a sender that changed sides would
     * see its messages overtake each other. */
    if (atomic_load_explicit(&mb->rcount, memory_order_relaxed))
        tpi_mailbox_take_remote(mb);
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    if (mb->ltail)
        atomic_store_explicit(&mb->ltail->next, n, memory_order_relaxed);
    else
        mb->lhead = n;
    mb->ltail = n;
    /* relaxed load and store: the home thread is the only writer; other
     * threads read it as an estimate for capacity checks. */
    atomic_store_explicit(&mb->lcount,
                          atomic_load_explicit(&mb->lcount,
                                               memory_order_relaxed) +
                              1,
                          memory_order_relaxed);
    return tpi_mailbox_claim(mb);
}

/* Any thread. Returns true if the caller must queue the owner. */
static inline bool tpi_mailbox_push_remote(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    /* seq_cst: announced before the flag is read, pairing with the clear
     * then re-read in tpi_mailbox_release (one of the two sees the other).
     * The count rises before the node is linked; the consumer waits for
     * the link (tpi_mpscq_pop_known). */
    uint32_t old = atomic_fetch_add(&mb->rcount, 1);
    tpi_mpscq_push(&mb->q, n);
    return old == 0 && tpi_mailbox_claim(mb);
}

/* Consumer: move announced remote messages to the local FIFO, in order;
 * returns how many. */
static inline uint32_t tpi_mailbox_take_remote(tpi_mailbox *mb)
{
    /* acquire: pairs with the pushers' increment. */
    uint32_t n = atomic_load_explicit(&mb->rcount, memory_order_acquire);
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        tpi_mpsc_node *node = tpi_mpscq_pop_known(&mb->q);
        atomic_store_explicit(&node->next, NULL, memory_order_relaxed);
        if (mb->ltail)
            atomic_store_explicit(&mb->ltail->next, node, memory_order_relaxed);
        else
            mb->lhead = node;
        mb->ltail = node;
    }
    /* seq_cst: a pusher that now finds 0 claims the flag, which we hold
     * until tpi_mailbox_release re-reads this count. Subtracted before
     * lcount grows, so tpi_mailbox_count never reads high: a blocked
     * sender must only ever see counts the consumer will also see. */
    atomic_fetch_sub(&mb->rcount, n);
    atomic_store_explicit(&mb->lcount,
                          atomic_load_explicit(&mb->lcount,
                                               memory_order_relaxed) +
                              n,
                          memory_order_relaxed);
    return n;
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
    atomic_store_explicit(&mb->lcount,
                          atomic_load_explicit(&mb->lcount,
                                               memory_order_relaxed) -
                              1,
                          memory_order_relaxed);
    return n;
}

/* Consumer, holding the flag with nothing left to do: give it up. Returns
 * true if a remote push raced us and the caller must queue the owner
 * again (it holds the flag once more). */
static inline bool tpi_mailbox_release(tpi_mailbox *mb)
{
    /* seq_cst clear, then seq_cst read: pairs with push_remote. */
    atomic_store(&mb->scheduled, 0);
    return atomic_load(&mb->rcount) > 0 && tpi_mailbox_claim(mb);
}

/* Messages waiting, local and remote: an estimate from other threads. */
static inline uint32_t tpi_mailbox_count(tpi_mailbox *mb)
{
    /* relaxed: capacity checks; a race makes a send pause one message
     * early or late, never loses one. */
    return atomic_load_explicit(&mb->lcount, memory_order_relaxed) +
           atomic_load_explicit(&mb->rcount, memory_order_relaxed);
}

#endif
