/*
 * A connection actor: one per client (processing inbound sockets).
 *
 * Input: every TP_NET_DATA is parsed where the last one stopped (parse.c);
 * each complete command is run (cmds.c) and gets a reply slot (reply.c);
 * ops for the shards leave as one batch per shard per read (route.c).
 *
 * Output: complete replies are written in order as they complete (small
 * ones of a burst together). At most OUT_BUDGET bytes wait in the socket
 * layer at once: the rest stays here, and while the client is that far
 * behind no further command is parsed, so a client that pipelines huge
 * replies and reads them slowly is served at its pace and never cut for
 * the socket layer's output limit. A 1 ms timer looks again while output
 * or input is held back.
 *
 * Memory: a client's buffers (input, replies held, output not yet taken
 * by the socket, its subscriptions) count against --maxmemory-clients
 * for all clients together; the client that takes the total over it is
 * closed, with a line on stderr. Allocation failures for a client's buffers close that
 * client (kv_soft_begin): the server never aborts for a client.
 */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_BUDGET ((size_t)4 << 20) /* output handed to the socket layer */
#define WRITE_BATCH 16384 /* replies of a burst gathered up to this */

void *kv_conn_new(void *arg)
{
    kv_server *srv = arg;
    kv_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->ps = (kv_parser){-1, -1, 0};
    c->authed = srv->cfg.requirepass == NULL;
    for (unsigned i = 0; i < KV_MAX_SHARDS; i++)
        c->route[i].mon_pid = TP_PID_NONE;
    return c;
}

void kv_conn_free(void *state)
{
    kv_conn *c = state;
    atomic_fetch_sub_explicit(&c->srv->client_mem, c->mem,
                              memory_order_relaxed);
    kv_client_del(c->info);
    kv_pubsub_free(c);
    kv_buf_free(&c->ib);
    kv_buf_free(&c->out);
    kv_route_free(c);
    kv_slots_free(c);
    free(c->argv);
    free(c);
}

static void end(tp_ctx *ctx, kv_conn *c)
{
    c->closing = c->exited = true;
    tp_exit(ctx, TP_REASON_NORMAL);
}

/* Close a client for its memory, saying so on stderr. */
static void drop(tp_ctx *ctx, kv_conn *c, const char *why)
{
    fprintf(stderr, "troupe-kv: closing client id=%llu addr=%s: %s\n",
            c->info ? (unsigned long long)kv_client_id(c->info) : 0ull,
            c->info ? kv_client_addr(c->info) : "?", why);
    atomic_fetch_add_explicit(&c->srv->evicted, 1, memory_order_relaxed);
    end(ctx, c);
}

/* ---------------------------------------------------------------- memory */

static size_t usage(tp_ctx *ctx, const kv_conn *c)
{
    return c->ib.cap + c->out.cap + c->held + tp_conn_pending(ctx) +
           c->argcap * sizeof(kv_arg) + c->cap * sizeof(kv_slot) +
           c->sub_bytes + c->name_bytes;
}

/* Would extra more bytes for this client take the total over the bound? */
static bool over(const kv_conn *c, size_t extra)
{
    size_t lim = c->srv->cfg.maxmemory_clients;
    return lim && extra &&
           atomic_load_explicit(&c->srv->client_mem, memory_order_relaxed) +
                   extra >
               lim;
}

/* Count this client's buffers in the total; false if it was closed for
 * taking the total over the bound. Relaxed: a statistic and a bound that
 * tolerates a few concurrent turns' worth of error. */
static bool account(tp_ctx *ctx, kv_conn *c)
{
    size_t now = usage(ctx, c), was = c->mem;
    c->mem = now;
    if (now <= was) {
        atomic_fetch_sub_explicit(&c->srv->client_mem, was - now,
                                  memory_order_relaxed);
        return true;
    }
    atomic_fetch_add_explicit(&c->srv->client_mem, now - was,
                              memory_order_relaxed);
    if (!over(c, 1))
        return true;
    char why[160];
    snprintf(why, sizeof why,
             "client buffers over maxmemory-clients (%zu bytes; this client "
             "%zu)",
             c->srv->cfg.maxmemory_clients, now);
    drop(ctx, c, why);
    return false;
}

/* ---------------------------------------------------------------- output */

static size_t unwritten(const kv_conn *c) { return c->out.n - c->out_off; }

/* Give the socket layer what the budget allows; false if the connection
 * is gone (it was cut or failed). */
static bool write_out(tp_ctx *ctx, kv_conn *c, bool all_done)
{
    size_t have = unwritten(c);
    if (!have || (!all_done && have < WRITE_BATCH))
        return true;
    size_t pend = tp_conn_pending(ctx);
    size_t room = pend < OUT_BUDGET ? OUT_BUDGET - pend : 0;
    size_t w = have < room ? have : room;
    if (w) {
        if (tp_conn_write(ctx, c->out.p + c->out_off, w) != 0)
            return false;
        c->out_off += w;
    }
    if (c->out_off == c->out.n) {
        c->out.n = c->out_off = 0;
        if (c->out.cap > KV_KEEP_BUF)
            kv_buf_free(&c->out);
    } else if (c->out_off > KV_KEEP_BUF && c->out_off * 2 > c->out.n) {
        memmove(c->out.p, c->out.p + c->out_off, unwritten(c));
        c->out.n -= c->out_off;
        c->out_off = 0;
    }
    return true;
}

/* Look again soon whether the socket layer took output (it does not say
 * when it drains): after 1 ms, up to 64 ms while a peer takes nothing,
 * so a client that stopped reading costs ~16 wake-ups a second, not a
 * thousand. */
#define TICK_SHIFT_MAX 6

static void tick_later(tp_ctx *ctx, kv_conn *c)
{
    if (c->ticking)
        return;
    if (tp_send_after(ctx, 1 << c->tick_shift, KV_TAG_CONN_TICK, NULL, 0,
                      NULL) == 0)
        c->ticking = true;
}

/* A tick: did the peer take anything since the last one's writes? */
static void on_tick(tp_ctx *ctx, kv_conn *c)
{
    size_t pend = tp_conn_pending(ctx);
    if (pend && pend == c->tick_pend) {
        if (c->tick_shift < TICK_SHIFT_MAX)
            c->tick_shift++;
    } else {
        c->tick_shift = 0;
    }
    c->ticking = false;
}

/* Move complete replies out, write what can be, end when due. */
static void flush(tp_ctx *ctx, kv_conn *c)
{
    if (kv_slots_drain(ctx, c))
        c->close_after_out = true;
    bool all_done = c->head == c->tail;
    if (!write_out(ctx, c, all_done || c->close_after_out)) {
        end(ctx, c); /* cut for the output limit, or gone */
        return;
    }
    bool flushed = all_done && !unwritten(c);
    if ((c->close_after_out || c->peer_closed) && flushed) {
        end(ctx, c);
        return;
    }
    if ((all_done && unwritten(c)) || c->held_input)
        tick_later(ctx, c);
}

/* ----------------------------------------------------------------- input */

static void protocol_error(kv_conn *c, const char *why)
{
    kv_slot *s = kv_slot_new(c, K_LOCAL, 0);
    kv_buf_fmt(&s->buf, "-ERR Protocol error: %s\r\n", why);
    s->close_after = true;
    c->closing = true;
}

/* Parse and run the commands in p[0..n) (in_ib: p is c->ib's), keep the
 * rest in c->ib, send the batches, write what is complete. */
static void process(tp_ctx *ctx, kv_conn *c, const char *p, size_t n,
                    bool in_ib)
{
    size_t off = 0;
    uint64_t cmds = 0;
    size_t pend = tp_conn_pending(ctx);
    c->held_input = false;
    while (off < n && !c->closing) {
        /* The client is far behind reading its replies: wait for it. */
        if (pend + unwritten(c) + c->held > OUT_BUDGET) {
            c->held_input = true;
            break;
        }
        size_t used = 0;
        const char *err = NULL;
        int r = kv_parse(c, p + off, n - off, &used, &err);
        if (r == 0)
            break;
        if (r == -2) {
            c->oom = true;
            break;
        }
        if (r < 0) {
            protocol_error(c, err);
            break;
        }
        off += used;
        if (c->argc) {
            uint32_t tail = c->tail;
            kv_exec(ctx, c);
            kv_slots_kept(c, tail);
            cmds++;
        }
    }
    atomic_fetch_add_explicit(&c->srv->commands, cmds, memory_order_relaxed);
    size_t left = c->closing ? 0 : n - off;
    if (in_ib) {
        if (off)
            memmove(c->ib.p, c->ib.p + off, left);
        c->ib.n = left;
    } else if (left) {
        kv_buf_add(&c->ib, p + off, left);
    }
    if (!c->ib.n && c->ib.cap > KV_KEEP_BUF)
        kv_buf_free(&c->ib);
    kv_send_batches(ctx, c);
    if (cmds)
        kv_client_touch(c);
    flush(ctx, c);
}

static void on_data(tp_ctx *ctx, kv_conn *c, const tp_msg *msg)
{
    const char *d;
    size_t dn;
    if (c->closing || tp_msg_scanf(msg, "y", (const void **)&d, &dn) != 0)
        return;
    if (!c->ib.n) {
        process(ctx, c, d, dn, false); /* no copy while nothing waits */
        return;
    }
    if (c->ib.cap - c->ib.n < dn && over(c, c->ib.n + dn)) {
        drop(ctx, c, "query buffer over maxmemory-clients");
        return;
    }
    size_t was = c->ib.n;
    kv_buf_add(&c->ib, d, dn);
    if (c->ib.n == was)
        return; /* out of memory: dropped at the end of the turn */
    process(ctx, c, c->ib.p, c->ib.n, true);
}

/* Fragments from a shard; last: the batch's last message (route.c). */
static void on_replies(tp_ctx *ctx, kv_conn *c, const tp_msg *msg, bool last)
{
    const char *p;
    size_t n;
    if (tp_msg_scanf(msg, "y", (const void **)&p, &n) != 0)
        return;
    if (last)
        kv_route_answered(c, tp_msg_from(msg));
    while (n >= 12) {
        uint32_t seq = kv_get32(p), pos = kv_get32(p + 4),
                 len = kv_get32(p + 8);
        if (len > n - 12)
            break;
        kv_deliver(c, seq, pos, p + 12, len);
        p += 12 + len;
        n -= 12 + len;
    }
    flush(ctx, c);
}

static void on_start(tp_ctx *ctx, kv_conn *c)
{
    c->info = kv_client_add(ctx, c);
    if (!c->info)
        c->oom = true;
}

int kv_conn_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    kv_conn *c = state;
    if (c->exited || kv_forged(msg))
        return TP_HANDLED;
    kv_soft_begin();
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: on_start(ctx, c); break;
    case TP_NET_DATA: on_data(ctx, c, msg); break;
    case KV_TAG_REPLIES: on_replies(ctx, c, msg, true); break;
    case KV_TAG_MORE_REPLIES: on_replies(ctx, c, msg, false); break;
    case KV_TAG_PUSH:
        kv_pubsub_push(c, msg);
        flush(ctx, c);
        break;
    case KV_TAG_CONN_TICK:
        on_tick(ctx, c);
        if (c->held_input && !c->closing)
            process(ctx, c, c->ib.p, c->ib.n, true);
        else
            flush(ctx, c);
        if (!c->exited)
            c->tick_pend = tp_conn_pending(ctx); /* after this tick's writes */
        break;
    case TP_TAG_DOWN:
        kv_route_down(c, tp_msg_ref(msg));
        flush(ctx, c);
        break;
    case KV_TAG_KILL: end(ctx, c); break;
    case TP_NET_CLOSED: {
        int64_t code = 0;
        tp_msg_int(msg, &code);
        c->peer_closed = c->closing = true;
        c->held_input = false;
        if (code != 0)
            end(ctx, c);
        else
            flush(ctx, c); /* ends once the replies due are written */
        break;
    }
    default: break;
    }
    bool failed = kv_soft_end();
    if (!c->exited && (failed || c->oom))
        drop(ctx, c, "out of memory for its buffers");
    else if (!c->exited)
        account(ctx, c);
    return TP_HANDLED;
}
