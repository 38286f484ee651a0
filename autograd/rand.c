/*
 * rand.c - counter-based random numbers: value = splitmix64(seed, index). Stateless, so
 * a kernel can draw element i's number on any thread and get the same mask or init
 * whatever the thread count, and backward can recompute instead of storing.
 * splitmix64: Steele, Lea, Flood, "Fast splittable pseudorandom number generators",
 * OOPSLA 2014 (the finaliser constants are Stafford's variant 13).
 */
#include <math.h>

#include "qt_autograd.h"

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t qt_rand_u64(uint64_t seed, uint64_t index) {
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) + index * 0x9e3779b97f4a7c15ULL);
}

float qt_rand_uniform(uint64_t seed, uint64_t index) {
    return (float)(qt_rand_u64(seed, index) >> 40) * (1.0f / 16777216.0f); /* 24 bits */
}

float qt_rand_normal(uint64_t seed, uint64_t index) {
    /* Box-Muller on two independent draws derived from the same counter */
    uint64_t r = qt_rand_u64(seed, index);
    double u1 = ((double)(r >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(qt_rand_u64(seed ^ 0x5851f42d4c957f2dULL, index) >> 11) *
                (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
