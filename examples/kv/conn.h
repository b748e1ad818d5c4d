/*
 * The connection actor's parts, shared by its files:
 *   conn.c    the actor: input, output, memory accounting, its messages
 *   parse.c   RESP2 parsing that resumes where the last read stopped
 *   reply.c   reply slots: replies leave in request order
 *   route.c   operations to the shards, unavailable and remote shards
 *   cmds.c    the commands the connection answers itself, INFO
 *   clients.c the client registry (CLIENT LIST/KILL, ids)
 *   pubsub.c  PUBLISH/SUBSCRIBE: a registry actor, one actor per channel
 */
#ifndef KV_CONN_H
#define KV_CONN_H

#include "kv.h"

/* A connection's buffers larger than this are freed once empty. */
#define KV_KEEP_BUF (64 * 1024)

/* How a slot's reply is made from its shard fragments. */
enum {
    K_LOCAL,  /* its buffer is the reply (filled at once) */
    K_ONE,    /* the one fragment is the reply */
    K_SUM,    /* ":<sum of the integer fragments>" */
    K_OK,     /* "+OK" once every fragment is in */
    K_ARRAY,  /* "*<n>" then fragment pos 0..n-1 */
    K_INFO,   /* INFO text; the fragments sum the keys */
    K_MERGE,  /* one array of every fragment array's elements (KEYS) */
    K_RANDOM, /* a random non-nil fragment, else nil (RANDOMKEY) */
    K_WAIT    /* its buffer, once every fragment (an ack) is in */
};

typedef struct kv_part {
    size_t off, len;
} kv_part;

typedef struct kv_slot {
    uint8_t kind;
    bool close_after, has_err;
    uint32_t remaining, nparts, partcap;
    uint32_t flags; /* K_INFO: the sections asked for */
    int64_t sum;
    int64_t sum2; /* K_INFO: the keys with an expiry */
    size_t kept;  /* bytes of buf counted in the connection's held */
    kv_buf buf;
    kv_part *parts;
} kv_slot;

/* An argument of the command being parsed: off from the command's start
 * while it is parsed, p once it is complete. */
typedef struct kv_arg {
    const char *p;
    size_t n, off;
} kv_arg;

/* Where parsing of the current command stopped (offsets from its start),
 * so that a command arriving in many reads is parsed once. */
typedef struct kv_parser {
    int64_t want; /* multibulk count; -1 before its header */
    int64_t bulk; /* length of the bulk being read; -1 before its header */
    size_t pos;   /* bytes of this command parsed (inline: scanned) */
} kv_parser;

/* Per shard: the batch being built this turn and, for a shard on another
 * node, what was sent to it and is not answered yet. */
typedef struct kv_route {
    kv_buf batch;   /* ops, msgpack bin (kv_bin_start) */
    kv_buf ops;     /* (u32 seq, u32 pos) of each op in batch */
    kv_buf pending; /* remote: (seq, pos) sent and unanswered, FIFO */
    kv_buf counts;  /* remote: u32 ops per batch sent, FIFO */
    size_t pend_off, count_off;
    tp_pid mon_pid; /* the remote pid monitored, TP_PID_NONE if none */
    tp_ref mon;
} kv_route;

struct kv_client;
struct kv_dict;

typedef struct kv_conn {
    kv_server *srv;
    struct kv_client *info; /* our entry in the registry (clients.c) */
    kv_buf ib;              /* unparsed input, from the current command */
    kv_parser ps;
    kv_arg *argv;
    size_t argc, argcap;
    kv_slot *ring; /* reply slots, seq & (cap - 1) */
    uint32_t cap, head, tail;
    kv_slot spare; /* handed out when the ring cannot grow (oom is set) */
    kv_route route[KV_MAX_SHARDS];
    kv_buf out;     /* replies in order, not yet given to the socket */
    size_t out_off; /* bytes of out already given */
    size_t held;    /* bytes waiting in slot buffers */
    size_t mem;     /* what this client counts in srv->client_mem */
    struct kv_dict *subs, *psubs; /* channels, patterns (pubsub.c) */
    size_t sub_bytes;             /* their memory, roughly */
    size_t name_bytes;            /* CLIENT SETNAME's name */
    const char *last_cmd;         /* static name, for CLIENT LIST */
    /* the tick's delay is 1 << tick_shift ms: doubled while the peer
     * takes nothing (tick_pend: the socket layer's pending output at the
     * last tick), 1 ms again once it takes some */
    uint8_t tick_shift;
    size_t tick_pend;
    bool authed, closing, peer_closed, exited, ticking, held_input, oom,
        close_after_out;
    char errbuf[64];
} kv_conn;

/* reply.c */
kv_slot *kv_slot_new(kv_conn *c, uint8_t kind, uint32_t remaining);
/* Room for n parts (K_ARRAY, K_RANDOM: one per fragment pos), zeroed;
 * false when out of memory (c->oom is set). */
bool kv_slot_parts(kv_conn *c, kv_slot *s, uint32_t n);
static inline kv_slot *kv_slot_at(kv_conn *c, uint32_t seq)
{
    return &c->ring[seq & (c->cap - 1)];
}
static inline uint32_t kv_last_seq(kv_conn *c) { return c->tail - 1; }
/* The buffer a reply made now goes to: the output when nothing is
 * pending before it, else a new local slot. */
kv_buf *kv_reply_buf(kv_conn *c);
void kv_reply(kv_conn *c, const char *p, size_t n);
#define KV_REPLY_LIT(c, s) kv_reply(c, s, sizeof s - 1)
void kv_reply_err(kv_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kv_reply_bulk(kv_conn *c, const char *p, size_t n);
void kv_reply_int(kv_conn *c, int64_t v);
/* One fragment (one RESP value) for slot seq, part pos. */
void kv_deliver(kv_conn *c, uint32_t seq, uint32_t pos, const char *f,
                size_t len);
/* Count as held (the memory bound, the output budget) what was written
 * into the buffers of slots from..tail by the connection itself: replies
 * made at once wait there behind a pending one (a slow shard's). */
void kv_slots_kept(kv_conn *c, uint32_t from);
/* Move every complete slot at the head to the output, in order; true if
 * one of them closes the connection. */
bool kv_slots_drain(tp_ctx *ctx, kv_conn *c);
void kv_slots_free(kv_conn *c);

/* route.c */
/* Add an op for shard sh to this turn's batch; args[0..nargs). */
void kv_op(kv_conn *c, unsigned sh, uint8_t opc, uint8_t flags, uint32_t pos,
           int64_t num, uint32_t nargs, const kv_arg *args);
/* The op for the shard of key (the first of args). */
void kv_op_key(kv_conn *c, uint8_t opc, uint8_t flags, uint32_t pos,
               int64_t num, uint32_t nargs, const kv_arg *args);
/* A new slot of kind, and one op (pos = shard index) to every shard. */
void kv_op_all(kv_conn *c, uint8_t kind, uint8_t opc, uint32_t nargs,
               const kv_arg *args);
/* Send this turn's batches; the ops of a batch that cannot be sent are
 * answered "-ERR shard N is unavailable". */
void kv_send_batches(tp_ctx *ctx, kv_conn *c);
/* A batch's replies came from pid: forget its pending ops (remote). */
void kv_route_answered(kv_conn *c, tp_pid from);
/* A monitored remote shard went down: answer its pending ops. */
void kv_route_down(kv_conn *c, tp_ref ref);
void kv_route_free(kv_conn *c);

/* parse.c */
/* One command from p (the current command's start, n bytes there): 1 when
 * complete (argv set, *used bytes), 0 when more bytes are needed (the
 * state is kept in c->ps), -1 on bad input (*err says why, the Redis
 * protocol error text), -2 when out of memory. */
int kv_parse(kv_conn *c, const char *p, size_t n, size_t *used,
             const char **err);

/* cmds.c */
void kv_exec(tp_ctx *ctx, kv_conn *c);
/* The INFO reply for a K_INFO slot. */
void kv_info(tp_ctx *ctx, kv_conn *c, kv_buf *out, const kv_slot *s);
size_t kv_conn_command_count(void);
/* Is a the word s (any case)? */
bool kv_word_is(const kv_arg *a, const char *s);

/* clients.c: every connection, for CLIENT LIST/KILL and INFO. The
 * registry is shared by the connection actors of every thread. */
struct kv_client *kv_client_add(tp_ctx *ctx, kv_conn *c);
void kv_client_del(struct kv_client *cl);
uint64_t kv_client_id(const struct kv_client *cl);
const char *kv_client_addr(const struct kv_client *cl);
/* Refresh what CLIENT LIST shows of c (after a command). */
void kv_client_touch(kv_conn *c);
void kv_cmd_client(tp_ctx *ctx, kv_conn *c);
/* Name the client (NULL: no name); takes name (malloc'd). */
void kv_client_rename(kv_conn *c, char *name);

/* pubsub.c */
void kv_cmd_subscribe(tp_ctx *ctx, kv_conn *c);
void kv_cmd_psubscribe(tp_ctx *ctx, kv_conn *c);
void kv_cmd_unsubscribe(tp_ctx *ctx, kv_conn *c);
void kv_cmd_punsubscribe(tp_ctx *ctx, kv_conn *c);
void kv_cmd_publish(tp_ctx *ctx, kv_conn *c);
void kv_cmd_pubsub(tp_ctx *ctx, kv_conn *c);
/* A message for a subscriber: written unless it unsubscribed since. */
void kv_pubsub_push(kv_conn *c, const tp_msg *msg);
/* Subscribed (RESP2 pubsub context): channels + patterns. */
size_t kv_pubsub_count(const kv_conn *c);
/* The channels alone (the rest are patterns). */
size_t kv_pubsub_channels(const kv_conn *c);
void kv_pubsub_free(kv_conn *c);
/* Leave every channel and pattern, without confirmations (RESET). */
void kv_pubsub_reset(tp_ctx *ctx, kv_conn *c);

#endif
