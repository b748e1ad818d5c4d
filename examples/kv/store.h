/*
 * The shard's data structures (shard side of troupe-kv only): strings, a
 * chained hash table (the keyspace, hash fields, set members, sorted set
 * members), a ring deque (lists), a skiplist (sorted sets), the keyspace
 * with its array of keys that have an expiry, and what a keyed command
 * gets to run (kv_cx). Everything here belongs to one shard actor: no
 * locks, no atomics.
 */
#ifndef KV_STORE_H
#define KV_STORE_H

#include "kv.h"

/* Value types, as the snapshot stores them (do not renumber). */
enum { KV_T_STRING = 0, KV_T_LIST, KV_T_HASH, KV_T_SET, KV_T_ZSET };

/* In a snapshot record's type byte: a copy of a value RENAME has in
 * flight, loaded only if no record of that key is in the file. */
#define KV_REC_WEAK 0x80

/* Largest string value (Redis's proto-max-bulk-len default). */
#define KV_STR_MAX (512u << 20)

/* A string value: not NUL-terminated. */
typedef struct kv_str {
    uint32_t len;
    char p[];
} kv_str;
kv_str *kv_str_new(const void *p, size_t n);

/* ------------------------------------------------------------- hash table */

/* An entry. In the keyspace, val is the value (by type) and expire/xi/type
 * are used; in a hash val is the field's kv_str, in a set it is unused,
 * in a sorted set it is the member's skiplist node. */
typedef struct kv_de {
    struct kv_de *next;
    uint64_t hash;
    union {
        void *val;
        double score; /* a sorted set's member */
    };
    int64_t expire; /* unix ms, 0 = never */
    uint32_t xi;    /* index in kv_db.xs while expire != 0 */
    uint32_t klen;
    uint8_t type;
    char key[];
} kv_de;

/* Power-of-two buckets, grown at load 1 and shrunk at 1/8 (at once: a
 * table of a million keys rehashes in a few milliseconds). */
typedef struct kv_dict {
    kv_de **b;
    size_t mask, count;
} kv_dict;

void kv_dict_init(kv_dict *d);
/* Free every entry (calling fr on each first, if given) and the buckets. */
void kv_dict_free(kv_dict *d, void (*fr)(kv_de *));
/* The link pointing at the entry for k (or at the NULL ending its chain:
 * where kv_dict_insert puts it). Valid until the next insert or remove. */
kv_de **kv_dict_link(kv_dict *d, const void *k, size_t n, uint64_t h);
kv_de *kv_dict_find(kv_dict *d, const void *k, size_t n);
/* A new entry (val NULL, expire 0) at link, which kv_dict_link returned
 * for this key and found empty. */
kv_de *kv_dict_insert(kv_dict *d, kv_de **link, const void *k, size_t n,
                      uint64_t h);
/* Unlink the entry at link and return it; the caller frees it (and its
 * value). May shrink the table: links found before are stale. */
kv_de *kv_dict_remove(kv_dict *d, kv_de **link);
/* One bucket of a SCAN with Redis's reverse-binary cursor: an entry
 * present from the first call to the last is visited at least once even
 * if the table grows or shrinks in between. Returns the next cursor (0:
 * done). */
size_t kv_dict_scan(const kv_dict *d, size_t cursor,
                    void (*fn)(void *arg, kv_de *e), void *arg);
/* A random entry (NULL if empty); *rng is the caller's generator state. */
kv_de *kv_dict_random(const kv_dict *d, uint64_t *rng);
uint64_t kv_rand(uint64_t *rng);

#define KV_DICT_EACH(d, e)                                                     \
    for (size_t e##_i = 0; e##_i <= (d)->mask; e##_i++)                        \
        for (kv_de *e = (d)->b[e##_i]; e; e = e->next)

/* ------------------------------------------------------------------ lists */

/* A ring of strings: push and pop at both ends and indexing are O(1). */
typedef struct kv_list {
    kv_str **a;
    size_t cap, head, n; /* cap: a power of two */
} kv_list;

static inline kv_str **kv_list_at(const kv_list *l, size_t i)
{
    return &l->a[(l->head + i) & (l->cap - 1)];
}
kv_list *kv_list_new(void);
void kv_list_free(kv_list *l);
void kv_list_push(kv_list *l, kv_str *s, bool left);
kv_str *kv_list_pop(kv_list *l, bool left); /* list not empty */
/* Insert s before index i (0..n): O(distance to the nearer end). */
void kv_list_insert(kv_list *l, size_t i, kv_str *s);
/* Drop the NULL slots, keeping the order (after LREM freed some). */
void kv_list_compact(kv_list *l);

/* ------------------------------------------------------------ sorted sets */

/* A B+tree of (score, member) entries whose inner nodes count the entries
 * under each child (ranks in O(log n)), and a dict member -> score (in
 * the member's kv_de.score). */
#define KV_ZB 32 /* entries per node */

typedef struct kv_zkeys {
    uint32_t n;
    double score[KV_ZB];
    kv_de *m[KV_ZB]; /* the member (its key bytes) in the set's dict */
} kv_zkeys;

typedef struct kv_zleaf {
    kv_zkeys k;
    struct kv_zleaf *prev, *next; /* the leaves in order */
} kv_zleaf;

typedef struct kv_zset {
    kv_dict d;
    void *root; /* a kv_zleaf when height is 0 */
    int height;
} kv_zset;

/* A position in the order: entry i of leaf l (l NULL: past either end).
 * Valid until the set changes. */
typedef struct kv_zit {
    kv_zleaf *l;
    uint32_t i;
} kv_zit;

static inline kv_de *kv_zit_member(kv_zit it) { return it.l->k.m[it.i]; }
static inline double kv_zit_score(kv_zit it) { return it.l->k.score[it.i]; }
static inline kv_zit kv_zit_next(kv_zit it)
{
    if (++it.i == it.l->k.n)
        it = (kv_zit){it.l->next, 0};
    return it;
}
static inline kv_zit kv_zit_prev(kv_zit it)
{
    if (it.i)
        it.i--;
    else if ((it.l = it.l->prev))
        it.i = it.l->k.n - 1;
    return it;
}

kv_zset *kv_zset_new(void);
void kv_zset_free(kv_zset *z);
/* Add a member or change its score. */
void kv_zset_set(kv_zset *z, const void *m, size_t n, double score);
/* Change the score of member m (a kv_de of z->d). */
void kv_zset_update(kv_zset *z, kv_de *m, double score);
/* Remove the member of this dict link (from kv_dict_link, found). */
void kv_zset_del(kv_zset *z, kv_de **link);
static inline size_t kv_zset_len(const kv_zset *z) { return z->d.count; }
/* 0-based rank of member m. */
size_t kv_zset_rank(const kv_zset *z, const kv_de *m);
/* The entry at a 0-based rank (< len). */
kv_zit kv_zset_at(const kv_zset *z, size_t rank);
/* The least and the greatest entry (l NULL when empty). */
kv_zit kv_zset_first(const kv_zset *z);
kv_zit kv_zset_last(const kv_zset *z);
/* A range of scores (min, max, each exclusive or not) or, when lex, of
 * members (lmin, lmax; an infinite end is "-" / "+" as in Redis, which
 * orders members this way only among equal scores). */
typedef struct kv_zrange {
    bool lex;
    double min, max;
    bool minex, maxex;
    const char *lmin, *lmax;
    size_t lminn, lmaxn;
    int lmin_inf, lmax_inf; /* -1 "-", +1 "+", 0 a member */
} kv_zrange;
/* First entry within r's lower bound (l NULL if none or past the upper),
 * and last within its upper bound. */
kv_zit kv_zset_first_in(const kv_zset *z, const kv_zrange *r);
kv_zit kv_zset_last_in(const kv_zset *z, const kv_zrange *r);
bool kv_zrange_gte_min(double score, const kv_de *m, const kv_zrange *r);
bool kv_zrange_lte_max(double score, const kv_de *m, const kv_zrange *r);

/* --------------------------------------------------------------- keyspace */

typedef struct kv_db {
    kv_dict keys;
    kv_de **xs; /* the keys with an expiry, for cheap sampling */
    size_t xn, xcap;
} kv_db;

void kv_db_init(kv_db *db);
void kv_db_clear(kv_db *db);
void kv_obj_free(uint8_t type, void *v);
/* The live entry for key (an expired one is deleted on the way). */
kv_de *kv_db_lookup(kv_db *db, const void *k, size_t n, uint64_t h,
                    int64_t now);
/* Add a key that is absent (after kv_db_lookup gave NULL). */
kv_de *kv_db_add(kv_db *db, const void *k, size_t n, uint64_t h, uint8_t type,
                 void *val);
/* Replace a present key's value (its expiry is kept). */
void kv_db_replace(kv_de *e, uint8_t type, void *val);
/* Delete a present key with its value. */
void kv_db_delete(kv_db *db, kv_de *e);
/* Set (at > 0) or remove (0) a key's expiry. */
void kv_db_set_expire(kv_db *db, kv_de *e, int64_t at);

/* Serialized value (snapshots and RENAME between shards): see
 * snapshot.c for the layout. kv_obj_encode appends the payload of e's
 * value; kv_obj_decode builds a value from one, or returns -1 if the
 * payload is malformed. */
void kv_obj_encode(kv_buf *b, uint8_t type, const void *val);
int kv_obj_decode(uint8_t type, const char *p, size_t n, void **out);

/* ---------------------------------------------------------- command runs */

typedef struct kv_cx {
    struct kv_shard *sh;
    kv_server *srv;
    unsigned shard; /* this shard's index */
    kv_db *db;
    kv_buf *r; /* the reply value is appended here */
    const char *const *a;
    const uint32_t *an;
    uint32_t argc;
    uint64_t h; /* hash of the key a[1] */
    int64_t now;
    uint64_t *rng;
    /* Where the reply goes, for a command answered by another shard. */
    tp_ctx *ctx;
    tp_pid from;
    uint32_t seq, pos;
    bool no_reply; /* set when the reply was sent elsewhere */
} kv_cx;

/* Replies (RESP2). */
#define KV_LIT(cx, s) kv_buf_add((cx)->r, s, sizeof s - 1)
void kv_reply_double(kv_buf *b, double d);
void kv_reply_arr(kv_buf *b, size_t n);
extern const char KV_WRONGTYPE[], KV_NOTINT[], KV_NOTFLOAT[], KV_SYNTAX[],
    KV_TOOBIG[];
#define KV_ERR(cx, s) kv_buf_str((cx)->r, s)

/* Argument helpers: each replies the Redis error and returns false. */
bool kv_arg_is(const kv_cx *cx, uint32_t i, const char *s);
bool kv_arg_i64(kv_cx *cx, uint32_t i, int64_t *v);
/* A count that must be >= 0 (LPOP, SPOP, ZPOPMIN...). */
bool kv_arg_count(kv_cx *cx, uint32_t i, int64_t *v);
bool kv_arg_double(kv_cx *cx, uint32_t i, double *v); /* not NaN */
bool kv_parse_double(const char *p, size_t n, double *v, bool strict);
/* INCRBYFLOAT's numbers: Redis's string2ld and ld2string (human form;
 * 0 if it does not fit in size). */
bool kv_parse_ld(const char *p, size_t n, long double *v);
size_t kv_fmt_ld(char *out, size_t size, long double v);
/* v in decimal into out (at least 20 bytes); its length. */
size_t kv_fmt_i64(char *out, int64_t v);
/* old (NULL: absent, 0) + by as a string (*out, and its value in *v):
 * INCRBY and HINCRBY. When the new text is not longer than old's, it is
 * written over old and *out is old (nothing to store: the caller's value
 * changed in place, as Redis updates an integer in place); else *out is a
 * new string. False with the error replied (notint if old is not an
 * integer, or the overflow). */
bool kv_incr_i64(kv_cx *cx, kv_str *old, int64_t by, const char *notint,
                 kv_str **out, int64_t *v);
/* The same in long doubles, for INCRBYFLOAT and HINCRBYFLOAT. */
bool kv_incr_ld(kv_cx *cx, const kv_str *old, long double by,
                const char *notfloat, kv_str **out);
/* The key's entry if it has type t or is absent (*e NULL); false (the
 * WRONGTYPE reply given) if it holds another type. */
bool kv_typed(kv_cx *cx, uint8_t t, kv_de **e);
/* Delete the key if its aggregate became empty. */
void kv_drop_if_empty(kv_cx *cx, kv_de *e);

/* "string", "list"... and back (-1: not a type name). */
const char *kv_type_name(uint8_t t);
int kv_type_by_name(const char *p, size_t n);

/* RENAME to a key of another shard: e is sent there (KV_TAG_MOVE) under
 * the name nk, deleted here, and that shard answers the client (sets
 * cx->no_reply); or an error reply, e kept. */
enum { KV_MOVE_NX = 1, KV_MOVE_RESTORE = 2, KV_MOVE_ACK = 4 };
void kv_shard_move(kv_cx *cx, kv_de *e, unsigned to_shard, const char *nk,
                   size_t nkn, uint8_t flags);

/* Command groups (cmd_*.c), listed in commands.c. */
#define KV_CMD(name) void kv_cmd_##name(kv_cx *cx)
#endif
