/*
 * Socket actors on real loopback sockets: an echo server with 100
 * concurrent clients (byte-exact; some close mid-message, some reset),
 * the same over a Unix-domain socket, read backpressure (a slow
 * connection actor keeps memory bounded while its client floods), the
 * output-limit disconnect, and EMFILE in the accept loop (no spinning,
 * and service again once fds free up). Clients run on plain threads and
 * report to the root with tp_runtime_send.
 */
#include "tp_test.h"
#include "actors/actor.h"
#include "troupe/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

enum { TAG_DONE = 1, TAG_MORE };

/* ------------------------------------------------------------- helpers */

static int connect_tcp(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

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
} echo_stats;

static echo_stats es;

static int echo_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: atomic_fetch_add(&es.started, 1); break;
    case TP_NET_DATA: {
        const void *p;
        size_t n;
        EXPECT_EQ(tp_msg_scanf(msg, "y", &p, &n), 0);
        EXPECT(n > 0);
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
    s.opts.unix_path = unix_path;
    s.opts.high_water = 16 * 1024;
    s.client = echo_clients;
    tpt_reset();
    tpt_result r;
    assert_int_equal(tpt_run(NULL, server_root, &s, NULL, &r), 0);
    TPT_CHECK();
    if (s.client_failures)
        fail_msg("%d clients failed; first: %s", s.client_failures, s.detail);
    assert_int_equal(atomic_load(&es.started), NCLIENTS);
    assert_int_equal(atomic_load(&es.ended), NCLIENTS);
    assert_int_equal(r.stats.actors_alive, 0);
}

/* 100 clients at once, each echoed byte for byte (full-duplex, 48 KiB);
 * a tenth close mid-message with FIN, a tenth with RST: each connection
 * actor learns of its end, the others are unaffected. */
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

static atomic_int cut_rc, cut_code, cut_writes;

static int pusher_conn(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    static char chunk[256 * 1024];
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
    case TAG_MORE: {
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

/* A peer that does not read is disconnected once its pending output
 * passes output_limit: tp_conn_write says TP_E2BIG, TP_NET_CLOSED carries
 * TP_E2BIG, and a log line names the peer. */
static void test_output_limit(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    atomic_store(&cut_rc, 0);
    atomic_store(&cut_code, 0);
    atomic_store(&cut_writes, 0);
    s.opts.conn_behavior = pusher_conn;
    s.opts.high_water = 64 * 1024;
    s.opts.output_limit = 2 << 20;
    s.client = lazy_client;
    char logpath[64];
    snprintf(logpath, sizeof logpath, "/tmp/troupe-test-%d.log", (int)getpid());
    int saved = dup(2);
    int logfd = open(logpath, O_CREAT | O_TRUNC | O_RDWR, 0600);
    dup2(logfd, 2);
    tpt_reset();
    int status = tpt_run(NULL, server_root, &s, NULL, NULL);
    dup2(saved, 2);
    close(saved);
    char log[1024] = {0};
    lseek(logfd, 0, SEEK_SET);
    (void)!read(logfd, log, sizeof log - 1);
    close(logfd);
    unlink(logpath);
    assert_int_equal(status, 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&cut_rc), TP_E2BIG);
    assert_int_equal(atomic_load(&cut_code), TP_E2BIG);
    assert_non_null(strstr(log, "troupe: disconnecting client 127.0.0.1:"));
    assert_non_null(strstr(log, "over the limit of 2097152"));
}

/* ------------------------------------------------------------- EMFILE */

#define NEMF 16

static double emf_cpu_ms, emf_wall_ms;
static int emf_served_first, emf_served_all;

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 +
           ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3;
}

static bool echoed(int fd)
{
    char b[8];
    return recv(fd, b, sizeof b, MSG_DONTWAIT) > 0;
}

static void *emfile_client(void *arg)
{
    server *s = arg;
    int fds[NEMF];
    bool served[NEMF] = {0};
    for (int i = 0; i < NEMF; i++)
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* Leave the server room for 3 connections. */
    struct rlimit old, lim;
    getrlimit(RLIMIT_NOFILE, &old);
    int probe = dup(0);
    int maxfd = probe;
    close(probe);
    for (int i = 0; i < NEMF; i++)
        if (fds[i] > maxfd)
            maxfd = fds[i];
    lim = old;
    lim.rlim_cur = (rlim_t)maxfd + 1 + 3;
    setrlimit(RLIMIT_NOFILE, &lim);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < NEMF; i++) {
        connect(fds[i], (struct sockaddr *)&a, sizeof a);
        send(fds[i], "x", 1, MSG_NOSIGNAL);
    }
    usleep(100 * 1000);
    /* The listener is out of fds now: it must wait, not spin. */
    double c0 = cpu_ms(), w0 = tpt_now_ms();
    usleep(400 * 1000);
    emf_cpu_ms = cpu_ms() - c0;
    emf_wall_ms = tpt_now_ms() - w0;
    for (int i = 0; i < NEMF; i++)
        if ((served[i] = echoed(fds[i])))
            emf_served_first++;
    /* Free fds by closing served clients; the rest get served. */
    double t0 = tpt_now_ms();
    while (emf_served_all < NEMF && tpt_now_ms() - t0 < 15000) {
        for (int i = 0; i < NEMF; i++) {
            if (!served[i] && echoed(fds[i]))
                served[i] = true;
            if (served[i] && fds[i] >= 0) {
                close(fds[i]);
                fds[i] = -1;
                emf_served_all++;
            }
        }
        usleep(5000);
    }
    setrlimit(RLIMIT_NOFILE, &old);
    for (int i = 0; i < NEMF; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    usleep(50 * 1000); /* let the connection actors see EOF */
    client_done(s);
    return NULL;
}

/* Under a low RLIMIT_NOFILE the accept loop hits EMFILE: it pauses (the
 * process stays nearly idle instead of spinning on a readable listening
 * socket), and once fds are freed every waiting client is served. */
static void test_emfile(void **unused)
{
    static server s;
    memset(&s, 0, sizeof s);
    memset(&es, 0, sizeof es);
    emf_served_first = emf_served_all = 0;
    s.opts.conn_behavior = echo_conn;
    s.client = emfile_client;
    tpt_reset();
    int saved = dup(2), nul = open("/dev/null", O_WRONLY);
    dup2(nul, 2); /* the pause log lines */
    int status = tpt_run(NULL, server_root, &s, NULL, NULL);
    dup2(saved, 2);
    close(saved);
    close(nul);
    assert_int_equal(status, 0);
    TPT_CHECK();
    assert_true(emf_served_first >= 1);
    assert_true(emf_served_first < NEMF);
    assert_true(emf_cpu_ms < emf_wall_ms / 4);
    assert_int_equal(emf_served_all, NEMF);
}

/* --------------------------------------------------------- API errors */

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
        cmocka_unit_test(test_emfile),
        cmocka_unit_test(test_api_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
