/*
 * The blocking-call pool: a call runs on a thread of its own while its fiber parks and the worker runs
 * other fibers; results come back; the pool is bounded by the config, and past it calls queue and all
 * complete; a queued call whose deadline passes never runs, one that started runs to its end; a thread
 * that is not a fiber runs the call itself. The system's thread limit: test-limits.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void *whose_thread(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)syscall(SYS_gettid);
}

static void *call_and_compare(void *arg)
{
    (void)arg;
    void *tid = NULL;
    ASSERT_OK(weft_blocking(whose_thread, NULL, &tid));
    ASSERT_NE((intptr_t)tid, (intptr_t)syscall(SYS_gettid)); /* not the worker's thread */
    return NULL;
}

TEST(a_call_runs_on_a_pool_thread_and_its_result_comes_back)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, call_and_compare, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_ERR(weft_blocking(NULL, NULL, NULL), -EINVAL);
    ASSERT_OK(weft_shutdown());
}

TEST(from_a_thread_that_is_not_a_fiber_the_call_runs_right_there)
{
    void *tid = NULL;
    ASSERT_OK(weft_blocking(whose_thread, NULL, &tid));
    ASSERT_EQ((intptr_t)tid, (intptr_t)syscall(SYS_gettid));
    ASSERT_EQ(weft_workers(), 0);
}

/* ------------------------------------------------------------------------------------------------ */

static atomic_long ticks;
static atomic_int call_done;

static void *sleep_200ms(void *arg)
{
    sleep_ms(200);
    atomic_store(&call_done, 1);
    return arg;
}

static void *blocking_caller(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_blocking(sleep_200ms, (void *)42, &r));
    ASSERT_EQ((intptr_t)r, 42);
    return NULL;
}

static void *tick_until_done(void *arg)
{
    (void)arg;
    while (!atomic_load(&call_done)) {
        atomic_fetch_add(&ticks, 1);
        weft_sleep(MS);
    }
    return NULL;
}

TEST(a_blocking_call_never_stalls_the_other_fibers_of_its_worker)
{
    start_workers(1);
    weft_fiber_t b, t;
    ASSERT_OK(weft_spawn(&b, NULL, blocking_caller, NULL));
    ASSERT_OK(weft_spawn(&t, NULL, tick_until_done, NULL));
    ASSERT_OK(weft_join(b, NULL));
    ASSERT_OK(weft_join(t, NULL));
    /* 200 ms of 1 ms sleeps on the same worker: far more than a handful got through */
    ASSERT_GT(atomic_load(&ticks), 20);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */

static atomic_int running, most_running, finished;

static void *count_concurrency(void *arg)
{
    int now = atomic_fetch_add(&running, 1) + 1;
    int m = atomic_load(&most_running);
    while (now > m && !atomic_compare_exchange_weak(&most_running, &m, now))
        ;
    sleep_ms(20);
    atomic_fetch_sub(&running, 1);
    atomic_fetch_add(&finished, 1);
    return arg;
}

static void *call_counted(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_blocking(count_concurrency, arg, &r));
    ASSERT_PTR_EQ(r, arg);
    return NULL;
}

TEST(past_the_configured_bound_calls_queue_and_all_complete)
{
    weft_config_t c = {.workers = 2, .blocking_threads = 2};
    ASSERT_OK(weft_start(&c));
    enum { N = 20 };
    weft_fiber_t f[N];
    for (intptr_t i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, call_counted, (void *)i));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_EQ(atomic_load(&finished), N);
    ASSERT_LE(atomic_load(&most_running), 2);
    ASSERT_GE(atomic_load(&most_running), 1);
    ASSERT_OK(weft_shutdown());
    weft_config_t bad = {.blocking_threads = -1};
    ASSERT_ERR(weft_start(&bad), -EINVAL);
}

/* ------------------------------------------------------------------------------------------------ */

static atomic_int must_not_run;

static void *never(void *arg)
{
    atomic_store(&must_not_run, 1);
    return arg;
}

static void *occupy(void *arg)
{
    (void)arg;
    sleep_ms(300);
    return NULL;
}

static void *occupier(void *arg)
{
    ASSERT_OK(weft_blocking(occupy, arg, NULL));
    return NULL;
}

static void *queued_with_a_deadline(void *arg)
{
    (void)arg;
    int64_t d = weft_deadline_in(20 * MS);
    ASSERT_ERR(weft_blocking_until(never, NULL, NULL, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    ASSERT_ERR(weft_blocking_until(never, NULL, NULL, WEFT_NOWAIT), -ETIMEDOUT);
    return NULL;
}

TEST(a_queued_call_whose_deadline_passes_never_runs)
{
    weft_config_t c = {.workers = 1, .blocking_threads = 1};
    ASSERT_OK(weft_start(&c));
    weft_fiber_t o, q;
    ASSERT_OK(weft_spawn(&o, NULL, occupier, NULL));
    WAIT_UNTIL(weft_fiber_state(o) == WEFT_WAITING); /* the only pool thread is busy for 300 ms */
    ASSERT_OK(weft_spawn(&q, NULL, queued_with_a_deadline, NULL));
    ASSERT_OK(weft_join(q, NULL));
    ASSERT_OK(weft_join(o, NULL));
    sleep_ms(50); /* had the call stayed queued, the freed thread would have run it by now */
    ASSERT_EQ(atomic_load(&must_not_run), 0);
    ASSERT_OK(weft_shutdown());
}

static void *sleep_50ms(void *arg)
{
    sleep_ms(50);
    return arg;
}

static void *running_past_its_deadline(void *arg)
{
    (void)arg;
    void *r = NULL;
    int64_t t0 = weft_now();
    ASSERT_OK(weft_blocking_until(sleep_50ms, (void *)7, &r, weft_deadline_in(5 * MS)));
    ASSERT_EQ((intptr_t)r, 7);                /* it ran to the end ... */
    ASSERT_GE(weft_now() - t0, 50 * MS);      /* ... and we waited for it */
    return NULL;
}

TEST(a_call_that_started_runs_to_its_end_and_is_waited_for)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, running_past_its_deadline, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}
