/*
 * The coordination benchmarks, weft side: channels, the mutex and the parallel loops, each measured the
 * way its peer in bench/peers/ is (Go channels and sync.Mutex, pthread mutexes, OpenMP and oneTBB loops).
 * Each function starts the runtime with the workers it needs, measures one figure and shuts the runtime
 * down. It returns the figure (lower is better), or a negative errno when it could not run, or
 * BENCH_WRONG when the work was done but its result did not check out (a lost element, a counter that
 * is off, a wrong sum); what was wrong is then on stderr.
 */
#ifndef WEFT_BENCH_SYNC_H
#define WEFT_BENCH_SYNC_H

#include <errno.h>

#define BENCH_WRONG (-EBADMSG)

/* ns per round trip of two fibers passing a counter back and forth over two unbuffered channels (each
 * adds one; it must come back as 2 * rounds), on `workers` workers; where the fibers run is left to the
 * scheduler, as Go's ping-pong leaves it to Go's */
double bench_chan_pingpong(int workers, long rounds);

/* The same round trip with side B receiving through weft_select over two receive cases, the ping
 * channel and one that is never ready */
double bench_select_pingpong(int workers, long rounds);

/* ns per round trip of two fibers signalling each other through two weft_wg_t used as one-shot events
 * (done fires one, its waiter re-arms it with add), on `workers` workers */
double bench_wg_pingpong(int workers, long rounds);

/* ns per element through one buffered channel of int64 (capacity BENCH_CHAN_CAP) on all workers:
 * `pairs` producers send 1..n between them, the channel is closed when they are done, `pairs`
 * consumers receive until it is closed and drained; the sum received must be n(n+1)/2 */
#define BENCH_CHAN_CAP 128
double bench_chan_buffered(int pairs, long n);

/* ns per lock + increment + unlock of one weft_mutex_t by `fibers` fibers on `workers` workers, n in all;
 * the counter must end at n */
double bench_mutex(int workers, int fibers, long n);

/* The array pfor-sqrt sums, malloc'd: a[i] = (i % 1000)^2, so every partial sum is an exact integer and
 * the sum is the same in any order; *want gets it. NULL without memory. */
double *bench_sqrt_array(long n, double *want);
/* ms for the sum of sqrt(a[i]) over n doubles with weft_parallel_reduce (default grain), on `workers`
 * workers (0: the default, all CPUs); *used gets the number of workers */
double bench_pfor_sqrt(const double *a, long n, double want, int workers, int *used);

/* ns per iteration of passes of a[i] += 1 over BENCH_TINY_SIZE ints (fewer when n is smaller), one
 * weft_parallel_for per pass with the default grain, all workers, until n iterations are done; every
 * element must end equal to the passes made. *serial_ns gets the same passes as plain loops on one
 * thread, the floor; *used the number of workers. */
#define BENCH_TINY_SIZE 1000000L
double bench_pfor_tiny(long n, double *serial_ns, int *used);

#endif
