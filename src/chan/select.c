/*
 * weft_select: wait for the first of any mix of channel sends and receives, fds readable or writable,
 * fibers finishing, wait groups and latches at zero, semaphore permits and mutexes, with a deadline.
 *
 * The approach is Go's select (runtime/select.go), over every kind of object a fiber can wait on; each
 * kind gives its face in core/wait.h (weft__sel_ops). Take the locks of all the objects in address order
 * (so two selects, or a select and anything else, never wait on each other's locks in a cycle: every
 * other caller holds one at a time), poll the cases in a random order (of the ready cases each is
 * equally likely) and do the first that can go. If none can, start the wait (core/wait.h, step 1), queue
 * one node per case, all pointing at the one wait record, let go of the locks and park.
 *
 * What must stay true.
 *  1. The select's nodes are queued only while it holds their objects' locks or is parked. While it
 *     polls, nobody can find it, so a poll does its case without the claim: no waker can have settled the
 *     wait. (A join has no lock: its node is queued last, with one CAS, and finding the fiber finished
 *     there is settled through the claim: wait.h, WEFT__ARM_DONE and WEFT__ARM_LOST.)
 *  2. Exactly one case happens: the one whose waker won the claim, or the one the select did itself.
 *     A node a waker did not win is still in its object (or, for the kinds whose wakers take a whole
 *     list, is released by that waker): disarm takes it out. A case not chosen took nothing.
 *  3. The chosen case's object is not touched after its waker's last touch, unless another case names
 *     the same object (its node keeps the object alive): a channel may be freed by the other side as
 *     soon as the calls that used it returned.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chan/chan.h"
#include "core/park.h"
#include "core/wait.h"

/* Up to this many cases, select keeps its bookkeeping on the stack; more are allocated. */
#define SELECT_STACK_CASES 16

/* An object's lock, while the select holds it. ops NULL: a channel's (chan/chan.h). */
typedef struct {
    void *obj;
    const weft__sel_ops *ops;
    uint64_t s; /* the object's state word */
} sel_lock;

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

static int lock_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const sel_lock *)a)->obj, y = (uintptr_t)((const sel_lock *)b)->obj;
    return x < y ? -1 : x > y;
}

/* Sort the locks by address and drop duplicates; returns how many are left. */
static int lock_order(sel_lock *locks, int m)
{
    if (m <= SELECT_STACK_CASES) {
        for (int i = 1; i < m; i++) {
            sel_lock l = locks[i];
            int j = i;
            for (; j > 0 && (uintptr_t)locks[j - 1].obj > (uintptr_t)l.obj; j--)
                locks[j] = locks[j - 1];
            locks[j] = l;
        }
    } else {
        qsort(locks, (size_t)m, sizeof *locks, lock_cmp);
    }
    int k = 0;
    for (int i = 0; i < m; i++)
        if (k == 0 || locks[k - 1].obj != locks[i].obj)
            locks[k++] = locks[i];
    return k;
}

/* Point each case whose kind keeps a state word at its object's lock (the sorted locks[m]). */
static void lock_link(weft__sel_case *sc, const int *order, int n, sel_lock *locks, int m)
{
    for (int k = 0; k < n; k++) {
        weft__sel_case *c = &sc[order[k]];
        if (c->kind != WEFT__SEL_OTHER || !c->ops->lock)
            continue;
        int lo = 0, hi = m;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if ((uintptr_t)locks[mid].obj < (uintptr_t)c->obj)
                lo = mid + 1;
            else
                hi = mid;
        }
        c->state = &locks[lo].s;
    }
}

static void lock_all(sel_lock *locks, int m)
{
    for (int i = 0; i < m; i++) {
        if (!locks[i].ops)
            chan_lock(locks[i].obj);
        else
            locks[i].s = locks[i].ops->lock(locks[i].obj);
    }
}

static void unlock_all(sel_lock *locks, int m)
{
    for (int i = m; i-- > 0;) {
        if (!locks[i].ops)
            chan_unlock(locks[i].obj);
        else
            locks[i].ops->unlock(locks[i].obj, locks[i].s);
    }
}

/* A select with nothing that can be ready: only the deadline (or a cancel, or the deadlock report)
 * ends it. */
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

/* The cases as read: sc[n] (ops NULL: never ready), the m that can be ready in order[m], and their
 * objects' locks in locks[nlocks] (unsorted). */
typedef struct {
    weft__sel_case *sc;
    int *order;
    sel_lock *locks;
    int n, m, nlocks;
    bool other;    /* some case is not a channel's */
    bool lockless; /* some case's kind has no lock (a join) */
    bool release;  /* some case's kind took something to give back (an fd's reference) */
} sel_set;

/* Add case i, read into set->sc[i], to the order and the locks. */
static inline void set_add(sel_set *set, int i)
{
    weft__sel_case *c = &set->sc[i];
    c->queued = false;
    if (!c->obj)
        return;
    set->order[set->m++] = i;
    if (c->kind != WEFT__SEL_OTHER) {
        set->locks[set->nlocks++] = (sel_lock){.obj = c->obj, .ops = NULL};
        return;
    }
    set->other = true;
    if (c->ops->lock)
        set->locks[set->nlocks++] = (sel_lock){.obj = c->obj, .ops = c->ops};
    else
        set->lockless = true;
    if (c->ops->release)
        set->release = true;
}

/* What the kinds took when the cases were read (an fd's reference), given back. */
static void release_all(weft__sel_case *sc, int n)
{
    for (int i = 0; i < n; i++)
        if (sc[i].obj && sc[i].kind == WEFT__SEL_OTHER && sc[i].ops->release)
            sc[i].ops->release(&sc[i]);
}

static inline int case_poll(weft__sel_case *c, weft__wakeup *k)
{
    switch (c->kind) {
    case WEFT__SEL_RECV: return chan_sel_poll(c, k, false);
    case WEFT__SEL_SEND: return chan_sel_poll(c, k, true);
    default: return c->ops->poll(c, k);
    }
}

static inline int case_enqueue(weft__sel_case *c)
{
    if (c->kind == WEFT__SEL_OTHER)
        return c->ops->enqueue(c);
    chan_sel_enqueue(c, c->kind == WEFT__SEL_SEND);
    return WEFT__ARM_QUEUED;
}

static inline void case_disarm(weft__sel_case *c)
{
    if (c->kind == WEFT__SEL_OTHER)
        c->ops->disarm(c);
    else
        chan_sel_disarm(c, c->kind == WEFT__SEL_SEND);
}

static inline void case_complete(weft__sel_case *c)
{
    if (c->kind != WEFT__SEL_OTHER)
        chan_sel_complete(c);
    else if (c->ops->complete)
        c->ops->complete(c);
}

/* Queue a node for every case (1), those whose kind has a lock first; stops at a case found ready
 * there (a join), returning it, with *won_self set when the select won it itself. -1: all queued. */
static int arm_all(sel_set *set, weft__wait *w, bool *won_self)
{
    for (int pass = 0; pass < 1 + set->lockless; pass++) {
        for (int k = 0; k < set->m; k++) {
            int i = set->order[k];
            weft__sel_case *c = &set->sc[i];
            if (set->lockless && (c->kind != WEFT__SEL_OTHER || c->ops->lock) != (pass == 0))
                continue;
            weft__wnode_init(&c->node, w, (uint32_t)i);
            int r = case_enqueue(c);
            if (r == WEFT__ARM_QUEUED || r == WEFT__ARM_NEVER) {
                c->queued = r == WEFT__ARM_QUEUED;
                continue;
            }
            *won_self = r == WEFT__ARM_DONE;
            return *won_self ? i : (int)(weft__wait_claimed(w) - 1);
        }
    }
    return -1;
}

/* The select proper, over the cases read. Returns the case that happened (its result in sc), or an
 * error. */
static int select_run(sel_set *set, int64_t deadline, const void *what)
{
    weft__sel_case *sc = set->sc;
    int *order = set->order, m = set->m;
    if (m == 0)
        return select_none(deadline);
    shuffle(order, m);
    sel_lock *locks = set->locks;
    int nlocks = lock_order(locks, set->nlocks);
    if (set->other)
        lock_link(sc, order, m, locks, nlocks);
    weft__fiber *self = NULL;
    if (deadline != WEFT_NOWAIT && !(self = weft__self()))
        return -ENOMEM;

    lock_all(locks, nlocks);
    weft__wakeup wk = {NULL, 0};
    for (int k = 0; k < m; k++) {
        if (case_poll(&sc[order[k]], &wk)) {
            unlock_all(locks, nlocks);
            weft__wakeup_run(wk, true); /* a hand-off: the woken one runs next here */
            return order[k];
        }
    }
    if (deadline == WEFT_NOWAIT) {
        unlock_all(locks, nlocks);
        return -ETIMEDOUT;
    }

    /* none is ready: queue them all (1) */
    weft__wait w;
    weft__wait_begin(&w, self, WEFT__WAIT_SELECT, what);
    bool won_self = false;
    int fired = arm_all(set, &w, &won_self);
    unlock_all(locks, nlocks);

    int err = 0;
    if (fired >= 0) {
        /* settled before we parked: by us, or by a waker whose wakeup is taken here */
        if (won_self)
            weft__park_cancel(self, w.tok);
        else
            weft__wait_abandon(&w);
    } else {
        err = weft__park(self, w.tok, deadline);
        fired = weft__wait_end(&w, err);
    }
    for (int k = 0; k < m; k++) {
        weft__sel_case *c = &sc[order[k]];
        if (c->queued && order[k] != fired)
            case_disarm(c); /* (2), (3) */
    }
    if (fired < 0)
        return err;
    if (!won_self)
        case_complete(&sc[fired]); /* a case the select did itself (a join found done) is complete */
    return fired;
}

/* select_run, then what the cases took given back. */
static int select_set(sel_set *set, int64_t deadline, const void *what)
{
    int r = select_run(set, deadline, what);
    if (set->release)
        release_all(set->sc, set->n);
    return r;
}

/* Read one case into c. < 0: it is bad (nothing is taken). */
static int read_case(const weft_wait_case_t *cs, weft__sel_case *c)
{
    c->ops = NULL;
    c->obj = NULL;
    c->elem = cs->elem;
    c->result = 0;
    c->kind = WEFT__SEL_OTHER;
    switch (cs->op) {
    case WEFT_SEND:
        if (cs->chan && !cs->elem)
            return -EINVAL;
        c->obj = cs->chan;
        c->kind = WEFT__SEL_SEND;
        return 0;
    case WEFT_RECV:
        c->obj = cs->chan;
        c->kind = WEFT__SEL_RECV;
        return 0;
    case WEFT_WG:
    case WEFT_LATCH: c->obj = cs->obj, c->ops = &weft__sel_wg; break;
    case WEFT_SEM: c->obj = cs->obj, c->ops = &weft__sel_sem; break;
    case WEFT_LOCK: c->obj = cs->obj, c->ops = &weft__sel_mutex; break;
    case WEFT_FD_READ:
    case WEFT_FD_WRITE:
        if (cs->fd < 0)
            return 0;
        c->aux = cs->fd << 1 | (cs->op == WEFT_FD_WRITE);
        return weft__sel_fd_open(c); /* sets obj and ops; takes a reference on the fd */
    case WEFT_JOIN:
        if (cs->fiber.handle_ == 0)
            return 0;
        c->key = cs->fiber.handle_;
        return weft__sel_join_open(c); /* sets obj and ops; claims the join */
    default: return -EINVAL;
    }
    return 0;
}

static int select_any(weft_wait_case_t *cases, int n, int64_t deadline, weft__sel_case *sc, int *order,
                      sel_lock *locks)
{
    sel_set set = {.sc = sc, .order = order, .locks = locks, .n = n};
    for (int i = 0; i < n; i++) {
        int r = read_case(&cases[i], &sc[i]);
        if (r < 0) {
            release_all(sc, i);
            return r;
        }
        set_add(&set, i);
    }
    int r = select_set(&set, deadline, cases);
    if (r >= 0)
        cases[r].result = sc[r].result;
    return r;
}

/* Room for n cases' bookkeeping: on the stack up to SELECT_STACK_CASES, else one block (the cases
 * first, so that each part stays aligned). */
#define SELECT_WITH_ROOM(n, CALL)                                                                   \
    do {                                                                                            \
        if ((n) <= SELECT_STACK_CASES) {                                                            \
            weft__sel_case sc[SELECT_STACK_CASES];                                                  \
            int order[SELECT_STACK_CASES];                                                          \
            sel_lock locks[SELECT_STACK_CASES];                                                     \
            return CALL;                                                                            \
        }                                                                                           \
        size_t per = sizeof(weft__sel_case) + sizeof(sel_lock) + sizeof(int);                       \
        if ((size_t)(n) > SIZE_MAX / per)                                                           \
            return -ENOMEM;                                                                         \
        weft__sel_case *sc = malloc((size_t)(n) * per);                                             \
        if (!sc)                                                                                    \
            return -ENOMEM;                                                                         \
        sel_lock *locks = (sel_lock *)(void *)(sc + (n));                                           \
        int *order = (int *)(void *)(locks + (n));                                                  \
        int r_ = CALL;                                                                              \
        free(sc);                                                                                   \
        return r_;                                                                                  \
    } while (0)

int weft_select_any(weft_wait_case_t *cases, int n, int64_t deadline)
{
    if (n < 0 || (n > 0 && !cases))
        return -EINVAL;
    SELECT_WITH_ROOM(n, select_any(cases, n, deadline, sc, order, locks));
}

/* Channel cases only: the same select. */
static inline __attribute__((always_inline)) int select_chan(weft_case_t *cases, int n, int64_t deadline,
                                                             weft__sel_case *sc, int *order, sel_lock *locks)
{
    sel_set set = {.sc = sc, .order = order, .locks = locks, .n = n};
    for (int i = 0; i < n; i++) {
        weft__sel_case *c = &sc[i];
        int op = cases[i].op;
        c->obj = cases[i].chan;
        c->elem = cases[i].elem;
        if ((op != WEFT_SEND && op != WEFT_RECV) || (op == WEFT_SEND && c->obj && !c->elem))
            return -EINVAL; /* nothing taken yet: channel cases take nothing until they happen */
        c->kind = op == WEFT_SEND ? WEFT__SEL_SEND : WEFT__SEL_RECV;
        c->result = 0;
        set_add(&set, i);
    }
    int r = select_set(&set, deadline, cases);
    if (r >= 0)
        cases[r].result = sc[r].result;
    return r;
}

int weft_select(weft_case_t *cases, int n, int64_t deadline)
{
    if (n < 0 || (n > 0 && !cases))
        return -EINVAL;
    SELECT_WITH_ROOM(n, select_chan(cases, n, deadline, sc, order, locks));
}
