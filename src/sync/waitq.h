/*
 * The lock word every lock and synchronizer in src/sync is built on; they wait through the one waiter
 * (core/wait.h).
 *
 * An object (mutex, rwlock, condition variable, semaphore, once, barrier) keeps one 64-bit state word
 * and a FIFO of waiter nodes (weft__wlist). Bit 0 of the word, WQ_LOCK, is a short spin lock over the
 * list and over the rest of the word: while it is held nobody else changes the word, because every
 * lock-free fast path is a CAS from a value that has the bit clear. Its holder never parks, and it lets
 * go by storing the object's whole new state in one go. That store is the waker's last touch of the
 * object: a woken fiber may destroy the object (free its memory) at once, as POSIX allows right after
 * an unlock, so after it the waker touches only the nodes it won (weft__wlist_wake), in order.
 *
 * A waker wins each node it gives something to (weft__wlist_take: the node's claim) and skips a node it
 * cannot win: one whose wait ended early, or a select's case on this object whose select another case
 * settled. Such a node stays in the list, and in the object's "has waiters" bit, until its owner takes
 * it out under WQ_LOCK. So a waker that walks the list looks past the head.
 */
#ifndef WEFT_SYNC_WAITQ_H
#define WEFT_SYNC_WAITQ_H

#include "core/park.h"
#include "core/wait.h"

#define WQ_LOCK ((uint64_t)1)

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

/* A plain wait on a synchronizer: its wait record and its one node. */
typedef struct {
    weft__wait w;
    weft__wnode n;
} wq_waiter;

/* Under WQ_LOCK: the calling fiber or thread starts waiting and queues (at the front: a woken waiter
 * that lost the race, keeping its place). */
static inline void wq_enqueue(weft__wlist *q, wq_waiter *x, weft__fiber *self, unsigned reason, const void *obj,
                              bool front)
{
    weft__wait_begin(&x->w, self, reason, obj);
    x->w.solo = true; /* called off only under WQ_LOCK: wq_wait_end */
    weft__wnode_init(&x->n, &x->w, 0);
    if (front)
        weft__wlist_push_front(q, &x->n);
    else
        weft__wlist_push(q, &x->n);
}

/* After the park returned r: 0 when a waker won the wait (x->n.grant holds what it gave); else r, the
 * wait called off under WQ_LOCK, which is still held (*s, the word as it is), with the node still
 * queued for the caller to take out before it lets go. */
static inline int wq_wait_end(wq_waiter *x, int r, _Atomic uint64_t *word, uint64_t *s)
{
    if (r != 0) {
        *s = wq_lock(word);
        if (weft__wait_call_off_locked(&x->w))
            return r;
        wq_unlock(word, *s);
    }
    weft__wait_settle(&x->w);
    return 0;
}

/* weft_mutex_lock's body, with a choice: weft_cond_wait takes the mutex back even when cancelled. */
int weft__mutex_lock(weft_mutex_t *m, int64_t deadline, bool cancellable);

/* The wait group's wait with a wait reason of the caller's (the latch is a wait group), and its count. */
int weft__wg_wait(weft_wg_t *wg, int64_t deadline, unsigned reason);
int64_t weft__wg_count(weft_wg_t *wg);

#endif /* WEFT_SYNC_WAITQ_H */
