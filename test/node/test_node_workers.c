/*
 * examples/node_workers: a worker group over three processes through a
 * real nats-server. Two worker nodes and a client node: every call is
 * answered, by both worker nodes; then one worker node is killed (-9) and
 * a second client run is answered in full by the other one.
 */
#include "node_test.h"

#include <sys/wait.h>

static char bin[1024];
static char url[64];

static int setup(void **unused)
{
    /* build/test/test_node_workers -> build/examples/node_workers */
    if (nt_nats_up(true, NULL) != 0)
        return -1;
    ssize_t n = readlink("/proc/self/exe", bin, sizeof bin - 32);
    if (n <= 0)
        return -1;
    bin[n] = '\0';
    *strrchr(bin, '/') = '\0';
    strcpy(strrchr(bin, '/'), "/examples/node_workers");
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", nt_nats.port);
    return 0;
}

static int teardown(void **unused)
{
    nt_nats_down();
    return 0;
}

/* Start a worker node; returns once both its workers joined the group
 * (it prints a line for each). */
static pid_t worker(const char *name)
{
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        close(out[0]);
        execl(bin, bin, url, name, "worker", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    char line[256];
    int joined = 0;
    while (joined < 2 && fgets(line, sizeof line, f))
        joined += strstr(line, "a worker joined") != NULL;
    fclose(f);
    assert_int_equal(joined, 2);
    return pid;
}

/* Run a client node for calls; its output in out. Returns its status. */
static int client(const char *name, int calls, char *out, size_t size)
{
    char cmd[1280];
    snprintf(cmd, sizeof cmd, "%s %s %s client %d", bin, url, name, calls);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "<node> answered <k>": k, or 0 if the node is not listed. */
static int answers(const char *out, const char *node)
{
    char key[64];
    snprintf(key, sizeof key, "%s answered ", node);
    const char *p = strstr(out, key);
    return p ? atoi(p + strlen(key)) : 0;
}

static void test_group_over_three_processes(void **unused)
{
    char out[4096];
    pid_t w1 = worker("w1"), w2 = worker("w2");

    assert_int_equal(client("c1", 400, out, sizeof out), 0);
    assert_non_null(strstr(out, "400 of 400 calls answered"));
    assert_int_equal(answers(out, "w1") + answers(out, "w2"), 400);
    assert_true(answers(out, "w1") > 0); /* NATS spreads over both */
    assert_true(answers(out, "w2") > 0);

    /* w2 dies: calls held by it fail (noconnection) and are sent again;
     * the group is w1 alone. */
    kill(w2, SIGKILL);
    waitpid(w2, NULL, 0);
    assert_int_equal(client("c2", 100, out, sizeof out), 0);
    assert_non_null(strstr(out, "100 of 100 calls answered"));
    assert_int_equal(answers(out, "w1"), 100);

    /* SIGTERM: an orderly shutdown, status 0. */
    int st;
    kill(w1, SIGTERM);
    assert_int_equal(waitpid(w1, &st, 0), w1);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_over_three_processes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
