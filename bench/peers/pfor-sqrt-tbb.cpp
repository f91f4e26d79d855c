// pfor-sqrt-tbb: the sum of sqrt(a[i]) over n doubles with
// tbb::parallel_reduce over a blocked_range (default auto_partitioner), in a
// task_arena of 1 thread (tbb@1) and of all (tbb@N). The array is filled
// before the clock starts with perfect squares, so every partial sum is an
// exact integer and the result must equal the expected sum exactly, whatever
// the order of the additions (exit 1 otherwise).
//
//     pfor-sqrt-tbb [n]     (default 100,000,000; ms per sum)
#include <cmath>
#include <functional>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

#include "peer.h"

static double sum_sqrt(const double *a, long n)
{
    return tbb::parallel_reduce(
        tbb::blocked_range<long>(0, n), 0.0,
        [a](const tbb::blocked_range<long> &r, double s) {
            for (long i = r.begin(); i != r.end(); ++i)
                s += std::sqrt(a[i]);
            return s;
        },
        std::plus<double>());
}

// a[i] = (i % 1000)^2; the sum of the roots of the first n
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
    double *a = static_cast<double *>(malloc((size_t)n * sizeof *a));
    if (!a) {
        fprintf(stderr, "pfor-sqrt-tbb: no memory for %ld doubles\n", n);
        return 1;
    }
    double want = fill(a, n);
    int all = tbb::info::default_concurrency();

    printf("# oneTBB %s, parallel_reduce, auto_partitioner, task_arena of 1 and %d threads, %ld doubles\n",
           TBB_VERSION_STRING, all, n);
    int counts[2] = {1, all};
    for (int c = 0; c < (all > 1 ? 2 : 1); c++) {
        tbb::task_arena arena(counts[c]);
        double s = 0;
        int64_t t0 = 0, t1 = 0;
        arena.execute([&] {
            PEER_KEEP(sum_sqrt(a, n / 10 + 1)); // warm-up: starts the workers
            t0 = peer_now_ns();
            s = sum_sqrt(a, n);
            t1 = peer_now_ns();
        });
        if (s != want) {
            fprintf(stderr, "pfor-sqrt-tbb: %d threads: sum %.1f, expected %.1f\n", counts[c], s, want);
            return 1;
        }
        char impl[32];
        snprintf(impl, sizeof impl, "tbb@%d", counts[c]);
        peer_result("pfor-sqrt", impl, (double)(t1 - t0) / 1e6, "ms");
    }
    free(a);
    return 0;
}
