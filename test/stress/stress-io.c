/*
 * I/O under load: many TCP connections between fibers on every worker exchanging messages of random
 * sizes, every byte checked; closes racing reads and writes on the same fd, over and over, with the
 * numbers reused at once. Nothing may be lost, duplicated, hang or crash. Sizes scale with
 * WEFT_TEST_SCALE.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "runner.h"

static int port_of(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

/* Each message: a 4-byte length, then that many bytes of a pattern seeded by the message number. */
static void fill(char *buf, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)(seed * 2654435761u + i * 40503u);
}

static void read_exactly(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = weft_read(fd, (char *)buf + got, n - got, weft_deadline_in(60 * SEC));
        if (r <= 0)
            FAIL("read returned %zd (%s) after %zu of %zu bytes", r, runner_err_name((int)r), got, n);
        got += (size_t)r;
    }
}

static void *echo_server_conn(void *arg)
{
    int c = (int)(intptr_t)arg;
    char *buf = malloc(1 << 16);
    for (;;) {
        uint32_t len;
        ssize_t r = weft_read(c, &len, sizeof len, weft_deadline_in(60 * SEC));
        if (r == 0)
            break;
        ASSERT_EQ(r, (ssize_t)sizeof len); /* the client writes the header in one piece first */
        read_exactly(c, buf, len);
        ASSERT_EQ(weft_write(c, &len, sizeof len, WEFT_FOREVER), (ssize_t)sizeof len);
        ASSERT_EQ(weft_write(c, buf, len, WEFT_FOREVER), (ssize_t)len);
    }
    free(buf);
    ASSERT_OK(weft_close(c));
    return NULL;
}

typedef struct {
    int lfd;
    long conns;
} acceptor_t;

static void *acceptor(void *arg)
{
    acceptor_t *a = arg;
    for (long i = 0; i < a->conns; i++) {
        int c = weft_accept(a->lfd, NULL, NULL, weft_deadline_in(60 * SEC));
        ASSERT_GE(c, 0);
        ASSERT_OK(weft_go(echo_server_conn, (void *)(intptr_t)c));
    }
    return NULL;
}

static atomic_long bytes_checked;

static void *echo_client(void *arg)
{
    intptr_t id = (intptr_t)arg >> 16;
    int port = (int)((intptr_t)arg & 0xffff);
    int fd = weft_tcp_dial("127.0.0.1", port, weft_deadline_in(60 * SEC));
    ASSERT_GE(fd, 0);
    char *out = malloc(1 << 16), *in = malloc(1 << 16);
    unsigned seed = (unsigned)id;
    long msgs = runner_scaled(100);
    for (long m = 0; m < msgs; m++) {
        uint32_t len = 1 + (uint32_t)(rand_r(&seed) % (1 << 16));
        if (m % 3)
            len %= 512; /* mostly small, now and then large */
        len += 1;
        fill(out, len, (uint32_t)(id * 100000 + m));
        ASSERT_EQ(weft_write(fd, &len, sizeof len, WEFT_FOREVER), (ssize_t)sizeof len);
        ASSERT_EQ(weft_write(fd, out, len, WEFT_FOREVER), (ssize_t)len);
        uint32_t back;
        read_exactly(fd, &back, sizeof back);
        ASSERT_EQ(back, len);
        read_exactly(fd, in, len);
        if (memcmp(in, out, len) != 0)
            FAIL("connection %ld message %ld came back changed", (long)id, m);
        atomic_fetch_add(&bytes_checked, len);
        if (rand_r(&seed) % 4 == 0)
            weft_yield();
    }
    free(out);
    free(in);
    ASSERT_OK(weft_close(fd));
    return NULL;
}

TEST_TIMEOUT(many_connections_echo_messages_of_every_size, 600)
{
    long conns = runner_scaled(200);
    int lfd = weft_tcp_listen("127.0.0.1", 0, 1024);
    ASSERT_GE(lfd, 0);
    int port = port_of(lfd);
    acceptor_t a = {lfd, conns};
    weft_fiber_t acc;
    ASSERT_OK(weft_spawn(&acc, NULL, acceptor, &a));
    weft_fiber_t *cl = calloc((size_t)conns, sizeof *cl);
    for (long i = 0; i < conns; i++)
        ASSERT_OK(weft_spawn(&cl[i], NULL, echo_client, (void *)(((intptr_t)i << 16) | port)));
    for (long i = 0; i < conns; i++)
        ASSERT_OK(weft_join(cl[i], NULL));
    ASSERT_OK(weft_join(acc, NULL));
    ASSERT_OK(weft_close(lfd));
    ASSERT_OK(weft_shutdown()); /* the server fibers saw end of stream and finished */
    printf("%ld connections, %ld bytes echoed and checked\n", conns, atomic_load(&bytes_checked));
    free(cl);
}

/* ------------------------------------------------------------------------------------------------ */

typedef struct {
    int fd, other;
    long round;          /* varies the timings */
    _Atomic int outcome; /* 1 data, 2 closed, 3 timed out */
} race_t;

static void *racing_reader(void *arg)
{
    race_t *r = arg;
    char c;
    ssize_t n = weft_read(r->fd, &c, 1, weft_deadline_in((int64_t)(r->round % 4) * 50 * 1000));
    if (n == 1)
        atomic_store(&r->outcome, 1);
    else if (n == -EBADF)
        atomic_store(&r->outcome, 2);
    else if (n == -ETIMEDOUT)
        atomic_store(&r->outcome, 3);
    else
        FAIL("read returned %zd (%s)", n, runner_err_name((int)n));
    return NULL;
}

static void *racing_closer(void *arg)
{
    race_t *r = arg;
    int spins = (int)(r->round % 7);
    for (int i = 0; i < spins; i++)
        weft_yield();
    int rc = weft_close(r->fd);
    ASSERT(rc == 0 || rc == -EBADF);
    return NULL;
}

static void *racing_writer(void *arg)
{
    race_t *r = arg;
    for (int i = 0; i < (int)(r->round % 5); i++)
        weft_yield();
    ssize_t n = weft_write(r->other, "x", 1, weft_deadline_in(SEC));
    ASSERT(n == 1 || n == -EPIPE || n == -ECONNRESET);
    return NULL;
}

TEST_TIMEOUT(closes_race_reads_and_writes_and_numbers_are_reused_at_once, 600)
{
    long rounds = runner_scaled(20000);
    long outcomes[4] = {0};
    for (long i = 0; i < rounds; i++) {
        int s[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
        race_t r = {.fd = s[0], .other = s[1], .round = i};
        weft_fiber_t rd, cl, wr;
        ASSERT_OK(weft_spawn(&rd, NULL, racing_reader, &r));
        ASSERT_OK(weft_spawn(&wr, NULL, racing_writer, &r));
        ASSERT_OK(weft_spawn(&cl, NULL, racing_closer, &r));
        ASSERT_OK(weft_join(rd, NULL));
        ASSERT_OK(weft_join(wr, NULL));
        ASSERT_OK(weft_join(cl, NULL));
        ASSERT_OK(weft_close(s[1]));
        outcomes[atomic_load(&r.outcome)]++;
    }
    ASSERT_EQ(outcomes[0], 0);
    printf("%ld rounds: %ld read data, %ld saw the close, %ld timed out\n", rounds, outcomes[1], outcomes[2],
           outcomes[3]);
    ASSERT_OK(weft_shutdown());
}
