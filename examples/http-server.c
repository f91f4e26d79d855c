/*
 * An HTTP/1.1 server: one fiber per connection, keep-alive and pipelining, and the same 200
 * "Hello, World!" for every request. Malformed requests get 400 and the connection closes.
 *
 *   http-server [-p PORT] [-w WORKERS]     listens on 127.0.0.1:PORT (8080), until SIGINT or SIGTERM
 *
 * Each connection's fiber reads what has come, answers every whole request in it at once (pipelined
 * requests get their answers in one write) and reads again; while it waits for bytes it is parked and
 * its worker serves other connections.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <weft.h>

#include "http-parse.h"

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

static void *serve(void *arg)
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

/* SIGINT and SIGTERM are blocked in every thread and read here, as data: then the process ends. */
static void *await_signal(void *arg)
{
    int sfd = (int)(intptr_t)arg;
    struct signalfd_siginfo si;
    while (weft_read(sfd, &si, sizeof si, WEFT_FOREVER) != (ssize_t)sizeof si)
        ;
    exit(0);
}

static void *accept_loop(void *arg)
{
    int port = *(int *)arg;
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    int sfd = signalfd(-1, &stop, SFD_CLOEXEC);
    if (sfd < 0) {
        perror("http-server: signalfd");
        exit(1);
    }
    int lfd = weft_tcp_listen("127.0.0.1", port, 0);
    if (lfd < 0) {
        fprintf(stderr, "http-server: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(-lfd));
        exit(1);
    }
    weft_go(await_signal, (void *)(intptr_t)sfd);
    for (;;) {
        int c = weft_accept(lfd, NULL, NULL, WEFT_FOREVER);
        if (c >= 0 && weft_go(serve, (void *)(intptr_t)c) < 0)
            weft_close(c);
    }
}

int main(int argc, char **argv)
{
    int port = 8080, opt;
    weft_config_t cfg = {0};
    while ((opt = getopt(argc, argv, "p:w:")) != -1) {
        if (opt == 'p')
            port = atoi(optarg);
        else if (opt == 'w')
            cfg.workers = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-p PORT] [-w WORKERS]\n", argv[0]);
            return 2;
        }
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* before any thread starts: they all inherit it */
    return weft_run(&cfg, accept_loop, &port, NULL) < 0;
}
