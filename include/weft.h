/*
 * weft: every execution model of concurrent and parallel computing, for C.
 *
 * This header is the whole public API. Conventions, once:
 *  - Calls that can fail return int: >= 0 success, a negative errno value on failure (see weft/errno.h).
 *    A call that fails starts nothing: if weft_spawn fails, the function never runs.
 *  - Blocking calls take an absolute deadline in monotonic nanoseconds (weft_now()): WEFT_FOREVER never
 *    times out, WEFT_NOWAIT does not wait at all. A deadline that passes returns -ETIMEDOUT.
 *  - Calls marked "may park" suspend the calling fiber (its worker runs other fibers meanwhile). Called
 *    from a thread that is not a fiber, they block that thread instead; they work from any thread.
 *  - _new/_free allocate; _init/_destroy work on memory the caller owns.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#include "weft/errno.h"
#include "weft/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with -fvisibility=hidden; only names marked WEFT_EXTERN are exported. */
#if defined(__GNUC__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Errors                                                                                           */

/* The text for a weft result code (a negative errno); never NULL. */
WEFT_EXTERN const char *weft_strerror(int err);
/* The symbolic name of a result code ("ETIMEDOUT"), or "UNKNOWN". */
WEFT_EXTERN const char *weft_err_name(int err);

/* ------------------------------------------------------------------------------------------------ */
/* Time                                                                                             */

#define WEFT_FOREVER ((int64_t)-1)
#define WEFT_NOWAIT ((int64_t)0)

/* Monotonic clock, nanoseconds. Never 0 or negative, so it is always a valid deadline. */
WEFT_EXTERN int64_t weft_now(void);
/* weft_now() + ns, saturating; ns < 0 gives WEFT_FOREVER. */
WEFT_EXTERN int64_t weft_deadline_in(int64_t ns);

/* ------------------------------------------------------------------------------------------------ */
/* Runtime                                                                                          */

typedef struct weft_config {
    /* Worker threads that run fibers. 0: WEFT_WORKERS if set, else the CPUs this process may use
     * (its affinity mask, capped by its cgroup CPU quota). 1 gives a classic N:1 coroutine runtime. */
    int workers;
    /* Default fiber stack size in bytes. 0: WEFT_STACK_SIZE if set, else 128 KiB. */
    size_t stack_size;
    /* How long an idle worker looks for work before it sleeps, in microseconds.
     * 0: WEFT_SPIN_US if set, else the built-in default; a negative value never spins. */
    int spin_us;
} weft_config_t;

/* Start the runtime. cfg may be NULL (all defaults). -EALREADY if it is running already.
 * weft_spawn and weft_go start it with defaults when it is not running, so calling this is optional. */
WEFT_EXTERN int weft_start(const weft_config_t *cfg);

/* Wait until every fiber has finished, then stop the workers and release the runtime's memory.
 * From a fiber: -EDEADLK. While it waits, spawns from outside the runtime fail with -ESHUTDOWN;
 * fibers may still spawn. Returns 0 (also when the runtime was not running). The runtime can be
 * started again afterwards. may park */
WEFT_EXTERN int weft_shutdown(void);

/* Start the runtime with cfg, run fn(arg) as a fiber named "main", wait for it and for every other
 * fiber, shut down. *result (may be NULL) gets fn's return value. -EALREADY if the runtime runs. */
WEFT_EXTERN int weft_run(const weft_config_t *cfg, void *(*fn)(void *), void *arg, void **result);

/* Number of workers of the running runtime, 0 when it is not running. */
WEFT_EXTERN int weft_workers(void);

/* ------------------------------------------------------------------------------------------------ */
/* Fibers and threads                                                                               */

typedef void *(*weft_fn)(void *arg);

/* A handle to a fiber or to a kernel thread started by weft_thread_spawn: both are joined, detached
 * and inspected with the same calls. A plain value, like pthread_t; the zero value names nothing.
 * A handle goes stale when its fiber is joined, or when a detached fiber finishes: calls on a stale
 * handle return -ESRCH (this is how joining twice is reported), never touch freed memory. */
typedef struct weft_fiber {
    uint64_t handle_;
} weft_fiber_t;

#define WEFT_FIBER_NONE ((weft_fiber_t){0})

enum weft_attr_flags {
    WEFT_DETACHED = 1u << 0, /* nobody joins it; its memory goes back when it finishes */
};

typedef struct weft_attr {
    const char *name;  /* copied (up to 31 bytes); NULL: unnamed, shown as "fiber <id>" */
    size_t stack_size; /* bytes; 0: the runtime's default. Rounded up to whole pages */
    unsigned flags;    /* enum weft_attr_flags */
} weft_attr_t;

/* The lifecycle from the texts: New -> Ready -> Running -> Waiting -> Done. */
typedef enum weft_state {
    WEFT_NEW = 0,     /* spawned, has not run yet (has no stack yet) */
    WEFT_READY = 1,   /* runnable, in a run queue */
    WEFT_RUNNING = 2, /* running on a worker (or: a kernel thread that has started) */
    WEFT_WAITING = 3, /* parked: waiting for a timer, a join, a wait group, ... */
    WEFT_DONE = 4,    /* finished; its result waits for weft_join */
} weft_state_t;

/* Spawn a fiber running fn(arg). *out (may be NULL for a detached fiber) gets its handle.
 * attr may be NULL. Spawning works from fibers, weft threads and any foreign thread. */
WEFT_EXTERN int weft_spawn(weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg);

/* Go's `go fn(arg)`: spawn a detached fiber with default attributes. */
WEFT_EXTERN int weft_go(weft_fn fn, void *arg);

/* Start fn(arg) on a kernel thread of its own (the 1:1 model). Same handle, same join and detach as a
 * fiber; attr->stack_size sets the thread's stack. The runtime need not be running. */
WEFT_EXTERN int weft_thread_spawn(weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg);

/* Wait for the fiber or thread to finish and collect its result (result may be NULL); the handle is then
 * stale. -ESRCH: stale handle (joined already). -EINVAL: detached, or another join is under way.
 * -EDEADLK: joining yourself. -ENOMEM: the fiber never ran, no stack could be allocated for it.
 * may park */
WEFT_EXTERN int weft_join(weft_fiber_t f, void **result);

/* weft_join with a deadline. -ETIMEDOUT leaves the handle joinable. may park */
WEFT_EXTERN int weft_join_until(weft_fiber_t f, void **result, int64_t deadline);

/* Nobody will join f: its memory goes back when it finishes. -ESRCH stale, -EINVAL already detached. */
WEFT_EXTERN int weft_detach(weft_fiber_t f);

/* The lifecycle state of f (a weft_state_t, >= 0), or -ESRCH for a stale handle. */
WEFT_EXTERN int weft_fiber_state(weft_fiber_t f);

/* The id of f (unique in the process, starting at 1), or 0 for a stale handle. */
WEFT_EXTERN uint64_t weft_fiber_id(weft_fiber_t f);

/* Copy f's name into buf (always NUL-terminated). Returns its length, or -ESRCH. An unnamed fiber has
 * the empty name. */
WEFT_EXTERN int weft_fiber_name(weft_fiber_t f, char *buf, size_t len);

/* The calling fiber or weft thread; WEFT_FIBER_NONE on any other thread. */
WEFT_EXTERN weft_fiber_t weft_self(void);

/* Id of the calling fiber or weft thread, 0 on any other thread. */
WEFT_EXTERN uint64_t weft_self_id(void);

/* Name of the calling fiber or weft thread ("" when unnamed or not one). Valid while the caller runs. */
WEFT_EXTERN const char *weft_self_name(void);

/* Rename the calling fiber or weft thread (copied, up to 31 bytes). -EPERM on other threads. */
WEFT_EXTERN int weft_set_name(const char *name);

/* 1 when called from a fiber, 0 otherwise. */
WEFT_EXTERN int weft_in_fiber(void);

/* Let other ready fibers on this worker run; returns when this fiber is scheduled again.
 * On a thread that is not a fiber: sched_yield(). may park */
WEFT_EXTERN int weft_yield(void);

/* Sleep until the deadline (never wakes early). Returns 0. may park */
WEFT_EXTERN int weft_sleep_until(int64_t deadline);

/* Sleep for ns nanoseconds: weft_sleep_until(weft_deadline_in(ns)). may park */
WEFT_EXTERN int weft_sleep(int64_t ns);

/* ------------------------------------------------------------------------------------------------ */
/* Fiber-local storage: like pthread keys, one value per fiber (or weft thread, or foreign thread).  */

typedef unsigned weft_key_t;

#define WEFT_KEYS_MAX 128

/* Create a key; destructor (may be NULL) runs on each non-NULL value when its fiber finishes.
 * -ENOSPC when WEFT_KEYS_MAX keys exist. */
WEFT_EXTERN int weft_key_create(weft_key_t *key, void (*destructor)(void *));
/* Delete a key; values still set are not destroyed. -EINVAL for an unknown key. */
WEFT_EXTERN int weft_key_delete(weft_key_t key);
/* Set this fiber's value for key. -EINVAL for an unknown key, -ENOMEM. */
WEFT_EXTERN int weft_local_set(weft_key_t key, void *value);
/* This fiber's value for key; NULL when unset or the key is unknown. */
WEFT_EXTERN void *weft_local_get(weft_key_t key);

/* ------------------------------------------------------------------------------------------------ */
/* Wait group (Go's sync.WaitGroup)                                                                 */

typedef struct weft_wg {
    _Alignas(8) unsigned char opaque_[32];
} weft_wg_t;

/* A wait group needs no other initialisation than this (or weft_wg_init). */
#define WEFT_WG_INIT {{0}}

WEFT_EXTERN int weft_wg_init(weft_wg_t *wg);
/* Add delta (may be negative) to the counter. When it reaches 0 every waiter wakes.
 * A counter that would go below zero is a bug: -EINVAL, and the counter is left unchanged; one that
 * would pass 2^62 - 1: -EOVERFLOW, likewise. */
WEFT_EXTERN int weft_wg_add(weft_wg_t *wg, int64_t delta);
/* weft_wg_add(wg, -1). */
WEFT_EXTERN int weft_wg_done(weft_wg_t *wg);
/* Wait until the counter is 0. 0, or -ETIMEDOUT. Once it returns, no weft_wg_add or weft_wg_done
 * still touches the group: it may be freed (a group on the waiter's stack is the common case). may park */
WEFT_EXTERN int weft_wg_wait(weft_wg_t *wg, int64_t deadline);
/* -EBUSY while a fiber waits on it. */
WEFT_EXTERN int weft_wg_destroy(weft_wg_t *wg);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
