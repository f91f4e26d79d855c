/*
 * The I/O layer's shared insides: the descriptor every fd has (fd.c owns the table), the poller's state
 * (dispatch.c), and the calls between the four files of the layer. The design is the essay at the top of
 * fd.c.
 */
#ifndef WEFT_IO_FD_H
#define WEFT_IO_FD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/park.h"
#include "core/wait.h"

enum { PD_UNUSED = 0, PD_OPEN = 1, PD_CLOSED = 2 };

typedef struct weft__pd {
    weft__spinlock lock;
    _Atomic uint32_t state;   /* PD_*: written under the lock */
    _Atomic uint32_t gen;     /* bumped by close: events of an older generation are stale */
    uint32_t epoch;           /* the poller it is registered with (weft__io.epoch); under the lock */
    bool file;                /* cannot be polled: a regular file or the like; under the lock */
    bool sock;                /* a socket: writes use send(MSG_NOSIGNAL), never raising SIGPIPE */
    bool drains;              /* a stream socket or a pipe: a short read leaves nothing to read */
    _Atomic uint32_t seq[2];  /* edges seen, per direction (0 read, 1 write) */
    _Atomic uint32_t dry;     /* 1 + the read sequence at which a short read emptied it; 0: unknown */
    _Atomic bool ended;       /* the poller saw the peer close or an error: reads always try */
    _Atomic int pending;      /* an error that cut a write short, for the next call (a -errno, or 0) */
    weft__wlist waiters[2];   /* the one waiter's nodes (core/wait.h), per direction; under the lock */
    _Atomic int32_t refs;     /* operations in flight */
} weft__pd;

/* The poller's state (dispatch.c). */
typedef struct {
    _Atomic uint32_t epoch;  /* bumped at every runtime start: registrations with older pollers are void */
    _Atomic int running;     /* the poller exists */
    _Atomic int64_t waiting; /* fibers and threads parked on fds: the poller has work */
    _Atomic uint64_t polls;  /* looks at the poller so far (approximate: it only has to move) */
} weft__io_state;
extern weft__io_state weft__io;

/* The poller's key for fd's registration: an event of an older generation is a closed file's. */
static inline uint64_t weft__pd_key(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint32_t)fd;
}

/* fd.c: the table */
weft__pd *weft__pd_of(int fd);   /* made if need be; NULL only out of memory or out of range */
weft__pd *weft__pd_find(int fd); /* if it exists (for the poller: never allocates) */
bool weft__pd_valid(weft__pd *pd); /* the checker (WEFT_DEBUG 3), under pd's lock */
/* Begin an operation on fd: its descriptor, open and registered, with a reference held; or NULL and
 * *err. */
weft__pd *weft__op_begin(int fd, int *err);
static inline void weft__op_end(weft__pd *pd)
{
    atomic_fetch_sub_explicit(&pd->refs, 1, memory_order_release);
}

/* fd.c: waiting on a descriptor */
/* Park until the direction's sequence moves past seq, the fd is closed, or the deadline. 0: try again;
 * -EBADF: closed; -ETIMEDOUT; -ECANCELED. */
int weft__pd_park(weft__pd *pd, int dir, uint32_t seq, uint32_t gen, int64_t deadline);
/* Wake every waiter of one direction (an edge or a close); under pd's lock. Returns how many. */
int weft__pd_wake_dir(weft__pd *pd, int dir);

#endif /* WEFT_IO_FD_H */
