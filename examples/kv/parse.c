/*
 * RESP2 requests (multibulk or inline), parsed where the last read
 * stopped: c->ps remembers how far the current command got (its count,
 * the bulk being read, the next byte), so a command whose arguments come
 * in many small reads costs one pass over its bytes, not one per read.
 *
 * Lengths are checked against the limits before anything is stored, and
 * nothing is allocated from a length before its bytes have arrived.
 * Clients that have not authenticated get Redis's tighter limits: at most
 * 10 arguments of at most 16 KiB each.
 */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MULTIBULK (1024 * 1024)
#define MAX_INLINE (64 * 1024)
#define MAX_HEADER 32 /* "*<n>\r\n" or "$<n>\r\n" */
#define NOAUTH_MULTIBULK 10
#define NOAUTH_BULK (16 * 1024)

static void reset(kv_conn *c) { c->ps = (kv_parser){-1, -1, 0}; }

/* A CRLF-terminated line of at most max bytes at p: 1 (its length in
 * *at), 0 if more bytes are needed, -1 if malformed or too long. */
static int line(const char *p, size_t n, size_t max, size_t *at)
{
    const char *cr = memchr(p, '\r', n < max ? n : max);
    if (!cr)
        return n >= max ? -1 : 0;
    size_t i = (size_t)(cr - p);
    if (i + 1 >= n)
        return 0;
    if (cr[1] != '\n')
        return -1;
    *at = i;
    return 1;
}

/* Room for want more arguments; false when out of memory. */
static bool args_room(kv_conn *c, size_t want)
{
    if (c->argcap - c->argc >= want)
        return true;
    size_t cap = c->argcap ? c->argcap : 16;
    while (cap - c->argc < want)
        cap *= 2;
    kv_arg *v = realloc(c->argv, cap * sizeof *v);
    if (!v)
        return false;
    c->argv = v;
    c->argcap = cap;
    return true;
}

static int parse_inline(kv_conn *c, const char *p, size_t n, size_t *used,
                        const char **err)
{
    /* Only the bytes not scanned yet are searched. */
    size_t lim = n < MAX_INLINE ? n : MAX_INLINE;
    const char *nl =
        c->ps.pos < lim ? memchr(p + c->ps.pos, '\n', lim - c->ps.pos) : NULL;
    if (!nl) {
        if (n >= MAX_INLINE) {
            *err = "too big inline request";
            return -1;
        }
        c->ps.pos = n;
        return 0;
    }
    size_t len = (size_t)(nl - p);
    *used = len + 1;
    if (len && p[len - 1] == '\r')
        len--;
    c->argc = 0;
    for (size_t i = 0; i < len;) {
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t s = i;
        while (i < len && p[i] != ' ' && p[i] != '\t')
            i++;
        if (i == s)
            continue;
        if (!args_room(c, 1))
            return -2;
        c->argv[c->argc++] = (kv_arg){p + s, i - s, s};
    }
    return 1;
}

static int parse_multibulk(kv_conn *c, const char *p, size_t n, size_t *used,
                           const char **err)
{
    kv_parser *ps = &c->ps;
    size_t at, max = c->srv->cfg.max_request;
    if (ps->want < 0) {
        int r = line(p, n, MAX_HEADER, &at);
        if (r == 0)
            return 0;
        int64_t cnt;
        if (r < 0 || !kv_parse_i64(p + 1, at - 1, &cnt) ||
            cnt > MAX_MULTIBULK) {
            *err = "invalid multibulk length";
            return -1;
        }
        if (!c->authed && cnt > NOAUTH_MULTIBULK) {
            *err = "unauthenticated multibulk length";
            return -1;
        }
        ps->want = cnt < 0 ? 0 : cnt;
        ps->pos = at + 2;
        c->argc = 0;
        /* Not more slots than the bytes present could fill: a huge count
         * costs nothing until its arguments come. */
        size_t room = (size_t)ps->want < 1024 ? (size_t)ps->want : 1024;
        if (!args_room(c, room))
            return -2;
    }
    while (c->argc < (size_t)ps->want) {
        size_t pos = ps->pos;
        if (ps->bulk < 0) {
            if (pos >= n)
                return 0;
            if (p[pos] != '$') {
                snprintf(c->errbuf, sizeof c->errbuf, "expected '$', got '%c'",
                         p[pos] >= 32 && p[pos] < 127 ? p[pos] : '?');
                *err = c->errbuf;
                return -1;
            }
            int r = line(p + pos, n - pos, MAX_HEADER, &at);
            if (r == 0)
                return 0;
            int64_t bl;
            if (r < 0 || !kv_parse_i64(p + pos + 1, at - 1, &bl) || bl < 0 ||
                (uint64_t)bl > max) {
                *err = "invalid bulk length";
                return -1;
            }
            if (!c->authed && bl > NOAUTH_BULK) {
                *err = "unauthenticated bulk length";
                return -1;
            }
            pos += at + 2;
            if ((uint64_t)bl + 2 > max - (pos < max ? pos : max)) {
                *err = "request too large";
                return -1;
            }
            ps->bulk = bl;
            ps->pos = pos;
        }
        size_t bl = (size_t)ps->bulk;
        if (n - pos < bl + 2)
            return 0;
        if (p[pos + bl] != '\r' || p[pos + bl + 1] != '\n') {
            *err = "bulk not terminated by CRLF";
            return -1;
        }
        if (!args_room(c, 1))
            return -2;
        c->argv[c->argc++] = (kv_arg){NULL, bl, pos};
        ps->pos = pos + bl + 2;
        ps->bulk = -1;
    }
    for (size_t i = 0; i < c->argc; i++)
        c->argv[i].p = p + c->argv[i].off;
    *used = ps->pos;
    return 1;
}

int kv_parse(kv_conn *c, const char *p, size_t n, size_t *used,
             const char **err)
{
    int r = p[0] == '*' ? parse_multibulk(c, p, n, used, err)
                        : parse_inline(c, p, n, used, err);
    if (r != 0)
        reset(c);
    return r;
}
