/*
 * Once. The state word:
 *   bit 0  WQ_LOCK    the queue lock (waitq.h)
 *   bit 1  O_RUNNING  a caller is running the initialiser
 *   bit 2  O_DONE     it has returned: from now on weft_once is one load
 * The first caller to find neither bit runs fn with no lock held; the others queue and park until it
 * has returned. Its last touch of the object is the store that sets O_DONE, as for every primitive
 * here (waitq.h), so a caller that sees O_DONE may free the object at once.
 */
#include <errno.h>

#include "sync/waitq.h"

#define O_RUNNING ((uint64_t)2)
#define O_DONE ((uint64_t)4)

typedef struct {
    _Atomic uint64_t state;
    weft__wlist q;
    weft__fiber *runner; /* who runs fn (O_RUNNING); protected by WQ_LOCK */
} once_impl;

_Static_assert(sizeof(once_impl) <= sizeof(weft_once_t), "weft_once_t is too small");
_Static_assert(_Alignof(once_impl) <= _Alignof(weft_once_t), "weft_once_t is under-aligned");

int weft_once(weft_once_t *oo, void (*fn)(void *arg), void *arg)
{
    if (!oo || !fn)
        return -EINVAL;
    once_impl *o = (once_impl *)(void *)oo;
    if (atomic_load_explicit(&o->state, memory_order_acquire) & O_DONE)
        return 0;
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    uint64_t s = wq_lock(&o->state);
    if (s & O_DONE) {
        wq_unlock(&o->state, s);
        return 0;
    }
    if (!(s & O_RUNNING)) {
        o->runner = self;
        wq_unlock(&o->state, s | O_RUNNING);
        fn(arg);
        s = wq_lock(&o->state);
        weft__wnode *wake = NULL, **tail = &wake;
        for (weft__wnode *x = o->q.head, *next; x; x = next) {
            next = x->next;
            weft__wlist_take(&o->q, x, 0, &tail); /* a cancelled waiter's node stays, for it to take out */
        }
        o->runner = NULL;
        wq_unlock(&o->state, (s & ~O_RUNNING) | O_DONE); /* our last touch of the object */
        weft__wlist_wake(wake);
        return 0;
    }
    if (o->runner == self) {
        wq_unlock(&o->state, s);
        return -EDEADLK; /* fn asked for itself: waiting would never end */
    }
    wq_waiter x;
    wq_enqueue(&o->q, &x, self, WEFT__WAIT_ONCE, o, false);
    wq_unlock(&o->state, s);
    int r = wq_wait_end(&x, weft__park(self, x.w.tok, WEFT_FOREVER), &o->state, &s);
    if (r == 0)
        return 0; /* fn returned, perhaps just before the cancel */
    weft__wlist_remove(&o->q, &x.n);
    wq_unlock(&o->state, s);
    return r;
}
