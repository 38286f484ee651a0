/* cli.h - the subcommands of the qtrain binary (private to train/). */
#ifndef QT_CLI_H
#define QT_CLI_H

#include <stdbool.h>

/* Whole-string base-10 integer; false on junk, overflow or empty. */
bool qt_cli_parse_long(const char *s, long *out);

int qt_cmd_demo(int argc, char **argv);

#endif
