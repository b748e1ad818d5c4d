/*
 * Mailboxes: per-sender FIFO (Erlang's only ordering promise), bounded
 * capacity with backpressure instead of dropping or unbounded growth (the
 * Tokio chapter's bounded mpsc), no deadlock between two flooding actors,
 * selective receive (defer + become), share-nothing sends, sends from
 * threads outside the runtime (blocking send, try-send reporting "full",
 * never more than the capacity), and the mailbox's count read from another
 * thread while messages move between its queues (never too low).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "actors/actor.h"
#include "mailbox/mailbox.h"
#include "runtime/runtime.h"
#include "runtime/service.h"
#include "tp_test.h"
#include "troupe/observe.h"

enum { TAG_SEQ = 1, TAG_CONT, TAG_PEER, TAG_DATA, TAG_SWITCH };

static void free_state(void *s) { free(s); }

/* A sender of sequenced messages: BATCH per turn, then a self-message to
 * continue, since backpressure can pause an actor only between turns. */
typedef struct seq_sender {
    tp_pid to;
    int idx, seq, total, batch;
    int32_t tag;
    int blob; /* pad each message with this many bytes */
} seq_sender;

static int seq_sender_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    seq_sender *s = state;
    static const char pad[256];
    for (int k = 0; k < s->batch && s->seq < s->total; k++, s->seq++) {
        int rc = s->blob ? tp_sendf(ctx, s->to, s->tag, "[iy]", s->seq, pad,
                                    (size_t)s->blob)
                         : tp_sendf(ctx, s->to, s->tag, "[ii]", s->idx, s->seq);
        EXPECT_EQ(rc, 0);
    }
    if (s->seq < s->total)
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_CONT, NULL, 0), 0);
    else
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static tp_pid spawn_sender(tp_ctx *ctx, seq_sender init)
{
    seq_sender *s = malloc(sizeof *s);
    tp_spawn_opts o = {.state_free = free_state};
    tp_pid p = TP_PID_NONE;
    *s = init;
    EXPECT_EQ(tp_spawn(ctx, seq_sender_b, s, &o, &p), 0);
    return p;
}

/* ------------------------------------------------------ per-sender FIFO */

#define SENDERS 4
#define PER_SENDER 100000

typedef struct fifo_recv {
    int next[SENDERS];
    long total;
    int downs;
    long out_of_order;
} fifo_recv;

static int fifo_receiver(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fifo_recv *r = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        for (int i = 0; i < SENDERS; i++) {
            tp_pid p = spawn_sender(ctx, (seq_sender){.to = tp_self(ctx),
                                                      .idx = i,
                                                      .total = PER_SENDER,
                                                      .batch = 100,
                                                      .tag = TAG_SEQ});
            EXPECT_EQ(tp_monitor(ctx, p, &(tp_ref){0}), 0);
        }
        break;
    case TAG_SEQ: {
        int idx = -1, seq = -1;
        EXPECT_EQ(tp_msg_scanf(msg, "[ii]", &idx, &seq), 0);
        EXPECT(idx >= 0 && idx < SENDERS);
        if (idx < 0 || idx >= SENDERS)
            break;
        if (seq != r->next[idx])
            r->out_of_order++;
        r->next[idx] = seq + 1;
        r->total++;
        break;
    }
    case TP_TAG_DOWN: /* a sender's DOWN comes after all its messages */
        if (++r->downs == SENDERS)
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Erlang: messages from one sender to one receiver arrive in send order.
 * 4 x 100,000: strictly increasing per sender, no gap, no duplicate. */
static void test_fifo_per_sender(void **unused)
{
    static fifo_recv r;
    tpt_result res;
    memset(&r, 0, sizeof r);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, fifo_receiver, &r, NULL, &res), 0);
    TPT_CHECK();
    assert_int_equal(r.out_of_order, 0);
    for (int i = 0; i < SENDERS; i++)
        assert_int_equal(r.next[i], PER_SENDER);
    assert_int_equal(r.total, (long)SENDERS * PER_SENDER);
    assert_int_equal(res.stats.dead_letters, 0);
    assert_int_equal(res.stats.actors_alive, 0);
}

/* --------------------------------------------------------- backpressure */

#define FLOOD 1000000
#define FLOOD_BLOB 90 /* ~100-byte payloads */
#define RSS_CAP_KB (64 * 1024)

typedef struct flood_recv {
    long count;
    long long sum;
    long next;
    long out_of_order;
    long max_rss_kb;
} flood_recv;

static int flood_consumer(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    flood_recv *r = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_pid p = spawn_sender(ctx, (seq_sender){.to = tp_self(ctx),
                                                  .total = FLOOD,
                                                  .batch = 1000,
                                                  .tag = TAG_DATA,
                                                  .blob = FLOOD_BLOB});
        EXPECT_EQ(tp_monitor(ctx, p, &(tp_ref){0}), 0);
        break;
    }
    case TAG_DATA: {
        int seq = -1;
        const void *blob;
        size_t blen = 0;
        EXPECT_EQ(tp_msg_scanf(msg, "[iy]", &seq, &blob, &blen), 0);
        EXPECT_EQ(blen, FLOOD_BLOB);
        if (seq != r->next)
            r->out_of_order++;
        r->next = seq + 1;
        r->count++;
        r->sum += seq;
        if ((r->count & 4095) == 0) {
            long kb = tpt_proc_kb("VmRSS");
            if (kb > r->max_rss_kb)
                r->max_rss_kb = kb;
        }
        break;
    }
    case TP_TAG_DOWN: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

/* Bounded mpsc (Tokio's channel(1024)) / backpressure: a producer flooding
 * a consumer of capacity 1024 with 1,000,000 ~100-byte messages is paused,
 * not buffered without bound and not dropped. Unbounded queueing would need
 * over 100 MB; we allow 64 MB of growth. */
static void test_backpressure_flood(void **unused)
{
    static flood_recv r;
    tpt_result res;
    memset(&r, 0, sizeof r);
    tpt_reset();
    int hwm_ok = tpt_reset_hwm();
    long base_kb = tpt_proc_kb("VmRSS");
    tp_spawn_opts o = {.mailbox_capacity = 1024};
    assert_int_equal(tpt_run(NULL, flood_consumer, &r, &o, &res), 0);
    TPT_CHECK();
    assert_int_equal(r.count, FLOOD);
    assert_true(r.sum == (long long)FLOOD * (FLOOD - 1) / 2);
    assert_int_equal(r.out_of_order, 0);
    long hwm_kb = hwm_ok ? tpt_proc_kb("VmHWM") : r.max_rss_kb;
    if (hwm_kb < r.max_rss_kb)
        hwm_kb = r.max_rss_kb;
    print_message("flood: RSS base %ld kB, peak %ld kB (%s)\n", base_kb, hwm_kb,
                  hwm_ok ? "VmHWM" : "sampled VmRSS");
#if defined(__SANITIZE_ADDRESS__)
    /* ASan's quarantine keeps freed blocks resident: no meaningful cap. */
    (void)base_kb;
#else
    assert_true(hwm_kb - base_kb < RSS_CAP_KB);
#endif
}

typedef struct flooder {
    tp_pid peer;
    int sent, recvd, total;
} flooder;

static void flooder_send(tp_ctx *ctx, flooder *f)
{
    for (int k = 0; k < 100 && f->sent < f->total; k++, f->sent++)
        EXPECT_EQ(tp_send_int(ctx, f->peer, TAG_DATA, f->sent), 0);
    if (f->sent < f->total)
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_CONT, NULL, 0), 0);
}

static int flooder_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    flooder *f = state;
    int64_t v;
    switch (tp_msg_tag(msg)) {
    case TAG_PEER:
        EXPECT_EQ(tp_msg_scanf(msg, "p", &f->peer), 0);
        flooder_send(ctx, f);
        break;
    case TAG_CONT: flooder_send(ctx, f); break;
    case TAG_DATA:
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        EXPECT_EQ(v, f->recvd);
        f->recvd++;
        break;
    }
    if (f->total && f->sent == f->total && f->recvd == f->total)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static flooder flooders[2];

static int flood_pair_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int *downs = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        tp_pid p[2];
        tp_spawn_opts o = {.mailbox_capacity = 64};
        for (int i = 0; i < 2; i++) {
            EXPECT_EQ(tp_spawn(ctx, flooder_b, &flooders[i], &o, &p[i]), 0);
            EXPECT_EQ(tp_monitor(ctx, p[i], &(tp_ref){0}), 0);
        }
        EXPECT_EQ(tp_sendf(ctx, p[0], TAG_PEER, "p", p[1]), 0);
        EXPECT_EQ(tp_sendf(ctx, p[1], TAG_PEER, "p", p[0]), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_DOWN && ++*downs == 2) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* An actor cycle must not deadlock: two actors with small mailboxes send
 * each other 100,000 messages while handling the other's; both finish. */
static void test_mutual_flood_no_deadlock(void **unused)
{
    static int downs;
    downs = 0;
    memset(flooders, 0, sizeof flooders);
    flooders[0].total = flooders[1].total = 100000;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, flood_pair_root, &downs, NULL, NULL), 0);
    TPT_CHECK();
    for (int i = 0; i < 2; i++) {
        assert_int_equal(flooders[i].sent, 100000);
        assert_int_equal(flooders[i].recvd, 100000);
    }
}

/* ---------------------------------------------------- selective receive */

typedef struct picky {
    int first[16], nfirst;   /* handled by the first behavior */
    int second[16], nsecond; /* handled after become */
} picky;

static int picky_second(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    picky *p = state;
    int64_t v;
    if (tp_msg_tag(msg) == TAG_DATA && tp_msg_int(msg, &v) == 0) {
        if (p->nsecond < 16)
            p->second[p->nsecond++] = (int)v;
        if (v == 12)
            tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* Handles even numbers, defers odd ones until told to switch. */
static int picky_first(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    picky *p = state;
    int64_t v;
    if (tp_msg_tag(msg) == TAG_SWITCH) {
        EXPECT_EQ(tp_become(ctx, picky_second), 0);
        return TP_HANDLED;
    }
    if (tp_msg_tag(msg) != TAG_DATA || tp_msg_int(msg, &v) != 0)
        return TP_HANDLED;
    if (v % 2)
        return TP_DEFER;
    if (p->nfirst < 16)
        p->first[p->nfirst++] = (int)v;
    return TP_HANDLED;
}

static int picky_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_spawn_opts o = {0};
    tp_pid p;
    EXPECT_EQ(tp_spawn(ctx, picky_first, state, &o, &p), 0);
    for (int i = 1; i <= 10; i++)
        EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, i), 0);
    EXPECT_EQ(tp_send(ctx, p, TAG_SWITCH, NULL, 0), 0);
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 11), 0);
    EXPECT_EQ(tp_send_int(ctx, p, TAG_DATA, 12), 0);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* Erlang selective receive: deferred (unmatched) messages stay in the
 * mailbox in order and are offered again, before newer ones, after the
 * behavior changes. */
static void test_defer_and_become(void **unused)
{
    static picky p;
    static const int first[] = {2, 4, 6, 8, 10};
    static const int second[] = {1, 3, 5, 7, 9, 11, 12};
    memset(&p, 0, sizeof p);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, picky_root, &p, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(p.nfirst, 5);
    assert_memory_equal(p.first, first, sizeof first);
    assert_int_equal(p.nsecond, 7);
    assert_memory_equal(p.second, second, sizeof second);
}

/* A waiting behavior defers everything, system messages included: an
 * EXIT (trapped link), a DOWN, a oneshot value and a timer message. The
 * fourth one switches behavior in the same call that defers it; all four
 * must then be offered again, in arrival order (gen_statem's postpone
 * with a state change). */
typedef struct sysdefer {
    int ndeferred, seen[8], nseen;
    tp_oneshot tx;
} sysdefer;

#define TAG_TICK 40

static int sysdefer_collect(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sysdefer *d = state;
    if (d->nseen < 8)
        d->seen[d->nseen++] = tp_msg_tag(msg);
    if (d->nseen == 4)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int sysdefer_wait(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sysdefer *d = state;
    if (++d->ndeferred == 4)
        EXPECT_EQ(tp_become(ctx, sysdefer_collect), 0);
    return TP_DEFER;
}

static int sysdefer_child(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sysdefer *d = state;
    EXPECT_EQ(tp_oneshot_send(ctx, NULL, d->tx, "\x07", 1), 0);
    return tp_exit(ctx, TP_REASON_ERROR(5, "child done"));
}

static int sysdefer_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sysdefer *d = state;
    EXPECT_EQ(tp_trap_exit(ctx, true), 0);
    EXPECT_EQ(tp_oneshot_new(ctx, -1, &d->tx), 0);
    tp_spawn_opts o = {.flags = TP_SPAWN_LINK};
    tp_pid child;
    EXPECT_EQ(tp_spawn(ctx, sysdefer_child, d, &o, &child), 0);
    EXPECT_EQ(tp_monitor(ctx, child, NULL), 0);
    EXPECT_EQ(tp_send_after(ctx, 20, TAG_TICK, NULL, 0, NULL), 0);
    EXPECT_EQ(tp_become(ctx, sysdefer_wait), 0);
    return TP_HANDLED;
}

static void test_defer_system_messages(void **unused)
{
    static sysdefer d;
    memset(&d, 0, sizeof d);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, sysdefer_root, &d, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(d.nseen, 4);
    /* the child's reply, then its death (EXIT by link, then DOWN), then
     * the timer 20 ms later */
    assert_int_equal(d.seen[0], TP_TAG_REPLY);
    assert_int_equal(d.seen[1], TP_TAG_EXIT);
    assert_int_equal(d.seen[2], TP_TAG_DOWN);
    assert_int_equal(d.seen[3], TAG_TICK);
}

/* ------------------------------------------------------- share-nothing */

static int copy_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int *seen = state;
    int a = 0, b = 0;
    const char *s;
    size_t n;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        void *buf, *moved;
        size_t len, mlen;
        EXPECT_EQ(tp_packf(&buf, &len, "[ii]", 1, 2), 0);
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_DATA, buf, len), 0);
        memcpy(buf, "\x92\x09\x09", 3); /* too late to affect the message */
        free(buf);
        EXPECT_EQ(tp_packf(&moved, &mlen, "s", "moved"), 0);
        EXPECT_EQ(tp_send_move(ctx, tp_self(ctx), TAG_SEQ, moved, mlen), 0);
        /* a malformed moved buffer is refused and still freed (ASan) */
        void *bad = malloc(2);
        memcpy(bad, "\x92\x01", 2);
        EXPECT_EQ(tp_send_move(ctx, tp_self(ctx), TAG_SEQ, bad, 2), TP_EINVAL);
        break;
    }
    case TAG_DATA:
        EXPECT_EQ(tp_msg_from(msg), tp_self(ctx));
        EXPECT_EQ(tp_msg_scanf(msg, "[ii]", &a, &b), 0);
        EXPECT(a == 1 && b == 2);
        ++*seen;
        break;
    case TAG_SEQ:
        EXPECT_EQ(tp_msg_scanf(msg, "S", &s, &n), 0);
        EXPECT(n == 5 && memcmp(s, "moved", 5) == 0);
        ++*seen;
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Share-nothing: tp_send copies, so the sender may reuse its buffer at
 * once; tp_send_move hands a buffer over without a copy. */
static void test_send_copies_and_moves(void **unused)
{
    static int seen;
    seen = 0;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, copy_root, &seen, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(seen, 2);
}

/* An int message (tp_send_int) reads back as its value through tp_msg_int
 * and as its canonical msgpack bytes through tp_msg_data and
 * tp_msg_scanf, at every width, whichever is read first; the same bytes
 * sent by tp_send, and an int message forwarded (tp_forward, which copies
 * its bytes), read back the same way. */
static const int64_t int_values[] =
    {0,         1,        127,    128,          255,          256,
     65535,     65536,    -1,     -32,          -33,          -128,
     -129,      -32768,   -32769, 4294967295LL, 4294967296LL, INT32_MIN,
     INT64_MIN, INT64_MAX};
#define N_INT_VALUES (sizeof int_values / sizeof int_values[0])
#define INT_FWD 100 /* tags INT_FWD + i: forwarded once, then checked */

static void check_int_msg(const tp_msg *msg, int64_t want)
{
    int64_t v = 0, u = 0;
    void *b = NULL;
    size_t n = 0, len;
    EXPECT_EQ(tp_msg_int(msg, &v), 0);
    EXPECT(v == want);
    const void *data = tp_msg_data(msg, &len);
    EXPECT_EQ(tp_packf(&b, &n, "l", want), 0);
    EXPECT(len == n && b && memcmp(data, b, n) == 0);
    EXPECT_EQ(tp_msg_scanf(msg, "l", &u), 0);
    EXPECT(u == want);
    v = 0;
    EXPECT_EQ(tp_msg_int(msg, &v), 0);
    EXPECT(v == want);
    free(b);
}

static int int_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    static bool forwarded[N_INT_VALUES];
    int *seen = state;
    int32_t tag = tp_msg_tag(msg);
    if (tag == TP_TAG_START) {
        for (size_t i = 0; i < N_INT_VALUES; i++) {
            void *b;
            size_t n;
            int64_t v = int_values[i];
            forwarded[i] = false;
            EXPECT_EQ(tp_send_int(ctx, tp_self(ctx), (int32_t)i, v), 0);
            EXPECT_EQ(tp_packf(&b, &n, "l", v), 0);
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), (int32_t)i, b, n), 0);
            free(b);
            EXPECT_EQ(tp_send_int(ctx, tp_self(ctx), INT_FWD + (int32_t)i, v),
                      0);
        }
        return TP_HANDLED;
    }
    if (tag >= INT_FWD && (size_t)(tag - INT_FWD) < N_INT_VALUES &&
        !forwarded[tag - INT_FWD]) {
        forwarded[tag - INT_FWD] = true; /* its bytes not read before */
        EXPECT_EQ(tp_forward(ctx, tp_self(ctx), msg), 0);
        return TP_HANDLED;
    }
    if (tag >= INT_FWD)
        tag -= INT_FWD;
    if (tag < 0 || (size_t)tag >= N_INT_VALUES)
        return TP_HANDLED;
    check_int_msg(msg, int_values[tag]);
    if (++*seen == 3 * (int)N_INT_VALUES)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static void test_int_messages(void **unused)
{
    static int seen;
    seen = 0;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, int_root, &seen, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(seen, 3 * N_INT_VALUES);
}

/* ------------------------------------------------------ foreign threads */

typedef struct counted_recv {
    int expected, got, bad_order;
    int next[2];
} counted_recv;

static int counted_receiver(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    counted_recv *r = state;
    int t = 0, seq = -1;
    if (tp_msg_tag(msg) != TAG_SEQ)
        return TP_HANDLED;
    EXPECT_EQ(tp_msg_scanf(msg, "[ii]", &t, &seq), 0);
    if (t < 0 || t > 1 || seq != r->next[t])
        r->bad_order++;
    else
        r->next[t]++;
    if (++r->got == r->expected)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int quit_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* A foreign thread's try-send reports "full" instead of blocking: the
 * receiver (capacity 4) does not run before tp_run, so its mailbox fills. */
static void test_try_send_full(void **unused)
{
    static counted_recv r;
    tp_runtime *rt;
    tp_pid p;
    int rc[10];
    memset(&r, 0, sizeof r);
    tpt_reset();
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tp_spawn_opts o = {.mailbox_capacity = 4};
    assert_int_equal(tp_runtime_spawn(rt, counted_receiver, &r, &o, &p), 0);
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        void *b;
        size_t n;
        assert_int_equal(tp_packf(&b, &n, "[ii]", 0, i), 0);
        rc[i] = tp_runtime_try_send(rt, p, TAG_SEQ, b, n);
        free(b);
        if (rc[i] == 0)
            ok++;
    }
    /* the first 3 fit (4 if START is not counted); then full, and stays so */
    assert_int_equal(rc[0], 0);
    assert_int_equal(rc[1], 0);
    assert_int_equal(rc[2], 0);
    assert_true(ok == 3 || ok == 4);
    for (int i = ok; i < 10; i++)
        assert_int_equal(rc[i], TP_EFULL);
    r.expected = ok;
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, quit_root, NULL, NULL), 0);
    tpt_watchdog(0);
    TPT_CHECK();
    assert_int_equal(r.got, ok);
    assert_int_equal(r.bad_order, 0);
    tp_runtime_free(rt);
}

#define THREAD_MSGS 5000

typedef struct feeder {
    tp_runtime *rt;
    tp_pid to;
    int idx;
    pthread_t th;
    int rc;
} feeder;

static feeder feeders[2];

static void *feeder_main(void *arg)
{
    feeder *f = arg;
    for (int i = 0; i < THREAD_MSGS && f->rc == 0; i++) {
        char b[16];
        /* hand-packed [idx, i]: fixarray 2, fixint, uint16 */
        b[0] = (char)0x92;
        b[1] = (char)f->idx;
        b[2] = (char)0xcd;
        b[3] = (char)(i >> 8);
        b[4] = (char)(i & 0xff);
        f->rc = tp_runtime_send(f->rt, f->to, TAG_SEQ, b, 5);
    }
    return NULL;
}

static int feeder_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_spawn_opts o = {.mailbox_capacity = 16};
    tp_pid p;
    EXPECT_EQ(tp_spawn(ctx, counted_receiver, state, &o, &p), 0);
    for (int i = 0; i < 2; i++) {
        feeders[i] = (feeder){.rt = tp_ctx_runtime(ctx), .to = p, .idx = i};
        EXPECT_EQ(pthread_create(&feeders[i].th, NULL, feeder_main,
                                 &feeders[i]),
                  0);
    }
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* A foreign thread's blocking send waits for room (capacity 16) and
 * delivers everything, in order per thread. */
static void test_blocking_send_from_threads(void **unused)
{
    static counted_recv r;
    memset(&r, 0, sizeof r);
    r.expected = 2 * THREAD_MSGS;
    tpt_reset();
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, feeder_root, &r, NULL), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(feeders[i].th, NULL);
        assert_int_equal(feeders[i].rc, 0);
    }
    tpt_watchdog(0);
    tp_runtime_free(rt);
    TPT_CHECK();
    assert_int_equal(r.got, 2 * THREAD_MSGS);
    assert_int_equal(r.bad_order, 0);
    assert_int_equal(r.next[0], THREAD_MSGS);
    assert_int_equal(r.next[1], THREAD_MSGS);
}

/* ---------------------------------------- capacity under foreign senders */

#define CAP_THREADS 4
#define CAP_MSGS 3000 /* per thread */
#define CAP_SIZE 4

typedef struct cap_recv {
    int got, bad_order;
    int next[CAP_THREADS];
    uint64_t sink;     /* the receiver's busy work, kept */
    tp_actor_info end; /* its own info at the last message */
    int info_rc;
} cap_recv;

typedef struct cap_feeder {
    tp_runtime *rt;
    tp_pid to;
    int idx, rc;
    pthread_t th;
} cap_feeder;

static cap_feeder cap_feeders[CAP_THREADS];

/* CPU work that the compiler cannot drop: a slow receiver. */
static uint64_t busy_work(uint64_t x, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static int cap_receiver(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    cap_recv *r = state;
    int t = -1, seq = -1;
    if (tp_msg_tag(msg) != TAG_SEQ)
        return TP_HANDLED;
    EXPECT_EQ(tp_msg_scanf(msg, "[ii]", &t, &seq), 0);
    if (t < 0 || t >= CAP_THREADS || seq != r->next[t])
        r->bad_order++;
    else
        r->next[t]++;
    r->sink = busy_work(r->sink + (uint64_t)seq + 1, 2000);
    if (++r->got == CAP_THREADS * CAP_MSGS) {
        r->info_rc =
            tp_actor_info_get(tp_ctx_runtime(ctx), tp_self(ctx), &r->end);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void *cap_feeder_main(void *arg)
{
    cap_feeder *f = arg;
    for (int i = 0; i < CAP_MSGS && f->rc == 0; i++) {
        unsigned char b[8];
        /* hand-packed [idx, i]: fixarray 2, fixint, uint16 */
        b[0] = 0x92;
        b[1] = (unsigned char)f->idx;
        b[2] = 0xcd;
        b[3] = (unsigned char)(i >> 8);
        b[4] = (unsigned char)(i & 0xff);
        f->rc = tp_runtime_send(f->rt, f->to, TAG_SEQ, b, 5);
    }
    return NULL;
}

static int cap_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_spawn_opts o = {.mailbox_capacity = CAP_SIZE, .flags = TP_SPAWN_OBSERVE};
    tp_pid p;
    EXPECT_EQ(tp_spawn(ctx, cap_receiver, state, &o, &p), 0);
    for (int i = 0; i < CAP_THREADS; i++) {
        cap_feeders[i] =
            (cap_feeder){.rt = tp_ctx_runtime(ctx), .to = p, .idx = i};
        EXPECT_EQ(pthread_create(&cap_feeders[i].th, NULL, cap_feeder_main,
                                 &cap_feeders[i]),
                  0);
    }
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* tp_runtime_send "never takes a mailbox over its capacity": four threads
 * block-send 3,000 messages each into a slow receiver of capacity 4, which
 * takes one message a turn (batch 1) and is observed, so its mailbox's
 * high-water mark is sampled at the start and end of every turn. The mark
 * reaches the capacity and never passes it; everything arrives, in order
 * per thread. */
static void test_blocking_send_capacity_exact(void **unused)
{
    static cap_recv r;
    memset(&r, 0, sizeof r);
    tpt_reset();
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.batch = 1;
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(&cfg, &rt), 0);
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, cap_root, &r, NULL), 0);
    for (int i = 0; i < CAP_THREADS; i++) {
        pthread_join(cap_feeders[i].th, NULL);
        assert_int_equal(cap_feeders[i].rc, 0);
    }
    tpt_watchdog(0);
    tp_runtime_free(rt);
    TPT_CHECK();
    assert_int_equal(r.got, CAP_THREADS * CAP_MSGS);
    assert_int_equal(r.bad_order, 0);
    assert_int_equal(r.info_rc, 0);
    assert_true(r.end.observed);
    assert_int_equal(r.end.mailbox_cap, CAP_SIZE);
    print_message("capacity %d, 4 blocking senders: high-water mark %llu\n",
                  CAP_SIZE, (unsigned long long)r.end.mailbox_hwm);
    assert_true(r.end.mailbox_hwm <= CAP_SIZE);
}

/* ------------------------------------------ the count, while it moves */

#ifndef MV_TOTAL
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define MV_TOTAL 300000
#else
#define MV_TOTAL 3000000
#endif
#endif
#define MV_READS 4       /* count reads after each push */
#define MV_RING 4096     /* nodes, reused */
#define MV_INFLIGHT 1024 /* at most this many queued at once */

static struct {
    tpi_mailbox mb;
    tpi_mpsc_node nodes[MV_RING];
    _Atomic uint32_t popped; /* raised before each pop */
    long low;                /* counts read too low */
    long worst;              /* by how much, at worst */
} MV;

/* Pushes like a sender on another thread, and reads the count after each
 * push, as a sender does to decide whether to pause. */
static void *mv_producer(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < MV_TOTAL; i++) {
        while (i - atomic_load(&MV.popped) >= MV_INFLIGHT)
            sched_yield(); /* the consumer catches up */
        tpi_mailbox_push_remote(&MV.mb, &MV.nodes[i % MV_RING]);
        for (int k = 0; k < MV_READS; k++) {
            uint32_t v = tpi_mailbox_count(&MV.mb);
            /* acquire, after the count: at most c1 of our i + 1 messages
             * were popped by the time it was read, so at least the rest
             * were in. */
            uint32_t c1 = atomic_load(&MV.popped);
            long surely = (long)(i + 1) - (long)c1;
            if ((long)v < surely) {
                MV.low++;
                if (surely - (long)v > MV.worst)
                    MV.worst = surely - (long)v;
            }
        }
    }
    return NULL;
}

/* The receiver: moves the remote messages into its local FIFO and pops
 * them. */
static void *mv_consumer(void *arg)
{
    (void)arg;
    uint32_t n = 0;
    while (n < MV_TOTAL) {
        tpi_mailbox_take_remote(&MV.mb);
        while (!tpi_mailbox_local_empty(&MV.mb)) {
            atomic_store(&MV.popped, ++n);
            tpi_mailbox_pop(&MV.mb);
        }
    }
    return NULL;
}

/* A sender on another thread reads the receiver's count after each push
 * while the receiver moves remote messages into its local FIFO and pops
 * them: the count is never lower than the messages surely there (pushed,
 * and not popped before it was read). A count split between the two
 * queues, and moved from one to the other, used to read low by the
 * batch being moved. */
static void test_count_never_low_while_moving(void **unused)
{
    (void)unused;
    memset(&MV, 0, sizeof MV);
    tpi_mailbox_init(&MV.mb, TPI_MAILBOX_UNBOUNDED);
    pthread_t prod, cons;
    assert_int_equal(pthread_create(&cons, NULL, mv_consumer, NULL), 0);
    assert_int_equal(pthread_create(&prod, NULL, mv_producer, NULL), 0);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    print_message("count while moving: %d pushes, %ld counts too low (by up "
                  "to %ld)\n",
                  MV_TOTAL, MV.low, MV.worst);
    assert_int_equal(tpi_mailbox_count(&MV.mb), 0);
    assert_int_equal(MV.low, 0);
}

/* ------------------------------------------- a drain that came too early */

#define SD_SENDERS 4
#define SD_CAP 4
#define SD_EACH 200 /* messages per sender */
#define SD_TAG_TICK 90

static struct {
    tp_runtime *rt;
    tp_pid recv, senders[SD_SENDERS];
    atomic_int go;    /* the senders may start */
    int hook_calls;   /* the receiver's drain hook (its thread only) */
    int waits_failed; /* a wait below gave up */
    bool check_next;  /* the receiver's next message waits first */
    long got;
    tpi_resource res;
    tp_actor_info end;
    int info_rc;
} SD;

/* Have all the senders paused (backpressure) on the receiver? Reads the
 * runtime's own flags: the senders run on the other scheduler. */
static bool sd_all_paused(void)
{
    for (int i = 0; i < SD_SENDERS; i++) {
        tpi_actor *a = tpi_table_slot(SD.rt->table, SD.senders[i]);
        if (!atomic_load(&a->paused))
            return false;
    }
    return true;
}

/* Wait (on the receiver's thread, briefly) until the senders on the other
 * thread have all paused; gives up after 20 s. */
static void sd_wait_all_paused(void)
{
    double t0 = tpt_now_ms();
    while (!sd_all_paused()) {
        if (tpt_now_ms() - t0 > 20000) {
            SD.waits_failed++;
            return;
        }
        sched_yield();
    }
}

/* The receiver's resource: told at the end of each turn that took its
 * mailbox below capacity, just before its paused senders are resumed. The
 * first time, it lets the senders go and holds the receiver's thread until
 * they have filled the mailbox again and all paused on it: they paused
 * after the drain was decided, so they must not be resumed by it. */
static void sd_drained(tpi_resource *r)
{
    (void)r;
    if (SD.hook_calls++ != 0)
        return;
    atomic_store(&SD.go, 1);
    sd_wait_all_paused();
    SD.check_next = true;
}

static void sd_close(tpi_resource *r) { (void)r; }

static int sd_receiver(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        SD.rt = tp_ctx_runtime(ctx);
        SD.res = (tpi_resource){.drained = sd_drained, .close = sd_close};
        EXPECT_EQ(tpi_svc_attach(ctx, tp_self(ctx), &SD.res, NULL), 0);
        /* Fill its own mailbox to capacity: the turn that takes the first
         * of these drains it below. */
        for (int i = 0; i < SD_CAP; i++)
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_DATA, NULL, 0), 0);
        return TP_HANDLED;
    }
    if (SD.check_next) {
        /* If the drain resumed them anyway, they each send once more and
         * pause again: wait for that, so the mailbox's high-water mark,
         * sampled at the end of this turn, shows it. */
        SD.check_next = false;
        sd_wait_all_paused();
    }
    if (tp_msg_tag(msg) == TAG_DATA &&
        ++SD.got == SD_CAP + SD_SENDERS * SD_EACH) {
        SD.info_rc = tp_actor_info_get(SD.rt, tp_self(ctx), &SD.end);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

typedef struct sd_sender {
    int sent;
} sd_sender;

static sd_sender sd_senders[SD_SENDERS];

/* Waits (going round through its own mailbox) for the go, then sends one
 * message per behavior call to the receiver. A pending timer pins it to
 * its scheduler, the other one than the receiver's. */
static int sd_sender_b(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sd_sender *s = state;
    if (tp_msg_tag(msg) == SD_TAG_TICK) /* never: an hour away */
        return TP_HANDLED;
    if (tp_msg_tag(msg) == TP_TAG_START)
        EXPECT_EQ(tp_send_after(ctx, 3600000, SD_TAG_TICK, NULL, 0, NULL), 0);
    if (atomic_load(&SD.go)) {
        EXPECT_EQ(tp_send(ctx, SD.recv, TAG_DATA, NULL, 0), 0);
        if (++s->sent == SD_EACH)
            return tp_exit(ctx, TP_REASON_NORMAL);
    }
    EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_CONT, NULL, 0), 0);
    return TP_HANDLED;
}

static int sd_filler(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    (void)msg;
    return tp_exit(ctx, TP_REASON_NORMAL);
}

/* The soft bound (capacity + one behavior call's sends per sender) also
 * holds when senders on another thread refill the mailbox and pause on it
 * between the moment its scheduler sees it drained below capacity and the
 * moment that scheduler resumes the paused senders: those that paused on
 * the full mailbox stay paused until the next drain. Two scheduler
 * threads; the receiver's drain hook (a resource, as sockets use) holds
 * that moment open. The mailbox of 4 must never hold more than 4 + 4. */
static void test_drain_resumes_no_late_pauser(void **unused)
{
    (void)unused;
    memset(&SD, 0, sizeof SD);
    memset(sd_senders, 0, sizeof sd_senders);
    tpt_reset();
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 2;
    cfg.batch = 1;
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(&cfg, &rt), 0);
    /* Spawns from outside go round robin: the receiver on scheduler 0,
     * each sender on scheduler 1 (a filler that ends at once between
     * two). */
    tp_spawn_opts ro = {.mailbox_capacity = SD_CAP, .flags = TP_SPAWN_OBSERVE};
    assert_int_equal(tp_runtime_spawn(rt, sd_receiver, NULL, &ro, &SD.recv), 0);
    for (int i = 0; i < SD_SENDERS; i++) {
        if (i)
            assert_int_equal(tp_runtime_spawn(rt, sd_filler, NULL, NULL,
                                              &(tp_pid){0}),
                             0);
        assert_int_equal(tp_runtime_spawn(rt, sd_sender_b, &sd_senders[i], NULL,
                                          &SD.senders[i]),
                         0);
    }
    tpt_watchdog(1);
    assert_int_equal(tp_run(rt, quit_root, NULL, NULL), 0);
    tpt_watchdog(0);
    tp_runtime_free(rt);
    TPT_CHECK();
    assert_int_equal(SD.waits_failed, 0);
    assert_true(SD.hook_calls > 1);
    assert_int_equal(SD.got, SD_CAP + SD_SENDERS * SD_EACH);
    assert_int_equal(SD.info_rc, 0);
    print_message("late pausers: high-water mark %llu (capacity %d + %d "
                  "senders)\n",
                  (unsigned long long)SD.end.mailbox_hwm, SD_CAP, SD_SENDERS);
    assert_true(SD.end.mailbox_hwm <= SD_CAP + SD_SENDERS);
}

/* ------------------------------- an exit signal during the pausing turn */

/* A sends to T, which is congested (full for its senders), so A pauses
 * once its turn ends; while that turn still runs, another thread sends A
 * an exit signal. The sender finds A not paused yet, so it cannot resume
 * it: A must see the signal itself and not park. Before, A parked with
 * the signal in its mailbox until T drained (here: a 2 s timer), and a
 * kill or a linked crash never reached an actor paused on a hung peer. */
enum { E_READY = 200, E_UNCONGEST, E_GIVEUP };

typedef struct exitpause {
    tp_runtime *rt;
    tp_pid root, t, a;
    pthread_t killer;
    atomic_int mid, sent;
    bool down, down_before_uncongest, uncongested;
    tp_reason why;
} exitpause;

static int ep_t(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    exitpause *e = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tpi_svc_congest(e->rt, tp_self(ctx), true), 0);
        EXPECT_EQ(tp_send(ctx, e->a, E_READY, NULL, 0), 0);
        break;
    case E_UNCONGEST:
        EXPECT_EQ(tpi_svc_congest(e->rt, tp_self(ctx), false), 0);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int ep_a(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    exitpause *e = state;
    if (tp_msg_tag(msg) != E_READY)
        return TP_HANDLED;
    EXPECT_EQ(tp_send(ctx, e->t, 1, NULL, 0), 0); /* pauses A after */
    atomic_store(&e->mid, 1);
    double t0 = tpt_now_ms();
    while (!atomic_load(&e->sent) && tpt_now_ms() - t0 < 10000)
        sched_yield();
    return TP_HANDLED;
}

static void *ep_killer(void *arg)
{
    exitpause *e = arg;
    double t0 = tpt_now_ms();
    while (!atomic_load(&e->mid) && tpt_now_ms() - t0 < 10000)
        sched_yield();
    EXPECT_EQ(tp_runtime_exit_signal(e->rt, e->a, TP_REASON_ERROR(1, "x")), 0);
    atomic_store(&e->sent, 1);
    return NULL;
}

static int ep_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    exitpause *e = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        e->rt = tp_ctx_runtime(ctx);
        e->root = tp_self(ctx);
        EXPECT_EQ(tp_spawn(ctx, ep_a, e, NULL, &e->a), 0);
        EXPECT_EQ(tp_monitor(ctx, e->a, NULL), 0);
        EXPECT_EQ(pthread_create(&e->killer, NULL, ep_killer, e), 0);
        EXPECT_EQ(tp_spawn(ctx, ep_t, e, NULL, &e->t), 0);
        tp_send_after(ctx, 2000, E_GIVEUP, NULL, 0, NULL);
        break;
    case TP_TAG_DOWN:
        e->down = true;
        e->down_before_uncongest = !e->uncongested;
        EXPECT_EQ(tp_msg_reason(msg, &e->why), 0);
        e->why.text = NULL;
        /* fall through */
    case E_GIVEUP:
        if (!e->uncongested) {
            e->uncongested = true;
            tp_send(ctx, e->t, E_UNCONGEST, NULL, 0);
        }
        if (e->down) {
            pthread_join(e->killer, NULL);
            return tp_exit(ctx, TP_REASON_NORMAL);
        }
        break;
    }
    return TP_HANDLED;
}

static void test_exit_signal_while_pausing(void **unused)
{
    (void)unused;
    static exitpause e;
    memset(&e, 0, sizeof e);
    tp_config cfg;
    tp_config_init(&cfg);
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, ep_root, &e, NULL, NULL), 0);
    TPT_CHECK();
    assert_true(e.down);
    assert_true(e.down_before_uncongest);
    assert_int_equal(e.why.kind, TP_EXIT_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backpressure_flood), /* first: clean RSS */
        cmocka_unit_test(test_fifo_per_sender),
        cmocka_unit_test(test_mutual_flood_no_deadlock),
        cmocka_unit_test(test_defer_and_become),
        cmocka_unit_test(test_defer_system_messages),
        cmocka_unit_test(test_send_copies_and_moves),
        cmocka_unit_test(test_int_messages),
        cmocka_unit_test(test_try_send_full),
        cmocka_unit_test(test_blocking_send_from_threads),
        cmocka_unit_test(test_blocking_send_capacity_exact),
        cmocka_unit_test(test_count_never_low_while_moving),
        cmocka_unit_test(test_drain_resumes_no_late_pauser),
        cmocka_unit_test(test_exit_signal_while_pausing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
