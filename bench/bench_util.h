/*
 * bench_util.h - what the CPU step benchmarks (bench_qat, bench_lora) share: a monotonic
 * clock, the median of a sample, seeded tokens, and their common options.
 */
#ifndef QT_BENCH_UTIL_H
#define QT_BENCH_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qt_autograd.h"

static inline double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v (n > 0 values; sorts v). */
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return v[n / 2];
}

/* Seeded random token ids and targets in [0, vocab), n each (the same for every run and
 * every benchmark); malloc'd into *ids and *tgt. */
static inline void bench_tokens(int64_t n, int vocab, int32_t **ids, int32_t **tgt) {
    *ids = malloc((size_t)n * sizeof(int32_t));
    *tgt = malloc((size_t)n * sizeof(int32_t));
    for (int64_t i = 0; *ids && *tgt && i < n; i++) {
        (*ids)[i] = (int32_t)(qt_rand_u64(3, (uint64_t)i) % (uint64_t)vocab);
        (*tgt)[i] = (int32_t)(qt_rand_u64(4, (uint64_t)i) % (uint64_t)vocab);
    }
}

/* --threads --reps --dim --layers --ffn --batch --seq, and --rank where rank_ok. */
typedef struct {
    int threads, reps, dim, layers, ffn, batch, seq, rank;
} bench_opts;

/* Defaults, then argv; 0, or 2 after a message for an unknown option. */
static inline int bench_parse(int argc, char **argv, const char *prog, bool rank_ok,
                              bench_opts *o) {
    *o = (bench_opts){.threads = 2, .reps = 7, .dim = 512, .layers = 4, .ffn = 1536,
                      .batch = 8, .seq = 256, .rank = 16};
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        const char *k = argv[i];
        if (!strcmp(k, "--threads")) o->threads = v;
        else if (!strcmp(k, "--reps")) o->reps = v;
        else if (!strcmp(k, "--dim")) o->dim = v;
        else if (!strcmp(k, "--layers")) o->layers = v;
        else if (!strcmp(k, "--ffn")) o->ffn = v;
        else if (!strcmp(k, "--batch")) o->batch = v;
        else if (!strcmp(k, "--seq")) o->seq = v;
        else if (rank_ok && !strcmp(k, "--rank")) o->rank = v;
        else {
            fprintf(stderr, "%s: unknown option %s\n", prog, k);
            return 2;
        }
    }
    if (o->reps < 1 || o->reps > 1000) o->reps = 7;
    return 0;
}

#endif /* QT_BENCH_UTIL_H */
