/*
 * Isolated workers: a service that parses untrusted input in worker
 * processes (docs/guide/10-isolation.md).
 *
 * The parser below has a bug: a record with an unknown field marker calls
 * through a NULL handler and segfaults. Run in-process, the first poison
 * input would take the whole service down. Here it runs in a pool of four
 * isolated workers: the poisoned request gets an error, every other
 * request is answered, and the supervisor restarts the worker that died.
 *
 * Output: one line per failed request, then a summary; exit status 0 when
 * exactly the poisoned requests failed. The pool's stderr line names the
 * signal that killed the worker.
 */
#include <stdio.h>
#include <string.h>
#include <troupe.h>
#include <troupe/isolate.h>

enum { TAG_PARSE = 1 };

#define WORKERS 4
#define REQUESTS 40

/* ------------------------------------------------ the (buggy) parser */

typedef int (*field_fn)(const char *v, size_t n);
static int num(const char *v, size_t n)
{
    return (int)n > 0 && v[0] >= '0' && v[0] <= '9';
}
static int text(const char *v, size_t n)
{
    (void)v;
    return n > 0;
}

/* '#' numbers, '$' texts. Nobody added an entry for '!'. */
static field_fn handlers[256] = {['#'] = num, ['$'] = text};

/* "#12;$abc;..." -> the number of valid fields. */
static int parse(const char *s, size_t n)
{
    int good = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] != ';')
            j++;
        if (j > i) {
            field_fn f = handlers[(unsigned char)s[i]];
            if (s[i] != '#' && s[i] != '$' && s[i] != '!')
                return -1; /* the checks the author did think of */
            good += f(s + i + 1, j - i - 1); /* '!': f is NULL */
        }
        i = j + 1;
    }
    return good;
}

/* The isolated behavior: runs in a worker process. */
static int parser(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    if (tp_msg_tag(msg) != TAG_PARSE)
        return TP_HANDLED;
    const char *s;
    size_t n;
    if (tp_msg_scanf(msg, "S", &s, &n) != 0)
        return tp_reply_int(ctx, msg, -1);
    return tp_reply_int(ctx, msg, parse(s, n));
}

/* ------------------------------------------------------- the service */

typedef struct client {
    tp_pid pool;
    int sent, in_flight, answered, failed, poisoned;
    tp_ref refs[REQUESTS];
    char inputs[REQUESTS][32];
} client;

static int call_parse(tp_ctx *ctx, client *c, int i)
{
    void *buf;
    size_t n;
    int rc = tp_packf(&buf, &n, "s", c->inputs[i]);
    if (rc)
        return rc;
    rc = tp_call(ctx, c->pool, TAG_PARSE, buf, n, 10000, &c->refs[i]);
    tp_free(buf);
    return rc;
}

static void send_more(tp_ctx *ctx, client *c)
{
    /* Fewer requests in flight than workers: the router always finds an
     * idle one, even while one restarts, so a crash costs only the
     * request that caused it. */
    while (c->in_flight < WORKERS - 1 && c->sent < REQUESTS) {
        int i = c->sent++;
        if (i % 13 == 5) {
            snprintf(c->inputs[i], sizeof c->inputs[i], "#%d;!boom", i);
            c->poisoned++;
        } else {
            snprintf(c->inputs[i], sizeof c->inputs[i], "#%d;$item;#x", i);
        }
        if (call_parse(ctx, c, i) != 0)
            c->failed++;
        else
            c->in_flight++;
    }
}

static int client_actor(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    client *c = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_isolate_pool_opts po = {.worker = {.name = "parser",
                                              .watchdog_ms = 2000},
                                   .size = WORKERS};
#ifndef __SANITIZE_ADDRESS__ /* ASan reserves terabytes of address space */
        po.worker.mem_limit = (size_t)1 << 30; /* 1 GiB per worker */
#endif
        int rc = tp_isolate_pool_start(ctx, &po, &c->pool);
        if (rc)
            return rc;
        send_more(ctx, c);
        return TP_HANDLED;
    }
    case TP_TAG_REPLY: {
        int i = 0;
        while (i < c->sent && c->refs[i] != tp_msg_ref(msg))
            i++;
        c->in_flight--;
        int64_t fields = 0;
        if (tp_msg_status(msg) == 0 && tp_msg_int(msg, &fields) == 0) {
            c->answered++;
        } else {
            c->failed++;
            printf("request %d (\"%s\") failed: %s\n", i, c->inputs[i],
                   tp_strerror(tp_msg_status(msg)));
        }
        if (c->answered + c->failed == REQUESTS)
            tp_exit_signal(ctx, c->pool, TP_REASON_SHUTDOWN);
        else
            send_more(ctx, c);
        return TP_HANDLED;
    }
    case TP_TAG_EXIT: /* the pool stopped */
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

int main(int argc, char **argv)
{
    /* Workers are this program started again: register the isolated
     * behavior, then let tp_isolate_main take over if this is one. */
    tp_isolate_register("parser", parser, NULL);
    tp_isolate_main(argc, argv);

    tp_runtime *rt;
    if (tp_runtime_new(NULL, &rt) != 0)
        return 1;
    client c = {0};
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    int status = tp_run(rt, client_actor, &c, &o);
    tp_runtime_free(rt);
    tp_isolate_stats st;
    tp_isolate_stats_get(&st);
    printf("summary: %d requests, %d answered, %d failed (%d poisoned); "
           "%llu worker processes started, %llu reaped\n",
           REQUESTS, c.answered, c.failed, c.poisoned,
           (unsigned long long)st.spawned, (unsigned long long)st.reaped);
    return status == 0 && c.failed == c.poisoned &&
                   c.answered == REQUESTS - c.poisoned &&
                   st.spawned == st.reaped
               ? 0
               : 1;
}
