/*
 * What the parts of the supervisor share (see the map at the top of
 * supervisor/supervisor.c): its state, the child table, the job, and the
 * functions one part calls in another. Internal: supervisor/ only.
 */
#ifndef TPI_SUP_INT_H
#define TPI_SUP_INT_H

#include "troupe/supervisor.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Internal messages to self (timers); only the supervisor sees them. */
enum {
    /* a stopping child's deadline */
    TPI_SUP_TAG_KILL = TP_SUP_TAG_BASE + 0x100,
    /* a (backoff) restart is due */
    TPI_SUP_TAG_RESTART
};

typedef struct tpi_sup_child {
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
} tpi_sup_child;

typedef enum { TPI_SUP_STOP, TPI_SUP_START } tpi_sup_step_kind;

typedef struct tpi_sup_step {
    tpi_sup_step_kind kind;
    tpi_sup_child *c;
} tpi_sup_step;

typedef enum {
    TPI_SUP_JOB_NONE,
    TPI_SUP_JOB_INIT,      /* start all in order; on failure roll back, exit */
    TPI_SUP_JOB_RESTART,   /* stop a group, then start it (now or later) */
    TPI_SUP_JOB_RESUME,    /* a delayed restart is due: start the pending */
    TPI_SUP_JOB_SHUTDOWN,  /* stop all in reverse, then exit */
    TPI_SUP_JOB_TERMINATE, /* terminate_child */
    TPI_SUP_JOB_START_ONE  /* restart_child, start_child */
} tpi_sup_job_kind;

typedef struct tpi_sup_job {
    tpi_sup_job_kind kind;
    tpi_sup_step *steps;
    size_t n, cap, i;
    /* the step in progress, when it waits */
    tp_ref mon;        /* STOP: monitor of the child */
    tp_timer deadline; /* STOP: kill timer */
    tp_ref call;       /* START of a supervisor: its SYNC request */
    /* what the job is about */
    /* RESTART: the child that ended; START_ONE, TERMINATE: the child */
    tpi_sup_child *target;
    unsigned delay_ms; /* RESTART: delay before starting the group */
    bool failed;       /* INIT: a start failed, rolling back */
    bool then_start;   /* RESTART: START steps not yet added */
    tp_reason exit;    /* INIT (failed), SHUTDOWN: the reason to end */
    char exit_text[TP_REASON_TEXT_MAX + 1];
    tp_reply_handle *reply;
    int rc; /* START_ONE: the start's result */
} tpi_sup_job;

/* An EXIT or a due restart timer that arrived while a step waited. They
 * are kept here rather than deferred with TP_DEFER because a deferred
 * system message (EXIT, DOWN, reply, timer) is not offered again by the
 * runtime (see the issue 4 report); requests are deferred. */
typedef struct tpi_sup_note {
    struct tpi_sup_note *next;
    tp_pid pid;     /* EXIT: from */
    tp_timer timer; /* restart timer, or 0 for an EXIT */
    tp_reason why;
    char text[];
} tpi_sup_note;

typedef struct tpi_sup {
    tp_sup_spec spec; /* children/name pointers not used after the copy */
    char name[64];
    tpi_sup_child **kids; /* in start order */
    size_t n, cap;
    tp_child_spec tmpl; /* simple_one_for_one template */
    tp_pid self;
    tp_pid parent; /* the spawner; TP_PID_NONE for the root */
    uint64_t rng;
    uint64_t *rs; /* restart times (ms) within the period, oldest first */
    size_t rs_off, rs_len, rs_cap;
    bool waiting;                      /* running sup_wait (job.c) */
    bool draining;                     /* in tpi_sup_settle() */
    bool exiting;                      /* tp_exit called */
    tpi_sup_note *notes, **notes_tail; /* EXITs and restart timers that
                                          came while a step waited */
    tpi_sup_job job;
} tpi_sup;

/* A child that is forgotten once it is stopped: a simple_one_for_one
 * child, or a temporary one. */
static inline bool tpi_sup_one_shot(const tpi_sup_child *c)
{
    return c->dynamic || c->spec.restart == TP_CHILD_TEMPORARY;
}

/* ------------------------------------------- child.c: specs, child table */

/* A supervisor's state from spec (checked, copied); NULL with *rc set on
 * error. Freed with tpi_sup_free (the actor's state_free). */
tpi_sup *tpi_sup_new(const tp_sup_spec *spec, int *rc);
void tpi_sup_free(void *state);
/* A new stopped child from spec (and a copy of args) at the end of the
 * table; NULL without memory. */
tpi_sup_child *tpi_sup_child_add(tpi_sup *s, const tp_child_spec *spec,
                                 const void *args, size_t args_len);
/* c's place in the table (s->n if it is not there). */
size_t tpi_sup_kid_index(const tpi_sup *s, const tpi_sup_child *c);
/* The child, not doomed, with that pid or id; NULL if none. */
tpi_sup_child *tpi_sup_kid_by_pid(const tpi_sup *s, tp_pid pid);
tpi_sup_child *tpi_sup_kid_by_id(const tpi_sup *s, const char *id, size_t len);
/* c is not running and not restarting: a one-shot child is forgotten. */
void tpi_sup_child_stopped(tpi_sup_child *c);
/* Delete the doomed children (only when no job holds pointers to them). */
void tpi_sup_sweep(tpi_sup *s);

/* ------------------------------------------------ job.c: jobs and steps */

/* Begin a job of kind, with no steps (the step array is kept). */
void tpi_sup_job_begin(tpi_sup *s, tpi_sup_job_kind kind);
/* Add a step to the job: 0 or TP_ENOMEM. */
int tpi_sup_job_add(tpi_sup *s, tpi_sup_step_kind kind, tpi_sup_child *c);
/* Drop the steps not yet begun. */
void tpi_sup_job_truncate(tpi_sup *s);
/* Run the job's steps until one waits (the supervisor then waits too) or
 * the job is over (then what came meanwhile is taken up). */
void tpi_sup_job_run(tp_ctx *ctx, tpi_sup *s);
/* Add STOP steps for the running children kids[from, to), last first. */
void tpi_sup_stop_range(tp_ctx *ctx, tpi_sup *s, size_t from, size_t to);
/* Turn the current job into a shutdown that ends the supervisor with why. */
void tpi_sup_become_shutdown(tp_ctx *ctx, tpi_sup *s, tp_reason why);
/* Stop all children and end with why; answer reply (may be NULL) first. */
void tpi_sup_start_shutdown(tp_ctx *ctx, tpi_sup *s, tp_reason why,
                            tp_reply_handle *reply);

/* ---------------------------------------------- restart.c: restart policy */

/* Cancel c's pending restart timer, if any. */
void tpi_sup_cancel_restart(tp_ctx *ctx, tpi_sup_child *c);
/* c, waiting to restart, waits no more (terminate_child): the members of
 * its group that wait on its timer keep it. */
void tpi_sup_drop_restart(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c);
/* The running child c ended with why: forget it, restart it (and its
 * group) or shut down, by its restart type and the intensity. */
void tpi_sup_child_exited(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c,
                          tp_reason why);
/* The restart timer id is due: start the children pending on it. */
void tpi_sup_restart_due(tp_ctx *ctx, tpi_sup *s, tp_timer id);
/* Add START steps for the children waiting to restart after c was
 * restarted: c alone (one_for_one), or c's group. */
void tpi_sup_add_start_pending(tpi_sup *s, tpi_sup_child *c);
/* Schedule the next restart attempt of c (already RESTARTING). */
void tpi_sup_schedule_restart(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c,
                              unsigned delay);
/* A start failed in a restart (or resume): count it; retry later, or shut
 * down when the intensity is exceeded. */
void tpi_sup_restart_failed(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c);

/* ---------------------------------------------------- request.c: requests */

/* Handle a TP_SUP_REQ_* request (the supervisor is not waiting). */
void tpi_sup_handle_request(tp_ctx *ctx, tpi_sup *s, const tp_msg *msg);
/* Answer a request (r may be NULL): [rc] or, with pid, [rc, pid]. */
void tpi_sup_reply(tp_ctx *ctx, tp_reply_handle *r, int rc, const tp_pid *pid);

/* ----------------------------------------- supervisor.c: the main behavior */

/* Tell the spec's report function (if any) about an event of c. */
void tpi_sup_report(tp_ctx *ctx, tpi_sup *s, tp_sup_event_kind kind,
                    const tpi_sup_child *c, tp_pid pid, tp_reason why, int code,
                    unsigned delay_ms);
/* Log a line about c to stderr: "troupe: supervisor <pid>: child "<id>"
 * (pid <pid>)" then fmt. */
void tpi_sup_warn(const tpi_sup *s, const tpi_sup_child *c, const char *fmt,
                  ...) __attribute__((format(printf, 3, 4)));
/* Keep an EXIT or a restart timer that came while a step waited. */
void tpi_sup_note_add(tp_ctx *ctx, tpi_sup *s, tp_pid pid, tp_timer timer,
                      tp_reason why);
/* A job is over: act on the notes, then return to the main behavior. */
void tpi_sup_settle(tp_ctx *ctx, tpi_sup *s);

#endif
