/*
 * Supervisor restart policy: what a child's end leads to (its restart
 * type), the restart intensity window (more than intensity restarts within
 * period_ms shuts the supervisor down), the exponential backoff with
 * jitter before a restart, and the restart timers.
 *
 * Times are the runtime's timer clock (tp_now_ms), so the deterministic
 * mode replays restart intensity and backoff decisions too.
 */
#include "supervisor/sup_int.h"
#include "troupe/observe.h"

#include <string.h>

static uint64_t rng_next(uint64_t *x) /* splitmix64 */
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* --------------------------------------------------- intensity, backoff */

/* Record a restart now; true if that makes more than intensity restarts
 * within period_ms. */
static bool restart_exceeds(tp_ctx *ctx, tpi_sup *s)
{
    uint64_t now = tp_now_ms(ctx);
    while (s->rs_len && now - s->rs[s->rs_off] > s->spec.period_ms) {
        s->rs_off++;
        s->rs_len--;
    }
    if (s->rs_len >= s->spec.intensity)
        return true;
    if (s->rs_off + s->rs_len == s->rs_cap) {
        if (s->rs_off) {
            memmove(s->rs, s->rs + s->rs_off, s->rs_len * sizeof *s->rs);
            s->rs_off = 0;
        } else {
            size_t ncap = s->rs_cap ? s->rs_cap * 2 : 8;
            uint64_t *nr = tp_realloc(s->rs, ncap * sizeof *nr);
            if (!nr) /* cannot count: take it as one too many */
                return true;
            s->rs = nr;
            s->rs_cap = ncap;
        }
    }
    s->rs[s->rs_off + s->rs_len++] = now;
    return false;
}

/* The intensity was exceeded (by the restart of c): log, report. */
static void intensity_exceeded(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c)
{
    tpi_sup_warn(s, c, ": more than %u restarts in %u ms; shutting down",
                 s->spec.intensity, s->spec.period_ms);
    tpi_sup_report(ctx, s, TP_SUP_EV_INTENSITY, c, c->pid, TP_REASON_SHUTDOWN,
                   0, 0);
}

static unsigned backoff_delay(tpi_sup *s, tpi_sup_child *c)
{
    const tp_sup_backoff *b = &s->spec.backoff;
    if (!b->min_ms)
        return 0;
    uint64_t max = b->max_ms > b->min_ms ? b->max_ms : b->min_ms;
    uint64_t d = b->min_ms;
    for (unsigned i = 0; i < c->fails && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    unsigned pct = b->jitter_pct > 100 ? 100 : b->jitter_pct;
    uint64_t span = d * pct / 100;
    if (span)
        d -= rng_next(&s->rng) % (span + 1);
    if (d < b->min_ms)
        d = b->min_ms;
    c->fails++;
    return (unsigned)d;
}

/* A child ended after having been up: forget old failures if it was up
 * long enough. */
static void backoff_uptime(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c)
{
    const tp_sup_backoff *b = &s->spec.backoff;
    uint64_t reset =
        b->reset_ms
            ? b->reset_ms
            : 10u * (uint64_t)(b->max_ms > b->min_ms ? b->max_ms : b->min_ms);
    if (tp_now_ms(ctx) - c->started_ms >= reset)
        c->fails = 0;
}

/* ------------------------------------------------------ restart timers */

void tpi_sup_cancel_restart(tp_ctx *ctx, tpi_sup_child *c)
{
    if (c->timer) {
        tp_timer_cancel(ctx, c->timer);
        c->timer = 0;
    }
}

/* In one_for_all and rest_for_one, c's timer also restarts the members
 * of its group that were stopped with it (tpi_sup_add_start_pending): it
 * passes to the first of them, which starts the same ones but c. One that
 * has a timer of its own starts them anyway. */
void tpi_sup_drop_restart(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c)
{
    tp_sup_strategy st = s->spec.strategy;
    if (c->timer && (st == TP_SUP_ONE_FOR_ALL || st == TP_SUP_REST_FOR_ONE)) {
        size_t k = st == TP_SUP_ONE_FOR_ALL ? 0 : tpi_sup_kid_index(s, c) + 1;
        for (; k < s->n; k++) {
            tpi_sup_child *o = s->kids[k];
            if (o == c || o->state != TP_CHILD_RESTARTING || o->doomed)
                continue;
            if (!o->timer) {
                o->timer = c->timer;
                c->timer = 0;
            }
            break;
        }
    }
    tpi_sup_cancel_restart(ctx, c);
}

void tpi_sup_schedule_restart(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c,
                              unsigned delay)
{
    tpi_sup_cancel_restart(ctx, c);
    tpi_sup_report(ctx, s, TP_SUP_EV_RESTARTING, c, TP_PID_NONE,
                   TP_REASON_NORMAL, 0, delay);
    if (tp_send_after(ctx, delay, TPI_SUP_TAG_RESTART, NULL, 0, &c->timer) !=
        0) {
        /* No timer: the supervisor cannot keep its promise; give up the
         * way OTP does when it cannot restart. */
        c->timer = 0;
        tpi_sup_become_shutdown(ctx, s, TP_REASON_SHUTDOWN);
    }
}

/* Restart c (RESTARTING) after delay_ms, with its group: the rest of
 * the group stops first, last started first (c itself has no step; a
 * member killed for want of memory for its step restarts on its EXIT),
 * then all start. */
static void restart_group(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c,
                          unsigned delay_ms)
{
    tpi_sup_job_begin(s, TPI_SUP_JOB_RESTART);
    tpi_sup_job *j = &s->job;
    j->target = c;
    j->delay_ms = delay_ms;
    j->then_start = true;
    size_t from = s->n;
    if (s->spec.strategy == TP_SUP_ONE_FOR_ALL)
        from = 0;
    else if (s->spec.strategy == TP_SUP_REST_FOR_ONE)
        from = tpi_sup_kid_index(s, c);
    tpi_sup_stop_range(ctx, s, from, s->n);
    tpi_sup_job_run(ctx, s);
}

void tpi_sup_restart_due(tp_ctx *ctx, tpi_sup *s, tp_timer id)
{
    for (size_t i = 0; i < s->n; i++) {
        tpi_sup_child *c = s->kids[i];
        if (c->timer != id || c->doomed)
            continue;
        c->timer = 0;
        if (c->state != TP_CHILD_RESTARTING)
            return;
        if (s->spec.strategy == TP_SUP_ONE_FOR_ALL) {
            /* The whole group again, as OTP retries: those an attempt
             * that failed had started stop first. */
            restart_group(ctx, s, c, 0);
            return;
        }
        tpi_sup_job_begin(s, TPI_SUP_JOB_RESUME);
        s->job.target = c;
        tpi_sup_add_start_pending(s, c);
        tpi_sup_job_run(ctx, s);
        return;
    }
}

void tpi_sup_add_start_pending(tpi_sup *s, tpi_sup_child *c)
{
    tp_sup_strategy st = s->spec.strategy;
    if (st == TP_SUP_ONE_FOR_ONE || st == TP_SUP_SIMPLE_ONE_FOR_ONE) {
        if (c->state == TP_CHILD_RESTARTING && !c->doomed)
            tpi_sup_job_add(s, TPI_SUP_START, c);
        return;
    }
    size_t from = st == TP_SUP_ONE_FOR_ALL ? 0 : tpi_sup_kid_index(s, c);
    for (size_t k = from; k < s->n; k++)
        if (s->kids[k]->state == TP_CHILD_RESTARTING && !s->kids[k]->doomed &&
            tpi_sup_job_add(s, TPI_SUP_START, s->kids[k]) != 0)
            break; /* out of memory: the rest stay pending, unscheduled */
}

void tpi_sup_restart_failed(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c)
{
    tpi_sup_job_truncate(s);
    c->state = TP_CHILD_RESTARTING;
    if (restart_exceeds(ctx, s)) {
        intensity_exceeded(ctx, s, c);
        tpi_sup_become_shutdown(ctx, s, TP_REASON_SHUTDOWN);
        return;
    }
    tpi_sup_schedule_restart(ctx, s, c, backoff_delay(s, c));
}

/* ---------------------------------------------------------- child exits */

static bool wants_restart(tp_child_restart r, tp_reason why)
{
    switch (r) {
    case TP_CHILD_PERMANENT: return true;
    case TP_CHILD_TRANSIENT:
        return why.kind != TP_EXIT_NORMAL && why.kind != TP_EXIT_SHUTDOWN;
    default: return false;
    }
}

void tpi_sup_child_exited(tp_ctx *ctx, tpi_sup *s, tpi_sup_child *c,
                          tp_reason why)
{
    tp_pid pid = c->pid;
    tpi_sup_report(ctx, s, TP_SUP_EV_EXITED, c, pid, why, 0, 0);
    backoff_uptime(ctx, s, c);
    if (!wants_restart(c->spec.restart, why)) {
        tpi_sup_child_stopped(c);
        return;
    }
    if (restart_exceeds(ctx, s)) {
        intensity_exceeded(ctx, s, c);
        c->pid = TP_PID_NONE;
        c->state = TP_CHILD_STOPPED;
        tpi_sup_start_shutdown(ctx, s, TP_REASON_SHUTDOWN, NULL);
        return;
    }
    c->pid = TP_PID_NONE;
    c->state = TP_CHILD_RESTARTING;
    tp_observe_restart(ctx, pid); /* restart counters (troupe/observe.h) */
    restart_group(ctx, s, c, backoff_delay(s, c));
}
