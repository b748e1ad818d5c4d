/*
 * Intrusive lock-free multi-producer single-consumer FIFO (Vyukov).
 *
 * push is one atomic exchange plus one release store and never fails or
 * allocates. pop is consumer-only. Between a producer's exchange and its
 * store the queue is briefly "inconsistent": pop then reports BUSY and the
 * consumer retries; callers that know a message is there (the mailbox
 * count says so) spin until the link appears.
 */
#ifndef TPI_MPSCQ_H
#define TPI_MPSCQ_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct tpi_mpsc_node {
    _Atomic(struct tpi_mpsc_node *) next;
} tpi_mpsc_node;

typedef struct tpi_mpscq {
    _Atomic(tpi_mpsc_node *) head; /* producers exchange here */
    tpi_mpsc_node *tail;           /* consumer-private */
    tpi_mpsc_node stub;
} tpi_mpscq;

typedef enum { TPI_MPSC_OK, TPI_MPSC_EMPTY, TPI_MPSC_BUSY } tpi_mpsc_status;

void tpi_mpscq_init(tpi_mpscq *q);

/* Any thread: push the nodes first..last, already linked through next
 * (each link written before this call), as one. */
static inline void tpi_mpscq_push_chain(tpi_mpscq *q, tpi_mpsc_node *first,
                                        tpi_mpsc_node *last)
{
    atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
    /* seq_cst: release publishes the nodes' contents to the consumer that
     * later acquires them through prev->next; acquire orders us after the
     * producer that linked prev; and a scheduler's inject pusher's later
     * exchange of wake_pending pairs with the loop's seq_cst clear then
     * read of the queue (runtime/sched.c). The same instruction as acq_rel
     * on x86 and AArch64. */
    tpi_mpsc_node *prev = atomic_exchange(&q->head, last);
    /* release: pairs with the acquire load of next in tpi_mpscq_pop; it
     * also publishes the chain's inner links. */
    atomic_store_explicit(&prev->next, first, memory_order_release);
}

/* Any thread. The node must not be in any queue. */
static inline void tpi_mpscq_push(tpi_mpscq *q, tpi_mpsc_node *n)
{
    tpi_mpscq_push_chain(q, n, n);
}

/* Consumer only. On TPI_MPSC_OK *out is the oldest node. */
tpi_mpsc_status tpi_mpscq_pop(tpi_mpscq *q, tpi_mpsc_node **out);

/* Consumer only: pop, spinning over the brief BUSY window. Returns NULL
 * only when the queue is empty. */
tpi_mpsc_node *tpi_mpscq_pop_wait(tpi_mpscq *q);

/* Consumer only: pop a node the caller knows is coming (a producer has
 * announced it, e.g. in a count, but may not have pushed it yet). */
tpi_mpsc_node *tpi_mpscq_pop_known(tpi_mpscq *q);

#endif
