/*
 * What the core knows about its actors, for observers (issue 8): the
 * per-actor counters, actor info and iteration, runtime counters by exit
 * reason and restarts. Presenting them (the tree dump, the metrics page)
 * is the observe service's (runtime/observe/).
 *
 * Reading an actor's fields is safe only on the thread that runs it (the
 * scheduler) or while nothing runs (before tp_run, after it returned), so
 * every reader checks that first, and stops the other schedulers while it
 * reads.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"
#include "troupe/observe.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int tp_runtime_observe(tp_runtime *rt, unsigned flags)
{
    if (!rt || (flags & ~(unsigned)(TP_OBSERVE_COUNTERS | TP_OBSERVE_TIME)))
        return TP_EINVAL;
    if (atomic_load(&rt->state) != TPI_RT_NEW)
        return TP_ESTATE;
    rt->observe = flags;
    return 0;
}

/* -------------------------------------------------- per-actor counters */

#define DEAD_TAG(gen) (((uint32_t)(gen)&0xffu) << 24)
#define DEAD_MAX 0xffffffu

int tpi_obs_spawn(tp_runtime *rt, tpi_actor *a, unsigned spawn_flags)
{
    /* relaxed: a counter; the new owner's generation tags it so counts
     * for the slot's previous actor no longer land here. */
    atomic_store_explicit(&a->obs_dead, DEAD_TAG(tpi_slot_gen(a)),
                          memory_order_relaxed);
    unsigned mode = rt->observe;
    if (!mode && !(spawn_flags & TP_SPAWN_OBSERVE))
        return 0;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (!x)
        return TP_ENOMEM;
    if (!x->obs && !(x->obs = tpi_calloc(sizeof *x->obs)))
        return TP_ENOMEM;
    a->flags |= TPI_ACT_OBS | ((mode & TP_OBSERVE_TIME) ? TPI_ACT_OBS_TIME : 0);
    return 0;
}

void tpi_obs_turn(tpi_actor *a)
{
    uint64_t n = tpi_mailbox_count(&a->mb);
    if (n > a->ext->obs->hwm)
        a->ext->obs->hwm = n;
}

void tpi_obs_dead_letter(tp_runtime *rt, tp_pid to, const tpi_msg *m)
{
    if (m->tag < 0)
        return;
    tpi_actor *a = tpi_table_slot(rt->table, to);
    if (!a)
        return;
    uint32_t tag = DEAD_TAG(tpi_pid_gen(to));
    /* relaxed: a counter; the CAS keeps the tag check and the increment
     * one step, so a respawn's reset is never overwritten. */
    uint32_t v = atomic_load_explicit(&a->obs_dead, memory_order_relaxed);
    while ((v & ~DEAD_MAX) == tag && (v & DEAD_MAX) != DEAD_MAX &&
           !atomic_compare_exchange_weak_explicit(&a->obs_dead, &v, v + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

int tp_observe_restart(tp_ctx *ctx, tp_pid child)
{
    (void)child;
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    TPI_STAT(tpi_actor_rt(a), restarts, 1);
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (x && !x->obs)
        x->obs = tpi_calloc(sizeof *x->obs);
    if (x && x->obs) /* else only the runtime's figure counts it */
        x->obs->restarts++;
    return 0;
}

/* ---------------------------------------------------------------- info */

/* Visit every slot with the other schedulers parked (a reader that
 * tpi_svc_may_read let in). */
typedef struct visit {
    tp_runtime *rt;
    void (*fn)(tpi_actor *, void *);
    void *arg;
} visit;

static void visit_stopped(void *arg)
{
    visit *v = arg;
    tpi_table_each(v->rt->table, v->fn, v->arg);
}

/* 0, or TP_ETIMEDOUT (a scheduler stuck in a handler: nothing read). */
static int visit_all(tp_runtime *rt, void (*fn)(tpi_actor *, void *), void *arg)
{
    visit v = {rt, fn, arg};
    return tpi_svc_stopped(rt, visit_stopped, &v);
}

/* A live actor's slot (safe readers only): its behavior is cleared when
 * it has ended. */
static bool alive(tpi_actor *a) { return a->behavior != NULL; }

static uint64_t msglist_len(const tpi_msglist *l)
{
    uint64_t n = 0;
    for (tpi_msg *m = l->head; m;
         m = (tpi_msg *)atomic_load_explicit(&m->node.next,
                                             memory_order_relaxed))
        n++;
    return n;
}

static void fill(tpi_actor *a, tp_actor_info *out)
{
    memset(out, 0, sizeof *out);
    out->pid = tpi_actor_pid(a);
    out->parent = a->parent;
    out->alive = true;
    out->trap_exit = (a->flags & TPI_ACT_TRAP) != 0;
    out->paused = atomic_load_explicit(&a->paused, memory_order_relaxed) != 0;
    out->mailbox_len = tpi_mailbox_count(&a->mb);
    uint32_t cap = tpi_mailbox_cap(&a->mb);
    out->mailbox_cap = cap == TPI_MAILBOX_UNBOUNDED ? UINT64_MAX : cap;
    out->dead_letters =
        atomic_load_explicit(&a->obs_dead, memory_order_relaxed) & DEAD_MAX;
    tpi_actor_ext *x = a->ext;
    if (!x)
        return;
    if (x->name)
        snprintf(out->name, sizeof out->name, "%s", x->name);
    out->stashed = msglist_len(&x->stash) + msglist_len(&x->replay);
    out->links = x->links.n;
    out->monitors = x->watchers.n;
    for (uint32_t i = 0; i < x->links.n; i++)
        out->remote_links += (x->links.v[i] & TPI_PID_REMOTE) != 0;
    for (uint32_t i = 0; i < x->watchers.n; i++)
        out->remote_monitors += (x->watchers.v[i].pid & TPI_PID_REMOTE) != 0;
    for (uint32_t i = 0; i < x->monitoring.n; i++)
        out->remote_monitors += (x->monitoring.v[i].pid & TPI_PID_REMOTE) != 0;
    if (x->obs) {
        out->observed = (a->flags & TPI_ACT_OBS) != 0;
        out->mailbox_hwm = x->obs->hwm;
        out->handled = x->obs->handled;
        out->deferred = x->obs->deferred;
        out->handler_ns = x->obs->handler_ns;
        out->restarts = x->obs->restarts;
    }
}

typedef struct read_one {
    tpi_actor *a;
    tp_pid pid;
    tp_actor_info *out;
    uint32_t gen;
    bool live;
} read_one;

static void read_stopped(void *arg)
{
    read_one *r = arg;
    r->gen = tpi_slot_gen(r->a);
    r->live = r->gen == tpi_pid_gen(r->pid) && alive(r->a);
    if (r->live)
        fill(r->a, r->out);
}

int tp_actor_info_get(tp_runtime *rt, tp_pid pid, tp_actor_info *out)
{
    if (!rt || !out)
        return TP_EINVAL;
    if (!tpi_svc_may_read(rt))
        return TP_ESTATE;
    tpi_actor *a = tpi_table_slot(rt->table, pid);
    if (!a)
        return TP_ENOPROC;
    read_one r = {a, pid, out, 0, false};
    int rc = tpi_svc_stopped(rt, read_stopped, &r);
    if (rc)
        return rc;
    if (r.live)
        return 0;
    uint32_t gen = r.gen;
    /* Ended (the slot's generation moved past it) and no later actor has
     * taken the slot (a spawn re-tags the dead-letter count). */
    uint32_t v = atomic_load_explicit(&a->obs_dead, memory_order_relaxed);
    if (gen != tpi_pid_gen(pid) &&
        ((gen - tpi_pid_gen(pid)) & TPI_GEN_MASK) < (TPI_GEN_MASK + 1) / 2 &&
        (v & ~DEAD_MAX) == DEAD_TAG(tpi_pid_gen(pid))) {
        memset(out, 0, sizeof *out);
        out->pid = pid;
        out->dead_letters = v & DEAD_MAX;
        return 0;
    }
    return TP_ENOPROC;
}

typedef struct each_ctx {
    tp_actor_visit_fn fn;
    void *arg;
    int n;
    bool stop;
} each_ctx;

static void each_one(tpi_actor *a, void *arg)
{
    each_ctx *e = arg;
    if (e->stop || !alive(a))
        return;
    tp_actor_info info;
    fill(a, &info);
    e->n++;
    if (e->fn(&info, e->arg) != 0)
        e->stop = true;
}

int tp_actors_each(tp_runtime *rt, tp_actor_visit_fn fn, void *arg)
{
    if (!rt || !fn)
        return TP_EINVAL;
    if (!tpi_svc_may_read(rt))
        return TP_ESTATE;
    each_ctx e = {fn, arg, 0, false};
    int rc = visit_all(rt, each_one, &e);
    return rc ? rc : e.n;
}

void tp_runtime_stats_ex(tp_runtime *rt, tp_stats_ex *out)
{
    if (!rt || !out)
        return;
    memset(out, 0, sizeof *out);
    tp_runtime_stats(rt, &out->base);
    for (unsigned i = 0; i <= rt->nsched; i++) {
        const tpi_stats *st = i ? &rt->scheds[i - 1].stats : &rt->stats;
        /* relaxed: estimates, as in tp_runtime_stats. */
        for (int k = 0; k <= TP_EXIT_KIND_MAX; k++)
            out->exited_by_kind[k] +=
                atomic_load_explicit(&st->exit_kinds[k], memory_order_relaxed);
        out->restarts +=
            atomic_load_explicit(&st->restarts, memory_order_relaxed);
        out->observed +=
            atomic_load_explicit(&st->observed, memory_order_relaxed);
    }
}

const char *tp_exit_kind_name(tp_exit_kind kind)
{
    static const char *const names[] = {"normal",      "shutdown", "kill",
                                        "killed",      "error",    "noproc",
                                        "noconnection"};
    return (unsigned)kind < sizeof names / sizeof *names ? names[kind]
                                                         : "unknown";
}

typedef struct collect_acc {
    tp_actor_info *v;
    size_t n, cap, max, total;
    tp_pid skip;
    bool nomem;
} collect_acc;

static void collect_one(tpi_actor *a, void *arg)
{
    collect_acc *c = arg;
    if (!alive(a) || tpi_actor_pid(a) == c->skip)
        return;
    c->total++;
    if (c->n == c->max || c->nomem)
        return;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 64;
        tp_actor_info *nv = tpi_realloc(c->v, ncap * sizeof *nv);
        if (!nv) {
            c->nomem = true;
            return;
        }
        c->v = nv;
        c->cap = ncap;
    }
    fill(a, &c->v[c->n++]);
}

int tpi_svc_collect(tp_runtime *rt, tp_pid skip, size_t max,
                    tp_actor_info **out, size_t *n_out, size_t *total_out)
{
    collect_acc c = {NULL, 0, 0, max, 0, skip, false};
    int rc = visit_all(rt, collect_one, &c);
    if (rc)
        return rc;
    if (c.nomem) {
        tpi_free(c.v);
        return TP_ENOMEM;
    }
    *out = c.v;
    *n_out = c.n;
    if (total_out)
        *total_out = c.total;
    return 0;
}

const char *tpi_pidstr(tp_pid pid, char *buf, size_t size)
{
    snprintf(buf, size, "<%" PRIu32 ".%" PRIu32 ">", (uint32_t)pid,
             (uint32_t)(pid >> 32));
    return buf;
}
