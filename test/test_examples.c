/*
 * The three programs of the Tokio "Spawning" chapter (examples/): each runs
 * as a child process and its exact output and exit status are checked; then
 * in-process variants check what the output alone cannot show: tp_run (like
 * tokio::run) returns only after the root and every spawned task ended.
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tp_test.h"

#ifndef EXAMPLES_DIR
#error "EXAMPLES_DIR must name the directory of the example binaries"
#endif

/* ----------------------------------------------------- example binaries */

typedef struct proc_out {
    char out[4096];
    char err[4096];
    int status; /* exit status, or -1 if it did not exit normally */
} proc_out;

static void slurp(FILE *f, char *buf, size_t cap)
{
    rewind(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
}

static void run_example(const char *name, proc_out *po)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, name);
    FILE *out = tmpfile(), *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fileno(out), 1);
        dup2(fileno(err), 2);
        execl(path, name, (char *)NULL);
        _exit(127);
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    po->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    slurp(out, po->out, sizeof po->out);
    slurp(err, po->err, sizeof po->err);
    fclose(out);
    fclose(err);
}

static int count_occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* tokio::spawn x4: each task prints once; the order is not promised. */
static void test_hello_tasks_output(void **unused)
{
    proc_out po;
    run_example("hello_tasks", &po);
    assert_int_equal(po.status, 0);
    assert_string_equal(po.err, "");
    assert_int_equal(strlen(po.out), 4 * strlen("Hello from task N\n"));
    for (int i = 0; i < 4; i++) {
        char line[64];
        snprintf(line, sizeof line, "Hello from task %d\n", i);
        assert_int_equal(count_occurrences(po.out, line), 1);
    }
}

/* oneshot::channel: the spawned task's value reaches the root. */
static void test_oneshot_output(void **unused)
{
    proc_out po;
    run_example("oneshot", &po);
    assert_int_equal(po.status, 0);
    assert_string_equal(po.err, "");
    assert_string_equal(po.out, "Got `hello from spawned task`\n");
}

/* mpsc::channel(1024): ten values, in order, then the stream closes. */
static void test_mpsc_stream_output(void **unused)
{
    proc_out po;
    char want[1024] = "";
    run_example("mpsc_stream", &po);
    for (int i = 0; i < 10; i++) {
        char line[64];
        snprintf(line, sizeof line, "Got `Message %d from spawned task`\n", i);
        strcat(want, line);
    }
    assert_int_equal(po.status, 0);
    assert_string_equal(po.err, "");
    assert_string_equal(po.out, want);
}

/* ------------------------------------------------ in-process variants */

#define TAG_GO 1
#define TAG_LINE 2

/* Shared by all actors of one run, which may run on several scheduler
 * threads: the counters are atomic; order_ok and got are written by one
 * actor only. */
typedef struct world {
    atomic_int spawned;
    atomic_int ended; /* state_free calls */
    atomic_int printed[4];
    atomic_int lines; /* mpsc lines received */
    atomic_int producer_ended;
    int order_ok;
    char got[64];
} world;

static world W;

static void count_end(void *state) { atomic_fetch_add(&W.ended, 1); }

/* A hello task that first waits 10*(i+1) ms, so it outlives the root. */
static int slow_hello(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int i = (int)(intptr_t)state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_send_after(ctx, 10u * (unsigned)(i + 1), TAG_GO, NULL, 0,
                                &(tp_timer){0}),
                  0);
    } else if (tp_msg_tag(msg) == TAG_GO) {
        atomic_fetch_add(&W.printed[i], 1);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int hello_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_spawn_opts o = {.state_free = count_end};
    for (int i = 0; i < 4; i++) {
        EXPECT_EQ(tp_spawn(ctx, slow_hello, (void *)(intptr_t)i, &o, NULL), 0);
        atomic_fetch_add(&W.spawned, 1);
    }
    tp_exit(ctx, TP_REASON_NORMAL); /* the root ends first */
    return TP_HANDLED;
}

/* tokio::run blocks until all spawned tasks terminated, even when the
 * root future finished long before them. */
static void test_hello_run_waits_for_tasks(void **unused)
{
    tpt_result r;
    memset(&W, 0, sizeof W);
    tpt_reset();
    tp_spawn_opts ro = {.state_free = count_end};
    assert_int_equal(tpt_run(NULL, hello_root, NULL, &ro, &r), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&W.spawned), 4);
    assert_int_equal(atomic_load(&W.ended), 5); /* 4 tasks + root */
    for (int i = 0; i < 4; i++)
        assert_int_equal(atomic_load(&W.printed[i]), 1);
    assert_true(r.elapsed_ms >= 40.0); /* the last task waited 40 ms */
    assert_int_equal(r.stats.actors_alive, 0);
    assert_int_equal(r.stats.actors_spawned, 5);
    assert_int_equal(r.stats.actors_exited, 5);
    assert_int_equal(r.reason.kind, TP_EXIT_NORMAL);
}

/* The oneshot sender: sends 20 ms after it started. */
static int delayed_tx(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_oneshot *tx = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        tp_timer t;
        EXPECT_EQ(tp_send_after(ctx, 20, TAG_GO, NULL, 0, &t), 0);
    } else if (tp_msg_tag(msg) == TAG_GO) {
        void *buf;
        size_t len;
        EXPECT_EQ(tp_packf(&buf, &len, "s", "hello from spawned task"), 0);
        EXPECT_EQ(tp_oneshot_send(ctx, tp_ctx_runtime(ctx), *tx, buf, len), 0);
        free(buf);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void free_and_count(void *state)
{
    free(state);
    atomic_fetch_add(&W.ended, 1);
}

static int oneshot_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_oneshot *rx = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_oneshot_new(ctx, -1, rx), 0);
        EXPECT(rx->ref != 0);
        EXPECT(rx->pid == tp_self(ctx));
        tp_oneshot *tx = malloc(sizeof *tx);
        *tx = *rx;
        tp_spawn_opts o = {.state_free = free_and_count};
        EXPECT_EQ(tp_spawn(ctx, delayed_tx, tx, &o, NULL), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_REPLY) {
        const char *s;
        size_t n;
        EXPECT_EQ(tp_msg_ref(msg), rx->ref);
        EXPECT_EQ(tp_msg_status(msg), 0);
        EXPECT_EQ(tp_msg_scanf(msg, "S", &s, &n), 0);
        if (n < sizeof W.got)
            memcpy(W.got, s, n);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* oneshot: rx.and_then(...) gets the value; run ends after both tasks. */
static void test_oneshot_in_process(void **unused)
{
    tpt_result r;
    static tp_oneshot rx;
    memset(&W, 0, sizeof W);
    tpt_reset();
    tp_spawn_opts ro = {.state_free = count_end};
    assert_int_equal(tpt_run(NULL, oneshot_root, &rx, &ro, &r), 0);
    TPT_CHECK();
    assert_string_equal(W.got, "hello from spawned task");
    assert_int_equal(atomic_load(&W.ended), 2);
    assert_int_equal(r.stats.actors_alive, 0);
    assert_int_equal(r.stats.late_replies, 0);
}

static void producer_ended(void *state)
{
    atomic_fetch_add(&W.producer_ended, 1);
    free(state);
}

static int producer(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_pid to = *(tp_pid *)state;
    for (int i = 0; i < 10; i++)
        EXPECT_EQ(tp_sendf(ctx, to, TAG_LINE, "[is]", i, "from spawned task"),
                  0);
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int consumer(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_ref *mon = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_pid *to = malloc(sizeof *to), p;
        *to = tp_self(ctx);
        tp_spawn_opts o = {.state_free = producer_ended};
        EXPECT_EQ(tp_spawn(ctx, producer, to, &o, &p), 0);
        EXPECT_EQ(tp_monitor(ctx, p, mon), 0);
        break;
    }
    case TAG_LINE: {
        int i;
        const char *s;
        size_t n;
        EXPECT_EQ(tp_msg_scanf(msg, "[iS]", &i, &s, &n), 0);
        if (i != atomic_load(&W.lines))
            W.order_ok = 0;
        atomic_fetch_add(&W.lines, 1);
        break;
    }
    case TP_TAG_DOWN: {
        tp_reason why;
        EXPECT_EQ(tp_msg_ref(msg), *mon);
        EXPECT_EQ(tp_msg_reason(msg, &why), 0);
        /* the producer's exact reason is test_signals' concern */
        EXPECT(why.kind == TP_EXIT_NORMAL || why.kind == TP_EXIT_NOPROC);
        EXPECT_EQ(atomic_load(&W.lines), 10); /* DOWN after the data */
        EXPECT_EQ(atomic_load(&W.producer_ended), 1);
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    }
    return TP_HANDLED;
}

/* mpsc: every value arrives in order, and "tx dropped" (DOWN) comes last. */
static void test_mpsc_in_process(void **unused)
{
    tpt_result r;
    static tp_ref mon;
    memset(&W, 0, sizeof W);
    W.order_ok = 1;
    tpt_reset();
    tp_spawn_opts ro = {.mailbox_capacity = 1024};
    assert_int_equal(tpt_run(NULL, consumer, &mon, &ro, &r), 0);
    TPT_CHECK();
    assert_int_equal(atomic_load(&W.lines), 10);
    assert_true(W.order_ok);
    assert_int_equal(atomic_load(&W.producer_ended), 1);
    assert_int_equal(r.stats.actors_alive, 0);
    assert_int_equal(r.stats.actors_exited, 2);
    assert_int_equal(r.stats.dead_letters, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_tasks_output),
        cmocka_unit_test(test_oneshot_output),
        cmocka_unit_test(test_mpsc_stream_output),
        cmocka_unit_test(test_hello_run_waits_for_tasks),
        cmocka_unit_test(test_oneshot_in_process),
        cmocka_unit_test(test_mpsc_in_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
