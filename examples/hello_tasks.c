/*
 * The first program of the Tokio "Spawning" chapter, ported to troupe:
 * the root spawns four tasks, each prints `Hello from task N` and ends.
 * tp_run blocks until the root and all four tasks have ended.
 */
#include <stdint.h>
#include <stdio.h>

#include <troupe.h>

#define TASKS 4

static int task(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TP_TAG_START) {
        printf("Hello from task %d\n", (int)(intptr_t)state);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    for (int i = 0; i < TASKS; i++) {
        /* The task number travels as the state pointer itself: no allocation. */
        int rc = tp_spawn(ctx, task, (void *)(intptr_t)i, NULL, NULL);
        if (rc < 0)
            return rc; /* the root ends with this error; tp_run returns 1 */
    }
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

int main(void)
{
    tp_runtime *rt;
    int rc = tp_runtime_new(NULL, &rt);
    if (rc < 0) {
        fprintf(stderr, "tp_runtime_new: %s\n", tp_strerror(rc));
        return 1;
    }
    int status = tp_run(rt, root, NULL, NULL);
    if (status < 0) {
        fprintf(stderr, "tp_run: %s\n", tp_strerror(status));
        status = 1;
    }
    tp_runtime_free(rt);
    return status;
}
