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
    char lora[QT_PATH_MAX + 64]; /* what was merged in: "LoRA r 4 on the float base"
                                  * (a LoRA checkpoint, or export --merge); "" if none */
} qt_cli_model;

/* Loads MODEL (a qtrain checkpoint, an HF directory, quantized or not, or a GGUF file),
 * then QAT: the qat: section of `qat_recipe` when given, else the checkpoint's own. On
 * failure prints the reason for `cmd` and returns the exit code; 0 on success. */
int qt_cli_load(const char *cmd, const char *path, const char *qat_recipe, qt_cli_model *t);
/* The same; merge_lora false keeps a LoRA checkpoint's frozen base (its adapters
 * unused), as it was stored. */
int qt_cli_load_as(const char *cmd, const char *path, const char *qat_recipe, bool merge_lora,
                   qt_cli_model *t);
void qt_cli_model_free(qt_cli_model *t);

/* A LoRA run's checkpoint at path (r: its own recipe; nothing to do without a lora:
 * section), loaded into m (the base): attaches the adapters as r's lora: section says
 * (lora.base nf4: onto the NF4 base), loads them from the checkpoint's buffers and merges
 * them, W = base + scaling B A, so m is a plain float model equal to the adapter model.
 * Prints one line to stderr; desc (may be NULL) gets "LoRA r 4 on the float base", or ""
 * without LoRA. (loop.c) */
qt_status qt_checkpoint_lora_merge(const char *path, const qt_recipe *r, qt_model *m,
                                   char *desc, size_t n);
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
