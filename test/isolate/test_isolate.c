/*
 * Isolated workers (issue 7): the message API inside a worker process
 * (tp_self, replies with the caller's reference, sends, timers, exits);
 * each way a worker dies (SIGSEGV, SIGABRT, SIGKILL, exit(3), exit(0), in
 * the middle of a frame, channel closed) reaching a link, a monitor and
 * the caller of a request in flight with the right reason; bad frames
 * (garbage, truncated, 2^32-1 length, count bombs, 10,000 nested headers,
 * 0xc1) refused before any large allocation while another worker keeps
 * serving; the watchdog; RLIMIT_AS and RLIMIT_CPU; a supervised worker
 * crashed and restarted 100 times with the parent's descriptor and child
 * counts unchanged; a pool that keeps serving while its workers crash.
 * Issue 14, a worker is untrusted code: it may not send a reserved tag
 * (its supervisor's stop request) nor write to a pid it was not given;
 * the watchdog times single messages and replies leave at once; senders
 * toward a blocked worker are paused, not buffered without bound; a
 * worker over its memory limit says so; a pool that gives up says why.
 * After every run no child process is left (no zombie).
 *
 * This program is its own worker: main registers the isolated behaviors
 * and calls tp_isolate_main first.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tp_test.h"
#include "troupe/isolate.h"
#include "troupe/observe.h"
#include "troupe/supervisor.h"

enum {
    T_ECHO = 1,
    T_SELF,
    T_SEND,
    T_NOREPLY,
    T_LATER,
    T_LATER_FIRE,
    T_EXIT,
    T_EXIT_ERR,
    T_SEGV,
    T_ABORT,
    T_KILL,
    T_EXIT3,
    T_EXIT0,
    T_CLOSE,
    T_MIDFRAME,
    T_RAW,
    T_SPIN,
    T_ALLOC,
    T_SLEEP,
    T_HELLO,
    T_DEFER,
    T_BECOME,
    T_STARTS,
    T_SUPSTOP,
    T_BLOCK,
    T_COUNT,
    T_COUNTED,
    T_GO,
    T_DONE,
    T_POLL,
    T_LEAK,
    T_EXEC_SEGV,
    T_GIVEUP,
};

/* ASan and TSan reserve terabytes of address space up front, so workers
 * under RLIMIT_AS cannot start in those builds. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_ASAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* ------------------------------------------------- the worker behaviors */

static tp_reply_handle *later; /* worker process: a taken obligation */
static int starts;             /* worker process: TP_TAG_START seen */
static tp_pid start_from;
static int64_t counted; /* worker process: T_COUNT messages seen */

/* A FIFO's path in the payload: wait until a byte can be read from it
 * (the test writes one when it has seen what it waits for). */
static int block_on_fifo(const tp_msg *msg)
{
    const char *path;
    size_t n;
    char buf[256];
    if (tp_msg_scanf(msg, "S", &path, &n) != 0 || n >= sizeof buf)
        return TP_EPROTO;
    memcpy(buf, path, n);
    buf[n] = '\0';
    int fd = open(buf, O_RDONLY);
    char c;
    if (fd < 0 || read(fd, &c, 1) != 1)
        return TP_ESYS;
    close(fd);
    return TP_HANDLED;
}

static int deferring(tp_ctx *ctx, void *state, const tp_msg *msg);

static int tw(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        starts++;
        start_from = tp_msg_from(msg);
        return TP_HANDLED;
    case T_ECHO: return tp_reply(ctx, msg, data, len);
    case T_SELF: /* [self, from, ref, start_from, starts] */ {
        void *buf;
        size_t n;
        tp_packf(&buf, &n, "[p p u p i]", tp_self(ctx), tp_msg_from(msg),
                 (uint64_t)tp_msg_ref(msg), start_from, starts);
        int rc = tp_reply(ctx, msg, buf, n);
        tp_free(buf);
        return rc;
    }
    case T_SEND: { /* payload: a pid to greet with our pid */
        tp_pid to = 0;
        if (tp_msg_scanf(msg, "p", &to) != 0)
            return TP_EPROTO;
        return tp_sendf(ctx, to, T_HELLO, "p", tp_self(ctx));
    }
    case T_NOREPLY: return TP_HANDLED;
    case T_LATER: /* answer from a timer, 20 ms later */
        later = tp_reply_take(ctx, msg);
        if (!later)
            return TP_ENOMEM;
        return tp_send_after(ctx, 20, T_LATER_FIRE, NULL, 0, NULL);
    case T_LATER_FIRE: return tp_reply_send(ctx, later, "\x07", 1);
    case T_EXIT: return tp_exit(ctx, TP_REASON_NORMAL);
    case T_EXIT_ERR:
        return tp_exit(ctx, TP_REASON_ERROR(TP_EINVAL, "worker says bye"));
    case T_SEGV: raise(SIGSEGV); return TP_HANDLED;
    case T_ABORT: abort();
    case T_KILL: raise(SIGKILL); return TP_HANDLED;
    case T_EXIT3: exit(3);
    case T_EXIT0: exit(0);
    case T_CLOSE:
        close(3);
        for (;;)
            pause();
    case T_MIDFRAME: { /* half a frame, then a crash */
        static const uint8_t half[] = {0, 0, 1, 0, 0x96, 0x03, 0x01};
        (void)!write(3, half, sizeof half);
        raise(SIGSEGV);
        return TP_HANDLED;
    }
    case T_RAW: { /* payload: bin of bytes to write as they are */
        const void *raw;
        size_t n;
        if (tp_msg_scanf(msg, "y", &raw, &n) != 0)
            return TP_EPROTO;
        (void)!write(3, raw, n);
        if (n >= 4 && memcmp(raw, "\0\0\0\x64", 4) == 0)
            exit(0); /* the truncated case: end after half a frame */
        for (;;)
            pause(); /* until the parent kills us */
    }
    case T_SPIN:
        for (volatile unsigned long i = 0;; i++)
            ;
    case T_ALLOC: { /* allocate and touch 1 GiB, 16 MiB at a time */
        for (int i = 0; i < 64; i++) {
            char *p = malloc(16u << 20);
            if (!p)
                abort();
            memset(p, 1, 16u << 20);
        }
        return tp_reply_int(ctx, msg, 0);
    }
    case T_SLEEP: { /* payload: ms; replies the same */
        int64_t ms = 0;
        tp_msg_int(msg, &ms);
        usleep((useconds_t)ms * 1000);
        return tp_reply_int(ctx, msg, ms);
    }
    case T_DEFER: return tp_become(ctx, deferring);
    case T_STARTS: return tp_reply_int(ctx, msg, starts);
    case T_SUPSTOP: /* a request only the runtime's libraries may make */
        return tp_send(ctx, start_from, TP_SUP_REQ_STOP, NULL, 0);
    case T_BLOCK: return block_on_fifo(msg);
    case T_COUNT: counted++; return TP_HANDLED;
    case T_COUNTED: return tp_reply_int(ctx, msg, counted);
    case T_EXEC_SEGV: { /* start a program that outlives us; crash */
        pid_t helper = fork();
        if (helper == 0) {
            execlp("sleep", "sleep", "30", (char *)NULL);
            _exit(127);
        }
        tp_reply_int(ctx, msg, helper); /* leaves after this turn */
        return tp_send_after(ctx, 10, T_SEGV, NULL, 0, NULL);
    }
    }
    return TP_HANDLED;
}

/* A worker that dies as it starts. */
static int tw_crash(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)ctx;
    (void)state;
    if (tp_msg_tag(msg) == TP_TAG_START)
        _exit(5);
    return TP_HANDLED;
}

/* Defers every request until T_BECOME, then answers them in order. */
static int deferring(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == T_BECOME) {
        tp_become(ctx, tw);
        return tp_reply_int(ctx, msg, -1);
    }
    if (tp_msg_tag(msg) == T_ECHO)
        return TP_DEFER;
    return tw(ctx, state, msg);
}

/* ------------------------------------------------------------ helpers */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* No child process left, zombie or not. */
static void assert_no_children(void)
{
    int st;
    errno = 0;
    pid_t r = waitpid(-1, &st, WNOHANG);
    if (r != -1 || errno != ECHILD)
        fail_msg("a child process is left (waitpid: %d, errno %d)", (int)r,
                 errno);
    tp_isolate_stats s;
    tp_isolate_stats_get(&s);
    assert_int_equal(s.spawned, s.reaped);
}

static tp_isolate_opts wopts(void)
{
    return (tp_isolate_opts){.name = "tw", .flags = TP_SPAWN_LINK};
}

static bool has(const char *text, const char *needle)
{
    return text && strstr(text, needle);
}

/* --------------------------------------------------- the message API */

typedef struct api {
    tp_pid w, w2;
    tp_ref mon;
    int step, hello, defer_replies;
    tp_ref r_self, r_echo, r_noreply, r_later, r_d1, r_d2, r_become;
} api;

static int api_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    api *s = state;
    tp_isolate_opts o = wopts();
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->w), 0);
        EXPECT_EQ(tp_monitor(ctx, s->w, &s->mon), 0);
        EXPECT_EQ(tp_call(ctx, s->w, T_SELF, NULL, 0, 5000, &s->r_self), 0);
        EXPECT_EQ(tp_call(ctx, s->w, T_ECHO, "\x92\x01\xa1x", 4, 5000,
                          &s->r_echo),
                  0);
        EXPECT_EQ(tp_call(ctx, s->w, T_NOREPLY, NULL, 0, 5000, &s->r_noreply),
                  0);
        EXPECT_EQ(tp_call(ctx, s->w, T_LATER, NULL, 0, 5000, &s->r_later), 0);
        EXPECT_EQ(tp_sendf(ctx, s->w, T_SEND, "p", tp_self(ctx)), 0);
        /* Selective receive in the worker: two deferred, then become. */
        EXPECT_EQ(tp_send(ctx, s->w, T_DEFER, NULL, 0), 0);
        EXPECT_EQ(tp_call(ctx, s->w, T_ECHO, "\x01", 1, 5000, &s->r_d1), 0);
        EXPECT_EQ(tp_call(ctx, s->w, T_ECHO, "\x02", 1, 5000, &s->r_d2), 0);
        EXPECT_EQ(tp_call(ctx, s->w, T_BECOME, NULL, 0, 5000, &s->r_become), 0);
        return TP_HANDLED;
    case T_HELLO: {
        tp_pid p = 0;
        EXPECT_EQ(tp_msg_scanf(msg, "p", &p), 0);
        EXPECT_EQ(p, s->w);
        EXPECT_EQ(tp_msg_from(msg), s->w); /* forwarded by the proxy */
        s->hello++;
        break;
    }
    case TP_TAG_REPLY: {
        tp_ref r = tp_msg_ref(msg);
        size_t len;
        const uint8_t *d = tp_msg_data(msg, &len);
        if (r == s->r_self) {
            tp_pid self = 0, from = 0, sf = 0;
            uint64_t ref = 0;
            int st = 0;
            EXPECT_EQ(tp_msg_status(msg), 0);
            EXPECT_EQ(tp_msg_scanf(msg, "[p p u p i]", &self, &from, &ref, &sf,
                                   &st),
                      0);
            EXPECT_EQ(self, s->w);
            EXPECT_EQ(from, tp_self(ctx));
            EXPECT_EQ(sf, tp_self(ctx)); /* START comes from the spawner */
            EXPECT_EQ(st, 1);
        } else if (r == s->r_echo) {
            EXPECT_EQ(tp_msg_status(msg), 0);
            EXPECT_EQ(len, 4);
            EXPECT(d && memcmp(d, "\x92\x01\xa1x", 4) == 0);
        } else if (r == s->r_noreply) {
            EXPECT_EQ(tp_msg_status(msg), TP_ENOREPLY);
        } else if (r == s->r_later) {
            EXPECT_EQ(tp_msg_status(msg), 0);
            EXPECT(len == 1 && d[0] == 7);
        } else if (r == s->r_d1 || r == s->r_d2) {
            EXPECT_EQ(tp_msg_status(msg), 0);
            EXPECT_EQ(s->defer_replies, r == s->r_d1 ? 1 : 2); /* in order */
            s->defer_replies++;
        } else if (r == s->r_become) {
            EXPECT_EQ(s->defer_replies, 0); /* answered before the replay */
            s->defer_replies++;
        } else {
            EXPECT(!"unexpected reply");
        }
        s->step++;
        break;
    }
    case TP_TAG_DOWN: {
        tp_reason r;
        EXPECT_EQ(tp_msg_reason(msg, &r), 0);
        EXPECT_EQ(r.kind, TP_EXIT_ERROR);
        EXPECT_EQ(r.code, TP_EINVAL);
        EXPECT(has(r.text, "worker says bye"));
        EXPECT_EQ(s->step, 7);
        EXPECT_EQ(s->hello, 1);
        tp_exit(ctx, TP_REASON_NORMAL);
        return TP_HANDLED;
    }
    case TP_TAG_EXIT:
        return TP_HANDLED; /* trapping: checked through the monitor */
    }
    if (s->step == 7 && s->hello == 1)
        tp_send(ctx, s->w, T_EXIT_ERR, NULL, 0);
    return TP_HANDLED;
}

static void test_message_api(void **unused)
{
    (void)unused;
    tpt_reset();
    api s = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, api_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_no_children();
}

/* ------------------------------------------------ deaths, and bad frames */

typedef struct death {
    const char *label;
    int32_t tag;
    const void *raw; /* T_RAW: bytes the worker writes on its channel */
    size_t raw_len;
    int code;
    const char *text;
} death;

typedef struct deaths {
    const death *v;
    size_t n, i;
    tp_pid w, healthy;
    tp_ref mon, call, ping;
    int got, pings;
    size_t max_alloc_seen;
    bool reply_expected;
} deaths;

static atomic_size_t max_alloc;
static void *track_alloc(size_t n)
{
    size_t m = atomic_load(&max_alloc);
    while (n > m && !atomic_compare_exchange_weak(&max_alloc, &m, n))
        ;
    return malloc(n);
}
static void *track_realloc(void *p, size_t n)
{
    size_t m = atomic_load(&max_alloc);
    while (n > m && !atomic_compare_exchange_weak(&max_alloc, &m, n))
        ;
    return realloc(p, n);
}

static void check_reason(const tp_msg *msg, const death *d, const char *via)
{
    tp_reason r;
    EXPECT_EQ(tp_msg_reason(msg, &r), 0);
    EXPECT_EQ(r.kind, TP_EXIT_ERROR);
    EXPECT_EQ(r.code, d->code);
    if (!has(r.text, d->text) && !tpt_failure[0])
        snprintf(tpt_failure, sizeof tpt_failure,
                 "%s via %s: reason \"%s\", wanted \"%s\"", d->label, via,
                 r.text ? r.text : "(null)", d->text);
}

static void deaths_next(tp_ctx *ctx, deaths *s)
{
    if (s->i == s->n) {
        tp_kill(ctx, s->healthy);
        tp_exit(ctx, TP_REASON_NORMAL);
        return;
    }
    const death *d = &s->v[s->i];
    tp_isolate_opts o = wopts();
    s->got = 0;
    EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->w), 0);
    EXPECT_EQ(tp_monitor(ctx, s->w, &s->mon), 0);
    if (d->raw) {
        void *buf;
        size_t n;
        EXPECT_EQ(tp_packf(&buf, &n, "y", d->raw, d->raw_len), 0);
        EXPECT_EQ(tp_call(ctx, s->w, T_RAW, buf, n, 10000, &s->call), 0);
        tp_free(buf);
    } else {
        EXPECT_EQ(tp_call(ctx, s->w, d->tag, NULL, 0, 10000, &s->call), 0);
    }
}

static int deaths_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    deaths *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_opts o = wopts();
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->healthy), 0);
        deaths_next(ctx, s);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) == s->ping) {
            EXPECT_EQ(tp_msg_status(msg), 0);
            s->pings++;
            s->i++;
            deaths_next(ctx, s);
            return TP_HANDLED;
        }
        EXPECT_EQ(tp_msg_ref(msg), s->call);
        EXPECT_EQ(tp_msg_status(msg), TP_ENOPROC); /* the call in flight */
        s->got++;
        break;
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_ref(msg), s->mon);
        check_reason(msg, &s->v[s->i], "monitor");
        s->got++;
        break;
    case TP_TAG_EXIT:
        EXPECT_EQ(tp_msg_from(msg), s->w);
        check_reason(msg, &s->v[s->i], "link");
        s->got++;
        break;
    }
    if (s->got == 3) { /* reply, DOWN and EXIT: the other worker serves */
        s->got = 0;
        EXPECT_EQ(tp_call_int(ctx, s->healthy, T_ECHO, (int64_t)s->i, 5000,
                              &s->ping),
                  0);
    }
    return TP_HANDLED;
}

static void run_deaths(const death *v, size_t n)
{
    tpt_reset();
    int fds = count_fds();
    deaths s = {.v = v, .n = n};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, deaths_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_int_equal(s.pings, (int)n);
    assert_no_children();
    assert_int_equal(count_fds(), fds);
}

static void test_worker_deaths(void **unused)
{
    (void)unused;
    static const death v[] = {
        {"SIGSEGV", T_SEGV, NULL, 0, TP_ESYS, "killed by signal 11 (SIGSEGV)"},
        {"abort", T_ABORT, NULL, 0, TP_ESYS, "killed by signal 6 (SIGABRT)"},
        {"SIGKILL", T_KILL, NULL, 0, TP_ESYS, "killed by signal 9 (SIGKILL)"},
        {"exit(3)", T_EXIT3, NULL, 0, TP_ESYS, "exited with status 3"},
        {"exit(0)", T_EXIT0, NULL, 0, TP_ESYS, "exited with status 0"},
        {"mid-frame", T_MIDFRAME, NULL, 0, TP_ESYS,
         "killed by signal 11 (SIGSEGV)"},
        {"closed", T_CLOSE, NULL, 0, TP_EPROTO,
         "protocol error: worker closed its channel"},
    };
    run_deaths(v, sizeof v / sizeof *v);
}

static void test_bad_frames(void **unused)
{
    (void)unused;
    static uint8_t nested[4 + 10001];
    nested[0] = 0;
    nested[1] = 0;
    nested[2] = 0x27;
    nested[3] = 0x11; /* 10001 */
    memset(nested + 4, 0x91, 10000);
    nested[4 + 10000] = 0xc0;
    static const death v[] = {
        {"garbage", 0, "\x00\x00\x00\x08garbage!", 12, TP_EPROTO,
         "protocol error: frame body is not one well-formed msgpack object"},
        {"length 2^32-1", 0, "\xff\xff\xff\xff\x96", 5, TP_EPROTO,
         "protocol error: frame of 4294967295 bytes over the limit of"},
        {"length 0", 0, "\x00\x00\x00\x00", 4, TP_EPROTO,
         "protocol error: frame of length 0"},
        {"dd ff ff ff ff", 0, "\x00\x00\x00\x05\xdd\xff\xff\xff\xff", 9,
         TP_EPROTO, "protocol error: frame body is not one well-formed"},
        {"dd ff 00 00 00", 0, "\x00\x00\x00\x05\xdd\xff\x00\x00\x00", 9,
         TP_EPROTO, "protocol error: frame body is not one well-formed"},
        {"df ff ff ff ff", 0, "\x00\x00\x00\x05\xdf\xff\xff\xff\xff", 9,
         TP_EPROTO, "protocol error: frame body is not one well-formed"},
        {"c6 ff ff ff ff", 0, "\x00\x00\x00\x05\xc6\xff\xff\xff\xff", 9,
         TP_EPROTO, "protocol error: frame body is not one well-formed"},
        {"0xc1", 0, "\x00\x00\x00\x07\x96\x03\xc1\x00\x00\x00\xc0", 11,
         TP_EPROTO, "protocol error: frame body is not one well-formed"},
        {"10,000 nested", 0, nested, sizeof nested, TP_EPROTO,
         "protocol error: frame body is not one well-formed"},
        {"payload bomb", 0,
         "\x00\x00\x00\x0d\x96\x03\x01\x01\x00\x00\xc4\x05\xdd\xff\xff\xff\xff",
         17, TP_EPROTO, "protocol error: frame payload is not one"},
        {"unknown kind", 0, "\x00\x00\x00\x07\x96\x09\x00\x00\x00\x00\xc0", 11,
         TP_EPROTO, "protocol error: frame of an unknown kind"},
        {"reply for nothing", 0, "\x00\x00\x00\x07\x96\x04\x00\x00\x63\x00\xc0",
         11, TP_EPROTO, "protocol error: REPLY frame for no request"},
        {"truncated", 0, "\x00\x00\x00\x64\x96\x03\x01", 7, TP_EPROTO,
         "protocol error: truncated frame"},
    };
    atomic_store(&max_alloc, 0);
    run_deaths(v, sizeof v / sizeof *v);
    /* Nothing near the declared sizes was ever allocated. */
    if (atomic_load(&max_alloc) > ((size_t)1 << 20))
        fail_msg("largest allocation %zu bytes", atomic_load(&max_alloc));
    tp_isolate_stats st;
    tp_isolate_stats_get(&st);
    assert_true(st.bad_frames >= sizeof v / sizeof *v - 1);
}

/* ------------------------------------------------------ limits, watchdog */

typedef struct limit {
    tp_isolate_opts o;
    int32_t tag;
    int code;
    const char *text;
    tp_ref call;
    int got;
    double t0, elapsed;
} limit;

static int limit_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    limit *s = state;
    tp_pid w;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        s->t0 = tpt_now_ms();
        EXPECT_EQ(tp_isolate_spawn(ctx, &s->o, &w), 0);
        EXPECT_EQ(tp_call(ctx, w, s->tag, NULL, 0, 30000, &s->call), 0);
        return TP_HANDLED;
    case TP_TAG_REPLY:
        EXPECT_EQ(tp_msg_status(msg), TP_ENOPROC);
        s->got++;
        break;
    case TP_TAG_EXIT: {
        tp_reason r;
        EXPECT_EQ(tp_msg_reason(msg, &r), 0);
        EXPECT_EQ(r.kind, TP_EXIT_ERROR);
        EXPECT_EQ(r.code, s->code);
        if (!has(r.text, s->text) && !tpt_failure[0])
            snprintf(tpt_failure, sizeof tpt_failure,
                     "reason \"%s\", wanted "
                     "\"%s\"",
                     r.text ? r.text : "(null)", s->text);
        s->elapsed = tpt_now_ms() - s->t0;
        s->got++;
        break;
    }
    }
    if (s->got == 2)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static void run_limit(limit *s)
{
    tpt_reset();
    s->o.name = "tw";
    s->o.flags = TP_SPAWN_LINK;
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, limit_ctl, s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_no_children();
}

static void test_watchdog(void **unused)
{
    (void)unused;
    limit s = {.o = {.watchdog_ms = 200},
               .tag = T_SPIN,
               .code = TP_ETIMEDOUT,
               .text = "watchdog: a message was not handled within 200 ms"};
    run_limit(&s);
    assert_true(s.elapsed >= 190 && s.elapsed < 5000);
    tp_isolate_stats st;
    tp_isolate_stats_get(&st);
    assert_true(st.watchdog >= 1);
}

/* A worker that dies with input still queued toward it (more than its
 * socket holds): its death is an exit signal as always. Writing to its
 * closed channel is an error on that channel only; before, it raised
 * SIGPIPE and ended the whole program. */
#define BACKLOG_MSGS 32
#define BACKLOG_BYTES (64u << 10)

typedef struct backlog {
    tp_reason r;
    char text[TP_REASON_TEXT_MAX + 1];
} backlog;

static int backlog_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    backlog *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_opts o = {.name = "tw", .flags = TP_SPAWN_LINK};
        tp_pid w;
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &w), 0);
        /* It sleeps, then crashes at its next message; the rest waits. */
        EXPECT_EQ(tp_call(ctx, w, T_SLEEP, "\x64", 1, 30000, NULL), 0);
        EXPECT_EQ(tp_send(ctx, w, T_SEGV, NULL, 0), 0);
        uint8_t *big = calloc(1, 5 + BACKLOG_BYTES);
        big[0] = 0xc6; /* bin32 */
        big[2] = (uint8_t)(BACKLOG_BYTES >> 16);
        for (int i = 0; i < BACKLOG_MSGS; i++)
            EXPECT_EQ(tp_send(ctx, w, T_COUNT, big, 5 + BACKLOG_BYTES), 0);
        free(big);
        return TP_HANDLED;
    }
    case TP_TAG_EXIT:
        EXPECT_EQ(tp_msg_reason(msg, &s->r), 0);
        snprintf(s->text, sizeof s->text, "%s", s->r.text ? s->r.text : "");
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_death_with_backlog(void **unused)
{
    (void)unused;
    tpt_reset();
    static backlog s;
    memset(&s, 0, sizeof s);
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, backlog_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_int_equal(s.r.kind, TP_EXIT_ERROR);
    if (!has(s.text, "killed by signal 11"))
        fail_msg("reason \"%s\"", s.text);
    assert_no_children();
}

/* A worker that started a program (system(), popen(), fork and exec)
 * and then crashed: its death is seen at once, while that program still
 * runs. The channel is close-on-exec in the worker; before, the program
 * kept it open, so no end of file came until it ended. */
typedef struct execd {
    pid_t helper;
    bool helper_alive;
    char text[TP_REASON_TEXT_MAX + 1];
} execd;

static int execd_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    execd *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_opts o = {.name = "tw", .flags = TP_SPAWN_LINK};
        tp_pid w;
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &w), 0);
        EXPECT_EQ(tp_call(ctx, w, T_EXEC_SEGV, NULL, 0, 30000, NULL), 0);
        return tp_send_after(ctx, 10000, T_GIVEUP, NULL, 0, NULL);
    }
    case TP_TAG_REPLY: {
        int64_t pid = 0;
        if (tp_msg_status(msg) == 0 && tp_msg_int(msg, &pid) == 0)
            s->helper = (pid_t)pid;
        return TP_HANDLED;
    }
    case TP_TAG_EXIT: {
        tp_reason r;
        EXPECT_EQ(tp_msg_reason(msg, &r), 0);
        snprintf(s->text, sizeof s->text, "%s", r.text ? r.text : "");
        s->helper_alive = s->helper > 0 && kill(s->helper, 0) == 0;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    case T_GIVEUP: return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_death_seen_while_its_program_runs(void **unused)
{
    (void)unused;
    tpt_reset();
    static execd s;
    memset(&s, 0, sizeof s);
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, execd_ctl, &s, &o, &res);
    if (s.helper > 0)
        kill(s.helper, SIGKILL); /* not our child: init reaps it */
    TPT_CHECK();
    assert_true(s.helper > 0);
    if (!has(s.text, "killed by signal 11"))
        fail_msg("reason \"%s\"", s.text);
    assert_true(s.helper_alive);
    assert_no_children();
}

/* With max_payload raised over 64 MiB, a message larger than a worker
 * takes in a frame is refused alone (a call: TP_E2BIG); the worker goes
 * on (an echo after it is answered). Before, the worker read the frame,
 * refused it and exited with status 3, losing all its work. */
#define HUGE_BYTES ((size_t)65 << 20)

typedef struct huge {
    tp_pid w;
    tp_ref big, small;
    int big_status, small_status, exits;
    bool done;
} huge;

static int huge_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    huge *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_opts o = {.name = "tw", .flags = TP_SPAWN_LINK};
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->w), 0);
        uint8_t *big = calloc(1, 5 + HUGE_BYTES);
        big[0] = 0xc6; /* bin32 */
        big[1] = (uint8_t)(HUGE_BYTES >> 24);
        big[2] = (uint8_t)(HUGE_BYTES >> 16);
        EXPECT_EQ(tp_call(ctx, s->w, T_ECHO, big, 5 + HUGE_BYTES, 30000,
                          &s->big),
                  0);
        free(big);
        EXPECT_EQ(tp_call(ctx, s->w, T_ECHO, "\x01", 1, 30000, &s->small), 0);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) == s->big)
            s->big_status = tp_msg_status(msg);
        if (tp_msg_ref(msg) != s->small)
            return TP_HANDLED;
        s->small_status = tp_msg_status(msg);
        s->done = true;
        return tp_kill(ctx, s->w);
    case TP_TAG_EXIT: /* the worker's, killed when done */
        if (!s->done)
            s->exits++;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_message_over_worker_frame(void **unused)
{
    (void)unused;
    tpt_reset();
    static huge s;
    memset(&s, 0, sizeof s);
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.max_payload = 128u << 20;
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(&cfg, huge_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(s.big_status, TP_E2BIG);
    assert_int_equal(s.small_status, 0);
    assert_int_equal(s.exits, 0); /* the worker did not end meanwhile */
    assert_no_children();
}

static void test_rlimit_as(void **unused)
{
    (void)unused;
#ifdef UNDER_ASAN
    skip(); /* ASan reserves terabytes of address space up front */
#else
    limit s = {.o = {.mem_limit = (size_t)256 << 20},
               .tag = T_ALLOC,
               .code = TP_ENOMEM,
               .text = "memory limit reached (268435456 bytes)"};
    run_limit(&s);
#endif
}

static void test_rlimit_cpu(void **unused)
{
    (void)unused;
    limit s = {.o = {.cpu_limit_s = 1},
               .tag = T_SPIN,
               .code = TP_ESYS,
               .text = "(SIGXCPU)"};
    run_limit(&s);
    assert_true(s.elapsed >= 900);
}

/* ------------------------------------------- supervised, 100 cycles */

typedef struct cycles {
    tp_pid sup, cur;
    int started, crashes, fds_first, fds_last;
    uint64_t running_first, running_last;
    tp_isolate_opts o;
    tp_ref call;
} cycles;

static tp_pid cyc_ctl;

static void cyc_report(tp_ctx *ctx, void *arg, const tp_sup_event *e)
{
    (void)arg;
    if (e->kind == TP_SUP_EV_STARTED)
        tp_sendf(ctx, cyc_ctl, T_HELLO, "p", e->pid);
}

static uint64_t running(void)
{
    tp_isolate_stats s;
    tp_isolate_stats_get(&s);
    return s.spawned - s.reaped;
}

#define CYCLES 100

static int cycles_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    cycles *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        cyc_ctl = tp_self(ctx);
        s->o = (tp_isolate_opts){.name = "tw"};
        tp_child_spec c = {.id = "w",
                           .start = tp_isolate_child_start,
                           .arg = &s->o,
                           .shutdown_ms = TP_CHILD_BRUTAL_KILL};
        tp_sup_spec spec;
        tp_sup_spec_init(&spec);
        spec.intensity = 1000;
        spec.period_ms = 1000;
        spec.children = &c;
        spec.n_children = 1;
        spec.report = cyc_report;
        EXPECT_EQ(tp_sup_start_link(ctx, &spec, &s->sup), 0);
        return TP_HANDLED;
    }
    case T_HELLO: /* a (re)start: wait until it serves, then crash it */
        EXPECT_EQ(tp_msg_scanf(msg, "p", &s->cur), 0);
        s->started++;
        EXPECT_EQ(tp_call(ctx, s->cur, T_STARTS, NULL, 0, 5000, &s->call), 0);
        return TP_HANDLED;
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) != s->call)
            return TP_HANDLED;
        EXPECT_EQ(tp_msg_status(msg), 0);
        if (s->started == 1) {
            s->fds_first = count_fds();
            s->running_first = running();
        }
        if (s->started == CYCLES + 1) {
            s->fds_last = count_fds();
            s->running_last = running();
            tp_sup_stop(ctx, s->sup, 10000, NULL);
            return TP_HANDLED;
        }
        s->crashes++;
        /* Alternate the ways to die. */
        static const int32_t kinds[] = {T_SEGV,  T_ABORT, T_KILL,
                                        T_EXIT3, T_EXIT0, T_MIDFRAME};
        tp_send(ctx, s->cur, kinds[s->crashes % 6], NULL, 0);
        return TP_HANDLED;
    case TP_TAG_EXIT:
        if (tp_msg_from(msg) == s->sup)
            tp_exit(ctx, TP_REASON_NORMAL);
        return TP_HANDLED;
    }
    return TP_HANDLED;
}

static void test_hundred_restarts(void **unused)
{
    (void)unused;
    tpt_reset();
    cycles s = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, cycles_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_int_equal(s.started, CYCLES + 1);
    assert_int_equal(s.crashes, CYCLES);
    assert_int_equal(s.fds_last, s.fds_first);
    /* Between two cycles a killed worker may still be reaped: at most
     * one more than the one running. */
    assert_true(s.running_first == 1);
    assert_true(s.running_last >= 1 && s.running_last <= 2);
    assert_no_children();
}

/* ------------------------------------------------------------- pools */

#define POOL_N 3
#define POOL_REQS 60

typedef struct poolt {
    tp_pid pool;
    int sent, answered, errors, in_flight;
    tp_ref refs[POOL_REQS];
    int64_t want[POOL_REQS];
} poolt;

static void pool_send_more(tp_ctx *ctx, poolt *s)
{
    /* Fewer in flight than workers: the router always finds an idle one
     * (even while one restarts), so only a poisoned request can be lost
     * with its worker. */
    while (s->in_flight < POOL_N - 1 && s->sent < POOL_REQS) {
        int i = s->sent++;
        int poison = i % 20 == 7;
        s->want[i] = poison ? -1 : i;
        if (poison)
            EXPECT_EQ(tp_call(ctx, s->pool, T_SEGV, NULL, 0, 10000,
                              &s->refs[i]),
                      0);
        else
            EXPECT_EQ(tp_call_int(ctx, s->pool, T_SLEEP, i % 5, 10000,
                                  &s->refs[i]),
                      0);
        s->in_flight++;
    }
}

static int pool_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    poolt *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_pool_opts po = {.worker = {.name = "tw",
                                              .watchdog_ms = 2000},
                                   .size = POOL_N,
                                   .name = "tw_pool"};
        EXPECT_EQ(tp_isolate_pool_start(ctx, &po, &s->pool), 0);
        pool_send_more(ctx, s);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY: {
        int i = 0;
        while (i < s->sent && s->refs[i] != tp_msg_ref(msg))
            i++;
        EXPECT(i < s->sent);
        s->in_flight--;
        if (s->want[i] < 0) {
            EXPECT_EQ(tp_msg_status(msg), TP_ENOPROC);
            s->errors++;
        } else {
            int64_t v = -2;
            EXPECT_EQ(tp_msg_status(msg), 0);
            EXPECT_EQ(tp_msg_int(msg, &v), 0);
            EXPECT_EQ(v, i % 5);
            s->answered++;
        }
        if (s->answered + s->errors == POOL_REQS) {
            EXPECT_EQ(tp_whereis(tp_ctx_runtime(ctx), "tw_pool"), s->pool);
            tp_exit_signal(ctx, s->pool, TP_REASON_SHUTDOWN);
        } else {
            pool_send_more(ctx, s);
        }
        return TP_HANDLED;
    }
    case TP_TAG_EXIT: {
        tp_reason r;
        EXPECT_EQ(tp_msg_reason(msg, &r), 0);
        EXPECT_EQ(tp_msg_from(msg), s->pool);
        EXPECT_EQ(r.kind, TP_EXIT_SHUTDOWN);
        tp_exit(ctx, TP_REASON_NORMAL);
        return TP_HANDLED;
    }
    }
    return TP_HANDLED;
}

static void test_pool_serves(void **unused)
{
    (void)unused;
    tpt_reset();
    poolt s = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, pool_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_int_equal(s.errors, POOL_REQS / 20);
    assert_int_equal(s.answered, POOL_REQS - POOL_REQS / 20);
    assert_no_children();
}

/* ------------------------------ what a worker may send (issue 14, item 1) */

typedef struct greet {
    tp_pid w, ctl;
    bool writes; /* writes to the worker first */
} greet;

typedef struct guard {
    tp_pid sup, w, peer, stranger;
    tp_ref mon, call;
    int started;
    uint64_t bad_frames;
    bool down, served;
    greet gp, gs;
} guard;

static uint64_t bad_frames(void)
{
    tp_isolate_stats st;
    tp_isolate_stats_get(&st);
    return st.bad_frames;
}

static void expect_reason(const tp_msg *msg, int code, const char *text)
{
    tp_reason r;
    EXPECT_EQ(tp_msg_reason(msg, &r), 0);
    EXPECT_EQ(r.kind, TP_EXIT_ERROR);
    EXPECT_EQ(r.code, code);
    if (!has(r.text, text) && !tpt_failure[0])
        snprintf(tpt_failure, sizeof tpt_failure,
                 "reason \"%s\", wanted \"%s\"", r.text ? r.text : "(null)",
                 text);
}

/* A supervised worker sends its supervisor (its START's sender) the stop
 * request: refused at the frame boundary, the worker alone dies of it and
 * is restarted; the supervisor keeps running. */
static int reserved_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    guard *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        cyc_ctl = tp_self(ctx);
        static const tp_isolate_opts o = {.name = "tw"};
        tp_child_spec c = {.id = "w",
                           .start = tp_isolate_child_start,
                           .arg = (void *)&o,
                           .shutdown_ms = TP_CHILD_BRUTAL_KILL};
        tp_sup_spec spec;
        tp_sup_spec_init(&spec);
        spec.children = &c;
        spec.n_children = 1;
        spec.report = cyc_report;
        EXPECT_EQ(tp_sup_start_link(ctx, &spec, &s->sup), 0);
        return TP_HANDLED;
    }
    case T_HELLO: { /* a (re)start of the worker */
        tp_pid w = 0;
        EXPECT_EQ(tp_msg_scanf(msg, "p", &w), 0);
        if (++s->started == 1) {
            s->w = w;
            s->bad_frames = bad_frames();
            EXPECT_EQ(tp_monitor(ctx, w, &s->mon), 0);
            EXPECT_EQ(tp_send(ctx, w, T_SUPSTOP, NULL, 0), 0);
        } else { /* restarted: it serves again */
            EXPECT_EQ(tp_call(ctx, w, T_STARTS, NULL, 0, 5000, &s->call), 0);
        }
        return TP_HANDLED;
    }
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_ref(msg), s->mon);
        expect_reason(msg, TP_EPROTO,
                      "protocol error: SEND frame with a reserved tag");
        EXPECT(bad_frames() > s->bad_frames);
        s->down = true;
        break;
    case TP_TAG_REPLY:
        EXPECT_EQ(tp_msg_status(msg), 0);
        s->served = true;
        break;
    case TP_TAG_EXIT:
        if (tp_msg_from(msg) == s->sup) {
            /* Only the stop asked below, not the worker's. */
            EXPECT(s->down && s->served && s->started == 2);
            tp_exit(ctx, TP_REASON_NORMAL);
        }
        return TP_HANDLED;
    default: return TP_HANDLED;
    }
    if (s->down && s->served)
        tp_sup_stop(ctx, s->sup, 10000, NULL);
    return TP_HANDLED;
}

static void test_reserved_tag_refused(void **unused)
{
    (void)unused;
    tpt_reset();
    guard s = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, reserved_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_int_equal(s.started, 2);
    assert_no_children();
}

/* A local actor that may greet the worker with its own pid (then the
 * worker may answer it), and tells the controller what comes back. */
static int greeter(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    const greet *g = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        return g->writes ? tp_sendf(ctx, g->w, T_SEND, "p", tp_self(ctx))
                         : TP_HANDLED;
    case T_HELLO:
        return tp_send(ctx, g->ctl, g->writes ? T_HELLO : T_LEAK, NULL, 0);
    }
    return TP_HANDLED;
}

/* The worker may write to whoever wrote to it, not to a pid it only read
 * in a payload. */
static int address_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    guard *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_opts o = wopts();
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->w), 0);
        EXPECT_EQ(tp_monitor(ctx, s->w, &s->mon), 0);
        s->bad_frames = bad_frames();
        s->gp = (greet){s->w, tp_self(ctx), true};
        s->gs = (greet){s->w, tp_self(ctx), false};
        EXPECT_EQ(tp_spawn(ctx, greeter, &s->gp, NULL, &s->peer), 0);
        return TP_HANDLED;
    }
    case T_HELLO: /* the worker answered the peer; now the stranger */
        EXPECT_EQ(tp_spawn(ctx, greeter, &s->gs, NULL, &s->stranger), 0);
        EXPECT_EQ(tp_sendf(ctx, s->w, T_SEND, "p", s->stranger), 0);
        return TP_HANDLED;
    case T_LEAK: EXPECT(!"the worker reached a pid it was not given"); break;
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_ref(msg), s->mon);
        expect_reason(msg, TP_EPROTO,
                      "protocol error: SEND frame to a pid it was not given");
        EXPECT(bad_frames() > s->bad_frames);
        break;
    default: return TP_HANDLED; /* trapped exits: seen through the monitor */
    }
    tp_kill(ctx, s->w);
    tp_kill(ctx, s->peer);
    if (s->stranger)
        tp_kill(ctx, s->stranger);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static void test_send_addresses(void **unused)
{
    (void)unused;
    tpt_reset();
    guard s = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, address_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_no_children();
}

/* ------------------------- one message at a time (issue 14, items 2, 3) */

#define STREAM_MAX 64

typedef struct stream {
    unsigned watchdog_ms;
    int n, ms;
    tp_pid w;
    tp_ref mon, warm, refs[STREAM_MAX];
    int got;
    double t0, first, last;
} stream;

static int stream_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    stream *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_opts o = wopts();
        o.watchdog_ms = s->watchdog_ms;
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->w), 0);
        EXPECT_EQ(tp_monitor(ctx, s->w, &s->mon), 0);
        /* Time from a running worker on, not from its start-up. */
        EXPECT_EQ(tp_call_int(ctx, s->w, T_ECHO, 1, 30000, &s->warm), 0);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY: {
        EXPECT_EQ(tp_msg_status(msg), 0);
        if (tp_msg_ref(msg) == s->warm) {
            s->t0 = tpt_now_ms();
            for (int i = 0; i < s->n; i++)
                EXPECT_EQ(tp_call_int(ctx, s->w, T_SLEEP, s->ms, 30000,
                                      &s->refs[i]),
                          0);
            return TP_HANDLED;
        }
        int64_t v = -1;
        EXPECT_EQ(tp_msg_int(msg, &v), 0);
        EXPECT_EQ(v, s->ms);
        EXPECT_EQ(tp_msg_ref(msg), s->refs[s->got]); /* in order */
        double t = tpt_now_ms() - s->t0;
        if (s->got++ == 0)
            s->first = t;
        s->last = t;
        if (s->got < s->n)
            return TP_HANDLED;
        break;
    }
    case TP_TAG_DOWN: {
        tp_reason r = {0};
        tp_msg_reason(msg, &r);
        if (!tpt_failure[0])
            snprintf(tpt_failure, sizeof tpt_failure,
                     "worker died after %d of %d replies: %s", s->got, s->n,
                     r.text ? r.text : tp_exit_kind_name(r.kind));
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    default: return TP_HANDLED;
    }
    tp_kill(ctx, s->w);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static void run_stream(stream *s)
{
    tpt_reset();
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, stream_ctl, s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_int_equal(s->got, s->n);
    assert_no_children();
}

/* The watchdog times each message: 64 requests of 20 ms each are all
 * answered under a 300 ms watchdog. */
static void test_watchdog_per_message(void **unused)
{
    (void)unused;
#ifdef UNDER_ASAN /* sanitized workers start slowly, and the start counts */
    stream s = {.watchdog_ms = 2000, .n = 64, .ms = 60};
#else
    stream s = {.watchdog_ms = 300, .n = 64, .ms = 20};
#endif
    run_stream(&s);
}

/* Replies leave as they are made: the first of 16 requests of 30 ms is
 * answered long before the last. */
static void test_replies_leave_at_once(void **unused)
{
    (void)unused;
    stream s = {.n = 16, .ms = 30};
    run_stream(&s);
    if (!(s.first < 0.4 * s.last))
        fail_msg("first reply after %.1f ms, last after %.1f ms", s.first,
                 s.last);
}

/* ---------------------- backpressure toward a worker (issue 14, item 4) */

#define BP_MSGS 20000
#define BP_BATCH 64
#define BP_BOUND 4096 /* sends accepted while the worker reads nothing */
#define BP_STILL 5    /* polls that must see the sender paused */

typedef struct bp {
    tp_pid w, sender, ctl;
    char dir[64], fifo[96];
    int fifo_fd, still, sent_paused;
    bool released, done;
    tp_ref warm, counted;
} bp;

static _Atomic int bp_sent; /* sends the sender made (it may run elsewhere) */
static uint8_t bp_kib[3 + 1024] = {0xc5, 0x04, 0x00}; /* a bin of 1 KiB */

static int bp_sender(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    const bp *s = state;
    (void)msg;
    for (int i = 0; i < BP_BATCH && atomic_load(&bp_sent) < BP_MSGS; i++) {
        EXPECT_EQ(tp_send(ctx, s->w, T_COUNT, bp_kib, sizeof bp_kib), 0);
        atomic_fetch_add(&bp_sent, 1);
    }
    if (atomic_load(&bp_sent) < BP_MSGS)
        return tp_send(ctx, tp_self(ctx), T_GO, NULL, 0);
    tp_send(ctx, s->ctl, T_DONE, NULL, 0);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static void bp_release(bp *s)
{
    if (!s->released) {
        s->released = true;
        EXPECT_EQ(write(s->fifo_fd, "x", 1), 1);
    }
}

static int bp_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    bp *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        snprintf(s->dir, sizeof s->dir, "/tmp/troupe-iso-XXXXXX");
        EXPECT(mkdtemp(s->dir) != NULL);
        snprintf(s->fifo, sizeof s->fifo, "%s/fifo", s->dir);
        EXPECT_EQ(mkfifo(s->fifo, 0600), 0);
        /* Read-write: never blocks, and keeps the FIFO's byte until the
         * worker opens it. */
        s->fifo_fd = open(s->fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        EXPECT(s->fifo_fd >= 0);
        s->ctl = tp_self(ctx);
        tp_isolate_opts o = wopts();
        EXPECT_EQ(tp_isolate_spawn(ctx, &o, &s->w), 0);
        EXPECT_EQ(tp_call_int(ctx, s->w, T_ECHO, 1, 30000, &s->warm), 0);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY:
        EXPECT_EQ(tp_msg_status(msg), 0);
        if (tp_msg_ref(msg) == s->warm) {
            /* The worker stops reading; then the flood. */
            EXPECT_EQ(tp_sendf(ctx, s->w, T_BLOCK, "s", s->fifo), 0);
            atomic_store(&bp_sent, 0);
            EXPECT_EQ(tp_spawn(ctx, bp_sender, s, NULL, &s->sender), 0);
            return tp_send_after(ctx, 10, T_POLL, NULL, 0, NULL);
        }
        int64_t n = -1;
        EXPECT_EQ(tp_msg_int(msg, &n), 0);
        EXPECT_EQ(n, BP_MSGS); /* nothing lost */
        tp_kill(ctx, s->w);
        return tp_exit(ctx, TP_REASON_NORMAL);
    case T_POLL: {
        if (s->released || s->done)
            return TP_HANDLED;
        tp_actor_info info;
        int sent = atomic_load(&bp_sent);
        if (tp_actor_info_get(tp_ctx_runtime(ctx), s->sender, &info) == 0 &&
            info.alive && info.paused && sent == s->sent_paused)
            s->still++;
        else
            s->still = 0;
        s->sent_paused = sent;
        if (s->still < BP_STILL)
            return tp_send_after(ctx, 10, T_POLL, NULL, 0, NULL);
        if (sent > BP_BOUND && !tpt_failure[0])
            snprintf(tpt_failure, sizeof tpt_failure,
                     "%d sends of 1 KiB accepted toward a blocked worker",
                     sent);
        bp_release(s);
        return TP_HANDLED;
    }
    case T_DONE:
        s->done = true;
        if (!s->released && !tpt_failure[0])
            snprintf(tpt_failure, sizeof tpt_failure,
                     "all %d sends of 1 KiB accepted toward a blocked worker",
                     BP_MSGS);
        bp_release(s);
        return tp_call(ctx, s->w, T_COUNTED, NULL, 0, 60000, &s->counted);
    }
    return TP_HANDLED;
}

static void test_backpressure_to_worker(void **unused)
{
    (void)unused;
    tpt_reset();
    bp s = {.fifo_fd = -1};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, bp_ctl, &s, &o, &res);
    if (s.fifo_fd >= 0)
        close(s.fifo_fd);
    unlink(s.fifo);
    rmdir(s.dir);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_true(s.released);
    assert_no_children();
}

/* --------------------------------- a pool that gives up (issue 14, item 6) */

typedef struct giveup {
    tp_pid pool;
    tp_reason r;
    char text[TP_REASON_TEXT_MAX + 1];
    bool ended;
} giveup;

static int giveup_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    giveup *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_pool_opts po = {.worker = {.name = "tw_crash"},
                                   .size = 1,
                                   .intensity = 2,
                                   .period_ms = 10000};
        EXPECT_EQ(tp_isolate_pool_start(ctx, &po, &s->pool), 0);
        return TP_HANDLED;
    }
    case TP_TAG_EXIT:
        EXPECT_EQ(tp_msg_from(msg), s->pool);
        EXPECT_EQ(tp_msg_reason(msg, &s->r), 0);
        snprintf(s->text, sizeof s->text, "%s", s->r.text ? s->r.text : "");
        s->ended = true;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_pool_gives_up(void **unused)
{
    (void)unused;
    tpt_reset();
    giveup s = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_result res;
    tpt_run(NULL, giveup_ctl, &s, &o, &res);
    TPT_CHECK();
    assert_int_equal(res.status, 0);
    assert_true(s.ended);
    assert_int_equal(s.r.kind, TP_EXIT_SHUTDOWN);
    assert_string_equal(s.text, "isolated pool: more than 2 worker restarts in "
                                "10000 ms");
    assert_no_children();
}

/* ------------------------------------------------------------ example */

static void slurp(FILE *f, char *buf, size_t cap)
{
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
}

/* examples/isolated_workers, beside this test in the build tree. */
static void test_example(void **unused)
{
    (void)unused;
    char self[1024], path[1100];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    snprintf(path, sizeof path, "%s/../examples/isolated_workers", self);
    if (access(path, X_OK) != 0)
        skip();
#if defined(__SANITIZE_THREAD__)
    skip(); /* its workers run under RLIMIT_AS (see UNDER_ASAN) */
#endif
    FILE *out = tmpfile(), *err = tmpfile();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(out), 1);
        dup2(fileno(err), 2);
        execl(path, "isolated_workers", (char *)NULL);
        _exit(127);
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    static char o[8192], e[8192];
    slurp(out, o, sizeof o);
    slurp(err, e, sizeof e);
    fclose(out);
    fclose(err);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        fail_msg("status %d\nstdout:\n%s\nstderr:\n%s", ws, o, e);
    assert_non_null(strstr(o, "summary: 40 requests, 37 answered, 3 failed "
                              "(3 poisoned); 7 worker processes started, 7 "
                              "reaped"));
    assert_non_null(strstr(o, "(\"#5;!boom\") failed: no such actor"));
    assert_non_null(strstr(e, "killed by signal 11 (SIGSEGV)"));
    assert_no_children();
}

/* ------------------------------------------------------------- errors */

static int errors_ctl(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_isolate_opts o = {.name = "nope"};
    tp_pid p;
    EXPECT_EQ(tp_isolate_spawn(ctx, &o, &p), TP_ENOENT);
    EXPECT_EQ(tp_isolate_spawn(ctx, NULL, &p), TP_EINVAL);
    o.name = "tw";
    o.flags = TP_SPAWN_TRAP_EXIT;
    EXPECT_EQ(tp_isolate_spawn(ctx, &o, &p), TP_EINVAL);
    tp_isolate_pool_opts po = {.worker = {.name = "tw"}};
    EXPECT_EQ(tp_isolate_pool_start(ctx, &po, &p), TP_EINVAL);
    po.size = 1;
    po.worker.name = "nope";
    EXPECT_EQ(tp_isolate_pool_start(ctx, &po, &p), TP_ENOENT);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static void test_errors(void **unused)
{
    (void)unused;
    tpt_reset();
    assert_int_equal(tp_isolate_spawn(NULL, &(tp_isolate_opts){.name = "tw"},
                                      NULL),
                     TP_ESTATE);
    assert_int_equal(tp_isolate_register("tw", tw, NULL), TP_EEXIST);
    assert_int_equal(tp_isolate_register("", tw, NULL), TP_EINVAL);
    assert_int_equal(tp_isolate_register("x", NULL, NULL), TP_EINVAL);
    char *argv[] = {"prog", NULL};
    assert_int_equal(tp_isolate_main(1, argv), 0);
    tpt_run(NULL, errors_ctl, NULL, NULL, NULL);
    TPT_CHECK();
    assert_no_children();
}

int main(int argc, char **argv)
{
    tp_isolate_register("tw", tw, NULL);
    tp_isolate_register("tw_crash", tw_crash, NULL);
    tp_isolate_main(argc, argv); /* never returns in a worker */
    /* Under ASan, let a worker's SIGSEGV kill it, as it would a plain
     * build (ASan's own handler would exit with status 1 instead). */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof opts, "%s%shandle_segv=0", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    /* The same for TSan: a crash is the worker's exit, not a report. */
    setenv("TSAN_OPTIONS",
           "handle_segv=0:handle_abort=0:handle_sigbus=0:"
           "handle_sigfpe=0:handle_sigill=0",
           0);
    tp_set_allocator(track_alloc, track_realloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_message_api),
        cmocka_unit_test(test_worker_deaths),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_watchdog),
        cmocka_unit_test(test_death_with_backlog),
        cmocka_unit_test(test_death_seen_while_its_program_runs),
        cmocka_unit_test(test_message_over_worker_frame),
        cmocka_unit_test(test_rlimit_as),
        cmocka_unit_test(test_rlimit_cpu),
        cmocka_unit_test(test_hundred_restarts),
        cmocka_unit_test(test_pool_serves),
        cmocka_unit_test(test_reserved_tag_refused),
        cmocka_unit_test(test_send_addresses),
        cmocka_unit_test(test_watchdog_per_message),
        cmocka_unit_test(test_replies_leave_at_once),
        cmocka_unit_test(test_backpressure_to_worker),
        cmocka_unit_test(test_pool_gives_up),
        cmocka_unit_test(test_example),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
