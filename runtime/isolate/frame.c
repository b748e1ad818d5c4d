/*
 * The frame codec of the isolated-worker channel (issue 7): a length
 * splitter and a strict decoder that check everything before anything is
 * allocated. See runtime/isolate/frame.h for the layout.
 */
#include "runtime/isolate/frame.h"
#include "runtime/service.h"

#include <string.h>

int tpi_frame_next(const void *p, size_t avail, size_t cap, size_t *body_len)
{
    *body_len = 0;
    if (avail < 4)
        return 1;
    uint64_t n = tpi_be(p, 4);
    if (n == 0)
        return TP_EPROTO;
    if (n > cap)
        return TP_E2BIG;
    *body_len = (size_t)n;
    return avail - 4 >= n ? 0 : 1;
}

/* One msgpack integer at *pp (end e). The body passed the structural
 * check, so a header's bytes are all there; the type is what can be
 * wrong. A uint64 above INT64_MAX keeps its bits (pids). */
static int read_int(const uint8_t **pp, const uint8_t *e, int64_t *out)
{
    size_t used;
    uint64_t u;
    bool uns;
    if (*pp >= e ||
        tpi_decode_int(*pp, (size_t)(e - *pp), &used, out, &u, &uns) != 0)
        return -1;
    if (uns)
        *out = (int64_t)u;
    *pp += used;
    return 0;
}

int tpi_frame_decode(const void *body, size_t len, tpi_frame *f,
                     const char **why)
{
    const uint8_t *p = body, *e = p + len;
    static const char *const texts[] = {
        "frame body is not one well-formed msgpack object",
        "frame is not an array of 6 elements",
        "frame field is not an integer",
        "frame payload is neither bin nor nil",
        "frame payload is not one well-formed msgpack object",
    };
    int err;
    memset(f, 0, sizeof *f);
    /* The walk refuses count bombs, truncation, 0xc1 and deep nesting. */
    if (!body || len == 0 || tp_payload_check(body, len) != 0) {
        err = 0;
        goto bad;
    }
    if (*p++ != 0x96) {
        err = 1;
        goto bad;
    }
    int64_t *fields[] = {&f->kind, &f->a, &f->b, &f->c, &f->d};
    for (int i = 0; i < 5; i++)
        if (read_int(&p, e, fields[i]) != 0) {
            err = 2;
            goto bad;
        }
    if (p >= e) {
        err = 3;
        goto bad;
    }
    uint8_t b = *p++;
    int n = b == 0xc4 ? 1 : b == 0xc5 ? 2 : b == 0xc6 ? 4 : 0;
    if (b == 0xc0) {
        f->payload = NULL;
        f->len = 0;
    } else if (n && e - p >= n) {
        uint64_t blen = tpi_be(p, n);
        p += n;
        if (blen != (uint64_t)(e - p)) { /* the check made this exact */
            err = 3;
            goto bad;
        }
        f->payload = p;
        f->len = (size_t)blen;
        p += blen;
        if (f->kind != TPI_FRAME_EXIT && f->len &&
            tp_payload_check(f->payload, f->len) != 0) {
            err = 4;
            goto bad;
        }
    } else {
        err = 3;
        goto bad;
    }
    if (p != e) {
        err = 0;
        goto bad;
    }
    return 0;
bad:
    if (why)
        *why = texts[err];
    memset(f, 0, sizeof *f);
    return TP_EPROTO;
}

static size_t put_int(uint8_t *o, int64_t v)
{
    return tpi_pack_int((char *)o, v);
}

static size_t put_u64(uint8_t *o, uint64_t v)
{
    if (v <= INT64_MAX)
        return put_int(o, (int64_t)v);
    o[0] = 0xcf;
    for (int i = 0; i < 8; i++)
        o[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    return 9;
}

size_t tpi_frame_head(uint8_t out[TPI_FRAME_HEAD_MAX], int64_t kind, int64_t a,
                      int64_t b, int64_t c, int64_t d, size_t payload_len)
{
    uint8_t *o = out + 4;
    *o++ = 0x96;
    o += put_int(o, kind);
    o += put_int(o, a);
    o += put_u64(o, (uint64_t)b); /* pids */
    o += put_u64(o, (uint64_t)c); /* refs */
    o += put_int(o, d);
    if (payload_len == 0) {
        *o++ = 0xc0;
    } else if (payload_len < 256) {
        *o++ = 0xc4;
        *o++ = (uint8_t)payload_len;
    } else if (payload_len < 65536) {
        *o++ = 0xc5;
        *o++ = (uint8_t)(payload_len >> 8);
        *o++ = (uint8_t)payload_len;
    } else {
        *o++ = 0xc6;
        for (int i = 0; i < 4; i++)
            *o++ = (uint8_t)(payload_len >> (24 - 8 * i));
    }
    size_t head = (size_t)(o - out);
    uint64_t body = head - 4 + (uint64_t)payload_len;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(body >> (24 - 8 * i));
    return head;
}
