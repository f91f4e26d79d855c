/*
 * Fiber-aware file descriptors: waiting for readiness, the read/write family, close.
 *
 * THE JOB
 * A fiber that reads a socket with nothing to read must park and give its worker to other fibers, and
 * wake when data comes, at once, without a system call per wait beyond the read that found nothing.
 * A thread that is not a fiber blocks instead. Closing an fd wakes whoever waits on it, with an error; a
 * reused fd number never gets the events of the file it replaced; deadlines are absolute.
 *
 * THE APPROACH
 *  - Every fd has a descriptor (weft__pd) in a table indexed by fd number. Descriptors are never freed
 *    (the table only grows), so the poller may look one up for a stale event at any time.
 *  - The first weft call on an fd puts it in non-blocking mode and registers it with the poller,
 *    edge-triggered for both directions, with the key (generation << 32 | fd). weft_close bumps the
 *    generation, so an event still in flight for the closed file names an old generation and is dropped.
 *  - Per direction, a readiness sequence counts the edges the poller has seen. An operation reads the
 *    sequence, then tries the system call; on EAGAIN it takes the descriptor's lock and parks only if the
 *    sequence has not moved meanwhile. An edge that came in between makes it try again instead, so no
 *    edge is ever lost between the try and the park.
 *  - Waiters queue on the descriptor (nodes on their own stacks, under its lock). The poller takes all
 *    waiters of a direction when an edge comes and wakes them; each tries its call again. (Waking all
 *    matters when several fibers accept on one listening socket: one edge may stand for many clients.)
 *  - Operations in flight hold a reference. weft_close marks the descriptor closed and wakes its waiters
 *    (they return -EBADF), waits for the references to drain, and only then closes the fd: a read can
 *    never run on a number that close has already handed back to the system for reuse.
 *  - Regular files cannot be polled (epoll says EPERM; they are always "ready" and block in the kernel):
 *    in a fiber, their reads and writes run on the blocking pool (blocking.c).
 *  - Threads that are not fibers use the same waiters when the runtime runs (they park on a futex), and
 *    poll(2) when it does not.
 *  - A write returns the count written when an error ends it after some bytes went out, and the next call
 *    on the fd reports the error. A socket's kernel reports its error (a reset, the kernel's own timeout)
 *    only once, to the first call that asks, and that was the write's: so the write keeps it in the
 *    descriptor (pending) and the next call returns it; a read first gets the bytes that came before it.
 *    (Without that, a reset that cut a write short was lost: the next read saw a clean end of stream.)
 *
 * MEMORY ORDERING
 *  - Sequence: the poller increments it under the lock (release); an operation loads it (acquire) before
 *    its system call and compares under the lock. Either the poller's increment comes after the load (the
 *    compare sees it and the operation retries) or before (the load saw it; the system call then sees the
 *    data that caused the edge).
 *  - Close against operations: an operation increments refs and then loads the state (both seq_cst);
 *    close stores CLOSED and then loads refs. One of the two sees the other.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/wait.h"
#include "io/io.h"
#include "io/poll.h"

/* ------------------------------------------------------------------------------------------------ */
/* Descriptors                                                                                       */

enum { PD_UNUSED = 0, PD_OPEN = 1, PD_CLOSED = 2 };

typedef struct weft__pd {
    weft__spinlock lock;
    _Atomic uint32_t state;   /* PD_*: written under the lock */
    _Atomic uint32_t gen;     /* bumped by close: events of an older generation are stale */
    uint32_t epoch;           /* the poller it is registered with (io.epoch); under the lock */
    bool file;                /* cannot be polled: a regular file or the like; under the lock */
    bool sock;                /* a socket: writes use send(MSG_NOSIGNAL), never raising SIGPIPE */
    bool drains;              /* a stream socket or a pipe: a short read leaves nothing to read */
    _Atomic uint32_t seq[2];  /* edges seen, per direction (0 read, 1 write) */
    _Atomic uint32_t dry;     /* 1 + the read sequence at which a short read emptied it; 0: unknown */
    _Atomic bool ended;       /* the poller saw the peer close or an error: reads always try */
    _Atomic int pending;      /* an error that cut a write short, for the next call (a -errno, or 0) */
    weft__wlist waiters[2];   /* the one waiter's nodes (core/wait.h), per direction; under the lock */
    _Atomic int32_t refs;     /* operations in flight */
} weft__pd;

#define CHUNK_SHIFT 10
#define CHUNK_N (1u << CHUNK_SHIFT)

static struct {
    weft__spinlock grow_lock;
    weft__pd *_Atomic *chunks; /* chunks[fd >> CHUNK_SHIFT]; allocated at first use, never freed */
    size_t nchunks;
    _Atomic uint32_t epoch;    /* bumped at every runtime start: registrations with older pollers are void */
    _Atomic int running;       /* the poller exists */
    _Atomic int64_t waiting;   /* fibers and threads parked on fds: the poller has work */
    _Atomic uint64_t polls;    /* looks at the poller so far (approximate: it only has to move) */
} io;

static size_t max_chunks(void)
{
    struct rlimit rl;
    rlim_t n = 1u << 20;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max > n)
        n = rl.rlim_max;
    if (n > ((rlim_t)1 << 30))
        n = (rlim_t)1 << 30;
    return (size_t)((n + CHUNK_N - 1) >> CHUNK_SHIFT);
}

/* The descriptor of fd, made if need be; NULL only when out of memory or fd is out of range. */
static weft__pd *pd_of(int fd)
{
    size_t c = (size_t)fd >> CHUNK_SHIFT;
    weft__pd *_Atomic *chunks = __atomic_load_n(&io.chunks, __ATOMIC_ACQUIRE);
    if (WEFT__UNLIKELY(!chunks)) {
        weft__spin_lock(&io.grow_lock);
        if (!io.chunks) {
            size_t n = max_chunks();
            weft__pd *_Atomic *t = calloc(n, sizeof *t);
            if (t) {
                io.nchunks = n;
                __atomic_store_n(&io.chunks, t, __ATOMIC_RELEASE);
            }
        }
        weft__spin_unlock(&io.grow_lock);
        chunks = __atomic_load_n(&io.chunks, __ATOMIC_ACQUIRE);
        if (!chunks)
            return NULL;
    }
    if (c >= io.nchunks)
        return NULL;
    weft__pd *chunk = atomic_load_explicit(&chunks[c], memory_order_acquire);
    if (WEFT__UNLIKELY(!chunk)) {
        weft__pd *fresh = calloc(CHUNK_N, sizeof *fresh);
        if (!fresh)
            return NULL;
        weft__pd *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&chunks[c], &expected, fresh, memory_order_acq_rel,
                                                    memory_order_acquire))
            chunk = fresh;
        else {
            free(fresh);
            chunk = expected;
        }
    }
    return &chunk[(size_t)fd & (CHUNK_N - 1)];
}

/* The descriptor of fd if one exists (for the poller: never allocates). */
static weft__pd *pd_find(int fd)
{
    weft__pd *_Atomic *chunks = __atomic_load_n(&io.chunks, __ATOMIC_ACQUIRE);
    size_t c = (size_t)fd >> CHUNK_SHIFT;
    if (!chunks || fd < 0 || c >= io.nchunks)
        return NULL;
    weft__pd *chunk = atomic_load_explicit(&chunks[c], memory_order_acquire);
    return chunk ? &chunk[(size_t)fd & (CHUNK_N - 1)] : NULL;
}

static inline uint64_t pd_key(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint32_t)fd;
}

/* Make fd ready for weft's calls: non-blocking, and registered with the poller when it runs. Under the
 * descriptor's lock. */
static int pd_open_locked(weft__pd *pd, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -weft__errno();
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -weft__errno();
    pd->file = false;
    struct stat st;
    pd->sock = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    int type = 0;
    socklen_t tlen = sizeof type;
    pd->drains = pd->sock ? getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM
                          : S_ISFIFO(st.st_mode);
    atomic_store_explicit(&pd->dry, 0, memory_order_relaxed);
    atomic_store_explicit(&pd->ended, false, memory_order_relaxed);
    if (atomic_load_explicit(&io.running, memory_order_acquire)) {
        uint32_t gen = atomic_load_explicit(&pd->gen, memory_order_relaxed);
        int r = weft__poll_add(fd, pd_key(fd, gen));
        if (r == -EPERM)
            pd->file = true;
        else if (r < 0 && r != -EEXIST)
            return r;
        pd->epoch = atomic_load_explicit(&io.epoch, memory_order_relaxed);
    } else {
        pd->epoch = 0; /* no poller yet: register when one exists */
    }
    atomic_store_explicit(&pd->state, PD_OPEN, memory_order_release);
    return 0;
}

/* The checker (WEFT_DEBUG 3), under the descriptor's lock: a known state, references never below zero,
 * valid waiter lists, and no waiter on a descriptor nobody uses. */
static bool pd_valid(weft__pd *pd)
{
    uint32_t st = atomic_load_explicit(&pd->state, memory_order_relaxed);
    if (st > PD_CLOSED || atomic_load_explicit(&pd->refs, memory_order_relaxed) < 0)
        return false;
    for (int dir = 0; dir < 2; dir++) {
        if (!weft__wlist_valid(&pd->waiters[dir]))
            return false;
        if (st == PD_UNUSED && !weft__wlist_empty(&pd->waiters[dir]))
            return false;
    }
    return true;
}

/* Begin an operation on fd: the descriptor, open and registered, with a reference held; or NULL and
 * *err. */
static weft__pd *op_begin(int fd, int *err)
{
    if (fd < 0) {
        *err = -EBADF;
        return NULL;
    }
    weft__pd *pd = pd_of(fd);
    if (!pd) {
        *err = -ENOMEM;
        return NULL;
    }
    for (;;) {
        atomic_fetch_add_explicit(&pd->refs, 1, memory_order_seq_cst);
        uint32_t st = atomic_load_explicit(&pd->state, memory_order_seq_cst);
        uint32_t epoch = atomic_load_explicit(&io.epoch, memory_order_relaxed);
        bool running = atomic_load_explicit(&io.running, memory_order_relaxed);
        if (WEFT__LIKELY(st == PD_OPEN && (pd->epoch == epoch || !running)))
            return pd;
        if (st == PD_CLOSED) {
            /* a close is under way: let it finish (it waits for our reference to go), then look again,
             * since the number may already belong to a new file */
            atomic_fetch_sub_explicit(&pd->refs, 1, memory_order_release);
            while (atomic_load_explicit(&pd->state, memory_order_acquire) == PD_CLOSED) {
                if (weft__on_worker())
                    weft_yield();
                else
                    sched_yield();
            }
            continue;
        }
        int r = 0;
        weft__spin_lock(&pd->lock);
        st = atomic_load_explicit(&pd->state, memory_order_relaxed);
        if (st == PD_UNUSED || (st == PD_OPEN && pd->epoch != epoch && running))
            r = pd_open_locked(pd, fd);
        weft__spin_unlock(&pd->lock);
        if (r < 0) {
            atomic_fetch_sub_explicit(&pd->refs, 1, memory_order_release);
            *err = r;
            return NULL;
        }
        if (st == PD_CLOSED) { /* closed between our look and the lock */
            atomic_fetch_sub_explicit(&pd->refs, 1, memory_order_release);
            continue;
        }
        return pd;
    }
}

static inline void op_end(weft__pd *pd)
{
    atomic_fetch_sub_explicit(&pd->refs, 1, memory_order_release);
}

/* The fd was made by weft just now (accept, socket): whatever the table says about its number belongs
 * to a file closed behind weft's back; start afresh. */
int weft__fd_adopt(int fd)
{
    weft__pd *pd = pd_of(fd);
    if (!pd)
        return -ENOMEM;
    weft__spin_lock(&pd->lock);
    if (atomic_load_explicit(&pd->state, memory_order_relaxed) == PD_OPEN)
        atomic_fetch_add_explicit(&pd->gen, 1, memory_order_relaxed); /* old events are stale */
    atomic_store_explicit(&pd->pending, 0, memory_order_relaxed);   /* and so is an error kept for them */
    int r = pd_open_locked(pd, fd);
    weft__spin_unlock(&pd->lock);
    return r;
}

/* ------------------------------------------------------------------------------------------------ */
/* Waiting                                                                                           */

/* Park until the direction's sequence moves past seq, the fd is closed, or the deadline. 0: try again;
 * -EBADF: closed; -ETIMEDOUT; -ECANCELED. */
static int pd_park(weft__pd *pd, int dir, uint32_t seq, uint32_t gen, int64_t deadline)
{
    if (deadline == WEFT_NOWAIT)
        return -ETIMEDOUT;
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    /* The waiter list is runtime bookkeeping, hidden from TSan like the scheduler's: its lock is often
     * taken by a worker's idle loop, whose synchronisation TSan does not see, and a node on one fiber's
     * stack is written by the others that queue beside it. */
    weft__wait w;
    weft__wnode node;
    weft__tsan_internal_begin();
    weft__spin_lock(&pd->lock);
    if (atomic_load_explicit(&pd->gen, memory_order_relaxed) != gen) {
        weft__spin_unlock(&pd->lock);
        weft__tsan_internal_end();
        return -EBADF;
    }
    if (atomic_load_explicit(&pd->seq[dir], memory_order_relaxed) != seq) {
        weft__spin_unlock(&pd->lock);
        weft__tsan_internal_end();
        return 0; /* an edge came since the try */
    }
    weft__wait_begin(&w, self, dir ? WEFT__WAIT_IO_WRITE : WEFT__WAIT_IO_READ, pd);
    w.solo = true; /* called off only under the lock, below */
    weft__wnode_init(&node, &w, 0);
    weft__wlist_push(&pd->waiters[dir], &node);
    weft__check(pd_valid(pd));
    weft__spin_unlock(&pd->lock);
    weft__tsan_internal_end();

    atomic_fetch_add_explicit(&io.waiting, 1, memory_order_seq_cst);
    weft__io_waiter_added();
    int r = weft__park(self, w.tok, deadline);
    atomic_fetch_sub_explicit(&io.waiting, 1, memory_order_relaxed);
    if (r != 0) {
        weft__tsan_internal_begin();
        weft__spin_lock(&pd->lock);
        bool off = weft__wait_call_off_locked(&w);
        if (off)
            weft__wlist_remove(&pd->waiters[dir], &node);
        weft__spin_unlock(&pd->lock);
        weft__tsan_internal_end();
        if (off)
            return r;
        /* else woken after all: an edge or a close; look again */
    }
    weft__wait_settle(&w);
    return atomic_load_explicit(&pd->gen, memory_order_acquire) != gen ? -EBADF : 0;
}

/* Wake every waiter of one direction: an edge or a close, which each of them looks at again. A node
 * that cannot be won (a select that another case settled, a wait being called off) stays for its
 * owner to take out. Under the lock. */
static int wake_dir(weft__pd *pd, int dir)
{
    int n = 0;
    weft__tsan_internal_begin(); /* the list, as pd_park hides it */
    for (weft__wnode *x = pd->waiters[dir].head, *next; x; x = next) {
        next = x->next;
        if (!weft__wnode_claim(x))
            continue;
        weft__wlist_remove(&pd->waiters[dir], x);
        weft__wakeup k = weft__wait_finish(x->w); /* our last touch of the node */
        n += weft__unpark_fifo(k.f, k.tok, WEFT__PW_OK);
    }
    weft__check(pd_valid(pd));
    weft__tsan_internal_end();
    return n;
}

int weft__io_poll(int64_t deadline)
{
    /* a plain load and store, not an atomic increment: a lost count does not matter, a locked
     * instruction on a line every polling worker writes would */
    atomic_store_explicit(&io.polls, atomic_load_explicit(&io.polls, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    weft__poll_event ev[64];
    int n = weft__poll_wait(ev, 64, deadline);
    int woken = 0;
    for (int i = 0; i < n; i++) {
        int fd = (int)(uint32_t)ev[i].key;
        uint32_t gen = (uint32_t)(ev[i].key >> 32);
        weft__pd *pd = pd_find(fd);
        if (!pd)
            continue;
        weft__spin_lock(&pd->lock);
        if (atomic_load_explicit(&pd->gen, memory_order_relaxed) == gen) { /* else: an event of a closed file */
            for (int dir = 0; dir < 2; dir++) {
                if (!(ev[i].events & (dir ? WEFT__POLL_OUT : WEFT__POLL_IN)))
                    continue;
                if (dir == 0 && (ev[i].events & WEFT__POLL_END))
                    atomic_store_explicit(&pd->ended, true, memory_order_relaxed);
                atomic_fetch_add_explicit(&pd->seq[dir], 1, memory_order_release);
                woken += wake_dir(pd, dir);
            }
        }
        weft__spin_unlock(&pd->lock);
    }
    return woken;
}

uint64_t weft__io_polls(void)
{
    return atomic_load_explicit(&io.polls, memory_order_relaxed);
}

int64_t weft__io_waiting(void)
{
    return atomic_load_explicit(&io.waiting, memory_order_seq_cst);
}

int weft__io_start(void)
{
    int r = weft__poll_open();
    if (r < 0)
        return r;
    atomic_fetch_add_explicit(&io.epoch, 1, memory_order_relaxed);
    atomic_store_explicit(&io.running, 1, memory_order_release);
    return 0;
}

void weft__io_stop(void)
{
    atomic_store_explicit(&io.running, 0, memory_order_release);
    weft__poll_close();
}

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
    weft__pd *pd = op_begin(fd, &err);
    if (!pd)
        return err;
    ssize_t r;
    if (WEFT__UNLIKELY(atomic_load_explicit(&pd->pending, memory_order_relaxed) != 0)) {
        /* A write that an error cut short kept the error for this call. A read first gets the bytes that
         * came before the error, as the kernel gives them (a server's answer, then its reset); a wait for
         * readiness is told the fd is ready. */
        if (flags & IO_READINESS) {
            op_end(pd);
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
            op_end(pd);
            return r;
        }
        /* another call took it meanwhile: go on as usual */
    }
    if (WEFT__UNLIKELY(pd->file) && weft__on_worker()) {
        file_job j = {op, fd, ctx, 0};
        int b = weft_blocking_until(run_file_job, &j, NULL, deadline);
        op_end(pd);
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
        if (atomic_load_explicit(&io.running, memory_order_acquire) &&
            pd->epoch == atomic_load_explicit(&io.epoch, memory_order_relaxed))
            w = pd_park(pd, dir, seq, gen, deadline);
        else
            w = thread_poll(fd, dir, deadline);
        if (w < 0) {
            r = w;
            break;
        }
    }
    op_end(pd);
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

int weft__accept_once(int fd, struct sockaddr *addr, socklen_t *addrlen, int64_t deadline)
{
    accept_args a = {addr, addrlen};
    ssize_t r = io_run(fd, 0, op_accept, &a, 0, 0, deadline);
    if (r >= 0) {
        int e = weft__fd_adopt((int)r);
        if (e < 0) {
            close((int)r);
            return e;
        }
    }
    return (int)r;
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

/* ------------------------------------------------------------------------------------------------ */
/* select's cases on fds (core/wait.h)                                                              */
/*
 * An fd case holds a reference on the fd from the moment the select reads it until it returns, as an
 * operation in flight does, so a weft_close meanwhile wakes it (-EBADF) and waits for it to leave. It
 * looks with poll(2) first (c->result: the events ready then); then, under the fd's lock, the case is
 * ready if that look found something, if the file was closed, or if an edge came since (looked at
 * again). Else its node waits with the others of its direction and the next edge or close wakes it.
 * c->key holds the generation and the sequence the look saw: gen << 32 | seq.
 */

static unsigned revents_to_events(int revents)
{
    unsigned got = 0;
    if (revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP | POLLPRI))
        got |= WEFT_READABLE;
    if (revents & (POLLOUT | POLLHUP | POLLERR))
        got |= WEFT_WRITABLE;
    return got;
}

/* poll(fd, 0) for one direction: the ready events of that direction (HUP/ERR count), 0, or -EBADF. */
static int sel_fd_look(int fd, int dir)
{
    struct pollfd p = {.fd = fd, .events = dir ? POLLOUT : POLLIN};
    int r;
    while ((r = poll(&p, 1, 0)) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return -weft__errno();
    if (r == 0)
        return 0;
    if (p.revents & POLLNVAL)
        return -EBADF;
    unsigned want = dir ? WEFT_WRITABLE : WEFT_READABLE, got = revents_to_events(p.revents);
    return (int)(got & want ? got & want : want); /* HUP/ERR: ready, the next call says what */
}

static uint64_t sel_fd_lock(void *obj)
{
    weft__tsan_internal_begin();
    weft__spin_lock(&((weft__pd *)obj)->lock);
    weft__tsan_internal_end();
    return 0;
}

static void sel_fd_unlock(void *obj, uint64_t s)
{
    (void)s;
    weft__tsan_internal_begin();
    weft__spin_unlock(&((weft__pd *)obj)->lock);
    weft__tsan_internal_end();
}

static int sel_fd_poll(weft__sel_case *c, weft__wakeup *k)
{
    (void)k;
    weft__pd *pd = c->obj;
    int dir = c->aux & 1;
    if (atomic_load_explicit(&pd->gen, memory_order_relaxed) != (uint32_t)(c->key >> 32)) {
        c->result = -EBADF;
        return 1;
    }
    if (c->result != 0)
        return 1; /* ready when we looked */
    uint32_t seq = atomic_load_explicit(&pd->seq[dir], memory_order_relaxed);
    if (seq == (uint32_t)c->key)
        return 0;
    /* an edge since we looked: look again (rare), under the lock, so no later edge goes unseen */
    c->key = (c->key & ~(uint64_t)UINT32_MAX) | seq;
    c->result = sel_fd_look(c->aux >> 1, dir);
    return c->result != 0;
}

static int sel_fd_enqueue(weft__sel_case *c)
{
    weft__pd *pd = c->obj;
    weft__tsan_internal_begin();
    weft__wlist_push(&pd->waiters[c->aux & 1], &c->node);
    weft__tsan_internal_end();
    return WEFT__ARM_QUEUED;
}

static void sel_fd_disarm(weft__sel_case *c)
{
    weft__pd *pd = c->obj;
    weft__tsan_internal_begin();
    weft__spin_lock(&pd->lock);
    weft__wlist_remove(&pd->waiters[c->aux & 1], &c->node); /* not won by an edge or a close */
    weft__spin_unlock(&pd->lock);
    weft__tsan_internal_end();
}

/* Woken by an edge or a close: say which. */
static void sel_fd_complete(weft__sel_case *c)
{
    weft__pd *pd = c->obj;
    int dir = c->aux & 1;
    if (atomic_load_explicit(&pd->gen, memory_order_acquire) != (uint32_t)(c->key >> 32)) {
        c->result = -EBADF;
        return;
    }
    int r = sel_fd_look(c->aux >> 1, dir);
    c->result = r != 0 ? r : (int)(dir ? WEFT_WRITABLE : WEFT_READABLE); /* taken meanwhile: as an edge says */
}

static void sel_fd_release(weft__sel_case *c)
{
    atomic_fetch_sub_explicit(&io.waiting, 1, memory_order_relaxed);
    op_end(c->obj);
}

const weft__sel_ops weft__sel_fd = {sel_fd_lock,   sel_fd_unlock,   sel_fd_poll,   sel_fd_enqueue,
                                    sel_fd_disarm, sel_fd_complete, sel_fd_release};

/* An fd that is not open: always ready, with -EBADF. */
static int sel_fd_bad_poll(weft__sel_case *c, weft__wakeup *k)
{
    (void)k;
    c->result = -EBADF;
    return 1;
}

static const weft__sel_ops sel_fd_bad = {NULL, NULL, sel_fd_bad_poll, NULL, NULL, NULL, NULL};

int weft__sel_fd_open(weft__sel_case *c)
{
    int fd = c->aux >> 1, dir = c->aux & 1;
    if (!atomic_load_explicit(&io.running, memory_order_acquire))
        return -ESHUTDOWN; /* no poller: nothing would tell us of an edge */
    int err;
    weft__pd *pd = op_begin(fd, &err);
    if (!pd) {
        if (err != -EBADF)
            return err;
        c->ops = &sel_fd_bad, c->obj = c; /* any non-NULL object: it is never locked */
        return 0;
    }
    if (pd->epoch != atomic_load_explicit(&io.epoch, memory_order_relaxed)) {
        op_end(pd);
        return -ESHUTDOWN; /* registered with a poller that has gone: the runtime is stopping */
    }
    uint32_t gen = atomic_load_explicit(&pd->gen, memory_order_relaxed);
    uint32_t seq = atomic_load_explicit(&pd->seq[dir], memory_order_acquire);
    int r = atomic_load_explicit(&pd->pending, memory_order_relaxed) != 0
                ? (int)(dir ? WEFT_WRITABLE : WEFT_READABLE) /* an error kept for the next call: ready */
                : sel_fd_look(fd, dir);
    if (r == -EBADF) {
        op_end(pd);
        c->ops = &sel_fd_bad, c->obj = c;
        return 0;
    }
    c->ops = &weft__sel_fd;
    c->obj = pd;
    c->key = (uint64_t)gen << 32 | seq;
    c->result = r < 0 ? 0 : r;
    atomic_fetch_add_explicit(&io.waiting, 1, memory_order_seq_cst);
    weft__io_waiter_added();
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Close                                                                                             */

/* After close(2): the descriptor is unused again, unless the number already went to a new file that
 * weft adopted (a socket or an accepted connection made between our close(2) and now: its registration
 * and its waiters are the new file's, and must not be forgotten). */
static void pd_closed(weft__pd *pd)
{
    weft__spin_lock(&pd->lock);
    if (atomic_load_explicit(&pd->state, memory_order_relaxed) == PD_CLOSED) {
        atomic_store_explicit(&pd->pending, 0, memory_order_relaxed); /* it was the closed file's */
        atomic_store_explicit(&pd->state, PD_UNUSED, memory_order_release);
    }
    weft__check(pd_valid(pd));
    weft__spin_unlock(&pd->lock);
}

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    weft__pd *pd = pd_of(fd);
    if (!pd)
        return close(fd) == 0 ? 0 : -weft__errno();
    /* decided under the lock: a call registering the fd right now is either seen (OPEN) or sees CLOSED
     * and waits, so no registration outlives the file it was made for */
    weft__spin_lock(&pd->lock);
    uint32_t st = atomic_load_explicit(&pd->state, memory_order_relaxed);
    if (st == PD_CLOSED) {
        weft__spin_unlock(&pd->lock);
        return -EBADF; /* closed by another call meanwhile */
    }
    atomic_store_explicit(&pd->state, PD_CLOSED, memory_order_seq_cst);
    if (st == PD_UNUSED) { /* never used with weft: a plain close */
        weft__spin_unlock(&pd->lock);
        int r = close(fd) == 0 ? 0 : -weft__errno();
        pd_closed(pd);
        return r == -EINTR ? 0 : r;
    }
    atomic_fetch_add_explicit(&pd->gen, 1, memory_order_release);
    wake_dir(pd, 0);
    wake_dir(pd, 1);
    bool polled = !pd->file && pd->epoch == atomic_load_explicit(&io.epoch, memory_order_relaxed) &&
                  atomic_load_explicit(&io.running, memory_order_relaxed);
    weft__spin_unlock(&pd->lock);
    /* let operations in flight see the close and leave before the number goes back to the system */
    while (atomic_load_explicit(&pd->refs, memory_order_seq_cst) > 0) {
        if (weft__on_worker())
            weft_yield();
        else
            sched_yield();
    }
    if (polled)
        weft__poll_del(fd);
    int r = close(fd) == 0 ? 0 : -weft__errno();
    pd_closed(pd);
    return r == -EINTR ? 0 : r; /* Linux frees the fd even when close says EINTR */
}
