/*
 * Parallel loops: every index exactly once over many (begin, end, grain), leaves within the grain and
 * split in halves, every worker taking part, nesting, callers of every kind, the errors, and reduce:
 * exact sums, left-to-right joins, bit-identical floating-point results, *acc counted once, large
 * accumulators, and failing allocations.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <weft.h>

#include "core/internal.h"
#include "helpers.h"
#include "runner.h"

/* How many leaves the midpoint split makes of n indices with grain g (>= 1). */
static uint64_t leaves(uint64_t n, uint64_t g)
{
    if (n == 0)
        return 0;
    if (n <= g)
        return 1;
    return leaves(n / 2, g) + leaves(n - n / 2, g);
}

/* ------------------------------------------------------------------------------------------------ */
/* Coverage: a counter per index, and what each leaf looked like                                    */

typedef struct {
    int64_t begin, end, grain;
    _Atomic int *hits; /* end - begin of them */
    atomic_long calls;
    atomic_long min_leaf, max_leaf;
    atomic_int bad; /* a leaf that is empty or outside [begin, end) */
} cover_t;

static void cover_body(int64_t lo, int64_t hi, void *arg)
{
    cover_t *c = arg;
    if (lo >= hi || lo < c->begin || hi > c->end) {
        atomic_store(&c->bad, 1);
        return;
    }
    long n = (long)((uint64_t)hi - (uint64_t)lo);
    for (int64_t i = lo; i < hi; i++)
        atomic_fetch_add_explicit(&c->hits[(uint64_t)i - (uint64_t)c->begin], 1, memory_order_relaxed);
    long m = atomic_load(&c->min_leaf);
    while (n < m && !atomic_compare_exchange_weak(&c->min_leaf, &m, n))
        ;
    m = atomic_load(&c->max_leaf);
    while (n > m && !atomic_compare_exchange_weak(&c->max_leaf, &m, n))
        ;
    atomic_fetch_add(&c->calls, 1);
}

/* Run one loop and check it: every index once, leaves within the grain and split the documented way. */
static void check_cover(int64_t begin, int64_t end, int64_t grain)
{
    uint64_t n = (uint64_t)end - (uint64_t)begin;
    cover_t c = {.begin = begin, .end = end, .grain = grain, .min_leaf = LONG_MAX, .max_leaf = 0};
    c.hits = calloc(n ? n : 1, sizeof *c.hits);
    ASSERT(c.hits);
    int r = weft_parallel_for(begin, end, grain, cover_body, &c);
    if (r != 0)
        FAIL("parallel_for(%lld, %lld, %lld) = %d", (long long)begin, (long long)end, (long long)grain, r);
    ASSERT_EQ(atomic_load(&c.bad), 0);
    for (uint64_t i = 0; i < n; i++)
        if (atomic_load(&c.hits[i]) != 1)
            FAIL("parallel_for(%lld, %lld, %lld): index %lld done %d times", (long long)begin, (long long)end,
                 (long long)grain, (long long)(begin + (int64_t)i), atomic_load(&c.hits[i]));
    if (n == 0) {
        ASSERT_EQ(atomic_load(&c.calls), 0);
    } else if (grain > 0) {
        ASSERT_EQ(atomic_load(&c.calls), (long)leaves(n, (uint64_t)grain));
        ASSERT_LE(atomic_load(&c.max_leaf), grain);
        if (n > (uint64_t)grain)
            ASSERT_GE(2 * atomic_load(&c.min_leaf), grain); /* halves: never a sliver */
    }
    free(c.hits);
}

/* Where a range begins changes nothing in how it splits, only what the body sees: the big sizes (which
 * make thousands of fibers, slow under TSan) go with the first two begins only. */
static const int64_t begins[] = {-1000, 0, 1, -1, 12345, INT64_MIN, INT64_MAX - 5000};
static const int64_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 100, 1000, 1025};
static const int64_t grains[] = {0, 1, 2, 3, 5, 64, 999, 1000, 1001, (int64_t)1 << 40};
#define NBEGINS (sizeof begins / sizeof *begins)
#define NSIZES(b) (b < 2 ? sizeof sizes / sizeof *sizes : sizeof sizes / sizeof *sizes - 2)
#define NGRAINS (sizeof grains / sizeof *grains)

static void *cover_all(void *unused)
{
    for (size_t b = 0; b < NBEGINS; b++)
        for (size_t s = 0; s < NSIZES(b); s++)
            for (size_t g = 0; g < NGRAINS; g++)
                check_cover(begins[b], begins[b] + sizes[s], grains[g]);
    return NULL;
}

TEST(every_index_once_from_a_fiber)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, cover_all, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(every_index_once_from_a_plain_thread)
{
    start_workers(2);
    cover_all(NULL);
    ASSERT_OK(weft_shutdown());
}

TEST(every_index_once_from_a_weft_thread)
{
    start_workers(2);
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, cover_all, NULL));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(every_index_once_with_one_worker)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, cover_all, NULL));
    ASSERT_OK(weft_join(f, NULL));
    cover_all(NULL);
    ASSERT_OK(weft_shutdown());
}

TEST(every_index_once_with_many_workers)
{
    start_workers(7);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, cover_all, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

typedef struct {
    atomic_int n;
    int64_t lo[8], hi[8];
} seen_t;

static void seen_body(int64_t lo, int64_t hi, void *arg)
{
    seen_t *s = arg;
    int i = atomic_fetch_add(&s->n, 1);
    if (i < 8) {
        s->lo[i] = lo;
        s->hi[i] = hi;
    }
}

TEST(the_largest_range_splits_without_overflow)
{
    /* [INT64_MIN, INT64_MAX) has 2^64 - 1 indices: with a grain of 2^62 there are 4 leaves, split at
     * the midpoints that unsigned arithmetic gives */
    start_workers(2);
    seen_t seen = {0};
    ASSERT_OK(weft_parallel_for(INT64_MIN, INT64_MAX, (int64_t)1 << 62, seen_body, &seen));
    ASSERT_EQ(atomic_load(&seen.n), 4);
    uint64_t total = 0; /* the leaves tile the range */
    for (int i = 0; i < 4; i++) {
        total += (uint64_t)seen.hi[i] - (uint64_t)seen.lo[i];
        int starts = 0, ends = 0;
        for (int j = 0; j < 4; j++) {
            starts += seen.lo[j] == seen.hi[i];
            ends += seen.hi[j] == seen.lo[i];
        }
        ASSERT_EQ(starts, seen.hi[i] == INT64_MAX ? 0 : 1);
        ASSERT_EQ(ends, seen.lo[i] == INT64_MIN ? 0 : 1);
    }
    ASSERT(total == UINT64_MAX);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Grain 0, one worker, the callers' fibers                                                          */

typedef struct {
    atomic_long calls;
    atomic_long indices;
    uint64_t caller; /* the calling fiber's id, or 0 */
    atomic_int elsewhere; /* a leaf ran in another fiber */
} count_t;

static void count_body(int64_t lo, int64_t hi, void *arg)
{
    count_t *c = arg;
    atomic_fetch_add(&c->calls, 1);
    atomic_fetch_add(&c->indices, (long)(hi - lo));
    if (weft_self_id() != c->caller)
        atomic_store(&c->elsewhere, 1);
}

TEST(grain_zero_makes_8_to_16_leaves_per_worker)
{
    static const int workers[] = {2, 3, 4};
    for (int w = 0; w < 3; w++) {
        start_workers(workers[w]);
        static const int64_t n[] = {1000000, 12345, 1 << 20, 999983};
        for (int i = 0; i < 4; i++) {
            count_t c = {0};
            ASSERT_OK(weft_parallel_for(0, n[i], 0, count_body, &c));
            ASSERT_EQ(atomic_load(&c.indices), n[i]);
            ASSERT_GE(atomic_load(&c.calls), 8 * workers[w]);
            ASSERT_LE(atomic_load(&c.calls), 16 * workers[w]);
        }
        /* fewer indices than that: one each */
        count_t c = {0};
        ASSERT_OK(weft_parallel_for(-3, 2, 0, count_body, &c));
        ASSERT_EQ(atomic_load(&c.calls), 5);
        ASSERT_OK(weft_shutdown());
    }
}

static void *one_worker_loops(void *unused)
{
    /* grain 0: the whole range at once, in the caller */
    count_t c = {.caller = weft_self_id()};
    ASSERT_OK(weft_parallel_for(-50, 1000000, 0, count_body, &c));
    ASSERT_EQ(atomic_load(&c.calls), 1);
    ASSERT_EQ(atomic_load(&c.indices), 1000050);
    ASSERT_EQ(atomic_load(&c.elsewhere), 0);
    /* an explicit grain still bounds the leaves, and they run in the caller too: no fiber is spawned */
    count_t d = {.caller = weft_self_id()};
    ASSERT_OK(weft_parallel_for(0, 1000, 10, count_body, &d));
    ASSERT_EQ(atomic_load(&d.calls), (long)leaves(1000, 10));
    ASSERT_EQ(atomic_load(&d.elsewhere), 0);
    return NULL;
}

TEST(one_worker_runs_everything_in_the_caller)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, one_worker_loops, NULL));
    ASSERT_OK(weft_join(f, NULL));
    one_worker_loops(NULL); /* a plain thread: weft_self_id() is 0 there and in the leaves */
    ASSERT_OK(weft_shutdown());
}

static void *small_range_in_caller(void *unused)
{
    count_t c = {.caller = weft_self_id()};
    ASSERT_OK(weft_parallel_for(0, 100, 100, count_body, &c)); /* range <= grain: one call, here */
    ASSERT_EQ(atomic_load(&c.calls), 1);
    ASSERT_EQ(atomic_load(&c.elsewhere), 0);
    return NULL;
}

TEST(a_range_within_the_grain_runs_in_the_caller)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, small_range_in_caller, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Every worker takes part                                                                           */

typedef struct {
    atomic_uint seen; /* bit per worker index that has entered the body */
    atomic_int off_worker; /* a leaf ran on no worker */
} team_t;

/* Wait (a liveness bound, not a measurement) until two workers have entered: one can only get here by
 * stealing a half, since this leaf holds its own worker while it spins. */
static void team_body(int64_t lo, int64_t hi, void *arg)
{
    team_t *t = arg;
    int w = weft__worker_index();
    if (w < 0 || w >= 32) {
        atomic_store(&t->off_worker, 1);
        return;
    }
    atomic_fetch_or(&t->seen, 1u << w);
    int64_t until = weft_now() + 20 * SEC;
    while (__builtin_popcount(atomic_load(&t->seen)) < 2 && weft_now() < until)
        cpu_relax();
}

static void *team_loop(void *arg)
{
    team_t *t = arg;
    ASSERT_OK(weft_parallel_for(0, 64, 1, team_body, t));
    return NULL;
}

TEST(every_worker_takes_part)
{
    /* no hand-off of a spinning worker to a fresh thread: the second worker must steal */
    weft_config_t cfg = {.workers = 2, .stuck_us = -1};
    ASSERT_OK(weft_start(&cfg));
    team_t a = {0};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, team_loop, &a));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_EQ(atomic_load(&a.off_worker), 0);
    ASSERT_EQ(atomic_load(&a.seen), 3);

    team_t b = {0}; /* from a plain thread: the top task is a fiber, its halves stolen as well */
    team_loop(&b);
    ASSERT_EQ(atomic_load(&b.off_worker), 0);
    ASSERT_EQ(atomic_load(&b.seen), 3);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Every leaf has returned when the call returns                                                     */

typedef struct {
    atomic_long started, finished;
} trail_t;

static void slow_body(int64_t lo, int64_t hi, void *arg)
{
    trail_t *t = arg;
    atomic_fetch_add(&t->started, 1);
    if (lo % 3 == 0)
        weft_sleep(200 * 1000); /* parks: the worker runs other leaves meanwhile */
    else if (lo % 3 == 1)
        weft_yield();
    atomic_fetch_add(&t->finished, 1);
}

static void *trail_loop(void *arg)
{
    trail_t *t = arg;
    ASSERT_OK(weft_parallel_for(0, 300, 1, slow_body, t));
    ASSERT_EQ(atomic_load(&t->started), 300);
    ASSERT_EQ(atomic_load(&t->finished), 300);
    return NULL;
}

TEST(every_leaf_has_returned_when_the_call_returns)
{
    start_workers(2);
    trail_t a = {0}, b = {0};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, trail_loop, &a));
    ASSERT_OK(weft_join(f, NULL));
    trail_loop(&b);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Nesting                                                                                           */

enum { OUTER = 16, INNER = 30, THIRD = 3 };

typedef struct {
    _Atomic int hits[OUTER][INNER + OUTER][THIRD];
} grid_t;

typedef struct {
    grid_t *g;
    int64_t i, j;
} at_t;

static void third_body(int64_t lo, int64_t hi, void *arg)
{
    at_t *a = arg;
    for (int64_t k = lo; k < hi; k++)
        atomic_fetch_add(&a->g->hits[a->i][a->j][k], 1);
}

static void inner_body(int64_t lo, int64_t hi, void *arg)
{
    at_t *a = arg;
    for (int64_t j = lo; j < hi; j++) {
        at_t b = {a->g, a->i, j};
        ASSERT_OK(weft_parallel_for(0, THIRD, 1, third_body, &b));
    }
}

static void outer_body(int64_t lo, int64_t hi, void *arg)
{
    grid_t *g = arg;
    for (int64_t i = lo; i < hi; i++) {
        at_t a = {g, i, 0};
        ASSERT_OK(weft_parallel_for(0, INNER + i, i % 4, inner_body, &a));
    }
}

static void *nested(void *unused)
{
    grid_t *g = calloc(1, sizeof *g);
    ASSERT(g);
    ASSERT_OK(weft_parallel_for(0, OUTER, 1, outer_body, g));
    for (int i = 0; i < OUTER; i++)
        for (int j = 0; j < INNER + OUTER; j++)
            for (int k = 0; k < THIRD; k++)
                ASSERT_EQ(atomic_load(&g->hits[i][j][k]), j < INNER + i ? 1 : 0);
    free(g);
    return NULL;
}

TEST(nested_loops_cover_every_triple)
{
    start_workers(2);
    weft_fiber_t f[3];
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, nested, NULL));
    nested(NULL); /* and one from this plain thread, at the same time */
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(nested_loops_with_one_worker)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, nested, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Errors                                                                                            */

static atomic_int called;

static void never_body(int64_t lo, int64_t hi, void *arg)
{
    atomic_store(&called, 1);
}

static void never_rbody(int64_t lo, int64_t hi, void *acc, void *arg)
{
    atomic_store(&called, 1);
}

static void never_join(void *into, const void *from, void *arg)
{
    atomic_store(&called, 1);
}

static void check_einval(void)
{
    int64_t acc = 7, id = 0;
    ASSERT_ERR(weft_parallel_for(10, 9, 0, never_body, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_for(0, 10, -1, never_body, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_for(0, 10, 0, NULL, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_for(INT64_MAX, INT64_MIN, 0, never_body, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(10, 9, 0, &acc, 8, &id, never_rbody, never_join, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(0, 10, -5, &acc, 8, &id, never_rbody, never_join, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(0, 10, 0, NULL, 8, &id, never_rbody, never_join, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(0, 10, 0, &acc, 0, &id, never_rbody, never_join, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(0, 10, 0, &acc, 8, NULL, never_rbody, never_join, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(0, 10, 0, &acc, 8, &id, NULL, never_join, NULL), -EINVAL);
    ASSERT_ERR(weft_parallel_reduce(0, 10, 0, &acc, 8, &id, never_rbody, NULL, NULL), -EINVAL);
    ASSERT_EQ(acc, 7);
    ASSERT_EQ(atomic_load(&called), 0);
}

TEST(bad_arguments_are_einval)
{
    check_einval(); /* no runtime: the arguments are looked at first, and nothing starts */
    ASSERT_EQ(weft_workers(), 0);
    start_workers(2);
    check_einval();
    ASSERT_OK(weft_shutdown());
}

TEST(no_runtime_is_eshutdown)
{
    int64_t acc = 7, id = 0;
    for (int round = 0; round < 2; round++) { /* never started, then started and shut down */
        ASSERT_ERR(weft_parallel_for(0, 10, 0, never_body, NULL), -ESHUTDOWN);
        ASSERT_ERR(weft_parallel_for(3, 3, 0, never_body, NULL), -ESHUTDOWN);
        ASSERT_ERR(weft_parallel_reduce(0, 10, 1, &acc, 8, &id, never_rbody, never_join, NULL), -ESHUTDOWN);
        ASSERT_EQ(weft_workers(), 0); /* and the call did not start it */
        if (round == 0) {
            start_workers(2);
            ASSERT_OK(weft_shutdown());
        }
    }
    ASSERT_EQ(acc, 7);
    ASSERT_EQ(atomic_load(&called), 0);
}

TEST(an_empty_range_calls_nothing)
{
    start_workers(2);
    int64_t acc = 7, id = 0;
    ASSERT_OK(weft_parallel_for(5, 5, 0, never_body, NULL));
    ASSERT_OK(weft_parallel_for(-5, -5, 3, never_body, NULL));
    ASSERT_OK(weft_parallel_reduce(5, 5, 0, &acc, 8, &id, never_rbody, never_join, NULL));
    ASSERT_EQ(acc, 7);
    ASSERT_EQ(atomic_load(&called), 0);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Reduce                                                                                            */

static void sum_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    int64_t *a = acc;
    for (int64_t i = lo; i < hi; i++)
        *a += i;
}

static void sum_join(void *into, const void *from, void *arg)
{
    *(int64_t *)into += *(const int64_t *)from;
}

static void *reduce_sums(void *unused)
{
    for (size_t b = 0; b < NBEGINS; b++) {
        if (begins[b] == INT64_MIN || begins[b] == INT64_MAX - 5000)
            continue; /* the sums would overflow */
        for (size_t s = 0; s < NSIZES(b); s++)
            for (size_t g = 0; g < NGRAINS; g++) {
                int64_t lo = begins[b], hi = lo + sizes[s];
                int64_t want = 1000, acc = 1000, zero = 0; /* *acc's value counts once */
                for (int64_t i = lo; i < hi; i++)
                    want += i;
                ASSERT_OK(weft_parallel_reduce(lo, hi, grains[g], &acc, sizeof acc, &zero, sum_body, sum_join,
                                               NULL));
                ASSERT_EQ(acc, want);
            }
    }
    return NULL;
}

TEST(reduce_sums_int64)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, reduce_sums, NULL));
    ASSERT_OK(weft_join(f, NULL));
    reduce_sums(NULL);
    ASSERT_OK(weft_shutdown());
    start_workers(1);
    reduce_sums(NULL);
    ASSERT_OK(weft_shutdown());
}

/* A partial result that says which sub-range it covers: joins must combine neighbours, left into
 * right, and every leaf must start from identity. */
typedef struct {
    int64_t lo, hi, leaves, empty;
} span_acc;

static void span_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    span_acc *a = acc;
    if (!(a->empty == 1 && a->leaves == 0 && a->lo == -1 && a->hi == -1))
        FAIL("a leaf did not start from identity");
    *a = (span_acc){lo, hi, 1, 0};
}

static void span_join(void *into, const void *from, void *arg)
{
    span_acc *a = into;
    const span_acc *b = from;
    if (b->empty)
        return;
    if (a->empty) {
        *a = *b;
        return;
    }
    if (a->hi != b->lo)
        FAIL("join of [%lld, %lld) with [%lld, %lld): not left into right neighbour", (long long)a->lo,
             (long long)a->hi, (long long)b->lo, (long long)b->hi);
    a->hi = b->hi;
    a->leaves += b->leaves;
}

static void *reduce_spans(void *unused)
{
    static const span_acc identity = {-1, -1, 0, 1};
    for (size_t s = 1; s < sizeof sizes / sizeof *sizes; s++)
        for (size_t g = 1; g < NGRAINS; g++) {
            int64_t lo = -77, hi = lo + sizes[s];
            span_acc acc = {-1000, lo, 5, 0}; /* a range just left of ours, as *acc */
            ASSERT_OK(weft_parallel_reduce(lo, hi, grains[g], &acc, sizeof acc, &identity, span_body, span_join,
                                           NULL));
            ASSERT_EQ(acc.lo, -1000);
            ASSERT_EQ(acc.hi, hi);
            ASSERT_EQ(acc.leaves, 5 + (int64_t)leaves((uint64_t)sizes[s], (uint64_t)grains[g]));
        }
    return NULL;
}

TEST(reduce_joins_neighbours_left_to_right)
{
    start_workers(3);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, reduce_spans, NULL));
    ASSERT_OK(weft_join(f, NULL));
    reduce_spans(NULL);
    ASSERT_OK(weft_shutdown());
}

static double term(int64_t i)
{
    return (double)((uint64_t)i * 2654435761u % 100003) / 7.0 - 7000.0 + 1e-3 / (double)(i % 997 + 1);
}

static void dsum_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    double *a = acc;
    for (int64_t i = lo; i < hi; i++)
        *a += term(i);
}

static void dsum_join(void *into, const void *from, void *arg)
{
    *(double *)into += *(const double *)from;
}

/* The sum the documented tree gives: a leaf adds its terms in order to 0.0, a node adds right to left. */
static double tree_sum(int64_t lo, int64_t hi, int64_t grain)
{
    uint64_t n = (uint64_t)(hi - lo);
    if (n <= (uint64_t)grain) {
        double a = 0.0;
        dsum_body(lo, hi, &a, NULL);
        return a;
    }
    int64_t mid = lo + (int64_t)(n / 2);
    double l = tree_sum(lo, mid, grain);
    return l + tree_sum(mid, hi, grain);
}

typedef struct {
    int64_t grain;
    double result;
} dsum_t;

static void *dsum_fiber(void *arg)
{
    dsum_t *d = arg;
    double zero = 0.0;
    d->result = 0.0;
    ASSERT_OK(weft_parallel_reduce(3, 1000003, d->grain, &d->result, sizeof d->result, &zero, dsum_body, dsum_join,
                                   NULL));
    return NULL;
}

TEST(reduce_of_doubles_is_the_same_on_every_run)
{
    start_workers(2);
    for (int g = 0; g < 3; g++) {
        int64_t grain = g == 0 ? 0 : g == 1 ? 1000 : 77777;
        double first = 0;
        for (int run = 0; run < 5; run++) {
            dsum_t d = {.grain = grain};
            if (run % 2) {
                dsum_fiber(&d); /* from this thread */
            } else {
                weft_fiber_t f;
                ASSERT_OK(weft_spawn(&f, NULL, dsum_fiber, &d));
                ASSERT_OK(weft_join(f, NULL));
            }
            if (run == 0)
                first = d.result;
            else if (memcmp(&first, &d.result, sizeof first) != 0)
                FAIL("grain %lld, run %d: %.17g, first run %.17g", (long long)grain, run, d.result, first);
        }
        if (grain) { /* and it is the documented tree's sum, bit for bit */
            double want = 0.0 + tree_sum(3, 1000003, grain);
            if (memcmp(&want, &first, sizeof want) != 0)
                FAIL("grain %lld: %.17g, the tree gives %.17g", (long long)grain, first, want);
        }
    }
    ASSERT_OK(weft_shutdown());
}

/* Large accumulators: a histogram well past what fits on the stack; and a small one split so deep that
 * a task's partial results do not fit either. */
enum { BUCKETS = 1000 };

/* arg: the number of buckets */
static void hist_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    int64_t *h = acc;
    for (int64_t i = lo; i < hi; i++)
        h[((uint64_t)i * 7919) % (uintptr_t)arg]++;
}

static void hist_join(void *into, const void *from, void *arg)
{
    int64_t *a = into;
    const int64_t *b = from;
    size_t n = (size_t)(uintptr_t)arg;
    for (size_t i = 0; i < n; i++)
        a[i] += b[i];
}

static void *histograms(void *unused)
{
    static const int64_t zero[BUCKETS];
    int64_t *h = malloc(sizeof zero);
    ASSERT(h);
    for (int i = 0; i < BUCKETS; i++)
        h[i] = 1;
    ASSERT_OK(weft_parallel_reduce(0, 100000, 0, h, sizeof zero, zero, hist_body, hist_join,
                                   (void *)(uintptr_t)BUCKETS));
    for (int i = 0; i < BUCKETS; i++)
        ASSERT_EQ(h[i], 1 + 100);
    free(h);

    /* 40 bytes (rounded to 48 apart), grain 1 over 4096 indices: 12 splits on the top spine, 576 bytes */
    int64_t small[5] = {0}, z5[5] = {0};
    ASSERT_OK(weft_parallel_reduce(-4096, 0, 1, small, sizeof small, z5, hist_body, hist_join, (void *)(uintptr_t)5));
    int64_t want[5] = {0};
    hist_body(-4096, 0, want, (void *)(uintptr_t)5);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(small[i], want[i]);
    return NULL;
}

TEST(reduce_with_large_accumulators)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, histograms, NULL));
    ASSERT_OK(weft_join(f, NULL));
    histograms(NULL);
    ASSERT_OK(weft_shutdown());
}

/* Leaf counting through identity: each leaf starts from {0, 1}, so the joined count is the leaf count. */
static void leafcount_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    int64_t *a = acc;
    if (a[1] != 1)
        FAIL("a leaf did not start from identity");
    a[0] += hi - lo;
}

static void pair_join(void *into, const void *from, void *arg)
{
    int64_t *a = into;
    const int64_t *b = from;
    a[0] += b[0];
    a[1] += b[1];
}

static void reduce_in_body(int64_t lo, int64_t hi, void *arg)
{
    _Atomic int64_t *total = arg;
    for (int64_t i = lo; i < hi; i++) {
        int64_t acc[2] = {100, 0}, id[2] = {0, 1};
        ASSERT_OK(weft_parallel_reduce(0, 1000 + i, 1 + i % 50, acc, sizeof acc, id, leafcount_body, pair_join, NULL));
        ASSERT_EQ(acc[0], 100 + 1000 + i);
        ASSERT_EQ(acc[1], (int64_t)leaves((uint64_t)(1000 + i), (uint64_t)(1 + i % 50)));
        atomic_fetch_add(total, acc[0]);
    }
}

TEST(reduce_nested_in_a_loop)
{
    start_workers(2);
    _Atomic int64_t total = 0;
    ASSERT_OK(weft_parallel_for(0, 64, 1, reduce_in_body, &total));
    ASSERT_EQ(atomic_load(&total), 64 * 1100 + 63 * 64 / 2);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Running out of memory                                                                             */

#if !WEFT_ASAN && !WEFT_TSAN
/* Cap the address space a little above what is mapped now, so that fiber stacks and big mallocs
 * fail. (Sanitizers reserve terabytes of shadow: there is no such cap for them.) False where the cap
 * does not hold: qemu-user does not pass RLIMIT_AS on to the host, and there is nothing to test. */
static bool cap_address_space(size_t headroom)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ASSERT(f);
    unsigned long pages = 0;
    ASSERT_EQ(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    struct rlimit rl = {.rlim_cur = pages * 4096ul + headroom, .rlim_max = RLIM_INFINITY};
    ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
    size_t over = headroom + ((size_t)1 << 30);
    void *probe = mmap(NULL, over, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (probe == MAP_FAILED)
        return true;
    munmap(probe, over);
    rl.rlim_cur = RLIM_INFINITY;
    ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
    printf("RLIMIT_AS is not enforced here (an emulator?): nothing to test\n");
    return false;
}

static uint64_t leaf_fiber[4000];
static bool capped;

static void hold_body(int64_t lo, int64_t hi, void *arg)
{
    cover_body(lo, hi, arg);
    leaf_fiber[lo] = weft_self_id();
    weft_sleep(2 * MS); /* keep many fibers (and their stacks) alive at once */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void dsum_sleep_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    dsum_body(lo, hi, acc, arg);
    weft_sleep(MS);
}

static void *starved_loop(void *arg)
{
    cover_t *c = arg;
    /* 64 MiB stacks, 512 MiB to spare: a handful of fibers at a time get one (glibc may map and unmap
     * 128 MiB for a thread's arena while we read the size: the margin keeps that a handful) */
    if (!(capped = cap_address_space((size_t)512 << 20)))
        return NULL;
    ASSERT_OK(weft_parallel_for(0, 4000, 1, hold_body, c));
    /* a reduce whose halves partly run in their spawners joins in the same order all the same */
    double sum = 0.0, zero = 0.0;
    ASSERT_OK(weft_parallel_reduce(0, 3000, 1, &sum, sizeof sum, &zero, dsum_sleep_body, dsum_join, NULL));
    double want = 0.0 + tree_sum(0, 3000, 1);
    ASSERT(memcmp(&sum, &want, sizeof sum) == 0);
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
    return NULL;
}

TEST(a_loop_completes_when_fibers_get_no_stack)
{
    weft_config_t cfg = {.workers = 2, .stack_size = (size_t)64 << 20};
    ASSERT_OK(weft_start(&cfg));
    cover_t c = {.begin = 0, .end = 4000, .grain = 1, .min_leaf = LONG_MAX};
    c.hits = calloc(4000, sizeof *c.hits);
    ASSERT(c.hits);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, starved_loop, &c));
    ASSERT_OK(weft_join(f, NULL));
    if (!capped)
        return;
    for (int i = 0; i < 4000; i++)
        ASSERT_EQ(atomic_load(&c.hits[i]), 1);
    ASSERT_EQ(atomic_load(&c.calls), 4000);
    /* with a fiber for every half, each fiber runs one leaf (its leftmost); fewer fibers: halves ran
     * in their spawners, which is what this test is for */
    qsort(leaf_fiber, 4000, sizeof *leaf_fiber, cmp_u64);
    int fibers = 1;
    for (int i = 1; i < 4000; i++)
        fibers += leaf_fiber[i] != leaf_fiber[i - 1];
    printf("4000 leaves ran in %d fibers\n", fibers);
    ASSERT_LT(fibers, 4000);
    ASSERT_OK(weft_shutdown());
}

static void thread_only_body(int64_t lo, int64_t hi, void *arg)
{
    cover_body(lo, hi, arg);
    if (weft_self_id() != 0)
        atomic_store(&((cover_t *)arg)->bad, 1);
}

TEST(a_loop_from_a_thread_runs_there_when_no_fiber_gets_a_stack)
{
    weft_config_t cfg = {.workers = 2, .stack_size = (size_t)1 << 30};
    ASSERT_OK(weft_start(&cfg));
    cover_t c = {.begin = 0, .end = 1000, .grain = 1, .min_leaf = LONG_MAX};
    c.hits = calloc(1000, sizeof *c.hits);
    ASSERT(c.hits);
    if (!cap_address_space((size_t)512 << 20)) /* 1 GiB stacks: not one fits */
        return;
    ASSERT_OK(weft_parallel_for(0, 1000, 1, thread_only_body, &c));
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
    ASSERT_EQ(atomic_load(&c.bad), 0); /* every leaf ran on this thread */
    for (int i = 0; i < 1000; i++)
        ASSERT_EQ(atomic_load(&c.hits[i]), 1);
    ASSERT_OK(weft_shutdown());
}

TEST(reduce_without_memory_fails_and_leaves_acc_alone)
{
    start_workers(2);
    static unsigned char acc[1], id[1];
    /* too big for any allocation */
    ASSERT_ERR(weft_parallel_reduce(0, 10, 1, acc, SIZE_MAX / 2, id, never_rbody, never_join, NULL), -ENOMEM);
    /* 1 GiB partial results with 512 MiB to spare: the first malloc fails, nothing runs */
    if (!cap_address_space((size_t)512 << 20))
        return;
    int64_t big_acc = 5;
    ASSERT_ERR(weft_parallel_reduce(0, 10, 1, &big_acc, (size_t)1 << 30, id, never_rbody, never_join, NULL),
               -ENOMEM);
    ASSERT_EQ(big_acc, 5);
    ASSERT_EQ(atomic_load(&called), 0);
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    ASSERT_EQ(setrlimit(RLIMIT_AS, &rl), 0);
    ASSERT_OK(weft_shutdown());
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Overhead, as a count: how many fibers a loop spawns                                               */

static void empty_body(int64_t lo, int64_t hi, void *arg)
{
}

TEST(a_million_empty_iterations_spawn_few_fibers)
{
    start_workers(2);
    uint64_t before = 0, after = 0;
    for (int i = 0; i < weft__rt_g.nworkers; i++)
        before += atomic_load(&weft__rt_g.workers[i]->nspawned);
    before += atomic_load(&weft__rt_g.foreign_spawned);
    ASSERT_OK(weft_parallel_for(0, 1000000, 0, empty_body, NULL));
    for (int i = 0; i < weft__rt_g.nworkers; i++)
        after += atomic_load(&weft__rt_g.workers[i]->nspawned);
    after += atomic_load(&weft__rt_g.foreign_spawned);
    /* the top task, and one fiber per leaf but the leftmost: 8 to 16 leaves per worker */
    ASSERT_GE(after - before, 16);
    ASSERT_LE(after - before, 32);
    int64_t t0 = weft_now();
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_parallel_for(0, 1000000, 0, empty_body, NULL));
    printf("1M empty iterations on 2 workers: %.1f us a loop\n", (double)(weft_now() - t0) / 100 / 1000);
    ASSERT_OK(weft_shutdown());
}
