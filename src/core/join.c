/*
 * Finishing and joining: a fiber's end published to its join word, weft_join, weft_detach, and the join
 * as a case of weft_select_any. The join word (internal.h) decides between a finishing fiber and its
 * joiner with one exchange (the essay at the top of fiber.c).
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
        weft__desc_free_inline(w, f);
    } else if (j != 0) {
        weft__wnode *n = (weft__wnode *)j;
        if (weft__wnode_claim(n))
            weft__wait_wake(n->w, true);
        else
            weft__wnode_release(n); /* our last touch of it */
    }
    if (fiber)
        weft__quiesce_exited(w);
    weft__tsan_internal_end();
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
            weft__desc_free_inline(NULL, f);
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
    weft__desc_free_inline(weft__enter(), f);
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
        weft__desc_free_inline(weft__enter(), f);
        weft__leave();
        weft__tsan_internal_end();
        return 0;
    }
    return -EINVAL; /* detached already, or being joined */
}

