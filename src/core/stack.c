/*
 * Fiber stacks, the allocator (docs/design.md, decision 4); their overflow report is overflow.c.
 *
 * The job: give a fiber that starts a stack of at least the size it asked for, fast, with a guard below
 * it that turns an overflow into a clear report instead of silent corruption of a neighbour, and keep a
 * million of them cheap.
 *
 * The approach:
 *  - Stacks are carved from chunks of about 32 MiB, reserved with one mmap (MAP_NORESERVE): memory is
 *    committed by the kernel page by page as a fiber touches it, so a fiber that never goes deeper than
 *    a few frames costs one page. A stack is handed out only when its fiber first runs, so a million
 *    fibers spawned and not yet started cost no stack at all.
 *  - Each stack has a guard region below it (64 KiB, so that a function with a large frame still lands
 *    in it). Linux 6.13+ installs guards with madvise(MADV_GUARD_INSTALL): no extra mapping, so the
 *    default vm.max_map_count (65530) does not cap the fiber count. Older kernels get mprotect(PROT_NONE),
 *    which splits the mapping: two mappings per stack, about 32,000 stacks at the default limit.
 *  - Freed stacks go to a small per-worker cache (default size only, no lock), then to a global pool per
 *    size. Past a bound, a pooled stack's memory is given back with MADV_DONTNEED (the address range
 *    stays reserved for reuse); chunks are unmapped when the runtime shuts down.
 *  - The stack's header (weft__stack) lives at the top of its own memory, in the page the fiber's first
 *    frames use anyway.
 *
 * Rejected: one mmap per stack (a syscall per fiber start, and mappings run out at 65530 without guard
 * installs); malloc'd stacks (no guard, no lazy commit); growing or copying stacks (C code keeps pointers
 * into its stack; a copied stack breaks them).
 *
 * An overflow faults in the guard below a stack: overflow.c reports it, finding the stack by address
 * (weft__stack_of_guard, below).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "obs/sanitize.h"

#if WEFT_ASAN
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define GUARD_SIZE ((size_t)64 << 10)
#define CHUNK_BYTES ((size_t)32 << 20)
#define WORKER_CACHE_MAX 32u  /* default-size stacks a worker keeps hot */
#define POOL_HOT_MAX 256u     /* stacks of one size the global pool keeps committed */
#define STACK_MIN ((size_t)16 << 10)
#define STACK_MAX ((size_t)1 << 30)

typedef struct chunk {
    struct chunk *next;      /* all chunks: for shutdown, and for the fault handler, which walks them
                              * without the lock (fixed once the chunk is published in stacks.chunks) */
    struct chunk *fresh_next;/* chunks that still have never-used slots */
    char *base;
    size_t len, slot;
    uint32_t n, used;
} chunk;

typedef struct pool {
    struct pool *next;
    size_t size;             /* usable bytes */
    weft__stack *hot;        /* committed, header valid */
    uint32_t nhot;
    char **cold;             /* slot bases whose memory was given back */
    size_t ncold, capcold;
    size_t reserved;         /* room in `cold` promised to trims under way */
    chunk *fresh;            /* chunks with never-used slots */
} pool;

static struct {
    pthread_mutex_t lock;
    _Atomic int guard_install; /* 1: MADV_GUARD_INSTALL works; 0: mprotect; -1: mprotect until a
                              * start finds out (the probe could not run: no memory or no fd). Relaxed:
                              * guards of either kind are guards */
    pool *pools;
    _Atomic(chunk *) chunks; /* written under the lock, read by the fault handler without it */
} stacks = {.lock = PTHREAD_MUTEX_INITIALIZER, .guard_install = -1};

#define BATCH 16u            /* stacks moved at once between a worker's cache and the pool */
#define TRIM_BATCH 256u      /* stacks given back to the kernel at once */


size_t weft__stack_round(size_t size)
{
    size_t page = weft__page_size();
    if (size < STACK_MIN)
        size = STACK_MIN;
    if (size > STACK_MAX)
        size = STACK_MAX;
    return (size + page - 1) & ~(page - 1);
}

static size_t slot_bytes(size_t size)
{
    return GUARD_SIZE + size;
}

static int guard(char *slot)
{
    if (atomic_load_explicit(&stacks.guard_install, memory_order_relaxed) == 1) {
        if (madvise(slot, GUARD_SIZE, MADV_GUARD_INSTALL) == 0)
            return 0;
        if (errno != EINVAL)
            return -errno;
        atomic_store_explicit(&stacks.guard_install, 0, memory_order_relaxed); /* no guard installs after all */
    }
    return mprotect(slot, GUARD_SIZE, PROT_NONE) == 0 ? 0 : -errno;
}

/* Where the header of a slot's stack lives: at the top of the stack. */
static weft__stack *header_of(char *slot, size_t size)
{
    char *lo = slot + GUARD_SIZE;
    return (weft__stack *)(((uintptr_t)(lo + size) - sizeof(weft__stack)) & ~(uintptr_t)63);
}

/* Write the header of a slot's stack: the first touch of its top page. Never under the lock. */
static weft__stack *header_init(char *slot, size_t size)
{
    char *lo = slot + GUARD_SIZE;
    weft__stack *s = header_of(slot, size);
    s->next = NULL;
    s->owner = NULL;
    s->lo = lo;
    s->cls = (uint32_t)size;
    s->vg_id = weft__vg_stack_register(lo, s);
    return s;
}

/* A new chunk of slots with their guards, made without the lock (mmap and madvise are slow). */
static chunk *chunk_new(size_t size)
{
    size_t slot = slot_bytes(size);
    size_t n = CHUNK_BYTES / slot;
    if (n == 0)
        n = 1;
    chunk *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->slot = slot;
    c->n = (uint32_t)n;
    c->len = n * slot;
    c->base = mmap(NULL, c->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c->base == MAP_FAILED) {
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (guard(c->base + i * slot) < 0) {
            munmap(c->base, c->len);
            free(c);
            return NULL;
        }
    }
    return c;
}

/* Under the lock. */
static pool *pool_for(size_t size)
{
    for (pool *p = stacks.pools; p; p = p->next)
        if (p->size == size)
            return p;
    pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->size = size;
    p->next = stacks.pools;
    stacks.pools = p;
    return p;
}

/* Take up to n stacks of one size as a list (at least one, or NULL when out of memory). Slots that were
 * cold or never used get their header outside the lock. */
static weft__stack *stack_pool_take(size_t size, unsigned n)
{
    char *slots[BATCH];
    unsigned nslots = 0, got = 0;
    weft__stack *list = NULL;
    chunk *grown = NULL;
    if (n > BATCH)
        n = BATCH;
    for (;;) {
        pthread_mutex_lock(&stacks.lock);
        pool *p = pool_for(size);
        if (!p) {
            pthread_mutex_unlock(&stacks.lock);
            break;
        }
        if (grown) {
            grown->next = atomic_load_explicit(&stacks.chunks, memory_order_relaxed);
            atomic_store_explicit(&stacks.chunks, grown, memory_order_release); /* the fault handler's walk */
            grown->fresh_next = p->fresh;
            p->fresh = grown;
            grown = NULL;
        }
        while (got + nslots < n) {
            if (p->hot) {
                weft__stack *s = p->hot;
                p->hot = s->next;
                p->nhot--;
                s->next = list;
                list = s;
                got++;
            } else if (p->ncold) {
                slots[nslots++] = p->cold[--p->ncold];
            } else if (p->fresh) {
                chunk *c = p->fresh;
                slots[nslots++] = c->base + (size_t)c->used * c->slot;
                if (++c->used == c->n)
                    p->fresh = c->fresh_next;
            } else {
                break;
            }
        }
        pthread_mutex_unlock(&stacks.lock);
        if (got + nslots > 0 || !(grown = chunk_new(size)))
            break;
    }
    for (unsigned i = 0; i < nslots; i++) {
        weft__stack *s = header_init(slots[i], size);
        s->next = list;
        list = s;
    }
    return list;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (char *const *)a, y = (uintptr_t) * (char *const *)b;
    return x < y ? -1 : x > y;
}

/* Give the memory of these slots back to the kernel, one madvise per run of neighbours (a guard in the
 * middle of a run keeps its marker: guards survive MADV_DONTNEED). Without the lock. */
static void trim(char **slots, unsigned n, size_t size)
{
    qsort(slots, n, sizeof *slots, cmp_ptr);
    size_t slot = slot_bytes(size);
    for (unsigned i = 0; i < n;) {
        unsigned j = i + 1;
        while (j < n && slots[j] == slots[j - 1] + slot)
            j++;
        madvise(slots[i] + GUARD_SIZE, (size_t)(slots[j - 1] - slots[i]) + size, MADV_DONTNEED);
        i = j;
    }
}

/* Return a list of stacks of one size. Past the bound on committed stacks, a batch goes back to the
 * kernel. */
static void stack_pool_put(weft__stack *list, size_t size)
{
    char *slots[TRIM_BATCH];
    unsigned ntrim = 0;
    pthread_mutex_lock(&stacks.lock);
    pool *p = pool_for(size); /* found: the stacks came from it */
    while (list) {
        weft__stack *s = list;
        list = s->next;
        s->next = p->hot;
        p->hot = s;
        p->nhot++;
    }
    if (p->nhot >= POOL_HOT_MAX + TRIM_BATCH && p->capcold - p->ncold - p->reserved >= TRIM_BATCH) {
        p->reserved += TRIM_BATCH;
        while (ntrim < TRIM_BATCH) {
            weft__stack *s = p->hot;
            p->hot = s->next;
            p->nhot--;
            weft__vg_stack_deregister(s->vg_id);
            slots[ntrim++] = s->lo - GUARD_SIZE;
        }
    } else if (p->nhot >= POOL_HOT_MAX + TRIM_BATCH) {
        size_t cap = p->capcold ? p->capcold * 2 : 4096;
        char **c = realloc(p->cold, cap * sizeof *c);
        if (c) { /* trimmed on the next return */
            p->cold = c;
            p->capcold = cap;
        }
    }
    pthread_mutex_unlock(&stacks.lock);
    if (!ntrim)
        return;
    trim(slots, ntrim, size);
    pthread_mutex_lock(&stacks.lock);
    memcpy(p->cold + p->ncold, slots, ntrim * sizeof *slots); /* room was reserved above */
    p->ncold += ntrim;
    p->reserved -= ntrim;
    pthread_mutex_unlock(&stacks.lock);
}

weft__stack *weft__stack_get(weft__worker *w, size_t size)
{
    weft__stack *s;
    if (w && size == weft__rt_g.stack_size) {
        if (WEFT__UNLIKELY(!w->stack_free)) {
            w->stack_free = stack_pool_take(size, BATCH);
            for (weft__stack *t = w->stack_free; t; t = t->next)
                w->stack_nfree++;
        }
        s = w->stack_free;
        if (!s)
            return NULL;
        w->stack_free = s->next;
        w->stack_nfree--;
    } else {
        s = stack_pool_take(size, 1);
        if (!s)
            return NULL;
    }
#if WEFT_TSAN
    /* TSan would see the last fiber's frames and this one's as a race: give the stack fresh memory,
     * which also makes TSan forget what it knew of it. Without it, no stack: the old memory would make
     * TSan report a race that is not one, and a fixed mapping that fails may have unmapped the range
     * already. The slot is dropped (its chunk goes at shutdown). */
    {
        char *lo = s->lo;
        uint32_t cls = s->cls;
        weft__vg_stack_deregister(s->vg_id);
        if (mmap(lo, cls, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) ==
            MAP_FAILED)
            return NULL;
        s = header_init(lo - GUARD_SIZE, cls);
    }
#endif
#if WEFT_ASAN
    /* frames of the stack's last fiber left their redzones poisoned */
    ASAN_UNPOISON_MEMORY_REGION(s->lo, (size_t)((char *)s - s->lo));
#endif
    return s;
}

void weft__stack_put(weft__worker *w, weft__stack *s)
{
    if (w && s->cls == weft__rt_g.stack_size) {
        s->next = w->stack_free;
        w->stack_free = s;
        if (++w->stack_nfree < WORKER_CACHE_MAX)
            return;
        /* full: hand the older half to the pool in one go */
        weft__stack *keep = w->stack_free;
        for (unsigned i = 1; i < WORKER_CACHE_MAX - BATCH; i++)
            keep = keep->next;
        weft__stack *give = keep->next;
        keep->next = NULL;
        w->stack_nfree = WORKER_CACHE_MAX - BATCH;
        stack_pool_put(give, s->cls);
        return;
    }
    s->next = NULL;
    stack_pool_put(s, s->cls);
}

void weft__stack_cache_flush(weft__worker *w)
{
    if (w->stack_free)
        stack_pool_put(w->stack_free, weft__rt_g.stack_size);
    w->stack_free = NULL;
    w->stack_nfree = 0;
}

/* The fiber stack whose guard holds addr, or NULL. Chunks are only ever added, at the head, until the
 * runtime's last shutdown unmaps them: a walk without the lock sees a complete list. */
WEFT__NO_TSAN weft__stack *weft__stack_of_guard(char *addr)
{
    for (chunk *c = atomic_load_explicit(&stacks.chunks, memory_order_acquire); c; c = c->next) {
        if (addr < c->base || addr >= c->base + c->len)
            continue;
        size_t off = (size_t)(addr - c->base) % c->slot;
        return off < GUARD_SIZE ? header_of(addr - off, c->slot - GUARD_SIZE) : NULL;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------------ */

/* Does MADV_GUARD_INSTALL work here? The call succeeding is not proof (an emulator may accept and ignore
 * it): check that the kernel now refuses to read the page, with a write() from it into a pipe, which
 * fails with EFAULT instead of faulting. 1 or 0; -1 when it could not look (no page or no pipe to look
 * with): the next start looks again, since deciding "no" for good would cap this process's fibers at
 * the map count for the sake of one failed mmap. */
static int probe_guard_install(void)
{
    size_t page = weft__page_size();
    char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    int works = 0, fds[2];
    if (madvise(p, page, MADV_GUARD_INSTALL) != 0)
        works = errno == EINVAL ? 0 : -1; /* EINVAL: a kernel without it */
    else if (pipe2(fds, O_CLOEXEC) != 0)
        works = -1;
    else {
        works = write(fds[1], p, 1) < 0 && errno == EFAULT;
        close(fds[0]);
        close(fds[1]);
    }
    munmap(p, 2 * page);
    return works;
}

int weft__stack_global_init(void)
{
    pthread_mutex_lock(&stacks.lock);
    if (atomic_load_explicit(&stacks.guard_install, memory_order_relaxed) < 0)
        atomic_store_explicit(&stacks.guard_install, probe_guard_install(), memory_order_relaxed);
    pthread_mutex_unlock(&stacks.lock);
    weft__overflow_install();
    return 0;
}

int weft__stack_guard_install_works(void)
{
    return atomic_load_explicit(&stacks.guard_install, memory_order_relaxed) == 1;
}

/* All stacks are back (every fiber finished, every worker flushed its cache): unmap everything. */
void weft__stack_global_fini(void)
{
    pthread_mutex_lock(&stacks.lock);
    for (pool *p = stacks.pools, *n; p; p = n) {
        n = p->next;
        for (weft__stack *s = p->hot; s; s = s->next)
            weft__vg_stack_deregister(s->vg_id);
        free(p->cold);
        free(p);
    }
    stacks.pools = NULL;
    chunk *c = atomic_exchange_explicit(&stacks.chunks, NULL, memory_order_relaxed);
    for (chunk *n; c; c = n) {
        n = c->next;
        munmap(c->base, c->len);
        free(c);
    }
    pthread_mutex_unlock(&stacks.lock);
}
