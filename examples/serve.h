/*
 * What the example servers share: the command line, the listening socket, a fiber per connection, the
 * idle limit, a lingering close, and a drain on SIGINT or SIGTERM.
 *
 *   PROG [-p PORT] [-w WORKERS] [-i IDLE] [-t REQUEST] [-g GRACE]
 *
 *   -p PORT     listen on 127.0.0.1:PORT (each server has its default)
 *   -w WORKERS  weft workers (default 0: one per usable CPU)
 *   -i IDLE     close a connection that waits this many seconds for its client (default 60)
 *   -t REQUEST  servers with requests (HTTP): a request's head and body must come within this many
 *               seconds of its first byte (default 30)
 *   -g GRACE    on SIGINT or SIGTERM, stop accepting, close idle connections, and give the busy ones
 *               this many seconds to finish (default 10); then exit 0
 *
 * A bad flag or value is named on stderr with the usage, and the exit status is 2.
 */
#ifndef SERVE_H
#define SERVE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <weft.h>

/* One connection, as its fiber sees it. */
typedef struct serve_conn serve_conn;

typedef struct serve_limits {
    int64_t idle_ns;    /* -i */
    int64_t request_ns; /* -t */
    int64_t grace_ns;   /* -g */
} serve_limits;

extern serve_limits serve_limit; /* the limits in force, from the command line */

typedef struct serve_spec {
    int port;                             /* the default for -p */
    bool requests;                        /* the protocol has requests: -t applies */
    void (*connection)(serve_conn *c);    /* runs in a fiber of its own for each connection */
} serve_spec;

/* Parse argv, start weft, listen on 127.0.0.1:PORT, and run server->connection(c) in a fiber of its
 * own for every connection accepted. When connection returns, serve
 * closes the connection: it shuts down the sending side and reads and drops what the client still
 * sends, for up to 2 s, so that a last answer is not destroyed by a reset (nginx's lingering close).
 * Returns only on bad arguments (2) or when weft cannot start (1); exits 0 after a drain. */
int serve(int argc, char **argv, const serve_spec *server);

/* The connection's socket: read and write it with weft's calls; serve closes it. */
int serve_fd(const serve_conn *c);

/* Wait for the client while nothing is owed to it (before a request, between requests): weft_read with
 * the idle limit. A drain ends the wait with -ECANCELED, and bytes that come as the drain starts are
 * dropped with it (a keep-alive client retries on a new connection, as with every server that closes
 * idle connections). */
ssize_t serve_read_idle(serve_conn *c, void *buf, size_t len);

/* True once the server drains: answer what is in hand, ask the client to close, and return. */
bool serve_draining(void);

#endif
