/*
 * Socket actors. A listener is an ordinary actor (trapping exits) that
 * owns the listening socket; a non-persistent read event on it tells the
 * listener, by a message, that connections wait, and the listener accepts
 * them in its own turn. Each connection (a socket, a read event, a write
 * event and an output evbuffer) is attached to its connection actor as a
 * tpi_resource:
 *  - reading: each readable event reads once and delivers the bytes as one
 *    TP_NET_DATA message; the read event is removed while the actor's
 *    mailbox is at or over capacity (the resource's drained hook adds it
 *    back) or while output is over the high-water mark (added back by the
 *    write path at the low-water mark, half of it);
 *  - writing: tp_conn_write writes at once when nothing is queued (no
 *    event round trip), and queues the rest behind a write event. While
 *    more than output_limit bytes wait, the write event carries a timeout
 *    of output_stall: a peer that takes no byte for that long is cut (one
 *    that reads keeps it from firing, however large the burst);
 *  - ending: when the actor ends, the resource is closed; pending output is
 *    then flushed by a "lingering" close (write, shutdown(SHUT_WR), discard
 *    input until EOF) so that a last reply is not lost to an RST: for
 *    LINGER_SECS at most, plus a second per LINGER_RATE bytes left to
 *    write, however the peer trickles bytes in or out (its connection no
 *    longer counts against max_conns). Lingering sockets are on the runtime's linger list,
 *    so tp_runtime_free finishes them at the latest.
 * Connections are spread over the schedulers: the listener spawns each
 * connection actor with conn_boot as its behavior, attaches the socket and
 * places the actor on the scheduler with the fewest of its connections;
 * conn_boot, in the actor's first turn there, makes the socket's events on
 * that loop and hands over to the application's behavior. A socket's
 * events live on its actor's home thread, and everything here runs on
 * that thread: event callbacks run outside actor turns, and touch an
 * actor only through its mailbox. When the scheduler moves the actor
 * (its home thread, between turns), conn_detach takes the events off
 * that loop and conn_attach, on the new home before the actor's next
 * turn, makes them on its loop, with the pending output and the pauses
 * as they were.
 *
 * Out of fds (EMFILE, ENFILE), a listener refuses the waiting clients as
 * for max_conns instead of leaving them in the backlog: it keeps one
 * spare fd, and frees it to accept and refuse one client at a time.
 *
 * Uses: runtime/service.h (posting, mailbox pressure, resources, linger)
 * and the public headers.
 */
#include "runtime/service.h"
#include "troupe/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum { TAG_ACCEPT = 0x7fff0180 }; /* listener-internal, reserved range */

#define DEFAULT_HIGH_WATER ((size_t)64 << 10)
#define DEFAULT_OUTPUT_LIMIT ((size_t)32 << 20)
#define DEFAULT_OUTPUT_STALL_MS 10000u
#define ACCEPTS_PER_TURN 64
#define BACKOFF_FIRST_MS 10u
#define BACKOFF_MAX_MS 1000u
#define LINGER_SECS 2
#define LINGER_RATE ((size_t)64 << 10) /* bytes a second, at least */
#define READS_PER_EVENT 16

/* ------------------------------------------------------------ connections */

typedef struct tpi_conn {
    tpi_resource res;  /* first: a resource pointer is a conn pointer */
    tpi_linger linger; /* after the owner ended */
    tp_runtime *rt;
    tp_pid pid;
    tp_behavior behavior; /* the application's, after conn_boot */
    int fd;               /* -1 once dropped */
    struct event *rev;    /* readable; added while reading */
    struct event *wev;    /* writable; added while output is pending */
    struct evbuffer *out; /* output the socket did not take yet; NULL
                             until conn_boot made the events */
    size_t high_water, output_limit;
    struct timeval stall; /* output_stall */
    uint64_t linger_by;   /* lingering: finished by then (tpi_now_ns) */
    bool reading, writing, over, paused_mb, paused_out, eof, closed_sent,
        shut_wr, lingering, add_failed;
    char peer[96];
} tpi_conn;

/* Reads go through one buffer per scheduler thread, after room for the
 * msgpack bin header, then into a message of the exact size. */
#define BIN_HEAD_MAX 5
static _Thread_local char rbuf[BIN_HEAD_MAX + 64 * 1024];
#define RBUF_DATA (rbuf + BIN_HEAD_MAX)
#define RBUF_ROOM (sizeof rbuf - BIN_HEAD_MAX)

static const struct timeval linger_tv = {LINGER_SECS, 0};

static void conn_close(tpi_resource *r);

static void send_closed(tpi_conn *c, int code)
{
    if (c->closed_sent)
        return;
    if (tpi_svc_post_int(c->rt, c->pid, TP_NET_CLOSED, code) != 0)
        return; /* out of memory: the actor learns of it by write errors */
    c->closed_sent = true;
}

static void conn_drop(tpi_conn *c)
{
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->out)
        evbuffer_free(c->out);
    if (c->fd >= 0)
        close(c->fd);
    c->rev = c->wev = NULL;
    c->out = NULL;
    c->fd = -1;
    c->reading = c->writing = false;
}

/* The connection failed: the actor learns it once. */
static void conn_fail(tpi_conn *c, int code)
{
    conn_drop(c);
    send_closed(c, code);
}

/* Add or remove one of c's events. An event that cannot be added
 * (epoll_ctl out of memory or of watches) fails the connection, from its
 * own read callback made active (the callers here still use c); until
 * then its events stay as they are, as a removal would cancel that. */
static void set_event(tpi_conn *c, struct event *ev, bool *on, bool want,
                      const struct timeval *tv)
{
    if (*on == want || c->add_failed)
        return;
    if (!want) {
        event_del(ev);
        *on = false;
    } else if (event_add(ev, tv) == 0) {
        *on = true;
    } else {
        c->add_failed = true;
        event_active(c->rev, EV_READ, 0);
    }
}

static void update_read(tpi_conn *c)
{
    if (c->fd < 0 || !c->rev || c->lingering) /* dropped, not booted yet */
        return;
    set_event(c, c->rev, &c->reading,
              !(c->eof || c->paused_mb || c->paused_out), NULL);
}

/* The write event while the owner lives: added while output is pending,
 * with the stall timeout while more than output_limit bytes are. */
static void update_write(tpi_conn *c)
{
    size_t left = evbuffer_get_length(c->out);
    bool over = left > c->output_limit;
    if (left == 0 || over != c->over) {
        /* event_add keeps an old timeout when given none: start over. */
        set_event(c, c->wev, &c->writing, false, NULL);
        c->over = over;
    }
    if (left > 0)
        set_event(c, c->wev, &c->writing, true, over ? &c->stall : NULL);
}

/* Pending output changed (the owner lives): the write event, and reading,
 * paused over high_water until below the low-water mark, half of it. */
static void output_changed(tpi_conn *c)
{
    size_t left = evbuffer_get_length(c->out);
    update_write(c);
    bool pause = c->paused_out ? left > c->high_water / 2
                               : left > c->high_water;
    if (pause != c->paused_out) {
        c->paused_out = pause;
        update_read(c);
    }
}

/* The peer took nothing for output_stall while over output_limit. */
static void cut_stalled(tpi_conn *c)
{
    fprintf(stderr,
            "troupe: disconnecting client %s: %zu bytes of output pending, "
            "over the limit of %zu, and none taken for %ld ms\n",
            c->peer, evbuffer_get_length(c->out), c->output_limit,
            (long)c->stall.tv_sec * 1000 + c->stall.tv_usec / 1000);
    conn_fail(c, TP_E2BIG);
}

/* Write the msgpack bin header for n bytes just before data (which has
 * BIN_HEAD_MAX bytes of room there); returns its length. */
static size_t bin_header(char *data, size_t n)
{
    size_t h = n < 256 ? 2 : n < 65536 ? 3 : 5;
    char *p = data - h;
    p[0] = (char)(h == 2 ? 0xc4 : h == 3 ? 0xc5 : 0xc6);
    for (size_t i = 1; i < h; i++)
        p[i] = (char)(n >> (8 * (h - 1 - i)));
    return h;
}

static void linger_finish(tpi_conn *c);
static void linger_flushed(tpi_conn *c);

/* The linger is over: its events' timeouts only measure idleness, which
 * a peer sending or taking a byte now and then would renew for ever. */
static bool linger_over(const tpi_conn *c)
{
    return tpi_now_ns() >= c->linger_by;
}

static void linger_readable(tpi_conn *c, short what)
{
    if ((what & EV_TIMEOUT) || linger_over(c)) {
        linger_finish(c);
        return;
    }
    ssize_t n = read(c->fd, rbuf, sizeof rbuf); /* discarded */
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
        return;
    if (n < 0 || !c->out || evbuffer_get_length(c->out) == 0) {
        linger_finish(c);
        return;
    }
    c->eof = true; /* still flushing: finish when written */
    set_event(c, c->rev, &c->reading, false, NULL);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    tpi_conn *c = arg;
    if (c->add_failed) { /* set_event */
        if (c->lingering)
            linger_finish(c);
        else
            conn_fail(c, TP_ESYS);
        return;
    }
    if (c->lingering) {
        linger_readable(c, what);
        return;
    }
    /* A few reads per wake-up, while the socket fills our buffer and the
     * actor has room; then back to the loop. */
    for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n = read(fd, RBUF_DATA, RBUF_ROOM);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                conn_fail(c, TP_ESYS);
            return;
        }
        if (n == 0) {
            c->eof = true;
            update_read(c);
            send_closed(c, 0);
            return;
        }
        size_t h = bin_header(RBUF_DATA, (size_t)n);
        tpi_envelope e = {.tag = TP_NET_DATA,
                          .data = RBUF_DATA - h,
                          .len = h + (size_t)n};
        if (tpi_svc_post(c->rt, c->pid, &e, false) != 0) {
            conn_fail(c, TP_ESYS);
            return;
        }
        /* Read backpressure: stop taking bytes from the kernel while the
         * actor is behind; TCP then slows the peer. on_drained resumes. */
        if (tpi_svc_full(c->rt, c->pid)) {
            c->paused_mb = true;
            update_read(c);
            return;
        }
        if ((size_t)n < RBUF_ROOM / 2)
            return; /* a short read: most likely drained */
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    tpi_conn *c = arg;
    if ((what & EV_TIMEOUT) || (c->lingering && linger_over(c))) {
        if (c->lingering) /* lingering, or stalled over the limit */
            linger_finish(c);
        else
            cut_stalled(c);
        return;
    }
    int w = evbuffer_write(c->out, fd);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        if (c->lingering)
            linger_finish(c);
        else
            conn_fail(c, TP_ESYS);
        return;
    }
    size_t left = evbuffer_get_length(c->out);
    if (c->lingering) {
        if (left == 0) {
            set_event(c, c->wev, &c->writing, false, NULL);
            linger_flushed(c);
        }
        return;
    }
    output_changed(c);
}

/* The actor moves to another scheduler (its old home, between turns):
 * the events leave this loop, reading and writing as if paused (a failed
 * add's pending end too: conn_attach makes it again). */
static void conn_detach(tpi_resource *r)
{
    tpi_conn *c = (tpi_conn *)r;
    if (c->fd < 0 || !c->out) /* dropped, or not booted yet */
        return;
    event_del(c->rev);
    event_del(c->wev);
    c->reading = c->writing = false;
}

/* On the new home, before the actor's next turn: the same events on its
 * loop, added as the connection's state asks. */
static void conn_attach(tpi_resource *r, struct event_base *base)
{
    tpi_conn *c = (tpi_conn *)r;
    if (c->fd < 0 || !c->out)
        return;
    event_assign(c->rev, base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    event_assign(c->wev, base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
    if (c->add_failed) { /* its end had not run on the old loop */
        event_active(c->rev, EV_READ, 0);
        return;
    }
    update_read(c);
    if (evbuffer_get_length(c->out) > 0)
        update_write(c);
}

static void on_drained(tpi_resource *r)
{
    tpi_conn *c = (tpi_conn *)r;
    if (c->paused_mb) {
        c->paused_mb = false;
        update_read(c);
    }
}

/* ---- lingering close, after the owner ended */

static void linger_finish(tpi_conn *c)
{
    tpi_linger_remove(c->rt, &c->linger);
    conn_drop(c);
    tp_free(c);
}

/* tp_runtime_free, for a socket still lingering. */
static void linger_end(tpi_linger *l)
{
    linger_finish((tpi_conn *)((char *)l - offsetof(tpi_conn, linger)));
}

/* Every byte is written: tell the peer we are done, and wait for its EOF
 * (so unread input does not turn our close into an RST). May free c. */
static void linger_flushed(tpi_conn *c)
{
    if (!c->shut_wr) {
        c->shut_wr = true;
        shutdown(c->fd, SHUT_WR);
    }
    if (c->eof)
        linger_finish(c);
}

/* The owner ended (or the runtime is torn down). */
static void conn_close(tpi_resource *r)
{
    tpi_conn *c = (tpi_conn *)r;
    if (c->fd < 0 || !c->out || tpi_svc_phase(c->rt) != TPI_PHASE_RUNNING ||
        (c->eof && evbuffer_get_length(c->out) == 0)) {
        conn_drop(c);
        tp_free(c);
        return;
    }
    c->lingering = true;
    /* 2 s, and a second more per LINGER_RATE bytes still to write: a
     * slow reader gets its last replies, one that takes a byte now and
     * then does not keep the socket for ever. */
    c->linger_by = tpi_now_ns() +
                   (LINGER_SECS + evbuffer_get_length(c->out) / LINGER_RATE) *
                       (uint64_t)1000000000u;
    c->linger.finish = linger_end;
    tpi_linger_add(c->rt, &c->linger);
    /* Re-add both events with the linger timeout. */
    set_event(c, c->rev, &c->reading, false, NULL);
    set_event(c, c->wev, &c->writing, false, NULL);
    if (!c->eof)
        set_event(c, c->rev, &c->reading, true, &linger_tv);
    if (evbuffer_get_length(c->out) > 0)
        set_event(c, c->wev, &c->writing, true, &linger_tv);
    else
        linger_flushed(c);
}

static tpi_conn *conn_of(tp_ctx *ctx)
{
    return (tpi_conn *)tpi_svc_resource(ctx, conn_close);
}

int tp_conn_write(tp_ctx *ctx, const void *data, size_t len)
{
    tpi_conn *c = conn_of(ctx);
    if (!c || c->fd < 0)
        return TP_ESTATE;
    if (!data && len)
        return TP_EINVAL;
    if (len == 0)
        return 0;
    size_t pending = evbuffer_get_length(c->out);
    if (pending > 0 && len > c->output_limit - pending) {
        /* Going over the limit: first let the socket take what it can,
         * as the limit is on what the peer has not taken. */
        if (evbuffer_write(c->out, c->fd) < 0 && errno != EAGAIN &&
            errno != EWOULDBLOCK && errno != EINTR) {
            conn_fail(c, TP_ESYS);
            return TP_ESTATE;
        }
        pending = evbuffer_get_length(c->out);
    }
    const char *p = data;
    if (pending == 0) {
        /* Nothing queued: write now, and wait for writability only for
         * what the socket did not take. */
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_fail(c, TP_ESYS);
                return TP_ESTATE;
            }
            w = 0;
        }
        p += w;
        len -= (size_t)w;
        if (len == 0) {
            if (c->writing || c->paused_out) /* the flush emptied it */
                output_changed(c);
            return 0;
        }
    }
    if (evbuffer_add(c->out, p, len) != 0) {
        /* Part of it left already: the peer would see the rest missing,
         * or (the caller trying again) that part twice. */
        if (p != data)
            conn_fail(c, TP_ENOMEM);
        return TP_ENOMEM;
    }
    output_changed(c);
    return 0;
}

size_t tp_conn_pending(tp_ctx *ctx)
{
    tpi_conn *c = conn_of(ctx);
    return c && c->out ? evbuffer_get_length(c->out) : 0;
}

int tp_conn_peer(tp_ctx *ctx, char *buf, size_t size)
{
    if (!buf || !size)
        return TP_EINVAL;
    tpi_conn *c = conn_of(ctx);
    if (!c)
        return TP_ESTATE;
    snprintf(buf, size, "%s", c->peer);
    return 0;
}

/* The behavior a connection actor starts with, in its first turn on its
 * home: make the socket's events on this loop, then hand the actor (this
 * TP_TAG_START included) to the application's behavior. */
static int conn_boot(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tpi_conn *c = conn_of(ctx);
    struct event_base *base = tpi_svc_loop(ctx, false);
    c->out = evbuffer_new();
    c->rev = event_new(base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
    if (!c->out || !c->rev || !c->wev)
        conn_fail(c, TP_ESYS); /* it learns of it after its start */
    else
        update_read(c);
    tp_become(ctx, c->behavior);
    return c->behavior(ctx, state, msg);
}

/* --------------------------------------------------------------- listener */

/* A listener's counters, readable from any thread (tp_listen_stats): in
 * the runtime's list of them while the listener lives. */
typedef struct net_counts {
    struct net_counts *next;
    tp_pid pid;
    /* relaxed: counters, written by the listener only */
    _Atomic uint64_t accepted, rejected, active;
} net_counts;

typedef struct net_svc {
    pthread_mutex_t lock; /* guards the list */
    net_counts *list;
} net_svc;

static void *net_make(tp_runtime *rt)
{
    (void)rt;
    net_svc *n = tp_calloc(sizeof *n);
    if (n)
        pthread_mutex_init(&n->lock, NULL);
    return n;
}

static void net_free(tp_runtime *rt, void *state)
{
    (void)rt;
    net_svc *n = state; /* every listener, and its counts, is gone */
    pthread_mutex_destroy(&n->lock);
    tp_free(n);
}

static const tpi_svc_ops net_ops = {.make = net_make, .free = net_free};

typedef struct conn_ref {
    tp_pid pid;
    unsigned sched;
} conn_ref;

typedef struct tpi_listener {
    tp_listen_opts o; /* strings point to our copies */
    char *reject, *path;
    struct stat path_st; /* the socket file we made (device, inode) */
    char name[96];
    int fd;
    int spare; /* an fd kept to give back when out of fds, or -1 */
    struct event *ev;
    tp_runtime *rt;
    tp_pid self, owner;
    conn_ref *conns;
    size_t nconns, capconns;
    unsigned *per_sched; /* live connections on each scheduler */
    unsigned nsched, next_sched;
    unsigned backoff_ms;
    bool refusing; /* out of fds, refusing clients (logged once) */
    net_svc *svc;
    net_counts *counts; /* listed in svc once the listener is spawned */
    bool listed;
} tpi_listener;

static void count(_Atomic uint64_t *c, int64_t d)
{
    /* relaxed: one writer; readers only want a recent value. */
    atomic_store_explicit(c,
                          atomic_load_explicit(c, memory_order_relaxed) +
                              (uint64_t)d,
                          memory_order_relaxed);
}

static void listener_free(void *state)
{
    tpi_listener *l = state;
    if (l->listed) {
        pthread_mutex_lock(&l->svc->lock);
        net_counts **p = &l->svc->list;
        while (*p != l->counts)
            p = &(*p)->next;
        *p = l->counts->next;
        pthread_mutex_unlock(&l->svc->lock);
    }
    if (l->ev)
        event_free(l->ev);
    if (l->fd >= 0)
        close(l->fd);
    if (l->spare >= 0)
        close(l->spare);
    /* Only the file we made: another server may have replaced it since */
    struct stat st;
    if (l->path && lstat(l->path, &st) == 0 && st.st_dev == l->path_st.st_dev &&
        st.st_ino == l->path_st.st_ino)
        unlink(l->path);
    tp_free(l->path);
    tp_free(l->reject);
    tp_free(l->conns);
    tp_free(l->per_sched);
    tp_free(l->counts);
    tp_free(l);
}

int tp_listen_stats(tp_runtime *rt, tp_pid listener, tp_listener_stats *out)
{
    if (!rt || !out)
        return TP_EINVAL;
    net_svc *n = tpi_svc_get(rt, TPI_SVC_NET, NULL);
    int rc = TP_ENOPROC;
    if (!n)
        return rc;
    pthread_mutex_lock(&n->lock);
    for (net_counts *c = n->list; c; c = c->next) {
        if (c->pid != listener)
            continue;
        out->accepted =
            atomic_load_explicit(&c->accepted, memory_order_relaxed);
        out->rejected =
            atomic_load_explicit(&c->rejected, memory_order_relaxed);
        out->active = atomic_load_explicit(&c->active, memory_order_relaxed);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&n->lock);
    return rc;
}

static void on_acceptable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tpi_listener *l = arg;
    tpi_envelope e = {.tag = TAG_ACCEPT};
    if (tpi_svc_post(l->rt, l->self, &e, false) != 0)
        event_add(l->ev, NULL); /* try again on the next readiness */
}

static bool conns_del(tpi_listener *l, tp_pid pid)
{
    for (size_t i = 0; i < l->nconns; i++)
        if (l->conns[i].pid == pid) {
            l->per_sched[l->conns[i].sched]--;
            l->conns[i] = l->conns[--l->nconns];
            count(&l->counts->active, -1);
            return true;
        }
    return false;
}

static void format_peer(char *out, size_t size, const struct sockaddr *sa,
                        const char *path)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, size, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, size, "unix:%s", path ? path : "?");
    }
}

/* Refuse an accepted socket: reject_msg, if any, then close. Consumes fd. */
static void refuse(tpi_listener *l, int fd)
{
    if (l->reject)
        (void)!send(fd, l->reject, strlen(l->reject),
                    MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
    count(&l->counts->rejected, 1);
}

/* The scheduler for the next connection: the one with the fewest of ours,
 * the first found from a rotating start (so ties go round). */
static unsigned pick_sched(tpi_listener *l)
{
    unsigned best = l->next_sched;
    for (unsigned k = 1; k < l->nsched; k++) {
        unsigned i = (l->next_sched + k) % l->nsched;
        if (l->per_sched[i] < l->per_sched[best])
            best = i;
    }
    l->next_sched = (l->next_sched + 1) % l->nsched;
    return best;
}

/* Hand an accepted socket to a new connection actor. Consumes fd. */
static void start_conn(tp_ctx *ctx, tpi_listener *l, int fd,
                       const struct sockaddr *sa)
{
    const tp_listen_opts *o = &l->o;
    if (o->max_conns && l->nconns >= o->max_conns) {
        refuse(l, fd);
        return;
    }
    if (l->nconns == l->capconns) {
        size_t cap = l->capconns ? l->capconns * 2 : 16;
        conn_ref *v = tp_realloc(l->conns, cap * sizeof *v);
        if (!v) {
            refuse(l, fd);
            return;
        }
        l->conns = v;
        l->capconns = cap;
    }
    void *state = o->conn_init ? o->conn_init(o->arg) : o->arg;
    tpi_conn *c = state || !o->conn_init ? tp_calloc(sizeof *c) : NULL;
    tp_spawn_opts so = {o->conn_mailbox, TP_SPAWN_LINK, o->conn_state_free};
    tp_pid pid;
    if (!c || tp_spawn(ctx, conn_boot, state, &so, &pid) != 0) {
        if (state && o->conn_init && o->conn_state_free)
            o->conn_state_free(state);
        tp_free(c);
        refuse(l, fd);
        return;
    }
    c->res.drained = on_drained;
    c->res.close = conn_close;
    c->res.detach = conn_detach;
    c->res.attach = conn_attach;
    c->rt = l->rt;
    c->pid = pid;
    c->behavior = o->conn_behavior;
    c->fd = -1;
    c->high_water = o->high_water;
    c->output_limit = o->output_limit;
    c->stall = (struct timeval){o->output_stall_ms / 1000,
                                (o->output_stall_ms % 1000) * 1000};
    format_peer(c->peer, sizeof c->peer, sa, l->path);
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    /* The child has not run yet and lives on this loop: attach the socket
     * (closed when the actor ends, run or not), then start it where it
     * will live; conn_boot makes its events there. */
    unsigned sched = pick_sched(l);
    if (tpi_svc_attach(ctx, pid, &c->res, NULL) != 0) {
        close(fd);
        tp_free(c);
        tp_kill(ctx, pid);
        count(&l->counts->rejected, 1);
        return;
    }
    c->fd = fd;
    /* Counted before it can run (and answer its peer) on another thread. */
    count(&l->counts->accepted, 1);
    count(&l->counts->active, 1);
    if (tpi_svc_place(ctx, pid, sched) != 0)
        sched = 0; /* cannot happen: it is our child, not run yet */
    l->conns[l->nconns++] = (conn_ref){pid, sched};
    l->per_sched[sched]++;
}

/* Out of fds (accept says so before it looks for a client): give back the
 * spare one to accept a waiting client, refuse it, and take the spare
 * again. Returns the accept's result: an fd (now refused) or -1 with
 * errno; EMFILE without the spare. */
static int refuse_with_spare(tpi_listener *l, int err)
{
    if (l->spare < 0) {
        errno = err;
        return -1;
    }
    close(l->spare);
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int e = errno;
    if (fd >= 0) {
        if (!l->refusing)
            fprintf(stderr,
                    "troupe: listener %s: accept: %s; refusing connections\n",
                    l->name, strerror(err));
        l->refusing = true;
        refuse(l, fd);
    }
    l->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    errno = e;
    return fd;
}

static void accept_some(tp_ctx *ctx, tpi_listener *l)
{
    for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) &&
            refuse_with_spare(l, errno) >= 0)
            continue;
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO)
                continue; /* that peer is gone; the next one may wait */
            if (e == EAGAIN || e == EWOULDBLOCK) {
                event_add(l->ev, NULL);
                return;
            }
            /* ENOBUFS, ENOMEM, or out of fds without a spare: the pending
             * connection stays in the backlog and the socket stays
             * readable, so waiting on it would spin. Pause, then retry. */
            if (l->backoff_ms == 0)
                fprintf(stderr,
                        "troupe: listener %s: accept: %s; pausing accepts\n",
                        l->name, strerror(e));
            l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2
                                          : BACKOFF_FIRST_MS;
            if (l->backoff_ms > BACKOFF_MAX_MS)
                l->backoff_ms = BACKOFF_MAX_MS;
            if (tp_send_after(ctx, l->backoff_ms, TAG_ACCEPT, NULL, 0, NULL) !=
                0)
                event_add(l->ev, NULL);
            return;
        }
        if (l->backoff_ms || l->refusing) {
            fprintf(stderr, "troupe: listener %s: accepting again\n", l->name);
            l->backoff_ms = 0;
            l->refusing = false;
        }
        if (l->spare < 0) /* lost while out of fds: take one again */
            l->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
        start_conn(ctx, l, fd, (struct sockaddr *)&ss);
    }
    /* A full batch: let other actors run, then continue. */
    if (tp_send(ctx, l->self, TAG_ACCEPT, NULL, 0) != 0)
        event_add(l->ev, NULL);
}

static int listener(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tpi_listener *l = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        l->self = tp_self(ctx);
        l->owner = tp_msg_from(msg);
        /* The accept event lives on this loop: the listener stays here. */
        l->ev = event_new(tpi_svc_loop(ctx, true), l->fd, EV_READ,
                          on_acceptable, l);
        if (!l->ev || event_add(l->ev, NULL) != 0)
            return TP_ENOMEM;
        break;
    case TAG_ACCEPT: accept_some(ctx, l); break;
    case TP_TAG_EXIT: {
        if (conns_del(l, tp_msg_from(msg)))
            break; /* a connection ended: nothing else changes */
        tp_reason r;
        if (tp_msg_reason(msg, &r) != 0)
            r = TP_REASON_SHUTDOWN;
        /* The owner (or anyone) ends us: connections end with us. A
         * normal reason would not reach them over links. */
        if (r.kind == TP_EXIT_NORMAL)
            r = TP_REASON_SHUTDOWN;
        tp_exit(ctx, r);
        break;
    }
    default: break;
    }
    return TP_HANDLED;
}

static int bind_socket(const tp_listen_opts *o, int *fd_out, uint16_t *port)
{
    int fd = -1, e;
    *port = 0;
    if (o->unix_path) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        size_t n = strlen(o->unix_path);
        if (n == 0 || n >= sizeof un.sun_path)
            return TP_EINVAL;
        memcpy(un.sun_path, o->unix_path, n + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return TP_ESYS;
        /* A socket file nobody listens on (its server died) is replaced;
         * one a live server listens on is EADDRINUSE, not taken from it. */
        struct stat st;
        if (lstat(o->unix_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            if (connect(fd, (struct sockaddr *)&un, sizeof un) == 0 ||
                errno == EAGAIN) {
                close(fd);
                errno = EADDRINUSE;
                return TP_ESYS;
            }
            close(fd);
            unlink(o->unix_path);
            fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0)
                return TP_ESYS;
        }
        if (bind(fd, (struct sockaddr *)&un, sizeof un) != 0)
            goto fail;
    } else {
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
        hints.ai_socktype = SOCK_STREAM;
        char ps[8];
        snprintf(ps, sizeof ps, "%u", (unsigned)o->port);
        if (getaddrinfo(o->host ? o->host : "127.0.0.1", ps, &hints, &ai) != 0)
            return TP_EINVAL;
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
        if (fd < 0) {
            e = errno;
            freeaddrinfo(ai);
            errno = e;
            return TP_ESYS;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int brc = bind(fd, ai->ai_addr, ai->ai_addrlen);
        e = errno;
        freeaddrinfo(ai);
        errno = e;
        if (brc != 0)
            goto fail;
    }
    if (listen(fd, o->backlog > 0 ? o->backlog : 511) != 0)
        goto fail;
    if (!o->unix_path) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
            goto fail;
        *port = ntohs(ss.ss_family == AF_INET
                          ? ((struct sockaddr_in *)&ss)->sin_port
                          : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    *fd_out = fd;
    return 0;
fail:
    e = errno;
    close(fd);
    if (o->unix_path && e != EADDRINUSE)
        unlink(o->unix_path);
    errno = e;
    return TP_ESYS;
}

int tp_listen(tp_ctx *ctx, const tp_listen_opts *opts, tp_pid *pid_out,
              uint16_t *port_out)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    if (!rt)
        return TP_ESTATE;
    if (!opts || !opts->conn_behavior)
        return TP_EINVAL;
    tp_listen_opts o = *opts;
    if (!o.high_water)
        o.high_water = DEFAULT_HIGH_WATER;
    if (!o.output_limit)
        o.output_limit = DEFAULT_OUTPUT_LIMIT;
    if (o.output_limit < o.high_water)
        return TP_EINVAL;
    if (!o.output_stall_ms)
        o.output_stall_ms = DEFAULT_OUTPUT_STALL_MS;
    tpi_listener *l = tp_calloc(sizeof *l);
    if (!l)
        return TP_ENOMEM;
    l->fd = l->spare = -1;
    l->rt = rt;
    l->nsched = tpi_svc_threads(rt);
    l->svc = tpi_svc_get(rt, TPI_SVC_NET, &net_ops);
    l->counts = tp_calloc(sizeof *l->counts);
    l->per_sched = tp_calloc(l->nsched * sizeof *l->per_sched);
    if (!l->svc || !l->counts || !l->per_sched ||
        (o.reject_msg && !(l->reject = tpi_strndup(o.reject_msg, 4096)))) {
        listener_free(l);
        return TP_ENOMEM;
    }
    uint16_t port;
    int rc = bind_socket(&o, &l->fd, &port);
    if (rc) {
        int e = errno;
        listener_free(l);
        errno = e;
        return rc;
    }
    if (o.unix_path && (!(l->path = tpi_strndup(o.unix_path, 4096)) ||
                        lstat(l->path, &l->path_st) != 0)) {
        rc = l->path ? TP_ESYS : TP_ENOMEM;
        unlink(o.unix_path);
        listener_free(l);
        return rc;
    }
    o.reject_msg = l->reject;
    o.unix_path = l->path;
    o.host = NULL;
    l->o = o;
    if (l->path)
        snprintf(l->name, sizeof l->name, "unix:%s", l->path);
    else
        snprintf(l->name, sizeof l->name, "%s port %u",
                 opts->host ? opts->host : "127.0.0.1", (unsigned)port);
    tpi_svc_no_sigpipe(); /* a vanished peer: an error on its connection */
    /* Out of fds already? Then it goes without the spare (and pauses
     * instead of refusing), which it takes again at its next accept. */
    l->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    tp_spawn_opts so = {0, TP_SPAWN_LINK | TP_SPAWN_TRAP_EXIT, listener_free};
    tp_pid pid;
    rc = tp_spawn(ctx, listener, l, &so, &pid);
    if (rc) {
        listener_free(l);
        return rc;
    }
    /* Listed before it runs (it runs after this turn, here): its counters
     * can be read as soon as we return. */
    l->counts->pid = pid;
    pthread_mutex_lock(&l->svc->lock);
    l->counts->next = l->svc->list;
    l->svc->list = l->counts;
    l->listed = true;
    pthread_mutex_unlock(&l->svc->lock);
    if (pid_out)
        *pid_out = pid;
    if (port_out)
        *port_out = port;
    return 0;
}
