/*
 * Spawning: weft_spawn and weft_go, from a worker, a weft thread or any other thread.
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
    } else if (!(f = weft__desc_alloc_inline(w))) {
        weft__tsan_internal_end();
        return -ENOMEM;
    }
    f->kind = WEFT__KIND_FIBER;
    f->fn = fn;
    f->arg = arg;
    f->stack_size = (uint32_t)(stack ? weft__stack_round(stack * WEFT_SAN_STACK_FACTOR) : weft__rt_g.stack_size);
    f->start_err = 0;
    f->flags = detached ? WEFT__F_DETACHED : 0;
    f->id = weft__next_id_inline(w);
    if (WEFT__UNLIKELY(name != NULL))
        weft__set_name(f, name);
    atomic_store_explicit(&f->join, detached ? WEFT__JW_DETACHED : 0, memory_order_relaxed);
    weft_fiber_t h = weft__handle(f);
    weft__tsan_internal_end();
    weft__tsan_release(f); /* the spawner's past happens before the fiber */
    weft__tsan_internal_begin();
    weft__quiesce_spawned(w);
    int r = weft__submit_new(w, f);
    if (WEFT__UNLIKELY(r < 0)) { /* nothing was queued: undo, the fiber never existed */
        weft__quiesce_unspawned(w);
        weft__desc_free_inline(w, f);
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

