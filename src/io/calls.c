/*
 * The read/write family, accept and connect, made fiber-aware: each runs its system call until it does
 * not say EAGAIN, parking on the descriptor in between (the essay at the top of fd.c).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/park.h"
#include "core/wait.h"
#include "io/fd.h"
#include "io/io.h"
#include "io/poll.h"

/* Wait on a thread outside the runtime when no poller runs: poll(2). 0: try again, or -ETIMEDOUT. */
static int thread_poll(int fd, int dir, int64_t deadline)
{
    if (deadline == WEFT_NOWAIT)
        return -ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = dir ? POLLOUT : POLLIN};
    for (;;) {
        int ms = -1;
        if (deadline > 0) {
            int64_t left = deadline - weft__clock_ns();
            if (left <= 0)
                return -ETIMEDOUT;
            int64_t m = (left + 999999) / 1000000;
            ms = m > INT_MAX ? INT_MAX : (int)m;
        }
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0;
        if (r == 0 && deadline > 0 && weft__clock_ns() >= deadline)
            return -ETIMEDOUT;
        /* EINTR, or woke a little before the deadline: look again */
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* The operation loop                                                                                */

/* An operation: its system call's result, or a negative errno (never through errno: see weft__errno). */
typedef ssize_t (*io_op)(int fd, void *ctx, bool sock);

static inline ssize_t sys_result(ssize_t r)
{
    return r < 0 ? -weft__errno() : r;
}

typedef struct {
    io_op op;
    int fd;
    void *ctx;
    ssize_t r;
} file_job;

static void *run_file_job(void *arg)
{
    file_job *j = arg;
    do {
        j->r = j->op(j->fd, j->ctx, false);
    } while (j->r == -EINTR);
    return NULL;
}

enum io_flags {
    IO_CUT_SHORT = 1u << 0, /* a write that has sent bytes already: an error now is kept for the next call */
    IO_READINESS = 1u << 1, /* weft_fd_wait: a kept error makes the fd ready, and stays kept */
};

/*
 * Run op until it does not say EAGAIN: op returns what its system call returns, with errno set.
 *
 * flags (enum io_flags): an error that cut a write short is kept in pending (relaxed: the call that is to
 * report it comes after the write, and sees the store by coherence), and the next call returns it.
 *
 * want (reads only, else 0): the bytes asked for. On a stream socket or a pipe, a read that returns fewer
 * has emptied the fd; every byte that comes after it raises an edge. So the next read, if no edge has come
 * since, parks at once rather than make a system call that can only say EAGAIN (a server reads once per
 * request instead of twice). An edge that comes while it parks wakes it as always. Not so an end of
 * stream or an error that came before the short read: it raises no edge after it. The poller notes those
 * (ended) before it counts their edge, so a read that sees the count sees the note, and tries.
 */
static ssize_t io_run(int fd, int dir, io_op op, void *ctx, size_t want, unsigned flags, int64_t deadline)
{
    int err;
    weft__pd *pd = weft__op_begin(fd, &err);
    if (!pd)
        return err;
    ssize_t r;
    if (WEFT__UNLIKELY(atomic_load_explicit(&pd->pending, memory_order_relaxed) != 0)) {
        /* A write that an error cut short kept the error for this call. A read first gets the bytes that
         * came before the error, as the kernel gives them (a server's answer, then its reset); a wait for
         * readiness is told the fd is ready. */
        if (flags & IO_READINESS) {
            weft__op_end(pd);
            return POLLERR;
        }
        r = -EAGAIN;
        if (dir == 0)
            while ((r = op(fd, ctx, pd->sock)) == -EINTR)
                ;
        if (r <= 0) {
            int kept = atomic_exchange_explicit(&pd->pending, 0, memory_order_relaxed);
            if (kept != 0)
                r = kept;
        }
        if (r != -EAGAIN) {
            weft__op_end(pd);
            return r;
        }
        /* another call took it meanwhile: go on as usual */
    }
    if (WEFT__UNLIKELY(pd->file) && weft__on_worker()) {
        file_job j = {op, fd, ctx, 0};
        int b = weft_blocking_until(run_file_job, &j, NULL, deadline);
        weft__op_end(pd);
        return b < 0 ? b : j.r;
    }
    uint32_t gen = atomic_load_explicit(&pd->gen, memory_order_relaxed);
    want = pd->drains ? want : 0;
    uint32_t seq = atomic_load_explicit(&pd->seq[dir], memory_order_acquire);
    bool dry = want && deadline != WEFT_NOWAIT && atomic_load_explicit(&pd->dry, memory_order_relaxed) == seq + 1 &&
               !atomic_load_explicit(&pd->ended, memory_order_relaxed);
    for (;; seq = atomic_load_explicit(&pd->seq[dir], memory_order_acquire)) {
        if (!dry) {
            r = op(fd, ctx, pd->sock);
            if (r >= 0) {
                if (r > 0 && (size_t)r < want)
                    atomic_store_explicit(&pd->dry, seq + 1, memory_order_relaxed);
                break;
            }
            if (r == -EINTR)
                continue;
            if (r != -EAGAIN && r != -EWOULDBLOCK) {
                if ((flags & IO_CUT_SHORT) && pd->sock)
                    atomic_store_explicit(&pd->pending, (int)r, memory_order_relaxed);
                break;
            }
        }
        dry = false;
        int w;
        if (atomic_load_explicit(&weft__io.running, memory_order_acquire) &&
            pd->epoch == atomic_load_explicit(&weft__io.epoch, memory_order_relaxed))
            w = weft__pd_park(pd, dir, seq, gen, deadline);
        else
            w = thread_poll(fd, dir, deadline);
        if (w < 0) {
            r = w;
            break;
        }
    }
    weft__op_end(pd);
    return r;
}

/* ------------------------------------------------------------------------------------------------ */
/* The calls                                                                                         */

typedef struct {
    void *buf;
    size_t len;
    int flags;
    struct sockaddr *addr;
    socklen_t *addrlen;
    const struct sockaddr *to;
    socklen_t tolen;
    const struct iovec *iov;
    int iovcnt;
} io_args;

/* Sockets use recv and send with MSG_DONTWAIT: they never block a worker, whatever the fd's flags. */
static ssize_t op_read(int fd, void *c, bool sock)
{
    io_args *a = c;
    return sys_result(sock ? recv(fd, a->buf, a->len, MSG_DONTWAIT) : read(fd, a->buf, a->len));
}

static ssize_t op_write(int fd, void *c, bool sock)
{
    io_args *a = c;
    return sys_result(sock ? send(fd, a->buf, a->len, MSG_NOSIGNAL | MSG_DONTWAIT) : write(fd, a->buf, a->len));
}

static ssize_t op_readv(int fd, void *c, bool sock)
{
    io_args *a = c;
    return sys_result(readv(fd, a->iov, a->iovcnt));
}

static ssize_t op_writev(int fd, void *c, bool sock)
{
    io_args *a = c;
    if (sock) {
        struct msghdr m = {.msg_iov = (struct iovec *)a->iov, .msg_iovlen = (size_t)a->iovcnt};
        return sys_result(sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT));
    }
    return sys_result(writev(fd, a->iov, a->iovcnt));
}

static ssize_t op_recvfrom(int fd, void *c, bool sock)
{
    io_args *a = c;
    return sys_result(recvfrom(fd, a->buf, a->len, a->flags | MSG_DONTWAIT, a->addr, a->addrlen));
}

static ssize_t op_sendto(int fd, void *c, bool sock)
{
    io_args *a = c;
    return sys_result(sendto(fd, a->buf, a->len, a->flags | MSG_NOSIGNAL | MSG_DONTWAIT, a->to, a->tolen));
}

static ssize_t op_poll(int fd, void *c, bool sock)
{
    io_args *a = c;
    struct pollfd p = {.fd = fd, .events = (short)a->flags};
    int r = poll(&p, 1, 0);
    if (r < 0)
        return -weft__errno();
    if (r == 0)
        return -EAGAIN;
    if (p.revents & POLLNVAL)
        return -EBADF;
    return p.revents;
}

ssize_t weft_read(int fd, void *buf, size_t len, int64_t deadline)
{
    io_args a = {.buf = buf, .len = len};
    return io_run(fd, 0, op_read, &a, len, 0, deadline);
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline)
{
    io_args a = {.iov = iov, .iovcnt = iovcnt};
    size_t want = 0;
    for (int i = 0; i < iovcnt && iov; i++)
        want += iov[i].iov_len;
    return io_run(fd, 0, op_readv, &a, want, 0, deadline);
}

ssize_t weft_recv(int fd, void *buf, size_t len, int flags, int64_t deadline)
{
    io_args a = {.buf = buf, .len = len, .flags = flags};
    return io_run(fd, 0, op_recvfrom, &a, 0, 0, deadline);
}

ssize_t weft_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen,
                      int64_t deadline)
{
    io_args a = {.buf = buf, .len = len, .flags = flags, .addr = from, .addrlen = fromlen};
    return io_run(fd, 0, op_recvfrom, &a, 0, 0, deadline);
}

ssize_t weft_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen,
                    int64_t deadline)
{
    io_args a = {.buf = (void *)buf, .len = len, .flags = flags, .to = to, .tolen = tolen};
    return io_run(fd, 1, op_sendto, &a, 0, 0, deadline); /* a datagram goes whole or not at all */
}

/* Writes go on until every byte is written, like a blocking write to a socket. An error or the deadline
 * after some bytes went out returns how many did; the next call on the fd reports the error (io_run keeps
 * it: a socket reports it only once). */
static ssize_t write_all(int fd, io_op op, io_args *a, int64_t deadline)
{
    size_t done = 0, len = a->len;
    char *p = a->buf;
    while (done < len || len == 0) {
        a->buf = p + done;
        a->len = len - done;
        ssize_t r = io_run(fd, 1, op, a, 0, done ? IO_CUT_SHORT : 0, deadline);
        if (r < 0)
            return done ? (ssize_t)done : r;
        done += (size_t)r;
        if (len == 0)
            break;
    }
    return (ssize_t)done;
}

ssize_t weft_write(int fd, const void *buf, size_t len, int64_t deadline)
{
    io_args a = {.buf = (void *)buf, .len = len};
    return write_all(fd, op_write, &a, deadline);
}

ssize_t weft_send(int fd, const void *buf, size_t len, int flags, int64_t deadline)
{
    io_args a = {.buf = (void *)buf, .len = len, .flags = flags};
    return write_all(fd, op_sendto, &a, deadline);
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt && !iov))
        return -EINVAL;
    /* a private copy: a partial write moves its start */
    struct iovec small[16], *v = iovcnt <= 16 ? small : malloc((size_t)iovcnt * sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        v[i] = iov[i];
        total += iov[i].iov_len;
    }
    size_t done = 0;
    int first = 0;
    ssize_t ret = 0;
    do {
        io_args a = {.iov = v + first, .iovcnt = iovcnt - first};
        ssize_t r = io_run(fd, 1, op_writev, &a, 0, done ? IO_CUT_SHORT : 0, deadline);
        if (r < 0) {
            ret = done ? (ssize_t)done : r;
            goto out;
        }
        done += (size_t)r;
        size_t k = (size_t)r;
        while (first < iovcnt && k >= v[first].iov_len) {
            k -= v[first].iov_len;
            first++;
        }
        if (first < iovcnt) {
            v[first].iov_base = (char *)v[first].iov_base + k;
            v[first].iov_len -= k;
        }
    } while (done < total);
    ret = (ssize_t)done;
out:
    if (v != small)
        free(v);
    return ret;
}

int weft_fd_wait(int fd, unsigned events, int64_t deadline)
{
    if (!events || (events & ~(unsigned)(WEFT_READABLE | WEFT_WRITABLE)) ||
        events == (WEFT_READABLE | WEFT_WRITABLE))
        return -EINVAL; /* one direction at a time: the waits are per direction */
    int dir = events == WEFT_WRITABLE;
    io_args a = {.flags = dir ? POLLOUT : POLLIN};
    ssize_t r = io_run(fd, dir, op_poll, &a, 0, IO_READINESS, deadline);
    if (r < 0)
        return (int)r;
    unsigned got = 0;
    if (r & (POLLIN | POLLHUP | POLLERR | POLLRDHUP | POLLPRI))
        got |= WEFT_READABLE;
    if (r & (POLLOUT | POLLHUP | POLLERR))
        got |= WEFT_WRITABLE;
    return (int)(got & events ? got & events : events); /* HUP/ERR: ready, the next call says what */
}

/* accept4, made fiber-aware; fd.c owns the loop, net.c the out-of-fds policy. */
typedef struct {
    struct sockaddr *addr;
    socklen_t *addrlen;
} accept_args;

static ssize_t op_accept(int fd, void *c, bool sock)
{
    accept_args *a = c;
    weft__accept_gate_enter(); /* the fd a shed frees for a moment is its own (net.c) */
    ssize_t r = sys_result(accept4(fd, a->addr, a->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC));
    weft__accept_gate_leave();
    return r;
}

int weft__accept_adopt(int c)
{
    int e = weft__fd_adopt(c);
    if (e < 0) {
        close(c);
        return e;
    }
    return c;
}

int weft__accept_once(int fd, struct sockaddr *addr, socklen_t *addrlen, int64_t deadline)
{
    accept_args a = {addr, addrlen};
    ssize_t r = io_run(fd, 0, op_accept, &a, 0, 0, deadline);
    return r >= 0 ? weft__accept_adopt((int)r) : (int)r;
}

typedef struct {
    const struct sockaddr *addr;
    socklen_t len;
    bool started;
} connect_args;

/* op_connect's answer when connect(2) itself says EAGAIN: a Unix socket's listener has a full backlog.
 * Nothing is in progress then, and no edge comes when room does, so waiting for writability would wait
 * for ever (it did: a dial stayed parked until its deadline however soon the listener accepted).
 * weft_connect tries again after a pause instead. Outside the errno range; never returned to a caller. */
#define CONNECT_NO_ROOM ((ssize_t) - (1 << 20))
#define CONNECT_PAUSE_FIRST_NS ((int64_t)1000000)
#define CONNECT_PAUSE_MAX_NS ((int64_t)100000000)

static ssize_t op_connect(int fd, void *c, bool sock)
{
    connect_args *a = c;
    if (!a->started) {
        if (connect(fd, a->addr, a->len) == 0)
            return 0;
        int e = weft__errno();
        if (e == EAGAIN)
            return CONNECT_NO_ROOM;
        a->started = true;
        /* in progress: wait until writable, then read the outcome */
        return e == EINPROGRESS || e == EINTR ? -EAGAIN : -e;
    }
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        return -weft__errno();
    if (err != 0)
        return -err;
    /* writable with no error: connected, unless the edge was not about the connection (ask the peer) */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        return 0;
    int e = weft__errno();
    return e == ENOTCONN ? -EAGAIN : -e;
}

int weft_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, int64_t deadline)
{
    connect_args a = {addr, addrlen, false};
    /* a blocking connect waits for room in a full backlog: so does this, trying again after a pause,
     * 1 ms doubling to 100 ms (as weft_accept backs off), until the deadline */
    for (int64_t pause = CONNECT_PAUSE_FIRST_NS;; pause = pause < CONNECT_PAUSE_MAX_NS ? 2 * pause : pause) {
        ssize_t r = io_run(fd, 1, op_connect, &a, 0, 0, deadline);
        if (r != CONNECT_NO_ROOM)
            return (int)r;
        int64_t now = weft__clock_ns();
        if (deadline == WEFT_NOWAIT || (deadline > 0 && now >= deadline))
            return -ETIMEDOUT;
        int64_t until = now + pause;
        int s = weft_sleep_until(deadline > 0 && deadline < until ? deadline : until);
        if (s < 0)
            return s; /* cancelled */
    }
}
