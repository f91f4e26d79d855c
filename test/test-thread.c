/*
 * Kernel threads (weft_thread_spawn, the 1:1 model): the same handle API as fibers, and the blocking
 * calls working from them; fibers and threads joining one another.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static pid_t tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static void *wait_on(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    return (void *)7;
}

static void *return_tid(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)tid();
}

TEST(thread_join_returns_the_result)
{
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, add_one, (void *)41));
    ASSERT_NE(t.handle_, 0);
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 42);
    ASSERT_ERR(weft_join(t, NULL), -ESRCH);
}

TEST(threads_do_not_need_the_runtime)
{
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, add_one, (void *)1));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(weft_workers(), 0);
}

TEST(each_thread_is_its_own_kernel_thread)
{
    enum { N = 16 };
    weft_fiber_t t[N];
    pid_t seen[N + 1];
    seen[N] = tid();
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, return_tid, NULL));
    for (int i = 0; i < N; i++) {
        void *r;
        ASSERT_OK(weft_join(t[i], &r));
        seen[i] = (pid_t)(intptr_t)r;
    }
    /* all alive at once is not required, but none may be the caller's thread, and the ids are real */
    for (int i = 0; i < N; i++) {
        ASSERT_NE(seen[i], seen[N]);
        ASSERT_GT(seen[i], 0);
    }
}

static void *check_thread_identity(void *arg)
{
    weft_fiber_t *out = arg;
    ASSERT_EQ(weft_in_fiber(), 0);
    ASSERT_NE(weft_self().handle_, 0);
    ASSERT_NE(weft_self_id(), 0);
    out[0] = weft_self();
    out[1].handle_ = weft_self_id();
    char kname[32] = "";
    pthread_getname_np(pthread_self(), kname, sizeof kname);
    if (strcmp(kname, "thread-with-a-") != 0 && strcmp(kname, "thread-with-a-l") != 0)
        FAIL("kernel thread name: \"%s\"", kname);
    if (strncmp(weft_self_name(), "thread-with-a-long-name-beyond-", 31) != 0 || strlen(weft_self_name()) != 31)
        FAIL("self name: \"%s\"", weft_self_name());
    ASSERT_OK(weft_set_name("renamed"));
    ASSERT_STR_EQ(weft_self_name(), "renamed");
    return NULL;
}

TEST(a_thread_has_an_identity_like_a_fiber)
{
    static weft_fiber_t seen[2];
    weft_attr_t a = {.name = "thread-with-a-long-name-beyond-31-bytes"};
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, &a, check_thread_identity, seen));
    uint64_t id = weft_fiber_id(t);
    ASSERT_NE(id, 0);
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(seen[0].handle_, t.handle_);
    ASSERT_EQ(seen[1].handle_, id);
    ASSERT_EQ(weft_fiber_id(t), 0);
}

static atomic_int named_ready, named_go;

static void *hold_for_names(void *arg)
{
    (void)arg;
    atomic_store(&named_ready, 1);
    while (!atomic_load(&named_go))
        sched_yield();
    ASSERT_OK(weft_set_name("second"));
    atomic_store(&named_ready, 2);
    while (atomic_load(&named_go) < 2)
        sched_yield();
    return NULL;
}

TEST(thread_names_are_copied_and_readable_through_the_handle)
{
    char name[] = "first";
    weft_attr_t a = {.name = name};
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, &a, hold_for_names, NULL));
    memcpy(name, "xxxxx", 5);
    WAIT_UNTIL(atomic_load(&named_ready) == 1);
    char buf[16];
    ASSERT_EQ(weft_fiber_name(t, buf, sizeof buf), 5);
    ASSERT_STR_EQ(buf, "first");
    ASSERT_EQ(weft_fiber_name(t, buf, 3), 5);
    ASSERT_STR_EQ(buf, "fi");
    atomic_store(&named_go, 1);
    WAIT_UNTIL(atomic_load(&named_ready) == 2);
    ASSERT_EQ(weft_fiber_name(t, buf, sizeof buf), 6);
    ASSERT_STR_EQ(buf, "second");
    atomic_store(&named_go, 2);
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_ERR(weft_fiber_name(t, buf, sizeof buf), -ESRCH);
}

TEST(an_unnamed_thread_has_the_empty_name)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, wait_on, &wg));
    char buf[8] = "junk";
    ASSERT_EQ(weft_fiber_name(t, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "");
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_join(t, NULL));
}

TEST(bad_thread_input_is_einval_and_starts_nothing)
{
    weft_fiber_t t;
    ASSERT_ERR(weft_thread_spawn(&t, NULL, NULL, NULL), -EINVAL);
    weft_attr_t a = {.flags = 1u << 3};
    ASSERT_ERR(weft_thread_spawn(&t, &a, add_one, NULL), -EINVAL);
}

static atomic_int thread_states_step;

static void *stepper(void *arg)
{
    weft_wg_t *wg = arg;
    atomic_store(&thread_states_step, 1);
    while (atomic_load(&thread_states_step) == 1)
        sched_yield();
    ASSERT_OK(weft_wg_wait(wg, WEFT_FOREVER));
    return (void *)11;
}

TEST(thread_states_running_waiting_done)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, stepper, &wg));
    WAIT_UNTIL(atomic_load(&thread_states_step) == 1);
    ASSERT_EQ(weft_fiber_state(t), WEFT_RUNNING);
    atomic_store(&thread_states_step, 2);
    WAIT_UNTIL(weft_fiber_state(t) == WEFT_WAITING);
    ASSERT_OK(weft_wg_done(&wg));
    WAIT_UNTIL(weft_fiber_state(t) == WEFT_DONE);
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 11);
    ASSERT_ERR(weft_fiber_state(t), -ESRCH);
}

TEST(thread_join_twice_detach_and_join_detached)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, wait_on, &wg));
    ASSERT_OK(weft_detach(t));
    ASSERT_ERR(weft_detach(t), -EINVAL);
    ASSERT_ERR(weft_join(t, NULL), -EINVAL);
    ASSERT_OK(weft_wg_done(&wg));
    WAIT_UNTIL(weft_fiber_state(t) == -ESRCH);
    ASSERT_ERR(weft_join(t, NULL), -ESRCH);
    ASSERT_ERR(weft_detach(t), -ESRCH);
    ASSERT_EQ(weft_fiber_id(t), 0);
}

TEST(a_thread_spawned_detached_goes_stale_when_it_finishes)
{
    weft_attr_t a = {.flags = WEFT_DETACHED};
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, &a, add_one, NULL));
    WAIT_UNTIL(weft_fiber_state(t) == -ESRCH);
    ASSERT_ERR(weft_join(t, NULL), -ESRCH);
    ASSERT_OK(weft_thread_spawn(NULL, NULL, add_one, NULL)); /* no handle: detached */
}

TEST(detach_a_finished_thread)
{
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, add_one, NULL));
    WAIT_UNTIL(weft_fiber_state(t) == WEFT_DONE);
    ASSERT_OK(weft_detach(t));
    ASSERT_ERR(weft_fiber_state(t), -ESRCH);
    ASSERT_ERR(weft_join(t, NULL), -ESRCH);
}

TEST(thread_join_until_times_out_and_stays_joinable)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, wait_on, &wg));
    int64_t d = weft_deadline_in(5 * 1000000);
    ASSERT_ERR(weft_join_until(t, NULL, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    ASSERT_ERR(weft_join_until(t, NULL, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join_until(t, &r, weft_deadline_in((int64_t)60 * 1000000000)));
    ASSERT_EQ((intptr_t)r, 7);
}

static void *fiber_join_until_thread(void *arg)
{
    weft_fiber_t t = *(weft_fiber_t *)arg;
    int64_t d = weft_deadline_in(5 * 1000000);
    ASSERT_ERR(weft_join_until(t, NULL, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    return NULL;
}

TEST(a_fiber_join_until_on_a_thread_times_out)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    static weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, wait_on, &wg));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, fiber_join_until_thread, &t));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Fibers and threads together                                                                       */

static atomic_int flag_from_fiber;

static void *thread_waits_for_fiber_flag(void *arg)
{
    (void)arg;
    while (!atomic_load(&flag_from_fiber))
        sched_yield();
    return (void *)21;
}

static void *set_flag(void *arg)
{
    (void)arg;
    atomic_store(&flag_from_fiber, 1);
    return NULL;
}

static void *join_thread_on_one_worker(void *arg)
{
    (void)arg;
    weft_fiber_t t, f;
    ASSERT_OK(weft_thread_spawn(&t, NULL, thread_waits_for_fiber_flag, NULL));
    /* this fiber only runs if the join below gives the only worker away */
    ASSERT_OK(weft_spawn(&f, NULL, set_flag, NULL));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 21);
    ASSERT_OK(weft_join(f, NULL));
    return NULL;
}

TEST(a_fiber_joining_a_thread_does_not_block_its_worker)
{
    weft_config_t c = {.workers = 1};
    ASSERT_OK(weft_start(&c));
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, join_thread_on_one_worker, NULL));
    ASSERT_OK(weft_join(m, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *yield_then_add_one(void *arg)
{
    for (int i = 0; i < 10; i++)
        weft_yield();
    return add_one(arg);
}

static void *thread_spawns_and_joins_fibers(void *arg)
{
    intptr_t base = (intptr_t)arg;
    weft_fiber_t f[32];
    for (int i = 0; i < 32; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, yield_then_add_one, (void *)(base + i)));
    intptr_t sum = 0;
    for (int i = 0; i < 32; i++) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((intptr_t)r, base + i + 1);
        sum += (intptr_t)r;
    }
    return (void *)sum;
}

TEST(threads_spawn_and_join_fibers)
{
    enum { T = 6 };
    weft_fiber_t t[T];
    for (int i = 0; i < T; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, thread_spawns_and_joins_fibers, (void *)(intptr_t)(i * 1000)));
    for (int i = 0; i < T; i++) {
        void *r;
        ASSERT_OK(weft_join(t[i], &r));
        intptr_t want = 32 * (i * 1000) + 32 * 33 / 2;
        ASSERT_EQ((intptr_t)r, want);
    }
    ASSERT_OK(weft_shutdown());
}

static void *thread_joins_handle(void *arg)
{
    void *r;
    ASSERT_OK(weft_join(*(weft_fiber_t *)arg, &r));
    return r;
}

TEST(a_thread_joins_a_fiber_it_did_not_spawn)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    static weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, wait_on, &wg));
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, thread_joins_handle, &f));
    WAIT_UNTIL(weft_fiber_state(t) == WEFT_WAITING);
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_OK(weft_shutdown());
}

TEST(a_thread_joins_a_thread)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    static weft_fiber_t inner;
    ASSERT_OK(weft_thread_spawn(&inner, NULL, wait_on, &wg));
    weft_fiber_t outer;
    ASSERT_OK(weft_thread_spawn(&outer, NULL, thread_joins_handle, &inner));
    WAIT_UNTIL(weft_fiber_state(outer) == WEFT_WAITING);
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(outer, &r));
    ASSERT_EQ((intptr_t)r, 7);
}

static void *pthread_joins_handle(void *arg)
{
    return thread_joins_handle(arg);
}

TEST(a_foreign_thread_joins_a_thread)
{
    static weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, yield_then_add_one, (void *)4));
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, pthread_joins_handle, &t), 0);
    void *r;
    ASSERT_EQ(pthread_join(p, &r), 0);
    ASSERT_EQ((intptr_t)r, 5);
}

static void *fiber_joins_thread(void *arg)
{
    return thread_joins_handle(arg);
}

TEST(many_fibers_join_many_threads)
{
    enum { N = 24 };
    static weft_fiber_t t[N];
    weft_fiber_t f[N];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, yield_then_add_one, (void *)(intptr_t)i));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, fiber_joins_thread, &t[i]));
    for (int i = 0; i < N; i++) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((intptr_t)r, i + 1);
    }
    ASSERT_OK(weft_shutdown());
}

static void *thread_sleeps(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        int64_t d = weft_deadline_in(2 * 1000000);
        ASSERT_OK(weft_sleep_until(d));
        ASSERT_GE(weft_now(), d);
    }
    int64_t d = weft_deadline_in(1000000);
    ASSERT_OK(weft_sleep(1000000));
    ASSERT_GE(weft_now(), d);
    ASSERT_OK(weft_sleep_until(WEFT_NOWAIT));
    ASSERT_OK(weft_sleep_until(1)); /* long past */
    return (void *)1;
}

TEST(a_thread_sleeps_until_its_deadline)
{
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, thread_sleeps, NULL));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 1);
}

static void *thread_waits_wg(void *arg)
{
    weft_wg_t *wg = arg;
    int64_t d = weft_deadline_in(3 * 1000000);
    ASSERT_ERR(weft_wg_wait(&wg[0], d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    ASSERT_ERR(weft_wg_wait(&wg[0], WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_wg_done(&wg[1])); /* tell the test we are about to wait for good */
    ASSERT_OK(weft_wg_wait(&wg[0], WEFT_FOREVER));
    return (void *)2;
}

TEST(a_thread_waits_on_a_wait_group)
{
    static weft_wg_t wg[2] = {WEFT_WG_INIT, WEFT_WG_INIT};
    ASSERT_OK(weft_wg_add(&wg[0], 3));
    ASSERT_OK(weft_wg_add(&wg[1], 1));
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, thread_waits_wg, wg));
    ASSERT_OK(weft_wg_wait(&wg[1], WEFT_FOREVER));
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_wg_done(&wg[0]));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 2);
}

static void *use_stack(void *arg)
{
    size_t n = (size_t)arg;
    volatile char *p = __builtin_alloca(n);
    for (size_t i = 0; i < n; i += 1024)
        p[i] = (char)i;
    size_t ok = 0;
    for (size_t i = 0; i < n; i += 1024)
        ok += p[i] == (char)i;
    return (void *)ok;
}

TEST(a_thread_gets_the_stack_size_it_asked_for)
{
    weft_attr_t a = {.stack_size = 16 << 20};
    weft_fiber_t t;
    size_t n = 12 << 20; /* more than the usual 8 MiB default of a thread */
    ASSERT_OK(weft_thread_spawn(&t, &a, use_stack, (void *)n));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((size_t)r, n / 1024);
}
