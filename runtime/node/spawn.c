/*
 * Remote spawn: behaviors registered by name in every node's program
 * (tp_node_register, like isolated behaviors), started on a named node
 * with tp_spawn_on. The request is a NATS request to
 * "<prefix>.spawn.<node>" answered by that node's subscription thread,
 * which spawns the actor from outside (tp_runtime_spawn) and answers its
 * pid; the caller waits for it (one round trip, read by nats.c's own
 * thread). With TP_SPAWN_LINK the caller then links to the new actor: if
 * it ended meanwhile, the link answers with an exit signal (noproc).
 *
 * tp_node_child_start puts such a spawn in a supervisor's child spec,
 * trying a list of nodes in order: when the node a child lived on goes
 * down, the link fires (noconnection) and the restart lands on the next
 * node that is up.
 */
#include "runtime/node/node_int.h"

#include <nats/nats.h>

#include <stdio.h>
#include <string.h>

#define SPAWN_TIMEOUT_MS 5000

typedef struct spawnable {
    char name[TP_NODE_NAME_MAX + 1]; /* first: a tpi_namereg entry */
    tp_behavior b;
    void *(*make)(const void *args, size_t len);
    void (*state_free)(void *);
} spawnable;
static spawnable reg[TP_NODE_SPAWN_MAX];
static tpi_namereg registry = TPI_NAMEREG_INIT(reg);

int tp_node_register(const char *name, tp_behavior b,
                     void *(*make_state)(const void *args, size_t len),
                     void (*state_free)(void *state))
{
    if (!name || !b || !tpi_node_name_ok(name, strlen(name)))
        return TP_EINVAL;
    spawnable e = {.b = b, .make = make_state, .state_free = state_free};
    snprintf(e.name, sizeof e.name, "%s", name);
    return tpi_namereg_add(&registry, &e);
}

/* A spawn request: [name, args or nil]. Answer: [status, pid ext or nil]. */
static void on_spawn(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                     void *arg)
{
    (void)sub;
    tpi_node *n = arg;
    const char *reply = natsMsg_GetReply(msg);
    const void *name = NULL, *args = NULL;
    size_t name_len = 0, args_len = 0;
    int rc = tpi_spawn_req_decode(natsMsg_GetData(msg),
                                  (size_t)natsMsg_GetDataLength(msg), &name,
                                  &name_len, &args, &args_len);
    spawnable e;
    if (!rc)
        rc = tpi_namereg_find(&registry, name, name_len, &e);
    tp_pid pid = TP_PID_NONE;
    if (!rc) {
        void *state = e.make ? e.make(args, args_len) : NULL;
        if (e.make && !state) {
            rc = TP_ENOMEM;
        } else {
            tp_spawn_opts so = {.state_free = e.state_free};
            rc = tp_runtime_spawn(n->rt, e.b, state, &so, &pid);
            if (rc && e.state_free && state)
                e.state_free(state);
        }
    }
    if (rc)
        atomic_fetch_add_explicit(&n->dropped, rc == TP_EPROTO,
                                  memory_order_relaxed);
    tpi_nbuf out = {0};
    if (reply && tpi_spawn_ans_encode(&out, n, rc, pid))
        natsConnection_Publish(nc, reply, out.p, (int)out.len);
    tp_free(out.p);
    natsMsg_Destroy(msg);
}

int tpi_spawn_open(tpi_node *n)
{
    char subj[2 * TP_NODE_NAME_MAX + 16];
    snprintf(subj, sizeof subj, "%s.spawn.%s", n->prefix, n->o.name);
    return tpi_node_subscribe(n, &n->sub_spawn, subj, NULL, on_spawn, n);
}

int tp_spawn_on(tp_ctx *ctx, const char *node, const char *name,
                const void *args, size_t len, unsigned flags, tp_pid *pid_out)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n || !n->nc)
        return TP_ESTATE;
    if (!node || !name || !tpi_node_name_ok(node, strlen(node)) ||
        !tpi_node_name_ok(name, strlen(name)) || (flags & ~TP_SPAWN_LINK) ||
        (!args && len))
        return TP_EINVAL;
    tpi_nbuf req = {0};
    if (!tpi_spawn_req_encode(&req, name, args, len)) {
        tp_free(req.p);
        return TP_ENOMEM;
    }
    char subj[2 * TP_NODE_NAME_MAX + 16];
    snprintf(subj, sizeof subj, "%s.spawn.%s", n->prefix, node);
    natsMsg *ans = NULL;
    tpi_node_flush(n); /* frames this thread holds leave before it blocks */
    natsStatus s = natsConnection_Request(&ans, n->nc, subj, req.p,
                                          (int)req.len, SPAWN_TIMEOUT_MS);
    tp_free(req.p);
    if (s == NATS_NO_RESPONDERS ||
        (s == NATS_OK && natsMsg_IsNoResponders(ans))) {
        natsMsg_Destroy(ans);
        return TP_ENOCONN; /* no such node, or it is down */
    }
    if (s != NATS_OK)
        return s == NATS_TIMEOUT ? TP_ETIMEDOUT : TP_ENOCONN;
    tp_pid pid = TP_PID_NONE;
    int rc = tpi_spawn_ans_decode(n, natsMsg_GetData(ans),
                                  (size_t)natsMsg_GetDataLength(ans), &pid);
    natsMsg_Destroy(ans);
    if (rc)
        return rc;
    /* The answer names an actor of the node asked, which is alive: heard,
     * so that the link below reaches it even before its next heartbeat
     * (after a reconnect, every node is down until heard; the link
     * would fail with noconnection and leave the actor running). */
    tpi_peer *p = tpi_node_peer_of(n, pid);
    if (p ? p->name_len != strlen(node) ||
                memcmp(p->name, node, p->name_len) != 0
          : strcmp(node, n->o.name) != 0)
        return TP_EPROTO; /* not an actor of the node asked */
    if (p)
        tpi_node_peer_heard(n, p);
    if ((flags & TP_SPAWN_LINK) && (rc = tp_link(ctx, pid)) != 0) {
        (void)tp_kill(ctx, pid); /* not left running, unlinked and unknown */
        return rc;
    }
    if (pid_out)
        *pid_out = pid;
    return 0;
}

int tp_node_child_start(tp_ctx *ctx, void *arg, const void *args,
                        size_t args_len, tp_pid *pid_out)
{
    const tp_node_child *c = arg;
    if (!c || !c->behavior || !c->nodes || !c->n_nodes)
        return TP_EINVAL;
    int rc = TP_ENOCONN;
    for (size_t i = 0; i < c->n_nodes && rc; i++)
        rc = tp_spawn_on(ctx, c->nodes[i], c->behavior, args ? args : c->args,
                         args ? args_len : c->args_len, TP_SPAWN_LINK, pid_out);
    return rc;
}
