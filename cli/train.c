/*
 * train.c - `qtrain train RECIPE.yaml [--set key=value ...]` and `qtrain train
 * --keys`. Bad recipes, flags and data exit 2 with the file:line:col or key named.
 *
 * Under mpirun every rank runs this: MPI starts here and ends here (qt_dist). Rank 0
 * alone prints progress (the others' stdout goes to /dev/null); any rank's error is
 * printed with its rank and ends the whole job with the error's exit code, since the
 * other ranks may be waiting for it in a collective.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void train_usage(FILE *f) {
    fprintf(f, "usage: qtrain train RECIPE.yaml [--set key=value ...] [--resume] [--stop-at N] [--check]\n"
               "       --resume continues from OUTPUT.DIR/checkpoint.h5 exactly where it stopped\n"
               "       --stop-at N  checkpoints and stops after step N of the schedule (a job\n"
               "                    slot shorter than the run; --resume goes on, on any\n"
               "                    number of ranks)\n"
               "       --check  validates the recipe and prints it resolved, without training\n"
               "       qtrain train --keys      every recipe key, its type, default and meaning\n");
}

/* The run's report, as rank 0 prints it: its lines, a line per logged step (between
 * them, on a terminal, a live bar), validations and samples. */
typedef struct {
    bool tty; /* a single process writing to a terminal: the live bar */
} printer;

static void print_sample(const char *text) {
    printf("----- sample -----\n");
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        putchar(c == '\n' || c == '\t' || c >= 32 ? c : '?');
    }
    printf("\n------------------\n");
}

static void on_event(void *user, const qt_train_event *ev) {
    const printer *p = user;
    switch (ev->kind) {
    case QT_TRAIN_EV_LINE: printf("%s\n", ev->text); break;
    case QT_TRAIN_EV_STEP:
        if (!ev->logged) {
            if (!p->tty) return;
            int w = (int)(30 * ev->step / ev->steps);
            printf("\r[%.*s%.*s] %ld/%ld loss %.4f %.0f tok/s eta %.0fs ", w,
                   "##############################", 30 - w, "..............................",
                   ev->step, ev->steps, ev->loss, ev->tokens_per_s, ev->eta_s);
            break;
        }
        if (p->tty) printf("\r\033[K");
        printf("step %6ld/%ld  loss %.4f  lr %.2e  gnorm %.3f  %.0f tok/s  %.0fs  eta %.0fs\n",
               ev->step, ev->steps, ev->loss, ev->lr, ev->grad_norm, ev->tokens_per_s,
               ev->elapsed_s, ev->eta_s);
        break;
    case QT_TRAIN_EV_EVAL:
        printf("eval step %ld: val loss %.4f, perplexity %.3f (per byte)\n", ev->step,
               ev->val_loss, ev->val_ppl);
        break;
    case QT_TRAIN_EV_SAMPLE: print_sample(ev->text); break;
    }
    fflush(stdout);
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
    long stop_at = 0;
    qt_recipe_defaults(&r);
    qt_status st = qt_recipe_load(path, &r);
    for (int i = 1; st == QT_OK && i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            st = qt_recipe_set(&r, argv[++i]);
        } else if (!strcmp(argv[i], "--resume")) {
            resume = true;
        } else if (!strcmp(argv[i], "--stop-at") && i + 1 < argc) {
            if (!qt_cli_parse_long(argv[++i], &stop_at) || stop_at < 1) {
                fprintf(stderr, "qtrain train: --stop-at takes a step number >= 1, got '%s'\n",
                        argv[i]);
                return 2;
            }
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
    qt_dist dist;
    st = qt_dist_init(&dist);
    if (st != QT_OK) {
        fprintf(stderr, "qtrain train: %s\n", qt_error_message());
        return qt_cli_exit_code(st);
    }
    if (dist.rank != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "qtrain train: rank %d: cannot silence stdout\n", dist.rank);
        qt_dist_abort(&dist, 1);
        qt_dist_finalize(&dist);
        return 1;
    }
    /* the live bar only for a single process: mpirun hands rank 0 a pseudo-terminal
     * even when its own output goes to a file */
    printer pr = {.tty = dist.world == 1 && isatty(STDOUT_FILENO)};
    qt_train_result res = {0};
    qt_train_opts opts = {.resume = resume, .stop_at = stop_at, .recipe_path = path,
                          .dist = &dist, .on_event = on_event, .user = &pr};
    st = qt_train_run(&r, &opts, &res);
    if (st != QT_OK) {
        if (dist.world > 1) {
            fprintf(stderr, "qtrain train: rank %d of %d: %s\n", dist.rank, dist.world,
                    qt_error_message());
            fflush(stdout);
            fflush(stderr);
            qt_dist_abort(&dist, qt_cli_exit_code(st)); /* every rank, never a hang */
        } else {
            fprintf(stderr, "qtrain train: %s\n", qt_error_message());
        }
        qt_dist_finalize(&dist);
        return qt_cli_exit_code(st);
    }
    printf("qtrain train: %ld steps in %.1f s, loss %.4f -> %.4f", res.steps, res.seconds,
           res.first_loss, res.last_loss);
    if (res.val_ppl > 0) printf(", val loss %.4f, val perplexity %.3f", res.val_loss, res.val_ppl);
    printf("\n");
    qt_dist_finalize(&dist);
    return 0;
}
