/*
 * troupe-kv shard side: a sorted set is a skiplist ordered by (score,
 * member) whose links carry spans, so ranks cost O(log n) (Pugh's
 * skiplist as Redis's t_zset.c uses it), plus a dict member -> node.
 */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#define MAXLEVEL 32

static kv_zn *node(int level, double score, kv_de *de)
{
    kv_zn *x = kv_xrealloc(NULL, sizeof *x + (size_t)level * sizeof x->lv[0]);
    memset(x, 0, sizeof *x + (size_t)level * sizeof x->lv[0]);
    x->score = score;
    x->de = de;
    return x;
}

kv_zset *kv_zset_new(void)
{
    kv_zset *z = kv_xrealloc(NULL, sizeof *z);
    kv_dict_init(&z->d);
    z->head = node(MAXLEVEL, 0, NULL);
    z->tail = NULL;
    z->level = 1;
    return z;
}

void kv_zset_free(kv_zset *z)
{
    for (kv_zn *x = z->head, *n; x; x = n) {
        n = x->lv[0].fw;
        free(x);
    }
    kv_dict_free(&z->d, NULL);
    free(z);
}

/* Whether node x sorts before (score, de). */
static bool before(const kv_zn *x, double score, const kv_de *de)
{
    if (x->score != score)
        return x->score < score;
    size_t n = x->de->klen < de->klen ? x->de->klen : de->klen;
    int c = memcmp(x->de->key, de->key, n);
    return c < 0 || (c == 0 && x->de->klen < de->klen);
}

static int random_level(void)
{
    /* p = 1/4: a level up when two random bits are zero. */
    static _Thread_local uint64_t rng = 0x853c49e6748fea9bull;
    uint64_t r = kv_rand(&rng);
    int level = 1;
    while ((r & 3) == 0 && level < MAXLEVEL) {
        level++;
        r >>= 2;
    }
    return level;
}

static void insert(kv_zset *z, double score, kv_de *de)
{
    kv_zn *update[MAXLEVEL], *x = z->head;
    size_t rank[MAXLEVEL];
    for (int i = z->level - 1; i >= 0; i--) {
        rank[i] = i == z->level - 1 ? 0 : rank[i + 1];
        while (x->lv[i].fw && before(x->lv[i].fw, score, de)) {
            rank[i] += x->lv[i].span;
            x = x->lv[i].fw;
        }
        update[i] = x;
    }
    int level = random_level();
    size_t len = z->d.count - 1; /* de is already in the dict */
    if (level > z->level) {
        for (int i = z->level; i < level; i++) {
            rank[i] = 0;
            update[i] = z->head;
            update[i]->lv[i].span = len;
        }
        z->level = level;
    }
    x = node(level, score, de);
    for (int i = 0; i < level; i++) {
        x->lv[i].fw = update[i]->lv[i].fw;
        update[i]->lv[i].fw = x;
        x->lv[i].span = update[i]->lv[i].span - (rank[0] - rank[i]);
        update[i]->lv[i].span = (rank[0] - rank[i]) + 1;
    }
    for (int i = level; i < z->level; i++)
        update[i]->lv[i].span++;
    x->back = update[0] == z->head ? NULL : update[0];
    if (x->lv[0].fw)
        x->lv[0].fw->back = x;
    else
        z->tail = x;
    de->val = x;
}

/* Unlink and free the node of de (score and member locate it). */
static void unlink_node(kv_zset *z, kv_zn *target)
{
    kv_zn *update[MAXLEVEL], *x = z->head;
    for (int i = z->level - 1; i >= 0; i--) {
        while (x->lv[i].fw && x->lv[i].fw != target &&
               before(x->lv[i].fw, target->score, target->de))
            x = x->lv[i].fw;
        update[i] = x;
    }
    for (int i = 0; i < z->level; i++) {
        if (update[i]->lv[i].fw == target) {
            update[i]->lv[i].span += target->lv[i].span - 1;
            update[i]->lv[i].fw = target->lv[i].fw;
        } else {
            update[i]->lv[i].span--;
        }
    }
    if (target->lv[0].fw)
        target->lv[0].fw->back = target->back;
    else
        z->tail = target->back;
    while (z->level > 1 && !z->head->lv[z->level - 1].fw)
        z->level--;
    free(target);
}

void kv_zset_set(kv_zset *z, const void *m, size_t n, double score)
{
    uint64_t h = kv_hash(m, n);
    kv_de **link = kv_dict_link(&z->d, m, n, h);
    kv_de *de = *link;
    if (de) {
        kv_zn *x = de->val;
        if (x->score == score)
            return;
        /* Still in place if the neighbours keep their order. */
        if ((!x->back || x->back->score < score) &&
            (!x->lv[0].fw || x->lv[0].fw->score > score)) {
            x->score = score;
            return;
        }
        unlink_node(z, x);
    } else {
        de = kv_dict_insert(&z->d, link, m, n, h);
    }
    insert(z, score, de);
}

void kv_zset_del(kv_zset *z, kv_de **link)
{
    unlink_node(z, (*link)->val);
    free(kv_dict_remove(&z->d, link));
}

size_t kv_zset_rank(const kv_zset *z, const kv_zn *target)
{
    size_t rank = 0;
    const kv_zn *x = z->head;
    for (int i = z->level - 1; i >= 0; i--) {
        while (x->lv[i].fw &&
               (x->lv[i].fw == target ||
                before(x->lv[i].fw, target->score, target->de))) {
            rank += x->lv[i].span;
            x = x->lv[i].fw;
            if (x == target)
                return rank - 1;
        }
    }
    return rank - 1; /* not reached for a node of z */
}

kv_zn *kv_zset_at(const kv_zset *z, size_t r)
{
    size_t want = r + 1, t = 0;
    kv_zn *x = z->head;
    for (int i = z->level - 1; i >= 0; i--) {
        while (x->lv[i].fw && t + x->lv[i].span <= want) {
            t += x->lv[i].span;
            x = x->lv[i].fw;
        }
        if (t == want)
            return x;
    }
    return NULL;
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

bool kv_zrange_gte_min(const kv_zn *x, const kv_zrange *r)
{
    if (r->lex) {
        int c = lexcmp(x->de, r->lmin, r->lminn, r->lmin_inf);
        return r->minex ? c > 0 : c >= 0;
    }
    return r->minex ? x->score > r->min : x->score >= r->min;
}

bool kv_zrange_lte_max(const kv_zn *x, const kv_zrange *r)
{
    if (r->lex) {
        int c = lexcmp(x->de, r->lmax, r->lmaxn, r->lmax_inf);
        return r->maxex ? c < 0 : c <= 0;
    }
    return r->maxex ? x->score < r->max : x->score <= r->max;
}

kv_zn *kv_zset_first_in(const kv_zset *z, const kv_zrange *r)
{
    kv_zn *x = z->head;
    for (int i = z->level - 1; i >= 0; i--)
        while (x->lv[i].fw && !kv_zrange_gte_min(x->lv[i].fw, r))
            x = x->lv[i].fw;
    x = x->lv[0].fw;
    return x && kv_zrange_lte_max(x, r) ? x : NULL;
}

kv_zn *kv_zset_last_in(const kv_zset *z, const kv_zrange *r)
{
    kv_zn *x = z->head;
    for (int i = z->level - 1; i >= 0; i--)
        while (x->lv[i].fw && kv_zrange_lte_max(x->lv[i].fw, r))
            x = x->lv[i].fw;
    return x != z->head && kv_zrange_gte_min(x, r) ? x : NULL;
}
