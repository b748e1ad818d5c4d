/* What runtime/observe/dump.c and runtime/observe/metrics.c share. */
#ifndef TPI_OBSERVE_INT_H
#define TPI_OBSERVE_INT_H

#include "runtime/service.h"
#include "troupe/node.h"
#include "troupe/observe.h"

#include <stdio.h>

struct event;
struct evconnlistener;
struct evhttp;

/* The observe service's state (TPI_SVC_OBSERVE), freed with the runtime. */
typedef struct tpi_obs {
    struct event *sig_ev; /* tp_runtime_dump_on_signal */
    FILE *sig_out;
    struct evhttp *http; /* tp_runtime_serve_metrics */
    /* Its accepts paused after an error (runtime/observe/metrics.c). */
    struct evconnlistener *http_lev;
    struct event *http_retry;
    unsigned pause_ms;    /* the current pause; 0: not in a streak */
    uint64_t last_err_ms; /* monotonic */
    struct tpi_obs *next_serving;
} tpi_obs;

/* rt's state, made if needed, for setting up the member at offset `slot`
 * (a pointer): TP_ESTATE once rt has run or when that member is set
 * already, TP_ENOMEM. */
int tpi_obs_setup(tp_runtime *rt, size_t slot, tpi_obs **out);
/* Stop serving metrics and free what it holds (o->http set). */
void tpi_metrics_stop(tpi_obs *o);
/* rt's state if made, else NULL. */
tpi_obs *tpi_obs_get(tp_runtime *rt);
/* s as a Prometheus label value (also the dump's names): backslash,
 * double quote and newline escaped, a byte that is not UTF-8 written as
 * U+FFFD (a scrape with one fails whole). */
void tpi_obs_quote(FILE *out, const char *s);

#endif
