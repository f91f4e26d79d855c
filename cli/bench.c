/*
 * `weft bench`: weft's core costs, measured on this machine, with the kernel's own units of
 * concurrency (a thread, a process) beside them for scale.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <weft.h>

#include "cli.h"
#include "core.h"

static int quick;

static void row(const char *name, const char *what, double v, const char *unit)
{
    if (v < 0)
        printf("  %-8s %-48s failed: %s\n", name, what, weft_strerror((int)v));
    else
        printf("  %-8s %-48s %10.1f %s\n", name, what, v, unit);
    fflush(stdout);
}

static int run(const char *name)
{
    if (strcmp(name, "switch") == 0) {
        row("switch", "two fibers yielding to each other, one worker", bench_switch(quick ? 1000000 : 10000000),
            "ns per round trip");
        row("", "the bare context switch under it", bench_switch_ctx(quick ? 1000000 : 10000000),
            "ns per round trip");
    } else if (strcmp(name, "handoff") == 0) {
        row("handoff", "two fibers on two workers waking each other", bench_handoff(quick ? 20000 : 200000),
            "ns per round trip");
    } else if (strcmp(name, "spawn") == 0) {
        long n = quick ? 100000 : 1000000;
        char what[64];
        snprintf(what, sizeof what, "spawn+run+finish of %ldk tiny fibers", n / 1000);
        row("spawn", what, bench_spawn(n), "ns per fiber");
    } else if (strcmp(name, "parked") == 0) {
        long n = quick ? 100000 : 1000000;
        double ns = 0, bytes = 0;
        int r = bench_parked(n, &ns, &bytes);
        char what[64];
        snprintf(what, sizeof what, "%ldk fibers parked at once: time to create each", n / 1000);
        row("parked", what, r < 0 ? r : ns, "ns per fiber");
        row("", "memory of each (VmRSS + VmPTE)", r < 0 ? r : bytes, "bytes per fiber");
    } else if (strcmp(name, "fib") == 0) {
        long res = 0;
        int n = quick ? 25 : 30;
        char what[64];
        snprintf(what, sizeof what, "fib(%d), a fiber for every call", n);
        row("fib", what, bench_fib(n, &res), "ms");
    } else if (strcmp(name, "units") == 0) {
        double f = bench_unit_fiber(quick ? 20000 : 200000);
        double t = bench_unit_thread(quick ? 2000 : 20000);
        double p = bench_unit_fork(quick ? 500 : 2000);
        row("units", "a fiber, spawned and joined", f, "ns");
        row("", "a kernel thread, started and joined", t, "ns");
        row("", "a process, forked and reaped", p, "ns");
        if (f > 0 && t > 0 && p > 0)
            printf("  %-8s %-48s %10.0fx and %.0fx a fiber\n", "", "a thread and a process cost", t / f, p / f);
    } else {
        fprintf(stderr, "weft bench: unknown benchmark '%s' (switch handoff spawn parked fib units)\n", name);
        return 2;
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
        quick = 1;
        first = 2;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int r = weft_start(NULL);
    if (r < 0) { /* -EAGAIN at a thread limit: say so, rather than report 0 workers and fail later */
        fprintf(stderr, "weft bench: cannot start the runtime: %s\n", weft_strerror(r));
        return 1;
    }
    int workers = weft_workers();
    weft_shutdown();
    printf("weft %s core benchmarks: %ld CPUs online, %d workers (lower is better)\n\n", WEFT_VERSION_STRING,
           cpus, workers);
    if (first >= argc) {
        /* units first: a fork copies the page tables of everything the process holds */
        const char *all[] = {"units", "switch", "handoff", "spawn", "fib", "parked"};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            run(all[i]);
    } else {
        for (int i = first; i < argc; i++)
            if (run(argv[i]) != 0)
                return 2;
    }
    printf("\nThe same figures beside Go, Boost, oneTBB, OpenMP, pthreads and fork: make bench\n");
    return 0;
}
