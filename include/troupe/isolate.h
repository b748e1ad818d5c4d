/** @file
 * troupe isolated workers: actors whose behavior runs in a child process.
 *
 * A segfault in a C behavior takes down every actor of its process. An
 * isolated actor runs its behavior in a worker process of its own
 * instead; messages cross as length-prefixed msgpack frames over a socket
 * pair, and the worker's death (a signal, an exit, a closed channel, a
 * malformed frame, a limit) becomes the exit reason of the actor: its
 * links, monitors and supervisor see it like any other, and the rest of
 * the runtime keeps running.
 *
 * The worker is the same program, started again (posix_spawn of
 * /proc/self/exe) with a marker in its arguments: main() registers its
 * isolated behaviors and then calls tp_isolate_main(), which runs the
 * worker when the marker is there and returns at once otherwise.
 *
 *     int main(int argc, char **argv)
 *     {
 *         tp_isolate_register("parser", parse, NULL);
 *         tp_isolate_main(argc, argv);   // never returns in a worker
 *         ...                            // the normal program
 *     }
 *
 * Inside an isolated behavior (in the worker process) these work as in a
 * local actor: tp_self (the proxy's pid, the one other actors know),
 * tp_msg_* (every accessor), tp_send / tp_send_int / tp_sendf /
 * tp_send_move (forwarded by the proxy, which is then the sender; within
 * the limits of tp_isolate_spawn's "What a worker may send"),
 * tp_reply / tp_reply_int / tp_reply_take / tp_reply_send (the reply
 * reaches the caller with its original reference, so tp_call to an
 * isolated actor works), returning without a reply (TP_ENOREPLY), tp_exit
 * and negative returns, tp_become and TP_DEFER, and, handled inside the
 * worker, tp_send_after / tp_send_interval / tp_timer_cancel /
 * tp_receive_timeout and sends to tp_self. Not supported (do not call
 * them from an isolated behavior): tp_spawn, tp_call, tp_oneshot_*,
 * tp_link / tp_unlink / tp_monitor / tp_demonitor / tp_trap_exit,
 * tp_exit_signal / tp_kill, tp_register / tp_unregister,
 * tp_ctx_runtime, tp_spawn_blocking and the socket calls. Sends that are
 * not supported return TP_ESTATE. Link, monitor and supervise the proxy
 * pid from the parent instead: that is where the worker's death shows.
 *
 * Conventions as in troupe.h: 0 or a negative TP_E* code.
 */
#ifndef TROUPE_ISOLATE_H
#define TROUPE_ISOLATE_H

#include "../troupe.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The argument that marks a worker process (argv[1]). */
#define TP_ISOLATE_WORKER_ARG "--troupe-worker"

/** Most isolated behaviors a program may register. */
#define TP_ISOLATE_MAX_BEHAVIORS 64

/** Longest isolated behavior name, in bytes. */
#define TP_ISOLATE_NAME_MAX 63

/** Default largest frame body a worker may send (64 MiB + 64 bytes:
 * the default max_payload and the frame head). */
#define TP_ISOLATE_FRAME_DEFAULT (((size_t)64 << 20) + 64)

/** Internal message tags of proxies and pool routers: 0x7fff0700 and up
 * (the range TP_SUP_TAG_BASE and above is the runtime's). */
#define TP_ISOLATE_TAG_BASE 0x7fff0700

/** The first tag of the range troupe.h reserves for troupe's own
 * libraries (TP_SUP_TAG_BASE: supervisor requests, socket data, these
 * proxies' own tags, ...). A worker never sends a tag from this range:
 * that is a protocol error. */
#define TP_ISOLATE_TAG_RESERVED 0x7fff0000

/** A worker may send to the pids that sent it a message: at least the
 * last TP_ISOLATE_PEERS distinct ones (see tp_isolate_spawn). */
#define TP_ISOLATE_PEERS 256

/**
 * Register an isolated behavior under name, in every process of the
 * program: call it in main() before tp_isolate_main() (and before any
 * runtime runs), the same way in the parent and in workers. state is the
 * behavior's state in the worker process (each worker is a fresh process,
 * so a pointer to a static object gives each its own copy); the parent
 * never touches it. The name (at most TP_ISOLATE_NAME_MAX bytes) is
 * copied; b is not called in the parent.
 *
 * Returns TP_EINVAL (NULL or bad name, NULL b), TP_EEXIST (name taken),
 * TP_ENOMEM (more than TP_ISOLATE_MAX_BEHAVIORS).
 */
TP_API int tp_isolate_register(const char *name, tp_behavior b, void *state);

/**
 * The worker entry. If argv[1] is TP_ISOLATE_WORKER_ARG, this process is
 * a worker: it applies its limits, runs the registered behavior named in
 * argv until it ends, the parent goes away or the channel fails, and
 * exits (status 0 after a clean end, 2 for a bad command line or an
 * unknown behavior, 3 for a bad frame from the parent); it never returns.
 * Otherwise it returns 0 at once and main() goes on.
 */
TP_API int tp_isolate_main(int argc, char **argv);

/** How to start an isolated actor. Zero-initialise, then set name. */
typedef struct tp_isolate_opts {
    const char *name;        /**< a registered isolated behavior; copied */
    size_t mem_limit;        /**< RLIMIT_AS of the worker in bytes, 0: none
                                  (allocations past it fail: malloc returns
                                  NULL, and most programs then abort; see
                                  tp_isolate_spawn for the reason) */
    unsigned cpu_limit_s;    /**< RLIMIT_CPU seconds (the kernel then sends
                                  SIGXCPU, later SIGKILL), 0: none */
    unsigned watchdog_ms;    /**< kill the worker when a message (or its
                                  start) is not handled within this time,
                                  each message timed on its own, 0: no
                                  watchdog. Time during which the proxy
                                  is too far behind to read the worker's
                                  output does not count. */
    size_t max_frame;        /**< largest frame body accepted from the
                                  worker, 0: TP_ISOLATE_FRAME_DEFAULT */
    size_t mailbox_capacity; /**< the proxy's mailbox, 0: runtime default */
    unsigned flags;          /**< TP_SPAWN_LINK only */
} tp_isolate_opts;

/**
 * Spawn an isolated actor: a local proxy actor, whose pid is returned, and
 * a worker process running the behavior registered as opts->name. The
 * worker gets TP_TAG_START first (from the spawner), then every message
 * sent to the proxy, in order, with its tag, sender, reference and
 * payload. The worker holds only stdio and its channel (every other
 * descriptor is close-on-exec); it runs in its own process group, so
 * terminal signals reach only the parent, and dies with the thread that
 * spawned it (PR_SET_PDEATHSIG).
 *
 * A worker is untrusted code. What a worker may send: replies to the
 * requests it got, and messages with a tag below TP_ISOLATE_TAG_RESERVED
 * to its spawner (the sender of its TP_TAG_START) or to a pid that sent
 * it a message: the senders are remembered as the worker comes to their
 * messages, at least the last TP_ISOLATE_PEERS distinct ones (a pid read
 * in a payload does not count). Anything else is refused at the channel
 * as a protocol error, before it reaches anyone.
 *
 * Backpressure: a worker takes its messages as fast as it handles them.
 * When more than 1 MiB is buffered toward it (a slow or stuck worker),
 * senders to the proxy are paused after their current behavior call, as
 * at a full mailbox (and tp_runtime_send blocks), until the worker has
 * read all but 256 KiB of it; the proxy itself keeps running, so the
 * worker's replies, exit signals and its death still reach it.
 *
 * When the worker dies the proxy ends with reason TP_EXIT_ERROR and:
 *  - code TP_ESYS, text "killed by signal N (SIGNAME)" or "exited with
 *    status N" (also for status 0 without tp_exit);
 *  - code TP_ENOMEM, text "memory limit reached (N bytes)" when it had a
 *    mem_limit and died of SIGABRT, SIGSEGV or SIGBUS right after an
 *    allocation failed (errno ENOMEM: a failed malloc, then abort() or a
 *    NULL dereference);
 *  - code TP_EPROTO, text "protocol error: ..." naming the problem when it
 *    sent a malformed, truncated or oversized frame or something it may
 *    not send ("SEND frame with a reserved tag", "SEND frame to a pid it
 *    was not given"; it is killed), or "protocol error: worker closed its
 *    channel" if it closed the channel and did not exit soon after;
 *  - code TP_ETIMEDOUT, text "watchdog: ..." when the watchdog killed it.
 * A worker that ends by tp_exit (or a negative return) ends the proxy with
 * that reason. Requests in flight to it are answered TP_ENOPROC. When the
 * proxy ends for any other reason (an exit signal, a kill, its
 * supervisor), the worker is killed. Every worker is reaped (waitpid): no
 * zombie is left, at the latest when the runtime is freed.
 *
 * Ownership: opts and its name are copied. Returns TP_ESTATE outside a
 * behavior, TP_EINVAL (bad opts), TP_ENOENT (name not registered),
 * TP_ENOMEM, or TP_ESYS (socketpair or posix_spawn failed; errno tells);
 * then nothing was spawned.
 */
TP_API int tp_isolate_spawn(tp_ctx *ctx, const tp_isolate_opts *opts,
                            tp_pid *pid_out);

/** A tp_child_start_fn for supervisors: arg is a const tp_isolate_opts *
 * (which must outlive the supervisor); the worker is linked to the
 * supervisor. Returns tp_isolate_spawn's error. */
TP_API int tp_isolate_child_start(tp_ctx *ctx, void *arg, const void *args,
                                  size_t args_len, tp_pid *pid_out);

/** A pool of isolated workers. Zero-initialise, then set worker and size. */
typedef struct tp_isolate_pool_opts {
    tp_isolate_opts worker; /**< each worker (flags are ignored); copied */
    unsigned size;          /**< number of workers, 1..1024 */
    unsigned intensity;     /**< restarts allowed in period_ms before the
                                 pool gives up (0: 10 * size) */
    unsigned period_ms;     /**< (0: 5000) */
    const char *name;       /**< register the router under it; may be NULL */
} tp_isolate_pool_opts;

/**
 * Start a pool: a router actor (its pid is returned, linked to the
 * caller) that runs size isolated workers, restarting each when it ends
 * (like one_for_one, permanent children; killed outright on shutdown), and
 * forwards every message it gets (tp_forward) to the least busy running
 * worker (fewest messages queued at its proxy plus in flight in its
 * process; ties in turn), so the worker answers the caller directly and a
 * crash answers the caller TP_ENOPROC. While no worker runs, messages
 * wait in the router. More than intensity restarts within period_ms stop
 * the workers and end the pool with reason TP_EXIT_SHUTDOWN and the text
 * "isolated pool: more than N worker restarts in M ms"; an exit signal to
 * the router (not normal) stops the workers and then the router with that
 * reason.
 *
 * Ownership: opts and its strings are copied. Returns TP_ESTATE outside a
 * behavior, TP_EINVAL (bad opts), TP_ENOENT (worker name not registered),
 * TP_ENOMEM; then nothing was spawned.
 */
TP_API int tp_isolate_pool_start(tp_ctx *ctx, const tp_isolate_pool_opts *opts,
                                 tp_pid *pid_out);

/** Process-wide counters of isolated workers (all runtimes). */
typedef struct tp_isolate_stats {
    uint64_t spawned;    /**< worker processes started */
    uint64_t reaped;     /**< worker processes waited for */
    uint64_t bad_frames; /**< workers killed for a protocol error (a bad
                              frame, or a send it may not make) */
    uint64_t watchdog;   /**< workers killed by the watchdog */
} tp_isolate_stats;

/** Fill *out (any thread). Running workers = spawned - reaped. */
TP_API void tp_isolate_stats_get(tp_isolate_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_ISOLATE_H */
