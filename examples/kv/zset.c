/*
 * troupe-kv shard side: a sorted set is a B+tree of (score, member)
 * entries whose inner nodes hold, for each child, its least entry and how
 * many entries it has (ranks in O(log n)), plus a dict member -> score.
 * A skiplist (Redis's choice) costs a cache miss per link it follows, two
 * walks per ZADD that moves a member; here the upper levels stay in cache
 * and a walk costs a miss or two per level below them.
 */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#define ZB KV_ZB
#define ZMIN (ZB / 4) /* fewest entries of a node other than the root */
/* A non-root node has >= ZMIN entries and the root >= 2, so 24 levels
 * hold more entries than memory can. */
#define MAXH 24

typedef struct inner {
    kv_zkeys k;       /* entry i: the least entry under child i */
    size_t count[ZB]; /* entries under child i */
    void *child[ZB];  /* kv_zleaf at height 1, inner above */
} inner;

static void *node_new(int h)
{
    if (h) {
        inner *x = kv_xrealloc(NULL, sizeof *x);
        x->k.n = 0;
        return x;
    }
    kv_zleaf *l = kv_xrealloc(NULL, sizeof *l);
    l->k.n = 0;
    l->prev = l->next = NULL;
    return l;
}

static void node_free(void *x, int h)
{
    if (h) {
        inner *in = x;
        for (uint32_t i = 0; i < in->k.n; i++)
            node_free(in->child[i], h - 1);
    }
    free(x);
}

kv_zset *kv_zset_new(void)
{
    kv_zset *z = kv_xrealloc(NULL, sizeof *z);
    kv_dict_init(&z->d);
    z->root = node_new(0);
    z->height = 0;
    return z;
}

void kv_zset_free(kv_zset *z)
{
    node_free(z->root, z->height);
    kv_dict_free(&z->d, NULL);
    free(z);
}

/* Member order (memcmp, then length) against a lex bound. */
static int lexcmp(const kv_de *m, const char *b, size_t bn, int inf)
{
    if (inf)
        return -inf;
    size_t n = m->klen < bn ? m->klen : bn;
    int c = memcmp(m->key, b, n);
    return c ? c : (m->klen > bn) - (m->klen < bn);
}

/* Order of (s, m) against entry i of k (0: the same member). */
static int cmp(double s, const kv_de *m, const kv_zkeys *k, uint32_t i)
{
    if (s != k->score[i]) /* the same member has the same score */
        return s < k->score[i] ? -1 : 1;
    const kv_de *o = k->m[i];
    return m == o ? 0 : lexcmp(m, o->key, o->klen, 0);
}

/* How many entries of k sort at or before (s, m). */
static uint32_t upto(const kv_zkeys *k, double s, const kv_de *m)
{
    uint32_t lo = 0, hi = k->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (cmp(s, m, k, mid) >= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The child of an inner node whose entries (s, m) belongs among. */
static uint32_t child_for(const inner *x, double s, const kv_de *m)
{
    uint32_t i = upto(&x->k, s, m);
    return i ? i - 1 : 0;
}

/* Child i of x, its scores on their way into the cache: the binary search
 * would fetch their lines one after another. */
static void *down(const inner *x, uint32_t i)
{
    const kv_zkeys *k = x->child[i];
    for (size_t off = 0; off < sizeof k->score; off += 64)
        __builtin_prefetch((const char *)k->score + off);
    return x->child[i];
}

/* ---------------------------------------- entries of a node at height h */

static size_t total(const void *x, int h)
{
    if (!h)
        return ((const kv_zkeys *)x)->n;
    const inner *in = x;
    size_t t = 0;
    for (uint32_t i = 0; i < in->k.n; i++)
        t += in->count[i];
    return t;
}

/* Room for one entry at i (n < ZB). */
static void node_open(void *x, uint32_t i, int h)
{
    kv_zkeys *k = x;
    uint32_t tail = k->n - i;
    memmove(&k->score[i + 1], &k->score[i], tail * sizeof k->score[0]);
    memmove(&k->m[i + 1], &k->m[i], tail * sizeof k->m[0]);
    if (h) {
        inner *in = x;
        memmove(&in->count[i + 1], &in->count[i], tail * sizeof in->count[0]);
        memmove(&in->child[i + 1], &in->child[i], tail * sizeof in->child[0]);
    }
    k->n++;
}

static void node_close(void *x, uint32_t i, int h)
{
    kv_zkeys *k = x;
    uint32_t tail = k->n - i - 1;
    memmove(&k->score[i], &k->score[i + 1], tail * sizeof k->score[0]);
    memmove(&k->m[i], &k->m[i + 1], tail * sizeof k->m[0]);
    if (h) {
        inner *in = x;
        memmove(&in->count[i], &in->count[i + 1], tail * sizeof in->count[0]);
        memmove(&in->child[i], &in->child[i + 1], tail * sizeof in->child[0]);
    }
    k->n--;
}

/* Entry di of dst = entry si of src. */
static void node_copy(void *dst, uint32_t di, const void *src, uint32_t si,
                      int h)
{
    kv_zkeys *d = dst;
    const kv_zkeys *s = src;
    d->score[di] = s->score[si];
    d->m[di] = s->m[si];
    if (h) {
        ((inner *)dst)->count[di] = ((const inner *)src)->count[si];
        ((inner *)dst)->child[di] = ((const inner *)src)->child[si];
    }
}

/* Append src's entries from `from` on to dst (they fit). */
static void node_move(void *src, uint32_t from, void *dst, int h)
{
    kv_zkeys *s = src, *d = dst;
    for (uint32_t i = from; i < s->n; i++)
        node_copy(dst, d->n++, src, i, h);
    s->n = from;
}

/* Entry i of inner node p: the least entry of its child x. */
static void set_least(inner *p, uint32_t i, const void *x)
{
    const kv_zkeys *k = x;
    p->k.score[i] = k->score[0];
    p->k.m[i] = k->m[0];
}

/* ------------------------------------------------------- insert, delete */

/* The way from the root to the leaf of (s, m): the inner node at each
 * height and the child taken there. */
typedef struct way {
    inner *node[MAXH + 1];
    uint32_t at[MAXH + 1];
} way;

/* Walk to the leaf where (s, m) is or belongs, counting it in (add) or
 * out of each child taken; an added entry may be a subtree's new least. */
static void *descend(const kv_zset *z, double s, kv_de *m, bool add, way *w)
{
    void *x = z->root;
    for (int h = z->height; h > 0; h--) {
        inner *in = x;
        uint32_t i = child_for(in, s, m);
        if (!add) {
            in->count[i]--;
        } else {
            in->count[i]++;
            if (i == 0 && cmp(s, m, &in->k, 0) < 0) {
                in->k.score[0] = s;
                in->k.m[0] = m;
            }
        }
        w->node[h] = in;
        w->at[h] = i;
        x = down(in, i);
    }
    return x;
}

static void tree_insert(kv_zset *z, double s, kv_de *m)
{
    way w;
    void *x = descend(z, s, m, true, &w);
    /* The entry to place at i of x: (s, m) in the leaf, then the right
     * half of each node that splits, in its parent. */
    uint32_t i = upto(x, s, m);
    void *right = NULL;
    size_t rcount = 0;
    for (int h = 0;; h++) {
        kv_zkeys *k = x, *dst = x;
        void *r = NULL;
        if (k->n == ZB) {
            r = node_new(h);
            node_move(x, ZB / 2, r, h);
            if (!h) {
                kv_zleaf *l = x, *rl = r;
                rl->prev = l;
                rl->next = l->next;
                if (l->next)
                    l->next->prev = rl;
                l->next = rl;
            }
            if (i > ZB / 2) {
                dst = r;
                i -= ZB / 2;
            }
        }
        node_open(dst, i, h);
        dst->score[i] = s;
        dst->m[i] = m;
        if (h) {
            ((inner *)dst)->count[i] = rcount;
            ((inner *)dst)->child[i] = right;
        }
        if (!r)
            return;
        /* Split: the parent gets r after x. */
        right = r;
        rcount = total(r, h);
        s = ((kv_zkeys *)r)->score[0];
        m = ((kv_zkeys *)r)->m[0];
        if (h == z->height) { /* x was the root */
            inner *root = node_new(h + 1);
            root->k.n = 1;
            set_least(root, 0, x);
            root->count[0] = total(x, h);
            root->child[0] = x;
            z->root = root;
            z->height++;
            w.node[h + 1] = root;
            w.at[h + 1] = 0;
        } else {
            w.node[h + 1]->count[w.at[h + 1]] -= rcount;
        }
        x = w.node[h + 1];
        i = w.at[h + 1] + 1;
    }
}

/* Remove (s, m), which the tree holds. */
static void tree_delete(kv_zset *z, double s, kv_de *m)
{
    way w;
    void *x = descend(z, s, m, false, &w);
    node_close(x, upto(x, s, m) - 1, 0);
    /* Up the path: refill a node below ZMIN from a sibling, or merge the
     * two; keep each parent's least entries exact. */
    for (int h = 0; h < z->height; h++) {
        inner *p = w.node[h + 1];
        uint32_t pi = w.at[h + 1];
        kv_zkeys *k = x;
        if (k->n >= ZMIN) {
            set_least(p, pi, x);
            x = p;
            continue;
        }
        uint32_t li = pi ? pi - 1 : 0; /* the pair: li, li + 1 */
        void *a = p->child[li], *b = p->child[li + 1];
        kv_zkeys *ka = a, *kb = b;
        kv_zkeys *sib = a == x ? kb : ka;
        if (sib->n > ZMIN) { /* borrow one entry */
            size_t c;
            if (a == x) {
                node_copy(a, ka->n++, b, 0, h);
                c = h ? ((inner *)a)->count[ka->n - 1] : 1;
                node_close(b, 0, h);
                p->count[li] += c;
                p->count[li + 1] -= c;
            } else {
                node_open(b, 0, h);
                node_copy(b, 0, a, --ka->n, h);
                c = h ? ((inner *)b)->count[0] : 1;
                p->count[li] -= c;
                p->count[li + 1] += c;
            }
            set_least(p, li, a);
            set_least(p, li + 1, b);
        } else { /* merge b into a */
            node_move(b, 0, a, h);
            if (!h) {
                kv_zleaf *la = a, *lb = b;
                la->next = lb->next;
                if (lb->next)
                    lb->next->prev = la;
            }
            p->count[li] += p->count[li + 1];
            node_close(p, li + 1, h + 1);
            free(b);
            set_least(p, li, a);
        }
        x = p;
    }
    while (z->height && ((inner *)z->root)->k.n == 1) {
        inner *old = z->root;
        z->root = old->child[0];
        z->height--;
        free(old);
    }
}

void kv_zset_set(kv_zset *z, const void *m, size_t n, double score)
{
    uint64_t h = kv_hash(m, n);
    kv_de **link = kv_dict_link(&z->d, m, n, h);
    if (*link) {
        kv_zset_update(z, *link, score);
        return;
    }
    kv_de *de = kv_dict_insert(&z->d, link, m, n, h);
    de->score = score;
    tree_insert(z, score, de);
}

void kv_zset_update(kv_zset *z, kv_de *m, double score)
{
    if (m->score == score)
        return;
    tree_delete(z, m->score, m);
    m->score = score;
    tree_insert(z, score, m);
}

void kv_zset_del(kv_zset *z, kv_de **link)
{
    kv_de *m = *link;
    tree_delete(z, m->score, m);
    free(kv_dict_remove(&z->d, link));
}

/* --------------------------------------------------------------- reading */

size_t kv_zset_rank(const kv_zset *z, const kv_de *m)
{
    size_t r = 0;
    const void *x = z->root;
    for (int h = z->height; h > 0; h--) {
        const inner *in = x;
        uint32_t i = child_for(in, m->score, m);
        for (uint32_t j = 0; j < i; j++)
            r += in->count[j];
        x = in->child[i];
    }
    return r + upto(x, m->score, m) - 1;
}

kv_zit kv_zset_at(const kv_zset *z, size_t r)
{
    const void *x = z->root;
    for (int h = z->height; h > 0; h--) {
        const inner *in = x;
        uint32_t i = 0;
        while (r >= in->count[i])
            r -= in->count[i++];
        x = in->child[i];
    }
    return (kv_zit){(kv_zleaf *)x, (uint32_t)r};
}

kv_zit kv_zset_first(const kv_zset *z)
{
    return kv_zset_len(z) ? kv_zset_at(z, 0) : (kv_zit){0};
}

kv_zit kv_zset_last(const kv_zset *z)
{
    return kv_zset_len(z) ? kv_zset_at(z, kv_zset_len(z) - 1) : (kv_zit){0};
}

bool kv_zrange_gte_min(double s, const kv_de *m, const kv_zrange *r)
{
    if (r->lex) {
        int c = lexcmp(m, r->lmin, r->lminn, r->lmin_inf);
        return r->minex ? c > 0 : c >= 0;
    }
    return r->minex ? s > r->min : s >= r->min;
}

bool kv_zrange_lte_max(double s, const kv_de *m, const kv_zrange *r)
{
    if (r->lex) {
        int c = lexcmp(m, r->lmax, r->lmaxn, r->lmax_inf);
        return r->maxex ? c < 0 : c <= 0;
    }
    return r->maxex ? s < r->max : s <= r->max;
}

/* How many entries of k lie below r (upper: within r's upper bound). */
static uint32_t bound(const kv_zkeys *k, const kv_zrange *r, bool upper)
{
    uint32_t lo = 0, hi = k->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        bool in = upper ? kv_zrange_lte_max(k->score[mid], k->m[mid], r)
                        : !kv_zrange_gte_min(k->score[mid], k->m[mid], r);
        if (in)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

kv_zit kv_zset_first_in(const kv_zset *z, const kv_zrange *r)
{
    const void *x = z->root;
    for (int h = z->height; h > 0; h--) {
        const inner *in = x;
        uint32_t i = bound(&in->k, r, false);
        x = in->child[i ? i - 1 : 0];
    }
    kv_zit it = {(kv_zleaf *)x, bound(x, r, false)};
    if (it.i == it.l->k.n)
        it = (kv_zit){it.l->next, 0};
    return it.l && kv_zrange_lte_max(kv_zit_score(it), kv_zit_member(it), r)
               ? it
               : (kv_zit){0};
}

kv_zit kv_zset_last_in(const kv_zset *z, const kv_zrange *r)
{
    const void *x = z->root;
    for (int h = z->height; h > 0; h--) {
        const inner *in = x;
        uint32_t i = bound(&in->k, r, true);
        if (!i)
            return (kv_zit){0};
        x = in->child[i - 1];
    }
    uint32_t i = bound(x, r, true);
    if (!i)
        return (kv_zit){0};
    kv_zit it = {(kv_zleaf *)x, i - 1};
    return kv_zrange_gte_min(kv_zit_score(it), kv_zit_member(it), r)
               ? it
               : (kv_zit){0};
}
