/** @file
 * troupe nodes: runtimes on many machines, joined through NATS.
 *
 * A runtime given node options (tp_runtime_set_node, before tp_run)
 * connects to a NATS server when its run starts and becomes a node of a
 * cluster: a pid of an actor on another node is an ordinary tp_pid value,
 * and tp_send, tp_send_move, tp_call, tp_reply, oneshots, tp_exit_signal,
 * tp_kill, tp_link, tp_unlink, tp_monitor and tp_demonitor work on it with
 * the same contract as on a local pid. Pids inside payloads (the 'p'
 * format letter of tp_packf/tp_unpackf) arrive as valid pids on the other
 * node. When a node is gone (killed, hung, cut off, or a message to or
 * from it was lost), every link to its actors fires with reason
 * TP_EXIT_NOCONNECTION, every monitor delivers DOWN with it, and every
 * call waiting for one of them fails at once with TP_ENOCONN.
 *
 * Without node options a runtime never touches NATS.
 *
 * Conventions as in troupe.h: 0 or a negative TP_E* code.
 */
#ifndef TROUPE_NODE_H
#define TROUPE_NODE_H

#include "../troupe.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Longest node and cluster name, in bytes ([A-Za-z0-9_-] only). */
#define TP_NODE_NAME_MAX 63

/** A watched node went down (tp_monitor_node): from TP_PID_NONE, payload
 * the node's name as a msgpack string. */
#define TP_TAG_NODEDOWN (-20)
/** A watched node is up (again), as TP_TAG_NODEDOWN. */
#define TP_TAG_NODEUP (-21)

/** How a runtime joins a cluster. tp_node_opts_init, then set urls and
 * name. Strings are copied by tp_runtime_set_node. */
typedef struct tp_node_opts {
    const char *urls;       /**< NATS servers, comma-separated
                              ("nats://127.0.0.1:4222,nats://..."), at
                              most 16; the client fails over between
                              them */
    const char *name;       /**< this node's name, unique in the cluster */
    const char *cluster;    /**< the cluster (namespace of subjects); default
                              "troupe" */
    const char *user;       /**< NATS user, or NULL */
    const char *password;   /**< its password, or NULL */
    const char *token;      /**< NATS token, or NULL */
    const char *creds_file; /**< a NATS credentials file (JWT and nkey
                                 seed), or NULL */
    const char *tls_ca;     /**< CA certificate file: use TLS, trusting it */
    const char *tls_cert;   /**< client certificate file (mutual TLS) */
    const char *tls_key;    /**< its private key file */
    unsigned heartbeat_ms;  /**< heartbeat interval; default 1000 */
    unsigned misses;        /**< heartbeats missed before a node is down;
                                default 3 */
    size_t max_message;     /**< largest frame sent or accepted; default
                                1 MiB; frames sent are also kept to the
                                max_payload of the server connected to
                                (read again at each reconnect) */
    unsigned connect_timeout_ms; /**< to reach a server at run start;
                                      default 2000 */
} tp_node_opts;

/** Defaults in every field; urls and name NULL. */
TP_API void tp_node_opts_init(tp_node_opts *o);

/**
 * Make rt a node (before tp_run). The run then starts by connecting to
 * NATS and claiming the name (the run fails with TP_EEXIST if another
 * live node of the cluster has it, TP_ENOCONN if no server answers, or
 * TP_EINVAL for options NATS refuses), and ends by leaving the cluster:
 * other nodes see this node go down at once, not at a heartbeat timeout.
 *
 * Returns TP_EINVAL (no urls or name, a bad name), TP_ESTATE (rt has run or
 * is a node already), TP_ENOMEM.
 */
TP_API int tp_runtime_set_node(tp_runtime *rt, const tp_node_opts *o);

/** This node's name, or NULL when rt is not a node. Any thread. */
TP_API const char *tp_node_name(tp_runtime *rt);

/** The node of pid: its name into buf (at most size bytes with the NUL;
 * this node's own name for a local pid). TP_ENOENT if rt is not a node
 * (then buf is ""), TP_EINVAL for TP_PID_NONE. Any thread. */
TP_API int tp_pid_node(tp_runtime *rt, tp_pid pid, char *buf, size_t size);

/** The pid that the node called node knows as id (a pid value it gave
 * out, such as its tp_self, passed on a command line), as a pid of rt:
 * for bootstrapping a cluster without names. On rt's own name, id
 * itself. Returns TP_ENOENT if rt is not a node, TP_EINVAL (a bad name, an
 * id no node gives out, too many nodes known). Any thread. */
TP_API int tp_node_pid(tp_runtime *rt, const char *node, uint64_t id,
                       tp_pid *out);

/** Whether pid is an actor of another node (a cheap test of its bits). */
TP_API bool tp_pid_is_remote(tp_pid pid);

/** Deliver TP_TAG_NODEDOWN to the caller each time node goes down, and
 * TP_TAG_NODEUP each time it comes (back) up (Erlang's monitor_node).
 * on = false stops it. Returns TP_ESTATE outside a behavior or when the
 * runtime is not a node, TP_EINVAL (bad name), TP_ENOMEM. */
TP_API int tp_monitor_node(tp_ctx *ctx, const char *node, bool on);

/* ------------------------------------------------------ global names */

/**
 * Register the calling actor under name in the whole cluster (Erlang's
 * global:register_name). One owner per name: a second registration,
 * from any node, fails with TP_EEXIST. The name is freed when its owner
 * ends or its node goes down, or by tp_unregister_global. Names live in a
 * JetStream key-value bucket: the NATS server must run with JetStream
 * (nats-server -js). Blocks the caller for a few requests to the server
 * (a create; when taken, a read, and if its owner's node is not known to
 * be up, a probe of at most 250 ms, then a conditional update).
 * Names: 1 to 200 of [A-Za-z0-9_-.=], not starting or ending with '.'.
 *
 * Returns 0, TP_EEXIST, TP_EINVAL (bad name), TP_ESTATE (not a node, or
 * no JetStream), TP_ENOCONN, TP_ENOMEM.
 */
TP_API int tp_register_global(tp_ctx *ctx, const char *name);

/** Free a global name the calling actor holds (blocks for a read and a
 * conditional update). TP_ENOENT if it does not hold it; TP_ENOCONN if the
 * store did not answer (the update may or may not have been made): the
 * caller keeps the name, which is freed when it ends or by calling again;
 * TP_ESTATE, TP_EINVAL as for registering. */
TP_API int tp_unregister_global(tp_ctx *ctx, const char *name);

/** The owner of a global name (a pid of rt, local or remote). TP_ENOENT
 * when nobody holds it, TP_ESTATE, TP_EINVAL, TP_ENOCONN. Any thread;
 * blocks for one request to the server. */
TP_API int tp_whereis_global(tp_runtime *rt, const char *name, tp_pid *out);

/** tp_send to the owner of a global name (tp_whereis_global's errors). To
 * call by name, look the owner up and tp_call it. */
TP_API int tp_send_global(tp_ctx *ctx, const char *name, int32_t tag,
                          const void *data, size_t len);

/* ------------------------------------------------------------ groups */

/**
 * Join the group (a name as for nodes): messages and
 * calls to the group go to exactly one live member, on any node (NATS
 * queue groups pick the node, the node picks a member in turn). A member
 * leaves with tp_group_leave or when it ends. Once this returns, the
 * membership is known to the server. Returns TP_ESTATE (not a node),
 * TP_EINVAL, TP_ENOCONN (the server did not confirm the subscription in
 * 2 s: not a member), TP_ENOMEM.
 */
TP_API int tp_group_join(tp_ctx *ctx, const char *group);
/** Leave the group; TP_ENOENT if this node has no such group. */
TP_API int tp_group_leave(tp_ctx *ctx, const char *group);
/** Send to one member of the group; lost if it has none (as a send to a
 * dead pid). Ownership: data is copied. */
TP_API int tp_group_send(tp_ctx *ctx, const char *group, int32_t tag,
                         const void *data, size_t len);
/** Call one member: the reply comes as TP_TAG_REPLY with *ref_out, status
 * 0 or the member's TP_ENOREPLY/TP_ENOPROC, TP_ENOPROC at once when the
 * group has no member anywhere, TP_ENOCONN at once when the serving node
 * goes down after telling this node it has the call, TP_ETIMEDOUT after
 * timeout_ms. A serving node that dies before telling is noticed by the
 * timeout only, so timeout_ms < 0 is TP_EINVAL (there is no call without
 * a timeout). */
TP_API int tp_group_call(tp_ctx *ctx, const char *group, int32_t tag,
                         const void *data, size_t len, int timeout_ms,
                         tp_ref *ref_out);

/* ------------------------------------------------------ remote spawn */

/** Most behaviors tp_node_register keeps. */
#define TP_NODE_SPAWN_MAX 64

/**
 * Register behavior b under name (a node name's alphabet) for remote
 * spawns, in every program of the cluster, before any runtime runs.
 * make_state (may be NULL: state NULL) makes the new actor's state from
 * the spawn's argument bytes; state_free frees it when the actor ends.
 * Returns TP_EINVAL, TP_EEXIST, TP_ENOMEM (more than TP_NODE_SPAWN_MAX).
 */
TP_API int tp_node_register(const char *name, tp_behavior b,
                            void *(*make_state)(const void *args, size_t len),
                            void (*state_free)(void *state));

/**
 * Spawn the behavior registered as name on node (Erlang's spawn/4), with
 * args (copied; any bytes) for its make_state. flags: TP_SPAWN_LINK links
 * the caller to it (if it ended meanwhile, the caller gets an exit signal
 * with reason noproc). Blocks the caller for one request to that node.
 * Returns 0 and *pid_out, TP_ENOCONN (no such node, or it is down),
 * TP_ENOENT (nothing registered under name there), TP_ETIMEDOUT, TP_ESTATE
 * (not a node), TP_EINVAL, TP_ENOMEM, TP_EPROTO (a malformed answer). If
 * the link fails after the spawn, the actor is killed and the link's
 * error returned.
 */
TP_API int tp_spawn_on(tp_ctx *ctx, const char *node, const char *name,
                       const void *args, size_t len, unsigned flags,
                       tp_pid *pid_out);

/** Where tp_node_child_start places a supervisor's child: the first node
 * of nodes that is up, running the behavior registered as behavior. */
typedef struct tp_node_child {
    const char *const *nodes; /**< tried in order */
    size_t n_nodes;           /**< entries in nodes */
    const char *behavior;     /**< registered with tp_node_register */
    const void *args;         /**< for make_state, unless the supervisor
                               passes its own (simple_one_for_one) */
    size_t args_len;          /**< bytes at args */
} tp_node_child;

/** A tp_child_start_fn (troupe/supervisor.h): arg is a const
 * tp_node_child * that outlives the supervisor. The child is linked to
 * the supervisor; when its node goes down the link fires with reason
 * noconnection and the supervisor restarts it by its strategy, on the
 * first node that is up then. Returns tp_spawn_on's error of the last
 * node tried. */
TP_API int tp_node_child_start(tp_ctx *ctx, void *arg, const void *args,
                               size_t args_len, tp_pid *pid_out);

/** Per-node counters (tp_node_stats_get). */
typedef struct tp_node_stats {
    uint64_t frames_out;    /**< frames published */
    uint64_t frames_in;     /**< frames taken in */
    uint64_t bytes_out;     /**< bytes published */
    uint64_t bytes_in;      /**< bytes received */
    uint64_t dropped;       /**< frames from the wire refused (bad, forged,
                              unknown kind, out of sequence) */
    uint64_t send_failed;   /**< frames that could not be published */
    uint64_t reconnects;    /**< NATS reconnections */
    uint64_t nodes_up;      /**< other nodes seen alive now */
    uint64_t rtt_us;        /**< round trip estimate from liveness probes, 0 if
                              none yet */
    uint64_t relations;     /**< links and monitors that cross to other
                                nodes (each side counted), node monitors */
    uint64_t calls_waiting; /**< calls awaiting another node's reply (an
                                entry goes with the reply, the node's
                                end, or its caller's) */
    uint64_t max_message;   /**< largest frame sent now: max_message, or
                                the connected server's max_payload if
                                lower */
} tp_node_stats;

/** Fill *out (any thread); zeros when rt is not a node. */
TP_API void tp_node_stats_get(tp_runtime *rt, tp_node_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_NODE_H */
