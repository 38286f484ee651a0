/*
 * load.c - qt_export_load: any model file qtrain reads, into a float model.
 *   - a file: GGUF (qt_model_load_gguf);
 *   - a directory whose config.json has no quantization_config: qt_model_load_hf;
 *   - a directory with one (single model.safetensors): the model built from config.json,
 *     float tensors (F32 / F16 / BF16) converted, and each quantized Linear dequantized
 *     as its format defines it (layouts: export_gptq.c, export_awq.c, export_bnb.c,
 *     export_fp8.c, which cite the sources):
 *       gptq (v1 "gptq"):  w = s[g_idx[i], o] * (q - (qzeros + 1)); "gptq_v2": q - qzeros
 *       awq (gemm):        w = (q - z) * s
 *       bitsandbytes 4-bit: w = quant_map[q] * absmax, absmax with double quant =
 *                          nested_quant_map[absmax_q] * nested_absmax[b / nested_blocksize]
 *                          + nested_offset, rounded to quant_state's dtype as
 *                          dequantize_4bit returns it
 *       compressed-tensors float-quantized (fp8 e4m3): w = e4m3(q) * weight_scale
 * Strict as qt_model_load_hf: every parameter must be found with the shapes the config
 * implies and every tensor of the file must be used (a tied lm_head.weight and rotary
 * inv_freq buffers excepted). Errors name the file and the tensor; on failure *m is
 * zeroed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export_internal.h"

typedef enum { LQ_GPTQ, LQ_AWQ, LQ_BNB, LQ_FP8 } lq_kind;

typedef struct {
    lq_kind kind;
    const char *file;      /* model.safetensors path, for messages */
    const char *cpath;     /* config.json path */
    qt_safetensors *st;
    unsigned char *used;   /* (count) */
    int bits, group;       /* gptq / awq */
    bool gptq_v2;
} lctx;

static qt_status read_json(const char *path, cJSON **out) {
    *out = NULL;
    char *buf = NULL;
    qt_status st = qt_read_text_file(path, &buf);
    if (st != QT_OK) return st;
    *out = cJSON_Parse(buf);
    free(buf);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return QT_ERROR(QT_EFORMAT, "%s: not a JSON object", path);
    }
    return QT_OK;
}

/* A tensor by name, marked used; NULL when absent. */
static const qt_st_tensor *tget(lctx *c, const char *name) {
    const qt_st_tensor *t = qt_safetensors_get(c->st, name);
    if (t) {
        int n = qt_safetensors_count(c->st);
        for (int i = 0; i < n; i++)
            if (qt_safetensors_at(c->st, i) == t) c->used[i] = 1;
    }
    return t;
}

static bool shape_is(const qt_st_tensor *t, int ndim, int64_t a, int64_t b) {
    return t->ndim == ndim && (ndim < 1 || t->shape[0] == a) && (ndim < 2 || t->shape[1] == b);
}

static void shape_str(const qt_st_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* A required tensor of a dtype and 1- or 2-d shape (b ignored for ndim 1). */
static qt_status need(lctx *c, const char *name, qt_dtype dt, int ndim, int64_t a, int64_t b,
                      const qt_st_tensor **out) {
    const qt_st_tensor *t = tget(c, name);
    char fs[96];
    if (!t) return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\" is missing", c->file, name);
    if (t->dtype != dt)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\": expected %s, found %s", c->file, name,
                        qt_st_dtype_name(dt), qt_safetensors_dtype_str(c->st, t));
    if (!shape_is(t, ndim, a, b)) {
        shape_str(t, fs, sizeof fs);
        if (ndim == 2)
            return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s\": expected shape [%lld, %lld], found %s",
                            c->file, name, (long long)a, (long long)b, fs);
        return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s\": expected shape [%lld], found %s", c->file,
                        name, (long long)a, fs);
    }
    *out = t;
    return QT_OK;
}

/* F32 / F16 / BF16 element i (unaligned data). */
static float fget(const qt_st_tensor *t, int64_t i) {
    const unsigned char *p = t->data;
    if (t->dtype == QT_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t u;
    memcpy(&u, p + 2 * i, 2);
    return t->dtype == QT_BF16 ? qt_bf16_to_f32(u) : qt_f16_to_f32(u);
}

static uint32_t uget(const qt_st_tensor *t, int64_t i) {
    uint32_t u;
    memcpy(&u, (const unsigned char *)t->data + 4 * i, 4);
    return u;
}

static bool is_float(const qt_st_tensor *t) {
    return t->dtype == QT_F32 || t->dtype == QT_F16 || t->dtype == QT_BF16;
}

static qt_status need_float(lctx *c, const char *name, int ndim, int64_t a, int64_t b,
                            const qt_st_tensor **out) {
    const qt_st_tensor *t = tget(c, name);
    if (t && !is_float(t))
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\": expected F32, F16 or BF16, found %s",
                        c->file, name, qt_safetensors_dtype_str(c->st, t));
    if (t) {
        *out = t;
        return need(c, name, t->dtype, ndim, a, b, out);
    }
    return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\" is missing", c->file, name);
}

/* ------------------------------------------------------------------ formats ---- */

static qt_status load_gptq(lctx *c, const char *pre, float *w, int64_t out, int64_t in) {
    const int64_t b = c->bits;
    char nm[224];
    const qt_st_tensor *qw, *qz, *sc, *gi = NULL;
    if ((in * b) % 32 || (out * b) % 32)
        return QT_ERROR(QT_ESHAPE, "%s: %s: %lld x %lld cannot be packed at %lld bits", c->file,
                        pre, (long long)out, (long long)in, (long long)b);
    snprintf(nm, sizeof nm, "%s.qweight", pre);
    qt_status s = need(c, nm, QT_I32, 2, in * b / 32, out, &qw);
    if (s) return s;
    snprintf(nm, sizeof nm, "%s.scales", pre);
    const qt_st_tensor *t = tget(c, nm);
    if (!t) return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\" is missing", c->file, nm);
    int64_t ng = t->ndim == 2 ? t->shape[0] : 0;
    if ((s = need_float(c, nm, 2, ng, out, &sc))) return s;
    if (ng < 1) return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s\" has no groups", c->file, nm);
    snprintf(nm, sizeof nm, "%s.qzeros", pre);
    if ((s = need(c, nm, QT_I32, 2, ng, out * b / 32, &qz))) return s;
    snprintf(nm, sizeof nm, "%s.g_idx", pre);
    if (qt_safetensors_get(c->st, nm) && (s = need(c, nm, QT_I32, 1, in, 0, &gi))) return s;
    const int64_t G = c->group > 0 ? c->group : in;
    if (!gi && (in + G - 1) / G != ng)
        return QT_ERROR(QT_ESHAPE, "%s: %s.scales has %lld groups; group_size %d over %lld "
                        "inputs makes %lld", c->file, pre, (long long)ng, c->group,
                        (long long)in, (long long)((in + G - 1) / G));
    const uint32_t mask = (1u << b) - 1u;
    for (int64_t i = 0; i < in; i++) {
        int64_t g = gi ? (int32_t)uget(gi, i) : i / G;
        if (g < 0 || g >= ng)
            return QT_ERROR(QT_EFORMAT, "%s: %s.g_idx[%lld] = %lld, expected 0..%lld", c->file,
                            pre, (long long)i, (long long)g, (long long)ng - 1);
        for (int64_t o = 0; o < out; o++) {
            uint32_t q = 0, z = 0;
            for (int64_t k = 0; k < b; k++) {
                int64_t pw = i * b + k, pz = o * b + k;
                q |= ((uget(qw, (pw >> 5) * out + o) >> (pw & 31)) & 1u) << k;
                z |= ((uget(qz, g * (out * b / 32) + (pz >> 5)) >> (pz & 31)) & 1u) << k;
            }
            int zp = (int)(z & mask) + (c->gptq_v2 ? 0 : 1);
            w[o * in + i] = (float)((int)q - zp) * fget(sc, g * out + o);
        }
    }
    return QT_OK;
}

static qt_status load_awq(lctx *c, const char *pre, float *w, int64_t out, int64_t in) {
    static const int inv[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* position of output o%8 in a word */
    char nm[224];
    const qt_st_tensor *qw, *qz, *sc;
    if (out % 8)
        return QT_ERROR(QT_ESHAPE, "%s: %s: %lld outputs, AWQ needs a multiple of 8", c->file,
                        pre, (long long)out);
    const int64_t G = c->group > 0 ? c->group : in;
    if (in % G)
        return QT_ERROR(QT_ESHAPE, "%s: %s: group_size %d does not divide %lld inputs", c->file,
                        pre, c->group, (long long)in);
    const int64_t ng = in / G, w8 = out / 8;
    snprintf(nm, sizeof nm, "%s.qweight", pre);
    qt_status s = need(c, nm, QT_I32, 2, in, w8, &qw);
    snprintf(nm, sizeof nm, "%s.qzeros", pre);
    if (!s) s = need(c, nm, QT_I32, 2, ng, w8, &qz);
    snprintf(nm, sizeof nm, "%s.scales", pre);
    if (!s) s = need_float(c, nm, 2, ng, out, &sc);
    if (s) return s;
    for (int64_t i = 0; i < in; i++)
        for (int64_t o = 0; o < out; o++) {
            int sh = 4 * inv[o % 8];
            int q = (int)((uget(qw, i * w8 + o / 8) >> sh) & 15u);
            int z = (int)((uget(qz, (i / G) * w8 + o / 8) >> sh) & 15u);
            w[o * in + i] = (float)(q - z) * fget(sc, (i / G) * out + o);
        }
    return QT_OK;
}

static qt_status json_int(const cJSON *j, const char *key, const char *where, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    /* within int range first: casting an out-of-range double is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= -2147483648.0 && v->valuedouble <= 2147483647.0) ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return QT_ERROR(QT_EFORMAT, "%s: \"%s\" must be an integer (32-bit)", where, key);
    *out = (int64_t)v->valuedouble;
    return QT_OK;
}

static qt_status load_bnb(lctx *c, const char *pre, float *w, int64_t out, int64_t in,
                          const qt_st_tensor *packed) {
    char nm[256], where[320];
    const int64_t n = out * in, np = (n + 1) / 2;
    const qt_st_tensor *qs = NULL;
    const char *qtype = NULL;
    for (int k = 0; k < 2 && !qs; k++) {
        snprintf(nm, sizeof nm, "%s.weight.quant_state.bitsandbytes__%s", pre, k ? "fp4" : "nf4");
        if ((qs = tget(c, nm))) qtype = k ? "fp4" : "nf4";
    }
    if (!qs || qs->dtype != QT_U8)
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s.weight\" is U8 but \"%s.weight.quant_state."
                        "bitsandbytes__nf4\" (u8) is missing", c->file, pre, pre);
    snprintf(where, sizeof where, "%s: %s", c->file, nm);
    cJSON *j = cJSON_ParseWithLength(qs->data, qs->nbytes);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return QT_ERROR(QT_EFORMAT, "%s: not a JSON object", where);
    }
    int64_t bs = 0, nbs = 256, s0 = 0, s1 = 0;
    float offset = 0.0f;
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(j, "quant_type");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *noff = cJSON_GetObjectItemCaseSensitive(j, "nested_offset");
    bool nested = noff != NULL;
    qt_status s = json_int(j, "blocksize", where, &bs);
    if (!s && nested) s = json_int(j, "nested_blocksize", where, &nbs);
    if (!s && (!cJSON_IsString(qt) || strcmp(qt->valuestring, qtype)))
        s = QT_ERROR(QT_EFORMAT, "%s: \"quant_type\" must be \"%s\"", where, qtype);
    if (!s && cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == 2 &&
        cJSON_IsNumber(cJSON_GetArrayItem(shape, 0)) && cJSON_IsNumber(cJSON_GetArrayItem(shape, 1))) {
        s0 = (int64_t)cJSON_GetArrayItem(shape, 0)->valuedouble;
        s1 = (int64_t)cJSON_GetArrayItem(shape, 1)->valuedouble;
    }
    if (!s && (s0 != out || s1 != in))
        s = QT_ERROR(QT_ESHAPE, "%s: \"shape\" must be [%lld, %lld], found [%lld, %lld]", where,
                     (long long)out, (long long)in, (long long)s0, (long long)s1);
    if (!s && (bs < 1 || nbs < 1))
        s = QT_ERROR(QT_EFORMAT, "%s: block sizes must be positive", where);
    if (!s && nested && !cJSON_IsNumber(noff))
        s = QT_ERROR(QT_EFORMAT, "%s: \"nested_offset\" must be a number", where);
    if (!s && nested) offset = (float)noff->valuedouble;
    /* the dtype dequantize_4bit returns */
    qt_dtype odt = QT_F32;
    if (!s && cJSON_IsString(dt) && !strcmp(dt->valuestring, "float16")) odt = QT_F16;
    else if (!s && cJSON_IsString(dt) && !strcmp(dt->valuestring, "bfloat16")) odt = QT_BF16;
    else if (!s && !(cJSON_IsString(dt) && !strcmp(dt->valuestring, "float32")))
        s = QT_ERROR(QT_EFORMAT, "%s: \"dtype\" must be float32, float16 or bfloat16", where);
    cJSON_Delete(j);
    if (s) return s;
    const int64_t nb = (n + bs - 1) / bs, nb2 = (nb + nbs - 1) / nbs;
    if (!shape_is(packed, 2, np, 1))
        return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s.weight\": expected u8 [%lld, 1]", c->file, pre,
                        (long long)np);
    const qt_st_tensor *am, *qmap, *a2 = NULL, *nmap = NULL;
    snprintf(nm, sizeof nm, "%s.weight.absmax", pre);
    s = nested ? need(c, nm, QT_U8, 1, nb, 0, &am) : need(c, nm, QT_F32, 1, nb, 0, &am);
    snprintf(nm, sizeof nm, "%s.weight.quant_map", pre);
    if (!s) s = need(c, nm, QT_F32, 1, 16, 0, &qmap);
    if (!s && nested) {
        snprintf(nm, sizeof nm, "%s.weight.nested_absmax", pre);
        s = need(c, nm, QT_F32, 1, nb2, 0, &a2);
        snprintf(nm, sizeof nm, "%s.weight.nested_quant_map", pre);
        if (!s) s = need(c, nm, QT_F32, 1, 256, 0, &nmap);
    }
    if (s) return s;
    const uint8_t *pk = packed->data, *aq = am->data;
    for (int64_t blk = 0; blk < nb; blk++) {
        float a = nested ? fget(nmap, aq[blk]) * fget(a2, blk / nbs) : fget(am, blk);
        if (nested) a = a + offset;
        int64_t e = blk * bs + bs < n ? blk * bs + bs : n;
        for (int64_t i = blk * bs; i < e; i++) {
            int q = i % 2 ? pk[i / 2] & 15 : pk[i / 2] >> 4;
            float v = fget(qmap, q) * a;
            if (odt == QT_F16) v = qt_f16_to_f32(qt_f32_to_f16(v));
            else if (odt == QT_BF16) v = qt_bf16_to_f32(qt_f32_to_bf16(v));
            w[i] = v;
        }
    }
    return QT_OK;
}

static qt_status load_fp8(lctx *c, const char *pre, float *w, int64_t out, int64_t in,
                          const qt_st_tensor *wt) {
    char nm[224], fs[96];
    if (!shape_is(wt, 2, out, in))
        return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s.weight\": expected shape [%lld, %lld]",
                        c->file, pre, (long long)out, (long long)in);
    snprintf(nm, sizeof nm, "%s.weight_scale", pre);
    const qt_st_tensor *sc = tget(c, nm);
    if (!sc) return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\" is missing", c->file, nm);
    if (!is_float(sc))
        return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\": expected F32, F16 or BF16, found %s",
                        c->file, nm, qt_safetensors_dtype_str(c->st, sc));
    int64_t ns = (int64_t)(sc->nbytes / qt_dtype_size(sc->dtype));
    bool chan = ns == out && out > 1 && (shape_is(sc, 2, out, 1) || shape_is(sc, 1, out, 0));
    bool tens = ns == 1 && sc->ndim <= 2;
    if (!chan && !tens) {
        shape_str(sc, fs, sizeof fs);
        return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s\": expected [%lld, 1] (channel) or [1] "
                        "(tensor), found %s", c->file, nm, (long long)out, fs);
    }
    const uint8_t *q = wt->data;
    for (int64_t o = 0; o < out; o++) {
        float s = fget(sc, chan ? o : 0);
        for (int64_t i = 0; i < in; i++) w[o * in + i] = qt_e4m3_to_f32(q[o * in + i]) * s;
    }
    return QT_OK;
}

/* One parameter: a float tensor, or the quantized Linear of its module. */
static qt_status load_param(lctx *c, qt_tensor *p) {
    float *w = p->data;
    const char *name = p->name;
    size_t len = strlen(name);
    char pre[192];
    bool weight = len > 7 && !strcmp(name + len - 7, ".weight") && p->ndim == 2 && len - 7 < sizeof pre;
    if (weight) snprintf(pre, sizeof pre, "%.*s", (int)(len - 7), name);
    const qt_st_tensor *t = qt_safetensors_get(c->st, name);
    int64_t out = p->ndim == 2 ? p->shape[0] : 0, in = p->ndim == 2 ? p->shape[1] : 0;
    if (weight && (c->kind == LQ_GPTQ || c->kind == LQ_AWQ)) {
        char nm[224];
        snprintf(nm, sizeof nm, "%s.qweight", pre);
        if (qt_safetensors_get(c->st, nm) && t)
            return QT_ERROR(QT_EFORMAT, "%s: both \"%s\" and \"%s\" are there", c->file, name, nm);
        if (qt_safetensors_get(c->st, nm))
            return c->kind == LQ_GPTQ ? load_gptq(c, pre, w, out, in) : load_awq(c, pre, w, out, in);
    }
    if (weight && t && !is_float(t)) {
        if (c->kind == LQ_BNB && t->dtype == QT_U8) {
            tget(c, name);
            return load_bnb(c, pre, w, out, in, t);
        }
        if (c->kind == LQ_FP8 && !strcmp(qt_safetensors_dtype_str(c->st, t), "F8_E4M3")) {
            tget(c, name);
            return load_fp8(c, pre, w, out, in, t);
        }
    }
    const qt_st_tensor *f;
    int64_t n = qt_numel(p);
    qt_status s = need_float(c, name, p->ndim, p->ndim ? p->shape[0] : 0,
                             p->ndim > 1 ? p->shape[1] : 0, &f);
    if (s) return s;
    if (p->ndim > 2 || (int64_t)(f->nbytes / qt_dtype_size(f->dtype)) != n)
        return QT_ERROR(QT_ESHAPE, "%s: tensor \"%s\": element count differs from the model's",
                        c->file, name);
    for (int64_t i = 0; i < n; i++) w[i] = fget(f, i);
    return QT_OK;
}

static qt_status pick_kind(const cJSON *qc, const char *cpath, lctx *c) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    const char *qm = cJSON_IsString(m) ? m->valuestring : "";
    char where[600];
    snprintf(where, sizeof where, "%s: quantization_config", cpath);
    int64_t v = 0;
    if (!strcmp(qm, "gptq") || !strcmp(qm, "awq")) {
        c->kind = qm[0] == 'g' ? LQ_GPTQ : LQ_AWQ;
        qt_status s = json_int(qc, "bits", where, &v);
        if (s) return s;
        c->bits = (int)v;
        if ((s = json_int(qc, "group_size", where, &v))) return s;
        c->group = (int)v;
        if (c->kind == LQ_GPTQ && c->bits != 2 && c->bits != 3 && c->bits != 4 && c->bits != 8)
            return QT_ERROR(QT_ENOTSUP, "%s: gptq bits %d; expected 2, 3, 4 or 8", where, c->bits);
        if (c->kind == LQ_AWQ && c->bits != 4)
            return QT_ERROR(QT_ENOTSUP, "%s: awq bits %d; only 4 is read", where, c->bits);
        if (c->kind == LQ_AWQ) {
            const cJSON *ver = cJSON_GetObjectItemCaseSensitive(qc, "version");
            if (cJSON_IsString(ver) && strcmp(ver->valuestring, "gemm"))
                return QT_ERROR(QT_ENOTSUP, "%s: awq version \"%s\"; only \"gemm\" is read", where,
                                ver->valuestring);
        } else {
            const cJSON *cf = cJSON_GetObjectItemCaseSensitive(qc, "checkpoint_format");
            c->gptq_v2 = cJSON_IsString(cf) && !strcmp(cf->valuestring, "gptq_v2");
            if (cJSON_IsString(cf) && !c->gptq_v2 && strcmp(cf->valuestring, "gptq"))
                return QT_ERROR(QT_ENOTSUP, "%s: checkpoint_format \"%s\"; expected gptq or gptq_v2",
                                where, cf->valuestring);
        }
        if (c->group == 0 || c->group < -1)
            return QT_ERROR(QT_EFORMAT, "%s: group_size %d; expected -1 or a positive size", where,
                            c->group);
        return QT_OK;
    }
    if (!strcmp(qm, "bitsandbytes")) {
        c->kind = LQ_BNB;
        const cJSON *b4 = cJSON_GetObjectItemCaseSensitive(qc, "load_in_4bit");
        if (!cJSON_IsTrue(b4))
            return QT_ERROR(QT_ENOTSUP, "%s: bitsandbytes without load_in_4bit (8-bit) is not read",
                            where);
        return QT_OK;
    }
    if (!strcmp(qm, "compressed-tensors")) {
        c->kind = LQ_FP8;
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(qc, "format");
        if (!cJSON_IsString(f) || strcmp(f->valuestring, "float-quantized"))
            return QT_ERROR(QT_ENOTSUP, "%s: compressed-tensors format %s; only "
                            "\"float-quantized\" (fp8) is read", where,
                            cJSON_IsString(f) ? f->valuestring : "(missing)");
        return QT_OK;
    }
    return QT_ERROR(QT_ENOTSUP, "%s: quant_method \"%s\"; expected gptq, awq, bitsandbytes or "
                    "compressed-tensors", where, qm);
}

static qt_status load_quantized(qt_model *m, const char *dir, const char *cpath, const cJSON *qc) {
    lctx c = {0};
    c.cpath = cpath;
    qt_status s = pick_kind(qc, cpath, &c);
    if (s) return s;
    char *file = qt_path_join(dir, "model.safetensors");
    if (!file) return QT_ERROR(QT_ENOMEM, "%s: out of memory", dir);
    c.file = file;
    struct stat sb;
    if (stat(file, &sb) != 0) {
        s = QT_ERROR(QT_ENOTSUP, "%s: no model.safetensors (sharded quantized checkpoints are "
                     "not read)", dir);
        free(file);
        return s;
    }
    s = qt_safetensors_open_ex(file, QT_ST_FP8_AS_U8, &c.st);
    int n = s == QT_OK ? qt_safetensors_count(c.st) : 0;
    if (s == QT_OK && !(c.used = calloc((size_t)n + 1, 1)))
        s = QT_ERROR(QT_ENOMEM, "%s: out of memory", file);
    bool head = false;
    for (int i = 0; i < n; i++) head = head || !strncmp(qt_safetensors_at(c.st, i)->name, "lm_head.", 8);
    if (s == QT_OK) s = qt_model_build_hf(m, cpath, !head);
    if (s == QT_OK && m->arch != QT_ARCH_LLAMA) {
        qt_model_free(m);
        s = QT_ERROR(QT_ENOTSUP, "%s: quantized checkpoints are read for llama-family models only",
                     cpath);
    }
    if (s == QT_OK) {
        qt_paramset *ps = &m->llama.params;
        for (int i = 0; i < ps->n && s == QT_OK; i++) s = load_param(&c, ps->params[i]);
        for (int i = 0; i < n && s == QT_OK; i++) {
            const char *nm = qt_safetensors_at(c.st, i)->name;
            size_t l = strlen(nm);
            bool skip = (m->llama.cfg.tied_embeddings && !strcmp(nm, "lm_head.weight")) ||
                        (l >= 19 && !strcmp(nm + l - 19, "rotary_emb.inv_freq"));
            if (!c.used[i] && !skip)
                s = QT_ERROR(QT_EFORMAT, "%s: unexpected tensor \"%s\": the model %s describes "
                             "has no use for it", file, nm, cpath);
        }
        if (s != QT_OK) qt_model_free(m);
    }
    if (s != QT_OK) memset(m, 0, sizeof *m);
    qt_safetensors_close(c.st);
    free(c.used);
    free(file);
    return s;
}

qt_status qt_export_load(qt_model *m, const char *path) {
    memset(m, 0, sizeof *m);
    if (!path) return QT_ERROR(QT_EINVAL, "qt_export_load: path is NULL");
    struct stat sb;
    if (stat(path, &sb) != 0) return QT_ERROR(QT_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return qt_model_load_gguf(m, path);
    char *cpath = qt_path_join(path, "config.json");
    if (!cpath) return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    cJSON *cfg = NULL;
    qt_status s = read_json(cpath, &cfg);
    if (s == QT_OK) {
        const cJSON *qc = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
        if (!qc || cJSON_IsNull(qc)) s = qt_model_load_hf(m, path);
        else if (!cJSON_IsObject(qc))
            s = QT_ERROR(QT_EFORMAT, "%s: \"quantization_config\" must be an object", cpath);
        else s = load_quantized(m, path, cpath, qc);
    }
    if (s != QT_OK) memset(m, 0, sizeof *m);
    cJSON_Delete(cfg);
    free(cpath);
    return s;
}
