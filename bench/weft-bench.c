/*
 * weft's side of `make bench`: prints `result <bench> <impl> <value> <unit>` lines for bench/run.sh,
 * which runs the peers (Go, Boost, oneTBB, OpenMP, pthreads, fork) beside it and prints the ratios.
 *
 * Usage: weft-bench [--quick] [--rounds N] switch|yield|handoff|spawn|parked|fib|units
 *                             |chan-pingpong|select-pingpong|wg-pingpong|chan-buffered|mutex|pfor-sqrt|pfor-tiny ...
 * (parked prints parked-create and parked-mem, chan-buffered prints chan-buffered-1x1 and -4x4; any of
 * the names runs the whole group.) Exits 1 when a figure failed (it could not run, or its result did
 * not check out), 2 for an unknown name.
 *
 * yield is switch's weft figure alone, and --rounds sets its count of round trips (switch's too), so that
 * callgrind can count what one round trip costs: the difference between two counts, with the warm-up's
 * tenth, is (Ir(2N) - Ir(N)) / (1.1 N).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft.h>

#include "core.h"
#include "sync.h"

static int quick;
static long rounds; /* --rounds: switch and yield */
static int failed;

static void emit(const char *bench, const char *impl, double v, const char *unit)
{
    if (v < 0) {
        const char *why = (int)v == BENCH_WRONG ? "wrong result" : weft_strerror((int)v);
        printf("# %s %s failed: %s\n", bench, impl, why);
        fprintf(stderr, "weft-bench: %s %s failed: %s\n", bench, impl, why);
        failed = 1;
        return;
    }
    printf("result %s %s %.2f %s\n", bench, impl, v, unit);
}

/* "weft@N" for a figure measured on N workers */
static const char *at(int workers)
{
    static char buf[32];
    snprintf(buf, sizeof buf, "weft@%d", workers);
    return buf;
}

static int run(const char *name)
{
    long n_switch = rounds ? rounds : quick ? 1000000 : 10000000;
    if (strcmp(name, "switch") == 0) {
        emit("switch", "weft", bench_switch(n_switch), "ns");
        emit("switch", "weft-ctx", bench_switch_ctx(n_switch), "ns");
    } else if (strcmp(name, "yield") == 0) {
        emit("switch", "weft", bench_switch(n_switch), "ns");
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
    } else if (strcmp(name, "chan-pingpong") == 0) {
        long n = quick ? 50000 : 500000;
        printf("# chan-pingpong: two unbuffered channels of int64, %ld round trips, 1 then 2 workers\n", n);
        emit("chan-pingpong", "weft@1", bench_chan_pingpong(1, n), "ns");
        emit("chan-pingpong", "weft@2", bench_chan_pingpong(2, n), "ns");
    } else if (strcmp(name, "select-pingpong") == 0) {
        long n = quick ? 50000 : 500000;
        printf("# select-pingpong: chan-pingpong, one side receiving through a two-case weft_select, %ld round "
               "trips, 1 then 2 workers\n",
               n);
        emit("select-pingpong", "weft@1", bench_select_pingpong(1, n), "ns");
        emit("select-pingpong", "weft@2", bench_select_pingpong(2, n), "ns");
    } else if (strcmp(name, "wg-pingpong") == 0) {
        long n = quick ? 50000 : 500000;
        printf("# wg-pingpong: two fibers, two weft_wg_t as one-shot events, %ld round trips, 1 then 2 workers\n", n);
        emit("wg-pingpong", "weft@1", bench_wg_pingpong(1, n), "ns");
        emit("wg-pingpong", "weft@2", bench_wg_pingpong(2, n), "ns");
    } else if (strcmp(name, "chan-buffered") == 0 || strcmp(name, "chan-buffered-1x1") == 0 ||
               strcmp(name, "chan-buffered-4x4") == 0) {
        long n = quick ? 200000 : 2000000;
        printf("# chan-buffered: one channel of int64, capacity %d, %ld elements, all workers\n", BENCH_CHAN_CAP, n);
        emit("chan-buffered-1x1", "weft", bench_chan_buffered(1, n), "ns");
        emit("chan-buffered-4x4", "weft", bench_chan_buffered(4, n), "ns");
    } else if (strcmp(name, "mutex") == 0) {
        long n = quick ? 1000000 : 10000000;
        printf("# mutex: weft_mutex_t, 64 fibers on 2 workers, %ld lock+unlock\n", n);
        emit("mutex", "weft", bench_mutex(2, 64, n), "ns");
    } else if (strcmp(name, "pfor-sqrt") == 0) {
        long n = quick ? 10000000 : 100000000;
        double want;
        double *a = bench_sqrt_array(n, &want);
        if (!a) {
            emit("pfor-sqrt", "weft", -ENOMEM, "ms");
        } else {
            int used1 = 1, all = 0;
            double one = bench_pfor_sqrt(a, n, want, 1, &used1);
            double many = bench_pfor_sqrt(a, n, want, 0, &all);
            printf("# pfor-sqrt: weft_parallel_reduce, default grain, 1 and %d workers, %ld doubles\n", all, n);
            emit("pfor-sqrt", "weft@1", one, "ms");
            if (all != 1)
                emit("pfor-sqrt", at(all), many, "ms");
            free(a);
        }
    } else if (strcmp(name, "pfor-tiny") == 0) {
        long n = quick ? 10000000 : 100000000;
        double serial = 0;
        int all = 0;
        double v = bench_pfor_tiny(n, &serial, &all);
        long m = n < BENCH_TINY_SIZE ? n : BENCH_TINY_SIZE;
        printf("# pfor-tiny: %d workers, %ld passes of weft_parallel_for (default grain) over %ld ints; a plain "
               "loop on one thread: %.2f ns per iteration\n",
               all, n / m, m, serial);
        emit("pfor-tiny", "weft", v, "ns");
    } else {
        fprintf(stderr,
                "weft-bench: unknown benchmark '%s' (switch yield handoff spawn parked fib units chan-pingpong "
                "select-pingpong wg-pingpong chan-buffered mutex pfor-sqrt pfor-tiny)\n",
                name);
        return 2;
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    int first = 1;
    for (;;) {
        if (first < argc && strcmp(argv[first], "--quick") == 0) {
            quick = 1;
            first++;
        } else if (first + 1 < argc && strcmp(argv[first], "--rounds") == 0) {
            char *end;
            rounds = strtol(argv[first + 1], &end, 10);
            if (*end || rounds <= 0) {
                fprintf(stderr, "weft-bench: --rounds needs a positive count\n");
                return 2;
            }
            first += 2;
        } else {
            break;
        }
    }
    if (first >= argc) {
        const char *all[] = {"switch",        "handoff",       "spawn", "parked",    "fib",      "units",
                             "chan-pingpong", "select-pingpong", "wg-pingpong", "chan-buffered", "mutex", "pfor-sqrt", "pfor-tiny"};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            run(all[i]);
        return failed;
    }
    for (int i = first; i < argc; i++)
        if (run(argv[i]) != 0)
            return 2;
    return failed;
}
