/*
 * quantize.c - `qtrain quantize RECIPE`: post-training quantization of model.from as the
 * recipe's quantize: section says (rtn, gptq or awq, calibrated on data.train), then the
 * export: files, then the parity report of each file read back against the float model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef QT_VERSION_STR
#define QT_VERSION_STR "0.1.0"
#endif

/* Before a long GPTQ/AWQ run: would every export take the format, the layer shapes and
 * (act-order) the permutation? A stand-in quantized model with no codes is checked; what
 * only the codes can tell (a zero point of 0 in GPTQ v1) is checked again after. */
static qt_status dry_check(qt_model *m, const qt_recipe_ptq *pr,
                           const qt_recipe_export_job *jobs, int n) {
    qt_qmodel dq;
    qt_qmodel_init(&dq, m, "dry");
    qt_paramset *ps = qt_model_params(m);
    qt_status st = QT_OK;
    bool permuted = pr->pc.act_order && !pr->pc.static_groups;
    for (int p = 0; p < ps->n && st == QT_OK; p++) {
        qt_tensor *w = ps->params[p];
        if (!qt_ptq_selects(&pr->pc, m, w)) continue;
        qt_qtensor q;
        memset(&q, 0, sizeof q);
        q.fmt = pr->pc.fmt;
        q.rows = w->shape[0];
        q.cols = w->shape[1];
        int32_t *perm = NULL;
        if (permuted && (perm = malloc((size_t)q.cols * sizeof *perm)))
            for (int64_t i = 0; i < q.cols; i++) perm[i] = (int32_t)i;
        st = qt_qmodel_add(&dq, w->name, &q, perm);
    }
    for (int j = 0; j < n && st == QT_OK; j++) st = qt_export_check(&dq, jobs[j].f);
    qt_qmodel_free(&dq);
    return st;
}

static void quantize_usage(FILE *f) {
    fprintf(f, "usage: qtrain quantize RECIPE.yaml [--set key=value ...]\n"
               "  post-training quantization of model.from as the recipe's quantize: section\n"
               "  says (rtn | gptq | awq, calibrated on data.train), written to every export:\n"
               "  path (default: the format's natural file under output.dir), each read back\n"
               "  and compared with the float model (perplexity, KL divergence, top-1).\n"
               "  Keys: qtrain train --keys (quantize.*, export.*)\n");
}

/* A quantize run: the recipe, what it asks for and what it made. */
typedef struct {
    const char *path; /* the recipe */
    qt_recipe r;
    qt_recipe_ptq pr;
    qt_recipe_export_job jobs[QT_EXPORT_COUNT];
    int n_jobs;
    qt_model_source src;  /* model.from as it is: the model to quantize, and the reference */
    qt_loaded_model lm;
    qt_dataset ds;        /* data.train (or quantize.calibration.data) */
    qt_dataset_config dc;
    bool own_calib;       /* the calibration text is a file of its own */
} quantize_run;

/* RECIPE [--set k=v ...]: read, overridden, checked; the PTQ config and the files.
 * Returns -1 to go on, else the exit code. */
static int read_recipe(int argc, char **argv, quantize_run *q) {
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        quantize_usage(stdout);
        return 0;
    }
    if (argc < 1 || argv[0][0] == '-') {
        quantize_usage(stderr);
        return 2;
    }
    q->path = argv[0];
    qt_recipe *r = &q->r;
    qt_recipe_defaults(r);
    qt_status st = qt_recipe_load(q->path, r);
    for (int i = 1; st == QT_OK && i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            st = qt_recipe_set(r, argv[++i]);
        } else {
            fprintf(stderr, "qtrain quantize: unexpected argument '%s'\n", argv[i]);
            quantize_usage(stderr);
            return 2;
        }
    }
    if (st == QT_OK) st = qt_recipe_validate(r, q->path);
    if (st == QT_OK && !r->model.from[0])
        st = QT_ERROR(QT_EINVAL, "%s: model.from must name the model to quantize (a qtrain "
                                 "checkpoint, an HF directory or a GGUF file)", q->path);
    if (st == QT_OK) st = qt_recipe_ptq_config(r, q->path, &q->pr);
    if (st == QT_OK) st = qt_recipe_export_jobs(r, q->path, &q->pr, q->jobs, &q->n_jobs);
    return st == QT_OK ? -1 : qt_cli_fail("quantize", st);
}

/* Calibration from the training part of data.train (or quantize.calibration.data), the
 * quantized weights through every exporter's checks, the files written. */
static qt_status quantize_and_write(quantize_run *q, double t0) {
    const qt_recipe *r = &q->r;
    const char *cpath = r->quantize.calibration.data[0] ? r->quantize.calibration.data
                                                         : r->data.train;
    q->own_calib = r->quantize.calibration.data[0] != 0;
    q->dc = (qt_dataset_config){.path = cpath, .format = QT_DATA_AUTO, .tok = q->lm.tok,
                                .seq_len = r->quantize.calibration.seq_len,
                                .val_fraction = q->own_calib ? 0.0f : r->data.val_fraction,
                                .seed = (uint64_t)r->train.seed, .cache_dir = NULL};
    qt_calib cal = {0};
    bool need_cal = q->pr.pc.method != QT_PTQ_RTN;
    bool need_val = r->quantize.compare && !r->quantize.compare_data[0];
    qt_status st = QT_OK;
    if (need_cal || need_val) st = qt_dataset_open(&q->ds, &q->dc);
    if (st == QT_OK && need_cal)
        st = qt_calib_sample(q->ds.tokens, q->own_calib ? q->ds.n_tokens : q->ds.val_start,
                             r->quantize.calibration.samples, r->quantize.calibration.seq_len,
                             (uint64_t)r->quantize.calibration.seed, cpath, &cal);
    if (st == QT_OK && need_cal) st = dry_check(&q->lm.m, &q->pr, q->jobs, q->n_jobs);
    qt_qmodel qm = {0};
    char fs[96];
    if (st == QT_OK) {
        printf("qtrain quantize %s: %s %s of %s%s\n", r->name, r->quantize.method,
               qt_qformat_str(&q->pr.pc.fmt, fs, sizeof fs), r->model.from,
               need_cal ? "" : " (no calibration)");
        if (need_cal)
            printf("qtrain quantize: calibration %lld x %lld tokens from %s\n", (long long)cal.n,
                   (long long)cal.len, cpath);
        fflush(stdout);
        st = qt_ptq_run(&q->lm.m, &q->pr.pc, need_cal ? &cal : NULL, stdout, &qm);
    }
    if (st == QT_OK) {
        qm.recipe = qt_recipe_text(r);
        if (need_cal) qt_calib_hash(&cal, qm.calib_hash);
        printf("qtrain quantize: %d weights quantized in %.1f s\n", qm.n, qt_now_s() - t0);
        for (int j = 0; j < q->n_jobs && st == QT_OK; j++) st = qt_export_check(&qm, q->jobs[j].f);
    }
    qt_export_opts o;
    qt_recipe_export_opts(r, q->lm.tok, &o);
    o.version = QT_VERSION_STR;
    for (int j = 0; j < q->n_jobs && st == QT_OK; j++) {
        st = qt_make_parent_dirs(q->jobs[j].path);
        if (st == QT_OK) st = qt_export(&qm, q->jobs[j].f, &o, q->jobs[j].path);
        if (st == QT_OK) printf("qtrain quantize: wrote %s (%s)\n", q->jobs[j].path,
                                qt_export_format_name(q->jobs[j].f));
    }
    qt_calib_free(&cal);
    qt_qmodel_free(&qm);
    return st;
}

/* The text to compare on: quantize.compare_data, or the validation part of data.train
 * (the calibration text, when it is another file, was opened whole). The exit code. */
static int compare_text(quantize_run *q, int32_t **ids, size_t *n) {
    const qt_recipe *r = &q->r;
    if (r->quantize.compare_data[0])
        return qt_cli_read_tokens("quantize", r->quantize.compare_data, q->lm.tok, ids, n);
    qt_dataset vs = {0};
    qt_dataset *v = &q->ds;
    qt_status st = QT_OK;
    if (q->own_calib) {
        qt_dataset_config vc = q->dc;
        vc.path = r->data.train;
        vc.val_fraction = r->data.val_fraction;
        st = qt_dataset_open(&vs, &vc);
        v = &vs;
    }
    *n = st == QT_OK ? (size_t)(v->n_tokens - v->val_start) : 0;
    if (st == QT_OK && *n < 2)
        st = QT_ERROR(QT_EINVAL, "%s: data.train (%s) has no validation part to compare "
                                 "on (data.val_fraction %g); set quantize.compare_data",
                      q->path, r->data.train, (double)r->data.val_fraction);
    if (st == QT_OK && !(*ids = malloc(*n * sizeof **ids)))
        st = QT_ERROR(QT_ENOMEM, "quantize: out of memory");
    if (st == QT_OK) memcpy(*ids, v->tokens + v->val_start, *n * sizeof **ids);
    if (q->own_calib) qt_dataset_close(&vs);
    if (st == QT_OK) return 0;
    fprintf(stderr, "qtrain quantize: %s (the files are written)\n", qt_error_message());
    return qt_cli_exit_code(st);
}

/* Each file read back and compared with the float model (reloaded from model.from);
 * with export.write false, the quantized model in memory. The exit code. */
static int compare_files(quantize_run *q) {
    const qt_recipe *r = &q->r;
    int32_t *ids = NULL;
    size_t n = 0;
    qt_loaded_model ref;
    int rc = compare_text(q, &ids, &n);
    if (rc == 0) rc = qt_cli_open("quantize", &q->src, &ref);
    if (rc) {
        free(ids);
        return rc;
    }
    /* quantize.compare_context, else data.seq_len, within the model's context */
    long context = r->quantize.compare_context ? r->quantize.compare_context : r->data.seq_len;
    if (qt_model_context(&ref.m) > 0 && context > qt_model_context(&ref.m))
        context = qt_model_context(&ref.m);
    long stride = context / 2 ? context / 2 : 1;
    qt_cli_print_reference("quantize", ref.lora);
    for (int j = 0; j < q->n_jobs && rc == 0; j++)
        rc = qt_cli_compare_file("quantize", &ref.m, q->jobs[j].path, ids, (long)n, context,
                                 stride);
    if (q->n_jobs == 0) { /* export.write false: the quantized model in memory */
        qt_compare_result res;
        qt_status st = qt_compare_models(&ref.m, &q->lm.m, ids, (long)n, context, stride, &res);
        if (st == QT_OK) qt_cli_print_compare("qtrain quantize: compare (in memory, not written)", &res);
        else rc = qt_cli_fail("quantize", st);
    }
    qt_model_close(&ref);
    free(ids);
    return rc;
}

int qt_cmd_quantize(int argc, char **argv) {
    quantize_run q;
    memset(&q, 0, sizeof q);
    int rc = read_recipe(argc, argv, &q);
    if (rc >= 0) return rc;
    if (q.r.train.threads > 0) qt_set_num_threads(q.r.train.threads);
    double t0 = qt_now_s();
    q.src = (qt_model_source){.recipe = &q.r, .recipe_path = q.path};
    rc = qt_cli_open("quantize", &q.src, &q.lm);
    if (rc) return rc;
    qt_status st = quantize_and_write(&q, t0);
    rc = st == QT_OK ? 0 : qt_cli_fail("quantize", st);
    if (rc == 0 && q.r.quantize.compare) rc = compare_files(&q);
    qt_model_close(&q.lm);
    qt_dataset_close(&q.ds);
    return rc;
}
