/*
 * Observability (issue 8): per-actor counters, actor info and iteration,
 * runtime counters by exit reason and restarts, and the text dump of the
 * supervision tree (on demand, from any thread, or on a signal).
 *
 * Reading an actor's fields is safe only on the thread that runs it (the
 * scheduler) or while nothing runs (before tp_run, after it returned), so
 * every reader checks that first; another thread gets its dump through a
 * short-lived actor that writes it on the scheduler thread.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"
#include "troupe/observe.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/observe/observe_int.h"

/* ------------------------------------------------------------- setup */

struct tpi_obs *tpi_obs_get(tp_runtime *rt)
{
    if (!rt->obs)
        rt->obs = tpi_calloc(sizeof *rt->obs);
    return rt->obs;
}

int tp_runtime_observe(tp_runtime *rt, unsigned flags)
{
    if (!rt || (flags & ~(unsigned)(TP_OBSERVE_COUNTERS | TP_OBSERVE_TIME)))
        return TP_EINVAL;
    if (atomic_load(&rt->state) != TPI_RT_NEW)
        return TP_ESTATE;
    rt->observe = flags;
    return 0;
}

void tpi_obs_fini(tp_runtime *rt)
{
    struct tpi_obs *o = rt->obs;
    if (!o)
        return;
    if (o->sig_ev)
        event_free(o->sig_ev);
    if (o->http)
        evhttp_free(o->http);
    tpi_free(o);
    rt->obs = NULL;
}

/* -------------------------------------------------- per-actor counters */

#define DEAD_TAG(gen) (((uint32_t)(gen)&0xffu) << 24)
#define DEAD_MAX 0xffffffu

int tpi_obs_spawn(tp_runtime *rt, tpi_actor *a, unsigned spawn_flags)
{
    /* relaxed: a counter; the new owner's generation tags it so counts
     * for the slot's previous actor no longer land here. */
    atomic_store_explicit(&a->obs_dead,
                          DEAD_TAG(atomic_load_explicit(&a->gen,
                                                        memory_order_relaxed)),
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

bool tpi_obs_may_read(tp_runtime *rt)
{
    tpi_sched *s = tpi_sched_current();
    return (s && s->rt == rt) || atomic_load(&rt->state) != TPI_RT_RUNNING;
}

/* Around a read of other actors' state by a reader tpi_obs_may_read let
 * in: with several schedulers running, the others are parked meanwhile.
 * Returns whether it stopped them (pass it to read_end). */
static bool read_begin(tp_runtime *rt)
{
    tpi_sched *s = tpi_sched_current();
    bool stop = s && s->rt == rt; /* else rt is not running */
    if (stop)
        tpi_world_stop(rt);
    return stop;
}

static void read_end(tp_runtime *rt, bool stopped)
{
    if (stopped)
        tpi_world_resume(rt);
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

void tpi_obs_fill(tpi_actor *a, tp_actor_info *out)
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
    if (x->obs) {
        out->observed = (a->flags & TPI_ACT_OBS) != 0;
        out->mailbox_hwm = x->obs->hwm;
        out->handled = x->obs->handled;
        out->deferred = x->obs->deferred;
        out->handler_ns = x->obs->handler_ns;
        out->restarts = x->obs->restarts;
    }
}

int tp_actor_info_get(tp_runtime *rt, tp_pid pid, tp_actor_info *out)
{
    if (!rt || !out)
        return TP_EINVAL;
    if (!tpi_obs_may_read(rt))
        return TP_ESTATE;
    tpi_actor *a = tpi_table_slot(rt->table, pid);
    if (!a)
        return TP_ENOPROC;
    bool stopped = read_begin(rt);
    uint32_t gen = atomic_load_explicit(&a->gen, memory_order_relaxed);
    bool live = gen == tpi_pid_gen(pid) && alive(a);
    if (live)
        tpi_obs_fill(a, out);
    read_end(rt, stopped);
    if (live)
        return 0;
    /* Ended (the slot's generation moved past it) and no later actor has
     * taken the slot (a spawn re-tags the dead-letter count). */
    uint32_t v = atomic_load_explicit(&a->obs_dead, memory_order_relaxed);
    if (gen != tpi_pid_gen(pid) && gen - tpi_pid_gen(pid) < (1u << 31) &&
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
    tpi_obs_fill(a, &info);
    e->n++;
    if (e->fn(&info, e->arg) != 0)
        e->stop = true;
}

int tp_actors_each(tp_runtime *rt, tp_actor_visit_fn fn, void *arg)
{
    if (!rt || !fn)
        return TP_EINVAL;
    if (!tpi_obs_may_read(rt))
        return TP_ESTATE;
    each_ctx e = {fn, arg, 0, false};
    bool stopped = read_begin(rt);
    tpi_table_each(rt->table, each_one, &e);
    read_end(rt, stopped);
    return e.n;
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
        for (int k = 0; k <= TP_EXIT_NOPROC; k++)
            out->exited_by_kind[k] +=
                atomic_load_explicit(&st->exit_kinds[k], memory_order_relaxed);
        out->restarts +=
            atomic_load_explicit(&st->restarts, memory_order_relaxed);
    }
}

const char *tp_exit_kind_name(tp_exit_kind kind)
{
    static const char *const names[] = {"normal", "shutdown", "kill",
                                        "killed", "error",    "noproc"};
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
    tpi_obs_fill(a, &c->v[c->n++]);
}

int tpi_obs_collect(tp_runtime *rt, tp_pid skip, size_t max,
                    tp_actor_info **out, size_t *n_out, size_t *total_out)
{
    collect_acc c = {NULL, 0, 0, max, 0, skip, false};
    bool stopped = read_begin(rt);
    tpi_table_each(rt->table, collect_one, &c);
    read_end(rt, stopped);
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

/* ---------------------------------------------------------------- dump */

const char *tpi_obs_pidstr(tp_pid pid, char *buf, size_t size)
{
    snprintf(buf, size, "<%" PRIu32 ".%" PRIu32 ">", (uint32_t)pid,
             (uint32_t)(pid >> 32));
    return buf;
}

static int cmp_u64(uint64_t a, uint64_t b) { return a < b ? -1 : a > b; }

/* Children grouped under their parent, each group in slot order. */
static int by_parent(const void *x, const void *y)
{
    const tp_actor_info *a = x, *b = y;
    int c = cmp_u64(a->parent, b->parent);
    return c ? c : cmp_u64((uint32_t)a->pid, (uint32_t)b->pid);
}

static int by_pid(const void *x, const void *y)
{
    return cmp_u64(*(const tp_pid *)x, *(const tp_pid *)y);
}

/* First index whose parent is >= parent (v sorted by_parent). */
static size_t first_child(const tp_actor_info *v, size_t n, tp_pid parent)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].parent < parent)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void dump_line(FILE *out, const tp_actor_info *i, unsigned depth,
                      bool orphan)
{
    char b[32];
    fprintf(out, "%*s%s", (int)(depth * 2), "",
            tpi_obs_pidstr(i->pid, b, sizeof b));
    if (i->name[0])
        fprintf(out, " \"%s\"", i->name);
    if (i->mailbox_cap == UINT64_MAX)
        fprintf(out, " mbox %" PRIu64 "/unbounded", i->mailbox_len);
    else
        fprintf(out, " mbox %" PRIu64 "/%" PRIu64, i->mailbox_len,
                i->mailbox_cap);
    if (orphan)
        fprintf(out, " parent %s (ended)",
                tpi_obs_pidstr(i->parent, b, sizeof b));
    if (i->stashed)
        fprintf(out, " stashed %" PRIu64, i->stashed);
    if (i->links)
        fprintf(out, " links %" PRIu64, i->links);
    if (i->monitors)
        fprintf(out, " monitors %" PRIu64, i->monitors);
    if (i->trap_exit)
        fputs(" trap", out);
    if (i->paused)
        fputs(" paused", out);
    if (i->observed) {
        fprintf(out, " handled %" PRIu64 " deferred %" PRIu64 " hwm %" PRIu64,
                i->handled, i->deferred, i->mailbox_hwm);
        if (i->handler_ns)
            fprintf(out, " busy %.3fms", (double)i->handler_ns / 1e6);
    }
    if (i->restarts)
        fprintf(out, " restarts %" PRIu64, i->restarts);
    fputc('\n', out);
}

static void dump_totals(tp_runtime *rt, FILE *out)
{
    tp_stats_ex st;
    tp_runtime_stats_ex(rt, &st);
    fprintf(out,
            "totals: alive %" PRIu64 " spawned %" PRIu64 " exited %" PRIu64
            " (",
            st.base.actors_alive, st.base.actors_spawned,
            st.base.actors_exited);
    for (int k = 0; k <= TP_EXIT_NOPROC; k++)
        if (k != TP_EXIT_KILL)
            fprintf(out, "%s%s %" PRIu64, k ? " " : "",
                    tp_exit_kind_name((tp_exit_kind)k), st.exited_by_kind[k]);
    fprintf(out,
            ") restarts %" PRIu64 " dead_letters %" PRIu64
            " late_replies %" PRIu64 " sent %" PRIu64 " timers %" PRIu64 "\n",
            st.restarts, st.base.dead_letters, st.base.late_replies,
            st.base.messages_sent, st.base.timers_active);
}

/* The dump itself, on a safe thread; skip is the dumper actor, if any. */
static int dump_now(tp_runtime *rt, FILE *out, tp_pid skip)
{
    tp_actor_info *v = NULL;
    size_t n = 0;
    int rc = tpi_obs_collect(rt, skip, SIZE_MAX, &v, &n, NULL);
    if (rc)
        return rc;
    tp_pid *pids = tpi_alloc((n + 1) * sizeof *pids);
    size_t *stack = tpi_alloc((n + 1) * sizeof *stack);
    unsigned *depth = tpi_alloc((n + 1) * sizeof *depth);
    if (!pids || !stack || !depth) {
        rc = TP_ENOMEM;
        goto out;
    }
    if (n) { /* v is NULL when nothing lives */
        qsort(v, n, sizeof *v, by_parent);
        for (size_t i = 0; i < n; i++)
            pids[i] = v[i].pid;
        qsort(pids, n, sizeof *pids, by_pid);
    }
    fprintf(out, "== troupe: %zu actors ==\n", n);
    /* Roots (no parent, or a parent that has ended), then depth first;
     * pushed in reverse so they print in order. */
    size_t sp = 0;
    for (size_t i = n; i-- > 0;)
        if (v[i].parent == TP_PID_NONE ||
            !bsearch(&v[i].parent, pids, n, sizeof *pids, by_pid)) {
            stack[sp] = i;
            depth[sp++] = 0;
        }
    while (sp) {
        sp--;
        size_t i = stack[sp];
        unsigned d = depth[sp];
        bool orphan = d == 0 && v[i].parent != TP_PID_NONE;
        dump_line(out, &v[i], d, orphan);
        size_t lo = first_child(v, n, v[i].pid), hi = lo;
        while (hi < n && v[hi].parent == v[i].pid)
            hi++;
        for (size_t k = hi; k-- > lo;) { /* each actor has one parent */
            stack[sp] = k;
            depth[sp++] = d + 1;
        }
    }
    dump_totals(rt, out);
    fflush(out);
out:
    tpi_free(depth);
    tpi_free(stack);
    tpi_free(pids);
    tpi_free(v);
    return rc;
}

/* A dump asked from another thread while rt runs: written by a dumper
 * actor on the scheduler thread. Shared by the asker and the actor; the
 * last of the two to let go frees it. */
typedef struct dump_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tp_runtime *rt;
    FILE *out;
    int done, rc;
    _Atomic int refs;
} dump_req;

static void req_release(void *p)
{
    dump_req *q = p;
    /* acq_rel: the last one out sees the other's writes before freeing. */
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) == 1) {
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        tpi_free(q);
    }
}

static int dumper(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)msg;
    dump_req *q = state;
    int rc = dump_now(q->rt, q->out, tp_self(ctx));
    pthread_mutex_lock(&q->mu);
    q->done = 1;
    q->rc = rc;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

int tp_runtime_dump(tp_runtime *rt, FILE *out)
{
    if (!rt || !out)
        return TP_EINVAL;
    if (tpi_obs_may_read(rt))
        return dump_now(rt, out, TP_PID_NONE);
    dump_req *q = tpi_calloc(sizeof *q);
    if (!q)
        return TP_ENOMEM;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->rt = rt;
    q->out = out;
    atomic_init(&q->refs, 2);
    tp_spawn_opts so = {0};
    so.mailbox_capacity = TP_MAILBOX_UNBOUNDED;
    so.state_free = req_release;
    int rc = tp_runtime_spawn(rt, dumper, q, &so, NULL);
    if (rc) {
        atomic_init(&q->refs, 1);
        req_release(q);
        return rc;
    }
    /* Wait for the dumper, or for the end of the run (then the actor is
     * torn down unrun by tp_runtime_free, which lets go of q). */
    pthread_mutex_lock(&q->mu);
    while (!q->done && atomic_load(&rt->state) == TPI_RT_RUNNING) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    }
    rc = q->done ? q->rc : TP_ESTATE;
    pthread_mutex_unlock(&q->mu);
    req_release(q);
    return rc;
}

static void on_dump_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tp_runtime *rt = arg;
    FILE *out = rt->obs->sig_out ? rt->obs->sig_out : stderr;
    if (dump_now(rt, out, TP_PID_NONE) != 0)
        fputs("troupe: dump failed: out of memory\n", out);
}

int tp_runtime_dump_on_signal(tp_runtime *rt, int signo, FILE *out)
{
    if (!rt || signo <= 0 || signo >= NSIG || signo == SIGKILL ||
        signo == SIGSTOP)
        return TP_EINVAL;
    if (atomic_load(&rt->state) != TPI_RT_NEW || (rt->obs && rt->obs->sig_ev))
        return TP_ESTATE;
    struct tpi_obs *o = tpi_obs_get(rt);
    if (!o)
        return TP_ENOMEM;
    o->sig_ev = evsignal_new(rt->scheds[0].base, signo, on_dump_signal, rt);
    if (!o->sig_ev)
        return TP_ENOMEM;
    if (evsignal_add(o->sig_ev, NULL) != 0) {
        event_free(o->sig_ev);
        o->sig_ev = NULL;
        return TP_ESYS;
    }
    o->sig_out = out;
    return 0;
}
