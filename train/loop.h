/* loop.h - the recipe-driven training loop and byte-level sampling (private to train/). */
#ifndef QT_LOOP_H
#define QT_LOOP_H

#include "qt_data.h"
#include "qt_layers.h"
#include "recipe.h"

typedef struct {
    long steps;          /* optimizer steps taken */
    long skipped_steps;  /* non-finite steps skipped */
    double first_loss, last_loss, val_loss, val_ppl, seconds;
    /* optional, for tests: the loss of each step (index = step) and the final weights */
    double *losses;
    long max_losses;
    float *weights;
    size_t max_weights;
} qt_train_result;

/* Monotonic wall-clock seconds, for rates and ETAs. */
double qt_now_s(void);

/* Learning rate at `step` (0-based): linear warmup to lr over `warmup` steps, then decay
 * ("cosine" | "linear" | "constant") to min_ratio * lr at the last step. */
float qt_lr_at(long step, long steps, float lr, long warmup, const char *decay, float min_ratio);

typedef struct {
    bool resume;  /* continue from output.dir/checkpoint.h5 */
    long stop_at; /* > 0: checkpoint and stop after this many steps (of the full schedule) */
    const char *recipe_path; /* names the recipe in messages; NULL = "recipe" */
    struct qt_dist *dist;    /* this rank of a data-parallel job; NULL = a single process */
} qt_train_opts;

/* Trains as the recipe says. The caller may set res->losses / res->weights before the
 * call (other fields are overwritten). */
qt_status qt_train_run(const qt_recipe *r, const qt_train_opts *opts, qt_train_result *res);

/* The model a recipe asks for: loaded from model.from (an HF directory or a .gguf file)
 * or new from the sizes; and its tokenizer (NULL for bytes). Free both on success. */
qt_status qt_recipe_model(const qt_recipe *r, qt_model *m, qt_tokenizer **tok);
/* The longest context the model takes (its max positions; 2048 if unbounded). */
int qt_model_context(const qt_model *m);
/* Samples up to n_new tokens after prompt (temperature T, seeded), stopping at EOS;
 * context capped at max_ctx. *out: malloc'd text (prompt included). tok NULL = bytes. */
qt_status qt_generate(qt_ctx *ctx, qt_model *m, const qt_tokenizer *tok, const char *prompt,
                      int n_new, int max_ctx, float temperature, uint64_t seed, char **out);

#endif
