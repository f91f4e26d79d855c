/*
 * Channels and select under races: fibers on every worker, weft threads and plain pthreads sending,
 * receiving, forwarding and selecting over a few channels of every capacity, with random yields and
 * random deadlines (WEFT_NOWAIT, microseconds, forever), and with closes arriving in the middle of it.
 * Every value carries its own counter: it must be received exactly once if its send succeeded, and
 * never if it failed. A lost wakeup shows as a hang (the runner's timeout). Sizes scale with
 * WEFT_TEST_SCALE.
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

static uint32_t xs(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static uint32_t seed_for(int id, uint32_t salt)
{
    return ((uint32_t)id + 1) * 2654435761u ^ salt ^ 0x9e3779b9u;
}

/* A deadline for a wait that covers only some channels: it must end, or a waiter could sit on a
 * channel nobody sends on while the values go elsewhere. */
static int64_t finite_deadline(uint32_t *rng)
{
    uint32_t r = xs(rng) % 16;
    if (r < 3)
        return WEFT_NOWAIT;
    if (r < 14)
        return weft_deadline_in((int64_t)(xs(rng) % 50) * 1000);
    return weft_deadline_in(MS);
}

/* ... and for one that covers every channel (or that sends: someone always comes to receive). */
static int64_t any_deadline(uint32_t *rng)
{
    return xs(rng) % 4 == 0 ? WEFT_FOREVER : finite_deadline(rng);
}

static void maybe_yield(uint32_t *rng)
{
    if (xs(rng) % 4 == 0)
        weft_yield();
}

/* ------------------------------------------------------------------------------------------------ */
/* Producers, relays and consumers over NCHAN channels, until every value has arrived               */

#define NCHAN 4
static const size_t caps[NCHAN] = {0, 1, 4, 0};

typedef struct {
    weft_chan_t *ch[NCHAN];
    long total;
    _Atomic int *sent, *consumed;
    atomic_long nconsumed;
    int nprod;
} world_t;

typedef struct {
    world_t *w;
    int id;
} party_t;

/* A random set of send or receive cases over the open channels, with duplicates and NULLs. Returns how
 * many; *all says whether every open channel is in it. */
static int pick_cases(weft_chan_t *const *open, weft_case_t *cs, int op, void *elem, uint32_t *rng, int *all)
{
    int n = 0;
    unsigned seen = 0, want = 0;
    for (int k = 0; k < NCHAN; k++)
        if (open[k])
            want |= 1u << k;
    int cases = 1 + (int)(xs(rng) % 5);
    for (int i = 0; i < cases; i++) {
        int k = (int)(xs(rng) % NCHAN);
        cs[n++] = (weft_case_t){open[k], op, elem, 1}; /* a closed one's slot is NULL: never ready */
        if (open[k])
            seen |= 1u << k;
    }
    *all = seen == want;
    return n;
}

static void *producer(void *arg)
{
    party_t *p = arg;
    world_t *w = p->w;
    uint32_t rng = seed_for(p->id, 1);
    for (long v = p->id; v < w->total; v += w->nprod) {
        long val = v;
        for (;;) {
            int r;
            if (xs(&rng) % 2) {
                r = weft_chan_send(w->ch[xs(&rng) % NCHAN], &val, any_deadline(&rng));
            } else {
                weft_case_t cs[6];
                int all, n = pick_cases(w->ch, cs, WEFT_SEND, &val, &rng, &all);
                r = weft_select(cs, n, any_deadline(&rng));
                if (r >= 0) {
                    for (int i = 0; i < n; i++)
                        if (i != r && cs[i].result != 1)
                            FAIL("a send case that was not chosen has result %d", cs[i].result);
                    r = cs[r].result;
                }
            }
            if (r == -ETIMEDOUT)
                continue; /* nothing happened: the same value again */
            ASSERT_OK(r); /* nothing closes before every value arrived */
            atomic_fetch_add(&w->sent[v], 1);
            break;
        }
        maybe_yield(&rng);
    }
    return NULL;
}

/* Receive and pass on: holds up to four values, and selects over sends of the top one and receives
 * at once, sometimes on the same channel. */
static void *relay(void *arg)
{
    party_t *p = arg;
    world_t *w = p->w;
    uint32_t rng = seed_for(p->id, 2);
    weft_chan_t *open[NCHAN];
    memcpy(open, w->ch, sizeof open);
    long held[4];
    int nheld = 0, nopen = NCHAN;
    while (nopen > 0) {
        long in = -1;
        weft_case_t cs[12];
        int n = 0, all_r = 0, all_s = 1;
        if (nheld > 0)
            n += pick_cases(w->ch, cs, WEFT_SEND, &held[nheld - 1], &rng, &all_s);
        int first_recv = n;
        if (nheld < 4)
            n += pick_cases(open, cs + n, WEFT_RECV, &in, &rng, &all_r);
        int r = weft_select(cs, n, nheld > 0 || all_r ? any_deadline(&rng) : finite_deadline(&rng));
        if (r == -ETIMEDOUT)
            continue;
        ASSERT(r >= 0 && r < n);
        int res = cs[r].result;
        if (r < first_recv) {
            ASSERT_OK(res); /* senders see no close while a relay holds a value */
            nheld--;
        } else if (res == -EPIPE) {
            for (int k = 0; k < NCHAN; k++)
                if (open[k] == cs[r].chan) {
                    open[k] = NULL;
                    nopen--;
                }
        } else {
            ASSERT_OK(res);
            ASSERT(in >= 0 && in < w->total);
            held[nheld++] = in;
        }
        maybe_yield(&rng);
    }
    ASSERT_EQ(nheld, 0);
    return NULL;
}

static void *consumer(void *arg)
{
    party_t *p = arg;
    world_t *w = p->w;
    uint32_t rng = seed_for(p->id, 3);
    weft_chan_t *open[NCHAN];
    memcpy(open, w->ch, sizeof open);
    int nopen = NCHAN;
    while (nopen > 0) {
        long v = -1;
        int r, from;
        if (xs(&rng) % 2) {
            from = (int)(xs(&rng) % NCHAN);
            if (!open[from])
                continue;
            r = weft_chan_recv(open[from], &v, nopen == 1 ? any_deadline(&rng) : finite_deadline(&rng));
        } else {
            weft_case_t cs[6];
            int all, n = pick_cases(open, cs, WEFT_RECV, &v, &rng, &all);
            r = weft_select(cs, n, all ? any_deadline(&rng) : finite_deadline(&rng));
            from = -1;
            if (r >= 0) {
                for (int k = 0; k < NCHAN; k++)
                    if (open[k] == cs[r].chan)
                        from = k;
                r = cs[r].result;
            }
        }
        if (r == -ETIMEDOUT) {
            ASSERT_EQ(v, -1);
            continue;
        }
        if (r == -EPIPE) {
            open[from] = NULL;
            nopen--;
            continue;
        }
        ASSERT_OK(r);
        ASSERT(v >= 0 && v < w->total);
        if (atomic_fetch_add(&w->consumed[v], 1) != 0)
            FAIL("value %ld received twice", v);
        atomic_fetch_add(&w->nconsumed, 1);
        maybe_yield(&rng);
    }
    return NULL;
}

typedef struct {
    void *(*fn)(void *);
    party_t p;
} pthread_party_t;

static void *pthread_main(void *arg)
{
    pthread_party_t *pp = arg;
    return pp->fn(&pp->p);
}

TEST_TIMEOUT(producers_relays_and_consumers_deliver_every_value_once, 600)
{
    start_workers(2);
    world_t w = {.total = runner_scaled(1000000)};
    w.sent = calloc((size_t)w.total, sizeof *w.sent);
    w.consumed = calloc((size_t)w.total, sizeof *w.consumed);
    ASSERT(w.sent && w.consumed);
    for (int k = 0; k < NCHAN; k++)
        ASSERT_OK(weft_chan_new(&w.ch[k], sizeof(long), caps[k]));
    enum { PF = 12, PT = 2, PP = 2, RF = 6, RT = 1, CF = 10, CT = 1, CP = 2 };
    w.nprod = PF + PT + PP;
    party_t parties[64];
    int np = 0;
    weft_fiber_t fibers[64];
    int nf = 0;
    pthread_party_t pt[8];
    pthread_t pthreads[8];
    int npt = 0;
    struct {
        void *(*fn)(void *);
        int fibers, threads, pthreads;
    } kinds[3] = {{producer, PF, PT, PP}, {relay, RF, RT, 0}, {consumer, CF, CT, CP}};
    for (int kind = 2; kind >= 0; kind--) { /* consumers first */
        int id = 0;
        for (int i = 0; i < kinds[kind].fibers; i++) {
            parties[np] = (party_t){&w, id++};
            ASSERT_OK(weft_spawn(&fibers[nf++], NULL, kinds[kind].fn, &parties[np++]));
        }
        for (int i = 0; i < kinds[kind].threads; i++) {
            parties[np] = (party_t){&w, id++};
            ASSERT_OK(weft_thread_spawn(&fibers[nf++], NULL, kinds[kind].fn, &parties[np++]));
        }
        for (int i = 0; i < kinds[kind].pthreads; i++) {
            pt[npt].fn = kinds[kind].fn;
            pt[npt].p = (party_t){&w, id++};
            ASSERT_EQ(pthread_create(&pthreads[npt], NULL, pthread_main, &pt[npt]), 0);
            npt++;
        }
    }
    /* every value arrives; then the closes send everyone home */
    int64_t until = weft_now() + 500 * SEC;
    while (atomic_load(&w.nconsumed) < w.total) {
        if (weft_now() > until)
            FAIL("only %ld of %ld values arrived", atomic_load(&w.nconsumed), w.total);
        weft_sleep_until(weft_deadline_in(MS));
    }
    for (int k = 0; k < NCHAN; k++)
        ASSERT_OK(weft_chan_close(w.ch[k]));
    for (int i = 0; i < nf; i++)
        ASSERT_OK(weft_join(fibers[i], NULL));
    for (int i = 0; i < npt; i++)
        ASSERT_EQ(pthread_join(pthreads[i], NULL), 0);
    for (long v = 0; v < w.total; v++)
        if (atomic_load(&w.sent[v]) != 1 || atomic_load(&w.consumed[v]) != 1)
            FAIL("value %ld: sent %d times, received %d times", v, atomic_load(&w.sent[v]),
                 atomic_load(&w.consumed[v]));
    for (int k = 0; k < NCHAN; k++)
        ASSERT_OK(weft_chan_free(w.ch[k]));
    printf("%ld values through %d producers, %d relays and %d consumers\n", w.total, PF + PT + PP, RF + RT,
           CF + CT + CP);
    free(w.sent);
    free(w.consumed);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* Closes in the middle of it, round after round                                                    */

#define PER_SENDER 64

typedef struct {
    weft_chan_t *c, *other; /* other: a channel only senders (or only receivers) use, never ready */
    int id;
    _Atomic int *sent, *received; /* [4 * PER_SENDER] */
} round_party_t;

static void *round_sender(void *arg)
{
    round_party_t *p = arg;
    uint32_t rng = seed_for(p->id, (uint32_t)(uintptr_t)p->c);
    for (int k = 0; k < PER_SENDER; k++) {
        int v = p->id * PER_SENDER + k, r;
        do {
            if (xs(&rng) % 2) {
                r = weft_chan_send(p->c, &v, any_deadline(&rng));
            } else {
                int dummy = -1;
                weft_case_t cs[3] = {{p->other, WEFT_SEND, &dummy, 1}, {p->c, WEFT_SEND, &v, 1}, {p->c, WEFT_SEND, &v, 1}};
                r = weft_select(cs, 3, any_deadline(&rng));
                if (r >= 0) {
                    ASSERT(r != 0); /* nobody receives on other */
                    r = cs[r].result;
                }
            }
        } while (r == -ETIMEDOUT);
        if (r == -EPIPE)
            return NULL; /* v was not sent, nor any after it */
        ASSERT_OK(r);
        atomic_fetch_add(&p->sent[v], 1);
        maybe_yield(&rng);
    }
    return NULL;
}

static void *round_receiver(void *arg)
{
    round_party_t *p = arg;
    uint32_t rng = seed_for(p->id, 77u ^ (uint32_t)(uintptr_t)p->c);
    for (;;) {
        int v = -1, r;
        if (xs(&rng) % 2) {
            r = weft_chan_recv(p->c, &v, any_deadline(&rng));
        } else {
            int w = -1;
            weft_case_t cs[3] = {{p->c, WEFT_RECV, &v, 1}, {p->other, WEFT_RECV, &w, 1}, {NULL, WEFT_RECV, &w, 1}};
            r = weft_select(cs, 3, any_deadline(&rng));
            if (r >= 0) {
                ASSERT_EQ(r, 0);
                r = cs[0].result;
            }
        }
        if (r == -ETIMEDOUT)
            continue;
        if (r == -EPIPE)
            return NULL;
        ASSERT_OK(r);
        ASSERT(v >= 0 && v < 4 * PER_SENDER);
        atomic_fetch_add(&p->received[v], 1);
        maybe_yield(&rng);
    }
}

TEST_TIMEOUT(closes_in_the_middle_lose_and_duplicate_nothing, 600)
{
    start_workers(2);
    long rounds = runner_scaled(3000), through = 0;
    weft_chan_t *other_s, *other_r;
    ASSERT_OK(weft_chan_new(&other_s, sizeof(int), 0));
    ASSERT_OK(weft_chan_new(&other_r, sizeof(int), 0));
    uint32_t rng = 12345;
    for (long round = 0; round < rounds; round++) {
        static _Atomic int sent[4 * PER_SENDER], received[4 * PER_SENDER];
        for (int i = 0; i < 4 * PER_SENDER; i++) {
            atomic_store(&sent[i], 0);
            atomic_store(&received[i], 0);
        }
        weft_chan_t *c;
        ASSERT_OK(weft_chan_new(&c, sizeof(int), (size_t)(round % 3 == 2 ? 3 : round % 3)));
        round_party_t ps[7];
        weft_fiber_t f[7];
        pthread_t pt;
        int nf = 0;
        for (int i = 0; i < 7; i++)
            ps[i] = (round_party_t){c, i < 4 ? other_s : other_r, i % 4, sent, received};
        /* four senders (one a plain thread every eighth round), three receivers */
        for (int i = 0; i < 3; i++)
            ASSERT_OK(weft_spawn(&f[nf++], NULL, round_receiver, &ps[4 + i]));
        for (int i = 0; i < 3; i++)
            ASSERT_OK(weft_spawn(&f[nf++], NULL, round_sender, &ps[i]));
        if (round % 8 == 0)
            ASSERT_EQ(pthread_create(&pt, NULL, round_sender, &ps[3]), 0);
        else
            ASSERT_OK(weft_spawn(&f[nf++], NULL, round_sender, &ps[3]));
        /* close after a while of anything from nothing to about every value */
        int yields = (int)(xs(&rng) % 200);
        for (int i = 0; i < yields; i++)
            weft_yield();
        ASSERT_OK(weft_chan_close(c));
        for (int i = 0; i < nf; i++)
            ASSERT_OK(weft_join(f[i], NULL));
        if (round % 8 == 0)
            ASSERT_EQ(pthread_join(pt, NULL), 0);
        for (int v = 0; v < 4 * PER_SENDER; v++) {
            int s = atomic_load(&sent[v]), r = atomic_load(&received[v]);
            if (s > 1 || r != s)
                FAIL("round %ld, value %d: sent %d times, received %d times", round, v, s, r);
            through += s;
        }
        ASSERT_OK(weft_chan_free(c));
    }
    ASSERT_OK(weft_chan_free(other_s));
    ASSERT_OK(weft_chan_free(other_r));
    printf("%ld rounds, %ld values went through before the closes\n", rounds, through);
    ASSERT_OK(weft_shutdown());
}

/* ------------------------------------------------------------------------------------------------ */
/* The channel freed right after the last hand-off, while the other side's deadline passes          */

typedef struct {
    weft_chan_t *c, *other;
    long round;
} last_t;

static void *other_side(void *arg)
{
    last_t *l = arg;
    weft_chan_t *c = l->c, *other = l->other; /* l is the freer's, and may change once we are through */
    long round = l->round;
    int recv = round % 2 == 0;
    for (long tries = 0;; tries++) {
        long v = recv ? -1 : round, dummy = 0;
        int64_t d = tries % 7 == 6 ? WEFT_NOWAIT : weft_deadline_in((round * 7 + tries) % 25 * 1000);
        int r;
        if ((round >> 1) % 2) {
            r = recv ? weft_chan_recv(c, &v, d) : weft_chan_send(c, &v, d);
        } else {
            weft_case_t cs[2] = {{other, recv ? WEFT_RECV : WEFT_SEND, &dummy, 1},
                                 {c, recv ? WEFT_RECV : WEFT_SEND, &v, 1}};
            r = weft_select(cs, 2, d);
            if (r >= 0) {
                ASSERT_EQ(r, 1);
                r = cs[1].result;
            }
        }
        if (r == -ETIMEDOUT)
            continue;
        ASSERT_OK(r);
        if (recv)
            ASSERT_EQ(v, round);
        return NULL;
    }
}

TEST_TIMEOUT(a_channel_is_freed_while_the_other_side_is_on_its_way_out, 600)
{
    start_workers(2);
    weft_chan_t *other;
    ASSERT_OK(weft_chan_new(&other, sizeof(long), 0));
    long rounds = runner_scaled(40000);
    for (long round = 0; round < rounds; round++) {
        last_t l = {NULL, other, round};
        /* buffered only when we receive: a send into a buffer returns before anyone received */
        ASSERT_OK(weft_chan_new(&l.c, sizeof(long), round % 4 == 3 ? 1 : 0));
        weft_fiber_t f = WEFT_FIBER_NONE;
        pthread_t pt;
        int plain = round % 16 == 15;
        if (plain)
            ASSERT_EQ(pthread_create(&pt, NULL, other_side, &l), 0);
        else
            ASSERT_OK(weft_spawn(&f, NULL, other_side, &l));
        long v = -1;
        if (round % 2 == 0) {
            ASSERT_OK(weft_chan_send(l.c, &round, WEFT_FOREVER));
        } else {
            ASSERT_OK(weft_chan_recv(l.c, &v, WEFT_FOREVER));
            ASSERT_EQ(v, round);
        }
        /* our call returned: nothing of ours is queued, the other side's hand-off is done */
        ASSERT_OK(weft_chan_free(l.c));
        if (plain)
            ASSERT_EQ(pthread_join(pt, NULL), 0);
        else
            ASSERT_OK(weft_join(f, NULL));
    }
    ASSERT_OK(weft_chan_free(other));
    ASSERT_OK(weft_shutdown());
}
