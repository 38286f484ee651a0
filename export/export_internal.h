/*
 * export_internal.h - shared between the safetensors exporters of export/ (not public):
 *   - a growing list of safetensors tensors whose buffers the list owns;
 *   - the float tensors every HF export carries (embedding, norms, unquantized Linears)
 *     in opts->st_float;
 *   - writing the directory: config.json (qt_llama_save_hf's keys + quantization_config +
 *     the "qtrain" provenance object), model.safetensors with provenance __metadata__,
 *     extra JSON files and tokenizer.json, built in <dir>.tmp.<pid> and renamed into place;
 *   - INT code/scale/zero access in the parameter's column order, and bit packing.
 */
#ifndef QT_EXPORT_INTERNAL_H
#define QT_EXPORT_INTERNAL_H

#include <cjson/cJSON.h>

#include "qt_export.h"

/* Tensors to write; every data buffer is owned by the list (freed by qt_xst_free). */
typedef struct {
    qt_st_tensor *t;     /* (n) */
    const char **dtype_names; /* (n) "F8_E4M3" or NULL */
    char **names;        /* (n) owned copies */
    void **bufs;         /* (n) owned data */
    int n, cap;
} qt_xst;

void qt_xst_free(qt_xst *x);
/* Appends a tensor, taking ownership of data (freed also on failure). dtype_name: NULL or
 * an fp8 safetensors dtype for a U8 tensor. */
qt_status qt_xst_add(qt_xst *x, const char *name, qt_dtype dt, const char *dtype_name,
                     int ndim, const int64_t *shape, void *data, size_t nbytes);

/* Adds every parameter of the (llama) model that is not quantized in qm, in parameter
 * order, as o->st_float (a tied lm_head is not a separate parameter, so not written).
 * Quantized ones are passed to `emit` in the same order. */
typedef qt_status (*qt_export_emit_fn)(qt_xst *x, const qt_qlinear *l, const char *prefix,
                                       void *user);
qt_status qt_export_tensors(const qt_qmodel *qm, const qt_export_opts *o, qt_xst *x,
                            qt_export_emit_fn emit, void *user);

/* One extra file of the directory. */
typedef struct {
    const char *name;  /* "quantize_config.json" */
    cJSON *json;       /* borrowed */
} qt_export_extra;

/* Writes dir: config.json = the model's HF config + "quantization_config": qcfg (borrowed,
 * copied) + "qtrain" provenance; model.safetensors from x with __metadata__; the extras;
 * tokenizer.json when o->tokenizer_json is set. Built in <dir>.tmp.<pid>, renamed into
 * place (an existing empty directory or earlier export is replaced; anything else
 * refused). On
 * failure nothing is left behind. */
qt_status qt_export_write_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *dir,
                              qt_export_format f, const qt_xst *x, const cJSON *qcfg,
                              const qt_export_extra *extras, int n_extras);

/* The safetensors exporters' one sequence: qt_export_check(qm, f), the tensors (emit for
 * each quantized Linear), the quantization_config that `config` builds (NULL = out of
 * memory), qt_export_write_dir; with extra_name, the same JSON also as that file
 * (GPTQ's quantize_config.json). Options default when o is NULL. */
typedef cJSON *(*qt_export_qcfg_fn)(const qt_qmodel *qm, const qt_export_opts *o);
qt_status qt_export_st_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *dir,
                           qt_export_format f, qt_export_emit_fn emit, qt_export_qcfg_fn config,
                           const char *extra_name);

/* The provenance format string of qm: the format of its layers when they share one,
 * else "mixed"; "none" without layers. */
void qt_export_format_str(const qt_qmodel *qm, char *buf, size_t n);

/* INT tensors: scale and zero point of element (r, c) of q (c in q's column order). */
static inline int64_t qt_xint_group(const qt_qtensor *q, int64_t r, int64_t c) {
    if (q->fmt.gran == QT_QG_GROUP) return r * (q->cols / q->fmt.group_size) + c / q->fmt.group_size;
    if (q->fmt.gran == QT_QG_CHANNEL) return r;
    return 0;
}
static inline int qt_xint_zero(const qt_qtensor *q, int64_t g) {
    return q->zeros ? q->zeros[g] : 1 << (q->fmt.bits - 1);
}
/* Input columns per scale of an INT tensor in the exported layout (group size, or all
 * columns for channel / tensor granularity). */
static inline int64_t qt_xint_glen(const qt_qtensor *q) {
    return q->fmt.gran == QT_QG_GROUP ? q->fmt.group_size : q->cols;
}

/* Sets `bits` bits of value v at bit position pos of a little-endian stream of u32 words
 * (AutoGPTQ's packing: values LSB first, a value may straddle two words at 3 bits). */
static inline void qt_xbits_put(uint32_t *w, int64_t pos, int bits, uint32_t v) {
    for (int b = 0; b < bits; b++, pos++)
        if ((v >> b) & 1u) w[pos >> 5] |= 1u << (pos & 31);
}
static inline uint32_t qt_xbits_get(const uint32_t *w, int64_t pos, int bits) {
    uint32_t v = 0;
    for (int b = 0; b < bits; b++, pos++) v |= ((w[pos >> 5] >> (pos & 31)) & 1u) << b;
    return v;
}

/* Module names ("model.layers.0.mlp.down_proj") of the decoder Linears left in float,
 * plus "lm_head" when with_head and the lm_head is not quantized; NULL when the list
 * would be empty (or out of memory). */
cJSON *qt_export_unquantized(const qt_qmodel *qm, bool with_head);

/* Shared by the checks: the module prefix of a parameter name ("x.weight" -> "x"). */
qt_status qt_export_prefix(const char *name, char *buf, size_t n);

#endif
