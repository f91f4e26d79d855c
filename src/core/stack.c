/*
 * Fiber stacks (docs/design.md, decision 4).
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
 * An overflow faults in the guard; the SIGSEGV handler runs on a per-thread alternate stack, finds the
 * stack by the fault's address (the chunk that holds it, the slot in the chunk, the header at the slot's
 * top, which names the fiber), and prints the fiber's name, id and stack size, with how to raise it, then
 * aborts. By address, not by the thread's current fiber: after the monitor hands a worker to a fresh
 * thread, the stuck fiber's thread no longer runs that worker, and in the middle of a switch the worker's
 * current fiber is already the next one. A fault anywhere else is passed on to the handler that was
 * installed before weft's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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
    int handlers;
    struct sigaction old_segv, old_bus;
} stacks = {.lock = PTHREAD_MUTEX_INITIALIZER, .guard_install = -1};

#define BATCH 16u            /* stacks moved at once between a worker's cache and the pool */
#define TRIM_BATCH 256u      /* stacks given back to the kernel at once */

/* Bounds of a weft kernel thread's own stack, for overflow reports. */
static __thread struct {
    char *lo;
    size_t size, guard;
} tls_thread_stack __attribute__((tls_model("initial-exec")));

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

/* ------------------------------------------------------------------------------------------------ */
/* Overflow reports                                                                                  */

static size_t fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static size_t fmt_hex(char *buf, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    buf[0] = '0';
    buf[1] = 'x';
    for (size_t i = 0; i < n; i++)
        buf[2 + i] = tmp[n - 1 - i];
    return n + 2;
}

typedef struct {
    char buf[1024];
    size_t len;
} msgbuf;

static void put(msgbuf *m, const char *s)
{
    while (*s && m->len < sizeof m->buf)
        m->buf[m->len++] = *s++;
}

static void put_u64(msgbuf *m, uint64_t v)
{
    char t[24];
    size_t n = fmt_u64(t, v);
    for (size_t i = 0; i < n && m->len < sizeof m->buf; i++)
        m->buf[m->len++] = t[i];
}

static void put_hex(msgbuf *m, uintptr_t v)
{
    char t[24];
    size_t n = fmt_hex(t, v);
    for (size_t i = 0; i < n && m->len < sizeof m->buf; i++)
        m->buf[m->len++] = t[i];
}

static void put_size(msgbuf *m, size_t bytes)
{
    if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) {
        put_u64(m, bytes >> 20);
        put(m, " MiB");
    } else if (bytes >= 1024 && bytes % 1024 == 0) {
        put_u64(m, bytes >> 10);
        put(m, " KiB");
    } else {
        put_u64(m, bytes);
        put(m, " bytes");
    }
}

WEFT__NO_TSAN static _Noreturn void report_overflow(const weft__fiber *f, const char *what, char *lo, size_t size,
                                      char *addr)
{
    msgbuf m = {.len = 0};
    put(&m, "weft: ");
    put(&m, what);
    put(&m, " ");
    /* named as weft__label does, which is not async-signal-safe: "name" (id 7), or 7 */
    if (f && (f->flags & WEFT__F_NAMED)) {
        put(&m, "\"");
        put(&m, f->name);
        put(&m, "\" (id ");
        put_u64(&m, f->id);
        put(&m, ") ");
    } else if (f) {
        put_u64(&m, f->id);
        put(&m, " ");
    }
    put(&m, "overflowed its stack of ");
    put_size(&m, size);
    put(&m, " (fault at ");
    put_hex(&m, (uintptr_t)addr);
    put(&m, ", ");
    put_u64(&m, (uint64_t)(lo - addr));
    put(&m, " bytes below the stack).\n");
    if (strcmp(what, "fiber") == 0)
        put(&m, "weft: give it a bigger stack: weft_attr_t.stack_size for this fiber, or "
                "weft_config_t.stack_size / WEFT_STACK_SIZE=<bytes, e.g. 1M> for every fiber.\n");
    else
        put(&m, "weft: give it a bigger stack with weft_attr_t.stack_size.\n");
    ssize_t r = write(STDERR_FILENO, m.buf, m.len);
    (void)r;
    abort();
}

static void chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *old = sig == SIGBUS ? &stacks.old_bus : &stacks.old_segv;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, si, uc);
    } else if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN) {
        /* the default action: returning re-runs the faulting instruction, which now kills us */
        signal(sig, SIG_DFL);
    } else {
        old->sa_handler(sig);
    }
}

/* The fiber stack whose guard holds addr, or NULL. Chunks are only ever added, at the head, until the
 * runtime's last shutdown unmaps them: a walk without the lock sees a complete list. */
WEFT__NO_TSAN static weft__stack *stack_of_guard(char *addr)
{
    for (chunk *c = atomic_load_explicit(&stacks.chunks, memory_order_acquire); c; c = c->next) {
        if (addr < c->base || addr >= c->base + c->len)
            continue;
        size_t off = (size_t)(addr - c->base) % c->slot;
        return off < GUARD_SIZE ? header_of(addr - off, c->slot - GUARD_SIZE) : NULL;
    }
    return NULL;
}

/* Not instrumented by TSan: it runs inside whichever fiber faulted, and only reads. */
WEFT__NO_TSAN static void on_fault(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    char *addr = si->si_addr;
    weft__stack *s = stack_of_guard(addr);
    /* a fiber that overflowed is running on it: its owner's stack is this one (descriptors are
     * type-stable, so reading a stale owner is safe; a fault in the guard of a stack no fiber runs on is
     * a wild pointer, passed on) */
    if (s && s->owner && s->owner->stack == s)
        report_overflow(s->owner, "fiber", s->lo, s->cls, addr);
    weft__worker *w = weft__tls_worker;
    if (!w && tls_thread_stack.lo) {
        char *lo = tls_thread_stack.lo;
        if (addr < lo && addr >= lo - tls_thread_stack.guard)
            report_overflow(weft__tls_self, "thread", lo, tls_thread_stack.size, addr);
    }
    errno = saved;
    chain(sig, si, uc);
}

void weft__thread_stack_note(weft__fiber *f)
{
    pthread_attr_t a;
    int r = pthread_getattr_np(pthread_self(), &a);
    if (r != 0) {
        /* the C library needs memory to tell a thread where its stack is (ENOMEM), and nothing else
         * tells: the thread runs, but an overflow of its own stack would end the process as a plain
         * SIGSEGV, so say so now, by name */
        char label[64], msg[256];
        weft__tsan_internal_begin();
        weft__label(f, label, sizeof label);
        weft__tsan_internal_end();
        int n = snprintf(msg, sizeof msg,
                         "weft: thread %s: the C library could not tell where its stack is (%s): an overflow of "
                         "its stack will not be reported\n",
                         label, strerror(r));
        if (n > 0)
            fwrite(msg, 1, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, stderr);
        return;
    }
    void *lo;
    size_t size, guard_size = 0;
    if (pthread_attr_getstack(&a, &lo, &size) == 0) {
        pthread_attr_getguardsize(&a, &guard_size);
        tls_thread_stack.lo = lo;
        tls_thread_stack.size = size;
        tls_thread_stack.guard = guard_size ? guard_size : weft__page_size();
    }
    pthread_attr_destroy(&a);
}

static size_t altstack_size(void)
{
    size_t size = 64 << 10;
    if ((size_t)SIGSTKSZ > size)
        size = SIGSTKSZ;
    return size;
}

/* Made by the thread's creator before the thread exists, so that no memory for it is the creator's
 * error to return, with nothing started: a thread that made its own could only run without one, and
 * an overflow on it would end the process as a bare SIGSEGV. */
void *weft__altstack_new(void)
{
    void *p = mmap(NULL, altstack_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void weft__altstack_install(void *mem)
{
    stack_t ss = {.ss_sp = mem, .ss_size = altstack_size(), .ss_flags = 0};
    sigaltstack(&ss, NULL); /* fails only for a bad size, or on the signal stack itself */
}

void weft__altstack_remove(void *mem)
{
    if (!mem)
        return;
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    munmap(mem, altstack_size());
}

void weft__altstack_free(void *mem)
{
    if (mem)
        munmap(mem, altstack_size());
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
    if (!stacks.handlers) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &stacks.old_segv);
        sigaction(SIGBUS, &sa, &stacks.old_bus);
        stacks.handlers = 1;
    }
    pthread_mutex_unlock(&stacks.lock);
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
