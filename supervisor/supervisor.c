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
 */
#include "troupe/supervisor.h"

#include <msgpack.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Internal messages to self (timers); only the supervisor sees them. */
enum {
    TAG_KILL = TP_SUP_TAG_BASE + 0x100, /* a stopping child's deadline */
    TAG_RESTART                         /* a (backoff) restart is due */
};

#define DEFAULT_WORKER_SHUTDOWN_MS 5000

typedef struct child {
    char id[TP_CHILD_ID_MAX + 1];
    tp_child_spec spec; /* spec.id points to id */
    void *args;         /* simple_one_for_one arguments (owned) */
    size_t args_len;
    tp_pid pid; /* TP_PID_NONE unless running */
    tp_child_state state;
    bool dynamic; /* a simple_one_for_one child: deleted when it ends */
    bool doomed;  /* delete when the current job is over */
    uint64_t started_ms;
    unsigned fails; /* consecutive restarts, for the backoff */
    tp_timer timer; /* pending restart, 0 if none */
} child;

typedef enum { ST_STOP, ST_START } step_kind;

typedef struct step {
    step_kind kind;
    child *c;
} step;

typedef enum {
    JOB_NONE,
    JOB_INIT,      /* start all in order; on failure roll back and exit */
    JOB_RESTART,   /* stop a group, then start it (now or after a delay) */
    JOB_RESUME,    /* a delayed restart is due: start the pending ones */
    JOB_SHUTDOWN,  /* stop all in reverse, then exit */
    JOB_TERMINATE, /* terminate_child */
    JOB_START_ONE  /* restart_child, start_child */
} job_kind;

typedef struct job {
    job_kind kind;
    step *steps;
    size_t n, cap, i;
    /* the step in progress, when it waits */
    tp_ref mon;        /* STOP: monitor of the child */
    tp_timer deadline; /* STOP: kill timer */
    tp_ref call;       /* START of a supervisor: its SYNC request */
    bool call_failed;  /* ... answered with an error: wait for the EXIT */
    /* what the job is about */
    child *target;     /* RESTART: the child that ended; START_ONE, TERMINATE */
    unsigned delay_ms; /* RESTART: delay before starting the group */
    bool failed;       /* INIT: a start failed, rolling back */
    bool then_start;   /* RESTART: START steps not yet added */
    tp_reason exit;    /* INIT (failed), SHUTDOWN: the reason to end with */
    char exit_text[TP_REASON_TEXT_MAX + 1];
    tp_reply_handle *reply;
    int rc;         /* START_ONE: the start's result */
    bool del_after; /* TERMINATE: delete the child when stopped */
} job;

typedef struct sup {
    tp_sup_spec spec; /* children/name pointers not used after the copy */
    char name[64];
    child **kids; /* in start order */
    size_t n, cap;
    child tmpl; /* simple_one_for_one template */
    tp_pid self;
    tp_pid parent; /* the spawner; TP_PID_NONE for the root */
    uint64_t rng;
    uint64_t *rs; /* restart times (ms) within the period, oldest first */
    size_t rs_off, rs_len, rs_cap;
    bool waiting;                     /* running sup_wait */
    bool draining;                    /* in settle() */
    bool exiting;                     /* tp_exit called */
    struct note *notes, **notes_tail; /* EXITs and restart timers that
                                         came while a step waited */
    job job;
} sup;

/* An EXIT or a due restart timer that arrived while a step waited. They
 * are kept here rather than deferred with TP_DEFER because a deferred
 * system message (EXIT, DOWN, reply, timer) is not offered again by the
 * runtime (see the issue 4 report); requests are deferred. */
typedef struct note {
    struct note *next;
    tp_pid pid;     /* EXIT: from */
    tp_timer timer; /* restart timer, or 0 for an EXIT */
    tp_reason why;
    char text[];
} note;

static int sup_main(tp_ctx *ctx, void *state, const tp_msg *msg);
static int sup_wait(tp_ctx *ctx, void *state, const tp_msg *msg);
static void job_run(tp_ctx *ctx, sup *s);

/* ---------------------------------------------------------------- utils */

/* The runtime's timer clock, so the deterministic mode replays restart
 * intensity and backoff decisions too. */
static uint64_t now_ms(tp_ctx *ctx) { return tp_now_ms(ctx); }

static uint64_t rng_next(uint64_t *x) /* splitmix64 */
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static bool simple(const sup *s)
{
    return s->spec.strategy == TP_SUP_SIMPLE_ONE_FOR_ONE;
}

static int shutdown_of(const child *c)
{
    int ms = c->spec.shutdown_ms;
    if (ms == TP_CHILD_SHUTDOWN_DEFAULT)
        return c->spec.kind == TP_CHILD_SUPERVISOR ? TP_CHILD_INFINITY
                                                   : DEFAULT_WORKER_SHUTDOWN_MS;
    return ms;
}

static void set_reason(tp_reason *dst, char *buf, tp_reason src)
{
    *dst = src;
    if (src.text) {
        snprintf(buf, TP_REASON_TEXT_MAX + 1, "%s", src.text);
        dst->text = buf;
    }
}

static void report(tp_ctx *ctx, sup *s, tp_sup_event_kind kind, const child *c,
                   tp_pid pid, tp_reason why, int code, unsigned delay_ms)
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

static void child_label(const child *c, tp_pid pid, char *buf, size_t cap)
{
    if (c->id[0] && pid)
        snprintf(buf, cap, "child \"%s\" (pid %" PRIu64 ")", c->id, pid);
    else if (c->id[0])
        snprintf(buf, cap, "child \"%s\"", c->id);
    else
        snprintf(buf, cap, "child pid %" PRIu64, pid);
}

/* ------------------------------------------------------------- children */

static child *child_new(const tp_child_spec *spec, const void *args,
                        size_t args_len)
{
    child *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->spec = *spec;
    if (spec->id)
        snprintf(c->id, sizeof c->id, "%s", spec->id);
    c->spec.id = c->id;
    if (args_len) {
        c->args = malloc(args_len);
        if (!c->args) {
            free(c);
            return NULL;
        }
        memcpy(c->args, args, args_len);
        c->args_len = args_len;
    }
    c->state = TP_CHILD_STOPPED;
    return c;
}

static void child_free(child *c)
{
    if (c) {
        free(c->args);
        free(c);
    }
}

static int kids_push(sup *s, child *c)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        child **nk = realloc(s->kids, ncap * sizeof *nk);
        if (!nk)
            return TP_ENOMEM;
        s->kids = nk;
        s->cap = ncap;
    }
    s->kids[s->n++] = c;
    return 0;
}

static size_t kid_index(const sup *s, const child *c)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->kids[i] == c)
            return i;
    return s->n;
}

static child *kid_by_pid(const sup *s, tp_pid pid)
{
    if (pid == TP_PID_NONE)
        return NULL;
    for (size_t i = s->n; i-- > 0;) /* recent children are likelier */
        if (s->kids[i]->pid == pid && !s->kids[i]->doomed)
            return s->kids[i];
    return NULL;
}

static child *kid_by_id(const sup *s, const char *id, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (!s->kids[i]->doomed && strlen(s->kids[i]->id) == len &&
            memcmp(s->kids[i]->id, id, len) == 0)
            return s->kids[i];
    return NULL;
}

/* Delete the doomed children (only when no job holds pointers to them). */
static void sweep(sup *s)
{
    size_t j = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->kids[i]->doomed)
            child_free(s->kids[i]);
        else
            s->kids[j++] = s->kids[i];
    }
    s->n = j;
}

static void cancel_restart(tp_ctx *ctx, child *c)
{
    if (c->timer) {
        tp_timer_cancel(ctx, c->timer);
        c->timer = 0;
    }
}

static void sup_free(void *state)
{
    sup *s = state;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        child_free(s->kids[i]);
    free(s->kids);
    for (note *n = s->notes, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    free(s->rs);
    free(s->job.steps);
    free(s);
}

/* -------------------------------------------------- intensity, backoff */

/* Record a restart now; true if that makes more than intensity restarts
 * within period_ms. */
static bool restart_exceeds(tp_ctx *ctx, sup *s)
{
    uint64_t now = now_ms(ctx);
    while (s->rs_len && now - s->rs[s->rs_off] > s->spec.period_ms) {
        s->rs_off++;
        s->rs_len--;
    }
    if (s->rs_len >= s->spec.intensity)
        return true;
    if (s->rs_off + s->rs_len == s->rs_cap) {
        if (s->rs_off) {
            memmove(s->rs, s->rs + s->rs_off, s->rs_len * sizeof *s->rs);
            s->rs_off = 0;
        } else {
            size_t ncap = s->rs_cap ? s->rs_cap * 2 : 8;
            uint64_t *nr = realloc(s->rs, ncap * sizeof *nr);
            if (!nr) /* cannot count: take it as one too many */
                return true;
            s->rs = nr;
            s->rs_cap = ncap;
        }
    }
    s->rs[s->rs_off + s->rs_len++] = now;
    return false;
}

static unsigned backoff_delay(sup *s, child *c)
{
    const tp_sup_backoff *b = &s->spec.backoff;
    if (!b->min_ms)
        return 0;
    uint64_t max = b->max_ms > b->min_ms ? b->max_ms : b->min_ms;
    uint64_t d = b->min_ms;
    for (unsigned i = 0; i < c->fails && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    unsigned pct = b->jitter_pct > 100 ? 100 : b->jitter_pct;
    uint64_t span = d * pct / 100;
    if (span)
        d -= rng_next(&s->rng) % (span + 1);
    if (d < b->min_ms)
        d = b->min_ms;
    c->fails++;
    return (unsigned)d;
}

/* A child ended after having been up: forget old failures if it was up
 * long enough. */
static void backoff_uptime(tp_ctx *ctx, sup *s, child *c)
{
    const tp_sup_backoff *b = &s->spec.backoff;
    uint64_t reset =
        b->reset_ms
            ? b->reset_ms
            : 10u * (uint64_t)(b->max_ms > b->min_ms ? b->max_ms : b->min_ms);
    if (now_ms(ctx) - c->started_ms >= reset)
        c->fails = 0;
}

/* ----------------------------------------------------------------- jobs */

static int job_add(sup *s, step_kind kind, child *c)
{
    job *j = &s->job;
    if (j->n == j->cap) {
        size_t ncap = j->cap ? j->cap * 2 : 8;
        step *ns = realloc(j->steps, ncap * sizeof *ns);
        if (!ns)
            return TP_ENOMEM;
        j->steps = ns;
        j->cap = ncap;
    }
    j->steps[j->n++] = (step){kind, c};
    return 0;
}

static void job_begin(sup *s, job_kind kind)
{
    job *j = &s->job;
    step *steps = j->steps;
    size_t cap = j->cap;
    memset(j, 0, sizeof *j);
    j->steps = steps;
    j->cap = cap;
    j->kind = kind;
}

/* Drop the steps not yet begun. */
static void job_truncate(sup *s) { s->job.n = s->job.i + 1; }

/* Add STOP steps for every running child, last started first. If a step
 * cannot be added the child is killed at once (its link does the rest). */
static void add_stop_all(tp_ctx *ctx, sup *s)
{
    for (size_t k = s->n; k-- > 0;) {
        child *c = s->kids[k];
        cancel_restart(ctx, c);
        if (c->state == TP_CHILD_RESTARTING)
            c->state = TP_CHILD_STOPPED;
        if (c->state == TP_CHILD_RUNNING && job_add(s, ST_STOP, c) != 0)
            tp_kill(ctx, c->pid);
    }
}

/* Turn the current job into a shutdown that ends the supervisor with why. */
static void become_shutdown(tp_ctx *ctx, sup *s, tp_reason why)
{
    job *j = &s->job;
    if (j->n > j->i)
        job_truncate(s);
    else
        j->n = j->i;
    j->kind = JOB_SHUTDOWN;
    set_reason(&j->exit, j->exit_text, why);
    add_stop_all(ctx, s);
}

static void start_shutdown(tp_ctx *ctx, sup *s, tp_reason why,
                           tp_reply_handle *reply)
{
    job_begin(s, JOB_SHUTDOWN);
    set_reason(&s->job.exit, s->job.exit_text, why);
    s->job.reply = reply;
    add_stop_all(ctx, s);
    job_run(ctx, s);
}

static void reply_result(tp_ctx *ctx, tp_reply_handle *r, int rc,
                         const tp_pid *pid)
{
    if (!r)
        return;
    void *buf = NULL;
    size_t len = 0;
    int prc = pid ? tp_packf(&buf, &len, "[ip]", rc, *pid)
                  : tp_packf(&buf, &len, "[i]", rc);
    tp_reply_send(ctx, r, prc == 0 ? buf : NULL, prc == 0 ? len : 0);
    tp_free(buf);
}

/* A request's job could not be set up: drop it and answer rc. */
static void job_abandon(tp_ctx *ctx, sup *s, int rc, const tp_pid *pid)
{
    s->job.kind = JOB_NONE;
    reply_result(ctx, s->job.reply, rc, pid);
    s->job.reply = NULL;
}

/* The intensity was exceeded (by the restart of c): log, report, stop. */
static void intensity_exceeded(tp_ctx *ctx, sup *s, child *c)
{
    char who[128];
    child_label(c, c->pid, who, sizeof who);
    fprintf(stderr,
            "troupe: supervisor %" PRIu64
            ": %s: more than %u restarts in %u ms;"
            " shutting down\n",
            s->self, who, s->spec.intensity, s->spec.period_ms);
    report(ctx, s, TP_SUP_EV_INTENSITY, c, c->pid, TP_REASON_SHUTDOWN, 0, 0);
}

/* Schedule the next restart attempt of c (already RESTARTING). */
static void schedule_restart(tp_ctx *ctx, sup *s, child *c, unsigned delay)
{
    cancel_restart(ctx, c);
    report(ctx, s, TP_SUP_EV_RESTARTING, c, TP_PID_NONE, TP_REASON_NORMAL, 0,
           delay);
    if (tp_send_after(ctx, delay, TAG_RESTART, NULL, 0, &c->timer) != 0) {
        /* No timer: the supervisor cannot keep its promise; give up the
         * way OTP does when it cannot restart. */
        c->timer = 0;
        become_shutdown(ctx, s, TP_REASON_SHUTDOWN);
    }
}

/* Add START steps for the children waiting to restart after c was
 * restarted: c alone (one_for_one), or c's group. */
static void add_start_pending(sup *s, child *c)
{
    tp_sup_strategy st = s->spec.strategy;
    if (st == TP_SUP_ONE_FOR_ONE || st == TP_SUP_SIMPLE_ONE_FOR_ONE) {
        if (c->state == TP_CHILD_RESTARTING && !c->doomed)
            job_add(s, ST_START, c);
        return;
    }
    size_t from = st == TP_SUP_ONE_FOR_ALL ? 0 : kid_index(s, c);
    for (size_t k = from; k < s->n; k++)
        if (s->kids[k]->state == TP_CHILD_RESTARTING && !s->kids[k]->doomed &&
            job_add(s, ST_START, s->kids[k]) != 0)
            break; /* out of memory: the rest stay pending, unscheduled */
}

/* A start failed in a restart (or resume): count it; retry later, or shut
 * down when the intensity is exceeded. */
static void restart_failed(tp_ctx *ctx, sup *s, child *c)
{
    job_truncate(s);
    c->state = TP_CHILD_RESTARTING;
    if (restart_exceeds(ctx, s)) {
        intensity_exceeded(ctx, s, c);
        become_shutdown(ctx, s, TP_REASON_SHUTDOWN);
        return;
    }
    schedule_restart(ctx, s, c, backoff_delay(s, c));
}

/* -------------------------------------------------------------- steps */

/* A step is over: record its result and go on. */
static void start_done(tp_ctx *ctx, sup *s, child *c, int rc, tp_reason why)
{
    job *j = &s->job;
    j->call = 0;
    j->call_failed = false;
    if (rc == 0) {
        report(ctx, s, TP_SUP_EV_STARTED, c, c->pid, TP_REASON_NORMAL, 0, 0);
        if (j->kind == JOB_START_ONE)
            j->rc = 0;
        j->i++;
        return;
    }
    if (rc == TP_CHILD_IGNORE) {
        c->state = TP_CHILD_STOPPED;
        c->pid = TP_PID_NONE;
        if (c->dynamic || c->spec.restart == TP_CHILD_TEMPORARY)
            c->doomed = true;
        j->i++;
        return;
    }
    c->pid = TP_PID_NONE;
    report(ctx, s, TP_SUP_EV_START_FAILED, c, TP_PID_NONE, why, rc, 0);
    switch (j->kind) {
    case JOB_INIT: {
        c->state = TP_CHILD_STOPPED;
        char text[TP_REASON_TEXT_MAX + 1];
        snprintf(text, sizeof text, "child \"%s\" failed to start: %s", c->id,
                 why.kind == TP_EXIT_ERROR && why.text ? why.text
                                                       : tp_strerror(rc));
        job_truncate(s);
        j->i++;
        j->failed = true;
        set_reason(&j->exit, j->exit_text, TP_REASON_ERROR(rc, text));
        /* roll back: the ones already started, last first */
        for (size_t k = kid_index(s, c); k-- > 0;)
            if (s->kids[k]->state == TP_CHILD_RUNNING &&
                job_add(s, ST_STOP, s->kids[k]) != 0)
                tp_kill(ctx, s->kids[k]->pid);
        return;
    }
    case JOB_RESTART:
    case JOB_RESUME:
        restart_failed(ctx, s, c);
        j->i++;
        return;
    case JOB_START_ONE:
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
static bool start_begin(tp_ctx *ctx, sup *s, child *c)
{
    cancel_restart(ctx, c);
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
    c->started_ms = now_ms(ctx);
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

static void stop_done(tp_ctx *ctx, sup *s, child *c, tp_reason why)
{
    job *j = &s->job;
    if (j->deadline)
        tp_timer_cancel(ctx, j->deadline);
    j->deadline = 0;
    j->mon = 0;
    tp_pid pid = c->pid;
    c->pid = TP_PID_NONE;
    c->state = TP_CHILD_STOPPED;
    report(ctx, s, TP_SUP_EV_STOPPED, c, pid, why, 0, 0);
    switch (j->kind) {
    case JOB_RESTART:
        /* a group member stopped for the restart: it restarts with the
         * group, except a temporary one, which is forgotten (OTP) */
        if (c->spec.restart == TP_CHILD_TEMPORARY || c->dynamic)
            c->doomed = true;
        else
            c->state = TP_CHILD_RESTARTING;
        break;
    case JOB_TERMINATE:
        if (j->del_after || c->dynamic || c->spec.restart == TP_CHILD_TEMPORARY)
            c->doomed = true;
        break;
    default: break;
    }
    j->i++;
}

/* Begin a STOP step: true when it is already over. */
static bool stop_begin(tp_ctx *ctx, sup *s, child *c)
{
    job *j = &s->job;
    cancel_restart(ctx, c);
    if (c->state != TP_CHILD_RUNNING) {
        if (c->state == TP_CHILD_RESTARTING && j->kind != JOB_RESTART)
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
                rc = tp_send_after(ctx, (unsigned)ms, TAG_KILL, NULL, 0,
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

/* The job is over: what it was for. */
static void job_finish(tp_ctx *ctx, sup *s)
{
    job *j = &s->job;
    job_kind kind = j->kind;
    j->kind = JOB_NONE;
    switch (kind) {
    case JOB_INIT:
        if (j->failed) {
            tp_exit(ctx, j->exit);
            s->exiting = true;
        }
        break;
    case JOB_SHUTDOWN:
        if (j->reply) {
            reply_result(ctx, j->reply, 0, NULL);
            j->reply = NULL;
        }
        tp_exit(ctx, j->exit);
        s->exiting = true;
        break;
    case JOB_TERMINATE: reply_result(ctx, j->reply, 0, NULL); break;
    case JOB_START_ONE: {
        tp_pid pid = j->rc == 0 ? j->target->pid : TP_PID_NONE;
        reply_result(ctx, j->reply, j->rc, &pid);
        break;
    }
    default: break;
    }
    j->reply = NULL;
    sweep(s);
}

static void settle(tp_ctx *ctx, sup *s);

static void job_run(tp_ctx *ctx, sup *s)
{
    job *j = &s->job;
    for (;;) {
        while (j->i < j->n) {
            step st = j->steps[j->i];
            bool over = st.kind == ST_STOP ? stop_begin(ctx, s, st.c)
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
        if (j->kind == JOB_RESTART && j->then_start) {
            j->then_start = false;
            if (j->delay_ms == 0) {
                add_start_pending(s, j->target);
                continue;
            }
            schedule_restart(ctx, s, j->target, j->delay_ms);
            if (j->i < j->n) /* it turned into a shutdown */
                continue;
        }
        break;
    }
    job_finish(ctx, s);
    if (!s->draining)
        settle(ctx, s);
}

/* ---------------------------------------------------------- child exits */

static bool wants_restart(tp_child_restart r, tp_reason why)
{
    switch (r) {
    case TP_CHILD_PERMANENT: return true;
    case TP_CHILD_TRANSIENT:
        return why.kind != TP_EXIT_NORMAL && why.kind != TP_EXIT_SHUTDOWN;
    default: return false;
    }
}

static void child_exited(tp_ctx *ctx, sup *s, child *c, tp_reason why)
{
    tp_pid pid = c->pid;
    report(ctx, s, TP_SUP_EV_EXITED, c, pid, why, 0, 0);
    backoff_uptime(ctx, s, c);
    if (!wants_restart(c->spec.restart, why)) {
        c->pid = TP_PID_NONE;
        c->state = TP_CHILD_STOPPED;
        if (c->dynamic || c->spec.restart == TP_CHILD_TEMPORARY)
            c->doomed = true;
        return;
    }
    if (restart_exceeds(ctx, s)) {
        intensity_exceeded(ctx, s, c);
        c->pid = TP_PID_NONE;
        c->state = TP_CHILD_STOPPED;
        start_shutdown(ctx, s, TP_REASON_SHUTDOWN, NULL);
        return;
    }
    c->pid = TP_PID_NONE;
    c->state = TP_CHILD_RESTARTING;
    tp_observe_restart(ctx, pid); /* restart counters (troupe/observe.h) */
    job_begin(s, JOB_RESTART);
    job *j = &s->job;
    j->target = c;
    j->delay_ms = backoff_delay(s, c);
    j->then_start = true;
    /* the rest of its group stops first, last started first */
    size_t from = s->n;
    if (s->spec.strategy == TP_SUP_ONE_FOR_ALL)
        from = 0;
    else if (s->spec.strategy == TP_SUP_REST_FOR_ONE)
        from = kid_index(s, c);
    for (size_t k = s->n; k-- > from;) {
        child *o = s->kids[k];
        if (o == c)
            continue;
        if (o->state == TP_CHILD_RUNNING) {
            if (job_add(s, ST_STOP, o) != 0) {
                tp_kill(ctx, o->pid); /* its EXIT will restart it */
                continue;
            }
        } else if (o->state == TP_CHILD_RESTARTING) {
            cancel_restart(ctx, o); /* restarts with this group now */
        }
    }
    job_run(ctx, s);
}

/* ------------------------------------------------------------- requests */

static void pack_children(tp_ctx *ctx, sup *s, const tp_msg *msg)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t live = 0;
    for (size_t i = 0; i < s->n; i++)
        live += !s->kids[i]->doomed;
    int rc = msgpack_pack_array(&pk, 2) | msgpack_pack_int(&pk, 0) |
             msgpack_pack_array(&pk, live);
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        child *c = s->kids[i];
        if (c->doomed)
            continue;
        size_t idl = strlen(c->id);
        rc |= msgpack_pack_array(&pk, 4) | msgpack_pack_str(&pk, idl) |
              msgpack_pack_str_body(&pk, c->id, idl) |
              msgpack_pack_uint64(&pk, c->pid) |
              msgpack_pack_int(&pk, (int)c->spec.kind) |
              msgpack_pack_int(&pk, (int)c->state);
    }
    if (rc == 0 && sb.data)
        tp_reply(ctx, msg, sb.data, sb.size);
    else
        tp_reply(ctx, msg, "\x91\xfe", 2); /* [TP_ENOMEM] */
    msgpack_sbuffer_destroy(&sb);
}

static void count_children(tp_ctx *ctx, sup *s, const tp_msg *msg)
{
    uint64_t specs = 0, active = 0, sups = 0, workers = 0;
    for (size_t i = 0; i < s->n; i++) {
        child *c = s->kids[i];
        if (c->doomed)
            continue;
        specs++;
        active += c->state == TP_CHILD_RUNNING;
        if (c->spec.kind == TP_CHILD_SUPERVISOR)
            sups++;
        else
            workers++;
    }
    void *buf;
    size_t len;
    if (tp_packf(&buf, &len, "[iuuuu]", 0, specs, active, sups, workers) == 0) {
        tp_reply(ctx, msg, buf, len);
        tp_free(buf);
    }
}

/* The child a request names: by id (string) or by pid (integer). */
static child *request_child(sup *s, const tp_msg *msg)
{
    const char *id;
    size_t len;
    tp_pid pid;
    if (tp_msg_scanf(msg, "S", &id, &len) == 0)
        return kid_by_id(s, id, len);
    if (tp_msg_scanf(msg, "p", &pid) == 0)
        return kid_by_pid(s, pid);
    return NULL;
}

/* The child a restart or delete request names, which must be stopped:
 * 0, TP_ENOENT, or TP_ESTATE (also for simple_one_for_one). */
static int stopped_child(sup *s, const tp_msg *msg, child **out)
{
    child *c = simple(s) ? NULL : request_child(s, msg);
    *out = c;
    return simple(s)                      ? TP_ESTATE
           : !c                           ? TP_ENOENT
           : c->state != TP_CHILD_STOPPED ? TP_ESTATE
                                          : 0;
}

static void handle_request(tp_ctx *ctx, sup *s, const tp_msg *msg)
{
    int32_t tag = tp_msg_tag(msg);
    tp_pid none = TP_PID_NONE;
    switch (tag) {
    case TP_SUP_REQ_SYNC:
        reply_result(ctx, tp_reply_take(ctx, msg), 0, NULL);
        return;
    case TP_SUP_REQ_WHICH_CHILDREN: pack_children(ctx, s, msg); return;
    case TP_SUP_REQ_COUNT_CHILDREN: count_children(ctx, s, msg); return;
    case TP_SUP_REQ_STOP:
        start_shutdown(ctx, s, TP_REASON_SHUTDOWN, tp_reply_take(ctx, msg));
        return;
    case TP_SUP_REQ_START_CHILD: {
        if (!simple(s)) {
            reply_result(ctx, tp_reply_take(ctx, msg), TP_ESTATE, &none);
            return;
        }
        size_t len;
        const void *args = tp_msg_data(msg, &len);
        child *c = child_new(&s->tmpl.spec, args, len);
        if (!c || kids_push(s, c) != 0) {
            child_free(c);
            reply_result(ctx, tp_reply_take(ctx, msg), TP_ENOMEM, &none);
            return;
        }
        c->dynamic = true;
        job_begin(s, JOB_START_ONE);
        s->job.target = c;
        s->job.reply = tp_reply_take(ctx, msg);
        if (job_add(s, ST_START, c) != 0) {
            c->doomed = true;
            job_abandon(ctx, s, TP_ENOMEM, &none);
            return;
        }
        job_run(ctx, s);
        return;
    }
    case TP_SUP_REQ_RESTART_CHILD: {
        child *c;
        int rc = stopped_child(s, msg, &c);
        if (rc == 0) {
            job_begin(s, JOB_START_ONE);
            s->job.target = c;
            s->job.rc = 0;
            s->job.reply = tp_reply_take(ctx, msg);
            rc = job_add(s, ST_START, c);
            if (rc == 0) {
                job_run(ctx, s);
                return;
            }
            job_abandon(ctx, s, rc, &none);
            return;
        }
        reply_result(ctx, tp_reply_take(ctx, msg), rc, &none);
        return;
    }
    case TP_SUP_REQ_TERMINATE_CHILD: {
        child *c = request_child(s, msg);
        if (!c) {
            reply_result(ctx, tp_reply_take(ctx, msg), TP_ENOENT, NULL);
            return;
        }
        job_begin(s, JOB_TERMINATE);
        s->job.target = c;
        s->job.reply = tp_reply_take(ctx, msg);
        if (c->state != TP_CHILD_RUNNING) {
            cancel_restart(ctx, c);
            c->state = TP_CHILD_STOPPED;
            if (c->dynamic || c->spec.restart == TP_CHILD_TEMPORARY)
                c->doomed = true;
            job_run(ctx, s);
            return;
        }
        if (job_add(s, ST_STOP, c) != 0) {
            job_abandon(ctx, s, TP_ENOMEM, NULL);
            return;
        }
        job_run(ctx, s);
        return;
    }
    case TP_SUP_REQ_DELETE_CHILD: {
        child *c;
        int rc = stopped_child(s, msg, &c);
        if (rc == 0) {
            c->doomed = true;
            sweep(s);
        }
        reply_result(ctx, tp_reply_take(ctx, msg), rc, NULL);
        return;
    }
    default: return;
    }
}

/* ------------------------------------------------------------ behaviors */

static int sup_init(tp_ctx *ctx, sup *s)
{
    s->self = tp_self(ctx);
    s->rng = s->spec.backoff.seed ? s->spec.backoff.seed : s->self;
    if (s->name[0]) {
        int rc = tp_register(ctx, s->name);
        if (rc != 0)
            return rc;
    }
    job_begin(s, JOB_INIT);
    for (size_t i = 0; i < s->n; i++) {
        int rc = job_add(s, ST_START, s->kids[i]);
        if (rc != 0)
            return rc;
    }
    job_run(ctx, s);
    return TP_HANDLED;
}

static void exit_seen(tp_ctx *ctx, sup *s, tp_pid from, tp_reason why)
{
    child *c = kid_by_pid(s, from);
    if (c && c->state == TP_CHILD_RUNNING)
        child_exited(ctx, s, c, why);
    else if ((from == s->parent || from == TP_PID_NONE) &&
             why.kind != TP_EXIT_NORMAL)
        start_shutdown(ctx, s, why, NULL);
    /* else: a former child's late EXIT, or a normal one: ignored */
}

static void on_restart_timer(tp_ctx *ctx, sup *s, tp_timer id)
{
    for (size_t i = 0; i < s->n; i++) {
        child *c = s->kids[i];
        if (c->timer != id || c->doomed)
            continue;
        c->timer = 0;
        if (c->state != TP_CHILD_RESTARTING)
            return;
        job_begin(s, JOB_RESUME);
        s->job.target = c;
        add_start_pending(s, c);
        job_run(ctx, s);
        return;
    }
}

/* Keep an EXIT or a restart timer for when the current job is over.
 * Without memory for it the supervisor cannot keep its promises: it ends
 * (its children with it, over their links) and its parent restarts it. */
static void note_add(tp_ctx *ctx, sup *s, tp_pid pid, tp_timer timer,
                     tp_reason why)
{
    size_t tl = why.text ? strlen(why.text) + 1 : 0;
    note *n = malloc(sizeof *n + tl);
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
static void settle(tp_ctx *ctx, sup *s)
{
    s->draining = true;
    while (!s->exiting && s->job.kind == JOB_NONE && s->notes) {
        note *n = s->notes;
        s->notes = n->next;
        if (!s->notes)
            s->notes_tail = &s->notes;
        if (n->timer)
            on_restart_timer(ctx, s, n->timer);
        else
            exit_seen(ctx, s, n->pid, n->why);
        free(n);
        if (s->job.kind == JOB_NONE)
            sweep(s);
    }
    s->draining = false;
    if (s->waiting && !s->exiting && s->job.kind == JOB_NONE) {
        s->waiting = false;
        tp_become(ctx, sup_main); /* offers the deferred requests again */
    }
}

static int sup_main(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sup *s = state;
    int32_t tag = tp_msg_tag(msg);
    switch (tag) {
    case TP_TAG_START: return sup_init(ctx, s);
    case TP_TAG_EXIT: {
        tp_reason why;
        if (tp_msg_reason(msg, &why) == 0)
            exit_seen(ctx, s, tp_msg_from(msg), why);
        break;
    }
    case TAG_RESTART: on_restart_timer(ctx, s, tp_msg_ref(msg)); break;
    default:
        if (tag >= TP_SUP_REQ_START_CHILD && tag <= TP_SUP_REQ_SYNC)
            handle_request(ctx, s, msg);
        break;
    }
    if (s->job.kind == JOB_NONE)
        sweep(s);
    return TP_HANDLED;
}

/* While a step waits, a message that is not the step's: an EXIT or a
 * restart timer is noted for later, a stale DOWN, reply or deadline is
 * dropped, anything else (requests) is deferred. */
static int wait_other(tp_ctx *ctx, sup *s, const tp_msg *msg)
{
    tp_reason why;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_EXIT:
        if (tp_msg_reason(msg, &why) == 0)
            note_add(ctx, s, tp_msg_from(msg), 0, why);
        return TP_HANDLED;
    case TAG_RESTART:
        note_add(ctx, s, TP_PID_NONE, tp_msg_ref(msg), TP_REASON_NORMAL);
        return TP_HANDLED;
    case TP_TAG_DOWN:
    case TP_TAG_REPLY:
    case TP_TAG_TIMEOUT:
    case TAG_KILL: return TP_HANDLED;
    default: return TP_DEFER;
    }
}

/* While a step waits: its own messages, and nothing else. */
static int sup_wait(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    sup *s = state;
    job *j = &s->job;
    if (j->i >= j->n)
        return wait_other(ctx, s, msg); /* not reached: no step, no waiting */
    step st = j->steps[j->i];
    child *c = st.c;
    int32_t tag = tp_msg_tag(msg);
    if (st.kind == ST_STOP) {
        if (tag == TP_TAG_DOWN && tp_msg_ref(msg) == j->mon) {
            tp_reason why;
            if (tp_msg_reason(msg, &why) != 0)
                why = (tp_reason){TP_EXIT_KILLED, 0, NULL};
            stop_done(ctx, s, c, why);
            job_run(ctx, s);
            return TP_HANDLED;
        }
        if (tag == TAG_KILL && tp_msg_ref(msg) == j->deadline) {
            j->deadline = 0;
            char who[128];
            child_label(c, c->pid, who, sizeof who);
            fprintf(stderr,
                    "troupe: supervisor %" PRIu64 ": %s did not stop within "
                    "its shutdown time of %d ms; killed\n",
                    s->self, who, shutdown_of(c));
            report(ctx, s, TP_SUP_EV_KILLED, c, c->pid,
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
            job_run(ctx, s);
        } else {
            j->call_failed = true; /* its EXIT tells why */
        }
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
        job_run(ctx, s);
        return TP_HANDLED;
    }
    return wait_other(ctx, s, msg);
}

/* ------------------------------------------------------------------ API */

void tp_sup_spec_init(tp_sup_spec *spec)
{
    if (!spec)
        return;
    memset(spec, 0, sizeof *spec);
    spec->strategy = TP_SUP_ONE_FOR_ONE;
    spec->intensity = 1;
    spec->period_ms = 5000;
}

static int spec_check(const tp_sup_spec *spec)
{
    if (!spec || spec->period_ms == 0 ||
        (unsigned)spec->strategy > TP_SUP_SIMPLE_ONE_FOR_ONE ||
        (spec->n_children && !spec->children) ||
        (spec->name && (!spec->name[0] || strlen(spec->name) > 63)) ||
        spec->backoff.jitter_pct > 100)
        return TP_EINVAL;
    if (spec->strategy == TP_SUP_SIMPLE_ONE_FOR_ONE && spec->n_children != 1)
        return TP_EINVAL;
    for (size_t i = 0; i < spec->n_children; i++) {
        const tp_child_spec *c = &spec->children[i];
        if (!c->start || (unsigned)c->restart > TP_CHILD_TEMPORARY ||
            (unsigned)c->kind > TP_CHILD_SUPERVISOR ||
            c->shutdown_ms < TP_CHILD_INFINITY)
            return TP_EINVAL;
        if (spec->strategy == TP_SUP_SIMPLE_ONE_FOR_ONE)
            continue;
        if (!c->id || !c->id[0] || strlen(c->id) > TP_CHILD_ID_MAX)
            return TP_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (strcmp(spec->children[k].id, c->id) == 0)
                return TP_EINVAL;
    }
    return 0;
}

/* A supervisor's state from spec; NULL with *rc set on error. */
static sup *sup_new(const tp_sup_spec *spec, int *rc)
{
    *rc = spec_check(spec);
    if (*rc)
        return NULL;
    sup *s = calloc(1, sizeof *s);
    if (!s) {
        *rc = TP_ENOMEM;
        return NULL;
    }
    s->spec = *spec;
    s->spec.children = NULL;
    s->spec.n_children = 0;
    s->spec.name = NULL;
    if (spec->name)
        snprintf(s->name, sizeof s->name, "%s", spec->name);
    if (spec->strategy == TP_SUP_SIMPLE_ONE_FOR_ONE) {
        s->tmpl.spec = spec->children[0];
        s->tmpl.spec.id = "";
        return s;
    }
    for (size_t i = 0; i < spec->n_children; i++) {
        child *c = child_new(&spec->children[i], NULL, 0);
        if (!c || kids_push(s, c) != 0) {
            child_free(c);
            sup_free(s);
            *rc = TP_ENOMEM;
            return NULL;
        }
    }
    return s;
}

static tp_spawn_opts sup_opts(const tp_sup_spec *spec, unsigned flags)
{
    tp_spawn_opts o = {.mailbox_capacity = spec->mailbox_capacity
                                               ? spec->mailbox_capacity
                                               : TP_MAILBOX_UNBOUNDED,
                       .flags = flags | TP_SPAWN_TRAP_EXIT,
                       .state_free = sup_free};
    return o;
}

int tp_sup_start_link(tp_ctx *ctx, const tp_sup_spec *spec, tp_pid *pid_out)
{
    if (!ctx)
        return TP_ESTATE;
    int rc;
    sup *s = sup_new(spec, &rc);
    if (!s)
        return rc;
    s->parent = tp_self(ctx);
    tp_spawn_opts o = sup_opts(spec, TP_SPAWN_LINK);
    rc = tp_spawn(ctx, sup_main, s, &o, pid_out);
    if (rc != 0)
        sup_free(s);
    return rc;
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
    if (!rt)
        return TP_EINVAL;
    int rc;
    sup *s = sup_new(spec, &rc);
    if (!s)
        return rc;
    tp_spawn_opts o = sup_opts(spec, 0);
    rc = tp_run(rt, sup_main, s, &o);
    if (rc < 0)
        sup_free(s); /* not run: the state is still ours */
    return rc;
}

/* ------------------------------------------------------- request helpers */

static int call_fmt(tp_ctx *ctx, tp_pid to, int32_t tag, int timeout_ms,
                    tp_ref *ref_out, const char *fmt, ...)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        rc = tp_vpackf(&buf, &len, fmt, ap);
        va_end(ap);
        if (rc)
            return rc;
    }
    rc = tp_call(ctx, to, tag, buf, len, timeout_ms, ref_out);
    tp_free(buf);
    return rc;
}

static int check_id(const char *id)
{
    return id && id[0] && strlen(id) <= TP_CHILD_ID_MAX ? 0 : TP_EINVAL;
}

int tp_sup_start_child(tp_ctx *ctx, tp_pid to, const void *args,
                       size_t args_len, int timeout_ms, tp_ref *ref_out)
{
    return tp_call(ctx, to, TP_SUP_REQ_START_CHILD, args, args_len, timeout_ms,
                   ref_out);
}

int tp_sup_terminate_child(tp_ctx *ctx, tp_pid to, const char *id,
                           int timeout_ms, tp_ref *ref_out)
{
    if (check_id(id))
        return TP_EINVAL;
    return call_fmt(ctx, to, TP_SUP_REQ_TERMINATE_CHILD, timeout_ms, ref_out,
                    "s", id);
}

int tp_sup_terminate_pid(tp_ctx *ctx, tp_pid to, tp_pid pid, int timeout_ms,
                         tp_ref *ref_out)
{
    if (pid == TP_PID_NONE)
        return TP_EINVAL;
    return call_fmt(ctx, to, TP_SUP_REQ_TERMINATE_CHILD, timeout_ms, ref_out,
                    "p", pid);
}

int tp_sup_restart_child(tp_ctx *ctx, tp_pid to, const char *id, int timeout_ms,
                         tp_ref *ref_out)
{
    if (check_id(id))
        return TP_EINVAL;
    return call_fmt(ctx, to, TP_SUP_REQ_RESTART_CHILD, timeout_ms, ref_out, "s",
                    id);
}

int tp_sup_delete_child(tp_ctx *ctx, tp_pid to, const char *id, int timeout_ms,
                        tp_ref *ref_out)
{
    if (check_id(id))
        return TP_EINVAL;
    return call_fmt(ctx, to, TP_SUP_REQ_DELETE_CHILD, timeout_ms, ref_out, "s",
                    id);
}

int tp_sup_which_children(tp_ctx *ctx, tp_pid to, int timeout_ms,
                          tp_ref *ref_out)
{
    return call_fmt(ctx, to, TP_SUP_REQ_WHICH_CHILDREN, timeout_ms, ref_out,
                    NULL);
}

int tp_sup_count_children(tp_ctx *ctx, tp_pid to, int timeout_ms,
                          tp_ref *ref_out)
{
    return call_fmt(ctx, to, TP_SUP_REQ_COUNT_CHILDREN, timeout_ms, ref_out,
                    NULL);
}

int tp_sup_stop(tp_ctx *ctx, tp_pid to, int timeout_ms, tp_ref *ref_out)
{
    return call_fmt(ctx, to, TP_SUP_REQ_STOP, timeout_ms, ref_out, NULL);
}

/* -------------------------------------------------------- reply decoding */

/* Unpack a reply's payload; the reply's own status, or 0. */
static int reply_open(const tp_msg *reply, msgpack_unpacked *u)
{
    if (!reply)
        return TP_EINVAL;
    if (tp_msg_tag(reply) != TP_TAG_REPLY)
        return TP_EINVAL;
    int status = tp_msg_status(reply);
    if (status)
        return status;
    size_t len;
    const void *data = tp_msg_data(reply, &len);
    msgpack_unpacked_init(u);
    size_t off = 0;
    if (!data ||
        msgpack_unpack_next(u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != len || u->data.type != MSGPACK_OBJECT_ARRAY ||
        u->data.via.array.size < 1) {
        msgpack_unpacked_destroy(u);
        return TP_EPROTO;
    }
    return 0;
}

static bool obj_int(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return false;
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

static bool obj_u64(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

/* The rc at the head of an open reply, or TP_EPROTO. */
static int reply_rc(const msgpack_unpacked *u)
{
    int64_t rc;
    if (!obj_int(&u->data.via.array.ptr[0], &rc) || rc > 1 || rc < INT32_MIN)
        return TP_EPROTO;
    return (int)rc;
}

int tp_sup_reply_result(const tp_msg *reply, tp_pid *pid_out)
{
    msgpack_unpacked u;
    int rc = reply_open(reply, &u);
    if (rc)
        return rc;
    rc = reply_rc(&u);
    uint64_t pid = 0;
    if (rc != TP_EPROTO && u.data.via.array.size >= 2 &&
        !obj_u64(&u.data.via.array.ptr[1], &pid))
        rc = TP_EPROTO;
    if (rc != TP_EPROTO && pid_out)
        *pid_out = pid;
    msgpack_unpacked_destroy(&u);
    return rc;
}

int tp_sup_reply_counts(const tp_msg *reply, tp_sup_counts *out)
{
    msgpack_unpacked u;
    int rc = reply_open(reply, &u);
    if (rc)
        return rc;
    rc = reply_rc(&u);
    if (rc == 0) {
        msgpack_object_array *a = &u.data.via.array;
        tp_sup_counts c;
        if (a->size != 5 || !obj_u64(&a->ptr[1], &c.specs) ||
            !obj_u64(&a->ptr[2], &c.active) ||
            !obj_u64(&a->ptr[3], &c.supervisors) ||
            !obj_u64(&a->ptr[4], &c.workers))
            rc = TP_EPROTO;
        else if (out)
            *out = c;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int tp_sup_reply_children(const tp_msg *reply, tp_child_info *out, size_t cap,
                          size_t *n_out)
{
    if (cap && !out)
        return TP_EINVAL;
    msgpack_unpacked u;
    int rc = reply_open(reply, &u);
    if (rc)
        return rc;
    rc = reply_rc(&u);
    if (rc == 0) {
        msgpack_object_array *a = &u.data.via.array;
        if (a->size != 2 || a->ptr[1].type != MSGPACK_OBJECT_ARRAY)
            rc = TP_EPROTO;
        /* check everything before writing anything */
        msgpack_object_array *l = rc ? NULL : &a->ptr[1].via.array;
        for (uint32_t i = 0; l && i < l->size && rc == 0; i++) {
            msgpack_object *e = &l->ptr[i];
            int64_t kind, st;
            uint64_t pid;
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4 ||
                e->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
                e->via.array.ptr[0].via.str.size > TP_CHILD_ID_MAX ||
                !obj_u64(&e->via.array.ptr[1], &pid) ||
                !obj_int(&e->via.array.ptr[2], &kind) ||
                !obj_int(&e->via.array.ptr[3], &st))
                rc = TP_EPROTO;
        }
        for (uint32_t i = 0; l && rc == 0 && i < l->size && i < cap; i++) {
            msgpack_object *f = l->ptr[i].via.array.ptr;
            int64_t kind = 0, st = 0;
            if (f[0].via.str.size)
                memcpy(out[i].id, f[0].via.str.ptr, f[0].via.str.size);
            out[i].id[f[0].via.str.size] = '\0';
            out[i].pid = f[1].via.u64;
            obj_int(&f[2], &kind);
            obj_int(&f[3], &st);
            out[i].kind = (tp_child_kind)kind;
            out[i].state = (tp_child_state)st;
        }
        if (rc == 0 && n_out)
            *n_out = l->size;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}
