/*
 * A mailbox: an MPSC queue plus an atomic count that is also the actor's
 * scheduling state. The push that takes the count from 0 is the one that
 * must schedule the actor; the consumer subtracts what it took at the end
 * of a turn and stays scheduled while the count is above 0. A party that
 * must keep the actor from being scheduled by pushers (a pause, a replay
 * of deferred messages) holds a "token": one extra unit in the count.
 * The mailbox knows nothing of actors.
 */
#ifndef TPI_MAILBOX_H
#define TPI_MAILBOX_H

#include "mailbox/mpscq.h"

#include <stdint.h>

typedef struct tpi_mailbox {
    tpi_mpscq q;
    _Atomic size_t count; /* queued messages + tokens */
    size_t capacity;      /* SIZE_MAX: unbounded */
} tpi_mailbox;

static inline void tpi_mailbox_init(tpi_mailbox *mb, size_t capacity)
{
    tpi_mpscq_init(&mb->q);
    atomic_store_explicit(&mb->count, 0, memory_order_relaxed);
    mb->capacity = capacity;
}

/* Any thread. Returns the count before this push: 0 means the caller now
 * owns the duty to schedule the mailbox's owner. The count is raised
 * before the node is linked, so a consumer never takes more than it
 * counted. */
static inline size_t tpi_mailbox_push(tpi_mailbox *mb, tpi_mpsc_node *n)
{
    /* acq_rel: acquire pairs with the consumer's release in
     * tpi_mailbox_release, so a pusher that sees 0 and schedules the actor
     * sees everything the last turn wrote; release orders our writes
     * before the consumer's acquire. */
    size_t old = atomic_fetch_add_explicit(&mb->count, 1, memory_order_acq_rel);
    tpi_mpscq_push(&mb->q, n);
    return old;
}

/* Consumer: add (delta > 0) or drop (delta < 0, as a wrapped size_t) units
 * at once; returns the count after. A result of 0 means the owner is idle
 * and the next push reschedules it. */
static inline size_t tpi_mailbox_adjust(tpi_mailbox *mb, size_t delta)
{
    /* acq_rel: release publishes this turn's writes to the next pusher
     * that sees 0 (see tpi_mailbox_push). */
    return atomic_fetch_add_explicit(&mb->count, delta, memory_order_acq_rel) +
           delta;
}

static inline size_t tpi_mailbox_count(tpi_mailbox *mb)
{
    /* relaxed: an estimate for capacity checks; races only make a send
     * pause one message early or late. */
    return atomic_load_explicit(&mb->count, memory_order_relaxed);
}

#endif
