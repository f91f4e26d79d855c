/*
 * weft: every execution model of concurrent and parallel computing, for C.
 *
 * This header is the whole public API. Conventions, once:
 *  - Calls that can fail return int: >= 0 success, a negative errno value on failure (see weft/errno.h).
 *    A call that fails starts nothing: if weft_spawn fails, the function never runs.
 *  - Blocking calls take an absolute deadline in monotonic nanoseconds (weft_now()): WEFT_FOREVER never
 *    times out, WEFT_NOWAIT does not wait at all. A deadline that passes returns -ETIMEDOUT.
 *  - A wait may return -ENOMEM: a fiber's wait with a deadline when there is no memory for its timer,
 *    and a thread outside weft on its first wait when there is none for the record it waits with. It
 *    then did nothing, as with -ETIMEDOUT (what a waker had already given it, it keeps, and returns 0).
 *  - Calls marked "may park" suspend the calling fiber (its worker runs other fibers meanwhile). Called
 *    from a thread that is not a fiber, they block that thread instead; they work from any thread.
 *  - _new/_free allocate; _init/_destroy work on memory the caller owns.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct iovec;
struct addrinfo;

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
    /* Most kernel threads the blocking-call pool may run at once (weft_blocking).
     * 0: WEFT_BLOCKING_THREADS if set, else 256. Past it, or past the system's thread limit, calls queue. */
    int blocking_threads;
    /* How long a fiber may run without yielding before the monitor calls it stuck, in microseconds: it
     * warns (rate-limited), and gives the fiber's worker, with its other fibers, to a fresh thread.
     * 0: WEFT_STUCK_US if set, else 10000 (10 ms); a negative value never hands off or warns. */
    int stuck_us;
} weft_config_t;

/* Start the runtime. cfg may be NULL (all defaults). -EALREADY if it is running already.
 * -EAGAIN if the system will not make a thread for every worker and for the monitor (its thread
 * limit): then nothing stays started (no thread, no fd), and a later call may succeed. -ENOMEM, likewise,
 * when there is no memory for the runtime's own records (its workers, their signal stacks). The runtime
 * never starts with fewer workers than it was asked for.
 * weft_spawn and weft_go start it with defaults when it is not running, so calling this is optional. */
WEFT_EXTERN int weft_start(const weft_config_t *cfg);

/* Wait until every fiber has finished, then stop the workers and release the runtime's memory.
 * From a fiber: -EDEADLK. While it waits, spawns from outside the runtime fail with -ESHUTDOWN;
 * fibers may still spawn. Returns 0 (also when the runtime was not running), or -EDEADLK when a
 * deadlock was reported while it ran (docs/runtime.md); it has stopped either way. The runtime can be
 * started again afterwards. may park */
WEFT_EXTERN int weft_shutdown(void);

/* Start the runtime with cfg, run fn(arg) as a fiber named "main", wait for it and for every other
 * fiber, shut down. *result (may be NULL) gets fn's return value. -EALREADY if the runtime runs;
 * -EDEADLK when a deadlock was reported (weft_shutdown). It fails as weft_start does, and with -ENOMEM
 * when there was no memory for the fiber, its stack or the calling thread's descriptor: fn never ran. */
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
 * attr may be NULL. Spawning works from fibers, weft threads and any foreign thread, and needs no new
 * kernel thread. When it has to start the runtime, it fails as weft_start does (-EAGAIN). */
WEFT_EXTERN int weft_spawn(weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg);

/* Go's `go fn(arg)`: spawn a detached fiber with default attributes. */
WEFT_EXTERN int weft_go(weft_fn fn, void *arg);

/* Start fn(arg) on a kernel thread of its own (the 1:1 model). Same handle, same join and detach as a
 * fiber; attr->stack_size sets the thread's stack. The runtime need not be running.
 * -EAGAIN: the system will not make another thread (its thread limit, or memory for the stack); fn
 * does not run, *out is untouched, and nothing is kept: try again once threads free up. -ENOMEM, likewise:
 * no memory for its descriptor or for the signal stack on which an overflow of its stack is reported. */
WEFT_EXTERN int weft_thread_spawn(weft_fiber_t *out, const weft_attr_t *attr, weft_fn fn, void *arg);

/* Wait for the fiber or thread to finish and collect its result (result may be NULL); the handle is then
 * stale. -ESRCH: stale handle (joined already). -EINVAL: detached, or another join is under way.
 * -EDEADLK: joining yourself. -ENOMEM: the fiber never ran, no stack could be allocated for it (the
 * handle is then stale); or the wait itself got no memory (see the top: the handle stays joinable, and
 * weft_fiber_state tells the two apart). -ECANCELED: the caller was cancelled (the handle stays
 * joinable). may park */
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

/* 1 when called from a fiber, also one that a stuck-worker hand-off left on a thread of its own (its
 * id, name and locals stay too: docs/runtime.md), 0 otherwise. */
WEFT_EXTERN int weft_in_fiber(void);

/* Let other ready fibers on this worker run; returns when this fiber is scheduled again.
 * On a thread that is not a fiber: sched_yield(). may park */
WEFT_EXTERN int weft_yield(void);

/* Sleep until the deadline (never wakes early). 0, or -ECANCELED when a fiber or weft thread is
 * cancelled, or -ENOMEM when a fiber gets no memory for its timer (at once, without sleeping). may park */
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

/* ------------------------------------------------------------------------------------------------ */
/* Cancellation                                                                                      */

/* Cancel a fiber or weft thread: the wait it is in now, and every wait it starts afterwards, returns
 * -ECANCELED at once (sleep, join, every lock, channel, fd and blocking call). The request stays until
 * the fiber finishes, so a fiber unwinds through its waits quickly; code that runs without waiting can
 * look at weft_cancelled(). A wait that won its wakeup before the cancel keeps what it won: no permit,
 * count, lock or channel value is ever lost to a cancel. 0, or -ESRCH for a handle that names no live
 * fiber. Callable from any thread. */
WEFT_EXTERN int weft_cancel(weft_fiber_t f);
/* 1 when the calling fiber (or weft thread) has been cancelled, else 0. */
WEFT_EXTERN int weft_cancelled(void);

/* ------------------------------------------------------------------------------------------------ */
/* Locks and synchronizers                                                                           */
/*
 * Every one parks the fiber, not its worker, and works the same from a plain thread outside the
 * runtime (which then blocks that thread). Every wait takes a deadline and returns -ETIMEDOUT when it
 * passes or -ECANCELED when the waiter is cancelled, and may return -ENOMEM (see the top of this file):
 * like a timeout, it took nothing (a cond wait holds its mutex again). Objects live in caller memory:
 * *_init before use (or the zero initialiser where one is given), *_destroy returns -EBUSY while the
 * object is held or waited on. None may be copied or moved while in use.
 */

/* Mutex. Uncontended lock and unlock are one atomic operation each. Fair under load: a waiter that has
 * waited longer than about a millisecond is handed the lock directly by the next unlock (Go's
 * starvation mode), so a fiber that locks in a tight loop cannot keep others out. Not recursive; any
 * fiber may unlock it (as in Go). */
typedef struct weft_mutex {
    _Alignas(8) unsigned char opaque_[32];
} weft_mutex_t;
#define WEFT_MUTEX_INIT {{0}}
WEFT_EXTERN int weft_mutex_init(weft_mutex_t *m);
/* 0, -ETIMEDOUT, -ECANCELED. may park */
WEFT_EXTERN int weft_mutex_lock(weft_mutex_t *m, int64_t deadline);
/* 0, or -EBUSY when it is held. */
WEFT_EXTERN int weft_mutex_trylock(weft_mutex_t *m);
/* 0, or -EPERM when it is not locked. */
WEFT_EXTERN int weft_mutex_unlock(weft_mutex_t *m);
WEFT_EXTERN int weft_mutex_destroy(weft_mutex_t *m);

/* Reader-writer lock. Many readers or one writer; a waiting writer keeps new readers out, and waiters
 * are granted in arrival order (a run of readers together), so neither side starves. */
typedef struct weft_rwlock {
    _Alignas(8) unsigned char opaque_[32];
} weft_rwlock_t;
#define WEFT_RWLOCK_INIT {{0}}
WEFT_EXTERN int weft_rwlock_init(weft_rwlock_t *l);
/* 0, -ETIMEDOUT, -ECANCELED; -EAGAIN past 2^30 readers. may park */
WEFT_EXTERN int weft_rwlock_rdlock(weft_rwlock_t *l, int64_t deadline);
/* 0, -ETIMEDOUT, -ECANCELED. may park */
WEFT_EXTERN int weft_rwlock_wrlock(weft_rwlock_t *l, int64_t deadline);
/* Releases the read or the write hold the caller has. 0, or -EPERM when it is not held. */
WEFT_EXTERN int weft_rwlock_unlock(weft_rwlock_t *l);
WEFT_EXTERN int weft_rwlock_destroy(weft_rwlock_t *l);

/* Condition variable, used with a weft_mutex_t. No lost wakeups: a signal sent after a waiter released
 * the mutex in weft_cond_wait always finds it. No spurious wakeups either, but re-check the condition
 * in a loop all the same: another fiber may take the mutex first. */
typedef struct weft_cond {
    _Alignas(8) unsigned char opaque_[32];
} weft_cond_t;
#define WEFT_COND_INIT {{0}}
WEFT_EXTERN int weft_cond_init(weft_cond_t *c);
/* Release m, wait for a signal, take m again (always, even on -ETIMEDOUT or -ECANCELED, and without a
 * deadline, as pthread_cond_timedwait does). 0, -ETIMEDOUT, -ECANCELED. may park */
WEFT_EXTERN int weft_cond_wait(weft_cond_t *c, weft_mutex_t *m, int64_t deadline);
/* Wake one waiter (the longest waiting), or all. 0. */
WEFT_EXTERN int weft_cond_signal(weft_cond_t *c);
WEFT_EXTERN int weft_cond_broadcast(weft_cond_t *c);
WEFT_EXTERN int weft_cond_destroy(weft_cond_t *c);

/* Counting semaphore. Permits go to waiters in arrival order; a release never wakes a waiter that then
 * finds nothing. */
typedef struct weft_sem {
    _Alignas(8) unsigned char opaque_[32];
} weft_sem_t;
/* count: the permits it starts with, 0 to 2^62 - 1. */
WEFT_EXTERN int weft_sem_init(weft_sem_t *s, int64_t count);
/* Take one permit. 0, -ETIMEDOUT (also for WEFT_NOWAIT with none free), -ECANCELED. may park */
WEFT_EXTERN int weft_sem_acquire(weft_sem_t *s, int64_t deadline);
/* Add n permits (n >= 1). 0, -EINVAL, or -EOVERFLOW past 2^62 - 1. */
WEFT_EXTERN int weft_sem_release(weft_sem_t *s, int64_t n);
/* The permits free right now (a snapshot). */
WEFT_EXTERN int64_t weft_sem_value(weft_sem_t *s);
WEFT_EXTERN int weft_sem_destroy(weft_sem_t *s);

/* Once: run an initialiser exactly once, however many fibers and threads ask at the same time; the
 * others wait until it has returned. */
typedef struct weft_once {
    _Alignas(8) unsigned char opaque_[32];
} weft_once_t;
#define WEFT_ONCE_INIT {{0}}
/* 0 once fn has run (here or elsewhere). -ECANCELED when the caller is cancelled while it waits for
 * another's fn (fn itself is never cancelled: it runs to its end). may park */
WEFT_EXTERN int weft_once(weft_once_t *o, void (*fn)(void *arg), void *arg);

/* Barrier: parties fibers wait until all have arrived, then all go on; it is ready again at once for
 * the next round. */
typedef struct weft_barrier {
    _Alignas(8) unsigned char opaque_[48];
} weft_barrier_t;
#define WEFT_BARRIER_SERIAL 1
/* parties >= 1. */
WEFT_EXTERN int weft_barrier_init(weft_barrier_t *b, int parties);
/* WEFT_BARRIER_SERIAL for exactly one caller of each round (the last to arrive), 0 for the others.
 * A waiter that times out or is cancelled withdraws its arrival (-ETIMEDOUT, -ECANCELED); once its
 * round is complete, it returns as the others do. may park */
WEFT_EXTERN int weft_barrier_wait(weft_barrier_t *b, int64_t deadline);
WEFT_EXTERN int weft_barrier_destroy(weft_barrier_t *b);

/* Latch (C++ std::latch): a count that only goes down; waiters go on once it reaches zero, and from
 * then on every wait returns at once. */
typedef struct weft_latch {
    _Alignas(8) unsigned char opaque_[32];
} weft_latch_t;
/* count >= 0. */
WEFT_EXTERN int weft_latch_init(weft_latch_t *l, int64_t count);
/* Take n (>= 1) from the count. -EINVAL when that would go below zero (the count is left as it was). */
WEFT_EXTERN int weft_latch_count_down(weft_latch_t *l, int64_t n);
/* Wait for zero. 0, -ETIMEDOUT, -ECANCELED. may park */
WEFT_EXTERN int weft_latch_wait(weft_latch_t *l, int64_t deadline);
/* 1 when the count is zero, else 0. */
WEFT_EXTERN int weft_latch_done(weft_latch_t *l);
WEFT_EXTERN int weft_latch_destroy(weft_latch_t *l);

/* ------------------------------------------------------------------------------------------------ */
/* Channels and select (Go's chan)                                                                   */
/*
 * A channel carries elements of one fixed size, copied in and out. Unbuffered (capacity 0): a send
 * waits for a receiver and hands the element over directly. Buffered: a send waits only while the
 * buffer is full. Close has Go's meaning: receivers first drain what is buffered, then every receive
 * returns -EPIPE at once; a send on a closed channel returns -EPIPE (an error, not a crash), and so
 * does a second close. Senders waiting when the channel closes wake with -EPIPE; their elements were
 * never sent. Every element sent is received exactly once: a call that fails (a deadline, a cancel) did
 * nothing, and one whose operation had already happened when its wait ended returns success.
 * -EINVAL: no channel (or no element to send). -ENOMEM: a wait got no memory (see the top of this
 * file), and did nothing.
 */
typedef struct weft_chan weft_chan_t;
/* elem_size >= 1; capacity 0 for unbuffered. 0, -EINVAL (elem_size 0, elem_size * capacity too big),
 * -ENOMEM. */
WEFT_EXTERN int weft_chan_new(weft_chan_t **out, size_t elem_size, size_t capacity);
/* -EBUSY while a fiber or thread waits on it, in a select too (nothing is freed then). NULL: 0. */
WEFT_EXTERN int weft_chan_free(weft_chan_t *c);
/* Copy elem_size bytes from elem into the channel. 0, -EPIPE (closed), -ETIMEDOUT, -ECANCELED.
 * may park */
WEFT_EXTERN int weft_chan_send(weft_chan_t *c, const void *elem, int64_t deadline);
/* Receive into elem (NULL: drop it). 0, -EPIPE (closed and drained), -ETIMEDOUT, -ECANCELED. may park */
WEFT_EXTERN int weft_chan_recv(weft_chan_t *c, void *elem, int64_t deadline);
/* 0, or -EPIPE when it was already closed. */
WEFT_EXTERN int weft_chan_close(weft_chan_t *c);
/* Elements buffered now (a snapshot), and the capacity. */
WEFT_EXTERN size_t weft_chan_len(weft_chan_t *c);
WEFT_EXTERN size_t weft_chan_cap(weft_chan_t *c);

enum weft_case_op {
    WEFT_SEND = 1,  /* chan: send *elem */
    WEFT_RECV = 2,  /* chan: receive into elem (NULL: drop it) */
    WEFT_FD_READ = 3,  /* weft_select_any, fd: readable (result: the ready events, as weft_fd_wait's) */
    WEFT_FD_WRITE = 4, /* weft_select_any, fd: writable (likewise) */
    WEFT_JOIN = 5,  /* weft_select_any, fiber: it finished, and was joined: its result goes to *(void **)elem
                     * (elem may be NULL) and the handle is stale, as after weft_join */
    WEFT_WG = 6,    /* weft_select_any, obj a weft_wg_t: the counter is zero (nothing is taken) */
    WEFT_LATCH = 7, /* weft_select_any, obj a weft_latch_t: it is open */
    WEFT_SEM = 8,   /* weft_select_any, obj a weft_sem_t: a permit, taken */
    WEFT_LOCK = 9,  /* weft_select_any, obj a weft_mutex_t: the mutex, locked by the caller */
};
typedef struct weft_case {
    weft_chan_t *chan; /* NULL: never ready (Go's nil channel) */
    int op;            /* WEFT_SEND or WEFT_RECV */
    void *elem;        /* send: the element to send; receive: where to put it (NULL: drop it) */
    int result;        /* out, for the chosen case: 0, or -EPIPE (the channel is closed) */
} weft_case_t;
/* Wait until one case can go on, do it, and return its index; when several are ready, one is chosen
 * at random (fair). Only the chosen case happens. deadline WEFT_NOWAIT is Go's default clause: none
 * ready gives -ETIMEDOUT at once. -ETIMEDOUT, -ECANCELED, -EINVAL (bad case or n < 0), -ENOMEM. A
 * receive from a closed channel and a send to one are ready: the case's result says -EPIPE. No case
 * with a channel (n == 0, or all NULL): waits for the deadline alone. may park */
WEFT_EXTERN int weft_select(weft_case_t *cases, int n, int64_t deadline);

/* A case of weft_select_any: a channel operation or any other wait. A case whose object is missing
 * (chan or obj NULL) is never ready. */
typedef struct weft_wait_case {
    int op;             /* enum weft_case_op */
    weft_chan_t *chan;  /* WEFT_SEND, WEFT_RECV */
    void *elem;         /* send: the element; receive: where it goes (NULL: drop it); join: a void ** */
    void *obj;          /* WEFT_WG, WEFT_LATCH, WEFT_SEM, WEFT_LOCK: the object */
    int fd;             /* WEFT_FD_READ, WEFT_FD_WRITE; < 0: never ready (as poll(2)) */
    weft_fiber_t fiber; /* WEFT_JOIN; WEFT_FIBER_NONE: never ready */
    int result;         /* out, for the chosen case: 0; -EPIPE (a closed channel); an fd's ready events
                         * (> 0) or -EBADF (weft_close'd while waited on, or not open); a join's -ENOMEM
                         * (the fiber never ran, as weft_join says) */
} weft_wait_case_t;

/* weft_select over any mix of cases, with the same rules: fair among ready cases, exactly one
 * happens (a case not chosen takes no element, permit or lock, and joins nothing), a deadline,
 * WEFT_NOWAIT, -ECANCELED. A join case on a handle weft_join would refuse fails the whole call with
 * weft_join's error, before anything happens: -ESRCH (stale), -EINVAL (detached, or another join or
 * join case is under way on it), -EDEADLK (the caller itself). -EINVAL for an unknown op. fd cases need
 * the runtime running (-ESHUTDOWN); each costs one poll(2) with a zero timeout. docs/chan.md. may park */
WEFT_EXTERN int weft_select_any(weft_wait_case_t *cases, int n, int64_t deadline);

/* ------------------------------------------------------------------------------------------------ */
/* Parallel loops                                                                                    */
/*
 * For CPU-bound work over an index range [begin, end): the range is split in halves down to at most
 * grain indices (0: chosen from the range and the worker count), the halves become fibers that idle
 * workers steal, and the call returns when every index has been done. body gets whole sub-ranges, so
 * its inner loop stays a plain loop. They nest (a body may call them again), and they may be called
 * from a fiber, a weft thread or a plain thread (the runtime must be running). The split does not
 * depend on which worker runs what, so a reduce joins its partial results in the same order on every
 * run with the same range, grain and worker count (with a grain given, whatever the worker count).
 * An empty range calls nothing.
 */
typedef void (*weft_for_body)(int64_t lo, int64_t hi, void *arg);
/* 0, -EINVAL (end < begin, grain < 0, no body), -ESHUTDOWN (no runtime; or, from outside it, one that
 * is shutting down). Never -ENOMEM: a half that gets no fiber runs in the fiber that split it. may park */
WEFT_EXTERN int weft_parallel_for(int64_t begin, int64_t end, int64_t grain, weft_for_body body, void *arg);

/* acc points at acc_size bytes. Each sub-range starts from a copy of identity, body folds its indices
 * into it, and join(into, from, arg) folds the result of a sub-range (from) into that of the sub-range
 * just left of it (into); the whole result is joined into *acc last (so *acc's value on entry counts
 * once). Partial results are aligned for max_align_t. */
typedef void (*weft_reduce_body)(int64_t lo, int64_t hi, void *acc, void *arg);
typedef void (*weft_reduce_join)(void *into, const void *from, void *arg);
/* 0, -EINVAL, -ESHUTDOWN, -ENOMEM (no room for partial results: acc untouched, though body may have
 * run on some sub-ranges). may park */
WEFT_EXTERN int weft_parallel_reduce(int64_t begin, int64_t end, int64_t grain, void *acc, size_t acc_size,
                                     const void *identity, weft_reduce_body body, weft_reduce_join join,
                                     void *arg);

/* ------------------------------------------------------------------------------------------------ */
/* Counters                                                                                          */

/* An atomic counter alone on its cache line (so two counters never falsely share one). Its operations
 * are relaxed: no add is lost, but a counter orders no other memory (publish data with a lock, a
 * channel or a wait group). */
typedef struct weft_counter {
    _Alignas(64) int64_t value_;
    char pad_[64 - sizeof(int64_t)];
} weft_counter_t;
#define WEFT_COUNTER_INIT {0, {0}}
/* Add n; returns the new value. */
WEFT_EXTERN int64_t weft_counter_add(weft_counter_t *c, int64_t n);
WEFT_EXTERN int64_t weft_counter_load(const weft_counter_t *c);
WEFT_EXTERN void weft_counter_store(weft_counter_t *c, int64_t v);

/* A sharded counter: one padded slot per worker (threads outside the runtime share a few more), so
 * adds from all workers never contend. Reading sums the slots: exact once the adds have stopped,
 * a value somewhere between the sums before and after while they go on. Relaxed, as weft_counter_t.
 * It has a slot for every worker a runtime may have (1024), about 66 KiB, so it may outlive a runtime
 * and serve the next; a read costs only the slots of workers that have added. */
typedef struct weft_sharded_counter weft_sharded_counter_t;
/* 0, -EINVAL (out is NULL), -ENOMEM. */
WEFT_EXTERN int weft_sharded_counter_new(weft_sharded_counter_t **out);
WEFT_EXTERN void weft_sharded_counter_add(weft_sharded_counter_t *c, int64_t n);
WEFT_EXTERN int64_t weft_sharded_counter_load(const weft_sharded_counter_t *c);
WEFT_EXTERN void weft_sharded_counter_free(weft_sharded_counter_t *c);

/* ------------------------------------------------------------------------------------------------ */
/* I/O: file descriptors that park the fiber, not the worker                                        */
/*
 * Any fd used with these calls is put in non-blocking mode and watched by the runtime's poller. A fiber
 * that finds it not ready parks until it is, and its worker runs other fibers meanwhile; a thread that is
 * not a fiber blocks. Every call takes a deadline and returns -ETIMEDOUT when it passes (WEFT_NOWAIT:
 * -ETIMEDOUT at once rather than wait). Signals never make them fail with -EINTR: they retry. -ENOMEM:
 * no memory for weft's record of the fd (made on its first use), or for the wait (see the top of this
 * file); weft_writev also copies more than 16 iovecs.
 * Regular files cannot be polled: in a fiber, their reads and writes run on the blocking pool.
 *
 * Close these fds with weft_close: it wakes every fiber waiting on the fd (they get -EBADF) and makes sure
 * no call is still using the number when the system hands it out again. Events of a closed file never
 * reach whatever gets its number next. (An fd closed with plain close() leaves weft's registration behind;
 * weft starts afresh for numbers that weft_accept and the dial/listen helpers return.)
 */

enum weft_fd_events {
    WEFT_READABLE = 1u << 0,
    WEFT_WRITABLE = 1u << 1,
};

/* Wait until fd is readable or writable (one of the two). Returns the events that are ready (> 0); an
 * error or hang-up counts as ready, the next call says what happened. may park */
WEFT_EXTERN int weft_fd_wait(int fd, unsigned events, int64_t deadline);

/* read(2) / readv(2) / recv(2) / recvfrom(2): return as soon as some bytes came (0 at end of file).
 * may park */
WEFT_EXTERN ssize_t weft_read(int fd, void *buf, size_t len, int64_t deadline);
WEFT_EXTERN ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);
WEFT_EXTERN ssize_t weft_recv(int fd, void *buf, size_t len, int flags, int64_t deadline);
WEFT_EXTERN ssize_t weft_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                                  socklen_t *fromlen, int64_t deadline);

/* write(2) / writev(2) / send(2): write every byte before returning, like a blocking write to a socket.
 * If an error or the deadline comes after some bytes went out, returns how many did; the next call on the
 * fd reports the error (a read first gets the bytes that came before it, as from the kernel). Writing to
 * a socket whose peer is gone returns -EPIPE and never raises SIGPIPE (weft uses MSG_NOSIGNAL); for pipes,
 * ignore or block SIGPIPE yourself. may park */
WEFT_EXTERN ssize_t weft_write(int fd, const void *buf, size_t len, int64_t deadline);
WEFT_EXTERN ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt, int64_t deadline);
WEFT_EXTERN ssize_t weft_send(int fd, const void *buf, size_t len, int flags, int64_t deadline);
/* sendto(2): one datagram, whole or not at all. may park */
WEFT_EXTERN ssize_t weft_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                                socklen_t tolen, int64_t deadline);

/* accept4(2): the new fd is non-blocking, close-on-exec and ready for weft's calls (TCP: TCP_NODELAY).
 * When the process is out of fds, closes the waiting connections (their clients see them closed rather
 * than hang) and backs off, 1 ms doubling to 100 ms, until fds free up or the deadline. may park */
WEFT_EXTERN int weft_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int64_t deadline);
/* connect(2) on a socket, waiting for the outcome. When a Unix socket's listener has a full backlog, waits
 * for room as a blocking connect does, trying again after a pause (1 ms doubling to 100 ms), until the
 * deadline. may park */
WEFT_EXTERN int weft_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, int64_t deadline);

/* Close fd: waiters on it wake with -EBADF; returns when no weft call uses it any more. */
WEFT_EXTERN int weft_close(int fd);

/* getaddrinfo(3) on the blocking pool (numeric addresses are resolved at once). Errors as negative
 * errnos: -ENOENT (no such name), -EAGAIN (try again), -ENOMEM, -EIO, -EINVAL (bad hints). may park */
WEFT_EXTERN int weft_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                                 struct addrinfo **res);

/* A listening TCP socket on host (NULL or "": every address) and port (0: any free port; getsockname
 * tells which), SO_REUSEADDR set. backlog <= 0: SOMAXCONN. Returns the fd. may park (name lookup) */
WEFT_EXTERN int weft_tcp_listen(const char *host, int port, int backlog);
/* A TCP connection to host:port, trying each address the name has; TCP_NODELAY set. The deadline covers
 * the name lookup too: one that has not ended by then goes on alone (what it finds is dropped) and the
 * dial returns -ETIMEDOUT. may park */
WEFT_EXTERN int weft_tcp_dial(const char *host, int port, int64_t deadline);
/* A listening Unix stream socket at path (which must not exist yet). */
WEFT_EXTERN int weft_unix_listen(const char *path, int backlog);
/* A connection to the Unix stream socket at path. may park */
WEFT_EXTERN int weft_unix_dial(const char *path, int64_t deadline);

/* ------------------------------------------------------------------------------------------------ */
/* Blocking calls: run a function that may block on a kernel thread of the blocking pool            */

/* Run fn(arg) on a pool thread while the calling fiber parks; *result (may be NULL) gets its return
 * value. On a thread that is not a fiber, runs fn right there. The pool grows as calls come, up to
 * weft_config_t.blocking_threads; past that, or when the system will not make another thread, calls queue
 * and wait for a free thread: they never fail for lack of one, and the pool grows back once the system
 * makes threads again. -ENOMEM: no memory for the timer its wait needed (while the system refuses
 * threads, a queued call wakes now and then to try again); the call was taken back and never ran.
 * may park */
WEFT_EXTERN int weft_blocking(weft_fn fn, void *arg, void **result);
/* The same with a deadline: if it passes while the call still waits in the queue, the call is taken out
 * and never runs (-ETIMEDOUT). Once fn has started it runs to the end, and this waits for it. may park */
WEFT_EXTERN int weft_blocking_until(weft_fn fn, void *arg, void **result, int64_t deadline);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
