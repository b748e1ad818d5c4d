/*
 * Pools of isolated workers (issue 7).
 *
 * A pool is three kinds of actors around one shared block of memory:
 *  - the router (its pid is the pool's): traps exits, starts the
 *    supervisor, and forwards every message to the least busy running
 *    worker, keeping the sender and the reply handle, so the worker
 *    answers the caller directly;
 *  - a one_for_one supervisor of the N worker proxies, which restarts a
 *    crashed worker while the others serve;
 *  - a keeper that monitors the supervisor and holds the shared block
 *    until the supervisor is gone, because the supervisor's start
 *    function uses it and may outlive a killed router.
 * The block is freed when the router, the keeper and every proxy have
 * let go of it. Load is read, not messaged: each proxy publishes the
 * messages its worker holds, and the router adds the proxy's mailbox
 * count (an atomic estimate, readable from any scheduler thread).
 */
#include "runtime/isolate/isolate_int.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"
#include "troupe/supervisor.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define POOL_MAX 1024

typedef struct pool pool;

typedef struct pool_slot {
    pool *pool;
    /* The running proxy, 0 when none: written by the supervisor (start)
     * and the proxy (end), read by the router, maybe on three threads. */
    _Atomic tp_pid pid;
    _Atomic uint32_t inflight;
    char id[16];
} pool_slot;

struct pool {
    _Atomic int refs;
    tp_isolate_opts worker; /* name points to wname */
    char wname[TP_ISOLATE_NAME_MAX + 1];
    char *reg_name;
    unsigned size, intensity, period_ms, rr;
    tp_pid self, sup;
    bool stopping;
    tp_reason stop_reason;
    char stop_text[TP_REASON_TEXT_MAX + 1];
    pool_slot slots[];
};

static void pool_unref(pool *pl)
{
    /* acq_rel: the last one out sees every other's last use. */
    if (atomic_fetch_sub_explicit(&pl->refs, 1, memory_order_acq_rel) == 1) {
        tpi_free(pl->reg_name);
        tpi_free(pl);
    }
}

static void router_free(void *state) { pool_unref(state); }

/* ------------------------------------------------------------ workers */

static void slot_ended(void *arg, tp_pid pid)
{
    pool_slot *s = arg;
    /* relaxed: only the value matters; a restart that already put the
     * next worker's pid there keeps it. */
    if (atomic_compare_exchange_strong_explicit(&s->pid, &pid, TP_PID_NONE,
                                                memory_order_relaxed,
                                                memory_order_relaxed))
        atomic_store_explicit(&s->inflight, 0, memory_order_relaxed);
    pool_unref(s->pool);
}

static int slot_start(tp_ctx *ctx, void *arg, const void *args, size_t args_len,
                      tp_pid *pid_out)
{
    (void)args;
    (void)args_len;
    pool_slot *s = arg;
    tp_isolate_opts o = s->pool->worker;
    o.flags = TP_SPAWN_LINK;
    tpi_iso_hook hook = {&s->inflight, slot_ended, s};
    atomic_store_explicit(&s->inflight, 0, memory_order_relaxed);
    tp_pid pid;
    int rc = tpi_isolate_spawn(ctx, &o, &hook, &pid);
    if (rc)
        return rc;
    atomic_fetch_add_explicit(&s->pool->refs, 1, memory_order_relaxed);
    atomic_store_explicit(&s->pid, pid, memory_order_relaxed);
    *pid_out = pid;
    return 0;
}

/* The supervisor's report: tell the router when a worker is up. The
 * router's pid is the argument, so no pool memory is touched here. */
static void sup_report(tp_ctx *ctx, void *arg, const tp_sup_event *ev)
{
    if (ev->kind == TP_SUP_EV_STARTED)
        (void)tp_send(ctx, (tp_pid)(uintptr_t)arg, TPI_ISO_TAG_POOL_UP, NULL,
                      0);
    else if (ev->kind == TP_SUP_EV_EXITED) /* an operator wants to know */
        fprintf(stderr,
                "troupe: isolated pool %" PRIu64 ": worker %s (%" PRIu64
                ") ended: %s\n",
                (uint64_t)(uintptr_t)arg, ev->id, ev->pid,
                ev->reason.text ? ev->reason.text : "no reason text");
}

/* ------------------------------------------------------------- keeper */

static int keeper(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    pool *pl = state;
    if (tp_msg_tag(msg) == TP_TAG_START)
        return tp_monitor(ctx, pl->sup, NULL);
    if (tp_msg_tag(msg) == TP_TAG_DOWN)
        tp_exit(ctx, TP_REASON_NORMAL);
    return TP_HANDLED;
}

/* ------------------------------------------------------------- router */

static tpi_actor *live_proxy(tp_runtime *rt, tp_pid pid)
{
    tpi_actor *a = pid ? tpi_table_slot(rt->table, pid) : NULL;
    if (!a ||
        atomic_load_explicit(&a->gen, memory_order_relaxed) != tpi_pid_gen(pid))
        return NULL;
    return a;
}

/* The least busy running worker (ties in turn), or -1. */
static int pick(pool *pl, tp_runtime *rt)
{
    int best = -1;
    uint64_t best_load = UINT64_MAX;
    for (unsigned i = 0; i < pl->size; i++) {
        unsigned j = (pl->rr + i) % pl->size;
        pool_slot *s = &pl->slots[j];
        tpi_actor *a =
            live_proxy(rt, atomic_load_explicit(&s->pid, memory_order_relaxed));
        if (!a)
            continue;
        uint64_t load =
            tpi_mailbox_count(&a->mb) +
            atomic_load_explicit(&s->inflight, memory_order_relaxed);
        if (load < best_load) {
            best_load = load;
            best = (int)j;
        }
    }
    if (best >= 0)
        pl->rr = ((unsigned)best + 1) % pl->size;
    return best;
}

/* Forward msg to pid with its sender and reply handle: the worker's
 * answer (or its proxy's TP_ENOPROC) goes to the caller directly. */
static int forward(tp_ctx *ctx, tp_pid pid, const tp_msg *msg)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    tp_runtime *rt = tpi_actor_rt(a);
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    tpi_msg *m = tpi_msg_new(tp_msg_tag(msg), data, len);
    if (!m)
        return TP_ENOMEM;
    m->from = msg->from;
    if (tp_msg_wants_reply(msg)) {
        m->reply_to = msg->reply_to;
        m->ref = msg->ref;
        m->flags |= TPI_MSG_REQUEST;
        ((tpi_msg *)msg)->flags |= TPI_MSG_REPLIED; /* the worker owns it now */
    }
    TPI_STAT(rt, sent, 1);
    return tpi_deliver(rt, a, pid, m);
}

static int router_start(tp_ctx *ctx, pool *pl)
{
    pl->self = tp_self(ctx);
    if (pl->reg_name) {
        int rc = tp_register(ctx, pl->reg_name);
        if (rc)
            return rc;
    }
    tp_child_spec *specs = tpi_calloc(pl->size * sizeof *specs);
    if (!specs)
        return TP_ENOMEM;
    for (unsigned i = 0; i < pl->size; i++)
        specs[i] = (tp_child_spec){.id = pl->slots[i].id,
                                   .start = slot_start,
                                   .arg = &pl->slots[i],
                                   .restart = TP_CHILD_PERMANENT,
                                   .shutdown_ms = TP_CHILD_BRUTAL_KILL};
    tp_sup_spec spec;
    tp_sup_spec_init(&spec);
    spec.strategy = TP_SUP_ONE_FOR_ONE;
    spec.intensity = pl->intensity;
    spec.period_ms = pl->period_ms;
    spec.children = specs;
    spec.n_children = pl->size;
    spec.report = sup_report;
    spec.report_arg = (void *)(uintptr_t)pl->self;
    int rc = tp_sup_start_link(ctx, &spec, &pl->sup); /* copies specs */
    tpi_free(specs);
    if (rc)
        return rc;
    atomic_fetch_add_explicit(&pl->refs, 1, memory_order_relaxed);
    tp_spawn_opts ko = {.state_free = router_free};
    if ((rc = tp_spawn(ctx, keeper, pl, &ko, NULL)) != 0) {
        pool_unref(pl);
        return rc; /* the supervisor stops with us (linked) */
    }
    return 0;
}

static void router_exit_msg(tp_ctx *ctx, pool *pl, const tp_msg *msg)
{
    tp_reason r;
    if (tp_msg_reason(msg, &r) != 0)
        r = TP_REASON_SHUTDOWN;
    if (tp_msg_from(msg) == pl->sup) {
        /* The supervisor ended: after our request to stop, or because
         * restarts exceeded its intensity. */
        tp_exit(ctx, pl->stopping ? pl->stop_reason : r);
        return;
    }
    if (r.kind == TP_EXIT_NORMAL || pl->stopping)
        return; /* a normal exit of a linked actor is not our end */
    /* Stop the workers first, then end with this reason. */
    pl->stopping = true;
    pl->stop_reason = r;
    if (r.text) {
        snprintf(pl->stop_text, sizeof pl->stop_text, "%s", r.text);
        pl->stop_reason.text = pl->stop_text;
    }
    if (pl->sup == TP_PID_NONE || tp_exit_signal(ctx, pl->sup, r) != 0)
        tp_exit(ctx, r);
}

static int router(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    pool *pl = state;
    int32_t tag = tp_msg_tag(msg);
    switch (tag) {
    case TP_TAG_START: return router_start(ctx, pl);
    case TP_TAG_EXIT: router_exit_msg(ctx, pl, msg); return TP_HANDLED;
    case TPI_ISO_TAG_POOL_UP:
        if (tp_msg_from(msg) == pl->sup) {
            tp_become(ctx, router); /* offer the waiting messages again */
            return TP_HANDLED;
        }
        break;
    default:
        if (tag < 0)
            return TP_HANDLED;
        break;
    }
    if (pl->stopping)
        return TP_HANDLED; /* a request is answered TP_ENOREPLY */
    int i = pick(pl, tpi_actor_rt(tpi_ctx_actor(ctx)));
    if (i < 0)
        return TP_DEFER; /* no worker runs: wait for one */
    (void)forward(ctx, pl->slots[i].pid, msg);
    return TP_HANDLED;
}

int tp_isolate_pool_start(tp_ctx *ctx, const tp_isolate_pool_opts *opts,
                          tp_pid *pid_out)
{
    if (!tpi_ctx_actor(ctx))
        return TP_ESTATE;
    if (!opts || !opts->worker.name || opts->size == 0 ||
        opts->size > POOL_MAX ||
        strlen(opts->worker.name) > TP_ISOLATE_NAME_MAX)
        return TP_EINVAL;
    tp_behavior b;
    void *unused;
    int rc = tpi_isolate_lookup(opts->worker.name, &b, &unused);
    if (rc)
        return rc;
    pool *pl = tpi_calloc(sizeof *pl + opts->size * sizeof(pool_slot));
    if (!pl)
        return TP_ENOMEM;
    atomic_init(&pl->refs, 1);
    pl->worker = opts->worker;
    snprintf(pl->wname, sizeof pl->wname, "%s", opts->worker.name);
    pl->worker.name = pl->wname;
    pl->size = opts->size;
    pl->intensity = opts->intensity ? opts->intensity : 10 * opts->size;
    pl->period_ms = opts->period_ms ? opts->period_ms : 5000;
    for (unsigned i = 0; i < pl->size; i++) {
        pl->slots[i].pool = pl;
        snprintf(pl->slots[i].id, sizeof pl->slots[i].id, "w%u", i);
    }
    if (opts->name && !(pl->reg_name = tpi_strndup(opts->name, 64))) {
        tpi_free(pl);
        return TP_ENOMEM;
    }
    tp_spawn_opts so = {0, TP_SPAWN_LINK | TP_SPAWN_TRAP_EXIT, router_free};
    if ((rc = tp_spawn(ctx, router, pl, &so, pid_out)) != 0) {
        tpi_free(pl->reg_name);
        tpi_free(pl);
    }
    return rc;
}
