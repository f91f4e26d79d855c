/*
 * Fiber descriptors: the pool they come from and go back to, handles and their lookup. The fiber API
 * on top is spawn.c, join.c (finishing, join, detach), identity.c and local.c (fiber-local storage).
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

#include "core/desc.h"
#include "core/internal.h"
#include "core/wait.h"
#include "obs/sanitize.h"

#define SLAB_SHIFT 10
#define SLAB_N (1u << SLAB_SHIFT)
#define SLABS_MAX (1u << 16) /* 64M descriptors */
#define ID_BLOCK 256u


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
void weft__desc_pool_put(weft__fiber *list, uint32_t n)
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
weft__fiber *weft__desc_pool_take(uint32_t *n, bool one)
{
    for (;;) {
        weft__spin_lock(&descs.lock);
        weft__fiber *b = descs.batches;
        if (b) {
            descs.batches = batch_next(b);
            weft__spin_unlock(&descs.lock);
            *n = b->stack_size;
            if (one && b->link) {
                weft__desc_pool_put(b->link, *n - 1);
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


weft__fiber *weft__desc_alloc(weft__worker *w)
{
    weft__tsan_internal_begin();
    weft__fiber *f = weft__desc_alloc_inline(w);
    weft__tsan_internal_end();
    return f;
}


void weft__desc_free(weft__worker *w, weft__fiber *f)
{
    weft__tsan_internal_begin();
    weft__desc_free_inline(w, f);
    weft__tsan_internal_end();
}

void weft__desc_cache_flush(weft__worker *w)
{
    if (w->desc_free)
        weft__desc_pool_put(w->desc_free, w->desc_nfree);
    if (w->desc_out)
        weft__desc_pool_put(w->desc_out, w->desc_nout);
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
