/*
 * Wait group (Go's sync.WaitGroup): a counter; waiters park until it is zero.
 *
 * The counter is one atomic, so add/done never take a lock unless the count reaches zero with waiters.
 * Waiters queue on a list of nodes that live on their own stacks, under a spinlock that is never held
 * across a park. A waiter whose deadline passes removes its own node, unless the waker already took it:
 * then the wakeup is already on its way and the wait succeeded.
 */
#include <errno.h>
#include <string.h>

#include "core/internal.h"
#include "obs/sanitize.h"

typedef struct wg_waiter {
    struct wg_waiter *next, *prev;
    weft__fiber *f;
    uint32_t tok;
    bool taken; /* the waker took it off the list: a wakeup is on its way */
} wg_waiter;

typedef struct {
    _Atomic int64_t count;
    weft__spinlock lock;
    uint32_t nwaiters;
    wg_waiter *head;
} wg_impl;

_Static_assert(sizeof(wg_impl) <= sizeof(weft_wg_t), "weft_wg_t is too small");
_Static_assert(_Alignof(wg_impl) <= _Alignof(weft_wg_t), "weft_wg_t is under-aligned");

static inline wg_impl *impl(weft_wg_t *wg)
{
    return (wg_impl *)(void *)wg;
}

int weft_wg_init(weft_wg_t *wg)
{
    if (!wg)
        return -EINVAL;
    memset(wg, 0, sizeof *wg);
    return 0;
}

static void wake_all(wg_impl *g)
{
    weft__spin_lock(&g->lock);
    /* a waiter's node is valid until we unlock or mark it taken and wake it: read it first */
    for (wg_waiter *n = g->head, *next; n; n = next) {
        next = n->next;
        weft__fiber *f = n->f;
        uint32_t tok = n->tok;
        n->taken = true;
        weft__unpark_fifo(f, tok, PW_OK);
    }
    g->head = NULL;
    g->nwaiters = 0;
    weft__spin_unlock(&g->lock);
}

int weft_wg_add(weft_wg_t *wg, int64_t delta)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = impl(wg);
    /* a CAS loop, not fetch_add and undo: a waiter must never see a negative count it would park on */
    int64_t c = atomic_load_explicit(&g->count, memory_order_relaxed), v;
    do {
        v = c + delta;
        if (v < 0)
            return -EINVAL;
    } while (!atomic_compare_exchange_weak_explicit(&g->count, &c, v, memory_order_acq_rel, memory_order_relaxed));
    if (v == 0 && delta != 0)
        wake_all(g);
    return 0;
}

int weft_wg_done(weft_wg_t *wg)
{
    return weft_wg_add(wg, -1);
}

int weft_wg_wait(weft_wg_t *wg, int64_t deadline)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = impl(wg);
    if (atomic_load_explicit(&g->count, memory_order_acquire) == 0)
        return 0;
    if (deadline == WEFT_NOWAIT)
        return -ETIMEDOUT;
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    wg_waiter node = {.f = self};
    weft__spin_lock(&g->lock);
    if (atomic_load_explicit(&g->count, memory_order_acquire) == 0) {
        weft__spin_unlock(&g->lock);
        return 0;
    }
    node.tok = weft__park_prepare(self, WEFT__WAIT_WAITGROUP, wg);
    node.next = g->head;
    if (g->head)
        g->head->prev = &node;
    g->head = &node;
    g->nwaiters++;
    weft__spin_unlock(&g->lock);

    int r = weft__park(self, node.tok, deadline);
    if (r != 0) {
        weft__spin_lock(&g->lock);
        if (node.taken) {
            r = 0;
        } else {
            if (node.prev)
                node.prev->next = node.next;
            else
                g->head = node.next;
            if (node.next)
                node.next->prev = node.prev;
            g->nwaiters--;
        }
        weft__spin_unlock(&g->lock);
    }
    /* the counter's zero is what we waited for: read it to order after every done() */
    if (atomic_load_explicit(&g->count, memory_order_acquire) == 0)
        r = 0;
    return r;
}

int weft_wg_destroy(weft_wg_t *wg)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = impl(wg);
    weft__spin_lock(&g->lock);
    int busy = g->nwaiters != 0;
    weft__spin_unlock(&g->lock);
    return busy ? -EBUSY : 0;
}
