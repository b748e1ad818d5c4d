/* troupe-kv shard side: list commands (Redis 7.0 replies and errors). */
#include "store.h"

#include <stdlib.h>
#include <string.h>

static kv_list *list_of(kv_de *e) { return e->val; }

/* LPUSH RPUSH LPUSHX RPUSHX */
static void push(kv_cx *cx, bool left, bool existing)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_LIST, &e))
        return;
    if (!e) {
        if (existing) {
            KV_LIT(cx, ":0\r\n");
            return;
        }
        e = kv_db_add(cx->db, cx->a[1], cx->an[1], cx->h, KV_T_LIST,
                      kv_list_new());
    }
    for (uint32_t i = 2; i < cx->argc; i++)
        kv_list_push(list_of(e), kv_str_new(cx->a[i], cx->an[i]), left);
    kv_buf_int(cx->r, (int64_t)list_of(e)->n);
}

KV_CMD(lpush) { push(cx, true, false); }
KV_CMD(rpush) { push(cx, false, false); }
KV_CMD(lpushx) { push(cx, true, true); }
KV_CMD(rpushx) { push(cx, false, true); }

static void bulk(kv_cx *cx, const kv_str *s)
{
    kv_buf_bulk(cx->r, s->p, s->len);
}

/* LPOP RPOP key [count] */
static void pop(kv_cx *cx, bool left)
{
    int64_t count = -1;
    if (cx->argc > 3) {
        kv_buf_fmt(cx->r, "-ERR wrong number of arguments for '%s' command\r\n",
                   left ? "lpop" : "rpop");
        return;
    }
    if (cx->argc == 3 && !kv_arg_count(cx, 2, &count))
        return;
    kv_de *e;
    if (!kv_typed(cx, KV_T_LIST, &e))
        return;
    if (!e) {
        kv_buf_str(cx->r, count < 0 ? "$-1\r\n" : "*-1\r\n");
        return;
    }
    kv_list *l = list_of(e);
    if (count < 0) {
        kv_str *s = kv_list_pop(l, left);
        bulk(cx, s);
        free(s);
    } else {
        size_t n = (size_t)count < l->n ? (size_t)count : l->n;
        kv_reply_arr(cx->r, n);
        for (size_t i = 0; i < n; i++) {
            kv_str *s = kv_list_pop(l, left);
            bulk(cx, s);
            free(s);
        }
    }
    kv_drop_if_empty(cx, e);
}

KV_CMD(lpop) { pop(cx, true); }
KV_CMD(rpop) { pop(cx, false); }

KV_CMD(llen)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_LIST, &e))
        kv_buf_int(cx->r, e ? (int64_t)list_of(e)->n : 0);
}

/* Clamp Redis-style [start, stop] (negative from the end) to a list of n:
 * false if the range is empty. */
static bool clamp(int64_t start, int64_t stop, size_t n, size_t *lo, size_t *hi)
{
    int64_t len = (int64_t)n;
    if (start < 0)
        start += len;
    if (stop < 0)
        stop += len;
    if (start < 0)
        start = 0;
    if (start > stop || start >= len)
        return false;
    if (stop >= len)
        stop = len - 1;
    *lo = (size_t)start;
    *hi = (size_t)stop;
    return true;
}

KV_CMD(lrange)
{
    int64_t start, stop;
    kv_de *e;
    if (!kv_arg_i64(cx, 2, &start) || !kv_arg_i64(cx, 3, &stop) ||
        !kv_typed(cx, KV_T_LIST, &e))
        return;
    size_t lo, hi;
    if (!e || !clamp(start, stop, list_of(e)->n, &lo, &hi)) {
        KV_LIT(cx, "*0\r\n");
        return;
    }
    kv_reply_arr(cx->r, hi - lo + 1);
    for (size_t i = lo; i <= hi; i++)
        bulk(cx, *kv_list_at(list_of(e), i));
}

/* An index (negative from the end) into a list of n, or false. */
static bool index_of(int64_t i, size_t n, size_t *out)
{
    if (i < 0)
        i += (int64_t)n;
    if (i < 0 || i >= (int64_t)n)
        return false;
    *out = (size_t)i;
    return true;
}

KV_CMD(lindex)
{
    int64_t i;
    kv_de *e;
    size_t at;
    if (!kv_arg_i64(cx, 2, &i) || !kv_typed(cx, KV_T_LIST, &e))
        return;
    if (e && index_of(i, list_of(e)->n, &at))
        bulk(cx, *kv_list_at(list_of(e), at));
    else
        KV_LIT(cx, "$-1\r\n");
}

KV_CMD(lset)
{
    int64_t i;
    kv_de *e;
    size_t at;
    if (!kv_arg_i64(cx, 2, &i) || !kv_typed(cx, KV_T_LIST, &e))
        return;
    if (!e) {
        KV_ERR(cx, "-ERR no such key\r\n");
        return;
    }
    if (!index_of(i, list_of(e)->n, &at)) {
        KV_ERR(cx, "-ERR index out of range\r\n");
        return;
    }
    kv_str **slot = kv_list_at(list_of(e), at);
    free(*slot);
    *slot = kv_str_new(cx->a[3], cx->an[3]);
    KV_LIT(cx, "+OK\r\n");
}

static bool eq(const kv_str *s, const char *p, size_t n)
{
    return s->len == n && memcmp(s->p, p, n) == 0;
}

/* LREM key count element: count > 0 from the head, < 0 from the tail,
 * 0 all; one pass, then the holes are closed. */
KV_CMD(lrem)
{
    int64_t count;
    kv_de *e;
    if (!kv_arg_i64(cx, 2, &count) || !kv_typed(cx, KV_T_LIST, &e))
        return;
    if (!e) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    kv_list *l = list_of(e);
    uint64_t want = count == 0           ? UINT64_MAX
                    : count == INT64_MIN ? (uint64_t)INT64_MAX + 1
                    : count < 0          ? (uint64_t)-count
                                         : (uint64_t)count;
    uint64_t removed = 0;
    for (size_t j = 0; j < l->n && removed < want; j++) {
        size_t i = count < 0 ? l->n - 1 - j : j;
        kv_str **s = kv_list_at(l, i);
        if (eq(*s, cx->a[3], cx->an[3])) {
            free(*s);
            *s = NULL;
            removed++;
        }
    }
    if (removed)
        kv_list_compact(l);
    kv_buf_int(cx->r, (int64_t)removed);
    kv_drop_if_empty(cx, e);
}

KV_CMD(ltrim)
{
    int64_t start, stop;
    kv_de *e;
    if (!kv_arg_i64(cx, 2, &start) || !kv_arg_i64(cx, 3, &stop) ||
        !kv_typed(cx, KV_T_LIST, &e))
        return;
    if (e) {
        kv_list *l = list_of(e);
        size_t lo = 0, hi = 0;
        bool keep = clamp(start, stop, l->n, &lo, &hi);
        size_t right = keep ? l->n - 1 - hi : 0, left = keep ? lo : l->n;
        while (left--)
            free(kv_list_pop(l, true));
        while (right--)
            free(kv_list_pop(l, false));
        kv_drop_if_empty(cx, e);
    }
    KV_LIT(cx, "+OK\r\n");
}

/* LINSERT key BEFORE|AFTER pivot element */
KV_CMD(linsert)
{
    bool after = kv_arg_is(cx, 2, "after");
    if (!after && !kv_arg_is(cx, 2, "before")) {
        KV_ERR(cx, KV_SYNTAX);
        return;
    }
    kv_de *e;
    if (!kv_typed(cx, KV_T_LIST, &e))
        return;
    if (!e) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    kv_list *l = list_of(e);
    for (size_t i = 0; i < l->n; i++)
        if (eq(*kv_list_at(l, i), cx->a[3], cx->an[3])) {
            kv_list_insert(l, i + after, kv_str_new(cx->a[4], cx->an[4]));
            kv_buf_int(cx->r, (int64_t)l->n);
            return;
        }
    KV_LIT(cx, ":-1\r\n");
}
