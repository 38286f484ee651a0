/* cli.h - the verbs of the qtrain program and the helpers they share (private to cli/).
 * Only this layer prints and picks exit codes: 0 ok, 1 runtime failure, 2 bad usage or
 * bad input. */
#ifndef QT_CLI_H
#define QT_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "qt_train.h"

/* Whole-string base-10 integer; false on junk, overflow or empty. */
bool qt_cli_parse_long(const char *s, long *out);
/* A flag's integer value >= lo, or a message for `cmd` on stderr and false. */
bool qt_cli_flag_long(const char *cmd, const char *flag, const char *v, long lo, long *out);
/* A flag's positive finite number, or a message for `cmd` on stderr and false. */
bool qt_cli_flag_float(const char *cmd, const char *flag, const char *v, float *out);

/* Exit code for a failed status: 2 for bad usage or input, 1 for runtime failures. */
int qt_cli_exit_code(qt_status st);
/* "qtrain CMD: <the thread's error message>" on stderr; the exit code for st. */
int qt_cli_fail(const char *cmd, qt_status st);

/* What the libraries report (qt_log) goes to stderr for `cmd` (stdout is a verb's
 * result): notes as they are, warnings and errors as "qtrain CMD: ...". */
void qt_cli_log_to_stderr(const char *cmd);

/* qt_model_open for `cmd`: on failure prints the reason and returns the exit code, 0 on
 * success (free with qt_model_close). */
int qt_cli_open(const char *cmd, const qt_model_source *src, qt_loaded_model *lm);
/* qt_read_tokens for `cmd`: on failure prints the reason and returns the exit code. */
int qt_cli_read_tokens(const char *cmd, const char *path, const qt_tokenizer *tok,
                       int32_t **ids, size_t *n);
/* One line: "LABEL: 512 tokens: perplexity reference 7.49, candidate 7.53 (+0.53%); KL
 * divergence mean ..., p99 ..., max ...; top-1 agreement 98.70%" */
void qt_cli_print_compare(const char *label, const qt_compare_result *r);
/* "qtrain CMD: reference: the merged adapter model (LORA)" when lora is not "". */
void qt_cli_print_reference(const char *cmd, const char *lora);
/* Reads back the exported file at `path` and prints its parity report against ref;
 * the exit code (0 on success). */
int qt_cli_compare_file(const char *cmd, qt_model *ref, const char *path, const int32_t *ids,
                        long n, long context, long stride);

int qt_cmd_demo(int argc, char **argv);
int qt_cmd_train(int argc, char **argv);
int qt_cmd_eval(int argc, char **argv);
int qt_cmd_generate(int argc, char **argv);
int qt_cmd_info(int argc, char **argv);
int qt_cmd_quantize(int argc, char **argv);
int qt_cmd_export(int argc, char **argv);
int qt_cmd_compare(int argc, char **argv);

#endif
