/*
 * The scheduler loop serving sockets (runtime/sched.c, tpi_sched_init):
 * one poll per round of ready sockets, not one per event, sockets and
 * timers still served while actors are always runnable, and no poll at
 * all between batches while nothing else is on the loop; the busy wait.
 * Polls are counted by wrapping epoll_wait (libevent calls it through the
 * PLT, so this program's definition is the one it reaches), wake-ups by
 * wrapping write (eventfd writes). One scheduler thread.
 */
#include "tp_test.h"
#include "io/io_test.h"
#include "troupe/net.h"

#include <dlfcn.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* Polls made by this thread (the scheduler runs on tp_run's thread); of
 * them, those that could not block (timeout 0), and when the last of
 * those began. */
static _Thread_local unsigned long polls, polls_nonblocking;
static _Thread_local double last_nonblocking_ms;

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    typedef int (*fn)(int, struct epoll_event *, int, int);
    static _Atomic(fn) real;
    /* relaxed: every thread finds the same function. */
    fn f = atomic_load_explicit(&real, memory_order_relaxed);
    if (!f) {
        f = (fn)dlsym(RTLD_NEXT, "epoll_wait");
        atomic_store_explicit(&real, f, memory_order_relaxed);
    }
    polls++;
    if (timeout == 0) {
        polls_nonblocking++;
        last_nonblocking_ms = tpt_now_ms();
    }
    return f(epfd, events, maxevents, timeout);
}

/* Writes to an eventfd (a scheduler's wake-up), by any thread. */
static _Atomic unsigned long wake_writes;

static bool is_eventfd(int fd)
{
    char path[32], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0)
        return false;
    link[n] = 0;
    return strcmp(link, "anon_inode:[eventfd]") == 0;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    typedef ssize_t (*fn)(int, const void *, size_t);
    static _Atomic(fn) real;
    /* relaxed: every thread finds the same function. */
    fn f = atomic_load_explicit(&real, memory_order_relaxed);
    if (!f) {
        f = (fn)dlsym(RTLD_NEXT, "write");
        atomic_store_explicit(&real, f, memory_order_relaxed);
    }
    if (n == sizeof(uint64_t) && is_eventfd(fd))
        /* relaxed: a count, read after the threads are joined. */
        atomic_fetch_add_explicit(&wake_writes, 1, memory_order_relaxed);
    return f(fd, buf, n);
}

enum { TAG_HELLO = 1, TAG_ECHOED, TAG_DONE, TAG_PING, TAG_TICK };

/* Read exactly n bytes within ms milliseconds: 0, or -1. */
static int read_all(int fd, char *buf, size_t n, int ms)
{
    double t0 = tpt_now_ms();
    size_t got = 0;
    while (got < n) {
        int left = ms - (int)(tpt_now_ms() - t0);
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, left) != 1)
            return -1;
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Echo connection; with a root pid as its state, it tells the root when
 * it starts and after each echo. */
static int echo_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_pid *root = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        if (root)
            tp_send(ctx, *root, TAG_HELLO, NULL, 0);
        break;
    case TP_NET_DATA: {
        const void *p;
        size_t n;
        EXPECT_EQ(tp_msg_scanf(msg, "y", &p, &n), 0);
        EXPECT_EQ(tp_conn_write(ctx, p, n), 0);
        if (root)
            tp_send(ctx, *root, TAG_ECHOED, NULL, 0);
        break;
    }
    case TP_NET_CLOSED: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

static tp_config one_thread(void)
{
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 1;
    return cfg;
}

/* ------------------------------------------------- a poll per round */

#define NCONN 64
#define ROUNDS 20
#define MSG_LEN 16

typedef struct rounds {
    tp_pid self;
    int fds[NCONN];
    int hello, echoed, round;
    unsigned long polls0, polls;
} rounds;

static void start_round(rounds *r)
{
    char out[MSG_LEN];
    memset(out, 'a' + r->round % 26, sizeof out);
    for (int i = 0; i < NCONN; i++)
        EXPECT_EQ(send(r->fds[i], out, sizeof out, MSG_NOSIGNAL), MSG_LEN);
}

static int rounds_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    rounds *r = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        r->self = tp_self(ctx);
        tp_listen_opts o = {0};
        o.conn_behavior = echo_conn;
        o.arg = &r->self;
        uint16_t port;
        int rc = tp_listen(ctx, &o, NULL, &port);
        EXPECT_EQ(rc, 0);
        if (rc)
            return tp_exit(ctx, TP_REASON_NORMAL);
        /* The backlog takes them: connect completes before any accept. */
        for (int i = 0; i < NCONN; i++)
            EXPECT((r->fds[i] = connect_tcp(port)) >= 0);
        break;
    }
    case TAG_HELLO:
        if (++r->hello == NCONN) {
            r->polls0 = polls;
            start_round(r);
        }
        break;
    case TAG_ECHOED: {
        if (++r->echoed < NCONN)
            break;
        /* Every echo was written before its TAG_ECHOED was sent. */
        char in[MSG_LEN], want[MSG_LEN];
        memset(want, 'a' + r->round % 26, sizeof want);
        for (int i = 0; i < NCONN; i++) {
            EXPECT_EQ(read_all(r->fds[i], in, sizeof in, 5000), 0);
            EXPECT(memcmp(in, want, sizeof in) == 0);
        }
        r->echoed = 0;
        if (++r->round < ROUNDS) {
            start_round(r);
            break;
        }
        r->polls = polls - r->polls0;
        for (int i = 0; i < NCONN; i++)
            close(r->fds[i]);
        return tp_exit(ctx, TP_REASON_SHUTDOWN);
    }
    }
    return TP_HANDLED;
}

/* 64 connections get a request at once, 20 times: the loop polls a few
 * times per round (libevent reports up to 32 events per poll at first),
 * and never once per ready socket, as it did with a limit of one
 * callback between polls (over 64 polls per round). */
static void test_poll_per_round(void **unused)
{
    static rounds r;
    memset(&r, 0, sizeof r);
    tp_config cfg = one_thread();
    tpt_reset();
    tpt_result res;
    assert_int_equal(tpt_run(&cfg, rounds_root, &r, NULL, &res), 0);
    TPT_CHECK();
    assert_int_equal(r.round, ROUNDS);
    unsigned long replies = (unsigned long)NCONN * ROUNDS;
    print_message("%lu polls for %lu replies\n", r.polls, replies);
    assert_true(r.polls > 0);
    assert_true(r.polls * 8 < replies);
}

/* -------------------------------------------------------- fairness */

#define FLOOD_PAIRS 4
#define ECHOES 200
#define LATENCY_BOUND_MS 1000

typedef struct fair {
    tp_runtime *rt;
    tp_pid self;
    uint16_t port;
    pthread_t client;
    int ticks; /* timer messages */
    /* ... of them while the client ran; the client reads it (relaxed: a
     * count, nothing else is published through it) */
    _Atomic int ticks_during;
    bool client_running;
    int answered;
    double max_ms;
    _Atomic unsigned long pings;
    struct flood_pair *pairs;
} fair;

typedef struct flood_pair {
    fair *f;
    tp_pid a, b;
} flood_pair;

/* Two of these pass a message back and forth forever: always runnable. */
static int flooder(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    flood_pair *p = state;
    if (tp_msg_tag(msg) == TAG_PING) {
        /* relaxed: a count read after the run. */
        atomic_fetch_add_explicit(&p->f->pings, 1, memory_order_relaxed);
        tp_send(ctx, tp_self(ctx) == p->a ? p->b : p->a, TAG_PING, NULL, 0);
    }
    return TP_HANDLED;
}

static void *fair_client(void *arg)
{
    fair *f = arg;
    int fd = connect_tcp(f->port);
    char out[MSG_LEN] = "0123456789abcdef", in[MSG_LEN];
    /* ECHOES at least, and on until the timer fired a few times meanwhile
     * (on a quiet machine the echoes alone take less than one tick). */
    for (int i = 0; fd >= 0 && (i < ECHOES ||
                                atomic_load_explicit(&f->ticks_during,
                                                     memory_order_relaxed) < 3);
         i++) {
        double t0 = tpt_now_ms();
        if (send(fd, out, sizeof out, MSG_NOSIGNAL) != MSG_LEN ||
            read_all(fd, in, sizeof in, 10000) != 0 ||
            memcmp(in, out, sizeof in) != 0)
            break;
        double ms = tpt_now_ms() - t0;
        if (ms > f->max_ms)
            f->max_ms = ms;
        f->answered++;
    }
    if (fd >= 0)
        close(fd);
    tp_runtime_send(f->rt, f->self, TAG_DONE, NULL, 0);
    return NULL;
}

static int fair_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fair *f = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        f->rt = tp_ctx_runtime(ctx);
        f->self = tp_self(ctx);
        tp_listen_opts o = {0};
        o.conn_behavior = echo_conn; /* arg NULL: no reports */
        int rc = tp_listen(ctx, &o, NULL, &f->port);
        EXPECT_EQ(rc, 0);
        if (rc)
            return tp_exit(ctx, TP_REASON_NORMAL);
        tp_spawn_opts so = {0, TP_SPAWN_LINK, NULL};
        for (int i = 0; i < FLOOD_PAIRS; i++) {
            flood_pair *p = &f->pairs[i];
            p->f = f;
            EXPECT_EQ(tp_spawn(ctx, flooder, p, &so, &p->a), 0);
            EXPECT_EQ(tp_spawn(ctx, flooder, p, &so, &p->b), 0);
            EXPECT_EQ(tp_send(ctx, p->a, TAG_PING, NULL, 0), 0);
        }
        tp_send_after(ctx, 5, TAG_TICK, NULL, 0, NULL);
        f->client_running = true;
        EXPECT_EQ(pthread_create(&f->client, NULL, fair_client, f), 0);
        break;
    }
    case TAG_TICK:
        f->ticks++;
        atomic_fetch_add_explicit(&f->ticks_during, f->client_running,
                                  memory_order_relaxed);
        tp_send_after(ctx, 5, TAG_TICK, NULL, 0, NULL);
        break;
    case TAG_DONE:
        f->client_running = false;
        pthread_join(f->client, NULL);
        /* shutdown reaches the flooders and the listener over links */
        return tp_exit(ctx, TP_REASON_SHUTDOWN);
    }
    return TP_HANDLED;
}

/* Four pairs of actors flood each other forever on the only scheduler;
 * meanwhile a socket client gets every echo with bounded latency and a
 * timer keeps firing. With libevent's defaults (no poll while a callback
 * keeps re-activating itself) the client would get no answer at all. */
static void test_sockets_served_while_flooded(void **unused)
{
    static fair f;
    static flood_pair pairs[FLOOD_PAIRS];
    memset(&f, 0, sizeof f);
    memset(pairs, 0, sizeof pairs);
    f.pairs = pairs;
    tp_config cfg = one_thread();
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, fair_root, &f, NULL, NULL), 0);
    TPT_CHECK();
    print_message("%d echoes, max latency %.2f ms, %d ticks, %lu pings\n",
                  f.answered, f.max_ms, atomic_load(&f.ticks_during),
                  atomic_load(&f.pings));
    assert_true(f.answered >= ECHOES);
    assert_true(f.max_ms < LATENCY_BOUND_MS);
    assert_true(atomic_load(&f.ticks_during) >= 3);
    assert_true(atomic_load(&f.pings) > 10000); /* they did flood */
}

/* --------------------------------------------------- a quiet loop */

#define QUIET_PINGS 200000 /* pings before the timer is armed */

typedef struct quiet {
    tp_pid root, a, b;
    unsigned long pings, polls_flood, pings_at_tick;
} quiet;

/* A pair flooding each other with nothing else on the loop: the batches
 * go on without a poll. Then one arms a timer, which must still fire
 * while they flood (the loop is no longer quiet). */
static int quiet_flooder(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    quiet *q = state;
    bool a = tp_self(ctx) == q->a;
    switch (tp_msg_tag(msg)) {
    case TAG_PING:
        if (a && ++q->pings == QUIET_PINGS) {
            q->polls_flood = polls; /* since the run began */
            EXPECT_EQ(tp_send_after(ctx, 5, TAG_TICK, NULL, 0, NULL), 0);
        }
        tp_send(ctx, a ? q->b : q->a, TAG_PING, NULL, 0);
        break;
    case TAG_TICK:
        q->pings_at_tick = q->pings;
        tp_send(ctx, q->root, TAG_DONE, NULL, 0);
        break;
    }
    return TP_HANDLED;
}

static int quiet_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    quiet *q = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        q->root = tp_self(ctx);
        tp_spawn_opts so = {0, TP_SPAWN_LINK, NULL};
        EXPECT_EQ(tp_spawn(ctx, quiet_flooder, q, &so, &q->a), 0);
        EXPECT_EQ(tp_spawn(ctx, quiet_flooder, q, &so, &q->b), 0);
        EXPECT_EQ(tp_send(ctx, q->a, TAG_PING, NULL, 0), 0);
    } else if (tp_msg_tag(msg) == TAG_DONE) {
        return tp_exit(ctx, TP_REASON_SHUTDOWN); /* ends the pair too */
    }
    return TP_HANDLED;
}

static void test_quiet_loop_runs_without_polls(void **unused)
{
    (void)unused;
    static quiet q;
    memset(&q, 0, sizeof q);
    tp_config cfg = one_thread();
    tpt_reset();
    polls = 0;
    assert_int_equal(tpt_run(&cfg, quiet_root, &q, NULL, NULL), 0);
    TPT_CHECK();
    print_message("%lu pings, %lu polls meanwhile, tick after %lu pings\n",
                  q.pings, q.polls_flood, q.pings_at_tick);
    /* 400,000 turns: one poll per 256 would be over 1,500. The root's
     * start and the first batch may poll a few times. */
    assert_true(q.polls_flood < 20);
    /* The timer fired while the pair still flooded. */
    assert_true(q.pings_at_tick > QUIET_PINGS);
}

/* --------------------------------------------------- the busy wait */

#define IDLE_MS 300 /* the root's timer: a pause with nothing to do */
#define SENDS 40    /* messages from a plain thread, one per SEND_GAP_MS */
#define SEND_GAP_MS 5

typedef struct pause {
    unsigned long polls0, nonblocking0;
    double start_ms, cpu0_ms;
    unsigned long blocking, nonblocking; /* polls during the pause */
    double spun_ms, cpu_ms; /* last non-blocking poll after the start; CPU */
    tp_runtime *rt;
    tp_pid self;
    int got;
    unsigned busy_wait_us; /* run_fed's runtime */
    unsigned long wakes;   /* eventfd writes while run_fed's sender sent */
    int sent;              /* its sender is done */
} pause_t;

static double thread_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void pause_begin(pause_t *p)
{
    p->polls0 = polls;
    p->nonblocking0 = polls_nonblocking;
    p->start_ms = tpt_now_ms();
    p->cpu0_ms = thread_cpu_ms();
}

static void pause_end(pause_t *p)
{
    p->cpu_ms = thread_cpu_ms() - p->cpu0_ms;
    p->nonblocking = polls_nonblocking - p->nonblocking0;
    p->blocking = polls - p->polls0 - p->nonblocking;
    p->spun_ms = p->nonblocking ? last_nonblocking_ms - p->start_ms : 0;
}

/* One turn, then a pause of IDLE_MS with nothing to do but a timer. */
static int pause_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    pause_t *p = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_send_after(ctx, IDLE_MS, TAG_TICK, NULL, 0, NULL), 0);
        pause_begin(p);
    } else if (tp_msg_tag(msg) == TAG_TICK) {
        pause_end(p);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static pause_t run_pause(unsigned busy_wait_us)
{
    pause_t p = {0};
    tp_config cfg = one_thread();
    cfg.busy_wait_us = busy_wait_us;
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, pause_root, &p, NULL, NULL), 0);
    TPT_CHECK();
    print_message("busy wait %u us: %lu non-blocking polls over %.1f ms, "
                  "%lu blocking, %.1f ms CPU in a %d ms pause\n",
                  busy_wait_us, p.nonblocking, p.spun_ms, p.blocking, p.cpu_ms,
                  IDLE_MS);
    return p;
}

/* After a turn the loop polls without blocking for the busy wait, then
 * sleeps in the poll until its timer: it does not spin through the whole
 * pause. */
static void test_busy_wait_then_sleep(void **unused)
{
    (void)unused;
    pause_t p = run_pause(20000);
    assert_true(p.nonblocking > 0);
    assert_true(p.spun_ms >= 15); /* about the 20 ms asked for */
    assert_true(p.spun_ms < IDLE_MS / 2);
    assert_true(p.blocking >= 1);
    assert_true(p.cpu_ms < IDLE_MS / 2);
}

/* busy_wait_us = 0: the loop sleeps in the poll as soon as it is idle. */
static void test_busy_wait_off(void **unused)
{
    (void)unused;
    pause_t p = run_pause(0);
    assert_int_equal(p.nonblocking, 0);
    assert_true(p.blocking >= 1);
}

/* Work that arrives during the busy wait restarts it: messages from a
 * plain thread every SEND_GAP_MS, well within a 100 ms busy wait, keep
 * the loop from ever sleeping, although they go on for twice as long as
 * one busy wait. */
static void *sender(void *arg)
{
    pause_t *p = arg;
    for (int i = 0; i < SENDS; i++) {
        struct timespec gap = {0, SEND_GAP_MS * 1000000L};
        nanosleep(&gap, NULL);
        EXPECT_EQ(tp_runtime_send(p->rt, p->self, TAG_PING, NULL, 0), 0);
    }
    /* release: our calls on rt are over before the runner frees it. */
    __atomic_store_n(&p->sent, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int awake_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    pause_t *p = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        pause_begin(p);
        p->rt = tp_ctx_runtime(ctx);
        /* release: publishes rt to the test's thread (its acquire). */
        __atomic_store_n(&p->self, tp_self(ctx), __ATOMIC_RELEASE);
    } else if (tp_msg_tag(msg) == TAG_PING && ++p->got == SENDS) {
        pause_end(p);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* The run ends at the last message, maybe while its sender is still in
 * tp_runtime_send: the runtime is freed once the sender is done. */
static void *run_awake(void *arg)
{
    pause_t *p = arg;
    tp_config cfg = one_thread();
    cfg.busy_wait_us = p->busy_wait_us;
    tp_runtime *rt = NULL;
    EXPECT_EQ(tp_runtime_new(&cfg, &rt), 0);
    tpt_watchdog(1);
    EXPECT_EQ(tp_run(rt, awake_root, p, NULL), 0);
    tpt_watchdog(0);
    /* acquire: pairs with the sender's release. */
    while (!__atomic_load_n(&p->sent, __ATOMIC_ACQUIRE))
        sched_yield();
    tp_runtime_free(rt);
    return NULL;
}

/* SENDS messages from a plain thread, SEND_GAP_MS apart, to a runtime
 * with this busy wait; the eventfd writes counted meanwhile in p->wakes. */
static void run_fed(pause_t *p, unsigned busy_wait_us)
{
    memset(p, 0, sizeof *p);
    p->busy_wait_us = busy_wait_us;
    tpt_reset();
    pthread_t runner, feeder;
    assert_int_equal(pthread_create(&runner, NULL, run_awake, p), 0);
    /* acquire: pairs with the root's release of self, after rt. */
    while (!__atomic_load_n(&p->self, __ATOMIC_ACQUIRE))
        sched_yield();
    unsigned long w0 = atomic_load(&wake_writes);
    assert_int_equal(pthread_create(&feeder, NULL, sender, p), 0);
    pthread_join(feeder, NULL);
    p->wakes = atomic_load(&wake_writes) - w0;
    pthread_join(runner, NULL);
    TPT_CHECK();
    print_message("busy wait %u us: %lu non-blocking polls, %lu blocking, "
                  "%lu eventfd writes over %d sends\n",
                  busy_wait_us, p->nonblocking, p->blocking, p->wakes, SENDS);
    assert_int_equal(p->got, SENDS);
}

static void test_busy_wait_restarts_with_work(void **unused)
{
    (void)unused;
    static pause_t p;
    run_fed(&p, 100000);
    assert_int_equal(p.blocking, 0);
}

/* A loop in its busy wait looks at the wake-up flag between polls: the
 * senders do not write its eventfd (a system call each, and an event for
 * the loop to read), where a sleeping loop needs one write per wake-up. */
static void test_busy_wait_needs_no_wake_writes(void **unused)
{
    (void)unused;
    static pause_t p;
    run_fed(&p, 100000);
    assert_true(p.wakes <= 2);
    run_fed(&p, 0);
    assert_true(p.wakes >= SENDS / 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poll_per_round),
        cmocka_unit_test(test_sockets_served_while_flooded),
        cmocka_unit_test(test_quiet_loop_runs_without_polls),
        cmocka_unit_test(test_busy_wait_then_sleep),
        cmocka_unit_test(test_busy_wait_off),
        cmocka_unit_test(test_busy_wait_restarts_with_work),
        cmocka_unit_test(test_busy_wait_needs_no_wake_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
