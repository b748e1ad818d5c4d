/*
 * A set of pids (an actor's links): a dense array, iterated in order, and
 * once it holds more than a few, an open-addressing index into it (linear
 * probing, deletion by backward shift), so linking and unlinking stay O(1)
 * for an actor linked to thousands, such as a supervisor or the root of a
 * large tree. Removal moves the last pid into the hole, as before.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"

#include <string.h>

#define LINEAR_MAX 8 /* up to this many, a scan is cheaper than an index */

static uint32_t home_of(tp_pid p, uint32_t mask)
{
    return (uint32_t)((p * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* The index cell holding p, or the empty cell where p would go. */
static uint32_t find(const tpi_pidvec *pv, tp_pid p)
{
    uint32_t mask = pv->idx_cap - 1, i = home_of(p, mask);
    while (pv->idx[i] && pv->v[pv->idx[i] - 1] != p)
        i = (i + 1) & mask;
    return i;
}

/* An index of cap cells (a power of two) over v[0..n). */
static int reindex(tpi_pidvec *pv, uint32_t cap)
{
    uint32_t *idx = tpi_calloc(cap * sizeof *idx);
    if (!idx)
        return TP_ENOMEM;
    tpi_free(pv->idx);
    pv->idx = idx;
    pv->idx_cap = cap;
    for (uint32_t k = 0; k < pv->n; k++)
        idx[find(pv, pv->v[k])] = k + 1;
    return 0;
}

/* Where p is in v, or n if it is not. */
static uint32_t position(const tpi_pidvec *pv, tp_pid p)
{
    if (pv->idx) {
        uint32_t c = pv->idx[find(pv, p)];
        return c ? c - 1 : pv->n;
    }
    uint32_t k = 0;
    while (k < pv->n && pv->v[k] != p)
        k++;
    return k;
}

int tpi_pidset_add(tpi_pidvec *pv, tp_pid p)
{
    if (position(pv, p) < pv->n)
        return 0;
    if (pv->n == pv->cap && tpi_grow((void **)&pv->v, &pv->cap, sizeof *pv->v))
        return TP_ENOMEM;
    /* At most half full, so probes stay short. */
    if (pv->n >= LINEAR_MAX && (pv->n + 1) * 2 > pv->idx_cap &&
        reindex(pv, pv->idx_cap ? pv->idx_cap * 2 : 4 * LINEAR_MAX) != 0)
        return TP_ENOMEM;
    pv->v[pv->n++] = p;
    if (pv->idx)
        pv->idx[find(pv, p)] = pv->n;
    return 0;
}

/* Empty cell i, moving up the entries after it that probed past it. */
static void erase(tpi_pidvec *pv, uint32_t i)
{
    uint32_t mask = pv->idx_cap - 1;
    for (uint32_t j = (i + 1) & mask; pv->idx[j]; j = (j + 1) & mask) {
        uint32_t h = home_of(pv->v[pv->idx[j] - 1], mask);
        if (((j - h) & mask) >= ((j - i) & mask)) { /* i lies on its probe */
            pv->idx[i] = pv->idx[j];
            i = j;
        }
    }
    pv->idx[i] = 0;
}

bool tpi_pidset_del(tpi_pidvec *pv, tp_pid p)
{
    uint32_t k;
    if (pv->idx) {
        uint32_t c = find(pv, p);
        if (!pv->idx[c])
            return false;
        k = pv->idx[c] - 1;
        erase(pv, c);
    } else if ((k = position(pv, p)) == pv->n) {
        return false;
    }
    uint32_t last = --pv->n;
    if (k != last) { /* the last one fills the hole */
        pv->v[k] = pv->v[last];
        if (pv->idx)
            pv->idx[find(pv, pv->v[k])] = k + 1;
    }
    return true;
}

void tpi_pidset_free(tpi_pidvec *pv)
{
    tpi_free(pv->v);
    tpi_free(pv->idx);
    memset(pv, 0, sizeof *pv);
}
