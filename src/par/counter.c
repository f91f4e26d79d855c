/*
 * Counters: weft_counter_t, one atomic alone on a cache line, and weft_sharded_counter_t, one slot per
 * worker so that adds from different workers never touch the same line.
 *
 * Memory ordering: relaxed, everywhere. A counter counts; it does not publish anything else. Every add
 * is an atomic read-modify-write, so no add is ever lost, whatever the ordering; code that needs "the
 * data is ready when the count says so" must use a lock, a channel or a wait group, as with Go's
 * sync/atomic counters used as counters. A load after the adders have finished and been joined (or
 * otherwise synchronised with) sees every add: happens-before carries coherence.
 *
 * The sharded counter. An add from a fiber goes to its worker's slot: the worker's fibers run one at a
 * time, so the line stays in that CPU's cache and nobody contends for it. Threads on no worker (plain
 * threads, weft threads) share WEFT__SHARD_OTHER more slots, picked by a hash of the thread. A load sums
 * the other slots and the worker slots that have ever been used (nworker), reading each once: while adds
 * go on, it sees some of them and not others, a value between the sums before and after (for adds of
 * one sign). The sum is taken in unsigned arithmetic: slots may wrap on their own, the total is what
 * counts.
 *
 * Why a worker slot is still added to with a locked instruction, not a plain load and store as a worker
 * counts its own switches: a signal handler on the worker's thread may add in the middle of an add, and
 * the worker index is only where an add should go, not a claim: once read, the monitor may hand the
 * worker to a fresh thread whose fibers add to the same slot while this thread (now running its stuck
 * fiber alone) finishes its add. Uncontended, the locked add costs a few ns more; contention is what
 * the shards remove.
 *
 * Why one slot per possible worker (WEFT__MAX_WORKERS, about 66 KiB a counter) rather than per worker
 * of the runtime that runs now: a counter may be made before the runtime starts, or outlive it and see
 * a restart with more workers. The slots past nworker are never read, so a load costs what was used.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/park.h"
#include "par/counter.h"

_Static_assert(sizeof(weft_counter_t) == WEFT__CACHELINE && _Alignof(weft_counter_t) == WEFT__CACHELINE,
               "weft_counter_t should be one cache line");
_Static_assert(sizeof(weft__shard) == WEFT__CACHELINE, "a shard should be one cache line");

/* weft_counter_t holds a plain int64_t so that weft.h stays usable from C++; the GCC/Clang __atomic
 * builtins are the C11 atomics for objects not declared _Atomic (and TSan knows them). */
int64_t weft_counter_add(weft_counter_t *c, int64_t n)
{
    return __atomic_add_fetch(&c->value_, n, __ATOMIC_RELAXED); /* wraps, as C11 atomics do */
}

int64_t weft_counter_load(const weft_counter_t *c)
{
    return __atomic_load_n(&c->value_, __ATOMIC_RELAXED);
}

void weft_counter_store(weft_counter_t *c, int64_t v)
{
    __atomic_store_n(&c->value_, v, __ATOMIC_RELAXED);
}

int weft_sharded_counter_new(weft_sharded_counter_t **out)
{
    if (!out)
        return -EINVAL;
    weft_sharded_counter_t *c = aligned_alloc(_Alignof(weft_sharded_counter_t), sizeof *c);
    if (!c)
        return -ENOMEM;
    memset(c, 0, sizeof *c); /* every slot starts at 0; nobody else sees it yet */
    *out = c;
    return 0;
}

void weft_sharded_counter_free(weft_sharded_counter_t *c)
{
    free(c);
}

static WEFT__NOINLINE void raise_nworker(weft_sharded_counter_t *c, uint32_t n)
{
    uint32_t cur = atomic_load_explicit(&c->nworker, memory_order_relaxed);
    while (cur < n &&
           !atomic_compare_exchange_weak_explicit(&c->nworker, &cur, n, memory_order_relaxed, memory_order_relaxed))
        ;
}

_Atomic int64_t *weft__sharded_counter_slot(weft_sharded_counter_t *c)
{
    int i = weft__worker_index();
    if (WEFT__LIKELY(i >= 0 && i < WEFT__MAX_WORKERS)) {
        /* before the add: a load that sees the add through happens-before sees the raise too */
        if (WEFT__UNLIKELY((uint32_t)i >= atomic_load_explicit(&c->nworker, memory_order_relaxed)))
            raise_nworker(c, (uint32_t)i + 1);
        return &c->worker[i].v;
    }
    /* every thread has a TLS block of its own: its address names the thread. The blocks of threads lie
     * a stack size apart, a stride a plain multiplicative hash keeps in step with the slot count, so mix
     * all the bits (MurmurHash3's finaliser) */
    uint64_t h = (uint64_t)(uintptr_t)weft__tls();
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return &c->other[h % WEFT__SHARD_OTHER].v;
}

void weft_sharded_counter_add(weft_sharded_counter_t *c, int64_t n)
{
    atomic_fetch_add_explicit(weft__sharded_counter_slot(c), n, memory_order_relaxed);
}

int64_t weft_sharded_counter_load(const weft_sharded_counter_t *c)
{
    uint64_t sum = 0;
    for (int i = 0; i < WEFT__SHARD_OTHER; i++)
        sum += (uint64_t)atomic_load_explicit(&c->other[i].v, memory_order_relaxed);
    uint32_t n = atomic_load_explicit(&c->nworker, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        sum += (uint64_t)atomic_load_explicit(&c->worker[i].v, memory_order_relaxed);
    return (int64_t)sum;
}
