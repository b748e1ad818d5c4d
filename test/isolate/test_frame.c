/*
 * The frame codec of the isolated-worker channel (runtime/frame.c): round
 * trips, the length splitter, every hostile body of the acceptance list
 * (count bombs, 2^32-1 lengths, 10,000 nested headers, 0xc1, truncation,
 * garbage) refused without allocating, and the fuzz corpus and every
 * crash the fuzzer found replayed (test/isolate/fuzz/).
 */
#include <stdatomic.h>
#include <sys/stat.h>

#include "fuzz_replay.h"
#include "tp_test.h"
#include "runtime/isolate/frame.h"
#include "troupe/isolate.h"
#include "test/isolate/fuzz/frame_fuzz.h"

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

static size_t frame(uint8_t *out, int64_t kind, int64_t a, int64_t b, int64_t c,
                    int64_t d, const void *payload, size_t len)
{
    size_t n = tpi_frame_head(out, kind, a, b, c, d, len);
    if (len)
        memcpy(out + n, payload, len);
    return n + len;
}

static void test_round_trip(void **unused)
{
    (void)unused;
    uint8_t buf[256], payload[] = {0x92, 0x01, 0xa2, 'h', 'i'};
    const int64_t vals[][5] = {
        {TPI_FRAME_MSG, 0, 1, 1, 0},
        {TPI_FRAME_MSG, INT32_MAX, (int64_t)0xfffffffe00000001ull, -1, 1},
        {TPI_FRAME_REPLY, TP_ENOREPLY, 0, 123456789012345ll, 0},
        {TPI_FRAME_EXIT, TP_EXIT_ERROR, -128, 0, -32769},
        {TPI_FRAME_DONE, 64, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        for (int with = 0; with < 2; with++) {
            size_t n = frame(buf, vals[i][0], vals[i][1], vals[i][2],
                             vals[i][3], vals[i][4], payload,
                             with ? sizeof payload : 0);
            size_t blen;
            assert_int_equal(tpi_frame_next(buf, n, 1024, &blen), 0);
            assert_int_equal(blen, n - 4);
            tpi_frame f;
            const char *why = NULL;
            assert_int_equal(tpi_frame_decode(buf + 4, blen, &f, &why), 0);
            assert_true(f.kind == vals[i][0] && f.a == vals[i][1] &&
                        f.b == vals[i][2] && f.c == vals[i][3] &&
                        f.d == vals[i][4]);
            if (with) {
                assert_int_equal(f.len, sizeof payload);
                assert_memory_equal(f.payload, payload, sizeof payload);
            } else {
                assert_null(f.payload);
                assert_int_equal(f.len, 0);
            }
            /* Every proper prefix is "need more", never a frame. */
            for (size_t k = 0; k < n; k++)
                assert_int_equal(tpi_frame_next(buf, k, 1024, &blen), 1);
        }
    }
    /* A 70,000-byte payload takes a bin32 header. */
    size_t big = 70000;
    uint8_t *p = malloc(TPI_FRAME_HEAD_MAX + big + 8);
    assert_non_null(p);
    uint8_t *pl = malloc(big);
    pl[0] = 0xc6; /* bin32 of big - 5 bytes */
    uint32_t inner = (uint32_t)(big - 5);
    for (int i = 0; i < 4; i++)
        pl[1 + i] = (uint8_t)(inner >> (24 - 8 * i));
    memset(pl + 5, 'x', big - 5);
    size_t n = frame(p, TPI_FRAME_SEND, 7, 9, 0, 0, pl, big);
    size_t blen;
    tpi_frame f;
    assert_int_equal(tpi_frame_next(p, n, TP_ISOLATE_FRAME_DEFAULT, &blen), 0);
    assert_int_equal(tpi_frame_decode(p + 4, blen, &f, NULL), 0);
    assert_int_equal(f.len, big);
    free(pl);
    free(p);
}

static void test_lengths(void **unused)
{
    (void)unused;
    size_t blen = 99;
    const uint8_t zero[] = {0, 0, 0, 0}, huge[] = {0xff, 0xff, 0xff, 0xff},
                  ten[] = {0, 0, 0, 10, 1, 2};
    assert_int_equal(tpi_frame_next(zero, 3, 1024, &blen), 1);
    assert_int_equal(blen, 0);
    assert_int_equal(tpi_frame_next(zero, 4, 1024, &blen), TP_EPROTO);
    /* 2^32-1 is refused from its 4 bytes, before anything is allocated. */
    assert_int_equal(tpi_frame_next(huge, 4, TP_ISOLATE_FRAME_DEFAULT, &blen),
                     TP_E2BIG);
    assert_int_equal(tpi_frame_next(ten, sizeof ten, 9, &blen), TP_E2BIG);
    assert_int_equal(tpi_frame_next(ten, sizeof ten, 10, &blen), 1);
    assert_int_equal(blen, 10);
}

static void refuse(const uint8_t *body, size_t len, const char *label)
{
    tpi_frame f;
    const char *why = NULL;
    size_t before = n_allocs;
    int rc = tpi_frame_decode(body, len, &f, &why);
    if (rc != TP_EPROTO)
        fail_msg("%s: accepted (rc %d)", label, rc);
    assert_non_null(why);
    assert_int_equal(n_allocs, before); /* the decoder never allocates */
}

static void test_hostile_bodies(void **unused)
{
    (void)unused;
    static const struct {
        const char *label;
        uint8_t b[16];
        size_t n;
    } cases[] = {
        {"dd ff 00 00 00", {0xdd, 0xff, 0, 0, 0}, 5},
        {"dd ff ff ff ff", {0xdd, 0xff, 0xff, 0xff, 0xff}, 5},
        {"df ff ff ff ff", {0xdf, 0xff, 0xff, 0xff, 0xff}, 5},
        {"c6 ff ff ff ff", {0xc6, 0xff, 0xff, 0xff, 0xff}, 5},
        {"0xc1", {0xc1}, 1},
        {"0xc1 in a frame", {0x96, 0x02, 0xc1, 0, 0, 0, 0xc0}, 7},
        {"5 elements", {0x95, 0x02, 0, 0, 0, 0}, 6},
        {"7 elements", {0x97, 0x02, 0, 0, 0, 0, 0xc0, 0xc0}, 8},
        {"str field", {0x96, 0xa1, 'x', 0, 0, 0, 0, 0xc0}, 8},
        {"float field", {0x96, 0x02, 0xca, 0, 0, 0, 0, 0, 0, 0, 0xc0}, 11},
        {"str payload", {0x96, 0x02, 0, 0, 0, 0, 0xa1, 'x'}, 8},
        {"bin holding 0xc1", {0x96, 0x02, 0, 0, 0, 0, 0xc4, 1, 0xc1}, 9},
        {"bin holding a count bomb",
         {0x96, 0x02, 0, 0, 0, 0, 0xc4, 5, 0xdd, 0xff, 0xff, 0xff, 0xff},
         13},
        {"trailing byte", {0x96, 0x02, 0, 0, 0, 0, 0xc0, 0x00}, 8},
        {"truncated bin", {0x96, 0x02, 0, 0, 0, 0, 0xc4, 9, 1}, 9},
        {"map", {0x81, 0, 0}, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        refuse(cases[i].b, cases[i].n, cases[i].label);
    refuse(NULL, 0, "empty");

    /* 10,000 nested array headers. */
    uint8_t *deep = malloc(10001);
    assert_non_null(deep);
    memset(deep, 0x91, 10000);
    deep[10000] = 0xc0;
    refuse(deep, 10001, "10,000 nested arrays");
    deep[0] = 0x96; /* and as a frame's payload field */
    refuse(deep, 10001, "nested arrays in a frame");
    free(deep);

    /* Every truncation of a valid frame. */
    uint8_t buf[64], payload[] = {0x93, 1, 2, 3};
    size_t n = frame(buf, TPI_FRAME_SEND, 1, 2, 0, 0, payload, sizeof payload);
    for (size_t k = 0; k + 4 < n; k++)
        refuse(buf + 4, k, "truncated");

    /* Garbage, seeded. */
    unsigned seed = (unsigned)time(NULL);
    const char *env = getenv("TP_SEED");
    if (env)
        seed = (unsigned)strtoul(env, NULL, 10);
    printf("test_hostile_bodies: seed %u (TP_SEED to replay)\n", seed);
    srand(seed);
    uint8_t g[300];
    for (int i = 0; i < 20000; i++) {
        size_t len = 1 + (size_t)rand() % sizeof g;
        for (size_t k = 0; k < len; k++)
            g[k] = (uint8_t)rand();
        if (i % 3 == 0)
            g[0] = 0x96; /* get past the first check now and then */
        tpi_frame f;
        size_t before = n_allocs;
        if (tpi_frame_decode(g, len, &f, NULL) == 0) {
            /* Accepted: then it really is a six-element frame. */
            assert_true(f.payload == NULL ||
                        ((const uint8_t *)f.payload >= g &&
                         (const uint8_t *)f.payload + f.len <= g + len));
        }
        assert_int_equal(n_allocs, before);
        fuzz_frame_one(g, len);
    }
}

/* Replay every file of the seed corpus and of the crash regressions. */
static void replay_one(const char *name, const void *data, size_t len)
{
    (void)name;
    fuzz_frame_one(data, len);
}

static void test_fuzz_replay(void **unused)
{
    (void)unused;
    int seeds = tpt_replay(__FILE__, "corpus", replay_one);
    int crashes = tpt_replay(__FILE__, "regressions", replay_one);
    printf("replayed %d seeds, %d regressions\n", seeds, crashes);
    assert_true(seeds > 0);
    assert_true(crashes >= 0);
}

int main(void)
{
    tp_set_allocator(count_alloc, count_realloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_hostile_bodies),
        cmocka_unit_test(test_fuzz_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
