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
    qt_ggml_type fallback_from; /* GGUF: the type asked for when its block did not fit the
                                   row length and llama.cpp's fallback (q.fmt.ggml,
                                   qt_ggml_fallback) was used instead; QT_GGML_F32 (0) when
                                   the layer has the type asked for */
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

/* ------------------------------------------------------- importance matrix ---- */

/* llama.cpp's importance matrix (tools/imatrix/imatrix.cpp, IMatrixCollector): for each
 * Linear weight, named as in GGUF ("blk.0.attn_q.weight"), the sum over the calibration
 * tokens of the square of each input column, and the number of tokens summed.
 * llama-quantize gives a quantizer sums / count per column (llama.cpp's quant_weights;
 * qt_imatrix_weights). Files (qt_imatrix_load / qt_imatrix_save):
 *   - GGUF (what llama-imatrix writes by default): general.type "imatrix",
 *     imatrix.datasets (string array), imatrix.chunk_count and imatrix.chunk_size (u32),
 *     and per entry, in name order, F32 tensors <name>.in_sum2 (the sums) and
 *     <name>.counts (the token count);
 *   - legacy .dat (llama-imatrix --output-format dat): i32 n_entries; per entry i32
 *     name length, the name, i32 ncall (chunks: ceil(count / chunk_size)), i32 n, n f32
 *     (sum / count) * ncall; then i32 chunk count, i32 length and the dataset name.
 * Only dense entries (one count) are held: MoE expert entries are refused. */
typedef struct {
    char *name;      /* GGUF tensor name, "blk.0.ffn_down.weight" */
    int64_t n;       /* input columns */
    float *sums;     /* (n) GGUF: sum of x^2 over the tokens; legacy: (sum / count) * count */
    int64_t count;   /* GGUF: tokens summed; legacy: ncall (chunks) */
} qt_imatrix_entry;

typedef struct {
    qt_imatrix_entry *e; /* (n) in model order when computed, file order when read */
    int n;
    bool legacy;         /* read from a .dat file: sums and count as that format holds them */
    int32_t chunk_count; /* chunks (sequences) of chunk_size tokens the sums cover */
    int32_t chunk_size;  /* tokens per chunk (llama-imatrix's -c); 0 when unknown (legacy) */
    char **datasets;     /* (n_datasets) names of the calibration texts */
    int n_datasets;
    char *path;          /* the file it was read from (for messages), or NULL */
} qt_imatrix;

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
    /* RTN into a GGUF format: llama.cpp's importance matrix (NULL = none, as
       llama-quantize without --imatrix). Every selected weight needs its entry. */
    const qt_imatrix *imatrix;
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

/* The importance matrix of every Linear of the decoder blocks (and of an untied lm_head,
 * "output.weight", when process_output: llama-imatrix --process-output) over the
 * calibration sequences, `batch` sequences per forward pass, as llama-imatrix computes it:
 * per column, sum of x^2 over every token in token order, count = tokens. To reproduce
 * llama-imatrix, give it its chunks: sequences of -c tokens with the first token of each
 * replaced by BOS when the vocabulary adds one (llama.cpp skips matrix products of fewer
 * than 16 tokens; qtrain counts every token). chunk_size = calib->len; `dataset` (may be
 * NULL) names the calibration text. Llama-family models without a hook only. */
qt_status qt_imatrix_collect(qt_model *m, const qt_calib *calib, int batch, bool process_output,
                             const char *dataset, qt_imatrix *out);
/* Reads a GGUF or legacy imatrix file (the GGUF magic decides), validating all of it:
 * QT_EFORMAT naming the file and the entry for anything malformed, non-finite sums, or a
 * GGUF without the imatrix.* keys llama-quantize requires; QT_ENOTSUP for expert entries. */
qt_status qt_imatrix_load(const char *path, qt_imatrix *out);
/* Writes the GGUF format, or the legacy one when `legacy` (as llama-imatrix writes each,
 * entries sorted by name; the legacy file's dataset is the last of im->datasets).
 * Atomic. A legacy-read imatrix can only be written as legacy (it holds means, not
 * sums): QT_ENOTSUP otherwise. */
qt_status qt_imatrix_save(const qt_imatrix *im, const char *path, bool legacy);
void qt_imatrix_free(qt_imatrix *im);
/* The entry named `gguf_name`, or NULL. */
const qt_imatrix_entry *qt_imatrix_find(const qt_imatrix *im, const char *gguf_name);
/* llama-quantize's quant_weights for an entry (load_imatrix): GGUF sums / count (all 1
 * when count is 0); legacy sums / ncall (the sums when ncall is 0). out: (e->n). */
void qt_imatrix_weights(const qt_imatrix *im, const qt_imatrix_entry *e, float *out);
/* The importance of weight w (a Llama parameter, (out, in)) into out (in floats): the
 * entry of its GGUF name. QT_EINVAL naming the tensor and the file when the imatrix has
 * no entry for it or the entry's size is not w's input count. */
qt_status qt_imatrix_weights_for(const qt_imatrix *im, const qt_tensor *w, float *out);
/* An imatrix of this model: every entry names a Linear weight of m (GGUF names) with
 * its input count; QT_EINVAL naming the first entry that does not, and the file. */
qt_status qt_imatrix_check_model(const qt_imatrix *im, const qt_model *m);

/* llama.cpp's fallback for a GGUF block type whose block does not divide a row of `cols`
 * (llama-quant.cpp tensor_type_fallback): IQ4_XS -> IQ4_NL; Q2_K, Q3_K -> Q4_0; Q4_K ->
 * Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0. Returns false (out untouched) when `type` fits or
 * has no fallback that fits (llama.cpp then writes F16, which a qtrain quantized layer
 * cannot be: the format check refuses the layer). RTN (qt_ptq_run) applies it to each
 * layer, records it in qt_qlinear.fallback_from and reports it with qt_log (warning). */
bool qt_ggml_fallback(qt_ggml_type type, int64_t cols, qt_ggml_type *out);

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
