/*
 * gguf_load.c - a Llama-family model from a GGUF file, as llama.cpp writes them
 * (convert_hf_to_gguf.py, classes LlamaModel and Qwen2Model; names and keys in gguf-py's
 * constants.py; see ../shared/FORMATS.md "GGUF").
 *
 *   general.architecture "llama" | "qwen2"
 *   <arch>.context_length, embedding_length, block_count, feed_forward_length,
 *   attention.head_count, attention.head_count_kv (absent = head_count),
 *   attention.layer_norm_rms_epsilon, rope.freq_base (absent = 10000, llama.cpp's
 *   default), vocab_size (absent = length of tokenizer.ggml.tokens, then token_embd's rows)
 *
 *   token_embd.weight -> model.embed_tokens.weight     output_norm.weight -> model.norm.weight
 *   output.weight     -> lm_head.weight (absent: tied to token_embd)
 *   blk.N.attn_norm / attn_q / attn_k / attn_v / attn_output / ffn_norm / ffn_gate /
 *         ffn_up / ffn_down (.weight; attn_q/k/v.bias for qwen2)
 *      -> model.layers.N.input_layernorm / self_attn.{q,k,v,o}_proj /
 *         post_attention_layernorm / mlp.{gate,up,down}_proj
 *
 * Every tensor is dequantized to f32 on load (qt_ggml_dequantize: F32, F16, BF16, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K). A GGUF tensor's ne[] lists dims innermost first,
 * so ne = {in, out} is the HF (out, in) weight with no transpose.
 *
 * The surprise: for "llama", convert_hf_to_gguf.py (LlamaModel.modify_tensors) permutes
 * the rows of q_proj (with n_head) and k_proj (with n_head_kv) so that llama.cpp's
 * interleaved RoPE (pairs 2i, 2i+1) computes what HF's rotate-half RoPE (pairs i,
 * i + hd/2) computes: w.reshape(n, 2, hd/2, in).swapaxes(1, 2).reshape(out, in). Our RoPE
 * is HF's, so loading applies the inverse: HF row h*hd + j*hd/2 + i is GGUF row
 * h*hd + 2i + j. Qwen2 is converted without the permutation (llama.cpp runs it with
 * NEOX rope, which is rotate-half), so its rows are taken as they are.
 *
 * Strict like the HF loader: every parameter must be there with the shape the metadata
 * implies, and any other tensor is an error (rope_freqs.weight, Llama 3.1's scaled
 * RoPE, gets its own message). Peak memory is the file plus the f32 model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_formats.h"
#include "layers_internal.h"

/* ------------------------------------------------------------- metadata ---- */

/* An integer key of any integer type (writers differ: convert writes u32, others i32
 * or u64), as a non-negative int. *found false (and QT_OK) when absent and !required. */
static qt_status meta_int(const qt_gguf *g, const char *path, const char *key, bool required,
                          int *out, bool *found) {
    int64_t i = qt_gguf_find_key(g, key);
    if (found) *found = i >= 0;
    if (i < 0) {
        if (!required) return QT_OK;
        return QT_ERROR(QT_EFORMAT, "%s: metadata key \"%s\" is missing", path, key);
    }
    qt_gguf_type t = qt_gguf_kv_type(g, i);
    int64_t v = -1;
    switch (t) {
    case QT_GGUF_U8: { uint8_t x; qt_gguf_get_u8(g, key, &x); v = x; break; }
    case QT_GGUF_U16: { uint16_t x; qt_gguf_get_u16(g, key, &x); v = x; break; }
    case QT_GGUF_U32: { uint32_t x; qt_gguf_get_u32(g, key, &x); v = x; break; }
    case QT_GGUF_U64: {
        uint64_t x;
        qt_gguf_get_u64(g, key, &x);
        v = x > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)x;
        break;
    }
    case QT_GGUF_I8: { int8_t x; qt_gguf_get_i8(g, key, &x); v = x; break; }
    case QT_GGUF_I16: { int16_t x; qt_gguf_get_i16(g, key, &x); v = x; break; }
    case QT_GGUF_I32: { int32_t x; qt_gguf_get_i32(g, key, &x); v = x; break; }
    case QT_GGUF_I64: { int64_t x; qt_gguf_get_i64(g, key, &x); v = x; break; }
    default:
        return QT_ERROR(QT_EFORMAT, "%s: metadata key \"%s\": expected an integer, found %s",
                        path, key, qt_gguf_type_name(t));
    }
    if (v < 0 || v > 0x7fffffff)
        return QT_ERROR(QT_EFORMAT, "%s: metadata key \"%s\": expected 0..%d, found %lld", path,
                        key, 0x7fffffff, (long long)v);
    *out = (int)v;
    return QT_OK;
}

/* A float key stored as f32 or f64. */
static qt_status meta_float(const qt_gguf *g, const char *path, const char *key, bool required,
                            float *out) {
    int64_t i = qt_gguf_find_key(g, key);
    if (i < 0) {
        if (!required) return QT_OK;
        return QT_ERROR(QT_EFORMAT, "%s: metadata key \"%s\" is missing", path, key);
    }
    qt_gguf_type t = qt_gguf_kv_type(g, i);
    if (t == QT_GGUF_F32) return qt_gguf_get_f32(g, key, out);
    if (t == QT_GGUF_F64) {
        double d;
        qt_gguf_get_f64(g, key, &d);
        *out = (float)d;
        return QT_OK;
    }
    return QT_ERROR(QT_EFORMAT, "%s: metadata key \"%s\": expected f32, found %s", path, key,
                    qt_gguf_type_name(t));
}

#define TRY(expr)                          \
    do {                                   \
        qt_status st_ = (expr);            \
        if (st_ != QT_OK) return st_;      \
    } while (0)

/* The qt_llama_config a GGUF's metadata describes. `arch` is "llama" or "qwen2". */
static qt_status read_config(const qt_gguf *g, const char *path, const char *arch,
                             qt_llama_config *c) {
    char k[128];
    memset(c, 0, sizeof *c);
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", arch, suffix), k)
    TRY(meta_int(g, path, KEY("context_length"), true, &c->max_seq_len, NULL));
    TRY(meta_int(g, path, KEY("embedding_length"), true, &c->dim, NULL));
    TRY(meta_int(g, path, KEY("block_count"), true, &c->n_layers, NULL));
    TRY(meta_int(g, path, KEY("feed_forward_length"), true, &c->ffn_dim, NULL));
    TRY(meta_int(g, path, KEY("attention.head_count"), true, &c->n_heads, NULL));
    bool have_kv;
    TRY(meta_int(g, path, KEY("attention.head_count_kv"), false, &c->n_kv_heads, &have_kv));
    if (!have_kv) c->n_kv_heads = c->n_heads; /* llama.cpp: absent = no GQA */
    TRY(meta_float(g, path, KEY("attention.layer_norm_rms_epsilon"), true, &c->norm_eps));
    c->rope_theta = 10000.0f; /* llama.cpp's default when rope.freq_base is absent */
    TRY(meta_float(g, path, KEY("rope.freq_base"), false, &c->rope_theta));

    /* head size: our attention has head_dim = dim / n_heads and rotates all of it */
    if (c->n_heads <= 0 || c->dim % c->n_heads)
        return QT_ERROR(QT_EFORMAT,
                        "%s: %s.embedding_length (%d) must be a multiple of "
                        "%s.attention.head_count (%d)",
                        path, arch, c->dim, arch, c->n_heads);
    int hd = c->dim / c->n_heads;
    static const char *const HD_KEYS[] = {"rope.dimension_count", "attention.key_length",
                                          "attention.value_length"};
    for (int i = 0; i < 3; i++) {
        int v;
        bool have;
        TRY(meta_int(g, path, KEY(HD_KEYS[i]), false, &v, &have));
        if (have && v != hd)
            return QT_ERROR(QT_ENOTSUP,
                            "%s: %s is %d; only head size embedding_length / head_count = %d "
                            "with RoPE over the whole head is supported",
                            path, k, v, hd);
    }
    int experts = 0;
    TRY(meta_int(g, path, KEY("expert_count"), false, &experts, NULL));
    if (experts > 0)
        return QT_ERROR(QT_ENOTSUP, "%s: %s is %d: mixture-of-experts models are not supported",
                        path, k, experts);
    if (qt_gguf_find_key(g, KEY("rope.scaling.type")) >= 0) {
        const char *s = NULL;
        TRY(qt_gguf_get_str(g, k, &s, NULL));
        if (strcmp(s, "none"))
            return QT_ERROR(QT_ENOTSUP, "%s: %s is \"%s\"; only unscaled RoPE is supported", path,
                            k, s);
    }

    /* vocabulary: <arch>.vocab_size, else the tokenizer's length, else token_embd's rows */
    bool have_vocab;
    TRY(meta_int(g, path, KEY("vocab_size"), false, &c->vocab_size, &have_vocab));
#undef KEY
    if (!have_vocab) {
        qt_gguf_type et;
        uint64_t n;
        const qt_gguf_tensor *emb = qt_gguf_tensor_get(g, "token_embd.weight");
        if (qt_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) {
            TRY(qt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL));
            if (et != QT_GGUF_STRING)
                return QT_ERROR(QT_EFORMAT,
                                "%s: metadata key \"tokenizer.ggml.tokens\": expected an array "
                                "of string, found an array of %s",
                                path, qt_gguf_type_name(et));
            if (n > 0x7fffffff)
                return QT_ERROR(QT_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                                (unsigned long long)n);
            c->vocab_size = (int)n;
        } else if (emb && emb->n_dims == 2 && emb->ne[1] <= 0x7fffffff) {
            c->vocab_size = (int)emb->ne[1];
        } else {
            return QT_ERROR(QT_EFORMAT,
                            "%s: vocabulary size unknown: neither %s.vocab_size, "
                            "tokenizer.ggml.tokens nor a 2-D token_embd.weight is there",
                            path, arch);
        }
    }
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return QT_ERROR(QT_EFORMAT,
                        "%s: %s.attention.head_count_kv (%d) must divide "
                        "%s.attention.head_count (%d)",
                        path, arch, c->n_kv_heads, arch, c->n_heads);

    /* Before anything is allocated, the sizes must be ones the file can back, so a
     * hostile header cannot make us allocate a model its tensors do not hold: the
     * embedding has (vocab, dim), and there are tensors enough for block_count layers
     * (9 each). Everything else is checked tensor by tensor after the build. */
    const qt_gguf_tensor *te = qt_gguf_tensor_get(g, "token_embd.weight");
    if (!te)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"token_embd.weight\" is missing", path);
    if (te->n_dims != 2 || te->ne[0] != c->dim || te->ne[1] != c->vocab_size)
        return QT_ERROR(QT_ESHAPE,
                        "%s: tensor \"token_embd.weight\": expected shape [%d, %d] (vocab, "
                        "embedding_length), found ne = [%lld, %lld] (%d dims, innermost first)",
                        path, c->vocab_size, c->dim, (long long)te->ne[0], (long long)te->ne[1],
                        te->n_dims);
    if ((int64_t)c->n_layers * 9 + 2 > qt_gguf_tensor_count(g))
        return QT_ERROR(QT_EFORMAT,
                        "%s: %s.block_count is %d, but the file holds only %lld tensors (a "
                        "layer has 9)",
                        path, arch, c->n_layers, (long long)qt_gguf_tensor_count(g));
    c->qkv_bias = !strcmp(arch, "qwen2");
    c->tied_embeddings = qt_gguf_tensor_get(g, "output.weight") == NULL;
    return QT_OK;
}

/* ------------------------------------------------------------- tensor map ---- */

/* HF suffix after "model.layers.N." -> GGUF suffix after "blk.N.". */
static const char *const LAYER_MAP[][2] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

bool qt_gguf_name_of(const char *hf, char *out, size_t n) {
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, n, "token_embd.weight") > 0;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, n, "output_norm.weight") > 0;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, n, "output.weight") > 0;
    int layer, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &used) != 1 || used == 0) return false;
    for (size_t i = 0; i < sizeof LAYER_MAP / sizeof LAYER_MAP[0]; i++)
        if (!strcmp(hf + used, LAYER_MAP[i][0]))
            return snprintf(out, n, "blk.%d.%s", layer, LAYER_MAP[i][1]) > 0;
    return false;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Undo convert_hf_to_gguf's LlamaModel.permute on a (rows, cols) matrix (cols = 1 for a
 * bias) of n_head heads: out row h*hd + j*hd/2 + i = in row h*hd + 2i + j. */
static qt_status unpermute_rows(float *w, int64_t rows, int64_t cols, int n_head,
                                const char *path, const char *name) {
    int64_t hd = rows / n_head, half = hd / 2;
    float *tmp = malloc((size_t)(hd * cols) * sizeof *tmp);
    if (!tmp) return QT_ERROR(QT_ENOMEM, "%s: tensor \"%s\": out of memory", path, name);
    for (int h = 0; h < n_head; h++) {
        float *blk = w + (int64_t)h * hd * cols;
        memcpy(tmp, blk, (size_t)(hd * cols) * sizeof *tmp);
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(blk + (j * half + i) * cols, tmp + (2 * i + j) * cols,
                       (size_t)cols * sizeof *tmp);
    }
    free(tmp);
    return QT_OK;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Fills every parameter of m from g. */
static qt_status load_tensors(qt_llama *m, const qt_gguf *g, const char *path, bool permuted) {
    qt_paramset *ps = &m->params;
    char (*names)[QT_GGUF_MAX_NAME] = calloc((size_t)ps->n + 1, sizeof *names);
    unsigned char *filled = calloc((size_t)ps->n + 1, 1);
    qt_status s = QT_OK;
    if (!names || !filled) {
        s = QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < ps->n; i++)
        if (!qt_gguf_name_of(ps->params[i]->name, names[i], sizeof names[i])) {
            s = QT_ERROR(QT_ESTATE, "%s: parameter \"%s\" has no GGUF name", path,
                         ps->params[i]->name);
            goto done;
        }
    int64_t nt = qt_gguf_tensor_count(g);
    char es[96], fs[96];
    for (int64_t ti = 0; ti < nt && s == QT_OK; ti++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, ti);
        int p = -1;
        for (int i = 0; i < ps->n && p < 0; i++)
            if (!strcmp(names[i], t->name)) p = i;
        if (p < 0) {
            if (!strcmp(t->name, "rope_freqs.weight"))
                s = QT_ERROR(QT_ENOTSUP,
                             "%s: tensor \"rope_freqs.weight\" (Llama 3.1 frequency-scaled "
                             "RoPE) is not supported",
                             path);
            else
                s = QT_ERROR(QT_EFORMAT,
                             "%s: unexpected tensor \"%s\": the model its metadata describes "
                             "has no such parameter",
                             path, t->name);
            break;
        }
        qt_tensor *dst = ps->params[p];
        /* ne[] is innermost first: GGUF {in, out} is HF (out, in) */
        int64_t found[4];
        for (int d = 0; d < t->n_dims; d++) found[d] = t->ne[t->n_dims - 1 - d];
        bool same = t->n_dims == dst->ndim;
        for (int d = 0; same && d < dst->ndim; d++) same = found[d] == dst->shape[d];
        if (!same) {
            shape_str(es, sizeof es, dst->ndim, dst->shape);
            shape_str(fs, sizeof fs, t->n_dims, found);
            s = QT_ERROR(QT_ESHAPE,
                         "%s: tensor \"%s\": expected shape %s (outermost first) from the "
                         "metadata, found %s",
                         path, t->name, es, fs);
            break;
        }
        if (!qt_ggml_can_dequantize(t->type)) {
            s = QT_ERROR(QT_EDTYPE, "%s: tensor \"%s\": type %s cannot be dequantized to f32",
                         path, t->name, qt_ggml_type_name(t->type));
            break;
        }
        s = qt_ggml_dequantize(t->type, t->data, dst->data, qt_numel(dst));
        if (s != QT_OK) {
            char why[512]; /* copied: qt_error_set must not read what it writes */
            snprintf(why, sizeof why, "%s", qt_error_message());
            s = QT_ERROR(s, "%s: tensor \"%s\": %s", path, t->name, why);
            break;
        }
        bool q = ends_with(t->name, ".attn_q.weight") || ends_with(t->name, ".attn_q.bias");
        bool k = ends_with(t->name, ".attn_k.weight") || ends_with(t->name, ".attn_k.bias");
        if (permuted && (q || k)) {
            int64_t cols = dst->ndim == 2 ? dst->shape[1] : 1;
            s = unpermute_rows(dst->data, dst->shape[0], cols,
                               q ? m->cfg.n_heads : m->cfg.n_kv_heads, path, t->name);
        }
        filled[p] = 1;
    }
    for (int i = 0; i < ps->n && s == QT_OK; i++)
        if (!filled[i])
            s = QT_ERROR(QT_EFORMAT,
                         "%s: tensor \"%s\" is missing, and the model the metadata describes "
                         "needs it",
                         path, names[i]);
done:
    free(names);
    free(filled);
    return s;
}

/* -------------------------------------------------------------------- loading ---- */

qt_status qt_model_load_gguf(qt_model *m, const char *path) {
    if (!m) return QT_ERROR(QT_EINVAL, "qt_model_load_gguf: m is NULL");
    memset(m, 0, sizeof *m);
    if (!path) return QT_ERROR(QT_EINVAL, "qt_model_load_gguf: path is NULL");
    qt_gguf *g = NULL;
    qt_status s = qt_gguf_open(path, &g);
    if (s != QT_OK) return s;
    const char *arch = NULL;
    s = qt_gguf_get_str(g, "general.architecture", &arch, NULL);
    if (s == QT_OK && strcmp(arch, "llama") && strcmp(arch, "qwen2"))
        s = QT_ERROR(QT_ENOTSUP,
                     "%s: general.architecture is \"%s\"; supported: \"llama\", \"qwen2\"", path,
                     arch);
    qt_llama_config cfg;
    if (s == QT_OK) s = read_config(g, path, arch, &cfg);
    if (s == QT_OK) {
        s = qt_llama_build(&m->llama, &cfg);
        if (s != QT_OK) {
            char why[768]; /* copied: qt_error_set must not read what it writes */
            snprintf(why, sizeof why, "%s", qt_error_message());
            s = QT_ERROR(s, "%s: the metadata describes no valid model: %s", path, why);
        }
    }
    if (s == QT_OK) {
        m->arch = QT_ARCH_LLAMA;
        s = load_tensors(&m->llama, g, path, !strcmp(arch, "llama"));
        if (s != QT_OK) qt_llama_free(&m->llama);
    }
    if (s != QT_OK) memset(m, 0, sizeof *m);
    qt_gguf_close(g);
    return s;
}
