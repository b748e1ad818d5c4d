/*
 * Process groups across nodes: actors on any node join a named group;
 * a message or call to the group goes to exactly one live member.
 *
 * Each node with members holds one NATS queue subscription on
 * "<prefix>.g.<group>.*" (queue "q"), so the server picks one such node
 * per message, and that node picks one of its members in turn. A sender
 * publishes on "<prefix>.g.<group>.<its node>": permissions can hold a
 * node to its own name there, and a frame whose sender names another
 * node is refused. A call is published with a reply subject naming the
 * caller ("<prefix>.gr.<node>.<pid>.<ref>") that only the server ever
 * answers: with "no responders" when no node has a member, which fails
 * the call at once (TP_ENOPROC). The serving node first tells the
 * caller's node that it has the call (a numbered CALLED frame, so it
 * comes before the reply): should it go down before replying, the call
 * fails at once with TP_ENOCONN, as a call to one of its pids does. The
 * member's own reply travels as any reply does. A node leaves the queue
 * when its last member leaves or ends.
 */
#include "runtime/node/node_int.h"

#include <nats/nats.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_NAME_MAX TP_NODE_NAME_MAX

static bool group_ok(const char *g)
{
    size_t n = g ? strlen(g) : 0;
    return n > 0 && n <= GROUP_NAME_MAX && tpi_node_name_ok(g, n);
}

static tpi_group *find(tpi_node *n, const char *name)
{
    for (size_t i = 0; i < n->ngroups; i++)
        if (strcmp(n->groups[i]->name, name) == 0)
            return n->groups[i];
    return NULL;
}

/* One member, in turn, that still lives (groups lock held); the dead ones
 * found on the way are dropped. */
static tp_pid pick(tpi_node *n, tpi_group *g)
{
    while (g->members.n) {
        size_t i = g->rr++ % g->members.n;
        tp_pid pid = g->members.v[i].local;
        uint64_t q, cap;
        if (tpi_svc_mailbox(n->rt, pid, &q, &cap) == 0)
            return pid;
        g->members.v[i] = g->members.v[--g->members.n];
    }
    return TP_PID_NONE;
}

/* A call from another node is served here: tell its node, before the
 * member can reply (nats.c's thread). */
static void called(tpi_node *n, tp_pid caller, tp_ref ref)
{
    tpi_peer *p = tpi_node_peer_of(n, caller);
    if (!p) { /* a caller of ours: no node between us */
        tpi_node_forget_call(n, caller, ref);
        return;
    }
    tpi_nframe f = {.kind = TPI_NF_CALLED,
                    .to = tpi_pid_at_node(caller),
                    .ref = ref};
    pthread_mutex_lock(&p->lock);
    if (p->up)
        (void)tpi_node_send_locked(n, p, &f, false);
    pthread_mutex_unlock(&p->lock);
}

static void on_group_msg(natsConnection *nc, natsSubscription *sub,
                         natsMsg *msg, void *arg)
{
    (void)nc;
    (void)sub;
    tpi_group *g = arg;
    tpi_node *n = g->node;
    tpi_nframe f;
    const char *why;
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    const char *node = strrchr(natsMsg_GetSubject(msg), '.');
    if (len > n->o.max_message || !node ||
        tpi_nframe_decode(natsMsg_GetData(msg), len, &f, &why) != 0 ||
        f.kind != TPI_NF_GROUP || f.tag < 0 ||
        f.from.node_len != strlen(node + 1) ||
        memcmp(f.from.node, node + 1, f.from.node_len) != 0) {
        atomic_fetch_add_explicit(&n->dropped, 1, memory_order_relaxed);
        natsMsg_Destroy(msg);
        return;
    }
    tpi_envelope e = {.tag = (int32_t)f.tag,
                      .from = tpi_node_pid_in(n, &f.from),
                      .reply_to = tpi_node_pid_in(n, &f.reply_to),
                      .ref = f.ref,
                      .request = (f.flags & TPI_NFL_REQUEST) != 0,
                      .data = f.payload,
                      .len = f.len};
    /* The sender's node is alive (its subject says which, as for frames):
     * heard, so that the CALLED frame and the member's reply reach it even
     * before its next heartbeat (after a reconnect, every node is down
     * until heard). */
    tpi_peer *from = tpi_node_peer_of(n, e.from);
    if (from)
        tpi_node_peer_heard(n, from);
    pthread_mutex_lock(&n->groups_lock);
    tp_pid to = pick(n, g);
    pthread_mutex_unlock(&n->groups_lock);
    if (e.request && e.reply_to == TP_PID_NONE) {
        atomic_fetch_add_explicit(&n->dropped, 1, memory_order_relaxed);
    } else if (to != TP_PID_NONE) {
        if (e.request)
            called(n, e.reply_to, f.ref);
        tpi_svc_post(n->rt, to, &e, true);
    } else if (e.request) { /* its last member just ended */
        tpi_envelope r = {.tag = TP_TAG_REPLY,
                          .ref = f.ref,
                          .status = TP_ENOPROC};
        tpi_svc_post(n->rt, e.reply_to, &r, false);
    }
    natsMsg_Destroy(msg);
}

/* Answers to group calls: only "no responders" ever comes here. */
static void on_group_answer(natsConnection *nc, natsSubscription *sub,
                            natsMsg *msg, void *arg)
{
    (void)nc;
    (void)sub;
    tpi_node *n = arg;
    const char *s = natsMsg_GetSubject(msg);
    size_t pl = strlen(n->group_inbox) - 1; /* without the '>' */
    if (natsMsg_IsNoResponders(msg) && strncmp(s, n->group_inbox, pl) == 0) {
        char *end;
        uint64_t pid = strtoull(s + pl, &end, 10);
        uint64_t ref = *end == '.' ? strtoull(end + 1, NULL, 10) : 0;
        tpi_envelope r = {.tag = TP_TAG_REPLY,
                          .ref = ref,
                          .status = TP_ENOPROC};
        if (pid && ref && !(pid & TPI_PID_REMOTE)) {
            tpi_node_forget_call(n, pid, ref);
            tpi_svc_post(n->rt, pid, &r, false);
        }
    }
    natsMsg_Destroy(msg);
}

int tpi_groups_open(tpi_node *n)
{
    _Static_assert(TPI_PREFIX_MAX + sizeof ".gr." - 1 + TP_NODE_NAME_MAX +
                           sizeof ".>" <=
                       TPI_INBOX_MAX,
                   "the group inbox fits");
    snprintf(n->group_inbox, sizeof n->group_inbox, "%s.gr.%s.>", n->prefix,
             n->o.name);
    return tpi_node_subscribe(n, &n->sub_group_ans, n->group_inbox, NULL,
                              on_group_answer, n);
}

void tpi_groups_close(tpi_node *n)
{
    natsSubscription_Destroy(n->sub_group_ans);
    n->sub_group_ans = NULL;
    for (size_t i = 0; i < n->ngroups; i++) {
        natsSubscription_Destroy(n->groups[i]->sub);
        n->groups[i]->sub = NULL;
    }
}

void tpi_groups_free(tpi_node *n)
{
    for (size_t i = 0; i < n->ngroups; i++) {
        tpi_relvec_free(&n->groups[i]->members);
        tp_free(n->groups[i]);
    }
    tp_free(n->groups);
}

int tp_group_join(tp_ctx *ctx, const char *group)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n || !n->nc)
        return TP_ESTATE;
    if (!group_ok(group))
        return TP_EINVAL;
    tp_pid self = tp_self(ctx);
    int rc = tpi_svc_watch_end(ctx);
    if (rc)
        return rc;
    pthread_mutex_lock(&n->groups_lock);
    tpi_group *g = find(n, group);
    if (!g && n->ngroups == n->capgroups) {
        size_t cap = n->capgroups ? n->capgroups * 2 : 4;
        tpi_group **v = tp_realloc(n->groups, cap * sizeof *v);
        if (v) {
            n->groups = v;
            n->capgroups = cap;
        }
    }
    if (!g && n->ngroups < n->capgroups && (g = tp_calloc(sizeof *g))) {
        g->node = n;
        snprintf(g->name, sizeof g->name, "%s", group);
        n->groups[n->ngroups++] = g;
    }
    rc = g ? 0 : TP_ENOMEM;
    bool subscribe = false;
    if (!rc) {
        for (size_t i = 0; i < g->members.n; i++)
            if (g->members.v[i].local == self)
                goto done; /* a member already */
        rc = tpi_relvec_add(&g->members, self, 0, 0);
        subscribe = !rc && !g->sub;
        if (subscribe) {
            char subj[TP_NODE_NAME_MAX + GROUP_NAME_MAX + 16];
            snprintf(subj, sizeof subj, "%s.g.%s.*", n->prefix, group);
            if (tpi_node_subscribe(n, &g->sub, subj, "q", on_group_msg, g) !=
                0) {
                g->members.n--;
                rc = TP_ENOCONN;
                subscribe = false;
            }
        }
    }
done:
    pthread_mutex_unlock(&n->groups_lock);
    /* Once join returns, calls from anywhere may reach us: the server
     * must have our subscription (one round trip, nats.c's thread reads
     * the answer). */
    if (subscribe)
        tpi_node_flush(n); /* frames this thread holds leave before it blocks */
    if (subscribe && natsConnection_FlushTimeout(n->nc, 2000) != NATS_OK) {
        /* Not confirmed: not a member either (the subscription goes with
         * the last member), as the error says. */
        (void)tp_group_leave(ctx, group);
        rc = TP_ENOCONN;
    }
    return rc;
}

/* pid leaves group g, or every group when g is NULL (groups lock held). */
static void leave(tpi_node *n, tpi_group *g, tp_pid pid)
{
    for (size_t k = 0; k < n->ngroups; k++) {
        tpi_group *h = n->groups[k];
        if (g && h != g)
            continue;
        for (size_t i = 0; i < h->members.n;)
            if (h->members.v[i].local == pid)
                h->members.v[i] = h->members.v[--h->members.n];
            else
                i++;
        if (!h->members.n && h->sub) { /* no member here: out of the queue */
            natsSubscription_Unsubscribe(h->sub);
            natsSubscription_Destroy(h->sub);
            h->sub = NULL;
        }
    }
}

int tp_group_leave(tp_ctx *ctx, const char *group)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n)
        return TP_ESTATE;
    if (!group_ok(group))
        return TP_EINVAL;
    pthread_mutex_lock(&n->groups_lock);
    tpi_group *g = find(n, group);
    if (g)
        leave(n, g, tp_self(ctx));
    pthread_mutex_unlock(&n->groups_lock);
    return g ? 0 : TP_ENOENT;
}

void tpi_groups_ended(tpi_node *n, tp_pid pid)
{
    pthread_mutex_lock(&n->groups_lock);
    leave(n, NULL, pid);
    pthread_mutex_unlock(&n->groups_lock);
}

/* Publish one group frame (a call when ref != 0). */
static int publish(tp_ctx *ctx, tpi_node *n, const char *group, int32_t tag,
                   const void *data, size_t len, tp_ref ref)
{
    if (tag < 0)
        return TP_EINVAL;
    if (len && tp_payload_check(data, len) != 0)
        return TP_EINVAL;
    tp_pid self = tp_self(ctx);
    tpi_nframe f = {.kind = TPI_NF_GROUP,
                    .seq = 1,
                    .tag = tag,
                    .ref = ref,
                    .flags = ref ? TPI_NFL_REQUEST : 0,
                    .payload = data,
                    .len = len};
    if (!tpi_node_pid_out(n, self, &f.from) ||
        (ref && !tpi_node_pid_out(n, self, &f.reply_to)))
        return TP_EINVAL;
    tpi_nbuf b = {0};
    int rc = 0;
    char subj[2 * TP_NODE_NAME_MAX + GROUP_NAME_MAX + 16], reply[TPI_REPLY_MAX];
    _Static_assert(TPI_INBOX_MAX - 1 + 2 * sizeof "18446744073709551615" <=
                       TPI_REPLY_MAX,
                   "a group call's reply subject fits");
    snprintf(subj, sizeof subj, "%s.g.%s.%s", n->prefix, group, n->o.name);
    snprintf(reply, sizeof reply, "%.*s%" PRIu64 ".%" PRIu64,
             (int)strlen(n->group_inbox) - 1, n->group_inbox, (uint64_t)self,
             (uint64_t)ref);
    tpi_node_flush(n); /* what this actor sent before leaves before */
    if (!tpi_nframe_encode(&b, &f))
        rc = TP_ENOMEM;
    else if (b.len > tpi_node_max_out(n))
        rc = TP_E2BIG;
    else if (natsConnection_PublishRequest(n->nc, subj, ref ? reply : NULL, b.p,
                                           (int)b.len) != NATS_OK)
        rc = TP_ENOCONN;
    tp_free(b.p);
    return rc;
}

int tp_group_send(tp_ctx *ctx, const char *group, int32_t tag, const void *data,
                  size_t len)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n || !n->nc)
        return TP_ESTATE;
    if (!group_ok(group))
        return TP_EINVAL;
    return publish(ctx, n, group, tag, data, len, 0);
}

int tp_group_call(tp_ctx *ctx, const char *group, int32_t tag, const void *data,
                  size_t len, int timeout_ms, tp_ref *ref_out)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n || !n->nc)
        return TP_ESTATE;
    if (!group_ok(group) || timeout_ms < 0) /* never wait forever */
        return TP_EINVAL;
    tp_oneshot tx; /* the member's reply, or the server's "no one" */
    int rc = tp_oneshot_new(ctx, timeout_ms, &tx);
    if (rc)
        return rc;
    /* Kept before it leaves: its CALLED may come back at once. Until its
     * reply or its timeout (call_expired, route.c). */
    if ((rc = tpi_node_keep_call(n, tp_self(ctx), 0, tx.ref)) != 0 ||
        (rc = publish(ctx, n, group, tag, data, len, tx.ref)) != 0) {
        tpi_node_forget_call(n, tp_self(ctx), tx.ref);
        tpi_svc_oneshot_cancel(ctx, tx.ref);
        return rc;
    }
    if (ref_out)
        *ref_out = tx.ref;
    return 0;
}
