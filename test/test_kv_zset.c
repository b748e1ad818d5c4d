/* troupe-kv's sorted set (examples/kv/zset.c, a B+tree with counts)
 * against a sorted array, through random adds, score changes and removals
 * that make its nodes split, borrow, merge and the tree grow and shrink:
 * order both ways, ranks, entries at ranks and score ranges must match
 * the array after every phase. No server, no runtime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "examples/kv/store.h"

#define MEMBERS 4000

typedef struct model {
    double score[MEMBERS];
    bool in[MEMBERS];
    size_t n;
} model;

static char *name_of(int i, char *buf)
{
    /* Names of different lengths and a shared prefix: ties on the score
     * are ordered by memcmp, then length. */
    snprintf(buf, 16, "m%d", i);
    return buf;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Model order: (score, name bytes, name length), of sort_model. */
static model *sort_model;
static int order(const void *a, const void *b)
{
    const model *mo = sort_model;
    int x = *(const int *)a, y = *(const int *)b;
    if (mo->score[x] != mo->score[y])
        return mo->score[x] < mo->score[y] ? -1 : 1;
    char bx[16], by[16];
    size_t nx = strlen(name_of(x, bx)), ny = strlen(name_of(y, by));
    int c = memcmp(bx, by, nx < ny ? nx : ny);
    return c ? c : (nx > ny) - (nx < ny);
}

static size_t sorted(model *mo, int *out)
{
    size_t n = 0;
    for (int i = 0; i < MEMBERS; i++)
        if (mo->in[i])
            out[n++] = i;
    sort_model = mo;
    qsort(out, n, sizeof out[0], order);
    return n;
}

static bool is(const kv_de *m, int i)
{
    char b[16];
    name_of(i, b);
    return m->klen == strlen(b) && memcmp(m->key, b, m->klen) == 0;
}

static int index_of(const kv_de *m)
{
    char b[16];
    memcpy(b, m->key, m->klen);
    b[m->klen] = 0;
    return atoi(b + 1);
}

/* Every reading of z against the model. */
static void check(kv_zset *z, model *mo)
{
    static int want[MEMBERS];
    size_t n = sorted(mo, want);
    assert_int_equal(kv_zset_len(z), n);
    size_t k = 0;
    for (kv_zit it = kv_zset_first(z); it.l; it = kv_zit_next(it), k++) {
        assert_true(k < n);
        assert_true(is(kv_zit_member(it), want[k]));
        assert_true(kv_zit_score(it) == mo->score[want[k]]);
    }
    assert_int_equal(k, n);
    for (kv_zit it = kv_zset_last(z); it.l; it = kv_zit_prev(it))
        assert_true(is(kv_zit_member(it), want[--k]));
    assert_int_equal(k, 0);
    for (k = 0; k < n; k++) {
        char b[16];
        name_of(want[k], b);
        kv_de *m = kv_dict_find(&z->d, b, strlen(b));
        assert_non_null(m);
        assert_int_equal(kv_zset_rank(z, m), k);
        assert_true(kv_zset_at(z, k).l);
        assert_ptr_equal(kv_zit_member(kv_zset_at(z, k)), m);
    }
    /* Score ranges, ends in and out of the set, inclusive or not; the
     * first two hold just the least and the greatest score. */
    for (int t = 0; t < 42; t++) {
        kv_zrange r = {0};
        r.min = (double)(next_rand() % 130) - 10;
        r.max = r.min + (double)(next_rand() % 40);
        r.minex = next_rand() & 1;
        r.maxex = next_rand() & 1;
        if (t < 2 && n) {
            r.min = r.max = mo->score[want[t ? n - 1 : 0]];
            r.minex = r.maxex = false;
        }
        size_t lo = 0, hi;
        while (lo < n && (r.minex ? mo->score[want[lo]] <= r.min
                                  : mo->score[want[lo]] < r.min))
            lo++;
        hi = lo;
        while (hi < n && (r.maxex ? mo->score[want[hi]] < r.max
                                  : mo->score[want[hi]] <= r.max))
            hi++;
        kv_zit first = kv_zset_first_in(z, &r), last = kv_zset_last_in(z, &r);
        if (lo == hi) {
            assert_null(first.l);
            assert_null(last.l);
            continue;
        }
        assert_true(first.l && last.l);
        assert_true(is(kv_zit_member(first), want[lo]));
        assert_true(is(kv_zit_member(last), want[hi - 1]));
    }
}

static void set(kv_zset *z, model *mo, int i, double score)
{
    char b[16];
    name_of(i, b);
    kv_zset_set(z, b, strlen(b), score);
    mo->n += !mo->in[i];
    mo->in[i] = true;
    mo->score[i] = score;
}

static void del(kv_zset *z, model *mo, int i)
{
    char b[16];
    name_of(i, b);
    kv_de **link = kv_dict_link(&z->d, b, strlen(b), kv_hash(b, strlen(b)));
    assert_true((*link != NULL) == mo->in[i]);
    if (!*link)
        return;
    assert_int_equal(index_of(*link), i);
    kv_zset_del(z, link);
    mo->in[i] = false;
    mo->n--;
}

/* Random adds and changes (scores 0..99: many ties), then removals down to
 * empty, twice: the tree grows several levels and shrinks back. */
static void test_random_ops(void **state)
{
    (void)state;
    kv_zset *z = kv_zset_new();
    static model mo;
    memset(&mo, 0, sizeof mo);
    for (int round = 0; round < 2; round++) {
        for (int op = 0; op < 12000; op++) {
            int i = (int)(next_rand() % MEMBERS);
            if (next_rand() % 8 == 0)
                del(z, &mo, i);
            else
                set(z, &mo, i, (double)(next_rand() % 100));
            if (op % 3000 == 2999)
                check(z, &mo);
        }
        for (int op = 0; mo.n; op++) {
            del(z, &mo, (int)(next_rand() % MEMBERS));
            if (op % 2000 == 0 || mo.n < 70)
                check(z, &mo);
        }
        check(z, &mo);
    }
    kv_zset_free(z);
}

/* Ascending and descending scores (every split at one end), then removals
 * from the front and the back (every merge at one end). */
static void test_ordered_ops(void **state)
{
    (void)state;
    kv_zset *z = kv_zset_new();
    static model mo;
    memset(&mo, 0, sizeof mo);
    for (int i = 0; i < MEMBERS / 2; i++)
        set(z, &mo, i, i);
    for (int i = MEMBERS - 1; i >= MEMBERS / 2; i--)
        set(z, &mo, i, -i);
    check(z, &mo);
    for (int i = 0; i < MEMBERS; i += 2) {
        /* Move each even member to the other end. */
        set(z, &mo, i, 1e6 - i);
    }
    check(z, &mo);
    while (mo.n) {
        kv_zit it = mo.n % 2 ? kv_zset_first(z) : kv_zset_last(z);
        del(z, &mo, index_of(kv_zit_member(it)));
        if (mo.n % 500 == 0 || mo.n < 70)
            check(z, &mo);
    }
    kv_zset_free(z);
}

/* Members with one score: the order is the members' own (lex ranges). */
static void test_lex_order(void **state)
{
    (void)state;
    kv_zset *z = kv_zset_new();
    static model mo;
    memset(&mo, 0, sizeof mo);
    for (int i = 0; i < 1000; i++)
        set(z, &mo, (int)(next_rand() % MEMBERS), 0);
    check(z, &mo);
    kv_zrange r = {.lex = true,
                   .lmin = "m2",
                   .lminn = 2,
                   .lmax = "m3",
                   .lmaxn = 2,
                   .maxex = true};
    kv_zit it = kv_zset_first_in(z, &r);
    size_t got = 0, want = 0;
    for (; it.l && kv_zrange_lte_max(kv_zit_score(it), kv_zit_member(it), &r);
         it = kv_zit_next(it)) {
        assert_int_equal(kv_zit_member(it)->key[1], '2');
        got++;
    }
    for (int i = 0; i < MEMBERS; i++) {
        char b[16];
        want += mo.in[i] && name_of(i, b)[1] == '2';
    }
    assert_int_equal(got, want);
    kv_zset_free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_ops),
        cmocka_unit_test(test_ordered_ops),
        cmocka_unit_test(test_lex_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
