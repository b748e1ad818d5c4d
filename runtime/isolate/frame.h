/*
 * Frames between the runtime and an isolated worker process (issue 7).
 *
 * On the wire a frame is a 4-byte big-endian body length followed by the
 * body, a msgpack array of exactly six elements:
 *
 *     [kind, a, b, c, d, payload]
 *
 * kind..d are msgpack integers whose meaning depends on kind (below);
 * payload is a msgpack bin (one user msgpack object, or a reason text) or
 * nil. A body is checked without allocating (tp_payload_check's walk:
 * declared counts no larger than the bytes left, a depth cap) and then
 * read by the small strict decoder here; msgpack-c never sees it.
 */
#ifndef TPI_FRAME_H
#define TPI_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Frame kinds. Parent to worker: START, MSG. Worker to parent: SEND,
 * REPLY, DONE, EXIT. */
enum {
    TPI_FRAME_START = 1, /* [1, self pid, spawner pid, 0, 0, nil] */
    TPI_FRAME_MSG = 2,   /* [2, tag, from, ref, flags, payload] */
    TPI_FRAME_SEND = 3,  /* [3, tag, to, 0, 0, payload] */
    TPI_FRAME_REPLY = 4, /* [4, status, 0, request id, 0, payload] */
    TPI_FRAME_DONE = 5,  /* [5, messages handled, 0, 0, 0, nil] */
    TPI_FRAME_EXIT = 6,  /* [6, exit kind, code, 0, 0, text] */
};

/* TPI_FRAME_MSG flags */
#define TPI_FRAME_REQUEST 1u

#define TPI_FRAME_HEAD_MAX 64 /* length prefix + everything before payload */

typedef struct tpi_frame {
    int64_t kind, a, b, c, d;
    const void *payload; /* points into the body; NULL when nil */
    size_t len;
} tpi_frame;

/* Where the next frame of a byte stream stands, given avail bytes at p
 * and the largest body accepted (cap). Returns 0 with *body_len set when
 * a whole frame is there (its body starts at p + 4), 1 when more bytes
 * are needed (*body_len set if the length is known, else 0), or
 * TP_E2BIG for a length over cap, TP_EPROTO for a length of 0. Reads
 * only the first min(avail, 4) bytes at p (a caller may pass a copy of
 * the 4 length bytes with the stream's avail). */
int tpi_frame_next(const void *p, size_t avail, size_t cap, size_t *body_len);

/* Decode a body of len bytes into *f. 0, or TP_EPROTO with *why set to a
 * static text naming the problem. f->payload points into body. Kinds are
 * not checked here. The payload, when a bin, must itself be one valid
 * msgpack object unless the kind is TPI_FRAME_EXIT (a text). */
int tpi_frame_decode(const void *body, size_t len, tpi_frame *f,
                     const char **why);

/* Write the length prefix and the head of a frame whose payload has
 * payload_len bytes (0: nil) into out; returns the head's length. The
 * payload bytes follow the head on the wire. */
size_t tpi_frame_head(uint8_t out[TPI_FRAME_HEAD_MAX], int64_t kind, int64_t a,
                      int64_t b, int64_t c, int64_t d, size_t payload_len);

#endif
