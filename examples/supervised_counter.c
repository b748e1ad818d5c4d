/*
 * A supervised service that keeps answering while its worker crashes.
 *
 *            counter_sup (one_for_one)
 *             /                   \
 *     counter (permanent)     client (transient)
 *
 * The counter owns a count and answers "next" requests; it has a bug that
 * makes it crash on every CRASH_EVERY-th request it handles. The client
 * calls it REQUESTS times. A request that hits the crash gets an error
 * reply (the callee ended before replying); the supervisor restarts the
 * counter at once, so the next request is answered again (by a new
 * counter: state dies with the actor that held it). At the end the
 * client prints a summary and asks the supervisor to stop, which stops the
 * tree; tp_sup_run then returns 0.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <troupe.h>
#include <troupe/supervisor.h>

enum { TAG_NEXT = 1, TAG_RETRY = 2 };

#define REQUESTS 23
#define CRASH_EVERY 5
#define RETRY_MS 2 /* after an error, give the restart a moment */

static atomic_int incarnations; /* counter starts, on any scheduler thread */

/* ------------------------------------------------------------ counter */

typedef struct counter {
    int handled; /* requests since this incarnation started */
    int value;
} counter;

static int counter_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    counter *c = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: return tp_register(ctx, "counter");
    case TAG_NEXT:
        if (++c->handled == CRASH_EVERY) /* the bug */
            return tp_exit(ctx, TP_REASON_ERROR(-1, "counter bug"));
        return tp_reply_int(ctx, msg, ++c->value);
    default: return TP_HANDLED;
    }
}

static int start_counter(tp_ctx *ctx, void *arg, const void *args,
                         size_t args_len, tp_pid *pid_out)
{
    counter *c = calloc(1, sizeof *c);
    if (!c)
        return TP_ENOMEM;
    tp_spawn_opts opts = {.flags = TP_SPAWN_LINK, .state_free = free};
    int rc = tp_spawn(ctx, counter_behavior, c, &opts, pid_out);
    if (rc < 0) {
        free(c);
        return rc;
    }
    incarnations++;
    return 0;
}

/* ------------------------------------------------------------- client */

typedef struct client {
    tp_pid sup;
    tp_ref pending;
    int sent, answered, errors;
} client;

static void call_next(tp_ctx *ctx, client *cl)
{
    tp_pid counter_pid = tp_whereis(tp_ctx_runtime(ctx), "counter");
    cl->sent++;
    if (counter_pid == TP_PID_NONE ||
        tp_call(ctx, counter_pid, TAG_NEXT, NULL, 0, 1000, &cl->pending) < 0) {
        printf("request %d: error: counter unavailable\n", cl->sent);
        cl->errors++;
        tp_send_after(ctx, RETRY_MS, TAG_RETRY, NULL, 0, NULL);
    }
}

static int client_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    client *cl = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        cl->sup = tp_whereis(tp_ctx_runtime(ctx), "counter_sup");
        call_next(ctx, cl);
        return TP_HANDLED;
    case TP_TAG_REPLY: {
        if (tp_msg_ref(msg) != cl->pending)
            return TP_HANDLED;
        int status = tp_msg_status(msg);
        int64_t v;
        if (status == 0 && tp_msg_int(msg, &v) == 0) {
            printf("request %d: count %lld\n", cl->sent, (long long)v);
            cl->answered++;
        } else {
            printf("request %d: error: %s\n", cl->sent,
                   tp_strerror(status ? status : TP_EPROTO));
            cl->errors++;
        }
        if (cl->sent == REQUESTS)
            break;
        if (status == 0)
            call_next(ctx, cl);
        else
            tp_send_after(ctx, RETRY_MS, TAG_RETRY, NULL, 0, NULL);
        return TP_HANDLED;
    }
    case TAG_RETRY:
        if (cl->sent == REQUESTS)
            break;
        call_next(ctx, cl);
        return TP_HANDLED;
    default: return TP_HANDLED;
    }
    /* done */
    printf("supervised_counter: %d requests, %d answered, %d errors, "
           "counter restarted %d times\n",
           cl->sent, cl->answered, cl->errors, atomic_load(&incarnations) - 1);
    fflush(stdout);
    return tp_sup_stop(ctx, cl->sup, -1, NULL);
}

static int start_client(tp_ctx *ctx, void *arg, const void *args,
                        size_t args_len, tp_pid *pid_out)
{
    client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return TP_ENOMEM;
    tp_spawn_opts opts = {.flags = TP_SPAWN_LINK, .state_free = free};
    int rc = tp_spawn(ctx, client_behavior, cl, &opts, pid_out);
    if (rc < 0)
        free(cl);
    return rc;
}

/* --------------------------------------------------------------- main */

int main(void)
{
    tp_child_spec children[] = {
        {.id = "counter",
         .start = start_counter,
         .restart = TP_CHILD_PERMANENT,
         .shutdown_ms = 1000},
        {.id = "client",
         .start = start_client,
         .restart = TP_CHILD_TRANSIENT,
         .shutdown_ms = 1000},
    };
    tp_sup_spec spec;
    tp_sup_spec_init(&spec);
    spec.strategy = TP_SUP_ONE_FOR_ONE;
    spec.intensity = 10;   /* tolerate 10 crashes ... */
    spec.period_ms = 1000; /* ... per second */
    spec.children = children;
    spec.n_children = sizeof children / sizeof *children;
    spec.name = "counter_sup";

    tp_runtime *rt;
    int rc = tp_runtime_new(NULL, &rt);
    if (rc < 0) {
        fprintf(stderr, "tp_runtime_new: %s\n", tp_strerror(rc));
        return 1;
    }
    tp_runtime_handle_signals(rt); /* Ctrl-C stops the tree in order */
    rc = tp_sup_run(rt, &spec);
    tp_runtime_free(rt);
    if (rc < 0) {
        fprintf(stderr, "tp_sup_run: %s\n", tp_strerror(rc));
        return 1;
    }
    return rc;
}
