/*
 * main.c - the qtrain command line. Library code returns statuses; only this layer
 * prints and picks exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "qt_autograd.h"

#define QT_VERSION "0.1.0"

bool qt_cli_parse_long(const char *s, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: qtrain <command> [options]\n"
            "\n"
            "commands:\n"
            "  demo [--steps N] [--seed N] [--threads N]\n"
            "            train a tiny Llama-family model on a built-in copy task and print\n"
            "            its loss (the engine end to end; default 300 steps)\n"
            "  version   print the version\n"
            "  help      this text\n"
            "\n"
            "Training from recipes, quantization, export and evaluation arrive with their\n"
            "issues (see README.md).\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "demo")) return qt_cmd_demo(argc - 2, argv + 2);
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
