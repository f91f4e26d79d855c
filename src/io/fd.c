/*
 * Fiber-aware file descriptors: the descriptor table, waiting for readiness on a descriptor, close.
 *
 * The I/O layer is four files on one header (io/fd.h): this one, the table and the waits; dispatch.c,
 * the poller's side (events in, waiters woken); calls.c, the read/write family on top; fd_select.c, an
 * fd as a case of weft_select_any. What follows is the design of all four.
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
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/park.h"
#include "core/wait.h"
#include "io/fd.h"
#include "io/io.h"
#include "io/poll.h"

/* ------------------------------------------------------------------------------------------------ */
/* Descriptors                                                                                       */


#define CHUNK_SHIFT 10
#define CHUNK_N (1u << CHUNK_SHIFT)

static struct {
    weft__spinlock grow_lock;
    weft__pd *_Atomic *chunks; /* chunks[fd >> CHUNK_SHIFT]; allocated at first use, never freed */
    size_t nchunks;
} table;

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
weft__pd *weft__pd_of(int fd)
{
    size_t c = (size_t)fd >> CHUNK_SHIFT;
    weft__pd *_Atomic *chunks = __atomic_load_n(&table.chunks, __ATOMIC_ACQUIRE);
    if (WEFT__UNLIKELY(!chunks)) {
        weft__spin_lock(&table.grow_lock);
        if (!table.chunks) {
            size_t n = max_chunks();
            weft__pd *_Atomic *t = calloc(n, sizeof *t);
            if (t) {
                table.nchunks = n;
                __atomic_store_n(&table.chunks, t, __ATOMIC_RELEASE);
            }
        }
        weft__spin_unlock(&table.grow_lock);
        chunks = __atomic_load_n(&table.chunks, __ATOMIC_ACQUIRE);
        if (!chunks)
            return NULL;
    }
    if (c >= table.nchunks)
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
weft__pd *weft__pd_find(int fd)
{
    weft__pd *_Atomic *chunks = __atomic_load_n(&table.chunks, __ATOMIC_ACQUIRE);
    size_t c = (size_t)fd >> CHUNK_SHIFT;
    if (!chunks || fd < 0 || c >= table.nchunks)
        return NULL;
    weft__pd *chunk = atomic_load_explicit(&chunks[c], memory_order_acquire);
    return chunk ? &chunk[(size_t)fd & (CHUNK_N - 1)] : NULL;
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
    if (atomic_load_explicit(&weft__io.running, memory_order_acquire)) {
        uint32_t gen = atomic_load_explicit(&pd->gen, memory_order_relaxed);
        int r = weft__poll_add(fd, weft__pd_key(fd, gen));
        if (r == -EPERM)
            pd->file = true;
        else if (r < 0 && r != -EEXIST)
            return r;
        pd->epoch = atomic_load_explicit(&weft__io.epoch, memory_order_relaxed);
    } else {
        pd->epoch = 0; /* no poller yet: register when one exists */
    }
    atomic_store_explicit(&pd->state, PD_OPEN, memory_order_release);
    return 0;
}

/* The checker (WEFT_DEBUG 3), under the descriptor's lock: a known state, references never below zero,
 * valid waiter lists, and no waiter on a descriptor nobody uses. */
bool weft__pd_valid(weft__pd *pd)
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
weft__pd *weft__op_begin(int fd, int *err)
{
    if (fd < 0) {
        *err = -EBADF;
        return NULL;
    }
    weft__pd *pd = weft__pd_of(fd);
    if (!pd) {
        *err = -ENOMEM;
        return NULL;
    }
    for (;;) {
        atomic_fetch_add_explicit(&pd->refs, 1, memory_order_seq_cst);
        uint32_t st = atomic_load_explicit(&pd->state, memory_order_seq_cst);
        uint32_t epoch = atomic_load_explicit(&weft__io.epoch, memory_order_relaxed);
        bool running = atomic_load_explicit(&weft__io.running, memory_order_relaxed);
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


/* The fd was made by weft just now (accept, socket): whatever the table says about its number belongs
 * to a file closed behind weft's back; start afresh. */
int weft__fd_adopt(int fd)
{
    weft__pd *pd = weft__pd_of(fd);
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
int weft__pd_park(weft__pd *pd, int dir, uint32_t seq, uint32_t gen, int64_t deadline)
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
    weft__check(weft__pd_valid(pd));
    weft__spin_unlock(&pd->lock);
    weft__tsan_internal_end();

    atomic_fetch_add_explicit(&weft__io.waiting, 1, memory_order_seq_cst);
    weft__io_waiter_added();
    int r = weft__park(self, w.tok, deadline);
    atomic_fetch_sub_explicit(&weft__io.waiting, 1, memory_order_relaxed);
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
int weft__pd_wake_dir(weft__pd *pd, int dir)
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
    weft__check(weft__pd_valid(pd));
    weft__tsan_internal_end();
    return n;
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
    weft__check(weft__pd_valid(pd));
    weft__spin_unlock(&pd->lock);
}

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    weft__pd *pd = weft__pd_of(fd);
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
    weft__pd_wake_dir(pd, 0);
    weft__pd_wake_dir(pd, 1);
    bool polled = !pd->file && pd->epoch == atomic_load_explicit(&weft__io.epoch, memory_order_relaxed) &&
                  atomic_load_explicit(&weft__io.running, memory_order_relaxed);
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
