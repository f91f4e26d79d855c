/*
 * The blocking-call pool: weft_blocking runs a function that may block (a regular file's read, a DNS
 * lookup, any library call that sleeps in the kernel) on a kernel thread of its own, while the calling
 * fiber parks and its worker runs other fibers.
 *
 * Elastic, like Go's extra Ms and Tokio's blocking pool: a call that finds no idle pool thread starts one,
 * up to a bound (weft_config_t.blocking_threads, WEFT_BLOCKING_THREADS, default 256); past the bound, or
 * when the system refuses a new thread (its thread limit), calls wait in a FIFO queue for a thread to free
 * up: they queue, they never fail for lack of a thread. A thread idle for 10 s ends.
 *
 * Idle threads are claimed, as in Tokio's pool: a call that finds an idle thread takes it off the idle
 * count (nidle) before it signals, so that a burst of calls wakes one idle thread each and makes threads
 * for the rest, instead of every call counting on the same few idle threads while they wake. Every
 * queued call has a thread on its way, then: a claimed idle thread (nwake), one being made (nstarting),
 * or, past the bound, a running one that will free up.
 *
 * The system's thread limit: when it refuses a thread (pthread_create fails, EAGAIN), the call queues as
 * if past the bound, and the pool is "starved". A starved pool may have no thread at all, and then
 * nothing else in the runtime would ever make one (every worker may sleep). So while it is starved, the
 * queued calls themselves try again: each parks with a timer, and the first to wake after the back-off
 * (1 ms, doubling up to 100 ms, for the whole pool) tries to make threads for every queued call that has
 * none coming. The first thread made ends the starvation. The monitor kicks the pool too (every 100 ms
 * while it is awake).
 *
 * The caller waits through the one waiter (core/wait.h): its call is a node in the pool's queue, a pool
 * thread that takes it wins the wait's claim (from then on the call happens), and the thread stores
 * `done` when the function has returned. Cancellation: a call whose deadline passes (or whose fiber is
 * cancelled) while it is still queued calls its wait off, under bpool.lock, and never runs. One that is
 * running finishes (a thread cannot be stopped safely in the middle of a function, and the function may
 * use its caller's stack): the caller waits for it, parked again, since that may take long.
 *
 * A call from a thread that is not a fiber runs the function right there: it is a kernel thread already.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/park.h"
#include "core/wait.h"
#include "io/io.h"
#include "obs/sanitize.h"

#define DEFAULT_MAX_THREADS 256
#define IDLE_EXIT_NS ((int64_t)10 * 1000000000)
#define RETRY_MIN_NS ((int64_t)1000000)   /* first retry after the system refused a thread */
#define RETRY_MAX_NS ((int64_t)100000000) /* the back-off doubles up to this */

/* A call, on its caller's stack. */
typedef struct job {
    weft__wait w;  /* claimed (under bpool.lock) by the pool thread that takes the call; done once it returned */
    weft__wnode n; /* in the queue while no thread has it; n.elem is the job */
    weft_fn fn;
    void *arg;
    void *result;  /* written before done */
} job;

/* Every field under bpool.lock. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* idle pool threads wait here */
    weft__wlist queue;       /* queued calls, FIFO */
    int nthreads, max;       /* threads alive or being made; the bound */
    int nidle;               /* idle threads nobody has claimed */
    int nwake;               /* idle threads claimed by a call, not yet awake */
    int nstarting;           /* threads being made, not yet looking at the queue */
    int64_t nqueued;         /* calls in the queue */
    int64_t busy;            /* queued + running */
    bool starved;            /* the last try to make a thread failed */
    int64_t retry_ns;        /* the back-off while starved ... */
    int64_t retry_at;        /* ... and when to try again */
} bpool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .max = DEFAULT_MAX_THREADS};

static pthread_once_t cond_once = PTHREAD_ONCE_INIT;

static void cond_init(void)
{
    /* idle threads time out on the monotonic clock */
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_destroy(&bpool.cond);
    pthread_cond_init(&bpool.cond, &a);
    pthread_condattr_destroy(&a);
}

void weft__blocking_configure(int max_threads)
{
    pthread_mutex_lock(&bpool.lock);
    bpool.max = max_threads > 0 ? max_threads : DEFAULT_MAX_THREADS;
    pthread_mutex_unlock(&bpool.lock);
}

int64_t weft__blocking_idle(void)
{
    pthread_mutex_lock(&bpool.lock);
    int64_t n = bpool.nidle + bpool.nwake; /* claimed ones sleep until they wake */
    pthread_mutex_unlock(&bpool.lock);
    return n;
}

int64_t weft__blocking_busy(void)
{
    pthread_mutex_lock(&bpool.lock);
    int64_t n = bpool.busy;
    pthread_mutex_unlock(&bpool.lock);
    return n;
}

static void unlink_job(job *j)
{
    weft__wlist_remove(&bpool.queue, &j->n);
    bpool.nqueued--;
}

static void *pool_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&bpool.lock);
    bpool.nstarting--;
    for (;;) {
        if (weft__wlist_empty(&bpool.queue)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += IDLE_EXIT_NS / 1000000000;
            bpool.nidle++;
            int r = 0;
            while (bpool.nwake == 0 && r != ETIMEDOUT)
                r = pthread_cond_timedwait(&bpool.cond, &bpool.lock, &ts);
            if (bpool.nwake > 0) {
                bpool.nwake--; /* claimed: the caller took us off nidle (its call may be gone: look again) */
                continue;
            }
            bpool.nidle--;
            if (weft__wlist_empty(&bpool.queue))
                break; /* idle for too long */
        }
        job *j = bpool.queue.head->elem;
        unlink_job(j);
        weft__wnode_claim(&j->n); /* the call happens now: its caller cannot call it off any more */
        pthread_mutex_unlock(&bpool.lock);

        void *res = j->fn(j->arg);

        pthread_mutex_lock(&bpool.lock);
        j->result = res;
        bpool.busy--;
        weft__tsan_release(j); /* the call happens before its caller goes on */
        /* under the lock, where a caller that stopped waiting re-arms its token; after done the job
         * (on the caller's stack) may be gone: k holds copies */
        weft__wakeup k = weft__wait_finish(&j->w);
        pthread_mutex_unlock(&bpool.lock);
        weft__wakeup_run(k, true);
        pthread_mutex_lock(&bpool.lock);
    }
    bpool.nthreads--;
    pthread_mutex_unlock(&bpool.lock);
    return NULL;
}

/* Give every queued call that has no thread on its way one: wake an idle thread, else make one (up to
 * the bound; while starved, not before the back-off says). Under bpool.lock; drops and retakes it. */
static void cover_queue(void)
{
    while (bpool.nqueued > bpool.nwake + bpool.nstarting) {
        if (bpool.nidle > 0) {
            bpool.nidle--;
            bpool.nwake++;
            pthread_cond_signal(&bpool.cond);
            continue;
        }
        if (bpool.nthreads >= bpool.max)
            break; /* the running threads take them as they free up */
        if (bpool.starved && weft__clock_ns() < bpool.retry_at)
            return; /* still starved: a queued call tries again at retry_at */
        bpool.nthreads++;
        bpool.nstarting++;
        pthread_mutex_unlock(&bpool.lock);
        pthread_attr_t a;
        pthread_t t;
        int r = pthread_attr_init(&a);
        if (r == 0) {
            pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
            r = pthread_create(&t, &a, pool_main, NULL);
            pthread_attr_destroy(&a);
        }
        pthread_mutex_lock(&bpool.lock);
        if (r != 0) {
            /* out of threads: the calls wait for one that frees up; the queued ones try again later */
            bpool.nthreads--;
            bpool.nstarting--;
            bpool.retry_ns = bpool.starved ? bpool.retry_ns * 2 : RETRY_MIN_NS;
            if (bpool.retry_ns > RETRY_MAX_NS)
                bpool.retry_ns = RETRY_MAX_NS;
            bpool.retry_at = weft__clock_ns() + bpool.retry_ns;
            bpool.starved = true;
            return;
        }
        bpool.starved = false;
    }
    bpool.starved = false; /* no call waits for a thread that the system refused */
}

void weft__blocking_kick(void)
{
    pthread_mutex_lock(&bpool.lock);
    cover_queue();
    pthread_mutex_unlock(&bpool.lock);
}

/* How long a queued call parks: until its deadline, or, while the pool is starved, until the next try
 * to make a thread, if that comes first. Under bpool.lock. */
static int64_t park_until(int64_t deadline)
{
    if (!bpool.starved || deadline == WEFT_NOWAIT || (deadline > 0 && deadline <= bpool.retry_at))
        return deadline;
    return bpool.retry_at;
}

int weft_blocking_until(weft_fn fn, void *arg, void **result, int64_t deadline)
{
    if (!fn)
        return -EINVAL;
    weft__fiber *self = weft__self_if_any();
    if (!self || self->kind != WEFT__KIND_FIBER) {
        void *r = fn(arg); /* a thread of its own already */
        if (result)
            *result = r;
        return 0;
    }
    pthread_once(&cond_once, cond_init);
    job j = {.fn = fn, .arg = arg};
    pthread_mutex_lock(&bpool.lock);
    weft__wait_begin(&j.w, self, WEFT__WAIT_BLOCKING, &j);
    j.w.solo = true; /* called off only under bpool.lock */
    weft__wnode_init(&j.n, &j.w, 0);
    j.n.elem = &j;
    weft__wlist_push(&bpool.queue, &j.n);
    bpool.nqueued++;
    bpool.busy++;
    cover_queue();
    int64_t until = park_until(deadline);
    pthread_mutex_unlock(&bpool.lock);

    int r = weft__park(self, j.w.tok, until);
    while (r != 0) {
        pthread_mutex_lock(&bpool.lock);
        bool queued = weft__wait_claimed(&j.w) == WEFT__CLAIM_NONE;
        if (queued && r == -ETIMEDOUT && until != deadline) {
            /* not our deadline: the time to try again to make a thread, for us and the calls behind.
             * Waiting again before cover_queue drops the lock: a thread it makes may run our call and
             * wake us at once, and must find the new token */
            j.w.tok = weft__park_prepare(self, WEFT__WAIT_BLOCKING, &j);
            cover_queue();
            until = park_until(deadline);
            pthread_mutex_unlock(&bpool.lock);
            r = weft__park(self, j.w.tok, until);
            continue;
        }
        /* the deadline passed or the wait was cancelled: take the call back if it has not started */
        if (weft__wait_call_off_locked(&j.w)) {
            unlink_job(&j);
            bpool.busy--;
            pthread_mutex_unlock(&bpool.lock);
            return r;
        }
        if (atomic_load_explicit(&j.w.done, memory_order_relaxed)) {
            pthread_mutex_unlock(&bpool.lock);
            break;
        }
        /* running: it must finish (it may use our stack); wait for it, without a deadline now */
        j.w.tok = weft__park_prepare(self, WEFT__WAIT_BLOCKING, &j);
        pthread_mutex_unlock(&bpool.lock);
        r = weft__park_uncancellable(self, j.w.tok, WEFT_FOREVER);
    }
    weft__wait_settle(&j.w);
    weft__tsan_acquire(&j);
    if (result)
        *result = j.result;
    return 0;
}

int weft_blocking(weft_fn fn, void *arg, void **result)
{
    return weft_blocking_until(fn, arg, result, WEFT_FOREVER);
}
