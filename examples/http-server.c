/*
 * An HTTP/1.1 server: one fiber per connection, keep-alive and pipelining, and the same 200
 * "Hello, World!" for every request. Malformed requests get 400 and the connection closes.
 *
 *   http-server [-p PORT] [-w WORKERS] [-i IDLE] [-t REQUEST] [-g GRACE]     listens on 127.0.0.1:PORT (8080)
 *
 * Each connection's fiber reads what has come, answers every whole request in it at once (pipelined
 * requests get their answers in one write) and reads again; while it waits for bytes it is parked and
 * its worker serves other connections. A request is answered once its body has come; a client that
 * sent "Expect: 100-continue" gets "100 Continue" first. A request whose head and body do not come
 * within REQUEST seconds of its first byte gets 408 (a client that trickles its head a byte at a time
 * cannot hold a connection forever), and a connection with no request for IDLE seconds is closed.
 * serve.c does the listening, the accepting, the lingering close and the drain on SIGTERM (serve.h).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <weft.h>

#include "http-parse.h"
#include "serve.h"

#define MAX_BODY (1 << 20)
#define S(text) text, sizeof text - 1

/* The answers go into one buffer per connection and out in one write. */
struct out {
    int fd;
    size_t len;
    char buf[16384];
    time_t date_at; /* the second `date` was formatted for */
    size_t date_len;
    char date[40];
};

static bool flush(struct out *o)
{
    bool ok = o->len == 0 || weft_write(o->fd, o->buf, o->len, weft_deadline_in(serve_limit.idle_ns)) == (ssize_t)o->len;
    o->len = 0;
    return ok;
}

static bool put(struct out *o, const char *s, size_t n)
{
    if (o->len + n > sizeof o->buf && !flush(o))
        return false;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return true;
}

/* "Date: ...\r\n" (RFC 9110 6.6.1), formatted once a second for each connection. (Not in thread-local
 * storage: a fiber may resume on another thread after a hand-off, docs/runtime.md, and the compiler
 * keeps the thread's address across the calls that park.) */
static bool put_date(struct out *o)
{
    time_t now = time(NULL);
    if (now != o->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        o->date_len = strftime(o->date, sizeof o->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        o->date_at = now;
    }
    return put(o, o->date, o->date_len);
}

/* 200 with the body (none for HEAD); the Connection field says what happens next. */
static bool put_ok(struct out *o, const http_request *req, bool keep_alive)
{
    bool head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    return put(o, S("HTTP/1.1 200 OK\r\n")) && put_date(o) &&
           put(o, S("Content-Type: text/plain\r\nContent-Length: 13\r\n")) &&
           (!keep_alive ? put(o, S("Connection: close\r\n"))
            : req->minor_version == 0 ? put(o, S("Connection: keep-alive\r\n"))
                                      : true) &&
           put(o, S("\r\n")) && (head || put(o, S("Hello, World!")));
}

/* An error status line ("HTTP/1.1 400 Bad Request\r\n"), after which the connection closes. */
static bool put_error(struct out *o, const char *status, size_t n)
{
    return put(o, status, n) && put_date(o) && put(o, S("Content-Length: 0\r\nConnection: close\r\n\r\n"));
}

static void serve_connection(serve_conn *c)
{
    char in[8192];
    struct out o = {.fd = serve_fd(c), .date_at = -1};
    size_t have = 0;      /* bytes in `in` */
    http_request req;     /* the request in hand: its head has come, its answer waits for its body */
    bool in_hand = false;
    size_t body = 0;      /* its body bytes still to come */
    int64_t deadline = 0; /* for the request begun */
    for (;;) {
        size_t used = 0;
        bool open = true;
        while (open) {
            if (in_hand) {
                size_t k = body < have - used ? body : have - used;
                used += k;
                body -= k;
                if (body > 0)
                    break;
                in_hand = false;
                open = req.keep_alive && !serve_draining();
                open = put_ok(&o, &req, open) && open;
                deadline = weft_deadline_in(serve_limit.request_ns); /* for the next one */
                continue;
            }
            if (used == have)
                break;
            long head = http_parse_request(in + used, have - used, MAX_BODY, &req);
            if (head == HTTP_INCOMPLETE) {
                if (used == 0 && have == sizeof in) { /* a head that does not fit */
                    put_error(&o, S("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
                    open = false;
                }
                break;
            }
            if (head == HTTP_BAD || req.expect == HTTP_EXPECT_OTHER) {
                if (head == HTTP_BAD)
                    put_error(&o, S("HTTP/1.1 400 Bad Request\r\n"));
                else
                    put_error(&o, S("HTTP/1.1 417 Expectation Failed\r\n"));
                open = false;
                break;
            }
            used += (size_t)head;
            in_hand = true;
            body = req.content_length;
            if (req.expect == HTTP_EXPECT_CONTINUE && body > have - used)
                open = put(&o, S("HTTP/1.1 100 Continue\r\n\r\n"));
        }
        if (!flush(&o) || !open)
            return;
        memmove(in, in + used, have - used);
        have -= used;

        ssize_t n;
        if (have == 0 && !in_hand) { /* between requests */
            n = serve_read_idle(c, in, sizeof in);
            deadline = weft_deadline_in(serve_limit.request_ns);
        } else {
            n = weft_read(o.fd, in + have, sizeof in - have, deadline);
            if (n == -ETIMEDOUT) {
                put_error(&o, S("HTTP/1.1 408 Request Timeout\r\n"));
                flush(&o);
                return;
            }
        }
        if (n <= 0)
            return; /* closed by the client, an error, idle too long, or the drain */
        have += (size_t)n;
    }
}

int main(int argc, char **argv)
{
    static const serve_spec http_server = {.port = 8080, .requests = true, .connection = serve_connection};
    return serve(argc, argv, &http_server);
}
