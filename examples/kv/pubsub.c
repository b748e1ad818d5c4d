/*
 * PUBLISH / SUBSCRIBE / PSUBSCRIBE, with one actor per channel.
 *
 *   registry (one, "kv-pubsub")      channel name -> channel actor,
 *     │                              patterns -> subscriber pids
 *     └── channel actor, one per channel with subscribers: its
 *         subscribers (monitored), the fan-out of each message
 *
 * A connection sends every (un)subscribe and publish to the registry. The
 * registry spawns a channel's actor on its first subscribe and forwards
 * the channel's traffic to it; the channel actor acks a subscribe to the
 * connection (so the confirmation is written once the subscription is
 * live), sends each message to its subscribers, then the pattern
 * subscribers' pmessages the registry matched (Redis's order), and
 * answers the publisher with the receiver count.
 *
 * A channel actor whose last subscriber left (unsubscribed or ended: it
 * monitors them) reports it; the registry ends it only if every message
 * it forwarded has been received (counts compared), so nothing sent to
 * it is lost, and a later subscribe spawns a new one.
 *
 * Connections keep their own subscription sets: they render the
 * confirmations (counts are per client) and drop a message for a channel
 * they left since it was sent.
 */
#include "conn.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* conn -> registry (KV_TAG_PUBSUB): [op, kind, name, seq, bytes] */
enum { P_SUB = 1, P_UNSUB, P_PUB, P_QUERY };
/* P_QUERY kinds */
enum { Q_CHANNELS = 0, Q_CHANNELS_ALL, Q_NUMSUB, Q_NUMPAT };
/* registry <-> channel (KV_TAG_CHANNEL): [op, pid, num, num2, a, b] */
enum { CH_SUB = 1, CH_UNSUB, CH_PUB, CH_END, CH_COUNT };
/* pushes: [kind, name, RESP bytes] */
enum { PUSH_MESSAGE = 0, PUSH_PMESSAGE = 1 };

#define PFMT "[i i S u y]"
#define CFMT "[i p u u y y]"

/* An answer for slot seq of connection to. */
static void answer(tp_ctx *ctx, tp_pid to, uint32_t seq, const char *p,
                   size_t n)
{
    kv_buf b = {0};
    kv_bin_start(&b);
    kv_frag(&b, seq, 0, p, n);
    kv_bin_finish(&b);
    tp_send_move(ctx, to, KV_TAG_REPLIES, b.p, b.n);
}

static void answer_int(tp_ctx *ctx, tp_pid to, uint32_t seq, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, ":%lld\r\n", (long long)v);
    answer(ctx, to, seq, tmp, (size_t)n);
}

/* ------------------------------------------------------------- name sets */

static kv_de *find(kv_dict *d, const void *k, size_t n)
{
    return d && d->b ? kv_dict_find(d, k, n) : NULL;
}

/* Add k; the entry, or NULL if it was there already. */
static kv_de *add(kv_dict *d, const void *k, size_t n)
{
    if (!d->b)
        kv_dict_init(d);
    uint64_t h = kv_hash(k, n);
    kv_de **link = kv_dict_link(d, k, n, h);
    return *link ? NULL : kv_dict_insert(d, link, k, n, h);
}

/* Remove k; its value (the entry is freed), or (void *)1 for an entry
 * without one; NULL if k was absent. */
static void *del(kv_dict *d, const void *k, size_t n)
{
    if (!d || !d->b)
        return NULL;
    kv_de **link = kv_dict_link(d, k, n, kv_hash(k, n));
    if (!*link)
        return NULL;
    kv_de *e = kv_dict_remove(d, link);
    void *v = e->val ? e->val : (void *)1;
    free(e);
    return v;
}

static void free_val(kv_de *e) { free(e->val); }

/* Free a set and the values of its entries (it may never have been
 * used). */
static void drop(kv_dict *d)
{
    if (d && d->b)
        kv_dict_free(d, free_val);
}

/* Append name to a list of (u32 length, bytes). */
static void name_add(kv_buf *b, const char *p, size_t n)
{
    char len[4];
    kv_put32(len, (uint32_t)n);
    kv_buf_add(b, len, 4);
    kv_buf_add(b, p, n);
}

/* -------------------------------------------------- rendering and fan-out */

static void render(kv_buf *b, int kind, const char *pat, size_t pn,
                   const char *ch, size_t cn, const char *msg, size_t mn)
{
    b->n = 0;
    if (kind == PUSH_MESSAGE) {
        kv_buf_str(b, "*3\r\n$7\r\nmessage\r\n");
    } else {
        kv_buf_str(b, "*4\r\n$8\r\npmessage\r\n");
        kv_buf_bulk(b, pat, pn);
    }
    kv_buf_bulk(b, ch, cn);
    kv_buf_bulk(b, msg, mn);
}

/* The pmessages of blob ((u64 pid, u32 len, pattern)...): how many. */
static int64_t send_pmessages(tp_ctx *ctx, const char *blob, size_t n,
                              const char *ch, size_t cn, const char *msg,
                              size_t mn)
{
    kv_buf b = {0};
    int64_t count = 0;
    for (size_t i = 0; i + 12 <= n;) {
        tp_pid pid = kv_get64(blob + i);
        uint32_t pl = kv_get32(blob + i + 8);
        const char *pat = blob + i + 12;
        i += 12 + pl;
        render(&b, PUSH_PMESSAGE, pat, pl, ch, cn, msg, mn);
        if (tp_sendf(ctx, pid, KV_TAG_PUSH, "[i S y]", PUSH_PMESSAGE, pat,
                     (size_t)pl, b.p, b.n) == 0)
            count++;
    }
    kv_buf_free(&b);
    return count;
}

/* ------------------------------------------------------------ a channel */

typedef struct ps_chan {
    tp_pid reg;
    kv_dict subs; /* key: the subscriber's pid (8 bytes); val: its tp_ref */
    uint64_t recv;
    size_t nlen;
    char name[];
} ps_chan;

static void report(tp_ctx *ctx, ps_chan *ch)
{
    tp_sendf(ctx, ch->reg, KV_TAG_CHANNEL, CFMT, CH_COUNT, TP_PID_NONE,
             (uint64_t)ch->subs.count, ch->recv, ch->name, ch->nlen, "",
             (size_t)0);
}

static void chan_unsub(tp_ctx *ctx, ps_chan *ch, tp_pid pid, bool demonitor)
{
    char k[8];
    kv_put64(k, pid);
    tp_ref *ref = del(&ch->subs, k, 8);
    if (!ref)
        return;
    if (demonitor)
        tp_demonitor(ctx, *ref);
    free(ref);
    report(ctx, ch);
}

static void chan_publish(tp_ctx *ctx, ps_chan *ch, tp_pid from, uint32_t seq,
                         const char *msg, size_t mn, const char *pats,
                         size_t pn)
{
    kv_buf b = {0};
    render(&b, PUSH_MESSAGE, NULL, 0, ch->name, ch->nlen, msg, mn);
    int64_t count = 0;
    KV_DICT_EACH(&ch->subs, e)
    {
        if (tp_sendf(ctx, kv_get64(e->key), KV_TAG_PUSH, "[i S y]",
                     PUSH_MESSAGE, ch->name, ch->nlen, b.p, b.n) == 0)
            count++;
    }
    kv_buf_free(&b);
    count += send_pmessages(ctx, pats, pn, ch->name, ch->nlen, msg, mn);
    answer_int(ctx, from, seq, count);
}

static int channel(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    ps_chan *ch = state;
    int op;
    tp_pid pid;
    uint64_t num, num2;
    const void *a, *b;
    size_t an, bn;
    if (kv_forged(msg))
        return TP_HANDLED;
    switch (tp_msg_tag(msg)) {
    case KV_TAG_CHANNEL:
        if (tp_msg_scanf(msg, CFMT, &op, &pid, &num, &num2, &a, &an, &b, &bn) !=
            0)
            break;
        ch->recv++;
        if (op == CH_SUB) {
            char k[8];
            kv_put64(k, pid);
            kv_de *e = add(&ch->subs, k, 8);
            tp_ref *ref = e ? malloc(sizeof *ref) : NULL;
            if (e && (!ref || tp_monitor(ctx, pid, ref) != 0)) {
                free(ref);
                del(&ch->subs, k, 8);
            } else if (e) {
                e->val = ref;
            }
            /* The count first: a client that reads the confirmation and
             * asks PUBSUB NUMSUB reaches the registry after it. */
            report(ctx, ch);
            answer(ctx, pid, (uint32_t)num, "", 0); /* the ack */
        } else if (op == CH_UNSUB) {
            chan_unsub(ctx, ch, pid, true);
        } else if (op == CH_PUB) {
            chan_publish(ctx, ch, pid, (uint32_t)num, a, an, b, bn);
        } else if (op == CH_END) {
            return tp_exit(ctx, TP_REASON_NORMAL);
        }
        break;
    case TP_TAG_DOWN: {
        /* A subscriber ended: find it by its monitor. */
        tp_pid gone = TP_PID_NONE;
        KV_DICT_EACH(&ch->subs, e)
        {
            if (*(tp_ref *)e->val == tp_msg_ref(msg))
                gone = kv_get64(e->key);
        }
        if (gone != TP_PID_NONE)
            chan_unsub(ctx, ch, gone, false);
        break;
    }
    default: break;
    }
    return TP_HANDLED;
}

static void chan_free(void *state)
{
    ps_chan *ch = state;
    drop(&ch->subs);
    free(ch);
}

/* ------------------------------------------------------------ registry */

typedef struct ps_ref {
    tp_pid pid;         /* the channel's actor */
    uint64_t fwd, subs; /* messages forwarded to it; its last count */
} ps_ref;

typedef struct ps_pids {
    size_t n, cap;
    tp_pid v[];
} ps_pids;

typedef struct ps_mon {
    tp_ref ref;
    size_t n; /* patterns of this subscriber */
} ps_mon;

typedef struct ps_reg {
    kv_dict chans; /* name -> ps_ref */
    kv_dict pats;  /* pattern -> ps_pids */
    kv_dict mons;  /* pattern subscriber pid -> ps_mon */
} ps_reg;

static void forward(tp_ctx *ctx, ps_ref *r, int op, tp_pid pid, uint64_t num,
                    const void *a, size_t an, const void *b, size_t bn)
{
    if (tp_sendf(ctx, r->pid, KV_TAG_CHANNEL, CFMT, op, pid, num, (uint64_t)0,
                 a, an, b, bn) == 0)
        r->fwd++;
}

static ps_ref *channel_of(tp_ctx *ctx, ps_reg *g, const char *name, size_t n,
                          bool spawn)
{
    kv_de *e = find(&g->chans, name, n);
    if (e || !spawn)
        return e ? e->val : NULL;
    ps_chan *ch = calloc(1, sizeof *ch + n);
    ps_ref *r = calloc(1, sizeof *r);
    tp_spawn_opts so = {0, TP_SPAWN_LINK, chan_free};
    if (!ch || !r) {
        free(ch);
        free(r);
        return NULL;
    }
    ch->reg = tp_self(ctx);
    ch->nlen = n;
    memcpy(ch->name, name, n);
    if (tp_spawn(ctx, channel, ch, &so, &r->pid) != 0) {
        free(ch);
        free(r);
        return NULL;
    }
    add(&g->chans, name, n)->val = r;
    return r;
}

static void pattern_add(tp_ctx *ctx, ps_reg *g, tp_pid pid, const char *p,
                        size_t n)
{
    kv_de *e = find(&g->pats, p, n);
    if (!e)
        e = add(&g->pats, p, n);
    ps_pids *v = e->val;
    for (size_t i = 0; v && i < v->n; i++)
        if (v->v[i] == pid)
            return;
    if (!v || v->n == v->cap) {
        size_t cap = v ? v->cap * 2 : 4;
        ps_pids *nv = realloc(v, sizeof *nv + cap * sizeof(tp_pid));
        if (!nv)
            return;
        nv->n = v ? nv->n : 0;
        nv->cap = cap;
        e->val = v = nv;
    }
    v->v[v->n++] = pid;
    char k[8];
    kv_put64(k, pid);
    kv_de *m = find(&g->mons, k, 8);
    if (!m) {
        ps_mon *mon = calloc(1, sizeof *mon);
        if (!mon || tp_monitor(ctx, pid, &mon->ref) != 0) {
            free(mon);
            return;
        }
        m = add(&g->mons, k, 8);
        m->val = mon;
    }
    ((ps_mon *)m->val)->n++;
}

/* Remove pid from pattern p's subscribers; demonitor with its last. */
static void pattern_del(tp_ctx *ctx, ps_reg *g, tp_pid pid, const char *p,
                        size_t n, bool demonitor)
{
    kv_de *e = find(&g->pats, p, n);
    ps_pids *v = e ? e->val : NULL;
    size_t i = 0;
    while (v && i < v->n && v->v[i] != pid)
        i++;
    if (!v || i == v->n)
        return;
    v->v[i] = v->v[--v->n];
    if (!v->n)
        free(del(&g->pats, p, n));
    char k[8];
    kv_put64(k, pid);
    kv_de *m = find(&g->mons, k, 8);
    ps_mon *mon = m ? m->val : NULL;
    if (mon && --mon->n == 0) {
        if (demonitor)
            tp_demonitor(ctx, mon->ref);
        free(del(&g->mons, k, 8));
    }
}

/* A pattern subscriber ended. */
static void pattern_down(tp_ctx *ctx, ps_reg *g, tp_ref ref)
{
    tp_pid gone = TP_PID_NONE;
    KV_DICT_EACH(&g->mons, m)
    {
        if (((ps_mon *)m->val)->ref == ref)
            gone = kv_get64(m->key);
    }
    if (gone == TP_PID_NONE)
        return;
    /* Collect its patterns first: removing changes the table. */
    kv_buf names = {0};
    KV_DICT_EACH(&g->pats, e)
    {
        ps_pids *v = e->val;
        for (size_t i = 0; i < v->n; i++)
            if (v->v[i] == gone)
                name_add(&names, e->key, e->klen);
    }
    for (size_t i = 0; i + 4 <= names.n;) {
        uint32_t l = kv_get32(names.p + i);
        pattern_del(ctx, g, gone, names.p + i + 4, l, false);
        i += 4 + l;
    }
    kv_buf_free(&names);
}

static void publish(tp_ctx *ctx, ps_reg *g, tp_pid from, uint32_t seq,
                    const char *ch, size_t cn, const char *msg, size_t mn)
{
    kv_buf pats = {0};
    if (g->pats.b)
        KV_DICT_EACH(&g->pats, e)
        {
            if (!kv_glob(e->key, e->klen, ch, cn))
                continue;
            ps_pids *v = e->val;
            for (size_t i = 0; i < v->n; i++) {
                char hd[12];
                kv_put64(hd, v->v[i]);
                kv_put32(hd + 8, e->klen);
                kv_buf_add(&pats, hd, 12);
                kv_buf_add(&pats, e->key, e->klen);
            }
        }
    ps_ref *r = channel_of(ctx, g, ch, cn, false);
    if (r)
        forward(ctx, r, CH_PUB, from, seq, msg, mn, pats.p ? pats.p : "",
                pats.n);
    else
        answer_int(ctx, from, seq,
                   send_pmessages(ctx, pats.p, pats.n, ch, cn, msg, mn));
    kv_buf_free(&pats);
}

static void query(tp_ctx *ctx, ps_reg *g, tp_pid from, uint32_t seq, int kind,
                  const char *pat, size_t pn, const char *args, size_t an)
{
    kv_buf b = {0}, body = {0};
    size_t n = 0;
    if (kind == Q_NUMPAT) {
        kv_buf_int(&b, (int64_t)g->pats.count);
    } else if (kind == Q_NUMSUB) {
        for (size_t i = 0; i + 4 <= an;) {
            uint32_t l = kv_get32(args + i);
            const char *name = args + i + 4;
            i += 4 + l;
            kv_de *e = find(&g->chans, name, l);
            kv_buf_bulk(&body, name, l);
            kv_buf_int(&body, e ? (int64_t)((ps_ref *)e->val)->subs : 0);
            n += 2;
        }
    } else if (g->chans.b) {
        KV_DICT_EACH(&g->chans, e)
        {
            if (((ps_ref *)e->val)->subs &&
                (kind == Q_CHANNELS_ALL || kv_glob(pat, pn, e->key, e->klen))) {
                kv_buf_bulk(&body, e->key, e->klen);
                n++;
            }
        }
    }
    if (kind != Q_NUMPAT) {
        kv_buf_fmt(&b, "*%zu\r\n", n);
        kv_buf_add(&b, body.p, body.n);
    }
    answer(ctx, from, seq, b.p, b.n);
    kv_buf_free(&b);
    kv_buf_free(&body);
}

/* A channel's count: end its actor once it is idle and has received all. */
static void on_count(tp_ctx *ctx, ps_reg *g, const char *name, size_t n,
                     uint64_t subs, uint64_t recv)
{
    ps_ref *r = channel_of(ctx, g, name, n, false);
    if (!r)
        return;
    r->subs = subs;
    if (subs || recv != r->fwd)
        return;
    tp_sendf(ctx, r->pid, KV_TAG_CHANNEL, CFMT, CH_END, TP_PID_NONE,
             (uint64_t)0, (uint64_t)0, "", (size_t)0, "", (size_t)0);
    free(del(&g->chans, name, n));
}

static int registry(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    ps_reg *g = state;
    int op, kind;
    const char *name, *x;
    size_t nn, xn;
    uint64_t seq;
    tp_pid from = tp_msg_from(msg);
    if (kv_forged(msg))
        return TP_HANDLED;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: tp_register(ctx, "kv-pubsub"); break;
    case KV_TAG_PUBSUB:
        if (tp_msg_scanf(msg, PFMT, &op, &kind, &name, &nn, &seq,
                         (const void **)&x, &xn) != 0)
            break;
        if (op == P_SUB && kind == PUSH_PMESSAGE) {
            pattern_add(ctx, g, from, name, nn);
            answer(ctx, from, (uint32_t)seq, "", 0);
        } else if (op == P_SUB) {
            ps_ref *r = channel_of(ctx, g, name, nn, true);
            if (r)
                forward(ctx, r, CH_SUB, from, seq, "", 0, "", 0);
            else
                answer(ctx, from, (uint32_t)seq, "", 0);
        } else if (op == P_UNSUB && kind == PUSH_PMESSAGE) {
            pattern_del(ctx, g, from, name, nn, true);
        } else if (op == P_UNSUB) {
            ps_ref *r = channel_of(ctx, g, name, nn, false);
            if (r)
                forward(ctx, r, CH_UNSUB, from, 0, "", 0, "", 0);
        } else if (op == P_PUB) {
            publish(ctx, g, from, (uint32_t)seq, name, nn, x, xn);
        } else if (op == P_QUERY) {
            query(ctx, g, from, (uint32_t)seq, kind, name, nn, x, xn);
        }
        break;
    case KV_TAG_CHANNEL: {
        tp_pid pid;
        uint64_t subs, recv;
        const void *b;
        size_t bn;
        if (tp_msg_scanf(msg, CFMT, &op, &pid, &subs, &recv,
                         (const void **)&name, &nn, &b, &bn) == 0 &&
            op == CH_COUNT)
            on_count(ctx, g, name, nn, subs, recv);
        break;
    }
    case TP_TAG_DOWN: pattern_down(ctx, g, tp_msg_ref(msg)); break;
    default: break;
    }
    return TP_HANDLED;
}

static void registry_free(void *state)
{
    ps_reg *g = state;
    drop(&g->chans);
    drop(&g->pats);
    drop(&g->mons);
    free(g);
}

int kv_pubsub_start(tp_ctx *ctx, kv_server *srv)
{
    ps_reg *g = calloc(1, sizeof *g);
    if (!g)
        return TP_ENOMEM;
    tp_spawn_opts so = {0, TP_SPAWN_LINK, registry_free};
    int rc = tp_spawn(ctx, registry, g, &so, &srv->pubsub);
    if (rc)
        free(g);
    return rc;
}

/* ------------------------------------------------- the connection's side */

static kv_dict *set_of(kv_conn *c, int kind)
{
    kv_dict **d = kind == PUSH_MESSAGE ? &c->subs : &c->psubs;
    if (!*d)
        *d = calloc(1, sizeof **d);
    return *d;
}

size_t kv_pubsub_channels(const kv_conn *c)
{
    return c->subs ? c->subs->count : 0;
}

size_t kv_pubsub_count(const kv_conn *c)
{
    return (c->subs ? c->subs->count : 0) + (c->psubs ? c->psubs->count : 0);
}

static const char *const SUB_WORD[2][2] = {{"subscribe", "psubscribe"},
                                           {"unsubscribe", "punsubscribe"}};

static void confirm(kv_buf *b, const char *word, const char *name, size_t n,
                    size_t count)
{
    kv_buf_fmt(b, "*3\r\n$%zu\r\n%s\r\n", strlen(word), word);
    if (name)
        kv_buf_bulk(b, name, n);
    else
        kv_buf_str(b, "$-1\r\n");
    kv_buf_int(b, (int64_t)count);
}

static bool to_registry(tp_ctx *ctx, kv_conn *c, int op, int kind,
                        const char *name, size_t n, uint64_t seq, const void *x,
                        size_t xn)
{
    return tp_sendf(ctx, c->srv->pubsub, KV_TAG_PUBSUB, PFMT, op, kind, name, n,
                    seq, x ? x : "", xn) == 0;
}

/* What a subscription costs, counted in the client's memory (conn.c):
 * its entry here and, roughly, its share of the registry's entry and of
 * a channel actor (a client subscribing to a million channels makes a
 * million actors; the bound on clients' memory bounds that too). */
#define SUB_COST(n) (sizeof(kv_de) + 512 + (n))

/* The client's own set. */
static bool set_add(kv_conn *c, kv_dict *d, const char *p, size_t n)
{
    if (!add(d, p, n))
        return false;
    c->sub_bytes += SUB_COST(n);
    return true;
}

static bool set_del(kv_conn *c, kv_dict *d, const char *p, size_t n)
{
    if (!del(d, p, n))
        return false;
    c->sub_bytes -= SUB_COST(n);
    return true;
}

/* (P)SUBSCRIBE: the confirmations are written once every new
 * subscription is live (acked). */
static void subscribe(tp_ctx *ctx, kv_conn *c, int kind)
{
    kv_dict *d = set_of(c, kind);
    if (!d) {
        c->oom = true;
        return;
    }
    kv_slot *s = kv_slot_new(c, K_WAIT, 0);
    for (size_t i = 1; i < c->argc; i++) {
        const kv_arg *a = &c->argv[i];
        if (set_add(c, d, a->p, a->n) &&
            to_registry(ctx, c, P_SUB, kind, a->p, a->n, kv_last_seq(c), NULL,
                        0))
            s->remaining++;
        confirm(&s->buf, SUB_WORD[0][kind], a->p, a->n, kv_pubsub_count(c));
    }
}

/* Leave every channel (kind) or pattern; confirmations into b unless
 * NULL. */
static void unsubscribe_all(tp_ctx *ctx, kv_conn *c, int kind, kv_buf *b)
{
    kv_dict *d = kind == PUSH_MESSAGE ? c->subs : c->psubs;
    const char *word = SUB_WORD[1][kind];
    kv_buf names = {0};
    if (d && d->b) {
        KV_DICT_EACH(d, e) { name_add(&names, e->key, e->klen); }
    }
    for (size_t i = 0; i + 4 <= names.n;) {
        uint32_t l = kv_get32(names.p + i);
        const char *name = names.p + i + 4;
        i += 4 + l;
        set_del(c, d, name, l);
        to_registry(ctx, c, P_UNSUB, kind, name, l, 0, NULL, 0);
        if (b)
            confirm(b, word, name, l, kv_pubsub_count(c));
    }
    if (!names.n && b)
        confirm(b, word, NULL, 0, kv_pubsub_count(c));
    kv_buf_free(&names);
}

void kv_pubsub_reset(tp_ctx *ctx, kv_conn *c)
{
    unsubscribe_all(ctx, c, PUSH_MESSAGE, NULL);
    unsubscribe_all(ctx, c, PUSH_PMESSAGE, NULL);
}

static void unsubscribe(tp_ctx *ctx, kv_conn *c, int kind)
{
    kv_dict *d = kind == PUSH_MESSAGE ? c->subs : c->psubs;
    kv_buf *b = kv_reply_buf(c);
    const char *word = SUB_WORD[1][kind];
    if (c->argc == 1) {
        unsubscribe_all(ctx, c, kind, b);
        return;
    }
    for (size_t i = 1; i < c->argc; i++) {
        const kv_arg *a = &c->argv[i];
        if (set_del(c, d, a->p, a->n))
            to_registry(ctx, c, P_UNSUB, kind, a->p, a->n, 0, NULL, 0);
        confirm(b, word, a->p, a->n, kv_pubsub_count(c));
    }
}

void kv_cmd_subscribe(tp_ctx *ctx, kv_conn *c)
{
    subscribe(ctx, c, PUSH_MESSAGE);
}
void kv_cmd_psubscribe(tp_ctx *ctx, kv_conn *c)
{
    subscribe(ctx, c, PUSH_PMESSAGE);
}
void kv_cmd_unsubscribe(tp_ctx *ctx, kv_conn *c)
{
    unsubscribe(ctx, c, PUSH_MESSAGE);
}
void kv_cmd_punsubscribe(tp_ctx *ctx, kv_conn *c)
{
    unsubscribe(ctx, c, PUSH_PMESSAGE);
}

/* A slot answered by the registry or a channel actor. */
static void ask(tp_ctx *ctx, kv_conn *c, int op, int kind, const kv_arg *name,
                const void *x, size_t xn)
{
    kv_slot *s = kv_slot_new(c, K_ONE, 1);
    if (!to_registry(ctx, c, op, kind, name ? name->p : "", name ? name->n : 0,
                     kv_last_seq(c), x, xn)) {
        kv_buf_str(&s->buf, "-ERR pubsub unavailable\r\n");
        s->remaining = 0;
    }
}

void kv_cmd_publish(tp_ctx *ctx, kv_conn *c)
{
    ask(ctx, c, P_PUB, 0, &c->argv[1], c->argv[2].p, c->argv[2].n);
}

void kv_cmd_pubsub(tp_ctx *ctx, kv_conn *c)
{
    const kv_arg *sub = &c->argv[1];
    if (kv_word_is(sub, "channels") && c->argc <= 3) {
        ask(ctx, c, P_QUERY, c->argc == 3 ? Q_CHANNELS : Q_CHANNELS_ALL,
            c->argc == 3 ? &c->argv[2] : NULL, NULL, 0);
    } else if (kv_word_is(sub, "numpat") && c->argc == 2) {
        ask(ctx, c, P_QUERY, Q_NUMPAT, NULL, NULL, 0);
    } else if (kv_word_is(sub, "numsub")) {
        kv_buf names = {0};
        for (size_t i = 2; i < c->argc; i++)
            name_add(&names, c->argv[i].p, c->argv[i].n);
        ask(ctx, c, P_QUERY, Q_NUMSUB, NULL, names.p, names.n);
        kv_buf_free(&names);
    } else if (kv_word_is(sub, "channels") || kv_word_is(sub, "numpat")) {
        kv_reply_err(c,
                     "ERR wrong number of arguments for 'pubsub|%s' "
                     "command",
                     kv_word_is(sub, "numpat") ? "numpat" : "channels");
    } else {
        kv_reply_err(c, "ERR unknown subcommand '%.*s'. Try PUBSUB HELP.",
                     (int)(sub->n < 128 ? sub->n : 128), sub->p);
    }
}

void kv_pubsub_push(kv_conn *c, const tp_msg *msg)
{
    int kind;
    const char *name, *bytes;
    size_t n, bn;
    if (tp_msg_scanf(msg, "[i S y]", &kind, &name, &n, (const void **)&bytes,
                     &bn) != 0)
        return;
    /* Still subscribed? A message may cross an UNSUBSCRIBE. */
    if (find(kind == PUSH_MESSAGE ? c->subs : c->psubs, name, n))
        kv_reply(c, bytes, bn);
}

void kv_pubsub_free(kv_conn *c)
{
    drop(c->subs);
    drop(c->psubs);
    free(c->subs);
    free(c->psubs);
}
