/* mutex-pthread: one pthread_mutex_t (the default kind) contended by 2
 * threads (pthread), then by 64 threads (pthread-64). Each thread locks,
 * increments a shared counter and unlocks, n / threads times; the counter
 * must end at n (exit 1 otherwise).
 *
 *     mutex-pthread [lock+unlock pairs]     (default 10,000,000; ns per pair)
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "peer.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *worker(void *arg)
{
    long k = (long)arg;
    for (long i = 0; i < k; i++) {
        pthread_mutex_lock(&mu);
        counter++;
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

/* n lock + increment + unlock in all over `threads` threads: ns per pair */
static double contend(long n, int threads)
{
    pthread_t t[64];
    counter = 0;
    int64_t t0 = peer_now_ns();
    for (int i = 0; i < threads; i++) {
        long k = n * (i + 1) / threads - n * i / threads;
        int err = pthread_create(&t[i], NULL, worker, (void *)k);
        if (err) {
            fprintf(stderr, "mutex-pthread: pthread_create: %s\n", strerror(err));
            exit(1);
        }
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    int64_t t1 = peer_now_ns();
    if (counter != n) {
        fprintf(stderr, "mutex-pthread: %d threads: counter %ld, expected %ld\n", threads, counter, n);
        exit(1);
    }
    return (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 10000000);

    printf("# default pthread_mutex_t, 2 threads (pthread) and 64 threads (pthread-64), %ld lock+unlock\n", n);
    contend(n / 10 + 1, 2); /* warm-up */
    peer_result("mutex", "pthread", contend(n, 2), "ns");
    contend(n / 10 + 1, 64);
    peer_result("mutex", "pthread-64", contend(n, 64), "ns");
    return 0;
}
