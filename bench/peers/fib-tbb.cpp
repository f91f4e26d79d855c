// fib-tbb: fib(n) with a task per call on all CPUs, oneTBB task_group.
// Each call with n >= 2 runs fib(n-1) as a task, computes fib(n-2) itself,
// then waits for the task.
//
//     fib-tbb [n]     (default 30; total ms; exits 1 on a wrong result)
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

#include "peer.h"

static long fib(int n)
{
    if (n < 2)
        return n;
    long x, y;
    tbb::task_group g;
    g.run([&] { x = fib(n - 1); });
    y = fib(n - 2);
    g.wait();
    return x + y;
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

    fib(n > 20 ? 20 : n);  // warm-up: starts the worker threads
    int64_t t0 = peer_now_ns();
    long r = fib(n);
    int64_t t1 = peer_now_ns();

    printf("# oneTBB %s, fib(%d) = %ld\n", TBB_VERSION_STRING, n, r);
    if (r != fib_loop(n)) {
        fprintf(stderr, "fib-tbb: fib(%d) = %ld, expected %ld\n", n, r, fib_loop(n));
        return 1;
    }
    peer_result("fib", "tbb", (double)(t1 - t0) / 1e6, "ms");
    return 0;
}
