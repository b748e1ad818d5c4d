/*
 * What the programs that run nodes through a local nats-server share (the
 * node benchmark and its nats.c peer here, the node tests through
 * test/node/node_test.h): a clock, a free loopback port, nats-server
 * started and stopped, and this same program run again as a peer.
 * Plain C and POSIX: no troupe, no nats.c, no test framework.
 */
#ifndef NODE_UTIL_H
#define NODE_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Monotonic seconds. */
static inline double nu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A loopback port nobody listens on now, or -1. */
static inline int nu_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0)
        return -1;
    int port = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                       getsockname(fd, (struct sockaddr *)&a, &l) == 0
                   ? ntohs(a.sin_port)
                   : -1;
    close(fd);
    return port;
}

/* Whether something accepts connections on the loopback port. */
static inline bool nu_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* One nats-server on 127.0.0.1. Set what you need, then nu_nats_start. */
typedef struct nu_nats {
    int port;                /* 0: a free one, kept for restarts */
    const char *const *args; /* more arguments, NULL-terminated, or NULL */
    const char *log;         /* its output: this file, or NULL: discarded */
    bool tied;    /* it dies with the thread that starts it (PR_SET_PDEATHSIG:
                  the thread, not the process; so never from a thread that
                  ends first, such as a scheduler thread) */
    pid_t pid;    /* set by nu_nats_start */
    char url[64]; /* "nats://127.0.0.1:<port>" */
} nu_nats;

/* Start it and wait until it listens (10 s at most): 0, or -1 (it could
 * not start, or exited: then its log says why). */
static inline int nu_nats_start(nu_nats *s)
{
    if (!s->port && (s->port = nu_free_port()) <= 0)
        return -1;
    snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", s->port);
    const char *argv[32] = {"nats-server", "-a", "127.0.0.1", "-p", ps};
    int n = 5;
    for (int i = 0; s->args && s->args[i] && n < 31; i++)
        argv[n++] = s->args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        if (s->tied &&
            (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
            _exit(126);
        int out = open(s->log ? s->log : "/dev/null",
                       O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execvp("nats-server", (char *const *)argv);
        execv("/usr/sbin/nats-server", (char *const *)argv);
        fprintf(stderr, "cannot run nats-server: %s\n", strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 1000 && !nu_port_open(s->port); i++) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        usleep(10000);
    }
    return nu_port_open(s->port) ? 0 : -1;
}

/* Stop it with sig (SIGTERM: cleanly; SIGKILL: a crash) and reap it. */
static inline void nu_nats_stop(nu_nats *s, int sig)
{
    if (s->pid > 0) {
        kill(s->pid, sig);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    s->pid = 0;
}

/* The server named by $NATS_URL if set (then s->pid stays 0), else one
 * started here, tied to the calling thread: 0 or -1 (with a message). */
static inline int nu_nats_env_or_start(nu_nats *s, const char *who)
{
    const char *env = getenv("NATS_URL");
    if (env && *env) {
        snprintf(s->url, sizeof s->url, "%s", env);
        return 0;
    }
    s->tied = true;
    if (nu_nats_start(s) == 0)
        return 0;
    fprintf(stderr, "%s: cannot start nats-server\n", who);
    return -1;
}

/* This program's path (for nu_run_self); false if it cannot be read. */
static char nu_self_exe[1024] __attribute__((unused));
static inline bool nu_self_init(void)
{
    ssize_t l = readlink("/proc/self/exe", nu_self_exe, sizeof nu_self_exe - 1);
    if (l <= 0)
        return false;
    nu_self_exe[l] = '\0';
    return true;
}

/* Run this program again with args (NULL-terminated; args[0] is the
 * first argument, not the program): its pid, or -1. */
static inline pid_t nu_run_self(const char *const *args)
{
    const char *argv[32] = {nu_self_exe};
    int n = 1;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execv(nu_self_exe, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Reap pid: its wait status. */
static inline int nu_wait(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

#endif
