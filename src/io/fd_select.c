/*
 * An fd as a case of weft_select_any (core/wait.h's face; the essay at the top of fd.c for the
 * descriptor's protocol).
 */
#include <errno.h>
#include <poll.h>

#include "core/park.h"
#include "core/wait.h"
#include "io/fd.h"
#include "io/io.h"
#include "io/poll.h"

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
    atomic_fetch_sub_explicit(&weft__io.waiting, 1, memory_order_relaxed);
    weft__op_end(c->obj);
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
    if (!atomic_load_explicit(&weft__io.running, memory_order_acquire))
        return -ESHUTDOWN; /* no poller: nothing would tell us of an edge */
    int err;
    weft__pd *pd = weft__op_begin(fd, &err);
    if (!pd) {
        if (err != -EBADF)
            return err;
        c->ops = &sel_fd_bad, c->obj = c; /* any non-NULL object: it is never locked */
        return 0;
    }
    if (pd->epoch != atomic_load_explicit(&weft__io.epoch, memory_order_relaxed)) {
        weft__op_end(pd);
        return -ESHUTDOWN; /* registered with a poller that has gone: the runtime is stopping */
    }
    uint32_t gen = atomic_load_explicit(&pd->gen, memory_order_relaxed);
    uint32_t seq = atomic_load_explicit(&pd->seq[dir], memory_order_acquire);
    int r = atomic_load_explicit(&pd->pending, memory_order_relaxed) != 0
                ? (int)(dir ? WEFT_WRITABLE : WEFT_READABLE) /* an error kept for the next call: ready */
                : sel_fd_look(fd, dir);
    if (r == -EBADF) {
        weft__op_end(pd);
        c->ops = &sel_fd_bad, c->obj = c;
        return 0;
    }
    c->ops = &weft__sel_fd;
    c->obj = pd;
    c->key = (uint64_t)gen << 32 | seq;
    c->result = r < 0 ? 0 : r;
    atomic_fetch_add_explicit(&weft__io.waiting, 1, memory_order_seq_cst);
    weft__io_waiter_added();
    return 0;
}
