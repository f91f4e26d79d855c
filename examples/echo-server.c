/*
 * A TCP echo server: one fiber per connection sends back every byte it gets.
 *
 *   echo-server [-p PORT] [-w WORKERS]     listens on 127.0.0.1:PORT (7000), until SIGINT or SIGTERM
 *
 * The code reads like a blocking server's; weft_read parks only the connection's fiber, and the worker
 * serves the others meanwhile. serve.c does the listening, the accepting and the clean end.
 */
#include <stdint.h>

#include <weft.h>

#include "serve.h"

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

int main(int argc, char **argv)
{
    return serve(argc, argv, 7000, echo);
}
