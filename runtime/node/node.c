/*
 * Nodes (troupe/node.h): a runtime joined to others through NATS.
 *
 * The node service owns the NATS connection and everything about the
 * other nodes: their table (slots that remote pids name), the frames to
 * and from them (route.c, codec in wire.c) and their liveness. NATS's own
 * threads only read frames, check them and post messages into mailboxes
 * (tpi_svc_post); behaviors always run on scheduler threads.
 *
 * Liveness, two ways: every node publishes a heartbeat each heartbeat_ms
 * on "<prefix>.hb.<name>", and a node not heard for misses intervals is down (a
 * hung node: SIGSTOP). A killed node's connection is dropped by the
 * server at once, which a heartbeat would only notice after seconds: so
 * each node also probes every live peer four times per interval with a
 * request to "<prefix>.alive.<peer>", and the server's "no responders"
 * answer to one means the peer's subscription is gone: it is down now.
 *
 * Subjects: "<prefix>.n.<to>.<from>" carry frames, so with NATS
 * permissions a node can be allowed to publish only "<prefix>.n.*.<self>"
 * (and "<prefix>.hb.<self>", "<prefix>.alive.>", "<prefix>.who.<self>"): a node
 * cannot forge frames from another.
 *
 * Uses: runtime/service.h, the public headers, and nats.c.
 */
#include "runtime/node/node_int.h"

#include <nats/nats.h>

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CLUSTER "troupe"
#define PROBES_PER_BEAT 4
#define TPI_NODE_URLS_MAX 16
#define BATCH_BYTES ((size_t)64 << 10) /* frames to one node per message */
#define HELD_MAX 16 /* nodes one thread holds frames for in a batch */

void tp_node_opts_init(tp_node_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->cluster = DEFAULT_CLUSTER;
    o->heartbeat_ms = 1000;
    o->misses = 3;
    o->max_message = (size_t)1 << 20;
    o->connect_timeout_ms = 2000;
}

/* ------------------------------------------------------------ peers */

tpi_node *tpi_node_of(tp_runtime *rt)
{
    return tpi_svc_get(rt, TPI_SVC_NODE, NULL);
}

tpi_peer *tpi_node_peer_at(tpi_node *n, unsigned slot)
{
    /* acquire: pairs with the release in tpi_node_peer, so a slot below
     * the count is fully made. */
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    return slot >= 1 && slot <= np ? n->peers[slot] : NULL;
}

tpi_peer *tpi_node_peer_of(tpi_node *n, tp_pid pid)
{
    /* a local pid's high bits are its generation, not a slot */
    return (pid & TPI_PID_REMOTE) ? tpi_node_peer_at(n, tpi_pid_slot(pid))
                                  : NULL;
}

tpi_peer *tpi_node_peer_find(tpi_node *n, const char *name, size_t len)
{
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np; i++)
        if (n->peers[i]->name_len == len &&
            memcmp(n->peers[i]->name, name, len) == 0)
            return n->peers[i];
    return NULL;
}

tpi_peer *tpi_node_peer(tpi_node *n, const char *name, size_t len, bool vouch)
{
    if (!tpi_node_name_ok(name, len) ||
        (len == n->name_len && memcmp(name, n->o.name, len) == 0))
        return NULL;
    tpi_peer *p = tpi_node_peer_find(n, name, len);
    /* relaxed: a hint, set once under the peers lock and checked there */
    if (p &&
        (!vouch || atomic_load_explicit(&p->vouched, memory_order_relaxed)))
        return p;
    pthread_mutex_lock(&n->peers_lock);
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_relaxed);
    if (!p && !(p = tpi_node_peer_find(n, name, len)) &&
        np + 1 < TPI_NODE_SLOTS &&
        (vouch || n->unheard < TPI_NODE_UNHEARD_MAX) &&
        (p = tp_calloc(sizeof *p)) != NULL) {
        p->slot = np + 1;
        memcpy(p->name, name, len);
        p->name_len = len;
        snprintf(p->subject, sizeof p->subject, "%s.n.%s.%s", n->prefix,
                 p->name, n->o.name);
        pthread_mutex_init(&p->lock, NULL);
        n->unheard++; /* until vouched for, below */
        n->peers[np + 1] = p;
        /* release: the entry is complete before its slot is counted. */
        atomic_store_explicit(&n->npeers, np + 1, memory_order_release);
    }
    if (p && vouch &&
        !atomic_load_explicit(&p->vouched, memory_order_relaxed)) {
        atomic_store_explicit(&p->vouched, true, memory_order_relaxed);
        n->unheard--;
    }
    pthread_mutex_unlock(&n->peers_lock);
    return p;
}

/* ------------------------------------------------------------ output */

void tpi_node_publish(tpi_node *n, const char *subject, const tpi_nbuf *b)
{
    if (natsConnection_Publish(n->nc, subject, b->p, (int)b->len) == NATS_OK) {
        /* relaxed: statistics */
        atomic_fetch_add_explicit(&n->frames_out, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&n->bytes_out, b->len, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&n->send_failed, 1, memory_order_relaxed);
    }
}

/* The peers this thread holds frames for in its batch of turns (the
 * scheduler's thread: tpi_node_flush at the batch's end publishes them). */
static _Thread_local struct {
    tpi_peer *v[HELD_MAX];
    unsigned n;
} held;

/* Hold p's frames on this thread: false when it cannot (the list is
 * full: publish now). */
static bool hold_here(tpi_peer *p)
{
    for (unsigned i = 0; i < held.n; i++)
        if (held.v[i] == p)
            return true;
    if (held.n == HELD_MAX)
        return false;
    held.v[held.n++] = p;
    return true;
}

/* Publish p's buffer as one NATS message (p's lock held): 0, or
 * TP_ENOCONN and the frames are gone. */
static int publish_out(tpi_node *n, tpi_peer *p)
{
    if (!p->out_n)
        return 0;
    int rc = 0;
    /* relaxed: statistics */
    if (n->nc && natsConnection_Publish(n->nc, p->subject, p->out.p,
                                        (int)p->out.len) == NATS_OK) {
        atomic_fetch_add_explicit(&n->frames_out, p->out_n,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&n->bytes_out, p->out.len,
                                  memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&n->send_failed, p->out_n,
                                  memory_order_relaxed);
        rc = TP_ENOCONN;
    }
    p->out.len = 0;
    p->out_n = 0;
    return rc;
}

void tpi_node_drop_out(tpi_node *n, tpi_peer *p)
{
    atomic_fetch_add_explicit(&n->send_failed, p->out_n, memory_order_relaxed);
    p->out.len = 0;
    p->out_n = 0;
}

int tpi_node_send_locked(tpi_node *n, tpi_peer *p, tpi_nframe *f, bool hold)
{
    if (!n->nc)
        return TP_ENOCONN;
    size_t start = p->out.len;
    f->seq = p->seq_out + 1;
    if (!tpi_nframe_encode(&p->out, f)) {
        p->out.len = start;
        p->out.failed = false;
        return TP_ENOMEM;
    }
    size_t len = p->out.len - start;
    size_t most = tpi_node_max_out(n);
    size_t batch_max = BATCH_BYTES < most ? BATCH_BYTES : most;
    if (len > most) {
        p->out.len = start;
        return TP_E2BIG;
    }
    p->seq_out = f->seq;
    if (start && p->out.len > batch_max) {
        /* Too many for one message: those before leave now, this one
         * starts the next. */
        p->out.len = start;
        if (publish_out(n, p) != 0)
            p->lost = true;
        memmove(p->out.p, p->out.p + start, len);
        p->out.len = len;
    }
    p->out_n++;
    if (hold && p->out.len < batch_max && hold_here(p))
        return 0;
    /* A frame that did not leave keeps its number: p sees the gap at our
     * next frame and breaks before that frame reaches an actor, and we
     * break at the next liveness check. Given back, the number would let
     * the next frame through as if nothing was lost, with every link and
     * monitor intact (the core answers a refused send as a dead letter,
     * never to the sender). */
    int rc = publish_out(n, p);
    if (rc)
        p->lost = true;
    return rc;
}

void tpi_node_flush(void *state)
{
    tpi_node *n = state;
    for (unsigned i = 0; i < held.n; i++) {
        tpi_peer *p = held.v[i];
        pthread_mutex_lock(&p->lock);
        if (publish_out(n, p) != 0)
            p->lost = true;
        pthread_mutex_unlock(&p->lock);
    }
    held.n = 0;
}

static void publish_hb(tpi_node *n)
{
    tpi_nframe f = {.kind = TPI_NF_HB,
                    .node = n->o.name,
                    .node_len = n->name_len,
                    .creation = n->creation};
    tpi_nbuf b = {0};
    char subject[2 * TP_NODE_NAME_MAX + 16];
    snprintf(subject, sizeof subject, "%s.hb.%s", n->prefix, n->o.name);
    if (tpi_nframe_encode_hb(&b, &f))
        tpi_node_publish(n, subject, &b);
    tp_free(b.p);
}

/* ------------------------------------------------------------- input */

static void drop(tpi_node *n)
{
    atomic_fetch_add_explicit(&n->dropped, 1, memory_order_relaxed);
}

/* Frames for our actors, one or more back to back: "<prefix>.n.<us>.
 * <from>". A bad frame ends the message: the rest cannot be found, and
 * the gap in the numbers breaks the relations they belonged to. */
static void on_frame(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                     void *arg)
{
    (void)nc;
    (void)sub;
    tpi_node *n = arg;
    const char *subj = natsMsg_GetSubject(msg);
    const char *from = strrchr(subj, '.');
    const uint8_t *d = (const uint8_t *)natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg), used = 0;
    tpi_nframe f;
    const char *why;
    tpi_peer *p = from ? tpi_node_peer(n, from + 1, strlen(from + 1), false)
                       : NULL;
    atomic_fetch_add_explicit(&n->bytes_in, len, memory_order_relaxed);
    if (!p || len > n->o.max_message || len == 0)
        drop(n);
    for (size_t off = 0; p && off < len && len <= n->o.max_message;
         off += used) {
        if (tpi_nframe_next(d + off, len - off, &used, &f, &why) != 0 ||
            (f.kind != TPI_NF_MSG && f.kind != TPI_NF_BREAK &&
             f.kind != TPI_NF_LEAVE && f.kind != TPI_NF_CALLED)) {
            drop(n);
            break;
        }
        atomic_fetch_add_explicit(&n->frames_in, 1, memory_order_relaxed);
        tpi_node_frame_in(n, p, &f);
    }
    natsMsg_Destroy(msg);
}

static void on_hb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                  void *arg)
{
    (void)nc;
    (void)sub;
    tpi_node *n = arg;
    tpi_nframe f;
    const char *why;
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    /* "<prefix>.hb.<name>": with permissions a node may publish only its
     * own, so the subject, not the payload, says whose heartbeat it is. */
    const char *who = strrchr(natsMsg_GetSubject(msg), '.');
    if (len > 256 || !who ||
        tpi_nframe_decode(natsMsg_GetData(msg), len, &f, &why) != 0 ||
        f.kind != TPI_NF_HB || strlen(who + 1) != f.node_len ||
        memcmp(who + 1, f.node, f.node_len) != 0) {
        drop(n);
        natsMsg_Destroy(msg);
        return;
    }
    tpi_peer *p = tpi_node_peer(n, f.node, f.node_len, true);
    natsMsg_Destroy(msg);
    if (!p) /* our own, or the table is full */
        return;
    pthread_mutex_lock(&p->lock);
    bool restarted = p->creation && p->creation != f.creation;
    p->creation = f.creation;
    pthread_mutex_unlock(&p->lock);
    if (restarted) /* what we had with the one before is gone */
        tpi_node_peer_down(n, p, true);
    tpi_node_peer_heard(n, p);
}

/* Requests to "<prefix>.who.<us>" (is the name taken?) and
 * "<prefix>.alive.<us>" (probes): answered at once. */
static void on_ask(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                   void *arg)
{
    (void)sub;
    tpi_node *n = arg;
    const char *reply = natsMsg_GetReply(msg);
    if (reply)
        natsConnection_Publish(nc, reply, n->o.name, (int)n->name_len);
    natsMsg_Destroy(msg);
}

/* Answers to our probes: a "no responders" names a peer that is gone. */
static void on_probe_answer(natsConnection *nc, natsSubscription *sub,
                            natsMsg *msg, void *arg)
{
    (void)nc;
    (void)sub;
    tpi_node *n = arg;
    const char *subj = natsMsg_GetSubject(msg);
    size_t plen = strlen(n->probe_inbox) - 1; /* without the '*' */
    if (strncmp(subj, n->probe_inbox, plen) == 0) {
        const char *name = subj + plen;
        tpi_peer *p = tpi_node_peer_find(n, name, strlen(name));
        if (p && natsMsg_IsNoResponders(msg)) {
            tpi_node_peer_down(n, p, true);
        } else if (p) { /* a round trip: keep a smoothed estimate */
            pthread_mutex_lock(&p->lock);
            uint64_t rtt = (tpi_now_ns() - p->probe_sent_ns) / 1000u;
            pthread_mutex_unlock(&p->lock);
            uint64_t old =
                atomic_load_explicit(&n->rtt_us, memory_order_relaxed);
            atomic_store_explicit(&n->rtt_us, old ? (7 * old + rtt) / 8 : rtt,
                                  memory_order_relaxed);
        }
    }
    natsMsg_Destroy(msg);
}

/* ----------------------------------------------------------- liveness */

static void probe_and_check(tpi_node *n, uint64_t deadline_ns)
{
    uint64_t now = tpi_now_ns();
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np; i++) {
        tpi_peer *p = n->peers[i];
        pthread_mutex_lock(&p->lock);
        bool up = p->up;
        /* heard after now was read: not late (no unsigned wrap); frames
         * to it lost on our side count as a cut (tpi_node_send_locked) */
        bool late = up && (p->last_hb_ns + deadline_ns < now || p->lost);
        p->lost = false;
        if (up && !late)
            p->probe_sent_ns = now;
        pthread_mutex_unlock(&p->lock);
        if (late) { /* hung, or cut off: it may come back as it was */
            tpi_node_peer_down(n, p, false);
        } else if (up) {
            char subj[2 * TP_NODE_NAME_MAX + 32], reply[TPI_REPLY_MAX];
            _Static_assert(TPI_INBOX_MAX - 1 + TP_NODE_NAME_MAX < TPI_REPLY_MAX,
                           "a probe's reply subject fits");
            snprintf(subj, sizeof subj, "%s.alive.%s", n->prefix, p->name);
            snprintf(reply, sizeof reply, "%.*s%s",
                     (int)strlen(n->probe_inbox) - 1, n->probe_inbox, p->name);
            natsConnection_PublishRequest(n->nc, subj, reply, NULL, 0);
        }
    }
}

void tpi_node_wait(tpi_node *n, pthread_cond_t *c, uint64_t ns)
{
    struct timespec ts = tpi_timespec_in(CLOCK_REALTIME, ns);
    pthread_cond_timedwait(c, &n->tick_lock, &ts);
}

static void *ticker(void *arg)
{
    tpi_node *n = arg;
    uint64_t beat_ns = (uint64_t)n->o.heartbeat_ms * 1000000u;
    uint64_t deadline_ns = beat_ns * n->o.misses;
    uint64_t next_beat = 0;
    pthread_mutex_lock(&n->tick_lock);
    while (!n->stopping) {
        pthread_mutex_unlock(&n->tick_lock);
        uint64_t now = tpi_now_ns();
        if (now >= next_beat) {
            publish_hb(n);
            tpi_node_sweep(n);
            next_beat = now + beat_ns;
        }
        probe_and_check(n, deadline_ns);
        pthread_mutex_lock(&n->tick_lock);
        if (!n->stopping)
            tpi_node_wait(n, &n->tick_cond, beat_ns / PROBES_PER_BEAT);
    }
    pthread_mutex_unlock(&n->tick_lock);
    return NULL;
}

static void sub_done(void *arg)
{
    tpi_node *n = arg;
    pthread_mutex_lock(&n->tick_lock);
    n->in_flight--;
    pthread_cond_broadcast(&n->tick_cond);
    pthread_mutex_unlock(&n->tick_lock);
}

int tpi_node_subscribe(tpi_node *n, natsSubscription **sub, const char *subject,
                       const char *queue, natsMsgHandler cb, void *arg)
{
    natsStatus s =
        queue
            ? natsConnection_QueueSubscribe(sub, n->nc, subject, queue, cb, arg)
            : natsConnection_Subscribe(sub, n->nc, subject, cb, arg);
    if (s != NATS_OK)
        return s == NATS_NO_MEMORY ? TP_ENOMEM : TP_ENOCONN;
    pthread_mutex_lock(&n->tick_lock);
    n->in_flight++;
    pthread_mutex_unlock(&n->tick_lock);
    if (natsSubscription_SetOnCompleteCB(*sub, sub_done, n) != NATS_OK) {
        sub_done(n); /* cannot happen for an async subscription */
        natsSubscription_Destroy(*sub);
        *sub = NULL;
        return TP_ENOCONN;
    }
    /* frames are checked for loss, not limited here */
    natsSubscription_SetPendingLimits(*sub, -1, 256 << 20);
    return 0;
}

/* ----------------------------------------------------- the connection */

static void on_closed(natsConnection *nc, void *arg)
{
    (void)nc;
    tpi_node *n = arg;
    pthread_mutex_lock(&n->tick_lock);
    n->closed_cb = true;
    pthread_cond_broadcast(&n->tick_cond);
    pthread_mutex_unlock(&n->tick_lock);
}

static void on_disconnected(natsConnection *nc, void *arg)
{
    (void)nc;
    tpi_node *n = arg;
    atomic_store_explicit(&n->connected, false, memory_order_relaxed);
}

/* A frame the server would refuse is refused to its sender (TP_E2BIG)
 * rather than lost at publish, which breaks every relation with its node:
 * at connect, and at each reconnect, to a server that may allow less. */
static void set_max_out(tpi_node *n)
{
    int64_t most = natsConnection_GetMaxPayload(n->nc);
    size_t max = n->o.max_message;
    if (most > 0 && (uint64_t)most < max)
        max = (size_t)most;
    atomic_store_explicit(&n->max_out, max, memory_order_relaxed);
}

/* Frames published while we were cut off are lost (NATS is at most once):
 * every relation with every node is broken, as Erlang does when a
 * connection drops; nodes come back up with their next heartbeat. */
static void on_reconnected(natsConnection *nc, void *arg)
{
    (void)nc;
    tpi_node *n = arg;
    atomic_fetch_add_explicit(&n->reconnects, 1, memory_order_relaxed);
    set_max_out(n);
    atomic_store_explicit(&n->connected, true, memory_order_relaxed);
    atomic_store_explicit(&n->names_reclaim, true, memory_order_relaxed);
    tpi_names_poke(n);
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np; i++)
        tpi_node_peer_down(n, n->peers[i], false);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
                     void *arg)
{
    (void)nc;
    (void)sub;
    (void)err;
    drop(arg); /* a slow consumer dropped frames: the gap shows it */
}

static int nats_rc(natsStatus s)
{
    switch (s) {
    case NATS_OK: return 0;
    case NATS_NO_MEMORY: return TP_ENOMEM;
    case NATS_NO_SERVER:
    case NATS_TIMEOUT:
    case NATS_CONNECTION_CLOSED:
    case NATS_IO_ERROR: return TP_ENOCONN;
    default: return TP_EINVAL;
    }
}

/* The comma-separated URL list as nats.c's server list (failover). */
static natsStatus set_servers(natsOptions *o, const char *urls)
{
    const char *v[TPI_NODE_URLS_MAX];
    char *copy = tpi_strndup(urls, 4096), *save = NULL;
    if (!copy)
        return NATS_NO_MEMORY;
    int n = 0;
    for (char *t = strtok_r(copy, ", ", &save); t && n < TPI_NODE_URLS_MAX;
         t = strtok_r(NULL, ", ", &save))
        v[n++] = t;
    natsStatus s = n ? natsOptions_SetServers(o, v, n) : NATS_INVALID_ARG;
    tp_free(copy);
    return s;
}

static natsStatus make_options(tpi_node *n, natsOptions **out)
{
    natsOptions *o = NULL;
    const tp_node_opts *c = &n->o;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = set_servers(o, c->urls);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, c->name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, c->connect_timeout_ms);
    if (s == NATS_OK) /* low latency: write at once, no flusher delay */
        s = natsOptions_SetSendAsap(o, true);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 100);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_reconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, on_error, n);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(o, on_closed, n);
    if (s == NATS_OK && (c->user || c->password))
        s = natsOptions_SetUserInfo(o, c->user, c->password);
    if (s == NATS_OK && c->token)
        s = natsOptions_SetToken(o, c->token);
    if (s == NATS_OK && c->creds_file)
        s = natsOptions_SetUserCredentialsFromFiles(o, c->creds_file, NULL);
    if (s == NATS_OK && (c->tls_ca || c->tls_cert))
        s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK && c->tls_ca)
        s = natsOptions_LoadCATrustedCertificates(o, c->tls_ca);
    if (s == NATS_OK && c->tls_cert)
        s = natsOptions_LoadCertificatesChain(o, c->tls_cert, c->tls_key);
    if (s != NATS_OK)
        natsOptions_Destroy(o);
    else
        *out = o;
    return s;
}

/* A random incarnation number (never 0). */
static uint64_t creation_draw(void)
{
    uint64_t c = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&c, sizeof c, 1, f) != 1)
        c = tpi_now_ns() ^ ((uint64_t)getpid() << 32);
    if (f)
        fclose(f);
    return c ? c : 1;
}

/* Is the name taken? A live node answers on "<prefix>.who.<name>"; "no
 * responders" (or silence) means it is free. */
static int claim_name(tpi_node *n)
{
    char subj[2 * TP_NODE_NAME_MAX + 16];
    snprintf(subj, sizeof subj, "%s.who.%s", n->prefix, n->o.name);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_Request(&reply, n->nc, subj, NULL, 0, 250);
    bool taken = s == NATS_OK && reply && !natsMsg_IsNoResponders(reply);
    natsMsg_Destroy(reply);
    if (taken) {
        fprintf(stderr, "troupe: node name \"%s\" is taken in cluster \"%s\"\n",
                n->o.name, n->o.cluster);
        return TP_EEXIST;
    }
    return 0;
}

static int subscribe(tpi_node *n, natsSubscription **sub, const char *fmt,
                     natsMsgHandler cb)
{
    char subj[2 * TP_NODE_NAME_MAX + 160];
    snprintf(subj, sizeof subj, fmt, n->prefix, n->o.name);
    return tpi_node_subscribe(n, sub, subj, NULL, cb, n);
}

/* tp_run starts: connect, claim the name, subscribe, start the ticker. */
static int node_start(tp_runtime *rt, void *state)
{
    (void)rt;
    tpi_node *n = state;
    natsOptions *o = NULL;
    natsStatus s = make_options(n, &o);
    if (s != NATS_OK) {
        fprintf(stderr, "troupe: node %s: bad NATS options: %s\n", n->o.name,
                natsStatus_GetText(s));
        return nats_rc(s) == TP_ENOMEM ? TP_ENOMEM : TP_EINVAL;
    }
    s = natsConnection_Connect(&n->nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        fprintf(stderr, "troupe: node %s: cannot connect to %s: %s\n",
                n->o.name, n->o.urls, natsStatus_GetText(s));
        return s == NATS_NO_MEMORY ? TP_ENOMEM : TP_ENOCONN;
    }
    atomic_store_explicit(&n->connected, true, memory_order_relaxed);
    set_max_out(n); /* before any actor runs */
    n->creation = creation_draw();
    _Static_assert(TPI_PREFIX_MAX + sizeof ".probe." - 1 + TP_NODE_NAME_MAX +
                           sizeof ".*" <=
                       TPI_INBOX_MAX,
                   "the probe inbox fits");
    snprintf(n->probe_inbox, sizeof n->probe_inbox, "%s.probe.%s.*", n->prefix,
             n->o.name);
    int rc = claim_name(n);
    if (!rc)
        rc = subscribe(n, &n->sub_who, "%s.who.%s", on_ask);
    if (!rc)
        rc = subscribe(n, &n->sub_probe, "%s.alive.%s", on_ask);
    if (!rc)
        rc = subscribe(n, &n->sub_in, "%s.n.%s.*", on_frame);
    if (!rc)
        rc = subscribe(n, &n->sub_hb, "%s.hb.*%.0s", on_hb);
    if (!rc)
        rc = tpi_node_subscribe(n, &n->sub_probe_ans, n->probe_inbox, NULL,
                                on_probe_answer, n);
    if (!rc)
        rc = tpi_spawn_open(n);
    if (!rc)
        rc = tpi_groups_open(n);
    if (!rc)
        rc = tpi_names_open(n);
    if (!rc)
        rc = nats_rc(natsConnection_Flush(n->nc));
    if (!rc) {
        publish_hb(n); /* others see us now, not in a second */
        n->ticker_on = pthread_create(&n->ticker, NULL, ticker, n) == 0;
        rc = n->ticker_on ? tpi_names_start(n) : TP_ESYS;
    }
    return rc;
}

/* tp_run ends (not on a loop: blocking calls are fine): say goodbye so
 * others see us down at once, then close. */
static void node_end(tp_runtime *rt, void *state)
{
    (void)rt;
    tpi_node *n = state;
    pthread_mutex_lock(&n->tick_lock);
    n->stopping = true;
    pthread_cond_signal(&n->tick_cond);
    pthread_cond_signal(&n->names_cond);
    pthread_mutex_unlock(&n->tick_lock);
    if (n->ticker_on) {
        pthread_join(n->ticker, NULL);
        n->ticker_on = false;
    }
    tpi_names_stop(n);
    if (n->nc) {
        tpi_node_leave(n);
        natsConnection_FlushTimeout(n->nc, 1000);
        natsSubscription *subs[] = {n->sub_in,        n->sub_hb,
                                    n->sub_who,       n->sub_probe,
                                    n->sub_probe_ans, n->sub_spawn};
        for (size_t i = 0; i < sizeof subs / sizeof *subs; i++)
            natsSubscription_Destroy(subs[i]);
        n->sub_in = n->sub_hb = n->sub_who = n->sub_probe = NULL;
        n->sub_probe_ans = n->sub_spawn = NULL;
        tpi_groups_close(n);
        tpi_names_close(n);
        natsConnection_Close(n->nc);
        /* Wait until nats.c's threads are done with our callbacks (5 s at
         * most: a stuck library thread must not hang tp_run's end). */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        pthread_mutex_lock(&n->tick_lock);
        while ((n->in_flight || !n->closed_cb) &&
               pthread_cond_timedwait(&n->tick_cond, &n->tick_lock, &ts) == 0)
            ;
        pthread_mutex_unlock(&n->tick_lock);
        natsConnection_Destroy(n->nc);
        n->nc = NULL;
    }
}

static void *node_make(tp_runtime *rt)
{
    tpi_node *n = tp_calloc(sizeof *n);
    if (n) {
        n->rt = rt;
        pthread_mutex_init(&n->peers_lock, NULL);
        pthread_mutex_init(&n->calls_lock, NULL);
        pthread_mutex_init(&n->names_lock, NULL);
        pthread_rwlock_init(&n->kv_use, NULL);
        pthread_mutex_init(&n->groups_lock, NULL);
        pthread_mutex_init(&n->tick_lock, NULL);
        pthread_cond_init(&n->tick_cond, NULL);
        pthread_cond_init(&n->names_cond, NULL);
    }
    return n;
}

static void node_free(tp_runtime *rt, void *state)
{
    tpi_node *n = state;
    node_end(rt, n);
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_relaxed);
    for (unsigned i = 1; i <= np; i++) {
        tpi_peer *p = n->peers[i];
        tpi_relvec_free(&p->links);
        tpi_relvec_free(&p->watching);
        tpi_relvec_free(&p->watched);
        tpi_relvec_free(&p->monitors);
        tp_free(p->out.p);
        pthread_mutex_destroy(&p->lock);
        tp_free(p);
    }
    tpi_relvec_free(&n->calls);
    tpi_groups_free(n);
    pthread_mutex_destroy(&n->groups_lock);
    pthread_mutex_destroy(&n->names_lock);
    pthread_rwlock_destroy(&n->kv_use);
    pthread_mutex_destroy(&n->calls_lock);
    pthread_cond_destroy(&n->tick_cond);
    pthread_cond_destroy(&n->names_cond);
    pthread_mutex_destroy(&n->tick_lock);
    pthread_mutex_destroy(&n->peers_lock);
    tp_free(n->strs);
    tp_free(n);
}

static const tpi_svc_ops node_ops = {.make = node_make,
                                     .start = node_start,
                                     .end = node_end,
                                     .free = node_free};

/* ---------------------------------------------------------------- API */

/* Copy the option strings into one block (n->strs). */
static int copy_strings(tpi_node *n, const tp_node_opts *o)
{
    const char *src[] = {o->urls,     o->name,   o->cluster,    o->user,
                         o->password, o->token,  o->creds_file, o->tls_ca,
                         o->tls_cert, o->tls_key};
    const char **dst[] = {&n->o.urls,       &n->o.name,     &n->o.cluster,
                          &n->o.user,       &n->o.password, &n->o.token,
                          &n->o.creds_file, &n->o.tls_ca,   &n->o.tls_cert,
                          &n->o.tls_key};
    size_t total = 0;
    for (size_t i = 0; i < sizeof src / sizeof *src; i++)
        total += src[i] ? strlen(src[i]) + 1 : 0;
    char *q = n->strs = tp_alloc(total ? total : 1);
    if (!q)
        return TP_ENOMEM;
    for (size_t i = 0; i < sizeof src / sizeof *src; i++) {
        *dst[i] = NULL;
        if (src[i]) {
            size_t l = strlen(src[i]) + 1;
            memcpy(q, src[i], l);
            *dst[i] = q;
            q += l;
        }
    }
    return 0;
}

int tp_runtime_set_node(tp_runtime *rt, const tp_node_opts *o)
{
    if (!rt || !o || !o->urls || !o->name || !o->urls[0] ||
        !tpi_node_name_ok(o->name, strlen(o->name)) ||
        (o->cluster && !tpi_node_name_ok(o->cluster, strlen(o->cluster))) ||
        (o->tls_cert && !o->tls_key) || o->heartbeat_ms == 0 || o->misses == 0)
        return TP_EINVAL;
    if (tpi_svc_phase(rt) != TPI_PHASE_NEW || tpi_node_of(rt))
        return TP_ESTATE;
    tpi_node *n = tpi_svc_get(rt, TPI_SVC_NODE, &node_ops);
    if (!n)
        return TP_ENOMEM;
    n->o = *o;
    if (copy_strings(n, o) != 0)
        return TP_ENOMEM; /* freed with the runtime */
    if (!n->o.cluster)
        n->o.cluster = DEFAULT_CLUSTER;
    if (!n->o.max_message)
        n->o.max_message = (size_t)1 << 20;
    if (!n->o.connect_timeout_ms)
        n->o.connect_timeout_ms = 2000;
    n->name_len = strlen(n->o.name);
    snprintf(n->prefix, sizeof n->prefix, "tp.%s", n->o.cluster);
    tpi_svc_set_remote(rt, &tpi_node_remote_ops, n);
    return 0;
}

bool tp_pid_is_remote(tp_pid pid) { return (pid & TPI_PID_REMOTE) != 0; }

const char *tp_node_name(tp_runtime *rt)
{
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    return n ? n->o.name : NULL;
}

int tp_pid_node(tp_runtime *rt, tp_pid pid, char *buf, size_t size)
{
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (buf && size)
        buf[0] = '\0';
    if (!n)
        return TP_ENOENT;
    if (pid == TP_PID_NONE || !buf || !size)
        return TP_EINVAL;
    if (!(pid & TPI_PID_REMOTE)) {
        snprintf(buf, size, "%s", n->o.name);
        return 0;
    }
    tpi_peer *p = tpi_node_peer_at(n, tpi_pid_slot(pid));
    if (!p)
        return TP_EINVAL;
    snprintf(buf, size, "%s", p->name);
    return 0;
}

void tp_node_stats_get(tp_runtime *rt, tp_node_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n)
        return;
    /* relaxed: estimates */
    out->frames_out =
        atomic_load_explicit(&n->frames_out, memory_order_relaxed);
    out->frames_in = atomic_load_explicit(&n->frames_in, memory_order_relaxed);
    out->bytes_out = atomic_load_explicit(&n->bytes_out, memory_order_relaxed);
    out->bytes_in = atomic_load_explicit(&n->bytes_in, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&n->dropped, memory_order_relaxed);
    out->send_failed =
        atomic_load_explicit(&n->send_failed, memory_order_relaxed);
    out->reconnects =
        atomic_load_explicit(&n->reconnects, memory_order_relaxed);
    out->rtt_us = atomic_load_explicit(&n->rtt_us, memory_order_relaxed);
    out->max_message = tpi_node_max_out(n);
    tpi_node_relations(n, &out->relations, &out->calls_waiting);
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np; i++) {
        pthread_mutex_lock(&n->peers[i]->lock);
        out->nodes_up += n->peers[i]->up;
        pthread_mutex_unlock(&n->peers[i]->lock);
    }
}
