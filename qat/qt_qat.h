/*
 * qt_qat.h - quantization-aware training: fake-quant ops for weights and activations,
 * and prepare / convert of a model from a recipe's `qat:` section.
 *
 * Every weight fake-quant calls the quantizer core (ptq/qt_quant.h), so the values a
 * QAT model computes with are exactly dequantize(quantize(W)) of the format it will be
 * exported in.
 *
 * Gradients are the straight-through estimator as torch.fake_quantize_per_channel_affine
 * computes it: dy passes where the value was inside the format's clipping range and is
 * zero where it was clipped (for formats whose scale comes from the absmax of the block,
 * NF4/FP4/GGUF, nothing clips and the gradient passes everywhere). The learnable variant
 * (LSQ, Esser et al. 2019) follows torch._fake_quantize_learnable_per_channel_affine.
 */
#ifndef QT_QAT_H
#define QT_QAT_H

#include "qt_autograd.h"
#include "qt_layers.h"
#include "qt_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------- fake-quant ops ---- */

/* w (rows, cols) through the format's fake_quant; STE backward with the clip mask. */
qt_tensor *qt_fake_quant_weight(qt_ctx *ctx, qt_tensor *w, const qt_qformat *f);

/* Dynamic per-token activation fake-quant: every row of the last dim of x gets its own
 * intN scale (and zero point when asymmetric) from its min/max, through the same INT
 * quantizer as weights (f32 scales). A row holding NaN/Inf passes through unchanged, so
 * a non-finite activation reaches the loss and the training loop skips the step. */
qt_tensor *qt_fake_quant_act_dynamic(qt_ctx *ctx, qt_tensor *x, int bits, bool symmetric);

/* Static per-tensor activation fake-quant with a given scale and zero point (from an
 * observer): clamp(rint(x / s) + z, 0, 2^bits - 1) - z, times s. */
qt_tensor *qt_fake_quant_act_static(qt_ctx *ctx, qt_tensor *x, float scale, int zero, int bits);

/* Learnable scale and zero point (LSQ), as torch._fake_quantize_learnable_per_channel_affine
 * on x viewed as (n_scales, numel / n_scales) with axis 0 (a scale at or below 0, where an
 * optimizer step may push it, counts as FLT_EPSILON): scale and zero_point are f32
 * tensors of n_scales elements; the zero point is rounded and clamped to [qmin, qmax] in
 * forward; qmin/qmax the integer range (e.g. -8, 7); grad_factor multiplies the scale and
 * zero-point gradients (LSQ: 1/sqrt(N * qmax), N elements per scale). zero_point may be
 * NULL (symmetric, fixed at 0, no gradient). */
qt_tensor *qt_fake_quant_lsq(qt_ctx *ctx, qt_tensor *x, qt_tensor *scale, qt_tensor *zero_point,
                             int qmin, int qmax, float grad_factor);

/* ------------------------------------------------------------ prepare/convert ---- */

typedef enum { QT_ACT_NONE, QT_ACT_DYNAMIC_TOKEN, QT_ACT_STATIC_TENSOR } qt_act_mode;
typedef enum { QT_OBS_MINMAX, QT_OBS_MOVING_AVERAGE } qt_observer;

typedef struct {
    qt_act_mode mode;
    int bits;                /* 2..8 */
    bool symmetric;
    qt_observer observer;    /* static only */
    float averaging_constant; /* moving average: min += c (batch_min - min), torch's 0.01 */
} qt_act_config;

typedef struct {
    bool weight_on;          /* fake-quant the weights */
    qt_qformat weight;
    qt_act_config act;
    const char *const *layers; /* (n_layers) fnmatch globs on module names
                                  ("model.layers.0.mlp.up_proj"); NULL/0 = every Linear */
    int n_layers;
    bool embeddings;         /* also the token embedding (weights only) */
    bool learnable;          /* LSQ: learned scales (and zero points when asymmetric) for
                                INT weights with f32 scales; they start at the quantizer's
                                choice and ship as learned (convert uses them) */
    bool lm_head;            /* also the output projection */
} qt_qat_config;

typedef struct qt_qat qt_qat; /* opaque */

/* Selects the layers, checks the format against each one's shape (a group size that
 * does not divide its inputs (cols), ...; QT_EINVAL naming the module), and installs the
 * hook on the model. The model must outlive the qt_qat. Fake-quant starts enabled. A
 * pattern that matches no layer is QT_EINVAL naming it. A model whose lm_head shares the
 * embedding's weight (tied) must select both or neither: convert writes one tensor.
 * QT_ESTATE when the model already has a hook (LoRA, another qt_qat). */
qt_status qt_qat_prepare(qt_qat **out, qt_model *m, const qt_qat_config *cfg);
/* Removes the hook and frees the state. */
void qt_qat_free(qt_qat *q);
/* Turns fake-quant on or off (the recipe's qat.start_step). */
void qt_qat_set_enabled(qt_qat *q, bool on);
/* Number of weights that are fake-quantized, and how many have activation quant. */
int qt_qat_count(const qt_qat *q, int *with_act);

/* One converted weight. */
typedef struct {
    char name[128];   /* the parameter ("model.layers.0.mlp.up_proj.weight") */
    qt_qtensor q;
} qt_qat_converted;

/* Quantizes every selected weight with the quantizer core, then writes the dequantized
 * values into the model's weights (so the model now holds exactly what an exported
 * checkpoint holds) and stops weight fake-quant (activation fake-quant stays: it is part
 * of the deployed model). All or nothing: if any weight fails to quantize, no weight is
 * changed. *out (may be NULL): malloc'd array of *n quantized tensors, free with
 * qt_qat_converted_free. */
qt_status qt_qat_convert(qt_qat *q, qt_qat_converted **out, int *n);
void qt_qat_converted_free(qt_qat_converted *c, int n);

/* QAT's own parameters, to train and to save with a checkpoint and load back: for each
 * layer with a static observer a frozen "<module>.act_range" = [min, max] ([+inf, -inf]
 * before it has seen anything), so evaluation uses the range training learned; with
 * learnable scales, "<module>.weight_scale" (and ".weight_zero_point"), trainable (an
 * optimizer steps them next to the model's). NULL when there are none. */
qt_paramset *qt_qat_buffers(qt_qat *q);

/* Data parallel: while training, each static observer's batch range [min, max] goes
 * through fn before it updates the observer, which makes it every rank's range (min of
 * the mins, max of the maxes), so every rank observes the global batch, as one process
 * with it would. fn is a collective: it is called in the same order on every rank (the
 * layers' order in the forward), in grad mode only (evaluation and sampling keep their
 * frozen ranges). NULL: the local batch (one process). */
typedef qt_status (*qt_qat_range_reducer)(void *user, float range[2]);
void qt_qat_set_range_reducer(qt_qat *q, qt_qat_range_reducer fn, void *user);

/* Learnable scales: (re)sets every scale and zero point to the quantizer's choice for the
 * current weights (prepare does it; the trainer again when fake-quant turns on at a
 * later step, so they start from the weights they will quantize). */
void qt_qat_init_scales(qt_qat *q);
/* After an optimizer step of the learnable scales: a scale pushed to or below zero is
 * set to FLT_EPSILON (torch's LearnableFakeQuantize clamps its scale the same way). */
void qt_qat_after_step(qt_qat *q);

/* One-line description ("int4 g32 sym f16 weights on 28 layers, int8 per-token asym
 * activations") into buf. */
const char *qt_qat_describe(const qt_qat *q, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* QT_QAT_H */
