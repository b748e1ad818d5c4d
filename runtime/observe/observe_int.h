/* Observability internals shared by runtime/observe.c and
 * runtime/metrics.c (issue 8). */
#ifndef TPI_OBSERVE_INT_H
#define TPI_OBSERVE_INT_H

#include "runtime/runtime.h"
#include "troupe/observe.h"

struct event;
struct evhttp;

/* Made on first use, freed by tp_runtime_free (tpi_obs_fini). */
struct tpi_obs {
    struct event *sig_ev; /* tp_runtime_dump_on_signal */
    FILE *sig_out;
    struct evhttp *http; /* tp_runtime_serve_metrics */
};

/* rt->obs, made if needed (before tp_run); NULL on out of memory. */
struct tpi_obs *tpi_obs_get(tp_runtime *rt);
/* On one of rt's scheduler threads, or rt not running. */
bool tpi_obs_may_read(tp_runtime *rt);
/* Describe a live actor (safe reader only). */
void tpi_obs_fill(tpi_actor *a, tp_actor_info *out);
/* Up to max live actors but skip, in slot order, into a new array from
 * the runtime's allocator (*out may be NULL when *n_out is 0); *total_out
 * gets how many there were. TP_ENOMEM. */
int tpi_obs_collect(tp_runtime *rt, tp_pid skip, size_t max,
                    tp_actor_info **out, size_t *n_out, size_t *total_out);
/* "<slot.generation>" for pid into buf (>= 24 bytes); returns buf. */
const char *tpi_obs_pidstr(tp_pid pid, char *buf, size_t size);

#endif
