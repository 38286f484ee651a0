/*
 * normalize.c - Unicode NFC (UAX #15), for tokenizer.json files whose normalizer is NFC
 * (Qwen2 / Qwen2.5). Tables come from gen_unicode_tables.py (Python's unicodedata).
 *
 * The three steps of the standard, on code points: full canonical decomposition (table
 * lookups applied recursively, Hangul syllables by arithmetic), canonical ordering (a
 * stable sort of each run of non-starters by combining class), then canonical composition
 * (UAX #15's reference loop: a char composes with the last starter unless a char of the
 * same or higher class sits between them). Text below U+0300 is already NFC, which makes
 * the common case one pass of comparisons.
 */
#include <string.h>

#include "tokenizer_internal.h"

enum {
    S_BASE = 0xAC00,
    L_BASE = 0x1100,
    V_BASE = 0x1161,
    T_BASE = 0x11A7,
    L_COUNT = 19,
    V_COUNT = 21,
    T_COUNT = 28,
    N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT,
};

static uint32_t ccc(uint32_t cp) {
    if (cp < qt_nfc_qc_min) return 0;
    int lo = 0, hi = qt_uc_ccc_n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (cp < qt_uc_ccc[mid].lo)
            hi = mid - 1;
        else if (cp > qt_uc_ccc[mid].hi)
            lo = mid + 1;
        else
            return qt_uc_ccc[mid].bits;
    }
    return 0;
}

static const qt_nfc_pair *decomp_of(uint32_t cp) {
    int lo = 0, hi = qt_nfc_decomp_n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (cp < qt_nfc_decomp[mid].a)
            hi = mid - 1;
        else if (cp > qt_nfc_decomp[mid].a)
            lo = mid + 1;
        else
            return &qt_nfc_decomp[mid];
    }
    return NULL;
}

/* The primary composite of a + b, 0 if none. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    int lo = 0, hi = qt_nfc_comp_n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const qt_nfc_pair *p = &qt_nfc_comp[mid];
        if (a < p->a || (a == p->a && b < p->b))
            hi = mid - 1;
        else if (a > p->a || b > p->b)
            lo = mid + 1;
        else
            return p->c;
    }
    return 0;
}

/* Appends the full canonical decomposition of cp; returns the new length. */
static size_t decompose(uint32_t cp, uint32_t *out, size_t n) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        out[n++] = L_BASE + s / N_COUNT;
        out[n++] = V_BASE + (s % N_COUNT) / T_COUNT;
        if (s % T_COUNT) out[n++] = T_BASE + s % T_COUNT;
        return n;
    }
    const qt_nfc_pair *d = decomp_of(cp);
    if (!d) {
        out[n++] = cp;
        return n;
    }
    /* rows are {cp, first, second}; second is 0 for a singleton */
    n = decompose(d->b, out, n);
    return d->c ? decompose(d->c, out, n) : n;
}

/* Stable sort of out[s..e) (all non-starters) by combining class: insertion sort for the
 * short runs text has, a counting sort through tmp for long ones (a hostile run of
 * thousands of marks must not cost quadratic time). */
static void order_run(uint32_t *out, size_t s, size_t e, uint32_t *tmp) {
    if (e - s <= 32) {
        for (size_t k = s + 1; k < e; k++) {
            uint32_t c = out[k], cc = ccc(c);
            size_t j = k;
            while (j > s && ccc(out[j - 1]) > cc) {
                out[j] = out[j - 1];
                j--;
            }
            out[j] = c;
        }
        return;
    }
    size_t count[257] = {0};
    for (size_t k = s; k < e; k++) count[ccc(out[k]) + 1]++;
    for (int c = 1; c < 257; c++) count[c] += count[c - 1];
    for (size_t k = s; k < e; k++) tmp[count[ccc(out[k])]++] = out[k];
    memcpy(out + s, tmp, (e - s) * sizeof *out);
}

size_t qt_nfc(const uint32_t *cps, size_t n, uint32_t *out, uint32_t *tmp) {
    size_t i = 0;
    while (i < n && cps[i] < qt_nfc_qc_min) i++;
    if (i == n) {
        memcpy(out, cps, n * sizeof *cps);
        return n;
    }
    /* 1. decompose */
    size_t m = 0;
    for (i = 0; i < n; i++) m = decompose(cps[i], out, m);
    /* 2. canonical ordering of each run of non-starters */
    for (size_t k = 0; k < m;) {
        if (ccc(out[k]) == 0) {
            k++;
            continue;
        }
        size_t e = k + 1;
        while (e < m && ccc(out[e]) != 0) e++;
        order_run(out, k, e, tmp);
        k = e;
    }
    /* 3. compose (UAX #15 reference code) */
    if (m == 0) return 0;
    size_t starter = 0, w = 1;
    uint32_t last = ccc(out[0]) ? 256 : 0;
    for (size_t k = 1; k < m; k++) {
        uint32_t c = out[k], cc = ccc(c);
        uint32_t comp = compose(out[starter], c);
        if (comp && (last < cc || last == 0)) {
            out[starter] = comp;
            continue;
        }
        if (cc == 0) starter = w;
        last = cc;
        out[w++] = c;
    }
    return w;
}
