/*
 * The frame codec of nodes (runtime/node/wire.c): every frame kind
 * round-trips through tpi_nframe_encode/tpi_nframe_decode; the decoder
 * refuses, without allocating and without reading past the frame, every
 * truncation of every valid frame, a bin that declares 4 GiB, nesting
 * deeper than the limit, a forged (remote-form) addressee, pid extensions
 * with bad names or lengths, unknown kinds and versions, out-of-range
 * fields and trailing bytes; and the fuzz seed corpus and every crash the
 * fuzzer found (test/node/fuzz/) are replayed.
 *
 * The seeds are made here: test_wire --write-corpus DIR writes them (the
 * valid frames with tpi_nframe_encode) as test/node/fuzz/corpus/ holds
 * them. A seed named frame_ok_* must decode, frame_bad_* must not;
 * pid_ok_* and pid_bad_* are pid extension bodies (tpi_wpid_body).
 */
#include <stdatomic.h>
#include <sys/stat.h>

#include "fuzz_replay.h"
#include "tp_test.h"
#include "runtime/node/node_int.h"
#include "test/node/fuzz/nframe_fuzz.h"

/* Every allocation of the runtime goes through the hook: count them. */
static atomic_size_t n_allocs;
static void *count_alloc(size_t n)
{
    n_allocs++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n)
{
    n_allocs++;
    return realloc(p, n);
}

/* ------------------------------------------------ building bytes */

typedef struct buf {
    uint8_t p[1 << 18];
    size_t n;
} buf;

static void b_raw(buf *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof b->p);
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void b_byte(buf *b, uint8_t x) { b_raw(b, &x, 1); }
static void b_be(buf *b, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        b_byte(b, (uint8_t)(v >> (8 * i)));
}
static void b_int(buf *b, int64_t v)
{
    char x[9];
    b_raw(b, x, tpi_pack_int(x, v));
}
static void b_u64(buf *b, uint64_t v) /* always the 9-byte form */
{
    b_byte(b, 0xcf);
    b_be(b, v, 8);
}
static void b_str(buf *b, const char *s, size_t n)
{
    if (n < 32) {
        b_byte(b, (uint8_t)(0xa0 | n));
    } else {
        b_byte(b, 0xd9);
        b_byte(b, (uint8_t)n);
    }
    b_raw(b, s, n);
}
static void b_bin(buf *b, const void *p, size_t n)
{
    b_byte(b, 0xc4);
    b_byte(b, (uint8_t)n);
    b_raw(b, p, n);
}
/* A pid extension (ext8 of type TPI_PID_EXT) of pid and name. */
static void b_pid(buf *b, uint64_t pid, const char *name, size_t n)
{
    b_byte(b, 0xc7);
    b_byte(b, (uint8_t)(8 + n));
    b_byte(b, TPI_PID_EXT);
    b_be(b, pid, 8);
    b_raw(b, name, n);
}

/* Encode f (any kind) into b. */
static void b_frame(buf *b, const tpi_nframe *f)
{
    tpi_nbuf nb = {0};
    bool ok = f->kind == TPI_NF_HB ? tpi_nframe_encode_hb(&nb, f)
                                   : tpi_nframe_encode(&nb, f);
    assert_true(ok);
    b->n = 0;
    b_raw(b, nb.p, nb.len);
    tp_free(nb.p);
}

/* Skip one msgpack object at p (n bytes): its length, 0 if malformed. */
static size_t skip1(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t h = p[0];
    size_t hl = 1, body = 0, items = 0;
    if (h <= 0x7f || h >= 0xe0 || h == 0xc0 || h == 0xc2 || h == 0xc3) {
    } else if ((h & 0xf0) == 0x90) {
        items = h & 0x0f;
    } else if ((h & 0xf0) == 0x80) {
        items = 2u * (h & 0x0f);
    } else if ((h & 0xe0) == 0xa0) {
        body = h & 0x1f;
    } else {
        static const int lenb[] =
            {[0xc4] = 1, [0xc5] = 2, [0xc6] = 4, [0xc7] = 1, [0xc8] = 2,
             [0xc9] = 4, [0xd9] = 1, [0xda] = 2, [0xdb] = 4, [0xdc] = 2,
             [0xdd] = 4, [0xde] = 2, [0xdf] = 4};
        static const int fixed[] =
            {[0xca] = 4, [0xcb] = 8, [0xcc] = 1, [0xcd] = 2, [0xce] = 4,
             [0xcf] = 8, [0xd0] = 1, [0xd1] = 2, [0xd2] = 4, [0xd3] = 8,
             [0xd4] = 2, [0xd5] = 3, [0xd6] = 5, [0xd7] = 9, [0xd8] = 17};
        if (h <= 0xdf && lenb[h]) {
            if (n < 1u + (size_t)lenb[h])
                return 0;
            uint64_t v = tpi_be(p + 1, lenb[h]);
            hl += (size_t)lenb[h];
            if (h >= 0xdc)
                items = h >= 0xde ? 2 * v : v;
            else
                body = v + (h >= 0xc7 && h <= 0xc9); /* ext: type byte */
        } else if (h <= 0xd8 && fixed[h]) {
            body = (size_t)fixed[h];
        } else {
            return 0;
        }
    }
    if (hl + body > n)
        return 0;
    size_t off = hl + body;
    for (size_t i = 0; i < items; i++) {
        size_t k = skip1(p + off, n - off);
        if (!k)
            return 0;
        off += k;
    }
    return off;
}

/* out = frame in with its item i (0: the version) replaced by the bytes
 * rep (an object, or several, or none). */
static void splice(buf *out, const buf *in, int i, const void *rep, size_t n)
{
    size_t off = 1; /* after the fixarray head */
    for (int k = 0; k < i; k++) {
        size_t s = skip1(in->p + off, in->n - off);
        assert_true(s > 0);
        off += s;
    }
    size_t s = skip1(in->p + off, in->n - off);
    assert_true(s > 0);
    out->n = 0;
    b_raw(out, in->p, off);
    b_raw(out, rep, n);
    b_raw(out, in->p + off + s, in->n - off - s);
}

/* Field positions in a frame. */
enum { F_VER, F_KIND, F_SEQ, F_TO, F_FROM, F_REPLY, F_TAG, F_REF, F_FLAGS };
enum { F_STATUS = 9, F_PAYLOAD = 10, F_HB_NODE = 2, F_HB_CREATION = 3 };

/* ------------------------------------------------- checking */

/* Decode p..n from an allocation of exactly n bytes (so ASan sees any
 * read past the end), returned in *copy (free it: *f points into it);
 * nothing may be allocated. */
static int decode_in(const void *p, size_t n, tpi_nframe *f, const char **why,
                     uint8_t **copy)
{
    *copy = malloc(n ? n : 1);
    assert_non_null(*copy);
    if (n)
        memcpy(*copy, p, n);
    size_t before = n_allocs;
    *why = NULL;
    int rc = tpi_nframe_decode(*copy, n, f, why);
    assert_int_equal(n_allocs, before);
    if (rc != 0) {
        assert_int_equal(rc, TP_EPROTO);
        assert_non_null(*why);
    }
    nfuzz_one(*copy, n); /* the fuzz target's checks hold too */
    return rc;
}

static int decode(const void *p, size_t n, tpi_nframe *f, const char **why)
{
    uint8_t *copy;
    int rc = decode_in(p, n, f, why, &copy);
    free(copy);
    return rc;
}

static void refused(const buf *b, const char *what)
{
    tpi_nframe f;
    const char *why;
    if (decode(b->p, b->n, &f, &why) == 0)
        fail_msg("accepted: %s", what);
}

static void accepted(const buf *b, const char *what)
{
    tpi_nframe f;
    const char *why;
    if (decode(b->p, b->n, &f, &why) != 0)
        fail_msg("refused (%s): %s", why, what);
}

/* ------------------------------------------------- the valid frames */

#define NAME63                                                                 \
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
#define PID_MAX ((uint64_t)TPI_PID_FIELD << 32 | TPI_PID_FIELD)

static const uint8_t pl_small[] = {0x92, 0x01, 0xa2, 'h', 'i'};
static uint8_t pl_300[300];     /* bin16 */
static uint8_t pl_70000[70000]; /* bin32 */

typedef struct sample {
    const char *name;
    tpi_nframe f;
} sample;

static sample valid[16];
static size_t n_valid;

static void make_valid(void)
{
    /* Payloads: one str object each, of the sizes that take bin16 and
     * bin32 in the frame. */
    pl_300[0] = 0xda;
    pl_300[1] = (300 - 3) >> 8;
    pl_300[2] = (300 - 3) & 0xff;
    memset(pl_300 + 3, 'x', sizeof pl_300 - 3);
    pl_70000[0] = 0xdb;
    uint32_t l = sizeof pl_70000 - 5;
    pl_70000[1] = (uint8_t)(l >> 24);
    pl_70000[2] = (uint8_t)(l >> 16);
    pl_70000[3] = (uint8_t)(l >> 8);
    pl_70000[4] = (uint8_t)l;
    memset(pl_70000 + 5, 'y', sizeof pl_70000 - 5);
    tpi_wpid b7 = {7ull << 32 | 1, "B", 1};
    tpi_wpid far = {PID_MAX, NAME63, 63};
    tpi_wpid odd = {1, "n-0_Z", 5};
    n_valid = 0;
#define ADD(nm, ...)                                                           \
    valid[n_valid++] = (sample)                                                \
    {                                                                          \
        nm, { __VA_ARGS__ }                                                    \
    }
    ADD("msg_call", .kind = TPI_NF_MSG, .seq = 1, .to = 5ull << 32 | 3,
        .from = b7, .reply_to = b7, .tag = 7, .ref = 12345,
        .flags = TPI_NFL_REQUEST, .payload = pl_small, .len = sizeof pl_small);
    ADD("msg_reply", .kind = TPI_NF_MSG, .seq = 2, .to = 1ull << 32 | 1,
        .tag = TP_TAG_REPLY, .ref = UINT64_MAX - 1, .status = TP_ENOPROC);
    ADD("msg_link", .kind = TPI_NF_MSG, .seq = 3, .to = 2, .from = odd,
        .tag = TPI_SIG_LINK);
    ADD("msg_exit", .kind = TPI_NF_MSG, .seq = 4, .to = 2, .from = odd,
        .tag = TPI_SIG_EXIT, .flags = TPI_NFL_VIA_LINK, .payload = pl_small,
        .len = sizeof pl_small);
    ADD("msg_demonitor", .kind = TPI_NF_MSG, .seq = 5, .to = 9, .from = b7,
        .tag = TPI_SIG_DEMONITOR, .ref = 1);
    ADD("msg_extremes", .kind = TPI_NF_MSG, .seq = UINT64_MAX, .to = PID_MAX,
        .from = far, .reply_to = odd, .tag = INT32_MAX, .ref = UINT64_MAX,
        .flags = 3, .status = -1000, .payload = pl_300, .len = sizeof pl_300);
    ADD("msg_bin32", .kind = TPI_NF_MSG, .seq = 1, .to = 1, .tag = 0,
        .payload = pl_70000, .len = sizeof pl_70000);
    ADD("break", .kind = TPI_NF_BREAK, .seq = 6);
    ADD("called", .kind = TPI_NF_CALLED, .seq = 8, .to = 4ull << 32 | 2,
        .ref = 99);
    ADD("leave", .kind = TPI_NF_LEAVE, .seq = 1ull << 40);
    ADD("hb", .kind = TPI_NF_HB, .node = "node-1", .node_len = 6,
        .creation = 123456789);
    ADD("hb_long", .kind = TPI_NF_HB, .node = NAME63, .node_len = 63,
        .creation = UINT64_MAX);
#undef ADD
}

/* Valid frame i, encoded (into a buffer of the caller's: keep it). */
static const buf *valid_frame(size_t i, buf *out)
{
    b_frame(out, &valid[i].f);
    return out;
}

static size_t valid_named(const char *name)
{
    for (size_t i = 0; i < n_valid; i++)
        if (strcmp(valid[i].name, name) == 0)
            return i;
    fail_msg("no valid frame %s", name);
    return 0;
}

/* ------------------------------------------------- the seeds */

typedef void (*emit_fn)(const char *name, const void *p, size_t n);

static void emit_buf(emit_fn emit, const char *name, const buf *b)
{
    emit(name, b->p, b->n);
}

/* Every seed: the valid frames (but the 70 KB one) and malformed ones,
 * and pid extension bodies. */
static void seeds(emit_fn emit)
{
    static buf b, m, v0;
    char name[64];
    for (size_t i = 0; i < n_valid; i++) {
        const buf *v = valid_frame(i, &v0);
        if (v->n > 4096)
            continue;
        snprintf(name, sizeof name, "frame_ok_%s", valid[i].name);
        emit_buf(emit, name, v);
    }
    emit("frame_ok_hb_fixstr", "\x94\x01\x03\xa1\x41\x00", 6);

    valid_frame(valid_named("msg_call"), &b); /* to splice */
    emit("frame_bad_empty", "", 0);
    emit("frame_bad_garbage", "\xc1\xc1\xc1", 3);
    m = b;
    m.n--;
    emit_buf(emit, "frame_bad_truncated", &m);
    static const uint8_t huge[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 0x01};
    splice(&m, &b, F_PAYLOAD, huge, sizeof huge);
    emit_buf(emit, "frame_bad_bin_4gib", &m);
    uint8_t deep[200];
    memset(deep, 0x91, sizeof deep);
    deep[sizeof deep - 1] = 0xc0;
    emit("frame_bad_deep_200", deep, sizeof deep);
    static buf inner;
    inner.n = 0;
    uint8_t d33[40];
    memset(d33, 0x91, 33);
    d33[33] = 0xc0;
    b_bin(&inner, d33, 34);
    splice(&m, &b, F_PAYLOAD, inner.p, inner.n);
    emit_buf(emit, "frame_bad_payload_deep_33", &m);
    inner.n = 0;
    b_u64(&inner, TPI_PID_REMOTE | 1ull << 48 | 1ull << 24 | 1);
    splice(&m, &b, F_TO, inner.p, inner.n);
    emit_buf(emit, "frame_bad_forged_to", &m);
    inner.n = 0;
    b_pid(&inner, 7ull << 32 | 1, "a.b", 3);
    splice(&m, &b, F_FROM, inner.p, inner.n);
    emit_buf(emit, "frame_bad_from_name_dot", &m);
    inner.n = 0;
    b_pid(&inner, 7ull << 32 | 1, "", 0);
    splice(&m, &b, F_REPLY, inner.p, inner.n);
    emit_buf(emit, "frame_bad_reply_to_no_name", &m);
    splice(&m, &b, F_KIND, "\x63", 1);
    emit_buf(emit, "frame_bad_kind_99", &m);
    splice(&m, &b, F_VER, "\x02", 1);
    emit_buf(emit, "frame_bad_version_2", &m);
    splice(&m, &b, F_SEQ, "\x00", 1);
    emit_buf(emit, "frame_bad_seq_0", &m);
    splice(&m, &b, F_FLAGS, "\x04", 1);
    emit_buf(emit, "frame_bad_flags_4", &m);
    splice(&m, &b, F_PAYLOAD, "\xc4\x02\xc1\xc1", 4);
    emit_buf(emit, "frame_bad_payload_not_msgpack", &m);
    m = b;
    m.p[m.n++] = 0x00;
    emit_buf(emit, "frame_bad_trailing", &m);
    emit("frame_bad_hb_name_gt", "\x94\x01\x03\xa1>\x00", 6);

    /* Pid extension bodies: 8 bytes of pid, then the name. */
    emit("pid_ok_B",
         "\x00\x00\x00\x07\x00\x00\x00\x01"
         "B",
         9);
    emit("pid_bad_no_name", "\x00\x00\x00\x07\x00\x00\x00\x01", 8);
    emit("pid_bad_remote",
         "\x80\x01\x00\x00\x01\x00\x00\x01"
         "B",
         9);
    emit("pid_bad_none",
         "\x00\x00\x00\x00\x00\x00\x00\x00"
         "B",
         9);
    emit("pid_bad_name",
         "\x00\x00\x00\x07\x00\x00\x00\x01"
         "B.C",
         11);
}

/* A seed or a corpus file: its name says what the decoder must do. */
static void check_named(const char *name, const void *p, size_t n)
{
    tpi_nframe f;
    const char *why;
    tpi_wpid w;
    if (strncmp(name, "frame_ok_", 9) == 0) {
        if (decode(p, n, &f, &why) != 0)
            fail_msg("%s refused: %s", name, why);
    } else if (strncmp(name, "frame_bad_", 10) == 0) {
        if (decode(p, n, &f, &why) == 0)
            fail_msg("%s accepted", name);
    } else if (strncmp(name, "pid_ok_", 7) == 0) {
        assert_int_equal(tpi_wpid_body(p, n, &w), 0);
    } else if (strncmp(name, "pid_bad_", 8) == 0) {
        assert_int_equal(tpi_wpid_body(p, n, &w), TP_EPROTO);
    }
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
    nfuzz_one(copy, n);
    free(copy);
}

static void test_seeds(void **unused)
{
    (void)unused;
    seeds(check_named);
}

/* ------------------------------------------------- round trips */

static void test_round_trip(void **unused)
{
    (void)unused;
    static buf v;
    for (size_t i = 0; i < n_valid; i++) {
        const buf *b = valid_frame(i, &v);
        tpi_nframe f;
        const char *why;
        uint8_t *p;
        if (decode_in(b->p, b->n, &f, &why, &p) != 0)
            fail_msg("%s refused: %s", valid[i].name, why);
        if (!nfuzz_same(&valid[i].f, &f))
            fail_msg("%s: fields changed on the way", valid[i].name);
        /* What points into the frame points inside it. */
        if (f.payload)
            assert_true((const uint8_t *)f.payload > p &&
                        (const uint8_t *)f.payload + f.len <= p + b->n);
        if (f.from.node_len)
            assert_true((const uint8_t *)f.from.node > p &&
                        (const uint8_t *)f.from.node + f.from.node_len <=
                            p + b->n);
        if (f.node_len)
            assert_true((const uint8_t *)f.node > p &&
                        (const uint8_t *)f.node + f.node_len <= p + b->n);
        free(p);
    }
    /* A heartbeat with a fixstr name (the encoder writes str8). */
    static const uint8_t fix[] = {0x94, 0x01, 0x03, 0xa2, 'n', '1', 0x05};
    tpi_nframe f;
    const char *why;
    uint8_t *p;
    assert_int_equal(decode_in(fix, sizeof fix, &f, &why, &p), 0);
    assert_int_equal(f.kind, TPI_NF_HB);
    assert_int_equal(f.node_len, 2);
    assert_memory_equal(f.node, "n1", 2);
    assert_int_equal(f.creation, 5);
    free(p);
    /* Ints in any width decode the same (a 9-byte seq of 1). */
    static buf m;
    static const uint8_t seq1[] = {0xcf, 0, 0, 0, 0, 0, 0, 0, 1};
    splice(&m, valid_frame(valid_named("msg_call"), &v), F_SEQ, seq1,
           sizeof seq1);
    assert_int_equal(decode(m.p, m.n, &f, &why), 0);
    assert_int_equal(f.seq, 1);
}

/* ------------------------------------------------- hostile frames */

static void test_truncations(void **unused)
{
    (void)unused;
    static buf v;
    for (size_t i = 0; i < n_valid; i++) {
        const buf *b = valid_frame(i, &v);
        /* The 70 KB frame: its head, and a sample of lengths. */
        size_t step = b->n > 4096 ? 97 : 1;
        for (size_t n = 0; n < b->n; n += (n < 64 ? 1 : step)) {
            tpi_nframe f;
            const char *why;
            if (decode(b->p, n, &f, &why) == 0)
                fail_msg("%s cut to %zu of %zu bytes: accepted", valid[i].name,
                         n, b->n);
        }
    }
}

static void test_huge_bin(void **unused)
{
    (void)unused;
    static buf m, in, v;
    const buf *b = valid_frame(valid_named("msg_call"), &v);
    /* The payload bin declares 4 GiB - 1 and 4 GiB-ish lengths. */
    static const uint8_t h1[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t h2[] = {0xc6, 0x80, 0x00, 0x00, 0x00, 0x01, 0x02};
    static const uint8_t h3[] = {0xc5, 0xff, 0xff, 0x01};
    splice(&m, b, F_PAYLOAD, h1, sizeof h1);
    refused(&m, "payload bin32 of 4 GiB");
    splice(&m, b, F_PAYLOAD, h2, sizeof h2);
    refused(&m, "payload bin32 of 2 GiB");
    splice(&m, b, F_PAYLOAD, h3, sizeof h3);
    refused(&m, "payload bin16 of 64 KiB");
    /* Inside a well-formed bin, a payload declaring 4 GiB. */
    in.n = 0;
    b_bin(&in, h1, sizeof h1);
    splice(&m, b, F_PAYLOAD, in.p, in.n);
    refused(&m, "payload object: a bin32 of 4 GiB");
    static const uint8_t s4[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
    in.n = 0;
    b_bin(&in, s4, sizeof s4);
    splice(&m, b, F_PAYLOAD, in.p, in.n);
    refused(&m, "payload object: a str32 of 4 GiB");
    static const uint8_t a4[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0};
    in.n = 0;
    b_bin(&in, a4, sizeof a4);
    splice(&m, b, F_PAYLOAD, in.p, in.n);
    refused(&m, "payload object: an array32 of 4 G items");
    /* A heartbeat whose name is a str32 of 4 GiB. */
    static const uint8_t hb[] = {0x94, 0x01, 0x03, 0xdb, 0xff,
                                 0xff, 0xff, 0xff, 'A',  0x00};
    in.n = 0;
    b_raw(&in, hb, sizeof hb);
    refused(&in, "heartbeat name str32 of 4 GiB");
    /* The from slot: an ext32 of 4 GiB. */
    static const uint8_t e4[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x70, 0x00};
    splice(&m, b, F_FROM, e4, sizeof e4);
    refused(&m, "from: ext32 of 4 GiB");
}

static void test_deep(void **unused)
{
    (void)unused;
    static buf m, in, v;
    const buf *b = valid_frame(valid_named("msg_call"), &v);
    static uint8_t deep[1001];
    /* A payload nested within the limit passes; deeper ones do not. */
    const size_t depths[] = {20, 33, 64, 1000};
    for (size_t k = 0; k < sizeof depths / sizeof *depths; k++) {
        size_t d = depths[k];
        memset(deep, 0x91, d);
        deep[d] = 0xc0;
        in.n = 0;
        b_byte(&in, 0xc5); /* bin16 */
        b_be(&in, d + 1, 2);
        b_raw(&in, deep, d + 1);
        splice(&m, b, F_PAYLOAD, in.p, in.n);
        if (d <= 20)
            accepted(&m, "payload nested 20 deep");
        else
            refused(&m, "payload nested deeper than the limit");
    }
    /* The frame itself nested: in the tag, the from and the payload slot
     * (not wrapped in a bin), and as a whole. */
    memset(deep, 0x91, 1000);
    deep[1000] = 0xc0;
    splice(&m, b, F_TAG, deep, 1001);
    refused(&m, "tag: 1000 nested arrays");
    splice(&m, b, F_FROM, deep + 1000 - 40, 41);
    refused(&m, "from: 40 nested arrays");
    splice(&m, b, F_PAYLOAD, deep + 1000 - 10, 11);
    refused(&m, "payload: an array, not a bin");
    in.n = 0;
    b_raw(&in, deep, 1001);
    refused(&in, "1000 nested arrays");
    /* Maps nest as deep. */
    in.n = 0;
    for (int i = 0; i < 100; i++) {
        b_byte(&in, 0x81);
        b_byte(&in, 0x01);
    }
    b_byte(&in, 0xc0);
    refused(&in, "100 nested maps");
}

static void test_forged_to(void **unused)
{
    (void)unused;
    static buf m, in, v;
    const buf *b = valid_frame(valid_named("msg_call"), &v);
    const uint64_t bad[] = {
        TPI_PID_REMOTE | 1ull << 48 | 1ull << 24 | 1, /* a remote-form pid */
        TPI_PID_REMOTE | 1,                           /* bit 63 alone, too */
        1ull << 56 | 1,          /* a generation past 24 bits */
        (uint64_t)1 << 24,       /* an index past 24 bits */
        (uint64_t)TPI_PID_FIELD, /* the biggest index: still fine */
        0,                       /* TP_PID_NONE */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        in.n = 0;
        b_u64(&in, bad[i]);
        splice(&m, b, F_TO, in.p, in.n);
        if (bad[i] == TPI_PID_FIELD)
            accepted(&m, "to: the biggest index");
        else
            refused(&m, "to: forged or none");
    }
    /* As a negative int, a str or a pid extension: not a pid either. */
    splice(&m, b, F_TO, "\xff", 1);
    refused(&m, "to: -1");
    splice(&m, b, F_TO, "\xa1\x31", 2);
    refused(&m, "to: a str");
    in.n = 0;
    b_pid(&in, 1, "A", 1);
    splice(&m, b, F_TO, in.p, in.n);
    refused(&m, "to: a pid extension");
    /* The same pids in the from and reply_to extensions. */
    const uint64_t bad_ext[] = {TPI_PID_REMOTE | 1ull << 48 | 1, 1ull << 56 | 1,
                                1ull << 24, 0};
    for (size_t i = 0; i < sizeof bad_ext / sizeof *bad_ext; i++) {
        in.n = 0;
        b_pid(&in, bad_ext[i], "B", 1);
        splice(&m, b, F_FROM, in.p, in.n);
        refused(&m, "from: forged pid");
        splice(&m, b, F_REPLY, in.p, in.n);
        refused(&m, "reply_to: forged pid");
    }
}

static void test_bad_pid_ext(void **unused)
{
    (void)unused;
    static buf m, in, v;
    const buf *b = valid_frame(valid_named("msg_call"), &v);
    static const struct {
        const char *s;
        size_t n;
    } names[] = {
        {"", 0},
        {".", 1},
        {"a.b", 3},
        {"*", 1},
        {">", 1},
        {"a b", 3},
        {"a\0b", 3},
        {"\xc3\xa9t\xc3\xa9", 6},
        {"tp.t.n.A", 8},
        {NAME63 "x", 64},
        {NAME63 NAME63 NAME63, 189},
    };
    uint8_t body[8 + 256];
    tpi_wpid w;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        in.n = 0;
        b_pid(&in, 7ull << 32 | 1, names[i].s, names[i].n);
        splice(&m, b, F_FROM, in.p, in.n);
        refused(&m, "from: a bad node name");
        splice(&m, b, F_REPLY, in.p, in.n);
        refused(&m, "reply_to: a bad node name");
        memcpy(body, "\x00\x00\x00\x07\x00\x00\x00\x01", 8);
        memcpy(body + 8, names[i].s, names[i].n);
        assert_int_equal(tpi_wpid_body(body, 8 + names[i].n, &w), TP_EPROTO);
    }
    /* A good body, for the length games below. */
    memcpy(body,
           "\x00\x00\x00\x07\x00\x00\x00\x01"
           "Bee",
           11);
    assert_int_equal(tpi_wpid_body(body, 11, &w), 0);
    assert_int_equal(w.pid, 7ull << 32 | 1);
    assert_int_equal(w.node_len, 3);
    assert_ptr_equal(w.node, (const char *)body + 8);
    for (size_t n = 0; n < 9; n++)
        assert_int_equal(tpi_wpid_body(body, n, &w), TP_EPROTO);
    /* Lengths that lie: the ext8 length longer than what follows, shorter
     * (the rest of the name is left over), 8 (no name), and other heads
     * (fixext16, ext16, ext32, another type). */
    static const uint8_t longer[] = {0xc7, 0x0c, 0x70, 0, 0, 0,
                                     7,    0,    0,    0, 1, 'B'};
    static const uint8_t shorter[] = {0xc7, 0x09, 0x70, 0, 0,   0,  7,
                                      0,    0,    0,    1, 'B', 'e'};
    static const uint8_t eight[] = {0xc7, 0x08, 0x70, 0, 0, 0, 7, 0, 0, 0, 1};
    static const uint8_t seven[] = {0xc7, 0x07, 0x70, 0, 0, 0, 7, 0, 0, 0};
    static const uint8_t fix16[] = {0xd8, 0x70, 0,   0,   0,   7,
                                    0,    0,    0,   1,   'A', 'B',
                                    'C',  'D',  'E', 'F', 'G', 'H'};
    static const uint8_t e16[] = {0xc8, 0x00, 0x09, 0x70, 0, 0,  0,
                                  7,    0,    0,    0,    1, 'B'};
    static const uint8_t e32[] = {0xc9, 0, 0, 0, 9, 0x70, 0,  0,
                                  0,    7, 0, 0, 0, 1,    'B'};
    static const uint8_t other[] = {0xc7, 0x09, 0x71, 0, 0, 0,
                                    7,    0,    0,    0, 1, 'B'};
    static const uint8_t zero[] = {0xc7, 0x00, 0x70};
    static const struct {
        const uint8_t *p;
        size_t n;
        const char *what;
    } lies[] = {
        {longer, sizeof longer, "ext8 length past the frame's end"},
        {shorter, sizeof shorter, "ext8 length short of its name"},
        {eight, sizeof eight, "ext8 of 8 bytes: no name"},
        {seven, sizeof seven, "ext8 of 7 bytes"},
        {zero, sizeof zero, "ext8 of 0 bytes"},
        {fix16, sizeof fix16, "fixext16"},
        {e16, sizeof e16, "ext16"},
        {e32, sizeof e32, "ext32"},
        {other, sizeof other, "another ext type"},
    };
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        splice(&m, b, F_FROM, lies[i].p, lies[i].n);
        refused(&m, lies[i].what);
        splice(&m, b, F_REPLY, lies[i].p, lies[i].n);
        refused(&m, lies[i].what);
    }
    /* A pid given as an int or a bin instead of an extension. */
    splice(&m, b, F_FROM, "\x01", 1);
    refused(&m, "from: an int");
    splice(&m, b, F_FROM, "\xc4\x01\x00", 3);
    refused(&m, "from: a bin");
    /* Heartbeat names obey the same rule. */
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        tpi_nframe hb = {.kind = TPI_NF_HB,
                         .node = names[i].s,
                         .node_len = names[i].n};
        m.n = 0;
        b_frame(&m, &hb);
        refused(&m, "heartbeat: a bad node name");
    }
    /* A heartbeat name as a bin. */
    static const uint8_t hbbin[] = {0x94, 0x01, 0x03, 0xc4, 0x01, 'A', 0x00};
    in.n = 0;
    b_raw(&in, hbbin, sizeof hbbin);
    refused(&in, "heartbeat: name as a bin");
}

static void test_kinds_versions(void **unused)
{
    (void)unused;
    static buf m, in, v;
    const buf *b = valid_frame(valid_named("msg_call"), &v);
    static buf hb;
    valid_frame(valid_named("hb"), &hb);
    /* Kinds nobody knows (kinds are small positive ints; new ones are
     * added below 32). */
    const int64_t kinds[] = {0,   -1,  -128,  32,        99,
                             127, 255, 65536, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        in.n = 0;
        b_int(&in, kinds[i]);
        splice(&m, b, F_KIND, in.p, in.n);
        refused(&m, "unknown kind");
        splice(&m, &hb, F_KIND, in.p, in.n);
        refused(&m, "unknown kind (heartbeat shape)");
    }
    splice(&m, b, F_KIND, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    refused(&m, "kind 2^64-1");
    splice(&m, b, F_KIND, "\xc0", 1);
    refused(&m, "kind nil");
    /* A kind in the other shape: a heartbeat in 11 items, a message in
     * 4. */
    splice(&m, b, F_KIND, "\x03", 1);
    refused(&m, "heartbeat kind in a message frame");
    for (int k = TPI_NF_MSG; k <= TPI_NF_LEAVE; k++) {
        if (k == TPI_NF_HB)
            continue;
        in.n = 0;
        b_int(&in, k);
        splice(&m, &hb, F_KIND, in.p, in.n);
        refused(&m, "message kind in a heartbeat frame");
    }
    /* Versions: only 1, as a fixint. */
    const int64_t vers[] = {0, 2, 3, 127, -1, 256};
    for (size_t i = 0; i < sizeof vers / sizeof *vers; i++) {
        in.n = 0;
        b_int(&in, vers[i]);
        splice(&m, b, F_VER, in.p, in.n);
        refused(&m, "unknown version");
        splice(&m, &hb, F_VER, in.p, in.n);
        refused(&m, "unknown version (heartbeat)");
    }
    splice(&m, b, F_VER, "\xcc\x01", 2);
    refused(&m, "version 1 as uint8");
    splice(&m, b, F_VER, "\xc0", 1);
    refused(&m, "version nil");
    /* Other shapes: 10 and 12 items, array16 of 11, a map, a scalar. */
    m = *b;
    m.p[0] = 0x9a;
    splice(&in, &m, F_PAYLOAD, NULL, 0); /* now 10 items */
    refused(&in, "10 items");
    m = *b;
    m.p[0] = 0x9c;
    m.p[m.n++] = 0xc0;
    refused(&m, "12 items");
    in.n = 0;
    b_raw(&in, "\xdc\x00\x0b", 3);
    b_raw(&in, b->p + 1, b->n - 1);
    refused(&in, "array16 of 11 items");
    in.n = 0;
    b_raw(&in, "\x81\x01\x01", 3);
    refused(&in, "a map");
    in.n = 0;
    b_raw(&in, "\x01", 1);
    refused(&in, "a fixint");
    in.n = 0;
    b_raw(&in, "\x90", 1);
    refused(&in, "an empty array");
    in.n = 0;
    b_raw(&in, "\x91\x01", 2);
    refused(&in, "[1]");
}

static void test_fields(void **unused)
{
    (void)unused;
    static buf m, in, v;
    const buf *b = valid_frame(valid_named("msg_call"), &v);
    static const struct {
        int field;
        const char *bytes;
        size_t n;
        const char *what;
    } bad[] = {
        {F_SEQ, "\x00", 1, "seq 0"},
        {F_SEQ, "\xff", 1, "seq -1"},
        {F_SEQ, "\xc0", 1, "seq nil"},
        {F_FLAGS, "\x04", 1, "flags 4"},
        {F_FLAGS, "\xff", 1, "flags -1"},
        {F_STATUS, "\x01", 1, "status 1"},
        {F_STATUS, "\xd1\xfc\x17", 3, "status -1001"},
        {F_STATUS, "\xd3\x80\0\0\0\0\0\0\0", 9, "status INT64_MIN"},
        {F_TAG, "\xd0\x97", 2, "tag -105"},
        {F_TAG, "\xce\x80\x00\x00\x00", 5, "tag 2^31"},
        {F_TAG, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, "tag 2^64-1"},
        {F_TAG, "\xca\x00\x00\x00\x00", 5, "tag as a float"},
        {F_REF, "\xff", 1, "ref -1"},
        {F_REF, "\xc3", 1, "ref true"},
        {F_PAYLOAD, "\xc4\x00", 2, "payload: an empty bin"},
        {F_PAYLOAD, "\xa1\x01", 2, "payload: a str"},
        {F_PAYLOAD, "\x01", 1, "payload: an int"},
        {F_PAYLOAD, "\xc4\x02\x01\x01", 4, "payload: two objects"},
        {F_PAYLOAD, "\xc4\x01\xc1", 3, "payload: 0xc1"},
        {F_PAYLOAD, "\xc4\x02\x92\x01", 4, "payload: a cut array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        splice(&m, b, bad[i].field, bad[i].bytes, bad[i].n);
        refused(&m, bad[i].what);
    }
    /* The edges that are fine. */
    static const struct {
        int field;
        const char *bytes;
        size_t n;
    } good[] = {
        {F_FLAGS, "\x03", 1},   {F_STATUS, "\xd1\xfc\x18", 3},
        {F_TAG, "\xd0\x98", 2}, {F_TAG, "\xce\x7f\xff\xff\xff", 5},
        {F_PAYLOAD, "\xc0", 1}, {F_PAYLOAD, "\xc4\x01\xc0", 3},
        {F_REF, "\x00", 1},     {F_FROM, "\xc0", 1},
        {F_REPLY, "\xc0", 1},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        splice(&m, b, good[i].field, good[i].bytes, good[i].n);
        accepted(&m, "an edge value");
    }
    /* Heartbeat fields: creation negative or not an int. */
    static buf hb;
    valid_frame(valid_named("hb"), &hb);
    splice(&m, &hb, F_HB_CREATION, "\xff", 1);
    refused(&m, "heartbeat creation -1");
    splice(&m, &hb, F_HB_CREATION, "\xc0", 1);
    refused(&m, "heartbeat creation nil");
    splice(&m, &hb, F_HB_NODE, "\xc0", 1);
    refused(&m, "heartbeat without a name");
    in.n = 0;
    b_str(&in, NAME63 "x", 64);
    splice(&m, &hb, F_HB_NODE, in.p, in.n);
    refused(&m, "heartbeat name of 64 bytes");
}

static void test_trailing(void **unused)
{
    (void)unused;
    for (size_t i = 0; i < n_valid; i++) {
        static buf m, v;
        const buf *b = valid_frame(i, &v);
        const uint8_t tails[][2] = {{0x00}, {0xc0}, {0xc1}, {0x91, 0x01}};
        for (size_t t = 0; t < sizeof tails / sizeof *tails; t++) {
            m = *b;
            b_raw(&m, tails[t], tails[t][0] == 0x91 ? 2 : 1);
            refused(&m, "a frame with trailing bytes");
        }
        m = *b; /* two frames back to back */
        b_raw(&m, b->p, b->n);
        refused(&m, "two frames in one message");
    }
}

/* Frames to one node travel back to back in one NATS message: each is
 * read in turn, and a bad one ends the walk (the rest cannot be found). */
static void test_batch(void **unused)
{
    (void)unused;
    static buf m, one;
    m.n = 0;
    for (size_t i = 0; i < n_valid; i++) {
        valid_frame(i, &one);
        b_raw(&m, one.p, one.n);
    }
    size_t off = 0, used = 0, got = 0;
    tpi_nframe f;
    const char *why;
    while (off < m.n) {
        if (tpi_nframe_next(m.p + off, m.n - off, &used, &f, &why) != 0)
            fail_msg("frame %zu of the batch refused: %s", got, why);
        assert_true(used > 0 && used <= m.n - off);
        if (!nfuzz_same(&valid[got].f, &f))
            fail_msg("%s: fields changed in a batch", valid[got].name);
        off += used;
        got++;
    }
    assert_int_equal(got, n_valid);
    /* Garbage after the first two: they are read, the walk stops there. */
    static buf g;
    size_t good = 0;
    g.n = 0;
    for (size_t i = 0; i < 3; i++) {
        if (i == 2) { /* garbage between the second and the third */
            good = g.n;
            b_raw(&g, "\xc1\x9b\x01", 3);
        }
        valid_frame(i, &one);
        b_raw(&g, one.p, one.n);
    }
    off = got = 0;
    while (off < g.n &&
           tpi_nframe_next(g.p + off, g.n - off, &used, &f, &why) == 0) {
        off += used;
        got++;
    }
    assert_int_equal(got, 2);
    assert_int_equal(off, good);
    /* Spawn requests and answers have their own subject, never a batch. */
    const uint8_t spawn[] = {0x94, 0x01, TPI_NF_SPAWN, 0xa1, 'k', 0xc0};
    assert_int_equal(tpi_nframe_next(spawn, sizeof spawn, &used, &f, &why),
                     TP_EPROTO);
}

/* ------------------------------------------------- the fuzz corpus */

/* A regression (a crash once): it must not crash, that is all. */
static void check_unnamed(const char *name, const void *p, size_t n)
{
    (void)name;
    check_named("", p, n);
}

static void test_fuzz_replay(void **unused)
{
    (void)unused;
    int seeds_n = tpt_replay(__FILE__, "corpus", check_named);
    int crashes = tpt_replay(__FILE__, "regressions", check_unnamed);
    printf("replayed %d seeds, %d regressions\n", seeds_n,
           crashes < 0 ? 0 : crashes); /* -1: none kept yet */
    assert_true(seeds_n > 20);
}

/* --write-corpus DIR */
static const char *corpus_out;
static void write_seed(const char *name, const void *p, size_t n)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", corpus_out, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    tp_set_allocator(count_alloc, count_realloc, free);
    make_valid();
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) {
        corpus_out = argv[2];
        mkdir(corpus_out, 0755);
        seeds(write_seed);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_huge_bin),
        cmocka_unit_test(test_deep),
        cmocka_unit_test(test_forged_to),
        cmocka_unit_test(test_bad_pid_ext),
        cmocka_unit_test(test_kinds_versions),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_fuzz_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
