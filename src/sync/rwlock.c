/*
 * Reader-writer lock. The state word:
 *   bit 0      WQ_LOCK     the queue lock (waitq.h)
 *   bit 1      RW_WRITER   a writer holds it
 *   bit 2      RW_WAITERS  the queue is not empty (changed only under WQ_LOCK)
 *   bits 3-33              readers holding it (at most RW_READERS_MAX)
 * Without waiters, a read lock and its unlock are one CAS each, and so are a write lock and its unlock.
 * Once anyone waits, newcomers queue behind them (a waiting writer keeps new readers out), and the
 * lock is granted from the head of the queue in arrival order: a writer alone, or a run of readers
 * together. The releaser updates the state on the new holders' behalf, so a woken waiter holds the
 * lock already. A waiter that leaves the queue (deadline, cancel) may unblock those behind it (readers
 * behind a writer that gave up): the queue is granted again then.
 */
#include <errno.h>
#include <string.h>

#include "sync/waitq.h"

#define RW_WRITER ((uint64_t)2)
#define RW_WAITERS ((uint64_t)4)
#define RW_SHIFT 3
#define RW_READER ((uint64_t)1 << RW_SHIFT)
#define RW_READERS(s) ((s) >> RW_SHIFT)
#define RW_READERS_MAX ((uint64_t)1 << 30)

enum { WANT_READ = 0, WANT_WRITE = 1 };

typedef struct {
    _Atomic uint64_t state;
    weft__wlist q;
} rwlock_impl;

_Static_assert(sizeof(rwlock_impl) <= sizeof(weft_rwlock_t), "weft_rwlock_t is too small");
_Static_assert(_Alignof(rwlock_impl) <= _Alignof(weft_rwlock_t), "weft_rwlock_t is under-aligned");

static inline rwlock_impl *rwlock_of(weft_rwlock_t *l)
{
    return (rwlock_impl *)(void *)l;
}

int weft_rwlock_init(weft_rwlock_t *l)
{
    if (!l)
        return -EINVAL;
    memset(l, 0, sizeof *l);
    return 0;
}

/* Grant the lock from the head of the queue while the head can have it. Under WQ_LOCK; *s is the state
 * to be stored, RW_WAITERS made true to the queue. */
static void grant(rwlock_impl *l, uint64_t *s, weft__wnode ***tail)
{
    for (weft__wnode *h = l->q.head, *next; h; h = next) {
        next = h->next;
        if (h->want == WANT_WRITE) {
            if (RW_READERS(*s) == 0 && !(*s & RW_WRITER)) {
                if (weft__wlist_take(&l->q, h, 0, tail)) {
                    *s |= RW_WRITER;
                    break;
                }
                continue; /* its wait ended: look past it */
            }
            if (weft__wait_claimed(h->w) != WEFT__CLAIM_NONE)
                continue; /* a writer whose wait ended holds no reader back (it grants again as it leaves) */
            break;
        }
        if ((*s & RW_WRITER) || RW_READERS(*s) >= RW_READERS_MAX)
            break;
        if (weft__wlist_take(&l->q, h, 0, tail))
            *s += RW_READER;
    }
    *s = weft__wlist_empty(&l->q) ? *s & ~RW_WAITERS : *s | RW_WAITERS;
}

static int lock_slow(rwlock_impl *l, int want, int64_t deadline)
{
    uint64_t s = wq_lock(&l->state);
    if (weft__wlist_empty(&l->q)) {
        if (want == WANT_WRITE && RW_READERS(s) == 0 && !(s & RW_WRITER)) {
            wq_unlock(&l->state, s | RW_WRITER);
            return 0;
        }
        if (want == WANT_READ && !(s & RW_WRITER)) {
            if (RW_READERS(s) >= RW_READERS_MAX) {
                wq_unlock(&l->state, s);
                return -EAGAIN;
            }
            wq_unlock(&l->state, s + RW_READER);
            return 0;
        }
    }
    weft__fiber *self = deadline == WEFT_NOWAIT ? NULL : weft__self();
    if (!self) {
        wq_unlock(&l->state, s);
        return deadline == WEFT_NOWAIT ? -ETIMEDOUT : -ENOMEM;
    }
    wq_waiter x;
    x.n.want = (uint64_t)want;
    wq_enqueue(&l->q, &x, self, want == WANT_WRITE ? WEFT__WAIT_RWLOCK_WRITE : WEFT__WAIT_RWLOCK_READ, l, false);
    wq_unlock(&l->state, s | RW_WAITERS);
    int r = wq_wait_end(&x, weft__park(self, x.w.tok, deadline), &l->state, &s);
    if (r == 0)
        return 0; /* granted, perhaps just before the deadline or the cancel: the releaser counted us in */
    weft__wlist_remove(&l->q, &x.n);
    weft__wnode *wake = NULL, **tail = &wake;
    grant(l, &s, &tail);
    wq_unlock(&l->state, s);
    weft__wlist_wake(wake);
    return r;
}

int weft_rwlock_rdlock(weft_rwlock_t *ll, int64_t deadline)
{
    if (!ll)
        return -EINVAL;
    rwlock_impl *l = rwlock_of(ll);
    uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
    while (!(s & (WQ_LOCK | RW_WRITER | RW_WAITERS)) && RW_READERS(s) < RW_READERS_MAX) {
        if (atomic_compare_exchange_weak_explicit(&l->state, &s, s + RW_READER, memory_order_acquire,
                                                  memory_order_relaxed))
            return 0;
    }
    return lock_slow(l, WANT_READ, deadline);
}

int weft_rwlock_wrlock(weft_rwlock_t *ll, int64_t deadline)
{
    if (!ll)
        return -EINVAL;
    rwlock_impl *l = rwlock_of(ll);
    uint64_t s = 0;
    if (atomic_compare_exchange_strong_explicit(&l->state, &s, RW_WRITER, memory_order_acquire, memory_order_relaxed))
        return 0;
    return lock_slow(l, WANT_WRITE, deadline);
}

int weft_rwlock_unlock(weft_rwlock_t *ll)
{
    if (!ll)
        return -EINVAL;
    rwlock_impl *l = rwlock_of(ll);
    unsigned spins = 0;
    uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
    for (;;) {
        if (!(s & RW_WRITER) && RW_READERS(s) == 0)
            return -EPERM;
        if (s & WQ_LOCK) {
            weft__spin_backoff(&spins);
            s = atomic_load_explicit(&l->state, memory_order_relaxed);
            continue;
        }
        if (!(s & RW_WAITERS)) {
            uint64_t v = s & RW_WRITER ? s & ~RW_WRITER : s - RW_READER;
            if (atomic_compare_exchange_weak_explicit(&l->state, &s, v, memory_order_release, memory_order_relaxed))
                return 0;
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&l->state, &s, s | WQ_LOCK, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    s |= WQ_LOCK;
    s = s & RW_WRITER ? s & ~RW_WRITER : s - RW_READER;
    weft__wnode *wake = NULL, **tail = &wake;
    grant(l, &s, &tail);
    wq_unlock(&l->state, s); /* our last touch of the lock */
    weft__wlist_wake(wake);
    return 0;
}

int weft_rwlock_destroy(weft_rwlock_t *ll)
{
    if (!ll)
        return -EINVAL;
    return atomic_load_explicit(&rwlock_of(ll)->state, memory_order_acquire) ? -EBUSY : 0;
}
