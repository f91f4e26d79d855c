/*
 * Fiber stacks: a fiber gets the stack it asked for, stacks are reused without leaking one fiber's data
 * into another's frames, and with guard installs a hundred thousand parked fibers fit under the default
 * vm.max_map_count. (The overflow report is in test/tools/test-tools.c.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "core/internal.h"
#include "runner.h"

static void *use_stack(void *arg)
{
    size_t n = (size_t)arg;
    volatile char *buf = __builtin_alloca(n);
    for (size_t i = 0; i < n; i += 512)
        buf[i] = (char)i;
    weft_yield();
    long sum = 0;
    for (size_t i = 0; i < n; i += 512)
        sum += buf[i] == (char)i;
    return (void *)sum;
}

TEST(a_fiber_can_use_nearly_all_of_its_stack)
{
    size_t sizes[] = {64 << 10, 256 << 10, 1 << 20, 8 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        weft_attr_t a = {.stack_size = sizes[i]};
        size_t use = sizes[i] - (24 << 10); /* leave room for the frames around it */
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, &a, use_stack, (void *)use));
        void *r;
        ASSERT_OK(weft_join(f, &r));
        ASSERT_EQ((long)r, (long)((use + 511) / 512));
    }
    ASSERT_OK(weft_shutdown());
}

TEST(default_stack_size_comes_from_the_config_and_the_environment)
{
    weft_config_t c = {.workers = 1, .stack_size = 2 << 20};
    ASSERT_OK(weft_start(&c));
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, use_stack, (void *)(size_t)((2 << 20) - (24 << 10))));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
    setenv("WEFT_STACK_SIZE", "1M", 1);
    ASSERT_OK(weft_start(NULL));
    ASSERT_OK(weft_spawn(&f, NULL, use_stack, (void *)(size_t)((1 << 20) - (24 << 10))));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

/* Each fiber fills its frame with its own pattern and checks it after yields: a stack handed to two
 * live fibers, or a cached stack handed out while in use, breaks the pattern. */
static void *pattern(void *arg)
{
    unsigned char mark = (unsigned char)(uintptr_t)arg;
    volatile unsigned char buf[4096];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = mark;
    for (int k = 0; k < 3; k++)
        weft_yield();
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != mark)
            return (void *)1;
    return NULL;
}

TEST(live_fibers_never_share_a_stack)
{
    weft_config_t c = {.workers = 2};
    ASSERT_OK(weft_start(&c));
    enum { N = 2000 };
    static weft_fiber_t f[N];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < N; i++)
            ASSERT_OK(weft_spawn(&f[i], NULL, pattern, (void *)(uintptr_t)(i * 7 + round)));
        for (int i = 0; i < N; i++) {
            void *r;
            ASSERT_OK(weft_join(f[i], &r));
            ASSERT_PTR_EQ(r, NULL);
        }
    }
    ASSERT_OK(weft_shutdown());
}

/* Not under sanitizers: ASan maps a fake stack per fiber, and TSan builds remap each reused stack,
 * so the count of mappings says nothing about weft's own layout there. */
#if !WEFT_ASAN && !WEFT_TSAN
static weft_wg_t parked_ready, parked_gate;

static void *park_here(void *arg)
{
    weft_wg_done(&parked_ready);
    weft_wg_wait(&parked_gate, WEFT_FOREVER);
    return arg;
}

static long count_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

TEST_TIMEOUT(many_parked_fibers_fit_under_the_default_max_map_count, 300)
{
    ASSERT_OK(weft_start(NULL));
    if (!weft__stack_guard_install_works()) {
        /* mprotect guards cost two mappings per stack: the limit is about 32,000 live fibers */
        printf("no MADV_GUARD_INSTALL on this kernel: mprotect guards, nothing to check\n");
        return;
    }
    long n = runner_scaled(100000);
    weft_wg_init(&parked_ready);
    weft_wg_init(&parked_gate);
    weft_wg_add(&parked_ready, n);
    weft_wg_add(&parked_gate, 1);
    long before = count_mappings();
    for (long i = 0; i < n; i++)
        ASSERT_OK(weft_go(park_here, NULL));
    ASSERT_OK(weft_wg_wait(&parked_ready, WEFT_FOREVER));
    long during = count_mappings();
    /* every fiber has started and holds its stack now; mappings grew by chunks, not by stacks */
    ASSERT_LT(during - before, n / 50 + 100);
    ASSERT_OK(weft_wg_done(&parked_gate));
    ASSERT_OK(weft_shutdown());
}
#endif
