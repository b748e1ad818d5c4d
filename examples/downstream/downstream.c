/*
 * A program outside troupe's tree, built against an installed troupe
 * (see README.md here). Two actors: the root calls a doubler with 21,
 * prints the reply, tells the doubler to stop and waits for its DOWN.
 * Prints "21 doubled is 42" and exits 0 when all went as it should.
 */
#include <stdio.h>
#include <string.h>

#include <troupe.h>

#define STR_(x) #x
#define STR(x) STR_(x)
#define HEADER_VERSION                                                         \
    STR(TROUPE_VERSION_MAJOR)                                                  \
    "." STR(TROUPE_VERSION_MINOR) "." STR(TROUPE_VERSION_PATCH)

enum { TAG_DOUBLE = 1, TAG_STOP = 2 };

static int doubler(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    int64_t v;

    (void)state;
    switch (tp_msg_tag(msg)) {
    case TAG_DOUBLE:
        if (tp_msg_int(msg, &v) < 0)
            return TP_EPROTO;
        return tp_reply_int(ctx, msg, 2 * v);
    case TAG_STOP: return tp_exit(ctx, TP_REASON_NORMAL);
    default: return TP_HANDLED;
    }
}

typedef struct root_state {
    tp_pid doubler;
    tp_ref call;
    tp_ref mon;
    int64_t result;
} root_state;

static int root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    root_state *st = state;
    int rc;

    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        rc = tp_spawn(ctx, doubler, NULL, NULL, &st->doubler);
        if (rc == 0)
            rc = tp_monitor(ctx, st->doubler, &st->mon);
        if (rc == 0)
            rc = tp_call_int(ctx, st->doubler, TAG_DOUBLE, 21, 5000, &st->call);
        return rc;
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) != st->call)
            return TP_HANDLED;
        rc = tp_msg_status(msg);
        if (rc == 0)
            rc = tp_msg_int(msg, &st->result);
        if (rc < 0)
            return rc;
        printf("21 doubled is %lld\n", (long long)st->result);
        return tp_send(ctx, st->doubler, TAG_STOP, NULL, 0);
    case TP_TAG_DOWN: {
        tp_reason why;
        if (tp_msg_ref(msg) != st->mon || tp_msg_reason(msg, &why) < 0)
            return TP_HANDLED;
        printf("doubler ended %s\n",
               why.kind == TP_EXIT_NORMAL ? "normally" : "abnormally");
        return tp_exit(ctx, why.kind == TP_EXIT_NORMAL
                                ? TP_REASON_NORMAL
                                : TP_REASON_ERROR(TP_ESTATE, "doubler died"));
    }
    default: return TP_HANDLED;
    }
}

int main(void)
{
    tp_runtime *rt;
    root_state st = {0};
    tp_stats stats;

    printf("troupe %s\n", HEADER_VERSION);
#ifdef EXPECT_VERSION
    /* The headers found must be the package's: same version. */
    if (strcmp(HEADER_VERSION, EXPECT_VERSION) != 0) {
        fprintf(stderr, "headers are %s, package is %s\n", HEADER_VERSION,
                EXPECT_VERSION);
        return 1;
    }
#endif
    int rc = tp_runtime_new(NULL, &rt);
    if (rc < 0) {
        fprintf(stderr, "tp_runtime_new: %s\n", tp_strerror(rc));
        return 1;
    }
    int status = tp_run(rt, root, &st, NULL);
    tp_runtime_stats(rt, &stats);
    tp_runtime_free(rt);
    if (status != 0) {
        fprintf(stderr, "tp_run: %d (%s)\n", status,
                status < 0 ? tp_strerror(status) : "root ended abnormally");
        return 1;
    }
    printf("actors spawned %llu, alive %llu\n",
           (unsigned long long)stats.actors_spawned,
           (unsigned long long)stats.actors_alive);
    return st.result == 42 && stats.actors_spawned == 2 ? 0 : 1;
}
