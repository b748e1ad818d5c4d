/*
 * Small helpers shared by the test programs (header only, not a test).
 *
 * Behaviors must not call cmocka's assert_* (a failed assert longjmps out of
 * tp_run and leaves the runtime half-run), so they use EXPECT(), which keeps
 * the first failure; the test asserts on it after tp_run returned.
 */
#ifndef TP_TEST_H
#define TP_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "troupe.h"

static char tpt_failure[512];

#define EXPECT(cond)                                                           \
    do {                                                                       \
        if (!(cond) && !tpt_failure[0])                                        \
            snprintf(tpt_failure, sizeof tpt_failure, "%s:%d: EXPECT(%s)",     \
                     __FILE__, __LINE__, #cond);                               \
    } while (0)

#define EXPECT_EQ(a, b)                                                        \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_ && !tpt_failure[0])                                       \
            snprintf(tpt_failure, sizeof tpt_failure,                          \
                     "%s:%d: EXPECT_EQ(%s, %s): %lld != %lld", __FILE__,       \
                     __LINE__, #a, #b, a_, b_);                                \
    } while (0)

/* Call at the start of a test, and after tp_run to report EXPECT failures. */
static inline void tpt_reset(void) { tpt_failure[0] = '\0'; }
#define TPT_CHECK()                                                            \
    do {                                                                       \
        if (tpt_failure[0])                                                    \
            fail_msg("%s", tpt_failure);                                       \
    } while (0)

static inline double tpt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A run that hangs (usually because an EXPECT failed in a behavior and
 * the actors never ended) is reported with that first failure. */
#define TPT_RUN_TIMEOUT_S 90
static void tpt_on_alarm(int sig)
{
    static const char head[] = "tp_run did not return; first failure: ";
    (void)sig;
    (void)!write(2, head, sizeof head - 1);
    (void)!write(2, tpt_failure, strlen(tpt_failure));
    (void)!write(2, "\n", 1);
    _exit(3);
}

static inline void tpt_watchdog(int on)
{
    signal(SIGALRM, tpt_on_alarm);
    const char *env = getenv("TPT_TIMEOUT"); /* seconds, for debugging */
    unsigned secs = env ? (unsigned)atoi(env) : TPT_RUN_TIMEOUT_S;
    alarm(on ? secs : 0);
}

/* What a run left behind, collected before tp_runtime_free. */
typedef struct tpt_result {
    int status;
    tp_stats stats;
    tp_reason reason;
    char reason_text[TP_REASON_TEXT_MAX + 1];
    double elapsed_ms;
} tpt_result;

/* After tp_run: the counters and the root's reason (text copied) into res. */
static inline void tpt_capture(tp_runtime *rt, tpt_result *res)
{
    tp_runtime_stats(rt, &res->stats);
    if (tp_runtime_root_reason(rt, &res->reason) == 0 && res->reason.text) {
        snprintf(res->reason_text, sizeof res->reason_text, "%s",
                 res->reason.text);
        res->reason.text = res->reason_text;
    }
}

/* Create a runtime (cfg may be NULL), run root, collect, free. Returns the
 * tp_run status. */
static inline int tpt_run(const tp_config *cfg, tp_behavior root, void *state,
                          const tp_spawn_opts *opts, tpt_result *res)
{
    tp_runtime *rt = NULL;
    tpt_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    assert_int_equal(tp_runtime_new(cfg, &rt), 0);
    assert_non_null(rt);
    double t0 = tpt_now_ms();
    tpt_watchdog(1);
    res->status = tp_run(rt, root, state, opts);
    tpt_watchdog(0);
    res->elapsed_ms = tpt_now_ms() - t0;
    tpt_capture(rt, res);
    tp_runtime_free(rt);
    return res->status;
}

/* A value from /proc/self/status in kB ("VmRSS", "VmHWM"), or -1. */
static inline long tpt_proc_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t klen = strlen(key);
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* Reset VmHWM to the current RSS (Linux >= 4.0); false if not possible. */
static inline int tpt_reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return 0;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0) && ok;
}

#endif /* TP_TEST_H */
