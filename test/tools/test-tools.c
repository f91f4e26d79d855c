/*
 * The tools see fibers: a stack overflow is reported by name, and depending on the build flavour,
 * TSan finds a race planted between two fibers of one worker while clean code stays quiet, ASan knows
 * fiber stacks (longjmp, fake stacks for use-after-return), and Valgrind runs clean code without errors.
 */
#include <signal.h>
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

TEST(fiber_overflow_is_reported_by_name)
{
    int st = runner_capture(overflow_fiber, NULL, out, sizeof out, 60);
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGABRT);
    ASSERT_CONTAINS(out, "weft: fiber \"deep-one\" (id ");
    char want[64];
    snprintf(want, sizeof want, "overflowed its stack of %d KiB", 64 * WEFT_SAN_STACK_FACTOR);
    ASSERT_CONTAINS(out, want);
    ASSERT_CONTAINS(out, "weft_attr_t.stack_size");
    ASSERT_CONTAINS(out, "WEFT_STACK_SIZE");
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
