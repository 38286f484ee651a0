/*
 * export_gguf.c - a quantized Llama-family model as a GGUF v3 file llama.cpp runs.
 *
 * Follows llama.cpp's convert_hf_to_gguf.py (LlamaModel, Qwen2Model) and gguf-py's
 * constants.py for names and keys (../shared/FORMATS.md "GGUF"); the exact inverse of
 * layers/gguf_load.c, which reads it back:
 *   - general.architecture "llama" ("qwen2" for a model with q/k/v bias, written without
 *     the q/k permutation as the converter's Qwen2Model does, llama.cpp running it with
 *     NEOX rope), general.name, general.file_type (include/llama.h enum llama_ftype, the
 *     type holding most quantized weights), general.quantization_version 2,
 *     general.alignment 32, <arch>.* hyperparameters as u32 / f32.
 *   - tensors token_embd, blk.N.*, output_norm, output (absent when tied). A quantized
 *     Linear (a GGUF block type in the quantizer core) is written as its blocks; other
 *     2-D weights in opts->gguf_float (F32 or F16); norms and biases F32.
 *   - "llama" permutes the rows of q_proj (n_head) and k_proj (n_head_kv) as
 *     LlamaModel.permute: GGUF row h*hd + 2i + j = HF row h*hd + j*hd/2 + i. Quantization
 *     is per row, so for a quantized weight whole rows of blocks move and the blocks stay
 *     bit-exact.
 *   - tokenizer.ggml.* as the converter writes them for byte-level BPE; with no tokenizer
 *     (a model on raw bytes) 256 tokens, GPT-2's bytes_to_unicode image of each byte, no
 *     merges, so llama.cpp's ids are the byte values.
 *   - provenance: qtrain.version / method / format / calibration_hash / recipe,
 *     general.quantized_by "qtrain".
 * Everything is checked before anything is written; the writer writes to a temporary
 * renamed into place, so a failed export leaves no file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_export.h"

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* GGUF row r of a permuted (rows) matrix of n_head heads comes from this HF row:
 * r = h*hd + 2i + j  <-  h*hd + j*hd/2 + i. */
static int64_t permuted_src_row(int64_t r, int64_t rows, int n_head) {
    int64_t hd = rows / n_head, h = r / hd, k = r % hd;
    return h * hd + (k % 2) * (hd / 2) + k / 2;
}

/* llama_ftype of the type holding most quantized weights (include/llama.h). K types
 * are the _S variant, or _M when some Q6_K weights are there too (llama.cpp's Q*_K_M
 * mixes put attn_v / ffn_down in Q6_K). */
static uint32_t file_type(const qt_qmodel *qm, qt_ggml_type float_type) {
    int64_t count[QT_GGML_TYPE_LIMIT] = {0};
    for (int i = 0; i < qm->n; i++) {
        const qt_qtensor *q = &qm->layers[i].q;
        count[q->fmt.ggml] += q->rows * q->cols;
    }
    int best = -1;
    for (int t = 0; t < QT_GGML_TYPE_LIMIT; t++)
        if (count[t] > 0 && (best < 0 || count[t] > count[best])) best = t;
    bool q6 = count[QT_GGML_Q6_K] > 0;
    switch (best) {
    case QT_GGML_Q4_0: return 2;
    case QT_GGML_Q4_1: return 3;
    case QT_GGML_Q8_0: return 7;
    case QT_GGML_Q5_0: return 8;
    case QT_GGML_Q5_1: return 9;
    case QT_GGML_Q2_K: return 10;
    case QT_GGML_Q3_K: return q6 ? 12 : 11;
    case QT_GGML_Q4_K: return q6 ? 15 : 14;
    case QT_GGML_Q5_K: return q6 ? 17 : 16;
    case QT_GGML_Q6_K: return 18;
    case QT_GGML_IQ4_NL: return 25;
    case QT_GGML_IQ4_XS: return 30;
    default: return float_type == QT_GGML_F16 ? 1 : 0;
    }
}

/* GPT-2's bytes_to_unicode (openai/gpt-2 encoder.py): printable Latin-1 bytes map to
 * themselves, the other 68 to U+0100.. in byte order. Writes the UTF-8 of byte b's
 * character into out (3 bytes with the NUL). */
static void byte_token(int b, char out[3]) {
    int cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) {
        cp = b;
    } else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
    }
}

/* tokenizer.ggml.* for `vocab` ids (the model's vocab_size). */
static qt_status write_tokenizer(qt_gguf_writer *w, const qt_tokenizer *tok, int vocab) {
    qt_tokenizer_vocab v;
    char bytes[256][3];
    const char **pad_tokens = NULL;
    int32_t *pad_types = NULL;
    char (*pads)[24] = NULL;
    qt_status st;
    if (tok) {
        if ((st = qt_tokenizer_to_vocab(tok, &v)) != QT_OK) return st;
        if (v.n_tokens > vocab) {
            st = QT_ERROR(QT_EINVAL,
                          "gguf export: the tokenizer has %d ids but the model's vocab_size is %d",
                          (int)v.n_tokens, vocab);
            qt_tokenizer_vocab_free(&v);
            return st;
        }
    } else {
        if (vocab < 256) {
            return QT_ERROR(QT_EINVAL,
                            "gguf export: a model on raw bytes needs vocab_size >= 256, found %d",
                            vocab);
        }
        memset(&v, 0, sizeof v);
        v.n_tokens = 256, v.pre = "default", v.bos_id = v.eos_id = -1;
    }
    /* the converter pads the vocabulary up to the model's with "[PAD<id>]" UNUSED tokens */
    pad_tokens = malloc((size_t)vocab * sizeof *pad_tokens);
    pad_types = malloc((size_t)vocab * sizeof *pad_types);
    pads = malloc((size_t)(vocab - v.n_tokens + 1) * sizeof *pads);
    if (!pad_tokens || !pad_types || !pads) {
        st = QT_ERROR(QT_ENOMEM, "gguf export: out of memory");
        goto done;
    }
    for (int i = 0; i < vocab; i++) {
        if (i < v.n_tokens && tok) {
            pad_tokens[i] = v.tokens[i], pad_types[i] = v.token_types[i];
        } else if (i < v.n_tokens) {
            byte_token(i, bytes[i]);
            pad_tokens[i] = bytes[i], pad_types[i] = QT_TOKTYPE_NORMAL;
        } else {
            char *p = pads[i - v.n_tokens];
            snprintf(p, sizeof pads[0], "[PAD%d]", i);
            pad_tokens[i] = p, pad_types[i] = QT_TOKTYPE_UNUSED;
        }
    }
    qt_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4);
    qt_gguf_writer_set_str(w, "tokenizer.ggml.pre", v.pre, strlen(v.pre));
    qt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", pad_tokens, NULL, (uint64_t)vocab);
    qt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", QT_GGUF_I32, pad_types, (uint64_t)vocab);
    qt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", v.merges, NULL, (uint64_t)v.n_merges);
    if (v.bos_id >= 0) qt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v.bos_id);
    if (v.eos_id >= 0) qt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v.eos_id);
    qt_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", v.add_bos);
    st = qt_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", v.add_eos);
done:
    free(pad_tokens);
    free(pad_types);
    free(pads);
    if (tok) qt_tokenizer_vocab_free(&v);
    return st;
}

/* Everything that can be refused, before anything is written. */
static qt_status check(const qt_qmodel *qm, const qt_export_opts *o, const char *path) {
    if (!qm || !qm->model || !path)
        return QT_ERROR(QT_EINVAL, "gguf export: NULL model or path");
    if (qm->model->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_EINVAL,
                        "gguf export: %s: only Llama-family models (llama, mistral, qwen2) can "
                        "be written as GGUF; this model is GPT-2",
                        path);
    if (o->gguf_float != QT_GGML_F32 && o->gguf_float != QT_GGML_F16)
        return QT_ERROR(QT_EINVAL, "gguf export: float weights must be F32 or F16, got %s",
                        qt_ggml_type_name(o->gguf_float));
    const qt_llama *m = &qm->model->llama;
    const qt_paramset *ps = &m->params;
    for (int i = 0; i < qm->n; i++) {
        const qt_qlinear *l = &qm->layers[i];
        char fs[96];
        qt_qformat_str(&l->q.fmt, fs, sizeof fs);
        if (l->q.fmt.kind != QT_QF_GGUF || !qt_ggml_can_quantize(l->q.fmt.ggml))
            return QT_ERROR(QT_EINVAL,
                            "gguf export: layer %s is quantized as %s; GGUF export needs a "
                            "GGUF block type (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, "
                            "q5_k, q6_k, iq4_nl, iq4_xs) or a float layer",
                            l->name, fs);
        if (l->perm)
            return QT_ERROR(QT_EINVAL,
                            "gguf export: layer %s has an act-order column permutation, which "
                            "GGUF cannot store",
                            l->name);
        const qt_tensor *p = NULL;
        for (int j = 0; j < ps->n && !p; j++)
            if (!strcmp(ps->params[j]->name, l->name)) p = ps->params[j];
        if (!p || p->ndim != 2 || p->shape[0] != l->q.rows || p->shape[1] != l->q.cols)
            return QT_ERROR(QT_EINVAL,
                            "gguf export: quantized layer %s (%lld x %lld) is not a 2-D "
                            "parameter of that shape in the model",
                            l->name, (long long)l->q.rows, (long long)l->q.cols);
        size_t want = (size_t)l->q.rows * qt_ggml_nbytes(l->q.fmt.ggml, l->q.cols);
        if (!l->q.blocks || l->q.nbytes != want)
            return QT_ERROR(QT_EINVAL,
                            "gguf export: layer %s: %s blocks hold %zu bytes, expected %zu",
                            l->name, fs, l->q.nbytes, want);
    }
    for (int j = 0; j < ps->n; j++) {
        char gn[QT_GGUF_MAX_NAME];
        if (!qt_gguf_name_of(ps->params[j]->name, gn, sizeof gn))
            return QT_ERROR(QT_EINVAL, "gguf export: parameter %s has no GGUF tensor name",
                            ps->params[j]->name);
        if (ps->params[j]->dtype != QT_F32 || ps->params[j]->ndim < 1 || ps->params[j]->ndim > 2)
            return QT_ERROR(QT_EINVAL, "gguf export: parameter %s is not a 1-D or 2-D f32 tensor",
                            ps->params[j]->name);
    }
    if (m->cfg.dim % m->cfg.n_heads || (m->cfg.dim / m->cfg.n_heads) % 2)
        return QT_ERROR(QT_EINVAL, "gguf export: head size %d / %d must be an even integer",
                        m->cfg.dim, m->cfg.n_heads);
    return QT_OK;
}

/* The stem of a path ("dir/model.gguf" -> "model") for general.name. */
static void stem(const char *path, char *out, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, n, "%s", b);
    size_t k = strlen(out);
    if (k > 5 && !strcmp(out + k - 5, ".gguf")) out[k - 5] = 0;
}

qt_status qt_export_gguf(const qt_qmodel *qm, const qt_export_opts *opts, const char *path) {
    qt_export_opts o = {.version = "", .gguf_float = QT_GGML_F32, .st_float = QT_F16};
    if (opts) o = *opts;
    qt_status st = check(qm, &o, path);
    if (st != QT_OK) return st;
    const qt_llama *m = &qm->model->llama;
    const qt_llama_config *c = &m->cfg;
    const qt_paramset *ps = &m->params;
    const char *arch = c->qkv_bias ? "qwen2" : "llama";
    const bool permute = !c->qkv_bias;

    qt_gguf_writer *w = NULL;
    void **bufs = calloc((size_t)ps->n + 1, sizeof *bufs); /* tensor data, alive until write */
    char *formats = calloc(1, 1);
    if (!bufs || !formats) {
        free(bufs), free(formats);
        return QT_ERROR(QT_ENOMEM, "gguf export: out of memory");
    }
    if ((st = qt_gguf_writer_init(&w)) != QT_OK) goto done;

    /* ---- general.* and hyperparameters (gguf-py constants.py Keys) ---- */
    char name[256], k[128];
    stem(path, name, sizeof name);
    qt_gguf_writer_set_str(w, "general.architecture", arch, strlen(arch));
    qt_gguf_writer_set_str(w, "general.name", name, strlen(name));
    qt_gguf_writer_set_u32(w, "general.alignment", QT_GGUF_DEFAULT_ALIGNMENT);
    qt_gguf_writer_set_u32(w, "general.file_type", file_type(qm, o.gguf_float));
    qt_gguf_writer_set_u32(w, "general.quantization_version", 2); /* GGML_QNT_VERSION */
    qt_gguf_writer_set_str(w, "general.quantized_by", "qtrain", 6);
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", arch, suffix), k)
    /* a model with no length limit gets llama.cpp's customary 4096 */
    qt_gguf_writer_set_u32(w, KEY("context_length"),
                           (uint32_t)(c->max_seq_len > 0 ? c->max_seq_len : 4096));
    qt_gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)c->dim);
    qt_gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)c->n_layers);
    qt_gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)c->ffn_dim);
    qt_gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads);
    qt_gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    qt_gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps);
    qt_gguf_writer_set_f32(w, KEY("rope.freq_base"), c->rope_theta);
    qt_gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)(c->dim / c->n_heads));
    qt_gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size);
#undef KEY
    if ((st = write_tokenizer(w, o.tok, c->vocab_size)) != QT_OK) goto done;

    /* ---- provenance ---- */
    for (int i = 0; i < qm->n; i++) {
        char fs[96];
        qt_qformat_str(&qm->layers[i].q.fmt, fs, sizeof fs);
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) {
            char gs[96];
            seen = !strcmp(qt_qformat_str(&qm->layers[j].q.fmt, gs, sizeof gs), fs);
        }
        if (seen) continue;
        size_t a = strlen(formats), b = strlen(fs);
        char *f2 = realloc(formats, a + b + 2);
        if (!f2) {
            st = QT_ERROR(QT_ENOMEM, "gguf export: out of memory");
            goto done;
        }
        formats = f2;
        snprintf(formats + a, b + 2, "%s%s", a ? "," : "", fs);
    }
    const char *prov[][2] = {{"qtrain.version", o.version},
                             {"qtrain.method", qm->method},
                             {"qtrain.format", formats},
                             {"qtrain.calibration_hash", qm->calib_hash},
                             {"qtrain.recipe", qm->recipe}};
    for (size_t i = 0; i < sizeof prov / sizeof prov[0]; i++)
        if (prov[i][1] && prov[i][1][0])
            qt_gguf_writer_set_str(w, prov[i][0], prov[i][1], strlen(prov[i][1]));

    /* ---- tensors, in parameter order (token_embd, blk.N.*, output_norm, output) ---- */
    for (int j = 0; j < ps->n && st == QT_OK; j++) {
        const qt_tensor *p = ps->params[j];
        char gn[QT_GGUF_MAX_NAME];
        qt_gguf_name_of(p->name, gn, sizeof gn);
        const bool is_q = ends_with(gn, ".attn_q.weight"), is_k = ends_with(gn, ".attn_k.weight");
        const int n_head = permute && (is_q || is_k) ? (is_q ? c->n_heads : c->n_kv_heads) : 0;
        const int64_t rows = p->ndim == 2 ? p->shape[0] : 1, cols = p->shape[p->ndim - 1];
        const int64_t ne[2] = {cols, rows};
        const qt_qlinear *ql = p->ndim == 2 ? qt_qmodel_find(qm, p->name) : NULL;
        qt_ggml_type type = ql ? ql->q.fmt.ggml : p->ndim == 2 ? o.gguf_float : QT_GGML_F32;
        size_t row_bytes = ql ? qt_ggml_nbytes(type, cols)
                              : (size_t)cols * (type == QT_GGML_F16 ? 2 : 4);
        size_t nbytes = row_bytes * (size_t)rows;
        uint8_t *buf = malloc(nbytes ? nbytes : 1);
        if (!buf) {
            st = QT_ERROR(QT_ENOMEM, "gguf export: %s: out of memory", gn);
            break;
        }
        bufs[j] = buf;
        const float *src = p->data;
        for (int64_t r = 0; r < rows; r++) {
            int64_t s = n_head ? permuted_src_row(r, rows, n_head) : r;
            uint8_t *dst = buf + (size_t)r * row_bytes;
            if (ql) {
                memcpy(dst, ql->q.blocks + (size_t)s * row_bytes, row_bytes);
            } else if (type == QT_GGML_F16) {
                for (int64_t i = 0; i < cols; i++) {
                    uint16_t h = qt_f32_to_f16(src[s * cols + i]);
                    memcpy(dst + 2 * i, &h, 2);
                }
            } else {
                memcpy(dst, src + s * cols, row_bytes);
            }
        }
        st = qt_gguf_writer_add_tensor(w, gn, type, p->ndim, ne, buf, nbytes);
    }
    if (st == QT_OK) st = qt_gguf_writer_write(w, path);
done:
    qt_gguf_writer_free(w);
    for (int j = 0; j < ps->n; j++) free(bufs[j]);
    free(bufs);
    free(formats);
    return st;
}
