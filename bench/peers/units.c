/* units: what one OS unit of concurrency costs, created and joined, doing
 * nothing.
 *
 *     units [threads]     (default 20,000 threads; processes = threads / 10)
 *
 * pthread: pthread_create + pthread_join of a thread that returns at once.
 * fork:    fork + the child _exit(0)s at once + waitpid.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "peer.h"

static void *nothing(void *arg)
{
    return arg;
}

static void threads(long n)
{
    for (long i = 0; i < n; i++) {
        pthread_t t;
        int err = pthread_create(&t, NULL, nothing, NULL);
        if (err) {
            fprintf(stderr, "units: pthread_create: %s\n", strerror(err));
            exit(1);
        }
        pthread_join(t, NULL);
    }
}

static void processes(long n)
{
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("units: fork");
            exit(1);
        }
        if (pid == 0)
            _exit(0);
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "units: child %d did not exit cleanly\n", (int)pid);
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    long n = peer_count(argc, argv, 20000);
    long np = n / 10 > 0 ? n / 10 : 1;

    threads(n / 10 + 1); /* warm-up: the stack cache, the page tables */
    int64_t t0 = peer_now_ns();
    threads(n);
    int64_t t1 = peer_now_ns();

    processes(np / 10 + 1);
    int64_t t2 = peer_now_ns();
    processes(np);
    int64_t t3 = peer_now_ns();

    printf("# %ld threads, %ld processes (fork from a %lld KiB process)\n", n, np,
           peer_mem_bytes() / 1024);
    peer_result("units", "pthread", (double)(t1 - t0) / (double)n, "ns");
    peer_result("units", "fork", (double)(t3 - t2) / (double)np, "ns");
    return 0;
}
