/*
 * Exit signals, links and monitors with Erlang's semantics: the exit-signal
 * matrix {trapping, not} x {normal, error, kill, kill via link, exit/2}
 * x {linked, unlinked}; monitors (one DOWN each, noproc for a dead pid, none
 * after demonitor); linking a dead pid; unlink and TP_SPAWN_LINK;
 * exit_signal(self, normal) and tp_exit(kill), where troupe differs from
 * Erlang on purpose; SIGTERM (forked): a refused shutdown can be retried,
 * a signal during a shutdown in progress forces.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "tp_test.h"

enum {
    TAG_READY = 1,
    TAG_STOP_NORMAL,
    TAG_STOP_ERROR,
    TAG_SIGNAL,
    TAG_SIGNALED,
    TAG_PROBE,
    TAG_POLL,
    TAG_FIN
};

/* ------------------------------------------------------- the matrix */

enum cause {
    C_NORMAL,    /* peer X exits normal */
    C_ERROR,     /* peer X exits with an error */
    C_KILL,      /* Y itself is killed (untrappable) */
    C_KILL_LINK, /* peer X is killed: Y gets `killed` over the link */
    C_SIG_NORMAL,
    C_SIG_ERROR,
    C_SIG_KILL /* X calls exit/2 on Y (unlinked) */
};
static const char *cause_name[] = {"normal",        "error",
                                   "kill",          "kill via link",
                                   "exit/2 normal", "exit/2 error",
                                   "exit/2 kill"};

typedef struct scen {
    int cause, linked, trap;
    tp_pid ctrl, x, y;
    tp_ref xmon, ymon;
    int x_downs, y_downs, y_exit_msgs, y_probed;
    tp_reason x_why, y_why, y_exit;
    tp_pid y_exit_from;
} scen;

static int victim(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    scen *s = state;
    if (tp_msg_tag(msg) == TP_TAG_EXIT) {
        s->y_exit_msgs++;
        s->y_exit_from = tp_msg_from(msg);
        EXPECT_EQ(tp_msg_reason(msg, &s->y_exit), 0);
    } else if (tp_msg_tag(msg) == TAG_PROBE) { /* still alive: end it */
        s->y_probed++;
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int peer(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    scen *s = state;
    static const tp_reason sig[] = {TP_REASON_NORMAL,
                                    TP_REASON_ERROR(9, "exit/2"),
                                    TP_REASON_KILL};
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        if (s->linked)
            EXPECT_EQ(tp_link(ctx, s->y), 0);
        EXPECT_EQ(tp_send(ctx, s->ctrl, TAG_READY, NULL, 0), 0);
        break;
    case TAG_STOP_NORMAL: tp_exit(ctx, TP_REASON_NORMAL); break;
    case TAG_STOP_ERROR: tp_exit(ctx, TP_REASON_ERROR(7, "peer failed")); break;
    case TAG_SIGNAL:
        EXPECT_EQ(tp_exit_signal(ctx, s->y, sig[s->cause - C_SIG_NORMAL]), 0);
        EXPECT_EQ(tp_send(ctx, s->ctrl, TAG_SIGNALED, NULL, 0), 0);
        break;
    }
    return TP_HANDLED;
}

/* The controller applies the cause, then ends whichever of X and Y is
 * still alive: Y with a PROBE (which records that Y survived), X with STOP.
 * Causality orders a PROBE after the signal it follows. */
static int controller(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    scen *s = state;
    tp_spawn_opts yo = {.flags = s->trap ? TP_SPAWN_TRAP_EXIT : 0};
    tp_reason why;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        s->ctrl = tp_self(ctx);
        EXPECT_EQ(tp_spawn(ctx, victim, s, &yo, &s->y), 0);
        EXPECT_EQ(tp_monitor(ctx, s->y, &s->ymon), 0);
        EXPECT_EQ(tp_spawn(ctx, peer, s, NULL, &s->x), 0);
        EXPECT_EQ(tp_monitor(ctx, s->x, &s->xmon), 0);
        return TP_HANDLED;
    case TAG_READY:
        switch (s->cause) {
        case C_NORMAL: tp_send(ctx, s->x, TAG_STOP_NORMAL, NULL, 0); break;
        case C_ERROR: tp_send(ctx, s->x, TAG_STOP_ERROR, NULL, 0); break;
        case C_KILL: EXPECT_EQ(tp_kill(ctx, s->y), 0); break;
        case C_KILL_LINK: EXPECT_EQ(tp_kill(ctx, s->x), 0); break;
        default: tp_send(ctx, s->x, TAG_SIGNAL, NULL, 0); break;
        }
        return TP_HANDLED;
    case TAG_SIGNALED:
        tp_send(ctx, s->y, TAG_PROBE, NULL, 0);
        return TP_HANDLED;
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_reason(msg, &why), 0);
        why.text = NULL;
        if (tp_msg_ref(msg) == s->xmon)
            s->x_downs++, s->x_why = why;
        else if (tp_msg_ref(msg) == s->ymon)
            s->y_downs++, s->y_why = why;
        if (s->x_downs && s->y_downs)
            tp_exit(ctx, TP_REASON_NORMAL);
        else if (!s->y_downs)
            tp_send(ctx, s->y, TAG_PROBE, NULL, 0);
        else
            tp_send(ctx, s->x, TAG_STOP_NORMAL, NULL, 0);
        return TP_HANDLED;
    }
    return TP_HANDLED;
}

#define SCEN_ASSERT(cond)                                                      \
    do {                                                                       \
        if (!(cond))                                                           \
            fail_msg("%s, %s, %s: %s (y_why %d/%d, x_why %d, exit msgs %d "    \
                     "kind %d, probed %d)",                                    \
                     cause_name[s.cause], s.linked ? "linked" : "unlinked",    \
                     s.trap ? "trapping" : "not trapping", #cond,              \
                     s.y_why.kind, s.y_why.code, s.x_why.kind, s.y_exit_msgs,  \
                     s.y_exit.kind, s.y_probed);                               \
    } while (0)

static void run_scenario(int cause, int linked, int trap)
{
    static scen s;
    memset(&s, 0, sizeof s);
    s.cause = cause, s.linked = linked, s.trap = trap;
    tpt_reset();
    assert_int_equal(tpt_run(NULL, controller, &s, NULL, NULL), 0);
    TPT_CHECK();
    SCEN_ASSERT(s.x_downs == 1 && s.y_downs == 1);

    /* Erlang's outcome for Y: dies (with which reason) or gets EXIT */
    int dies = 0, exit_msg = 0;
    tp_exit_kind kind = TP_EXIT_NORMAL, x_kind = TP_EXIT_NORMAL;
    int code = 0;
    switch (cause) {
    case C_NORMAL: exit_msg = linked && trap; break;
    case C_ERROR:
        x_kind = kind = TP_EXIT_ERROR, code = 7;
        dies = linked && !trap, exit_msg = linked && trap;
        break;
    case C_KILL: /* untrappable; X, if linked, then gets `killed` */
        dies = 1, kind = TP_EXIT_KILLED;
        x_kind = linked ? TP_EXIT_KILLED : TP_EXIT_NORMAL;
        break;
    case C_KILL_LINK: /* `killed` over a link is an ordinary, trappable exit */
        x_kind = kind = TP_EXIT_KILLED;
        dies = linked && !trap, exit_msg = linked && trap;
        break;
    case C_SIG_NORMAL: exit_msg = trap; break;
    case C_SIG_ERROR:
        kind = TP_EXIT_ERROR, code = 9;
        dies = !trap, exit_msg = trap;
        break;
    case C_SIG_KILL: dies = 1, kind = TP_EXIT_KILLED; break;
    }
    SCEN_ASSERT(s.x_why.kind == x_kind);
    if (dies) {
        SCEN_ASSERT(s.y_why.kind == kind);
        SCEN_ASSERT(kind != TP_EXIT_ERROR || s.y_why.code == code);
        SCEN_ASSERT(s.y_probed == 0);
    } else {
        SCEN_ASSERT(s.y_probed == 1);
        SCEN_ASSERT(s.y_why.kind == TP_EXIT_NORMAL);
    }
    SCEN_ASSERT(s.y_exit_msgs == exit_msg);
    if (exit_msg) {
        SCEN_ASSERT(s.y_exit.kind == kind);
        SCEN_ASSERT(kind != TP_EXIT_ERROR || s.y_exit.code == code);
        SCEN_ASSERT(s.y_exit_from == s.x);
    }
}

static void run_cause(int cause)
{
    for (int linked = 0; linked < 2; linked++)
        for (int trap = 0; trap < 2; trap++)
            run_scenario(cause, linked, trap);
}

/* A normal exit is not propagated to non-trapping links; a trapping
 * linked actor gets {'EXIT', X, normal}. */
static void test_matrix_normal(void **unused) { run_cause(C_NORMAL); }

/* An error exit kills non-trapping linked actors with the same reason;
 * trapping ones get an EXIT message. Unlinked actors are unaffected. */
static void test_matrix_error(void **unused) { run_cause(C_ERROR); }

/* exit(Y, kill) cannot be trapped: Y ends `killed`, linked or not. */
static void test_matrix_kill(void **unused) { run_cause(C_KILL); }

/* X killed: linked Y receives `killed`, which is trappable (no chain of
 * untrappable kills): non-trapping Y dies `killed`, trapping Y gets EXIT. */
static void test_matrix_kill_via_link(void **unused) { run_cause(C_KILL_LINK); }

/* exit/2 without a link: normal is ignored unless trapping, an error kills
 * or arrives as EXIT, kill always kills. */
static void test_exit_signal_direct(void **unused)
{
    for (int trap = 0; trap < 2; trap++) {
        run_scenario(C_SIG_NORMAL, 0, trap);
        run_scenario(C_SIG_ERROR, 0, trap);
        run_scenario(C_SIG_KILL, 0, trap);
    }
}

/* --------------------------------------- where troupe differs on purpose */

typedef struct selfnorm {
    int trap, exits, probes;
    tp_reason why;
    tp_pid from, self;
} selfnorm;

static int self_normal(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    selfnorm *s = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        s->self = tp_self(ctx);
        EXPECT_EQ(tp_trap_exit(ctx, s->trap), 0);
        EXPECT_EQ(tp_exit_signal(ctx, tp_self(ctx), TP_REASON_NORMAL), 0);
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_PROBE, NULL, 0), 0);
        break;
    case TP_TAG_EXIT:
        s->exits++;
        s->from = tp_msg_from(msg);
        EXPECT_EQ(tp_msg_reason(msg, &s->why), 0);
        s->why.text = NULL;
        break;
    case TAG_PROBE: /* after the signal: still running */
        s->probes++;
        tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Erlang: exit(self(), normal) terminates a process that does not trap
 * exits (an irregularity of the reference manual). troupe has no special
 * case: a normal exit signal is ignored by a non-trapping actor, even its
 * own, and reaches a trapping one as {'EXIT', Self, normal}. To end,
 * tp_exit(ctx, TP_REASON_NORMAL). */
static void test_exit_signal_self_normal(void **unused)
{
    for (int trap = 0; trap < 2; trap++) {
        static selfnorm s;
        memset(&s, 0, sizeof s);
        s.trap = trap;
        tpt_reset();
        assert_int_equal(tpt_run(NULL, self_normal, &s, NULL, NULL), 0);
        TPT_CHECK();
        assert_int_equal(s.probes, 1);
        assert_int_equal(s.exits, trap);
        if (trap) {
            assert_int_equal(s.why.kind, TP_EXIT_NORMAL);
            assert_true(s.from == s.self);
        }
    }
}

typedef struct selfkill {
    tp_pid x, y, z;
    tp_ref xmon, ymon, zmon;
    int downs, z_exits;
    tp_reason x_why, y_why, z_why, z_exit;
} selfkill;

static int kill_self(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    selfkill *k = state;
    if (tp_msg_tag(msg) == TAG_SIGNAL) { /* link, then end in a later turn */
        EXPECT_EQ(tp_link(ctx, k->y), 0);
        EXPECT_EQ(tp_link(ctx, k->z), 0);
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_FIN, NULL, 0), 0);
    } else if (tp_msg_tag(msg) == TAG_FIN) {
        tp_exit(ctx, TP_REASON_KILL);
    }
    return TP_HANDLED;
}

static int kill_watcher(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    selfkill *k = state;
    if (tp_msg_tag(msg) == TP_TAG_EXIT) { /* z traps: x's end as a message */
        k->z_exits++;
        EXPECT_EQ(tp_msg_reason(msg, &k->z_exit), 0);
        k->z_exit.text = NULL;
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int kill_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    selfkill *k = state;
    tp_spawn_opts trap = {.flags = TP_SPAWN_TRAP_EXIT};
    tp_reason why;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_spawn(ctx, kill_watcher, k, NULL, &k->y), 0);
        EXPECT_EQ(tp_spawn(ctx, kill_watcher, k, &trap, &k->z), 0);
        EXPECT_EQ(tp_spawn(ctx, kill_self, k, NULL, &k->x), 0);
        EXPECT_EQ(tp_monitor(ctx, k->x, &k->xmon), 0);
        EXPECT_EQ(tp_monitor(ctx, k->y, &k->ymon), 0);
        EXPECT_EQ(tp_monitor(ctx, k->z, &k->zmon), 0);
        EXPECT_EQ(tp_send(ctx, k->x, TAG_SIGNAL, NULL, 0), 0);
        break;
    case TP_TAG_DOWN:
        EXPECT_EQ(tp_msg_reason(msg, &why), 0);
        why.text = NULL;
        if (tp_msg_ref(msg) == k->xmon)
            k->x_why = why;
        else if (tp_msg_ref(msg) == k->ymon)
            k->y_why = why;
        else if (tp_msg_ref(msg) == k->zmon)
            k->z_why = why;
        if (++k->downs == 3)
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Erlang: exit(kill) (exit/1) ends the process with reason kill, and its
 * links and monitors see kill (trappable over a link; a non-trapping
 * linked process dies with kill, not killed). troupe: tp_exit with
 * TP_REASON_KILL ends the actor as killed, and killed is what its links
 * and monitors see (same propagation, one reason name fewer). */
static void test_exit_with_kill_reason(void **unused)
{
    static selfkill k;
    memset(&k, 0, sizeof k);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, kill_root, &k, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(k.x_why.kind, TP_EXIT_KILLED);
    assert_int_equal(k.y_why.kind, TP_EXIT_KILLED); /* not trapping: dies */
    assert_int_equal(k.z_exits, 1);                 /* trapping: a message */
    assert_int_equal(k.z_exit.kind, TP_EXIT_KILLED);
    assert_int_equal(k.z_why.kind, TP_EXIT_NORMAL);
}

/* ------------------------------------------------------------- monitors */

static atomic_int target_ended;
static void mark_ended(void *state) { atomic_store(&target_ended, 1); }

static int idle(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_STOP_ERROR)
        tp_exit(ctx, TP_REASON_ERROR(11, "monitored"));
    return TP_HANDLED;
}

typedef struct mons {
    tp_pid t;
    tp_ref r1, r2, r3;
    int d1, d2, d3, other;
    tp_reason w1, w2, w3;
    tp_pid from1;
} mons;

static void record_down(mons *m, const tp_msg *msg)
{
    tp_reason why;
    EXPECT_EQ(tp_msg_reason(msg, &why), 0);
    why.text = NULL;
    if (tp_msg_ref(msg) == m->r1)
        m->d1++, m->w1 = why, m->from1 = tp_msg_from(msg);
    else if (tp_msg_ref(msg) == m->r2)
        m->d2++, m->w2 = why;
    else if (tp_msg_ref(msg) == m->r3)
        m->d3++, m->w3 = why;
    else
        m->other++;
}

static int monitor_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    mons *m = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, NULL, &m->t), 0);
        EXPECT_EQ(tp_monitor(ctx, m->t, &m->r1), 0);
        EXPECT_EQ(tp_monitor(ctx, m->t, &m->r2), 0);
        EXPECT(m->r1 != 0 && m->r2 != 0 && m->r1 != m->r2);
        EXPECT_EQ(tp_send(ctx, m->t, TAG_STOP_ERROR, NULL, 0), 0);
        break;
    case TP_TAG_DOWN:
        record_down(m, msg);
        if (m->d1 && m->d2 && !m->r3) /* now dead: monitor it again */
            EXPECT_EQ(tp_monitor(ctx, m->t, &m->r3), 0);
        else if (m->d3)
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Erlang monitors: each monitor gets its own DOWN with the reason, and
 * monitoring an already-dead pid gives DOWN noproc at once. */
static void test_monitor_downs_and_noproc(void **unused)
{
    static mons m;
    memset(&m, 0, sizeof m);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, monitor_root, &m, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(m.d1, 1);
    assert_int_equal(m.d2, 1);
    assert_int_equal(m.d3, 1);
    assert_int_equal(m.other, 0);
    assert_true(m.from1 == m.t);
    assert_int_equal(m.w1.kind, TP_EXIT_ERROR);
    assert_int_equal(m.w1.code, 11);
    assert_int_equal(m.w2.kind, TP_EXIT_ERROR);
    assert_int_equal(m.w3.kind, TP_EXIT_NOPROC);
}

typedef struct demon {
    mons m;
    int demonitored; /* tp_demonitor(r1) has returned */
    int down_after;  /* DOWN for r1 delivered after that */
    int race;        /* the target had already ended when we demonitored */
} demon;

static void demonitor_r1(tp_ctx *ctx, demon *d)
{
    int rc = tp_demonitor(ctx, d->m.r1);
    EXPECT(rc == 0 || (d->race && rc == TP_ENOENT));
    d->demonitored = 1;
}

static int demonitor_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    demon *d = state;
    tp_spawn_opts o = {.state_free = mark_ended};
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: /* part 1: demonitor before the target ends */
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, &o, &d->m.t), 0);
        EXPECT_EQ(tp_monitor(ctx, d->m.t, &d->m.r1), 0);
        EXPECT_EQ(tp_monitor(ctx, d->m.t, &d->m.r2), 0);
        if (!d->race) {
            demonitor_r1(ctx, d);
            EXPECT_EQ(tp_demonitor(ctx, d->m.r1), TP_ENOENT); /* twice */
            EXPECT_EQ(tp_kill(ctx, d->m.t), 0);
            break;
        }
        /* part 2: the target ends first, its DOWN may be queued already */
        EXPECT_EQ(tp_kill(ctx, d->m.t), 0);
        /* fall through */
    case TAG_POLL:
        if (!d->demonitored && atomic_load(&target_ended))
            demonitor_r1(ctx, d);
        else if (!d->demonitored)
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_POLL, NULL, 0), 0);
        break;
    case TP_TAG_DOWN:
        if (tp_msg_ref(msg) == d->m.r1 && d->demonitored)
            d->down_after++;
        record_down(&d->m, msg);
        if (d->m.d2) /* r1's DOWN would have been queued before r2's */
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_FIN, NULL, 0), 0);
        break;
    case TAG_FIN: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

/* Erlang demonitor(Ref, [flush]): once it returns, no DOWN for that
 * monitor is delivered, even if the target had already died. */
static void test_no_down_after_demonitor(void **unused)
{
    static demon d;
    for (int race = 0; race < 2; race++) {
        memset(&d, 0, sizeof d);
        d.race = race;
        atomic_store(&target_ended, 0);
        tpt_reset();
        assert_int_equal(tpt_run(NULL, demonitor_root, &d, NULL, NULL), 0);
        TPT_CHECK();
        assert_int_equal(d.m.d2, 1);
        assert_int_equal(d.m.w2.kind, TP_EXIT_KILLED);
        assert_true(d.demonitored);
        assert_int_equal(d.down_after, 0);
    }
}

/* A DOWN deferred (the actor busy with something else), then the monitor
 * removed and the behavior changed: tp_demonitor answers 0 and the DOWN
 * is not offered again, as Erlang's demonitor(Ref, [flush]) drops a DOWN
 * left in the mailbox. Before, tp_demonitor answered TP_ENOENT and the
 * DOWN came back after tp_become. */
typedef struct defdown {
    tp_pid t;
    tp_ref ref;
    int deferred, demonitor_rc, downs_after;
} defdown;

static int defdown_ready(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    defdown *d = state;
    if (tp_msg_tag(msg) == TP_TAG_DOWN)
        d->downs_after++;
    else if (tp_msg_tag(msg) == TAG_FIN)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

static int defdown_busy(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    defdown *d = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, NULL, &d->t), 0);
        EXPECT_EQ(tp_monitor(ctx, d->t, &d->ref), 0);
        EXPECT_EQ(tp_send(ctx, d->t, TAG_STOP_ERROR, NULL, 0), 0);
        break;
    case TP_TAG_DOWN: /* not now: after the probe */
        d->deferred++;
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_PROBE, NULL, 0), 0);
        return TP_DEFER;
    case TAG_PROBE:
        d->demonitor_rc = tp_demonitor(ctx, d->ref);
        EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_FIN, NULL, 0), 0);
        EXPECT_EQ(tp_become(ctx, defdown_ready), 0);
        break;
    }
    return TP_HANDLED;
}

static void test_demonitor_drops_deferred_down(void **unused)
{
    (void)unused;
    static defdown d;
    memset(&d, 0, sizeof d);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, defdown_busy, &d, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(d.deferred, 1);
    assert_int_equal(d.demonitor_rc, 0);
    assert_int_equal(d.downs_after, 0);
}

/* --------------------------------------------------- links to dead pids */

typedef struct deadlink {
    int trap;
    tp_pid dead, linker;
    int exits, downs;
    tp_reason exit_why, down_why;
    tp_pid exit_from;
    int link_rc;
} deadlink;

static int linker(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    deadlink *d = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        if (d->trap)
            EXPECT_EQ(tp_trap_exit(ctx, true), 0);
        d->link_rc = tp_link(ctx, d->dead);
    } else if (tp_msg_tag(msg) == TP_TAG_EXIT) {
        d->exits++;
        d->exit_from = tp_msg_from(msg);
        EXPECT_EQ(tp_msg_reason(msg, &d->exit_why), 0);
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int deadlink_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    deadlink *d = state;
    if (tp_msg_tag(msg) == TP_TAG_START) {
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, NULL, &d->dead), 0);
        EXPECT_EQ(tp_monitor(ctx, d->dead, &(tp_ref){0}), 0);
        EXPECT_EQ(tp_kill(ctx, d->dead), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_DOWN && !d->linker) {
        EXPECT_EQ(tp_spawn(ctx, linker, d, NULL, &d->linker), 0);
        EXPECT_EQ(tp_monitor(ctx, d->linker, &(tp_ref){0}), 0);
    } else if (tp_msg_tag(msg) == TP_TAG_DOWN) {
        d->downs++;
        EXPECT_EQ(tp_msg_reason(msg, &d->down_why), 0);
        d->down_why.text = NULL;
        tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

/* link/1 to a dead pid: an exit signal noproc, which kills a non-trapping
 * caller and reaches a trapping one as EXIT noproc. */
static void test_link_dead_pid_noproc(void **unused)
{
    static deadlink d;
    for (int trap = 0; trap < 2; trap++) {
        memset(&d, 0, sizeof d);
        d.trap = trap;
        tpt_reset();
        assert_int_equal(tpt_run(NULL, deadlink_root, &d, NULL, NULL), 0);
        TPT_CHECK();
        assert_int_equal(d.link_rc, 0);
        assert_int_equal(d.downs, 1);
        if (trap) {
            assert_int_equal(d.exits, 1);
            assert_int_equal(d.exit_why.kind, TP_EXIT_NOPROC);
            assert_true(d.exit_from == d.dead);
            assert_int_equal(d.down_why.kind, TP_EXIT_NORMAL);
        } else {
            assert_int_equal(d.exits, 0);
            assert_int_equal(d.down_why.kind, TP_EXIT_NOPROC);
        }
    }
}

/* ------------------------------------------- spawn_link and unlink */

typedef struct linkage {
    tp_pid a, b;
    int exits_from_a, exits_from_b, downs;
    tp_reason a_why;
} linkage;

static int linkage_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    linkage *l = state;
    tp_spawn_opts lo = {.flags = TP_SPAWN_LINK};
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        EXPECT_EQ(tp_trap_exit(ctx, true), 0);
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, &lo, &l->a), 0);
        EXPECT_EQ(tp_spawn(ctx, idle, NULL, &lo, &l->b), 0);
        EXPECT_EQ(tp_unlink(ctx, l->b), 0);
        EXPECT_EQ(tp_monitor(ctx, l->a, &(tp_ref){0}), 0);
        EXPECT_EQ(tp_monitor(ctx, l->b, &(tp_ref){0}), 0);
        EXPECT_EQ(tp_send(ctx, l->a, TAG_STOP_ERROR, NULL, 0), 0);
        EXPECT_EQ(tp_send(ctx, l->b, TAG_STOP_ERROR, NULL, 0), 0);
        break;
    case TP_TAG_EXIT:
        if (tp_msg_from(msg) == l->a) {
            l->exits_from_a++;
            EXPECT_EQ(tp_msg_reason(msg, &l->a_why), 0);
            l->a_why.text = NULL;
        } else if (tp_msg_from(msg) == l->b) {
            l->exits_from_b++;
        }
        break;
    case TP_TAG_DOWN: /* a link's EXIT is sent with the DOWN: FIN follows */
        if (++l->downs == 2)
            EXPECT_EQ(tp_send(ctx, tp_self(ctx), TAG_FIN, NULL, 0), 0);
        break;
    case TAG_FIN: tp_exit(ctx, TP_REASON_NORMAL); break;
    }
    return TP_HANDLED;
}

/* spawn_link links parent and child; unlink removes the link both ways. */
static void test_spawn_link_and_unlink(void **unused)
{
    static linkage l;
    memset(&l, 0, sizeof l);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, linkage_root, &l, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(l.exits_from_a, 1);
    assert_int_equal(l.a_why.kind, TP_EXIT_ERROR);
    assert_int_equal(l.a_why.code, 11);
    assert_int_equal(l.exits_from_b, 0);
}

/* ------------------------------- monitor/link made right after spawn */

typedef struct early {
    int trap, downs, exits;
    tp_reason down_why, exit_why;
} early;

static int fail_at_start(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tp_exit(ctx, TP_REASON_ERROR(13, "failed at start"));
    return TP_HANDLED;
}

static int early_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    early *e = state;
    tp_pid p;
    tp_reason why;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: /* spawn_monitor / spawn + link: the child has not
                        * run yet, so it has not ended: no noproc */
        EXPECT_EQ(tp_trap_exit(ctx, true), 0);
        EXPECT_EQ(tp_spawn(ctx, fail_at_start, NULL, NULL, &p), 0);
        EXPECT_EQ(tp_monitor(ctx, p, &(tp_ref){0}), 0);
        EXPECT_EQ(tp_link(ctx, p), 0);
        break;
    case TP_TAG_DOWN:
    case TP_TAG_EXIT:
        EXPECT_EQ(tp_msg_reason(msg, &why), 0);
        why.text = NULL;
        if (tp_msg_tag(msg) == TP_TAG_DOWN)
            e->downs++, e->down_why = why;
        else
            e->exits++, e->exit_why = why;
        if (e->downs && e->exits)
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

/* Erlang spawn_monitor/spawn_link: a monitor or link set up in the turn
 * that spawned the child reports the child's real exit reason even when
 * the child ends in its first turn (its monitor/link request was queued
 * before it ended; BEAM answers such pending requests with the reason). */
static void test_monitor_and_link_right_after_spawn(void **unused)
{
    static early e;
    memset(&e, 0, sizeof e);
    tpt_reset();
    assert_int_equal(tpt_run(NULL, early_root, &e, NULL, NULL), 0);
    TPT_CHECK();
    assert_int_equal(e.downs, 1);
    assert_int_equal(e.exits, 1);
    assert_int_equal(e.down_why.kind, TP_EXIT_ERROR);
    assert_int_equal(e.down_why.code, 13);
    assert_int_equal(e.exit_why.kind, TP_EXIT_ERROR);
    assert_int_equal(e.exit_why.code, 13);
}

/* ---------------------------------------- SIGTERM: refused, retried */

/* Each scenario runs in a forked child (a signal must never reach the test
 * process) that reports what its root saw, one line each, on a pipe. */
enum { TAG_TRY_REFUSE = 200, TAG_TRIED };

static int sig_fd = -1;

static void say(const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)!write(sig_fd, line, (size_t)n);
}

typedef struct refuser {
    int refuse; /* shutdowns to refuse before the next one is taken */
    int stall;  /* take that one slowly: never end (a hung shutdown) */
    int shutdowns;
    tp_pid helper;
} refuser;

/* Not the root: may not refuse, even while a shutdown is in progress. */
static int refuse_helper(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    if (tp_msg_tag(msg) == TAG_TRY_REFUSE)
        tp_send_int(ctx, tp_msg_from(msg), TAG_TRIED, tp_refuse_shutdown(ctx));
    return TP_HANDLED;
}

static int refuse_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    refuser *r = state;
    tp_reason why;
    int64_t rc;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        tp_spawn_opts o = {.flags = TP_SPAWN_LINK};
        if (tp_spawn(ctx, refuse_helper, NULL, &o, &r->helper) != 0)
            return TP_ENOMEM;
        say("up %d\n", tp_refuse_shutdown(ctx)); /* none to refuse */
        break;
    }
    case TP_TAG_EXIT:
        if (tp_msg_from(msg) != TP_PID_NONE || tp_msg_reason(msg, &why) != 0 ||
            why.kind != TP_EXIT_SHUTDOWN) {
            say("unexpected exit\n");
            break;
        }
        r->shutdowns++;
        if (r->shutdowns <= r->refuse) /* the helper tries first */
            tp_send(ctx, r->helper, TAG_TRY_REFUSE, NULL, 0);
        else if (r->stall)
            say("stalling %d\n", r->shutdowns);
        else {
            say("accepted %d\n", r->shutdowns);
            tp_exit(ctx, TP_REASON_SHUTDOWN);
        }
        break;
    case TAG_TRIED: {
        tp_msg_int(msg, &rc);
        int mine = tp_refuse_shutdown(ctx);
        int again = tp_refuse_shutdown(ctx); /* refused already */
        say("refused %d: helper %d, root %d, again %d\n", r->shutdowns, (int)rc,
            mine, again);
        break;
    }
    }
    return TP_HANDLED;
}

/* Fork a child running refuse_root under tp_runtime_handle_signals;
 * the read end of its report pipe in *fd. It ends with a line
 * "end <status> <root's exit kind>" and exits with the run's status. */
static pid_t fork_refuser(int refuse, int stall, int *fd)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid > 0) {
        close(p[1]);
        *fd = p[0];
        return pid;
    }
    close(p[0]);
    sig_fd = p[1];
    alarm(60);
    static refuser r;
    r = (refuser){.refuse = refuse, .stall = stall};
    tp_runtime *rt;
    if (tp_runtime_new(NULL, &rt) != 0 || tp_runtime_handle_signals(rt) != 0)
        _exit(10);
    tp_spawn_opts o = {.flags = TP_SPAWN_TRAP_EXIT};
    int status = tp_run(rt, refuse_root, &r, &o);
    tp_reason why = {TP_EXIT_NORMAL, 0, NULL};
    tp_runtime_root_reason(rt, &why);
    tp_runtime_free(rt);
    say("end %d %d\n", status, (int)why.kind);
    exit(status < 0 ? 11 : status); /* exit, not _exit: leak checkers run */
}

/* Append what fd says to buf until it holds a line starting with stop. */
static void read_until(int fd, char *buf, size_t cap, const char *stop)
{
    size_t len = strlen(buf);
    for (;;) {
        for (char *line = buf, *nl; (nl = strchr(line, '\n')); line = nl + 1)
            if (strncmp(line, stop, strlen(stop)) == 0)
                return;
        if (len + 1 >= cap)
            return;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
        buf[len] = '\0';
    }
}

/* Send SIGTERM once per step, each after the line it waits for; then
 * collect the rest and the exit status. */
static int drive(pid_t pid, int fd, char *buf, size_t cap,
                 const char *const *waits)
{
    for (; *waits; waits++) {
        read_until(fd, buf, cap, *waits);
        if (!strstr(buf, *waits))
            fail_msg("no '%s' line; got:\n%s", *waits, buf);
        kill(pid, SIGTERM);
    }
    read_until(fd, buf, cap, "end");
    close(fd);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws))
        fail_msg("child died by signal %d; got:\n%s",
                 WIFSIGNALED(ws) ? WTERMSIG(ws) : 0, buf);
    return WEXITSTATUS(ws);
}

/* A root that refuses the first SIGTERM (tp_refuse_shutdown) and takes the
 * second: the second is an orderly shutdown again (a second shutdown EXIT
 * reaches the root, and it ends with reason shutdown), not a kill. Only the
 * root may refuse, once per shutdown. */
static void test_refused_shutdown_retried(void **unused)
{
    int fd;
    char buf[1024] = "";
    pid_t pid = fork_refuser(1, 0, &fd);
    int status = drive(pid, fd, buf, sizeof buf,
                       (const char *[]){"up", "refused", NULL});
    char want[256];
    snprintf(want, sizeof want,
             "up %d\nrefused 1: helper %d, root 0, again %d\naccepted 2\n"
             "end 0 %d\n",
             TP_ESTATE, TP_ESTATE, TP_ESTATE, TP_EXIT_SHUTDOWN);
    assert_string_equal(buf, want);
    assert_int_equal(status, 0);
}

/* A signal while an orderly shutdown is still in progress (the root got it
 * and has neither ended nor refused) kills every actor: the first shutdown
 * (stall 1) or the one after a refusal (refuse 1, stall 2). */
static void test_signal_during_shutdown_forces(void **unused)
{
    for (int refuse = 0; refuse < 2; refuse++) {
        int fd;
        char buf[1024] = "";
        pid_t pid = fork_refuser(refuse, 1, &fd);
        const char *waits[] = {"up", refuse ? "refused" : "stalling",
                               refuse ? "stalling" : NULL, NULL};
        int status = drive(pid, fd, buf, sizeof buf, waits);
        char want[256];
        if (refuse)
            snprintf(want, sizeof want,
                     "up %d\nrefused 1: helper %d, root 0, again %d\n"
                     "stalling 2\nend 1 %d\n",
                     TP_ESTATE, TP_ESTATE, TP_ESTATE, TP_EXIT_KILLED);
        else
            snprintf(want, sizeof want, "up %d\nstalling 1\nend 1 %d\n",
                     TP_ESTATE, TP_EXIT_KILLED);
        assert_string_equal(buf, want);
        assert_int_equal(status, 1); /* the root was killed */
    }
}

/* ------------------------------------------------ deterministic replay */

/* Six linked workers pass pings around and end by timers, some with
 * errors, one killed by a neighbour; the trapping root logs the order of
 * EXIT and DOWN messages. In the deterministic mode the same seed must
 * give the same order every time, and other seeds other orders. */
#define DET_N 6
enum { TAG_DPING = 100, TAG_DEND };

typedef struct det {
    tp_pid w[DET_N];
    int log[64], nlog, ended;
} det;

static int det_worker(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    det *d = state;
    int me = 0;
    while (me < DET_N && d->w[me] != tp_self(ctx))
        me++;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: break; /* told its neighbours by the root's first ping */
    case TAG_DPING: {
        int64_t hops = 0;
        EXPECT_EQ(tp_msg_int(msg, &hops), 0);
        if (hops < 40)
            EXPECT_EQ(tp_send_int(ctx, d->w[(me + 1 + hops % 3) % DET_N],
                                  TAG_DPING, hops + 1),
                      0);
        if (hops == 0)
            EXPECT_EQ(tp_send_after(ctx, (unsigned)(1 + me % 3), TAG_DEND, NULL,
                                    0, NULL),
                      0);
        break;
    }
    case TAG_DEND:
        if (me == 2)
            tp_kill(ctx, d->w[3]);
        tp_exit(ctx, me % 2 ? TP_REASON_ERROR(me, "odd") : TP_REASON_NORMAL);
        break;
    }
    return TP_HANDLED;
}

static int det_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    det *d = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        EXPECT_EQ(tp_trap_exit(ctx, true), 0);
        tp_spawn_opts o = {.flags = TP_SPAWN_LINK};
        for (int i = 0; i < DET_N; i++) {
            EXPECT_EQ(tp_spawn(ctx, det_worker, d, &o, &d->w[i]), 0);
            EXPECT_EQ(tp_monitor(ctx, d->w[i], NULL), 0);
        }
        for (int i = 0; i < DET_N; i++)
            EXPECT_EQ(tp_send_int(ctx, d->w[i], TAG_DPING, 0), 0);
        break;
    }
    case TP_TAG_EXIT:
    case TP_TAG_DOWN: {
        int who = 0;
        while (who < DET_N && d->w[who] != tp_msg_from(msg))
            who++;
        if (d->nlog < 64)
            d->log[d->nlog++] = who * 2 + (tp_msg_tag(msg) == TP_TAG_DOWN);
        if (tp_msg_tag(msg) == TP_TAG_DOWN && ++d->ended == DET_N)
            tp_exit(ctx, TP_REASON_NORMAL);
        break;
    }
    }
    return TP_HANDLED;
}

static uint64_t det_run(uint64_t seed)
{
    static det d;
    memset(&d, 0, sizeof d);
    tp_config cfg;
    tp_config_init(&cfg);
    cfg.seed = seed;
    tpt_result r;
    tpt_reset();
    assert_int_equal(tpt_run(&cfg, det_root, &d, NULL, &r), 0);
    TPT_CHECK();
    assert_int_equal(d.nlog, 2 * DET_N);
    assert_int_equal(r.stats.actors_alive, 0);
    uint64_t h = r.stats.schedule_hash;
    for (int i = 0; i < d.nlog; i++)
        h = (h ^ (uint64_t)(d.log[i] + 1)) * 0x100000001b3ull;
    return h;
}

static void test_deterministic_replay(void **unused)
{
    const char *env = getenv("TPT_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 42;
    fprintf(stderr, "deterministic replay: seed %" PRIu64 "\n", seed);
    uint64_t sig = det_run(seed);
    for (int rerun = 1; rerun < 100; rerun++)
        if (det_run(seed) != sig)
            fail_msg("rerun %d of seed %" PRIu64 " took another order", rerun,
                     seed);
    int differs = 0;
    for (uint64_t other = 1; other <= 8; other++)
        differs += det_run(seed + other) != sig;
    assert_true(differs > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_normal),
        cmocka_unit_test(test_matrix_error),
        cmocka_unit_test(test_matrix_kill),
        cmocka_unit_test(test_matrix_kill_via_link),
        cmocka_unit_test(test_exit_signal_direct),
        cmocka_unit_test(test_exit_signal_self_normal),
        cmocka_unit_test(test_exit_with_kill_reason),
        cmocka_unit_test(test_monitor_downs_and_noproc),
        cmocka_unit_test(test_no_down_after_demonitor),
        cmocka_unit_test(test_demonitor_drops_deferred_down),
        cmocka_unit_test(test_link_dead_pid_noproc),
        cmocka_unit_test(test_spawn_link_and_unlink),
        cmocka_unit_test(test_monitor_and_link_right_after_spawn),
        cmocka_unit_test(test_deterministic_replay),
        cmocka_unit_test(test_refused_shutdown_retried),
        cmocka_unit_test(test_signal_during_shutdown_forces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
