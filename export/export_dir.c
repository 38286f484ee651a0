/*
 * export_dir.c - what the safetensors exporters share (export_internal.h): the tensor
 * list, the float tensors, and writing the checkpoint directory atomically.
 *
 * A directory cannot be written in one rename the way a file can, so it is built whole
 * in a sibling <dir>.tmp.<pid> and renamed into place; an existing directory is first
 * moved aside to <dir>.old.<pid> and removed once the new one is in place (moved back if
 * the rename fails). A failed export removes its temporary and leaves dir as it was.
 *
 * config.json is qt_llama_save_hf's (layers/hf.c) plus "quantization_config" in the
 * layout of the tool that loads the format, plus "qtrain": provenance. transformers
 * ignores unknown keys of config.json. model.safetensors' __metadata__ carries
 * "format": "pt" (transformers refuses files without it) and the provenance keys
 * qtrain.version / method / format / calibration_hash / recipe (empty ones omitted).
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "export_internal.h"

/* --------------------------------------------------------------- tensor list ---- */

void qt_xst_free(qt_xst *x) {
    for (int i = 0; i < x->n; i++) {
        free(x->names[i]);
        free(x->bufs[i]);
    }
    free(x->t);
    free(x->dtype_names);
    free(x->names);
    free(x->bufs);
    memset(x, 0, sizeof *x);
}

qt_status qt_xst_add(qt_xst *x, const char *name, qt_dtype dt, const char *dtype_name,
                     int ndim, const int64_t *shape, void *data, size_t nbytes) {
    if (x->n == x->cap) {
        int cap = x->cap ? 2 * x->cap : 64;
        qt_st_tensor *t = realloc(x->t, (size_t)cap * sizeof *t);
        if (t) x->t = t;
        const char **d = realloc(x->dtype_names, (size_t)cap * sizeof *d);
        if (d) x->dtype_names = d;
        char **nm = realloc(x->names, (size_t)cap * sizeof *nm);
        if (nm) x->names = nm;
        void **b = realloc(x->bufs, (size_t)cap * sizeof *b);
        if (b) x->bufs = b;
        if (!t || !d || !nm || !b) {
            free(data);
            return QT_ERROR(QT_ENOMEM, "export: out of memory adding tensor %s", name);
        }
        x->cap = cap;
    }
    char *nc = malloc(strlen(name) + 1);
    if (!nc) {
        free(data);
        return QT_ERROR(QT_ENOMEM, "export: out of memory adding tensor %s", name);
    }
    strcpy(nc, name);
    qt_st_tensor *t = &x->t[x->n];
    memset(t, 0, sizeof *t);
    t->name = nc;
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    t->nbytes = nbytes;
    x->dtype_names[x->n] = dtype_name;
    x->names[x->n] = nc;
    x->bufs[x->n] = data;
    x->n++;
    return QT_OK;
}

qt_status qt_export_prefix(const char *name, char *buf, size_t n) {
    size_t len = strlen(name);
    if (len < 8 || strcmp(name + len - 7, ".weight") || len - 7 >= n)
        return QT_ERROR(QT_EINVAL, "export: quantized parameter %s does not end in .weight", name);
    memcpy(buf, name, len - 7);
    buf[len - 7] = 0;
    return QT_OK;
}

/* A float parameter in dt (f32 copied, f16 / bf16 rounded to nearest even). */
static qt_status add_float(qt_xst *x, const qt_tensor *p, qt_dtype dt) {
    size_t n = (size_t)qt_numel(p), es = qt_dtype_size(dt);
    void *buf = malloc(n * es + 1);
    if (!buf) return QT_ERROR(QT_ENOMEM, "export: out of memory for %s", p->name);
    const float *src = p->data;
    if (dt == QT_F32) {
        memcpy(buf, src, n * 4);
    } else {
        uint16_t *h = buf;
        for (size_t i = 0; i < n; i++)
            h[i] = dt == QT_BF16 ? qt_f32_to_bf16(src[i]) : qt_f32_to_f16(src[i]);
    }
    return qt_xst_add(x, p->name, dt, NULL, p->ndim, p->shape, buf, n * es);
}

qt_status qt_export_tensors(const qt_qmodel *qm, const qt_export_opts *o, qt_xst *x,
                            qt_export_emit_fn emit, void *user) {
    qt_dtype dt = o->st_float;
    if (dt != QT_F32 && dt != QT_F16 && dt != QT_BF16)
        return QT_ERROR(QT_EINVAL, "export: st_float must be F32, F16 or BF16, got %s",
                        qt_dtype_name(dt));
    const qt_paramset *ps = &qm->model->llama.params;
    for (int i = 0; i < ps->n; i++) {
        const qt_tensor *p = ps->params[i];
        const qt_qlinear *l = qt_qmodel_find(qm, p->name);
        qt_status s;
        if (l) {
            char prefix[160];
            s = qt_export_prefix(l->name, prefix, sizeof prefix);
            if (s == QT_OK) s = emit(x, l, prefix, user);
        } else {
            s = add_float(x, p, dt);
        }
        if (s != QT_OK) return s;
    }
    return QT_OK;
}

void qt_export_format_str(const qt_qmodel *qm, char *buf, size_t n) {
    if (qm->n == 0) {
        snprintf(buf, n, "none");
        return;
    }
    char a[64], b[64];
    qt_qformat_str(&qm->layers[0].q.fmt, a, sizeof a);
    for (int i = 1; i < qm->n; i++)
        if (strcmp(qt_qformat_str(&qm->layers[i].q.fmt, b, sizeof b), a)) {
            snprintf(buf, n, "mixed");
            return;
        }
    snprintf(buf, n, "%s", a);
}

/* ------------------------------------------------------------------ directory ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static qt_status write_bytes(const char *path, const void *data, size_t n) {
    qt_atomic_file f;
    qt_atomic_file_open(&f, path);
    qt_atomic_file_write(&f, data, n);
    return qt_atomic_file_commit(&f);
}

static qt_status write_json(const char *dir, const char *name, const cJSON *j) {
    char *text = cJSON_Print(j), *path = qt_path_join(dir, name);
    qt_status s = text && path ? write_bytes(path, text, strlen(text))
                               : QT_ERROR(QT_ENOMEM, "export: out of memory writing %s", name);
    cJSON_free(text);
    free(path);
    return s;
}

static qt_status copy_file(const char *src, const char *dst) {
    char *buf = NULL;
    size_t len = 0;
    qt_status s = qt_read_file(src, 0, &buf, &len);
    if (s == QT_OK) s = write_bytes(dst, buf, len);
    free(buf);
    return s;
}

static void add_prov(cJSON *q, const char *key, const char *v) {
    if (v && *v) cJSON_AddStringToObject(q, key, v);
}

static qt_status fill_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *tmp,
                          qt_export_format f, const qt_xst *x, const cJSON *qcfg,
                          const qt_export_extra *extras, int n_extras) {
    char fmt[64];
    qt_export_format_str(qm, fmt, sizeof fmt);
    const char *ver = o->version ? o->version : "";
    /* model.safetensors */
    const char *meta[12];
    int nm = 0;
    const char *keys[5] = {"qtrain.version", "qtrain.method", "qtrain.format",
                           "qtrain.calibration_hash", "qtrain.recipe"};
    const char *vals[5] = {ver, qm->method, fmt, qm->calib_hash, qm->recipe};
    meta[nm++] = "format";
    meta[nm++] = "pt";
    for (int i = 0; i < 5; i++)
        if (vals[i] && *vals[i]) {
            meta[nm++] = keys[i];
            meta[nm++] = vals[i];
        }
    char *stpath = qt_path_join(tmp, "model.safetensors");
    if (!stpath) return QT_ERROR(QT_ENOMEM, "export: out of memory");
    qt_status s = qt_safetensors_write_ex(stpath, x->t, x->n, meta, nm / 2, x->dtype_names);
    free(stpath);
    if (s != QT_OK) return s;

    /* config.json */
    char *text = qt_llama_hf_config_text(&qm->model->llama.cfg, o->st_float);
    cJSON *cfg = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON *qc = cfg ? cJSON_Duplicate(qcfg, 1) : NULL;
    cJSON *prov = qc ? cJSON_CreateObject() : NULL;
    if (!prov) {
        cJSON_Delete(cfg);
        cJSON_Delete(qc);
        return QT_ERROR(QT_ENOMEM, "export: out of memory building config.json");
    }
    cJSON_AddItemToObject(cfg, "quantization_config", qc);
    add_prov(prov, "version", ver);
    add_prov(prov, "method", qm->method);
    add_prov(prov, "format", fmt);
    add_prov(prov, "export", qt_export_format_name(f));
    add_prov(prov, "calibration_hash", qm->calib_hash);
    add_prov(prov, "recipe", qm->recipe);
    cJSON_AddItemToObject(cfg, "qtrain", prov);
    s = write_json(tmp, "config.json", cfg);
    cJSON_Delete(cfg);
    for (int i = 0; i < n_extras && s == QT_OK; i++) s = write_json(tmp, extras[i].name, extras[i].json);
    if (s == QT_OK && o->tokenizer_json) {
        char *dst = qt_path_join(tmp, "tokenizer.json");
        s = dst ? copy_file(o->tokenizer_json, dst) : QT_ERROR(QT_ENOMEM, "export: out of memory");
        free(dst);
    }
    return s;
}

static qt_status write_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *dir,
                           qt_export_format f, const qt_xst *x, const cJSON *qcfg,
                           const qt_export_extra *extras, int n_extras);

qt_status qt_export_write_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *dir,
                              qt_export_format f, const qt_xst *x, const cJSON *qcfg,
                              const qt_export_extra *extras, int n_extras) {
    if (!dir || !*dir) return QT_ERROR(QT_EINVAL, "export: no output directory");
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--; /* "out/" -> siblings of "out", not inside */
    char *d = malloc(dl + 1);
    if (!d) return QT_ERROR(QT_ENOMEM, "export: out of memory");
    memcpy(d, dir, dl);
    d[dl] = 0;
    qt_status s = write_dir(qm, o, d, f, x, qcfg, extras, n_extras);
    free(d);
    return s;
}

/* A directory an export may replace: empty, or one a qtrain export wrote (only regular
 * files, among them a config.json with a "qtrain" object). Anything else (a training run,
 * a model it came from) is refused rather than deleted. */
static bool replaceable(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ok = true, has_config = false;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ok = lstat(path, &sb) == 0 && S_ISREG(sb.st_mode);
        if (ok && !strcmp(e->d_name, "config.json")) {
            char *buf = NULL;
            cJSON *j = qt_read_text_file(path, &buf) == QT_OK ? cJSON_Parse(buf) : NULL;
            has_config = j && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "qtrain"));
            cJSON_Delete(j);
            free(buf);
        }
    }
    bool empty = true;
    rewinddir(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
    closedir(d);
    return ok && (has_config || empty);
}

static qt_status write_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *dir,
                           qt_export_format f, const qt_xst *x, const cJSON *qcfg,
                           const qt_export_extra *extras, int n_extras) {
    struct stat sb;
    bool exists = stat(dir, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode))
        return QT_ERROR(QT_EINVAL, "export %s: %s exists and is not a directory; refusing to "
                        "overwrite it", qt_export_format_name(f), dir);
    if (exists && !replaceable(dir))
        return QT_ERROR(QT_EINVAL, "export %s: %s exists and is not a qtrain export (nor "
                        "empty); refusing to replace it", qt_export_format_name(f), dir);
    size_t n = strlen(dir) + 32;
    char *tmp = malloc(n), *old = malloc(n);
    if (!tmp || !old) {
        free(tmp);
        free(old);
        return QT_ERROR(QT_ENOMEM, "export: out of memory");
    }
    snprintf(tmp, n, "%s.tmp.%ld", dir, (long)getpid());
    snprintf(old, n, "%s.old.%ld", dir, (long)getpid());
    rm_tree(tmp); /* a leftover of a killed run of this pid */
    qt_status s = QT_OK;
    if (mkdir(tmp, 0755) != 0)
        s = QT_ERROR(QT_EIO, "export: cannot create %s: %s", tmp, strerror(errno));
    if (s == QT_OK) s = fill_dir(qm, o, tmp, f, x, qcfg, extras, n_extras);
    if (s == QT_OK) {
        if (exists && rename(dir, old) != 0) {
            s = QT_ERROR(QT_EIO, "export: cannot move the existing %s aside: %s", dir,
                         strerror(errno));
        } else if (rename(tmp, dir) != 0) {
            s = QT_ERROR(QT_EIO, "export: cannot rename %s to %s: %s", tmp, dir, strerror(errno));
            if (exists) rename(old, dir);
        } else if (exists) {
            rm_tree(old);
        }
    }
    if (s != QT_OK) rm_tree(tmp);
    free(tmp);
    free(old);
    return s;
}

cJSON *qt_export_unquantized(const qt_qmodel *qm, bool with_head) {
    cJSON *a = cJSON_CreateArray();
    if (!a) return NULL;
    const qt_paramset *ps = &qm->model->llama.params;
    for (int i = 0; i < ps->n; i++) {
        const char *nm = ps->params[i]->name;
        size_t n = strlen(nm);
        bool lin = !strncmp(nm, "model.layers.", 13) && n > 12 && !strcmp(nm + n - 12, "_proj.weight");
        if (lin && !qt_qmodel_find(qm, nm)) {
            char mod[160];
            snprintf(mod, sizeof mod, "%.*s", (int)(n - 7), nm);
            cJSON_AddItemToArray(a, cJSON_CreateString(mod));
        }
    }
    if (with_head && !qt_qmodel_find(qm, "lm_head.weight"))
        cJSON_AddItemToArray(a, cJSON_CreateString("lm_head"));
    if (cJSON_GetArraySize(a) == 0) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

qt_status qt_export_st_dir(const qt_qmodel *qm, const qt_export_opts *o, const char *dir,
                           qt_export_format f, qt_export_emit_fn emit, qt_export_qcfg_fn config,
                           const char *extra_name) {
    qt_status s = qt_export_check(qm, f);
    if (s != QT_OK) return s;
    qt_export_opts def;
    if (!o) qt_export_opts_defaults(&def), o = &def;
    qt_xst x = {0};
    cJSON *qc = NULL;
    s = qt_export_tensors(qm, o, &x, emit, NULL);
    if (s == QT_OK && !(qc = config(qm, o)))
        s = QT_ERROR(QT_ENOMEM, "export %s: out of memory", qt_export_format_name(f));
    if (s == QT_OK) {
        qt_export_extra ex = {extra_name, qc};
        s = qt_export_write_dir(qm, o, dir, f, &x, qc, &ex, extra_name ? 1 : 0);
    }
    cJSON_Delete(qc);
    qt_xst_free(&x);
    return s;
}
