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

#include "core/internal.h"
#include "core/wait.h"

/* Up to this many cases, select keeps its bookkeeping on the stack; more are allocated. */
#define SELECT_STACK_CASES 16

typedef struct {
    void *obj;
    const weft__sel_ops *ops;
    uint64_t s; /* the object's state while we hold its lock */
} sel_lock;

typedef struct {
    const weft__sel_ops *ops; /* NULL: never ready */
    void *obj;
    sel_lock *lk;             /* its object's lock; NULL for a kind without one */
    weft__wnode node;
    bool queued;
} sel_case;

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

static sel_lock *lock_find(sel_lock *locks, int m, void *obj)
{
    int lo = 0, hi = m;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if ((uintptr_t)locks[mid].obj < (uintptr_t)obj)
            lo = mid + 1;
        else
            hi = mid;
    }
    return &locks[lo];
}

static void lock_all(sel_lock *locks, int m)
{
    for (int i = 0; i < m; i++)
        locks[i].s = locks[i].ops->lock(locks[i].obj);
}

static void unlock_all(sel_lock *locks, int m)
{
    for (int i = m; i-- > 0;)
        locks[i].ops->unlock(locks[i].obj, locks[i].s);
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

/* The kind and the object of a case; NULL ops: never ready. < 0: the case is bad (-EINVAL). */
static int resolve(weft_wait_case_t *cs, sel_case *sc)
{
    sc->ops = NULL;
    sc->obj = NULL;
    sc->lk = NULL;
    sc->queued = false;
    switch (cs->op) {
    case WEFT_SEND:
        if (cs->chan && !cs->elem)
            return -EINVAL;
        /* fall through */
    case WEFT_RECV:
        sc->obj = cs->chan;
        sc->ops = cs->op == WEFT_SEND ? &weft__sel_chan_send : &weft__sel_chan_recv;
        break;
    case WEFT_WG:
    case WEFT_LATCH: sc->obj = cs->obj, sc->ops = &weft__sel_wg; break;
    case WEFT_SEM: sc->obj = cs->obj, sc->ops = &weft__sel_sem; break;
    case WEFT_LOCK: sc->obj = cs->obj, sc->ops = &weft__sel_mutex; break;
    default: return -EINVAL;
    }
    if (!sc->obj)
        sc->ops = NULL;
    return 0;
}

/* What resolve took (an fd's reference), given back. */
static void release_all(weft_wait_case_t *cases, sel_case *sc, int n)
{
    (void)cases, (void)sc, (void)n; /* nothing yet: the fd kind will hold a reference here */
}

/* The select proper, with its bookkeeping already allocated: sc[n], order[n], locks[n]. */
static int select_with(weft_wait_case_t *cases, int n, int64_t deadline, sel_case *sc, int *order, sel_lock *locks)
{
    for (int i = 0; i < n; i++) {
        if (resolve(&cases[i], &sc[i]) < 0) {
            release_all(cases, sc, i);
            return -EINVAL;
        }
    }
    int m = 0, nlocks = 0;
    for (int i = 0; i < n; i++) {
        if (!sc[i].ops)
            continue;
        order[m++] = i;
        if (sc[i].ops->lock)
            locks[nlocks++] = (sel_lock){.obj = sc[i].obj, .ops = sc[i].ops};
    }
    if (m == 0)
        return select_none(deadline);
    shuffle(order, m);
    nlocks = lock_order(locks, nlocks);
    for (int k = 0; k < m; k++) {
        sel_case *c = &sc[order[k]];
        if (c->ops->lock)
            c->lk = lock_find(locks, nlocks, c->obj);
    }
    weft__fiber *self = NULL;
    if (deadline != WEFT_NOWAIT && !(self = weft__self())) {
        release_all(cases, sc, n);
        return -ENOMEM;
    }

    lock_all(locks, nlocks);
    uint64_t no_state = 0;
    for (int k = 0; k < m; k++) {
        int i = order[k];
        sel_case *c = &sc[i];
        weft__wakeup wk = {NULL, 0};
        if (c->ops->poll(c->obj, &cases[i], c->lk ? &c->lk->s : &no_state, &wk)) {
            unlock_all(locks, nlocks);
            weft__wakeup_run(wk, true); /* a hand-off: the woken one runs next here */
            release_all(cases, sc, n);
            return i;
        }
    }
    if (deadline == WEFT_NOWAIT) {
        unlock_all(locks, nlocks);
        release_all(cases, sc, n);
        return -ETIMEDOUT;
    }

    /* none is ready: queue them all (1), the kinds with a lock first */
    weft__wait w;
    weft__wait_begin(&w, self, WEFT__WAIT_SELECT, cases);
    int fired = -1;
    bool won_self = false;
    for (int pass = 0; pass < 2 && fired < 0; pass++) {
        for (int k = 0; k < m; k++) {
            int i = order[k];
            sel_case *c = &sc[i];
            if ((c->ops->lock != NULL) != (pass == 0))
                continue;
            weft__wnode_init(&c->node, &w, (uint32_t)i);
            int r = c->ops->enqueue(c->obj, &cases[i], c->lk ? &c->lk->s : &no_state, &c->node);
            if (r == WEFT__ARM_QUEUED) {
                c->queued = true;
                continue;
            }
            won_self = r == WEFT__ARM_DONE;
            fired = won_self ? i : (int)(weft__wait_claimed(&w) - 1);
            break;
        }
    }
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
        int i = order[k];
        if (sc[i].queued && i != fired)
            sc[i].ops->disarm(sc[i].obj, &cases[i], &sc[i].node); /* (2), (3) */
    }
    if (fired >= 0)
        sc[fired].ops->complete(&cases[fired], &sc[fired].node);
    release_all(cases, sc, n);
    return fired >= 0 ? fired : err;
}

static int select_any(weft_wait_case_t *cases, int n, int64_t deadline)
{
    if (n <= SELECT_STACK_CASES) {
        sel_case sc[SELECT_STACK_CASES];
        int order[SELECT_STACK_CASES];
        sel_lock locks[SELECT_STACK_CASES];
        return select_with(cases, n, deadline, sc, order, locks);
    }
    size_t per = sizeof(sel_case) + sizeof(sel_lock) + sizeof(int);
    if ((size_t)n > SIZE_MAX / per)
        return -ENOMEM;
    /* one block: the cases first, so that each part stays aligned */
    sel_case *sc = malloc((size_t)n * per);
    if (!sc)
        return -ENOMEM;
    sel_lock *locks = (sel_lock *)(void *)(sc + n);
    int *order = (int *)(void *)(locks + n);
    int r = select_with(cases, n, deadline, sc, order, locks);
    free(sc);
    return r;
}

int weft_select_any(weft_wait_case_t *cases, int n, int64_t deadline)
{
    if (n < 0 || (n > 0 && !cases))
        return -EINVAL;
    return select_any(cases, n, deadline);
}

/* Channel cases only: the same select, on the wider cases. */
int weft_select(weft_case_t *cases, int n, int64_t deadline)
{
    if (n < 0 || (n > 0 && !cases))
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV)
            return -EINVAL;
    weft_wait_case_t small[SELECT_STACK_CASES], *wide = small;
    if (n > SELECT_STACK_CASES && !(wide = malloc((size_t)n * sizeof *wide)))
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        wide[i] = (weft_wait_case_t){.op = cases[i].op, .chan = cases[i].chan, .elem = cases[i].elem};
    int r = select_any(wide, n, deadline);
    if (r >= 0)
        cases[r].result = wide[r].result;
    if (wide != small)
        free(wide);
    return r;
}
