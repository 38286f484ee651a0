/*
 * calib.c - calibration sets for PTQ (n sequences of len tokens drawn from a token
 * stream by a seed) and their provenance hash, SHA-256 as FIPS 180-4 defines it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_ptq.h"

/* splitmix64: the seeded draw of window positions */
static uint64_t mix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

qt_status qt_calib_sample(const int32_t *tokens, int64_t n_tokens, int64_t n, int64_t len,
                          uint64_t seed, const char *src, qt_calib *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || len < 1)
        return QT_ERROR(QT_EINVAL, "calibration: samples (%lld) and seq_len (%lld) must be >= 1",
                        (long long)n, (long long)len);
    /* windows of len + 1 tokens, as training cuts them (the +1 keeps the sets aligned
     * with what eval scores; the last token is not used) */
    int64_t avail = n_tokens / (len + 1);
    if (avail < n)
        return QT_ERROR(QT_EINVAL,
                        "%s: calibration asks for %lld sequences of %lld tokens, but the data "
                        "holds only %lld tokens (%lld such sequences); lower "
                        "quantize.calibration.samples or seq_len, or give more data",
                        src ? src : "calibration data", (long long)n, (long long)len,
                        (long long)n_tokens, (long long)avail);
    int64_t *idx = malloc((size_t)avail * sizeof *idx);
    out->ids = malloc((size_t)(n * len) * sizeof *out->ids);
    if (!idx || !out->ids) {
        free(idx);
        free(out->ids);
        out->ids = NULL;
        return QT_ERROR(QT_ENOMEM, "calibration: out of memory");
    }
    for (int64_t i = 0; i < avail; i++) idx[i] = i;
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) { /* partial Fisher-Yates: the first n of a shuffle */
        int64_t j = i + (int64_t)(mix64(&s) % (uint64_t)(avail - i));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        memcpy(out->ids + i * len, tokens + idx[i] * (len + 1), (size_t)len * sizeof(int32_t));
    }
    free(idx);
    out->n = n;
    out->len = len;
    return QT_OK;
}

void qt_calib_free(qt_calib *c) {
    free(c->ids);
    memset(c, 0, sizeof *c);
}

void qt_calib_hash(const qt_calib *c, char out[72]) {
    size_t n = (size_t)(c->n * c->len);
    uint8_t *b = malloc(n * 4 + 1), h[32];
    if (!b) {
        snprintf(out, 72, "%s", "");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)c->ids[i];
        b[4 * i] = (uint8_t)v, b[4 * i + 1] = (uint8_t)(v >> 8), b[4 * i + 2] = (uint8_t)(v >> 16),
        b[4 * i + 3] = (uint8_t)(v >> 24);
    }
    qt_sha256(b, n * 4, h);
    free(b);
    int k = snprintf(out, 72, "sha256:");
    for (int i = 0; i < 32; i++) k += snprintf(out + k, (size_t)(72 - k), "%02x", h[i]);
}

/* ------------------------------------------------------------------ SHA-256 ---- */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void qt_sha256(const void *data, size_t n, uint8_t out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha256_block(h, p + i);
    uint8_t tail[128] = {0};
    size_t r = n - i;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    size_t tl = r + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++) tail[tl - 1 - j] = (uint8_t)(bits >> (8 * j));
    sha256_block(h, tail);
    if (tl == 128) sha256_block(h, tail + 64);
    for (int j = 0; j < 8; j++)
        out[4 * j] = (uint8_t)(h[j] >> 24), out[4 * j + 1] = (uint8_t)(h[j] >> 16),
        out[4 * j + 2] = (uint8_t)(h[j] >> 8), out[4 * j + 3] = (uint8_t)h[j];
}
