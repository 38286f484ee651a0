/*
 * cmd_ptq.c - `qtrain quantize RECIPE` (post-training quantization as the recipe's
 * quantize: section says, then the export: files, then the parity report of each file
 * against the float model), `qtrain export MODEL --format F --out PATH` (a QAT checkpoint
 * exported bit for bit as trained, a float one rounded to nearest in the exporter's
 * format) and `qtrain compare REFERENCE CANDIDATE --data FILE`.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "compare.h"
#include "loop.h"
#include "qt_export.h"
#include "qt_lora.h"
#include "qt_ptq.h"

#ifndef QT_VERSION_STR
#define QT_VERSION_STR "0.1.0"
#endif

#define MAX_GLOBS 32

typedef struct {
    qt_ptq_config pc;
    char globs[MAX_GLOBS][128];
    const char *ptrs[MAX_GLOBS];
} ptq_recipe;

/* The recipe's quantize: section as a qt_ptq_config; errors name the file and key. */
static qt_status ptq_from_recipe(const qt_recipe *r, const char *p, ptq_recipe *out) {
    memset(out, 0, sizeof *out);
    const char *m = r->quantize.method;
    qt_ptq_method method = !strcmp(m, "gptq") ? QT_PTQ_GPTQ : !strcmp(m, "awq") ? QT_PTQ_AWQ
                                                                               : QT_PTQ_RTN;
    if (!strcmp(m, "none"))
        return QT_ERROR(QT_EINVAL, "%s: quantize.method is not set (rtn, gptq or awq)", p);
    qt_ptq_config *c = &out->pc;
    qt_ptq_config_defaults(c, method);
    qt_recipe_wfmt w = r->quantize.fmt;
    w.symmetric = !strcmp(r->quantize.symmetric, "auto") ? method != QT_PTQ_AWQ
                                                          : !strcmp(r->quantize.symmetric, "true");
    qt_status st = qt_recipe_wformat(&w, p, "quantize", &c->fmt);
    if (st != QT_OK) return st;
    /* int groups: 128 unless the recipe says (GPTQ's and AWQ's shipping default) */
    if (c->fmt.kind == QT_QF_INT && c->fmt.gran == QT_QG_GROUP && !w.group_size)
        c->fmt.group_size = 128;
    if (method != QT_PTQ_RTN && (c->fmt.kind != QT_QF_INT || c->fmt.gran == QT_QG_TENSOR))
        return QT_ERROR(QT_EINVAL,
                        "%s: quantize.format: %s needs an int format per group or per channel "
                        "(int2..int8, granularity group or channel), got %s %s",
                        p, m, w.format, w.granularity);
    if (r->quantize.static_groups && !r->quantize.act_order)
        return QT_ERROR(QT_EINVAL, "%s: quantize.static_groups needs quantize.act_order", p);
    int n = 0;
    for (const char *s = r->quantize.layers; *s;) {
        const char *e = strchr(s, '\n');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (n == MAX_GLOBS || len >= sizeof out->globs[0])
            return QT_ERROR(QT_EINVAL, "%s: quantize.layers: at most %d globs of < 128 bytes", p,
                            MAX_GLOBS);
        memcpy(out->globs[n], s, len);
        out->globs[n][len] = 0;
        out->ptrs[n] = out->globs[n];
        n++;
        s += len + (e != NULL);
    }
    c->layers = n ? out->ptrs : NULL;
    c->n_layers = n;
    c->damp = r->quantize.damp;
    c->block_size = r->quantize.block_size;
    c->act_order = r->quantize.act_order;
    c->static_groups = r->quantize.static_groups;
    c->awq_grid = r->quantize.awq_grid;
    c->awq_clip = r->quantize.clip;
    c->awq_duo = r->quantize.awq_duo;
    c->batch = r->quantize.batch;
    return QT_OK;
}

typedef struct {
    qt_export_format f;
    char path[QT_PATH_MAX + 32];
} export_job;

/* The export: entries, or the format's natural one under output.dir. */
static qt_status export_jobs(const qt_recipe *r, const char *p, const ptq_recipe *pr,
                             export_job *jobs, int *n) {
    const char *paths[QT_EXPORT_COUNT] = {0};
    paths[QT_EXPORT_GGUF] = r->export.gguf;
    paths[QT_EXPORT_GPTQ] = r->export.gptq;
    paths[QT_EXPORT_AWQ] = r->export.awq;
    paths[QT_EXPORT_BNB_NF4] = r->export.bnb_nf4;
    paths[QT_EXPORT_FP8] = r->export.fp8;
    *n = 0;
    if (!r->export.write) return QT_OK; /* quantize and compare only */
    for (int f = 0; f < QT_EXPORT_COUNT; f++)
        if (paths[f][0]) {
            jobs[*n].f = (qt_export_format)f;
            snprintf(jobs[*n].path, sizeof jobs[*n].path, "%s", paths[f]);
            (*n)++;
        }
    if (*n) return QT_OK;
    const qt_qformat *q = &pr->pc.fmt;
    int f = q->kind == QT_QF_GGUF                     ? QT_EXPORT_GGUF
            : q->kind == QT_QF_NF4                    ? QT_EXPORT_BNB_NF4
            : q->kind == QT_QF_FP8_E4M3               ? QT_EXPORT_FP8
            : q->kind == QT_QF_INT && pr->pc.method == QT_PTQ_AWQ ? QT_EXPORT_AWQ
            : q->kind == QT_QF_INT                    ? QT_EXPORT_GPTQ
                                                      : -1;
    if (f < 0)
        return QT_ERROR(QT_EINVAL, "%s: no exporter writes %s; set one of export.gguf, "
                                   "export.gptq, export.awq, export.bnb_nf4, export.fp8",
                        p, r->quantize.fmt.format);
    jobs[0].f = (qt_export_format)f;
    snprintf(jobs[0].path, sizeof jobs[0].path, "%s/model%s%s", r->output.dir,
             f == QT_EXPORT_GGUF ? "" : "-", f == QT_EXPORT_GGUF ? ".gguf" : qt_export_format_name(jobs[0].f));
    *n = 1;
    return QT_OK;
}

/* mkdir -p of path's parent directory, so an export can be renamed into place there */
static qt_status make_parent(const char *path) {
    char buf[QT_PATH_MAX + 64];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf) return QT_OK;
    *slash = 0;
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return QT_ERROR(QT_EIO, "%s: cannot create directory %s: %s", path, buf,
                                strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return QT_OK;
}

static char *recipe_text(const qt_recipe *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    qt_recipe_write(f, r);
    fclose(f);
    return buf;
}

/* Before a long GPTQ/AWQ run: would every export take the format, the layer shapes and
 * (act-order) the permutation? A stand-in quantized model with no codes is checked; what
 * only the codes can tell (a zero point of 0 in GPTQ v1) is checked again after. */
static qt_status dry_check(qt_model *m, const ptq_recipe *pr, const export_job *jobs, int n) {
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

static void opts_from_recipe(const qt_recipe *r, const qt_tokenizer *tok, qt_export_opts *o) {
    qt_export_opts_defaults(o);
    o->version = QT_VERSION_STR;
    o->tok = tok;
    o->gguf_float = !strcmp(r->export.gguf_float, "f16") ? QT_GGML_F16 : QT_GGML_F32;
    o->st_float = !strcmp(r->export.st_float, "f32")    ? QT_F32
                  : !strcmp(r->export.st_float, "bf16") ? QT_BF16
                                                        : QT_F16;
    const char *tk = r->data.tokenizer;
    size_t n = strlen(tk);
    if (n > 5 && !strcmp(tk + n - 5, ".json")) o->tokenizer_json = tk;
}

/* model.from a LoRA run's checkpoint: desc gets "LoRA r 4 on the float base" (the model
 * qt_recipe_model builds from it has the adapter merged in), else "". */
static void lora_of(const char *from, char *desc, size_t n) {
    desc[0] = 0;
    size_t len = strlen(from);
    if (len < 4 || strcmp(from + len - 3, ".h5")) return;
    char *text = NULL;
    qt_recipe r;
    qt_recipe_defaults(&r);
    if (qt_checkpoint_recipe(from, &text) == QT_OK && qt_recipe_load_string(from, text, &r) == QT_OK &&
        qt_recipe_has_lora(&r))
        snprintf(desc, n, "LoRA r %d on the %s base", r.lora.rank,
                 qt_recipe_has_qat(&r) ? "fake-quantized" : r.lora.base);
    free(text);
}

/* The comparison's reference, when it is an adapter model merged. */
static void print_reference(const char *cmd, const char *lora) {
    if (lora[0]) printf("qtrain %s: reference: the merged adapter model (%s)\n", cmd, lora);
}

/* Loads the export at `path` and reports it against ref. */
static int compare_file(const char *cmd, qt_model *ref, const char *path, const int32_t *ids,
                        long n, long context, long stride) {
    qt_model cand;
    qt_status st = qt_export_load(&cand, path);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain %s: reading back %s: %s\n", cmd, path, qt_error_message());
        return qt_cli_exit_code(st);
    }
    qt_compare_result res;
    st = qt_compare_models(ref, &cand, ids, n, context, stride, &res);
    qt_model_free(&cand);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain %s: compare %s: %s\n", cmd, path, qt_error_message());
        return qt_cli_exit_code(st);
    }
    char label[QT_PATH_MAX + 64];
    snprintf(label, sizeof label, "qtrain %s: compare %s", cmd, path);
    qt_compare_print(stdout, label, &res);
    return 0;
}

static void quantize_usage(FILE *f) {
    fprintf(f, "usage: qtrain quantize RECIPE.yaml [--set key=value ...]\n"
               "  post-training quantization of model.from as the recipe's quantize: section\n"
               "  says (rtn | gptq | awq, calibrated on data.train), written to every export:\n"
               "  path (default: the format's natural file under output.dir), each read back\n"
               "  and compared with the float model (perplexity, KL divergence, top-1).\n"
               "  Keys: qtrain train --keys (quantize.*, export.*)\n");
}

int qt_cmd_quantize(int argc, char **argv) {
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        quantize_usage(stdout);
        return 0;
    }
    if (argc < 1 || argv[0][0] == '-') {
        quantize_usage(stderr);
        return 2;
    }
    const char *path = argv[0];
    qt_recipe r;
    qt_recipe_defaults(&r);
    qt_status st = qt_recipe_load(path, &r);
    for (int i = 1; st == QT_OK && i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            st = qt_recipe_set(&r, argv[++i]);
        } else {
            fprintf(stderr, "qtrain quantize: unexpected argument '%s'\n", argv[i]);
            quantize_usage(stderr);
            return 2;
        }
    }
    if (st == QT_OK) st = qt_recipe_validate(&r, path);
    if (st == QT_OK && !r.model.from[0])
        st = QT_ERROR(QT_EINVAL, "%s: model.from must name the model to quantize (a qtrain "
                                 "checkpoint, an HF directory or a GGUF file)", path);
    ptq_recipe pr;
    export_job jobs[QT_EXPORT_COUNT];
    int n_jobs = 0;
    if (st == QT_OK) st = ptq_from_recipe(&r, path, &pr);
    if (st == QT_OK) st = export_jobs(&r, path, &pr, jobs, &n_jobs);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain quantize: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    if (r.train.threads > 0) qt_set_num_threads(r.train.threads);
    double t0 = qt_now_s();
    qt_model model;
    qt_tokenizer *tok = NULL;
    st = qt_recipe_model(&r, &model, &tok);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain quantize: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    /* calibration from the training part of data.train (or quantize.calibration.data),
     * the comparison on its validation part (or quantize.compare_data) */
    const char *cpath = r.quantize.calibration.data[0] ? r.quantize.calibration.data : r.data.train;
    bool own = r.quantize.calibration.data[0] != 0;
    qt_dataset ds = {0};
    qt_calib cal = {0};
    qt_dataset_config dc = {.path = cpath, .format = QT_DATA_AUTO, .tok = tok,
                            .seq_len = r.quantize.calibration.seq_len,
                            .val_fraction = own ? 0.0f : r.data.val_fraction,
                            .seed = (uint64_t)r.train.seed, .cache_dir = NULL};
    bool need_cal = pr.pc.method != QT_PTQ_RTN;
    bool need_val = r.quantize.compare && !r.quantize.compare_data[0];
    if (need_cal || need_val) st = qt_dataset_open(&ds, &dc);
    if (st == QT_OK && need_cal)
        st = qt_calib_sample(ds.tokens, own ? ds.n_tokens : ds.val_start,
                             r.quantize.calibration.samples, r.quantize.calibration.seq_len,
                             (uint64_t)r.quantize.calibration.seed, cpath, &cal);
    if (st == QT_OK && pr.pc.method != QT_PTQ_RTN) st = dry_check(&model, &pr, jobs, n_jobs);
    qt_qmodel qm = {0};
    char fs[96];
    if (st == QT_OK) {
        printf("qtrain quantize %s: %s %s of %s%s\n", r.name, r.quantize.method,
               qt_qformat_str(&pr.pc.fmt, fs, sizeof fs), r.model.from,
               need_cal ? "" : " (no calibration)");
        if (need_cal)
            printf("qtrain quantize: calibration %lld x %lld tokens from %s\n", (long long)cal.n,
                   (long long)cal.len, cpath);
        fflush(stdout);
        st = qt_ptq_run(&model, &pr.pc, need_cal ? &cal : NULL, stdout, &qm);
    }
    if (st == QT_OK) {
        qm.recipe = recipe_text(&r);
        if (need_cal) qt_calib_hash(&cal, qm.calib_hash);
        printf("qtrain quantize: %d weights quantized in %.1f s\n", qm.n, qt_now_s() - t0);
        for (int j = 0; j < n_jobs && st == QT_OK; j++) st = qt_export_check(&qm, jobs[j].f);
    }
    qt_export_opts o;
    opts_from_recipe(&r, tok, &o);
    for (int j = 0; j < n_jobs && st == QT_OK; j++) {
        st = make_parent(jobs[j].path);
        if (st == QT_OK) st = qt_export(&qm, jobs[j].f, &o, jobs[j].path);
        if (st == QT_OK) printf("qtrain quantize: wrote %s (%s)\n", jobs[j].path,
                                qt_export_format_name(jobs[j].f));
    }
    qt_calib_free(&cal);
    qt_qmodel_free(&qm);
    int rc = 0;
    if (st != QT_OK) {
        fprintf(stderr, "qtrain quantize: %s\n", qt_error_message());
        rc = qt_cli_exit_code(st);
    }
    if (rc == 0 && r.quantize.compare) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (r.quantize.compare_data[0]) {
            rc = qt_cli_read_tokens("quantize", r.quantize.compare_data, tok, &ids, &n);
        } else {
            /* the validation part of data.train (the calibration text, when it is another
             * file, was opened whole) */
            qt_dataset vs = {0};
            qt_dataset *v = &ds;
            if (own) {
                qt_dataset_config vc = dc;
                vc.path = r.data.train;
                vc.val_fraction = r.data.val_fraction;
                st = qt_dataset_open(&vs, &vc);
                v = &vs;
            }
            n = st == QT_OK ? (size_t)(v->n_tokens - v->val_start) : 0;
            if (st == QT_OK && n < 2)
                st = QT_ERROR(QT_EINVAL, "%s: data.train (%s) has no validation part to compare "
                                         "on (data.val_fraction %g); set quantize.compare_data",
                              path, r.data.train, (double)r.data.val_fraction);
            if (st == QT_OK && !(ids = malloc(n * sizeof *ids)))
                st = QT_ERROR(QT_ENOMEM, "quantize: out of memory");
            if (st == QT_OK) memcpy(ids, v->tokens + v->val_start, n * sizeof *ids);
            if (own) qt_dataset_close(&vs);
            if (st != QT_OK) {
                fprintf(stderr, "qtrain quantize: %s (the files are written)\n", qt_error_message());
                rc = qt_cli_exit_code(st);
            }
        }
        qt_model ref;
        qt_tokenizer *tok2 = NULL;
        if (rc == 0 && (st = qt_recipe_model(&r, &ref, &tok2)) != QT_OK) {
            fprintf(stderr, "qtrain quantize: %s\n", qt_error_message());
            rc = qt_cli_exit_code(st);
        }
        if (rc == 0) {
            /* quantize.compare_context, else data.seq_len, within the model's context */
            long context = r.quantize.compare_context ? r.quantize.compare_context : r.data.seq_len;
            if (qt_model_context(&ref) > 0 && context > qt_model_context(&ref))
                context = qt_model_context(&ref);
            long stride = context / 2 ? context / 2 : 1;
            char lora[160];
            lora_of(r.model.from, lora, sizeof lora);
            print_reference("quantize", lora);
            for (int j = 0; j < n_jobs && rc == 0; j++)
                rc = compare_file("quantize", &ref, jobs[j].path, ids, (long)n, context, stride);
            if (n_jobs == 0) { /* export.write false: the quantized model in memory */
                qt_compare_result res;
                st = qt_compare_models(&ref, &model, ids, (long)n, context, stride, &res);
                if (st == QT_OK) qt_compare_print(stdout, "qtrain quantize: compare (in memory, not written)", &res);
                else {
                    fprintf(stderr, "qtrain quantize: %s\n", qt_error_message());
                    rc = qt_cli_exit_code(st);
                }
            }
            qt_model_free(&ref);
            qt_tokenizer_free(tok2);
        }
        free(ids);
    }
    qt_model_free(&model);
    qt_dataset_close(&ds);
    qt_tokenizer_free(tok);
    return rc;
}

/* ------------------------------------------------------------------- export ---- */

static void export_usage(FILE *f) {
    fprintf(f,
            "usage: qtrain export MODEL --format gguf|gptq|awq|bnb-nf4|fp8|hf --out PATH\n"
            "                     [--quant FORMAT] [--data FILE] [--no-compare]\n"
            "                     [--merge ADAPTER_DIR [--nf4]] [--no-merge]\n"
            "  MODEL: a qtrain checkpoint (.h5), an HF directory or a GGUF file. A LoRA\n"
            "  run's checkpoint is exported with its adapter merged in (QLoRA: into the\n"
            "  dequantized NF4 base); --no-merge exports its frozen base instead.\n"
            "  --merge ADAPTER_DIR merges a PEFT adapter (adapter_config.json and\n"
            "  adapter_model.safetensors) into MODEL first; --nf4 merges it into MODEL's\n"
            "  NF4-dequantized weights, the base a QLoRA adapter was trained against.\n"
            "  A checkpoint trained with QAT is exported as trained: its weights quantized by\n"
            "  the same quantizer its fake-quant used (bit for bit). Any other model is\n"
            "  rounded to nearest in FORMAT (default: gguf q8_0, gptq int4 g128 symmetric,\n"
            "  awq int4 g128 asymmetric, bnb-nf4 nf4 b64 double-quant, fp8 fp8_e4m3 per channel).\n"
            "  --format hf writes the float weights (f32) as an HF checkpoint instead.\n"
            "  The file is then read back and compared with MODEL on FILE (default: the\n"
            "  validation part of a checkpoint's data.train; --no-compare skips it).\n");
}

/* Loads MODEL for export (a LoRA checkpoint merged unless no_merge), then merges the
 * PEFT adapter `adapter` into it (nf4: into its NF4-dequantized weights). */
static int load_for_export(const char *model, const char *adapter, bool nf4, bool no_merge,
                           qt_cli_model *t) {
    if (adapter) { /* before the model loads: a bad --merge fails fast, naming the dir */
        char cfg[QT_PATH_MAX + 32];
        snprintf(cfg, sizeof cfg, "%s/adapter_config.json", adapter);
        struct stat sb;
        if (stat(cfg, &sb) != 0) {
            fprintf(stderr, "qtrain export: --merge %s: not a PEFT adapter directory (no "
                            "adapter_config.json: %s)\n", adapter, strerror(errno));
            return 2;
        }
    }
    int rc = qt_cli_load_as("export", model, NULL, !no_merge, t);
    if (rc || !adapter) return rc;
    qt_lora *l = NULL;
    qt_status st = qt_lora_load_peft(&l, &t->m, adapter, nf4);
    if (st == QT_OK) st = qt_lora_merge(l);
    if (st == QT_OK) {
        char was[64]; /* the checkpoint's own, "LoRA r 4 on the float base" */
        snprintf(was, sizeof was, "%.63s", t->lora);
        snprintf(t->lora, sizeof t->lora, "%s%sPEFT adapter %s, LoRA r %d on the %s base", was,
                 was[0] ? " + " : "", adapter, l->cfg.rank, nf4 ? "nf4" : "float");
        fprintf(stderr, "qtrain export: merged %s into %s (LoRA r %d, %d layers, %s base)\n",
                adapter, model, l->cfg.rank, l->n, nf4 ? "nf4" : "float");
    }
    qt_lora_free(l); /* the merged weights stay in the model */
    if (st != QT_OK) {
        fprintf(stderr, "qtrain export: --merge %s: %s\n", adapter, qt_error_message());
        qt_cli_model_free(t);
        return qt_cli_exit_code(st);
    }
    return 0;
}

int qt_cmd_export(int argc, char **argv) {
    const char *model = NULL, *fmt_name = NULL, *out = NULL, *quant = NULL, *data = NULL;
    const char *adapter = NULL;
    bool compare = true, nf4 = false, no_merge = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            export_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--format") && i + 1 < argc) fmt_name = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--quant") && i + 1 < argc) quant = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--no-compare")) compare = false;
        else if (!strcmp(argv[i], "--merge") && i + 1 < argc) adapter = argv[++i];
        else if (!strcmp(argv[i], "--nf4")) nf4 = true;
        else if (!strcmp(argv[i], "--no-merge")) no_merge = true;
        else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "qtrain export: unexpected argument '%s'\n", argv[i]);
            export_usage(stderr);
            return 2;
        }
    }
    if (!model || !fmt_name || !out) {
        export_usage(stderr);
        return 2;
    }
    if (nf4 && !adapter) {
        fprintf(stderr, "qtrain export: --nf4 applies to --merge ADAPTER_DIR\n");
        return 2;
    }
    if (!strcmp(fmt_name, "hf")) { /* the float weights as an HF checkpoint */
        if (quant) {
            fprintf(stderr, "qtrain export: --format hf writes float weights; --quant does not apply\n");
            return 2;
        }
        qt_cli_model t;
        int rc = load_for_export(model, adapter, nf4, no_merge, &t);
        if (rc) return rc;
        qt_status st = make_parent(out);
        if (st == QT_OK) st = qt_model_save_hf(&t.m, out, QT_F32);
        qt_cli_model_free(&t);
        if (st != QT_OK) {
            fprintf(stderr, "qtrain export: %s\n", qt_error_message());
            return qt_cli_exit_code(st);
        }
        printf("qtrain export: wrote %s (hf, f32)\n", out);
        return 0;
    }
    qt_export_format ef;
    qt_qformat qf;
    qt_status st = qt_export_format_parse(fmt_name, &ef);
    if (st == QT_OK) {
        qt_export_default_qformat(ef, &qf);
        if (quant) {
            qt_qformat parsed;
            st = qt_qformat_parse(quant, &parsed);
            if (st == QT_OK && parsed.kind == qf.kind && parsed.kind == QT_QF_INT) {
                qf.bits = parsed.bits; /* keep the exporter's grouping and scale dtype */
            } else if (st == QT_OK) {
                qf = parsed;
            }
            if (st != QT_OK) {
                char why[512];
                snprintf(why, sizeof why, "%s", qt_error_message());
                st = QT_ERROR(QT_EINVAL, "--quant: %s", why);
            }
        }
    }
    if (st != QT_OK) {
        fprintf(stderr, "qtrain export: %s\n", qt_error_message());
        return 2;
    }
    qt_cli_model t;
    int rc = load_for_export(model, adapter, nf4, no_merge, &t);
    if (rc) return rc;
    bool from_qat = t.qat != NULL;
    if (from_qat && quant) {
        fprintf(stderr, "qtrain export: %s was trained with QAT and exports in its own format; "
                        "--quant does not apply\n", model);
        qt_cli_model_free(&t);
        return 2;
    }
    qt_qmodel qm = {0};
    if (from_qat) {
        qt_qat_converted *cv = NULL;
        int n = 0;
        int with_act = 0;
        qt_qat_count(t.qat, &with_act);
        if (with_act)
            fprintf(stderr, "qtrain export: note: %s fake-quantizes activations in %d layers; "
                            "the exported file holds the weights, the runtime chooses how it "
                            "quantizes activations\n", model, with_act);
        st = qt_qat_convert(t.qat, &cv, &n);
        qt_qmodel_init(&qm, &t.m, "qat");
        for (int i = 0; i < n && st == QT_OK; i++) st = qt_qmodel_add(&qm, cv[i].name, &cv[i].q, NULL);
        qt_qat_converted_free(cv, n);
    } else {
        qt_ptq_config pc;
        qt_ptq_config_defaults(&pc, QT_PTQ_RTN);
        pc.fmt = qf;
        st = qt_ptq_run(&t.m, &pc, NULL, NULL, &qm);
    }
    if (st == QT_OK) {
        qm.recipe = t.path ? recipe_text(&t.r) : NULL;
        st = qt_export_check(&qm, ef);
    }
    qt_export_opts o;
    opts_from_recipe(&t.r, t.tok, &o);
    if (st == QT_OK) st = make_parent(out);
    if (st == QT_OK) st = qt_export(&qm, ef, &o, out);
    char fs[96] = "";
    if (qm.n) qt_qformat_str(&qm.layers[0].q.fmt, fs, sizeof fs);
    int nq = qm.n;
    qt_qmodel_free(&qm);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain export: %s\n", qt_error_message());
        qt_cli_model_free(&t);
        return qt_cli_exit_code(st);
    }
    printf("qtrain export: wrote %s (%s, %d weights %s%s)\n", out, qt_export_format_name(ef), nq,
           fs, from_qat ? ", converted from QAT" : ", round to nearest");
    /* the comparison: the model as loaded (QAT: fake-quant on) against the file */
    const char *dpath = data;
    bool split = !data && t.path && t.r.data.train[0];
    if (!compare || (!dpath && !split)) {
        if (compare) printf("qtrain export: no --data: comparison skipped\n");
        qt_cli_model_free(&t);
        return 0;
    }
    qt_cli_model ref;
    rc = load_for_export(model, adapter, nf4, no_merge, &ref);
    qt_cli_model_free(&t);
    if (rc) return rc;
    int32_t *ids = NULL;
    size_t n = 0;
    if (dpath) {
        rc = qt_cli_read_tokens("export", dpath, ref.tok, &ids, &n);
    } else {
        qt_dataset ds = {0};
        qt_dataset_config dc = {.path = ref.r.data.train, .format = QT_DATA_AUTO, .tok = ref.tok,
                                .seq_len = ref.r.data.seq_len, .val_fraction = ref.r.data.val_fraction,
                                .seed = (uint64_t)ref.r.train.seed};
        st = qt_dataset_open(&ds, &dc);
        if (st == QT_OK) {
            n = (size_t)(ds.n_tokens - ds.val_start);
            ids = malloc(n * sizeof *ids);
            if (ids) memcpy(ids, ds.tokens + ds.val_start, n * sizeof *ids);
            qt_dataset_close(&ds);
            printf("qtrain export: comparing on the validation part of %s\n", ref.r.data.train);
        } else {
            fprintf(stderr, "qtrain export: %s (pass --data FILE)\n", qt_error_message());
            rc = qt_cli_exit_code(st);
        }
    }
    if (rc == 0 && ids && n < 2) {
        printf("qtrain export: no validation text: comparison skipped (pass --data FILE)\n");
    } else if (rc == 0 && ids) {
        /* the checkpoint's training window, or at most 2048 tokens of the model's context */
        long context = qt_model_context(&ref.m);
        long cap = ref.path ? ref.r.data.seq_len : 2048;
        if (context <= 0 || context > cap) context = cap;
        long stride = context / 2 ? context / 2 : 1;
        print_reference("export", ref.lora);
        rc = compare_file("export", &ref.m, out, ids, (long)n, context, stride);
    }
    free(ids);
    qt_cli_model_free(&ref);
    return rc;
}

/* ------------------------------------------------------------------ compare ---- */

int qt_cmd_compare(int argc, char **argv) {
    const char *ref = NULL, *cand = NULL, *data = NULL;
    long context = 0, stride = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain compare REFERENCE CANDIDATE --data FILE [--context N] "
                   "[--stride S]\n"
                   "  perplexity of both models on FILE (the windows of qtrain eval; context\n"
                   "  default: the model's, at most 2048), the KL\n"
                   "  divergence of CANDIDATE's next-token distribution from REFERENCE's (mean,\n"
                   "  99th percentile, max) and how often their top-1 tokens agree. Text is\n"
                   "  tokenized with REFERENCE's tokenizer. A model is a qtrain checkpoint (QAT\n"
                   "  ones with their fake-quant on), an HF directory (quantized exports too) or\n"
                   "  a GGUF file.\n");
            return 0;
        }
        long *dst = !strcmp(argv[i], "--context") ? &context : !strcmp(argv[i], "--stride") ? &stride : NULL;
        if (dst) {
            if (i + 1 >= argc || !qt_cli_parse_long(argv[i + 1], dst) || *dst < 1) {
                fprintf(stderr, "qtrain compare: %s needs an integer >= 1\n", argv[i]);
                return 2;
            }
            i++;
        } else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (argv[i][0] != '-' && !ref) ref = argv[i];
        else if (argv[i][0] != '-' && !cand) cand = argv[i];
        else {
            fprintf(stderr, "qtrain compare: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!ref || !cand || !data) {
        fprintf(stderr, "usage: qtrain compare REFERENCE CANDIDATE --data FILE [--context N] "
                        "[--stride S]\n");
        return 2;
    }
    qt_cli_model a, b;
    int rc = qt_cli_load("compare", ref, NULL, &a);
    if (rc) return rc;
    rc = qt_cli_load("compare", cand, NULL, &b);
    if (rc) {
        qt_cli_model_free(&a);
        return rc;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    rc = qt_cli_read_tokens("compare", data, a.tok, &ids, &n);
    if (!context) { /* the model's context, at most 2048 (logits of a window are held) */
        context = qt_model_context(&a.m);
        if (context <= 0 || context > 2048) context = 2048;
    }
    if (!stride) stride = context / 2 ? context / 2 : 1;
    if (rc == 0 && stride > context) {
        fprintf(stderr, "qtrain compare: --stride (%ld) must not exceed --context (%ld)\n", stride,
                context);
        rc = 2;
    }
    if (rc == 0) {
        qt_compare_result res;
        qt_status st = qt_compare_models(&a.m, &b.m, ids, (long)n, context, stride, &res);
        if (st != QT_OK) {
            fprintf(stderr, "qtrain compare: %s\n", qt_error_message());
            rc = qt_cli_exit_code(st);
        } else {
            printf("qtrain compare: reference %s, candidate %s, on %s (context %ld, stride %ld)\n",
                   ref, cand, data, context, stride);
            qt_compare_print(stdout, "qtrain compare", &res);
        }
    }
    free(ids);
    qt_cli_model_free(&a);
    qt_cli_model_free(&b);
    return rc;
}
