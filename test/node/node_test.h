/*
 * What the tests that run nodes through a real nats-server share
 * (test/node/, test/test_kv_cluster.c): the server of the test program,
 * started by the group setup on a free loopback port (Debian's
 * nats-server, installed by dev.sh and CI), and peer nodes, each this
 * same program run again as "--peer NAME URL PARENT_ID [more]".
 *
 *   static int setup(void **s) { return nt_nats_up(true, NULL); }
 *   static int teardown(void **s) { nt_nats_down(); return 0; }
 *   int main(int argc, char **argv) {
 *       if (argc > 1 && strcmp(argv[1], "--peer") == 0)
 *           return my_peer_main(argc, argv);
 *       ...
 *   }
 */
#ifndef NODE_TEST_H
#define NODE_TEST_H

#include "tp_test.h"

#include "bench/node_util.h"
#include "troupe/node.h"

#include <nats/nats.h>

/* The test program's nats-server (nt_nats_up). */
static nu_nats nt_nats __attribute__((unused));
static char nt_js_dir[64] __attribute__((unused));

/* Start nt_nats (on the main thread: it dies with it, even when a test's
 * watchdog ends the program): with JetStream (in a store of this run's
 * own, removed by nt_nats_down) when js; more arguments in args
 * (NULL-terminated, or NULL), its output to log (NULL: discarded). Also
 * learns this program's path for nt_start_peer. 0 once it listens, else
 * -1 (then every test of the group fails, as it must in CI). */
static inline int nt_nats_up_log(bool js, const char *const *args,
                                 const char *log)
{
    static const char *argv[24];
    int n = 0;
    if (!nu_self_init())
        return -1;
    if (js) {
        snprintf(nt_js_dir, sizeof nt_js_dir, "/tmp/tp_node_js.%d",
                 (int)getpid());
        argv[n++] = "-js";
        argv[n++] = "-sd";
        argv[n++] = nt_js_dir;
    }
    for (int i = 0; args && args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    nt_nats.args = argv;
    nt_nats.log = log;
    nt_nats.tied = true;
    return nu_nats_start(&nt_nats);
}

static inline int nt_nats_up(bool js, const char *const *args)
{
    return nt_nats_up_log(js, args, NULL);
}

/* The same server again on its port (after nt_nats_kill): 0 or -1. Any
 * thread: it does not die with the thread that restarts it (nor with the
 * program, should that be killed). */
static inline int nt_nats_restart(void)
{
    nt_nats.tied = false;
    return nu_nats_start(&nt_nats);
}

/* The server crashes (SIGKILL). */
static inline void nt_nats_kill(void) { nu_nats_stop(&nt_nats, SIGKILL); }

/* nats.c torn down in a process about to exit, after every nats.c object
 * of it is destroyed: wait (10 s at most) until its threads let go of it.
 * nats_Close does not wait, and a thread that outlived main could free a
 * TLS context after OpenSSL's exit cleanup (a peer crashed so under TSan). */
static inline void nt_nats_close(void) { (void)nats_CloseAndWait(10000); }

/* The group teardown: the server stopped, its store removed, nats.c's
 * globals freed (after the last node of this process is gone). */
static inline void nt_nats_down(void)
{
    nu_nats_stop(&nt_nats, SIGTERM);
    if (nt_js_dir[0]) {
        char cmd[96];
        snprintf(cmd, sizeof cmd, "rm -rf %s", nt_js_dir);
        (void)!system(cmd);
    }
    nt_nats_close();
}

/* Start this program as peer node `name` whose parent is `parent` (a pid
 * of this process's node, as tp_node_pid takes it), with more arguments
 * (NULL-terminated, or NULL): "--peer NAME URL PARENT_ID [more]". */
static inline pid_t nt_start_peer(const char *name, tp_pid parent,
                                  const char *const *more)
{
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)parent);
    const char *args[16] = {"--peer", name, nt_nats.url, id};
    int n = 4;
    for (int i = 0; more && more[i] && n < 15; i++)
        args[n++] = more[i];
    args[n] = NULL;
    return nu_run_self(args);
}

/* In the peer: argv as nt_start_peer made it. The node options for its
 * name and the server (cluster and the rest as the caller sets them
 * after), its parent as a pid of rt once set: call nt_peer_parent after
 * tp_runtime_set_node. */
static inline void nt_peer_opts(tp_node_opts *o, char **argv)
{
    tp_node_opts_init(o);
    o->name = argv[2];
    o->urls = argv[3];
}

static inline int nt_peer_parent(tp_runtime *rt, char **argv, tp_pid *out)
{
    return tp_node_pid(rt, "A", strtoull(argv[4], NULL, 10), out);
}

#endif
