/*
 * qt_export.h - files that deployment tools load, written from a quantized model
 * (ptq/qt_ptq.h's qt_qmodel), and read back by qtrain:
 *   - GGUF v3, llama architecture, tokenizer metadata, any mix of tensor types
 *     (export_gguf.c), for llama.cpp;
 *   - GPTQ safetensors (qweight / qzeros v1 / scales / g_idx, quantize_config.json) for
 *     vLLM and transformers (export_gptq.c);
 *   - AWQ GEMM safetensors (export_awq.c);
 *   - bitsandbytes NF4 safetensors with its quant_state keys (export_bnb.c);
 *   - FP8 E4M3 in compressed-tensors' layout (weight + weight_scale) for vLLM
 *     (export_fp8.c).
 * Formats and facts: ../shared/FORMATS.md. Every file carries provenance where the format
 * has metadata (GGUF keys qtrain.*, safetensors __metadata__, config.json "qtrain"):
 * qtrain version, resolved recipe, method and format, calibration hash.
 * Writes are atomic: a file goes to a temporary name renamed into place; a directory is
 * built next to its destination and renamed into place, so a failed export leaves nothing.
 */
#ifndef QT_EXPORT_H
#define QT_EXPORT_H

#include "qt_data.h"
#include "qt_ptq.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QT_EXPORT_GGUF,
    QT_EXPORT_GPTQ,
    QT_EXPORT_AWQ,
    QT_EXPORT_BNB_NF4,
    QT_EXPORT_FP8,
    QT_EXPORT_COUNT
} qt_export_format;

/* "gguf", "gptq", "awq", "bnb-nf4", "fp8" -> format; QT_EINVAL listing the names. */
qt_status qt_export_format_parse(const char *name, qt_export_format *out);
const char *qt_export_format_name(qt_export_format f);

/* The quantizer-core format an exporter writes when it is given a float model to RTN
 * (qtrain export of a float checkpoint): gptq int4 g128 symmetric f16 scales; awq int4
 * g128 asymmetric f16 scales; bnb-nf4 NF4 blocksize 64 double-quantized; fp8 E4M3
 * per-channel; gguf Q8_0. */
void qt_export_default_qformat(qt_export_format f, qt_qformat *out);

typedef struct {
    const char *version;        /* qtrain version for provenance ("0.1.0") */
    const qt_tokenizer *tok;    /* GGUF: the tokenizer to embed; NULL = bytes (256 byte
                                   tokens, ids = byte values) */
    const char *tokenizer_json; /* HF exports: a tokenizer.json to copy beside, or NULL */
    qt_ggml_type gguf_float;    /* GGUF: type of the weights that are not quantized
                                   (embedding, lm_head, unselected Linears): F32 or F16
                                   (norms are always F32) */
    qt_dtype st_float;          /* safetensors exports: dtype of the unquantized tensors
                                   (embedding, norms, lm_head): QT_F32, QT_F16 or QT_BF16 */
} qt_export_opts;

/* version "", tok NULL, tokenizer_json NULL, gguf_float F32, st_float F16. */
void qt_export_opts_defaults(qt_export_opts *o);

/* Checks, before anything is written, that every quantized layer of qm can be stored
 * in format f exactly (GPTQ/AWQ: INT group/channel with f16 scales, bits 2/3/4/8 for
 * GPTQ and 4 for AWQ; bnb-nf4: NF4; fp8: FP8 E4M3; gguf: a GGUF block type; act-order
 * permutations only for GPTQ) and that the model is a llama. QT_EINVAL naming the layer,
 * its format and what the exporter needs. */
qt_status qt_export_check(const qt_qmodel *qm, qt_export_format f);

/* Writes qm in format f to path (GGUF: a file; the others: a directory with
 * config.json, model.safetensors and the format's extra files). */
qt_status qt_export(const qt_qmodel *qm, qt_export_format f, const qt_export_opts *o,
                    const char *path);

qt_status qt_export_gguf(const qt_qmodel *qm, const qt_export_opts *o, const char *path);
qt_status qt_export_gptq(const qt_qmodel *qm, const qt_export_opts *o, const char *dir);
qt_status qt_export_awq(const qt_qmodel *qm, const qt_export_opts *o, const char *dir);
qt_status qt_export_bnb_nf4(const qt_qmodel *qm, const qt_export_opts *o, const char *dir);
qt_status qt_export_fp8(const qt_qmodel *qm, const qt_export_opts *o, const char *dir);

/* Loads any model file qtrain reads into a float model: a GGUF file, a plain HF
 * directory, or an HF directory whose config.json has a quantization_config (gptq, awq,
 * bitsandbytes 4-bit nf4, compressed-tensors fp8), dequantized exactly as the format
 * defines. On failure *m is zeroed and the message names the file and tensor. */
qt_status qt_export_load(qt_model *m, const char *path);

#ifdef __cplusplus
}
#endif

#endif /* QT_EXPORT_H */
