/* loop.h - the recipe-driven training loop and byte-level sampling (private to train/). */
#ifndef QT_LOOP_H
#define QT_LOOP_H

#include "qt_layers.h"
#include "recipe.h"

typedef struct {
    long steps;          /* optimizer steps taken */
    long skipped_steps;  /* non-finite steps skipped */
    double first_loss, last_loss, val_loss, val_ppl, seconds;
} qt_train_result;

/* Learning rate at `step` (0-based): linear warmup to lr over `warmup` steps, then decay
 * ("cosine" | "linear" | "constant") to min_ratio * lr at the last step. */
float qt_lr_at(long step, long steps, float lr, long warmup, const char *decay, float min_ratio);

qt_status qt_train_run(const qt_recipe *r, qt_train_result *res);

/* Samples n_new bytes after prompt (temperature T, seeded), context capped at max_ctx. */
qt_status qt_generate_bytes(qt_ctx *ctx, qt_llama *m, const char *prompt, int n_new,
                            int max_ctx, float temperature, uint64_t seed, char *out,
                            size_t out_size);

#endif
