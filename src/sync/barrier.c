/*
 * Barrier and latch.
 *
 * Barrier: the state word holds WQ_LOCK (waitq.h) and, above it, how many have arrived in this round.
 * The last to arrive takes every waiter off the queue and resets the count in the store that lets go
 * of the queue lock, so the next round can begin at once, even while the last round's waiters are still
 * waking. A waiter that gives up (deadline, cancel) before its round completes withdraws its arrival.
 *
 * Latch: a wait group that only counts down (wg.c has the protocol that lets the last waiter free it).
 */
#include <errno.h>
#include <string.h>

#include "sync/waitq.h"

#define B_SHIFT 1
#define B_ONE ((uint64_t)1 << B_SHIFT)
#define B_ARRIVED(s) ((int64_t)((s) >> B_SHIFT))

typedef struct {
    _Atomic uint64_t state;
    weft__wlist q;
    int64_t parties; /* fixed after init */
} barrier_impl;

_Static_assert(sizeof(barrier_impl) <= sizeof(weft_barrier_t), "weft_barrier_t is too small");
_Static_assert(_Alignof(barrier_impl) <= _Alignof(weft_barrier_t), "weft_barrier_t is under-aligned");

static inline barrier_impl *bimpl(weft_barrier_t *b)
{
    return (barrier_impl *)(void *)b;
}

int weft_barrier_init(weft_barrier_t *bb, int parties)
{
    if (!bb || parties < 1)
        return -EINVAL;
    memset(bb, 0, sizeof *bb);
    bimpl(bb)->parties = parties;
    return 0;
}

int weft_barrier_wait(weft_barrier_t *bb, int64_t deadline)
{
    if (!bb)
        return -EINVAL;
    barrier_impl *b = bimpl(bb);
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    uint64_t s = wq_lock(&b->state);
    if (B_ARRIVED(s) + 1 == b->parties) {
        weft__wnode *wake = NULL, **tail = &wake;
        while (b->q.head) /* every node here counts as arrived: none can be settled but by us (below) */
            weft__wlist_take(&b->q, b->q.head, 0, &tail);
        wq_unlock(&b->state, 0); /* a new round; our last touch of the barrier */
        weft__wlist_wake(wake);
        return WEFT_BARRIER_SERIAL;
    }
    if (deadline == WEFT_NOWAIT) {
        wq_unlock(&b->state, s);
        return -ETIMEDOUT;
    }
    wq_waiter x;
    wq_enqueue(&b->q, &x, self, WEFT__WAIT_BARRIER, b, false);
    wq_unlock(&b->state, s + B_ONE);
    /* called off under the lock (wq_wait_end): an arrival counts until it is withdrawn, so the last
     * arrival and a withdrawal never cross */
    int r = wq_wait_end(&x, weft__park(self, x.w.tok, deadline), &b->state, &s);
    if (r == 0)
        return 0; /* the round completed, perhaps just before the deadline or the cancel */
    weft__wlist_remove(&b->q, &x.n);
    wq_unlock(&b->state, s - B_ONE);
    return r;
}

int weft_barrier_destroy(weft_barrier_t *bb)
{
    if (!bb)
        return -EINVAL;
    return atomic_load_explicit(&bimpl(bb)->state, memory_order_acquire) ? -EBUSY : 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Latch                                                                                             */

_Static_assert(sizeof(weft_wg_t) <= sizeof(weft_latch_t), "weft_latch_t is too small");
_Static_assert(_Alignof(weft_wg_t) <= _Alignof(weft_latch_t), "weft_latch_t is under-aligned");

static inline weft_wg_t *wg(weft_latch_t *l)
{
    return (weft_wg_t *)(void *)l;
}

int weft_latch_init(weft_latch_t *l, int64_t count)
{
    if (!l || count < 0)
        return -EINVAL;
    memset(l, 0, sizeof *l);
    return weft_wg_add(wg(l), count);
}

int weft_latch_count_down(weft_latch_t *l, int64_t n)
{
    if (!l || n < 1)
        return -EINVAL;
    return weft_wg_add(wg(l), -n);
}

int weft_latch_wait(weft_latch_t *l, int64_t deadline)
{
    if (!l)
        return -EINVAL;
    return weft__wg_wait(wg(l), deadline, WEFT__WAIT_LATCH);
}

int weft_latch_done(weft_latch_t *l)
{
    if (!l)
        return -EINVAL;
    return weft__wg_count(wg(l)) == 0;
}

int weft_latch_destroy(weft_latch_t *l)
{
    if (!l)
        return -EINVAL;
    return weft_wg_destroy(wg(l));
}
