/*
 * Small OS facts and primitives the core needs: the monotonic clock, futexes, page size, sizes from
 * the environment, and the internal spinlock's slow path.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform/prim.h"
#include "weft.h"

int64_t weft__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* +1: the clock can read 0 just after boot, and 0 means "do not wait" as a deadline */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + 1;
}

int64_t weft_now(void)
{
    return weft__clock_ns();
}

int64_t weft_deadline_in(int64_t ns)
{
    if (ns < 0)
        return WEFT_FOREVER;
    int64_t now = weft__clock_ns();
    if (ns > INT64_MAX - now)
        return WEFT_FOREVER;
    return now + ns;
}

/* Sleep while *addr == expected, until woken or the absolute monotonic deadline (-1: none).
 * Returns 0 when woken or the value differed, -ETIMEDOUT, or -EINTR. */
int weft__futex_wait(_Atomic uint32_t *addr, uint32_t expected, int64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline >= 0) {
        int64_t d = deadline - 1; /* undo weft__clock_ns's +1 */
        if (d < 0)
            d = 0;
        ts.tv_sec = d / 1000000000;
        ts.tv_nsec = d % 1000000000;
        tp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tp,
                     NULL, FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return 0;
    /* weft__errno: a fiber whose worker the monitor moved to another thread waits here too, and TSan,
     * which sees each fiber as a thread of its own, would call its read of its thread's errno a race */
    int e = weft__errno();
    return e == EAGAIN ? 0 : -e;
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

size_t weft__page_size(void)
{
    static size_t page;
    if (!page) {
        long p = sysconf(_SC_PAGESIZE);
        page = p > 0 ? (size_t)p : 4096;
    }
    return page;
}

size_t weft__parse_size(const char *s)
{
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return 0;
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0' || v > SIZE_MAX / mul)
        return 0;
    return (size_t)(v * mul);
}

void weft__spin_lock_slow(weft__spinlock *l)
{
    for (unsigned round = 0;; weft__spin_backoff(&round))
        if (!atomic_load_explicit(&l->v, memory_order_relaxed) &&
            !atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
            return;
}
