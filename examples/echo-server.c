/*
 * A TCP echo server: one fiber per connection sends back every byte it gets.
 *
 *   echo-server [-p PORT] [-w WORKERS]     listens on 127.0.0.1:PORT (7000), until SIGINT or SIGTERM
 *
 * The code reads like a blocking server's; weft_read parks only the connection's fiber, and the worker
 * serves the others meanwhile.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <weft.h>

static void *echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf, WEFT_FOREVER)) > 0)
        if (weft_write(fd, buf, (size_t)n, WEFT_FOREVER) != n)
            break;
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
        perror("echo-server: signalfd");
        exit(1);
    }
    int lfd = weft_tcp_listen("127.0.0.1", port, 0);
    if (lfd < 0) {
        fprintf(stderr, "echo-server: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(-lfd));
        exit(1);
    }
    weft_go(await_signal, (void *)(intptr_t)sfd);
    for (;;) {
        int c = weft_accept(lfd, NULL, NULL, WEFT_FOREVER);
        if (c >= 0 && weft_go(echo, (void *)(intptr_t)c) < 0)
            weft_close(c);
    }
}

int main(int argc, char **argv)
{
    int port = 7000, opt;
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
