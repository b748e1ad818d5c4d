/*
 * troupe-kv shard side: string commands and the per-key commands (TYPE,
 * RENAME, expiry). Replies and error texts are Redis 7.0's.
 */
#include "store.h"

#include <stdlib.h>
#include <string.h>

/* The string's bulk, or nil for an absent key. */
static void reply_str(kv_cx *cx, const kv_de *e)
{
    if (e) {
        const kv_str *s = e->val;
        kv_buf_bulk(cx->r, s->p, s->len);
    } else {
        KV_LIT(cx, "$-1\r\n");
    }
}

/* Store a string at the key (entry e or absent), keeping the expiry only
 * if keep_ttl. */
static kv_de *store(kv_cx *cx, kv_de *e, kv_str *s, bool keep_ttl)
{
    if (e) {
        kv_db_replace(e, KV_T_STRING, s);
        if (!keep_ttl)
            kv_db_set_expire(cx->db, e, 0);
        return e;
    }
    return kv_db_add(cx->db, cx->a[1], cx->an[1], cx->h, KV_T_STRING, s);
}

/* Lower-cased command name into out (for error texts). */
static const char *cmd_name(const kv_cx *cx, char *out, size_t size)
{
    size_t n = cx->an[0] < size - 1 ? cx->an[0] : size - 1;
    for (size_t i = 0; i < n; i++) {
        char c = cx->a[0][i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
    return out;
}

/* An expiry argument in unit ms (1000: seconds); absolute if abs, else
 * from now. Redis's getExpireMillisecondsOrReply. */
static bool expire_arg(kv_cx *cx, uint32_t i, int64_t unit, bool abs,
                       int64_t *at)
{
    int64_t v;
    if (!kv_arg_i64(cx, i, &v))
        return false;
    if (v <= 0 || (unit == 1000 && v > INT64_MAX / 1000)) {
        char nm[32];
        kv_buf_fmt(cx->r, "-ERR invalid expire time in '%s' command\r\n",
                   cmd_name(cx, nm, sizeof nm));
        return false;
    }
    v *= unit;
    if (!abs) {
        if (v > INT64_MAX - cx->now) {
            char nm[32];
            kv_buf_fmt(cx->r, "-ERR invalid expire time in '%s' command\r\n",
                       cmd_name(cx, nm, sizeof nm));
            return false;
        }
        v += cx->now;
    }
    *at = v;
    return true;
}

KV_CMD(get)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_STRING, &e))
        return;
    reply_str(cx, e);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] */
KV_CMD(set)
{
    enum { NX = 1, XX = 2, GET = 4, KEEP = 8, EXP = 16 };
    unsigned f = 0;
    uint32_t exp_i = 0;
    int64_t unit = 1;
    bool abs = false;
    for (uint32_t i = 3; i < cx->argc; i++) {
        bool more = i + 1 < cx->argc;
        if (kv_arg_is(cx, i, "nx") && !(f & XX)) {
            f |= NX;
        } else if (kv_arg_is(cx, i, "xx") && !(f & NX)) {
            f |= XX;
        } else if (kv_arg_is(cx, i, "get")) {
            f |= GET;
        } else if (kv_arg_is(cx, i, "keepttl") && !(f & EXP)) {
            f |= KEEP;
        } else if (more && !(f & (EXP | KEEP)) &&
                   (kv_arg_is(cx, i, "ex") || kv_arg_is(cx, i, "px") ||
                    kv_arg_is(cx, i, "exat") || kv_arg_is(cx, i, "pxat"))) {
            f |= EXP;
            unit = (cx->a[i][0] | 0x20) == 'e' ? 1000 : 1;
            abs = cx->an[i] == 4;
            exp_i = ++i;
        } else {
            KV_ERR(cx, KV_SYNTAX);
            return;
        }
    }
    int64_t at = 0;
    if ((f & EXP) && !expire_arg(cx, exp_i, unit, abs, &at))
        return;
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    if (f & GET) {
        if (e && e->type != KV_T_STRING) {
            KV_ERR(cx, KV_WRONGTYPE);
            return;
        }
        reply_str(cx, e);
    }
    if (((f & NX) && e) || ((f & XX) && !e)) {
        if (!(f & GET))
            KV_LIT(cx, "$-1\r\n");
        return;
    }
    e = store(cx, e, kv_str_new(cx->a[2], cx->an[2]), f & KEEP);
    if (f & EXP) {
        if (at <= cx->now)
            kv_db_delete(cx->db, e); /* EXAT/PXAT in the past */
        else
            kv_db_set_expire(cx->db, e, at);
    }
    if (!(f & GET))
        KV_LIT(cx, "+OK\r\n");
}

KV_CMD(setnx)
{
    if (kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now)) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    store(cx, NULL, kv_str_new(cx->a[2], cx->an[2]), false);
    KV_LIT(cx, ":1\r\n");
}

/* SETEX key seconds value, PSETEX key ms value */
static void setex(kv_cx *cx, int64_t unit)
{
    int64_t at;
    if (!expire_arg(cx, 2, unit, false, &at))
        return;
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    e = store(cx, e, kv_str_new(cx->a[3], cx->an[3]), false);
    kv_db_set_expire(cx->db, e, at);
    KV_LIT(cx, "+OK\r\n");
}

KV_CMD(setex) { setex(cx, 1000); }
KV_CMD(psetex) { setex(cx, 1); }

KV_CMD(getset)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_STRING, &e))
        return;
    reply_str(cx, e);
    store(cx, e, kv_str_new(cx->a[2], cx->an[2]), false);
}

KV_CMD(getdel)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_STRING, &e))
        return;
    if (!e) {
        KV_LIT(cx, "$-1\r\n");
        return;
    }
    reply_str(cx, e);
    kv_db_delete(cx->db, e);
}

/* GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST] */
KV_CMD(getex)
{
    int64_t at = 0;
    bool persist = false, set = false;
    for (uint32_t i = 2; i < cx->argc; i++) {
        bool more = i + 1 < cx->argc;
        if (kv_arg_is(cx, i, "persist") && !set && !persist) {
            persist = true;
        } else if (more && !set && !persist &&
                   (kv_arg_is(cx, i, "ex") || kv_arg_is(cx, i, "px") ||
                    kv_arg_is(cx, i, "exat") || kv_arg_is(cx, i, "pxat"))) {
            int64_t unit = (cx->a[i][0] | 0x20) == 'e' ? 1000 : 1;
            bool abs = cx->an[i] == 4;
            if (!expire_arg(cx, ++i, unit, abs, &at))
                return;
            set = true;
        } else {
            KV_ERR(cx, KV_SYNTAX);
            return;
        }
    }
    kv_de *e;
    if (!kv_typed(cx, KV_T_STRING, &e))
        return;
    if (!e) {
        KV_LIT(cx, "$-1\r\n");
        return;
    }
    reply_str(cx, e);
    if (set && at <= cx->now)
        kv_db_delete(cx->db, e);
    else if (set || persist)
        kv_db_set_expire(cx->db, e, at);
}

KV_CMD(append)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_STRING, &e))
        return;
    const kv_str *old = e ? e->val : NULL;
    size_t on = old ? old->len : 0;
    if (on + cx->an[2] > KV_STR_MAX) {
        KV_ERR(cx, "-ERR string exceeds maximum allowed size "
                   "(proto-max-bulk-len)\r\n");
        return;
    }
    kv_str *s = kv_xrealloc(NULL, sizeof *s + on + cx->an[2]);
    s->len = (uint32_t)(on + cx->an[2]);
    if (on)
        memcpy(s->p, old->p, on);
    memcpy(s->p + on, cx->a[2], cx->an[2]);
    store(cx, e, s, true);
    kv_buf_int(cx->r, s->len);
}

KV_CMD(strlen)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_STRING, &e))
        kv_buf_int(cx->r, e ? ((kv_str *)e->val)->len : 0);
}

static void incr_by(kv_cx *cx, int64_t by)
{
    kv_de *e;
    kv_str *s;
    int64_t v;
    if (kv_typed(cx, KV_T_STRING, &e) &&
        kv_incr_i64(cx, e ? e->val : NULL, by, KV_NOTINT, &s, &v)) {
        if (!e || s != e->val)
            store(cx, e, s, true);
        kv_buf_int(cx->r, v);
    }
}

KV_CMD(incr) { incr_by(cx, 1); }
KV_CMD(decr) { incr_by(cx, -1); }

KV_CMD(incrby)
{
    int64_t v;
    if (kv_arg_i64(cx, 2, &v))
        incr_by(cx, v);
}

KV_CMD(decrby)
{
    int64_t v;
    if (!kv_arg_i64(cx, 2, &v))
        return;
    if (v == INT64_MIN)
        KV_ERR(cx, "-ERR decrement would overflow\r\n");
    else
        incr_by(cx, -v);
}

KV_CMD(incrbyfloat)
{
    kv_de *e;
    kv_str *s;
    long double by;
    if (!kv_typed(cx, KV_T_STRING, &e))
        return;
    if (!kv_parse_ld(cx->a[2], cx->an[2], &by)) {
        KV_ERR(cx, KV_NOTFLOAT);
        return;
    }
    if (kv_incr_ld(cx, e ? e->val : NULL, by, KV_NOTFLOAT, &s)) {
        store(cx, e, s, true);
        kv_buf_bulk(cx->r, s->p, s->len);
    }
}

/* ------------------------------------------------------- key commands */

KV_CMD(type)
{
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    kv_buf_fmt(cx->r, "+%s\r\n", e ? kv_type_name(e->type) : "none");
}

static void rename_cmd(kv_cx *cx, bool nx)
{
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    if (!e) {
        KV_ERR(cx, "-ERR no such key\r\n");
        return;
    }
    const char *nk = cx->a[2];
    size_t nkn = cx->an[2];
    if (nkn == cx->an[1] && memcmp(nk, cx->a[1], nkn) == 0) {
        kv_buf_str(cx->r, nx ? ":0\r\n" : "+OK\r\n");
        return;
    }
    unsigned dst = kv_shard_of(cx->srv, nk, nkn);
    if (dst != cx->shard) {
        kv_shard_move(cx, e, dst, nk, nkn, nx ? KV_MOVE_NX : 0);
        return;
    }
    uint64_t h = kv_hash(nk, nkn);
    kv_de *d = kv_db_lookup(cx->db, nk, nkn, h, cx->now);
    if (d && nx) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    if (d)
        kv_db_delete(cx->db, d);
    /* The value and expiry move to a new entry; the old one goes. */
    kv_de *n = kv_db_add(cx->db, nk, nkn, h, e->type, e->val);
    int64_t exp = e->expire;
    e->type = KV_T_STRING;
    e->val = NULL;
    kv_db_delete(cx->db, e);
    kv_db_set_expire(cx->db, n, exp);
    kv_buf_str(cx->r, nx ? ":1\r\n" : "+OK\r\n");
}

KV_CMD(rename) { rename_cmd(cx, false); }
KV_CMD(renamenx) { rename_cmd(cx, true); }

KV_CMD(persist)
{
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    if (!e || !e->expire) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    kv_db_set_expire(cx->db, e, 0);
    KV_LIT(cx, ":1\r\n");
}

/* EXPIRE PEXPIRE EXPIREAT PEXPIREAT key t [NX|XX|GT|LT]: Redis 7.0's
 * expireGenericCommand. */
static void expire_cmd(kv_cx *cx, int64_t unit, bool abs)
{
    enum { NX = 1, XX = 2, GT = 4, LT = 8 };
    unsigned f = 0;
    for (uint32_t i = 3; i < cx->argc; i++) {
        if (kv_arg_is(cx, i, "nx"))
            f |= NX;
        else if (kv_arg_is(cx, i, "xx"))
            f |= XX;
        else if (kv_arg_is(cx, i, "gt"))
            f |= GT;
        else if (kv_arg_is(cx, i, "lt"))
            f |= LT;
        else {
            kv_buf_fmt(cx->r, "-ERR Unsupported option %.*s\r\n",
                       (int)(cx->an[i] > 128 ? 128 : cx->an[i]), cx->a[i]);
            return;
        }
    }
    if ((f & NX) && (f & (XX | GT | LT))) {
        KV_ERR(cx, "-ERR NX and XX, GT or LT options at the same time are "
                   "not compatible\r\n");
        return;
    }
    if ((f & GT) && (f & LT)) {
        KV_ERR(cx, "-ERR GT and LT options at the same time are not "
                   "compatible\r\n");
        return;
    }
    int64_t when, base = abs ? 0 : cx->now;
    if (!kv_arg_i64(cx, 2, &when))
        return;
    if ((unit == 1000 &&
         (when > INT64_MAX / 1000 || when < INT64_MIN / 1000)) ||
        (when *= unit, when > INT64_MAX - base)) {
        char nm[32];
        kv_buf_fmt(cx->r, "-ERR invalid expire time in '%s' command\r\n",
                   cmd_name(cx, nm, sizeof nm));
        return;
    }
    when += base;
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    int64_t cur = e && e->expire ? e->expire : -1;
    if (!e || ((f & NX) && cur != -1) || ((f & XX) && cur == -1) ||
        ((f & GT) && (cur == -1 || when <= cur)) ||
        ((f & LT) && cur != -1 && when >= cur)) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    if (when <= cx->now)
        kv_db_delete(cx->db, e);
    else
        kv_db_set_expire(cx->db, e, when);
    KV_LIT(cx, ":1\r\n");
}

KV_CMD(expire) { expire_cmd(cx, 1000, false); }
KV_CMD(pexpire) { expire_cmd(cx, 1, false); }
KV_CMD(expireat) { expire_cmd(cx, 1000, true); }
KV_CMD(pexpireat) { expire_cmd(cx, 1, true); }

/* TTL PTTL EXPIRETIME PEXPIRETIME */
static void ttl_cmd(kv_cx *cx, bool ms, bool abs)
{
    kv_de *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    if (!e || !e->expire) {
        kv_buf_str(cx->r, e ? ":-1\r\n" : ":-2\r\n");
        return;
    }
    int64_t v = abs ? e->expire : e->expire - cx->now;
    if (v < 0)
        v = 0;
    if (!ms)
        v = (v + 500) / 1000;
    kv_buf_int(cx->r, v);
}

KV_CMD(ttl) { ttl_cmd(cx, false, false); }
KV_CMD(pttl) { ttl_cmd(cx, true, false); }
KV_CMD(expiretime) { ttl_cmd(cx, false, true); }
KV_CMD(pexpiretime) { ttl_cmd(cx, true, true); }
