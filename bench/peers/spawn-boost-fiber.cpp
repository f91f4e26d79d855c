// spawn-boost-fiber: spawn + run + join of many tiny fibers on all CPUs, with
// boost::fibers::algo::work_stealing and one thread per CPU.
//
//     spawn-boost-fiber [tasks]     (default 1,000,000)
//
// The main fiber posts every fiber (detached) on its own thread; the other
// threads steal.  The join is a countdown: each fiber decrements a counter and
// the last one wakes the main fiber through a fiber-aware condition variable,
// so no thread ever blocks in the kernel on behalf of a fiber.
#include <boost/fiber/algo/work_stealing.hpp>
#include <boost/fiber/all.hpp>
#include <boost/version.hpp>

#include <malloc.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "peer.h"

namespace fibers = boost::fibers;

// A fixed 16 KiB malloc'd stack per fiber: the tasks need almost none, and
// the 128 KiB default would put each stack above glibc's mmap threshold
// (one mmap + munmap per fiber).  The pooled allocator is not an option here:
// it is not thread-safe and a stolen fiber is freed on the thief's thread.
static const std::size_t stack_size = 16 * 1024;

struct countdown {
    std::atomic<long> left{0};
    fibers::mutex mu;
    fibers::condition_variable cv;
    bool done = false;

    void arm(long n)
    {
        // relaxed: no fiber exists yet; the run queues that hand the fibers
        // out publish this store to them.
        left.store(n, std::memory_order_relaxed);
        done = false;
    }
    void down()
    {
        // acq_rel: the last decrement must see every earlier fiber's work.
        if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<fibers::mutex> lk(mu);
            done = true;
            cv.notify_all();
        }
    }
    void wait()
    {
        std::unique_lock<fibers::mutex> lk(mu);
        cv.wait(lk, [this] { return done; });
    }
};

static countdown tasks;

static void spawn_all(long n)
{
    tasks.arm(n);
    for (long i = 0; i < n; i++) {
        fibers::fiber(std::allocator_arg, fibers::fixedsize_stack(stack_size), [i] {
            long x = i * 2 + 1;  // the tiny bit of work
            PEER_KEEP(x);
            tasks.down();
        }).detach();
        // Without this the main fiber, which never blocks, would post all n
        // fibers before its own thread ran any: every stack alive at once
        // (gigabytes) and the steals alone to drain them.  Yielding every
        // 256 spawns (Go's local run queue size) lets this thread run its
        // share and keeps the footprint bounded.
        if (i % 256 == 255)
            boost::this_fiber::yield();
    }
    tasks.wait();
}

// Helper threads run fibers until the main thread says the benchmark is over.
static fibers::mutex quit_mu;
static fibers::condition_variable quit_cv;
static bool quit = false;

static void helper(unsigned nthreads)
{
    fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(nthreads);
    std::unique_lock<fibers::mutex> lk(quit_mu);
    quit_cv.wait(lk, [] { return quit; });
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 1000000);
    // Few stacks are alive at once, so the freed ones sit at the top of the
    // heap and glibc would give them back to the kernel on every free, only
    // to fault them in again for the next fiber: the figure would measure
    // page faults.  A runtime keeps its stacks; so does this one.
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    unsigned nthreads = std::thread::hardware_concurrency();
    if (nthreads == 0)
        nthreads = 1;

    std::vector<std::thread> helpers;
    for (unsigned i = 1; i < nthreads; i++)
        helpers.emplace_back(helper, nthreads);
    // Returns once every thread has installed its scheduler (it is a barrier).
    fibers::use_scheduling_algorithm<fibers::algo::work_stealing>(nthreads);

    spawn_all(n / 10 + 1);  // warm-up: threads running, allocator warm
    int64_t t0 = peer_now_ns();
    spawn_all(n);
    int64_t t1 = peer_now_ns();

    {
        std::lock_guard<fibers::mutex> lk(quit_mu);
        quit = true;
        quit_cv.notify_all();
    }
    for (auto &t : helpers)
        t.join();

    printf("# boost %d.%d, work_stealing on %u threads, fixedsize_stack %zu KiB (malloc, "
           "no trim), main yields every 256 spawns, %ld fibers\n",
           BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, nthreads, stack_size / 1024, n);
    peer_result("spawn", "boost-fiber", (double)(t1 - t0) / (double)n, "ns");
    return 0;
}
