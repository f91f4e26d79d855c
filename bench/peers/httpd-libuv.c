/*
 * httpd-libuv.c - the HTTP server of the http bench, written the way a libuv
 * user who cares about speed writes one.
 *
 *     httpd-libuv -p PORT -w WORKERS
 *
 * Listens on 127.0.0.1:PORT and answers every request, whatever its path,
 * with 200 and the 13-byte body "Hello, World!" as text/plain, on keep-alive
 * connections, until SIGTERM or SIGINT; then exits 0.
 *
 * How, and why:
 *
 * - WORKERS threads, each with its own uv_loop_t and its own listening socket
 *   bound to the same address with SO_REUSEPORT: the kernel spreads the
 *   connections over the sockets and the threads share nothing, the usual
 *   way to scale libuv over CPUs.  libuv 1.44 (Debian 12) has no
 *   UV_TCP_REUSEPORT flag (it came in 1.49), so the option is set on the
 *   socket between uv_tcp_init_ex(), which creates it, and uv_tcp_bind().
 * - A connection keeps what it has read and not yet answered in a buffer of
 *   its own, and alloc_cb hands out the free tail of that buffer: reads land
 *   in place, and a request cut in two by the network is whole after the
 *   second read.
 * - A request ends at its first "\r\n\r\n" (the bench sends GETs: no body).
 *   Every whole request in a read gets its answer, and the answers of one
 *   read leave in one uv_write(): pipelined requests cost one write.
 * - The answer is the same bytes every time, so it lives in a static block
 *   of BATCH copies and a write copies nothing; the write request is one
 *   embedded in the connection, or a malloc'ed spare while that one is still
 *   in flight (only when the socket is backed up).
 * - More than WRITE_QUEUE_MAX bytes unwritten: stop reading until half of it
 *   has drained, so a client that pipelines without reading cannot grow the
 *   server's memory.
 * - SIGTERM and SIGINT are blocked in every thread; the main thread waits for
 *   them with sigwait() and wakes each loop through a uv_async_t, which
 *   closes every handle of its loop so that uv_run() returns.
 */
#define _GNU_SOURCE /* memmem */
#include <uv.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ANSWER                                                                 \
    "HTTP/1.1 200 OK\r\n"                                                      \
    "Content-Type: text/plain\r\n"                                             \
    "Content-Length: 13\r\n"                                                   \
    "\r\n"                                                                     \
    "Hello, World!"

enum {
    ANSWER_LEN = sizeof ANSWER - 1,
    BATCH = 64,                /* answers in the static block */
    STACK_BUFS = 16,           /* uv_buf_t on the stack: 1,024 answers */
    BUF_START = 4096,          /* a connection's first read buffer */
    BUF_MAX = 1 << 20,         /* a request head longer than this: close */
    WRITE_QUEUE_MAX = 1 << 20, /* unwritten bytes before reading stops */
    BACKLOG = 4096,
    MAX_WORKERS = 1024,
};

static char answers[BATCH * ANSWER_LEN]; /* written once before any thread */

struct worker {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_async_t stop;
    uv_thread_t thread;
};

struct conn {
    uv_tcp_t tcp;    /* first: the handle is the connection */
    uv_write_t req;  /* the write request for the usual case */
    int req_busy;    /* req is in flight */
    int reading;     /* uv_read_start() is in force */
    char *buf;       /* read and not yet answered: buf[0..len) */
    size_t len, cap;
    size_t scanned;  /* buf[0..scanned) holds no "\r\n\r\n" start */
};

static void die(const char *what, int err)
{
    fprintf(stderr, "httpd-libuv: %s: %s\n", what, uv_strerror(err));
    exit(1);
}

static void on_conn_close(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    free(c->buf);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = (struct conn *)h;
    (void)suggested;
    if (c->len == c->cap) {
        /* A request head bigger than BUF_MAX: a zero-length buffer makes
         * libuv report UV_ENOBUFS to on_read, which closes. */
        size_t cap = c->cap * 2;
        char *p = cap <= BUF_MAX ? realloc(c->buf, cap) : NULL;
        if (p == NULL) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        c->buf = p;
        c->cap = cap;
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned int)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void start_reading(struct conn *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
    else
        conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    if (req == &c->req)
        c->req_busy = 0;
    else
        free(req);
    if (status < 0) {
        conn_close(c); /* UV_ECANCELED when it is closing already: no-op */
        return;
    }
    if (!c->reading && c->tcp.write_queue_size <= WRITE_QUEUE_MAX / 2 &&
        !uv_is_closing((uv_handle_t *)&c->tcp))
        start_reading(c);
}

/* answers n requests with one uv_write() */
static void answer(struct conn *c, size_t n)
{
    uv_buf_t stack_bufs[STACK_BUFS], *bufs = stack_bufs;
    size_t nbufs = (n + BATCH - 1) / BATCH, i;
    if (nbufs > STACK_BUFS && (bufs = malloc(nbufs * sizeof *bufs)) == NULL) {
        conn_close(c);
        return;
    }
    for (i = 0; i < nbufs; i++) {
        size_t k = n - i * BATCH < BATCH ? n - i * BATCH : BATCH;
        bufs[i] = uv_buf_init(answers, (unsigned int)(k * ANSWER_LEN));
    }

    uv_write_t *req = &c->req;
    if (c->req_busy && (req = malloc(sizeof *req)) == NULL) {
        conn_close(c);
    } else {
        int err;
        req->data = c;
        /* uv_write() writes at once when nothing is queued; only what the
         * socket does not take waits for the loop.  It copies bufs. */
        err = uv_write(req, (uv_stream_t *)&c->tcp, bufs, (unsigned int)nbufs, on_write);
        if (err != 0) {
            if (req != &c->req)
                free(req);
            conn_close(c);
        } else if (req == &c->req) {
            c->req_busy = 1;
        }
    }
    if (bufs != stack_bufs)
        free(bufs);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)s;
    size_t n = 0, done = 0, from = c->scanned;
    char *end;
    (void)buf; /* it is the tail of c->buf */

    if (nread < 0) { /* UV_EOF, an error, or UV_ENOBUFS from on_alloc */
        conn_close(c);
        return;
    }
    if (nread == 0) /* EAGAIN */
        return;
    c->len += (size_t)nread;

    while ((end = memmem(c->buf + from, c->len - from, "\r\n\r\n", 4)) != NULL) {
        n++;
        done = (size_t)(end - c->buf) + 4;
        from = done;
    }
    if (done > 0) {
        c->len -= done;
        if (c->len > 0)
            memmove(c->buf, c->buf + done, c->len);
    }
    /* the last three bytes may begin a "\r\n\r\n" that the next read ends */
    c->scanned = c->len > 3 ? c->len - 3 : 0;

    if (n > 0) {
        answer(c, n);
        if (c->tcp.write_queue_size > WRITE_QUEUE_MAX && c->reading &&
            !uv_is_closing((uv_handle_t *)&c->tcp)) {
            uv_read_stop(s);
            c->reading = 0;
        }
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct conn *c;
    if (status < 0) /* out of fds and the like: libuv tries again later */
        return;
    if ((c = calloc(1, sizeof *c)) == NULL || (c->buf = malloc(BUF_START)) == NULL)
        die("malloc", UV_ENOMEM);
    c->cap = BUF_START;
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c; /* marks a connection for on_stop */
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    start_reading(c);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, h->data != NULL ? on_conn_close : NULL);
}

static void on_stop(uv_async_t *a)
{
    uv_walk(a->loop, close_handle, NULL);
}

static void worker_run(void *arg)
{
    struct worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* the loop, the listening socket and the stop handle of one worker */
static void worker_init(struct worker *w, const struct sockaddr_in *addr)
{
    uv_os_fd_t fd;
    int one = 1, err;

    if ((err = uv_loop_init(&w->loop)) != 0)
        die("uv_loop_init", err);
    if ((err = uv_tcp_init_ex(&w->loop, &w->server, AF_INET)) != 0)
        die("uv_tcp_init_ex", err);
    w->server.data = NULL;
    if ((err = uv_fileno((uv_handle_t *)&w->server, &fd)) != 0)
        die("uv_fileno", err);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        die("setsockopt(SO_REUSEPORT)", uv_translate_sys_error(errno));
    if ((err = uv_tcp_bind(&w->server, (const struct sockaddr *)addr, 0)) != 0)
        die("bind", err);
    if ((err = uv_listen((uv_stream_t *)&w->server, BACKLOG, on_connection)) != 0)
        die("listen", err);
    if ((err = uv_async_init(&w->loop, &w->stop, on_stop)) != 0)
        die("uv_async_init", err);
    w->stop.data = NULL;
}

static int number(const char *s, int lo, int hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    return (int)v;
}

int main(int argc, char **argv)
{
    int port = -1, nworkers = 1, opt, i, err, sig;
    struct sockaddr_in addr;
    struct worker *workers;
    sigset_t stop_signals;

    while ((opt = getopt(argc, argv, "p:w:")) != -1) {
        switch (opt) {
        case 'p': port = number(optarg, 1, 65535); break;
        case 'w': nworkers = number(optarg, 1, MAX_WORKERS); break;
        default: port = -1; optind = argc; break;
        }
    }
    if (port < 0 || nworkers < 0 || optind != argc) {
        fprintf(stderr, "usage: httpd-libuv -p PORT -w WORKERS\n");
        return 2;
    }

    for (i = 0; i < BATCH; i++)
        memcpy(answers + i * ANSWER_LEN, ANSWER, ANSWER_LEN);

    /* A peer gone mid-write is an error from write(), not a signal; the
     * stop signals go to sigwait() below, in every thread. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    if ((err = uv_ip4_addr("127.0.0.1", port, &addr)) != 0)
        die("uv_ip4_addr", err);
    if ((workers = calloc((size_t)nworkers, sizeof *workers)) == NULL)
        die("calloc", UV_ENOMEM);
    /* every socket listens before any thread starts: a bad port fails here */
    for (i = 0; i < nworkers; i++)
        worker_init(&workers[i], &addr);
    for (i = 0; i < nworkers; i++)
        if ((err = uv_thread_create(&workers[i].thread, worker_run, &workers[i])) != 0)
            die("uv_thread_create", err);

    printf("# libuv %s, %d thread%s, a loop and a SO_REUSEPORT listener each\n",
           uv_version_string(), nworkers, nworkers == 1 ? "" : "s");
    fflush(stdout);

    do
        err = sigwait(&stop_signals, &sig);
    while (err == EINTR);

    for (i = 0; i < nworkers; i++)
        uv_async_send(&workers[i].stop);
    for (i = 0; i < nworkers; i++) {
        uv_thread_join(&workers[i].thread);
        uv_loop_close(&workers[i].loop);
    }
    free(workers);
    return 0;
}
