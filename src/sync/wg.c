/*
 * Wait group (Go's sync.WaitGroup): a counter; waiters park until it is zero.
 *
 * One 64-bit word holds the counter and two flags:
 *   bit 0     LOCKED   the waiter list is being changed: a short spin lock, never held across a park
 *   bit 1     WAITERS  the list is not empty
 *   bits 2-63          the counter
 * add and done are one CAS while nobody waits. The counter never reaches zero while a waiter holds the
 * lock: a waiter checks the counter under the lock and queues, and that check must stay true until it
 * has published itself (WAITERS) and let go.
 *
 * What must stay true: a wait group usually lives on its waiter's stack and is gone the moment
 * weft_wg_wait returns, so once the counter reads zero no waker may touch the group again. The add
 * that would bring the counter to zero while fibers wait first takes the lock (the counter unchanged),
 * detaches the list and marks each node TAKEN, and then, in one CAS, applies its delta and releases the
 * lock: the counter reaches zero in the same instant as the waker's last touch of the group. (If an add
 * slipped in meanwhile and the counter would not be zero, the list goes back and nobody wakes.) Only
 * then does it walk the detached nodes, which live on the waiters' stacks (core/wait.h): it wins each
 * node's wait and wakes it, or, for a wait already settled (called off, or a select's other case), marks
 * the node released; either is its last touch of that node.
 *
 * So a waiter that sees the counter at zero, or that was woken, returns without touching the group. A
 * waiter whose deadline passed calls its wait off; if a waker won it first, the counter reached zero and
 * it returns 0. Otherwise it takes the lock (its own wait has not returned, so the group is still
 * there): a node still queued it removes; one the waker detached it waits for, until it is released.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "core/park.h"
#include "obs/sanitize.h"
#include "sync/waitq.h"

#define WG_LOCKED ((uint64_t)1)
#define WG_WAITERS ((uint64_t)2)
#define WG_FLAGS (WG_LOCKED | WG_WAITERS)
#define WG_SHIFT 2
#define WG_COUNT(s) ((int64_t)((s) >> WG_SHIFT))
#define WG_COUNT_MAX ((int64_t)(UINT64_MAX >> WG_SHIFT))

typedef struct {
    _Atomic uint64_t state;
    weft__wlist q; /* protected by WG_LOCKED */
} wg_impl;

static void wg_leave(wg_impl *g, weft__wnode *n);

_Static_assert(sizeof(wg_impl) <= sizeof(weft_wg_t), "weft_wg_t is too small");
_Static_assert(_Alignof(wg_impl) <= _Alignof(weft_wg_t), "weft_wg_t is under-aligned");

static inline wg_impl *wg_of(weft_wg_t *wg)
{
    return (wg_impl *)(void *)wg;
}

/* Take the list lock; returns the state as it was when we took it (flags and counter). */
static uint64_t lock(wg_impl *g)
{
    unsigned spins = 0;
    uint64_t s = atomic_load_explicit(&g->state, memory_order_relaxed);
    for (;;) {
        if (s & WG_LOCKED) {
            weft__spin_backoff(&spins); /* the holder never parks, but may be preempted */
            s = atomic_load_explicit(&g->state, memory_order_relaxed);
        } else if (atomic_compare_exchange_weak_explicit(&g->state, &s, s | WG_LOCKED, memory_order_acquire,
                                                         memory_order_relaxed)) {
            return s;
        }
    }
}

/* Release the lock, saying whether the list has waiters. Adds that do not reach zero go on while the
 * lock is held, so the counter may have changed: hence the loop. */
static void unlock(wg_impl *g)
{
    uint64_t s = atomic_load_explicit(&g->state, memory_order_relaxed), v;
    do {
        v = (s & ~WG_FLAGS) | (weft__wlist_empty(&g->q) ? 0 : WG_WAITERS);
    } while (!atomic_compare_exchange_weak_explicit(&g->state, &s, v, memory_order_release, memory_order_relaxed));
}

int weft_wg_init(weft_wg_t *wg)
{
    if (!wg)
        return -EINVAL;
    memset(wg, 0, sizeof *wg);
    return 0;
}

static void set_queued(weft__wnode *list, bool queued)
{
    for (weft__wnode *n = list; n; n = n->next)
        n->queued = queued;
}

/* The lock is ours and delta would bring the counter to zero: take the waiters, apply delta and
 * release in one step, then wake them (see the top of the file). */
static void add_and_wake(wg_impl *g, int64_t delta)
{
    weft__wnode *list = g->q.head;
    g->q.head = g->q.tail = NULL;
    set_queued(list, false);
    uint64_t s = atomic_load_explicit(&g->state, memory_order_relaxed), v;
    for (;;) {
        uint64_t c = (uint64_t)(WG_COUNT(s) + delta); /* >= 0: nobody else takes the counter down to zero */
        if (c != 0) { /* an add came in meanwhile: no wakeup after all */
            v = (c << WG_SHIFT) | WG_LOCKED | WG_WAITERS;
        } else {
            v = 0;
        }
        if (atomic_compare_exchange_weak_explicit(&g->state, &s, v, memory_order_acq_rel, memory_order_relaxed))
            break;
    }
    if (v != 0) {
        weft__wnode *tail = list;
        while (tail && tail->next)
            tail = tail->next;
        g->q.head = list;
        g->q.tail = tail;
        set_queued(list, true);
        unlock(g);
        return;
    }
    /* the group may be gone now: only the nodes, each valid until our last touch of it */
    for (weft__wnode *n = list, *next; n; n = next) {
        next = n->next;
        if (weft__wait_claim(n->w, n->idx))
            weft__wait_wake(n->w, false);
        else
            weft__wnode_release(n);
    }
}

int weft_wg_add(weft_wg_t *wg, int64_t delta)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = wg_of(wg);
    unsigned spins = 0;
    uint64_t s = atomic_load_explicit(&g->state, memory_order_relaxed);
    for (;;) {
        int64_t c = WG_COUNT(s);
        if (delta < -c)
            return -EINVAL; /* below zero: a bug in the caller; the counter is left as it was */
        if (delta > WG_COUNT_MAX - c)
            return -EOVERFLOW;
        if (c + delta == 0 && delta != 0 && (s & WG_FLAGS)) {
            /* the waking add: take the lock first, the counter unchanged. Also when the lock is held
             * with no waiters yet: its holder may be a waiter that has not published itself */
            if (s & WG_LOCKED) {
                weft__spin_backoff(&spins);
                s = atomic_load_explicit(&g->state, memory_order_relaxed);
            } else if (atomic_compare_exchange_weak_explicit(&g->state, &s, s | WG_LOCKED, memory_order_acquire,
                                                             memory_order_relaxed)) {
                add_and_wake(g, delta);
                return 0;
            }
            continue;
        }
        uint64_t v = ((uint64_t)(c + delta) << WG_SHIFT) | (s & WG_FLAGS);
        if (atomic_compare_exchange_weak_explicit(&g->state, &s, v, memory_order_acq_rel, memory_order_relaxed))
            return 0;
    }
}

int weft_wg_done(weft_wg_t *wg)
{
    return weft_wg_add(wg, -1);
}

int64_t weft__wg_count(weft_wg_t *wg)
{
    return WG_COUNT(atomic_load_explicit(&wg_of(wg)->state, memory_order_acquire));
}

int weft_wg_wait(weft_wg_t *wg, int64_t deadline)
{
    return weft__wg_wait(wg, deadline, WEFT__WAIT_WAITGROUP);
}

int weft__wg_wait(weft_wg_t *wg, int64_t deadline, unsigned reason)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = wg_of(wg);
    /* zero is published by the waker's last touch: seeing it, the group is ours */
    if (WG_COUNT(atomic_load_explicit(&g->state, memory_order_acquire)) == 0)
        return 0;
    if (deadline == WEFT_NOWAIT)
        return -ETIMEDOUT;
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    uint64_t s = lock(g);
    if (WG_COUNT(s) == 0) {
        unlock(g);
        return 0;
    }
    weft__wait w;
    weft__wnode node;
    weft__wait_begin(&w, self, reason, wg);
    weft__wnode_init(&node, &w, 0);
    weft__wlist_push(&g->q, &node);
    unlock(g);

    int r = weft__park(self, w.tok, deadline);
    if (weft__wait_end(&w, r) >= 0)
        return 0; /* woken, perhaps just before the deadline or the cancel: every done() came first */
    wg_leave(g, &node);
    return r;
}

/* The caller's wait was settled without this group's waker (called off, or a select's other case):
 * take its node out, or wait until the waker that detached it is through with it. */
static void wg_leave(wg_impl *g, weft__wnode *n)
{
    lock(g);
    bool queued = n->queued;
    if (queued)
        weft__wlist_remove(&g->q, n);
    unlock(g);
    if (!queued)
        weft__wnode_wait_released(n);
}

int weft_wg_destroy(weft_wg_t *wg)
{
    if (!wg)
        return -EINVAL;
    uint64_t s = atomic_load_explicit(&wg_of(wg)->state, memory_order_acquire);
    return s & WG_FLAGS ? -EBUSY : 0;
}

/* ---- weft_select's case (core/wait.h): the counter at zero; nothing is taken ---- */

static uint64_t wg_sel_lock(void *obj)
{
    lock(wg_of(obj));
    return 0;
}

static void wg_sel_unlock(void *obj, uint64_t s)
{
    (void)s;
    unlock(wg_of(obj));
}

/* The counter cannot reach zero while we hold the lock, but an add may take it up from zero meanwhile:
 * it was zero when we looked, and that is the case. */
static int wg_sel_poll(weft__sel_case *cs, weft__wakeup *k)
{
    (void)k;
    return WG_COUNT(atomic_load_explicit(&wg_of(cs->obj)->state, memory_order_acquire)) == 0;
}

static int wg_sel_enqueue(weft__sel_case *cs)
{
    weft__wlist_push(&wg_of(cs->obj)->q, &cs->node);
    return WEFT__ARM_QUEUED;
}

static void wg_sel_disarm(weft__sel_case *cs)
{
    wg_leave(wg_of(cs->obj), &cs->node);
}

const weft__sel_ops weft__sel_wg = {wg_sel_lock, wg_sel_unlock, wg_sel_poll, wg_sel_enqueue, wg_sel_disarm, NULL, NULL};
