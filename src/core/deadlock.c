/*
 * The deadlock report (docs/design.md, decision 6), run by the monitor when every worker is asleep.
 *
 * A deadlock is: fibers live, every one waits, and nothing can ever wake one. Something can while
 *   - a fiber is ready anywhere (a queue, an inbox, the global queue),
 *   - a timer is pending (a sleep, a deadline),
 *   - a fiber or thread waits on an fd (the outside world may write to it),
 *   - a blocking call is queued or running (it will wake its fiber),
 *   - a thread has been woken and has not run yet (it still counts as parked, and may wake others),
 *   - or any thread of the process is doing something other than waiting in weft: a thread weft does not
 *     know about may hold a wait group, a handle, an fd, and wake a fiber any moment.
 * The last one is counted, not guessed: the threads of the process (/proc/self/status) against those
 * weft knows are idle (its asleep workers, the monitor, idle blocking-pool threads, threads parked in
 * weft waits or in weft_shutdown). One thread more, and it is not a deadlock.
 *
 * The conditions must hold, with no worker switching at all, for DEADLOCK_CONFIRM_NS: then the report
 * lists every fiber and thread that waits, with its wait reason, and every one of them is woken with
 * -EDEADLK (weft_run and weft_shutdown return it too), so the run ends with an error instead of hanging.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "io/io.h"

#define rt (&weft__rt_g)
#define DEADLOCK_CONFIRM_NS ((int64_t)50000000)
#define UNKNOWN_THREADS_RECHECK_NS ((int64_t)100000000)

static struct {
    bool candidate;       /* the conditions held at `since` ... */
    int64_t since;
    uint64_t switches;    /* ... with this many switches in all */
    bool recheck;         /* a passing state kept it from being one: look again later */
    int status_fd;        /* /proc/self/status, held from the start: the check must work out of fds */
} dl = {.status_fd = -1};

void weft__deadlock_start(void)
{
    dl.candidate = false;
    dl.recheck = false;
    if (dl.status_fd < 0)
        dl.status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
}

void weft__deadlock_stop(void)
{
    if (dl.status_fd >= 0)
        close(dl.status_fd);
    dl.status_fd = -1;
}

/* The process's thread count, -1 when unknown (then there is no report: a missed one, never a false
 * one). Read into memory of our own: no fd, no allocation. */
static int64_t process_threads(void)
{
    char buf[4096];
    ssize_t n = dl.status_fd >= 0 ? pread(dl.status_fd, buf, sizeof buf - 1, 0) : -1;
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strstr(buf, "\nThreads:");
    return p ? atoll(p + 9) : -1;
}

/*
 * ThreadSanitizer runs background threads of its own (one per process, sometimes one more after a
 * fork), started when it pleases. Each sleeps in nanosleep for exactly 100 ms between rounds: count the
 * threads asleep in that call, so that they are known, not taken for threads that might wake a fiber.
 */
static int64_t sanitizer_threads(void)
{
    if (!WEFT_TSAN)
        return 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    int64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[64], text[256];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/syscall", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        long nr = -1;
        unsigned long arg0 = 0;
        if (fgets(text, sizeof text, f) && sscanf(text, "%ld %lx", &nr, &arg0) == 2 && nr == SYS_nanosleep &&
            arg0 != 0) {
            /* copied, not read: the thread may leave the call and its stack meanwhile */
            struct timespec ts;
            struct iovec here = {&ts, sizeof ts}, there = {(void *)arg0, sizeof ts};
            if (process_vm_readv(getpid(), &here, 1, &there, 1, 0) == (ssize_t)sizeof ts)
                n += ts.tv_sec == 0 && ts.tv_nsec == 100000000;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

static uint64_t all_switches(void)
{
    uint64_t s = 0;
    for (int i = 0; i < rt->nworkers; i++)
        s += atomic_load_explicit(&rt->workers[i]->nswitch, memory_order_relaxed);
    return s;
}

/* For weft__desc_each: a thread that waits in weft (or a fiber that parks like one, on a thread that
 * lost its worker) whose wakeup came but which has not run yet. It is still in threads_parked until it
 * runs, which may be much later on a loaded machine; then it may wake anyone. */
static void find_woken_thread(weft__fiber *f, void *arg)
{
    bool *found = arg;
    weft__tsan_internal_begin();
    int kind = f->kind;
    uint32_t pw = atomic_load_explicit(&f->park, memory_order_acquire);
    weft__tsan_internal_end();
    if ((kind == WEFT__KIND_FIBER || kind == WEFT__KIND_THREAD || kind == WEFT__KIND_FOREIGN) &&
        WEFT__PW_STATE(pw) == WEFT__PW_WOKEN)
        *found = true;
}

/* Could anything wake a fiber? (Every worker is asleep: their owner-only fields are quiet.) When the
 * answer rests on something that will make a worker wake up (a timer, an fd, a blocking call), that
 * worker pokes the monitor and nothing more is needed. When it rests on a passing state (a worker
 * with work that has not woken yet, a thread just starting or ending or woken but not yet running,
 * a thread we cannot see into), nobody may poke the monitor afterwards: *look_again asks it to look
 * again later instead of sleeping until a worker wakes, which might be never. */
static bool something_can_wake(bool *look_again)
{
    *look_again = false;
    if (weft__live_fibers() <= 0)
        return true; /* nothing waits */
    if (weft__foreign_spawning() || atomic_load_explicit(&rt->gq_len, memory_order_seq_cst) > 0) {
        *look_again = true; /* a spawn is under way */
        return true;
    }
    if (weft__io_waiting() > 0 || weft__blocking_busy() > 0)
        return true;
    weft__tsan_internal_begin();
    bool busy = false, timers = false;
    for (int i = 0; i < rt->nworkers && !busy; i++) {
        weft__worker *w = rt->workers[i];
        timers = timers || w->heap_len > 0;
        busy = !atomic_load_explicit(&w->sleeping, memory_order_seq_cst) || w->runnext || w->ready_head ||
               atomic_load_explicit(&w->inbox, memory_order_relaxed) ||
               atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) >
                   atomic_load_explicit(&w->dq.top, memory_order_relaxed);
    }
    weft__tsan_internal_end();
    if (busy) {
        *look_again = true;
        return true;
    }
    if (timers)
        return true;
    int64_t known = rt->nworkers + 1 /* the monitor */ + weft__monitor_spares() + weft__blocking_idle() +
                    atomic_load_explicit(&rt->threads_parked, memory_order_seq_cst) + sanitizer_threads();
    int64_t all = process_threads();
    if (all != known) {
        *look_again = true; /* more: a thread we cannot see into; fewer: one starting or ending */
        return true;
    }
    /* a woken fiber on a worker would keep that worker awake; a woken thread wakes no worker, and it
     * may wait again without waking anyone: then look again later, as for a thread we cannot see */
    bool woken = false;
    weft__desc_each(find_woken_thread, &woken);
    *look_again = woken;
    return woken;
}

/* ------------------------------------------------------------------------------------------------ */
/* The report                                                                                        */

static void report_one(weft__fiber *f, void *arg)
{
    int *n = arg;
    weft__tsan_internal_begin();
    int kind = f->kind;
    uint32_t pw = atomic_load_explicit(&f->park, memory_order_acquire);
    int state = (int)atomic_load_explicit(&f->state, memory_order_relaxed);
    unsigned reason = f->wait_reason;
    char line[160];
    int len = 0;
    if ((kind == WEFT__KIND_FIBER || kind == WEFT__KIND_THREAD || kind == WEFT__KIND_FOREIGN) &&
        WEFT__PW_STATE(pw) == WEFT__PW_WAITING) {
        char who[64];
        if (kind == WEFT__KIND_FOREIGN)
            snprintf(who, sizeof who, "a thread outside weft");
        else if (f->flags & WEFT__F_NAMED)
            snprintf(who, sizeof who, "%s %llu \"%.31s\"", kind == WEFT__KIND_FIBER ? "fiber" : "thread",
                     (unsigned long long)f->id, f->name);
        else
            snprintf(who, sizeof who, "%s %llu", kind == WEFT__KIND_FIBER ? "fiber" : "thread",
                     (unsigned long long)f->id);
        len = snprintf(line, sizeof line, "  %s [%s: %s]\n", who, state == WEFT_WAITING ? "waiting" : "parked",
                       weft__wait_reason_name(reason));
    }
    weft__tsan_internal_end();
    if (len > 0) {
        ssize_t r = write(STDERR_FILENO, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
        (void)r;
        (*n)++;
    }
}

static void wake_one(weft__fiber *f, void *arg)
{
    (void)arg;
    weft__tsan_internal_begin();
    int kind = f->kind;
    uint32_t pw = atomic_load_explicit(&f->park, memory_order_acquire);
    weft__tsan_internal_end();
    if ((kind == WEFT__KIND_FIBER || kind == WEFT__KIND_THREAD || kind == WEFT__KIND_FOREIGN) &&
        WEFT__PW_STATE(pw) == WEFT__PW_WAITING)
        weft__unpark_fifo(f, WEFT__PW_SEQ(pw), WEFT__PW_DEADLOCK);
}

static void report_and_break(void)
{
    static const char head[] = "weft: all fibers are asleep - deadlock!\n";
    ssize_t r = write(STDERR_FILENO, head, sizeof head - 1);
    (void)r;
    int n = 0;
    weft__desc_each(report_one, &n);
    static const char tail[] = "weft: every wait above returns -EDEADLK, unless what it waits for comes "
                               "first (a mutex another fiber lets go of as it unwinds)\n";
    r = write(STDERR_FILENO, tail, sizeof tail - 1);
    (void)r;
    atomic_fetch_add_explicit(&rt->deadlocks, 1, memory_order_seq_cst);
    weft__desc_each(wake_one, NULL);
    weft__quiesce_poke(); /* a shutdown waiting for the fibers sees the count */
}

bool weft__deadlock_check(int64_t now)
{
    bool look_again;
    if (something_can_wake(&look_again)) {
        dl.candidate = false;
        dl.recheck = look_again;
        return false;
    }
    dl.recheck = false;
    uint64_t s = all_switches();
    if (!dl.candidate || dl.switches != s) {
        dl.candidate = true;
        dl.since = now;
        dl.switches = s;
        return false;
    }
    if (now - dl.since < DEADLOCK_CONFIRM_NS)
        return false;
    dl.candidate = false;
    report_and_break();
    return true;
}

int64_t weft__deadlock_next(int64_t now)
{
    if (dl.candidate)
        return dl.since + DEADLOCK_CONFIRM_NS;
    if (dl.recheck)
        return now + UNKNOWN_THREADS_RECHECK_NS;
    return WEFT_FOREVER;
}
