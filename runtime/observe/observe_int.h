/* What runtime/observe/dump.c and runtime/observe/metrics.c share. */
#ifndef TPI_OBSERVE_INT_H
#define TPI_OBSERVE_INT_H

#include "runtime/service.h"
#include "troupe/observe.h"

#include <stdio.h>

struct event;
struct evhttp;

/* The observe service's state (TPI_SVC_OBSERVE), freed with the runtime. */
typedef struct tpi_obs {
    struct event *sig_ev; /* tp_runtime_dump_on_signal */
    FILE *sig_out;
    struct evhttp *http; /* tp_runtime_serve_metrics */
} tpi_obs;

/* rt's state; with make, made if needed (before tp_run). NULL when not
 * made (or out of memory). */
tpi_obs *tpi_obs_get(tp_runtime *rt, bool make);

#endif
