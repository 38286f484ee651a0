/* ptq_internal.h - what ptq.c, gptq.c and awq.c share (private to ptq/). */
#ifndef QT_PTQ_INTERNAL_H
#define QT_PTQ_INTERNAL_H

#include "qt_ptq.h"

/* A Linear input seen during a calibration pass: the hook hands `target`'s input
 * (rows x in, row-major) to fn; stage passes with a direct input hand it too. */
typedef struct qt_ptq_capture {
    qt_tensor *target;
    void (*fn)(struct qt_ptq_capture *c, const float *x, int64_t rows);
    float *H;      /* GPTQ: (in, in) Hessian being accumulated */
    int64_t in;
    float scale;   /* GPTQ: 2 / N */
    float *feat;   /* AWQ: (N, in) inputs stored in order */
    int64_t pos;   /* AWQ: rows stored so far */
} qt_ptq_capture;

double qt_ptq_now(void);
bool qt_ptq_selected(const qt_ptq_config *cfg, const qt_model *m, const qt_tensor *w);
/* RTN of one weight through the core: w <- dequantize(quantize(w)), appended to qm. */
qt_status qt_ptq_quantize_param(qt_qmodel *qm, const qt_qformat *f, qt_tensor *w);
/* Installs (c) or removes (NULL) the capturing hook. */
void qt_ptq_hook(qt_model *m, qt_ptq_capture *c);
qt_tensor *qt_ptq_batch_tensor(qt_ctx *ctx, const float *X, int64_t b, int64_t len, int64_t dim);
/* Over the calibration set (X: block l's inputs), hands c->fn the input of stage
 * 0 attn_norm(x), 1 o_proj's input, 2 ffn_norm(x + attention), 3 down_proj's input. */
qt_status qt_ptq_stage_inputs(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                              const float *X, int stage, qt_ptq_capture *c);
/* X <- block l (X), micro-batch by micro-batch. */
qt_status qt_ptq_block_forward(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                               float *X);
qt_status qt_gptq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                        float *X, qt_qmodel *qm);
qt_status qt_awq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                       float *X, qt_qmodel *qm);

#endif
