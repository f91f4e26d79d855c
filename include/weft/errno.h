#ifndef WEFT_ERRNO_H
#define WEFT_ERRNO_H

#include <errno.h>

/*
 * Every weft call that can fail returns an int: >= 0 on success, a negative errno value on failure
 * (-EINVAL, -ETIMEDOUT, ...). errno itself is never used to report a weft error: it is per thread, and
 * code running in a fiber must not depend on which thread it runs on.
 *
 * WEFT_ERRNO_MAP lists the codes weft itself returns, each with the meaning it has in weft. weft_strerror()
 * gives these texts; codes not listed (passed through from the system) fall back to strerror's text.
 */
#define WEFT_ERRNO_MAP(XX)                                                                          \
    XX(EAGAIN, "resource temporarily unavailable")                                                 \
    XX(EALREADY, "the runtime is already running")                                                 \
    XX(EBUSY, "object is in use (a fiber still waits on it)")                                      \
    XX(ECANCELED, "operation canceled")                                                            \
    XX(EDEADLK, "would deadlock (a fiber joining itself, or shutdown called from a fiber)")        \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(ENOMEM, "out of memory")                                                                    \
    XX(ENOSPC, "no free key left")                                                                 \
    XX(EOVERFLOW, "value too large (a wait group counter past 2^62 - 1)")                          \
    XX(EPERM, "operation not permitted here")                                                      \
    XX(EPIPE, "broken pipe: the channel, or the peer, is closed")                                 \
    XX(ESHUTDOWN, "the runtime is shutting down")                                                  \
    XX(ESRCH, "no such fiber (already joined, detached and finished, or never valid)")             \
    XX(ETIMEDOUT, "deadline passed")

#endif /* WEFT_ERRNO_H */
