/*
 * weft's test runner: one program per area (test-<area>.c), each TEST in its own child process with a
 * timeout, so a crash or a hang fails that test and not the run.
 *
 *   TEST(join_returns_result) { ... ASSERT_EQ(r, 0); ... }
 *
 * A test passes when its function returns (the child exits 0). Assertions print both sides and where,
 * then end the child with status 1. The child's output is shown only when the test fails (or with -v).
 *
 * Usage: test-<area> [-v] [--list] [--timeout SECONDS] [NAME-SUBSTRING ...]
 * Environment: WEFT_TEST_TIMEOUT_SCALE multiplies timeouts (sanitizers, qemu); WEFT_TEST_SCALE scales
 * stress sizes (runner_scaled).
 */
#ifndef WEFT_TEST_RUNNER_H
#define WEFT_TEST_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef void (*runner_fn)(void);

void runner_register(const char *name, runner_fn fn, int timeout_s);
_Noreturn void runner_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Scale a stress size by WEFT_TEST_SCALE (default 1), at least 1. */
long runner_scaled(long n);
/* Directory of the running test program (for helper programs built beside it). */
const char *runner_bin_dir(void);

/* Run fn(arg) in a child process with stdout and stderr captured into out (NUL-terminated, truncated to
 * outlen). Returns the raw wait status, or -1 if the child could not be made. Gives up (SIGKILL) after
 * timeout_s seconds. */
int runner_capture(void (*fn)(void *), void *arg, char *out, size_t outlen, int timeout_s);
/* The same for a program: argv[0] is a path. envp may be NULL (inherit). */
int runner_capture_exec(char *const argv[], char *const envp[], char *out, size_t outlen, int timeout_s);

#define TEST_TIMEOUT(name, seconds)                                                                 \
    static void test_##name(void);                                                                  \
    __attribute__((constructor)) static void register_##name(void)                                  \
    {                                                                                               \
        runner_register(#name, test_##name, seconds);                                               \
    }                                                                                               \
    static void test_##name(void)

#define TEST(name) TEST_TIMEOUT(name, 60)

#define FAIL(...) runner_fail(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT(cond)                                                                                \
    do {                                                                                            \
        if (!(cond))                                                                                \
            FAIL("assertion failed: %s", #cond);                                                    \
    } while (0)

#define ASSERT_CMP_(a, op, b)                                                                       \
    do {                                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                                         \
        if (!(a_ op b_))                                                                            \
            FAIL("%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_);                                    \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, >=, b)

#define ASSERT_PTR_EQ(a, b)                                                                         \
    do {                                                                                            \
        const void *a_ = (const void *)(a), *b_ = (const void *)(b);                                \
        if (a_ != b_)                                                                               \
            FAIL("%s == %s: %p vs %p", #a, #b, a_, b_);                                             \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                         \
    do {                                                                                            \
        const char *a_ = (a), *b_ = (b);                                                            \
        if (strcmp(a_, b_) != 0)                                                                    \
            FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, a_, b_);                                     \
    } while (0)

#define ASSERT_CONTAINS(hay, needle)                                                                \
    do {                                                                                            \
        const char *h_ = (hay), *n_ = (needle);                                                     \
        if (!strstr(h_, n_))                                                                        \
            FAIL("%s does not contain \"%s\"; it is:\n%s", #hay, n_, h_);                           \
    } while (0)

#define ASSERT_NOT_CONTAINS(hay, needle)                                                            \
    do {                                                                                            \
        const char *h_ = (hay), *n_ = (needle);                                                     \
        if (strstr(h_, n_))                                                                         \
            FAIL("%s contains \"%s\"; it is:\n%s", #hay, n_, h_);                                   \
    } while (0)

/* A weft call that must succeed: shows the error's name when it does not. */
#define ASSERT_OK(expr)                                                                             \
    do {                                                                                            \
        long long r_ = (long long)(expr);                                                           \
        if (r_ < 0)                                                                                 \
            FAIL("%s failed: %lld (%s)", #expr, r_, runner_err_name((int)r_));                      \
    } while (0)

/* A weft call that must fail with exactly this error (e.g. -ESRCH). */
#define ASSERT_ERR(expr, err)                                                                       \
    do {                                                                                            \
        long long r_ = (long long)(expr);                                                           \
        if (r_ != (long long)(err))                                                                 \
            FAIL("%s: want %s, got %lld (%s)", #expr, runner_err_name((int)(err)), r_,              \
                 runner_err_name((int)r_));                                                         \
    } while (0)

const char *runner_err_name(int err);

#endif
