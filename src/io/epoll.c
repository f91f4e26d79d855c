/*
 * The epoll backend of the poller contract (poll.h).
 *
 * One epoll instance, plus an eventfd registered level-triggered under a reserved key: writing it makes
 * a blocked epoll_wait return (weft__poll_interrupt). Only a blocking wait drains it: the interruption is
 * for the worker asleep in the poller, and a worker that only looks (WEFT_NOWAIT) at that moment must not
 * take it away (it did, and the sleeper slept on). Several interruptions collapse into one wakeup, which is
 * all a sleeping worker needs.
 *
 * Deadlines use epoll_pwait2 (nanoseconds, Linux 5.11) when the kernel has it, else epoll_wait with the
 * timeout rounded up to the next millisecond, so that a timer never fires early.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/park.h"
#include "io/poll.h"

#ifndef SYS_epoll_pwait2
#if defined(__x86_64__) || defined(__aarch64__)
#define SYS_epoll_pwait2 441
#endif
#endif

#define KEY_INTERRUPT UINT64_MAX

static int epfd = -1, evfd = -1;
static _Atomic int have_pwait2 = 1; /* cleared the first time the kernel says ENOSYS */

int weft__poll_open(void)
{
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -weft__errno();
    evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (evfd < 0) {
        int e = -weft__errno();
        close(epfd);
        epfd = -1;
        return e;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = KEY_INTERRUPT};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) < 0) {
        int e = -weft__errno();
        weft__poll_close();
        return e;
    }
    return 0;
}

void weft__poll_close(void)
{
    if (evfd >= 0)
        close(evfd);
    if (epfd >= 0)
        close(epfd);
    evfd = epfd = -1;
}

int weft__poll_add(int fd, uint64_t key)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = key};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    return -weft__errno();
}

void weft__poll_del(int fd)
{
    struct epoll_event ev = {0};
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev);
}

static int wait_once(struct epoll_event *evs, int max, int64_t deadline)
{
    if (deadline == WEFT_NOWAIT)
        return epoll_wait(epfd, evs, max, 0);
    if (deadline == WEFT_FOREVER)
        return epoll_wait(epfd, evs, max, -1);
    int64_t left = deadline - weft__clock_ns();
    if (left <= 0)
        return epoll_wait(epfd, evs, max, 0);
#ifdef SYS_epoll_pwait2
    if (atomic_load_explicit(&have_pwait2, memory_order_relaxed)) {
        struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
        long r = syscall(SYS_epoll_pwait2, epfd, evs, max, &ts, NULL, 0);
        if (r >= 0 || weft__errno() != ENOSYS)
            return (int)r;
        atomic_store_explicit(&have_pwait2, 0, memory_order_relaxed);
    }
#endif
    int64_t ms = (left + 999999) / 1000000; /* up, never down: a timer must not fire early */
    return epoll_wait(epfd, evs, max, ms > 1000000000 ? 1000000000 : (int)ms);
}

int weft__poll_wait(weft__poll_event *out, int max, int64_t deadline)
{
    struct epoll_event evs[128];
    if (max > 128)
        max = 128;
    int n = wait_once(evs, max, deadline);
    if (n < 0)
        return 0; /* EINTR: a signal; the caller looks at its queues and comes back */
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == KEY_INTERRUPT) {
            if (deadline != WEFT_NOWAIT) {
                uint64_t v;
                ssize_t r = read(evfd, &v, sizeof v);
                (void)r;
            }
            continue;
        }
        uint32_t e = evs[i].events, w = 0;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
            w |= WEFT__POLL_IN;
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            w |= WEFT__POLL_OUT;
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            w |= WEFT__POLL_END;
        out[k].key = evs[i].data.u64;
        out[k].events = w;
        k++;
    }
    return k;
}

void weft__poll_interrupt(void)
{
    uint64_t one = 1;
    ssize_t r = write(evfd, &one, sizeof one); /* EAGAIN only when the counter is full: it is pending */
    (void)r;
}
