/*
 * The wait queue every lock and synchronizer in src/sync is built on.
 *
 * An object (mutex, rwlock, condition variable, semaphore, once, barrier) keeps one 64-bit state word
 * and a FIFO of waiters. Bit 0 of the word, WQ_LOCK, is a short spin lock over the queue and over the
 * rest of the word: while it is held nobody else changes the word, because every lock-free fast path
 * is a CAS from a value that has the bit clear. Its holder never parks, and it lets go by storing the
 * object's whole new state in one go. That store is the waker's last touch of the object: a woken
 * fiber may destroy the object (free its memory) at once, as POSIX allows right after an unlock, so
 * after it the waker touches only the waiter nodes, and those in a fixed order.
 *
 * A waiter node lives on the waiter's stack. Its life:
 *   QUEUED  in the queue (under WQ_LOCK)
 *   TAKEN   a waker took it off the queue under WQ_LOCK and decided what the waiter gets (`grant`)
 *   DONE    the waker is through with the node: it read f and tok first, stores DONE (release), and
 *           only then unparks the fiber, which may return and reuse its stack at once.
 * A waiter whose park ended without a wakeup (deadline, cancel) takes WQ_LOCK: a QUEUED node it removes
 * and returns the error; a TAKEN one means a waker has already given it something (a lock, a permit, a
 * signal), which it must not lose: it waits for DONE, which is a few instructions away, and keeps what
 * it was given. So no permit, count or wakeup is ever lost to a timeout or a cancel.
 */
#ifndef WEFT_SYNC_WAITQ_H
#define WEFT_SYNC_WAITQ_H

#include <sched.h>

#include "core/internal.h"

#define WQ_LOCK ((uint64_t)1)

enum { WQ_QUEUED, WQ_TAKEN, WQ_DONE };

typedef struct weft__waiter {
    struct weft__waiter *next, *prev; /* the queue; protected by WQ_LOCK */
    struct weft__waiter *wake_next;   /* the waker's list of nodes to wake, once off the queue */
    weft__fiber *f;
    uint32_t tok;
    _Atomic uint32_t state;           /* WQ_*: TAKEN under WQ_LOCK, DONE by the waker, last */
    int64_t since;                    /* when it first queued (the mutex's starvation rule) */
    uint64_t want;                    /* what it waits for (object-specific) */
    uint64_t grant;                   /* what the waker gave it (object-specific); written before DONE */
} weft__waiter;

typedef struct {
    weft__waiter *head, *tail; /* protected by WQ_LOCK */
} weft__waitq;

/* Take WQ_LOCK; returns the word as it is now, the bit set. */
static inline uint64_t wq_lock(_Atomic uint64_t *word)
{
    unsigned spins = 0;
    uint64_t s = atomic_load_explicit(word, memory_order_relaxed);
    for (;;) {
        if (s & WQ_LOCK) {
            weft__spin_backoff(&spins); /* the holder never parks, but may be preempted */
            s = atomic_load_explicit(word, memory_order_relaxed);
        } else if (atomic_compare_exchange_weak_explicit(word, &s, s | WQ_LOCK, memory_order_acquire,
                                                         memory_order_relaxed)) {
            return s | WQ_LOCK;
        }
    }
}

/* Let go of WQ_LOCK, with the object's new state (WQ_LOCK itself is cleared here). */
static inline void wq_unlock(_Atomic uint64_t *word, uint64_t s)
{
    atomic_store_explicit(word, s & ~WQ_LOCK, memory_order_release);
}

static inline bool wq_empty(const weft__waitq *q)
{
    return q->head == NULL;
}

static inline void wq_push(weft__waitq *q, weft__waiter *n)
{
    n->next = NULL;
    n->prev = q->tail;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
}

static inline void wq_push_front(weft__waitq *q, weft__waiter *n)
{
    n->prev = NULL;
    n->next = q->head;
    if (q->head)
        q->head->prev = n;
    else
        q->tail = n;
    q->head = n;
}

static inline void wq_remove(weft__waitq *q, weft__waiter *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        q->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->tail = n->prev;
}

/* Take n off the queue for waking with `grant`, adding it to *wake (woken in order by wq_wake). */
static inline void wq_take(weft__waitq *q, weft__waiter *n, uint64_t grant, weft__waiter ***wake)
{
    wq_remove(q, n);
    n->grant = grant;
    atomic_store_explicit(&n->state, WQ_TAKEN, memory_order_relaxed);
    n->wake_next = NULL;
    **wake = n;
    *wake = &n->wake_next;
}

/* Enqueue the calling fiber or thread; the caller holds WQ_LOCK. */
static inline void wq_enqueue(weft__waitq *q, weft__waiter *n, weft__fiber *self, unsigned reason, const void *obj,
                              bool front)
{
    n->f = self;
    atomic_store_explicit(&n->state, WQ_QUEUED, memory_order_relaxed);
    n->tok = weft__park_prepare(self, reason, obj);
    if (front)
        wq_push_front(q, n);
    else
        wq_push(q, n);
}

/* Wake the taken nodes, in order; WQ_LOCK has been let go. One wakeup goes straight to the waker's
 * runnext (it runs next: a hand-off), several queue in order. */
static inline void wq_wake(weft__waiter *list)
{
    bool one = list && !list->wake_next;
    for (weft__waiter *n = list, *next; n; n = next) {
        next = n->wake_next;
        weft__fiber *f = n->f;
        uint32_t tok = n->tok;
        atomic_store_explicit(&n->state, WQ_DONE, memory_order_release);
        if (one)
            weft__unpark(f, tok, PW_OK);
        else
            weft__unpark_fifo(f, tok, PW_OK);
    }
}

/* After a park that ended without a wakeup, the node was found TAKEN: the waker is about to mark it
 * DONE. Wait for that (the node and what it carries are ours again after it). */
static inline void wq_settle(weft__waiter *n)
{
    unsigned spins = 0;
    while (atomic_load_explicit(&n->state, memory_order_acquire) != WQ_DONE)
        weft__spin_backoff(&spins);
}

/* weft_mutex_lock's body, with a choice: weft_cond_wait takes the mutex back even when cancelled. */
int weft__mutex_lock(weft_mutex_t *m, int64_t deadline, bool cancellable);

/* The wait group's wait with a wait reason of the caller's (the latch is a wait group), and its count. */
int weft__wg_wait(weft_wg_t *wg, int64_t deadline, unsigned reason);
int64_t weft__wg_count(weft_wg_t *wg);

#endif /* WEFT_SYNC_WAITQ_H */
