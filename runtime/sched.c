/*
 * A scheduler: one libevent loop on one thread. Ready actors wait in a
 * plain local FIFO and are drained in batches from a single libevent
 * callback (never one libevent event per message). Other threads hand
 * actors over through an MPSC inject queue and wake the loop through an
 * eventfd, only when no wake-up is already pending.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <event2/event.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define TURNS_PER_CALLBACK 256

_Thread_local tpi_sched *tpi_tls_sched;
#define tls_sched tpi_tls_sched

static void rq_push(tpi_sched *s, tpi_mpsc_node *n)
{
    s->rq_n++;
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    if (s->rq_tail)
        atomic_store_explicit(&s->rq_tail->next, n, memory_order_relaxed);
    else
        s->rq_head = n;
    s->rq_tail = n;
}

/* xorshift64*: small, fast, and the same sequence for the same seed. */
static uint64_t next_random(tpi_sched *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 0x2545F4914F6CDD1Dull;
}

static tpi_actor *rq_pop(tpi_sched *s)
{
    tpi_mpsc_node *n = s->rq_head, *prev = NULL;
    if (!n)
        return NULL;
    if (s->det) {
        /* Any ready actor may go next: a seeded pick among them. The walk
         * is linear, which test-sized queues can afford. */
        for (uint64_t k = next_random(s) % s->rq_n; k > 0; k--) {
            prev = n;
            n = atomic_load_explicit(&n->next, memory_order_relaxed);
        }
    }
    tpi_mpsc_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
    if (prev)
        atomic_store_explicit(&prev->next, next, memory_order_relaxed);
    else
        s->rq_head = next;
    if (s->rq_tail == n)
        s->rq_tail = prev;
    s->rq_n--;
    tpi_actor *a = (tpi_actor *)((char *)n - offsetof(tpi_actor, rq));
    if (s->det) /* FNV-1a over the order of turns */
        s->hash = (s->hash ^ (a->index + 1)) * 0x100000001b3ull;
    return a;
}

static void kick(tpi_sched *s)
{
    if (!s->run_active) {
        s->run_active = true;
        event_active(s->run_ev, EV_TIMEOUT, 0);
    }
}

static void drain_inject(tpi_sched *s)
{
    for (tpi_mpsc_node *n; (n = tpi_mpscq_pop_wait(&s->inject));)
        rq_push(s, n);
    if (s->rq_head)
        kick(s);
}

void tpi_sched_ready(tpi_actor *a)
{
    tpi_sched *s = a->sched;
    if (tls_sched == s) {
        rq_push(s, &a->rq);
        kick(s);
        return;
    }
    tpi_mpscq_push(&s->inject, &a->rq);
    /* acq_rel: only the pusher that flips the flag writes the eventfd; the
     * loop clears it before draining, so a later push writes again. */
    if (!atomic_exchange_explicit(&s->wake_pending, 1, memory_order_acq_rel)) {
        uint64_t one = 1;
        while (write(s->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tpi_sched *s = arg;
    uint64_t v;
    while (read(fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    /* seq_cst: the clear must precede our reads of the inject queue, so a
     * push we miss sees 0 and writes the eventfd again. */
    atomic_store_explicit(&s->wake_pending, 0, memory_order_seq_cst);
    drain_inject(s);
}

static void on_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tpi_sched *s = arg;
    drain_inject(s);
    for (int i = 0; i < TURNS_PER_CALLBACK; i++) {
        tpi_actor *a = rq_pop(s);
        if (!a)
            break;
        tpi_actor_turn(s, a);
    }
    /* Back to libevent between batches so sockets and timers are served;
     * max_dispatch_interval makes it poll before running us again. */
    s->run_active = false;
    if (s->rq_head)
        kick(s);
    else if (s->det)
        tpi_timers_advance(s); /* virtual time: on to the next deadline */
}

int tpi_sched_init(tpi_sched *s, tp_runtime *rt)
{
    s->rt = rt;
    s->wake_fd = -1;
    tpi_mpscq_init(&s->inject);
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return TP_ENOMEM;
    /* Each base is used by one thread only: no libevent locks. Check for
     * I/O after every callback, or a busy run queue starves sockets. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_max_dispatch_interval(cfg, NULL, 1, 0);
    s->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!s->base)
        return TP_ENOMEM;
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0)
        return TP_ESYS;
    s->run_ev = event_new(s->base, -1, 0, on_run, s);
    s->wake_ev =
        event_new(s->base, s->wake_fd, EV_READ | EV_PERSIST, on_wake, s);
    if (!s->run_ev || !s->wake_ev || event_add(s->wake_ev, NULL) != 0 ||
        tpi_timers_init(s) != 0)
        return TP_ENOMEM;
    return 0;
}

void tpi_sched_fini(tpi_sched *s)
{
    tpi_timer_heap_free(&s->timers);
    if (s->timers.ev)
        event_free(s->timers.ev);
    if (s->run_ev)
        event_free(s->run_ev);
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->base)
        event_base_free(s->base);
}

int tpi_sched_run(tpi_sched *s)
{
    tls_sched = s;
    drain_inject(s);
    int rc = event_base_loop(s->base, 0);
    tls_sched = NULL;
    return rc < 0 ? TP_ESYS : 0;
}

void tpi_sched_stop(tpi_sched *s) { event_base_loopbreak(s->base); }
