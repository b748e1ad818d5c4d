/*
 * The blocking pool: a FIFO of jobs under one mutex, served by up to n
 * threads started on demand. A job's result travels back like any oneshot
 * value (a TP_TAG_REPLY delivered from a foreign thread), so the loop
 * never waits for a pool thread. tp_runtime_free runs what is still
 * queued, then joins the threads (the service's stop).
 *
 * Uses: runtime/service.h (its state, posting replies) and the public
 * headers.
 */
#include "runtime/service.h"
#include "troupe/pool.h"

#include <pthread.h>

typedef struct tpi_job {
    struct tpi_job *next;
    tp_blocking_fn fn;
    void *arg;
    tp_pid to;
    tp_ref ref;
} tpi_job;

typedef struct tpi_pool {
    tp_runtime *rt;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tpi_job *head, *tail;
    /* idle: threads waiting for a job; queued: jobs not taken yet. A
     * thread counts as idle until it has the lock back after its wake-up,
     * so jobs queued meanwhile are already promised to idle ones. */
    unsigned max, started, idle, queued;
    bool stop;
    pthread_t threads[TP_BLOCKING_THREADS_MAX];
} tpi_pool;

static void *pool_make(tp_runtime *rt)
{
    tpi_pool *p = tp_calloc(sizeof *p);
    if (p) {
        p->rt = rt;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->max = TP_BLOCKING_THREADS_DEFAULT;
    }
    return p;
}

/* Run what is queued, then join the threads: before actors are torn
 * down, since jobs may still deliver to them. */
static void pool_stop(tp_runtime *rt, void *state)
{
    (void)rt;
    tpi_pool *p = state;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
}

static void pool_free(tp_runtime *rt, void *state)
{
    (void)rt;
    tpi_pool *p = state;
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    tp_free(p);
}

static const tpi_svc_ops pool_ops = {.make = pool_make,
                                     .stop = pool_stop,
                                     .free = pool_free};

static tpi_pool *pool_get(tp_runtime *rt)
{
    return tpi_svc_get(rt, TPI_SVC_POOL, &pool_ops);
}

/* The job's result to its oneshot: out (from the allocator) moves into
 * the reply; a payload that could not be delivered (not valid msgpack,
 * over max_payload, out of memory) answers why instead. */
static void deliver(tp_runtime *rt, tpi_job *j, int status, void *out,
                    size_t len)
{
    tpi_envelope e = {.tag = TP_TAG_REPLY, .ref = j->ref, .status = status};
    if (status == 0 && out && len) {
        e.data = out;
        e.len = len;
        int rc = tpi_svc_post(rt, j->to, &e, true);
        if (rc == 0) {
            tp_free(out);
            return;
        }
        e.status = rc;
    }
    e.data = NULL;
    e.len = 0;
    tp_free(out);
    (void)tpi_svc_post(rt, j->to, &e, false); /* else its timeout fires */
}

static void *worker(void *arg)
{
    tpi_pool *p = arg;
    tp_runtime *rt = p->rt;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        tpi_job *j = p->head;
        if (!j) {
            if (p->stop)
                break;
            p->idle++;
            pthread_cond_wait(&p->cond, &p->lock);
            p->idle--;
            continue;
        }
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->lock);
        void *out = NULL;
        size_t len = 0;
        int rc = j->fn(j->arg, &out, &len);
        if (rc > 0)
            rc = 0;
        /* On an error *out is the job's (troupe/pool.h): not freed here */
        deliver(rt, j, rc, rc == 0 ? out : NULL, rc == 0 ? len : 0);
        tp_free(j);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int tp_runtime_set_blocking_threads(tp_runtime *rt, unsigned n)
{
    if (!rt || n < 1 || n > TP_BLOCKING_THREADS_MAX)
        return TP_EINVAL;
    tpi_pool *p = pool_get(rt);
    if (!p)
        return TP_ENOMEM;
    pthread_mutex_lock(&p->lock);
    int rc = p->started ? TP_ESTATE : 0;
    if (!rc)
        p->max = n;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int tp_spawn_blocking(tp_ctx *ctx, tp_blocking_fn fn, void *arg, int timeout_ms,
                      tp_ref *ref_out)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    if (!rt)
        return TP_ESTATE;
    if (!fn)
        return TP_EINVAL;
    tpi_pool *p = pool_get(rt);
    tpi_job *j = p ? tp_alloc(sizeof *j) : NULL;
    if (!j)
        return TP_ENOMEM;
    tp_oneshot tx;
    int rc = tp_oneshot_new(ctx, timeout_ms, &tx);
    if (rc) {
        tp_free(j);
        return rc;
    }
    *j = (tpi_job){NULL, fn, arg, tx.pid, tx.ref};
    pthread_mutex_lock(&p->lock);
    /* A new thread only when no idle one is left for the job. */
    if (p->idle <= p->queued && p->started < p->max) {
        if (pthread_create(&p->threads[p->started], NULL, worker, p) == 0)
            p->started++;
        else if (p->started == 0)
            rc = TP_ESYS;
    }
    if (!rc) {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        p->queued++;
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc) {
        tpi_svc_oneshot_cancel(ctx, tx.ref);
        tp_free(j);
        return rc;
    }
    if (ref_out)
        *ref_out = tx.ref;
    return 0;
}
