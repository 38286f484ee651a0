/*
 * qt_optim.h - the optimizer (libqt_optim): AdamW over a paramset's flat buffers, and
 * global-norm clipping's two passes over its grads. Needs the engine only, so anything
 * that trains with qt_autograd links it without the training loop.
 *
 * AdamW follows torch.optim.AdamW (Loshchilov & Hutter, decoupled weight decay), the
 * single-tensor path: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). Parameters flagged
 * QT_PARAM_NO_DECAY (norms, biases) get no weight decay; frozen ones are skipped.
 */
#ifndef QT_OPTIM_H
#define QT_OPTIM_H

#include "qt_autograd.h"

typedef struct {
    float lr;
    float beta1, beta2;
    float eps;
    float weight_decay;
} qt_adamw_config;

typedef struct {
    qt_adamw_config cfg;
    float *m;     /* (n) first moments, laid out as the paramset's flat grad buffer */
    float *v;     /* (n) second moments */
    size_t n;
    size_t lo;    /* m[0] is grad element lo (ZeRO-1's slice; 0 for the whole buffer) */
    int64_t step; /* steps taken */
    float *dm, *dv; /* (n) the moments on the GPU while the paramset is there, else NULL */
    qt_device ddev; /* where dm, dv live */
} qt_adamw;

/* Moments sized to ps->n_grad, zeroed. ps must be allocated. */
qt_status qt_adamw_init(qt_adamw *opt, const qt_paramset *ps, qt_adamw_config cfg);
/* Moments for grad elements [lo, hi) only (ZeRO-1: each rank steps its slice of the
 * flat buffer; AdamW is elementwise, so the slices together are the whole update). */
qt_status qt_adamw_init_slice(qt_adamw *opt, const qt_paramset *ps, qt_adamw_config cfg,
                              size_t lo, size_t hi);
void qt_adamw_free(qt_adamw *opt);
/* One update of every non-frozen parameter from its grad, at learning rate lr (the
 * schedule's value for this step), on the device the paramset is on (its moments must
 * be there too: qt_adamw_to_device). Does not zero the grads. */
qt_status qt_adamw_step(qt_adamw *opt, qt_paramset *ps, float lr);
/* The moments follow the paramset to its device (call after qt_paramset_to), and
 * qt_adamw_pull copies them back to m/v for a checkpoint. */
qt_status qt_adamw_to_device(qt_adamw *opt, const qt_paramset *ps);
qt_status qt_adamw_pull(qt_adamw *opt, const qt_paramset *ps);
/* Sum of squares of every grad (on the paramset's device), and grads *= s: the global
 * norm clipping's two passes. */
qt_status qt_grad_sumsq(const qt_paramset *ps, double *out);
qt_status qt_grad_scale(qt_paramset *ps, float s);
/* The same over grad elements [lo, hi) (ZeRO-1's slice). */
qt_status qt_grad_sumsq_range(const qt_paramset *ps, size_t lo, size_t hi, double *out);
qt_status qt_grad_scale_range(qt_paramset *ps, size_t lo, size_t hi, float s);

#endif /* QT_OPTIM_H */
