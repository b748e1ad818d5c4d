/*
 * A shard owner: the only actor that touches its part of the keyspace
 * (coordinating access to a resource by owning it). It answers batches of
 * operations (keyed commands run whole from commands.c's table), expires
 * keys lazily on access and actively on a timer (Redis's adaptive
 * sampling), takes values moved to it by RENAME on another shard, and
 * serializes itself for snapshots.
 *
 * Replies leave in messages below KV_MAX_PAYLOAD: a batch's fragments are
 * split over several KV_TAG_REPLIES messages, and a single reply that
 * could not fit in one is answered with an error instead.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct kv_shard {
    kv_server *srv;
    unsigned idx;
    kv_db db;
    bool frozen;
    uint64_t rng;
    kv_buf rb; /* reply message being built (a bin) */
    const char **av;
    uint32_t *avn;
    size_t avcap;
};

/* A reply message is sent once it holds this much (or at the batch end). */
#define REPLY_SPLIT ((size_t)1 << 20)
#define BIN_HDR 5
#define FRAG_HDR 12

kv_shard *kv_shard_new(kv_server *srv, unsigned idx)
{
    kv_shard *sh = kv_xrealloc(NULL, sizeof *sh);
    memset(sh, 0, sizeof *sh);
    sh->srv = srv;
    sh->idx = idx;
    sh->rng = 0x9e3779b97f4a7c15ull * (idx + 1);
    kv_db_init(&sh->db);
    return sh;
}

void kv_shard_free(void *state)
{
    kv_shard *sh = state;
    if (!sh)
        return;
    kv_db_clear(&sh->db);
    kv_dict_free(&sh->db.keys, NULL);
    kv_buf_free(&sh->rb);
    free(sh->av);
    free(sh->avn);
    free(sh);
}

int kv_shard_load(kv_shard *sh, uint8_t type, const char *k, size_t kn,
                  const char *v, size_t vn, int64_t expire)
{
    void *val;
    if (kv_obj_decode(type, v, vn, &val) != 0)
        return -1;
    uint64_t h = kv_hash(k, kn);
    kv_de *e = *kv_dict_link(&sh->db.keys, k, kn, h);
    if (e)
        kv_db_replace(e, type, val);
    else
        e = kv_db_add(&sh->db, k, kn, h, type, val);
    kv_db_set_expire(&sh->db, e, expire);
    return 0;
}

/* ---------------------------------------------------------------- replies */

static void reply_send(tp_ctx *ctx, kv_shard *sh, tp_pid to)
{
    if (sh->rb.n <= BIN_HDR)
        return;
    kv_bin_finish(&sh->rb);
    /* The buffer moves into the message; start a new one next time. */
    int rc = tp_send_move(ctx, to, KV_TAG_REPLIES, sh->rb.p, sh->rb.n);
    if (rc)
        fprintf(stderr, "troupe-kv: shard %u: a reply was lost: %s\n", sh->idx,
                tp_strerror(rc));
    sh->rb.p = NULL;
    sh->rb.n = sh->rb.cap = 0;
}

/* Start a fragment; the reply value follows in sh->rb. Returns where. */
static size_t frag_open(kv_shard *sh, uint32_t seq, uint32_t pos)
{
    if (sh->rb.n == 0)
        kv_bin_start(&sh->rb);
    size_t at = sh->rb.n;
    kv_buf_reserve(&sh->rb, FRAG_HDR);
    kv_put32(sh->rb.p + at, seq);
    kv_put32(sh->rb.p + at + 4, pos);
    sh->rb.n += FRAG_HDR;
    return at;
}

static const char ERR_TOOBIG[] =
    "-ERR reply too large for a message (troupe-kv's payload limit)\r\n";

/* End the fragment started at `at`: one too large for any message becomes
 * an error; the message is sent when it is big enough. */
static void frag_close(tp_ctx *ctx, kv_shard *sh, size_t at, tp_pid to)
{
    size_t len = sh->rb.n - at - FRAG_HDR;
    if (len > KV_MAX_PAYLOAD - BIN_HDR - FRAG_HDR) {
        sh->rb.n = at + FRAG_HDR;
        kv_buf_add(&sh->rb, ERR_TOOBIG, sizeof ERR_TOOBIG - 1);
        len = sizeof ERR_TOOBIG - 1;
    }
    kv_put32(sh->rb.p + at + 8, (uint32_t)len);
    if (sh->rb.n > KV_MAX_PAYLOAD) {
        /* This fragment would overflow the message: it goes alone in the
         * next one. */
        char *frag = kv_xrealloc(NULL, FRAG_HDR + len);
        memcpy(frag, sh->rb.p + at, FRAG_HDR + len);
        sh->rb.n = at;
        reply_send(ctx, sh, to);
        kv_bin_start(&sh->rb);
        kv_buf_add(&sh->rb, frag, FRAG_HDR + len);
        free(frag);
    }
    if (sh->rb.n >= REPLY_SPLIT)
        reply_send(ctx, sh, to);
}

static void frag_lit(kv_shard *sh, const kv_ophdr *h, const char *s)
{
    if (sh->rb.n == 0)
        kv_bin_start(&sh->rb);
    kv_frag(&sh->rb, h->seq, h->pos, s, strlen(s));
}

static const char ERR_FROZEN[] = "-ERR server is saving before shutdown, "
                                 "writes are refused\r\n";

/* ------------------------------------------------------ the simple ops */

static void reply_int(kv_buf *b, int64_t v) { kv_buf_int(b, v); }

/* GET SET INCRBY DEL EXISTS EXPIRE TTL DBSIZE FLUSHALL: the conn's own
 * multi-key commands (MGET, MSET, DEL, EXISTS) and DBSIZE/INFO. */
static void run_simple(kv_shard *sh, const kv_ophdr *h, kv_buf *r, int64_t now)
{
    kv_db *db = &sh->db;
    const char *k = h->nargs ? sh->av[0] : NULL;
    size_t kn = h->nargs ? sh->avn[0] : 0;
    uint64_t hash = k ? kv_hash(k, kn) : 0;
    kv_de *e = k ? kv_db_lookup(db, k, kn, hash, now) : NULL;
    switch (h->op) {
    case OP_GET: /* MGET: nil for a key of another type */
        if (e && e->type == KV_T_STRING) {
            const kv_str *s = e->val;
            kv_buf_bulk(r, s->p, s->len);
        } else {
            kv_buf_str(r, "$-1\r\n");
        }
        break;
    case OP_SET:
        if (h->nargs < 2 || ((h->flags & F_NX) && e) ||
            ((h->flags & F_XX) && !e)) {
            kv_buf_str(r, "$-1\r\n");
            break;
        }
        if (e)
            kv_db_replace(e, KV_T_STRING, kv_str_new(sh->av[1], sh->avn[1]));
        else
            e = kv_db_add(db, k, kn, hash, KV_T_STRING,
                          kv_str_new(sh->av[1], sh->avn[1]));
        kv_db_set_expire(db, e, h->num);
        kv_buf_str(r, "+OK\r\n");
        break;
    case OP_INCRBY: {
        int64_t v = 0;
        if (e && e->type != KV_T_STRING) {
            kv_buf_str(r, KV_WRONGTYPE);
            break;
        }
        if (e &&
            !kv_parse_i64(((kv_str *)e->val)->p, ((kv_str *)e->val)->len, &v)) {
            kv_buf_str(r, KV_NOTINT);
            break;
        }
        if ((h->num > 0 && v > INT64_MAX - h->num) ||
            (h->num < 0 && v < INT64_MIN - h->num)) {
            kv_buf_str(r, "-ERR increment or decrement would overflow\r\n");
            break;
        }
        v += h->num;
        char tmp[24];
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
        if (e)
            kv_db_replace(e, KV_T_STRING, kv_str_new(tmp, (size_t)n));
        else
            kv_db_add(db, k, kn, hash, KV_T_STRING, kv_str_new(tmp, (size_t)n));
        reply_int(r, v);
        break;
    }
    case OP_DEL:
        if (e)
            kv_db_delete(db, e);
        kv_buf_str(r, e ? ":1\r\n" : ":0\r\n");
        break;
    case OP_EXISTS: kv_buf_str(r, e ? ":1\r\n" : ":0\r\n"); break;
    case OP_EXPIRE:
        if (e && h->num <= now)
            kv_db_delete(db, e);
        else if (e)
            kv_db_set_expire(db, e, h->num);
        kv_buf_str(r, e ? ":1\r\n" : ":0\r\n");
        break;
    case OP_TTL: {
        int64_t v = !e ? -2 : !e->expire ? -1 : e->expire - now;
        if (e && e->expire && !(h->flags & F_MS))
            v = (v + 500) / 1000;
        reply_int(r, v);
        break;
    }
    case OP_DBSIZE: reply_int(r, (int64_t)db->keys.count); break;
    case OP_FLUSHALL:
        kv_db_clear(db);
        kv_buf_str(r, "+OK\r\n");
        break;
    default: kv_buf_str(r, "-ERR bad shard op\r\n"); break;
    }
}

/* ------------------------------------------------- SCAN KEYS RANDOMKEY */

typedef struct scan_acc {
    kv_buf *keys;
    size_t n;
    const char *pat;
    size_t patn;
    int type; /* -1: any */
    int64_t now;
} scan_acc;

static void scan_one(void *arg, kv_de *e)
{
    scan_acc *s = arg;
    if ((e->expire && e->expire <= s->now) ||
        (s->type >= 0 && e->type != s->type) ||
        (s->pat && !kv_glob(s->pat, s->patn, e->key, e->klen)))
        return;
    kv_buf_bulk(s->keys, e->key, e->klen);
    s->n++;
}

static const char *const TYPE_NAMES[] = {"string", "list", "hash", "set",
                                         "zset"};

int kv_type_by_name(const char *p, size_t n)
{
    for (int t = 0; t <= KV_T_ZSET; t++)
        if (strlen(TYPE_NAMES[t]) == n && strncasecmp(TYPE_NAMES[t], p, n) == 0)
            return t;
    return -1;
}

const char *kv_type_name(uint8_t t) { return TYPE_NAMES[t]; }

#define SCAN_POS_MASK (((uint64_t)1 << 48) - 1)

static void run_scan(kv_shard *sh, const kv_ophdr *h, kv_buf *r, int64_t now)
{
    scan_acc acc = {.type = -1, .now = now};
    int64_t count = 10;
    for (uint32_t i = 0; i < h->nargs; i++) {
        const char *o = sh->av[i];
        size_t on = sh->avn[i];
        bool more = i + 1 < h->nargs;
        if (on == 5 && strncasecmp(o, "match", 5) == 0 && more) {
            acc.pat = sh->av[++i];
            acc.patn = sh->avn[i];
        } else if (on == 5 && strncasecmp(o, "count", 5) == 0 && more) {
            if (!kv_parse_i64(sh->av[i + 1], sh->avn[i + 1], &count)) {
                kv_buf_str(r, KV_NOTINT);
                return;
            }
            i++;
            if (count < 1) {
                kv_buf_str(r, KV_SYNTAX);
                return;
            }
        } else if (on == 4 && strncasecmp(o, "type", 4) == 0 && more) {
            i++;
            /* An unknown type matches nothing, as in Redis 7.0. */
            acc.type = kv_type_by_name(sh->av[i], sh->avn[i]);
            if (acc.type < 0)
                acc.type = 0xff;
        } else {
            kv_buf_str(r, KV_SYNTAX);
            return;
        }
    }
    /* A whole pattern match is checked per key; the match-all pattern is
     * no filter. */
    if (acc.pat && acc.patn == 1 && acc.pat[0] == '*')
        acc.pat = NULL;
    kv_buf keys = {0};
    acc.keys = &keys;
    size_t cur = (size_t)((uint64_t)h->num & SCAN_POS_MASK);
    /* Like Redis: about count keys, at most 10 x count buckets looked at. */
    int64_t visits = count * 10;
    do
        cur = kv_dict_scan(&sh->db.keys, cur, scan_one, &acc);
    while (cur && acc.n < (size_t)count && --visits > 0);
    uint64_t next = 0;
    if (cur)
        next = ((uint64_t)sh->idx << 48) | ((uint64_t)cur & SCAN_POS_MASK);
    else if (sh->idx + 1 < sh->srv->nshards)
        next = (uint64_t)(sh->idx + 1) << 48;
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)next);
    kv_buf_str(r, "*2\r\n");
    kv_buf_bulk(r, tmp, (size_t)n);
    kv_reply_arr(r, acc.n);
    kv_buf_add(r, keys.p, keys.n);
    kv_buf_free(&keys);
}

static void run_keys(kv_shard *sh, const kv_ophdr *h, kv_buf *r, int64_t now)
{
    scan_acc acc = {.type = -1, .now = now};
    if (h->nargs) {
        acc.pat = sh->av[0];
        acc.patn = sh->avn[0];
    }
    kv_buf keys = {0};
    acc.keys = &keys;
    KV_DICT_EACH(&sh->db.keys, e)
    scan_one(&acc, e);
    kv_reply_arr(r, acc.n);
    kv_buf_add(r, keys.p, keys.n);
    kv_buf_free(&keys);
}

static void run_randomkey(kv_shard *sh, kv_buf *r, int64_t now)
{
    /* Expired keys found on the way are deleted; a few tries, like Redis,
     * so a keyspace of expired keys does not loop long. */
    for (int tries = 0; tries < 100; tries++) {
        kv_de *e = kv_dict_random(&sh->db.keys, &sh->rng);
        if (!e)
            break;
        if (e->expire && e->expire <= now) {
            kv_db_delete(&sh->db, e);
            continue;
        }
        kv_buf_bulk(r, e->key, e->klen);
        return;
    }
    kv_buf_str(r, "$-1\r\n");
}

/* ------------------------------------------------------------- batches */

static bool is_write_op(uint8_t op)
{
    return op == OP_SET || op == OP_INCRBY || op == OP_DEL || op == OP_EXPIRE ||
           op == OP_FLUSHALL;
}

static void run_cmd(tp_ctx *ctx, kv_shard *sh, const kv_ophdr *h, tp_pid from,
                    int64_t now)
{
    const kv_keyed *k = kv_keyed_at((int)h->num);
    size_t at = frag_open(sh, h->seq, h->pos);
    if (!k || h->nargs < 2) {
        kv_buf_str(&sh->rb, "-ERR bad keyed command\r\n");
    } else if (k->write && sh->frozen) {
        kv_buf_str(&sh->rb, ERR_FROZEN);
    } else {
        kv_cx cx = {.sh = sh,
                    .srv = sh->srv,
                    .shard = sh->idx,
                    .db = &sh->db,
                    .r = &sh->rb,
                    .a = sh->av,
                    .an = sh->avn,
                    .argc = h->nargs,
                    .h = kv_hash(sh->av[1], sh->avn[1]),
                    .now = now,
                    .rng = &sh->rng,
                    .ctx = ctx,
                    .from = from,
                    .seq = h->seq,
                    .pos = h->pos};
        k->run(&cx);
        if (cx.no_reply) {
            sh->rb.n = at; /* answered by another shard */
            return;
        }
    }
    frag_close(ctx, sh, at, from);
}

static void run_op(tp_ctx *ctx, kv_shard *sh, const kv_ophdr *h, tp_pid from,
                   int64_t now)
{
    if (h->op == OP_CMD) {
        run_cmd(ctx, sh, h, from, now);
        return;
    }
    if (is_write_op(h->op) && sh->frozen) {
        frag_lit(sh, h, ERR_FROZEN);
        return;
    }
    size_t at = frag_open(sh, h->seq, h->pos);
    switch (h->op) {
    case OP_SCAN: run_scan(sh, h, &sh->rb, now); break;
    case OP_KEYS: run_keys(sh, h, &sh->rb, now); break;
    case OP_RANDOMKEY: run_randomkey(sh, &sh->rb, now); break;
    default: run_simple(sh, h, &sh->rb, now); break;
    }
    frag_close(ctx, sh, at, from);
}

/* Point sh->av at the op's arguments; false if they overrun the batch. */
static bool read_args(kv_shard *sh, const kv_ophdr *h, const char **p,
                      const char *end)
{
    if (h->nargs > sh->avcap) {
        sh->avcap = h->nargs;
        sh->av = kv_xrealloc(sh->av, sh->avcap * sizeof *sh->av);
        sh->avn = kv_xrealloc(sh->avn, sh->avcap * sizeof *sh->avn);
    }
    const char *q = *p;
    for (uint32_t i = 0; i < h->nargs; i++) {
        if (end - q < 4)
            return false;
        uint32_t n = kv_get32(q);
        if (n > (size_t)(end - q) - 4)
            return false;
        sh->avn[i] = n;
        sh->av[i] = q + 4;
        q += 4 + n;
    }
    *p = q;
    return true;
}

static int run_batch(tp_ctx *ctx, kv_shard *sh, const tp_msg *msg)
{
    const char *p;
    size_t n;
    if (tp_msg_scanf(msg, "y", (const void **)&p, &n) != 0)
        return TP_HANDLED;
    tp_pid from = tp_msg_from(msg);
    int64_t now = kv_now_ms();
    const char *end = p + n;
    while ((size_t)(end - p) >= sizeof(kv_ophdr)) {
        kv_ophdr h;
        memcpy(&h, p, sizeof h);
        p += sizeof h;
        if (!read_args(sh, &h, &p, end))
            break;
        run_op(ctx, sh, &h, from, now);
    }
    reply_send(ctx, sh, from);
    return TP_HANDLED;
}

/* ------------------------------------------------------ RENAME's moves */

/* KV_TAG_MOVE payload (a bin): u8 type, u8 flags, u32 seq, u32 pos,
 * u64 reply-to pid, i64 expire, u32 new key length, u32 old key length,
 * new key, old key, value payload (as in a snapshot record). */
#define MOVE_HDR 34

static int send_move(tp_ctx *ctx, tp_pid to, uint8_t type, uint8_t flags,
                     uint32_t seq, uint32_t pos, tp_pid reply_to,
                     int64_t expire, const char *nk, size_t nkn, const char *ok,
                     size_t okn, const void *val, const char *enc, size_t encn)
{
    kv_buf b = {0};
    kv_bin_start(&b);
    kv_buf_reserve(&b, MOVE_HDR + nkn + okn);
    char *q = b.p + b.n;
    q[0] = (char)type;
    q[1] = (char)flags;
    kv_put32(q + 2, seq);
    kv_put32(q + 6, pos);
    kv_put64(q + 10, reply_to);
    kv_put64(q + 18, (uint64_t)expire);
    kv_put32(q + 26, (uint32_t)nkn);
    kv_put32(q + 30, (uint32_t)okn);
    b.n += MOVE_HDR;
    kv_buf_add(&b, nk, nkn);
    kv_buf_add(&b, ok, okn);
    if (val)
        kv_obj_encode(&b, type, val);
    else
        kv_buf_add(&b, enc, encn);
    kv_bin_finish(&b);
    if (b.n > KV_MAX_PAYLOAD) {
        kv_buf_free(&b);
        return TP_E2BIG;
    }
    return tp_send_move(ctx, to, KV_TAG_MOVE, b.p, b.n);
}

void kv_shard_move(kv_cx *cx, kv_de *e, unsigned to_shard, const char *nk,
                   size_t nkn, uint8_t flags)
{
    kv_shard *sh = cx->sh;
    tp_pid to = kv_shard_pid(sh->srv, to_shard);
    int rc = to == TP_PID_NONE
                 ? TP_ENOPROC
                 : send_move(cx->ctx, to, e->type, flags, cx->seq, cx->pos,
                             cx->from, e->expire, nk, nkn, e->key, e->klen,
                             e->val, NULL, 0);
    if (rc == TP_E2BIG) {
        KV_ERR(cx, ERR_TOOBIG);
    } else if (rc) {
        kv_buf_fmt(cx->r, "-ERR cannot move the key to its shard: %s\r\n",
                   tp_strerror(rc));
    } else {
        kv_db_delete(cx->db, e);
        cx->no_reply = true; /* the destination answers */
    }
}

static void answer(tp_ctx *ctx, kv_shard *sh, tp_pid to, uint32_t seq,
                   uint32_t pos, const char *resp)
{
    kv_bin_start(&sh->rb);
    kv_frag(&sh->rb, seq, pos, resp, strlen(resp));
    reply_send(ctx, sh, to);
}

static void on_move(tp_ctx *ctx, kv_shard *sh, const tp_msg *msg)
{
    const char *p;
    size_t n;
    if (tp_msg_scanf(msg, "y", (const void **)&p, &n) != 0 || n < MOVE_HDR ||
        (uint64_t)kv_get32(p + 26) + kv_get32(p + 30) > n - MOVE_HDR)
        return;
    uint8_t type = (uint8_t)p[0], flags = (uint8_t)p[1];
    uint32_t seq = kv_get32(p + 2), pos = kv_get32(p + 6);
    tp_pid reply_to = kv_get64(p + 10);
    int64_t expire = (int64_t)kv_get64(p + 18);
    size_t kn = kv_get32(p + 26), okn = kv_get32(p + 30);
    const char *k = p + MOVE_HDR, *ok = k + kn, *v = ok + okn;
    size_t vn = n - MOVE_HDR - kn - okn;
    int64_t now = kv_now_ms();
    kv_de *e = kv_db_lookup(&sh->db, k, kn, kv_hash(k, kn), now);
    if (flags & KV_MOVE_RESTORE) {
        /* A move that could not land comes back; a key written here
         * meanwhile is newer and stays. */
        if (!e && kv_shard_load(sh, type, k, kn, v, vn, expire) != 0)
            fprintf(stderr, "troupe-kv: shard %u: bad restored value\n",
                    sh->idx);
        return;
    }
    const char *resp = (flags & KV_MOVE_NX) ? ":1\r\n" : "+OK\r\n";
    if (sh->frozen || ((flags & KV_MOVE_NX) && e)) {
        /* Not taken here: the value goes back to its old name. */
        resp = sh->frozen ? ERR_FROZEN : ":0\r\n";
        unsigned src = kv_shard_of(sh->srv, ok, okn);
        int rc = send_move(ctx, kv_shard_pid(sh->srv, src), type,
                           KV_MOVE_RESTORE, 0, 0, TP_PID_NONE, expire, ok, okn,
                           "", 0, NULL, v, vn);
        if (rc)
            fprintf(stderr,
                    "troupe-kv: shard %u: a renamed value was lost: "
                    "%s\n",
                    sh->idx, tp_strerror(rc));
    } else if (kv_shard_load(sh, type, k, kn, v, vn, expire) != 0) {
        resp = "-ERR bad moved value\r\n";
    }
    answer(ctx, sh, reply_to, seq, pos, resp);
}

/* ----------------------------------------------------------------- expiry */

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Active expiry, Redis's adaptive cycle: sample 20 keys that have an
 * expiry, delete the expired ones, and go on while more than a quarter of
 * a sample was expired, within a time budget (a quarter of the 100 ms
 * period), so a mass expiry is cleared in a few cycles and a keyspace
 * with few expired keys costs one sample per tick. */
#define SWEEP_SAMPLE 20
#define SWEEP_BUDGET_US 25000

static void sweep(kv_shard *sh)
{
    kv_db *db = &sh->db;
    int64_t now = kv_now_ms(), t0 = mono_us();
    for (unsigned round = 0; db->xn; round++) {
        size_t n = db->xn < SWEEP_SAMPLE ? db->xn : SWEEP_SAMPLE, expired = 0;
        for (size_t i = 0; i < n && db->xn; i++) {
            kv_de *e = db->xs[kv_rand(&sh->rng) % db->xn];
            if (e->expire <= now) {
                kv_db_delete(db, e);
                expired++;
            }
        }
        if (expired * 4 <= n)
            break;
        if ((round & 15) == 15 && mono_us() - t0 > SWEEP_BUDGET_US)
            break;
    }
}

/* ------------------------------------------------------------- snapshots */

/* Serialize every live key; the buffer goes to the coordinator by pointer
 * (a move: the receiver frees it). Records: see snapshot.c. */
static void snapshot(tp_ctx *ctx, kv_shard *sh, const tp_msg *msg)
{
    int64_t final = 0;
    tp_msg_int(msg, &final);
    if (final)
        sh->frozen = true;
    int64_t now = kv_now_ms();
    kv_buf b = {0};
    uint64_t count = 0;
    KV_DICT_EACH(&sh->db.keys, e)
    {
        if (e->expire && e->expire <= now)
            continue;
        size_t at = b.n;
        kv_buf_reserve(&b, KV_REC_HDR + e->klen);
        b.n += KV_REC_HDR;
        kv_buf_add(&b, e->key, e->klen);
        kv_obj_encode(&b, e->type, e->val);
        char *hd = b.p + at;
        hd[0] = (char)e->type;
        kv_put32(hd + 1, e->klen);
        kv_put32(hd + 5, (uint32_t)(b.n - at - KV_REC_HDR - e->klen));
        kv_put64(hd + 9, (uint64_t)e->expire);
        count++;
    }
    if (tp_sendf(ctx, tp_msg_from(msg), KV_TAG_PART, "[i u u u]", (int)sh->idx,
                 (uint64_t)(uintptr_t)b.p, (uint64_t)b.n, count) != 0)
        free(b.p);
}

int kv_shard_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    kv_shard *sh = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        return tp_send_interval(ctx, 100, KV_TAG_SWEEP, NULL, 0, NULL);
    case KV_TAG_BATCH: return run_batch(ctx, sh, msg);
    case KV_TAG_MOVE: on_move(ctx, sh, msg); break;
    case KV_TAG_SWEEP: sweep(sh); break;
    case KV_TAG_SNAPSHOT: snapshot(ctx, sh, msg); break;
    case KV_TAG_THAW: sh->frozen = false; break;
    default: break;
    }
    return TP_HANDLED;
}
