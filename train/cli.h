/* cli.h - the subcommands of the qtrain binary (private to train/). */
#ifndef QT_CLI_H
#define QT_CLI_H

#include <stdbool.h>

/* Whole-string base-10 integer; false on junk, overflow or empty. */
bool qt_cli_parse_long(const char *s, long *out);

#include "qt_autograd.h"
#include "checkpoint.h"
#include "qat_recipe.h"
#include "qt_data.h"
#include "recipe.h"

/* A model a command works on, as its file describes it (cmd_model.c). */
typedef struct {
    qt_recipe r;       /* the recipe it was trained with (a pretrained file: defaults) */
    qt_model m;
    qt_tokenizer *tok; /* NULL: bytes */
    qt_ckpt_state cs;
    qt_recipe_qat qcfg;
    qt_qat *qat;       /* fake-quant as the recipe's qat: section says, or NULL */
    const char *path;  /* the qtrain checkpoint it came from, NULL for HF / GGUF */
} qt_cli_model;

/* Loads MODEL (a qtrain checkpoint, an HF directory, quantized or not, or a GGUF file),
 * then QAT: the qat: section of `qat_recipe` when given, else the checkpoint's own. On
 * failure prints the reason for `cmd` and returns the exit code; 0 on success. */
int qt_cli_load(const char *cmd, const char *path, const char *qat_recipe, qt_cli_model *t);
void qt_cli_model_free(qt_cli_model *t);
/* Reads a text file and tokenizes it (tok NULL: bytes). Prints the reason for `cmd` and
 * returns the exit code on failure; *ids malloc'd. */
int qt_cli_read_tokens(const char *cmd, const char *path, const qt_tokenizer *tok,
                       int32_t **ids, size_t *n);

/* Exit code for a failed status: 2 for bad usage or input, 1 for runtime failures. */
int qt_cli_exit_code(qt_status st);

int qt_cmd_demo(int argc, char **argv);
int qt_cmd_train(int argc, char **argv);
int qt_cmd_eval(int argc, char **argv);
int qt_cmd_generate(int argc, char **argv);
int qt_cmd_info(int argc, char **argv);
int qt_cmd_quantize(int argc, char **argv);
int qt_cmd_export(int argc, char **argv);
int qt_cmd_compare(int argc, char **argv);

#endif
