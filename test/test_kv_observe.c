/*
 * troupe-kv observed from outside (issue 8): with --metrics-port, curl
 * (or, without curl, a small HTTP client here) fetches valid Prometheus
 * text with the runtime and per-actor counters; kill -USR1 prints the
 * actor tree (coordinator, shards, listener, a connection under it).
 */
#include "tp_test.h"

#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static char kv_bin[PATH_MAX];

typedef struct kv {
    pid_t pid;
    int out, err; /* its stdout and stderr */
    uint16_t port, metrics;
} kv;

/* Read from fd into buf (appending) until needle shows or 10 s pass. */
static bool read_until(int fd, char *buf, size_t size, const char *needle)
{
    size_t got = strlen(buf);
    double t0 = tpt_now_ms();
    while (!strstr(buf, needle) && got < size - 1 &&
           tpt_now_ms() - t0 < 10000) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
    }
    return strstr(buf, needle) != NULL;
}

static kv start_kv(void)
{
    kv k = {0};
    int out[2], err[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(err), 0);
    k.pid = fork();
    assert_true(k.pid >= 0);
    if (k.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        execl(kv_bin, kv_bin, "--port", "0", "--no-persist", "--quiet",
              "--shards", "2", "--metrics-port", "0", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    k.out = out[0];
    k.err = err[0];
    char line[512] = "";
    if (!read_until(k.out, line, sizeof line, "/metrics\n"))
        fail_msg("troupe-kv did not announce its metrics port: '%s'", line);
    const char *p = strstr(line, "ready on 127.0.0.1:");
    const char *m = strstr(line, "metrics on http://127.0.0.1:");
    assert_non_null(p);
    assert_non_null(m);
    k.port = (uint16_t)atoi(p + strlen("ready on 127.0.0.1:"));
    k.metrics = (uint16_t)atoi(m + strlen("metrics on http://127.0.0.1:"));
    return k;
}

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* The body of GET /metrics: by curl when installed, else by hand. */
static char *scrape(uint16_t port, bool *by_curl)
{
    size_t cap = 1 << 18, len = 0;
    char *buf = calloc(1, cap);
    *by_curl = system("command -v curl >/dev/null 2>&1") == 0;
    if (*by_curl) {
        char cmd[160];
        snprintf(cmd, sizeof cmd,
                 "curl -sS --fail --max-time 10 http://127.0.0.1:%u/metrics",
                 (unsigned)port);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        size_t r;
        while ((r = fread(buf + len, 1, cap - 1 - len, p)) > 0)
            len += r;
        assert_int_equal(pclose(p), 0);
        return buf;
    }
    int fd = dial(port);
    const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL),
                     sizeof req - 1);
    ssize_t r;
    while ((r = recv(fd, buf + len, cap - 1 - len, 0)) > 0)
        len += (size_t)r;
    close(fd);
    char *body = strstr(buf, "\r\n\r\n");
    assert_non_null(body);
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
}

/* Every non-comment line is "name[{labels}] value"; every family has
 * HELP then TYPE before its samples. */
static void check_prom(const char *body)
{
    char fam[128] = "";
    for (const char *p = body; *p;) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        char line[1024];
        size_t n = (size_t)(e - p);
        assert_true(n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        p = e + 1;
        if (!strncmp(line, "# HELP ", 7)) {
            sscanf(line + 7, "%127s", fam);
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            char name[128], type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_string_equal(name, fam);
            assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge"));
            continue;
        }
        size_t fl = strlen(fam);
        if (strncmp(line, fam, fl) || (line[fl] != ' ' && line[fl] != '{'))
            fail_msg("sample outside its family %s: %s", fam, line);
        const char *v = strrchr(line, ' ');
        char *end;
        strtod(v + 1, &end);
        if (*end)
            fail_msg("bad value: %s", line);
    }
}

static double sample(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (!strncmp(p, name, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (!strncmp(p, prefix, pl))
            n++;
    return n;
}

static void test_kv_metrics_and_dump(void **state)
{
    (void)state;
    kv k = start_kv();
    int c = dial(k.port);
    const char ping[] = "*1\r\n$4\r\nPING\r\n";
    assert_int_equal(send(c, ping, sizeof ping - 1, MSG_NOSIGNAL),
                     sizeof ping - 1);
    char pong[64] = "";
    assert_true(read_until(c, pong, sizeof pong, "\r\n"));
    assert_string_equal(pong, "+PONG\r\n");

    bool by_curl;
    char *body = scrape(k.metrics, &by_curl);
    if (!by_curl)
        print_message("curl not installed: scraped with the test's client\n");
    check_prom(body);
    /* coordinator, 2 shards, the pubsub registry, the listener, one
     * connection */
    assert_true(sample(body, "troupe_actors_alive") == 6);
    assert_true(sample(body, "troupe_actors_spawned_total") == 6);
    assert_true(sample(body, "troupe_actors_exited_total{reason=\"error\"}") ==
                0);
    assert_true(sample(body, "troupe_restarts_total") == 0);
    assert_true(sample(body, "troupe_dead_letters_total") >= 0);
    assert_true(sample(body, "troupe_late_replies_total") >= 0);
    assert_non_null(strstr(body, "name=\"kv-coordinator\""));
    assert_non_null(
        strstr(body, "# TYPE troupe_actor_messages_handled_total counter"));
    assert_non_null(strstr(body, "troupe_actor_handler_seconds_total{"));
    assert_non_null(strstr(body, "troupe_actor_mailbox_high_water{"));
    free(body);

    /* kill -USR1: the tree on stderr */
    assert_int_equal(kill(k.pid, SIGUSR1), 0);
    static char dump[1 << 16];
    if (!read_until(k.err, dump, sizeof dump, "totals:"))
        fail_msg("no dump after SIGUSR1: '%s'", dump);
    assert_non_null(strstr(dump, "== troupe: 6 actors =="));
    const char *root = strstr(dump, "\"kv-coordinator\"");
    assert_non_null(root);
    /* the root; shards, pubsub, listener; the connection */
    assert_int_equal(count_lines(dump, "<"), 1);
    assert_int_equal(count_lines(dump, "  <"), 4);
    assert_int_equal(count_lines(dump, "    <"), 1);
    assert_non_null(strstr(dump, " handled "));

    close(c);
    assert_int_equal(kill(k.pid, SIGTERM), 0);
    int st = 0;
    double t0 = tpt_now_ms();
    while (waitpid(k.pid, &st, WNOHANG) == 0 && tpt_now_ms() - t0 < 10000)
        usleep(2000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(k.out);
    close(k.err);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* build/test/test_kv_observe -> build/examples/troupe-kv */
    snprintf(kv_bin, sizeof kv_bin, "%s", argv[0]);
    char *slash = strrchr(kv_bin, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(kv_bin, sizeof kv_bin, ".");
    strncat(kv_bin, "/../examples/troupe-kv",
            sizeof kv_bin - strlen(kv_bin) - 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_metrics_and_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
