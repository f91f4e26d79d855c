/*
 * Wait group: counting down, waiters of every kind at once, the negative-count error, deadlines,
 * destroy while busy, reuse, static initialisation.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"


typedef struct {
    weft_wg_t *wg;
    atomic_long *count;
    int yields;
} work_t;

static void *work_then_done(void *arg)
{
    work_t *w = arg;
    for (int i = 0; i < w->yields; i++)
        weft_yield();
    atomic_fetch_add(w->count, 1);
    ASSERT_OK(weft_wg_done(w->wg));
    return NULL;
}

TEST(wait_returns_when_every_fiber_is_done)
{
    enum { N = 5000 };
    static weft_wg_t wg = WEFT_WG_INIT;
    static atomic_long count;
    static work_t w[N];
    ASSERT_OK(weft_wg_add(&wg, N));
    for (int i = 0; i < N; i++) {
        w[i] = (work_t){&wg, &count, i % 7};
        ASSERT_OK(weft_go(work_then_done, &w[i]));
    }
    ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
    ASSERT_EQ(atomic_load(&count), N); /* every done() happened before the wait returned */
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_shutdown());
}

static void *fiber_waits_and_counts(void *arg)
{
    work_t *w = arg;
    ASSERT_OK(weft_wg_wait(w->wg, WEFT_FOREVER));
    atomic_fetch_add(w->count, 1);
    return NULL;
}

static void *pthread_waits_and_counts(void *arg)
{
    return fiber_waits_and_counts(arg);
}

TEST(waiters_of_every_kind_wake_together)
{
    enum { FIBERS = 50, THREADS = 4, PTHREADS = 3 };
    static weft_wg_t wg;
    static atomic_long woke;
    ASSERT_OK(weft_wg_init(&wg));
    ASSERT_OK(weft_wg_add(&wg, 3));
    static work_t w = {&wg, &woke, 0};
    weft_fiber_t f[FIBERS], t[THREADS];
    pthread_t p[PTHREADS];
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, fiber_waits_and_counts, &w));
    for (int i = 0; i < THREADS; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, fiber_waits_and_counts, &w));
    for (int i = 0; i < PTHREADS; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, pthread_waits_and_counts, &w), 0);
    /* every fiber and thread is parked on the group before the count reaches zero */
    for (int i = 0; i < FIBERS; i++)
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING);
    for (int i = 0; i < THREADS; i++)
        WAIT_UNTIL(weft_fiber_state(t[i]) == WEFT_WAITING);
    ASSERT_EQ(atomic_load(&woke), 0);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_EQ(weft_wg_destroy(&wg), -EBUSY);
    ASSERT_OK(weft_wg_add(&wg, -1));
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < THREADS; i++)
        ASSERT_OK(weft_join(t[i], NULL));
    for (int i = 0; i < PTHREADS; i++)
        ASSERT_EQ(pthread_join(p[i], NULL), 0);
    ASSERT_EQ(atomic_load(&woke), FIBERS + THREADS + PTHREADS);
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_shutdown());
}

TEST(going_below_zero_is_einval_and_leaves_the_count)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_ERR(weft_wg_done(&wg), -EINVAL);
    ASSERT_ERR(weft_wg_add(&wg, -1), -EINVAL);
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT)); /* still zero */
    ASSERT_OK(weft_wg_add(&wg, 2));
    ASSERT_ERR(weft_wg_add(&wg, -3), -EINVAL);
    ASSERT_ERR(weft_wg_add(&wg, INT64_MIN), -EINVAL);
    ASSERT_ERR(weft_wg_wait(&wg, WEFT_NOWAIT), -ETIMEDOUT); /* still two */
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_ERR(weft_wg_wait(&wg, WEFT_NOWAIT), -ETIMEDOUT); /* one */
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT)); /* zero */
    ASSERT_ERR(weft_wg_done(&wg), -EINVAL);
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    ASSERT_OK(weft_wg_destroy(&wg));
}

TEST(add_zero_and_big_deltas)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 0));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    ASSERT_OK(weft_wg_add(&wg, (int64_t)1 << 40));
    ASSERT_OK(weft_wg_add(&wg, 0));
    ASSERT_ERR(weft_wg_wait(&wg, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_wg_add(&wg, -((int64_t)1 << 40) + 1));
    ASSERT_ERR(weft_wg_wait(&wg, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
}

TEST(a_counter_past_its_limit_is_eoverflow_and_leaves_the_count)
{
    weft_wg_t wg = WEFT_WG_INIT;
    int64_t max = (int64_t)(UINT64_MAX >> 2);
    ASSERT_OK(weft_wg_add(&wg, max - 1));
    ASSERT_ERR(weft_wg_add(&wg, 2), -EOVERFLOW);
    ASSERT_ERR(weft_wg_add(&wg, INT64_MAX), -EOVERFLOW);
    ASSERT_OK(weft_wg_add(&wg, 1));
    ASSERT_ERR(weft_wg_add(&wg, INT64_MIN), -EINVAL);
    ASSERT_OK(weft_wg_add(&wg, -max + 1));
    ASSERT_ERR(weft_wg_wait(&wg, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
}

TEST(a_zero_count_returns_at_once)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
    ASSERT_OK(weft_wg_wait(&wg, 1));
}

static void *wait_with_deadline(void *arg)
{
    weft_wg_t *wg = arg;
    ASSERT_ERR(weft_wg_wait(wg, WEFT_NOWAIT), -ETIMEDOUT);
    for (int i = 0; i < 3; i++) {
        int64_t d = weft_deadline_in(3 * MS);
        ASSERT_ERR(weft_wg_wait(wg, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
    }
    ASSERT_ERR(weft_wg_wait(wg, 1), -ETIMEDOUT); /* long past */
    return (void *)1;
}

static void *pthread_wait_with_deadline(void *arg)
{
    return wait_with_deadline(arg);
}

TEST(a_passed_deadline_is_etimedout_and_leaves_no_waiter_behind)
{
    static weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t f[8], t;
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, wait_with_deadline, &wg));
    ASSERT_OK(weft_thread_spawn(&t, NULL, wait_with_deadline, &wg));
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, pthread_wait_with_deadline, &wg), 0);
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(pthread_join(p, NULL), 0);
    /* the timed-out waiters are gone: the group is not busy, and waking it touches none of them */
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    ASSERT_OK(weft_shutdown());
}

static void *wait_on(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    return (void *)7;
}

TEST(destroy_while_a_fiber_waits_is_ebusy)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    ASSERT_OK(weft_wg_destroy(&wg)); /* a count but no waiter: not busy */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, wait_on, &wg));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING);
    ASSERT_ERR(weft_wg_destroy(&wg), -EBUSY);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_shutdown());
}

static void *reuse_round(void *arg)
{
    work_t *w = arg;
    atomic_fetch_add(w->count, 1);
    ASSERT_OK(weft_wg_done(w->wg));
    return NULL;
}

TEST(a_group_is_reused_after_it_reached_zero)
{
    static weft_wg_t wg = WEFT_WG_INIT;
    static atomic_long count;
    static work_t w = {&wg, &count, 0};
    for (int round = 1; round <= 200; round++) {
        ASSERT_OK(weft_wg_add(&wg, 10));
        for (int i = 0; i < 10; i++)
            ASSERT_OK(weft_go(reuse_round, &w));
        ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
        ASSERT_EQ(atomic_load(&count), round * 10);
        ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    }
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_shutdown());
}

static void *reuse_from_fiber(void *arg)
{
    (void)arg;
    static atomic_long count;
    weft_wg_t wg;
    ASSERT_OK(weft_wg_init(&wg));
    work_t w = {&wg, &count, 1};
    for (int round = 1; round <= 100; round++) {
        ASSERT_OK(weft_wg_add(&wg, 5));
        for (int i = 0; i < 5; i++)
            ASSERT_OK(weft_go(work_then_done, &w));
        ASSERT_OK(weft_wg_wait(&wg, WEFT_FOREVER));
        ASSERT_EQ(atomic_load(&count), round * 5);
    }
    ASSERT_OK(weft_wg_destroy(&wg));
    return NULL;
}

TEST(a_fiber_waits_on_a_group_on_its_own_stack)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, reuse_from_fiber, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(wg_init_and_the_static_initialiser_agree)
{
    weft_wg_t a = WEFT_WG_INIT, b;
    memset(&b, 0xa5, sizeof b);
    ASSERT_OK(weft_wg_init(&b));
    ASSERT_EQ(memcmp(&a, &b, sizeof a), 0);
    ASSERT_OK(weft_wg_wait(&b, WEFT_NOWAIT));
    ASSERT_OK(weft_wg_add(&b, 1));
    ASSERT_ERR(weft_wg_wait(&b, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_wg_done(&b));
    ASSERT_OK(weft_wg_destroy(&b));
}

/* Adds and dones from many threads and fibers at once never lose a step. */
static void *add_and_done(void *arg)
{
    weft_wg_t *wg = arg;
    for (int i = 0; i < 2000; i++) {
        ASSERT_OK(weft_wg_add(wg, 2));
        if (i % 16 == 0)
            weft_yield();
        ASSERT_OK(weft_wg_done(wg));
        ASSERT_OK(weft_wg_done(wg));
    }
    return NULL;
}

TEST(concurrent_adds_and_dones_balance)
{
    static weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    enum { F = 8, T = 2 };
    weft_fiber_t f[F], t[T];
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, add_and_done, &wg));
    for (int i = 0; i < T; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, add_and_done, &wg));
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < T; i++)
        ASSERT_OK(weft_join(t[i], NULL));
    ASSERT_ERR(weft_wg_wait(&wg, WEFT_NOWAIT), -ETIMEDOUT); /* exactly the first one is left */
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_wait(&wg, WEFT_NOWAIT));
    ASSERT_ERR(weft_wg_done(&wg), -EINVAL);
    ASSERT_OK(weft_shutdown());
}

/* A rejected negative add leaves the count unchanged, so it can never make a waiter on a zero count
 * park: every wait below must return. */
static atomic_int neg_stop;

static void *negative_adder(void *arg)
{
    weft_wg_t *wg = arg;
    while (!atomic_load(&neg_stop))
        if (weft_wg_add(wg, -1) != -EINVAL)
            FAIL("a negative add on a zero count was accepted");
    return NULL;
}

static atomic_long zero_waits_done;

static void *wait_on_zero_many_times(void *arg)
{
    for (int i = 0; i < 20000; i++) {
        ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
        atomic_fetch_add(&zero_waits_done, 1);
    }
    return NULL;
}

static void *pthread_wait_on_zero_many_times(void *arg)
{
    return wait_on_zero_many_times(arg);
}

TEST(a_rejected_negative_add_never_strands_a_waiter)
{
    static weft_wg_t wg = WEFT_WG_INIT;
    pthread_t adder;
    ASSERT_EQ(pthread_create(&adder, NULL, negative_adder, &wg), 0);
    weft_fiber_t f[2];
    for (int i = 0; i < 2; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, wait_on_zero_many_times, &wg));
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, pthread_wait_on_zero_many_times, &wg), 0);
    /* a liveness bound, so that a stranded waiter is reported as such, not as a timeout */
    int64_t until = weft_now() + 20 * (int64_t)1000000000;
    while (atomic_load(&zero_waits_done) < 3 * 20000) {
        if (weft_now() > until)
            FAIL("a waiter on a zero count stayed parked (%ld of %d waits returned)",
                 atomic_load(&zero_waits_done), 3 * 20000);
        sched_yield();
    }
    atomic_store(&neg_stop, 1);
    ASSERT_EQ(pthread_join(adder, NULL), 0);
    ASSERT_EQ(pthread_join(p, NULL), 0);
    for (int i = 0; i < 2; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

/* Like Go's WaitGroup, a group's memory is the waiter's again once its wait returned: the waker must
 * not touch it after the wakeup. Here the first waiter to wake (this thread, the last to queue) reuses
 * the memory at once, while the waker still has many other waiters to wake. */
static void *thread_waits(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    return NULL;
}

static void *done_once(void *arg)
{
    ASSERT_OK(weft_wg_done(arg));
    return NULL;
}

TEST(the_waker_leaves_the_group_alone_once_wait_returned)
{
    enum { WAITERS = 100, ROUNDS = 20 };
    int corrupted = 0;
    for (int round = 0; round < ROUNDS && !corrupted; round++) {
        static union {
            weft_wg_t wg;
            unsigned char bytes[sizeof(weft_wg_t)];
        } u;
        ASSERT_OK(weft_wg_init(&u.wg));
        ASSERT_OK(weft_wg_add(&u.wg, 1));
        weft_fiber_t t[WAITERS];
        for (int i = 0; i < WAITERS; i++)
            ASSERT_OK(weft_thread_spawn(&t[i], NULL, thread_waits, &u.wg));
        for (int i = 0; i < WAITERS; i++)
            WAIT_UNTIL(weft_fiber_state(t[i]) == WEFT_WAITING);
        weft_fiber_t d;
        ASSERT_OK(weft_thread_spawn(&d, NULL, done_once, &u.wg));
        ASSERT_OK(weft_wg_wait(&u.wg, WEFT_FOREVER));
        memset(u.bytes, 0xa5, sizeof u.bytes); /* the memory is ours again */
        for (int i = 0; i < WAITERS; i++)
            ASSERT_OK(weft_join(t[i], NULL));
        ASSERT_OK(weft_join(d, NULL));
        for (size_t i = 0; i < sizeof u.bytes; i++)
            if (u.bytes[i] != 0xa5)
                corrupted = 1;
        if (corrupted) {
            char hex[3 * sizeof u.bytes + 1];
            for (size_t i = 0; i < sizeof u.bytes; i++)
                snprintf(hex + 3 * i, 4, "%02x ", u.bytes[i]);
            FAIL("round %d: the group's memory changed after the wait returned: %s", round, hex);
        }
    }
}
