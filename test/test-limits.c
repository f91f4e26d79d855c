/*
 * The system's thread limit (a pids cgroup, test/cgroup.h): every part of weft that makes kernel threads
 * meets it without a crash or a hang, and recovers when threads free up.
 *   - the blocking pool: calls queue, none is lost, other fibers run; a queued call's deadline and
 *     cancellation still hold; once the limit lifts the pool grows again, even from no thread at all;
 *   - weft_thread_spawn: -EAGAIN, and the failed call started nothing and kept nothing;
 *   - weft_start: -EAGAIN when its workers or its monitor cannot all start, with nothing left behind;
 *   - fibers need no threads: spawns and joins from fibers, weft threads and foreign threads go on;
 *   - the monitor's hand-off of a stuck worker.
 * Each test moves its own process into a fresh cgroup and leaves a number of threads to spare; the
 * outcomes are asserted (what ran, what failed with which code, what came back), never times: waits
 * are liveness bounds.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "cgroup.h"
#include "core/internal.h"
#include "helpers.h"
#include "runner.h"

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int threads_now(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0)
            n = atoi(line + 8);
    if (f)
        fclose(f);
    return n;
}

static void *nothing(void *arg)
{
    return arg;
}

/* The process's threads once the ones on their way out are gone, for a baseline. A plain thread made
 * and joined first starts what the first thread starts (TSan's background thread). */
static int threads_settled(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
    int n = threads_now();
    for (int same = 0, i = 0; same < 3 && i < 1000; i++) {
        nap_ms(2);
        int m = threads_now();
        same = m == n ? same + 1 : 0;
        n = m;
    }
    return n;
}

static int fds_now(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n - 1; /* the directory's own */
}

static void count_in_use(weft__fiber *f, void *arg)
{
    *(long *)arg += f->kind != WEFT__KIND_FREE;
}

/* Descriptors in use (fibers, weft threads, foreign threads that used weft): a leak shows here. */
static long descs_in_use(void)
{
    long n = 0;
    weft__desc_each(count_in_use, &n);
    return n;
}

/* A thread that is not a fiber waits for cond, napping, for at most 20 s: a liveness bound. */
#define NAP_UNTIL(cond)                                                                             \
    do {                                                                                            \
        int64_t until_ = weft_now() + 20 * SEC;                                                     \
        while (!(cond)) {                                                                           \
            if (weft_now() > until_)                                                                \
                FAIL("still waiting for %s", #cond);                                                \
            nap_ms(1);                                                                              \
        }                                                                                           \
    } while (0)

static atomic_int must_not_run;

static void *never(void *arg)
{
    atomic_store(&must_not_run, 1);
    return arg;
}

/* ------------------------------------------------------------------------------------------------ */
/* The blocking pool                                                                                 */

static atomic_int running, most_running, finished, calls_out;
static atomic_long ticks;

static void *count_concurrency(void *arg)
{
    int now = atomic_fetch_add(&running, 1) + 1;
    int m = atomic_load(&most_running);
    while (now > m && !atomic_compare_exchange_weak(&most_running, &m, now))
        ;
    nap_ms(10);
    atomic_fetch_sub(&running, 1);
    atomic_fetch_add(&finished, 1);
    return arg;
}

static void *call_counted(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_blocking(count_concurrency, arg, &r));
    ASSERT_PTR_EQ(r, arg);
    atomic_fetch_sub(&calls_out, 1);
    return NULL;
}

static void *tick_while_calls_are_out(void *arg)
{
    (void)arg;
    while (atomic_load(&calls_out) > 0) {
        atomic_fetch_add(&ticks, 1);
        weft_sleep(MS);
    }
    return NULL;
}

/* M calls that each wait until all M run at once: only a pool of at least M threads gets them done. */
enum { MEET = 8 };
static atomic_int met, meet_failed;

static void *meet_all(void *arg)
{
    atomic_fetch_add(&met, 1);
    int64_t until = weft_now() + 20 * SEC;
    while (atomic_load(&met) < MEET) {
        if (weft_now() > until) {
            atomic_store(&meet_failed, 1);
            break;
        }
        nap_ms(1);
    }
    return arg;
}

static void *call_meet(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_blocking(meet_all, arg, &r));
    ASSERT_PTR_EQ(r, arg);
    return NULL;
}

TEST(at_the_thread_limit_blocking_calls_queue_all_complete_and_the_pool_grows_once_it_lifts)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    weft_config_t c = {.workers = 1, .blocking_threads = 64};
    ASSERT_OK(weft_start(&c));
    cgroup_room(&cg, 2); /* the pool can have two threads; the other calls must wait */
    enum { N = 32 };
    weft_fiber_t f[N], t;
    atomic_store(&calls_out, N);
    ASSERT_OK(weft_spawn(&t, NULL, tick_while_calls_are_out, NULL));
    for (intptr_t i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, call_counted, (void *)i));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(atomic_load(&finished), N); /* none lost */
    ASSERT_LE(atomic_load(&most_running), 2);
    ASSERT_GE(atomic_load(&most_running), 1);
    ASSERT_GT(cgroup_refusals(&cg), 0); /* the limit did refuse threads: the calls queued */
    /* 16 rounds of 10 ms calls on the same worker: the ticker got far more than a handful of turns */
    ASSERT_GT(atomic_load(&ticks), 10);

    /* recovery: with threads to be had again, a burst of calls finds the two idle threads and grows the
     * pool past them (the calls meet only if all run at once) */
    cgroup_lift(&cg);
    weft_fiber_t m[MEET];
    for (intptr_t i = 0; i < MEET; i++)
        ASSERT_OK(weft_spawn(&m[i], NULL, call_meet, (void *)i));
    for (int i = 0; i < MEET; i++)
        ASSERT_OK(weft_join_until(m[i], NULL, weft_deadline_in(30 * SEC)));
    ASSERT_EQ(atomic_load(&meet_failed), 0);
    ASSERT_OK(weft_shutdown());
}

static atomic_int ran;

static void *note_ran(void *arg)
{
    atomic_fetch_add(&ran, 1);
    return arg;
}

static void *call_note_ran(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_blocking(note_ran, arg, &r));
    ASSERT_PTR_EQ(r, arg);
    return NULL;
}

TEST(blocking_calls_made_when_no_thread_can_be_made_run_once_the_limit_lifts)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    start_workers(1);
    cgroup_room(&cg, 0); /* not one more thread: the pool has none and can make none */
    enum { N = 8 };
    weft_fiber_t f[N];
    for (intptr_t i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, call_note_ran, (void *)i));
    for (int i = 0; i < N; i++)
        NAP_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING);
    nap_ms(100);
    ASSERT_EQ(atomic_load(&ran), 0); /* nowhere to run ... */
    for (int i = 0; i < N; i++)
        ASSERT_EQ(weft_fiber_state(f[i]), WEFT_WAITING); /* ... and none failed: they wait */
    ASSERT_GT(cgroup_refusals(&cg), 0);
    cgroup_lift(&cg);
    /* nothing else happens in the runtime now: the calls themselves must notice threads can be had */
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join_until(f[i], NULL, weft_deadline_in(20 * SEC)));
    ASSERT_EQ(atomic_load(&ran), N);
    ASSERT_OK(weft_shutdown());
}

static void *queued_with_a_deadline_at_the_limit(void *arg)
{
    (void)arg;
    int64_t d = weft_deadline_in(50 * MS);
    ASSERT_ERR(weft_blocking_until(never, NULL, NULL, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d); /* never early */
    ASSERT_ERR(weft_blocking_until(never, NULL, NULL, WEFT_NOWAIT), -ETIMEDOUT);
    return NULL;
}

static void *queued_until_cancelled(void *arg)
{
    (void)arg;
    ASSERT_ERR(weft_blocking(never, NULL, NULL), -ECANCELED);
    return NULL;
}

static void *call_add_one(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_blocking(add_one, arg, &r));
    return r;
}

TEST(at_the_thread_limit_a_queued_call_times_out_or_is_cancelled_and_never_runs)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    start_workers(1);
    cgroup_room(&cg, 0);
    weft_fiber_t d, k;
    ASSERT_OK(weft_spawn(&d, NULL, queued_with_a_deadline_at_the_limit, NULL));
    ASSERT_OK(weft_spawn(&k, NULL, queued_until_cancelled, NULL));
    NAP_UNTIL(weft_fiber_state(k) == WEFT_WAITING);
    nap_ms(20);
    ASSERT_OK(weft_cancel(k));
    ASSERT_OK(weft_join_until(d, NULL, weft_deadline_in(20 * SEC)));
    ASSERT_OK(weft_join_until(k, NULL, weft_deadline_in(20 * SEC)));
    cgroup_lift(&cg);
    /* a call taken out of the queue stays out: a pool thread made now must not find it */
    weft_fiber_t a;
    void *r = NULL;
    ASSERT_OK(weft_spawn(&a, NULL, call_add_one, (void *)41));
    ASSERT_OK(weft_join_until(a, &r, weft_deadline_in(20 * SEC)));
    ASSERT_EQ((intptr_t)r, 42);
    nap_ms(50);
    ASSERT_EQ(atomic_load(&must_not_run), 0);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* weft_thread_spawn                                                                                 */

static void *spawn_thread_from_a_fiber(void *arg)
{
    (void)arg;
    weft_fiber_t h = WEFT_FIBER_NONE;
    ASSERT_ERR(weft_thread_spawn(&h, NULL, never, NULL), -EAGAIN);
    ASSERT_EQ(h.handle_, 0);
    return NULL;
}

static void *spawn_and_join_a_thread(void *arg)
{
    weft_fiber_t h;
    void *r = NULL;
    ASSERT_OK(weft_thread_spawn(&h, NULL, add_one, arg));
    ASSERT_OK(weft_join(h, &r)); /* a fiber joins a thread */
    return r;
}

TEST(at_the_thread_limit_thread_spawn_fails_with_eagain_keeps_nothing_and_works_again_after)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    /* no runtime: a weft thread needs none */
    int threads = threads_settled();
    weft_fiber_t warm;
    ASSERT_OK(weft_thread_spawn(&warm, NULL, add_one, NULL)); /* descriptors warmed up */
    ASSERT_OK(weft_join(warm, NULL));
    NAP_UNTIL(threads_now() == threads); /* a joined thread may still be on its way out */
    long descs = descs_in_use();
    int fds = fds_now();
    cgroup_room(&cg, 0);
    weft_attr_t named = {.name = "refused", .stack_size = 1 << 20};
    weft_attr_t detached = {.flags = WEFT_DETACHED};
    for (int i = 0; i < 300; i++) {
        weft_fiber_t h = WEFT_FIBER_NONE;
        ASSERT_ERR(weft_thread_spawn(&h, NULL, never, NULL), -EAGAIN);
        ASSERT_EQ(h.handle_, 0); /* a failed call hands out no handle */
        ASSERT_ERR(weft_thread_spawn(&h, &named, never, NULL), -EAGAIN);
        ASSERT_ERR(weft_thread_spawn(&h, &detached, never, NULL), -EAGAIN);
        ASSERT_ERR(weft_thread_spawn(NULL, NULL, never, NULL), -EAGAIN);
        ASSERT_EQ(h.handle_, 0);
    }
    ASSERT_EQ(atomic_load(&must_not_run), 0);
    ASSERT_EQ(descs_in_use(), descs);
    ASSERT_EQ(fds_now(), fds);
    ASSERT_EQ(threads_now(), threads);

    /* from a fiber too: the runtime's threads are made first, then the limit closes */
    cgroup_lift(&cg);
    start_workers(1);
    cgroup_room(&cg, 0);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, spawn_thread_from_a_fiber, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_EQ(atomic_load(&must_not_run), 0);

    cgroup_lift(&cg);
    void *r = NULL;
    ASSERT_OK(weft_spawn(&f, NULL, spawn_and_join_a_thread, (void *)41));
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 42);
    weft_fiber_t h;
    ASSERT_OK(weft_thread_spawn(&h, &named, add_one, (void *)1));
    ASSERT_OK(weft_join(h, &r));
    ASSERT_EQ((intptr_t)r, 2);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* weft_start                                                                                        */

/* After a failed start: not running, and every thread and fd it made is gone. */
static void assert_nothing_started(int threads, int fds)
{
    ASSERT_EQ(weft_workers(), 0);
    NAP_UNTIL(threads_now() == threads); /* the workers that did start were stopped and joined */
    ASSERT_EQ(fds_now(), fds);         /* the poller was closed */
}

TEST(weft_start_without_room_for_its_threads_fails_with_eagain_and_leaves_nothing_behind)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    int threads = threads_settled(), fds = fds_now();
    weft_config_t four = {.workers = 4}, two = {.workers = 2};

    cgroup_room(&cg, 2); /* two of the four workers start, the third cannot */
    ASSERT_ERR(weft_start(&four), -EAGAIN);
    assert_nothing_started(threads, fds);
    ASSERT_ERR(weft_start(&four), -EAGAIN); /* and again: the first failure left nothing to trip on */
    assert_nothing_started(threads, fds);

    cgroup_room(&cg, 2); /* both workers start, the monitor cannot */
    ASSERT_ERR(weft_start(&two), -EAGAIN);
    assert_nothing_started(threads, fds);

    cgroup_room(&cg, 0); /* a spawn starts the runtime with defaults: it fails the same way */
    weft_fiber_t f = WEFT_FIBER_NONE;
    ASSERT_ERR(weft_spawn(&f, NULL, never, NULL), -EAGAIN);
    ASSERT_EQ(f.handle_, 0);
    ASSERT_ERR(weft_go(never, NULL), -EAGAIN);
    ASSERT_ERR(weft_run(&two, never, NULL, NULL), -EAGAIN);
    assert_nothing_started(threads, fds);
    ASSERT_EQ(atomic_load(&must_not_run), 0);

    cgroup_lift(&cg);
    ASSERT_OK(weft_start(&four));
    ASSERT_EQ(weft_workers(), 4);
    void *r = NULL;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)41));
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 42);
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_run(&two, add_one, (void *)1, &r));
    ASSERT_EQ((intptr_t)r, 2);
}

/* ------------------------------------------------------------------------------------------------ */
/* Fibers need no threads                                                                            */

static void *leaf(void *arg)
{
    weft_sleep(100 * 1000); /* parks: its worker runs others meanwhile */
    return (void *)((intptr_t)arg * 2);
}

static weft_wg_t gone_wg = WEFT_WG_INIT;

static void *detached_leaf(void *arg)
{
    (void)arg;
    weft_yield();
    weft_wg_done(&gone_wg);
    return NULL;
}

static void *parent(void *arg)
{
    intptr_t n = (intptr_t)arg;
    weft_fiber_t a, b;
    ASSERT_OK(weft_spawn(&a, NULL, leaf, (void *)n));
    ASSERT_OK(weft_spawn(&b, NULL, leaf, (void *)(n + 1)));
    void *ra, *rb;
    ASSERT_OK(weft_join(a, &ra));
    ASSERT_OK(weft_join(b, &rb));
    return (void *)((intptr_t)ra + (intptr_t)rb);
}

/* n fibers, each with two children, spawned and joined from wherever this runs */
static void spawn_tree(intptr_t n)
{
    enum { MAXN = 200 };
    weft_fiber_t f[MAXN]; /* on the stack: thread-local storage would not follow a handed-off fiber */
    for (intptr_t i = 0; i < n; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, parent, (void *)i));
    for (intptr_t i = 0; i < n; i++) {
        void *r = NULL;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((intptr_t)r, 4 * i + 2);
    }
}

static weft_wg_t go_wg = WEFT_WG_INIT;

static void *weft_thread_spawns_fibers(void *arg)
{
    ASSERT_OK(weft_wg_wait(&go_wg, WEFT_FOREVER)); /* until the limit is in place */
    spawn_tree((intptr_t)arg);
    return arg;
}

TEST(at_the_thread_limit_fibers_still_spawn_and_join_from_fibers_weft_threads_and_other_threads)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    start_workers(2);
    weft_wg_add(&go_wg, 1);
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, weft_thread_spawns_fibers, (void *)50)); /* made before */
    cgroup_room(&cg, 0); /* from here on, not one thread more */
    weft_wg_done(&go_wg);
    spawn_tree(200); /* this thread is not a fiber */
    weft_wg_add(&gone_wg, 100);
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_go(detached_leaf, NULL));
    ASSERT_OK(weft_wg_wait(&gone_wg, WEFT_FOREVER));
    weft_sleep(MS);
    void *r = NULL;
    ASSERT_OK(weft_join(t, &r)); /* a thread that is not a fiber joins a weft thread */
    ASSERT_EQ((intptr_t)r, 50);
    ASSERT_OK(weft_shutdown()); /* stopping makes no thread either */
    ASSERT_GE(cgroup_tasks(&cg), 1);
    cgroup_lift(&cg);
}

/* ------------------------------------------------------------------------------------------------ */
/* The monitor's hand-off                                                                            */

enum { TICKERS = 50 };
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

static weft_fiber_t tickers[TICKERS];

static void start_tickers(void)
{
    for (int i = 0; i < TICKERS; i++)
        ASSERT_OK(weft_spawn(&tickers[i], NULL, ticker, NULL));
    NAP_UNTIL(atomic_load(&ticks) >= TICKERS);
}

static void stop_tickers(void)
{
    atomic_store(&stop_ticking, 1);
    for (int i = 0; i < TICKERS; i++)
        ASSERT_OK(weft_join_until(tickers[i], NULL, weft_deadline_in(20 * SEC)));
}

static atomic_int stuck_started;
static atomic_long ticks_when_stuck, ticks_when_unstuck;

static void *sleeps_in_libc(void *arg)
{
    atomic_store(&ticks_when_stuck, atomic_load(&ticks));
    atomic_fetch_add(&stuck_started, 1);
    sleep(1); /* blocks its thread, and with one worker, every ticker with it unless it is handed off */
    atomic_store(&ticks_when_unstuck, atomic_load(&ticks));
    return arg;
}

TEST_TIMEOUT(a_stuck_fiber_is_handed_off_even_with_no_thread_to_spare, 60)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    start_workers(1);
    start_tickers();
    cgroup_room(&cg, 0); /* no thread can be made now: the hand-off must use one made before */
    weft_attr_t a = {.name = "sleeper"};
    weft_fiber_t s;
    ASSERT_OK(weft_spawn(&s, &a, sleeps_in_libc, (void *)7));
    void *r = NULL;
    ASSERT_OK(weft_join_until(s, &r, weft_deadline_in(20 * SEC)));
    ASSERT_EQ((intptr_t)r, 7);
    long during = atomic_load(&ticks_when_unstuck) - atomic_load(&ticks_when_stuck);
    printf("ticks while the sleeper was stuck: %ld\n", during);
    /* without a hand-off not one tick: every ticker lives on the stuck worker */
    ASSERT_GT(during, TICKERS);
    stop_tickers();
    ASSERT_OK(weft_shutdown());
    cgroup_lift(&cg);
}

/* Stuck in a read of a pipe that the test writes to when it is done looking. */
static int pipes[2][2];

static void *reads_a_pipe(void *arg)
{
    int *p = arg;
    atomic_fetch_add(&stuck_started, 1);
    char c;
    ssize_t n;
    while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
        ;
    return (void *)(intptr_t)n;
}

TEST_TIMEOUT(two_fibers_stuck_one_after_the_other_at_the_thread_limit_are_both_handed_off_once_it_lifts, 90)
{
    test_cgroup cg;
    if (!cgroup_enter(&cg))
        return;
    ASSERT_EQ(pipe(pipes[0]), 0);
    ASSERT_EQ(pipe(pipes[1]), 0);
    start_workers(1);
    start_tickers();
    cgroup_room(&cg, 0);
    weft_attr_t a1 = {.name = "first"}, a2 = {.name = "second"};
    weft_fiber_t s1, s2;
    ASSERT_OK(weft_spawn(&s1, &a1, reads_a_pipe, pipes[0]));
    NAP_UNTIL(atomic_load(&stuck_started) >= 1);
    ASSERT_OK(weft_spawn(&s2, &a2, reads_a_pipe, pipes[1]));
    /* At the limit the first hand-off may take the monitor's spare thread, and then the second fiber
     * runs and gets stuck too, on the thread it was handed to; that second hand-off needs a thread the
     * system will not give. Whatever can and cannot happen now, nothing may crash or hang: the monitor
     * tries over and over meanwhile. */
    nap_ms(500);
    cgroup_lift(&cg);
    /* with threads to be had, every hand-off happens: the second fiber gets to run (and be stuck), and
     * with both stuck the tickers tick on a third thread */
    NAP_UNTIL(atomic_load(&stuck_started) == 2);
    long before = atomic_load(&ticks);
    NAP_UNTIL(atomic_load(&ticks) - before > TICKERS);
    ASSERT_EQ(weft_fiber_state(s1), WEFT_RUNNING); /* both still stuck in their reads */
    ASSERT_EQ(weft_fiber_state(s2), WEFT_RUNNING);
    ASSERT_EQ(write(pipes[0][1], "x", 1), 1);
    ASSERT_EQ(write(pipes[1][1], "x", 1), 1);
    void *r1 = NULL, *r2 = NULL;
    ASSERT_OK(weft_join_until(s1, &r1, weft_deadline_in(20 * SEC)));
    ASSERT_OK(weft_join_until(s2, &r2, weft_deadline_in(20 * SEC)));
    ASSERT_EQ((intptr_t)r1, 1);
    ASSERT_EQ((intptr_t)r2, 1);
    stop_tickers();
    ASSERT_OK(weft_shutdown());
}
