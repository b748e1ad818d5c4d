/*
 * Supervisors: OTP supervision as an ordinary actor on the public API.
 *
 * A supervisor traps exits and links its children. Everything it does to
 * its children is a job: a list of steps, each starting or stopping one
 * child, run in order. Most steps finish at once; stopping a child (wait
 * for its DOWN, kill it at the deadline) and starting a supervisor child
 * (wait until its own children are up) take messages. While a step waits
 * the supervisor runs sup_wait, which handles that step's messages, notes
 * the other EXITs and restart timers for later and defers requests; when
 * the job is over it acts on the notes in arrival order, then returns to
 * sup_main, which offers the deferred requests again. This is Erlang's
 * selective receive, which OTP's supervisor uses the same way: a
 * supervisor does one thing at a time.
 *
 * A stopped child is monitored rather than unlinked: the DOWN says when
 * it is gone even if it had already died, and the link's EXIT that may
 * follow (or that may have been noted) names a pid that is no longer a
 * child's, which is ignored.
 *
 * The parts (supervisor/):
 *   supervisor.c  this map; sup_main, notes and settle, start, reports, logs
 *   child.c       specs: init, check, copy into the state; the child table
 *   job.c         the job/step machine: steps, a job's end, sup_wait
 *   restart.c     restart policy: a child's end, intensity window, backoff
 *   request.c     tp_sup_* requests, their handling, tp_sup_reply_* decoding
 *   sup_int.h     what the parts share (internal, tpi_sup_*)
 */
#include "supervisor/sup_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int sup_main(tp_ctx *ctx, void *state, const tp_msg *msg);

/* ------------------------------------------------------ reports, logs */

void tpi_sup_report(tp_ctx *ctx, tpi_sup *s, tp_sup_event_kind kind,
                    const tpi_sup_child *c, tp_pid pid, tp_reason why, int code,
                    unsigned delay_ms)
{
    if (!s->spec.report)
        return;
    tp_sup_event ev = {.kind = kind,
                       .sup = s->self,
                       .id = c ? c->id : "",
                       .pid = pid,
                       .reason = why,
                       .code = code,
                       .delay_ms = delay_ms,
                       .args = c ? c->args : NULL,
                       .args_len = c ? c->args_len : 0};
    s->spec.report(ctx, s->spec.report_arg, &ev);
}

void tpi_sup_warn(const tpi_sup *s, const tpi_sup_child *c, const char *fmt,
                  ...)
{
    char who[128], what[128];
    if (c->id[0] && c->pid)
        snprintf(who, sizeof who, "child \"%s\" (pid %" PRIu64 ")", c->id,
                 c->pid);
    else if (c->id[0])
        snprintf(who, sizeof who, "child \"%s\"", c->id);
    else
        snprintf(who, sizeof who, "child pid %" PRIu64, c->pid);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "troupe: supervisor %" PRIu64 ": %s%s\n", s->self, who,
            what);
}

/* ---------------------------------------------------------------- exits */

static void exit_seen(tp_ctx *ctx, tpi_sup *s, tp_pid from, tp_reason why)
{
    tpi_sup_child *c = tpi_sup_kid_by_pid(s, from);
    if (c && c->state == TP_CHILD_RUNNING)
        tpi_sup_child_exited(ctx, s, c, why);
    else if ((from == s->parent || from == TP_PID_NONE) &&
             why.kind != TP_EXIT_NORMAL)
        tpi_sup_start_shutdown(ctx, s, why, NULL);
    /* else: a former child's late EXIT, or a normal one: ignored */
}

/* Keep an EXIT or a restart timer for when the current job is over.
 * Without memory for it the supervisor cannot keep its promises: it ends
 * (its children with it, over their links) and its parent restarts it. */
void tpi_sup_note_add(tp_ctx *ctx, tpi_sup *s, tp_pid pid, tp_timer timer,
                      tp_reason why)
{
    size_t tl = why.text ? strlen(why.text) + 1 : 0;
    tpi_sup_note *n = tp_alloc(sizeof *n + tl);
    if (!n) {
        tp_exit(ctx, TP_REASON_ERROR(TP_ENOMEM, "supervisor out of memory"));
        s->exiting = true;
        return;
    }
    n->next = NULL;
    n->pid = pid;
    n->timer = timer;
    n->why = why;
    if (tl) {
        memcpy(n->text, why.text, tl);
        n->why.text = n->text;
    }
    if (!s->notes_tail)
        s->notes_tail = &s->notes;
    *s->notes_tail = n;
    s->notes_tail = &n->next;
}

/* A job is over: act on what came meanwhile, one at a time (each may
 * start a job that waits again), then take up the deferred requests. */
void tpi_sup_settle(tp_ctx *ctx, tpi_sup *s)
{
    s->draining = true;
    while (!s->exiting && s->job.kind == TPI_SUP_JOB_NONE && s->notes) {
        tpi_sup_note *n = s->notes;
        s->notes = n->next;
        if (!s->notes)
            s->notes_tail = &s->notes;
        if (n->timer)
            tpi_sup_restart_due(ctx, s, n->timer);
        else
            exit_seen(ctx, s, n->pid, n->why);
        tp_free(n);
        if (s->job.kind == TPI_SUP_JOB_NONE)
            tpi_sup_sweep(s);
    }
    s->draining = false;
    if (s->waiting && !s->exiting && s->job.kind == TPI_SUP_JOB_NONE) {
        s->waiting = false;
        tp_become(ctx, sup_main); /* offers the deferred requests again */
    }
}

/* ------------------------------------------------------------- behavior */

static int sup_init(tp_ctx *ctx, tpi_sup *s)
{
    s->self = tp_self(ctx);
    s->rng = s->spec.backoff.seed ? s->spec.backoff.seed : s->self;
    if (s->name[0]) {
        int rc = tp_register(ctx, s->name);
        if (rc != 0)
            return rc;
    }
    tpi_sup_job_begin(s, TPI_SUP_JOB_INIT);
    for (size_t i = 0; i < s->n; i++) {
        int rc = tpi_sup_job_add(s, TPI_SUP_START, s->kids[i]);
        if (rc != 0)
            return rc;
    }
    tpi_sup_job_run(ctx, s);
    return TP_HANDLED;
}

static int sup_main(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tpi_sup *s = state;
    int32_t tag = tp_msg_tag(msg);
    switch (tag) {
    case TP_TAG_START: return sup_init(ctx, s);
    case TP_TAG_EXIT: {
        tp_reason why;
        if (tp_msg_reason(msg, &why) == 0)
            exit_seen(ctx, s, tp_msg_from(msg), why);
        break;
    }
    case TPI_SUP_TAG_RESTART:
        tpi_sup_restart_due(ctx, s, tp_msg_ref(msg));
        break;
    default:
        if (tag >= TP_SUP_REQ_START_CHILD && tag <= TP_SUP_REQ_SYNC)
            tpi_sup_handle_request(ctx, s, msg);
        break;
    }
    if (s->job.kind == TPI_SUP_JOB_NONE)
        tpi_sup_sweep(s);
    return TP_HANDLED;
}

/* ---------------------------------------------------------------- start */

/* Start a supervisor from spec: spawned by ctx and linked to it, or
 * without ctx as rt's root (tp_run's result). */
static int sup_start(tp_ctx *ctx, tp_runtime *rt, const tp_sup_spec *spec,
                     tp_pid *pid_out)
{
    int rc;
    tpi_sup *s = tpi_sup_new(spec, &rc);
    if (!s)
        return rc;
    tp_spawn_opts o = {.mailbox_capacity = spec->mailbox_capacity
                                               ? spec->mailbox_capacity
                                               : TP_MAILBOX_UNBOUNDED,
                       .flags = TP_SPAWN_TRAP_EXIT,
                       .state_free = tpi_sup_free};
    if (ctx) {
        s->parent = tp_self(ctx);
        o.flags |= TP_SPAWN_LINK;
        rc = tp_spawn(ctx, sup_main, s, &o, pid_out);
    } else {
        rc = tp_run(rt, sup_main, s, &o);
    }
    if (rc < 0)
        tpi_sup_free(s); /* not spawned or not run: the state is still ours */
    return rc;
}

int tp_sup_start_link(tp_ctx *ctx, const tp_sup_spec *spec, tp_pid *pid_out)
{
    return ctx ? sup_start(ctx, NULL, spec, pid_out) : TP_ESTATE;
}

int tp_sup_child_start(tp_ctx *ctx, void *arg, const void *args,
                       size_t args_len, tp_pid *pid_out)
{
    (void)args;
    (void)args_len;
    return tp_sup_start_link(ctx, arg, pid_out);
}

int tp_sup_run(tp_runtime *rt, const tp_sup_spec *spec)
{
    return rt ? sup_start(NULL, rt, spec, NULL) : TP_EINVAL;
}
