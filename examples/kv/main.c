/*
 * troupe-kv: a Redis-compatible key-value server, troupe's demo service.
 *
 *   build/examples/troupe-kv --port 6380        then: redis-cli -p 6380
 *
 * The root actor is the coordinator: it spawns the shard owners and the
 * listener, runs SAVE/BGSAVE (shards serialize themselves, the file is
 * written in the blocking pool, so the service keeps answering), and on
 * SIGINT/SIGTERM or SHUTDOWN it freezes writes, saves, and only then ends
 * the tree: every write acknowledged before is in the snapshot. In
 * cluster mode (cluster.c) it runs, saves and loads only this node's
 * shards, and spawns the directory that finds the other nodes' ones.
 */
#include "kv.h"
#include "troupe/observe.h" /* issue 8: metrics, dump on SIGUSR1 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --metrics-port: -1 off; the bound port once serving (issue 8). */
static int metrics_port = -1;
static uint16_t metrics_bound;

typedef struct waiter {
    tp_pid pid;
    uint32_t seq;
    int what; /* ADM_SAVE or ADM_SHUTDOWN */
} waiter;

typedef struct kv_coord {
    kv_server *srv;
    tp_pid listener;
    tp_pid cluster; /* the shard directory, in cluster mode */
    bool saving, save_final, stopping, shutdown_pending;
    unsigned parts_got;
    kv_save_job *job;
    tp_ref save_ref;
    waiter *w;
    size_t nw, capw;
} kv_coord;

static void answer(tp_ctx *ctx, tp_pid to, uint32_t seq, const char *resp)
{
    kv_buf b = {0};
    kv_bin_start(&b);
    kv_frag(&b, seq, 0, resp, strlen(resp));
    kv_bin_finish(&b);
    tp_send_move(ctx, to, KV_TAG_REPLIES, b.p, b.n);
}

static void add_waiter(kv_coord *co, tp_pid pid, uint32_t seq, int what)
{
    if (co->nw == co->capw) {
        co->capw = co->capw ? co->capw * 2 : 8;
        co->w = kv_xrealloc(co->w, co->capw * sizeof *co->w);
    }
    co->w[co->nw++] = (waiter){pid, seq, what};
}

static void start_save(tp_ctx *ctx, kv_coord *co, bool final)
{
    kv_server *srv = co->srv;
    co->saving = true;
    co->save_final = final;
    co->parts_got = 0;
    co->job = kv_xrealloc(NULL, sizeof *co->job);
    memset(co->job, 0, sizeof *co->job);
    co->job->path = strdup(srv->cfg.dbfile);
    co->job->nparts = srv->local_n; /* each node saves its own shards */
    for (unsigned i = 0; i < srv->local_n; i++)
        tp_send_int(ctx, kv_shard_pid(srv, srv->local_lo + i), KV_TAG_SNAPSHOT,
                    final);
}

static void finish_save(tp_ctx *ctx, kv_coord *co, int status)
{
    kv_server *srv = co->srv;
    co->saving = false;
    co->job = NULL;
    if (status == 0)
        atomic_store(&srv->lastsave, kv_now_ms());
    else
        fprintf(stderr, "troupe-kv: save failed: %s\n", tp_strerror(status));
    size_t keep = 0;
    for (size_t i = 0; i < co->nw; i++) {
        waiter *w = &co->w[i];
        if (w->what == ADM_SAVE)
            answer(ctx, w->pid, w->seq,
                   status == 0 ? "+OK\r\n"
                               : "-ERR saving failed, see the server log\r\n");
        else if (!co->save_final)
            co->w[keep++] = *w; /* a shutdown waiting for the final save */
        else if (status != 0)
            answer(ctx, w->pid, w->seq,
                   "-ERR Errors trying to SHUTDOWN. Check logs.\r\n");
    }
    co->nw = keep;
    if (co->save_final) {
        if (status == 0) {
            if (!srv->cfg.quiet)
                fprintf(stderr, "troupe-kv: saved to %s; shutting down\n",
                        srv->cfg.dbfile);
            tp_exit(ctx, TP_REASON_SHUTDOWN); /* links end the tree */
            return;
        }
        /* Like Redis: a server that cannot save does not exit; writes are
         * accepted again. The runtime is told, so the next SIGINT/SIGTERM
         * saves again instead of killing the tree (TP_ESTATE when no signal
         * asked for this shutdown, a SHUTDOWN command did: nothing to do). */
        tp_refuse_shutdown(ctx);
        fprintf(stderr, "troupe-kv: cannot save before exit; still running\n");
        co->stopping = false;
        for (unsigned i = 0; i < srv->local_n; i++)
            tp_send(ctx, kv_shard_pid(srv, srv->local_lo + i), KV_TAG_THAW,
                    NULL, 0);
    } else if (co->shutdown_pending) {
        co->shutdown_pending = false;
        start_save(ctx, co, true);
    }
}

static void begin_shutdown(tp_ctx *ctx, kv_coord *co, int flag)
{
    kv_server *srv = co->srv;
    if (co->stopping)
        return;
    bool save = srv->cfg.dbfile && flag != SHUT_NOSAVE;
    if (!srv->cfg.quiet)
        fprintf(stderr, "troupe-kv: shutdown requested%s\n",
                save ? ", saving first" : "");
    if (!save) {
        tp_exit(ctx, TP_REASON_SHUTDOWN);
        return;
    }
    co->stopping = true;
    if (co->saving)
        co->shutdown_pending = true; /* after the save in progress */
    else
        start_save(ctx, co, true);
}

static void on_admin(tp_ctx *ctx, kv_coord *co, const tp_msg *msg)
{
    uint64_t seq;
    int what, flag;
    tp_pid from = tp_msg_from(msg);
    if (tp_msg_scanf(msg, "[u i i]", &seq, &what, &flag) != 0)
        return;
    bool persist = co->srv->cfg.dbfile != NULL;
    switch (what) {
    case ADM_SAVE:
    case ADM_BGSAVE:
        if (!persist)
            answer(ctx, from, (uint32_t)seq,
                   "-ERR persistence is off (no --dbfile)\r\n");
        else if (co->saving || co->stopping)
            answer(ctx, from, (uint32_t)seq,
                   "-ERR Background save already in progress\r\n");
        else {
            start_save(ctx, co, false);
            if (what == ADM_SAVE)
                add_waiter(co, from, (uint32_t)seq, ADM_SAVE);
            else
                answer(ctx, from, (uint32_t)seq,
                       "+Background saving started\r\n");
        }
        break;
    case ADM_SHUTDOWN:
        add_waiter(co, from, (uint32_t)seq, ADM_SHUTDOWN);
        begin_shutdown(ctx, co, flag);
        break;
    default:
        answer(ctx, from, (uint32_t)seq, "-ERR unknown admin op\r\n");
        break;
    }
}

static void on_part(tp_ctx *ctx, kv_coord *co, const tp_msg *msg)
{
    int idx;
    uint64_t ptr, len, count;
    if (tp_msg_scanf(msg, "[i u u u]", &idx, &ptr, &len, &count) != 0)
        return;
    char *part = (char *)(uintptr_t)ptr; /* moved to us by the shard */
    kv_save_job *j = co->job;
    idx -= (int)co->srv->local_lo; /* parts are numbered by global shard */
    if (!j || idx < 0 || (unsigned)idx >= j->nparts || j->parts[idx]) {
        free(part);
        return;
    }
    j->parts[idx] = part;
    j->lens[idx] = (size_t)len;
    j->count += count;
    if (++co->parts_got < j->nparts)
        return;
    /* Every shard answered: the file is written off the loop. */
    int rc = tp_spawn_blocking(ctx, kv_save_job_run, j, -1, &co->save_ref);
    if (rc) {
        kv_save_job_free(j);
        finish_save(ctx, co, rc);
    }
}

static int coordinator(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    kv_coord *co = state;
    kv_server *srv = co->srv;
    if (kv_forged(msg))
        return TP_HANDLED;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START: {
        srv->coord = tp_self(ctx);
        tp_register(ctx, "kv-coordinator"); /* issue 8: named in dumps */
        for (unsigned i = srv->local_lo; i < srv->local_lo + srv->local_n;
             i++) {
            tp_spawn_opts so = {0, TP_SPAWN_LINK, kv_shard_free};
            tp_pid pid;
            int rc = tp_spawn(ctx, kv_shard_behavior, srv->shard_state[i], &so,
                              &pid);
            if (rc)
                return rc;
            atomic_store_explicit(&srv->shards[i], pid, memory_order_relaxed);
            srv->shard_state[i] = NULL; /* the shard owns it now */
        }
        int rc = kv_cluster_start(ctx, srv, &co->cluster);
        if (!rc)
            rc = kv_pubsub_start(ctx, srv);
        if (rc)
            return rc;
        tp_listen_opts lo = {0};
        lo.host = srv->cfg.host;
        lo.port = srv->cfg.port;
        lo.max_conns = srv->cfg.max_clients;
        lo.reject_msg = "-ERR max number of clients reached\r\n";
        lo.conn_mailbox = 64;
        lo.conn_behavior = kv_conn_behavior;
        lo.conn_init = kv_conn_new;
        lo.conn_state_free = kv_conn_free;
        lo.arg = srv;
        rc = tp_listen(ctx, &lo, &co->listener, &srv->bound_port);
        if (rc) {
            fprintf(stderr, "troupe-kv: cannot listen on %s:%u: %s\n",
                    srv->cfg.host, (unsigned)srv->cfg.port,
                    rc == TP_ESYS ? strerror(errno) : tp_strerror(rc));
            return tp_exit(ctx, TP_REASON_ERROR(rc, "cannot listen"));
        }
        /* Relaxed: INFO reads it for statistics; 0 until then is fine. */
        atomic_store_explicit(&srv->listener, co->listener,
                              memory_order_relaxed);
        printf("troupe-kv: ready on %s:%u\n", srv->cfg.host,
               (unsigned)srv->bound_port);
        if (metrics_port >= 0) /* issue 8 */
            printf("troupe-kv: metrics on http://127.0.0.1:%u/metrics\n",
                   (unsigned)metrics_bound);
        fflush(stdout);
        break;
    }
    case KV_TAG_ADMIN: on_admin(ctx, co, msg); break;
    case KV_TAG_PART: on_part(ctx, co, msg); break;
    case TP_TAG_REPLY:
        if (tp_msg_ref(msg) == co->save_ref && co->saving)
            finish_save(ctx, co, tp_msg_status(msg));
        break;
    case TP_TAG_EXIT: {
        tp_reason r;
        if (tp_msg_reason(msg, &r) != 0)
            r = TP_REASON_SHUTDOWN;
        if (tp_msg_from(msg) == TP_PID_NONE) { /* SIGINT / SIGTERM */
            begin_shutdown(ctx, co, SHUT_DEFAULT);
            break;
        }
        /* A shard or the listener failed: stop everything with it. */
        fprintf(stderr, "troupe-kv: %s ended (%s); stopping\n",
                tp_msg_from(msg) == co->listener  ? "the listener"
                : tp_msg_from(msg) == co->cluster ? "the cluster directory"
                                                  : "a shard",
                r.text ? r.text : "no reason text");
        tp_exit(ctx, r.kind == TP_EXIT_NORMAL ? TP_REASON_SHUTDOWN : r);
        break;
    }
    default: break;
    }
    return TP_HANDLED;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: troupe-kv [--port N] [--bind ADDR] [--requirepass-file "
            "PATH]\n"
            "                 [--dbfile PATH | --no-persist] [--maxclients N]\n"
            "                 [--maxmemory-clients BYTES[k|m|g]]\n"
            "                 [--max-request BYTES] [--shards N] [--quiet]\n"
            "                 [--metrics-port N]  (Prometheus text on "
            "127.0.0.1;\n"
            "                  SIGUSR1 dumps the actor tree to stderr)\n"
            "                 [--cluster NATS_URL --node NAME --nodes A,B,..."
            "\n"
            "                  [--cluster-name C] [--cluster-user U "
            "--cluster-password P]\n"
            "                  [--cluster-creds FILE] [--cluster-tls-ca|"
            "-cert|-key FILE]]\n"
            "                  (a node of a troupe-kv cluster: every node "
            "gets the same\n"
            "                  --nodes list and --shards, shards per "
            "node)\n"
            "defaults: --port 6380 --bind 127.0.0.1 --dbfile dump.tkv\n"
            "          --maxclients 10000 --max-request 67108864 --shards 4\n"
            "          --maxmemory-clients: a quarter of RAM, at most 1g (0: "
            "none)\n"
            "password: the first line of --requirepass-file, else the "
            "environment\n"
            "          variable TROUPE_KV_PASSWORD; --requirepass PASS works "
            "too but\n"
            "          shows the password to every local user "
            "(/proc/PID/cmdline)\n");
}

/* BYTES with an optional k/m/g (or kb/mb/gb) suffix, powers of 1024. */
static bool bytes_arg(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (*end == 'k' || *end == 'K')
        shift = 10;
    else if (*end == 'm' || *end == 'M')
        shift = 20;
    else if (*end == 'g' || *end == 'G')
        shift = 30;
    if (shift && (*++end == 'b' || *end == 'B'))
        end++;
    if (errno || *end || end == s || s[0] == '-' || v > (SIZE_MAX >> shift))
        return false;
    *out = (size_t)v << shift;
    return true;
}

/* The password: the first line of path (into *buf, which the caller
 * frees). false, with a message, if it cannot be read or is empty. */
static bool password_file(const char *path, char **buf)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    bool ok = f && fgets(line, sizeof line, f);
    if (f)
        fclose(f);
    if (ok) {
        line[strcspn(line, "\r\n")] = '\0';
        ok = line[0] != '\0';
    }
    if (!ok) {
        fprintf(stderr, "troupe-kv: cannot read a password from %s\n", path);
        return false;
    }
    free(*buf);
    *buf = strdup(line);
    return *buf != NULL;
}

/* A quarter of the RAM, at most 1 GiB. */
static size_t default_client_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    size_t quarter = pages > 0 && size > 0 ? (size_t)pages / 4 * (size_t)size
                                           : (size_t)1 << 30;
    return quarter < ((size_t)1 << 30) ? quarter : (size_t)1 << 30;
}

static bool num_arg(const char *s, unsigned long long lo, unsigned long long hi,
                    unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    kv_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return 1;
    kv_config *cfg = &srv->cfg;
    cfg->host = "127.0.0.1";
    cfg->port = 6380;
    cfg->dbfile = "dump.tkv";
    cfg->max_clients = 10000;
    cfg->max_request = 64u << 20;
    cfg->shards = 4;
    cfg->maxmemory_clients = default_client_memory();
    char *pass = NULL; /* from a file or the environment */
    const char *env = getenv("TROUPE_KV_PASSWORD");
    if (env && *env)
        cfg->requirepass = env;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long n;
        if (!strcmp(a, "--quiet")) {
            cfg->quiet = true;
            continue;
        }
        if (!strcmp(a, "--no-persist")) {
            cfg->dbfile = NULL;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!v)
            goto bad;
        i++;
        int cl = kv_cluster_option(a, v);
        if (cl < 0)
            goto bad;
        if (cl > 0)
            continue;
        if (!strcmp(a, "--port") && num_arg(v, 0, 65535, &n))
            cfg->port = (uint16_t)n;
        else if (!strcmp(a, "--bind"))
            cfg->host = v;
        else if (!strcmp(a, "--requirepass"))
            cfg->requirepass = v; /* visible in /proc/PID/cmdline */
        else if (!strcmp(a, "--requirepass-file")) {
            if (!password_file(v, &pass))
                goto bad;
            cfg->requirepass = pass;
        } else if (!strcmp(a, "--maxmemory-clients") &&
                   bytes_arg(v, &cfg->maxmemory_clients))
            continue;
        else if (!strcmp(a, "--dbfile"))
            cfg->dbfile = *v ? v : NULL;
        else if (!strcmp(a, "--maxclients") && num_arg(v, 1, 1000000, &n))
            cfg->max_clients = (size_t)n;
        else if (!strcmp(a, "--max-request") && num_arg(v, 1024, 1u << 30, &n))
            cfg->max_request = (size_t)n;
        else if (!strcmp(a, "--shards") && num_arg(v, 1, KV_MAX_SHARDS, &n))
            cfg->shards = (unsigned)n;
        else if (!strcmp(a, "--metrics-port") && num_arg(v, 0, 65535, &n))
            metrics_port = (int)n; /* issue 8 */
        else
            goto bad;
    }
    if (kv_cluster_configure(srv) != 0)
        goto bad;
    srv->start_ms = kv_now_ms();
    for (unsigned i = srv->local_lo; i < srv->local_lo + srv->local_n; i++)
        srv->shard_state[i] = kv_shard_new(srv, i);
    int status = 1;
    if (cfg->dbfile && kv_load(srv, cfg->dbfile) < 0)
        goto out;

    tp_config tc;
    tp_config_init(&tc);
    tc.max_payload = KV_MAX_PAYLOAD; /* batches and snapshots can be big */
    tp_runtime *rt = NULL;
    int rc = tp_runtime_new(&tc, &rt);
    if (!rc)
        rc = tp_runtime_handle_signals(rt);
    if (!rc)
        rc = tp_runtime_set_blocking_threads(rt, 2);
    if (!rc)
        rc = kv_cluster_join(srv, rt);
    if (!rc) /* issue 8: kill -USR1 prints the actor tree */
        rc = tp_runtime_dump_on_signal(rt, SIGUSR1, stderr);
    if (!rc && metrics_port >= 0) {
        rc = tp_runtime_observe(rt, TP_OBSERVE_COUNTERS | TP_OBSERVE_TIME);
        if (!rc)
            rc = tp_runtime_serve_metrics(rt, "127.0.0.1",
                                          (uint16_t)metrics_port,
                                          &metrics_bound);
    }
    if (rc) {
        fprintf(stderr, "troupe-kv: cannot start the runtime: %s\n",
                tp_strerror(rc));
        tp_runtime_free(rt);
        goto out;
    }
    kv_coord co = {.srv = srv};
    tp_spawn_opts so = {0, TP_SPAWN_TRAP_EXIT, NULL};
    status = tp_run(rt, coordinator, &co, &so);
    tp_runtime_free(rt);
    free(co.w);
    if (status < 0) {
        if (!kv_cluster_explain(status))
            fprintf(stderr, "troupe-kv: %s\n", tp_strerror(status));
        status = 1;
    }
out:
    for (unsigned i = 0; i < srv->nshards; i++)
        kv_shard_free(srv->shard_state[i]);
    free(srv);
    free(pass);
    return status;
bad:
    usage();
    free(srv);
    free(pass);
    return 2;
}
