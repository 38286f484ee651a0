/*
 * schedule.c - the learning-rate schedule (linear warmup over schedule.warmup steps,
 * then cosine, linear or constant decay to min_lr_ratio of the peak at the last step)
 * and the clock for rates and ETAs.
 */
#include <math.h>
#include <string.h>
#include <time.h>

#include "qt_train.h"

double qt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

float qt_lr_at(long step, long steps, float lr, long warmup, const char *decay,
               float min_ratio) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (!strcmp(decay, "constant") || steps <= warmup) return lr;
    double t = (double)(step - warmup) / (double)(steps - warmup); /* 0 .. 1 */
    if (t > 1.0) t = 1.0;
    double f = !strcmp(decay, "linear") ? 1.0 - t : 0.5 * (1.0 + cos(M_PI * t));
    return (float)(lr * (min_ratio + (1.0 - min_ratio) * f));
}
