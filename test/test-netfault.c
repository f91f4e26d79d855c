/*
 * Network faults, made in network namespaces of the test's own (test/netlab.h): a veth link between
 * the test's namespace and a far one, with nftables drops and resets, a link brought down, and tbf rate
 * limits on it.
 * Outcomes are asserted, never times: a deadline must not pass early, and a generous sanity bound (10x)
 * only catches one that never fires; other waits are liveness bounds.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "netlab.h"
#include "runner.h"

static int fds_now(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* A plain accept with a liveness bound. */
static int accept_within(int lfd, int seconds)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, seconds * 1000) != 1)
        FAIL("no connection came to the listener within %d s", seconds);
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        FAIL("accept: %s", strerror(errno));
    return c;
}

/* A TCP socket of near's, connected to far:port with weft_connect. */
static int connect_far(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_in a = netlab_addr(LAB_FAR_ADDR, port);
    ASSERT_OK(weft_connect(fd, (struct sockaddr *)&a, sizeof a, weft_deadline_in(10 * SEC)));
    return fd;
}

TEST(the_two_namespaces_reach_each_other_over_the_link)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5000);
    start_workers(2);
    int base = fds_now();
    int fd = connect_far(5000);
    int peer = accept_within(lfd, 10);
    ASSERT_EQ(weft_write(fd, "ping", 4, weft_deadline_in(10 * SEC)), 4);
    char buf[8] = "";
    ASSERT_EQ(recv(peer, buf, sizeof buf, 0), 4);
    ASSERT_EQ(send(peer, "pong", 4, 0), 4);
    ASSERT_EQ(weft_read(fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), 4);
    ASSERT(memcmp(buf, "pong", 4) == 0);
    close(peer);
    ASSERT_OK(weft_close(fd));
    ASSERT_EQ(fds_now(), base);
    ASSERT_OK(weft_shutdown());
}
