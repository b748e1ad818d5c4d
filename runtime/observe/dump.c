/*
 * The observe service (issue 8): the text dump of the supervision tree
 * (on demand, from any thread, or on a signal) here, the Prometheus
 * endpoint in metrics.c. It owns the dump signal's event and the HTTP
 * server on scheduler 0's loop (state made on first use, freed with the
 * runtime); it reads actors only through the core's actor info
 * (tpi_svc_collect, which parks the other schedulers meanwhile).
 *
 * Uses: runtime/service.h and the public headers.
 */
#include "runtime/observe/observe_int.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------- setup */

static void *obs_make(tp_runtime *rt)
{
    (void)rt;
    return tp_calloc(sizeof(tpi_obs));
}

static void obs_free(tp_runtime *rt, void *state)
{
    (void)rt;
    tpi_obs *o = state;
    if (o->sig_ev)
        event_free(o->sig_ev);
    if (o->http)
        tpi_metrics_stop(o);
    tp_free(o);
}

static const tpi_svc_ops obs_ops = {.make = obs_make, .free = obs_free};

tpi_obs *tpi_obs_get(tp_runtime *rt)
{
    return tpi_svc_get(rt, TPI_SVC_OBSERVE, NULL);
}

int tpi_obs_setup(tp_runtime *rt, size_t slot, tpi_obs **out)
{
    if (tpi_svc_phase(rt) != TPI_PHASE_NEW)
        return TP_ESTATE;
    tpi_obs *o = tpi_svc_get(rt, TPI_SVC_OBSERVE, &obs_ops);
    if (!o)
        return TP_ENOMEM;
    if (*(void **)((char *)o + slot))
        return TP_ESTATE;
    *out = o;
    return 0;
}

/* ---------------------------------------------------------------- dump */

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
            tpi_pidstr(i->pid, b, sizeof b));
    if (i->name[0]) { /* one line per actor, whatever its name holds */
        fputs(" \"", out);
        tpi_obs_quote(out, i->name);
        fputc('"', out);
    }
    if (i->mailbox_cap == UINT64_MAX)
        fprintf(out, " mbox %" PRIu64 "/unbounded", i->mailbox_len);
    else
        fprintf(out, " mbox %" PRIu64 "/%" PRIu64, i->mailbox_len,
                i->mailbox_cap);
    if (orphan)
        fprintf(out, " parent %s (ended)", tpi_pidstr(i->parent, b, sizeof b));
    if (i->stashed)
        fprintf(out, " stashed %" PRIu64, i->stashed);
    if (i->links)
        fprintf(out, " links %" PRIu64, i->links);
    if (i->monitors)
        fprintf(out, " monitors %" PRIu64, i->monitors);
    if (i->remote_links || i->remote_monitors) /* across nodes */
        fprintf(out, " remote links %" PRIu64 " remote monitors %" PRIu64,
                i->remote_links, i->remote_monitors);
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
    for (int k = 0; k <= TP_EXIT_KIND_MAX; k++)
        if (k != TP_EXIT_KILL)
            fprintf(out, "%s%s %" PRIu64, k ? " " : "",
                    tp_exit_kind_name((tp_exit_kind)k), st.exited_by_kind[k]);
    fprintf(out,
            ") restarts %" PRIu64 " dead_letters %" PRIu64
            " late_replies %" PRIu64 " sent %" PRIu64 " timers %" PRIu64 "\n",
            st.restarts, st.base.dead_letters, st.base.late_replies,
            st.base.messages_sent, st.base.timers_active);
    const char *name = tp_node_name(rt);
    if (name) {
        tp_node_stats ns;
        tp_node_stats_get(rt, &ns);
        fprintf(out,
                "node %s: peers up %" PRIu64 " frames in %" PRIu64
                " out %" PRIu64 " bytes in %" PRIu64 " out %" PRIu64
                " dropped %" PRIu64 " send_failed %" PRIu64
                " reconnects %" PRIu64 " rtt %" PRIu64 "us\n",
                name, ns.nodes_up, ns.frames_in, ns.frames_out, ns.bytes_in,
                ns.bytes_out, ns.dropped, ns.send_failed, ns.reconnects,
                ns.rtt_us);
    }
}

/* The dump itself, on a safe thread; skip is the dumper actor, if any. */
static int dump_now(tp_runtime *rt, FILE *out, tp_pid skip)
{
    tp_actor_info *v = NULL;
    size_t n = 0;
    int rc = tpi_svc_collect(rt, skip, SIZE_MAX, &v, &n, NULL);
    if (rc)
        return rc;
    tp_pid *pids = tp_alloc((n + 1) * sizeof *pids);
    size_t *stack = tp_alloc((n + 1) * sizeof *stack);
    unsigned *depth = tp_alloc((n + 1) * sizeof *depth);
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
    tp_free(depth);
    tp_free(stack);
    tp_free(pids);
    tp_free(v);
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
        tp_free(q);
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
    if (tpi_svc_may_read(rt))
        return dump_now(rt, out, TP_PID_NONE);
    dump_req *q = tp_calloc(sizeof *q);
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
    while (!q->done && tpi_svc_phase(rt) == TPI_PHASE_RUNNING) {
        struct timespec ts = tpi_timespec_in(CLOCK_REALTIME, 20 * 1000000u);
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
    tpi_obs *o = tpi_obs_get(rt);
    FILE *out = o->sig_out ? o->sig_out : stderr;
    int rc = dump_now(rt, out, TP_PID_NONE);
    if (rc == TP_ETIMEDOUT) /* the stuck report names the actor */
        fputs("troupe: no dump: a scheduler is stuck in a handler\n", out);
    else if (rc)
        fprintf(out, "troupe: dump failed: %s\n", tp_strerror(rc));
}

int tp_runtime_dump_on_signal(tp_runtime *rt, int signo, FILE *out)
{
    if (!rt || signo <= 0 || signo >= NSIG || signo == SIGKILL ||
        signo == SIGSTOP)
        return TP_EINVAL;
    tpi_obs *o;
    int rc = tpi_obs_setup(rt, offsetof(tpi_obs, sig_ev), &o);
    if (rc)
        return rc;
    o->sig_ev = evsignal_new(tpi_svc_main_base(rt), signo, on_dump_signal, rt);
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
