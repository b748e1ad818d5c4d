/** @file
 * troupe sockets: a listener actor that accepts TCP or Unix-domain
 * connections and hands each to a connection actor of its own.
 *
 * Bytes received on a connection arrive in its actor's mailbox as
 * TP_NET_DATA messages; the actor writes with tp_conn_write. Backpressure
 * works both ways: while the connection actor's mailbox is at or over
 * capacity, or while more than high_water bytes of its output wait to be
 * written, the runtime stops reading from its socket (so a fast sender is
 * slowed by TCP itself and memory stays bounded); a peer that lets more
 * than output_limit bytes of output pile up and then takes nothing for
 * output_stall_ms is disconnected, with a log line on stderr naming it (a
 * peer that reads is never cut, however large a burst of output). The
 * socket belongs to the connection actor: it is closed when the actor ends
 * (after a best-effort flush of pending output), never before.
 *
 * Connection actors are spread over the scheduler threads (each new one
 * goes to the thread with the fewest of its listener's connections); their
 * socket is served by the loop of the thread they run on, and moves with
 * them when the runtime moves them (they follow an actor that answers
 * them, and the load balancer may move them with the actor they talk
 * to).
 *
 * SIGPIPE: a listener sets SIGPIPE to SIG_IGN when it starts, if it was
 * at its default, so a peer that vanishes is an error on that connection
 * only.
 */
#ifndef TROUPE_NET_H
#define TROUPE_NET_H

#include "troupe.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Message tags used by connection actors. They are in the user tag
 * range (behaviors see them) at its very top; troupe reserves user tags
 * from 0x7fff0000 up for its libraries, so keep your own tags below. */
enum {
    /** Bytes received: the payload is one msgpack bin; read it with
     * tp_msg_scanf(msg, "y", &ptr, &len). Never empty. Sent from
     * TP_PID_NONE, in the order the bytes arrived. */
    TP_NET_DATA = 0x7fff0100,
    /** The connection is over for reading; the payload is one msgpack
     * int: 0 when the peer closed its side (EOF; writes are still
     * allowed, the peer may be waiting for a reply), TP_ESYS when the
     * connection failed (reset, error, a socket the loop could not watch,
     * received bytes that could not be delivered), TP_E2BIG when it was
     * cut for a peer that stopped reading with more than output_limit
     * bytes pending, or TP_ENOMEM when a tp_conn_write that had written
     * part of its bytes could not queue the rest. After a non-zero code
     * writes return TP_ESTATE.
     * Delivered at most once, after every TP_NET_DATA. The actor usually
     * ends on it. */
    TP_NET_CLOSED = 0x7fff0101
};

/** How tp_listen listens and what it spawns per connection. Zero it, then
 * set conn_behavior and what else you need. */
typedef struct tp_listen_opts {
    /** Numeric IPv4 or IPv6 address to bind; NULL means "127.0.0.1". */
    const char *host;
    /** TCP port; 0 picks a free one (see tp_listen's port_out). */
    uint16_t port;
    /** Non-NULL: listen on a Unix-domain socket at this path instead of
     * TCP (host and port are ignored). A stale socket file there (no
     * server accepts on it) is replaced; a live one is TP_ESYS with errno
     * EADDRINUSE. The file is removed when the listener ends, unless
     * another has replaced it meanwhile. */
    const char *unix_path;
    /** listen(2) backlog; 0 means 511. */
    int backlog;
    /** Most connections alive at once; 0 means no limit. A connection over
     * the limit is accepted, sent reject_msg (if any) and closed. */
    size_t max_conns;
    /** NUL-terminated bytes written to a connection refused (for
     * max_conns, when the process is out of file descriptors, or when
     * conn_init or the runtime fails to make its actor), or NULL. Copied
     * by tp_listen. */
    const char *reject_msg;
    /** Reading pauses while more output bytes than this wait to be
     * written; it resumes below half of it. 0 means 64 KiB. */
    size_t high_water;
    /** A connection with more output bytes than this pending, whose peer
     * then takes none for output_stall_ms, is closed (TP_NET_CLOSED with
     * TP_E2BIG). The bytes the socket takes at once do not count. 0 means
     * 32 MiB. Must be >= high_water. Pending output may grow past it
     * while the peer reads: an actor that writes on its own initiative,
     * not in answer to input (whose reading pauses at high_water), should
     * watch tp_conn_pending. */
    size_t output_limit;
    /** How long a peer over output_limit may take no byte before it is
     * cut, in milliseconds; 0 means 10000. */
    unsigned output_stall_ms;
    /** Mailbox capacity of each connection actor; 0: runtime default. */
    size_t conn_mailbox;
    /** The behavior of every connection actor (required). It receives
     * TP_TAG_START, then TP_NET_DATA messages, then TP_NET_CLOSED. */
    tp_behavior conn_behavior;
    /** Called in the listener (an actor turn) once per accepted
     * connection to make the connection actor's state from arg. NULL
     * means every connection actor gets arg itself. If it returns NULL
     * the connection is refused (closed at once). */
    void *(*conn_init)(void *arg);
    /** Frees a connection actor's state when it ends (may be NULL). */
    void (*conn_state_free)(void *state);
    /** Passed to conn_init. The caller keeps ownership; it must stay
     * valid while the listener lives. */
    void *arg;
} tp_listen_opts;

/** Bind and listen (from the calling actor's turn, so errors come back
 * here), then spawn the listener actor, linked to the caller, that owns
 * the listening socket. Each connection gets its own connection actor,
 * linked to the listener: the listener ending (an exit signal such as
 * shutdown, or its linked caller ending, normally or not) ends every
 * connection actor with reason shutdown or the caller's reason; a
 * connection actor ending, normally or not, leaves the listener running.
 * The listener survives fd exhaustion (EMFILE, ENFILE): it keeps one
 * spare descriptor, which it frees to accept each waiting client and
 * refuse it as for max_conns (reject_msg, then close; a log line when
 * this starts and when accepting works again), so clients get an answer
 * instead of waiting in the backlog. Without the spare (taken by another
 * thread meanwhile) it pauses accepting, up to 1 s, and retries, never
 * spinning.
 *
 * Returns 0 (the pid in *pid_out, the bound TCP port in *port_out, 0 for
 * Unix sockets); TP_ESTATE outside a behavior; TP_EINVAL for a missing
 * conn_behavior, a bad address or output_limit < high_water; TP_ESYS if a
 * socket call failed (errno tells which: EADDRINUSE, EACCES, ...);
 * TP_ENOMEM. On error nothing is spawned and no socket stays open. */
TP_API int tp_listen(tp_ctx *ctx, const tp_listen_opts *opts, tp_pid *pid_out,
                     uint16_t *port_out);

/** From a connection actor: queue a copy of data for sending to its peer
 * (the caller keeps data); what the socket takes at once is written
 * before this returns. Returns 0 when queued; TP_ESTATE if the calling
 * actor is not a connection actor or its connection failed or was cut
 * (see output_limit); TP_ENOMEM (nothing was sent; or, if part was,
 * the connection fails too: TP_NET_CLOSED with TP_ENOMEM follows). */
TP_API int tp_conn_write(tp_ctx *ctx, const void *data, size_t len);

/** From a connection actor: output bytes queued and not yet written to
 * the socket (0 when not a connection actor). */
TP_API size_t tp_conn_pending(tp_ctx *ctx);

/** A listener's counters (tp_listen_stats). */
typedef struct tp_listener_stats {
    /** Connections handed to a connection actor. */
    uint64_t accepted;
    /** Connections refused: over max_conns, out of file descriptors, or
     * conn_init or the runtime failed to make their actor. */
    uint64_t rejected;
    /** Connection actors alive now. */
    uint64_t active;
} tp_listener_stats;

/** The counters of the listener `listener` of rt into *out, from any
 * thread while rt exists. Returns 0; TP_ENOPROC if listener is not a
 * listener that is alive; TP_EINVAL for a NULL rt or out. */
TP_API int tp_listen_stats(tp_runtime *rt, tp_pid listener,
                           tp_listener_stats *out);

/** From a connection actor: its peer as text ("127.0.0.1:40312",
 * "[::1]:40312" or "unix:/path"), NUL-terminated and truncated to size.
 * TP_ESTATE if not a connection actor, TP_EINVAL for a NULL buf or size 0. */
TP_API int tp_conn_peer(tp_ctx *ctx, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_NET_H */
