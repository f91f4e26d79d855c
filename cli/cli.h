#ifndef WEFT_CLI_H
#define WEFT_CLI_H

/* Each subcommand gets argv from its own name on. Returns the exit status. */
int cmd_bench(int argc, char **argv);

#endif
