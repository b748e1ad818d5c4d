/*
 * Actor lifecycle: spawn, a turn (taking a batch of messages and running
 * the behavior), selective receive, and the end of an actor, which always
 * happens at the end of a turn — never under the behavior's feet.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runq.h"
#include "runtime/runtime.h"
#include "troupe/observe.h" /* issue 8: TP_SPAWN_OBSERVE */

#include <string.h>

static tp_runtime *rt_of(tpi_actor *a) { return tpi_actor_rt(a); }

tpi_actor_ext *tpi_actor_ext_get(tpi_actor *a)
{
    if (!a->ext) {
        a->ext = tpi_calloc(sizeof *a->ext);
        if (a->ext)
            a->ext->rto_ms = -1;
    }
    return a->ext;
}

tpi_sched *tpi_ctx_sched(tp_ctx *ctx)
{
    tpi_sched *s = tpi_sched_current();
    /* A NULL ctx matches only an s->cur of NULL: no turn. */
    return s && ctx && (tpi_actor *)ctx == s->cur ? s : NULL;
}

tpi_actor *tpi_ctx_actor(tp_ctx *ctx)
{
    tpi_sched *s = tpi_ctx_sched(ctx);
    return s ? s->cur : NULL;
}

/* ---------------------------------------------------------------- spawn */

static void close_resources(tpi_actor *a);

/* This thread's stock of free slots, if it is one of rt's schedulers. */
static tpi_slot_cache *slot_cache(tp_runtime *rt)
{
    tpi_sched *s = tpi_sched_current();
    return s && s->rt == rt ? &s->slots : NULL;
}

/* A free slot that is ours to set up. Only a slot's home handles its
 * notes (runtime/sched.c), so a slot whose home is this thread is ours
 * as it is; any other we claim by raising its notes from zero, which
 * keeps its home from touching it (and senders from noting it) until we
 * clear them (*claimed). A slot with notes pending is having stray mail
 * flushed by its home: skipped. */
static void drain_mailbox(tp_runtime *rt, tp_pid pid, tp_reason why,
                          tpi_actor *a);

/* A claimed free slot we do not use after all: its stray mail goes as
 * dead letters, then its notes are cleared (as its home does, on_note). */
static void unclaim(tp_runtime *rt, tpi_actor *a)
{
    uint32_t seen = tpi_mailbox_notes(&a->mb);
    do
        tpi_actor_flush(rt, a);
    while (!tpi_mailbox_notes_done(&a->mb, &seen));
}

/* Raise a free slot's notes from zero (see take_slot). */
static bool claim(tpi_actor *a)
{
    uint32_t zero = 0;
    /* acquire: pairs with the release of tpi_mailbox_notes_done, so the
     * home's last writes to the slot are visible to us. */
    return atomic_compare_exchange_strong_explicit(&a->mb.notes, &zero,
                                                   TPI_NOTE_READY,
                                                   memory_order_acquire,
                                                   memory_order_relaxed);
}

static tpi_actor *take_slot(tp_runtime *rt, bool *claimed)
{
    tpi_actor *a, *busy = NULL;
    tpi_slot_cache *c = slot_cache(rt);
    tpi_sched *me = tpi_sched_current();
    while ((a = tpi_table_take(rt->table, c))) {
        *claimed = !me || tpi_home(a) != me;
        if (!*claimed || claim(a))
            break;
        a->free_next = busy ? tpi_slot_index(busy) + 1 : 0;
        busy = a;
    }
    while (busy) { /* rare: back to the free list for later spawns */
        tpi_actor *next = busy->free_next
                              ? tpi_table_at(rt->table, busy->free_next - 1)
                              : NULL;
        tpi_table_put(rt->table, NULL, busy); /* shared list: not next */
        busy = next;
    }
    return a;
}

/* Count a spawn from outside any actor, unless the run is over: once it
 * has started, a count of zero means every actor ended and the schedulers
 * are stopping, and no actor may start after that (nobody would run it). */
static bool live_from_outside(tp_runtime *rt)
{
    uint64_t l = atomic_load_explicit(&rt->live, memory_order_relaxed);
    do {
        if (l == TPI_LIVE_RUN)
            return false;
        /* acq_rel: ordered with the decrement that would end the run. */
    } while (!atomic_compare_exchange_weak_explicit(&rt->live, &l, l + 1,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

/* A used slot back to the table, unless its generations just wrapped
 * (gen 0 again after 2^23 actors): the next pids would be those its first
 * actors had, and a pid of an ended actor must never reach a later one.
 * Such a slot is retired, never taken again (one slot per 2^23 spawns). */
static void put_slot(tp_runtime *rt, tpi_actor *a)
{
    if (tpi_slot_gen(a) != 0)
        tpi_table_put(rt->table, slot_cache(rt), a);
}

/* A slot taken for a spawn that fails after all: back to the table. */
static int give_back(tp_runtime *rt, tpi_actor *a, bool claimed,
                     tpi_actor *parent)
{
    tpi_actor_release_ext(a);
    a->behavior = NULL;
    /* The caller frees its state itself; the slot's next actor must not. */
    tpi_slot_cold *c = tpi_table_cold(rt->table, a, false);
    if (c)
        c->state_free = NULL;
    uint32_t gen = tpi_slot_gen(a);
    if (gen & 1u) /* made live already: free again (release, as at death) */
        tpi_slot_set_gen(a, tpi_gen_next(gen));
    if (claimed) /* stale mail that came meanwhile, then the notes */
        unclaim(rt, a);
    if (gen & 1u)
        put_slot(rt, a);
    else /* never made live: its generation did not move */
        tpi_table_put(rt->table, slot_cache(rt), a);
    if (!parent)
        tpi_runtime_actor_gone(rt);
    return TP_ENOMEM;
}

/* spawn, on one of rt's scheduler threads or with readers of every
 * actor's state kept out (tpi_world_foreign_enter). */
static int spawn_in(tp_runtime *rt, tpi_actor *parent, tp_behavior b,
                    void *state, const void *init, size_t len,
                    const tp_spawn_opts *opts, tp_pid *pid_out)
{
    if (!b)
        return TP_EINVAL;
    size_t cap = opts && opts->mailbox_capacity ? opts->mailbox_capacity
                                                : rt->cfg.mailbox_capacity;
    unsigned flags = opts ? opts->flags : 0;
    if (flags & ~(TP_SPAWN_LINK | TP_SPAWN_TRAP_EXIT | TP_SPAWN_OBSERVE) ||
        ((flags & TP_SPAWN_LINK) && !parent))
        return TP_EINVAL;
    if (!parent && !live_from_outside(rt))
        return TP_ESTATE;
    bool claimed = false;
    tpi_actor *a = take_slot(rt, &claimed);
    if (!a) {
        if (!parent)
            tpi_runtime_actor_gone(rt);
        return TP_ENOMEM;
    }
    if (init) {
        if (!(state = tpi_table_state(rt->table, a)))
            return give_back(rt, a, claimed, parent);
        memcpy(state, init, len);
    }
    /* The slot is ours (take_slot), so nothing runs it. The mailbox
     * (queue and count) is left as the slot's last owner left it: stale
     * messages still in it are dead letters by generation. */
    if (opts && opts->state_free) {
        tpi_slot_cold *c = tpi_table_cold(rt->table, a, true);
        if (!c)
            return give_back(rt, a, claimed, parent);
        c->state_free = opts->state_free; /* finalize clears it */
    }
    a->behavior = b;
    a->state = state;
    tpi_sched *here = tpi_sched_current();
    if (!here || here->rt != rt) /* from outside: round robin */
        here = &rt->scheds[atomic_fetch_add_explicit(&rt->next_home, 1,
                                                     memory_order_relaxed) %
                           rt->nsched];
    /* release: pairs with tpi_home's acquire (see runtime/sched.c). */
    atomic_store_explicit(&a->home, here, memory_order_release);
    a->ext = NULL;
    a->partner = 0; /* was the free-list link: no stale partner */
    a->flags = (flags & TP_SPAWN_TRAP_EXIT) ? TPI_ACT_TRAP : 0;
    a->parent = parent ? tpi_actor_pid(parent) : TP_PID_NONE;
    /* relaxed: senders only estimate with it */
    atomic_store_explicit(&a->mb.capacity,
                          cap >= TPI_MAILBOX_UNBOUNDED ? TPI_MAILBOX_UNBOUNDED
                                                       : (uint32_t)cap,
                          memory_order_relaxed);
    /* Live: the generation turns odd. release: a sender that reads it
     * (acquire) sees the slot set up above; before this, no pid could
     * name the slot (an even generation is refused by tpi_table_slot). */
    tpi_slot_set_gen(a, tpi_gen_next(tpi_slot_gen(a)));
    /* issue 8: counters; the link comes last, as it cannot be undone */
    if (tpi_obs_spawn(rt, a, flags) != 0 ||
        ((flags & TP_SPAWN_LINK) && tpi_link_spawned(parent, a) != 0))
        return give_back(rt, a, claimed, parent);
    tp_pid pid = tpi_actor_pid(a);
    if (parent) /* counted at parent's scheduler (runtime/runtime.h) */
        tpi_runtime_actor_born(tpi_sched_current());
    TPI_STAT(rt, spawned, 1);
    if (a->flags & TPI_ACT_OBS)
        TPI_STAT(rt, observed, 1);
    /* TP_TAG_START is not a queued message but a flag: no allocation per
     * spawn, and it is always the first thing handled. */
    a->flags |= TPI_ACT_START;
    /* before it can run elsewhere: it may read *pid_out. Atomic, relaxed:
     * rt->root is one, which actors ending on other threads compare their
     * pids with while tp_run spawns it (tpi_runtime_actor_ended). */
    if (pid_out)
        __atomic_store_n(pid_out, pid, __ATOMIC_RELAXED);
    a->sched = true; /* we queue it */
    /* release: every write above is made before the slot's home (or a
     * sender noting it) may look at it again. */
    if (claimed)
        atomic_store_explicit(&a->mb.notes, 0, memory_order_release);
    if (here == tpi_sched_current())
        tpi_sched_queue_next(here, a);
    else
        tpi_sched_ready(a);
    return 0;
}

/* tpi_spawn; with init, the state is len bytes copied from it into the
 * slot's inline state block (tp_spawn_inline). */
static int spawn(tp_runtime *rt, tpi_actor *parent, tp_behavior b, void *state,
                 const void *init, size_t len, const tp_spawn_opts *opts,
                 tp_pid *pid_out)
{
    tpi_sched *cur = tpi_sched_current();
    if (cur && cur->rt == rt) /* readers stop this thread at safe points */
        return spawn_in(rt, parent, b, state, init, len, opts, pid_out);
    tpi_world_foreign_enter(rt);
    int rc = spawn_in(rt, parent, b, state, init, len, opts, pid_out);
    tpi_world_foreign_leave(rt);
    return rc;
}

int tpi_spawn(tp_runtime *rt, tpi_actor *parent, tp_behavior b, void *state,
              const tp_spawn_opts *opts, tp_pid *pid_out)
{
    return spawn(rt, parent, b, state, NULL, 0, opts, pid_out);
}

int tp_spawn(tp_ctx *ctx, tp_behavior b, void *state, const tp_spawn_opts *opts,
             tp_pid *pid_out)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    return tpi_spawn(rt_of(a), a, b, state, opts, pid_out);
}

int tp_spawn_inline(tp_ctx *ctx, tp_behavior b, const void *init, size_t len,
                    const tp_spawn_opts *opts, tp_pid *pid_out)
{
    static const char none; /* init of an empty state: any address */
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (len > TP_INLINE_STATE_MAX || (!init && len))
        return TP_EINVAL;
    return spawn(rt_of(a), a, b, NULL, init ? init : &none, len, opts, pid_out);
}

tp_pid tp_self(tp_ctx *ctx)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    return a ? tpi_actor_pid(a) : TP_PID_NONE;
}

tp_runtime *tp_ctx_runtime(tp_ctx *ctx)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    return a ? rt_of(a) : NULL;
}

/* ----------------------------------------------------------------- exit */

void tpi_actor_set_exit(tpi_actor *a, tp_reason r)
{
    if (r.kind == TP_EXIT_KILL)
        r = (tp_reason){TP_EXIT_KILLED, 0, NULL};
    a->flags = (a->flags & ((1u << TPI_ACT_EXIT_SHIFT) - 1)) | TPI_ACT_EXITING |
               ((uint32_t)r.kind << TPI_ACT_EXIT_SHIFT);
    /* A reason the kind alone tells (tpi_actor_exit_reason) needs no
     * extension: most actors end so, and would allocate one just here. */
    if (!a->ext && !r.code && !r.text && r.kind != TP_EXIT_ERROR)
        return;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (!x)
        return; /* the kind is kept in flags; code and text are lost */
    char *text = r.text ? tpi_strndup(r.text, TP_REASON_TEXT_MAX) : NULL;
    tpi_free((char *)x->reason.text);
    x->reason = (tp_reason){r.kind, r.code, text};
}

int tp_exit(tp_ctx *ctx, tp_reason reason)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (reason.kind < TP_EXIT_NORMAL || reason.kind > TP_EXIT_KIND_MAX)
        return TP_EINVAL;
    tpi_actor_set_exit(a, reason);
    return 0;
}

tp_reason tpi_actor_exit_reason(tpi_actor *a)
{
    tp_exit_kind kind = (tp_exit_kind)(a->flags >> TPI_ACT_EXIT_SHIFT);
    if (a->ext && a->ext->reason.kind == kind)
        return a->ext->reason;
    return (tp_reason){kind, kind == TP_EXIT_ERROR ? TP_ENOMEM : 0, NULL};
}

/* Free everything an ended actor still owns; messages become dead letters
 * (answered as needed) when rt is given, or are just freed at teardown. */
static void drop_msgs(tp_runtime *rt, tp_pid pid, tpi_msglist *l)
{
    for (tpi_msg *m; (m = tpi_msglist_pop(l));)
        if (rt) {
            tpi_obs_dead_letter(rt, pid, m); /* issue 8 */
            tpi_dead_letter(rt, pid, m);
        } else
            tpi_msg_free(m);
}

void tpi_actor_release_ext(tpi_actor *a)
{
    tpi_actor_ext *x = a->ext;
    if (!x)
        return;
    tpi_pidset_free(&x->links);
    tpi_free(x->watchers.v);
    tpi_free(x->monitoring.v);
    for (tp_reply_handle *r = x->replies, *n; r; r = n) {
        n = r->next;
        tpi_free(r);
    }
    tpi_free(x->obs); /* issue 8 */
    tpi_free(x->name);
    tpi_free((char *)x->reason.text);
    tpi_free(x);
    a->ext = NULL;
}

/* Take every message out of the mailbox of an ending actor (pid, reason
 * why); rt NULL at teardown just frees them. */
static void drain_mailbox(tp_runtime *rt, tp_pid pid, tp_reason why,
                          tpi_actor *a)
{
    tpi_mailbox_take_remote(&a->mb);
    for (tpi_msg *m; (m = (tpi_msg *)tpi_mailbox_pop(&a->mb));) {
        tp_pid to = rt ? tpi_pid_make(tpi_slot_index(a), m->to_gen)
                       : TP_PID_NONE;
        if (rt && m->tag == TPI_SIG_EXIT)
            tpi_exit_taken(rt, a, m);
        if (rt)
            tpi_obs_dead_letter(rt, to, m); /* issue 8 */
        if (!rt)
            tpi_msg_free(m);
        else if (m->to_gen == tpi_pid_gen(pid))
            tpi_dead_letter_why(rt, pid, m, why);
        else
            tpi_dead_letter(rt, to, m);
    }
}

static void finalize(tpi_actor *a)
{
    tp_runtime *rt = rt_of(a);
    tp_reason r = tpi_actor_exit_reason(a);
    tp_pid pid = tpi_actor_pid(a);
    tpi_actor_ext *x = a->ext;
    if (x && x->name) {
        tpi_names_release(rt->names, x->name, pid);
        tpi_free(x->name);
        x->name = NULL;
    }
    tpi_signal_death(a, r);
    if (a->flags & TPI_ACT_ENDHOOK) /* names, groups held by a node */
        tpi_remote_ended(rt, pid);
    close_resources(a);
    tpi_replies_fail(a);
    tpi_pending_free_all(a);
    tpi_timers_free_all(a);
    tpi_runtime_actor_ended(rt, a, r);
    /* release: pairs with the senders' acquire load; from here on sends
     * to pid are dead letters at the sender. */
    tpi_slot_set_gen(a, tpi_gen_next(tpi_pid_gen(pid)));
    if (x) {
        drop_msgs(rt, pid, &x->replay);
        drop_msgs(rt, pid, &x->stash);
    }
    drain_mailbox(rt, pid, r, a);
    tpi_slot_cold *c = tpi_table_cold(rt->table, a, false);
    void (*sf)(void *) = c ? c->state_free : NULL;
    void *state = a->state;
    tpi_actor_release_ext(a);
    a->behavior = NULL;
    uint32_t gen = tpi_slot_gen(a);
    if (gen & 1u) /* made live already: free again (release, as at death) */
        tpi_slot_set_gen(a, tpi_gen_next(gen));
    a->state = NULL;
    if (c)
        c->state_free = NULL;
    a->flags = 0;
    /* relaxed: the next owner of the slot starts uncongested; the senders
     * paused on us are resumed just below either way. */
    atomic_store_explicit(&a->congested, 0, memory_order_relaxed);
    tpi_drained(rt, a);
    /* Senders that raced our generation bump and pushed after the drain
     * found the remote stack empty and noted us: on_note flushes their
     * mail as dead letters, and meanwhile no other thread takes the slot
     * (take_slot). */
    a->sched = false;
    /* Before the slot is free: another thread may take it at once, and an
     * inline state (tp_spawn_inline) is the slot's memory. */
    if (sf)
        sf(state);
    put_slot(rt, a);
    tpi_runtime_actor_gone_on(tpi_sched_current()); /* in a turn (below) */
}

void tpi_actor_flush(tp_runtime *rt, tpi_actor *a)
{
    drain_mailbox(rt, tpi_actor_pid(a), TP_REASON_NORMAL, a);
}

void tpi_actor_teardown(tpi_actor *a, void *rt)
{
    if (a->ext) {
        drop_msgs(NULL, 0, &a->ext->replay);
        drop_msgs(NULL, 0, &a->ext->stash);
        tpi_pending_free_all(a);
        tpi_timers_free_all(a);
        close_resources(a);
    }
    drain_mailbox(NULL, 0, TP_REASON_NORMAL, a);
    tpi_actor_release_ext(a);
    tpi_slot_cold *c = tpi_table_cold(((tp_runtime *)rt)->table, a, false);
    if (a->behavior && c && c->state_free)
        c->state_free(a->state);
    a->behavior = NULL;
}

/* ------------------------------------------------------------ resources */

int tpi_resource_add(tpi_actor *a, tpi_resource *r)
{
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (!x)
        return TP_ENOMEM;
    r->next = x->resources;
    x->resources = r;
    return 0;
}

static void close_resources(tpi_actor *a)
{
    while (a->ext && a->ext->resources) {
        tpi_resource *r = a->ext->resources;
        a->ext->resources = r->next;
        r->close(r);
    }
}

/* --------------------------------------------------------- selective rx */

int tp_become(tp_ctx *ctx, tp_behavior b)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (!b)
        return TP_EINVAL;
    a->behavior = b;
    /* The deferred messages are offered again once this call returns (see
     * handle), so one deferred by this very call keeps its place. */
    a->flags |= TPI_ACT_BECAME;
    return 0;
}

void tpi_rto_rearm(tpi_actor *a)
{
    tpi_actor_ext *x = a->ext;
    if (x->rto_timer)
        tpi_timer_cancel(a, x->rto_timer);
    x->rto_timer = 0;
    if (x->rto_ms >= 0 &&
        tpi_timer_start(a, TPI_TIMER_RECV, (uint64_t)x->rto_ms * 1000000u, 0, 0,
                        NULL, 0, 0, &x->rto_timer) != 0)
        x->rto_timer = 0; /* out of memory: no timeout this time */
}

int tp_receive_timeout(tp_ctx *ctx, int ms)
{
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    tpi_actor_ext *x = tpi_actor_ext_get(a);
    if (!x)
        return TP_ENOMEM;
    x->rto_ms = ms < 0 ? -1 : ms;
    a->flags = ms < 0 ? a->flags & ~(uint32_t)TPI_ACT_RTO
                      : a->flags | TPI_ACT_RTO;
    tpi_rto_rearm(a);
    return 0;
}

/* ----------------------------------------------------------------- turn */

/* After a behavior call that did not keep m: answer a request it left
 * unanswered, free m, and end the actor or re-arm its receive timeout as
 * r and its state say. Returns r. */
static inline int settle(tpi_actor *a, tpi_msg *m, int r)
{
    if (r < 0) /* first: a request it crashed on is answered TP_ENOPROC */
        tpi_actor_set_exit(a, TP_REASON_ERROR(r, tp_strerror(r)));
    if (m->flags & TPI_MSG_REQUEST)
        tpi_reply_settle(a, m);
    tpi_msg_release(m);
    if ((a->flags & (TPI_ACT_RTO | TPI_ACT_EXITING)) == TPI_ACT_RTO)
        tpi_rto_rearm(a);
    return r;
}

int tpi_deferred_forget(tpi_actor *a, tp_ref ref, bool timer)
{
    int dropped = 0;
    if (!a->ext)
        return 0;
    tpi_msglist *lists[] = {&a->ext->stash, &a->ext->replay};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        tpi_msglist keep = {NULL, NULL};
        for (tpi_msg *m; (m = tpi_msglist_pop(lists[i]));) {
            bool of_timer = (m->flags & TPI_MSG_TIMER) != 0;
            if (m->ref == ref && of_timer == timer &&
                (timer || m->tag == TP_TAG_DOWN)) {
                tpi_msg_free(m);
                dropped++;
            } else
                tpi_msglist_push(&keep, m);
        }
        *lists[i] = keep;
    }
    if (!a->ext->replay.head)
        a->flags &= ~(uint32_t)TPI_ACT_REPLAY;
    return dropped;
}

/* handle, after a behavior call that deferred m or changed behavior. */
static int handle_kept(tpi_actor *a, tpi_msg *m, int r, bool became)
{
    if (r == TP_DEFER && (m->flags & TPI_MSG_STATIC))
        r = TP_HANDLED; /* the start message cannot be kept */
    tpi_actor_ext *x = NULL;
    if (r == TP_DEFER || became)
        x = tpi_actor_ext_get(a);
    if (r == TP_DEFER && !x)
        r = TP_ENOMEM; /* cannot keep it: end rather than lose it silently */
    if (r == TP_DEFER) {
        /* Offered again later: its timer, pending call or monitor is
         * settled now (tpi_actor_dispatch). */
        m->flags |= TPI_MSG_SETTLED;
        tpi_msglist_push(&x->stash, m);
    }
    /* After a behavior change every deferred message is offered again, in
     * arrival order, before anything newer (replay holds only newer ones). */
    if (became && x && x->stash.head) {
        tpi_msglist_prepend(&x->replay, &x->stash);
        a->flags |= TPI_ACT_REPLAY;
    }
    return r == TP_DEFER ? r : settle(a, m, r);
}

/* handle, after any behavior call but the common one. */
static __attribute__((noinline)) int handle_rest(tpi_actor *a, tpi_msg *m,
                                                 int r)
{
    bool became = a->flags & TPI_ACT_BECAME;
    a->flags &= ~(uint32_t)TPI_ACT_BECAME;
    if (r == TP_DEFER || became)
        return handle_kept(a, m, r, became);
    return settle(a, m, r);
}

/* Returns TP_DEFER when m was kept, else what the behavior returned. */
static inline int handle(tpi_sched *s, tpi_actor *a, tpi_msg *m)
{
    tpi_sched_tick(s, m->tag);
    int r = a->behavior((tp_ctx *)a, a->state, m);
    /* The common case: m consumed, no reply owed (not a request, or one
     * answered), no behavior change, no receive timeout to re-arm. Most
     * common of all: no request, a node for the cache (one test). */
    if (r == TP_HANDLED && !(a->flags & (TPI_ACT_BECAME | TPI_ACT_RTO))) {
        if (!(m->flags & (TPI_MSG_REQUEST | TPI_MSG_LARGE | TPI_MSG_OWNED |
                          TPI_MSG_STATIC))) {
            tpi_msg_recycle(m);
            return r;
        }
        if (!tp_msg_wants_reply(m)) {
            tpi_msg_release(m);
            return r;
        }
    }
    return handle_rest(a, m, r);
}

/* issue 8: an observed actor's behavior call, counted and maybe timed.
 * Its ext (and ext->obs) lives until finalize, after the turn. */
static __attribute__((noinline)) void handle_observed(tpi_sched *s,
                                                      tpi_actor *a, tpi_msg *m)
{
    tpi_actor_obs *o = a->ext->obs;
    uint64_t t0 = (a->flags & TPI_ACT_OBS_TIME) ? tpi_now_ns() : 0;
    int r = handle(s, a, m);
    if (t0)
        o->handler_ns += tpi_now_ns() - t0;
    if (r == TP_DEFER)
        o->deferred++;
    else
        o->handled++;
}

/* The filters of tpi_actor_dispatch for what is not a plain user message
 * seen for the first time: true if m is still for the behavior. */
static __attribute__((noinline)) bool wanted(tpi_sched *s, tpi_actor *a,
                                             tpi_msg *m)
{
    if (m->flags & TPI_MSG_SETTLED)
        /* A deferred message offered again: its timer, pending call or
         * monitor was settled when it first came in. */
        return true;
    if (m->flags & TPI_MSG_TIMER)
        return tpi_timer_claim(a, m->ref);
    if (m->tag == TP_TAG_REPLY) {
        bool give = tpi_pending_take(a, m->ref);
        if (!give && !(m->flags & TPI_MSG_SYNTH))
            TPI_STAT(s->rt, late_replies, 1);
        else if (give && (m->flags & TPI_MSG_SYNTH) &&
                 m->status == TP_ETIMEDOUT)
            tpi_remote_call_expired(s->rt, tpi_actor_pid(a), m->ref);
        return give;
    }
    if (m->tag == TP_TAG_TIMEOUT) {
        bool give = a->ext && a->ext->rto_timer == m->ref;
        if (give) { /* one-shot, like Erlang's after: set it again to re-arm */
            a->ext->rto_timer = 0;
            a->ext->rto_ms = -1;
            a->flags &= ~(uint32_t)TPI_ACT_RTO;
        }
        return give;
    }
    return m->tag >= 0 || m->tag == TP_TAG_START || tpi_signal_handle(a, m);
}

/* m is for an actor that has ended: a dead letter. */
static __attribute__((noinline, cold)) void
dispatch_dead(tpi_sched *s, tpi_actor *a, tpi_msg *m)
{
    tp_pid to = tpi_pid_make(tpi_slot_index(a), m->to_gen);
    if (m->tag == TPI_SIG_EXIT)
        tpi_exit_taken(s->rt, a, m);
    tpi_obs_dead_letter(s->rt, to, m); /* issue 8 */
    tpi_dead_letter(s->rt, to, m);
}

/* Route one message: signals and runtime replies are settled here; what
 * is left goes to the behavior. Inline in the turn. pid: a's (the turn's);
 * observed: a is observed (TPI_ACT_OBS, set only at spawn, so a caller
 * that tested the flags already passes what it found). */
static inline void dispatch_to(tpi_sched *s, tpi_actor *a, tpi_msg *m,
                               tp_pid pid, bool observed)
{
    if (!a->behavior || m->to_gen != tpi_pid_gen(pid)) {
        dispatch_dead(s, a, m);
        return;
    }
    /* The common case, a user message seen for the first time, passes
     * with one test. */
    if ((m->flags & (TPI_MSG_SYS | TPI_MSG_SETTLED | TPI_MSG_TIMER)) &&
        !wanted(s, a, m)) {
        tpi_msg_free(m);
        return;
    }
    if (observed) /* issue 8: one branch when off */
        handle_observed(s, a, m);
    else
        handle(s, a, m);
}

static inline void dispatch(tpi_sched *s, tpi_actor *a, tpi_msg *m)
{
    dispatch_to(s, a, m, tpi_actor_pid(a), a->flags & TPI_ACT_OBS);
}

void tpi_actor_dispatch(tpi_sched *s, tpi_actor *a, tpi_msg *m)
{
    dispatch(s, a, m);
}

/* The start of a turn of an actor that is observed, not started yet or
 * just moved here:
 * returns the messages it took from the budget (the start message). */
static __attribute__((noinline)) unsigned turn_start(tpi_sched *s, tpi_actor *a)
{
    if (a->flags & TPI_ACT_MOVED) { /* its events come to this loop first */
        a->flags &= ~(uint32_t)TPI_ACT_MOVED;
        for (tpi_resource *r = a->ext->resources; r; r = r->next)
            if (r->attach)
                r->attach(r, s->base);
    }
    if (a->flags & TPI_ACT_OBS) /* issue 8: mailbox high-water mark */
        tpi_obs_turn(a);
    if (!(a->flags & TPI_ACT_START) || !a->behavior)
        return 0;
    tpi_msg start = {.tag = TP_TAG_START,
                     .from = a->parent,
                     .to_gen = tpi_slot_gen(a),
                     .flags = TPI_MSG_STATIC | TPI_MSG_SYS};
    a->flags &= ~(uint32_t)TPI_ACT_START;
    dispatch(s, a, &start);
    return 1;
}

/* The next deferred message offered again, if any (TPI_ACT_REPLAY). */
tpi_msg *tpi_actor_replay_pop(tpi_actor *a)
{
    tpi_msg *m = tpi_msglist_pop(&a->ext->replay);
    if (!a->ext->replay.head)
        a->flags &= ~(uint32_t)TPI_ACT_REPLAY;
    return m;
}

/* The end of a's turn, after popped messages from its mailbox (remote of
 * them moved in from other threads at its start; from, the last one's
 * sender): end it, pause it, queue it again or leave it idle. left_empty:
 * the caller saw a's local FIFO and replay list empty after the last
 * call; observed: a may be observed (see dispatch_to). Returns the turn's
 * measure of work. */
static inline __attribute__((always_inline)) unsigned
turn_end(tpi_sched *s, tpi_actor *a, uint32_t popped, uint32_t remote,
         tp_pid from, bool left_empty, bool observed)
{
    tpi_mailbox *mb = &a->mb;
    tpi_sched_leave(s);
    if (a->flags & TPI_ACT_EXITING) {
        finalize(a);
        return popped + 1;
    }
    if (observed && (a->flags & TPI_ACT_OBS))
        tpi_obs_turn(a); /* issue 8 */
    /* Senders on other threads push during the turn, so the count may
     * have reached capacity at any point of it (then someone may be
     * waiting): at most after + popped. Below that, nobody can wait on us
     * and we skip the fence tpi_drained needs. after < cap <= after +
     * popped, in one test: 1 <= cap - after <= popped (mod 2^32; counts
     * near 2^32 over a small capacity may call it for nothing). */
    uint32_t after = tpi_mailbox_count(mb);
    if (tpi_mailbox_cap(mb) - after - 1u < popped) {
        tpi_drained(s->rt, a);
        left_empty = false; /* a resource's drained callback may mail a */
    }
    if (s->pause_on) {
        tpi_pause(s->rt, a, s->pause_on); /* keeps the flag while parked */
        return popped + 1;
    }
    if ((!left_empty &&
         (!tpi_mailbox_local_empty(mb) || (a->flags & TPI_ACT_REPLAY))) ||
        tpi_mailbox_remote_waiting(mb))
        tpi_sched_queue(s, a);
    else if (popped != 1 || !remote || !tpi_sched_follow(s, a, from))
        a->sched = false; /* idle: the remote stack was seen empty just
                             above, and a push after that notes us */
    return popped + 1;
}

/* A turn from its message loop on, with popped messages taken so far and
 * budget left (remote of them moved in from other threads). Out of line:
 * the common turn (below) needs no loop, and the batch loop it is
 * inlined into keeps fewer registers live. */
static __attribute__((noinline)) unsigned turn_loop(tpi_sched *s, tpi_actor *a,
                                                    uint32_t remote,
                                                    uint32_t popped,
                                                    unsigned budget)
{
    tpi_mailbox *mb = &a->mb;
    tp_pid from = TP_PID_NONE; /* the last mailbox message's sender */
    /* Checked after each message rather than before, so a turn that ends
     * on an empty mailbox makes them once less. */
    bool go = budget > 0 && !(a->flags & TPI_ACT_EXITING) && !s->pause_on;
    while (go) {
        tpi_msg *m;
        if ((a->flags & TPI_ACT_REPLAY) && (m = tpi_actor_replay_pop(a)))
            ;
        else if ((m = (tpi_msg *)tpi_mailbox_pop(mb))) {
            popped++;
            from = m->from;
        } else
            break;
        dispatch(s, a, m);
        /* Nothing left (the common end): no budget, exit or pause test. */
        uint32_t f = a->flags;
        if (tpi_mailbox_local_empty(mb) && !(f & TPI_ACT_REPLAY))
            break;
        go = --budget > 0 && !(f & TPI_ACT_EXITING) && !s->pause_on;
    }
    return turn_end(s, a, popped, remote, from, false, true);
}

/* Any turn but the common one: remote mail to take, the start message or
 * the observer's due, deferred messages to replay, or several messages. */
static __attribute__((noinline)) unsigned turn_general(tpi_sched *s,
                                                       tpi_actor *a)
{
    uint32_t remote = tpi_mailbox_take_remote(&a->mb);
    unsigned budget = s->budget;
    tpi_sched_enter(s, a, tpi_actor_pid(a));
    tpi_sched_tick_turn(s);
    /* At the start the loop's conditions hold: a budget is at least 1, an
     * actor ends at the end of the turn in which it exits, and
     * tpi_sched_enter cleared pause_on. */
    if (a->flags & (TPI_ACT_OBS | TPI_ACT_START | TPI_ACT_MOVED))
        budget -= turn_start(s, a);
    return turn_loop(s, a, remote, 0, budget);
}

/* Inlined into the batch loops of runtime/sched.c (with LTO; the header
 * declares it extern, so this is also its one external definition). The
 * common turn, inline: one message in the local FIFO, from this thread
 * (nothing on the remote stack), nothing to start, observe or replay: a
 * message to an idle actor. If its call leaves more, the loop goes on. */
__attribute__((always_inline)) inline unsigned tpi_actor_turn(tpi_sched *s,
                                                              tpi_actor *a)
{
    tpi_mailbox *mb = &a->mb;
    if ((a->flags &
         (TPI_ACT_OBS | TPI_ACT_START | TPI_ACT_REPLAY | TPI_ACT_MOVED)) ||
        !tpi_mailbox_local_one(mb) || tpi_mailbox_remote_waiting(mb))
        return turn_general(s, a);
    tpi_msg *m = (tpi_msg *)tpi_mailbox_pop_last(mb);
    tp_pid pid = tpi_actor_pid(a);
    tpi_sched_enter(s, a, pid);
    tpi_sched_tick_turn(s);
    dispatch_to(s, a, m, pid, false);
    /* An empty asm that GCC must assume changes a: it reads a's fields
     * through a again instead of keeping their addresses in callee-saved
     * registers across the behavior call (and spilling m). */
    __asm__("" : "+r"(a));
    mb = &a->mb;
    if (tpi_mailbox_local_empty(mb) && !(a->flags & TPI_ACT_REPLAY))
        return turn_end(s, a, 1, 0, TP_PID_NONE, true, false);
    return turn_loop(s, a, 0, 1, s->budget - 1);
}
