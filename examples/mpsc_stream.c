/*
 * The mpsc program of the Tokio "Spawning" chapter, ported to troupe.
 *
 * Tokio: `mpsc::channel(1_024)`, a spawned producer sends ten strings and
 * drops its tx; the root consumes with `rx.for_each` until the stream ends.
 * troupe: the root's own mailbox is the channel (capacity 1024). The root
 * spawns the producer and monitors it; the producer's DOWN is "tx dropped":
 * signals from one sender are ordered after its messages, so DOWN arrives
 * after the ten strings and the root ends when the stream is exhausted.
 */
#include <stdio.h>
#include <stdlib.h>

#include <troupe.h>

#define MESSAGES 10
#define TAG_LINE 1

static void producer_free(void *state) { free(state); }

/* The producer: its state is the consumer's pid (the "tx"). */
static int producer(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) != TP_TAG_START)
        return TP_HANDLED;
    tp_pid tx = *(const tp_pid *)state;
    char line[64];
    for (int i = 0; i < MESSAGES; i++) {
        snprintf(line, sizeof line, "Message %d from spawned task", i);
        int rc = tp_sendf(ctx, tx, TAG_LINE, "s", line);
        if (rc < 0)
            return rc;
    }
    tp_exit(ctx, TP_REASON_NORMAL); /* drop tx */
    return TP_HANDLED;
}

typedef struct consumer_state {
    tp_ref producer_mon;
} consumer_state;

static int consumer(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    consumer_state *st = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_pid *tx = malloc(sizeof *tx);
        if (!tx)
            return TP_ENOMEM;
        *tx = tp_self(ctx);
        tp_spawn_opts opts = {.state_free = producer_free};
        tp_pid p;
        int rc = tp_spawn(ctx, producer, tx, &opts, &p);
        if (rc < 0) {
            free(tx);
            return rc;
        }
        return tp_monitor(ctx, p, &st->producer_mon);
    }
    case TAG_LINE: {
        const char *s;
        size_t n;
        int rc = tp_msg_scanf(msg, "S", &s, &n);
        if (rc < 0)
            return rc;
        printf("Got `%.*s`\n", (int)n, s);
        return TP_HANDLED;
    }
    case TP_TAG_DOWN:
        if (tp_msg_ref(msg) == st->producer_mon)
            tp_exit(ctx, TP_REASON_NORMAL); /* the stream is closed */
        return TP_HANDLED;
    default: return TP_HANDLED;
    }
}

int main(void)
{
    tp_runtime *rt;
    static consumer_state st;
    int rc = tp_runtime_new(NULL, &rt);
    if (rc < 0) {
        fprintf(stderr, "tp_runtime_new: %s\n", tp_strerror(rc));
        return 1;
    }
    tp_spawn_opts opts = {.mailbox_capacity = 1024}; /* mpsc::channel(1_024) */
    int status = tp_run(rt, consumer, &st, &opts);
    if (status < 0) {
        fprintf(stderr, "tp_run: %s\n", tp_strerror(status));
        status = 1;
    }
    tp_runtime_free(rt);
    return status;
}
