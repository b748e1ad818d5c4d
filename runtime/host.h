/*
 * The isolated worker's door (runtime/isolate/worker.c): host one actor by
 * hand in a process of its own.
 *
 * The host is a runtime of one thread whose loop the worker drives, and a
 * stand-in actor that is in no table and carries another process's pid
 * (the proxy's), so tp_self and every ctx call of the behavior work as in
 * the parent. Messages the worker posts run at once, as a turn would run
 * them (deferral, tp_become's replay, receive timeouts, TP_ENOREPLY);
 * every delivery the actor makes to another pid leaves through ops->out,
 * and what it sends itself (timers, receive timeouts, tp_self) stays in
 * the host. Like runtime/service.h, this header is all a worker sees of
 * the core.
 */
#ifndef TPI_HOST_H
#define TPI_HOST_H

#include "runtime/service.h" /* tpi_envelope */
#include "troupe.h"

struct event_base;

typedef struct tpi_host tpi_host;

typedef struct tpi_host_ops {
    /* A delivery to another pid: a reply (tag TP_TAG_REPLY: status, ref
     * of the request, payload) or a user message (tag >= 0). Return 0, or
     * TP_ESTATE for what it may not send (the behavior's call fails). */
    int (*out)(void *arg, tp_pid to, const tpi_envelope *e);
    /* The actor ended with r (r.text valid during the call). */
    void (*ended)(void *arg, tp_reason r);
    /* The host ran messages of the actor's own (timers, sends to itself):
     * a moment to flush what out() queued. */
    void (*ran)(void *arg);
} tpi_host_ops;

/* A host for behavior b with state; ops and arg are kept. TP_ENOMEM or
 * tp_runtime_new's error. */
int tpi_host_new(tp_behavior b, void *state, const tpi_host_ops *ops, void *arg,
                 tpi_host **out);
/* The loop (add the channel's events to it). */
struct event_base *tpi_host_base(tpi_host *h);
/* Give the actor its pid and run TP_TAG_START from `from`. */
int tpi_host_start(tpi_host *h, tp_pid self, tp_pid from);
/* Run one message (e->request: the reply leaves through ops->out with
 * e->ref). Before tpi_host_start: TP_ESTATE. TP_ENOMEM. */
int tpi_host_post(tpi_host *h, const tpi_envelope *e);
/* Run the loop until tpi_host_stop (from a callback of it). */
void tpi_host_run(tpi_host *h);
void tpi_host_stop(tpi_host *h);
void tpi_host_free(tpi_host *h);

#endif
