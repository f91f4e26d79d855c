/* fib-openmp: fib(n) with a task per call on all CPUs, OpenMP tasks.
 * Each call with n >= 2 makes fib(n-1) a task, computes fib(n-2) itself,
 * then waits (taskwait); the whole tree runs under parallel + single.
 *
 *     fib-openmp [n]     (default 30; total ms; exits 1 on a wrong result)
 */
#include "peer.h"

#include <omp.h>

static long fib(int n)
{
    if (n < 2)
        return n;
    long x, y;
#pragma omp task shared(x) firstprivate(n)
    x = fib(n - 1);
    y = fib(n - 2);
#pragma omp taskwait
    return x + y;
}

static long fib_parallel(int n)
{
    long r = 0;
#pragma omp parallel shared(r)
#pragma omp single
    r = fib(n);
    return r;
}

static long fib_loop(int n)
{
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

int main(int argc, char **argv)
{
    int n = (int)peer_count(argc, argv, 30);

    fib_parallel(n > 20 ? 20 : n); /* warm-up: starts the thread team */
    int64_t t0 = peer_now_ns();
    long r = fib_parallel(n);
    int64_t t1 = peer_now_ns();

    printf("# OpenMP %d, %d threads, fib(%d) = %ld\n", _OPENMP, omp_get_max_threads(), n, r);
    if (r != fib_loop(n)) {
        fprintf(stderr, "fib-openmp: fib(%d) = %ld, expected %ld\n", n, r, fib_loop(n));
        return 1;
    }
    peer_result("fib", "openmp", (double)(t1 - t0) / 1e6, "ms");
    return 0;
}
