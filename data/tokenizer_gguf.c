/*
 * tokenizer_gguf.c - a tokenizer from a GGUF's tokenizer.ggml.* metadata (llama.cpp's
 * llama-vocab.cpp keys, as convert_hf_to_gguf.py writes them for byte-level BPE models):
 *
 *   tokenizer.ggml.model          string, must be "gpt2" (byte-level BPE; "llama" is
 *                                 SentencePiece, which qtrain does not implement)
 *   tokenizer.ggml.pre            string, optional ("default"): gpt2 / llama-bpe / smollm /
 *                                 qwen2, see qt_tokenizer_vocab.pre
 *   tokenizer.ggml.tokens         array of string, id = index
 *   tokenizer.ggml.token_type     array of i32 (QT_TOKTYPE_*), optional
 *   tokenizer.ggml.merges         array of string "left right", rank = index
 *   tokenizer.ggml.bos_token_id / eos_token_id     u32, optional
 *   tokenizer.ggml.add_bos_token / add_eos_token   bool, optional (false)
 *
 * The file is read by the formats module's GGUF reader; this only maps keys onto
 * qt_tokenizer_vocab.
 */
#include <stdlib.h>
#include <string.h>

#include "qt_data.h"
#include "tokenizer_internal.h"

/* A string array's strings; *strs is malloc'ed, the strings belong to g. */
static qt_status str_array(const qt_gguf *g, const char *src, const char *key, const char ***strs,
                           int32_t *n) {
    *strs = NULL, *n = 0;
    qt_gguf_type et;
    uint64_t count;
    qt_status st = qt_gguf_get_arr(g, key, &et, &count, NULL);
    if (st) return st;
    if (et != QT_GGUF_STRING)
        return QT_ERROR(QT_EFORMAT, "%s: %s is an array of %s, expected string", src, key,
                        qt_gguf_type_name(et));
    if (count >= QT_TOK_MAX_ID)
        return QT_ERROR(QT_EFORMAT, "%s: %s has %llu entries, more than %d", src, key,
                        (unsigned long long)count, QT_TOK_MAX_ID);
    const char **a = malloc((count ? count : 1) * sizeof *a);
    if (!a) return QT_ERROR(QT_ENOMEM, "%s: %s of %llu", src, key, (unsigned long long)count);
    for (uint64_t i = 0; i < count; i++) {
        if ((st = qt_gguf_get_arr_str(g, key, i, &a[i], NULL))) {
            free(a);
            return st;
        }
    }
    *strs = a, *n = (int32_t)count;
    return QT_OK;
}

/* Optional u32 key as an id, -1 when absent. */
static qt_status opt_id(const qt_gguf *g, const char *key, int32_t *id) {
    *id = -1;
    if (qt_gguf_find_key(g, key) < 0) return QT_OK;
    uint32_t v;
    qt_status st = qt_gguf_get_u32(g, key, &v);
    if (!st) *id = v < QT_TOK_MAX_ID ? (int32_t)v : QT_TOK_MAX_ID;
    return st;
}

static qt_status opt_bool(const qt_gguf *g, const char *key, bool *b) {
    *b = false;
    return qt_gguf_find_key(g, key) < 0 ? QT_OK : qt_gguf_get_bool(g, key, b);
}

qt_status qt_tokenizer_from_gguf(const qt_gguf *g, const char *src, qt_tokenizer **out) {
    *out = NULL;
    if (!g) return QT_ERROR(QT_EINVAL, "tokenizer_from_gguf: NULL file");
    if (!src) src = "gguf";
    const char *model, *pre = "default";
    qt_status st = qt_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL);
    if (st) return st;
    if (strcmp(model, "gpt2"))
        return QT_ERROR(QT_ENOTSUP,
                        "%s: tokenizer.ggml.model is \"%s\"; only \"gpt2\" (byte-level "
                        "BPE) is supported",
                        src, model);
    if (qt_gguf_find_key(g, "tokenizer.ggml.pre") >= 0 &&
        (st = qt_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL)))
        return st;
    qt_tokenizer_vocab v = {.pre = pre};
    const char **tokens = NULL, **merges = NULL;
    st = str_array(g, src, "tokenizer.ggml.tokens", &tokens, &v.n_tokens);
    if (!st) st = str_array(g, src, "tokenizer.ggml.merges", &merges, &v.n_merges);
    if (!st && qt_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        qt_gguf_type et;
        uint64_t count;
        const void *data;
        st = qt_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &count, &data);
        if (!st && (et != QT_GGUF_I32 || count != (uint64_t)v.n_tokens))
            st = QT_ERROR(QT_EFORMAT,
                          "%s: tokenizer.ggml.token_type is %llu of %s, expected %d of i32", src,
                          (unsigned long long)count, qt_gguf_type_name(et), v.n_tokens);
        if (!st) v.token_types = data; /* the reader aligns arrays for their type */
    }
    if (!st) st = opt_id(g, "tokenizer.ggml.bos_token_id", &v.bos_id);
    if (!st) st = opt_id(g, "tokenizer.ggml.eos_token_id", &v.eos_id);
    if (!st) st = opt_bool(g, "tokenizer.ggml.add_bos_token", &v.add_bos);
    if (!st) st = opt_bool(g, "tokenizer.ggml.add_eos_token", &v.add_eos);
    v.tokens = tokens, v.merges = merges;
    if (!st) st = qt_tok_from_vocab(&v, src, out);
    free(tokens);
    free(merges);
    return st;
}

qt_status qt_tokenizer_load_gguf(const char *path, qt_tokenizer **out) {
    *out = NULL;
    if (!path) return QT_ERROR(QT_EINVAL, "tokenizer_load_gguf: NULL path");
    qt_gguf *g;
    qt_status st = qt_gguf_open(path, &g);
    if (st) return st;
    st = qt_tokenizer_from_gguf(g, path, out);
    qt_gguf_close(g);
    return st;
}
