/*
 * troupe-kv shard side: the keyspace (a dict of typed values plus the
 * array of keys that have an expiry), value serialization, and what every
 * command group shares (argument parsing, reply helpers, glob matching).
 */
#include "store.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char KV_WRONGTYPE[] =
    "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
const char KV_NOTINT[] = "-ERR value is not an integer or out of range\r\n";
const char KV_NOTFLOAT[] = "-ERR value is not a valid float\r\n";
const char KV_SYNTAX[] = "-ERR syntax error\r\n";
const char KV_TOOBIG[] =
    "-ERR reply too large for a message (troupe-kv's payload limit)\r\n";

/* ----------------------------------------------------------------- values */

static void free_field(kv_de *e) { free(e->val); }

void kv_obj_free(uint8_t type, void *v)
{
    switch (type) {
    case KV_T_STRING: free(v); break;
    case KV_T_LIST: kv_list_free(v); break;
    case KV_T_HASH:
    case KV_T_SET:
        kv_dict_free(v, type == KV_T_HASH ? free_field : NULL);
        free(v);
        break;
    case KV_T_ZSET: kv_zset_free(v); break;
    default: break;
    }
}

/* --------------------------------------------------------------- keyspace */

void kv_db_init(kv_db *db)
{
    kv_dict_init(&db->keys);
    db->xs = NULL;
    db->xn = db->xcap = 0;
}

static void free_key(kv_de *e) { kv_obj_free(e->type, e->val); }

void kv_db_clear(kv_db *db)
{
    kv_dict_free(&db->keys, free_key);
    free(db->xs);
    kv_db_init(db);
}

void kv_db_set_expire(kv_db *db, kv_de *e, int64_t at)
{
    if (at && !e->expire) {
        if (db->xn == db->xcap) {
            db->xcap = db->xcap ? db->xcap * 2 : 64;
            db->xs = kv_xrealloc(db->xs, db->xcap * sizeof *db->xs);
        }
        e->xi = (uint32_t)db->xn;
        db->xs[db->xn++] = e;
    } else if (!at && e->expire) {
        /* Swap the last one into its place. */
        kv_de *last = db->xs[--db->xn];
        db->xs[e->xi] = last;
        last->xi = e->xi;
    }
    e->expire = at;
}

void kv_db_delete(kv_db *db, kv_de *e)
{
    kv_db_set_expire(db, e, 0);
    kv_de **link = kv_dict_link(&db->keys, e->key, e->klen, e->hash);
    kv_dict_remove(&db->keys, link);
    kv_obj_free(e->type, e->val);
    free(e);
}

kv_de *kv_db_lookup(kv_db *db, const void *k, size_t n, uint64_t h, int64_t now)
{
    kv_de *e = *kv_dict_link(&db->keys, k, n, h);
    if (e && e->expire && e->expire <= now) {
        kv_db_delete(db, e);
        return NULL;
    }
    return e;
}

kv_de *kv_db_add(kv_db *db, const void *k, size_t n, uint64_t h, uint8_t type,
                 void *val)
{
    kv_de *e =
        kv_dict_insert(&db->keys, kv_dict_link(&db->keys, k, n, h), k, n, h);
    e->type = type;
    e->val = val;
    return e;
}

void kv_db_replace(kv_de *e, uint8_t type, void *val)
{
    kv_obj_free(e->type, e->val);
    e->type = type;
    e->val = val;
}

/* ---------------------------------------------------- value serialization */

/* Payload by type (little-endian): a string is its bytes; a list or a
 * set is u32 count, then count x (u32 len, bytes); a hash is u32 count,
 * then count x (field, value) each as (u32 len, bytes); a sorted set is
 * u32 count, then count x (u32 len, member, u64 bits of the score). */
static void put_str(kv_buf *b, const void *p, size_t n)
{
    kv_buf_reserve(b, 4 + n);
    kv_put32(b->p + b->n, (uint32_t)n);
    b->n += 4;
    kv_buf_add(b, p, n);
}

static void put_count(kv_buf *b, size_t n)
{
    kv_buf_reserve(b, 4);
    kv_put32(b->p + b->n, (uint32_t)n);
    b->n += 4;
}

void kv_obj_encode(kv_buf *b, uint8_t type, const void *val)
{
    switch (type) {
    case KV_T_STRING: {
        const kv_str *s = val;
        kv_buf_add(b, s->p, s->len);
        break;
    }
    case KV_T_LIST: {
        const kv_list *l = val;
        put_count(b, l->n);
        for (size_t i = 0; i < l->n; i++) {
            const kv_str *s = *kv_list_at(l, i);
            put_str(b, s->p, s->len);
        }
        break;
    }
    case KV_T_HASH:
    case KV_T_SET: {
        const kv_dict *d = val;
        put_count(b, d->count);
        KV_DICT_EACH(d, e)
        {
            put_str(b, e->key, e->klen);
            if (type == KV_T_HASH) {
                const kv_str *s = e->val;
                put_str(b, s->p, s->len);
            }
        }
        break;
    }
    case KV_T_ZSET: {
        const kv_zset *z = val;
        put_count(b, kv_zset_len(z));
        for (kv_zit it = kv_zset_first(z); it.l; it = kv_zit_next(it)) {
            const kv_de *m = kv_zit_member(it);
            put_str(b, m->key, m->klen);
            double score = kv_zit_score(it);
            uint64_t bits;
            memcpy(&bits, &score, sizeof bits);
            kv_buf_reserve(b, 8);
            kv_put64(b->p + b->n, bits);
            b->n += 8;
        }
        break;
    }
    default: break;
    }
}

typedef struct rd {
    const char *p, *end;
} rd;

static bool get_str(rd *r, const char **s, size_t *n)
{
    if (r->end - r->p < 4)
        return false;
    *n = kv_get32(r->p);
    if (*n > (size_t)(r->end - r->p) - 4)
        return false;
    *s = r->p + 4;
    r->p += 4 + *n;
    return true;
}

int kv_obj_decode(uint8_t type, const char *p, size_t n, void **out)
{
    if (type == KV_T_STRING) {
        if (n > KV_STR_MAX)
            return -1;
        *out = kv_str_new(p, n);
        return 0;
    }
    if (type > KV_T_ZSET || n < 4)
        return -1;
    rd r = {p + 4, p + n};
    uint32_t count = kv_get32(p);
    void *v = NULL;
    switch (type) {
    case KV_T_LIST: v = kv_list_new(); break;
    case KV_T_HASH:
    case KV_T_SET:
        v = kv_xrealloc(NULL, sizeof(kv_dict));
        kv_dict_init(v);
        break;
    default: v = kv_zset_new(); break;
    }
    bool ok = count > 0; /* an empty aggregate is never stored */
    for (uint32_t i = 0; ok && i < count; i++) {
        const char *s, *s2;
        size_t sn, sn2;
        ok = get_str(&r, &s, &sn);
        if (!ok)
            break;
        if (type == KV_T_LIST) {
            kv_list_push(v, kv_str_new(s, sn), false);
        } else if (type == KV_T_ZSET) {
            double d;
            ok = r.end - r.p >= 8;
            if (ok) {
                uint64_t bits = kv_get64(r.p);
                r.p += 8;
                memcpy(&d, &bits, sizeof d);
                ok = !isnan(d);
            }
            if (ok)
                kv_zset_set(v, s, sn, d);
        } else {
            if (type == KV_T_HASH && !(ok = get_str(&r, &s2, &sn2)))
                break;
            uint64_t h = kv_hash(s, sn);
            kv_de **link = kv_dict_link(v, s, sn, h);
            ok = *link == NULL; /* no duplicates */
            if (ok) {
                kv_de *e = kv_dict_insert(v, link, s, sn, h);
                if (type == KV_T_HASH)
                    e->val = kv_str_new(s2, sn2);
            }
        }
    }
    if (!ok || r.p != r.end) {
        kv_obj_free(type, v);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- replies */

void kv_reply_arr(kv_buf *b, size_t n) { kv_buf_fmt(b, "*%zu\r\n", n); }

/* Redis 7.0's addReplyDouble: "%.17g", and inf / -inf. */
void kv_reply_double(kv_buf *b, double d)
{
    char tmp[64];
    int n;
    if (d == 0)
        d = 0; /* no "-0": Redis's small sorted sets store scores as text */
    if (isinf(d))
        n = snprintf(tmp, sizeof tmp, "%s", d > 0 ? "inf" : "-inf");
    else
        n = snprintf(tmp, sizeof tmp, "%.17g", d);
    kv_buf_bulk(b, tmp, (size_t)n);
}

/* -------------------------------------------------------------- arguments */

bool kv_arg_is(const kv_cx *cx, uint32_t i, const char *s)
{
    size_t n = strlen(s);
    if (cx->an[i] != n)
        return false;
    for (size_t j = 0; j < n; j++) {
        char c = cx->a[i][j];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != s[j])
            return false;
    }
    return true;
}

bool kv_arg_i64(kv_cx *cx, uint32_t i, int64_t *v)
{
    if (kv_parse_i64(cx->a[i], cx->an[i], v))
        return true;
    KV_ERR(cx, KV_NOTINT);
    return false;
}

/* Like Redis's getDoubleFromObject (strict: the whole string, no
 * leading space, not NaN, no overflow or underflow to 0) or, not strict,
 * zslParseRange's bounds (overflow to inf allowed). */
bool kv_parse_double(const char *p, size_t n, double *v, bool strict)
{
    char tmp[128];
    if (n == 0 || n >= sizeof tmp || (strict && (p[0] == ' ' || p[0] == '\t')))
        return false;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    if (end != tmp + n || isnan(d) ||
        (strict && errno == ERANGE && (isinf(d) || d == 0)))
        return false;
    *v = d;
    return true;
}

/* Redis's string2ld: the whole string, no leading space, not NaN. */
bool kv_parse_ld(const char *p, size_t n, long double *v)
{
    char tmp[5 * 1024 + 1];
    if (n == 0 || n >= sizeof tmp || p[0] == ' ' || p[0] == '\t' ||
        p[0] == '\n' || p[0] == '\r')
        return false;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    long double d = strtold(tmp, &end);
    if (*end || isnan(d) || (errno == ERANGE && (isinf(d) || d == 0)))
        return false;
    *v = d;
    return true;
}

/* Redis's ld2string(LD_STR_HUMAN): "%.17Lf" without trailing zeros. */
size_t kv_fmt_ld(char *out, size_t size, long double v)
{
    int n = snprintf(out, size, "%.17Lf", v);
    if (n < 0 || (size_t)n >= size)
        return 0;
    if (strchr(out, '.')) {
        while (out[n - 1] == '0')
            n--;
        if (out[n - 1] == '.')
            n--;
    }
    if (n == 2 && out[0] == '-' && out[1] == '0') {
        out[0] = '0';
        n = 1;
    }
    return (size_t)n;
}

bool kv_incr_i64(kv_cx *cx, kv_str *old, int64_t by, const char *notint,
                 kv_str **out, int64_t *v)
{
    *v = 0;
    if (old && !kv_parse_i64(old->p, old->len, v)) {
        KV_ERR(cx, notint);
        return false;
    }
    if ((by > 0 && *v > INT64_MAX - by) || (by < 0 && *v < INT64_MIN - by)) {
        KV_ERR(cx, "-ERR increment or decrement would overflow\r\n");
        return false;
    }
    *v += by;
    char tmp[24];
    size_t n = kv_fmt_i64(tmp, *v);
    if (old && n <= old->len) {
        memcpy(old->p, tmp, n);
        old->len = (uint32_t)n;
        *out = old;
    } else {
        *out = kv_str_new(tmp, n);
    }
    return true;
}

bool kv_incr_ld(kv_cx *cx, const kv_str *old, long double by,
                const char *notfloat, kv_str **out)
{
    long double v = 0;
    if (old && !kv_parse_ld(old->p, old->len, &v)) {
        KV_ERR(cx, notfloat);
        return false;
    }
    v += by;
    char tmp[5 * 1024 + 64];
    size_t n;
    if (isnan(v) || isinf(v) || !(n = kv_fmt_ld(tmp, sizeof tmp, v))) {
        KV_ERR(cx, "-ERR increment would produce NaN or Infinity\r\n");
        return false;
    }
    *out = kv_str_new(tmp, n);
    return true;
}

bool kv_arg_count(kv_cx *cx, uint32_t i, int64_t *v)
{
    if (kv_parse_i64(cx->a[i], cx->an[i], v) && *v >= 0)
        return true;
    KV_ERR(cx, "-ERR value is out of range, must be positive\r\n");
    return false;
}

bool kv_arg_double(kv_cx *cx, uint32_t i, double *v)
{
    if (kv_parse_double(cx->a[i], cx->an[i], v, true))
        return true;
    KV_ERR(cx, KV_NOTFLOAT);
    return false;
}

bool kv_typed(kv_cx *cx, uint8_t t, kv_de **e)
{
    *e = kv_db_lookup(cx->db, cx->a[1], cx->an[1], cx->h, cx->now);
    if (*e && (*e)->type != t) {
        KV_ERR(cx, KV_WRONGTYPE);
        return false;
    }
    return true;
}

void kv_drop_if_empty(kv_cx *cx, kv_de *e)
{
    size_t n = 0;
    switch (e->type) {
    case KV_T_LIST: n = ((kv_list *)e->val)->n; break;
    case KV_T_HASH:
    case KV_T_SET: n = ((kv_dict *)e->val)->count; break;
    case KV_T_ZSET: n = kv_zset_len(e->val); break;
    default: return;
    }
    if (!n)
        kv_db_delete(cx->db, e);
}
