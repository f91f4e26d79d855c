/*
 * The one waiter: the record every blocked call in weft parks through (Go's sudog and gopark's
 * contract, libdill's clauses).
 *
 * A blocked call (a lock, a semaphore, a wait group, a channel operation, an fd wait, a join, a
 * blocking-pool call, a select over any mix of them) keeps one weft__wait on its stack, and one
 * weft__wnode per object it waits on, queued in that object's list. A plain wait has one node; a select
 * one per case. The rule every wait follows:
 *
 *   1. weft__wait_begin: the caller is WAITING under a fresh park token before any node is published, so
 *      a waker that comes at once finds something to wake.
 *   2. Under each object's own lock, the caller either does the operation at once (after winning its
 *      own claim, below) or queues a node and lets go.
 *   3. weft__park, then weft__wait_end, which settles the wait: either a waker won it (the operation
 *      happened: a lock, a permit, an element, a join was handed over) or the caller called it off (a
 *      deadline, a cancel, the deadlock report, no memory) and nothing happened.
 *   4. The caller takes each node still queued out of its object (under that object's lock), and
 *      returns.
 *
 * The claim. One word per wait decides who settles it, once: a waker turns it from NONE to the case of
 * the node it found plus one (weft__wnode_claim, under that object's lock), the caller turns it from
 * NONE to SELF when its wait ended early. Exactly one wins, so at most one case of a select happens,
 * and a timeout never loses what a waker already gave. A select's claim is one CAS: the wakers of its
 * other cases race on it. A solo wait (one node, called off only under the lock of the list that holds
 * it: every synchronizer, an fd wait, the blocking pool, a join through the join word) is decided by
 * that lock instead, so its waker wins it with a plain store. A channel's send and receive are not solo:
 * a channel may be freed once the call that served them returned, so they call off without its lock.
 * A waker that loses the claim leaves the node where it is (its owner takes it out, under the object's
 * lock: an object may be freed as soon as the calls that used it returned, and the owner is still in
 * its call) and goes on to the next node.
 *
 * Done. The winning waker writes what the caller gets (the node's grant, the wait's result, an element
 * copied in), reads the fiber and token, and stores `done` with release as its very last touch of the
 * record; then it unparks the fiber, whose descriptor is never freed. The caller's acquire of `done`
 * orders all of it before its return (for TSan too). A caller that won SELF never waits for `done`; one
 * that lost it to a waker waits for it (a few instructions away: the waker already holds the claim).
 *
 * Released. Wakers that take a whole list at once without the object's lock (a wait group reaching zero,
 * a fiber finishing) cannot leave a losing node queued: they store `released` on every node they took
 * and lost, as their last touch of it, and an owner that finds its node gone from the object waits for
 * that (weft__wnode_wait_released).
 *
 * The spin-wait. Every wait for another thread that holds a short lock or is a few instructions from a
 * store is weft__spin_backoff (platform/prim.h): pauses that double, then sched_yield.
 */
#ifndef WEFT_CORE_WAIT_H
#define WEFT_CORE_WAIT_H

#include "core/park.h"
#include "obs/sanitize.h"

#define WEFT__CLAIM_NONE 0u
#define WEFT__CLAIM_SELF UINT32_MAX /* the caller called its wait off before a waker won it */

/* One blocked call, on its caller's stack. */
typedef struct weft__wait {
    weft__fiber *f;         /* fixed from weft__wait_begin on */
    uint32_t tok;           /* its park token; likewise */
    _Atomic uint32_t claim; /* CLAIM_NONE, then for good: case + 1 (a waker) or CLAIM_SELF (the caller) */
    _Atomic uint32_t done;  /* 1, stored with release by the winning waker after its last touch */
    int result;             /* what the chosen case returns (0, -EPIPE, -EBADF); written before done */
    bool solo;              /* one node, in a list whose lock the caller takes to call the wait off */
} weft__wait;

/* A wait's entry in one object's list. The list, the links and `queued` belong to the object's lock. */
typedef struct weft__wnode {
    struct weft__wnode *next, *prev;
    struct weft__wnode *wake_next; /* a waker's list of nodes it won, woken after it let go of the object */
    weft__wait *w;
    void *elem;                    /* a channel's element: the one to send, or where a received one goes */
    int64_t since;                 /* when it first queued (the mutex's starvation rule) */
    uint64_t want;                 /* what it waits for (the object's own meaning) */
    uint64_t grant;                /* what the waker gave it (likewise); written before done */
    uint32_t idx;                  /* the case it stands for; 0 for a plain wait */
    bool queued;                   /* in its object's list */
    _Atomic uint32_t released;     /* see the top: stored by a list-taking waker that lost the claim */
} weft__wnode;

/* Step 1: the caller is WAITING under a fresh token. */
static inline void weft__wait_begin(weft__wait *w, weft__fiber *self, unsigned reason, const void *obj)
{
    weft__tsan_internal_begin();
    w->f = self;
    w->result = 0;
    w->solo = false;
    atomic_store_explicit(&w->claim, WEFT__CLAIM_NONE, memory_order_relaxed);
    atomic_store_explicit(&w->done, 0, memory_order_relaxed);
    weft__tsan_internal_end();
    w->tok = weft__park_prepare(self, reason, obj);
}

static inline void weft__wnode_init(weft__wnode *n, weft__wait *w, uint32_t idx)
{
    n->w = w;
    n->idx = idx;
    n->queued = false;
    atomic_store_explicit(&n->released, 0, memory_order_relaxed);
}

/* A waker (or the caller doing a case at once) takes the wait for case idx. Acquire: a caller that won
 * SELF wrote nothing we read; release: our writes before it come before the caller's acquire of done. */
static inline bool weft__wait_claim(weft__wait *w, uint32_t idx)
{
    uint32_t none = WEFT__CLAIM_NONE;
    return atomic_compare_exchange_strong_explicit(&w->claim, &none, idx + 1, memory_order_acq_rel,
                                                   memory_order_relaxed);
}

/* A waker, under the lock of the list that holds n: win n's wait for n's case. A solo wait is called
 * off only under that same lock, which takes its node out, so a solo node still in the list is
 * undecided and the waker wins it with a store; any other needs the CAS. */
static inline bool weft__wnode_claim(weft__wnode *n)
{
    if (n->w->solo) {
        atomic_store_explicit(&n->w->claim, n->idx + 1, memory_order_relaxed);
        return true;
    }
    /* the load first spares a CAS on a wait we already know is decided */
    return atomic_load_explicit(&n->w->claim, memory_order_relaxed) == WEFT__CLAIM_NONE &&
           weft__wait_claim(n->w, n->idx);
}

/* The caller of a solo wait whose park ended early, under its list's lock: true when it called the
 * wait off (its node is still queued, for it to take out), false when a waker won it first (settle,
 * after letting go of the lock). */
static inline bool weft__wait_call_off_locked(weft__wait *w)
{
    if (atomic_load_explicit(&w->claim, memory_order_relaxed) != WEFT__CLAIM_NONE)
        return false;
    atomic_store_explicit(&w->claim, WEFT__CLAIM_SELF, memory_order_relaxed);
    return true;
}

/* The claim as it is now: CLAIM_NONE while undecided. */
static inline uint32_t weft__wait_claimed(weft__wait *w)
{
    return atomic_load_explicit(&w->claim, memory_order_acquire);
}

/* A wakeup to make once the waker has let go of the object. */
typedef struct {
    weft__fiber *f;
    uint32_t tok;
} weft__wakeup;

/* The winning waker is through with the record: store done (its last touch) and say whom to wake. */
static inline weft__wakeup weft__wait_finish(weft__wait *w)
{
    weft__wakeup k = {w->f, w->tok};
    atomic_store_explicit(&w->done, 1, memory_order_release);
    return k;
}

/* `next`: the woken one runs next on this worker (a hand-off of one); otherwise it queues behind
 * others woken in a batch. */
static inline void weft__wakeup_run(weft__wakeup k, bool next)
{
    if (!k.f)
        return;
    if (next)
        weft__unpark(k.f, k.tok, WEFT__PW_OK);
    else
        weft__unpark_fifo(k.f, k.tok, WEFT__PW_OK);
}

static inline void weft__wait_wake(weft__wait *w, bool next)
{
    weft__wakeup_run(weft__wait_finish(w), next);
}

/* Wait for the winning waker's done (it holds the claim and is a few instructions away). */
static inline void weft__wait_settle(weft__wait *w)
{
    unsigned spins = 0;
    while (!atomic_load_explicit(&w->done, memory_order_acquire))
        weft__spin_backoff(&spins);
}

/* Step 3: after weft__park returned r. Returns the case a waker won (claim - 1), with everything it
 * gave visible, or -1 when the caller called the wait off (r is then its error) and nothing happened. */
static inline int weft__wait_end(weft__wait *w, int r)
{
    if (r != 0) {
        uint32_t none = WEFT__CLAIM_NONE;
        if (atomic_compare_exchange_strong_explicit(&w->claim, &none, WEFT__CLAIM_SELF, memory_order_acquire,
                                                    memory_order_acquire))
            return -1;
    }
    weft__wait_settle(w);
    return (int)(atomic_load_explicit(&w->claim, memory_order_relaxed) - 1);
}

/* The caller did a case itself, or called the wait off, before it parked: clear the WAITING state its
 * begin set. A waker that won a case meanwhile is still to unpark it: that wakeup is taken here. */
static inline void weft__wait_abandon(weft__wait *w)
{
    uint32_t c = weft__wait_claimed(w);
    if (c == WEFT__CLAIM_NONE || c == WEFT__CLAIM_SELF) {
        weft__park_cancel(w->f, w->tok);
    } else {
        weft__park_uncancellable(w->f, w->tok, WEFT_FOREVER); /* returns once the waker's unpark lands */
        weft__wait_settle(w);
    }
}

/* A list-taking waker that lost the node's claim: its last touch of the node. */
static inline void weft__wnode_release(weft__wnode *n)
{
    atomic_store_explicit(&n->released, 1, memory_order_release);
}

/* The owner found its node taken by a list-taking waker that has not won it: wait for its release. */
static inline void weft__wnode_wait_released(weft__wnode *n)
{
    unsigned spins = 0;
    while (!atomic_load_explicit(&n->released, memory_order_acquire))
        weft__spin_backoff(&spins);
}

/* ---- weft_select's cases ----
 * Each kind of object a select can wait on gives these (Go's select, over more than channels). The
 * select takes the locks of all its objects, in address order, polls its cases in a random order and
 * does the first that is ready; if none is, it queues one node per case, lets go of the locks and parks.
 * Its nodes are queued only while it holds those locks or is parked, so no waker can settle its wait
 * while it polls, and it never meets itself (a send and a receive on one channel).
 *   lock     take the object's lock; returns its state word, where the object keeps one (else 0)
 *   unlock   let go of it, storing the state s that poll and enqueue may have changed
 *   poll     under the lock: do the case if it can go now (1, with c->result set; *k: whom to wake once
 *            every lock is let go), else 0
 *   enqueue  under the lock: queue c->node for the case (WEFT__ARM_QUEUED). A kind without a lock (a
 *            join) may find the case ready here: it then wins the wait's claim itself (DONE), or finds
 *            it won by a waker of a case queued before (LOST), or that it can never happen (NEVER:
 *            another join took the fiber meanwhile)
 *   disarm   the case did not happen: take the node out (the kind takes its lock itself); after it no
 *            waker of that object touches the node
 *   complete the case happened through a waker: finish it (collect a join's result, copy the result)
 *   release  give back what the select's look at the case took (an fd's reference), whatever happened
 * `lock` and `unlock` are NULL for a kind without a lock; `complete` and `release` may be NULL. */
enum { WEFT__ARM_QUEUED = 0, WEFT__ARM_DONE = 1, WEFT__ARM_LOST = 2, WEFT__ARM_NEVER = 3 };

struct weft__sel_ops;

/* Channel cases are select's own: it does them without a call through a face (chan/chan.h). */
enum { WEFT__SEL_RECV = 0, WEFT__SEL_SEND = 1, WEFT__SEL_OTHER = 2 };

/* One case of a select, as the select and its kind see it (on the select's stack). */
typedef struct weft__sel_case {
    const struct weft__sel_ops *ops; /* the kind's face (WEFT__SEL_OTHER) */
    void *obj;                       /* the object waited on; NULL: never ready */
    void *elem;                      /* a channel's element; a join's void ** */
    uint64_t *state;                 /* the object's state word while the select holds its lock */
    uint64_t key;                    /* the kind's own: an fd's generation, a fiber's handle */
    int aux;                         /* the kind's own: an fd and its direction */
    int result;                      /* what the case returns, once it happened */
    uint8_t kind;                    /* WEFT__SEL_* */
    bool queued;                     /* its node is in the object */
    weft__wnode node;
} weft__sel_case;

typedef struct weft__sel_ops {
    uint64_t (*lock)(void *obj);
    void (*unlock)(void *obj, uint64_t s);
    int (*poll)(weft__sel_case *c, weft__wakeup *k);
    int (*enqueue)(weft__sel_case *c);
    void (*disarm)(weft__sel_case *c);
    void (*complete)(weft__sel_case *c);
    void (*release)(weft__sel_case *c);
} weft__sel_ops;

extern const weft__sel_ops weft__sel_chan_send, weft__sel_chan_recv; /* chan.c */
extern const weft__sel_ops weft__sel_mutex, weft__sel_sem, weft__sel_wg;  /* src/sync */
/* The kinds that take something when a case is read: an fd case holds a reference on the fd (as an
 * operation in flight does, so weft_close waits for it), a join case claims the fiber's one join. They
 * set c->ops and c->obj (c->aux: fd << 1 | writable; c->key: the handle). 0, or the error of the whole
 * select (nothing taken). */
extern const weft__sel_ops weft__sel_fd, weft__sel_join; /* io/fd.c, core/fiber.c */
int weft__sel_fd_open(weft__sel_case *c);   /* io/fd.c */
int weft__sel_join_open(weft__sel_case *c); /* core/fiber.c */

/* ---- an object's list of nodes: FIFO, under the object's lock ---- */

typedef struct {
    weft__wnode *head, *tail;
} weft__wlist;

/* The checker (WEFT_DEBUG 3): the links agree both ways and end at head and tail, every node says it
 * is queued and belongs to a wait whose claim is a case, SELF or undecided, and none is released (a
 * released node was taken out by a list-taking waker). The first WEFT__CHECK_MAX nodes, in order. */
static inline bool weft__wlist_valid(const weft__wlist *q)
{
    if (!q->head || !q->tail)
        return !q->head && !q->tail;
    if (q->head->prev || q->tail->next)
        return false;
    unsigned k = 0;
    for (const weft__wnode *n = q->head, *prev = NULL; n; prev = n, n = n->next) {
        if (n->prev != prev || !n->queued || !n->w)
            return false;
        if (atomic_load_explicit(&n->released, memory_order_relaxed))
            return false;
        if (!n->next && n != q->tail)
            return false;
        if (++k == WEFT__CHECK_MAX)
            break;
    }
    return true;
}

static inline bool weft__wlist_empty(const weft__wlist *q)
{
    return q->head == NULL;
}

static inline void weft__wlist_push(weft__wlist *q, weft__wnode *n)
{
    n->next = NULL;
    n->prev = q->tail;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    n->queued = true;
    weft__check(weft__wlist_valid(q));
}

static inline void weft__wlist_push_front(weft__wlist *q, weft__wnode *n)
{
    n->prev = NULL;
    n->next = q->head;
    if (q->head)
        q->head->prev = n;
    else
        q->tail = n;
    q->head = n;
    n->queued = true;
    weft__check(weft__wlist_valid(q));
}

static inline void weft__wlist_remove(weft__wlist *q, weft__wnode *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        q->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->tail = n->prev;
    n->queued = false;
    weft__check(weft__wlist_valid(q));
}

/* Under the object's lock: win node n for its case and take it off the list, adding it to the waker's
 * *wake list (woken by weft__wlist_wake once the object is let go of). False: its wait was settled
 * already (called off, or a select's other case): n stays, for its owner to take out. */
static inline bool weft__wlist_take(weft__wlist *q, weft__wnode *n, uint64_t grant, weft__wnode ***wake)
{
    if (!weft__wnode_claim(n))
        return false;
    weft__wlist_remove(q, n);
    n->grant = grant;
    n->wake_next = NULL;
    **wake = n;
    *wake = &n->wake_next;
    return true;
}

/* Wake the nodes a waker won, in order, after its last touch of the object. One goes to the waker's
 * runnext (it runs next: a hand-off), several queue in order. */
static inline void weft__wlist_wake(weft__wnode *list)
{
    bool one = list && !list->wake_next;
    for (weft__wnode *n = list, *next; n; n = next) {
        next = n->wake_next;
        weft__wait_wake(n->w, one);
    }
}

#endif /* WEFT_CORE_WAIT_H */
