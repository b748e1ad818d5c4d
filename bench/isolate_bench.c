#define _POSIX_C_SOURCE 200809L
/*
 * Request/reply round trips to an isolated actor (issue 7): one call at a
 * time, then 64 in flight. Not part of ctest. Build: link troupe_static.
 */
#include <stdio.h>
#include <time.h>
#include <troupe.h>
#include <troupe/isolate.h>
static int echo(tp_ctx *ctx, void *st, const tp_msg *m)
{
    (void)st;
    if (tp_msg_tag(m) == 1) {
        size_t n;
        const void *d = tp_msg_data(m, &n);
        return tp_reply(ctx, m, d, n);
    }
    return TP_HANDLED;
}
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
typedef struct {
    tp_pid w;
    int depth, sent, done, total, phase;
    double t0;
} B;
static int root(tp_ctx *ctx, void *st, const tp_msg *m)
{
    B *b = st;
    if (tp_msg_tag(m) == TP_TAG_START) {
        tp_isolate_opts o = {.name = "echo", .flags = TP_SPAWN_LINK};
        tp_isolate_spawn(ctx, &o, &b->w);
        b->depth = 1;
        b->total = 20000;
        b->t0 = now();
        for (; b->sent < b->depth; b->sent++)
            tp_call_int(ctx, b->w, 1, 7, -1, NULL);
        return TP_HANDLED;
    }
    if (tp_msg_tag(m) == TP_TAG_REPLY) {
        b->done++;
        if (b->done == b->total) {
            double dt = now() - b->t0;
            printf("in flight %2d: %d round trips in %.3f s: %.1f us each, "
                   "%.0f/s\n",
                   b->depth, b->total, dt, dt / b->total * 1e6, b->total / dt);
            if (b->depth == 64) {
                tp_kill(ctx, b->w);
                return tp_exit(ctx, TP_REASON_NORMAL);
            }
            b->depth = 64;
            b->total = 200000;
            b->sent = b->done = 0;
            b->t0 = now();
            for (; b->sent < b->depth; b->sent++)
                tp_call_int(ctx, b->w, 1, 7, -1, NULL);
            return TP_HANDLED;
        }
        if (b->sent < b->total) {
            b->sent++;
            tp_call_int(ctx, b->w, 1, 7, -1, NULL);
        }
    }
    return TP_HANDLED;
}
int main(int argc, char **argv)
{
    tp_isolate_register("echo", echo, NULL);
    tp_isolate_main(argc, argv);
    tp_runtime *rt;
    tp_runtime_new(NULL, &rt);
    B b = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    tp_run(rt, root, &b, &o);
    tp_runtime_free(rt);
    return 0;
}
