/*
 * Running a parsed command, and the commands the connection answers
 * itself: the keyed ones (commands.c's table, key = args[1]) go whole to
 * the key's shard; commands over several keys become one op per key;
 * commands over the whole keyspace go to every shard; admin commands go
 * to the coordinator. Checks happen in Redis 7.0's order: unknown
 * command, arity, authentication, pubsub context.
 */
#include "conn.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum { C_NOAUTH = 1, C_PUBSUB = 2 /* allowed while subscribed */ };

typedef struct kv_cmd {
    const char *name;
    int arity; /* > 0 exact, < 0 at least -arity */
    void (*fn)(tp_ctx *, kv_conn *);
    uint8_t flags;
} kv_cmd;

bool kv_word_is(const kv_arg *a, const char *s)
{
    /* The first letter first: the command lookup tries every name. */
    if (!a->n || (a->p[0] | 0x20) != (s[0] | 0x20))
        return false;
    size_t n = strlen(s);
    return a->n == n && strncasecmp(a->p, s, n) == 0;
}

static void syntax_error(kv_conn *c)
{
    KV_REPLY_LIT(c, "-ERR syntax error\r\n");
}

/* --------------------------------------------------------- connection */

static void cmd_ping(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc > 2) {
        kv_reply_err(c, "ERR wrong number of arguments for 'ping' command");
    } else if (kv_pubsub_count(c)) { /* RESP2 pubsub context: an array */
        kv_buf *b = kv_reply_buf(c);
        kv_buf_str(b, "*2\r\n$4\r\npong\r\n");
        kv_buf_bulk(b, c->argc == 2 ? c->argv[1].p : "",
                    c->argc == 2 ? c->argv[1].n : 0);
    } else if (c->argc == 2) {
        kv_reply_bulk(c, c->argv[1].p, c->argv[1].n);
    } else {
        KV_REPLY_LIT(c, "+PONG\r\n");
    }
}

static void cmd_echo(tp_ctx *ctx, kv_conn *c)
{
    kv_reply_bulk(c, c->argv[1].p, c->argv[1].n);
}

static void cmd_quit(tp_ctx *ctx, kv_conn *c)
{
    kv_slot *s = kv_slot_new(c, K_LOCAL, 0);
    kv_buf_add(&s->buf, "+OK\r\n", 5);
    s->close_after = true;
    c->closing = true;
}

static void cmd_auth(tp_ctx *ctx, kv_conn *c)
{
    const char *pass = c->srv->cfg.requirepass;
    if (c->argc > 3) {
        syntax_error(c);
        return;
    }
    if (!pass) {
        KV_REPLY_LIT(c, "-ERR AUTH <password> called without any password "
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
    if ((user && !kv_word_is(user, "default")) || diff) {
        KV_REPLY_LIT(c, "-WRONGPASS invalid username-password pair or user "
                        "is disabled.\r\n");
        return;
    }
    c->authed = true;
    KV_REPLY_LIT(c, "+OK\r\n");
}

/* RESET: the connection as new (no subscriptions, name or AUTH). */
static void cmd_reset(tp_ctx *ctx, kv_conn *c)
{
    kv_pubsub_reset(ctx, c);
    kv_client_rename(c, NULL);
    c->authed = c->srv->cfg.requirepass == NULL;
    KV_REPLY_LIT(c, "+RESET\r\n");
}

static void unknown_subcommand(kv_conn *c, const char *cmd)
{
    const kv_arg *sub = &c->argv[1];
    kv_reply_err(c, "ERR unknown subcommand '%.*s'. Try %s HELP.",
                 (int)(sub->n < 128 ? sub->n : 128), sub->p, cmd);
}

static void cmd_command(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc == 1) {
        KV_REPLY_LIT(c, "*0\r\n");
        return;
    }
    const kv_arg *sub = &c->argv[1];
    if (kv_word_is(sub, "count") && c->argc == 2)
        kv_reply_int(c, (int64_t)(kv_keyed_count() + kv_conn_command_count()));
    else if (kv_word_is(sub, "count"))
        kv_reply_err(c, "ERR wrong number of arguments for 'command|count' "
                        "command");
    else if (kv_word_is(sub, "docs") || kv_word_is(sub, "info") ||
             kv_word_is(sub, "list"))
        KV_REPLY_LIT(c, "*0\r\n"); /* no command documentation here */
    else
        unknown_subcommand(c, "COMMAND");
}

static void config_pair(kv_buf *b, const kv_arg *pat, const char *name,
                        const char *val, size_t *n)
{
    if (!kv_glob(pat->p, pat->n, name, strlen(name)))
        return;
    kv_buf_bulk(b, name, strlen(name));
    kv_buf_bulk(b, val, strlen(val));
    (*n)++;
}

/* CONFIG GET <pattern>...: what redis-cli and redis-benchmark ask. */
static void cmd_config(tp_ctx *ctx, kv_conn *c)
{
    if (!kv_word_is(&c->argv[1], "get")) {
        if (kv_word_is(&c->argv[1], "set") ||
            kv_word_is(&c->argv[1], "resetstat") ||
            kv_word_is(&c->argv[1], "rewrite"))
            KV_REPLY_LIT(c, "-ERR CONFIG SET, RESETSTAT and REWRITE are not "
                            "supported by troupe-kv\r\n");
        else
            unknown_subcommand(c, "CONFIG");
        return;
    }
    if (c->argc < 3) {
        kv_reply_err(c, "ERR wrong number of arguments for 'config|get' "
                        "command");
        return;
    }
    const kv_config *cfg = &c->srv->cfg;
    char maxc[24], mmc[24], port[8];
    snprintf(maxc, sizeof maxc, "%zu", cfg->max_clients);
    snprintf(mmc, sizeof mmc, "%zu", cfg->maxmemory_clients);
    snprintf(port, sizeof port, "%u", (unsigned)c->srv->bound_port);
    kv_buf body = {0};
    size_t n = 0;
    for (size_t i = 2; i < c->argc; i++) {
        const kv_arg *p = &c->argv[i];
        /* No automatic saves: troupe-kv saves on SAVE, BGSAVE and exit. */
        config_pair(&body, p, "save", "", &n);
        config_pair(&body, p, "appendonly", "no", &n);
        config_pair(&body, p, "maxclients", maxc, &n);
        config_pair(&body, p, "maxmemory-clients", mmc, &n);
        config_pair(&body, p, "maxmemory", "0", &n);
        config_pair(&body, p, "databases", "1", &n);
        config_pair(&body, p, "port", port, &n);
        config_pair(&body, p, "bind", cfg->host, &n);
        config_pair(&body, p, "timeout", "0", &n);
        config_pair(&body, p, "dbfilename", cfg->dbfile ? cfg->dbfile : "", &n);
    }
    kv_buf *b = kv_reply_buf(c);
    kv_buf_fmt(b, "*%zu\r\n", 2 * n);
    kv_buf_add(b, body.p, body.n);
    kv_buf_free(&body);
}

static void cmd_select(tp_ctx *ctx, kv_conn *c)
{
    int64_t db;
    if (!kv_parse_i64(c->argv[1].p, c->argv[1].n, &db))
        KV_REPLY_LIT(c, "-ERR value is not an integer or out of range\r\n");
    else if (db != 0)
        KV_REPLY_LIT(c, "-ERR DB index is out of range\r\n");
    else
        KV_REPLY_LIT(c, "+OK\r\n");
}

/* ---------------------------------------------------------------- INFO */

enum {
    S_SERVER = 1,
    S_CLIENTS = 2,
    S_MEMORY = 4,
    S_PERSISTENCE = 8,
    S_STATS = 16,
    S_REPLICATION = 32,
    S_CPU = 64,
    S_TROUPE = 128,
    S_KEYSPACE = 256,
    S_ALL = 511
};

static const char *const SECTIONS[] = {"server",      "clients", "memory",
                                       "persistence", "stats",   "replication",
                                       "cpu",         "troupe",  "keyspace"};

static void cmd_info(tp_ctx *ctx, kv_conn *c)
{
    uint32_t want = c->argc == 1 ? S_ALL : 0;
    for (size_t i = 1; i < c->argc; i++) {
        const kv_arg *a = &c->argv[i];
        if (kv_word_is(a, "all") || kv_word_is(a, "default") ||
            kv_word_is(a, "everything"))
            want = S_ALL;
        for (unsigned k = 0; k < sizeof SECTIONS / sizeof *SECTIONS; k++)
            if (kv_word_is(a, SECTIONS[k]))
                want |= 1u << k;
    }
    if (want & S_KEYSPACE) {
        kv_op_all(c, K_INFO, OP_KEYSPACE, 0, NULL);
    } else {
        kv_slot *s = kv_slot_new(c, K_INFO, 0);
        s->flags = want;
        return;
    }
    kv_slot_at(c, kv_last_seq(c))->flags = want;
}

static size_t rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

void kv_info(tp_ctx *ctx, kv_conn *c, kv_buf *out, const kv_slot *s)
{
    kv_server *sv = c->srv;
    uint32_t w = s->flags;
    kv_buf b = {0};
    tp_listener_stats ls = {0, 0, 0};
    tp_listen_stats(tp_ctx_runtime(ctx),
                    atomic_load_explicit(&sv->listener, memory_order_relaxed),
                    &ls);
    if (w & S_SERVER)
        kv_buf_fmt(&b,
                   "# Server\r\nredis_version:7.0.0\r\n"
                   "troupe_kv_version:0.1.0\r\nredis_mode:standalone\r\n"
                   "process_id:%ld\r\ntcp_port:%u\r\n"
                   "uptime_in_seconds:%lld\r\n\r\n",
                   (long)getpid(), (unsigned)sv->bound_port,
                   (long long)((kv_now_ms() - sv->start_ms) / 1000));
    if (w & S_CLIENTS)
        kv_buf_fmt(&b,
                   "# Clients\r\nconnected_clients:%llu\r\nmaxclients:%zu\r\n"
                   "\r\n",
                   (unsigned long long)ls.active, sv->cfg.max_clients);
    if (w & S_MEMORY) {
        struct mallinfo2 mi = mallinfo2();
        kv_buf_fmt(&b,
                   "# Memory\r\nused_memory:%zu\r\nused_memory_rss:%zu\r\n"
                   "maxmemory:0\r\nmem_clients_normal:%zu\r\n"
                   "maxmemory_clients:%zu\r\n\r\n",
                   mi.uordblks + mi.hblkhd, rss_bytes(),
                   atomic_load(&sv->client_mem), sv->cfg.maxmemory_clients);
    }
    if (w & S_PERSISTENCE)
        kv_buf_fmt(&b, "# Persistence\r\nrdb_last_save_time:%lld\r\n\r\n",
                   (long long)(atomic_load(&sv->lastsave) / 1000));
    if (w & S_STATS)
        kv_buf_fmt(&b,
                   "# Stats\r\ntotal_connections_received:%llu\r\n"
                   "total_commands_processed:%llu\r\n"
                   "rejected_connections:%llu\r\nevicted_clients:%llu\r\n\r\n",
                   (unsigned long long)ls.accepted,
                   (unsigned long long)atomic_load(&sv->commands),
                   (unsigned long long)ls.rejected,
                   (unsigned long long)atomic_load(&sv->evicted));
    if (w & S_REPLICATION)
        kv_buf_str(&b, "# Replication\r\nrole:master\r\n"
                       "connected_slaves:0\r\n\r\n");
    if (w & S_TROUPE) {
        tp_stats st;
        tp_runtime_stats(tp_ctx_runtime(ctx), &st);
        kv_buf_fmt(&b,
                   "# Troupe\r\nshards:%u\r\nactors_alive:%llu\r\n"
                   "actors_spawned:%llu\r\nactors_exited:%llu\r\n"
                   "actor_slots:%llu\r\nmessages_sent:%llu\r\n"
                   "dead_letters:%llu\r\nlate_replies:%llu\r\n"
                   "timers_active:%llu\r\n\r\n",
                   sv->nshards, (unsigned long long)st.actors_alive,
                   (unsigned long long)st.actors_spawned,
                   (unsigned long long)st.actors_exited,
                   (unsigned long long)st.slots,
                   (unsigned long long)st.messages_sent,
                   (unsigned long long)st.dead_letters,
                   (unsigned long long)st.late_replies,
                   (unsigned long long)st.timers_active);
    }
    if (w & S_KEYSPACE) {
        kv_buf_str(&b, "# Keyspace\r\n");
        /* avg_ttl 0: not computed, which Redis allows. */
        if (s->sum)
            kv_buf_fmt(&b, "db0:keys=%lld,expires=%lld,avg_ttl=0\r\n",
                       (long long)s->sum, (long long)s->sum2);
    }
    /* Like Redis: no blank line after the last section. */
    if (b.n >= 4 && !memcmp(b.p + b.n - 4, "\r\n\r\n", 4))
        b.n -= 2;
    kv_buf_bulk(out, b.p, b.n);
    kv_buf_free(&b);
}

/* ------------------------------------------------------------ keyspace */

static void cmd_dbsize(tp_ctx *ctx, kv_conn *c)
{
    kv_op_all(c, K_SUM, OP_DBSIZE, 0, NULL);
}

static void cmd_flushall(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc > 2 || (c->argc == 2 && !kv_word_is(&c->argv[1], "async") &&
                        !kv_word_is(&c->argv[1], "sync")))
        syntax_error(c);
    else
        kv_op_all(c, K_OK, OP_FLUSHALL, 0, NULL);
}

/* One op per key, into a slot of kind. */
static void per_key(kv_conn *c, uint8_t kind, uint8_t opc)
{
    uint32_t n = (uint32_t)(c->argc - 1);
    kv_slot *s = kv_slot_new(c, kind, n);
    if (kind == K_ARRAY && !kv_slot_parts(c, s, n))
        return;
    for (uint32_t i = 0; i < n; i++)
        kv_op_key(c, opc, 0, i, 0, 1, &c->argv[i + 1]);
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
        kv_reply_err(c, "ERR wrong number of arguments for 'mset' command");
        return;
    }
    uint32_t n = (uint32_t)(c->argc - 1) / 2;
    kv_slot_new(c, K_OK, n);
    for (uint32_t i = 0; i < n; i++) /* key and value are adjacent */
        kv_op_key(c, OP_SET, 0, i, 0, 2, &c->argv[1 + 2 * i]);
}

/* SCAN cursor [options]: the cursor names its shard (bits 48..55). */
static void cmd_scan(tp_ctx *ctx, kv_conn *c)
{
    const kv_arg *a = &c->argv[1];
    uint64_t cur = 0;
    bool ok = a->n > 0 && a->n <= 20;
    for (size_t i = 0; ok && i < a->n; i++) {
        unsigned d = (unsigned)(a->p[i] - '0');
        ok = d < 10 && cur <= (UINT64_MAX - d) / 10;
        cur = cur * 10 + d;
    }
    if (!ok) {
        KV_REPLY_LIT(c, "-ERR invalid cursor\r\n");
        return;
    }
    unsigned sh = (unsigned)(cur >> 48);
    if (sh >= c->srv->nshards) { /* not one of ours: start over */
        sh = 0;
        cur = 0;
    }
    kv_slot_new(c, K_ONE, 1);
    kv_op(c, sh, OP_SCAN, 0, 0, (int64_t)cur, (uint32_t)(c->argc - 2),
          &c->argv[2]);
}

static void cmd_keys(tp_ctx *ctx, kv_conn *c)
{
    kv_op_all(c, K_MERGE, OP_KEYS, 1, &c->argv[1]);
}

static void cmd_randomkey(tp_ctx *ctx, kv_conn *c)
{
    kv_op_all(c, K_RANDOM, OP_RANDOMKEY, 0, NULL);
}

/* --------------------------------------------------------------- admin */

static void admin(tp_ctx *ctx, kv_conn *c, int what, int flag)
{
    kv_slot *s = kv_slot_new(c, K_ONE, 1);
    if (tp_sendf(ctx, c->srv->coord, KV_TAG_ADMIN, "[u i i]",
                 (uint64_t)kv_last_seq(c), what, flag) != 0) {
        kv_buf_str(&s->buf, "-ERR coordinator unavailable\r\n");
        s->remaining = 0;
    }
}

static void cmd_save(tp_ctx *ctx, kv_conn *c) { admin(ctx, c, ADM_SAVE, 0); }

static void cmd_lastsave(tp_ctx *ctx, kv_conn *c)
{
    kv_reply_int(c, atomic_load(&c->srv->lastsave) / 1000);
}

static void cmd_bgsave(tp_ctx *ctx, kv_conn *c)
{
    if (c->argc > 2 || (c->argc == 2 && !kv_word_is(&c->argv[1], "schedule")))
        syntax_error(c);
    else
        admin(ctx, c, ADM_BGSAVE, 0);
}

static void cmd_shutdown(tp_ctx *ctx, kv_conn *c)
{
    int flag = SHUT_DEFAULT;
    for (size_t i = 1; i < c->argc; i++) {
        if (kv_word_is(&c->argv[i], "nosave"))
            flag = SHUT_NOSAVE;
        else if (kv_word_is(&c->argv[i], "save"))
            flag = SHUT_SAVE;
        else {
            syntax_error(c);
            return;
        }
    }
    admin(ctx, c, ADM_SHUTDOWN, flag);
}

/* ------------------------------------------------------------- the table */

static const kv_cmd CMDS[] = {
    {"ping", -1, cmd_ping, C_PUBSUB},
    {"echo", 2, cmd_echo, 0},
    {"quit", -1, cmd_quit, C_NOAUTH | C_PUBSUB},
    {"auth", -2, cmd_auth, C_NOAUTH},
    {"reset", 1, cmd_reset, C_NOAUTH | C_PUBSUB},
    {"command", -1, cmd_command, 0},
    {"config", -2, cmd_config, 0},
    {"select", 2, cmd_select, 0},
    {"client", -2, kv_cmd_client, 0},
    {"info", -1, cmd_info, 0},
    {"dbsize", 1, cmd_dbsize, 0},
    {"flushall", -1, cmd_flushall, 0},
    {"flushdb", -1, cmd_flushall, 0},
    {"del", -2, cmd_del, 0},
    {"unlink", -2, cmd_del, 0},
    {"exists", -2, cmd_exists, 0},
    {"touch", -2, cmd_exists, 0},
    {"mget", -2, cmd_mget, 0},
    {"mset", -3, cmd_mset, 0},
    {"scan", -2, cmd_scan, 0},
    {"keys", 2, cmd_keys, 0},
    {"randomkey", 1, cmd_randomkey, 0},
    {"save", 1, cmd_save, 0},
    {"bgsave", -1, cmd_bgsave, 0},
    {"lastsave", 1, cmd_lastsave, 0},
    {"shutdown", -1, cmd_shutdown, 0},
    {"publish", 3, kv_cmd_publish, 0},
    {"pubsub", -2, kv_cmd_pubsub, 0},
    {"subscribe", -2, kv_cmd_subscribe, C_PUBSUB},
    {"unsubscribe", -1, kv_cmd_unsubscribe, C_PUBSUB},
    {"psubscribe", -2, kv_cmd_psubscribe, C_PUBSUB},
    {"punsubscribe", -1, kv_cmd_punsubscribe, C_PUBSUB},
};

#define NCMDS (sizeof CMDS / sizeof CMDS[0])

size_t kv_conn_command_count(void) { return NCMDS; }

/* Redis's text, with at most 128 bytes of the name and of the arguments
 * (kv_reply_err turns CR and LF into spaces). */
static void unknown_command(kv_conn *c)
{
    char args[160];
    size_t n = 0;
    for (size_t i = 1; i < c->argc && n < 128; i++) {
        int w = snprintf(args + n, sizeof args - n, "'%.*s' ",
                         (int)(c->argv[i].n < 128 - n ? c->argv[i].n : 128 - n),
                         c->argv[i].p);
        if (w < 0)
            break;
        n += (size_t)w < sizeof args - n ? (size_t)w : sizeof args - n - 1;
    }
    args[n] = '\0';
    const kv_arg *name = &c->argv[0];
    kv_reply_err(c, "ERR unknown command '%.*s', with args beginning with: %s",
                 (int)(name->n < 128 ? name->n : 128), name->p, args);
}

void kv_exec(tp_ctx *ctx, kv_conn *c)
{
    const kv_arg *name = &c->argv[0];
    const char *cname;
    int arity;
    const kv_cmd *cmd = NULL;
    uint8_t flags = 0;
    int idx = kv_keyed_find(name->p, name->n);
    if (idx >= 0) {
        cname = kv_keyed_at(idx)->name;
        arity = kv_keyed_at(idx)->arity;
    } else {
        for (size_t i = 0; i < NCMDS && !cmd; i++)
            if (kv_word_is(name, CMDS[i].name))
                cmd = &CMDS[i];
        if (!cmd) {
            c->last_cmd = NULL;
            unknown_command(c);
            return;
        }
        cname = cmd->name;
        arity = cmd->arity;
        flags = cmd->flags;
    }
    c->last_cmd = cname;
    if ((arity > 0 && c->argc != (size_t)arity) ||
        (arity < 0 && c->argc < (size_t)-arity)) {
        kv_reply_err(c, "ERR wrong number of arguments for '%s' command",
                     cname);
        return;
    }
    if (!c->authed && !(flags & C_NOAUTH)) {
        KV_REPLY_LIT(c, "-NOAUTH Authentication required.\r\n");
        return;
    }
    if (kv_pubsub_count(c) && !(flags & C_PUBSUB)) {
        kv_reply_err(c,
                     "ERR Can't execute '%s': only (P|S)SUBSCRIBE / "
                     "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in "
                     "this context",
                     cname);
        return;
    }
    if (cmd) {
        cmd->fn(ctx, c);
        return;
    }
    /* A keyed command: the key's shard runs it whole (arity >= 2). */
    const kv_arg *key = &c->argv[1];
    kv_slot_new(c, K_ONE, 1);
    kv_op(c, kv_shard_of(c->srv, key->p, key->n), OP_CMD, 0, 0, idx,
          (uint32_t)c->argc, c->argv);
}
