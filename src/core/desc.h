/*
 * Fiber descriptors, for the files that make, finish and free them (fiber.c owns the pool; spawn.c,
 * join.c and identity.c use these): the per-worker cache's fast paths, inline where spawning and joining
 * are timed. The pool's design is the essay at the top of fiber.c.
 */
#ifndef WEFT_CORE_DESC_H
#define WEFT_CORE_DESC_H

#include "core/internal.h"

#define DESC_BATCH 64u       /* descriptors moved at once between a worker and the pool */
#define WORKER_DESC_MAX 128u /* free descriptors a worker keeps for its own spawns */

/* The pool behind the caches (fiber.c): a list of n descriptors, or up to a batch (one: just one). */
void weft__desc_pool_put(weft__fiber *list, uint32_t n);
weft__fiber *weft__desc_pool_take(uint32_t *n, bool one);

static inline weft__fiber *weft__desc_alloc_inline(weft__worker *w)
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
            } else if ((w->desc_free = weft__desc_pool_take(&n, false))) {
                w->desc_nfree = n;
            }
        }
        f = w->desc_free;
        if (!f)
            return NULL;
        w->desc_free = f->link;
        w->desc_nfree--;
    } else if (!(f = weft__desc_pool_take(&n, true))) {
        return NULL;
    }
    /* No reset here: a descriptor is freed clean. Its stack and TSan fiber were cleared when it finished,
     * its fiber-local storage destroyed, its park word left RUNNING, its timer off the heap, its wait
     * reason cleared; the fields a new user needs (kind, function, join word, name...) it sets itself. */
    weft__dassert(!f->stack && !f->tsan_fiber && !f->locals && f->timer_idx == WEFT__TIMER_NONE &&
                  WEFT__PW_STATE(atomic_load_explicit(&f->park, memory_order_relaxed)) == WEFT__PW_RUNNING);
    return f;
}

static inline void weft__desc_free_inline(weft__worker *w, weft__fiber *f)
{
    /* a handle forged for the next generation must not find a joinable fiber here */
    f->kind = WEFT__KIND_FREE;
    uint32_t g = atomic_load_explicit(&f->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&f->gen, g ? g : 1, memory_order_release);
    if (WEFT__UNLIKELY(w == NULL)) {
        f->link = NULL;
        weft__desc_pool_put(f, 1);
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
        weft__desc_pool_put(w->desc_out, DESC_BATCH);
        w->desc_out = NULL;
        w->desc_nout = 0;
    }
}

static inline uint64_t weft__next_id_inline(weft__worker *w)
{
    if (WEFT__LIKELY(w && w->id_next != w->id_end))
        return w->id_next++;
    return weft__next_id(w);
}

/* Copy a fiber's name in (NULL or "": unnamed); identity.c. */
void weft__set_name(weft__fiber *f, const char *name);

#endif /* WEFT_CORE_DESC_H */
