/*
 * A small program for the tool checks in test-tools.c. Modes:
 *   clean     correct code exercising every kind of switch and hand-off: tools must report nothing
 *   race      two fibers on ONE worker write a plain int with a yield in between: TSan must report it
 *   uar       a fiber uses a pointer to a local of a function that returned: ASan must report it
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

static int shared; /* the planted race's victim */

static atomic_int started;

static void *racer(void *arg)
{
    /* both racers must be running before either writes: if one ran to its end before the other began, the
     * worker's idle wait between them would order the two and no tool could call it a race */
    atomic_fetch_add(&started, 1);
    while (atomic_load(&started) < 2)
        weft_yield();
    for (int i = 0; i < 100; i++) {
        shared++;
        weft_yield();
    }
    return arg;
}

static int race(void)
{
    weft_config_t c = {.workers = 1};
    weft_start(&c);
    weft_fiber_t a, b;
    weft_spawn(&a, NULL, racer, NULL);
    weft_spawn(&b, NULL, racer, NULL);
    weft_join(a, NULL);
    weft_join(b, NULL);
    weft_shutdown();
    printf("shared=%d\n", shared);
    return 0;
}

/* ---- clean ---- */

typedef struct {
    int in[64];
    long sum;
} work;

static void *summer(void *arg)
{
    work *w = arg;
    for (int i = 0; i < 64; i++) {
        w->sum += w->in[i];
        if (i % 16 == 0)
            weft_yield();
    }
    return w;
}

static jmp_buf jb;
static void *jumper(void *arg)
{
    /* setjmp/longjmp inside a fiber: ASan's longjmp interceptor must know this stack */
    volatile int n = 0;
    if (setjmp(jb) == 0) {
        n++;
        weft_yield();
        longjmp(jb, 1);
    }
    return (void *)(long)(n + 1);
}

static long deep(int n)
{
    volatile char pad[256];
    memset((char *)pad, n & 0xff, sizeof pad);
    if (n == 0)
        return pad[3];
    if (n % 64 == 0)
        weft_yield();
    return deep(n - 1) + pad[7];
}

static void *recurse(void *arg)
{
    return (void *)deep((int)(long)arg);
}

static long slots[256];
static weft_wg_t wg = WEFT_WG_INIT;
static void *filler(void *arg)
{
    long i = (long)arg;
    weft_sleep(1000 * (i % 5));
    slots[i] = i * 3;
    weft_wg_done(&wg);
    return NULL;
}

static void destroy_local(void *p)
{
    free(p);
}

static weft_key_t key;
static void *with_local(void *arg)
{
    int *p = malloc(sizeof *p);
    *p = (int)(long)arg;
    weft_local_set(key, p);
    weft_yield();
    return (void *)(long)*(int *)weft_local_get(key);
}

/* Two fibers of one worker: `holder` keeps a local alive across yields while `jumper2` longjmps and
 * then calls more functions. Under ASan with fake stacks (detect_stack_use_after_return), a runtime that
 * does not tell ASan about the switch lets the longjmp's clean-up free the holder's frame: a false
 * "stack-use-after-return" when the holder touches its own local again. */
static __attribute__((noinline)) long touch(volatile char *p, int n)
{
    long s = 0;
    for (int i = 0; i < n; i++)
        s += p[i];
    return s;
}

static void *holder(void *arg)
{
    volatile char buf[96];
    for (int i = 0; i < 96; i++)
        buf[i] = (char)i;
    long s = 0;
    for (int round = 0; round < 8; round++) {
        weft_yield();
        s += touch(buf, 96);
    }
    return (void *)s;
}

static __attribute__((noinline)) long use_frame(int n)
{
    volatile char local[200];
    for (int i = 0; i < 200; i++)
        local[i] = (char)(n + i);
    return touch(local, 200);
}

static jmp_buf jb2;
static __attribute__((noinline)) void jump_once(void)
{
    if (setjmp(jb2) == 0)
        longjmp(jb2, 1);
}

static void *jumper2(void *arg)
{
    long s = 0;
    for (int round = 0; round < 8; round++) {
        jump_once();
        s += use_frame(round);
        weft_yield();
    }
    return (void *)s;
}

static void *thread_body(void *arg)
{
    work *w = arg;
    return summer(w);
}

static int clean(void)
{
    weft_config_t c = {.workers = 2};
    if (weft_start(&c) < 0)
        return 2;
    /* data handed to fibers at spawn, results read after join */
    work ws[16];
    weft_fiber_t f[16];
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 64; j++)
            ws[i].in[j] = i + j;
        ws[i].sum = 0;
        weft_spawn(&f[i], NULL, summer, &ws[i]);
    }
    long total = 0;
    for (int i = 0; i < 16; i++) {
        weft_join(f[i], NULL);
        total += ws[i].sum;
    }
    /* detached fibers and a wait group */
    weft_wg_add(&wg, 256);
    for (long i = 0; i < 256; i++)
        weft_go(filler, (void *)i);
    weft_wg_wait(&wg, WEFT_FOREVER);
    for (long i = 0; i < 256; i++)
        total += slots[i];
    /* longjmp, deep stacks, fiber-local storage, a kernel thread */
    weft_fiber_t j, d, l, t;
    work tw;
    for (int k = 0; k < 64; k++)
        tw.in[k] = k;
    tw.sum = 0;
    weft_key_create(&key, destroy_local);
    weft_spawn(&j, NULL, jumper, NULL);
    weft_attr_t big = {.stack_size = 1 << 20, .name = "deep"};
    weft_spawn(&d, &big, recurse, (void *)1000L);
    weft_spawn(&l, NULL, with_local, (void *)7L);
    weft_thread_spawn(&t, NULL, thread_body, &tw);
    void *rj, *rd, *rl;
    weft_join(j, &rj);
    weft_join(d, &rd);
    weft_join(l, &rl);
    weft_join(t, NULL);
    weft_shutdown();

    /* again on one worker, so the holder and the jumper share a thread */
    weft_config_t one = {.workers = 1};
    if (weft_start(&one) < 0)
        return 2;
    weft_fiber_t h, j2;
    weft_spawn(&h, NULL, holder, NULL);
    weft_spawn(&j2, NULL, jumper2, NULL);
    void *rh;
    weft_join(h, &rh);
    weft_join(j2, NULL);
    weft_shutdown();
    printf("total=%ld jumper=%ld local=%ld thread=%ld holder=%ld\n", total, (long)rj, (long)rl, tw.sum, (long)rh);
    return (long)rj == 2 && (long)rl == 7 && tw.sum == 2016 && (long)rh == 8 * 4560 ? 0 : 3;
}

/* ---- use after return ---- */

static volatile int *escaped;
static __attribute__((noinline)) void keep(volatile int *p)
{
    escaped = p;
}
static __attribute__((noinline)) void leak_local(void)
{
    volatile int local = 42;
    keep(&local); /* the planted bug: the address outlives the frame */
}

static void *uar_fiber(void *arg)
{
    leak_local();
    weft_yield();
    return (void *)(long)*escaped;
}

static int uar(void)
{
    weft_fiber_t f;
    weft_spawn(&f, NULL, uar_fiber, NULL);
    weft_join(f, NULL);
    weft_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "clean";
    if (strcmp(mode, "race") == 0)
        return race();
    if (strcmp(mode, "uar") == 0)
        return uar();
    if (strcmp(mode, "clean") == 0)
        return clean();
    fprintf(stderr, "usage: san-probe clean|race|uar\n");
    return 2;
}
