/*
 * Isolated workers (issue 7): what isolate.c (the parent side: spawn,
 * proxy, channel, reaping), worker.c (the worker process) and pool.c
 * (pools) share.
 */
#ifndef TPI_ISOLATE_INT_H
#define TPI_ISOLATE_INT_H

#include "runtime/service.h"
#include "troupe/isolate.h"

#include <stdatomic.h>

/* Internal tags (TP_ISOLATE_TAG_BASE and up). A proxy's and a router's
 * own messages come from TP_PID_NONE and carry its token as their ref. */
enum {
    TPI_ISO_TAG_FRAME =
        TP_ISOLATE_TAG_BASE, /* a checked frame from the worker */
    TPI_ISO_TAG_DIED,        /* the worker process is gone */
};

/* The registered behavior called name, or TP_ENOENT. */
int tpi_isolate_lookup(const char *name, tp_behavior *b, void **state);

/* How a pool watches one of its workers: the proxy keeps *inflight equal
 * to the messages the worker holds (sent, not yet handled), and calls
 * ended(arg, its pid) once, when the proxy is gone. */
typedef struct tpi_iso_hook {
    _Atomic uint32_t *inflight;
    void (*ended)(void *arg, tp_pid pid);
    void *arg;
} tpi_iso_hook;

/* tp_isolate_spawn, with a pool's hook (may be NULL). On error the hook
 * is never called. */
int tpi_isolate_spawn(tp_ctx *ctx, const tp_isolate_opts *opts,
                      const tpi_iso_hook *hook, tp_pid *pid_out);

/* Process-wide counters (relaxed atomics: statistics only). */
extern _Atomic uint64_t tpi_iso_spawned, tpi_iso_reaped, tpi_iso_bad_frames,
    tpi_iso_watchdog;

#endif
