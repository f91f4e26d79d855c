/*
 * Start and shutdown under load: many cycles in one process, with foreign threads spawning while the
 * shutdown begins. A spawn that returned 0 must run, whatever moment it chose; one that failed must not.
 * Sizes scale with WEFT_TEST_SCALE.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <weft.h>

#include "runner.h"

static atomic_long spawned_ok, ran, refused;
static atomic_int stop_spawning;

static void *count_run(void *arg)
{
    if ((uintptr_t)arg % 4 == 0)
        weft_yield();
    atomic_fetch_add(&ran, 1);
    return NULL;
}

static void *spawner(void *arg)
{
    uintptr_t seed = (uintptr_t)arg;
    while (!atomic_load(&stop_spawning)) {
        int r = weft_spawn(NULL, NULL, count_run, (void *)seed++);
        if (r == 0)
            atomic_fetch_add(&spawned_ok, 1);
        else if (r == -ESHUTDOWN)
            atomic_fetch_add(&refused, 1);
        else
            FAIL("spawn failed: %d (%s)", r, runner_err_name(r));
    }
    return NULL;
}

static void settle(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

TEST_TIMEOUT(foreign_spawns_racing_a_shutdown_are_never_lost, 600)
{
    enum { T = 3 };
    long cycles = runner_scaled(400);
    for (long c = 0; c < cycles; c++) {
        weft_config_t cfg = {.workers = 1 + (int)(c % 3)};
        ASSERT_OK(weft_start(&cfg));
        atomic_store(&stop_spawning, 0);
        pthread_t p[T];
        for (int i = 0; i < T; i++)
            ASSERT_EQ(pthread_create(&p[i], NULL, spawner, (void *)(uintptr_t)(i * 1000000 + c)), 0);
        settle(200 + (c % 7) * 100);
        ASSERT_OK(weft_shutdown());
        /* a spawner may have started the runtime again after the shutdown: stop it, and shut down again */
        atomic_store(&stop_spawning, 1);
        for (int i = 0; i < T; i++)
            ASSERT_EQ(pthread_join(p[i], NULL), 0);
        ASSERT_OK(weft_shutdown());
        long ok = atomic_load(&spawned_ok), done = atomic_load(&ran);
        if (ok != done)
            FAIL("cycle %ld: %ld spawns returned 0 but %ld fibers ran", c, ok, done);
    }
    printf("%ld cycles, %ld fibers, %ld spawns refused during shutdowns\n", cycles, atomic_load(&ran),
           atomic_load(&refused));
}

static atomic_long tree_ran;

static void *subtree(void *arg)
{
    intptr_t d = (intptr_t)arg;
    atomic_fetch_add(&tree_ran, 1);
    if (d == 0)
        return NULL;
    weft_sleep(10 * 1000);
    ASSERT_OK(weft_go(subtree, (void *)(d - 1)));
    ASSERT_OK(weft_go(subtree, (void *)(d - 1)));
    return NULL;
}

TEST_TIMEOUT(shutdown_cycles_with_detached_trees_still_growing, 600)
{
    long cycles = runner_scaled(100);
    long want = 0;
    for (long c = 0; c < cycles; c++) {
        weft_config_t cfg = {.workers = 1 + (int)(c % 4)};
        ASSERT_OK(weft_start(&cfg));
        intptr_t depth = 4 + c % 6;
        ASSERT_OK(weft_go(subtree, (void *)depth));
        want += ((long)2 << depth) - 1;
        ASSERT_OK(weft_shutdown()); /* while the tree still grows */
        ASSERT_EQ(atomic_load(&tree_ran), want);
        ASSERT_EQ(weft_workers(), 0);
    }
}
