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

#include "qt_optim.h"
#ifdef QT_HAVE_CUDA
#include "qt_cuda.h"
#endif

qt_status qt_adamw_init_slice(qt_adamw *opt, const qt_paramset *ps, qt_adamw_config cfg,
                              size_t lo, size_t hi) {
    opt->cfg = cfg;
    opt->lo = lo;
    opt->n = hi > lo && hi <= ps->n_grad ? hi - lo : 0;
    opt->step = 0;
    opt->dm = opt->dv = NULL; /* qt_adamw_to_device */
    opt->m = calloc(opt->n ? opt->n : 1, sizeof(float));
    opt->v = calloc(opt->n ? opt->n : 1, sizeof(float));
    if (!opt->m || !opt->v) {
        qt_adamw_free(opt);
        return QT_ERROR(QT_ENOMEM, "adamw: cannot allocate state for %zu parameters", hi - lo);
    }
    if (!(cfg.lr >= 0.0f) || !(cfg.beta1 >= 0.0f && cfg.beta1 < 1.0f) ||
        !(cfg.beta2 >= 0.0f && cfg.beta2 < 1.0f) || !(cfg.eps > 0.0f) || !(cfg.weight_decay >= 0.0f)) {
        qt_adamw_free(opt);
        return QT_ERROR(QT_EINVAL, "adamw: need lr >= 0, betas in [0, 1), eps > 0, "
                                   "weight_decay >= 0");
    }
    return QT_OK;
}

qt_status qt_adamw_init(qt_adamw *opt, const qt_paramset *ps, qt_adamw_config cfg) {
    return qt_adamw_init_slice(opt, ps, cfg, 0, ps->n_grad);
}

void qt_adamw_free(qt_adamw *opt) {
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
    if (opt->dm) qt_device_free(opt->ddev, opt->dm);
    if (opt->dv) qt_device_free(opt->ddev, opt->dv);
    opt->dm = opt->dv = NULL;
}

qt_status qt_adamw_to_device(qt_adamw *opt, const qt_paramset *ps) {
    if (ps->device.kind == QT_DEV_CPU || opt->dm) return QT_OK;
    size_t b = (opt->n ? opt->n : 1) * sizeof(float);
    opt->ddev = ps->device;
    opt->dm = qt_device_alloc(ps->device, b);
    opt->dv = qt_device_alloc(ps->device, b);
    if (!opt->dm || !opt->dv) return QT_ERROR(QT_ENOMEM, "adamw: moments on the GPU: %s",
                                              qt_error_message());
    const qt_device cpu = {QT_DEV_CPU, 0};
    qt_status st = qt_device_copy(ps->device, opt->dm, cpu, opt->m, opt->n * sizeof(float));
    if (st == QT_OK) st = qt_device_copy(ps->device, opt->dv, cpu, opt->v, opt->n * sizeof(float));
    return st;
}

qt_status qt_adamw_pull(qt_adamw *opt, const qt_paramset *ps) {
    if (!opt->dm) return QT_OK;
    const qt_device cpu = {QT_DEV_CPU, 0};
    qt_status st = qt_device_copy(cpu, opt->m, ps->device, opt->dm, opt->n * sizeof(float));
    if (st == QT_OK) st = qt_device_copy(cpu, opt->v, ps->device, opt->dv, opt->n * sizeof(float));
    return st;
}

qt_status qt_grad_sumsq_range(const qt_paramset *ps, size_t lo, size_t hi, double *out) {
    if (hi > ps->n_grad) hi = ps->n_grad;
    *out = 0.0;
    if (lo >= hi) return QT_OK;
    if (ps->dgrad) {
#ifdef QT_HAVE_CUDA
        return qt_cuda_sumsq(ps->dgrad + lo, hi - lo, out);
#else
        return QT_ERROR(QT_EDEVICE, "grad_sumsq: built without CUDA");
#endif
    }
    double sq = 0.0;
    for (size_t i = lo; i < hi; i++) sq += (double)ps->grad[i] * ps->grad[i];
    *out = sq;
    return QT_OK;
}

qt_status qt_grad_scale_range(qt_paramset *ps, size_t lo, size_t hi, float s) {
    if (hi > ps->n_grad) hi = ps->n_grad;
    if (lo >= hi) return QT_OK;
    if (ps->dgrad) {
#ifdef QT_HAVE_CUDA
        return qt_cuda_scale(ps->dgrad + lo, hi - lo, s);
#else
        return QT_ERROR(QT_EDEVICE, "grad_scale: built without CUDA");
#endif
    }
    for (size_t i = lo; i < hi; i++) ps->grad[i] *= s;
    return QT_OK;
}

qt_status qt_grad_sumsq(const qt_paramset *ps, double *out) {
    return qt_grad_sumsq_range(ps, 0, ps->n_grad, out);
}

qt_status qt_grad_scale(qt_paramset *ps, float s) {
    return qt_grad_scale_range(ps, 0, ps->n_grad, s);
}

qt_status qt_adamw_step(qt_adamw *opt, qt_paramset *ps, float lr) {
    bool gpu = ps->ddata != NULL;
    if (gpu != (opt->dm != NULL) ||
        (gpu && (opt->ddev.kind != ps->device.kind || opt->ddev.index != ps->device.index)))
        return QT_ERROR(QT_ESTATE, "adamw: the moments are on %s, the parameters on %s "
                                   "(qt_adamw_to_device after qt_paramset_to)",
                        opt->dm ? qt_device_name(opt->ddev) : "cpu", qt_device_name(ps->device));
#ifndef QT_HAVE_CUDA
    if (gpu) return QT_ERROR(QT_EDEVICE, "adamw: built without CUDA");
#endif
    opt->step++;
    const qt_adamw_config *c = &opt->cfg;
    double bc1 = 1.0 - pow((double)c->beta1, (double)opt->step);
    double bc2 = 1.0 - pow((double)c->beta2, (double)opt->step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1c = 1.0f - c->beta1, b2 = c->beta2, b2c = 1.0f - c->beta2, eps = c->eps;
    size_t lo = opt->lo, hi = opt->lo + opt->n; /* the grad elements this optimizer owns */
    for (int i = 0; i < ps->n; i++) {
        if (ps->goffset[i] == (size_t)-1) continue; /* frozen */
        size_t g0 = ps->goffset[i], g1 = g0 + (size_t)qt_numel(ps->params[i]);
        if (g0 < lo) g0 = lo;
        if (g1 > hi) g1 = hi;
        if (g0 >= g1) continue; /* another rank's (ZeRO-1) */
        size_t at = ps->offset[i] + (g0 - ps->goffset[i]); /* the values of grad g0 */
        int64_t n = (int64_t)(g1 - g0);
        float decay = (ps->flags[i] & QT_PARAM_NO_DECAY) ? 1.0f : 1.0f - lr * c->weight_decay;
        if (gpu) { /* the same update on the GPU */
#ifdef QT_HAVE_CUDA
            qt_status st = qt_cuda_adamw(ps->ddata + at, ps->dgrad + g0, opt->dm + (g0 - lo),
                                         opt->dv + (g0 - lo), (size_t)n, decay, b1c, b2, b2c,
                                         eps, step_size, bc2_sqrt);
            if (st != QT_OK) return st;
#endif
            continue;
        }
        float *p = ps->data + at;
        const float *g = ps->grad + g0;
        float *m = opt->m + (g0 - lo), *v = opt->v + (g0 - lo);
#pragma omp parallel for schedule(static) if (n > 32768)
        for (int64_t j = 0; j < n; j++) {
            float gj = g[j];
            p[j] *= decay;
            m[j] += (gj - m[j]) * b1c;
            v[j] = v[j] * b2 + b2c * gj * gj;
            p[j] -= step_size * (m[j] / (sqrtf(v[j]) / bc2_sqrt + eps));
        }
    }
    return QT_OK;
}
