/*
 * Small helpers the weft test programs share (the runner itself is runner.h).
 */
#ifndef WEFT_TEST_HELPERS_H
#define WEFT_TEST_HELPERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/*
 * Under qemu-user the emulator runs a thread of its own in the process, which the deadlock check must
 * take for a thread that could still wake a fiber: no report is right there, so the tests of the report
 * cannot see one and skip. qemu shows itself by the zero it puts for the thread count in /proc/self/stat.
 */
static inline int under_emulator(void)
{
    char b[2048];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return 0;
    size_t n = fread(b, 1, sizeof b - 1, f);
    fclose(f);
    b[n] = '\0';
    char *p = strrchr(b, ')');
    int field = 2;
    for (char *t = p ? strtok(p + 2, " ") : NULL; t; t = strtok(NULL, " "))
        if (++field == 20)
            return atol(t) == 0;
    return 0;
}

#define SKIP_UNDER_EMULATOR()                                                                       \
    do {                                                                                            \
        if (under_emulator()) {                                                                     \
            printf("skipped: under an emulator whose own thread keeps the deadlock check away\n");  \
            return;                                                                                 \
        }                                                                                           \
    } while (0)

#endif
