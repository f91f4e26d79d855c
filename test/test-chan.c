/*
 * Channels and select: rendezvous, buffered order, close, deadlines, threads outside the runtime,
 * select (ready case, default, deadline, NULL channels, closed channels, send cases, the same channel
 * twice, fairness), exactly-once delivery under races, element sizes, free while busy, the deadlock
 * report's words.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static weft_chan_t *mk(size_t esize, size_t cap)
{
    weft_chan_t *c = NULL;
    ASSERT_OK(weft_chan_new(&c, esize, cap));
    ASSERT(c != NULL);
    return c;
}

static void pause_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------------------------------ */
/* Basics                                                                                            */

TEST(new_rejects_bad_sizes_and_free_takes_null)
{
    weft_chan_t *c = NULL;
    ASSERT_ERR(weft_chan_new(&c, 0, 4), -EINVAL);
    ASSERT_ERR(weft_chan_new(NULL, 4, 4), -EINVAL);
    ASSERT_ERR(weft_chan_new(&c, SIZE_MAX / 2, 3), -EINVAL);
    ASSERT_ERR(weft_chan_new(&c, 2, SIZE_MAX / 2 + 1), -EINVAL);
    ASSERT_OK(weft_chan_free(NULL));
    c = mk(8, 5);
    ASSERT_EQ(weft_chan_cap(c), 5);
    ASSERT_EQ(weft_chan_len(c), 0);
    ASSERT_OK(weft_chan_free(c));
    c = mk(1, 0);
    ASSERT_EQ(weft_chan_cap(c), 0);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_ERR(weft_chan_send(NULL, &c, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_chan_recv(NULL, &c, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_chan_close(NULL), -EINVAL);
}

typedef struct {
    weft_chan_t *c;
    long n;
    long base;
} range_t;

static void *send_range(void *arg)
{
    range_t *r = arg;
    for (long i = 0; i < r->n; i++) {
        long v = r->base + i;
        ASSERT_OK(weft_chan_send(r->c, &v, WEFT_FOREVER));
    }
    return NULL;
}

static void *recv_range_in_order(void *arg)
{
    range_t *r = arg;
    for (long i = 0; i < r->n; i++) {
        long v = -1;
        ASSERT_OK(weft_chan_recv(r->c, &v, WEFT_FOREVER));
        ASSERT_EQ(v, r->base + i);
        ASSERT_EQ(weft_chan_len(r->c), 0); /* unbuffered: nothing is ever held */
    }
    return NULL;
}

static void rendezvous(int workers)
{
    start_workers(workers);
    weft_chan_t *c = mk(sizeof(long), 0);
    range_t r = {c, 20000, 1000};
    weft_fiber_t s, v;
    ASSERT_OK(weft_spawn(&v, NULL, recv_range_in_order, &r));
    ASSERT_OK(weft_spawn(&s, NULL, send_range, &r));
    ASSERT_OK(weft_join(s, NULL));
    ASSERT_OK(weft_join(v, NULL));
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

TEST(unbuffered_rendezvous_across_workers)
{
    rendezvous(2);
}

TEST(unbuffered_rendezvous_on_one_worker)
{
    rendezvous(1);
}

static void *send_one_42(void *arg)
{
    long v = 42;
    return (void *)(intptr_t)weft_chan_send(arg, &v, WEFT_FOREVER);
}

TEST(an_unbuffered_send_waits_for_its_receiver)
{
    start_workers(2);
    weft_chan_t *c = mk(sizeof(long), 0);
    long v = 0;
    ASSERT_ERR(weft_chan_send(c, &v, WEFT_NOWAIT), -ETIMEDOUT); /* nobody receives */
    ASSERT_ERR(weft_chan_recv(c, &v, WEFT_NOWAIT), -ETIMEDOUT); /* nobody sends */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, send_one_42, c));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING); /* parked in its send: no receiver yet */
    ASSERT_EQ(weft_fiber_state(f), WEFT_WAITING);
    ASSERT_OK(weft_chan_recv(c, &v, WEFT_NOWAIT)); /* a waiting sender makes a receive ready */
    ASSERT_EQ(v, 42);
    void *res;
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, 0);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

TEST(buffered_keeps_fifo_order_through_wraps)
{
    weft_chan_t *c = mk(sizeof(int), 5);
    int next_in = 0, next_out = 0;
    /* fill and drain by varying amounts so that head and tail wrap many times */
    for (int round = 0; round < 200; round++) {
        int put = 1 + round % 5, take = 1 + (round * 3) % 5;
        for (int i = 0; i < put && weft_chan_len(c) < 5; i++) {
            ASSERT_OK(weft_chan_send(c, &next_in, WEFT_NOWAIT));
            next_in++;
        }
        for (int i = 0; i < take && weft_chan_len(c) > 0; i++) {
            int v = -1;
            ASSERT_OK(weft_chan_recv(c, &v, WEFT_NOWAIT));
            ASSERT_EQ(v, next_out);
            next_out++;
        }
        ASSERT_EQ(weft_chan_len(c), (size_t)(next_in - next_out));
    }
    while (weft_chan_len(c) < 5) {
        ASSERT_OK(weft_chan_send(c, &next_in, WEFT_NOWAIT));
        next_in++;
    }
    ASSERT_ERR(weft_chan_send(c, &next_in, WEFT_NOWAIT), -ETIMEDOUT); /* full */
    while (next_out < next_in) {
        int v = -1;
        ASSERT_OK(weft_chan_recv(c, &v, WEFT_NOWAIT));
        ASSERT_EQ(v, next_out++);
    }
    int v;
    ASSERT_ERR(weft_chan_recv(c, &v, WEFT_NOWAIT), -ETIMEDOUT); /* empty */
    ASSERT_ERR(weft_chan_recv(c, NULL, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_recv(c, NULL, WEFT_NOWAIT)); /* dropped */
    ASSERT_EQ(weft_chan_len(c), 0);
    ASSERT_OK(weft_chan_free(c));
}

static void *send_value(void *arg)
{
    range_t *r = arg;
    return (void *)(intptr_t)weft_chan_send(r->c, &r->base, WEFT_FOREVER);
}

TEST(senders_waiting_on_a_full_buffer_queue_behind_it_in_order)
{
    start_workers(2);
    weft_chan_t *c = mk(sizeof(long), 4);
    for (long i = 0; i < 4; i++)
        ASSERT_OK(weft_chan_send(c, &i, WEFT_NOWAIT));
    enum { S = 5 };
    range_t r[S];
    weft_fiber_t f[S];
    for (int i = 0; i < S; i++) {
        r[i] = (range_t){c, 1, 4 + i};
        ASSERT_OK(weft_spawn(&f[i], NULL, send_value, &r[i]));
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING); /* queued in this order */
    }
    ASSERT_EQ(weft_chan_len(c), 4);
    /* each receive takes the head and moves the first waiting sender's element to the back */
    for (long i = 0; i < 4 + S; i++) {
        long v = -1;
        ASSERT_OK(weft_chan_recv(c, &v, WEFT_FOREVER));
        ASSERT_EQ(v, i);
        ASSERT_EQ(weft_chan_len(c), i < S ? 4 : (size_t)(4 + S - 1 - i));
    }
    for (int i = 0; i < S; i++) {
        void *res;
        ASSERT_OK(weft_join(f[i], &res));
        ASSERT_EQ((intptr_t)res, 0);
    }
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Close                                                                                             */

TEST(close_lets_receivers_drain_then_everything_is_epipe)
{
    weft_chan_t *c = mk(sizeof(int), 4);
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_chan_send(c, &i, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_close(c));
    ASSERT_ERR(weft_chan_close(c), -EPIPE);
    int v = 7;
    ASSERT_ERR(weft_chan_send(c, &v, WEFT_NOWAIT), -EPIPE);
    ASSERT_ERR(weft_chan_send(c, &v, WEFT_FOREVER), -EPIPE);
    ASSERT_EQ(weft_chan_len(c), 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(weft_chan_recv(c, &v, WEFT_FOREVER));
        ASSERT_EQ(v, i);
    }
    for (int i = 0; i < 3; i++) {
        ASSERT_ERR(weft_chan_recv(c, &v, WEFT_FOREVER), -EPIPE);
        ASSERT_ERR(weft_chan_recv(c, &v, WEFT_NOWAIT), -EPIPE);
    }
    ASSERT_EQ(v, 2); /* a failed receive leaves the destination alone */
    ASSERT_OK(weft_chan_free(c));

    c = mk(sizeof(int), 0);
    ASSERT_OK(weft_chan_close(c));
    ASSERT_ERR(weft_chan_recv(c, &v, WEFT_FOREVER), -EPIPE);
    ASSERT_ERR(weft_chan_send(c, &v, WEFT_FOREVER), -EPIPE);
    ASSERT_ERR(weft_chan_close(c), -EPIPE);
    ASSERT_OK(weft_chan_free(c));
}

static void *recv_expect_epipe(void *arg)
{
    long v = 99;
    int r = weft_chan_recv(arg, &v, WEFT_FOREVER);
    ASSERT_EQ(v, 99);
    return (void *)(intptr_t)r;
}

static void *send_expect_epipe(void *arg)
{
    long v = 1234;
    return (void *)(intptr_t)weft_chan_send(arg, &v, WEFT_FOREVER);
}

static void *select_recv_expect_epipe(void *arg)
{
    weft_case_t cs[2] = {{NULL, WEFT_RECV, NULL, 1}, {arg, WEFT_RECV, NULL, 1}};
    int i = weft_select(cs, 2, WEFT_FOREVER);
    ASSERT_EQ(i, 1);
    return (void *)(intptr_t)cs[1].result;
}

TEST(close_wakes_every_waiting_receiver_with_epipe)
{
    start_workers(2);
    weft_chan_t *c = mk(sizeof(long), 0);
    enum { F = 20, T = 2, P = 2 };
    weft_fiber_t f[F], t[T], s;
    pthread_t p[P];
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, recv_expect_epipe, c));
    for (int i = 0; i < T; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, recv_expect_epipe, c));
    ASSERT_OK(weft_spawn(&s, NULL, select_recv_expect_epipe, c));
    for (int i = 0; i < P; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, recv_expect_epipe, c), 0);
    for (int i = 0; i < F; i++)
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING);
    for (int i = 0; i < T; i++)
        WAIT_UNTIL(weft_fiber_state(t[i]) == WEFT_WAITING);
    WAIT_UNTIL(weft_fiber_state(s) == WEFT_WAITING);
    pause_ms(5); /* most likely the pthreads wait too by now; if not, they see the close at once */
    ASSERT_ERR(weft_chan_free(c), -EBUSY);
    ASSERT_OK(weft_chan_close(c));
    void *res;
    for (int i = 0; i < F; i++) {
        ASSERT_OK(weft_join(f[i], &res));
        ASSERT_EQ((intptr_t)res, -EPIPE);
    }
    for (int i = 0; i < T; i++) {
        ASSERT_OK(weft_join(t[i], &res));
        ASSERT_EQ((intptr_t)res, -EPIPE);
    }
    ASSERT_OK(weft_join(s, &res));
    ASSERT_EQ((intptr_t)res, -EPIPE);
    for (int i = 0; i < P; i++) {
        ASSERT_EQ(pthread_join(p[i], &res), 0);
        ASSERT_EQ((intptr_t)res, -EPIPE);
    }
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

TEST(close_wakes_waiting_senders_whose_elements_were_never_sent)
{
    start_workers(2);
    weft_chan_t *c = mk(sizeof(long), 2);
    long a = 1, b = 2;
    ASSERT_OK(weft_chan_send(c, &a, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_send(c, &b, WEFT_NOWAIT));
    enum { F = 10, T = 2, P = 2 };
    weft_fiber_t f[F], t[T];
    pthread_t p[P];
    for (int i = 0; i < F; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, send_expect_epipe, c));
    for (int i = 0; i < T; i++)
        ASSERT_OK(weft_thread_spawn(&t[i], NULL, send_expect_epipe, c));
    for (int i = 0; i < P; i++)
        ASSERT_EQ(pthread_create(&p[i], NULL, send_expect_epipe, c), 0);
    for (int i = 0; i < F; i++)
        WAIT_UNTIL(weft_fiber_state(f[i]) == WEFT_WAITING);
    for (int i = 0; i < T; i++)
        WAIT_UNTIL(weft_fiber_state(t[i]) == WEFT_WAITING);
    pause_ms(5);
    ASSERT_OK(weft_chan_close(c));
    void *res;
    for (int i = 0; i < F; i++) {
        ASSERT_OK(weft_join(f[i], &res));
        ASSERT_EQ((intptr_t)res, -EPIPE);
    }
    for (int i = 0; i < T; i++) {
        ASSERT_OK(weft_join(t[i], &res));
        ASSERT_EQ((intptr_t)res, -EPIPE);
    }
    for (int i = 0; i < P; i++) {
        ASSERT_EQ(pthread_join(p[i], &res), 0);
        ASSERT_EQ((intptr_t)res, -EPIPE);
    }
    /* only what was buffered comes out */
    long v;
    ASSERT_OK(weft_chan_recv(c, &v, WEFT_NOWAIT));
    ASSERT_EQ(v, 1);
    ASSERT_OK(weft_chan_recv(c, &v, WEFT_NOWAIT));
    ASSERT_EQ(v, 2);
    ASSERT_ERR(weft_chan_recv(c, &v, WEFT_NOWAIT), -EPIPE);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Deadlines                                                                                         */

static void *deadlines_pass(void *arg)
{
    weft_chan_t *empty = ((weft_chan_t **)arg)[0], *full = ((weft_chan_t **)arg)[1];
    long v = 5;
    for (int i = 0; i < 3; i++) {
        int64_t d = weft_deadline_in(2 * MS);
        ASSERT_ERR(weft_chan_recv(empty, &v, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
        d = weft_deadline_in(2 * MS);
        ASSERT_ERR(weft_chan_send(full, &v, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
        d = weft_deadline_in(2 * MS);
        weft_case_t cs[2] = {{empty, WEFT_RECV, &v, 0}, {full, WEFT_SEND, &v, 0}};
        ASSERT_ERR(weft_select(cs, 2, d), -ETIMEDOUT);
        ASSERT_GE(weft_now(), d);
    }
    ASSERT_ERR(weft_chan_recv(empty, &v, 1), -ETIMEDOUT); /* long past */
    ASSERT_ERR(weft_chan_send(full, &v, 1), -ETIMEDOUT);
    ASSERT_EQ(v, 5);
    return NULL;
}

TEST(a_passed_deadline_is_etimedout_and_leaves_no_waiter_behind)
{
    start_workers(2);
    weft_chan_t *ch[2] = {mk(sizeof(long), 0), mk(sizeof(long), 1)};
    long x = 77;
    ASSERT_OK(weft_chan_send(ch[1], &x, WEFT_NOWAIT));
    weft_fiber_t f[4], t;
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, deadlines_pass, ch));
    ASSERT_OK(weft_thread_spawn(&t, NULL, deadlines_pass, ch));
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, deadlines_pass, ch), 0);
    deadlines_pass(ch);
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(pthread_join(p, NULL), 0);
    /* nobody is left queued: a send finds no receiver, the buffered element is untouched */
    long v = 0;
    ASSERT_ERR(weft_chan_send(ch[0], &v, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_chan_recv(ch[1], &v, WEFT_NOWAIT));
    ASSERT_EQ(v, 77);
    ASSERT_OK(weft_chan_free(ch[0]));
    ASSERT_OK(weft_chan_free(ch[1]));
    ASSERT_OK(weft_shutdown());
}

static atomic_int marker_ran;

static void *set_marker(void *arg)
{
    (void)arg;
    atomic_store(&marker_ran, 1);
    return NULL;
}

static void *nowait_ops(void *arg)
{
    (void)arg;
    weft_chan_t *u = mk(sizeof(int), 0), *b = mk(sizeof(int), 1);
    int v = 3;
    ASSERT_OK(weft_chan_send(b, &v, WEFT_NOWAIT));
    /* another fiber is ready on this, the only worker: if any call below parked, it would run */
    ASSERT_OK(weft_go(set_marker, NULL));
    for (int i = 0; i < 100; i++) {
        ASSERT_ERR(weft_chan_send(u, &v, WEFT_NOWAIT), -ETIMEDOUT);
        ASSERT_ERR(weft_chan_recv(u, &v, WEFT_NOWAIT), -ETIMEDOUT);
        ASSERT_ERR(weft_chan_send(b, &v, WEFT_NOWAIT), -ETIMEDOUT);
        weft_case_t cs[3] = {{u, WEFT_SEND, &v, 0}, {u, WEFT_RECV, &v, 0}, {b, WEFT_SEND, &v, 0}};
        ASSERT_ERR(weft_select(cs, 3, WEFT_NOWAIT), -ETIMEDOUT);
        ASSERT_ERR(weft_select(NULL, 0, WEFT_NOWAIT), -ETIMEDOUT);
        /* ready ones do not park either */
        ASSERT_OK(weft_chan_recv(b, &v, WEFT_NOWAIT));
        ASSERT_OK(weft_chan_send(b, &v, WEFT_NOWAIT));
    }
    ASSERT_EQ(atomic_load(&marker_ran), 0);
    WAIT_UNTIL(atomic_load(&marker_ran) == 1); /* yields: now it runs */
    ASSERT_OK(weft_chan_free(u));
    ASSERT_OK(weft_chan_free(b));
    return NULL;
}

TEST(nowait_never_parks)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, nowait_ops, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Threads outside the runtime                                                                       */

typedef struct {
    weft_chan_t *req, *rep;
    long n;
} pingpong_t;

static void *echo_plus_one(void *arg)
{
    pingpong_t *pp = arg;
    for (long i = 0; i < pp->n; i++) {
        long v;
        ASSERT_OK(weft_chan_recv(pp->req, &v, WEFT_FOREVER));
        v++;
        ASSERT_OK(weft_chan_send(pp->rep, &v, WEFT_FOREVER));
    }
    return NULL;
}

static void *ask_many(void *arg)
{
    pingpong_t *pp = arg;
    for (long i = 0; i < pp->n; i++) {
        long v = i * 3;
        ASSERT_OK(weft_chan_send(pp->req, &v, WEFT_FOREVER));
        ASSERT_OK(weft_chan_recv(pp->rep, &v, WEFT_FOREVER));
        ASSERT_EQ(v, i * 3 + 1);
    }
    return NULL;
}

TEST(a_plain_thread_talks_to_a_fiber_both_ways)
{
    start_workers(2);
    pingpong_t pp = {mk(sizeof(long), 0), mk(sizeof(long), 0), 5000};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, echo_plus_one, &pp));
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, ask_many, &pp), 0);
    ASSERT_EQ(pthread_join(p, NULL), 0);
    ASSERT_OK(weft_join(f, NULL));
    /* and the other way round: a fiber asks, a plain thread answers */
    ASSERT_OK(weft_spawn(&f, NULL, ask_many, &pp));
    ASSERT_EQ(pthread_create(&p, NULL, echo_plus_one, &pp), 0);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_EQ(pthread_join(p, NULL), 0);
    ASSERT_OK(weft_chan_free(pp.req));
    ASSERT_OK(weft_chan_free(pp.rep));
    ASSERT_OK(weft_shutdown());
}

TEST(plain_threads_use_channels_without_a_runtime)
{
    ASSERT_EQ(weft_workers(), 0);
    pingpong_t pp = {mk(sizeof(long), 0), mk(sizeof(long), 1), 2000};
    pthread_t p;
    ASSERT_EQ(pthread_create(&p, NULL, echo_plus_one, &pp), 0);
    ask_many(&pp);
    ASSERT_EQ(pthread_join(p, NULL), 0);
    ASSERT_OK(weft_chan_free(pp.req));
    ASSERT_OK(weft_chan_free(pp.rep));
    ASSERT_EQ(weft_workers(), 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* select                                                                                            */

TEST(select_rejects_bad_cases)
{
    weft_chan_t *c = mk(sizeof(int), 1);
    int v = 1;
    weft_case_t cs[2] = {{c, WEFT_RECV, &v, 0}, {c, 0, &v, 0}};
    ASSERT_ERR(weft_select(cs, -1, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_select(NULL, 1, WEFT_NOWAIT), -EINVAL);
    ASSERT_ERR(weft_select(cs, 2, WEFT_NOWAIT), -EINVAL);
    cs[1] = (weft_case_t){c, WEFT_SEND, NULL, 0};
    ASSERT_ERR(weft_select(cs, 2, WEFT_NOWAIT), -EINVAL);
    cs[1] = (weft_case_t){NULL, 7, &v, 0};
    ASSERT_ERR(weft_select(cs, 2, WEFT_NOWAIT), -EINVAL);
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT)); /* nothing happened on c above */
    ASSERT_EQ(weft_chan_len(c), 1);
    ASSERT_OK(weft_chan_free(c));
}

TEST(select_does_the_ready_case_only)
{
    weft_chan_t *a = mk(sizeof(int), 1), *b = mk(sizeof(int), 1), *d = mk(sizeof(int), 1);
    int x = 11, full = 5;
    ASSERT_OK(weft_chan_send(b, &x, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_send(d, &full, WEFT_NOWAIT));
    for (int round = 0; round < 50; round++) {
        int ra = -1, rb = -1, sd = 9;
        weft_case_t cs[3] = {{a, WEFT_RECV, &ra, 1}, {b, WEFT_RECV, &rb, 1}, {d, WEFT_SEND, &sd, 1}};
        ASSERT_EQ(weft_select(cs, 3, WEFT_FOREVER), 1);
        ASSERT_EQ(rb, 11 + round);
        ASSERT_EQ(cs[1].result, 0);
        ASSERT_EQ(ra, -1);
        ASSERT_EQ(cs[0].result, 1); /* untouched */
        ASSERT_EQ(cs[2].result, 1);
        ASSERT_EQ(weft_chan_len(a), 0);
        ASSERT_EQ(weft_chan_len(b), 0);
        ASSERT_EQ(weft_chan_len(d), 1);
        x = 12 + round;
        ASSERT_OK(weft_chan_send(b, &x, WEFT_NOWAIT));
    }
    /* a send case becomes the ready one */
    int got;
    ASSERT_OK(weft_chan_recv(d, &got, WEFT_NOWAIT));
    ASSERT_EQ(got, 5);
    ASSERT_OK(weft_chan_recv(b, &got, WEFT_NOWAIT));
    int sd = 31;
    weft_case_t cs[3] = {{a, WEFT_RECV, &got, 1}, {b, WEFT_RECV, &got, 1}, {d, WEFT_SEND, &sd, 1}};
    ASSERT_EQ(weft_select(cs, 3, WEFT_NOWAIT), 2);
    ASSERT_EQ(cs[2].result, 0);
    ASSERT_OK(weft_chan_recv(d, &got, WEFT_NOWAIT));
    ASSERT_EQ(got, 31);
    ASSERT_OK(weft_chan_free(a));
    ASSERT_OK(weft_chan_free(b));
    ASSERT_OK(weft_chan_free(d));
}

TEST(select_default_clause_and_deadline)
{
    weft_chan_t *a = mk(sizeof(int), 0), *b = mk(sizeof(int), 2);
    int v = 0, w = 8;
    weft_case_t cs[2] = {{a, WEFT_RECV, &v, 0}, {b, WEFT_RECV, &v, 0}};
    ASSERT_ERR(weft_select(cs, 2, WEFT_NOWAIT), -ETIMEDOUT);
    int64_t d = weft_deadline_in(3 * MS);
    ASSERT_ERR(weft_select(cs, 2, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    /* both gave up cleanly: nothing waits, nothing was taken */
    ASSERT_OK(weft_chan_send(b, &w, WEFT_NOWAIT));
    ASSERT_ERR(weft_chan_send(a, &w, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_EQ(weft_select(cs, 2, WEFT_NOWAIT), 1);
    ASSERT_EQ(v, 8);
    ASSERT_OK(weft_chan_free(a));
    ASSERT_OK(weft_chan_free(b));
}

static void *send_after_a_while(void *arg)
{
    range_t *r = arg;
    weft_sleep_until(weft_deadline_in(2 * MS));
    ASSERT_OK(weft_chan_send(r->c, &r->base, WEFT_FOREVER));
    return NULL;
}

static void *select_on_two(void *arg)
{
    weft_chan_t **ch = arg;
    long a = -1, b = -1;
    weft_case_t cs[2] = {{ch[0], WEFT_RECV, &a, 1}, {ch[1], WEFT_RECV, &b, 1}};
    int i = weft_select(cs, 2, WEFT_FOREVER);
    ASSERT_EQ(i, 1);
    ASSERT_EQ(a, -1);
    ASSERT_EQ(b, 4242);
    ASSERT_EQ(cs[1].result, 0);
    return NULL;
}

TEST(a_waiting_select_is_woken_by_a_send_on_any_of_its_channels)
{
    start_workers(2);
    weft_chan_t *ch[2] = {mk(sizeof(long), 0), mk(sizeof(long), 3)};
    for (int round = 0; round < 20; round++) {
        weft_fiber_t s;
        ASSERT_OK(weft_spawn(&s, NULL, select_on_two, ch));
        if (round % 2)
            WAIT_UNTIL(weft_fiber_state(s) == WEFT_WAITING);
        range_t r = {ch[1], 1, 4242};
        weft_fiber_t f;
        ASSERT_OK(weft_spawn(&f, NULL, send_after_a_while, &r));
        ASSERT_OK(weft_join(s, NULL));
        ASSERT_OK(weft_join(f, NULL));
        /* the select's node on the other channel is gone */
        long v = 0;
        ASSERT_ERR(weft_chan_send(ch[0], &v, WEFT_NOWAIT), -ETIMEDOUT);
        ASSERT_EQ(weft_chan_len(ch[1]), 0);
    }
    /* a plain thread's select the same way */
    range_t r = {ch[1], 1, 4242};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, send_after_a_while, &r));
    select_on_two(ch);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_chan_free(ch[0]));
    ASSERT_OK(weft_chan_free(ch[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(a_null_channel_is_never_ready)
{
    weft_chan_t *a = mk(sizeof(int), 1);
    int v = 1, got = 0;
    ASSERT_OK(weft_chan_send(a, &v, WEFT_NOWAIT));
    for (int i = 0; i < 100; i++) {
        weft_case_t cs[4] = {{NULL, WEFT_RECV, &got, 0}, {NULL, WEFT_SEND, &v, 0}, {a, WEFT_RECV, &got, 0},
                             {NULL, WEFT_RECV, NULL, 0}};
        ASSERT_EQ(weft_select(cs, 4, WEFT_FOREVER), 2);
        ASSERT_OK(weft_chan_send(a, &v, WEFT_NOWAIT));
    }
    weft_case_t none[2] = {{NULL, WEFT_RECV, &got, 0}, {NULL, WEFT_SEND, &v, 0}};
    ASSERT_ERR(weft_select(none, 2, WEFT_NOWAIT), -ETIMEDOUT);
    int64_t d = weft_deadline_in(2 * MS);
    ASSERT_ERR(weft_select(none, 2, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    /* an empty select sleeps until its deadline */
    ASSERT_ERR(weft_select(NULL, 0, WEFT_NOWAIT), -ETIMEDOUT);
    d = weft_deadline_in(2 * MS);
    ASSERT_ERR(weft_select(NULL, 0, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    ASSERT_OK(weft_chan_free(a));
}

static void *empty_select_in_fiber(void *arg)
{
    (void)arg;
    int64_t d = weft_deadline_in(2 * MS);
    ASSERT_ERR(weft_select(NULL, 0, d), -ETIMEDOUT);
    ASSERT_GE(weft_now(), d);
    return NULL;
}

TEST(an_empty_select_in_a_fiber_sleeps_until_its_deadline)
{
    start_workers(1);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, empty_select_in_fiber, NULL));
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_OK(weft_shutdown());
}

TEST(closed_channels_are_ready_in_select_with_epipe)
{
    weft_chan_t *a = mk(sizeof(int), 0), *b = mk(sizeof(int), 0), *e = mk(sizeof(int), 0);
    ASSERT_OK(weft_chan_close(a));
    int v = 4, got = 77;
    weft_case_t cs[2] = {{e, WEFT_RECV, &got, 1}, {a, WEFT_RECV, &got, 1}};
    ASSERT_EQ(weft_select(cs, 2, WEFT_FOREVER), 1);
    ASSERT_EQ(cs[1].result, -EPIPE);
    ASSERT_EQ(got, 77);
    weft_case_t ss[2] = {{e, WEFT_RECV, &got, 1}, {a, WEFT_SEND, &v, 1}};
    ASSERT_EQ(weft_select(ss, 2, WEFT_NOWAIT), 1);
    ASSERT_EQ(ss[1].result, -EPIPE);
    /* a buffered channel that was closed is drained first, with result 0 */
    weft_chan_t *c = mk(sizeof(int), 2);
    ASSERT_OK(weft_chan_send(c, &v, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_close(c));
    weft_case_t rc[1] = {{c, WEFT_RECV, &got, 1}};
    ASSERT_EQ(weft_select(rc, 1, WEFT_NOWAIT), 0);
    ASSERT_EQ(rc[0].result, 0);
    ASSERT_EQ(got, 4);
    ASSERT_EQ(weft_select(rc, 1, WEFT_NOWAIT), 0);
    ASSERT_EQ(rc[0].result, -EPIPE);
    ASSERT_OK(weft_chan_free(a));
    ASSERT_OK(weft_chan_free(b));
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_chan_free(e));
}

static void *select_send_waits(void *arg)
{
    weft_chan_t **ch = arg;
    int v = 5;
    weft_case_t cs[2] = {{ch[0], WEFT_RECV, NULL, 1}, {ch[1], WEFT_SEND, &v, 1}};
    int i = weft_select(cs, 2, WEFT_FOREVER);
    return (void *)(intptr_t)(i == 1 ? cs[1].result : -1000 - i);
}

TEST(a_close_wakes_a_select_waiting_to_send_with_epipe)
{
    start_workers(2);
    weft_chan_t *ch[2] = {mk(sizeof(int), 0), mk(sizeof(int), 0)};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, select_send_waits, ch));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING);
    ASSERT_ERR(weft_chan_free(ch[1]), -EBUSY);
    ASSERT_ERR(weft_chan_free(ch[0]), -EBUSY);
    ASSERT_OK(weft_chan_close(ch[1]));
    void *res;
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, -EPIPE);
    ASSERT_OK(weft_chan_free(ch[0]));
    ASSERT_OK(weft_chan_free(ch[1]));
    ASSERT_OK(weft_shutdown());
}

/* Send cases: the receiver gets exactly the element of the case select chose. */
static void *select_sender(void *arg)
{
    weft_chan_t **ch = arg;
    for (int i = 0; i < 3000; i++) {
        int a = 2 * i, b = 2 * i + 1;
        weft_case_t cs[3] = {{ch[0], WEFT_SEND, &a, 1}, {ch[1], WEFT_SEND, &b, 1}, {NULL, WEFT_SEND, &a, 1}};
        int k = weft_select(cs, 3, WEFT_FOREVER);
        ASSERT(k == 0 || k == 1);
        ASSERT_EQ(cs[k].result, 0);
        ASSERT_EQ(cs[1 - k].result, 1);
        int ack;
        ASSERT_OK(weft_chan_recv(ch[2], &ack, WEFT_FOREVER));
        ASSERT_EQ(ack, k == 0 ? a : b);
    }
    ASSERT_OK(weft_chan_close(ch[0]));
    ASSERT_OK(weft_chan_close(ch[1]));
    return NULL;
}

static void *two_receivers_ack(void *arg)
{
    weft_chan_t **ch = arg;
    int open = 2, n = 0;
    while (open) {
        int v = -1;
        weft_case_t cs[2] = {{ch[0], WEFT_RECV, &v, 1}, {ch[1], WEFT_RECV, &v, 1}};
        int k = weft_select(cs, 2, WEFT_FOREVER);
        ASSERT(k == 0 || k == 1);
        if (cs[k].result == -EPIPE) {
            /* closed: stop polling it */
            ch[k] = NULL;
            open--;
            continue;
        }
        ASSERT_EQ(cs[k].result, 0);
        ASSERT_EQ(v % 2, k); /* the even elements go through channel 0, the odd through 1 */
        ASSERT_EQ(v / 2, n);
        n++;
        ASSERT_OK(weft_chan_send(ch[2], &v, WEFT_FOREVER));
    }
    ASSERT_EQ(n, 3000);
    return NULL;
}

TEST(select_send_cases_send_only_the_chosen_element)
{
    start_workers(2);
    weft_chan_t *ch[3] = {mk(sizeof(int), 0), mk(sizeof(int), 1), mk(sizeof(int), 0)};
    weft_chan_t *mine[3] = {ch[0], ch[1], ch[2]};
    weft_fiber_t s, r;
    ASSERT_OK(weft_spawn(&s, NULL, select_sender, ch));
    ASSERT_OK(weft_spawn(&r, NULL, two_receivers_ack, mine));
    ASSERT_OK(weft_join(s, NULL));
    ASSERT_OK(weft_join(r, NULL));
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_chan_free(ch[i]));
    ASSERT_OK(weft_shutdown());
}

static void *recv_one_long(void *arg)
{
    long v = -1;
    ASSERT_OK(weft_chan_recv(arg, &v, WEFT_FOREVER));
    return (void *)(intptr_t)v;
}

TEST(select_with_the_same_channel_twice)
{
    start_workers(2);
    /* send and receive on one unbuffered channel: a select never meets itself */
    weft_chan_t *u = mk(sizeof(long), 0);
    long out = 17, in = -1;
    weft_case_t sr[2] = {{u, WEFT_SEND, &out, 1}, {u, WEFT_RECV, &in, 1}};
    ASSERT_ERR(weft_select(sr, 2, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_ERR(weft_select(sr, 2, weft_deadline_in(2 * MS)), -ETIMEDOUT);
    ASSERT_EQ(in, -1);
    /* while it waits, another receiver takes its send case */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, recv_one_long, u));
    ASSERT_EQ(weft_select(sr, 2, WEFT_FOREVER), 0);
    void *res;
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, 17);
    ASSERT_EQ(in, -1);
    /* ... or another sender its receive case */
    range_t r = {u, 1, 99};
    ASSERT_OK(weft_spawn(&f, NULL, send_value, &r));
    ASSERT_EQ(weft_select(sr, 2, WEFT_FOREVER), 1);
    ASSERT_EQ(in, 99);
    ASSERT_OK(weft_join(f, NULL));

    /* two receive cases on one channel: one element completes one of them, the other is gone */
    long a = -1, b = -1;
    weft_case_t rr[3] = {{u, WEFT_RECV, &a, 1}, {NULL, WEFT_RECV, &a, 1}, {u, WEFT_RECV, &b, 1}};
    r.base = 5;
    ASSERT_OK(weft_spawn(&f, NULL, send_value, &r));
    int k = weft_select(rr, 3, WEFT_FOREVER);
    ASSERT(k == 0 || k == 2);
    ASSERT_EQ(k == 0 ? a : b, 5);
    ASSERT_EQ(k == 0 ? b : a, -1);
    ASSERT_OK(weft_join(f, NULL));
    ASSERT_ERR(weft_chan_send(u, &out, WEFT_NOWAIT), -ETIMEDOUT); /* nobody left receiving */

    /* send and receive on one buffered channel: whichever the buffer allows */
    weft_chan_t *b2 = mk(sizeof(long), 1);
    weft_case_t bb[2] = {{b2, WEFT_SEND, &out, 1}, {b2, WEFT_RECV, &in, 1}};
    in = -1;
    k = weft_select(bb, 2, WEFT_NOWAIT); /* empty buffer: only the send is ready */
    ASSERT_EQ(k, 0);
    k = weft_select(bb, 2, WEFT_NOWAIT); /* full buffer: only the receive is */
    ASSERT_EQ(k, 1);
    ASSERT_EQ(in, 17);
    ASSERT_OK(weft_chan_free(b2));
    ASSERT_OK(weft_chan_free(u));
    ASSERT_OK(weft_shutdown());
}

TEST(select_is_fair_between_ready_cases)
{
    /* Go's test: two cases always ready, 10000 trials; each must win within 10 sigma of half */
    weft_chan_t *a = mk(sizeof(int), 1), *b = mk(sizeof(int), 1);
    int v = 0, got;
    ASSERT_OK(weft_chan_send(a, &v, WEFT_NOWAIT));
    ASSERT_OK(weft_chan_send(b, &v, WEFT_NOWAIT));
    int count[2] = {0, 0};
    enum { TRIALS = 10000 };
    for (int i = 0; i < TRIALS; i++) {
        weft_case_t cs[2] = {{a, WEFT_RECV, &got, 0}, {b, WEFT_RECV, &got, 0}};
        int k = weft_select(cs, 2, WEFT_NOWAIT);
        ASSERT(k == 0 || k == 1);
        count[k]++;
        ASSERT_OK(weft_chan_send(k == 0 ? a : b, &v, WEFT_NOWAIT));
    }
    printf("case 0: %d, case 1: %d\n", count[0], count[1]);
    ASSERT_LE(abs(count[0] - TRIALS / 2), 10 * 50);
    /* and with closed channels, also always ready */
    weft_chan_t *c = mk(sizeof(int), 0), *d = mk(sizeof(int), 0);
    ASSERT_OK(weft_chan_close(c));
    ASSERT_OK(weft_chan_close(d));
    count[0] = count[1] = 0;
    for (int i = 0; i < TRIALS; i++) {
        weft_case_t cs[2] = {{c, WEFT_RECV, &got, 0}, {d, WEFT_RECV, &got, 0}};
        count[weft_select(cs, 2, WEFT_FOREVER)]++;
    }
    printf("closed, case 0: %d, case 1: %d\n", count[0], count[1]);
    ASSERT_LE(abs(count[0] - TRIALS / 2), 10 * 50);
    ASSERT_OK(weft_chan_free(a));
    ASSERT_OK(weft_chan_free(b));
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_chan_free(d));
}

static void *select_many(void *arg)
{
    weft_chan_t **ch = arg;
    enum { N = 40 };
    long vals[N];
    weft_case_t cs[N];
    for (int i = 0; i < N; i++)
        cs[i] = (weft_case_t){ch[i % 5], WEFT_RECV, &vals[i], 1};
    int k = weft_select(cs, N, WEFT_FOREVER);
    ASSERT(k >= 0 && k < N);
    ASSERT_EQ(k % 5, 3);
    ASSERT_EQ(vals[k], 333);
    return NULL;
}

TEST(select_with_many_cases)
{
    start_workers(2);
    weft_chan_t *ch[5];
    for (int i = 0; i < 5; i++)
        ch[i] = mk(sizeof(long), (size_t)i);
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, select_many, ch));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING);
    long v = 333;
    ASSERT_OK(weft_chan_send(ch[3], &v, WEFT_FOREVER));
    ASSERT_OK(weft_join(f, NULL));
    for (int i = 0; i < 5; i++)
        ASSERT_OK(weft_chan_free(ch[i])); /* all 40 nodes are gone */
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Exactly once, with races                                                                          */

#define TOTAL 24000
static atomic_int sent[TOTAL], received[TOTAL];
static atomic_long nreceived;

/* Two channels carry the values; producers send on one of them, or select over both (one element,
 * two send cases: exactly one may happen); consumers receive from one, or select over both with one
 * of them named twice. Every kind of waiter meets every kind of waker. */
typedef struct {
    weft_chan_t *c[2];
    int first, step;
    int deadline_us;        /* > 0: every wait has a random deadline up to this, and is retried */
} party_t;

static uint32_t xs(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int64_t some_deadline(const party_t *p, uint32_t *rng)
{
    if (p->deadline_us <= 0)
        return WEFT_FOREVER;
    uint32_t r = xs(rng) % (uint32_t)(p->deadline_us + 1);
    return r == 0 ? WEFT_NOWAIT : weft_deadline_in((int64_t)r * 1000);
}

static void *producer(void *arg)
{
    party_t *p = arg;
    uint32_t rng = (uint32_t)p->first * 2654435761u + 1;
    for (int v = p->first; v < TOTAL; v += p->step) {
        for (;;) {
            int r;
            if (xs(&rng) % 2) {
                r = weft_chan_send(p->c[v % 2], &v, some_deadline(p, &rng));
            } else {
                weft_case_t cs[3] = {{p->c[0], WEFT_SEND, &v, 1}, {NULL, WEFT_SEND, &v, 1}, {p->c[1], WEFT_SEND, &v, 1}};
                r = weft_select(cs, 3, some_deadline(p, &rng));
                if (r >= 0) {
                    ASSERT(r == 0 || r == 2);
                    ASSERT_EQ(cs[2 - r].result, 1); /* the other case did not happen */
                    r = cs[r].result;
                }
            }
            if (r == -ETIMEDOUT)
                continue; /* it did nothing: send the same value again */
            if (r == -EPIPE)
                return NULL; /* the channels close together: this value was not sent */
            ASSERT_OK(r);
            atomic_fetch_add(&sent[v], 1);
            break;
        }
        if (xs(&rng) % 8 == 0)
            weft_yield();
    }
    return NULL;
}

static void *consumer(void *arg)
{
    party_t *p = arg;
    uint32_t rng = (uint32_t)p->first * 40503u + 7;
    weft_chan_t *open[2] = {p->c[0], p->c[1]};
    while (open[0] || open[1]) {
        int v = -1, r, from;
        if (xs(&rng) % 2) {
            from = open[0] && open[1] ? (int)(xs(&rng) % 2) : open[0] ? 0 : 1;
            /* the values left may all go through the other channel: never wait for ever on one */
            int64_t d = p->deadline_us > 0 ? some_deadline(p, &rng) : weft_deadline_in(MS);
            r = weft_chan_recv(open[from], &v, d);
        } else {
            int w = -1;
            weft_case_t cs[4] = {{open[0], WEFT_RECV, &v, 1}, {open[1], WEFT_RECV, &v, 1}, {NULL, WEFT_RECV, &w, 1},
                                 {open[0], WEFT_RECV, &v, 1}};
            r = weft_select(cs, 4, some_deadline(p, &rng));
            from = r == 3 ? 0 : r;
            if (r >= 0) {
                ASSERT(r != 2);
                for (int k = 0; k < 4; k++)
                    if (k != r)
                        ASSERT_EQ(cs[k].result, 1); /* only the chosen case happened */
                r = cs[r].result;
            }
        }
        if (r == -ETIMEDOUT) {
            ASSERT_EQ(v, -1); /* nothing was taken */
            continue;
        }
        if (r == -EPIPE) {
            open[from] = NULL;
            continue;
        }
        ASSERT_OK(r);
        ASSERT(v >= 0 && v < TOTAL);
        atomic_fetch_add(&received[v], 1);
        atomic_fetch_add(&nreceived, 1);
        if (xs(&rng) % 8 == 0)
            weft_yield();
    }
    return NULL;
}

/* close_at: close once this many were received (0: after every producer finished). */
static void exactly_once(size_t cap, int deadline_us, long close_at)
{
    start_workers(2);
    for (int i = 0; i < TOTAL; i++) {
        atomic_store(&sent[i], 0);
        atomic_store(&received[i], 0);
    }
    weft_chan_t *c[2] = {mk(sizeof(int), cap), mk(sizeof(int), cap)};
    enum { PF = 6, PT = 1, PP = 1, CF = 6, CP = 2, NP = PF + PT + PP, NC = CF + CP };
    party_t prod[NP], cons[NC];
    for (int i = 0; i < NP; i++)
        prod[i] = (party_t){{c[0], c[1]}, i, NP, deadline_us};
    for (int i = 0; i < NC; i++)
        cons[i] = (party_t){{c[0], c[1]}, i + 1, NC, deadline_us};
    weft_fiber_t pf[PF + PT], cf[CF];
    pthread_t pp[PP], cp[CP];
    for (int i = 0; i < CF; i++)
        ASSERT_OK(weft_spawn(&cf[i], NULL, consumer, &cons[i]));
    for (int i = 0; i < CP; i++)
        ASSERT_EQ(pthread_create(&cp[i], NULL, consumer, &cons[CF + i]), 0);
    for (int i = 0; i < PF; i++)
        ASSERT_OK(weft_spawn(&pf[i], NULL, producer, &prod[i]));
    for (int i = 0; i < PT; i++)
        ASSERT_OK(weft_thread_spawn(&pf[PF + i], NULL, producer, &prod[PF + i]));
    for (int i = 0; i < PP; i++)
        ASSERT_EQ(pthread_create(&pp[i], NULL, producer, &prod[PF + PT + i]), 0);
    if (close_at > 0) {
        int64_t until = weft_now() + 30 * SEC;
        while (atomic_load(&nreceived) < close_at && weft_now() < until)
            sched_yield();
        /* senders in flight get -EPIPE, or got their value through */
        ASSERT_OK(weft_chan_close(c[0]));
        ASSERT_OK(weft_chan_close(c[1]));
    }
    for (int i = 0; i < PF + PT; i++)
        ASSERT_OK(weft_join(pf[i], NULL));
    for (int i = 0; i < PP; i++)
        ASSERT_EQ(pthread_join(pp[i], NULL), 0);
    if (close_at == 0) {
        ASSERT_OK(weft_chan_close(c[0]));
        ASSERT_OK(weft_chan_close(c[1]));
    }
    for (int i = 0; i < CF; i++)
        ASSERT_OK(weft_join(cf[i], NULL));
    for (int i = 0; i < CP; i++)
        ASSERT_EQ(pthread_join(cp[i], NULL), 0);
    long nsent = 0;
    for (int i = 0; i < TOTAL; i++) {
        int s = atomic_load(&sent[i]), r = atomic_load(&received[i]);
        if (s > 1 || r != s)
            FAIL("value %d: sent %d times, received %d times", i, s, r);
        nsent += s;
    }
    if (close_at == 0)
        ASSERT_EQ(nsent, TOTAL);
    else
        ASSERT_GE(nsent, close_at);
    printf("%ld of %d values went through\n", nsent, TOTAL);
    ASSERT_OK(weft_chan_free(c[0]));
    ASSERT_OK(weft_chan_free(c[1]));
    ASSERT_OK(weft_shutdown());
}

TEST(every_value_is_received_exactly_once_unbuffered)
{
    exactly_once(0, 0, 0);
}

TEST(every_value_is_received_exactly_once_buffered)
{
    exactly_once(7, 0, 0);
}

TEST(every_value_is_received_exactly_once_with_deadlines_passing)
{
    exactly_once(0, 30, 0);
}

TEST(every_value_is_received_exactly_once_buffered_with_deadlines_passing)
{
    exactly_once(3, 30, 0);
}

TEST(values_in_flight_across_close_are_received_or_refused_never_lost)
{
    exactly_once(0, 0, TOTAL / 3);
}

TEST(values_in_flight_across_close_buffered_with_deadlines)
{
    exactly_once(5, 20, TOTAL / 2);
}

/* ------------------------------------------------------------------------------------------------ */
/* Element sizes                                                                                     */

#define CANARY 0xc5

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 131u + i * 7u + 1u);
}

static void check(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 131u + i * 7u + 1u))
            FAIL("element %u, byte %zu of %zu: %#x", seed, i, n, p[i]);
}

typedef struct {
    weft_chan_t *c;
    size_t size;
    int n;
} sized_t;

static void *send_sized(void *arg)
{
    sized_t *s = arg;
    unsigned char *buf = malloc(s->size);
    for (int i = 0; i < s->n; i++) {
        fill(buf, s->size, (unsigned)i);
        ASSERT_OK(weft_chan_send(s->c, buf, WEFT_FOREVER));
        memset(buf, 0, s->size); /* the channel has its own copy, or the receiver has */
        if (i % 3 == 0)
            weft_yield();
    }
    free(buf);
    return NULL;
}

static void recv_sized(sized_t *s)
{
    unsigned char *buf = malloc(s->size + 64);
    for (int i = 0; i < s->n; i++) {
        memset(buf, CANARY, s->size + 64);
        int r;
        if (i % 2) {
            r = weft_chan_recv(s->c, buf + 32, WEFT_FOREVER);
        } else {
            weft_case_t cs[1] = {{s->c, WEFT_RECV, buf + 32, 1}};
            r = weft_select(cs, 1, WEFT_FOREVER);
            ASSERT_EQ(cs[0].result, 0);
        }
        ASSERT_OK(r);
        check(buf + 32, s->size, (unsigned)i);
        for (int k = 0; k < 32; k++)
            if (buf[k] != CANARY || buf[32 + s->size + (size_t)k] != CANARY)
                FAIL("size %zu: a byte next to the element changed", s->size);
        if (i % 5 == 0)
            weft_yield();
    }
    free(buf);
}

static void *recv_sized_fiber(void *arg)
{
    recv_sized(arg);
    return NULL;
}

TEST(elements_of_odd_and_large_sizes_arrive_whole)
{
    start_workers(2);
    size_t sizes[] = {1, 3, 7, 4096, 4099};
    size_t caps[] = {0, 1, 3};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t ci = 0; ci < sizeof caps / sizeof *caps; ci++) {
            sized_t s = {mk(sizes[si], caps[ci]), sizes[si], 500};
            weft_fiber_t f, g;
            ASSERT_OK(weft_spawn(&f, NULL, send_sized, &s));
            ASSERT_OK(weft_spawn(&g, NULL, recv_sized_fiber, &s));
            ASSERT_OK(weft_join(f, NULL));
            ASSERT_OK(weft_join(g, NULL));
            /* and with this plain thread receiving */
            ASSERT_OK(weft_spawn(&f, NULL, send_sized, &s));
            recv_sized(&s);
            ASSERT_OK(weft_join(f, NULL));
            ASSERT_EQ(weft_chan_len(s.c), 0);
            ASSERT_OK(weft_chan_free(s.c));
        }
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Free while busy, the deadlock report                                                              */

static void *select_recv_forever(void *arg)
{
    long v;
    weft_case_t cs[1] = {{arg, WEFT_RECV, &v, 1}};
    int k = weft_select(cs, 1, WEFT_FOREVER);
    return (void *)(intptr_t)(k == 0 ? cs[0].result : k);
}

TEST(free_with_a_waiter_is_ebusy)
{
    start_workers(2);
    weft_chan_t *c = mk(sizeof(long), 0);
    ASSERT_OK(weft_chan_free(mk(sizeof(long), 3))); /* nobody waits: fine */
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, recv_one_long, c));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING);
    ASSERT_ERR(weft_chan_free(c), -EBUSY);
    long v = 8;
    ASSERT_OK(weft_chan_send(c, &v, WEFT_FOREVER));
    void *res;
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, 8);
    /* a select waiting on it */
    ASSERT_OK(weft_spawn(&f, NULL, select_recv_forever, c));
    WAIT_UNTIL(weft_fiber_state(f) == WEFT_WAITING);
    ASSERT_ERR(weft_chan_free(c), -EBUSY);
    ASSERT_OK(weft_chan_close(c));
    ASSERT_OK(weft_join(f, &res));
    ASSERT_EQ((intptr_t)res, -EPIPE);
    ASSERT_OK(weft_chan_free(c));
    ASSERT_OK(weft_shutdown());
}

/* A channel may be freed as soon as the calls that used it returned, while the other side of the last
 * hand-off may still be on its way out: a receive or select whose deadline passed just as the element
 * came must not touch the channel again (ASan sees it if it does). */
typedef struct {
    weft_chan_t *c, *other;
    long round;
} last_t;

static void *take_with_tiny_deadlines(void *arg)
{
    last_t *l = arg;
    weft_chan_t *c = l->c, *other = l->other; /* l is reused once we have the element */
    long round = l->round;
    for (long tries = 0;; tries++) {
        long v = -1;
        int64_t d = weft_deadline_in((round + tries) % 20 * 1000);
        int r;
        if (round % 2) {
            r = weft_chan_recv(c, &v, d);
        } else {
            weft_case_t cs[2] = {{other, WEFT_RECV, NULL, 1}, {c, WEFT_RECV, &v, 1}};
            r = weft_select(cs, 2, d);
            if (r >= 0) {
                ASSERT_EQ(r, 1);
                r = cs[1].result;
            }
        }
        if (r == -ETIMEDOUT)
            continue;
        ASSERT_OK(r);
        ASSERT_EQ(v, round);
        return NULL;
    }
}

static void *give_with_tiny_deadlines(void *arg)
{
    last_t *l = arg;
    weft_chan_t *c = l->c, *other = l->other;
    long round = l->round;
    for (long tries = 0;; tries++) {
        int64_t d = weft_deadline_in((round + tries) % 20 * 1000);
        int r;
        if (round % 2) {
            r = weft_chan_send(c, &round, d);
        } else {
            long dummy = 0;
            weft_case_t cs[2] = {{c, WEFT_SEND, &round, 1}, {other, WEFT_SEND, &dummy, 1}};
            r = weft_select(cs, 2, d);
            if (r >= 0) {
                ASSERT_EQ(r, 0);
                r = cs[0].result;
            }
        }
        if (r == -ETIMEDOUT)
            continue;
        ASSERT_OK(r);
        return NULL;
    }
}

TEST(the_last_user_frees_the_channel_while_the_other_side_is_leaving)
{
    start_workers(2);
    weft_chan_t *other = mk(sizeof(long), 0);
    for (long round = 0; round < 4000; round++) {
        last_t l = {mk(sizeof(long), 0), other, round};
        weft_fiber_t f;
        long v = -1;
        if (round % 4 < 2) {
            ASSERT_OK(weft_spawn(&f, NULL, take_with_tiny_deadlines, &l));
            ASSERT_OK(weft_chan_send(l.c, &round, WEFT_FOREVER));
        } else {
            ASSERT_OK(weft_spawn(&f, NULL, give_with_tiny_deadlines, &l));
            ASSERT_OK(weft_chan_recv(l.c, &v, WEFT_FOREVER));
            ASSERT_EQ(v, round);
        }
        ASSERT_OK(weft_chan_free(l.c)); /* the other side may not have returned yet */
        ASSERT_OK(weft_join(f, NULL));
    }
    ASSERT_OK(weft_chan_free(other));
    ASSERT_OK(weft_shutdown());
}

static weft_chan_t *dl_chan;
static atomic_int dl_edeadlk;

static void *dl_recv(void *arg)
{
    (void)arg;
    long v;
    if (weft_chan_recv(dl_chan, &v, WEFT_FOREVER) == -EDEADLK)
        atomic_fetch_add(&dl_edeadlk, 1);
    return NULL;
}

static void *dl_send(void *arg)
{
    (void)arg;
    long v = 1;
    weft_chan_t *full = mk(sizeof(long), 0);
    if (weft_chan_send(full, &v, WEFT_FOREVER) == -EDEADLK)
        atomic_fetch_add(&dl_edeadlk, 1);
    ASSERT_OK(weft_chan_free(full)); /* the send that ended with -EDEADLK left nothing behind */
    return NULL;
}

static void *dl_select(void *arg)
{
    (void)arg;
    long v;
    weft_case_t cs[2] = {{dl_chan, WEFT_RECV, &v, 1}, {NULL, WEFT_RECV, &v, 1}};
    if (weft_select(cs, 2, WEFT_FOREVER) == -EDEADLK)
        atomic_fetch_add(&dl_edeadlk, 1);
    if (weft_select(NULL, 0, WEFT_FOREVER) == -EDEADLK)
        atomic_fetch_add(&dl_edeadlk, 1);
    return NULL;
}

static void *dl_main(void *arg)
{
    (void)arg;
    dl_chan = mk(sizeof(long), 0);
    weft_fiber_t f[3];
    weft_fn fns[3] = {dl_recv, dl_send, dl_select};
    const char *names[3] = {"rx", "tx", "sel"};
    for (int i = 0; i < 3; i++) {
        weft_attr_t a = {.name = names[i]};
        ASSERT_OK(weft_spawn(&f[i], &a, fns[i], NULL));
    }
    for (int i = 0; i < 3; i++)
        while (weft_join(f[i], NULL) == -EDEADLK)
            ;
    return NULL;
}

static void deadlock_scenario(void *arg)
{
    (void)arg;
    int r = weft_run(NULL, dl_main, NULL, NULL);
    if (weft_chan_free(dl_chan) != 0)
        exit(21);
    printf("weft_run: %d, %d channel waits got -EDEADLK\n", r, atomic_load(&dl_edeadlk));
    fflush(stdout);
    exit(r == -EDEADLK && atomic_load(&dl_edeadlk) == 4 ? 0 : 20);
}

TEST_TIMEOUT(the_deadlock_report_names_channel_waits, 60)
{
    static char out[16384];
    int st = runner_capture(deadlock_scenario, NULL, out, sizeof out, 50);
    printf("%s", out);
    ASSERT_CONTAINS(out, "all fibers are asleep - deadlock!");
    ASSERT_CONTAINS(out, "\"rx\" [waiting: chan receive]");
    ASSERT_CONTAINS(out, "\"tx\" [waiting: chan send]");
    ASSERT_CONTAINS(out, "\"sel\" [waiting: select]");
    ASSERT_CONTAINS(out, "\"sel\" [waiting: select (no cases)]");
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
