/*
 * Locks and synchronizers: mutex (exclusion, errors, deadlines, the fairness hand-off), condition
 * variable (no lost wakeups, deadlines, broadcast), semaphore (bound, arrival order), rwlock (sharing,
 * writer preference, a writer giving up), once, barrier, latch; each with fibers on several workers
 * and plain threads at once.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

/* A small generator per caller, so that fibers and threads do not share one. */
static uint32_t rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static pthread_t start_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

/* ------------------------------------------------------------------------------------------------ */
/* Mutex                                                                                             */

static weft_mutex_t mu = WEFT_MUTEX_INIT;
static long plain_counter; /* not atomic: only the mutex keeps the increments whole */
enum { MU_ROUNDS = 2000 };

static void *hammer_mutex(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    for (int i = 0; i < MU_ROUNDS; i++) {
        ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
        long v = plain_counter;
        if (rnd(&seed) % 8 == 0)
            weft_yield(); /* hold it across a switch now and then */
        plain_counter = v + 1;
        ASSERT_OK(weft_mutex_unlock(&mu));
        if (rnd(&seed) % 4 == 0)
            weft_yield();
    }
    return NULL;
}

TEST(the_mutex_excludes_fibers_on_every_worker_and_plain_threads)
{
    start_workers(2);
    enum { FIBERS = 64, THREADS = 3 };
    weft_fiber_t f[FIBERS];
    pthread_t t[THREADS];
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, hammer_mutex, (void *)(uintptr_t)i));
    for (int i = 0; i < THREADS; i++)
        t[i] = start_thread(hammer_mutex, (void *)(uintptr_t)(1000 + i));
    for (int i = 0; i < FIBERS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < THREADS; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(plain_counter, (long)(FIBERS + THREADS) * MU_ROUNDS);
    ASSERT_OK(weft_mutex_destroy(&mu));
    ASSERT_OK(weft_shutdown());
}

static void *lock_with_deadline(void *arg)
{
    int64_t ms = (int64_t)(intptr_t)arg;
    return (void *)(intptr_t)weft_mutex_lock(&mu, ms < 0 ? WEFT_FOREVER : weft_deadline_in(ms * MS));
}

TEST(mutex_misuse_and_deadlines_give_errors_and_leave_it_working)
{
    start_workers(2);
    weft_mutex_t m;
    ASSERT_OK(weft_mutex_init(&m));
    ASSERT_ERR(weft_mutex_unlock(&m), -EPERM);
    ASSERT_OK(weft_mutex_trylock(&m));
    ASSERT_ERR(weft_mutex_trylock(&m), -EBUSY);
    ASSERT_ERR(weft_mutex_lock(&m, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_mutex_destroy(&m), -EBUSY);
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_ERR(weft_mutex_lock(NULL, WEFT_FOREVER), -EINVAL);
    ASSERT_ERR(weft_mutex_unlock(NULL), -EINVAL);

    /* a waiter whose deadline passes leaves the queue: the mutex is idle afterwards */
    ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
    weft_fiber_t w[4];
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_spawn(&w[i], NULL, lock_with_deadline, (void *)(intptr_t)(10 + 10 * i)));
    for (int i = 0; i < 4; i++) {
        void *r;
        ASSERT_OK(weft_join(w[i], &r));
        ASSERT_EQ((int)(intptr_t)r, -ETIMEDOUT);
    }
    ASSERT_OK(weft_mutex_unlock(&mu));
    ASSERT_OK(weft_mutex_destroy(&mu)); /* no waiter left behind */
    /* and it still hands over to a waiter */
    ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
    weft_fiber_t x;
    ASSERT_OK(weft_spawn(&x, NULL, lock_with_deadline, (void *)(intptr_t)-1));
    WAIT_UNTIL(weft_fiber_state(x) == WEFT_WAITING);
    ASSERT_OK(weft_mutex_unlock(&mu));
    void *r;
    ASSERT_OK(weft_join(x, &r));
    ASSERT_EQ((int)(intptr_t)r, 0);
    ASSERT_OK(weft_mutex_unlock(&mu));
    ASSERT_OK(weft_shutdown());
}

/* Fairness: a fiber that takes the lock back at once every time it lets go, and switches away only
 * while it holds it (so the other fiber, on the same worker, runs only to find it held). Unlock wakes
 * the waiter to compete, but the greedy fiber is running and takes the lock first, every time; only the
 * hand-off to a waiter that has waited too long lets the other one in. */
static atomic_int other_got_it;

static void *greedy(void *arg)
{
    int64_t give_up = weft_now() + 10 * SEC; /* a bound for the failure case only */
    ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
    while (!atomic_load(&other_got_it) && weft_now() < give_up) {
        weft_yield(); /* the other fiber runs now, and finds the lock held */
        ASSERT_OK(weft_mutex_unlock(&mu));
        ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
    }
    ASSERT_OK(weft_mutex_unlock(&mu));
    return (void *)(intptr_t)atomic_load(&other_got_it);
}

static void *wants_it_once(void *arg)
{
    ASSERT_OK(weft_mutex_lock(&mu, WEFT_FOREVER));
    atomic_store(&other_got_it, 1);
    ASSERT_OK(weft_mutex_unlock(&mu));
    return NULL;
}

TEST_TIMEOUT(a_fiber_locking_in_a_tight_loop_cannot_keep_another_out, 60)
{
    start_workers(1);
    weft_fiber_t g, t;
    ASSERT_OK(weft_spawn(&g, NULL, greedy, NULL));
    ASSERT_OK(weft_spawn(&t, NULL, wants_it_once, NULL));
    void *got;
    ASSERT_OK(weft_join(g, &got));
    ASSERT_OK(weft_join(t, NULL));
    if (!got)
        FAIL("the other fiber did not get the lock in 10 s of the greedy loop");
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Condition variable                                                                                */

enum { QCAP = 16 };
static struct {
    weft_mutex_t m;
    weft_cond_t not_empty, not_full;
    long items[QCAP];
    int head, len;
    int closed;
} bq = {WEFT_MUTEX_INIT, WEFT_COND_INIT, WEFT_COND_INIT, {0}, 0, 0, 0};
static atomic_long consumed_sum, consumed_n;

static void *produce(void *arg)
{
    long base = (long)(intptr_t)arg * 100000;
    for (long i = 1; i <= 1000; i++) {
        ASSERT_OK(weft_mutex_lock(&bq.m, WEFT_FOREVER));
        while (bq.len == QCAP)
            ASSERT_OK(weft_cond_wait(&bq.not_full, &bq.m, WEFT_FOREVER));
        bq.items[(bq.head + bq.len++) % QCAP] = base + i;
        ASSERT_OK(weft_cond_signal(&bq.not_empty));
        ASSERT_OK(weft_mutex_unlock(&bq.m));
    }
    return NULL;
}

static void *consume(void *arg)
{
    for (;;) {
        ASSERT_OK(weft_mutex_lock(&bq.m, WEFT_FOREVER));
        while (bq.len == 0 && !bq.closed)
            ASSERT_OK(weft_cond_wait(&bq.not_empty, &bq.m, WEFT_FOREVER));
        if (bq.len == 0) {
            ASSERT_OK(weft_mutex_unlock(&bq.m));
            return NULL;
        }
        long v = bq.items[bq.head];
        bq.head = (bq.head + 1) % QCAP;
        bq.len--;
        ASSERT_OK(weft_cond_signal(&bq.not_full));
        ASSERT_OK(weft_mutex_unlock(&bq.m));
        atomic_fetch_add(&consumed_sum, v);
        atomic_fetch_add(&consumed_n, 1);
    }
}

TEST(a_bounded_queue_on_two_conditions_loses_and_duplicates_nothing)
{
    start_workers(2);
    enum { PF = 6, PT = 2, CF = 5, CT = 2 };
    weft_fiber_t pf[PF], cf[CF];
    pthread_t pt[PT], ct[CT];
    for (int i = 0; i < CF; i++)
        ASSERT_OK(weft_spawn(&cf[i], NULL, consume, NULL));
    for (int i = 0; i < CT; i++)
        ct[i] = start_thread(consume, NULL);
    for (int i = 0; i < PF; i++)
        ASSERT_OK(weft_spawn(&pf[i], NULL, produce, (void *)(intptr_t)i));
    for (int i = 0; i < PT; i++)
        pt[i] = start_thread(produce, (void *)(intptr_t)(PF + i));
    for (int i = 0; i < PF; i++)
        ASSERT_OK(weft_join(pf[i], NULL));
    for (int i = 0; i < PT; i++)
        ASSERT_EQ(pthread_join(pt[i], NULL), 0);
    ASSERT_OK(weft_mutex_lock(&bq.m, WEFT_FOREVER));
    bq.closed = 1;
    ASSERT_OK(weft_cond_broadcast(&bq.not_empty));
    ASSERT_OK(weft_mutex_unlock(&bq.m));
    for (int i = 0; i < CF; i++)
        ASSERT_OK(weft_join(cf[i], NULL));
    for (int i = 0; i < CT; i++)
        ASSERT_EQ(pthread_join(ct[i], NULL), 0);
    long want = 0;
    for (long p = 0; p < PF + PT; p++)
        want += p * 100000 * 1000 + 1000 * 1001 / 2;
    ASSERT_EQ(atomic_load(&consumed_n), (long)(PF + PT) * 1000);
    ASSERT_EQ(atomic_load(&consumed_sum), want);
    ASSERT_OK(weft_cond_destroy(&bq.not_empty));
    ASSERT_OK(weft_cond_destroy(&bq.not_full));
    ASSERT_OK(weft_shutdown());
}

/* Ping-pong through one condition variable and a turn variable: a lost wakeup hangs it. */
static weft_mutex_t pp_m = WEFT_MUTEX_INIT;
static weft_cond_t pp_c = WEFT_COND_INIT;
static int pp_turn;
enum { PP_ROUNDS = 20000 };

static void *pingpong(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint32_t seed = (uint32_t)me + 7;
    for (int i = 0; i < PP_ROUNDS; i++) {
        ASSERT_OK(weft_mutex_lock(&pp_m, WEFT_FOREVER));
        while (pp_turn != me)
            ASSERT_OK(weft_cond_wait(&pp_c, &pp_m, WEFT_FOREVER));
        pp_turn = 1 - me;
        ASSERT_OK(weft_cond_signal(&pp_c));
        ASSERT_OK(weft_mutex_unlock(&pp_m));
        if (rnd(&seed) % 3 == 0)
            weft_yield();
    }
    return NULL;
}

TEST(signals_are_never_lost_between_a_fiber_and_a_thread_or_two_fibers)
{
    start_workers(2);
    weft_fiber_t a, b;
    ASSERT_OK(weft_spawn(&a, NULL, pingpong, (void *)0));
    ASSERT_OK(weft_spawn(&b, NULL, pingpong, (void *)1));
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_OK(weft_join(b, NULL));
    pp_turn = 0;
    ASSERT_OK(weft_spawn(&a, NULL, pingpong, (void *)0));
    pthread_t t = start_thread(pingpong, (void *)1);
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_OK(weft_shutdown());
}

static atomic_int cond_woken;

static void *wait_for_broadcast(void *arg)
{
    ASSERT_OK(weft_mutex_lock(&pp_m, WEFT_FOREVER));
    while (!pp_turn)
        ASSERT_OK(weft_cond_wait(&pp_c, &pp_m, WEFT_FOREVER));
    atomic_fetch_add(&cond_woken, 1);
    ASSERT_OK(weft_mutex_unlock(&pp_m));
    return NULL;
}

TEST(a_cond_wait_times_out_holding_the_mutex_and_broadcast_wakes_all)
{
    start_workers(2);
    weft_mutex_t m = WEFT_MUTEX_INIT;
    weft_cond_t c = WEFT_COND_INIT;
    ASSERT_OK(weft_mutex_lock(&m, WEFT_FOREVER));
    ASSERT_ERR(weft_cond_wait(&c, &m, weft_deadline_in(20 * MS)), -ETIMEDOUT);
    ASSERT_ERR(weft_mutex_trylock(&m), -EBUSY); /* held again */
    ASSERT_ERR(weft_cond_wait(&c, &m, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_ERR(weft_cond_wait(&c, &m, WEFT_FOREVER), -EPERM); /* the caller must hold the mutex */
    ASSERT_OK(weft_cond_destroy(&c));
    ASSERT_OK(weft_cond_signal(&c)); /* nobody waits: nothing happens */

    enum { N = 40 };
    weft_fiber_t f[N];
    pthread_t t[2];
    pp_turn = 0;
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, wait_for_broadcast, NULL));
    for (int i = 0; i < 2; i++)
        t[i] = start_thread(wait_for_broadcast, NULL);
    for (int i = 0; i < N; i++)
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING);
    ASSERT_ERR(weft_cond_destroy(&pp_c), -EBUSY);
    ASSERT_OK(weft_mutex_lock(&pp_m, WEFT_FOREVER));
    pp_turn = 1;
    ASSERT_OK(weft_cond_broadcast(&pp_c));
    ASSERT_OK(weft_mutex_unlock(&pp_m));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(atomic_load(&cond_woken), N + 2);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Semaphore                                                                                         */

static weft_sem_t sem;
static atomic_int inside, most_inside;

static void *use_a_permit(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg + 1;
    for (int i = 0; i < 200; i++) {
        ASSERT_OK(weft_sem_acquire(&sem, WEFT_FOREVER));
        int now = atomic_fetch_add(&inside, 1) + 1;
        int m = atomic_load(&most_inside);
        while (now > m && !atomic_compare_exchange_weak(&most_inside, &m, now))
            ;
        if (rnd(&seed) % 2)
            weft_yield();
        atomic_fetch_sub(&inside, 1);
        ASSERT_OK(weft_sem_release(&sem, 1));
    }
    return NULL;
}

TEST(a_semaphore_lets_no_more_than_its_permits_in)
{
    start_workers(2);
    ASSERT_OK(weft_sem_init(&sem, 3));
    enum { N = 50 };
    weft_fiber_t f[N];
    pthread_t t[2];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, use_a_permit, (void *)(uintptr_t)i));
    for (int i = 0; i < 2; i++)
        t[i] = start_thread(use_a_permit, (void *)(uintptr_t)(100 + i));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_LE(atomic_load(&most_inside), 3);
    ASSERT_GE(atomic_load(&most_inside), 1);
    ASSERT_EQ(weft_sem_value(&sem), 3); /* every permit came back */
    ASSERT_OK(weft_sem_destroy(&sem));
    ASSERT_OK(weft_shutdown());
}

static int order[8];
static atomic_int norder;

static void *acquire_and_note(void *arg)
{
    ASSERT_OK(weft_sem_acquire(&sem, WEFT_FOREVER));
    order[atomic_fetch_add(&norder, 1)] = (int)(intptr_t)arg;
    return NULL;
}

TEST(semaphore_permits_go_to_waiters_in_arrival_order_and_errors_are_named)
{
    start_workers(1);
    ASSERT_ERR(weft_sem_init(&sem, -1), -EINVAL);
    ASSERT_OK(weft_sem_init(&sem, 0));
    ASSERT_ERR(weft_sem_acquire(&sem, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_sem_acquire(&sem, weft_deadline_in(5 * MS)), -ETIMEDOUT);
    ASSERT_ERR(weft_sem_release(&sem, 0), -EINVAL);
    weft_fiber_t f[8];
    for (int i = 0; i < 8; i++) {
        ASSERT_OK(weft_spawn(&f[i], NULL, acquire_and_note, (void *)(intptr_t)i));
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING); /* queued in this order */
    }
    ASSERT_ERR(weft_sem_destroy(&sem), -EBUSY);
    ASSERT_OK(weft_sem_release(&sem, 3));
    ASSERT_OK(weft_sem_release(&sem, 6)); /* 5 waiters left: one permit is left free */
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(order[i], i);
    ASSERT_EQ(weft_sem_value(&sem), 1);
    ASSERT_OK(weft_sem_acquire(&sem, WEFT_NOWAIT));
    ASSERT_OK(weft_sem_release(&sem, (int64_t)(UINT64_MAX >> 2)));
    ASSERT_ERR(weft_sem_release(&sem, 1), -EOVERFLOW);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Reader-writer lock                                                                                */

static weft_rwlock_t rw = WEFT_RWLOCK_INIT;
static atomic_int readers_in, writers_in, most_readers;
static long rw_value; /* written under the write lock only */

static void *rw_user(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg * 7919 + 3;
    for (int i = 0; i < 500; i++) {
        if (rnd(&seed) % 4 == 0) {
            ASSERT_OK(weft_rwlock_wrlock(&rw, WEFT_FOREVER));
            ASSERT_EQ(atomic_fetch_add(&writers_in, 1), 0);
            ASSERT_EQ(atomic_load(&readers_in), 0);
            rw_value++;
            if (rnd(&seed) % 4 == 0)
                weft_yield();
            atomic_fetch_sub(&writers_in, 1);
        } else {
            ASSERT_OK(weft_rwlock_rdlock(&rw, WEFT_FOREVER));
            int n = atomic_fetch_add(&readers_in, 1) + 1;
            int m = atomic_load(&most_readers);
            while (n > m && !atomic_compare_exchange_weak(&most_readers, &m, n))
                ;
            ASSERT_EQ(atomic_load(&writers_in), 0);
            (void)rw_value;
            weft_yield();
            atomic_fetch_sub(&readers_in, 1);
        }
        ASSERT_OK(weft_rwlock_unlock(&rw));
    }
    return NULL;
}

TEST(readers_share_and_writers_exclude)
{
    start_workers(2);
    enum { N = 40 };
    weft_fiber_t f[N];
    pthread_t t[2];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, rw_user, (void *)(uintptr_t)i));
    for (int i = 0; i < 2; i++)
        t[i] = start_thread(rw_user, (void *)(uintptr_t)(100 + i));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_GE(atomic_load(&most_readers), 2); /* readers did share (each yields while it reads) */
    ASSERT_OK(weft_rwlock_destroy(&rw));
    ASSERT_OK(weft_shutdown());
}

static void *rd_with(void *arg)
{
    int64_t ms = (int64_t)(intptr_t)arg;
    int r = weft_rwlock_rdlock(&rw, ms < 0 ? WEFT_FOREVER : weft_deadline_in(ms * MS));
    if (r == 0)
        ASSERT_OK(weft_rwlock_unlock(&rw));
    return (void *)(intptr_t)r;
}

static void *wr_with(void *arg)
{
    int64_t ms = (int64_t)(intptr_t)arg;
    int r = weft_rwlock_wrlock(&rw, ms < 0 ? WEFT_FOREVER : weft_deadline_in(ms * MS));
    if (r == 0)
        ASSERT_OK(weft_rwlock_unlock(&rw));
    return (void *)(intptr_t)r;
}

TEST(a_waiting_writer_keeps_new_readers_out_and_one_that_gives_up_lets_them_in)
{
    start_workers(2);
    ASSERT_ERR(weft_rwlock_unlock(&rw), -EPERM);
    ASSERT_OK(weft_rwlock_rdlock(&rw, WEFT_FOREVER)); /* we read */
    weft_fiber_t w, r2;
    ASSERT_OK(weft_spawn(&w, NULL, wr_with, (void *)(intptr_t)-1));
    WAIT_UNTIL(weft_fiber_state(w) == WEFT_WAITING);
    ASSERT_ERR(weft_rwlock_rdlock(&rw, WEFT_NOWAIT), -ETIMEDOUT); /* the writer is ahead */
    ASSERT_ERR(weft_rwlock_destroy(&rw), -EBUSY);
    ASSERT_OK(weft_rwlock_unlock(&rw));
    void *res;
    ASSERT_OK(weft_join(w, &res));
    ASSERT_EQ((int)(intptr_t)res, 0);

    /* a writer that gives up must not leave the readers queued behind it waiting */
    ASSERT_OK(weft_rwlock_rdlock(&rw, WEFT_FOREVER));
    ASSERT_OK(weft_spawn(&w, NULL, wr_with, (void *)(intptr_t)50));
    WAIT_UNTIL(weft_fiber_state(w) == WEFT_WAITING);
    ASSERT_OK(weft_spawn(&r2, NULL, rd_with, (void *)(intptr_t)-1));
    WAIT_UNTIL(weft_fiber_state(r2) == WEFT_WAITING);
    ASSERT_OK(weft_join(w, &res));
    ASSERT_EQ((int)(intptr_t)res, -ETIMEDOUT);
    ASSERT_OK(weft_join(r2, &res)); /* got in beside our read hold, which we still have */
    ASSERT_EQ((int)(intptr_t)res, 0);
    ASSERT_OK(weft_rwlock_unlock(&rw));

    /* a writer holds it: readers and writers wait, and get it in arrival order once it is free */
    ASSERT_OK(weft_rwlock_wrlock(&rw, WEFT_FOREVER));
    ASSERT_ERR(weft_rwlock_wrlock(&rw, weft_deadline_in(5 * MS)), -ETIMEDOUT);
    ASSERT_ERR(weft_rwlock_rdlock(&rw, WEFT_NOWAIT), -ETIMEDOUT);
    weft_fiber_t q[6];
    for (int i = 0; i < 6; i++) {
        ASSERT_OK(weft_spawn(&q[i], NULL, i % 3 == 2 ? wr_with : rd_with, (void *)(intptr_t)-1));
        WAIT_UNTIL(weft_fiber_state(q[i]) == WEFT_WAITING);
    }
    ASSERT_OK(weft_rwlock_unlock(&rw));
    for (int i = 0; i < 6; i++) {
        ASSERT_OK(weft_join(q[i], &res));
        ASSERT_EQ((int)(intptr_t)res, 0);
    }
    ASSERT_OK(weft_rwlock_destroy(&rw));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Once                                                                                              */

static weft_once_t once = WEFT_ONCE_INIT;
static atomic_int once_runs, once_done;

static void init_slowly(void *arg)
{
    atomic_fetch_add(&once_runs, 1);
    weft_sleep(20 * MS); /* parks: the others must wait for it, not run it again */
    atomic_store(&once_done, 1);
}

static void *call_once(void *arg)
{
    ASSERT_OK(weft_once(&once, init_slowly, NULL));
    ASSERT_EQ(atomic_load(&once_done), 1); /* nobody returns before fn has */
    return NULL;
}

static void init_recursively(void *arg)
{
    atomic_store((atomic_int *)arg, weft_once(&once, init_recursively, arg));
}

TEST(once_runs_the_initialiser_exactly_once_and_everyone_waits_for_it)
{
    start_workers(2);
    enum { N = 100 };
    weft_fiber_t f[N];
    pthread_t t[3];
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, call_once, NULL));
    for (int i = 0; i < 3; i++)
        t[i] = start_thread(call_once, NULL);
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(atomic_load(&once_runs), 1);
    ASSERT_OK(call_once(NULL) == NULL ? 0 : -1);

    /* fn asking for its own once: an error, not a hang */
    memset(&once, 0, sizeof once);
    atomic_int inner = 1;
    ASSERT_OK(weft_once(&once, init_recursively, &inner));
    ASSERT_EQ(atomic_load(&inner), -EDEADLK);
    ASSERT_ERR(weft_once(&once, NULL, NULL), -EINVAL);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Barrier and latch                                                                                 */

enum { PARTIES = 12, ROUNDS = 200 };
static weft_barrier_t bar;
static atomic_int arrived[ROUNDS], serials[ROUNDS];

static void *barrier_rounds(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg + 11;
    for (int r = 0; r < ROUNDS; r++) {
        if (rnd(&seed) % 3 == 0)
            weft_yield();
        atomic_fetch_add(&arrived[r], 1);
        int s = weft_barrier_wait(&bar, WEFT_FOREVER);
        ASSERT(s == 0 || s == WEFT_BARRIER_SERIAL);
        if (s == WEFT_BARRIER_SERIAL)
            atomic_fetch_add(&serials[r], 1);
        ASSERT_EQ(atomic_load(&arrived[r]), PARTIES); /* nobody leaves a round before all came */
    }
    return NULL;
}

TEST(a_barrier_holds_each_round_until_all_arrive_and_names_one_serial)
{
    start_workers(2);
    ASSERT_ERR(weft_barrier_init(&bar, 0), -EINVAL);
    ASSERT_OK(weft_barrier_init(&bar, PARTIES));
    weft_fiber_t f[PARTIES - 2];
    pthread_t t[2];
    for (int i = 0; i < PARTIES - 2; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, barrier_rounds, (void *)(uintptr_t)i));
    for (int i = 0; i < 2; i++)
        t[i] = start_thread(barrier_rounds, (void *)(uintptr_t)(50 + i));
    for (int i = 0; i < PARTIES - 2; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    for (int r = 0; r < ROUNDS; r++)
        ASSERT_EQ(atomic_load(&serials[r]), 1);
    ASSERT_OK(weft_barrier_destroy(&bar));
    ASSERT_OK(weft_shutdown());
}

static void *barrier_wait_ms(void *arg)
{
    int64_t ms = (int64_t)(intptr_t)arg;
    return (void *)(intptr_t)weft_barrier_wait(&bar, ms < 0 ? WEFT_FOREVER : weft_deadline_in(ms * MS));
}

TEST(a_barrier_waiter_that_gives_up_withdraws_its_arrival)
{
    start_workers(2);
    ASSERT_OK(weft_barrier_init(&bar, 2));
    ASSERT_ERR(weft_barrier_wait(&bar, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_barrier_wait(&bar, weft_deadline_in(10 * MS)), -ETIMEDOUT);
    ASSERT_OK(weft_barrier_destroy(&bar)); /* nobody counted as arrived */
    /* so a round still needs two */
    weft_fiber_t a;
    ASSERT_OK(weft_spawn(&a, NULL, barrier_wait_ms, (void *)(intptr_t)-1));
    WAIT_UNTIL(weft_fiber_state(a) == WEFT_WAITING);
    ASSERT_ERR(weft_barrier_destroy(&bar), -EBUSY);
    int s = weft_barrier_wait(&bar, WEFT_FOREVER);
    void *r;
    ASSERT_OK(weft_join(a, &r));
    ASSERT_EQ(s, WEFT_BARRIER_SERIAL);
    ASSERT_EQ((int)(intptr_t)r, 0);
    ASSERT_OK(weft_shutdown());
}

static weft_latch_t latch;

static void *count_down_once(void *arg)
{
    weft_yield();
    ASSERT_OK(weft_latch_count_down(&latch, 1));
    return NULL;
}

static void *wait_latch(void *arg)
{
    ASSERT_OK(weft_latch_wait(&latch, WEFT_FOREVER));
    ASSERT_EQ(weft_latch_done(&latch), 1);
    return NULL;
}

TEST(a_latch_opens_at_zero_and_stays_open)
{
    start_workers(2);
    enum { N = 30 };
    ASSERT_ERR(weft_latch_init(&latch, -1), -EINVAL);
    ASSERT_OK(weft_latch_init(&latch, N));
    ASSERT_EQ(weft_latch_done(&latch), 0);
    ASSERT_ERR(weft_latch_wait(&latch, weft_deadline_in(5 * MS)), -ETIMEDOUT);
    ASSERT_ERR(weft_latch_count_down(&latch, N + 1), -EINVAL); /* below zero: refused, count kept */
    ASSERT_ERR(weft_latch_count_down(&latch, 0), -EINVAL);
    weft_fiber_t w[5], d[N];
    for (int i = 0; i < 5; i++)
        ASSERT_OK(weft_spawn(&w[i], NULL, wait_latch, NULL));
    pthread_t t = start_thread(wait_latch, NULL);
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_spawn(&d[i], NULL, count_down_once, NULL));
    for (int i = 0; i < N; i++)
        ASSERT_OK(weft_join(d[i], NULL));
    for (int i = 0; i < 5; i++)
        ASSERT_OK(weft_join(w[i], NULL));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_OK(weft_latch_wait(&latch, WEFT_NOWAIT));
    ASSERT_ERR(weft_latch_count_down(&latch, 1), -EINVAL);
    ASSERT_OK(weft_latch_destroy(&latch));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Without a runtime                                                                                 */

TEST(locks_and_conditions_work_between_plain_threads_with_no_runtime)
{
    /* no weft_start: the waits sleep on futexes */
    pp_turn = 0;
    pthread_t a = start_thread(pingpong, (void *)0), b = start_thread(pingpong, (void *)1);
    ASSERT_EQ(pthread_join(a, NULL), 0);
    ASSERT_EQ(pthread_join(b, NULL), 0);
    ASSERT_OK(weft_sem_init(&sem, 3));
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = start_thread(use_a_permit, (void *)(uintptr_t)i);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_LE(atomic_load(&most_inside), 3);
    ASSERT_EQ(weft_sem_value(&sem), 3);
    ASSERT_EQ(weft_workers(), 0); /* and nothing started one */
}
