/* Ten thousand fibers, each squaring its number; main sums the results. */
#include <stdint.h>
#include <stdio.h>
#include <weft.h>

static void *square(void *arg)
{
    intptr_t n = (intptr_t)arg;
    weft_sleep(1000000); /* 1 ms: parks this fiber, its worker runs the others */
    return (void *)(n * n);
}

static void *main_fiber(void *arg)
{
    enum { N = 10000 };
    static weft_fiber_t f[N];
    for (intptr_t i = 0; i < N; i++)
        weft_spawn(&f[i], NULL, square, (void *)i);
    long long sum = 0;
    for (int i = 0; i < N; i++) {
        void *r;
        weft_join(f[i], &r);
        sum += (intptr_t)r;
    }
    printf("sum of squares below %d: %lld, on %d workers\n", N, sum, weft_workers());
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "%s: unexpected argument '%s'\nusage: %s (it takes no arguments)\n", argv[0], argv[1], argv[0]);
        return 2;
    }
    return weft_run(NULL, main_fiber, NULL, NULL) < 0;
}
