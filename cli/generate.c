/*
 * generate.c - `qtrain generate MODEL [--prompt TEXT]`: text sampled from a model
 * (qt_generate) on stdout; what the libraries note goes to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int qt_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = "";
    long tokens = 200, seed = 1;
    float temperature = 0.8f;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: qtrain generate MODEL [--prompt TEXT] [--tokens N] "
                   "[--temperature T] [--seed S]\n");
            return 0;
        }
        if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = argv[++i];
        else if (!strcmp(argv[i], "--tokens")) {
            if (!qt_cli_flag_long("generate", "--tokens", i + 1 < argc ? argv[++i] : NULL, 1, &tokens))
                return 2;
        } else if (!strcmp(argv[i], "--seed")) {
            if (!qt_cli_flag_long("generate", "--seed", i + 1 < argc ? argv[++i] : NULL, 0, &seed))
                return 2;
        } else if (!strcmp(argv[i], "--temperature")) {
            if (!qt_cli_flag_float("generate", "--temperature", i + 1 < argc ? argv[++i] : NULL,
                                  &temperature))
                return 2;
        } else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "qtrain generate: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: qtrain generate MODEL [--prompt TEXT] [--tokens N]\n");
        return 2;
    }
    qt_loaded_model t;
    qt_model_source src = {.path = model, .qat = true};
    int rc = qt_cli_open("generate", &src, &t);
    if (rc) return rc;
    char *out = NULL;
    qt_ctx *ctx = qt_ctx_new();
    qt_status st = ctx ? qt_generate(ctx, &t.m, t.tok, prompt, (int)tokens, qt_model_context(&t.m),
                                     temperature, (uint64_t)seed, &out)
                       : QT_ERROR(QT_ENOMEM, "out of memory");
    if (st == QT_OK) {
        fwrite(out, 1, strlen(out), stdout);
        putchar('\n');
    } else {
        fprintf(stderr, "qtrain generate: %s\n", qt_error_message());
    }
    free(out);
    qt_ctx_free(ctx);
    qt_model_close(&t);
    return qt_cli_exit_code(st);
}
