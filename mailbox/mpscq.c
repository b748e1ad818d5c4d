#include "mailbox/mpscq.h"

#include <sched.h>
#include <stdbool.h>

void tpi_mpscq_init(tpi_mpscq *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

tpi_mpsc_status tpi_mpscq_pop(tpi_mpscq *q, tpi_mpsc_node **out)
{
    tpi_mpsc_node *tail = q->tail;
    /* acquire: pairs with the release store of next in push, so the
     * node's payload written before the push is visible. */
    tpi_mpsc_node *next =
        atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (next == NULL)
            return atomic_load_explicit(&q->head, memory_order_acquire) ==
                           &q->stub
                       ? TPI_MPSC_EMPTY
                       : TPI_MPSC_BUSY;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        *out = tail;
        return TPI_MPSC_OK;
    }
    /* tail is the last linked node; if head moved past it a producer is
     * between its exchange and its link. */
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return TPI_MPSC_BUSY;
    /* Re-insert the stub so tail can be handed out without emptying the
     * queue's last link. */
    tpi_mpscq_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        *out = tail;
        return TPI_MPSC_OK;
    }
    return TPI_MPSC_BUSY;
}

static tpi_mpsc_node *pop_spin(tpi_mpscq *q, bool empty_is_final)
{
    tpi_mpsc_node *n;
    for (unsigned spins = 0;; spins++) {
        tpi_mpsc_status st = tpi_mpscq_pop(q, &n);
        if (st == TPI_MPSC_OK)
            return n;
        if (st == TPI_MPSC_EMPTY && empty_is_final)
            return NULL;
        /* The producer is a few instructions from done unless it was
         * preempted; yield after a short spin. */
        if (spins > 64)
            sched_yield();
    }
}

tpi_mpsc_node *tpi_mpscq_pop_wait(tpi_mpscq *q) { return pop_spin(q, true); }

tpi_mpsc_node *tpi_mpscq_pop_known(tpi_mpscq *q) { return pop_spin(q, false); }
