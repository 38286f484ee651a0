/*
 * main.c - the qtrain command line. Library code returns statuses; only this layer
 * prints and picks exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "qt_autograd.h"

#define QT_VERSION QT_VERSION_STR

static void usage(FILE *f) {
    fprintf(f,
            "usage: qtrain <command> [options]\n"
            "\n"
            "commands:\n"
            "  demo [--steps N] [--seed N] [--threads N]\n"
            "            train a tiny Llama-family model on a built-in copy task and print\n"
            "            its loss (the engine end to end; default 300 steps)\n"
            "  train RECIPE.yaml [--set key=value ...]\n"
            "            train a model as the recipe says (qtrain train --keys lists keys)\n"
            "  eval MODEL --data FILE [--context N] [--stride S]\n"
            "            sliding-window perplexity of a text file\n"
            "  generate MODEL [--prompt TEXT] [--tokens N] [--temperature T] [--seed S]\n"
            "            sample text from a trained model\n"
            "  quantize RECIPE.yaml [--set key=value ...]\n"
            "            post-training quantization (rtn | gptq | awq) and export, as the\n"
            "            recipe's quantize: and export: sections say\n"
            "  export MODEL --format gguf|gptq|awq|bnb-nf4|fp8 --out PATH\n"
            "            write a file deployment tools load (a QAT model as trained)\n"
            "  compare REFERENCE CANDIDATE --data FILE\n"
            "            perplexity of both, KL divergence and top-1 agreement\n"
            "  info FILE what a checkpoint, GGUF or safetensors file holds\n"
            "  (MODEL: a qtrain checkpoint .h5, a Hugging Face directory or a .gguf file)\n"
            "  version   print the version\n"
            "  help      this text\n"
            "\n"
            "Each command takes --help.\n");
}

int main(int argc, char **argv) {
    qt_blas_reexec_if_slow(argv); /* see qt_autograd.h: Debian's OpenBLAS and new Xeons */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    qt_cli_log_to_stderr(cmd); /* what the libraries have to say (train: its own events) */
    if (!strcmp(cmd, "demo")) return qt_cmd_demo(argc - 2, argv + 2);
    if (!strcmp(cmd, "train")) return qt_cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return qt_cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate")) return qt_cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return qt_cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "quantize")) return qt_cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "export")) return qt_cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "compare")) return qt_cmd_compare(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("qtrain %s\n", QT_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "qtrain: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
