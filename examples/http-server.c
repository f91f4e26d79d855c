/*
 * An HTTP/1.1 server: one fiber per connection, keep-alive and pipelining, and the same 200
 * "Hello, World!" for every request. Malformed requests get 400 and the connection closes.
 *
 *   http-server [-p PORT] [-w WORKERS]     listens on 127.0.0.1:PORT (8080), until SIGINT or SIGTERM
 *
 * Each connection's fiber reads what has come, answers every whole request in it at once (pipelined
 * requests get their answers in one write) and reads again; while it waits for bytes it is parked and
 * its worker serves other connections. serve.c does the listening, the accepting and the clean end.
 */
#include <stdint.h>
#include <string.h>

#include <weft.h>

#include "http-parse.h"
#include "serve.h"

#define IDLE_NS (60 * (int64_t)1000000000) /* a connection quiet this long is closed */
#define MAX_BODY (1 << 20)

static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
                         "Hello, World!";
static const char ok_close[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
                               "Connection: close\r\n\r\nHello, World!";
static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
static const char too_large[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";

struct out {
    char buf[16384];
    size_t len;
};

static bool put(int fd, struct out *o, const char *s, size_t n)
{
    if (o->len + n > sizeof o->buf) {
        if (weft_write(fd, o->buf, o->len, weft_deadline_in(IDLE_NS)) != (ssize_t)o->len)
            return false;
        o->len = 0;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return true;
}

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char in[8192];
    struct out o;
    size_t have = 0, skip = 0; /* skip: body bytes of the last request still to come */
    bool open = true;
    while (open) {
        ssize_t n = weft_read(fd, in + have, sizeof in - have, weft_deadline_in(IDLE_NS));
        if (n <= 0)
            break; /* closed by the client, an error, or idle too long */
        have += (size_t)n;
        size_t used = 0;
        o.len = 0;
        while (open) {
            size_t k = skip < have - used ? skip : have - used;
            used += k;
            skip -= k;
            if (skip > 0)
                break;
            http_request req;
            long head = http_parse_request(in + used, have - used, MAX_BODY, &req);
            if (head == HTTP_INCOMPLETE) {
                if (used == 0 && have == sizeof in) { /* a head that does not fit */
                    put(fd, &o, too_large, sizeof too_large - 1);
                    open = false;
                }
                break;
            }
            if (head == HTTP_BAD) {
                put(fd, &o, bad, sizeof bad - 1);
                open = false;
                break;
            }
            used += (size_t)head;
            skip = req.content_length;
            open = req.keep_alive;
            if (!(open ? put(fd, &o, ok, sizeof ok - 1) : put(fd, &o, ok_close, sizeof ok_close - 1)))
                open = false;
        }
        if (o.len > 0 && weft_write(fd, o.buf, o.len, weft_deadline_in(IDLE_NS)) != (ssize_t)o.len)
            break;
        memmove(in, in + used, have - used);
        have -= used;
    }
    weft_close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    return serve(argc, argv, 8080, serve_connection);
}
