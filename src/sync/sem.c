/*
 * Counting semaphore. The state word:
 *   bit 0      WQ_LOCK    the queue lock (waitq.h)
 *   bit 1      S_WAITERS  the queue is not empty (changed only under WQ_LOCK)
 *   bits 2-63             the free permits
 * While fibers wait there are no free permits: a release hands its permits to the waiters first, in
 * arrival order, and only the rest become free. So a woken waiter always has its permit (nobody can
 * take it first), and an acquire with permits free is one CAS. (A node whose wait was settled already,
 * a timed-out waiter's or a select's that another case won, is skipped: it gets nothing.)
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
    weft__wlist q;
} sem_impl;

_Static_assert(sizeof(sem_impl) <= sizeof(weft_sem_t), "weft_sem_t is too small");
_Static_assert(_Alignof(sem_impl) <= _Alignof(weft_sem_t), "weft_sem_t is under-aligned");

static inline sem_impl *sem_of(weft_sem_t *s)
{
    return (sem_impl *)(void *)s;
}

int weft_sem_init(weft_sem_t *ss, int64_t count)
{
    if (!ss || count < 0 || count > S_MAX)
        return -EINVAL;
    memset(ss, 0, sizeof *ss);
    atomic_store_explicit(&sem_of(ss)->state, (uint64_t)count << S_SHIFT, memory_order_relaxed);
    return 0;
}

int weft_sem_acquire(weft_sem_t *ss, int64_t deadline)
{
    if (!ss)
        return -EINVAL;
    sem_impl *m = sem_of(ss);
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
    wq_waiter x;
    wq_enqueue(&m->q, &x, self, WEFT__WAIT_SEM, m, false);
    wq_unlock(&m->state, s | S_WAITERS);
    int r = wq_wait_end(&x, weft__park(self, x.w.tok, deadline), &m->state, &s);
    if (r == 0)
        return 0; /* a release handed us a permit, perhaps just before the deadline or the cancel */
    weft__wlist_remove(&m->q, &x.n);
    wq_unlock(&m->state, weft__wlist_empty(&m->q) ? s & ~S_WAITERS : s);
    return r;
}

int weft_sem_release(weft_sem_t *ss, int64_t n)
{
    if (!ss || n < 1)
        return -EINVAL;
    sem_impl *m = sem_of(ss);
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
    weft__wnode *wake = NULL, **tail = &wake;
    int64_t left = n;
    for (weft__wnode *x = m->q.head, *next; left > 0 && x; x = next) {
        next = x->next;
        if (weft__wlist_take(&m->q, x, 1, &tail))
            left--;
    }
    s += (uint64_t)left << S_SHIFT;
    wq_unlock(&m->state, weft__wlist_empty(&m->q) ? s & ~S_WAITERS : s); /* our last touch of the semaphore */
    weft__wlist_wake(wake);
    return 0;
}

int64_t weft_sem_value(weft_sem_t *ss)
{
    if (!ss)
        return -EINVAL;
    return S_COUNT(atomic_load_explicit(&sem_of(ss)->state, memory_order_relaxed));
}

int weft_sem_destroy(weft_sem_t *ss)
{
    if (!ss)
        return -EINVAL;
    return atomic_load_explicit(&sem_of(ss)->state, memory_order_acquire) & (S_WAITERS | WQ_LOCK) ? -EBUSY : 0;
}

/* ---- weft_select's case (core/wait.h): one permit taken, as by weft_sem_acquire ---- */

static uint64_t sem_sel_lock(void *obj)
{
    return wq_lock(&sem_of(obj)->state);
}

static void sem_sel_unlock(void *obj, uint64_t s)
{
    wq_unlock(&sem_of(obj)->state, s);
}

static int sem_sel_poll(weft__sel_case *cs, weft__wakeup *k)
{
    (void)k;
    if (S_COUNT(*cs->state) == 0)
        return 0;
    *cs->state -= S_ONE;
    return 1;
}

static int sem_sel_enqueue(weft__sel_case *cs)
{
    weft__wlist_push(&sem_of(cs->obj)->q, &cs->node);
    *cs->state |= S_WAITERS;
    return WEFT__ARM_QUEUED;
}

static void sem_sel_disarm(weft__sel_case *cs)
{
    sem_impl *m = sem_of(cs->obj);
    uint64_t s = wq_lock(&m->state);
    weft__wlist_remove(&m->q, &cs->node); /* not won by a release, so still queued */
    wq_unlock(&m->state, weft__wlist_empty(&m->q) ? s & ~S_WAITERS : s);
}

const weft__sel_ops weft__sel_sem = {sem_sel_lock,   sem_sel_unlock, sem_sel_poll, sem_sel_enqueue,
                                     sem_sel_disarm, NULL,           NULL};
