/*
 * Pools of isolated workers (issue 7).
 *
 * A pool is a router actor (its pid is the pool's) linked to N worker
 * proxies. It traps exits and restarts a worker that dies, as a
 * one_for_one supervisor of permanent children would, within a restart
 * intensity (more than `intensity` restarts in `period_ms` and the pool
 * gives up, with a reason that says so). It forwards every message to the
 * least busy running worker with tp_forward, keeping the sender and the
 * reply obligation, so the worker answers the caller directly and a crash
 * answers the caller TP_ENOPROC. While no worker runs, messages wait
 * (deferred) in the router.
 *
 * Load is read, not messaged: each proxy publishes the messages its
 * worker holds (the hook's inflight counter), and the router adds the
 * proxy's mailbox count. The pool's memory is shared by the router and
 * the proxies (whose hook may run after the router ended): the last one
 * to let go frees it.
 *
 * Uses: runtime/service.h, this folder's isolate_int.h and the public
 * headers.
 */
#include "runtime/isolate/isolate_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define POOL_MAX 1024
#define RETRY_MS 100 /* a worker that could not be started is tried again */

enum { TAG_RETRY = TP_ISOLATE_TAG_BASE + 0x10 }; /* int: the slot */

typedef struct pool pool;

typedef struct pool_slot {
    pool *pool;
    tp_pid worker; /* the router's own record: started, EXIT not yet seen */
    /* The proxy while it runs, 0 when none: written by the router (start)
     * and the proxy's end (which may come before its EXIT), read by the
     * router's pick. */
    _Atomic tp_pid pid;
    _Atomic uint32_t inflight;
} pool_slot;

struct pool {
    _Atomic int refs;       /* the router and each proxy not yet gone */
    tp_isolate_opts worker; /* name points to wname */
    char wname[TP_ISOLATE_NAME_MAX + 1];
    char *reg_name;
    unsigned size, intensity, period_ms, rr;
    uint64_t *restarts; /* times (ms) of the last restarts, a ring */
    unsigned nrestarts, rhead;
    unsigned running; /* workers started and not yet seen to end */
    bool stopping;
    tp_reason stop_reason;
    char stop_text[TP_REASON_TEXT_MAX + 1];
    pool_slot slots[];
};

static void pool_unref(pool *pl)
{
    /* acq_rel: the last one out sees every other's last use. */
    if (atomic_fetch_sub_explicit(&pl->refs, 1, memory_order_acq_rel) == 1) {
        tp_free(pl->restarts);
        tp_free(pl->reg_name);
        tp_free(pl);
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

static int slot_start(tp_ctx *ctx, pool *pl, unsigned i)
{
    pool_slot *s = &pl->slots[i];
    tp_isolate_opts o = pl->worker;
    o.flags = TP_SPAWN_LINK;
    tpi_iso_hook hook = {&s->inflight, slot_ended, s};
    atomic_store_explicit(&s->inflight, 0, memory_order_relaxed);
    tp_pid pid;
    int rc = tpi_isolate_spawn(ctx, &o, &hook, &pid);
    if (rc)
        return rc;
    atomic_fetch_add_explicit(&pl->refs, 1, memory_order_relaxed);
    atomic_store_explicit(&s->pid, pid, memory_order_relaxed);
    s->worker = pid;
    pl->running++;
    return 0;
}

/* The slot whose worker is pid, or -1. */
static int slot_of(pool *pl, tp_pid pid)
{
    for (unsigned i = 0; i < pl->size; i++)
        if (pid && pl->slots[i].worker == pid)
            return (int)i;
    return -1;
}

/* Record a restart now; false if that makes more than intensity restarts
 * within period_ms (OTP's rule). */
static bool restart_allowed(tp_ctx *ctx, pool *pl)
{
    uint64_t now = tp_now_ms(ctx);
    while (pl->nrestarts) { /* forget the ones older than the period */
        unsigned oldest = (pl->rhead + pl->intensity + 1 - pl->nrestarts) %
                          (pl->intensity + 1);
        if (now - pl->restarts[oldest] <= pl->period_ms)
            break;
        pl->nrestarts--;
    }
    pl->restarts[pl->rhead] = now;
    pl->rhead = (pl->rhead + 1) % (pl->intensity + 1);
    pl->nrestarts++;
    return pl->nrestarts <= pl->intensity;
}

/* ------------------------------------------------------------- router */

/* Stop the workers, then end with r (when the last EXIT is in). */
static void pool_stop(tp_ctx *ctx, pool *pl, tp_reason r)
{
    pl->stopping = true;
    pl->stop_reason = r;
    if (r.text) {
        snprintf(pl->stop_text, sizeof pl->stop_text, "%s", r.text);
        pl->stop_reason.text = pl->stop_text;
    }
    for (unsigned i = 0; i < pl->size; i++)
        if (pl->slots[i].worker)
            (void)tp_kill(ctx, pl->slots[i].worker);
    if (pl->running == 0)
        tp_exit(ctx, pl->stop_reason);
}

/* A worker could not start (now or on a retry): try again later. */
static void retry_later(tp_ctx *ctx, pool *pl, unsigned i, int rc)
{
    fprintf(stderr,
            "troupe: isolated pool %" PRIu64 ": worker %u could not start:"
            " %s; trying again in %u ms\n",
            (uint64_t)tp_self(ctx), i, tp_strerror(rc), RETRY_MS);
    void *p = NULL;
    size_t len = 0;
    if (tp_packf(&p, &len, "i", (int64_t)i) != 0 ||
        tp_send_after(ctx, RETRY_MS, TAG_RETRY, p, len, NULL) != 0)
        pool_stop(ctx, pl,
                  TP_REASON_ERROR(rc, "isolated pool: a worker could not be "
                                      "started"));
    tp_free(p);
}

static int router(tp_ctx *ctx, void *state, const tp_msg *msg);

/* Start worker i again, if the intensity allows; then offer the messages
 * that waited for a worker again. */
static void restart(tp_ctx *ctx, pool *pl, unsigned i)
{
    if (!restart_allowed(ctx, pl)) {
        char text[TP_REASON_TEXT_MAX + 1];
        snprintf(text, sizeof text,
                 "isolated pool: more than %u worker restarts in %u ms",
                 pl->intensity, pl->period_ms);
        fprintf(stderr, "troupe: isolated pool %" PRIu64 ": %s; giving up\n",
                (uint64_t)tp_self(ctx), text);
        pool_stop(ctx, pl, (tp_reason){TP_EXIT_SHUTDOWN, 0, text});
        return;
    }
    int rc = slot_start(ctx, pl, i);
    if (rc)
        retry_later(ctx, pl, i, rc);
    else
        tp_become(ctx, router);
}

/* The least busy running worker (ties in turn), or -1. */
static int pick(pool *pl, tp_runtime *rt)
{
    int best = -1;
    uint64_t best_load = UINT64_MAX;
    for (unsigned i = 0; i < pl->size; i++) {
        unsigned j = (pl->rr + i) % pl->size;
        pool_slot *s = &pl->slots[j];
        tp_pid pid = atomic_load_explicit(&s->pid, memory_order_relaxed);
        uint64_t queued, cap;
        if (!pid || tpi_svc_mailbox(rt, pid, &queued, &cap) != 0)
            continue;
        uint64_t load =
            queued + atomic_load_explicit(&s->inflight, memory_order_relaxed);
        if (load < best_load) {
            best_load = load;
            best = (int)j;
        }
    }
    if (best >= 0)
        pl->rr = ((unsigned)best + 1) % pl->size;
    return best;
}

static int router_start(tp_ctx *ctx, pool *pl)
{
    if (pl->reg_name) {
        int rc = tp_register(ctx, pl->reg_name);
        if (rc)
            return rc;
    }
    for (unsigned i = 0; i < pl->size; i++) {
        int rc = slot_start(ctx, pl, i);
        if (rc) { /* the ones started end with us (linked) */
            pl->stopping = true;
            return rc;
        }
    }
    return 0;
}

static void router_exit_msg(tp_ctx *ctx, pool *pl, const tp_msg *msg)
{
    tp_reason r;
    if (tp_msg_reason(msg, &r) != 0)
        r = TP_REASON_SHUTDOWN;
    int i = slot_of(pl, tp_msg_from(msg));
    if (i >= 0) { /* a worker ended */
        pl->slots[i].worker = TP_PID_NONE;
        pl->running--;
        if (pl->stopping) {
            if (pl->running == 0)
                tp_exit(ctx, pl->stop_reason);
            return;
        }
        fprintf(stderr,
                "troupe: isolated pool %" PRIu64 ": worker %d (%" PRIu64
                ") ended: %s\n",
                (uint64_t)tp_self(ctx), i, tp_msg_from(msg),
                r.text ? r.text : tp_exit_kind_name(r.kind));
        restart(ctx, pl, (unsigned)i);
        return;
    }
    if (r.kind == TP_EXIT_NORMAL || pl->stopping)
        return;            /* a normal exit of a linked actor is not our end */
    pool_stop(ctx, pl, r); /* the workers first, then us */
}

static int router(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    pool *pl = state;
    int32_t tag = tp_msg_tag(msg);
    switch (tag) {
    case TP_TAG_START: return router_start(ctx, pl);
    case TP_TAG_EXIT: router_exit_msg(ctx, pl, msg); return TP_HANDLED;
    case TAG_RETRY: {
        int64_t i;
        if (tp_msg_from(msg) == tp_self(ctx) && tp_msg_int(msg, &i) == 0 &&
            i >= 0 && i < pl->size && !pl->stopping) {
            int rc = slot_start(ctx, pl, (unsigned)i);
            if (rc)
                retry_later(ctx, pl, (unsigned)i, rc);
            else
                tp_become(ctx, router);
        }
        return TP_HANDLED;
    }
    default:
        if (tag < 0)
            return TP_HANDLED;
        break;
    }
    if (pl->stopping)
        return TP_HANDLED; /* a request is answered TP_ENOREPLY */
    int i = pick(pl, tp_ctx_runtime(ctx));
    if (i < 0)
        return TP_DEFER; /* no worker runs: wait for one */
    tp_pid to = atomic_load_explicit(&pl->slots[i].pid, memory_order_relaxed);
    (void)tp_forward(ctx, to, msg);
    return TP_HANDLED;
}

int tp_isolate_pool_start(tp_ctx *ctx, const tp_isolate_pool_opts *opts,
                          tp_pid *pid_out)
{
    if (!tp_ctx_runtime(ctx))
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
    pool *pl = tp_calloc(sizeof *pl + opts->size * sizeof(pool_slot));
    if (!pl)
        return TP_ENOMEM;
    atomic_init(&pl->refs, 1);
    pl->worker = opts->worker;
    snprintf(pl->wname, sizeof pl->wname, "%s", opts->worker.name);
    pl->worker.name = pl->wname;
    pl->size = opts->size;
    pl->intensity = opts->intensity ? opts->intensity : 10 * opts->size;
    pl->period_ms = opts->period_ms ? opts->period_ms : 5000;
    for (unsigned i = 0; i < pl->size; i++)
        pl->slots[i].pool = pl;
    pl->restarts = tp_alloc((pl->intensity + 1) * sizeof *pl->restarts);
    if (!pl->restarts ||
        (opts->name && !(pl->reg_name = tpi_strndup(opts->name, 64)))) {
        pool_unref(pl);
        return TP_ENOMEM;
    }
    tp_spawn_opts so = {0, TP_SPAWN_LINK | TP_SPAWN_TRAP_EXIT, router_free};
    if ((rc = tp_spawn(ctx, router, pl, &so, pid_out)) != 0)
        pool_unref(pl);
    return rc;
}
