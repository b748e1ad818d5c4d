/*
 * A shard owner: the only actor that touches its part of the keyspace
 * (coordinating access to a resource by owning it). It answers batches of
 * operations (keyed commands run whole from commands.c's table), expires
 * keys lazily on access and actively on a timer (Redis's adaptive
 * sampling), takes values moved to it by RENAME on another shard, and
 * serializes itself for snapshots.
 *
 * Replies leave in messages below KV_MAX_PAYLOAD (the node's limit in
 * force, at most KV_NODE_MAX_MESSAGE, to a connection on another node): a batch's fragments are split over several
 * messages, the last one KV_TAG_REPLIES (sent even when empty, so that
 * the connection counts one per batch) and the others
 * KV_TAG_MORE_REPLIES, and a single reply that could not fit in one is
 * answered with an error instead.
 */
#include "store.h"

#include <troupe/node.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct kv_pending {
    uint64_t id;
    kv_buf rec; /* its weak snapshot record */
} kv_pending;

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
    kv_pending *pend; /* values RENAME sent to other shards, in flight */
    size_t npend, cappend;
    uint64_t move_id;
    size_t node_max; /* largest message to another node now (cluster) */
};

/* A reply message is sent once it holds this much (or at the batch end):
 * to a local connection, and to one on another node, whose frames carry
 * the message with its addresses (NODE_SLACK covers them). */
#define REPLY_SPLIT ((size_t)1 << 20)
#define NODE_SLACK ((size_t)4096)
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
    for (size_t i = 0; i < sh->npend; i++)
        kv_buf_free(&sh->pend[i].rec);
    free(sh->pend);
    free(sh->av);
    free(sh->avn);
    free(sh);
}

int kv_shard_load(kv_shard *sh, uint8_t type, const char *k, size_t kn,
                  const char *v, size_t vn, int64_t expire)
{
    void *val;
    bool weak = type & KV_REC_WEAK;
    type &= (uint8_t)~KV_REC_WEAK;
    uint64_t h = kv_hash(k, kn);
    kv_de *e = *kv_dict_link(&sh->db.keys, k, kn, h);
    if (e && weak)
        return 0; /* an in-flight copy; the key's own record wins */
    if (kv_obj_decode(type, v, vn, &val) != 0)
        return -1;
    if (e)
        kv_db_replace(e, type, val);
    else
        e = kv_db_add(&sh->db, k, kn, h, type, val);
    kv_db_set_expire(&sh->db, e, expire);
    return 0;
}

/* ---------------------------------------------------------------- replies */

/* Send the fragments in sh->rb to `to` (none: an empty bin, for a
 * KV_TAG_REPLIES that ends a batch). */
static void reply_send(tp_ctx *ctx, kv_shard *sh, tp_pid to, int32_t tag)
{
    if (sh->rb.n == 0)
        kv_bin_start(&sh->rb);
    kv_bin_finish(&sh->rb);
    /* The buffer moves into the message; start a new one next time. The
     * message is within the limit of the way to `to` (frag_close), so a
     * send fails only when `to` is gone: a local conn that ended, or one
     * on a node whose link is down, whose conns fail their pending ops
     * when their monitors of this shard fire (route.c). */
    int rc = tp_send_move(ctx, to, tag, sh->rb.p, sh->rb.n);
    if (rc)
        fprintf(stderr, "troupe-kv: shard %u: a reply was lost: %s\n", sh->idx,
                tp_strerror(rc));
    sh->rb.p = NULL;
    sh->rb.n = sh->rb.cap = 0;
}

/* The node's limit on a message to another node, now: read at start and
 * at each sweep (a reconnect to a server with a smaller max_payload
 * lowers it), less NODE_SLACK for the frame's addresses; at least
 * 3 * NODE_SLACK (a server allowing less cannot carry kv's frames). */
static void read_node_max(tp_ctx *ctx, kv_shard *sh)
{
    tp_node_stats st;
    if (!tp_node_name(tp_ctx_runtime(ctx)))
        return;
    tp_node_stats_get(tp_ctx_runtime(ctx), &st);
    size_t max = st.max_message ? (size_t)st.max_message : KV_NODE_MAX_MESSAGE;
    sh->node_max = max > 4 * NODE_SLACK ? max - NODE_SLACK : 3 * NODE_SLACK;
}

/* The largest message to `to`. */
static size_t reply_max(const kv_shard *sh, tp_pid to)
{
    return tp_pid_is_remote(to) ? sh->node_max : KV_MAX_PAYLOAD;
}

/* A message to `to` is sent once it holds this much. */
static size_t reply_split(const kv_shard *sh, tp_pid to)
{
    return tp_pid_is_remote(to) ? sh->node_max / 2 : REPLY_SPLIT;
}

/* The largest reply value in a fragment to `to`. A message holds less
 * than split before a fragment, so a fragment of at most max - split
 * always fits. */
static size_t frag_room(const kv_shard *sh, tp_pid to)
{
    return reply_max(sh, to) - reply_split(sh, to) - BIN_HDR - FRAG_HDR;
}

/* Start a fragment for `to`; the reply value follows in sh->rb, which
 * stops growing past what the fragment may hold (sh->rb.max: a command
 * whose reply would be larger, such as HMGET of one field many times,
 * stops there instead of allocating until the server aborts). Returns
 * where. */
static size_t frag_open(kv_shard *sh, uint32_t seq, uint32_t pos, tp_pid to)
{
    if (sh->rb.n == 0)
        kv_bin_start(&sh->rb);
    size_t at = sh->rb.n;
    kv_buf_reserve(&sh->rb, FRAG_HDR);
    kv_put32(sh->rb.p + at, seq);
    kv_put32(sh->rb.p + at + 4, pos);
    sh->rb.n += FRAG_HDR;
    sh->rb.max = sh->rb.n + frag_room(sh, to);
    return at;
}

/* End the fragment started at `at` and send the message once it is big
 * enough. A fragment over its room becomes an error. */
static void frag_close(tp_ctx *ctx, kv_shard *sh, size_t at, tp_pid to)
{
    size_t split = reply_split(sh, to);
    size_t len = sh->rb.n - at - FRAG_HDR;
    bool over = sh->rb.over || len > frag_room(sh, to);
    sh->rb.max = 0;
    sh->rb.over = false;
    if (over) {
        sh->rb.n = at + FRAG_HDR;
        kv_buf_str(&sh->rb, KV_TOOBIG);
        len = strlen(KV_TOOBIG);
    }
    kv_put32(sh->rb.p + at + 8, (uint32_t)len);
    if (sh->rb.n >= split)
        reply_send(ctx, sh, to, KV_TAG_MORE_REPLIES);
}

static const char ERR_FROZEN[] = "-ERR server is saving before shutdown, "
                                 "writes are refused\r\n";

/* ------------------------------------------------------ the simple ops */

/* GET SET DEL EXISTS (one key of the conn's MGET, MSET, DEL, EXISTS),
 * DBSIZE, FLUSHALL. */
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
    case OP_SET: /* MSET: any type is overwritten, any expiry dropped */
        if (h->nargs < 2) {
            kv_buf_str(r, "-ERR bad shard op\r\n");
            break;
        }
        if (e) {
            kv_db_replace(e, KV_T_STRING, kv_str_new(sh->av[1], sh->avn[1]));
            kv_db_set_expire(db, e, 0);
        } else {
            kv_db_add(db, k, kn, hash, KV_T_STRING,
                      kv_str_new(sh->av[1], sh->avn[1]));
        }
        kv_buf_str(r, "+OK\r\n");
        break;
    case OP_DEL:
        if (e)
            kv_db_delete(db, e);
        kv_buf_str(r, e ? ":1\r\n" : ":0\r\n");
        break;
    case OP_EXISTS: kv_buf_str(r, e ? ":1\r\n" : ":0\r\n"); break;
    case OP_DBSIZE: kv_buf_int(r, (int64_t)db->keys.count); break;
    case OP_KEYSPACE:
        kv_buf_str(r, "*2\r\n");
        kv_buf_int(r, (int64_t)db->keys.count);
        kv_buf_int(r, (int64_t)db->xn);
        break;
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
    int64_t visits = count > INT64_MAX / 10 ? INT64_MAX : count * 10;
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
    return op == OP_SET || op == OP_DEL || op == OP_FLUSHALL;
}

static void run_cmd(tp_ctx *ctx, kv_shard *sh, const kv_ophdr *h, tp_pid from,
                    int64_t now)
{
    const kv_keyed *k = kv_keyed_at((int)h->num);
    size_t at = frag_open(sh, h->seq, h->pos, from);
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
            sh->rb.max = 0;
            sh->rb.over = false;
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
    size_t at = frag_open(sh, h->seq, h->pos, from);
    if (is_write_op(h->op) && sh->frozen)
        kv_buf_str(&sh->rb, ERR_FROZEN);
    else if (h->op == OP_SCAN)
        run_scan(sh, h, &sh->rb, now);
    else if (h->op == OP_KEYS)
        run_keys(sh, h, &sh->rb, now);
    else if (h->op == OP_RANDOMKEY)
        run_randomkey(sh, &sh->rb, now);
    else
        run_simple(sh, h, &sh->rb, now);
    frag_close(ctx, sh, at, from);
}

/* The argument at *p (u32 length, bytes) into *a, *n, and *p past it;
 * false if it overruns the batch. */
static bool next_arg(const char **p, const char *end, const char **a,
                     uint32_t *n)
{
    if (end - *p < 4)
        return false;
    *n = kv_get32(*p);
    if (*n > (size_t)(end - *p) - 4)
        return false;
    *a = *p + 4;
    *p += 4 + *n;
    return true;
}

/* Point sh->av at the op's arguments; false if they overrun the batch. */
static bool read_args(kv_shard *sh, const kv_ophdr *h, const char **p,
                      const char *end)
{
    if (h->nargs > (size_t)(end - *p) / 4) /* each takes 4 bytes at least */
        return false;
    if (h->nargs > sh->avcap) {
        sh->avcap = h->nargs;
        sh->av = kv_xrealloc(sh->av, sh->avcap * sizeof *sh->av);
        sh->avn = kv_xrealloc(sh->avn, sh->avcap * sizeof *sh->avn);
    }
    for (uint32_t i = 0; i < h->nargs; i++)
        if (!next_arg(p, end, &sh->av[i], &sh->avn[i]))
            return false;
    return true;
}

/* The key of an op whose run looks one up (args[1] of a command, args[0]
 * of a single-key op), or -1. */
static int key_arg(const kv_ophdr *h)
{
    if (h->op == OP_CMD)
        return h->nargs >= 2 ? 1 : -1;
    if (h->op >= OP_GET && h->op <= OP_EXISTS)
        return h->nargs >= 1 ? 0 : -1;
    return -1;
}

/* Before a batch runs, its first PREFETCH_OPS lookups are started: the
 * keys' buckets are prefetched, then the buckets' first entries, and for
 * a command on a hash or a set, its args[2] (a field, a member) in that
 * hash or set the same way, and for one on a sorted set its last argument
 * when there are at most four (ZADD key score member, ZSCORE key member).
 * Each lookup in a large table misses the cache twice (bucket, entry);
 * issued together they overlap, where one op after another they would not
 * (Redis 8 prefetches its io threads' batches the same way). Ops with many
 * arguments end the look-ahead: walking them would cost more than the
 * misses it hides. */
#define PREFETCH_OPS 16
#define PREFETCH_MAX_ARGS 8
typedef struct ahead {
    kv_de *const *slot;       /* the key's bucket */
    const char *key, *sub[2]; /* args[2]; args[3] when it is the last */
    uint32_t kn, subn[2];
    uint64_t h;
} ahead;

/* The op's key and args[2..3] of a command; false if it overruns the
 * batch. */
static bool ahead_args(const kv_ophdr *h, const char **p, const char *end,
                       ahead *a)
{
    int ki = key_arg(h);
    a->key = a->sub[0] = a->sub[1] = NULL;
    for (uint32_t i = 0; i < h->nargs; i++) {
        const char *arg;
        uint32_t len;
        if (!next_arg(p, end, &arg, &len))
            return false;
        if ((int)i == ki) {
            a->key = arg;
            a->kn = len;
        } else if (h->op == OP_CMD && (i == 2 || (i == 3 && h->nargs == 4))) {
            a->sub[i - 2] = arg;
            a->subn[i - 2] = len;
        }
    }
    return true;
}

static void prefetch_keys(kv_shard *sh, const char *p, const char *end)
{
    ahead a[PREFETCH_OPS];
    unsigned n = 0;
    const kv_dict *d = &sh->db.keys;
    while (n < PREFETCH_OPS && (size_t)(end - p) >= sizeof(kv_ophdr)) {
        kv_ophdr h;
        memcpy(&h, p, sizeof h);
        p += sizeof h;
        if (h.nargs > PREFETCH_MAX_ARGS || !ahead_args(&h, &p, end, &a[n]))
            break;
        if (a[n].key) {
            a[n].h = kv_hash(a[n].key, a[n].kn);
            a[n].slot = &d->b[a[n].h & d->mask];
            __builtin_prefetch(a[n].slot);
            n++;
        }
    }
    for (unsigned i = 0; i < n; i++)
        __builtin_prefetch(*a[i].slot); /* NULL: no entry, a no-op */
    kv_de *const *sub[PREFETCH_OPS];
    bool field[PREFETCH_OPS]; /* sub[i] is a hash's: its entry has a value */
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!a[i].sub[0])
            continue;
        kv_de *e = *kv_dict_link(&sh->db.keys, a[i].key, a[i].kn, a[i].h);
        const kv_dict *nd;
        int j = 0; /* which argument is the field or member */
        if (e && (e->type == KV_T_HASH || e->type == KV_T_SET)) {
            nd = e->val;
        } else if (e && e->type == KV_T_ZSET) {
            nd = &((const kv_zset *)e->val)->d;
            j = a[i].sub[1] != NULL;
        } else {
            continue;
        }
        sub[m] = &nd->b[kv_hash(a[i].sub[j], a[i].subn[j]) & nd->mask];
        field[m] = e->type == KV_T_HASH;
        __builtin_prefetch(sub[m]);
        m++;
    }
    for (unsigned i = 0; i < m; i++)
        __builtin_prefetch(*sub[i]);
    /* A hash field's value, with its allocator header: HSET frees it (a
     * cold free was a tenth of HSET's time), HGET reads it. The bucket's
     * first entry is the field at the table's load of at most 1. */
    for (unsigned i = 0; i < m; i++) {
        const kv_de *fe = *sub[i];
        if (field[i] && fe)
            __builtin_prefetch((const char *)fe->val - 8);
    }
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
    prefetch_keys(sh, p, end);
    while ((size_t)(end - p) >= sizeof(kv_ophdr)) {
        kv_ophdr h;
        memcpy(&h, p, sizeof h);
        p += sizeof h;
        if (!read_args(sh, &h, &p, end))
            break;
        run_op(ctx, sh, &h, from, now);
    }
    reply_send(ctx, sh, from, KV_TAG_REPLIES);
    return TP_HANDLED;
}

/* ------------------------------------------------------ RENAME's moves */

/* A value moving between shards (KV_TAG_MOVE): [reply-to pid, bin]. The
 * pid travels as a pid (the node layer translates it when the shards are
 * on different nodes; raw bytes would name some unrelated local actor
 * there). The bin: u8 type, u8 flags, u32 seq, u32 pos, i64 expire, u64
 * id, u32 new key length, u32 old key length, new key, old key, value
 * payload (as in a snapshot record). The destination answers the client, then tells the
 * source (KV_MOVE_ACK, or KV_MOVE_RESTORE with the value when it does not
 * take it). Until then the source keeps a copy, which its snapshots hold
 * as a weak record: a snapshot taken while the value is in flight has it
 * whichever side's part was taken first. */
typedef struct move {
    uint8_t type, flags;
    uint32_t seq, pos;
    tp_pid reply_to;
    int64_t expire;
    uint64_t id;
    const char *nk, *ok, *v;
    size_t nkn, okn, vn;
} move;
#define MOVE_HDR 34

static int move_send(tp_ctx *ctx, tp_pid to, const move *m)
{
    if (to == TP_PID_NONE)
        return TP_ENOPROC;
    kv_buf b = {0};
    kv_buf_reserve(&b, MOVE_HDR + m->nkn + m->okn + m->vn);
    char *q = b.p;
    q[0] = (char)m->type;
    q[1] = (char)m->flags;
    kv_put32(q + 2, m->seq);
    kv_put32(q + 6, m->pos);
    kv_put64(q + 10, (uint64_t)m->expire);
    kv_put64(q + 18, m->id);
    kv_put32(q + 26, (uint32_t)m->nkn);
    kv_put32(q + 30, (uint32_t)m->okn);
    b.n = MOVE_HDR;
    kv_buf_add(&b, m->nk, m->nkn);
    kv_buf_add(&b, m->ok, m->okn);
    kv_buf_add(&b, m->v, m->vn);
    size_t max = tp_pid_is_remote(to) ? KV_NODE_MAX_MESSAGE - NODE_SLACK
                                      : KV_MAX_PAYLOAD - 64;
    if (b.n > max) {
        kv_buf_free(&b);
        return TP_E2BIG;
    }
    /* One copy into the payload; a RENAME across shards is rare. */
    int rc = tp_sendf(ctx, to, KV_TAG_MOVE, "[p y]", m->reply_to, b.p, b.n);
    kv_buf_free(&b);
    return rc;
}

/* Read a move; false if it is malformed (it is then dropped: a shard
 * never trusts a message's layout). */
static bool move_parse(const tp_msg *msg, move *m)
{
    const char *p;
    size_t n;
    if (tp_msg_scanf(msg, "[p y]", &m->reply_to, (const void **)&p, &n) != 0 ||
        n < MOVE_HDR)
        return false;
    m->type = (uint8_t)p[0];
    m->flags = (uint8_t)p[1];
    m->seq = kv_get32(p + 2);
    m->pos = kv_get32(p + 6);
    m->expire = (int64_t)kv_get64(p + 10);
    m->id = kv_get64(p + 18);
    m->nkn = kv_get32(p + 26);
    m->okn = kv_get32(p + 30);
    if ((uint64_t)m->nkn + m->okn > n - MOVE_HDR ||
        (m->flags & ~(KV_MOVE_NX | KV_MOVE_RESTORE | KV_MOVE_ACK)) != 0)
        return false;
    m->nk = p + MOVE_HDR;
    m->ok = m->nk + m->nkn;
    m->v = m->ok + m->okn;
    m->vn = n - MOVE_HDR - m->nkn - m->okn;
    return true;
}

/* Snapshot records (snapshot.c): header, key, value payload. */
static size_t rec_begin(kv_buf *b, uint8_t type, const char *k, size_t kn,
                        int64_t expire)
{
    size_t at = b->n;
    kv_buf_reserve(b, KV_REC_HDR + kn);
    char *hd = b->p + at;
    hd[0] = (char)type;
    kv_put32(hd + 1, (uint32_t)kn);
    kv_put64(hd + 9, (uint64_t)expire);
    b->n += KV_REC_HDR;
    kv_buf_add(b, k, kn);
    return at;
}

static void rec_end(kv_buf *b, size_t at)
{
    uint32_t kn = kv_get32(b->p + at + 1);
    kv_put32(b->p + at + 5, (uint32_t)(b->n - at - KV_REC_HDR - kn));
}

static void pending_drop(kv_shard *sh, uint64_t id)
{
    for (size_t i = 0; i < sh->npend; i++)
        if (sh->pend[i].id == id) {
            kv_buf_free(&sh->pend[i].rec);
            sh->pend[i] = sh->pend[--sh->npend];
            return;
        }
}

void kv_shard_move(kv_cx *cx, kv_de *e, unsigned to_shard, const char *nk,
                   size_t nkn, uint8_t flags)
{
    kv_shard *sh = cx->sh;
    if (sh->npend == sh->cappend) {
        sh->cappend = sh->cappend ? sh->cappend * 2 : 4;
        sh->pend = kv_xrealloc(sh->pend, sh->cappend * sizeof *sh->pend);
    }
    kv_pending *pd = &sh->pend[sh->npend];
    pd->id = ++sh->move_id;
    pd->rec = (kv_buf){0};
    size_t at = rec_begin(&pd->rec, e->type | KV_REC_WEAK, nk, nkn, e->expire);
    size_t v = pd->rec.n;
    kv_obj_encode(&pd->rec, e->type, e->val);
    rec_end(&pd->rec, at);
    move m = {.type = e->type,
              .flags = flags,
              .seq = cx->seq,
              .pos = cx->pos,
              .reply_to = cx->from,
              .expire = e->expire,
              .id = pd->id,
              .nk = nk,
              .nkn = nkn,
              .ok = e->key,
              .okn = e->klen,
              .v = pd->rec.p + v,
              .vn = pd->rec.n - v};
    int rc = move_send(cx->ctx, kv_shard_pid(sh->srv, to_shard), &m);
    if (rc) {
        kv_buf_free(&pd->rec);
        if (rc == TP_E2BIG)
            KV_ERR(cx, KV_TOOBIG);
        else
            kv_buf_fmt(cx->r, "-ERR cannot move the key to its shard: %s\r\n",
                       tp_strerror(rc));
        return;
    }
    sh->npend++;
    kv_db_delete(cx->db, e);
    cx->no_reply = true; /* the destination answers */
}

/* A moved RENAME's answer, from its destination (not the shard its batch
 * went to, which counted the batch answered: KV_TAG_MORE_REPLIES). */
static void answer(tp_ctx *ctx, kv_shard *sh, tp_pid to, uint32_t seq,
                   uint32_t pos, const char *resp)
{
    kv_bin_start(&sh->rb);
    kv_frag(&sh->rb, seq, pos, resp, strlen(resp));
    reply_send(ctx, sh, to, KV_TAG_MORE_REPLIES);
}

static void on_move(tp_ctx *ctx, kv_shard *sh, const tp_msg *msg)
{
    move m;
    bool ok = move_parse(msg, &m);
    /* A value (a new one or one coming back) must be this shard's key, and
     * a new one has a client to answer. */
    if (ok && !(m.flags & KV_MOVE_ACK))
        ok = kv_shard_of(sh->srv, m.nk, m.nkn) == sh->idx &&
             ((m.flags & KV_MOVE_RESTORE) || m.reply_to != TP_PID_NONE);
    if (!ok) {
        fprintf(stderr, "troupe-kv: shard %u: a malformed move was dropped\n",
                sh->idx);
        return;
    }
    if (m.flags & KV_MOVE_ACK) { /* we are the source: it landed */
        pending_drop(sh, m.id);
        return;
    }
    kv_de *e =
        kv_db_lookup(&sh->db, m.nk, m.nkn, kv_hash(m.nk, m.nkn), kv_now_ms());
    if (m.flags & KV_MOVE_RESTORE) {
        /* We are the source and the value comes back; a key written here
         * meanwhile is newer and stays. */
        pending_drop(sh, m.id);
        if (!e &&
            kv_shard_load(sh, m.type, m.nk, m.nkn, m.v, m.vn, m.expire) != 0)
            fprintf(stderr, "troupe-kv: shard %u: bad restored value\n",
                    sh->idx);
        return;
    }
    const char *resp = (m.flags & KV_MOVE_NX) ? ":1\r\n" : "+OK\r\n";
    move back = m;
    back.reply_to = TP_PID_NONE;
    if (sh->frozen || ((m.flags & KV_MOVE_NX) && e)) {
        /* Not taken here: the value goes back to its old name. */
        resp = sh->frozen ? ERR_FROZEN : ":0\r\n";
        back.flags = KV_MOVE_RESTORE;
        back.nk = m.ok;
        back.nkn = m.okn;
        back.okn = 0;
    } else {
        if (kv_shard_load(sh, m.type, m.nk, m.nkn, m.v, m.vn, m.expire) != 0)
            resp = "-ERR bad moved value\r\n";
        back.flags = KV_MOVE_ACK;
        back.nkn = back.okn = back.vn = 0;
    }
    int rc = move_send(ctx,
                       kv_shard_pid(sh->srv, kv_shard_of(sh->srv, m.ok, m.okn)),
                       &back);
    if (rc)
        fprintf(stderr,
                "troupe-kv: shard %u: cannot tell a RENAME's source "
                "shard: %s\n",
                sh->idx, tp_strerror(rc));
    answer(ctx, sh, m.reply_to, m.seq, m.pos, resp);
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
        size_t at = rec_begin(&b, e->type, e->key, e->klen, e->expire);
        kv_obj_encode(&b, e->type, e->val);
        rec_end(&b, at);
        count++;
    }
    for (size_t i = 0; i < sh->npend; i++, count++)
        kv_buf_add(&b, sh->pend[i].rec.p, sh->pend[i].rec.n);
    if (tp_sendf(ctx, tp_msg_from(msg), KV_TAG_PART, "[i u u u]", (int)sh->idx,
                 (uint64_t)(uintptr_t)b.p, (uint64_t)b.n, count) != 0)
        free(b.p);
}

int kv_shard_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    kv_shard *sh = state;
    if (kv_forged(msg))
        return TP_HANDLED;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        read_node_max(ctx, sh);
        return tp_send_interval(ctx, 100, KV_TAG_SWEEP, NULL, 0, NULL);
    case KV_TAG_BATCH: return run_batch(ctx, sh, msg);
    case KV_TAG_MOVE: on_move(ctx, sh, msg); break;
    case KV_TAG_SWEEP:
        read_node_max(ctx, sh);
        sweep(sh);
        break;
    case KV_TAG_SNAPSHOT: snapshot(ctx, sh, msg); break;
    case KV_TAG_THAW: sh->frozen = false; break;
    default: break;
    }
    return TP_HANDLED;
}
