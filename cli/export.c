/*
 * export.c - `qtrain export MODEL --format F --out PATH`: a QAT checkpoint exported bit
 * for bit as trained, a float one rounded to nearest in the exporter's format (or its
 * float weights as an HF checkpoint), a PEFT adapter merged in first on request; then
 * the file read back and compared with MODEL.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "qt_lora.h"

#ifndef QT_VERSION_STR
#define QT_VERSION_STR "0.1.0"
#endif

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
                           qt_loaded_model *t) {
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
    qt_model_source src = {.path = model, .qat = true, .keep_lora_base = no_merge};
    int rc = qt_cli_open("export", &src, t);
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
        qt_model_close(t);
        return qt_cli_exit_code(st);
    }
    return 0;
}

typedef struct {
    const char *model, *fmt_name, *out, *quant, *data, *adapter;
    bool compare, nf4, no_merge;
} export_args;

/* Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, export_args *a) {
    *a = (export_args){.compare = true};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            export_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--format") && i + 1 < argc) a->fmt_name = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) a->out = argv[++i];
        else if (!strcmp(argv[i], "--quant") && i + 1 < argc) a->quant = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) a->data = argv[++i];
        else if (!strcmp(argv[i], "--no-compare")) a->compare = false;
        else if (!strcmp(argv[i], "--merge") && i + 1 < argc) a->adapter = argv[++i];
        else if (!strcmp(argv[i], "--nf4")) a->nf4 = true;
        else if (!strcmp(argv[i], "--no-merge")) a->no_merge = true;
        else if (argv[i][0] != '-' && !a->model) a->model = argv[i];
        else {
            fprintf(stderr, "qtrain export: unexpected argument '%s'\n", argv[i]);
            export_usage(stderr);
            return 2;
        }
    }
    if (!a->model || !a->fmt_name || !a->out) {
        export_usage(stderr);
        return 2;
    }
    if (a->nf4 && !a->adapter) {
        fprintf(stderr, "qtrain export: --nf4 applies to --merge ADAPTER_DIR\n");
        return 2;
    }
    return -1;
}

/* --format hf: the float weights as an HF checkpoint. */
static int export_hf(const export_args *a) {
    if (a->quant) {
        fprintf(stderr, "qtrain export: --format hf writes float weights; --quant does not apply\n");
        return 2;
    }
    qt_loaded_model t;
    int rc = load_for_export(a->model, a->adapter, a->nf4, a->no_merge, &t);
    if (rc) return rc;
    qt_status st = qt_make_parent_dirs(a->out);
    if (st == QT_OK) st = qt_model_save_hf(&t.m, a->out, QT_F32);
    qt_model_close(&t);
    if (st != QT_OK) return qt_cli_fail("export", st);
    printf("qtrain export: wrote %s (hf, f32)\n", a->out);
    return 0;
}

/* The exporter and the format a float model is rounded to: the exporter's default, or
 * --quant (an int width keeps the exporter's grouping and scale dtype). */
static qt_status export_format(const export_args *a, qt_export_format *ef, qt_qformat *qf) {
    qt_status st = qt_export_format_parse(a->fmt_name, ef);
    if (st != QT_OK) return st;
    qt_export_default_qformat(*ef, qf);
    if (!a->quant) return QT_OK;
    qt_qformat parsed;
    st = qt_qformat_parse(a->quant, &parsed);
    if (st != QT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_ERROR(QT_EINVAL, "--quant: %s", why);
    }
    if (parsed.kind == qf->kind && parsed.kind == QT_QF_INT) qf->bits = parsed.bits;
    else *qf = parsed;
    return QT_OK;
}

/* The weights quantized: a QAT model converted by the quantizer its fake-quant used (bit
 * for bit as trained), any other rounded to nearest in qf. */
static qt_status quantize_weights(const export_args *a, qt_loaded_model *t, const qt_qformat *qf,
                                  qt_qmodel *qm) {
    qt_status st;
    if (t->qat) {
        qt_qat_converted *cv = NULL;
        int n = 0, with_act = 0;
        qt_qat_count(t->qat, &with_act);
        if (with_act)
            fprintf(stderr, "qtrain export: note: %s fake-quantizes activations in %d layers; "
                            "the exported file holds the weights, the runtime chooses how it "
                            "quantizes activations\n", a->model, with_act);
        st = qt_qat_convert(t->qat, &cv, &n);
        qt_qmodel_init(qm, &t->m, "qat");
        for (int i = 0; i < n && st == QT_OK; i++) st = qt_qmodel_add(qm, cv[i].name, &cv[i].q, NULL);
        qt_qat_converted_free(cv, n);
    } else {
        qt_ptq_config pc;
        qt_ptq_config_defaults(&pc, QT_PTQ_RTN);
        pc.fmt = *qf;
        st = qt_ptq_run(&t->m, &pc, NULL, NULL, qm);
    }
    if (st == QT_OK) qm->recipe = t->checkpoint[0] ? qt_recipe_text(&t->r) : NULL;
    return st;
}

/* The comparison: MODEL as loaded (QAT: fake-quant on) against the file, on --data or
 * the validation part of a checkpoint's data.train. The exit code. */
static int compare_export(const export_args *a) {
    qt_loaded_model ref;
    int rc = load_for_export(a->model, a->adapter, a->nf4, a->no_merge, &ref);
    if (rc) return rc;
    int32_t *ids = NULL;
    size_t n = 0;
    if (a->data) {
        rc = qt_cli_read_tokens("export", a->data, ref.tok, &ids, &n);
    } else {
        qt_dataset ds = {0};
        qt_dataset_config dc = {.path = ref.r.data.train, .format = QT_DATA_AUTO, .tok = ref.tok,
                                .seq_len = ref.r.data.seq_len, .val_fraction = ref.r.data.val_fraction,
                                .seed = (uint64_t)ref.r.train.seed};
        qt_status st = qt_dataset_open(&ds, &dc);
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
        long cap = ref.checkpoint[0] ? ref.r.data.seq_len : 2048;
        if (context <= 0 || context > cap) context = cap;
        long stride = context / 2 ? context / 2 : 1;
        qt_cli_print_reference("export", ref.lora);
        rc = qt_cli_compare_file("export", &ref.m, a->out, ids, (long)n, context, stride);
    }
    free(ids);
    qt_model_close(&ref);
    return rc;
}

int qt_cmd_export(int argc, char **argv) {
    export_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (!strcmp(a.fmt_name, "hf")) return export_hf(&a);
    qt_export_format ef;
    qt_qformat qf;
    qt_status st = export_format(&a, &ef, &qf);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain export: %s\n", qt_error_message());
        return 2;
    }
    qt_loaded_model t;
    rc = load_for_export(a.model, a.adapter, a.nf4, a.no_merge, &t);
    if (rc) return rc;
    bool from_qat = t.qat != NULL;
    if (from_qat && a.quant) {
        fprintf(stderr, "qtrain export: %s was trained with QAT and exports in its own format; "
                        "--quant does not apply\n", a.model);
        qt_model_close(&t);
        return 2;
    }
    qt_qmodel qm = {0};
    st = quantize_weights(&a, &t, &qf, &qm);
    if (st == QT_OK) st = qt_export_check(&qm, ef);
    qt_export_opts o;
    qt_recipe_export_opts(&t.r, t.tok, &o);
    o.version = QT_VERSION_STR;
    if (st == QT_OK) st = qt_make_parent_dirs(a.out);
    if (st == QT_OK) st = qt_export(&qm, ef, &o, a.out);
    char fs[96] = "";
    if (qm.n) qt_qformat_str(&qm.layers[0].q.fmt, fs, sizeof fs);
    int nq = qm.n;
    qt_qmodel_free(&qm);
    bool split = !a.data && t.checkpoint[0] && t.r.data.train[0];
    qt_model_close(&t);
    if (st != QT_OK) return qt_cli_fail("export", st);
    printf("qtrain export: wrote %s (%s, %d weights %s%s)\n", a.out, qt_export_format_name(ef), nq,
           fs, from_qat ? ", converted from QAT" : ", round to nearest");
    if (!a.compare || (!a.data && !split)) {
        if (a.compare) printf("qtrain export: no --data: comparison skipped\n");
        return 0;
    }
    return compare_export(&a);
}
