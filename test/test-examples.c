/*
 * The example servers: the HTTP request parser on its own (valid, incomplete and malformed heads, every
 * prefix and random bytes in buffers of exactly their length, so a read past the end shows under ASan),
 * then the built http-server and echo-server over real sockets and real clients (ab, curl): keep-alive
 * (HTTP/1.0 too), pipelining, bodies, 100-continue, HEAD, Connection options, Host, Date, split requests,
 * 400, 417 and 431 answers, the lingering close, the request deadline (408) and the idle limit, the drain
 * on SIGTERM, many connections at once, and the command line's errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "http-parse.h"
#include "runner.h"

#define MAX_BODY (1 << 20)

/* Parse text from a heap buffer of exactly its length (kept until the next call: req points into it). */
static long parse_exact(const char *text, size_t len, http_request *req)
{
    static char *buf;
    free(buf);
    buf = malloc(len ? len : 1);
    memcpy(buf, text, len);
    return http_parse_request(buf, len, MAX_BODY, req);
}

static long parse(const char *text, http_request *req)
{
    return parse_exact(text, strlen(text), req);
}

TEST(a_simple_request_is_parsed_and_keeps_the_connection_open)
{
    const char *text = "GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n";
    http_request req;
    ASSERT_EQ(parse(text, &req), strlen(text));
    ASSERT_EQ(req.method_len, 3);
    ASSERT(memcmp(req.method, "GET", 3) == 0);
    ASSERT_EQ(req.target_len, 11);
    ASSERT_EQ(req.minor_version, 1);
    ASSERT_EQ(req.content_length, 0);
    ASSERT(req.keep_alive);
}

TEST(connection_options_and_the_version_decide_keep_alive)
{
    http_request req;
    ASSERT_GT(parse("GET / HTTP/1.0\r\n\r\n", &req), 0);
    ASSERT(!req.keep_alive);
    ASSERT_GT(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req), 0);
    ASSERT(req.keep_alive);
    ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &req), 0);
    ASSERT(!req.keep_alive);
    ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: x\r\nconnection:Upgrade,  CLOSE \r\n\r\n", &req), 0);
    ASSERT(!req.keep_alive);
    ASSERT_GT(parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", &req), 0);
    ASSERT(req.keep_alive);
}

TEST(any_close_option_closes_in_one_field_or_two)
{
    static const char *const closing[] = {
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, keep-alive\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: Keep-Alive,close\r\n\r\n",
    };
    http_request req;
    for (size_t i = 0; i < sizeof closing / sizeof closing[0]; i++) {
        ASSERT_EQ(parse(closing[i], &req), strlen(closing[i]));
        if (req.keep_alive)
            FAIL("kept alive: %s", closing[i]);
    }
}

TEST(an_http11_request_needs_exactly_one_host_field)
{
    http_request req;
    ASSERT_EQ(parse("GET / HTTP/1.1\r\n\r\n", &req), HTTP_BAD);
    ASSERT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &req), HTTP_BAD);
    ASSERT_EQ(parse("GET / HTTP/1.1\r\nhost: a\r\nX: y\r\nHOST: a\r\n\r\n", &req), HTTP_BAD);
    ASSERT_EQ(parse("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", &req), HTTP_BAD);
    ASSERT_GT(parse("GET / HTTP/1.0\r\n\r\n", &req), 0); /* HTTP/1.0 may leave it out */
    ASSERT_GT(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n", &req), 0); /* empty is allowed */
}

TEST(empty_lines_before_the_request_line_are_ignored)
{
    const char *text = "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    http_request req;
    ASSERT_EQ(parse(text, &req), strlen(text));
    ASSERT_EQ(req.method_len, 3);
    ASSERT(memcmp(req.method, "GET", 3) == 0);
    ASSERT_EQ(parse("\r\n", &req), HTTP_INCOMPLETE);
    ASSERT_EQ(parse("\r\n\r", &req), HTTP_INCOMPLETE);
    ASSERT_EQ(parse("\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &req), HTTP_BAD); /* bare LF */
    ASSERT_EQ(parse("\r\n GET / HTTP/1.1\r\nHost: x\r\n\r\n", &req), HTTP_BAD);
}

TEST(expect_100_continue_is_told_apart_from_other_expectations)
{
    http_request req;
    ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n", &req), 0);
    ASSERT_EQ(req.expect, HTTP_EXPECT_CONTINUE);
    ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", &req), 0);
    ASSERT_EQ(req.expect, HTTP_EXPECT_OTHER);
    ASSERT_GT(parse("POST / HTTP/1.1\r\nHost: x\r\n\r\n", &req), 0);
    ASSERT_EQ(req.expect, HTTP_EXPECT_NONE);
    /* HTTP/1.0 has no 100 Continue: the field is ignored (RFC 9110 10.1.1) */
    ASSERT_GT(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req), 0);
    ASSERT_EQ(req.expect, HTTP_EXPECT_NONE);
}

TEST(the_head_length_excludes_the_body_and_pipelined_requests)
{
    const char *first = "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
    char text[256];
    snprintf(text, sizeof text, "%shelloGET / HTTP/1.1\r\nHost: x\r\n\r\n", first);
    http_request req;
    ASSERT_EQ(parse(text, &req), strlen(first));
    ASSERT_EQ(req.content_length, 5);
    ASSERT_EQ(parse(text + strlen(first) + 5, &req), strlen("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
}

TEST(every_prefix_of_a_valid_request_is_incomplete)
{
    const char *text = "PUT /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nX-Empty:\r\n\r\n";
    size_t len = strlen(text);
    http_request req;
    for (size_t n = 0; n < len; n++)
        if (parse_exact(text, n, &req) != HTTP_INCOMPLETE)
            FAIL("the first %zu bytes were not taken as incomplete", n);
    ASSERT_EQ(parse_exact(text, len, &req), len);
}

static const char *const malformed[] = {
    "GET  / HTTP/1.1\r\n\r\n",                             /* two spaces */
    " / HTTP/1.1\r\n\r\n",                                 /* no method */
    "GET HTTP/1.1\r\n\r\n",                                /* no target */
    "GET / HTTP/2.0\r\n\r\n",                              /* another version */
    "GET / http/1.1\r\n\r\n",                              /* the version is case-sensitive */
    "GET / HTTP/1.1 \r\n\r\n",                             /* space after the version */
    "GET / HTTP/1.1\n\n",                                  /* bare LF */
    "\r\n\n",                                              /* bare LF after an empty line */
    "GET / HTTP/1.1\r\rX",                                 /* bare CR */
    "GET /\x01 HTTP/1.1\r\n\r\n",                          /* control byte in the target */
    "G(T / HTTP/1.1\r\n\r\n",                              /* not a token */
    "GET / HTTP/1.1\r\nHost : x\r\n\r\n",                  /* space before the colon */
    "GET / HTTP/1.1\r\nHost x\r\n\r\n",                    /* no colon */
    "GET / HTTP/1.1\r\n: x\r\n\r\n",                       /* no field name */
    "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",           /* obsolete line folding */
    "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",                  /* DEL in a value */
    "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",       /* not a number */
    "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",       /* negative */
    "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",          /* empty */
    "POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",  /* larger than the limit */
    "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", /* repeated */
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",             /* not taken */
};

TEST(malformed_requests_are_rejected_and_no_prefix_of_one_is_accepted)
{
    http_request req;
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        size_t len = strlen(malformed[i]);
        long r = parse_exact(malformed[i], len, &req);
        if (r != HTTP_BAD)
            FAIL("malformed request %zu gave %ld, not HTTP_BAD: %s", i, r, malformed[i]);
        for (size_t n = 0; n < len; n++)
            if (parse_exact(malformed[i], n, &req) > 0)
                FAIL("a prefix of %zu bytes of malformed request %zu was accepted", n, i);
    }
    /* a NUL byte, which strlen would hide */
    static const char nul[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
    ASSERT_EQ(parse_exact(nul, sizeof nul - 1, &req), HTTP_BAD);
}

/* Random bytes, and valid requests with random bytes changed: whatever the parser says, it says it
 * within the buffer (ASan checks the reads), and a length it returns is a real head inside it. */
TEST(random_and_mutated_input_never_takes_the_parser_past_its_buffer)
{
    const char *seed = "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    size_t seed_len = strlen(seed);
    static const char alphabet[] = "GET /HTP1.0\r\n:Cc- \t\x7f\x80\x00" "9";
    unsigned s = 12345;
    long accepted = 0;
    for (int i = 0; i < (int)runner_scaled(200000); i++) {
        char text[128];
        size_t len;
        s = s * 1103515245u + 12345u;
        if (s >> 31) {
            memcpy(text, seed, seed_len);
            len = seed_len;
            for (int k = 0; k < 1 + (int)((s >> 8) % 3); k++) {
                s = s * 1103515245u + 12345u;
                text[(s >> 8) % len] = alphabet[(s >> 20) % (sizeof alphabet - 1)];
            }
        } else {
            len = (s >> 8) % sizeof text;
            for (size_t k = 0; k < len; k++) {
                s = s * 1103515245u + 12345u;
                text[k] = alphabet[(s >> 16) % (sizeof alphabet - 1)];
            }
        }
        http_request req;
        long r = parse_exact(text, len, &req);
        ASSERT(r == HTTP_INCOMPLETE || r == HTTP_BAD || (r >= 4 && (size_t)r <= len));
        if (r > 0) {
            accepted++;
            ASSERT(memcmp(text + r - 4, "\r\n\r\n", 4) == 0);
        }
    }
    ASSERT_GT(accepted, 0); /* the mutations left some requests whole */
}

/* ------------------------------------------------------------------------------------------------ */
/* The servers, over sockets                                                                         */

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ASSERT_EQ(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* A blocking client socket; reads and writes give up after 30 s, so a server that never answers fails
 * the assertion that waits for it rather than hanging until the test's timeout. */
static int dial(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        return -1;
    }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {30, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return s;
}

static char server_path[4096];

static const char *example(const char *name)
{
    snprintf(server_path, sizeof server_path, "%s/../examples/%s", runner_bin_dir(), name);
    if (access(server_path, X_OK) != 0)
        FAIL("%s is not built", server_path);
    return server_path;
}

/* Start build/examples/NAME on a free port with -w WORKERS and the extra flags (NULL-terminated), and
 * wait until it accepts. */
static pid_t start_server_with(const char *name, int workers, int *port, ...)
{
    char p[16], w[16];
    const char *argv[32] = {name, "-p", p, "-w", w};
    int argc = 5;
    va_list ap;
    va_start(ap, port);
    for (const char *a; argc < 31 && (a = va_arg(ap, const char *));)
        argv[argc++] = a;
    va_end(ap);
    const char *path = example(name);
    *port = free_port();
    snprintf(p, sizeof p, "%d", *port);
    snprintf(w, sizeof w, "%d", workers);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test takes its server with it */
        execv(path, (char **)argv);
        _exit(127);
    }
    for (int i = 0; i < 10000; i++) {
        int s = dial(*port);
        if (s >= 0) {
            close(s);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            FAIL("%s ended before it accepted (status %#x)", name, st);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    FAIL("%s never accepted on port %d", name, *port);
}

#define start_server(name, workers, port) start_server_with(name, workers, port, (const char *)NULL)

static void wait_exit_0(pid_t pid)
{
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("the server did not exit 0 (status %#x)", st);
}

static void stop_server(pid_t pid)
{
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    wait_exit_0(pid);
}

static void send_all(int s, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(s, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            FAIL("send: %s, with %zu bytes still to send", k < 0 ? strerror(errno) : "0", n);
        p += k;
        n -= (size_t)k;
    }
}

static void send_str(int s, const char *text)
{
    send_all(s, text, strlen(text));
}

/* Read until `want` bytes came or the peer closed; returns how many came. */
static size_t recv_upto(int s, char *buf, size_t want)
{
    size_t have = 0;
    while (have < want) {
        ssize_t k = recv(s, buf + have, want - have, 0);
        if (k <= 0)
            break;
        have += (size_t)k;
    }
    buf[have] = '\0';
    return have;
}

/* True when the peer has closed: recv gives 0 (or a reset). */
static bool closed_by_peer(int s)
{
    char c;
    ssize_t k = recv(s, &c, 1, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        FAIL("the server kept the connection open for 30 s");
    return k == 0 || (k < 0 && errno == ECONNRESET);
}

/* One response: its head (into head, NUL-terminated) and, unless it answers HEAD, its body (into body).
 * Returns the status code, or 0 when the connection closed before a whole head came. */
static int recv_response(int s, char *head, size_t cap, char *body, size_t body_cap, bool to_head)
{
    size_t n = 0;
    while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0) {
        if (n + 1 >= cap)
            FAIL("a response head longer than %zu bytes", cap);
        if (recv(s, head + n, 1, 0) != 1) {
            head[n] = '\0';
            return 0;
        }
        n++;
    }
    head[n] = '\0';
    int status = 0;
    if (sscanf(head, "HTTP/1.1 %d ", &status) != 1)
        FAIL("not a status line: %.40s", head);
    size_t length = 0;
    const char *cl = strstr(head, "\r\nContent-Length: ");
    if (cl)
        length = strtoul(cl + 18, NULL, 10);
    if (to_head || status / 100 == 1)
        length = 0;
    if (length + 1 > body_cap)
        FAIL("a body of %zu bytes", length);
    ASSERT_EQ(recv_upto(s, body, length), length);
    return status;
}

#define GET "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

/* One 200 "Hello, World!" comes on s; returns its head. */
static const char *expect_ok(int s)
{
    static char head[1024];
    char body[64];
    int status = recv_response(s, head, sizeof head, body, sizeof body, false);
    if (status != 200)
        FAIL("got %d, not 200: %s", status, head);
    ASSERT_STR_EQ(body, "Hello, World!");
    return head;
}

TEST(the_http_server_answers_keep_alive_pipelined_split_and_body_requests)
{
    int port;
    pid_t pid = start_server("http-server", 2, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);

    /* two requests, one after the other, on one connection */
    for (int i = 0; i < 2; i++) {
        send_str(s, GET);
        expect_ok(s);
    }
    /* three pipelined in one write, a body among them */
    send_str(s, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
                "bodyGET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 3; i++)
        expect_ok(s);
    /* one request a byte at a time */
    for (const char *p = GET; *p; p++)
        send_all(s, p, 1);
    expect_ok(s);
    /* a body that comes after its answer would have been due */
    send_str(s, "POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc");
    send_str(s, "defGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_ok(s);
    expect_ok(s);
    /* Connection: close is answered, then the server closes */
    send_str(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_CONTAINS(expect_ok(s), "\r\nConnection: close\r\n");
    ASSERT(closed_by_peer(s));
    close(s);
    stop_server(pid);
}

TEST(the_http_server_answers_malformed_requests_with_400_and_huge_heads_with_431)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    char head[1024], body[64];
    const char *cases[] = {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "BREW /pot HTCPCP/1.0\r\n\r\n", "\r\n\n",
                           "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int s = dial(port);
        ASSERT_GE(s, 0);
        /* a good request first: the bad one after it still gets its 400 */
        send_str(s, GET);
        send_str(s, cases[i]);
        expect_ok(s);
        ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 400);
        ASSERT_CONTAINS(head, "\r\nConnection: close\r\n");
        ASSERT(closed_by_peer(s));
        close(s);
    }
    /* a head that does not fit the server's 8 KiB buffer */
    int s = dial(port);
    ASSERT_GE(s, 0);
    static char huge[16384];
    int len = snprintf(huge, sizeof huge, "GET / HTTP/1.1\r\nX-Long: ");
    memset(huge + len, 'a', sizeof huge - (size_t)len);
    send_all(s, huge, sizeof huge);
    ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 431);
    ASSERT(closed_by_peer(s));
    close(s);
    stop_server(pid);
}

TEST(the_http_server_serves_many_connections_at_once)
{
    int port;
    pid_t pid = start_server("http-server", 2, &port);
    enum { CONNS = 200, ROUNDS = 20 };
    static int s[CONNS];
    for (int i = 0; i < CONNS; i++)
        ASSERT_GE(s[i] = dial(port), 0);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < CONNS; i++)
            send_str(s[i], GET);
        for (int i = 0; i < CONNS; i++)
            expect_ok(s[i]);
    }
    for (int i = 0; i < CONNS; i++)
        close(s[i]);
    stop_server(pid);
}

/* ab -k sends HTTP/1.0 with "Connection: keep-alive" and waits for the close unless the answer keeps the
 * connection alive in so many words. */
TEST(an_http10_keep_alive_request_is_answered_as_keep_alive)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    for (int i = 0; i < 3; i++) {
        send_str(s, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        ASSERT_CONTAINS(expect_ok(s), "\r\nConnection: keep-alive\r\n");
    }
    /* without the option, HTTP/1.0 closes */
    send_str(s, "GET / HTTP/1.0\r\n\r\n");
    ASSERT_CONTAINS(expect_ok(s), "\r\nConnection: close\r\n");
    ASSERT(closed_by_peer(s));
    close(s);

    char url[64], out[8192];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    char *ab[] = {"/usr/bin/ab", "-k", "-q", "-n", "2000", "-c", "8", "-s", "20", url, NULL};
    if (access(ab[0], X_OK) == 0) {
        int st = runner_capture_exec(ab, NULL, out, sizeof out, 60);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAIL("ab -k failed (status %#x): %s", st, out);
        ASSERT_CONTAINS(out, "Complete requests:      2000");
        ASSERT_CONTAINS(out, "Failed requests:        0");
        ASSERT_CONTAINS(out, "Keep-Alive requests:    2000");
    } else {
        printf("ab is not installed (apache2-utils): only the socket half ran\n");
    }
    stop_server(pid);
}

TEST(expect_100_continue_gets_100_before_the_body_and_one_answer_after_it)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    char head[1024], body[64];
    static char data[2000];
    memset(data, 'b', sizeof data);
    for (int i = 0; i < 2; i++) {
        send_str(s, "POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n");
        ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 100);
        ASSERT_STR_EQ(head, "HTTP/1.1 100 Continue\r\n\r\n");
        send_all(s, data, sizeof data);
        expect_ok(s);
    }
    /* the body bytes were not taken for a request: the connection is in step */
    send_str(s, GET);
    expect_ok(s);
    /* a body already sent with the head needs no 100 */
    send_str(s, "POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc");
    expect_ok(s);
    /* an expectation the server cannot meet */
    send_str(s, "POST /up HTTP/1.1\r\nHost: x\r\nExpect: the-moon\r\nContent-Length: 3\r\n\r\n");
    ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 417);
    ASSERT(closed_by_peer(s));
    close(s);

    /* curl sends Expect: 100-continue for bodies over 1 KiB; two POSTs on one connection */
    char url[64], out[4096], file[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    snprintf(file, sizeof file, "/tmp/weft-post-%d", (int)getpid());
    FILE *f = fopen(file, "w");
    ASSERT(f != NULL);
    for (int i = 0; i < 5000; i++)
        fputc('x', f);
    fclose(f);
    char at[80];
    snprintf(at, sizeof at, "@%s", file);
    char *curl[] = {"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code} ", "--max-time", "20",
                    "--data-binary", at, url, "--next", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    "--max-time", "20", "--data-binary", at, url, NULL};
    if (access(curl[0], X_OK) == 0) {
        int st = runner_capture_exec(curl, NULL, out, sizeof out, 60);
        unlink(file);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAIL("curl failed (status %#x): %s", st, out);
        ASSERT_STR_EQ(out, "200 200");
    } else {
        unlink(file);
        printf("curl is not installed: only the socket half ran\n");
    }
    stop_server(pid);
}

TEST(head_answers_carry_no_body)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    char head[1024], body[64];
    send_str(s, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" GET);
    ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, true), 200);
    ASSERT_CONTAINS(head, "\r\nContent-Length: 13\r\n"); /* what a GET would get */
    expect_ok(s); /* the next bytes are the GET's answer, not a body */
    close(s);
    stop_server(pid);
}

TEST(any_close_option_makes_the_server_close)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    const char *cases[] = {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, keep-alive\r\n\r\n",
                           "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                           "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int s = dial(port);
        ASSERT_GE(s, 0);
        send_str(s, cases[i]);
        ASSERT_CONTAINS(expect_ok(s), "\r\nConnection: close\r\n");
        ASSERT(closed_by_peer(s));
        close(s);
    }
    stop_server(pid);
}

TEST(http11_requests_without_exactly_one_host_get_400)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    char head[1024], body[64];
    const char *cases[] = {"GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                           "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int s = dial(port);
        ASSERT_GE(s, 0);
        send_str(s, cases[i]);
        ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 400);
        ASSERT(closed_by_peer(s));
        close(s);
    }
    stop_server(pid);
}

TEST(a_lone_crlf_before_a_request_line_is_ignored)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    send_str(s, "\r\n" GET);
    expect_ok(s);
    send_str(s, GET "\r\n"); /* after a request, as some clients send it */
    expect_ok(s);
    send_str(s, GET);
    expect_ok(s);
    close(s);
    stop_server(pid);
}

TEST(every_answer_has_a_date_field)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    char head[1024], body[64];
    send_str(s, GET "GET / HTTP/1.1\r\n\r\n");
    const char *heads[2];
    char ok_head[1024];
    snprintf(ok_head, sizeof ok_head, "%s", expect_ok(s));
    heads[0] = ok_head;
    ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 400);
    heads[1] = head;
    for (int i = 0; i < 2; i++) {
        const char *d = strstr(heads[i], "\r\nDate: ");
        if (!d)
            FAIL("no Date field: %s", heads[i]);
        struct tm tm = {0};
        const char *end = strptime(d + 8, "%a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        if (!end)
            FAIL("not an IMF-fixdate: %.40s", d + 8);
        ASSERT_GE(tm.tm_year, 2000 - 1900);
    }
    close(s);
    stop_server(pid);
}

/* A client that sends a bad request and more after it: the server answers 400 and closes. Closing with
 * unread input resets the connection, and the client's sends then fail before it reads the 400; the
 * server must read and drop the rest first. */
TEST(a_client_still_sending_after_a_bad_request_reads_its_400)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    send_str(s, "GET / HTTP/1.1\r\nHost : x\r\n\r\n");
    static char more[1 << 20];
    memset(more, 'z', sizeof more);
    for (int i = 0; i < 32; i++) /* more than every socket buffer on the way holds */
        send_all(s, more, sizeof more);
    shutdown(s, SHUT_WR);
    char head[1024], body[64];
    ASSERT_EQ(recv_response(s, head, sizeof head, body, sizeof body, false), 400);
    ASSERT(closed_by_peer(s));
    close(s);
    stop_server(pid);
}

TEST(a_request_trickled_a_byte_at_a_time_gets_408_at_the_request_deadline)
{
    int port;
    pid_t pid = start_server_with("http-server", 1, &port, "-t", "1", (const char *)NULL);
    int s = dial(port);
    ASSERT_GE(s, 0);
    /* a byte every 50 ms: each read comes well within any per-read timeout */
    const char *head = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int64_t t0 = weft_now();
    const char *p = head;
    for (; *p; p++) {
        if (send(s, p, 1, MSG_NOSIGNAL) != 1)
            break; /* closed on us */
        struct pollfd pfd = {s, POLLIN, 0};
        if (poll(&pfd, 1, 50) == 1)
            break; /* the server answered */
    }
    if (!*p)
        FAIL("the server took %zu bytes over %lld ms without an answer", strlen(head),
             (long long)((weft_now() - t0) / MS));
    char buf[1024], body[64];
    ASSERT_EQ(recv_response(s, buf, sizeof buf, body, sizeof body, false), 408);
    ASSERT(closed_by_peer(s));
    ASSERT_GE(weft_now() - t0, 1 * SEC); /* not before the deadline */
    close(s);
    /* a body that trickles is cut off the same way */
    s = dial(port);
    ASSERT_GE(s, 0);
    send_str(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab");
    ASSERT_EQ(recv_response(s, buf, sizeof buf, body, sizeof body, false), 408);
    close(s);
    /* other clients are served meanwhile and after */
    s = dial(port);
    ASSERT_GE(s, 0);
    send_str(s, GET);
    expect_ok(s);
    close(s);
    stop_server(pid);
}

TEST(a_connection_idle_past_the_limit_is_closed)
{
    int port;
    pid_t pid = start_server_with("http-server", 1, &port, "-i", "1", (const char *)NULL);
    int s = dial(port);
    ASSERT_GE(s, 0);
    int64_t t0 = weft_now();
    ASSERT(closed_by_peer(s)); /* nothing sent */
    ASSERT_GE(weft_now() - t0, 1 * SEC);
    close(s);
    s = dial(port);
    ASSERT_GE(s, 0);
    send_str(s, GET);
    expect_ok(s);
    ASSERT(closed_by_peer(s)); /* nothing sent after a request */
    close(s);
    stop_server(pid);
}

TEST(the_echo_server_closes_a_client_that_is_idle_or_never_reads)
{
    int port;
    pid_t pid = start_server_with("echo-server", 1, &port, "-i", "1", (const char *)NULL);
    int s = dial(port);
    ASSERT_GE(s, 0);
    ASSERT(closed_by_peer(s)); /* sends nothing */
    close(s);
    /* sends and never reads: the server's writes stop, and after the idle limit it closes */
    s = dial(port);
    ASSERT_GE(s, 0);
    static char chunk[1 << 16];
    memset(chunk, 'e', sizeof chunk);
    bool cut = false;
    for (int i = 0; i < 100000 && !cut; i++)
        cut = send(s, chunk, sizeof chunk, MSG_NOSIGNAL) < 0 && (errno == EPIPE || errno == ECONNRESET);
    if (!cut)
        FAIL("the server kept taking bytes from a client that never reads (%s)", strerror(errno));
    close(s);
    /* a good client is served */
    s = dial(port);
    ASSERT_GE(s, 0);
    char back[8];
    send_str(s, "ping");
    ASSERT_EQ(recv_upto(s, back, 4), 4);
    ASSERT_STR_EQ(back, "ping");
    close(s);
    stop_server(pid);
}

TEST(sigterm_drains_closing_idle_connections_and_finishing_busy_ones)
{
    int port;
    pid_t pid = start_server("http-server", 2, &port);
    int idle = dial(port), busy = dial(port), kept = dial(port);
    ASSERT_GE(idle, 0);
    ASSERT_GE(busy, 0);
    ASSERT_GE(kept, 0);
    send_str(kept, GET);
    expect_ok(kept); /* a keep-alive connection between requests is idle too */
    /* a request and half of the next in one segment: the first one's answer shows that the server has
     * read the second's head and waits for the rest of its body */
    send_str(busy, GET "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
    expect_ok(busy);

    ASSERT_EQ(kill(pid, SIGTERM), 0);
    ASSERT(closed_by_peer(idle));
    ASSERT(closed_by_peer(kept));
    ASSERT_LT(dial(port), 0); /* no longer accepting */
    send_str(busy, "world");
    ASSERT_CONTAINS(expect_ok(busy), "\r\nConnection: close\r\n");
    ASSERT(closed_by_peer(busy));
    wait_exit_0(pid);
    close(idle);
    close(busy);
    close(kept);
}

TEST(a_drain_ends_at_the_grace_period_with_connections_still_busy)
{
    int port;
    pid_t pid = start_server_with("echo-server", 1, &port, "-g", "1", (const char *)NULL);
    int s = dial(port);
    ASSERT_GE(s, 0);
    static char chunk[1 << 16]; /* never read back: the server's write waits */
    memset(chunk, 'e', sizeof chunk);
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT;
    while (send(s, chunk, sizeof chunk, flags) > 0)
        ;
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    wait_exit_0(pid);
    close(s);
}

TEST(bad_flags_are_named_with_the_usage_and_exit_2)
{
    static const char *const servers[] = {"http-server", "echo-server"};
    static const char *const bad[][3] = {
        {"-p", "abc", "-p"}, {"-p", "0", "-p"},     {"-p", "65536", "-p"}, {"-p", "80x", "-p"},
        {"-w", "-3", "-w"},  {"-w", "two", "-w"},   {"-w", "5000", "-w"},  {"-i", "0", "-i"},
        {"-g", "-1", "-g"},  {"-q", NULL, "-q"},    {"-p", NULL, "-p"},    {"stray", NULL, "stray"},
    };
    char out[4096];
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char *argv[] = {(char *)example(servers[k]), (char *)bad[i][0], (char *)bad[i][1], NULL};
            int st = runner_capture_exec(argv, NULL, out, sizeof out, 10);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 2)
                FAIL("%s %s %s: status %#x, not exit 2: %s", servers[k], bad[i][0], bad[i][1] ? bad[i][1] : "",
                     st, out);
            ASSERT_CONTAINS(out, bad[i][2]);
            ASSERT_CONTAINS(out, "usage: ");
        }
    char *t[] = {(char *)example("http-server"), "-t", "0", NULL};
    ASSERT_EQ(runner_capture_exec(t, NULL, out, sizeof out, 10), 2 << 8);
    char *hello[] = {(char *)example("example-hello"), "-x", NULL};
    ASSERT_EQ(runner_capture_exec(hello, NULL, out, sizeof out, 10), 2 << 8);
    ASSERT_CONTAINS(out, "usage: ");
    char *help[] = {(char *)example("echo-server"), "-h", NULL};
    ASSERT_EQ(runner_capture_exec(help, NULL, out, sizeof out, 10), 0);
    ASSERT_CONTAINS(out, "usage: echo-server");
}

TEST(the_echo_server_sends_back_every_byte_on_many_connections)
{
    int port;
    pid_t pid = start_server("echo-server", 2, &port);
    enum { CONNS = 100 };
    static int s[CONNS];
    static char msg[CONNS][3000], back[3001];
    for (int i = 0; i < CONNS; i++) {
        ASSERT_GE(s[i] = dial(port), 0);
        for (size_t k = 0; k < sizeof msg[i]; k++)
            msg[i][k] = (char)('a' + (i + (int)k) % 26);
    }
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < CONNS; i++)
            send_all(s[i], msg[i], sizeof msg[i]);
        for (int i = 0; i < CONNS; i++) {
            ASSERT_EQ(recv_upto(s[i], back, sizeof msg[i]), sizeof msg[i]);
            ASSERT(memcmp(back, msg[i], sizeof msg[i]) == 0);
        }
    }
    /* a client that goes away does not disturb the others */
    close(s[0]);
    send_all(s[1], "ping", 4);
    ASSERT_EQ(recv_upto(s[1], back, 4), 4);
    ASSERT_STR_EQ(back, "ping");
    for (int i = 1; i < CONNS; i++)
        close(s[i]);
    stop_server(pid);
}
