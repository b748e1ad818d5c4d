/* troupe-kv shard side: strings and the chained hash table. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#define DICT_MIN 4

kv_str *kv_str_new(const void *p, size_t n)
{
    kv_str *s = kv_xrealloc(NULL, sizeof *s + n);
    s->len = (uint32_t)n;
    if (n)
        memcpy(s->p, p, n);
    return s;
}

static kv_de **buckets(size_t n)
{
    kv_de **b = kv_xrealloc(NULL, n * sizeof *b);
    memset(b, 0, n * sizeof *b);
    return b;
}

void kv_dict_init(kv_dict *d)
{
    d->b = buckets(DICT_MIN);
    d->mask = DICT_MIN - 1;
    d->count = 0;
}

void kv_dict_free(kv_dict *d, void (*fr)(kv_de *))
{
    for (size_t i = 0; i <= d->mask; i++)
        for (kv_de *e = d->b[i], *n; e; e = n) {
            n = e->next;
            if (fr)
                fr(e);
            free(e);
        }
    free(d->b);
    d->b = NULL;
    d->mask = d->count = 0;
}

static void resize(kv_dict *d, size_t size)
{
    kv_de **nb = buckets(size);
    size_t nm = size - 1;
    for (size_t i = 0; i <= d->mask; i++)
        for (kv_de *e = d->b[i], *n; e; e = n) {
            n = e->next;
            e->next = nb[e->hash & nm];
            nb[e->hash & nm] = e;
        }
    free(d->b);
    d->b = nb;
    d->mask = nm;
}

kv_de **kv_dict_link(kv_dict *d, const void *k, size_t n, uint64_t h)
{
    kv_de **pp = &d->b[h & d->mask];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == n &&
            memcmp((*pp)->key, k, n) == 0)
            break;
    return pp;
}

kv_de *kv_dict_find(kv_dict *d, const void *k, size_t n)
{
    return *kv_dict_link(d, k, n, kv_hash(k, n));
}

kv_de *kv_dict_insert(kv_dict *d, kv_de **link, const void *k, size_t n,
                      uint64_t h)
{
    kv_de *e = kv_xrealloc(NULL, sizeof *e + n);
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->klen = (uint32_t)n;
    memcpy(e->key, k, n);
    *link = e;
    if (++d->count > d->mask + 1)
        resize(d, (d->mask + 1) * 2);
    return e;
}

kv_de *kv_dict_remove(kv_dict *d, kv_de **link)
{
    kv_de *e = *link;
    *link = e->next;
    d->count--;
    size_t size = d->mask + 1;
    if (size > DICT_MIN && d->count * 8 < size) {
        while (size > DICT_MIN && d->count * 2 < size)
            size /= 2;
        resize(d, size);
    }
    return e;
}

static size_t rev(size_t v)
{
    size_t s = sizeof v * 8, mask = ~(size_t)0;
    while ((s >>= 1) > 0) {
        mask ^= mask << s;
        v = ((v >> s) & mask) | ((v << s) & ~mask);
    }
    return v;
}

size_t kv_dict_scan(const kv_dict *d, size_t v, void (*fn)(void *, kv_de *),
                    void *arg)
{
    if (!d->count)
        return 0;
    for (kv_de *e = d->b[v & d->mask]; e; e = e->next)
        fn(arg, e);
    /* Increment the cursor's reversed bits above the mask: the buckets a
     * grown or shrunk table splits this one into come next, none twice. */
    v |= ~d->mask;
    v = rev(v);
    v++;
    return rev(v);
}

uint64_t kv_rand(uint64_t *s)
{
    /* xorshift64*: good enough to pick samples. */
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

kv_de *kv_dict_random(const kv_dict *d, uint64_t *rng)
{
    if (!d->count)
        return NULL;
    kv_de *e;
    /* The load stays above 1/8, so a non-empty bucket is found fast. */
    do
        e = d->b[kv_rand(rng) & d->mask];
    while (!e);
    size_t len = 0;
    for (kv_de *x = e; x; x = x->next)
        len++;
    for (size_t i = kv_rand(rng) % len; i; i--)
        e = e->next;
    return e;
}
