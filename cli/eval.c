/*
 * eval.c - `qtrain eval MODEL --data FILE`: perplexity per token of a text by the
 * standard sliding windows (qt_eval_perplexity), a QAT checkpoint quantized as trained
 * (fake-quant, or --convert: its weights quantized for real), any model through another
 * recipe's qat: section with --qat.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int qt_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *qat_recipe = NULL;
    long context = 0, stride = 0;
    bool convert = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain eval MODEL --data FILE [--context N] [--stride S] [--qat RECIPE]\n"
                   "                  [--convert]\n"
                   "  MODEL: a qtrain checkpoint (.h5), an HF directory or a GGUF file\n"
                   "  perplexity per token of FILE by sliding windows of N tokens (default the\n"
                   "  model's max_seq_len) advancing S tokens (default N/2)\n"
                   "  A checkpoint trained with QAT is evaluated quantized (its fake-quant on).\n"
                   "  --qat RECIPE: fake-quant as RECIPE's qat: section says instead (on a float\n"
                   "    model: round-to-nearest PTQ in that format)\n"
                   "  --convert: quantize the weights for real through the quantizer and evaluate\n"
                   "    their dequantized values (what an export holds); equals the fake-quant\n"
                   "    perplexity exactly\n");
            return 0;
        }
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--qat") && i + 1 < argc) qat_recipe = argv[++i];
        else if (!strcmp(argv[i], "--convert")) convert = true;
        else if (!strcmp(argv[i], "--context")) {
            if (!qt_cli_flag_long("eval", "--context", i + 1 < argc ? argv[++i] : NULL, 1, &context))
                return 2;
        } else if (!strcmp(argv[i], "--stride")) {
            if (!qt_cli_flag_long("eval", "--stride", i + 1 < argc ? argv[++i] : NULL, 1, &stride))
                return 2;
        } else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "qtrain eval: unexpected argument '%s' (see qtrain eval --help)\n",
                    argv[i]);
            return 2;
        }
    }
    if (!model || !data) {
        fprintf(stderr, "usage: qtrain eval MODEL --data FILE [--context N] [--stride S]\n");
        return 2;
    }
    qt_loaded_model t;
    qt_model_source src = {.path = model, .qat = true, .qat_recipe = qat_recipe};
    int rc = qt_cli_open("eval", &src, &t);
    if (rc) return rc;
    qt_status st = QT_OK;
    char qdesc[300] = "";
    if (t.qat) {
        char d[256];
        snprintf(qdesc, sizeof qdesc, ", quantized (%s%s)", qt_qat_describe(t.qat, d, sizeof d),
                 convert ? ", converted" : ", fake-quant");
    }
    if (convert && !t.qat) {
        fprintf(stderr, "qtrain eval: --convert needs a QAT model or --qat RECIPE\n");
        qt_model_close(&t);
        return 2;
    }
    if (convert && (st = qt_qat_convert(t.qat, NULL, NULL)) != QT_OK) {
        fprintf(stderr, "qtrain eval: %s\n", qt_error_message());
        qt_model_close(&t);
        return st == QT_ENUMERIC ? 2 : qt_cli_exit_code(st); /* weights the format cannot hold */
    }
    if (!context) context = qt_model_context(&t.m);
    if (!stride) stride = context / 2 ? context / 2 : 1;
    if (stride > context) {
        fprintf(stderr, "qtrain eval: --stride (%ld) must not exceed --context (%ld)\n", stride,
                context);
        qt_model_close(&t);
        return 2;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = qt_cli_read_tokens("eval", data, t.tok, &ids, &n_ids);
    if (rc) {
        qt_model_close(&t);
        return rc;
    }
    qt_ppl_result p;
    st = qt_eval_perplexity(&t.m, ids, (long)n_ids, context, stride, &p);
    free(ids);
    if (st == QT_OK)
        printf("qtrain eval: %s%s on %s: %ld tokens (%s), context %ld, stride %ld: loss %.4f, "
               "perplexity %.4f\n", model, qdesc, data, p.tokens, t.r.data.tokenizer, context,
               stride, p.nll / (double)p.tokens, p.ppl);
    qt_model_close(&t);
    return st == QT_OK ? 0 : qt_cli_fail("eval", st);
}
