/*
 * Runtime start and stop, configuration, errors.
 *
 * Start resolves the configuration (explicit config, else WEFT_* environment, else what the machine
 * says), installs the overflow handler and starts the workers. Shutdown waits until every fiber has
 * finished, then stops the workers and gives back every stack; the runtime can start again after.
 *
 * Counting live fibers without a shared counter (which every spawn and exit on every worker would
 * bounce between caches): each worker counts the fibers it spawned and the fibers that finished on it,
 * foreign threads count their spawns in one atomic. live_fibers (sched.c) sums the exits first, then
 * the spawns: a fiber that finished was spawned before it finished, and a fiber spawned after the sums
 * were read was spawned by a fiber that was still alive then, so the difference never reads zero
 * while any fiber lives. A spawn from outside the runtime has no live fiber behind it: it holds off
 * the shutdown on its own (weft__foreign_enter, below). Shutdown waits on a futex that the last
 * finishing fiber bumps, and re-checks every 10 ms as a safety net.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "io/io.h"
#include "obs/sanitize.h"

static pthread_mutex_t rt_lock = PTHREAD_MUTEX_INITIALIZER;

_Noreturn void weft__panic(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
    (void)r;
    abort();
}

int weft_start(const weft_config_t *cfg)
{
    weft_config_t c = {0};
    if (cfg)
        c = *cfg;
    if (c.workers < 0 || c.workers > WEFT__MAX_WORKERS)
        return -EINVAL;
    if (c.stack_size > ((size_t)1 << 30) || c.blocking_threads < 0)
        return -EINVAL;

    /* the options table (options.c): the config, else the environment, else the default */
    int workers = (int)weft__option_value(WEFT__OPT_WORKERS, c.workers);
    if (workers == WEFT__OPT_FROM_MACHINE)
        workers = weft__cpu_count();
    if (workers > WEFT__MAX_WORKERS)
        workers = WEFT__MAX_WORKERS; /* a machine with more CPUs than that still starts */
    size_t stack = (size_t)weft__option_value(WEFT__OPT_STACK_SIZE, (int64_t)c.stack_size);
    int64_t spin_us = weft__option_value(WEFT__OPT_SPIN_US, c.spin_us);
    int64_t blocking = weft__option_value(WEFT__OPT_BLOCKING_THREADS, c.blocking_threads);
    int64_t stuck_us = weft__option_value(WEFT__OPT_STUCK_US, c.stuck_us);

    pthread_mutex_lock(&rt_lock);
    if (atomic_load(&weft__rt_g.state) != WEFT__RT_STOPPED) {
        pthread_mutex_unlock(&rt_lock);
        return -EALREADY;
    }
    weft__rt_g.stack_size = weft__stack_round(stack * WEFT_SAN_STACK_FACTOR);
    weft__rt_g.spin_ns = spin_us > 0 ? (int64_t)spin_us * 1000 : 0;
    atomic_store(&weft__rt_g.quiesce_wanted, 0);
    weft__blocking_configure((int)blocking);
    int r = weft__stack_global_init();
    if (r == 0)
        r = weft__io_start();
    if (r == 0) {
        weft__monitor_prepare(stuck_us > 0 ? (int64_t)stuck_us * 1000 : 0);
        r = weft__sched_start(workers);
        if (r == 0) {
            r = weft__monitor_start();
            if (r < 0)
                weft__sched_stop();
        }
        if (r < 0)
            weft__io_stop();
    }
    if (r == 0) {
        weft__net_init(); /* the spare fd for accept, once started: a failed start keeps no fd */
        atomic_store_explicit(&weft__rt_g.state, WEFT__RT_RUNNING, memory_order_release);
    }
    pthread_mutex_unlock(&rt_lock);
    return r;
}

/*
 * A spawn from outside the runtime races a shutdown: the spawner checks that the runtime runs, then
 * counts and queues its fiber; a shutdown that read the counts in between would see no fiber, stop the
 * workers, and the fiber would be lost. So the spawner first announces itself (foreign_inflight, seq_cst)
 * and then reads the state; shutdown first stores STOPPING and then reads foreign_inflight. One of the
 * two sees the other: either the spawner sees STOPPING and refuses, or shutdown waits for it to leave,
 * by which time its fiber is counted.
 */
int weft__foreign_enter(bool live)
{
    for (;;) {
        atomic_fetch_add_explicit(&weft__rt_g.foreign_inflight, 1, memory_order_seq_cst);
        int s = atomic_load_explicit(&weft__rt_g.state, memory_order_seq_cst);
        if (WEFT__LIKELY(s == WEFT__RT_RUNNING) || (live && s == WEFT__RT_STOPPING))
            return 0; /* a live caller is counted: the shutdown cannot end before its fiber is too */
        weft__foreign_leave();
        if (s == WEFT__RT_STOPPING)
            return -ESHUTDOWN;
        int r = weft_start(NULL);
        if (r < 0 && r != -EALREADY)
            return r;
    }
}

void weft__foreign_leave(void)
{
    /* only poke the shutdown, which counts for itself: the workers' counters may be gone already (a
     * refused spawn leaves while the shutdown that refused it frees them) */
    if (atomic_fetch_sub_explicit(&weft__rt_g.foreign_inflight, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&weft__rt_g.quiesce_wanted, memory_order_seq_cst))
        weft__quiesce_poke();
}

int weft_shutdown(void)
{
    if (weft__on_worker())
        return -EDEADLK;
    pthread_mutex_lock(&rt_lock);
    if (atomic_load(&weft__rt_g.state) != WEFT__RT_RUNNING) {
        pthread_mutex_unlock(&rt_lock);
        return 0;
    }
    atomic_store_explicit(&weft__rt_g.state, WEFT__RT_STOPPING, memory_order_seq_cst);
    atomic_store_explicit(&weft__rt_g.quiesce_wanted, 1, memory_order_seq_cst);
    /* this thread waits in weft now: the deadlock check counts it as idle */
    atomic_fetch_add_explicit(&weft__rt_g.threads_parked, 1, memory_order_seq_cst);
    uint64_t deadlocks_before = atomic_load_explicit(&weft__rt_g.deadlocks, memory_order_seq_cst);
    bool abandon = false;
    for (;;) {
        uint32_t v = atomic_load_explicit(&weft__rt_g.quiesce_futex, memory_order_seq_cst);
        if (weft__quiescent()) {
            weft__tsan_acquire(&weft__rt_g); /* every fiber's end comes before the teardown */
            break;
        }
        /* a deadlock woke every waiter with -EDEADLK; if they went back to sleep and it was reported
         * again, they will never finish: leave them */
        if (atomic_load_explicit(&weft__rt_g.deadlocks, memory_order_seq_cst) - deadlocks_before >= 2) {
            abandon = true;
            break;
        }
        weft__futex_wait(&weft__rt_g.quiesce_futex, v, weft__clock_ns() + 10 * 1000 * 1000);
    }
    atomic_fetch_sub_explicit(&weft__rt_g.threads_parked, 1, memory_order_seq_cst);
    int r = atomic_load_explicit(&weft__rt_g.deadlocks, memory_order_seq_cst) ? -EDEADLK : 0;
    weft__monitor_stop();
    weft__sched_stop();
    if (abandon)
        weft__desc_each(weft__desc_abandon, NULL);
    weft__io_stop();
    weft__stack_global_fini();
    atomic_store_explicit(&weft__rt_g.quiesce_wanted, 0, memory_order_seq_cst);
    atomic_store_explicit(&weft__rt_g.state, WEFT__RT_STOPPED, memory_order_release);
    pthread_mutex_unlock(&rt_lock);
    return r;
}

int weft_run(const weft_config_t *cfg, void *(*fn)(void *), void *arg, void **result)
{
    if (!fn)
        return -EINVAL;
    /* the join below needs the calling thread's descriptor: made first, so that without memory for it
     * the call fails having run nothing (a join that failed for it would leave fn running, and the call
     * would return -ENOMEM once fn had run) */
    weft__fiber *self = weft__self();
    if (!self)
        return -ENOMEM;
    int r = weft_start(cfg);
    if (r < 0)
        return r;
    weft_fiber_t f;
    weft_attr_t a = {.name = "main"};
    r = weft_spawn(&f, &a, fn, arg);
    if (r == 0)
        r = weft_join(f, result);
    int s = weft_shutdown();
    return r < 0 ? r : s;
}

int weft_workers(void)
{
    return atomic_load_explicit(&weft__rt_g.state, memory_order_acquire) == WEFT__RT_STOPPED ? 0
                                                                                       : weft__rt_g.nworkers;
}

/* ------------------------------------------------------------------------------------------------ */
/* Errors                                                                                            */

const char *weft_strerror(int err)
{
    switch (-err) {
#define XX(code, text)                                                                              \
    case code:                                                                                      \
        return text;
        WEFT_ERRNO_MAP(XX)
#undef XX
    default: break;
    }
    if (err == 0)
        return "success";
    if (err > 0)
        return "not an error code (weft errors are negative)";
    static __thread char buf[128];
    return strerror_r(-err, buf, sizeof buf);
}

const char *weft_err_name(int err)
{
    switch (-err) {
#define XX(code, text)                                                                              \
    case code:                                                                                      \
        return #code;
        WEFT_ERRNO_MAP(XX)
#undef XX
    default: break;
    }
    if (err == 0)
        return "OK";
    const char *n = err < 0 ? strerrorname_np(-err) : NULL;
    return n ? n : "UNKNOWN";
}

const char *weft__wait_reason_name(unsigned reason)
{
    static const char *const names[WEFT__WAIT_REASONS_] = {
#define WEFT__WAIT_NAME(name, text) [WEFT__WAIT_##name] = text,
        WEFT__WAIT_REASONS(WEFT__WAIT_NAME)
#undef WEFT__WAIT_NAME
    };
    return reason < WEFT__WAIT_REASONS_ ? names[reason] : "?";
}
