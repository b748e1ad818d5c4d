/*
 * A worker group spread over several processes (nodes joined through a
 * nats-server): the pool of the isolated-workers example, across machines.
 *
 *   nats-server -js -p 4222 &
 *   node_workers nats://127.0.0.1:4222 w1 worker &
 *   node_workers nats://127.0.0.1:4222 w2 worker &
 *   node_workers nats://127.0.0.1:4222 c1 client 200
 *
 * Each worker node runs WORKERS actors that join the group "squares" and
 * answer a call with the square of its integer and their node's name. The
 * client calls the group (IN_FLIGHT calls at a time): NATS queue groups
 * give each call to exactly one live member, on whichever node. It prints
 * how many answers each node gave and exits 0 once every call is answered
 * correctly. A call that finds no member yet (TP_ENOPROC: the workers are
 * still joining) or whose member's node died (TP_ENOCONN, TP_ETIMEDOUT)
 * is sent again after RETRY_MS, so workers may come and go meanwhile.
 * Workers run until SIGINT/SIGTERM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <troupe.h>
#include <troupe/node.h>

enum { TAG_SQUARE = 1, TAG_RETRY = 2 };

#define GROUP "squares"
#define WORKERS 2
#define IN_FLIGHT 4
#define CALL_MS 2000
#define RETRY_MS 50
#define MAX_NODES 8

/* ------------------------------------------------------------- worker */

static int worker(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    int64_t n;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        int rc = tp_group_join(ctx, GROUP);
        if (rc == 0) { /* the server knows the membership from here on */
            printf("%s: a worker joined '%s'\n",
                   tp_node_name(tp_ctx_runtime(ctx)), GROUP);
            fflush(stdout);
        }
        return rc;
    }
    case TAG_SQUARE: {
        void *buf;
        size_t len;
        if (tp_msg_int(msg, &n) != 0)
            return TP_HANDLED; /* not a number: no answer (TP_ENOREPLY) */
        if (tp_packf(&buf, &len, "[l s]", n * n,
                     tp_node_name(tp_ctx_runtime(ctx))) != 0)
            return TP_HANDLED;
        tp_reply(ctx, msg, buf, len); /* copies */
        tp_free(buf);
        return TP_HANDLED;
    }
    }
    return TP_HANDLED;
}

static int worker_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        /* Linked: the shutdown signal the root gets on SIGTERM ends them. */
        tp_spawn_opts o = {0};
        o.flags = TP_SPAWN_LINK;
        for (int i = 0; i < WORKERS; i++) {
            int rc = tp_spawn(ctx, worker, NULL, &o, NULL);
            if (rc)
                return rc;
        }
    }
    return TP_HANDLED;
}

/* ------------------------------------------------------------- client */

typedef struct call {
    tp_ref ref;
    int64_t n; /* 0: slot free */
} call;

typedef struct client {
    int64_t total, next, answered;
    call calls[IN_FLIGHT];
    struct {
        char name[64];
        int answers;
    } nodes[MAX_NODES];
    int nnodes, retries;
    bool failed;
} client;

static void count_node(client *c, const char *name, size_t len)
{
    for (int i = 0; i < c->nnodes; i++)
        if (strlen(c->nodes[i].name) == len &&
            memcmp(c->nodes[i].name, name, len) == 0) {
            c->nodes[i].answers++;
            return;
        }
    if (c->nnodes < MAX_NODES && len < sizeof c->nodes[0].name) {
        memcpy(c->nodes[c->nnodes].name, name, len);
        c->nodes[c->nnodes].name[len] = '\0';
        c->nodes[c->nnodes++].answers = 1;
    }
}

/* Call the group with slot's number. */
static int call_slot(tp_ctx *ctx, call *s)
{
    void *buf;
    size_t len;
    int rc = tp_packf(&buf, &len, "l", s->n);
    if (rc)
        return rc;
    rc = tp_group_call(ctx, GROUP, TAG_SQUARE, buf, len, CALL_MS, &s->ref);
    tp_free(buf);
    return rc;
}

static int client_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    client *c = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        for (int i = 0; i < IN_FLIGHT && c->next <= c->total; i++) {
            c->calls[i].n = c->next++;
            int rc = call_slot(ctx, &c->calls[i]);
            if (rc)
                return rc;
        }
        return TP_HANDLED;
    case TAG_RETRY: { /* the payload is the slot's index */
        int64_t i;
        if (tp_msg_int(msg, &i) == 0 && i >= 0 && i < IN_FLIGHT)
            return call_slot(ctx, &c->calls[i]);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY: break;
    default: return TP_HANDLED;
    }
    call *s = NULL;
    for (int i = 0; i < IN_FLIGHT; i++)
        if (c->calls[i].n && c->calls[i].ref == tp_msg_ref(msg))
            s = &c->calls[i];
    if (!s)
        return TP_HANDLED;
    int st = tp_msg_status(msg);
    if (st != 0) { /* no member yet, or it went away: again, a bit later */
        void *buf;
        size_t len;
        c->retries++;
        int rc = tp_packf(&buf, &len, "l", (int64_t)(s - c->calls));
        if (rc)
            return rc;
        rc = tp_send_after(ctx, RETRY_MS, TAG_RETRY, buf, len, NULL);
        tp_free(buf);
        return rc;
    }
    int64_t sq;
    const char *name;
    size_t nlen;
    if (tp_msg_scanf(msg, "[l S]", &sq, &name, &nlen) != 0 ||
        sq != s->n * s->n) {
        fprintf(stderr, "wrong answer for %lld\n", (long long)s->n);
        c->failed = true;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    count_node(c, name, nlen);
    c->answered++;
    if (c->next <= c->total) {
        s->n = c->next++;
        return call_slot(ctx, s);
    }
    s->n = 0;
    if (c->answered == c->total)
        return tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[3], "worker") != 0 &&
                     (strcmp(argv[3], "client") != 0 || argc < 5))) {
        fprintf(stderr,
                "usage: %s URL NODE worker\n"
                "       %s URL NODE client CALLS\n",
                argv[0], argv[0]);
        return 2;
    }
    tp_config cfg;
    tp_config_init(&cfg);
    tp_runtime *rt;
    int rc = tp_runtime_new(&cfg, &rt);
    if (rc) {
        fprintf(stderr, "runtime: %s\n", tp_strerror(rc));
        return 1;
    }
    tp_node_opts no;
    tp_node_opts_init(&no);
    no.urls = argv[1];
    no.name = argv[2];
    if ((rc = tp_runtime_set_node(rt, &no)) != 0 ||
        (rc = tp_runtime_handle_signals(rt)) != 0) {
        fprintf(stderr, "node: %s\n", tp_strerror(rc));
        tp_runtime_free(rt);
        return 1;
    }
    static client c;
    if (strcmp(argv[3], "worker") == 0) {
        rc = tp_run(rt, worker_root, NULL, NULL);
    } else {
        c.total = atoll(argv[4]);
        c.next = 1;
        rc = c.total > 0 ? tp_run(rt, client_root, &c, NULL) : TP_EINVAL;
    }
    tp_runtime_free(rt);
    if (rc) {
        fprintf(stderr, "%s: %s\n", argv[2], tp_strerror(rc));
        return 1;
    }
    if (strcmp(argv[3], "client") == 0) {
        for (int i = 0; i < c.nnodes; i++)
            printf("%s answered %d\n", c.nodes[i].name, c.nodes[i].answers);
        printf("%lld of %lld calls answered (%d retried)\n",
               (long long)c.answered, (long long)c.total, c.retries);
        return c.failed || c.answered != c.total;
    }
    return 0;
}
