/* troupe-kv shard side: sorted set commands (Redis 7.0 replies and
 * errors). */
#include "store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char ERR_NAN[] = "-ERR resulting score is not a number (NaN)\r\n";
static const char ERR_RANGE[] = "-ERR min or max is not a float\r\n";

static kv_zset *zset_of(kv_de *e) { return e->val; }

static kv_de *member(kv_de *e, const kv_cx *cx, uint32_t i)
{
    return e ? kv_dict_find(&zset_of(e)->d, cx->a[i], cx->an[i]) : NULL;
}

/* ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ... */
static void zadd(kv_cx *cx, bool zincrby)
{
    enum { NX = 1, XX = 2, GT = 4, LT = 8, CH = 16, INCR = 32 };
    unsigned f = zincrby ? INCR : 0;
    uint32_t i = 2;
    for (; !zincrby && i < cx->argc; i++) {
        if (kv_arg_is(cx, i, "nx"))
            f |= NX;
        else if (kv_arg_is(cx, i, "xx"))
            f |= XX;
        else if (kv_arg_is(cx, i, "gt"))
            f |= GT;
        else if (kv_arg_is(cx, i, "lt"))
            f |= LT;
        else if (kv_arg_is(cx, i, "ch"))
            f |= CH;
        else if (kv_arg_is(cx, i, "incr"))
            f |= INCR;
        else
            break;
    }
    uint32_t pairs = (cx->argc - i) / 2;
    if ((cx->argc - i) % 2 || !pairs) {
        KV_ERR(cx, KV_SYNTAX);
        return;
    }
    if ((f & NX) && (f & XX)) {
        KV_ERR(cx, "-ERR XX and NX options at the same time are not "
                   "compatible\r\n");
        return;
    }
    if (((f & (GT | LT)) && (f & NX)) || ((f & GT) && (f & LT))) {
        KV_ERR(cx, "-ERR GT, LT, and/or NX options at the same time are not "
                   "compatible\r\n");
        return;
    }
    if ((f & INCR) && pairs > 1) {
        KV_ERR(cx, "-ERR INCR option supports a single increment-element "
                   "pair\r\n");
        return;
    }
    for (uint32_t j = 0; j < pairs; j++) {
        double d;
        if (!kv_arg_double(cx, i + 2 * j, &d))
            return;
    }
    kv_de *e;
    if (!kv_typed(cx, KV_T_ZSET, &e))
        return;
    int64_t added = 0, updated = 0, processed = 0;
    double score = 0;
    if (!e && !(f & XX))
        e = kv_db_add(cx->db, cx->a[1], cx->an[1], cx->h, KV_T_ZSET,
                      kv_zset_new());
    for (uint32_t j = 0; e && j < pairs; j++) {
        const char *m = cx->a[i + 2 * j + 1];
        size_t mn = cx->an[i + 2 * j + 1];
        kv_parse_double(cx->a[i + 2 * j], cx->an[i + 2 * j], &score, true);
        kv_de *cur = kv_dict_find(&zset_of(e)->d, m, mn);
        if (cur) {
            double old = cur->score;
            if (f & NX)
                continue;
            if (f & INCR) {
                score += old;
                if (isnan(score)) {
                    KV_ERR(cx, ERR_NAN);
                    return;
                }
            }
            if (((f & LT) && score >= old) || ((f & GT) && score <= old))
                continue;
            if (score != old) {
                kv_zset_update(zset_of(e), cur, score);
                updated++;
            }
            processed++;
        } else if (!(f & XX)) {
            kv_zset_set(zset_of(e), m, mn, score);
            added++;
            processed++;
        }
    }
    if (f & INCR) {
        if (processed)
            kv_reply_double(cx->r, score);
        else
            KV_LIT(cx, "$-1\r\n");
    } else {
        kv_buf_int(cx->r, (f & CH) ? added + updated : added);
    }
}

KV_CMD(zadd) { zadd(cx, false); }

/* ZINCRBY key increment member: ZADD INCR with its own arity. */
KV_CMD(zincrby) { zadd(cx, true); }

KV_CMD(zrem)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_ZSET, &e))
        return;
    int64_t n = 0;
    for (uint32_t i = 2; e && i < cx->argc; i++) {
        kv_de **link = kv_dict_link(&zset_of(e)->d, cx->a[i], cx->an[i],
                                    kv_hash(cx->a[i], cx->an[i]));
        if (*link) {
            kv_zset_del(zset_of(e), link);
            n++;
        }
    }
    kv_buf_int(cx->r, n);
    if (e)
        kv_drop_if_empty(cx, e);
}

static void reply_score(kv_cx *cx, const kv_de *m)
{
    if (m)
        kv_reply_double(cx->r, m->score);
    else
        KV_LIT(cx, "$-1\r\n");
}

KV_CMD(zscore)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_ZSET, &e))
        reply_score(cx, member(e, cx, 2));
}

KV_CMD(zmscore)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_ZSET, &e))
        return;
    kv_reply_arr(cx->r, cx->argc - 2);
    for (uint32_t i = 2; i < cx->argc; i++)
        reply_score(cx, member(e, cx, i));
}

KV_CMD(zcard)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_ZSET, &e))
        kv_buf_int(cx->r, e ? (int64_t)kv_zset_len(zset_of(e)) : 0);
}

/* Redis's zslParseRange: "(" for exclusive, inf/-inf, not NaN. */
static bool parse_bound(const char *p, size_t n, double *v, bool *ex)
{
    *ex = n && p[0] == '(';
    return kv_parse_double(p + *ex, n - *ex, v, false);
}

/* Redis's zslParseLexRangeItem: "[m" or "(m", or "-" / "+". */
static bool parse_lex(const char *p, size_t n, const char **m, size_t *mn,
                      bool *ex, int *inf)
{
    *inf = 0;
    *ex = false;
    if (n == 1 && (p[0] == '-' || p[0] == '+')) {
        *inf = p[0] == '-' ? -1 : 1;
        return true;
    }
    if (n == 0 || (p[0] != '(' && p[0] != '['))
        return false;
    *ex = p[0] == '(';
    *m = p + 1;
    *mn = n - 1;
    return true;
}

/* The range given by arguments mi and ma (lex or by score), or false with
 * Redis's error replied. */
static bool range_args(kv_cx *cx, uint32_t mi, uint32_t ma, bool lex,
                       kv_zrange *r)
{
    memset(r, 0, sizeof *r);
    r->lex = lex;
    if (lex) {
        if (parse_lex(cx->a[mi], cx->an[mi], &r->lmin, &r->lminn, &r->minex,
                      &r->lmin_inf) &&
            parse_lex(cx->a[ma], cx->an[ma], &r->lmax, &r->lmaxn, &r->maxex,
                      &r->lmax_inf))
            return true;
        KV_ERR(cx, "-ERR min or max not valid string range item\r\n");
        return false;
    }
    if (parse_bound(cx->a[mi], cx->an[mi], &r->min, &r->minex) &&
        parse_bound(cx->a[ma], cx->an[ma], &r->max, &r->maxex))
        return true;
    KV_ERR(cx, ERR_RANGE);
    return false;
}

/* ZCOUNT ZLEXCOUNT: by ranks, O(log n). */
static void count_in(kv_cx *cx, bool lex)
{
    kv_zrange r;
    kv_de *e;
    if (!range_args(cx, 2, 3, lex, &r) || !kv_typed(cx, KV_T_ZSET, &e))
        return;
    size_t n = 0;
    kv_zit lo = e ? kv_zset_first_in(zset_of(e), &r) : (kv_zit){0};
    if (lo.l) {
        kv_zit hi = kv_zset_last_in(zset_of(e), &r);
        n = kv_zset_rank(zset_of(e), kv_zit_member(hi)) -
            kv_zset_rank(zset_of(e), kv_zit_member(lo)) + 1;
    }
    kv_buf_int(cx->r, (int64_t)n);
}

KV_CMD(zcount) { count_in(cx, false); }
KV_CMD(zlexcount) { count_in(cx, true); }

static void rank(kv_cx *cx, bool rev)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_ZSET, &e))
        return;
    kv_de *m = member(e, cx, 2);
    if (!m) {
        KV_LIT(cx, "$-1\r\n");
        return;
    }
    size_t r = kv_zset_rank(zset_of(e), m);
    kv_buf_int(cx->r, (int64_t)(rev ? kv_zset_len(zset_of(e)) - 1 - r : r));
}

KV_CMD(zrank) { rank(cx, false); }
KV_CMD(zrevrank) { rank(cx, true); }

static void emit(kv_cx *cx, kv_zit it, bool scores)
{
    const kv_de *m = kv_zit_member(it);
    kv_buf_bulk(cx->r, m->key, m->klen);
    if (scores)
        kv_reply_double(cx->r, kv_zit_score(it));
}

/* By index: Redis's clamping of start and stop. */
static void range_by_rank(kv_cx *cx, kv_zset *z, int64_t start, int64_t stop,
                          bool rev, bool scores)
{
    size_t len = kv_zset_len(z);
    int64_t l = (int64_t)len;
    if (start < 0)
        start += l;
    if (stop < 0)
        stop += l;
    if (start < 0)
        start = 0;
    if (start > stop || start >= l) {
        KV_LIT(cx, "*0\r\n");
        return;
    }
    if (stop >= l)
        stop = l - 1;
    size_t n = (size_t)(stop - start + 1);
    kv_reply_arr(cx->r, n * (1 + scores));
    kv_zit it = kv_zset_at(z, rev ? len - 1 - (size_t)start : (size_t)start);
    for (; n--; it = rev ? kv_zit_prev(it) : kv_zit_next(it))
        emit(cx, it, scores);
}

/* By score or lex range, after off nodes, at most lim (< 0: all); the
 * reply's length is known only at the end. */
static void range_by_value(kv_cx *cx, kv_zset *z, const kv_zrange *r,
                           int64_t off, int64_t lim, bool rev, bool scores)
{
    kv_zit it = rev ? kv_zset_last_in(z, r) : kv_zset_first_in(z, r);
    if (off < 0)
        it.l = NULL;
    for (; it.l && off > 0; off--)
        it = rev ? kv_zit_prev(it) : kv_zit_next(it);
    kv_buf items = {0};
    kv_buf *out = cx->r;
    cx->r = &items;
    size_t n = 0;
    for (; it.l && lim != 0; lim--, n++) {
        double s = kv_zit_score(it);
        const kv_de *m = kv_zit_member(it);
        if (rev ? !kv_zrange_gte_min(s, m, r) : !kv_zrange_lte_max(s, m, r))
            break;
        emit(cx, it, scores);
        it = rev ? kv_zit_prev(it) : kv_zit_next(it);
    }
    cx->r = out;
    kv_reply_arr(cx->r, n * (1 + scores));
    kv_buf_add(cx->r, items.p, items.n);
    kv_buf_free(&items);
}

enum { BY_AUTO = -1, BY_RANK, BY_SCORE, BY_LEX };

/* ZRANGE and its older forms (Redis 7.0's zrangeGenericCommand): by and
 * rev are preset by the command (BY_AUTO / -1: chosen by options). */
static void zrange(kv_cx *cx, int by, int rev)
{
    bool scores = false, limit = false;
    int64_t off = 0, lim = -1;
    for (uint32_t j = 4; j < cx->argc; j++) {
        uint32_t left = cx->argc - j - 1;
        if (kv_arg_is(cx, j, "withscores")) {
            scores = true;
        } else if (kv_arg_is(cx, j, "limit") && left >= 2) {
            if (!kv_arg_i64(cx, j + 1, &off) || !kv_arg_i64(cx, j + 2, &lim))
                return;
            limit = true;
            j += 2;
        } else if (rev < 0 && kv_arg_is(cx, j, "rev")) {
            rev = 1;
        } else if (by == BY_AUTO && kv_arg_is(cx, j, "byscore")) {
            by = BY_SCORE;
        } else if (by == BY_AUTO && kv_arg_is(cx, j, "bylex")) {
            by = BY_LEX;
        } else {
            KV_ERR(cx, KV_SYNTAX);
            return;
        }
    }
    if (by == BY_AUTO)
        by = BY_RANK;
    if (limit && by == BY_RANK) {
        KV_ERR(cx, "-ERR syntax error, LIMIT is only supported in "
                   "combination with either BYSCORE or BYLEX\r\n");
        return;
    }
    if (scores && by == BY_LEX) {
        KV_ERR(cx, "-ERR syntax error, WITHSCORES not supported in "
                   "combination with BYLEX\r\n");
        return;
    }
    /* Score and lex ranges are given as max min when reversed. */
    uint32_t mi = 2, ma = 3;
    if (rev == 1 && by != BY_RANK) {
        mi = 3;
        ma = 2;
    }
    kv_zrange r;
    int64_t start = 0, stop = 0;
    if (by != BY_RANK) {
        if (!range_args(cx, mi, ma, by == BY_LEX, &r))
            return;
    } else if (!kv_arg_i64(cx, mi, &start) || !kv_arg_i64(cx, ma, &stop)) {
        return;
    }
    kv_de *e;
    if (!kv_typed(cx, KV_T_ZSET, &e))
        return;
    if (!e)
        KV_LIT(cx, "*0\r\n");
    else if (by == BY_RANK)
        range_by_rank(cx, zset_of(e), start, stop, rev == 1, scores);
    else
        range_by_value(cx, zset_of(e), &r, off, lim, rev == 1, scores);
}

KV_CMD(zrange) { zrange(cx, BY_AUTO, -1); }
KV_CMD(zrevrange) { zrange(cx, BY_RANK, 1); }
KV_CMD(zrangebyscore) { zrange(cx, BY_SCORE, 0); }
KV_CMD(zrevrangebyscore) { zrange(cx, BY_SCORE, 1); }
KV_CMD(zrangebylex) { zrange(cx, BY_LEX, 0); }
KV_CMD(zrevrangebylex) { zrange(cx, BY_LEX, 1); }

/* ZPOPMIN ZPOPMAX key [count]: a flat member, score array. */
static void zpop(kv_cx *cx, bool max)
{
    int64_t count = 1;
    if (cx->argc > 3) {
        KV_ERR(cx, KV_SYNTAX);
        return;
    }
    if (cx->argc == 3 && !kv_arg_count(cx, 2, &count))
        return;
    kv_de *e;
    if (!kv_typed(cx, KV_T_ZSET, &e))
        return;
    if (!e) {
        KV_LIT(cx, "*0\r\n");
        return;
    }
    kv_zset *z = zset_of(e);
    size_t n = (uint64_t)count < kv_zset_len(z) ? (size_t)count
                                                : kv_zset_len(z);
    kv_reply_arr(cx->r, n * 2);
    while (n--) {
        kv_zit it = max ? kv_zset_last(z) : kv_zset_first(z);
        const kv_de *m = kv_zit_member(it);
        emit(cx, it, true);
        kv_zset_del(z, kv_dict_link(&z->d, m->key, m->klen, m->hash));
    }
    kv_drop_if_empty(cx, e);
}

KV_CMD(zpopmin) { zpop(cx, false); }
KV_CMD(zpopmax) { zpop(cx, true); }
