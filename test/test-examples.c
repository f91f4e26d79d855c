/*
 * The example servers: the HTTP request parser on its own (valid, incomplete and malformed heads, every
 * prefix and random bytes in buffers of exactly their length, so a read past the end shows under ASan),
 * then the built http-server and echo-server over real sockets: keep-alive, pipelining, bodies, split
 * requests, 400 and 431 answers, many connections at once, and a clean exit on SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
    ASSERT_GT(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &req), 0);
    ASSERT(!req.keep_alive);
    ASSERT_GT(parse("GET / HTTP/1.1\r\nconnection:Upgrade,  CLOSE \r\n\r\n", &req), 0);
    ASSERT(!req.keep_alive);
    ASSERT_GT(parse("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", &req), 0);
    ASSERT(req.keep_alive);
}

TEST(the_head_length_excludes_the_body_and_pipelined_requests)
{
    const char *first = "POST /form HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    char text[256];
    snprintf(text, sizeof text, "%shelloGET / HTTP/1.1\r\n\r\n", first);
    http_request req;
    ASSERT_EQ(parse(text, &req), strlen(first));
    ASSERT_EQ(req.content_length, 5);
    ASSERT_EQ(parse(text + strlen(first) + 5, &req), strlen("GET / HTTP/1.1\r\n\r\n"));
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
    return s;
}

/* Start build/examples/NAME on a free port and wait until it accepts. */
static pid_t start_server(const char *name, int workers, int *port)
{
    char path[4096], p[16], w[16];
    snprintf(path, sizeof path, "%s/../examples/%s", runner_bin_dir(), name);
    if (access(path, X_OK) != 0)
        FAIL("%s is not built", path);
    *port = free_port();
    snprintf(p, sizeof p, "%d", *port);
    snprintf(w, sizeof w, "%d", workers);
    pid_t pid = fork();
    if (pid == 0) {
        execl(path, name, "-p", p, "-w", w, (char *)NULL);
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

static void stop_server(pid_t pid)
{
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("the server did not exit 0 on SIGTERM (status %#x)", st);
}

static void send_all(int s, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(s, p, n, MSG_NOSIGNAL);
        ASSERT_GT(k, 0);
        p += k;
        n -= (size_t)k;
    }
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

static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
                         "Hello, World!";

TEST(the_http_server_answers_keep_alive_pipelined_split_and_body_requests)
{
    int port;
    pid_t pid = start_server("http-server", 2, &port);
    int s = dial(port);
    ASSERT_GE(s, 0);
    char buf[8192];
    size_t n = sizeof ok - 1;

    /* two requests, one after the other, on one connection */
    for (int i = 0; i < 2; i++) {
        send_all(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
        ASSERT_EQ(recv_upto(s, buf, n), n);
        ASSERT_STR_EQ(buf, ok);
    }
    /* three pipelined in one write, a body among them */
    const char *three = "GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET /c HTTP/1.1\r\n\r\n";
    send_all(s, three, strlen(three));
    ASSERT_EQ(recv_upto(s, buf, 3 * n), 3 * n);
    ASSERT_EQ(count_occurrences(buf, "HTTP/1.1 200 OK"), 3);
    /* one request a byte at a time */
    const char *slow = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const char *p = slow; *p; p++)
        send_all(s, p, 1);
    ASSERT_EQ(recv_upto(s, buf, n), n);
    ASSERT_STR_EQ(buf, ok);
    /* Connection: close is answered, then the server closes */
    send_all(s, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 38);
    size_t got = recv_upto(s, buf, sizeof buf - 1);
    ASSERT_CONTAINS(buf, "Connection: close");
    ASSERT_CONTAINS(buf, "Hello, World!");
    ASSERT_LT(got, sizeof buf - 1); /* ended by the close */
    close(s);
    stop_server(pid);
}

TEST(the_http_server_answers_malformed_requests_with_400_and_huge_heads_with_431)
{
    int port;
    pid_t pid = start_server("http-server", 1, &port);
    char buf[8192];
    const char *cases[] = {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "BREW /pot HTCPCP/1.0\r\n\r\n", "\r\n\r\n",
                           "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int s = dial(port);
        ASSERT_GE(s, 0);
        /* a good request first: the bad one after it still gets its 400 */
        send_all(s, "GET / HTTP/1.1\r\n\r\n", 18);
        send_all(s, cases[i], strlen(cases[i]));
        recv_upto(s, buf, sizeof buf - 1); /* until the server closes */
        ASSERT_EQ(count_occurrences(buf, "HTTP/1.1 200 OK"), 1);
        ASSERT_CONTAINS(buf, "HTTP/1.1 400 Bad Request");
        close(s);
    }
    /* a head that fills the server's 8 KiB buffer without ending (exactly: so that it reads every byte,
     * and closes with nothing unread, which would reset the connection) */
    int s = dial(port);
    ASSERT_GE(s, 0);
    char head[8192];
    int len = snprintf(head, sizeof head, "GET / HTTP/1.1\r\nX-Long: ");
    memset(head + len, 'a', sizeof head - (size_t)len);
    send_all(s, head, sizeof head);
    recv_upto(s, buf, sizeof buf - 1);
    ASSERT_CONTAINS(buf, "HTTP/1.1 431");
    close(s);
    stop_server(pid);
}

TEST(the_http_server_serves_many_connections_at_once)
{
    int port;
    pid_t pid = start_server("http-server", 2, &port);
    enum { CONNS = 200, ROUNDS = 20 };
    static int s[CONNS];
    char buf[256];
    for (int i = 0; i < CONNS; i++)
        ASSERT_GE(s[i] = dial(port), 0);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < CONNS; i++)
            send_all(s[i], "GET / HTTP/1.1\r\n\r\n", 18);
        for (int i = 0; i < CONNS; i++) {
            ASSERT_EQ(recv_upto(s[i], buf, sizeof ok - 1), sizeof ok - 1);
            ASSERT_STR_EQ(buf, ok);
        }
    }
    for (int i = 0; i < CONNS; i++)
        close(s[i]);
    stop_server(pid);
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
