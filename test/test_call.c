/*
 * Request/reply over oneshot channels: gen_server:call semantics (a reply,
 * or a timeout; a late reply dropped and counted, never delivered to a
 * later request; an error reply, not a hang, when the callee dies or drops
 * the request) and Tokio's standalone oneshot channel.
 */
#include <pthread.h>

#include "tp_test.h"

enum { TAG_REQ = 1, TAG_NOW, TAG_TAKEN, TAG_DONE, TAG_STOP };

static void free_state(void *s) { free(s); }

/* ------------------------------------------------------------ servers */

typedef struct server {
    int mode;              /* what to do with a request: S_* */
    tp_reply_handle *held; /* a taken reply obligation */
    int requests, reply_send_rc, second_reply_rc;
    tp_pid client;
} server;

enum {
    S_DOUBLE,
    S_HOLD_FIRST,
    S_TAKE_AND_DIE,
    S_TAKE_AND_WAIT,
    S_IGNORE,
    S_DEFER_FIRST,
    S_EXIT_AT_START
};

static int server_active(tp_ctx *ctx, void *state, const tp_msg *msg);

static int server_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    server *s = state;
    int64_t v = 0;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        if (s->mode == S_EXIT_AT_START) /* with the request still queued */
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    case TAG_REQ:
        s->requests++;
        EXPECT(tp_msg_wants_reply(msg));
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        if (s->mode == S_DOUBLE ||
            (s->mode == S_HOLD_FIRST && s->requests > 1)) {
            EXPECT_EQ(tp_reply_int(ctx, msg, v * 2), 0);
            s->second_reply_rc = tp_reply_int(ctx, msg, 0); /* only once */
        } else if (s->mode == S_HOLD_FIRST || s->mode == S_TAKE_AND_WAIT) {
            s->held = tp_reply_take(ctx, msg);
            EXPECT(s->held != NULL);
            EXPECT(tp_reply_take(ctx, msg) == NULL); /* taken already */
            s->client = tp_msg_from(msg);
            if (s->mode == S_TAKE_AND_WAIT)
                tp_send(ctx, s->client, TAG_TAKEN, NULL, 0);
        } else if (s->mode == S_TAKE_AND_DIE) {
            EXPECT(tp_reply_take(ctx, msg) != NULL);
            tp_exit(ctx, TP_REASON_ERROR(1, "dies holding a reply"));
        } else if (s->mode == S_DEFER_FIRST) {
            tp_send(ctx, tp_self(ctx), TAG_NOW, NULL, 0); /* become then */
            return TP_DEFER; /* the obligation stays with the message */
        }
        break;    /* S_IGNORE: handled without a reply */
    case TAG_NOW: /* answer the held request, possibly too late */
        if (s->mode == S_DEFER_FIRST)
            EXPECT_EQ(tp_become(ctx, server_active), 0);
        if (s->held) {
            int64_t late = 99;
            void *b;
            size_t n;
            EXPECT_EQ(tp_packf(&b, &n, "l", late), 0);
            s->reply_send_rc = tp_reply_send(ctx, s->held, b, n);
            s->held = NULL;
            free(b);
        }
        break;
    case TAG_STOP: tp_exit(ctx, TP_REASON_NORMAL); break;
    default:
        if (tp_msg_tag(msg) >= 0) { /* not a request: nothing to reply to */
            EXPECT(!tp_msg_wants_reply(msg));
            EXPECT_EQ(tp_reply_int(ctx, msg, 0), TP_ENOENT);
            EXPECT(tp_reply_take(ctx, msg) == NULL);
        }
    }
    return TP_HANDLED;
}

static int server_active(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    server *s = state;
    s->mode = S_DOUBLE;
    return server_b(ctx, state, msg);
}

/* ------------------------------------------------------------- client */

typedef struct client {
    int mode, timeout_ms;
    server *srv;
    tp_pid server;
    tp_ref ref1, ref2;
    int replies, unexpected, status1, status2;
    int64_t value1, value2;
    double t_call, t_reply;
    int kill_now; /* kill the server right after the call */
} client;

static int client_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    client *c = state;
    int64_t v = 0;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        server *s = calloc(1, sizeof *s);
        s->mode = c->mode;
        c->srv = s;
        tp_spawn_opts o = {.state_free = free_state};
        EXPECT_EQ(tp_spawn(ctx, server_b, s, &o, &c->server), 0);
        EXPECT_EQ(tp_send(ctx, c->server, TAG_DONE, NULL, 0), 0); /* no req */
        c->t_call = tpt_now_ms();
        EXPECT_EQ(tp_call_int(ctx, c->server, TAG_REQ, 21, c->timeout_ms,
                              &c->ref1),
                  0);
        EXPECT(c->ref1 != 0);
        if (c->kill_now)
            EXPECT_EQ(tp_kill(ctx, c->server), 0);
        break;
    }
    case TAG_TAKEN: /* the server holds our reply: now it dies */
        EXPECT_EQ(tp_kill(ctx, c->server), 0);
        break;
    case TP_TAG_REPLY:
        c->replies++;
        if (tp_msg_ref(msg) == c->ref1 && c->replies == 1) {
            c->t_reply = tpt_now_ms();
            c->status1 = tp_msg_status(msg);
            if (c->status1 == 0) {
                EXPECT_EQ(tp_msg_from(msg), c->server);
                EXPECT_EQ(tp_msg_int(msg, &c->value1), 0);
            }
            if (c->mode == S_HOLD_FIRST) {
                /* the held reply is sent now, after our timeout; then a
                 * second call must get its own reply, not the late one */
                EXPECT_EQ(tp_send(ctx, c->server, TAG_NOW, NULL, 0), 0);
                EXPECT_EQ(tp_call_int(ctx, c->server, TAG_REQ, 3, 5000,
                                      &c->ref2),
                          0);
                break;
            }
        } else if (tp_msg_ref(msg) == c->ref2 && c->ref2) {
            c->status2 = tp_msg_status(msg);
            EXPECT_EQ(tp_msg_int(msg, &c->value2), 0);
        } else {
            c->unexpected++;
        }
        if (c->mode != S_HOLD_FIRST || c->ref2) {
            tp_send(ctx, c->server, TAG_STOP, NULL, 0);
            tp_exit(ctx, TP_REASON_NORMAL);
        }
        break;
    }
    (void)v;
    return TP_HANDLED;
}

static void run_client(client *c, tpt_result *r)
{
    tpt_reset();
    assert_int_equal(tpt_run(NULL, client_b, c, NULL, r), 0);
    TPT_CHECK();
    assert_int_equal(r->stats.actors_alive, 0);
}

/* gen_server:call: the reply comes back with its ref, once. */
static void test_call_reply(void **unused)
{
    static client c;
    tpt_result r;
    memset(&c, 0, sizeof c);
    c.mode = S_DOUBLE, c.timeout_ms = 5000;
    run_client(&c, &r);
    assert_int_equal(c.replies, 1);
    assert_int_equal(c.status1, 0);
    assert_true(c.value1 == 42);
    assert_int_equal(r.stats.late_replies, 0);
}

/* call timeout: TP_ETIMEDOUT after at least the timeout; the reply sent
 * later is dropped and counted as late, and the next call gets only its
 * own reply (the late one would have arrived first: per-sender FIFO). */
static void test_call_timeout_then_late_reply(void **unused)
{
    static client c;
    tpt_result r;
    memset(&c, 0, sizeof c);
    c.mode = S_HOLD_FIRST, c.timeout_ms = 20;
    run_client(&c, &r);
    assert_int_equal(c.status1, TP_ETIMEDOUT);
    assert_true(c.t_reply - c.t_call >= 20.0);
    assert_int_equal(c.status2, 0);
    assert_true(c.value2 == 6);
    assert_int_equal(c.replies, 2);
    assert_int_equal(c.unexpected, 0);
    assert_int_equal(r.stats.late_replies, 1);
}

/* The callee dies while holding the reply: an error reply, not a hang. */
static void test_call_callee_dies(void **unused)
{
    static client c;
    static const struct {
        int mode, kill_now;
    } ways[] = {{S_TAKE_AND_DIE, 0},   /* takes it, then exits with an error */
                {S_TAKE_AND_WAIT, 0},  /* takes it, then is killed */
                {S_TAKE_AND_WAIT, 1},  /* killed just after the call */
                {S_EXIT_AT_START, 0}}; /* ends with the request queued */
    for (int i = 0; i < 4; i++) {
        tpt_result r;
        memset(&c, 0, sizeof c);
        c.mode = ways[i].mode, c.kill_now = ways[i].kill_now;
        c.timeout_ms = 5000;
        run_client(&c, &r);
        assert_int_equal(c.replies, 1);
        if (c.status1 != TP_ENOPROC)
            fail_msg("way %d: status %d, want TP_ENOPROC", i, c.status1);
    }
}

/* A request handled without a reply (and not taken) answers TP_ENOREPLY;
 * a deferred request keeps its obligation until it is handled. */
static void test_call_no_reply_and_deferred(void **unused)
{
    static client c;
    tpt_result r;
    memset(&c, 0, sizeof c);
    c.mode = S_IGNORE, c.timeout_ms = -1;
    run_client(&c, &r);
    assert_int_equal(c.replies, 1);
    assert_int_equal(c.status1, TP_ENOREPLY);

    memset(&c, 0, sizeof c);
    c.mode = S_DEFER_FIRST, c.timeout_ms = 5000;
    run_client(&c, &r);
    assert_int_equal(c.replies, 1);
    assert_int_equal(c.status1, 0);
    assert_true(c.value1 == 42);
}

typedef struct deadcall {
    tp_pid dead;
    tp_ref ref;
    int call_rc, status, replies;
} deadcall;

static int idle(tp_ctx *ctx, void *state, const tp_msg *msg) { return 0; }

static int deadcall_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    deadcall *d = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, NULL, &d->dead), 0);
        EXPECT_EQ(tp_monitor(ctx, d->dead, &(tp_ref){0}), 0);
        EXPECT_EQ(tp_kill(ctx, d->dead), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_DOWN) {
        d->call_rc = tp_call_int(ctx, d->dead, TAG_REQ, 1, -1, &d->ref);
    } else if (tp_msg_tag(msg) == TP_TAG_REPLY) {
        d->replies++;
        EXPECT_EQ(tp_msg_ref(msg), d->ref);
        d->status = tp_msg_status(msg);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* A call to a dead pid answers TP_ENOPROC (no timeout needed). */
static void test_call_dead_pid(void **unused)
{
    static deadcall d;
    memset(&d, 0, sizeof d);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, deadcall_root, &d, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(d.call_rc, 0);
    assert_int_equal(d.replies, 1);
    assert_int_equal(d.status, TP_ENOPROC);
}

/* ------------------------------------------------------------ oneshot */

typedef struct oneshot_case {
    tp_oneshot tx;
    int timeout_ms, replies, status, late_self, second_rc, unexpected;
    int64_t value;
    double t0, t_reply;
    pthread_t th;
    int from_thread, thread_rc;
    tp_runtime *rt;
} oneshot_case;

static int oneshot_sender(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    oneshot_case *o = state;
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_runtime *rt = tp_ctx_runtime(ctx);
    EXPECT_EQ(tp_oneshot_send(ctx, rt, o->tx, "\x7b", 1), 0); /* 123 */
    o->second_rc = tp_oneshot_send(ctx, rt, o->tx, "\xcd\x01\xc8", 3);
    EXPECT_EQ(tp_send(ctx, o->tx.pid, TAG_DONE, NULL, 0), 0);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static void *oneshot_thread(void *arg)
{
    oneshot_case *o = arg;
    o->thread_rc = tp_oneshot_send(NULL, o->rt, o->tx, "\x7b", 1);
    return NULL;
}

static int oneshot_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    oneshot_case *o = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        o->t0 = tpt_now_ms();
        EXPECT_EQ(tp_oneshot_new(ctx, o->timeout_ms, &o->tx), 0);
        EXPECT_EQ(o->tx.pid, tp_self(ctx));
        if (o->from_thread) {
            o->rt = tp_ctx_runtime(ctx);
            EXPECT_EQ(pthread_create(&o->th, NULL, oneshot_thread, o), 0);
        } else if (o->timeout_ms < 0) {
            EXPECT_EQ(tp_spawn(ctx, oneshot_sender, o, NULL, NULL), 0);
        }
        break;
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) != o->tx.ref) {
            o->unexpected++;
            break;
        }
        o->t_reply = tpt_now_ms();
        o->status = tp_msg_status(msg);
        if (++o->replies > 1)
            break;
        if (o->status == 0)
            EXPECT_EQ(tp_msg_int(msg, &o->value), 0);
        if (o->from_thread) {
            /* The thread may still be returning from tp_oneshot_send: the
             * runtime must outlive every call into it, so join first. */
            EXPECT_EQ(pthread_join(o->th, NULL), 0);
            tp_exit(ctx, TP_REASON_NORMAL);
        } else if (o->timeout_ms >= 0) {
            /* too late now: dropped and counted; FIN (sent after it by the
             * same sender) proves it was not delivered */
            EXPECT_EQ(tp_oneshot_send(ctx, tp_ctx_runtime(ctx), o->tx, "\x01",
                                      1),
                      0);
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_DONE, NULL, 0), 0);
        }
        break;
    case TAG_DONE: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

/* Tokio oneshot: the sending end handed to another task delivers exactly
 * one value; a second send is dropped and counted as late. */
static void test_oneshot_value_once(void **unused)
{
    static oneshot_case o;
    tpt_result r;
    memset(&o, 0, sizeof o);
    o.timeout_ms = -1;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, oneshot_root, &o, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(o.replies, 1);
    assert_int_equal(o.status, 0);
    assert_true(o.value == 123);
    assert_int_equal(o.unexpected, 0);
    assert_int_equal(r.stats.late_replies, 1);
}

/* A oneshot with a timeout yields TP_ETIMEDOUT; a value after that is
 * dropped and counted, never delivered. */
static void test_oneshot_timeout(void **unused)
{
    static oneshot_case o;
    tpt_result r;
    memset(&o, 0, sizeof o);
    o.timeout_ms = 20;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, oneshot_root, &o, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(o.replies, 1);
    assert_int_equal(o.status, TP_ETIMEDOUT);
    assert_true(o.t_reply - o.t0 >= 20.0);
    assert_int_equal(r.stats.late_replies, 1);
}

/* The sending end is a value usable from any thread (ctx NULL). */
static void test_oneshot_from_thread(void **unused)
{
    static oneshot_case o;
    tpt_result r;
    memset(&o, 0, sizeof o);
    o.timeout_ms = -1, o.from_thread = 1;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, oneshot_root, &o, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(o.thread_rc, 0);
    assert_int_equal(o.replies, 1);
    assert_true(o.value == 123);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_reply),
        cmocka_unit_test(test_call_timeout_then_late_reply),
        cmocka_unit_test(test_call_callee_dies),
        cmocka_unit_test(test_call_no_reply_and_deferred),
        cmocka_unit_test(test_call_dead_pid),
        cmocka_unit_test(test_oneshot_value_once),
        cmocka_unit_test(test_oneshot_timeout),
        cmocka_unit_test(test_oneshot_from_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
