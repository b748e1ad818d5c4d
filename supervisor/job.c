/*
 * The supervisor's job/step machine: building a job (its steps), starting
 * and stopping one child per step, finishing a job (its reply or the
 * supervisor's end), and the waiting behavior that runs while a step waits
 * for its child (a DOWN, a kill deadline, a supervisor child's SYNC reply).
 */
#include "supervisor/sup_int.h"

#include <stdio.h>
#include <string.h>

#define DEFAULT_WORKER_SHUTDOWN_MS 5000

static int sup_wait(tp_ctx *ctx, void *state, const tp_msg *msg);

static int shutdown_of(const tpi_sup_child *c)
{
    int ms = c->spec.shutdown_ms;
    if (ms == TP_CHILD_SHUTDOWN_DEFAULT)
        return c->spec.kind == TP_CHILD_SUPERVISOR ? TP_CHILD_INFINITY
                                                   : DEFAULT_WORKER_SHUTDOWN_MS;
    return ms;
}

/* Set the job's exit reason to why, its text copied into the job. */
static void set_exit(tpi_sup_job *j, tp_reason why)
{
    j->exit = why;
    if (why.text) {
        snprintf(j->exit_text, sizeof j->exit_text, "%s", why.text);
        j->exit.text = j->exit_text;
    }
}

int tpi_sup_job_add(tpi_sup *s, tpi_sup_step_kind kind, tpi_sup_child *c)
{
    tpi_sup_job *j = &s->job;
    if (j->n == j->cap) {
        size_t ncap = j->cap ? j->cap * 2 : 8;
        tpi_sup_step *ns = tp_realloc(j->steps, ncap * sizeof *ns);
        if (!ns)
            return TP_ENOMEM;
        j->steps = ns;
        j->cap = ncap;
    }
    j->steps[j->n++] = (tpi_sup_step){kind, c};
    return 0;
}

void tpi_sup_job_begin(tpi_sup *s, tpi_sup_job_kind kind)
{
    tpi_sup_job *j = &s->job;
    tpi_sup_step *steps = j->steps;
    size_t cap = j->cap;
    memset(j, 0, sizeof *j);
    j->steps = steps;
    j->cap = cap;
    j->kind = kind;
}

void tpi_sup_job_truncate(tpi_sup *s) { s->job.n = s->job.i + 1; }

/* Add STOP steps for the running children kids[from, to), last started
 * first, and cancel the restarts pending among them: outside a restart
 * job (which starts them with its group) those children are stopped for
 * good. If a step cannot be added the child is killed at once (its link
 * does the rest). */
void tpi_sup_stop_range(tp_ctx *ctx, tpi_sup *s, size_t from, size_t to)
{
    for (size_t k = to; k-- > from;) {
        tpi_sup_child *c = s->kids[k];
        tpi_sup_cancel_restart(ctx, c);
        if (c->state == TP_CHILD_RESTARTING &&
            s->job.kind != TPI_SUP_JOB_RESTART)
            c->state = TP_CHILD_STOPPED;
        if (c->state == TP_CHILD_RUNNING &&
            tpi_sup_job_add(s, TPI_SUP_STOP, c) != 0)
            tp_kill(ctx, c->pid);
    }
}

void tpi_sup_become_shutdown(tp_ctx *ctx, tpi_sup *s, tp_reason why)
{
    tpi_sup_job *j = &s->job;
    if (j->n > j->i)
        tpi_sup_job_truncate(s);
    else
        j->n = j->i;
    j->kind = TPI_SUP_JOB_SHUTDOWN;
    set_exit(j, why);
    tpi_sup_stop_range(ctx, s, 0, s->n);
}

void tpi_sup_start_shutdown(tp_ctx *ctx, tpi_sup *s, tp_reason why,
                            tp_reply_handle *reply)
{
    tpi_sup_job_begin(s, TPI_SUP_JOB_SHUTDOWN);
    set_exit(&s->job, why);
    s->job.reply = reply;
    tpi_sup_stop_range(ctx, s, 0, s->n);
    tpi_sup_job_run(ctx, s);
}

/* ---------------------------------------------------------------- steps */

/* A START step is over: record its result and go on. */
static void start_done(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c, int rc,
                       tp_reason why)
{
    tpi_sup_job *j = &s->job;
    j->call = 0;
    if (rc == 0) {
        tpi_sup_report(ctx, s, TP_SUP_EV_STARTED, c, c->pid, TP_REASON_NORMAL,
                       0, 0);
        j->i++;
        return;
    }
    if (rc == TP_CHILD_IGNORE) {
        tpi_sup_child_stopped(c);
        j->i++;
        return;
    }
    c->pid = TP_PID_NONE;
    tpi_sup_report(ctx, s, TP_SUP_EV_START_FAILED, c, TP_PID_NONE, why, rc, 0);
    switch (j->kind) {
    case TPI_SUP_JOB_INIT: {
        c->state = TP_CHILD_STOPPED;
        char text[TP_REASON_TEXT_MAX + 1];
        snprintf(text, sizeof text, "child \"%s\" failed to start: %s", c->id,
                 why.kind == TP_EXIT_ERROR && why.text ? why.text
                                                       : tp_strerror(rc));
        tpi_sup_job_truncate(s);
        j->i++;
        j->failed = true;
        set_exit(j, TP_REASON_ERROR(rc, text));
        /* roll back: the ones already started, last first */
        tpi_sup_stop_range(ctx, s, 0, tpi_sup_kid_index(s, c));
        return;
    }
    case TPI_SUP_JOB_RESTART:
    case TPI_SUP_JOB_RESUME:
        tpi_sup_restart_failed(ctx, s, c);
        j->i++;
        return;
    case TPI_SUP_JOB_START_ONE:
        c->state = TP_CHILD_STOPPED;
        if (c->dynamic)
            c->doomed = true;
        j->rc = rc;
        j->i++;
        return;
    default: j->i++; return;
    }
}

/* Begin a START step: true when it is already over. */
static bool start_begin(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c)
{
    tpi_sup_cancel_restart(ctx, c);
    tp_pid pid = TP_PID_NONE;
    int rc = c->spec.start(ctx, c->spec.arg, c->args, c->args_len, &pid);
    if (rc == TP_CHILD_IGNORE) {
        start_done(ctx, s, c, rc, TP_REASON_NORMAL);
        return true;
    }
    if (rc == 0 && pid == TP_PID_NONE)
        rc = TP_EINVAL;
    if (rc == 0)
        rc = tp_link(ctx, pid);
    if (rc != 0) {
        if (rc > 0)
            rc = TP_EINVAL;
        if (pid != TP_PID_NONE)
            tp_kill(ctx, pid);
        start_done(ctx, s, c, rc, TP_REASON_ERROR(rc, tp_strerror(rc)));
        return true;
    }
    c->pid = pid;
    c->state = TP_CHILD_RUNNING;
    c->started_ms = tp_now_ms(ctx);
    if (c->spec.kind != TP_CHILD_SUPERVISOR) {
        start_done(ctx, s, c, 0, TP_REASON_NORMAL);
        return true;
    }
    /* A supervisor child has started when its children have: ask it. */
    rc = tp_call(ctx, pid, TP_SUP_REQ_SYNC, NULL, 0, -1, &s->job.call);
    if (rc != 0) {
        s->job.call = 0;
        start_done(ctx, s, c, 0, TP_REASON_NORMAL); /* take it as up */
        return true;
    }
    return false;
}

/* A STOP step is over: c is gone. */
static void stop_done(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c, tp_reason why)
{
    tpi_sup_job *j = &s->job;
    if (j->deadline)
        tp_timer_cancel(ctx, j->deadline);
    j->deadline = 0;
    j->mon = 0;
    tp_pid pid = c->pid;
    c->pid = TP_PID_NONE;
    c->state = TP_CHILD_STOPPED;
    tpi_sup_report(ctx, s, TP_SUP_EV_STOPPED, c, pid, why, 0, 0);
    switch (j->kind) {
    case TPI_SUP_JOB_RESTART:
        /* a group member stopped for the restart: it restarts with the
         * group, except a temporary one, which is forgotten (OTP) */
        if (tpi_sup_one_shot(c))
            c->doomed = true;
        else
            c->state = TP_CHILD_RESTARTING;
        break;
    case TPI_SUP_JOB_TERMINATE:
        if (tpi_sup_one_shot(c))
            c->doomed = true;
        break;
    default: break;
    }
    j->i++;
}

/* Begin a STOP step: true when it is already over. */
static bool stop_begin(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c)
{
    tpi_sup_job *j = &s->job;
    tpi_sup_cancel_restart(ctx, c);
    if (c->state != TP_CHILD_RUNNING) {
        if (c->state == TP_CHILD_RESTARTING && j->kind != TPI_SUP_JOB_RESTART)
            c->state = TP_CHILD_STOPPED;
        j->i++;
        return true;
    }
    int ms = shutdown_of(c);
    int rc = tp_monitor(ctx, c->pid, &j->mon);
    if (rc == 0) {
        if (ms == TP_CHILD_BRUTAL_KILL) {
            rc = tp_kill(ctx, c->pid);
        } else {
            rc = tp_exit_signal(ctx, c->pid, TP_REASON_SHUTDOWN);
            if (rc == 0 && ms > 0)
                rc = tp_send_after(ctx, (unsigned)ms, TPI_SUP_TAG_KILL, NULL, 0,
                                   &j->deadline);
        }
    }
    if (rc != 0) { /* cannot wait for it: kill it and move on */
        tp_kill(ctx, c->pid);
        if (j->mon)
            tp_demonitor(ctx, j->mon);
        stop_done(ctx, s, c, (tp_reason){TP_EXIT_KILLED, 0, NULL});
        return true;
    }
    return false;
}

/* ----------------------------------------------------------------- jobs */

/* The job is over: what it was for. */
static void job_finish(tp_ctx *ctx, tpi_sup *s)
{
    tpi_sup_job *j = &s->job;
    tpi_sup_job_kind kind = j->kind;
    j->kind = TPI_SUP_JOB_NONE;
    switch (kind) {
    case TPI_SUP_JOB_INIT:
        if (j->failed) {
            tp_exit(ctx, j->exit);
            s->exiting = true;
        }
        break;
    case TPI_SUP_JOB_SHUTDOWN:
        tpi_sup_reply(ctx, j->reply, 0, NULL);
        tp_exit(ctx, j->exit);
        s->exiting = true;
        break;
    case TPI_SUP_JOB_TERMINATE: tpi_sup_reply(ctx, j->reply, 0, NULL); break;
    case TPI_SUP_JOB_START_ONE: {
        tp_pid pid = j->rc == 0 ? j->target->pid : TP_PID_NONE;
        tpi_sup_reply(ctx, j->reply, j->rc, &pid);
        break;
    }
    default: break;
    }
    j->reply = NULL;
    tpi_sup_sweep(s);
}

void tpi_sup_job_run(tp_ctx *ctx, tpi_sup *s)
{
    tpi_sup_job *j = &s->job;
    for (;;) {
        while (j->i < j->n) {
            tpi_sup_step st = j->steps[j->i];
            bool over = st.kind == TPI_SUP_STOP ? stop_begin(ctx, s, st.c)
                                                : start_begin(ctx, s, st.c);
            if (!over) {
                if (!s->waiting) {
                    s->waiting = true;
                    tp_become(ctx, sup_wait);
                }
                return;
            }
        }
        /* A restart's group has stopped: start it now, or later. */
        if (j->kind == TPI_SUP_JOB_RESTART && j->then_start) {
            j->then_start = false;
            if (j->delay_ms == 0) {
                tpi_sup_add_start_pending(s, j->target);
                continue;
            }
            tpi_sup_schedule_restart(ctx, s, j->target, j->delay_ms);
            if (j->i < j->n) /* it turned into a shutdown */
                continue;
        }
        break;
    }
    job_finish(ctx, s);
    if (!s->draining)
        tpi_sup_settle(ctx, s);
}

/* -------------------------------------------------------------- waiting */

/* While a step waits, a message that is not the step's: an EXIT or a
 * restart timer is noted for later, a stale DOWN, reply or deadline is
 * dropped, anything else (requests) is deferred. */
static int wait_other(tp_ctx *ctx, tpi_sup *s, const tp_msg *msg)
{
    tp_reason why;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_EXIT:
        if (tp_msg_reason(msg, &why) == 0)
            tpi_sup_note_add(ctx, s, tp_msg_from(msg), 0, why);
        return TP_HANDLED;
    case TPI_SUP_TAG_RESTART:
        tpi_sup_note_add(ctx, s, TP_PID_NONE, tp_msg_ref(msg),
                         TP_REASON_NORMAL);
        return TP_HANDLED;
    case TP_TAG_DOWN:
    case TP_TAG_REPLY:
    case TP_TAG_TIMEOUT:
    case TPI_SUP_TAG_KILL: return TP_HANDLED;
    default: return TP_DEFER;
    }
}

/* While a step waits: its own messages, and nothing else. */
static int sup_wait(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    tpi_sup *s = state;
    tpi_sup_job *j = &s->job;
    if (j->i >= j->n)
        return wait_other(ctx, s, msg); /* not reached: no step, no waiting */
    tpi_sup_step st = j->steps[j->i];
    tpi_sup_child *c = st.c;
    int32_t tag = tp_msg_tag(msg);
    if (st.kind == TPI_SUP_STOP) {
        if (tag == TP_TAG_DOWN && tp_msg_ref(msg) == j->mon) {
            tp_reason why;
            if (tp_msg_reason(msg, &why) != 0)
                why = (tp_reason){TP_EXIT_KILLED, 0, NULL};
            stop_done(ctx, s, c, why);
            tpi_sup_job_run(ctx, s);
            return TP_HANDLED;
        }
        if (tag == TPI_SUP_TAG_KILL && tp_msg_ref(msg) == j->deadline) {
            j->deadline = 0;
            tpi_sup_warn(s, c,
                         " did not stop within its shutdown time of %d ms;"
                         " killed",
                         shutdown_of(c));
            tpi_sup_report(ctx, s, TP_SUP_EV_KILLED, c, c->pid,
                           (tp_reason){TP_EXIT_KILLED, 0, NULL}, 0,
                           (unsigned)shutdown_of(c));
            tp_kill(ctx, c->pid);
            return TP_HANDLED;
        }
        if (tag == TP_TAG_EXIT && tp_msg_from(msg) == c->pid)
            return TP_HANDLED; /* its DOWN follows */
        return wait_other(ctx, s, msg);
    }
    /* START of a supervisor child: its SYNC reply, or its death */
    if (tag == TP_TAG_REPLY && j->call && tp_msg_ref(msg) == j->call) {
        int status = tp_msg_status(msg);
        if (status == 0 || status == TP_ENOREPLY) {
            start_done(ctx, s, c, 0, TP_REASON_NORMAL);
            tpi_sup_job_run(ctx, s);
        } /* else it failed: its EXIT tells why */
        return TP_HANDLED;
    }
    if (tag == TP_TAG_EXIT && tp_msg_from(msg) == c->pid) {
        tp_reason why;
        if (tp_msg_reason(msg, &why) != 0)
            why = TP_REASON_ERROR(TP_ENOPROC, NULL);
        int rc = why.kind == TP_EXIT_ERROR && why.code < 0 ? why.code
                                                           : TP_ENOPROC;
        c->state = TP_CHILD_STOPPED;
        start_done(ctx, s, c, rc, why);
        tpi_sup_job_run(ctx, s);
        return TP_HANDLED;
    }
    return wait_other(ctx, s, msg);
}
