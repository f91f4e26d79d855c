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
 * then does it walk the detached nodes, which live on the waiters' stacks: it reads each node, marks it
 * DONE, and unparks its fiber, and touches it no more.
 *
 * So a waiter that sees the counter at zero, or that was woken, returns without touching the group. A
 * waiter whose deadline passed takes the lock (its own wait has not returned, so the group is still
 * there): a QUEUED node it removes; a TAKEN one means the counter reached zero and the waker is on its
 * way, so it waits for DONE, which is short, and returns 0.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "core/internal.h"
#include "obs/sanitize.h"
#include "sync/waitq.h"

#define WG_LOCKED ((uint64_t)1)
#define WG_WAITERS ((uint64_t)2)
#define WG_FLAGS (WG_LOCKED | WG_WAITERS)
#define WG_SHIFT 2
#define WG_COUNT(s) ((int64_t)((s) >> WG_SHIFT))
#define WG_COUNT_MAX ((int64_t)(UINT64_MAX >> WG_SHIFT))

enum { NODE_QUEUED, NODE_TAKEN, NODE_DONE };

typedef struct wg_waiter {
    struct wg_waiter *next, *prev; /* protected by WG_LOCKED while queued */
    weft__fiber *f;
    uint32_t tok;
    _Atomic uint32_t state;        /* NODE_*: TAKEN under the lock, DONE by the waker when it is through */
} wg_waiter;

typedef struct {
    _Atomic uint64_t state;
    wg_waiter *head; /* protected by WG_LOCKED */
} wg_impl;

_Static_assert(sizeof(wg_impl) <= sizeof(weft_wg_t), "weft_wg_t is too small");
_Static_assert(_Alignof(wg_impl) <= _Alignof(weft_wg_t), "weft_wg_t is under-aligned");

static inline wg_impl *impl(weft_wg_t *wg)
{
    return (wg_impl *)(void *)wg;
}

/* The lock's holder never parks, but its thread may be preempted: spin a little, then give way. */
static void backoff(unsigned *spins)
{
    if ((*spins)++ < 64)
        weft__cpu_relax();
    else
        sched_yield();
}

/* Take the list lock; returns the state as it was when we took it (flags and counter). */
static uint64_t lock(wg_impl *g)
{
    unsigned spins = 0;
    uint64_t s = atomic_load_explicit(&g->state, memory_order_relaxed);
    for (;;) {
        if (s & WG_LOCKED) {
            backoff(&spins);
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
        v = (s & ~WG_FLAGS) | (g->head ? WG_WAITERS : 0);
    } while (!atomic_compare_exchange_weak_explicit(&g->state, &s, v, memory_order_release, memory_order_relaxed));
}

int weft_wg_init(weft_wg_t *wg)
{
    if (!wg)
        return -EINVAL;
    memset(wg, 0, sizeof *wg);
    return 0;
}

static void set_nodes(wg_waiter *list, uint32_t state)
{
    for (wg_waiter *n = list; n; n = n->next)
        atomic_store_explicit(&n->state, state, memory_order_relaxed);
}

/* The lock is ours and delta would bring the counter to zero: take the waiters, apply delta and
 * release in one step, then wake them (see the top of the file). */
static void add_and_wake(wg_impl *g, int64_t delta)
{
    wg_waiter *list = g->head;
    g->head = NULL;
    set_nodes(list, NODE_TAKEN);
    uint64_t s = atomic_load_explicit(&g->state, memory_order_relaxed), v;
    for (;;) {
        uint64_t c = (uint64_t)(WG_COUNT(s) + delta); /* >= 0: nobody else takes the counter down to zero */
        if (c != 0) { /* an add came in meanwhile: no wakeup after all */
            set_nodes(list, NODE_QUEUED);
            v = (c << WG_SHIFT) | WG_LOCKED | WG_WAITERS;
        } else {
            v = 0;
        }
        if (atomic_compare_exchange_weak_explicit(&g->state, &s, v, memory_order_acq_rel, memory_order_relaxed))
            break;
        if (c != 0)
            set_nodes(list, NODE_TAKEN);
    }
    if (v != 0) {
        g->head = list;
        unlock(g);
        return;
    }
    /* the group may be gone now: only the nodes, each valid until it reads DONE */
    for (wg_waiter *n = list, *next; n; n = next) {
        next = n->next;
        weft__fiber *f = n->f;
        uint32_t tok = n->tok;
        atomic_store_explicit(&n->state, NODE_DONE, memory_order_release);
        weft__unpark_fifo(f, tok, PW_OK);
    }
}

int weft_wg_add(weft_wg_t *wg, int64_t delta)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = impl(wg);
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
                backoff(&spins);
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
    return WG_COUNT(atomic_load_explicit(&impl(wg)->state, memory_order_acquire));
}

int weft_wg_wait(weft_wg_t *wg, int64_t deadline)
{
    return weft__wg_wait(wg, deadline, WEFT__WAIT_WAITGROUP);
}

int weft__wg_wait(weft_wg_t *wg, int64_t deadline, unsigned reason)
{
    if (!wg)
        return -EINVAL;
    wg_impl *g = impl(wg);
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
    wg_waiter node = {.f = self, .next = g->head};
    node.tok = weft__park_prepare(self, reason, wg);
    if (g->head)
        g->head->prev = &node;
    g->head = &node;
    unlock(g);

    int r = weft__park(self, node.tok, deadline);
    if (r == 0) {
        /* woken: the waker was through with the group and with our node before it woke us. The load
         * pairs with its DONE store, which orders every done() before our return (also for TSan, which
         * does not see the park word) */
        weft__dassert(atomic_load_explicit(&node.state, memory_order_acquire) == NODE_DONE);
        (void)atomic_load_explicit(&node.state, memory_order_acquire);
        return 0;
    }
    /* the deadline passed (or the wait was cancelled): leave the list, unless the waker took us */
    lock(g);
    if (atomic_load_explicit(&node.state, memory_order_relaxed) == NODE_QUEUED) {
        if (node.prev)
            node.prev->next = node.next;
        else
            g->head = node.next;
        if (node.next)
            node.next->prev = node.prev;
        unlock(g);
        return r;
    }
    unlock(g);
    /* taken: the counter reached zero; the waker reads our node until it marks it DONE */
    unsigned spins = 0;
    while (atomic_load_explicit(&node.state, memory_order_acquire) != NODE_DONE)
        backoff(&spins);
    return 0;
}

int weft_wg_destroy(weft_wg_t *wg)
{
    if (!wg)
        return -EINVAL;
    uint64_t s = atomic_load_explicit(&impl(wg)->state, memory_order_acquire);
    return s & WG_FLAGS ? -EBUSY : 0;
}
