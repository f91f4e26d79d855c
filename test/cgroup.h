/*
 * A thread limit for one test: a cgroup v1 pids controller (MACHINE.md: it works on the build and CI
 * machines, as root). RLIMIT_NPROC does not bind root, so a pids cgroup is the way to make
 * pthread_create (clone) fail with EAGAIN the way a container's limit does.
 *
 *   test_cgroup cg;
 *   if (!cgroup_enter(&cg))
 *       return;                  // it printed "skipped: ..." (not root, no v1 pids controller)
 *   start_workers(1);
 *   cgroup_room(&cg, 2);         // pids.max = the tasks in the cgroup now + 2
 *   ...
 *   cgroup_lift(&cg);            // pids.max = "max": threads can be made again
 *
 * cgroup_enter makes /sys/fs/cgroup/pids/weft-test-PID and moves the whole calling process into it by
 * writing its pid to cgroup.procs, which moves every thread of the process (writing to `tasks` would
 * move one thread only, and the others would stay outside the limit). Processes the test forks later
 * are born inside. pids.current counts tasks, threads and processes alike, of everything in the cgroup.
 *
 * The cgroup must go when the test ends, however it ends: a crash, an assertion (_exit), the runner's
 * SIGKILL at the timeout. A cgroup can be removed only once no task is left in it, so the test process
 * cannot remove its own. Before it moves, cgroup_enter forks a janitor that stays outside: it waits for
 * the test process to end (a pidfd), then removes the cgroup, killing whatever the test left behind in
 * it (a child it forked) if that does not end by itself.
 */
#ifndef WEFT_TEST_CGROUP_H
#define WEFT_TEST_CGROUP_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"

#define CGROUP_PIDS_ROOT "/sys/fs/cgroup/pids"

typedef struct test_cgroup {
    char dir[128];
} test_cgroup;

static inline int cgroup_write_(const char *dir, const char *file, const char *text)
{
    char path[192];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "we");
    if (!f)
        return -errno;
    int r = fputs(text, f) < 0 ? -EIO : 0;
    if (fclose(f) != 0 && r == 0)
        r = -errno;
    return r;
}

static inline long cgroup_read_(const char *dir, const char *file)
{
    char path[192], buf[64] = "";
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char *ok = fgets(buf, sizeof buf, f);
    fclose(f);
    return ok ? atol(buf) : -1;
}

static inline void cgroup_nap_ms_(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* The janitor: outside the cgroup, waits for the test process, then removes the cgroup. */
static inline _Noreturn void cgroup_janitor_(const char *dir, pid_t test)
{
    int pfd = (int)syscall(SYS_pidfd_open, test, 0);
    if (pfd >= 0) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
    } else {
        while (kill(test, 0) == 0 || errno != ESRCH) /* no pidfd: poll for the end */
            cgroup_nap_ms_(10);
    }
    /* the test's zombie and anything it forked may linger a moment; after 5 s, kill what is left */
    for (int i = 0; rmdir(dir) != 0 && errno == EBUSY; i++) {
        if (i >= 500) {
            char path[192], line[32];
            snprintf(path, sizeof path, "%s/cgroup.procs", dir);
            FILE *f = fopen(path, "re");
            while (f && fgets(line, sizeof line, f))
                kill((pid_t)atol(line), SIGKILL);
            if (f)
                fclose(f);
        }
        cgroup_nap_ms_(10);
    }
    _exit(0);
}

/*
 * Make a pids cgroup for this test process and move into it (with no limit yet). Returns 1; or prints
 * why the test cannot run here ("skipped: ...") and returns 0: then the test should return, passing.
 * Call it before the runtime starts, while the process has one thread (it forks the janitor).
 */
static inline int cgroup_enter(test_cgroup *cg)
{
    if (geteuid() != 0) {
        printf("skipped: a pids cgroup needs root\n");
        return 0;
    }
    if (access(CGROUP_PIDS_ROOT "/cgroup.procs", W_OK) != 0) {
        printf("skipped: no writable cgroup v1 pids controller at " CGROUP_PIDS_ROOT "\n");
        return 0;
    }
    pid_t me = getpid();
    snprintf(cg->dir, sizeof cg->dir, CGROUP_PIDS_ROOT "/weft-test-%d", (int)me);
    if (mkdir(cg->dir, 0755) != 0 && errno != EEXIST)
        FAIL("mkdir %s: %s", cg->dir, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t j = fork();
    if (j < 0) {
        int e = errno;
        rmdir(cg->dir);
        FAIL("fork: %s", strerror(e));
    }
    if (j == 0)
        cgroup_janitor_(cg->dir, me);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)me);
    int r = cgroup_write_(cg->dir, "cgroup.procs", pid);
    if (r < 0)
        FAIL("moving into %s: %s", cg->dir, strerror(-r));
    return 1;
}

/* Tasks (threads and processes) in the cgroup now. */
static inline long cgroup_tasks(const test_cgroup *cg)
{
    long n = cgroup_read_(cg->dir, "pids.current");
    if (n < 0)
        FAIL("reading %s/pids.current", cg->dir);
    return n;
}

/* Set pids.max to `tasks`; below the tasks there now is allowed (no new one can be made, none is
 * killed). */
static inline void cgroup_set_max(const test_cgroup *cg, long tasks)
{
    char v[32];
    snprintf(v, sizeof v, "%ld", tasks < 0 ? 0 : tasks);
    int r = cgroup_write_(cg->dir, "pids.max", v);
    if (r < 0)
        FAIL("setting %s/pids.max to %s: %s", cg->dir, v, strerror(-r));
}

/* Tasks listed in the cgroup's `tasks` file (threads of every process in it). */
static inline long cgroup_listed_(const test_cgroup *cg)
{
    char path[192], line[32];
    snprintf(path, sizeof path, "%s/tasks", cg->dir);
    FILE *f = fopen(path, "re");
    long n = 0;
    while (f && fgets(line, sizeof line, f))
        n++;
    if (f)
        fclose(f);
    return n;
}

/* Leave room for exactly k more threads than the cgroup has now (k = 0: not one more). Returns the
 * limit set. A thread that just ended (a joined worker) leaves the task list before the controller
 * lets go of it: wait for the two counts to agree first, or the room would grow by one later. */
static inline long cgroup_room(const test_cgroup *cg, long k)
{
    for (int i = 0; i < 1000 && cgroup_tasks(cg) != cgroup_listed_(cg); i++)
        cgroup_nap_ms_(1);
    long max = cgroup_tasks(cg) + k;
    cgroup_set_max(cg, max);
    return max;
}

/* No limit any more. */
static inline void cgroup_lift(const test_cgroup *cg)
{
    int r = cgroup_write_(cg->dir, "pids.max", "max");
    if (r < 0)
        FAIL("lifting %s/pids.max: %s", cg->dir, strerror(-r));
}

/* How often the limit refused a task so far (pids.events "max N"); -1 if unknown. */
static inline long cgroup_refusals(const test_cgroup *cg)
{
    char path[192], line[64];
    snprintf(path, sizeof path, "%s/pids.events", cg->dir);
    FILE *f = fopen(path, "re");
    long n = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "max ", 4) == 0)
            n = atol(line + 4);
    if (f)
        fclose(f);
    return n;
}

#endif
