/*
 * The actor table: slots in chunks that are allocated on demand and never
 * freed while the table lives (type-stable memory), so a pid can always be
 * checked against its slot's generation without a lock. Free slots move in
 * magazines: each scheduler keeps two of its own (tpi_slot_cache), and
 * whole magazines go to and from a depot under a spinlock, so spawns and
 * ends on several threads rarely meet there, and never for longer than a
 * few stores.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"

#include <stdlib.h>

#define CHUNK_BITS 12
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 4096u /* 16M actors */
/* Slots in a full magazine: the depot's lock is taken once per that many
 * spawns or ends on a thread, and a thread keeps at most twice that. */
#define MAG_SIZE 128
/* tpi_table_slot relies on it: index 0 - 1 lies past the table. */
_Static_assert((UINT32_MAX >> CHUNK_BITS) >= MAX_CHUNKS,
               "a wrapped index is out of the table");
_Static_assert(TP_INLINE_STATE_MAX % 16 == 0, "inline states stay aligned");
#define CHUNK_BYTES (sizeof(tpi_actor) * CHUNK_SIZE)
/* Chunks are placed in regions of address space reserved as they are
 * needed (tpi_reserve, in whole huge pages), not all at once: an address
 * space limit (RLIMIT_AS, as isolated workers run under) counts what is
 * reserved. */
#define REGION_CHUNKS 32
#define REGION_BYTES (REGION_CHUNKS * CHUNK_BYTES)
#define CHUNK_STATE_BYTES ((size_t)CHUNK_SIZE * TP_INLINE_STATE_MAX)
#define STATE_REGION_BYTES (REGION_CHUNKS * CHUNK_STATE_BYTES)
#define NO_REGION ((void *)1)

struct tpi_table {
    _Atomic(tpi_actor *) chunks[MAX_CHUNKS];
    /* Per chunk, what few of its slots use, made on the first use in the
     * chunk, so an idle actor's slot stays small: inline states
     * (tp_spawn_inline; only the pages used are ever touched) and the
     * cold fields (tpi_slot_cold). */
    _Atomic(void *) states[MAX_CHUNKS];
    /* Per region, the address space its chunks' inline states are placed
     * in (as the slots are, tpi_reserve), or NO_REGION: each chunk's
     * states allocated on their own. Made on the first inline state. */
    _Atomic(void *) state_regions[MAX_CHUNKS / REGION_CHUNKS];
    _Atomic(void *) colds[MAX_CHUNKS];
    /* The regions, or NULL where the space was not given (or a hook is
     * set): each chunk of that region is then allocated on its own. */
    tpi_actor *regions[MAX_CHUNKS / REGION_CHUNKS];
    /* The depot of free magazines and growth are short critical sections
     * (a few stores; no list is walked), taken once per magazine; a
     * spinlock keeps the uncontended cost at one exchange. */
    atomic_flag lock;
    uint32_t free_head; /* the depot: first magazine's head, index + 1 */
    uint32_t used;      /* slots handed out at least once */
};

static void lock(tpi_table *t)
{
    /* acquire: pairs with the release in unlock. */
    while (atomic_flag_test_and_set_explicit(&t->lock, memory_order_acquire))
        ;
}

static void unlock(tpi_table *t)
{
    atomic_flag_clear_explicit(&t->lock, memory_order_release);
}

int tpi_table_new(tpi_table **out)
{
    tpi_table *t = tpi_calloc(sizeof *t);
    if (!t)
        return TP_ENOMEM;
    atomic_flag_clear(&t->lock);
    *out = t;
    return 0;
}

void tpi_table_free(tpi_table *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < MAX_CHUNKS; i++) {
        if (!t->regions[i / REGION_CHUNKS])
            tpi_free(atomic_load_explicit(&t->chunks[i], memory_order_relaxed));
        void *sr = atomic_load_explicit(&t->state_regions[i / REGION_CHUNKS],
                                        memory_order_relaxed);
        if (!sr || sr == NO_REGION)
            tpi_free_aligned(
                atomic_load_explicit(&t->states[i], memory_order_relaxed));
        tpi_free(atomic_load_explicit(&t->colds[i], memory_order_relaxed));
    }
    for (uint32_t r = 0; r < MAX_CHUNKS / REGION_CHUNKS; r++) {
        tpi_unreserve(t->regions[r], REGION_BYTES);
        void *sr =
            atomic_load_explicit(&t->state_regions[r], memory_order_relaxed);
        if (sr != NO_REGION)
            tpi_unreserve(sr, STATE_REGION_BYTES);
    }
    tpi_free(t);
}

tpi_actor tpi_no_slot = {.id = ~(uint64_t)0}; /* read only */

static tpi_actor *slot_at(tpi_table *t, uint32_t index)
{
    /* acquire: pairs with the release store that published the chunk. */
    tpi_actor *c = atomic_load_explicit(&t->chunks[index >> CHUNK_BITS],
                                        memory_order_acquire);
    return c ? &c[index & (CHUNK_SIZE - 1)] : NULL;
}

static tpi_actor *mag_pop(tpi_table *t, tpi_slot_mag *m)
{
    tpi_actor *a = slot_at(t, m->head - 1);
    m->head = a->free_next;
    m->n--;
    return a;
}

static void mag_push(tpi_slot_mag *m, tpi_actor *a)
{
    a->free_next = m->head;
    m->head = tpi_slot_index(a) + 1;
    m->n++;
}

/* Lock held: a whole magazine onto the depot, or off it (n 0: empty). */
static void depot_push(tpi_table *t, tpi_slot_mag m)
{
    tpi_actor *h = slot_at(t, m.head - 1);
    h->mag.next = t->free_head;
    h->mag.n = m.n;
    t->free_head = m.head;
}

static tpi_slot_mag depot_pop(tpi_table *t)
{
    if (!t->free_head)
        return (tpi_slot_mag){0, 0};
    tpi_actor *h = slot_at(t, t->free_head - 1);
    tpi_slot_mag m = {t->free_head, h->mag.n};
    t->free_head = h->mag.next;
    return m;
}

/* Lock held: the next slot never handed out, its chunk made if needed,
 * or NULL when out of memory or slots. A chunk is zeroed memory, which is
 * a free slot as a reader finds it (generation 0: even, so no pid reaches
 * it; an empty mailbox); only the index is written, here, so a chunk's
 * slots are touched one at a time as they are first used instead of all
 * at once when it is made. */
static tpi_actor *fresh(tpi_table *t)
{
    uint32_t index = t->used;
    uint32_t ci = index >> CHUNK_BITS;
    if (ci >= MAX_CHUNKS)
        return NULL;
    tpi_actor *chunk =
        atomic_load_explicit(&t->chunks[ci], memory_order_relaxed);
    if (!chunk) {
        tpi_actor **r = &t->regions[ci / REGION_CHUNKS];
        if (ci % REGION_CHUNKS == 0) /* chunks are made in order */
            *r = tpi_reserve(REGION_BYTES);
        chunk = *r ? *r + (size_t)(ci % REGION_CHUNKS) * CHUNK_SIZE
                   : tpi_calloc(CHUNK_BYTES);
        if (!chunk)
            return NULL;
        /* release: publishes the zeroed slots to slot_at readers. */
        atomic_store_explicit(&t->chunks[ci], chunk, memory_order_release);
    }
    tpi_actor *a = &chunk[index & (CHUNK_SIZE - 1)];
    /* generation 0: free */
    atomic_store_explicit(&a->id, tpi_pid_make(index, 0), memory_order_relaxed);
    t->used++;
    return a;
}

/* Lock held: a magazine of new slots, within the chunk at hand (the next
 * chunk is made when a spawn needs it, not ahead of it), handed out in
 * address order; empty when out of memory or slots. */
static tpi_slot_mag fresh_mag(tpi_table *t)
{
    tpi_slot_mag m = {0, 0};
    tpi_actor *a = fresh(t);
    if (!a)
        return m;
    unsigned k = 1;
    while (k < MAG_SIZE && t->used % CHUNK_SIZE) {
        fresh(t);
        k++;
    }
    for (unsigned i = k; i-- > 0;) /* pushed last to first */
        mag_push(&m, a + i);
    return m;
}

tpi_actor *tpi_table_take(tpi_table *t, tpi_slot_cache *c)
{
    if (!c) { /* one slot: the rest of its magazine stays in the depot */
        lock(t);
        tpi_slot_mag m = depot_pop(t);
        tpi_actor *a = m.n ? mag_pop(t, &m) : fresh(t);
        if (m.n)
            depot_push(t, m);
        unlock(t);
        return a;
    }
    if (!c->cur.n) {
        c->cur = c->spare;
        c->spare = (tpi_slot_mag){0, 0};
    }
    if (!c->cur.n) { /* a whole magazine: one short critical section */
        lock(t);
        c->cur = depot_pop(t);
        if (!c->cur.n)
            c->cur = fresh_mag(t);
        unlock(t);
        if (!c->cur.n)
            return NULL;
    }
    return mag_pop(t, &c->cur);
}

void tpi_table_put(tpi_table *t, tpi_slot_cache *c, tpi_actor *a)
{
    if (!c) {
        tpi_slot_mag m = {0, 0};
        mag_push(&m, a);
        lock(t);
        depot_push(t, m);
        unlock(t);
        return;
    }
    if (c->cur.n == MAG_SIZE) { /* full: it becomes the spare */
        if (c->spare.n) {
            lock(t);
            depot_push(t, c->spare);
            unlock(t);
        }
        c->spare = c->cur;
        c->cur = (tpi_slot_mag){0, 0};
    }
    mag_push(&c->cur, a);
}

tpi_actor *tpi_table_slot(tpi_table *t, tp_pid pid)
{
    /* A live actor's generation is odd, a free slot's even: a pid with an
     * even generation was never handed out (forged, or bad input), and
     * must not reach a slot that is free or being set up. TP_PID_NONE has
     * generation 0; a pid with index part 0 wraps to an index past
     * MAX_CHUNKS, which tpi_table_at turns away. */
    if (!(tpi_pid_gen(pid) & 1u))
        return NULL;
    return tpi_table_at(t, tpi_pid_index(pid));
}

tpi_actor *tpi_table_at(tpi_table *t, uint32_t index)
{
    if ((index >> CHUNK_BITS) >= MAX_CHUNKS)
        return NULL;
    return slot_at(t, index);
}

/* Install fresh as *p unless another thread did first; returns the
 * block in place, and frees fresh if it lost. */
static void *install(_Atomic(void *) *p, void *fresh, void (*free_fn)(void *))
{
    void *b = NULL;
    /* acq_rel: release publishes the (zeroed) block with the pointer;
     * acquire, on failure, the winner's. */
    if (atomic_compare_exchange_strong_explicit(p, &b, fresh,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return fresh;
    free_fn(fresh);
    return b;
}

static void unreserve_states(void *p) { tpi_unreserve(p, STATE_REGION_BYTES); }
static void keep(void *p) { (void)p; }

/* The inline states of chunk ci: in its region's space when that was
 * given, else allocated on their own. Not zeroed: a state is written
 * before it is used, and pages nobody writes are never touched. */
static void *chunk_states(tpi_table *t, uint32_t ci)
{
    _Atomic(void *) *rp = &t->state_regions[ci / REGION_CHUNKS];
    /* acquire: pairs with install's release. */
    char *r = atomic_load_explicit(rp, memory_order_acquire);
    if (!r) {
        void *fresh = tpi_reserve(STATE_REGION_BYTES);
        r = install(rp, fresh ? fresh : NO_REGION,
                    fresh ? unreserve_states : keep);
    }
    if (r != NO_REGION) /* every thread computes the same address */
        return install(&t->states[ci],
                       r + (ci % REGION_CHUNKS) * CHUNK_STATE_BYTES, keep);
    void *fresh = tpi_alloc_aligned(CHUNK_STATE_BYTES, 16);
    return fresh ? install(&t->states[ci], fresh, tpi_free_aligned) : NULL;
}

void *tpi_table_state(tpi_table *t, tpi_actor *a)
{
    uint32_t ci = tpi_slot_index(a) >> CHUNK_BITS;
    /* acquire: pairs with install's release. */
    char *b = atomic_load_explicit(&t->states[ci], memory_order_acquire);
    if (!b && !(b = chunk_states(t, ci)))
        return NULL;
    return b +
           (size_t)(tpi_slot_index(a) & (CHUNK_SIZE - 1)) * TP_INLINE_STATE_MAX;
}

tpi_slot_cold *tpi_table_cold(tpi_table *t, tpi_actor *a, bool make)
{
    uint32_t ci = tpi_slot_index(a) >> CHUNK_BITS;
    if (ci >= MAX_CHUNKS) /* an isolated worker's actor is in no table */
        return NULL;
    _Atomic(void *) *p = &t->colds[ci];
    /* acquire: pairs with install's release. */
    tpi_slot_cold *c = atomic_load_explicit(p, memory_order_acquire);
    if (!c && make) {
        void *fresh = tpi_calloc(sizeof *c * CHUNK_SIZE);
        if (!fresh)
            return NULL;
        c = install(p, fresh, tpi_free);
    }
    return c ? &c[tpi_slot_index(a) & (CHUNK_SIZE - 1)] : NULL;
}

uint64_t tpi_table_slots(tpi_table *t)
{
    lock(t);
    uint64_t n = t->used;
    unlock(t);
    return n;
}

void tpi_table_each(tpi_table *t, void (*fn)(tpi_actor *, void *), void *arg)
{
    lock(t);
    uint32_t used = t->used; /* slots never handed out hold nothing */
    unlock(t);
    for (uint32_t i = 0; i < used; i++)
        fn(slot_at(t, i), arg);
}
