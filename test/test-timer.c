/*
 * Timers and sleeping: a sleep never ends before its deadline, sleepers on one worker wake in deadline
 * order, sleeping gives the worker to other fibers, and sleeping works on every kind of thread.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"


TEST(now_is_positive_and_never_goes_back)
{
    int64_t prev = weft_now();
    ASSERT_GT(prev, 0);
    for (int i = 0; i < 100000; i++) {
        int64_t t = weft_now();
        ASSERT_GE(t, prev);
        prev = t;
    }
}

TEST(deadline_in_adds_to_now_and_saturates)
{
    int64_t before = weft_now();
    int64_t d = weft_deadline_in(5 * MS);
    int64_t after = weft_now();
    ASSERT_GE(d, before + 5 * MS);
    ASSERT_LE(d, after + 5 * MS);
    ASSERT_EQ(weft_deadline_in(-1), WEFT_FOREVER);
    ASSERT_EQ(weft_deadline_in(INT64_MIN), WEFT_FOREVER);
    /* saturating: never a wrapped (negative or past) value */
    int64_t far = weft_deadline_in(INT64_MAX);
    ASSERT(far == WEFT_FOREVER || far == INT64_MAX);
    int64_t near_max = weft_deadline_in(INT64_MAX - 10);
    ASSERT(near_max == WEFT_FOREVER || near_max == INT64_MAX);
    ASSERT_GE(weft_deadline_in(0), before);
}

typedef struct {
    int64_t deadline;
    int64_t woke;
    int64_t order;
} sleeper_t;

static atomic_long wake_seq;

static void *sleep_until_deadline(void *arg)
{
    sleeper_t *s = arg;
    ASSERT_OK(weft_sleep_until(s->deadline));
    s->woke = weft_now();
    s->order = atomic_fetch_add(&wake_seq, 1);
    return NULL;
}

TEST(sleep_until_never_returns_before_its_deadline)
{
    enum { N = 2000 };
    static sleeper_t s[N];
    static weft_fiber_t f[N];
    srand(7);
    int64_t base = weft_now();
    for (int i = 0; i < N; i++) {
        s[i].deadline = base + (rand() % 50000) * 1000; /* up to 50 ms, microsecond grain */
        ASSERT_OK(weft_spawn(&f[i], NULL, sleep_until_deadline, &s[i]));
    }
    for (int i = 0; i < N; i++) {
        ASSERT_OK(weft_join(f[i], NULL));
        if (s[i].woke < s[i].deadline)
            FAIL("sleeper %d woke %lld ns before its deadline", i, (long long)(s[i].deadline - s[i].woke));
    }
    ASSERT_OK(weft_shutdown());
}

static void *repeated_short_sleeps(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 50; i++) {
        int64_t d = weft_deadline_in((rand_r(&seed) % 300) * 1000);
        ASSERT_OK(weft_sleep_until(d));
        ASSERT_GE(weft_now(), d);
        if (rand_r(&seed) % 4 == 0)
            weft_yield();
    }
    return NULL;
}

TEST(repeated_sleeps_on_every_worker_never_end_early)
{
    enum { N = 200 };
    weft_fiber_t f[N];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, repeated_short_sleeps, (void *)(uintptr_t)(i + 1)));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_shutdown());
}

/* Shuffled spawn order, deadlines 3 ms apart: on one worker they must wake in deadline order. */
static void *spawn_spaced_sleepers(void *arg)
{
    enum { N = 20 };
    sleeper_t *s = arg;
    int idx[N];
    for (int i = 0; i < N; i++)
        idx[i] = i;
    srand(11);
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    int64_t base = weft_now() + 20 * MS;
    weft_fiber_t f[N];
    for (int k = 0; k < N; k++) {
        int i = idx[k];
        s[i].deadline = base + i * 3 * MS;
        ASSERT_OK(weft_spawn(&f[k], NULL, sleep_until_deadline, &s[i]));
    }
    for (int k = 0; k < N; k++)
        ASSERT_OK(weft_join(f[k], NULL));
    return NULL;
}

TEST(sleepers_on_one_worker_wake_in_deadline_order)
{
    start_workers(1);
    static sleeper_t s[20];
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, spawn_spaced_sleepers, s));
    ASSERT_OK(weft_join(m, NULL));
    for (int i = 0; i < 20; i++) {
        ASSERT_GE(s[i].woke, s[i].deadline);
        ASSERT_EQ(s[i].order, i);
    }
    ASSERT_OK(weft_shutdown());
}

/* The worker is kept busy past every deadline, so all the timers are due at the same moment: they
 * must still resume in deadline order. A round counts only if every sleeper had parked before the
 * first deadline (a slow machine, or a sanitizer, may not manage that in time): otherwise it is run
 * again with more room. */
enum { DUE_N = 8 };

typedef struct {
    sleeper_t s[DUE_N];
    int64_t margin;
    int parked_in_time;
} due_round_t;

static void *sleepers_due_together(void *arg)
{
    due_round_t *d = arg;
    atomic_store(&wake_seq, 0);
    int64_t base = weft_now() + d->margin;
    weft_fiber_t f[DUE_N];
    for (int i = 0; i < DUE_N; i++) {
        d->s[i] = (sleeper_t){.deadline = base + (DUE_N - i) * 1000}; /* spawned latest-first */
        ASSERT_OK(weft_spawn(&f[i], NULL, sleep_until_deadline, &d->s[i]));
    }
    /* let them all park, then hold the worker until every deadline has passed */
    int parked = 0;
    while (!parked && weft_now() < base) {
        weft_yield();
        parked = 1;
        for (int i = 0; i < DUE_N; i++)
            parked &= weft_fiber_state(f[i]) == WEFT_WAITING;
    }
    d->parked_in_time = parked && weft_now() < base;
    while (weft_now() < base + (DUE_N + 1) * 1000 + 2 * MS)
        cpu_relax();
    for (int i = 0; i < DUE_N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    return NULL;
}

TEST(sleepers_due_at_the_same_moment_wake_in_deadline_order)
{
    start_workers(1);
    static due_round_t d;
    for (d.margin = 5 * MS;; d.margin *= 4) {
        if (d.margin > 2000 * MS)
            FAIL("the sleepers never all parked before their deadlines, even with %lld ms of room",
                 (long long)(d.margin / MS));
        weft_fiber_t m;
        ASSERT_OK(weft_spawn(&m, NULL, sleepers_due_together, &d));
        ASSERT_OK(weft_join(m, NULL));
        if (d.parked_in_time)
            break;
    }
    char got[128];
    int len = 0;
    for (int i = 0; i < DUE_N; i++)
        len += snprintf(got + len, sizeof got - (size_t)len, " %lld", (long long)d.s[i].order);
    for (int i = 0; i < DUE_N; i++) {
        ASSERT_GE(d.s[i].woke, d.s[i].deadline);
        /* fiber i has the (N - i)th deadline: it must be the (N - 1 - i)th to wake */
        if (d.s[i].order != DUE_N - 1 - i)
            FAIL("wake order by spawn index (latest deadline first):%s; want 7 6 5 4 3 2 1 0", got);
    }
    ASSERT_OK(weft_shutdown());
}

static atomic_int sleeper_woke;

static void *sleep_100ms(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_sleep(100 * MS));
    atomic_store(&sleeper_woke, 1);
    return NULL;
}

static void *runs_while_other_sleeps(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)atomic_load(&sleeper_woke);
}

static void *sleep_gives_worker_away(void *arg)
{
    (void)arg;
    weft_fiber_t s, o;
    ASSERT_OK(weft_spawn(&s, NULL, sleep_100ms, NULL));
    weft_yield(); /* the sleeper starts and parks */
    ASSERT_OK(weft_spawn(&o, NULL, runs_while_other_sleeps, NULL));
    void *r;
    ASSERT_OK(weft_join(o, &r));
    ASSERT_EQ((intptr_t)r, 0); /* it ran while the sleeper slept */
    ASSERT_OK(weft_join(s, NULL));
    ASSERT_EQ(atomic_load(&sleeper_woke), 1);
    return NULL;
}

TEST(a_sleeping_fiber_gives_its_worker_to_others)
{
    start_workers(1);
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, sleep_gives_worker_away, NULL));
    ASSERT_OK(weft_join(m, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *past_and_zero_sleeps(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_sleep_until(1));
    ASSERT_OK(weft_sleep_until(weft_now() - 1000));
    ASSERT_OK(weft_sleep_until(WEFT_NOWAIT));
    int64_t d = weft_now();
    ASSERT_OK(weft_sleep(0));
    ASSERT_GE(weft_now(), d);
    ASSERT_OK(weft_sleep(1));
    return (void *)1;
}

TEST(past_deadlines_and_zero_sleeps_return_at_once)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, past_and_zero_sleeps, NULL));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 1);
    past_and_zero_sleeps(NULL); /* and on this foreign thread */
    ASSERT_OK(weft_shutdown());
}

static void *foreign_sleeper(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        int64_t d = weft_deadline_in((i + 1) * 500 * 1000);
        ASSERT_OK(weft_sleep_until(d));
        ASSERT_GE(weft_now(), d);
    }
    int64_t d = weft_deadline_in(2 * MS);
    ASSERT_OK(weft_sleep(2 * MS));
    ASSERT_GE(weft_now(), d);
    return NULL;
}

TEST(sleeping_on_foreign_threads_never_ends_early)
{
    foreign_sleeper(NULL); /* no runtime */
    ASSERT_EQ(weft_workers(), 0);
    ASSERT_OK(weft_start(NULL));
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, foreign_sleeper, NULL), 0);
    foreign_sleeper(NULL);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_OK(weft_shutdown());
}

TEST(a_sleep_wakes_an_idle_runtime)
{
    /* every worker is asleep: only the timer can bring the fiber back */
    weft_config_t c = {.workers = 2, .spin_us = -1};
    ASSERT_OK(weft_start(&c));
    weft_fiber_t f;
    static sleeper_t s;
    s.deadline = weft_deadline_in(30 * MS);
    ASSERT_OK(weft_spawn(&f, NULL, sleep_until_deadline, &s));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_GE(s.woke, s.deadline);
    ASSERT_OK(weft_shutdown());
}

static void *sleep_then_spawn_sleeper(void *arg)
{
    intptr_t depth = (intptr_t)arg;
    int64_t d = weft_deadline_in(MS);
    ASSERT_OK(weft_sleep_until(d));
    ASSERT_GE(weft_now(), d);
    if (depth == 0)
        return (void *)1;
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, sleep_then_spawn_sleeper, (void *)(depth - 1)));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    return (void *)((intptr_t)r + 1);
}

TEST(a_chain_of_sleepers_each_wakes_after_its_deadline)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, sleep_then_spawn_sleeper, (void *)20));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 21);
    ASSERT_OK(weft_shutdown());
}
