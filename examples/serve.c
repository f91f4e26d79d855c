/*
 * The example servers' shared frame (see serve.h). SIGINT and SIGTERM are blocked in every thread and
 * read from a signalfd by a fiber, as data: no handler runs inside weft's code.
 *
 * The drain, as Go's Server.Shutdown does it: stop accepting (closing the listener wakes the accepting
 * fiber), close every connection that waits for its client, and wait for the busy ones to finish.
 * A connection is IDLE while it waits in serve_read_idle and BUSY otherwise; the drain claims an idle
 * one with a compare-and-swap and cancels its fiber, so a connection that has just got a request
 * (BUSY again) is never cut off mid-answer. The connection stores IDLE before it looks at `draining`
 * and the drain stores `draining` before it looks at the states: one of the two sees the other.
 */
#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define SECOND ((int64_t)1000000000)
#define LINGER_NS (2 * SECOND)

enum { BUSY, IDLE, CLOSING };

struct serve_conn {
    int fd;
    weft_fiber_t fiber;
    _Atomic int state;
    serve_conn *prev, *next; /* in `conns`, under conns_lock */
};

serve_limits serve_limit = {60 * SECOND, 30 * SECOND, 10 * SECOND};

static const char *prog;
static const serve_spec *spec;
static int port;
static int listen_fd = -1;
static _Atomic bool draining;
static weft_mutex_t conns_lock;
static serve_conn *conns;
static weft_wg_t live; /* connections not yet closed */

int serve_fd(const serve_conn *c)
{
    return c->fd;
}

bool serve_draining(void)
{
    return atomic_load(&draining);
}

ssize_t serve_read_idle(serve_conn *c, void *buf, size_t len)
{
    atomic_store(&c->state, IDLE);
    if (atomic_load(&draining))
        return -ECANCELED;
    ssize_t n = weft_read(c->fd, buf, len, weft_deadline_in(serve_limit.idle_ns));
    int idle = IDLE;
    if (!atomic_compare_exchange_strong(&c->state, &idle, BUSY))
        return -ECANCELED; /* the drain claimed it */
    return n;
}

/* Shut down the sending side, drop what the client still sends until it closes (or LINGER_NS), close. */
static void close_lingering(int fd)
{
    if (shutdown(fd, SHUT_WR) == 0) {
        char sink[4096];
        int64_t until = weft_deadline_in(LINGER_NS);
        while (weft_read(fd, sink, sizeof sink, until) > 0)
            ;
    }
    weft_close(fd);
}

static void *connection_main(void *arg)
{
    serve_conn c = {.fd = (int)(intptr_t)arg, .fiber = weft_self(), .state = BUSY};
    weft_mutex_lock(&conns_lock, WEFT_FOREVER);
    c.next = conns;
    if (conns)
        conns->prev = &c;
    conns = &c;
    weft_mutex_unlock(&conns_lock);

    spec->connection(&c);

    weft_mutex_lock(&conns_lock, WEFT_FOREVER);
    if (c.prev)
        c.prev->next = c.next;
    else
        conns = c.next;
    if (c.next)
        c.next->prev = c.prev;
    weft_mutex_unlock(&conns_lock);
    close_lingering(c.fd);
    weft_wg_done(&live);
    return NULL;
}

static _Noreturn void drain(void)
{
    atomic_store(&draining, true);
    weft_close(listen_fd); /* the accepting fiber wakes with -EBADF and ends */
    weft_mutex_lock(&conns_lock, WEFT_FOREVER);
    for (serve_conn *c = conns; c; c = c->next) {
        int idle = IDLE;
        if (atomic_compare_exchange_strong(&c->state, &idle, CLOSING))
            weft_cancel(c->fiber);
    }
    weft_mutex_unlock(&conns_lock);
    if (weft_wg_wait(&live, weft_deadline_in(serve_limit.grace_ns)) != 0) {
        int busy = 0;
        weft_mutex_lock(&conns_lock, WEFT_FOREVER);
        for (serve_conn *c = conns; c; c = c->next)
            busy++;
        weft_mutex_unlock(&conns_lock);
        fprintf(stderr, "%s: %d connection%s still busy after %lld s; closing them\n", prog, busy,
                busy == 1 ? "" : "s", (long long)(serve_limit.grace_ns / SECOND));
    }
    exit(0);
}

static void *await_signal(void *arg)
{
    int sfd = (int)(intptr_t)arg;
    struct signalfd_siginfo si;
    while (weft_read(sfd, &si, sizeof si, WEFT_FOREVER) != (ssize_t)sizeof si)
        ;
    drain();
}

static void *accept_loop(void *arg)
{
    sigset_t *stop = arg;
    int sfd = signalfd(-1, stop, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "%s: signalfd: %s\n", prog, strerror(errno));
        exit(1);
    }
    listen_fd = weft_tcp_listen("127.0.0.1", port, 0);
    if (listen_fd < 0) {
        fprintf(stderr, "%s: cannot listen on 127.0.0.1:%d: %s\n", prog, port, strerror(-listen_fd));
        exit(1);
    }
    weft_mutex_init(&conns_lock);
    weft_wg_init(&live);
    weft_go(await_signal, (void *)(intptr_t)sfd);
    for (;;) {
        int c = weft_accept(listen_fd, NULL, NULL, WEFT_FOREVER);
        if (c == -EBADF)
            return NULL; /* the drain closed the listener */
        if (c < 0)
            continue;
        weft_wg_add(&live, 1);
        if (weft_go(connection_main, (void *)(intptr_t)c) < 0) {
            weft_close(c);
            weft_wg_done(&live);
        }
    }
}

static int usage(FILE *to)
{
    fprintf(to, "usage: %s [-p PORT] [-w WORKERS] [-i IDLE]%s [-g GRACE]\n", prog, spec->requests ? " [-t REQUEST]" : "");
    fprintf(to, "  -p PORT     listen on 127.0.0.1:PORT, 1 to 65535 (default %d)\n", spec->port);
    fprintf(to, "  -w WORKERS  weft workers, 0 to 1024 (default 0: one per usable CPU)\n");
    fprintf(to, "  -i IDLE     seconds a connection may wait for its client (default 60)\n");
    if (spec->requests)
        fprintf(to, "  -t REQUEST  seconds a request's head and body may take to come (default 30)\n");
    fprintf(to, "  -g GRACE    seconds busy connections get to finish on SIGINT or SIGTERM (default 10)\n");
    return to == stdout ? 0 : 2;
}

/* A whole decimal number in [lo, hi], or false. */
static bool number(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int serve(int argc, char **argv, const serve_spec *server)
{
    const char *slash = strrchr(argv[0], '/');
    prog = slash ? slash + 1 : argv[0];
    spec = server;
    port = spec->port;
    weft_config_t cfg = {0};
    int opt;
    while ((opt = getopt(argc, argv, spec->requests ? ":p:w:i:t:g:h" : ":p:w:i:g:h")) != -1) {
        long v = 0;
        const char *want = NULL;
        switch (opt) {
        case 'p':
            want = number(optarg, 1, 65535, &v) ? NULL : "a port from 1 to 65535";
            port = (int)v;
            break;
        case 'w':
            want = number(optarg, 0, 1024, &v) ? NULL : "a worker count from 0 to 1024";
            cfg.workers = (int)v;
            break;
        case 'i':
            want = number(optarg, 1, 86400, &v) ? NULL : "seconds from 1 to 86400";
            serve_limit.idle_ns = v * SECOND;
            break;
        case 't':
            want = number(optarg, 1, 86400, &v) ? NULL : "seconds from 1 to 86400";
            serve_limit.request_ns = v * SECOND;
            break;
        case 'g':
            want = number(optarg, 0, 86400, &v) ? NULL : "seconds from 0 to 86400";
            serve_limit.grace_ns = v * SECOND;
            break;
        case 'h':
            return usage(stdout);
        case ':':
            fprintf(stderr, "%s: -%c needs a value\n", prog, optopt);
            return usage(stderr);
        default:
            fprintf(stderr, "%s: unknown flag -%c\n", prog, optopt);
            return usage(stderr);
        }
        if (want) {
            fprintf(stderr, "%s: -%c wants %s, not '%s'\n", prog, opt, want, optarg);
            return usage(stderr);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
        return usage(stderr);
    }
    static sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* before any thread starts: they all inherit it */
    return weft_run(&cfg, accept_loop, &stop, NULL) < 0;
}
