/*
 * Isolated workers, the worker process (issue 7): the registry of
 * isolated behaviors, tp_isolate_main, and the worker loop.
 *
 * A worker is a fresh process (exec'd), so it may run libevent: it hosts
 * the behavior through the core's host door (runtime/host.h), whose loop
 * reads the channel. The behavior runs under the proxy's pid, so tp_self
 * and every ctx call made by the behavior work as in the parent; every
 * delivery it causes leaves over the channel instead of into a mailbox:
 * replies (tp_reply, the runtime's TP_ENOREPLY) as REPLY frames, user
 * messages as SEND frames; messages to itself (timers, receive timeouts,
 * sends to tp_self) stay in the worker. After each message the worker
 * acknowledges it (DONE) and writes out what it produced: the parent's
 * watchdog then times one message, not a batch of them, and replies leave
 * as they are made. A worker with a memory limit that crashes right after
 * an allocation failed says so first (on_fatal).
 *
 * Uses: runtime/host.h, runtime/service.h and the public headers.
 */
#include "runtime/host.h"
#include "runtime/isolate/frame.h"
#include "runtime/isolate/isolate_int.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define FLUSH_AT ((size_t)256 << 10)

/* ----------------------------------------------------------- registry */

typedef struct isolated {
    char name[TP_ISOLATE_NAME_MAX + 1]; /* first: a tpi_namereg entry */
    tp_behavior b;
    void *state;
} isolated;
static isolated reg[TP_ISOLATE_MAX_BEHAVIORS];
static tpi_namereg registry = TPI_NAMEREG_INIT(reg);

int tp_isolate_register(const char *name, tp_behavior b, void *state)
{
    if (!name || !b || !name[0] || strlen(name) > TP_ISOLATE_NAME_MAX)
        return TP_EINVAL;
    isolated e = {.b = b, .state = state};
    snprintf(e.name, sizeof e.name, "%s", name);
    return tpi_namereg_add(&registry, &e);
}

int tpi_isolate_lookup(const char *name, tp_behavior *b, void **state)
{
    isolated e;
    int rc = tpi_namereg_find(&registry, name, strlen(name), &e);
    if (!rc) {
        *b = e.b;
        *state = e.state;
    }
    return rc;
}

/* -------------------------------------------------------------- worker */

typedef struct worker {
    tpi_host *host;
    int fd;
    struct event *rev;
    struct evbuffer *in, *out;
    int64_t handled; /* frames handled since the last DONE */
    bool started;    /* START came: MSG frames may follow */
    bool ending;
    bool writing; /* in flush_out: the channel may hold half a frame */
    int status;
} worker;

static worker wk; /* one per process */

static void stop(int status)
{
    if (!wk.ending) {
        wk.ending = true;
        wk.status = status;
        tpi_host_stop(wk.host);
    }
}

/* Write out everything queued; blocking is fine in a worker. */
static void flush_out(void)
{
    wk.writing = true;
    while (evbuffer_get_length(wk.out) > 0) {
        int n = evbuffer_write(wk.out, wk.fd);
        if (n >= 0)
            continue;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd pf = {wk.fd, POLLOUT, 0};
            (void)poll(&pf, 1, -1);
            continue;
        }
        /* The parent is gone: nothing left to do. */
        evbuffer_drain(wk.out, evbuffer_get_length(wk.out));
        stop(0);
        break;
    }
    wk.writing = false;
}

static void put_frame(int64_t kind, int64_t a, int64_t b, int64_t c, int64_t d,
                      const void *data, size_t len)
{
    uint8_t head[TPI_FRAME_HEAD_MAX];
    size_t n = tpi_frame_head(head, kind, a, b, c, d, len);
    if (evbuffer_add(wk.out, head, n) != 0 ||
        (len && evbuffer_add(wk.out, data, len) != 0)) {
        fprintf(stderr, "troupe worker: out of memory for a frame\n");
        exit(1); /* the parent reports the status */
    }
    if (evbuffer_get_length(wk.out) >= FLUSH_AT)
        flush_out();
}

static void put_done(void)
{
    if (wk.handled) {
        put_frame(TPI_FRAME_DONE, wk.handled, 0, 0, 0, NULL, 0);
        wk.handled = 0;
    }
}

/* A delivery of the hosted actor to another pid: over the channel. */
static int out(void *arg, tp_pid to, const tpi_envelope *e)
{
    (void)arg;
    if (e->tag == TP_TAG_REPLY)
        put_frame(TPI_FRAME_REPLY, e->status, 0, (int64_t)e->ref, 0, e->data,
                  e->len);
    else
        put_frame(TPI_FRAME_SEND, e->tag, (int64_t)to, 0, 0, e->data, e->len);
    return 0;
}

/* The actor ended: tell the parent why, and go. */
static void ended(void *arg, tp_reason r)
{
    (void)arg;
    size_t tlen = r.text ? strnlen(r.text, TP_REASON_TEXT_MAX) : 0;
    put_done();
    put_frame(TPI_FRAME_EXIT, r.kind, r.code, 0, 0, r.text, tlen);
    flush_out();
    stop(0);
}

static void ran(void *arg)
{
    (void)arg;
    if (!wk.ending)
        flush_out();
}

static const tpi_host_ops host_ops = {out, ended, ran};

/* A frame from the parent (trusted, but checked all the same). */
static int take_frame(const tpi_frame *f)
{
    switch (f->kind) {
    case TPI_FRAME_START:
        if (wk.started || f->a == 0)
            return TP_EPROTO;
        wk.started = true;
        wk.handled++;
        return tpi_host_start(wk.host, (tp_pid)f->a, (tp_pid)f->b);
    case TPI_FRAME_MSG: {
        if (f->a < 0 || f->a > INT32_MAX || !wk.started)
            return TP_EPROTO;
        tpi_envelope e = {.tag = (int32_t)f->a,
                          .from = (tp_pid)f->b,
                          .ref = (tp_ref)f->c,
                          .request = (f->d & TPI_FRAME_REQUEST) != 0,
                          .data = f->payload,
                          .len = f->len};
        wk.handled++;
        return tpi_host_post(wk.host, &e);
    }
    default: return TP_EPROTO;
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    int n = evbuffer_read(wk.in, fd, 64 * 1024);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        stop(0); /* the parent closed the channel: it is done with us */
        return;
    }
    while (!wk.ending) {
        size_t avail = evbuffer_get_length(wk.in), blen;
        uint8_t hdr[4];
        if (avail < 4)
            break;
        evbuffer_copyout(wk.in, hdr, 4);
        int rc = tpi_frame_next(hdr, avail, TP_ISOLATE_FRAME_DEFAULT, &blen);
        if (rc > 0)
            break;
        tpi_frame f;
        const char *why = "bad frame length";
        const unsigned char *frame = NULL;
        if (rc == 0 &&
            !(frame = evbuffer_pullup(wk.in, (ev_ssize_t)(4 + blen))))
            why = "out of memory";
        if (!frame || tpi_frame_decode(frame + 4, blen, &f, &why) != 0 ||
            (rc = take_frame(&f)) != 0) {
            fprintf(stderr, "troupe worker: bad frame from the parent: %s\n",
                    rc == TP_ENOMEM ? "out of memory" : why);
            stop(3);
            return;
        }
        evbuffer_drain(wk.in, 4 + blen);
        if (!wk.ending) { /* ended() acknowledged it already */
            put_done();
            flush_out();
        }
    }
}

static int worker_run(tp_behavior b, void *state, int fd)
{
    wk.fd = fd;
    if (tpi_host_new(b, state, &host_ops, NULL, &wk.host) != 0)
        return 1;
    wk.in = evbuffer_new();
    wk.out = evbuffer_new();
    wk.rev = event_new(tpi_host_base(wk.host), fd, EV_READ | EV_PERSIST,
                       on_read, NULL);
    if (!wk.in || !wk.out || !wk.rev ||
        evutil_make_socket_nonblocking(fd) != 0 || event_add(wk.rev, NULL) != 0)
        return 1;
    tpi_host_run(wk.host);
    int status = wk.status;
    event_free(wk.rev);
    evbuffer_free(wk.in);
    evbuffer_free(wk.out);
    tpi_host_free(wk.host);
    close(fd);
    return status;
}

/* ------------------------------------------------ out of memory report */

/* The EXIT frame a worker over its memory limit sends as it dies, made
 * before the limit applies (a signal handler must not allocate). */
static uint8_t oom_frame[TPI_FRAME_HEAD_MAX + 64];
static size_t oom_len;
static int oom_fd;

/* SIGABRT, SIGSEGV or SIGBUS in a worker with a memory limit. Programs
 * meet a failed malloc with an abort or a NULL dereference, with errno
 * still ENOMEM; the parent would only see the signal. When errno says
 * so and the channel is between two frames, tell the parent why first;
 * then die of the signal all the same (SA_RESETHAND restored the default
 * action, and the signal, blocked in here, is delivered on return). */
static void on_fatal(int sig)
{
    int e = errno;
    if (e == ENOMEM && !wk.writing) {
        struct pollfd pf = {oom_fd, POLLOUT, 0};
        /* A frame this small goes in one piece or not at all. */
        if (poll(&pf, 1, 1000) == 1)
            (void)!write(oom_fd, oom_frame, oom_len);
    }
    raise(sig);
}

static void oom_report_setup(int fd, unsigned long long limit)
{
    char text[64];
    int n =
        snprintf(text, sizeof text, "memory limit reached (%llu bytes)", limit);
    oom_len = tpi_frame_head(oom_frame, TPI_FRAME_EXIT, TP_EXIT_ERROR,
                             TP_ENOMEM, 0, 0, (size_t)n);
    memcpy(oom_frame + oom_len, text, (size_t)n);
    oom_len += (size_t)n;
    oom_fd = fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

static int set_limit(int res, unsigned long long v)
{
    if (!v)
        return 0;
    struct rlimit rl = {(rlim_t)v, (rlim_t)v};
    if (res == RLIMIT_CPU) /* SIGXCPU at v, SIGKILL a second later */
        rl.rlim_max = (rlim_t)v + 1;
    return setrlimit(res, &rl);
}

int tp_isolate_main(int argc, char **argv)
{
    if (argc < 2 || !argv || !argv[1] || strcmp(argv[1], TP_ISOLATE_WORKER_ARG))
        return 0;
    if (argc != 7) {
        fprintf(stderr, "troupe worker: bad command line\n");
        exit(2);
    }
    const char *name = argv[2];
    int fd = atoi(argv[3]);
    unsigned long long mem = strtoull(argv[4], NULL, 10);
    unsigned long long cpu = strtoull(argv[5], NULL, 10);
    long ppid = atol(argv[6]);
    /* Die with the parent; and if it is gone already, do not start. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if ((long)getppid() != ppid)
        _exit(0);
    signal(SIGPIPE, SIG_IGN); /* a vanished parent is a write error */
    /* The channel (dup2'd here without close-on-exec) must not outlive us
     * in a program the behavior runs (system(), popen()): the parent
     * learns of our death by its end of file. */
    if (fd >= 0)
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    tp_behavior b;
    void *state;
    if (fd < 0 || tpi_isolate_lookup(name, &b, &state) != 0) {
        fprintf(stderr, "troupe worker: no isolated behavior \"%s\"\n", name);
        exit(2);
    }
    if (set_limit(RLIMIT_AS, mem) != 0 || set_limit(RLIMIT_CPU, cpu) != 0) {
        fprintf(stderr, "troupe worker: setrlimit: %s\n", strerror(errno));
        exit(2);
    }
    if (mem)
        oom_report_setup(fd, mem);
    exit(worker_run(b, state, fd));
}
