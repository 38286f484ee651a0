/*
 * hf.c - Hugging Face checkpoints: config.json (hf_config.c) + model.safetensors, or a
 * sharded model.safetensors.index.json {"weight_map": {tensor: shard file}}, the layout
 * of transformers' save_pretrained; loading into and saving from a qt_model.
 *
 * Loading is strict in both directions: every parameter the config implies must be found
 * with exactly that shape, and any other tensor is an error (it means the config and the
 * weights disagree), except buffers old checkpoints carry (rotary_emb.inv_freq, GPT-2's
 * attn.bias / attn.masked_bias) and a lm_head.weight next to tied embeddings. Original
 * GPT-2 files name tensors without the "transformer." prefix (h.0.attn...); both are read.
 * Shards are read one at a time (each whole, through qt_safetensors_open), so peak memory
 * is the f32 model plus its largest file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qt_formats.h"
#include "layers_internal.h"

/* ------------------------------------------------------------- small helpers ---- */

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

#define TRY(expr)                          \
    do {                                   \
        qt_status st_ = (expr);            \
        if (st_ != QT_OK) return st_;      \
    } while (0)

/* ------------------------------------------------------------ tensor sources ---- */

/* Where the tensors are: model.safetensors, or the shards an index names. */
typedef struct {
    char *index_path;         /* model.safetensors.index.json, NULL for a single file */
    cJSON *index;             /* its JSON, or NULL */
    const cJSON *weight_map;  /* index["weight_map"] */
    char **files;             /* (nfiles) paths of the safetensors files */
    int nfiles;
    qt_safetensors *single;   /* model.safetensors, open (single-file checkpoints) */
} wsrc;

static void wsrc_close(wsrc *w) {
    for (int i = 0; i < w->nfiles; i++) free(w->files[i]);
    free(w->files);
    free(w->index_path);
    cJSON_Delete(w->index);
    qt_safetensors_close(w->single);
    memset(w, 0, sizeof *w);
}

static qt_status wsrc_open(wsrc *w, const char *dir) {
    memset(w, 0, sizeof *w);
    w->files = calloc(1, sizeof *w->files);
    char *single = qt_path_join(dir, "model.safetensors");
    w->index_path = qt_path_join(dir, "model.safetensors.index.json");
    if (!w->files || !single || !w->index_path) {
        free(single);
        return QT_ERROR(QT_ENOMEM, "%s: out of memory", dir);
    }
    if (is_file(single)) {
        w->files[w->nfiles++] = single;
        free(w->index_path);
        w->index_path = NULL;
        return qt_safetensors_open(single, &w->single);
    }
    free(single);
    if (!is_file(w->index_path))
        return QT_ERROR(QT_EIO,
                        "%s: no weights: neither model.safetensors nor "
                        "model.safetensors.index.json is there",
                        dir);
    TRY(qt_hf_parse_json(w->index_path, &w->index));
    w->weight_map = cJSON_GetObjectItemCaseSensitive(w->index, "weight_map");
    char what[96];
    if (!cJSON_IsObject(w->weight_map))
        return QT_ERROR(QT_EFORMAT, "%s: \"weight_map\" must be an object, got %s",
                        w->index_path, qt_hf_json_what(w->weight_map, what, sizeof what));
    const cJSON *e;
    cJSON_ArrayForEach(e, w->weight_map) {
        if (!cJSON_IsString(e))
            return QT_ERROR(QT_EFORMAT,
                            "%s: weight_map[\"%s\"] must be a file name (string), got %s",
                            w->index_path, e->string, qt_hf_json_what(e, what, sizeof what));
        const char *f = e->valuestring;
        /* a shard is a file beside the index, never a path elsewhere */
        if (!*f || strchr(f, '/') || strchr(f, '\\') || f[0] == '.')
            return QT_ERROR(QT_EFORMAT,
                            "%s: weight_map[\"%s\"] is \"%s\"; expected a file name in the same "
                            "directory",
                            w->index_path, e->string, f);
        bool seen = false;
        size_t dl = strlen(dir);
        for (int i = 0; i < w->nfiles && !seen; i++)
            seen = !strcmp(w->files[i] + dl + 1, f);
        if (seen) continue;
        char **nf = realloc(w->files, (size_t)(w->nfiles + 1) * sizeof *nf);
        if (!nf) return QT_ERROR(QT_ENOMEM, "%s: out of memory", w->index_path);
        w->files = nf;
        if (!(w->files[w->nfiles] = qt_path_join(dir, f)))
            return QT_ERROR(QT_ENOMEM, "%s: out of memory", w->index_path);
        w->nfiles++;
    }
    if (w->nfiles == 0)
        return QT_ERROR(QT_EFORMAT, "%s: \"weight_map\" names no tensors", w->index_path);
    return QT_OK;
}

static bool wsrc_has(const wsrc *w, const char *name) {
    if (w->single) return qt_safetensors_get(w->single, name) != NULL;
    return cJSON_GetObjectItemCaseSensitive(w->weight_map, name) != NULL;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Buffers some checkpoints carry that are no parameters. */
static bool skippable(const char *name) {
    return ends_with(name, "rotary_emb.inv_freq") || ends_with(name, ".attn.bias") ||
           ends_with(name, ".attn.masked_bias");
}

static void to_f32(float *dst, const qt_st_tensor *t) {
    size_t n = t->nbytes / qt_dtype_size(t->dtype);
    const unsigned char *src = t->data; /* maybe unaligned: memcpy each element */
    if (t->dtype == QT_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t u;
        memcpy(&u, src + 2 * i, 2);
        dst[i] = t->dtype == QT_BF16 ? qt_bf16_to_f32(u) : qt_f16_to_f32(u);
    }
}

static int param_index(const qt_paramset *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->params[i]->name, name)) return i;
    return -1;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Copies one file's tensors into their parameters. `gpt2_prefix`: names without
 * "transformer." (original GPT-2 files) get it. */
static qt_status load_file(qt_paramset *ps, const qt_safetensors *st, const char *path,
                           const char *config_path, bool tied, bool gpt2_prefix,
                           unsigned char *filled) {
    int n = qt_safetensors_count(st);
    char nm[512], es[96], fs[96];
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *t = qt_safetensors_at(st, i);
        const char *name = t->name;
        if (gpt2_prefix && strncmp(name, "transformer.", 12) && strcmp(name, "lm_head.weight")) {
            snprintf(nm, sizeof nm, "transformer.%s", name);
            name = nm;
        }
        int p = param_index(ps, name);
        if (p < 0) {
            if (skippable(name) || (tied && !strcmp(name, "lm_head.weight"))) continue;
            return QT_ERROR(QT_EFORMAT,
                            "%s: unexpected tensor \"%s\": the model %s describes has no such "
                            "parameter",
                            path, t->name, config_path);
        }
        if (filled[p])
            return QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\" given twice (again in this file)",
                            path, t->name);
        qt_tensor *dst = ps->params[p];
        bool same = t->ndim == dst->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == dst->shape[d];
        if (!same) {
            shape_str(es, sizeof es, dst->ndim, dst->shape);
            shape_str(fs, sizeof fs, t->ndim, t->shape);
            return QT_ERROR(QT_ESHAPE,
                            "%s: tensor \"%s\": expected shape %s (from %s), found %s", path,
                            t->name, es, config_path, fs);
        }
        if (t->dtype != QT_F32 && t->dtype != QT_BF16 && t->dtype != QT_F16)
            return QT_ERROR(QT_EDTYPE, "%s: tensor \"%s\": expected F32, F16 or BF16, found %s",
                            path, t->name, qt_st_dtype_name(t->dtype));
        to_f32(dst->data, t);
        filled[p] = 1;
    }
    return QT_OK;
}

/* Fills every parameter of ps from the source. */
static qt_status load_weights(qt_paramset *ps, wsrc *w, const char *dir, const char *config_path,
                              bool tied, bool gpt2) {
    unsigned char *filled = calloc((size_t)ps->n + 1, 1);
    if (!filled) return QT_ERROR(QT_ENOMEM, "%s: out of memory", dir);
    qt_status s = QT_OK;
    for (int f = 0; f < w->nfiles && s == QT_OK; f++) {
        qt_safetensors *st = w->single;
        if (!st) {
            s = qt_safetensors_open(w->files[f], &st);
            if (s != QT_OK) {
                char why[768]; /* copied: qt_error_set must not read what it writes */
                snprintf(why, sizeof why, "%s", qt_error_message());
                s = QT_ERROR(s, "%s: a shard listed in \"weight_map\" cannot be read: %s",
                             w->index_path, why);
            }
        }
        if (s == QT_OK) s = load_file(ps, st, w->files[f], config_path, tied, gpt2, filled);
        if (st != w->single) qt_safetensors_close(st);
    }
    for (int i = 0; i < ps->n && s == QT_OK; i++)
        if (!filled[i]) {
            const char *name = ps->params[i]->name;
            if (w->index) {
                const cJSON *e = cJSON_GetObjectItemCaseSensitive(w->weight_map, name);
                s = e ? QT_ERROR(QT_EFORMAT,
                                 "%s: tensor \"%s\" is missing: the index puts it in %s, which "
                                 "does not hold it",
                                 w->index_path, name, e->valuestring)
                      : QT_ERROR(QT_EFORMAT,
                                 "%s: tensor \"%s\" is missing (not in \"weight_map\"), and %s "
                                 "needs it",
                                 w->index_path, name, config_path);
            } else {
                s = QT_ERROR(QT_EFORMAT, "%s: tensor \"%s\" is missing, and %s needs it",
                             w->files[0], name, config_path);
            }
        }
    free(filled);
    return s;
}

/* -------------------------------------------------------------------- loading ---- */

qt_status qt_model_load_hf(qt_model *m, const char *dir) {
    memset(m, 0, sizeof *m);
    if (!dir) return QT_ERROR(QT_EINVAL, "qt_model_load_hf: dir is NULL");
    char *cpath = qt_path_join(dir, "config.json");
    if (!cpath) return QT_ERROR(QT_ENOMEM, "%s: out of memory", dir);
    qt_hf_config hc;
    wsrc w = {0};
    qt_status s = qt_hf_config_read(cpath, &hc);
    if (s == QT_OK) s = wsrc_open(&w, dir);
    bool gpt2 = hc.kind == QT_HF_GPT2;
    if (s == QT_OK) {
        /* tied when the config says so, or when there is no lm_head to load */
        bool has_head = wsrc_has(&w, "lm_head.weight");
        if (gpt2) {
            hc.gpt2.untied = hc.gpt2.untied && has_head;
            m->arch = QT_ARCH_GPT2;
            s = qt_gpt2_build(&m->gpt2, &hc.gpt2);
        } else {
            hc.llama.tied_embeddings = hc.llama.tied_embeddings || !has_head;
            m->arch = QT_ARCH_LLAMA;
            s = qt_llama_build(&m->llama, &hc.llama);
        }
        if (s != QT_OK) {
            char why[768]; /* copied: qt_error_set must not read what it writes */
            snprintf(why, sizeof why, "%s", qt_error_message());
            s = QT_ERROR(s, "%s: %s", cpath, why);
        }
    }
    if (s == QT_OK) {
        qt_paramset *ps = gpt2 ? &m->gpt2.params : &m->llama.params;
        bool tied = gpt2 ? !m->gpt2.cfg.untied : m->llama.cfg.tied_embeddings;
        s = load_weights(ps, &w, dir, cpath, tied, gpt2);
        if (s == QT_OK) snprintf(m->hf_arch, sizeof m->hf_arch, "%s", hc.hf_arch);
        else qt_model_free(m);
    }
    if (s != QT_OK) memset(m, 0, sizeof *m);
    wsrc_close(&w);
    free(cpath);
    return s;
}

void qt_model_free(qt_model *m) {
    if (m->arch == QT_ARCH_GPT2) qt_gpt2_free(&m->gpt2);
    else qt_llama_free(&m->llama);
}

qt_tensor *qt_model_forward(qt_ctx *ctx, qt_model *m, qt_tensor *ids) {
    return m->arch == QT_ARCH_GPT2 ? qt_gpt2_forward(ctx, &m->gpt2, ids)
                                   : qt_llama_forward(ctx, &m->llama, ids);
}

qt_paramset *qt_model_params(qt_model *m) {
    return m->arch == QT_ARCH_GPT2 ? &m->gpt2.params : &m->llama.params;
}

void qt_model_set_hook(qt_model *m, const qt_linear_hook *hook) {
    qt_linear_hook none = {0};
    if (m->arch == QT_ARCH_GPT2) m->gpt2.hook = hook ? *hook : none;
    else m->llama.hook = hook ? *hook : none;
}

/* --------------------------------------------------------------------- saving ---- */

static qt_status write_text_atomic(const char *path, const char *text) {
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    qt_status s = QT_OK;
    if (!f) {
        s = QT_ERROR(QT_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        size_t len = strlen(text);
        bool ok = fwrite(text, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
        int e = errno;
        if (fclose(f) != 0) ok = false;
        if (!ok) s = QT_ERROR(QT_EIO, "%s: write failed: %s", tmp, strerror(e));
        else if (rename(tmp, path) != 0)
            s = QT_ERROR(QT_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
        if (s != QT_OK) remove(tmp);
    }
    free(tmp);
    return s;
}

/* config.json and model.safetensors of `ps` into dir, atomically (see qt_layers.h). */
static qt_status save_hf(const char *dir, cJSON *config, const qt_paramset *ps, qt_dtype dt) {
    if (!dir) return QT_ERROR(QT_EINVAL, "save_hf: dir is NULL");
    if (dt != QT_F32 && dt != QT_BF16 && dt != QT_F16)
        return QT_ERROR(QT_EDTYPE, "%s: checkpoints are saved as F32, BF16 or F16, not %s", dir,
                        qt_dtype_name(dt));
    if (!config) return QT_ERROR(QT_ENOMEM, "%s: out of memory building config.json", dir);
    char *text = cJSON_Print(config);
    qt_st_tensor *ts = calloc((size_t)ps->n + 1, sizeof *ts);
    uint16_t *half = dt == QT_F32 ? NULL : malloc(ps->n_total * 2 + 2);
    size_t dl = strlen(dir);
    char *tmpdir = malloc(dl + 32), *target = NULL, *stpath = NULL, *cpath = NULL;
    qt_status s = QT_OK;
    if (!text || !ts || (dt != QT_F32 && !half) || !tmpdir) {
        s = QT_ERROR(QT_ENOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < ps->n; i++) {
        const qt_tensor *p = ps->params[i];
        size_t n = (size_t)qt_numel(p);
        qt_st_tensor *t = &ts[i];
        t->name = p->name;
        t->dtype = dt;
        t->ndim = p->ndim;
        memcpy(t->shape, p->shape, sizeof t->shape);
        t->nbytes = n * qt_dtype_size(dt);
        if (dt == QT_F32) {
            t->data = p->data;
        } else {
            uint16_t *h = half + ps->offset[i];
            const float *x = p->data;
            for (size_t j = 0; j < n; j++)
                h[j] = dt == QT_BF16 ? qt_f32_to_bf16(x[j]) : qt_f32_to_f16(x[j]);
            t->data = h;
        }
    }
    struct stat sb;
    bool exists = stat(dir, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode)) {
        s = QT_ERROR(QT_EIO, "%s: exists and is not a directory", dir);
        goto done;
    }
    snprintf(tmpdir, dl + 32, "%s.tmp.%ld", dir, (long)getpid());
    if (!exists && mkdir(tmpdir, 0755) != 0) {
        s = QT_ERROR(QT_EIO, "%s: cannot create: %s", tmpdir, strerror(errno));
        goto done;
    }
    target = exists ? (char *)dir : tmpdir;
    stpath = qt_path_join(target, "model.safetensors");
    cpath = qt_path_join(target, "config.json");
    if (!stpath || !cpath) {
        s = QT_ERROR(QT_ENOMEM, "%s: out of memory", dir);
    } else {
        /* transformers refuses safetensors files without format: pt */
        const char *meta[2] = {"format", "pt"};
        s = qt_safetensors_write(stpath, ts, ps->n, meta, 1);
        if (s == QT_OK) s = write_text_atomic(cpath, text);
        if (s == QT_OK && !exists && rename(tmpdir, dir) != 0)
            s = QT_ERROR(QT_EIO, "%s: cannot rename %s into place: %s", dir, tmpdir,
                         strerror(errno));
    }
    if (s != QT_OK && !exists) {
        if (stpath) remove(stpath);
        if (cpath) remove(cpath);
        rmdir(tmpdir);
    }
done:
    free(stpath);
    free(cpath);
    free(tmpdir);
    free(half);
    free(ts);
    cJSON_free(text);
    return s;
}

qt_status qt_llama_save_hf(const qt_llama *m, const char *dir, qt_dtype dtype) {
    cJSON *j = qt_hf_llama_config_json(&m->cfg, dtype);
    qt_status s = save_hf(dir, j, &m->params, dtype);
    cJSON_Delete(j);
    return s;
}

qt_status qt_gpt2_save_hf(const qt_gpt2 *m, const char *dir, qt_dtype dtype) {
    cJSON *j = qt_hf_gpt2_config_json(&m->cfg, dtype);
    qt_status s = save_hf(dir, j, &m->params, dtype);
    cJSON_Delete(j);
    return s;
}

qt_status qt_model_save_hf(const qt_model *m, const char *dir, qt_dtype dtype) {
    return m->arch == QT_ARCH_GPT2 ? qt_gpt2_save_hf(&m->gpt2, dir, dtype)
                                   : qt_llama_save_hf(&m->llama, dir, dtype);
}


/* ------------------------------------------------- pieces for other writers ---- */

char *qt_llama_hf_config_text(const qt_llama_config *c, qt_dtype dtype) {
    cJSON *j = qt_hf_llama_config_json(c, dtype);
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text) return NULL;
    char *out = malloc(strlen(text) + 1); /* free()-able whatever cJSON's allocator */
    if (out) memcpy(out, text, strlen(text) + 1);
    cJSON_free(text);
    return out;
}

qt_status qt_model_build_hf(qt_model *m, const char *config_path, bool force_tied) {
    memset(m, 0, sizeof *m);
    if (!config_path) return QT_ERROR(QT_EINVAL, "qt_model_build_hf: config_path is NULL");
    qt_hf_config hc;
    qt_status s = qt_hf_config_read(config_path, &hc);
    if (s == QT_OK && hc.kind == QT_HF_GPT2) {
        hc.gpt2.untied = hc.gpt2.untied && !force_tied;
        m->arch = QT_ARCH_GPT2;
        s = qt_gpt2_build(&m->gpt2, &hc.gpt2);
    } else if (s == QT_OK) {
        hc.llama.tied_embeddings = hc.llama.tied_embeddings || force_tied;
        m->arch = QT_ARCH_LLAMA;
        s = qt_llama_build(&m->llama, &hc.llama);
    }
    if (s == QT_OK) snprintf(m->hf_arch, sizeof m->hf_arch, "%s", hc.hf_arch);
    else memset(m, 0, sizeof *m);
    return s;
}
