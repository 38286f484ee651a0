/* cli.h - the subcommands of the qtrain binary (private to train/). */
#ifndef QT_CLI_H
#define QT_CLI_H

#include <stdbool.h>

/* Whole-string base-10 integer; false on junk, overflow or empty. */
bool qt_cli_parse_long(const char *s, long *out);

#include "qt_autograd.h"

/* Exit code for a failed status: 2 for bad usage or input, 1 for runtime failures. */
int qt_cli_exit_code(qt_status st);

int qt_cmd_demo(int argc, char **argv);
int qt_cmd_train(int argc, char **argv);
int qt_cmd_eval(int argc, char **argv);
int qt_cmd_generate(int argc, char **argv);
int qt_cmd_info(int argc, char **argv);

#endif
