/*
 * Nodes through a nats-server that requires mutual TLS and a user per
 * node, each user allowed to publish only the subjects its node sends on
 * (frames "tp.<cluster>.n.*.<self>", never another node's) and to
 * subscribe only to its own inbox subjects:
 *  - two nodes with certificates and credentials work (a remote call
 *    round trip, before and after the attacks below);
 *  - clients without a client certificate, with one from another CA,
 *    without credentials or with a wrong password cannot connect, so
 *    nothing they try to inject reaches node A's actors (A's node stats
 *    and its root's mailbox show none);
 *  - node B's own user cannot forge frames as another node: publishing
 *    to "tp.<cluster>.n.A.C" (or as A to B, or a fake probe answer)
 *    with B's certificate and credentials is refused by the server with a
 *    permissions violation, and nothing arrives at A;
 *  - a node run with missing or wrong TLS options or credentials fails
 *    its run with TP_ENOCONN.
 *
 * The group setup makes a throw-away CA with openssl in a temp dir (a
 * server certificate for 127.0.0.1/localhost, client certificates for A
 * and B, and one for A signed by another CA), writes the server's config
 * and starts nats-server on a free loopback port. Node A is this process;
 * node B is this same program run with --peer (peer_main).
 */
#include <ftw.h>
#include <pthread.h>

#include "node/node_test.h"
#include "runtime/node/node_int.h" /* the frame encoder, for forged frames */

#define CLUSTER "t"
#define PFX "tp." CLUSTER
#define HB_MS 1000
#define MISSES 10        /* a loaded machine never makes a node look hung */
#define CONNECT_MS 10000 /* TLS handshakes under the sanitizers */
#define WAIT_MS 10000    /* any event awaited here */

enum {
    T_HELLO = 1, /* peer -> A: [p p] its root and its server */
    T_ECHO,      /* call: reply the payload */
    T_ATTACKED,  /* the attacker thread -> A's root: done */
    T_FORGED,    /* what forged frames carry: must never arrive */
    T_BYE,       /* A -> the peer's root: end */
    T_ACK,       /* A -> the peer's root: hello heard */
    T_RESEND,    /* the peer's root to itself: hello again, unless acked */
};

static char tmp_dir[128];

static const char *in_dir(char *buf, size_t size, const char *file)
{
    snprintf(buf, size, "%s/%s", tmp_dir, file);
    return buf;
}

/* ----------------------------------------------- certificates, server */

/* Run a shell script in tmp_dir (its output to setup.log): 0 if it
 * succeeded. */
static int sh(const char *script)
{
    pid_t pid = fork();
    if (pid == 0) {
        char log[256];
        if (chdir(tmp_dir) != 0 ||
            !freopen(in_dir(log, sizeof log, "setup.log"), "a", stdout) ||
            !freopen(log, "a", stderr))
            _exit(126);
        execl("/bin/sh", "sh", "-ec", script, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* A CA (and a second, unrelated one), the server's certificate with the
 * loopback address and name as SANs, client certificates for A and B,
 * and "evil": a certificate for A from the other CA. EC keys: fast. */
static const char make_certs[] =
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n"
    "ca_ext='-addext basicConstraints=critical,CA:TRUE "
    "-addext keyUsage=critical,keyCertSign,cRLSign'\n"
    "openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 "
    "-subj /CN=troupe-test-ca $ca_ext\n"
    "openssl req -x509 $ec -keyout other.key -out other.pem -days 2 "
    "-subj /CN=troupe-other-ca $ca_ext\n"
    "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
    "extendedKeyUsage=serverAuth\\n"
    "keyUsage=critical,digitalSignature\\n' >server.ext\n"
    "printf 'extendedKeyUsage=clientAuth\\n"
    "keyUsage=critical,digitalSignature\\n' >client.ext\n"
    "sign() { # file CN ext CA\n"
    "  openssl req $ec -keyout $1.key -out $1.csr -subj /CN=$2\n"
    "  openssl x509 -req -in $1.csr -CA $4.pem -CAkey $4.key "
    "-CAcreateserial -out $1.pem -days 2 -extfile $3\n"
    "}\n"
    "sign server localhost server.ext ca\n"
    "sign A A client.ext ca\n"
    "sign B B client.ext ca\n"
    "sign evil A client.ext other\n";

/* The subjects a node publishes to and subscribes to (node.c: frames,
 * heartbeats, probes, name claims; spawn.c, groups.c and names.c: remote
 * spawn, groups, the global-names bucket). %1$s is the node's name. A
 * probe is answered on "<prefix>.probe.<asker>.<answerer>", so a node
 * answers only as itself. */
static const char user_block[] =
    "    { user: \"%1$s\", password: \"pw-%1$s\", permissions: {\n"
    "        publish: { allow: [\"" PFX ".n.*.%1$s\", \"" PFX ".hb.%1$s\",\n"
    "          \"" PFX ".alive.>\", \"" PFX ".probe.*.%1$s\",\n"
    "          \"" PFX ".who.>\", \"_INBOX.>\",\n"
    "          \"" PFX ".spawn.*\", \"" PFX ".g.*.%1$s\", \"$JS.API.>\",\n"
    "          \"$KV.tp_" CLUSTER "_names.>\"] }\n"
    "        subscribe: { allow: [\"" PFX ".n.%1$s.*\", \"" PFX ".hb.*\",\n"
    "          \"" PFX ".alive.%1$s\", \"" PFX ".who.%1$s\",\n"
    "          \"" PFX ".probe.%1$s.*\", \"_INBOX.>\",\n"
    "          \"" PFX ".spawn.%1$s\", \"" PFX ".gr.%1$s.>\",\n"
    "          \"" PFX ".g.>\"] }\n"
    "    } }\n";

static int write_config(const char *path)
{
    char f[256];
    FILE *c = fopen(path, "w");
    if (!c)
        return -1;
    fprintf(c, "tls {\n  cert_file: \"%s\"\n",
            in_dir(f, sizeof f, "server.pem"));
    fprintf(c, "  key_file: \"%s\"\n", in_dir(f, sizeof f, "server.key"));
    fprintf(c, "  ca_file: \"%s\"\n", in_dir(f, sizeof f, "ca.pem"));
    fprintf(c, "  verify: true\n  timeout: 10\n}\n");
    fprintf(c, "authorization {\n  users = [\n");
    fprintf(c, user_block, "A");
    fprintf(c, user_block, "B");
    fprintf(c, "  ]\n}\n");
    return fclose(c) == 0 ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nt_nats_down();
    if (tmp_dir[0])
        nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tp-tls-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        tmp_dir[0] = '\0';
        return -1;
    }
    static char conf[256], log[256];
    const char *args[] = {"-c", in_dir(conf, sizeof conf, "nats.conf"), NULL};
    in_dir(log, sizeof log, "nats.log");
    if (sh(make_certs) != 0 || write_config(conf) != 0 ||
        nt_nats_up_log(false, args, log) != 0) {
        fprintf(stderr,
                "test_node_tls: setup failed, see %s/setup.log and "
                "%s\n",
                tmp_dir, log);
        return -1; /* (the dir is kept for a look) */
    }
    return 0;
}

/* ------------------------------------------------------- node options */

typedef struct creds {
    char ca[256], cert[256], key[256], user[16], password[32];
} creds;

/* What node `name` connects with: the CA, its certificate, its user. */
static void creds_of(creds *c, const char *name)
{
    in_dir(c->ca, sizeof c->ca, "ca.pem");
    snprintf(c->cert, sizeof c->cert, "%s/%s.pem", tmp_dir, name);
    snprintf(c->key, sizeof c->key, "%s/%s.key", tmp_dir, name);
    snprintf(c->user, sizeof c->user, "%s", name);
    snprintf(c->password, sizeof c->password, "pw-%s", name);
}

static void node_opts(tp_node_opts *o, const char *name, const char *url,
                      const creds *c)
{
    tp_node_opts_init(o);
    o->urls = url;
    o->name = name;
    o->cluster = CLUSTER;
    o->heartbeat_ms = HB_MS;
    o->misses = MISSES;
    o->connect_timeout_ms = CONNECT_MS;
    o->tls_ca = c->ca[0] ? c->ca : NULL;
    o->tls_cert = c->cert[0] ? c->cert : NULL;
    o->tls_key = c->key[0] ? c->key : NULL;
    o->user = c->user[0] ? c->user : NULL;
    o->password = c->password[0] ? c->password : NULL;
}

/* ------------------------------------------------------------------ peer */

static tp_pid peer_parent; /* A's root, as a pid of the peer */

static int peer_server(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    if (tp_msg_tag(msg) == T_ECHO)
        tp_reply(ctx, msg, data, len);
    return TP_HANDLED;
}

typedef struct peer {
    tp_pid server;
    bool acked;
} peer;

/* Tells A its pids once it sees A, until A answers (NATS is at most
 * once); ends when told, or when A goes. */
static int peer_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    peer *p = state;
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        tp_spawn(ctx, peer_server, NULL, NULL, &p->server);
        tp_monitor_node(ctx, "A", true);
        break;
    case TP_TAG_NODEUP:
    case T_RESEND:
        if (!p->acked) {
            tp_sendf(ctx, peer_parent, T_HELLO, "[pp]", tp_self(ctx),
                     p->server);
            tp_send_after(ctx, 2000, T_RESEND, NULL, 0, NULL);
        }
        break;
    case T_ACK: p->acked = true; break;
    case T_BYE:
    case TP_TAG_NODEDOWN:
        tp_kill(ctx, p->server);
        return tp_exit(ctx, TP_REASON_NORMAL);
    }
    return TP_HANDLED;
}

static int peer_main(int argc, char **argv)
{
    /* --peer NAME URL PARENT_ID DIR */
    if (argc != 6)
        return 2;
    /* Ends when told or when A goes; should A's test go wrong in a way
     * that leaves it running, not forever. */
    alarm(TPT_RUN_TIMEOUT_S + 60);
    snprintf(tmp_dir, sizeof tmp_dir, "%s", argv[5]);
    tp_runtime *rt;
    if (tp_runtime_new(NULL, &rt) != 0)
        return 2;
    creds c;
    creds_of(&c, argv[2]);
    tp_node_opts o;
    node_opts(&o, argv[2], argv[3], &c);
    if (tp_runtime_set_node(rt, &o) != 0 ||
        nt_peer_parent(rt, argv, &peer_parent) != 0)
        return 2;
    peer p = {0};
    int rc = tp_run(rt, peer_root, &p, NULL);
    tp_runtime_free(rt);
    nt_nats_close();
    return rc < 0 ? 10 - rc : rc;
}

static pid_t start_peer(const char *name, tp_pid parent)
{
    const char *more[] = {tmp_dir, NULL};
    return nt_start_peer(name, parent, more);
}

/* The server's log lines that report a permissions violation, to out
 * (the first few); how many there are. */
static int server_violations(char *out, size_t size)
{
    char path[256], line[1024];
    FILE *f = fopen(in_dir(path, sizeof path, "nats.log"), "r");
    int n = 0;
    size_t used = 0;
    if (size)
        out[0] = '\0';
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "Violation")) {
            n++;
            if (used < size)
                used += (size_t)snprintf(out + used, size - used, "%s", line);
        }
    if (f)
        fclose(f);
    return n;
}

/* ------------------------------------------------------ raw clients */

/* Permission violations a raw client was told of (nats.c's error
 * handler, on its own thread). */
typedef struct violations {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;
} violations;

/* Counts only: the error's text lives in nats.c's connection, which its
 * reader thread rewrites at the next error without our lock (TSan caught a
 * copy racing with that); the test reads it once every violation it
 * expects has been counted (violations_text). */
static void on_raw_error(natsConnection *nc, natsSubscription *sub,
                         natsStatus err, void *arg)
{
    (void)nc;
    (void)sub;
    violations *v = arg;
    if (err != NATS_NOT_PERMITTED)
        return;
    pthread_mutex_lock(&v->lock);
    v->n++;
    pthread_cond_signal(&v->cond);
    pthread_mutex_unlock(&v->lock);
}

/* The text of nc's last error into out, after wait_violations: no error
 * is expected to come meanwhile. */
static void violations_text(natsConnection *nc, char *out, size_t size)
{
    const char *text = NULL;
    natsConnection_GetLastError(nc, &text);
    snprintf(out, size, "%s", text ? text : "");
}

/* Wait until v has counted n violations (or WAIT_MS passed). */
static int wait_violations(violations *v, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&v->lock);
    while (v->n < n &&
           pthread_cond_timedwait(&v->cond, &v->lock, &ts) != ETIMEDOUT)
        ;
    int got = v->n;
    pthread_mutex_unlock(&v->lock);
    return got;
}

/* A plain nats.c client: tls with the CA (and a certificate if cert),
 * user and password if user. */
static natsStatus raw_connect(natsConnection **nc, bool tls, const char *ca,
                              const char *cert, const char *key,
                              const char *user, const char *password,
                              violations *v)
{
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, nt_nats.url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, CONNECT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(o, false);
    if (s == NATS_OK && tls)
        s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK && tls && ca)
        s = natsOptions_LoadCATrustedCertificates(o, ca);
    if (s == NATS_OK && cert)
        s = natsOptions_LoadCertificatesChain(o, cert, key);
    if (s == NATS_OK && user)
        s = natsOptions_SetUserInfo(o, user, password);
    if (s == NATS_OK && v)
        s = natsOptions_SetErrorHandler(o, on_raw_error, v);
    *nc = NULL;
    if (s == NATS_OK)
        s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    return s;
}

/* A well-formed frame (the first of its sender: seq 1) to A's actor
 * `to` from actor 1 of node `from_node`, tag T_FORGED: if it got through
 * the server, A would take it and the actor would see it. (Out of
 * memory: an empty frame, which A would drop.) */
static void forged_frame(tpi_nbuf *b, tp_pid to, const char *from_node)
{
    tpi_nframe f = {.kind = TPI_NF_MSG,
                    .seq = 1,
                    .to = to,
                    .from = {1ull << 32 | 1, from_node, strlen(from_node)},
                    .tag = T_FORGED};
    memset(b, 0, sizeof *b);
    if (!tpi_nframe_encode(b, &f))
        b->len = 0;
}

/* ----------------------------------------------------------- the test */

#define N_BAD_CLIENTS 5

typedef struct cluster {
    tp_runtime *rt;
    tp_pid self; /* A's root */
    pid_t child;
    tp_pid peer_root, server;
    tp_ref ref1, ref2;
    bool echo1, echo2, attacked;
    int unexpected; /* messages A's root did not expect */
    int last_unexpected_tag;
    /* the attacker thread */
    pthread_t attacker;
    bool attacker_on;
    natsStatus bad[N_BAD_CLIENTS]; /* connect results: none NATS_OK */
    natsStatus b_connect;          /* B's user: connects */
    int forged_sent, violations;
    char violation_text[256];
    tp_node_stats before, after;
} cluster;

static const char *const bad_what[N_BAD_CLIENTS] =
    {"no TLS", "TLS without a client certificate",
     "a client certificate from another CA", "no credentials",
     "a wrong password"};

/* Off the schedulers (it blocks on connects and waits): the attacks of
 * (b) and (c), then T_ATTACKED to A's root. */
static void *attacker_main(void *arg)
{
    cluster *c = arg;
    creds a, b;
    creds_of(&a, "A");
    creds_of(&b, "B");
    char evil_cert[256], evil_key[256];
    in_dir(evil_cert, sizeof evil_cert, "evil.pem");
    in_dir(evil_key, sizeof evil_key, "evil.key");
    tp_node_stats_get(c->rt, &c->before);

    /* (b) Connections that must not be made. Should one be, it tries to
     * inject a frame as B. */
    natsConnection *nc;
    for (int i = 0; i < N_BAD_CLIENTS; i++) {
        switch (i) {
        case 0:
            c->bad[i] = raw_connect(&nc, false, NULL, NULL, NULL, a.user,
                                    a.password, NULL);
            break;
        case 1:
            c->bad[i] = raw_connect(&nc, true, a.ca, NULL, NULL, a.user,
                                    a.password, NULL);
            break;
        case 2:
            c->bad[i] = raw_connect(&nc, true, a.ca, evil_cert, evil_key,
                                    a.user, a.password, NULL);
            break;
        case 3:
            c->bad[i] =
                raw_connect(&nc, true, a.ca, a.cert, a.key, NULL, NULL, NULL);
            break;
        default:
            c->bad[i] = raw_connect(&nc, true, a.ca, a.cert, a.key, a.user,
                                    "pw-wrong", NULL);
            break;
        }
        if (nc) {
            tpi_nbuf f;
            forged_frame(&f, c->self, "B");
            natsConnection_Publish(nc, PFX ".n.A.B", f.p, (int)f.len);
            natsConnection_FlushTimeout(nc, WAIT_MS);
            natsConnection_Destroy(nc);
            tp_free(f.p);
        }
    }

    /* (c) B's certificate and user, forging: frames as node C to A, as A
     * to B, a probe answer as C, and a subscription to A's frames. */
    /* (static: nats.c may call its handler until the library closes) */
    static violations v = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                           0};
    c->b_connect =
        raw_connect(&nc, true, b.ca, b.cert, b.key, b.user, b.password, &v);
    if (c->b_connect == NATS_OK) {
        tpi_nbuf f;
        forged_frame(&f, c->self, "C");
        static const char *const subjects[] = {
            PFX ".n.A.C",       /* as C */
            PFX ".n.A.A",       /* as A itself */
            PFX ".n.B.A",       /* as A, to B */
            PFX ".probe.A.C",   /* "C answered A's probe" */
            PFX ".probe.A.B.x", /* past the subject's shape */
        };
        for (size_t i = 0; i < sizeof subjects / sizeof *subjects; i++)
            if (natsConnection_Publish(nc, subjects[i], f.p, (int)f.len) ==
                NATS_OK)
                c->forged_sent++;
        tp_free(f.p);
        natsSubscription *sub = NULL;
        int expect = c->forged_sent;
        if (natsConnection_SubscribeSync(&sub, nc, PFX ".n.A.*") == NATS_OK)
            expect++; /* eavesdropping on A: refused as well */
        natsConnection_FlushTimeout(nc, WAIT_MS);
        c->violations = wait_violations(&v, expect);
        violations_text(nc, c->violation_text, sizeof c->violation_text);
        /* Then a marker that B's user may send: garbage on B's own
         * subject to A, which A drops. The server keeps one connection's
         * messages in order, so once A has dropped it, any forged frame
         * that had got through would have arrived before it. */
        natsConnection_Publish(nc, PFX ".n.A.B", "\xc1", 1);
        natsConnection_FlushTimeout(nc, WAIT_MS);
        /* A's counters move without an event to wait on: poll, bounded. */
        for (int i = 0; i < WAIT_MS / 5; i++) {
            tp_node_stats_get(c->rt, &c->after);
            if (c->after.dropped > c->before.dropped)
                break;
            usleep(5000);
        }
        natsSubscription_Destroy(sub);
        natsConnection_Destroy(nc);
    }
    tp_node_stats_get(c->rt, &c->after);
    tp_runtime_send(c->rt, c->self, T_ATTACKED, NULL, 0);
    return NULL;
}

static int cluster_root(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    cluster *c = state;
    size_t len;
    const void *data = tp_msg_data(msg, &len);
    switch (tp_msg_tag(msg)) {
    case TP_TAG_START:
        c->rt = tp_ctx_runtime(ctx);
        c->self = tp_self(ctx);
        c->child = start_peer("B", c->self);
        EXPECT(c->child > 0);
        EXPECT_EQ(tp_monitor_node(ctx, "B", true), 0);
        break;
    case T_HELLO:                       /* (a) a call across the nodes */
        if (c->server != TP_PID_NONE) { /* said again: answered already */
            EXPECT_EQ(tp_send(ctx, c->peer_root, T_ACK, NULL, 0), 0);
            break;
        }
        EXPECT_EQ(tp_unpackf(data, len, "[pp]", &c->peer_root, &c->server), 0);
        EXPECT_EQ(tp_send(ctx, c->peer_root, T_ACK, NULL, 0), 0);
        EXPECT(tp_pid_is_remote(c->server));
        EXPECT_EQ(tp_call(ctx, c->server, T_ECHO, "\xa2hi", 3, WAIT_MS,
                          &c->ref1),
                  0);
        break;
    case TP_TAG_REPLY:
        EXPECT_EQ(tp_msg_status(msg), 0);
        if (tp_msg_ref(msg) == c->ref1) {
            EXPECT(len == 3 && memcmp(data, "\xa2hi", 3) == 0);
            c->echo1 = true;
            c->attacker_on =
                pthread_create(&c->attacker, NULL, attacker_main, c) == 0;
            EXPECT(c->attacker_on);
        } else if (tp_msg_ref(msg) == c->ref2) {
            EXPECT(len == 4 && memcmp(data,
                                      "\xa3"
                                      "bye",
                                      4) == 0);
            c->echo2 = true;
            /* Done: B's run ends, and it leaves. */
            EXPECT_EQ(tp_send(ctx, c->peer_root, T_BYE, NULL, 0), 0);
        }
        break;
    case T_ATTACKED: /* the cluster still works */
        c->attacked = true;
        EXPECT_EQ(tp_call(ctx, c->server, T_ECHO,
                          "\xa3"
                          "bye",
                          4, WAIT_MS, &c->ref2),
                  0);
        break;
    case TP_TAG_NODEUP: break;
    case TP_TAG_NODEDOWN: /* B left, or (a failure) was lost */
        EXPECT(c->echo2);
        return tp_exit(ctx, TP_REASON_NORMAL);
    default:
        c->unexpected++;
        c->last_unexpected_tag = tp_msg_tag(msg);
        break;
    }
    return TP_HANDLED;
}

static void test_tls_cluster(void **unused)
{
    (void)unused;
    tpt_reset();
    static cluster c;
    memset(&c, 0, sizeof c);
    tp_runtime *rt;
    assert_int_equal(tp_runtime_new(NULL, &rt), 0);
    creds a;
    creds_of(&a, "A");
    tp_node_opts o;
    node_opts(&o, "A", nt_nats.url, &a);
    assert_int_equal(tp_runtime_set_node(rt, &o), 0);
    tpt_watchdog(1);
    int rc = tp_run(rt, cluster_root, &c, NULL);
    tpt_watchdog(0);
    if (c.attacker_on)
        pthread_join(c.attacker, NULL);
    tp_runtime_free(rt);
    int cst = c.child > 0 ? nu_wait(c.child) : 0;
    assert_int_equal(rc, 0);
    TPT_CHECK();
    assert_true(WIFEXITED(cst) && WEXITSTATUS(cst) == 0);
    /* (a) */
    assert_true(c.echo1 && c.attacked && c.echo2);
    /* (b) */
    for (int i = 0; i < N_BAD_CLIENTS; i++)
        if (c.bad[i] == NATS_OK)
            fail_msg("a client with %s connected", bad_what[i]);
    /* (c) */
    assert_int_equal(c.b_connect, NATS_OK);
    assert_int_equal(c.forged_sent, 5);
    print_message("B's user: %d permissions violations, the last: %s\n",
                  c.violations, c.violation_text);
    assert_int_equal(c.violations, c.forged_sent + 1);
    assert_non_null(strstr(c.violation_text, "Permissions Violation"));
    /* And those were all: nothing the nodes themselves publish or
     * subscribe to was refused (the permissions above are complete). */
    char lines[2048];
    int logged = server_violations(lines, sizeof lines);
    if (logged != c.violations)
        fail_msg("the server logged %d violations, not %d:\n%s", logged,
                 c.violations, lines);
    /* Nothing arrived at A but the marker (dropped), no frame taken. */
    if (c.unexpected)
        fail_msg("A's root got %d unexpected messages (tag %d)", c.unexpected,
                 c.last_unexpected_tag);
    assert_int_equal(c.after.frames_in, c.before.frames_in);
    assert_int_equal(c.after.dropped, c.before.dropped + 1);
}

/* ------------------------------------------- nodes that may not join */

static int never_runs(tp_ctx *ctx, void *state, const tp_msg *msg)
{
    (void)state;
    (void)msg;
    EXPECT(0);
    return tp_exit(ctx, TP_REASON_NORMAL);
}

static void test_refused_nodes(void **unused)
{
    (void)unused;
    tpt_reset();
    for (int i = 0; i < 4; i++) {
        creds c;
        creds_of(&c, "A");
        const char *what = "";
        switch (i) {
        case 0:
            what = "no TLS options";
            c.ca[0] = c.cert[0] = c.key[0] = '\0';
            break;
        case 1:
            what = "no client certificate";
            c.cert[0] = c.key[0] = '\0';
            break;
        case 2:
            what = "a wrong password";
            snprintf(c.password, sizeof c.password, "pw-B");
            break;
        default:
            what = "no user";
            c.user[0] = c.password[0] = '\0';
            break;
        }
        tp_runtime *rt;
        assert_int_equal(tp_runtime_new(NULL, &rt), 0);
        tp_node_opts o;
        node_opts(&o, "A", nt_nats.url, &c);
        assert_int_equal(tp_runtime_set_node(rt, &o), 0);
        tpt_watchdog(1);
        int rc = tp_run(rt, never_runs, NULL, NULL);
        tpt_watchdog(0);
        tp_runtime_free(rt);
        if (rc != TP_ENOCONN)
            fail_msg("a node with %s: tp_run returned %d", what, rc);
    }
    TPT_CHECK();
}

/* Under TSan: nats.c reads a TLS connection on its reader thread while
 * other threads write to it under the connection's lock, and OpenSSL (not
 * instrumented) keeps state that both touch, so TSan reports races inside
 * libssl/libcrypto between nats.c's threads (seen at a node's close).
 * Not troupe's code: those, and only those, are suppressed here. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:libssl.so\nrace:libcrypto.so\n";
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--peer") == 0)
        return peer_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_cluster),
        cmocka_unit_test(test_refused_nodes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
