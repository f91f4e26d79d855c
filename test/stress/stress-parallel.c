/*
 * Parallel loops under load: many callers at once (fibers, weft threads, plain threads), each running
 * loops with random ranges and grains whose bodies run more loops, every call checked for exact
 * coverage; reduces checked for exact sums and for bit-identical floating-point results on a rerun.
 * Sizes scale with WEFT_TEST_SCALE.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "runner.h"

static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t next(rng_t *r)
{
    r->s = mix(r->s);
    return r->s;
}

static atomic_long loops_run, leaves_run, reduces_run;
/* Range sizes scale too: a fine grain over a big range is a fiber per index, and TSan spends most of a
 * millisecond on each fiber it sees start. */
static int64_t max_range;

/* A random range (empty sometimes, negative often, now and then at either end of int64) and grain. */
static void pick(rng_t *r, int64_t max, int64_t *begin, int64_t *end, int64_t *grain)
{
    uint64_t h = next(r);
    int64_t n = h % 16 == 0 ? 0 : (int64_t)(next(r) % (uint64_t)max);
    switch ((h >> 4) % 8) {
    case 0: *begin = INT64_MIN; break;
    case 1: *begin = INT64_MAX - n; break;
    default: *begin = (int64_t)(next(r) % 2000000) - 1000000; break;
    }
    *end = *begin + n;
    switch ((h >> 8) % 5) {
    case 0: *grain = 0; break;
    case 1: *grain = 1; break;
    case 2: *grain = (int64_t)(next(r) % 64) + 1; break;
    case 3: *grain = n ? (int64_t)(next(r) % (uint64_t)n) + 1 : 1; break;
    default: *grain = (int64_t)1 << 40; break;
    }
}

static void run_loop(uint64_t seed, int depth);

typedef struct {
    int64_t begin;
    _Atomic int *hits;
    uint64_t seed;
    int depth;
} call_t;

static void body(int64_t lo, int64_t hi, void *arg)
{
    call_t *c = arg;
    atomic_fetch_add_explicit(&leaves_run, 1, memory_order_relaxed);
    for (int64_t i = lo; i < hi; i++) {
        atomic_fetch_add_explicit(&c->hits[(uint64_t)i - (uint64_t)c->begin], 1, memory_order_relaxed);
        uint64_t h = mix(c->seed ^ (uint64_t)i);
        if (c->depth > 0 && h % 512 == 0)
            run_loop(h, c->depth - 1); /* a loop inside the loop */
        else if (h % 1024 == 1)
            weft_yield();
    }
}

/* One loop: every index exactly once, whatever ran where. */
static void run_loop(uint64_t seed, int depth)
{
    rng_t r = {seed};
    int64_t begin, end, grain;
    pick(&r, depth ? max_range : max_range / 8 + 1, &begin, &end, &grain);
    uint64_t n = (uint64_t)end - (uint64_t)begin;
    call_t c = {.begin = begin, .seed = next(&r), .depth = depth};
    c.hits = calloc(n ? n : 1, sizeof *c.hits);
    ASSERT(c.hits);
    int e = weft_parallel_for(begin, end, grain, body, &c);
    if (e != 0)
        FAIL("parallel_for(%lld, %lld, %lld) = %d", (long long)begin, (long long)end, (long long)grain, e);
    for (uint64_t i = 0; i < n; i++)
        if (atomic_load_explicit(&c.hits[i], memory_order_relaxed) != 1)
            FAIL("parallel_for(%lld, %lld, %lld): index %llu of the range done %d times", (long long)begin,
                 (long long)end, (long long)grain, (unsigned long long)i, atomic_load(&c.hits[i]));
    free(c.hits);
    atomic_fetch_add_explicit(&loops_run, 1, memory_order_relaxed);
}

/* Reduces: an exact integer sum (offsets from begin, so that it cannot overflow), and a double sum that
 * must come out bit for bit the same when run again with the same range and grain. */
typedef struct {
    int64_t begin;
    int64_t count; /* indices seen */
    uint64_t sum;  /* of the offsets */
    double d;
} racc_t;

static void rbody(int64_t lo, int64_t hi, void *acc, void *arg)
{
    racc_t *a = acc;
    const int64_t *begin = arg;
    for (int64_t i = lo; i < hi; i++) {
        uint64_t off = (uint64_t)i - (uint64_t)*begin;
        a->count++;
        a->sum += off;
        a->d += (double)(mix(off) % 100000) / 3.0 - 16666.0;
        if (mix(off) % 2048 == 0)
            weft_yield();
    }
}

static void rjoin(void *into, const void *from, void *arg)
{
    racc_t *a = into;
    const racc_t *b = from;
    a->count += b->count;
    a->sum += b->sum;
    a->d += b->d;
}

static void run_reduce(uint64_t seed)
{
    rng_t r = {seed};
    int64_t begin, end, grain;
    pick(&r, 5 * max_range, &begin, &end, &grain);
    uint64_t n = (uint64_t)end - (uint64_t)begin;
    static const racc_t identity = {0, 0, 0, 0.0};
    racc_t a = {.count = 7}, b = {0};
    ASSERT_OK(weft_parallel_reduce(begin, end, grain, &a, sizeof a, &identity, rbody, rjoin, &begin));
    ASSERT_OK(weft_parallel_reduce(begin, end, grain, &b, sizeof b, &identity, rbody, rjoin, &begin));
    ASSERT_EQ(a.count, (int64_t)n + 7);
    ASSERT(a.sum == (n ? n * (n - 1) / 2 : 0));
    if (memcmp(&a.d, &b.d, sizeof a.d) != 0)
        FAIL("reduce(%lld, %lld, %lld): %.17g, then %.17g", (long long)begin, (long long)end, (long long)grain,
             a.d, b.d);
    atomic_fetch_add_explicit(&reduces_run, 1, memory_order_relaxed);
}

typedef struct {
    uint64_t seed;
    long rounds;
} caller_t;

static void *caller(void *arg)
{
    caller_t *c = arg;
    rng_t r = {c->seed};
    for (long i = 0; i < c->rounds; i++) {
        if (next(&r) % 4 == 0)
            run_reduce(next(&r));
        else
            run_loop(next(&r), 2);
    }
    return NULL;
}

static void many_callers(int workers)
{
    enum { FIBERS = 8, THREADS = 2, PTHREADS = 2 };
    weft_config_t cfg = {.workers = workers};
    ASSERT_OK(weft_start(&cfg));
    long rounds = runner_scaled(1000);
    max_range = runner_scaled(4000) < 40 ? 40 : runner_scaled(4000);
    caller_t c[FIBERS + THREADS + PTHREADS];
    for (int i = 0; i < FIBERS + THREADS + PTHREADS; i++)
        c[i] = (caller_t){mix((uint64_t)i * 7919 + (uint64_t)workers), rounds};
    weft_fiber_t f[FIBERS + THREADS];
    pthread_t p[PTHREADS];
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, caller, &c[i]));
    for (int i = 0; i < THREADS; i++)
        ASSERT_OK(weft_thread_spawn(&f[FIBERS + i], NULL, caller, &c[FIBERS + i]));
    for (int i = 0; i < PTHREADS; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, caller, &c[FIBERS + THREADS + i]), 0);
    for (int i = 0; i < FIBERS + THREADS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < PTHREADS; i++)
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
    ASSERT_OK(weft_shutdown());
    printf("%ld loops (%ld leaves), %ld reduces\n", atomic_load(&loops_run), atomic_load(&leaves_run),
           atomic_load(&reduces_run));
}

TEST_TIMEOUT(many_callers_on_two_workers, 600)
{
    many_callers(2);
}

TEST_TIMEOUT(many_callers_on_more_workers_than_cpus, 600)
{
    many_callers(5);
}

TEST_TIMEOUT(many_callers_on_one_worker, 600)
{
    many_callers(1);
}
