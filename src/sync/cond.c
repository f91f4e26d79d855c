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
    weft__wlist q;
} cond_impl;

_Static_assert(sizeof(cond_impl) <= sizeof(weft_cond_t), "weft_cond_t is too small");
_Static_assert(_Alignof(cond_impl) <= _Alignof(weft_cond_t), "weft_cond_t is under-aligned");

static inline cond_impl *cond_of(weft_cond_t *c)
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
    cond_impl *c = cond_of(cc);
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    wq_waiter x;
    uint64_t s = wq_lock(&c->state);
    wq_enqueue(&c->q, &x, self, WEFT__WAIT_COND, c, false);
    wq_unlock(&c->state, s | C_WAITERS);
    int r = weft_mutex_unlock(m);
    if (r != 0) {
        /* the caller did not hold it: call our wait off and say so (a signal that found us already
         * counts as taken: its wakeup lands first) */
        if (weft__wait_claim(&x.w, WEFT__CLAIM_SELF - 1)) {
            s = wq_lock(&c->state);
            weft__wlist_remove(&c->q, &x.n);
            wq_unlock(&c->state, weft__wlist_empty(&c->q) ? s & ~C_WAITERS : s);
        }
        weft__wait_abandon(&x.w);
        return r;
    }
    r = wq_wait_end(&x, weft__park(self, x.w.tok, deadline), &c->state, &s);
    if (r != 0) {
        weft__wlist_remove(&c->q, &x.n);
        wq_unlock(&c->state, weft__wlist_empty(&c->q) ? s & ~C_WAITERS : s);
    } /* else signalled, perhaps just before the deadline or the cancel: the signal is ours */
    weft__mutex_lock(m, WEFT_FOREVER, false);
    return r;
}

static int cond_wake(weft_cond_t *cc, bool all)
{
    if (!cc)
        return -EINVAL;
    cond_impl *c = cond_of(cc);
    if (!(atomic_load_explicit(&c->state, memory_order_acquire) & C_WAITERS))
        return 0;
    weft__wnode *list = NULL, **tail = &list;
    uint64_t s = wq_lock(&c->state);
    for (weft__wnode *x = c->q.head, *next; x; x = next) {
        next = x->next;
        if (weft__wlist_take(&c->q, x, 0, &tail) && !all)
            break;
    }
    wq_unlock(&c->state, weft__wlist_empty(&c->q) ? s & ~C_WAITERS : s); /* our last touch of it */
    weft__wlist_wake(list);
    return 0;
}

int weft_cond_signal(weft_cond_t *c)
{
    return cond_wake(c, false);
}

int weft_cond_broadcast(weft_cond_t *c)
{
    return cond_wake(c, true);
}

int weft_cond_destroy(weft_cond_t *cc)
{
    if (!cc)
        return -EINVAL;
    cond_impl *c = cond_of(cc);
    return atomic_load_explicit(&c->state, memory_order_acquire) & C_WAITERS ? -EBUSY : 0;
}
