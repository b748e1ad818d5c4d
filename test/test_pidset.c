/*
 * Link sets (actors/pidset.c): random adds and removals against a plain
 * reference, through the sizes where the set switches from a scan to an
 * index and the index grows, including removals whose backward shift has
 * to move entries that probed past a hole.
 */
#include "tp_test.h"

#include "actors/actor.h"

#define UNIVERSE 6000 /* distinct pids drawn from */

static tp_pid pid_of(uint32_t k)
{
    /* Pids as the table makes them: odd generation, index + 1, and many
     * sharing low bits, so the index sees collisions. */
    return ((tp_pid)(2 * (k % 7) + 1) << 32) | (tp_pid)(k / 7 * 64 + 1);
}

static void check(const tpi_pidvec *pv, const bool *in, uint32_t count)
{
    assert_int_equal(pv->n, count);
    static bool seen[UNIVERSE];
    memset(seen, 0, sizeof seen);
    for (uint32_t i = 0; i < pv->n; i++) {
        bool found = false;
        for (uint32_t k = 0; k < UNIVERSE && !found; k++)
            if (pid_of(k) == pv->v[i]) {
                assert_true(in[k]);
                assert_false(seen[k]); /* no duplicates */
                seen[k] = found = true;
            }
        assert_true(found);
    }
}

static void test_random_against_reference(void **unused)
{
    (void)unused;
    tpi_pidvec pv = {0};
    static bool in[UNIVERSE];
    memset(in, 0, sizeof in);
    uint32_t count = 0, rng = 12345;
    for (int round = 0; round < 200000; round++) {
        rng = rng * 1103515245u + 12345u;
        /* Grow for the first half, then shrink: every size is crossed. */
        uint32_t k = (rng >> 8) % (round < 100000 ? UNIVERSE : UNIVERSE / 4);
        bool add = round < 100000 ? (rng >> 30) != 0 : (rng >> 30) == 0;
        if (add) {
            assert_int_equal(tpi_pidset_add(&pv, pid_of(k)), 0);
            count += !in[k];
            in[k] = true;
        } else {
            assert_int_equal(tpi_pidset_del(&pv, pid_of(k)), in[k]);
            count -= in[k];
            in[k] = false;
        }
        assert_int_equal(pv.n, count);
        if (round % 20000 == 0)
            check(&pv, in, count);
    }
    check(&pv, in, count);
    /* Membership of every pid, present or not, after all that. */
    for (uint32_t k = 0; k < UNIVERSE; k++) {
        bool had = in[k];
        assert_int_equal(tpi_pidset_del(&pv, pid_of(k)), had);
        if (had)
            assert_int_equal(tpi_pidset_add(&pv, pid_of(k)), 0);
    }
    check(&pv, in, count);
    tpi_pidset_free(&pv);
    assert_int_equal(pv.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
