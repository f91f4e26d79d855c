/*
 * The tools see fibers: a stack overflow is reported by name, and depending on the build flavour,
 * TSan finds a race planted between two fibers of one worker while clean code stays quiet, ASan knows
 * fiber stacks (longjmp, fake stacks for use-after-return), and Valgrind runs clean code without errors.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft.h>

#include "obs/sanitize.h"
#include "runner.h"

static char out[1 << 18];

static volatile long depth_limit = 1L << 40; /* never reached: the stack runs out first */

static long deep_recursion(long n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    if (n >= depth_limit)
        return 0;
    return deep_recursion(n + 1) + pad[0];
}

static void *recurse_forever(void *arg)
{
    return (void *)deep_recursion((long)arg);
}

static void overflow_fiber(void *arg)
{
    weft_config_t c = {.workers = 1};
    weft_start(&c);
    weft_attr_t a = {.name = "deep-one", .stack_size = 64 << 10};
    weft_fiber_t f;
    weft_spawn(&f, &a, recurse_forever, NULL);
    weft_join(f, NULL);
}

/* The report of "deep-one", a fiber with a 64 KiB stack, and the abort after it. */
static void assert_deep_one_reported(int st)
{
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGABRT);
    ASSERT_CONTAINS(out, "weft: fiber \"deep-one\" (id ");
    char want[64];
    snprintf(want, sizeof want, "overflowed its stack of %d KiB", 64 * WEFT_SAN_STACK_FACTOR);
    ASSERT_CONTAINS(out, want);
    ASSERT_CONTAINS(out, "weft_attr_t.stack_size");
    ASSERT_CONTAINS(out, "WEFT_STACK_SIZE");
}

TEST(fiber_overflow_is_reported_by_name)
{
    assert_deep_one_reported(runner_capture(overflow_fiber, NULL, out, sizeof out, 60));
}

/* Every way a fiber can end up running after a stuck-worker hand-off: the stuck fiber itself on its old
 * thread, before it enters the runtime again or after (a yield makes it a thread of its own), and a
 * fiber of the worker that the fresh thread now runs. */
enum { AFTER_BLOCK = 0, AFTER_BLOCK_AND_YIELD = 1, ON_THE_FRESH_THREAD = 2, BLOCK_ONLY = 3 };

static _Atomic long ticks;
static _Atomic int stop_ticking;

static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_ticking)) {
        atomic_fetch_add(&ticks, 1);
        weft_yield();
    }
    return NULL;
}

static void *block_then_recurse(void *arg)
{
    long how = (long)arg;
    long before = atomic_load(&ticks);
    usleep(300000); /* long past the 10 ms after which the monitor hands the worker off */
    if (atomic_load(&ticks) == before)
        return (void *)1; /* no hand-off happened: nothing to test */
    if (how == BLOCK_ONLY)
        return NULL;
    if (how == AFTER_BLOCK_AND_YIELD)
        weft_yield();
    return recurse_forever(NULL);
}

static void *wait_then_recurse(void *arg)
{
    weft_sleep(300 * 1000000LL); /* wakes on the fresh thread, after the blocker's hand-off */
    return recurse_forever(arg);
}

static void overflow_after_handoff(void *arg)
{
    long how = (long)arg;
    weft_config_t c = {.workers = 1};
    weft_start(&c);
    weft_fiber_t t, f;
    weft_attr_t ta = {.name = "ticker"};
    weft_spawn(&t, &ta, ticker, NULL);
    weft_attr_t a = {.name = "deep-one", .stack_size = 64 << 10};
    if (how == ON_THE_FRESH_THREAD) {
        weft_fiber_t b;
        weft_attr_t ba = {.name = "blocker"};
        weft_spawn(&f, &a, wait_then_recurse, NULL);
        weft_spawn(&b, &ba, block_then_recurse, (void *)(long)BLOCK_ONLY);
        weft_join(f, NULL);
    } else {
        void *r = NULL;
        weft_spawn(&f, &a, block_then_recurse, (void *)how);
        weft_join(f, &r);
        if (r == (void *)1)
            printf("no hand-off\n");
    }
    _exit(3);
}

static void check_named_overflow(long how)
{
    int st = runner_capture(overflow_after_handoff, (void *)how, out, sizeof out, 60);
    ASSERT_NOT_CONTAINS(out, "no hand-off");
    ASSERT_CONTAINS(out, "without yielding"); /* the hand-off happened */
    assert_deep_one_reported(st);
}

TEST(a_fiber_that_overflows_after_its_worker_was_handed_off_is_reported_by_name)
{
    check_named_overflow(AFTER_BLOCK);
}

TEST(a_fiber_that_overflows_after_a_hand_off_and_a_yield_is_reported_by_name)
{
    check_named_overflow(AFTER_BLOCK_AND_YIELD);
}

TEST(a_fiber_that_overflows_on_the_thread_its_worker_was_handed_to_is_reported_by_name)
{
    check_named_overflow(ON_THE_FRESH_THREAD);
}

static void overflow_thread(void *arg)
{
    weft_attr_t a = {.name = "t-deep", .stack_size = 128 << 10};
    weft_fiber_t t;
    weft_thread_spawn(&t, &a, recurse_forever, NULL);
    weft_join(t, NULL);
}

TEST(thread_overflow_is_reported_by_name)
{
    int st = runner_capture(overflow_thread, NULL, out, sizeof out, 60);
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGABRT);
    ASSERT_CONTAINS(out, "weft: thread \"t-deep\" (id ");
    ASSERT_CONTAINS(out, "overflowed its stack");
}

static void *null_deref(void *arg)
{
    volatile int *p = arg;
    return (void *)(long)*p;
}

static void segv_fiber(void *arg)
{
    weft_fiber_t f;
    weft_spawn(&f, NULL, null_deref, (void *)(uintptr_t)16); /* unmapped, and not NULL: only the MMU catches it */
    weft_join(f, NULL);
}

TEST(other_faults_still_crash)
{
    int st = runner_capture(segv_fiber, NULL, out, sizeof out, 60);
    ASSERT_NOT_CONTAINS(out, "overflowed");
#if WEFT_ASAN || WEFT_TSAN
    /* the sanitizer's handler, to which weft passes the fault on, reports it */
    ASSERT_CONTAINS(out, "SEGV");
    ASSERT(!WIFEXITED(st) || WEXITSTATUS(st) != 0);
#else
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGSEGV);
#endif
}

static __attribute__((unused)) int probe(const char *mode, char *const env[])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/san-probe", runner_bin_dir());
    char *argv[] = {path, (char *)mode, NULL};
    return runner_capture_exec(argv, env, out, sizeof out, 300);
}

#if WEFT_TSAN
TEST(tsan_reports_a_race_between_two_fibers_of_one_worker)
{
    char *env[] = {"TSAN_OPTIONS=halt_on_error=0:exitcode=66", NULL};
    int st = probe("race", env);
    ASSERT_CONTAINS(out, "WARNING: ThreadSanitizer: data race");
    ASSERT_CONTAINS(out, "racer");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 66);
}

TEST(tsan_is_silent_on_clean_code)
{
    char *env[] = {"TSAN_OPTIONS=halt_on_error=0:exitcode=66", NULL};
    int st = probe("clean", env);
    ASSERT_NOT_CONTAINS(out, "ThreadSanitizer");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
}
#endif

#if WEFT_ASAN
TEST(asan_is_silent_on_clean_code)
{
    char *env[] = {"ASAN_OPTIONS=detect_stack_use_after_return=1:detect_leaks=1", NULL};
    int st = probe("clean", env);
    ASSERT_NOT_CONTAINS(out, "AddressSanitizer");
    ASSERT_NOT_CONTAINS(out, "WARNING");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
}

TEST(asan_finds_use_after_return_in_a_fiber)
{
    char *env[] = {"ASAN_OPTIONS=detect_stack_use_after_return=1", NULL};
    int st = probe("uar", env);
    ASSERT_CONTAINS(out, "stack-use-after-return");
    ASSERT(!WIFEXITED(st) || WEXITSTATUS(st) != 0);
}
#endif

/* Debian's valgrind runs programs of the machine's own architecture: not the aarch64 build under qemu */
#if !WEFT_ASAN && !WEFT_TSAN && defined(__x86_64__)
TEST(valgrind_is_silent_on_clean_code)
{
    if (access("/usr/bin/valgrind", X_OK) != 0) {
        printf("valgrind is not installed: nothing to check\n");
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/san-probe", runner_bin_dir());
    char *argv[] = {"/usr/bin/valgrind", "--error-exitcode=9", "--leak-check=no", path, "clean", NULL};
    int st = runner_capture_exec(argv, NULL, out, sizeof out, 300);
    ASSERT_NOT_CONTAINS(out, "switching stacks");
    ASSERT_NOT_CONTAINS(out, "Invalid read");
    ASSERT_NOT_CONTAINS(out, "Invalid write");
    ASSERT_NOT_CONTAINS(out, "uninitialised");
    ASSERT_CONTAINS(out, "ERROR SUMMARY: 0 errors");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ(WEXITSTATUS(st), 0);
}
#endif
