/*
 * Small message nodes, recycled. Each scheduler thread keeps a free list,
 * so the common case (a message freed on the thread that runs its
 * receiver, which allocates the next) takes no lock and no atomic. Where
 * messages flow one way between threads, the consumer's list fills while
 * the producer's runs dry: full magazines of MAG nodes then move from one
 * to the other through a depot under a mutex, one lock per MAG messages
 * (Bonwick and Adams, "Magazines and Vmem", USENIX 2001), instead of every
 * node going back through malloc across arenas.
 *
 * Only scheduler threads cache, from their first use of a node until
 * their loop ends (tpi_sched_run flushes). Any other thread (a foreign
 * sender, a pool worker, the thread that frees a runtime) allocates and
 * frees each node through the allocator: such a thread may send a few
 * messages and exit, or outlive every runtime, and a magazine taken by it
 * would leave up to MAG nodes behind. So when the last runtime is freed
 * and the depot emptied, every node has gone back to the allocator.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <pthread.h>

#ifndef TPI_NO_POOL

#define MAG 1024     /* nodes per magazine */
#define DEPOT_MAX 64 /* magazines the depot keeps (about 8 MiB) */

_Thread_local tpi_node_cache tpi_tls_nodes TPI_TLS_FAST;
#define cache tpi_tls_nodes

/* Magazines are chains of nodes through node.next; the depot links them
 * through their first node's data field. */
static struct {
    pthread_mutex_t lock;
    tpi_msg *mags;
    _Atomic unsigned n; /* read without the lock as a hint */
} depot = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

static tpi_msg *next_of(tpi_msg *m)
{
    return (tpi_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
}

static void free_chain(tpi_msg *m)
{
    while (m) {
        tpi_msg *next = next_of(m);
        tpi_free(m);
        m = next;
    }
}

/* Is this thread one that caches? Scheduler threads start caching at
 * their first node; every other thread never does. */
static bool caching(void)
{
    if (!cache.lim && tpi_sched_current())
        cache.lim = TPI_NODE_CACHE_MAX;
    return cache.lim != 0;
}

tpi_msg *tpi_node_refill(void)
{
    /* relaxed: a hint; the lock below decides. */
    if (!caching() || !atomic_load_explicit(&depot.n, memory_order_relaxed))
        return NULL;
    pthread_mutex_lock(&depot.lock);
    tpi_msg *mag = depot.mags;
    if (mag) {
        depot.mags = (tpi_msg *)mag->data;
        atomic_store_explicit(&depot.n,
                              atomic_load_explicit(&depot.n,
                                                   memory_order_relaxed) -
                                  1,
                              memory_order_relaxed);
    }
    pthread_mutex_unlock(&depot.lock);
    if (!mag)
        return NULL;
    cache.head = next_of(mag);
    cache.n = MAG - 1;
    return mag;
}

/* The cache is full: hand its first MAG nodes to the depot, or back to
 * the allocator when the depot is full too. */
static void cache_spill(void)
{
    tpi_msg *mag = cache.head, *last = mag;
    for (unsigned i = 1; i < MAG; i++)
        last = next_of(last);
    cache.head = next_of(last);
    cache.n -= MAG;
    atomic_store_explicit(&last->node.next, NULL, memory_order_relaxed);
    pthread_mutex_lock(&depot.lock);
    bool keep = atomic_load_explicit(&depot.n, memory_order_relaxed) <
                DEPOT_MAX;
    if (keep) {
        mag->data = (char *)depot.mags;
        depot.mags = mag;
        atomic_store_explicit(&depot.n,
                              atomic_load_explicit(&depot.n,
                                                   memory_order_relaxed) +
                                  1,
                              memory_order_relaxed);
    }
    pthread_mutex_unlock(&depot.lock);
    if (!keep)
        free_chain(mag);
}

bool tpi_node_put_slow(tpi_msg *m)
{
    if (!caching())
        return false;
    if (cache.n >= TPI_NODE_CACHE_MAX)
        cache_spill();
    atomic_store_explicit(&m->node.next, (tpi_mpsc_node *)cache.head,
                          memory_order_relaxed);
    cache.head = m;
    cache.n++;
    return true;
}

void tpi_msg_cache_flush(void)
{
    free_chain(cache.head);
    cache.head = NULL;
    cache.n = 0;
    cache.lim = 0; /* until this thread runs a scheduler again */
}

void tpi_msg_depot_flush(void)
{
    pthread_mutex_lock(&depot.lock);
    tpi_msg *mags = depot.mags;
    depot.mags = NULL;
    atomic_store_explicit(&depot.n, 0, memory_order_relaxed);
    pthread_mutex_unlock(&depot.lock);
    while (mags) {
        tpi_msg *next = (tpi_msg *)mags->data;
        free_chain(mags);
        mags = next;
    }
}

#else /* TPI_NO_POOL: every node from the allocator */

void tpi_msg_cache_flush(void) {}
void tpi_msg_depot_flush(void) {}

#endif
