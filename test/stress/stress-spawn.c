/*
 * Spawn and join at volume: millions of fibers with random yields, sleeps and nested spawns on every
 * worker, spawned from fibers and from several foreign threads at once. Every fiber's result is checked
 * and every fiber counts its runs: none may be lost or run twice.
 * Sizes scale with WEFT_TEST_SCALE (sanitizer builds use 0.05-0.2).
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

static atomic_uchar *runs; /* one count per fiber index */
static long total;

static void check_runs(long n)
{
    long missing = 0, twice = 0, first_bad = -1;
    for (long i = 0; i < n; i++) {
        unsigned c = atomic_load_explicit(&runs[i], memory_order_relaxed);
        if (c != 1 && first_bad < 0)
            first_bad = i;
        missing += c == 0;
        twice += c > 1;
    }
    if (missing || twice)
        FAIL("%ld fibers never ran, %ld ran more than once (first: index %ld)", missing, twice, first_bad);
}

static void *leaf(void *arg)
{
    return (void *)((uintptr_t)arg * 3 + 1);
}

/* Behaviour picked by the index: most just return, some yield, some sleep, some spawn and join one. */
static void *child(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    uint64_t h = mix(i);
    atomic_fetch_add_explicit(&runs[i], 1, memory_order_relaxed);
    switch (h % 16) {
    case 0: case 1: case 2:
        for (unsigned k = 0; k < (h >> 8) % 4 + 1; k++)
            weft_yield();
        break;
    case 3:
        if ((h >> 8) % 8 == 0)
            weft_sleep((int64_t)((h >> 16) % 50) * 1000);
        break;
    case 4: {
        weft_fiber_t g;
        ASSERT_OK(weft_spawn(&g, NULL, leaf, (void *)i));
        void *r;
        ASSERT_OK(weft_join(g, &r));
        ASSERT_EQ((uintptr_t)r, i * 3 + 1);
        break;
    }
    default: break;
    }
    return (void *)(i * 7 + 5);
}

typedef struct {
    long from, to;
} range_t;

/* Spawns its range in batches, joins each batch, checks every result. */
static void *drive(void *arg)
{
    range_t *r = arg;
    enum { BATCH = 64 };
    weft_fiber_t f[BATCH];
    for (long base = r->from; base < r->to; base += BATCH) {
        long n = r->to - base < BATCH ? r->to - base : BATCH;
        for (long k = 0; k < n; k++)
            ASSERT_OK(weft_spawn(&f[k], NULL, child, (void *)(uintptr_t)(base + k)));
        /* join oldest or newest first by turns: some finished, some not started yet */
        for (long k = 0; k < n; k++) {
            long j = (base / BATCH) % 2 ? n - 1 - k : k;
            void *res;
            ASSERT_OK(weft_join(f[j], &res));
            ASSERT_EQ((uintptr_t)res, (uintptr_t)(base + j) * 7 + 5);
        }
    }
    return NULL;
}

static void *pthread_drive(void *arg)
{
    return drive(arg);
}

TEST_TIMEOUT(millions_of_spawns_and_joins_on_every_worker, 600)
{
    total = runner_scaled(2000000);
    runs = calloc((size_t)total, 1);
    ASSERT(runs);
    ASSERT_OK(weft_start(NULL));
    int drivers = 4 * weft_workers();
    range_t *rg = calloc((size_t)drivers, sizeof *rg);
    weft_fiber_t *d = calloc((size_t)drivers, sizeof *d);
    for (int i = 0; i < drivers; i++) {
        rg[i].from = total * i / drivers;
        rg[i].to = total * (i + 1) / drivers;
        ASSERT_OK(weft_spawn(&d[i], NULL, drive, &rg[i]));
    }
    for (int i = 0; i < drivers; i++)
        ASSERT_OK(weft_join(d[i], NULL));
    ASSERT_OK(weft_shutdown());
    check_runs(total);
    printf("%ld fibers spawned and joined by %d fibers\n", total, drivers);
    free(rg);
    free(d);
    free(runs);
}

TEST_TIMEOUT(foreign_threads_spawn_and_join_at_once, 600)
{
    enum { T = 6 };
    total = runner_scaled(600000);
    runs = calloc((size_t)total, 1);
    ASSERT(runs);
    range_t rg[T + 1];
    pthread_t p[T];
    /* T foreign threads and, at the same time, fibers spawned by fibers */
    long split = total * 2 / 3;
    for (int i = 0; i < T; i++) {
        rg[i].from = split * i / T;
        rg[i].to = split * (i + 1) / T;
        ASSERT_EQ(pthread_create(&p[i], NULL, pthread_drive, &rg[i]), 0);
    }
    rg[T].from = split;
    rg[T].to = total;
    weft_fiber_t d;
    ASSERT_OK(weft_spawn(&d, NULL, drive, &rg[T]));
    for (int i = 0; i < T; i++)
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
    ASSERT_OK(weft_join(d, NULL));
    ASSERT_OK(weft_shutdown());
    check_runs(total);
    free(runs);
}

/* Foreign threads spawn; fibers join them (the handles pass through a shared table). */
typedef struct {
    weft_fiber_t h;
    atomic_int ready;
} slot_t;

static slot_t *slots;

static void *spawn_into_slots(void *arg)
{
    range_t *r = arg;
    for (long i = r->from; i < r->to; i++) {
        ASSERT_OK(weft_spawn(&slots[i].h, NULL, child, (void *)(uintptr_t)i));
        atomic_store_explicit(&slots[i].ready, 1, memory_order_release);
    }
    return NULL;
}

static void *join_slots(void *arg)
{
    range_t *r = arg;
    for (long i = r->from; i < r->to; i++) {
        while (!atomic_load_explicit(&slots[i].ready, memory_order_acquire))
            weft_yield();
        void *res;
        ASSERT_OK(weft_join(slots[i].h, &res));
        ASSERT_EQ((uintptr_t)res, (uintptr_t)i * 7 + 5);
    }
    return NULL;
}

TEST_TIMEOUT(fibers_join_what_foreign_threads_spawn, 600)
{
    enum { T = 4 };
    total = runner_scaled(400000);
    runs = calloc((size_t)total, 1);
    slots = calloc((size_t)total, sizeof *slots);
    ASSERT(runs && slots);
    ASSERT_OK(weft_start(NULL));
    range_t rg[T];
    pthread_t p[T];
    weft_fiber_t j[T];
    for (int i = 0; i < T; i++) {
        rg[i].from = total * i / T;
        rg[i].to = total * (i + 1) / T;
        ASSERT_OK(weft_spawn(&j[i], NULL, join_slots, &rg[i]));
        ASSERT_EQ(pthread_create(&p[i], NULL, spawn_into_slots, &rg[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
        ASSERT_OK(weft_join(j[i], NULL));
    }
    ASSERT_OK(weft_shutdown());
    check_runs(total);
    free(runs);
    free(slots);
}
