/*
 * Channels and select (Go's chan, runtime/chan.go and select.go).
 *
 * The job. A channel moves fixed-size elements from senders to receivers, each element exactly once,
 * in order; senders wait while there is no room, receivers while there is nothing; close lets
 * receivers drain what is buffered and then fails everything. select waits on several channel
 * operations at once and does exactly one of them. Any caller may be a fiber or a thread (weft__park
 * serves both), and any wait may end early (deadline, cancel, deadlock report) without losing an
 * element.
 *
 * Glossary.
 *   waiter   a blocked send, receive or select: one chan_wait record on the blocked caller's stack
 *   node     a waiter's entry in one channel's queue (chan_node, also on its stack): a send or a
 *            receive has one, a select one per case with a channel
 *   waker    whoever completes a waiter: a send or select that finds a waiting receiver, a receive
 *            that finds a waiting sender, a close
 *   claim    the word in a waiter's record that decides who settles it: one waker, or the waiter
 *            itself when its wait ends early
 *
 * The approach (Go's). Each channel has one spinlock, held only for short stretches that never park,
 * over everything in it: the ring buffer, the closed flag, the queues of waiting senders and receivers.
 * A send first looks for a waiting receiver and copies the element straight into the receiver's
 * destination; then for room in the buffer; then it queues and parks. A receive takes the buffer's
 * head if there is one, and if a sender waits (the buffer is full), moves that sender's element into
 * the slot just freed, so the buffer stays in send order; with an empty buffer it takes straight from
 * a waiting sender. The copies are done under the lock: a waker never touches a waiter after it let
 * go of the channel, except in close (below). There is no allocation and no system call on these
 * paths; the only ones are those of weft__unpark when a waiter must be woken (and the allocation of a
 * thread's descriptor on its first wait).
 *
 * select locks every distinct channel of its cases in address order (so two selects, or a select and
 * a send, never wait on each other's locks in a cycle: the others hold only one), polls the cases in a
 * random order (fairness: of the ready cases each is equally likely), and does the first ready one. If
 * none is ready it queues one node per case, all pointing at one chan_wait, lets go of the locks and
 * parks. A select whose send and receive cases name the same channel never meets itself: matching is
 * done only by a caller that is running, and a select's nodes are queued only while it is not.
 *
 * The claim. Every waiter's record has one word, `claim`, that decides who settles it: a waker that
 * finds a node in its queue completes it only if it turns the claim from NONE to the node's case + 1
 * (one CAS, under that channel's lock); a waiter whose wait ended early turns it from NONE to SELF (no
 * lock needed). Exactly one of them wins. A select has one record for all its nodes, so at most one
 * case happens; a plain send or receive goes through the same CAS, so that it can settle a timeout
 * without looking at the channel.
 *
 * Rejected: a lock-free fast path for buffered channels (Go has one only for the non-blocking checks
 * of select with default, and its correctness argument is subtle; the uncontended locked path is an
 * exchange and a store). A lock per queue instead of per channel: a send must look at the receivers
 * and the buffer in one atomic step. Copying outside the lock for big elements: the waiter's record
 * would then need a second hand-off state on every path, for a case (kilobyte elements) that is
 * better served by sending pointers. Go's lazy removal of a select's other nodes by the wakers that
 * lose the claim: here a loser leaves them where they are, for the reason in 6.
 *
 * What must stay true, and the memory-ordering protocol.
 *  1. A node is in its channel's queue exactly while `queued` says so; both change only under that
 *     channel's lock. A node leaves its queue only by the hand of the waker that won its claim (which
 *     then completes that node's operation) or of its owner (below). A waker that cannot win a node
 *     skips it.
 *  2. Every waiter's record and nodes live on its stack and are gone once it returns. A waker reads
 *     what it needs (fiber, token) and then stores `done` with release as its very last touch of the
 *     record; the waiter's acquire load of `done` orders every write the waker made (the element
 *     copied in, the result) before its return, for TSan too. The waker's weft__unpark comes after
 *     and touches only the fiber descriptor, which is never freed.
 *  3. A waiter whose park returned 0 was woken by the waker that won its claim, after `done`. Any
 *     other return (-ETIMEDOUT, -ECANCELED, -EDEADLK, -ENOMEM) races with the wakers and the claim
 *     decides. The waiter wins it (SELF): nobody completed anything and nobody will; it takes its
 *     nodes out of their queues and returns the error. A waker won it: that operation happened (the
 *     element was copied in or out), so the waiter waits for `done` and returns success. A value is
 *     never lost to a timeout or a cancel.
 *  4. Senders and receivers complete each other under the lock and store `done` before they unlock;
 *     close wins its waiters under the lock but wakes them after, so that a channel with many waiters
 *     is not locked across many futex calls: that is why a waiter whose claim was won may still have
 *     to wait (briefly) for `done`.
 *  5. Live waiting senders exist only while the buffer is full, live waiting receivers only while it
 *     is empty and the channel open. (Nodes whose claim is already decided may sit in a queue until
 *     their owner takes them out; they are skipped.) So handing an element to a waiting receiver never
 *     overtakes a buffered one.
 *  6. weft_chan_free refuses a channel with any node in a queue, and takes the lock, so it comes after
 *     every waker's unlock. A waiter touches a channel after its park only to take out its own nodes,
 *     which are still queued (1), so the channel is still there: a plain send or receive whose claim
 *     a waker won touches the channel no more, and a select takes the locks only of the channels that
 *     still hold one of its nodes. So a channel may be freed as soon as the calls that used it
 *     returned, even while the other side of the last hand-off is still on its way out; that is also
 *     why a losing waker must not take a node out of its queue: its owner may still need it there.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "obs/sanitize.h"

#define CLAIM_NONE 0u
#define CLAIM_SELF UINT32_MAX /* the waiter called its wait off (deadline, cancel) before a waker won it */

/* A blocked send, receive or select, on its caller's stack. */
typedef struct chan_wait {
    weft__fiber *f;         /* fixed while queued */
    uint32_t tok;           /* its park token; fixed while queued */
    _Atomic uint32_t claim; /* CLAIM_NONE, then for good case + 1 (a waker, under the lock of the node's
                             * channel) or CLAIM_SELF (the waiter, after its park) */
    _Atomic uint32_t done;  /* 1, stored with release by the waker after its last touch of the record */
    int result;             /* 0 or -EPIPE; written by the waker before done */
} chan_wait;

/* A waiter's entry in one channel's queue. */
typedef struct chan_node {
    struct chan_node *next, *prev; /* protected by the channel's lock while queued; afterwards the
                                    * winner's (close chains its wake list through next) */
    chan_wait *w;
    void *elem;                    /* send: the element; receive: where it goes (NULL: dropped) */
    int idx;                       /* the select case it stands for; 0 for a send or receive */
    bool queued;                   /* protected by the channel's lock */
} chan_node;

typedef struct {
    chan_node *head, *tail;
} chan_queue;

struct weft_chan {
    weft__spinlock lock;
    bool closed;          /* protected by lock */
    size_t head;          /* slot of the oldest buffered element; protected by lock */
    _Atomic size_t len;   /* elements buffered; written under lock, read without it by weft_chan_len */
    size_t cap;           /* fixed */
    size_t esize;         /* fixed */
    chan_queue recvq;     /* protected by lock */
    chan_queue sendq;     /* protected by lock */
    unsigned char buf[];  /* cap * esize bytes; protected by lock */
};

/* A wakeup to do once the lock is let go. */
typedef struct {
    weft__fiber *f;
    uint32_t tok;
} chan_wake;

static inline void lock(weft_chan_t *c)
{
    weft__spin_lock(&c->lock);
}

static inline void unlock(weft_chan_t *c)
{
    weft__spin_unlock(&c->lock);
}

static inline void wake(chan_wake k)
{
    if (k.f)
        weft__unpark(k.f, k.tok, PW_OK); /* a hand-off: the woken one runs next here */
}

/* Copy one element, under the lock: the common sizes as single moves (a call to memcpy for 8 bytes was
 * 4-7% of a contended channel's time, all of it while the lock was held) */
static inline void copy_elem(void *to, const void *from, size_t n)
{
    switch (n) {
    case 1: memcpy(to, from, 1); break;
    case 2: memcpy(to, from, 2); break;
    case 4: memcpy(to, from, 4); break;
    case 8: memcpy(to, from, 8); break;
    case 16: memcpy(to, from, 16); break;
    default: memcpy(to, from, n); break;
    }
}

static inline unsigned char *slot(weft_chan_t *c, size_t i)
{
    /* i < 2 * cap: the head plus at most cap */
    return c->buf + (i >= c->cap ? i - c->cap : i) * c->esize;
}

static void enqueue(chan_queue *q, chan_node *n)
{
    n->next = NULL;
    n->prev = q->tail;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    n->queued = true;
}

static void unlink_node(chan_queue *q, chan_node *n)
{
    weft__dassert(n->queued);
    if (n->prev)
        n->prev->next = n->next;
    else
        q->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->tail = n->prev;
    n->next = n->prev = NULL;
    n->queued = false;
}

/* The first waiter in q whose claim we win, unlinked: ours to complete. NULL if there is none. */
static chan_node *dequeue(chan_queue *q)
{
    for (chan_node *n = q->head; n; n = n->next) {
        /* relaxed: the claim only decides who settles the waiter; what the winner writes reaches the
         * waiter through `done`, and a loser reads nothing the winner wrote. The load first spares
         * a CAS on a node we already know is decided */
        uint32_t none = CLAIM_NONE;
        if (atomic_load_explicit(&n->w->claim, memory_order_relaxed) == CLAIM_NONE &&
            atomic_compare_exchange_strong_explicit(&n->w->claim, &none, (uint32_t)n->idx + 1,
                                                    memory_order_relaxed, memory_order_relaxed)) {
            unlink_node(q, n);
            return n;
        }
        /* decided: another case of its select happened, or its owner is leaving; the owner takes it
         * out (6) */
    }
    return NULL;
}

/* After its park: try to call the wait off. False if a waker won the claim first. */
static bool give_up(chan_wait *w)
{
    uint32_t none = CLAIM_NONE;
    return atomic_compare_exchange_strong_explicit(&w->claim, &none, CLAIM_SELF, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* Complete a dequeued waiter: publish the result, then `done` as the last touch of its record. */
static chan_wake finish(chan_node *n, int result)
{
    chan_wait *w = n->w;
    chan_wake k = {w->f, w->tok};
    w->result = result;
    atomic_store_explicit(&w->done, 1, memory_order_release);
    return k;
}

/* Wait until the waker that won w's claim is through with it. */
static void wait_done(chan_wait *w)
{
    unsigned spins = 0;
    while (!atomic_load_explicit(&w->done, memory_order_acquire)) {
        /* the waker is copying under its lock, or is a close between its unlock and its store: it
         * never parks meanwhile, so this is short, unless its thread was preempted; then give it
         * the CPU */
        if (spins++ < 64)
            weft__cpu_relax();
        else
            sched_yield();
    }
}

/* Under c's lock. 1: sent (*k may name a receiver to wake), 0: it would have to wait, -EPIPE. */
static inline __attribute__((always_inline)) int try_send(weft_chan_t *c, const void *elem, chan_wake *k)
{
    if (c->closed)
        return -EPIPE;
    chan_node *r = dequeue(&c->recvq);
    if (r) {
        /* a receiver waits, so the buffer is empty (5): hand the element over */
        if (r->elem)
            copy_elem(r->elem, elem, c->esize);
        *k = finish(r, 0);
        return 1;
    }
    size_t len = atomic_load_explicit(&c->len, memory_order_relaxed);
    if (len < c->cap) {
        copy_elem(slot(c, c->head + len), elem, c->esize);
        atomic_store_explicit(&c->len, len + 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

/* Under c's lock. 1: received (*k may name a sender to wake), 0: it would have to wait, -EPIPE
 * (closed and drained). */
static inline __attribute__((always_inline)) int try_recv(weft_chan_t *c, void *elem, chan_wake *k)
{
    size_t len = atomic_load_explicit(&c->len, memory_order_relaxed);
    if (len > 0) {
        if (elem)
            copy_elem(elem, slot(c, c->head), c->esize);
        c->head = c->head + 1 == c->cap ? 0 : c->head + 1;
        len--;
        /* a sender waits only while the buffer is full (5): its element goes into the slot just
         * freed, behind everything buffered */
        chan_node *s = dequeue(&c->sendq);
        if (s) {
            copy_elem(slot(c, c->head + len), s->elem, c->esize);
            len++;
            *k = finish(s, 0);
        }
        atomic_store_explicit(&c->len, len, memory_order_relaxed);
        return 1;
    }
    if (c->closed)
        return -EPIPE;
    chan_node *s = dequeue(&c->sendq);
    if (s) {
        if (elem)
            copy_elem(elem, s->elem, c->esize);
        *k = finish(s, 0);
        return 1;
    }
    return 0;
}

/* Under c's lock, which it lets go: queue on q, park, and settle the race with wakers (3). */
static int block(weft_chan_t *c, chan_queue *q, void *elem, weft__fiber *self, unsigned reason, int64_t deadline)
{
    chan_wait w = {.f = self, .result = 0};
    atomic_init(&w.claim, CLAIM_NONE);
    atomic_init(&w.done, 0);
    chan_node n = {.w = &w, .elem = elem, .idx = 0};
    w.tok = weft__park_prepare(self, reason, c);
    enqueue(q, &n);
    unlock(c);

    int r = weft__park(self, w.tok, deadline);
    if (r != 0 && give_up(&w)) {
        /* nobody completed it, nobody will; our node is still queued, so c is still there (6) */
        lock(c);
        unlink_node(q, &n);
        unlock(c);
        return r;
    }
    /* a waker won us: the element moved (after an early end too: then we wait for the waker, which
     * is quick). With r == 0 it stored done before it woke us (2) */
    weft__dassert(r != 0 || atomic_load_explicit(&w.done, memory_order_relaxed));
    wait_done(&w);
    return w.result;
}

int weft_chan_new(weft_chan_t **out, size_t elem_size, size_t capacity)
{
    if (!out || elem_size == 0)
        return -EINVAL;
    size_t max = (size_t)PTRDIFF_MAX - sizeof(weft_chan_t);
    if (capacity > max / elem_size)
        return -EINVAL;
    weft_chan_t *c = malloc(sizeof *c + elem_size * capacity);
    if (!c)
        return -ENOMEM;
    memset(c, 0, sizeof *c);
    atomic_init(&c->lock.v, 0);
    atomic_init(&c->len, 0);
    c->cap = capacity;
    c->esize = elem_size;
    *out = c;
    return 0;
}

int weft_chan_free(weft_chan_t *c)
{
    if (!c)
        return 0;
    /* the lock orders every earlier call's last touch before the free */
    lock(c);
    bool busy = c->recvq.head || c->sendq.head;
    unlock(c);
    if (busy)
        return -EBUSY;
    free(c);
    return 0;
}

size_t weft_chan_len(weft_chan_t *c)
{
    return c ? atomic_load_explicit(&c->len, memory_order_relaxed) : 0; /* a snapshot; nothing to order */
}

size_t weft_chan_cap(weft_chan_t *c)
{
    return c ? c->cap : 0;
}

/* A send (elem is what goes) or a receive (elem is where it goes, or NULL), waiting until deadline. One
 * body for both: each caller passes a constant `send`, and the two copies compile apart. */
static inline __attribute__((always_inline)) int chan_op(weft_chan_t *c, void *elem, int64_t deadline, bool send)
{
    for (;;) {
        chan_wake k = {NULL, 0};
        lock(c);
        int r = send ? try_send(c, elem, &k) : try_recv(c, elem, &k);
        if (r != 0) {
            unlock(c);
            wake(k);
            return r < 0 ? r : 0;
        }
        if (deadline == WEFT_NOWAIT) {
            unlock(c);
            return -ETIMEDOUT;
        }
        weft__fiber *self = weft__self_if_any();
        if (self)
            return send ? block(c, &c->sendq, elem, self, WEFT__WAIT_CHAN_SEND, deadline)
                        : block(c, &c->recvq, elem, self, WEFT__WAIT_CHAN_RECV, deadline);
        /* a thread's first wait: its descriptor is allocated, not under the lock; then look again */
        unlock(c);
        if (!weft__self())
            return -ENOMEM;
    }
}

int weft_chan_send(weft_chan_t *c, const void *elem, int64_t deadline)
{
    if (!c || !elem)
        return -EINVAL;
    return chan_op(c, (void *)elem, deadline, true); /* a send only reads elem */
}

int weft_chan_recv(weft_chan_t *c, void *elem, int64_t deadline)
{
    if (!c)
        return -EINVAL;
    return chan_op(c, elem, deadline, false);
}

int weft_chan_close(weft_chan_t *c)
{
    if (!c)
        return -EINVAL;
    lock(c);
    if (c->closed) {
        unlock(c);
        return -EPIPE;
    }
    c->closed = true;
    /* every waiter goes: receivers wait only on an empty buffer (5), so all of them see the close */
    chan_node *list = NULL, **tail = &list, *n;
    while ((n = dequeue(&c->recvq))) {
        *tail = n;
        tail = &n->next;
    }
    while ((n = dequeue(&c->sendq))) {
        *tail = n;
        tail = &n->next;
    }
    *tail = NULL;
    unlock(c);
    /* wake them outside the lock (4); each node is valid until its record says done */
    for (chan_node *next; list; list = next) {
        next = list->next;
        chan_wake k = finish(list, -EPIPE);
        weft__unpark_fifo(k.f, k.tok, PW_OK);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* select                                                                                            */

/* Up to this many cases, select keeps its bookkeeping on the stack; more are allocated. */
#define SELECT_STACK_CASES 16

/* A cheap random source per thread, for the poll order. Fibers of one worker share it, which TSan
 * would call a race between them (as with errno): it is hidden, and it does not matter who draws
 * which number. Seeded per thread from its address and the clock. */
static __thread uint32_t select_rng;

static WEFT__NOINLINE void shuffle(int *order, int m)
{
    weft__tsan_internal_begin();
    uint32_t x = select_rng;
    if (WEFT__UNLIKELY(x == 0)) {
        uint64_t s = (uint64_t)(uintptr_t)&select_rng ^ (uint64_t)weft__clock_ns();
        s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9ull;
        s = (s ^ (s >> 27)) * 0x94d049bb133111ebull;
        x = (uint32_t)(s ^ (s >> 31)) | 1u;
    }
    /* Fisher-Yates: each position swaps with a uniformly drawn one at or before it */
    for (int i = 1; i < m; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        int j = (int)(((uint64_t)x * (uint32_t)(i + 1)) >> 32);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    select_rng = x;
    weft__tsan_internal_end();
}

static int chan_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(weft_chan_t *const *)a;
    uintptr_t y = (uintptr_t)*(weft_chan_t *const *)b;
    return x < y ? -1 : x > y;
}

/* Sort the channels by address and drop duplicates; returns how many are left. */
static int lock_order(weft_chan_t **chans, int m)
{
    if (m <= SELECT_STACK_CASES) {
        for (int i = 1; i < m; i++) {
            weft_chan_t *c = chans[i];
            int j = i;
            for (; j > 0 && (uintptr_t)chans[j - 1] > (uintptr_t)c; j--)
                chans[j] = chans[j - 1];
            chans[j] = c;
        }
    } else {
        qsort(chans, (size_t)m, sizeof *chans, chan_cmp);
    }
    int k = 0;
    for (int i = 0; i < m; i++)
        if (k == 0 || chans[k - 1] != chans[i])
            chans[k++] = chans[i];
    return k;
}

static void lock_all(weft_chan_t **chans, int m)
{
    for (int i = 0; i < m; i++)
        lock(chans[i]);
}

static void unlock_all(weft_chan_t **chans, int m)
{
    for (int i = m; i-- > 0;)
        unlock(chans[i]);
}

/* A select with no channel: only the deadline (or a cancel, or the deadlock report) ends it. */
static int select_none(int64_t deadline)
{
    if (deadline == WEFT_NOWAIT)
        return -ETIMEDOUT;
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    for (;;) {
        uint32_t tok = weft__park_prepare(self, WEFT__WAIT_SELECT_NONE, NULL);
        int r = weft__park(self, tok, deadline);
        if (r != 0)
            return r; /* nobody knows the token, so nothing else ends the wait */
    }
}

/* The select proper, with its bookkeeping already allocated: nodes[n], order[n], chans[n]. */
static int select_with(weft_case_t *cases, int n, int64_t deadline, chan_node *nodes, int *order, weft_chan_t **chans)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        if (cases[i].chan) {
            order[m] = i;
            chans[m] = cases[i].chan;
            m++;
        }
    if (m == 0)
        return select_none(deadline);
    shuffle(order, m);
    int nlocks = lock_order(chans, m);
    weft__fiber *self = NULL;
    if (deadline != WEFT_NOWAIT && !(self = weft__self()))
        return -ENOMEM;

    lock_all(chans, nlocks);
    for (int k = 0; k < m; k++) {
        weft_case_t *cs = &cases[order[k]];
        chan_wake wk = {NULL, 0};
        int r = cs->op == WEFT_SEND ? try_send(cs->chan, cs->elem, &wk) : try_recv(cs->chan, cs->elem, &wk);
        if (r != 0) {
            unlock_all(chans, nlocks);
            wake(wk);
            cs->result = r < 0 ? r : 0;
            return order[k];
        }
    }
    if (deadline == WEFT_NOWAIT) {
        unlock_all(chans, nlocks);
        return -ETIMEDOUT;
    }

    chan_wait w = {.f = self, .result = 0};
    atomic_init(&w.claim, CLAIM_NONE);
    atomic_init(&w.done, 0);
    w.tok = weft__park_prepare(self, WEFT__WAIT_SELECT, cases);
    for (int i = 0; i < n; i++) {
        weft_chan_t *c = cases[i].chan;
        if (!c)
            continue;
        nodes[i] = (chan_node){.w = &w, .elem = cases[i].elem, .idx = i};
        enqueue(cases[i].op == WEFT_SEND ? &c->sendq : &c->recvq, &nodes[i]);
    }
    unlock_all(chans, nlocks);

    int r = weft__park(self, w.tok, deadline);
    bool gave_up = r != 0 && give_up(&w);
    /* a waker that won the claim took out the node of the case that happened; every other node is
     * still queued (1), so those channels are still there, and we take the nodes out. The one that
     * happened may be on a channel that nothing of ours is on any more: that one may be gone (6) */
    int fired = gave_up ? -1 : (int)(atomic_load_explicit(&w.claim, memory_order_relaxed) - 1);
    weft_chan_t *gone = NULL;
    if (fired >= 0) {
        gone = cases[fired].chan;
        for (int i = 0; i < n && gone; i++)
            if (i != fired && cases[i].chan == gone)
                gone = NULL;
    }
    for (int k = 0; k < nlocks; k++)
        if (chans[k] != gone)
            lock(chans[k]);
    for (int i = 0; i < n; i++) {
        weft_chan_t *c = cases[i].chan;
        if (c && i != fired) {
            weft__dassert(nodes[i].queued);
            unlink_node(cases[i].op == WEFT_SEND ? &c->sendq : &c->recvq, &nodes[i]);
        }
    }
    for (int k = nlocks; k-- > 0;)
        if (chans[k] != gone)
            unlock(chans[k]);
    if (gave_up)
        return r;
    wait_done(&w);
    cases[fired].result = w.result;
    return fired;
}

int weft_select(weft_case_t *cases, int n, int64_t deadline)
{
    if (n < 0 || (n > 0 && !cases))
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        if (cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV)
            return -EINVAL;
        if (cases[i].op == WEFT_SEND && cases[i].chan && !cases[i].elem)
            return -EINVAL;
    }
    if (n <= SELECT_STACK_CASES) {
        chan_node nodes[SELECT_STACK_CASES];
        int order[SELECT_STACK_CASES];
        weft_chan_t *chans[SELECT_STACK_CASES];
        return select_with(cases, n, deadline, nodes, order, chans);
    }
    size_t per = sizeof(chan_node) + sizeof(int) + sizeof(weft_chan_t *);
    if ((size_t)n > SIZE_MAX / per)
        return -ENOMEM;
    /* one block: the nodes first, so that each part stays aligned */
    chan_node *nodes = malloc((size_t)n * per);
    if (!nodes)
        return -ENOMEM;
    weft_chan_t **chans = (weft_chan_t **)(void *)(nodes + n);
    int *order = (int *)(void *)(chans + n);
    int r = select_with(cases, n, deadline, nodes, order, chans);
    free(nodes);
    return r;
}
