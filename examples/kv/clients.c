/*
 * The client registry: one entry per connection actor, for CLIENT
 * LIST/INFO/KILL and ids. Connection actors run on every scheduler thread,
 * so the list is under a mutex, taken when a client comes and goes and
 * for CLIENT LIST/KILL/SETNAME; what changes at each command (idle time,
 * last command, buffer sizes) is in relaxed atomics, read only for
 * display (a slightly stale value is fine).
 */
#include "conn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kv_client {
    struct kv_client *prev, *next;
    uint64_t id;
    tp_pid pid;
    int64_t since_ms;
    char addr[64];
    char *name;  /* under the lock; NULL: none */
    bool killed; /* under the lock: told to end, no longer listed */
    _Atomic int64_t last_ms;
    _Atomic(const char *) cmd; /* a static name, NULL before any */
    _Atomic size_t qbuf, omem, tot;
    _Atomic unsigned sub, psub;
} kv_client;

/* One server per process: the registry is the process's. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static kv_client *all;
static uint64_t next_id = 1;

kv_client *kv_client_add(tp_ctx *ctx, kv_conn *c)
{
    kv_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    cl->pid = tp_self(ctx);
    cl->since_ms = kv_now_ms();
    atomic_store_explicit(&cl->last_ms, cl->since_ms, memory_order_relaxed);
    if (tp_conn_peer(ctx, cl->addr, sizeof cl->addr) != 0)
        snprintf(cl->addr, sizeof cl->addr, "?");
    pthread_mutex_lock(&lock);
    cl->id = next_id++;
    cl->next = all;
    if (all)
        all->prev = cl;
    all = cl;
    pthread_mutex_unlock(&lock);
    return cl;
}

void kv_client_del(kv_client *cl)
{
    if (!cl)
        return;
    pthread_mutex_lock(&lock);
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        all = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    pthread_mutex_unlock(&lock);
    free(cl->name);
    free(cl);
}

uint64_t kv_client_id(const kv_client *cl) { return cl->id; }
const char *kv_client_addr(const kv_client *cl) { return cl->addr; }

void kv_client_touch(kv_conn *c)
{
    kv_client *cl = c->info;
    if (!cl)
        return;
    /* Relaxed: display values, no ordering with anything else. */
    atomic_store_explicit(&cl->last_ms, kv_now_ms(), memory_order_relaxed);
    atomic_store_explicit(&cl->cmd, c->last_cmd, memory_order_relaxed);
    atomic_store_explicit(&cl->qbuf, c->ib.n, memory_order_relaxed);
    atomic_store_explicit(&cl->omem, c->out.n - c->out_off + c->held,
                          memory_order_relaxed);
    atomic_store_explicit(&cl->tot, c->mem, memory_order_relaxed);
    atomic_store_explicit(&cl->sub, (unsigned)kv_pubsub_channels(c),
                          memory_order_relaxed);
    atomic_store_explicit(&cl->psub,
                          (unsigned)(kv_pubsub_count(c) -
                                     kv_pubsub_channels(c)),
                          memory_order_relaxed);
}

/* One CLIENT LIST line (Redis's fields, those troupe-kv has). Under the
 * lock. */
static void describe(kv_buf *b, const kv_client *cl, const kv_server *srv,
                     int64_t now)
{
    const char *cmd = atomic_load_explicit(&cl->cmd, memory_order_relaxed);
    kv_buf_fmt(
        b,
        "id=%llu addr=%s laddr=%s:%u fd=-1 name=%s age=%lld idle=%lld "
        "flags=%s db=0 sub=%u psub=%u ssub=0 multi=-1 qbuf=%zu qbuf-free=0 "
        "argv-mem=0 multi-mem=0 obl=0 oll=0 omem=%zu tot-mem=%zu events=r "
        "cmd=%s user=default redir=-1 resp=2\n",
        (unsigned long long)cl->id, cl->addr, srv->cfg.host,
        (unsigned)srv->bound_port, cl->name ? cl->name : "",
        (long long)((now - cl->since_ms) / 1000),
        (long long)((now -
                     atomic_load_explicit(&cl->last_ms, memory_order_relaxed)) /
                    1000),
        atomic_load_explicit(&cl->sub, memory_order_relaxed) ||
                atomic_load_explicit(&cl->psub, memory_order_relaxed)
            ? "P"
            : "N",
        atomic_load_explicit(&cl->sub, memory_order_relaxed),
        atomic_load_explicit(&cl->psub, memory_order_relaxed),
        atomic_load_explicit(&cl->qbuf, memory_order_relaxed),
        atomic_load_explicit(&cl->omem, memory_order_relaxed),
        atomic_load_explicit(&cl->tot, memory_order_relaxed),
        cmd ? cmd : "NULL");
}

static void client_list(kv_conn *c, bool only_me)
{
    kv_buf b = {0};
    int64_t now = kv_now_ms();
    kv_client_touch(c);
    pthread_mutex_lock(&lock);
    for (kv_client *cl = only_me ? c->info : all; cl;
         cl = only_me ? NULL : cl->next)
        if (!cl->killed)
            describe(&b, cl, c->srv, now);
    pthread_mutex_unlock(&lock);
    kv_reply_bulk(c, b.p ? b.p : "", b.n);
    kv_buf_free(&b);
}

/* CLIENT KILL ID id | addr: the client's actor is told to end. */
static void client_kill(tp_ctx *ctx, kv_conn *c)
{
    bool by_id = c->argc == 4 && kv_word_is(&c->argv[2], "id");
    int64_t id = 0;
    if (c->argc != 3 && !by_id) {
        KV_REPLY_LIT(c, "-ERR syntax error\r\n");
        return;
    }
    if (by_id && (!kv_parse_i64(c->argv[3].p, c->argv[3].n, &id) || id <= 0)) {
        KV_REPLY_LIT(c, "-ERR client-id should be greater than 0\r\n");
        return;
    }
    const kv_arg *addr = &c->argv[2];
    int64_t killed = 0;
    pthread_mutex_lock(&lock);
    for (kv_client *cl = all; cl; cl = cl->next) {
        bool match = by_id ? cl->id == (uint64_t)id
                           : strlen(cl->addr) == addr->n &&
                                 !memcmp(cl->addr, addr->p, addr->n);
        /* Gone for every later command at once, as in Redis, though its
         * actor ends (and leaves the list) a moment later. */
        if (match && !cl->killed &&
            tp_send(ctx, cl->pid, KV_TAG_KILL, NULL, 0) == 0) {
            cl->killed = true;
            killed++;
        }
    }
    pthread_mutex_unlock(&lock);
    if (by_id)
        kv_reply_int(c, killed);
    else if (killed)
        KV_REPLY_LIT(c, "+OK\r\n");
    else
        KV_REPLY_LIT(c, "-ERR No such client\r\n");
}

void kv_client_rename(kv_conn *c, char *name)
{
    /* in the client's memory, as Redis counts it */
    c->name_bytes = c->info && name ? strlen(name) : 0;
    pthread_mutex_lock(&lock);
    char *old = c->info ? c->info->name : name;
    if (c->info)
        c->info->name = name;
    pthread_mutex_unlock(&lock);
    free(old);
}

static void client_setname(kv_conn *c)
{
    const kv_arg *a = &c->argv[2];
    for (size_t i = 0; i < a->n; i++)
        if (a->p[i] < '!' || a->p[i] > '~') {
            KV_REPLY_LIT(c, "-ERR Client names cannot contain spaces, "
                            "newlines or special characters.\r\n");
            return;
        }
    char *name = a->n ? strndup(a->p, a->n) : NULL;
    if (a->n && !name) {
        c->oom = true;
        return;
    }
    kv_client_rename(c, name);
    KV_REPLY_LIT(c, "+OK\r\n");
}

static void client_getname(kv_conn *c)
{
    kv_buf *b = kv_reply_buf(c);
    pthread_mutex_lock(&lock);
    if (c->info && c->info->name)
        kv_buf_bulk(b, c->info->name, strlen(c->info->name));
    else
        kv_buf_str(b, "$-1\r\n");
    pthread_mutex_unlock(&lock);
}

void kv_cmd_client(tp_ctx *ctx, kv_conn *c)
{
    static const struct {
        const char *name, *full;
        int arity;
    } subs[] = {{"list", "client|list", -2},
                {"info", "client|info", 2},
                {"id", "client|id", 2},
                {"setname", "client|setname", 3},
                {"getname", "client|getname", 2},
                {"kill", "client|kill", -3}};
    const kv_arg *sub = &c->argv[1];
    size_t k = 0;
    while (k < sizeof subs / sizeof *subs && !kv_word_is(sub, subs[k].name))
        k++;
    if (k == sizeof subs / sizeof *subs) {
        kv_reply_err(c, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.",
                     (int)(sub->n < 128 ? sub->n : 128), sub->p);
        return;
    }
    int ar = subs[k].arity;
    c->last_cmd = subs[k].full;
    if ((ar > 0 && c->argc != (size_t)ar) ||
        (ar < 0 && c->argc < (size_t)-ar)) {
        kv_reply_err(c, "ERR wrong number of arguments for '%s' command",
                     subs[k].full);
        return;
    }
    switch (k) {
    case 0: client_list(c, false); break;
    case 1: client_list(c, true); break;
    case 2: kv_reply_int(c, c->info ? (int64_t)c->info->id : 0); break;
    case 3: client_setname(c); break;
    case 4: client_getname(c); break;
    default: client_kill(ctx, c); break;
    }
}
