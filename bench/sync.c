/*
 * The coordination benchmarks, weft side (see sync.h). Each figure gets a fresh runtime with the
 * workers it asks for (weft_run starts it, runs the measuring fiber, and shuts it down), a warm-up of
 * about a tenth of the work in that runtime first, then the timed work. Every result is checked: a
 * benchmark that is fast because it lost work must fail, not win.
 */
#include "sync.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

/* ---- chan-pingpong ---- */

typedef struct {
    weft_chan_t *ping, *pong;
    weft_chan_t *never; /* select-pingpong: the case that is never ready (nobody sends on it); else NULL */
    long rounds;
    int64_t final;   /* the counter as it came back last, written by side A */
    _Atomic int err; /* the first failure of either side; 0 */
} pingpong_ctx;

/* Keep the first failure of any fiber in *err. Relaxed: it is read only after every fiber has been
 * joined, and the join orders it. */
static void note_failure(_Atomic int *err, int r)
{
    int zero = 0;
    atomic_compare_exchange_strong_explicit(err, &zero, r, memory_order_relaxed, memory_order_relaxed);
}

/* On a failure, close both channels so that the other side, which may be waiting on either, wakes
 * (with -EPIPE) instead of holding shutdown forever. */
static void pingpong_fail(pingpong_ctx *c, int r)
{
    note_failure(&c->err, r);
    weft_chan_close(c->ping);
    weft_chan_close(c->pong);
}

static void *pingpong_a(void *arg)
{
    pingpong_ctx *c = arg;
    int64_t v = 0;
    for (long i = 0; i < c->rounds; i++) {
        v++;
        int r = weft_chan_send(c->ping, &v, WEFT_FOREVER);
        if (r == 0)
            r = weft_chan_recv(c->pong, &v, WEFT_FOREVER);
        if (r < 0) {
            pingpong_fail(c, r);
            break;
        }
    }
    c->final = v;
    return NULL;
}

static void *pingpong_b(void *arg)
{
    pingpong_ctx *c = arg;
    int64_t v;
    for (long i = 0; i < c->rounds; i++) {
        int r = weft_chan_recv(c->ping, &v, WEFT_FOREVER);
        if (r == 0) {
            v++;
            r = weft_chan_send(c->pong, &v, WEFT_FOREVER);
        }
        if (r < 0) {
            pingpong_fail(c, r);
            break;
        }
    }
    return NULL;
}

static void *select_b(void *arg);

/* `rounds` round trips on fresh channels, side B receiving through a select or not: ns per round trip,
 * or a negative errno */
static double pingpong_once(long rounds, bool via_select)
{
    pingpong_ctx c = {.rounds = rounds, .ping = NULL, .pong = NULL, .never = NULL};
    int r = weft_chan_new(&c.ping, sizeof(int64_t), 0);
    if (r == 0)
        r = weft_chan_new(&c.pong, sizeof(int64_t), 0);
    if (r == 0 && via_select)
        r = weft_chan_new(&c.never, sizeof(int64_t), 0);
    if (r < 0) {
        weft_chan_free(c.ping);
        weft_chan_free(c.pong);
        return r;
    }
    weft_fiber_t a, b;
    int64_t t0 = weft_now();
    r = weft_spawn(&a, NULL, pingpong_a, &c);
    if (r == 0) {
        r = weft_spawn(&b, NULL, via_select ? select_b : pingpong_b, &c);
        if (r < 0)
            pingpong_fail(&c, r); /* a is waiting to send: let it go */
        else
            weft_join(b, NULL);
        weft_join(a, NULL);
    }
    int64_t t1 = weft_now();
    weft_chan_free(c.ping);
    weft_chan_free(c.pong);
    weft_chan_free(c.never);
    if (r < 0)
        return r;
    if ((r = atomic_load_explicit(&c.err, memory_order_relaxed)) < 0)
        return r;
    if (c.final != 2 * (int64_t)rounds) {
        fprintf(stderr, "weft-bench: %s on %d workers: counter %lld after %ld round trips, expected %lld\n",
                via_select ? "select-pingpong" : "chan-pingpong", weft_workers(), (long long)c.final, rounds,
                2 * (long long)rounds);
        return BENCH_WRONG;
    }
    return (double)(t1 - t0) / (double)rounds;
}

/* One figure of a round-trip benchmark: a fresh runtime on `workers` workers, a tenth of the rounds to
 * warm up, then the measured rounds. */
typedef struct {
    long rounds;
    double (*once)(long rounds);
    double figure;
} pingpong_run;

static void *pingpong_main(void *arg)
{
    pingpong_run *p = arg;
    double warm = p->once(p->rounds / 10 + 1);
    p->figure = warm < 0 ? warm : p->once(p->rounds);
    return NULL;
}

static double pingpong_measure(int workers, long rounds, double (*once)(long rounds))
{
    weft_config_t cfg = {.workers = workers};
    pingpong_run p = {.rounds = rounds, .once = once};
    int r = weft_run(&cfg, pingpong_main, &p, NULL);
    return r < 0 ? r : p.figure;
}

static double chan_once(long rounds)
{
    return pingpong_once(rounds, false);
}

double bench_chan_pingpong(int workers, long rounds)
{
    return pingpong_measure(workers, rounds, chan_once);
}

/* ---- select-pingpong: chan-pingpong with side B receiving through a two-case select ---- */

static void *select_b(void *arg)
{
    pingpong_ctx *c = arg;
    int64_t v, dummy;
    for (long i = 0; i < c->rounds; i++) {
        weft_case_t cases[2] = {{.chan = c->never, .op = WEFT_RECV, .elem = &dummy},
                                {.chan = c->ping, .op = WEFT_RECV, .elem = &v}};
        int r = weft_select(cases, 2, WEFT_FOREVER);
        if (r == 1)
            r = cases[1].result;
        else if (r >= 0)
            r = BENCH_WRONG;
        if (r == 0) {
            v++;
            r = weft_chan_send(c->pong, &v, WEFT_FOREVER);
        }
        if (r < 0) {
            pingpong_fail(c, r);
            break;
        }
    }
    return NULL;
}

static double select_once(long rounds)
{
    return pingpong_once(rounds, true);
}

double bench_select_pingpong(int workers, long rounds)
{
    return pingpong_measure(workers, rounds, select_once);
}

/* ---- wg-pingpong: two fibers signal each other through two wait groups used as one-shot events ---- */

typedef struct {
    weft_wg_t ab, ba; /* A's signal to B, B's to A: each armed at 1, fired by done, re-armed by its waiter */
    long rounds;
    _Atomic int err;
} wg_ctx;

static void *wg_a(void *arg)
{
    wg_ctx *c = arg;
    for (long i = 0; i < c->rounds; i++) {
        int r = weft_wg_done(&c->ab);
        if (r == 0)
            r = weft_wg_wait(&c->ba, WEFT_FOREVER);
        if (r == 0)
            r = weft_wg_add(&c->ba, 1); /* B's done of it returned before our wait did (weft_wg_wait) */
        if (r < 0) {
            note_failure(&c->err, r);
            break;
        }
    }
    return NULL;
}

static void *wg_b(void *arg)
{
    wg_ctx *c = arg;
    for (long i = 0; i < c->rounds; i++) {
        int r = weft_wg_wait(&c->ab, WEFT_FOREVER);
        if (r == 0)
            r = weft_wg_add(&c->ab, 1);
        if (r == 0)
            r = weft_wg_done(&c->ba);
        if (r < 0) {
            note_failure(&c->err, r);
            break;
        }
    }
    return NULL;
}

static double wg_once(long rounds)
{
    wg_ctx c = {.rounds = rounds};
    weft_wg_init(&c.ab);
    weft_wg_init(&c.ba);
    weft_wg_add(&c.ab, 1);
    weft_wg_add(&c.ba, 1);
    weft_fiber_t a, b;
    int64_t t0 = weft_now();
    int r = weft_spawn(&a, NULL, wg_a, &c);
    if (r == 0) {
        r = weft_spawn(&b, NULL, wg_b, &c);
        if (r < 0)
            weft_wg_done(&c.ba); /* let A's first wait go; it then fails to find B and stops */
        else
            weft_join(b, NULL);
        weft_join(a, NULL);
    }
    int64_t t1 = weft_now();
    if (r < 0)
        return r;
    if ((r = atomic_load_explicit(&c.err, memory_order_relaxed)) < 0)
        return r;
    return (double)(t1 - t0) / (double)rounds;
}

double bench_wg_pingpong(int workers, long rounds)
{
    return pingpong_measure(workers, rounds, wg_once);
}

/* ---- chan-buffered ---- */

enum { MAX_PAIRS = 16 };

typedef struct buffered_ctx buffered_ctx;

typedef struct {
    buffered_ctx *c;
    int k;                    /* which producer or consumer */
    _Alignas(64) int64_t sum; /* a consumer's: written by it only, read after its join */
} buffered_role;

struct buffered_ctx {
    weft_chan_t *ch;
    long n;
    int pairs;
    _Atomic int err; /* the first failure of any fiber; 0 */
    double figure;   /* out: ns per element, or a negative errno */
    buffered_role prod[MAX_PAIRS], cons[MAX_PAIRS];
};

static void *producer(void *arg)
{
    buffered_role *p = arg;
    buffered_ctx *c = p->c;
    int64_t lo = c->n * p->k / c->pairs + 1, hi = c->n * (p->k + 1) / c->pairs;
    for (int64_t v = lo; v <= hi; v++) {
        int r = weft_chan_send(c->ch, &v, WEFT_FOREVER);
        if (r < 0) {
            note_failure(&c->err, r);
            break;
        }
    }
    return NULL;
}

static void *consumer(void *arg)
{
    buffered_role *p = arg;
    int64_t v, sum = 0;
    int r;
    while ((r = weft_chan_recv(p->c->ch, &v, WEFT_FOREVER)) == 0)
        sum += v;
    if (r != -EPIPE) /* -EPIPE: closed and drained, the normal end */
        note_failure(&p->c->err, r);
    p->sum = sum;
    return NULL;
}

/* n elements through a fresh channel: ns per element, or a negative errno */
static double buffered_once(buffered_ctx *c, long n)
{
    int r = weft_chan_new(&c->ch, sizeof(int64_t), BENCH_CHAN_CAP);
    if (r < 0)
        return r;
    c->n = n;
    atomic_store_explicit(&c->err, 0, memory_order_relaxed);
    weft_fiber_t prod[MAX_PAIRS], cons[MAX_PAIRS];
    int np = 0, nc = 0;
    int64_t t0 = weft_now();
    for (; np < c->pairs; np++) {
        c->prod[np] = (buffered_role){.c = c, .k = np};
        if ((r = weft_spawn(&prod[np], NULL, producer, &c->prod[np])) < 0)
            break;
    }
    for (; r == 0 && nc < c->pairs; nc++) {
        c->cons[nc] = (buffered_role){.c = c, .k = nc};
        if ((r = weft_spawn(&cons[nc], NULL, consumer, &c->cons[nc])) < 0)
            break;
    }
    if (r < 0) /* not everyone started: a producer may wait for room forever; let it go */
        weft_chan_close(c->ch);
    for (int i = 0; i < np; i++)
        weft_join(prod[i], NULL);
    if (r == 0)
        weft_chan_close(c->ch);
    for (int i = 0; i < nc; i++)
        weft_join(cons[i], NULL);
    int64_t t1 = weft_now();
    weft_chan_free(c->ch);
    c->ch = NULL;
    if (r < 0)
        return r;
    if ((r = atomic_load_explicit(&c->err, memory_order_relaxed)) < 0)
        return r;
    int64_t sum = 0;
    for (int i = 0; i < nc; i++)
        sum += c->cons[i].sum;
    int64_t want = (int64_t)n * (n + 1) / 2;
    if (sum != want) {
        fprintf(stderr, "weft-bench: chan-buffered-%dx%d: received a sum of %lld, expected %lld\n", c->pairs,
                c->pairs, (long long)sum, (long long)want);
        return BENCH_WRONG;
    }
    return (double)(t1 - t0) / (double)n;
}

static void *buffered_main(void *arg)
{
    buffered_ctx *c = arg;
    long n = c->n;
    double warm = buffered_once(c, n / 10 + 1);
    c->figure = warm < 0 ? warm : buffered_once(c, n);
    return NULL;
}

double bench_chan_buffered(int pairs, long n)
{
    if (pairs < 1 || pairs > MAX_PAIRS)
        return -EINVAL;
    buffered_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->n = n;
    c->pairs = pairs;
    int r = weft_run(NULL, buffered_main, c, NULL);
    double v = r < 0 ? r : c->figure;
    free(c);
    return v;
}

/* ---- mutex ---- */

enum { MAX_FIBERS = 1024 };

typedef struct mutex_ctx mutex_ctx;

typedef struct {
    mutex_ctx *c;
    long k; /* lock + unlock pairs this fiber makes */
} mutex_role;

struct mutex_ctx {
    weft_mutex_t mu;
    long counter; /* protected by mu */
    long n;
    int fibers;
    _Atomic int err;
    double figure;
    weft_fiber_t f[MAX_FIBERS];
    mutex_role role[MAX_FIBERS];
};

static void *locker(void *arg)
{
    mutex_role *p = arg;
    mutex_ctx *c = p->c;
    for (long i = 0; i < p->k; i++) {
        int r = weft_mutex_lock(&c->mu, WEFT_FOREVER);
        if (r < 0) {
            note_failure(&c->err, r);
            break;
        }
        c->counter++;
        weft_mutex_unlock(&c->mu);
    }
    return NULL;
}

/* n lock + increment + unlock in all over c->fibers fibers: ns per pair, or a negative errno */
static double mutex_once(mutex_ctx *c, long n)
{
    mutex_role *role = c->role;
    weft_fiber_t *f = c->f;
    int r = weft_mutex_init(&c->mu);
    if (r < 0)
        return r;
    c->counter = 0;
    int i = 0;
    int64_t t0 = weft_now();
    for (; i < c->fibers; i++) {
        role[i] = (mutex_role){.c = c, .k = n * (i + 1) / c->fibers - n * i / c->fibers};
        if ((r = weft_spawn(&f[i], NULL, locker, &role[i])) < 0)
            break;
    }
    for (int j = 0; j < i; j++)
        weft_join(f[j], NULL);
    int64_t t1 = weft_now();
    weft_mutex_destroy(&c->mu);
    if (r < 0)
        return r;
    if ((r = atomic_load_explicit(&c->err, memory_order_relaxed)) < 0)
        return r;
    if (c->counter != n) {
        fprintf(stderr, "weft-bench: mutex: %d fibers on %d workers: counter %ld, expected %ld\n", c->fibers,
                weft_workers(), c->counter, n);
        return BENCH_WRONG;
    }
    return (double)(t1 - t0) / (double)n;
}

static void *mutex_main(void *arg)
{
    mutex_ctx *c = arg;
    double warm = mutex_once(c, c->n / 10 + 1);
    c->figure = warm < 0 ? warm : mutex_once(c, c->n);
    return NULL;
}

double bench_mutex(int workers, int fibers, long n)
{
    if (fibers < 1 || fibers > MAX_FIBERS)
        return -EINVAL;
    weft_config_t cfg = {.workers = workers};
    mutex_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->n = n;
    c->fibers = fibers;
    int r = weft_run(&cfg, mutex_main, c, NULL);
    double v = r < 0 ? r : c->figure;
    free(c);
    return v;
}

/* ---- pfor-sqrt ---- */

/* the sum of the roots of a[0..n) */
static double sqrt_sum(long n)
{
    long r = n % 1000;
    return (double)(n / 1000 * 499500 + r * (r - 1) / 2);
}

double *bench_sqrt_array(long n, double *want)
{
    double *a = malloc((size_t)n * sizeof *a);
    if (!a)
        return NULL;
    for (long i = 0; i < n; i++) {
        long k = i % 1000;
        a[i] = (double)(k * k);
    }
    *want = sqrt_sum(n);
    return a;
}

static void sqrt_body(int64_t lo, int64_t hi, void *acc, void *arg)
{
    const double *a = arg;
    double s = *(double *)acc;
    for (int64_t i = lo; i < hi; i++)
        s += sqrt(a[i]);
    *(double *)acc = s;
}

static void sqrt_join(void *into, const void *from, void *arg)
{
    (void)arg;
    *(double *)into += *(const double *)from;
}

typedef struct {
    const double *a;
    long n;
    double want;
    double figure;
} sqrt_ctx;

/* the sum over the first n: ms, or a negative errno */
static double sqrt_once(sqrt_ctx *c, long n, double want)
{
    static const double zero = 0;
    double s = 0;
    int64_t t0 = weft_now();
    int r = weft_parallel_reduce(0, n, 0, &s, sizeof s, &zero, sqrt_body, sqrt_join, (void *)c->a);
    int64_t t1 = weft_now();
    if (r < 0)
        return r;
    if (s != want) {
        fprintf(stderr, "weft-bench: pfor-sqrt on %d workers: sum %.1f, expected %.1f\n", weft_workers(), s, want);
        return BENCH_WRONG;
    }
    return (double)(t1 - t0) / 1e6;
}

static void *sqrt_main(void *arg)
{
    sqrt_ctx *c = arg;
    long w = c->n / 10 + 1;
    double warm = sqrt_once(c, w, sqrt_sum(w));
    c->figure = warm < 0 ? warm : sqrt_once(c, c->n, c->want);
    return (void *)(intptr_t)weft_workers();
}

double bench_pfor_sqrt(const double *a, long n, double want, int workers, int *used)
{
    weft_config_t cfg = {.workers = workers};
    sqrt_ctx c = {.a = a, .n = n, .want = want};
    void *w = NULL;
    int r = weft_run(&cfg, sqrt_main, &c, &w);
    *used = (int)(intptr_t)w;
    return r < 0 ? r : c.figure;
}

/* ---- pfor-tiny ---- */

static void tiny_body(int64_t lo, int64_t hi, void *arg)
{
    int *a = arg;
    for (int64_t i = lo; i < hi; i++)
        a[i] += 1;
}

typedef struct {
    int *a;
    long m, passes;
    double figure;
    int used;
} tiny_ctx;

static void *tiny_main(void *arg)
{
    tiny_ctx *c = arg;
    c->used = weft_workers();
    int r = weft_parallel_for(0, c->m, 0, tiny_body, c->a); /* warm-up */
    int64_t t0 = weft_now();
    for (long p = 0; r == 0 && p < c->passes; p++)
        r = weft_parallel_for(0, c->m, 0, tiny_body, c->a);
    int64_t t1 = weft_now();
    c->figure = r < 0 ? r : (double)(t1 - t0) / (double)(c->m * c->passes);
    return NULL;
}

double bench_pfor_tiny(long n, double *serial_ns, int *used)
{
    long m = n < BENCH_TINY_SIZE ? n : BENCH_TINY_SIZE;
    tiny_ctx c = {.m = m, .passes = n / m};
    c.a = calloc((size_t)m, sizeof *c.a);
    if (!c.a)
        return -ENOMEM;

    /* the floor: the same passes as plain loops, through the same function the workers call */
    void (*volatile body)(int64_t, int64_t, void *) = tiny_body;
    body(0, m, c.a);
    int64_t t0 = weft_now();
    for (long p = 0; p < c.passes; p++)
        body(0, m, c.a);
    *serial_ns = (double)(weft_now() - t0) / (double)(m * c.passes);

    int r = weft_run(NULL, tiny_main, &c, NULL);
    *used = c.used;
    double v = r < 0 ? r : c.figure;
    /* 1 + passes serial passes, then 1 + passes parallel ones */
    long want = 2 * (c.passes + 1);
    for (long i = 0; v >= 0 && i < m; i++) {
        if (c.a[i] != want) {
            fprintf(stderr, "weft-bench: pfor-tiny: a[%ld] = %d after %ld passes, expected %ld\n", i, c.a[i], want,
                    want);
            v = BENCH_WRONG;
        }
    }
    free(c.a);
    return v;
}
