/*
 * The Prometheus text endpoint (issue 8): libevent's evhttp on the
 * scheduler's own event_base, so a scrape is answered between turns on
 * the scheduler thread, where actors may be read safely. Off until
 * tp_runtime_serve_metrics; loopback only.
 */
#include "runtime/observe/observe_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Bytes of a scrape's request line and headers (curl and Prometheus send
 * a few hundred). */
#define METRICS_HEADERS_MAX 8192

/* The length of the UTF-8 sequence at s (1 to 4), 0 if s starts none
 * (a stray, overlong or surrogate byte). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c < 0x80                 ? 1
               : c >= 0xc2 && c < 0xe0  ? 2
               : (c >> 4) == 0xe        ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    for (size_t i = 1; i < n; i++) /* the terminating NUL stops it */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (n == 3) {
        unsigned v = (c & 0x0fu) << 12 | (s[1] & 0x3fu) << 6 | (s[2] & 0x3fu);
        if (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))
            return 0;
    } else if (n == 4) {
        unsigned v = (c & 0x07u) << 18 | (s[1] & 0x3fu) << 12;
        if (v < 0x10000 || v > 0x10ffff)
            return 0;
    }
    return n;
}

void tpi_obs_quote(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        if (!n) {
            fputs("\xef\xbf\xbd", out); /* U+FFFD for a byte that is not */
            p++;
            continue;
        }
        if (*p == '\\' || *p == '"')
            fputc('\\', out);
        if (*p == '\n')
            fputs("\\n", out);
        else
            fwrite(p, 1, n, out);
        p += n;
    }
}

static void family(FILE *out, const char *name, const char *type,
                   const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(FILE *out, const char *name, const char *type,
                   const char *help, uint64_t v)
{
    family(out, name, type, help);
    fprintf(out, "%s %" PRIu64 "\n", name, v);
}

/* The labels of one actor: {pid="<1.1>",name="...",parent="<0.0>"}. */
static void actor_labels(FILE *out, const tp_actor_info *i)
{
    char b[32];
    fprintf(out, "{pid=\"%s\",name=\"", tpi_pidstr(i->pid, b, sizeof b));
    tpi_obs_quote(out, i->name);
    fprintf(out, "\",parent=\"%s\"}",
            i->parent ? tpi_pidstr(i->parent, b, sizeof b) : "");
}

typedef enum { F_MBOX, F_HWM, F_HANDLED, F_DEFERRED, F_BUSY, F_RESTARTS } field;

static void actor_family(FILE *out, const tp_actor_info *v, size_t n, field f,
                         const char *name, const char *type, const char *help)
{
    family(out, name, type, help);
    for (size_t k = 0; k < n; k++) {
        const tp_actor_info *i = &v[k];
        if (f != F_MBOX && f != F_RESTARTS && !i->observed)
            continue; /* counters not kept for it: no series */
        fputs(name, out);
        actor_labels(out, i);
        switch (f) {
        case F_MBOX: fprintf(out, " %" PRIu64 "\n", i->mailbox_len); break;
        case F_HWM: fprintf(out, " %" PRIu64 "\n", i->mailbox_hwm); break;
        case F_HANDLED: fprintf(out, " %" PRIu64 "\n", i->handled); break;
        case F_DEFERRED: fprintf(out, " %" PRIu64 "\n", i->deferred); break;
        case F_BUSY:
            fprintf(out, " %.9f\n", (double)i->handler_ns / 1e9);
            break;
        case F_RESTARTS: fprintf(out, " %" PRIu64 "\n", i->restarts); break;
        }
    }
}

static int metrics_now(tp_runtime *rt, FILE *out)
{
    tp_actor_info *v = NULL;
    size_t n = 0, total = 0;
    int rc =
        tpi_svc_collect(rt, TP_PID_NONE, TP_METRICS_ACTORS_MAX, &v, &n, &total);
    if (rc)
        return rc;
    tp_stats_ex st;
    tp_runtime_stats_ex(rt, &st);
    scalar(out, "troupe_actors_alive", "gauge",
           "Actors spawned and not yet ended.", st.base.actors_alive);
    scalar(out, "troupe_actors_spawned_total", "counter",
           "Actors ever spawned.", st.base.actors_spawned);
    family(out, "troupe_actors_exited_total", "counter",
           "Actors ended, by exit reason.");
    for (int k = 0; k <= TP_EXIT_KIND_MAX; k++)
        if (k != TP_EXIT_KILL) /* a kill ends as killed */
            fprintf(out,
                    "troupe_actors_exited_total{reason=\"%s\"} %" PRIu64 "\n",
                    tp_exit_kind_name((tp_exit_kind)k), st.exited_by_kind[k]);
    scalar(out, "troupe_restarts_total", "counter",
           "Child restarts counted by supervisors.", st.restarts);
    scalar(out, "troupe_messages_sent_total", "counter",
           "User messages enqueued.", st.base.messages_sent);
    scalar(out, "troupe_dead_letters_total", "counter",
           "User messages addressed to actors that had ended.",
           st.base.dead_letters);
    scalar(out, "troupe_late_replies_total", "counter",
           "Replies that found no waiting request.", st.base.late_replies);
    scalar(out, "troupe_timers_active", "gauge",
           "Timers set and not yet fired or cancelled.", st.base.timers_active);
    scalar(out, "troupe_actor_slots", "gauge", "Actor table slots allocated.",
           st.base.slots);
    if (tp_node_name(rt)) { /* a node */
        tp_node_stats ns;
        tp_node_stats_get(rt, &ns);
        scalar(out, "troupe_node_peers_up", "gauge",
               "Other nodes seen alive now.", ns.nodes_up);
        scalar(out, "troupe_node_frames_in_total", "counter",
               "Frames taken in from other nodes.", ns.frames_in);
        scalar(out, "troupe_node_frames_out_total", "counter",
               "Frames published to other nodes.", ns.frames_out);
        scalar(out, "troupe_node_bytes_in_total", "counter",
               "Bytes received from NATS.", ns.bytes_in);
        scalar(out, "troupe_node_bytes_out_total", "counter",
               "Bytes published to NATS.", ns.bytes_out);
        scalar(out, "troupe_node_frames_dropped_total", "counter",
               "Frames from the wire refused (bad, forged, unknown).",
               ns.dropped);
        scalar(out, "troupe_node_send_failed_total", "counter",
               "Frames that could not be published.", ns.send_failed);
        scalar(out, "troupe_node_reconnects_total", "counter",
               "Reconnections to NATS.", ns.reconnects);
        scalar(out, "troupe_node_rtt_microseconds", "gauge",
               "Round trip to other nodes, smoothed from probes.", ns.rtt_us);
    }
    scalar(out, "troupe_actors_listed_truncated", "gauge",
           "1 if more live actors exist than the per-actor series list.",
           total > n);
    actor_family(out, v, n, F_MBOX, "troupe_actor_mailbox_length", "gauge",
                 "Messages queued for the actor.");
    actor_family(out, v, n, F_HWM, "troupe_actor_mailbox_high_water", "gauge",
                 "Highest mailbox length seen at a turn (observed actors).");
    actor_family(out, v, n, F_HANDLED, "troupe_actor_messages_handled_total",
                 "counter",
                 "Messages the behavior consumed (observed actors).");
    actor_family(out, v, n, F_DEFERRED, "troupe_actor_messages_deferred_total",
                 "counter", "Behavior calls that deferred (observed actors).");
    actor_family(out, v, n, F_BUSY, "troupe_actor_handler_seconds_total",
                 "counter",
                 "Time spent in the behavior (observed actors, with "
                 "TP_OBSERVE_TIME).");
    actor_family(out, v, n, F_RESTARTS, "troupe_actor_restarts_total",
                 "counter", "Restarts counted by this supervisor.");
    tp_free(v);
    return fflush(out) == 0 ? 0 : TP_ESYS;
}

int tp_runtime_metrics_write(tp_runtime *rt, FILE *out)
{
    if (!rt || !out)
        return TP_EINVAL;
    if (!tpi_svc_may_read(rt))
        return TP_ESTATE;
    return metrics_now(rt, out);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    tp_runtime *rt = arg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    if (!path || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, NULL);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int rc = f ? metrics_now(rt, f) : TP_ENOMEM;
    if (f && fclose(f) != 0 && !rc)
        rc = TP_ENOMEM;
    if (rc) {
        free(text);
        /* TP_ETIMEDOUT: a scheduler stuck in a handler; try again later */
        evhttp_send_error(req,
                          rc == TP_ETIMEDOUT ? HTTP_SERVUNAVAIL : HTTP_INTERNAL,
                          tp_strerror(rc));
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    struct evbuffer *b = evhttp_request_get_output_buffer(req);
    evbuffer_add(b, text, len);
    free(text); /* open_memstream's, not the runtime allocator's */
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

/* Out of fds (or kernel buffers), accept fails while a client waits and
 * the listening socket stays readable: libevent's listener would try again
 * at once, forever, on scheduler 0's loop, with a warning per try. It
 * stops accepting instead and tries again after a pause, doubling from
 * PAUSE_FIRST_MS to PAUSE_MAX_MS while the errors go on; an error after a
 * quiet spell of 2 × PAUSE_MAX_MS starts a new streak (and a new log
 * line). */
#define PAUSE_FIRST_MS 10
#define PAUSE_MAX_MS 1000

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The listener's callbacks share one argument, set by evhttp to itself:
 * the error callback finds its runtime's state in this list of those
 * serving (one per runtime). */
static pthread_mutex_t serving_lock = PTHREAD_MUTEX_INITIALIZER;
static tpi_obs *serving;

static tpi_obs *serving_find(const struct evconnlistener *lev)
{
    pthread_mutex_lock(&serving_lock);
    tpi_obs *o = serving;
    while (o && o->http_lev != lev)
        o = o->next_serving;
    pthread_mutex_unlock(&serving_lock);
    return o;
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tpi_obs *o = arg;
    evconnlistener_enable(o->http_lev);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    tpi_obs *o = serving_find(lev);
    uint64_t now = mono_ms();
    if (now - o->last_err_ms > 2 * PAUSE_MAX_MS)
        o->pause_ms = 0;
    if (!o->pause_ms)
        fprintf(stderr, "troupe: metrics endpoint: accept: %s; pausing\n",
                strerror(e));
    o->pause_ms = o->pause_ms ? 2 * o->pause_ms : PAUSE_FIRST_MS;
    if (o->pause_ms > PAUSE_MAX_MS)
        o->pause_ms = PAUSE_MAX_MS;
    o->last_err_ms = now;
    evconnlistener_disable(lev);
    struct timeval tv = {o->pause_ms / 1000, (o->pause_ms % 1000) * 1000};
    evtimer_add(o->http_retry, &tv);
}

static bool loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int tp_runtime_serve_metrics(tp_runtime *rt, const char *host, uint16_t port,
                             uint16_t *port_out)
{
    if (!rt)
        return TP_EINVAL;
    if (!host)
        host = "127.0.0.1";
    if (!loopback(host))
        return TP_EINVAL;
    tpi_obs *o;
    int rc = tpi_obs_setup(rt, offsetof(tpi_obs, http), &o);
    if (rc)
        return rc;
    struct event_base *base = tpi_svc_main_base(rt);
    struct evhttp *http = evhttp_new(base);
    if (!http)
        return TP_ENOMEM;
    o->http_retry = evtimer_new(base, on_accept_retry, o);
    if (!o->http_retry) {
        evhttp_free(http);
        return TP_ENOMEM;
    }
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    /* A scrape is one request line and a few headers, with no body. Any
     * local process may connect (loopback is no trust), and libevent's
     * own limits are none: a client sending headers or a body without end
     * would grow this process until it is killed. Past these: 400 or 413. */
    evhttp_set_max_headers_size(http, METRICS_HEADERS_MAX);
    evhttp_set_max_body_size(http, 0);
    evhttp_set_timeout(http, 10);
    evhttp_set_gencb(http, on_request, rt);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(http, host, port);
    if (!bs) {
        int e = errno;
        evhttp_free(http);
        event_free(o->http_retry);
        o->http_retry = NULL;
        errno = e;
        return TP_ESYS;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    uint16_t bound = port;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss,
                    &sl) == 0)
        bound = ntohs(ss.ss_family == AF_INET6
                          ? ((struct sockaddr_in6 *)&ss)->sin6_port
                          : ((struct sockaddr_in *)&ss)->sin_port);
    o->http_lev = evhttp_bound_socket_get_listener(bs);
    pthread_mutex_lock(&serving_lock);
    o->next_serving = serving;
    serving = o;
    pthread_mutex_unlock(&serving_lock);
    evconnlistener_set_error_cb(o->http_lev, on_accept_error);
    o->http = http;
    if (port_out)
        *port_out = bound;
    return 0;
}

void tpi_metrics_stop(tpi_obs *o)
{
    pthread_mutex_lock(&serving_lock);
    tpi_obs **p = &serving;
    while (*p != o)
        p = &(*p)->next_serving;
    *p = o->next_serving;
    pthread_mutex_unlock(&serving_lock);
    evhttp_free(o->http);
    event_free(o->http_retry);
    o->http = NULL;
}
