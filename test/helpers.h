/*
 * Small helpers the weft test programs share (the runner itself is runner.h).
 */
#ifndef WEFT_TEST_HELPERS_H
#define WEFT_TEST_HELPERS_H

#include <stdint.h>
#include <string.h>

#include <weft.h>

#include "runner.h"

#define MS ((int64_t)1000000)
#define SEC ((int64_t)1000000000)

/* How often needle occurs in text (overlapping ones too). */
static inline int count_occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Poll cond, yielding, for at most 20 s of wall time: a liveness bound, not a measurement. */
#define WAIT_UNTIL(cond)                                                                            \
    do {                                                                                            \
        int64_t until_ = weft_now() + 20 * SEC;                                                     \
        while (!(cond)) {                                                                           \
            if (weft_now() > until_)                                                                \
                FAIL("still waiting for %s", #cond);                                                \
            weft_yield();                                                                           \
        }                                                                                           \
    } while (0)

static inline void start_workers(int n)
{
    weft_config_t c = {.workers = n};
    ASSERT_OK(weft_start(&c));
}

static inline void *add_one(void *arg)
{
    return (void *)((intptr_t)arg + 1);
}

#endif
