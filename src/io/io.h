/*
 * The I/O layer's face down to the scheduler: src/core calls io through this header alone (it never
 * sees the poller contract, io/poll.h, nor the fd table, io/fd.h). It also holds the calls between
 * io's own files. The other way, io blocks and wakes through core/park.h and core/wait.h only.
 */
#ifndef WEFT_IO_IO_H
#define WEFT_IO_IO_H

#include <stdint.h>
#include <sys/socket.h>

/* Runtime start and shutdown: make and close the poller. */
int weft__io_start(void);
void weft__io_stop(void);
/* Poll for readiness until deadline (WEFT_NOWAIT: just look) and wake the fibers and threads waiting for
 * what is ready. Returns how many were woken. Any worker may call it, several at once. */
int weft__io_poll(int64_t deadline);
/* Fibers and threads parked on fds right now: someone should be polling. */
int64_t weft__io_waiting(void);
/* A count that moves whenever a worker looks at the poller (for the monitor). */
uint64_t weft__io_polls(void);
/* Make a weft__io_poll that is blocked, or the next one to block, return at once (the poller's
 * interruption, io/poll.h). Async-signal-safe. */
void weft__io_interrupt(void);

/* net.c: keep a spare fd for running out of them (runtime start) */
void weft__net_init(void);
/* net.c, for fd.c: every accept4 of weft's passes this gate, which a shed closes while it runs. */
void weft__accept_gate_enter(void);
void weft__accept_gate_leave(void);

/* fd.c, for net.c */
int weft__fd_adopt(int fd);
int weft__accept_once(int fd, struct sockaddr *addr, socklen_t *addrlen, int64_t deadline);
/* A connection accept4 returned, adopted by the fd layer (as weft__accept_once does); closed when that
 * fails. The connection, or a negative errno. */
int weft__accept_adopt(int c);

/* The blocking pool (blocking.c) */
void weft__blocking_configure(int max_threads);
/* Calls queued or running right now: their callers will be woken. */
int64_t weft__blocking_busy(void);
/* Pool threads waiting for a call right now. */
int64_t weft__blocking_idle(void);
/* Start a pool thread for queued calls that have none (after thread creation failed for lack of
 * resources); the monitor calls it now and then. */
void weft__blocking_kick(void);

#endif
