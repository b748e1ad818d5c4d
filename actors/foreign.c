/*
 * A blocking call from a foreign thread (tp_runtime_call). The thread
 * cannot receive a reply, so a small hidden proxy actor makes the call for
 * it with tp_call: the existing request/reply machinery supplies the
 * timeout (TP_ETIMEDOUT), a dead or dying callee (TP_ENOPROC) and a dropped
 * request (TP_ENOREPLY), and delivery knows nothing of foreign callers.
 *
 * State ownership: one fcall is shared by the caller and the proxy, with a
 * reference each; whoever drops the last frees it. The proxy's state_free
 * is the single point that completes the call: it runs however the proxy
 * ends (reply, error, killed, or torn down unrun by tp_runtime_free), so
 * the caller always wakes. Fields:
 *   rt..want   the request; written before the spawn, read-only after.
 *   ref, status, reply, reply_len   the proxy's; the caller reads status
 *              and reply only after it saw done.
 *   done       set (under lock) by the proxy's state_free.
 *
 * Once its spawn succeeded the proxy counts as a live actor, so tp_run
 * cannot return before it ended and its state_free ran (a spawn racing the
 * end of the run fails with TP_ESTATE instead): the caller waits for done
 * alone.
 */
#include "actors/actor.h"
#include "runtime/alloc.h"
#include "runtime/runtime.h"

#include <string.h>

typedef struct fcall {
    _Atomic int refs; /* the caller's and the proxy's */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    tp_runtime *rt;
    tp_pid to;
    int32_t tag;
    const void *data; /* the caller's buffer: see tp_runtime_call */
    size_t len;
    int timeout_ms;
    bool want; /* the caller keeps the reply's payload */
    tp_ref ref;
    int status;
    void *reply;
    size_t reply_len;
} fcall;

static void fcall_release(fcall *c)
{
    /* acq_rel: the last owner sees every write of the other before it
     * frees. */
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    tpi_free(c->reply); /* not taken: the caller left without it */
    tpi_free(c);
}

static int proxy(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    fcall *c = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        int rc = tp_call(ctx, c->to, c->tag, c->data, c->len, c->timeout_ms,
                         &c->ref);
        /* tp_call copied the request: the caller's buffer is not read
         * again. */
        if (rc) {
            c->status = rc;
            return tp_exit(ctx, TP_REASON_NORMAL);
        }
        break;
    }
    case TP_TAG_REPLY: {
        if (tp_msg_ref(msg) != c->ref)
            break;
        size_t n;
        const void *d = tp_msg_data(msg, &n);
        c->status = tp_msg_status(msg);
        c->reply_len = n;
        if (c->status == 0 && c->want && n) {
            c->reply = tpi_alloc(n);
            if (c->reply)
                memcpy(c->reply, d, n);
            else
                c->status = TP_ENOMEM;
        }
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    default: /* the callee knows our pid: whatever it sends is not asked for */
        break;
    }
    return TP_HANDLED;
}

static void proxy_free(void *state)
{
    fcall *c = state;
    /* status, reply and reply_len were written before this, on the
     * proxy's thread: the unlock publishes them with done. */
    pthread_mutex_lock(&c->lock);
    c->done = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    fcall_release(c);
}

int tp_runtime_call(tp_runtime *rt, tp_pid to, int32_t tag, const void *data,
                    size_t len, int timeout_ms, void **reply, size_t *reply_len)
{
    if (!rt || to == TP_PID_NONE || tag < 0)
        return TP_EINVAL;
    int rc = tpi_payload_valid(rt, data, len);
    if (rc)
        return rc;
    /* A scheduler thread must never block: the reply could only come
     * through a loop it is holding up. */
    if (tpi_sched_current() != NULL ||
        atomic_load(&rt->state) != TPI_RT_RUNNING)
        return TP_ESTATE;
    fcall *c = tpi_calloc(sizeof *c);
    if (!c)
        return TP_ENOMEM;
    atomic_init(&c->refs, 2);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->rt = rt;
    c->to = to;
    c->tag = tag;
    /* Not copied: we block here until the proxy is done, long after its
     * call copied it. */
    c->data = data;
    c->len = len;
    c->timeout_ms = timeout_ms;
    c->want = reply != NULL;
    c->status = TP_ENOPROC; /* if the proxy ends before a reply (killed) */
    /* Like tp_runtime_spawn: no parent, and tp_run waits for it. */
    tp_spawn_opts o = {.state_free = proxy_free};
    if ((rc = tpi_spawn(rt, NULL, proxy, c, &o, NULL)) != 0) {
        /* Not spawned: state_free will never run, both references are
         * ours. */
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        tpi_free(c);
        return rc;
    }
    /* The proxy keeps the run alive until its state_free completes us. */
    pthread_mutex_lock(&c->lock);
    while (!c->done)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    /* done was seen under lock: status and reply are the proxy's final
     * values, and it touches them no more. */
    rc = c->status;
    if (rc == 0) {
        if (reply)
            *reply = c->reply;
        if (reply_len)
            *reply_len = c->reply_len;
        c->reply = NULL; /* now the caller's */
    }
    fcall_release(c);
    return rc;
}
