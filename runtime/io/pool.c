/*
 * The blocking pool: a FIFO of jobs under one mutex, served by up to n
 * threads started on demand. A job's result travels back like any oneshot
 * value (a TP_TAG_REPLY delivered from a foreign thread), so the loop
 * never waits for a pool thread. tp_runtime_free runs what is still
 * queued, then joins the threads (tpi_pool_free).
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"
#include "troupe/pool.h"

#include <pthread.h>

typedef struct tpi_job {
    struct tpi_job *next;
    tp_blocking_fn fn;
    void *arg;
    tp_pid to;
    tp_ref ref;
} tpi_job;

struct tpi_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tpi_job *head, *tail;
    unsigned max, started, idle;
    bool stop;
    pthread_t threads[TP_BLOCKING_THREADS_MAX];
};

/* Guards creating rt->pool: tp_spawn_blocking may in principle race
 * tp_runtime_set_blocking_threads from another thread. */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static struct tpi_pool *pool_get(tp_runtime *rt, unsigned n, bool create)
{
    pthread_mutex_lock(&create_lock);
    struct tpi_pool *p = rt->pool;
    if (!p && create) {
        p = tpi_calloc(sizeof *p);
        if (p) {
            pthread_mutex_init(&p->lock, NULL);
            pthread_cond_init(&p->cond, NULL);
            p->max = n;
            rt->pool = p;
        }
    }
    pthread_mutex_unlock(&create_lock);
    return p;
}

static void deliver(tp_runtime *rt, tpi_job *j, int status, void *out,
                    size_t len)
{
    tpi_msg *m = tpi_msg_new(TP_TAG_REPLY, NULL, 0);
    if (!m) {
        tpi_free(out);
        return; /* the waiting actor's timeout, if any, still fires */
    }
    if (status == 0 && out && len && tpi_payload_valid(rt, out, len) == 0) {
        m->data = out;
        m->len = len;
        m->flags |= TPI_MSG_OWNED;
    } else {
        if (status == 0 && out && len)
            status = TP_EPROTO; /* the job produced a bad payload */
        tpi_free(out);
    }
    m->ref = j->ref;
    m->status = status;
    tpi_deliver(rt, NULL, j->to, m);
}

static void *worker(void *arg)
{
    tp_runtime *rt = arg;
    struct tpi_pool *p = rt->pool;
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
        pthread_mutex_unlock(&p->lock);
        void *out = NULL;
        size_t len = 0;
        int rc = j->fn(j->arg, &out, &len);
        if (rc > 0)
            rc = 0;
        deliver(rt, j, rc, rc == 0 ? out : NULL, rc == 0 ? len : 0);
        if (rc != 0)
            tpi_free(out);
        tpi_free(j);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int tp_runtime_set_blocking_threads(tp_runtime *rt, unsigned n)
{
    if (!rt || n < 1 || n > TP_BLOCKING_THREADS_MAX)
        return TP_EINVAL;
    struct tpi_pool *p = pool_get(rt, n, true);
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
    tpi_actor *a = tpi_ctx_actor(ctx);
    if (!a)
        return TP_ESTATE;
    if (!fn)
        return TP_EINVAL;
    tp_runtime *rt = tpi_actor_rt(a);
    struct tpi_pool *p = pool_get(rt, TP_BLOCKING_THREADS_DEFAULT, true);
    tpi_job *j = p ? tpi_alloc(sizeof *j) : NULL;
    if (!j)
        return TP_ENOMEM;
    tp_oneshot tx;
    int rc = tp_oneshot_new(ctx, timeout_ms, &tx);
    if (rc) {
        tpi_free(j);
        return rc;
    }
    *j = (tpi_job){NULL, fn, arg, tx.pid, tx.ref};
    pthread_mutex_lock(&p->lock);
    /* A new thread only when nobody idle can take the job. */
    if (p->idle == 0 && p->started < p->max) {
        if (pthread_create(&p->threads[p->started], NULL, worker, rt) == 0)
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
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc) {
        tpi_pending_take(a, tx.ref);
        tpi_free(j);
        return rc;
    }
    if (ref_out)
        *ref_out = tx.ref;
    return 0;
}

void tpi_pool_free(tp_runtime *rt)
{
    struct tpi_pool *p = rt->pool;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    tpi_free(p);
    rt->pool = NULL;
}
