/*
 * The oneshot program of the Tokio "Spawning" chapter, ported to troupe:
 * the root creates a oneshot channel, spawns a task that owns its sending
 * end, and the task sends one string back. The value arrives at the root as
 * a TP_TAG_REPLY message whose ref is the channel's.
 */
#include <stdio.h>
#include <stdlib.h>

#include <troupe.h>

static void task_free(void *state) { free(state); }

/* The spawned task: its state is the channel's sending end. */
static int task(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    const tp_oneshot *tx = state;
    void *buf;
    size_t len;
    int rc = tp_packf(&buf, &len, "s", "hello from spawned task");
    if (rc < 0)
        return rc;
    rc = tp_oneshot_send(ctx, tp_ctx_runtime(ctx), *tx, buf, len);
    tp_free(buf);
    if (rc < 0)
        return rc;
    tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

typedef struct root_state {
    tp_oneshot rx; /* kept to recognise the value by its ref */
} root_state;

static int root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    root_state *st = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        int rc = tp_oneshot_new(ctx, -1, &st->rx);
        if (rc < 0)
            return rc;
        tp_oneshot *tx = malloc(sizeof *tx);
        if (!tx)
            return TP_ENOMEM;
        *tx = st->rx;
        tp_spawn_opts opts = {.state_free = task_free};
        rc = tp_spawn(ctx, task, tx, &opts, NULL);
        if (rc < 0) {
            free(tx);
            return rc;
        }
        return TP_HANDLED;
    }
    case TP_TAG_REPLY: {
        if (tp_msg_ref(msg) != st->rx.ref)
            return TP_HANDLED;
        int status = tp_msg_status(msg);
        const char *s;
        size_t n;
        if (status < 0) {
            fprintf(stderr, "error = %s\n", tp_strerror(status));
            return status;
        }
        int rc = tp_msg_scanf(msg, "S", &s, &n);
        if (rc < 0)
            return rc;
        printf("Got `%.*s`\n", (int)n, s);
        tp_exit(ctx, TP_REASON_NORMAL);
        return TP_HANDLED;
    }
    default: return TP_HANDLED;
    }
}

int main(void)
{
    tp_runtime *rt;
    static root_state st;
    int rc = tp_runtime_new(NULL, &rt);
    if (rc < 0) {
        fprintf(stderr, "tp_runtime_new: %s\n", tp_strerror(rc));
        return 1;
    }
    int status = tp_run(rt, root, &st, NULL);
    if (status < 0) {
        fprintf(stderr, "tp_run: %s\n", tp_strerror(status));
        status = 1;
    }
    tp_runtime_free(rt);
    return status;
}
