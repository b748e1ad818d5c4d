/*
 * Request/reply over oneshot channels: gen_server:call semantics (a reply,
 * or a timeout; a late reply dropped and counted, never delivered to a
 * later request; an error reply, not a hang, when the callee dies or drops
 * the request) and Tokio's standalone oneshot channel.
 */
#include <pthread.h>

#include "tp_test.h"
#include "troupe/observe.h"

enum { TAG_REQ = 1, TAG_NOW, TAG_TAKEN, TAG_DONE, TAG_STOP };

#define ODD_PID ((tp_pid)1 << 32) /* index 0: no actor's, malformed */

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
    S_EXIT_AT_START,
    S_KILL_CALLER /* kills the request's sender (a foreign call's proxy) */
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
        } else if (s->mode == S_KILL_CALLER) {
            EXPECT_EQ(tp_kill(ctx, tp_msg_from(msg)), 0);
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

/* A call refused at once (a malformed pid) returns its error, leaves
 * *ref_out alone, and no reply ever comes; before, its pending entry
 * stayed and its timeout answered TP_ETIMEDOUT. */
typedef struct refused {
    int rc, replies;
    tp_ref ref;
} refused;

static int refused_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    refused *r = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        r->ref = 12345;
        r->rc = tp_call(ctx, ODD_PID, TAG_REQ, NULL, 0, 10, &r->ref);
        /* well past the refused call's timeout */
        return tp_send_after(ctx, 100, TAG_DONE, NULL, 0, NULL);
    case TP_TAG_REPLY: r->replies++; break;
    case TAG_DONE: return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_call_refused_leaves_nothing(void **unused)
{
    (void)unused;
    static refused r;
    memset(&r, 0, sizeof r);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, refused_root, &r, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(r.rc, TP_EINVAL);
    assert_int_equal(r.ref, 12345);
    assert_int_equal(r.replies, 0);
}

/* A local callee that ends with reason noconnection (a link to an actor
 * of a node that went down) with a request still queued: the request is
 * answered TP_ENOPROC, the callee's end, not TP_ENOCONN, which says its
 * node is unreachable (before, it was TP_ENOCONN). */
static int ends_noconnection(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    (void)msg;
    return tp_exit(ctx, (tp_reason){TP_EXIT_NOCONNECTION, 0, NULL});
}

static int noconn_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int *status = state;
    tp_pid p;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: /* the request is queued behind its start */
        EXPECT_EQ(tp_spawn(ctx, ends_noconnection, NULL, NULL, &p), 0);
        EXPECT_EQ(tp_call(ctx, p, TAG_REQ, NULL, 0, 5000, NULL), 0);
        break;
    case TP_TAG_REPLY:
        *status = tp_msg_status(msg);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_call_local_callee_noconnection(void **unused)
{
    (void)unused;
    static int status;
    status = 1;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, noconn_root, &status, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(status, TP_ENOPROC);
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

/* ------------------------------------------ the reason a callee died */

enum { TAG_FAIL_NOW = 40 };

/* Fails with error 77: in the turn that handles the request, or at start
 * with the request still queued (at_start 1); or crashes (its behavior
 * returns TP_EINVAL) in the request's turn (at_start 2). */
static int failing_callee(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int *at_start = state;
    if (tp_msg_tag(msg) == TAG_FAIL_NOW && *at_start == 2)
        return TP_EINVAL;
    if ((tp_msg_tag(msg) == TP_TAG_START && *at_start == 1) ||
        tp_msg_tag(msg) == TAG_FAIL_NOW)
        tp_exit(ctx, TP_REASON_ERROR(77, "callee failed"));
    return TP_HANDLED;
}

typedef struct why_call {
    int at_start;
    tp_ref mon, call;
    int status, replies, downs;
    size_t reply_len;
    tp_reason down;
} why_call;

static int why_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    why_call *w = state;
    tp_pid callee;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_spawn(ctx, failing_callee, &w->at_start, NULL, &callee),
                  0);
        /* what gen_server:call does inside: monitor, then call */
        EXPECT_EQ(tp_monitor(ctx, callee, &w->mon), 0);
        EXPECT_EQ(tp_call(ctx, callee, TAG_FAIL_NOW, NULL, 0, 5000, &w->call),
                  0);
        break;
    case TP_TAG_REPLY:
        EXPECT(tp_msg_ref(msg) == w->call);
        w->replies++;
        w->status = tp_msg_status(msg);
        tp_msg_data(msg, &w->reply_len);
        break;
    case TP_TAG_DOWN:
        EXPECT(tp_msg_ref(msg) == w->mon);
        w->downs++;
        EXPECT_EQ(tp_msg_reason(msg, &w->down), 0);
        w->down.text = NULL;
        break;
    }
    if (w->replies && w->downs) /* in either order: two senders */
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* gen_server:call exits the caller with the callee's reason; tp_call
 * answers TP_ENOPROC (no payload) and the reason comes with the DOWN of a
 * monitor set before the call, whether the callee died handling the
 * request (by tp_exit, or by returning an error: before, that answered
 * TP_ENOREPLY) or with it still queued. */
static void test_call_callee_reason_via_monitor(void **unused)
{
    for (int at_start = 0; at_start < 3; at_start++) {
        static why_call w;
        memset(&w, 0, sizeof w);
        w.at_start = at_start;
        tpt_reset();
        assert_int_equal(tpt_run(NULL, why_root, &w, NULL, NULL), 0);
        TPT_CHECK();
        assert_int_equal(w.replies, 1);
        assert_int_equal(w.status, TP_ENOPROC);
        assert_int_equal(w.reply_len, 0);
        assert_int_equal(w.downs, 1);
        assert_int_equal(w.down.kind, TP_EXIT_ERROR);
        assert_int_equal(w.down.code, at_start == 2 ? TP_EINVAL : 77);
    }
}

/* ------------------------------------------------------------ forward */

/* A router forwards requests with tp_forward: the worker answers the
 * caller directly (the router never replies, so no TP_ENOREPLY), the
 * sender is the caller, and a request forwarded to a dead pid is answered
 * TP_ENOPROC by the runtime. A forward refused (a malformed pid) leaves
 * the obligation with the router: unanswered, the caller gets
 * TP_ENOREPLY (before, it got nothing). */
typedef struct fwd {
    tp_pid root, router, worker, dead;
    tp_ref ref_ok, ref_dead, ref_odd;
    int replies, router_seen, forward_rc, bad_rc, odd_rc;
    int64_t value;
    int status_ok, status_dead, status_odd;
    tp_pid seen_from;
} fwd;

static int fwd_worker(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fwd *f = state;
    int64_t v;
    if (tp_msg_tag(msg) == TAG_REQ) {
        f->seen_from = tp_msg_from(msg);
        EXPECT(tp_msg_wants_reply(msg));
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        EXPECT_EQ(tp_reply_int(ctx, msg, v + 1), 0);
    } else if (tp_msg_tag(msg) == TAG_STOP) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int fwd_router(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fwd *f = state;
    int64_t v;
    switch (tp_msg_tag(msg)) {
    case TAG_REQ:
        f->router_seen++;
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        if (v == 3) {
            f->odd_rc = tp_forward(ctx, ODD_PID, msg);
            break;
        }
        f->forward_rc = tp_forward(ctx, v == 1 ? f->worker : f->dead, msg);
        f->bad_rc = tp_forward(ctx, TP_PID_NONE, msg);
        break;
    case TAG_STOP: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

static int fwd_dies(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    (void)msg;
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static int fwd_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fwd *f = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        f->root = tp_self(ctx);
        EXPECT_EQ(tp_spawn(ctx, fwd_worker, f, NULL, &f->worker), 0);
        EXPECT_EQ(tp_spawn(ctx, fwd_router, f, NULL, &f->router), 0);
        EXPECT_EQ(tp_spawn(ctx, fwd_dies, f, NULL, &f->dead), 0);
        EXPECT_EQ(tp_monitor(ctx, f->dead, NULL), 0);
        EXPECT_EQ(tp_forward(NULL, f->worker, msg), TP_ESTATE);
        break;
    case TP_TAG_DOWN: /* the dead one is gone: now call through the router */
        EXPECT_EQ(tp_call_int(ctx, f->router, TAG_REQ, 1, 5000, &f->ref_ok), 0);
        EXPECT_EQ(tp_call_int(ctx, f->router, TAG_REQ, 2, 5000, &f->ref_dead),
                  0);
        EXPECT_EQ(tp_call_int(ctx, f->router, TAG_REQ, 3, 5000, &f->ref_odd),
                  0);
        break;
    case TP_TAG_REPLY:
        f->replies++;
        if (tp_msg_ref(msg) == f->ref_ok) {
            f->status_ok = tp_msg_status(msg);
            EXPECT_EQ(tp_msg_int(msg, &f->value), 0);
        } else if (tp_msg_ref(msg) == f->ref_dead) {
            f->status_dead = tp_msg_status(msg);
        } else if (tp_msg_ref(msg) == f->ref_odd) {
            f->status_odd = tp_msg_status(msg);
        }
        if (f->replies == 3) {
            tp_send(ctx, f->router, TAG_STOP, NULL, 0);
            tp_send(ctx, f->worker, TAG_STOP, NULL, 0);
            tp_exit(ctx, TP_REASON_NORMAL);
        }
        break;
    }
    return TP_HANDLED;
}

static void test_forward(void **unused)
{
    (void)unused;
    static fwd f;
    memset(&f, 0, sizeof f);
    tpt_reset();
    tpt_result res;
    assert_int_equal(tpt_run(NULL, fwd_root, &f, NULL, &res), 0);
    TPT_CHECK();
    assert_int_equal(f.router_seen, 3);
    assert_int_equal(f.forward_rc, 0);
    assert_int_equal(f.bad_rc, TP_EINVAL);
    assert_int_equal(f.odd_rc, TP_EINVAL);
    assert_int_equal(f.status_odd, TP_ENOREPLY);
    assert_int_equal(f.replies, 3); /* no extra TP_ENOREPLY from the router */
    assert_int_equal(f.status_ok, 0);
    assert_int_equal(f.value, 2);
    assert_int_equal(f.status_dead, TP_ENOPROC);
    assert_int_equal(f.seen_from, f.root); /* the caller, not the router */
    assert_int_equal(res.stats.late_replies, 0);
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

/* ------------------------------------------- calls from foreign threads */

enum { FC_THREADS = 4, FC_CALLS = 500 };

/* Replies with the request's own payload (an empty one too). */
static int echo_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_REQ) {
        size_t n;
        const void *d = tp_msg_data(msg, &n);
        EXPECT_EQ(tp_reply(ctx, msg, d, n), 0);
    } else if (tp_msg_tag(msg) == TAG_STOP) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

struct fc_multi;

typedef struct fc_worker {
    struct fc_multi *m;
    pthread_t th;
    int id, ok;
    char why[160]; /* the first wrong answer */
} fc_worker;

typedef struct fc_multi {
    tp_runtime *rt;
    tp_pid root, echo;
    pthread_t coord;
    int join_rc, stop_rc;
    fc_worker w[FC_THREADS];
} fc_multi;

static void fc_bad(fc_worker *w, int i, const char *what, int rc)
{
    if (!w->why[0])
        snprintf(w->why, sizeof w->why, "thread %d call %d: %s (rc %d)", w->id,
                 i, what, rc);
}

/* Many round trips; every answer must be this call's own payload. Every
 * hundredth is empty, the next discards its reply; odd calls have a
 * timeout (a timer set and cancelled), even ones none. */
static void *fc_worker_main(void *arg)
{
    fc_worker *w = arg;
    tp_runtime *rt = w->m->rt;
    tp_pid echo = w->m->echo;
    for (int i = 0; i < FC_CALLS; i++) {
        int timeout = i % 2 ? 10000 : -1;
        void *rep = NULL, *req = NULL;
        size_t rlen = 99, len = 0;
        int rc;
        if (i % 100 == 7) {
            rc = tp_runtime_call(rt, echo, TAG_REQ, NULL, 0, timeout, &rep,
                                 &rlen);
            if (rc != 0 || rep != NULL || rlen != 0)
                fc_bad(w, i, "empty reply", rc);
            else
                w->ok++;
            continue;
        }
        if (tp_packf(&req, &len, "[i i s]", w->id, i, "foreign") != 0) {
            fc_bad(w, i, "tp_packf", -1);
            break;
        }
        if (i % 100 == 8) {
            rc = tp_runtime_call(rt, echo, TAG_REQ, req, len, timeout, NULL,
                                 NULL);
            if (rc != 0)
                fc_bad(w, i, "discarded reply", rc);
            else
                w->ok++;
        } else {
            rc = tp_runtime_call(rt, echo, TAG_REQ, req, len, timeout, &rep,
                                 &rlen);
            if (rc != 0 || !rep || rlen != len || memcmp(rep, req, len) != 0)
                fc_bad(w, i, "wrong reply", rc);
            else
                w->ok++;
            tp_free(rep);
        }
        tp_free(req);
    }
    return NULL;
}

/* Starts the workers, joins them, then tells the root the run may end. */
static void *fc_coordinator(void *arg)
{
    fc_multi *m = arg;
    for (int t = 0; t < FC_THREADS; t++) {
        m->w[t].m = m;
        m->w[t].id = t;
        if (pthread_create(&m->w[t].th, NULL, fc_worker_main, &m->w[t]))
            m->join_rc = -1;
    }
    for (int t = 0; t < FC_THREADS; t++)
        if (pthread_join(m->w[t].th, NULL))
            m->join_rc = -1;
    m->stop_rc = tp_runtime_send(m->rt, m->root, TAG_STOP, NULL, 0);
    return NULL;
}

static int fc_multi_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fc_multi *m = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        m->rt = tp_ctx_runtime(ctx);
        m->root = tp_self(ctx);
        EXPECT_EQ(tp_spawn(ctx, echo_b, NULL, NULL, &m->echo), 0);
        EXPECT_EQ(pthread_create(&m->coord, NULL, fc_coordinator, m), 0);
        break;
    case TAG_STOP:
        /* The coordinator may still be returning from tp_runtime_send: the
         * runtime must outlive every call into it, so join first. */
        EXPECT_EQ(pthread_join(m->coord, NULL), 0);
        EXPECT_EQ(tp_send(ctx, m->echo, TAG_STOP, NULL, 0), 0);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Several threads, each with many blocking calls in flight one after the
 * other, get every answer right; the proxies all end with their calls. */
static void test_runtime_call_threads(void **unused)
{
    static fc_multi m;
    tpt_result r;
    memset(&m, 0, sizeof m);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, fc_multi_root, &m, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(m.join_rc, 0);
    assert_int_equal(m.stop_rc, 0);
    for (int t = 0; t < FC_THREADS; t++) {
        if (m.w[t].why[0])
            fail_msg("%s", m.w[t].why);
        assert_int_equal(m.w[t].ok, FC_CALLS);
    }
    assert_int_equal(r.stats.actors_alive, 0);
    /* root, echo, and one proxy per call */
    assert_int_equal(r.stats.actors_spawned, 2 + FC_THREADS * FC_CALLS);
    assert_int_equal(r.stats.late_replies, 0);
}

/* One foreign call against a server_b in some mode (or a dead pid). */
enum { FC_DEAD = -1 };

typedef struct fc_single {
    int mode, timeout_ms;
    tp_runtime *rt;
    tp_pid root, server;
    pthread_t th;
    int rc, stop_rc;
    void *reply;
    size_t reply_len;
    double elapsed_ms;
} fc_single;

static void *fc_single_thread(void *arg)
{
    fc_single *f = arg;
    double t0 = tpt_now_ms();
    f->rc = tp_runtime_call(f->rt, f->server, TAG_REQ, "\x15", 1, /* 21 */
                            f->timeout_ms, &f->reply, &f->reply_len);
    f->elapsed_ms = tpt_now_ms() - t0;
    f->stop_rc = tp_runtime_send(f->rt, f->root, TAG_STOP, NULL, 0);
    return NULL;
}

static int fc_single_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fc_single *f = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        f->rt = tp_ctx_runtime(ctx);
        f->root = tp_self(ctx);
        if (f->mode == FC_DEAD) { /* call it once it is surely gone */
            EXPECT_EQ(tp_spawn(ctx, idle, NULL, NULL, &f->server), 0);
            EXPECT_EQ(tp_monitor(ctx, f->server, &(tp_ref){0}), 0);
            EXPECT_EQ(tp_kill(ctx, f->server), 0);
            break;
        }
        server *s = calloc(1, sizeof *s);
        s->mode = f->mode;
        tp_spawn_opts o = {.state_free = free_state};
        EXPECT_EQ(tp_spawn(ctx, server_b, s, &o, &f->server), 0);
        EXPECT_EQ(pthread_create(&f->th, NULL, fc_single_thread, f), 0);
        break;
    case TP_TAG_DOWN:
        EXPECT_EQ(pthread_create(&f->th, NULL, fc_single_thread, f), 0);
        break;
    case TAG_STOP:
        EXPECT_EQ(pthread_join(f->th, NULL), 0);
        /* a server holding the reply ends holding it: its TP_ENOPROC goes
         * to the proxy, which has already ended */
        tp_send(ctx, f->server, TAG_STOP, NULL, 0);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

static void run_single(fc_single *f, int mode, int timeout_ms, tpt_result *r)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->timeout_ms = timeout_ms;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, fc_single_root, f, NULL, r), 0);
    TPT_CHECK();
    assert_int_equal(f->stop_rc, 0);
    assert_int_equal(r->stats.actors_alive, 0);
}

/* The reply's payload comes back as the caller's own copy. */
static void test_runtime_call_reply(void **unused)
{
    static fc_single f;
    tpt_result r;
    run_single(&f, S_DOUBLE, 5000, &r);
    assert_int_equal(f.rc, 0);
    int64_t v = 0;
    assert_non_null(f.reply);
    assert_int_equal(tp_unpackf(f.reply, f.reply_len, "l", &v), 0);
    assert_true(v == 42);
    tp_free(f.reply);
}

/* A callee that keeps the reply: TP_ETIMEDOUT after the timeout, not much
 * later, and the run still ends cleanly (the held reply goes nowhere). */
static void test_runtime_call_timeout(void **unused)
{
    static fc_single f;
    tpt_result r;
    run_single(&f, S_HOLD_FIRST, 50, &r);
    assert_int_equal(f.rc, TP_ETIMEDOUT);
    assert_null(f.reply);
    assert_true(f.elapsed_ms >= 50.0);
    if (f.elapsed_ms > 5000.0)
        fail_msg("timed out after %.1f ms, want about 50", f.elapsed_ms);
    assert_int_equal(r.stats.late_replies, 0);
}

/* A dead callee, one that ends holding the request, and the proxy killed
 * while it waits: TP_ENOPROC, not a hang. */
static void test_runtime_call_noproc(void **unused)
{
    static fc_single f;
    static const int modes[] = {FC_DEAD, S_TAKE_AND_DIE, S_EXIT_AT_START,
                                S_KILL_CALLER};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        tpt_result r;
        run_single(&f, modes[i], -1, &r);
        if (f.rc != TP_ENOPROC)
            fail_msg("mode %d: rc %d, want TP_ENOPROC", modes[i], f.rc);
        assert_null(f.reply);
    }
}

/* A callee that handles the request without replying: TP_ENOREPLY. */
static void test_runtime_call_noreply(void **unused)
{
    static fc_single f;
    tpt_result r;
    run_single(&f, S_IGNORE, -1, &r);
    assert_int_equal(f.rc, TP_ENOREPLY);
    assert_null(f.reply);
}

typedef struct fc_inside {
    int rc;
} fc_inside;

static int fc_inside_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fc_inside *in = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        /* a scheduler thread must not block, even on a running runtime */
        in->rc = tp_runtime_call(tp_ctx_runtime(ctx), tp_self(ctx), TAG_REQ,
                                 NULL, 0, -1, NULL, NULL);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* TP_ESTATE before tp_run, from a behavior, and after tp_run; TP_EINVAL
 * and TP_E2BIG for bad arguments, checked first. */
static void test_runtime_call_state(void **unused)
{
    static fc_inside in;
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.max_payload = 16;
    tp_runtime *rt = NULL;
    assert_int_equal(tp_runtime_new(&cfg, &rt), 0);
    tp_pid some = ((tp_pid)1 << 32) | 1;
    void *rep = (void *)&in; /* untouched on error */
    size_t rlen = 7;
    assert_int_equal(tp_runtime_call(rt, some, TAG_REQ, NULL, 0, -1, &rep,
                                     &rlen),
                     TP_ESTATE);
    assert_ptr_equal(rep, &in);
    assert_int_equal(rlen, 7);
    assert_int_equal(tp_runtime_call(NULL, some, TAG_REQ, NULL, 0, -1, NULL,
                                     NULL),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_call(rt, TP_PID_NONE, TAG_REQ, NULL, 0, -1,
                                     NULL, NULL),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_call(rt, some, -1, NULL, 0, -1, NULL, NULL),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_call(rt, some, TAG_REQ, "\xc1", 1, -1, NULL,
                                     NULL),
                     TP_EINVAL);
    assert_int_equal(tp_runtime_call(rt, some, TAG_REQ, NULL, 3, -1, NULL,
                                     NULL),
                     TP_EINVAL);
    char big[32];
    memset(big, 'x', sizeof big);
    big[0] = (char)0xbf; /* a str of 31 bytes: well formed, over 16 */
    assert_int_equal(tp_runtime_call(rt, some, TAG_REQ, big, sizeof big, -1,
                                     NULL, NULL),
                     TP_E2BIG);

    in.rc = 1;
    tpt_reset();
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, fc_inside_root, &in, NULL), 0);
    tpt_watchdog(0);
    TPT_CHECK();
    assert_int_equal(in.rc, TP_ESTATE);
    assert_int_equal(tp_runtime_call(rt, some, TAG_REQ, NULL, 0, -1, &rep,
                                     &rlen),
                     TP_ESTATE);
    assert_ptr_equal(rep, &in);
    tp_stats st;
    tp_runtime_stats(rt, &st);
    assert_int_equal(st.actors_spawned, 1); /* no proxy was ever made */
    tp_runtime_free(rt);
}

typedef struct fc_end {
    tp_runtime *rt;
    tp_pid echo;
    pthread_t th;
    int ok, noproc, rc;
} fc_end;

static int fc_end_echo(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fc_end *e = state;
    if (tp_msg_tag(msg) == TAG_REQ && ++e->ok == 200) /* the last answer */
        tp_exit(ctx, TP_REASON_NORMAL);
    return echo_b(ctx, NULL, msg);
}

/* Calls on while the run ends: answers, then TP_ENOPROC while the run
 * winds down, then TP_ESTATE; never a hang, whichever way the last call
 * races the end of the run. */
static void *fc_end_thread(void *arg)
{
    fc_end *e = arg;
    for (int i = 0; i < 1000000; i++) {
        e->rc =
            tp_runtime_call(e->rt, e->echo, TAG_REQ, NULL, 0, -1, NULL, NULL);
        if (e->rc == TP_ENOPROC)
            e->noproc++;
        else if (e->rc != 0)
            break;
    }
    return NULL;
}

static int fc_end_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fc_end *e = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        e->rt = tp_ctx_runtime(ctx);
        EXPECT_EQ(tp_spawn(ctx, fc_end_echo, e, NULL, &e->echo), 0);
        EXPECT_EQ(tp_monitor(ctx, e->echo, &(tp_ref){0}), 0);
        EXPECT_EQ(pthread_create(&e->th, NULL, fc_end_thread, e), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_DOWN) {
        tp_exit(ctx, TP_REASON_NORMAL); /* the thread is still calling */
    }
    return TP_HANDLED;
}

/* The run ends under a caller: it returns TP_ESTATE at last, and a proxy
 * spawned too late to run is freed with the runtime. */
static void test_runtime_call_run_ends(void **unused)
{
    static fc_end e;
    memset(&e, 0, sizeof e);
    tp_runtime *rt = NULL;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tpt_reset();
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, fc_end_root, &e, NULL), 0);
    /* join before tp_runtime_free: the thread may still be in a call */
    assert_int_equal(pthread_join(e.th, NULL), 0);
    tpt_watchdog(0);
    TPT_CHECK();
    tp_runtime_free(rt);
    assert_int_equal(e.ok, 200);
    assert_int_equal(e.rc, TP_ESTATE);
}

/* A reply into a mailbox over its capacity never pauses the replier, as
 * a user message there would: backpressure holds back messages, not the
 * answers a caller waits for. One scheduler, so the order is fixed: the
 * client overfills its own mailbox (its own sends never pause it) and
 * calls; the server replies, then tells the root, which runs next (the
 * next slot, before the queued client) and looks at both. */
enum { RP_FILL = 40, RP_CHECK };

typedef struct replypause {
    tp_pid root, server, client;
    bool checked, server_paused, replied;
    uint64_t client_len, client_cap;
    int status;
} replypause;

static int rp_server(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    replypause *p = state;
    if (tp_msg_wants_reply(msg)) {
        EXPECT_EQ(tp_reply_int(ctx, msg, 7), 0);
        EXPECT_EQ(tp_send(ctx, p->root, RP_CHECK, NULL, 0), 0);
    }
    return TP_HANDLED;
}

static int rp_client(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    replypause *p = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        for (int i = 0; i < 3; i++)
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), RP_FILL, NULL, 0), 0);
        EXPECT_EQ(tp_call_int(ctx, p->server, TAG_REQ, 1, 5000, NULL), 0);
        break;
    case TP_TAG_REPLY:
        p->replied = true;
        p->status = tp_msg_status(msg);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int rp_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    replypause *p = state;
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tp_actor_info si, ci;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        p->root = tp_self(ctx);
        tp_spawn_opts o = {.mailbox_capacity = 2};
        EXPECT_EQ(tp_spawn(ctx, rp_server, p, NULL, &p->server), 0);
        EXPECT_EQ(tp_spawn(ctx, rp_client, p, &o, &p->client), 0);
        break;
    }
    case RP_CHECK:
        EXPECT_EQ(tp_actor_info_get(rt, p->server, &si), 0);
        EXPECT_EQ(tp_actor_info_get(rt, p->client, &ci), 0);
        p->server_paused = si.paused;
        p->client_len = ci.mailbox_len;
        p->client_cap = ci.mailbox_cap;
        p->checked = true;
        tp_kill(ctx, p->server);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_reply_never_pauses(void **unused)
{
    (void)unused;
    static replypause p;
    memset(&p, 0, sizeof p);
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 1;
    cfg.batch = 1; /* the client's turn ends before it takes its fill */
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, rp_root, &p, NULL, NULL), 0);
    TPT_CHECK();
    assert_true(p.checked);
    /* The scene: the reply went into a mailbox over its capacity. */
    assert_true(p.client_len > p.client_cap);
    assert_false(p.server_paused);
    assert_true(p.replied);
    assert_int_equal(p.status, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_reply),
        cmocka_unit_test(test_call_timeout_then_late_reply),
        cmocka_unit_test(test_call_callee_dies),
        cmocka_unit_test(test_call_no_reply_and_deferred),
        cmocka_unit_test(test_call_dead_pid),
        cmocka_unit_test(test_call_refused_leaves_nothing),
        cmocka_unit_test(test_call_local_callee_noconnection),
        cmocka_unit_test(test_call_callee_reason_via_monitor),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_oneshot_value_once),
        cmocka_unit_test(test_oneshot_timeout),
        cmocka_unit_test(test_oneshot_from_thread),
        cmocka_unit_test(test_runtime_call_threads),
        cmocka_unit_test(test_runtime_call_reply),
        cmocka_unit_test(test_runtime_call_timeout),
        cmocka_unit_test(test_runtime_call_noproc),
        cmocka_unit_test(test_runtime_call_noreply),
        cmocka_unit_test(test_runtime_call_state),
        cmocka_unit_test(test_runtime_call_run_ends),
        cmocka_unit_test(test_reply_never_pauses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
