/*
 * Isolated workers, the parent side (issue 7).
 *
 * An isolated actor is a local proxy actor plus a worker process started
 * with posix_spawn of /proc/self/exe (never fork: the parent runs
 * libevent and threads). The proxy owns its end of a socket pair as a
 * tpi_resource (a channel): a bufferevent on the scheduler's base, a
 * watchdog timer and a reaping timer. Everything here runs on the
 * scheduler thread; event callbacks run outside actor turns and reach the
 * proxy only through its mailbox.
 *
 *  - Reading: each frame is split and checked in the read callback,
 *    before anything is allocated for it beyond its (capped) body: a
 *    length over max_frame, a malformed body or impossible fields kill
 *    the worker with a protocol-error reason. DONE frames are counted
 *    there (watchdog, pool load); the others go to the proxy as messages.
 *    Reading stops while the proxy's mailbox is full (the resource's
 *    drained hook resumes it).
 *  - Addressing: a worker is untrusted code. Its SEND frames may carry no
 *    tag of the reserved range (TP_ISOLATE_TAG_RESERVED: supervisors'
 *    requests, sockets' data, ...) and may go only to its spawner or to a
 *    pid that sent it a message. The senders are remembered as their
 *    messages reach the worker (the oldest unacknowledged message is the
 *    one it handles), in two generations of PEERS pids, so at least the
 *    last PEERS distinct ones; anything else is a protocol error.
 *  - Writing: more than OUT_HIGH bytes buffered toward the worker make the
 *    proxy congested (tpi_svc_congest): its senders pause as at a full
 *    mailbox until the worker has read down to OUT_LOW. The proxy keeps
 *    taking its mailbox meanwhile, so the worker's frames, exit signals
 *    and the worker's death still reach it.
 *  - Dying: end of channel (or a kill of ours) starts reaping: waitpid
 *    WNOHANG at once, then on a timer backing off from 1 to 50 ms; a
 *    worker that closed its channel but lives on is killed after
 *    CLOSE_GRACE_MS. The reaped status becomes the proxy's exit reason.
 *  - Ending: when the proxy ends, the channel is closed: the worker is
 *    killed, and if it is not reaped at once the channel lingers, detached,
 *    on the runtime's linger list until it is (tp_runtime_free reaps the
 *    rest, blocking). No zombie is ever left.
 *
 * Uses: runtime/service.h (posting, mailbox pressure, resources, linger)
 * and the public headers.
 */
#include "runtime/isolate/frame.h"
#include "runtime/isolate/isolate_int.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define WORKER_FD 3
#define CLOSE_GRACE_MS 200
#define REAP_MAX_DELAY_MS 50
#define OUT_HIGH ((size_t)1 << 20) /* buffered toward a worker: congested */
#define OUT_LOW (OUT_HIGH / 4)     /* ... until it is down to this */
#define PEERS TP_ISOLATE_PEERS     /* pids per generation of peers */
#define PEER_SLOTS (2 * PEERS)     /* a generation's open-addressed table */

_Atomic uint64_t tpi_iso_spawned, tpi_iso_reaped, tpi_iso_bad_frames,
    tpi_iso_watchdog;

typedef struct iso_chan iso_chan;

typedef struct iso_req {
    uint64_t id;
    tp_reply_handle *h;
} iso_req;

/* The proxy's state. */
typedef struct iso_proxy {
    iso_chan *ch; /* NULL once the channel is closed */
    tp_pid self;
    uint64_t token;
    uint64_t next_id;
    iso_req *reqs; /* requests forwarded, awaiting the worker's reply */
    size_t nreqs, capreqs;
    tpi_iso_hook hook;
    bool has_hook;
} iso_proxy;

struct iso_chan {
    tpi_resource res;  /* first: a resource pointer is a channel pointer */
    tpi_linger linger; /* detached, not yet reaped */
    tp_runtime *rt;
    iso_proxy *proxy; /* NULL once detached (the proxy ended) */
    tp_pid pid;
    uint64_t token;
    pid_t child; /* 0 once reaped */
    struct bufferevent *bev;
    struct event *reap_ev, *dog_ev;
    size_t max_frame;
    unsigned watchdog_ms;
    uint32_t inflight;
    /* The senders of the inflight messages, oldest first: a ring of
     * capacity held_cap (0 or a power of two) from held_head. */
    tp_pid *held;
    uint32_t held_head, held_cap;
    /* Whom the worker may address besides its spawner: generations
     * peers[cur] (npeers pids) and peers[!cur]; 0 is an empty slot. */
    tp_pid spawner;
    tp_pid peers[2][PEER_SLOTS];
    unsigned npeers, cur;
    _Atomic uint32_t *busy;
    bool reaping, killed, paused, truncated, died_sent;
    bool start_pending; /* START sent, not yet acknowledged */
    bool congested;     /* over OUT_HIGH, not yet down to OUT_LOW */
    unsigned reap_delay_ms;
    uint64_t reap_start_ns;
    int why_code; /* a reason decided here (protocol, watchdog), or 0 */
    char why[TP_REASON_TEXT_MAX + 1];
};

static void chan_reap_start(iso_chan *c);

/* ------------------------------------------------------------ helpers */

/* Kill a worker and wait for it (no loop left to wait on, or a spawn
 * undone): the kill makes it short. */
static void reap_now(pid_t child)
{
    int status;
    kill(child, SIGKILL);
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    atomic_fetch_add_explicit(&tpi_iso_reaped, 1, memory_order_relaxed);
}

static const char *signame(int sig)
{
    switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    case SIGSYS: return "SIGSYS";
    default: return "unknown signal";
    }
}

static void set_why(iso_chan *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_why(iso_chan *c, int code, const char *fmt, ...)
{
    if (c->why_code)
        return; /* the first cause is the one reported */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    c->why_code = code;
}

static void chan_kill(iso_chan *c)
{
    if (c->child > 0 && !c->killed) {
        kill(c->child, SIGKILL);
        c->killed = true;
    }
}

/* A message of ours to the proxy: from the runtime, with our token. */
static int deliver(iso_chan *c, int32_t tag, const void *data, size_t len)
{
    tpi_envelope e = {.tag = tag, .ref = c->token, .data = data, .len = len};
    return tpi_svc_post(c->rt, c->pid, &e, false);
}

static void busy_publish(iso_chan *c)
{
    /* relaxed: a load estimate for the pool's router. A start is quick
     * and not a request: a fresh worker counts as idle. */
    if (c->busy)
        atomic_store_explicit(c->busy, c->inflight - c->start_pending,
                              memory_order_relaxed);
}

/* A protocol error (or the watchdog): kill the worker; its death, once
 * reaped, ends the proxy with this reason. */
static void chan_fail(iso_chan *c, int code, const char *what)
{
    set_why(c, code, "%s", what);
    if (code == TP_EPROTO)
        atomic_fetch_add_explicit(&tpi_iso_bad_frames, 1, memory_order_relaxed);
    chan_kill(c);
    if (c->bev) /* nothing more to or from a worker being killed */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    chan_reap_start(c);
}

static void chan_free(iso_chan *c)
{
    if (c->bev)
        bufferevent_free(c->bev); /* closes our end */
    if (c->reap_ev)
        event_free(c->reap_ev);
    if (c->dog_ev)
        event_free(c->dog_ev);
    tp_free(c->held);
    tp_free(c);
}

/* ------------------------------------------------------------ reaping */

/* Tell the proxy its worker died; out of memory, again shortly on the
 * reap timer (no frame will come from a dead worker to retry it). */
static void died_tell(iso_chan *c)
{
    if (c->died_sent)
        return;
    if (deliver(c, TPI_ISO_TAG_DIED, NULL, 0) != TP_ENOMEM) {
        c->died_sent = true; /* told, or nobody left to tell */
        return;
    }
    struct timeval tv = {0, 10000};
    evtimer_add(c->reap_ev, &tv);
}

static void reaped(iso_chan *c, int status, bool known)
{
    c->child = 0;
    atomic_fetch_add_explicit(&tpi_iso_reaped, 1, memory_order_relaxed);
    if (c->dog_ev)
        event_del(c->dog_ev);
    if (!c->proxy) { /* detached: nobody waits for the reason */
        tpi_linger_remove(c->rt, &c->linger);
        chan_free(c);
        return;
    }
    if (!known)
        set_why(c, TP_ESYS, "exited (status unknown: reaped elsewhere)");
    else if (WIFSIGNALED(status))
        set_why(c, TP_ESYS, "killed by signal %d (%s)", WTERMSIG(status),
                signame(WTERMSIG(status)));
    else if (c->truncated)
        set_why(c, TP_EPROTO,
                "protocol error: truncated frame at the end of "
                "the channel (exited with status %d)",
                WEXITSTATUS(status));
    else
        set_why(c, TP_ESYS, "exited with status %d", WEXITSTATUS(status));
    died_tell(c);
}

static bool reap_try(iso_chan *c)
{
    int status = 0;
    pid_t r;
    do
        r = waitpid(c->child, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == c->child) {
        reaped(c, status, true);
        return true;
    }
    if (r < 0) { /* ECHILD: SIGCHLD ignored, or reaped by someone else */
        reaped(c, 0, false);
        return true;
    }
    return false;
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    iso_chan *c = arg;
    if (c->child == 0) { /* reaped; its death not told yet */
        died_tell(c);
        return;
    }
    if (reap_try(c))
        return;
    if (!c->killed && tpi_now_ns() - c->reap_start_ns >=
                          (uint64_t)CLOSE_GRACE_MS * 1000000u) {
        set_why(c, TP_EPROTO, "protocol error: worker closed its channel");
        chan_kill(c);
    }
    c->reap_delay_ms = c->reap_delay_ms ? c->reap_delay_ms * 2 : 1;
    if (c->reap_delay_ms > REAP_MAX_DELAY_MS)
        c->reap_delay_ms = REAP_MAX_DELAY_MS;
    struct timeval tv = {0, (suseconds_t)c->reap_delay_ms * 1000};
    evtimer_add(c->reap_ev, &tv);
}

/* The worker is dead or dying: wait for it without blocking. */
static void chan_reap_start(iso_chan *c)
{
    if (c->reaping || c->child <= 0)
        return;
    c->reaping = true;
    c->reap_start_ns = tpi_now_ns();
    on_reap(-1, 0, c);
}

/* ------------------------------------------------------------ watchdog */

static void dog_arm(iso_chan *c)
{
    struct timeval tv = {c->watchdog_ms / 1000,
                         (suseconds_t)(c->watchdog_ms % 1000) * 1000};
    evtimer_add(c->dog_ev, &tv);
}

static void on_dog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    iso_chan *c = arg;
    if (c->inflight == 0 || c->child <= 0)
        return;
    if (c->paused) { /* we stopped reading: it may be blocked writing */
        dog_arm(c);
        return;
    }
    char text[96];
    snprintf(text, sizeof text,
             "watchdog: a message was not handled within %u ms",
             c->watchdog_ms);
    atomic_fetch_add_explicit(&tpi_iso_watchdog, 1, memory_order_relaxed);
    chan_fail(c, TP_ETIMEDOUT, text);
}

/* ------------------------------------------------------------- peers */

static tp_pid *peer_slot(tp_pid *gen, tp_pid pid)
{
    /* Fibonacci hashing of the whole pid (slot and generation). */
    uint32_t i = (uint32_t)((pid * 0x9e3779b97f4a7c15ull) >> 32);
    for (;; i++) {
        tp_pid *s = &gen[i % PEER_SLOTS];
        if (*s == pid || *s == TP_PID_NONE)
            return s;
    }
}

/* pid is one the worker may address. */
static bool peer_known(iso_chan *c, tp_pid pid)
{
    return pid == c->spawner || *peer_slot(c->peers[c->cur], pid) == pid ||
           *peer_slot(c->peers[!c->cur], pid) == pid;
}

/* Remember pid as recently met: in the newer generation, which replaces
 * the older one when full. */
static void peer_note(iso_chan *c, tp_pid pid)
{
    if (pid == TP_PID_NONE || pid == c->spawner)
        return;
    tp_pid *s = peer_slot(c->peers[c->cur], pid);
    if (*s == pid)
        return;
    if (c->npeers == PEERS) {
        c->cur = !c->cur;
        memset(c->peers[c->cur], 0, sizeof c->peers[c->cur]);
        c->npeers = 0;
        s = peer_slot(c->peers[c->cur], pid);
    }
    *s = pid;
    c->npeers++;
}

/* ------------------------------------------------------------ in flight */

/* A message from `from` went to the worker. TP_ENOMEM. */
static int inflight_add(iso_chan *c, tp_pid from)
{
    if (c->inflight == c->held_cap) {
        uint32_t cap = c->held_cap ? c->held_cap * 2 : 16;
        tp_pid *v = tp_alloc(cap * sizeof *v);
        if (!v)
            return TP_ENOMEM;
        for (uint32_t i = 0; i < c->inflight; i++)
            v[i] = c->held[(c->held_head + i) & (c->held_cap - 1)];
        tp_free(c->held);
        c->held = v;
        c->held_head = 0;
        c->held_cap = cap;
    }
    c->held[(c->held_head + c->inflight) & (c->held_cap - 1)] = from;
    if (c->inflight++ == 0) {
        peer_note(c, from); /* the worker handles it now */
        if (c->dog_ev)
            dog_arm(c);
    }
    busy_publish(c);
    return 0;
}

static int inflight_done(iso_chan *c, int64_t n)
{
    if (n <= 0 || (uint64_t)n > c->inflight)
        return -1;
    c->inflight -= (uint32_t)n;
    c->held_head = (c->held_head + (uint32_t)n) & (c->held_cap - 1);
    c->start_pending = false; /* the first message handled is START */
    if (c->inflight)          /* the worker handles the next one now */
        peer_note(c, c->held[c->held_head]);
    if (c->dog_ev) { /* progress: the next message gets its full time */
        if (c->inflight)
            dog_arm(c);
        else
            event_del(c->dog_ev);
    }
    busy_publish(c);
    return 0;
}

/* ------------------------------------------------------------ reading */

/* Fields a frame from the worker must satisfy before the proxy sees it. */
static const char *frame_fields_bad(const tpi_frame *f)
{
    switch (f->kind) {
    case TPI_FRAME_SEND:
        if (f->a < 0 || f->a > INT32_MAX || f->b == 0)
            return "SEND frame with a bad tag or pid";
        if (f->a >= TP_ISOLATE_TAG_RESERVED)
            return "SEND frame with a reserved tag";
        return NULL;
    case TPI_FRAME_REPLY:
        if (f->a != 0 && f->a != TP_ENOREPLY && f->a != TP_ENOPROC)
            return "REPLY frame with a bad status";
        if (f->a != 0 && f->len)
            return "REPLY frame with a status and a payload";
        return NULL;
    case TPI_FRAME_DONE: return NULL;
    case TPI_FRAME_EXIT:
        if (f->a < TP_EXIT_NORMAL || f->a > TP_EXIT_ERROR ||
            f->a == TP_EXIT_KILL || f->b < INT32_MIN || f->b > INT32_MAX ||
            f->len > TP_REASON_TEXT_MAX)
            return "EXIT frame with a bad reason";
        return NULL;
    default: return "frame of an unknown kind";
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    iso_chan *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char text[160];
    while (c->child > 0 && !c->killed) {
        if (c->proxy && tpi_svc_full(c->rt, c->pid)) {
            /* Backpressure: the proxy is behind; on_drained resumes. */
            c->paused = true;
            bufferevent_disable(bev, EV_READ);
            return;
        }
        size_t avail = evbuffer_get_length(in), blen;
        uint8_t hdr[4];
        if (avail < 4) {
            bufferevent_setwatermark(bev, EV_READ, 0, 0);
            return;
        }
        evbuffer_copyout(in, hdr, 4);
        /* Only the 4 length bytes are read; avail tells whether the rest is in. */
        int rc = tpi_frame_next(hdr, avail, c->max_frame, &blen);
        if (rc < 0) {
            if (rc == TP_E2BIG)
                snprintf(text, sizeof text,
                         "protocol error: frame of %zu "
                         "bytes over the limit of %zu",
                         blen ? blen
                              : (size_t)((uint32_t)hdr[0] << 24 |
                                         (uint32_t)hdr[1] << 16 |
                                         (uint32_t)hdr[2] << 8 | hdr[3]),
                         c->max_frame);
            else
                snprintf(text, sizeof text,
                         "protocol error: frame of length 0");
            chan_fail(c, TP_EPROTO, text);
            return;
        }
        if (rc > 0) {
            /* Wake us when the whole frame is there (no high mark). */
            bufferevent_setwatermark(bev, EV_READ, 4 + blen, 0);
            return;
        }
        const uint8_t *body = evbuffer_pullup(in, (ev_ssize_t)(4 + blen));
        if (!body) {
            chan_fail(c, TP_ENOMEM,
                      "out of memory for a frame from the worker");
            return;
        }
        body += 4;
        tpi_frame f;
        const char *why = NULL;
        if (tpi_frame_decode(body, blen, &f, &why) != 0 ||
            (why = frame_fields_bad(&f)) != NULL ||
            (f.kind == TPI_FRAME_SEND && !peer_known(c, (tp_pid)f.b) &&
             (why = "SEND frame to a pid it was not given")) ||
            (f.kind == TPI_FRAME_DONE && inflight_done(c, f.a) != 0 &&
             (why = "DONE frame for more messages than were sent"))) {
            snprintf(text, sizeof text, "protocol error: %s", why);
            chan_fail(c, TP_EPROTO, text);
            return;
        }
        if (f.kind == TPI_FRAME_SEND)
            peer_note(c, (tp_pid)f.b);
        /* The checked frame goes to the proxy as the body of a message. */
        if (f.kind != TPI_FRAME_DONE && c->proxy &&
            deliver(c, TPI_ISO_TAG_FRAME, body, blen) != 0) {
            chan_fail(c, TP_ENOMEM,
                      "out of memory for a frame from the worker");
            return;
        }
        evbuffer_drain(in, 4 + blen);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    iso_chan *c = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if ((what & BEV_EVENT_WRITING) && !(what & BEV_EVENT_EOF)) {
        /* It no longer reads (it is ending): what it wrote before still
         * counts, its replies and its exit reason. Read on to its end. */
        bufferevent_disable(bev, EV_WRITE);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        c->truncated = true;
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    chan_reap_start(c);
}

/* Written down to the low mark (the watermark): senders may go on. */
static void on_write(struct bufferevent *bev, void *arg)
{
    iso_chan *c = arg;
    if (c->congested &&
        evbuffer_get_length(bufferevent_get_output(bev)) <= OUT_LOW) {
        c->congested = false;
        (void)tpi_svc_congest(c->rt, c->pid, false);
    }
}

static void on_drained(tpi_resource *r)
{
    iso_chan *c = (iso_chan *)r;
    if (c->paused && c->bev && c->child > 0 && !c->killed) {
        c->paused = false;
        bufferevent_enable(c->bev, EV_READ);
        on_read(c->bev, c); /* frames may be buffered already */
    }
}

/* tp_runtime_free, for a detached worker not reaped yet. */
static void linger_end(tpi_linger *l)
{
    iso_chan *c = (iso_chan *)((char *)l - offsetof(iso_chan, linger));
    if (c->child > 0)
        reap_now(c->child);
    chan_free(c);
}

/* The proxy ended (or the runtime is torn down): kill the worker and reap
 * it, lingering detached if it is not gone yet. */
static void chan_close(tpi_resource *r)
{
    iso_chan *c = (iso_chan *)r;
    if (c->proxy)
        c->proxy->ch = NULL;
    c->proxy = NULL;
    c->busy = NULL;
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    if (c->dog_ev)
        event_del(c->dog_ev);
    if (c->child <= 0) {
        chan_free(c);
        return;
    }
    if (tpi_svc_phase(c->rt) != TPI_PHASE_RUNNING) {
        reap_now(c->child);
        chan_free(c);
        return;
    }
    chan_kill(c);
    c->linger.finish = linger_end;
    tpi_linger_add(c->rt, &c->linger);
    if (c->reaping)
        return;         /* its timer is running */
    chan_reap_start(c); /* may free c */
}

/* ------------------------------------------------------------- writing */

static void chan_write(iso_chan *c, int64_t kind, int64_t a, int64_t b,
                       int64_t cc, int64_t d, const void *data, size_t len)
{
    if (!c || !c->bev || c->child <= 0 || c->killed)
        return; /* dying: the proxy ends when the worker is reaped */
    uint8_t head[TPI_FRAME_HEAD_MAX];
    size_t n = tpi_frame_head(head, kind, a, b, cc, d, len);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* b is the message's sender (START: the spawner). */
    if (evbuffer_add(out, head, n) != 0 ||
        (len && evbuffer_add(out, data, len) != 0) ||
        inflight_add(c, (tp_pid)b) != 0) {
        chan_fail(c, TP_ENOMEM, "out of memory for a frame to the worker");
        return;
    }
    if (!c->congested && evbuffer_get_length(out) > OUT_HIGH &&
        tpi_svc_congest(c->rt, c->pid, true) == 0)
        c->congested = true;
}

/* --------------------------------------------------------------- proxy */

static void proxy_free(void *state)
{
    iso_proxy *p = state;
    /* The obligations themselves went with the actor (answered
     * TP_ENOPROC); only our index of them is left. */
    tp_free(p->reqs);
    if (p->has_hook && p->hook.ended)
        p->hook.ended(p->hook.arg, p->self);
    tp_free(p);
}

static tp_reply_handle *req_take(iso_proxy *p, uint64_t id)
{
    for (size_t i = 0; i < p->nreqs; i++)
        if (p->reqs[i].id == id) {
            tp_reply_handle *h = p->reqs[i].h;
            p->reqs[i] = p->reqs[--p->nreqs];
            return h;
        }
    return NULL;
}

/* Answer a taken obligation with a runtime status (TP_ENOREPLY or
 * TP_ENOPROC, as the worker's runtime decided). */

static void proxy_frame(tp_ctx *ctx, iso_proxy *p, const tp_msg *msg)
{
    size_t blen;
    const void *body = tp_msg_data(msg, &blen);
    tpi_frame f;
    if (tpi_frame_decode(body, blen, &f, NULL) != 0)
        return; /* checked in on_read */
    switch (f.kind) {
    case TPI_FRAME_SEND:
        (void)tp_send(ctx, (tp_pid)f.b, (int32_t)f.a, f.payload, f.len);
        break;
    case TPI_FRAME_REPLY: {
        tp_reply_handle *h = req_take(p, (uint64_t)f.c);
        if (!h) {
            if (p->ch)
                chan_fail(p->ch, TP_EPROTO,
                          "protocol error: REPLY frame for no request");
            break;
        }
        if (f.a == 0)
            (void)tp_reply_send(ctx, h, f.payload, f.len);
        else
            (void)tpi_svc_reply_status(ctx, h, (int)f.a);
        break;
    }
    case TPI_FRAME_EXIT: {
        char text[TP_REASON_TEXT_MAX + 1];
        memcpy(text, f.payload ? f.payload : "", f.len);
        text[f.len] = '\0';
        tp_reason r = {(tp_exit_kind)f.a, (int)f.b, f.len ? text : NULL};
        if (r.kind == TP_EXIT_ERROR && r.code >= 0)
            r.code = TP_EINVAL; /* an error reason has a TP_E* code */
        tp_exit(ctx, r);
        break;
    }
    }
}

static void proxy_forward(tp_ctx *ctx, iso_proxy *p, const tp_msg *msg)
{
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    uint64_t ref = tp_msg_ref(msg);
    unsigned flags = 0;
    if (len > TP_ISOLATE_FRAME_DEFAULT - TPI_FRAME_HEAD_MAX) {
        /* More than a worker takes in a frame (a max_payload raised over
         * 64 MiB): the worker would exit on it. Only this one is dropped,
         * a request answered TP_E2BIG. */
        tp_reply_handle *h = tp_reply_take(ctx, msg);
        if (h)
            (void)tpi_svc_reply_status(ctx, h, TP_E2BIG);
        return;
    }
    if (tp_msg_wants_reply(msg)) {
        /* Take the obligation: if the worker dies before answering, the
         * proxy's end answers it TP_ENOPROC. */
        if (p->nreqs == p->capreqs) {
            size_t cap = p->capreqs ? p->capreqs * 2 : 16;
            iso_req *v = tp_realloc(p->reqs, cap * sizeof *v);
            if (!v)
                return; /* answered TP_ENOREPLY */
            p->reqs = v;
            p->capreqs = cap;
        }
        tp_reply_handle *h = tp_reply_take(ctx, msg);
        if (!h)
            return;
        ref = ++p->next_id;
        p->reqs[p->nreqs++] = (iso_req){ref, h};
        flags = TPI_FRAME_REQUEST;
    }
    chan_write(p->ch, TPI_FRAME_MSG, tp_msg_tag(msg), (int64_t)tp_msg_from(msg),
               (int64_t)ref, flags, data, len);
}

static int proxy(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    iso_proxy *p = state;
    int32_t tag = tp_msg_tag(msg);
    if (tag == TP_TAG_START) {
        p->self = tp_self(ctx);
        if (p->ch) {
            p->ch->start_pending = true;
            p->ch->spawner = tp_msg_from(msg);
        }
        chan_write(p->ch, TPI_FRAME_START, (int64_t)p->self,
                   (int64_t)tp_msg_from(msg), 0, 0, NULL, 0);
        return TP_HANDLED;
    }
    bool mine = tp_msg_from(msg) == TP_PID_NONE && tp_msg_ref(msg) == p->token;
    if (mine && tag == TPI_ISO_TAG_FRAME) {
        proxy_frame(ctx, p, msg);
    } else if (mine && tag == TPI_ISO_TAG_DIED) {
        iso_chan *c = p->ch;
        tp_exit(ctx, TP_REASON_ERROR(c && c->why_code ? c->why_code : TP_ESYS,
                                     c ? c->why : "worker gone"));
    } else if (tag >= 0) {
        proxy_forward(ctx, p, msg);
    }
    return TP_HANDLED;
}

/* --------------------------------------------------------------- spawn */

static int spawn_worker(const char *name, const tp_isolate_opts *o,
                        int child_fd, pid_t *pid_out)
{
    char mem[32], cpu[32], ppid[32], fd[8];
    snprintf(mem, sizeof mem, "%zu", o->mem_limit);
    snprintf(cpu, sizeof cpu, "%u", o->cpu_limit_s);
    snprintf(ppid, sizeof ppid, "%ld", (long)getpid());
    snprintf(fd, sizeof fd, "%d", WORKER_FD);
    char *argv[] = {program_invocation_name,
                    (char *)TP_ISOLATE_WORKER_ARG,
                    (char *)name,
                    fd,
                    mem,
                    cpu,
                    ppid,
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int e = posix_spawn_file_actions_init(&fa);
    if (e)
        return errno = e, TP_ENOMEM;
    if ((e = posix_spawnattr_init(&at)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return errno = e, TP_ENOMEM;
    }
    /* The child keeps stdio and its channel, as descriptor 3, and nothing
     * else, even descriptors the application left inheritable. */
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaddset(&def, s);
    if (!(e = posix_spawn_file_actions_adddup2(&fa, child_fd, WORKER_FD)) &&
        !(e = posix_spawn_file_actions_addclosefrom_np(&fa, WORKER_FD + 1)) &&
        !(e = posix_spawnattr_setsigmask(&at, &none)) &&
        !(e = posix_spawnattr_setsigdefault(&at, &def)) &&
        !(e = posix_spawnattr_setpgroup(&at, 0)) &&
        !(e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
                                                POSIX_SPAWN_SETSIGDEF |
                                                POSIX_SPAWN_SETPGROUP)))
        e = posix_spawn(pid_out, "/proc/self/exe", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (e)
        return errno = e, TP_ESYS;
    atomic_fetch_add_explicit(&tpi_iso_spawned, 1, memory_order_relaxed);
    return 0;
}

int tpi_isolate_spawn(tp_ctx *ctx, const tp_isolate_opts *o,
                      const tpi_iso_hook *hook, tp_pid *pid_out)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    if (!rt)
        return TP_ESTATE;
    if (!o || !o->name || (o->flags & ~TP_SPAWN_LINK))
        return TP_EINVAL;
    tp_behavior b;
    void *unused;
    int rc = tpi_isolate_lookup(o->name, &b, &unused);
    if (rc)
        return rc;
    iso_proxy *p = tp_calloc(sizeof *p);
    iso_chan *c = tp_calloc(sizeof *c);
    int sv[2] = {-1, -1};
    if (!p || !c) {
        tp_free(p);
        tp_free(c);
        return TP_ENOMEM;
    }
    c->rt = rt;
    c->max_frame = o->max_frame ? o->max_frame : TP_ISOLATE_FRAME_DEFAULT;
    if (c->max_frame > UINT32_MAX)
        c->max_frame = UINT32_MAX;
    c->watchdog_ms = o->watchdog_ms;
    c->token = p->token = tpi_svc_ref(rt);
    c->res.close = chan_close;
    c->res.drained = on_drained;
    c->proxy = p;
    p->ch = c;
    if (hook) {
        p->hook = *hook;
        p->has_hook = true;
        c->busy = hook->inflight;
    }
    /* The proxy will live on this loop: it starts on its spawner's, and
     * the channel pins it there once attached. */
    struct event_base *base = tpi_svc_loop(ctx, false);
    c->reap_ev = evtimer_new(base, on_reap, c);
    c->dog_ev = o->watchdog_ms ? evtimer_new(base, on_dog, c) : NULL;
    if (!c->reap_ev || (o->watchdog_ms && !c->dog_ev)) {
        rc = TP_ENOMEM;
        goto fail;
    }
    tpi_svc_no_sigpipe(); /* a dead worker: an error on its channel */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = TP_ESYS;
        goto fail;
    }
    if (sv[1] == WORKER_FD) { /* dup2 onto itself would keep CLOEXEC */
        int d = fcntl(sv[1], F_DUPFD_CLOEXEC, WORKER_FD + 1);
        if (d < 0) {
            rc = TP_ESYS;
            goto fail;
        }
        close(sv[1]);
        sv[1] = d;
    }
    if ((rc = spawn_worker(o->name, o, sv[1], &c->child)) != 0)
        goto fail;
    close(sv[1]);
    sv[1] = -1;
    evutil_make_socket_nonblocking(sv[0]);
    c->bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        rc = TP_ENOMEM;
        goto fail;
    }
    sv[0] = -1; /* the bufferevent owns it */
    tp_spawn_opts so = {o->mailbox_capacity, o->flags, proxy_free};
    tp_pid pid;
    if ((rc = tp_spawn(ctx, proxy, p, &so, &pid)) != 0)
        goto fail;
    /* The proxy has not run yet and lives on this loop: attaching the
     * channel pins it here, where the channel's events live. */
    c->pid = p->self = pid;
    if (tpi_svc_attach(ctx, pid, &c->res, NULL) != 0) {
        /* The proxy finds no channel, and ends when told it died; its
         * hook is not told (the caller learns from our error). */
        p->ch = NULL;
        p->has_hook = false;
        c->proxy = NULL;
        tp_kill(ctx, pid);
        chan_close(&c->res);
        return TP_ENOMEM;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_enable(c->bev, EV_READ);
    if (pid_out)
        *pid_out = pid;
    return 0;
fail:;
    int e = errno;
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (c->child > 0)
        reap_now(c->child);
    chan_free(c);
    tp_free(p);
    errno = e;
    return rc;
}

int tp_isolate_spawn(tp_ctx *ctx, const tp_isolate_opts *opts, tp_pid *pid_out)
{
    return tpi_isolate_spawn(ctx, opts, NULL, pid_out);
}

int tp_isolate_child_start(tp_ctx *ctx, void *arg, const void *args,
                           size_t args_len, tp_pid *pid_out)
{
    (void)args;
    (void)args_len;
    if (!arg)
        return TP_EINVAL;
    tp_isolate_opts o = *(const tp_isolate_opts *)arg;
    o.flags = TP_SPAWN_LINK;
    return tpi_isolate_spawn(ctx, &o, NULL, pid_out);
}

void tp_isolate_stats_get(tp_isolate_stats *out)
{
    if (!out)
        return;
    out->spawned = atomic_load_explicit(&tpi_iso_spawned, memory_order_relaxed);
    out->reaped = atomic_load_explicit(&tpi_iso_reaped, memory_order_relaxed);
    out->bad_frames =
        atomic_load_explicit(&tpi_iso_bad_frames, memory_order_relaxed);
    out->watchdog =
        atomic_load_explicit(&tpi_iso_watchdog, memory_order_relaxed);
}
