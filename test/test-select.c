/*
 * weft_select_any: one wait for the first of any mix of channel sends and receives, fds readable or
 * writable, fibers finishing (joined), wait groups, latches, semaphore permits and mutexes.
 * Each kind alone (ready at once, ready later, never ready), exactly-once (a case not chosen takes
 * nothing, also when its waker races the chosen one), fairness over kinds at 10 sigma, deadlines and
 * cancels in every mix leaving every object usable, wakers on plain threads and weft threads, the select
 * called from plain threads, bad cases, more than 16 cases, one object in several cases, and a stress
 * test whose totals must balance exactly.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static void pause_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static weft_chan_t *mk(size_t cap)
{
    weft_chan_t *c = NULL;
    ASSERT_OK(weft_chan_new(&c, sizeof(long), cap));
    return c;
}

static void mkpipe(int p[2])
{
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
}

/* Run fn(arg) in a fiber and wait for it (the tests' selects run in fibers unless they say). */
static void in_fiber(void *(*fn)(void *), void *arg)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, fn, arg));
    ASSERT_OK(weft_join(f, NULL));
}

static void *return_7(void *arg)
{
    (void)arg;
    return (void *)7;
}

static void *sleep_then_return_9(void *arg)
{
    weft_sleep((int64_t)(intptr_t)arg * MS);
    return (void *)9;
}

/* A fiber that has finished, not yet joined. */
static weft_fiber_t finished_fiber(void)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, return_7, NULL));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_DONE);
    return f;
}

/* ------------------------------------------------------------------------------------------------ */
/* Each kind alone                                                                                   */

enum { K_RECV, K_SEND, K_FD_READ, K_FD_WRITE, K_JOIN, K_WG, K_LATCH, K_SEM, K_LOCK, KINDS };
static const char *const kind_name[KINDS] = {"recv", "send", "fd read", "fd write", "join",
                                             "wg", "latch", "sem", "lock"};

/* One object of each kind, and a case for it. */
typedef struct {
    weft_chan_t *rc, *sc; /* rc: something to receive; sc: room to send */
    int rp[2], wp[2];     /* rp: a pipe with data in it; wp: a pipe with room */
    weft_fiber_t fib;
    void *joined;
    weft_wg_t wg;
    weft_latch_t latch;
    weft_sem_t sem;
    weft_mutex_t mu;
    long in, out;
} objs;

static weft_wait_case_t case_of(objs *o, int k)
{
    switch (k) {
    case K_RECV: return (weft_wait_case_t){.op = WEFT_RECV, .chan = o->rc, .elem = &o->in};
    case K_SEND: return (weft_wait_case_t){.op = WEFT_SEND, .chan = o->sc, .elem = &o->out};
    case K_FD_READ: return (weft_wait_case_t){.op = WEFT_FD_READ, .fd = o->rp[0]};
    case K_FD_WRITE: return (weft_wait_case_t){.op = WEFT_FD_WRITE, .fd = o->wp[1]};
    case K_JOIN: return (weft_wait_case_t){.op = WEFT_JOIN, .fiber = o->fib, .elem = &o->joined};
    case K_WG: return (weft_wait_case_t){.op = WEFT_WG, .obj = &o->wg};
    case K_LATCH: return (weft_wait_case_t){.op = WEFT_LATCH, .obj = &o->latch};
    case K_SEM: return (weft_wait_case_t){.op = WEFT_SEM, .obj = &o->sem};
    default: return (weft_wait_case_t){.op = WEFT_LOCK, .obj = &o->mu};
    }
}

/* Every kind's object, not ready: an empty channel, a full one, an empty pipe, a full one, a fiber
 * that sleeps (ms), a group at one, a closed latch, no permits, a held mutex. */
static void objs_not_ready(objs *o, int sleep_ms)
{
    memset(o, 0, sizeof *o);
    o->rc = mk(1);
    o->sc = mk(1);
    long v = 1;
    ASSERT_OK(weft_chan_send(o->sc, &v, WEFT_NOWAIT));
    mkpipe(o->rp);
    mkpipe(o->wp);
    ASSERT_EQ(fcntl(o->wp[1], F_SETFL, O_NONBLOCK), 0);
    char buf[4096] = {0};
    while (write(o->wp[1], buf, sizeof buf) > 0)
        ;
    ASSERT_OK(weft_spawn(&o->fib, NULL, sleep_then_return_9, (void *)(intptr_t)sleep_ms));
    ASSERT_OK(weft_wg_init(&o->wg));
    ASSERT_OK(weft_wg_add(&o->wg, 1));
    ASSERT_OK(weft_latch_init(&o->latch, 1));
    ASSERT_OK(weft_sem_init(&o->sem, 0));
    ASSERT_OK(weft_mutex_init(&o->mu));
    ASSERT_OK(weft_mutex_lock(&o->mu, WEFT_NOWAIT));
}

/* Make kind k ready, from whatever thread calls it. */
static void make_ready(objs *o, int k)
{
    long v = 5;
    char buf[65536];
    switch (k) {
    case K_RECV: ASSERT_OK(weft_chan_send(o->rc, &v, WEFT_FOREVER)); break;
    case K_SEND: ASSERT_OK(weft_chan_recv(o->sc, &v, WEFT_FOREVER)); break;
    case K_FD_READ: ASSERT_EQ(write(o->rp[1], "x", 1), 1); break;
    case K_FD_WRITE: ASSERT(read(o->wp[0], buf, sizeof buf) > 0); break;
    case K_JOIN: break; /* the fiber finishes by itself */
    case K_WG: ASSERT_OK(weft_wg_done(&o->wg)); break;
    case K_LATCH: ASSERT_OK(weft_latch_count_down(&o->latch, 1)); break;
    case K_SEM: ASSERT_OK(weft_sem_release(&o->sem, 1)); break;
    default: ASSERT_OK(weft_mutex_unlock(&o->mu)); break;
    }
}

/* Nothing was taken from a kind whose case was not chosen, and every object is usable: no node left
 * in a channel (free would say -EBUSY), the fiber still joinable, the permit and the lock unowned. */
static void objs_free(objs *o)
{
    long v;
    weft_chan_recv(o->rc, &v, WEFT_NOWAIT);
    weft_chan_recv(o->sc, &v, WEFT_NOWAIT);
    ASSERT_OK(weft_chan_free(o->rc));
    ASSERT_OK(weft_chan_free(o->sc));
    /* weft_close: an fd that weft waited on keeps weft's registration until weft closes it */
    ASSERT_OK(weft_close(o->rp[0]));
    ASSERT_OK(weft_close(o->rp[1]));
    ASSERT_OK(weft_close(o->wp[0]));
    ASSERT_OK(weft_close(o->wp[1]));
    if (o->fib.handle_) {
        void *r = NULL;
        ASSERT_OK(weft_join(o->fib, &r));
        ASSERT_EQ((intptr_t)r, 9);
    }
    while (weft_wg_done(&o->wg) == 0)
        ;
    ASSERT_OK(weft_wg_destroy(&o->wg));
    ASSERT_OK(weft_latch_destroy(&o->latch));
    ASSERT_OK(weft_sem_destroy(&o->sem));
    weft_mutex_unlock(&o->mu);
    ASSERT_OK(weft_mutex_destroy(&o->mu));
}

/* What choosing kind k must have done. */
static void check_chosen(objs *o, int k, weft_wait_case_t *cs)
{
    switch (k) {
    case K_RECV: ASSERT_EQ(cs->result, 0); ASSERT_EQ(o->in, 5); break;
    case K_SEND: ASSERT_EQ(cs->result, 0); ASSERT_EQ(weft_chan_len(o->sc), 1); break;
    case K_FD_READ: ASSERT(cs->result & WEFT_READABLE); break;
    case K_FD_WRITE: ASSERT(cs->result & WEFT_WRITABLE); break;
    case K_JOIN:
        ASSERT_EQ(cs->result, 0);
        ASSERT_EQ((intptr_t)o->joined, 9);
        ASSERT_ERR(weft_fiber_state(o->fib), -ESRCH); /* joined: the handle is stale */
        o->fib = WEFT_FIBER_NONE;
        break;
    case K_WG: ASSERT_EQ(cs->result, 0); break;
    case K_LATCH: ASSERT_EQ(cs->result, 0); break;
    case K_SEM: ASSERT_EQ(cs->result, 0); ASSERT_EQ(weft_sem_value(&o->sem), 0); break;
    default: ASSERT_ERR(weft_mutex_trylock(&o->mu), -EBUSY); break; /* ours now */
    }
}

static void *each_kind_ready_now(void *unused)
{
    (void)unused;
    for (int k = 0; k < KINDS; k++) {
        objs o;
        objs_not_ready(&o, 1);
        ASSERT_OK(weft_join(o.fib, NULL));
        ASSERT_OK(weft_spawn(&o.fib, NULL, return_7, NULL)); /* a join case: a fiber that is done */
        WAIT_UNTIL(weft_fiber_state(o.fib) == WEFT_DONE);
        if (k != K_JOIN)
            make_ready(&o, k);
        weft_wait_case_t cs[1] = {case_of(&o, k)};
        int r = weft_select_any(cs, 1, WEFT_NOWAIT);
        if (k == K_JOIN) {
            ASSERT_EQ(r, 0);
            ASSERT_EQ(cs[0].result, 0);
            ASSERT_EQ((intptr_t)o.joined, 7);
            ASSERT_ERR(weft_fiber_state(o.fib), -ESRCH);
            o.fib = WEFT_FIBER_NONE;
        } else {
            if (r != 0)
                FAIL("%s: a ready case gave %d", kind_name[k], r);
            check_chosen(&o, k, &cs[0]);
            if (k == K_LOCK)
                ASSERT_OK(weft_mutex_unlock(&o.mu));
            if (o.fib.handle_) {
                ASSERT_OK(weft_join(o.fib, NULL));
                o.fib = WEFT_FIBER_NONE;
            }
        }
        objs_free(&o);
    }
    return NULL;
}

TEST(each_kind_that_is_ready_is_done_at_once)
{
    start_workers(2);
    in_fiber(each_kind_ready_now, NULL);
    ASSERT_OK(weft_shutdown());
}

static void *each_kind_not_ready(void *unused)
{
    (void)unused;
    objs o;
    objs_not_ready(&o, 200);
    for (int k = 0; k < KINDS; k++) {
        weft_wait_case_t cs[1] = {case_of(&o, k)};
        ASSERT_ERR(weft_select_any(cs, 1, WEFT_NOWAIT), -ETIMEDOUT);
        ASSERT_ERR(weft_select_any(cs, 1, weft_deadline_in(2 * MS)), -ETIMEDOUT);
    }
    /* and all of them at once */
    weft_wait_case_t all[KINDS];
    for (int k = 0; k < KINDS; k++)
        all[k] = case_of(&o, k);
    ASSERT_ERR(weft_select_any(all, KINDS, weft_deadline_in(3 * MS)), -ETIMEDOUT);
    ASSERT_EQ(weft_sem_value(&o.sem), 0);
    ASSERT_EQ(weft_chan_len(o.sc), 1);
    objs_free(&o);

    /* missing objects are never ready */
    weft_wait_case_t none[] = {
        {.op = WEFT_RECV, .chan = NULL},  {.op = WEFT_SEND, .chan = NULL, .elem = &o.out},
        {.op = WEFT_FD_READ, .fd = -1},   {.op = WEFT_FD_WRITE, .fd = -5},
        {.op = WEFT_JOIN},                {.op = WEFT_WG, .obj = NULL},
        {.op = WEFT_LATCH, .obj = NULL},  {.op = WEFT_SEM, .obj = NULL},
        {.op = WEFT_LOCK, .obj = NULL},
    };
    ASSERT_ERR(weft_select_any(none, 9, weft_deadline_in(2 * MS)), -ETIMEDOUT);
    ASSERT_ERR(weft_select_any(none, 0, weft_deadline_in(2 * MS)), -ETIMEDOUT);
    ASSERT_ERR(weft_select_any(NULL, 0, WEFT_NOWAIT), -ETIMEDOUT);
    return NULL;
}

TEST(each_kind_that_is_not_ready_times_out_and_takes_nothing)
{
    start_workers(2);
    in_fiber(each_kind_not_ready, NULL);
    ASSERT_OK(weft_shutdown());
}

/* A waker for one kind, run on a fiber, a weft thread or a plain thread, after a pause. */
typedef struct {
    objs *o;
    int k;
    int ms;
} waker_arg;

static void *waker(void *arg)
{
    waker_arg *w = arg;
    if (w->k != K_JOIN) {
        if (weft_in_fiber())
            weft_sleep(w->ms * MS);
        else
            pause_ms(w->ms);
        make_ready(w->o, w->k);
    }
    return NULL;
}

static void *plain_waker(void *arg)
{
    return waker(arg);
}

enum { BY_FIBER, BY_WEFT_THREAD, BY_PLAIN_THREAD, WAKERS };

typedef struct {
    int by;
} wake_mode;

static void *each_kind_woken_later(void *arg)
{
    int by = ((wake_mode *)arg)->by;
    for (int k = 0; k < KINDS; k++) {
        objs o;
        objs_not_ready(&o, 5);
        weft_chan_t *never = mk(0);
        weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never}, case_of(&o, k)};
        waker_arg w = {&o, k, 5};
        weft_fiber_t wf = WEFT_FIBER_NONE;
        pthread_t pt;
        if (by == BY_FIBER)
            ASSERT_OK(weft_spawn(&wf, NULL, waker, &w));
        else if (by == BY_WEFT_THREAD)
            ASSERT_OK(weft_thread_spawn(&wf, NULL, waker, &w));
        else
            ASSERT_EQ(pthread_create(&pt, NULL, plain_waker, &w), 0);
        int r = weft_select_any(cs, 2, weft_deadline_in(20 * SEC));
        if (r != 1)
            FAIL("%s woken by %d: select gave %d", kind_name[k], by, r);
        check_chosen(&o, k, &cs[1]);
        if (by == BY_PLAIN_THREAD)
            ASSERT_EQ(pthread_join(pt, NULL), 0);
        else
            ASSERT_OK(weft_join(wf, NULL));
        if (k == K_LOCK)
            ASSERT_OK(weft_mutex_unlock(&o.mu));
        ASSERT_OK(weft_chan_free(never));
        objs_free(&o);
    }
    return NULL;
}

TEST(each_kind_wakes_a_parked_select_from_a_fiber)
{
    start_workers(2);
    wake_mode m = {BY_FIBER};
    in_fiber(each_kind_woken_later, &m);
    ASSERT_OK(weft_shutdown());
}

TEST(each_kind_wakes_a_parked_select_from_a_weft_thread)
{
    start_workers(2);
    wake_mode m = {BY_WEFT_THREAD};
    in_fiber(each_kind_woken_later, &m);
    ASSERT_OK(weft_shutdown());
}

TEST(each_kind_wakes_a_parked_select_from_a_plain_thread)
{
    start_workers(2);
    wake_mode m = {BY_PLAIN_THREAD};
    in_fiber(each_kind_woken_later, &m);
    ASSERT_OK(weft_shutdown());
}

TEST(a_plain_thread_and_a_weft_thread_select_too)
{
    start_workers(2);
    /* this thread is not a fiber: it parks on a futex */
    wake_mode by_fiber = {BY_FIBER}, by_plain = {BY_PLAIN_THREAD};
    each_kind_woken_later(&by_fiber);
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, each_kind_woken_later, &by_plain));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Exactly once                                                                                      */

static void *not_chosen_takes_nothing(void *unused)
{
    (void)unused;
    weft_chan_t *c = mk(1);
    weft_sem_t s;
    weft_mutex_t m;
    ASSERT_OK(weft_sem_init(&s, 0));
    ASSERT_OK(weft_mutex_init(&m));
    int p[2];
    mkpipe(p);
    long v = 1, got;
    int chosen[5] = {0};
    for (int i = 0; i < 3000; i++) {
        /* every case ready: a permit, an element, a free mutex, a finished fiber, a readable pipe */
        ASSERT_OK(weft_sem_release(&s, 1));
        ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
        if (i == 0)
            ASSERT_EQ(write(p[1], "x", 1), 1);
        weft_fiber_t f = finished_fiber();
        void *res = NULL;
        weft_wait_case_t cs[5] = {
            {.op = WEFT_SEM, .obj = &s},
            {.op = WEFT_RECV, .chan = c, .elem = &got},
            {.op = WEFT_LOCK, .obj = &m},
            {.op = WEFT_JOIN, .fiber = f, .elem = &res},
            {.op = WEFT_FD_READ, .fd = p[0]},
        };
        int r = weft_select_any(cs, 5, WEFT_NOWAIT);
        ASSERT(r >= 0 && r < 5);
        chosen[r]++;
        /* the chosen one happened, none of the others did */
        ASSERT_EQ(weft_sem_value(&s), r == 0 ? 0 : 1);
        ASSERT_EQ(weft_chan_len(c), r == 1 ? 0 : 1);
        ASSERT_ERR(weft_mutex_trylock(&m), r == 2 ? -EBUSY : 0);
        ASSERT_OK(weft_mutex_unlock(&m));
        if (r == 3) {
            ASSERT_EQ((intptr_t)res, 7);
            ASSERT_ERR(weft_join(f, NULL), -ESRCH);
        } else {
            ASSERT(res == NULL);
            ASSERT_OK(weft_join(f, &res)); /* still joinable */
            ASSERT_EQ((intptr_t)res, 7);
        }
        if (r != 0)
            ASSERT_OK(weft_sem_acquire(&s, WEFT_NOWAIT));
        if (r != 1)
            ASSERT_OK(weft_chan_recv(c, &got, WEFT_NOWAIT));
    }
    for (int k = 0; k < 5; k++)
        if (chosen[k] == 0)
            FAIL("case %d never chosen in 3000 selects", k);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_mutex_destroy(&m));
    close(p[0]);
    close(p[1]);
    return NULL;
}

TEST(a_case_not_chosen_takes_nothing)
{
    start_workers(2);
    in_fiber(not_chosen_takes_nothing, NULL);
    ASSERT_OK(weft_shutdown());
}

/* Two wakers race for one parked select: a permit released and an element sent, on two plain threads,
 * and a fiber finishing. Whatever the select took, the rest is still there. */
typedef struct {
    weft_sem_t *s;
    weft_chan_t *c;
    _Atomic int go;
} race_arg;

static void *race_release(void *arg)
{
    race_arg *a = arg;
    while (!atomic_load(&a->go))
        cpu_relax();
    ASSERT_OK(weft_sem_release(a->s, 1));
    return NULL;
}

static void *race_send(void *arg)
{
    race_arg *a = arg;
    while (!atomic_load(&a->go))
        cpu_relax();
    long v = 3;
    ASSERT_OK(weft_chan_send(a->c, &v, WEFT_FOREVER));
    return NULL;
}

static void *race_finish(void *arg)
{
    race_arg *a = arg;
    while (!atomic_load(&a->go))
        weft_yield();
    return (void *)11;
}

static void *racing_wakers(void *unused)
{
    (void)unused;
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 0));
    weft_chan_t *c = mk(1);
    long rounds = runner_scaled(2000);
    long taken[3] = {0};
    for (long i = 0; i < rounds; i++) {
        race_arg a = {&s, c, 0};
        pthread_t t1, t2;
        weft_fiber_t f;
        ASSERT_EQ(pthread_create(&t1, NULL, race_release, &a), 0);
        ASSERT_EQ(pthread_create(&t2, NULL, race_send, &a), 0);
        ASSERT_OK(weft_spawn(&f, NULL, race_finish, &a));
        long got = 0;
        void *res = NULL;
        weft_wait_case_t cs[3] = {
            {.op = WEFT_SEM, .obj = &s},
            {.op = WEFT_RECV, .chan = c, .elem = &got},
            {.op = WEFT_JOIN, .fiber = f, .elem = &res},
        };
        atomic_store(&a.go, 1);
        int r = weft_select_any(cs, 3, WEFT_FOREVER);
        ASSERT(r >= 0 && r < 3);
        taken[r]++;
        ASSERT_EQ(pthread_join(t1, NULL), 0);
        ASSERT_EQ(pthread_join(t2, NULL), 0);
        /* exactly one of the three was taken */
        ASSERT_EQ(weft_sem_value(&s), r == 0 ? 0 : 1);
        ASSERT_EQ(weft_chan_len(c), r == 1 ? 0 : 1);
        if (r == 1)
            ASSERT_EQ(got, 3);
        if (r == 2) {
            ASSERT_EQ((intptr_t)res, 11);
        } else {
            ASSERT_OK(weft_join(f, &res));
            ASSERT_EQ((intptr_t)res, 11);
        }
        if (r != 0)
            ASSERT_OK(weft_sem_acquire(&s, WEFT_NOWAIT));
        if (r != 1)
            ASSERT_OK(weft_chan_recv(c, &got, WEFT_NOWAIT));
    }
    ASSERT_EQ(taken[0] + taken[1] + taken[2], rounds);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_sem_destroy(&s));
    return NULL;
}

TEST_TIMEOUT(racing_wakers_leave_everything_but_the_chosen_case, 120)
{
    start_workers(2);
    in_fiber(racing_wakers, NULL);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Fairness                                                                                          */

static void *fair_over_kinds(void *unused)
{
    (void)unused;
    enum { N = 10000, K = 6 };
    weft_chan_t *c = mk(1);
    weft_wg_t wg;
    weft_latch_t l;
    weft_sem_t s;
    weft_mutex_t m;
    ASSERT_OK(weft_wg_init(&wg));
    ASSERT_OK(weft_latch_init(&l, 0));
    ASSERT_OK(weft_sem_init(&s, 1));
    ASSERT_OK(weft_mutex_init(&m));
    int p[2];
    mkpipe(p);
    ASSERT_EQ(write(p[1], "x", 1), 1); /* never read: always readable */
    long v = 1, got;
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
    int count[K] = {0};
    for (int i = 0; i < N; i++) {
        weft_wait_case_t cs[K] = {
            {.op = WEFT_RECV, .chan = c, .elem = &got}, {.op = WEFT_WG, .obj = &wg},
            {.op = WEFT_LATCH, .obj = &l},              {.op = WEFT_SEM, .obj = &s},
            {.op = WEFT_LOCK, .obj = &m},               {.op = WEFT_FD_READ, .fd = p[0]},
        };
        int r = weft_select_any(cs, K, WEFT_NOWAIT);
        ASSERT(r >= 0 && r < K);
        count[r]++;
        if (r == 0)
            ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
        if (r == 3)
            ASSERT_OK(weft_sem_release(&s, 1));
        if (r == 4)
            ASSERT_OK(weft_mutex_unlock(&m));
    }
    double mean = (double)N / K, sigma = sqrt(N * (1.0 / K) * (1.0 - 1.0 / K));
    for (int k = 0; k < K; k++)
        if (fabs(count[k] - mean) > 10 * sigma)
            FAIL("case %d won %d of %d selects, expected %.0f +- %.0f (10 sigma)", k, count[k], N, mean,
                 10 * sigma);
    ASSERT_OK(weft_chan_recv(c, &got, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_EQ(weft_sem_value(&s), 1);
    close(p[0]);
    close(p[1]);
    return NULL;
}

TEST(ready_cases_of_different_kinds_are_chosen_fairly)
{
    start_workers(2);
    in_fiber(fair_over_kinds, NULL);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Deadlines and cancels                                                                             */

static void *deadline_every_mix(void *unused)
{
    (void)unused;
    /* every kind alone, then every pair, then all: each times out and leaves everything usable */
    for (int a = 0; a < KINDS; a++) {
        for (int b = a; b < KINDS; b++) {
            objs o;
            objs_not_ready(&o, 500);
            weft_wait_case_t cs[KINDS];
            int n = 0;
            cs[n++] = case_of(&o, a);
            if (b != a)
                cs[n++] = case_of(&o, b);
            if (a == 0 && b == KINDS - 1)
                for (int k = 1; k < KINDS - 1; k++)
                    cs[n++] = case_of(&o, k);
            int r = weft_select_any(cs, n, weft_deadline_in(1 * MS));
            if (r != -ETIMEDOUT)
                FAIL("%s + %s: %d", kind_name[a], kind_name[b], r);
            /* each object works as if no select had been there */
            ASSERT_EQ(weft_chan_len(o.sc), 1);
            ASSERT_EQ(weft_sem_value(&o.sem), 0);
            ASSERT_OK(weft_fd_wait(o.rp[1], WEFT_WRITABLE, WEFT_NOWAIT) > 0 ? 0 : -1);
            ASSERT_ERR(weft_fd_wait(o.rp[0], WEFT_READABLE, WEFT_NOWAIT), -ETIMEDOUT);
            weft_cancel(o.fib); /* ends its sleep early: the join below is quick */
            objs_free(&o);
        }
    }
    return NULL;
}

TEST(a_deadline_in_every_mix_takes_nothing_and_leaves_everything_usable)
{
    start_workers(2);
    in_fiber(deadline_every_mix, NULL);
    ASSERT_OK(weft_shutdown());
}

typedef struct {
    objs *o;
    int r;
    _Atomic int parked;
} cancel_arg;

static void *select_all_forever(void *arg)
{
    cancel_arg *c = arg;
    weft_wait_case_t cs[KINDS];
    for (int k = 0; k < KINDS; k++)
        cs[k] = case_of(c->o, k);
    atomic_store(&c->parked, 1);
    c->r = weft_select_any(cs, KINDS, WEFT_FOREVER);
    return NULL;
}

TEST(a_cancel_ends_a_select_over_every_kind_and_takes_nothing)
{
    start_workers(2);
    for (int round = 0; round < 50; round++) {
        objs o;
        objs_not_ready(&o, 2000);
        cancel_arg c = {&o, 1, 0};
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, select_all_forever, &c));
        WAIT_UNTIL(atomic_load(&c.parked) && weft_fiber_state(f) == WEFT_WAITING);
        ASSERT_OK(weft_cancel(f));
        ASSERT_OK(weft_join(f, NULL));
        ASSERT_ERR(c.r, -ECANCELED);
        ASSERT_EQ(weft_chan_len(o.sc), 1);
        ASSERT_EQ(weft_sem_value(&o.sem), 0);
        ASSERT_OK(weft_cancel(o.fib));
        objs_free(&o);
    }
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Edges                                                                                             */

static void *self_case(void *unused)
{
    (void)unused;
    weft_wait_case_t cs[1] = {{.op = WEFT_JOIN, .fiber = weft_self()}};
    ASSERT_ERR(weft_select_any(cs, 1, WEFT_NOWAIT), -EDEADLK);
    return NULL;
}

TEST(bad_cases_fail_the_whole_call_and_take_nothing)
{
    start_workers(2);
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 1));
    weft_wait_case_t bad_op[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = 99}};
    ASSERT_ERR(weft_select_any(bad_op, 2, WEFT_NOWAIT), -EINVAL);
    weft_chan_t *c = mk(1);
    weft_wait_case_t no_elem[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_SEND, .chan = c}};
    ASSERT_ERR(weft_select_any(no_elem, 2, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_select_any(NULL, 1, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_select_any(bad_op, -1, WEFT_NOWAIT), -EINVAL);
    ASSERT_EQ(weft_sem_value(&s), 1); /* no case happened */

    weft_fiber_t f = finished_fiber();
    ASSERT_OK(weft_join(f, NULL));
    weft_wait_case_t stale[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_JOIN, .fiber = f}};
    ASSERT_ERR(weft_select_any(stale, 2, WEFT_NOWAIT), -ESRCH);
    weft_fiber_t d;
    ASSERT_OK(weft_spawn(&d, NULL, sleep_then_return_9, (void *)(intptr_t)50));
    ASSERT_OK(weft_detach(d));
    weft_wait_case_t detached[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_JOIN, .fiber = d}};
    int r = weft_select_any(detached, 2, WEFT_NOWAIT);
    ASSERT(r == -EINVAL || r == -ESRCH); /* -ESRCH once it finished and went */
    ASSERT_EQ(weft_sem_value(&s), 1);
    in_fiber(self_case, NULL);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

typedef struct {
    int fd;
} close_arg;

static void *close_later(void *arg)
{
    weft_sleep(5 * MS);
    ASSERT_OK(weft_close(((close_arg *)arg)->fd));
    return NULL;
}

static void *closed_things_are_ready(void *unused)
{
    (void)unused;
    int p[2];
    mkpipe(p);
    weft_chan_t *never = mk(0);
    weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never}, {.op = WEFT_FD_READ, .fd = p[0]}};
    close_arg ca = {p[0]};
    weft_fiber_t closer;
    ASSERT_OK(weft_spawn(&closer, NULL, close_later, &ca));
    ASSERT_EQ(weft_select_any(cs, 2, weft_deadline_in(20 * SEC)), 1);
    ASSERT_ERR(cs[1].result, -EBADF);
    ASSERT_OK(weft_join(closer, NULL));
    /* an fd that is not open is ready with -EBADF */
    ASSERT_EQ(weft_select_any(cs, 2, WEFT_NOWAIT), 1);
    ASSERT_ERR(cs[1].result, -EBADF);
    close(p[1]);
    /* a closed channel is ready with -EPIPE, for a receive and a send */
    weft_chan_t *c = mk(0);
    ASSERT_OK(weft_chan_close(c));
    long v = 1;
    weft_wait_case_t cc[2] = {{.op = WEFT_FD_READ, .fd = -1}, {.op = WEFT_RECV, .chan = c, .elem = &v}};
    ASSERT_EQ(weft_select_any(cc, 2, WEFT_NOWAIT), 1);
    ASSERT_ERR(cc[1].result, -EPIPE);
    cc[1].op = WEFT_SEND;
    ASSERT_EQ(weft_select_any(cc, 2, WEFT_NOWAIT), 1);
    ASSERT_ERR(cc[1].result, -EPIPE);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_chan_free(never));
    return NULL;
}

TEST(closed_fds_and_channels_are_ready_with_their_error)
{
    start_workers(2);
    in_fiber(closed_things_are_ready, NULL);
    ASSERT_OK(weft_shutdown());
}

static void *many_cases(void *unused)
{
    (void)unused;
    enum { N = 40 };
    weft_chan_t *ch[N];
    weft_sem_t s[N];
    weft_wait_case_t cs[N];
    long v = 4, got = 0;
    for (int i = 0; i < N; i++) {
        ch[i] = mk(1);
        ASSERT_OK(weft_sem_init(&s[i], 0));
        cs[i] = i % 2 ? (weft_wait_case_t){.op = WEFT_RECV, .chan = ch[i], .elem = &got}
                      : (weft_wait_case_t){.op = WEFT_SEM, .obj = &s[i]};
    }
    ASSERT_ERR(weft_select_any(cs, N, weft_deadline_in(1 * MS)), -ETIMEDOUT);
    ASSERT_OK(weft_chan_send(ch[N - 1], &v, WEFT_NOWAIT));
    ASSERT_EQ(weft_select_any(cs, N, WEFT_FOREVER), N - 1);
    ASSERT_EQ(got, 4);
    ASSERT_OK(weft_sem_release(&s[N - 2], 1));
    ASSERT_EQ(weft_select_any(cs, N, WEFT_FOREVER), N - 2);
    for (int i = 0; i < N; i++) {
        ASSERT_OK(weft_chan_free(ch[i]));
        ASSERT_EQ(weft_sem_value(&s[i]), 0);
    }
    return NULL;
}

TEST(more_than_sixteen_cases)
{
    start_workers(2);
    in_fiber(many_cases, NULL);
    ASSERT_OK(weft_shutdown());
}

static void *one_object_in_several_cases(void *unused)
{
    (void)unused;
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 1));
    weft_wait_case_t twice[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_SEM, .obj = &s}};
    int r = weft_select_any(twice, 2, WEFT_NOWAIT);
    ASSERT(r == 0 || r == 1);
    ASSERT_EQ(weft_sem_value(&s), 0); /* one permit taken, not two */
    ASSERT_ERR(weft_select_any(twice, 2, weft_deadline_in(1 * MS)), -ETIMEDOUT);
    /* the same unbuffered channel as a send and a receive: the select never meets itself */
    weft_chan_t *c = mk(0);
    long a = 1, b = 0;
    weft_wait_case_t both[3] = {{.op = WEFT_SEND, .chan = c, .elem = &a},
                                {.op = WEFT_RECV, .chan = c, .elem = &b},
                                {.op = WEFT_SEM, .obj = &s}};
    ASSERT_ERR(weft_select_any(both, 3, weft_deadline_in(2 * MS)), -ETIMEDOUT);
    ASSERT_OK(weft_sem_release(&s, 1));
    ASSERT_EQ(weft_select_any(both, 3, WEFT_FOREVER), 2);
    ASSERT_OK(weft_chan_free(c));
    /* the same mutex twice: locked once */
    weft_mutex_t m;
    ASSERT_OK(weft_mutex_init(&m));
    weft_wait_case_t locks[2] = {{.op = WEFT_LOCK, .obj = &m}, {.op = WEFT_LOCK, .obj = &m}};
    ASSERT(weft_select_any(locks, 2, WEFT_NOWAIT) >= 0);
    ASSERT_ERR(weft_select_any(locks, 2, weft_deadline_in(1 * MS)), -ETIMEDOUT);
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_OK(weft_mutex_destroy(&m));
    return NULL;
}

TEST(one_object_in_several_cases_is_taken_once)
{
    start_workers(2);
    in_fiber(one_object_in_several_cases, NULL);
    ASSERT_OK(weft_shutdown());
}

/* A select's mutex case is handed the lock by the unlock, and the unlock's other waiters still get it
 * in turn: nobody is stranded. */
typedef struct {
    weft_mutex_t *m;
    weft_chan_t *never;
    long *counter;
    long n;
    int via_select;
} locker_arg;

static void *locker(void *arg)
{
    locker_arg *a = arg;
    for (long i = 0; i < a->n; i++) {
        if (a->via_select) {
            weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = a->never}, {.op = WEFT_LOCK, .obj = a->m}};
            ASSERT_EQ(weft_select_any(cs, 2, WEFT_FOREVER), 1);
        } else {
            ASSERT_OK(weft_mutex_lock(a->m, WEFT_FOREVER));
        }
        long v = *a->counter;
        if (i % 7 == 0)
            weft_yield();
        *a->counter = v + 1;
        ASSERT_OK(weft_mutex_unlock(a->m));
    }
    return NULL;
}

TEST(select_lockers_and_plain_lockers_share_a_mutex_exactly)
{
    start_workers(2);
    weft_mutex_t m;
    ASSERT_OK(weft_mutex_init(&m));
    weft_chan_t *never = mk(0);
    long counter = 0, n = runner_scaled(3000);
    enum { F = 8 };
    locker_arg a[F];
    weft_fiber_t f[F];
    for (int i = 0; i < F; i++) {
        a[i] = (locker_arg){&m, never, &counter, n, i % 2};
        ASSERT_OK(weft_spawn(&f[i], NULL, locker, &a[i]));
    }
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_EQ(counter, F * n);
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_OK(weft_chan_free(never));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Stress                                                                                            */

typedef struct {
    weft_chan_t *c;
    weft_sem_t *s;
    weft_wg_t *stop;
    _Atomic long *elems, *permits;
} consumer_arg;

static void *consumer(void *arg)
{
    consumer_arg *a = arg;
    for (;;) {
        long v;
        weft_wait_case_t cs[3] = {
            {.op = WEFT_RECV, .chan = a->c, .elem = &v},
            {.op = WEFT_SEM, .obj = a->s},
            {.op = WEFT_WG, .obj = a->stop},
        };
        int r = weft_select_any(cs, 3, WEFT_FOREVER);
        ASSERT(r >= 0);
        if (r == 0 && cs[0].result == 0)
            atomic_fetch_add(a->elems, v);
        else if (r == 1)
            atomic_fetch_add(a->permits, 1);
        else if (r == 2 || cs[0].result == -EPIPE)
            return NULL;
    }
}

typedef struct {
    weft_chan_t *c;
    weft_sem_t *s;
    long n;
} producer_arg;

static void *producer(void *arg)
{
    producer_arg *a = arg;
    for (long i = 1; i <= a->n; i++) {
        ASSERT_OK(weft_chan_send(a->c, &i, WEFT_FOREVER));
        if (i % 3 == 0)
            ASSERT_OK(weft_sem_release(a->s, 1));
    }
    return NULL;
}

TEST_TIMEOUT(many_selects_against_many_producers_balance_exactly, 120)
{
    start_workers(2);
    weft_chan_t *c = mk(4);
    weft_sem_t s;
    weft_wg_t stop;
    ASSERT_OK(weft_sem_init(&s, 0));
    ASSERT_OK(weft_wg_init(&stop));
    ASSERT_OK(weft_wg_add(&stop, 1));
    _Atomic long elems = 0, permits = 0;
    enum { C = 6, P = 4 };
    long n = runner_scaled(20000);
    consumer_arg ca = {c, &s, &stop, &elems, &permits};
    producer_arg pa = {c, &s, n};
    weft_fiber_t cf[C], pf[P];
    pthread_t pt;
    for (int i = 0; i < C; i++)
        ASSERT_OK(weft_spawn(&cf[i], NULL, consumer, &ca));
    for (int i = 0; i < P - 1; i++)
        ASSERT_OK(weft_spawn(&pf[i], NULL, producer, &pa));
    ASSERT_EQ(pthread_create(&pt, NULL, producer, &pa), 0); /* one producer is a plain thread */
    for (int i = 0; i < P - 1; i++)
        ASSERT_OK(weft_join(pf[i], NULL));
    ASSERT_EQ(pthread_join(pt, NULL), 0);
    /* every element and permit is taken; then the group opens and every consumer leaves */
    WAIT_UNTIL(atomic_load(&elems) == P * (n * (n + 1) / 2) && atomic_load(&permits) == P * (n / 3));
    ASSERT_OK(weft_wg_done(&stop));
    for (int i = 0; i < C; i++)
        ASSERT_OK(weft_join(cf[i], NULL));
    ASSERT_EQ(atomic_load(&elems), P * (n * (n + 1) / 2));
    ASSERT_EQ(atomic_load(&permits), P * (n / 3));
    ASSERT_EQ(weft_sem_value(&s), 0);
    ASSERT_EQ(weft_chan_len(c), 0);
    ASSERT_OK(weft_chan_free(c)); /* no node left behind */
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_wg_destroy(&stop));
    ASSERT_OK(weft_shutdown());
}

/* The deadlock report names a fiber parked in a select, and the select returns -EDEADLK. */
static _Atomic int dl_result = 1;

static void *select_on_nothing_ready(void *arg)
{
    weft_sem_t *s = arg;
    weft_mutex_t m;
    weft_mutex_init(&m);
    weft_mutex_lock(&m, WEFT_NOWAIT);
    weft_wait_case_t cs[2] = {{.op = WEFT_SEM, .obj = s}, {.op = WEFT_LOCK, .obj = &m}};
    atomic_store(&dl_result, weft_select_any(cs, 2, WEFT_FOREVER));
    return NULL;
}

static void *dl_main(void *arg)
{
    weft_fiber_t f;
    weft_attr_t a = {.name = "sel"};
    weft_spawn(&f, &a, select_on_nothing_ready, arg);
    while (weft_join(f, NULL) == -EDEADLK)
        ;
    return NULL;
}

static void deadlocked_select(void *unused)
{
    (void)unused;
    weft_sem_t s;
    weft_sem_init(&s, 0);
    int r = weft_run(NULL, dl_main, &s, NULL);
    printf("weft_run %d, select returned %d, permits %lld\n", r, atomic_load(&dl_result),
           (long long)weft_sem_value(&s));
    fflush(stdout);
}

TEST(a_select_nobody_can_end_is_named_in_the_deadlock_report)
{
    if (under_emulator())
        return;
    char out[16384];
    int st = runner_capture(deadlocked_select, NULL, out, sizeof out, 30);
    ASSERT(st != -1);
    if (!strstr(out, "select"))
        FAIL("the report does not name the select:\n%s", out);
    if (!strstr(out, "\"sel\"") || !strstr(out, "select returned -35, permits 0")) /* -EDEADLK */
        FAIL("the select did not return -EDEADLK, or the report does not name it:\n%s", out);
}
