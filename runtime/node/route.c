/*
 * Frames between nodes, and the relations a lost node breaks.
 *
 * Out: a send to a remote pid reaches tpi_node_remote_ops.deliver (from
 * actors/remote.c, on whatever thread sent it) and leaves as one frame.
 * In: the inbox subscription's thread checks a frame's place in its
 * sender's sequence, maps its pids and posts it to the local actor.
 *
 * Erlang's promise, kept per pair of nodes: if a later message arrived,
 * every earlier one did, or the links and monitors between the two were
 * broken. Frames to a node carry consecutive numbers (assigned with the
 * publish under the peer's lock); a receiver that sees a gap, or that
 * declared the sender down meanwhile, breaks every relation with it and
 * sends it a BREAK so that it breaks its side too. The BREAK names the
 * last of the sender's frames it broke with: relations made by the
 * sender's later frames (which it sent before it learnt of the break,
 * say right after a reconnect) stand on both sides, so they stand.
 *
 * To break relations this side keeps, per peer, the ones that cross to
 * it: links, monitors both ways, and (node-wide) calls awaiting a reply.
 * They are noted as the signals that make them pass through here, before
 * the frame leaves, and forgotten as the signals that end them pass.
 */
#include "runtime/node/node_int.h"

#include <string.h>

static const tp_reason noconnection = {TP_EXIT_NOCONNECTION, 0, NULL};

/* ------------------------------------------------------ relation sets */

int tpi_relvec_add(tpi_relvec *v, tp_pid local, tp_pid remote, tp_ref ref)
{
    for (size_t i = 0; !ref && i < v->n; i++) /* a link is one relation */
        if (v->v[i].local == local && v->v[i].remote == remote && !v->v[i].ref)
            return 0;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        tpi_rel *nv = tp_realloc(v->v, cap * sizeof *nv);
        if (!nv)
            return TP_ENOMEM;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = (tpi_rel){local, remote, ref, 0};
    return 0;
}

/* Remove the first match (remote 0 or ref 0: any). */
static bool relvec_del(tpi_relvec *v, tp_pid local, tp_pid remote, tp_ref ref)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->v[i].local == local && (!remote || v->v[i].remote == remote) &&
            (!ref || v->v[i].ref == ref)) {
            v->v[i] = v->v[--v->n];
            return true;
        }
    return false;
}

static tpi_relvec relvec_take(tpi_relvec *v)
{
    tpi_relvec out = *v;
    memset(v, 0, sizeof *v);
    return out;
}

void tpi_relvec_free(tpi_relvec *v)
{
    tp_free(v->v);
    memset(v, 0, sizeof *v);
}

/* ------------------------------------------------------------- pids */

tp_pid tpi_node_pid_in(tpi_node *n, const tpi_wpid *w)
{
    if (!w->node_len)
        return TP_PID_NONE;
    if (w->node_len == n->name_len &&
        memcmp(w->node, n->o.name, w->node_len) == 0)
        return w->pid; /* ours */
    tpi_peer *p = tpi_node_peer(n, w->node, w->node_len, false);
    return p ? tpi_pid_remote(p->slot, w->pid) : TP_PID_NONE;
}

bool tpi_node_pid_out(tpi_node *n, tp_pid pid, tpi_wpid *w)
{
    memset(w, 0, sizeof *w);
    if (pid == TP_PID_NONE)
        return true;
    if (pid & TPI_PID_REMOTE) {
        tpi_peer *p = tpi_node_peer_at(n, tpi_pid_slot(pid));
        if (!p)
            return false;
        w->pid = tpi_pid_at_node(pid);
        w->node = p->name;
        w->node_len = p->name_len;
        return true;
    }
    if (!tpi_pid_exportable(pid))
        return false;
    w->pid = pid;
    w->node = n->o.name;
    w->node_len = n->name_len;
    return true;
}

static size_t pid_pack(void *state, tp_pid pid, uint8_t *buf)
{
    tpi_wpid w;
    if (pid == TP_PID_NONE || !tpi_node_pid_out(state, pid, &w))
        return 0;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(w.pid >> (8 * (7 - i)));
    memcpy(buf + 8, w.node, w.node_len);
    return 8 + w.node_len;
}

static int pid_unpack(void *state, const uint8_t *body, size_t len, tp_pid *out)
{
    tpi_wpid w;
    if (tpi_wpid_body(body, len, &w) != 0)
        return TP_EPROTO;
    *out = tpi_node_pid_in(state, &w);
    return *out == TP_PID_NONE ? TP_EPROTO : 0;
}

/* ------------------------------------------------------------- out */

/* The relation (local, remote, ref) in v is made by our frame numbered
 * seq (tpi_relvec_add just kept or found it). */
static void made_by(tpi_relvec *v, tp_pid local, tp_pid remote, tp_ref ref,
                    uint64_t seq)
{
    for (size_t i = v->n; i-- > 0;)
        if (v->v[i].local == local && v->v[i].remote == remote &&
            v->v[i].ref == ref) {
            v->v[i].seq = seq;
            return;
        }
}

/* Note, before it leaves, the relation a signal from local `from` to
 * remote `to` makes or ends (p's lock held). A relation it makes records
 * the number its frame will have (tpi_node_send_locked). */
static int note_out(tpi_node *n, tpi_peer *p, tp_pid from, tp_pid to,
                    const tpi_envelope *e)
{
    (void)n;
    int rc;
    switch (e->tag) {
    case TPI_SIG_LINK:
        if ((rc = tpi_relvec_add(&p->links, from, to, 0)) == 0)
            made_by(&p->links, from, to, 0, p->seq_out + 1);
        return rc;
    case TPI_SIG_UNLINK: relvec_del(&p->links, from, to, 0); return 0;
    case TPI_SIG_EXIT:
        if (e->via_link)
            relvec_del(&p->links, from, to, 0);
        return 0;
    case TPI_SIG_MONITOR:
        if ((rc = tpi_relvec_add(&p->watching, from, to, e->ref)) == 0)
            made_by(&p->watching, from, to, e->ref, p->seq_out + 1);
        return rc;
    case TPI_SIG_DEMONITOR: relvec_del(&p->watching, from, 0, e->ref); return 0;
    case TP_TAG_DOWN: relvec_del(&p->watched, from, 0, e->ref); return 0;
    default: return 0;
    }
}

/* A call from this node (its reply comes here): kept node-wide, since the
 * reply may come from a third node the request was forwarded to. */
static int note_call(tpi_node *n, tpi_peer *p, const tpi_envelope *e)
{
    if (!e->request || (e->reply_to & TPI_PID_REMOTE))
        return 0;
    return tpi_node_keep_call(n, e->reply_to, p->slot, e->ref);
}

void tpi_node_forget_call(tpi_node *n, tp_pid caller, tp_ref ref)
{
    pthread_mutex_lock(&n->calls_lock);
    relvec_del(&n->calls, caller, 0, ref);
    pthread_mutex_unlock(&n->calls_lock);
}

int tpi_node_keep_call(tpi_node *n, tp_pid caller, unsigned slot, tp_ref ref)
{
    pthread_mutex_lock(&n->calls_lock);
    int rc = tpi_relvec_add(&n->calls, caller, slot, ref);
    pthread_mutex_unlock(&n->calls_lock);
    return rc;
}

/* p says it serves our group call (caller, ref): the call is p's now
 * (it fails when p goes down). False if no such call waits unclaimed. */
static bool claim_call(tpi_node *n, tpi_peer *p, tp_pid caller, tp_ref ref)
{
    bool found = false;
    pthread_mutex_lock(&n->calls_lock);
    for (size_t i = 0; i < n->calls.n && !found; i++) {
        tpi_rel *c = &n->calls.v[i];
        if (c->local == caller && c->ref == ref && !c->remote) {
            c->remote = p->slot;
            found = true;
        }
    }
    pthread_mutex_unlock(&n->calls_lock);
    return found;
}

static int deliver(void *state, tp_pid from, tp_pid to, const tpi_envelope *e)
{
    tpi_node *n = state;
    tpi_peer *p = tpi_node_peer_at(n, tpi_pid_slot(to));
    tpi_nframe f = {.kind = TPI_NF_MSG,
                    .to = tpi_pid_at_node(to),
                    .tag = e->tag,
                    .ref = e->ref,
                    .status = e->status,
                    .flags = (e->request ? TPI_NFL_REQUEST : 0) |
                             (e->via_link ? TPI_NFL_VIA_LINK : 0),
                    .payload = e->data,
                    .len = e->len};
    if (!p || !tpi_node_pid_out(n, from, &f.from) ||
        (e->request && !tpi_node_pid_out(n, e->reply_to, &f.reply_to)))
        return TP_ENOCONN;
    if (note_call(n, p, e) != 0)
        return TP_ENOMEM; /* could not keep track: refuse it */
    pthread_mutex_lock(&p->lock);
    int rc = p->up ? note_out(n, p, from, to, e) : TP_ENOCONN;
    if (!rc &&
        (rc = tpi_node_send_locked(n, p, &f, tpi_svc_batching(n->rt))) != 0) {
        /* Not sent (the core answers it as undeliverable): keep no
         * relation that never was. */
        if (e->tag == TPI_SIG_LINK)
            relvec_del(&p->links, from, to, 0);
        else if (e->tag == TPI_SIG_MONITOR)
            relvec_del(&p->watching, from, 0, e->ref);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc && e->request)
        tpi_node_forget_call(n, e->reply_to, e->ref);
    return rc; /* 0, TP_ENOCONN, or refused unnumbered: ENOMEM, E2BIG */
}

/* An actor with global names, group memberships or node monitors ended
 * (core hook, on its thread). */
static void ended(void *state, tp_pid pid)
{
    tpi_node *n = state;
    tpi_names_ended(n, pid);
    tpi_groups_ended(n, pid);
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np; i++) {
        tpi_peer *p = n->peers[i];
        pthread_mutex_lock(&p->lock);
        relvec_del(&p->monitors, pid, 0, 0);
        pthread_mutex_unlock(&p->lock);
    }
}

void tpi_node_sweep(tpi_node *n)
{
    pthread_mutex_lock(&n->calls_lock);
    for (size_t i = 0; i < n->calls.n;) {
        uint64_t q, cap;
        if (tpi_svc_mailbox(n->rt, n->calls.v[i].local, &q, &cap) != 0)
            n->calls.v[i] = n->calls.v[--n->calls.n];
        else
            i++;
    }
    pthread_mutex_unlock(&n->calls_lock);
}

void tpi_node_relations(tpi_node *n, uint64_t *relations, uint64_t *calls)
{
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    *relations = 0;
    for (unsigned i = 1; i <= np; i++) {
        tpi_peer *p = n->peers[i];
        pthread_mutex_lock(&p->lock);
        *relations += p->links.n + p->watching.n + p->watched.n + p->monitors.n;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_lock(&n->calls_lock);
    *calls = n->calls.n;
    pthread_mutex_unlock(&n->calls_lock);
}

/* A call timed out at its caller: a remote callee that holds it for good
 * (or a node that drops it) would otherwise keep its entry for the
 * caller's whole life. */
static void call_expired(void *state, tp_pid caller, tp_ref ref)
{
    tpi_node_forget_call(state, caller, ref);
}

const tpi_remote_ops tpi_node_remote_ops = {deliver,        pid_pack,
                                            pid_unpack,     ended,
                                            tpi_node_flush, call_expired};

/* -------------------------------------------------------------- down */

/* Take from v the relations to break: all but those our frames numbered
 * above upto made (p broke with our frames up to upto only). */
static tpi_relvec relvec_take_upto(tpi_relvec *v, uint64_t upto)
{
    tpi_relvec out = relvec_take(v);
    for (size_t i = 0; i < out.n;) {
        if (out.v[i].seq > upto &&
            tpi_relvec_add(v, out.v[i].local, out.v[i].remote, out.v[i].ref) ==
                0) {
            v->v[v->n - 1].seq = out.v[i].seq; /* it stands */
            out.v[i] = out.v[--out.n];
        } else {
            i++; /* (out of memory: broken, as before) */
        }
    }
    return out;
}

/* Every relation with p ends (but those our frames numbered above upto
 * made, UINT64_MAX: none): links and monitors as if its actors had died
 * with reason noconnection. p's lock held, so that no frame of p's taken
 * after this (another thread's, once p is back up) reaches an actor
 * before its exit signal or DOWN. */
static void break_relations(tpi_node *n, tpi_peer *p, uint64_t upto)
{
    tp_runtime *rt = n->rt;
    tpi_relvec links = relvec_take_upto(&p->links, upto);
    tpi_relvec watching = relvec_take_upto(&p->watching, upto);
    tpi_relvec watched = relvec_take(&p->watched);
    for (size_t i = 0; i < links.n; i++)
        tpi_svc_post_reason(rt, links.v[i].remote, links.v[i].local,
                            TPI_SIG_EXIT, noconnection, 0, true);
    for (size_t i = 0; i < watching.n; i++)
        tpi_svc_post_reason(rt, watching.v[i].remote, watching.v[i].local,
                            TP_TAG_DOWN, noconnection, watching.v[i].ref,
                            false);
    for (size_t i = 0; i < watched.n; i++) { /* its watchers are gone */
        tpi_envelope e = {.tag = TPI_SIG_DEMONITOR,
                          .from = watched.v[i].remote,
                          .ref = watched.v[i].ref};
        tpi_svc_post(rt, watched.v[i].local, &e, false);
    }
    tpi_relvec_free(&links);
    tpi_relvec_free(&watching);
    tpi_relvec_free(&watched);
    /* Calls that went to p fail now, not at their timeout. */
    pthread_mutex_lock(&n->calls_lock);
    for (size_t i = 0; i < n->calls.n;) {
        tpi_rel c = n->calls.v[i];
        if (c.remote != p->slot) {
            i++;
            continue;
        }
        n->calls.v[i] = n->calls.v[--n->calls.n];
        tpi_envelope e = {.tag = TP_TAG_REPLY,
                          .ref = c.ref,
                          .status = TP_ENOCONN};
        tpi_svc_post(rt, c.local, &e, false);
    }
    pthread_mutex_unlock(&n->calls_lock);
}

/* NODEDOWN or NODEUP for p to `to`: the payload is p's name. */
static int tell(tpi_node *n, tpi_peer *p, tp_pid to, int32_t tag)
{
    char buf[2 + TP_NODE_NAME_MAX];
    buf[0] = (char)0xd9; /* str8 */
    buf[1] = (char)p->name_len;
    memcpy(buf + 2, p->name, p->name_len);
    tpi_envelope e = {.tag = tag, .data = buf, .len = 2 + p->name_len};
    return tpi_svc_post(n->rt, to, &e, false);
}

/* p's lock held, with the change of p->up: so NODEUP and NODEDOWN reach
 * each watcher in the order of the changes, whatever threads make them. */
static void tell_watchers(tpi_node *n, tpi_peer *p, int32_t tag)
{
    for (size_t i = 0; i < p->monitors.n; i++)
        tell(n, p, p->monitors.v[i].local, tag);
}

void tpi_node_peer_down(tpi_node *n, tpi_peer *p, bool gone)
{
    pthread_mutex_lock(&p->lock);
    bool was_up = p->up;
    p->up = false;
    p->names_sweep = true;
    tpi_node_drop_out(n, p); /* numbered for relations now broken */
    if (gone)                /* a new incarnation numbers its frames from 1 */
        p->seq_in = p->seq_out = 0;
    else if (was_up) /* it may come back as it was: tell it we broke */
        p->need_break = true;
    if (was_up)
        tell_watchers(n, p, TP_TAG_NODEDOWN);
    break_relations(n, p, UINT64_MAX);
    pthread_mutex_unlock(&p->lock);
    tpi_names_poke(n); /* its global names are freed */
}

/* Send p a BREAK (p's lock held): we broke with its frames up to upto. */
static void send_break(tpi_node *n, tpi_peer *p, uint64_t upto)
{
    tpi_nframe f = {.kind = TPI_NF_BREAK, .to = 0, .ref = upto + 1};
    p->need_break = false;
    (void)tpi_node_send_locked(n, p, &f, false);
}

void tpi_node_peer_heard(tpi_node *n, tpi_peer *p)
{
    uint64_t now = tpi_now_ns();
    pthread_mutex_lock(&p->lock);
    p->last_hb_ns = now;
    bool was_up = p->up;
    p->up = true;
    if (p->need_break) /* the frames taken so far; later ones stand */
        send_break(n, p, p->seq_in);
    if (!was_up)
        tell_watchers(n, p, TP_TAG_NODEUP);
    pthread_mutex_unlock(&p->lock);
}

/* --------------------------------------------------------------- in */

/* The relation an incoming signal from remote `from` to local `to` makes
 * or ends (p's lock held); false to drop it (out of memory: the sender's
 * link is answered as failed instead). */
static bool note_in(tpi_peer *p, tp_pid from, tp_pid to, const tpi_nframe *f)
{
    switch (f->tag) {
    case TPI_SIG_LINK: return tpi_relvec_add(&p->links, to, from, 0) == 0;
    case TPI_SIG_UNLINK: relvec_del(&p->links, to, from, 0); return true;
    case TPI_SIG_EXIT:
        if (f->flags & TPI_NFL_VIA_LINK)
            relvec_del(&p->links, to, from, 0);
        return true;
    case TPI_SIG_MONITOR:
        return tpi_relvec_add(&p->watched, to, from, f->ref) == 0;
    case TPI_SIG_DEMONITOR: relvec_del(&p->watched, to, 0, f->ref); return true;
    case TP_TAG_DOWN: relvec_del(&p->watching, to, 0, f->ref); return true;
    default: return true;
    }
}

/* Tags a frame may carry: user messages, replies, DOWN, and the link and
 * monitor signals; never START, TIMEOUT or a trapped EXIT. */
static bool tag_ok(int64_t tag)
{
    return tag >= 0 || tag == TP_TAG_REPLY || tag == TP_TAG_DOWN ||
           (tag <= TPI_SIG_LINK && tag >= TPI_SIG_DEMONITOR);
}

/* Where f stands in p's sequence (p's lock held): true to take it. */
static bool in_sequence(tpi_node *n, tpi_peer *p, const tpi_nframe *f)
{
    if (p->seq_in == 0 && f->seq != 1) {
        /* It numbered frames for an earlier incarnation of us: they are
         * not for our actors. Count from here, and have it break. */
        p->seq_in = f->seq;
        send_break(n, p, f->seq);
        return false;
    }
    bool gap = p->seq_in != 0 && f->seq != p->seq_in + 1;
    p->seq_in = f->seq;
    if (gap && f->kind != TPI_NF_BREAK)
        p->need_break = true; /* lost frames: both sides break */
    return true;
}

void tpi_node_leave(tpi_node *n)
{
    unsigned np = atomic_load_explicit(&n->npeers, memory_order_acquire);
    for (unsigned i = 1; i <= np; i++) {
        tpi_peer *p = tpi_node_peer_at(n, i);
        tpi_nframe f = {.kind = TPI_NF_LEAVE};
        pthread_mutex_lock(&p->lock);
        if (p->up)
            (void)tpi_node_send_locked(n, p, &f, false);
        pthread_mutex_unlock(&p->lock);
    }
}

void tpi_node_frame_in(tpi_node *n, tpi_peer *p, const tpi_nframe *f)
{
    pthread_mutex_lock(&p->lock);
    bool take = in_sequence(n, p, f);
    bool broke = p->need_break; /* a gap, or we broke while it was down */
    if (broke) /* with what came before f (f and later frames stand) */
        send_break(n, p, f->seq - 1);
    if (broke) {
        break_relations(n, p, UINT64_MAX);
    } else if (take && f->kind == TPI_NF_BREAK) { /* ref 0: an older one */
        uint64_t upto = f->ref ? f->ref - 1 : UINT64_MAX;
        break_relations(n, p, upto);
        /* Relations our later frames made stand, but those frames may be
         * lost (p broke when it heard us, before taking any): a numbered
         * frame now shows p any gap, and p breaks again up to it. */
        if (upto < p->seq_out) {
            tpi_nframe sync = {.kind = TPI_NF_CALLED, .to = 0, .ref = 0};
            (void)tpi_node_send_locked(n, p, &sync, false);
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (!take)
        return;
    if (f->kind == TPI_NF_LEAVE) { /* after everything it sent us */
        tpi_node_peer_down(n, p, true);
        return;
    }
    tpi_node_peer_heard(n, p);
    if (f->kind == TPI_NF_BREAK)
        return;
    if (f->kind == TPI_NF_CALLED) { /* p serves a group call of ours */
        if (f->to && !claim_call(n, p, f->to, f->ref)) /* 0: a sync */
            atomic_fetch_add_explicit(&n->dropped, 1, memory_order_relaxed);
        return;
    }
    tp_pid from = tpi_node_pid_in(n, &f->from);
    tp_pid reply_to = tpi_node_pid_in(n, &f->reply_to);
    bool request = (f->flags & TPI_NFL_REQUEST) != 0;
    /* A sender is an actor of the node that sent the frame (its subject
     * says which, and permissions keep it honest): one naming another
     * node's actor cannot be vouched for. A signal from it is forged and
     * dropped; a message arrives without a sender (tp_forward passes a
     * third node's messages on: their reply obligation, which names the
     * caller, stays). */
    bool signal = f->tag < 0 && f->tag != TP_TAG_REPLY;
    if (f->from.node_len != p->name_len ||
        memcmp(f->from.node, p->name, p->name_len) != 0)
        from = TP_PID_NONE;
    if (!tag_ok(f->tag) || (signal && from == TP_PID_NONE) ||
        (request && (f->tag < 0 || reply_to == TP_PID_NONE))) {
        atomic_fetch_add_explicit(&n->dropped, 1, memory_order_relaxed);
        return;
    }
    if (f->tag < 0) {
        pthread_mutex_lock(&p->lock);
        bool ok = note_in(p, from, f->to, f);
        pthread_mutex_unlock(&p->lock);
        if (!ok) { /* keep no link we could not break later */
            if (f->tag == TPI_SIG_LINK)
                tpi_svc_post_reason(n->rt, f->to, from, TPI_SIG_EXIT,
                                    TP_REASON_ERROR(TP_ENOMEM, "link failed"),
                                    0, true);
            return;
        }
    }
    if (f->tag == TP_TAG_REPLY)
        tpi_node_forget_call(n, f->to, f->ref);
    tpi_envelope e = {.tag = (int32_t)f->tag,
                      .from = from,
                      .reply_to = reply_to,
                      .ref = f->ref,
                      .status = (int32_t)f->status,
                      .request = request,
                      .via_link = (f->flags & TPI_NFL_VIA_LINK) != 0,
                      .data = f->payload,
                      .len = f->len};
    if (tpi_svc_post(n->rt, f->to, &e, true) != 0)
        atomic_fetch_add_explicit(&n->dropped, 1, memory_order_relaxed);
}

int tp_node_pid(tp_runtime *rt, const char *node, uint64_t id, tp_pid *out)
{
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n)
        return TP_ENOENT;
    if (!node || !out || id == TP_PID_NONE || !tpi_pid_exportable(id) ||
        !tpi_node_name_ok(node, strlen(node)))
        return TP_EINVAL;
    tpi_wpid w = {id, node, strlen(node)};
    (void)tpi_node_peer(n, node, w.node_len, true); /* named by our code */
    *out = tpi_node_pid_in(n, &w);
    return *out == TP_PID_NONE ? TP_EINVAL : 0;
}

/* ---------------------------------------------------- monitor_node */

int tp_monitor_node(tp_ctx *ctx, const char *node, bool on)
{
    tp_runtime *rt = tp_ctx_runtime(ctx);
    tpi_node *n = rt ? tpi_node_of(rt) : NULL;
    if (!n)
        return TP_ESTATE;
    if (!node || !tpi_node_name_ok(node, strlen(node)))
        return TP_EINVAL;
    tpi_peer *p = tpi_node_peer(n, node, strlen(node), true);
    if (!p)
        return TP_EINVAL; /* our own name, or no room */
    tp_pid self = tp_self(ctx);
    int rc = on ? tpi_svc_watch_end(ctx) : 0; /* forgotten as it ends */
    if (rc)
        return rc;
    pthread_mutex_lock(&p->lock);
    relvec_del(&p->monitors, self, 0, 0);
    rc = on ? tpi_relvec_add(&p->monitors, self, 0, 0) : 0;
    bool up = p->up;
    pthread_mutex_unlock(&p->lock);
    if (!rc && on && up) /* it is up now: say so at once */
        rc = tell(n, p, self, TP_TAG_NODEUP);
    return rc;
}
