/*
 * Fiber descriptors and the fiber API: spawn, join, detach, identity, fiber-local storage.
 *
 * Descriptors are type-stable: they live in slabs of 1024 that are never freed, indexed by a table, and
 * a handle is (generation << 32 | index). Freeing a descriptor bumps its generation, so a stale handle
 * (a fiber joined twice, a detached fiber that finished) is recognised by a mismatch and gets -ESRCH,
 * and reading it never touches unmapped memory.
 *
 * Who frees a descriptor: the joiner (after it collected the result), or the fiber itself when it was
 * detached. The join word (internal.h) decides between a finishing fiber and its joiner with one
 * exchange: WEFT__JW_DONE set by the fiber, a joiner's wait node set by the joiner (a weft_join, or a select's
 * join case: core/wait.h), WEFT__JW_DETACHED by detach. The finishing fiber that finds a node owns it: it wins
 * the node's wait and wakes it, or (a select that another case settled) releases the node.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/wait.h"
#include "obs/sanitize.h"

#define SLAB_SHIFT 10
#define SLAB_N (1u << SLAB_SHIFT)
#define SLABS_MAX (1u << 16) /* 64M descriptors */
#define DESC_BATCH 64u       /* descriptors moved at once between a worker and the pool */
#define WORKER_DESC_MAX 128u /* free descriptors a worker keeps for its own spawns */
#define ID_BLOCK 256u

#define WEFT__JW_CLAIMED ((uintptr_t)3) /* a joiner or detach took the finished fiber */

static weft__fiber *_Atomic slabs[SLABS_MAX];

/*
 * The shared pool is a stack of batches, so that descriptors move between workers in O(1): a worker
 * that spawns takes a whole batch, one that frees (fibers spawned elsewhere finish on it) gives whole
 * batches back, and neither walks a list that another CPU just wrote (a cache miss per descriptor: it
 * was a fifth of the spawn benchmark's time). A batch is a NULL-terminated list through `link`; while
 * a descriptor is free, its `arg` chains the batches and its `stack_size` holds its batch's length
 * (only read for a batch's first descriptor).
 */
static struct {
    weft__spinlock lock; /* short sections only: a slab is made outside it */
    weft__fiber *batches;
    uint32_t nslabs;     /* slab numbers handed out (under lock); slabs[] fills in after */
    _Atomic uint64_t next_id;
} descs = {.next_id = 1};

static inline weft__fiber *batch_next(const weft__fiber *head)
{
    return (weft__fiber *)head->arg;
}

/* Push a chain of batches (`last` is the final batch's head). */
static void pool_put_batches(weft__fiber *first, weft__fiber *last)
{
    weft__spin_lock(&descs.lock);
    last->arg = descs.batches;
    descs.batches = first;
    weft__spin_unlock(&descs.lock);
}

/* Give a list of n descriptors back as one batch. */
static void desc_pool_put(weft__fiber *list, uint32_t n)
{
    list->stack_size = n;
    pool_put_batches(list, list);
}

/* A new slab of descriptors, cut into batches; made outside the lock (it faults in 192 KiB). The memory
 * first, then a slab number: a number taken for a slab that could not be allocated would stay unused
 * for good, and a program that retried a failing spawn 65536 times would never spawn again. */
static bool slab_new(void)
{
    weft__fiber *s = aligned_alloc(WEFT__CACHELINE, SLAB_N * sizeof *s);
    if (!s)
        return false;
    weft__spin_lock(&descs.lock);
    uint32_t n = descs.nslabs < SLABS_MAX ? descs.nslabs++ : SLABS_MAX;
    weft__spin_unlock(&descs.lock);
    if (n == SLABS_MAX) {
        free(s);
        return false;
    }
    memset(s, 0, SLAB_N * sizeof *s);
    for (uint32_t i = 0; i < SLAB_N; i++) {
        weft__fiber *f = &s[i];
        f->index = (n << SLAB_SHIFT) | i;
        f->kind = WEFT__KIND_FREE;
        atomic_store_explicit(&f->gen, 1, memory_order_relaxed);
        f->timer_idx = WEFT__TIMER_NONE;
        bool last_of_batch = (i + 1) % DESC_BATCH == 0;
        f->link = last_of_batch ? NULL : &s[i + 1];
        if (i % DESC_BATCH == 0) {
            f->stack_size = DESC_BATCH;
            f->arg = i + DESC_BATCH < SLAB_N ? &s[i + DESC_BATCH] : NULL;
        }
    }
    atomic_store_explicit(&slabs[n], s, memory_order_release);
    pool_put_batches(&s[0], &s[SLAB_N - DESC_BATCH]);
    return true;
}

/* Take one batch from the pool (making a slab when it is empty); with `one`, only its first descriptor,
 * and the rest goes back. Returns the list and sets *n, or NULL when out of memory. */
static weft__fiber *desc_pool_take(uint32_t *n, bool one)
{
    for (;;) {
        weft__spin_lock(&descs.lock);
        weft__fiber *b = descs.batches;
        if (b) {
            descs.batches = batch_next(b);
            weft__spin_unlock(&descs.lock);
            *n = b->stack_size;
            if (one && b->link) {
                desc_pool_put(b->link, *n - 1);
                b->link = NULL;
                *n = 1;
            }
            return b;
        }
        weft__spin_unlock(&descs.lock);
        if (!slab_new())
            return NULL;
    }
}

static weft__fiber *desc_alloc(weft__worker *w)
{
    weft__fiber *f;
    uint32_t n;
    if (w) {
        if (WEFT__UNLIKELY(!w->desc_free)) {
            if (w->desc_out) { /* our own outgoing batch first: it is hot in this cache */
                w->desc_free = w->desc_out;
                w->desc_nfree = w->desc_nout;
                w->desc_out = NULL;
                w->desc_nout = 0;
            } else if ((w->desc_free = desc_pool_take(&n, false))) {
                w->desc_nfree = n;
            }
        }
        f = w->desc_free;
        if (!f)
            return NULL;
        w->desc_free = f->link;
        w->desc_nfree--;
    } else if (!(f = desc_pool_take(&n, true))) {
        return NULL;
    }
    /* No reset here: a descriptor is freed clean. Its stack and TSan fiber were cleared when it finished,
     * its fiber-local storage destroyed, its park word left RUNNING, its timer off the heap, its wait
     * reason cleared; the fields a new user needs (kind, function, join word, name...) it sets itself. */
    weft__dassert(!f->stack && !f->tsan_fiber && !f->locals && f->timer_idx == WEFT__TIMER_NONE &&
                  WEFT__PW_STATE(atomic_load_explicit(&f->park, memory_order_relaxed)) == WEFT__PW_RUNNING);
    return f;
}

weft__fiber *weft__desc_alloc(weft__worker *w)
{
    weft__tsan_internal_begin();
    weft__fiber *f = desc_alloc(w);
    weft__tsan_internal_end();
    return f;
}

static void desc_free(weft__worker *w, weft__fiber *f)
{
    /* a handle forged for the next generation must not find a joinable fiber here */
    f->kind = WEFT__KIND_FREE;
    uint32_t g = atomic_load_explicit(&f->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&f->gen, g ? g : 1, memory_order_release);
    if (WEFT__UNLIKELY(w == NULL)) {
        f->link = NULL;
        desc_pool_put(f, 1);
        return;
    }
    if (WEFT__LIKELY(w->desc_nfree < WORKER_DESC_MAX)) {
        f->link = w->desc_free;
        w->desc_free = f;
        w->desc_nfree++;
        return;
    }
    /* the cache is full (this worker frees what others spawn): fill a batch for the pool */
    f->link = w->desc_out;
    w->desc_out = f;
    if (++w->desc_nout == DESC_BATCH) {
        desc_pool_put(w->desc_out, DESC_BATCH);
        w->desc_out = NULL;
        w->desc_nout = 0;
    }
}

void weft__desc_free(weft__worker *w, weft__fiber *f)
{
    weft__tsan_internal_begin();
    desc_free(w, f);
    weft__tsan_internal_end();
}

void weft__desc_cache_flush(weft__worker *w)
{
    if (w->desc_free)
        desc_pool_put(w->desc_free, w->desc_nfree);
    if (w->desc_out)
        desc_pool_put(w->desc_out, w->desc_nout);
    w->desc_free = w->desc_out = NULL;
    w->desc_nfree = w->desc_nout = 0;
}

weft_fiber_t weft__handle(const weft__fiber *f)
{
    uint64_t g = atomic_load_explicit(&((weft__fiber *)f)->gen, memory_order_relaxed);
    return (weft_fiber_t){(g << 32) | f->index};
}

weft__fiber *weft__desc_lookup(weft_fiber_t h)
{
    uint32_t idx = (uint32_t)h.handle_, gen = (uint32_t)(h.handle_ >> 32);
    if (gen == 0 || (idx >> SLAB_SHIFT) >= SLABS_MAX)
        return NULL;
    weft__fiber *s = atomic_load_explicit(&slabs[idx >> SLAB_SHIFT], memory_order_acquire);
    if (!s)
        return NULL;
    weft__fiber *f = &s[idx & (SLAB_N - 1)];
    if (atomic_load_explicit(&f->gen, memory_order_acquire) != gen)
        return NULL;
    weft__tsan_internal_begin();
    int kind = f->kind;
    weft__tsan_internal_end();
    return kind == WEFT__KIND_FIBER || kind == WEFT__KIND_THREAD ? f : NULL;
}

uint64_t weft__next_id(weft__worker *w)
{
    if (!w)
        return atomic_fetch_add_explicit(&descs.next_id, 1, memory_order_relaxed);
    if (WEFT__UNLIKELY(w->id_next == w->id_end)) {
        w->id_next = atomic_fetch_add_explicit(&descs.next_id, ID_BLOCK, memory_order_relaxed);
        w->id_end = w->id_next + ID_BLOCK;
    }
    return w->id_next++;
}

static inline uint64_t next_id(weft__worker *w)
{
    if (WEFT__LIKELY(w && w->id_next != w->id_end))
        return w->id_next++;
    return weft__next_id(w);
}

static void set_name(weft__fiber *f, const char *name)
{
    if (!name || !*name) {
        f->flags &= (uint8_t)~WEFT__F_NAMED;
        return;
    }
    size_t n = strnlen(name, sizeof f->name - 1);
    memcpy(f->name, name, n);
    f->name[n] = '\0';
    f->flags |= WEFT__F_NAMED;
}

int weft__label(const weft__fiber *f, char *buf, size_t len)
{
    if (f->flags & WEFT__F_NAMED)
        return snprintf(buf, len, "\"%.31s\" (id %llu)", f->name, (unsigned long long)f->id);
    return snprintf(buf, len, "%llu", (unsigned long long)f->id);
}

/* ------------------------------------------------------------------------------------------------ */
/* Finishing and joining                                                                             */

void weft__fiber_publish_done(weft__worker *w, weft__fiber *f)
{
    weft__tsan_internal_begin();
    atomic_store_explicit(&f->state, WEFT_DONE, memory_order_relaxed);
    bool fiber = f->kind == WEFT__KIND_FIBER;
    /* a detached fiber goes straight to CLAIMED: publishing DONE, even for an instant, would let a
     * (mistaken) join on its handle collect it too */
    uintptr_t j = atomic_load_explicit(&f->join, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&f->join, &j,
                                                  j == WEFT__JW_DETACHED ? WEFT__JW_CLAIMED : WEFT__JW_DONE,
                                                  memory_order_acq_rel, memory_order_relaxed))
        ;
    if (j == WEFT__JW_DETACHED) {
        desc_free(w, f);
    } else if (j != 0) {
        weft__wnode *n = (weft__wnode *)j;
        if (weft__wnode_claim(n))
            weft__wait_wake(n->w, true);
        else
            weft__wnode_release(n); /* our last touch of it */
    }
    if (fiber) {
        /* release, not seq_cst: shutdown re-reads the counts every 10 ms, so it cannot miss the last
         * exit for long, and a full fence on every exit would cost more than it saves */
        atomic_store_explicit(&w->nexited, atomic_load_explicit(&w->nexited, memory_order_relaxed) + 1,
                              memory_order_release);
        if (WEFT__UNLIKELY(atomic_load_explicit(&weft__rt_g.quiesce_wanted, memory_order_relaxed)))
            weft__quiesce_check();
    }
    weft__tsan_internal_end();
}

void weft__desc_each(void (*fn)(weft__fiber *f, void *arg), void *arg)
{
    weft__spin_lock(&descs.lock);
    uint32_t n = descs.nslabs;
    weft__spin_unlock(&descs.lock);
    for (uint32_t i = 0; i < n; i++) {
        weft__fiber *s = atomic_load_explicit(&slabs[i], memory_order_acquire);
        if (!s)
            continue; /* a slab number handed out whose slab is still being made */
        for (uint32_t k = 0; k < SLAB_N; k++)
            fn(&s[k], arg);
    }
}

void weft__desc_abandon(weft__fiber *f, void *unused)
{
    (void)unused;
    weft__tsan_internal_begin();
    if (f->kind == WEFT__KIND_FIBER && atomic_load_explicit(&f->state, memory_order_relaxed) != WEFT_DONE) {
        f->start_err = -EDEADLK;
        f->stack = NULL; /* its memory goes with the runtime's */
        f->tsan_fiber = NULL;
        f->timer_idx = WEFT__TIMER_NONE;
        uint32_t seq = WEFT__PW_SEQ(atomic_load_explicit(&f->park, memory_order_relaxed));
        atomic_store_explicit(&f->park, WEFT__PW_WORD(seq, WEFT__PW_OK, WEFT__PW_RUNNING), memory_order_relaxed);
        f->wait_reason = WEFT__WAIT_NONE;
        f->locals = NULL; /* its values are lost with it */
        atomic_store_explicit(&f->state, WEFT_DONE, memory_order_relaxed);
        uintptr_t j = atomic_load_explicit(&f->join, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(&f->join, &j,
                                                  j == WEFT__JW_DETACHED ? WEFT__JW_CLAIMED : WEFT__JW_DONE,
                                                      memory_order_acq_rel, memory_order_relaxed))
            ;
        if (j == WEFT__JW_DETACHED)
            desc_free(NULL, f);
    }
    weft__tsan_internal_end();
}

static int collect(weft__fiber *f, void **result)
{
    uintptr_t exp = WEFT__JW_DONE;
    if (!atomic_compare_exchange_strong_explicit(&f->join, &exp, WEFT__JW_CLAIMED, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return -EINVAL; /* a concurrent detach or join took it */
    weft__tsan_acquire(f); /* everything the fiber did happens before its join returns */
    weft__tsan_internal_begin();
    void *res = f->result;
    int err = f->start_err;
    desc_free(weft__enter(), f);
    weft__leave();
    weft__tsan_internal_end();
    if (result)
        *result = err ? NULL : res;
    return err;
}

static int join_until(weft_fiber_t h, void **result, int64_t deadline, bool cancellable);

int weft_join_until(weft_fiber_t h, void **result, int64_t deadline)
{
    return join_until(h, result, deadline, true);
}

int weft__join_uncancellable(weft_fiber_t h, void **result)
{
    return join_until(h, result, WEFT_FOREVER, false);
}

/* What a join of h may not do, as weft_join says: 0 with *f and *self, or -ESRCH, -ENOMEM, -EDEADLK. */
static int join_target(weft_fiber_t h, weft__fiber **f, weft__fiber **self)
{
    *f = weft__desc_lookup(h);
    if (!*f)
        return -ESRCH;
    *self = weft__self();
    if (!*self)
        return -ENOMEM;
    return *self == *f ? -EDEADLK : 0;
}

/* A join word that another join or a detach holds: -ESRCH when h went stale meanwhile, else -EINVAL. */
static int join_taken(weft__fiber *f, weft_fiber_t h)
{
    return atomic_load_explicit(&f->gen, memory_order_acquire) != (uint32_t)(h.handle_ >> 32) ? -ESRCH : -EINVAL;
}

static int join_until(weft_fiber_t h, void **result, int64_t deadline, bool cancellable)
{
    weft__fiber *f, *self;
    int err = join_target(h, &f, &self);
    if (err)
        return err;
    for (;;) {
        uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
        if (j == WEFT__JW_DONE)
            return collect(f, result);
        if (j != 0)
            return join_taken(f, h); /* detached, claimed, or another joiner's node */
        if (deadline == WEFT_NOWAIT)
            return -ETIMEDOUT;
        weft__wait w;
        weft__wnode n;
        weft__wait_begin(&w, self, WEFT__WAIT_JOIN, f);
        w.solo = true; /* called off only by taking the node back out of the join word, below */
        weft__wnode_init(&n, &w, 0);
        uintptr_t zero = 0;
        if (!atomic_compare_exchange_strong_explicit(&f->join, &zero, (uintptr_t)&n, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            /* it finished (or was detached) meanwhile: undo the wait and look again */
            weft__park_cancel(self, w.tok);
            continue;
        }
        int r = cancellable ? weft__park(self, w.tok, deadline) : weft__park_uncancellable(self, w.tok, deadline);
        if (r != 0) {
            /* timed out: take our node back, unless the fiber finished and is waking us right now */
            uintptr_t me = (uintptr_t)&n;
            if (atomic_compare_exchange_strong_explicit(&f->join, &me, 0, memory_order_acq_rel, memory_order_acquire))
                return r;
        }
        weft__wait_settle(&w);
        return collect(f, result);
    }
}

int weft_join(weft_fiber_t h, void **result)
{
    return weft_join_until(h, result, WEFT_FOREVER);
}

/* ---- select's join case (core/wait.h): a kind without a lock; the join word is its list of one ---- */

int weft__sel_join_open(weft__sel_case *c)
{
    weft_fiber_t h = {c->key};
    weft__fiber *f, *self;
    int err = join_target(h, &f, &self);
    if (err)
        return err;
    uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
    if (j != 0 && j != WEFT__JW_DONE)
        return join_taken(f, h);
    c->ops = &weft__sel_join;
    c->obj = f;
    return 0;
}

/* A finished fiber is collected here: under the other cases' locks, which is fine (collect takes only
 * the descriptor pool's, which nothing holds while taking another). */
static int sel_join_poll(weft__sel_case *c, weft__wakeup *k)
{
    (void)k;
    weft__fiber *f = c->obj;
    if (atomic_load_explicit(&f->join, memory_order_acquire) != WEFT__JW_DONE)
        return 0;
    int r = collect(f, c->elem);
    if (r == -EINVAL)
        return 0; /* a join elsewhere took it just now: never ready for us */
    c->result = r;
    return 1;
}

static int sel_join_enqueue(weft__sel_case *c)
{
    weft__fiber *f = c->obj;
    uintptr_t zero = 0;
    if (atomic_compare_exchange_strong_explicit(&f->join, &zero, (uintptr_t)&c->node, memory_order_acq_rel,
                                                memory_order_acquire))
        return WEFT__ARM_QUEUED;
    if (zero != WEFT__JW_DONE)
        return WEFT__ARM_NEVER; /* another join took the fiber since we looked */
    /* it finished since the poll: ours, unless a case queued before has been won meanwhile */
    if (!weft__wait_claim(c->node.w, c->node.idx))
        return WEFT__ARM_LOST;
    c->result = collect(f, c->elem); /* -EINVAL only if a join elsewhere raced us to it */
    return WEFT__ARM_DONE;
}

/* Not chosen: take the node back out of the join word, or wait until the finishing fiber, which
 * found it there and lost the claim, is through with it (the fiber then stays joinable). */
static void sel_join_disarm(weft__sel_case *c)
{
    weft__fiber *f = c->obj;
    uintptr_t me = (uintptr_t)&c->node;
    if (!atomic_compare_exchange_strong_explicit(&f->join, &me, 0, memory_order_acq_rel, memory_order_acquire))
        weft__wnode_wait_released(&c->node);
}

static void sel_join_complete(weft__sel_case *c)
{
    c->result = collect(c->obj, c->elem);
}

const weft__sel_ops weft__sel_join = {NULL,           NULL, sel_join_poll, sel_join_enqueue, sel_join_disarm,
                                      sel_join_complete, NULL};

int weft_detach(weft_fiber_t h)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return -ESRCH;
    uintptr_t j = 0;
    if (atomic_compare_exchange_strong_explicit(&f->join, &j, WEFT__JW_DETACHED, memory_order_acq_rel,
                                                memory_order_acquire))
        return 0;
    if (j == WEFT__JW_DONE) {
        if (!atomic_compare_exchange_strong_explicit(&f->join, &j, WEFT__JW_CLAIMED, memory_order_acq_rel,
                                                     memory_order_acquire))
            return -EINVAL;
        weft__tsan_internal_begin();
        desc_free(weft__enter(), f);
        weft__leave();
        weft__tsan_internal_end();
        return 0;
    }
    return -EINVAL; /* detached already, or being joined */
}

/* ------------------------------------------------------------------------------------------------ */
/* Spawning                                                                                          */

static inline __attribute__((always_inline)) int spawn(weft__worker *w, weft_fiber_t *out, const weft_attr_t *attr,
                                                      weft_fn fn, void *arg);

int weft_spawn(weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg)
{
    if (!fn || (attr && ((attr->flags & ~(unsigned)WEFT_DETACHED) || attr->stack_size > ((size_t)1 << 30))))
        return -EINVAL; /* before anything starts: a failed call starts nothing, not even the runtime */
    weft__tsan_internal_begin();
    weft__worker *w = weft__enter();
    weft__tsan_internal_end();
    if (WEFT__LIKELY(w != NULL)) {
        int r = spawn(w, out, attr, fn, arg);
        weft__leave();
        return r;
    }
    weft__leave();
    /* from outside the runtime: start it if need be, and keep a shutdown from finishing meanwhile */
    weft__fiber *self = weft__self_if_any();
    int r = weft__foreign_enter(self && (self->flags & WEFT__F_ORPHAN));
    if (r < 0)
        return r;
    r = spawn(NULL, out, attr, fn, arg);
    weft__foreign_leave();
    return r;
}

/* w: the calling worker, or NULL from outside the runtime (then inside weft__foreign_enter).
 * The arguments were checked. */
static inline int spawn(weft__worker *w, weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg)
{
    unsigned flags = 0;
    size_t stack = 0;
    const char *name = NULL;
    if (attr) {
        flags = attr->flags;
        stack = attr->stack_size;
        name = attr->name;
    }
    bool detached = (flags & WEFT_DETACHED) || !out;
    weft__tsan_internal_begin();
    weft__fiber *f;
    if (WEFT__LIKELY(w && w->desc_free)) {
        f = w->desc_free;
        w->desc_free = f->link;
        w->desc_nfree--;
    } else if (!(f = desc_alloc(w))) {
        weft__tsan_internal_end();
        return -ENOMEM;
    }
    f->kind = WEFT__KIND_FIBER;
    f->fn = fn;
    f->arg = arg;
    f->stack_size = (uint32_t)(stack ? weft__stack_round(stack * WEFT_SAN_STACK_FACTOR) : weft__rt_g.stack_size);
    f->start_err = 0;
    f->flags = detached ? WEFT__F_DETACHED : 0;
    f->id = next_id(w);
    if (WEFT__UNLIKELY(name != NULL))
        set_name(f, name);
    atomic_store_explicit(&f->join, detached ? WEFT__JW_DETACHED : 0, memory_order_relaxed);
    weft_fiber_t h = weft__handle(f);
    weft__tsan_internal_end();
    weft__tsan_release(f); /* the spawner's past happens before the fiber */
    weft__tsan_internal_begin();
    if (w)
        atomic_store_explicit(&w->nspawned, atomic_load_explicit(&w->nspawned, memory_order_relaxed) + 1,
                              memory_order_release);
    else
        atomic_fetch_add_explicit(&weft__rt_g.foreign_spawned, 1, memory_order_seq_cst);
    int r = weft__submit_new(w, f);
    if (WEFT__UNLIKELY(r < 0)) { /* nothing was queued: undo, the fiber never existed */
        if (w)
            atomic_store_explicit(&w->nspawned, atomic_load_explicit(&w->nspawned, memory_order_relaxed) - 1,
                                  memory_order_release);
        else
            atomic_fetch_sub_explicit(&weft__rt_g.foreign_spawned, 1, memory_order_seq_cst);
        desc_free(w, f);
    }
    weft__tsan_internal_end();
    if (r < 0)
        return r;
    if (out)
        *out = h;
    return 0;
}

int weft_go(weft_fn fn, void *arg)
{
    weft_attr_t a = {.flags = WEFT_DETACHED};
    return weft_spawn(NULL, &a, fn, arg);
}

/* ------------------------------------------------------------------------------------------------ */
/* Identity                                                                                          */

/* A foreign thread's descriptor goes back when the thread ends, by the destructor of this key. */
static pthread_key_t foreign_key;
static pthread_mutex_t foreign_key_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool foreign_key_made;

static void foreign_exit(void *p)
{
    weft__fiber *f = p;
    weft__locals_destroy(f);
    if (weft__tls_self == f)
        weft__tls_self = NULL;
    weft__tsan_release(f); /* this thread's use of f happens before the next owner's (weft__self) */
    weft__desc_free(NULL, f);
}

/* Made on first use, and tried again on a later one if the system had no key to spare then. */
static bool foreign_key_get(void)
{
    if (WEFT__LIKELY(atomic_load_explicit(&foreign_key_made, memory_order_acquire)))
        return true;
    pthread_mutex_lock(&foreign_key_lock);
    if (!atomic_load_explicit(&foreign_key_made, memory_order_relaxed) &&
        pthread_key_create(&foreign_key, foreign_exit) == 0)
        atomic_store_explicit(&foreign_key_made, true, memory_order_release);
    pthread_mutex_unlock(&foreign_key_lock);
    return atomic_load_explicit(&foreign_key_made, memory_order_relaxed);
}

weft__fiber *weft__self(void)
{
    weft__tsan_internal_begin();
    weft__fiber *f = weft__self_if_any();
    if (WEFT__UNLIKELY(!f)) {
        /* without the key, or without room for this thread's value of it (the C library allocates past
         * the first 32 keys), the descriptor would never go back: no record, as with no memory for one */
        f = foreign_key_get() ? desc_alloc(NULL) : NULL;
        if (f && pthread_setspecific(foreign_key, f) != 0) {
            desc_free(NULL, f);
            f = NULL;
        }
        if (f) {
            f->kind = WEFT__KIND_FOREIGN;
            f->flags = 0;
            atomic_store_explicit(&f->state, WEFT_RUNNING, memory_order_relaxed);
            weft__tls_self = f;
        }
        weft__tsan_internal_end();
        if (f)
            weft__tsan_acquire(f); /* the descriptor's last owner is done with it (foreign_exit) */
        return f;
    }
    weft__tsan_internal_end();
    return f;
}

/* The caller's descriptor if it is a fiber or a weft thread. Call inside a hidden stretch. */
static weft__fiber *self_named(void)
{
    weft__fiber *f = weft__self_if_any();
    if (!f || (f->kind != WEFT__KIND_FIBER && f->kind != WEFT__KIND_THREAD))
        return NULL;
    return f;
}

weft_fiber_t weft_self(void)
{
    weft__tsan_internal_begin();
    const weft__fiber *f = self_named();
    weft_fiber_t h = f ? weft__handle(f) : WEFT_FIBER_NONE;
    weft__tsan_internal_end();
    return h;
}

uint64_t weft_self_id(void)
{
    weft__tsan_internal_begin();
    const weft__fiber *f = self_named();
    uint64_t id = f ? f->id : 0;
    weft__tsan_internal_end();
    return id;
}

const char *weft_self_name(void)
{
    weft__tsan_internal_begin();
    const weft__fiber *f = self_named();
    const char *n = f ? weft__name(f) : "";
    weft__tsan_internal_end();
    return n;
}

int weft_set_name(const char *name)
{
    weft__tsan_internal_begin();
    weft__fiber *f = self_named();
    if (f) {
        set_name(f, name);
        if (f->tsan_fiber && (f->flags & WEFT__F_NAMED))
            weft__tsan_set_name(f->tsan_fiber, f->name);
    }
    weft__tsan_internal_end();
    return f ? 0 : -EPERM;
}

int weft_in_fiber(void)
{
    weft__tsan_internal_begin();
    weft__fiber *f = weft__self_if_any();
    int r = f && (f->kind == WEFT__KIND_FIBER || (f->flags & WEFT__F_ORPHAN));
    weft__tsan_internal_end();
    return r;
}

int weft_fiber_state(weft_fiber_t h)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return -ESRCH;
    int s = (int)atomic_load_explicit(&f->state, memory_order_relaxed);
    if (s == WEFT_DONE) {
        /* the fiber stores DONE just before it publishes its end to the join word: until then it is
         * still finishing, and a detach would not free it (it frees itself an instant later); so DONE
         * is told only once a join or a detach would collect it at once */
        uintptr_t j = atomic_load_explicit(&f->join, memory_order_acquire);
        if (j != WEFT__JW_DONE && j != WEFT__JW_CLAIMED)
            s = WEFT_RUNNING;
    }
    return atomic_load_explicit(&f->gen, memory_order_acquire) == (uint32_t)(h.handle_ >> 32) ? s : -ESRCH;
}

uint64_t weft_fiber_id(weft_fiber_t h)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return 0;
    weft__tsan_internal_begin();
    uint64_t id = f->id;
    weft__tsan_internal_end();
    return atomic_load_explicit(&f->gen, memory_order_acquire) == (uint32_t)(h.handle_ >> 32) ? id : 0;
}

int weft_fiber_name(weft_fiber_t h, char *buf, size_t len)
{
    weft__fiber *f = weft__desc_lookup(h);
    if (!f)
        return -ESRCH;
    char tmp[sizeof f->name];
    weft__tsan_internal_begin();
    memcpy(tmp, weft__name(f), f->flags & WEFT__F_NAMED ? sizeof tmp : 1);
    weft__tsan_internal_end();
    tmp[sizeof tmp - 1] = '\0';
    if (atomic_load_explicit(&f->gen, memory_order_acquire) != (uint32_t)(h.handle_ >> 32))
        return -ESRCH;
    size_t n = strlen(tmp);
    if (buf && len) {
        size_t c = n < len - 1 ? n : len - 1;
        memcpy(buf, tmp, c);
        buf[c] = '\0';
    }
    return (int)n;
}

/* ------------------------------------------------------------------------------------------------ */
/* Fiber-local storage                                                                               */

struct weft__local {
    uint64_t gen;
    void *value;
};

static struct {
    pthread_mutex_t lock;
    struct {
        _Atomic uint64_t gen; /* odd: in use */
        void (*destructor)(void *);
    } keys[WEFT_KEYS_MAX];
} fls = {.lock = PTHREAD_MUTEX_INITIALIZER};

int weft_key_create(weft_key_t *key, void (*destructor)(void *))
{
    if (!key)
        return -EINVAL;
    pthread_mutex_lock(&fls.lock);
    for (unsigned i = 0; i < WEFT_KEYS_MAX; i++) {
        uint64_t g = atomic_load_explicit(&fls.keys[i].gen, memory_order_relaxed);
        if (g & 1)
            continue;
        fls.keys[i].destructor = destructor;
        atomic_store_explicit(&fls.keys[i].gen, g + 1, memory_order_release);
        pthread_mutex_unlock(&fls.lock);
        *key = i;
        return 0;
    }
    pthread_mutex_unlock(&fls.lock);
    return -ENOSPC;
}

int weft_key_delete(weft_key_t key)
{
    if (key >= WEFT_KEYS_MAX)
        return -EINVAL;
    pthread_mutex_lock(&fls.lock);
    uint64_t g = atomic_load_explicit(&fls.keys[key].gen, memory_order_relaxed);
    if (!(g & 1)) {
        pthread_mutex_unlock(&fls.lock);
        return -EINVAL;
    }
    atomic_store_explicit(&fls.keys[key].gen, g + 1, memory_order_release);
    fls.keys[key].destructor = NULL;
    pthread_mutex_unlock(&fls.lock);
    return 0;
}

int weft_local_set(weft_key_t key, void *value)
{
    if (key >= WEFT_KEYS_MAX)
        return -EINVAL;
    uint64_t g = atomic_load_explicit(&fls.keys[key].gen, memory_order_acquire);
    if (!(g & 1))
        return -EINVAL;
    weft__fiber *f = weft__self();
    if (!f)
        return -ENOMEM;
    if (!f->locals) {
        if (!value)
            return 0;
        f->locals = calloc(WEFT_KEYS_MAX, sizeof *f->locals);
        if (!f->locals)
            return -ENOMEM;
    }
    f->locals[key].gen = g;
    f->locals[key].value = value;
    return 0;
}

void *weft_local_get(weft_key_t key)
{
    if (key >= WEFT_KEYS_MAX)
        return NULL;
    weft__fiber *f = weft__self_if_any();
    if (!f || !f->locals)
        return NULL;
    uint64_t g = atomic_load_explicit(&fls.keys[key].gen, memory_order_acquire);
    return f->locals[key].gen == g && (g & 1) ? f->locals[key].value : NULL;
}

void weft__locals_destroy(weft__fiber *f)
{
    if (!f->locals)
        return;
    /* destructors may set values again: repeat a few rounds, as pthreads does */
    for (int round = 0; round < 4; round++) {
        bool any = false;
        for (unsigned i = 0; i < WEFT_KEYS_MAX; i++) {
            struct weft__local *l = &f->locals[i];
            if (!l->value)
                continue;
            uint64_t g = atomic_load_explicit(&fls.keys[i].gen, memory_order_acquire);
            void (*d)(void *) = fls.keys[i].destructor;
            void *v = l->value;
            l->value = NULL;
            if (l->gen == g && (g & 1) && d) {
                d(v);
                any = true;
            }
        }
        if (!any)
            break;
    }
    free(f->locals);
    f->locals = NULL;
}
