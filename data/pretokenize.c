/*
 * pretokenize.c - lossy UTF-8 decoding and the pre-tokenizer splitters of byte-level BPE.
 *
 * HF tokenizers runs the pre-tokenizer regexes of tokenizer.json with Oniguruma; llama.cpp
 * hand-writes them. We do as llama.cpp: each known regex (GPT-2's, Llama-3's, Qwen2's,
 * the digit splitters) is a small matcher over code points that returns the length of
 * the regex's match starting exactly at one position, which is all a leftmost find_iter
 * needs, since none of these regexes can match the empty string. An unknown regex is
 * refused by the loader rather than approximated.
 *
 * Surprising bits kept on purpose:
 *  - "\s" is the White_Space property (not Python's str.isspace): U+00A0, U+3000 count,
 *    U+001C..U+001F do not.
 *  - "(?i:'s|...)" folds as Oniguruma does: 's also matches 'S and 'ſ (U+017F LATIN
 *    SMALL LETTER LONG S, which case-folds to s).
 *  - "\s+(?!\S)" backtracks one space off a run of spaces that precedes a non-space, so
 *    "a   b" splits as "a", "  ", " b".
 */
#include <string.h>

#include "tokenizer_internal.h"

/* ---------------------------------------------------------------- classes ---- */

uint32_t qt_uc_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return QT_UC_LETTER | QT_UC_WORD;
        if (cp >= '0' && cp <= '9') return QT_UC_NUMBER | QT_UC_WORD;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return QT_UC_SPACE;
        return cp == '_' ? QT_UC_WORD : 0;
    }
    int lo = 0, hi = qt_uc_nranges - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (cp < qt_uc_ranges[mid].lo)
            hi = mid - 1;
        else if (cp > qt_uc_ranges[mid].hi)
            lo = mid + 1;
        else
            return qt_uc_ranges[mid].bits;
    }
    return 0;
}

static int is_l(uint32_t c) { return (qt_uc_class(c) & QT_UC_LETTER) != 0; }
static int is_n(uint32_t c) { return (qt_uc_class(c) & QT_UC_NUMBER) != 0; }
static int is_s(uint32_t c) { return (qt_uc_class(c) & QT_UC_SPACE) != 0; }
/* [^\s\p{L}\p{N}] */
static int is_other(uint32_t c) {
    return (qt_uc_class(c) & (QT_UC_LETTER | QT_UC_NUMBER | QT_UC_SPACE)) == 0;
}
static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* ------------------------------------------------------------------ UTF-8 ---- */

size_t qt_utf8_decode_lossy(const uint8_t *s, size_t len, uint32_t *cps) {
    size_t i = 0, n = 0;
    while (i < len) {
        uint8_t b = s[i];
        if (b < 0x80) {
            cps[n++] = b;
            i++;
            continue;
        }
        int need;
        uint32_t cp;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1, cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2, cp = b & 0x0F;
            if (b == 0xE0) lo = 0xA0; /* no overlongs */
            if (b == 0xED) hi = 0x9F; /* no surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3, cp = b & 0x07;
            if (b == 0xF0) lo = 0x90; /* no overlongs */
            if (b == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
        } else {                      /* 80..C1, F5..FF: never a lead byte */
            cps[n++] = 0xFFFD;
            i++;
            continue;
        }
        size_t j = i + 1;
        int ok = 1;
        for (int k = 0; k < need; k++, j++) {
            uint8_t c = j < len ? s[j] : 0;
            uint8_t clo = k == 0 ? lo : 0x80, chi = k == 0 ? hi : 0xBF;
            if (j >= len || c < clo || c > chi) {
                ok = 0;
                break;
            }
            cp = (cp << 6) | (c & 0x3F);
        }
        /* ill-formed: the valid prefix (the maximal subpart) is one U+FFFD, and the
         * offending byte starts the next sequence */
        cps[n++] = ok ? cp : 0xFFFD;
        i = j;
    }
    return n;
}

size_t qt_utf8_encode(uint32_t cp, uint8_t *out) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* --------------------------------------------------------------- matchers ---- */

/* The regexes exactly as tokenizer.json files spell them (JSON unescaped). */
static const char *const k_regex[QT_SPLIT_COUNT] = {
    [QT_SPLIT_GPT2] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                      "|\\s+(?!\\S)|\\s+",
    [QT_SPLIT_LLAMA3] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                        "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
                        "|\\s+(?!\\S)|\\s+",
    [QT_SPLIT_QWEN2] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                       "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
                       "|\\s+(?!\\S)|\\s+",
    [QT_SPLIT_DIGITS] = "\\p{N}",
    [QT_SPLIT_DIGIT_RUNS] = "\\p{N}+",
};

int qt_split_from_regex(const char *pattern) {
    for (int k = 0; k < QT_SPLIT_COUNT; k++)
        if (strcmp(pattern, k_regex[k]) == 0) return k;
    /* GPT-2's regex without the final \s+ (llama.cpp's spelling) splits identically:
     * a lone whitespace char before a non-space becomes a gap piece of its own. */
    if (strcmp(pattern, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                        "|\\s+(?!\\S)") == 0)
        return QT_SPLIT_GPT2;
    return -1;
}

static size_t run(const uint32_t *cps, size_t n, size_t i, int (*pred)(uint32_t)) {
    size_t j = i;
    while (j < n && pred(cps[j])) j++;
    return j - i;
}

static uint32_t fold_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive */
static size_t contraction(const uint32_t *cps, size_t n, size_t i, int icase) {
    if (cps[i] != '\'' || i + 1 >= n) return 0;
    uint32_t d = icase ? fold_ascii(cps[i + 1]) : cps[i + 1];
    if (icase && d == 0x17F) d = 's';
    if (d == 's' || d == 't' || d == 'm' || d == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t e = icase ? fold_ascii(cps[i + 2]) : cps[i + 2];
    if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return 3;
    return 0;
}

/* \s+(?!\S)|\s+ */
static size_t spaces(const uint32_t *cps, size_t n, size_t i) {
    size_t k = run(cps, n, i, is_s);
    if (k == 0) return 0;
    return (i + k == n || k == 1) ? k : k - 1;
}

static size_t match_gpt2(const uint32_t *cps, size_t n, size_t i) {
    size_t k = contraction(cps, n, i, 0);
    if (k) return k;
    size_t j = i + (cps[i] == ' ');
    if ((k = run(cps, n, j, is_l))) return j + k - i;     /*  ?\p{L}+ */
    if ((k = run(cps, n, j, is_n))) return j + k - i;     /*  ?\p{N}+ */
    if ((k = run(cps, n, j, is_other))) return j + k - i; /*  ?[^\s\p{L}\p{N}]+ */
    return spaces(cps, n, i);
}

static size_t match_llama3(const uint32_t *cps, size_t n, size_t i, size_t max_digits) {
    size_t k = contraction(cps, n, i, 1);
    if (k) return k;
    uint32_t c = cps[i];
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (is_l(c)) return run(cps, n, i, is_l);
    if (!is_crlf(c) && !is_n(c) && i + 1 < n && is_l(cps[i + 1]))
        return 1 + run(cps, n, i + 1, is_l);
    /* \p{N}{1,3} */
    if ((k = run(cps, n, i, is_n))) return k < max_digits ? k : max_digits;
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = i + (c == ' ');
    if ((k = run(cps, n, j, is_other))) {
        j += k;
        return j + run(cps, n, j, is_crlf) - i;
    }
    /* \s*[\r\n]+ : the whitespace run up to and including its last CR or LF */
    k = run(cps, n, i, is_s);
    for (size_t p = i + k; p > i; p--)
        if (is_crlf(cps[p - 1])) return p - i;
    return spaces(cps, n, i);
}

size_t qt_split_match(qt_split_kind kind, const uint32_t *cps, size_t n, size_t i) {
    if (i >= n) return 0;
    switch (kind) {
    case QT_SPLIT_GPT2: return match_gpt2(cps, n, i);
    case QT_SPLIT_LLAMA3: return match_llama3(cps, n, i, 3);
    case QT_SPLIT_QWEN2: return match_llama3(cps, n, i, 1);
    case QT_SPLIT_DIGITS: return is_n(cps[i]) ? 1 : 0;
    case QT_SPLIT_DIGIT_RUNS: return run(cps, n, i, is_n);
    default: return 0;
    }
}
