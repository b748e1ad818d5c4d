/*
 * One fuzz input for the node frame codec (runtime/node/wire.c), shared
 * by the libFuzzer target (fuzz_nframe.c) and the ctest replay
 * (test/node/test_wire.c). The bytes are decoded as one frame (as a
 * node's heartbeat and group subscriptions do), as frames back to back
 * (as its inbox does) and as a pid extension
 * body (tpi_wpid_body, as pids in payloads are read). Nothing may crash
 * or read out of bounds; an accepted frame must hold only what the
 * decoder promises (pointers inside the input, names that are names,
 * fields within their ranges), and encoding it again must give a frame
 * that decodes to the same fields.
 */
#ifndef NFRAME_FUZZ_H
#define NFRAME_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/node/node_int.h"

static inline void nfuzz_inside(const void *p, size_t n, const uint8_t *base,
                                size_t len)
{
    const uint8_t *q = p;
    if (n && (q < base || q + n > base + len || n > len))
        abort();
}

static inline void nfuzz_wpid_ok(const tpi_wpid *w, const uint8_t *base,
                                 size_t len)
{
    if (!w->node_len) {
        if (w->pid != TP_PID_NONE)
            abort();
        return;
    }
    nfuzz_inside(w->node, w->node_len, base, len);
    if (!tpi_node_name_ok(w->node, w->node_len) ||
        !tpi_pid_exportable(w->pid) || w->pid == TP_PID_NONE)
        abort();
}

static inline bool nfuzz_wpid_eq(const tpi_wpid *a, const tpi_wpid *b)
{
    return a->pid == b->pid && a->node_len == b->node_len &&
           (!a->node_len || memcmp(a->node, b->node, a->node_len) == 0);
}

/* Fields of two decoded frames are the same. */
static inline bool nfuzz_same(const tpi_nframe *a, const tpi_nframe *b)
{
    if (a->kind != b->kind)
        return false;
    if (a->kind == TPI_NF_HB)
        return a->node_len == b->node_len &&
               memcmp(a->node, b->node, a->node_len) == 0 &&
               a->creation == b->creation;
    return a->seq == b->seq && a->to == b->to &&
           nfuzz_wpid_eq(&a->from, &b->from) &&
           nfuzz_wpid_eq(&a->reply_to, &b->reply_to) && a->tag == b->tag &&
           a->ref == b->ref && a->flags == b->flags && a->status == b->status &&
           a->len == b->len &&
           (!a->len || memcmp(a->payload, b->payload, a->len) == 0);
}

/* data as one frame. */
static inline void nfuzz_frame(const uint8_t *data, size_t len)
{
    tpi_nframe f;
    const char *why = NULL;
    if (tpi_nframe_decode(data, len, &f, &why) != 0) {
        if (!why)
            abort();
        return;
    }
    if (f.kind < TPI_NF_MSG) /* kinds come and go: only known ones pass */
        abort();
    if (f.kind == TPI_NF_HB) {
        nfuzz_inside(f.node, f.node_len, data, len);
        if (!tpi_node_name_ok(f.node, f.node_len))
            abort();
    } else {
        nfuzz_wpid_ok(&f.from, data, len);
        nfuzz_wpid_ok(&f.reply_to, data, len);
        if (f.seq == 0 || f.flags > 3 || f.status > 0 || f.status < -1000 ||
            f.tag < TPI_SIG_DEMONITOR || f.tag > INT32_MAX)
            abort();
        if (f.kind == TPI_NF_MSG &&
            (!tpi_pid_exportable(f.to) || f.to == TP_PID_NONE))
            abort();
        if (f.payload) {
            nfuzz_inside(f.payload, f.len, data, len);
            if (f.len == 0 || tp_payload_check(f.payload, f.len) != 0)
                abort();
        } else if (f.len) {
            abort();
        }
    }
    /* Encode it again: the same fields come back. */
    tpi_nbuf b = {0};
    bool ok = f.kind == TPI_NF_HB ? tpi_nframe_encode_hb(&b, &f)
                                  : tpi_nframe_encode(&b, &f);
    tpi_nframe g;
    if (!ok || tpi_nframe_decode(b.p, b.len, &g, &why) != 0 ||
        !nfuzz_same(&f, &g))
        abort();
    tp_free(b.p);
}

/* data as a pid extension body. */
static inline void nfuzz_wpid(const uint8_t *data, size_t len)
{
    tpi_wpid w;
    memset(&w, 0, sizeof w);
    if (tpi_wpid_body(data, len, &w) != 0)
        return;
    if (w.node_len != len - 8 || w.node != (const char *)data + 8)
        abort();
    nfuzz_wpid_ok(&w, data, len);
}

/* data as an inbox message: frames back to back, read in turn until one
 * is bad; each accepted one lies inside what is left. */
static inline void nfuzz_batch(const uint8_t *data, size_t len)
{
    size_t off = 0, used = 0;
    tpi_nframe f;
    const char *why = NULL;
    while (off < len &&
           tpi_nframe_next(data + off, len - off, &used, &f, &why) == 0) {
        if (used == 0 || used > len - off)
            abort();
        if (f.payload)
            nfuzz_inside(f.payload, f.len, data + off, used);
        off += used;
    }
}

static inline void nfuzz_one(const uint8_t *data, size_t len)
{
    nfuzz_frame(data, len);
    nfuzz_batch(data, len);
    nfuzz_wpid(data, len);
}

#endif
