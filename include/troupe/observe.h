/** @file
 * troupe observability: counters per actor and per runtime, a text dump of
 * the supervision tree (on demand and on a signal), and a Prometheus text
 * endpoint served with libevent's evhttp on a loopback port.
 *
 * Everything here is off by default and costs nothing until asked for:
 * per-actor counters are kept only for observed actors (one predictable
 * branch per message and per turn for the others), handler time only when
 * TP_OBSERVE_TIME is on (two clock reads per message), and the endpoint
 * only exists after tp_runtime_serve_metrics.
 *
 * Conventions as in troupe.h: functions return 0 or a negative TP_E* code.
 */
#ifndef TROUPE_OBSERVE_H
#define TROUPE_OBSERVE_H

#include "../troupe.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/** tp_spawn_opts.flags: keep per-actor counters (and handler time) for
 * this actor, whatever tp_runtime_observe says. */
#define TP_SPAWN_OBSERVE 4u

/** tp_runtime_observe flags. */
enum {
    /** Every actor spawned from now on keeps its counters: messages
     * handled and deferred, mailbox high-water mark. */
    TP_OBSERVE_COUNTERS = 1u << 0,
    /** Observed actors also sum the time spent in their behavior
     * (CLOCK_MONOTONIC, two reads per message). Implies counters. */
    TP_OBSERVE_TIME = 1u << 1
};

/**
 * Choose what every actor spawned from now on observes (0: nothing, the
 * default; actors spawned with TP_SPAWN_OBSERVE are observed anyway, with
 * handler time only under TP_OBSERVE_TIME). Actors already spawned keep
 * what they had.
 *
 * Returns TP_EINVAL for a NULL rt or an unknown flag, TP_ESTATE once
 * tp_run has started. *Threads:* outside behaviors, before tp_run.
 */
TP_API int tp_runtime_observe(tp_runtime *rt, unsigned flags);

/** What tp_actor_info_get tells about one actor. Counters marked
 * "observed" are 0 unless the actor is observed (tp_actor_info.observed). */
typedef struct tp_actor_info {
    tp_pid pid;               /**< the actor */
    tp_pid parent;            /**< its spawner; TP_PID_NONE for actors spawned
                                from outside the runtime (the root) */
    char name[64];            /**< registered name, "" if none */
    bool alive;               /**< false: ended, only pid and dead_letters are
                                meaningful (see tp_actor_info_get) */
    bool observed;            /**< counters below are kept */
    bool trap_exit;           /**< traps exit signals */
    bool paused;              /**< paused by backpressure */
    uint64_t mailbox_len;     /**< messages queued and not yet taken */
    uint64_t mailbox_cap;     /**< capacity; UINT64_MAX when unbounded */
    uint64_t stashed;         /**< deferred messages it holds now */
    uint64_t links;           /**< actors linked to it */
    uint64_t monitors;        /**< monitors on it (it is watched by) */
    uint64_t remote_links;    /**< of links, those to actors of other
                                   nodes (troupe/node.h) */
    uint64_t remote_monitors; /**< monitors it holds on actors of other
                                   nodes, plus those on it from them */
    uint64_t mailbox_hwm;     /**< observed: highest mailbox_len seen at the
                                start or end of one of its turns */
    uint64_t handled;         /**< observed: behavior calls that consumed a
                                message (TP_TAG_START included) */
    uint64_t deferred;        /**< observed: behavior calls that returned
                                TP_DEFER (a message deferred twice counts
                                twice) */
    uint64_t handler_ns;      /**< observed with TP_OBSERVE_TIME: nanoseconds
                                spent in its behavior */
    uint64_t restarts;        /**< restarts it counted with
                                tp_observe_restart (supervisors) */
    uint64_t dead_letters;    /**< user messages addressed to it that became
                                dead letters: those still queued or
                                deferred when it ended and those sent to
                                it afterwards. Kept for every actor. */
} tp_actor_info;

/**
 * Fill *out for pid.
 *
 * An ended actor whose slot has not been reused by a later spawn yet is
 * still answered, with alive false and only pid and dead_letters set (how
 * many messages it missed); otherwise TP_ENOPROC.
 *
 * Returns 0; TP_EINVAL for NULL arguments; TP_ENOPROC; TP_ESTATE when
 * called from a thread that is not rt's scheduler while rt runs;
 * TP_ETIMEDOUT when another scheduler, stuck in a behavior, did not stop
 * at a safe point within 1 s (nothing read). On error *out is untouched.
 * *Threads:* from a behavior of rt (its scheduler thread), or from any
 * thread while rt is not running (before tp_run or after it returned).
 */
TP_API int tp_actor_info_get(tp_runtime *rt, tp_pid pid, tp_actor_info *out);

/** Visitor for tp_actors_each; a non-zero return stops the walk. info is
 * valid during the call only. */
typedef int (*tp_actor_visit_fn)(const tp_actor_info *info, void *arg);

/**
 * Call fn once for every live actor, in slot order (not spawn order). fn
 * must not spawn, end or send: it runs between turns or inside the
 * calling behavior.
 *
 * Returns the number of actors visited (>= 0), TP_EINVAL, TP_ESTATE or
 * TP_ETIMEDOUT (as for tp_actor_info_get).
 */
TP_API int tp_actors_each(tp_runtime *rt, tp_actor_visit_fn fn, void *arg);

/** Runtime counters: tp_stats plus exits by reason and restarts. */
typedef struct tp_stats_ex {
    tp_stats base; /**< as tp_runtime_stats */
    /** actors ended, by tp_exit_kind (indexed by TP_EXIT_NORMAL to
     * TP_EXIT_KIND_MAX, TP_EXIT_NOCONNECTION included; TP_EXIT_KILL is
     * never used: a kill ends as TP_EXIT_KILLED). They add up to
     * base.actors_exited. */
    uint64_t exited_by_kind[TP_EXIT_KIND_MAX + 1];
    uint64_t restarts; /**< tp_observe_restart calls */
    uint64_t observed; /**< observed actors alive */
} tp_stats_ex;

/** Fill *out (any thread; the figures are estimates while rt runs). */
TP_API void tp_runtime_stats_ex(tp_runtime *rt, tp_stats_ex *out);

/** A short stable name for an exit kind ("normal", "shutdown", "kill",
 * "killed", "error", "noproc", "noconnection"), or "unknown". */
TP_API const char *tp_exit_kind_name(tp_exit_kind kind);

/**
 * Count one restart: into the runtime's restarts and the calling actor's
 * own restarts figure. Supervisors call it each time they start a child
 * again after it ended (child is the pid that ended; informational).
 *
 * Returns TP_ESTATE outside a behavior. *Threads:* behavior only.
 */
TP_API int tp_observe_restart(tp_ctx *ctx, tp_pid child);

/**
 * Write a text dump of every live actor to out, as a tree by parent
 * (actors whose parent has ended are listed at the top level, marked
 * "orphan"), one line each: pid, registered name, mailbox length and
 * capacity, flags, and the counters of observed actors; then the runtime
 * counters. Like Erlang's observer, in a terminal.
 *
 * From a behavior of rt or while rt is not running, the dump is written
 * at once. From another thread while rt runs, a short-lived dumper actor
 * is spawned to write it on the scheduler thread (it shows in the
 * spawned/exited counters, not in the dump), and the call blocks until
 * it is written, or returns TP_ESTATE if the run ended first.
 *
 * Returns 0; TP_EINVAL for NULL arguments; TP_ENOMEM; TP_ETIMEDOUT (as
 * for tp_actor_info_get); TP_ESTATE after tp_runtime_free has begun or
 * when the run ended before the dump. out is flushed, never closed.
 * *Threads:* any.
 */
TP_API int tp_runtime_dump(tp_runtime *rt, FILE *out);

/**
 * On signal signo (SIGUSR1 is the usual choice), write tp_runtime_dump's
 * text to out (stderr when NULL), on the scheduler thread. The signal is
 * caught through libevent, so nothing runs in signal context. out must
 * stay open while rt lives.
 *
 * Returns TP_EINVAL for a NULL rt or a bad signal; TP_ESTATE once tp_run
 * has started or if a dump signal is already set; TP_ESYS if libevent
 * cannot catch it; TP_ENOMEM. *Threads:* outside behaviors, before tp_run.
 */
TP_API int tp_runtime_dump_on_signal(tp_runtime *rt, int signo, FILE *out);

/**
 * Serve Prometheus text (exposition format 0.0.4) at http://host:port/metrics
 * while rt runs, from rt's scheduler thread (libevent evhttp): the runtime
 * counters of tp_runtime_stats_ex, and one series per live actor
 * (labels pid, name and parent) for at most TP_METRICS_ACTORS_MAX actors
 * (troupe_actors_listed_truncated says when more were left out). Every
 * other path answers 404.
 *
 * host must be a loopback address ("127.0.0.1", another 127.x.y.z, or
 * "::1"; NULL means "127.0.0.1"): the endpoint is for a local scraper or
 * proxy, never the open network. port 0 picks a free port, written to
 * *port_out (which may be NULL). The socket is closed by tp_runtime_free.
 * A request may carry at most 8 KiB of request line and headers and no
 * body (past that it is refused, 400 or 413, and the connection closed);
 * a connection idle for 10 s is closed. Out of fds, it pauses accepting
 * (10 ms, doubling to 1 s while accepts fail) instead of retrying at once.
 *
 * Returns 0; TP_EINVAL for a non-loopback or malformed host; TP_ESTATE
 * once tp_run has started or when rt already serves metrics; TP_ESYS when
 * the address cannot be bound (errno tells, EADDRINUSE...); TP_ENOMEM.
 * *Threads:* outside behaviors, before tp_run.
 */
TP_API int tp_runtime_serve_metrics(tp_runtime *rt, const char *host,
                                    uint16_t port, uint16_t *port_out);

/** Most actors listed one by one at /metrics. */
#define TP_METRICS_ACTORS_MAX 1000

/**
 * Write the /metrics text to out (the same text the endpoint serves).
 * Returns 0, TP_EINVAL, TP_ESTATE or TP_ETIMEDOUT (threads as for
 * tp_actor_info_get), TP_ENOMEM (nothing written), or TP_ESYS when
 * flushing out fails (part of the text may be written).
 */
TP_API int tp_runtime_metrics_write(tp_runtime *rt, FILE *out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_OBSERVE_H */
