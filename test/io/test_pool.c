/*
 * The blocking pool (Tokio's spawn_blocking, Erlang's dirty schedulers):
 * results come back as TP_TAG_REPLY messages matched by ref; the loop
 * keeps running while jobs block; jobs start in FIFO order (and with one
 * thread finish in it); job errors and timeouts arrive as statuses;
 * tp_runtime_free waits for jobs still running.
 */
#include "tp_test.h"
#include "troupe/pool.h"

#include <semaphore.h>
#include <stdatomic.h>

enum { TAG_TICK = 1 };

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---------------------------------------------------- results, liveness */

typedef struct sq_arg {
    int64_t x;
    int sleep_ms;
} sq_arg;

static int square(void *arg, void **out, size_t *len)
{
    sq_arg *a = arg;
    int64_t x = a->x;
    sleep_ms(a->sleep_ms);
    free(a);
    return tp_packf(out, len, "l", x * x);
}

#define NJOBS 8

typedef struct results {
    tp_ref refs[NJOBS];
    int64_t got[NJOBS];
    int replies, ticks, ticks_at_first_reply;
    tp_timer tick;
} results;

static int results_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    results *r = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        for (int i = 0; i < NJOBS; i++) {
            sq_arg *a = malloc(sizeof *a);
            a->x = i + 1;
            a->sleep_ms = 150;
            EXPECT_EQ(tp_spawn_blocking(ctx, square, a, 5000, &r->refs[i]), 0);
        }
        EXPECT_EQ(tp_send_interval(ctx, 5, TAG_TICK, NULL, 0, &r->tick), 0);
        break;
    case TAG_TICK: r->ticks++; break;
    case TP_TAG_REPLY: {
        EXPECT_EQ(tp_msg_status(msg), 0);
        if (r->replies++ == 0)
            r->ticks_at_first_reply = r->ticks;
        for (int i = 0; i < NJOBS; i++)
            if (tp_msg_ref(msg) == r->refs[i])
                EXPECT_EQ(tp_msg_int(msg, &r->got[i]), 0);
        if (r->replies == NJOBS)
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    }
    return TP_HANDLED;
}

/* Each result reaches the job's ref; while jobs sleep 150 ms on the pool,
 * the actor keeps getting its 5 ms ticks (the loop never blocks). */
static void test_results_and_liveness(void **unused)
{
    static results r;
    memset(&r, 0, sizeof r);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, results_root, &r, NULL, NULL), 0);
    TPT_CHECK();
    for (int i = 0; i < NJOBS; i++)
        assert_int_equal(r.got[i], (int64_t)(i + 1) * (i + 1));
    assert_true(r.ticks_at_first_reply >= 10);
}

/* ------------------------------------------------------------- ordering */

static int order_log[64];
static atomic_int order_n;

static int record(void *arg, void **out, size_t *len)
{
    int i = (int)(intptr_t)arg;
    sleep_ms(i % 3); /* vary the durations */
    order_log[atomic_fetch_add(&order_n, 1)] = i;
    return tp_packf(out, len, "i", i);
}

typedef struct order {
    int next, bad;
} order;

static int order_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    order *o = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        for (int i = 0; i < 40; i++)
            EXPECT_EQ(tp_spawn_blocking(ctx, record, (void *)(intptr_t)i, -1,
                                        NULL),
                      0);
    } else if (tp_msg_tag(msg) == TP_TAG_REPLY) {
        int64_t v = -1;
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        if (v != o->next)
            o->bad++;
        if (++o->next == 40)
            tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* With one pool thread, jobs run and their results arrive in submission
 * order. */
static void test_fifo_one_thread(void **unused)
{
    static order o;
    memset(&o, 0, sizeof o);
    atomic_store(&order_n, 0);
    tpt_reset();
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    assert_int_equal(tp_runtime_set_blocking_threads(rt, 0), TP_EINVAL);
    assert_int_equal(tp_runtime_set_blocking_threads(rt, 1), 0);
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, order_root, &o, NULL), 0);
    tpt_watchdog(0);
    assert_int_equal(tp_runtime_set_blocking_threads(rt, 2), TP_ESTATE);
    tp_runtime_free(rt);
    TPT_CHECK();
    assert_int_equal(o.bad, 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(order_log[i], i);
}

/* ------------------------------------------------- errors and timeouts */

static int fails(void *arg, void **out, size_t *len) { return TP_ENOENT; }

static atomic_int slow_done;
static int slow(void *arg, void **out, size_t *len)
{
    sleep_ms(150);
    atomic_store(&slow_done, 1);
    return tp_packf(out, len, "i", 7);
}

typedef struct errs {
    tp_ref fail_ref, slow_ref;
    int fail_status, slow_status, n, einval;
} errs;

static int errs_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    errs *e = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        e->einval = tp_spawn_blocking(ctx, NULL, NULL, -1, NULL);
        EXPECT_EQ(tp_spawn_blocking(ctx, fails, NULL, -1, &e->fail_ref), 0);
        EXPECT_EQ(tp_spawn_blocking(ctx, slow, NULL, 20, &e->slow_ref), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_REPLY) {
        if (tp_msg_ref(msg) == e->fail_ref)
            e->fail_status = tp_msg_status(msg);
        if (tp_msg_ref(msg) == e->slow_ref)
            e->slow_status = tp_msg_status(msg);
        if (++e->n == 2)
            tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* A job's error code is the reply's status; a job slower than the timeout
 * answers TP_ETIMEDOUT, its late result is dropped; tp_runtime_free waits
 * for the job still running; outside a behavior: TP_ESTATE. */
static void test_errors_timeout_and_join(void **unused)
{
    static errs e;
    memset(&e, 0, sizeof e);
    atomic_store(&slow_done, 0);
    tpt_reset();
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, errs_root, &e, NULL), 0);
    tpt_watchdog(0);
    assert_int_equal(atomic_load(&slow_done), 0); /* still sleeping */
    tp_runtime_free(rt);                          /* joins it */
    assert_int_equal(atomic_load(&slow_done), 1);
    TPT_CHECK();
    assert_int_equal(e.einval, TP_EINVAL);
    assert_int_equal(e.fail_status, TP_ENOENT);
    assert_int_equal(e.slow_status, TP_ETIMEDOUT);
    assert_int_equal(tp_spawn_blocking(NULL, fails, NULL, -1, NULL), TP_ESTATE);
}

/* ------------------------------------------- a burst after a quiet time */

/* One job ran, so one thread waits idle. Then A and B are submitted in
 * one turn: A waits (2 s at most) for what B does. A new thread must start
 * for B: the idle one is promised to A. Before, B saw that idle thread
 * still counted (it counts until it has the lock back) and started none:
 * B queued behind A, and A timed out. Also: a job that fails after
 * freeing what it put in *out is not freed again (ASan: a double free). */
static sem_t burst_sem;

static int burst_a(void *arg, void **out, size_t *len)
{
    (void)arg;
    (void)len;
    *out = tp_alloc(8); /* then freed by the job itself on its error */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2;
    int rc = sem_timedwait(&burst_sem, &ts) == 0 ? 0 : TP_ETIMEDOUT;
    tp_free(*out);
    if (rc)
        return rc;
    *out = NULL;
    return 0;
}

static int burst_b(void *arg, void **out, size_t *len)
{
    (void)arg;
    (void)out;
    (void)len;
    sem_post(&burst_sem);
    return 0;
}

static int freed_own(void *arg, void **out, size_t *len)
{
    (void)arg;
    *out = tp_alloc(8);
    *len = 1;
    tp_free(*out); /* the contract: on an error *out is ignored */
    return TP_ENOENT;
}

typedef struct burst {
    tp_ref warm, a, b, own;
    int a_status, own_status, n;
} burst;

static int burst_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    burst *b = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_spawn_blocking(ctx, burst_b, NULL, -1, &b->warm), 0);
        return TP_HANDLED;
    }
    if (tp_msg_tag(msg) != TP_TAG_REPLY)
        return TP_HANDLED;
    tp_ref ref = tp_msg_ref(msg);
    if (ref == b->warm) {
        sem_trywait(&burst_sem); /* the warm-up's post */
        EXPECT_EQ(tp_spawn_blocking(ctx, burst_a, NULL, -1, &b->a), 0);
        EXPECT_EQ(tp_spawn_blocking(ctx, burst_b, NULL, -1, &b->b), 0);
        EXPECT_EQ(tp_spawn_blocking(ctx, freed_own, NULL, -1, &b->own), 0);
        return TP_HANDLED;
    }
    if (ref == b->a)
        b->a_status = tp_msg_status(msg);
    if (ref == b->own)
        b->own_status = tp_msg_status(msg);
    if (++b->n == 3)
        return tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static void test_burst_after_idle(void **unused)
{
    (void)unused;
    static burst b;
    memset(&b, 0, sizeof b);
    sem_init(&burst_sem, 0, 0);
    tpt_reset();
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, burst_root, &b, NULL), 0);
    tpt_watchdog(0);
    tp_runtime_free(rt);
    sem_destroy(&burst_sem);
    TPT_CHECK();
    assert_int_equal(b.a_status, 0);
    assert_int_equal(b.own_status, TP_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_and_liveness),
        cmocka_unit_test(test_fifo_one_thread),
        cmocka_unit_test(test_errors_timeout_and_join),
        cmocka_unit_test(test_burst_after_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
