/* qat_recipe.h - the recipe's qat: section as a qt_qat_config (private to train/). */
#ifndef QT_QAT_RECIPE_H
#define QT_QAT_RECIPE_H

#include "qt_qat.h"
#include "recipe.h"

#define QT_QAT_MAX_GLOBS 32

typedef struct {
    qt_qat_config cfg;       /* cfg.layers points into globs below */
    char globs[QT_QAT_MAX_GLOBS][128];
    const char *ptrs[QT_QAT_MAX_GLOBS];
} qt_recipe_qat;

/* Builds and checks the config (everything that does not need the model's shapes);
 * messages name `path` and the key. Call only when qt_recipe_has_qat(r). */
/* A recipe's weight format (qat.weight.*, quantize.*; k names the keys in messages) as
 * a qt_qformat, checked. */
qt_status qt_recipe_wformat(const qt_recipe_wfmt *w, const char *path, const char *k,
                            qt_qformat *f);
qt_status qt_recipe_qat_config(const qt_recipe *r, const char *path, qt_recipe_qat *out);
/* When the recipe asks for QAT: prepares it on m (*q set, fake-quant enabled), else
 * *q = NULL. `out` must live as long as *q. */
qt_status qt_recipe_qat_prepare(const qt_recipe *r, const char *path, qt_model *m,
                                qt_recipe_qat *out, qt_qat **q);

#endif
