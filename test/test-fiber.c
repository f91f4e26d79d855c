/*
 * Fibers: spawn and join, detach, stale handles, bad input, names, ids, identity on foreign threads, the
 * lifecycle seen through weft_fiber_state, and spawning and joining from outside the runtime.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/resource.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || __has_feature(address_sanitizer) ||         \
    __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#else
#define UNDER_SANITIZER 0
#endif

static void *return_self(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)weft_self().handle_;
}

/* Waits on the wait group given as arg, then returns 7. */
static void *wait_on(void *arg)
{
    ASSERT_OK(weft_wg_wait(arg, WEFT_FOREVER));
    return (void *)7;
}

/* ------------------------------------------------------------------------------------------------ */
/* Spawn and join                                                                                    */

TEST(join_returns_the_result)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)41));
    ASSERT_NE(f.handle_, 0);
    void *r = NULL;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 42);
    ASSERT_OK(weft_shutdown());
}

TEST(join_accepts_a_null_result_pointer)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)1));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_ERR(weft_join(f, NULL), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

static void *yield_then_add_one(void *arg)
{
    for (int i = 0; i < (int)((intptr_t)arg % 5); i++)
        weft_yield();
    return add_one(arg);
}

TEST(many_fibers_each_return_their_own_result)
{
    enum { N = 10000 };
    static weft_fiber_t f[N];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, yield_then_add_one, (void *)(intptr_t)i));
    for (int i = N - 1; i >= 0; i--) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((intptr_t)r, i + 1);
    }
    ASSERT_OK(weft_shutdown());
}

static void *spawn_and_join_children(void *arg)
{
    intptr_t n = (intptr_t)arg;
    weft_fiber_t c[64];
    for (intptr_t i = 0; i < n; i++)
        ASSERT_OK(weft_spawn(&c[i], NULL, yield_then_add_one, (void *)(i * 3)));
    intptr_t sum = 0;
    for (intptr_t i = 0; i < n; i++) {
        void *r;
        ASSERT_OK(weft_join(c[i], &r));
        ASSERT_EQ((intptr_t)r, i * 3 + 1);
        sum += (intptr_t)r;
    }
    return (void *)sum;
}

TEST(fibers_spawn_and_join_fibers)
{
    weft_fiber_t f[16];
    for (int i = 0; i < 16; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, spawn_and_join_children, (void *)(intptr_t)(i * 4)));
    for (int i = 0; i < 16; i++) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        intptr_t n = i * 4, want = 3 * n * (n - 1) / 2 + n;
        ASSERT_EQ((intptr_t)r, want);
    }
    ASSERT_OK(weft_shutdown());
}

static atomic_int go_count;

static void *count_go(void *arg)
{
    weft_yield();
    atomic_fetch_add(&go_count, (int)(intptr_t)arg);
    return NULL;
}

TEST(go_runs_every_fiber_before_shutdown_returns)
{
    for (int i = 0; i < 1000; i++)
        ASSERT_OK(weft_go(count_go, (void *)1));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&go_count), 1000);
}

TEST(spawn_with_a_null_handle_pointer_is_detached)
{
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_spawn(NULL, NULL, count_go, (void *)2));
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&go_count), 200);
}

TEST(self_is_the_handle_that_spawn_gave)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, return_self, NULL));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((uint64_t)(uintptr_t)r, f.handle_);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Join errors, detach, stale handles                                                                */

TEST(join_twice_is_esrch)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_ERR(weft_join(f, NULL), -ESRCH);
    ASSERT_ERR(weft_join_until(f, NULL, WEFT_NOWAIT), -ESRCH);
    ASSERT_ERR(weft_detach(f), -ESRCH);
    ASSERT_ERR(weft_fiber_state(f), -ESRCH);
    ASSERT_EQ(weft_fiber_id(f), 0);
    char buf[8];
    ASSERT_ERR(weft_fiber_name(f, buf, sizeof buf), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

TEST(a_stale_handle_stays_stale_when_its_slot_is_reused)
{
    weft_fiber_t old;
    ASSERT_OK(weft_spawn(&old, NULL, add_one, NULL));
    ASSERT_OK(weft_join(old, NULL));
    /* new fibers reuse the freed descriptor: the old handle must never name them */
    for (int i = 0; i < 2000; i++) {
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)(intptr_t)i));
        ASSERT_NE(f.handle_, old.handle_);
        ASSERT_ERR(weft_join(old, NULL), -ESRCH);
        ASSERT_ERR(weft_fiber_state(old), -ESRCH);
        ASSERT_EQ(weft_fiber_id(old), 0);
        void *r;
        ASSERT_OK(weft_join(f, &r));
        ASSERT_EQ((intptr_t)r, i + 1);
    }
    ASSERT_OK(weft_shutdown());
}

TEST(joining_a_detached_fiber_is_einval)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t f;
    weft_attr_t a = {.flags = WEFT_DETACHED};
    ASSERT_OK(weft_spawn(&f, &a, wait_on, &wg));
    ASSERT_ERR(weft_join(f, NULL), -EINVAL);
    ASSERT_ERR(weft_join_until(f, NULL, weft_deadline_in(1000000)), -EINVAL);
    ASSERT_ERR(weft_detach(f), -EINVAL);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_shutdown());
}

TEST(detach_of_a_running_fiber_then_its_handle_goes_stale)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, wait_on, &wg));
    ASSERT_OK(weft_detach(f));
    ASSERT_ERR(weft_detach(f), -EINVAL);
    ASSERT_ERR(weft_join(f, NULL), -EINVAL);
    ASSERT_OK(weft_wg_done(&wg));
    WAIT_UNTIL(weft_fiber_state(f) == -ESRCH);
    ASSERT_ERR(weft_join(f, NULL), -ESRCH);
    ASSERT_ERR(weft_detach(f), -ESRCH);
    ASSERT_EQ(weft_fiber_id(f), 0);
    ASSERT_OK(weft_shutdown());
}

TEST(a_detached_fiber_that_finished_has_a_stale_handle)
{
    weft_fiber_t f;
    weft_attr_t a = {.flags = WEFT_DETACHED, .name = "gone"};
    ASSERT_OK(weft_spawn(&f, &a, add_one, NULL));
    WAIT_UNTIL(weft_fiber_state(f) == -ESRCH);
    ASSERT_ERR(weft_join(f, NULL), -ESRCH);
    ASSERT_ERR(weft_detach(f), -ESRCH);
    char buf[8];
    ASSERT_ERR(weft_fiber_name(f, buf, sizeof buf), -ESRCH);
    ASSERT_EQ(weft_fiber_id(f), 0);
    ASSERT_OK(weft_shutdown());
}

TEST(detach_after_it_finished_frees_it)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, NULL));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_DONE);
    ASSERT_OK(weft_detach(f));
    ASSERT_ERR(weft_fiber_state(f), -ESRCH);
    ASSERT_ERR(weft_join(f, NULL), -ESRCH);
    ASSERT_ERR(weft_detach(f), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

static atomic_int end_go;

static void *end_when_told(void *arg)
{
    while (!atomic_load(&end_go))
        cpu_relax();
    return arg;
}

/* A detached fiber may finish at any moment after the detach: a second detach or a join must then
 * say EINVAL (still running) or ESRCH (gone), never succeed. The caller keeps asking while the fiber
 * ends, so that some call lands in the middle of its end. */
TEST(detach_or_join_after_detach_never_succeeds_while_the_fiber_ends)
{
    start_workers(1);
    long n = runner_scaled(20000);
    for (long i = 0; i < n; i++) {
        weft_fiber_t f;
        atomic_store(&end_go, 0);
        ASSERT_OK(weft_spawn(&f, NULL, end_when_told, (void *)(uintptr_t)i));
        ASSERT_OK(weft_detach(f));
        atomic_store(&end_go, 1);
        for (;;) {
            int r = i % 2 ? weft_detach(f) : weft_join(f, NULL);
            if (r == -ESRCH)
                break;
            if (r != -EINVAL)
                FAIL("iteration %ld: %s after detach returned %d (%s)", i, i % 2 ? "a second detach" : "a join",
                     r, runner_err_name(r));
        }
    }
    ASSERT_OK(weft_shutdown());
}

static void *join_self(void *arg)
{
    (void)arg;
    ASSERT_ERR(weft_join(weft_self(), NULL), -EDEADLK);
    ASSERT_ERR(weft_join_until(weft_self(), NULL, weft_deadline_in(1000)), -EDEADLK);
    /* the failed joins left it joinable */
    ASSERT_EQ(weft_fiber_state(weft_self()), WEFT_RUNNING);
    return (void *)5;
}

TEST(joining_yourself_is_edeadlk)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, join_self, NULL));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 5);
    ASSERT_OK(weft_shutdown());
}

static void *thread_joins_itself(void *arg)
{
    (void)arg;
    ASSERT_ERR(weft_join(weft_self(), NULL), -EDEADLK);
    return (void *)6;
}

TEST(a_weft_thread_joining_itself_is_edeadlk)
{
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, thread_joins_itself, NULL));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ASSERT_EQ((intptr_t)r, 6);
}

TEST(join_until_a_passed_deadline_is_etimedout_and_the_fiber_stays_joinable)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, wait_on, &wg));
    for (int i = 0; i < 3; i++) {
        int64_t d = weft_deadline_in(5 * 1000000);
        ASSERT_ERR(weft_join_until(f, NULL, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
        ASSERT_ERR(weft_join_until(f, NULL, WEFT_NOWAIT), -ETIMEDOUT);
        ASSERT_ERR(weft_join_until(f, NULL, 1), -ETIMEDOUT); /* long past */
    }
    ASSERT_GE(weft_fiber_state(f), 0);
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_OK(weft_shutdown());
}

static void *join_until_from_fiber(void *arg)
{
    weft_fiber_t f = *(weft_fiber_t *)arg;
    int64_t d = weft_deadline_in(5 * 1000000);
    ASSERT_ERR(weft_join_until(f, NULL, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    ASSERT_ERR(weft_join_until(f, NULL, WEFT_NOWAIT), -ETIMEDOUT);
    return (void *)1;
}

TEST(join_until_from_a_fiber_times_out_and_a_later_join_works)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    static weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, wait_on, &wg));
    weft_fiber_t j;
    ASSERT_OK(weft_spawn(&j, NULL, join_until_from_fiber, &f));
    ASSERT_OK(weft_join(j, NULL));
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_OK(weft_shutdown());
}

TEST(join_nowait_collects_a_finished_fiber)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)9));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_DONE);
    void *r = NULL;
    ASSERT_OK(weft_join_until(f, &r, WEFT_NOWAIT));
    ASSERT_EQ((intptr_t)r, 10);
    ASSERT_ERR(weft_join_until(f, &r, WEFT_NOWAIT), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

TEST(join_until_a_later_deadline_gets_the_result)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, yield_then_add_one, (void *)3));
    void *r = NULL;
    ASSERT_OK(weft_join_until(f, &r, weft_deadline_in((int64_t)60 * 1000000000)));
    ASSERT_EQ((intptr_t)r, 4);
    ASSERT_OK(weft_shutdown());
}

static weft_fiber_t second_joiner_target;

static void *first_joiner(void *arg)
{
    (void)arg;
    void *r;
    ASSERT_OK(weft_join(second_joiner_target, &r));
    return r;
}

TEST(a_second_join_while_one_is_under_way_is_einval)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    ASSERT_OK(weft_spawn(&second_joiner_target, NULL, wait_on, &wg));
    weft_fiber_t j;
    ASSERT_OK(weft_spawn(&j, NULL, first_joiner, NULL));
    WAIT_UNTIL(weft_fiber_state(j) == WEFT_WAITING);
    ASSERT_ERR(weft_join(second_joiner_target, NULL), -EINVAL);
    ASSERT_ERR(weft_join_until(second_joiner_target, NULL, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_detach(second_joiner_target), -EINVAL);
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(j, &r));
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_ERR(weft_join(second_joiner_target, NULL), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Bad input                                                                                         */

static atomic_int ran;

static void *mark_ran(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return NULL;
}

TEST(bad_spawn_input_is_einval_and_starts_nothing)
{
    start_workers(2);
    weft_fiber_t f = {12345};
    ASSERT_ERR(weft_spawn(&f, NULL, NULL, NULL), -EINVAL);
    weft_attr_t flags = {.flags = 1u << 1};
    ASSERT_ERR(weft_spawn(&f, &flags, mark_ran, NULL), -EINVAL);
    weft_attr_t high = {.flags = 1u << 31};
    ASSERT_ERR(weft_spawn(&f, &high, mark_ran, NULL), -EINVAL);
    weft_attr_t big = {.stack_size = ((size_t)1 << 30) + 1};
    ASSERT_ERR(weft_spawn(&f, &big, mark_ran, NULL), -EINVAL);
    weft_attr_t huge = {.stack_size = SIZE_MAX};
    ASSERT_ERR(weft_spawn(&f, &huge, mark_ran, NULL), -EINVAL);
    ASSERT_ERR(weft_spawn(NULL, &flags, mark_ran, NULL), -EINVAL);
    ASSERT_ERR(weft_go(NULL, NULL), -EINVAL);
    ASSERT_OK(weft_shutdown());
    ASSERT_EQ(atomic_load(&ran), 0);
}

TEST(bad_spawn_input_does_not_start_the_runtime)
{
    ASSERT_ERR(weft_spawn(NULL, NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_workers(), 0);
}

static void *touch_stack(void *arg)
{
    size_t n = (size_t)arg;
    volatile char *p = __builtin_alloca(n);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    return (void *)n;
}

TEST(a_stack_of_exactly_one_gib_is_accepted_and_usable)
{
    start_workers(1);
    weft_attr_t a = {.stack_size = (size_t)1 << 30};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, touch_stack, (void *)(size_t)(4 << 20)));
    void *r;
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((size_t)r, (size_t)(4 << 20));
    ASSERT_OK(weft_shutdown());
}

TEST(the_zero_handle_names_nothing)
{
    ASSERT_OK(weft_start(NULL));
    weft_fiber_t z = WEFT_FIBER_NONE;
    ASSERT_ERR(weft_join(z, NULL), -ESRCH);
    ASSERT_ERR(weft_join_until(z, NULL, WEFT_NOWAIT), -ESRCH);
    ASSERT_ERR(weft_join_until(z, NULL, weft_deadline_in(1000)), -ESRCH);
    ASSERT_ERR(weft_detach(z), -ESRCH);
    ASSERT_ERR(weft_fiber_state(z), -ESRCH);
    ASSERT_EQ(weft_fiber_id(z), 0);
    char buf[4] = "xyz";
    ASSERT_ERR(weft_fiber_name(z, buf, sizeof buf), -ESRCH);
    ASSERT_OK(weft_shutdown());
    /* and with no runtime at all */
    ASSERT_ERR(weft_join(z, NULL), -ESRCH);
    ASSERT_ERR(weft_fiber_state(z), -ESRCH);
}

static void check_garbage(uint64_t v)
{
    weft_fiber_t g = {v};
    char buf[8];
    if (weft_join(g, NULL) != -ESRCH || weft_join_until(g, NULL, WEFT_NOWAIT) != -ESRCH ||
        weft_detach(g) != -ESRCH || weft_fiber_state(g) != -ESRCH || weft_fiber_id(g) != 0 ||
        weft_fiber_name(g, buf, sizeof buf) != -ESRCH)
        FAIL("handle value %#llx was not reported as -ESRCH by every call (state %d)", (unsigned long long)v,
             weft_fiber_state(g));
}

TEST(garbage_handle_values_are_esrch)
{
    /* live fibers, so that the descriptor table exists around the garbage */
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t live[8];
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_spawn(&live[i], NULL, wait_on, &wg));
    uint64_t h = live[3].handle_;
    uint64_t vals[] = {
        1, 2, 0xffffffffull, UINT64_MAX, 0x8000000000000000ull, 0xdeadbeefdeadbeefull,
        h ^ 0x8000000000000000ull,              /* the right slot, a generation never issued */
        (h & 0xffffffff00000000ull) | 0x3fffffffull, /* an index far past any descriptor */
        (h & 0xffffffff00000000ull) | 0xffffffffull,
        (uint64_t)0xdeadbeef << 32 | 5,
    };
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
        check_garbage(vals[i]);
    srand(1);
    for (int i = 0; i < 100000; i++) {
        uint64_t v = ((uint64_t)(unsigned)rand() << 33) ^ ((uint64_t)(unsigned)rand() << 11) ^ (unsigned)rand();
        int own = 0;
        for (int k = 0; k < 8; k++)
            own |= v == live[k].handle_;
        if (!own)
            check_garbage(v);
    }
    ASSERT_OK(weft_wg_done(&wg));
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_join(live[i], NULL));
    ASSERT_OK(weft_shutdown());
}

/* A freed slot's next generation has not been handed out yet: a handle that claims it names nothing,
 * and calls on it must neither collect nor free anything. */
TEST(the_next_generation_of_a_freed_slot_names_nothing)
{
    start_workers(1);
    weft_fiber_t joined, detached;
    ASSERT_OK(weft_spawn(&joined, NULL, add_one, NULL));
    ASSERT_OK(weft_join(joined, NULL));
    weft_attr_t a = {.flags = WEFT_DETACHED};
    ASSERT_OK(weft_spawn(&detached, &a, add_one, NULL));
    WAIT_UNTIL(weft_fiber_state(detached) == -ESRCH);
    weft_fiber_t next1 = {joined.handle_ + ((uint64_t)1 << 32)};
    weft_fiber_t next2 = {detached.handle_ + ((uint64_t)1 << 32)};
    /* a join that "collects" such a handle frees the slot a second time */
    ASSERT_ERR(weft_join(next1, NULL), -ESRCH);
    ASSERT_ERR(weft_join(next2, NULL), -ESRCH);
    ASSERT_ERR(weft_detach(next1), -ESRCH);
    ASSERT_ERR(weft_detach(next2), -ESRCH);
    ASSERT_ERR(weft_fiber_state(next1), -ESRCH);
    ASSERT_ERR(weft_fiber_state(next2), -ESRCH);
    /* the pool is intact: no descriptor is handed to two live fibers */
    enum { N = 300 };
    weft_fiber_t f[N];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, add_one, (void *)(intptr_t)i));
    for (int i = 0; i < N; i++)
        for (int k = 0; k < i; k++)
            if ((uint32_t)f[i].handle_ == (uint32_t)f[k].handle_)
                FAIL("fibers %d and %d share descriptor slot %u", k, i, (unsigned)(uint32_t)f[i].handle_);
    for (int i = 0; i < N; i++) {
        void *r;
        ASSERT_OK(weft_join(f[i], &r));
        ASSERT_EQ((intptr_t)r, i + 1);
    }
    ASSERT_OK(weft_shutdown());
}

#if !UNDER_SANITIZER
static void *never_runs(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return (void *)1;
}

/* A fiber whose stack cannot be made never runs; its joiner gets -ENOMEM. (Not under sanitizers:
 * their shadow memory needs more address space than the limit leaves.) */
/* Leave 256 MiB of address space beyond what the process uses now, once the runtime's own memory is in
 * place. false where the limit is not enforced: qemu-user does not pass RLIMIT_AS on to the host. */
static bool limit_address_space(void)
{
    weft_fiber_t warm;
    ASSERT_OK(weft_spawn(&warm, NULL, add_one, NULL)); /* the worker's own memory is in place */
    ASSERT_OK(weft_join(warm, NULL));
    struct rlimit rl;
    ASSERT_EQ(getrlimit(RLIMIT_AS, &rl), 0);
    FILE *st = fopen("/proc/self/statm", "r");
    ASSERT(st);
    unsigned long pages = 0;
    ASSERT_EQ(fscanf(st, "%lu", &pages), 1);
    fclose(st);
    struct rlimit lim = {.rlim_cur = pages * 4096ul + (256ul << 20), .rlim_max = rl.rlim_max};
    ASSERT_EQ(setrlimit(RLIMIT_AS, &lim), 0);
    void *probe = mmap(NULL, (size_t)512 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (probe != MAP_FAILED) {
        munmap(probe, (size_t)512 << 20);
        printf("RLIMIT_AS is not enforced here (an emulator?): nothing to test\n");
        return false;
    }
    return true;
}

TEST(join_reports_enomem_when_no_stack_could_be_made)
{
    start_workers(1);
    if (!limit_address_space()) {
        ASSERT_OK(weft_shutdown());
        return;
    }
    weft_attr_t a = {.stack_size = (size_t)1 << 30};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, never_runs, NULL));
    void *r = (void *)99;
    ASSERT_ERR(weft_join(f, &r), -ENOMEM);
    ASSERT_PTR_EQ(r, NULL);
    ASSERT_EQ(atomic_load(&ran), 0);
    ASSERT_ERR(weft_join(f, NULL), -ESRCH);
    /* the runtime goes on */
    ASSERT_OK(weft_spawn(&f, NULL, add_one, (void *)1));
    ASSERT_OK(weft_join(f, &r));
    ASSERT_EQ((intptr_t)r, 2);
    ASSERT_OK(weft_shutdown());
}

/* A detached fiber that cannot start has no joiner to tell: it is named on stderr, by its id when it has
 * no name (weft.h). */
static void detached_without_stack(void *arg)
{
    start_workers(1);
    if (!limit_address_space())
        _exit(2);
    weft_attr_t a = {.name = arg, .stack_size = (size_t)1 << 30, .flags = WEFT_DETACHED};
    if (weft_spawn(NULL, &a, never_runs, NULL) < 0 || weft_shutdown() < 0)
        _exit(3);
    _exit(atomic_load(&ran) == 0 ? 0 : 4);
}

TEST(a_detached_fiber_that_cannot_start_is_named_on_stderr)
{
    static char out[4096];
    int st = runner_capture(detached_without_stack, NULL, out, sizeof out, 60);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 2)
        return; /* RLIMIT_AS is not enforced here */
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    ASSERT_CONTAINS(out, "could not start: no memory for its 1048576 KiB stack");
    ASSERT_NOT_CONTAINS(out, "fiber \"\"");
    unsigned long long id = 0;
    ASSERT_EQ(sscanf(out, "weft: fiber %llu could not start", &id), 1);
    ASSERT_GT(id, 0);
    st = runner_capture(detached_without_stack, "big", out, sizeof out, 60);
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
    ASSERT_CONTAINS(out, "weft: fiber \"big\" (id ");
    ASSERT_CONTAINS(out, ") could not start");
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Names                                                                                             */

static void *report_name(void *arg)
{
    char *out = arg;
    snprintf(out, 64, "%s", weft_self_name());
    return NULL;
}

static weft_wg_t name_gate = WEFT_WG_INIT;

static void *report_name_later(void *arg)
{
    ASSERT_OK(weft_wg_wait(&name_gate, WEFT_FOREVER));
    return report_name(arg);
}

TEST(the_name_is_copied_at_spawn)
{
    char name[] = "alpha";
    static char seen[64];
    ASSERT_OK(weft_wg_add(&name_gate, 1));
    weft_attr_t a = {.name = name};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, report_name_later, seen));
    memcpy(name, "omega", 5);
    char buf[32];
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 5);
    ASSERT_STR_EQ(buf, "alpha");
    ASSERT_OK(weft_wg_done(&name_gate));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_STR_EQ(seen, "alpha");
    ASSERT_OK(weft_shutdown());
}

TEST(long_names_are_truncated_to_31_bytes)
{
    const char *n31 = "abcdefghijklmnopqrstuvwxyz01234";
    const char *n40 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wxyz";
    static char seen[64];
    weft_attr_t a = {.name = n40};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, report_name, seen));
    char buf[64];
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 31);
    ASSERT_EQ(strncmp(buf, n40, 31), 0);
    ASSERT_EQ(strlen(buf), 31);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_EQ(strlen(seen), 31);
    ASSERT_EQ(strncmp(seen, n40, 31), 0);

    a.name = n31;
    ASSERT_OK(weft_spawn(&f, &a, report_name, seen));
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 31);
    ASSERT_STR_EQ(buf, n31);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_STR_EQ(seen, n31);
    ASSERT_OK(weft_shutdown());
}

TEST(fiber_name_fits_small_buffers)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_attr_t a = {.name = "worker-17"};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, wait_on, &wg));
    char buf[8];
    memset(buf, 'x', sizeof buf);
    ASSERT_EQ(weft_fiber_name(f, buf, 1), 9);
    ASSERT_STR_EQ(buf, "");
    ASSERT_EQ(buf[1], 'x');
    ASSERT_EQ(weft_fiber_name(f, buf, 4), 9);
    ASSERT_STR_EQ(buf, "wor");
    ASSERT_EQ(buf[4], 'x');
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 9);
    ASSERT_STR_EQ(buf, "worker-");
    memset(buf, 'x', sizeof buf);
    ASSERT_EQ(weft_fiber_name(f, buf, 0), 9); /* len 0: buf is not touched */
    ASSERT_EQ(buf[0], 'x');
    ASSERT_EQ(weft_fiber_name(f, NULL, 0), 9);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(an_unnamed_fiber_has_the_empty_name)
{
    static char seen[64] = "junk";
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    weft_fiber_t f, g;
    ASSERT_OK(weft_spawn(&f, NULL, report_name, seen));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_STR_EQ(seen, "");
    weft_attr_t a = {.name = ""};
    ASSERT_OK(weft_spawn(&g, &a, wait_on, &wg));
    char buf[16] = "junk";
    ASSERT_EQ(weft_fiber_name(g, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "");
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_OK(weft_join(g, NULL));
    ASSERT_OK(weft_shutdown());
}

static atomic_int renamed;
static atomic_int rename_go;

static void *rename_self(void *arg)
{
    (void)arg;
    if (strcmp(weft_self_name(), "before") != 0)
        FAIL("self name: \"%s\"", weft_self_name());
    ASSERT_OK(weft_set_name("after-the-rename-with-a-long-tail-beyond-31"));
    ASSERT_EQ(strlen(weft_self_name()), 31);
    ASSERT_EQ(strncmp(weft_self_name(), "after-the-rename-with-a-long-tail", 31), 0);
    atomic_store(&renamed, 1);
    while (!atomic_load(&rename_go))
        weft_yield();
    ASSERT_OK(weft_set_name("short"));
    ASSERT_STR_EQ(weft_self_name(), "short");
    atomic_store(&renamed, 2);
    while (atomic_load(&rename_go) < 2)
        weft_yield();
    ASSERT_OK(weft_set_name(NULL));
    ASSERT_STR_EQ(weft_self_name(), "");
    return NULL;
}

TEST(set_name_renames_the_calling_fiber)
{
    weft_attr_t a = {.name = "before"};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, rename_self, NULL));
    WAIT_UNTIL(atomic_load(&renamed) == 1);
    char buf[64];
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 31);
    ASSERT_EQ(strncmp(buf, "after-the-rename-with-a-long-tail", 31), 0);
    atomic_store(&rename_go, 1);
    WAIT_UNTIL(atomic_load(&renamed) == 2);
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 5);
    ASSERT_STR_EQ(buf, "short");
    atomic_store(&rename_go, 2);
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_DONE);
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 0);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(the_name_is_readable_until_the_join)
{
    weft_attr_t a = {.name = "finished"};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, &a, add_one, NULL));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_DONE);
    char buf[16];
    ASSERT_EQ(weft_fiber_name(f, buf, sizeof buf), 8);
    ASSERT_STR_EQ(buf, "finished");
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_ERR(weft_fiber_name(f, buf, sizeof buf), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Ids and identity                                                                                  */

static void *return_id(void *arg)
{
    (void)arg;
    if ((uintptr_t)arg & 1)
        weft_yield();
    return (void *)(uintptr_t)weft_self_id();
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void *spawn_ids(void *arg)
{
    uint64_t *ids = arg;
    for (int i = 0; i < 500; i++) {
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, return_id, (void *)(uintptr_t)i));
        uint64_t outside = weft_fiber_id(f);
        void *r;
        ASSERT_OK(weft_join(f, &r));
        ASSERT_EQ((uint64_t)(uintptr_t)r, outside);
        ids[i] = outside;
    }
    return NULL;
}

TEST(ids_are_unique_and_never_zero)
{
    start_workers(2);
    enum { SPAWNERS = 4, PER = 500 };
    static uint64_t ids[(SPAWNERS + 2) * PER + 2];
    weft_fiber_t sp[SPAWNERS];
    for (int s = 0; s < SPAWNERS; s++)
        ASSERT_OK(weft_spawn(&sp[s], NULL, spawn_ids, &ids[s * PER]));
    spawn_ids(&ids[SPAWNERS * PER]); /* from this foreign thread too */
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, spawn_ids, &ids[(SPAWNERS + 1) * PER]));
    ASSERT_OK(weft_join(t, NULL));
    for (int s = 0; s < SPAWNERS; s++)
        ASSERT_OK(weft_join(sp[s], NULL));
    size_t n = (SPAWNERS + 2) * PER;
    ASSERT_OK(weft_thread_spawn(&t, NULL, return_id, NULL));
    void *r;
    ASSERT_OK(weft_join(t, &r));
    ids[n++] = (uint64_t)(uintptr_t)r;
    qsort(ids, n, sizeof *ids, cmp_u64);
    ASSERT_NE(ids[0], 0);
    for (size_t i = 1; i < n; i++)
        if (ids[i] == ids[i - 1])
            FAIL("id %llu was given twice", (unsigned long long)ids[i]);
    ASSERT_OK(weft_shutdown());
}

static void check_no_identity(void)
{
    ASSERT_EQ(weft_self().handle_, 0);
    ASSERT_EQ(weft_self_id(), 0);
    ASSERT_STR_EQ(weft_self_name(), "");
    ASSERT_EQ(weft_in_fiber(), 0);
    ASSERT_ERR(weft_set_name("nope"), -EPERM);
}

static void *foreign_identity(void *arg)
{
    check_no_identity();
    /* a foreign thread that joined a fiber is still no fiber */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, add_one, NULL));
    ASSERT_OK(weft_join(f, NULL));
    check_no_identity();
    return arg;
}

TEST(a_foreign_thread_has_no_fiber_identity)
{
    check_no_identity();
    foreign_identity(NULL);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, foreign_identity, NULL), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_OK(weft_shutdown());
    check_no_identity();
}

static void *check_in_fiber(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_in_fiber(), 1);
    weft_yield();
    ASSERT_EQ(weft_in_fiber(), 1);
    ASSERT_NE(weft_self_id(), 0);
    ASSERT_NE(weft_self().handle_, 0);
    return NULL;
}

static void *check_not_in_fiber(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_in_fiber(), 0);
    return NULL;
}

TEST(in_fiber_is_one_only_in_fibers)
{
    ASSERT_EQ(weft_in_fiber(), 0);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, check_in_fiber, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_thread_spawn(&f, NULL, check_not_in_fiber, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_EQ(weft_in_fiber(), 0);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* The lifecycle, seen through weft_fiber_state                                                      */

static atomic_int stop_flag;

static void *yield_until_stop(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_flag))
        weft_yield();
    return (void *)3;
}

static void *lifecycle_on_one_worker(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_fiber_state(weft_self()), WEFT_RUNNING);

    /* NEW: spawned, and we have not given up the only worker yet */
    weft_fiber_t quick, yielder, waiter;
    ASSERT_OK(weft_spawn(&quick, NULL, add_one, (void *)1));
    ASSERT_EQ(weft_fiber_state(quick), WEFT_NEW);

    /* DONE: it ran to its end while we yielded; it waits for its join */
    WAIT_UNTIL(weft_fiber_state(quick) == WEFT_DONE);
    ASSERT_EQ(weft_fiber_state(quick), WEFT_DONE);
    void *r;
    ASSERT_OK(weft_join(quick, &r));
    ASSERT_EQ((intptr_t)r, 2);
    ASSERT_ERR(weft_fiber_state(quick), -ESRCH);

    /* READY: it started and yielded; it is runnable but we hold the worker */
    ASSERT_OK(weft_spawn(&yielder, NULL, yield_until_stop, NULL));
    WAIT_UNTIL(weft_fiber_state(yielder) != WEFT_NEW);
    ASSERT_EQ(weft_fiber_state(yielder), WEFT_READY);

    /* WAITING, then READY once woken (not yet run: we still hold the worker) */
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    ASSERT_OK(weft_spawn(&waiter, NULL, wait_on, &wg));
    WAIT_UNTIL(weft_fiber_state(waiter) == WEFT_WAITING);
    ASSERT_OK(weft_wg_done(&wg));
    ASSERT_EQ(weft_fiber_state(waiter), WEFT_READY);
    ASSERT_OK(weft_join(waiter, &r));
    ASSERT_EQ((intptr_t)r, 7);

    atomic_store(&stop_flag, 1);
    ASSERT_OK(weft_join(yielder, &r));
    ASSERT_EQ((intptr_t)r, 3);
    return NULL;
}

TEST(the_lifecycle_new_ready_running_waiting_done)
{
    start_workers(1);
    weft_fiber_t m;
    ASSERT_OK(weft_spawn(&m, NULL, lifecycle_on_one_worker, NULL));
    ASSERT_OK(weft_join(m, NULL));
    ASSERT_OK(weft_shutdown());
}

static atomic_int spin_started, spin_stop;

static void *spin_until_stop(void *arg)
{
    (void)arg;
    atomic_store(&spin_started, 1);
    while (!atomic_load(&spin_stop))
        cpu_relax();
    return NULL;
}

TEST(a_fiber_on_a_worker_is_running)
{
    start_workers(2);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, spin_until_stop, NULL));
    WAIT_UNTIL(atomic_load(&spin_started));
    ASSERT_EQ(weft_fiber_state(f), WEFT_RUNNING);
    atomic_store(&spin_stop, 1);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *sleep_a_while(void *arg)
{
    weft_sleep((int64_t)(intptr_t)arg);
    return NULL;
}

TEST(a_sleeping_fiber_is_waiting)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, sleep_a_while, (void *)(intptr_t)1000000000));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

static void *join_arg(void *arg)
{
    void *r;
    ASSERT_OK(weft_join(*(weft_fiber_t *)arg, &r));
    return r;
}

TEST(a_joining_fiber_is_waiting)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    static weft_fiber_t target;
    ASSERT_OK(weft_spawn(&target, NULL, wait_on, &wg));
    WAIT_UNTIL(weft_fiber_state(target) == WEFT_WAITING);
    weft_fiber_t j;
    ASSERT_OK(weft_spawn(&j, NULL, join_arg, &target));
    WAIT_UNTIL(weft_fiber_state(j) == WEFT_WAITING);
    ASSERT_EQ(weft_fiber_state(target), WEFT_WAITING);
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_OK(weft_join(j, &r));
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Spawning and joining from outside the runtime                                                     */

static void *foreign_spawner(void *arg)
{
    intptr_t base = (intptr_t)arg;
    enum { BATCH = 50 };
    for (int round = 0; round < 10; round++) {
        weft_fiber_t f[BATCH];
        for (int i = 0; i < BATCH; i++)
            ASSERT_OK(weft_spawn(&f[i], NULL, yield_then_add_one, (void *)(base + round * BATCH + i)));
        for (int i = 0; i < BATCH; i++) {
            void *r;
            ASSERT_OK(weft_join(f[i], &r));
            ASSERT_EQ((intptr_t)r, base + round * BATCH + i + 1);
        }
    }
    return NULL;
}

TEST(several_foreign_threads_spawn_and_join_at_once)
{
    enum { T = 8 };
    pthread_t t[T];
    for (int i = 0; i < T; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, foreign_spawner, (void *)(intptr_t)(i * 100000)), 0);
    foreign_spawner((void *)(intptr_t)(T * 100000));
    for (int i = 0; i < T; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_OK(weft_shutdown());
}

static void *join_from_pthread(void *arg)
{
    void *r = NULL;
    ASSERT_OK(weft_join(*(weft_fiber_t *)arg, &r));
    return r;
}

TEST(a_foreign_thread_joins_a_fiber_it_did_not_spawn)
{
    weft_wg_t wg = WEFT_WG_INIT;
    ASSERT_OK(weft_wg_add(&wg, 1));
    static weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, wait_on, &wg));
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, join_from_pthread, &f), 0);
    weft_sleep(10 * 1000000); /* let it park in the join (a finished fiber would do too) */
    ASSERT_OK(weft_wg_done(&wg));
    void *r;
    ASSERT_EQ(pthread_join(t, &r), 0);
    ASSERT_EQ((intptr_t)r, 7);
    ASSERT_OK(weft_shutdown());
}

TEST(a_fiber_joins_a_fiber_spawned_from_a_foreign_thread)
{
    static weft_fiber_t a;
    ASSERT_OK(weft_spawn(&a, NULL, yield_then_add_one, (void *)20));
    weft_fiber_t b;
    ASSERT_OK(weft_spawn(&b, NULL, join_arg, &a));
    void *r;
    ASSERT_OK(weft_join(b, &r));
    ASSERT_EQ((intptr_t)r, 21);
    ASSERT_ERR(weft_join(a, NULL), -ESRCH);
    ASSERT_OK(weft_shutdown());
}

static void *spawn_from_pthread(void *arg)
{
    ASSERT_OK(weft_spawn(arg, NULL, yield_then_add_one, (void *)30));
    return NULL;
}

TEST(a_fiber_spawned_by_a_pthread_is_joined_by_a_fiber)
{
    static weft_fiber_t a;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, spawn_from_pthread, &a), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    weft_fiber_t b;
    ASSERT_OK(weft_spawn(&b, NULL, join_arg, &a));
    void *r;
    ASSERT_OK(weft_join(b, &r));
    ASSERT_EQ((intptr_t)r, 31);
    ASSERT_OK(weft_shutdown());
}

static void *join_child_of_other(void *arg)
{
    weft_fiber_t *slot = arg;
    void *r;
    ASSERT_OK(weft_join(*slot, &r));
    return r;
}

static void *spawn_for_others(void *arg)
{
    weft_fiber_t *slots = arg;
    for (int i = 0; i < 64; i++)
        ASSERT_OK(weft_spawn(&slots[i], NULL, yield_then_add_one, (void *)(intptr_t)(i * 7)));
    return NULL;
}

TEST(fibers_join_fibers_spawned_by_other_fibers)
{
    start_workers(4);
    static weft_fiber_t slots[64];
    weft_fiber_t s;
    ASSERT_OK(weft_spawn(&s, NULL, spawn_for_others, slots));
    ASSERT_OK(weft_join(s, NULL)); /* slots are written: the join orders them before what follows */
    weft_fiber_t j[64];
    for (int i = 0; i < 64; i++)
        ASSERT_OK(weft_spawn(&j[i], NULL, join_child_of_other, &slots[i]));
    for (int i = 0; i < 64; i++) {
        void *r;
        ASSERT_OK(weft_join(j[i], &r));
        ASSERT_EQ((intptr_t)r, i * 7 + 1);
    }
    ASSERT_OK(weft_shutdown());
}
