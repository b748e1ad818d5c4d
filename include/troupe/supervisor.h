/** @file
 * troupe supervisors: Erlang/OTP supervision trees on the public actor API.
 *
 * A supervisor is an ordinary actor that traps exits and links its
 * children. It starts them in spec order, watches their exits, restarts
 * them by its strategy and restart intensity (optionally with exponential
 * backoff), and stops them in reverse start order, each given its shutdown
 * time before it is killed. Supervisors nest into trees.
 *
 * Conventions as in troupe.h: functions return 0 or a negative TP_E*
 * code; functions taking a tp_ctx may only be called from inside a
 * behavior with that behavior's ctx.
 */
#ifndef TROUPE_SUPERVISOR_H
#define TROUPE_SUPERVISOR_H

#include "../troupe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ child specs */

/** When a child is restarted after it ends (OTP restart types). */
typedef enum tp_child_restart {
    TP_CHILD_PERMANENT = 0, /**< always restarted */
    TP_CHILD_TRANSIENT,     /**< restarted unless it ended normal or shutdown */
    TP_CHILD_TEMPORARY      /**< never restarted; forgotten when it ends */
} tp_child_restart;

/** What a child is. A supervisor child's start is complete only once its
 * own children have started (see tp_child_spec.kind). */
typedef enum tp_child_kind {
    TP_CHILD_WORKER = 0,
    TP_CHILD_SUPERVISOR
} tp_child_kind;

/** tp_child_spec.shutdown_ms: 0 picks the default (5000 ms for a worker,
 * infinity for a supervisor). */
#define TP_CHILD_SHUTDOWN_DEFAULT 0
/** tp_child_spec.shutdown_ms: kill at once, no shutdown signal first. */
#define TP_CHILD_BRUTAL_KILL (-1)
/** tp_child_spec.shutdown_ms: wait for the child however long it takes
 * (meant for supervisor children, which bound their own shutdown). */
#define TP_CHILD_INFINITY (-2)

/** Longest child id kept, in bytes (without the terminating NUL). */
#define TP_CHILD_ID_MAX 63

/** Returned (positive) by a start function that decides not to start a
 * child (OTP's `ignore`): the child stays in the supervisor as not
 * running (a simple_one_for_one child is not added at all). */
#define TP_CHILD_IGNORE 1

/**
 * A start function: spawn the child and return its pid in *pid_out.
 *
 * Called inside the supervisor's behavior, with the supervisor's ctx, so
 * the child is spawned by the supervisor. Spawn it with TP_SPAWN_LINK (the
 * supervisor links the returned pid anyway; a child that is already dead
 * then counts as a crash). arg is tp_child_spec.arg. args/args_len are the
 * msgpack arguments given to tp_sup_start_child for a simple_one_for_one
 * child (the supervisor keeps a copy and passes the same bytes on every
 * restart); NULL and 0 for static children. The function allocates the
 * child's state itself on every call (a restart is a new actor).
 *
 * Returns 0 with *pid_out set, TP_CHILD_IGNORE, or a negative TP_E* code
 * (a failed start, whose code the supervisor reports).
 */
typedef int (*tp_child_start_fn)(tp_ctx *ctx, void *arg, const void *args,
                                 size_t args_len, tp_pid *pid_out);

/** One child of a supervisor. Zero-initialise, then set id and start:
 * the zero values are a permanent worker with the default shutdown. */
typedef struct tp_child_spec {
    const char *id;           /**< unique within the supervisor, at most
                                  TP_CHILD_ID_MAX bytes; copied. May be NULL
                                  for a simple_one_for_one template. */
    tp_child_start_fn start;  /**< required */
    void *arg;                /**< passed to start; not owned, must outlive
                                  the supervisor */
    tp_child_restart restart; /**< when it is restarted (zero: permanent) */
    int shutdown_ms;          /**< > 0: ms between the shutdown signal and
                                  the kill; or TP_CHILD_SHUTDOWN_DEFAULT,
                                  TP_CHILD_BRUTAL_KILL, TP_CHILD_INFINITY */
    tp_child_kind kind;       /**< worker (zero) or supervisor */
} tp_child_spec;

/* ------------------------------------------------------- supervisor specs */

/** Restart strategies (OTP). */
typedef enum tp_sup_strategy {
    TP_SUP_ONE_FOR_ONE = 0,   /**< restart the child that ended */
    TP_SUP_ONE_FOR_ALL,       /**< stop all others, restart all */
    TP_SUP_REST_FOR_ONE,      /**< stop the ones started after it, restart
                                   it and them */
    TP_SUP_SIMPLE_ONE_FOR_ONE /**< one template child spec; children are
                                   added with tp_sup_start_child and
                                   restarted as one_for_one */
} tp_sup_strategy;

/** Exponential backoff between restarts of a child (off when min_ms is 0).
 * The n-th consecutive restart of a child waits min(max_ms, min_ms * 2^n)
 * ms less a random part of up to jitter_pct percent of it, but never less
 * than min_ms. The count resets when the child ended after having been
 * up for at least reset_ms. */
typedef struct tp_sup_backoff {
    unsigned min_ms;     /**< first delay; 0 = no backoff (restart at once) */
    unsigned max_ms;     /**< largest delay (raised to min_ms if lower) */
    unsigned jitter_pct; /**< 0..100 */
    unsigned reset_ms;   /**< uptime that resets the count (0: 10 * max_ms) */
    uint64_t seed;       /**< jitter PRNG seed; 0 = from the supervisor pid */
} tp_sup_backoff;

/** What a supervisor reports to tp_sup_spec.report. */
typedef enum tp_sup_event_kind {
    TP_SUP_EV_STARTED = 0,  /**< child started: id, pid */
    TP_SUP_EV_START_FAILED, /**< start returned an error (code) or the
                                 child died while starting (reason) */
    TP_SUP_EV_EXITED,       /**< child ended by itself: pid, reason */
    TP_SUP_EV_RESTARTING,   /**< a restart of the child (and its group)
                                 is scheduled in delay_ms: with backoff,
                                 or a retry after a failed start (0 ms
                                 without backoff); immediate restarts are
                                 not reported, only their STARTED */
    TP_SUP_EV_STOPPED,      /**< child stopped by the supervisor: pid,
                                 reason it ended with */
    TP_SUP_EV_KILLED,       /**< child missed its shutdown deadline and was
                                 killed; delay_ms is the time it was given */
    TP_SUP_EV_INTENSITY     /**< more restarts than intensity in period:
                                 the supervisor shuts down */
} tp_sup_event_kind;

/** One report. Pointers are valid during the report call only. */
typedef struct tp_sup_event {
    tp_sup_event_kind kind; /**< what happened */
    tp_pid sup;             /**< the supervisor */
    const char *id;    /**< child id ("" for simple_one_for_one children) */
    tp_pid pid;        /**< the child's pid (0 when not known) */
    tp_reason reason;  /**< EXITED, STOPPED, START_FAILED */
    int code;          /**< START_FAILED: the TP_E* code */
    unsigned delay_ms; /**< RESTARTING: backoff delay; KILLED: time given */
    const void *args;  /**< simple_one_for_one start arguments, or NULL */
    size_t args_len;   /**< length of args */
} tp_sup_event;

/** A report callback: called inside the supervisor's behavior with its
 * ctx. It may send messages (tp_send) but must not block, end, or change
 * the supervisor (tp_exit, tp_become, tp_trap_exit, tp_link...). */
typedef void (*tp_sup_report_fn)(tp_ctx *ctx, void *arg,
                                 const tp_sup_event *ev);

/** A supervisor. Fill with tp_sup_spec_init, then set children. */
typedef struct tp_sup_spec {
    tp_sup_strategy strategy; /**< how children are restarted */
    unsigned intensity;       /**< max restarts in period_ms (default 1) ... */
    unsigned period_ms;       /**< ... (default 5000, must be > 0) */
    const tp_child_spec *children; /**< copied; for simple_one_for_one
                                        exactly one template */
    size_t n_children;             /**< entries in children */
    tp_sup_backoff backoff;        /**< zero: off */
    const char *name; /**< register the supervisor under it; may be NULL */
    tp_sup_report_fn report; /**< may be NULL */
    void *report_arg;        /**< passed to report */
    size_t mailbox_capacity; /**< 0: unbounded (a supervisor must
                                        never slow its children's exits) */
} tp_sup_spec;

/** Fill spec with the defaults: one_for_one, intensity 1 in 5000 ms, no
 * children, no backoff, no name, no report. */
TP_API void tp_sup_spec_init(tp_sup_spec *spec);

/** Spawn a supervisor linked to the calling actor (its parent). It traps
 * exits; an exit signal with a non-normal reason from its parent (or from
 * outside the runtime: tp_runtime_exit_signal, SIGINT/SIGTERM) makes it
 * stop its children in reverse start order and end with that reason; a
 * normal one is ignored. Its
 * children are started in spec order when it first runs; if child k
 * fails to start, children k-1..1 are stopped (in that order) and the
 * supervisor ends with reason TP_EXIT_ERROR and the start's code, which
 * the parent sees as its exit signal.
 *
 * The spec (children, ids, name) is copied; each child's arg is not.
 * Returns TP_EINVAL for a bad spec (no start function, duplicate or too
 * long id, simple_one_for_one without exactly one child, period_ms 0),
 * TP_ENOMEM, or tp_spawn's error; then nothing was spawned. */
TP_API int tp_sup_start_link(tp_ctx *ctx, const tp_sup_spec *spec,
                             tp_pid *pid_out);

/** A tp_child_start_fn that starts a supervisor: arg is a const
 * tp_sup_spec * (which must outlive the parent). Use it with kind
 * TP_CHILD_SUPERVISOR to nest supervisors. */
TP_API int tp_sup_child_start(tp_ctx *ctx, void *arg, const void *args,
                              size_t args_len, tp_pid *pid_out);

/** Run a supervisor as the root actor of rt (tp_run) and return tp_run's
 * status when the whole tree has ended: 0 if the supervisor ended normal
 * or shutdown (after tp_runtime_handle_signals, SIGINT/SIGTERM stop the
 * tree in order and this returns 0; its restart intensity exceeded also
 * ends it with shutdown: tp_runtime_root_reason tells), 1 otherwise (a
 * child failed to start: reason error with the start's code). Returns
 * TP_EINVAL or TP_ENOMEM for a bad spec, or tp_run's error. */
TP_API int tp_sup_run(tp_runtime *rt, const tp_sup_spec *spec);

/* ------------------------------------------------------------- requests */

/*
 * A running supervisor answers requests sent with tp_call (the functions
 * below build them). The reply comes back as a TP_TAG_REPLY message with
 * tp_msg_ref == *ref_out. A reply's tp_msg_status is 0, or the call's own
 * error (TP_ETIMEDOUT, TP_ENOPROC: the supervisor is gone); with status 0
 * the payload is a msgpack array whose first element is the result code
 * rc (0 or a negative TP_E*):
 *
 *   start_child, restart_child   [rc, pid]  (pid 0 when ignored or failed)
 *   terminate_child, delete_child, stop            [rc]
 *   which_children  [rc, [[id, pid, kind, state], ...]] in start order;
 *                   id a string ("" for simple_one_for_one children), pid
 *                   0 when not running, kind a tp_child_kind, state a
 *                   tp_child_state
 *   count_children  [rc, specs, active, supervisors, workers]
 *
 * The tp_sup_reply_* functions decode them. A supervisor busy starting or
 * stopping children answers when done. The request tags are
 * TP_SUP_TAG_BASE and up; other actors never see them.
 */
/** The first supervisor request tag (TP_SUP_REQ_*); tags from here up
 * belong to troupe's libraries. */
#define TP_SUP_TAG_BASE 0x7fff0000

enum {
    TP_SUP_REQ_START_CHILD = TP_SUP_TAG_BASE,
    TP_SUP_REQ_RESTART_CHILD,
    TP_SUP_REQ_TERMINATE_CHILD,
    TP_SUP_REQ_DELETE_CHILD,
    TP_SUP_REQ_WHICH_CHILDREN,
    TP_SUP_REQ_COUNT_CHILDREN,
    TP_SUP_REQ_STOP,
    TP_SUP_REQ_SYNC /**< answered [0] once the supervisor's children have
                         started; a parent supervisor waits for it */
};

/** A child's state in which_children. */
typedef enum tp_child_state {
    TP_CHILD_RUNNING = 0,
    TP_CHILD_RESTARTING, /**< waiting for its (backoff) restart */
    TP_CHILD_STOPPED     /**< not running: terminated, ignored, or a
                              transient child that ended normally */
} tp_child_state;

/** simple_one_for_one only: start a new child from the template with
 * args (one msgpack object, or NULL/0; copied, kept for restarts). Reply
 * [rc, pid]: rc the start's error, or TP_ESTATE for other strategies. */
TP_API int tp_sup_start_child(tp_ctx *ctx, tp_pid sup, const void *args,
                              size_t args_len, int timeout_ms, tp_ref *ref_out);

/** Stop the child with id (its shutdown as at supervisor shutdown); it is
 * not restarted (a temporary child is also deleted). Reply [rc]: 0 (also
 * when it was not running), TP_ENOENT. For simple_one_for_one use
 * tp_sup_terminate_pid. */
TP_API int tp_sup_terminate_child(tp_ctx *ctx, tp_pid sup, const char *id,
                                  int timeout_ms, tp_ref *ref_out);

/** Stop the child with pid and delete it (simple_one_for_one; for other
 * strategies as tp_sup_terminate_child). Reply [rc]: 0, TP_ENOENT. */
TP_API int tp_sup_terminate_pid(tp_ctx *ctx, tp_pid sup, tp_pid child,
                                int timeout_ms, tp_ref *ref_out);

/** Start a stopped child again. Reply [rc, pid]: 0, TP_ENOENT,
 * TP_ESTATE (running or restarting, or simple_one_for_one), or the
 * start's error. */
TP_API int tp_sup_restart_child(tp_ctx *ctx, tp_pid sup, const char *id,
                                int timeout_ms, tp_ref *ref_out);

/** Forget a stopped child's spec. Reply [rc]: 0, TP_ENOENT, TP_ESTATE
 * (running or restarting, or simple_one_for_one). */
TP_API int tp_sup_delete_child(tp_ctx *ctx, tp_pid sup, const char *id,
                               int timeout_ms, tp_ref *ref_out);

/** List the children. Reply [rc, [[id, pid, kind, state], ...]]. */
TP_API int tp_sup_which_children(tp_ctx *ctx, tp_pid sup, int timeout_ms,
                                 tp_ref *ref_out);

/** Count the children. Reply [rc, specs, active, supervisors, workers]. */
TP_API int tp_sup_count_children(tp_ctx *ctx, tp_pid sup, int timeout_ms,
                                 tp_ref *ref_out);

/** Stop the supervisor: its children stop in reverse start order, then it
 * replies [0] and ends with reason shutdown. (An exit signal with a
 * non-normal reason from its parent, or from outside the runtime, does
 * the same without the reply.) */
TP_API int tp_sup_stop(tp_ctx *ctx, tp_pid sup, int timeout_ms,
                       tp_ref *ref_out);

/* ------------------------------------------------------ reply decoding */

/** Decode a start/restart/terminate/delete/stop reply. Returns the call's
 * status if not 0, else rc (TP_EPROTO for a payload not of this shape);
 * *pid_out gets the pid when the reply has one (else 0). */
TP_API int tp_sup_reply_result(const tp_msg *reply, tp_pid *pid_out);

/** count_children's answer (OTP's count_children). */
typedef struct tp_sup_counts {
    uint64_t specs;       /**< children (specs); simple_one_for_one: 1 */
    uint64_t active;      /**< running */
    uint64_t supervisors; /**< of kind supervisor */
    uint64_t workers;     /**< of kind worker */
} tp_sup_counts;

/** Decode a count_children reply into *out. Returns the call's status or
 * rc if not 0, TP_EPROTO for a malformed payload; *out is then untouched. */
TP_API int tp_sup_reply_counts(const tp_msg *reply, tp_sup_counts *out);

/** One entry of which_children. */
typedef struct tp_child_info {
    char id[TP_CHILD_ID_MAX + 1]; /**< NUL-terminated copy */
    tp_pid pid;                   /**< 0 when not running */
    tp_child_kind kind;           /**< worker or supervisor */
    tp_child_state state;         /**< running, restarting or stopped */
} tp_child_info;

/** Decode a which_children reply: up to cap entries into out (which may
 * be NULL when cap is 0), the total number into *n_out. Returns the
 * call's status or rc if not 0, TP_EPROTO for a malformed payload. */
TP_API int tp_sup_reply_children(const tp_msg *reply, tp_child_info *out,
                                 size_t cap, size_t *n_out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_SUPERVISOR_H */
