/*
 * Global names: one owner per name in the whole cluster, kept in a
 * JetStream key-value bucket ("tp_<cluster>_names", in memory), so the
 * server's atomic create decides a race, not gossip between nodes.
 *
 * A value is the owner's node's incarnation (8 bytes, see node_int.h)
 * and its pid as it travels (the pid extension body: 8 bytes of the pid
 * in its node's form, then the node's name): a node that restarted gives
 * its old pids again, and the incarnation tells them apart. A name is
 * freed by a conditional update to the empty value (only if it still
 * holds the owner we saw), never by an unconditional delete, so a freeing
 * node can never erase a newer owner's registration:
 *  - the owner ends: its node frees its names (from its names thread,
 *    told by the core's end hook);
 *  - the owner's node goes down: every node that sees it go frees the
 *    names that node held (all try; the conditional update lets one win).
 * After a reconnect the bucket may have been lost with the server's
 * memory: a node registers its live names again.
 *
 * Registering and looking up block the calling scheduler thread for one
 * request to the server (nats.c's own threads read the answer).
 */
#include "runtime/node/node_int.h"

#include <nats/nats.h>

#include <stdio.h>
#include <string.h>

#define NAME_MAX_LEN 200
/* A sweep's listing of the keys, at most (node_end waits for it). */
#define NAMES_KEYS_MS 2000

static bool key_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) { /* a KV key: no wildcards, no spaces */
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
              c == '='))
            return false;
    }
    return name[0] != '.' && name[n - 1] != '.';
}

/* The cluster's bucket: the existing one (lookup), or a new one. */
static natsStatus bucket(tpi_node *n, kvStore **out, bool lookup)
{
    kvConfig cfg;
    kvConfig_Init(&cfg);
    char name[TP_NODE_NAME_MAX + 16];
    snprintf(name, sizeof name, "tp_%s_names", n->o.cluster);
    cfg.Bucket = name;
    cfg.History = 1;
    cfg.StorageType = js_MemoryStorage;
    if (lookup && js_KeyValue(out, n->js, name) == NATS_OK)
        return NATS_OK;
    return js_CreateKeyValue(out, n->js, &cfg);
}

int tpi_names_open(tpi_node *n)
{
    if (natsConnection_JetStream(&n->js, n->nc, NULL) != NATS_OK)
        return 0; /* no JetStream: global names are off, the rest works */
    if (bucket(n, &n->kv, true) != NATS_OK)
        n->kv = NULL;
    return 0;
}

void tpi_names_close(tpi_node *n)
{
    pthread_rwlock_wrlock(&n->kv_use); /* callers still inside finish */
    if (n->kv)
        kvStore_Destroy(n->kv);
    if (n->js)
        jsCtx_Destroy(n->js);
    n->kv = NULL;
    n->js = NULL;
    pthread_rwlock_unlock(&n->kv_use);
    for (size_t i = 0; i < n->names.n; i++)
        tp_free(n->names.v[i].name);
    tp_free(n->names.v);
    memset(&n->names, 0, sizeof n->names);
}

/* A caller's use of the store for a valid name: 0, then names_leave
 * follows; else nothing is held: TP_ESTATE when there is no store, or no
 * more because tp_run ended, TP_EINVAL for a bad name (NULL included). */
static int names_enter(tpi_node *n, const char *name)
{
    if (!n)
        return TP_ESTATE;
    pthread_rwlock_rdlock(&n->kv_use);
    int rc = !n->kv ? TP_ESTATE : !key_ok(name) ? TP_EINVAL : 0;
    if (rc)
        pthread_rwlock_unlock(&n->kv_use);
    return rc;
}

static void names_leave(tpi_node *n) { pthread_rwlock_unlock(&n->kv_use); }

/* The owner in a value; false for a freed (empty) or bad one. */
static bool owner_of(tpi_node *n, const void *v, int len, tp_pid *pid,
                     tpi_wpid *w, uint64_t *creation)
{
    if (len <= 8 || tpi_wpid_body((const uint8_t *)v + 8, (size_t)len - 8, w))
        return false;
    *creation = tpi_be(v, 8);
    *pid = tpi_node_pid_in(n, w);
    return *pid != TP_PID_NONE;
}

/* The value for pid, of this node: its length (0: pid cannot travel). */
static size_t value_of(tpi_node *n, tp_pid pid, uint8_t *v)
{
    for (int i = 0; i < 8; i++)
        v[i] = (uint8_t)(n->creation >> (8 * (7 - i)));
    size_t len = tpi_node_remote_ops.pid_pack(n, pid, v + 8);
    return len ? 8 + len : 0;
}

/* Whether the owner in a value still lives: an actor of ours that has
 * not ended, or one on a node that is up, or that answers a probe. A name
 * whose owner's node died while no node was there to free it (every node
 * that saw it go ended first) is stale: it may be taken over. */
static bool owner_alive(tpi_node *n, tp_pid pid, const tpi_wpid *w,
                        uint64_t creation)
{
    if (!(pid & TPI_PID_REMOTE)) {
        uint64_t q, cap;
        return creation == n->creation &&
               tpi_svc_mailbox(n->rt, pid, &q, &cap) == 0;
    }
    tpi_peer *p = tpi_node_peer_at(n, tpi_pid_slot(pid));
    if (!p)
        return false;
    pthread_mutex_lock(&p->lock);
    bool up = p->up;
    uint64_t known = p->creation;
    pthread_mutex_unlock(&p->lock);
    if (up && known)
        return known == creation; /* else: its node restarted since */
    char subj[2 * TP_NODE_NAME_MAX + 16];
    snprintf(subj, sizeof subj, "%s.alive.%.*s", n->prefix, (int)w->node_len,
             w->node);
    natsMsg *r = NULL;
    natsStatus s = natsConnection_Request(&r, n->nc, subj, NULL, 0, 250);
    bool gone = s == NATS_NO_RESPONDERS ||
                (s == NATS_OK && natsMsg_IsNoResponders(r));
    natsMsg_Destroy(r);
    return !gone; /* silence: maybe hung, not known to be gone */
}

/* Claim name for pid (any thread): 0, TP_EEXIST, TP_ENOCONN. */
static int claim(tpi_node *n, const char *name, tp_pid pid, uint64_t *rev)
{
    uint8_t v[8 + TPI_PID_EXT_MAX];
    size_t len = value_of(n, pid, v);
    if (!len)
        return TP_EINVAL;
    natsStatus s = kvStore_Create(rev, n->kv, name, v, (int)len);
    if (s == NATS_OK)
        return 0;
    kvEntry *e = NULL;
    if (kvStore_Get(&e, n->kv, name) != NATS_OK)
        return s == NATS_ERR ? TP_EEXIST : TP_ENOCONN;
    tp_pid cur;
    tpi_wpid w;
    uint64_t c;
    int rc = TP_EEXIST;
    bool known =
        owner_of(n, kvEntry_Value(e), kvEntry_ValueLen(e), &cur, &w, &c);
    if (s != NATS_ERR && known && cur == pid && c == n->creation) {
        /* Ours: a create that timed out was applied. (NATS_ERR: it
         * existed before, a second register of the same name.) */
        if (rev)
            *rev = kvEntry_Revision(e);
        rc = 0;
    } else if ((!known || !owner_alive(n, cur, &w, c)) &&
               kvStore_Update(rev, n->kv, name, v, (int)len,
                              kvEntry_Revision(e)) == NATS_OK) {
        rc = 0; /* freed (or stale): ours now, unless someone was quicker */
    }
    kvEntry_Destroy(e);
    return rc;
}

/* Free name if it still holds pid (a conditional update). True when it
 * no longer does (freed now, or before, or taken since); false when the
 * store did not answer, to be tried again. */
static bool release(tpi_node *n, const char *name, tp_pid pid)
{
    kvEntry *e = NULL;
    natsStatus s = n->kv ? kvStore_Get(&e, n->kv, name) : NATS_NOT_FOUND;
    if (s != NATS_OK)
        return s == NATS_NOT_FOUND;
    tp_pid cur;
    tpi_wpid w;
    uint64_t c;
    bool done = true;
    if (owner_of(n, kvEntry_Value(e), kvEntry_ValueLen(e), &cur, &w, &c) &&
        cur == pid && c == n->creation)
        done = kvStore_Update(NULL, n->kv, name, "", 0, kvEntry_Revision(e)) ==
               NATS_OK;
    kvEntry_Destroy(e);
    return done;
}

/* The list's entry of name for pid (names lock held), or NULL. */
static tpi_gname *find(tpi_node *n, const char *name, tp_pid pid)
{
    for (size_t i = 0; i < n->names.n; i++)
        if (n->names.v[i].pid == pid && strcmp(n->names.v[i].name, name) == 0)
            return &n->names.v[i];
    return NULL;
}

int tp_register_global(tp_ctx *ctx, const char *name)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    int rc = names_enter(n, name);
    if (rc)
        return rc;
    tp_pid self = tp_self(ctx);
    /* Held already (the store's answer could not tell, were the create
     * to time out: the value is ours either way). */
    pthread_mutex_lock(&n->names_lock);
    bool held = find(n, name, self) != NULL;
    pthread_mutex_unlock(&n->names_lock);
    if (held) {
        names_leave(n);
        return TP_EEXIST;
    }
    char *copy = tpi_strndup(name, NAME_MAX_LEN);
    rc = copy ? tpi_svc_watch_end(ctx) : TP_ENOMEM; /* freed as we end */
    if (!rc) {
        tpi_node_flush(n); /* frames this thread holds leave before it blocks */
        rc = claim(n, name, self, NULL);
    }
    if (!rc) {
        pthread_mutex_lock(&n->names_lock);
        if (n->names.n == n->names.cap) {
            size_t cap = n->names.cap ? n->names.cap * 2 : 8;
            tpi_gname *v = tp_realloc(n->names.v, cap * sizeof *v);
            if (v) {
                n->names.v = v;
                n->names.cap = cap;
            }
        }
        if (n->names.n < n->names.cap)
            n->names.v[n->names.n++] = (tpi_gname){copy, self, false, false};
        else
            rc = TP_ENOMEM;
        pthread_mutex_unlock(&n->names_lock);
        if (rc) /* we could not remember it: do not keep it */
            release(n, name, self);
    }
    names_leave(n);
    if (rc)
        tp_free(copy);
    return rc;
}

/* Take name's entry for pid off the list (names lock held): its name, to
 * free, or NULL if pid holds no such name. */
static char *take(tpi_node *n, const char *name, tp_pid pid)
{
    tpi_gname *g = find(n, name, pid);
    if (!g)
        return NULL;
    char *held = g->name;
    *g = n->names.v[--n->names.n];
    return held;
}

int tp_unregister_global(tp_ctx *ctx, const char *name)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    int rc = names_enter(n, name);
    if (rc)
        return rc;
    tp_pid self = tp_self(ctx);
    /* The entry stays on the list while the store is asked, marked: taken
     * off and put back on failure, its place could be filled meanwhile by
     * another thread's register. Only its owner, running here, or the
     * names thread once the owner ended, take entries off. */
    pthread_mutex_lock(&n->names_lock);
    tpi_gname *g = find(n, name, self);
    if (g)
        g->releasing = true;
    pthread_mutex_unlock(&n->names_lock);
    rc = g ? 0 : TP_ENOENT;
    if (g) {
        tpi_node_flush(n); /* frames this thread holds leave before it blocks */
        bool done = release(n, name, self);
        pthread_mutex_lock(&n->names_lock);
        char *held = done ? take(n, name, self) : NULL;
        if (!done) /* the store may still hold it for us: freed as we end */
            find(n, name, self)->releasing = false;
        pthread_mutex_unlock(&n->names_lock);
        tp_free(held);
        rc = done ? 0 : TP_ENOCONN;
    }
    names_leave(n);
    return rc;
}

int tp_whereis_global(tp_runtime *rt, const char *name, tp_pid *out)
{
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    int rc = names_enter(n, out ? name : NULL);
    if (rc)
        return rc;
    kvEntry *e = NULL;
    tpi_node_flush(n); /* frames this thread holds leave before it blocks */
    natsStatus s = kvStore_Get(&e, n->kv, name);
    rc = s == NATS_NOT_FOUND ? TP_ENOENT : s != NATS_OK ? TP_ENOCONN : 0;
    if (!rc) {
        tpi_wpid w;
        uint64_t c;
        if (!owner_of(n, kvEntry_Value(e), kvEntry_ValueLen(e), out, &w, &c) ||
            !owner_alive(n, *out, &w, c))
            rc = TP_ENOENT;
        kvEntry_Destroy(e);
    }
    names_leave(n);
    return rc;
}

int tp_send_global(tp_ctx *ctx, const char *name, int32_t tag, const void *data,
                   size_t len)
{
    tp_pid to;
    int rc = tp_whereis_global(tp_ctx_runtime(ctx), name, &to);
    return rc ? rc : tp_send(ctx, to, tag, data, len);
}

/* ------------------------------------------- from the names thread */

/* Names whose owner ended (the end hook queued them). */
void tpi_names_ended(tpi_node *n, tp_pid pid)
{
    pthread_mutex_lock(&n->names_lock);
    for (size_t i = 0; i < n->names.n; i++)
        if (n->names.v[i].pid == pid)
            n->names.v[i].ended = true;
    pthread_mutex_unlock(&n->names_lock);
    tpi_names_poke(n);
}

/* The node ends (node_end): the upkeep stops between two requests, so
 * that a store that does not answer cannot hold up the end for a timeout
 * per name. What it leaves is settled by others: peers free a node's
 * names when it leaves, and a name whose owner is gone is free to take. */
static bool ending(tpi_node *n)
{
    pthread_mutex_lock(&n->tick_lock);
    bool stop = n->stopping;
    pthread_mutex_unlock(&n->tick_lock);
    return stop;
}

/* After a reconnect: claim our live names again, in case they went with
 * the server's memory. Each claim is a request to the server, made
 * without the names lock, which scheduler threads take (an owner's end,
 * register, unregister): on a copy of the list, and a name given up
 * meanwhile is released again. Out of memory: tried at the next tick. */
static void reclaim(tpi_node *n)
{
    /* A restarted server lost the bucket (it is in memory): made again
     * (creating one that exists is a no-op), n->kv names it as before. */
    kvStore *kv = NULL;
    if (bucket(n, &kv, false) == NATS_OK)
        kvStore_Destroy(kv);
    pthread_mutex_lock(&n->names_lock);
    size_t k = n->names.n;
    tpi_gname *v = k ? tp_calloc(k * sizeof *v) : NULL;
    for (size_t i = 0; v && i < k; i++) {
        v[i] = n->names.v[i];
        /* one being released: settled at a later tick (again) */
        v[i].name = v[i].ended || v[i].releasing
                        ? NULL
                        : tpi_strndup(v[i].name, NAME_MAX_LEN);
    }
    pthread_mutex_unlock(&n->names_lock);
    bool again = k && !v;
    for (size_t i = 0; v && i < k; i++) {
        again |= !v[i].name && !v[i].ended;
        if (!v[i].name)
            continue;
        if (!ending(n) && claim(n, v[i].name, v[i].pid, NULL) == 0) {
            pthread_mutex_lock(&n->names_lock);
            tpi_gname *g = find(n, v[i].name, v[i].pid);
            /* still held, its owner alive and not giving it up */
            bool kept = g && !g->ended && !g->releasing;
            pthread_mutex_unlock(&n->names_lock);
            if (!kept)
                release(n, v[i].name, v[i].pid);
        }
        tp_free(v[i].name);
    }
    tp_free(v);
    if (again)
        atomic_store_explicit(&n->names_reclaim, true, memory_order_relaxed);
}

/* Free the names of ended owners, of nodes that went down, and register
 * ours again after a reconnect. Blocking is fine. */
static void names_tick(tpi_node *n)
{
    if (!n->kv)
        return;
    /* Owners that ended. An entry leaves the list only once its name is
     * released: one the store did not answer (a timeout under load, a
     * reconnect) is tried again at the next tick, else the name would
     * keep a dead owner for good. Others only append meanwhile. */
    for (size_t i = 0;;) {
        char *name = NULL;
        tp_pid pid = TP_PID_NONE;
        pthread_mutex_lock(&n->names_lock);
        for (; i < n->names.n && !name; i++)
            if (n->names.v[i].ended) {
                name = n->names.v[i].name;
                pid = n->names.v[i].pid;
            }
        pthread_mutex_unlock(&n->names_lock);
        if (!name || ending(n))
            break;
        if (!release(n, name, pid))
            continue;
        pthread_mutex_lock(&n->names_lock);
        for (size_t k = 0; k < n->names.n; k++)
            if (n->names.v[k].name == name) {
                n->names.v[k] = n->names.v[--n->names.n];
                i = k; /* the entry moved here is next */
                break;
            }
        pthread_mutex_unlock(&n->names_lock);
        tp_free(name);
    }
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np && !ending(n); i++) { /* nodes gone */
        tpi_peer *p = tpi_node_peer_at(n, i);
        pthread_mutex_lock(&p->lock);
        bool sweep = p->names_sweep;
        p->names_sweep = false;
        pthread_mutex_unlock(&p->lock);
        if (!sweep)
            continue;
        /* Not without a timeout: kvStore_Keys then waits for ever for its
         * watcher's end of the initial values, which does not always come
         * when a key is updated as the listing starts (nats.c 3.4 with
         * nats-server 2.9), and node_end would wait for ever for this
         * thread. A listing that timed out is tried again at the next
         * tick (owner_alive meanwhile tells a dead owner's name free). */
        kvKeysList keys = {0};
        kvWatchOptions wo;
        kvWatchOptions_Init(&wo);
        wo.Timeout = NAMES_KEYS_MS;
        if (kvStore_Keys(&keys, n->kv, &wo) != NATS_OK) {
            pthread_mutex_lock(&p->lock);
            p->names_sweep = true;
            pthread_mutex_unlock(&p->lock);
            continue;
        }
        for (int k = 0; k < keys.Count && !ending(n); k++) {
            kvEntry *e = NULL;
            tpi_wpid w;
            tp_pid cur;
            uint64_t c;
            if (kvStore_Get(&e, n->kv, keys.Keys[k]) != NATS_OK)
                continue;
            if (owner_of(n, kvEntry_Value(e), kvEntry_ValueLen(e), &cur, &w,
                         &c) &&
                w.node_len == p->name_len &&
                memcmp(w.node, p->name, p->name_len) == 0 &&
                !owner_alive(n, cur, &w, c)) /* not a newer run's */
                kvStore_Update(NULL, n->kv, keys.Keys[k], "", 0,
                               kvEntry_Revision(e));
            kvEntry_Destroy(e);
        }
        kvKeysList_Destroy(&keys);
    }
    if (atomic_exchange_explicit(&n->names_reclaim, false,
                                 memory_order_relaxed))
        reclaim(n);
}

/* The names thread: a round when poked, and one per heartbeat interval
 * for what the store did not answer before. */
static void *namer(void *arg)
{
    tpi_node *n = arg;
    uint64_t beat_ns = (uint64_t)n->o.heartbeat_ms * 1000000u;
    pthread_mutex_lock(&n->tick_lock);
    while (!n->stopping) {
        n->names_work = false;
        pthread_mutex_unlock(&n->tick_lock);
        names_tick(n);
        pthread_mutex_lock(&n->tick_lock);
        if (!n->stopping && !n->names_work)
            tpi_node_wait(n, &n->names_cond, beat_ns);
    }
    pthread_mutex_unlock(&n->tick_lock);
    return NULL;
}

int tpi_names_start(tpi_node *n)
{
    if (!n->kv)
        return 0;
    n->namer_on = pthread_create(&n->namer, NULL, namer, n) == 0;
    return n->namer_on ? 0 : TP_ESYS;
}

void tpi_names_stop(tpi_node *n)
{
    if (n->namer_on)
        pthread_join(n->namer, NULL);
    n->namer_on = false;
}

void tpi_names_poke(tpi_node *n)
{
    pthread_mutex_lock(&n->tick_lock);
    n->names_work = true;
    pthread_cond_signal(&n->names_cond);
    pthread_mutex_unlock(&n->tick_lock);
}
