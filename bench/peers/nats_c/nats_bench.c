#define _GNU_SOURCE
/*
 * The nats.c side of bench/node.sh: two plain C processes through one
 * local nats-server, written as the nats.c documentation suggests.
 *
 *   natsc-node-bench <rtt|tput> <threads> [n]
 *
 * This process (the requester, "A") starts nats-server on a free loopback
 * port (or uses $NATS_URL when set) and the responder ("B": this program
 * run with --responder) as a child. threads is only echoed (nats.c has
 * its own threads: one reader per connection, a flusher, and one
 * dispatcher per async subscription).
 *
 *   rtt   n sequential natsConnection_Request calls (8-byte payload) to
 *         "bench.echo"; B's async subscription answers each with
 *         natsConnection_Publish to the reply subject, on a connection
 *         with natsOptions_SetSendAsap (what its doc recommends for a
 *         connection that sends replies). A's connection has the default
 *         options (Request sends at once by itself). Default n 20,000.
 *   tput  n natsConnection_Publish calls (8-byte payload) to "bench.tput"
 *         on A's default, buffered connection; B's async subscription
 *         counts them; then one natsConnection_Request on the same subject
 *         that B answers with its count (the ack of the last: same
 *         publisher, same subscription, so it comes after every message).
 *         Default n 500,000.
 *
 * 1,000 request round trips warm the path first. Prints one line:
 *   bench=rtt impl=natsc threads=1 n=... seconds=... check=... us_per_rtt=...
 *   bench=tput impl=natsc threads=1 n=... seconds=... check=... msgs_per_s=...
 */
#include "../../node_util.h"

#include <inttypes.h>

#include <nats/nats.h>

#define WARMUP 1000
#define TIMEOUT_MS 30000
#define TIME_LIMIT_S 120

#define SUBJ_ECHO "bench.echo"
#define SUBJ_TPUT "bench.tput"
#define SUBJ_QUIT "bench.quit"

static void put64(char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (char)(v >> (8 * (7 - i)));
}

static uint64_t get64(const char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (uint8_t)b[i];
    return v;
}

/* ---------------------------------------------------------- responder */

static int64_t b_count; /* only the tput subscription's thread */

static void on_echo(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                    void *arg)
{
    (void)sub;
    (void)arg;
    const char *reply = natsMsg_GetReply(msg);
    if (reply)
        natsConnection_Publish(nc, reply, natsMsg_GetData(msg),
                               natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

static void on_tput(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                    void *arg)
{
    (void)sub;
    (void)arg;
    const char *reply = natsMsg_GetReply(msg);
    if (reply) { /* the ack of the last: the count so far */
        char b[8];
        put64(b, (uint64_t)b_count);
        b_count = 0;
        natsConnection_Publish(nc, reply, b, 8);
    } else if (natsMsg_GetDataLength(msg) == 8 &&
               get64(natsMsg_GetData(msg)) == (uint64_t)b_count) {
        b_count++; /* counted only in order */
    }
    natsMsg_Destroy(msg);
}

static int responder_main(const char *url)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(TIME_LIMIT_S);
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsSubscription *echo = NULL, *tput = NULL, *quit = NULL;
    natsMsg *m = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, url);
    if (s == NATS_OK) /* a connection that sends replies: send at once */
        s = natsOptions_SetSendAsap(o, true);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, o);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&echo, nc, SUBJ_ECHO, on_echo, NULL);
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&tput, nc, SUBJ_TPUT, on_tput, NULL);
    if (s == NATS_OK) /* as troupe's node does: no message limit */
        s = natsSubscription_SetPendingLimits(tput, -1, 256 << 20);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&quit, nc, SUBJ_QUIT);
    if (s == NATS_OK)
        s = natsConnection_Flush(nc);
    if (s == NATS_OK) /* serve until A says quit */
        s = natsSubscription_NextMsg(&m, quit, TIME_LIMIT_S * 1000);
    if (s != NATS_OK)
        fprintf(stderr, "natsc responder: %s\n", natsStatus_GetText(s));
    natsMsg_Destroy(m);
    natsSubscription_Destroy(quit);
    natsSubscription_Destroy(tput);
    natsSubscription_Destroy(echo);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    nats_CloseAndWait(10000); /* its threads gone before exit */
    return s == NATS_OK ? 0 : 1;
}

/* ---------------------------------------------------------- requester */

static natsStatus request(natsConnection *nc, const char *subj, uint64_t v,
                          uint64_t *out)
{
    char b[8];
    natsMsg *r = NULL;
    put64(b, v);
    natsStatus s = natsConnection_Request(&r, nc, subj, b, 8, TIMEOUT_MS);
    if (s == NATS_OK && natsMsg_IsNoResponders(r))
        s = NATS_NO_RESPONDERS;
    if (s == NATS_OK && natsMsg_GetDataLength(r) != 8)
        s = NATS_PROTOCOL_ERROR;
    if (s == NATS_OK)
        *out = get64(natsMsg_GetData(r));
    natsMsg_Destroy(r);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--responder") == 0)
        return responder_main(argv[2]);
    if (argc < 3 || argc > 4 ||
        (strcmp(argv[1], "rtt") != 0 && strcmp(argv[1], "tput") != 0)) {
        fprintf(stderr, "usage: %s <rtt|tput> <threads> [n]\n", argv[0]);
        return 2;
    }
    alarm(TIME_LIMIT_S);
    bool tput = strcmp(argv[1], "tput") == 0;
    int threads = atoi(argv[2]);
    int64_t n = argc == 4 ? atoll(argv[3]) : tput ? 500000 : 20000;
    if (n <= 0)
        return 2;
    nu_nats nats = {0};
    if (!nu_self_init())
        return 2;
    if (nu_nats_env_or_start(&nats, "natsc-node-bench") != 0)
        return 1;
    const char *url = nats.url;
    const char *args[] = {"--responder", url, NULL};
    pid_t child = nu_run_self(args);

    natsConnection *nc = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    uint64_t v = 0;
    /* Wait for the responder: "no responders" until it subscribed. */
    for (int i = 0; s == NATS_OK && i < 1000; i++) {
        char b[8];
        natsMsg *r = NULL;
        put64(b, 0);
        s = natsConnection_Request(&r, nc, SUBJ_ECHO, b, 8, 100);
        bool up = s == NATS_OK && !natsMsg_IsNoResponders(r);
        natsMsg_Destroy(r);
        if (up)
            break;
        if (s == NATS_NO_RESPONDERS || s == NATS_TIMEOUT || s == NATS_OK) {
            s = NATS_OK;
            usleep(10000);
        }
    }
    for (int i = 0; s == NATS_OK && i < WARMUP; i++)
        s = request(nc, SUBJ_ECHO, (uint64_t)i, &v);

    int64_t check = 0;
    double t0 = nu_now();
    if (!tput) {
        for (int64_t i = 0; s == NATS_OK && i < n; i++) {
            s = request(nc, SUBJ_ECHO, (uint64_t)i, &v);
            if (s == NATS_OK && v == (uint64_t)i)
                check++;
        }
    } else {
        char b[8];
        for (int64_t i = 0; s == NATS_OK && i < n; i++) {
            put64(b, (uint64_t)i);
            s = natsConnection_Publish(nc, SUBJ_TPUT, b, 8);
        }
        if (s == NATS_OK)
            s = request(nc, SUBJ_TPUT, 0, &v); /* the ack of the last */
        if (s == NATS_OK)
            check = (int64_t)v;
    }
    double t1 = nu_now();
    if (s != NATS_OK)
        fprintf(stderr, "natsc-node-bench: %s\n", natsStatus_GetText(s));

    if (nc) {
        natsConnection_PublishString(nc, SUBJ_QUIT, "");
        natsConnection_FlushTimeout(nc, 1000);
    }
    if (child > 0)
        nu_wait(child);
    natsConnection_Destroy(nc);
    nu_nats_stop(&nats, SIGTERM);
    nats_CloseAndWait(10000); /* its threads gone before exit */
    double secs = t1 - t0;
    printf("bench=%s impl=natsc threads=%d n=%" PRId64
           " seconds=%.6f check=%" PRId64,
           argv[1], threads, n, secs, check);
    if (tput)
        printf(" msgs_per_s=%.0f\n", secs > 0 ? n / secs : 0);
    else
        printf(" us_per_rtt=%.2f\n", secs > 0 ? secs * 1e6 / n : 0);
    if (s != NATS_OK || check != n) {
        fprintf(stderr,
                "natsc-node-bench: check failed: %" PRId64 " of %" PRId64 "\n",
                check, n);
        return 1;
    }
    return 0;
}
