// switch-boost-fiber: two boost::fibers on one thread (the default
// round_robin scheduler) each calling boost::this_fiber::yield() in a loop.
// One round trip = each of the two yielded once (A -> B -> A).
//
//     switch-boost-fiber [round-trips]     (default 1,000,000)
#include <boost/fiber/all.hpp>
#include <boost/version.hpp>

#include "peer.h"

static void yielder(long n)
{
    for (long i = 0; i < n; i++)
        boost::this_fiber::yield();
}

// The main fiber blocks in join(), so only the two yielders are ready and
// each yield hands the thread straight to the other.
static void round_trips(long n)
{
    boost::fibers::fiber a(yielder, n);
    boost::fibers::fiber b(yielder, n);
    a.join();
    b.join();
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 1000000);

    round_trips(n / 10 + 1);  // warm-up
    int64_t t0 = peer_now_ns();
    round_trips(n);
    int64_t t1 = peer_now_ns();

    printf("# boost %d.%d, round_robin scheduler, %ld round trips\n", BOOST_VERSION / 100000,
           BOOST_VERSION / 100 % 1000, n);
    peer_result("switch", "boost-fiber", (double)(t1 - t0) / (double)n, "ns");
    return 0;
}
