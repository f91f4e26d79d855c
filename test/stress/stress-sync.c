/*
 * Locks and synchronizers under races: a million park/unpark hand-offs with random yields (semaphore
 * and condition-variable ping-pong across workers and threads), a mutex and an rwlock hammered by many
 * fibers and plain threads with random deadlines and cancels, barriers round after round. A lost
 * wakeup shows as a hang (the runner's timeout), a lost or doubled permit as a wrong count.
 * Sizes scale with WEFT_TEST_SCALE.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#include "runner.h"

#define MS ((int64_t)1000000)

static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* ------------------------------------------------------------------------------------------------ */
/* Ping-pong: each side waits for its turn; every turn is a park and an unpark.                      */

static weft_sem_t turn_sem[2];
static long pp_rounds;

static void *sem_side(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint32_t seed = (uint32_t)me * 31 + 5;
    for (long i = 0; i < pp_rounds; i++) {
        ASSERT_OK(weft_sem_acquire(&turn_sem[me], WEFT_FOREVER));
        if (rnd(&seed) % 16 == 0)
            weft_yield();
        ASSERT_OK(weft_sem_release(&turn_sem[1 - me], 1));
    }
    return NULL;
}

static void sem_pingpong(int thread_b)
{
    ASSERT_OK(weft_sem_init(&turn_sem[0], 1));
    ASSERT_OK(weft_sem_init(&turn_sem[1], 0));
    weft_fiber_t a, b;
    pthread_t t;
    ASSERT_OK(weft_spawn(&a, NULL, sem_side, (void *)0));
    if (thread_b)
        ASSERT_EQ(pthread_create(&t, NULL, sem_side, (void *)1), 0);
    else
        ASSERT_OK(weft_spawn(&b, NULL, sem_side, (void *)1));
    ASSERT_OK(weft_join(a, NULL));
    if (thread_b)
        ASSERT_EQ(pthread_join(t, NULL), 0);
    else
        ASSERT_OK(weft_join(b, NULL));
    ASSERT_EQ(weft_sem_value(&turn_sem[0]), 1);
    ASSERT_EQ(weft_sem_value(&turn_sem[1]), 0);
}

TEST_TIMEOUT(a_million_semaphore_handoffs_between_fibers_and_a_thread, 600)
{
    ASSERT_OK(weft_start(&(weft_config_t){.workers = 2}));
    pp_rounds = runner_scaled(500000);
    sem_pingpong(0); /* fiber and fiber: two parks and two unparks a round */
    pp_rounds = runner_scaled(100000);
    sem_pingpong(1); /* fiber and plain thread */
    ASSERT_OK(weft_shutdown());
}

static weft_mutex_t cm = WEFT_MUTEX_INIT;
static weft_cond_t cc = WEFT_COND_INIT;
static long cturn, crounds;

static void *cond_side(void *arg)
{
    int me = (int)(intptr_t)arg, n = 3;
    uint32_t seed = (uint32_t)me * 17 + 1;
    for (long i = 0; i < crounds; i++) {
        ASSERT_OK(weft_mutex_lock(&cm, WEFT_FOREVER));
        while (cturn % n != me)
            ASSERT_OK(weft_cond_wait(&cc, &cm, WEFT_FOREVER));
        cturn++;
        /* three take turns on one condition variable: a signal may wake the wrong one, so broadcast */
        ASSERT_OK(weft_cond_broadcast(&cc));
        ASSERT_OK(weft_mutex_unlock(&cm));
        if (rnd(&seed) % 8 == 0)
            weft_yield();
    }
    return NULL;
}

TEST_TIMEOUT(three_take_turns_on_one_condition_variable, 600)
{
    ASSERT_OK(weft_start(&(weft_config_t){.workers = 2}));
    crounds = runner_scaled(100000);
    weft_fiber_t a, b;
    pthread_t t;
    ASSERT_OK(weft_spawn(&a, NULL, cond_side, (void *)0));
    ASSERT_OK(weft_spawn(&b, NULL, cond_side, (void *)1));
    ASSERT_EQ(pthread_create(&t, NULL, cond_side, (void *)2), 0);
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_OK(weft_join(b, NULL));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(cturn, 3 * crounds);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Mutex and rwlock with deadlines and cancels                                                       */

static weft_mutex_t hm = WEFT_MUTEX_INIT;
static weft_rwlock_t hrw = WEFT_RWLOCK_INIT;
static long h_plain;          /* under hm */
static long rw_plain;         /* under hrw's write side */
static atomic_long h_done, rw_done;
static atomic_int rw_readers, rw_writers;
static long h_rounds;

static void *hammer(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg * 2654435761u + 9;
    long mine = 0, mine_rw = 0;
    for (long i = 0; i < h_rounds; i++) {
        uint32_t r = rnd(&seed);
        int64_t deadline = r % 4 == 0 ? weft_deadline_in((int64_t)(r >> 8) % 200000) : WEFT_FOREVER;
        if (r % 3 == 0) {
            int e = weft_rwlock_wrlock(&hrw, deadline);
            if (e == -ETIMEDOUT || e == -ECANCELED)
                continue;
            ASSERT_OK(e);
            ASSERT_EQ(atomic_fetch_add(&rw_writers, 1), 0);
            ASSERT_EQ(atomic_load(&rw_readers), 0);
            rw_plain++;
            mine_rw++;
            atomic_fetch_sub(&rw_writers, 1);
            ASSERT_OK(weft_rwlock_unlock(&hrw));
        } else if (r % 3 == 1) {
            int e = weft_rwlock_rdlock(&hrw, deadline);
            if (e == -ETIMEDOUT || e == -ECANCELED)
                continue;
            ASSERT_OK(e);
            atomic_fetch_add(&rw_readers, 1);
            ASSERT_EQ(atomic_load(&rw_writers), 0);
            if (r % 5 == 0)
                weft_yield();
            atomic_fetch_sub(&rw_readers, 1);
            ASSERT_OK(weft_rwlock_unlock(&hrw));
        } else {
            int e = weft_mutex_lock(&hm, deadline);
            if (e == -ETIMEDOUT || e == -ECANCELED)
                continue;
            ASSERT_OK(e);
            long v = h_plain;
            if (r % 7 == 0)
                weft_yield();
            h_plain = v + 1;
            mine++;
            ASSERT_OK(weft_mutex_unlock(&hm));
        }
    }
    atomic_fetch_add(&h_done, mine);
    atomic_fetch_add(&rw_done, mine_rw);
    return NULL;
}

TEST_TIMEOUT(mutex_and_rwlock_stay_exact_under_deadlines_and_cancels, 600)
{
    ASSERT_OK(weft_start(&(weft_config_t){.workers = 2}));
    h_rounds = runner_scaled(20000);
    enum { FIBERS = 48, THREADS = 3 };
    weft_fiber_t f[FIBERS], wt;
    pthread_t t[THREADS];
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, hammer, (void *)(uintptr_t)i));
    ASSERT_OK(weft_thread_spawn(&wt, NULL, hammer, (void *)(uintptr_t)999));
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)(1000 + i)), 0);
    /* cancel some of them part-way: their waits end with -ECANCELED from then on, and they finish */
    uint32_t seed = 77;
    for (int i = 0; i < FIBERS / 4; i++) {
        weft_sleep((int64_t)(rnd(&seed) % 2000) * 1000);
        ASSERT_OK(weft_cancel(f[rnd(&seed) % FIBERS]));
    }
    ASSERT_OK(weft_cancel(wt));
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_join(wt, NULL));
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(h_plain, atomic_load(&h_done));
    ASSERT_EQ(rw_plain, atomic_load(&rw_done));
    ASSERT_OK(weft_mutex_destroy(&hm)); /* unlocked and nobody queued */
    ASSERT_OK(weft_rwlock_destroy(&hrw));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Barrier rounds                                                                                    */

enum { BP = 9 };
static weft_barrier_t bar;
static long b_rounds;
static atomic_long b_arrived, b_serials;

static void *barrier_side(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg + 3;
    for (long r = 0; r < b_rounds; r++) {
        if (rnd(&seed) % 4 == 0)
            weft_yield();
        atomic_fetch_add(&b_arrived, 1);
        int s = weft_barrier_wait(&bar, WEFT_FOREVER);
        ASSERT(s == 0 || s == WEFT_BARRIER_SERIAL);
        if (s)
            atomic_fetch_add(&b_serials, 1);
        ASSERT_GE(atomic_load(&b_arrived), (r + 1) * BP);
    }
    return NULL;
}

TEST_TIMEOUT(barriers_round_after_round_with_fibers_and_threads, 600)
{
    ASSERT_OK(weft_start(&(weft_config_t){.workers = 2}));
    b_rounds = runner_scaled(20000);
    ASSERT_OK(weft_barrier_init(&bar, BP));
    weft_fiber_t f[BP - 1];
    pthread_t t;
    for (int i = 0; i < BP - 1; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, barrier_side, (void *)(uintptr_t)i));
    ASSERT_EQ(pthread_create(&t, NULL, barrier_side, (void *)(uintptr_t)100), 0);
    for (int i = 0; i < BP - 1; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(atomic_load(&b_serials), b_rounds);
    ASSERT_OK(weft_barrier_destroy(&bar));
    ASSERT_OK(weft_shutdown());
}
