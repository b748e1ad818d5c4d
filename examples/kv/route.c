/*
 * Operations to the shards: one batch per shard per turn (a pipelined read
 * of many commands costs one message per shard each way).
 *
 * A shard that is unavailable never leaves a command hanging: its pid is
 * TP_PID_NONE (cluster mode, its node is down) or the send fails, and each
 * op of the batch is answered "-ERR shard N is unavailable" at once (a
 * batch too large for the link to the shard's node, "-ERR request too
 * large for the link to shard N"). A
 * shard on another node is monitored (once per pid) and the ops sent to it
 * are remembered until its reply comes (one KV_TAG_REPLIES message per
 * batch, in order, even empty; the batch's other messages come as
 * KV_TAG_MORE_REPLIES); when it goes down, those still pending get the
 * same error. A RENAME moved to a shard of a third node is answered by
 * that shard: if that node goes down before it answers, the command is
 * not failed here (the source counted its batch answered).
 */
#include "conn.h"

#include <troupe/node.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void pair_add(kv_buf *b, uint32_t seq, uint32_t pos)
{
    if (!kv_buf_reserve(b, 8))
        return;
    kv_put32(b->p + b->n, seq);
    kv_put32(b->p + b->n + 4, pos);
    b->n += 8;
}

void kv_op(kv_conn *c, unsigned sh, uint8_t opc, uint8_t flags, uint32_t pos,
           int64_t num, uint32_t nargs, const kv_arg *args)
{
    kv_route *r = &c->route[sh];
    kv_buf *b = &r->batch;
    if (b->n == 0)
        kv_bin_start(b);
    kv_ophdr h = {.op = opc,
                  .flags = flags,
                  .nargs = nargs,
                  .seq = kv_last_seq(c),
                  .pos = pos,
                  .num = num};
    size_t need = sizeof h;
    for (uint32_t i = 0; i < nargs; i++)
        need += 4 + args[i].n;
    if (b->n < 5 || !kv_buf_reserve(b, need)) {
        c->oom = true;
        return;
    }
    memcpy(b->p + b->n, &h, sizeof h);
    b->n += sizeof h;
    for (uint32_t i = 0; i < nargs; i++) {
        kv_put32(b->p + b->n, (uint32_t)args[i].n);
        memcpy(b->p + b->n + 4, args[i].p, args[i].n);
        b->n += 4 + args[i].n;
    }
    pair_add(&r->ops, h.seq, pos);
}

void kv_op_key(kv_conn *c, uint8_t opc, uint8_t flags, uint32_t pos,
               int64_t num, uint32_t nargs, const kv_arg *args)
{
    kv_op(c, kv_shard_of(c->srv, args[0].p, args[0].n), opc, flags, pos, num,
          nargs, args);
}

void kv_op_all(kv_conn *c, uint8_t kind, uint8_t opc, uint32_t nargs,
               const kv_arg *args)
{
    unsigned n = c->srv->nshards;
    kv_slot *s = kv_slot_new(c, kind, n);
    if ((kind == K_ARRAY || kind == K_RANDOM) && !kv_slot_parts(c, s, n))
        return;
    for (unsigned i = 0; i < n; i++)
        kv_op(c, i, opc, 0, i, 0, nargs, args);
}

/* Answer each (seq, pos) pair of ops[from..] with the shard's error: rc
 * TP_E2BIG for a batch over the node link's largest message, any other
 * for an unavailable shard. */
static void fail_ops(kv_conn *c, unsigned sh, const kv_buf *ops, size_t from,
                     int rc)
{
    char err[80];
    int n =
        rc == TP_E2BIG
            ? snprintf(err, sizeof err,
                       "-ERR request too large for the link to shard %u\r\n",
                       sh)
            : snprintf(err, sizeof err, "-ERR shard %u is unavailable\r\n", sh);
    for (size_t i = from; i + 8 <= ops->n; i += 8)
        kv_deliver(c, kv_get32(ops->p + i), kv_get32(ops->p + i + 4), err,
                   (size_t)n);
}

/* The pid's node is elsewhere: watch it before the batch leaves, so that
 * a batch lost on the way breaks the monitor (a node breaks what frames
 * before a gap made; a monitor made after the lost batch would stay, and
 * the batch's ops wait for ever). 0, or TP_ENOPROC. */
static int watch_remote(tp_ctx *ctx, kv_conn *c, unsigned sh, tp_pid pid)
{
    kv_route *r = &c->route[sh];
    if (r->mon_pid == pid)
        return 0;
    /* A new pid for the shard: what the old one had is lost. */
    if (r->mon_pid != TP_PID_NONE) {
        tp_demonitor(ctx, r->mon);
        fail_ops(c, sh, &r->pending, r->pend_off, TP_ENOPROC);
    }
    r->pending.n = r->counts.n = r->pend_off = r->count_off = 0;
    r->mon_pid = TP_PID_NONE;
    if (tp_monitor(ctx, pid, &r->mon) != 0)
        return TP_ENOPROC;
    r->mon_pid = pid;
    return 0;
}

/* A batch left for a shard on another node: remember its ops (failed if
 * the monitor fires first). */
static void track_remote(kv_conn *c, unsigned sh)
{
    kv_route *r = &c->route[sh];
    kv_buf_add(&r->pending, r->ops.p, r->ops.n);
    char cnt[4];
    kv_put32(cnt, (uint32_t)(r->ops.n / 8));
    kv_buf_add(&r->counts, cnt, 4);
}

void kv_send_batches(tp_ctx *ctx, kv_conn *c)
{
    for (unsigned i = 0; i < c->srv->nshards; i++) {
        kv_route *r = &c->route[i];
        kv_buf *b = &r->batch;
        if (!b->n)
            continue;
        kv_bin_finish(b);
        tp_pid pid = kv_shard_pid(c->srv, i);
        bool remote = pid != TP_PID_NONE && tp_pid_is_remote(pid);
        int rc = pid == TP_PID_NONE ? TP_ENOPROC : 0;
        if (!rc && remote)
            rc = watch_remote(ctx, c, i, pid);
        if (!rc) {
            /* The buffer moves into the message (no copy), whatever the
             * result. */
            rc = tp_send_move(ctx, pid, KV_TAG_BATCH, b->p, b->n);
            b->p = NULL;
            b->n = b->cap = 0;
        }
        b->n = 0;
        if (rc)
            fail_ops(c, i, &r->ops, 0, rc);
        else if (remote)
            track_remote(c, i);
        r->ops.n = 0;
    }
}

static void compact(kv_buf *b, size_t *off)
{
    memmove(b->p, b->p + *off, b->n - *off);
    b->n -= *off;
    *off = 0;
}

void kv_route_answered(kv_conn *c, tp_pid from)
{
    if (!tp_pid_is_remote(from))
        return;
    for (unsigned i = 0; i < c->srv->nshards; i++) {
        kv_route *r = &c->route[i];
        if (r->mon_pid != from || r->count_off >= r->counts.n)
            continue;
        r->pend_off += 8 * (size_t)kv_get32(r->counts.p + r->count_off);
        r->count_off += 4;
        if (r->count_off == r->counts.n) {
            r->pending.n = r->counts.n = r->pend_off = r->count_off = 0;
        } else if (r->count_off > 4096 && r->count_off * 2 > r->counts.n) {
            /* never all answered at once: drop the answered part */
            compact(&r->pending, &r->pend_off);
            compact(&r->counts, &r->count_off);
        }
        return;
    }
}

void kv_route_down(kv_conn *c, tp_ref ref)
{
    for (unsigned i = 0; i < c->srv->nshards; i++) {
        kv_route *r = &c->route[i];
        if (r->mon_pid == TP_PID_NONE || r->mon != ref)
            continue;
        r->mon_pid = TP_PID_NONE;
        fail_ops(c, i, &r->pending, r->pend_off, TP_ENOPROC);
        r->pending.n = r->counts.n = r->pend_off = r->count_off = 0;
        return;
    }
}

void kv_route_free(kv_conn *c)
{
    for (unsigned i = 0; i < KV_MAX_SHARDS; i++) {
        kv_route *r = &c->route[i];
        kv_buf_free(&r->batch);
        kv_buf_free(&r->ops);
        kv_buf_free(&r->pending);
        kv_buf_free(&r->counts);
    }
}
