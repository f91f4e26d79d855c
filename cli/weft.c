/*
 * The weft command. One file per subcommand; this one dispatches.
 */
#include <stdio.h>
#include <string.h>

#include <weft.h>

#include "cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: weft <command> [options]\n"
            "\n"
            "commands:\n"
            "  bench [--quick] [NAME...]   measure weft's core costs on this machine: switch, handoff,\n"
            "                              spawn, parked, fib, units (default: all)\n"
            "  version                     print the version\n"
            "  help                        this text\n"
            "\n"
            "environment: WEFT_WORKERS (worker threads), WEFT_STACK_SIZE (default fiber stack, e.g. 256k),\n"
            "             WEFT_SPIN_US (how long an idle worker spins before it sleeps),\n"
            "             WEFT_BLOCKING_THREADS (most threads of the blocking-call pool),\n"
            "             WEFT_STUCK_US (how long a fiber may run without yielding before its worker\n"
            "             moves to a fresh thread; negative: never)\n"
            "\n"
            "Side by side with Go, Boost, oneTBB and OpenMP: `make bench` in the source tree.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("weft %s\n", WEFT_VERSION_STRING);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "weft: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
