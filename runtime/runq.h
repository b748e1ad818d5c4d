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

static inline __attribute__((always_inline)) void tpi_rq_push(tpi_sched *s,
                                                              tpi_mpsc_node *n)
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
 * slot), which runs before the queue's head. The first actor that a turn
 * readies runs right after that turn; the others it readies go to the
 * tail, in order, so the actors one turn readies still start in the order
 * it readied them. An actor woken by a message finds what the message
 * touched still in cache, and a spawn tree is walked about depth-first, so
 * replies are consumed as they come instead of a whole level of the tree
 * (and of its messages) being alive at once. The slot may take next_max
 * turns in a row while others wait (rq_pop counts them); then the queue's
 * head goes, so a pair passing a message back and forth cannot starve the
 * rest. The deterministic mode keeps its seeded pick over plain FIFO
 * (next_max 0: the slot holds an actor only while the queue is empty).
 * This part queues it; the run event of a running batch is active
 * already (tpi_sched_queue_next makes it so otherwise). */
static inline __attribute__((always_inline)) void
tpi_sched_queue_next_running(tpi_sched *s, tpi_actor *a)
{
    /* Alone, it takes the slot whatever the count. */
    if (!s->rq_slot && (!s->rq_head || s->next_runs < s->next_max))
        s->rq_slot = a;
    else
        tpi_rq_push(s, &a->rq);
}

/* tpi_sched_queue_next_running, then the run event made active. */
static inline void tpi_sched_queue_next(tpi_sched *s, tpi_actor *a)
{
    tpi_sched_queue_next_running(s, a);
    tpi_sched_kick(s);
}

/* Actors are ready on s (its own thread). */
static inline bool tpi_sched_has_ready(tpi_sched *s)
{
    return s->rq_slot || s->rq_head;
}

#endif
