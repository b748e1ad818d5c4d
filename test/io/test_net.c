/*
 * Socket actors on real loopback sockets: an echo server with 100
 * concurrent clients (byte-exact; some close mid-message, some reset),
 * the same over a Unix-domain socket, read backpressure (a slow
 * connection actor keeps memory bounded while its client floods), the
 * output limit (a peer that reads gets a burst of any size, one that does
 * not is cut), and fd exhaustion (clients refused at once, counted, and
 * served again once fds free up), a socket whose event cannot be added
 * (the connection fails, the others go on). Clients run on plain threads
 * and report to the root with tp_runtime_send.
 */
#include "tp_test.h"
#include "actors/actor.h"
#include "runtime/runtime.h"
#include "io/io_test.h"
#include "troupe/net.h"

#include <dlfcn.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

enum { TAG_DONE = 1, TAG_MORE };

/* ------------------------------------------------------------- helpers */

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (unsigned char)(seed >> 16);
    }
}

/* ---------------------------------------------------------- echo server */

typedef struct echo_stats {
    atomic_int started, ended, closed_eof, closed_err;
    atomic_llong bytes;
    atomic_ullong scheds; /* bit i: a connection started on scheduler i */
    atomic_int moved;     /* reads handled away from where it started */
} echo_stats;

static echo_stats es;

/* The scheduler running the calling actor. */
static unsigned sched_id(void) { return tpi_sched_current()->id; }

/* A connection actor's state (conn_init): where it started (the load
 * balancer may move one that talks to no actor). */
static void *echo_init(void *arg)
{
    (void)arg;
    return calloc(1, sizeof(unsigned));
}

static int echo_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    unsigned *home = state; /* NULL without echo_init */
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        atomic_fetch_add(&es.started, 1);
        atomic_fetch_or(&es.scheds, 1ull << sched_id());
        if (home)
            *home = sched_id();
        break;
    case TP_NET_DATA: {
        const void *p;
        size_t n;
        EXPECT_EQ(tp_msg_scanf(msg, "y", &p, &n), 0);
        EXPECT(n > 0);
        if (home && sched_id() != *home) /* moved, socket and all */
            atomic_fetch_add(&es.moved, 1);
        atomic_fetch_add(&es.bytes, (long long)n);
        int rc = tp_conn_write(ctx, p, n);
        EXPECT(rc == 0 || rc == TP_ESTATE);
        break;
    }
    case TP_NET_CLOSED: {
        int64_t code = -1;
        EXPECT_EQ(tp_msg_int(msg, &code), 0);
        atomic_fetch_add(code == 0 ? &es.closed_eof : &es.closed_err, 1);
        atomic_fetch_add(&es.ended, 1);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    }
    return TP_HANDLED;
}

typedef struct server {
    tp_listen_opts opts;
    void *(*client)(void *); /* client thread body, gets the server */
    tp_runtime *rt;
    tp_pid root, listener;
    uint16_t port;
    pthread_t thread;
    int listen_rc;
    int client_failures;
    char detail[256];
} server;

/* Root: listen, start the client thread, and end everything when the
 * client reports TAG_DONE. */
static int server_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    server *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        s->rt = tp_ctx_runtime(ctx);
        s->root = tp_self(ctx);
        s->listen_rc = tp_listen(ctx, &s->opts, &s->listener, &s->port);
        EXPECT_EQ(s->listen_rc, 0);
        if (s->listen_rc)
            return tp_exit(ctx, TP_REASON_NORMAL);
        EXPECT_EQ(pthread_create(&s->thread, NULL, s->client, s), 0);
        break;
    case TAG_DONE:
        pthread_join(s->thread, NULL);
        /* shutdown: the listener ends, its connections with it */
        tp_exit(ctx, TP_REASON_SHUTDOWN);
        break;
    }
    return TP_HANDLED;
}

static void client_done(server *s)
{
    tp_runtime_send(s->rt, s->root, TAG_DONE, NULL, 0);
}

/* ------------------------------------------------- 100 concurrent echo */

#define NCLIENTS 100
#define PAYLOAD (48 * 1024)

typedef struct echo_client {
    server *s;
    int idx;
    int ok;
} echo_client;

static void *echo_one(void *arg)
{
    echo_client *c = arg;
    int kind = c->idx % 10; /* 0: FIN mid-message, 1: RST, else full */
    int fd = c->s->opts.unix_path ? connect_unix(c->s->opts.unix_path)
                                  : connect_tcp(c->s->port);
    if (fd < 0)
        return NULL;
    unsigned char *out = malloc(PAYLOAD), *in = malloc(PAYLOAD + 1);
    fill(out, PAYLOAD, (unsigned)c->idx + 1);
    size_t sent = 0, got = 0, limit = kind <= 1 ? PAYLOAD / 3 : PAYLOAD;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    bool shut = false;
    double t0 = tpt_now_ms();
    while (tpt_now_ms() - t0 < 20000) {
        struct pollfd p = {fd, POLLIN | (sent < limit ? POLLOUT : 0), 0};
        poll(&p, 1, 100);
        if (sent < limit && (p.revents & POLLOUT)) {
            size_t chunk = limit - sent < 3000 ? limit - sent : 3000;
            ssize_t w = send(fd, out + sent, chunk, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
        }
        if (sent == limit && kind <= 1) {
            if (kind == 1) { /* reset: SO_LINGER 0 then close */
                struct linger lg = {1, 0};
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            }
            c->ok = 1;
            break;
        }
        if (sent == limit && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t r = recv(fd, in + got, PAYLOAD + 1 - got, 0);
            if (r > 0)
                got += (size_t)r;
            else if (r == 0) {
                c->ok = got == PAYLOAD && memcmp(in, out, PAYLOAD) == 0;
                break;
            }
        }
    }
    close(fd);
    free(out);
    free(in);
    return NULL;
}

static void *echo_clients(void *arg)
{
    server *s = arg;
    pthread_t t[NCLIENTS];
    echo_client c[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        c[i] = (echo_client){s, i, 0};
        pthread_create(&t[i], NULL, echo_one, &c[i]);
    }
    for (int i = 0; i < NCLIENTS; i++) {
        pthread_join(t[i], NULL);
        if (!c[i].ok && s->client_failures++ == 0)
            snprintf(s->detail, sizeof s->detail, "client %d failed", i);
    }
    /* Wait until every connection actor saw its end. */
    double t0 = tpt_now_ms();
    while (atomic_load(&es.ended) < NCLIENTS && tpt_now_ms() - t0 < 10000)
        usleep(1000);
    client_done(s);
    return NULL;
}

static void run_echo(const char *unix_path)
{
    static server s;
    memset(&s, 0, sizeof s);
    memset(&es, 0, sizeof es);
    s.opts.conn_behavior = echo_conn;
    s.opts.conn_init = echo_init;
    s.opts.conn_state_free = free;
    s.opts.unix_path = unix_path;
    s.opts.high_water = 16 * 1024;
    s.client = echo_clients;
    tp_config cfg;
    tp_config_init(&cfg);
    tpt_reset();
    tpt_result r;
    assert_int_equal(tpt_run(&cfg, server_root, &s, NULL, &r), 0);
    TPT_CHECK();
    if (s.client_failures)
        fail_msg("%d clients failed; first: %s", s.client_failures, s.detail);
    assert_int_equal(atomic_load(&es.started), NCLIENTS);
    assert_int_equal(atomic_load(&es.ended), NCLIENTS);
    assert_int_equal(r.stats.actors_alive, 0);
    /* Spread over every scheduler (each new one goes to the scheduler
     * with the fewest), whatever thread the listener runs on. */
    unsigned threads = cfg.threads < 64 ? cfg.threads : 64;
    assert_int_equal(atomic_load(&es.scheds), (1ull << threads) - 1);
    print_message("echo: %d reads handled after a move\n",
                  atomic_load(&es.moved));
}

/* 100 clients at once, each echoed byte for byte (full-duplex, 48 KiB);
 * a tenth close mid-message with FIN, a tenth with RST: each connection
 * actor learns of its end, the others are unaffected. The connections are
 * spread over all the scheduler threads, each served by its own. */
static void test_echo_100_tcp(void **unused) { run_echo(NULL); }

static void test_echo_100_unix(void **unused)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/troupe-test-%d.sock", (int)getpid());
    run_echo(path);
    assert_int_equal(access(path, F_OK), -1); /* removed by the listener */
}

/* ------------------------------------------------- read backpressure */

#define FLOOD_BYTES ((size_t)64 << 20)
#define SLOW_CAP 4

static atomic_size_t slow_max_count, slow_bytes;

static int slow_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    /* the messages still queued, and this one */
    size_t cnt = tpi_mailbox_count(&a->mb) + 1;
    if (cnt > atomic_load(&slow_max_count))
        atomic_store(&slow_max_count, cnt);
    if (tp_msg_tag(msg) == TP_NET_DATA) {
        const void *p;
        size_t n;
        tp_msg_scanf(msg, "y", &p, &n);
        atomic_fetch_add(&slow_bytes, n);
        double t = tpt_now_ms();
        while (tpt_now_ms() - t < 0.05) /* a slow consumer */
            ;
    } else if (tp_msg_tag(msg) == TP_NET_CLOSED) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static long flood_hwm_growth_kb;

static void *flood_client(void *arg)
{
    server *s = arg;
    int fd = connect_tcp(s->port);
    static char buf[256 * 1024];
    memset(buf, 'x', sizeof buf);
    long before = tpt_proc_kb("VmRSS");
    tpt_reset_hwm();
    size_t sent = 0;
    while (fd >= 0 && sent < FLOOD_BYTES) {
        ssize_t w = send(fd, buf, sizeof buf, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    long hwm = tpt_proc_kb("VmHWM");
    flood_hwm_growth_kb = hwm > 0 && before > 0 ? hwm - before : -1;
    if (fd >= 0)
        close(fd);
    double t0 = tpt_now_ms();
    while (atomic_load(&slow_bytes) < sent && tpt_now_ms() - t0 < 30000)
        usleep(1000);
    client_done(s);
    return NULL;
}

/* A client floods 64 MiB at a connection actor with a 4-message mailbox
 * that handles each message slowly: reading stops whenever the mailbox is
 * full, so it never holds more than capacity (+ one in flight), memory
 * stays bounded, and every byte still arrives. */
static void test_read_backpressure(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    atomic_store(&slow_max_count, 0);
    atomic_store(&slow_bytes, 0);
    s.opts.conn_behavior = slow_conn;
    s.opts.conn_mailbox = SLOW_CAP;
    s.client = flood_client;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, server_root, &s, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&slow_bytes), FLOOD_BYTES);
    assert_true(atomic_load(&slow_max_count) >= SLOW_CAP);
    assert_true(atomic_load(&slow_max_count) <= SLOW_CAP + 1);
#ifndef __SANITIZE_ADDRESS__      /* ASan's quarantine keeps freed memory */
    if (flood_hwm_growth_kb >= 0) /* 64 KiB reads x a few messages */
        assert_true(flood_hwm_growth_kb < 16 * 1024);
#endif
}

/* ------------------------------------------------ output-limit cutoff */

#define OUT_LIMIT ((size_t)2 << 20)
#define CHUNK ((size_t)256 << 10)

static atomic_int cut_rc, cut_code, cut_writes;

/* Writes 256 KiB chunks while less than twice the limit waits (a pusher
 * that watches tp_conn_pending), until the connection is cut. */
static int pusher_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    static char chunk[CHUNK];
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
    case TAG_MORE: {
        if (tp_conn_pending(ctx) > 2 * OUT_LIMIT) {
            tp_send_after(ctx, 5, TAG_MORE, NULL, 0, NULL);
            break;
        }
        int rc = tp_conn_write(ctx, chunk, sizeof chunk);
        atomic_fetch_add(&cut_writes, 1);
        if (rc == 0)
            tp_send(ctx, tp_self(ctx), TAG_MORE, NULL, 0);
        else
            atomic_store(&cut_rc, rc);
        break;
    }
    case TP_NET_CLOSED: {
        int64_t code = 0;
        tp_msg_int(msg, &code);
        atomic_store(&cut_code, (int)code);
        /* one more write, to see what it says after the cut */
        atomic_store(&cut_rc, tp_conn_write(ctx, chunk, 1));
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    }
    return TP_HANDLED;
}

static void *lazy_client(void *arg)
{
    server *s = arg;
    int fd = connect_tcp(s->port);
    int small = 4096;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    /* never reads: wait for the server to give up on us */
    double t0 = tpt_now_ms();
    while (atomic_load(&cut_code) == 0 && tpt_now_ms() - t0 < 20000)
        usleep(1000);
    if (fd >= 0)
        close(fd);
    client_done(s);
    return NULL;
}

/* Runs s with stderr in a file, whose start goes to log. */
static int run_logged(server *s, char *log, size_t size)
{
    char logpath[64];
    snprintf(logpath, sizeof logpath, "/tmp/troupe-test-%d.log", (int)getpid());
    int saved = dup(2);
    int logfd = open(logpath, O_CREAT | O_TRUNC | O_RDWR, 0600);
    dup2(logfd, 2);
    tpt_reset();
    int status = tpt_run(NULL, server_root, s, NULL, NULL);
    dup2(saved, 2);
    close(saved);
    memset(log, 0, size);
    lseek(logfd, 0, SEEK_SET);
    (void)!read(logfd, log, size - 1);
    close(logfd);
    unlink(logpath);
    return status;
}

/* A peer that does not read is disconnected once its pending output is
 * over output_limit and it took nothing for output_stall_ms: TP_NET_CLOSED
 * carries TP_E2BIG, later writes say TP_ESTATE, a log line names the
 * peer. */
static void test_output_limit(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    atomic_store(&cut_rc, 0);
    atomic_store(&cut_code, 0);
    atomic_store(&cut_writes, 0);
    s.opts.conn_behavior = pusher_conn;
    s.opts.high_water = 64 * 1024;
    s.opts.output_limit = OUT_LIMIT;
    s.opts.output_stall_ms = 200;
    s.client = lazy_client;
    char log[1024];
    assert_int_equal(run_logged(&s, log, sizeof log), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&cut_code), TP_E2BIG);
    assert_int_equal(atomic_load(&cut_rc), TP_ESTATE);
    assert_non_null(strstr(log, "troupe: disconnecting client 127.0.0.1:"));
    assert_non_null(strstr(log, "over the limit of 2097152"));
}

#define BURST ((size_t)24 << 20)

static atomic_size_t burst_got;
static atomic_int burst_code;

/* One turn writes 24 MiB, twelve times the output limit, then waits for
 * the peer to close. */
static int burst_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    static unsigned char chunk[CHUNK];
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        for (size_t off = 0; off < BURST; off += CHUNK) {
            fill(chunk, CHUNK, (unsigned)(off / CHUNK));
            EXPECT_EQ(tp_conn_write(ctx, chunk, CHUNK), 0);
        }
        break;
    case TP_NET_CLOSED: {
        int64_t code = -1;
        tp_msg_int(msg, &code);
        atomic_store(&burst_code, (int)code);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    }
    return TP_HANDLED;
}

static void *reading_client(void *arg)
{
    server *s = arg;
    int fd = connect_tcp(s->port);
    static unsigned char buf[CHUNK], want[CHUNK];
    size_t got = 0;
    while (fd >= 0 && got < BURST) {
        /* chunk by chunk, checking each against its pattern */
        size_t have = 0;
        while (have < CHUNK) {
            ssize_t r = recv(fd, buf + have, CHUNK - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        fill(want, CHUNK, (unsigned)(got / CHUNK));
        if (memcmp(buf, want, CHUNK) != 0)
            break;
        got += CHUNK;
    }
out:
    atomic_store(&burst_got, got);
    if (fd >= 0)
        close(fd);
    double t0 = tpt_now_ms(); /* until the actor saw our close */
    while (atomic_load(&burst_code) == -1 && tpt_now_ms() - t0 < 10000)
        usleep(1000);
    client_done(s);
    return NULL;
}

/* A peer that reads gets a burst far over output_limit, all of it, and
 * is not cut: the limit is on what a peer leaves waiting, not on how much
 * a turn writes. */
static void test_output_burst_read(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    atomic_store(&burst_got, 0);
    atomic_store(&burst_code, -1);
    s.opts.conn_behavior = burst_conn;
    s.opts.high_water = 64 * 1024;
    s.opts.output_limit = OUT_LIMIT;
    s.opts.output_stall_ms = 5000;
    s.client = reading_client;
    char log[1024];
    assert_int_equal(run_logged(&s, log, sizeof log), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&burst_got), BURST);
    assert_int_equal(atomic_load(&burst_code), 0); /* EOF, not TP_E2BIG */
    assert_null(strstr(log, "disconnecting"));
}

/* ------------------------------------------------------------- EMFILE */

#define NEMF 16
#define ROOM 3 /* fds left to the server for connections */
#define FULL_MSG "-ERR full\r\n"

typedef struct emf_server {
    server s;
    int ctl, report; /* pipes to and from the parent */
    tp_listener_stats st;
    int stats_rc;
} emf_server;

/* The highest fd open now. */
static int max_open_fd(void)
{
    int max = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            max = fd;
    return max;
}

/* In the child: leave ROOM fds, tell the parent the port, wait for its
 * word, report the listener's counters. */
static void *emf_child_client(void *arg)
{
    emf_server *e = arg;
    /* The limit is on fd numbers: fill the holes below the highest. */
    int max = max_open_fd(), fd;
    while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && fd < max)
        ;
    if (fd > max)
        close(fd);
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = (rlim_t)max + 1 + ROOM;
    setrlimit(RLIMIT_NOFILE, &lim);
    (void)!write(e->report, &e->s.port, sizeof e->s.port);
    char c;
    (void)!read(e->ctl, &c, 1);
    e->stats_rc = tp_listen_stats(e->s.rt, e->s.listener, &e->st);
    (void)!write(e->report, &e->st, sizeof e->st);
    client_done(&e->s);
    return NULL;
}

/* The child: an echo server with ROOM fds for connections. */
static int emf_child(int ctl, int report)
{
    static emf_server e;
    memset(&e, 0, sizeof e);
    memset(&es, 0, sizeof es);
    e.ctl = ctl;
    e.report = report;
    e.s.opts.conn_behavior = echo_conn;
    e.s.opts.reject_msg = FULL_MSG;
    e.s.client = emf_child_client;
    int nul = open("/dev/null", O_WRONLY);
    dup2(nul, 2); /* the log lines */
    close(nul);
    tpt_reset();
    int status = tpt_run(NULL, server_root, &e.s, NULL, NULL);
    return status == 0 && !tpt_failure[0] && e.stats_rc == 0 ? 0 : 1;
}

/* A client's answer within 5 s: 1 echoed, 0 refused with FULL_MSG and
 * closed (or reset), -1 anything else (no answer: left in the backlog). */
static int answer(int fd)
{
    char buf[64];
    size_t got = 0;
    double t0 = tpt_now_ms();
    while (tpt_now_ms() - t0 < 5000 && got < sizeof buf) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1)
            continue;
        ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
        if (r <= 0) /* closed; a reset, as our "x" went unread there */
            return got == strlen(FULL_MSG) && memcmp(buf, FULL_MSG, got) == 0
                       ? 0
                       : -1;
        got += (size_t)r;
        if (got == 1 && buf[0] == 'x')
            return 1;
    }
    return -1;
}

static int emf_connect(uint16_t port)
{
    int fd = connect_tcp(port);
    if (fd >= 0)
        send(fd, "x", 1, MSG_NOSIGNAL);
    return fd;
}

/* A server out of fds (RLIMIT_NOFILE lowered in a forked child) answers
 * every client at once: those it has room for are served, the others get
 * reject_msg and are closed, as for max_conns, instead of waiting in the
 * backlog; tp_listen_stats counts them. Once fds are free again, new
 * clients are served. */
static void test_emfile(void **unused)
{
    int ctl[2], report[2];
    assert_int_equal(pipe(ctl), 0);
    assert_int_equal(pipe(report), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(ctl[1]);
        close(report[0]);
        _exit(emf_child(ctl[0], report[1]));
    }
    close(ctl[0]);
    close(report[1]);
    uint16_t port = 0;
    assert_int_equal(read(report[0], &port, sizeof port), sizeof port);
    int fds[NEMF], served = 0, refused = 0, silent = 0;
    for (int i = 0; i < NEMF; i++)
        fds[i] = emf_connect(port);
    for (int i = 0; i < NEMF; i++) {
        int a = fds[i] >= 0 ? answer(fds[i]) : -1;
        served += a == 1;
        refused += a == 0;
        silent += a == -1;
        if (a != 1) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
    /* Free the server's fds; a new client is served again (a refusal
     * while the server has not yet seen the closes: try again). */
    for (int i = 0; i < NEMF; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    int later = -1, attempts = 0;
    for (double t0 = tpt_now_ms(); later != 1 && tpt_now_ms() - t0 < 10000;
         attempts++) {
        int fd = emf_connect(port);
        later = fd >= 0 ? answer(fd) : -1;
        close(fd);
        if (later == 0)
            usleep(20 * 1000);
    }
    (void)!write(ctl[1], "q", 1);
    tp_listener_stats st = {0};
    ssize_t n = read(report[0], &st, sizeof st);
    int status = -1;
    waitpid(child, &status, 0);
    close(ctl[1]);
    close(report[0]);
    print_message("served %d, refused %d, silent %d; stats: accepted %llu, "
                  "rejected %llu, active %llu\n",
                  served, refused, silent, (unsigned long long)st.accepted,
                  (unsigned long long)st.rejected,
                  (unsigned long long)st.active);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(n, sizeof st);
    assert_int_equal(silent, 0);
    assert_true(served >= 1 && served <= ROOM);
    assert_int_equal(served + refused, NEMF);
    assert_int_equal(later, 1);
    assert_int_equal(st.accepted, (uint64_t)served + 1);
    assert_int_equal(st.rejected, (uint64_t)refused + (uint64_t)attempts - 1);
}

/* ------------------------------------------ a socket follows its owner */

/* Keep the calling actor on its scheduler: a timer pins it (it never
 * fires within a test). */
static void stay_here(tp_ctx *ctx)
{
    EXPECT_EQ(tp_send_after(ctx, 600000, TAG_MORE, NULL, 0, NULL), 0);
}

#define GREETING ((size_t)8 << 20)
#define FCHUNK ((size_t)64 << 10)
#define FOLLOW_CONNS 2

enum { TAG_ECHO = 10 };

typedef struct follow_stats {
    tp_pid owner; /* the root, set before any connection */
    atomic_int started;
    /* per connection: scheduler ids at its start and at its second
     * answer; answers seen */
    atomic_uint first[FOLLOW_CONNS], second[FOLLOW_CONNS];
    atomic_int answers[FOLLOW_CONNS];
} follow_stats;

static follow_stats fs;
static unsigned char *greeting;

/* A connection actor that greets with GREETING bytes at once (far more
 * than the socket takes: output stays pending) and has its owner, the
 * root, echo what it reads. Each answer is one message from the root's
 * scheduler, so after the first one the actor moves there, socket and
 * pending output with it. The first two answers (the client's one-byte
 * probes) are not written: nothing re-arms the write event but the move.
 * Its state (index_init, also the next test's): its index, counted by the
 * atomic_int passed as conn_init's argument. */
static void *index_init(void *counter)
{
    int *idx = malloc(sizeof *idx);
    if (idx)
        *idx = atomic_fetch_add((atomic_int *)counter, 1);
    return idx;
}

static int follow_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int idx = *(int *)state;
    const void *p;
    size_t n;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        atomic_store(&fs.first[idx], sched_id());
        EXPECT_EQ(tp_conn_write(ctx, greeting, GREETING), 0);
        EXPECT(tp_conn_pending(ctx) > 0);
        break;
    case TP_NET_DATA: /* to the owner, as it is (a bin) */
        p = tp_msg_data(msg, &n);
        EXPECT_EQ(tp_send(ctx, fs.owner, TAG_ECHO, p, n), 0);
        break;
    case TAG_ECHO: { /* the owner's answer */
        int k = atomic_load(&fs.answers[idx]) + 1;
        if (k == 2)
            atomic_store(&fs.second[idx], sched_id());
        if (k > 2) {
            EXPECT_EQ(tp_msg_scanf(msg, "y", &p, &n), 0);
            EXPECT_EQ(tp_conn_write(ctx, p, n), 0);
        }
        atomic_store(&fs.answers[idx], k);
        break;
    }
    case TP_NET_CLOSED: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

/* The owner (the root, kept on its scheduler by a timer) echoes what its
 * connections send. */
static int follow_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TP_TAG_START) {
        fs.owner = tp_self(ctx);
        stay_here(ctx);
    } else if (tp_msg_tag(msg) == TAG_ECHO) {
        size_t n;
        const void *p = tp_msg_data(msg, &n);
        EXPECT_EQ(tp_send(ctx, tp_msg_from(msg), TAG_ECHO, p, n), 0);
        return TP_HANDLED;
    }
    return server_root(ctx, state, msg);
}

/* Read exactly n bytes within 20 s; true if they equal want. */
static bool read_exact(int fd, const unsigned char *want, size_t n)
{
    unsigned char *got = malloc(n);
    size_t have = 0;
    double t0 = tpt_now_ms();
    while (got && have < n && tpt_now_ms() - t0 < 20000) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1)
            continue;
        ssize_t r = recv(fd, got + have, n - have, 0);
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    bool ok = have == n && memcmp(got, want, n) == 0;
    free(got);
    return ok;
}

/* Wait up to 20 s for connection i's k-th answer. */
static bool answered(int i, int k)
{
    double t0 = tpt_now_ms();
    while (atomic_load(&fs.answers[i]) < k && tpt_now_ms() - t0 < 20000)
        usleep(1000);
    return atomic_load(&fs.answers[i]) >= k;
}

/* Each connection: a probe (its answer moves the actor), a second probe
 * (read on the new loop), then the greeting (written from the new loop by
 * the write event alone), then an echoed chunk. Both connections stay
 * open to the end, so the listener places them on different schedulers. */
static void *follow_client(void *arg)
{
    server *s = arg;
    int fd[FOLLOW_CONNS];
    static unsigned char chunk[FCHUNK];
    fill(chunk, FCHUNK, 7);
    for (int i = 0; i < FOLLOW_CONNS; i++)
        fd[i] = connect_tcp(s->port);
    for (int i = 0; i < FOLLOW_CONNS; i++) {
        bool ok = fd[i] >= 0 && send(fd[i], "h", 1, MSG_NOSIGNAL) == 1 &&
                  answered(i, 1) && send(fd[i], "x", 1, MSG_NOSIGNAL) == 1 &&
                  answered(i, 2) && read_exact(fd[i], greeting, GREETING) &&
                  send(fd[i], chunk, FCHUNK, MSG_NOSIGNAL) == FCHUNK &&
                  read_exact(fd[i], chunk, FCHUNK);
        if (!ok && s->client_failures++ == 0)
            snprintf(s->detail, sizeof s->detail, "connection %d failed", i);
    }
    for (int i = 0; i < FOLLOW_CONNS; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    client_done(s);
    return NULL;
}

/* A connection actor is not pinned by its socket: answered by an actor on
 * a lower-numbered scheduler, it moves there (the runtime's rule for an
 * actor answering one message from another thread), its socket's events
 * and pending output with it. Two connections on two schedulers; the one
 * placed on scheduler 1 ends on the owner's, and every byte arrives. */
static void test_conn_follows_owner(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    memset(&fs, 0, sizeof fs);
    greeting = malloc(GREETING);
    assert_non_null(greeting);
    fill(greeting, GREETING, 9);
    s.opts.conn_behavior = follow_conn;
    s.opts.conn_init = index_init;
    s.opts.arg = &fs.started;
    s.opts.high_water = 2 * GREETING; /* reading goes on meanwhile */
    s.opts.conn_state_free = free;
    s.client = follow_client;
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 2;
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, follow_root, &s, NULL, NULL), 0);
    TPT_CHECK();
    free(greeting);
    if (s.client_failures)
        fail_msg("%d failed; first: %s", s.client_failures, s.detail);
    assert_int_equal(atomic_load(&fs.started), FOLLOW_CONNS);
    unsigned moved = 0, on1 = 0;
    for (int i = 0; i < FOLLOW_CONNS; i++) {
        on1 += atomic_load(&fs.first[i]) == 1;
        moved += atomic_load(&fs.first[i]) == 1 &&
                 atomic_load(&fs.second[i]) == 0;
    }
    assert_int_equal(on1, 1);   /* placed on both schedulers */
    assert_int_equal(moved, 1); /* and the one on 1 followed to 0 */
}

/* ------------------------------------ the load balancer moves a socket */

#define SPINNERS 2
#define SHARE_CONNS 4
#define SHARE_CHUNK 1024

enum { TAG_SPIN = 11 };

static atomic_int share_started;
static atomic_uint share_first[SHARE_CONNS]; /* scheduler at its start */
static atomic_int share_moved;    /* echoes away from where it started */
static atomic_bool share_stop;    /* spinners: stop */
static atomic_int share_spinning; /* spinners alive */

/* Busy on its scheduler (mailing itself), kept there by a timer: the run
 * queue never runs dry, and nothing on it can move but connections. */
static int spinner(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        stay_here(ctx);
        atomic_fetch_add(&share_spinning, 1);
    }
    if (atomic_load(&share_stop)) {
        atomic_fetch_sub(&share_spinning, 1);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_SPIN, NULL, 0), 0);
    return TP_HANDLED;
}

/* An echo connection that talks to no actor: the balancer may move it. */
static int share_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int idx = *(int *)state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        atomic_store(&share_first[idx], sched_id());
    } else if (tp_msg_tag(msg) == TP_NET_DATA) {
        const void *p;
        size_t n;
        EXPECT_EQ(tp_msg_scanf(msg, "y", &p, &n), 0);
        unsigned char id = (unsigned char)atomic_load(&share_first[idx]);
        if (n == 1 && *(const char *)p == '?') /* where it started */
            EXPECT_EQ(tp_conn_write(ctx, &id, 1), 0);
        else
            EXPECT_EQ(tp_conn_write(ctx, p, n), 0);
        if (sched_id() != atomic_load(&share_first[idx]))
            atomic_fetch_add(&share_moved, 1);
    } else if (tp_msg_tag(msg) == TP_NET_CLOSED) {
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int share_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TP_TAG_START) {
        stay_here(ctx);
    } else if (tp_msg_tag(msg) == TAG_SPIN) { /* the client is ready */
        for (int i = 0; i < SPINNERS; i++)
            EXPECT_EQ(tp_spawn(ctx, spinner, NULL, NULL, NULL), 0);
        return TP_HANDLED;
    }
    return server_root(ctx, state, msg);
}

/* Rounds of one echoed chunk on each connection in turn, until a
 * connection has answered 16 times away from where it started (or 20 s):
 * every byte must come back, wherever it runs. */
static void *share_client(void *arg)
{
    server *s = arg;
    int fd[SHARE_CONNS];
    unsigned char chunk[SHARE_CHUNK];
    int rounds = 0;
    bool ok = true;
    int on0[SHARE_CONNS], n0 = 0;
    for (int i = 0; i < SHARE_CONNS; i++)
        ok &= (fd[i] = connect_tcp(s->port)) >= 0;
    /* Each answers its first byte with the scheduler it started on. */
    for (int i = 0; ok && i < SHARE_CONNS; i++) {
        unsigned char id = 0;
        ok = send(fd[i], "?", 1, MSG_NOSIGNAL) == 1 &&
             recv(fd[i], &id, 1, MSG_WAITALL) == 1;
        if (ok && id == 0)
            on0[n0++] = fd[i];
    }
    ok &= n0 == 2;
    /* Now the spinners: none of the connections was moved before. */
    tp_runtime_send(s->rt, s->root, TAG_SPIN, NULL, 0);
    double t0 = tpt_now_ms();
    while (atomic_load(&share_spinning) < SPINNERS && tpt_now_ms() - t0 < 5000)
        usleep(1000);
    while (ok && atomic_load(&share_moved) < 16 && tpt_now_ms() - t0 < 20000) {
        fill(chunk, sizeof chunk, (unsigned)++rounds);
        /* Both at once, so that one waits in the run queue behind the
         * other (one readied alone may take the next slot, which is never
         * shared); the one on scheduler 1 stays idle meanwhile. */
        for (int i = 0; i < n0; i++)
            ok &= send(on0[i], chunk, sizeof chunk, MSG_NOSIGNAL) ==
                  SHARE_CHUNK;
        for (int i = 0; ok && i < n0; i++)
            ok = read_exact(on0[i], chunk, sizeof chunk);
    }
    if (!ok || atomic_load(&share_moved) < 16) {
        s->client_failures++;
        snprintf(s->detail, sizeof s->detail, "%s after %d rounds",
                 ok ? "none moved" : "a chunk was lost", rounds);
    }
    for (int i = 0; i < SHARE_CONNS; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    /* The spinners stop, then the root ends everything. */
    atomic_store(&share_stop, true);
    while (atomic_load(&share_spinning) > 0 && tpt_now_ms() - t0 < 30000)
        usleep(1000);
    client_done(s);
    return NULL;
}

/* A connection that talks to no actor is moved by the load balancer like
 * any actor. Four connections, two placed on each scheduler; on 0, two
 * spinners (which cannot move) keep the run queue from running dry while
 * scheduler 1 idles: a connection queued there behind them is handed to
 * scheduler 1, its socket with it, and goes on echoing there. (Sent '?'
 * first, a connection answers with the scheduler it started on.) */
static void test_conn_shared(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    atomic_store(&share_started, 0);
    atomic_store(&share_moved, 0);
    atomic_store(&share_stop, false);
    atomic_store(&share_spinning, 0);
    s.opts.conn_behavior = share_conn;
    s.opts.conn_init = index_init;
    s.opts.arg = &share_started;
    s.opts.conn_state_free = free;
    s.client = share_client;
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.threads = 2;
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, share_root, &s, NULL, NULL), 0);
    TPT_CHECK();
    if (s.client_failures)
        fail_msg("%s", s.detail);
}

/* ------------------------------------------- an event that cannot be added */

/* The next fail_adds event_add calls for an event of fail_kind (EV_READ
 * or EV_WRITE) on a connected socket fail as epoll_ctl does when out of
 * memory or of watches: event_add is wrapped (troupe is linked
 * statically, so its calls reach this program's definition). */
static atomic_int fail_adds;
static atomic_short fail_kind;

static bool connected_socket(int fd)
{
    int listening = 1;
    socklen_t len = sizeof listening;
    return fd >= 0 &&
           getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
           !listening;
}

int event_add(struct event *ev, const struct timeval *tv)
{
    typedef int (*fn)(struct event *, const struct timeval *);
    static _Atomic(fn) real;
    /* relaxed: every thread finds the same function. */
    fn f = atomic_load_explicit(&real, memory_order_relaxed);
    if (!f) {
        f = (fn)dlsym(RTLD_NEXT, "event_add");
        atomic_store_explicit(&real, f, memory_order_relaxed);
    }
    int n = atomic_load(&fail_adds);
    if (n > 0 && (event_get_events(ev) & atomic_load(&fail_kind)) &&
        connected_socket(event_get_fd(ev)) &&
        atomic_compare_exchange_strong(&fail_adds, &n, n - 1)) {
        errno = ENOMEM;
        return -1;
    }
    return f(ev, tv);
}

#define ADDFAIL_BURST ((size_t)16 << 20) /* more than one send() takes */

static atomic_int addfail_failed; /* connections closed with TP_ESYS */

/* Echo, except that a read starting with 'B' is answered with a burst. */
static int addfail_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    switch (tp_msg_tag(msg)) {
    case TP_NET_DATA: {
        const void *p;
        size_t n;
        EXPECT_EQ(tp_msg_scanf(msg, "y", &p, &n), 0);
        char *burst = n && *(const char *)p == 'B' ? calloc(1, ADDFAIL_BURST)
                                                   : NULL;
        int rc = burst ? tp_conn_write(ctx, burst, ADDFAIL_BURST)
                       : tp_conn_write(ctx, p, n);
        free(burst);
        EXPECT(rc == 0 || rc == TP_ESTATE);
        break;
    }
    case TP_NET_CLOSED: {
        int64_t code = 0;
        EXPECT_EQ(tp_msg_int(msg, &code), 0);
        if (code == TP_ESYS)
            atomic_fetch_add(&addfail_failed, 1);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    }
    return TP_HANDLED;
}

/* Bytes read from fd until the peer closed it, or -1 if it did not
 * within 5 s. */
static long read_to_end(int fd)
{
    static char buf[64 * 1024];
    long total = 0;
    double t0 = tpt_now_ms();
    while (tpt_now_ms() - t0 < 5000) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0)
            total += r;
        else if (r == 0 || errno != EINTR)
            return total;
    }
    return -1;
}

static long addfail_read_end, addfail_write_end;
static bool addfail_echoed;

static void *addfail_client(void *arg)
{
    server *s = arg;
    /* The new connection's read event. */
    atomic_store(&fail_kind, EV_READ);
    atomic_store(&fail_adds, 1);
    int fd = connect_tcp(s->port);
    addfail_read_end = fd < 0 ? -2 : read_to_end(fd);
    close(fd);
    /* The write event of a burst the socket did not take at once: read
     * only once its add failed (reading, we could take it all). */
    atomic_store(&fail_kind, EV_WRITE);
    atomic_store(&fail_adds, 1);
    fd = connect_tcp(s->port);
    addfail_write_end = -2;
    if (fd >= 0 && send(fd, "B", 1, MSG_NOSIGNAL) == 1) {
        double t0 = tpt_now_ms();
        while (atomic_load(&fail_adds) > 0 && tpt_now_ms() - t0 < 5000)
            usleep(1000);
        addfail_write_end = read_to_end(fd);
    }
    close(fd);
    /* The next client is served. */
    fd = connect_tcp(s->port);
    char back[6] = {0};
    addfail_echoed = fd >= 0 && send(fd, "hello", 5, MSG_NOSIGNAL) == 5 &&
                     recv(fd, back, 5, MSG_WAITALL) == 5 &&
                     memcmp(back, "hello", 5) == 0;
    close(fd);
    double t0 = tpt_now_ms();
    while (atomic_load(&addfail_failed) < 2 && tpt_now_ms() - t0 < 5000)
        usleep(1000);
    client_done(s);
    return NULL;
}

/* A socket event that cannot be added (epoll_ctl failing) fails that
 * connection: its actor gets TP_NET_CLOSED with TP_ESYS and its client
 * sees the close, when the read event is added at the connection's
 * start and when the write event is added for output the socket did not
 * take. Later clients are served. Before, the failure was ignored: the
 * connection waited forever for events it did not have. */
static void test_event_add_fails(void **unused)
{
    (void)unused;
    static server s;
    memset(&s, 0, sizeof s);
    atomic_store(&addfail_failed, 0);
    s.opts.conn_behavior = addfail_conn;
    s.client = addfail_client;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, server_root, &s, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&fail_adds), 0); /* both failed */
    assert_true(addfail_read_end == 0);
    assert_true(addfail_write_end >= 0);
    assert_true((size_t)addfail_write_end < ADDFAIL_BURST);
    assert_true(addfail_echoed);
    assert_int_equal(atomic_load(&addfail_failed), 2);
}

/* --------------------------------------------------------- API errors */

/* ------------------------------------- a lingering close has a deadline */

/* The connection actor ends on the client's first byte; the client keeps
 * sending a byte every 250 ms. The socket lingers (shutdown(SHUT_WR), the
 * input discarded) for LINGER_SECS (2 s) at most, then is closed: the
 * client's sends fail. Before, each byte renewed the linger's idle
 * timeout: the socket stayed open for as long as the client trickled,
 * outside max_conns, and such clients could take every fd. */
static int quit_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) == TP_NET_DATA)
        return tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static double trickle_eof_ms, trickle_closed_ms;

static void *trickle_client(void *arg)
{
    server *s = arg;
    int fd = connect_tcp(s->port);
    double t0 = tpt_now_ms();
    trickle_eof_ms = trickle_closed_ms = -1;
    while (fd >= 0 && tpt_now_ms() - t0 < 10000) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) {
            trickle_closed_ms = tpt_now_ms() - t0;
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 250) > 0 && trickle_eof_ms < 0) {
            char b;
            if (recv(fd, &b, 1, 0) == 0) /* the server's shutdown */
                trickle_eof_ms = tpt_now_ms() - t0;
        } else if (trickle_eof_ms >= 0) {
            usleep(250000); /* POLLIN stays set after EOF */
        }
    }
    if (fd >= 0)
        close(fd);
    client_done(s);
    return NULL;
}

static void test_linger_deadline(void **unused)
{
    (void)unused;
    static server s;
    memset(&s, 0, sizeof s);
    s.opts.conn_behavior = quit_conn;
    s.client = trickle_client;
    tp_config cfg;
    tp_config_init(&cfg);
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, server_root, &s, NULL, NULL), 0);
    TPT_CHECK();
    print_message("linger: EOF at %.0f ms, closed at %.0f ms\n", trickle_eof_ms,
                  trickle_closed_ms);
    assert_true(trickle_eof_ms >= 0);
    assert_true(trickle_closed_ms > trickle_eof_ms);
    /* 2 s after the EOF, plus a 250 ms byte to meet the closed socket */
    assert_true(trickle_closed_ms - trickle_eof_ms < 6000);
}

/* ------------------------------------ a write cut short by out of memory */

/* tp_conn_write sends what the socket takes at once and queues the rest;
 * when queueing fails (out of memory) after part of the data left, the
 * connection fails: the peer must not see the stream with a piece missing
 * or, as the caller tries again, repeated. Before, the write returned
 * TP_ENOMEM and the connection went on (the next write returned 0). */
static atomic_int fail_buffer_adds; /* evbuffer_add of >= 1 MiB to fail */

int evbuffer_add(struct evbuffer *buf, const void *data, size_t len)
{
    typedef int (*fn)(struct evbuffer *, const void *, size_t);
    static _Atomic(fn) real;
    /* relaxed: every thread finds the same function. */
    fn f = atomic_load_explicit(&real, memory_order_relaxed);
    if (!f) {
        f = (fn)dlsym(RTLD_NEXT, "evbuffer_add");
        atomic_store_explicit(&real, f, memory_order_relaxed);
    }
    int n = atomic_load(&fail_buffer_adds);
    if (n > 0 && len >= ((size_t)1 << 20) &&
        atomic_compare_exchange_strong(&fail_buffer_adds, &n, n - 1))
        return -1;
    return f(buf, data, len);
}

static int cut_first_rc, cut_second_rc;
static atomic_int cut_closed_code, cut_written;

static int cut_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    switch (tp_msg_tag(msg)) {
    case TP_NET_DATA: {
        static char big[ADDFAIL_BURST];
        atomic_store(&fail_buffer_adds, 1);
        cut_first_rc = tp_conn_write(ctx, big, sizeof big);
        atomic_store(&fail_buffer_adds, 0);
        cut_second_rc = tp_conn_write(ctx, "x", 1);
        atomic_store(&cut_written, 1);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    case TP_NET_CLOSED: {
        int64_t code = 0;
        EXPECT_EQ(tp_msg_int(msg, &code), 0);
        atomic_store(&cut_closed_code, (int)code);
        break;
    }
    }
    return TP_HANDLED;
}

static long cut_read;

static void *cut_client(void *arg)
{
    server *s = arg;
    int fd = connect_tcp(s->port);
    bool asked = fd >= 0 && send(fd, "B", 1, MSG_NOSIGNAL) == 1;
    /* Not a byte read before the writes: the socket cannot take it all */
    double t0 = tpt_now_ms();
    while (asked && !atomic_load(&cut_written) && tpt_now_ms() - t0 < 10000)
        usleep(1000);
    cut_read = asked ? read_to_end(fd) : -2;
    if (fd >= 0)
        close(fd);
    client_done(s);
    return NULL;
}

static void test_write_cut_by_oom(void **unused)
{
    (void)unused;
    static server s;
    memset(&s, 0, sizeof s);
    s.opts.conn_behavior = cut_conn;
    s.client = cut_client;
    atomic_store(&cut_written, 0);
    tp_config cfg;
    tp_config_init(&cfg);
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, server_root, &s, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(cut_first_rc, TP_ENOMEM);
    assert_int_equal(cut_second_rc, TP_ESTATE); /* the connection failed */
    assert_true(cut_read >= 0 && (size_t)cut_read < ADDFAIL_BURST);
}

/* ---------------------------------------------------- unix socket files */

/* A stale socket file (its server gone) is replaced; one a live listener
 * accepts on is EADDRINUSE (before: unlinked and taken over, the live
 * server left unreachable); a listener that ends removes the file only if
 * it is still the one it made (before: another server's replacement). */
static char unix_sock[64];
static int unix_other = -1; /* the "other server" that replaced the file */
static int unix_stale_rc, unix_live_rc, unix_live_errno;

static int raw_listen_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
                    listen(fd, 4) != 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int unix_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    (void)msg;
    tp_listen_opts o = {0};
    o.conn_behavior = echo_conn;
    o.unix_path = unix_sock;
    close(raw_listen_unix(unix_sock)); /* its server died: a stale file */
    tp_pid l1;
    unix_stale_rc = tp_listen(ctx, &o, &l1, NULL);
    errno = 0;
    unix_live_rc = tp_listen(ctx, &o, NULL, NULL);
    unix_live_errno = errno;
    unlink(unix_sock); /* another server takes the path over */
    unix_other = raw_listen_unix(unix_sock);
    tp_exit_signal(ctx, l1, TP_REASON_SHUTDOWN);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static void test_unix_socket_files(void **unused)
{
    (void)unused;
    snprintf(unix_sock, sizeof unix_sock, "/tmp/tp_net_unix.%d.sock",
             (int)getpid());
    unlink(unix_sock);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, unix_root, NULL, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(unix_stale_rc, 0);
    assert_int_equal(unix_live_rc, TP_ESYS);
    assert_int_equal(unix_live_errno, EADDRINUSE);
    assert_true(unix_other >= 0);
    int c = connect_unix(unix_sock); /* the other server's file is there */
    assert_true(c >= 0);
    close(c);
    close(unix_other);
    unlink(unix_sock);
}

static int bad_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_listen_opts o = {0};
    EXPECT_EQ(tp_listen(ctx, &o, NULL, NULL), TP_EINVAL);
    o.conn_behavior = echo_conn;
    o.host = "not an address";
    EXPECT_EQ(tp_listen(ctx, &o, NULL, NULL), TP_EINVAL);
    o.host = NULL;
    o.high_water = 100;
    o.output_limit = 10;
    EXPECT_EQ(tp_listen(ctx, &o, NULL, NULL), TP_EINVAL);
    o.high_water = o.output_limit = 0;
    tp_pid l1;
    uint16_t port = 0, p2 = 0;
    EXPECT_EQ(tp_listen(ctx, &o, &l1, &port), 0);
    o.port = port; /* taken */
    EXPECT_EQ(tp_listen(ctx, &o, NULL, &p2), TP_ESYS);
    EXPECT_EQ(errno, EADDRINUSE);
    EXPECT_EQ(tp_conn_write(ctx, "x", 1), TP_ESTATE); /* not a connection */
    char peer[8];
    EXPECT_EQ(tp_conn_peer(ctx, peer, sizeof peer), TP_ESTATE);
    tp_exit_signal(ctx, l1, TP_REASON_SHUTDOWN);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static void test_api_errors(void **unused)
{
    tpt_reset();
    assert_int_equal(tpt_run(NULL, bad_root, NULL, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(tp_listen(NULL, NULL, NULL, NULL), TP_ESTATE);
    assert_int_equal(tp_conn_write(NULL, "x", 1), TP_ESTATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_100_tcp),
        cmocka_unit_test(test_echo_100_unix),
        cmocka_unit_test(test_read_backpressure),
        cmocka_unit_test(test_output_limit),
        cmocka_unit_test(test_output_burst_read),
        cmocka_unit_test(test_emfile),
        cmocka_unit_test(test_conn_follows_owner),
        cmocka_unit_test(test_conn_shared),
        cmocka_unit_test(test_event_add_fails),
        cmocka_unit_test(test_linger_deadline),
        cmocka_unit_test(test_unix_socket_files),
        cmocka_unit_test(test_write_cut_by_oom),
        cmocka_unit_test(test_api_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
