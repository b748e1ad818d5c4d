/*
 * Timers: send_after (Erlang erlang:send_after/3, cancellable with nothing
 * delivered after cancel returns), periodic ticks (Tokio interval), the
 * receive timeout (Erlang `receive ... after`), and timers that die with
 * their actor and so never keep tp_run alive. Tests wait on messages only;
 * elapsed times are measured with CLOCK_MONOTONIC.
 */
#include "tp_test.h"

#include <limits.h>

enum {
    TAG_A = 1,
    TAG_B,
    TAG_C,
    TAG_TICK,
    TAG_CANCEL,
    TAG_SENTINEL,
    TAG_PING,
    TAG_PONG,
    TAG_ID
};

static tp_timer after(tp_ctx *ctx, unsigned ms, int32_t tag)
{
    tp_timer id = 0;
    EXPECT_EQ(tp_send_after(ctx, ms, tag, NULL, 0, &id), 0);
    EXPECT(id != 0);
    return id;
}

/* ------------------------------------------------------------ send_after */

typedef struct delay {
    double t0, ta, tb;
    tp_timer ida, idb;
    tp_ref refa;
    int64_t va;
    int order; /* 1 if B (10 ms) came before A (30 ms) */
    uint64_t active_after_set;
} delay;

static int delay_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    delay *d = state;
    tp_stats st;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        d->t0 = tpt_now_ms();
        EXPECT_EQ(tp_send_after(ctx, 30, TAG_A, "\x05", 1, &d->ida), 0);
        d->idb = after(ctx, 10, TAG_B);
        EXPECT(d->ida != d->idb);
        tp_runtime_stats(tp_ctx_runtime(ctx), &st);
        d->active_after_set = st.timers_active;
        break;
    case TAG_B: d->tb = tpt_now_ms(); break;
    case TAG_A:
        d->ta = tpt_now_ms();
        d->order = d->tb > 0;
        d->refa = tp_msg_ref(msg);
        EXPECT_EQ(tp_msg_int(msg, &d->va), 0);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* send_after delivers its message (tag, copied payload, timer id as ref)
 * no earlier than asked; shorter timers fire first. */
static void test_send_after_delay(void **unused)
{
    static delay d;
    tpt_result r;
    memset(&d, 0, sizeof d);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, delay_root, &d, NULL, &r), 0);
    TPT_CHECK();
    assert_true(d.tb - d.t0 >= 10.0);
    assert_true(d.ta - d.t0 >= 30.0);
    assert_true(d.order);
    assert_true(d.refa == d.ida);
    assert_true(d.va == 5);
    assert_int_equal(d.active_after_set, 2);
    assert_int_equal(r.stats.timers_active, 0);
}

/* ---------------------------------------------------------------- cancel */

typedef struct cancel {
    tp_timer a, b, c;
    int got_a, got_b, got_c, cancel_b_rc, cancel_c_rc, again_rc, bad_rc;
} cancel;

static int cancel_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    cancel *c = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        c->a = after(ctx, 20, TAG_A);
        EXPECT_EQ(tp_timer_cancel(ctx, c->a), 0); /* in the same turn */
        c->again_rc = tp_timer_cancel(ctx, c->a);
        c->bad_rc = tp_timer_cancel(ctx, 0x7777777);
        c->b = after(ctx, 30, TAG_B);
        c->c = after(ctx, 10, TAG_C);
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_CANCEL, NULL, 0), 0);
        after(ctx, 80, TAG_SENTINEL);
        break;
    case TAG_CANCEL: /* a later turn, long before B is due */
        c->cancel_b_rc = tp_timer_cancel(ctx, c->b);
        break;
    case TAG_A: c->got_a++; break;
    case TAG_B: c->got_b++; break;
    case TAG_C: /* a fired one-shot timer is gone */
        c->got_c++;
        c->cancel_c_rc = tp_timer_cancel(ctx, c->c);
        break;
    case TAG_SENTINEL: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

/* erlang:cancel_timer: a cancelled timer delivers nothing; cancelling a
 * fired, cancelled or unknown timer is TP_ENOENT. */
static void test_cancel(void **unused)
{
    static cancel c;
    tpt_result r;
    memset(&c, 0, sizeof c);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, cancel_root, &c, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(c.got_a, 0);
    assert_int_equal(c.got_b, 0);
    assert_int_equal(c.got_c, 1);
    assert_int_equal(c.again_rc, TP_ENOENT);
    assert_int_equal(c.bad_rc, TP_ENOENT);
    assert_int_equal(c.cancel_b_rc, 0);
    assert_int_equal(c.cancel_c_rc, TP_ENOENT);
    assert_int_equal(r.stats.timers_active, 0);
}

/* ------------------------------------------------------- interval ticks */

typedef struct ticker {
    tp_timer id;
    tp_pid echo;
    double t0, t1, t3;
    int ticks, ticks_at_cancel, ticks_after_cancel, cancelled, cancel_rc;
} ticker;

static int echo(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_PING)
        tp_send(ctx, tp_msg_from(msg), TAG_PONG, NULL, 0);
    else if (tp_msg_tag(msg) == TAG_SENTINEL)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int ticker_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    ticker *t = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_spawn(ctx, echo, NULL, NULL, &t->echo), 0);
        t->t0 = tpt_now_ms();
        EXPECT_EQ(tp_send_interval(ctx, 5, TAG_TICK, NULL, 0, &t->id), 0);
        break;
    case TAG_TICK:
        if (t->cancelled) {
            t->ticks_after_cancel++;
            break;
        }
        if (++t->ticks == 1)
            t->t1 = tpt_now_ms();
        if (t->ticks == 3) {
            t->t3 = tpt_now_ms();
            /* Stay busy past the next deadlines, then cancel only after a
             * round trip through another actor: by then a tick is likely
             * queued in our mailbox, and it must not be delivered. */
            while (tpt_now_ms() - t->t3 < 15.0)
                ;
            EXPECT_EQ(tp_send(ctx, t->echo, TAG_PING, NULL, 0), 0);
        }
        break;
    case TAG_PONG:
        t->cancel_rc = tp_timer_cancel(ctx, t->id);
        t->cancelled = 1;
        t->ticks_at_cancel = t->ticks;
        after(ctx, 40, TAG_SENTINEL); /* 8 periods: no tick may come */
        break;
    case TAG_SENTINEL:
        tp_send(ctx, t->echo, TAG_SENTINEL, NULL, 0);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* An interval ticks every period until cancelled; once tp_timer_cancel
 * returns, no tick is delivered, even one already queued. */
static void test_interval_then_cancel(void **unused)
{
    static ticker t;
    tpt_result r;
    memset(&t, 0, sizeof t);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, ticker_root, &t, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(t.cancel_rc, 0);
    assert_true(t.ticks_at_cancel >= 3);
    assert_int_equal(t.ticks_after_cancel, 0);
    assert_int_equal(t.ticks, t.ticks_at_cancel);
    assert_true(t.t1 - t.t0 >= 5.0);
    assert_true(t.t3 - t.t0 >= 15.0); /* three periods */
    assert_int_equal(r.stats.timers_active, 0);
}

/* ------------------------------------------- deferred ticks, then cancel */

/* An actor busy with something else defers an interval's ticks, then
 * cancels the interval and changes behavior: the deferred ticks are not
 * offered again (nothing more after the cancel). Before, they came back
 * after tp_become. */
typedef struct deferrer {
    tp_timer tick;
    int deferred, ticks_after;
} deferrer;

static int deferrer_ready(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    deferrer *d = state;
    if (tp_msg_tag(msg) == TAG_TICK)
        d->ticks_after++;
    else if (tp_msg_tag(msg) == TAG_SENTINEL)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int deferrer_busy(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    deferrer *d = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_send_interval(ctx, 1, TAG_TICK, NULL, 0, &d->tick), 0);
        break;
    case TAG_TICK:
        if (++d->deferred < 3)
            return TP_DEFER;
        EXPECT_EQ(tp_timer_cancel(ctx, d->tick), 0);
        after(ctx, 20, TAG_SENTINEL);
        EXPECT_EQ(tp_become(ctx, deferrer_ready), 0);
        break;
    }
    return TP_HANDLED;
}

static void test_cancel_drops_deferred_ticks(void **unused)
{
    (void)unused;
    static deferrer d;
    tpt_result r;
    memset(&d, 0, sizeof d);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, deferrer_busy, &d, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(d.deferred, 3);
    assert_int_equal(d.ticks_after, 0);
}

/* -------------------------------------------------------- receive timeout */

typedef struct idler {
    int disable; /* set then disable the timeout */
    tp_timer tick;
    int ticks, timeouts, ticks_at_timeout;
    double t_last_tick, t_timeout;
} idler;

static int idler_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    idler *d = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        if (d->disable) {
            EXPECT_EQ(tp_receive_timeout(ctx, 20), 0);
            EXPECT_EQ(tp_receive_timeout(ctx, -1), 0);
            after(ctx, 60, TAG_SENTINEL);
            break;
        }
        EXPECT_EQ(tp_receive_timeout(ctx, 50), 0);
        EXPECT_EQ(tp_send_interval(ctx, 10, TAG_TICK, NULL, 0, &d->tick), 0);
        break;
    case TAG_TICK: /* each handled message re-arms the timeout */
        d->t_last_tick = tpt_now_ms();
        if (++d->ticks == 6)
            EXPECT_EQ(tp_timer_cancel(ctx, d->tick), 0);
        break;
    case TP_TAG_TIMEOUT:
        d->t_timeout = tpt_now_ms();
        d->ticks_at_timeout = d->ticks;
        if (++d->timeouts == 1) /* a second one would come within 150 ms */
            after(ctx, 150, TAG_SENTINEL);
        break;
    case TAG_SENTINEL: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

static int idlers_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    idler *d = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_spawn(ctx, idler_b, &d[0], NULL, NULL), 0);
        EXPECT_EQ(tp_spawn(ctx, idler_b, &d[1], NULL, NULL), 0);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* receive ... after 50: TP_TAG_TIMEOUT only after 50 ms without a handled
 * message (10 ms ticks keep it away), once; ms < 0 disables it. */
static void test_receive_timeout(void **unused)
{
    static idler d[2];
    memset(d, 0, sizeof d);
    d[1].disable = 1;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, idlers_root, d, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(d[0].ticks, 6);
    assert_int_equal(d[0].timeouts, 1);
    assert_int_equal(d[0].ticks_at_timeout, 6);
    assert_true(d[0].t_timeout - d[0].t_last_tick >= 50.0);
    assert_int_equal(d[1].timeouts, 0);
}

/* -------------------------------------------------- timers die with actors */

typedef struct mortal {
    uint64_t active_while_set;
    int foreign_cancel_rc, got_a;
    tp_timer a;
} mortal;

static int short_lived(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    mortal *m = state;
    tp_stats st;
    tp_timer id;
    EXPECT_EQ(tp_send_after(ctx, 60000, TAG_A, NULL, 0, &id), 0);
    EXPECT_EQ(tp_send_interval(ctx, 1000, TAG_TICK, NULL, 0, &id), 0);
    EXPECT_EQ(tp_receive_timeout(ctx, 60000), 0);
    tp_runtime_stats(tp_ctx_runtime(ctx), &st);
    m->active_while_set = st.timers_active;
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int mortal_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    EXPECT_EQ(tp_spawn(ctx, short_lived, state, NULL, NULL), 0);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* Timers belong to their actor and die with it: an actor that set a 60 s
 * timer, a 1 s interval and a 60 s receive timeout, then ended, does not
 * keep tp_run waiting, and no timer stays active. */
static void test_timers_of_dead_actor(void **unused)
{
    static mortal m;
    tpt_result r;
    memset(&m, 0, sizeof m);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, mortal_root, &m, NULL, &r), 0);
    TPT_CHECK();
    assert_true(m.active_while_set >= 2);
    assert_true(r.elapsed_ms < 900.0);
    assert_int_equal(r.stats.timers_active, 0);
}

static int thief(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    mortal *m = state;
    if (tp_msg_tag(msg) == TAG_ID) {
        int64_t id;
        EXPECT_EQ(tp_msg_int(msg, &id), 0);
        m->foreign_cancel_rc = tp_timer_cancel(ctx, (tp_timer)id);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int args_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    mortal *m = state;
    tp_timer id = 0;
    tp_pid p;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_send_interval(ctx, 0, TAG_TICK, NULL, 0, &id), TP_EINVAL);
        /* a negative delay converted to unsigned */
        EXPECT_EQ(tp_send_after(ctx, (unsigned)-5, TAG_A, NULL, 0, &id),
                  TP_EINVAL);
        EXPECT_EQ(tp_send_interval(ctx, (unsigned)INT_MAX + 1, TAG_TICK, NULL,
                                   0, &id),
                  TP_EINVAL);
        EXPECT_EQ(tp_send_after(ctx, 5, -3, NULL, 0, &id), TP_EINVAL);
        EXPECT_EQ(tp_send_after(ctx, 5, TAG_A, "\xc1", 1, &id), TP_EINVAL);
        EXPECT_EQ(tp_send_after(ctx, 5, TAG_A, NULL, 4, &id), TP_EINVAL);
        m->a = after(ctx, 20, TAG_A);
        EXPECT_EQ(tp_spawn(ctx, thief, m, NULL, &p), 0);
        EXPECT_EQ(tp_send_int(ctx, p, TAG_ID, (int64_t)m->a), 0);
    } else if (tp_msg_tag(msg) == TAG_A) {
        m->got_a++;
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* Bad timer arguments are refused; a timer belongs to the actor that set
 * it, so another actor cannot cancel it. */
static void test_timer_arguments_and_ownership(void **unused)
{
    static mortal m;
    tpt_result r;
    memset(&m, 0, sizeof m);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, args_root, &m, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(m.foreign_cancel_rc, TP_ENOENT);
    assert_int_equal(m.got_a, 1);
    assert_int_equal(r.stats.timers_active, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_after_delay),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_interval_then_cancel),
        cmocka_unit_test(test_cancel_drops_deferred_ticks),
        cmocka_unit_test(test_receive_timeout),
        cmocka_unit_test(test_timers_of_dead_actor),
        cmocka_unit_test(test_timer_arguments_and_ownership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
