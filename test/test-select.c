/*
 * weft_select_any: one wait for the first of any mix of channel sends and receives, fds readable or
 * writable, fibers and weft threads finishing (joined), wait groups, latches, semaphore permits and
 * mutexes.
 *
 *  - Each kind alone: ready at once (WEFT_NOWAIT gives its index), made ready later by a fiber, a weft
 *    thread or a plain thread while the select is parked (many rounds), never ready (an object that is
 *    not ready, or a missing one: NULL, fd < 0, WEFT_FIBER_NONE) until a short deadline.
 *  - The select itself on a plain thread and on a weft thread while the runtime runs, and on plain
 *    threads with no runtime at all (every kind but the fd ones, which say -ESHUTDOWN).
 *  - Exactly once: a case not chosen takes no element, permit or lock and joins nothing, also when its
 *    waker races the chosen one from other threads (every permit, element, lock and join is counted);
 *    a join case racing its fiber's finish joins it once, with result 0.
 *  - Fairness over eight kinds of always-ready case, each within 10 sigma of n/k.
 *  - Deadlines and cancels over every kind alone, every pair and all at once: nothing taken, and every
 *    object fully usable afterwards by a plain wait that parks (no node of the select left behind).
 *  - Edges: bad cases fail the whole call before anything happens (and give back what the cases read
 *    had taken: an fd reference, a join), join cases on stale, detached, self and already-joined
 *    handles, an fd weft_close'd under a waiting select, closed channels, n == 0, more than 16 cases,
 *    one object in several cases.
 *  - A stress test: many selecting fibers on two workers against producers on fibers and threads, over
 *    a channel, a semaphore, a mutex and a wait group; the totals balance exactly and no object is left
 *    with a waiter. And the deadlock report naming a select nobody can end.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
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

/* A fiber that has finished, not yet joined. */
static weft_fiber_t finished_fiber(void)
{
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, return_7, NULL));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_DONE);
    return f;
}

/* Waits for a permit of the semaphore it is given, then returns 9: a fiber (or weft thread) that
 * finishes when someone says so. */
static void *gated_9(void *arg)
{
    ASSERT_OK(weft_sem_acquire(arg, WEFT_FOREVER));
    return (void *)9;
}

/* Until who is parked (a liveness bound, not a measurement). A select on a thread weft does not know
 * (who is WEFT_FIBER_NONE) cannot be watched: a pause stands in, and the wake is tested either way. */
static void wait_parked(weft_fiber_t who)
{
    if (!who.handle_) {
        pause_ms(2);
        return;
    }
    WAIT_UNTIL(weft_fiber_state(who) == WEFT_WAITING);
}

/* ------------------------------------------------------------------------------------------------ */
/* One object of each kind                                                                           */

enum { K_RECV, K_SEND, K_FD_READ, K_FD_WRITE, K_JOIN, K_WG, K_LATCH, K_SEM, K_LOCK, KINDS };
static const char *const kind_name[KINDS] = {"recv", "send", "fd read", "fd write", "join",
                                             "wg", "latch", "sem", "lock"};

typedef struct {
    weft_chan_t *rc, *sc; /* rc: something to receive; sc: room to send */
    int rp[2], wp[2];     /* rp: a pipe to read; wp: a pipe to write */
    weft_sem_t gate;      /* the fiber to join finishes once this has a permit */
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
 * waiting at its gate, a group at one, a closed latch, no permits, a mutex the caller holds. */
static void objs_not_ready(objs *o)
{
    memset(o, 0, sizeof *o);
    o->rc = mk(1);
    o->sc = mk(1);
    long v = 1;
    ASSERT_OK(weft_chan_send(o->sc, &v, WEFT_NOWAIT));
    o->out = 2;
    mkpipe(o->rp);
    mkpipe(o->wp);
    ASSERT_EQ(fcntl(o->wp[1], F_SETFL, O_NONBLOCK), 0);
    char buf[4096] = {0};
    while (write(o->wp[1], buf, sizeof buf) > 0)
        ;
    ASSERT_OK(weft_sem_init(&o->gate, 0));
    ASSERT_OK(weft_spawn(&o->fib, NULL, gated_9, &o->gate));
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
    char buf[8192];
    switch (k) {
    case K_RECV: ASSERT_OK(weft_chan_send(o->rc, &v, WEFT_FOREVER)); break;
    case K_SEND: ASSERT_OK(weft_chan_recv(o->sc, &v, WEFT_FOREVER)); break;
    case K_FD_READ: ASSERT_EQ(write(o->rp[1], "x", 1), 1); break;
    case K_FD_WRITE: ASSERT(read(o->wp[0], buf, sizeof buf) > 0); break;
    case K_JOIN: ASSERT_OK(weft_sem_release(&o->gate, 1)); break;
    case K_WG: ASSERT_OK(weft_wg_done(&o->wg)); break;
    case K_LATCH: ASSERT_OK(weft_latch_count_down(&o->latch, 1)); break;
    case K_SEM: ASSERT_OK(weft_sem_release(&o->sem, 1)); break;
    default: ASSERT_OK(weft_mutex_unlock(&o->mu)); break;
    }
}

/* What choosing kind k must have done. */
static void check_chosen(objs *o, int k, weft_wait_case_t *cs)
{
    switch (k) {
    case K_RECV: ASSERT_EQ(cs->result, 0); ASSERT_EQ(o->in, 5); break;
    case K_SEND: ASSERT_EQ(cs->result, 0); ASSERT_EQ(weft_chan_len(o->sc), 1); break;
    case K_FD_READ: ASSERT(cs->result > 0 && (cs->result & WEFT_READABLE)); break;
    case K_FD_WRITE: ASSERT(cs->result > 0 && (cs->result & WEFT_WRITABLE)); break;
    case K_JOIN:
        ASSERT_EQ(cs->result, 0);
        ASSERT_EQ((intptr_t)o->joined, 9);
        ASSERT_ERR(weft_fiber_state(o->fib), -ESRCH); /* joined: the handle is stale */
        o->fib = WEFT_FIBER_NONE;
        break;
    case K_WG: ASSERT_EQ(cs->result, 0); break;
    case K_LATCH: ASSERT_EQ(cs->result, 0); break;
    case K_SEM: ASSERT_EQ(cs->result, 0); ASSERT_EQ(weft_sem_value(&o->sem), 0); break;
    default: ASSERT_EQ(cs->result, 0); ASSERT_ERR(weft_mutex_trylock(&o->mu), -EBUSY); break; /* ours */
    }
}

/* Nothing of a not-ready set was taken (the state objs_not_ready left). */
static void check_untouched(objs *o)
{
    ASSERT_EQ(weft_chan_len(o->rc), 0);
    ASSERT_EQ(weft_chan_len(o->sc), 1);
    ASSERT_EQ(weft_sem_value(&o->sem), 0);
    ASSERT_ERR(weft_mutex_trylock(&o->mu), -EBUSY); /* still the creator's, not handed to anyone */
    int st = weft_fiber_state(o->fib);
    ASSERT(st >= 0 && st != WEFT_DONE); /* not joined (the handle is not stale), still at its gate */
    ASSERT_EQ(weft_latch_done(&o->latch), 0);
}

/* Nothing was left of any select: every object works, and is freed or destroyed without -EBUSY (no
 * node left queued on a channel, a group, a semaphore, a mutex), the fiber joinable. */
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
        ASSERT_OK(weft_sem_release(&o->gate, 1));
        ASSERT_OK(weft_join(o->fib, &r));
        ASSERT_EQ((intptr_t)r, 9);
    }
    while (weft_wg_done(&o->wg) == 0)
        ;
    ASSERT_OK(weft_wg_destroy(&o->wg));
    ASSERT_OK(weft_latch_destroy(&o->latch));
    ASSERT_OK(weft_sem_destroy(&o->sem));
    ASSERT_OK(weft_sem_destroy(&o->gate));
    weft_mutex_unlock(&o->mu);
    ASSERT_OK(weft_mutex_destroy(&o->mu));
}

/* A waker for one kind, run on a fiber, a weft thread or a plain thread: once the selector is parked
 * (or, when it cannot be watched, after a pause), it makes the kind ready. */
typedef struct {
    objs *o;
    int k;
    weft_fiber_t selector;
    _Atomic int armed; /* set just before the selector waits */
} waker_arg;

static void *waker(void *arg)
{
    waker_arg *w = arg;
    WAIT_UNTIL(atomic_load(&w->armed));
    wait_parked(w->selector);
    make_ready(w->o, w->k);
    return NULL;
}

/* A plain wait on kind k's object (not ready: the state objs_not_ready left), parked until a fiber
 * makes it ready: the object is usable by others than selects. */
static void wait_plainly(objs *o, int k)
{
    waker_arg w = {.o = o, .k = k, .selector = weft_self()};
    atomic_store(&w.armed, 1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, waker, &w));
    int64_t dl = weft_deadline_in(20 * SEC);
    long v = 0;
    char b;
    int r;
    switch (k) {
    case K_RECV:
        ASSERT_OK(weft_chan_recv(o->rc, &v, dl));
        ASSERT_EQ(v, 5);
        break;
    case K_SEND:
        v = 6;
        ASSERT_OK(weft_chan_send(o->sc, &v, dl));
        break;
    case K_FD_READ:
        r = weft_fd_wait(o->rp[0], WEFT_READABLE, dl);
        ASSERT(r > 0 && (r & WEFT_READABLE));
        ASSERT_EQ(read(o->rp[0], &b, 1), 1);
        break;
    case K_FD_WRITE:
        r = weft_fd_wait(o->wp[1], WEFT_WRITABLE, dl);
        ASSERT(r > 0 && (r & WEFT_WRITABLE));
        break;
    case K_JOIN: {
        void *res = NULL;
        ASSERT_OK(weft_join_until(o->fib, &res, dl));
        ASSERT_EQ((intptr_t)res, 9);
        o->fib = WEFT_FIBER_NONE;
        break;
    }
    case K_WG: ASSERT_OK(weft_wg_wait(&o->wg, dl)); break;
    case K_LATCH: ASSERT_OK(weft_latch_wait(&o->latch, dl)); break;
    case K_SEM: ASSERT_OK(weft_sem_acquire(&o->sem, dl)); break;
    default: ASSERT_OK(weft_mutex_lock(&o->mu, dl)); break; /* the waker let go of our hold */
    }
    ASSERT_OK(weft_join(f, NULL));
}

static void objs_check_usable(objs *o)
{
    check_untouched(o);
    for (int k = 0; k < KINDS; k++)
        wait_plainly(o, k);
}

/* ------------------------------------------------------------------------------------------------ */
/* Each kind alone                                                                                   */

static void *each_kind_ready_now(void *unused)
{
    (void)unused;
    for (int k = 0; k < KINDS; k++) {
        for (int with_deadline = 0; with_deadline < 2; with_deadline++) {
            objs o;
            objs_not_ready(&o);
            make_ready(&o, k);
            if (k == K_JOIN)
                WAIT_UNTIL(weft_fiber_state(o.fib) == WEFT_DONE);
            weft_wait_case_t cs[1] = {case_of(&o, k)};
            int r = weft_select_any(cs, 1, with_deadline ? weft_deadline_in(20 * SEC) : WEFT_NOWAIT);
            if (r != 0)
                FAIL("%s: a ready case gave %d", kind_name[k], r);
            check_chosen(&o, k, &cs[0]);
            objs_free(&o);
        }
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
    objs_not_ready(&o);
    for (int k = 0; k < KINDS; k++) {
        weft_wait_case_t cs[1] = {case_of(&o, k)};
        if (weft_select_any(cs, 1, WEFT_NOWAIT) != -ETIMEDOUT)
            FAIL("%s: not ready, yet NOWAIT did not time out", kind_name[k]);
        if (weft_select_any(cs, 1, weft_deadline_in(2 * MS)) != -ETIMEDOUT)
            FAIL("%s: not ready, yet the deadline did not time out", kind_name[k]);
    }
    /* and all of them at once */
    weft_wait_case_t all[KINDS];
    for (int k = 0; k < KINDS; k++)
        all[k] = case_of(&o, k);
    ASSERT_ERR(weft_select_any(all, KINDS, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_select_any(all, KINDS, weft_deadline_in(3 * MS)), -ETIMEDOUT);
    check_untouched(&o);
    objs_free(&o);
    return NULL;
}

TEST(each_kind_that_is_not_ready_times_out_and_takes_nothing)
{
    start_workers(2);
    in_fiber(each_kind_not_ready, NULL);
    each_kind_not_ready(NULL); /* and on this thread, which is not a fiber */
    ASSERT_OK(weft_shutdown());
}

static void *missing_objects(void *unused)
{
    (void)unused;
    long x = 1;
    weft_wait_case_t none[KINDS] = {
        [K_RECV] = {.op = WEFT_RECV, .chan = NULL},
        [K_SEND] = {.op = WEFT_SEND, .chan = NULL, .elem = &x},
        [K_FD_READ] = {.op = WEFT_FD_READ, .fd = -1},
        [K_FD_WRITE] = {.op = WEFT_FD_WRITE, .fd = -5},
        [K_JOIN] = {.op = WEFT_JOIN, .fiber = WEFT_FIBER_NONE, .elem = NULL},
        [K_WG] = {.op = WEFT_WG, .obj = NULL},
        [K_LATCH] = {.op = WEFT_LATCH, .obj = NULL},
        [K_SEM] = {.op = WEFT_SEM, .obj = NULL},
        [K_LOCK] = {.op = WEFT_LOCK, .obj = NULL},
    };
    for (int k = 0; k < KINDS; k++) {
        if (weft_select_any(&none[k], 1, WEFT_NOWAIT) != -ETIMEDOUT)
            FAIL("%s: a missing object was ready (NOWAIT)", kind_name[k]);
        int64_t dl = weft_deadline_in(1 * MS);
        if (weft_select_any(&none[k], 1, dl) != -ETIMEDOUT)
            FAIL("%s: a missing object was ready", kind_name[k]);
        ASSERT(weft_now() >= dl); /* a deadline never ends early */
    }
    int64_t dl = weft_deadline_in(2 * MS);
    ASSERT_ERR(weft_select_any(none, KINDS, dl), -ETIMEDOUT);
    ASSERT(weft_now() >= dl);
    /* n == 0: the deadline alone */
    dl = weft_deadline_in(2 * MS);
    ASSERT_ERR(weft_select_any(none, 0, dl), -ETIMEDOUT);
    ASSERT(weft_now() >= dl);
    ASSERT_ERR(weft_select_any(NULL, 0, WEFT_NOWAIT), -ETIMEDOUT);
    /* among them, a ready case is found */
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 1));
    weft_wait_case_t mixed[KINDS + 1];
    memcpy(mixed, none, sizeof none);
    mixed[KINDS] = (weft_wait_case_t){.op = WEFT_SEM, .obj = &s};
    ASSERT_EQ(weft_select_any(mixed, KINDS + 1, WEFT_NOWAIT), KINDS);
    ASSERT_EQ(weft_sem_value(&s), 0);
    ASSERT_OK(weft_sem_destroy(&s));
    return NULL;
}

TEST(a_missing_object_is_never_ready)
{
    start_workers(2);
    in_fiber(missing_objects, NULL);
    ASSERT_OK(weft_shutdown());
}

enum { BY_FIBER, BY_WEFT_THREAD, BY_PLAIN_THREAD };
static const char *const by_name[] = {"a fiber", "a weft thread", "a plain thread"};

typedef struct {
    int by;
    long rounds;
} wake_mode;

/* For each kind, rounds times: a select over {a channel nobody uses, the kind} parks until a waker of
 * the given sort makes the kind ready; it returns that case, and the case happened. */
static void *each_kind_woken_later(void *arg)
{
    const wake_mode *m = arg;
    for (int k = 0; k < KINDS; k++) {
        for (long round = 0; round < m->rounds; round++) {
            objs o;
            objs_not_ready(&o);
            weft_chan_t *never = mk(0);
            weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never}, case_of(&o, k)};
            waker_arg w = {.o = &o, .k = k, .selector = weft_self()};
            weft_fiber_t wf = WEFT_FIBER_NONE;
            pthread_t pt;
            if (m->by == BY_FIBER)
                ASSERT_OK(weft_spawn(&wf, NULL, waker, &w));
            else if (m->by == BY_WEFT_THREAD)
                ASSERT_OK(weft_thread_spawn(&wf, NULL, waker, &w));
            else
                ASSERT_EQ(pthread_create(&pt, NULL, waker, &w), 0);
            atomic_store(&w.armed, 1);
            int r = weft_select_any(cs, 2, weft_deadline_in(20 * SEC));
            if (r != 1)
                FAIL("%s woken by %s (round %ld): the select gave %d", kind_name[k], by_name[m->by], round, r);
            check_chosen(&o, k, &cs[1]);
            if (m->by == BY_PLAIN_THREAD)
                ASSERT_EQ(pthread_join(pt, NULL), 0);
            else
                ASSERT_OK(weft_join(wf, NULL));
            ASSERT_OK(weft_chan_free(never));
            objs_free(&o);
        }
    }
    return NULL;
}

TEST(each_kind_wakes_a_parked_select_from_a_fiber)
{
    start_workers(2);
    wake_mode m = {BY_FIBER, runner_scaled(30)};
    in_fiber(each_kind_woken_later, &m);
    ASSERT_OK(weft_shutdown());
}

TEST(each_kind_wakes_a_parked_select_from_a_weft_thread)
{
    start_workers(2);
    wake_mode m = {BY_WEFT_THREAD, runner_scaled(30)};
    in_fiber(each_kind_woken_later, &m);
    ASSERT_OK(weft_shutdown());
}

TEST(each_kind_wakes_a_parked_select_from_a_plain_thread)
{
    start_workers(2);
    wake_mode m = {BY_PLAIN_THREAD, runner_scaled(30)};
    in_fiber(each_kind_woken_later, &m);
    ASSERT_OK(weft_shutdown());
}

static void *plain_selector(void *arg)
{
    return each_kind_woken_later(arg);
}

TEST(a_plain_thread_and_a_weft_thread_select_too)
{
    start_workers(2);
    wake_mode by_fiber = {BY_FIBER, 2}, by_plain = {BY_PLAIN_THREAD, 2}, by_weft = {BY_WEFT_THREAD, 2};
    /* this thread is not a fiber: it parks on a futex */
    each_kind_woken_later(&by_fiber);
    each_kind_woken_later(&by_weft);
    /* a thread made for it */
    pthread_t pt;
    ASSERT_EQ(pthread_create(&pt, NULL, plain_selector, &by_plain), 0);
    ASSERT_EQ(pthread_join(pt, NULL), 0);
    /* a weft thread, woken by each sort */
    wake_mode many_by_fiber = {BY_FIBER, runner_scaled(10)}, many_by_plain = {BY_PLAIN_THREAD, runner_scaled(10)};
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, each_kind_woken_later, &many_by_fiber));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_OK(weft_thread_spawn(&t, NULL, each_kind_woken_later, &many_by_plain));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_OK(weft_thread_spawn(&t, NULL, each_kind_woken_later, &by_weft));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_OK(weft_shutdown());
}

/* A join case on a weft thread (a kernel thread of its own): ready once it has finished, and it wakes
 * a parked select when it finishes. */
typedef struct {
    weft_sem_t *gate;
    weft_fiber_t selector;
    _Atomic int armed;
} opener_arg;

static void *open_gate_when_parked(void *arg)
{
    opener_arg *a = arg;
    WAIT_UNTIL(atomic_load(&a->armed));
    wait_parked(a->selector);
    ASSERT_OK(weft_sem_release(a->gate, 1));
    return NULL;
}

static void join_weft_threads(long rounds)
{
    weft_chan_t *never = mk(0);
    weft_sem_t gate;
    ASSERT_OK(weft_sem_init(&gate, 0));
    for (long i = 0; i < rounds; i++) {
        weft_fiber_t t;
        ASSERT_OK(weft_thread_spawn(&t, NULL, gated_9, &gate));
        void *res = NULL;
        weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never}, {.op = WEFT_JOIN, .fiber = t, .elem = &res}};
        if (i == 0) {
            ASSERT_ERR(weft_select_any(cs, 2, WEFT_NOWAIT), -ETIMEDOUT);
            ASSERT_ERR(weft_select_any(cs, 2, weft_deadline_in(2 * MS)), -ETIMEDOUT);
            ASSERT(res == NULL);
        }
        opener_arg oa = {.gate = &gate, .selector = weft_self()};
        pthread_t pt;
        ASSERT_EQ(pthread_create(&pt, NULL, open_gate_when_parked, &oa), 0);
        atomic_store(&oa.armed, 1);
        ASSERT_EQ(weft_select_any(cs, 2, weft_deadline_in(20 * SEC)), 1);
        ASSERT_EQ(cs[1].result, 0);
        ASSERT_EQ((intptr_t)res, 9);
        ASSERT_ERR(weft_fiber_state(t), -ESRCH);
        ASSERT_ERR(weft_join(t, NULL), -ESRCH);
        ASSERT_EQ(pthread_join(pt, NULL), 0);
    }
    /* one that has finished already */
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, return_7, NULL));
    WAIT_UNTIL(weft_fiber_state(t) == WEFT_DONE);
    void *res = NULL;
    weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never}, {.op = WEFT_JOIN, .fiber = t, .elem = &res}};
    ASSERT_EQ(weft_select_any(cs, 2, WEFT_NOWAIT), 1);
    ASSERT_EQ((intptr_t)res, 7);
    ASSERT_ERR(weft_fiber_state(t), -ESRCH);
    ASSERT_OK(weft_chan_free(never));
    ASSERT_OK(weft_sem_destroy(&gate));
}

static void *join_weft_threads_in_fiber(void *arg)
{
    join_weft_threads(*(long *)arg);
    return NULL;
}

TEST(a_join_case_collects_a_weft_thread)
{
    start_workers(2);
    long rounds = runner_scaled(30);
    in_fiber(join_weft_threads_in_fiber, &rounds);
    ASSERT_OK(weft_shutdown());
}

/* A join case whose fiber finishes while the select looks at it (on the other worker, after a spin of
 * varying length): however the two meet (found finished by the poll, finished between the poll and the
 * queueing of the case's node, or finished while the select is parked), the fiber is joined once, with
 * result 0 and its return value. */
static void *spin_then_return(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    for (uintptr_t i = 0; i < n; i++)
        cpu_relax();
    return (void *)(n + 1);
}

static void *join_racing_the_finish(void *unused)
{
    (void)unused;
    enum { SEMS = 8 };
    weft_sem_t sems[SEMS];
    for (int k = 0; k < SEMS; k++)
        ASSERT_OK(weft_sem_init(&sems[k], 0));
    uint32_t x = 2463534242u;
    long rounds = runner_scaled(20000);
    for (long i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        uintptr_t spin = x % 256;
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, spin_then_return, (void *)spin));
        void *res = NULL;
        /* the join case and a few that are never ready (semaphores: their nodes are queued before the
         * join's, which widens the time between the look and the queueing) */
        weft_wait_case_t cs[1 + SEMS] = {{.op = WEFT_JOIN, .fiber = f, .elem = &res}};
        for (int k = 0; k < SEMS; k++)
            cs[1 + k] = (weft_wait_case_t){.op = WEFT_SEM, .obj = &sems[k]};
        int r = weft_select_any(cs, 1 + SEMS, weft_deadline_in(20 * SEC));
        if (r != 0 || cs[0].result != 0 || (uintptr_t)res != spin + 1)
            FAIL("round %ld: the select gave %d, result %d (%s), value %p (want %p)", i, r, cs[0].result,
                 runner_err_name(cs[0].result), res, (void *)(spin + 1));
        ASSERT_ERR(weft_fiber_state(f), -ESRCH);
        if (i % 64 == 63)
            weft_yield(); /* selects that never park would keep the worker for ever */
    }
    for (int k = 0; k < SEMS; k++)
        ASSERT_OK(weft_sem_destroy(&sems[k])); /* no node left on them */
    return NULL;
}

TEST(a_join_case_racing_its_fiber_finishing_joins_it_once)
{
    start_workers(2);
    in_fiber(join_racing_the_finish, NULL);
    ASSERT_OK(weft_shutdown());
}

/* No runtime: plain threads select over every kind that needs none; the fd cases say -ESHUTDOWN and
 * the whole call takes nothing. */
typedef struct {
    weft_sem_t *s;
    weft_mutex_t *m;
    weft_chan_t *c;
} plain_waker_arg;

static void *plain_waker_no_runtime(void *arg)
{
    plain_waker_arg *a = arg;
    long v = 8;
    pause_ms(2);
    ASSERT_OK(weft_sem_release(a->s, 1));
    pause_ms(2);
    ASSERT_OK(weft_mutex_unlock(a->m));
    pause_ms(2);
    ASSERT_OK(weft_chan_send(a->c, &v, WEFT_FOREVER));
    return NULL;
}

TEST(select_any_works_on_plain_threads_without_a_runtime)
{
    ASSERT_EQ(weft_workers(), 0);
    weft_sem_t s, gate;
    weft_mutex_t m;
    weft_wg_t wg;
    weft_latch_t l;
    ASSERT_OK(weft_sem_init(&s, 1));
    ASSERT_OK(weft_sem_init(&gate, 0));
    ASSERT_OK(weft_mutex_init(&m));
    ASSERT_OK(weft_wg_init(&wg));
    ASSERT_OK(weft_latch_init(&l, 0));
    weft_chan_t *c = mk(1), *never = mk(0);
    long v = 3, got = 0;
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));

    /* ready at once */
    weft_wait_case_t one[1];
    one[0] = (weft_wait_case_t){.op = WEFT_SEM, .obj = &s};
    ASSERT_EQ(weft_select_any(one, 1, WEFT_NOWAIT), 0);
    ASSERT_EQ(weft_sem_value(&s), 0);
    one[0] = (weft_wait_case_t){.op = WEFT_RECV, .chan = c, .elem = &got};
    ASSERT_EQ(weft_select_any(one, 1, WEFT_NOWAIT), 0);
    ASSERT_EQ(got, 3);
    one[0] = (weft_wait_case_t){.op = WEFT_WG, .obj = &wg};
    ASSERT_EQ(weft_select_any(one, 1, WEFT_NOWAIT), 0);
    one[0] = (weft_wait_case_t){.op = WEFT_LATCH, .obj = &l};
    ASSERT_EQ(weft_select_any(one, 1, WEFT_NOWAIT), 0);
    one[0] = (weft_wait_case_t){.op = WEFT_LOCK, .obj = &m};
    ASSERT_EQ(weft_select_any(one, 1, WEFT_NOWAIT), 0);
    ASSERT_ERR(weft_mutex_trylock(&m), -EBUSY); /* ours, and it stays so for the parked part below */

    /* parked, woken by another plain thread: a permit, then the mutex, then an element */
    plain_waker_arg pa = {&s, &m, c};
    pthread_t pt;
    ASSERT_EQ(pthread_create(&pt, NULL, plain_waker_no_runtime, &pa), 0);
    int seen[3] = {0};
    for (int i = 0; i < 3; i++) {
        weft_wait_case_t cs[4] = {
            {.op = WEFT_RECV, .chan = never},
            {.op = WEFT_SEM, .obj = seen[0] ? NULL : &s},
            {.op = WEFT_LOCK, .obj = seen[1] ? NULL : &m},
            {.op = WEFT_RECV, .chan = seen[2] ? NULL : c, .elem = &got},
        };
        int r = weft_select_any(cs, 4, weft_deadline_in(20 * SEC));
        ASSERT(r >= 1 && r <= 3);
        ASSERT_EQ(cs[r].result, 0);
        seen[r - 1]++;
    }
    ASSERT_EQ(pthread_join(pt, NULL), 0);
    ASSERT(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
    ASSERT_EQ(got, 8);
    ASSERT_EQ(weft_sem_value(&s), 0);
    ASSERT_OK(weft_mutex_unlock(&m)); /* the select had locked it for us */

    /* a weft thread, joined by a select on this thread */
    weft_fiber_t t;
    ASSERT_OK(weft_thread_spawn(&t, NULL, gated_9, &gate));
    opener_arg oa = {.gate = &gate, .selector = WEFT_FIBER_NONE};
    ASSERT_EQ(pthread_create(&pt, NULL, open_gate_when_parked, &oa), 0);
    atomic_store(&oa.armed, 1);
    void *res = NULL;
    weft_wait_case_t j[2] = {{.op = WEFT_RECV, .chan = never}, {.op = WEFT_JOIN, .fiber = t, .elem = &res}};
    ASSERT_EQ(weft_select_any(j, 2, weft_deadline_in(20 * SEC)), 1);
    ASSERT_EQ((intptr_t)res, 9);
    ASSERT_ERR(weft_fiber_state(t), -ESRCH);
    ASSERT_EQ(pthread_join(pt, NULL), 0);

    /* an fd case needs the poller: -ESHUTDOWN, and the ready permit beside it is not taken */
    int p[2];
    mkpipe(p);
    ASSERT_EQ(write(p[1], "x", 1), 1);
    ASSERT_OK(weft_sem_release(&s, 1));
    weft_wait_case_t fds[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_FD_READ, .fd = p[0]}};
    ASSERT_ERR(weft_select_any(fds, 2, WEFT_NOWAIT), -ESHUTDOWN);
    fds[1].op = WEFT_FD_WRITE;
    fds[1].fd = p[1];
    ASSERT_ERR(weft_select_any(fds, 2, weft_deadline_in(20 * SEC)), -ESHUTDOWN);
    ASSERT_EQ(weft_sem_value(&s), 1);
    close(p[0]);
    close(p[1]);

    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_chan_free(never));
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_sem_destroy(&gate));
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_latch_destroy(&l));
    ASSERT_EQ(weft_workers(), 0); /* nothing started the runtime */
}

/* ------------------------------------------------------------------------------------------------ */
/* Exactly once                                                                                      */

static void *not_chosen_takes_nothing(void *unused)
{
    (void)unused;
    weft_chan_t *c = mk(1), *room = mk(1);
    weft_sem_t s;
    weft_mutex_t m;
    ASSERT_OK(weft_sem_init(&s, 0));
    ASSERT_OK(weft_mutex_init(&m));
    int p[2];
    mkpipe(p);
    ASSERT_EQ(write(p[1], "x", 1), 1); /* never read: always readable */
    long v = 1, got, out = 2;
    enum { N = 6 };
    int chosen[N] = {0};
    long rounds = runner_scaled(3000);
    for (long i = 0; i < rounds; i++) {
        /* every case ready: a permit, an element, room, a free mutex, a finished fiber, a readable pipe */
        ASSERT_OK(weft_sem_release(&s, 1));
        ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
        weft_fiber_t f = finished_fiber();
        void *res = NULL;
        got = 0;
        weft_wait_case_t cs[N] = {
            {.op = WEFT_SEM, .obj = &s},
            {.op = WEFT_RECV, .chan = c, .elem = &got},
            {.op = WEFT_LOCK, .obj = &m},
            {.op = WEFT_JOIN, .fiber = f, .elem = &res},
            {.op = WEFT_FD_READ, .fd = p[0]},
            {.op = WEFT_SEND, .chan = room, .elem = &out},
        };
        int r = weft_select_any(cs, N, WEFT_NOWAIT);
        ASSERT(r >= 0 && r < N);
        chosen[r]++;
        /* the chosen one happened, none of the others did */
        ASSERT_EQ(weft_sem_value(&s), r == 0 ? 0 : 1);
        ASSERT_EQ(weft_chan_len(c), r == 1 ? 0 : 1);
        ASSERT_EQ(got, r == 1 ? 1 : 0);
        ASSERT_ERR(weft_mutex_trylock(&m), r == 2 ? -EBUSY : 0); /* a lock not chosen left it free */
        ASSERT_OK(weft_mutex_unlock(&m));
        if (r == 3) {
            ASSERT_EQ((intptr_t)res, 7);
            ASSERT_ERR(weft_join(f, NULL), -ESRCH);
        } else {
            ASSERT(res == NULL);
            ASSERT_EQ(weft_fiber_state(f), WEFT_DONE);
            ASSERT_OK(weft_join(f, &res)); /* still joinable */
            ASSERT_EQ((intptr_t)res, 7);
        }
        ASSERT_EQ(weft_chan_len(room), r == 5 ? 1 : 0);
        if (r != 0)
            ASSERT_OK(weft_sem_acquire(&s, WEFT_NOWAIT));
        if (r != 1)
            ASSERT_OK(weft_chan_recv(c, &got, WEFT_NOWAIT));
        if (r == 5)
            ASSERT_OK(weft_chan_recv(room, &got, WEFT_NOWAIT));
    }
    for (int k = 0; k < N; k++)
        if (chosen[k] == 0)
            FAIL("case %d never chosen in %ld selects", k, rounds);
    /* the simplest pair, as the brief of the API says: a permit and an element, one taken each time */
    long sems = 0, elems = 0;
    for (long i = 0; i < rounds; i++) {
        if (weft_sem_value(&s) == 0)
            ASSERT_OK(weft_sem_release(&s, 1));
        if (weft_chan_len(c) == 0)
            ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
        weft_wait_case_t cs[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_RECV, .chan = c, .elem = &got}};
        int r = weft_select_any(cs, 2, WEFT_NOWAIT);
        ASSERT(r == 0 || r == 1);
        sems += r == 0;
        elems += r == 1;
        ASSERT_EQ(weft_sem_value(&s) + (int64_t)weft_chan_len(c), 1); /* exactly one of the two went */
    }
    ASSERT_EQ(sems + elems, rounds);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_chan_free(room));
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_OK(weft_close(p[0]));
    close(p[1]);
    return NULL;
}

TEST(a_case_not_chosen_takes_nothing)
{
    start_workers(2);
    in_fiber(not_chosen_takes_nothing, NULL);
    ASSERT_OK(weft_shutdown());
}

/* Wakers race for one parked select, each from a thread of its own: a permit released and an element
 * sent and a byte written (plain threads), the mutex unlocked (a weft thread), and a fiber finishing.
 * Whatever the select took, everything else is still there; over all rounds every permit, element,
 * lock and join is accounted for exactly once. */
enum { R_SEM, R_SEND, R_FD, R_UNLOCK, RACERS };

typedef struct {
    weft_sem_t s;
    weft_chan_t *c;
    weft_mutex_t m;
    int p[2];
    sem_t go[RACERS];
    weft_sem_t done;
    _Atomic int stop;
} race;

typedef struct {
    race *r;
    int which;
} racer_arg;

static void *racer(void *arg)
{
    racer_arg *a = arg;
    race *r = a->r;
    for (;;) {
        while (sem_wait(&r->go[a->which]) != 0)
            ASSERT_EQ(errno, EINTR);
        if (atomic_load(&r->stop))
            return NULL;
        long v = 3;
        switch (a->which) {
        case R_SEM: ASSERT_OK(weft_sem_release(&r->s, 1)); break;
        case R_SEND: ASSERT_OK(weft_chan_send(r->c, &v, WEFT_FOREVER)); break;
        case R_FD: ASSERT_EQ(write(r->p[1], "x", 1), 1); break;
        default: ASSERT_OK(weft_mutex_unlock(&r->m)); break;
        }
        ASSERT_OK(weft_sem_release(&r->done, 1));
    }
}

static void *return_11(void *arg)
{
    (void)arg;
    weft_yield();
    return (void *)11;
}

static void *racing_wakers(void *unused)
{
    (void)unused;
    race rc;
    memset(&rc, 0, sizeof rc);
    ASSERT_OK(weft_sem_init(&rc.s, 0));
    ASSERT_OK(weft_sem_init(&rc.done, 0));
    ASSERT_OK(weft_mutex_init(&rc.m));
    rc.c = mk(1);
    mkpipe(rc.p);
    racer_arg ra[RACERS];
    pthread_t pt[RACERS];
    weft_fiber_t unlocker;
    for (int i = 0; i < RACERS; i++) {
        ASSERT_EQ(sem_init(&rc.go[i], 0, 0), 0);
        ra[i] = (racer_arg){&rc, i};
        if (i == R_UNLOCK)
            ASSERT_OK(weft_thread_spawn(&unlocker, NULL, racer, &ra[i]));
        else
            ASSERT_EQ(pthread_create(&pt[i], NULL, racer, &ra[i]), 0);
    }
    long rounds = runner_scaled(2000);
    long taken[5] = {0};
    for (long i = 0; i < rounds; i++) {
        ASSERT_OK(weft_mutex_lock(&rc.m, WEFT_NOWAIT)); /* ours until the unlocker lets it go */
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, return_11, NULL));
        long got = 0;
        void *res = NULL;
        weft_wait_case_t cs[5] = {
            {.op = WEFT_SEM, .obj = &rc.s},
            {.op = WEFT_RECV, .chan = rc.c, .elem = &got},
            {.op = WEFT_LOCK, .obj = &rc.m},
            {.op = WEFT_JOIN, .fiber = f, .elem = &res},
            {.op = WEFT_FD_READ, .fd = rc.p[0]},
        };
        for (int k = 0; k < RACERS; k++)
            ASSERT_EQ(sem_post(&rc.go[k]), 0);
        int r = weft_select_any(cs, 5, weft_deadline_in(20 * SEC));
        ASSERT(r >= 0 && r < 5);
        if (r != 4 && cs[r].result != 0)
            FAIL("round %ld: case %d was chosen with result %d (%s)", i, r, cs[r].result,
                 runner_err_name(cs[r].result));
        taken[r]++;
        for (int k = 0; k < RACERS; k++)
            ASSERT_OK(weft_sem_acquire(&rc.done, weft_deadline_in(20 * SEC)));
        /* every waker has acted: exactly the chosen case was taken */
        ASSERT_EQ(weft_sem_value(&rc.s), r == 0 ? 0 : 1);
        ASSERT_EQ(weft_chan_len(rc.c), r == 1 ? 0 : 1);
        ASSERT_EQ(got, r == 1 ? 3 : 0);
        ASSERT_ERR(weft_mutex_trylock(&rc.m), r == 2 ? -EBUSY : 0);
        ASSERT_OK(weft_mutex_unlock(&rc.m));
        if (r == 3) {
            ASSERT_EQ((intptr_t)res, 11);
            ASSERT_ERR(weft_fiber_state(f), -ESRCH);
        } else {
            ASSERT(res == NULL);
            ASSERT_OK(weft_join(f, &res)); /* not joined by the select: still joinable */
            ASSERT_EQ((intptr_t)res, 11);
        }
        if (r == 4)
            ASSERT(cs[4].result > 0 && (cs[4].result & WEFT_READABLE));
        char b;
        ASSERT_EQ(read(rc.p[0], &b, 1), 1); /* an fd case reads nothing: the byte is there */
        if (r != 0)
            ASSERT_OK(weft_sem_acquire(&rc.s, WEFT_NOWAIT));
        if (r != 1)
            ASSERT_OK(weft_chan_recv(rc.c, &got, WEFT_NOWAIT));
    }
    atomic_store(&rc.stop, 1);
    for (int k = 0; k < RACERS; k++)
        ASSERT_EQ(sem_post(&rc.go[k]), 0);
    for (int k = 0; k < RACERS; k++) {
        if (k == R_UNLOCK)
            ASSERT_OK(weft_join(unlocker, NULL));
        else
            ASSERT_EQ(pthread_join(pt[k], NULL), 0);
        sem_destroy(&rc.go[k]);
    }
    ASSERT_EQ(taken[0] + taken[1] + taken[2] + taken[3] + taken[4], rounds);
    printf("taken: sem %ld, recv %ld, lock %ld, join %ld, fd %ld\n", taken[0], taken[1], taken[2], taken[3],
           taken[4]);
    ASSERT_EQ(weft_sem_value(&rc.s), 0);
    ASSERT_EQ(weft_chan_len(rc.c), 0);
    ASSERT_OK(weft_chan_free(rc.c));
    ASSERT_OK(weft_sem_destroy(&rc.s));
    ASSERT_OK(weft_sem_destroy(&rc.done));
    ASSERT_OK(weft_mutex_destroy(&rc.m));
    ASSERT_OK(weft_close(rc.p[0]));
    close(rc.p[1]);
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
    enum { N = 10000, K = 8 };
    weft_chan_t *full = mk(1), *room = mk(1);
    weft_wg_t wg;
    weft_latch_t l;
    weft_sem_t s;
    weft_mutex_t m;
    ASSERT_OK(weft_wg_init(&wg));
    ASSERT_OK(weft_latch_init(&l, 0));
    ASSERT_OK(weft_sem_init(&s, 1));
    ASSERT_OK(weft_mutex_init(&m));
    int p[2], q[2];
    mkpipe(p);
    mkpipe(q);
    ASSERT_EQ(write(p[1], "x", 1), 1); /* never read: always readable; q always has room */
    long v = 1, got, out = 2;
    ASSERT_OK(weft_chan_send(full, &v, WEFT_NOWAIT));
    int count[K] = {0};
    for (int i = 0; i < N; i++) {
        weft_wait_case_t cs[K] = {
            {.op = WEFT_RECV, .chan = full, .elem = &got}, {.op = WEFT_SEND, .chan = room, .elem = &out},
            {.op = WEFT_WG, .obj = &wg},                   {.op = WEFT_LATCH, .obj = &l},
            {.op = WEFT_SEM, .obj = &s},                   {.op = WEFT_LOCK, .obj = &m},
            {.op = WEFT_FD_READ, .fd = p[0]},              {.op = WEFT_FD_WRITE, .fd = q[1]},
        };
        int r = weft_select_any(cs, K, WEFT_NOWAIT);
        ASSERT(r >= 0 && r < K);
        count[r]++;
        /* put back what the chosen case took, so every case stays ready */
        if (r == 0)
            ASSERT_OK(weft_chan_send(full, &v, WEFT_NOWAIT));
        if (r == 1)
            ASSERT_OK(weft_chan_recv(room, &got, WEFT_NOWAIT));
        if (r == 4)
            ASSERT_OK(weft_sem_release(&s, 1));
        if (r == 5)
            ASSERT_OK(weft_mutex_unlock(&m));
    }
    /* each wins with p = 1/K: within 10 sigma of N/K, compared squared (no libm) */
    double mean = (double)N / K, var = N * (1.0 / K) * (1.0 - 1.0 / K);
    for (int k = 0; k < K; k++) {
        double d = count[k] - mean;
        if (d * d > 100 * var)
            FAIL("case %d won %d of %d selects, expected %.0f, more than 10 sigma (variance %.0f) off", k,
                 count[k], N, mean, var);
    }
    ASSERT_EQ(weft_chan_len(full), 1);
    ASSERT_EQ(weft_chan_len(room), 0);
    ASSERT_EQ(weft_sem_value(&s), 1);
    ASSERT_OK(weft_mutex_trylock(&m)); /* free after all */
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_OK(weft_chan_free(full));
    ASSERT_OK(weft_chan_free(room));
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_wg_destroy(&wg));
    ASSERT_OK(weft_latch_destroy(&l));
    ASSERT_OK(weft_close(p[0]));
    ASSERT_OK(weft_close(q[1]));
    close(p[1]);
    close(q[0]);
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

/* The cases of the kinds in mask. */
static int cases_of(objs *o, unsigned mask, weft_wait_case_t *cs)
{
    int n = 0;
    for (int k = 0; k < KINDS; k++)
        if (mask & (1u << k))
            cs[n++] = case_of(o, k);
    return n;
}

static void mask_name(unsigned mask, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int k = 0; k < KINDS; k++)
        if (mask & (1u << k)) {
            size_t at = strlen(buf);
            snprintf(buf + at, len - at, "%s%s", at ? " + " : "", kind_name[k]);
        }
}

static void *deadline_every_mix(void *unused)
{
    (void)unused;
    /* every kind alone, every pair, then all: each times out, took nothing, and leaves every object
     * usable by plain waits that park */
    for (int a = 0; a < KINDS; a++) {
        for (int b = a; b <= KINDS; b++) {
            unsigned mask = b == KINDS ? (a == 0 ? (1u << KINDS) - 1 : 0) : (1u << a) | (1u << b);
            if (!mask)
                continue;
            objs o;
            objs_not_ready(&o);
            weft_wait_case_t cs[KINDS];
            int n = cases_of(&o, mask, cs);
            int r = weft_select_any(cs, n, weft_deadline_in(1 * MS));
            if (r != -ETIMEDOUT) {
                char name[128];
                mask_name(mask, name, sizeof name);
                FAIL("%s: %d", name, r);
            }
            objs_check_usable(&o);
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
    unsigned mask;
    int r;
    _Atomic int armed;
} cancel_arg;

static void *select_forever(void *arg)
{
    cancel_arg *c = arg;
    weft_wait_case_t cs[KINDS];
    int n = cases_of(c->o, c->mask, cs);
    atomic_store(&c->armed, 1);
    c->r = weft_select_any(cs, n, WEFT_FOREVER);
    return NULL;
}

/* A select over the kinds in mask, parked in a fiber, cancelled by the caller (a fiber or not). */
static void cancel_one(unsigned mask)
{
    objs o;
    objs_not_ready(&o);
    cancel_arg c = {.o = &o, .mask = mask, .r = 1};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, select_forever, &c));
    WAIT_UNTIL(atomic_load(&c.armed) && weft_fiber_state(f) == WEFT_WAITING);
    ASSERT_OK(weft_cancel(f));
    ASSERT_OK(weft_join(f, NULL));
    if (c.r != -ECANCELED) {
        char name[128];
        mask_name(mask, name, sizeof name);
        FAIL("%s: cancelled, the select gave %d", name, c.r);
    }
    objs_check_usable(&o);
    objs_free(&o);
}

static void *cancel_every_mix(void *unused)
{
    (void)unused;
    long rounds = runner_scaled(10);
    for (long i = 0; i < rounds; i++) {
        for (int k = 0; k < KINDS; k++)
            cancel_one(1u << k);
        cancel_one((1u << KINDS) - 1);
    }
    return NULL;
}

TEST(a_cancel_ends_a_parked_select_in_every_mix_and_takes_nothing)
{
    start_workers(2);
    in_fiber(cancel_every_mix, NULL); /* cancelled from a fiber */
    for (int k = 0; k < KINDS; k++)   /* and from this thread, which is not one */
        cancel_one(1u << k);
    cancel_one((1u << KINDS) - 1);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Edges                                                                                             */

static void *bad_cases(void *unused)
{
    (void)unused;
    /* ready cases of every kind that takes something, and a bad one first or last: the call fails,
     * nothing happened, and what the cases read had taken (an fd's reference, a join) is given back */
    static weft_sem_t gate; /* the detached fiber's: it outlives no frame */
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 1));
    ASSERT_OK(weft_sem_init(&gate, 0));
    weft_mutex_t m;
    ASSERT_OK(weft_mutex_init(&m));
    weft_chan_t *c = mk(1);
    long v = 1, got = 0;
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
    int p[2];
    mkpipe(p);
    ASSERT_EQ(write(p[1], "x", 1), 1);
    weft_fiber_t f = finished_fiber();

    weft_fiber_t stale = finished_fiber();
    ASSERT_OK(weft_join(stale, NULL));
    weft_fiber_t detached; /* alive until the end: its handle is not stale */
    ASSERT_OK(weft_spawn(&detached, NULL, gated_9, &gate));
    ASSERT_OK(weft_detach(detached));
    struct {
        weft_wait_case_t c;
        int err;
    } bad[] = {
        {{.op = 99}, -EINVAL},
        {{.op = 0}, -EINVAL},
        {{.op = WEFT_SEND, .chan = c, .elem = NULL}, -EINVAL},
        {{.op = WEFT_JOIN, .fiber = stale}, -ESRCH},
        {{.op = WEFT_JOIN, .fiber = detached}, -EINVAL},
        {{.op = WEFT_JOIN, .fiber = weft_self()}, -EDEADLK},
    };
    void *res = NULL;
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        for (int last = 0; last < 2; last++) {
            weft_wait_case_t ready[5] = {
                {.op = WEFT_SEM, .obj = &s},
                {.op = WEFT_RECV, .chan = c, .elem = &got},
                {.op = WEFT_LOCK, .obj = &m},
                {.op = WEFT_JOIN, .fiber = f, .elem = &res},
                {.op = WEFT_FD_READ, .fd = p[0]},
            };
            weft_wait_case_t cs[6];
            cs[last ? 5 : 0] = bad[b].c;
            memcpy(&cs[last ? 0 : 1], ready, sizeof ready);
            int r = weft_select_any(cs, 6, WEFT_NOWAIT);
            if (r != bad[b].err)
                FAIL("bad case %zu (%s): want %d, got %d", b, last ? "last" : "first", bad[b].err, r);
            r = weft_select_any(cs, 6, weft_deadline_in(20 * SEC));
            if (r != bad[b].err)
                FAIL("bad case %zu (%s), with a deadline: want %d, got %d", b, last ? "last" : "first",
                     bad[b].err, r);
            ASSERT_EQ(weft_sem_value(&s), 1);
            ASSERT_EQ(weft_chan_len(c), 1);
            ASSERT_EQ(got, 0);
            ASSERT_OK(weft_mutex_trylock(&m));
            ASSERT_OK(weft_mutex_unlock(&m));
            ASSERT(res == NULL);
            ASSERT_EQ(weft_fiber_state(f), WEFT_DONE);
        }
    }
    weft_wait_case_t ok[1] = {{.op = WEFT_SEM, .obj = &s}};
    ASSERT_ERR(weft_select_any(NULL, 1, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_select_any(ok, -1, WEFT_NOWAIT), -EINVAL);
    ASSERT_EQ(weft_sem_value(&s), 1);
    /* a join that failed calls let go of is joinable as ever; the fd's references are all given back,
     * else weft_close would wait for them for ever */
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, 7);
    ASSERT_OK(weft_close(p[0]));
    close(p[1]);
    ASSERT_OK(weft_sem_release(&gate, 1)); /* the detached fiber goes */
    WAIT_UNTIL(weft_fiber_state(detached) == -ESRCH);
    ASSERT_OK(weft_sem_destroy(&gate));
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_mutex_destroy(&m));
    return NULL;
}

TEST(bad_cases_fail_the_whole_call_and_take_nothing)
{
    start_workers(2);
    in_fiber(bad_cases, NULL);
    ASSERT_OK(weft_shutdown());
}

/* While a select's join case waits on a fiber, every other join of it is refused (-EINVAL), as a
 * second weft_join would be; the select gets it. */
typedef struct {
    weft_fiber_t target;
    void *res;
    int r;
    _Atomic int armed;
} join_sel_arg;

static void *select_join(void *arg)
{
    join_sel_arg *a = arg;
    weft_wait_case_t cs[1] = {{.op = WEFT_JOIN, .fiber = a->target, .elem = &a->res}};
    atomic_store(&a->armed, 1);
    a->r = weft_select_any(cs, 1, weft_deadline_in(20 * SEC));
    return NULL;
}

static void *join_under_way(void *unused)
{
    (void)unused;
    weft_sem_t gate;
    ASSERT_OK(weft_sem_init(&gate, 0));
    weft_fiber_t target;
    ASSERT_OK(weft_spawn(&target, NULL, gated_9, &gate));
    join_sel_arg a = {.target = target, .r = 1};
    weft_fiber_t sel;
    ASSERT_OK(weft_spawn(&sel, NULL, select_join, &a));
    WAIT_UNTIL(atomic_load(&a.armed) && weft_fiber_state(sel) == WEFT_WAITING);
    weft_wait_case_t cs[1] = {{.op = WEFT_JOIN, .fiber = target}};
    ASSERT_ERR(weft_select_any(cs, 1, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_select_any(cs, 1, weft_deadline_in(1 * MS)), -EINVAL);
    ASSERT_ERR(weft_join_until(target, NULL, weft_deadline_in(1 * MS)), -EINVAL);
    ASSERT_ERR(weft_detach(target), -EINVAL);
    ASSERT_OK(weft_sem_release(&gate, 1));
    ASSERT_OK(weft_join(sel, NULL));
    ASSERT_EQ(a.r, 0);
    ASSERT_EQ((intptr_t)a.res, 9);
    ASSERT_ERR(weft_join(target, NULL), -ESRCH);
    ASSERT_ERR(weft_select_any(cs, 1, WEFT_NOWAIT), -ESRCH);
    ASSERT_OK(weft_sem_destroy(&gate));
    return NULL;
}

TEST(a_join_case_under_way_refuses_every_other_join)
{
    start_workers(2);
    in_fiber(join_under_way, NULL);
    ASSERT_OK(weft_shutdown());
}

/* An fd weft_close'd while a select waits on it: that case is chosen, with -EBADF. */
typedef struct {
    int fd;
    weft_fiber_t selector;
    _Atomic int armed;
} close_arg;

static void *close_when_parked(void *arg)
{
    close_arg *a = arg;
    WAIT_UNTIL(atomic_load(&a->armed));
    wait_parked(a->selector);
    ASSERT_OK(weft_close(a->fd));
    return NULL;
}

static void *closed_fds(void *unused)
{
    (void)unused;
    weft_chan_t *never = mk(0);
    for (int dir = 0; dir < 2; dir++) {
        long rounds = runner_scaled(20);
        for (long i = 0; i < rounds; i++) {
            int p[2];
            mkpipe(p);
            int fd = p[0];
            if (dir) { /* the write end of a full pipe */
                fd = p[1];
                ASSERT_EQ(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
                char buf[4096] = {0};
                while (write(fd, buf, sizeof buf) > 0)
                    ;
            }
            weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never},
                                      {.op = dir ? WEFT_FD_WRITE : WEFT_FD_READ, .fd = fd}};
            close_arg ca = {.fd = fd, .selector = weft_self()};
            weft_fiber_t closer;
            ASSERT_OK(weft_spawn(&closer, NULL, close_when_parked, &ca));
            atomic_store(&ca.armed, 1);
            ASSERT_EQ(weft_select_any(cs, 2, weft_deadline_in(20 * SEC)), 1);
            ASSERT_ERR(cs[1].result, -EBADF);
            ASSERT_OK(weft_join(closer, NULL));
            close(dir ? p[0] : p[1]);
        }
    }
    /* an fd that is not open is ready at once with -EBADF */
    int p[2];
    mkpipe(p);
    ASSERT_OK(weft_close(p[0]));
    close(p[1]);
    ASSERT(fcntl(p[0], F_GETFD) == -1 && errno == EBADF);
    weft_wait_case_t cs[2] = {{.op = WEFT_RECV, .chan = never}, {.op = WEFT_FD_READ, .fd = p[0]}};
    ASSERT_EQ(weft_select_any(cs, 2, WEFT_NOWAIT), 1);
    ASSERT_ERR(cs[1].result, -EBADF);
    cs[1].op = WEFT_FD_WRITE;
    ASSERT_EQ(weft_select_any(cs, 2, weft_deadline_in(20 * SEC)), 1);
    ASSERT_ERR(cs[1].result, -EBADF);
    ASSERT_OK(weft_chan_free(never));
    return NULL;
}

TEST(an_fd_closed_under_a_select_is_chosen_with_ebadf)
{
    start_workers(2);
    in_fiber(closed_fds, NULL);
    ASSERT_OK(weft_shutdown());
}

/* A closed channel is ready with -EPIPE, for a receive (once drained) and a send; and a close wakes a
 * select parked on it. */
typedef struct {
    weft_chan_t *c;
    weft_fiber_t selector;
    _Atomic int armed;
} chan_close_arg;

static void *close_chan_when_parked(void *arg)
{
    chan_close_arg *a = arg;
    WAIT_UNTIL(atomic_load(&a->armed));
    wait_parked(a->selector);
    ASSERT_OK(weft_chan_close(a->c));
    return NULL;
}

static void *closed_channels(void *unused)
{
    (void)unused;
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 0));
    long v = 1, got = 0;
    weft_chan_t *c = mk(1);
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_close(c));
    weft_wait_case_t cc[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_RECV, .chan = c, .elem = &got}};
    ASSERT_EQ(weft_select_any(cc, 2, WEFT_NOWAIT), 1); /* what is buffered comes first */
    ASSERT_EQ(cc[1].result, 0);
    ASSERT_EQ(got, 1);
    ASSERT_EQ(weft_select_any(cc, 2, WEFT_NOWAIT), 1);
    ASSERT_ERR(cc[1].result, -EPIPE);
    cc[1].op = WEFT_SEND;
    cc[1].elem = &v;
    ASSERT_EQ(weft_select_any(cc, 2, WEFT_NOWAIT), 1);
    ASSERT_ERR(cc[1].result, -EPIPE);
    ASSERT_EQ(weft_chan_len(c), 0);
    ASSERT_OK(weft_chan_free(c));
    /* parked, then closed: a receive on an empty channel, a send on an unbuffered one */
    for (int op = 0; op < 2; op++) {
        c = mk(op ? 0 : 1);
        weft_wait_case_t cs[2] = {{.op = WEFT_SEM, .obj = &s},
                                  {.op = op ? WEFT_SEND : WEFT_RECV, .chan = c, .elem = op ? &v : &got}};
        chan_close_arg ca = {.c = c, .selector = weft_self()};
        weft_fiber_t closer;
        ASSERT_OK(weft_spawn(&closer, NULL, close_chan_when_parked, &ca));
        atomic_store(&ca.armed, 1);
        ASSERT_EQ(weft_select_any(cs, 2, weft_deadline_in(20 * SEC)), 1);
        ASSERT_ERR(cs[1].result, -EPIPE);
        ASSERT_OK(weft_join(closer, NULL));
        ASSERT_OK(weft_chan_free(c));
    }
    ASSERT_EQ(weft_sem_value(&s), 0);
    ASSERT_OK(weft_sem_destroy(&s));
    return NULL;
}

TEST(closed_channels_are_ready_with_epipe)
{
    start_workers(2);
    in_fiber(closed_channels, NULL);
    ASSERT_OK(weft_shutdown());
}

/* Past 16 cases the select keeps its bookkeeping on the heap: four sets of every kind (and a few
 * missing objects), parked until one case of each kind in turn is made ready. */
static void *many_cases(void *unused)
{
    (void)unused;
    enum { SETS = 4, N = SETS * KINDS + 4 };
    for (int k = 0; k < KINDS; k++) {
        objs o[SETS];
        weft_wait_case_t cs[N];
        for (int s = 0; s < SETS; s++) {
            objs_not_ready(&o[s]);
            for (int kk = 0; kk < KINDS; kk++)
                cs[s * KINDS + kk] = case_of(&o[s], kk);
        }
        for (int i = SETS * KINDS; i < N; i++)
            cs[i] = (weft_wait_case_t){.op = i % 2 ? WEFT_SEM : WEFT_RECV};
        if (k == 0) {
            ASSERT_ERR(weft_select_any(cs, N, WEFT_NOWAIT), -ETIMEDOUT);
            ASSERT_ERR(weft_select_any(cs, N, weft_deadline_in(1 * MS)), -ETIMEDOUT);
        }
        waker_arg w = {.o = &o[2], .k = k, .selector = weft_self()};
        weft_fiber_t wf;
        ASSERT_OK(weft_spawn(&wf, NULL, waker, &w));
        atomic_store(&w.armed, 1);
        int r = weft_select_any(cs, N, weft_deadline_in(20 * SEC));
        if (r != 2 * KINDS + k)
            FAIL("%s in the third set: the select gave %d, not %d", kind_name[k], r, 2 * KINDS + k);
        check_chosen(&o[2], k, &cs[r]);
        ASSERT_OK(weft_join(wf, NULL));
        for (int s = 0; s < SETS; s++) {
            if (s != 2)
                check_untouched(&o[s]);
            objs_free(&o[s]);
        }
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
    /* each kind twice in one select, parked until it is made ready: one of the two happens */
    for (int k = 0; k < KINDS; k++) {
        objs o;
        objs_not_ready(&o);
        weft_wait_case_t cs[2] = {case_of(&o, k), case_of(&o, k)};
        void *other = NULL;
        if (k == K_JOIN)
            cs[1].elem = &other;
        ASSERT_ERR(weft_select_any(cs, 2, weft_deadline_in(1 * MS)), -ETIMEDOUT);
        waker_arg w = {.o = &o, .k = k, .selector = weft_self()};
        weft_fiber_t wf;
        ASSERT_OK(weft_spawn(&wf, NULL, waker, &w));
        atomic_store(&w.armed, 1);
        int r = weft_select_any(cs, 2, weft_deadline_in(20 * SEC));
        if (r != 0 && r != 1)
            FAIL("%s twice: the select gave %d", kind_name[k], r);
        if (k == K_JOIN) {
            /* the result went to the chosen case's elem only */
            ASSERT(r == 0 ? other == NULL : o.joined == NULL);
            if (r == 1)
                o.joined = other;
        }
        check_chosen(&o, k, &cs[r]);
        ASSERT_OK(weft_join(wf, NULL));
        objs_free(&o);
    }

    /* the same semaphore twice, with two permits: one taken */
    weft_sem_t s;
    ASSERT_OK(weft_sem_init(&s, 2));
    weft_wait_case_t twice[2] = {{.op = WEFT_SEM, .obj = &s}, {.op = WEFT_SEM, .obj = &s}};
    int r = weft_select_any(twice, 2, WEFT_NOWAIT);
    ASSERT(r == 0 || r == 1);
    ASSERT_EQ(weft_sem_value(&s), 1);
    ASSERT_OK(weft_sem_acquire(&s, WEFT_NOWAIT));
    ASSERT_ERR(weft_select_any(twice, 2, weft_deadline_in(1 * MS)), -ETIMEDOUT);

    /* the same unbuffered channel as a send and a receive: the select never meets itself */
    weft_chan_t *c = mk(0);
    long a = 1, b = 0;
    weft_wait_case_t both[3] = {{.op = WEFT_SEND, .chan = c, .elem = &a},
                                {.op = WEFT_RECV, .chan = c, .elem = &b},
                                {.op = WEFT_SEM, .obj = &s}};
    ASSERT_ERR(weft_select_any(both, 3, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_select_any(both, 3, weft_deadline_in(2 * MS)), -ETIMEDOUT);
    ASSERT_OK(weft_sem_release(&s, 1));
    ASSERT_EQ(weft_select_any(both, 3, WEFT_FOREVER), 2);
    ASSERT_EQ(b, 0);
    ASSERT_OK(weft_chan_free(c));

    /* a buffered channel with an element and room, as a send and a receive: exactly one moves */
    c = mk(2);
    long seen[2] = {0};
    long rounds = runner_scaled(400);
    for (long i = 0; i < rounds; i++) {
        a = 10 + i;
        b = 0;
        ASSERT_OK(weft_chan_send(c, &a, WEFT_NOWAIT));
        weft_wait_case_t sr[2] = {{.op = WEFT_SEND, .chan = c, .elem = &a}, {.op = WEFT_RECV, .chan = c, .elem = &b}};
        r = weft_select_any(sr, 2, WEFT_NOWAIT);
        ASSERT(r == 0 || r == 1);
        seen[r]++;
        ASSERT_EQ(weft_chan_len(c), r == 0 ? 2 : 0);
        ASSERT_EQ(b, r == 1 ? 10 + i : 0);
        while (weft_chan_recv(c, NULL, WEFT_NOWAIT) == 0)
            ;
    }
    if (rounds >= 50) /* each is missed in all of them with odds 2^-rounds */
        ASSERT(seen[0] > 0 && seen[1] > 0);
    ASSERT_OK(weft_chan_free(c));

    /* the same mutex twice: locked once, and free after one unlock */
    weft_mutex_t m;
    ASSERT_OK(weft_mutex_init(&m));
    weft_wait_case_t locks[2] = {{.op = WEFT_LOCK, .obj = &m}, {.op = WEFT_LOCK, .obj = &m}};
    ASSERT(weft_select_any(locks, 2, WEFT_NOWAIT) >= 0);
    ASSERT_ERR(weft_select_any(locks, 2, weft_deadline_in(1 * MS)), -ETIMEDOUT);
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_OK(weft_mutex_trylock(&m));
    ASSERT_OK(weft_mutex_unlock(&m));
    ASSERT_ERR(weft_mutex_unlock(&m), -EPERM);
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_OK(weft_sem_destroy(&s));
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
    weft_mutex_t *m;
    weft_wg_t *stop;
    long *guarded; /* only under m */
    long lock_budget, n;
    _Atomic long elems, permits, locks;
} stress;

static void *stress_consumer(void *arg)
{
    stress *a = arg;
    long budget = a->lock_budget;
    for (;;) {
        long v = 0;
        weft_wait_case_t cs[4] = {
            {.op = WEFT_RECV, .chan = a->c, .elem = &v},
            {.op = WEFT_SEM, .obj = a->s},
            {.op = WEFT_LOCK, .obj = budget > 0 ? a->m : NULL},
            {.op = WEFT_WG, .obj = a->stop},
        };
        int r = weft_select_any(cs, 4, WEFT_FOREVER);
        switch (r) {
        case 0:
            ASSERT_EQ(cs[0].result, 0);
            atomic_fetch_add(&a->elems, v);
            break;
        case 1: atomic_fetch_add(&a->permits, 1); break;
        case 2: {
            long g = *a->guarded;
            if (budget % 4 == 0)
                weft_yield(); /* hold it across a switch now and then */
            *a->guarded = g + 1;
            ASSERT_OK(weft_mutex_unlock(a->m));
            budget--;
            atomic_fetch_add(&a->locks, 1);
            break;
        }
        case 3: return NULL;
        default: FAIL("a consumer's select gave %d", r);
        }
    }
}

static void *stress_producer(void *arg)
{
    stress *a = arg;
    for (long i = 1; i <= a->n; i++) {
        ASSERT_OK(weft_chan_send(a->c, &i, WEFT_FOREVER));
        if (i % 3 == 0)
            ASSERT_OK(weft_sem_release(a->s, 1));
        if (i % 5 == 0) {
            ASSERT_OK(weft_mutex_lock(a->m, WEFT_FOREVER));
            ++*a->guarded;
            ASSERT_OK(weft_mutex_unlock(a->m));
        }
    }
    return NULL;
}

TEST_TIMEOUT(many_selects_against_many_producers_balance_exactly, 120)
{
    start_workers(2);
    weft_chan_t *c = mk(4);
    weft_sem_t s;
    weft_mutex_t m;
    weft_wg_t stop;
    ASSERT_OK(weft_sem_init(&s, 0));
    ASSERT_OK(weft_mutex_init(&m));
    ASSERT_OK(weft_wg_init(&stop));
    ASSERT_OK(weft_wg_add(&stop, 1));
    long guarded = 0;
    enum { C = 6, P = 4 };
    stress st = {.c = c, .s = &s, .m = &m, .stop = &stop, .guarded = &guarded,
                 .lock_budget = runner_scaled(500), .n = runner_scaled(20000)};
    long n = st.n;
    weft_fiber_t cf[C], pf[P - 2], pt_weft;
    pthread_t pt;
    for (int i = 0; i < C; i++)
        ASSERT_OK(weft_spawn(&cf[i], NULL, stress_consumer, &st));
    for (int i = 0; i < P - 2; i++)
        ASSERT_OK(weft_spawn(&pf[i], NULL, stress_producer, &st));
    ASSERT_EQ(pthread_create(&pt, NULL, stress_producer, &st), 0);        /* a plain thread */
    ASSERT_OK(weft_thread_spawn(&pt_weft, NULL, stress_producer, &st)); /* and a weft thread */
    for (int i = 0; i < P - 2; i++)
        ASSERT_OK(weft_join(pf[i], NULL));
    ASSERT_EQ(pthread_join(pt, NULL), 0);
    ASSERT_OK(weft_join(pt_weft, NULL));
    /* every element and permit is taken and every consumer spent its locks; then the group opens and
     * every consumer leaves */
    long want_elems = P * (n * (n + 1) / 2), want_permits = P * (n / 3), want_locks = C * st.lock_budget;
    int64_t until = weft_now() + 20 * SEC;
    while (atomic_load(&st.elems) != want_elems || atomic_load(&st.permits) != want_permits ||
           atomic_load(&st.locks) != want_locks) {
        if (weft_now() > until)
            FAIL("still waiting: elements %ld of %ld, permits %ld of %ld, locks %ld of %ld",
                 atomic_load(&st.elems), want_elems, atomic_load(&st.permits), want_permits,
                 atomic_load(&st.locks), want_locks);
        pause_ms(1);
    }
    ASSERT_OK(weft_wg_done(&stop));
    for (int i = 0; i < C; i++)
        ASSERT_OK(weft_join(cf[i], NULL));
    ASSERT_EQ(atomic_load(&st.elems), want_elems);
    ASSERT_EQ(atomic_load(&st.permits), want_permits);
    ASSERT_EQ(atomic_load(&st.locks), want_locks);
    ASSERT_EQ(guarded, want_locks + P * (n / 5)); /* the mutex kept every increment whole */
    ASSERT_EQ(weft_sem_value(&s), 0);
    ASSERT_EQ(weft_chan_len(c), 0);
    /* no object is left with a waiter */
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_sem_destroy(&s));
    ASSERT_OK(weft_mutex_destroy(&m));
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
    SKIP_UNDER_EMULATOR();
    char out[16384];
    int st = runner_capture(deadlocked_select, NULL, out, sizeof out, 30);
    ASSERT(st != -1);
    if (!strstr(out, "select"))
        FAIL("the report does not name the select:\n%s", out);
    if (!strstr(out, "\"sel\"") || !strstr(out, "select returned -35, permits 0")) /* -EDEADLK */
        FAIL("the select did not return -EDEADLK, or the report does not name it:\n%s", out);
}
