/*
 * The core benchmarks, weft side. Each function measures one figure and returns it (lower is better);
 * a negative value is a negative errno: the benchmark could not run. Used by bench/weft-bench (the
 * `result` lines that bench/run.sh compares with the peers) and by `weft bench`.
 */
#ifndef WEFT_BENCH_CORE_H
#define WEFT_BENCH_CORE_H

#include <stdint.h>

/* ns per round trip of two fibers yielding to each other on one worker */
double bench_switch(long rounds);
/* ns per round trip of weft's bare context switch (src/arch) between two stacks, no scheduler: the floor
 * under bench_switch, and what Boost.Context's fiber resume measures */
double bench_switch_ctx(long rounds);
/* ns per round trip of two fibers on two different workers waking each other in turn (each waits on a
 * wait group the other counts down): what a wakeup across workers costs, spinning or sleeping */
double bench_handoff(long rounds);
/* ns per fiber: spawn + run + finish of `n` tiny detached fibers counted down on a wait group, from a
 * fiber, on all workers */
double bench_spawn(long n);
/* `n` fibers parked at once on a wait group: *create_ns = ns per fiber from the first spawn until all are
 * parked, *bytes = (VmRSS + VmPTE) growth per fiber. Returns 0 or a negative errno. */
int bench_parked(long n, double *create_ns, double *bytes);
/* ms for fib(n) with a spawn for every call with n >= 2, on all workers; *result gets fib(n) */
double bench_fib(int n, long *result);
/* ns per fiber spawned and joined one at a time, from a fiber */
double bench_unit_fiber(long n);
/* ns per kernel thread started with weft_thread_spawn and joined, one at a time */
double bench_unit_thread(long n);
/* ns per process made with fork() that exits at once, reaped with waitpid, one at a time */
double bench_unit_fork(long n);

#endif
