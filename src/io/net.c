/*
 * Sockets: accept (with what to do when the process runs out of fds), name resolution through the
 * blocking pool, and listen/dial helpers for TCP and Unix sockets.
 *
 * Out of fds (EMFILE, ENFILE): accepting again at once would spin, since the pending connection stays
 * pending and the listening socket stays readable. Waiting alone would leave the clients in the backlog
 * hanging for as long as the shortage lasts. weft_accept does what libuv does and more: it closes a spare
 * fd kept for the purpose, accepts and at once closes the waiting connections (their clients see the
 * connection closed, not a hang), takes the spare back, and then backs off, 1 ms doubling to 100 ms, a
 * parked sleep, before it tries again. When fds free up, the next try succeeds and accepting goes on.
 *
 * Two things make that hold with many acceptors on many workers:
 *  - The number the spare frees must go to the shed's own accept. weft's accepts pass a gate (the
 *    in-flight count and the shedding flag, each side storing its own and then loading the other's, all
 *    seq_cst, so one of the two sees the other): while a shed runs, no other weft accept calls accept4,
 *    and a shed waits until those under way have left. A number taken by other code of the process
 *    (an open(), a socket()) is not weft's to stop: then the spare is opened again at the next shed,
 *    once an fd is free.
 *  - The back-off belongs to the process, not to one call: running out of fds is a state of the process,
 *    and a server that calls weft_accept in a loop with a short deadline would otherwise start over at
 *    1 ms, and shed, on every call. While the back-off runs, every weft_accept waits for its end (or its
 *    own deadline) without touching the listener; the first accept that succeeds clears it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/park.h"
#include "io/io.h"

#define BACKOFF_FIRST_NS ((int64_t)1000000)
#define BACKOFF_MAX_NS ((int64_t)100000000)
#define SHED_MAX 64

static struct {
    pthread_mutex_t lock;          /* one shed at a time; guards spare */
    int spare;                     /* the fd kept in reserve, or -1 */
    _Alignas(WEFT__CACHELINE) _Atomic int64_t in_accept; /* weft accepts inside the gate */
    _Atomic int shedding;          /* a shed runs: accepts wait at the gate */
    _Alignas(WEFT__CACHELINE) _Atomic int64_t retry_at; /* out of fds: no accept before this (0: none) */
    _Atomic int64_t backoff;       /* the back-off that set it */
    _Atomic int err;               /* the error that started it */
} emfile = {.lock = PTHREAD_MUTEX_INITIALIZER, .spare = -1};

static int open_spare(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Called at runtime start: keep one fd in reserve for shedding connections when fds run out. */
void weft__net_init(void)
{
    pthread_mutex_lock(&emfile.lock);
    if (emfile.spare < 0)
        emfile.spare = open_spare();
    pthread_mutex_unlock(&emfile.lock);
}

void weft__accept_gate_enter(void)
{
    unsigned round = 0;
    for (;;) {
        atomic_fetch_add_explicit(&emfile.in_accept, 1, memory_order_seq_cst);
        if (WEFT__LIKELY(!atomic_load_explicit(&emfile.shedding, memory_order_seq_cst)))
            return;
        atomic_fetch_sub_explicit(&emfile.in_accept, 1, memory_order_seq_cst);
        while (atomic_load_explicit(&emfile.shedding, memory_order_acquire))
            weft__spin_backoff(&round); /* a shed never parks: it is over in microseconds */
    }
}

void weft__accept_gate_leave(void)
{
    atomic_fetch_sub_explicit(&emfile.in_accept, 1, memory_order_release);
}

/* Out of fds: close the connections waiting on the listening socket, with the spare fd's help. Fds
 * may have come free since the accept that ran out (the server closed a connection meanwhile): so the
 * shed first accepts once as a plain accept would, and a connection it gets is served, not shed.
 * Returns that connection, or -1 after shedding. */
static int shed(int lfd, struct sockaddr *addr, socklen_t *addrlen)
{
    pthread_mutex_lock(&emfile.lock);
    atomic_store_explicit(&emfile.shedding, 1, memory_order_seq_cst);
    unsigned round = 0;
    while (atomic_load_explicit(&emfile.in_accept, memory_order_seq_cst) != 0)
        weft__spin_backoff(&round); /* accepts under way leave: none starts now */
    int got = accept4(lfd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (got < 0) {
        if (emfile.spare < 0)
            emfile.spare = open_spare(); /* taken by other code last time: an fd may have come free since */
        if (emfile.spare >= 0) {
            close(emfile.spare);
            for (int i = 0; i < SHED_MAX; i++) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0)
                    break;
                close(c);
            }
            emfile.spare = open_spare(); /* the number just freed, unless other code took it meanwhile */
        }
    }
    atomic_store_explicit(&emfile.shedding, 0, memory_order_release);
    pthread_mutex_unlock(&emfile.lock);
    return got;
}

/* The process ran out of fds (again): shed, and back off for longer. Returns a connection the shed got
 * instead (fds had come free: no back-off), or -1. */
static int out_of_fds(int lfd, int err, struct sockaddr *addr, socklen_t *addrlen)
{
    int got = shed(lfd, addr, addrlen);
    if (got >= 0)
        return got;
    int64_t b = atomic_load_explicit(&emfile.backoff, memory_order_relaxed);
    b = b == 0 ? BACKOFF_FIRST_NS : b < BACKOFF_MAX_NS ? b * 2 : BACKOFF_MAX_NS;
    atomic_store_explicit(&emfile.backoff, b, memory_order_relaxed);
    atomic_store_explicit(&emfile.err, err, memory_order_relaxed);
    atomic_store_explicit(&emfile.retry_at, weft__clock_ns() + b, memory_order_release);
    return -1;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on non-TCP sockets */
}

int weft_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int64_t deadline)
{
    for (;;) {
        int64_t at = atomic_load_explicit(&emfile.retry_at, memory_order_acquire);
        if (WEFT__UNLIKELY(at != 0) && weft__clock_ns() < at) {
            /* backing off, out of fds: wait for the end of it, or for our own deadline */
            if (deadline == WEFT_NOWAIT)
                return atomic_load_explicit(&emfile.err, memory_order_relaxed);
            if (deadline > 0 && deadline < at) {
                weft_sleep_until(deadline);
                return -ETIMEDOUT;
            }
            weft_sleep_until(at);
            continue;
        }
        int c = weft__accept_once(fd, addr, addrlen, deadline);
        if (WEFT__UNLIKELY(c == -EMFILE || c == -ENFILE || c == -ENOBUFS || c == -ENOMEM)) {
            int got = out_of_fds(fd, c, addr, addrlen);
            if (got < 0) {
                if (deadline == WEFT_NOWAIT)
                    return c;
                continue;
            }
            c = weft__accept_adopt(got);
            if (c < 0)
                return c;
        }
        if (c >= 0) {
            if (WEFT__UNLIKELY(at != 0)) { /* fds again: the back-off is over */
                atomic_store_explicit(&emfile.backoff, 0, memory_order_relaxed);
                atomic_store_explicit(&emfile.retry_at, 0, memory_order_release);
            }
            set_nodelay(c);
            return c;
        }
        if (c == -ECONNABORTED)
            continue; /* the client gave up before we took it: take the next */
        return c;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Names                                                                                             */

static int eai_to_errno(int e)
{
    switch (e) {
    case 0: return 0;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return -ENOENT;
    case EAI_AGAIN: return -EAGAIN;
    case EAI_MEMORY: return -ENOMEM;
    case EAI_FAIL: return -EIO;
    case EAI_SYSTEM: {
        int sys = weft__errno();
        return sys ? -sys : -EIO;
    }
    default: return -EINVAL; /* EAI_BADFLAGS, EAI_FAMILY, EAI_SERVICE, EAI_SOCKTYPE */
    }
}

typedef struct {
    const char *node, *service;
    const struct addrinfo *hints;
    struct addrinfo **res;
    int err;
} gai_call;

static void *run_gai(void *arg)
{
    gai_call *g = arg;
    g->err = eai_to_errno(getaddrinfo(g->node, g->service, g->hints, g->res)); /* runs on a pool thread */
    return NULL;
}

int weft_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    if (!res || (!node && !service))
        return -EINVAL;
    gai_call g = {node, service, hints, res, 0};
    /* numeric addresses need no lookup: skip the pool for them */
    if (node) {
        struct addrinfo h = hints ? *hints : (struct addrinfo){0};
        h.ai_flags |= AI_NUMERICHOST;
        if (getaddrinfo(node, service, &h, res) == 0)
            return 0;
    }
    int r = weft_blocking(run_gai, &g, NULL);
    return r < 0 ? r : g.err;
}

/*
 * A lookup its caller may leave at a deadline (weft_tcp_dial's). getaddrinfo cannot be stopped once it
 * runs, and may wait for a DNS server that never answers for as long as the resolver's own timeouts say
 * (10 s by default): a dial given 200 ms took 10 s. So the lookup runs apart from its caller: from a
 * fiber, on the blocking pool, through a detached fiber of its own; from any other thread, on a kernel
 * thread of its own. The caller waits for it on a semaphore, with its deadline. The caller and the lookup
 * each hold a reference; the last to let go frees it, with the addresses if the caller left without them.
 */
typedef struct {
    _Atomic int refs;
    weft_sem_t done;       /* released once the lookup has finished */
    char *node;            /* a copy: the caller's string may be gone before the lookup ends */
    char service[8];
    struct addrinfo hints;
    struct addrinfo *res;  /* written by the lookup; taken by the caller after done, if it still waits */
    int err;
} lookup;

static void lookup_drop(lookup *l)
{
    /* acq_rel: the last to let go sees everything the other wrote before it let go */
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (l->res)
        freeaddrinfo(l->res);
    weft_sem_destroy(&l->done);
    free(l->node);
    free(l);
}

static void lookup_finish(lookup *l, int err)
{
    l->err = err;
    weft_sem_release(&l->done, 1); /* orders res and err before the caller's acquire */
    lookup_drop(l);
}

static void *lookup_on_pool(void *arg)
{
    lookup *l = arg;
    gai_call g = {l->node, l->service, &l->hints, &l->res, 0};
    int r = weft_blocking(run_gai, &g, NULL);
    lookup_finish(l, r < 0 ? r : g.err);
    return NULL;
}

static void *lookup_on_thread(void *arg)
{
    lookup *l = arg;
    lookup_finish(l, eai_to_errno(getaddrinfo(l->node, l->service, &l->hints, &l->res)));
    return NULL;
}

/* Start the lookup apart from the caller. 0, or < 0 when nothing could be started. */
static int lookup_start(lookup *l)
{
    if (weft__on_worker())
        return weft_go(lookup_on_pool, l);
    pthread_attr_t a;
    pthread_t t;
    if (pthread_attr_init(&a) != 0)
        return -ENOMEM;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &a, lookup_on_thread, l);
    pthread_attr_destroy(&a);
    return -r;
}

static int resolve(const char *host, int port, int passive, int64_t deadline, struct addrinfo **res)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    char svc[8];
    snprintf(svc, sizeof svc, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG};
    const char *node = host && *host ? host : NULL;
    if (deadline == WEFT_FOREVER || !node)
        return weft_getaddrinfo(node, svc, &hints, res);
    struct addrinfo numeric = hints;
    numeric.ai_flags |= AI_NUMERICHOST;
    if (getaddrinfo(node, svc, &numeric, res) == 0)
        return 0; /* a numeric address needs no lookup */
    if (deadline == WEFT_NOWAIT)
        return -ETIMEDOUT;
    lookup *l = calloc(1, sizeof *l);
    if (!l || !(l->node = strdup(node))) {
        free(l);
        return -ENOMEM;
    }
    memcpy(l->service, svc, sizeof svc);
    l->hints = hints;
    atomic_init(&l->refs, 2);
    weft_sem_init(&l->done, 0);
    if (lookup_start(l) < 0) {
        /* no fiber or thread for it: both references are ours; look it up right here, without the
         * deadline */
        lookup_drop(l);
        lookup_drop(l);
        return weft_getaddrinfo(node, svc, &hints, res);
    }
    int r = weft_sem_acquire(&l->done, deadline);
    if (r == 0) {
        r = l->err;
        if (r == 0) {
            *res = l->res;
            l->res = NULL;
        }
    }
    lookup_drop(l); /* at the deadline the lookup goes on alone, and frees what it finds */
    return r;
}

static int listen_on(const struct sockaddr *sa, socklen_t len, int backlog, int reuse)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -weft__errno();
    int one = 1;
    if (reuse)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int r = 0;
    if (bind(fd, sa, len) < 0 || listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
        r = -weft__errno();
    if (r == 0)
        r = weft__fd_adopt(fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

int weft_tcp_listen(const char *host, int port, int backlog)
{
    struct addrinfo *ai = NULL;
    int r = resolve(host, port, 1, WEFT_FOREVER, &ai);
    if (r < 0)
        return r;
    r = -EADDRNOTAVAIL;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        r = listen_on(a->ai_addr, a->ai_addrlen, backlog, 1);
        if (r >= 0)
            break;
    }
    freeaddrinfo(ai);
    return r;
}

static int dial(const struct sockaddr *sa, socklen_t len, int64_t deadline)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -weft__errno();
    int r = weft__fd_adopt(fd);
    if (r == 0)
        r = weft_connect(fd, sa, len, deadline);
    if (r < 0) {
        weft_close(fd);
        return r;
    }
    if (sa->sa_family != AF_UNIX)
        set_nodelay(fd);
    return fd;
}

int weft_tcp_dial(const char *host, int port, int64_t deadline)
{
    struct addrinfo *ai = NULL;
    int r = resolve(host, port, 0, deadline, &ai);
    if (r < 0)
        return r;
    r = -EADDRNOTAVAIL;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        r = dial(a->ai_addr, a->ai_addrlen, deadline);
        if (r >= 0 || r == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(ai);
    return r;
}

static int unix_addr(const char *path, struct sockaddr_un *un, socklen_t *len)
{
    if (!path)
        return -EINVAL;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un->sun_path)
        return -ENAMETOOLONG;
    memset(un, 0, sizeof *un);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int weft_unix_listen(const char *path, int backlog)
{
    struct sockaddr_un un;
    socklen_t len;
    int r = unix_addr(path, &un, &len);
    return r < 0 ? r : listen_on((struct sockaddr *)&un, len, backlog, 0);
}

int weft_unix_dial(const char *path, int64_t deadline)
{
    struct sockaddr_un un;
    socklen_t len;
    int r = unix_addr(path, &un, &len);
    return r < 0 ? r : dial((struct sockaddr *)&un, len, deadline);
}
