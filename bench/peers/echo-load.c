/*
 * echo-load.c - the load generator of the echo bench.
 *
 *     echo-load -p PORT [-c CONNS] [-d SECONDS] [-s MSGSIZE] [-t THREADS] [-T TIMEOUT]
 *
 * Opens CONNS connections (default 100) to 127.0.0.1:PORT.  On each, it sends
 * MSGSIZE bytes (default 64), waits until all of them came back, checks them
 * and sends the next message: one round trip at a time per connection, so the
 * figure is the server's turnaround, not its buffering.  After a 1 s warm-up
 * it counts the round trips that end within the next SECONDS (default 10) and
 * prints, on stdout,
 *
 *     rps <round trips per second>
 *     p50_us <median round-trip latency, microseconds>
 *     p99_us <99th percentile>
 *     max_us <slowest>
 *
 * preceded by a '#' line saying how it ran.  THREADS threads (default 1) share
 * the connections, each with its own epoll instance.
 *
 * It fails loudly, a message on stderr and exit 1, when a connection cannot be
 * made, is closed or reset by the server, or brings back anything but the
 * bytes sent: too many, or different ones (every message's bytes depend on
 * its connection and its round, so a reply for another connection or an
 * older round is caught too).  A connection that waits more than TIMEOUT
 * seconds (default 5) for its echo fails too, so a server that swallows the
 * bytes cannot make it hang.  Exit 2: bad arguments.
 *
 * Latencies go into a log-linear histogram (64 buckets per power of two: a
 * figure is within 1.6% of the truth) per thread, merged at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    SUB_BITS = 6, /* 64 buckets per power of two */
    NBUCKETS = 64 << SUB_BITS,
    RBUF = 64 << 10,
    MAX_EVENTS = 256,
    TICK_MS = 100, /* how often the stall check runs, at most */
};

struct conn {
    int fd;
    int id;
    uint32_t round;  /* round trips finished */
    size_t sent;     /* bytes of the current message written */
    size_t got;      /* bytes of it read back */
    int want_out;    /* EPOLLOUT is asked for: a write was short */
    int64_t t_send;  /* when the current message was sent, ns */
};

struct loader {
    pthread_t tid;
    int ep;
    struct conn *conns;
    int nconns;
    unsigned char *msg;  /* the message being sent, rebuilt each round */
    unsigned char *rbuf;
    uint64_t count;      /* round trips ended inside the window */
    uint64_t hist[NBUCKETS];
};

/* set once before the threads start, read-only after */
static size_t msg_size = 64;
static int64_t t_measure, t_end; /* the window, monotonic ns */
static int64_t stall_ns;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("echo-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* byte i of round r on connection id */
static unsigned char pattern(int id, uint32_t r, size_t i)
{
    return (unsigned char)((unsigned)id * 131u + r * 29u + (unsigned)i * 7u + (unsigned)(i >> 8));
}

static int bucket_of(uint64_t v)
{
    int msb, shift;
    if (v < (2u << SUB_BITS))
        return (int)v;
    msb = 63 - __builtin_clzll(v);
    shift = msb - SUB_BITS;
    return (shift << SUB_BITS) + (int)(v >> shift); /* v >> shift in [64, 128) */
}

static double bucket_mid(int b)
{
    int shift;
    if (b < (2 << SUB_BITS))
        return b;
    shift = (b >> SUB_BITS) - 1;
    return (double)((uint64_t)(b - (shift << SUB_BITS)) << shift) + (double)(1ull << shift) / 2;
}

static void set_events(struct loader *l, struct conn *c, int out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = out;
}

/* writes what is left of the current message, or asks for EPOLLOUT to go on */
static void send_rest(struct loader *l, struct conn *c)
{
    size_t i;
    if (c->sent == 0) {
        for (i = 0; i < msg_size; i++)
            l->msg[i] = pattern(c->id, c->round, i);
        c->t_send = now_ns();
    }
    while (c->sent < msg_size) {
        ssize_t n = write(c->fd, l->msg + c->sent, msg_size - c->sent);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* The message is rebuilt from the pattern: l->msg is shared
                 * by the thread's connections, so keep nothing in it. */
                if (!c->want_out)
                    set_events(l, c, 1);
                return;
            }
            die("connection %d: write: %s (round trip %u)", c->id, strerror(errno), c->round);
        }
        c->sent += (size_t)n;
    }
    if (c->want_out)
        set_events(l, c, 0);
}

static void on_readable(struct loader *l, struct conn *c)
{
    size_t i;
    ssize_t n = read(c->fd, l->rbuf, RBUF);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        die("connection %d: read: %s (round trip %u, %zu of %zu bytes back)", c->id,
            strerror(errno), c->round, c->got, msg_size);
    }
    if (n == 0)
        die("connection %d: closed by the server (round trip %u, %zu of %zu bytes back)", c->id,
            c->round, c->got, msg_size);
    if (c->got + (size_t)n > c->sent)
        die("connection %d: %zu bytes back, but only %zu were sent (round trip %u): not an echo",
            c->id, c->got + (size_t)n, c->sent, c->round);
    for (i = 0; i < (size_t)n; i++) {
        unsigned char want = pattern(c->id, c->round, c->got + i);
        if (l->rbuf[i] != want)
            die("connection %d: byte %zu of round trip %u is 0x%02x, sent 0x%02x: not an echo",
                c->id, c->got + i, c->round, l->rbuf[i], want);
    }
    c->got += (size_t)n;
    if (c->got < msg_size)
        return;

    int64_t t = now_ns();
    if (t >= t_measure && t < t_end) {
        l->count++;
        l->hist[bucket_of((uint64_t)(t - c->t_send))]++;
    }
    c->round++;
    c->sent = c->got = 0;
    if (t < t_end)
        send_rest(l, c);
}

static void check_stalls(struct loader *l, int64_t t)
{
    int i;
    for (i = 0; i < l->nconns; i++) {
        struct conn *c = &l->conns[i];
        if (t - c->t_send > stall_ns)
            die("connection %d: no echo after %.0f s (round trip %u, %zu of %zu bytes back)",
                c->id, (double)stall_ns / 1e9, c->round, c->got, msg_size);
    }
}

static void *loader_run(void *arg)
{
    struct loader *l = arg;
    struct epoll_event events[MAX_EVENTS];
    int64_t t, next_check = 0;
    int i, n;

    for (i = 0; i < l->nconns; i++)
        send_rest(l, &l->conns[i]);
    while ((t = now_ns()) < t_end) {
        if (t >= next_check) {
            check_stalls(l, t);
            next_check = t + (int64_t)TICK_MS * 1000000;
        }
        int64_t left_ms = (t_end - t + 999999) / 1000000;
        n = epoll_wait(l->ep, events, MAX_EVENTS, left_ms < TICK_MS ? (int)left_ms : TICK_MS);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(l, c); /* an error or a hang-up shows in read() */
            if ((events[i].events & EPOLLOUT) && c->sent < msg_size)
                send_rest(l, c);
        }
    }
    return NULL;
}

static void connect_one(struct loader *l, struct conn *c, const struct sockaddr_in *addr)
{
    int one = 1;
    struct timeval tv = {.tv_sec = stall_ns / 1000000000};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

    if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        die("socket: %s (connection %d; raise ulimit -n?)", strerror(errno), c->id);
    /* a connect that hangs (a full backlog) gives up after the stall time */
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) != 0)
        die("connection %d: connect to 127.0.0.1:%d: %s", c->id, ntohs(addr->sin_port),
            strerror(errno == EINPROGRESS ? ETIMEDOUT : errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0)
        die("fcntl: %s", strerror(errno));
    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
}

static long number(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "echo-load: -%s needs a number from %ld to %ld, not '%s'\n", opt, lo, hi, s);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo-load -p PORT [-c CONNS] [-d SECONDS] [-s MSGSIZE] [-t THREADS] "
                    "[-T TIMEOUT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long port = -1, nconns = 100, seconds = 10, nthreads = 1, timeout_s = 5;
    const int64_t warmup_ns = 1000000000;
    struct sockaddr_in addr;
    struct loader *loaders;
    struct conn *conns;
    struct rlimit rl;
    uint64_t hist[NBUCKETS] = {0}, total = 0, seen, p50_at, p99_at;
    double p50 = 0, p99 = 0, max = 0;
    int opt, i, b;

    while ((opt = getopt(argc, argv, "p:c:d:s:t:T:")) != -1) {
        switch (opt) {
        case 'p': port = number("p", optarg, 1, 65535); break;
        case 'c': nconns = number("c", optarg, 1, 1000000); break;
        case 'd': seconds = number("d", optarg, 1, 86400); break;
        case 's': msg_size = (size_t)number("s", optarg, 1, 64 << 20); break;
        case 't': nthreads = number("t", optarg, 1, 1024); break;
        case 'T': timeout_s = number("T", optarg, 1, 3600); break;
        default: usage();
        }
    }
    if (port < 0 || optind != argc)
        usage();
    if (nthreads > nconns)
        nthreads = nconns;
    stall_ns = (int64_t)timeout_s * 1000000000;

    /* a peer that closed shows as EPIPE from write(), with a message */
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl); /* if not enough, socket() says so */
    }

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    loaders = calloc((size_t)nthreads, sizeof *loaders);
    conns = calloc((size_t)nconns, sizeof *conns);
    if (loaders == NULL || conns == NULL)
        die("out of memory");
    for (i = 0; i < nthreads; i++) {
        struct loader *l = &loaders[i];
        /* each thread takes the next slice of conns, the first ones one more */
        l->nconns = (int)(nconns / nthreads + (i < nconns % nthreads));
        l->conns = conns + (i * (nconns / nthreads) + (i < nconns % nthreads ? i : nconns % nthreads));
        if ((l->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
            die("epoll_create1: %s", strerror(errno));
        if ((l->msg = malloc(msg_size)) == NULL || (l->rbuf = malloc(RBUF)) == NULL)
            die("out of memory");
    }
    for (i = 0; i < nthreads; i++) {
        int k;
        for (k = 0; k < loaders[i].nconns; k++) {
            struct conn *c = &loaders[i].conns[k];
            c->id = (int)(c - conns);
            connect_one(&loaders[i], c, &addr);
        }
    }

    t_measure = now_ns() + warmup_ns;
    t_end = t_measure + (int64_t)seconds * 1000000000;
    for (i = 0; i < nthreads; i++)
        if ((errno = pthread_create(&loaders[i].tid, NULL, loader_run, &loaders[i])) != 0)
            die("pthread_create: %s", strerror(errno));
    for (i = 0; i < nthreads; i++) {
        pthread_join(loaders[i].tid, NULL);
        for (b = 0; b < NBUCKETS; b++)
            hist[b] += loaders[i].hist[b];
        total += loaders[i].count;
    }
    if (total == 0) {
        /* the server takes the bytes and answers none: say how far it got */
        for (i = 0; i < nconns && conns[i].round > 0; i++) { }
        i = i < nconns ? i : 0;
        die("no round trip ended in the %ld s measured: not an echo server? (connection %d: %u "
            "round trips, then %zu of %zu bytes back)",
            seconds, i, conns[i].round, conns[i].got, msg_size);
    }

    /* the smallest latency that at least 50% (99%) of the round trips did not exceed */
    p50_at = (total * 50 + 99) / 100;
    p99_at = (total * 99 + 99) / 100;
    seen = 0;
    for (b = 0; b < NBUCKETS; b++) {
        if (hist[b] == 0)
            continue;
        if (seen < p50_at && seen + hist[b] >= p50_at)
            p50 = bucket_mid(b);
        if (seen < p99_at && seen + hist[b] >= p99_at)
            p99 = bucket_mid(b);
        seen += hist[b];
        max = bucket_mid(b);
    }

    printf("# echo-load: %ld connections on %ld thread%s, %zu-byte messages, 1 s warm-up, %ld s "
           "measured, %llu round trips\n",
           nconns, nthreads, nthreads == 1 ? "" : "s", msg_size, seconds,
           (unsigned long long)total);
    printf("rps %.1f\n", (double)total / (double)seconds);
    printf("p50_us %.1f\n", p50 / 1000);
    printf("p99_us %.1f\n", p99 / 1000);
    printf("max_us %.1f\n", max / 1000);
    for (i = 0; i < nconns; i++)
        close(conns[i].fd);
    for (i = 0; i < nthreads; i++) {
        close(loaders[i].ep);
        free(loaders[i].msg);
        free(loaders[i].rbuf);
    }
    free(conns);
    free(loaders);
    return 0;
}
