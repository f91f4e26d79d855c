/*
 * What the example servers share: the command line, the listening socket, a fiber per connection, and
 * a clean end on SIGINT or SIGTERM.
 *
 *   PROG [-p PORT] [-w WORKERS]     listens on 127.0.0.1:PORT until SIGINT or SIGTERM, then exits 0
 */
#ifndef SERVE_H
#define SERVE_H

#include <weft.h>

/* Parse argv, start weft with WORKERS (0: one per CPU), listen on 127.0.0.1:PORT (default_port when -p
 * is not given), and run connection((void *)(intptr_t)fd) in a fiber of its own for every connection
 * accepted; the fiber owns fd and closes it with weft_close. Returns only on bad arguments (2) or when
 * weft cannot start (1). */
int serve(int argc, char **argv, int default_port, weft_fn connection);

#endif
