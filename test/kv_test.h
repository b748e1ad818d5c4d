/*
 * Helpers for the tests that drive troupe-kv over loopback: start and stop
 * the real server, a small RESP client, and the real redis-cli.
 */
#ifndef KV_TEST_H
#define KV_TEST_H

#include "tp_test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* How much slower the server runs in a sanitizer build (the test and the
 * server are built alike): a test's own deadlines are multiplied by it.
 * GCC says so with __SANITIZE_*__, clang with __has_feature. */
#ifdef __has_feature
#define KVT_HAS(x) __has_feature(x)
#else
#define KVT_HAS(x) 0
#endif
#if defined(__SANITIZE_THREAD__) || KVT_HAS(thread_sanitizer)
#define KVT_SLOW 10
#elif defined(__SANITIZE_ADDRESS__) || KVT_HAS(address_sanitizer)
#define KVT_SLOW 3
#else
#define KVT_SLOW 1
#endif

static char kv_bin[PATH_MAX] __attribute__((unused));
static char dbfile[128] __attribute__((unused));

/* ------------------------------------------------------------- server */

typedef struct server {
    pid_t pid;
    uint16_t port;
} server;

/* Start troupe-kv on a free port with extra args; waits for "ready". */
static inline server start(const char *const *extra)
{
    server s = {0, 0};
    int out[2];
    assert_int_equal(pipe(out), 0);
    const char *argv[32] = {kv_bin,     "--port", "0",
                            "--dbfile", dbfile,   "--quiet"};
    int n = 6;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s.pid = fork();
    assert_true(s.pid >= 0);
    if (s.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        dup2(out[1], 1);
        close(out[0]);
        execv(kv_bin, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    char line[256] = {0};
    size_t got = 0;
    double t0 = tpt_now_ms();
    while (!strchr(line, '\n') && got < sizeof line - 1 &&
           tpt_now_ms() - t0 < 10000) {
        ssize_t r = read(out[0], line + got, sizeof line - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(out[0]);
    const char *p = strstr(line, "ready on 127.0.0.1:");
    if (!p)
        fail_msg("troupe-kv did not start: '%s'", line);
    s.port = (uint16_t)atoi(p + strlen("ready on 127.0.0.1:"));
    return s;
}

/* start, with the server's stderr (its log) going to the file at log. */
static inline server start_logged(const char *const *extra, const char *log)
{
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
    dup2(fd, 2);
    server s = start(extra);
    dup2(saved, 2);
    close(saved);
    close(fd);
    return s;
}

/* Signal it and return its exit status (or -1). */
static inline int stop(server *s, int sig)
{
    int st = 0;
    kill(s->pid, sig);
    double t0 = tpt_now_ms();
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (tpt_now_ms() - t0 > 10000) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            return -1;
        }
        usleep(2000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ------------------------------------------------------- a RESP client */

typedef struct client {
    int fd;
    char buf[1 << 16];
    size_t n, off;
} client;

static inline client *dial(uint16_t port)
{
    client *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    /* cmdv writes a command in pieces: without this each command waits
     * for the server's delayed ACK (40 ms). */
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

static inline void hangup(client *c)
{
    close(c->fd);
    free(c);
}

/* The fixture of a test that needs a fresh server (--no-persist) and one
 * client: KVT_WITH_SERVER(test) in the list, kvt_client(state) in the
 * test. The teardown hangs up and checks the server ends cleanly on
 * SIGTERM, also after a failed assertion. */
typedef struct kvt_fixture {
    server s;
    client *c;
} kvt_fixture;

static inline int kvt_up(void **state)
{
    kvt_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->s = start((const char *[]){"--no-persist", NULL});
    f->c = dial(f->s.port);
    *state = f;
    return 0;
}

static inline int kvt_down(void **state)
{
    kvt_fixture *f = *state;
    hangup(f->c);
    assert_int_equal(stop(&f->s, SIGTERM), 0);
    free(f);
    return 0;
}

static inline client *kvt_client(void **state)
{
    return ((kvt_fixture *)*state)->c;
}

#define KVT_WITH_SERVER(t) cmocka_unit_test_setup_teardown(t, kvt_up, kvt_down)

static inline void send_raw(client *c, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Send one command (a multibulk of the given words). */
static inline void cmdv(client *c, int argc, const char **argv)
{
    char hdr[32];
    snprintf(hdr, sizeof hdr, "*%d\r\n", argc);
    send_raw(c, hdr, strlen(hdr));
    for (int i = 0; i < argc; i++) {
        snprintf(hdr, sizeof hdr, "$%zu\r\n", strlen(argv[i]));
        send_raw(c, hdr, strlen(hdr));
        send_raw(c, argv[i], strlen(argv[i]));
        send_raw(c, "\r\n", 2);
    }
}

/* One byte, waiting up to 30 s; -1 on EOF or timeout. */
static inline int getb(client *c)
{
    if (c->off == c->n) {
        struct pollfd p = {c->fd, POLLIN, 0};
        /* Generous: under TSan the server is 10-20x slower. */
        if (poll(&p, 1, 30000) <= 0)
            return -1;
        ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (r <= 0)
            return -1;
        c->n = (size_t)r;
        c->off = 0;
    }
    return (unsigned char)c->buf[c->off++];
}

/* Read one reply, rendered as text: "+OK", "-ERR ...", ":5", "$hello",
 * "(nil)", or "[a,b,(nil)]" for arrays. "EOF" when the server closed. */
static inline void reply_into(client *c, char *out, size_t size)
{
    char line[1024];
    size_t n = 0;
    int ch;
    while ((ch = getb(c)) >= 0 && ch != '\n')
        if (n < sizeof line - 1)
            line[n++] = (char)ch;
    if (ch < 0) {
        snprintf(out, size, "EOF");
        return;
    }
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    if (line[0] == '$' || line[0] == '*') {
        long len = atol(line + 1);
        if (len < 0) {
            snprintf(out, size, "(nil)");
            return;
        }
        if (line[0] == '$') {
            size_t o = 0;
            out[o++] = '$';
            for (long i = 0; i < len + 2; i++) {
                ch = getb(c);
                if (i < len && o < size - 1)
                    out[o++] = (char)ch;
            }
            out[o] = '\0';
            return;
        }
        size_t o = (size_t)snprintf(out, size, "[");
        for (long i = 0; i < len; i++) {
            char sub[512];
            reply_into(c, sub, sizeof sub);
            o += (size_t)snprintf(out + o, size > o ? size - o : 0, "%s%s",
                                  i ? "," : "", sub[0] == '$' ? sub + 1 : sub);
        }
        snprintf(out + o, size > o ? size - o : 0, "]");
        return;
    }
    snprintf(out, size, "%s", line);
}

static char last[1 << 16] __attribute__((unused));

/* Run a command given as words and return its rendered reply. */
#define CMD(c, ...)                                                            \
    (cmdv((c), sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *),   \
          (const char *[]){__VA_ARGS__}),                                      \
     reply_into((c), last, sizeof last), last)

#define EXPECT_REPLY(c, want, ...)                                             \
    assert_string_equal(CMD(c, __VA_ARGS__), want)

/* Run "redis-cli -p port <args>" and compare its output (trailing
 * newlines dropped) with want. */
static inline void cli_expect(uint16_t port, const char *args, const char *want)
{
    char cmd[512], out[256];
    snprintf(cmd, sizeof cmd, "redis-cli -p %u %s 2>&1", (unsigned)port, args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    pclose(f);
    while (n && out[n - 1] == '\n')
        n--;
    out[n] = '\0';
    if (strcmp(out, want) != 0)
        fail_msg("redis-cli %s: got '%s', want '%s'", args, out, want);
}

static inline bool have_redis_cli(void)
{
    if (system("command -v redis-cli >/dev/null 2>&1") == 0)
        return true;
    fprintf(stderr, "redis-cli not installed: skipped\n");
    return false;
}

/* Locate build/examples/troupe-kv from build/test/<this test>, name the
 * snapshot file after this process, ignore SIGPIPE. 0 or -1. */
static inline int kvt_setup(void)
{
    ssize_t n = readlink("/proc/self/exe", kv_bin, sizeof kv_bin - 32);
    if (n <= 0)
        return -1;
    kv_bin[n] = '\0';
    char *slash = strrchr(kv_bin, '/');
    *slash = '\0';
    slash = strrchr(kv_bin, '/');
    strcpy(slash, "/examples/troupe-kv");
    snprintf(dbfile, sizeof dbfile, "/tmp/troupe-kv-test-%d.tkv",
             (int)getpid());
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

#endif
