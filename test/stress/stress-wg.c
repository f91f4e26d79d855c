/*
 * Wait groups under races: the last done() against a waiter that is just queueing, over and over, with
 * fibers, weft threads and plain pthreads on both sides; groups on the waiter's stack that must not be
 * touched once the wait returned; waiters whose deadlines pass just as the counter reaches zero.
 * A lost wakeup shows as a hang (the runner's timeout); a late touch as a changed canary.
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

static void *done_it(void *arg)
{
    ASSERT_OK(weft_wg_done(arg));
    return NULL;
}

/* done() after a pause of varying length, so that over the rounds it lands in every part of the
 * waiter's way into its wait */
static _Atomic unsigned pause_seed;

static void *pause_then_done(void *arg)
{
    unsigned n = atomic_fetch_add_explicit(&pause_seed, 7919, memory_order_relaxed) % 4096;
    for (volatile unsigned i = 0; i < n; i++)
        ;
    return done_it(arg);
}

static void *pthread_done(void *arg)
{
    return pause_then_done(arg);
}

/* One round: a group with one count, a done() from somewhere else, the wait here. */
static void one_round(long round, int waker_kind)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t f = WEFT_FIBER_NONE;
    pthread_t p;
    switch (waker_kind) {
    case 0: ASSERT_OK(weft_spawn(&f, NULL, pause_then_done, &wg)); break;
    case 1: ASSERT_OK(weft_thread_spawn(&f, NULL, pause_then_done, &wg)); break;
    default: ASSERT_EQ(pthread_create(&p, NULL, pthread_done, &wg), 0); break;
    }
    int r = weft_wg_wait(&wg, WEFT_FOREVER);
    if (r != 0)
        FAIL("round %ld: wait returned %d (%s)", round, r, runner_err_name(r));
    if (waker_kind < 2)
        ASSERT_OK(weft_join(f, NULL));
    else
        ASSERT_EQ(pthread_join(p, NULL), 0);
}

static void *rounds_in_a_fiber(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++)
        one_round(i, (int)(i % 3));
    return NULL;
}

TEST_TIMEOUT(the_last_done_races_a_queueing_waiter, 600)
{
    long n = runner_scaled(100000);
    /* waiters that are fibers, on every worker at once */
    weft_fiber_t f[4];
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, rounds_in_a_fiber, (void *)(intptr_t)(n / 4)));
    /* and a waiter that is a plain thread */
    for (long i = 0; i < n / 4; i++)
        one_round(i, (int)(i % 3));
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

/* Many waiters, one group on the stack of the one that returns first; the group's bytes around it are
 * watched for late writes. */
typedef struct {
    uint64_t before[4];
    weft_wg_t wg;
    uint64_t after[4];
} guarded_wg;

static void *wait_forever(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    return NULL;
}

static void *many_waiters_round(void *arg)
{
    long round = (long)(intptr_t)arg;
    enum { W = 8 };
    guarded_wg g;
    memset(&g, 0x5a, sizeof g);
    ASSERT_OK(weft_wg_init(&g.wg));
    ASSERT_OK(weft_wg_add(&g.wg, 3));
    weft_fiber_t w[W], d[3];
    for (int i = 0; i < W; i++)
        ASSERT_OK(weft_spawn(&w[i], NULL, wait_forever, &g.wg));
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_spawn(&d[i], NULL, done_it, &g.wg));
    ASSERT_OK(weft_wg_wait(&g.wg, WEFT_FOREVER));
    for (int i = 0; i < W; i++)
        ASSERT_OK(weft_join(w[i], NULL));
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_join(d[i], NULL));
    for (int i = 0; i < 4; i++)
        if (g.before[i] != 0x5a5a5a5a5a5a5a5aull || g.after[i] != 0x5a5a5a5a5a5a5a5aull)
            FAIL("round %ld: the bytes around the group changed", round);
    ASSERT_OK(weft_wg_destroy(&g.wg));
    return NULL;
}

TEST_TIMEOUT(many_waiters_and_wakers_leave_the_neighbours_alone, 600)
{
    long n = runner_scaled(5000);
    for (long i = 0; i < n; i++) {
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, many_waiters_round, (void *)(intptr_t)i));
        ASSERT_OK(weft_join(f, NULL));
    }
    ASSERT_OK(weft_shutdown());
}

/* Deadlines that pass as the counter reaches zero: every wait ends, with 0 or -ETIMEDOUT, and a wait
 * that timed out left nothing behind (the group is not busy afterwards). */
static atomic_long timed_out, succeeded;

static _Atomic long wait_ns;

static void *wait_briefly(void *arg)
{
    /* deadlines from 0 to 30 us, spread over the rounds */
    long ns = atomic_fetch_add_explicit(&wait_ns, 1237, memory_order_relaxed) % 30000;
    int r = weft_wg_wait(arg, weft_deadline_in(ns));
    if (r == -ETIMEDOUT)
        atomic_fetch_add(&timed_out, 1);
    else if (r == 0)
        atomic_fetch_add(&succeeded, 1);
    else
        FAIL("wait returned %d (%s)", r, runner_err_name(r));
    return NULL;
}

static void *spin_then_done(void *arg)
{
    /* 0 to 40 us of work first, so that it ends on either side of the deadlines */
    int64_t until = weft_now() + (atomic_fetch_add_explicit(&pause_seed, 7919, memory_order_relaxed) % 40) * 1000;
    while (weft_now() < until)
        ;
    return done_it(arg);
}

TEST_TIMEOUT(deadlines_passing_as_the_count_reaches_zero, 600)
{
    long n = runner_scaled(5000);
    for (long i = 0; i < n; i++) {
        weft_wg_t wg = WEFT_WG_INIT;
        ASSERT_OK(weft_wg_add(&wg, 1));
        weft_fiber_t w[4], d;
        for (int k = 0; k < 4; k++)
            ASSERT_OK(weft_spawn(&w[k], NULL, wait_briefly, &wg));
        ASSERT_OK(weft_spawn(&d, NULL, spin_then_done, &wg));
        for (int k = 0; k < 4; k++)
            ASSERT_OK(weft_join(w[k], NULL));
        ASSERT_OK(weft_join(d, NULL));
        ASSERT_OK(weft_wg_destroy(&wg)); /* nobody left on the list */
        ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    }
    ASSERT_EQ(atomic_load(&timed_out) + atomic_load(&succeeded), 4 * n);
    printf("%ld waits timed out, %ld saw the count reach zero\n", atomic_load(&timed_out), atomic_load(&succeeded));
    ASSERT_OK(weft_shutdown());
}
