/*
 * imatrix.c - llama.cpp's importance matrix (qt_ptq.h): computed over calibration data
 * as llama-imatrix computes it, read and written in both of its file formats, and turned
 * into the per-column quant_weights llama-quantize hands its quantizers.
 *
 * Follows llama.cpp (the version PyPI's llama-cpp-python 0.3.36 vendors):
 *   - tools/imatrix/imatrix.cpp IMatrixCollector::collect_imatrix: for every matrix
 *     product whose weight is named "blk.*" (and "output.weight" with --process-output),
 *     acc[j] += x[j] * x[j] over the rows of the input in order, counts += rows;
 *     save_imatrix (GGUF: sorted names, <name>.in_sum2 / <name>.counts F32, general.type
 *     "imatrix", imatrix.datasets / chunk_count / chunk_size) and save_imatrix_legacy
 *     (ncall = ceil(count / chunk_size), values (sum / count) * ncall, entries with a zero
 *     count skipped, then the chunk count and the dataset name);
 *   - common/imatrix-loader.cpp common_imatrix_load (GGUF first, legacy when the file is
 *     not GGUF; counts rounded with lround) and tools/quantize/quantize.cpp load_imatrix
 *     (GGUF: sums / count, 1 for a zero count; legacy: sums / ncall).
 * In qtrain the capture is a linear hook on the model's forward: each Linear of a
 * decoder block (q, k, v, o, gate, up, down) sees the same input as llama.cpp's matrix
 * product of that GGUF tensor.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_ptq.h"

/* ------------------------------------------------------------------ basics ---- */

static void entry_free(qt_imatrix_entry *e) {
    free(e->name);
    free(e->sums);
}

void qt_imatrix_free(qt_imatrix *im) {
    if (!im) return;
    for (int i = 0; i < im->n; i++) entry_free(&im->e[i]);
    free(im->e);
    for (int i = 0; i < im->n_datasets; i++) free(im->datasets[i]);
    free(im->datasets);
    free(im->path);
    memset(im, 0, sizeof *im);
}

const qt_imatrix_entry *qt_imatrix_find(const qt_imatrix *im, const char *gguf_name) {
    for (int i = 0; im && gguf_name && i < im->n; i++)
        if (!strcmp(im->e[i].name, gguf_name)) return &im->e[i];
    return NULL;
}

static const char *im_path(const qt_imatrix *im) {
    return im->path ? im->path : "the importance matrix";
}

/* Appends an entry (name copied, sums zeroed). */
static qt_status add_entry(qt_imatrix *im, const char *name, int64_t n, qt_imatrix_entry **out) {
    qt_imatrix_entry *e = realloc(im->e, (size_t)(im->n + 1) * sizeof *e);
    if (!e) return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    im->e = e;
    e = &im->e[im->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->sums = calloc((size_t)(n > 0 ? n : 1), sizeof *e->sums);
    if (!e->name || !e->sums) {
        entry_free(e);
        return QT_ERROR(QT_ENOMEM, "imatrix: out of memory for %s", name);
    }
    e->n = n;
    im->n++;
    *out = e;
    return QT_OK;
}

static qt_status add_dataset(qt_imatrix *im, const char *name, size_t len) {
    char **d = realloc(im->datasets, (size_t)(im->n_datasets + 1) * sizeof *d);
    if (!d) return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    im->datasets = d;
    char *s = malloc(len + 1);
    if (!s) return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    memcpy(s, name, len);
    s[len] = 0;
    im->datasets[im->n_datasets++] = s;
    return QT_OK;
}

void qt_imatrix_weights(const qt_imatrix *im, const qt_imatrix_entry *e, float *out) {
    if (!im->legacy) {
        const float count = (float)e->count;
        for (int64_t i = 0; i < e->n; i++) out[i] = count > 0.0f ? e->sums[i] / count : 1.0f;
    } else {
        for (int64_t i = 0; i < e->n; i++)
            out[i] = e->count > 0 ? e->sums[i] / (float)e->count : e->sums[i];
    }
}

/* ----------------------------------------------------------------- model map ---- */

/* The Linear weights an imatrix covers, in model order; *n of them. */
static int model_linears(const qt_model *m, bool with_output, const qt_tensor **ws) {
    const qt_llama *L = &m->llama;
    int n = 0;
    for (int l = 0; l < L->cfg.n_layers; l++) {
        const qt_llama_layer *y = &L->layers[l];
        const qt_tensor *t[7] = {y->wq, y->wk, y->wv, y->wo, y->w_gate, y->w_up, y->w_down};
        for (int k = 0; k < 7; k++) ws[n++] = t[k];
    }
    if (with_output && L->lm_head != L->embed) ws[n++] = L->lm_head;
    return n;
}

qt_status qt_imatrix_weights_for(const qt_imatrix *im, const qt_tensor *w, float *out) {
    char g[128];
    if (!qt_gguf_name_of(w->name, g, sizeof g))
        return QT_ERROR(QT_EINVAL, "%s: %s has no GGUF name, so no importance-matrix entry",
                        im_path(im), w->name);
    const qt_imatrix_entry *e = qt_imatrix_find(im, g);
    if (!e)
        return QT_ERROR(QT_EINVAL, "%s: no importance-matrix entry for %s (%s): an imatrix of "
                                   "another model, or one computed without this layer",
                        im_path(im), g, w->name);
    if (w->ndim != 2 || e->n != w->shape[1])
        return QT_ERROR(QT_EINVAL, "%s: entry %s has %lld values but %s has %lld input columns: "
                                   "an imatrix of another model",
                        im_path(im), g, (long long)e->n, w->name,
                        (long long)(w->ndim == 2 ? w->shape[1] : -1));
    qt_imatrix_weights(im, e, out);
    return QT_OK;
}

qt_status qt_imatrix_check_model(const qt_imatrix *im, const qt_model *m) {
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "imatrix: only Llama-family models have GGUF tensor names");
    const qt_tensor **ws = malloc((size_t)(7 * m->llama.cfg.n_layers + 1) * sizeof *ws);
    if (!ws) return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    int nw = model_linears(m, true, ws);
    qt_status st = QT_OK;
    for (int i = 0; i < im->n && st == QT_OK; i++) {
        const qt_imatrix_entry *e = &im->e[i];
        const qt_tensor *hit = NULL;
        char g[128];
        for (int k = 0; k < nw && !hit; k++)
            if (qt_gguf_name_of(ws[k]->name, g, sizeof g) && !strcmp(g, e->name)) hit = ws[k];
        if (!hit)
            st = QT_ERROR(QT_EINVAL, "%s: entry %s names no Linear weight of the model: an "
                                     "imatrix of another model",
                          im_path(im), e->name);
        else if (e->n != hit->shape[1])
            st = QT_ERROR(QT_EINVAL, "%s: entry %s has %lld values but %s has %lld input "
                                     "columns: an imatrix of another model",
                          im_path(im), e->name, (long long)e->n, hit->name,
                          (long long)hit->shape[1]);
    }
    free(ws);
    return st;
}

/* ------------------------------------------------------------------- collect ---- */

typedef struct {
    const qt_tensor **ws; /* (n) the weights whose inputs are summed */
    qt_imatrix_entry **e; /* (n) their entries */
    int n;
} collector;

/* The linear hook: sums the squares of w's input row by row, then the plain Linear. */
static qt_tensor *collect_linear(qt_ctx *ctx, void *user, qt_tensor *x, qt_tensor *w,
                                 qt_tensor *b, bool w_io) {
    collector *c = user;
    for (int k = 0; k < c->n && x && qt_ctx_status(ctx) == QT_OK; k++) {
        if (c->ws[k] != w) continue;
        qt_imatrix_entry *e = c->e[k];
        const int64_t in = x->shape[x->ndim - 1], rows = qt_numel(x) / in;
        const float *xd = x->data;
        float *acc = e->sums;
        for (int64_t r = 0; r < rows; r++, xd += in)
            for (int64_t j = 0; j < in; j++) acc[j] += xd[j] * xd[j];
        e->count += rows;
        break;
    }
    return qt_linear(ctx, x, w, b, w_io);
}

qt_status qt_imatrix_collect(qt_model *m, const qt_calib *calib, int batch, bool process_output,
                             const char *dataset, qt_imatrix *out) {
    memset(out, 0, sizeof *out);
    if (m->arch != QT_ARCH_LLAMA)
        return QT_ERROR(QT_ENOTSUP, "imatrix: only Llama-family models (GPT-2 has no GGUF "
                                    "tensor names here)");
    if (m->llama.hook.linear || m->llama.hook.embedding)
        return QT_ERROR(QT_ESTATE, "imatrix: the model already has a hook (QAT or LoRA); the "
                                   "importance matrix needs a plain model");
    if (!calib || calib->n < 1 || calib->len < 1 || batch < 1)
        return QT_ERROR(QT_EINVAL, "imatrix: needs calibration sequences and batch >= 1");
    if (calib->len > INT32_MAX || calib->n > INT32_MAX)
        return QT_ERROR(QT_EINVAL, "imatrix: %lld sequences of %lld tokens is too many",
                        (long long)calib->n, (long long)calib->len);
    qt_llama *L = &m->llama;
    const qt_tensor **ws = malloc((size_t)(7 * L->cfg.n_layers + 1) * sizeof *ws);
    qt_imatrix_entry **es = malloc((size_t)(7 * L->cfg.n_layers + 1) * sizeof *es);
    qt_status st = (ws && es) ? QT_OK : QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    int nw = st == QT_OK ? model_linears(m, process_output, ws) : 0;
    for (int k = 0; k < nw && st == QT_OK; k++) {
        char g[128];
        if (!qt_gguf_name_of(ws[k]->name, g, sizeof g))
            st = QT_ERROR(QT_EINVAL, "imatrix: %s has no GGUF name", ws[k]->name);
        else
            st = add_entry(out, g, ws[k]->shape[1], &es[k]);
    }
    /* entries may have moved while the array grew: point at their final places */
    for (int k = 0; k < nw && st == QT_OK; k++) es[k] = &out->e[k];
    if (st == QT_OK && dataset) st = add_dataset(out, dataset, strlen(dataset));
    collector c = {.ws = ws, .e = es, .n = nw};
    qt_linear_hook h = {.linear = collect_linear, .user = &c};
    qt_ctx *ctx = st == QT_OK ? qt_ctx_new() : NULL;
    if (st == QT_OK && !ctx) st = QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    if (st == QT_OK) {
        qt_ctx_set_grad_enabled(ctx, false);
        qt_model_set_hook(m, &h);
        for (int64_t s0 = 0; s0 < calib->n && st == QT_OK; s0 += batch) {
            int64_t b = calib->n - s0 < batch ? calib->n - s0 : batch;
            qt_ctx_reset(ctx);
            int64_t shape[2] = {b, calib->len};
            qt_tensor *ids = qt_tensor_from(ctx, QT_I32, 2, shape, calib->ids + s0 * calib->len);
            qt_tensor *y = qt_model_forward(ctx, m, ids);
            if (!y) st = QT_ERROR(qt_ctx_status(ctx), "imatrix: %s", qt_ctx_error(ctx));
        }
        qt_model_set_hook(m, NULL);
    }
    qt_ctx_free(ctx);
    for (int k = 0; k < nw && st == QT_OK; k++) {
        const qt_imatrix_entry *e = &out->e[k];
        for (int64_t j = 0; j < e->n; j++)
            if (!isfinite(e->sums[j])) {
                st = QT_ERROR(QT_ENUMERIC, "imatrix: the sum of squares of input %lld of %s is "
                                           "not finite", (long long)j, e->name);
                break;
            }
    }
    free(ws);
    free(es);
    if (st != QT_OK) {
        qt_imatrix_free(out);
        return st;
    }
    out->chunk_size = (int32_t)calib->len;
    out->chunk_count = (int32_t)calib->n; /* llama-imatrix: tokens / chunk_size */
    return QT_OK;
}

/* ---------------------------------------------------------------------- save ---- */

static int cmp_entry_name(const void *a, const void *b) {
    const qt_imatrix_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Entries sorted by name (llama-imatrix's "deterministic tensor name order"). */
static const qt_imatrix_entry **sorted_entries(const qt_imatrix *im) {
    const qt_imatrix_entry **s = malloc((size_t)(im->n > 0 ? im->n : 1) * sizeof *s);
    if (!s) return NULL;
    for (int i = 0; i < im->n; i++) s[i] = &im->e[i];
    qsort(s, (size_t)im->n, sizeof *s, cmp_entry_name);
    return s;
}

static qt_status save_gguf(const qt_imatrix *im, const qt_imatrix_entry **sorted,
                           const char *path) {
    qt_gguf_writer *w = NULL;
    qt_status st = qt_gguf_writer_init(&w);
    if (st != QT_OK) return st;
    float *counts = malloc((size_t)(im->n > 0 ? im->n : 1) * sizeof *counts);
    if (!counts) {
        qt_gguf_writer_free(w);
        return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    }
    qt_gguf_writer_set_str(w, "general.type", "imatrix", 7);
    qt_gguf_writer_set_arr_str(w, "imatrix.datasets", (const char *const *)im->datasets, NULL,
                               (uint64_t)im->n_datasets);
    qt_gguf_writer_set_u32(w, "imatrix.chunk_count", (uint32_t)im->chunk_count);
    qt_gguf_writer_set_u32(w, "imatrix.chunk_size", (uint32_t)im->chunk_size);
    for (int i = 0; i < im->n; i++) {
        const qt_imatrix_entry *e = sorted[i];
        char name[QT_GGUF_MAX_NAME + 16];
        counts[i] = (float)e->count;
        snprintf(name, sizeof name, "%s.in_sum2", e->name);
        int64_t ne = e->n, one = 1;
        qt_gguf_writer_add_tensor(w, name, QT_GGML_F32, 1, &ne, e->sums, (size_t)e->n * 4);
        snprintf(name, sizeof name, "%s.counts", e->name);
        st = qt_gguf_writer_add_tensor(w, name, QT_GGML_F32, 1, &one, &counts[i], 4);
    }
    st = qt_gguf_writer_write(w, path);
    qt_gguf_writer_free(w);
    free(counts);
    return st;
}

static void put_i32(uint8_t **p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (int b = 0; b < 4; b++) *(*p)++ = (uint8_t)(u >> (8 * b));
}

static void put_f32(uint8_t **p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int b = 0; b < 4; b++) *(*p)++ = (uint8_t)(u >> (8 * b));
}

static qt_status save_legacy(const qt_imatrix *im, const qt_imatrix_entry **sorted,
                             const char *path) {
    /* GGUF-held sums become (sum / count) * ncall; legacy-read entries are written back
     * as they were read */
    size_t size = 4 + 4 + 4;
    int32_t n_store = 0;
    for (int i = 0; i < im->n; i++) {
        if (!im->legacy && sorted[i]->count == 0) continue; /* "has no data - skipping" */
        if (sorted[i]->n > INT32_MAX / 4 || strlen(sorted[i]->name) > 4096)
            return QT_ERROR(QT_EINVAL, "imatrix: entry %s is too large for the legacy format",
                            sorted[i]->name);
        size += 12 + strlen(sorted[i]->name) + 4 * (size_t)sorted[i]->n;
        n_store++;
    }
    const char *dataset = im->n_datasets ? im->datasets[im->n_datasets - 1] : "";
    size += strlen(dataset);
    if (!im->legacy && im->chunk_size < 1)
        return QT_ERROR(QT_EINVAL, "imatrix: chunk_size %d; the legacy format needs the tokens "
                                   "per chunk", im->chunk_size);
    uint8_t *buf = malloc(size), *p = buf;
    if (!buf) return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    put_i32(&p, n_store);
    for (int i = 0; i < im->n; i++) {
        const qt_imatrix_entry *e = sorted[i];
        if (!im->legacy && e->count == 0) continue;
        put_i32(&p, (int32_t)strlen(e->name));
        memcpy(p, e->name, strlen(e->name));
        p += strlen(e->name);
        int64_t ncall = im->legacy ? e->count : (e->count + im->chunk_size - 1) / im->chunk_size;
        put_i32(&p, (int32_t)ncall);
        put_i32(&p, (int32_t)e->n);
        for (int64_t j = 0; j < e->n; j++)
            put_f32(&p, im->legacy ? e->sums[j]
                                   : (e->sums[j] / (float)e->count) * (float)ncall);
    }
    put_i32(&p, im->chunk_count);
    put_i32(&p, (int32_t)strlen(dataset));
    memcpy(p, dataset, strlen(dataset));
    p += strlen(dataset);
    qt_atomic_file f;
    qt_atomic_file_open(&f, path);
    qt_atomic_file_write(&f, buf, (size_t)(p - buf));
    free(buf);
    return qt_atomic_file_commit(&f);
}

qt_status qt_imatrix_save(const qt_imatrix *im, const char *path, bool legacy) {
    if (!im || !path) return QT_ERROR(QT_EINVAL, "imatrix save: NULL argument");
    if (im->legacy && !legacy)
        return QT_ERROR(QT_ENOTSUP, "imatrix save %s: %s is a legacy .dat imatrix (means, not "
                                    "sums); it can only be written in the legacy format",
                        path, im_path(im));
    for (int i = 0; i < im->n; i++)
        if (!legacy && strlen(im->e[i].name) + strlen(".in_sum2") >= QT_GGUF_MAX_NAME)
            return QT_ERROR(QT_EINVAL, "imatrix save %s: entry name %s is too long for GGUF",
                            path, im->e[i].name);
    const qt_imatrix_entry **sorted = sorted_entries(im);
    if (!sorted) return QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    qt_status st = legacy ? save_legacy(im, sorted, path) : save_gguf(im, sorted, path);
    free(sorted);
    return st;
}

/* ---------------------------------------------------------------------- load ---- */

static qt_status check_sums(const char *path, const qt_imatrix_entry *e) {
    for (int64_t j = 0; j < e->n; j++)
        if (!isfinite(e->sums[j]))
            return QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s: value %lld is not finite", path,
                            e->name, (long long)j);
    return QT_OK;
}

static bool ends_with(const char *s, const char *suf, size_t *stem) {
    size_t a = strlen(s), b = strlen(suf);
    if (a <= b || strcmp(s + a - b, suf)) return false;
    *stem = a - b;
    return true;
}

static qt_status load_gguf(const char *path, qt_imatrix *out) {
    qt_gguf *g = NULL;
    qt_status st = qt_gguf_open(path, &g);
    if (st != QT_OK) return st;
    uint32_t cc = 0, cs = 0;
    qt_gguf_type et;
    uint64_t nd = 0;
    if (qt_gguf_find_key(g, "imatrix.chunk_count") < 0 ||
        qt_gguf_find_key(g, "imatrix.chunk_size") < 0 ||
        qt_gguf_find_key(g, "imatrix.datasets") < 0) {
        qt_gguf_close(g);
        return QT_ERROR(QT_EFORMAT, "%s: not an importance matrix: missing the imatrix metadata "
                                    "(imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size) "
                                    "that llama-quantize requires", path);
    }
    if ((st = qt_gguf_get_u32(g, "imatrix.chunk_count", &cc)) != QT_OK ||
        (st = qt_gguf_get_u32(g, "imatrix.chunk_size", &cs)) != QT_OK ||
        (st = qt_gguf_get_arr(g, "imatrix.datasets", &et, &nd, NULL)) != QT_OK) {
        qt_gguf_close(g);
        return st;
    }
    if (et != QT_GGUF_STRING || cc > INT32_MAX || cs > INT32_MAX) {
        qt_gguf_close(g);
        return QT_ERROR(QT_EFORMAT, "%s: imatrix.datasets must be a string array and the chunk "
                                    "count and size below 2^31", path);
    }
    out->chunk_count = (int32_t)cc;
    out->chunk_size = (int32_t)cs;
    for (uint64_t i = 0; i < nd && st == QT_OK; i++) {
        const char *s;
        size_t len;
        if ((st = qt_gguf_get_arr_str(g, "imatrix.datasets", i, &s, &len)) == QT_OK)
            st = add_dataset(out, s, len);
    }
    /* pair <name>.in_sum2 with <name>.counts */
    const int64_t nt = qt_gguf_tensor_count(g);
    for (int64_t i = 0; i < nt && st == QT_OK; i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        size_t stem;
        if (!ends_with(t->name, ".in_sum2", &stem)) continue;
        char name[QT_GGUF_MAX_NAME], cname[QT_GGUF_MAX_NAME + 8];
        snprintf(name, sizeof name, "%.*s", (int)stem, t->name);
        snprintf(cname, sizeof cname, "%s.counts", name);
        const qt_gguf_tensor *c = qt_gguf_tensor_get(g, cname);
        if (!c) {
            st = QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s has sums (%s) but no %s", path, name,
                          t->name, cname);
            break;
        }
        if (t->type != QT_GGML_F32 || c->type != QT_GGML_F32) {
            st = QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s: sums and counts must be F32, found "
                                      "%s and %s", path, name, qt_ggml_type_name(t->type),
                          qt_ggml_type_name(c->type));
            break;
        }
        const int64_t nval = (int64_t)(t->nbytes / 4), ncounts = (int64_t)(c->nbytes / 4);
        if (ncounts != 1) {
            st = QT_ERROR(QT_ENOTSUP, "%s: imatrix entry %s has %lld counts (a mixture-of-experts "
                                      "tensor); qtrain holds dense entries only", path, name,
                          (long long)ncounts);
            break;
        }
        float cnt;
        memcpy(&cnt, c->data, 4);
        if (!isfinite(cnt) || cnt < 0 || cnt > 9.0e18f) {
            st = QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s: count %g is not a token count", path,
                          name, (double)cnt);
            break;
        }
        if (qt_imatrix_find(out, name)) {
            st = QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s appears twice", path, name);
            break;
        }
        qt_imatrix_entry *e;
        if ((st = add_entry(out, name, nval, &e)) != QT_OK) break;
        memcpy(e->sums, t->data, (size_t)nval * 4);
        e->count = (int64_t)lroundf(cnt);
        st = check_sums(path, e);
    }
    /* a .counts without its .in_sum2 is as malformed as the reverse (common_imatrix_load) */
    for (int64_t i = 0; i < nt && st == QT_OK; i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        size_t stem;
        if (!ends_with(t->name, ".counts", &stem)) continue;
        char name[QT_GGUF_MAX_NAME];
        snprintf(name, sizeof name, "%.*s", (int)stem, t->name);
        if (!qt_imatrix_find(out, name))
            st = QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s has counts (%s) but no %s.in_sum2",
                          path, name, t->name, name);
    }
    if (st == QT_OK && out->n == 0)
        st = QT_ERROR(QT_EFORMAT, "%s: the importance matrix holds no entry", path);
    qt_gguf_close(g);
    return st;
}

/* Bounds-checked little-endian reads of a legacy file held in memory. */
typedef struct {
    const uint8_t *p, *end;
    const char *path;
} reader;

static bool rd_i32(reader *r, int32_t *v) {
    if (r->end - r->p < 4) return false;
    uint32_t u = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    memcpy(v, &u, 4);
    r->p += 4;
    return true;
}

static qt_status load_legacy(const char *path, const uint8_t *buf, size_t size, qt_imatrix *out) {
    reader r = {buf, buf + size, path};
    int32_t n_entries;
    if (!rd_i32(&r, &n_entries) || n_entries < 1)
        return QT_ERROR(QT_EFORMAT, "%s: neither a GGUF nor a legacy imatrix (.dat) file: no "
                                    "entry count", path);
    out->legacy = true;
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t len, ncall, nval;
        if (!rd_i32(&r, &len) || len < 1 || len > 4096 || r.end - r.p < len)
            return QT_ERROR(QT_EFORMAT, "%s: legacy imatrix entry %d of %d: bad name length or "
                                        "truncated file", path, i + 1, n_entries);
        char name[4097];
        memcpy(name, r.p, (size_t)len);
        name[len] = 0;
        r.p += len;
        if (strlen(name) != (size_t)len)
            return QT_ERROR(QT_EFORMAT, "%s: legacy imatrix entry %d: name holds a NUL byte", path,
                            i + 1);
        if (!rd_i32(&r, &ncall) || !rd_i32(&r, &nval) || ncall < 0 || nval < 1 ||
            (size_t)(r.end - r.p) / 4 < (size_t)nval)
            return QT_ERROR(QT_EFORMAT, "%s: legacy imatrix entry %s: bad call or value count, or "
                                        "truncated file", path, name);
        if (qt_imatrix_find(out, name))
            return QT_ERROR(QT_EFORMAT, "%s: imatrix entry %s appears twice", path, name);
        qt_imatrix_entry *e;
        qt_status st = add_entry(out, name, nval, &e);
        if (st != QT_OK) return st;
        for (int32_t j = 0; j < nval; j++) {
            int32_t bits = 0;
            rd_i32(&r, &bits); /* in bounds: checked above */
            memcpy(&e->sums[j], &bits, 4);
        }
        e->count = ncall;
        if ((st = check_sums(path, e)) != QT_OK) return st;
    }
    /* optional trailer: chunk count, then the dataset name */
    int32_t chunks, len;
    if (rd_i32(&r, &chunks)) {
        out->chunk_count = chunks;
        if (rd_i32(&r, &len) && len > 0) {
            if (r.end - r.p < len)
                return QT_ERROR(QT_EFORMAT, "%s: legacy imatrix: truncated dataset name", path);
            qt_status st = add_dataset(out, (const char *)r.p, (size_t)len);
            if (st != QT_OK) return st;
            r.p += len;
        }
    }
    if (r.p != r.end)
        return QT_ERROR(QT_EFORMAT, "%s: legacy imatrix: %lld bytes after the dataset name", path,
                        (long long)(r.end - r.p));
    return QT_OK;
}

qt_status qt_imatrix_load(const char *path, qt_imatrix *out) {
    memset(out, 0, sizeof *out);
    if (!path) return QT_ERROR(QT_EINVAL, "imatrix load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return QT_ERROR(QT_EIO, "%s: cannot open the importance matrix", path);
    uint8_t *buf = NULL;
    size_t size = 0;
    long end = (fseek(f, 0, SEEK_END) == 0) ? ftell(f) : -1;
    if (end < 0 || fseek(f, 0, SEEK_SET) != 0 || end > (1L << 32)) {
        fclose(f);
        return QT_ERROR(QT_EIO, "%s: cannot read the importance matrix (or over 4 GiB)", path);
    }
    size = (size_t)end;
    buf = malloc(size ? size : 1);
    if (!buf || fread(buf, 1, size, f) != size) {
        fclose(f);
        free(buf);
        return QT_ERROR(buf ? QT_EIO : QT_ENOMEM, "%s: cannot read %zu bytes", path, size);
    }
    fclose(f);
    qt_status st;
    if (size >= 4 && !memcmp(buf, "GGUF", 4)) {
        free(buf);
        st = load_gguf(path, out);
    } else {
        st = load_legacy(path, buf, size, out);
        free(buf);
    }
    if (st == QT_OK && !(out->path = strdup(path))) st = QT_ERROR(QT_ENOMEM, "imatrix: out of memory");
    if (st != QT_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", qt_error_message());
        qt_imatrix_free(out);
        return QT_ERROR(st, "%s", msg);
    }
    return QT_OK;
}
