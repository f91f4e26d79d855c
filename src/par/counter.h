/*
 * The sharded counter's layout, for counter.c and the tests that look at its slots. Nothing here is
 * public.
 */
#ifndef WEFT_PAR_COUNTER_H
#define WEFT_PAR_COUNTER_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/park.h"

/* Slots for threads that are on no worker (plain threads, weft threads, a fiber whose thread lost its
 * worker to the monitor), picked by a hash of the thread. */
#define WEFT__SHARD_OTHER 8

typedef struct weft__shard {
    _Alignas(WEFT__CACHELINE) _Atomic int64_t v;
} weft__shard;

struct weft_sharded_counter {
    /* Worker slots [0, nworker) may be non-zero; a load sums only those, so that a counter costs what
     * the workers that used it touched, not all WEFT__MAX_WORKERS slots. Raised (never lowered) by the
     * first add from a worker past it; any thread, atomic, relaxed. */
    _Alignas(WEFT__CACHELINE) _Atomic uint32_t nworker;
    /* Any thread adds (atomic, relaxed); every slot alone on its cache line. */
    weft__shard other[WEFT__SHARD_OTHER];
    /* worker[i]: the fibers of worker i add here (atomic, relaxed: see counter.c for why not plain). */
    weft__shard worker[WEFT__MAX_WORKERS];
};

/* The slot an add from the calling thread goes to. */
_Atomic int64_t *weft__sharded_counter_slot(weft_sharded_counter_t *c);

#endif /* WEFT_PAR_COUNTER_H */
