/*
 * cmd_train.c - `qtrain train RECIPE.yaml [--set key=value ...]` and `qtrain train
 * --keys`. Bad recipes, flags and data exit 2 with the file:line:col or key named.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "loop.h"
#include "recipe.h"

static void train_usage(FILE *f) {
    fprintf(f, "usage: qtrain train RECIPE.yaml [--set key=value ...] [--resume] [--check]\n"
               "       --resume continues from OUTPUT.DIR/checkpoint.h5 exactly where it stopped\n"
               "       --check  validates the recipe and prints it resolved, without training\n"
               "       qtrain train --keys      every recipe key, its type, default and meaning\n");
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

int qt_cmd_train(int argc, char **argv) {
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        train_usage(stdout);
        return 0;
    }
    if (argc >= 1 && !strcmp(argv[0], "--keys")) {
        qt_recipe_print_keys(stdout);
        return 0;
    }
    if (argc < 1 || argv[0][0] == '-') {
        train_usage(stderr);
        return 2;
    }
    const char *path = argv[0];
    qt_recipe r;
    bool resume = false, check = false;
    qt_recipe_defaults(&r);
    qt_status st = qt_recipe_load(path, &r);
    for (int i = 1; st == QT_OK && i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            st = qt_recipe_set(&r, argv[++i]);
        } else if (!strcmp(argv[i], "--resume")) {
            resume = true;
        } else if (!strcmp(argv[i], "--check")) {
            check = true;
        } else {
            fprintf(stderr, "qtrain train: unexpected argument '%s'\n", argv[i]);
            train_usage(stderr);
            return 2;
        }
    }
    if (st == QT_OK) st = qt_recipe_validate(&r, path);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain train: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    if (check) { /* validate only: print the resolved recipe */
        qt_recipe_write(stdout, &r);
        return 0;
    }
    qt_train_result res = {0};
    qt_train_opts opts = {.resume = resume, .recipe_path = path};
    st = qt_train_run(&r, &opts, &res);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain train: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    printf("qtrain train: %ld steps in %.1f s, loss %.4f -> %.4f", res.steps, res.seconds,
           res.first_loss, res.last_loss);
    if (res.val_ppl > 0) printf(", val loss %.4f, val perplexity %.3f", res.val_loss, res.val_ppl);
    printf("\n");
    return 0;
}
