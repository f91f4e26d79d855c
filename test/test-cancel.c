/*
 * Cancellation: weft_cancel wakes a fiber or weft thread from any wait with -ECANCELED, keeps every
 * later wait from starting, and never loses what a wait had already won (a permit, a lock, a signal,
 * a count) when the cancel and the wakeup race.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static weft_mutex_t mu = WEFT_MUTEX_INIT;
static weft_rwlock_t rw = WEFT_RWLOCK_INIT;
static weft_cond_t cv = WEFT_COND_INIT;
static weft_sem_t sem;
static weft_barrier_t bar;
static weft_latch_t latch;
static weft_wg_t wg = WEFT_WG_INIT;
static weft_once_t once = WEFT_ONCE_INIT;
static weft_fiber_t forever_fiber;
static int pipe_fds[2];
static weft_chan_t *chan, *chan_s; /* receives wait on one, the send on the other */
static atomic_int once_may_finish;

static void slow_init(void *arg)
{
    while (!atomic_load(&once_may_finish))
        weft_sleep(MS);
}

static void *runs_once(void *arg)
{
    ASSERT_OK(weft_once(&once, slow_init, NULL));
    return NULL;
}

static void *never_ends(void *arg)
{
    return (void *)(intptr_t)weft_sleep_until(WEFT_FOREVER);
}

/* Each waits in one way; the result is what the wait returned. */
static void *wait_in(void *arg)
{
    int kind = (int)(intptr_t)arg, r = -1;
    char c;
    switch (kind) {
    case 0: r = weft_sleep_until(WEFT_FOREVER); break;
    case 1: r = weft_join(forever_fiber, NULL); break;
    case 2: r = weft_mutex_lock(&mu, WEFT_FOREVER); break;
    case 3: r = weft_rwlock_wrlock(&rw, WEFT_FOREVER); break;
    case 4: {
        weft_mutex_t m = WEFT_MUTEX_INIT;
        ASSERT_OK(weft_mutex_lock(&m, WEFT_FOREVER));
        r = weft_cond_wait(&cv, &m, WEFT_FOREVER);
        ASSERT_OK(weft_mutex_unlock(&m)); /* held again even so */
        break;
    }
    case 5: r = weft_sem_acquire(&sem, WEFT_FOREVER); break;
    case 6: r = weft_barrier_wait(&bar, WEFT_FOREVER); break;
    case 7: r = weft_latch_wait(&latch, WEFT_FOREVER); break;
    case 8: r = weft_wg_wait(&wg, WEFT_FOREVER); break;
    case 9: r = (int)weft_read(pipe_fds[0], &c, 1, WEFT_FOREVER); break;
    case 10: r = weft_once(&once, slow_init, NULL); break;
    case 11: r = weft_sleep(10 * SEC); break;
    case 12: r = weft_chan_recv(chan, &c, WEFT_FOREVER); break;
    case 13: r = weft_chan_send(chan_s, "x", WEFT_FOREVER); break;
    case 14: {
        weft_case_t cs[2] = {{.chan = chan, .op = WEFT_RECV, .elem = &c}, {.chan = NULL, .op = WEFT_SEND}};
        r = weft_select(cs, 2, WEFT_FOREVER);
        break;
    }
    }
    return (void *)(intptr_t)r;
}

static const char *const kinds[] = {"sleep", "join", "mutex", "rwlock", "cond", "sem", "barrier", "latch",
                                    "wait group", "fd read", "once", "sleep(10 s)", "chan receive",
                                    "chan send", "select"};
enum { KINDS = sizeof kinds / sizeof kinds[0] };

static void set_up_waits(void)
{
    ASSERT_OK(weft_spawn(&forever_fiber, NULL, never_ends, NULL));
    ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
    ASSERT_OK(weft_rwlock_rdlock(&rw, WEFT_FOREVER));
    ASSERT_OK(weft_sem_init(&sem, 0));
    ASSERT_OK(weft_barrier_init(&bar, 2));
    ASSERT_OK(weft_latch_init(&latch, 1));
    ASSERT_OK(weft_wg_add(&wg, 1));
    ASSERT_EQ(pipe(pipe_fds), 0);
    ASSERT_OK(weft_chan_new(&chan, 1, 0));
    ASSERT_OK(weft_chan_new(&chan_s, 1, 0));
    weft_fiber_t o;
    ASSERT_OK(weft_spawn(&o, NULL, runs_once, NULL));
    ASSERT_OK(weft_detach(o));
    WAIT_UNTIL(weft_fiber_state(o) == WEFT_WAITING); /* in slow_init: now others wait for it */
}

static void check_objects_intact(void)
{
    /* nothing the cancelled waiters queued for was taken or left behind */
    ASSERT_EQ(weft_sem_value(&sem), 0);
    ASSERT_OK(weft_sem_release(&sem, 1));
    ASSERT_OK(weft_sem_acquire(&sem, WEFT_NOWAIT));
    ASSERT_OK(weft_sem_destroy(&sem));
    ASSERT_OK(weft_mutex_unlock(&mu));
    ASSERT_OK(weft_mutex_destroy(&mu));
    ASSERT_OK(weft_rwlock_unlock(&rw));
    ASSERT_OK(weft_rwlock_destroy(&rw));
    ASSERT_OK(weft_cond_destroy(&cv));
    ASSERT_OK(weft_barrier_destroy(&bar)); /* the arrival was withdrawn */
    ASSERT_EQ(weft_latch_done(&latch), 0);
    ASSERT_OK(weft_latch_count_down(&latch, 1));
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_wg_destroy(&wg));
    atomic_store(&once_may_finish, 1);
    ASSERT_OK(weft_once(&once, slow_init, NULL));
    ASSERT_OK(weft_chan_free(chan)); /* nobody waits on them any more */
    ASSERT_OK(weft_chan_free(chan_s));
}

static void cancel_every_kind_of_wait(int (*spawn)(weft_fiber_t *, const weft_attr_t *, weft_fn, void *))
{
    start_workers(2);
    set_up_waits();
    weft_fiber_t f[KINDS];
    for (int k = 0; k < KINDS; k++)
        ASSERT_OK(spawn(&f[k], NULL, wait_in, (void *)(intptr_t)k));
    for (int k = 0; k < KINDS; k++)
        WAIT_UNTIL(weft_fiber_state(f[k]) == WEFT_WAITING);
    weft_sleep(5 * MS); /* threads show WAITING a moment before they sleep: let them get there */
    for (int k = 0; k < KINDS; k++)
        ASSERT_OK(weft_cancel(f[k]));
    for (int k = 0; k < KINDS; k++) {
        void *r;
        ASSERT_OK(weft_join(f[k], &r));
        if ((int)(intptr_t)r != -ECANCELED)
            FAIL("a wait in %s returned %d, not -ECANCELED", kinds[k], (int)(intptr_t)r);
    }
    check_objects_intact();
    ASSERT_OK(weft_cancel(forever_fiber));
    ASSERT_OK(weft_join(forever_fiber, NULL));
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    ASSERT_OK(weft_shutdown());
}

TEST(cancel_wakes_a_fiber_from_every_kind_of_wait_and_takes_nothing)
{
    cancel_every_kind_of_wait(weft_spawn);
}

TEST(cancel_wakes_a_weft_thread_from_every_kind_of_wait_and_takes_nothing)
{
    cancel_every_kind_of_wait(weft_thread_spawn);
}

static atomic_int may_go;

static void *cancelled_then_waits(void *arg)
{
    while (!atomic_load(&may_go))
        weft_yield();
    int results[6];
    results[0] = weft_cancelled();
    results[1] = weft_sleep(SEC);
    weft_mutex_t m = WEFT_MUTEX_INIT;
    results[2] = weft_mutex_lock(&m, WEFT_FOREVER); /* free: no wait needed, so it is taken */
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_OK(weft_mutex_lock(&m, WEFT_FOREVER));
    results[3] = weft_mutex_lock(&m, WEFT_FOREVER); /* held: would wait, so it does not */
    ASSERT_OK(weft_mutex_unlock(&m));
    results[4] = weft_yield();
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 1));
    results[5] = weft_sem_acquire(&s, WEFT_FOREVER);
    ASSERT_EQ(results[0], 1);
    ASSERT_EQ(results[1], -ECANCELED);
    ASSERT_EQ(results[2], 0);
    ASSERT_EQ(results[3], -ECANCELED);
    ASSERT_EQ(results[4], 0);
    ASSERT_EQ(results[5], 0);
    return NULL;
}

TEST(a_cancel_stays_for_every_later_wait_and_only_waits_see_it)
{
    start_workers(1);
    ASSERT_EQ(weft_cancelled(), 0);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, cancelled_then_waits, NULL));
    ASSERT_OK(weft_cancel(f)); /* not waiting yet: remembered */
    atomic_store(&may_go, 1);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_ERR(weft_cancel(f), -ESRCH); /* joined: the handle names nothing */
    ASSERT_ERR(weft_cancel(WEFT_FIBER_NONE), -ESRCH);
    /* a cancel does not outlive its fiber: the next fiber on the same descriptor waits normally */
    weft_fiber_t g;
    ASSERT_OK(weft_spawn(&g, NULL, wait_in, (void *)(intptr_t)11));
    WAIT_UNTIL(weft_fiber_state(g) == WEFT_WAITING);
    ASSERT_EQ(weft_fiber_state(g), WEFT_WAITING);
    ASSERT_OK(weft_cancel(g));
    ASSERT_OK(weft_join(g, NULL));
    ASSERT_OK(weft_shutdown());
}

/* Races: a wakeup and a cancel at once. Whatever the outcome, what was given is not lost. */
static weft_sem_t race_sem;
static weft_fiber_t racer;
static atomic_int racer_parked;

static void *acquire_once(void *arg)
{
    atomic_store(&racer_parked, 1);
    return (void *)(intptr_t)weft_sem_acquire(&race_sem, WEFT_FOREVER);
}

static void *release_one(void *arg)
{
    ASSERT_OK(weft_sem_release(&race_sem, 1));
    return NULL;
}

static void *cancel_racer(void *arg)
{
    ASSERT_OK(weft_cancel(racer));
    return NULL;
}

TEST_TIMEOUT(a_permit_given_as_the_cancel_comes_is_never_lost, 120)
{
    start_workers(2);
    int got = 0, cancelled = 0;
    for (int i = 0; i < 3000; i++) {
        ASSERT_OK(weft_sem_init(&race_sem, 0));
        atomic_store(&racer_parked, 0);
        ASSERT_OK(weft_spawn(&racer, NULL, acquire_once, NULL));
        while (!atomic_load(&racer_parked))
            weft_yield();
        if (i % 2)
            weft_yield();
        weft_fiber_t a, b; /* which goes first varies: both outcomes must come up */
        if (i % 3 == 0) {
            ASSERT_OK(weft_spawn(&b, NULL, cancel_racer, NULL));
            ASSERT_OK(weft_spawn(&a, NULL, release_one, NULL));
        } else {
            ASSERT_OK(weft_spawn(&a, NULL, release_one, NULL));
            ASSERT_OK(weft_spawn(&b, NULL, cancel_racer, NULL));
        }
        void *r;
        ASSERT_OK(weft_join(a, NULL));
        ASSERT_OK(weft_join(b, NULL)); /* (before the racer's join: its handle is good till then) */
        ASSERT_OK(weft_join(racer, &r));
        int64_t left = weft_sem_value(&race_sem);
        if ((int)(intptr_t)r == 0) {
            got++;
            ASSERT_EQ(left, 0);
        } else {
            ASSERT_EQ((int)(intptr_t)r, -ECANCELED);
            cancelled++;
            ASSERT_EQ(left, 1); /* the permit stayed in the semaphore */
        }
        ASSERT_OK(weft_sem_destroy(&race_sem));
    }
    printf("permit won %d times, cancel won %d times\n", got, cancelled);
    ASSERT_GT(got, 0);
    ASSERT_GT(cancelled, 0);
    ASSERT_OK(weft_shutdown());
}

static weft_mutex_t race_mu = WEFT_MUTEX_INIT;

static void *lock_once(void *arg)
{
    atomic_store(&racer_parked, 1);
    int r = weft_mutex_lock(&race_mu, WEFT_FOREVER);
    if (r == 0)
        ASSERT_OK(weft_mutex_unlock(&race_mu));
    return (void *)(intptr_t)r;
}

static void *unlock_race_mu(void *arg)
{
    ASSERT_OK(weft_mutex_unlock(&race_mu));
    return NULL;
}

TEST_TIMEOUT(a_mutex_handed_over_as_the_cancel_comes_is_never_left_locked, 120)
{
    start_workers(2);
    for (int i = 0; i < 3000; i++) {
        ASSERT_OK(weft_mutex_lock(&race_mu, WEFT_FOREVER));
        atomic_store(&racer_parked, 0);
        ASSERT_OK(weft_spawn(&racer, NULL, lock_once, NULL));
        while (!atomic_load(&racer_parked))
            weft_yield();
        weft_fiber_t a, b;
        if (i % 3 == 0) {
            ASSERT_OK(weft_spawn(&b, NULL, cancel_racer, NULL));
            ASSERT_OK(weft_spawn(&a, NULL, unlock_race_mu, NULL));
        } else {
            ASSERT_OK(weft_spawn(&a, NULL, unlock_race_mu, NULL));
            ASSERT_OK(weft_spawn(&b, NULL, cancel_racer, NULL));
        }
        ASSERT_OK(weft_join(a, NULL));
        ASSERT_OK(weft_join(b, NULL));
        ASSERT_OK(weft_join(racer, NULL));
        ASSERT_OK(weft_mutex_destroy(&race_mu)); /* unlocked, nobody queued */
    }
    ASSERT_OK(weft_shutdown());
}

/* A parallel loop's sub-ranges live in the caller's frame: a cancel must not cut the loop short (it
 * finishes, every index once), and waits after it see the cancel as usual. */
enum { PN = 1 << 16 };
static atomic_int seen[PN];
static atomic_int loop_started;

static void visit(int64_t lo, int64_t hi, void *arg)
{
    atomic_store(&loop_started, 1);
    for (int64_t i = lo; i < hi; i++)
        atomic_fetch_add(&seen[i], 1);
    weft_sleep(MS); /* leaves take a while, so the cancel comes while the caller waits for halves */
}

static void *loop_then_wait(void *arg)
{
    int r = weft_parallel_for(0, PN, PN / 256, visit, NULL);
    int after = weft_sleep(SEC);
    return (void *)(intptr_t)(r == 0 && after == -ECANCELED ? 0 : -1);
}

TEST(a_cancel_does_not_cut_a_parallel_loop_short)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, loop_then_wait, NULL));
    while (!atomic_load(&loop_started))
        weft_yield();
    ASSERT_OK(weft_cancel(f));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((int)(intptr_t)r, 0);
    for (int i = 0; i < PN; i++)
        if (atomic_load(&seen[i]) != 1)
            FAIL("index %d was visited %d times", i, atomic_load(&seen[i]));
    ASSERT_OK(weft_shutdown());
}
