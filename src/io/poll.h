/*
 * The poller contract: what every I/O readiness backend must define. epoll.c is the backend today; another
 * (io_uring, kqueue) would be a file of its own defining the same functions, and CMake picks one.
 *
 * The runtime has one poller. Descriptors are registered once, edge-triggered, for reading and writing
 * at the same time (Go's netpoll does the same): a fiber that finds an fd not ready parks, and the
 * poller's next edge for that fd wakes it. Nothing is re-armed per wait, so a wait costs no system call
 * beyond the read or write that found the fd not ready.
 *
 * Who calls what:
 *   weft__poll_open / weft__poll_close      runtime start and shutdown (under the runtime's lock)
 *   weft__poll_add / weft__poll_del         the fd layer (fd.c), when an fd is first used and when closed
 *   weft__poll_wait                         a worker (or the monitor) in the scheduler; several may call it
 *                                           at once, the kernel hands each event to one of them
 *   weft__poll_interrupt                    anyone, to make a worker blocked in weft__poll_wait return
 */
#ifndef WEFT_IO_POLL_H
#define WEFT_IO_POLL_H

#include <stdint.h>

enum {
    WEFT__POLL_IN = 1u << 0,  /* readable, or the peer closed its side, or an error: readers retry */
    WEFT__POLL_OUT = 1u << 1, /* writable, or an error: writers retry */
    WEFT__POLL_END = 1u << 2, /* with POLL_IN: the peer closed its side, or an error; no edge may follow */
};

typedef struct weft__poll_event {
    uint64_t key;    /* what weft__poll_add was given */
    uint32_t events; /* WEFT__POLL_* */
} weft__poll_event;

/* Create the poller. 0 or a negative errno. */
int weft__poll_open(void);
/* Close it; registrations vanish with it. */
void weft__poll_close(void);
/* Watch fd, edge-triggered, for both directions; events come back with key. -EPERM when the fd cannot be
 * polled (a regular file or a directory: always ready, use the blocking pool), -EEXIST when the same open
 * file is registered already, other negative errnos from the system. */
int weft__poll_add(int fd, uint64_t key);
/* Stop watching fd (before closing it). */
void weft__poll_del(int fd);
/* Wait for events until deadline (WEFT_NOWAIT: just look; WEFT_FOREVER; or absolute monotonic ns) and
 * write at most max of them. Returns how many (0 on timeout, on an interruption and on a signal); never
 * fails with -EINTR. A deadline is never cut short by rounding: it may end up to a millisecond late on
 * kernels without epoll_pwait2, never early. */
int weft__poll_wait(weft__poll_event *out, int max, int64_t deadline);
/* Make a weft__poll_wait that is blocked, or the next one to block, return at once. Only a blocking wait
 * (deadline other than WEFT_NOWAIT) consumes the interruption. Async-signal-safe. */
void weft__poll_interrupt(void);

#endif
