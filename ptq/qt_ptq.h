/*
 * qt_ptq.h - post-training quantization of a whole model: RTN, GPTQ and AWQ, the
 * calibration that feeds them, and the quantized model (qt_qmodel) they hand to the
 * exporters (export/qt_export.h).
 *
 * Every algorithm ends in the quantizer core (qt_quant.h): the codes and scales it
 * produces are a qt_qtensor of an ordinary qt_qformat, so any exporter that can pack the
 * format packs the result, and dequantize(q) is exactly the weight the model is evaluated
 * with afterwards.
 *
 *   - RTN: qt_quantize on each selected weight.
 *   - GPTQ (Frantar et al. 2022, IST-DASLab/gptq gptq.py): H = 2/n sum x x^T over the
 *     calibration tokens of each Linear's input; damping percdamp * mean(diag(H));
 *     Hinv = upper Cholesky factor of H^-1; columns quantized in lazy blocks of 128 with
 *     the error propagated through Hinv; optional act-order (desc_act: columns in
 *     decreasing diag(H)) with static groups as an option. Group scales come from the
 *     quantizer core's qt_qint_params on the error-updated weights of the group, as the
 *     reference computes them when it reaches the group's first column.
 *   - AWQ (Lin et al. 2023, mit-han-lab/llm-awq auto_scale.py / auto_clip.py, AutoAWQ):
 *     per input channel scales s = mean|x|^alpha / sqrt(max * min), alpha on a 20-point
 *     grid, chosen by the MSE of the block's output; folded into the preceding RMSNorm
 *     (q/k/v, gate/up), v_proj (o_proj, only without grouped-query attention) or up_proj
 *     (down_proj); then a clip search on the max of each group.
 *
 * Layers are quantized in model order, block by block; each block's calibration inputs
 * are the outputs of the blocks before it as already quantized (the reference's
 * sequential scheme). Within a block the order is q/k/v, o, gate/up, down (true
 * sequential). At most one block's calibration activations are held at once.
 */
#ifndef QT_PTQ_H
#define QT_PTQ_H

#include <stdio.h>

#include "qt_layers.h"
#include "qt_quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- the result ---- */

/* One quantized Linear weight. */
typedef struct {
    char name[128];  /* the parameter, "model.layers.0.mlp.up_proj.weight" */
    qt_qtensor q;    /* (out, in) as the parameter; with perm its COLUMNS are permuted:
                        column i of q is input column perm[i] of the weight, and INT groups
                        are runs of G columns in that order (GPTQ act-order) */
    int32_t *perm;   /* (in) or NULL = identity */
} qt_qlinear;

/* A quantized model: the float model (every parameter; a quantized weight holds its
 * dequantized values, and norms AWQ folded scales into hold the folded values) plus the
 * codes of each quantized Linear. Exporters read both. */
typedef struct {
    qt_model *model;     /* borrowed, outlives the qt_qmodel */
    qt_qlinear *layers;  /* (n) in parameter order */
    int n;
    char method[16];     /* "rtn", "gptq", "awq", "qat" (converted QAT weights) */
    /* provenance, written into every exported file's metadata (strings, may be ""): */
    char *recipe;        /* the resolved recipe (YAML text) or NULL */
    char calib_hash[72]; /* "sha256:<hex>" of the calibration token ids (i32 LE), or "" */
    float damp;          /* GPTQ's damping (for its quantize_config.json), 0 = not GPTQ */
} qt_qmodel;

void qt_qmodel_init(qt_qmodel *qm, qt_model *m, const char *method);
void qt_qmodel_free(qt_qmodel *qm);
/* Appends a quantized weight; takes ownership of q's buffers and perm (on success and on
 * failure). */
qt_status qt_qmodel_add(qt_qmodel *qm, const char *name, qt_qtensor *q, int32_t *perm);
/* The quantized weight of parameter `name`, or NULL when it stays float. */
const qt_qlinear *qt_qmodel_find(const qt_qmodel *qm, const char *name);
/* Dequantizes a layer into out (out * in, the parameter's layout: perm undone). */
qt_status qt_qlinear_dequantize(const qt_qlinear *l, float *out);

/* ---------------------------------------------------------------- options ---- */

typedef enum { QT_PTQ_RTN, QT_PTQ_GPTQ, QT_PTQ_AWQ } qt_ptq_method;

typedef struct {
    qt_ptq_method method;
    qt_qformat fmt;          /* RTN: any format; GPTQ / AWQ: INT (group, channel) */
    const char **layers;     /* fnmatch globs over module names ("*.q_proj"); NULL = every
                                Linear of the decoder blocks (not the lm_head) */
    int n_layers;
    /* GPTQ */
    float damp;              /* fraction of mean(diag(H)) added to the diagonal, 0.01 */
    int block_size;          /* lazy-update block, 128 */
    bool act_order;          /* desc_act */
    bool static_groups;      /* act-order with groups fixed before the permutation */
    /* AWQ */
    int awq_grid;            /* alpha grid points, 20 */
    bool awq_clip;           /* run the clip search, true */
    bool awq_duo;            /* AutoAWQ's duo_scaling (weights' magnitudes too), false */
    /* calibration */
    int batch;               /* sequences per forward, 8 */
} qt_ptq_config;

void qt_ptq_config_defaults(qt_ptq_config *c, qt_ptq_method method);
/* Whether cfg quantizes parameter w of m (a Linear its globs select). */
bool qt_ptq_selects(const qt_ptq_config *cfg, const qt_model *m, const qt_tensor *w);

/* Calibration set: n sequences of len tokens, (n * len) ids. */
typedef struct {
    int32_t *ids;
    int64_t n, len;
} qt_calib;

/* n sequences of len tokens cut from the token stream at positions drawn by `seed`
 * (uniform, without replacement over non-overlapping windows). QT_EINVAL naming `src`
 * when the stream holds fewer than n windows of len + 1 tokens. */
qt_status qt_calib_sample(const int32_t *tokens, int64_t n_tokens, int64_t n, int64_t len,
                          uint64_t seed, const char *src, qt_calib *out);
void qt_calib_free(qt_calib *c);
/* "sha256:<64 hex>" of the ids as little-endian i32. */
void qt_calib_hash(const qt_calib *c, char out[72]);

/* SHA-256 (FIPS 180-4) of n bytes into 32 bytes. */
void qt_sha256(const void *data, size_t n, uint8_t out[32]);

/* Quantizes model `m` in place as `cfg` says (calib may be NULL for RTN) and fills *out
 * (init'ed here; free with qt_qmodel_free). On failure the model's weights are
 * unspecified (reload it). Progress lines go to `log` when it is not NULL. */
qt_status qt_ptq_run(qt_model *m, const qt_ptq_config *cfg, const qt_calib *calib,
                     FILE *log, qt_qmodel *out);

/* The matrix-level algorithms, for tests and benchmarks:
 * GPTQ of w (rows x cols, row-major; overwritten with the dequantized result) with
 * H (cols x cols, overwritten). Fills q (and *perm, malloc'd, with act_order without
 * static groups; else NULL). */
qt_status qt_gptq_quantize_layer(const qt_qformat *f, float *w, int64_t rows, int64_t cols,
                                 float *H, float damp, int block_size, bool act_order,
                                 bool static_groups, qt_qtensor *q, int32_t **perm);

#ifdef __cplusplus
}
#endif

#endif /* QT_PTQ_H */
