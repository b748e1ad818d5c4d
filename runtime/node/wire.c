/*
 * The frame codec of nodes (layout in node_int.h). Encoding writes
 * msgpack by hand into a growable buffer; decoding reads a frame field by
 * field with exact types and bounds (a frame is a fixed array of scalars,
 * pid extensions and one bin), and checks the payload inside the bin as
 * one well-formed msgpack object (tp_payload_check's walk, with its depth
 * bound), so nothing from the wire is ever handed to msgpack-c's
 * allocating unpacker and nothing is allocated for it. A frame's end is
 * known from its fields, so frames for one node travel back to back in
 * one NATS message.
 */
#include "runtime/node/node_int.h"

#include <string.h>

/* ------------------------------------------------------------ writing */

static void put(tpi_nbuf *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *q = tp_realloc(b->p, cap);
        if (!q) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_be(tpi_nbuf *b, uint8_t head, uint64_t v, int bytes)
{
    uint8_t x[9];
    x[0] = head;
    for (int i = 0; i < bytes; i++)
        x[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    put(b, x, 1 + (size_t)bytes);
}

static void put_int(tpi_nbuf *b, int64_t v)
{
    char buf[9];
    put(b, buf, tpi_pack_int(buf, v));
}

static void put_uint(tpi_nbuf *b, uint64_t v)
{
    if (v <= INT64_MAX)
        put_int(b, (int64_t)v);
    else
        put_be(b, 0xcf, v, 8);
}

static void put_blob(tpi_nbuf *b, uint8_t h8, uint8_t h16, uint8_t h32,
                     const void *p, size_t n)
{
    if (n < 256 && h8)
        put_be(b, h8, n, 1);
    else if (n < 65536)
        put_be(b, h16, n, 2);
    else
        put_be(b, h32, n, 4);
    put(b, p, n);
}

void tpi_nbuf_pid(tpi_nbuf *b, tp_pid pid, const char *node, size_t node_len)
{
    uint8_t x[11] = {0xc7, (uint8_t)(8 + node_len), TPI_PID_EXT};
    for (int i = 0; i < 8; i++)
        x[3 + i] = (uint8_t)(pid >> (8 * (7 - i)));
    put(b, x, sizeof x);
    put(b, node, node_len);
}

static void put_wpid(tpi_nbuf *b, const tpi_wpid *w)
{
    if (!w->node_len)
        put(b, "\xc0", 1);
    else
        tpi_nbuf_pid(b, w->pid, w->node, w->node_len);
}

bool tpi_nframe_encode(tpi_nbuf *b, const tpi_nframe *f)
{
    put(b, "\x9b\x01", 2); /* [1, ... 11 items */
    put_int(b, f->kind);
    put_uint(b, f->seq);
    put_uint(b, f->to);
    put_wpid(b, &f->from);
    put_wpid(b, &f->reply_to);
    put_int(b, f->tag);
    put_uint(b, f->ref);
    put_uint(b, f->flags);
    put_int(b, f->status);
    if (f->payload && f->len)
        put_blob(b, 0xc4, 0xc5, 0xc6, f->payload, f->len);
    else
        put(b, "\xc0", 1);
    return !b->failed;
}

bool tpi_nframe_encode_hb(tpi_nbuf *b, const tpi_nframe *f)
{
    put(b, "\x94\x01", 2);
    put_int(b, f->kind);
    put_blob(b, 0xd9, 0xda, 0xdb, f->node, f->node_len);
    put_uint(b, f->creation);
    return !b->failed;
}

/* ------------------------------------------------------------ reading */

typedef struct rd {
    const uint8_t *p;
    size_t len, off;
} rd;

static int r_int(rd *r, int64_t *i, uint64_t *u, bool *uns)
{
    size_t used;
    if (r->off >= r->len || /* (it reads a first byte unchecked) */
        tpi_decode_int(r->p + r->off, r->len - r->off, &used, i, u, uns))
        return TP_EPROTO;
    r->off += used;
    return 0;
}

static int r_sint(rd *r, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t i;
    uint64_t u;
    bool uns;
    if (r_int(r, &i, &u, &uns) || uns || i < lo || i > hi)
        return TP_EPROTO;
    *out = i;
    return 0;
}

static int r_uint(rd *r, uint64_t *out)
{
    int64_t i;
    uint64_t u;
    bool uns;
    if (r_int(r, &i, &u, &uns) || (!uns && i < 0))
        return TP_EPROTO;
    *out = uns ? u : (uint64_t)i;
    return 0;
}

static bool r_nil(rd *r)
{
    if (r->off < r->len && r->p[r->off] == 0xc0) {
        r->off++;
        return true;
    }
    return false;
}

/* A str or bin (which heads) of at most max bytes. */
static int r_blob(rd *r, bool str, size_t max, const void **p, size_t *n)
{
    if (r->off >= r->len)
        return TP_EPROTO;
    uint8_t h = r->p[r->off];
    size_t hl, len;
    if (str && (h & 0xe0) == 0xa0) {
        hl = 1;
        len = h & 0x1f;
    } else if (h == (str ? 0xd9 : 0xc4) || h == (str ? 0xda : 0xc5) ||
               h == (str ? 0xdb : 0xc6)) {
        int w = h == (str ? 0xd9 : 0xc4) ? 1 : h == (str ? 0xda : 0xc5) ? 2 : 4;
        if (r->len - r->off < 1 + (size_t)w)
            return TP_EPROTO;
        hl = 1 + (size_t)w;
        len = (size_t)tpi_be(r->p + r->off + 1, w);
    } else {
        return TP_EPROTO;
    }
    if (len > max || len > r->len - r->off - hl)
        return TP_EPROTO;
    *p = r->p + r->off + hl;
    *n = len;
    r->off += hl + len;
    return 0;
}

bool tpi_node_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > TP_NODE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int tpi_wpid_body(const uint8_t *p, size_t len, tpi_wpid *w)
{
    if (len < 9)
        return TP_EPROTO;
    w->pid = tpi_be(p, 8);
    w->node = (const char *)p + 8;
    w->node_len = len - 8;
    if (!tpi_node_name_ok(w->node, w->node_len) ||
        !tpi_pid_exportable(w->pid) || w->pid == TP_PID_NONE)
        return TP_EPROTO;
    return 0;
}

static int r_wpid(rd *r, tpi_wpid *w)
{
    memset(w, 0, sizeof *w);
    if (r_nil(r))
        return 0;
    if (r->len - r->off < 3 || r->p[r->off] != 0xc7 ||
        r->p[r->off + 2] != TPI_PID_EXT)
        return TP_EPROTO;
    size_t n = r->p[r->off + 1];
    if (n > r->len - r->off - 3)
        return TP_EPROTO;
    if (tpi_wpid_body(r->p + r->off + 3, n, w))
        return TP_EPROTO;
    r->off += 3 + n;
    return 0;
}

int tpi_nframe_next(const void *p, size_t len, size_t *used, tpi_nframe *f,
                    const char **why)
{
    memset(f, 0, sizeof *f);
    rd r = {p, len, 0};
    int64_t v;
    *why = "not a frame of a known version";
    if (len < 2 || (r.p[0] != 0x9b && r.p[0] != 0x94) || r.p[1] != 0x01)
        return TP_EPROTO;
    bool hb = r.p[0] == 0x94;
    r.off = 2;
    *why = "bad kind";
    if (r_sint(&r, TPI_NF_MSG, TPI_NF_CALLED, &f->kind) ||
        f->kind == TPI_NF_SPAWN || f->kind == TPI_NF_SPAWNED ||
        hb != (f->kind == TPI_NF_HB))
        return TP_EPROTO;
    if (hb) {
        *why = "bad heartbeat";
        if (r_blob(&r, true, TP_NODE_NAME_MAX, (const void **)&f->node,
                   &f->node_len) ||
            !tpi_node_name_ok(f->node, f->node_len) || r_uint(&r, &f->creation))
            return TP_EPROTO;
        *used = r.off;
        return 0;
    }
    *why = "bad header field";
    if (r_uint(&r, &f->seq) || f->seq == 0 || r_uint(&r, &f->to))
        return TP_EPROTO;
    *why = "forged or malformed pid";
    bool to_actor = f->kind == TPI_NF_MSG || f->kind == TPI_NF_CALLED;
    if ((to_actor && (!tpi_pid_exportable(f->to) || f->to == TP_PID_NONE)) ||
        r_wpid(&r, &f->from) || r_wpid(&r, &f->reply_to))
        return TP_EPROTO;
    *why = "bad tag, ref, flags or status";
    if (r_sint(&r, TPI_SIG_DEMONITOR, INT32_MAX, &f->tag) ||
        r_uint(&r, &f->ref) || r_uint(&r, &f->flags) || f->flags > 3 ||
        r_sint(&r, -1000, 0, &v))
        return TP_EPROTO;
    f->status = v;
    *why = "bad payload";
    if (!r_nil(&r) &&
        (r_blob(&r, false, len, &f->payload, &f->len) || f->len == 0 ||
         tp_payload_check(f->payload, f->len) != 0))
        return TP_EPROTO;
    *used = r.off;
    return 0;
}

int tpi_nframe_decode(const void *p, size_t len, tpi_nframe *f,
                      const char **why)
{
    size_t used = 0;
    int rc = tpi_nframe_next(p, len, &used, f, why);
    if (!rc && used != len) {
        *why = "trailing bytes";
        rc = TP_EPROTO;
    }
    return rc;
}

/* ------------------------------------------------------------- spawn */

bool tpi_spawn_req_encode(tpi_nbuf *b, const char *name, const void *args,
                          size_t len)
{
    put(b, "\x94\x01", 2);
    put_int(b, TPI_NF_SPAWN);
    put_blob(b, 0xd9, 0xda, 0xdb, name, strlen(name));
    if (len)
        put_blob(b, 0xc4, 0xc5, 0xc6, args, len);
    else
        put(b, "\xc0", 1);
    return !b->failed;
}

int tpi_spawn_req_decode(const void *p, size_t len, const void **name,
                         size_t *name_len, const void **args, size_t *args_len)
{
    rd r = {p, len, 2};
    int64_t kind;
    *args = NULL;
    *args_len = 0;
    if (len < 2 || tp_payload_check(p, len) != 0 || r.p[0] != 0x94 ||
        r.p[1] != 0x01 || r_sint(&r, TPI_NF_SPAWN, TPI_NF_SPAWN, &kind) ||
        r_blob(&r, true, TP_NODE_NAME_MAX, name, name_len) ||
        (!r_nil(&r) && r_blob(&r, false, len, args, args_len)) || r.off != len)
        return TP_EPROTO;
    return 0;
}

bool tpi_spawn_ans_encode(tpi_nbuf *b, tpi_node *n, int status, tp_pid pid)
{
    tpi_wpid w = {0};
    put(b, "\x94\x01", 2);
    put_int(b, TPI_NF_SPAWNED);
    put_int(b, status);
    if (!status && tpi_node_pid_out(n, pid, &w) && w.node_len)
        tpi_nbuf_pid(b, w.pid, w.node, w.node_len);
    else
        put(b, "\xc0", 1);
    return !b->failed;
}

int tpi_spawn_ans_decode(tpi_node *n, const void *p, size_t len, tp_pid *pid)
{
    rd r = {p, len, 2};
    int64_t kind, status;
    tpi_wpid w;
    if (len < 2 || tp_payload_check(p, len) != 0 || r.p[0] != 0x94 ||
        r.p[1] != 0x01 || r_sint(&r, TPI_NF_SPAWNED, TPI_NF_SPAWNED, &kind) ||
        r_sint(&r, -1000, 0, &status) || r_wpid(&r, &w) || r.off != len)
        return TP_EPROTO;
    if (status)
        return (int)status;
    *pid = tpi_node_pid_in(n, &w);
    return *pid == TP_PID_NONE ? TP_EPROTO : 0;
}
