/** @file
 * troupe blocking pool: run blocking calls (file I/O, DNS, compression,
 * fsync) on a pool of threads off the scheduler loop, and get each
 * result back as a message (Tokio's spawn_blocking, Erlang's dirty
 * schedulers). A behavior never blocks; it hands the work here.
 */
#ifndef TROUPE_POOL_H
#define TROUPE_POOL_H

#include "troupe.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Default number of blocking threads. */
#define TP_BLOCKING_THREADS_DEFAULT 4
/** Most blocking threads a runtime may have. */
#define TP_BLOCKING_THREADS_MAX 256

/** A blocking job. It runs on a pool thread, never on a scheduler, and
 * may block. It owns arg (it must free it, if arg needs freeing). It
 * returns 0 and sets *out and *out_len to the result payload — one
 * msgpack object in a buffer from the runtime's allocator (tp_packf), or
 * NULL and 0 for none; the runtime takes the buffer — or returns a
 * negative TP_E* code (then *out is ignored: a buffer the job put there
 * is still the job's to free). It must not call functions
 * that take a tp_ctx; tp_runtime_* functions and tp_oneshot_send with a
 * NULL ctx are allowed. */
typedef int (*tp_blocking_fn)(void *arg, void **out, size_t *out_len);

/** Set the number of pool threads (1 .. TP_BLOCKING_THREADS_MAX) of a
 * runtime that has not started any job yet. Threads start on demand, up
 * to n. TP_EINVAL for a bad n, TP_ESTATE once a job was started. Outside
 * behaviors (before tp_run). */
TP_API int tp_runtime_set_blocking_threads(tp_runtime *rt, unsigned n);

/** Run fn(arg) on the blocking pool. The result comes back to this actor
 * as a TP_TAG_REPLY message with tp_msg_ref() == *ref_out: status 0 with
 * fn's payload, or fn's negative return code as the status, or why its
 * payload was refused (TP_EINVAL: not one msgpack object, TP_E2BIG: over
 * max_payload, TP_ENOMEM), or TP_ETIMEDOUT if timeout_ms >= 0 elapsed first (the late result is then
 * dropped and counted in late_replies). Jobs start in submission order
 * (FIFO); with one thread they also finish in that order. The runtime
 * never runs fn on the scheduler thread. tp_runtime_free waits for every
 * job still queued or running, and joins the threads.
 *
 * Ownership: on success the job owns arg. On error fn is never called and
 * arg stays the caller's. Returns TP_ESTATE outside a behavior, TP_EINVAL
 * for a NULL fn, TP_ENOMEM, or TP_ESYS if no pool thread could start. */
TP_API int tp_spawn_blocking(tp_ctx *ctx, tp_blocking_fn fn, void *arg,
                             int timeout_ms, tp_ref *ref_out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_POOL_H */
