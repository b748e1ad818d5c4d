/*
 * Payloads: validation of untrusted msgpack without allocating, and the
 * format-driven packer/unpacker. Validation walks one object with an
 * explicit stack, so hostile counts (dd ff 00 00 00) and deep nesting are
 * refused before msgpack-c ever sees the bytes.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <msgpack.h>
#include <string.h>

#define MAX_DEPTH 32 /* msgpack-c's unpacker stack (MSGPACK_EMBED_STACK_SIZE) */

/* Load n big-endian bytes at p (n = 0..8); the common widths with one
 * byte swap. */
uint64_t tpi_be(const uint8_t *p, int n)
{
    switch (n) {
    case 1: return p[0];
    case 2: {
        uint16_t x;
        memcpy(&x, p, 2);
        return __builtin_bswap16(x);
    }
    case 4: {
        uint32_t x;
        memcpy(&x, p, 4);
        return __builtin_bswap32(x);
    }
    case 8: {
        uint64_t x;
        memcpy(&x, p, 8);
        return __builtin_bswap64(x);
    }
    default: {
        uint64_t v = 0;
        for (int i = 0; i < n; i++)
            v = (v << 8) | p[i];
        return v;
    }
    }
}

/* One header at p (len bytes left): *skip = bytes of header + inline body
 * to skip, *items = child objects that follow. -1 if malformed/truncated. */
static int header(const uint8_t *p, size_t len, uint64_t *skip, uint64_t *items)
{
    uint8_t b = p[0];
    uint64_t body = 0;
    int hdr = 1;
    *items = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        /* fixint, nil, bool */
    } else if ((b & 0xf0) == 0x80) {
        *items = 2u * (b & 0x0f);
    } else if ((b & 0xf0) == 0x90) {
        *items = b & 0x0f;
    } else if ((b & 0xe0) == 0xa0) {
        body = b & 0x1f;
    } else {
        static const struct {
            uint8_t lenbytes, fixed;
        } t[32] = {
            [0x04] = {1, 0},  [0x05] = {2, 0}, [0x06] = {4, 0}, /* bin */
            [0x07] = {1, 1},  [0x08] = {2, 1}, [0x09] = {4, 1}, /* ext */
            [0x0a] = {0, 4},  [0x0b] = {0, 8},                  /* float */
            [0x0c] = {0, 1},  [0x0d] = {0, 2}, [0x0e] = {0, 4}, [0x0f] = {0, 8},
            [0x10] = {0, 1},  [0x11] = {0, 2}, [0x12] = {0, 4}, [0x13] = {0, 8},
            [0x14] = {0, 2},  [0x15] = {0, 3}, [0x16] = {0, 5}, [0x17] = {0, 9},
            [0x18] = {0, 17}, /* fixext 1..16 (+type byte) */
            [0x19] = {1, 0},  [0x1a] = {2, 0}, [0x1b] = {4, 0}, /* str */
            [0x1c] = {2, 0},  [0x1d] = {4, 0},                  /* array */
            [0x1e] = {2, 0},  [0x1f] = {4, 0},                  /* map */
        };
        if (b < 0xc4)
            return -1; /* 0xc1 never used */
        uint8_t k = b - 0xc0;
        int lb = t[k].lenbytes;
        if (lb == 0 && t[k].fixed == 0)
            return -1;
        if (len < (size_t)(1 + lb))
            return -1;
        uint64_t n = tpi_be(p + 1, lb);
        hdr += lb;
        if (k >= 0x1c && k <= 0x1d)
            *items = n;
        else if (k >= 0x1e)
            *items = 2 * n;
        else if (lb)
            body = n + t[k].fixed; /* bin/str/ext (+ ext type byte) */
        else
            body = t[k].fixed;
    }
    *skip = (uint64_t)hdr + body;
    return *skip <= len ? 0 : -1;
}

int tpi_payload_check(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t skip, items;
    if (len == 0)
        return TP_EPROTO;
    if (p[0] <= 0x7f || p[0] >= 0xe0) /* a fixint: the most common payload */
        return len == 1 ? 0 : TP_EPROTO;
    if (header(p, len, &skip, &items) != 0)
        return TP_EPROTO;
    if (items == 0) /* a scalar: the common case */
        return skip == len ? 0 : TP_EPROTO;
    uint64_t stack[MAX_DEPTH + 1];
    int depth = 0;
    size_t off = 0;
    stack[0] = 1;
    while (depth >= 0) {
        if (stack[depth] == 0) {
            depth--;
            continue;
        }
        if (off >= len)
            return TP_EPROTO;
        if (header(p + off, len - off, &skip, &items) != 0)
            return TP_EPROTO;
        off += skip;
        stack[depth]--;
        if (items) {
            /* Every child takes at least one byte: a count larger than the
             * bytes left is a lie, whatever msgpack-c would allocate. */
            if (items > len - off || depth == MAX_DEPTH)
                return TP_EPROTO;
            stack[++depth] = items;
        }
    }
    return off == len ? 0 : TP_EPROTO;
}

int tp_payload_check(const void *data, size_t len)
{
    if (!data || len == 0)
        return TP_EPROTO;
    return tpi_payload_check(data, len);
}

/* Store n big-endian bytes of v at p (n = 1, 2, 4, 8). */
static void put_be(uint8_t *p, uint64_t v, int n)
{
    switch (n) {
    case 1: p[0] = (uint8_t)v; break;
    case 2: {
        uint16_t x = __builtin_bswap16((uint16_t)v);
        memcpy(p, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = __builtin_bswap32((uint32_t)v);
        memcpy(p, &x, 4);
        break;
    }
    default: {
        uint64_t x = __builtin_bswap64(v);
        memcpy(p, &x, 8);
        break;
    }
    }
}

size_t tpi_pack_int(char *buf, int64_t v)
{
    uint8_t *p = (uint8_t *)buf;
    if (v >= -32 && v <= 127) {
        p[0] = (uint8_t)v;
        return 1;
    }
    int n;
    if (v >= 0) {
        if (v <= 0xff) {
            p[0] = 0xcc;
            n = 1;
        } else if (v <= 0xffff) {
            p[0] = 0xcd;
            n = 2;
        } else if (v <= 0xffffffffLL) {
            p[0] = 0xce;
            n = 4;
        } else {
            p[0] = 0xcf;
            n = 8;
        }
    } else {
        if (v >= -128) {
            p[0] = 0xd0;
            n = 1;
        } else if (v >= -32768) {
            p[0] = 0xd1;
            n = 2;
        } else if (v >= -2147483648LL) {
            p[0] = 0xd2;
            n = 4;
        } else {
            p[0] = 0xd3;
            n = 8;
        }
    }
    put_be(p + 1, (uint64_t)v, n);
    return (size_t)n + 1;
}

/* ------------------------------------------------------------ packing */

typedef struct growbuf {
    char *p;
    size_t len, cap;
    bool oom;
} growbuf;

static int gb_write(void *data, const char *buf, size_t len)
{
    growbuf *g = data;
    if (g->oom)
        return -1;
    if (g->len + len > g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        while (cap < g->len + len)
            cap *= 2;
        char *np = tpi_realloc(g->p, cap);
        if (!np) {
            g->oom = true;
            return -1;
        }
        g->p = np;
        g->cap = cap;
    }
    memcpy(g->p + g->len, buf, len);
    g->len += len;
    return 0;
}

/* Values at this nesting level of fmt up to close (']', '}' or '\0');
 * *end points past it. -1 for an unbalanced format. */
static long count_items(const char *f, char close, const char **end)
{
    long n = 0;
    for (;; f++) {
        if (*f == close) {
            *end = close ? f + 1 : f;
            return n;
        }
        switch (*f) {
        case '\0':
        case ']':
        case '}': return -1;
        case ' ':
        case ',': break;
        case '[':
        case '{': {
            const char *e;
            if (count_items(f + 1, *f == '[' ? ']' : '}', &e) < 0)
                return -1;
            f = e - 1;
            n++;
            break;
        }
        default: n++;
        }
    }
}

/* The node service of the runtime running on this thread, if any: on a
 * node, pids travel as extensions naming their node. */
static const tpi_remote_ops *remote(void **state)
{
    tpi_sched *s = tpi_sched_current();
    if (!s || !s->rt->remote)
        return NULL;
    *state = s->rt->remote_state;
    return s->rt->remote;
}

/* A pid: an int, or on a node an extension (runtime/service.h). */
static int pack_pid(msgpack_packer *pk, tp_pid pid)
{
    void *st;
    const tpi_remote_ops *ops = remote(&st);
    if (!ops)
        return msgpack_pack_uint64(pk, pid);
    uint8_t body[TPI_PID_EXT_MAX];
    size_t n = ops->pid_pack(st, pid, body);
    if (!n) /* TP_PID_NONE, or a pid that cannot travel */
        return msgpack_pack_uint64(pk, pid);
    return msgpack_pack_ext(pk, n, TPI_PID_EXT) ||
           msgpack_pack_ext_body(pk, body, n);
}

/* A str (or, with bin, a bin) of n bytes at s: 0, TP_EINVAL, TP_E2BIG or
 * TP_ENOMEM. */
static int pack_bytes(msgpack_packer *pk, const void *s, size_t n, bool bin)
{
    if (!s && n)
        return TP_EINVAL;
    if (n > UINT32_MAX)
        return TP_E2BIG;
    int rc = bin ? msgpack_pack_bin(pk, n) : msgpack_pack_str(pk, n);
    if (!rc && n)
        rc = bin ? msgpack_pack_bin_body(pk, s, n)
                 : msgpack_pack_str_body(pk, s, n);
    return rc ? TP_ENOMEM : 0;
}

static int pack_values(msgpack_packer *pk, const char **fmtp, va_list *ap,
                       char close)
{
    const char *f = *fmtp;
    for (; *f; f++) {
        int rc = 0;
        switch (*f) {
        case ']':
        case '}':
            if (*f != close)
                return TP_EINVAL;
            *fmtp = f + 1;
            return 0;
        case 'n': rc = msgpack_pack_nil(pk); break;
        case 'b':
            rc = va_arg(*ap, int) ? msgpack_pack_true(pk)
                                  : msgpack_pack_false(pk);
            break;
        case 'i': rc = msgpack_pack_int64(pk, va_arg(*ap, int)); break;
        case 'l': rc = msgpack_pack_int64(pk, va_arg(*ap, int64_t)); break;
        case 'u': rc = msgpack_pack_uint64(pk, va_arg(*ap, uint64_t)); break;
        case 'p': rc = pack_pid(pk, va_arg(*ap, tp_pid)); break;
        case 'd': rc = msgpack_pack_double(pk, va_arg(*ap, double)); break;
        case 's':
        case 'S': {
            const char *s = va_arg(*ap, const char *);
            size_t n = *f == 'S' ? va_arg(*ap, size_t) : (s ? strlen(s) : 0);
            if ((rc = pack_bytes(pk, s, n, false)) != 0)
                return rc;
            break;
        }
        case 'y': {
            const void *s = va_arg(*ap, const void *);
            if ((rc = pack_bytes(pk, s, va_arg(*ap, size_t), true)) != 0)
                return rc;
            break;
        }
        case '[':
        case '{': {
            const char *end;
            long n = count_items(f + 1, *f == '[' ? ']' : '}', &end);
            if (n < 0 || (*f == '{' && n % 2))
                return TP_EINVAL;
            rc = *f == '[' ? msgpack_pack_array(pk, (size_t)n)
                           : msgpack_pack_map(pk, (size_t)n / 2);
            if (rc)
                break;
            const char *inner = f + 1;
            int r = pack_values(pk, &inner, ap, *f == '[' ? ']' : '}');
            if (r)
                return r;
            f = inner - 1;
            break;
        }
        case ' ':
        case ',': break;
        default: return TP_EINVAL;
        }
        if (rc)
            return TP_ENOMEM;
    }
    if (close)
        return TP_EINVAL;
    *fmtp = f;
    return 0;
}

int tp_vpackf(void **out, size_t *len, const char *fmt, va_list ap)
{
    if (!out || !len || !fmt)
        return TP_EINVAL;
    const char *end;
    long top = count_items(fmt, '\0', &end); /* a payload is one value */
    if (top < 0 || top > 1)
        return TP_EINVAL;
    growbuf g = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &g, gb_write);
    va_list cp;
    va_copy(cp, ap);
    const char *f = fmt;
    int rc = pack_values(&pk, &f, &cp, 0);
    va_end(cp);
    if (rc == 0 && g.oom)
        rc = TP_ENOMEM;
    if (rc != 0) {
        tpi_free(g.p);
        return rc;
    }
    *out = g.p;
    *len = g.len;
    return 0;
}

int tp_packf(void **out, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_vpackf(out, len, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---------------------------------------------------------- unpacking */

typedef struct reader {
    const uint8_t *p;
    size_t len, off;
} reader;

/* Decode an int at p (avail bytes): *used bytes; a value above INT64_MAX
 * comes as *u with *is_unsigned. TP_EPROTO if not an int or truncated. */
int tpi_decode_int(const uint8_t *p, size_t avail, size_t *used, int64_t *i,
                   uint64_t *u, bool *is_unsigned)
{
    uint8_t b = p[0];
    *is_unsigned = false;
    *used = 1;
    if (b <= 0x7f || b >= 0xe0) { /* fixints */
        *i = (int8_t)b;
        if (b <= 0x7f)
            *i = b;
        return 0;
    }
    int n;
    switch (b) {
    case 0xcc:
    case 0xd0: n = 1; break;
    case 0xcd:
    case 0xd1: n = 2; break;
    case 0xce:
    case 0xd2: n = 4; break;
    case 0xcf:
    case 0xd3: n = 8; break;
    default: return TP_EPROTO;
    }
    if (avail < (size_t)n + 1)
        return TP_EPROTO;
    uint64_t v = tpi_be(p + 1, n);
    *used = 1 + (size_t)n;
    if (b >= 0xd0) {
        int shift = 64 - 8 * n; /* sign-extend from n bytes */
        *i = (int64_t)(v << shift) >> shift;
    } else if (v > INT64_MAX) {
        *is_unsigned = true;
        *u = v;
    } else {
        *i = (int64_t)v;
    }
    return 0;
}

static int rd_int(reader *r, int64_t *i, uint64_t *u, bool *is_unsigned)
{
    size_t used;
    int rc = tpi_decode_int(r->p + r->off, r->len - r->off, &used, i, u,
                            is_unsigned);
    if (rc == 0)
        r->off += used;
    return rc;
}

/* A pid extension at r, mapped by the node service. */
static int rd_pid(reader *r, tp_pid *out)
{
    void *st;
    const tpi_remote_ops *ops = remote(&st);
    if (!ops || r->len - r->off < 3 || r->p[r->off + 2] != TPI_PID_EXT)
        return TP_EPROTO;
    size_t n = r->p[r->off + 1];
    if (n > r->len - r->off - 3 ||
        ops->pid_unpack(st, r->p + r->off + 3, n, out) != 0)
        return TP_EPROTO;
    r->off += 3 + n;
    return 0;
}

static int rd_len(reader *r, uint8_t fix_mask, uint8_t fix_tag, uint8_t fix_max,
                  const uint8_t codes[3], uint64_t *n)
{
    uint8_t b = r->p[r->off];
    if ((b & fix_mask) == fix_tag) {
        *n = b & fix_max;
        r->off += 1;
        return 0;
    }
    for (int k = 0; k < 3; k++)
        if (codes[k] && b == codes[k]) {
            int lb = 1 << k;
            *n = tpi_be(r->p + r->off + 1, lb);
            r->off += 1 + (size_t)lb;
            return 0;
        }
    return TP_EPROTO;
}

static int unpack_values(reader *r, const char **fmtp, va_list *ap, char close)
{
    static const uint8_t str_codes[3] = {0xd9, 0xda, 0xdb};
    static const uint8_t bin_codes[3] = {0xc4, 0xc5, 0xc6};
    static const uint8_t arr_codes[3] = {0, 0xdc, 0xdd};
    static const uint8_t map_codes[3] = {0, 0xde, 0xdf};
    const char *f = *fmtp;
    for (; *f; f++) {
        if (*f == ' ' || *f == ',')
            continue;
        if (*f == ']' || *f == '}') {
            if (*f != close)
                return TP_EINVAL;
            *fmtp = f + 1;
            return 0;
        }
        if (r->off >= r->len)
            return TP_EPROTO;
        uint8_t b = r->p[r->off];
        switch (*f) {
        case 'n':
            if (b != 0xc0)
                return TP_EPROTO;
            r->off++;
            break;
        case 'b': {
            int *o = va_arg(*ap, int *);
            if (b != 0xc2 && b != 0xc3)
                return TP_EPROTO;
            *o = b == 0xc3;
            r->off++;
            break;
        }
        case 'p':
            if (b == 0xc7) { /* a pid extension */
                if (rd_pid(r, va_arg(*ap, tp_pid *)) != 0)
                    return TP_EPROTO;
                break;
            }
            /* a pid as an int */
            __attribute__((fallthrough));
        case 'i':
        case 'l':
        case 'u': {
            void *o = va_arg(*ap, void *);
            int64_t i = 0;
            uint64_t u = 0;
            bool uns;
            if (rd_int(r, &i, &u, &uns) != 0)
                return TP_EPROTO;
            if (*f == 'i') {
                if (uns || i < INT32_MIN || i > INT32_MAX)
                    return TP_EPROTO;
                *(int *)o = (int)i;
            } else if (*f == 'l') {
                if (uns)
                    return TP_EPROTO;
                *(int64_t *)o = i;
            } else {
                if (!uns && i < 0)
                    return TP_EPROTO;
                *(uint64_t *)o = uns ? u : (uint64_t)i;
            }
            break;
        }
        case 'd': {
            double *o = va_arg(*ap, double *);
            if (b == 0xca) {
                uint32_t w = (uint32_t)tpi_be(r->p + r->off + 1, 4);
                float x;
                memcpy(&x, &w, 4);
                *o = x;
                r->off += 5;
            } else if (b == 0xcb) {
                uint64_t w = tpi_be(r->p + r->off + 1, 8);
                memcpy(o, &w, 8);
                r->off += 9;
            } else {
                int64_t i = 0;
                uint64_t u = 0;
                bool uns;
                if (rd_int(r, &i, &u, &uns) != 0)
                    return TP_EPROTO;
                *o = uns ? (double)u : (double)i;
            }
            break;
        }
        case 's':
        case 'S':
        case 'y': {
            const void **o = va_arg(*ap, const void **);
            size_t *ol = *f == 's' ? NULL : va_arg(*ap, size_t *);
            uint64_t n;
            int rc = *f == 'y' ? rd_len(r, 0, 1, 0, bin_codes, &n)
                               : rd_len(r, 0xe0, 0xa0, 0x1f, str_codes, &n);
            if (rc)
                return rc;
            *o = r->p + r->off;
            if (ol)
                *ol = (size_t)n;
            r->off += n;
            break;
        }
        case '[':
        case '{': {
            const char *end;
            long want = count_items(f + 1, *f == '[' ? ']' : '}', &end);
            if (want < 0)
                return TP_EINVAL;
            uint64_t n;
            int rc = *f == '[' ? rd_len(r, 0xf0, 0x90, 0x0f, arr_codes, &n)
                               : rd_len(r, 0xf0, 0x80, 0x0f, map_codes, &n);
            if (rc)
                return rc;
            if (*f == '{')
                n *= 2;
            if ((long)n != want)
                return TP_EPROTO;
            const char *inner = f + 1;
            rc = unpack_values(r, &inner, ap, *f == '[' ? ']' : '}');
            if (rc)
                return rc;
            f = inner - 1;
            break;
        }
        default: return TP_EINVAL;
        }
    }
    if (close)
        return TP_EINVAL;
    *fmtp = f;
    return 0;
}

int tpi_read_int(const void *data, size_t len, int64_t *out)
{
    /* The decoder of tpi_decode_int, for one int filling the payload
     * (the hot case of tp_msg_int: no out-parameters to go through). The
     * length alone tells the width, and the type byte must match it. */
    const uint8_t *p = data;
    uint64_t v;
    unsigned lg;
    switch (len) {
    case 1:
        if (p[0] > 0x7f && p[0] < 0xe0)
            return TP_EPROTO;
        *out = (int8_t)p[0]; /* fixints: 0..127 and -32..-1 */
        return 0;
    case 2: v = tpi_be(p + 1, 1), lg = 0; break;
    case 3: v = tpi_be(p + 1, 2), lg = 1; break;
    case 5: v = tpi_be(p + 1, 4), lg = 2; break;
    case 9: v = tpi_be(p + 1, 8), lg = 3; break;
    default: return TP_EPROTO;
    }
    if (p[0] == 0xd0 + lg) { /* int 8..64: sign-extend */
        unsigned shift = 64 - (8u << lg);
        *out = (int64_t)(v << shift) >> shift;
    } else if (p[0] == 0xcc + lg && v <= INT64_MAX) { /* uint 8..64 */
        *out = (int64_t)v;
    } else {
        return TP_EPROTO;
    }
    return 0;
}

int tp_vunpackf(const void *data, size_t len, const char *fmt, va_list ap)
{
    if (!fmt || (!data && len))
        return TP_EINVAL;
    /* Validated first, so the reader never runs past the end. */
    if (tpi_payload_check(data, len) != 0)
        return TP_EPROTO;
    reader r = {data, len, 0};
    va_list cp;
    va_copy(cp, ap);
    const char *f = fmt;
    int rc = unpack_values(&r, &f, &cp, 0);
    va_end(cp);
    if (rc == 0 && r.off != len)
        rc = TP_EPROTO;
    return rc;
}

int tp_unpackf(const void *data, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_vunpackf(data, len, fmt, ap);
    va_end(ap);
    return rc;
}
