/*
 * A small network of one test's own, for network faults: the test process moves into a fresh network
 * namespace ("near"), and a second fresh one ("far") is joined to it by a veth pair.
 *
 *     near: lo 127.0.0.1, wt0 10.77.0.1/24  <--- veth --->  far: lo 127.0.0.1, wt1 10.77.0.2/24
 *
 *   netlab lab;
 *   if (!netlab_up(&lab))
 *       return;                                  // it printed "skipped: ..." (not root, no ip/nft/tc, ...)
 *   netlab_run(&lab, LAB_FAR, "nft add rule inet weft input tcp dport 5000 drop");
 *   int l = netlab_listen(&lab, 5000);           // a listening socket inside far, on 10.77.0.2:5000
 *   int s = socket(AF_INET, SOCK_STREAM, 0);     // a socket of the test's: inside near
 *
 * Both namespaces have an nft table "inet weft" with an input and an output chain (filter hooks), for
 * rules to be added to; faults are drops (`numgen random mod 100 < N drop`), resets (`reject with tcp
 * reset`), a link brought down (`ip link set wt1 down`) and rate limits (`tc qdisc ... tbf`). The link's
 * routes have rto_min 10ms, so that TCP sends a lost segment again after 10 ms rather than 200 ms: tests
 * behind drops spend less time waiting for retransmissions.
 *
 * A socket belongs to the namespace it was made in, whichever thread uses it later, so the test makes the
 * far side's sockets by stepping its thread into far for the socket() call (netlab_socket) and back.
 * Call netlab_up before the runtime starts: threads made afterwards inherit near from the thread that
 * makes them. Commands run in a child that enters the namespace named (setns) and execs the tool, so a
 * command never reaches the host's own network, whatever namespace the calling thread is in.
 *
 * Nothing outlives the test, however it ends (an assertion, a crash, the runner's SIGKILL): both
 * namespaces are anonymous (unshare, no name under /run/netns), held only by the test's threads, its
 * children and the two fds kept here. When the last goes, the kernel removes each namespace with its
 * interfaces, addresses, qdiscs and nft tables; the veth pair lies wholly inside the two. No janitor has
 * anything to remove, and no name can collide with another test's. A process started inside (an example
 * server) gets PR_SET_PDEATHSIG SIGKILL, so it cannot outlive the test either.
 */
#ifndef WEFT_TEST_NETLAB_H
#define WEFT_TEST_NETLAB_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

#define LAB_NEAR_ADDR "10.77.0.1"
#define LAB_FAR_ADDR "10.77.0.2"

enum netlab_side { LAB_NEAR = 0, LAB_FAR = 1 };

typedef struct netlab {
    int ns[2];          /* the namespaces (fds of /proc/self/ns/net), near and far */
    char tool[3][64];   /* paths of ip, nft, tc */
} netlab;

static const char *const netlab_tools_[3] = {"ip", "nft", "tc"};

/* The tool's path: PATH first, then the sbin directories a non-login root shell may lack. */
static inline int netlab_find_(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");
    char dirs[1024];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/%s", d, name);
        if (*d && access(out, X_OK) == 0)
            return 1;
    }
    return 0;
}

/* Run the command `line` (words split at spaces; nft joins its words again) inside one namespace.
 * Returns the exit status (0: success), with what the command printed in out. -1 when it could not be
 * run. */
static inline int netlab_exec_(const netlab *lab, int side, char *out, size_t outlen, const char *line)
{
    char words[1024], *argv[64];
    snprintf(words, sizeof words, "%s", line);
    int argc = 0;
    for (char *save = NULL, *w = strtok_r(words, " ", &save); w && argc < 63; w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    argv[argc] = NULL;
    if (out && outlen)
        out[0] = '\0';
    if (argc == 0)
        return -1;
    const char *path = NULL;
    for (int i = 0; i < 3; i++)
        if (strcmp(argv[0], netlab_tools_[i]) == 0)
            path = lab->tool[i];
    if (!path)
        return -1;
    /* everything the child needs is ready before the fork: it only enters, redirects and execs */
    int mfd = memfd_create("netlab-out", MFD_CLOEXEC);
    if (mfd < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(mfd);
        return -1;
    }
    if (pid == 0) {
        if (setns(lab->ns[side], CLONE_NEWNET) != 0)
            _exit(126); /* never run it where we are: that may be the host's namespace */
        dup2(mfd, STDOUT_FILENO);
        dup2(mfd, STDERR_FILENO);
        execv(path, argv);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (out && outlen) {
        ssize_t n = pread(mfd, out, outlen - 1, 0);
        out[n > 0 ? n : 0] = '\0';
    }
    close(mfd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Run a command (printf-style) inside one namespace; its exit status (0: success), what it printed in
 * out. */
static inline int netlab_try(const netlab *lab, int side, char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static inline int netlab_try(const netlab *lab, int side, char *out, size_t outlen, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    return netlab_exec_(lab, side, out, outlen, line);
}

/* Run a command that must succeed. */
static inline void netlab_run(const netlab *lab, int side, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void netlab_run(const netlab *lab, int side, const char *fmt, ...)
{
    char line[1024], out[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    int st = netlab_exec_(lab, side, out, sizeof out, line);
    if (st != 0)
        FAIL("in the %s namespace, `%s` failed (status %d): %s", side == LAB_FAR ? "far" : "near", line, st, out);
}

/* Step the calling thread into a namespace (and back with LAB_NEAR). */
static inline void netlab_enter(const netlab *lab, int side)
{
    if (setns(lab->ns[side], CLONE_NEWNET) != 0)
        FAIL("setns: %s", strerror(errno));
}

/* A socket made inside one namespace (it stays there). */
static inline int netlab_socket(const netlab *lab, int side, int type)
{
    netlab_enter(lab, side);
    int s = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    int e = errno;
    netlab_enter(lab, LAB_NEAR);
    if (s < 0)
        FAIL("socket: %s", strerror(e));
    return s;
}

static inline struct sockaddr_in netlab_addr(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

/* A blocking listening TCP socket inside far, on LAB_FAR_ADDR:port. */
static inline int netlab_listen(const netlab *lab, int port)
{
    int s = netlab_socket(lab, LAB_FAR, SOCK_STREAM);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = netlab_addr(LAB_FAR_ADDR, port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0)
        FAIL("listening on " LAB_FAR_ADDR ":%d: %s", port, strerror(errno));
    return s;
}

/* Make the two namespaces and the link between them, and move the calling process into near.
 * Returns 1; or prints why the test cannot run here ("skipped: ...") and returns 0: the test then
 * returns, passing. Call it first, while the process has one thread. */
static inline int netlab_up(netlab *lab)
{
    if (geteuid() != 0) {
        printf("skipped: network namespaces need root\n");
        return 0;
    }
    for (int i = 0; i < 3; i++)
        if (!netlab_find_(netlab_tools_[i], lab->tool[i], sizeof lab->tool[i])) {
            printf("skipped: `%s` is not installed (Debian packages iproute2 and nftables)\n", netlab_tools_[i]);
            return 0;
        }
    struct stat host;
    if (stat("/proc/self/ns/net", &host) != 0) {
        printf("skipped: no /proc/self/ns/net: %s\n", strerror(errno));
        return 0;
    }
    for (int side = 0; side < 2; side++) {
        if (unshare(CLONE_NEWNET) != 0) {
            printf("skipped: cannot make a network namespace: %s\n", strerror(errno));
            if (side == 1 && setns(lab->ns[LAB_NEAR], CLONE_NEWNET) != 0)
                FAIL("setns: %s", strerror(errno));
            return 0;
        }
        lab->ns[side] = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (lab->ns[side] < 0 || fstat(lab->ns[side], &st) != 0)
            FAIL("opening the new namespace: %s", strerror(errno));
        if (st.st_ino == host.st_ino && st.st_dev == host.st_dev) {
            printf("skipped: unshare(CLONE_NEWNET) left the process in the namespace it was in\n");
            return 0;
        }
    }
    netlab_enter(lab, LAB_NEAR);
    char out[2048];
    /* made from inside far, the peer end is put into the namespace of this process (near) */
    int st = netlab_try(lab, LAB_FAR, out, sizeof out, "ip link add wt1 type veth peer name wt0 netns %d",
                        (int)getpid());
    if (st != 0) {
        printf("skipped: cannot make a veth pair (status %d): %s\n", st, out);
        return 0;
    }
    const char *addr[2] = {LAB_NEAR_ADDR, LAB_FAR_ADDR};
    for (int side = 0; side < 2; side++) {
        netlab_run(lab, side, "ip link set lo up"); /* a new namespace's lo starts down */
        netlab_run(lab, side, "ip addr add %s/24 dev wt%d", addr[side], side);
        netlab_run(lab, side, "ip link set wt%d up", side);
        /* retransmissions after a loss come 10 ms on, not 200: losses slow the tests down less */
        netlab_run(lab, side, "ip route change 10.77.0.0/24 dev wt%d proto kernel scope link src %s rto_min 10ms",
                   side, addr[side]);
        st = netlab_try(lab, side, out, sizeof out,
                        "nft add table inet weft ; "
                        "add chain inet weft input { type filter hook input priority 0 ; } ; "
                        "add chain inet weft output { type filter hook output priority 0 ; }");
        if (st != 0) {
            printf("skipped: nft cannot make a table here (status %d): %s\n", st, out);
            return 0;
        }
    }
    return 1;
}

/* Start a program inside near (the calling process's own namespace), killed if the test ends first.
 * argv[0] is a path. */
static inline pid_t netlab_spawn(char *const argv[])
{
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

#endif
