/*
 * Payload helpers over msgpack-c: tp_packf/tp_unpackf round trips for every
 * format character, the validator that guards every send (one well-formed
 * msgpack object, bounded depth, never reading past the buffer), and the
 * error strings.
 */
#include "tp_test.h"

static void expect_bytes(const void *got, size_t got_len, const char *want,
                         size_t want_len)
{
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
}

/* Every scalar format character packs to the canonical msgpack encoding. */
static void test_pack_scalars_bytes(void **unused)
{
    void *b;
    size_t n;
    assert_int_equal(tp_packf(&b, &n, "n"), 0);
    expect_bytes(b, n, "\xc0", 1), free(b);
    assert_int_equal(tp_packf(&b, &n, "b", 1), 0);
    expect_bytes(b, n, "\xc3", 1), free(b);
    assert_int_equal(tp_packf(&b, &n, "b", 0), 0);
    expect_bytes(b, n, "\xc2", 1), free(b);
    assert_int_equal(tp_packf(&b, &n, "i", 1), 0);
    expect_bytes(b, n, "\x01", 1), free(b);
    assert_int_equal(tp_packf(&b, &n, "i", -1), 0);
    expect_bytes(b, n, "\xff", 1), free(b);
    assert_int_equal(tp_packf(&b, &n, "l", (int64_t)INT64_MIN), 0);
    expect_bytes(b, n, "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9), free(b);
    assert_int_equal(tp_packf(&b, &n, "u", (uint64_t)UINT64_MAX), 0);
    expect_bytes(b, n, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9), free(b);
    assert_int_equal(tp_packf(&b, &n, "d", 1.5), 0);
    expect_bytes(b, n, "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", 9), free(b);
    assert_int_equal(tp_packf(&b, &n, "s", "hi"), 0);
    expect_bytes(b, n, "\xa2hi", 3), free(b);
    assert_int_equal(tp_packf(&b, &n, "S", "hello", (size_t)2), 0);
    expect_bytes(b, n, "\xa2he", 3), free(b);
    assert_int_equal(tp_packf(&b, &n, "y", "\x00\x01", (size_t)2), 0);
    expect_bytes(b, n, "\xc4\x02\x00\x01", 4), free(b);
    assert_int_equal(tp_packf(&b, &n, "[ii]", 1, 2), 0);
    expect_bytes(b, n, "\x92\x01\x02", 3), free(b);
    assert_int_equal(tp_packf(&b, &n, "{si}", "a", 1), 0);
    expect_bytes(b, n,
                 "\x81\xa1"
                 "a\x01",
                 4),
        free(b);
    assert_int_equal(tp_packf(&b, &n, "[]"), 0);
    expect_bytes(b, n, "\x90", 1), free(b);
}

/* Pack then unpack with the same format gives the same values back. */
static void test_round_trip_every_char(void **unused)
{
    void *b;
    size_t n;
    const char bin[5] = {0, 1, 2, 3, (char)0xff};
    tp_pid pid = ((tp_pid)7 << 32) | 42;
    assert_int_equal(tp_packf(&b, &n, "[nbilludsSyp]", 1, -123456,
                              (int64_t)-5000000000LL, (int64_t)INT64_MAX,
                              (uint64_t)UINT64_MAX, -2.25, "text", "with\0nul",
                              (size_t)8, bin, sizeof bin, pid),
                     0);
    assert_int_equal(tp_payload_check(b, n), 0);
    int bo, i;
    int64_t l1, l2;
    uint64_t u;
    double d;
    const char *s, *S;
    size_t Slen, ylen;
    const void *y;
    tp_pid p;
    assert_int_equal(tp_unpackf(b, n, "[nbilludsSyp]", &bo, &i, &l1, &l2, &u,
                                &d, &s, &S, &Slen, &y, &ylen, &p),
                     0);
    assert_true(bo);
    assert_int_equal(i, -123456);
    assert_true(l1 == -5000000000LL);
    assert_true(l2 == INT64_MAX);
    assert_true(u == UINT64_MAX);
    assert_true(d == -2.25);
    assert_memory_equal(s, "text", 4);
    assert_int_equal(Slen, 8);
    assert_memory_equal(S, "with\0nul", 8);
    assert_int_equal(ylen, sizeof bin);
    assert_memory_equal(y, bin, sizeof bin);
    assert_true(p == pid);
    free(b);
}

/* Nested arrays and maps, in both directions. */
static void test_round_trip_nested(void **unused)
{
    void *b;
    size_t n;
    assert_int_equal(tp_packf(&b, &n, "{s[i[ss]]s{sb}}", "list", 1, "a", "bc",
                              "inner", "ok", 1),
                     0);
    assert_int_equal(tp_payload_check(b, n), 0);
    const char *k1, *k2, *k3, *a, *bc;
    size_t k1n, k2n, k3n, an, bcn;
    int one, ok;
    assert_int_equal(tp_unpackf(b, n, "{S[i[SS]]S{Sb}}", &k1, &k1n, &one, &a,
                                &an, &bc, &bcn, &k2, &k2n, &k3, &k3n, &ok),
                     0);
    assert_int_equal(k1n, 4);
    assert_memory_equal(k1, "list", 4);
    assert_int_equal(one, 1);
    assert_int_equal(an, 1);
    assert_memory_equal(a, "a", 1);
    assert_int_equal(bcn, 2);
    assert_memory_equal(bc, "bc", 2);
    assert_int_equal(k2n, 5);
    assert_int_equal(k3n, 2);
    assert_true(ok);
    free(b);
}

static int vpack_wrap(void **out, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_vpackf(out, len, fmt, ap);
    va_end(ap);
    return rc;
}

static int vunpack_wrap(const void *d, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tp_vunpackf(d, len, fmt, ap);
    va_end(ap);
    return rc;
}

/* The va_list variants behave as the variadic ones. */
static void test_va_list_variants(void **unused)
{
    void *b;
    size_t n;
    int x, y;
    assert_int_equal(vpack_wrap(&b, &n, "[ii]", 3, 4), 0);
    assert_int_equal(vunpack_wrap(b, n, "[ii]", &x, &y), 0);
    assert_int_equal(x, 3);
    assert_int_equal(y, 4);
    free(b);
}

/* A payload that does not match the format is TP_EPROTO, not a misread. */
static void test_unpack_mismatch(void **unused)
{
    void *b;
    size_t n;
    int x, y;
    const char *s;
    size_t sl;
    assert_int_equal(tp_packf(&b, &n, "[iii]", 1, 2, 3), 0);
    assert_int_equal(tp_unpackf(b, n, "[ii]", &x, &y), TP_EPROTO);
    assert_int_equal(tp_unpackf(b, n, "i", &x), TP_EPROTO);
    free(b);
    assert_int_equal(tp_packf(&b, &n, "i", 5), 0);
    assert_int_equal(tp_unpackf(b, n, "S", &s, &sl), TP_EPROTO);
    assert_int_equal(tp_unpackf(b, n, "[i]", &x), TP_EPROTO);
    free(b);
    assert_int_equal(tp_packf(&b, &n, "s", "x"), 0);
    assert_int_equal(tp_unpackf(b, n, "i", &x), TP_EPROTO);
    free(b);
    /* malformed input is refused, not read past its end */
    assert_int_equal(tp_unpackf("\x92\x01", 2, "[ii]", &x, &y), TP_EPROTO);
    assert_int_equal(tp_unpackf("\xd9\x10"
                                "ab",
                                4, "S", &s, &sl),
                     TP_EPROTO);
}

/* Format errors are reported, not crashed on. */
static void test_bad_formats(void **unused)
{
    void *b = NULL;
    size_t n = 0;
    assert_true(tp_packf(&b, &n, "z", 1) < 0);
    assert_true(tp_packf(&b, &n, "[ii", 1, 2) < 0);
    assert_true(tp_packf(&b, &n, "ii]", 1, 2) < 0);
    assert_true(tp_packf(&b, &n, "{i}", 1) < 0); /* odd map */
    assert_true(tp_packf(NULL, &n, "i", 1) < 0);
    assert_true(tp_packf(&b, &n, NULL) < 0);
}

/* Byte strings that are not exactly one well-formed object. */
static const struct {
    const char *bytes;
    size_t len;
    const char *what;
} malformed[] = {
    {"\xc1", 1, "never-used type byte"},
    {"\x92\x01", 2, "array missing an element"},
    {"\x01\x02", 2, "two objects"},
    {"\xdd\xff\x00\x00\x00", 5, "array32 of 4G elements, truncated"},
    {"\xd9\x10"
     "ab",
     4, "str8 longer than the buffer"},
    {"\xc6\x00\x01\x00\x00"
     "x",
     6, "bin32 longer than the buffer"},
    {"\x81\x01", 2, "map with a key and no value"},
    {"\xcb\x3f\xf8", 3, "truncated float64"},
    {"\xcd\x01", 2, "truncated uint16"},
    {"", 0, "empty"},
};

/* The validator refuses malformed input, reading only within len. */
static void test_check_rejects_malformed(void **unused)
{
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        /* copy to an exact-size heap block so ASan sees any overread */
        size_t len = malformed[i].len;
        char *buf = malloc(len ? len : 1);
        memcpy(buf, malformed[i].bytes, len);
        if (tp_payload_check(buf, len) != TP_EPROTO)
            fail_msg("accepted: %s", malformed[i].what);
        free(buf);
    }
    assert_true(tp_payload_check(NULL, 5) != 0);
}

/* Depth bombs (10,000 nested one-element arrays; 5,000 nested maps
 * {1: {1: ...}}) are refused without recursing that deep. */
static void test_check_rejects_depth_bomb(void **unused)
{
    enum { DEPTH = 10000 };
    unsigned char *buf = malloc(DEPTH + 1);
    memset(buf, 0x91, DEPTH);
    buf[DEPTH] = 0x01;
    assert_int_equal(tp_payload_check(buf, DEPTH + 1), TP_EPROTO);
    for (int i = 0; i < DEPTH / 2; i++) {
        buf[2 * i] = 0x81;
        buf[2 * i + 1] = 0x01;
    }
    buf[DEPTH] = 0x01;
    assert_int_equal(tp_payload_check(buf, DEPTH + 1), TP_EPROTO);
    free(buf);
}

/* Well-formed objects of every kind are accepted. */
static void test_check_accepts_valid(void **unused)
{
    static const struct {
        const char *bytes;
        size_t len;
    } ok[] = {
        {"\xc0", 1},
        {"\x7f", 1},
        {"\xe0", 1},
        {"\xcf\x00\x00\x00\x00\x00\x00\x00\x01", 9},
        {"\xca\x3f\x80\x00\x00", 5},
        {"\xa0", 1},
        {"\xd9\x02"
         "ab",
         4},
        {"\xc4\x00", 2},
        {"\x90", 1},
        {"\x80", 1},
        {"\x92\x01\xa1x", 4},
        {"\x82\x01\x02\xa1k\x90", 6},
        {"\xd4\x01\x02", 3},
        {"\xc7\x02\x05"
         "ab",
         5},
        {"\xdc\x00\x02\xc2\xc3", 5},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (tp_payload_check(ok[i].bytes, ok[i].len) != 0)
            fail_msg("rejected valid payload #%zu", i);
    /* moderate nesting is fine */
    unsigned char deep[21];
    memset(deep, 0x91, 20);
    deep[20] = 0xc0;
    assert_int_equal(tp_payload_check(deep, sizeof deep), 0);
}

static int allocs;
static void *count_alloc(size_t n)
{
    allocs++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n)
{
    allocs++;
    return realloc(p, n);
}

/* "Never allocates": the runtime allocator sees no call during checks. */
static void test_check_does_not_allocate(void **unused)
{
    static const char big[] = "\x93\x01\xa3"
                              "abc\x81\xa1k\x92\xc0\xc3";
    tp_set_allocator(count_alloc, count_realloc, free);
    allocs = 0;
    assert_int_equal(tp_payload_check(big, sizeof big - 1), 0);
    assert_int_equal(tp_payload_check("\x92\x01", 2), TP_EPROTO);
    tp_set_allocator(NULL, NULL, NULL);
    assert_int_equal(allocs, 0);
}

/* One error space: every code has its own text; others are "unknown". */
static void test_strerror(void **unused)
{
    static const struct {
        int code;
        const char *text;
    } codes[] = {
#define X(name, value, text) {name, text},
        TP_ERRORS(X)
#undef X
    };
    size_t nc = sizeof codes / sizeof codes[0];
    assert_int_equal(nc, 13);
    for (size_t i = 0; i < nc; i++) {
        const char *s = tp_strerror(codes[i].code);
        assert_non_null(s);
        assert_string_equal(s, codes[i].text);
        assert_string_not_equal(s, "unknown error");
        assert_string_not_equal(s, "success");
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, tp_strerror(codes[j].code));
    }
    assert_string_equal(tp_strerror(0), "success");
    assert_string_equal(tp_strerror(-1000), "unknown error");
    assert_string_equal(tp_strerror(7), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_scalars_bytes),
        cmocka_unit_test(test_round_trip_every_char),
        cmocka_unit_test(test_round_trip_nested),
        cmocka_unit_test(test_va_list_variants),
        cmocka_unit_test(test_unpack_mismatch),
        cmocka_unit_test(test_bad_formats),
        cmocka_unit_test(test_check_rejects_malformed),
        cmocka_unit_test(test_check_rejects_depth_bomb),
        cmocka_unit_test(test_check_accepts_valid),
        cmocka_unit_test(test_check_does_not_allocate),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
