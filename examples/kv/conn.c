/*
 * A connection actor: one per client (processing inbound sockets).
 *
 * Every TP_NET_DATA is appended to what is left of the previous one and
 * parsed as RESP2 (multibulk or inline). Each complete command gets a
 * reply slot, numbered in arrival order. Commands answered here (PING,
 * AUTH, errors...) fill their slot at once; key commands become operations
 * in one batch per shard (a command over several keys, like MGET or DEL,
 * becomes one operation per key); admin commands go to the coordinator.
 * When the batches' replies come back, slots are completed and every
 * complete slot at the head is written out, so replies leave in request
 * order whatever order the shards answer in (pipelining).
 *
 * Bad input (malformed RESP, a length out of range, a request over
 * --max-request) gets one "-ERR Protocol error" and the connection is
 * closed; nothing is ever allocated from a length before the bytes it
 * announces have arrived.
 */
#include "kv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_MULTIBULK (1024 * 1024)
#define MAX_INLINE (64 * 1024)
#define MAX_HEADER 32        /* "*<n>\r\n" or "$<n>\r\n" */
#define KEEP_BUF (64 * 1024) /* slot buffers above this are freed after use */

enum { K_LOCAL, K_ONE, K_SUM, K_OK, K_ARRAY, K_INFO };

typedef struct kv_part {
    size_t off, len;
} kv_part;

typedef struct kv_slot {
    uint8_t kind;
    bool close_after, has_err;
    uint32_t remaining, nparts, partcap;
    int64_t sum;
    kv_buf buf;
    kv_part *parts;
} kv_slot;

typedef struct kv_arg {
    const char *p;
    size_t n;
} kv_arg;

typedef struct kv_conn {
    kv_server *srv;
    kv_buf ib; /* unparsed input */
    kv_arg *argv;
    size_t argc, argcap;
    kv_slot *ring; /* reply slots, seq & (cap - 1) */
    uint32_t cap, head, tail;
    kv_buf batch[KV_MAX_SHARDS];
    kv_buf out;
    bool authed, closing, peer_closed, exited;
    char errbuf[64];
} kv_conn;

typedef struct kv_cmd {
    const char *name;
    int arity; /* > 0 exact, < 0 at least -arity */
    void (*fn)(tp_ctx *, kv_conn *);
    bool noauth;
} kv_cmd;

void *kv_conn_new(void *arg)
{
    kv_server *srv = arg;
    kv_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->authed = srv->cfg.requirepass == NULL;
    atomic_fetch_add_explicit(&srv->clients, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->conns_total, 1, memory_order_relaxed);
    return c;
}

void kv_conn_free(void *state)
{
    kv_conn *c = state;
    atomic_fetch_sub_explicit(&c->srv->clients, 1, memory_order_relaxed);
    kv_buf_free(&c->ib);
    kv_buf_free(&c->out);
    for (unsigned i = 0; i < KV_MAX_SHARDS; i++)
        kv_buf_free(&c->batch[i]);
    for (uint32_t i = 0; i < c->cap; i++) {
        kv_buf_free(&c->ring[i].buf);
        free(c->ring[i].parts);
    }
    free(c->ring);
    free(c->argv);
    free(c);
}

/* ------------------------------------------------------------ reply slots */

static kv_slot *slot_at(kv_conn *c, uint32_t seq)
{
    return &c->ring[seq & (c->cap - 1)];
}

static kv_slot *slot_new(kv_conn *c, uint8_t kind, uint32_t remaining)
{
    if (c->tail - c->head == c->cap) {
        uint32_t ncap = c->cap ? c->cap * 2 : 16;
        kv_slot *nr = calloc(ncap, sizeof *nr);
        if (!nr)
            nr = kv_xrealloc(NULL, 0); /* aborts: out of memory */
        for (uint32_t s = c->head; s != c->tail; s++)
            nr[s & (ncap - 1)] = c->ring[s & (c->cap - 1)];
        free(c->ring);
        c->ring = nr;
        c->cap = ncap;
    }
    kv_slot *s = slot_at(c, c->tail++);
    s->kind = kind;
    s->close_after = s->has_err = false;
    s->remaining = remaining;
    s->nparts = 0;
    s->sum = 0;
    s->buf.n = 0;
    return s;
}

static uint32_t last_seq(kv_conn *c) { return c->tail - 1; }

static void reply(kv_conn *c, const char *p, size_t n)
{
    /* Nothing pending before it: straight to the output. */
    kv_buf *b = c->head == c->tail ? &c->out : &slot_new(c, K_LOCAL, 0)->buf;
    kv_buf_add(b, p, n);
}
#define REPLY_LIT(c, s) reply(c, s, sizeof s - 1)

static void reply_err(kv_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply_err(kv_conn *c, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    tmp[0] = '-';
    int n = vsnprintf(tmp + 1, sizeof tmp - 3, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof tmp - 4)
        n = sizeof tmp - 4;
    memcpy(tmp + 1 + n, "\r\n", 2);
    reply(c, tmp, (size_t)n + 3);
}

static void reply_bulk(kv_conn *c, const char *p, size_t n)
{
    kv_buf *b = c->head == c->tail ? &c->out : &slot_new(c, K_LOCAL, 0)->buf;
    kv_buf_bulk(b, p, n);
}

/* ----------------------------------------------------------- operations */

static void op_to(kv_conn *c, unsigned sh, uint8_t opc, uint8_t flags,
                  uint32_t pos, int64_t num, const kv_arg *key,
                  const kv_arg *val)
{
    kv_buf *b = &c->batch[sh];
    if (b->n == 0)
        kv_bin_start(b);
    kv_ophdr h = {.op = opc,
                  .flags = flags,
                  .nargs = key ? (val ? 2u : 1u) : 0u,
                  .seq = last_seq(c),
                  .pos = pos,
                  .num = num};
    kv_buf_reserve(b, sizeof h + 8 + (key ? key->n : 0) + (val ? val->n : 0));
    memcpy(b->p + b->n, &h, sizeof h);
    b->n += sizeof h;
    const kv_arg *args[2] = {key, val};
    for (uint32_t i = 0; i < h.nargs; i++) {
        kv_put32(b->p + b->n, (uint32_t)args[i]->n);
        memcpy(b->p + b->n + 4, args[i]->p, args[i]->n);
        b->n += 4 + args[i]->n;
    }
}

static void op_key(kv_conn *c, uint8_t opc, uint8_t flags, uint32_t pos,
                   int64_t num, const kv_arg *key, const kv_arg *val)
{
    op_to(c, kv_shard_of(c->srv, key->p, key->n), opc, flags, pos, num, key,
          val);
}

static void op_all(kv_conn *c, uint8_t kind, uint8_t opc)
{
    slot_new(c, kind, c->srv->nshards);
    for (unsigned i = 0; i < c->srv->nshards; i++)
        op_to(c, i, opc, 0, 0, 0, NULL, NULL);
}

static void send_batches(tp_ctx *ctx, kv_conn *c)
{
    for (unsigned i = 0; i < c->srv->nshards; i++) {
        kv_buf *b = &c->batch[i];
        if (!b->n)
            continue;
        kv_bin_finish(b);
        /* The buffer moves into the message (no copy). */
        tp_send_move(ctx, kv_shard_pid(c->srv, i), KV_TAG_BATCH, b->p, b->n);
        b->p = NULL;
        b->n = b->cap = 0;
    }
}

/* -------------------------------------------------------------- commands */

static bool arg_is(const kv_arg *a, const char *s)
{
    size_t n = strlen(s);
    return a->n == n && strncasecmp(a->p, s, n) == 0;
}

static bool parse_int_arg(kv_conn *c, const kv_arg *a, int64_t *v)
{
    if (kv_parse_i64(a->p, a->n, v))
        return true;
    REPLY_LIT(c, "-ERR value is not an integer or out of range\r\n");
    return false;
}

/* now + amount * unit (ms), or false (with the reply) on overflow. */
static bool expire_at(kv_conn *c, int64_t amount, int64_t unit, const char *cmd,
                      int64_t *at)
{
    int64_t now = kv_now_ms();
    if (amount > (INT64_MAX - now) / unit || amount < -(INT64_MAX / unit)) {
        reply_err(c, "ERR invalid expire time in '%s' command", cmd);
        return false;
    }
    *at = now + amount * unit;
    return true;
}

static void cmd_ping(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc > 2)
        reply_err(c, "ERR wrong number of arguments for 'ping' command");
    else if (c->argc == 2)
        reply_bulk(c, c->argv[1].p, c->argv[1].n);
    else
        REPLY_LIT(c, "+PONG\r\n");
}

static void cmd_echo(tp_ctx *ctx, kv_conn *c)
{
    reply_bulk(c, c->argv[1].p, c->argv[1].n);
}

static void cmd_quit(tp_ctx *ctx, kv_conn *c)
{
    kv_slot *s = slot_new(c, K_LOCAL, 0);
    kv_buf_add(&s->buf, "+OK\r\n", 5);
    s->close_after = true;
    c->closing = true;
}

static void cmd_auth(tp_ctx *ctx, kv_conn *c)
{
    const char *pass = c->srv->cfg.requirepass;
    if (c->argc > 3) {
        REPLY_LIT(c, "-ERR syntax error\r\n");
        return;
    }
    if (!pass) {
        REPLY_LIT(c, "-ERR AUTH <password> called without any password "
                     "configured for the default user. Are you sure your "
                     "configuration is correct?\r\n");
        return;
    }
    const kv_arg *user = c->argc == 3 ? &c->argv[1] : NULL;
    const kv_arg *a = &c->argv[c->argc - 1];
    size_t pn = strlen(pass);
    /* Compare every byte whatever the length, so timing tells nothing. */
    unsigned char diff = (unsigned char)(a->n != pn);
    for (size_t i = 0; i < pn; i++)
        diff |= (unsigned char)(pass[i] ^ (i < a->n ? a->p[i] : 0));
    if ((user && !arg_is(user, "default")) || diff) {
        REPLY_LIT(c, "-WRONGPASS invalid username-password pair or user is "
                     "disabled.\r\n");
        return;
    }
    c->authed = true;
    REPLY_LIT(c, "+OK\r\n");
}

static void cmd_command(tp_ctx *ctx, kv_conn *c) { REPLY_LIT(c, "*0\r\n"); }

/* CONFIG GET <param>: enough for redis-benchmark and redis-cli. */
static void cmd_config(tp_ctx *ctx, kv_conn *c)
{
    if (!arg_is(&c->argv[1], "get") || c->argc != 3) {
        REPLY_LIT(c, "-ERR CONFIG subcommand not supported by troupe-kv\r\n");
        return;
    }
    kv_buf *b = c->head == c->tail ? &c->out : &slot_new(c, K_LOCAL, 0)->buf;
    const kv_arg *p = &c->argv[2];
    kv_buf_str(b, "*2\r\n");
    kv_buf_bulk(b, p->p, p->n);
    if (arg_is(p, "appendonly"))
        kv_buf_bulk(b, "no", 2);
    else
        kv_buf_bulk(b, "", 0);
}

static void cmd_select(tp_ctx *ctx, kv_conn *c)
{
    if (arg_is(&c->argv[1], "0"))
        REPLY_LIT(c, "+OK\r\n");
    else
        REPLY_LIT(c, "-ERR DB index is out of range\r\n");
}

static void cmd_client(tp_ctx *ctx, kv_conn *c) { REPLY_LIT(c, "+OK\r\n"); }

static void cmd_info(tp_ctx *ctx, kv_conn *c) { op_all(c, K_INFO, OP_DBSIZE); }
static void cmd_dbsize(tp_ctx *ctx, kv_conn *c) { op_all(c, K_SUM, OP_DBSIZE); }
static void cmd_flushall(tp_ctx *ctx, kv_conn *c)
{
    op_all(c, K_OK, OP_FLUSHALL);
}

static void cmd_get(tp_ctx *ctx, kv_conn *c)
{
    slot_new(c, K_ONE, 1);
    op_key(c, OP_GET, 0, 0, 0, &c->argv[1], NULL);
}

static void cmd_set(tp_ctx *ctx, kv_conn *c)
{
    uint8_t flags = 0;
    int64_t at = 0;
    bool have_exp = false;
    for (size_t i = 3; i < c->argc; i++) {
        const kv_arg *o = &c->argv[i];
        if (arg_is(o, "nx") && !(flags & F_XX)) {
            flags |= F_NX;
        } else if (arg_is(o, "xx") && !(flags & F_NX)) {
            flags |= F_XX;
        } else if ((arg_is(o, "ex") || arg_is(o, "px")) && !have_exp &&
                   i + 1 < c->argc) {
            int64_t v;
            if (!parse_int_arg(c, &c->argv[++i], &v))
                return;
            if (v <= 0) {
                REPLY_LIT(c, "-ERR invalid expire time in 'set' command\r\n");
                return;
            }
            if (!expire_at(c, v, arg_is(o, "ex") ? 1000 : 1, "set", &at))
                return;
            have_exp = true;
        } else {
            REPLY_LIT(c, "-ERR syntax error\r\n");
            return;
        }
    }
    slot_new(c, K_ONE, 1);
    op_key(c, OP_SET, flags, 0, at, &c->argv[1], &c->argv[2]);
}

static void incr_by(kv_conn *c, int64_t by)
{
    slot_new(c, K_ONE, 1);
    op_key(c, OP_INCRBY, 0, 0, by, &c->argv[1], NULL);
}

static void cmd_incr(tp_ctx *ctx, kv_conn *c) { incr_by(c, 1); }
static void cmd_decr(tp_ctx *ctx, kv_conn *c) { incr_by(c, -1); }

static void cmd_incrby(tp_ctx *ctx, kv_conn *c)
{
    int64_t v;
    if (parse_int_arg(c, &c->argv[2], &v))
        incr_by(c, v);
}

static void cmd_decrby(tp_ctx *ctx, kv_conn *c)
{
    int64_t v;
    if (!parse_int_arg(c, &c->argv[2], &v))
        return;
    if (v == INT64_MIN)
        REPLY_LIT(c, "-ERR decrement would overflow\r\n");
    else
        incr_by(c, -v);
}

static void per_key(kv_conn *c, uint8_t kind, uint8_t opc)
{
    uint32_t n = (uint32_t)(c->argc - 1);
    kv_slot *s = slot_new(c, kind, n);
    if (kind == K_ARRAY) {
        if (s->partcap < n) {
            s->parts = kv_xrealloc(s->parts, n * sizeof *s->parts);
            s->partcap = n;
        }
        s->nparts = n;
    }
    for (uint32_t i = 0; i < n; i++)
        op_key(c, opc, 0, i, 0, &c->argv[i + 1], NULL);
}

static void cmd_del(tp_ctx *ctx, kv_conn *c) { per_key(c, K_SUM, OP_DEL); }
static void cmd_exists(tp_ctx *ctx, kv_conn *c)
{
    per_key(c, K_SUM, OP_EXISTS);
}
static void cmd_mget(tp_ctx *ctx, kv_conn *c) { per_key(c, K_ARRAY, OP_GET); }

static void cmd_mset(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc % 2 == 0) {
        REPLY_LIT(c, "-ERR wrong number of arguments for 'mset' command\r\n");
        return;
    }
    uint32_t n = (uint32_t)(c->argc - 1) / 2;
    slot_new(c, K_OK, n);
    for (uint32_t i = 0; i < n; i++)
        op_key(c, OP_SET, 0, i, 0, &c->argv[1 + 2 * i], &c->argv[2 + 2 * i]);
}

static void expire_cmd(kv_conn *c, int64_t unit, const char *name)
{
    int64_t v, at;
    if (!parse_int_arg(c, &c->argv[2], &v) || !expire_at(c, v, unit, name, &at))
        return;
    slot_new(c, K_ONE, 1);
    op_key(c, OP_EXPIRE, 0, 0, at, &c->argv[1], NULL);
}

static void cmd_expire(tp_ctx *ctx, kv_conn *c)
{
    expire_cmd(c, 1000, "expire");
}
static void cmd_pexpire(tp_ctx *ctx, kv_conn *c)
{
    expire_cmd(c, 1, "pexpire");
}

static void cmd_ttl(tp_ctx *ctx, kv_conn *c)
{
    slot_new(c, K_ONE, 1);
    op_key(c, OP_TTL, 0, 0, 0, &c->argv[1], NULL);
}

static void cmd_pttl(tp_ctx *ctx, kv_conn *c)
{
    slot_new(c, K_ONE, 1);
    op_key(c, OP_TTL, F_MS, 0, 0, &c->argv[1], NULL);
}

static void admin(tp_ctx *ctx, kv_conn *c, int what, int flag)
{
    slot_new(c, K_ONE, 1);
    if (tp_sendf(ctx, c->srv->coord, KV_TAG_ADMIN, "[u i i]",
                 (uint64_t)last_seq(c), what, flag) != 0) {
        kv_slot *s = slot_at(c, last_seq(c));
        kv_buf_str(&s->buf, "-ERR coordinator unavailable\r\n");
        s->remaining = 0;
    }
}

static void cmd_save(tp_ctx *ctx, kv_conn *c) { admin(ctx, c, ADM_SAVE, 0); }
static void cmd_lastsave(tp_ctx *ctx, kv_conn *c)
{
    kv_buf *b = c->head == c->tail ? &c->out : &slot_new(c, K_LOCAL, 0)->buf;
    kv_buf_int(b, atomic_load(&c->srv->lastsave) / 1000);
}

static void cmd_bgsave(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc > 2 && !arg_is(&c->argv[1], "schedule"))
        REPLY_LIT(c, "-ERR syntax error\r\n");
    else
        admin(ctx, c, ADM_BGSAVE, 0);
}

static void cmd_shutdown(tp_ctx *ctx, kv_conn *c)
{
    int flag = SHUT_DEFAULT;
    for (size_t i = 1; i < c->argc; i++) {
        if (arg_is(&c->argv[i], "nosave"))
            flag = SHUT_NOSAVE;
        else if (arg_is(&c->argv[i], "save"))
            flag = SHUT_SAVE;
        else {
            REPLY_LIT(c, "-ERR syntax error\r\n");
            return;
        }
    }
    admin(ctx, c, ADM_SHUTDOWN, flag);
}

static const kv_cmd CMDS[] = {
    {"get", 2, cmd_get, false},           {"set", -3, cmd_set, false},
    {"incr", 2, cmd_incr, false},         {"ping", -1, cmd_ping, false},
    {"mget", -2, cmd_mget, false},        {"mset", -3, cmd_mset, false},
    {"del", -2, cmd_del, false},          {"exists", -2, cmd_exists, false},
    {"incrby", 3, cmd_incrby, false},     {"decr", 2, cmd_decr, false},
    {"decrby", 3, cmd_decrby, false},     {"expire", 3, cmd_expire, false},
    {"pexpire", 3, cmd_pexpire, false},   {"ttl", 2, cmd_ttl, false},
    {"pttl", 2, cmd_pttl, false},         {"echo", 2, cmd_echo, false},
    {"dbsize", 1, cmd_dbsize, false},     {"flushall", -1, cmd_flushall, false},
    {"flushdb", -1, cmd_flushall, false}, {"info", -1, cmd_info, false},
    {"save", 1, cmd_save, false},         {"bgsave", -1, cmd_bgsave, false},
    {"lastsave", 1, cmd_lastsave, false}, {"shutdown", -1, cmd_shutdown, false},
    {"quit", -1, cmd_quit, true},         {"auth", -2, cmd_auth, true},
    {"command", -1, cmd_command, false},  {"config", -2, cmd_config, false},
    {"select", 2, cmd_select, false},     {"client", -2, cmd_client, false},
};

static void exec(tp_ctx *ctx, kv_conn *c)
{
    const kv_arg *name = &c->argv[0];
    const kv_cmd *cmd = NULL;
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
        if (arg_is(name, CMDS[i].name)) {
            cmd = &CMDS[i];
            break;
        }
    if (!cmd) {
        reply_err(c, "ERR unknown command '%.*s', with args beginning with: ",
                  (int)(name->n > 64 ? 64 : name->n), name->p);
        return;
    }
    if (!c->authed && !cmd->noauth) {
        REPLY_LIT(c, "-NOAUTH Authentication required.\r\n");
        return;
    }
    if ((cmd->arity > 0 && c->argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && c->argc < (size_t)-cmd->arity)) {
        reply_err(c, "ERR wrong number of arguments for '%s' command",
                  cmd->name);
        return;
    }
    cmd->fn(ctx, c);
}

/* ------------------------------------------------------------------ RESP */

/* A CRLF-terminated line of at most max bytes at p: 1 (its length in
 * *at), 0 if more bytes are needed, -1 if malformed or too long. */
static int line(const char *p, size_t n, size_t max, size_t *at)
{
    const char *cr = memchr(p, '\r', n < max ? n : max);
    if (!cr)
        return n >= max ? -1 : 0;
    size_t i = (size_t)(cr - p);
    if (i + 1 >= n)
        return 0;
    if (cr[1] != '\n')
        return -1;
    *at = i;
    return 1;
}

static void push_arg(kv_conn *c, const char *p, size_t n)
{
    if (c->argc == c->argcap) {
        c->argcap = c->argcap ? c->argcap * 2 : 16;
        c->argv = kv_xrealloc(c->argv, c->argcap * sizeof *c->argv);
    }
    c->argv[c->argc++] = (kv_arg){p, n};
}

static int parse_inline(kv_conn *c, const char *p, size_t n, size_t *used,
                        const char **err)
{
    const char *nl = memchr(p, '\n', n < MAX_INLINE ? n : MAX_INLINE);
    if (!nl) {
        if (n >= MAX_INLINE) {
            *err = "too big inline request";
            return -1;
        }
        return 0;
    }
    size_t len = (size_t)(nl - p);
    *used = len + 1;
    if (len && p[len - 1] == '\r')
        len--;
    for (size_t i = 0; i < len;) {
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t s = i;
        while (i < len && p[i] != ' ' && p[i] != '\t')
            i++;
        if (i > s)
            push_arg(c, p + s, i - s);
    }
    return 1;
}

/* One command from p: 1 (argv filled, *used bytes), 0 (incomplete), -1
 * (*err says why). Lengths are checked against the limits and against the
 * bytes present before anything is stored. */
static int parse(kv_conn *c, const char *p, size_t n, size_t *used,
                 const char **err)
{
    c->argc = 0;
    if (p[0] != '*')
        return parse_inline(c, p, n, used, err);
    size_t at, max = c->srv->cfg.max_request;
    int64_t cnt, bl;
    int r = line(p, n, MAX_HEADER, &at);
    if (r == 0)
        return 0;
    if (r < 0 || !kv_parse_i64(p + 1, at - 1, &cnt) || cnt > MAX_MULTIBULK) {
        *err = "invalid multibulk length";
        return -1;
    }
    size_t pos = at + 2;
    for (int64_t i = 0; i < cnt; i++) {
        if (pos >= n)
            return 0;
        if (p[pos] != '$') {
            snprintf(c->errbuf, sizeof c->errbuf, "expected '$', got '%c'",
                     p[pos] >= 32 && p[pos] < 127 ? p[pos] : '?');
            *err = c->errbuf;
            return -1;
        }
        r = line(p + pos, n - pos, MAX_HEADER, &at);
        if (r == 0)
            return 0;
        if (r < 0 || !kv_parse_i64(p + pos + 1, at - 1, &bl) || bl < 0 ||
            (uint64_t)bl > max) {
            *err = "invalid bulk length";
            return -1;
        }
        pos += at + 2;
        if ((uint64_t)bl + 2 > max - (pos < max ? pos : max)) {
            *err = "request too large";
            return -1;
        }
        if (n - pos < (size_t)bl + 2)
            return 0;
        if (p[pos + bl] != '\r' || p[pos + bl + 1] != '\n') {
            *err = "bulk not terminated by CRLF";
            return -1;
        }
        push_arg(c, p + pos, (size_t)bl);
        pos += (size_t)bl + 2;
    }
    *used = pos;
    return 1;
}

/* ----------------------------------------------------------------- flush */

static void info(tp_ctx *ctx, kv_conn *c, kv_buf *out, int64_t keys)
{
    kv_server *s = c->srv;
    tp_stats st;
    tp_runtime_stats(tp_ctx_runtime(ctx), &st);
    kv_buf b = {0};
    kv_buf_fmt(&b,
               "# Server\r\nredis_version:7.0.0\r\ntroupe_kv_version:0.1.0\r\n"
               "redis_mode:standalone\r\nprocess_id:%ld\r\ntcp_port:%u\r\n"
               "uptime_in_seconds:%lld\r\n\r\n"
               "# Clients\r\nconnected_clients:%llu\r\nmaxclients:%zu\r\n\r\n"
               "# Persistence\r\nrdb_last_save_time:%lld\r\n\r\n"
               "# Stats\r\ntotal_connections_received:%llu\r\n"
               "total_commands_processed:%llu\r\nrejected_connections:%"
               "llu\r\n\r\n"
               "# Troupe\r\nshards:%u\r\nactors_alive:%llu\r\n"
               "actors_spawned:%llu\r\nactors_exited:%llu\r\n"
               "actor_slots:%llu\r\nmessages_sent:%llu\r\ndead_letters:%llu\r\n"
               "late_replies:%llu\r\ntimers_active:%llu\r\n\r\n"
               "# Keyspace\r\n",
               (long)getpid(), (unsigned)s->bound_port,
               (long long)((kv_now_ms() - s->start_ms) / 1000),
               (unsigned long long)atomic_load(&s->clients), s->cfg.max_clients,
               (long long)(atomic_load(&s->lastsave) / 1000),
               (unsigned long long)atomic_load(&s->conns_total),
               (unsigned long long)atomic_load(&s->commands),
               (unsigned long long)atomic_load(&s->rejected), s->nshards,
               (unsigned long long)st.actors_alive,
               (unsigned long long)st.actors_spawned,
               (unsigned long long)st.actors_exited,
               (unsigned long long)st.slots,
               (unsigned long long)st.messages_sent,
               (unsigned long long)st.dead_letters,
               (unsigned long long)st.late_replies,
               (unsigned long long)st.timers_active);
    if (keys)
        kv_buf_fmt(&b, "db0:keys=%lld,expires=0,avg_ttl=0\r\n",
                   (long long)keys);
    kv_buf_bulk(out, b.p, b.n);
    kv_buf_free(&b);
}

/* Write every complete slot at the head, in order. */
static void flush(tp_ctx *ctx, kv_conn *c)
{
    bool close = false;
    while (c->head != c->tail && !close) {
        kv_slot *s = slot_at(c, c->head);
        if (s->remaining)
            break;
        kv_buf *o = &c->out;
        if (s->has_err || s->kind == K_LOCAL || s->kind == K_ONE) {
            kv_buf_add(o, s->buf.p, s->buf.n);
        } else if (s->kind == K_SUM) {
            kv_buf_int(o, s->sum);
        } else if (s->kind == K_OK) {
            kv_buf_add(o, "+OK\r\n", 5);
        } else if (s->kind == K_INFO) {
            info(ctx, c, o, s->sum);
        } else if (s->kind == K_ARRAY) {
            kv_buf_fmt(o, "*%u\r\n", s->nparts);
            for (uint32_t i = 0; i < s->nparts; i++)
                kv_buf_add(o, s->buf.p + s->parts[i].off, s->parts[i].len);
        }
        close = s->close_after;
        if (s->buf.cap > KEEP_BUF)
            kv_buf_free(&s->buf);
        c->head++;
    }
    /* One write per burst: while shard replies are still due, keep
     * collecting (unless a lot is waiting already). */
    if (c->out.n && (c->head == c->tail || c->out.n >= 16384 || close)) {
        int rc = tp_conn_write(ctx, c->out.p, c->out.n);
        c->out.n = 0;
        if (c->out.cap > KEEP_BUF)
            kv_buf_free(&c->out);
        if (rc)
            close = true; /* cut for the output limit, or gone */
    }
    if (close || (c->peer_closed && c->head == c->tail)) {
        c->closing = c->exited = true;
        tp_exit(ctx, TP_REASON_NORMAL);
    }
}

static void on_replies(tp_ctx *ctx, kv_conn *c, const tp_msg *msg)
{
    const char *p;
    size_t n;
    if (tp_msg_scanf(msg, "y", (const void **)&p, &n) != 0)
        return;
    while (n >= 12) {
        uint32_t seq = kv_get32(p), pos = kv_get32(p + 4),
                 len = kv_get32(p + 8);
        if (len > n - 12)
            break;
        const char *f = p + 12;
        p += 12 + len;
        n -= 12 + len;
        if (seq - c->head >= c->tail - c->head)
            continue; /* not a slot of ours */
        kv_slot *s = slot_at(c, seq);
        if (!s->remaining)
            continue;
        s->remaining--;
        if (s->kind == K_ONE && seq == c->head) {
            kv_buf_add(&c->out, f, len); /* the next reply due: no copy */
            c->head++;
        } else if (s->kind == K_ONE) {
            kv_buf_add(&s->buf, f, len);
        } else if (len && f[0] == '-') {
            if (!s->has_err) {
                s->has_err = true;
                s->buf.n = 0;
                kv_buf_add(&s->buf, f, len);
            }
        } else if (s->kind == K_SUM || s->kind == K_INFO) {
            int64_t v;
            if (len > 3 && f[0] == ':' && kv_parse_i64(f + 1, len - 3, &v))
                s->sum += v;
        } else if (s->kind == K_ARRAY && pos < s->nparts) {
            s->parts[pos] = (kv_part){s->buf.n, len};
            kv_buf_add(&s->buf, f, len);
        }
    }
    flush(ctx, c);
}

static void protocol_error(kv_conn *c, const char *why)
{
    kv_slot *s = slot_new(c, K_LOCAL, 0);
    kv_buf_fmt(&s->buf, "-ERR Protocol error: %s\r\n", why);
    s->close_after = true;
    c->closing = true;
}

static void on_data(tp_ctx *ctx, kv_conn *c, const tp_msg *msg)
{
    const char *d;
    size_t dn;
    if (c->closing || tp_msg_scanf(msg, "y", (const void **)&d, &dn) != 0)
        return;
    const char *p = d;
    size_t n = dn;
    bool buffered = c->ib.n > 0;
    if (buffered) {
        kv_buf_add(&c->ib, d, dn);
        p = c->ib.p;
        n = c->ib.n;
    }
    size_t off = 0;
    uint64_t cmds = 0;
    while (off < n && !c->closing) {
        size_t used = 0;
        const char *err = NULL;
        int r = parse(c, p + off, n - off, &used, &err);
        if (r == 0)
            break;
        if (r < 0) {
            protocol_error(c, err);
            break;
        }
        off += used;
        if (c->argc) {
            exec(ctx, c);
            cmds++;
        }
    }
    atomic_fetch_add_explicit(&c->srv->commands, cmds, memory_order_relaxed);
    size_t left = c->closing ? 0 : n - off;
    if (buffered) {
        memmove(c->ib.p, c->ib.p + off, left);
        c->ib.n = left;
    } else if (left) {
        kv_buf_add(&c->ib, p + off, left);
    }
    if (!c->ib.n && c->ib.cap > KEEP_BUF)
        kv_buf_free(&c->ib);
    send_batches(ctx, c);
    flush(ctx, c);
}

int kv_conn_behavior(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    kv_conn *c = state;
    if (c->exited)
        return TP_HANDLED;
    switch (tp_msg_tag(msg)) {
    case TP_NET_DATA: on_data(ctx, c, msg); break;
    case KV_TAG_REPLIES: on_replies(ctx, c, msg); break;
    case TP_NET_CLOSED: {
        int64_t code = 0;
        tp_msg_int(msg, &code);
        c->peer_closed = true;
        c->closing = true;
        if (code != 0 || c->head == c->tail) {
            c->exited = true;
            tp_exit(ctx, TP_REASON_NORMAL);
        }
        break;
    }
    default: break;
    }
    return TP_HANDLED;
}
