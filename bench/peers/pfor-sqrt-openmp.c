/* pfor-sqrt-openmp: the sum of sqrt(a[i]) over n doubles with
 * `parallel for reduction(+:)` (default static schedule), on 1 thread
 * (openmp@1) and on all (openmp@N). The array is filled before the clock
 * starts with perfect squares, so every partial sum is an exact integer and
 * the result must equal the expected sum exactly, whatever the order of the
 * additions (exit 1 otherwise).
 *
 *     pfor-sqrt-openmp [n]     (default 100,000,000; ms per sum)
 */
#include "peer.h"

#include <math.h>
#include <omp.h>

static double sum_sqrt(const double *a, long n)
{
    double s = 0;
#pragma omp parallel for reduction(+ : s)
    for (long i = 0; i < n; i++)
        s += sqrt(a[i]);
    return s;
}

/* a[i] = (i % 1000)^2; the sum of the roots of the first n */
static double fill(double *a, long n)
{
    for (long i = 0; i < n; i++) {
        long k = i % 1000;
        a[i] = (double)(k * k);
    }
    long r = n % 1000;
    return (double)(n / 1000 * 499500 + r * (r - 1) / 2);
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 100000000);
    double *a = malloc((size_t)n * sizeof *a);
    if (!a) {
        fprintf(stderr, "pfor-sqrt-openmp: no memory for %ld doubles\n", n);
        return 1;
    }
    double want = fill(a, n);
    int all = omp_get_max_threads();

    printf("# OpenMP %d, parallel for reduction(+), static schedule, 1 and %d threads, %ld doubles\n", _OPENMP,
           all, n);
    int counts[2] = {1, all};
    for (int c = 0; c < (all > 1 ? 2 : 1); c++) {
        omp_set_num_threads(counts[c]);
        PEER_KEEP(sum_sqrt(a, n / 10 + 1)); /* warm-up: starts the team */
        int64_t t0 = peer_now_ns();
        double s = sum_sqrt(a, n);
        int64_t t1 = peer_now_ns();
        if (s != want) {
            fprintf(stderr, "pfor-sqrt-openmp: %d threads: sum %.1f, expected %.1f\n", counts[c], s, want);
            return 1;
        }
        char impl[32];
        snprintf(impl, sizeof impl, "openmp@%d", counts[c]);
        peer_result("pfor-sqrt", impl, (double)(t1 - t0) / 1e6, "ms");
    }
    free(a);
    return 0;
}
