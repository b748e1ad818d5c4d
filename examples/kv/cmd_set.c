/* troupe-kv shard side: set commands (Redis 7.0 replies and errors). */
#include "store.h"

#include <stdlib.h>
#include <string.h>

static kv_dict *set_of(kv_de *e) { return e->val; }

static bool has(kv_de *e, const kv_cx *cx, uint32_t i)
{
    return e && kv_dict_find(set_of(e), cx->a[i], cx->an[i]);
}

KV_CMD(sadd)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_SET, &e))
        return;
    if (!e) {
        kv_dict *d = kv_xrealloc(NULL, sizeof *d);
        kv_dict_init(d);
        e = kv_db_add(cx->db, cx->a[1], cx->an[1], cx->h, KV_T_SET, d);
    }
    int64_t added = 0;
    for (uint32_t i = 2; i < cx->argc; i++) {
        uint64_t h = kv_hash(cx->a[i], cx->an[i]);
        kv_de **link = kv_dict_link(set_of(e), cx->a[i], cx->an[i], h);
        if (!*link) {
            kv_dict_insert(set_of(e), link, cx->a[i], cx->an[i], h);
            added++;
        }
    }
    kv_buf_int(cx->r, added);
}

KV_CMD(srem)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_SET, &e))
        return;
    int64_t n = 0;
    for (uint32_t i = 2; e && i < cx->argc; i++) {
        kv_de **link = kv_dict_link(set_of(e), cx->a[i], cx->an[i],
                                    kv_hash(cx->a[i], cx->an[i]));
        if (*link) {
            free(kv_dict_remove(set_of(e), link));
            n++;
        }
    }
    kv_buf_int(cx->r, n);
    if (e)
        kv_drop_if_empty(cx, e);
}

KV_CMD(smembers)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_SET, &e))
        return;
    if (!e) {
        KV_LIT(cx, "*0\r\n");
        return;
    }
    kv_reply_arr(cx->r, set_of(e)->count);
    KV_DICT_EACH(set_of(e), m)
    kv_buf_bulk(cx->r, m->key, m->klen);
}

KV_CMD(sismember)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_SET, &e))
        kv_buf_str(cx->r, has(e, cx, 2) ? ":1\r\n" : ":0\r\n");
}

KV_CMD(smismember)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_SET, &e))
        return;
    kv_reply_arr(cx->r, cx->argc - 2);
    for (uint32_t i = 2; i < cx->argc; i++)
        kv_buf_str(cx->r, has(e, cx, i) ? ":1\r\n" : ":0\r\n");
}

KV_CMD(scard)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_SET, &e))
        kv_buf_int(cx->r, e ? (int64_t)set_of(e)->count : 0);
}

/* The optional count of SPOP / SRANDMEMBER: true with *given set when
 * it is given; false with the error replied. */
static bool count_arg(kv_cx *cx, int64_t *count, bool *given, bool positive)
{
    *given = cx->argc == 3;
    if (cx->argc > 3) {
        KV_ERR(cx, KV_SYNTAX);
        return false;
    }
    if (!*given)
        return true;
    return positive ? kv_arg_count(cx, 2, count) : kv_arg_i64(cx, 2, count);
}

KV_CMD(spop)
{
    int64_t count = 1;
    bool given;
    kv_de *e;
    if (!count_arg(cx, &count, &given, true))
        return;
    if (!kv_typed(cx, KV_T_SET, &e))
        return;
    if (!e) {
        kv_buf_str(cx->r, given ? "*0\r\n" : "$-1\r\n");
        return;
    }
    kv_dict *d = set_of(e);
    size_t n = (uint64_t)count < d->count ? (size_t)count : d->count;
    if (given)
        kv_reply_arr(cx->r, n);
    while (n--) {
        kv_de *m = kv_dict_random(d, cx->rng);
        kv_buf_bulk(cx->r, m->key, m->klen);
        free(kv_dict_remove(d, kv_dict_link(d, m->key, m->klen, m->hash)));
    }
    kv_drop_if_empty(cx, e);
}

KV_CMD(srandmember)
{
    int64_t count = 1;
    bool given;
    kv_de *e;
    if (!count_arg(cx, &count, &given, false))
        return;
    if (given && count == INT64_MIN) {
        KV_ERR(cx, "-ERR value is out of range, value must between "
                   "-9223372036854775807 and 9223372036854775807\r\n");
        return;
    }
    if (!kv_typed(cx, KV_T_SET, &e))
        return;
    if (!e) {
        kv_buf_str(cx->r, given ? "*0\r\n" : "$-1\r\n");
        return;
    }
    kv_dict *d = set_of(e);
    if (!given) {
        kv_de *m = kv_dict_random(d, cx->rng);
        kv_buf_bulk(cx->r, m->key, m->klen);
        return;
    }
    if (count < 0) { /* repeats allowed */
        /* The reply can be far larger than the set: stop building it
         * once it could not be sent anyway. */
        uint64_t n = (uint64_t)-count;
        size_t start = cx->r->n;
        kv_reply_arr(cx->r, n);
        while (n--) {
            kv_de *m = kv_dict_random(d, cx->rng);
            kv_buf_bulk(cx->r, m->key, m->klen);
            if (cx->r->over || cx->r->n - start > KV_MAX_PAYLOAD) {
                cx->r->n = start;
                KV_ERR(cx, KV_TOOBIG);
                return;
            }
        }
        return;
    }
    /* Distinct members: the first count of a partial shuffle. */
    size_t n = (uint64_t)count < d->count ? (size_t)count : d->count;
    kv_de **all = kv_xrealloc(NULL, d->count * sizeof *all);
    size_t k = 0;
    KV_DICT_EACH(d, m)
    all[k++] = m;
    kv_reply_arr(cx->r, n);
    for (size_t i = 0; i < n; i++) {
        size_t j = i + kv_rand(cx->rng) % (k - i);
        kv_de *t = all[i];
        all[i] = all[j];
        all[j] = t;
        kv_buf_bulk(cx->r, all[i]->key, all[i]->klen);
    }
    free(all);
}
