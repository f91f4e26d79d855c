/*
 * The test runner's engine (see runner.h). The parent process never starts weft: it only forks, so
 * each child begins from a clean, single-threaded state.
 */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 512

static struct {
    const char *name;
    runner_fn fn;
    int timeout_s;
} tests[MAX_TESTS];
static int ntests;
static char bin_dir[PATH_MAX];
static double timeout_scale = 1.0;

void runner_register(const char *name, runner_fn fn, int timeout_s)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "runner: too many tests\n");
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    tests[ntests].timeout_s = timeout_s;
    ntests++;
}

void runner_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stdout);
    fflush(stderr);
    _exit(1);
}

const char *runner_err_name(int err)
{
    if (err >= 0)
        return "OK";
    const char *n = strerrorname_np(-err);
    return n ? n : "?";
}

long runner_scaled(long n)
{
    const char *s = getenv("WEFT_TEST_SCALE");
    double f = s ? atof(s) : 1.0;
    if (f <= 0)
        f = 1.0;
    long v = (long)((double)n * f);
    return v < 1 ? 1 : v;
}

const char *runner_bin_dir(void)
{
    return bin_dir;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait for pid for at most timeout_s seconds; SIGKILL it after that. Returns the wait status; sets
 * *timed_out. Uses a pidfd where the kernel (or the emulator) has one, else polls. */
static int wait_timeout(pid_t pid, double timeout_s, int *timed_out)
{
    int status = 0;
    *timed_out = 0;
    double deadline = now_s() + timeout_s;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = -1;
            break;
        }
        double left = deadline - now_s();
        if (left <= 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            *timed_out = 1;
            break;
        }
        if (pfd >= 0) {
            struct pollfd p = {.fd = pfd, .events = POLLIN};
            int ms = left > 1.0 ? 1000 : (int)(left * 1000) + 1;
            poll(&p, 1, ms);
        } else {
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (pfd >= 0)
        close(pfd);
    return status;
}

static size_t drain(int fd, char *out, size_t outlen, size_t have)
{
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n && have + 1 < outlen; i++)
            out[have++] = buf[i];
    }
    return have;
}

static int capture(void (*fn)(void *), void *arg, char *const argv[], char *const envp[], char *out,
                   size_t outlen, int timeout_s)
{
    /* a memfd, not a pipe: a child that writes a lot never blocks on a reader that waits for it */
    int fd = memfd_create("weft-test-out", 0);
    if (fd < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        if (argv) {
            if (envp)
                execve(argv[0], argv, envp);
            else
                execv(argv[0], argv);
            fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
            _exit(127);
        }
        fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    int timed_out;
    int status = wait_timeout(pid, timeout_s * timeout_scale, &timed_out);
    size_t have = 0;
    if (out && outlen) {
        lseek(fd, 0, SEEK_SET);
        have = drain(fd, out, outlen, 0);
        out[have] = '\0';
        if (timed_out && have + 40 < outlen)
            snprintf(out + have, outlen - have, "\n[runner: killed after %d s]\n", timeout_s);
    }
    close(fd);
    return status;
}

int runner_capture(void (*fn)(void *), void *arg, char *out, size_t outlen, int timeout_s)
{
    return capture(fn, arg, NULL, NULL, out, outlen, timeout_s);
}

int runner_capture_exec(char *const argv[], char *const envp[], char *out, size_t outlen, int timeout_s)
{
    return capture(NULL, NULL, argv, envp, out, outlen, timeout_s);
}

static void run_test(void *arg)
{
    ((runner_fn)arg)();
}

static int matches(const char *name, int argc, char **argv, int first)
{
    if (first >= argc)
        return 1;
    for (int i = first; i < argc; i++)
        if (strstr(name, argv[i]))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int verbose = 0, list = 0, first = 1;
    int timeout_override = 0;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (strcmp(argv[first], "-v") == 0)
            verbose = 1;
        else if (strcmp(argv[first], "--list") == 0)
            list = 1;
        else if (strcmp(argv[first], "--timeout") == 0 && first + 1 < argc)
            timeout_override = atoi(argv[++first]);
        else {
            fprintf(stderr, "usage: %s [-v] [--list] [--timeout SECONDS] [NAME-SUBSTRING ...]\n", argv[0]);
            return 2;
        }
    }
    const char *sc = getenv("WEFT_TEST_TIMEOUT_SCALE");
    if (sc && atof(sc) > 0)
        timeout_scale = atof(sc);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        snprintf(bin_dir, sizeof bin_dir, "%s", self);
    }
    const char *prog = strrchr(argv[0], '/');
    prog = prog ? prog + 1 : argv[0];

    if (list) {
        for (int i = 0; i < ntests; i++)
            if (matches(tests[i].name, argc, argv, first))
                printf("%s\n", tests[i].name);
        return 0;
    }

    static char out[1 << 20];
    int failed = 0, ran = 0;
    for (int i = 0; i < ntests; i++) {
        if (!matches(tests[i].name, argc, argv, first))
            continue;
        ran++;
        int t = timeout_override ? timeout_override : tests[i].timeout_s;
        double t0 = now_s();
        int status = runner_capture(run_test, (void *)tests[i].fn, out, sizeof out, t);
        double dt = now_s() - t0;
        int ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        char why[128] = "";
        if (status < 0)
            snprintf(why, sizeof why, " (could not run)");
        else if (WIFSIGNALED(status))
            snprintf(why, sizeof why, " (%s: signal %d, %s)", strstr(out, "[runner: killed after") ? "timeout" : "crash",
                     WTERMSIG(status), strsignal(WTERMSIG(status)));
        else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
            snprintf(why, sizeof why, " (exit %d)", WEXITSTATUS(status));
        printf("%s %d - %s/%s %.2fs%s\n", ok ? "ok" : "not ok", ran, prog, tests[i].name, dt, why);
        if (!ok || verbose) {
            if (out[0]) {
                char *line = out;
                while (line && *line) {
                    char *nl = strchr(line, '\n');
                    if (nl)
                        *nl = '\0';
                    printf("    %s\n", line);
                    line = nl ? nl + 1 : NULL;
                }
            }
        }
        fflush(stdout);
        failed += !ok;
    }
    printf("# %s: %d passed, %d failed\n", prog, ran - failed, failed);
    if (ran == 0 && first < argc) { /* a name that matches nothing is a typo, not a pass */
        fprintf(stderr, "%s: no test matches the names given (--list shows them)\n", prog);
        return 2;
    }
    return failed ? 1 : 0;
}
