// pfor-tiny-tbb: a loop of tiny iterations, a[i] += 1 over an array of
// 1,000,000 ints (4 MB), one tbb::parallel_for over a blocked_range with the
// auto_partitioner (the default) per pass, on all threads. Passes are
// repeated until n iterations are done; afterwards every element must equal
// the number of passes made (exit 1 otherwise).
//
//     pfor-tiny-tbb [n]     (default 100,000,000; ns per iteration)
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/version.h>

#include "peer.h"

static const long SIZE = 1000000;

static void pass(int *a, long m)
{
    tbb::parallel_for(
        tbb::blocked_range<long>(0, m),
        [a](const tbb::blocked_range<long> &r) {
            for (long i = r.begin(); i != r.end(); ++i)
                a[i] += 1;
        },
        tbb::auto_partitioner());
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 100000000);
    long m = n < SIZE ? n : SIZE;
    long passes = n / m;
    int *a = static_cast<int *>(calloc((size_t)m, sizeof *a));
    if (!a)
        return 1;

    printf("# oneTBB %s, %d threads, %ld passes of parallel_for (auto_partitioner) over %ld ints\n",
           TBB_VERSION_STRING, tbb::info::default_concurrency(), passes, m);
    pass(a, m); // warm-up: starts the workers
    int64_t t0 = peer_now_ns();
    for (long p = 0; p < passes; p++)
        pass(a, m);
    int64_t t1 = peer_now_ns();
    for (long i = 0; i < m; i++) {
        if (a[i] != passes + 1) {
            fprintf(stderr, "pfor-tiny-tbb: a[%ld] = %d, expected %ld\n", i, a[i], passes + 1);
            return 1;
        }
    }
    peer_result("pfor-tiny", "tbb", (double)(t1 - t0) / (double)(m * passes), "ns");
    free(a);
    return 0;
}
