/*
 * gpu_test.h - how every GPU test starts: without a GPU (or when the backend cannot
 * start) it prints why and exits 77, which CTest reports as skipped, never as passed;
 * with one it returns a fresh seed for this run's random inputs (the time, or
 * QT_TEST_SEED to rerun a failing run), printed with the card.
 */
#ifndef QT_GPU_TEST_H
#define QT_GPU_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "qt_cuda.h"

static inline uint64_t qt_gpu_test_begin(const char *name) {
    if (qt_cuda_device_count() == 0) {
        printf("%s: SKIP: no CUDA GPU visible\n", name);
        exit(77);
    }
    if (qt_cuda_init(0) != QT_OK) {
        printf("%s: SKIP: %s\n", name, qt_error_message());
        exit(77);
    }
    const char *env = getenv("QT_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("%s on %s, seed %llu (QT_TEST_SEED=%llu reruns it)\n", name, qt_cuda_device_desc(),
           (unsigned long long)seed, (unsigned long long)seed);
    return seed;
}

#endif /* QT_GPU_TEST_H */
