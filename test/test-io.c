/*
 * Fiber-aware fds: a fiber waiting on an fd parks and its worker runs others; data, hang-ups and closes
 * wake it; deadlines hold and are never early; a closed fd's waiters get -EBADF and its number, reused,
 * starts afresh; threads that are not fibers block instead, with or without a running runtime; sockets
 * (TCP and Unix) listen, dial and accept; regular files go through the blocking pool.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static void make_pipe(int p[2])
{
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
}

static void make_socketpair(int s[2])
{
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* Waiting parks the fiber, not the worker                                                           */

typedef struct {
    int fd;
    int64_t deadline;
    char buf[64];
    ssize_t r;
    int64_t returned_at;
} reader_t;

static void *read_once(void *arg)
{
    reader_t *rd = arg;
    rd->r = weft_read(rd->fd, rd->buf, sizeof rd->buf, rd->deadline);
    rd->returned_at = weft_now();
    return NULL;
}

static atomic_long ticks;

static void *tick_n(void *arg)
{
    for (intptr_t i = 0; i < (intptr_t)arg; i++) {
        atomic_fetch_add(&ticks, 1);
        weft_yield();
    }
    return NULL;
}

TEST(a_reader_parks_and_its_worker_runs_other_fibers)
{
    start_workers(1); /* N:1: one thread for everything */
    int p[2];
    make_pipe(p);
    reader_t rd = {.fd = p[0], .deadline = WEFT_FOREVER};
    weft_fiber_t r, t;
    ASSERT_OK(weft_spawn(&r, NULL, read_once, &rd));
    WAIT_UNTIL(weft_fiber_state(r) == WEFT_WAITING);
    ASSERT_OK(weft_spawn(&t, NULL, tick_n, (void *)1000));
    ASSERT_OK(weft_join(t, NULL)); /* ran to the end while the reader waited on the same worker */
    ASSERT_EQ(atomic_load(&ticks), 1000);
    ASSERT_EQ(weft_fiber_state(r), WEFT_WAITING);
    ASSERT_EQ(write(p[1], "hello", 5), 5);
    ASSERT_OK(weft_join(r, NULL));
    ASSERT_EQ(rd.r, 5);
    ASSERT(memcmp(rd.buf, "hello", 5) == 0);
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_close(p[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(a_deadline_gives_etimedout_never_early)
{
    start_workers(2);
    int p[2];
    make_pipe(p);
    for (int i = 0; i < 20; i++) {
        reader_t rd = {.fd = p[0], .deadline = weft_deadline_in((i % 5 + 1) * MS)};
        weft_fiber_t r;
        ASSERT_OK(weft_spawn(&r, NULL, read_once, &rd));
        ASSERT_OK(weft_join(r, NULL));
        ASSERT_ERR(rd.r, -ETIMEDOUT);
        ASSERT_GE(rd.returned_at, rd.deadline);
    }
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_close(p[1]));
    ASSERT_OK(weft_shutdown());
}

static void *read_nowait(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c;
    ASSERT_ERR(weft_read(fd, &c, 1, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_fd_wait(fd, WEFT_READABLE, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_EQ(weft_fd_wait(fd, WEFT_WRITABLE, WEFT_NOWAIT), WEFT_WRITABLE); /* a socket with room */
    return NULL;
}

TEST(nowait_never_parks)
{
    int s[2];
    make_socketpair(s);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, read_nowait, (void *)(intptr_t)s[0]));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_close(s[0]));
    ASSERT_OK(weft_close(s[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(fd_wait_reports_readiness_and_rejects_bad_input)
{
    int s[2];
    make_socketpair(s);
    ASSERT_ERR(weft_fd_wait(s[0], 0, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_fd_wait(s[0], WEFT_READABLE | WEFT_WRITABLE, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_fd_wait(-1, WEFT_READABLE, WEFT_NOWAIT), -EBADF);
    ASSERT_ERR(weft_read(-1, NULL, 0, WEFT_NOWAIT), -EBADF);
    ASSERT_EQ(write(s[1], "x", 1), 1);
    ASSERT_EQ(weft_fd_wait(s[0], WEFT_READABLE, WEFT_FOREVER), WEFT_READABLE);
    ASSERT_OK(weft_close(s[0]));
    ASSERT_OK(weft_close(s[1]));
}

/* ------------------------------------------------------------------------------------------------ */
/* Close                                                                                             */

TEST(closing_an_fd_wakes_its_waiters_with_ebadf)
{
    start_workers(2);
    int p[2];
    make_pipe(p);
    enum { N = 8 };
    reader_t rd[N];
    weft_fiber_t r[N];
    for (int i = 0; i < N; i++) {
        rd[i] = (reader_t){.fd = p[0], .deadline = WEFT_FOREVER};
        ASSERT_OK(weft_spawn(&r[i], NULL, read_once, &rd[i]));
    }
    for (int i = 0; i < N; i++)
        WAIT_UNTIL(weft_fiber_state(r[i]) == WEFT_WAITING);
    ASSERT_OK(weft_close(p[0]));
    for (int i = 0; i < N; i++) {
        ASSERT_OK(weft_join(r[i], NULL));
        ASSERT_ERR(rd[i].r, -EBADF);
    }
    ASSERT_ERR(weft_close(p[0]), -EBADF);
    ASSERT_OK(weft_close(p[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(a_reused_fd_number_starts_afresh)
{
    start_workers(2);
    int p[2];
    make_pipe(p);
    reader_t old = {.fd = p[0], .deadline = WEFT_FOREVER};
    weft_fiber_t a;
    ASSERT_OK(weft_spawn(&a, NULL, read_once, &old));
    WAIT_UNTIL(weft_fiber_state(a) == WEFT_WAITING);
    int number = p[0];
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_ERR(old.r, -EBADF);
    int q[2];
    make_pipe(q);
    ASSERT_EQ(q[0], number); /* the lowest free number: the same one */
    reader_t fresh = {.fd = q[0], .deadline = weft_deadline_in(10 * SEC)};
    weft_fiber_t b;
    ASSERT_OK(weft_spawn(&b, NULL, read_once, &fresh));
    WAIT_UNTIL(weft_fiber_state(b) == WEFT_WAITING);
    ASSERT_EQ(write(q[1], "new", 3), 3);
    ASSERT_OK(weft_join(b, NULL));
    ASSERT_EQ(fresh.r, 3);
    ASSERT(memcmp(fresh.buf, "new", 3) == 0);
    ASSERT_OK(weft_close(q[0]));
    ASSERT_OK(weft_close(q[1]));
    ASSERT_OK(weft_close(p[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(close_of_an_fd_weft_never_saw_is_a_plain_close)
{
    int p[2];
    make_pipe(p);
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_close(p[1]));
    ASSERT_ERR(weft_close(p[1]), -EBADF);
}

static void *write_and_expect_epipe(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096] = {0};
    ssize_t r = 0;
    for (int i = 0; i < 100 && r >= 0; i++)
        r = weft_write(fd, buf, sizeof buf, weft_deadline_in(5 * SEC));
    ASSERT_ERR(r, -EPIPE);
    return NULL;
}

TEST(writing_to_a_socket_whose_peer_left_is_epipe_not_sigpipe)
{
    /* SIGPIPE left at its default action: raised, it would kill the test */
    int s[2];
    make_socketpair(s);
    close(s[1]);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, write_and_expect_epipe, (void *)(intptr_t)s[0]));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_close(s[0]));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Streams between fibers                                                                            */

typedef struct {
    int fd;
    long bytes;
    unsigned seed;
} stream_t;

static void *send_pattern(void *arg)
{
    stream_t *s = arg;
    char buf[9000];
    long sent = 0;
    unsigned seed = s->seed;
    while (sent < s->bytes) {
        size_t n = 1 + (size_t)(rand_r(&seed) % sizeof buf);
        if ((long)n > s->bytes - sent)
            n = (size_t)(s->bytes - sent);
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)((sent + (long)i) * 31 + 7);
        ASSERT_EQ(weft_write(s->fd, buf, n, WEFT_FOREVER), (ssize_t)n);
        sent += (long)n;
    }
    return NULL;
}

static void *receive_pattern(void *arg)
{
    stream_t *s = arg;
    char buf[7000];
    long got = 0;
    while (got < s->bytes) {
        ssize_t r = weft_read(s->fd, buf, sizeof buf, WEFT_FOREVER);
        ASSERT_GT(r, 0);
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != (char)((got + i) * 31 + 7))
                FAIL("byte %ld is wrong", got + (long)i);
        got += r;
    }
    char c;
    ASSERT_EQ(weft_read(s->fd, &c, 1, WEFT_FOREVER), 0); /* end of stream */
    return NULL;
}

/*
 * A read that returns less than it asked for has emptied a stream, and weft parks the next read at once,
 * waiting for the next edge. What comes after the short read must still reach it, also when the poller
 * heard it before the next read began: more data, or the end of the stream (which raises no edge after
 * the short read when it came before it).
 */
typedef struct {
    int rfd, wfd;
    bool end;
    ssize_t first, second;
} after_short_t;

static void *read_short_then_again(void *arg)
{
    after_short_t *a = arg;
    char buf[64];
    ASSERT_ERR(weft_read(a->rfd, buf, sizeof buf, WEFT_NOWAIT), -ETIMEDOUT); /* the poller watches it now */
    ASSERT_EQ(write(a->wfd, "0123456789", 10), 10);
    if (a->end) { /* the end comes with the data, and the poller hears of both before the first read */
        if (shutdown(a->wfd, SHUT_WR) != 0) { /* a pipe ends when its writer closes */
            ASSERT_EQ(close(a->wfd), 0);
            a->wfd = -1;
        }
        weft_sleep(50 * MS); /* the bystander keeps a worker in the poller: it hears the edge now */
    }
    a->first = weft_read(a->rfd, buf, sizeof buf, weft_deadline_in(5 * SEC));
    if (!a->end) { /* more data comes after the first read, and the poller hears of it before the next */
        ASSERT_EQ(write(a->wfd, "more", 4), 4);
        weft_sleep(50 * MS);
    }
    a->second = weft_read(a->rfd, buf, sizeof buf, weft_deadline_in(5 * SEC));
    return NULL;
}

static void *bystander(void *arg)
{
    char c;
    weft_read((int)(intptr_t)arg, &c, 1, WEFT_FOREVER);
    return NULL;
}

static void tcp_pair(int s[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ASSERT_EQ(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(l, 1), 0);
    ASSERT_EQ(getsockname(l, (struct sockaddr *)&a, &len), 0);
    s[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(s[1], (struct sockaddr *)&a, sizeof a), 0);
    s[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(s[0], 0);
    close(l);
}

TEST(what_comes_after_a_short_read_reaches_the_next_read)
{
    start_workers(1);
    int quiet[2];
    make_pipe(quiet);
    weft_fiber_t by;
    ASSERT_OK(weft_spawn(&by, NULL, bystander, (void *)(intptr_t)quiet[0]));
    for (int kind = 0; kind < 3; kind++) {
        for (int end = 0; end < 2; end++) {
            int fds[2]; /* [0] read, [1] write */
            if (kind == 0)
                make_pipe(fds);
            else if (kind == 1)
                make_socketpair(fds);
            else
                tcp_pair(fds);
            after_short_t a = {fds[0], fds[1], end, 0, 0};
            weft_fiber_t f;
            ASSERT_OK(weft_spawn(&f, NULL, read_short_then_again, &a));
            ASSERT_OK(weft_join(f, NULL));
            if (a.first != 10 || a.second != (end ? 0 : 4))
                FAIL("%s, then %s: the reads gave %zd and %zd", kind == 0 ? "pipe" : kind == 1 ? "unix" : "tcp",
                     end ? "the end" : "more data", a.first, a.second);
            ASSERT_OK(weft_close(fds[0]));
            if (a.wfd >= 0)
                close(a.wfd);
        }
    }
    ASSERT_EQ(write(quiet[1], "x", 1), 1);
    ASSERT_OK(weft_join(by, NULL));
    ASSERT_OK(weft_close(quiet[0]));
    close(quiet[1]);
    ASSERT_OK(weft_shutdown());
}

static void *send_then_shut(void *arg)
{
    stream_t *s = arg;
    send_pattern(s);
    ASSERT_EQ(shutdown(s->fd, SHUT_WR), 0);
    return NULL;
}

TEST(streams_between_fibers_on_every_worker_arrive_whole)
{
    start_workers(2);
    enum { PAIRS = 32 };
    static stream_t tx[PAIRS], rx[PAIRS];
    weft_fiber_t f[2 * PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        int s[2];
        make_socketpair(s);
        tx[i] = (stream_t){s[0], runner_scaled(1 << 20), (unsigned)i};
        rx[i] = (stream_t){s[1], tx[i].bytes, 0};
        ASSERT_OK(weft_spawn(&f[2 * i], NULL, receive_pattern, &rx[i]));
        ASSERT_OK(weft_spawn(&f[2 * i + 1], NULL, send_then_shut, &tx[i]));
    }
    for (int i = 0; i < 2 * PAIRS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < PAIRS; i++) {
        ASSERT_OK(weft_close(tx[i].fd));
        ASSERT_OK(weft_close(rx[i].fd));
    }
    ASSERT_OK(weft_shutdown());
}

static void *writev_pieces(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static char big[300000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 251);
    struct iovec v[3] = {{"head:", 5}, {big, sizeof big}, {":tail", 5}};
    ASSERT_EQ(weft_writev(fd, v, 3, WEFT_FOREVER), (ssize_t)(sizeof big + 10));
    ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
    return NULL;
}

TEST(writev_writes_every_piece_even_past_the_socket_buffer)
{
    int s[2];
    make_socketpair(s);
    weft_fiber_t w;
    ASSERT_OK(weft_spawn(&w, NULL, writev_pieces, (void *)(intptr_t)s[0]));
    static char got[400000];
    size_t n = 0;
    for (;;) {
        struct iovec v = {got + n, sizeof got - n};
        ssize_t r = weft_readv(s[1], &v, 1, weft_deadline_in(20 * SEC)); /* a thread: blocks */
        ASSERT_GE(r, 0);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    ASSERT_OK(weft_join(w, NULL));
    ASSERT_EQ(n, 300010);
    ASSERT(memcmp(got, "head:", 5) == 0 && memcmp(got + 300005, ":tail", 5) == 0);
    for (size_t i = 0; i < 300000; i++)
        if (got[5 + i] != (char)(i % 251))
            FAIL("byte %zu is wrong", i);
    ASSERT_ERR(weft_writev(s[0], NULL, -1, WEFT_NOWAIT), -EINVAL);
    ASSERT_OK(weft_close(s[0]));
    ASSERT_OK(weft_close(s[1]));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Threads that are not fibers                                                                       */

static void *thread_reads(void *arg)
{
    reader_t *rd = arg;
    return read_once(rd);
}

TEST(a_foreign_thread_blocks_on_an_fd_while_the_runtime_runs)
{
    start_workers(1);
    int p[2];
    make_pipe(p);
    reader_t rd = {.fd = p[0], .deadline = weft_deadline_in(20 * SEC)};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, thread_reads, &rd), 0);
    weft_fiber_t tk;
    ASSERT_OK(weft_spawn(&tk, NULL, tick_n, (void *)100));
    ASSERT_OK(weft_join(tk, NULL));
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    ASSERT_EQ(write(p[1], "ab", 2), 2);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(rd.r, 2);
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_close(p[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(fd_calls_work_without_a_runtime)
{
    int p[2];
    make_pipe(p);
    reader_t rd = {.fd = p[0], .deadline = weft_deadline_in(5 * MS)};
    read_once(&rd);
    ASSERT_ERR(rd.r, -ETIMEDOUT);
    ASSERT_GE(rd.returned_at, rd.deadline);
    ASSERT_EQ(weft_write(p[1], "xyz", 3, WEFT_FOREVER), 3);
    rd.deadline = WEFT_FOREVER;
    read_once(&rd);
    ASSERT_EQ(rd.r, 3);
    ASSERT_EQ(weft_workers(), 0); /* none of it started the runtime */
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_close(p[1]));
}

TEST(an_fd_used_before_a_restart_works_after_it)
{
    int s[2];
    make_socketpair(s);
    for (int round = 0; round < 3; round++) {
        start_workers(1 + round % 2);
        reader_t rd = {.fd = s[0], .deadline = weft_deadline_in(10 * SEC)};
        weft_fiber_t r;
        ASSERT_OK(weft_spawn(&r, NULL, read_once, &rd));
        WAIT_UNTIL(weft_fiber_state(r) == WEFT_WAITING);
        ASSERT_EQ(write(s[1], "r", 1), 1);
        ASSERT_OK(weft_join(r, NULL));
        ASSERT_EQ(rd.r, 1);
        ASSERT_OK(weft_shutdown());
    }
    ASSERT_OK(weft_close(s[0]));
    ASSERT_OK(weft_close(s[1]));
}

/* ------------------------------------------------------------------------------------------------ */
/* Sockets                                                                                           */

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static void *echo_once(void *arg)
{
    int c = (int)(intptr_t)arg;
    char buf[256];
    ssize_t n;
    while ((n = weft_read(c, buf, sizeof buf, weft_deadline_in(20 * SEC))) > 0)
        ASSERT_EQ(weft_write(c, buf, (size_t)n, WEFT_FOREVER), n);
    ASSERT_EQ(n, 0);
    ASSERT_OK(weft_close(c));
    return NULL;
}

typedef struct {
    int lfd, clients;
} server_t;

static void *serve_n(void *arg)
{
    server_t *s = arg;
    weft_fiber_t f[64];
    for (int i = 0; i < s->clients; i++) {
        int c = weft_accept(s->lfd, NULL, NULL, weft_deadline_in(20 * SEC));
        ASSERT_GE(c, 0);
        ASSERT_OK(weft_spawn(&f[i], NULL, echo_once, (void *)(intptr_t)c));
    }
    for (int i = 0; i < s->clients; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    return NULL;
}

typedef struct {
    int port;
    const char *path;
    int id;
} client_t;

static void *client(void *arg)
{
    client_t *c = arg;
    int fd = c->path ? weft_unix_dial(c->path, weft_deadline_in(10 * SEC))
                     : weft_tcp_dial("127.0.0.1", c->port, weft_deadline_in(10 * SEC));
    ASSERT_GE(fd, 0);
    for (int i = 0; i < 50; i++) {
        char out[32], in[32];
        int n = snprintf(out, sizeof out, "client %d line %d", c->id, i);
        ASSERT_EQ(weft_write(fd, out, (size_t)n, WEFT_FOREVER), n);
        int got = 0;
        while (got < n) {
            ssize_t r = weft_read(fd, in + got, (size_t)(n - got), weft_deadline_in(10 * SEC));
            ASSERT_GT(r, 0);
            got += (int)r;
        }
        ASSERT(memcmp(in, out, (size_t)n) == 0);
    }
    ASSERT_OK(weft_close(fd));
    return NULL;
}

static void echo_clients(int lfd, int port, const char *path)
{
    enum { N = 16 };
    server_t s = {lfd, N};
    weft_fiber_t srv, cl[N];
    client_t cs[N];
    ASSERT_OK(weft_spawn(&srv, NULL, serve_n, &s));
    for (int i = 0; i < N; i++) {
        cs[i] = (client_t){port, path, i};
        ASSERT_OK(weft_spawn(&cl[i], NULL, client, &cs[i]));
    }
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(cl[i], NULL));
    ASSERT_OK(weft_join(srv, NULL));
}

TEST(tcp_listen_dial_and_accept_echo_between_fibers)
{
    start_workers(2);
    int lfd = weft_tcp_listen("127.0.0.1", 0, 64);
    ASSERT_GE(lfd, 0);
    echo_clients(lfd, local_port(lfd), NULL);
    ASSERT_OK(weft_close(lfd));
    ASSERT_OK(weft_shutdown());
}

TEST(unix_listen_dial_and_accept_echo_between_fibers)
{
    start_workers(2);
    char path[64];
    snprintf(path, sizeof path, "/tmp/weft-test-%d.sock", (int)getpid());
    unlink(path);
    int lfd = weft_unix_listen(path, 64);
    ASSERT_GE(lfd, 0);
    ASSERT_ERR(weft_unix_listen(path, 64), -EADDRINUSE);
    echo_clients(lfd, 0, path);
    ASSERT_OK(weft_close(lfd));
    unlink(path);
    ASSERT_ERR(weft_unix_dial(path, WEFT_FOREVER), -ENOENT);
    ASSERT_ERR(weft_unix_listen("", 1), -ENAMETOOLONG);
    ASSERT_OK(weft_shutdown());
}

static void *dial_refused(void *arg)
{
    int port = (int)(intptr_t)arg;
    ASSERT_ERR(weft_tcp_dial("127.0.0.1", port, weft_deadline_in(10 * SEC)), -ECONNREFUSED);
    ASSERT_ERR(weft_tcp_dial("127.0.0.1", 70000, WEFT_FOREVER), -EINVAL);
    return NULL;
}

TEST(dialing_a_closed_port_is_econnrefused)
{
    int lfd = weft_tcp_listen("127.0.0.1", 0, 1);
    ASSERT_GE(lfd, 0);
    int port = local_port(lfd);
    ASSERT_OK(weft_close(lfd)); /* nobody listens there now */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, dial_refused, (void *)(intptr_t)port));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *accept_with_deadline(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int64_t d = weft_deadline_in(10 * MS);
    ASSERT_ERR(weft_accept(lfd, NULL, NULL, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    return NULL;
}

TEST(accept_takes_a_deadline)
{
    int lfd = weft_tcp_listen("127.0.0.1", 0, 1);
    ASSERT_GE(lfd, 0);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, accept_with_deadline, (void *)(intptr_t)lfd));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_close(lfd));
    ASSERT_OK(weft_shutdown());
}

static void *lookup(void *arg)
{
    (void)arg;
    struct addrinfo *ai = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    ASSERT_OK(weft_getaddrinfo("localhost", "80", &hints, &ai));
    ASSERT(ai != NULL);
    freeaddrinfo(ai);
    ai = NULL;
    ASSERT_OK(weft_getaddrinfo("127.0.0.1", NULL, NULL, &ai));
    freeaddrinfo(ai);
    int r = weft_getaddrinfo("no-such-host.invalid", "80", &hints, &ai);
    ASSERT(r == -ENOENT || r == -EAGAIN); /* no network here: "try again" is fair too */
    ASSERT_ERR(weft_getaddrinfo(NULL, NULL, NULL, &ai), -EINVAL);
    return NULL;
}

TEST(names_resolve_through_the_blocking_pool)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, lookup, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Regular files                                                                                     */

static void *file_round_trip(void *arg)
{
    const char *path = arg;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    static char data[200000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 13);
    ASSERT_EQ(weft_write(fd, data, sizeof data, WEFT_FOREVER), (ssize_t)sizeof data);
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    static char back[200000];
    size_t n = 0;
    ssize_t r;
    while ((r = weft_read(fd, back + n, sizeof back - n, WEFT_FOREVER)) > 0)
        n += (size_t)r;
    ASSERT_EQ(r, 0);
    ASSERT_EQ(n, sizeof data);
    ASSERT(memcmp(data, back, sizeof data) == 0);
    ASSERT_OK(weft_close(fd));
    return NULL;
}

TEST(regular_files_read_and_write_through_the_blocking_pool)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/weft-test-file-%d", (int)getpid());
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, file_round_trip, path));
    ASSERT_OK(weft_join(f, NULL));
    file_round_trip(path); /* and from a thread that is not a fiber */
    unlink(path);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Signals: a storm of them, delivered to every thread, handler installed without SA_RESTART. No weft
 * call may fail with -EINTR, and no sleep or deadline may end early.                                */


static atomic_long signals_seen;
static atomic_int storm_stop;

static void on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

static void *storm(void *arg)
{
    (void)arg;
    pid_t pid = getpid();
    while (!atomic_load(&storm_stop)) {
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.')
                syscall(SYS_tgkill, pid, atoi(e->d_name), SIGUSR1);
        if (d)
            closedir(d);
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void *sleeper_in_storm(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 40; i++) {
        int64_t d = weft_deadline_in((int64_t)(100 + rand_r(&seed) % 900) * 1000);
        ASSERT_OK(weft_sleep_until(d));
        ASSERT_GE(weft_now(), d);
    }
    return NULL;
}

static void *slow_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (int i = 0; i < 100; i++) {
        weft_sleep(200 * 1000);
        char c = (char)i;
        ASSERT_EQ(weft_write(fd, &c, 1, weft_deadline_in(10 * SEC)), 1);
    }
    return NULL;
}

static void *reader_in_storm(void *arg)
{
    int fd = (int)(intptr_t)arg;
    for (int i = 0; i < 100; i++) {
        char c;
        ssize_t r = weft_read(fd, &c, 1, weft_deadline_in(10 * SEC));
        if (r != 1)
            FAIL("read %d returned %zd (%s)", i, r, runner_err_name((int)r));
        ASSERT_EQ(c, (char)i);
    }
    return NULL;
}

static void *timeouts_in_storm(void *arg)
{
    int fd = (int)(intptr_t)arg; /* nothing ever comes */
    for (int i = 0; i < 20; i++) {
        int64_t d = weft_deadline_in(2 * MS);
        char c;
        ASSERT_ERR(weft_read(fd, &c, 1, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
        d = weft_deadline_in(MS);
        ASSERT_ERR(weft_fd_wait(fd, WEFT_READABLE, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
    }
    return NULL;
}

static void *thread_sleeps_in_storm(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20; i++) {
        int64_t d = weft_deadline_in(3 * MS);
        ASSERT_OK(weft_sleep_until(d));
        ASSERT_GE(weft_now(), d);
    }
    return NULL;
}

TEST_TIMEOUT(a_signal_storm_never_surfaces_as_eintr_nor_ends_a_wait_early, 120)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: interrupted system calls fail with EINTR */
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
    start_workers(2);
    pthread_t st;
    ASSERT_EQ(pthread_create(&st, NULL, storm, NULL), 0);
    enum { SLEEPERS = 10, PIPES = 4 };
    weft_fiber_t f[SLEEPERS + 2 * PIPES + 2];
    int n = 0, p[PIPES][2], idle[2];
    for (int i = 0; i < SLEEPERS; i++)
        ASSERT_OK(weft_spawn(&f[n++], NULL, sleeper_in_storm, (void *)(uintptr_t)i));
    for (int i = 0; i < PIPES; i++) {
        make_pipe(p[i]);
        ASSERT_OK(weft_spawn(&f[n++], NULL, reader_in_storm, (void *)(intptr_t)p[i][0]));
        ASSERT_OK(weft_spawn(&f[n++], NULL, slow_writer, (void *)(intptr_t)p[i][1]));
    }
    make_pipe(idle);
    ASSERT_OK(weft_spawn(&f[n++], NULL, timeouts_in_storm, (void *)(intptr_t)idle[0]));
    ASSERT_OK(weft_thread_spawn(&f[n++], NULL, thread_sleeps_in_storm, NULL));
    for (int i = 0; i < n; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    atomic_store(&storm_stop, 1);
    ASSERT_EQ(pthread_join(st, NULL), 0);
    ASSERT_GT(atomic_load(&signals_seen), 100); /* it was a storm (under qemu on a busy machine, 870 came) */
    for (int i = 0; i < PIPES; i++) {
        ASSERT_OK(weft_close(p[i][0]));
        ASSERT_OK(weft_close(p[i][1]));
    }
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Out of fds while accepting                                                                        */

static atomic_int served;

static void *accept_and_greet(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int c = weft_accept(lfd, NULL, NULL, WEFT_FOREVER);
        if (c == -EBADF)
            return NULL; /* the listening socket was closed: done */
        ASSERT_GE(c, 0);
        ASSERT_EQ(weft_write(c, "hi", 2, weft_deadline_in(5 * SEC)), 2);
        ASSERT_OK(weft_close(c));
        atomic_fetch_add(&served, 1);
    }
}

/* In a child process of its own (fork copies the full fd table; it closes what it does not need):
 * wait for a byte on go_fd, then connect k times, 10 ms apart, and say how each went: 'h' greeted,
 * 'c' closed by the server, 't' hung (no answer in 3 s). */
static void clients(int port, int k, int go_fd, int report_fd)
{
    for (int fd = 3; fd < 4096; fd++)
        if (fd != go_fd && fd != report_fd)
            close(fd);
    char go;
    if (read(go_fd, &go, 1) != 1)
        _exit(2);
    for (int i = 0; i < k; i++) {
        if (i > 0)
            usleep(10000);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(0x7f000001)};
        char what = 'c';
        if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
            struct pollfd pf = {.fd = s, .events = POLLIN};
            char buf[2];
            if (poll(&pf, 1, 3000) == 0)
                what = 't';
            else if (read(s, buf, 2) == 2 && buf[0] == 'h')
                what = 'h';
        }
        if (s >= 0)
            close(s);
        if (write(report_fd, &what, 1) != 1)
            _exit(2);
    }
    _exit(0);
}

static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

/* Run k clients in a child (go and report are pipes made before the fds ran out) and return the CPU
 * this process used, and the time that passed, from the first connection to the last report; the
 * fork itself is left out of both. */
static void run_clients(int port, int k, int go[2], int report[2], char *out, int64_t *cpu, int64_t *wall)
{
    pid_t c = fork();
    if (c == 0)
        clients(port, k, go[0], report[1]);
    ASSERT_GT(c, 0);
    int64_t c0 = cpu_ns(), t0 = weft_now();
    ASSERT_EQ(write(go[1], "g", 1), 1);
    for (int i = 0; i < k; i++)
        ASSERT_EQ(read(report[0], &out[i], 1), 1);
    *cpu = cpu_ns() - c0;
    *wall = weft_now() - t0;
    int st;
    ASSERT_EQ(waitpid(c, &st, 0), c);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST_TIMEOUT(accepting_out_of_fds_neither_spins_nor_hangs_the_clients, 120)
{
    struct rlimit rl = {64, 64};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    start_workers(1);
    int report[2], go[2];
    make_pipe(report);
    make_pipe(go);
    int lfd = weft_tcp_listen("127.0.0.1", 0, 64);
    ASSERT_GE(lfd, 0);
    int port = local_port(lfd);
    weft_fiber_t srv;
    ASSERT_OK(weft_spawn(&srv, NULL, accept_and_greet, (void *)(intptr_t)lfd));
    /* take every fd that is left */
    int hoard[64], nh = 0;
    for (int fd; nh < 64 && (fd = dup(0)) >= 0;)
        hoard[nh++] = fd;
    ASSERT_EQ(errno, EMFILE);

    enum { K = 10 };
    char got[K + 1] = {0};
    int64_t cpu, wall;
    run_clients(port, K, go, report, got, &cpu, &wall);
    for (int i = 0; i < K; i++)
        if (got[i] == 't')
            FAIL("client %d hung while the server was out of fds (%s)", i, got);
    printf("out of fds: %s (c: closed by the server, h: greeted)\n", got);
    /* a spinning acceptor would burn the whole interval; backing off, it sleeps */
    if (cpu > wall / 2)
        FAIL("the server used %lld ms of CPU in %lld ms out of fds", (long long)(cpu / MS), (long long)(wall / MS));

    /* fds free up: accepting goes on */
    for (int i = 0; i < nh; i++)
        close(hoard[i]);
    run_clients(port, K, go, report, got, &cpu, &wall);
    for (int i = 0; i < K; i++)
        if (got[i] != 'h')
            FAIL("client %d was not greeted once fds were free: %s", i, got);
    WAIT_UNTIL(atomic_load(&served) >= K); /* the last count comes just after its greeting */
    ASSERT_OK(weft_close(lfd));
    ASSERT_OK(weft_join(srv, NULL));
    ASSERT_OK(weft_shutdown());
}

/* Four acceptors on two workers, a server that keeps its connections (so the fd limit is reached for
 * good): every client past the limit sees its connection closed, none waits in the backlog, whether the
 * acceptors wait for ever or loop on a short deadline; and a server that loops on a short deadline does
 * not spin while it is out of fds. When fds free up, accepting goes on. */
enum { HOLD_MAX = 256 };
static atomic_int held[HOLD_MAX]; /* the connections kept, from slot 0 on; -1: none (yet) */
static atomic_int nheld;

static void close_held(void)
{
    int n = atomic_load(&nheld);
    for (int i = 0; i < n; i++) {
        int c = atomic_exchange(&held[i], -1);
        if (c >= 0)
            close(c);
    }
    atomic_store(&nheld, 0);
}

struct acceptor {
    int lfd;
    int64_t step; /* each call's deadline, from now; 0: WEFT_FOREVER */
};

static void *accept_and_hold(void *arg)
{
    const struct acceptor *a = arg;
    for (;;) {
        int c = weft_accept(a->lfd, NULL, NULL, a->step ? weft_deadline_in(a->step) : WEFT_FOREVER);
        if (c == -EBADF)
            return NULL; /* the listening socket was closed: done */
        if (c == -ETIMEDOUT)
            continue;
        ASSERT_GE(c, 0);
        ASSERT_EQ(weft_write(c, "hi", 2, weft_deadline_in(5 * SEC)), 2);
        int i = atomic_fetch_add(&nheld, 1);
        ASSERT_LT(i, HOLD_MAX);
        atomic_store(&held[i], c); /* kept open: the fds run out for good */
    }
}

static void many_acceptors_out_of_fds(int64_t step)
{
    struct rlimit rl = {64, 64};
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    for (int i = 0; i < HOLD_MAX; i++)
        atomic_store(&held[i], -1);
    start_workers(2);
    int report[2], go[2];
    make_pipe(report);
    make_pipe(go);
    int lfd = weft_tcp_listen("127.0.0.1", 0, 128);
    ASSERT_GE(lfd, 0);
    int port = local_port(lfd);
    struct acceptor a = {lfd, step};
    enum { A = 4 };
    weft_fiber_t acc[A];
    for (int i = 0; i < A; i++)
        ASSERT_OK(weft_spawn(&acc[i], NULL, accept_and_hold, &a));

    enum { K = 90 }; /* more than the fds there are: the last ones find none */
    char got[K + 1] = {0};
    int64_t cpu, wall;
    run_clients(port, K, go, report, got, &cpu, &wall);
    printf("out of fds, %d acceptors: %s (c: closed by the server, h: greeted); %lld ms of CPU in %lld ms\n", A,
           got, (long long)(cpu / MS), (long long)(wall / MS));
    for (int i = 0; i < K; i++)
        if (got[i] == 't')
            FAIL("client %d hung in the backlog while the server was out of fds (%s)", i, got);
    ASSERT_EQ(got[K - 1], 'c'); /* the limit was reached */
    /* a shed per call would burn much of the interval; backing off for the process, it sleeps */
    if (!under_emulator() && cpu > wall / 4)
        FAIL("the server used %lld ms of CPU in %lld ms, out of fds", (long long)(cpu / MS), (long long)(wall / MS));

    /* fds free up: accepting goes on */
    close_held();
    run_clients(port, 10, go, report, got, &cpu, &wall);
    for (int i = 0; i < 10; i++)
        if (got[i] != 'h')
            FAIL("client %d was not greeted once fds were free: %.10s", i, got);
    ASSERT_OK(weft_close(lfd));
    for (int i = 0; i < A; i++)
        ASSERT_OK(weft_join(acc[i], NULL));
    close_held();
    ASSERT_OK(weft_shutdown());
}

TEST_TIMEOUT(many_acceptors_out_of_fds_close_every_client_past_the_limit, 120)
{
    many_acceptors_out_of_fds(0);
}

TEST_TIMEOUT(acceptors_looping_on_a_short_deadline_out_of_fds_neither_spin_nor_hang_clients, 120)
{
    many_acceptors_out_of_fds(MS);
}
