/*
 * One fuzz input for the frame codec (runtime/frame.c), shared by the
 * libFuzzer target (fuzz_frame.c) and the ctest replay (test_frame.c):
 * the bytes are read as a stream of frames, as the runtime reads a
 * worker's channel, and also as one frame body. Nothing may crash, read
 * out of bounds or allocate; an accepted frame must point inside input.
 */
#ifndef FRAME_FUZZ_H
#define FRAME_FUZZ_H

#include <stdint.h>
#include <stdlib.h>

#include "runtime/isolate/frame.h"

static void fuzz_frame_check(const uint8_t *body, size_t len)
{
    tpi_frame f;
    const char *why = NULL;
    if (tpi_frame_decode(body, len, &f, &why) == 0) {
        if (f.payload && ((const uint8_t *)f.payload < body ||
                          (const uint8_t *)f.payload + f.len > body + len))
            abort();
        /* What the parent then does with the fields must be safe too. */
        uint8_t head[TPI_FRAME_HEAD_MAX];
        (void)tpi_frame_head(head, f.kind, f.a, f.b, f.c, f.d, f.len);
    } else if (!why) {
        abort();
    }
}

static inline void fuzz_frame_one(const uint8_t *data, size_t len)
{
    fuzz_frame_check(data, len);
    size_t off = 0, blen;
    while (off < len) {
        int rc = tpi_frame_next(data + off, len - off, 1u << 16, &blen);
        if (rc != 0)
            break; /* need more, or a refused length: the stream ends */
        fuzz_frame_check(data + off + 4, blen);
        off += 4 + blen;
    }
}

#endif
