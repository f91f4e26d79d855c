/*
 * echod-libuv.c - the echo server of the echo bench, written the way a libuv
 * user who cares about speed writes one.
 *
 *     echod-libuv -p PORT -w WORKERS
 *
 * Listens on 127.0.0.1:PORT and writes every byte read on a connection back
 * on it, until SIGTERM or SIGINT; then exits 0.
 *
 * How, and why:
 *
 * - WORKERS threads, each with its own uv_loop_t and its own listening socket
 *   bound to the same address with SO_REUSEPORT, as in httpd-libuv.c (which
 *   says why the option is set by hand on libuv 1.44).
 * - A read lands in a 64 KiB chunk that carries its own write request; the
 *   chunk goes out with one uv_write() of what was read and comes back to
 *   its loop's free list when the write completes.  uv_write() writes at
 *   once when nothing is queued, so an echo costs a read and a write; the
 *   free list saves a malloc and a free each time.
 * - More than WRITE_QUEUE_MAX bytes unwritten: stop reading until half of it
 *   has drained, so a client that sends without reading cannot grow the
 *   server's memory.
 * - SIGTERM and SIGINT are blocked in every thread; the main thread waits for
 *   them with sigwait() and wakes each loop through a uv_async_t, which
 *   closes every handle of its loop so that uv_run() returns.
 */
#define _GNU_SOURCE
#include <uv.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    CHUNK = 64 << 10,          /* bytes one read may bring */
    FREE_MAX = 256,            /* chunks a loop keeps for reuse */
    WRITE_QUEUE_MAX = 1 << 20, /* unwritten bytes before reading stops */
    BACKLOG = 4096,
    MAX_WORKERS = 1024,
};

struct chunk {
    uv_write_t req;
    struct chunk *next; /* on the free list */
    char data[CHUNK];
};

struct worker {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_async_t stop;
    uv_thread_t thread;
    struct chunk *spare; /* free chunks; owner thread only, as is all here */
    int nspare;
};

struct conn {
    uv_tcp_t tcp; /* first: the handle is the connection */
    int reading;  /* uv_read_start() is in force */
};

static void die(const char *what, int err)
{
    fprintf(stderr, "echod-libuv: %s: %s\n", what, uv_strerror(err));
    exit(1);
}

static struct chunk *chunk_of(const char *data)
{
    return (struct chunk *)(data - offsetof(struct chunk, data));
}

static void chunk_put(struct worker *w, struct chunk *ch)
{
    if (w->nspare < FREE_MAX) {
        ch->next = w->spare;
        w->spare = ch;
        w->nspare++;
    } else {
        free(ch);
    }
}

static void on_conn_close(uv_handle_t *h)
{
    free(h);
}

static void conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct worker *w = h->loop->data;
    struct chunk *ch = w->spare;
    (void)suggested;
    if (ch != NULL) {
        w->spare = ch->next;
        w->nspare--;
    } else if ((ch = malloc(sizeof *ch)) == NULL) {
        *buf = uv_buf_init(NULL, 0); /* on_read gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(ch->data, CHUNK);
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
    chunk_put(c->tcp.loop->data, (struct chunk *)req);
    if (status < 0) {
        conn_close(c); /* UV_ECANCELED when it is closing already: no-op */
        return;
    }
    if (!c->reading && c->tcp.write_queue_size <= WRITE_QUEUE_MAX / 2 &&
        !uv_is_closing((uv_handle_t *)&c->tcp))
        start_reading(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)s;
    struct worker *w = s->loop->data;
    struct chunk *ch;
    uv_buf_t out;
    int err;

    if (buf->base == NULL) { /* UV_ENOBUFS: no chunk was handed out */
        conn_close(c);
        return;
    }
    ch = chunk_of(buf->base);
    if (nread <= 0) { /* 0 is EAGAIN; below is UV_EOF or an error */
        chunk_put(w, ch);
        if (nread < 0)
            conn_close(c);
        return;
    }

    ch->req.data = c;
    out = uv_buf_init(ch->data, (unsigned int)nread);
    if ((err = uv_write(&ch->req, s, &out, 1, on_write)) != 0) {
        chunk_put(w, ch);
        conn_close(c);
        return;
    }
    if (s->write_queue_size > WRITE_QUEUE_MAX && c->reading) {
        uv_read_stop(s);
        c->reading = 0;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct conn *c;
    if (status < 0) /* out of fds and the like: libuv tries again later */
        return;
    if ((c = malloc(sizeof *c)) == NULL)
        die("malloc", UV_ENOMEM);
    c->reading = 0;
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
    struct chunk *ch;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    while ((ch = w->spare) != NULL) {
        w->spare = ch->next;
        free(ch);
    }
}

/* the loop, the listening socket and the stop handle of one worker */
static void worker_init(struct worker *w, const struct sockaddr_in *addr)
{
    uv_os_fd_t fd;
    int one = 1, err;

    if ((err = uv_loop_init(&w->loop)) != 0)
        die("uv_loop_init", err);
    w->loop.data = w;
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
        fprintf(stderr, "usage: echod-libuv -p PORT -w WORKERS\n");
        return 2;
    }

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
