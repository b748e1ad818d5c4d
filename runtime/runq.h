/*
 * A scheduler's local run queue: a plain FIFO of ready actors, touched only
 * by its own thread, plus the next slot. Inline, because a same-thread send
 * to an idle actor queues it: this is on every message's path.
 */
#ifndef TPI_RUNQ_H
#define TPI_RUNQ_H

#include "runtime/runtime.h"

#include <event2/event.h>

/* Turns in a row the next slot may take before the queue's head gets its
 * turn (see tpi_sched_queue_next). */
#define TPI_NEXT_RUNS_MAX 8

static inline void tpi_rq_push(tpi_sched *s, tpi_mpsc_node *n)
{
    s->rq_n++;
    /* relaxed: plain links of our own list (the type is shared with the
     * inject queue, whose links are atomic). */
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    if (s->rq_tail)
        atomic_store_explicit(&s->rq_tail->next, n, memory_order_relaxed);
    else
        s->rq_head = n;
    s->rq_tail = n;
}

/* The run event, made active: the batch runs in this loop iteration,
 * after the callbacks already active (those of the last poll). */
static inline void tpi_sched_kick(tpi_sched *s)
{
    if (!s->run_active) {
        s->run_active = true;
        event_active(s->run_ev, EV_TIMEOUT, 0);
    }
}

/* tpi_sched_ready on a's home thread s: to the tail. */
static inline void tpi_sched_queue(tpi_sched *s, tpi_actor *a)
{
    tpi_rq_push(s, &a->rq);
    tpi_sched_kick(s);
}

/* tpi_sched_queue for an actor made ready by the turn running on s (a
 * message to it, its spawn): the next slot (Go's runnext, Tokio's LIFO
 * slot). The first actor that a turn readies runs right after that turn,
 * at the queue's head; the others it readies go to the tail, in order, so
 * the actors one turn readies still start in the order it readied them.
 * An actor woken by a message finds what the message touched still in
 * cache, and a spawn tree is walked about depth-first, so replies are
 * consumed as they come instead of a whole level of the tree (and of its
 * messages) being alive at once. The slot may take next_max turns in a
 * row (rq_pop counts them); then the queue's head goes, so a pair passing
 * a message back and forth cannot starve the rest. The deterministic mode
 * keeps its seeded pick over plain FIFO (next_max 0). */
static inline void tpi_sched_queue_next(tpi_sched *s, tpi_actor *a)
{
    tpi_mpsc_node *n = &a->rq;
    tpi_mpsc_node *head = s->rq_head;
    /* Alone in the queue, it takes the slot whatever the count. The slot,
     * when full, is the head: nothing else goes there. */
    if (head && (s->rq_next || s->next_runs >= s->next_max)) {
        tpi_rq_push(s, n);
    } else {
        s->rq_n++;
        /* relaxed: plain links, as in tpi_rq_push */
        atomic_store_explicit(&n->next, head, memory_order_relaxed);
        if (!head)
            s->rq_tail = n;
        s->rq_head = n;
        s->rq_next = n;
    }
    tpi_sched_kick(s);
}

#endif
