/*
 * The platform contract (mimalloc's prim.h): what weft needs from the machine and the OS, below
 * everything else. src/platform implements it and includes nothing of core; core, sync, chan and io
 * build on it. The clock, the futex, the page size, the CPUs this process may use, and the spin
 * primitives every short wait in weft uses.
 */
#ifndef WEFT_PLATFORM_PRIM_H
#define WEFT_PLATFORM_PRIM_H

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/sanitize.h"

#define WEFT__CACHELINE 64
#define WEFT__LIKELY(x) __builtin_expect(!!(x), 1)
#define WEFT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT__NOINLINE __attribute__((noinline))

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* One wait of a thread that spins for a lock whose holder never parks: pauses that double from 1 to 32,
 * since every look at the lock's line takes it from the holder's core, and a taker that looks less often
 * lets the holder get on (a channel shared by fibers on 2 workers: 64 ns per element with one pause per
 * look, 34 with this); after 64 rounds, sched_yield, since the holder's thread may have been preempted. */
static inline void weft__spin_backoff(unsigned *round)
{
    if (*round < 64) {
        for (unsigned i = 0, n = 1u << (*round < 5 ? *round : 5); i < n; i++)
            weft__cpu_relax();
        ++*round;
    } else {
        sched_yield();
    }
}

/* Internal spinlock for short critical sections that never park. */
typedef struct {
    _Atomic uint32_t v;
} weft__spinlock;
void weft__spin_lock_slow(weft__spinlock *l);
static inline void weft__spin_lock(weft__spinlock *l)
{
    if (WEFT__LIKELY(!atomic_exchange_explicit(&l->v, 1, memory_order_acquire)))
        return;
    weft__spin_lock_slow(l);
}
static inline void weft__spin_unlock(weft__spinlock *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* errno, read where TSan does not look. The fibers of a worker share its thread's errno; TSan sees each
 * fiber as a thread of its own and would call their uses of it a race. weft never writes errno. */
static inline int weft__errno(void)
{
    weft__tsan_internal_begin();
    int e = errno;
    weft__tsan_internal_end();
    return e;
}

/* Monotonic nanoseconds (CLOCK_MONOTONIC). */
int64_t weft__clock_ns(void);
int weft__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline);
void weft__futex_wake(_Atomic uint32_t *addr, int n);
int weft__cpu_count(void);   /* CPUs this process may use: affinity, capped by the cgroup quota */
size_t weft__page_size(void);
/* Parse a size like "256k", "1M", "65536"; 0 on error. */
size_t weft__parse_size(const char *s);

/* CPUs in this process's affinity mask. */
int weft__affinity_count(void);
/* CPU quota of this process's cgroups in CPUs (1.5 = one and a half), 0 when none is set. */
double weft__cgroup_cpu_quota(void);
/* The same from other files than /proc/self/{mountinfo,cgroup} (for tests). */
double weft__cgroup_cpu_quota_at(const char *mountinfo, const char *cgroup);

#endif /* WEFT_PLATFORM_PRIM_H */
