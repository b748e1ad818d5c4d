/*
 * The exit-signal matrix of test/test_signals.c across two nodes, with the
 * same expectations: Y (trapping or not) lives on node A, its peer X on
 * node B (spawned there with tp_spawn_on), linked to Y or not; X exits
 * normally or with an error, Y is killed, X is killed (Y gets `killed`
 * over the link), or X sends Y an exit signal with each reason. A
 * controller on A monitors both: each DOWN comes once, with the reason
 * (code included) carried across. Then, across nodes: one DOWN per
 * monitor and none after tp_demonitor; monitoring and linking an actor
 * that has already ended give noproc (a DOWN; an exit signal that kills a
 * non-trapping linker and reaches a trapping one as EXIT noproc); after
 * tp_unlink an error exit is not propagated.
 *
 * A real nats-server (node_test.h); node B is this program run with
 * --peer. Every step waits for an event: B says hello until A answers.
 */
#include "node/node_test.h"

#define CLUSTER "m"
#define HB_MS 300

enum {
    T_HELLO = 1, /* B's root -> A's root: [p] its root, until T_ACK */
    T_ACK,
    T_BYE, /* A -> B's root: end */
    T_READY,
    T_STOP_NORMAL,
    T_STOP_ERROR,
    T_SIGNAL,
    T_SIGNALED,
    T_PROBE,
    T_FIN,
    T_RESEND,
};

enum cause {
    C_NORMAL,    /* X exits normal */
    C_ERROR,     /* X exits with an error */
    C_KILL,      /* Y itself is killed (untrappable) */
    C_KILL_LINK, /* X is killed: Y gets `killed` over the link */
    C_SIG_NORMAL,
    C_SIG_ERROR,
    C_SIG_KILL, /* X calls exit/2 on Y (unlinked) */
    C_N
};
static const char *const cause_name[] = {"normal",        "error",
                                         "kill",          "kill via link",
                                         "exit/2 normal", "exit/2 error",
                                         "exit/2 kill"};

/* Erlang's outcome for Y by cause, as test_signals.c has it: when Y dies
 * (and with which reason), when it gets an EXIT message instead, and how
 * X ends. */
enum {
    NEVER,
    ALWAYS,
    LINKED_NOT_TRAPPING,
    LINKED_TRAPPING,
    TRAPPING,
    NOT_TRAPPING
};
static const struct {
    int dies, exit_msg;
    tp_exit_kind kind; /* Y's reason when it dies or gets EXIT */
    int code;
    tp_exit_kind x_kind, x_kind_linked;
} expect[C_N] = {
    [C_NORMAL] = {NEVER, LINKED_TRAPPING, TP_EXIT_NORMAL, 0, TP_EXIT_NORMAL,
                  TP_EXIT_NORMAL},
    [C_ERROR] = {LINKED_NOT_TRAPPING, LINKED_TRAPPING, TP_EXIT_ERROR, 7,
                 TP_EXIT_ERROR, TP_EXIT_ERROR},
    [C_KILL] = {ALWAYS, NEVER, TP_EXIT_KILLED, 0, TP_EXIT_NORMAL,
                TP_EXIT_KILLED},
    [C_KILL_LINK] = {LINKED_NOT_TRAPPING, LINKED_TRAPPING, TP_EXIT_KILLED, 0,
                     TP_EXIT_KILLED, TP_EXIT_KILLED},
    [C_SIG_NORMAL] = {NEVER, TRAPPING, TP_EXIT_NORMAL, 0, TP_EXIT_NORMAL,
                      TP_EXIT_NORMAL},
    [C_SIG_ERROR] = {NOT_TRAPPING, TRAPPING, TP_EXIT_ERROR, 9, TP_EXIT_NORMAL,
                     TP_EXIT_NORMAL},
    [C_SIG_KILL] = {ALWAYS, NEVER, TP_EXIT_KILLED, 0, TP_EXIT_NORMAL,
                    TP_EXIT_NORMAL},
};

static bool holds(int when, int linked, int trap)
{
    switch (when) {
    case ALWAYS: return true;
    case LINKED_NOT_TRAPPING: return linked && !trap;
    case LINKED_TRAPPING: return linked && trap;
    case TRAPPING: return trap;
    case NOT_TRAPPING: return !trap;
    default: return false;
    }
}

/* ------------------------------------------------------ X, on node B */

/* Spawned by A with args [ctrl y linked cause] (tp_packf "[ppii]"). */
typedef struct xst {
    size_t len;
    tp_pid ctrl, y;
    int64_t linked, cause;
    uint8_t args[];
} xst;

static void *x_make(const void *args, size_t len)
{
    xst *x = tp_calloc(sizeof *x + len);
    if (x) {
        x->len = len;
        memcpy(x->args, args, len);
    }
    return x;
}

static int x_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    xst *x = state;
    static const tp_reason sig[] = {TP_REASON_NORMAL,
                                    TP_REASON_ERROR(9, "exit/2"),
                                    TP_REASON_KILL};
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_unpackf(x->args, x->len, "[ppii]", &x->ctrl, &x->y,
                             &x->linked, &x->cause),
                  0);
        if (x->linked)
            EXPECT_EQ(tp_link(ctx, x->y), 0);
        EXPECT_EQ(tp_send(ctx, x->ctrl, T_READY, NULL, 0), 0);
        break;
    case T_STOP_NORMAL: return tp_exit(ctx, TP_REASON_NORMAL);
    case T_STOP_ERROR: return tp_exit(ctx, TP_REASON_ERROR(7, "peer failed"));
    case T_SIGNAL:
        EXPECT_EQ(tp_exit_signal(ctx, x->y, sig[x->cause - C_SIG_NORMAL]), 0);
        EXPECT_EQ(tp_send(ctx, x->ctrl, T_SIGNALED, NULL, 0), 0);
        break;
    }
    return TP_HANDLED;
}

/* ----------------------------------------------------- B's root */

static tp_pid peer_parent; /* A's root, as a pid of B */

typedef struct peer {
    bool acked;
} peer;

/* Says hello to A until A acknowledges (NATS is at most once: a lone
 * message may be lost), then serves until A says bye or goes down. */
static int peer_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    peer *p = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: tp_monitor_node(ctx, "A", true); break;
    case TP_TAG_NODEUP:
    case T_RESEND:
        if (!p->acked) {
            tp_sendf(ctx, peer_parent, T_HELLO, "[p]", tp_self(ctx));
            tp_send_after(ctx, 200, T_RESEND, NULL, 0, NULL);
        }
        break;
    case T_ACK: p->acked = true; break;
    case T_BYE:
    case TP_TAG_NODEDOWN: return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int peer_main(char **argv)
{
    alarm(TPT_RUN_TIMEOUT_S + 60); /* never outlive a failed test */
    tp_runtime *rt;
    if (tp_runtime_new(NULL, &rt) != 0)
        return 2;
    tp_node_opts o;
    nt_peer_opts(&o, argv);
    o.cluster = CLUSTER;
    o.heartbeat_ms = HB_MS;
    if (tp_runtime_set_node(rt, &o) != 0 ||
        nt_peer_parent(rt, argv, &peer_parent) != 0)
        return 2;
    static peer p;
    int rc = tp_run(rt, peer_root, &p, NULL);
    tp_runtime_free(rt);
    nt_nats_close();
    return rc < 0 ? 10 - rc : rc;
}

/* ------------------------------------------------------ A: the matrix */

typedef struct scen {
    int cause, linked, trap;
    tp_pid x, y;
    tp_ref xmon, ymon;
    int x_downs, y_downs, y_exit_msgs, y_probed;
    tp_reason x_why, y_why, y_exit;
    tp_pid y_exit_from;
} scen;

typedef struct matrix {
    pid_t child;
    tp_pid peer_root, ctrl;
    scen s[C_N * 4];
    int n, cur;
} matrix;

static int victim(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    scen *s = state;
    if (tp_msg_tag(msg) == TP_TAG_EXIT) {
        s->y_exit_msgs++;
        s->y_exit_from = tp_msg_from(msg);
        EXPECT_EQ(tp_msg_reason(msg, &s->y_exit), 0);
        s->y_exit.text = NULL;
    } else if (tp_msg_tag(msg) == T_PROBE) { /* still alive: end it */
        s->y_probed++;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* X on B (blocks for the spawn's round trip). */
static tp_pid spawn_x(tp_ctx *ctx, tp_pid y, int linked, int cause)
{
    void *args;
    size_t len;
    tp_pid x = TP_PID_NONE;
    EXPECT_EQ(tp_packf(&args, &len, "[ppii]", tp_self(ctx), y, (int64_t)linked,
                       (int64_t)cause),
              0);
    EXPECT_EQ(tp_spawn_on(ctx, "B", "x", args, len, 0, &x), 0);
    EXPECT(tp_pid_is_remote(x));
    tp_free(args);
    return x;
}

static void scen_start(tp_ctx *ctx, scen *s)
{
    tp_spawn_opts yo = {.flags = s->trap ? TP_SPAWN_TRAP_EXIT : 0};
    EXPECT_EQ(tp_spawn(ctx, victim, s, &yo, &s->y), 0);
    EXPECT_EQ(tp_monitor(ctx, s->y, &s->ymon), 0);
    s->x = spawn_x(ctx, s->y, s->linked, s->cause);
    EXPECT_EQ(tp_monitor(ctx, s->x, &s->xmon), 0);
}

/* The controller, as test_signals.c's: apply the cause once X is ready,
 * then end whichever of X and Y still lives (Y with a PROBE, which records
 * that it survived; X with STOP). */
static int matrix_step(tp_ctx *ctx, matrix *m, const tp_msg *msg)
{
    scen *s = &m->s[m->cur];
    tp_reason why;
    switch (tp_msg_tag(msg)) {
    case T_READY:
        switch (s->cause) {
        case C_NORMAL: tp_send(ctx, s->x, T_STOP_NORMAL, NULL, 0); break;
        case C_ERROR: tp_send(ctx, s->x, T_STOP_ERROR, NULL, 0); break;
        case C_KILL: EXPECT_EQ(tp_kill(ctx, s->y), 0); break;
        case C_KILL_LINK: EXPECT_EQ(tp_kill(ctx, s->x), 0); break;
        default: tp_send(ctx, s->x, T_SIGNAL, NULL, 0); break;
        }
        break;
    case T_SIGNALED: tp_send(ctx, s->y, T_PROBE, NULL, 0); break;
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_reason(msg, &why), 0);
        why.text = NULL;
        if (tp_msg_ref(msg) == s->xmon)
            s->x_downs++, s->x_why = why;
        else if (tp_msg_ref(msg) == s->ymon)
            s->y_downs++, s->y_why = why;
        if (!s->y_downs)
            tp_send(ctx, s->y, T_PROBE, NULL, 0);
        else if (!s->x_downs)
            tp_send(ctx, s->x, T_STOP_NORMAL, NULL, 0);
        else if (++m->cur < m->n) /* both down: the next scenario */
            scen_start(ctx, &m->s[m->cur]);
        else
            return 1;
        break;
    }
    return 0;
}

/* Tell B we have its hello (once per hello: it resends until then). */
static bool hello(tp_ctx *ctx, tp_pid *peer_root, const tp_msg *msg)
{
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    tp_pid root;
    EXPECT_EQ(tp_unpackf(data, len, "[p]", &root), 0);
    EXPECT_EQ(tp_send(ctx, root, T_ACK, NULL, 0), 0);
    bool first = *peer_root == TP_PID_NONE;
    *peer_root = root;
    return first;
}

static int matrix_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    matrix *m = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        m->child = nt_start_peer("B", tp_self(ctx), NULL);
        EXPECT(m->child > 0);
        return TP_HANDLED;
    case T_HELLO:
        if (hello(ctx, &m->peer_root, msg))
            scen_start(ctx, &m->s[0]);
        return TP_HANDLED;
    }
    if (matrix_step(ctx, m, msg)) {
        EXPECT_EQ(tp_send(ctx, m->peer_root, T_BYE, NULL, 0), 0);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* A runtime that is node A, run with root (trapping exits). */
static int run_a(tp_behavior root, void *state)
{
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    tp_node_opts o;
    tp_node_opts_init(&o);
    o.urls = nt_nats.url;
    o.name = "A";
    o.cluster = CLUSTER;
    o.heartbeat_ms = HB_MS;
    assert_int_equal(tp_runtime_set_node(rt, &o), 0);
    tp_spawn_opts so = {.flags = TP_SPAWN_TRAP_EXIT};
    tpt_watchdog(1);
    int rc = tp_run(rt, root, state, &so);
    tpt_watchdog(0);
    tp_runtime_free(rt);
    return rc;
}

#define SCEN_ASSERT(cond)                                                      \
    do {                                                                       \
        if (!(cond))                                                           \
            fail_msg("%s, %s, %s: %s (y_why %d/%d, x_why %d, exit msgs %d "    \
                     "kind %d, probed %d)",                                    \
                     cause_name[s->cause], s->linked ? "linked" : "unlinked",  \
                     s->trap ? "trapping" : "not trapping", #cond,             \
                     s->y_why.kind, s->y_why.code, s->x_why.kind,              \
                     s->y_exit_msgs, s->y_exit.kind, s->y_probed);             \
    } while (0)

static void check_scenario(const scen *s)
{
    int c = s->cause;
    bool dies = holds(expect[c].dies, s->linked, s->trap);
    bool exit_msg = holds(expect[c].exit_msg, s->linked, s->trap);
    tp_exit_kind kind = expect[c].kind;
    SCEN_ASSERT(s->x_downs == 1 && s->y_downs == 1);
    SCEN_ASSERT(s->x_why.kind ==
                (s->linked ? expect[c].x_kind_linked : expect[c].x_kind));
    if (s->x_why.kind == TP_EXIT_ERROR)
        SCEN_ASSERT(s->x_why.code == 7);
    if (dies) {
        SCEN_ASSERT(s->y_why.kind == kind);
        SCEN_ASSERT(kind != TP_EXIT_ERROR || s->y_why.code == expect[c].code);
        SCEN_ASSERT(s->y_probed == 0);
    } else {
        SCEN_ASSERT(s->y_probed == 1);
        SCEN_ASSERT(s->y_why.kind == TP_EXIT_NORMAL);
    }
    SCEN_ASSERT(s->y_exit_msgs == (int)exit_msg);
    if (exit_msg) {
        SCEN_ASSERT(s->y_exit.kind == kind);
        SCEN_ASSERT(kind != TP_EXIT_ERROR || s->y_exit.code == expect[c].code);
        SCEN_ASSERT(s->y_exit_from == s->x);
    }
}

/* {normal, error, kill, kill via link} x {linked, not} x {trapping, not},
 * and exit/2 {normal, error, kill} x {trapping, not}, X on the other node:
 * what test_signals.c expects of two local actors. */
static void test_exit_matrix(void **unused)
{
    (void)unused;
    tpt_reset();
    static matrix m;
    memset(&m, 0, sizeof m);
    for (int c = 0; c < C_N; c++)
        for (int linked = 0; linked < (c < C_SIG_NORMAL ? 2 : 1); linked++)
            for (int trap = 0; trap < 2; trap++)
                m.s[m.n++] = (scen){.cause = c, .linked = linked, .trap = trap};
    assert_int_equal(run_a(matrix_root, &m), 0);
    nu_wait(m.child);
    TPT_CHECK();
    assert_int_equal(m.cur, m.n);
    for (int i = 0; i < m.n; i++)
        check_scenario(&m.s[i]);
}

/* ------------------------------ monitors, dead pids, unlink across nodes */

enum { P_MONITORS, P_DEAD_MONITOR, P_DEAD_LINK, P_UNLINK, P_DONE };

typedef struct rel {
    tp_pid peer_root, x, linker, dead;
    pid_t child;
    int phase, linker_trap;
    tp_ref r1, r2, r3, lmon;
    int d1, d2, d3, other_downs, unlink_exits;
    tp_reason w2, w3, unlink_down;
    /* links to an ended remote actor, by [trapping] */
    int link_rc[2], exits[2];
    tp_reason exit_why[2], down_why[2];
    tp_pid exit_from[2];
} rel;

static int dead_linker(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    rel *r = state;
    int t = r->linker_trap;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_trap_exit(ctx, t), 0);
        r->link_rc[t] = tp_link(ctx, r->x);
    } else if (tp_msg_tag(msg) == TP_TAG_EXIT) {
        r->exits[t]++;
        r->exit_from[t] = tp_msg_from(msg);
        EXPECT_EQ(tp_msg_reason(msg, &r->exit_why[t]), 0);
        r->exit_why[t].text = NULL;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* A local actor (trapping or not) links to the ended X. */
static void start_linker(tp_ctx *ctx, rel *r, int trap)
{
    r->phase = P_DEAD_LINK;
    r->linker_trap = trap;
    EXPECT_EQ(tp_spawn(ctx, dead_linker, r, NULL, &r->linker), 0);
    EXPECT_EQ(tp_monitor(ctx, r->linker, &r->lmon), 0);
}

/* Another X links to us, we unlink, it fails: no EXIT may come. */
static void start_unlink(tp_ctx *ctx, rel *r)
{
    r->phase = P_UNLINK;
    r->x = spawn_x(ctx, tp_self(ctx), 0, C_ERROR);
    EXPECT_EQ(tp_link(ctx, r->x), 0);
    EXPECT_EQ(tp_unlink(ctx, r->x), 0);
    EXPECT_EQ(tp_monitor(ctx, r->x, &r->r1), 0);
}

static void rel_down(tp_ctx *ctx, rel *r, const tp_msg *msg)
{
    tp_reason why;
    tp_ref ref = tp_msg_ref(msg);
    EXPECT_EQ(tp_msg_reason(msg, &why), 0);
    why.text = NULL;
    if (r->phase == P_MONITORS && ref == r->r1) {
        r->d1++;
    } else if (r->phase == P_MONITORS && ref == r->r2) {
        /* (r1's DOWN would have come first, from the same X) */
        r->d2++, r->w2 = why;
        r->phase = P_DEAD_MONITOR; /* X ended: monitor it now */
        EXPECT_EQ(tp_monitor(ctx, r->x, &r->r3), 0);
    } else if (r->phase == P_DEAD_MONITOR && ref == r->r3) {
        r->d3++, r->w3 = why;
        r->dead = r->x;
        start_linker(ctx, r, 0);
    } else if (r->phase == P_DEAD_LINK && ref == r->lmon) {
        r->down_why[r->linker_trap] = why;
        if (!r->linker_trap)
            start_linker(ctx, r, 1);
        else
            start_unlink(ctx, r);
    } else if (r->phase == P_UNLINK && ref == r->r1) {
        r->unlink_down = why; /* an EXIT would have come before it */
        tp_send(ctx, tp_self(ctx), T_FIN, NULL, 0);
    } else {
        r->other_downs++;
    }
}

static int rel_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    rel *r = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        r->child = nt_start_peer("B", tp_self(ctx), NULL);
        EXPECT(r->child > 0);
        break;
    case T_HELLO: /* two monitors of X, one taken back, then X fails */
        if (!hello(ctx, &r->peer_root, msg))
            break;
        r->x = spawn_x(ctx, tp_self(ctx), 0, C_ERROR);
        EXPECT_EQ(tp_monitor(ctx, r->x, &r->r1), 0);
        EXPECT_EQ(tp_monitor(ctx, r->x, &r->r2), 0);
        EXPECT(r->r1 && r->r2 && r->r1 != r->r2);
        EXPECT_EQ(tp_demonitor(ctx, r->r1), 0);
        EXPECT_EQ(tp_demonitor(ctx, r->r1), TP_ENOENT); /* twice */
        break;
    case T_READY: /* X has started (after our signals to it, in order) */
        tp_send(ctx, r->x, T_STOP_ERROR, NULL, 0);
        break;
    case TP_TAG_EXIT: /* only the unlinked X could send one: it must not */
        r->unlink_exits++;
        break;
    case TP_TAG_DOWN: rel_down(ctx, r, msg); break;
    case T_FIN:
        EXPECT_EQ(tp_send(ctx, r->peer_root, T_BYE, NULL, 0), 0);
        r->phase = P_DONE;
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static void test_monitors_links_across(void **unused)
{
    (void)unused;
    tpt_reset();
    static rel r;
    memset(&r, 0, sizeof r);
    assert_int_equal(run_a(rel_root, &r), 0);
    nu_wait(r.child);
    TPT_CHECK();
    assert_int_equal(r.phase, P_DONE);
    /* one DOWN per monitor, none after demonitor, the reason carried */
    assert_int_equal(r.d1, 0);
    assert_int_equal(r.d2, 1);
    assert_int_equal(r.w2.kind, TP_EXIT_ERROR);
    assert_int_equal(r.w2.code, 7);
    /* a monitor of an ended remote actor: DOWN noproc */
    assert_int_equal(r.d3, 1);
    assert_int_equal(r.w3.kind, TP_EXIT_NOPROC);
    /* a link to it: noproc, fatal unless trapping */
    for (int t = 0; t < 2; t++)
        assert_int_equal(r.link_rc[t], 0);
    assert_int_equal(r.exits[0], 0);
    assert_int_equal(r.down_why[0].kind, TP_EXIT_NOPROC);
    assert_int_equal(r.exits[1], 1);
    assert_int_equal(r.exit_why[1].kind, TP_EXIT_NOPROC);
    assert_true(r.exit_from[1] == r.dead);
    assert_int_equal(r.down_why[1].kind, TP_EXIT_NORMAL);
    /* unlinked: the error exit reaches the monitor, not us */
    assert_int_equal(r.unlink_exits, 0);
    assert_int_equal(r.unlink_down.kind, TP_EXIT_ERROR);
    assert_int_equal(r.other_downs, 0);
}

static int setup(void **state)
{
    (void)state;
    return nt_nats_up(false, NULL);
}

static int teardown(void **state)
{
    (void)state;
    nt_nats_down();
    return 0;
}

int main(int argc, char **argv)
{
    tp_node_register("x", x_behavior, x_make, tp_free); /* in A and B */
    if (argc == 5 && strcmp(argv[1], "--peer") == 0)
        return peer_main(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_matrix),
        cmocka_unit_test(test_monitors_links_across),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
