/*
 * Named tables (runtime/namereg.c), the registry under tp_isolate_register
 * and tp_node_register: a name is found only by its exact bytes, taken
 * once, and the table refuses entries past its size; adders on several
 * threads all land.
 */
#include "tp_test.h"

#include "runtime/service.h"

#include <pthread.h>

typedef struct entry {
    char name[8];
    int value;
} entry;

static entry ents[4];
static tpi_namereg reg = TPI_NAMEREG_INIT(ents);

static entry make(const char *name, int value)
{
    entry e = {.value = value};
    snprintf(e.name, sizeof e.name, "%s", name);
    return e;
}

static void test_add_find_full(void **unused)
{
    (void)unused;
    reg.n = 0;
    entry e = make("ab", 1), got = {0};
    assert_int_equal(tpi_namereg_add(&reg, &e), 0);
    e.value = 2;
    assert_int_equal(tpi_namereg_add(&reg, &e), TP_EEXIST);
    assert_int_equal(tpi_namereg_find(&reg, "ab", 2, &got), 0);
    assert_string_equal(got.name, "ab");
    assert_int_equal(got.value, 1); /* the first add stays */
    /* Exact bytes only: a prefix, a longer name, bytes past a NUL, and a
     * name not terminated (as from a frame) are told apart. */
    assert_int_equal(tpi_namereg_find(&reg, "a", 1, &got), TP_ENOENT);
    assert_int_equal(tpi_namereg_find(&reg, "abc", 3, &got), TP_ENOENT);
    assert_int_equal(tpi_namereg_find(&reg, "ab\0c", 4, &got), TP_ENOENT);
    assert_int_equal(tpi_namereg_find(&reg, "abXYZ", 2, &got), 0);
    const char *more[] = {"a", "abc", "b"};
    for (int i = 0; i < 3; i++) {
        e = make(more[i], 10 + i);
        assert_int_equal(tpi_namereg_add(&reg, &e), 0);
    }
    e = make("z", 9);
    assert_int_equal(tpi_namereg_add(&reg, &e), TP_ENOMEM); /* full */
    assert_int_equal(tpi_namereg_find(&reg, "z", 1, &got), TP_ENOENT);
    assert_int_equal(tpi_namereg_find(&reg, "abc", 3, &got), 0);
    assert_int_equal(got.value, 11);
}

/* Adders on four threads, each its own name: every one is found once. */
typedef struct adder {
    int k, rc;
} adder;

static void *add_one(void *arg)
{
    adder *a = arg;
    char name[8];
    snprintf(name, sizeof name, "t%d", a->k);
    entry e = make(name, a->k);
    a->rc = tpi_namereg_add(&reg, &e);
    return NULL;
}

static void test_threads(void **unused)
{
    (void)unused;
    reg.n = 0;
    pthread_t th[4];
    adder a[4];
    for (int k = 0; k < 4; k++) {
        a[k] = (adder){k, -1};
        assert_int_equal(pthread_create(&th[k], NULL, add_one, &a[k]), 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(a[k].rc, 0);
    }
    for (int k = 0; k < 4; k++) {
        char name[8];
        snprintf(name, sizeof name, "t%d", k);
        entry got = {0};
        assert_int_equal(tpi_namereg_find(&reg, name, strlen(name), &got), 0);
        assert_int_equal(got.value, k);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_full),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
