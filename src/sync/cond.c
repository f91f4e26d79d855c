/*
 * Condition variable. A waiter queues itself (under the queue lock) before it lets go of the mutex, so
 * a signal sent by anyone who took the mutex after that finds it: no lost wakeups. A signal takes the
 * longest waiter off the queue; a waiter whose deadline or cancel came too late to beat a signal keeps
 * the signal (returns 0), since the signaller counted on it. Then it takes the mutex back, always.
 *
 * The state word holds WQ_LOCK (waitq.h) and C_WAITERS, set while the queue is not empty, so that a
 * signal with nobody waiting is one load. That is enough: a waiter sets C_WAITERS before it lets go of
 * the mutex, and a signaller that changed the condition under the mutex took the mutex after that.
 */
#include <errno.h>
#include <string.h>

#include "sync/waitq.h"

#define C_WAITERS ((uint64_t)2)

typedef struct {
    _Atomic uint64_t state;
    weft__waitq q;
} cond_impl;

_Static_assert(sizeof(cond_impl) <= sizeof(weft_cond_t), "weft_cond_t is too small");
_Static_assert(_Alignof(cond_impl) <= _Alignof(weft_cond_t), "weft_cond_t is under-aligned");

static inline cond_impl *impl(weft_cond_t *c)
{
    return (cond_impl *)(void *)c;
}

int weft_cond_init(weft_cond_t *c)
{
    if (!c)
        return -EINVAL;
    memset(c, 0, sizeof *c);
    return 0;
}

int weft_cond_wait(weft_cond_t *cc, weft_mutex_t *m, int64_t deadline)
{
    if (!cc || !m)
        return -EINVAL;
    cond_impl *c = impl(cc);
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    weft__waiter n;
    uint64_t s = wq_lock(&c->state);
    wq_enqueue(&c->q, &n, self, WEFT__WAIT_COND, c, false);
    wq_unlock(&c->state, s | C_WAITERS);
    int r = weft_mutex_unlock(m);
    if (r != 0) {
        /* the caller did not hold it: take our wait back and say so */
        s = wq_lock(&c->state);
        if (atomic_load_explicit(&n.state, memory_order_relaxed) == WQ_QUEUED) {
            wq_remove(&c->q, &n);
            wq_unlock(&c->state, wq_empty(&c->q) ? s & ~C_WAITERS : s);
            weft__park_cancel(self, n.tok);
            return r;
        }
        wq_unlock(&c->state, s);
        /* a signal found us already: let its wakeup land, then report the misuse */
        weft__park_uncancellable(self, n.tok, WEFT_FOREVER);
        return r;
    }
    r = weft__park(self, n.tok, deadline);
    if (r != 0) {
        s = wq_lock(&c->state);
        bool queued = atomic_load_explicit(&n.state, memory_order_relaxed) == WQ_QUEUED;
        if (queued)
            wq_remove(&c->q, &n);
        wq_unlock(&c->state, wq_empty(&c->q) ? s & ~C_WAITERS : s);
        if (!queued) {
            wq_settle(&n);
            r = 0; /* signalled before the deadline or cancel took effect: the signal is ours */
        }
    }
    weft__mutex_lock(m, WEFT_FOREVER, false);
    return r;
}

static int wake(weft_cond_t *cc, bool all)
{
    if (!cc)
        return -EINVAL;
    cond_impl *c = impl(cc);
    if (!(atomic_load_explicit(&c->state, memory_order_acquire) & C_WAITERS))
        return 0;
    weft__waiter *list = NULL, **tail = &list;
    uint64_t s = wq_lock(&c->state);
    while (c->q.head) {
        wq_take(&c->q, c->q.head, 0, &tail);
        if (!all)
            break;
    }
    wq_unlock(&c->state, wq_empty(&c->q) ? s & ~C_WAITERS : s); /* our last touch of it */
    wq_wake(list);
    return 0;
}

int weft_cond_signal(weft_cond_t *c)
{
    return wake(c, false);
}

int weft_cond_broadcast(weft_cond_t *c)
{
    return wake(c, true);
}

int weft_cond_destroy(weft_cond_t *cc)
{
    if (!cc)
        return -EINVAL;
    cond_impl *c = impl(cc);
    return atomic_load_explicit(&c->state, memory_order_acquire) & C_WAITERS ? -EBUSY : 0;
}
