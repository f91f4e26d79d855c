/*
 * The scheduler: fibers M:N over worker threads, with work stealing.
 *
 * THE JOB
 * Run any number of fibers on one OS thread per usable CPU ("workers"), so that: a switch between two
 * fibers costs about as much as the hand-written register swap itself; spawning and finishing a fiber
 * costs no syscall and no lock; every worker stays busy while there is work anywhere; an idle runtime
 * uses no CPU; and a runnable fiber never waits while a worker sleeps.
 *
 * GLOSSARY
 *   worker      an OS thread running fibers, with its own queues (weft__worker). Go's M and P in one.
 *   sched ctx   the worker thread's own stack and context; it runs the idle loop, never user code.
 *   owner       the worker a structure belongs to. Owner-only fields need no atomics.
 *   new fiber   spawned, not started: it has no stack yet and may run on any worker.
 *   started     has run at least once: it stays on its worker for good (docs/design.md, decision 3),
 *               so the thread-local storage it sees (errno, libc state) never changes under it.
 *   runnext     one slot for the fiber just woken on this worker: it runs next (hand-off latency).
 *   ready queue owner-only FIFO of started fibers that are ready (yielded, or woken and bumped out of
 *               runnext).
 *   deque       Chase-Lev work-stealing deque of new fibers: the owner pushes and pops at the bottom
 *               (LIFO: depth-first, so fork/join trees stay small and hot in cache); thieves take from
 *               the top (the oldest, usually the biggest piece of work).
 *   inbox       MPSC stack where other threads put fibers of this worker that they woke.
 *   global q    mutex-protected FIFO: spawns from outside the runtime, and half of a deque that overflows.
 *   spinning    an idle worker looking for work before it sleeps (Go's spinning M).
 *
 * THE APPROACH
 *  - Switches go straight from fiber to fiber: a fiber that yields, parks or finishes picks the next
 *    fiber itself (weft__schedule) and switches to it, one register swap. Only when nothing is runnable
 *    locally does it switch to the sched ctx, which steals, spins and sleeps.
 *  - A finishing fiber publishes its result and wakes its joiner before it picks the next fiber, so a
 *    joiner on the same worker is in runnext and runs next (one switch, depth-first). It cannot free
 *    the stack it is running on: it leaves the stack in w->dead_stack and the next context, having
 *    arrived on its own stack, gives it back (after_switch), unless that context is a fiber resuming
 *    from the fast path of a yield, which leaves it for the next switch that is not (or the next
 *    fiber to finish). After publishing, the finishing fiber no longer touches its descriptor, which
 *    its joiner may already have freed.
 *  - Picking order: at every 61st switch the global queue (so it never starves); runnext (at most 256
 *    times in a row, so two fibers waking each other cannot monopolise a worker); the inbox; then the
 *    older of the ready queue's head and the deque's bottom; then the global queue. A fiber woken by a
 *    join goes to runnext, so fork/join recursion stays depth-first (the pending join resumes before any
 *    new fiber starts) and needs about one stack per level per worker.
 *  - Yield has a fast path: when only the ready queue holds work, it rotates that queue and switches,
 *    without the full pick. It decides on two words (the inbox, and fast_until, which stands for
 *    everything else the full pick looks at and for the queue's having a fiber to rotate), writes what
 *    the lifecycle and the monitor need (the two fibers' states, the switch count, the depth word) and
 *    the rotation, keeps nothing live across the switch, and leaves what can wait (a finished fiber's
 *    stack) to the next context that resumes the slow way.
 *  - Stacks are allocated when a fiber starts, from a per-worker cache: spawning a million fibers that
 *    have not run costs only their descriptors, and a spawn/run/finish cycle reuses one hot stack.
 *  - Idle: steal half of a random victim's deque; spin (bounded) so a hand-off between busy workers
 *    costs a cache miss, not a futex round trip; then sleep on a futex until the earliest timer. At most
 *    half the busy workers spin as thieves, but a worker with parked fibers of its own always spins its
 *    window, since only it can run them when they are woken.
 *  - Waking: new work (a spawn) wakes one sleeping worker only when nobody is spinning; that worker
 *    starts out spinning, and a spinner that finds work wakes the next one only if it was the last
 *    spinner (Go's protocol: wakeups spread without a thundering herd). A fiber woken for a sleeping
 *    worker wakes that worker, since only it may run the fiber.
 *
 * REJECTED, AND WHY
 *  - Switching through the sched ctx on every yield (two switches instead of one): doubles the cost of
 *    the most frequent operation.
 *  - Stealing started fibers (Go, Tokio): their thread-local storage would change under them, and C
 *    code caches the address of errno and of other thread-locals across calls (decision 3).
 *  - One FIFO queue for new fibers (Go): fork/join recursion then goes breadth-first and keeps a stack
 *    alive for every pending join.
 *  - Signal-based preemption: C code is not preemption-safe (locks, errno, async-signal-safety).
 *
 * MEMORY ORDERING PROTOCOL
 *  - Deque: push stores the slot (relaxed) then bottom (release); thieves load top then bottom
 *    (seq_cst) and CAS top; the owner's pop stores bottom and then loads top, both seq_cst, the
 *    store-load order Chase-Lev needs (Lê et al., PPoPP 2013).
 *  - Inbox: producers CAS the head (seq_cst) and then load the target's `sleeping` (seq_cst); a worker
 *    about to sleep stores `sleeping` (seq_cst) and then loads the inbox. One of the two sees the other.
 *  - New work: the producer publishes (deque bottom release store, or the global queue's mutex), then a
 *    seq_cst fence, then loads nsleeping/nspinning. A worker going to sleep first gives up spinning
 *    (seq_cst RMW), increments nsleeping (seq_cst RMW) and then checks every queue. Either the producer
 *    sees a sleeper and wakes it, or the sleeper sees the work.
 *  - Wakeup words (w->futex): the waker CASes 0 -> reason, the sleeper claims it back with an exchange
 *    to AWAKE when it leaves, so a late waker never counts a wakeup for a worker that is already up.
 *  - The park word (park.h) decides every race between wakers, timers and the parking fiber with one
 *    CAS; the winner alone enqueues the fiber.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/switch.h"
#include "core/internal.h"
#include "io/io.h"
#include "obs/sanitize.h"

weft__rt weft__rt_g;
#define rt (&weft__rt_g)
int weft__nworkers;

/* rt.nworkers, and its copy for the layers above (park.h), which only start and stop write */
static void set_nworkers(int n)
{
    rt->nworkers = n;
    weft__nworkers = n;
}

__thread weft__tls_rt_t weft__tls_rt __attribute__((tls_model("initial-exec")));
#if !defined(__x86_64__) && !defined(__aarch64__)
weft__tls_rt_t *weft__tls(void)
{
    __asm__ volatile(""); /* not pure: every call reads this thread's block anew */
    return &weft__tls_rt;
}
#endif
_Atomic int weft__enter_fence; /* no membarrier here: threads start WEFT__M_FENCED (monitor.c) */

enum { S_YIELD, S_PARK, S_EXIT };
enum { WAKE_NONE = 0, WAKE_INBOX = 1, WAKE_SPIN = 2, WAKE_AWAKE = 3 };

#define FAIR_TICKS 61
#define SPIN_POLL_NS 5000 /* a spinning worker looks at the poller this often */
#define RUNNEXT_STREAK_MAX 256

/* ------------------------------------------------------------------------------------------------ */
/* Deque of new fibers (Chase-Lev)                                                                   */

#define DQ_MASK (WEFT__DEQUE_CAP - 1)

static inline int64_t dq_size(weft__deque *q)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
    return b - t;
}

/* The deque's checker (WEFT_DEBUG 3), owner side: a size within the ring, and every slot the owner
 * filled between top and bottom names a fiber (thieves move top meanwhile, so no slot's fiber is read). */
static inline bool dq_valid(weft__deque *q)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
    if (b - t > WEFT__DEQUE_CAP || t > b + 1)
        return false;
    for (int64_t i = t; i < b; i++)
        if (!atomic_load_explicit(&q->buf[i & DQ_MASK], memory_order_relaxed))
            return false;
    return true;
}

static inline bool dq_push(weft__deque *q, weft__fiber *f)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
    if (b - t >= WEFT__DEQUE_CAP)
        return false;
    atomic_store_explicit(&q->buf[b & DQ_MASK], f, memory_order_relaxed);
    atomic_store_explicit(&q->bottom, b + 1, memory_order_release);
    weft__check(dq_valid(q));
    return true;
}

/* Owner only: the newest. */
static inline weft__fiber *dq_pop(weft__deque *q)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    if (b <= atomic_load_explicit(&q->top, memory_order_relaxed))
        return NULL; /* cheap check first: the common idle case needs no fence */
    b--;
    atomic_store_explicit(&q->bottom, b, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&q->top, memory_order_seq_cst);
    weft__fiber *f = NULL;
    if (t <= b) {
        f = atomic_load_explicit(&q->buf[b & DQ_MASK], memory_order_relaxed);
        if (t == b) {
            /* the last one: race the thieves for it */
            if (!atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1, memory_order_seq_cst,
                                                         memory_order_relaxed))
                f = NULL;
            atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
        }
    } else {
        atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
    }
    return f;
}

/* Anyone (the owner too): the oldest. */
static inline weft__fiber *dq_steal(weft__deque *q)
{
    for (;;) {
        int64_t t = atomic_load_explicit(&q->top, memory_order_seq_cst);
        int64_t b = atomic_load_explicit(&q->bottom, memory_order_seq_cst);
        if (t >= b)
            return NULL;
        weft__fiber *f = atomic_load_explicit(&q->buf[t & DQ_MASK], memory_order_relaxed);
        if (atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1, memory_order_seq_cst,
                                                    memory_order_relaxed))
            return f;
        /* lost to another thief or the owner: look again */
    }
}

/* Owner only: claim the oldest k (at most) with one CAS, as a batch. Safe against thieves: they move
 * top by one with a CAS, so exactly one of us wins each race; the owner is not pushing meanwhile. */
static size_t dq_take_top(weft__deque *q, weft__fiber **out, size_t k)
{
    for (;;) {
        int64_t t = atomic_load_explicit(&q->top, memory_order_seq_cst);
        int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
        size_t n = b > t ? (size_t)(b - t) : 0;
        if (n > k)
            n = k;
        if (!n)
            return 0;
        for (size_t i = 0; i < n; i++)
            out[i] = atomic_load_explicit(&q->buf[(t + (int64_t)i) & DQ_MASK], memory_order_relaxed);
        if (atomic_compare_exchange_strong_explicit(&q->top, &t, t + (int64_t)n, memory_order_seq_cst,
                                                    memory_order_relaxed))
            return n;
    }
}

static inline weft__fiber *dq_peek_bottom(weft__deque *q)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    return atomic_load_explicit(&q->buf[(b - 1) & DQ_MASK], memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------------------ */
/* Ready queue and runnext (owner only)                                                              */

static inline void stamp(weft__worker *w, weft__fiber *f)
{
    atomic_store_explicit(&f->enq_seq, ++w->enq_seq, memory_order_relaxed);
}

/*
 * The fast path of a yield looks at two words, not at everything a full pick looks at: the inbox and
 * fast_until. Until the switch count reaches fast_until, the ready queue is known not to be empty,
 * runnext, the timer heap and the deque are known to be empty, no look at the global queue is due, and
 * no runnext streak needs ending. Whatever changes one of them sets it to 0 (the owner's deque pushes
 * here, readyq_pop taking the last fiber, weft__ready's runnext, weft__timer_add; a streak only grows
 * from runnext); a yield that takes the full pick sets it again (fast_refresh). A place that forgot
 * would only make what it queued wait for the next look at the global queue, which comes within
 * FAIR_TICKS switches; but the ready queue's must not be forgotten, since the fast path rotates it.
 */
static inline void fast_refresh(weft__worker *w)
{
    bool quiet = w->ready_head && !w->runnext && !w->heap_len && !w->runnext_streak && dq_size(&w->dq) <= 0;
    w->fast_until = quiet ? w->fair_at : 0;
}

/* The owner's push of a new fiber onto its deque: stamped, and the fast path of a yield told. */
static inline bool deque_push(weft__worker *w, weft__fiber *f)
{
    stamp(w, f);
    w->fast_until = 0;
    return dq_push(&w->dq, f);
}

/*
 * The ready queue is a singly linked FIFO from ready_head to ready_tail. The tail's link is not kept
 * (it holds whatever it held): the queue ends where the tail is, so a push stores two words and the
 * rotation of a yield three.
 */

/* The ready queue's checker (WEFT_DEBUG 3), owner only: the links lead from the head to the tail, and
 * every fiber in it is a fiber of this worker that is not parked (a woken one leaves WAITING before it
 * is queued). The first WEFT__CHECK_MAX fibers. */
static inline bool readyq_valid(weft__worker *w)
{
    if (!w->ready_head || !w->ready_tail)
        return !w->ready_head && !w->ready_tail;
    unsigned k = 0;
    for (weft__fiber *f = w->ready_head; f; f = f->link) {
        if (f->kind != WEFT__KIND_FIBER || f->worker != w)
            return false;
        if (WEFT__PW_STATE(atomic_load_explicit(&f->park, memory_order_relaxed)) == WEFT__PW_WAITING)
            return false;
        if (f == w->ready_tail || ++k == WEFT__CHECK_MAX)
            return true;
    }
    return false; /* the links ended before the tail */
}

static inline void readyq_push(weft__worker *w, weft__fiber *f)
{
    stamp(w, f);
    if (w->ready_tail)
        w->ready_tail->link = f;
    else
        w->ready_head = f;
    w->ready_tail = f;
    weft__check(readyq_valid(w));
}

static inline weft__fiber *readyq_pop(weft__worker *w)
{
    weft__fiber *f = w->ready_head;
    if (f) {
        if (f == w->ready_tail) {
            w->ready_head = w->ready_tail = NULL;
            w->fast_until = 0; /* nothing left to rotate (fast_refresh) */
        } else
            w->ready_head = f->link;
    }
    return f;
}

/* A yield's rotation, for a queue that is not empty: the head leaves it and f joins it at the tail.
 * f keeps the stamp it has, which no stamp given since is older than: the deque is empty
 * (yield_fast_ok), so whatever is pushed there later gets a later one still, and that comparison is
 * all stamps are for. (After 2^31 stamps given on this worker while f only ever took the fast path,
 * its stamp would compare as the newer one: the deque's fiber would go first, once.) */
static inline weft__fiber *readyq_rotate(weft__worker *w, weft__fiber *f)
{
    weft__fiber *next = w->ready_head, *tail = w->ready_tail, *after = next->link;
    /* In this order, with the tail's link between them, the head and the tail are not written as one
     * 16-byte store assembled in a vector register: the compiler did, which cost moves into the vector
     * unit here and a wide store the next yield's loads of head and tail must be forwarded from. */
    w->ready_head = next == tail ? f : after;
    tail->link = f; /* when next is the tail, that is next's link, which means nothing once it leaves */
    w->ready_tail = f;
    weft__check(readyq_valid(w));
    return next;
}

/* ------------------------------------------------------------------------------------------------ */
/* Global queue                                                                                      */

/* Make room for n more; under the lock. The ring grows by doubling, outside the lock (returns with it
 * held again). -ENOMEM when it cannot grow. */
static int gq_reserve(size_t n)
{
    for (;;) {
        size_t len = (size_t)atomic_load_explicit(&rt->gq_len, memory_order_relaxed);
        if (len + n <= rt->gq_cap)
            return 0;
        size_t cap = rt->gq_cap ? rt->gq_cap : 1024;
        while (cap < len + n)
            cap *= 2;
        weft__spin_unlock(&rt->gq_lock);
        weft__fiber **ring = malloc(cap * sizeof *ring);
        weft__spin_lock(&rt->gq_lock);
        if (!ring)
            return -ENOMEM;
        len = (size_t)atomic_load_explicit(&rt->gq_len, memory_order_relaxed);
        if (cap < len + n || cap <= rt->gq_cap) { /* someone else grew it meanwhile */
            free(ring);
            continue;
        }
        for (size_t i = 0; i < len; i++)
            ring[i] = rt->gq_ring[(rt->gq_head + i) & (rt->gq_cap - 1)];
        free(rt->gq_ring);
        rt->gq_ring = ring;
        rt->gq_cap = cap;
        rt->gq_head = 0;
    }
}

/* Queue n fibers at the back of the global queue. -ENOMEM (nothing queued) when it cannot grow. */
static int gq_push(weft__fiber *const *fs, size_t n)
{
    weft__spin_lock(&rt->gq_lock);
    int r = gq_reserve(n);
    if (r == 0) {
        size_t len = (size_t)atomic_load_explicit(&rt->gq_len, memory_order_relaxed);
        for (size_t i = 0; i < n; i++)
            rt->gq_ring[(rt->gq_head + len + i) & (rt->gq_cap - 1)] = fs[i];
        atomic_store_explicit(&rt->gq_len, (int64_t)(len + n), memory_order_relaxed);
    }
    weft__spin_unlock(&rt->gq_lock);
    return r;
}

/* Take a fair share of the global queue: one to run, the rest into w's deque. */
static weft__fiber *gq_get(weft__worker *w)
{
    if (atomic_load_explicit(&rt->gq_len, memory_order_relaxed) == 0)
        return NULL;
    weft__fiber *got[WEFT__DEQUE_CAP / 2];
    weft__spin_lock(&rt->gq_lock);
    int64_t len = atomic_load_explicit(&rt->gq_len, memory_order_relaxed);
    int64_t n = len / rt->nworkers + 1;
    int64_t room = WEFT__DEQUE_CAP - dq_size(&w->dq) + 1; /* the first one runs at once */
    if (n > len)
        n = len;
    if (n > WEFT__DEQUE_CAP / 2)
        n = WEFT__DEQUE_CAP / 2;
    if (n > room)
        n = room;
    for (int64_t i = 0; i < n; i++)
        got[i] = rt->gq_ring[(rt->gq_head + (size_t)i) & (rt->gq_cap - 1)];
    rt->gq_head = (rt->gq_head + (size_t)n) & (rt->gq_cap - 1);
    atomic_store_explicit(&rt->gq_len, len - n, memory_order_relaxed);
    weft__spin_unlock(&rt->gq_lock);
    for (int64_t i = 1; i < n; i++)
        deque_push(w, got[i]); /* room was checked: only this worker pushes here */
    return n > 0 ? got[0] : NULL;
}

/* ------------------------------------------------------------------------------------------------ */
/* Waking workers                                                                                    */

/* Wake a sleeping worker for a reason; false if it was not asleep (or someone woke it first). A worker
 * asleep in the poller is woken through the poller, any other on its futex. */
static bool worker_wake(weft__worker *w, uint32_t why)
{
    uint32_t exp = WAKE_NONE;
    if (!atomic_compare_exchange_strong_explicit(&w->futex, &exp, why, memory_order_seq_cst, memory_order_relaxed))
        return false;
    if (atomic_load_explicit(&w->in_poll, memory_order_seq_cst))
        weft__io_interrupt();
    else
        weft__futex_wake(&w->futex, 1);
    return true;
}

/* New work exists and may be stolen: make sure some worker is looking. Call after a seq_cst fence. */
static void wake_idle(void)
{
    if (atomic_load_explicit(&rt->nsleeping, memory_order_seq_cst) == 0)
        return;
    if (atomic_load_explicit(&rt->nspinning, memory_order_seq_cst) != 0)
        return;
    int zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&rt->nspinning, &zero, 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return;
    /* we now hold a spinner's count on behalf of the worker we wake */
    int n = rt->nworkers;
    weft__worker *self = weft__tls_worker;
    unsigned start = self ? (unsigned)self->face.index + 1 : 0;
    for (int i = 0; i < n; i++) {
        weft__worker *v = rt->workers[(start + (unsigned)i) % (unsigned)n];
        if (v == self || !atomic_load_explicit(&v->sleeping, memory_order_seq_cst))
            continue;
        if (worker_wake(v, WAKE_SPIN))
            return;
    }
    atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
}

static void inbox_push(weft__worker *w, weft__fiber *f)
{
    weft__fiber *old = atomic_load_explicit(&w->inbox, memory_order_relaxed);
    do {
        f->link = old;
    } while (!atomic_compare_exchange_weak_explicit(&w->inbox, &old, f, memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (atomic_load_explicit(&w->sleeping, memory_order_seq_cst))
        worker_wake(w, WAKE_INBOX);
}

static inline void inbox_drain(weft__worker *w)
{
    if (!atomic_load_explicit(&w->inbox, memory_order_relaxed))
        return;
    weft__fiber *f = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
    /* the stack is newest-first: reverse it so wakeups run in the order they happened */
    weft__fiber *rev = NULL;
    while (f) {
        weft__fiber *n = f->link;
        f->link = rev;
        rev = f;
        f = n;
    }
    while (rev) {
        weft__fiber *n = rev->link;
        readyq_push(w, rev);
        rev = n;
    }
}

void weft__ready(weft__fiber *f, bool next)
{
    weft__worker *w = f->worker;
    atomic_store_explicit(&f->state, WEFT_READY, memory_order_relaxed);
    if (w != weft__tls_worker) {
        inbox_push(w, f);
    } else if (next) {
        if (w->runnext)
            readyq_push(w, w->runnext);
        w->runnext = f;
        w->fast_until = 0; /* see fast_refresh */
    } else {
        readyq_push(w, f);
    }
}

/* A fiber or thread just parked on an fd. Someone must poll: a worker asleep on its futex (it went to
 * sleep while nobody waited on fds) is woken to take the poller's place, unless a worker is in the
 * poller already or none sleeps. Workers that are up poll on their own (find_work, pick_local). */
void weft__io_waiter_added(void)
{
    if (atomic_load_explicit(&rt->poller, memory_order_seq_cst) ||
        atomic_load_explicit(&rt->nsleeping, memory_order_seq_cst) == 0)
        return;
    weft__tsan_internal_begin();
    weft__worker *self = weft__enter();
    for (int i = 0; i < rt->nworkers; i++) {
        weft__worker *v = rt->workers[i];
        if (v != self && atomic_load_explicit(&v->sleeping, memory_order_seq_cst) && worker_wake(v, WAKE_INBOX))
            break;
    }
    weft__leave();
    weft__tsan_internal_end();
}

int weft__submit_new(weft__worker *w, weft__fiber *f)
{
    atomic_store_explicit(&f->state, WEFT_NEW, memory_order_relaxed);
    if (w) {
        if (WEFT__UNLIKELY(!deque_push(w, f))) {
            /* full: move the older half to the global queue, where other workers find it */
            weft__fiber *batch[WEFT__DEQUE_CAP / 2];
            weft__spin_lock(&rt->gq_lock);
            int r = gq_reserve(WEFT__DEQUE_CAP / 2);
            if (r < 0) {
                weft__spin_unlock(&rt->gq_lock);
                return r;
            }
            size_t k = dq_take_top(&w->dq, batch, WEFT__DEQUE_CAP / 2);
            size_t len = (size_t)atomic_load_explicit(&rt->gq_len, memory_order_relaxed);
            for (size_t i = 0; i < k; i++)
                rt->gq_ring[(rt->gq_head + len + i) & (rt->gq_cap - 1)] = batch[i];
            atomic_store_explicit(&rt->gq_len, (int64_t)(len + k), memory_order_relaxed);
            weft__spin_unlock(&rt->gq_lock);
            if (!dq_push(&w->dq, f)) { /* thieves took nothing and we took nothing: cannot happen */
                int e = gq_push(&f, 1);
                if (e < 0)
                    return e;
            }
        }
    } else {
        int r = gq_push(&f, 1);
        if (r < 0)
            return r;
    }
    atomic_thread_fence(memory_order_seq_cst);
    wake_idle();
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Switching                                                                                         */

static void fiber_entry(void *arg);

static inline void san_stack(weft__worker *w, weft__fiber *f, const void **lo, size_t *size)
{
    if (f->kind == WEFT__KIND_SCHED) {
        *lo = weft__tls_m->stack_lo; /* the idle context switched to is always this thread's */
        *size = weft__tls_m->stack_size;
    } else {
        *lo = f->stack->lo;
        *size = (size_t)((char *)f->stack - f->stack->lo);
    }
}

/* The monitor reads the count to tell a stuck fiber (no switch for stuck_us) from a busy worker. Only the
 * owner writes it: a plain load and store, no locked instruction. */
static inline void count_switch(weft__worker *w)
{
    atomic_store_explicit(&w->nswitch, atomic_load_explicit(&w->nswitch, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* The switch itself, counted already. */
static inline void switch_counted(weft__worker *w, weft__fiber *from, weft__fiber *to, bool dying)
{
    weft__dassert(WEFT__DEPTH(atomic_load_explicit(&weft__tls_depth, memory_order_relaxed)) == 1);
    w->face.cur = to;
    atomic_store_explicit(&to->state, WEFT_RUNNING, memory_order_relaxed);
#if WEFT_ASAN
    const void *lo;
    size_t size;
    san_stack(w, to, &lo, &size);
    weft__asan_start_switch(dying ? NULL : &from->asan_fake_stack, lo, size);
#else
    (void)san_stack;
#endif
    void **save = dying ? &w->dead_sp : &from->sp;
    void *sp = to->sp, *tsan_fiber = to->tsan_fiber;
    if (dying)
        weft__tsan_internal_end(); /* TSan checks that a fiber it destroys hides nothing */
    weft__tsan_switch(tsan_fiber);
    weft__ctx_switch_inline(save, sp);
}

static inline void switch_to(weft__worker *w, weft__fiber *from, weft__fiber *to, bool dying)
{
    count_switch(w);
    switch_counted(w, from, to, dying);
}

/* The stack of the fiber that just finished on this worker: free now that we are off it. */
static void reap(weft__worker *w)
{
    weft__stack_put(w, w->dead_stack);
    w->dead_stack = NULL;
    weft__tsan_destroy(w->dead_tsan);
    w->dead_tsan = NULL;
}

/* First thing a context does when it runs again. The fast path of a yield does only the first half:
 * the stack of a fiber that finished just before it resumed waits for the next after_switch (at most
 * one is ever pending: a finishing fiber gives back the one before its own). */
static inline void after_switch(weft__worker *w, weft__fiber *self)
{
    weft__asan_finish_switch(self->asan_fake_stack, NULL, NULL);
    if (w->dead_stack)
        reap(w);
}

/* Give a new fiber its stack and first frame. false: no memory for a stack; it was finished with
 * -ENOMEM instead (its joiner gets the error). */
static bool start_prepare(weft__worker *w, weft__fiber *f)
{
    weft__stack *s = weft__stack_get(w, f->stack_size);
    f->worker = w;
    if (WEFT__UNLIKELY(!s)) {
        f->start_err = -ENOMEM;
        if (f->flags & WEFT__F_DETACHED) {
            char label[64], msg[160];
            weft__label(f, label, sizeof label);
            int n = snprintf(msg, sizeof msg, "weft: fiber %s could not start: no memory for its %u KiB stack\n",
                             label, f->stack_size >> 10);
            if (n > 0)
                fwrite(msg, 1, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, stderr);
        }
        weft__fiber_publish_done(w, f);
        return false;
    }
    f->stack = s;
    s->owner = f;
    w->nresident++;
    f->sp = weft__ctx_make((char *)s, fiber_entry, f);
    f->asan_fake_stack = NULL;
    f->tsan_fiber = weft__tsan_create();
    if (WEFT_TSAN && (f->flags & WEFT__F_NAMED))
        weft__tsan_set_name(f->tsan_fiber, f->name);
    return true;
}

static inline weft__fiber *runnable(weft__worker *w, weft__fiber *f)
{
    while (f && !f->stack && f->kind == WEFT__KIND_FIBER) {
        if (start_prepare(w, f))
            return f;
        f = NULL;
    }
    return f;
}

static void timers_check(weft__worker *w)
{
    if (w->heap_len && weft__timer_next(w) <= weft__clock_ns())
        weft__timer_run(w, weft__clock_ns());
}

/* The next fiber to run from what this worker has at hand, or NULL. */
static weft__fiber *pick_local(weft__worker *w)
{
    weft__fiber *f;
    uint64_t n = atomic_load_explicit(&w->nswitch, memory_order_relaxed);
    if (WEFT__UNLIKELY(n >= w->fair_at)) {
        w->fair_at = n + FAIR_TICKS;
        /* a busy worker looks at the poller too, unless another worker sleeps in it: fds must not starve
         * while every worker has fibers to run */
        if (weft__io_waiting() > 0 && !atomic_load_explicit(&rt->poller, memory_order_relaxed))
            weft__io_poll(WEFT_NOWAIT);
        if ((f = gq_get(w)))
            return f;
    }
    if (w->heap_len)
        timers_check(w);
    if (w->runnext) {
        f = w->runnext;
        w->runnext = NULL;
        if (w->runnext_streak++ < RUNNEXT_STREAK_MAX)
            return f;
        readyq_push(w, f);
    }
    w->runnext_streak = 0;
    inbox_drain(w);
    weft__fiber *r = w->ready_head;
    if (dq_size(&w->dq) > 0) {
        if (r && (int32_t)(atomic_load_explicit(&r->enq_seq, memory_order_relaxed) -
                           atomic_load_explicit(&dq_peek_bottom(&w->dq)->enq_seq, memory_order_relaxed)) < 0)
            return readyq_pop(w);
        if ((f = dq_pop(&w->dq)))
            return f;
    }
    if (r)
        return readyq_pop(w);
    return gq_get(w);
}

/* Called on the stack of `self`, which gives up its worker (yield, park or exit). */
static void schedule(weft__worker *w, weft__fiber *self, int why)
{
    if (why == S_YIELD) {
        atomic_store_explicit(&self->state, WEFT_READY, memory_order_relaxed);
        readyq_push(w, self);
    }
    weft__fiber *next = runnable(w, pick_local(w));
    while (!next && (w->runnext || w->ready_head || dq_size(&w->dq) > 0))
        next = runnable(w, pick_local(w)); /* a fiber that could not start: try the next */
    if (!next)
        next = w->idle;
    if (why == S_YIELD)
        fast_refresh(w); /* for the yields after this one */
    /* (a finished fiber's descriptor may already be another fiber's: never "resume" it) */
    if (next == self && why != S_EXIT) {
        atomic_store_explicit(&self->state, WEFT_RUNNING, memory_order_relaxed);
        count_switch(w); /* no switch, but the fiber came back to the runtime: it is not stuck */
        return;
    }
    switch_to(w, self, next, why == S_EXIT);
    /* resumed: the same worker (a started fiber never moves) */
    w = self->worker;
    after_switch(w, self);
}

/* The end of a fiber whose thread lost its worker to the monitor while the fiber was stuck: publish its
 * result and go back to the thread's own idle context, which ends the thread (worker_thread_main). */
static _Noreturn void orphan_exit(weft__fiber *f, void *result)
{
    weft__mthread *m = weft__tls_m;
    f->result = result;
    m->dead_stack = f->stack;
    m->dead_tsan = f->tsan_fiber;
    f->stack = NULL;
    f->tsan_fiber = NULL;
    weft__fiber_publish_done(NULL, f); /* a thread now: the count of its end comes when the thread ends */
    weft__asan_start_switch(NULL, m->stack_lo, m->stack_size);
    void *sp = m->idle.sp, *tsan_fiber = m->idle.tsan_fiber;
    weft__tsan_internal_end(); /* TSan checks that a fiber it destroys hides nothing */
    weft__tsan_switch(tsan_fiber);
    weft__ctx_switch_inline(&m->dead_sp, sp);
    weft__panic("weft: a finished fiber was resumed");
}

static void fiber_entry(void *arg)
{
    weft__fiber *f = arg;
    weft__worker *w = f->worker;
    weft__tsan_internal_begin(); /* a new TSan fiber starts with nothing hidden */
    after_switch(w, f);
    weft_fn fn = f->fn;
    void *fn_arg = f->arg;
    void *thread_start = w->idle;
    weft__leave(); /* the switch that started us was runtime code; what follows is the user's */
    weft__tsan_internal_end();
    weft__tsan_acquire(f); /* everything before the spawn happens before the fiber */
    /* ... and the start of the thread it runs on, whose thread-local storage (errno) it shares: TSan
     * created the fiber where it could not see the creation as an ordering */
    weft__tsan_acquire(thread_start);
    void *result = fn(fn_arg);
    weft__locals_destroy(f);
    weft__tsan_release(f); /* ... and everything in the fiber before its join returns */
    weft__tsan_release(rt); /* ... and before a shutdown that waited for it goes on */
    weft__tsan_internal_begin();
    w = weft__enter();
    if (WEFT__UNLIKELY(!w))
        orphan_exit(f, result);
    f->result = result;
    w->nresident--;
    if (w->dead_stack)
        reap(w); /* one a fast yield left (after_switch) */
    w->dead_stack = f->stack;
    w->dead_tsan = f->tsan_fiber;
    f->stack = NULL;
    f->tsan_fiber = NULL;
    weft__fiber_publish_done(w, f); /* from here on, f may be freed and reused: do not touch it */
    schedule(w, f, S_EXIT);
    weft__panic("weft: a finished fiber was resumed");
}

/* ------------------------------------------------------------------------------------------------ */
/* Parking                                                                                           */

static inline bool unpark(weft__fiber *f, uint32_t tok, unsigned why, bool next)
{
    uint32_t exp = WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_WAITING);
    if (!atomic_compare_exchange_strong_explicit(&f->park, &exp, WEFT__PW_WORD(tok, why, WEFT__PW_WOKEN),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    weft__tsan_internal_begin();
    if (f->kind == WEFT__KIND_FIBER) {
        weft__enter(); /* weft__ready queues it locally when it lives on this thread's worker */
        weft__ready(f, next);
        weft__leave();
    } else {
        weft__futex_wake(&f->park, 1);
    }
    weft__tsan_internal_end();
    return true;
}

bool weft__unpark(weft__fiber *f, uint32_t tok, unsigned why)
{
    return unpark(f, tok, why, true);
}

bool weft__unpark_fifo(weft__fiber *f, uint32_t tok, unsigned why)
{
    return unpark(f, tok, why, false);
}

static int park(weft__fiber *self, uint32_t tok, int64_t deadline, bool cancellable);

void weft__park_cancel(weft__fiber *self, uint32_t tok)
{
    uint32_t exp = WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_WAITING);
    if (!atomic_compare_exchange_strong_explicit(&self->park, &exp, WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_RUNNING),
                                                 memory_order_relaxed, memory_order_relaxed)) {
        /* only weft_cancel wakes a wait nobody can find; its wakeup is under way (a fiber is queued to
         * run again): let it land */
        if (exp != WEFT__PW_WORD(tok, WEFT__PW_CANCELED, WEFT__PW_WOKEN))
            weft__panic("weft: a wait that was never published was woken (park word %#x)", exp);
        park(self, tok, WEFT_FOREVER, false);
        return;
    }
    weft__tsan_internal_begin();
    atomic_store_explicit(&self->state, WEFT_RUNNING, memory_order_relaxed);
    self->wait_reason = WEFT__WAIT_NONE;
    self->wait_obj = NULL;
    weft__tsan_internal_end();
}

/*
 * Cancellation. weft_cancel stores the target's generation in its cancel_gen (sticky until the fiber
 * is freed, when gen moves on) and then wakes its current wait, if any, with WEFT__PW_CANCELED; a wait that
 * starts later sees the flag in park() and wakes itself. Between the two sides it is Dekker's pattern:
 * the waiter stores WAITING and then loads the flag, the canceller stores the flag and then loads the
 * park word, each with a full fence in between, so at least one of them sees the other. (Measured: the
 * fence adds under 1 ns to a park, which has just done a locked operation in the common case.) Waking
 * goes through the park word's one CAS like any wakeup, so a real waker and the cancel never both win:
 * whichever loses, the primitive sorts out as it does a timeout.
 */
int weft_cancel(weft_fiber_t h)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return -ESRCH;
    /* if f was freed since the lookup, its gen has moved on and this store means nothing */
    atomic_store_explicit(&f->cancel_gen, (uint32_t)(h.handle_ >> 32), memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t pw = atomic_load_explicit(&f->park, memory_order_relaxed);
    if (WEFT__PW_STATE(pw) == WEFT__PW_WAITING &&
        atomic_load_explicit(&f->gen, memory_order_acquire) == (uint32_t)(h.handle_ >> 32))
        weft__unpark(f, WEFT__PW_SEQ(pw), WEFT__PW_CANCELED);
    return 0;
}

int weft_cancelled(void)
{
    weft__fiber *self = weft__self_if_any();
    return self && weft__cancelled(self);
}

int weft__park(weft__fiber *self, uint32_t tok, int64_t deadline)
{
    return park(self, tok, deadline, true);
}

int weft__park_uncancellable(weft__fiber *self, uint32_t tok, int64_t deadline)
{
    return park(self, tok, deadline, false);
}

/* A fiber's wait with a deadline: its timer. False when there was no memory for it and the wait is
 * called off (a waker that already won it still counts: then true, and the park returns at once). */
static WEFT__NOINLINE bool park_timer_add(weft__worker *w, weft__fiber *self, uint32_t tok, int64_t deadline)
{
    uint32_t waiting = WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_WAITING);
    if (atomic_load_explicit(&self->park, memory_order_relaxed) != waiting)
        return true; /* already woken: no timer needed */
    self->timer_when = deadline;
    if (WEFT__LIKELY(weft__timer_add(w, self) == 0))
        return true;
    /* no memory for the timer: call the wait off, unless a waker already won it */
    uint32_t exp = waiting;
    if (!atomic_compare_exchange_strong_explicit(&self->park, &exp, WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_RUNNING),
                                                 memory_order_relaxed, memory_order_relaxed))
        return true;
    atomic_store_explicit(&self->state, WEFT_RUNNING, memory_order_relaxed);
    self->wait_reason = WEFT__WAIT_NONE;
    return false;
}

/* A thread's wait (a weft thread, a foreign thread, or a fiber whose worker moved on): on its park word's
 * futex, until woken. A wait with a deadline ends on its own, and the thread may then wake anyone: only
 * one without is known to the deadlock check as a thread that cannot. */
static WEFT__NOINLINE void park_thread(weft__fiber *self, uint32_t tok, int64_t deadline)
{
    uint32_t waiting = WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_WAITING);
    bool forever = deadline < 0;
    if (forever)
        atomic_fetch_add_explicit(&rt->threads_parked, 1, memory_order_seq_cst);
    for (;;) {
        uint32_t pw = atomic_load_explicit(&self->park, memory_order_acquire);
        if (pw != waiting)
            break;
        if (weft__futex_wait(&self->park, pw, deadline) == -ETIMEDOUT && deadline > 0 &&
            weft__clock_ns() >= deadline)
            weft__unpark(self, tok, WEFT__PW_TIMEOUT);
    }
    if (forever)
        atomic_fetch_sub_explicit(&rt->threads_parked, 1, memory_order_seq_cst);
}

static int park(weft__fiber *self, uint32_t tok, int64_t deadline, bool cancellable)
{
    if (deadline == WEFT_NOWAIT)
        weft__unpark(self, tok, WEFT__PW_TIMEOUT); /* fails if a waker got there first: then it counts */
    if (cancellable) {
        atomic_thread_fence(memory_order_seq_cst); /* WAITING before the flag: see weft_cancel */
        if (WEFT__UNLIKELY(weft__cancelled(self)))
            weft__unpark(self, tok, WEFT__PW_CANCELED);
    }
    weft__tsan_internal_begin();
    weft__worker *w = weft__enter();
    bool fiber = w && self->kind == WEFT__KIND_FIBER; /* (a stuck fiber whose worker moved on is not) */
    if (fiber) {
        if (deadline > 0 && WEFT__UNLIKELY(!park_timer_add(w, self, tok, deadline))) {
            weft__leave();
            weft__tsan_internal_end();
            return -ENOMEM;
        }
        schedule(w, self, S_PARK);
        w = self->worker;
        if (self->timer_idx != WEFT__TIMER_NONE)
            weft__timer_del(w, self);
    }
    weft__leave();
    weft__tsan_internal_end();
    if (!fiber)
        park_thread(self, tok, deadline);
    /* outside the hidden stretch: this acquire is what orders the waker's writes before our return */
    uint32_t pw = atomic_load_explicit(&self->park, memory_order_acquire);
    weft__tsan_internal_begin();
    if (WEFT__UNLIKELY(WEFT__PW_STATE(pw) != WEFT__PW_WOKEN || WEFT__PW_SEQ(pw) != tok))
        weft__panic("weft: fiber %llu resumed from a wait it was not woken from (park word %#x, token %#x)",
                    (unsigned long long)self->id, pw, tok);
    atomic_store_explicit(&self->park, WEFT__PW_WORD(tok, WEFT__PW_OK, WEFT__PW_RUNNING), memory_order_relaxed);
    atomic_store_explicit(&self->state, WEFT_RUNNING, memory_order_relaxed);
    self->wait_reason = WEFT__WAIT_NONE;
    self->wait_obj = NULL;
    weft__tsan_internal_end();
    switch (WEFT__PW_WHY(pw)) {
    case WEFT__PW_OK: return 0;
    case WEFT__PW_TIMEOUT: return -ETIMEDOUT;
    case WEFT__PW_CANCELED: return -ECANCELED;
    default: return -EDEADLK;
    }
}

/* Nothing but the ready queue needs a look, and it has a fiber: no wakeup waiting in runnext or the
 * inbox, no timer, no new fiber, no fairness check due (n: the switch count; fast_refresh). */
static inline bool yield_fast_ok(weft__worker *w, uint64_t n)
{
    return n < w->fast_until && !atomic_load_explicit(&w->inbox, memory_order_relaxed);
}

/*
 * The yield's thread block. On x86-64, through %fs: the block's offset from the thread pointer (one
 * load from the GOT, the same on every thread) addresses it directly, where weft__tls() reads the
 * thread pointer and then adds, one instruction more per access. The access reads %fs itself, so it
 * reaches the block of the thread it runs on, whichever that is after a switch (the offset is loaded
 * anew after the switch anyway: kept across it, it would take the register the switch preserves). Each
 * access is a volatile asm, so they stay in order among themselves; an aligned 32-bit load or store is
 * what a relaxed atomic one is on x86, and x86 keeps stores in order, so a compiler barrier before the
 * last store makes it a release. Elsewhere (and with TSan, which does not see them) the accesses are
 * weft__tls()'s.
 */
#if defined(__x86_64__) && !WEFT_TSAN
static inline uintptr_t yield_tls_offset(void)
{
    uintptr_t off;
    __asm__ volatile("movq weft__tls_rt@gottpoff(%%rip), %0" : "=r"(off));
    return off;
}
#define yield_tls_get(off, field)                                                                   \
    __extension__({                                                                                 \
        uint32_t v_;                                                                                \
        __asm__ volatile("movl %%fs:%c2(%1), %0"                                                    \
                         : "=r"(v_)                                                                 \
                         : "r"(off), "i"(offsetof(weft__tls_rt_t, field)));                         \
        v_;                                                                                         \
    })
#define yield_tls_set(off, field, v)                                                                \
    __asm__ volatile("movl %0, %%fs:%c2(%1)"                                                        \
                     :                                                                              \
                     : "ri"((uint32_t)(v)), "r"(off), "i"(offsetof(weft__tls_rt_t, field)))
#define yield_tls_worker(off)                                                                       \
    __extension__({                                                                                 \
        weft__worker *w_;                                                                           \
        __asm__ volatile("movq %%fs:%c2(%1), %0"                                                    \
                         : "=r"(w_)                                                                 \
                         : "r"(off), "i"(offsetof(weft__tls_rt_t, worker)));                        \
        w_;                                                                                         \
    })
#else
static inline uintptr_t yield_tls_offset(void)
{
    return (uintptr_t)weft__tls();
}
#define yield_tls_get(off, field) atomic_load_explicit(&((weft__tls_rt_t *)(off))->field, memory_order_relaxed)
#define yield_tls_set(off, field, v)                                                                \
    atomic_store_explicit(&((weft__tls_rt_t *)(off))->field, (v), memory_order_relaxed)
#define yield_tls_worker(off) (((weft__tls_rt_t *)(off))->worker)
#endif

/* A yield the fast path does not take: called from runtime code (nested), on a thread whose hold on its
 * worker is not plain OWNED (being revoked, lost, FENCED), or on a thread without a worker at all. */
static __attribute__((noinline)) int yield_slow(bool entered)
{
    weft__worker *w = entered ? weft__enter_slow(weft__tls_m) : weft__enter();
    if (!w) {
        weft__leave();
        weft__tsan_internal_end();
        sched_yield();
        return 0;
    }
    schedule(w, w->face.cur, S_YIELD);
    weft__leave();
    weft__tsan_internal_end();
    return 0;
}

/*
 * weft__enter and weft__leave, as a yield from user code (nesting 0) does them: it writes the depth word
 * whole instead of adding to it, 1 on entry and 0 when it leaves. Adding made the word a chain through
 * memory from every yield to the next, a load waiting for the store before it twice per yield. The count
 * of entries the word keeps for the monitor starts again from 0; that loses nothing, since every yield
 * on a worker counts a switch (nswitch) whichever path it takes, and the monitor looks at both. The
 * protocol with the monitor is weft__enter's: the word is stored, and then `own` loaded; OWNED means
 * the thread has its worker (WEFT__M_NONE is a thread without one), so the fast path tests nothing else.
 *
 * After the fast path's switch, the context that switched here did it at nesting 1 (switch_counted), on
 * whichever thread this fiber now runs, so leaving makes the word 0 (release: what the runtime did here
 * is visible to whoever takes the worker after reading 0).
 *
 * Nothing of this frame is live across the fast path's switch (a finished fiber's stack is left for
 * after_switch), so the compiler keeps nothing in the one register the switch preserves and saves one
 * register less.
 */
int weft_yield(void)
{
    weft__tsan_internal_begin();
    uintptr_t tls = yield_tls_offset();
    if (WEFT__UNLIKELY(WEFT__DEPTH(yield_tls_get(tls, depth)) != 0))
        return yield_slow(false);
    yield_tls_set(tls, depth, 1);
    atomic_signal_fence(memory_order_seq_cst);
    if (WEFT__UNLIKELY(yield_tls_get(tls, own) != WEFT__M_OWNED))
        return yield_slow(true);
    weft__worker *w = yield_tls_worker(tls);
    weft__fiber *self = w->face.cur;
    uint64_t n = atomic_load_explicit(&w->nswitch, memory_order_relaxed);
    if (WEFT__LIKELY(yield_fast_ok(w, n))) {
        atomic_store_explicit(&self->state, WEFT_READY, memory_order_relaxed);
        weft__fiber *next = readyq_rotate(w, self);
        atomic_store_explicit(&w->nswitch, n + 1, memory_order_relaxed); /* count_switch */
        switch_counted(w, self, next, false);
        weft__asan_finish_switch(self->asan_fake_stack, NULL, NULL); /* no reap: after_switch */
        atomic_signal_fence(memory_order_release); /* with x86's ordered stores, release */
        yield_tls_set(yield_tls_offset(), depth, 0);
    } else {
        schedule(w, self, S_YIELD);
        weft__leave();
    }
    weft__tsan_internal_end();
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* The idle loop, on the worker thread's own stack                                                   */

static weft__fiber *steal(weft__worker *w)
{
    int n = rt->nworkers;
    if (n < 2)
        return NULL;
    w->rng = w->rng * 1103515245u + 12345u;
    unsigned start = (w->rng >> 16) % (unsigned)n;
    for (int i = 0; i < n; i++) {
        weft__worker *v = rt->workers[(start + (unsigned)i) % (unsigned)n];
        if (v == w || dq_size(&v->dq) <= 0)
            continue;
        weft__fiber *f = dq_steal(&v->dq);
        if (!f)
            continue;
        /* take up to half of what is left, so the next few picks need no more stealing */
        int64_t more = dq_size(&v->dq) / 2, room = WEFT__DEQUE_CAP - dq_size(&w->dq);
        if (more > room)
            more = room;
        while (more-- > 0) {
            weft__fiber *g = dq_steal(&v->dq);
            if (!g)
                break;
            deque_push(w, g); /* room was checked: only this worker pushes here */
        }
        return f;
    }
    return NULL;
}

/* Anything this worker could run or steal right now? Used just before sleeping. */
static bool work_visible(weft__worker *w)
{
    if (atomic_load_explicit(&w->inbox, memory_order_seq_cst) ||
        atomic_load_explicit(&rt->gq_len, memory_order_seq_cst) > 0 || dq_size(&w->dq) > 0 ||
        w->runnext || w->ready_head)
        return true;
    for (int i = 0; i < rt->nworkers; i++) {
        weft__worker *v = rt->workers[i];
        if (v != w && atomic_load_explicit(&v->dq.bottom, memory_order_seq_cst) >
                          atomic_load_explicit(&v->dq.top, memory_order_seq_cst))
            return true;
    }
    return w->heap_len && weft__timer_next(w) <= weft__clock_ns();
}

static void stop_spinning(weft__worker *w, bool found)
{
    if (!w->spinning)
        return;
    w->spinning = false;
    if (atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst) == 1 && found)
        wake_idle(); /* we were the last one looking and found work: there may be more */
}

static weft__fiber *find_local_or_steal(weft__worker *w)
{
    weft__fiber *f = runnable(w, pick_local(w));
    if (!f && (f = steal(w)))
        f = runnable(w, f);
    return f;
}

static weft__fiber *find_work(weft__worker *w)
{
    for (;;) {
        if (atomic_load_explicit(&rt->stop, memory_order_acquire))
            return NULL;
        weft__fiber *f = find_local_or_steal(w);
        if (f) {
            stop_spinning(w, true);
            return f;
        }
        /* fds: whatever is ready now (fibers of this worker land in its ready queue) */
        if (weft__io_waiting() > 0 && weft__io_poll(WEFT_NOWAIT) > 0)
            continue;

        /* spin for a bounded time: as a thief, if at most half the busy workers are spinning (more would
         * only compete for the same stealable work); or for its own fibers, if it has fibers parked,
         * since only this worker can run them when they are woken, and no other spinner can take that
         * wakeup for it (without this, two fibers on two workers waking each other in turn found the
         * other worker asleep every second time: 48 us per round trip instead of about 1) */
        if (!w->spinning && rt->spin_ns > 0) {
            int ns = atomic_load_explicit(&rt->nspinning, memory_order_relaxed);
            int nsl = atomic_load_explicit(&rt->nsleeping, memory_order_relaxed);
            if (2 * ns < rt->nworkers - nsl) {
                w->spinning = true;
                atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
            }
        }
        if (w->spinning || (rt->spin_ns > 0 && w->nresident > 0)) {
            int64_t now = weft__clock_ns(), until = now + rt->spin_ns, next_poll = now + SPIN_POLL_NS;
            bool seen = false;
            unsigned pause = 16;
            do {
                /* back off: every look reads the other workers' deque lines, which their owners write
                 * on every push and pop */
                for (unsigned i = 0; i < pause; i++)
                    weft__cpu_relax();
                if (pause < 1024)
                    pause *= 2;
                if (work_visible(w) || atomic_load_explicit(&rt->stop, memory_order_relaxed)) {
                    seen = true;
                    break;
                }
                /* and now and then the poller, unless a worker is asleep in it (it hears first) */
                now = weft__clock_ns();
                if (now >= next_poll && weft__io_waiting() > 0 &&
                    !atomic_load_explicit(&rt->poller, memory_order_relaxed)) {
                    next_poll = now + SPIN_POLL_NS;
                    if (weft__io_poll(WEFT_NOWAIT) > 0) {
                        seen = true;
                        break;
                    }
                }
            } while (now < until);
            if (seen)
                continue;
        }

        /* sleep: give up spinning, announce, look once more, then wait: in the poller if fibers wait on
         * fds and no other worker is in it, else on the futex */
        stop_spinning(w, false);
        atomic_store_explicit(&w->futex, WAKE_NONE, memory_order_relaxed);
        atomic_store_explicit(&w->sleeping, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&rt->nsleeping, 1, memory_order_seq_cst);
        if (!work_visible(w) && !atomic_load_explicit(&rt->stop, memory_order_seq_cst)) {
            int64_t deadline = weft__timer_next(w);
            weft__worker *none = NULL;
            if (weft__io_waiting() > 0 &&
                atomic_compare_exchange_strong_explicit(&rt->poller, &none, w, memory_order_seq_cst,
                                                        memory_order_relaxed)) {
                /* in_poll first, then the last looks: a waker that missed in_poll woke the futex word,
                 * which we look at before blocking */
                atomic_store_explicit(&w->in_poll, 1, memory_order_seq_cst);
                if (atomic_load_explicit(&w->futex, memory_order_seq_cst) == WAKE_NONE && !work_visible(w))
                    weft__io_poll(deadline);
                atomic_store_explicit(&w->in_poll, 0, memory_order_seq_cst);
                atomic_store_explicit(&rt->poller, NULL, memory_order_seq_cst);
            } else {
                while (atomic_load_explicit(&w->futex, memory_order_acquire) == WAKE_NONE) {
                    if (weft__futex_wait(&w->futex, WAKE_NONE, deadline) == -ETIMEDOUT && deadline > 0 &&
                        weft__clock_ns() >= deadline)
                        break;
                }
            }
        }
        uint32_t why = atomic_exchange_explicit(&w->futex, WAKE_AWAKE, memory_order_seq_cst);
        atomic_store_explicit(&w->sleeping, 0, memory_order_seq_cst);
        atomic_fetch_sub_explicit(&rt->nsleeping, 1, memory_order_seq_cst);
        weft__monitor_worker_woke();
        if (why == WAKE_SPIN)
            w->spinning = true; /* the waker counted us as a spinner already */
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Worker threads                                                                                    */

enum { GATE_WAIT = 0, GATE_GO = 1, GATE_ABORT = 2 };

/* The fiber this thread was running is stuck, and the monitor gave the worker to another thread: go on
 * as a plain thread with that fiber alone (weft__enter returns NULL from now on). */
static void become_orphan(weft__mthread *m)
{
    weft__fiber *f = m->orphan;
    m->w = NULL;
    weft__tls_worker = NULL;
    weft__tls_self = f;
    f->kind = WEFT__KIND_THREAD; /* it parks on its futex now; only this thread can run it anyway */
    f->flags |= WEFT__F_ORPHAN;  /* ... but to its user it is the fiber it was (weft_in_fiber) */
    pthread_detach(pthread_self());
    atomic_store_explicit(&weft__tls_own, WEFT__M_ORPHAN, memory_order_relaxed);
}

weft__worker *weft__enter_slow(weft__mthread *m)
{
    for (;;) {
        switch (atomic_load_explicit(&weft__tls_own, memory_order_acquire)) {
        case WEFT__M_OWNED: return m->w;
        case WEFT__M_FENCED:
            /* no membarrier: depth again, and own, both seq_cst; the monitor's exchange of own and its
             * load of depth are seq_cst too, so one of the two sees the other */
            atomic_store_explicit(&weft__tls_depth, atomic_load_explicit(&weft__tls_depth, memory_order_relaxed),
                                  memory_order_seq_cst);
            if (atomic_load_explicit(&weft__tls_own, memory_order_seq_cst) == WEFT__M_FENCED)
                return weft__tls_worker;
            break; /* a revocation came in meanwhile: its verdict */
        case WEFT__M_REVOKING: weft__cpu_relax(); break; /* the monitor decides within microseconds */
        case WEFT__M_LOST: become_orphan(m); return NULL;
        default: return NULL;
        }
    }
}

/* What a worker thread needs, got before it waits at its gate: a spare thread that the monitor keeps
 * for hand-offs holds all of it, so that a hand-off works when the process has no fd, no memory and no
 * thread left. */
static void thread_gather(weft__mthread *m)
{
    atomic_store_explicit(&m->tid, (int32_t)syscall(SYS_gettid), memory_order_relaxed);
    m->stat_fd = weft__monitor_thread_open();
    weft__altstack_install(m->altstack);
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        size_t size;
        if (pthread_attr_getstack(&a, &lo, &size) == 0) {
            m->stack_lo = lo;
            m->stack_size = size;
        }
        pthread_attr_destroy(&a);
    }
}

/* ... and given back when the thread ends. */
static void thread_scatter(weft__mthread *m)
{
    weft__altstack_remove(m->altstack);
    weft__monitor_thread_close(m->stat_fd);
    free(m);
}

static void *worker_thread_main(void *arg)
{
    weft__mthread *m = arg;
    thread_gather(m);
    while (atomic_load_explicit(&m->gate, memory_order_acquire) == GATE_WAIT)
        weft__futex_wait(&m->gate, GATE_WAIT, -1);
    if (atomic_load_explicit(&m->gate, memory_order_acquire) != GATE_GO) {
        thread_scatter(m); /* a takeover the monitor called off, or a spare it no longer needs */
        return NULL;
    }
    weft__worker *w = m->w;
    weft__tls_m = m;
    weft__tls_worker = w;
    atomic_store_explicit(&weft__tls_own, atomic_load_explicit(&weft__enter_fence, memory_order_relaxed)
                                              ? WEFT__M_FENCED : WEFT__M_OWNED, memory_order_relaxed);
    atomic_store_explicit(&weft__tls_depth, 1, memory_order_relaxed); /* the idle loop is runtime code */
    atomic_store_explicit(&m->own, &weft__tls_own, memory_order_relaxed);
    atomic_store_explicit(&m->depth, &weft__tls_depth, memory_order_release); /* the monitor may look now */
    char name[16];
    snprintf(name, sizeof name, "weft-w%d", w->face.index);
    pthread_setname_np(pthread_self(), name);

    m->idle.kind = WEFT__KIND_SCHED;
    m->idle.worker = w;
    m->idle.tsan_fiber = weft__tsan_current();
    weft__tsan_release(&m->idle); /* this thread's start, its TLS set up, comes before its fibers */
    m->idle.timer_idx = WEFT__TIMER_NONE;
    weft__tsan_internal_begin();
    w->idle = &m->idle;
    w->face.cur = &m->idle;
    bool orphaned = false;
    for (;;) {
        weft__fiber *f = find_work(w);
        if (!f)
            break;
        switch_to(w, &m->idle, f, false);
        if (WEFT__UNLIKELY(atomic_load_explicit(&weft__tls_own, memory_order_relaxed) == WEFT__M_ORPHAN)) {
            /* the orphaned fiber ended (orphan_exit): the worker is another thread's, free what was ours */
            weft__asan_finish_switch(NULL, NULL, NULL);
            weft__stack_put(NULL, m->dead_stack);
            weft__tsan_destroy(m->dead_tsan);
            orphaned = true;
            break;
        }
        after_switch(w, &m->idle);
    }
    if (!orphaned) {
        stop_spinning(w, false);
        weft__stack_cache_flush(w);
        weft__desc_cache_flush(w);
        weft__timer_fini(w);
    }
    weft__tsan_internal_end();
    atomic_store_explicit(&weft__tls_own, WEFT__M_NONE, memory_order_relaxed); /* before the worker goes */
    weft__tls_worker = NULL;
    weft__tls_m = NULL;
    atomic_store_explicit(&weft__tls_depth, 0, memory_order_relaxed);
    thread_scatter(m);
    if (orphaned) {
        /* the last thing: shutdown waits for this count, so nothing of the runtime goes before we are done */
        weft__quiesce_orphan_exited();
    }
    return NULL;
}

/* A thread for worker w (NULL: a spare, given its worker later), waiting at its gate until
 * weft__thread_release. */
int weft__thread_prepare(weft__worker *w, weft__mthread **out, pthread_t *t)
{
    weft__mthread *m = aligned_alloc(WEFT__CACHELINE, sizeof *m);
    if (!m)
        return -ENOMEM;
    memset(m, 0, sizeof *m);
    m->w = w;
    m->stat_fd = -1;
    m->altstack = weft__altstack_new();
    if (!m->altstack) {
        free(m);
        return -ENOMEM;
    }
    atomic_store_explicit(&m->gate, GATE_WAIT, memory_order_relaxed);
    int r = pthread_create(t, NULL, worker_thread_main, m);
    if (r != 0) {
        weft__altstack_free(m->altstack);
        free(m);
        return -r;
    }
    *out = m;
    return 0;
}

/* Let a prepared thread take its worker (go), or end (a takeover called off: nobody will join it). */
void weft__thread_release(weft__mthread *m, pthread_t t, bool go)
{
    if (!go)
        pthread_detach(t);
    atomic_store_explicit(&m->gate, go ? GATE_GO : GATE_ABORT, memory_order_release);
    weft__futex_wake(&m->gate, 1);
}

/* End a prepared thread that will never take a worker, and wait until it has. */
void weft__thread_discard(weft__mthread *m, pthread_t t)
{
    atomic_store_explicit(&m->gate, GATE_ABORT, memory_order_release);
    weft__futex_wake(&m->gate, 1);
    pthread_join(t, NULL);
}

/* ------------------------------------------------------------------------------------------------ */
/* Start and stop                                                                                    */

int weft__sched_start(int nworkers)
{
    rt->workers = calloc((size_t)nworkers, sizeof *rt->workers);
    if (!rt->workers)
        return -ENOMEM;
    set_nworkers(nworkers);
    atomic_store(&rt->stop, 0);
    atomic_store(&rt->nspinning, 0);
    atomic_store(&rt->nsleeping, 0);
    atomic_store(&rt->gq_len, 0);
    rt->gq_head = 0;
    for (int i = 0; i < nworkers; i++) {
        weft__worker *w = aligned_alloc(WEFT__CACHELINE, sizeof *w);
        if (!w) { /* no thread started yet: nothing to stop */
            for (int j = 0; j < i; j++)
                free(rt->workers[j]);
            free(rt->workers);
            rt->workers = NULL;
            set_nworkers(0);
            return -ENOMEM;
        }
        memset(w, 0, sizeof *w);
        w->face.index = i;
        w->rng = (uint32_t)i * 2654435761u + 1;
        w->fair_at = FAIR_TICKS;
        w->futex = WAKE_AWAKE;
        atomic_init(&w->timer_first, -1);
        rt->workers[i] = w;
    }
    atomic_store(&rt->deadlocks, 0);
    for (int i = 0; i < nworkers; i++) {
        weft__worker *w = rt->workers[i];
        weft__mthread *m;
        int r = weft__thread_prepare(w, &m, &w->thread);
        if (r == 0) {
            w->m = m;
            weft__thread_release(m, w->thread, true);
        }
        if (r < 0) {
            for (int j = i; j < nworkers; j++)
                free(rt->workers[j]); /* before sched_stop, which frees the table */
            set_nworkers(i); /* stop the ones that did start */
            weft__sched_stop();
            return r;
        }
    }
    return 0;
}

void weft__sched_stop(void)
{
    atomic_store_explicit(&rt->stop, 1, memory_order_seq_cst);
    for (int i = 0; i < rt->nworkers; i++) {
        weft__worker *w = rt->workers[i];
        atomic_store_explicit(&w->futex, WAKE_INBOX, memory_order_seq_cst);
        if (atomic_load_explicit(&w->in_poll, memory_order_seq_cst))
            weft__io_interrupt();
        weft__futex_wake(&w->futex, 1);
    }
    for (int i = 0; i < rt->nworkers; i++)
        pthread_join(rt->workers[i]->thread, NULL);
    for (int i = 0; i < rt->nworkers; i++)
        free(rt->workers[i]);
    free(rt->workers);
    rt->workers = NULL;
    free(rt->gq_ring);
    rt->gq_ring = NULL;
    rt->gq_cap = 0;
    set_nworkers(0);
}
