// parked-boost-fiber: many boost::fibers alive at once on one thread, each
// blocked on a fiber-aware condition variable.
//
//     parked-boost-fiber [fibers]     (default 1,000,000)
//
// parked-create: ns per fiber from the first spawn until every fiber is
// blocked.  parked-mem: bytes per fiber of VmRSS + VmPTE, after minus before.
// Stacks come from boost's pooled_fixedsize_stack (a boost::pool of fixed
// 64 KiB stacks; boost's default size is 128 KiB), which is what a boost user
// picks to keep a million fibers cheap.
#include <boost/fiber/all.hpp>
#include <boost/version.hpp>

#include "peer.h"

namespace fibers = boost::fibers;

static const std::size_t stack_size = 64 * 1024;
// Caps one pool block at 512 stacks (32 MiB).  Unbounded, the pool doubles
// its block each time and the last malloc for a million stacks would ask for
// tens of GiB at once, which the kernel's overcommit check refuses.
static const std::size_t pool_max_stacks = 512;
// A little more than what one parked fiber touches here (three pages: the
// pool's free-list link at the bottom of the stack, the fiber's control block
// and the first frames at the top), used only to shrink the count on a
// machine that could not hold it.
static const long long guess_per_fiber = 13 * 1024;

static fibers::mutex mu;
static fibers::condition_variable all_parked, release, all_done;
static long parked = 0, done = 0, n;
static bool released = false;

static void parker()
{
    std::unique_lock<fibers::mutex> lk(mu);
    if (++parked == n)
        all_parked.notify_one();
    release.wait(lk, [] { return released; });
    if (++done == n)
        all_done.notify_one();
}

int main(int argc, char **argv)
{
    n = peer_count(argc, argv, 1000000);
    long asked = n;
    long long avail = peer_mem_available();
    if (avail > 0 && n * guess_per_fiber > avail / 4 * 3)
        n = (long)(avail / 4 * 3 / guess_per_fiber);

    fibers::pooled_fixedsize_stack stacks(stack_size, 32, pool_max_stacks);
    long long mem0 = peer_mem_bytes();
    int64_t t0 = peer_now_ns();
    for (long i = 0; i < n; i++)
        fibers::fiber(std::allocator_arg, stacks, parker).detach();
    {
        // The fibers only start once the main fiber blocks here.
        std::unique_lock<fibers::mutex> lk(mu);
        all_parked.wait(lk, [] { return parked == n; });
    }
    int64_t t1 = peer_now_ns();
    long long mem1 = peer_mem_bytes();

    {
        std::unique_lock<fibers::mutex> lk(mu);
        released = true;
        release.notify_all();
        all_done.wait(lk, [] { return done == n; });
    }

    printf("# boost %d.%d, one thread, pooled_fixedsize_stack %zu KiB, %ld fibers\n",
           BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, stack_size / 1024, n);
    if (n != asked)
        printf("# %ld fibers asked, %ld used: MemAvailable is %lld MiB\n", asked, n, avail >> 20);
    peer_result("parked-create", "boost-fiber", (double)(t1 - t0) / (double)n, "ns");
    peer_result("parked-mem", "boost-fiber", (double)(mem1 - mem0) / (double)n, "B");
    return 0;
}
