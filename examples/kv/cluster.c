/*
 * troupe-kv cluster mode: several troupe-kv processes, each a troupe node
 * (troupe/node.h), share one keyspace.
 *
 * Every node is given the same ordered member list (--nodes a,b,c) and
 * the same shards per node N (--shards), so ownership needs no agreement
 * at run time: global shard g lives on member g / N, as its local shard
 * g % N. Keys map to global shards (kv_shard_of over nshards = members
 * × N), so a connection on any node sends each op straight to its owner,
 * local or remote: a remote shard pid is an ordinary pid.
 *
 * The shard directory is one actor per node ("kv-cluster", linked to the
 * coordinator). It registers itself cluster-wide as "kv.<node>" and
 * watches every other member with tp_monitor_node. When a member comes
 * up, it looks that member's directory up (in the blocking pool: a lookup
 * blocks for a request to the server) and calls it for its shard pids,
 * retrying on a timer until it answers; the answer also carries the
 * member's N and member list, so a node started with other ones is
 * refused. When a member goes down, its shards become TP_PID_NONE: the
 * connections answer their keys "unavailable" until it is back, with new
 * pids (a restarted node's actors are new). Each node saves and loads
 * only its own shards (main.c's coordinator works on the local range).
 */
#include "kv.h"

#include <troupe/node.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    CL_HELLO = 100, /* call, directory -> directory: "[u S l y]" answer */
    CL_RETRY,       /* own timer, int: the member to try again */
    CL_REGISTER     /* own timer: register the directory's name again */
};

#define RETRY_MS 200
#define LOOKUP_TIMEOUT_MS 6000 /* past nats.c's 5 s JetStream timeout */
#define HELLO_TIMEOUT_MS 2000
#define NAME_PREFIX "kv."

/* The options (main's argv strings), then the parsed member list:
 * written before tp_run, read-only while actors run. */
static struct {
    const char *url, *node, *nodes, *cluster, *user, *password, *creds, *tls_ca,
        *tls_cert, *tls_key;
} opt;
static char members[KV_MAX_SHARDS][TP_NODE_NAME_MAX + 1];
static unsigned n_members, self_idx;

static const struct {
    const char *flag;
    const char **dst;
} options[] = {
    {"--cluster", &opt.url},
    {"--node", &opt.node},
    {"--nodes", &opt.nodes},
    {"--cluster-name", &opt.cluster},
    {"--cluster-user", &opt.user},
    {"--cluster-password", &opt.password},
    {"--cluster-creds", &opt.creds},
    {"--cluster-tls-ca", &opt.tls_ca},
    {"--cluster-tls-cert", &opt.tls_cert},
    {"--cluster-tls-key", &opt.tls_key},
};

int kv_cluster_option(const char *flag, const char *value)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        if (!strcmp(flag, options[i].flag)) {
            *options[i].dst = value;
            return *value ? 1 : -1;
        }
    return 0;
}

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > TP_NODE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
            !(s[i] >= '0' && s[i] <= '9') && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* Split --nodes into members[]; false (and a message) if it is bad. */
static bool parse_members(void)
{
    n_members = 0;
    for (const char *p = opt.nodes;;) {
        size_t n = strcspn(p, ",");
        if (!name_ok(p, n) || n_members == KV_MAX_SHARDS) {
            fprintf(stderr,
                    "troupe-kv: --nodes: '%.*s' is not a node name (1-%d of "
                    "A-Z a-z 0-9 _ -), or too many nodes\n",
                    (int)n, p, TP_NODE_NAME_MAX);
            return false;
        }
        memcpy(members[n_members], p, n);
        members[n_members][n] = '\0';
        for (unsigned i = 0; i < n_members; i++)
            if (!strcmp(members[i], members[n_members])) {
                fprintf(stderr, "troupe-kv: --nodes names %s twice\n",
                        members[i]);
                return false;
            }
        n_members++;
        if (!p[n])
            return true;
        p += n + 1;
    }
}

int kv_cluster_configure(kv_server *srv)
{
    unsigned per = srv->cfg.shards;
    if (!opt.url) {
        if (opt.node || opt.nodes) {
            fprintf(stderr, "troupe-kv: --node and --nodes need --cluster\n");
            return -1;
        }
        srv->nshards = per;
        srv->local_lo = 0;
        srv->local_n = per;
        return 0;
    }
    if (!opt.node || !opt.nodes) {
        fprintf(stderr, "troupe-kv: --cluster needs --node NAME and "
                        "--nodes NAME,NAME,...\n");
        return -1;
    }
    if (!parse_members())
        return -1;
    for (self_idx = 0; self_idx < n_members; self_idx++)
        if (!strcmp(members[self_idx], opt.node))
            break;
    if (self_idx == n_members) {
        fprintf(stderr, "troupe-kv: --node %s is not one of --nodes %s\n",
                opt.node, opt.nodes);
        return -1;
    }
    if (n_members * per > KV_MAX_SHARDS) {
        fprintf(stderr,
                "troupe-kv: %u nodes x %u shards: at most %d shards in "
                "all\n",
                n_members, per, KV_MAX_SHARDS);
        return -1;
    }
    srv->nshards = n_members * per;
    srv->local_lo = self_idx * per;
    srv->local_n = per;
    return 0;
}

int kv_cluster_join(kv_server *srv, tp_runtime *rt)
{
    if (!opt.url)
        return 0;
    tp_node_opts o;
    tp_node_opts_init(&o);
    o.urls = opt.url;
    o.name = opt.node;
    o.cluster = opt.cluster ? opt.cluster : "kv";
    o.user = opt.user;
    o.password = opt.password;
    o.creds_file = opt.creds;
    o.tls_ca = opt.tls_ca;
    o.tls_cert = opt.tls_cert;
    o.tls_key = opt.tls_key;
    o.max_message = KV_NODE_MAX_MESSAGE; /* the shards' replies fit (kv.h) */
    if (!srv->cfg.quiet)
        fprintf(stderr,
                "troupe-kv: node %s of %u (shards %u-%u of %u) through %s\n",
                opt.node, n_members, srv->local_lo,
                srv->local_lo + srv->local_n - 1, srv->nshards, opt.url);
    return tp_runtime_set_node(rt, &o);
}

bool kv_cluster_explain(int rc)
{
    if (!opt.url)
        return false;
    const char *why = rc == TP_EEXIST ? "a running node already has that name"
                      : rc == TP_ENOCONN
                          ? "no NATS server answered, or it refused the "
                            "credentials or TLS"
                      : rc == TP_EINVAL
                          ? "NATS refused the options (a TLS file?)"
                          : tp_strerror(rc);
    fprintf(stderr, "troupe-kv: cannot join the cluster at %s as node %s: %s\n",
            opt.url, opt.node, why);
    return true;
}

/* ------------------------------------------------------ the directory */

typedef struct member {
    bool up;        /* NODEUP seen, no NODEDOWN since */
    bool reachable; /* its shards are in srv->shards */
    tp_ref lookup;  /* its directory's name being looked up, or 0 */
    tp_ref hello;   /* its directory being asked for its shards, or 0 */
    tp_timer retry;
} member;

typedef struct directory {
    kv_server *srv;
    bool reg_warned;    /* registering failed once: said so */
    unsigned reachable; /* other members whose shards are known */
    member m[KV_MAX_SHARDS];
} directory;

/* Set member i's shards to pids (TP_PID_NONE: unavailable). Relaxed: a
 * connection reads a pid and uses only that value; a stale one makes a
 * send fail or a monitor fire, which it answers as "unavailable". */
static void set_shards(kv_server *srv, unsigned i, const tp_pid *pids)
{
    unsigned per = srv->cfg.shards;
    for (unsigned s = 0; s < per; s++)
        atomic_store_explicit(&srv->shards[i * per + s],
                              pids ? pids[s] : TP_PID_NONE,
                              memory_order_relaxed);
}

/* A line about member i, even with --quiet (a node lost or back is news
 * for the operator): fmt takes its name and its first and last shard. */
static void say(const directory *d, const char *fmt, unsigned i)
{
    unsigned per = d->srv->cfg.shards;
    fprintf(stderr, fmt, members[i], i * per, i * per + per - 1);
}

typedef struct lookup_job {
    tp_runtime *rt;
    char name[sizeof NAME_PREFIX + TP_NODE_NAME_MAX];
} lookup_job;

/* Blocking pool: the pid of a global name, as "u". Owns arg. */
static int lookup_run(void *arg, void **out, size_t *out_len)
{
    lookup_job *j = arg;
    tp_pid pid;
    int rc = tp_whereis_global(j->rt, j->name, &pid);
    free(j);
    return rc ? rc : tp_packf(out, out_len, "u", (uint64_t)pid);
}

static void retry_later(tp_ctx *ctx, directory *d, unsigned i)
{
    member *m = &d->m[i];
    m->lookup = m->hello = 0;
    /* The payload is i as a msgpack positive fixint: one byte, i < 64. */
    unsigned char b = (unsigned char)i;
    if (m->up && !m->retry)
        tp_send_after(ctx, RETRY_MS, CL_RETRY, &b, 1, &m->retry);
}

/* Look member i's directory up; the answer comes as a TP_TAG_REPLY. */
static void fetch(tp_ctx *ctx, directory *d, unsigned i)
{
    member *m = &d->m[i];
    lookup_job *j = kv_xrealloc(NULL, sizeof *j);
    j->rt = tp_ctx_runtime(ctx);
    snprintf(j->name, sizeof j->name, NAME_PREFIX "%s", members[i]);
    if (tp_spawn_blocking(ctx, lookup_run, j, LOOKUP_TIMEOUT_MS, &m->lookup)) {
        free(j); /* still ours on error */
        retry_later(ctx, d, i);
    }
}

/* CL_HELLO: this node's shards per node, member list, uptime, and the
 * pid values of its local shards (8 bytes each, as tp_node_pid takes
 * them). */
static void hello_answer(tp_ctx *ctx, directory *d, const tp_msg *msg)
{
    kv_server *srv = d->srv;
    char ids[KV_MAX_SHARDS * 8];
    for (unsigned s = 0; s < srv->local_n; s++)
        kv_put64(ids + 8 * s, kv_shard_pid(srv, srv->local_lo + s));
    void *buf;
    size_t len;
    if (tp_packf(&buf, &len, "[u S l y]", (uint64_t)srv->cfg.shards, opt.nodes,
                 strlen(opt.nodes), kv_now_ms() - srv->start_ms, ids,
                 (size_t)srv->local_n * 8) != 0)
        return; /* the caller times out and asks again */
    tp_reply(ctx, msg, buf, len);
    tp_free(buf);
}

/* The answer to a hello: member i's shards, or a refusal when it runs
 * with other options than this node. 0, or an exit reason's code. */
static int hello_answered(tp_ctx *ctx, directory *d, unsigned i,
                          const tp_msg *msg)
{
    kv_server *srv = d->srv;
    member *m = &d->m[i];
    uint64_t per;
    const char *nodes;
    const void *ids;
    size_t nodes_len, ids_len;
    int64_t uptime;
    if (tp_msg_scanf(msg, "[u S l y]", &per, &nodes, &nodes_len, &uptime, &ids,
                     &ids_len) != 0) {
        retry_later(ctx, d, i);
        return 0;
    }
    m->hello = 0;
    if (per != srv->cfg.shards || nodes_len != strlen(opt.nodes) ||
        memcmp(nodes, opt.nodes, nodes_len) != 0 || ids_len != per * 8) {
        /* The node that started last gives way: the cluster keeps
         * serving, and the misconfigured newcomer says why it stops. */
        bool newer = kv_now_ms() - srv->start_ms <= uptime;
        fprintf(stderr,
                "troupe-kv: node %s runs --shards %llu --nodes %.*s, this "
                "node --shards %u --nodes %s: every node needs the same; %s\n",
                members[i], (unsigned long long)per, (int)nodes_len, nodes,
                srv->cfg.shards, opt.nodes,
                newer ? "stopping this node"
                      : "its keys stay unavailable until it is restarted "
                        "to match");
        return newer ? TP_EINVAL : 0;
    }
    tp_pid pids[KV_MAX_SHARDS];
    for (unsigned s = 0; s < per; s++)
        if (tp_node_pid(tp_ctx_runtime(ctx), members[i],
                        kv_get64((const char *)ids + 8 * s), &pids[s]) != 0) {
            retry_later(ctx, d, i);
            return 0;
        }
    set_shards(srv, i, pids);
    m->reachable = true;
    say(d, "troupe-kv: node %s up: shards %u-%u reachable\n", i);
    if (++d->reachable == n_members - 1 && !srv->cfg.quiet)
        fprintf(stderr, "troupe-kv: all %u shards reachable\n", srv->nshards);
    return 0;
}

static int on_reply(tp_ctx *ctx, directory *d, const tp_msg *msg)
{
    tp_ref ref = tp_msg_ref(msg);
    for (unsigned i = 0; i < n_members; i++) {
        member *m = &d->m[i];
        if (ref == m->lookup) {
            uint64_t pid;
            m->lookup = 0;
            if (tp_msg_status(msg) != 0 || tp_msg_scanf(msg, "u", &pid) != 0 ||
                tp_call(ctx, (tp_pid)pid, CL_HELLO, NULL, 0, HELLO_TIMEOUT_MS,
                        &m->hello) != 0)
                retry_later(ctx, d, i); /* not registered yet, ... */
            return 0;
        }
        if (ref == m->hello) {
            if (tp_msg_status(msg) != 0) {
                retry_later(ctx, d, i);
                return 0;
            }
            return hello_answered(ctx, d, i, msg);
        }
    }
    return 0; /* a reply from before a NODEDOWN */
}

/* NODEUP / NODEDOWN: the member's index, or n_members if not one. */
static unsigned member_of(const tp_msg *msg)
{
    const char *s;
    size_t n;
    unsigned i = n_members;
    if (tp_msg_scanf(msg, "S", &s, &n) == 0)
        for (i = 0; i < n_members; i++)
            if (strlen(members[i]) == n && !memcmp(members[i], s, n))
                break;
    return i;
}

static void node_down(tp_ctx *ctx, directory *d, unsigned i)
{
    member *m = &d->m[i];
    m->up = false;
    m->lookup = m->hello = 0; /* answers still on their way are dropped */
    if (m->retry)
        tp_timer_cancel(ctx, m->retry);
    m->retry = 0;
    set_shards(d->srv, i, NULL);
    if (m->reachable) {
        m->reachable = false;
        d->reachable--;
        say(d,
            "troupe-kv: node %s down: shards %u-%u unavailable until it "
            "is back\n",
            i);
    }
}

/* Register this node's directory under its global name; on failure,
 * again a little later (an earlier run's name not freed yet). 0, or an
 * exit reason's code. */
static int register_name(tp_ctx *ctx, directory *d)
{
    char name[sizeof NAME_PREFIX + TP_NODE_NAME_MAX];
    snprintf(name, sizeof name, NAME_PREFIX "%s", opt.node);
    int rc = tp_register_global(ctx, name);
    if (rc == TP_ESTATE) {
        fprintf(stderr, "troupe-kv: the NATS server has no JetStream "
                        "(start it with nats-server -js)\n");
        return rc;
    }
    if (rc && !d->reg_warned) {
        d->reg_warned = true;
        fprintf(stderr, "troupe-kv: registering %s: %s; trying again\n", name,
                tp_strerror(rc));
    }
    if (rc)
        tp_send_after(ctx, RETRY_MS, CL_REGISTER, NULL, 0, NULL);
    return 0;
}

static int directory_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    directory *d = state;
    int rc = 0;
    unsigned i;
    int64_t v;
    int32_t tag = tp_msg_tag(msg);
    if ((tag == CL_RETRY || tag == CL_REGISTER) &&
        tp_msg_from(msg) != tp_self(ctx))
        return TP_HANDLED; /* its own timers' (kv_forged, kv.h) */
    switch (tag) {
    case TP_TAG_START:
        tp_register(ctx, "kv-cluster"); /* named in dumps */
        for (i = 0; i < n_members && !rc; i++)
            if (i != self_idx)
                rc = tp_monitor_node(ctx, members[i], true);
        if (!rc)
            rc = register_name(ctx, d);
        break;
    case CL_REGISTER: rc = register_name(ctx, d); break;
    case CL_HELLO: hello_answer(ctx, d, msg); break;
    case TP_TAG_NODEUP:
        if ((i = member_of(msg)) < n_members && !d->m[i].up) {
            d->m[i].up = true;
            fetch(ctx, d, i);
        }
        break;
    case TP_TAG_NODEDOWN:
        if ((i = member_of(msg)) < n_members)
            node_down(ctx, d, i);
        break;
    case CL_RETRY:
        if (tp_msg_int(msg, &v) == 0 && v >= 0 && v < n_members) {
            member *m = &d->m[v];
            m->retry = 0;
            if (m->up && !m->reachable && !m->lookup && !m->hello)
                fetch(ctx, d, (unsigned)v);
        }
        break;
    case TP_TAG_REPLY: rc = on_reply(ctx, d, msg); break;
    default: break;
    }
    if (rc)
        return tp_exit(ctx, TP_REASON_ERROR(rc, "cluster directory failed"));
    return TP_HANDLED;
}

int kv_cluster_start(tp_ctx *ctx, kv_server *srv, tp_pid *out)
{
    *out = TP_PID_NONE;
    if (!opt.url)
        return 0;
    directory *d = kv_xrealloc(NULL, sizeof *d);
    memset(d, 0, sizeof *d);
    d->srv = srv;
    tp_spawn_opts so = {0, TP_SPAWN_LINK, free};
    int rc = tp_spawn(ctx, directory_behavior, d, &so, out);
    if (rc)
        free(d);
    return rc;
}
