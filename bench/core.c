/*
 * The core benchmarks, weft side (see core.h). Every function starts the runtime it needs and shuts it
 * down, so each figure is measured from the same clean state.
 */
#include "core.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft.h>

#include "arch/switch.h"

/* ---- switch ---- */

static long switch_rounds;

static void *yielder(void *arg)
{
    for (long i = 0; i < switch_rounds; i++)
        weft_yield();
    return arg;
}

static void *switch_main(void *arg)
{
    double *out = arg;
    weft_fiber_t a, b;
    int64_t t0 = weft_now();
    if (weft_spawn(&a, NULL, yielder, NULL) < 0 || weft_spawn(&b, NULL, yielder, NULL) < 0)
        return NULL;
    weft_join(a, NULL);
    weft_join(b, NULL);
    *out = (double)(weft_now() - t0) / (double)switch_rounds;
    return NULL;
}

double bench_switch(long rounds)
{
    weft_config_t one = {.workers = 1};
    double ns = -1;
    switch_rounds = rounds / 10 + 1; /* warm up: stacks, caches, branch predictors */
    int r = weft_run(&one, switch_main, &ns, NULL);
    switch_rounds = rounds;
    if (r == 0)
        r = weft_run(&one, switch_main, &ns, NULL);
    return r < 0 ? r : ns;
}

/* The bare switch, as Boost.Context's resume round trip is measured: main resumes the other context,
 * which resumes main. Internal API (src/arch/switch.h), for the comparison only. */
static void *ctx_main_sp, *ctx_other_sp;

static void ctx_other(void *arg)
{
    (void)arg;
    for (;;)
        weft__ctx_switch_inline(&ctx_other_sp, ctx_main_sp);
}

double bench_switch_ctx(long rounds)
{
    enum { STACK = 64 << 10 };
    char *stack = malloc(STACK);
    if (!stack)
        return -ENOMEM;
    ctx_other_sp = weft__ctx_make(stack + STACK, ctx_other, NULL);
    for (long i = 0; i < rounds / 10 + 1; i++)
        weft__ctx_switch_inline(&ctx_main_sp, ctx_other_sp);
    int64_t t0 = weft_now();
    for (long i = 0; i < rounds; i++)
        weft__ctx_switch_inline(&ctx_main_sp, ctx_other_sp);
    double ns = (double)(weft_now() - t0) / (double)rounds;
    free(stack);
    return ns;
}

/* ---- hand-off across workers ---- */

typedef struct {
    long rounds;
    weft_wg_t *wg;          /* 2 * rounds groups, each with a count of one */
    _Atomic int started;
} handoff_ctx;

static void *handoff_side(void *arg)
{
    handoff_ctx *c = (handoff_ctx *)((uintptr_t)arg & ~(uintptr_t)1);
    int side = (int)((uintptr_t)arg & 1);
    /* hold this worker until the other side has started: then they run on different workers, and a
     * started fiber stays where it is */
    atomic_fetch_add(&c->started, 1);
    while (atomic_load(&c->started) < 2)
        ;
    for (long i = 0; i < c->rounds; i++) {
        if (side == 0) {
            weft_wg_done(&c->wg[2 * i]);
            weft_wg_wait(&c->wg[2 * i + 1], WEFT_FOREVER);
        } else {
            weft_wg_wait(&c->wg[2 * i], WEFT_FOREVER);
            weft_wg_done(&c->wg[2 * i + 1]);
        }
    }
    return NULL;
}

static void *handoff_main(void *arg)
{
    handoff_ctx *c = arg;
    weft_fiber_t a, b;
    int64_t t0 = weft_now();
    if (weft_spawn(&a, NULL, handoff_side, c) < 0 || weft_spawn(&b, NULL, handoff_side, (void *)((uintptr_t)c | 1)) < 0)
        return (void *)(intptr_t)-ENOMEM;
    weft_join(a, NULL);
    weft_join(b, NULL);
    return (void *)(intptr_t)(weft_now() - t0);
}

double bench_handoff(long rounds)
{
    weft_config_t two = {.workers = 2};
    handoff_ctx *c = calloc(1, sizeof *c);
    weft_wg_t *wg = c ? calloc((size_t)(2 * rounds), sizeof *wg) : NULL;
    if (!wg) {
        free(c);
        return -ENOMEM;
    }
    for (long i = 0; i < 2 * rounds; i++)
        weft_wg_add(&wg[i], 1);
    c->rounds = rounds;
    c->wg = wg;
    void *res = NULL;
    int r = weft_run(&two, handoff_main, c, &res);
    free(wg);
    free(c);
    if (r < 0)
        return r;
    if ((intptr_t)res < 0)
        return (double)(intptr_t)res;
    return (double)(intptr_t)res / (double)rounds;
}

/* ---- spawn ---- */

static weft_wg_t spawn_wg;
static long spawn_sink[64];

static void *tiny(void *arg)
{
    spawn_sink[(uintptr_t)arg & 63] += 1;
    weft_wg_done(&spawn_wg);
    return NULL;
}

static void *spawn_main(void *arg)
{
    long n = *(long *)arg;
    weft_wg_init(&spawn_wg);
    weft_wg_add(&spawn_wg, n);
    int64_t t0 = weft_now();
    for (long i = 0; i < n; i++) {
        if (weft_go(tiny, (void *)(uintptr_t)i) < 0) {
            weft_wg_add(&spawn_wg, -(n - i));
            break;
        }
    }
    weft_wg_wait(&spawn_wg, WEFT_FOREVER);
    *(long *)arg = weft_now() - t0;
    return NULL;
}

double bench_spawn(long n)
{
    long warm = n / 10 + 1;
    int r = weft_run(NULL, spawn_main, &warm, NULL);
    long v = n;
    if (r == 0)
        r = weft_run(NULL, spawn_main, &v, NULL);
    return r < 0 ? r : (double)v / (double)n;
}

/* ---- parked ---- */

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return 0;
    char line[256];
    long v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = atol(line + kl + 1);
    fclose(f);
    return v;
}

static long mem_bytes(void)
{
    return (status_kb("VmRSS") + status_kb("VmPTE")) * 1024;
}

typedef struct {
    long n;
    weft_wg_t ready, gate, done;
    double create_ns, bytes;
    int err;
} parked_ctx;

static void *parker(void *arg)
{
    parked_ctx *c = arg;
    weft_wg_done(&c->ready);
    weft_wg_wait(&c->gate, WEFT_FOREVER);
    weft_wg_done(&c->done);
    return NULL;
}

static void *parked_main(void *arg)
{
    parked_ctx *c = arg;
    weft_wg_add(&c->ready, c->n);
    weft_wg_add(&c->gate, 1);
    weft_wg_add(&c->done, c->n);
    long before = mem_bytes();
    int64_t t0 = weft_now();
    long i = 0;
    for (; i < c->n; i++) {
        int r = weft_go(parker, c);
        if (r < 0) {
            c->err = r;
            weft_wg_add(&c->ready, -(c->n - i));
            weft_wg_add(&c->done, -(c->n - i));
            break;
        }
    }
    weft_wg_wait(&c->ready, WEFT_FOREVER);
    int64_t t1 = weft_now();
    long after = mem_bytes();
    weft_wg_done(&c->gate);
    weft_wg_wait(&c->done, WEFT_FOREVER);
    if (i > 0) {
        c->create_ns = (double)(t1 - t0) / (double)i;
        c->bytes = (double)(after - before) / (double)i;
    }
    return NULL;
}

int bench_parked(long n, double *create_ns, double *bytes)
{
    parked_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->n = n;
    int r = weft_run(NULL, parked_main, c, NULL);
    if (r == 0)
        r = c->err;
    *create_ns = c->create_ns;
    *bytes = c->bytes;
    free(c);
    return r;
}

/* ---- fib ---- */

static void *fib_fiber(void *arg)
{
    long n = (long)arg;
    if (n < 2)
        return (void *)n;
    weft_fiber_t f;
    if (weft_spawn(&f, NULL, fib_fiber, (void *)(n - 1)) < 0)
        abort();
    long b = (long)fib_fiber((void *)(n - 2));
    void *a;
    weft_join(f, &a);
    return (void *)((long)a + b);
}

double bench_fib(int n, long *result)
{
    void *res;
    int r = weft_run(NULL, fib_fiber, (void *)(long)(n > 4 ? n - 4 : n), &res); /* warm up */
    if (r < 0)
        return r;
    int64_t t0 = weft_now();
    r = weft_run(NULL, fib_fiber, (void *)(long)n, &res);
    int64_t t1 = weft_now();
    if (r < 0)
        return r;
    *result = (long)res;
    return (double)(t1 - t0) / 1e6;
}

/* ---- one unit at a time ---- */

static void *nothing(void *arg)
{
    return arg;
}

static void *unit_main(void *arg)
{
    long n = *(long *)arg;
    int64_t t0 = weft_now();
    for (long i = 0; i < n; i++) {
        weft_fiber_t f;
        if (weft_spawn(&f, NULL, nothing, NULL) < 0 || weft_join(f, NULL) < 0)
            abort();
    }
    *(long *)arg = weft_now() - t0;
    return NULL;
}

double bench_unit_fiber(long n)
{
    long v = n;
    int r = weft_run(NULL, unit_main, &v, NULL);
    return r < 0 ? r : (double)v / (double)n;
}

double bench_unit_thread(long n)
{
    int64_t t0 = weft_now();
    for (long i = 0; i < n; i++) {
        weft_fiber_t t;
        int r = weft_thread_spawn(&t, NULL, nothing, NULL);
        if (r < 0)
            return r;
        weft_join(t, NULL);
    }
    return (double)(weft_now() - t0) / (double)n;
}

double bench_unit_fork(long n)
{
    int64_t t0 = weft_now();
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0)
            return -errno;
        if (p == 0)
            _exit(0);
        int st;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR)
            ;
    }
    return (double)(weft_now() - t0) / (double)n;
}
