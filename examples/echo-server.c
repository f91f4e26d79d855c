/*
 * A TCP echo server: one fiber per connection sends back every byte it gets.
 *
 *   echo-server [-p PORT] [-w WORKERS] [-i IDLE] [-g GRACE]     listens on 127.0.0.1:PORT (7000)
 *
 * The code reads like a blocking server's; weft_read parks only the connection's fiber, and the worker
 * serves the others meanwhile. A client that sends nothing for IDLE seconds, or takes nothing back for
 * as long, is closed. serve.c does the listening, the accepting, the closing and the drain (serve.h).
 */
#include <weft.h>

#include "serve.h"

static void echo(serve_conn *c)
{
    int fd = serve_fd(c);
    char buf[16384];
    ssize_t n;
    while ((n = serve_read_idle(c, buf, sizeof buf)) > 0)
        if (weft_write(fd, buf, (size_t)n, weft_deadline_in(serve_limit.idle_ns)) != n)
            break;
}

int main(int argc, char **argv)
{
    static const serve_spec echo_server = {.port = 7000, .connection = echo};
    return serve(argc, argv, &echo_server);
}
