/*
 * Reply slots: each command gets one, numbered in arrival order (a ring
 * indexed by seq). A command answered at once fills its slot (or goes
 * straight to the output when nothing is pending before it); a command
 * run by shards gets its slot filled by their fragments, in any order.
 * Complete slots at the head move to the output in order, so pipelined
 * replies leave in request order whatever order the shards answer in.
 */
#include "conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Double the ring; false when out of memory. */
static bool ring_grow(kv_conn *c)
{
    uint32_t ncap = c->cap ? c->cap * 2 : 16;
    kv_slot *nr = calloc(ncap, sizeof *nr);
    if (!nr)
        return false;
    for (uint32_t s = c->head; s != c->tail; s++)
        nr[s & (ncap - 1)] = c->ring[s & (c->cap - 1)];
    /* the slots not in use keep their buffers for reuse */
    for (uint32_t s = c->tail; s != c->head + c->cap; s++)
        nr[s & (ncap - 1)] = c->ring[s & (c->cap - 1)];
    free(c->ring);
    c->ring = nr;
    c->cap = ncap;
    return true;
}

kv_slot *kv_slot_new(kv_conn *c, uint8_t kind, uint32_t remaining)
{
    kv_slot *s;
    if (c->tail - c->head == c->cap && !ring_grow(c)) {
        c->oom = true; /* the client is dropped at the end of the turn */
        s = &c->spare;
    } else {
        s = kv_slot_at(c, c->tail++);
    }
    s->kind = kind;
    s->close_after = s->has_err = false;
    s->remaining = remaining;
    s->nparts = 0;
    s->flags = 0;
    s->sum = s->sum2 = 0;
    s->kept = 0;
    s->buf.n = 0;
    return s;
}

bool kv_slot_parts(kv_conn *c, kv_slot *s, uint32_t n)
{
    if (s->partcap < n) {
        kv_part *p = realloc(s->parts, n * sizeof *p);
        if (!p) {
            c->oom = true;
            return false;
        }
        s->parts = p;
        s->partcap = n;
    }
    s->nparts = n;
    memset(s->parts, 0, n * sizeof *s->parts);
    return true;
}

kv_buf *kv_reply_buf(kv_conn *c)
{
    return c->head == c->tail ? &c->out : &kv_slot_new(c, K_LOCAL, 0)->buf;
}

void kv_reply(kv_conn *c, const char *p, size_t n)
{
    kv_buf_add(kv_reply_buf(c), p, n);
}

void kv_reply_err(kv_conn *c, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    tmp[0] = '-';
    int n = vsnprintf(tmp + 1, sizeof tmp - 3, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof tmp - 4)
        n = sizeof tmp - 4;
    /* An error may quote the client's bytes: one line, always. */
    for (int i = 1; i <= n; i++)
        if (tmp[i] == '\r' || tmp[i] == '\n')
            tmp[i] = ' ';
    memcpy(tmp + 1 + n, "\r\n", 2);
    kv_reply(c, tmp, (size_t)n + 3);
}

void kv_reply_bulk(kv_conn *c, const char *p, size_t n)
{
    kv_buf_bulk(kv_reply_buf(c), p, n);
}

void kv_reply_int(kv_conn *c, int64_t v) { kv_buf_int(kv_reply_buf(c), v); }

/* A fragment waits in its slot: counted as held (for the memory bound
 * and the output budget) until the slot leaves. */
static void count_kept(kv_conn *c, kv_slot *s)
{
    c->held += s->buf.n - s->kept;
    s->kept = s->buf.n;
}

static void keep(kv_conn *c, kv_slot *s, const char *f, size_t len)
{
    kv_buf_add(&s->buf, f, len);
    count_kept(c, s);
}

void kv_slots_kept(kv_conn *c, uint32_t from)
{
    for (uint32_t q = from; q != c->tail; q++)
        count_kept(c, kv_slot_at(c, q));
}

static void unkeep(kv_conn *c, kv_slot *s)
{
    c->held -= s->kept;
    s->kept = 0;
}

/* Add a shard's OP_KEYSPACE answer ("*2\r\n:keys\r\n:expires\r\n") to
 * an INFO slot's counts; anything else is ignored. */
static void info_counts(kv_slot *s, const char *f, size_t len)
{
    const char *end = f + len, *a = f + 4;
    if (len < 12 || memcmp(f, "*2\r\n:", 5) != 0 || end[-1] != '\n')
        return;
    const char *nl = memchr(a, '\n', (size_t)(end - a));
    int64_t keys, expires;
    if (nl && end - nl > 4 && nl[1] == ':' &&
        kv_parse_i64(a + 1, (size_t)(nl - a) - 2, &keys) &&
        kv_parse_i64(nl + 2, (size_t)(end - nl) - 4, &expires)) {
        s->sum += keys;
        s->sum2 += expires;
    }
}

void kv_deliver(kv_conn *c, uint32_t seq, uint32_t pos, const char *f,
                size_t len)
{
    if (seq - c->head >= c->tail - c->head)
        return; /* not a slot of ours */
    kv_slot *s = kv_slot_at(c, seq);
    if (!s->remaining)
        return;
    s->remaining--;
    bool err = len && f[0] == '-';
    switch (s->kind) {
    case K_ONE:
        if (seq == c->head) {
            kv_buf_add(&c->out, f, len); /* the next reply due: no copy */
            c->head++;
        } else {
            keep(c, s, f, len);
        }
        return;
    case K_WAIT: return; /* an ack */
    default: break;
    }
    if (err) {
        if (!s->has_err) {
            s->has_err = true;
            unkeep(c, s);
            s->buf.n = 0;
            keep(c, s, f, len);
        }
        return;
    }
    if (s->has_err)
        return;
    int64_t v;
    switch (s->kind) {
    case K_SUM:
        if (len > 3 && f[0] == ':' && kv_parse_i64(f + 1, len - 3, &v))
            s->sum += v;
        break;
    case K_INFO: info_counts(s, f, len); break;
    case K_ARRAY:
    case K_RANDOM:
        if (pos < s->nparts) {
            size_t at = s->buf.n;
            keep(c, s, f, len);
            /* Out of memory the add was dropped (and the client is closed
             * at the turn's end): no part pointing past the buffer. */
            s->parts[pos] = (kv_part){at, s->buf.n - at == len ? len : 0};
        }
        break;
    case K_MERGE: {
        const char *nl = memchr(f, '\n', len < 24 ? len : 24);
        if (f[0] == '*' && nl &&
            kv_parse_i64(f + 1, (size_t)(nl - f) - 2, &v) && v > 0) {
            s->sum += v;
            size_t h = (size_t)(nl - f) + 1;
            keep(c, s, f + h, len - h);
        }
        break;
    }
    default: break;
    }
}

/* RANDOMKEY: one of the non-nil answers, at random. */
static void pick_random(kv_buf *o, const kv_slot *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->nparts; i++)
        n += s->parts[i].len && s->buf.p[s->parts[i].off] == '$' &&
             s->buf.p[s->parts[i].off + 1] != '-';
    if (!n) {
        kv_buf_add(o, "$-1\r\n", 5);
        return;
    }
    uint32_t k = (uint32_t)random() % n;
    for (uint32_t i = 0; i < s->nparts; i++) {
        const kv_part *pt = &s->parts[i];
        if (pt->len && s->buf.p[pt->off] == '$' &&
            s->buf.p[pt->off + 1] != '-' && k-- == 0) {
            kv_buf_add(o, s->buf.p + pt->off, pt->len);
            return;
        }
    }
}

bool kv_slots_drain(tp_ctx *ctx, kv_conn *c)
{
    bool close = false;
    kv_buf *o = &c->out;
    while (c->head != c->tail && !close) {
        kv_slot *s = kv_slot_at(c, c->head);
        if (s->remaining)
            break;
        if (s->has_err || s->kind == K_LOCAL || s->kind == K_ONE ||
            s->kind == K_WAIT) {
            kv_buf_add(o, s->buf.p, s->buf.n);
        } else if (s->kind == K_SUM) {
            kv_buf_int(o, s->sum);
        } else if (s->kind == K_OK) {
            kv_buf_add(o, "+OK\r\n", 5);
        } else if (s->kind == K_INFO) {
            kv_info(ctx, c, o, s);
        } else if (s->kind == K_ARRAY) {
            kv_buf_fmt(o, "*%u\r\n", s->nparts);
            for (uint32_t i = 0; i < s->nparts; i++)
                kv_buf_add(o, s->buf.p + s->parts[i].off, s->parts[i].len);
        } else if (s->kind == K_MERGE) {
            kv_buf_fmt(o, "*%lld\r\n", (long long)s->sum);
            kv_buf_add(o, s->buf.p, s->buf.n);
        } else if (s->kind == K_RANDOM) {
            pick_random(o, s);
        }
        close = s->close_after;
        unkeep(c, s);
        s->buf.n = 0;
        if (s->buf.cap > KV_KEEP_BUF) {
            kv_buf_free(&s->buf);
            free(s->parts);
            s->parts = NULL;
            s->partcap = 0;
        }
        c->head++;
    }
    return close;
}

void kv_slots_free(kv_conn *c)
{
    for (uint32_t i = 0; i < c->cap; i++) {
        kv_buf_free(&c->ring[i].buf);
        free(c->ring[i].parts);
    }
    kv_buf_free(&c->spare.buf);
    free(c->spare.parts);
    free(c->ring);
}
