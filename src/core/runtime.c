/*
 * Runtime start and stop, configuration, errors.
 *
 * Start resolves the configuration (explicit config, else WEFT_* environment, else what the machine
 * says), installs the overflow handler and starts the workers. Shutdown waits until every fiber has
 * finished (the accounting it waits on is quiesce.c's), then stops the workers and gives back every
 * stack; the runtime can start again after.
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
    weft__quiesce_reset();
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

int weft_shutdown(void)
{
    if (weft__on_worker())
        return -EDEADLK;
    pthread_mutex_lock(&rt_lock);
    if (atomic_load(&weft__rt_g.state) != WEFT__RT_RUNNING) {
        pthread_mutex_unlock(&rt_lock);
        return 0;
    }
    /* STOPPING before the wait reads foreign_inflight: the order weft__foreign_enter relies on */
    atomic_store_explicit(&weft__rt_g.state, WEFT__RT_STOPPING, memory_order_seq_cst);
    bool abandon = weft__quiesce_wait();
    int r = atomic_load_explicit(&weft__rt_g.deadlocks, memory_order_seq_cst) ? -EDEADLK : 0;
    weft__monitor_stop();
    weft__sched_stop();
    if (abandon)
        weft__desc_each(weft__desc_abandon, NULL);
    weft__io_stop();
    weft__stack_global_fini();
    weft__quiesce_end();
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
