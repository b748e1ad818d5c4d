/*
 * A shard owner: the only actor that touches its part of the keyspace
 * (coordinating access to a resource by owning it). It answers batches of
 * operations, expires keys lazily on access and actively on a timer, and
 * serializes itself for snapshots.
 */
#include "kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_entry {
    struct kv_entry *next;
    uint64_t hash;
    int64_t expire; /* unix ms, 0 = never */
    uint32_t klen, vlen;
    char data[]; /* key, then value */
} kv_entry;

typedef struct kv_table {
    kv_entry **b;
    size_t mask, count, expires;
} kv_table;

struct kv_shard {
    kv_server *srv;
    unsigned idx;
    kv_table t;
    bool frozen;
    size_t sweep_cursor;
    kv_buf rb; /* reply being built */
};

/* ------------------------------------------------------------------ table */

static void table_init(kv_table *t)
{
    t->mask = 63;
    t->b = kv_xrealloc(NULL, 64 * sizeof *t->b);
    memset(t->b, 0, 64 * sizeof *t->b);
    t->count = t->expires = 0;
}

static void table_clear(kv_table *t)
{
    for (size_t i = 0; i <= t->mask; i++)
        for (kv_entry *e = t->b[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    free(t->b);
    table_init(t);
}

static void table_grow(kv_table *t)
{
    size_t nm = t->mask * 2 + 1;
    kv_entry **nb = kv_xrealloc(NULL, (nm + 1) * sizeof *nb);
    memset(nb, 0, (nm + 1) * sizeof *nb);
    for (size_t i = 0; i <= t->mask; i++)
        for (kv_entry *e = t->b[i], *n; e; e = n) {
            n = e->next;
            e->next = nb[e->hash & nm];
            nb[e->hash & nm] = e;
        }
    free(t->b);
    t->b = nb;
    t->mask = nm;
}

/* The link that points at key's entry (or at the NULL ending its chain). */
static kv_entry **table_find(kv_table *t, const char *k, size_t kn, uint64_t h)
{
    kv_entry **pp = &t->b[h & t->mask];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == kn &&
            memcmp((*pp)->data, k, kn) == 0)
            break;
    return pp;
}

static void entry_unlink(kv_table *t, kv_entry **pp)
{
    kv_entry *e = *pp;
    *pp = e->next;
    if (e->expire)
        t->expires--;
    t->count--;
    free(e);
}

/* A live entry's link, or NULL; an expired one is deleted on the way. */
static kv_entry **lookup(kv_table *t, const char *k, size_t kn, uint64_t h,
                         int64_t now)
{
    kv_entry **pp = table_find(t, k, kn, h);
    if (!*pp)
        return NULL;
    if ((*pp)->expire && (*pp)->expire <= now) {
        entry_unlink(t, pp);
        return NULL;
    }
    return pp;
}

/* Store (k, v); replaces a present entry in place. */
static void table_put(kv_table *t, const char *k, size_t kn, uint64_t h,
                      const char *v, size_t vn, int64_t expire, kv_entry **at)
{
    kv_entry *e = kv_xrealloc(NULL, sizeof *e + kn + vn);
    e->hash = h;
    e->expire = expire;
    e->klen = (uint32_t)kn;
    e->vlen = (uint32_t)vn;
    memcpy(e->data, k, kn);
    memcpy(e->data + kn, v, vn);
    if (!at)
        at = table_find(t, k, kn, h);
    if (*at) {
        kv_entry *old = *at;
        e->next = old->next;
        if (old->expire)
            t->expires--;
        free(old);
    } else {
        e->next = NULL;
        t->count++;
        if (t->count > t->mask + 1) {
            *at = e;
            if (expire)
                t->expires++;
            table_grow(t);
            return;
        }
    }
    *at = e;
    if (expire)
        t->expires++;
}

/* -------------------------------------------------------------- the actor */

kv_shard *kv_shard_new(kv_server *srv, unsigned idx)
{
    kv_shard *sh = kv_xrealloc(NULL, sizeof *sh);
    memset(sh, 0, sizeof *sh);
    sh->srv = srv;
    sh->idx = idx;
    table_init(&sh->t);
    return sh;
}

void kv_shard_free(void *state)
{
    kv_shard *sh = state;
    if (!sh)
        return;
    table_clear(&sh->t);
    free(sh->t.b);
    kv_buf_free(&sh->rb);
    free(sh);
}

void kv_shard_load(kv_shard *sh, const char *k, size_t kn, const char *v,
                   size_t vn, int64_t expire)
{
    table_put(&sh->t, k, kn, kv_hash(k, kn), v, vn, expire, NULL);
}

static const char ERR_FROZEN[] = "-ERR server is saving before shutdown, "
                                 "writes are refused\r\n";
static const char ERR_NOTINT[] =
    "-ERR value is not an integer or out of range\r\n";
static const char ERR_OVERFLOW[] =
    "-ERR increment or decrement would overflow\r\n";

#define FRAG_LIT(s) kv_frag(rb, h->seq, h->pos, s, sizeof s - 1)

/* Run one op; its reply fragment goes to rb. */
static void run_op(kv_shard *sh, const kv_ophdr *h, const char **a,
                   const uint32_t *an, int64_t now)
{
    kv_buf *rb = &sh->rb;
    kv_table *t = &sh->t;
    char tmp[32];
    kv_buf one = {tmp, 0, sizeof tmp};
    bool write = h->op == OP_SET || h->op == OP_INCRBY || h->op == OP_DEL ||
                 h->op == OP_EXPIRE || h->op == OP_FLUSHALL;
    if (write && sh->frozen) {
        FRAG_LIT(ERR_FROZEN);
        return;
    }
    uint64_t hash = h->nargs ? kv_hash(a[0], an[0]) : 0;
    kv_entry **pp = h->nargs ? lookup(t, a[0], an[0], hash, now) : NULL;
    kv_entry *e = pp ? *pp : NULL;
    switch (h->op) {
    case OP_GET:
        if (!e) {
            FRAG_LIT("$-1\r\n");
        } else {
            /* bulk header and value straight into the fragment */
            char hd[24];
            int n = snprintf(hd, sizeof hd, "$%u\r\n", e->vlen);
            size_t len = (size_t)n + e->vlen + 2;
            kv_buf_reserve(rb, 12 + len);
            kv_put32(rb->p + rb->n, h->seq);
            kv_put32(rb->p + rb->n + 4, h->pos);
            kv_put32(rb->p + rb->n + 8, (uint32_t)len);
            rb->n += 12;
            kv_buf_add(rb, hd, (size_t)n);
            kv_buf_add(rb, e->data + e->klen, e->vlen);
            kv_buf_add(rb, "\r\n", 2);
        }
        break;
    case OP_SET:
        if (((h->flags & F_NX) && e) || ((h->flags & F_XX) && !e)) {
            FRAG_LIT("$-1\r\n");
            break;
        }
        table_put(t, a[0], an[0], hash, a[1], an[1], h->num, NULL);
        FRAG_LIT("+OK\r\n");
        break;
    case OP_INCRBY: {
        int64_t v = 0;
        if (e && !kv_parse_i64(e->data + e->klen, e->vlen, &v)) {
            FRAG_LIT(ERR_NOTINT);
            break;
        }
        if ((h->num > 0 && v > INT64_MAX - h->num) ||
            (h->num < 0 && v < INT64_MIN - h->num)) {
            FRAG_LIT(ERR_OVERFLOW);
            break;
        }
        v += h->num;
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
        table_put(t, a[0], an[0], hash, tmp, (size_t)n, e ? e->expire : 0,
                  NULL);
        one.n = 0;
        kv_buf_int(&one, v);
        kv_frag(rb, h->seq, h->pos, one.p, one.n);
        break;
    }
    case OP_DEL:
        if (e)
            entry_unlink(t, pp);
        kv_frag(rb, h->seq, h->pos, e ? ":1\r\n" : ":0\r\n", 4);
        break;
    case OP_EXISTS:
        kv_frag(rb, h->seq, h->pos, e ? ":1\r\n" : ":0\r\n", 4);
        break;
    case OP_EXPIRE:
        if (e) {
            if (h->num <= now) {
                entry_unlink(t, pp);
            } else {
                if (!e->expire)
                    t->expires++;
                e->expire = h->num;
            }
        }
        kv_frag(rb, h->seq, h->pos, e ? ":1\r\n" : ":0\r\n", 4);
        break;
    case OP_TTL: {
        int64_t v = !e ? -2 : !e->expire ? -1 : e->expire - now;
        if (e && e->expire && !(h->flags & F_MS))
            v = (v + 500) / 1000;
        kv_buf_int(&one, v);
        kv_frag(rb, h->seq, h->pos, one.p, one.n);
        break;
    }
    case OP_DBSIZE:
        kv_buf_int(&one, (int64_t)t->count);
        kv_frag(rb, h->seq, h->pos, one.p, one.n);
        break;
    case OP_FLUSHALL:
        table_clear(t);
        FRAG_LIT("+OK\r\n");
        break;
    default: FRAG_LIT("-ERR bad shard op\r\n"); break;
    }
}

static int run_batch(tp_ctx *ctx, kv_shard *sh, const tp_msg *msg)
{
    const char *p;
    size_t n;
    if (tp_msg_scanf(msg, "y", (const void **)&p, &n) != 0)
        return TP_HANDLED;
    int64_t now = kv_now_ms();
    kv_bin_start(&sh->rb);
    const char *end = p + n;
    while ((size_t)(end - p) >= sizeof(kv_ophdr)) {
        kv_ophdr h;
        memcpy(&h, p, sizeof h);
        p += sizeof h;
        const char *a[2] = {NULL, NULL};
        uint32_t an[2] = {0, 0};
        for (unsigned i = 0; i < h.nargs && i < 2; i++) {
            an[i] = kv_get32(p);
            a[i] = p + 4;
            p += 4 + an[i];
        }
        run_op(sh, &h, a, an, now);
    }
    kv_bin_finish(&sh->rb);
    /* The buffer moves into the message; start a new one next time. */
    tp_send_move(ctx, tp_msg_from(msg), KV_TAG_REPLIES, sh->rb.p, sh->rb.n);
    sh->rb.p = NULL;
    sh->rb.n = sh->rb.cap = 0;
    return TP_HANDLED;
}

/* Active expiry: look at a slice of buckets every tick. */
static void sweep(kv_shard *sh)
{
    kv_table *t = &sh->t;
    if (!t->expires)
        return;
    int64_t now = kv_now_ms();
    for (int i = 0; i < 256; i++) {
        size_t bi = sh->sweep_cursor++ & t->mask;
        for (kv_entry **pp = &t->b[bi]; *pp;) {
            if ((*pp)->expire && (*pp)->expire <= now)
                entry_unlink(t, pp);
            else
                pp = &(*pp)->next;
        }
    }
}

/* Serialize every live entry; the buffer goes to the coordinator by
 * pointer (a move: the receiver frees it). */
static void snapshot(tp_ctx *ctx, kv_shard *sh, const tp_msg *msg)
{
    int64_t final = 0;
    tp_msg_int(msg, &final);
    if (final)
        sh->frozen = true;
    int64_t now = kv_now_ms();
    kv_buf b = {0};
    uint64_t count = 0;
    kv_table *t = &sh->t;
    for (size_t i = 0; i <= t->mask; i++)
        for (kv_entry *e = t->b[i]; e; e = e->next) {
            if (e->expire && e->expire <= now)
                continue;
            kv_buf_reserve(&b, KV_REC_HDR + e->klen + e->vlen);
            kv_put32(b.p + b.n, e->klen);
            kv_put32(b.p + b.n + 4, e->vlen);
            kv_put64(b.p + b.n + 8, (uint64_t)e->expire);
            memcpy(b.p + b.n + KV_REC_HDR, e->data, e->klen + e->vlen);
            b.n += KV_REC_HDR + e->klen + e->vlen;
            count++;
        }
    if (tp_sendf(ctx, tp_msg_from(msg), KV_TAG_PART, "[i u u u]", (int)sh->idx,
                 (uint64_t)(uintptr_t)b.p, (uint64_t)b.n, count) != 0)
        free(b.p);
}

int kv_shard_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    kv_shard *sh = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        return tp_send_interval(ctx, 100, KV_TAG_SWEEP, NULL, 0, NULL);
    case KV_TAG_BATCH: return run_batch(ctx, sh, msg);
    case KV_TAG_SWEEP: sweep(sh); break;
    case KV_TAG_SNAPSHOT: snapshot(ctx, sh, msg); break;
    case KV_TAG_THAW: sh->frozen = false; break;
    default: break;
    }
    return TP_HANDLED;
}
