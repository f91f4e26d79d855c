/*
 * The monitor: one thread beside the workers that sees what they cannot see themselves.
 *
 * THE JOB
 *  - A fiber that blocks its thread in a system call (libc sleep, a blocking read of a file, a lock held
 *    by another thread) or runs a long loop without yielding would hold its worker, and every fiber
 *    queued there would wait. The monitor notices a worker whose current fiber has run user code for a
 *    set time (stuck_us, default 10 ms) without a switch, prints a rate-limited warning naming the fiber,
 *    and gives the worker, with all its other fibers, to a fresh thread (a loop on a CPU: only once
 *    another fiber there is ready; see check_stuck). The stuck thread keeps only the
 *    fiber it was running and goes on as a plain kernel thread (docs/design.md, decision 5: the one case
 *    where started fibers change thread).
 *  - When every worker is busy, nobody sleeps in the poller: the monitor looks at it now and then, so
 *    that fds never starve. It also restarts the blocking pool when the system refused it a thread.
 *  - When every fiber waits and nothing can wake any, it reports the deadlock (deadlock.c).
 *  - It costs nothing when the runtime is idle: with every worker asleep it sleeps until one wakes.
 *
 * THE HAND-OFF
 * A worker's state belongs to the thread running it, which changes it without locks. The monitor may take
 * the worker only while that thread is in user code, and the thread must not touch the worker after.
 * weft__enter/weft__leave (park.h) keep a per-thread depth of runtime code; the monitor:
 *   1. marks the thread's hold REVOKING;
 *   2. runs membarrier(PRIVATE_EXPEDITED): every thread of the process passes a full barrier, so the
 *      thread's depth store before it is visible now, and its own-load after it sees REVOKING;
 *   3. reads depth: not zero (runtime code) or a switch happened meanwhile: gives up, restores the hold;
 *      zero: marks the hold LOST and lets the waiting fresh thread take the worker.
 * The thread, entering the runtime, sees REVOKING and waits for the verdict, or LOST and becomes an
 * orphan: its fiber becomes a thread-kind descriptor (it parks on its futex, spawns from outside), and
 * when it ends the thread ends. Where membarrier is missing, weft__enter fences (WEFT__M_FENCED) instead.
 *
 * REJECTED
 *  - Signals to interrupt the stuck thread: they would cut the user's own system calls short (a libc
 *    sleep(1) returns early when a handler runs).
 *  - A fence in every weft__enter: measured 3-4 ns more per yield round trip; membarrier moves the cost to
 *    the rare revocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "io/io.h"

#define rt (&weft__rt_g)
#define TICK_MIN_NS ((int64_t)1000000)
#define TICK_MAX_NS ((int64_t)5000000)
#define WARN_EVERY_NS ((int64_t)1000000000)
#define KICK_EVERY_NS ((int64_t)100000000)

/* What the monitor knows of one worker's current stretch of user code. */
struct look {
    uint64_t seen_switch; /* the switch count last seen ... */
    uint32_t seen_depth;  /* ... and the thread's depth word (entries into the runtime) ... */
    int64_t seen_at;      /* ... and since when */
    int64_t cpu_at;       /* the thread's CPU time at the first look (-1: not read yet) */
    int64_t next_at;      /* when to judge it again */
    bool calm;            /* judged a loop that keeps nothing waiting: judged again early if that changes */
    bool in_loop;         /* its fiber ran a parallel loop's body when last judged */
};

/* A stuck fiber the once-a-second limit kept out of a warning: named in the next summary line. */
struct unwarned {
    char label[64]; /* weft__label */
    int worker;
    int64_t ran_ms;
};
#define UNWARNED_MAX 16 /* a full list is printed at once, whatever the limit says */

static struct {
    pthread_t thread;
    bool running;
    _Atomic int stop;
    _Atomic uint32_t futex;  /* bumped to wake the monitor */
    _Atomic int deep;        /* 1 while it sleeps until a worker wakes */
    int64_t stuck_ns;        /* 0: hand nothing off */
    int membarrier;          /* PRIVATE_EXPEDITED works here */
    struct look *looks;      /* per worker */
    int64_t last_warn;
    struct unwarned unwarned[UNWARNED_MAX]; /* stuck fibers not named yet */
    int nunwarned;
    /* A thread made ahead for the next hand-off, waiting at its gate with what it needs (its stack, its
     * signal stack, its state file): a hand-off then needs no thread, memory or fd from a process that
     * may have none left. Made again after each use, when the system allows. */
    weft__mthread *spare;
    pthread_t spare_thread;
    _Atomic int nspares;     /* 0 or 1, for the deadlock check's count of known threads */
    int64_t spare_tried_at;
    _Atomic uint64_t handoffs;
} mon;

/* Before the workers start: can revocations use membarrier, or must every weft__enter fence? And will
 * the workers' threads need their state files (weft__monitor_thread_open)? */
void weft__monitor_prepare(int64_t stuck_ns)
{
    mon.stuck_ns = stuck_ns > 0 ? stuck_ns : 0;
    if (mon.membarrier)
        return;
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        mon.membarrier = 1;
    atomic_store_explicit(&weft__enter_fence, mon.membarrier ? 0 : 1, memory_order_relaxed);
}

/* Without membarrier, threads are WEFT__M_FENCED: their seq_cst accesses and ours order themselves. */
static void barrier_everywhere(void)
{
    if (mon.membarrier)
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
}

void weft__monitor_poke(void)
{
    atomic_fetch_add_explicit(&mon.futex, 1, memory_order_seq_cst);
    weft__futex_wake(&mon.futex, 1);
}

void weft__monitor_worker_woke(void)
{
    if (WEFT__UNLIKELY(atomic_load_explicit(&mon.deep, memory_order_relaxed)) &&
        atomic_exchange_explicit(&mon.deep, 0, memory_order_seq_cst))
        weft__monitor_poke();
}

uint64_t weft__monitor_handoffs(void)
{
    return atomic_load_explicit(&mon.handoffs, memory_order_relaxed);
}

int weft__monitor_spares(void)
{
    return atomic_load_explicit(&mon.nspares, memory_order_seq_cst);
}

int weft__monitor_thread_open(void)
{
    return mon.stuck_ns ? open("/proc/thread-self/stat", O_RDONLY | O_CLOEXEC) : -1;
}

void weft__monitor_thread_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

/* Make the spare thread if there is none; at most every KICK_EVERY_NS while the system refuses. */
static void spare_make(int64_t now)
{
    if (mon.spare || !mon.stuck_ns || (mon.spare_tried_at && now - mon.spare_tried_at < KICK_EVERY_NS))
        return;
    mon.spare_tried_at = now;
    if (weft__thread_prepare(NULL, &mon.spare, &mon.spare_thread) < 0) {
        mon.spare = NULL;
        return;
    }
    atomic_store_explicit(&mon.nspares, 1, memory_order_seq_cst);
}

/* The spare, taken for a hand-off (NULL when there is none). */
static weft__mthread *spare_take(pthread_t *t)
{
    weft__mthread *m = mon.spare;
    if (m) {
        *t = mon.spare_thread;
        mon.spare = NULL;
        mon.spare_tried_at = 0; /* make the next one at once, if the system allows */
    }
    return m;
}

static void spare_put_back(weft__mthread *m, pthread_t t)
{
    mon.spare = m;
    mon.spare_thread = t;
}

static void spare_discard(void)
{
    pthread_t t;
    weft__mthread *m = spare_take(&t);
    if (m) {
        weft__thread_discard(m, t);
        atomic_store_explicit(&mon.nspares, 0, memory_order_seq_cst);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Stuck workers                                                                                     */

/* The summary line that names the stuck fibers the limit kept out of a warning. */
static void warn_unwarned(void)
{
    if (!mon.nunwarned)
        return;
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "weft: also stuck since the last warning:");
    for (int i = 0; i < mon.nunwarned && n > 0 && (size_t)n < sizeof buf; i++) {
        struct unwarned *u = &mon.unwarned[i];
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s fiber %s (%lld ms on worker %d)", i ? "," : "",
                      u->label, (long long)u->ran_ms, u->worker);
    }
    if (n > 0 && (size_t)n < sizeof buf - 1) {
        buf[n++] = '\n';
        ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
        (void)r;
    }
    mon.nunwarned = 0;
}

/* At most one warning a second; a fiber the limit keeps out is named in a summary line once it lifts
 * (or at once when the list is full), so that every stuck fiber is named at least once. */
static void warn_stuck(const char *label, int worker, int64_t ran_ns, bool moved)
{
    int64_t now = weft__clock_ns();
    if (mon.last_warn && now - mon.last_warn < WARN_EVERY_NS) {
        int i = 0;
        while (i < mon.nunwarned && strcmp(mon.unwarned[i].label, label) != 0)
            i++; /* the same fiber again: one entry, with its latest figures */
        if (i == UNWARNED_MAX) {
            warn_unwarned();
            i = 0;
        }
        struct unwarned *u = &mon.unwarned[i];
        snprintf(u->label, sizeof u->label, "%s", label);
        u->worker = worker;
        u->ran_ms = ran_ns / 1000000;
        if (i == mon.nunwarned)
            mon.nunwarned++;
        return;
    }
    warn_unwarned();
    mon.last_warn = now;
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "weft: fiber %s has run %lld ms without yielding on worker %d: a blocking call "
                     "(run it with weft_blocking) or a long loop (call weft_yield now and then)?%s\n",
                     label, (long long)(ran_ns / 1000000), worker,
                     moved ? " Its worker's other fibers go on on a new thread." : "");
    if (n > 0 && (size_t)n < sizeof buf) {
        ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
        (void)r;
    }
}

/* Is a fiber of this worker ready to run, or due to be (a timer)? Fibers not started yet, in its deque,
 * count unless `unstarted_wait` is false. (Racy reads of owner fields, while the owner runs user code:
 * good enough to decide whether a fresh thread is worth making.) */
static bool ready_waits(weft__worker *w, int64_t now, bool unstarted_wait)
{
    weft__tsan_internal_begin();
    int64_t first = atomic_load_explicit(&w->timer_first, memory_order_relaxed);
    bool r = w->runnext || w->ready_head || atomic_load_explicit(&w->inbox, memory_order_relaxed) ||
             (first >= 0 && first <= now) ||
             (unstarted_wait && atomic_load_explicit(&w->dq.bottom, memory_order_relaxed) >
                                    atomic_load_explicit(&w->dq.top, memory_order_relaxed)) ||
             (rt->nworkers == 1 && atomic_load_explicit(&rt->gq_len, memory_order_relaxed) > 0);
    weft__tsan_internal_end();
    return r;
}

/* Does the worker hold other fibers at all, ready or parked? */
static bool others_resident(weft__worker *w)
{
    weft__tsan_internal_begin();
    bool r = w->nresident > 1 || w->heap_len > 0;
    weft__tsan_internal_end();
    return r;
}

/* Give w to a fresh thread, if its thread is still in user code with the same fiber, and has not entered
 * the runtime since the monitor judged it (see the top). The spare thread if there is one. */
static bool take_over(weft__worker *w, uint64_t switches, uint32_t depth_word)
{
    pthread_t t;
    weft__mthread *fresh = spare_take(&t);
    bool spare = fresh != NULL;
    if (!spare && weft__thread_prepare(w, &fresh, &t) < 0)
        return false; /* no thread to give it to: try again later */
    fresh->w = w;
    /* the worker's state and its thread's record, as runtime code sees them (hidden from TSan, as in the
     * workers; the thread frees its record when it ends, ordered by own, which TSan is not told about) */
    weft__tsan_internal_begin();
    weft__mthread *m = w->m;
    _Atomic uint32_t *own = atomic_load_explicit(&m->own, memory_order_relaxed);
    _Atomic uint32_t *depth = atomic_load_explicit(&m->depth, memory_order_acquire);
    uint32_t prev = atomic_exchange_explicit(own, WEFT__M_REVOKING, memory_order_seq_cst);
    barrier_everywhere();
    bool moved = atomic_load_explicit(depth, memory_order_seq_cst) != depth_word ||
                 atomic_load_explicit(&w->nswitch, memory_order_relaxed) != switches;
    if (moved) {
        atomic_store_explicit(own, prev, memory_order_release); /* it moved: nothing to do */
    } else {
        m->orphan = w->face.cur;
        w->nresident--; /* the stuck fiber leaves the worker with its thread */
        w->m = fresh;
        w->thread = t;
        atomic_store_explicit(own, WEFT__M_LOST, memory_order_release);
    }
    weft__tsan_internal_end();
    if (moved && spare) {
        fresh->w = NULL;
        spare_put_back(fresh, t);
        return false;
    }
    if (spare)
        atomic_store_explicit(&mon.nspares, 0, memory_order_seq_cst); /* a worker thread now */
    weft__thread_release(fresh, t, !moved);
    if (moved)
        return false;
    atomic_fetch_add_explicit(&mon.handoffs, 1, memory_order_relaxed);
    return true;
}

static int64_t thread_cpu_ns(weft__worker *w)
{
    clockid_t c;
    struct timespec ts;
    if (pthread_getcpuclockid(w->thread, &c) != 0 || clock_gettime(c, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The kernel's word on a thread: 'R' runnable (running, or waiting for a CPU), 'S'/'D' asleep in a
 * system call, ...; 0 when unknown. Read from the state file the thread opened when it started, into
 * memory of our own: no fd, no allocation, whatever the process has left. */
static char thread_state(weft__worker *w)
{
    char buf[512];
    /* the thread's record and its fd: runtime state, ordered by the thread's start as the workers
     * order it (hidden from TSan, which would see the open on the thread and this read unordered) */
    weft__tsan_internal_begin();
    int fd = w->m->stat_fd;
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
    weft__tsan_internal_end();
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name may hold spaces and parentheses: the state follows the last */
    return p && p[1] == ' ' ? p[2] : 0;
}

enum { NOT_STUCK, STUCK_BLOCKED, STUCK_LOOPING };

/* No switch for stuck_ns with the fiber in user code. Stuck in a blocking call if its thread sleeps in the
 * kernel, in a long loop if it has spent most of that time on a CPU; not stuck if it merely waited for a
 * CPU (an oversubscribed machine preempted it): then it is looked at again later. A loop on a machine so
 * busy that it never gets half of the time still counts once it has used stuck_ns of CPU since the first
 * look: otherwise, on a machine more than twice oversubscribed, no loop would ever be stuck. */
static int stuck_kind(weft__worker *w, struct look *l, int64_t ran)
{
    char st = thread_state(w);
    if (st == 'S' || st == 'D')
        return STUCK_BLOCKED;
    int64_t cpu = thread_cpu_ns(w);
    if (cpu < 0 || l->cpu_at < 0)
        return STUCK_LOOPING;
    int64_t used = cpu - l->cpu_at;
    if (used >= ran / 2 || used >= mon.stuck_ns)
        return STUCK_LOOPING;
    /* without the kernel's word (no state file), a thread that used so little CPU is far likelier
     * asleep in a call than kept from a CPU for that long */
    return st == 0 ? STUCK_BLOCKED : NOT_STUCK;
}

/*
 * A stuck worker is given to a fresh thread when that lets other fibers run. A blocking call: when the
 * worker holds any other fiber, parked ones too, since it cannot even wake them. A long loop: only when
 * a fiber is ready, or a timer due. A loop that keeps nothing waiting is left alone and not warned about,
 * since a fresh thread would only take a CPU from it; it is judged again once per interval, and at the
 * next tick after a fiber becomes ready. A parallel loop's leaf is such a loop: its parents wait for it
 * or for leaves on other workers, and the unstarted halves in the deque are the loop's own work (the
 * leaf's fiber has in_loop set), which other workers steal as soon as they are free.
 */
static void check_stuck(int64_t now)
{
    for (int i = 0; i < rt->nworkers; i++) {
        weft__worker *w = rt->workers[i];
        struct look *l = &mon.looks[i];
        weft__tsan_internal_begin(); /* the worker's thread record: runtime state, as the workers see it */
        uint64_t s = atomic_load_explicit(&w->nswitch, memory_order_relaxed);
        _Atomic uint32_t *dp = atomic_load_explicit(&w->m->depth, memory_order_acquire);
        uint32_t depth = dp ? atomic_load_explicit(dp, memory_order_acquire) : 1; /* not started: not stuck */
        weft__tsan_internal_end();
        /* a switch, runtime code now, or an entry into the runtime since the last look (a fiber that
         * spawns in a loop, say): not stuck */
        if (s != l->seen_switch || depth != l->seen_depth || WEFT__DEPTH(depth) != 0) {
            *l = (struct look){.seen_switch = s, .seen_depth = depth, .seen_at = now, .cpu_at = -1,
                               .next_at = now + mon.stuck_ns};
            continue;
        }
        if (l->cpu_at < 0)
            l->cpu_at = thread_cpu_ns(w); /* the first look at this stretch of user code */
        if (now < l->next_at && !(l->calm && ready_waits(w, now, !l->in_loop)))
            continue;
        int64_t ran = now - l->seen_at;
        int kind = stuck_kind(w, l, ran);
        if (kind == NOT_STUCK)
            continue;
        /* stuck_kind takes a while: the fiber may have switched out meanwhile, and w->face.cur be another
         * fiber or the idle loop. Then nothing is stuck; and the idle context lives in its thread's
         * record, which the thread frees when it ends, so it must not be read further. (The idle loop
         * never runs user code: seeing it is always such a late look.) What the warning says about the
         * fiber is read now: after a take-over its thread may end at any time. Hidden from TSan like
         * the rest of the worker's state: the ordering with that free goes through runtime sync it
         * does not see */
        char label[64] = "";
        weft__tsan_internal_begin();
        weft__fiber *f = w->face.cur;
        bool gone = f->kind == WEFT__KIND_SCHED || atomic_load_explicit(&w->nswitch, memory_order_relaxed) != s;
        l->in_loop = !gone && f->in_loop;
        if (!gone)
            weft__label(f, label, sizeof label);
        weft__tsan_internal_end();
        if (gone)
            continue;
        bool ready = ready_waits(w, now, !l->in_loop);
        l->next_at = now + mon.stuck_ns; /* once per interval, whatever happens next */
        l->calm = kind == STUCK_LOOPING && !ready;
        if (l->calm)
            continue;
        l->seen_at = now;
        l->cpu_at = -1;
        bool moved = (ready || others_resident(w)) && take_over(w, s, depth);
        warn_stuck(label, i, ran, moved);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* The loop                                                                                          */

static void *monitor_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "weft-monitor");
    int64_t tick = mon.stuck_ns ? mon.stuck_ns / 4 : TICK_MAX_NS;
    if (tick < TICK_MIN_NS)
        tick = TICK_MIN_NS;
    if (tick > TICK_MAX_NS)
        tick = TICK_MAX_NS;
    int64_t last_kick = 0;
    uint64_t polls = weft__io_polls();
    for (;;) {
        /* the futex word first, then stop: a stop that comes after this look bumps the word, so the wait
         * below returns at once (looking at stop first, a stop and its poke could both fall between the
         * two looks, and the monitor would sleep for ever) */
        uint32_t seq = atomic_load_explicit(&mon.futex, memory_order_seq_cst);
        if (atomic_load_explicit(&mon.stop, memory_order_seq_cst))
            break;
        int64_t now = weft__clock_ns();
        if (mon.stuck_ns) {
            check_stuck(now);
            if (mon.nunwarned && now - mon.last_warn >= WARN_EVERY_NS)
                warn_unwarned(); /* the limit has lifted: name the ones it kept out */
            spare_make(now);
        }
        /* every worker busy and none has looked at the poller for a whole tick: look for them. (Not
         * every tick: the fibers it wakes go through their workers' inboxes, dearer than a worker
         * polling for itself; measured 8.7 instead of 6.8 us of CPU per HTTP request.) */
        if (weft__io_waiting() > 0 && !atomic_load_explicit(&rt->poller, memory_order_relaxed) &&
            weft__io_polls() == polls)
            weft__io_poll(WEFT_NOWAIT);
        polls = weft__io_polls();
        if (now - last_kick >= KICK_EVERY_NS) {
            weft__blocking_kick();
            last_kick = now;
        }
        int64_t deadline = now + tick;
        if (atomic_load_explicit(&rt->nsleeping, memory_order_seq_cst) == rt->nworkers) {
            /* all asleep: nothing can be stuck; see whether anything can ever wake again, then sleep
             * until a worker wakes (it pokes us) */
            if (weft__deadlock_check(now))
                continue;
            atomic_store_explicit(&mon.deep, 1, memory_order_seq_cst);
            if (atomic_load_explicit(&rt->nsleeping, memory_order_seq_cst) == rt->nworkers)
                deadline = weft__deadlock_next(now);
        }
        weft__futex_wait(&mon.futex, seq, deadline);
        atomic_store_explicit(&mon.deep, 0, memory_order_relaxed);
    }
    return NULL;
}

/* After the workers started (weft__monitor_prepare came before): the monitor's thread, what the
 * deadlock check holds, and the spare thread for the first hand-off. */
int weft__monitor_start(void)
{
    int n = weft__rt_g.nworkers;
    mon.looks = calloc((size_t)n, sizeof *mon.looks);
    if (!mon.looks)
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        mon.looks[i].cpu_at = -1;
    mon.last_warn = 0;
    mon.nunwarned = 0;
    mon.spare_tried_at = 0;
    atomic_store(&mon.stop, 0);
    atomic_store(&mon.deep, 0);
    weft__deadlock_start();
    spare_make(weft__clock_ns()); /* without one the monitor tries again later */
    int r = pthread_create(&mon.thread, NULL, monitor_main, NULL);
    if (r != 0) {
        spare_discard();
        weft__deadlock_stop();
        free(mon.looks);
        mon.looks = NULL;
        return -r;
    }
    mon.running = true;
    return 0;
}

void weft__monitor_stop(void)
{
    if (!mon.running)
        return;
    atomic_store_explicit(&mon.stop, 1, memory_order_seq_cst);
    weft__monitor_poke();
    pthread_join(mon.thread, NULL);
    mon.running = false;
    warn_unwarned(); /* the last ones the limit kept out */
    spare_discard();
    weft__deadlock_stop();
    free(mon.looks);
    mon.looks = NULL;
}
