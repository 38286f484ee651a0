/*
 * hf_config.c - config.json of Hugging Face checkpoints, read and written: the keys of
 * transformers' LlamaConfig, MistralConfig, Qwen2Config and GPT2Config that decide the
 * computation, mapped onto qt_llama_config / qt_gpt2_config.
 *
 * Reading is strict about what changes the numbers: a required key missing, a value of
 * the wrong type, or a feature qtrain does not implement (rope scaling, o_proj/MLP
 * biases, a head size apart from hidden_size / heads, another activation) is an error
 * naming the file and the key, never a silent default. Keys that only matter for
 * generation or training in transformers (bos/eos ids, dropout, use_cache) are ignored.
 *
 * Surprises: transformers 5 writes rope_theta inside "rope_parameters", 4.x at the top
 * level; both are read and both are written. A JSON null counts as absent (n_inner: null
 * means 4 * n_embd, as in GPT2Config).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers_internal.h"
#include "qt_formats.h"


qt_status qt_hf_parse_json(const char *path, cJSON **out) {
    char *text;
    *out = NULL;
    qt_status s = qt_read_text_file(path, &text);
    if (s != QT_OK) return s;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, true);
    if (!j) {
        size_t off = end ? (size_t)(end - text) : 0;
        free(text);
        return QT_ERROR(QT_EFORMAT, "%s: not valid JSON (parse error near byte %zu)", path, off);
    }
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return QT_ERROR(QT_EFORMAT, "%s: expected a JSON object at the top level", path);
    }
    *out = j;
    return QT_OK;
}

/* What a JSON value is, for messages: `string "64"`, `number 1.5`, `null`. */
const char *qt_hf_json_what(const cJSON *v, char *buf, size_t n) {
    if (!v) snprintf(buf, n, "nothing");
    else if (cJSON_IsString(v)) snprintf(buf, n, "string \"%.40s\"", v->valuestring);
    else if (cJSON_IsNumber(v)) snprintf(buf, n, "number %.17g", v->valuedouble);
    else if (cJSON_IsBool(v)) snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v)) snprintf(buf, n, "null");
    else if (cJSON_IsArray(v)) snprintf(buf, n, "an array");
    else snprintf(buf, n, "an object");
    return buf;
}

/* Config readers: a key that is absent or null takes `def` when optional (req false);
 * when required its absence is an error. A value of the wrong type is always an error. */
typedef struct {
    const char *path; /* the config file, for messages */
    const cJSON *obj;
} jsrc;

static const cJSON *jget(const jsrc *js, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(js->obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static qt_status jint(const jsrc *js, const char *key, bool req, int def, int lo, int *out) {
    const cJSON *v = jget(js, key);
    char w[96];
    if (!v) {
        if (req)
            return QT_ERROR(QT_EFORMAT, "%s: key \"%s\" is missing (expected an integer >= %d)",
                            js->path, key, lo);
        *out = def;
        return QT_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < lo || v->valuedouble > 1e9)
        return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be an integer >= %d, got %s", js->path,
                        key, lo, qt_hf_json_what(v, w, sizeof w));
    *out = (int)v->valuedouble;
    return QT_OK;
}

static qt_status jfloat(const jsrc *js, const char *key, bool req, double def, float *out) {
    const cJSON *v = jget(js, key);
    char w[96];
    if (!v) {
        if (req)
            return QT_ERROR(QT_EFORMAT, "%s: key \"%s\" is missing (expected a number)",
                            js->path, key);
        *out = (float)def;
        return QT_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble))
        return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be a positive number, got %s", js->path,
                        key, qt_hf_json_what(v, w, sizeof w));
    *out = (float)v->valuedouble;
    return QT_OK;
}

static qt_status jbool(const jsrc *js, const char *key, bool def, bool *out) {
    const cJSON *v = jget(js, key);
    char w[96];
    if (!v) {
        *out = def;
        return QT_OK;
    }
    if (!cJSON_IsBool(v))
        return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be true or false, got %s", js->path, key,
                        qt_hf_json_what(v, w, sizeof w));
    *out = cJSON_IsTrue(v);
    return QT_OK;
}

/* Optional string; *out NULL when absent or null. */
static qt_status jstr(const jsrc *js, const char *key, const char **out) {
    const cJSON *v = jget(js, key);
    char w[96];
    *out = NULL;
    if (!v) return QT_OK;
    if (!cJSON_IsString(v))
        return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be a string, got %s", js->path, key,
                        qt_hf_json_what(v, w, sizeof w));
    *out = v->valuestring;
    return QT_OK;
}

/* Optional string that, when given, must be one of `ok` (NULL-terminated). */
static qt_status jstr_oneof(const jsrc *js, const char *key, const char *const *ok,
                            const char *why) {
    const char *s;
    qt_status st = jstr(js, key, &s);
    if (st != QT_OK || !s) return st;
    for (int i = 0; ok[i]; i++)
        if (!strcmp(s, ok[i])) return QT_OK;
    return QT_ERROR(QT_ENOTSUP, "%s: \"%s\" is \"%s\"; only \"%s\" is supported (%s)", js->path,
                    key, s, ok[0], why);
}

#define TRY(expr)                          \
    do {                                   \
        qt_status st_ = (expr);            \
        if (st_ != QT_OK) return st_;      \
    } while (0)

/* ------------------------------------------------------------------- configs ---- */

static const struct {
    const char *arch, *model_type;
    qt_hf_kind kind;
} hf_archs[] = {
    {"LlamaForCausalLM", "llama", QT_HF_LLAMA},
    {"MistralForCausalLM", "mistral", QT_HF_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", QT_HF_QWEN2},
    {"GPT2LMHeadModel", "gpt2", QT_HF_GPT2},
};
#define N_ARCHS ((int)(sizeof hf_archs / sizeof hf_archs[0]))

static qt_status pick_arch(const jsrc *js, int *idx) {
    const cJSON *a = jget(js, "architectures");
    char w[96];
    if (a) {
        const cJSON *a0 = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 0) : NULL;
        if (!cJSON_IsString(a0))
            return QT_ERROR(QT_EFORMAT,
                            "%s: \"architectures\" must be an array of strings, got %s%s",
                            js->path, cJSON_IsArray(a) ? "first element " : "",
                            qt_hf_json_what(cJSON_IsArray(a) ? a0 : a, w, sizeof w));
        for (int i = 0; i < N_ARCHS; i++)
            if (!strcmp(a0->valuestring, hf_archs[i].arch)) {
                *idx = i;
                return QT_OK;
            }
        return QT_ERROR(QT_ENOTSUP,
                        "%s: architecture \"%s\" is not supported (expected one of "
                        "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                        "GPT2LMHeadModel)",
                        js->path, a0->valuestring);
    }
    /* no "architectures": fall back on model_type, as transformers' AutoConfig does */
    const char *mt;
    TRY(jstr(js, "model_type", &mt));
    if (!mt)
        return QT_ERROR(QT_EFORMAT,
                        "%s: neither \"architectures\" nor \"model_type\" says what model this is",
                        js->path);
    for (int i = 0; i < N_ARCHS; i++)
        if (!strcmp(mt, hf_archs[i].model_type)) {
            *idx = i;
            return QT_OK;
        }
    return QT_ERROR(QT_ENOTSUP,
                    "%s: model_type \"%s\" is not supported (expected llama, mistral, qwen2 or "
                    "gpt2)",
                    js->path, mt);
}

/* rope_theta from "rope_parameters" (transformers 5) or the top level (4.x); only the
 * default rotary embedding. */
static qt_status llama_rope(const jsrc *js, float *theta) {
    static const char *const def_only[] = {"default", NULL};
    const cJSON *rs = jget(js, "rope_scaling");
    char w[96];
    if (rs) {
        if (!cJSON_IsObject(rs))
            return QT_ERROR(QT_EFORMAT, "%s: \"rope_scaling\" must be an object or null, got %s",
                            js->path, qt_hf_json_what(rs, w, sizeof w));
        jsrc sub = {js->path, rs};
        const char *t1, *t2;
        TRY(jstr(&sub, "rope_type", &t1));
        TRY(jstr(&sub, "type", &t2));
        const char *t = t1 ? t1 : t2;
        if (!t || strcmp(t, "default"))
            return QT_ERROR(QT_ENOTSUP,
                            "%s: \"rope_scaling\" of type \"%s\" is not supported (only the "
                            "default rotary embedding)",
                            js->path, t ? t : "?");
    }
    const cJSON *rp = jget(js, "rope_parameters");
    if (rp) {
        if (!cJSON_IsObject(rp))
            return QT_ERROR(QT_EFORMAT,
                            "%s: \"rope_parameters\" must be an object or null, got %s", js->path,
                            qt_hf_json_what(rp, w, sizeof w));
        jsrc sub = {js->path, rp};
        TRY(jstr_oneof(&sub, "rope_type", def_only,
                       "rope_parameters.rope_type: only the default rotary embedding"));
        if (jget(&sub, "rope_theta")) return jfloat(&sub, "rope_theta", true, 0, theta);
    }
    return jfloat(js, "rope_theta", false, 10000.0, theta);
}

static qt_status llama_config(const jsrc *js, qt_hf_kind kind, qt_llama_config *c) {
    static const char *const silu[] = {"silu", NULL};
    memset(c, 0, sizeof *c);
    TRY(jint(js, "vocab_size", true, 0, 1, &c->vocab_size));
    TRY(jint(js, "hidden_size", true, 0, 1, &c->dim));
    TRY(jint(js, "num_hidden_layers", true, 0, 1, &c->n_layers));
    TRY(jint(js, "num_attention_heads", true, 0, 1, &c->n_heads));
    TRY(jint(js, "num_key_value_heads", false, c->n_heads, 1, &c->n_kv_heads));
    TRY(jint(js, "intermediate_size", true, 0, 1, &c->ffn_dim));
    TRY(jfloat(js, "rms_norm_eps", false, 1e-6, &c->norm_eps));
    TRY(llama_rope(js, &c->rope_theta));
    TRY(jint(js, "max_position_embeddings", false, 0, 0, &c->max_seq_len));
    TRY(jbool(js, "tie_word_embeddings", false, &c->tied_embeddings));
    TRY(jstr_oneof(js, "hidden_act", silu, "SwiGLU with SiLU"));
    int head_dim;
    TRY(jint(js, "head_dim", false, 0, 1, &head_dim));
    if (head_dim && c->n_heads && head_dim * c->n_heads != c->dim)
        return QT_ERROR(QT_ENOTSUP,
                        "%s: \"head_dim\" is %d but hidden_size / num_attention_heads is %d / "
                        "%d; a head size apart from hidden_size is not supported",
                        js->path, head_dim, c->dim, c->n_heads);
    bool b;
    TRY(jbool(js, "attention_bias", false, &b));
    if (b && kind != QT_HF_QWEN2)
        return QT_ERROR(QT_ENOTSUP,
                        "%s: \"attention_bias\": true (bias on q/k/v and o_proj) is not "
                        "supported; only Qwen2's q/k/v bias is",
                        js->path);
    TRY(jbool(js, "mlp_bias", false, &b));
    if (b) return QT_ERROR(QT_ENOTSUP, "%s: \"mlp_bias\": true is not supported", js->path);
    c->qkv_bias = kind == QT_HF_QWEN2;
    if (kind == QT_HF_MISTRAL) {
        TRY(jint(js, "sliding_window", false, 0, 1, &c->sliding_window));
    } else if (kind == QT_HF_QWEN2) {
        bool sw;
        TRY(jbool(js, "use_sliding_window", false, &sw));
        if (sw) TRY(jint(js, "sliding_window", false, 0, 1, &c->sliding_window));
    }
    if (c->dim % c->n_heads || c->n_heads % c->n_kv_heads || (c->dim / c->n_heads) % 2)
        return QT_ERROR(QT_EFORMAT,
                        "%s: hidden_size %d must split into num_attention_heads %d heads of "
                        "even size, and those into num_key_value_heads %d groups",
                        js->path, c->dim, c->n_heads, c->n_kv_heads);
    return QT_OK;
}

static qt_status gpt2_config(const jsrc *js, qt_gpt2_config *c) {
    static const char *const gelu[] = {"gelu_new", "gelu_pytorch_tanh", NULL};
    memset(c, 0, sizeof *c);
    TRY(jint(js, "vocab_size", true, 0, 1, &c->vocab_size));
    TRY(jint(js, "n_positions", true, 0, 1, &c->n_positions));
    TRY(jint(js, "n_embd", true, 0, 1, &c->dim));
    TRY(jint(js, "n_layer", true, 0, 1, &c->n_layers));
    TRY(jint(js, "n_head", true, 0, 1, &c->n_heads));
    TRY(jint(js, "n_inner", false, 4 * c->dim, 1, &c->ffn_dim));
    TRY(jfloat(js, "layer_norm_epsilon", false, 1e-5, &c->norm_eps));
    TRY(jstr_oneof(js, "activation_function", gelu, "GELU, tanh approximation"));
    bool b, tied;
    TRY(jbool(js, "scale_attn_weights", true, &b));
    if (!b)
        return QT_ERROR(QT_ENOTSUP, "%s: \"scale_attn_weights\": false is not supported", js->path);
    TRY(jbool(js, "scale_attn_by_inverse_layer_idx", false, &b));
    if (b)
        return QT_ERROR(QT_ENOTSUP,
                        "%s: \"scale_attn_by_inverse_layer_idx\": true is not supported", js->path);
    TRY(jbool(js, "add_cross_attention", false, &b));
    if (b)
        return QT_ERROR(QT_ENOTSUP, "%s: \"add_cross_attention\": true is not supported", js->path);
    TRY(jbool(js, "tie_word_embeddings", true, &tied));
    c->untied = !tied;
    if (c->dim % c->n_heads)
        return QT_ERROR(QT_EFORMAT, "%s: n_embd %d is not a multiple of n_head %d", js->path,
                        c->dim, c->n_heads);
    return QT_OK;
}


/* A hostile or mistyped config must not make the loader register a billion layers or
 * ask for exabytes: the parameter count it implies (in double, no overflow) is capped. */
#define QT_HF_MAX_LAYERS 100000
#define QT_HF_MAX_PARAMS 1e12
static qt_status check_size(const char *path, const qt_hf_config *h) {
    double V, D, L, F, extra;
    if (h->kind == QT_HF_GPT2) {
        const qt_gpt2_config *c = &h->gpt2;
        V = c->vocab_size, D = c->dim, L = c->n_layers, F = c->ffn_dim;
        extra = (double)c->n_positions * D + L * 4 * D * D;
    } else {
        const qt_llama_config *c = &h->llama;
        V = c->vocab_size, D = c->dim, L = c->n_layers, F = c->ffn_dim;
        extra = L * 2 * D * D;
    }
    double n = 2 * V * D + extra + L * 3 * D * F;
    if (L > QT_HF_MAX_LAYERS || n > QT_HF_MAX_PARAMS)
        return QT_ERROR(QT_EFORMAT,
                        "%s: the config implies %.3g parameters in %.0f layers; more than qtrain "
                        "accepts (%.0e parameters, %d layers)",
                        path, n, L, QT_HF_MAX_PARAMS, QT_HF_MAX_LAYERS);
    return QT_OK;
}

qt_status qt_hf_config_read(const char *path, qt_hf_config *out) {
    memset(out, 0, sizeof *out);
    cJSON *j;
    TRY(qt_hf_parse_json(path, &j));
    jsrc js = {path, j};
    int a = 0;
    qt_status s = pick_arch(&js, &a);
    if (s == QT_OK) {
        out->kind = hf_archs[a].kind;
        out->hf_arch = hf_archs[a].arch;
        s = out->kind == QT_HF_GPT2 ? gpt2_config(&js, &out->gpt2)
                                    : llama_config(&js, out->kind, &out->llama);
    }
    if (s == QT_OK) s = check_size(path, out);
    cJSON_Delete(j);
    return s;
}

/* ------------------------------------------------------------------ writing ---- */

/* The shortest decimal that reads back as the same float, so 1e-5f is written 1e-05
 * and not 9.99999974737875e-06. */
static double float_decimal(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static const char *torch_dtype(qt_dtype t) {
    return t == QT_BF16 ? "bfloat16" : t == QT_F16 ? "float16" : "float32";
}

static void add_arch(cJSON *j, const char *arch, const char *model_type) {
    cJSON *a = cJSON_AddArrayToObject(j, "architectures");
    if (a) cJSON_AddItemToArray(a, cJSON_CreateString(arch));
    cJSON_AddStringToObject(j, "model_type", model_type);
}

cJSON *qt_hf_llama_config_json(const qt_llama_config *c, qt_dtype dtype) {
    bool qwen = c->qkv_bias, mistral = !qwen && c->sliding_window > 0;
    cJSON *j = cJSON_CreateObject();
    if (j) {
        add_arch(j, qwen ? "Qwen2ForCausalLM" : mistral ? "MistralForCausalLM" : "LlamaForCausalLM",
                 qwen ? "qwen2" : mistral ? "mistral" : "llama");
        cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
        cJSON_AddNumberToObject(j, "hidden_size", c->dim);
        cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
        cJSON_AddNumberToObject(j, "num_attention_heads", c->n_heads);
        cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_heads);
        cJSON_AddNumberToObject(j, "head_dim", c->dim / c->n_heads);
        cJSON_AddNumberToObject(j, "intermediate_size", c->ffn_dim);
        cJSON_AddStringToObject(j, "hidden_act", "silu");
        cJSON_AddNumberToObject(j, "rms_norm_eps", float_decimal(c->norm_eps));
        /* rope_theta twice: transformers 4.x reads the top level, 5.x rope_parameters */
        cJSON_AddNumberToObject(j, "rope_theta", float_decimal(c->rope_theta));
        cJSON *rp = cJSON_AddObjectToObject(j, "rope_parameters");
        if (rp) {
            cJSON_AddStringToObject(rp, "rope_type", "default");
            cJSON_AddNumberToObject(rp, "rope_theta", float_decimal(c->rope_theta));
        }
        /* max_seq_len 0 (no limit) leaves transformers' default */
        if (c->max_seq_len > 0)
            cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_seq_len);
        cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied_embeddings);
        if (!qwen) {
            cJSON_AddBoolToObject(j, "attention_bias", false);
            cJSON_AddBoolToObject(j, "mlp_bias", false);
        }
        if (qwen) cJSON_AddBoolToObject(j, "use_sliding_window", c->sliding_window > 0);
        if (c->sliding_window > 0) cJSON_AddNumberToObject(j, "sliding_window", c->sliding_window);
        else if (qwen) cJSON_AddNullToObject(j, "sliding_window");
        cJSON_AddStringToObject(j, "dtype", torch_dtype(dtype));
    }
    return j;
}

cJSON *qt_hf_gpt2_config_json(const qt_gpt2_config *c, qt_dtype dtype) {
    cJSON *j = cJSON_CreateObject();
    if (j) {
        add_arch(j, "GPT2LMHeadModel", "gpt2");
        cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
        cJSON_AddNumberToObject(j, "n_positions", c->n_positions);
        cJSON_AddNumberToObject(j, "n_embd", c->dim);
        cJSON_AddNumberToObject(j, "n_layer", c->n_layers);
        cJSON_AddNumberToObject(j, "n_head", c->n_heads);
        cJSON_AddNumberToObject(j, "n_inner", c->ffn_dim);
        cJSON_AddStringToObject(j, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(j, "layer_norm_epsilon", float_decimal(c->norm_eps));
        cJSON_AddBoolToObject(j, "scale_attn_weights", true);
        cJSON_AddBoolToObject(j, "scale_attn_by_inverse_layer_idx", false);
        /* qtrain's GPT-2 has no dropout; say so rather than inherit GPT-2's 0.1 */
        cJSON_AddNumberToObject(j, "attn_pdrop", 0.0);
        cJSON_AddNumberToObject(j, "resid_pdrop", 0.0);
        cJSON_AddNumberToObject(j, "embd_pdrop", 0.0);
        cJSON_AddBoolToObject(j, "tie_word_embeddings", !c->untied);
        cJSON_AddStringToObject(j, "dtype", torch_dtype(dtype));
    }
    return j;
}
