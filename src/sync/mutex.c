/*
 * Mutex: one CAS to lock and one to unlock while nobody waits; waiters park on a FIFO (waitq.h).
 *
 * The state word:
 *   bit 0  WQ_LOCK     the queue lock (waitq.h)
 *   bit 1  M_LOCKED    held
 *   bit 2  M_WAITERS   the queue is not empty (changed only under WQ_LOCK)
 *
 * Two modes, as in Go's sync.Mutex. Normally an unlock wakes the longest waiter to compete for the
 * lock: a fiber that is running and asks meanwhile may take it first (barging), which keeps the lock
 * busy instead of idle while the woken waiter gets going, and is what makes a contended mutex fast.
 * A woken waiter that loses goes back to the front of the queue, keeping the time it first queued.
 * But a barging fiber that locks in a loop could keep a waiter out for ever, so when the waiter at the
 * head has waited longer than STARVE_NS, the unlock hands the lock to it directly instead (M_LOCKED
 * stays set, nobody can barge) and the waiter wakes as the owner. The unlock side decides, not the
 * waiter (as Go does): on a worker where the lock holder never yields, the waiter may not get to run at
 * all until it is handed the lock.
 *
 * With more than one worker, a locker spins a little before it queues: a holder running on another
 * worker usually lets go within a few hundred nanoseconds, far less than a park and a wakeup cost.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "sync/waitq.h"

#define M_LOCKED ((uint64_t)2)
#define M_WAITERS ((uint64_t)4)
#define STARVE_NS ((int64_t)1000000)
#define SPIN_ROUNDS 4
#define SPIN_PAUSES 30

enum { GRANT_RETRY = 0, GRANT_OWNER = 1 };

typedef struct {
    _Atomic uint64_t state;
    weft__wlist q;
} mutex_impl;

_Static_assert(sizeof(mutex_impl) <= sizeof(weft_mutex_t), "weft_mutex_t is too small");
_Static_assert(_Alignof(mutex_impl) <= _Alignof(weft_mutex_t), "weft_mutex_t is under-aligned");

static inline mutex_impl *mutex_of(weft_mutex_t *m)
{
    return (mutex_impl *)(void *)m;
}

/* A clock good to a few milliseconds is enough to tell a starving waiter, at a fraction of the cost. */
static int64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int weft_mutex_init(weft_mutex_t *m)
{
    if (!m)
        return -EINVAL;
    memset(m, 0, sizeof *m);
    return 0;
}

int weft_mutex_trylock(weft_mutex_t *mm)
{
    if (!mm)
        return -EINVAL;
    mutex_impl *m = mutex_of(mm);
    uint64_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
    while (!(s & (M_LOCKED | WQ_LOCK))) {
        if (atomic_compare_exchange_weak_explicit(&m->state, &s, s | M_LOCKED, memory_order_acquire,
                                                  memory_order_relaxed))
            return 0;
    }
    return -EBUSY;
}

/* Spin while the holder may be about to let go on another worker; true when we took the lock. */
static bool spin(mutex_impl *m)
{
    if (weft__nworkers < 2)
        return false;
    for (int round = 0; round < SPIN_ROUNDS; round++) {
        for (int i = 0; i < SPIN_PAUSES; i++)
            weft__cpu_relax();
        uint64_t s = atomic_load_explicit(&m->state, memory_order_relaxed);
        if (!(s & (M_LOCKED | WQ_LOCK)) &&
            atomic_compare_exchange_strong_explicit(&m->state, &s, s | M_LOCKED, memory_order_acquire,
                                                    memory_order_relaxed))
            return true;
    }
    return false;
}

static int mutex_lock_slow(mutex_impl *m, int64_t deadline, bool cancellable);

/* The slow path of a lock, for weft_mutex_lock and (deaf to cancel) for weft_cond_wait's relock. */
int weft__mutex_lock(weft_mutex_t *mm, int64_t deadline, bool cancellable)
{
    mutex_impl *m = mutex_of(mm);
    uint64_t s = 0;
    if (atomic_compare_exchange_strong_explicit(&m->state, &s, M_LOCKED, memory_order_acquire, memory_order_relaxed))
        return 0;
    return mutex_lock_slow(m, deadline, cancellable);
}

/* A lock that found the mutex held. Apart, so that the fast path saves no registers. */
static WEFT__NOINLINE int mutex_lock_slow(mutex_impl *m, int64_t deadline, bool cancellable)
{
    uint64_t s;
    if (deadline != WEFT_NOWAIT && spin(m))
        return 0;
    weft__fiber *self = NULL;
    wq_waiter x;
    bool woken = false;
    for (;;) {
        s = wq_lock(&m->state);
        if (!(s & M_LOCKED)) {
            wq_unlock(&m->state, s | M_LOCKED);
            return 0;
        }
        if (deadline == WEFT_NOWAIT || (deadline > 0 && weft__clock_ns() >= deadline)) {
            wq_unlock(&m->state, s);
            return -ETIMEDOUT;
        }
        if (!self) {
            self = weft__self();
            if (!self) {
                wq_unlock(&m->state, s);
                return -ENOMEM;
            }
            x.n.since = coarse_ns();
            x.n.want = GRANT_RETRY;
        }
        /* a waiter that was woken and lost the race goes back to the front, as it was first */
        wq_enqueue(&m->q, &x, self, WEFT__WAIT_MUTEX, m, woken);
        wq_unlock(&m->state, s | M_WAITERS);

        int r = cancellable ? weft__park(self, x.w.tok, deadline) : weft__park_uncancellable(self, x.w.tok, deadline);
        if (wq_wait_end(&x, r, &m->state, &s) != 0) {
            weft__wlist_remove(&m->q, &x.n);
            wq_unlock(&m->state, weft__wlist_empty(&m->q) ? s & ~M_WAITERS : s);
            return r;
        }
        if (x.n.grant == GRANT_OWNER)
            return 0; /* handed to us, perhaps just before the deadline or the cancel: ours */
        if (r != 0) {
            /* woken to compete just as the wait ended: one try, so that the wakeup is not lost. If the
             * lock is held, its holder's unlock wakes the next waiter */
            s = wq_lock(&m->state);
            if (!(s & M_LOCKED)) {
                wq_unlock(&m->state, s | M_LOCKED);
                return 0;
            }
            wq_unlock(&m->state, s);
            return r;
        }
        woken = true;
    }
}

int weft_mutex_lock(weft_mutex_t *mm, int64_t deadline)
{
    if (!mm)
        return -EINVAL;
    mutex_impl *m = mutex_of(mm);
    uint64_t s = 0;
    if (atomic_compare_exchange_strong_explicit(&m->state, &s, M_LOCKED, memory_order_acquire, memory_order_relaxed))
        return 0;
    return mutex_lock_slow(m, deadline, true);
}

/* An unlock that found more than M_LOCKED in the word (s): waiters, or the queue lock held. Apart, so
 * that the fast path saves no registers. */
static WEFT__NOINLINE int mutex_unlock_slow(mutex_impl *m, uint64_t s)
{
    unsigned spins = 0;
    for (;;) {
        if (!(s & M_LOCKED))
            return -EPERM;
        if (s & WQ_LOCK) {
            weft__spin_backoff(&spins);
            s = atomic_load_explicit(&m->state, memory_order_relaxed);
        } else if (!(s & M_WAITERS)) {
            if (atomic_compare_exchange_weak_explicit(&m->state, &s, s & ~M_LOCKED, memory_order_release,
                                                      memory_order_relaxed))
                return 0;
        } else if (atomic_compare_exchange_weak_explicit(&m->state, &s, s | WQ_LOCK, memory_order_acq_rel,
                                                         memory_order_relaxed)) {
            break;
        }
    }
    /* queue locked, M_WAITERS set, so the queue is not empty; its first node that can be won gets the
     * lock (a starving waiter, or a select, which cannot compete) or the chance to take it */
    weft__wnode *wake = NULL, **tail = &wake;
    bool handoff = false;
    int64_t now = 0;
    for (weft__wnode *x = m->q.head, *next; x; x = next) {
        next = x->next;
        if (x->want != GRANT_OWNER && now == 0)
            now = coarse_ns();
        handoff = x->want == GRANT_OWNER || now - x->since >= STARVE_NS;
        if (weft__wlist_take(&m->q, x, handoff ? GRANT_OWNER : GRANT_RETRY, &tail))
            break;
        handoff = false;
    }
    uint64_t ns = (s | WQ_LOCK) & ~M_WAITERS;
    if (!handoff)
        ns &= ~M_LOCKED;
    if (!weft__wlist_empty(&m->q))
        ns |= M_WAITERS;
    wq_unlock(&m->state, ns); /* our last touch of the mutex */
    weft__wlist_wake(wake);
    return 0;
}

int weft_mutex_unlock(weft_mutex_t *mm)
{
    if (!mm)
        return -EINVAL;
    mutex_impl *m = mutex_of(mm);
    uint64_t s = M_LOCKED;
    if (atomic_compare_exchange_strong_explicit(&m->state, &s, 0, memory_order_release, memory_order_relaxed))
        return 0;
    return mutex_unlock_slow(m, s);
}

int weft_mutex_destroy(weft_mutex_t *mm)
{
    if (!mm)
        return -EINVAL;
    uint64_t s = atomic_load_explicit(&mutex_of(mm)->state, memory_order_acquire);
    return s ? -EBUSY : 0;
}

/* ---- weft_select's case (core/wait.h): the lock taken, as by weft_mutex_lock ---- */

static uint64_t mutex_sel_lock(void *obj)
{
    return wq_lock(&mutex_of(obj)->state);
}

static void mutex_sel_unlock(void *obj, uint64_t s)
{
    wq_unlock(&mutex_of(obj)->state, s);
}

static int mutex_sel_poll(weft__sel_case *cs, weft__wakeup *k)
{
    (void)k;
    if (*cs->state & M_LOCKED)
        return 0;
    *cs->state |= M_LOCKED;
    return 1;
}

/* An unlock hands the lock straight to a select's node: the select cannot compete for it after it
 * woke, its claim is spent. */
static int mutex_sel_enqueue(weft__sel_case *cs)
{
    cs->node.since = coarse_ns();
    cs->node.want = GRANT_OWNER;
    weft__wlist_push(&mutex_of(cs->obj)->q, &cs->node);
    *cs->state |= M_WAITERS;
    return WEFT__ARM_QUEUED;
}

static void mutex_sel_disarm(weft__sel_case *cs)
{
    mutex_impl *m = mutex_of(cs->obj);
    uint64_t s = wq_lock(&m->state);
    weft__wlist_remove(&m->q, &cs->node); /* not won by an unlock, so still queued */
    wq_unlock(&m->state, weft__wlist_empty(&m->q) ? s & ~M_WAITERS : s);
}

const weft__sel_ops weft__sel_mutex = {mutex_sel_lock,    mutex_sel_unlock, mutex_sel_poll, mutex_sel_enqueue,
                                       mutex_sel_disarm, NULL,             NULL};
