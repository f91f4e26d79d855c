/*
 * Timers: one binary min-heap per worker, keyed on the deadline of the fiber's current wait.
 *
 * Only the owner worker touches its heap, so there is no lock. That is possible because a fiber that
 * waits with a deadline is parked on its own worker (a started fiber stays there), and a fiber removes
 * its own timer when it wakes for any other reason (weft__park), so a heap entry is never stale.
 * A timer never fires early: it fires when the clock reads at least its deadline.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

static inline void place(weft__fiber **h, uint32_t i, weft__fiber *f)
{
    h[i] = f;
    f->timer_idx = i;
}

/* The checker (WEFT_DEBUG 3): every entry knows its place, no parent is later than its child, the
 * published first deadline is the root's, and the heap fits its allocation. Up to WEFT__CHECK_MAX
 * entries. */
static inline bool heap_valid(weft__worker *w)
{
    if (w->heap_len > w->heap_cap)
        return false;
    uint32_t n = w->heap_len < WEFT__CHECK_MAX ? w->heap_len : WEFT__CHECK_MAX;
    for (uint32_t i = 0; i < n; i++) {
        weft__fiber *f = w->heap[i];
        if (!f || f->timer_idx != i)
            return false;
        if (i > 0 && w->heap[(i - 1) / 2]->timer_when > f->timer_when)
            return false;
    }
    return atomic_load_explicit(&w->timer_first, memory_order_relaxed) == weft__timer_next(w);
}

/* After every change to the heap: the monitor reads this copy of its first deadline, never the heap */
static inline void publish_first(weft__worker *w)
{
    atomic_store_explicit(&w->timer_first, weft__timer_next(w), memory_order_relaxed);
}

static void sift_up(weft__fiber **h, uint32_t i)
{
    weft__fiber *f = h[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (h[p]->timer_when <= f->timer_when)
            break;
        place(h, i, h[p]);
        i = p;
    }
    place(h, i, f);
}

static void sift_down(weft__fiber **h, uint32_t n, uint32_t i)
{
    weft__fiber *f = h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1]->timer_when < h[c]->timer_when)
            c++;
        if (f->timer_when <= h[c]->timer_when)
            break;
        place(h, i, h[c]);
        i = c;
    }
    place(h, i, f);
}

int weft__timer_add(weft__worker *w, weft__fiber *f)
{
    if (w->heap_len == w->heap_cap) {
        uint32_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        weft__fiber **n = realloc(w->heap, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        w->heap = n;
        w->heap_cap = cap;
    }
    uint32_t i = w->heap_len++;
    w->fast_until = 0; /* a yield must take the full pick, which runs timers (sched.c, fast_refresh) */
    w->heap[i] = f;
    sift_up(w->heap, i);
    publish_first(w);
    weft__check(heap_valid(w));
    return 0;
}

void weft__timer_del(weft__worker *w, weft__fiber *f)
{
    uint32_t i = f->timer_idx;
    if (i == WEFT__TIMER_NONE)
        return;
    weft__dassert(i < w->heap_len && w->heap[i] == f);
    f->timer_idx = WEFT__TIMER_NONE;
    uint32_t last = --w->heap_len;
    if (i != last) {
        weft__fiber *m = w->heap[last];
        place(w->heap, i, m);
        if (i > 0 && w->heap[(i - 1) / 2]->timer_when > m->timer_when)
            sift_up(w->heap, i);
        else
            sift_down(w->heap, w->heap_len, i);
    }
    publish_first(w);
    weft__check(heap_valid(w) && f->timer_idx == WEFT__TIMER_NONE);
}

int weft__timer_run(weft__worker *w, int64_t now)
{
    int n = 0;
    while (w->heap_len && w->heap[0]->timer_when <= now) {
        weft__fiber *f = w->heap[0];
        weft__timer_del(w, f);
        /* the wait's token is the sequence in its park word; a fiber whose wait was already won by
         * another waker simply loses nothing here */
        uint32_t pw = atomic_load_explicit(&f->park, memory_order_relaxed);
        if (WEFT__PW_STATE(pw) == WEFT__PW_WAITING && weft__unpark_fifo(f, WEFT__PW_SEQ(pw), WEFT__PW_TIMEOUT))
            n++;
    }
    return n;
}

void weft__timer_fini(weft__worker *w)
{
    free(w->heap);
    w->heap = NULL;
    w->heap_len = w->heap_cap = 0;
    publish_first(w);
}

int weft_sleep_until(int64_t deadline)
{
    if (deadline == WEFT_NOWAIT)
        return 0;
    weft__tsan_internal_begin();
    weft__worker *w = weft__enter();
    weft__fiber *self = w ? w->face.cur : NULL;
    bool fiber = self && self->kind == WEFT__KIND_FIBER;
    weft__leave();
    weft__tsan_internal_end();
    if (!fiber) {
        /* a weft thread has a handle, so it can be cancelled: it sleeps on its park word */
        self = weft__self_if_any();
        fiber = self && self->kind == WEFT__KIND_THREAD;
    }
    if (fiber) {
        if (deadline > 0 && deadline <= weft__clock_ns())
            return 0;
        uint32_t tok = weft__park_prepare(self, WEFT__WAIT_SLEEP, NULL);
        int r = weft__park(self, tok, deadline);
        return r == -ETIMEDOUT ? 0 : r;
    }
    /* a thread: the kernel sleeps it, and a signal does not cut the sleep short */
    if (deadline < 0) {
        for (;;)
            pause();
    }
    int64_t d = deadline - 1; /* weft__clock_ns adds 1 */
    struct timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
    return 0;
}

int weft_sleep(int64_t ns)
{
    return weft_sleep_until(weft_deadline_in(ns));
}
