/*
 * Counting semaphore. The state word:
 *   bit 0      WQ_LOCK    the queue lock (waitq.h)
 *   bit 1      S_WAITERS  the queue is not empty (changed only under WQ_LOCK)
 *   bits 2-63             the free permits
 * While fibers wait there are no free permits: a release hands its permits to the waiters first, in
 * arrival order, and only the rest become free. So a woken waiter always has its permit (nobody can
 * take it first), and an acquire with permits free is one CAS.
 */
#include <errno.h>
#include <string.h>

#include "sync/waitq.h"

#define S_WAITERS ((uint64_t)2)
#define S_SHIFT 2
#define S_ONE ((uint64_t)1 << S_SHIFT)
#define S_COUNT(s) ((int64_t)((s) >> S_SHIFT))
#define S_MAX ((int64_t)(UINT64_MAX >> S_SHIFT))

typedef struct {
    _Atomic uint64_t state;
    weft__waitq q;
} sem_impl;

_Static_assert(sizeof(sem_impl) <= sizeof(weft_sem_t), "weft_sem_t is too small");
_Static_assert(_Alignof(sem_impl) <= _Alignof(weft_sem_t), "weft_sem_t is under-aligned");

static inline sem_impl *impl(weft_sem_t *s)
{
    return (sem_impl *)(void *)s;
}

int weft_sem_init(weft_sem_t *ss, int64_t count)
{
    if (!ss || count < 0 || count > S_MAX)
        return -EINVAL;
    memset(ss, 0, sizeof *ss);
    atomic_store_explicit(&impl(ss)->state, (uint64_t)count << S_SHIFT, memory_order_relaxed);
    return 0;
}

int weft_sem_acquire(weft_sem_t *ss, int64_t deadline)
{
    if (!ss)
        return -EINVAL;
    sem_impl *m = impl(ss);
    uint64_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
    while (S_COUNT(s) > 0 && !(s & WQ_LOCK)) {
        if (atomic_compare_exchange_weak_explicit(&m->state, &s, s - S_ONE, memory_order_acquire,
                                                  memory_order_relaxed))
            return 0;
    }
    s = wq_lock(&m->state);
    if (S_COUNT(s) > 0) {
        wq_unlock(&m->state, s - S_ONE);
        return 0;
    }
    weft__fiber *self = deadline == WEFT_NOWAIT ? NULL : weft__self();
    if (!self) {
        wq_unlock(&m->state, s);
        return deadline == WEFT_NOWAIT ? -ETIMEDOUT : -ENOMEM;
    }
    weft__waiter n;
    wq_enqueue(&m->q, &n, self, WEFT__WAIT_SEM, m, false);
    wq_unlock(&m->state, s | S_WAITERS);
    int r = weft__park(self, n.tok, deadline);
    if (r == 0)
        return 0; /* a release handed us a permit */
    s = wq_lock(&m->state);
    if (atomic_load_explicit(&n.state, memory_order_relaxed) == WQ_QUEUED) {
        wq_remove(&m->q, &n);
        wq_unlock(&m->state, wq_empty(&m->q) ? s & ~S_WAITERS : s);
        return r;
    }
    wq_unlock(&m->state, s);
    wq_settle(&n);
    return 0; /* the permit came before the deadline or the cancel took effect: it is ours */
}

int weft_sem_release(weft_sem_t *ss, int64_t n)
{
    if (!ss || n < 1)
        return -EINVAL;
    sem_impl *m = impl(ss);
    uint64_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
    while (!(s & (WQ_LOCK | S_WAITERS))) {
        if (n > S_MAX - S_COUNT(s))
            return -EOVERFLOW;
        if (atomic_compare_exchange_weak_explicit(&m->state, &s, s + ((uint64_t)n << S_SHIFT), memory_order_release,
                                                  memory_order_relaxed))
            return 0;
    }
    s = wq_lock(&m->state);
    if (n > S_MAX - S_COUNT(s)) {
        wq_unlock(&m->state, s);
        return -EOVERFLOW;
    }
    weft__waiter *wake = NULL, **tail = &wake;
    int64_t left = n;
    while (left > 0 && m->q.head) {
        wq_take(&m->q, m->q.head, 1, &tail);
        left--;
    }
    s += (uint64_t)left << S_SHIFT;
    wq_unlock(&m->state, wq_empty(&m->q) ? s & ~S_WAITERS : s); /* our last touch of the semaphore */
    wq_wake(wake);
    return 0;
}

int64_t weft_sem_value(weft_sem_t *ss)
{
    if (!ss)
        return -EINVAL;
    return S_COUNT(atomic_load_explicit(&impl(ss)->state, memory_order_relaxed));
}

int weft_sem_destroy(weft_sem_t *ss)
{
    if (!ss)
        return -EINVAL;
    return atomic_load_explicit(&impl(ss)->state, memory_order_acquire) & (S_WAITERS | WQ_LOCK) ? -EBUSY : 0;
}
