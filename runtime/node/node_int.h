/*
 * Nodes (troupe/node.h): what node.c (setup, the connection, liveness),
 * wire.c (the frame codec) and route.c (frames in and out, the
 * relationships a lost node breaks) share.
 */
#ifndef TPI_NODE_INT_H
#define TPI_NODE_INT_H

#include "runtime/service.h"
#include "troupe/node.h"

#include <pthread.h>
#include <stdatomic.h>

struct __natsConnection;
struct __natsSubscription;
struct __natsMsg;

/* ---- remote pids
 * bit 63: remote; bits 48..62: the node's slot in this runtime's table;
 * bits 24..47: the actor's index + 1 at its node; bits 0..23: its
 * generation there. A node's own (local) form of the same pid is
 * gen << 32 | (index + 1), which fits when both are below 2^24
 * (actors/actor.h keeps generations there). */
#define TPI_NODE_SLOTS 1024 /* nodes one runtime keeps track of */
/* Of those, names only read off the wire (a pid in a frame, a frame's
 * subject) and never heard from: slots are never reused, so a node that
 * forges names fills at most these, and later such names are refused. */
#define TPI_NODE_UNHEARD_MAX 128
#define TPI_PID_FIELD 0xffffffu

static inline bool tpi_pid_exportable(tp_pid local)
{
    return !(local & TPI_PID_REMOTE) && (uint32_t)local <= TPI_PID_FIELD &&
           (local >> 32) <= TPI_PID_FIELD;
}
static inline tp_pid tpi_pid_remote(unsigned slot, tp_pid local)
{
    return TPI_PID_REMOTE | (uint64_t)slot << 48 |
           (uint64_t)((uint32_t)local & TPI_PID_FIELD) << 24 |
           ((local >> 32) & TPI_PID_FIELD);
}
static inline unsigned tpi_pid_slot(tp_pid remote)
{
    return (unsigned)((remote >> 48) & 0x7fff);
}
static inline tp_pid tpi_pid_at_node(tp_pid remote)
{
    return (remote & TPI_PID_FIELD) << 32 | ((remote >> 24) & TPI_PID_FIELD);
}

/* ---- frames (wire.c)
 * A msgpack array each, one or more back to back in a NATS message on
 * the subject "<prefix>.n.<to node>.<from node>":
 *   [1, kind, seq, to, from, reply_to, tag, ref, flags, status, payload]
 * to is the addressee's pid in its node's own form (an int); from and
 * reply_to are pid extensions (type TPI_PID_EXT: 8 bytes big-endian of
 * the pid in its node's form, then the node's name), or nil; payload is a
 * bin holding one msgpack object, or nil. BREAK and LEAVE frames have
 * to 0 and nil for the rest. Heartbeats go to "<prefix>.hb" as
 * [1, kind, node, creation]: creation is a random number each run of a
 * node draws, which tells a restarted node from the one before. */
enum {
    TPI_NF_MSG = 1,     /* a message or signal for one actor */
    TPI_NF_BREAK = 2,   /* the sender lost frames from us: links broken;
                           ref: 1 + the last of our frames it broke with
                           (0: all) */
    TPI_NF_HB = 3,      /* heartbeat */
    TPI_NF_LEAVE = 4,   /* the sender leaves (after all it sent us) */
    TPI_NF_GROUP = 5,   /* a message or call to a group (not numbered) */
    TPI_NF_SPAWN = 6,   /* a spawn request: [1, 6, name, args] */
    TPI_NF_SPAWNED = 7, /* its answer: [1, 7, status, pid] */
    TPI_NF_CALLED = 8,  /* a group call (to, ref) is served here: numbered,
                           so it arrives before the reply behind it; to 0:
                           nothing, a number to show a gap (route.c) */
};
enum { TPI_NFL_REQUEST = 1, TPI_NFL_VIA_LINK = 2 };

typedef struct tpi_wpid { /* a pid as it travels */
    tp_pid pid;           /* in its node's own form */
    const char *node;     /* not NUL-terminated */
    size_t node_len;
} tpi_wpid;

typedef struct tpi_nframe {
    int64_t kind;
    uint64_t seq;
    tp_pid to;
    tpi_wpid from, reply_to; /* node_len 0: nil */
    int64_t tag, status;
    uint64_t ref, flags;
    const void *payload; /* NULL: none */
    size_t len;
    const char *node; /* HB, LEAVE */
    size_t node_len;
    uint64_t creation; /* HB: the sender's incarnation */
} tpi_nframe;

/* A growable output buffer from the allocator. */
typedef struct tpi_nbuf {
    char *p;
    size_t len, cap;
    bool failed;
} tpi_nbuf;

void tpi_nbuf_pid(tpi_nbuf *b, tp_pid pid, const char *node, size_t node_len);
/* Encode f (kind MSG or BREAK) into b; false when out of memory. */
bool tpi_nframe_encode(tpi_nbuf *b, const tpi_nframe *f);
bool tpi_nframe_encode_hb(tpi_nbuf *b, const tpi_nframe *f);
/* Check and decode the frame at the start of len bytes at p (p stays
 * referenced by *f), which *used bytes hold: 0, or TP_EPROTO with *why
 * naming the problem. Nothing is allocated. */
int tpi_nframe_next(const void *p, size_t len, size_t *used, tpi_nframe *f,
                    const char **why);
/* The same for exactly one frame in len bytes. */
int tpi_nframe_decode(const void *p, size_t len, tpi_nframe *f,
                      const char **why);
/* A pid extension's body (8 bytes + name) at p into *w; TP_EPROTO. */
int tpi_wpid_body(const uint8_t *p, size_t len, tpi_wpid *w);
bool tpi_node_name_ok(const char *s, size_t len);
bool tpi_spawn_req_encode(tpi_nbuf *b, const char *name, const void *args,
                          size_t len);
int tpi_spawn_req_decode(const void *p, size_t len, const void **name,
                         size_t *name_len, const void **args, size_t *args_len);
struct tpi_node;
bool tpi_spawn_ans_encode(tpi_nbuf *b, struct tpi_node *n, int status,
                          tp_pid pid);
int tpi_spawn_ans_decode(struct tpi_node *n, const void *p, size_t len,
                         tp_pid *pid);

/* ---- relationships that cross to one node (route.c), under its lock */
typedef struct tpi_rel {
    tp_pid local, remote; /* remote in this runtime's form */
    tp_ref ref;           /* 0 for a link */
    /* links and our monitors: the number of our frame that made it (0:
     * the other side's frame did); see route.c, BREAK */
    uint64_t seq;
} tpi_rel;
typedef struct tpi_relvec {
    tpi_rel *v;
    size_t n, cap;
} tpi_relvec;

/* One other node, as this runtime knows it. */
typedef struct tpi_peer {
    unsigned slot; /* in the node's table: what remote pids name */
    char name[TP_NODE_NAME_MAX + 1];
    size_t name_len;
    char subject[2 * TP_NODE_NAME_MAX + 80]; /* where frames to it go */
    pthread_mutex_t lock; /* seq_out and its publishing, the relations */
    tpi_nbuf out;         /* frames numbered, not yet published, */
    unsigned out_n;       /* how many */
    bool lost;            /* a publish failed: down (the ticker) */
    bool up;
    bool need_break;  /* we broke our side while it was down: tell it */
    uint64_t seq_out; /* last frame sent to it */
    uint64_t seq_in;  /* last frame taken from it (the reader thread) */
    uint64_t last_hb_ns, probe_sent_ns;
    uint64_t creation;    /* its incarnation (heartbeats), 0 if not heard */
    tpi_relvec links;     /* local linked to remote */
    tpi_relvec watching;  /* local watcher, ref, remote target */
    tpi_relvec watched;   /* local target, ref, remote watcher */
    tpi_relvec monitors;  /* local actors watching this node (ref 0) */
    bool names_sweep;     /* down: free its global names (the ticker) */
    _Atomic bool vouched; /* heard from, or named by this runtime's code */
} tpi_peer;

/* A global name this node holds for one of its actors (names.c). */
typedef struct tpi_gname {
    char *name;
    tp_pid pid;
    bool ended;     /* its owner ended: the ticker frees it */
    bool releasing; /* its owner is unregistering it (not reclaimed) */
} tpi_gname;

/* A group with members on this node (groups.c); never freed while the
 * node runs (its subscription's callback holds it). */
typedef struct tpi_group {
    struct tpi_node *node;
    char name[72];
    struct __natsSubscription *sub; /* NULL while no member is here */
    tpi_relvec members;             /* local pids */
    size_t rr;
} tpi_group;

/* Subject lengths: "tp.<cluster>", an inbox of this node's with the
 * longest names, and a reply subject made of an inbox, a peer's name or a
 * pid and a ref (node.c and groups.c check their formats against these). */
#define TPI_PREFIX_MAX (3 + TP_NODE_NAME_MAX)
#define TPI_INBOX_MAX (TPI_PREFIX_MAX + TP_NODE_NAME_MAX + 16)
#define TPI_REPLY_MAX (TPI_INBOX_MAX + TP_NODE_NAME_MAX + 48)

typedef struct tpi_node {
    tp_runtime *rt;
    tp_node_opts o; /* strings point into strs */
    char *strs;
    char prefix[TPI_PREFIX_MAX + 1]; /* "tp.<cluster>" */
    size_t name_len;
    uint64_t creation; /* this run's incarnation, random */
    struct __natsConnection *nc;
    struct __natsSubscription *sub_in, *sub_hb, *sub_who, *sub_probe,
        *sub_probe_ans, *sub_spawn, *sub_group_ans;
    struct __jsCtx *js;
    struct __kvStore *kv; /* global names; NULL without JetStream */
    /* Held for reading around every use of kv (and of nc with it) from
     * callers' threads, which may be blocking-pool threads still running
     * after tp_run ended; tpi_names_close takes it for writing before the
     * store and then the connection go away. */
    pthread_rwlock_t kv_use;
    pthread_mutex_t names_lock;
    struct {
        tpi_gname *v;
        size_t n, cap;
    } names;
    _Atomic bool names_reclaim; /* reconnected: register ours again */
    pthread_mutex_t groups_lock;
    tpi_group **groups;
    size_t ngroups, capgroups;
    char group_inbox[TPI_INBOX_MAX]; /* "<prefix>.gr.<self>.>" */
    char probe_inbox[TPI_INBOX_MAX]; /* "<prefix>.probe.<self>.*" */
    /* The peer table: slots 1..npeers (0 unused); entries never move or
     * go away while the node runs, so readers may keep a pointer. */
    pthread_mutex_t peers_lock; /* adding peers, name lookup */
    tpi_peer *peers[TPI_NODE_SLOTS];
    _Atomic unsigned npeers;
    unsigned unheard; /* peers not vouched for (peers lock) */
    /* Liveness: a thread of our own, so a busy scheduler never delays a
     * heartbeat (which would make others think us down). */
    pthread_t ticker;
    bool ticker_on;
    pthread_mutex_t tick_lock;
    pthread_cond_t tick_cond;
    bool stopping;
    /* Global names' upkeep (names.c): blocking requests to the store, on
     * a thread of its own, so that a slow store or many names to free
     * never delay a heartbeat. Woken through names_cond (tick lock). */
    pthread_t namer;
    bool namer_on;
    pthread_cond_t names_cond;
    bool names_work; /* names to free or claim now (tick lock) */
    /* nats.c calls subscription handlers and connection callbacks on its
     * own threads, even after a subscription or the connection is closed:
     * each subscription and the connection count here until nats.c says
     * it is done with them (tick lock), and the node is freed only after. */
    unsigned in_flight;
    bool closed_cb;
    /* Calls waiting for a reply from another node: local caller, ref, and
     * in `remote` the slot of the node the request went to (0: a group
     * call no node has claimed yet). */
    pthread_mutex_t calls_lock;
    tpi_relvec calls;
    /* The largest frame sent now: o.max_message (the user's), lowered to
     * the max_payload of the server connected to, read again at each
     * reconnect (servers of one cluster may differ). Relaxed: a sender
     * racing a reconnect may use the old value; what it loses then is
     * lost with the connection, whose relations break anyway. */
    _Atomic size_t max_out;
    /* counters (relaxed atomics: statistics) */
    _Atomic uint64_t frames_out, frames_in, bytes_out, bytes_in, dropped,
        send_failed, reconnects, rtt_us;
    _Atomic bool connected;
} tpi_node;

/* node.c */
tpi_node *tpi_node_of(tp_runtime *rt);
/* The peer called name (created, down, if new); NULL if the table is
 * full, the name is bad or ours. vouch: the name comes from a heartbeat or
 * this runtime's code, not only from the wire (TPI_NODE_UNHEARD_MAX). */
tpi_peer *tpi_node_peer(tpi_node *n, const char *name, size_t len, bool vouch);
/* The peer a remote pid names (NULL for a local pid, or no such slot). */
tpi_peer *tpi_node_peer_of(tpi_node *n, tp_pid pid);
/* An existing peer called name, or NULL. */
tpi_peer *tpi_node_peer_find(tpi_node *n, const char *name, size_t len);
tpi_peer *tpi_node_peer_at(tpi_node *n, unsigned slot);
/* Number a frame to p and publish it (p's lock held: frames leave in the
 * order of their numbers). With hold (a sender in a batch of turns,
 * tpi_svc_batching), it may wait in p's buffer, behind the others for p,
 * until tpi_node_flush on this thread at the batch's end. 0; TP_ENOCONN
 * (numbered and lost: the relations with p break); TP_ENOMEM, TP_E2BIG
 * (then nothing was numbered). */
int tpi_node_send_locked(tpi_node *n, tpi_peer *p, tpi_nframe *f, bool hold);
/* Forget the frames p's buffer holds (p's lock held; counted as not
 * sent): its relations are broken, and its count may start afresh. */
void tpi_node_drop_out(tpi_node *n, tpi_peer *p);
/* Publish the frames this thread holds (the remote ops' flush). Also
 * before this thread blocks, or publishes outside the numbered frames. */
void tpi_node_flush(void *state);
void tpi_node_publish(tpi_node *n, const char *subject, const tpi_nbuf *b);
static inline size_t tpi_node_max_out(tpi_node *n)
{
    return atomic_load_explicit(&n->max_out, memory_order_relaxed);
}

/* names.c, groups.c, spawn.c (all called with the connection up) */
int tpi_names_open(tpi_node *n);
void tpi_names_close(tpi_node *n);
void tpi_names_ended(tpi_node *n, tp_pid pid);
/* The names thread: started once the store is open (none without one);
 * stopped after n->stopping was set and names_cond signalled. */
int tpi_names_start(tpi_node *n);
void tpi_names_stop(tpi_node *n);
/* Wake the names thread (names to free, or to claim again). */
void tpi_names_poke(tpi_node *n);
int tpi_groups_open(tpi_node *n);
void tpi_groups_close(tpi_node *n);
void tpi_groups_free(tpi_node *n);
void tpi_groups_ended(tpi_node *n, tp_pid pid);
int tpi_spawn_open(tpi_node *n);
/* Wait on c (tick lock held) for ns at most. */
void tpi_node_wait(tpi_node *n, pthread_cond_t *c, uint64_t ns);
/* Subscribe cb (closure arg) to subject, counted in in_flight until
 * nats.c is done with it; queue may be NULL. 0 or TP_ENOCONN. */
int tpi_node_subscribe(tpi_node *n, struct __natsSubscription **sub,
                       const char *subject, const char *queue,
                       void (*cb)(struct __natsConnection *,
                                  struct __natsSubscription *,
                                  struct __natsMsg *, void *),
                       void *arg);

/* route.c */
extern const tpi_remote_ops tpi_node_remote_ops;
/* A frame from the inbox subscription (the reader thread). */
void tpi_node_frame_in(tpi_node *n, tpi_peer *from, const tpi_nframe *f);
/* p is gone: every relation with it ends with reason noconnection, and
 * the actors watching it hear NODEDOWN. With gone (it left, or its
 * connection is gone), its next incarnation starts counting afresh. */
void tpi_node_peer_down(tpi_node *n, tpi_peer *p, bool gone);
/* p is heard from: up (NODEUP to its watchers) if it was down. */
void tpi_node_peer_heard(tpi_node *n, tpi_peer *p);
/* This node leaves: a LEAVE frame to every peer that is up, behind
 * whatever was sent to it before. */
void tpi_node_leave(tpi_node *n);
/* Forget the calls whose caller has ended (the ticker). */
void tpi_node_sweep(tpi_node *n);
/* A call by caller (ref) is about to leave for the node in slot; slot 0
 * for a group call, until the node serving it claims it with its CALLED
 * frame (dropped for any call not kept so). Kept until its reply, its
 * timeout at the caller, or the caller's end. 0 or TP_ENOMEM. */
int tpi_node_keep_call(tpi_node *n, tp_pid caller, unsigned slot, tp_ref ref);
/* The call (caller, ref) is answered or failed: no longer kept. */
void tpi_node_forget_call(tpi_node *n, tp_pid caller, tp_ref ref);
/* Relations that cross to other nodes (links, monitors both ways, node
 * monitors) and calls awaiting another node's reply, now. */
void tpi_node_relations(tpi_node *n, uint64_t *relations, uint64_t *calls);
/* A relation vector edit (p's lock held): 0 or TP_ENOMEM. */
int tpi_relvec_add(tpi_relvec *v, tp_pid local, tp_pid remote, tp_ref ref);
void tpi_relvec_free(tpi_relvec *v);
/* Map a wire pid to this runtime's form (local or remote); TP_PID_NONE
 * when it cannot be (a forged pid, the table full). */
tp_pid tpi_node_pid_in(tpi_node *n, const tpi_wpid *w);
/* A pid of this runtime as it travels; false if it cannot. */
bool tpi_node_pid_out(tpi_node *n, tp_pid pid, tpi_wpid *w);

#endif
