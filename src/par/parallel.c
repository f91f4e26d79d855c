/*
 * Parallel loops: weft_parallel_for and weft_parallel_reduce.
 *
 * The job: run a body over [begin, end) on every worker, with no more fibers than it takes to keep them
 * busy, and return once every index is done.
 *
 * Glossary. A task is a sub-range and the fiber that runs it. A leaf is a sub-range of at most `grain`
 * indices, handed to the body whole. The left spine of a task is the chain of left halves it splits off
 * and keeps for itself.
 *
 * The approach: recursive binary splitting, as in Cilk, TBB's simple_partitioner and Rayon's join. A task
 * whose range has more than `grain` indices splits it at the midpoint, spawns a fiber for the right half,
 * goes on with the left half itself, and joins that fiber at the end. New fibers wait in their spawner's
 * deque, where idle workers steal them oldest (hence biggest) first, while the spawner goes depth-first
 * into ever smaller left halves. weft steals only fibers that have not started, which is exactly what
 * these right halves are.
 *
 * The split depends on (begin, end, grain) alone, never on who ran what: a leaf gets at most grain
 * indices and, when the range had more, at least grain / 2. Grain 0 picks ceil(n / (8 * workers)), which
 * makes 8 to 16 leaves per worker (binary splitting rounds the leaf count up to about a power of two):
 * slack enough for stealing to even out bodies of uneven cost, few enough that a spawn (about 70 ns)
 * stays far below the work. With one worker, grain 0 means one leaf, and no task ever spawns: an
 * explicit grain still bounds what the body gets, but the leaves run one after the other in the caller.
 *
 * Nesting: a join parks the fiber, not its worker, so a body may run another loop. The inner loop's
 * fibers go to the same deques, and the outer task that waits for them holds no worker meanwhile.
 *
 * Reduce follows the same tree. A task's result is its left half's result (into) joined with its right
 * half's (from); a leaf starts from a copy of identity. Every node joins the same two results in the same
 * order whatever ran where, so a floating-point sum comes out bit for bit the same on every run with the
 * same range and grain (with grain 0: and the same worker count). A task keeps the results of the right
 * halves it spawned until it joins them, one per split of its left spine: on its stack when they fit in
 * ACC_INLINE bytes, else in one malloc per task.
 *
 * Failures. A spawn that fails (no memory for a descriptor, or no stack when the fiber was to start,
 * which its join reports as -ENOMEM) does not fail the loop: the task runs that half itself, split the
 * same way, so a reduce still joins in the same order. Only a reduce's malloc can fail the call: the
 * error is recorded, the leaves not yet run are skipped and no result is joined any more (some are
 * missing), and the call returns -ENOMEM with *acc untouched. From a plain thread the top task runs as a
 * fiber; if that fiber cannot be had, the thread runs the top task itself. So weft_parallel_for never
 * fails once it has started.
 *
 * Rejected:
 *  - Static chunks, one per worker: a slow chunk (or a worker busy with other fibers) leaves the rest
 *    idle at the end, and a nested loop would have nothing to spread its work with.
 *  - A shared index that workers claim chunks from (OpenMP's dynamic schedule): every claim bounces one
 *    cache line between all workers, and a reduce's joins would follow the timing.
 *  - Splitting only when a thief asks (lazy binary splitting, Rayon's adaptive splitter): fewer spawns,
 *    but a running fiber cannot be split from outside in weft, and again the tree, hence a reduce's
 *    result, would follow the timing.
 *  - A wait group per task instead of a join per half: a task joins its halves' results innermost first
 *    anyway, and joining a fiber that has finished costs no more than a wait group's done.
 *
 * Memory ordering: what a task wrote (its leaves' side effects, its result) happens before its spawner's
 * join returns (weft_join); the spawn publishes the task record to the fiber. `err` is relaxed: a result
 * is left unmade only by a task that set err or read it set, and that task's end happens before anyone
 * looks at the result (through the joins, or program order when it ran inline), so by coherence whoever
 * looks reads err set as well, and skips the join.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/park.h"

#define LEAVES_PER_WORKER 8
/* Partial results a task keeps on its stack, bytes; beyond, it mallocs them. Enough for a few scalars
 * per level of a deep split, small enough for any fiber stack. */
#define ACC_INLINE 256

/* One call. Written by the caller before the first spawn (which publishes it), read-only after, but
 * for err. Lives in the caller's frame: every task is joined before the call returns. */
typedef struct par_job {
    weft_for_body body;      /* weft_parallel_for; NULL for a reduce */
    weft_reduce_body rbody;  /* weft_parallel_reduce */
    weft_reduce_join join;
    const void *identity;
    void *arg;
    size_t acc_size;
    size_t stride;           /* acc_size rounded up to max_align_t: the spacing of partial results */
    uint64_t grain;          /* >= 1: leaves have at most this many indices */
    bool spawn;              /* false with one worker: the same split, all of it in the caller */
    _Atomic int err;         /* reduce: 0, or -ENOMEM once a result had nowhere to go; any task, relaxed */
} par_job;

/* A right half handed to a fiber. Lives in its spawner's frame until the spawner has joined it. */
typedef struct par_task {
    par_job *job;
    int64_t lo, hi;
    void *acc; /* reduce: where the half's result goes, in the spawner's memory */
} par_task;

static const weft_attr_t for_attr = {.name = "parallel_for"};
static const weft_attr_t reduce_attr = {.name = "parallel_reduce"};

/* Sizes and midpoints in unsigned arithmetic: [INT64_MIN, INT64_MAX) has 2^64 - 1 indices. */
static inline uint64_t span(int64_t lo, int64_t hi)
{
    return (uint64_t)hi - (uint64_t)lo;
}

static inline int64_t midpoint(int64_t lo, uint64_t n)
{
    return (int64_t)((uint64_t)lo + n / 2); /* lies in [lo, hi]: representable */
}

static void *task_fiber(void *p);
static void reduce_task(par_job *j, int64_t lo, int64_t hi, void *out);

static bool spawn_half(par_job *j, par_task *t, weft_fiber_t *f)
{
    /* any failure (-ENOMEM; -ESHUTDOWN, from a thread outside a stopping runtime) leaves the half to
     * the spawner */
    return j->spawn && weft_spawn(f, j->body ? &for_attr : &reduce_attr, task_fiber, t) == 0;
}

/* Wait for a half's fiber: 0 when it ran, -ENOMEM when it never did (no stack for it: the caller runs
 * the half itself). Its task lives in our frame, so nothing may cut the wait short: the join is deaf to
 * weft_cancel (the deadlock report could still end it, with the fiber still there: then wait on). */
static int join_half(weft_fiber_t f)
{
    for (;;) {
        int r = weft__join_uncancellable(f, NULL);
        if (r == 0)
            return 0;
        if (weft_fiber_state(f) == -ESRCH) { /* collected: r is why it never ran */
            if (r != -ENOMEM)
                weft__panic("weft: parallel loop: a sub-range's fiber ended with %s", weft_err_name(r));
            return r;
        }
        weft_yield();
    }
}

/* Around a leaf: the fiber says that it runs a loop's body. While it computes, the loop's unstarted
 * halves that wait in its worker's queue are no reason for the monitor to give the worker to a fresh
 * thread, which would only take a CPU from the loop (monitor.c). */
static inline weft__fiber *leaf_begin(void)
{
    weft__fiber *self = weft__self_if_any();
    if (self)
        self->in_loop++;
    return self;
}

static inline void leaf_end(weft__fiber *self)
{
    if (self)
        self->in_loop--;
}

static void for_range(par_job *j, int64_t lo, int64_t hi)
{
    uint64_t n = span(lo, hi);
    if (n <= j->grain) {
        weft__fiber *self = leaf_begin();
        j->body(lo, hi, j->arg);
        leaf_end(self);
        return;
    }
    int64_t mid = midpoint(lo, n);
    par_task right = {.job = j, .lo = mid, .hi = hi};
    weft_fiber_t f;
    bool spawned = spawn_half(j, &right, &f);
    for_range(j, lo, mid);
    if (!spawned || join_half(f) < 0)
        for_range(j, mid, hi);
}

/* Fold [lo, hi) into out (acc_size bytes, overwritten). spill holds one result per split of this left
 * spine: the right half split off at depth d leaves its result at spill + d * stride. */
static void reduce_range(par_job *j, int64_t lo, int64_t hi, void *out, unsigned char *spill)
{
    uint64_t n = span(lo, hi);
    if (n <= j->grain) {
        if (atomic_load_explicit(&j->err, memory_order_relaxed))
            return; /* the call fails: nobody reads this result */
        memcpy(out, j->identity, j->acc_size);
        weft__fiber *self = leaf_begin();
        j->rbody(lo, hi, out, j->arg);
        leaf_end(self);
        return;
    }
    int64_t mid = midpoint(lo, n);
    par_task right = {.job = j, .lo = mid, .hi = hi, .acc = spill};
    weft_fiber_t f;
    bool spawned = spawn_half(j, &right, &f);
    reduce_range(j, lo, mid, out, spill + j->stride);
    if (!spawned || join_half(f) < 0)
        reduce_task(j, mid, hi, spill);
    /* err unset: both results were made in full (see the memory ordering at the top) */
    if (!atomic_load_explicit(&j->err, memory_order_relaxed))
        j->join(out, spill, j->arg);
}

/* A reduce task: find room for the results of its spine, then fold its range into out. */
static void reduce_task(par_job *j, int64_t lo, int64_t hi, void *out)
{
    size_t k = 0;
    for (uint64_t n = span(lo, hi); n > j->grain; n /= 2)
        k++;
    _Alignas(max_align_t) unsigned char local[ACC_INLINE];
    unsigned char *spill = local;
    if (k * j->stride > sizeof local && !(spill = malloc(k * j->stride))) {
        atomic_store_explicit(&j->err, -ENOMEM, memory_order_relaxed);
        return;
    }
    reduce_range(j, lo, hi, out, spill);
    if (spill != local)
        free(spill);
}

static void *task_fiber(void *p)
{
    par_task *t = p;
    if (t->job->body)
        for_range(t->job, t->lo, t->hi);
    else
        reduce_task(t->job, t->lo, t->hi, t->acc);
    return NULL;
}

/* Resolve the worker count and the grain. -ESHUTDOWN when no runtime runs. */
static int setup(par_job *j, int64_t begin, int64_t end, int64_t grain)
{
    int workers = weft_workers();
    if (workers == 0)
        return -ESHUTDOWN;
    uint64_t n = span(begin, end);
    if (grain > 0) {
        j->grain = (uint64_t)grain;
    } else if (workers == 1) {
        j->grain = n ? n : 1; /* nothing to spread: one leaf */
    } else {
        uint64_t leaves = (uint64_t)workers * LEAVES_PER_WORKER;
        j->grain = n / leaves + (n % leaves != 0);
        if (j->grain == 0)
            j->grain = 1;
    }
    j->spawn = workers > 1;
    return 0;
}

/* Run the whole range. In the caller when it is a fiber (its joins park it, not its worker), or when
 * there is nothing to spread. From a plain or weft thread the top task becomes a fiber that the thread
 * waits for: splitting on the thread itself would queue every half on the global queue, which workers
 * look at less often than their deques, and run leaves on one thread more than there are workers. When
 * that fiber cannot be had (no memory), the thread runs the top task itself after all. -ESHUTDOWN: the
 * runtime is stopping (a thread outside it may spawn no more), nothing has run. */
static int run(par_job *j, int64_t lo, int64_t hi, void *out)
{
    par_task top = {.job = j, .lo = lo, .hi = hi, .acc = out};
    if (j->spawn && span(lo, hi) > j->grain && !weft__on_worker()) {
        /* the join needs this thread's descriptor: without one, spawn nothing */
        if (!weft__self()) {
            j->spawn = false;
        } else {
            weft_fiber_t f;
            int r = weft_spawn(&f, j->body ? &for_attr : &reduce_attr, task_fiber, &top);
            if (r == -ESHUTDOWN)
                return r;
            if (r == 0 && join_half(f) == 0)
                return 0;
            /* no fiber, or it got no stack and never ran: nothing has run, do it here */
        }
    }
    task_fiber(&top);
    return 0;
}

int weft_parallel_for(int64_t begin, int64_t end, int64_t grain, weft_for_body body, void *arg)
{
    if (end < begin || grain < 0 || !body)
        return -EINVAL;
    par_job j = {.body = body, .arg = arg};
    int r = setup(&j, begin, end, grain);
    if (r < 0 || begin == end)
        return r;
    return run(&j, begin, end, NULL);
}

int weft_parallel_reduce(int64_t begin, int64_t end, int64_t grain, void *acc, size_t acc_size,
                         const void *identity, weft_reduce_body body, weft_reduce_join join, void *arg)
{
    if (end < begin || grain < 0 || !acc || !acc_size || !identity || !body || !join)
        return -EINVAL;
    if (acc_size > SIZE_MAX / 128)
        return -ENOMEM; /* 64 of them (the deepest spine) could not be allocated */
    const size_t align = _Alignof(max_align_t);
    par_job j = {.rbody = body,
                 .join = join,
                 .identity = identity,
                 .arg = arg,
                 .acc_size = acc_size,
                 .stride = (acc_size + align - 1) / align * align};
    int r = setup(&j, begin, end, grain);
    if (r < 0 || begin == end)
        return r;
    /* the whole range's result, joined into *acc last, so that *acc's value counts once */
    _Alignas(max_align_t) unsigned char local[ACC_INLINE];
    void *whole = acc_size <= sizeof local ? local : malloc(acc_size);
    if (!whole)
        return -ENOMEM;
    r = run(&j, begin, end, whole);
    if (r == 0)
        r = atomic_load_explicit(&j.err, memory_order_relaxed);
    if (r == 0)
        join(acc, whole, arg);
    if (whole != local)
        free(whole);
    return r;
}
