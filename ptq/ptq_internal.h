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

/* GPTQ's factor of one Hessian, shared by the Linears that read the same input (q/k/v,
 * gate/up): dead inputs, the visiting order, U = cholesky(damped H^-1) upper. */
typedef struct {
    int64_t cols;
    float *U;       /* (cols, cols) in visiting order */
    int32_t *perm;  /* (cols) visiting order (identity without act-order) */
    uint8_t *dead;  /* (cols) inputs never non-zero in calibration */
    bool act_order;
} qt_gptq_hinv;

/* H (cols, cols) symmetric; its dead diagonal entries are set to 1. */
qt_status qt_gptq_hinv_init(float *H, int64_t cols, float damp, bool act_order, qt_gptq_hinv *h);
void qt_gptq_hinv_free(qt_gptq_hinv *h);
qt_status qt_gptq_quantize_with(const qt_qformat *f, float *w, int64_t rows, int64_t cols,
                                const qt_gptq_hinv *h, int block_size, bool static_groups,
                                qt_qtensor *q, int32_t **perm_out);

double qt_ptq_now(void);
bool qt_ptq_selected(const qt_ptq_config *cfg, const qt_model *m, const qt_tensor *w);
/* RTN of one weight through the core: w <- dequantize(quantize(w)), appended to qm. */
qt_status qt_ptq_quantize_param(qt_qmodel *qm, const qt_qformat *f, qt_tensor *w);
/* Installs (c) or removes (NULL) the capturing hook. */
void qt_ptq_hook(qt_model *m, qt_ptq_capture *c);
qt_tensor *qt_ptq_batch_tensor(qt_ctx *ctx, const float *X, int64_t b, int64_t len, int64_t dim);
qt_status qt_gptq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                        float *X, qt_qmodel *qm);
qt_status qt_awq_block(qt_model *m, const qt_ptq_config *cfg, const qt_calib *cal, int l,
                       float *X, qt_qmodel *qm);

#endif
