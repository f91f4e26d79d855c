/*
 * The monitor: a fiber stuck in a blocking call or a long loop does not stall the other fibers of its
 * worker (they move to a fresh thread), is named in a rate-limited warning, and finishes as a thread of
 * its own; fibers that yield are left alone. Deadlocks are reported with every waiting fiber and end the
 * run with -EDEADLK; no report while a timer, an fd, a blocking call or another thread can still wake a
 * fiber. Scenarios run in child processes so that their stderr can be read; the tests check progress
 * counts and messages, never times.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "core/internal.h"
#include "helpers.h"
#include "runner.h"

static char out[1 << 16];

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void run_scenario(void (*fn)(void *), void *arg, int want_exit)
{
    int st = runner_capture(fn, arg, out, sizeof out, 60);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != want_exit)
        FAIL("the scenario ended with status %#x, want exit %d; it printed:\n%s", st, want_exit, out);
}

/* ------------------------------------------------------------------------------------------------ */
/* Stuck fibers                                                                                      */

static atomic_long ticks;
static atomic_int stop_ticking;

static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_ticking)) {
        weft_sleep(MS);
        atomic_fetch_add(&ticks, 1);
    }
    return NULL;
}

static atomic_int stuck_started;

static void *libc_sleeper(void *arg)
{
    atomic_fetch_add(&stuck_started, 1);
    sleep(2); /* blocks the thread, as any plain blocking call would */
    return arg;
}

static void *spinner(void *arg)
{
    atomic_fetch_add(&stuck_started, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { /* a long loop that never yields */
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 2000000000L);
    return arg;
}

static void stuck_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    enum { N = 1000 };
    static weft_fiber_t t[N];
    for (int i = 0; i < N; i++)
        if (weft_spawn(&t[i], NULL, ticker, NULL) < 0)
            exit(11);
    while (atomic_load(&ticks) < N) /* the tickers run */
        nap_ms(1);
    weft_attr_t sa = {.name = "sleeper"}, pa = {.name = "spinner"};
    weft_fiber_t s, p;
    if (weft_spawn(&s, &sa, libc_sleeper, (void *)11) < 0 || weft_spawn(&p, &pa, spinner, (void *)22) < 0)
        exit(12);
    while (atomic_load(&stuck_started) < 2)
        nap_ms(1);
    /* both are stuck now, on the worker every ticker lives on: do the ticks keep coming? */
    long before = atomic_load(&ticks);
    nap_ms(1000); /* long enough for both hand-offs in a sanitizer build on a busy machine */
    long mid = atomic_load(&ticks);
    nap_ms(600);  /* and still inside the two seconds both stay stuck */
    long during = atomic_load(&ticks) - before, second_half = atomic_load(&ticks) - mid;
    printf("ticks while two fibers were stuck: %ld (%ld in the second half)\n", during, second_half);
    fflush(stdout);
    atomic_store(&stop_ticking, 1);
    void *r1, *r2;
    if (weft_join(s, &r1) < 0 || weft_join(p, &r2) < 0 || r1 != (void *)11 || r2 != (void *)22)
        exit(13);
    for (int i = 0; i < N; i++)
        if (weft_join(t[i], NULL) < 0)
            exit(14);
    if (weft_shutdown() < 0)
        exit(15);
    /* without the hand-off, not one tick: the tickers share the stuck worker. Count on no rate (a
     * sanitizer build on a busy machine ticks slowly), only on ticks in each half of the window */
    exit(during > second_half && second_half > 0 ? 0 : 16);
}

TEST_TIMEOUT(stuck_fibers_hand_their_worker_to_a_new_thread_and_the_ticks_keep_coming, 120)
{
    run_scenario(stuck_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "without yielding");
    /* two stuck at about the same time: one warning, rate-limited, naming the first; the second is
     * named in the summary line once the limit lifts (or when the runtime stops) */
    ASSERT_EQ(count_occurrences(out, "without yielding"), 1);
    ASSERT_CONTAINS(out, "\"sleeper\"");
    ASSERT_CONTAINS(out, "\"spinner\"");
    ASSERT_CONTAINS(out, "also stuck since the last warning");
    ASSERT_CONTAINS(out, "go on on a new thread");
}

/* The monitor holds what it needs from the start: with the process out of fds, a fiber blocked in the
 * kernel is still told from one that waits for a CPU, and its worker still handed to a fresh thread. */
static void out_of_fds_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    enum { N = 100 };
    static weft_fiber_t t[N];
    for (int i = 0; i < N; i++)
        if (weft_spawn(&t[i], NULL, ticker, NULL) < 0)
            exit(11);
    while (atomic_load(&ticks) < N)
        nap_ms(1);
    int nfds = 0, first = -1;
    for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0; nfds++)
        if (first < 0)
            first = fd;
    if (errno != EMFILE)
        exit(12);
    weft_fiber_t s;
    weft_attr_t sa = {.name = "sleeper"};
    if (weft_spawn(&s, &sa, libc_sleeper, (void *)11) < 0)
        exit(13);
    while (atomic_load(&stuck_started) < 1)
        nap_ms(1);
    long before = atomic_load(&ticks);
    nap_ms(1500);
    long during = atomic_load(&ticks) - before;
    printf("ticks while the sleeper slept with no fd left: %ld\n", during);
    fflush(stdout);
    for (int i = 0; i < nfds; i++)
        close(first + i);
    atomic_store(&stop_ticking, 1);
    void *r;
    if (weft_join(s, &r) < 0 || r != (void *)11)
        exit(14);
    for (int i = 0; i < N; i++)
        weft_join(t[i], NULL);
    if (weft_shutdown() < 0)
        exit(15);
    exit(during > N ? 0 : 16); /* without the hand-off: none at all */
}

TEST_TIMEOUT(a_fiber_blocked_in_the_kernel_is_handed_off_even_with_no_fd_left, 60)
{
    struct rlimit lim = {256, 256}; /* a low fd limit: quick to fill */
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
    run_scenario(out_of_fds_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "\"sleeper\"");
    ASSERT_CONTAINS(out, "go on on a new thread");
}

/* Every stuck fiber is named at least once, however close together they get stuck: here one after the
 * other on one worker, each handed off in turn, all within the once-a-second limit. */
static void *short_libc_sleep(void *arg)
{
    (void)arg;
    nap_ms(200);
    return NULL;
}

static void many_stuck_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    weft_fiber_t t;
    if (weft_spawn(&t, NULL, ticker, NULL) < 0)
        exit(11);
    enum { N = 5 };
    weft_fiber_t f[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "stuck-%d", i);
        weft_attr_t a = {.name = names[i]};
        if (weft_spawn(&f[i], &a, short_libc_sleep, NULL) < 0)
            exit(12);
    }
    for (int i = 0; i < N; i++)
        weft_join(f[i], NULL);
    atomic_store(&stop_ticking, 1);
    weft_join(t, NULL);
    exit(weft_shutdown() < 0 ? 13 : 0);
}

TEST_TIMEOUT(every_stuck_fiber_is_named_even_past_the_warning_limit, 60)
{
    run_scenario(many_stuck_scenario, NULL, 0);
    for (int i = 0; i < 5; i++) {
        char want[32];
        snprintf(want, sizeof want, "\"stuck-%d\"", i);
        ASSERT_CONTAINS(out, want);
    }
}

/* A fiber that keeps calling into the runtime is not stuck, even if it never switches: here it spawns
 * fiber after fiber, with a little work between spawns (an accept loop under a burst looks the same). */
static void *noop(void *arg)
{
    return arg;
}

static long max_spawns;

static void *spawn_loop(void *arg)
{
    (void)arg;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long n = 0;
    do {
        for (volatile int i = 0; i < 2000; i++) /* some work of its own between spawns */
            ;
        if (weft_go(noop, NULL) < 0)
            return (void *)-1;
        n++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L < 300 &&
             n < max_spawns); /* under TSan each fiber costs milliseconds to run afterwards */
    return (void *)n;
}

static void spawn_loop_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    void *n = NULL;
    int r = weft_run(&one, spawn_loop, NULL, &n);
    printf("spawned %ld fibers\n", (long)n);
    fflush(stdout);
    exit(r == 0 && (long)n > 0 ? 0 : 10);
}

TEST_TIMEOUT(a_fiber_that_spawns_in_a_loop_is_not_called_stuck, 60)
{
    max_spawns = runner_scaled(200000);
    run_scenario(spawn_loop_scenario, NULL, 0);
    ASSERT_NOT_CONTAINS(out, "without yielding");
    ASSERT_NOT_CONTAINS(out, "also stuck");
}

static void no_stuck_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1, .stuck_us = -1}; /* never */
    if (weft_start(&one) < 0)
        exit(10);
    weft_fiber_t t, p;
    if (weft_spawn(&t, NULL, ticker, NULL) < 0)
        exit(11);
    while (atomic_load(&ticks) < 1)
        nap_ms(1);
    if (weft_spawn(&p, NULL, spinner, NULL) < 0)
        exit(12);
    while (atomic_load(&stuck_started) < 1)
        nap_ms(1);
    long before = atomic_load(&ticks);
    nap_ms(300);
    long during = atomic_load(&ticks) - before;
    atomic_store(&stop_ticking, 1);
    weft_join(p, NULL);
    weft_join(t, NULL);
    weft_shutdown();
    exit(during == 0 ? 0 : 16); /* the control: with no hand-off, the worker's other fiber stalls */
}

TEST_TIMEOUT(with_stuck_detection_off_a_stuck_fiber_stalls_its_worker_and_nothing_is_said, 60)
{
    run_scenario(no_stuck_scenario, NULL, 0);
    ASSERT_NOT_CONTAINS(out, "without yielding");
}

static void *yield_every_ms(void *arg)
{
    (void)arg;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long last_ms = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L;
        if (ms > 300)
            break;
        if (ms != last_ms) { /* busy all along, but back in the runtime every millisecond */
            last_ms = ms;
            weft_yield();
        }
    }
    return NULL;
}

static void busy_but_yielding_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    weft_fiber_t b, t;
    if (weft_spawn(&t, NULL, ticker, NULL) < 0 || weft_spawn(&b, NULL, yield_every_ms, NULL) < 0)
        exit(11);
    weft_join(b, NULL);
    atomic_store(&stop_ticking, 1);
    weft_join(t, NULL);
    weft_shutdown();
    exit(0);
}

TEST_TIMEOUT(a_busy_fiber_that_yields_is_left_alone, 60)
{
    run_scenario(busy_but_yielding_scenario, NULL, 0);
    ASSERT_NOT_CONTAINS(out, "without yielding");
}

/* A stuck fiber goes on as a thread: it may yield, sleep, spawn and join, and its result comes back. */
static void *stuck_then_carries_on(void *arg)
{
    (void)arg;
    uint64_t id = weft_self_id();
    sleep(1); /* stuck: its worker moves on without it */
    if (!weft_in_fiber() || weft_self_id() != id || strcmp(weft_self_name(), "carrier") != 0)
        return (void *)-3; /* still the same fiber to its user, before it enters weft again ... */
    weft_yield();
    if (!weft_in_fiber() || weft_self_id() != id)
        return (void *)-4; /* ... and after */
    weft_sleep(2 * MS);
    weft_fiber_t c;
    if (weft_spawn(&c, NULL, add_one, (void *)41) < 0)
        return (void *)-1;
    void *r;
    if (weft_join(c, &r) < 0)
        return (void *)-2;
    return r;
}

static void orphan_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    weft_fiber_t f, t;
    weft_attr_t ca = {.name = "carrier"};
    if (weft_spawn(&t, NULL, ticker, NULL) < 0 || weft_spawn(&f, &ca, stuck_then_carries_on, NULL) < 0)
        exit(11);
    void *r = NULL;
    int j = weft_join(f, &r);
    printf("the stuck fiber returned %ld\n", (long)r);
    fflush(stdout);
    atomic_store(&stop_ticking, 1);
    weft_join(t, NULL);
    if (weft_shutdown() < 0)
        exit(12);
    exit(j == 0 && r == (void *)42 ? 0 : 13);
}

TEST_TIMEOUT(a_stuck_fiber_finishes_as_a_thread_of_its_own, 60)
{
    run_scenario(orphan_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "go on on a new thread");
}

/* A handed-off fiber is still one the shutdown waits for, so it may spawn while the shutdown waits, as
 * every fiber may (it got -ESHUTDOWN, as a thread outside the runtime does). */
static atomic_int child_ran;

static void *mark_child(void *arg)
{
    (void)arg;
    atomic_store(&child_ran, 1);
    return NULL;
}

static void *stuck_then_spawns_during_the_shutdown(void *arg)
{
    (void)arg;
    sleep(1); /* stuck: handed off */
    while (atomic_load(&weft__rt_g.state) != WEFT__RT_STOPPING)
        usleep(1000); /* the main thread is in weft_shutdown */
    int r = weft_go(mark_child, NULL);
    printf("spawn during the shutdown: %d\n", r);
    fflush(stdout);
    atomic_store(&stop_ticking, 1);
    return NULL;
}

static void orphan_spawns_in_shutdown_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    weft_attr_t a = {.flags = WEFT_DETACHED};
    if (weft_go(ticker, NULL) < 0 || weft_spawn(NULL, &a, stuck_then_spawns_during_the_shutdown, NULL) < 0)
        exit(11); /* the ticker keeps a fiber ready beside the stuck one, so that its worker is handed on */
    if (weft_shutdown() < 0)
        exit(12);
    exit(atomic_load(&child_ran) ? 0 : 13);
}

TEST_TIMEOUT(a_handed_off_fiber_may_spawn_while_the_shutdown_waits, 60)
{
    run_scenario(orphan_spawns_in_shutdown_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "go on on a new thread");
    ASSERT_CONTAINS(out, "spawn during the shutdown: 0");
}

/* Long loops that keep nothing from running: the leaves of a parallel loop on both workers, each with an
 * unstarted half of the loop in its worker's queue. No fiber is ready meanwhile, so nothing is stuck: no
 * warning, and no fresh thread to take a CPU from the loop. (Four leaves of equal length: a task waits
 * for a half on the other worker only when its own worker is idle.) */
static atomic_int leaves_done;

static void spin_ms(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L < ms);
}

static void long_leaf(int64_t lo, int64_t hi, void *arg)
{
    (void)arg;
    spin_ms(100 * (hi - lo));
    atomic_fetch_add(&leaves_done, (int)(hi - lo));
}

static void calm_loop_scenario(void *arg)
{
    (void)arg;
    weft_config_t two = {.workers = 2};
    if (weft_start(&two) < 0)
        exit(10);
    if (weft_parallel_for(0, 4, 1, long_leaf, NULL) < 0)
        exit(11);
    printf("%d leaves ran\n", atomic_load(&leaves_done));
    fflush(stdout);
    if (weft_shutdown() < 0)
        exit(12);
    exit(atomic_load(&leaves_done) == 4 ? 0 : 13);
}

TEST_TIMEOUT(a_long_loop_that_keeps_nothing_waiting_is_left_alone, 60)
{
    run_scenario(calm_loop_scenario, NULL, 0);
    ASSERT_NOT_CONTAINS(out, "without yielding");
}

/* ... but once a fiber of its worker is woken, the worker goes on on a fresh thread: the loop is judged
 * again when that happens, not only an interval later. */
static weft_wg_t go_ahead;
static atomic_int woke_during_the_loop, loop_over;

static void *waits_for_go_ahead(void *arg)
{
    (void)arg;
    if (weft_wg_wait(&go_ahead, WEFT_FOREVER) == 0 && !atomic_load(&loop_over))
        atomic_store(&woke_during_the_loop, 1);
    return NULL;
}

static void *loops_two_seconds(void *arg)
{
    spin_ms(2000);
    atomic_store(&loop_over, 1);
    return arg;
}

static void calm_then_woken_scenario(void *arg)
{
    (void)arg;
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        exit(10);
    weft_wg_add(&go_ahead, 1);
    weft_fiber_t waiter, looper;
    weft_attr_t la = {.name = "looper"};
    if (weft_spawn(&waiter, NULL, waits_for_go_ahead, NULL) < 0)
        exit(11);
    nap_ms(50); /* the waiter parks first */
    if (weft_spawn(&looper, &la, loops_two_seconds, NULL) < 0)
        exit(12);
    nap_ms(300); /* the looper has run long enough to be judged, and nothing was ready */
    weft_wg_done(&go_ahead); /* from this plain thread: the waiter is ready now */
    if (weft_join(waiter, NULL) < 0 || weft_join(looper, NULL) < 0)
        exit(13);
    printf("the waiter woke %s the loop ended\n", atomic_load(&woke_during_the_loop) ? "before" : "after");
    fflush(stdout);
    if (weft_shutdown() < 0)
        exit(14);
    exit(atomic_load(&woke_during_the_loop) ? 0 : 15);
}

TEST_TIMEOUT(a_long_loop_hands_its_worker_over_once_a_fiber_there_is_woken, 60)
{
    run_scenario(calm_then_woken_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "\"looper\"");
    ASSERT_CONTAINS(out, "go on on a new thread");
}

/* ------------------------------------------------------------------------------------------------ */
/* Deadlocks                                                                                         */

static weft_wg_t never;
static atomic_int got_edeadlk;

static void *wait_forever(void *arg)
{
    (void)arg;
    int r = weft_wg_wait(&never, WEFT_FOREVER);
    if (r == -EDEADLK)
        atomic_fetch_add(&got_edeadlk, 1);
    return (void *)(intptr_t)r;
}

static void *deadlocked_main(void *arg)
{
    (void)arg;
    weft_wg_add(&never, 1);
    weft_fiber_t f[3];
    const char *names[3] = {"alpha", "beta", "gamma"};
    for (int i = 0; i < 3; i++) {
        weft_attr_t a = {.name = names[i]};
        weft_spawn(&f[i], &a, wait_forever, NULL);
    }
    for (int i = 0; i < 3; i++)
        while (weft_join(f[i], NULL) == -EDEADLK) /* our own join was part of it: join again */
            ;
    return NULL;
}

static void deadlock_scenario(void *arg)
{
    (void)arg;
    /* weft_run's own join is part of the deadlock: it returns -EDEADLK, and the fibers finish since each
     * of their waits got -EDEADLK too */
    int r = weft_run(NULL, deadlocked_main, NULL, NULL);
    printf("weft_run returned %d (%s), %d waits got -EDEADLK\n", r, weft_err_name(r), atomic_load(&got_edeadlk));
    fflush(stdout);
    exit(r == -EDEADLK && atomic_load(&got_edeadlk) == 3 ? 0 : 20);
}

TEST_TIMEOUT(a_deadlock_is_reported_with_every_waiting_fiber_and_ends_the_run_with_edeadlk, 60)
{
    SKIP_UNDER_EMULATOR();
    run_scenario(deadlock_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "all fibers are asleep - deadlock!");
    ASSERT_CONTAINS(out, "\"alpha\" [waiting: wait group]");
    ASSERT_CONTAINS(out, "\"beta\" [waiting: wait group]");
    ASSERT_CONTAINS(out, "\"gamma\" [waiting: wait group]");
    ASSERT_CONTAINS(out, "\"main\" [waiting: join]");
    ASSERT_CONTAINS(out, "a thread outside weft [waiting: join]"); /* weft_run's caller */
    ASSERT_EQ(count_occurrences(out, "deadlock!"), 1);
}

/* weft_shutdown waits for the fibers; when they can never finish, the report ends the wait, and the
 * shutdown says so (weft.h): -EDEADLK for this run, 0 for the next one. */
static void shutdown_deadlock_scenario(void *arg)
{
    (void)arg;
    weft_wg_add(&never, 1);
    weft_fiber_t f;
    weft_attr_t a = {.name = "alpha"};
    if (weft_start(NULL) < 0 || weft_spawn(&f, &a, wait_forever, NULL) < 0 || weft_detach(f) < 0)
        exit(10);
    int r = weft_shutdown();
    printf("weft_shutdown returned %d (%s)\n", r, weft_err_name(r));
    int again = weft_start(NULL) < 0 ? -1 : weft_shutdown();
    printf("the next run's weft_shutdown returned %d\n", again);
    fflush(stdout);
    exit(r == -EDEADLK && atomic_load(&got_edeadlk) == 1 && again == 0 ? 0 : 20);
}

TEST_TIMEOUT(a_shutdown_that_a_deadlock_ended_returns_edeadlk, 60)
{
    SKIP_UNDER_EMULATOR();
    run_scenario(shutdown_deadlock_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "\"alpha\" [waiting: wait group]");
}

/* The classic: two fibers take two mutexes in opposite orders. */
static weft_mutex_t lock_a = WEFT_MUTEX_INIT, lock_b = WEFT_MUTEX_INIT;
static weft_barrier_t both_hold_one;

static void *take_two(void *arg)
{
    weft_mutex_t *first = arg ? &lock_a : &lock_b, *second = arg ? &lock_b : &lock_a;
    weft_mutex_lock(first, WEFT_FOREVER);
    weft_barrier_wait(&both_hold_one, WEFT_FOREVER);
    int r = weft_mutex_lock(second, WEFT_FOREVER);
    if (r == -EDEADLK)
        atomic_fetch_add(&got_edeadlk, 1);
    else if (r == 0)
        weft_mutex_unlock(second);
    weft_mutex_unlock(first);
    return NULL;
}

static void *lock_order_main(void *arg)
{
    (void)arg;
    weft_barrier_init(&both_hold_one, 2);
    weft_fiber_t f[2];
    weft_spawn(&f[0], &(weft_attr_t){.name = "a-then-b"}, take_two, (void *)1);
    weft_spawn(&f[1], &(weft_attr_t){.name = "b-then-a"}, take_two, NULL);
    for (int i = 0; i < 2; i++)
        while (weft_join(f[i], NULL) == -EDEADLK)
            ;
    return NULL;
}

static void lock_order_scenario(void *arg)
{
    (void)arg;
    int r = weft_run(NULL, lock_order_main, NULL, NULL);
    printf("weft_run returned %d (%s), %d locks got -EDEADLK\n", r, weft_err_name(r), atomic_load(&got_edeadlk));
    fflush(stdout);
    /* the first to get -EDEADLK lets go of its mutex, which may reach the other before its own
     * -EDEADLK does: then that lock succeeds (a wait keeps what it was given) */
    exit(r == -EDEADLK && atomic_load(&got_edeadlk) >= 1 ? 0 : 20);
}

TEST_TIMEOUT(two_fibers_taking_two_mutexes_in_opposite_orders_are_reported, 60)
{
    SKIP_UNDER_EMULATOR();
    run_scenario(lock_order_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "all fibers are asleep - deadlock!");
    ASSERT_CONTAINS(out, "\"a-then-b\" [waiting: mutex]");
    ASSERT_CONTAINS(out, "\"b-then-a\" [waiting: mutex]");
    ASSERT_CONTAINS(out, "every wait above returns -EDEADLK, unless what it waits for comes first");
}

static void *thread_joins_a_stuck_fiber(void *arg)
{
    return (void *)(intptr_t)weft_join(*(weft_fiber_t *)arg, NULL);
}

static void thread_deadlock_scenario(void *arg)
{
    (void)arg;
    weft_wg_add(&never, 1);
    weft_fiber_t f, t;
    weft_attr_t fa = {.name = "waiter"}, ta = {.name = "joiner"};
    if (weft_spawn(&f, &fa, wait_forever, NULL) < 0 || weft_thread_spawn(&t, &ta, thread_joins_a_stuck_fiber, &f) < 0)
        exit(10);
    void *r = NULL;
    int j, woken = 0;
    while ((j = weft_join(t, &r)) == -EDEADLK) /* this thread waits in weft too: all of them wait */
        woken++;
    int s = weft_shutdown();
    long tr = (long)(intptr_t)r; /* -EDEADLK, or 0 where the fiber finished before the joiner looked again */
    printf("join %d after %d deadlock wakeups, the thread's join %ld, shutdown %d\n", j, woken, tr, s);
    fflush(stdout);
    exit(j == 0 && woken <= 1 && (tr == 0 || tr == -EDEADLK) && s == -EDEADLK ? 0 : 20);
}

TEST_TIMEOUT(threads_waiting_in_weft_are_part_of_a_deadlock_too, 60)
{
    SKIP_UNDER_EMULATOR();
    run_scenario(thread_deadlock_scenario, NULL, 0);
    ASSERT_CONTAINS(out, "all fibers are asleep - deadlock!");
    ASSERT_CONTAINS(out, "\"waiter\" [waiting: wait group]");
    ASSERT_CONTAINS(out, "\"joiner\" [waiting: join]");
    ASSERT_CONTAINS(out, "  thread ");
}

/* No false report: each of these can still wake the waiting fiber after 300 ms. */

static weft_wg_t later;

static void *wait_later(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)weft_wg_wait(&later, WEFT_FOREVER);
}

static void *done_after_a_timer(void *arg)
{
    (void)arg;
    weft_sleep(300 * MS);
    weft_wg_done(&later);
    return NULL;
}

static void *sleep_300ms(void *arg)
{
    nap_ms(300);
    return arg;
}

static void *done_after_a_blocking_call(void *arg)
{
    weft_blocking(sleep_300ms, arg, NULL);
    weft_wg_done(&later);
    return NULL;
}

static void *done_after_reading(void *arg)
{
    char c;
    weft_read((int)(intptr_t)arg, &c, 1, WEFT_FOREVER);
    weft_wg_done(&later);
    return NULL;
}

static void *plain_thread_done_later(void *arg)
{
    (void)arg;
    nap_ms(300); /* a thread weft has never seen, doing its own thing */
    weft_wg_done(&later);
    return NULL;
}

typedef enum { BY_TIMER, BY_BLOCKING_CALL, BY_FD, BY_PLAIN_THREAD } waker_t;

static void *later_main(void *arg)
{
    waker_t how = (waker_t)(intptr_t)arg;
    weft_wg_add(&later, 1);
    weft_fiber_t w, k;
    pthread_t pt;
    int p[2] = {-1, -1};
    weft_spawn(&w, NULL, wait_later, NULL);
    switch (how) {
    case BY_TIMER: weft_spawn(&k, NULL, done_after_a_timer, NULL); break;
    case BY_BLOCKING_CALL: weft_spawn(&k, NULL, done_after_a_blocking_call, NULL); break;
    case BY_FD:
        if (pipe2(p, O_CLOEXEC) != 0)
            exit(30);
        if (fork() == 0) { /* another process writes in 300 ms */
            nap_ms(300);
            if (write(p[1], "x", 1) != 1)
                _exit(1);
            _exit(0);
        }
        weft_spawn(&k, NULL, done_after_reading, (void *)(intptr_t)p[0]);
        break;
    case BY_PLAIN_THREAD:
        pthread_create(&pt, NULL, plain_thread_done_later, NULL);
        pthread_detach(pt);
        break;
    }
    void *r;
    weft_join(w, &r);
    if (how != BY_PLAIN_THREAD)
        weft_join(k, NULL);
    return r;
}

static void later_scenario(void *arg)
{
    void *r = (void *)1;
    int rc = weft_run(NULL, later_main, arg, &r);
    printf("weft_run %d, the wait %ld\n", rc, (long)(intptr_t)r);
    fflush(stdout);
    exit(rc == 0 && r == NULL ? 0 : 20);
}

TEST_TIMEOUT(no_deadlock_is_reported_while_something_can_still_wake_a_fiber, 120)
{
    const char *what[] = {"a timer", "a blocking call", "an fd", "a thread weft does not know"};
    for (intptr_t how = BY_TIMER; how <= BY_PLAIN_THREAD; how++) {
        run_scenario(later_scenario, (void *)how, 0);
        if (strstr(out, "deadlock"))
            FAIL("a deadlock was reported while %s could still wake the fiber:\n%s", what[how], out);
    }
}

/* A thread that has been woken but has not run yet can still wake a fiber. Here it is held up in a
 * signal handler just as its wakeup comes, for longer than the deadlock check waits to be sure; the
 * fiber it will wake is the last one, and every worker sleeps meanwhile. */
static weft_wg_t gate, after_gate;
static _Atomic pthread_t held_thread;
static atomic_int in_handler;

static void hold_up(int sig)
{
    (void)sig;
    atomic_store(&in_handler, 1);
    nap_ms(300);
}

static void *wait_gate_then_done(void *arg)
{
    (void)arg;
    atomic_store(&held_thread, pthread_self());
    int r = weft_wg_wait(&gate, WEFT_FOREVER);
    weft_wg_done(&after_gate);
    return (void *)(intptr_t)r;
}

static void *woken_thread_main(void *arg)
{
    (void)arg;
    weft_wg_add(&gate, 1);
    weft_wg_add(&after_gate, 1);
    weft_fiber_t t;
    if (weft_thread_spawn(&t, NULL, wait_gate_then_done, NULL) < 0)
        exit(30);
    while (weft_fiber_state(t) != WEFT_WAITING)
        weft_yield();
    weft_sleep(20 * MS); /* into its futex wait, most likely */
    pthread_kill(atomic_load(&held_thread), SIGUSR1);
    while (!atomic_load(&in_handler))
        weft_yield();
    weft_wg_done(&gate); /* wakes the thread, which cannot run for a while */
    int r = weft_wg_wait(&after_gate, WEFT_FOREVER);
    void *tr = (void *)1;
    weft_join(t, &tr);
    return (void *)(intptr_t)(r != 0 ? r : (int)(intptr_t)tr);
}

static void woken_thread_scenario(void *arg)
{
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hold_up;
    sigaction(SIGUSR1, &sa, NULL);
    void *r = (void *)1;
    int rc = weft_run(NULL, woken_thread_main, NULL, &r);
    printf("weft_run %d, the waits %ld\n", rc, (long)(intptr_t)r);
    fflush(stdout);
    exit(rc == 0 && r == NULL ? 0 : 20);
}

TEST_TIMEOUT(a_woken_thread_that_has_not_run_yet_can_still_wake_a_fiber, 60)
{
    run_scenario(woken_thread_scenario, NULL, 0);
    if (strstr(out, "deadlock"))
        FAIL("a deadlock was reported while a woken thread could still wake the fiber:\n%s", out);
}
