/*
 * Network faults, made in network namespaces of the test's own (test/netlab.h): a veth link between the
 * test's namespace and a far one, with nftables drops and resets on it, the far end brought down, and
 * tbf rate limits.
 *   - deadlines: a connect whose SYNs are dropped, a dial whose name lookup no DNS server answers, and
 *     a read from a peer that says nothing fail with -ETIMEDOUT at their deadline, never before;
 *   - resets: a peer's close with SO_LINGER 0, and a reset from the network (nft reject with tcp reset),
 *     give -ECONNRESET, then -EPIPE; a reset connect is refused; a write that a reset cuts short returns
 *     its count, and the reads after it get what came before the reset, then the reset;
 *   - half-open peers (the link down, or every packet dropped) are found by the read and the write
 *     deadlines, and, with no deadline, when the kernel gives up (TCP_USER_TIMEOUT);
 *   - bytes cross a lossy link and a rate-limited one whole and in order; a write that passes its
 *     deadline returns its count, and the rest follows from there;
 *   - many connections failing at once leave no fd behind; weft_close wakes calls parked on a dead
 *     connection; a connect to a full backlog waits for room until its deadline;
 *   - the example servers, on one worker, serve a healthy client beside clients behind heavy drops,
 *     behind a rate limit, or gone mid-request.
 * Most run in three modes, each with its own deadline path: in a fiber, on a plain thread beside the
 * runtime, and with no runtime. Each mode must close every fd it opened.
 * Outcomes are asserted, never times: a deadline must not pass early, and a generous sanity bound (10x)
 * only catches one that never fires; other waits are liveness bounds.
 */
#include <dirent.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <weft.h>

#include "helpers.h"
#include "netlab.h"
#include "runner.h"

#define WAIT (200 * MS) /* the deadline the timing-out calls are given */
#define BIG (8 << 20)    /* more than a connection's buffers take */

/* What fd names: "socket:[123]", a path, ... ("" when it is gone). */
static void fd_target(const char *name, char *out, size_t len)
{
    char path[300];
    snprintf(path, sizeof path, "/proc/self/fd/%s", name);
    ssize_t n = readlink(path, out, len - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* The fds open now, but for the /proc/<pid>/task/<tid>/stat file each runtime thread keeps open (the
 * monitor reads it) from its start to its end: those come and go with the threads, not with the calls
 * under test. With show, each is printed. */
static int fds_count(int show)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char t[300];
        fd_target(e->d_name, t, sizeof t);
        size_t len = strlen(t);
        if (strncmp(t, "/proc/", 6) == 0 && strstr(t, "/task/") && len > 5 && strcmp(t + len - 5, "/stat") == 0)
            continue;
        n++;
        if (show)
            fprintf(stderr, "    fd %s: %s\n", e->d_name, t);
    }
    if (d)
        closedir(d);
    return n;
}

static int fds_now(void)
{
    return fds_count(0);
}

static double timeout_scale(void)
{
    const char *s = getenv("WEFT_TEST_TIMEOUT_SCALE");
    return s && atof(s) > 1 ? atof(s) : 1.0;
}

/*
 * The ways a call is made: in a fiber (it parks), on a plain thread while the runtime runs (it blocks on
 * the fd's waiter list), and with no runtime at all (it blocks in poll(2)). Each has its own deadline path.
 */
enum { NO_RUNTIME, ON_THREAD, IN_FIBER, MODES };
static const int mode_order[MODES] = {NO_RUNTIME, ON_THREAD, IN_FIBER};
static const char *const mode_name[MODES] = {"with no runtime", "on a thread beside the runtime", "in a fiber"};
static int mode_fds;

/* Start or keep the runtime as the mode needs; remember the fds open now. */
static void mode_begin(int mode)
{
    if (mode != NO_RUNTIME && weft_workers() == 0)
        start_workers(2);
    mode_fds = fds_now();
}

/* Every fd the mode's calls made is closed again. After the last mode, the runtime stops. */
static void mode_end(int mode)
{
    int now = fds_now();
    if (now != mode_fds) {
        fds_count(1);
        FAIL("%s: %d fds open after, %d before", mode_name[mode], now, mode_fds);
    }
    if (mode == mode_order[MODES - 1])
        ASSERT_OK(weft_shutdown());
}

typedef struct {
    void (*fn)(int mode, void *arg);
    int mode;
    void *arg;
} mode_call;

static void *mode_fiber(void *arg)
{
    mode_call *c = arg;
    c->fn(c->mode, c->arg);
    return NULL;
}

/* fn(mode, arg) as the mode says: in a fiber (joined), or right here on this thread. */
static void run_as(int mode, void (*fn)(int, void *), void *arg)
{
    if (mode != IN_FIBER) {
        fn(mode, arg);
        return;
    }
    mode_call c = {fn, mode, arg};
    weft_fiber_t f;
    ASSERT_OK(weft_spawn(&f, NULL, mode_fiber, &c));
    ASSERT_OK(weft_join(f, NULL));
}

/* expr, a call given deadline dl at time t0, must fail with -ETIMEDOUT: not before dl, and not so long
 * after it (10 times the wait, more under sanitizers) that it looks like a deadline that never fired. */
#define ASSERT_TIMES_OUT(mode, expr, t0, dl)                                                        \
    do {                                                                                            \
        long long r_ = (long long)(expr);                                                           \
        int64_t t_ = weft_now();                                                                    \
        if (r_ != -ETIMEDOUT)                                                                       \
            FAIL("%s: %s: want ETIMEDOUT, got %lld (%s)", mode_name[mode], #expr, r_,               \
                 runner_err_name((int)r_));                                                         \
        if (t_ < (dl))                                                                              \
            FAIL("%s: %s timed out %lld us before its deadline", mode_name[mode], #expr,            \
                 (long long)((dl) - t_) / 1000);                                                    \
        if ((double)(t_ - (t0)) > 10 * timeout_scale() * (double)((dl) - (t0)))                     \
            FAIL("%s: %s timed out only after %lld ms, for a deadline %lld ms away", mode_name[mode], \
                 #expr, (long long)(t_ - (t0)) / MS, (long long)((dl) - (t0)) / MS);                \
    } while (0)

/* expr must give exactly want: an error (-ECONNRESET) or a count. */
#define ASSERT_MODE_ERR(mode, expr, want)                                                           \
    do {                                                                                            \
        long long r_ = (long long)(expr), w_ = (long long)(want);                                   \
        if (r_ != w_)                                                                               \
            FAIL("%s: %s: want %lld (%s), got %lld (%s)", mode_name[mode], #expr, w_,               \
                 runner_err_name((int)w_), r_, runner_err_name((int)r_));                           \
    } while (0)

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Wait for cond, napping (not spinning: the CPUs belong to the code under test), for at most 20 s, more
 * under sanitizers: a liveness bound, not a measurement. */
#define NAP_UNTIL(cond)                                                                             \
    do {                                                                                            \
        int64_t until_ = weft_now() + (int64_t)(20 * timeout_scale()) * SEC;                        \
        while (!(cond)) {                                                                           \
            if (weft_now() > until_)                                                                \
                FAIL("still waiting for %s", #cond);                                                \
            nap_ms(1);                                                                              \
        }                                                                                           \
    } while (0)

static int tcp_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        FAIL("socket: %s", strerror(errno));
    return fd;
}

/* A TCP socket of near's, connected to far:port with weft_connect. */
static int connect_far(int port)
{
    int fd = tcp_socket();
    struct sockaddr_in a = netlab_addr(LAB_FAR_ADDR, port);
    ASSERT_OK(weft_connect(fd, (struct sockaddr *)&a, sizeof a, weft_deadline_in(10 * SEC)));
    return fd;
}

/* The far end of the connection just made to the listener lfd. */
static int accept_far(int lfd)
{
    int c = weft_accept(lfd, NULL, NULL, weft_deadline_in(10 * SEC));
    ASSERT_OK(c);
    return c;
}

static void set_int_opt(int fd, int level, int name, int v)
{
    if (setsockopt(fd, level, name, &v, sizeof v) != 0)
        FAIL("setsockopt: %s", strerror(errno));
}

/* connect_far with a small fixed send buffer, which a write fills at once. */
static int connect_far_small(int port)
{
    int fd = tcp_socket();
    set_int_opt(fd, SOL_SOCKET, SO_SNDBUF, 64 << 10);
    struct sockaddr_in a = netlab_addr(LAB_FAR_ADDR, port);
    ASSERT_OK(weft_connect(fd, (struct sockaddr *)&a, sizeof a, weft_deadline_in(10 * SEC)));
    return fd;
}

/* Close so that the peer gets a reset, not an end of stream. */
static void close_with_reset(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0)
        FAIL("SO_LINGER: %s", strerror(errno));
    ASSERT_OK(weft_close(fd));
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
    int peer = accept_far(lfd);
    char buf[8] = "";
    ASSERT_EQ(weft_write(fd, "ping", 4, weft_deadline_in(10 * SEC)), 4);
    ASSERT_EQ(weft_read(peer, buf, sizeof buf, weft_deadline_in(10 * SEC)), 4);
    ASSERT_EQ(weft_write(peer, "pong", 4, weft_deadline_in(10 * SEC)), 4);
    ASSERT_EQ(weft_read(fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), 4);
    ASSERT(memcmp(buf, "pong", 4) == 0);
    ASSERT_OK(weft_close(peer));
    ASSERT_OK(weft_close(fd));
    ASSERT_EQ(fds_now(), base);
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_close(lfd));
}

/* ------------------------------------------------------------------------------------------------ */
/* Deadlines                                                                                         */

static void connect_to_silence(int mode, void *arg)
{
    (void)arg;
    struct sockaddr_in a = netlab_addr(LAB_FAR_ADDR, 5001);
    int fd = tcp_socket();
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_connect(fd, (struct sockaddr *)&a, sizeof a, dl), t0, dl);
    ASSERT_OK(weft_close(fd));
    /* the dial helper times out the same way, and closes the socket it made */
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_tcp_dial(LAB_FAR_ADDR, 5001, dl), t0, dl);
    fd = tcp_socket();
    ASSERT_MODE_ERR(mode, weft_connect(fd, (struct sockaddr *)&a, sizeof a, WEFT_NOWAIT), -ETIMEDOUT);
    ASSERT_OK(weft_close(fd));
}

TEST(a_connect_to_a_host_that_drops_every_packet_times_out_at_its_deadline)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    netlab_run(&lab, LAB_FAR, "nft add rule inet weft input tcp dport 5001 drop");
    int lfd = netlab_listen(&lab, 5001); /* it is there; the SYNs never reach it */
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        run_as(mode_order[i], connect_to_silence, NULL);
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

typedef struct {
    int fd, peer;
    int lfd; /* the listener, for a test that needs another connection */
} conn_pair;

static const char unanswered_name[] = "weft-netfault.invalid"; /* in no hosts file (RFC 6761) */

static void dial_a_name_no_server_answers_for(int mode, void *arg)
{
    int *answered_at_once = arg;
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    int r = weft_tcp_dial(unanswered_name, 80, dl);
    if (r != -ETIMEDOUT && weft_now() < dl) {
        *answered_at_once = r;
        return;
    }
    ASSERT_TIMES_OUT(mode, r, t0, dl);
    ASSERT_MODE_ERR(mode, weft_tcp_dial(unanswered_name, 80, WEFT_NOWAIT), -ETIMEDOUT);
}

TEST(a_dial_whose_name_lookup_gets_no_answer_times_out_at_its_deadline)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    /* whatever server the resolver asks, no answer comes: one on loopback is dropped on the way in, one
     * elsewhere is routed to far, which does not forward. The abandoned lookup gives up after 1 s. */
    setenv("RES_OPTIONS", "timeout:1 attempts:1", 1);
    netlab_run(&lab, LAB_NEAR, "ip route add default via " LAB_FAR_ADDR);
    netlab_run(&lab, LAB_NEAR, "nft add rule inet weft input udp dport 53 drop ; "
                               "add rule inet weft input tcp dport 53 drop");
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        int answered_at_once = 0;
        run_as(mode_order[i], dial_a_name_no_server_answers_for, &answered_at_once);
        if (answered_at_once) {
            printf("skipped: the resolver here does not wait for a DNS server (a lookup failed at once: %s)\n",
                   runner_err_name(answered_at_once));
            if (weft_workers())
                ASSERT_OK(weft_shutdown());
            return;
        }
        /* the lookup the dial left goes on alone, then closes its socket and frees what it had */
        NAP_UNTIL(fds_now() == mode_fds);
        mode_end(mode_order[i]);
    }
}


static void read_from_silence(int mode, void *arg)
{
    conn_pair *c = arg;
    char buf[64];
    struct iovec iov = {buf, sizeof buf};
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_read(c->fd, buf, sizeof buf, dl), t0, dl);
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_readv(c->fd, &iov, 1, dl), t0, dl);
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_recv(c->fd, buf, sizeof buf, 0, dl), t0, dl);
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_fd_wait(c->fd, WEFT_READABLE, dl), t0, dl);
    ASSERT_MODE_ERR(mode, weft_read(c->fd, buf, sizeof buf, WEFT_NOWAIT), -ETIMEDOUT);
    /* a read that timed out leaves the connection as it was: what comes later is read */
    ASSERT_EQ(weft_write(c->peer, "late", 4, weft_deadline_in(10 * SEC)), 4);
    ASSERT_EQ(weft_read(c->fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), 4);
    ASSERT(memcmp(buf, "late", 4) == 0);
}

TEST(a_read_from_a_peer_that_sends_nothing_times_out_at_its_deadline)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5002);
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        conn_pair c = {.fd = connect_far(5002), .peer = accept_far(lfd)};
        run_as(mode_order[i], read_from_silence, &c);
        ASSERT_OK(weft_close(c.fd));
        ASSERT_OK(weft_close(c.peer));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

/* ------------------------------------------------------------------------------------------------ */
/* Resets                                                                                            */

static void *reset_soon(void *arg)
{
    nap_ms(50); /* most often the read is parked by then; if not, it meets the reset when it starts */
    close_with_reset(*(int *)arg);
    return NULL;
}

static void read_into_a_reset(int mode, void *arg)
{
    conn_pair *c = arg;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, reset_soon, &c->peer), 0);
    char buf[64];
    ASSERT_MODE_ERR(mode, weft_read(c->fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), -ECONNRESET);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    /* the reset was reported once; the connection is gone for writes after it, without SIGPIPE */
    ASSERT_MODE_ERR(mode, weft_write(c->fd, "x", 1, weft_deadline_in(10 * SEC)), -EPIPE);
}

static void write_after_a_reset(int mode, void *arg)
{
    conn_pair *c = arg;
    close_with_reset(c->peer);
    /* the reset counts as readable; the next call says what happened */
    ASSERT_GT(weft_fd_wait(c->fd, WEFT_READABLE, weft_deadline_in(10 * SEC)), 0);
    ASSERT_MODE_ERR(mode, weft_write(c->fd, "x", 1, weft_deadline_in(10 * SEC)), -ECONNRESET);
    ASSERT_MODE_ERR(mode, weft_write(c->fd, "x", 1, weft_deadline_in(10 * SEC)), -EPIPE);
}

TEST(a_peer_that_closes_with_linger_zero_resets_a_read_and_a_write_with_econnreset)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5003);
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        conn_pair c = {.fd = connect_far(5003), .peer = accept_far(lfd)};
        run_as(mode_order[i], read_into_a_reset, &c);
        ASSERT_OK(weft_close(c.fd));
        c = (conn_pair){.fd = connect_far(5003), .peer = accept_far(lfd)};
        run_as(mode_order[i], write_after_a_reset, &c);
        ASSERT_OK(weft_close(c.fd));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

/* Once the writer's bytes wait in its send buffer (the write has sent some already), the peer answers
 * and resets, as a server does that will not read a request it refuses. */
static const char refusal[] = "HTTP/1.1 413 Content Too Large\r\n\r\n";

static void *refuse_when_queued(void *arg)
{
    conn_pair *c = arg;
    int queued = 0;
    for (int i = 0; i < 20000 && queued < (32 << 10); i++) {
        if (ioctl(c->fd, SIOCOUTQ, &queued) != 0)
            FAIL("SIOCOUTQ: %s", strerror(errno));
        nap_ms(1);
    }
    if (queued < (32 << 10))
        FAIL("the writer's bytes never queued up (%d)", queued);
    ASSERT_EQ(send(c->peer, refusal, sizeof refusal - 1, MSG_NOSIGNAL), sizeof refusal - 1);
    close_with_reset(c->peer);
    return NULL;
}

static void write_into_a_reset(int mode, void *arg)
{
    conn_pair *c = arg;
    char *buf = calloc(1, BIG);
    ASSERT(buf);
    struct iovec iov[2] = {{buf, BIG / 2}, {buf + BIG / 2, BIG / 2}};
    for (int vectored = 0; vectored < 2; vectored++) {
        pthread_t t;
        ASSERT_EQ(pthread_create(&t, NULL, refuse_when_queued, c), 0);
        ssize_t n = vectored ? weft_writev(c->fd, iov, 2, weft_deadline_in(20 * SEC))
                             : weft_write(c->fd, buf, BIG, weft_deadline_in(20 * SEC));
        ASSERT_EQ(pthread_join(t, NULL), 0);
        if (n <= 0 || n >= BIG)
            FAIL("%s: a write%s cut short by a reset returned %zd (%s), not the count it wrote", mode_name[mode],
                 vectored ? "v" : "", n, runner_err_name((int)n));
        /* the count came back; then the answer that came before the reset, and the reset, not a clean
         * end of stream */
        ASSERT_MODE_ERR(mode, weft_read(c->fd, buf, 64, weft_deadline_in(10 * SEC)), sizeof refusal - 1);
        ASSERT(memcmp(buf, refusal, sizeof refusal - 1) == 0);
        ASSERT_MODE_ERR(mode, weft_read(c->fd, buf, 64, weft_deadline_in(10 * SEC)), -ECONNRESET);
        ASSERT_MODE_ERR(mode, weft_read(c->fd, buf, 64, weft_deadline_in(10 * SEC)), 0);
        ASSERT_MODE_ERR(mode, weft_write(c->fd, "x", 1, weft_deadline_in(10 * SEC)), -EPIPE);
        if (!vectored) { /* a fresh connection for the vectored write */
            ASSERT_OK(weft_close(c->fd));
            *c = (conn_pair){.fd = connect_far_small(5014), .peer = accept_far(c->lfd), .lfd = c->lfd};
        }
    }
    free(buf);
}

TEST(a_write_cut_short_by_a_reset_returns_its_count_then_reads_give_the_answer_and_the_reset)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5014);
    set_int_opt(lfd, SOL_SOCKET, SO_RCVBUF, 64 << 10); /* small buffers, filled at once */
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        conn_pair c = {.fd = connect_far_small(5014), .peer = accept_far(lfd), .lfd = lfd};
        run_as(mode_order[i], write_into_a_reset, &c);
        ASSERT_OK(weft_close(c.fd));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

static void talk_into_a_reset(int mode, void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    /* the request goes out; the network answers it with a reset */
    ASSERT_EQ(weft_write(fd, "request", 7, weft_deadline_in(10 * SEC)), 7);
    ASSERT_MODE_ERR(mode, weft_read(fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), -ECONNRESET);
}

static void connect_into_a_reset(int mode, void *arg)
{
    (void)arg;
    struct sockaddr_in a = netlab_addr(LAB_FAR_ADDR, 5004);
    int fd = tcp_socket();
    ASSERT_MODE_ERR(mode, weft_connect(fd, (struct sockaddr *)&a, sizeof a, weft_deadline_in(10 * SEC)),
                    -ECONNREFUSED);
    ASSERT_OK(weft_close(fd));
    ASSERT_MODE_ERR(mode, weft_tcp_dial(LAB_FAR_ADDR, 5004, weft_deadline_in(10 * SEC)), -ECONNREFUSED);
    /* a port with no listener: the far kernel's own reset */
    ASSERT_MODE_ERR(mode, weft_tcp_dial(LAB_FAR_ADDR, 5999, weft_deadline_in(10 * SEC)), -ECONNREFUSED);
}

TEST(a_reset_sent_by_the_network_gives_econnreset_and_refuses_a_connect)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5004);
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        conn_pair c = {.fd = connect_far(5004), .peer = accept_far(lfd)};
        /* from now on, far's firewall answers every packet to the port with a reset */
        netlab_run(&lab, LAB_FAR, "nft add rule inet weft input tcp dport 5004 reject with tcp reset");
        run_as(mode_order[i], talk_into_a_reset, &c.fd);
        run_as(mode_order[i], connect_into_a_reset, NULL);
        netlab_run(&lab, LAB_FAR, "nft flush chain inet weft input");
        ASSERT_OK(weft_close(c.fd));
        ASSERT_OK(weft_close(c.peer));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

/* ------------------------------------------------------------------------------------------------ */
/* Half-open connections: the peer is gone and says nothing                                         */

static void read_from_a_vanished_peer(int mode, void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    ASSERT_EQ(weft_write(fd, "request", 7, weft_deadline_in(10 * SEC)), 7); /* buffered: it goes nowhere */
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_read(fd, buf, sizeof buf, dl), t0, dl);
}

TEST(a_peer_whose_link_went_down_is_found_by_the_read_deadline)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5005);
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        conn_pair c = {.fd = connect_far(5005), .peer = accept_far(lfd)};
        char buf[8];
        ASSERT_EQ(weft_write(c.peer, "hi", 2, weft_deadline_in(10 * SEC)), 2); /* alive so far */
        ASSERT_EQ(weft_read(c.fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), 2);
        netlab_run(&lab, LAB_FAR, "ip link set wt1 down");
        run_as(mode_order[i], read_from_a_vanished_peer, &c.fd);
        netlab_run(&lab, LAB_FAR, "ip link set wt1 up");
        ASSERT_OK(weft_close(c.fd));
        ASSERT_OK(weft_close(c.peer));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

static void write_to_a_vanished_peer(int mode, void *arg)
{
    int fd = *(int *)arg;
    char *buf = calloc(1, BIG);
    ASSERT(buf);
    /* the send buffer takes the first bytes; the rest waits for acks that never come */
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    ssize_t r = weft_write(fd, buf, BIG, dl);
    int64_t t = weft_now();
    if (r <= 0 || r >= BIG)
        FAIL("%s: a write to a vanished peer returned %zd, not a partial count", mode_name[mode], r);
    ASSERT_GE(t, dl);
    /* nothing drains the buffer: the next write times out without writing */
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_write(fd, buf + r, (size_t)(BIG - r), dl), t0, dl);
    struct iovec iov = {buf, 4096};
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_writev(fd, &iov, 1, dl), t0, dl);
    t0 = weft_now();
    dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, weft_fd_wait(fd, WEFT_WRITABLE, dl), t0, dl);
    free(buf);
}

TEST(a_peer_whose_packets_are_all_dropped_is_found_by_the_write_deadline)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5006);
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        int fd = connect_far_small(5006);
        int peer = accept_far(lfd);
        netlab_run(&lab, LAB_FAR, "nft add rule inet weft input tcp dport 5006 drop ; "
                                  "add rule inet weft output tcp sport 5006 drop");
        run_as(mode_order[i], write_to_a_vanished_peer, &fd);
        netlab_run(&lab, LAB_FAR, "nft flush chain inet weft input ; flush chain inet weft output");
        close_with_reset(fd); /* no lingering over the unsent bytes */
        ASSERT_OK(weft_close(peer));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

static void read_forever_from_a_vanished_peer(int mode, void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    ASSERT_EQ(weft_write(fd, "request", 7, weft_deadline_in(10 * SEC)), 7);
    /* no deadline: only the kernel, giving up on the unacknowledged request, ends the wait */
    ASSERT_MODE_ERR(mode, weft_read(fd, buf, sizeof buf, WEFT_FOREVER), -ETIMEDOUT);
    ASSERT_MODE_ERR(mode, weft_write(fd, "more", 4, weft_deadline_in(10 * SEC)), -EPIPE);
}

static void write_forever_to_a_vanished_peer(int mode, void *arg)
{
    int fd = *(int *)arg;
    char *buf = calloc(1, BIG);
    ASSERT(buf);
    ssize_t n = weft_write(fd, buf, BIG, WEFT_FOREVER);
    if (n <= 0 || n >= BIG)
        FAIL("%s: a write the kernel gave up on returned %zd (%s), not the count it wrote", mode_name[mode], n,
             runner_err_name((int)n));
    /* the kernel's own -ETIMEDOUT ended it; the next call says so */
    ASSERT_MODE_ERR(mode, weft_read(fd, buf, 64, weft_deadline_in(10 * SEC)), -ETIMEDOUT);
    ASSERT_MODE_ERR(mode, weft_write(fd, buf, 64, weft_deadline_in(10 * SEC)), -EPIPE);
    free(buf);
}

TEST(calls_with_no_deadline_wake_when_the_kernel_gives_up_on_a_vanished_peer)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5015);
    /* the peer vanishes: every packet of its port dropped (its link stays up, so no neighbour lookup
     * failure changes what the kernel reports when it gives up) */
    static const char vanish[] = "nft add rule inet weft input tcp dport 5015 drop ; "
                                 "add rule inet weft output tcp sport 5015 drop";
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        conn_pair c = {.fd = connect_far(5015), .peer = accept_far(lfd)};
        set_int_opt(c.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 300); /* ms unacknowledged before it gives up */
        char buf[64];
        ASSERT_EQ(weft_write(c.peer, "hi", 2, weft_deadline_in(10 * SEC)), 2);
        ASSERT_EQ(weft_read(c.fd, buf, sizeof buf, weft_deadline_in(10 * SEC)), 2); /* a short read */
        netlab_run(&lab, LAB_FAR, "%s", vanish);
        run_as(mode_order[i], read_forever_from_a_vanished_peer, &c.fd);
        netlab_run(&lab, LAB_FAR, "nft flush chain inet weft input ; flush chain inet weft output");
        ASSERT_OK(weft_close(c.fd));
        ASSERT_OK(weft_close(c.peer));
        /* a write parked on a full buffer, the same way */
        c = (conn_pair){.fd = connect_far_small(5015), .peer = accept_far(lfd)};
        set_int_opt(c.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 300);
        netlab_run(&lab, LAB_FAR, "%s", vanish);
        run_as(mode_order[i], write_forever_to_a_vanished_peer, &c.fd);
        netlab_run(&lab, LAB_FAR, "nft flush chain inet weft input ; flush chain inet weft output");
        ASSERT_OK(weft_close(c.fd));
        ASSERT_OK(weft_close(c.peer));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

/* ------------------------------------------------------------------------------------------------ */
/* Lossy and slow links: the bytes arrive whole and in order                                         */

static unsigned char pattern_at(unsigned seed, size_t i)
{
    return (unsigned char)((i * 2654435761u + seed * 40503u) >> 13);
}

static weft_wg_t echo_wg = WEFT_WG_INIT;

static void *echo_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf, weft_deadline_in(60 * SEC))) > 0)
        if (weft_write(fd, buf, (size_t)n, weft_deadline_in(60 * SEC)) != n)
            break;
    ASSERT_OK(weft_close(fd));
    weft_wg_done(&echo_wg);
    return NULL;
}

enum { STREAMS = 8, STREAM_BYTES = 64 << 10 };

typedef struct {
    int fd;
    unsigned seed;
} stream;

static void *send_and_check(void *arg)
{
    stream *st = arg;
    unsigned char *out = malloc(STREAM_BYTES), *back = malloc(STREAM_BYTES);
    ASSERT(out && back);
    for (size_t i = 0; i < STREAM_BYTES; i++)
        out[i] = pattern_at(st->seed, i);
    int64_t dl = weft_deadline_in(30 * SEC); /* a liveness bound: losses only slow the bytes down */
    for (size_t off = 0; off < STREAM_BYTES; off += 8192)
        ASSERT_EQ(weft_write(st->fd, out + off, 8192, dl), 8192);
    size_t have = 0;
    while (have < STREAM_BYTES) {
        ssize_t n = weft_read(st->fd, back + have, STREAM_BYTES - have, dl);
        if (n <= 0)
            FAIL("stream %u: read %zd (%s) after %zu of %d bytes", st->seed, n, runner_err_name((int)n), have,
                 STREAM_BYTES);
        have += (size_t)n;
    }
    for (size_t i = 0; i < STREAM_BYTES; i++)
        if (back[i] != out[i])
            FAIL("stream %u: byte %zu came back as %#x, not %#x", st->seed, i, back[i], out[i]);
    free(out);
    free(back);
    return NULL;
}

TEST(bytes_cross_a_link_that_drops_a_fifth_of_its_packets_whole_and_in_order)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5007);
    start_workers(2);
    int base = fds_now();
    stream st[STREAMS];
    for (int i = 0; i < STREAMS; i++) {
        st[i] = (stream){connect_far(5007), (unsigned)i + 1};
        weft_wg_add(&echo_wg, 1);
        ASSERT_OK(weft_go(echo_connection, (void *)(intptr_t)accept_far(lfd)));
    }
    netlab_run(&lab, LAB_FAR, "nft add rule inet weft input numgen random mod 100 < 20 drop ; "
                              "add rule inet weft output numgen random mod 100 < 20 drop");
    weft_fiber_t f[STREAMS];
    for (int i = 0; i < STREAMS; i++)
        ASSERT_OK(weft_spawn(&f[i], NULL, send_and_check, &st[i]));
    for (int i = 0; i < STREAMS; i++)
        ASSERT_OK(weft_join(f[i], NULL));
    netlab_run(&lab, LAB_FAR, "nft flush chain inet weft input ; flush chain inet weft output");
    for (int i = 0; i < STREAMS; i++)
        ASSERT_OK(weft_close(st[i].fd));
    ASSERT_OK(weft_wg_wait(&echo_wg, weft_deadline_in(30 * SEC))); /* each echo saw its end and closed */
    ASSERT_EQ(fds_now(), base);
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_close(lfd));
}

enum { SLOW_BYTES = 2 << 20 };

typedef struct {
    int writer, reader; /* near's end, far's end */
    _Atomic int go;     /* the reader may start */
    size_t got;         /* bytes it read, all in the pattern */
} slow_link;

static void *read_slowly(void *arg)
{
    slow_link *r = arg;
    while (!atomic_load(&r->go))
        nap_ms(1);
    unsigned char buf[16384];
    struct pollfd p = {.fd = r->reader, .events = POLLIN};
    while (r->got < SLOW_BYTES) {
        if (poll(&p, 1, 30000) != 1)
            FAIL("the reader waited 30 s for bytes, after %zu", r->got);
        ssize_t n = recv(r->reader, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n <= 0)
            FAIL("the reader's recv: %zd (%s) after %zu bytes", n, strerror(errno), r->got);
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern_at(7, r->got + (size_t)i))
                FAIL("byte %zu came as %#x, not %#x", r->got + (size_t)i, buf[i], pattern_at(7, r->got + (size_t)i));
        r->got += (size_t)n;
    }
    return NULL;
}

static void write_through_a_slow_link(int mode, void *arg)
{
    slow_link *r = arg;
    int fd = r->writer;
    unsigned char *buf = malloc(SLOW_BYTES);
    ASSERT(buf);
    for (size_t i = 0; i < SLOW_BYTES; i++)
        buf[i] = pattern_at(7, i);
    /* the reader has not started: the buffers take a part, and the write returns it at the deadline */
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    ssize_t n = weft_write(fd, buf, SLOW_BYTES, dl);
    if (n <= 0 || n >= SLOW_BYTES)
        FAIL("%s: a write that passed its deadline returned %zd, not a partial count", mode_name[mode], n);
    ASSERT_GE(weft_now(), dl);
    /* the rest follows, through the rate limit, from where it stopped */
    atomic_store(&r->go, 1);
    ASSERT_EQ(weft_write(fd, buf + n, (size_t)(SLOW_BYTES - n), weft_deadline_in(60 * SEC)), SLOW_BYTES - n);
    free(buf);
}

TEST(a_write_through_a_rate_limited_link_returns_its_count_at_the_deadline_and_the_rest_follows)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    netlab_run(&lab, LAB_NEAR, "tc qdisc add dev wt0 root tbf rate 32mbit burst 32kb latency 50ms");
    int lfd = netlab_listen(&lab, 5008);
    set_int_opt(lfd, SOL_SOCKET, SO_RCVBUF, 64 << 10); /* fixed buffers: they cannot take it all */
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        int fd = connect_far_small(5008);
        slow_link link = {.writer = fd, .reader = accept_far(lfd)};
        pthread_t t;
        ASSERT_EQ(pthread_create(&t, NULL, read_slowly, &link), 0);
        run_as(mode_order[i], write_through_a_slow_link, &link);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        ASSERT_EQ(link.got, SLOW_BYTES);
        ASSERT_OK(weft_close(fd));
        ASSERT_OK(weft_close(link.reader));
        mode_end(mode_order[i]);
    }
    ASSERT_OK(weft_close(lfd));
}

/* ------------------------------------------------------------------------------------------------ */
/* Many failures at once, and a close while calls wait on a dead connection                         */

enum { DIAL_DROPPED, DIAL_REJECTED, DIAL_NO_LISTENER, READ_SILENCE, KINDS };
static const int kind_port[KINDS] = {5009, 5010, 5998, 5011};
static const int kind_want[KINDS] = {-ETIMEDOUT, -ECONNREFUSED, -ECONNREFUSED, -ETIMEDOUT};

typedef struct {
    int kind, r;
} failing_call;

static void *fail_once(void *arg)
{
    failing_call *c = arg;
    int64_t dl = c->kind == DIAL_DROPPED ? weft_deadline_in(WAIT) : weft_deadline_in(10 * SEC);
    c->r = weft_tcp_dial(LAB_FAR_ADDR, kind_port[c->kind], dl);
    if (c->kind == READ_SILENCE && c->r >= 0) {
        int fd = c->r;
        char buf[16];
        c->r = (int)weft_read(fd, buf, sizeof buf, weft_deadline_in(WAIT));
        ASSERT_OK(weft_close(fd));
    }
    return NULL;
}

TEST(no_fd_is_left_behind_by_many_connections_failing_at_once)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    netlab_run(&lab, LAB_FAR, "nft add rule inet weft input tcp dport 5009 drop ; "
                              "add rule inet weft input tcp dport 5010 reject with tcp reset");
    int lfd = netlab_listen(&lab, 5011); /* it never accepts: the kernel completes the handshakes */
    ASSERT_EQ(listen(lfd, 4096), 0);
    start_workers(2);
    int base = fds_now();
    enum { EACH = 16 };
    static failing_call calls[KINDS * EACH];
    weft_fiber_t f[KINDS * EACH];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < KINDS * EACH; i++) {
            calls[i] = (failing_call){.kind = i % KINDS};
            ASSERT_OK(weft_spawn(&f[i], NULL, fail_once, &calls[i]));
        }
        for (int i = 0; i < KINDS * EACH; i++) {
            ASSERT_OK(weft_join(f[i], NULL));
            if (calls[i].r != kind_want[calls[i].kind])
                FAIL("round %d, call %d (to port %d): want %s, got %d (%s)", round, i, kind_port[calls[i].kind],
                     runner_err_name(kind_want[calls[i].kind]), calls[i].r, runner_err_name(calls[i].r));
        }
        int now = fds_now();
        if (now != base) {
            fds_count(1);
            FAIL("round %d: %d fds open after, %d before", round, now, base);
        }
    }
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_close(lfd));
}

typedef struct {
    int fd;
    ssize_t r;
} parked_call;

static void *read_forever(void *arg)
{
    parked_call *c = arg;
    char buf[64];
    c->r = weft_read(c->fd, buf, sizeof buf, WEFT_FOREVER);
    return NULL;
}

static void *write_forever(void *arg)
{
    parked_call *c = arg;
    char *buf = calloc(1, BIG);
    ASSERT(buf);
    c->r = weft_write(c->fd, buf, BIG, WEFT_FOREVER);
    free(buf);
    return NULL;
}

TEST(weft_close_wakes_the_calls_parked_on_a_connection_to_a_vanished_peer)
{
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int lfd = netlab_listen(&lab, 5012);
    start_workers(2);
    int base = fds_now();
    int fd = connect_far_small(5012);
    int peer = accept_far(lfd);
    netlab_run(&lab, LAB_FAR, "ip link set wt1 down");
    parked_call rd = {fd, 0}, wr = {fd, 0};
    weft_fiber_t fr, fw;
    ASSERT_OK(weft_spawn(&fr, NULL, read_forever, &rd));
    ASSERT_OK(weft_spawn(&fw, NULL, write_forever, &wr));
    NAP_UNTIL(weft_fiber_state(fr) == WEFT_WAITING && weft_fiber_state(fw) == WEFT_WAITING);
    ASSERT_OK(weft_close(fd));
    ASSERT_OK(weft_join(fr, NULL));
    ASSERT_OK(weft_join(fw, NULL));
    ASSERT_ERR(rd.r, -EBADF);
    if (wr.r <= 0 || wr.r >= BIG) /* some bytes went into the buffer before it parked: their count */
        FAIL("the parked write returned %zd (%s), not the count it wrote", wr.r, runner_err_name((int)wr.r));
    ASSERT_OK(weft_close(peer));
    ASSERT_EQ(fds_now(), base);
    ASSERT_OK(weft_shutdown());
    ASSERT_OK(weft_close(lfd));
}

/* ------------------------------------------------------------------------------------------------ */
/* An overloaded listener                                                                            */

/* A Unix listener with an abstract name (it lives in the test's network namespace, with no file). */
static int overloaded_listener(struct sockaddr_un *un, socklen_t *len)
{
    memset(un, 0, sizeof *un);
    un->sun_family = AF_UNIX;
    int n = snprintf(un->sun_path + 1, sizeof un->sun_path - 1, "weft-netfault-%d", (int)getpid());
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)un, *len) != 0 || listen(l, 1) != 0)
        FAIL("a Unix listener: %s", strerror(errno));
    return l;
}

typedef struct {
    int lfd;
    struct sockaddr_un un;
    socklen_t len;
    int queued[16], nqueued;
} unix_backlog;

static int unix_dial(const unix_backlog *b, int64_t deadline)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    int r = weft_connect(fd, (const struct sockaddr *)&b->un, b->len, deadline);
    if (r < 0) {
        ASSERT_OK(weft_close(fd));
        return r;
    }
    return fd;
}

static void *accept_one_soon(void *arg)
{
    unix_backlog *b = arg;
    nap_ms(50);
    int c = accept4(b->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        FAIL("accept: %s", strerror(errno));
    close(c);
    return NULL;
}

static void dial_into_a_full_backlog(int mode, void *arg)
{
    unix_backlog *b = arg;
    /* fill the backlog: a dial that cannot connect at once then fails at once */
    int r;
    while ((r = unix_dial(b, WEFT_NOWAIT)) >= 0) {
        ASSERT_LT(b->nqueued, 16);
        b->queued[b->nqueued++] = r;
    }
    ASSERT_MODE_ERR(mode, r, -ETIMEDOUT);
    ASSERT_GT(b->nqueued, 0);
    int64_t t0 = weft_now(), dl = t0 + WAIT;
    ASSERT_TIMES_OUT(mode, unix_dial(b, dl), t0, dl);
    /* room comes while a dial waits: it connects, long before its deadline */
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, accept_one_soon, b), 0);
    int fd = unix_dial(b, weft_deadline_in(20 * SEC));
    ASSERT_EQ(pthread_join(t, NULL), 0);
    if (fd < 0)
        FAIL("%s: a dial that room came for failed: %d (%s)", mode_name[mode], fd, runner_err_name(fd));
    ASSERT_OK(weft_close(fd));
    for (int i = 0; i < b->nqueued; i++)
        ASSERT_OK(weft_close(b->queued[i]));
    b->nqueued = 0;
}

TEST(a_connect_to_a_listener_with_a_full_backlog_waits_for_room_until_its_deadline)
{
    netlab lab; /* only for a namespace of the test's own, where the abstract name cannot collide */
    if (!netlab_up(&lab))
        return;
    for (int i = 0; i < MODES; i++) {
        mode_begin(mode_order[i]);
        unix_backlog b = {.nqueued = 0};
        b.lfd = overloaded_listener(&b.un, &b.len);
        run_as(mode_order[i], dial_into_a_full_backlog, &b);
        close(b.lfd); /* the connections it still held go with it */
        mode_end(mode_order[i]);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* The example servers keep serving beside faulty clients                                            */
/*
 * The server runs in near on one worker and listens on its 127.0.0.1, where the healthy client talks to
 * it. The faulty clients are in far: near's firewall sends what comes in over the link for the server's
 * port on to 127.0.0.1 (DNAT, with route_localnet on wt0), so their connections cross the link, and the
 * faults on it reach them alone. The servers are run with the flags they have always had (-p, -w).
 */

enum fault { BEHIND_DROPS, BEHIND_A_RATE_LIMIT, VANISHED };
static const char *const fault_name[] = {"behind heavy drops", "behind a rate limit", "vanished mid-request"};

#define SERVER_PORT 7000

/* the server's 200: the status line, a Date field of fixed length (RFC 9110 5.6.7), then the rest */
static const char http_status[] = "HTTP/1.1 200 OK\r\nDate: ";
static const char http_rest[] = " GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
#define HTTP_DATE_LEN 25 /* "Thu, 03 Dec 2026 05:31:35" */
static const char http_get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

typedef struct {
    int fd;
    const char *load; /* sent over and over (once, with once) */
    size_t load_len;
    int once;
    int reads;        /* reads what comes back; else never reads */
    _Atomic int stop;
    _Atomic int stuck;      /* it has had nothing sent for a while */
    _Atomic int blocked;    /* its sends have had to wait: the way to the server is full */
    _Atomic long received;  /* bytes the server sent it since it began */
    pthread_t thread;
} faulty_client;

static void *misbehave(void *arg)
{
    faulty_client *c = arg;
    char buf[16384];
    size_t off = 0;
    int idle = 0, done = 0;
    while (!atomic_load(&c->stop)) {
        struct pollfd p = {.fd = c->fd, .events = (short)((done ? 0 : POLLOUT) | (c->reads ? POLLIN : 0))};
        int n = poll(&p, 1, 10);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0 || !(p.revents & POLLOUT)) {
            if (!done)
                atomic_store(&c->blocked, 1);
            if (++idle >= 20)
                atomic_store(&c->stuck, 1);
        }
        if (n <= 0)
            continue;
        if (p.revents & POLLIN) {
            ssize_t k = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (k == 0 || (k < 0 && errno != EAGAIN))
                break;
            if (k > 0)
                atomic_fetch_add(&c->received, k);
        }
        if (p.revents & POLLOUT) {
            ssize_t k = send(c->fd, c->load + off, c->load_len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN)
                break;
            if (k >= 0 && (size_t)k < c->load_len - off)
                atomic_store(&c->blocked, 1); /* the send buffer took only a part */
            if (k > 0) {
                idle = 0;
                off += (size_t)k;
                if (off == c->load_len) {
                    off = 0;
                    done = c->once;
                }
            }
        }
        if (p.revents & (POLLERR | POLLHUP))
            break;
    }
    atomic_store(&c->stuck, 1);
    return NULL;
}

static int wait_readable(int fd, int seconds)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, (int)(seconds * 1000 * timeout_scale()));
}

/* Read exactly n bytes, each within a liveness bound. */
static void recv_exact(int fd, char *buf, size_t n, const char *who)
{
    size_t have = 0;
    while (have < n) {
        if (wait_readable(fd, 10) != 1)
            FAIL("%s: no answer within 10 s (%zu of %zu bytes came)", who, have, n);
        ssize_t k = recv(fd, buf + have, n - have, 0);
        if (k <= 0)
            FAIL("%s: recv %zd (%s) after %zu of %zu bytes", who, k, k < 0 ? strerror(errno) : "closed", have, n);
        have += (size_t)k;
    }
    buf[n] = '\0';
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            FAIL("send: %s", strerror(errno));
        p += k;
        n -= (size_t)k;
    }
}

static int dial_blocking(int fd, const char *ip, int port)
{
    struct sockaddr_in a = netlab_addr(ip, port);
    return connect(fd, (struct sockaddr *)&a, sizeof a);
}

/* One request (an echo, or a GET) and its whole answer. */
static void exchange(int fd, int http, int n, const char *who)
{
    char msg[128], back[256];
    if (http) {
        send_all(fd, http_get, sizeof http_get - 1);
        size_t n_ok = sizeof http_status - 1 + HTTP_DATE_LEN + sizeof http_rest - 1;
        recv_exact(fd, back, n_ok, who);
        if (memcmp(back, http_status, sizeof http_status - 1) != 0 || strcmp(back + n_ok - (sizeof http_rest - 1), http_rest) != 0)
            FAIL("%s: not the server's 200: %s", who, back);
    } else {
        int len = snprintf(msg, sizeof msg, "hello %d from %s", n, who);
        if (len >= (int)sizeof msg)
            len = (int)sizeof msg - 1;
        send_all(fd, msg, (size_t)len);
        recv_exact(fd, back, (size_t)len, who);
        ASSERT_STR_EQ(back, msg);
    }
}

/* The healthy client: fresh connections to 127.0.0.1, a few requests on each, every answer whole. */
static void serve_a_healthy_client(int http, const char *when)
{
    for (int c = 0; c < 8; c++) {
        int fd = tcp_socket();
        if (dial_blocking(fd, "127.0.0.1", SERVER_PORT) != 0)
            FAIL("%s: the healthy client cannot connect: %s", when, strerror(errno));
        set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
        for (int k = 0; k < 4; k++)
            exchange(fd, http, c * 4 + k, when);
        close(fd);
    }
}

static void serve_beside(const char *server, int fault)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/../examples/%s", runner_bin_dir(), server);
    if (access(path, X_OK) != 0) {
        printf("skipped: %s is not built (the build has WEFT_BUILD_EXAMPLES=OFF)\n", path);
        return;
    }
    netlab lab;
    if (!netlab_up(&lab))
        return;
    int http = strcmp(server, "http-server") == 0;
    char out[2048];
    int st = netlab_try(&lab, LAB_NEAR, out, sizeof out,
                        "nft add table ip weftnat ; "
                        "add chain ip weftnat prerouting { type nat hook prerouting priority -100 ; } ; "
                        "add rule ip weftnat prerouting iifname wt0 tcp dport %d dnat to 127.0.0.1",
                        SERVER_PORT);
    FILE *f = fopen("/proc/sys/net/ipv4/conf/wt0/route_localnet", "we"); /* near's: this thread is in it */
    if (st != 0 || !f || fputs("1", f) < 0 || fclose(f) != 0) {
        printf("skipped: cannot pass connections from the link to 127.0.0.1 (nft nat, route_localnet): %s\n",
               st ? out : strerror(errno));
        return;
    }

    char port[16];
    snprintf(port, sizeof port, "%d", SERVER_PORT);
    char *argv[] = {path, "-p", port, "-w", "1", "-g", "1", NULL}; /* the faulty clients stay busy: a short drain */
    pid_t pid = netlab_spawn(argv);
    for (int i = 0;; i++) {
        int fd = tcp_socket();
        int r = dial_blocking(fd, "127.0.0.1", SERVER_PORT);
        close(fd);
        if (r == 0)
            break;
        int ws;
        if (waitpid(pid, &ws, WNOHANG) == pid)
            FAIL("%s ended before it accepted (status %#x)", server, ws);
        if (i == 10000)
            FAIL("%s never accepted on port %d", server, SERVER_PORT);
        nap_ms(1);
    }
    serve_a_healthy_client(http, "before any fault");

    /* the faulty clients connect while the link is sound, and are served once */
    enum { FAULTY = 3 };
    static char load[64 << 10];
    for (size_t i = 0; i < sizeof load; i++)
        load[i] = (char)('a' + i % 26);
    static char pipelined[40 * (sizeof http_get - 1)];
    for (int i = 0; i < 40; i++)
        memcpy(pipelined + i * (sizeof http_get - 1), http_get, sizeof http_get - 1);
    static const char partial[] = "GET / HTTP/1.1\r\nHost: x\r\nX-Half: of a head that never ends";
    faulty_client fc[FAULTY];
    for (int i = 0; i < FAULTY; i++) {
        fc[i] = (faulty_client){.fd = netlab_socket(&lab, LAB_FAR, SOCK_STREAM), .reads = fault != VANISHED};
        if (dial_blocking(fc[i].fd, LAB_NEAR_ADDR, SERVER_PORT) != 0)
            FAIL("a far client cannot reach the server over the link: %s", strerror(errno));
        exchange(fc[i].fd, http, i, "a far client over the sound link");
        if (http && fault == VANISHED && i == 0) {
            fc[i].load = partial; /* half a request, and never the rest */
            fc[i].load_len = sizeof partial - 1;
            fc[i].once = 1;
        } else if (http) {
            fc[i].load = pipelined;
            fc[i].load_len = sizeof pipelined;
        } else {
            fc[i].load = load;
            fc[i].load_len = sizeof load;
        }
    }

    if (fault == BEHIND_DROPS) {
        netlab_run(&lab, LAB_FAR, "nft add rule inet weft input numgen random mod 100 < 50 drop ; "
                                  "add rule inet weft output numgen random mod 100 < 50 drop");
    } else if (fault == BEHIND_A_RATE_LIMIT) {
        netlab_run(&lab, LAB_FAR, "tc qdisc add dev wt1 root tbf rate 1mbit burst 4kb latency 100ms");
        netlab_run(&lab, LAB_NEAR, "tc qdisc add dev wt0 root tbf rate 1mbit burst 4kb latency 100ms");
    }
    for (int i = 0; i < FAULTY; i++)
        ASSERT_EQ(pthread_create(&fc[i].thread, NULL, misbehave, &fc[i]), 0);
    if (fault != VANISHED) {
        /* the server works for them through the fault: their pipes are full, and answers still come */
        for (int i = 0; i < FAULTY; i++)
            NAP_UNTIL(atomic_load(&fc[i].blocked) && atomic_load(&fc[i].received) > 0);
    } else {
        /* they send until the server stops taking it (it waits for the rest of a head, or for them to
         * read its echo), then vanish: their link goes down, and their closes never arrive */
        for (int i = 0; i < FAULTY; i++)
            NAP_UNTIL(atomic_load(&fc[i].stuck));
        netlab_run(&lab, LAB_FAR, "ip link set wt1 down");
        for (int i = 0; i < FAULTY; i++) {
            atomic_store(&fc[i].stop, 1);
            ASSERT_EQ(pthread_join(fc[i].thread, NULL), 0);
            close(fc[i].fd);
        }
    }

    char when[96];
    snprintf(when, sizeof when, "beside clients %s", fault_name[fault]);
    serve_a_healthy_client(http, when);

    int ws;
    ASSERT_EQ(waitpid(pid, &ws, WNOHANG), 0); /* still running */
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    ASSERT_EQ(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        FAIL("%s did not exit 0 on SIGTERM (status %#x)", server, ws);
    if (fault != VANISHED)
        for (int i = 0; i < FAULTY; i++) {
            atomic_store(&fc[i].stop, 1);
            ASSERT_EQ(pthread_join(fc[i].thread, NULL), 0);
            close(fc[i].fd);
        }
}

TEST(the_echo_server_serves_a_healthy_client_beside_clients_behind_heavy_drops)
{
    serve_beside("echo-server", BEHIND_DROPS);
}

TEST(the_echo_server_serves_a_healthy_client_beside_clients_behind_a_rate_limit)
{
    serve_beside("echo-server", BEHIND_A_RATE_LIMIT);
}

TEST(the_echo_server_serves_a_healthy_client_beside_clients_that_vanished_mid_request)
{
    serve_beside("echo-server", VANISHED);
}

TEST(the_http_server_serves_a_healthy_client_beside_clients_behind_heavy_drops)
{
    serve_beside("http-server", BEHIND_DROPS);
}

TEST(the_http_server_serves_a_healthy_client_beside_clients_behind_a_rate_limit)
{
    serve_beside("http-server", BEHIND_A_RATE_LIMIT);
}

TEST(the_http_server_serves_a_healthy_client_beside_clients_that_vanished_mid_request)
{
    serve_beside("http-server", VANISHED);
}
