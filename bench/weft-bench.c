/*
 * weft's side of `make bench`: prints `result <bench> <impl> <value> <unit>` lines for bench/run.sh,
 * which runs the peers (Go, Boost, oneTBB, OpenMP, pthreads, fork) beside it and prints the ratios.
 *
 * Usage: weft-bench [--quick] switch|handoff|spawn|parked|fib|units ...
 * (parked prints parked-create and parked-mem; either name runs it)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "core.h"

static int quick;

static void emit(const char *bench, const char *impl, double v, const char *unit)
{
    if (v < 0) {
        printf("# %s %s failed: %s\n", bench, impl, weft_strerror((int)v));
        return;
    }
    printf("result %s %s %.2f %s\n", bench, impl, v, unit);
}

static int run(const char *name)
{
    if (strcmp(name, "switch") == 0) {
        emit("switch", "weft", bench_switch(quick ? 1000000 : 10000000), "ns");
        emit("switch", "weft-ctx", bench_switch_ctx(quick ? 1000000 : 10000000), "ns");
    } else if (strcmp(name, "handoff") == 0) {
        emit("handoff", "weft", bench_handoff(quick ? 20000 : 200000), "ns");
    } else if (strcmp(name, "spawn") == 0) {
        emit("spawn", "weft", bench_spawn(quick ? 100000 : 1000000), "ns");
    } else if (strcmp(name, "parked") == 0 || strcmp(name, "parked-create") == 0 ||
               strcmp(name, "parked-mem") == 0) {
        /* one run gives both figures */
        double ns = 0, bytes = 0;
        long n = quick ? 100000 : 1000000;
        int r = bench_parked(n, &ns, &bytes);
        printf("# parked: %ld fibers, default stack, all workers\n", n);
        emit("parked-create", "weft", r < 0 ? r : ns, "ns");
        emit("parked-mem", "weft", r < 0 ? r : bytes, "B");
    } else if (strcmp(name, "fib") == 0) {
        long res = 0;
        int n = quick ? 25 : 30;
        double ms = bench_fib(n, &res);
        printf("# fib(%d) = %ld\n", n, res);
        emit("fib", "weft", ms, "ms");
    } else if (strcmp(name, "units") == 0) {
        emit("units", "weft", bench_unit_fiber(quick ? 20000 : 200000), "ns");
        emit("units", "weft-thread", bench_unit_thread(quick ? 2000 : 20000), "ns");
    } else {
        fprintf(stderr, "weft-bench: unknown benchmark '%s' (switch handoff spawn parked fib units)\n", name);
        return 2;
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
        quick = 1;
        first = 2;
    }
    if (first >= argc) {
        const char *all[] = {"switch", "handoff", "spawn", "parked", "fib", "units"};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            run(all[i]);
        return 0;
    }
    for (int i = first; i < argc; i++)
        if (run(argv[i]) != 0)
            return 2;
    return 0;
}
