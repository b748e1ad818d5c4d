/*
 * Supervisor requests, both sides: the tp_sup_* functions that send a
 * request to a supervisor, the supervisor's handling of them (answered at
 * once, or by the job a request starts), and tp_sup_reply_* that decode
 * the answers.
 *
 * Answers are msgpack arrays headed by a TP_E* code: [rc] (terminate,
 * delete, stop, sync), [rc, pid] (start, restart), [rc, specs, active,
 * supervisors, workers] (count), [rc, [[id, pid, kind, state]...]] (which).
 */
#include "supervisor/sup_int.h"

#include <msgpack.h>

#include <string.h>

/* ------------------------------------------------- in the supervisor */

static bool simple(const tpi_sup *s)
{
    return s->spec.strategy == TP_SUP_SIMPLE_ONE_FOR_ONE;
}

void tpi_sup_reply(tp_ctx *ctx, tp_reply_handle *r, int rc, const tp_pid *pid)
{
    if (!r)
        return;
    void *buf = NULL;
    size_t len = 0;
    int prc = pid ? tp_packf(&buf, &len, "[ip]", rc, *pid)
                  : tp_packf(&buf, &len, "[i]", rc);
    tp_reply_send(ctx, r, prc == 0 ? buf : NULL, prc == 0 ? len : 0);
    tp_free(buf);
}

/* Answer the request msg at once. */
static void answer(tp_ctx *ctx, const tp_msg *msg, int rc, const tp_pid *pid)
{
    tpi_sup_reply(ctx, tp_reply_take(ctx, msg), rc, pid);
}

/* A growing buffer from the runtime's allocator, written by msgpack. */
typedef struct out_buf {
    char *data;
    size_t size, cap;
} out_buf;

static int out_write(void *data, const char *p, size_t n)
{
    out_buf *b = data;
    if (b->cap - b->size < n) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap - b->size < n)
            ncap *= 2;
        char *nd = tp_realloc(b->data, ncap);
        if (!nd)
            return -1;
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
    return 0;
}

static void pack_children(tp_ctx *ctx, tpi_sup *s, const tp_msg *msg)
{
    out_buf b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, out_write);
    size_t live = 0;
    for (size_t i = 0; i < s->n; i++)
        live += !s->kids[i]->doomed;
    int rc = msgpack_pack_array(&pk, 2) | msgpack_pack_int(&pk, 0) |
             msgpack_pack_array(&pk, live);
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        tpi_sup_child *c = s->kids[i];
        if (c->doomed)
            continue;
        size_t idl = strlen(c->id);
        rc |= msgpack_pack_array(&pk, 4) | msgpack_pack_str(&pk, idl) |
              msgpack_pack_str_body(&pk, c->id, idl) |
              msgpack_pack_uint64(&pk, c->pid) |
              msgpack_pack_int(&pk, (int)c->spec.kind) |
              msgpack_pack_int(&pk, (int)c->state);
    }
    if (rc == 0 && b.data)
        tp_reply(ctx, msg, b.data, b.size);
    else
        tp_reply(ctx, msg, "\x91\xfe", 2); /* [TP_ENOMEM] */
    tp_free(b.data);
}

static void count_children(tp_ctx *ctx, tpi_sup *s, const tp_msg *msg)
{
    uint64_t specs = 0, active = 0, sups = 0, workers = 0;
    for (size_t i = 0; i < s->n; i++) {
        tpi_sup_child *c = s->kids[i];
        if (c->doomed)
            continue;
        specs++;
        active += c->state == TP_CHILD_RUNNING;
        if (c->spec.kind == TP_CHILD_SUPERVISOR)
            sups++;
        else
            workers++;
    }
    if (s->spec.strategy == TP_SUP_SIMPLE_ONE_FOR_ONE)
        specs = 1; /* its template, as OTP counts */
    void *buf;
    size_t len;
    if (tp_packf(&buf, &len, "[iuuuu]", 0, specs, active, sups, workers) == 0) {
        tp_reply(ctx, msg, buf, len);
        tp_free(buf);
    }
}

/* The child a request names: by id (string) or by pid (integer). */
static tpi_sup_child *request_child(tpi_sup *s, const tp_msg *msg)
{
    const char *id;
    size_t len;
    tp_pid pid;
    if (tp_msg_scanf(msg, "S", &id, &len) == 0)
        return tpi_sup_kid_by_id(s, id, len);
    if (tp_msg_scanf(msg, "p", &pid) == 0)
        return tpi_sup_kid_by_pid(s, pid);
    return NULL;
}

/* The child a restart or delete request names, which must be stopped:
 * 0, TP_ENOENT, or TP_ESTATE (also for simple_one_for_one). */
static int stopped_child(tpi_sup *s, const tp_msg *msg, tpi_sup_child **out)
{
    tpi_sup_child *c = simple(s) ? NULL : request_child(s, msg);
    *out = c;
    return simple(s)                      ? TP_ESTATE
           : !c                           ? TP_ENOENT
           : c->state != TP_CHILD_STOPPED ? TP_ESTATE
                                          : 0;
}

/* Run the one-step job of a request about c: START_ONE (starts c, answers
 * [rc, pid]) or TERMINATE (stops c, answers [rc]). Without memory for the
 * step, answer TP_ENOMEM at once (a new dynamic child is then dropped). */
static void request_job(tp_ctx *ctx, tpi_sup *s, const tp_msg *msg,
                        tpi_sup_job_kind kind, tpi_sup_child *c)
{
    bool start = kind == TPI_SUP_JOB_START_ONE;
    tpi_sup_job_begin(s, kind);
    s->job.target = c;
    s->job.reply = tp_reply_take(ctx, msg);
    if (tpi_sup_job_add(s, start ? TPI_SUP_START : TPI_SUP_STOP, c) == 0) {
        tpi_sup_job_run(ctx, s);
        return;
    }
    if (start && c->dynamic)
        c->doomed = true;
    s->job.kind = TPI_SUP_JOB_NONE;
    tp_pid none = TP_PID_NONE;
    tpi_sup_reply(ctx, s->job.reply, TP_ENOMEM, start ? &none : NULL);
    s->job.reply = NULL;
}

void tpi_sup_handle_request(tp_ctx *ctx, tpi_sup *s, const tp_msg *msg)
{
    tp_pid none = TP_PID_NONE;
    tpi_sup_child *c;
    int rc;
    switch (tp_msg_tag(msg)) {
    case TP_SUP_REQ_SYNC: answer(ctx, msg, 0, NULL); return;
    case TP_SUP_REQ_WHICH_CHILDREN: pack_children(ctx, s, msg); return;
    case TP_SUP_REQ_COUNT_CHILDREN: count_children(ctx, s, msg); return;
    case TP_SUP_REQ_STOP:
        tpi_sup_start_shutdown(ctx, s, TP_REASON_SHUTDOWN,
                               tp_reply_take(ctx, msg));
        return;
    case TP_SUP_REQ_START_CHILD: {
        if (!simple(s)) {
            answer(ctx, msg, TP_ESTATE, &none);
            return;
        }
        size_t len;
        const void *args = tp_msg_data(msg, &len);
        c = tpi_sup_child_add(s, &s->tmpl, args, len);
        if (!c) {
            answer(ctx, msg, TP_ENOMEM, &none);
            return;
        }
        c->dynamic = true;
        request_job(ctx, s, msg, TPI_SUP_JOB_START_ONE, c);
        return;
    }
    case TP_SUP_REQ_RESTART_CHILD:
        rc = stopped_child(s, msg, &c);
        if (rc == 0)
            request_job(ctx, s, msg, TPI_SUP_JOB_START_ONE, c);
        else
            answer(ctx, msg, rc, &none);
        return;
    case TP_SUP_REQ_TERMINATE_CHILD:
        c = request_child(s, msg);
        if (c && c->state == TP_CHILD_RUNNING) {
            request_job(ctx, s, msg, TPI_SUP_JOB_TERMINATE, c);
            return;
        }
        if (c) { /* not running: no longer restarting either */
            tpi_sup_drop_restart(ctx, s, c);
            tpi_sup_child_stopped(c);
        }
        answer(ctx, msg, c ? 0 : TP_ENOENT, NULL);
        return;
    case TP_SUP_REQ_DELETE_CHILD:
        rc = stopped_child(s, msg, &c);
        if (rc == 0) {
            c->doomed = true;
            tpi_sup_sweep(s);
        }
        answer(ctx, msg, rc, NULL);
        return;
    default: return;
    }
}

/* ------------------------------------------------------ sending requests */

static int call_fmt(tp_ctx *ctx, tp_pid to, int32_t tag, int timeout_ms,
                    tp_ref *ref_out, const char *fmt, ...)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        rc = tp_vpackf(&buf, &len, fmt, ap);
        va_end(ap);
        if (rc)
            return rc;
    }
    rc = tp_call(ctx, to, tag, buf, len, timeout_ms, ref_out);
    tp_free(buf);
    return rc;
}

/* A request that names a child by its id. */
static int call_id(tp_ctx *ctx, tp_pid to, int32_t tag, const char *id,
                   int timeout_ms, tp_ref *ref_out)
{
    if (!id || !id[0] || strlen(id) > TP_CHILD_ID_MAX)
        return TP_EINVAL;
    return call_fmt(ctx, to, tag, timeout_ms, ref_out, "s", id);
}

int tp_sup_start_child(tp_ctx *ctx, tp_pid to, const void *args,
                       size_t args_len, int timeout_ms, tp_ref *ref_out)
{
    return tp_call(ctx, to, TP_SUP_REQ_START_CHILD, args, args_len, timeout_ms,
                   ref_out);
}

int tp_sup_terminate_child(tp_ctx *ctx, tp_pid to, const char *id,
                           int timeout_ms, tp_ref *ref_out)
{
    return call_id(ctx, to, TP_SUP_REQ_TERMINATE_CHILD, id, timeout_ms,
                   ref_out);
}

int tp_sup_terminate_pid(tp_ctx *ctx, tp_pid to, tp_pid pid, int timeout_ms,
                         tp_ref *ref_out)
{
    if (pid == TP_PID_NONE)
        return TP_EINVAL;
    return call_fmt(ctx, to, TP_SUP_REQ_TERMINATE_CHILD, timeout_ms, ref_out,
                    "p", pid);
}

int tp_sup_restart_child(tp_ctx *ctx, tp_pid to, const char *id, int timeout_ms,
                         tp_ref *ref_out)
{
    return call_id(ctx, to, TP_SUP_REQ_RESTART_CHILD, id, timeout_ms, ref_out);
}

int tp_sup_delete_child(tp_ctx *ctx, tp_pid to, const char *id, int timeout_ms,
                        tp_ref *ref_out)
{
    return call_id(ctx, to, TP_SUP_REQ_DELETE_CHILD, id, timeout_ms, ref_out);
}

int tp_sup_which_children(tp_ctx *ctx, tp_pid to, int timeout_ms,
                          tp_ref *ref_out)
{
    return call_fmt(ctx, to, TP_SUP_REQ_WHICH_CHILDREN, timeout_ms, ref_out,
                    NULL);
}

int tp_sup_count_children(tp_ctx *ctx, tp_pid to, int timeout_ms,
                          tp_ref *ref_out)
{
    return call_fmt(ctx, to, TP_SUP_REQ_COUNT_CHILDREN, timeout_ms, ref_out,
                    NULL);
}

int tp_sup_stop(tp_ctx *ctx, tp_pid to, int timeout_ms, tp_ref *ref_out)
{
    return call_fmt(ctx, to, TP_SUP_REQ_STOP, timeout_ms, ref_out, NULL);
}

/* ------------------------------------------------------ decoding answers */

static bool obj_int(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return false;
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

static bool obj_u64(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

/* The rc at the head of a reply: false if it is not one. */
static bool reply_rc_of(const msgpack_object *o, int *rc)
{
    int64_t v;
    if (!obj_int(o, &v) || v > 1 || v < INT32_MIN)
        return false;
    *rc = (int)v;
    return true;
}

/* Unpack a reply's payload into u (destroy it in any case) and read the
 * rc at its head into *rc: the payload's array, or NULL with *rc the
 * reply's own status, TP_EINVAL or TP_EPROTO. */
static const msgpack_object_array *reply_open(const tp_msg *reply,
                                              msgpack_unpacked *u, int *rc)
{
    msgpack_unpacked_init(u);
    *rc = !reply || tp_msg_tag(reply) != TP_TAG_REPLY ? TP_EINVAL
                                                      : tp_msg_status(reply);
    if (*rc)
        return NULL;
    size_t len;
    const void *data = tp_msg_data(reply, &len);
    size_t off = 0;
    *rc = TP_EPROTO;
    if (!data ||
        msgpack_unpack_next(u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != len || u->data.type != MSGPACK_OBJECT_ARRAY ||
        u->data.via.array.size < 1 ||
        !reply_rc_of(&u->data.via.array.ptr[0], rc))
        return NULL;
    return &u->data.via.array;
}

int tp_sup_reply_result(const tp_msg *reply, tp_pid *pid_out)
{
    msgpack_unpacked u;
    int rc;
    const msgpack_object_array *a = reply_open(reply, &u, &rc);
    uint64_t pid = 0;
    if (a && rc != TP_EPROTO && a->size >= 2 && !obj_u64(&a->ptr[1], &pid))
        rc = TP_EPROTO;
    if (a && rc != TP_EPROTO && pid_out)
        *pid_out = pid;
    msgpack_unpacked_destroy(&u);
    return rc;
}

int tp_sup_reply_counts(const tp_msg *reply, tp_sup_counts *out)
{
    msgpack_unpacked u;
    int rc;
    const msgpack_object_array *a = reply_open(reply, &u, &rc);
    tp_sup_counts c;
    if (rc == 0 && (a->size != 5 || !obj_u64(&a->ptr[1], &c.specs) ||
                    !obj_u64(&a->ptr[2], &c.active) ||
                    !obj_u64(&a->ptr[3], &c.supervisors) ||
                    !obj_u64(&a->ptr[4], &c.workers)))
        rc = TP_EPROTO;
    else if (rc == 0 && out)
        *out = c;
    msgpack_unpacked_destroy(&u);
    return rc;
}

int tp_sup_reply_children(const tp_msg *reply, tp_child_info *out, size_t cap,
                          size_t *n_out)
{
    if (cap && !out)
        return TP_EINVAL;
    msgpack_unpacked u;
    int rc;
    const msgpack_object_array *a = reply_open(reply, &u, &rc);
    if (rc == 0 && (a->size != 2 || a->ptr[1].type != MSGPACK_OBJECT_ARRAY))
        rc = TP_EPROTO;
    /* check everything before writing anything */
    const msgpack_object_array *l = rc ? NULL : &a->ptr[1].via.array;
    for (uint32_t i = 0; l && i < l->size && rc == 0; i++) {
        const msgpack_object *e = &l->ptr[i];
        int64_t kind, st;
        uint64_t pid;
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4 ||
            e->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
            e->via.array.ptr[0].via.str.size > TP_CHILD_ID_MAX ||
            !obj_u64(&e->via.array.ptr[1], &pid) ||
            !obj_int(&e->via.array.ptr[2], &kind) ||
            !obj_int(&e->via.array.ptr[3], &st))
            rc = TP_EPROTO;
    }
    for (uint32_t i = 0; l && rc == 0 && i < l->size && i < cap; i++) {
        const msgpack_object *f = l->ptr[i].via.array.ptr;
        int64_t kind = 0, st = 0;
        if (f[0].via.str.size)
            memcpy(out[i].id, f[0].via.str.ptr, f[0].via.str.size);
        out[i].id[f[0].via.str.size] = '\0';
        out[i].pid = f[1].via.u64;
        obj_int(&f[2], &kind);
        obj_int(&f[3], &st);
        out[i].kind = (tp_child_kind)kind;
        out[i].state = (tp_child_state)st;
    }
    if (rc == 0 && n_out)
        *n_out = l->size;
    msgpack_unpacked_destroy(&u);
    return rc;
}
