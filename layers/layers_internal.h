/*
 * layers_internal.h - shared between the files of layers/, not part of its public API:
 *   - building a model's parameter set without initialising values (the HF loader fills
 *     them from the checkpoint, so drawing random numbers for a 7B model first would
 *     waste a minute);
 *   - config.json reading and writing (hf_config.c) for the checkpoint code (hf.c).
 */
#ifndef QT_LAYERS_INTERNAL_H
#define QT_LAYERS_INTERNAL_H

#include <cjson/cJSON.h>

#include "qt_layers.h"

/* Validate cfg, register and allocate every parameter (zeroed). On failure m is freed. */
qt_status qt_llama_build(qt_llama *m, const qt_llama_config *cfg);
qt_status qt_gpt2_build(qt_gpt2 *m, const qt_gpt2_config *cfg);

/* The architectures config.json may name. */
typedef enum { QT_HF_LLAMA, QT_HF_MISTRAL, QT_HF_QWEN2, QT_HF_GPT2 } qt_hf_kind;

typedef struct {
    qt_hf_kind kind;
    const char *hf_arch;   /* "Qwen2ForCausalLM", static */
    qt_llama_config llama; /* kind != QT_HF_GPT2 */
    qt_gpt2_config gpt2;   /* kind == QT_HF_GPT2 */
} qt_hf_config;

/* Reads and validates a config.json; messages name `path` and the key. */
qt_status qt_hf_config_read(const char *path, qt_hf_config *out);
/* config.json for a model saved in `dtype`; NULL when out of memory. */
cJSON *qt_hf_llama_config_json(const qt_llama_config *c, qt_dtype dtype);
cJSON *qt_hf_gpt2_config_json(const qt_gpt2_config *c, qt_dtype dtype);

/* A JSON file whose top level is an object. */
qt_status qt_hf_parse_json(const char *path, cJSON **out);
/* What a JSON value is, for messages: `string "64"`, `number 1.5`, `null`. */
const char *qt_hf_json_what(const cJSON *v, char *buf, size_t n);

#endif
