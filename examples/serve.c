/*
 * The example servers' shared frame (see serve.h). SIGINT and SIGTERM are blocked in every thread and
 * read from a signalfd by a fiber, as data: no handler runs inside weft's code.
 */
#include "serve.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static const char *prog;
static int port;
static weft_fn per_connection;

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
    sigset_t *stop = arg;
    int sfd = signalfd(-1, stop, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "%s: signalfd: %s\n", prog, strerror(errno));
        exit(1);
    }
    int lfd = weft_tcp_listen("127.0.0.1", port, 0);
    if (lfd < 0) {
        fprintf(stderr, "%s: cannot listen on 127.0.0.1:%d: %s\n", prog, port, strerror(-lfd));
        exit(1);
    }
    weft_go(await_signal, (void *)(intptr_t)sfd);
    for (;;) {
        int c = weft_accept(lfd, NULL, NULL, WEFT_FOREVER);
        if (c >= 0 && weft_go(per_connection, (void *)(intptr_t)c) < 0)
            weft_close(c);
    }
}

int serve(int argc, char **argv, int default_port, weft_fn connection)
{
    const char *slash = strrchr(argv[0], '/');
    prog = slash ? slash + 1 : argv[0];
    port = default_port;
    per_connection = connection;
    weft_config_t cfg = {0};
    int opt;
    while ((opt = getopt(argc, argv, "p:w:")) != -1) {
        if (opt == 'p')
            port = atoi(optarg);
        else if (opt == 'w')
            cfg.workers = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-p PORT] [-w WORKERS]\n", prog);
            return 2;
        }
    }
    static sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* before any thread starts: they all inherit it */
    return weft_run(&cfg, accept_loop, &stop, NULL) < 0;
}
