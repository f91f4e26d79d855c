/*
 * Detached fibers and wait groups at volume: nobody joins these fibers, so a wait group (or the
 * shutdown) is the only proof that each ran exactly once. Also: detach racing with finishing, and
 * detached kernel threads.
 * Sizes scale with WEFT_TEST_SCALE.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#include "runner.h"

static inline uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static atomic_uchar *runs;
static atomic_long next_index;

static void check_runs(long n)
{
    long missing = 0, twice = 0;
    for (long i = 0; i < n; i++) {
        unsigned c = atomic_load_explicit(&runs[i], memory_order_relaxed);
        missing += c == 0;
        twice += c > 1;
    }
    if (missing || twice)
        FAIL("%ld of %ld fibers never ran, %ld ran more than once", missing, n, twice);
}

typedef struct {
    weft_wg_t *wg;
    long index;
} job_t;

/* Counts its run; some yield or sleep; some spawn a detached grandchild that the same group covers. */
static void *job(void *arg)
{
    job_t j = *(job_t *)arg;
    free(arg);
    atomic_fetch_add_explicit(&runs[j.index], 1, memory_order_relaxed);
    uint64_t h = mix((uint64_t)j.index);
    if (h % 4 == 0)
        weft_yield();
    if (h % 64 == 1)
        weft_sleep((int64_t)((h >> 10) % 100) * 1000);
    if (h % 8 == 2) {
        long k = atomic_fetch_add_explicit(&next_index, 1, memory_order_relaxed);
        job_t *g = malloc(sizeof *g);
        ASSERT(g);
        *g = (job_t){j.wg, k};
        ASSERT_OK(weft_wg_add(j.wg, 1)); /* before the spawn, so the count never reaches 0 early */
        ASSERT_OK(weft_go(job, g));
    }
    ASSERT_OK(weft_wg_done(j.wg));
    return NULL;
}

typedef struct {
    long jobs;
    int rounds;
} plan_t;

/* Rounds of: add n, spawn n detached jobs, wait until all (grandchildren too) are done. */
static void *rounds_of_jobs(void *arg)
{
    plan_t *p = arg;
    weft_wg_t wg;
    ASSERT_OK(weft_wg_init(&wg));
    for (int r = 0; r < p->rounds; r++) {
        ASSERT_OK(weft_wg_add(&wg, p->jobs));
        for (long i = 0; i < p->jobs; i++) {
            job_t *j = malloc(sizeof *j);
            ASSERT(j);
            *j = (job_t){&wg, atomic_fetch_add_explicit(&next_index, 1, memory_order_relaxed)};
            ASSERT_OK(weft_go(job, j));
        }
        ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
        ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    }
    ASSERT_OK(weft_wg_destroy(&wg));
    return NULL;
}

static void *pthread_rounds_of_jobs(void *arg)
{
    return rounds_of_jobs(arg);
}

TEST_TIMEOUT(detached_fibers_counted_by_wait_groups, 600)
{
    long cap = runner_scaled(2000000) * 2; /* room for the grandchildren */
    runs = calloc((size_t)cap, 1);
    ASSERT(runs);
    enum { FIBERS = 6, THREADS = 3 };
    plan_t plan = {.jobs = runner_scaled(1000000) / ((FIBERS + THREADS) * 20) + 1, .rounds = 20};
    weft_fiber_t f[FIBERS];
    pthread_t p[THREADS];
    ASSERT_OK(weft_start(NULL));
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, rounds_of_jobs, &plan));
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, pthread_rounds_of_jobs, &plan), 0);
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
    long n = atomic_load(&next_index);
    ASSERT_LE(n, cap);
    check_runs(n); /* every wait returned only after its jobs ran: checked before the shutdown */
    ASSERT_OK(weft_shutdown());
    check_runs(n);
    printf("%ld detached fibers\n", n);
    free(runs);
}

/* Detached fibers that spawn more detached fibers, with nobody waiting but the shutdown: fiber i spawns
 * fibers 2i+1 and 2i+2 while they are below the crowd's size. */
static long crowd;

static void *spread(void *arg)
{
    long i = (long)(intptr_t)arg;
    atomic_fetch_add_explicit(&runs[i], 1, memory_order_relaxed);
    uint64_t h = mix((uint64_t)i);
    if (h % 32 == 0)
        weft_sleep((int64_t)((h >> 8) % 200) * 1000);
    for (int k = 0; k < 2; k++) {
        long c = 2 * i + 1 + k;
        if (c < crowd)
            ASSERT_OK(weft_go(spread, (void *)(intptr_t)c));
    }
    return NULL;
}

TEST_TIMEOUT(shutdown_waits_for_a_spreading_crowd_of_detached_fibers, 600)
{
    long n = runner_scaled(1000000);
    runs = calloc((size_t)n, 1);
    ASSERT(runs);
    crowd = n;
    ASSERT_OK(weft_go(spread, (void *)0));
    ASSERT_OK(weft_shutdown());
    check_runs(n);
    free(runs);
}

/* Detach races with the fiber's end: each handle is detached at a random moment around it. */
static void *short_life(void *arg)
{
    uint64_t h = mix((uint64_t)(uintptr_t)arg);
    atomic_fetch_add_explicit(&runs[(uintptr_t)arg], 1, memory_order_relaxed);
    if (h % 3 == 0)
        weft_yield();
    return NULL;
}

static void *detach_racer(void *arg)
{
    long base = (long)(intptr_t)arg, per = runner_scaled(200000);
    for (long i = 0; i < per; i++) {
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, short_life, (void *)(uintptr_t)(base + i)));
        uint64_t h = mix((uint64_t)(base + i) * 3);
        if (h % 4 == 0)
            weft_yield();
        int r = weft_detach(f);
        if (r != 0)
            FAIL("detach of a fiber that nobody joined: %d", r);
        r = weft_detach(f); /* detached already, or already gone */
        if (r != -EINVAL && r != -ESRCH)
            FAIL("a second detach returned %d (%s), not EINVAL or ESRCH", r, runner_err_name(r));
    }
    return NULL;
}

TEST_TIMEOUT(detach_races_with_the_end_of_the_fiber, 600)
{
    enum { F = 4 };
    long per = runner_scaled(200000);
    runs = calloc((size_t)(per * F), 1);
    ASSERT(runs);
    weft_fiber_t f[F];
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, detach_racer, (void *)(intptr_t)(i * per)));
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
    check_runs(per * F);
    /* every descriptor came back: a new round of spawns works and reuses them */
    for (int i = 0; i < 1000; i++) {
        weft_fiber_t g;
        ASSERT_OK(weft_spawn(&g, NULL, short_life, (void *)0));
        ASSERT_OK(weft_join(g, NULL));
    }
    ASSERT_OK(weft_shutdown());
    free(runs);
}

static atomic_long threads_done;

static void *detached_thread(void *arg)
{
    weft_wg_t *wg = arg;
    atomic_fetch_add(&threads_done, 1);
    ASSERT_OK(weft_wg_done(wg));
    return NULL;
}

TEST_TIMEOUT(detached_threads_counted_by_a_wait_group, 600)
{
    static weft_wg_t wg = WEFT_WG_INIT;
    long n = runner_scaled(2000) + 1;
    for (long i = 0; i < n; i++) {
        ASSERT_OK(weft_wg_add(&wg, 1));
        weft_attr_t a = {.flags = WEFT_DETACHED, .stack_size = 64 << 10};
        weft_fiber_t t;
        ASSERT_OK(weft_thread_spawn(&t, &a, detached_thread, &wg));
        if (i % 64 == 63)
            ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER)); /* keep the number of live threads bounded */
    }
    ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
    ASSERT_EQ(atomic_load(&threads_done), n);
}
