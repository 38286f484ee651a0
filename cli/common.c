/*
 * common.c - what the verbs share: flag parsing, exit codes, printing a failure, the
 * library log on stderr, loading a model and reading a text with the reason printed, and
 * the parity report's line.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

bool qt_cli_parse_long(const char *s, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool qt_cli_flag_long(const char *cmd, const char *flag, const char *v, long lo, long *out) {
    if (!v || !qt_cli_parse_long(v, out) || *out < lo) {
        fprintf(stderr, "qtrain %s: %s needs an integer >= %ld, got '%s'\n", cmd, flag, lo,
                v ? v : "");
        return false;
    }
    return true;
}

bool qt_cli_flag_float(const char *cmd, const char *flag, const char *v, float *out) {
    char *end = NULL;
    double d = v ? strtod(v, &end) : 0;
    if (!v || !*v || *end || !(d > 0) || !isfinite(d)) {
        fprintf(stderr, "qtrain %s: %s needs a positive number, got '%s'\n", cmd, flag, v ? v : "");
        return false;
    }
    *out = (float)d;
    return true;
}

int qt_cli_exit_code(qt_status st) {
    switch (st) {
    case QT_OK: return 0;
    case QT_EINVAL:
    case QT_EFORMAT:
    case QT_ESHAPE:
    case QT_EDTYPE:
    case QT_ENOTSUP:
    case QT_EIO: return 2; /* bad usage or bad input: the message names it */
    default: return 1;
    }
}

int qt_cli_fail(const char *cmd, qt_status st) {
    fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
    return qt_cli_exit_code(st);
}

static void log_to_stderr(void *user, qt_log_level level, const char *msg) {
    if (level == QT_LOG_DEBUG) return;
    if (level >= QT_LOG_WARN) fprintf(stderr, "qtrain %s: %s\n", (const char *)user, msg);
    else fprintf(stderr, "%s\n", msg);
}

void qt_cli_log_to_stderr(const char *cmd) { qt_log_set(log_to_stderr, (void *)cmd); }

int qt_cli_open(const char *cmd, const qt_model_source *src, qt_loaded_model *lm) {
    qt_status st = qt_model_open(src, lm);
    return st == QT_OK ? 0 : qt_cli_fail(cmd, st);
}

int qt_cli_read_tokens(const char *cmd, const char *path, const qt_tokenizer *tok,
                       int32_t **ids, size_t *n) {
    qt_status st = qt_read_tokens(path, tok, ids, n);
    if (st == QT_OK) return 0;
    fprintf(stderr, "qtrain %s: %s\n", cmd, qt_error_message());
    return st == QT_ENOMEM ? 1 : 2;
}

void qt_cli_print_compare(const char *label, const qt_compare_result *r) {
    printf("%s: %ld tokens: perplexity reference %.4f, candidate %.4f (%+.2f%%); KL divergence "
           "mean %.6f, p99 %.6f, max %.6f; top-1 agreement %.2f%%\n",
           label, r->tokens, r->ppl_ref, r->ppl_cand, 100.0 * (r->ppl_cand / r->ppl_ref - 1.0),
           r->kld_mean, r->kld_p99, r->kld_max, 100.0 * r->top1);
}

void qt_cli_print_reference(const char *cmd, const char *lora) {
    if (lora[0]) printf("qtrain %s: reference: the merged adapter model (%s)\n", cmd, lora);
}

int qt_cli_compare_file(const char *cmd, qt_model *ref, const char *path, const int32_t *ids,
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
    qt_cli_print_compare(label, &res);
    return 0;
}
