/*
 * Isolated workers, the worker process (issue 7): the registry of
 * isolated behaviors, tp_isolate_main, and the worker loop.
 *
 * A worker is a fresh process (exec'd), so it may run libevent: it makes
 * a runtime of its own whose scheduler loop reads the channel. The
 * behavior runs on a stand-in actor that is not in any table and carries
 * the proxy's pid, so tp_self and every ctx call made by the behavior
 * work as in the parent. The runtime's route hook then sends every
 * delivery the behavior causes over the channel instead of into a
 * mailbox: replies (tp_reply, the runtime's TP_ENOREPLY) as REPLY frames,
 * user messages as SEND frames; messages to itself (timers, receive
 * timeouts, sends to tp_self) stay in the worker. After each batch of
 * frames the worker acknowledges what it handled (DONE), which drives the
 * parent's watchdog and pool load.
 */
#include "runtime/isolate/isolate_int.h"
#include "runtime/alloc.h"
#include "runtime/isolate/frame.h"
#include "runtime/runtime.h"

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

#define EXIT_KIND_SHIFT 8 /* as in actors/actor.c: the kind kept in flags */
#define FLUSH_AT ((size_t)256 << 10)

/* ----------------------------------------------------------- registry */

static struct {
    char name[TP_ISOLATE_NAME_MAX + 1];
    tp_behavior b;
    void *state;
} reg[TP_ISOLATE_MAX_BEHAVIORS];
static int nreg;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

int tp_isolate_register(const char *name, tp_behavior b, void *state)
{
    if (!name || !b || !name[0] || strlen(name) > TP_ISOLATE_NAME_MAX)
        return TP_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < nreg && !rc; i++)
        if (strcmp(reg[i].name, name) == 0)
            rc = TP_EEXIST;
    if (!rc && nreg == TP_ISOLATE_MAX_BEHAVIORS)
        rc = TP_ENOMEM;
    if (!rc) {
        snprintf(reg[nreg].name, sizeof reg[nreg].name, "%s", name);
        reg[nreg].b = b;
        reg[nreg].state = state;
        nreg++;
    }
    pthread_mutex_unlock(&reg_lock);
    return rc;
}

int tpi_isolate_lookup(const char *name, tp_behavior *b, void **state)
{
    int rc = TP_ENOENT;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < nreg; i++)
        if (strcmp(reg[i].name, name) == 0) {
            *b = reg[i].b;
            *state = reg[i].state;
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&reg_lock);
    return rc;
}

/* -------------------------------------------------------------- worker */

typedef struct worker {
    tp_runtime *rt;
    tpi_actor *w; /* the stand-in actor */
    tp_pid self;
    int fd;
    struct event *rev, *lev;
    struct evbuffer *in, *out;
    tpi_msglist local; /* messages to itself */
    int64_t handled;   /* frames handled since the last DONE */
    bool ending;
    int status;
} worker;

static worker wk; /* one per process */

static void stop(int status)
{
    if (!wk.ending) {
        wk.ending = true;
        wk.status = status;
        tpi_sched_stop(&wk.rt->scheds[0]);
    }
}

/* Write out everything queued; blocking is fine in a worker. */
static void flush_out(void)
{
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
        return;
    }
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

/* The route hook: every delivery made in this process. Consumes m. */
static int route(tp_runtime *rt, tpi_actor *from, tp_pid to, tpi_msg *m)
{
    (void)rt;
    (void)from;
    int rc = 0;
    if (to == wk.self && !(m->flags & TPI_MSG_REQUEST) &&
        (m->tag >= 0 || m->tag == TP_TAG_TIMEOUT)) {
        tpi_msglist_push(&wk.local, m); /* timers and sends to itself */
        event_active(wk.lev, EV_TIMEOUT, 0);
        return 0;
    }
    if (m->tag == TP_TAG_REPLY)
        put_frame(TPI_FRAME_REPLY, m->status, 0, (int64_t)m->ref, 0, m->data,
                  m->len);
    else if (m->tag >= 0 && !(m->flags & TPI_MSG_REQUEST))
        put_frame(TPI_FRAME_SEND, m->tag, (int64_t)to, 0, 0, m->data, m->len);
    else
        rc = TP_ESTATE; /* calls, links, monitors, exit signals */
    tpi_msg_free(m);
    return rc;
}

static tp_reason exit_reason(tpi_actor *a)
{
    tp_exit_kind kind = (tp_exit_kind)(a->flags >> EXIT_KIND_SHIFT);
    if (a->ext && a->ext->reason.kind == kind)
        return a->ext->reason;
    return (tp_reason){kind, kind == TP_EXIT_ERROR ? TP_ENOMEM : 0, NULL};
}

static void finish(void)
{
    tp_reason r = exit_reason(wk.w);
    size_t tlen = r.text ? strnlen(r.text, TP_REASON_TEXT_MAX) : 0;
    put_done();
    put_frame(TPI_FRAME_EXIT, r.kind, r.code, 0, 0, r.text, tlen);
    flush_out();
    stop(0);
}

/* Run the behavior for m, as a turn of actors/actor.c would. Consumes m. */
static void run_one(tpi_msg *m)
{
    tpi_actor *a = wk.w;
    tpi_sched *s = &wk.rt->scheds[0];
    s->cur = a;
    s->cur_msg = m;
    s->became = false;
    s->pause_on = TP_PID_NONE;
    m->flags |= TPI_MSG_SETTLED;
    int r = a->behavior((tp_ctx *)a, a->state, m);
    s->cur = NULL;
    s->cur_msg = NULL;
    if (r == TP_DEFER && m->tag == TP_TAG_START)
        r = TP_HANDLED;
    tpi_actor_ext *x = NULL;
    if (r == TP_DEFER || s->became)
        x = tpi_actor_ext_get(a);
    if (r == TP_DEFER && !x)
        r = TP_ENOMEM;
    if (r == TP_DEFER)
        tpi_msglist_push(&x->stash, m);
    if (s->became && x)
        tpi_msglist_prepend(&x->replay, &x->stash);
    if (r != TP_DEFER) {
        tpi_reply_settle(a, m);
        tpi_msg_free(m);
        if (r < 0)
            tpi_actor_set_exit(a, TP_REASON_ERROR(r, tp_strerror(r)));
    }
    if (a->ext && a->ext->rto_ms >= 0 && !(a->flags & TPI_ACT_EXITING))
        tpi_rto_rearm(a);
}

/* Run m, then whatever a tp_become put up for replay. */
static void run(tpi_msg *m)
{
    run_one(m);
    while (!(wk.w->flags & TPI_ACT_EXITING) && wk.w->ext &&
           wk.w->ext->replay.head)
        run_one(tpi_msglist_pop(&wk.w->ext->replay));
    if (wk.w->flags & TPI_ACT_EXITING)
        finish();
}

static void on_local(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    tpi_actor *a = wk.w;
    for (tpi_msg *m; !wk.ending && (m = tpi_msglist_pop(&wk.local));) {
        bool give = true;
        if (m->flags & TPI_MSG_TIMER) {
            give = tpi_timer_claim(a, m->ref);
        } else if (m->tag == TP_TAG_TIMEOUT) {
            give = a->ext && a->ext->rto_timer == m->ref;
            if (give) {
                a->ext->rto_timer = 0;
                a->ext->rto_ms = -1;
            }
        }
        if (give)
            run(m);
        else
            tpi_msg_free(m);
    }
    if (!wk.ending)
        flush_out();
}

/* A frame from the parent (trusted, but checked all the same). */
static int take_frame(const tpi_frame *f)
{
    tpi_msg *m;
    switch (f->kind) {
    case TPI_FRAME_START:
        wk.self = (tp_pid)f->a;
        wk.w->index = tpi_pid_index(wk.self);
        atomic_store(&wk.w->gen, tpi_pid_gen(wk.self));
        if (!(m = tpi_msg_new(TP_TAG_START, NULL, 0)))
            return TP_ENOMEM;
        m->from = (tp_pid)f->b;
        break;
    case TPI_FRAME_MSG:
        if (f->a < 0 || f->a > INT32_MAX || wk.self == TP_PID_NONE)
            return TP_EPROTO;
        if (!(m = tpi_msg_new((int32_t)f->a, f->payload, f->len)))
            return TP_ENOMEM;
        m->from = (tp_pid)f->b;
        m->ref = (tp_ref)f->c;
        if (f->d & TPI_FRAME_REQUEST) {
            m->flags |= TPI_MSG_REQUEST;
            m->reply_to = wk.self; /* routed back as a REPLY frame */
        }
        break;
    default: return TP_EPROTO;
    }
    m->to_gen = tpi_pid_gen(wk.self);
    wk.handled++;
    run(m);
    return 0;
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
        if (rc < 0 ||
            tpi_frame_decode(evbuffer_pullup(wk.in, (ev_ssize_t)(4 + blen)) + 4,
                             blen, &f, &why) != 0 ||
            (rc = take_frame(&f)) != 0) {
            fprintf(stderr, "troupe worker: bad frame from the parent: %s\n",
                    rc == TP_ENOMEM ? "out of memory" : why);
            stop(3);
            return;
        }
        evbuffer_drain(wk.in, 4 + blen);
    }
    if (!wk.ending) {
        put_done();
        flush_out();
    }
}

static void free_list(tpi_msglist *l)
{
    for (tpi_msg *m; (m = tpi_msglist_pop(l));)
        tpi_msg_free(m);
}

/* Free what the stand-in actor holds (its ext is ours to free: it is in
 * no table, so nothing else ever will). */
static void release_actor(tpi_actor *a)
{
    tpi_actor_ext *x = a->ext;
    if (x) {
        free_list(&x->stash);
        free_list(&x->replay);
        tpi_pending_free_all(a);
        tpi_timers_free_all(a);
        for (tp_reply_handle *r = x->replies, *n; r; r = n) {
            n = r->next;
            tpi_free(r);
        }
        tpi_free(x->links.v);
        tpi_free(x->watchers.v);
        tpi_free(x->monitoring.v);
        tpi_free(x->name);
        tpi_free((char *)x->reason.text);
        tpi_free(x);
    }
    tpi_free(a);
}

static int worker_run(tp_behavior b, void *state, int fd)
{
    wk.fd = fd;
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 1; /* one actor, run by hand on this thread */
    if (tp_runtime_new(&cfg, &wk.rt) != 0)
        return 1;
    wk.rt->route = route;
    wk.w = tpi_calloc(sizeof *wk.w);
    wk.in = evbuffer_new();
    wk.out = evbuffer_new();
    struct event_base *base = wk.rt->scheds[0].base;
    wk.rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, NULL);
    wk.lev = event_new(base, -1, 0, on_local, NULL);
    if (!wk.w || !wk.in || !wk.out || !wk.rev || !wk.lev ||
        evutil_make_socket_nonblocking(fd) != 0 || event_add(wk.rev, NULL) != 0)
        return 1;
    wk.w->behavior = b;
    wk.w->state = state;
    atomic_init(&wk.w->home, &wk.rt->scheds[0]);
    tpi_sched_run(&wk.rt->scheds[0]);
    int status = wk.status;
    free_list(&wk.local);
    release_actor(wk.w);
    event_free(wk.rev);
    event_free(wk.lev);
    evbuffer_free(wk.in);
    evbuffer_free(wk.out);
    tp_runtime_free(wk.rt);
    close(fd);
    return status;
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
    exit(worker_run(b, state, fd));
}
