/*
 * The door between the core (actors/ and the top of runtime/) and its
 * services (runtime/io/, runtime/isolate/, runtime/observe/, ...).
 *
 * A service includes this header and the public headers, and nothing else
 * of the core: it names actors by pid (a value, checked on every use), and
 * reaches the loops, mailboxes and teardown only through the functions
 * below. The core implements them in runtime/service.c, and calls no
 * service by name: services register what the core must do for them
 * (tpi_svc_get's ops, tpi_linger_add, resources). The isolated worker's
 * own loop has a second, smaller door: runtime/host.h.
 */
#ifndef TPI_SERVICE_H
#define TPI_SERVICE_H

#include "troupe.h"
#include "troupe/observe.h"

#include <pthread.h>
#include <time.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* ---- per-runtime service state */

typedef enum {
    TPI_SVC_POOL,    /* runtime/io/pool.c: the blocking pool */
    TPI_SVC_OBSERVE, /* runtime/observe/: dump signal, metrics server */
    TPI_SVC_NODE,    /* runtime/node/: the NATS connection, other nodes */
    TPI_SVC_NET,     /* runtime/io/net.c: listeners' counters */
    TPI_SVC_MAX
} tpi_svc_id;

typedef struct tpi_svc_ops {
    /* Make the state (NULL: out of memory). */
    void *(*make)(tp_runtime *rt);
    /* tp_run, before the root starts, on tp_run's thread (no loop runs
     * yet: blocking is fine): 0, or an error that tp_run returns. May be
     * NULL. */
    int (*start)(tp_runtime *rt, void *state);
    /* tp_run, after the last actor ended and the loops stopped; also after
     * a start of its own that failed. May be NULL. */
    void (*end)(tp_runtime *rt, void *state);
    /* tp_runtime_free, before any actor is torn down: stop what may still
     * deliver to actors (threads). May be NULL. */
    void (*stop)(tp_runtime *rt, void *state);
    /* tp_runtime_free, after every actor and lingering thing is gone and
     * while the loops still exist: free the state and its events. */
    void (*free)(tp_runtime *rt, void *state);
} tpi_svc_ops;

/* rt's state of service id, made by ops->make on first use (any thread;
 * racing callers get the same one). With ops NULL: the state if made, else
 * NULL. NULL when make failed. */
void *tpi_svc_get(tp_runtime *rt, tpi_svc_id id, const tpi_svc_ops *ops);

/* ---- the run */

typedef enum { TPI_PHASE_NEW, TPI_PHASE_RUNNING, TPI_PHASE_DONE } tpi_phase;
tpi_phase tpi_svc_phase(tp_runtime *rt);
/* True on one of rt's scheduler threads, or while rt is not running: the
 * places where other actors' state may be read (with tpi_svc_stopped). */
bool tpi_svc_may_read(tp_runtime *rt);
/* Scheduler 0's loop (tp_run's thread): where process-wide events such as
 * signals and the metrics server live. Before tp_run or on that loop. */
struct event_base *tpi_svc_main_base(tp_runtime *rt);
/* A reference no other of rt's references equals. Any thread. */
tp_ref tpi_svc_ref(tp_runtime *rt);

/* Run fn(arg) at a safe point: with every other scheduler of rt parked
 * between two turns, so fn may read any actor's state. On a scheduler
 * thread of rt, or while rt is not running (then fn runs at once). 0, or
 * TP_ETIMEDOUT when a scheduler stuck in a handler would not park (fn did
 * not run). */
int tpi_svc_stopped(tp_runtime *rt, void (*fn)(void *arg), void *arg);

/* Describe rt's live actors (skipping skip), at most max of them, into a
 * new array from the allocator (tp_free it; *out may be NULL when *n_out
 * is 0); *total_out (may be NULL) gets how many lived. Where
 * tpi_svc_may_read allows; stops the world meanwhile. TP_ENOMEM,
 * TP_ETIMEDOUT (tpi_svc_stopped). */
int tpi_svc_collect(tp_runtime *rt, tp_pid skip, size_t max,
                    tp_actor_info **out, size_t *n_out, size_t *total_out);
/* "<slot.generation>" for pid into buf (>= 24 bytes); returns buf. */
const char *tpi_pidstr(tp_pid pid, char *buf, size_t size);

/* ---- messages from outside a behavior */

/* Internal signal tags, below the public system tags. Signals travel
 * through the mailbox like messages, so they keep per-sender order. */
enum {
    TPI_SIG_LINK = -100,
    TPI_SIG_UNLINK = -101,
    TPI_SIG_EXIT = -102,      /* exit signal; via_link from a link's death */
    TPI_SIG_MONITOR = -103,   /* ref = monitor ref */
    TPI_SIG_DEMONITOR = -104, /* ref = monitor ref */
};

/* What a service delivers: a message as the core would build it. */
typedef struct tpi_envelope {
    int32_t tag;
    tp_pid from;     /* TP_PID_NONE: from the runtime */
    tp_pid reply_to; /* with request: who waits for the reply */
    tp_ref ref;      /* the request's or reply's reference, or a token */
    int32_t status;  /* TP_TAG_REPLY: 0 or a TP_E* code */
    bool request;    /* carries a reply obligation (reply_to, ref) */
    bool via_link;   /* TPI_SIG_EXIT: from the death of a linked actor */
    const void *data;
    size_t len;
} tpi_envelope;

/* Deliver e to `to` from an event callback or a thread of the service
 * (never pauses anyone: a service applies backpressure itself with
 * tpi_svc_mailbox). The payload is copied; with check, it must be one
 * valid msgpack object within max_payload (else TP_EINVAL or TP_E2BIG and
 * nothing is sent). A dead addressee makes it a dead letter (answered as
 * its kind requires). Returns 0, TP_EINVAL, TP_E2BIG or TP_ENOMEM. */
int tpi_svc_post(tp_runtime *rt, tp_pid to, const tpi_envelope *e, bool check);
/* A signal or message carrying reason r (EXIT with via_link, DOWN) from
 * `from` to `to`, as the core sends them. 0 or TP_ENOMEM. */
int tpi_svc_post_reason(tp_runtime *rt, tp_pid from, tp_pid to, int32_t tag,
                        tp_reason r, tp_ref ref, bool via_link);
/* The common case: tag and one msgpack int from the runtime. */
int tpi_svc_post_int(tp_runtime *rt, tp_pid to, int32_t tag, int64_t v);

/* pid's mailbox: *count queued, *cap its capacity (UINT64_MAX:
 * unbounded); estimates from any thread. TP_ENOPROC if pid has ended. */
int tpi_svc_mailbox(tp_runtime *rt, tp_pid pid, uint64_t *count, uint64_t *cap);
/* The mailbox of pid is at or over its capacity (false if it ended). */
bool tpi_svc_full(tp_runtime *rt, tp_pid pid);

/* Answer a taken reply obligation with a runtime status (TP_ENOREPLY,
 * TP_ENOPROC, ...) instead of a payload. Consumes h. */
int tpi_svc_reply_status(tp_ctx *ctx, tp_reply_handle *h, int status);
/* Forget an awaited oneshot of the calling actor (its job was never
 * queued): a reply that comes anyway is dropped as late. */
void tpi_svc_oneshot_cancel(tp_ctx *ctx, tp_ref ref);

/* ---- remote pids (a node service) */

/* A pid with this bit set names an actor of another node; the rest of its
 * bits are the node service's business. Local pids never have it. */
#define TPI_PID_REMOTE (1ull << 63)
/* Pids travel in payloads as this msgpack extension type (tp_packf 'p'
 * on a node): 8 bytes big-endian of the pid in its node's own form, then
 * the node's name. */
#define TPI_PID_EXT 0x70
#define TPI_PID_EXT_MAX (8 + 63)

typedef struct tpi_remote_ops {
    /* Carry e (a message or a signal, from `from`) to the remote pid `to`.
     * Returns 0; TP_ENOCONN when to's node is unreachable: the core
     * then answers as for a dead actor, with reason noconnection (a link
     * gets an exit signal, a monitor its DOWN, a request TP_ENOCONN);
     * TP_E2BIG (over the node's largest frame) or TP_ENOMEM, refused
     * before anything left: the core returns it to the sender. Any
     * thread; e's payload is valid during the call only. */
    int (*deliver)(void *state, tp_pid from, tp_pid to, const tpi_envelope *e);
    /* The extension body for pid into buf (TPI_PID_EXT_MAX bytes): its
     * length, or 0 if pid cannot travel. */
    size_t (*pid_pack)(void *state, tp_pid pid, uint8_t *buf);
    /* An extension body back to a pid of this runtime: 0 or TP_EPROTO. */
    int (*pid_unpack)(void *state, const uint8_t *body, size_t len,
                      tp_pid *out);
    /* An actor that asked with tpi_svc_watch_end has ended (its thread,
     * in its end; must not block). */
    void (*ended)(void *state, tp_pid pid);
    /* The end of a batch of turns on a scheduler thread: send what deliver
     * held back on this thread meanwhile (it may hold while
     * tpi_svc_batching is true there, to send many as one). */
    void (*flush)(void *state);
    /* The call (caller, ref) timed out at its caller (its thread; must not
     * block): a reply will be dropped as late, so keep nothing for it. */
    void (*call_expired)(void *state, tp_pid caller, tp_ref ref);
} tpi_remote_ops;

/* True on a scheduler thread of rt while it runs a batch of turns, at
 * whose end the remote ops' flush is called on that thread. */
bool tpi_svc_batching(tp_runtime *rt);

/* Have the node service's ended() told when the calling actor ends (for
 * what it holds on the actor's behalf: names, groups). TP_ESTATE outside a
 * behavior. */
int tpi_svc_watch_end(tp_ctx *ctx);

/* Route sends to remote pids to ops (before tp_run; ops NULL: none, and
 * such sends are dead letters). */
void tpi_svc_set_remote(tp_runtime *rt, const tpi_remote_ops *ops, void *state);

/* ---- resources on an actor's loop */

/* Something an actor owns outside the core (a socket, a worker channel):
 * told when the owner's mailbox drains below capacity, closed when the
 * owner ends or the runtime is freed. Owner's home thread only.
 *
 * A resource that can follow its actor to another scheduler has detach
 * and attach: the scheduler calls detach on the old home thread, between
 * turns, before the actor leaves (its events must leave that loop), and
 * attach on the new home, with its loop, before the actor's next turn
 * there. Without them (NULL), the resource pins its actor to its loop. */
typedef struct tpi_resource {
    struct tpi_resource *next;
    void (*drained)(struct tpi_resource *r); /* may be NULL */
    void (*close)(struct tpi_resource *r);   /* frees r */
    void (*detach)(struct tpi_resource *r);  /* may be NULL: pins */
    void (*attach)(struct tpi_resource *r, struct event_base *base);
} tpi_resource;

/* Attach r to pid: the calling actor itself, or an actor it has just
 * spawned and that has not run yet (both live on the caller's loop). The
 * actor is pinned to that loop from now on, since r's events live there,
 * unless r can move (detach); *base (may be NULL) is the loop. TP_ESTATE outside a behavior or for
 * any other pid, TP_ENOMEM (r is not attached). */
int tpi_svc_attach(tp_ctx *ctx, tp_pid pid, tpi_resource *r,
                   struct event_base **base);
/* The calling actor's loop, NULL outside a behavior. With pin, the actor
 * stays on it from now on (for events it owns without a resource and
 * frees itself in its state_free). Without, the loop is the caller's only
 * during this behavior call: for events that will belong to a child it
 * spawns now and attaches a resource to. */
struct event_base *tpi_svc_loop(tp_ctx *ctx, bool pin);
/* The calling actor's resource closed by close, or NULL. */
tpi_resource *tpi_svc_resource(tp_ctx *ctx, void (*close)(tpi_resource *));
/* rt's scheduler threads. */
unsigned tpi_svc_threads(tp_runtime *rt);
/* Start pid, a child the calling actor has just spawned and that has not
 * run yet, on scheduler `sched` (0 .. threads-1) instead of the caller's
 * (it stays there if it is pinned). Its resources may already be
 * attached, their events not yet made: it makes them in its first turn,
 * on tpi_svc_loop's loop. Returns 0, TP_EINVAL (no
 * such scheduler) or TP_ESTATE (outside a behavior, or pid is not such a
 * child). */
int tpi_svc_place(tp_ctx *ctx, tp_pid pid, unsigned sched);

/* A service about to write to a socket or pipe whose peer may vanish (a
 * client, a worker process): SIGPIPE is ignored from now on, so that is
 * an error on that one write, not the end of the process, unless the
 * application installed a handler of its own. */
void tpi_svc_no_sigpipe(void);

/* Things that outlive their actor (a socket flushing its last bytes, a
 * worker not reaped yet). tp_runtime_free calls finish(l) for each one
 * still listed, after every actor is torn down; finish frees l. */
typedef struct tpi_linger {
    struct tpi_linger *prev, *next;
    void (*finish)(struct tpi_linger *l);
} tpi_linger;
/* List l (finish set) on rt (any thread). */
void tpi_linger_add(tp_runtime *rt, tpi_linger *l);
/* l is done by itself: take it off (then free it). */
void tpi_linger_remove(tp_runtime *rt, tpi_linger *l);

/* ---- helpers of the core's, for codecs */

/* A copy of at most max bytes of s from the allocator (tp_free), NULL
 * when out of memory (runtime/alloc.c). */
char *tpi_strndup(const char *s, size_t max);

/* The monotonic clock in nanoseconds (runtime/timer.c). */
uint64_t tpi_now_ns(void);
/* The time ns from now on clock, for pthread_cond_timedwait (whose
 * condition waits on that clock). */
struct timespec tpi_timespec_in(clockid_t clock, uint64_t ns);

/* Load n big-endian bytes at p (n = 0..8). */
uint64_t tpi_be(const uint8_t *p, int n);
/* Decode one msgpack integer at p (avail bytes): *used bytes; a value above
 * INT64_MAX comes as *u with *is_unsigned. TP_EPROTO if p is not an int or
 * is truncated. */
int tpi_decode_int(const uint8_t *p, size_t avail, size_t *used, int64_t *i,
                   uint64_t *u, bool *is_unsigned);
/* Pack an int64 into buf (>= 9 bytes); returns the length. */
size_t tpi_pack_int(char *buf, int64_t v);

/* ---- named tables (runtime/namereg.c) */

/* A process-wide table of max entries of size bytes, each starting with
 * its name as a NUL-terminated char array: added to, looked up, never
 * emptied (the isolated behaviors, the behaviors other nodes may spawn).
 * Any thread. */
typedef struct tpi_namereg {
    pthread_mutex_t lock;
    void *ents;
    size_t size;
    unsigned n, max;
} tpi_namereg;
/* The table over the static array arr. */
#define TPI_NAMEREG_INIT(arr)                                                  \
    {                                                                          \
        PTHREAD_MUTEX_INITIALIZER, (arr), sizeof(arr)[0], 0,                   \
            sizeof(arr) / sizeof(arr)[0]                                       \
    }
/* Add a copy of entry e (its name checked by the caller). Returns 0,
 * TP_EEXIST (the name is taken) or TP_ENOMEM (the table is full). */
int tpi_namereg_add(tpi_namereg *r, const void *e);
/* Copy the entry named by the len bytes at name (no NUL needed) into out.
 * Returns 0 or TP_ENOENT. */
int tpi_namereg_find(tpi_namereg *r, const char *name, size_t len, void *out);

/* ---- congestion (runtime/isolate/: a channel backed up) */

/* Mark pid congested (on) or not. While congested, a user send to pid
 * pauses its sender after the behavior call that made it, and a blocking
 * tp_runtime_send waits (tp_runtime_try_send: TP_EFULL), exactly as if
 * pid's mailbox were over capacity, however few messages it holds. For an
 * actor whose output is backed up (a channel to a slow process) but which
 * must keep taking its messages, its own events among them: it is not
 * held, so exit signals and its events still reach it. Clearing resumes
 * the senders paused on pid. Services' posts (tpi_svc_post, tpi_svc_full)
 * are not affected. An actor's congestion ends with it. On pid's own
 * thread: in its behavior or in an event callback of its loop. Returns 0
 * or TP_ENOPROC (pid has ended). */
int tpi_svc_congest(tp_runtime *rt, tp_pid pid, bool on);

#endif
