/*
 * tokenizer_internal.h - private to data/, shared by the tokenizer's files: the Unicode
 * tables (generated into unicode_tables.c by gen_unicode_tables.py), NFC (normalize.c),
 * lossy UTF-8 decoding and the pre-tokenizer splitters that stand in for the regexes of
 * tokenizer.json files (pretokenize.c), and the tokenizer struct with the builder both
 * front ends use (tokenizer.c, tokenizer_json.c). Not included outside data/.
 */
#ifndef QT_TOKENIZER_INTERNAL_H
#define QT_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qt_data.h"

/* ------------------------------------------------------------ unicode_tables.c ---- */

/* \p{L}, \p{N}, \s (White_Space), \w (Rust regex: Alphabetic, M, Nd, Pc, Join_Control) */
enum { QT_UC_LETTER = 1, QT_UC_NUMBER = 2, QT_UC_SPACE = 4, QT_UC_WORD = 8 };

typedef struct {
    uint32_t lo, hi; /* inclusive code point range */
    uint32_t bits;   /* QT_UC_* */
} qt_uc_range;

extern const char qt_unicode_version[];
extern const int qt_uc_nranges;
extern const qt_uc_range qt_uc_ranges[];

/* QT_UC_* bits of a code point (0 for none, and for anything above U+10FFFF). */
uint32_t qt_uc_class(uint32_t cp);

/* NFC data: combining classes as ranges (bits = the class); one-level canonical
 * decompositions as {a = cp, b = first, c = second or 0 for a singleton} sorted by cp;
 * primary composites as {a = first, b = second, c = composite} sorted by (a, b).
 * Hangul is left to the algorithm. */
typedef struct {
    uint32_t a, b, c;
} qt_nfc_pair;
extern const uint32_t qt_nfc_qc_min;
extern const int qt_uc_ccc_n, qt_nfc_decomp_n, qt_nfc_comp_n;
extern const qt_uc_range qt_uc_ccc[];
extern const qt_nfc_pair qt_nfc_decomp[], qt_nfc_comp[];

/* ----------------------------------------------------------------- normalize.c ---- */

/* Largest number of code points NFC can make of one (a full canonical decomposition). */
#define QT_NFC_MAX_EXPANSION 4

/* NFC of cps[0..n) into out; out and tmp need room for QT_NFC_MAX_EXPANSION * n code
 * points. Returns the length. UAX #15: full canonical decomposition, canonical
 * ordering, canonical composition. */
size_t qt_nfc(const uint32_t *cps, size_t n, uint32_t *out, uint32_t *tmp);

/* --------------------------------------------------------------- pretokenize.c ---- */

/* Decodes UTF-8 into code points, every ill-formed sequence becoming one U+FFFD per
 * maximal subpart (Unicode ch. 3 "U+FFFD substitution of maximal subparts", which is
 * what Python's bytes.decode("utf-8", "replace") does). `cps` needs room for `len`
 * code points. Returns the number written. */
size_t qt_utf8_decode_lossy(const uint8_t *s, size_t len, uint32_t *cps);
/* Appends the UTF-8 of cp to out (room for 4 bytes); returns bytes written. */
size_t qt_utf8_encode(uint32_t cp, uint8_t *out);

/* One splitting step of a pre-tokenizer. Each is a hand-written matcher equal to the
 * regex named (behavior "Isolated": matches and the gaps between them become pieces). */
typedef enum {
    /* ByteLevel(use_regex=true):
     * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    QT_SPLIT_GPT2,
    /* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
     *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
    QT_SPLIT_LLAMA3,
    QT_SPLIT_QWEN2,      /* as LLAMA3 with \p{N} in place of \p{N}{1,3} */
    QT_SPLIT_DIGITS,     /* Digits(individual_digits=true), the regex \p{N} */
    QT_SPLIT_DIGIT_RUNS, /* Digits(individual_digits=false), the regex \p{N}+ */
    QT_SPLIT_COUNT
} qt_split_kind;

/* The split kind whose regex is exactly `pattern` (as written in a tokenizer.json
 * Split), or -1. */
int qt_split_from_regex(const char *pattern);

/* Length in code points of the match starting exactly at cps[i] of the piece
 * cps[0..n) (its end is the end of the string for look-aheads), 0 if none. */
size_t qt_split_match(qt_split_kind kind, const uint32_t *cps, size_t n, size_t i);

/* ----------------------------------------------------------------- tokenizer.c ---- */
/* The builder the two front ends (tokenizer.json in tokenizer_json.c, GGUF-style arrays
 * in tokenizer.c) share. Order: qt_tok_new, vocab, added tokens, merges (rank = call
 * order; they need the vocab), settings written into the struct, qt_tok_finish. Every
 * function names tok->src in its messages and returns a status. */

#define QT_TOK_MAX_ID (1 << 24) /* ids above this are refused as malformed */
#define QT_TOK_MAX_STEPS 4
#define QT_TOK_MAX_TEMPLATE 8

typedef struct {
    uint32_t *cps; /* (n) the token's content as code points */
    size_t n;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} qt_added_token;

struct qt_tokenizer {
    char *src; /* file path or "vocab", for messages */
    /* model vocab, string -> id: open addressing, capacity a power of two */
    char **vkeys;   /* (vcap) owned, NULL = empty slot */
    int32_t *vvals; /* (vcap) */
    size_t vcap, vcount;
    /* merges, (left id << 32 | right id) -> rank and merged id */
    uint64_t *mkeys;       /* (mcap) UINT64_MAX = empty slot */
    int32_t *mrank, *mnew; /* (mcap) */
    size_t mcap, mcount;
    /* id -> string (vocab spelling, or an added token's content); NULL where unused */
    char **id_str;       /* (id_cap) owned */
    uint8_t *id_special; /* (id_cap) 1 for special added tokens */
    int32_t n_ids;       /* largest id + 1 */
    size_t id_cap;
    qt_added_token *added; /* (n_added) */
    int n_added, added_cap;
    int *added_by_first;     /* (n_added) indices into added, sorted by first code point */
    uint64_t first_bits[16]; /* bit (cp & 1023) set when an added token starts with cp */
    int32_t byte_id[256];    /* id of each byte's byte-level char, -1 if not in vocab */
    qt_split_kind steps[QT_TOK_MAX_STEPS];
    int n_steps;
    bool add_prefix_space, ignore_merges;
    bool nfc;       /* normalizer NFC (Qwen2) */
    int32_t unk_id; /* -1: unknown chars are dropped, as HF does */
    int32_t prefix[QT_TOK_MAX_TEMPLATE], suffix[QT_TOK_MAX_TEMPLATE];
    int n_prefix, n_suffix;
    int32_t bos, eos;
};

qt_status qt_tok_new(const char *src, qt_tokenizer **out);
qt_status qt_tok_add_vocab(qt_tokenizer *tok, const char *token, int64_t id);
qt_status qt_tok_add_added(qt_tokenizer *tok, const char *content, int64_t id,
                           const qt_added_token *opts);
/* `where` names the merge in messages ("model.merges[12]"). */
qt_status qt_tok_add_merge(qt_tokenizer *tok, const char *left, const char *right,
                           const char *where);
/* Builds byte_id and the added-token index; checks the post-processor's ids exist.
 * Bytes without a token are allowed (byte_id -1): HF drops them when there is no unk. */
qt_status qt_tok_finish(qt_tokenizer *tok);
int32_t qt_tok_vocab_get(const qt_tokenizer *tok, const char *s, size_t n);
/* qt_tokenizer_from_vocab with `src` (a file path) naming the source in messages. */
qt_status qt_tok_from_vocab(const qt_tokenizer_vocab *v, const char *src, qt_tokenizer **out);

#endif
