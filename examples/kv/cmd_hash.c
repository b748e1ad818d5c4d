/* troupe-kv shard side: hash commands (Redis 7.0 replies and errors). */
#include "store.h"

#include <stdlib.h>
#include <string.h>

static kv_dict *hash_of(kv_de *e) { return e->val; }

static kv_de *field(kv_de *e, uint32_t i, const kv_cx *cx)
{
    return e ? kv_dict_find(hash_of(e), cx->a[i], cx->an[i]) : NULL;
}

/* The hash at the key, created if absent. */
static kv_de *create(kv_cx *cx, kv_de *e)
{
    if (e)
        return e;
    kv_dict *d = kv_xrealloc(NULL, sizeof *d);
    kv_dict_init(d);
    return kv_db_add(cx->db, cx->a[1], cx->an[1], cx->h, KV_T_HASH, d);
}

/* Set field a[i] to value v; true if the field is new. */
static bool set_field(kv_de *e, const char *f, size_t fn, kv_str *v)
{
    uint64_t h = kv_hash(f, fn);
    kv_de **link = kv_dict_link(hash_of(e), f, fn, h);
    if (*link) {
        free((*link)->val);
        (*link)->val = v;
        return false;
    }
    kv_dict_insert(hash_of(e), link, f, fn, h)->val = v;
    return true;
}

static void hset(kv_cx *cx, bool ok_reply)
{
    if (cx->argc % 2) {
        kv_buf_fmt(cx->r, "-ERR wrong number of arguments for '%s' command\r\n",
                   ok_reply ? "hmset" : "hset");
        return;
    }
    kv_de *e;
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    e = create(cx, e);
    int64_t added = 0;
    for (uint32_t i = 2; i < cx->argc; i += 2)
        added += set_field(e, cx->a[i], cx->an[i],
                           kv_str_new(cx->a[i + 1], cx->an[i + 1]));
    if (ok_reply)
        KV_LIT(cx, "+OK\r\n");
    else
        kv_buf_int(cx->r, added);
}

KV_CMD(hset) { hset(cx, false); }
KV_CMD(hmset) { hset(cx, true); }

KV_CMD(hsetnx)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    if (field(e, 2, cx)) {
        KV_LIT(cx, ":0\r\n");
        return;
    }
    set_field(create(cx, e), cx->a[2], cx->an[2],
              kv_str_new(cx->a[3], cx->an[3]));
    KV_LIT(cx, ":1\r\n");
}

static void reply_field(kv_cx *cx, const kv_de *f)
{
    if (f) {
        const kv_str *s = f->val;
        kv_buf_bulk(cx->r, s->p, s->len);
    } else {
        KV_LIT(cx, "$-1\r\n");
    }
}

KV_CMD(hget)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_HASH, &e))
        reply_field(cx, field(e, 2, cx));
}

KV_CMD(hmget)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    kv_reply_arr(cx->r, cx->argc - 2);
    for (uint32_t i = 2; i < cx->argc && !cx->r->over; i++)
        reply_field(cx, field(e, i, cx));
}

KV_CMD(hdel)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    int64_t n = 0;
    for (uint32_t i = 2; e && i < cx->argc; i++) {
        kv_de **link = kv_dict_link(hash_of(e), cx->a[i], cx->an[i],
                                    kv_hash(cx->a[i], cx->an[i]));
        if (*link) {
            kv_de *f = kv_dict_remove(hash_of(e), link);
            free(f->val);
            free(f);
            n++;
        }
    }
    kv_buf_int(cx->r, n);
    if (e)
        kv_drop_if_empty(cx, e);
}

KV_CMD(hlen)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_HASH, &e))
        kv_buf_int(cx->r, e ? (int64_t)hash_of(e)->count : 0);
}

KV_CMD(hexists)
{
    kv_de *e;
    if (kv_typed(cx, KV_T_HASH, &e))
        kv_buf_str(cx->r, field(e, 2, cx) ? ":1\r\n" : ":0\r\n");
}

KV_CMD(hstrlen)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    kv_de *f = field(e, 2, cx);
    kv_buf_int(cx->r, f ? ((kv_str *)f->val)->len : 0);
}

/* HGETALL HKEYS HVALS */
static void dump(kv_cx *cx, bool keys, bool vals)
{
    kv_de *e;
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    if (!e) {
        KV_LIT(cx, "*0\r\n");
        return;
    }
    kv_reply_arr(cx->r, hash_of(e)->count * (keys + vals));
    KV_DICT_EACH(hash_of(e), f)
    {
        if (keys)
            kv_buf_bulk(cx->r, f->key, f->klen);
        if (vals)
            reply_field(cx, f);
    }
}

KV_CMD(hgetall) { dump(cx, true, true); }
KV_CMD(hkeys) { dump(cx, true, false); }
KV_CMD(hvals) { dump(cx, false, true); }

KV_CMD(hincrby)
{
    int64_t by, v;
    kv_de *e;
    kv_str *s;
    if (!kv_arg_i64(cx, 3, &by) || !kv_typed(cx, KV_T_HASH, &e))
        return;
    kv_de *f = field(e, 2, cx);
    if (kv_incr_i64(cx, f ? f->val : NULL, by,
                    "-ERR hash value is not an integer\r\n", &s, &v)) {
        if (!f || s != f->val)
            set_field(create(cx, e), cx->a[2], cx->an[2], s);
        kv_buf_int(cx->r, v);
    }
}

KV_CMD(hincrbyfloat)
{
    long double by;
    kv_de *e;
    kv_str *s;
    if (!kv_parse_ld(cx->a[3], cx->an[3], &by)) {
        KV_ERR(cx, KV_NOTFLOAT);
        return;
    }
    if (!kv_typed(cx, KV_T_HASH, &e))
        return;
    kv_de *f = field(e, 2, cx);
    if (kv_incr_ld(cx, f ? f->val : NULL, by,
                   "-ERR hash value is not a float\r\n", &s)) {
        set_field(create(cx, e), cx->a[2], cx->an[2], s);
        kv_buf_bulk(cx->r, s->p, s->len);
    }
}
