/*
 * troupe-kv: a Redis-compatible (RESP2) key-value server built from actors.
 *
 *   coordinator (root, traps exits)  -- SAVE/BGSAVE/SHUTDOWN, signals
 *     ├── shard owner 0..n-1         -- each the only one touching its keys
 *     └── listener (tp_listen)
 *           └── one connection actor per client: parses RESP, sends each
 *               shard one batch of operations per read, puts the replies
 *               back in request order, writes them.
 *
 * Messages between them are msgpack bins holding a small binary format
 * (below), so a pipelined read of many commands costs one message per
 * shard each way.
 */
#ifndef KV_H
#define KV_H

#include <troupe.h>
#include <troupe/net.h>
#include <troupe/node.h>
#include <troupe/pool.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_MAX_SHARDS 64

enum {
    KV_TAG_BATCH = 1, /* conn -> shard: bin of ops */
    KV_TAG_REPLIES,   /* shard/coordinator -> conn: bin of fragments */
    KV_TAG_ADMIN,     /* conn -> coordinator: [seq, admin op, flag] */
    KV_TAG_SNAPSHOT,  /* coordinator -> shard: int, 1 = final (freeze) */
    KV_TAG_PART,      /* shard -> coordinator: [shard, ptr, len, count] */
    KV_TAG_THAW,      /* coordinator -> shard: accept writes again */
    KV_TAG_SWEEP,     /* shard's own timer: active expiry */
    KV_TAG_MOVE,      /* shard -> shard: [reply-to pid, bin] (shard.c) */
    /* shard -> conn: fragments as KV_TAG_REPLIES that do not end a batch
     * (a split reply's first messages, a moved RENAME's answer from its
     * destination): route.c counts one KV_TAG_REPLIES per batch. */
    KV_TAG_MORE_REPLIES
};

/* The connection side's own tags (conn.h, pubsub.c), apart from the above
 * so that neither list moves the other. */
enum {
    KV_TAG_CONN_TICK = 0x100, /* conn's timer: output drained? */
    KV_TAG_KILL,              /* CLIENT KILL: the connection ends */
    KV_TAG_PUSH,   /* pubsub -> subscriber: [kind, name, RESP bytes] */
    KV_TAG_PUBSUB, /* conn -> pubsub registry (pubsub.c) */
    KV_TAG_CHANNEL /* pubsub registry <-> a channel actor */
};

/* The largest message payload troupe-kv sends (main sets the runtime's
 * max_payload to it): a shard splits its replies below it, and answers
 * an error for a single reply that would not fit. */
#define KV_MAX_PAYLOAD ((size_t)1 << 31)
/* The largest frame between nodes in cluster mode (cluster.c sets the
 * node's max_message to it): nats-server's default max_payload. The node
 * lowers it to a server's smaller max_payload; shards read the limit in
 * force (tp_node_stats.max_message) and split their replies to a
 * connection on another node below that. */
#define KV_NODE_MAX_MESSAGE ((size_t)1 << 20)

/* Shard operations. GET SET DEL EXISTS: one key of MGET, MSET, DEL,
 * EXISTS (GET answers nil for a key of another type, SET overwrites any
 * type, without expiry). */
enum {
    OP_GET = 1,
    OP_SET,
    OP_DEL,
    OP_EXISTS,
    OP_DBSIZE,
    OP_FLUSHALL,
    /* A keyed command run by its key's shard: args are the whole command
     * (name first, key = args[1]); num is its index in the shard's command
     * table (kv_keyed_find), so the shard does not look it up again. The
     * shard answers one RESP value (errors included: WRONGTYPE, syntax). */
    OP_CMD,
    /* SCAN: num = the cursor (shard index in bits 48..55, the shard's own
     * position below); args = the options after the cursor, verbatim. The
     * shard answers the whole "*2 cursor [keys]" reply with the next global
     * cursor (the next shard's start when it is done, 0 after the last). */
    OP_SCAN,
    /* KEYS pattern (args[0]): every shard answers one RESP array. */
    OP_KEYS,
    /* RANDOMKEY: a bulk or a nil. */
    OP_RANDOMKEY,
    /* INFO keyspace: "*2 :keys :keys with an expiry". */
    OP_KEYSPACE
};
/* Admin ops (coordinator). */
enum { ADM_SAVE = 1, ADM_BGSAVE, ADM_SHUTDOWN, ADM_LASTSAVE };
enum { SHUT_DEFAULT = 0, SHUT_SAVE, SHUT_NOSAVE };

/* An op: header then nargs × (u32 len, bytes). Replies: fragments of
 * (u32 seq, u32 pos, u32 len, bytes), one per op, each one RESP value. */
typedef struct kv_ophdr {
    uint8_t op, flags;
    uint16_t pad;
    uint32_t nargs; /* a command may have more than 65535 arguments */
    uint32_t seq, pos;
    int64_t num; /* INCRBY delta; SET/EXPIRE absolute expiry (unix ms) */
} kv_ophdr;

typedef struct kv_config {
    const char *host;
    uint16_t port;
    const char *dbfile;      /* NULL: no persistence */
    const char *requirepass; /* NULL: no AUTH needed */
    size_t max_clients;
    /* Bound on every client's query and reply buffers together; a client
     * that takes the total over it is closed. 0: none. */
    size_t maxmemory_clients;
    size_t max_request;
    unsigned shards;
    bool quiet;
} kv_config;

struct kv_table;

/* Shared by every actor: read-only once the listener runs, counters are
 * atomic statistics. */
typedef struct kv_server {
    kv_config cfg;
    unsigned nshards;
    /* Read through kv_shard_pid: in cluster mode a shard on another node
     * changes pid when that node restarts (TP_PID_NONE while it is down). */
    _Atomic tp_pid shards[KV_MAX_SHARDS];
    tp_pid coord;
    uint16_t bound_port;
    int64_t start_ms;
    _Atomic int64_t lastsave;
    _Atomic uint64_t commands;
    /* The listener, whose counters INFO shows (tp_listen_stats). */
    _Atomic tp_pid listener;
    _Atomic size_t client_mem; /* bytes counted against maxmemory_clients */
    _Atomic uint64_t evicted;  /* clients closed for maxmemory_clients */
    tp_pid pubsub;             /* the pubsub registry (pubsub.c) */
    struct kv_shard *shard_state[KV_MAX_SHARDS]; /* until spawned */
    /* The shards this process runs (and saves): [local_lo, local_lo +
     * local_n). All of them, except in cluster mode (cluster.c). */
    unsigned local_lo, local_n;
} kv_server;

/* The pid of shard i, TP_PID_NONE while it is unavailable (cluster mode:
 * its node is down). Relaxed: a stale pid only makes a send fail or a
 * monitor fire, which the caller handles as "unavailable". */
static inline tp_pid kv_shard_pid(const kv_server *s, unsigned i)
{
    return atomic_load_explicit(&((kv_server *)s)->shards[i],
                                memory_order_relaxed);
}

/* util.c */
/* A growing buffer. Growth aborts on out of memory (the server's own
 * data), except between kv_soft_begin and kv_soft_end (a client's
 * buffers): there a failed growth leaves the buffer as it was and the add
 * is dropped. */
typedef struct kv_buf {
    char *p;
    size_t n, cap;
    /* max: if not 0, the buffer never grows past it; an add that would is
     * dropped and sets over (a shard's reply under construction: a small
     * command must not make it allocate without bound, shard.c). */
    size_t max;
    bool over;
} kv_buf;

void *kv_xrealloc(void *p, size_t n);
/* Room for extra more bytes: true, or false when it could not grow in a
 * soft section, or past b->max. */
bool kv_buf_reserve(kv_buf *b, size_t extra);
/* A soft section on this thread (one actor turn): kv_buf growth failures
 * do not abort; kv_soft_end says whether one happened (the caller then
 * drops the client whose buffers they were). */
void kv_soft_begin(void);
bool kv_soft_end(void);
void kv_buf_add(kv_buf *b, const void *p, size_t n);
void kv_buf_str(kv_buf *b, const char *s);
void kv_buf_fmt(kv_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kv_buf_bulk(kv_buf *b, const void *p, size_t n);
void kv_buf_int(kv_buf *b, int64_t v);
void kv_buf_free(kv_buf *b);
/* Start a bin payload (5-byte bin32 header patched by kv_bin_finish). */
void kv_bin_start(kv_buf *b);
void kv_bin_finish(kv_buf *b);
void kv_frag(kv_buf *b, uint32_t seq, uint32_t pos, const void *p, size_t n);

uint64_t kv_hash(const void *p, size_t n);
static inline unsigned kv_shard_of(const kv_server *s, const void *k, size_t n)
{
    return (unsigned)((kv_hash(k, n) >> 32) % s->nshards);
}
int64_t kv_now_ms(void);
/* Strict decimal int64 (Redis string2ll rules); false if not one. */
bool kv_parse_i64(const char *p, size_t n, int64_t *out);
/* Does s match the glob pattern p (Redis rules: * ? [a-z] [^x] \x)? */
bool kv_glob(const char *p, size_t pn, const char *s, size_t sn);

static inline void kv_put32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}
/* A message with a tag only this node's own actors send (admin,
 * snapshots, timers, kills, pubsub) that did not come from one of them:
 * another node's frames may address any pid here (a KV_TAG_PART would
 * make the coordinator free any address, a KV_TAG_SNAPSHOT freeze a
 * shard), so such a message is dropped. Other nodes send only batches,
 * replies and moves. */
static inline bool kv_forged(const tp_msg *m)
{
    int32_t t = tp_msg_tag(m);
    bool own = t == KV_TAG_ADMIN ||
               (t >= KV_TAG_SNAPSHOT && t <= KV_TAG_SWEEP) ||
               (t >= KV_TAG_CONN_TICK && t <= KV_TAG_CHANNEL);
    tp_pid from = tp_msg_from(m);
    return own && (from == TP_PID_NONE || tp_pid_is_remote(from));
}

static inline uint32_t kv_get32(const char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)(uint8_t)p[i] << (8 * i);
    return v;
}
static inline void kv_put64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}
static inline uint64_t kv_get64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)(uint8_t)p[i] << (8 * i);
    return v;
}

/* shard.c */
typedef struct kv_shard kv_shard;
kv_shard *kv_shard_new(kv_server *srv, unsigned idx);
void kv_shard_free(void *state);
int kv_shard_behavior(tp_ctx *ctx, void *state, const tp_msg *msg);
/* Insert a loaded record of a type (KV_T_* in store.h, maybe with
 * KV_REC_WEAK: then only if the key is absent) whose value is serialized
 * as in a snapshot; 0, or -1 if the value is malformed. */
int kv_shard_load(kv_shard *sh, uint8_t type, const char *k, size_t kn,
                  const char *v, size_t vn, int64_t expire);

/* snapshot.c: records are (u8 type, u32 klen, u32 vlen, i64 expire, key,
 * value). */
#define KV_REC_HDR 17
typedef struct kv_save_job {
    char *path;
    unsigned nparts;
    char *parts[KV_MAX_SHARDS];
    size_t lens[KV_MAX_SHARDS];
    uint64_t count;
} kv_save_job;
int kv_save_job_run(void *arg, void **out, size_t *out_len);
void kv_save_job_free(kv_save_job *j);
/* Load path into the shards; 0, 1 if there is no file, -1 on a bad file
 * (message on stderr). */
int kv_load(kv_server *srv, const char *path);

/* commands.c: the keyed commands (key = args[1]) the shards run. */
struct kv_cx;
typedef struct kv_keyed {
    const char *name; /* lower case */
    int arity;        /* > 0 exact, < 0 at least -arity (name included) */
    bool write;       /* refused while the shard is frozen */
    void (*run)(struct kv_cx *cx); /* the shard's handler (store.h) */
} kv_keyed;
/* Index of the keyed command called name (any case), or -1. */
int kv_keyed_find(const char *name, size_t n);
const kv_keyed *kv_keyed_at(int idx);
/* How many commands troupe-kv knows in all (COMMAND COUNT): the keyed
 * ones plus the connection's own. */
size_t kv_keyed_count(void);

/* conn.c: a connection actor (the listener's conn_init/free/behavior). */
void *kv_conn_new(void *srv);
void kv_conn_free(void *state);
int kv_conn_behavior(tp_ctx *ctx, void *state, const tp_msg *msg);
/* pubsub.c: spawn the pubsub registry, linked to the caller (the
 * coordinator), into srv->pubsub. 0 or tp_spawn's error. */
int kv_pubsub_start(tp_ctx *ctx, kv_server *srv);

/* cluster.c: cluster mode (--cluster URL --node NAME --nodes A,B,...):
 * this process is one troupe node of several sharing the keyspace; global
 * shard g lives on member g / shards. */
/* A cluster option of the command line: 1 taken, -1 a bad value, 0 not
 * a cluster option. value is kept (argv). */
int kv_cluster_option(const char *flag, const char *value);
/* After the options: nshards and the local range (all shards outside
 * cluster mode). 0, or -1 with a message on stderr. */
int kv_cluster_configure(kv_server *srv);
/* Make rt a node (before tp_run); 0 outside cluster mode. */
int kv_cluster_join(kv_server *srv, tp_runtime *rt);
/* Say on stderr why tp_run's rc (< 0) kept this node out of the cluster:
 * true; false (nothing said) outside cluster mode. */
bool kv_cluster_explain(int rc);
/* From the coordinator, once the local shards run: spawn the shard
 * directory linked to it (*out, TP_PID_NONE outside cluster mode), which
 * keeps the other nodes' shards in srv->shards. 0 or tp_spawn's error. */
int kv_cluster_start(tp_ctx *ctx, kv_server *srv, tp_pid *out);

#endif
