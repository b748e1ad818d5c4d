/** @file
 * troupe — an Erlang-style actor runtime for C.
 *
 * The main public header: it includes troupe/supervisor.h, net.h, pool.h,
 * isolate.h and observe.h; the node API needs <troupe/node.h> as well.
 * Every function returns 0 (TP_OK) or a negative TP_E*
 * code unless its comment says otherwise; tp_strerror() names the code.
 * Functions that take a tp_ctx may only be called from inside a behavior,
 * with the ctx that behavior was given, during that call; elsewhere they
 * return TP_ESTATE (or TP_PID_NONE / NULL). Out-parameters named *_out may
 * be NULL when the caller does not need them.
 */
#ifndef TROUPE_H
#define TROUPE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @def TP_API
 * Marks a public function. While troupe itself is compiled
 * (TROUPE_BUILDING) it gives the function default visibility, so the shared
 * library, built with hidden visibility, exports it; for users it is empty. */
#if defined(TROUPE_BUILDING) && defined(__GNUC__)
#define TP_API __attribute__((visibility("default")))
#else
#define TP_API
#endif

/* The version, kept only here: CMake reads it for the project version, the
 * SONAME, the CMake package version and troupe.pc. */
#define TROUPE_VERSION_MAJOR 0 /**< incompatible API changes (after 1.0) */
#define TROUPE_VERSION_MINOR 1 /**< additions; breaking ones while MAJOR is 0 */
#define TROUPE_VERSION_PATCH 0 /**< fixes only */

/* ------------------------------------------------------------------ errors */

/** The error space: X(name, value, text). */
#define TP_ERRORS(X)                                                           \
    X(TP_EINVAL, -1, "invalid argument")                                       \
    X(TP_ENOMEM, -2, "out of memory")                                          \
    X(TP_ENOPROC, -3, "no such actor")                                         \
    X(TP_EFULL, -4, "mailbox full")                                            \
    X(TP_ETIMEDOUT, -5, "timed out")                                           \
    X(TP_EEXIST, -6, "already exists")                                         \
    X(TP_ENOENT, -7, "not found")                                              \
    X(TP_ESTATE, -8, "not allowed in this state")                              \
    X(TP_ENOREPLY, -9, "request dropped without a reply")                      \
    X(TP_E2BIG, -10, "argument too large")                                     \
    X(TP_EPROTO, -11, "malformed message or frame")                            \
    X(TP_ESYS, -12, "system call failed")                                      \
    X(TP_ENOCONN, -13, "node unreachable")

enum {
    TP_OK = 0,
#define TP_ERR_ENUM_(name, value, text) name = value,
    TP_ERRORS(TP_ERR_ENUM_)
#undef TP_ERR_ENUM_
};

/** A static string for a TP_E* code (or "success", or "unknown error"). */
TP_API const char *tp_strerror(int err);

/* ------------------------------------------------------------------- types */

/** An actor id: slot index + 1 in the low 32 bits (so 0 is never a pid),
 * slot generation (modulo 2^24) in the high 32; a pid of another node's
 * actor (troupe/node.h) has bit 63 set. A pid is a value; a pid of an ended actor never reaches a later actor
 * that reuses its slot. 0 is never a valid pid. */
typedef uint64_t tp_pid;
#define TP_PID_NONE ((tp_pid)0) /**< no actor; never a valid pid */

/** A unique reference (call, oneshot, monitor). Never 0 when valid. */
typedef uint64_t tp_ref;

/** A timer id, unique within the runtime. Never 0 when valid. */
typedef uint64_t tp_timer;

typedef struct tp_runtime tp_runtime; /**< the runtime handle */
typedef struct tp_ctx tp_ctx; /**< the current actor, inside a behavior */
typedef struct tp_msg tp_msg; /**< a received message (read-only) */
typedef struct tp_reply_handle tp_reply_handle; /**< a taken reply obligation */

/** The sending end of a oneshot channel: a value, copy it freely. At most
 * one value is ever delivered for it; later sends are dropped and counted. */
typedef struct tp_oneshot {
    tp_pid pid; /**< the receiving actor */
    tp_ref ref; /**< the channel's reference */
} tp_oneshot;

/** Why an actor ended (or the reason carried by an exit signal). */
typedef enum tp_exit_kind {
    TP_EXIT_NORMAL = 0, /**< ended normally; not propagated over links */
    TP_EXIT_SHUTDOWN,   /**< asked to stop (by a supervisor) */
    TP_EXIT_KILL,       /**< as a signal: untrappable kill request */
    TP_EXIT_KILLED,     /**< ended by a kill */
    TP_EXIT_ERROR,      /**< ended with an error: code + text */
    TP_EXIT_NOPROC, /**< the actor did not exist (link/monitor of a dead pid) */
    TP_EXIT_NOCONNECTION, /**< its node is unreachable (troupe/node.h;
                               Erlang's noconnection) */
    TP_EXIT_KIND_MAX = TP_EXIT_NOCONNECTION /**< the last kind */
} tp_exit_kind;

/** An exit reason: why an actor ended, or what an exit signal carries. */
typedef struct tp_reason {
    tp_exit_kind kind; /**< what kind of end */
    int code;          /**< error code, for TP_EXIT_ERROR */
    const char *text;  /**< optional text, may be NULL */
} tp_reason;

/** A normal end. */
#define TP_REASON_NORMAL ((tp_reason){TP_EXIT_NORMAL, 0, NULL})
/** An orderly stop, asked for (by a supervisor, a signal). */
#define TP_REASON_SHUTDOWN ((tp_reason){TP_EXIT_SHUTDOWN, 0, NULL})
/** As an exit signal: an untrappable kill. */
#define TP_REASON_KILL ((tp_reason){TP_EXIT_KILL, 0, NULL})
/** An end with an error: a TP_E* (or own) code and an optional text. */
#define TP_REASON_ERROR(code, text) ((tp_reason){TP_EXIT_ERROR, (code), (text)})

/** Longest reason text kept; longer texts are truncated. */
#define TP_REASON_TEXT_MAX 255

/** System tags (negative). User tags are >= 0; tags from 0x7fff0000 up
 * are reserved for troupe's own libraries (supervisors, sockets, ...). */
enum {
    TP_TAG_START = -1,  /**< first message of every actor; empty payload */
    TP_TAG_EXIT = -2,   /**< exit signal from a link, for a trapping actor */
    TP_TAG_DOWN = -3,   /**< a monitored actor ended; tp_msg_ref = monitor */
    TP_TAG_REPLY = -4,  /**< a call reply or oneshot value; see status */
    TP_TAG_TIMEOUT = -5 /**< the receive timeout expired */
};

/** What a behavior returns. A negative TP_E* return ends the actor with
 * reason TP_EXIT_ERROR and that code. */
enum {
    TP_HANDLED = 0, /**< the message is consumed */
    TP_DEFER = 1    /**< keep it; offer it again after the next tp_become */
};

/** A behavior: called once per message, on one thread at a time, with the
 * actor's private state. It must not block. The message is valid only
 * during the call (unless TP_DEFER is returned). Positive returns other
 * than TP_DEFER count as TP_HANDLED. */
typedef int (*tp_behavior)(tp_ctx *ctx, void *state, const tp_msg *msg);

/* ----------------------------------------------------------------- runtime */

#define TP_MAILBOX_DEFAULT 1024 /**< default mailbox capacity */
/** A mailbox capacity without limit: sends to it never pause the sender. */
#define TP_MAILBOX_UNBOUNDED SIZE_MAX

/** Runtime settings: fill with tp_config_init, then change what you need. */
typedef struct tp_config {
    /** Scheduler threads, at most 64 (default: the environment variable
     * TROUPE_THREADS if set, else the number of online CPUs). Each runs
     * its own libevent loop; see docs/guide/13-multi-core.md. */
    unsigned threads;
    size_t mailbox_capacity; /**< default per-actor capacity (1024) */
    size_t max_payload;      /**< largest payload accepted by send (64 MiB) */
    unsigned batch;          /**< messages an actor handles per turn (64) */
    /** Deterministic test mode when non-zero (default 0): the next ready
     * actor is chosen by a generator seeded with this value, each turn
     * handles one message, and timers run on virtual time (when no actor
     * is ready, the clock jumps to the next deadline). The same seed
     * replays the same schedule, as long as the program does not depend
     * on other threads, sockets or the wall clock. It runs one scheduler
     * thread whatever threads says. */
    uint64_t seed;
    /** Stuck-handler report: a behavior call that has run this many
     * milliseconds is reported, then again each time its duration doubles
     * (default 1000; 0: off). Reports come from a monitor thread. */
    unsigned stuck_ms;
    /** Called for each report (actor, tag of the message it handles, ms so
     * far) from the monitor thread; it may only use the thread-safe
     * tp_runtime_* functions. NULL: a line on stderr. */
    void (*on_stuck)(void *arg, tp_pid pid, int32_t tag, uint64_t ms);
    void *stuck_arg; /**< passed to on_stuck */
    /** Busy wait: after running actors, a scheduler keeps polling its
     * loop without blocking for this many microseconds before it sleeps
     * (default: the environment variable TROUPE_BUSY_WAIT_US if set, else
     * 50; 0: sleep at once). Work that arrives meanwhile is seen without
     * a wake-up, which its sender (a socket's peer, another scheduler)
     * would otherwise pay for; the price is up to this much CPU time per
     * pause. Off in the deterministic mode. */
    unsigned busy_wait_us;
} tp_config;

/** Fill cfg with the defaults. */
TP_API void tp_config_init(tp_config *cfg);

/** Create a runtime. cfg may be NULL for the defaults. TP_EINVAL for a
 * NULL out, mailbox_capacity, batch or max_payload 0, max_payload over
 * UINT32_MAX, threads over 64 or busy_wait_us over 1000000. On error *out
 * is untouched. */
TP_API int tp_runtime_new(const tp_config *cfg, tp_runtime **out);

/** Free a runtime that is not running. Actors spawned but never run are
 * ended (their state_free is called) and every queued message is freed.
 * No other thread may still be inside a call on rt (join senders first).
 * Freeing the last runtime of the process gives back every block taken
 * through the allocator hook, whatever threads sent messages meanwhile. */
TP_API void tp_runtime_free(tp_runtime *rt);

/** Allocator hook, process-wide; set it before creating any runtime.
 * NULL functions restore malloc/realloc/free. */
TP_API void tp_set_allocator(void *(*alloc_fn)(size_t),
                             void *(*realloc_fn)(void *, size_t),
                             void (*free_fn)(void *));

/** Options for spawning. Zero-initialise, then set what you need. */
typedef struct tp_spawn_opts {
    size_t mailbox_capacity;         /**< 0 = runtime default */
    unsigned flags;                  /**< TP_SPAWN_* */
    void (*state_free)(void *state); /**< called once, when the actor ends */
} tp_spawn_opts;

#define TP_SPAWN_LINK 1u      /**< link the new actor to the spawner */
#define TP_SPAWN_TRAP_EXIT 2u /**< the new actor traps exits from its start */

/** Run root as the root actor and block until it and every actor spawned
 * under it (and any spawned through tp_runtime_spawn) have ended.
 * Returns the exit status: 0 when the root ended normal or shutdown, 1
 * otherwise; or a negative TP_E* code if the runtime could not run (then
 * state is not owned by the runtime). tp_runtime_root_reason() tells why
 * the root ended. A runtime runs once. */
TP_API int tp_run(tp_runtime *rt, tp_behavior root, void *state,
                  const tp_spawn_opts *opts);

/** The root's exit reason after tp_run; text valid until tp_runtime_free. */
TP_API int tp_runtime_root_reason(tp_runtime *rt, tp_reason *out);

/** Spawn from outside any actor: before tp_run, or from another thread
 * while it runs (placed on the schedulers round robin). Ownership of state
 * as for tp_spawn. Flags may include TP_SPAWN_TRAP_EXIT and
 * TP_SPAWN_OBSERVE (troupe/observe.h); TP_SPAWN_LINK is TP_EINVAL. TP_ESTATE
 * once the run is over, including a spawn that races the end of the run:
 * then the actor was never counted and tp_run does not wait for it. */
TP_API int tp_runtime_spawn(tp_runtime *rt, tp_behavior b, void *state,
                            const tp_spawn_opts *opts, tp_pid *pid_out);

/** Send from a thread that is not running a behavior. Blocks while the
 * target's mailbox is at or over capacity, and never takes it over: the
 * message's place is reserved before it is queued, so threads sending at
 * the same time cannot overshoot together (actors' sends, tp_send, may:
 * see backpressure). Copies data. Sending to an ended actor counts a dead
 * letter and returns 0. */
TP_API int tp_runtime_send(tp_runtime *rt, tp_pid to, int32_t tag,
                           const void *data, size_t len);

/** As tp_runtime_send, but returns TP_EFULL (nothing sent) instead of
 * blocking. */
TP_API int tp_runtime_try_send(tp_runtime *rt, tp_pid to, int32_t tag,
                               const void *data, size_t len);

/** Call from a thread that is not running a behavior: send a request
 * (copies data) and block until its reply, at most timeout_ms (< 0: no
 * limit). On 0, *reply / *reply_len hold a copy of the reply's payload from
 * the runtime's allocator (free with tp_free; NULL/0 for an empty payload).
 * Otherwise returns TP_ETIMEDOUT, TP_ENOPROC (callee dead or ended before
 * replying), TP_ENOREPLY, TP_ENOCONN (a remote callee's node unreachable),
 * TP_EINVAL, TP_E2BIG, TP_ENOMEM, or TP_ESTATE when
 * rt is not running or the caller is a scheduler thread running a behavior
 * (on any error *reply and *reply_len are untouched). reply/reply_len may be
 * NULL to discard. The callee sees a short-lived proxy actor as
 * tp_msg_from(). */
TP_API int tp_runtime_call(tp_runtime *rt, tp_pid to, int32_t tag,
                           const void *data, size_t len, int timeout_ms,
                           void **reply, size_t *reply_len);

/** Send an exit signal (as tp_exit_signal) from outside any actor; the
 * target sees TP_PID_NONE as the sender. Any thread. */
TP_API int tp_runtime_exit_signal(tp_runtime *rt, tp_pid to, tp_reason reason);

/** Call before tp_run: SIGINT or SIGTERM then sends the root an exit
 * signal with reason shutdown (an orderly stop of its tree: a supervisor
 * stops its children in reverse order). A signal that comes while that
 * shutdown is in progress (the root has neither ended nor called
 * tp_refuse_shutdown) kills every actor; once the root has refused, the
 * next signal starts a new orderly shutdown. SIGPIPE is ignored from then
 * on. */
TP_API int tp_runtime_handle_signals(tp_runtime *rt);

/** Called by the root, which traps exits, after the shutdown exit signal
 * from SIGINT/SIGTERM (tp_msg_from() == TP_PID_NONE): it will not end for
 * that shutdown (it refused, or its own shutdown work failed) and runs on
 * normally, so the next SIGINT/SIGTERM starts a new orderly shutdown
 * instead of killing every actor. TP_ESTATE when no shutdown started by a
 * signal is in progress (none came, it was refused already, or a second
 * signal is already killing everything) or the caller is not the root. */
TP_API int tp_refuse_shutdown(tp_ctx *ctx);

/** The pid registered under name, or TP_PID_NONE. Any thread. */
TP_API tp_pid tp_whereis(tp_runtime *rt, const char *name);

/** Allocate n bytes through the allocator hook (tp_set_allocator), for
 * memory that libraries built on troupe keep (supervisors, pools): an
 * allocation-failure test then reaches them too. NULL when out of memory
 * (n == 0 may return NULL). Free with tp_free. Any thread. */
TP_API void *tp_alloc(size_t n);

/** As tp_alloc, zeroed. */
TP_API void *tp_calloc(size_t n);

/** Resize p (NULL: allocate) through the hook. On failure returns NULL and
 * p is unchanged (still owned by the caller). */
TP_API void *tp_realloc(void *p, size_t n);

/** Free memory from the runtime's allocator (tp_alloc, tp_packf buffers);
 * NULL is ignored. */
TP_API void tp_free(void *p);

/** Runtime counters, safe to read from any thread. */
typedef struct tp_stats {
    uint64_t actors_alive;   /**< spawned and not yet ended */
    uint64_t actors_spawned; /**< ever */
    uint64_t actors_exited;  /**< ever */
    uint64_t slots;          /**< actor table slots allocated */
    uint64_t messages_sent;  /**< user messages enqueued */
    uint64_t dead_letters;   /**< messages to ended actors */
    uint64_t late_replies;   /**< replies with no waiting request */
    uint64_t timers_active;  /**< timers set and not fired/cancelled */
    uint64_t schedule_hash;  /**< deterministic mode: a hash of the order of
                                  turns (which actor ran when); 0 otherwise */
} tp_stats;

/** Read the runtime's counters into *out. Any thread. */
TP_API void tp_runtime_stats(tp_runtime *rt, tp_stats *out);

/* ------------------------------------------------------------------ actors */

/** Spawn an actor running b with state. It receives TP_TAG_START first.
 * Ownership: on success the actor owns state (opts->state_free is called
 * once when it ends); on error nothing was spawned and state stays the
 * caller's. */
TP_API int tp_spawn(tp_ctx *ctx, tp_behavior b, void *state,
                    const tp_spawn_opts *opts, tp_pid *pid_out);

/** Most bytes of state tp_spawn_inline keeps in the actor's table slot. */
#define TP_INLINE_STATE_MAX 48

/** tp_spawn with a small state kept by the runtime, without an allocation
 * per spawn: len bytes (at most TP_INLINE_STATE_MAX) are copied from init
 * into memory of the actor's table slot, and the behavior's state is a
 * pointer to that copy (16-byte aligned), the actor's until it ends, when
 * the memory goes back with the slot (opts->state_free, if set, is still
 * called with it first). init stays the caller's. TP_EINVAL when len is
 * too large or init is NULL with len > 0. */
TP_API int tp_spawn_inline(tp_ctx *ctx, tp_behavior b, const void *init,
                           size_t len, const tp_spawn_opts *opts,
                           tp_pid *pid_out);

/** This actor's pid (TP_PID_NONE outside a behavior). */
TP_API tp_pid tp_self(tp_ctx *ctx);
/** The runtime this actor runs in (NULL outside a behavior). */
TP_API tp_runtime *tp_ctx_runtime(tp_ctx *ctx);

/** End this actor with reason once the current behavior call returns. The
 * reason text is copied. Later calls in the same turn override earlier. */
TP_API int tp_exit(tp_ctx *ctx, tp_reason reason);

/** Send an exit signal to another actor (Erlang exit/2). TP_EXIT_KILL
 * cannot be trapped; TP_EXIT_NORMAL is ignored by non-trapping actors. */
TP_API int tp_exit_signal(tp_ctx *ctx, tp_pid to, tp_reason reason);

/** tp_exit_signal(ctx, to, TP_REASON_KILL): the target ends as killed. */
TP_API int tp_kill(tp_ctx *ctx, tp_pid to);

/** Switch behavior for the next messages; every deferred message is
 * offered again, in its original order, before newer ones. */
TP_API int tp_become(tp_ctx *ctx, tp_behavior b);

/** Register this actor under name (at most 63 bytes). TP_EEXIST if the name
 * is taken or this actor already has one. Released when the actor ends. */
TP_API int tp_register(tp_ctx *ctx, const char *name);

/** Release this actor's name. TP_ENOENT if name is not this actor's;
 * TP_EINVAL for a NULL, empty or too long (over 63 bytes) name. */
TP_API int tp_unregister(tp_ctx *ctx, const char *name);

/* ---------------------------------------------------------------- messages */

/** Send a copy of data (one msgpack object, or len 0 for no payload) with a
 * user tag (>= 0) to `to`. The caller keeps data. Sending to an ended actor
 * is not an error: the message is counted as a dead letter. If the
 * target's mailbox is now over capacity, this actor is paused after the
 * current behavior call until the target drains (backpressure). Returns
 * TP_EINVAL for a bad tag, pid or payload, TP_E2BIG over max_payload (to
 * an actor of another node: over the node's max_message). */
TP_API int tp_send(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data,
                   size_t len);

/** As tp_send, but moves buf (from the runtime's allocator: tp_packf, or
 * malloc when no allocator hook is set) into the message without copying. Ownership: the
 * runtime owns buf in every case, success or error. */
TP_API int tp_send_move(tp_ctx *ctx, tp_pid to, int32_t tag, void *buf,
                        size_t len);

/** Send one msgpack integer. */
TP_API int tp_send_int(tp_ctx *ctx, tp_pid to, int32_t tag, int64_t v);

/** Send a payload built from a format (see tp_packf). */
TP_API int tp_sendf(tp_ctx *ctx, tp_pid to, int32_t tag, const char *fmt, ...);

/** The message's tag: a user tag (>= 0) or a TP_TAG_* (< 0). */
TP_API int32_t tp_msg_tag(const tp_msg *msg);
/** The pid of the actor that sent it; TP_PID_NONE if no actor did. */
TP_API tp_pid tp_msg_from(const tp_msg *msg);
/** The reference of a reply, DOWN (monitor ref) or timer message (timer id). */
TP_API tp_ref tp_msg_ref(const tp_msg *msg);
/** For TP_TAG_REPLY: 0, or TP_ETIMEDOUT, TP_ENOPROC, TP_ENOREPLY,
 * TP_ENOCONN (a remote callee's node unreachable), or for a blocking job
 * its own code or why its payload was refused (TP_EINVAL, TP_E2BIG,
 * TP_ENOMEM); 0 for every other message; TP_EINVAL for NULL. */
TP_API int tp_msg_status(const tp_msg *msg);
/** The payload bytes (NULL and 0 when there is none). */
TP_API const void *tp_msg_data(const tp_msg *msg, size_t *len);
/** Read a payload that is one msgpack integer. TP_EPROTO if it is not. */
TP_API int tp_msg_int(const tp_msg *msg, int64_t *out);
/** Read a payload by format (see tp_unpackf); TP_EINVAL for a NULL msg or
 * fmt or a malformed fmt. */
TP_API int tp_msg_scanf(const tp_msg *msg, const char *fmt, ...);
/** The reason of a TP_TAG_EXIT or TP_TAG_DOWN message; text is valid while
 * the message is. */
TP_API int tp_msg_reason(const tp_msg *msg, tp_reason *out);

/*
 * Payload formats. One character per msgpack value:
 *   n nil          b bool (int)            i int            l int64_t
 *   u uint64_t     d double                s const char* (NUL-terminated)
 *   S const char*, size_t (string with length)
 *   y const void*, size_t (binary)         p tp_pid
 *   [ ... ] array of the values inside     { ... } map of key/value pairs
 * A format describes exactly one value (or nothing: "" is no payload);
 * spaces and commas are ignored.
 * Unpacking takes pointers to the same types, b into an int *. S gives
 * (const char **, size_t *) pointing into the message, not terminated;
 * s gives only the pointer, so prefer S. y gives (const void **,
 * size_t *). i is range-checked; d also accepts integers. Arrays and maps
 * must match the payload's length exactly, and the whole payload must be
 * consumed, else TP_EPROTO.
 */
/** Pack a payload into a new buffer (*out, *len) from the runtime's
 * allocator; free it with tp_free() or hand it to tp_send_move().
 * TP_EINVAL (NULL out, len or fmt, a malformed format or more than one
 * top-level value, a NULL S/y pointer with a length), TP_E2BIG (a str or
 * bin over UINT32_MAX bytes), TP_ENOMEM. */
TP_API int tp_packf(void **out, size_t *len, const char *fmt, ...);
/** tp_packf with a va_list. */
TP_API int tp_vpackf(void **out, size_t *len, const char *fmt, va_list ap);
/** Unpack a payload by format; TP_EPROTO if it does not match, TP_EINVAL
 * for a NULL fmt, NULL data with len > 0, or a malformed fmt. Values are
 * stored as read: on error, earlier ones may be written. */
TP_API int tp_unpackf(const void *data, size_t len, const char *fmt, ...);
/** tp_unpackf with a va_list. */
TP_API int tp_vunpackf(const void *data, size_t len, const char *fmt,
                       va_list ap);
/** 0 if data is exactly one well-formed msgpack object within the depth
 * and size limits, else TP_EPROTO. Never allocates. */
TP_API int tp_payload_check(const void *data, size_t len);

/* ---------------------------------------------------------- request/reply */

/** Send a request whose reply (or error) comes back to this actor as a
 * TP_TAG_REPLY message with tp_msg_ref() == *ref_out. Its status is 0 with
 * the reply's payload; TP_ETIMEDOUT after timeout_ms (< 0: no timeout);
 * TP_ENOPROC if the callee is dead or ends before replying; TP_ENOREPLY if
 * it dropped the request; TP_ENOCONN if a remote callee's node goes down
 * or cannot be reached. A reply after the timeout is dropped and counted
 * as late, never delivered. The caller keeps data; ref_out may be NULL. */
TP_API int tp_call(tp_ctx *ctx, tp_pid to, int32_t tag, const void *data,
                   size_t len, int timeout_ms, tp_ref *ref_out);

/** tp_call with an integer payload. */
TP_API int tp_call_int(tp_ctx *ctx, tp_pid to, int32_t tag, int64_t v,
                       int timeout_ms, tp_ref *ref_out);

/** True when msg is a request that carries a reply handle. */
TP_API bool tp_msg_wants_reply(const tp_msg *msg);

/** Reply to a request now (copies data). TP_ENOENT if it has no reply
 * handle or the reply was already sent or taken. */
TP_API int tp_reply(tp_ctx *ctx, const tp_msg *request, const void *data,
                    size_t len);
/** tp_reply with one msgpack integer. */
TP_API int tp_reply_int(tp_ctx *ctx, const tp_msg *request, int64_t v);

/** Take a request's reply obligation to answer later (from any later turn
 * of this actor). Returns NULL if there is none. If the actor ends while
 * holding it, the caller gets TP_ENOPROC. A request handled without a
 * reply and without taking it answers TP_ENOREPLY. */
TP_API tp_reply_handle *tp_reply_take(tp_ctx *ctx, const tp_msg *request);

/** Answer a taken reply. Consumes r (if the payload is refused the caller
 * gets TP_ENOREPLY), except on TP_ESTATE or TP_EINVAL for an r that is not
 * this actor's. */
TP_API int tp_reply_send(tp_ctx *ctx, tp_reply_handle *r, const void *data,
                         size_t len);

/** Pass msg on to `to` as it is: same tag, payload (copied), sender and,
 * for a request, reply obligation, which moves with it, so `to` answers
 * the original caller directly (a router, a load balancer; Erlang passes
 * `From` along the same way). This actor must not reply to msg after a
 * successful forward. Backpressure applies as to tp_send. Ownership: msg
 * stays the caller's. Returns 0 (a dead `to` answers a forwarded request
 * TP_ENOPROC), TP_ESTATE outside a behavior, TP_EINVAL (no `to`, a
 * system message), TP_ENOMEM (nothing was sent; the obligation stays). */
TP_API int tp_forward(tp_ctx *ctx, tp_pid to, const tp_msg *msg);

/** Create a oneshot channel whose value comes to this actor as a
 * TP_TAG_REPLY message with tp_msg_ref() == tx->ref; with timeout_ms >= 0
 * it comes as TP_ETIMEDOUT if nothing was sent in time. */
TP_API int tp_oneshot_new(tp_ctx *ctx, int timeout_ms, tp_oneshot *tx);

/** Send the one value of a oneshot (copies data). From an actor (ctx) or,
 * with ctx NULL, from any thread of rt. */
TP_API int tp_oneshot_send(tp_ctx *ctx, tp_runtime *rt, tp_oneshot tx,
                           const void *data, size_t len);

/* ------------------------------------------------------- links, monitors */

/** Link this actor and pid (bidirectional). Linking a dead pid sends this
 * actor an exit signal with reason TP_EXIT_NOPROC. */
TP_API int tp_link(tp_ctx *ctx, tp_pid pid);
/** Remove the link between this actor and pid (0 also if there was none). */
TP_API int tp_unlink(tp_ctx *ctx, tp_pid pid);

/** Trap exits: exit signals (but kill) arrive as TP_TAG_EXIT messages. */
TP_API int tp_trap_exit(tp_ctx *ctx, bool on);

/** Monitor pid: one TP_TAG_DOWN with the reason when it ends (at once,
 * with TP_EXIT_NOPROC, if it already has). */
TP_API int tp_monitor(tp_ctx *ctx, tp_pid pid, tp_ref *ref_out);

/** Remove a monitor; no DOWN for it is delivered after this returns (one
 * that came and was deferred with TP_DEFER is dropped, as Erlang's
 * demonitor with flush). TP_ENOENT if ref is neither an active monitor of
 * this actor nor one whose DOWN it deferred. */
TP_API int tp_demonitor(tp_ctx *ctx, tp_ref ref);

/* ------------------------------------------------------------------ timers */

/** Deliver a message with tag and a copy of data to this actor after ms
 * (at most INT_MAX: a larger one is TP_EINVAL, as a negative delay
 * converted would be). Timers belong to the actor that sets them and die
 * with it. */
TP_API int tp_send_after(tp_ctx *ctx, unsigned ms, int32_t tag,
                         const void *data, size_t len, tp_timer *id_out);

/** As tp_send_after, but every ms until cancelled. ms must be > 0. */
TP_API int tp_send_interval(tp_ctx *ctx, unsigned ms, int32_t tag,
                            const void *data, size_t len, tp_timer *id_out);

/** Cancel a timer of this actor; once this returns, it delivers nothing
 * more (a message already queued for it is dropped, and an interval's
 * ticks deferred with TP_DEFER too). TP_ENOENT if it was already
 * delivered (one-shot) or is unknown. */
TP_API int tp_timer_cancel(tp_ctx *ctx, tp_timer id);

/** The runtime's timer clock in milliseconds (monotonic; virtual time in
 * the deterministic mode). Use it, not the wall clock, for decisions that
 * tests must be able to replay. */
TP_API uint64_t tp_now_ms(tp_ctx *ctx);

/** If no message is handled for ms, deliver one TP_TAG_TIMEOUT. Re-armed
 * after each handled message; disarmed when it fires; ms < 0 disables. */
TP_API int tp_receive_timeout(tp_ctx *ctx, int ms);

#ifdef __cplusplus
}
#endif

/* The rest of the public API, by concern. */
#include "troupe/supervisor.h"
#include "troupe/net.h"
#include "troupe/pool.h"
#include "troupe/isolate.h"
#include "troupe/observe.h"

#endif /* TROUPE_H */
