// switch-boost-context: the cost of a bare context switch with
// boost::context::fiber (the callcc API), the floor any fiber runtime on top
// of it pays.  One round trip = main resumes f, f resumes main.
//
//     switch-boost-context [round-trips]     (default 1,000,000)
#include <boost/context/fiber.hpp>
#include <boost/version.hpp>

#include "peer.h"

namespace ctx = boost::context;

// Runs `n` round trips between the calling context and a fresh fiber.
static void round_trips(long n)
{
    ctx::fiber f{[n](ctx::fiber &&main) {
        for (long i = 0; i < n; i++)
            main = std::move(main).resume();
        return std::move(main);
    }};
    for (long i = 0; i < n; i++)
        f = std::move(f).resume();
    // One last resume lets the fiber return and free its stack.
    f = std::move(f).resume();
    if (f)
        abort();
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 1000000);

    round_trips(n / 10 + 1);  // warm-up: fault in the stack, warm the caches
    int64_t t0 = peer_now_ns();
    round_trips(n);
    int64_t t1 = peer_now_ns();

    printf("# boost %d.%d, fixedsize_stack (%zu KiB), %ld round trips\n", BOOST_VERSION / 100000,
           BOOST_VERSION / 100 % 1000, ctx::stack_traits::default_size() / 1024, n);
    peer_result("switch", "boost-context", (double)(t1 - t0) / (double)n, "ns");
    return 0;
}
