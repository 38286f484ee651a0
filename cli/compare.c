/*
 * compare.c - `qtrain compare REFERENCE CANDIDATE --data FILE`: the parity report of two
 * models on a text (qt_compare_models): perplexity of both, the KL divergence of the
 * candidate's next-token distribution from the reference's, top-1 agreement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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
    qt_loaded_model a, b;
    qt_model_source sa = {.path = ref, .qat = true}, sb = {.path = cand, .qat = true};
    int rc = qt_cli_open("compare", &sa, &a);
    if (rc) return rc;
    rc = qt_cli_open("compare", &sb, &b);
    if (rc) {
        qt_model_close(&a);
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
            qt_cli_print_compare("qtrain compare", &res);
        }
    }
    free(ids);
    qt_model_close(&a);
    qt_model_close(&b);
    return rc;
}
