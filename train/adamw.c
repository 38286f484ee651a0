/*
 * adamw.c - AdamW (Loshchilov & Hutter 2019) over a paramset's flat buffers, written
 * to match torch.optim.AdamW's single-tensor path step for step:
 *   p *= 1 - lr*wd                      (skipped for QT_PARAM_NO_DECAY)
 *   m += (g - m) * (1 - b1)             (torch's lerp_)
 *   v  = b2 v + (1 - b2) g^2
 *   p -= lr/(1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Bias corrections are computed in double, as Python floats are in torch.
 */
#include <math.h>
#include <stdlib.h>

#include "qt_train.h"

qt_status qt_adamw_init(qt_adamw *opt, const qt_paramset *ps, qt_adamw_config cfg) {
    opt->cfg = cfg;
    opt->n = ps->n_grad;
    opt->step = 0;
    opt->m = calloc(opt->n ? opt->n : 1, sizeof(float));
    opt->v = calloc(opt->n ? opt->n : 1, sizeof(float));
    if (!opt->m || !opt->v) {
        qt_adamw_free(opt);
        return QT_ERROR(QT_ENOMEM, "adamw: cannot allocate state for %zu parameters", ps->n_grad);
    }
    if (!(cfg.lr >= 0.0f) || !(cfg.beta1 >= 0.0f && cfg.beta1 < 1.0f) ||
        !(cfg.beta2 >= 0.0f && cfg.beta2 < 1.0f) || !(cfg.eps > 0.0f) || !(cfg.weight_decay >= 0.0f)) {
        qt_adamw_free(opt);
        return QT_ERROR(QT_EINVAL, "adamw: need lr >= 0, betas in [0, 1), eps > 0, "
                                   "weight_decay >= 0");
    }
    return QT_OK;
}

void qt_adamw_free(qt_adamw *opt) {
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

void qt_adamw_step(qt_adamw *opt, qt_paramset *ps, float lr) {
    opt->step++;
    const qt_adamw_config *c = &opt->cfg;
    double bc1 = 1.0 - pow((double)c->beta1, (double)opt->step);
    double bc2 = 1.0 - pow((double)c->beta2, (double)opt->step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1c = 1.0f - c->beta1, b2 = c->beta2, b2c = 1.0f - c->beta2, eps = c->eps;
    for (int i = 0; i < ps->n; i++) {
        if (ps->goffset[i] == (size_t)-1) continue; /* frozen */
        float *p = ps->data + ps->offset[i];
        const float *g = ps->grad + ps->goffset[i];
        float *m = opt->m + ps->goffset[i], *v = opt->v + ps->goffset[i];
        int64_t n = qt_numel(ps->params[i]);
        float decay = (ps->flags[i] & QT_PARAM_NO_DECAY) ? 1.0f : 1.0f - lr * c->weight_decay;
#pragma omp parallel for schedule(static) if (n > 32768)
        for (int64_t j = 0; j < n; j++) {
            float gj = g[j];
            p[j] *= decay;
            m[j] += (gj - m[j]) * b1c;
            v[j] = v[j] * b2 + b2c * gj * gj;
            p[j] -= step_size * (m[j] / (sqrtf(v[j]) / bc2_sqrt + eps));
        }
    }
}
