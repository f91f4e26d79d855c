/* peer.h - the little every C and C++ peer program shares.
 *
 * A peer prints one line per measured figure on stdout:
 *     result <bench> <impl> <value> <unit>
 * and anything else for people, prefixed by '#'.  bench/run.sh reads only
 * the result lines.  Kept header-only and C/C++ neutral so each peer stays a
 * single file.
 */
#ifndef PEER_H
#define PEER_H

/* clock_gettime under a strict -std=c11; include this header first. */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline int64_t peer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The optional first argument is the repetition count; bench/run.sh shrinks
 * it for a quick run.  Anything that is not a positive number is an error:
 * a typo must not silently measure the default. */
static inline long peer_count(int argc, char **argv, long def)
{
    if (argc < 2)
        return def;
    char *end;
    long n = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || n <= 0) {
        fprintf(stderr, "usage: %s [count]  (count must be a positive integer)\n", argv[0]);
        exit(2);
    }
    return n;
}

static inline void peer_result(const char *bench, const char *impl, double value, const char *unit)
{
    printf("result %s %s %.2f %s\n", bench, impl, value, unit);
    fflush(stdout);
}

/* Sum of the /proc/self/status lines named in `keys` (a NULL-terminated
 * list such as {"VmRSS:", "VmPTE:", NULL}), in bytes; -1 if unreadable. */
static inline long long peer_status_bytes(const char *const *keys)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long long sum = 0;
    while (fgets(line, sizeof line, f)) {
        for (const char *const *k = keys; *k; k++) {
            size_t len = strlen(*k);
            if (strncmp(line, *k, len) == 0)
                sum += strtoll(line + len, NULL, 10) * 1024;  /* the kernel prints kB */
        }
    }
    fclose(f);
    return sum;
}

/* What a parked fiber costs the machine: resident pages plus the page
 * tables that map them. */
static inline long long peer_mem_bytes(void)
{
    static const char *const keys[] = {"VmRSS:", "VmPTE:", NULL};
    return peer_status_bytes(keys);
}

/* MemAvailable from /proc/meminfo in bytes, or -1. */
static inline long long peer_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    long long avail = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "MemAvailable:", 13) == 0)
            avail = strtoll(line + 13, NULL, 10) * 1024;
    fclose(f);
    return avail;
}

/* Keeps the compiler from deleting work whose result nobody reads. */
#define PEER_KEEP(x) __asm__ volatile("" : : "g"(x) : "memory")

#endif
