/* pfor-tiny-openmp: a loop of tiny iterations, a[i] += 1 over an array of
 * 1,000,000 ints (4 MB), one `parallel for` per pass, on all threads, with
 * schedule(static) (openmp-static) and schedule(dynamic), whose chunk is one
 * iteration (openmp-dynamic). Passes are repeated until n iterations are
 * done; afterwards every element must equal the number of passes made
 * (exit 1 otherwise).
 *
 *     pfor-tiny-openmp [n]     (default 100,000,000; ns per iteration)
 */
#include "peer.h"

#include <omp.h>

#define SIZE 1000000L

static void pass_static(int *a, long m)
{
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; i++)
        a[i] += 1;
}

static void pass_dynamic(int *a, long m)
{
#pragma omp parallel for schedule(dynamic)
    for (long i = 0; i < m; i++)
        a[i] += 1;
}

/* one warm-up pass then `passes` timed ones: ns per iteration */
static double run(const char *impl, void (*pass)(int *, long), int *a, long m, long passes)
{
    memset(a, 0, (size_t)m * sizeof *a);
    pass(a, m); /* warm-up: starts the team */
    int64_t t0 = peer_now_ns();
    for (long p = 0; p < passes; p++)
        pass(a, m);
    int64_t t1 = peer_now_ns();
    for (long i = 0; i < m; i++) {
        if (a[i] != passes + 1) {
            fprintf(stderr, "pfor-tiny-openmp: %s: a[%ld] = %d, expected %ld\n", impl, i, a[i], passes + 1);
            exit(1);
        }
    }
    return (double)(t1 - t0) / (double)(m * passes);
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 100000000);
    long m = n < SIZE ? n : SIZE;
    long passes = n / m;
    int *a = malloc((size_t)m * sizeof *a);
    if (!a)
        return 1;

    printf("# OpenMP %d, %d threads, %ld passes of parallel for over %ld ints\n", _OPENMP, omp_get_max_threads(),
           passes, m);
    peer_result("pfor-tiny", "openmp-static", run("static", pass_static, a, m, passes), "ns");
    peer_result("pfor-tiny", "openmp-dynamic", run("dynamic", pass_dynamic, a, m, passes), "ns");
    free(a);
    return 0;
}
