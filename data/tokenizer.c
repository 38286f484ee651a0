/*
 * tokenizer.c - byte-level BPE encode/decode, matching HF `tokenizers` (0.2x) ids.
 *
 * Follows tokenizers/src/tokenizer/added_vocabulary.rs (added tokens cut out first,
 * leftmost-longest, non-normalized ones before normalized ones, lstrip/rstrip/single_word),
 * pre_tokenizers/byte_level.rs (GPT-2's bytes_to_unicode alphabet) and models/bpe/word.rs
 * (merge_all: a priority queue of (rank, position), lowest rank first, ties to the left;
 * queue entries made stale by an earlier merge are skipped). llama.cpp's llm_tokenizer_bpe
 * does the same. Building from arrays (qt_tokenizer_from_vocab) is here too; the
 * tokenizer.json reader is tokenizer_json.c, the GGUF one tokenizer_gguf.c, NFC is
 * normalize.c and the pre-tokenizer regexes pretokenize.c.
 *
 * Cost: O(bytes * log) per pre-token for the merges; no cache, so a tokenizer is
 * read-only after it is built and safe to share between threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_data.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------- byte-level alphabet ---- */

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100..
 * in byte order: 0x00-0x20 -> U+0100-U+0120, 0x7F-0xA0 -> U+0121-U+0142, 0xAD -> U+0143. */
static uint32_t byte_to_cp(int b) {
    if (b <= 0x20) return 0x100u + (uint32_t)b;
    if (b >= 0x7F && b <= 0xA0) return 0x121u + (uint32_t)(b - 0x7F);
    if (b == 0xAD) return 0x143;
    return (uint32_t)b;
}

/* The byte a char of the alphabet stands for, -1 for any other char. */
static int cp_to_byte(uint32_t cp) {
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121) + 0x7F;
    if (cp == 0x143) return 0xAD;
    if ((cp > 0x20 && cp < 0x7F) || (cp > 0xA0 && cp <= 0xFF && cp != 0xAD)) return (int)cp;
    return -1;
}

/* ------------------------------------------------------------- hash maps ---- */

static uint64_t hash_bytes(const char *s, size_t n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64 finalizer */
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int32_t qt_tok_vocab_get(const qt_tokenizer *tok, const char *s, size_t n) {
    if (!tok->vcap) return -1;
    size_t mask = tok->vcap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        const char *k = tok->vkeys[i];
        if (!k) return -1;
        if (strlen(k) == n && memcmp(k, s, n) == 0) return tok->vvals[i];
    }
}

static qt_status vocab_grow(qt_tokenizer *tok) {
    size_t cap = tok->vcap ? tok->vcap * 2 : 1024;
    char **keys = calloc(cap, sizeof *keys);
    int32_t *vals = malloc(cap * sizeof *vals);
    if (!keys || !vals) {
        free(keys), free(vals);
        return QT_ERROR(QT_ENOMEM, "%s: vocab of %zu tokens", tok->src, tok->vcount);
    }
    for (size_t i = 0; i < tok->vcap; i++) {
        if (!tok->vkeys[i]) continue;
        size_t j = hash_bytes(tok->vkeys[i], strlen(tok->vkeys[i])) & (cap - 1);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = tok->vkeys[i], vals[j] = tok->vvals[i];
    }
    free(tok->vkeys), free(tok->vvals);
    tok->vkeys = keys, tok->vvals = vals, tok->vcap = cap;
    return QT_OK;
}

static int64_t merge_find(const qt_tokenizer *tok, int32_t a, int32_t b) {
    if (!tok->mcap) return -1;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = tok->mcap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (tok->mkeys[i] == UINT64_MAX) return -1;
        if (tok->mkeys[i] == key) return (int64_t)i;
    }
}

static qt_status merges_grow(qt_tokenizer *tok) {
    size_t cap = tok->mcap ? tok->mcap * 2 : 1024;
    uint64_t *keys = malloc(cap * sizeof *keys);
    int32_t *rank = malloc(cap * sizeof *rank), *nw = malloc(cap * sizeof *nw);
    if (!keys || !rank || !nw) {
        free(keys), free(rank), free(nw);
        return QT_ERROR(QT_ENOMEM, "%s: %zu merges", tok->src, tok->mcount);
    }
    memset(keys, 0xFF, cap * sizeof *keys);
    for (size_t i = 0; i < tok->mcap; i++) {
        if (tok->mkeys[i] == UINT64_MAX) continue;
        size_t j = hash_u64(tok->mkeys[i]) & (cap - 1);
        while (keys[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
        keys[j] = tok->mkeys[i], rank[j] = tok->mrank[i], nw[j] = tok->mnew[i];
    }
    free(tok->mkeys), free(tok->mrank), free(tok->mnew);
    tok->mkeys = keys, tok->mrank = rank, tok->mnew = nw, tok->mcap = cap;
    return QT_OK;
}

/* --------------------------------------------------------------- builder ---- */

qt_status qt_tok_new(const char *src, qt_tokenizer **out) {
    *out = NULL;
    qt_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok || !(tok->src = strdup(src))) {
        free(tok);
        return QT_ERROR(QT_ENOMEM, "%s: tokenizer", src);
    }
    tok->unk_id = tok->bos = tok->eos = -1;
    *out = tok;
    return QT_OK;
}

/* Makes id usable in id_str, growing the table. */
static qt_status id_reserve(qt_tokenizer *tok, int64_t id) {
    if (id < 0 || id >= QT_TOK_MAX_ID)
        return QT_ERROR(QT_EFORMAT, "%s: token id %lld outside [0, %d)", tok->src, (long long)id,
                        QT_TOK_MAX_ID);
    if ((size_t)id >= tok->id_cap) {
        size_t cap = tok->id_cap ? tok->id_cap : 1024;
        while (cap <= (size_t)id) cap *= 2;
        char **s = realloc(tok->id_str, cap * sizeof *s);
        if (!s) return QT_ERROR(QT_ENOMEM, "%s: id table of %zu", tok->src, cap);
        tok->id_str = s;
        uint8_t *sp = realloc(tok->id_special, cap);
        if (!sp) return QT_ERROR(QT_ENOMEM, "%s: id table of %zu", tok->src, cap);
        tok->id_special = sp;
        memset(s + tok->id_cap, 0, (cap - tok->id_cap) * sizeof *s);
        memset(sp + tok->id_cap, 0, cap - tok->id_cap);
        tok->id_cap = cap;
    }
    if (id >= tok->n_ids) tok->n_ids = (int32_t)id + 1;
    return QT_OK;
}

qt_status qt_tok_add_vocab(qt_tokenizer *tok, const char *token, int64_t id) {
    qt_status st = id_reserve(tok, id);
    if (st) return st;
    size_t n = strlen(token);
    if (qt_tok_vocab_get(tok, token, n) >= 0)
        return QT_ERROR(QT_EFORMAT, "%s: token \"%s\" appears twice in the vocab", tok->src, token);
    if ((tok->vcount + 1) * 2 > tok->vcap && (st = vocab_grow(tok))) return st;
    char *key = strdup(token);
    char *copy = tok->id_str[id] ? NULL : strdup(token);
    if (!key || (!tok->id_str[id] && !copy)) {
        free(key), free(copy);
        return QT_ERROR(QT_ENOMEM, "%s: token", tok->src);
    }
    size_t j = hash_bytes(token, n) & (tok->vcap - 1);
    while (tok->vkeys[j]) j = (j + 1) & (tok->vcap - 1);
    tok->vkeys[j] = key, tok->vvals[j] = (int32_t)id, tok->vcount++;
    if (copy) tok->id_str[id] = copy;
    return QT_OK;
}

qt_status qt_tok_add_added(qt_tokenizer *tok, const char *content, int64_t id,
                           const qt_added_token *opts) {
    qt_status st = id_reserve(tok, id);
    if (st) return st;
    size_t n = strlen(content);
    if (n == 0)
        return QT_ERROR(QT_EFORMAT, "%s: added token %lld is empty", tok->src, (long long)id);
    if (tok->n_added == tok->added_cap) {
        int cap = tok->added_cap ? tok->added_cap * 2 : 16;
        qt_added_token *a = realloc(tok->added, (size_t)cap * sizeof *a);
        if (!a) return QT_ERROR(QT_ENOMEM, "%s: added tokens", tok->src);
        tok->added = a, tok->added_cap = cap;
    }
    qt_added_token t = *opts;
    t.id = (int32_t)id;
    t.cps = malloc(n * sizeof *t.cps);
    char *copy = strdup(content);
    if (!t.cps || !copy) {
        free(t.cps), free(copy);
        return QT_ERROR(QT_ENOMEM, "%s: added token", tok->src);
    }
    t.n = qt_utf8_decode_lossy((const uint8_t *)content, n, t.cps);
    tok->added[tok->n_added++] = t;
    /* the added token's content wins over a vocab spelling of the same id, as HF's
     * id_to_token looks in the added vocabulary first */
    free(tok->id_str[id]);
    tok->id_str[id] = copy;
    tok->id_special[id] = opts->special;
    return QT_OK;
}

qt_status qt_tok_add_merge(qt_tokenizer *tok, const char *left, const char *right,
                           const char *where) {
    size_t nl = strlen(left), nr = strlen(right);
    int32_t a = qt_tok_vocab_get(tok, left, nl), b = qt_tok_vocab_get(tok, right, nr);
    if (a < 0 || b < 0)
        return QT_ERROR(QT_EFORMAT, "%s: %s: token \"%s\" is not in the vocab", tok->src, where,
                        a < 0 ? left : right);
    char *cat = malloc(nl + nr + 1);
    if (!cat) return QT_ERROR(QT_ENOMEM, "%s: merge", tok->src);
    memcpy(cat, left, nl), memcpy(cat + nl, right, nr + 1);
    int32_t c = qt_tok_vocab_get(tok, cat, nl + nr);
    free(cat);
    if (c < 0)
        return QT_ERROR(QT_EFORMAT, "%s: %s: merged token \"%s%s\" is not in the vocab", tok->src,
                        where, left, right);
    if (merge_find(tok, a, b) >= 0) return QT_OK; /* a repeat keeps its first (lower) rank */
    qt_status st;
    if ((tok->mcount + 1) * 2 > tok->mcap && (st = merges_grow(tok))) return st;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t j = hash_u64(key) & (tok->mcap - 1);
    while (tok->mkeys[j] != UINT64_MAX) j = (j + 1) & (tok->mcap - 1);
    tok->mkeys[j] = key, tok->mrank[j] = (int32_t)tok->mcount, tok->mnew[j] = c;
    tok->mcount++;
    return QT_OK;
}

typedef struct {
    uint32_t first;
    int index;
} first_key;

static int cmp_first(const void *x, const void *y) {
    const first_key *a = x, *b = y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index); /* stable: file order on ties */
}

qt_status qt_tok_finish(qt_tokenizer *tok) {
    size_t na = (size_t)tok->n_added;
    first_key *keys = malloc((na ? na : 1) * sizeof *keys);
    free(tok->added_by_first);
    tok->added_by_first = malloc((na ? na : 1) * sizeof(int));
    if (!keys || !tok->added_by_first) {
        free(keys);
        return QT_ERROR(QT_ENOMEM, "%s: added tokens", tok->src);
    }
    for (size_t i = 0; i < na; i++) keys[i] = (first_key){tok->added[i].cps[0], (int)i};
    qsort(keys, na, sizeof *keys, cmp_first);
    for (size_t i = 0; i < na; i++) tok->added_by_first[i] = keys[i].index;
    free(keys);
    memset(tok->first_bits, 0, sizeof tok->first_bits);
    for (int i = 0; i < tok->n_added; i++) {
        uint32_t c = tok->added[i].cps[0] & 1023;
        tok->first_bits[c >> 6] |= 1ull << (c & 63);
    }
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t n = qt_utf8_encode(byte_to_cp(b), u);
        tok->byte_id[b] = qt_tok_vocab_get(tok, (const char *)u, n);
    }
    for (int i = 0; i < tok->n_prefix; i++)
        if (tok->prefix[i] < 0 || tok->prefix[i] >= tok->n_ids || !tok->id_str[tok->prefix[i]])
            return QT_ERROR(QT_EFORMAT, "%s: post-processor token id %d is not in the vocab",
                            tok->src, tok->prefix[i]);
    for (int i = 0; i < tok->n_suffix; i++)
        if (tok->suffix[i] < 0 || tok->suffix[i] >= tok->n_ids || !tok->id_str[tok->suffix[i]])
            return QT_ERROR(QT_EFORMAT, "%s: post-processor token id %d is not in the vocab",
                            tok->src, tok->suffix[i]);
    return QT_OK;
}

void qt_tokenizer_free(qt_tokenizer *tok) {
    if (!tok) return;
    for (size_t i = 0; i < tok->vcap; i++) free(tok->vkeys[i]);
    for (size_t i = 0; i < tok->id_cap; i++) free(tok->id_str[i]);
    for (int i = 0; i < tok->n_added; i++) free(tok->added[i].cps);
    free(tok->vkeys), free(tok->vvals), free(tok->mkeys), free(tok->mrank), free(tok->mnew);
    free(tok->id_str), free(tok->id_special), free(tok->added), free(tok->added_by_first);
    free(tok->src);
    free(tok);
}

/* ------------------------------------------------------------ from arrays ---- */

qt_status qt_tokenizer_from_vocab(const qt_tokenizer_vocab *v, qt_tokenizer **out) {
    return qt_tok_from_vocab(v, "vocab", out);
}

qt_status qt_tok_from_vocab(const qt_tokenizer_vocab *v, const char *src, qt_tokenizer **out) {
    *out = NULL;
    if (!v || !v->tokens || v->n_tokens <= 0 || (v->n_merges > 0 && !v->merges))
        return QT_ERROR(QT_EINVAL, "%s: tokens (and merges when n_merges > 0) are required", src);
    const char *pre = v->pre ? v->pre : "gpt2";
    qt_split_kind steps[2];
    int n_steps = 0;
    bool ignore_merges = false, nfc = false;
    if (!strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") || !strcmp(pre, "default")) {
        steps[n_steps++] = QT_SPLIT_GPT2;
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) {
        steps[n_steps++] = QT_SPLIT_LLAMA3;
        ignore_merges = true; /* Llama-3's tokenizer.json sets it; llama.cpp does too */
    } else if (!strcmp(pre, "smollm")) {
        steps[n_steps++] = QT_SPLIT_DIGITS;
        steps[n_steps++] = QT_SPLIT_GPT2;
    } else if (!strcmp(pre, "qwen2")) {
        steps[n_steps++] = QT_SPLIT_QWEN2;
        nfc = true; /* HF's Qwen2 tokenizer.json normalizes to NFC (llama.cpp does not) */
    } else {
        return QT_ERROR(QT_ENOTSUP,
                        "%s: pre-tokenizer \"%s\" is not one qtrain implements "
                        "(gpt2, llama-bpe, smollm, qwen2)",
                        src, pre);
    }
    qt_tokenizer *tok;
    qt_status st = qt_tok_new(src, &tok);
    if (st) return st;
    memcpy(tok->steps, steps, sizeof steps);
    tok->n_steps = n_steps;
    tok->ignore_merges = ignore_merges;
    tok->nfc = nfc;
    for (int32_t i = 0; i < v->n_tokens && !st; i++) {
        if (!v->tokens[i]) {
            st = QT_ERROR(QT_EFORMAT, "%s: token %d is NULL", src, i);
            break;
        }
        int type = v->token_types ? v->token_types[i] : QT_TOKTYPE_NORMAL;
        if (type == QT_TOKTYPE_CONTROL || type == QT_TOKTYPE_USER_DEFINED) {
            qt_added_token o = {.special = type == QT_TOKTYPE_CONTROL};
            st = qt_tok_add_added(tok, v->tokens[i], i, &o);
        } else if (type == QT_TOKTYPE_UNUSED) {
            st = id_reserve(tok, i);
        } else {
            st = qt_tok_add_vocab(tok, v->tokens[i], i);
            if (!st && type == QT_TOKTYPE_UNKNOWN) tok->unk_id = i;
        }
    }
    char where[48];
    for (int32_t i = 0; i < v->n_merges && !st; i++) {
        const char *m = v->merges[i];
        const char *sp = m ? strchr(m, ' ') : NULL;
        if (!sp || strchr(sp + 1, ' ') || sp == m || !sp[1]) {
            st = QT_ERROR(QT_EFORMAT, "%s: merges[%d] is \"%s\", expected \"left right\"", src, i,
                          m ? m : "(null)");
            break;
        }
        char *left = strndup(m, (size_t)(sp - m));
        if (!left) {
            st = QT_ERROR(QT_ENOMEM, "%s: merge", src);
            break;
        }
        snprintf(where, sizeof where, "merges[%d]", i);
        st = qt_tok_add_merge(tok, left, sp + 1, where);
        free(left);
    }
    if (!st) {
        if (v->bos_id >= v->n_tokens || v->eos_id >= v->n_tokens)
            st = QT_ERROR(QT_EFORMAT, "%s: bos %d / eos %d outside the %d tokens", src, v->bos_id,
                          v->eos_id, v->n_tokens);
        tok->bos = v->bos_id < 0 ? -1 : v->bos_id;
        tok->eos = v->eos_id < 0 ? -1 : v->eos_id;
        if (v->add_bos && tok->bos >= 0) tok->prefix[tok->n_prefix++] = tok->bos;
        if (v->add_eos && tok->eos >= 0) tok->suffix[tok->n_suffix++] = tok->eos;
    }
    if (!st) st = qt_tok_finish(tok);
    if (st) {
        qt_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return QT_OK;
}

/* ----------------------------------------------------------------- encode ---- */

typedef struct {
    int32_t *ids;
    size_t n, cap;
} idvec;

static qt_status idvec_push(idvec *v, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        int32_t *p = realloc(v->ids, cap * sizeof *p);
        if (!p) return QT_ERROR(QT_ENOMEM, "tokenizer: %zu ids", v->n);
        v->ids = p, v->cap = cap;
    }
    v->ids[v->n++] = id;
    return QT_OK;
}

typedef struct {
    int32_t id, prev, next; /* prev/next: -1 at the ends; id -1 once merged away */
} symbol;

typedef struct {
    int32_t rank, pos, new_id;
} merge_item;

static bool item_less(merge_item a, merge_item b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

/* Scratch reused across the pieces of one encode call. */
typedef struct {
    uint8_t *bytes;   /* (cap_bytes) piece as UTF-8 */
    char *mapped;     /* (2 * cap_bytes) piece in the byte-level alphabet */
    symbol *sym;      /* (cap_bytes) */
    merge_item *heap; /* (3 * cap_bytes): ns-1 first pairs + 2 per merge, at most */
    size_t cap_bytes;
} scratch;

static qt_status scratch_fit(scratch *s, size_t nbytes) {
    if (nbytes <= s->cap_bytes) return QT_OK;
    size_t cap = s->cap_bytes ? s->cap_bytes : 256;
    while (cap < nbytes) cap *= 2;
    free(s->bytes), free(s->mapped), free(s->sym), free(s->heap);
    s->bytes = malloc(cap);
    s->mapped = malloc(2 * cap + 1);
    s->sym = malloc(cap * sizeof *s->sym);
    s->heap = malloc(3 * cap * sizeof *s->heap);
    s->cap_bytes = s->bytes && s->mapped && s->sym && s->heap ? cap : 0;
    return s->cap_bytes ? QT_OK : QT_ERROR(QT_ENOMEM, "tokenizer: piece of %zu bytes", nbytes);
}

static void heap_push(merge_item *h, size_t *n, merge_item it) {
    size_t i = (*n)++;
    while (i > 0 && item_less(it, h[(i - 1) / 2])) h[i] = h[(i - 1) / 2], i = (i - 1) / 2;
    h[i] = it;
}

static merge_item heap_pop(merge_item *h, size_t *n) {
    merge_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && item_less(h[c + 1], h[c])) c++;
        if (!item_less(h[c], last)) break;
        h[i] = h[c], i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void push_pair(const qt_tokenizer *tok, merge_item *h, size_t *nh, const symbol *sym,
                      int32_t pos) {
    int32_t next = sym[pos].next;
    if (next < 0) return;
    int64_t m = merge_find(tok, sym[pos].id, sym[next].id);
    if (m >= 0) heap_push(h, nh, (merge_item){tok->mrank[m], pos, tok->mnew[m]});
}

/* BPE of one pre-token of nb bytes (in s->bytes): HF's Word::merge_all. */
static qt_status bpe_piece(const qt_tokenizer *tok, scratch *s, size_t nb, idvec *out) {
    if (tok->ignore_merges) {
        size_t m = 0;
        for (size_t i = 0; i < nb; i++)
            m += qt_utf8_encode(byte_to_cp(s->bytes[i]), (uint8_t *)s->mapped + m);
        int32_t id = qt_tok_vocab_get(tok, s->mapped, m);
        if (id >= 0) return idvec_push(out, id);
    }
    symbol *sym = s->sym;
    int32_t ns = 0;
    for (size_t i = 0; i < nb; i++) {
        int32_t id = tok->byte_id[s->bytes[i]];
        if (id < 0) id = tok->unk_id; /* HF drops a char with no token when there is no unk */
        if (id < 0) continue;
        sym[ns] = (symbol){id, ns - 1, -1};
        if (ns > 0) sym[ns - 1].next = ns;
        ns++;
    }
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(tok, s->heap, &nh, sym, i);
    while (nh) {
        merge_item top = heap_pop(s->heap, &nh);
        symbol *a = &sym[top.pos];
        if (a->id < 0 || a->next < 0) continue;
        int64_t m = merge_find(tok, a->id, sym[a->next].id);
        if (m < 0 || tok->mnew[m] != top.new_id) continue; /* stale entry */
        symbol *b = &sym[a->next];
        a->id = top.new_id;
        a->next = b->next;
        if (b->next >= 0) sym[b->next].prev = top.pos;
        b->id = -1;
        if (a->prev >= 0) push_pair(tok, s->heap, &nh, sym, a->prev);
        push_pair(tok, s->heap, &nh, sym, top.pos);
    }
    qt_status st = QT_OK;
    for (int32_t i = ns ? 0 : -1; i >= 0 && !st; i = sym[i].next) st = idvec_push(out, sym[i].id);
    return st;
}

/* A segment of code points between added tokens, or one added token. */
typedef struct {
    size_t start, end;
    int32_t id; /* -1: text */
} segment;

typedef struct {
    segment *seg;
    size_t n, cap;
} segvec;

static qt_status segvec_push(segvec *v, size_t start, size_t end, int32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        segment *p = realloc(v->seg, cap * sizeof *p);
        if (!p) return QT_ERROR(QT_ENOMEM, "tokenizer: segments");
        v->seg = p, v->cap = cap;
    }
    v->seg[v->n++] = (segment){start, end, id};
    return QT_OK;
}

/* HF tests single_word neighbours with the regex \w */
static bool is_word(uint32_t c) { return (qt_uc_class(c) & QT_UC_WORD) != 0; }
static bool is_space(uint32_t c) { return (qt_uc_class(c) & QT_UC_SPACE) != 0; }

/* Cuts the added tokens with normalized == `normalized` out of the text segments of `in`
 * (AddedVocabulary::find_matches over one piece): leftmost-longest matches, not
 * overlapping; a skipped match (a special token while they are not parsed, a single_word
 * token inside a word) stays text but is still consumed, as aho-corasick's iteration is. */
static qt_status split_added(const qt_tokenizer *tok, const uint32_t *cps, bool normalized,
                             bool parse_special, const segvec *in, segvec *out) {
    qt_status st = QT_OK;
    for (size_t s = 0; s < in->n && !st; s++) {
        segment g = in->seg[s];
        if (g.id >= 0) {
            st = segvec_push(out, g.start, g.end, g.id);
            continue;
        }
        size_t from = g.start, i = g.start;
        while (i < g.end && !st) {
            const qt_added_token *best = NULL;
            uint32_t c = cps[i] & 1023;
            if (!(tok->first_bits[c >> 6] >> (c & 63) & 1)) { /* no added token starts here */
                i++;
                continue;
            }
            /* the added tokens starting with cps[i]: lower bound in added_by_first */
            int lo = 0, hi = tok->n_added;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (tok->added[tok->added_by_first[mid]].cps[0] < cps[i])
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (int k = lo; k < tok->n_added; k++) {
                const qt_added_token *t = &tok->added[tok->added_by_first[k]];
                if (t->cps[0] != cps[i]) break;
                if (t->normalized != normalized || t->n > g.end - i || (best && t->n <= best->n))
                    continue;
                if (memcmp(cps + i, t->cps, t->n * sizeof *cps) == 0) best = t;
            }
            if (!best) {
                i++;
                continue;
            }
            size_t ms = i, me = i + best->n;
            i = me;
            if (best->special && !parse_special) continue;
            if (best->single_word &&
                ((ms > g.start && is_word(cps[ms - 1])) || (me < g.end && is_word(cps[me]))))
                continue;
            if (best->lstrip)
                while (ms > from && is_space(cps[ms - 1])) ms--;
            if (best->rstrip)
                while (me < g.end && is_space(cps[me])) me++;
            if (ms > from) st = segvec_push(out, from, ms, -1);
            if (!st) st = segvec_push(out, ms, me, best->id);
            from = i = me;
        }
        if (!st && from < g.end) st = segvec_push(out, from, g.end, -1);
    }
    return st;
}

/* Pre-tokenizes one text segment and BPE-encodes its pieces. */
static qt_status encode_text(const qt_tokenizer *tok, const uint32_t *cps, size_t n, scratch *s,
                             segvec *pa, segvec *pb, idvec *out) {
    pa->n = 0;
    qt_status st = segvec_push(pa, 0, n, -1);
    for (int k = 0; k < tok->n_steps && !st; k++) {
        pb->n = 0;
        for (size_t p = 0; p < pa->n && !st; p++) {
            const uint32_t *c = cps + pa->seg[p].start;
            size_t len = pa->seg[p].end - pa->seg[p].start, gap = 0, i = 0;
            while (i < len && !st) {
                size_t m = qt_split_match(tok->steps[k], c, len, i);
                if (!m) {
                    i++;
                    continue;
                }
                if (gap < i) st = segvec_push(pb, pa->seg[p].start + gap, pa->seg[p].start + i, -1);
                if (!st) st = segvec_push(pb, pa->seg[p].start + i, pa->seg[p].start + i + m, -1);
                i += m, gap = i;
            }
            if (!st && gap < len) st = segvec_push(pb, pa->seg[p].start + gap, pa->seg[p].end, -1);
        }
        segvec t = *pa;
        *pa = *pb, *pb = t;
    }
    for (size_t p = 0; p < pa->n && !st; p++) {
        size_t len = pa->seg[p].end - pa->seg[p].start;
        if ((st = scratch_fit(s, 4 * len))) break;
        size_t nb = 0;
        for (size_t i = pa->seg[p].start; i < pa->seg[p].end; i++)
            nb += qt_utf8_encode(cps[i], s->bytes + nb);
        st = bpe_piece(tok, s, nb, out);
    }
    return st;
}

/* NFC of the text segments of `in` (added tokens kept as they are) into a new code point
 * array; `in` is rewritten to index it. */
static qt_status normalize_segments(segvec *in, const uint32_t *cps, size_t ncp, uint32_t **norm) {
    size_t cap = QT_NFC_MAX_EXPANSION * ncp + 1;
    uint32_t *nc = malloc(cap * sizeof *nc), *tmp = malloc(cap * sizeof *tmp);
    if (!nc || !tmp) {
        free(nc), free(tmp);
        return QT_ERROR(QT_ENOMEM, "tokenizer: NFC of %zu code points", ncp);
    }
    size_t w = 0;
    for (size_t i = 0; i < in->n; i++) {
        segment *g = &in->seg[i];
        size_t m = g->id >= 0 ? 0 : qt_nfc(cps + g->start, g->end - g->start, nc + w, tmp);
        g->start = w, g->end = w + m;
        w += m;
    }
    free(tmp);
    *norm = nc;
    return QT_OK;
}

qt_status qt_tokenizer_encode(const qt_tokenizer *tok, const char *text, size_t len, unsigned flags,
                              int32_t **ids, size_t *n) {
    *ids = NULL, *n = 0;
    if (!tok || (!text && len)) return QT_ERROR(QT_EINVAL, "tokenizer_encode: NULL argument");
    idvec out = {0};
    segvec sa = {0}, sb = {0}, pa = {0}, pb = {0};
    scratch s = {0};
    uint32_t *raw = malloc((len + 1) * sizeof *raw), *norm = NULL, *work = NULL;
    qt_status st = raw ? QT_OK : QT_ERROR(QT_ENOMEM, "tokenizer: text of %zu bytes", len);
    size_t ncp = st ? 0 : qt_utf8_decode_lossy((const uint8_t *)text, len, raw);
    const uint32_t *cps = raw;
    if (!st && (flags & QT_TOK_ADD_SPECIAL))
        for (int i = 0; i < tok->n_prefix && !st; i++) st = idvec_push(&out, tok->prefix[i]);
    /* HF's AddedVocabulary::extract_and_normalize: the non-normalized added tokens are
     * cut out of the raw text, the rest is normalized, then the normalized ones are cut */
    if (!st) st = segvec_push(&sa, 0, ncp, -1);
    if (!st) st = split_added(tok, cps, false, flags & QT_TOK_PARSE_SPECIAL, &sa, &sb);
    if (!st && tok->nfc) {
        st = normalize_segments(&sb, raw, ncp, &norm);
        cps = norm;
    }
    sa.n = 0;
    if (!st) st = split_added(tok, cps, true, flags & QT_TOK_PARSE_SPECIAL, &sb, &sa);
    size_t longest = 0;
    for (size_t i = 0; i < sa.n && !st; i++)
        if (sa.seg[i].end - sa.seg[i].start > longest) longest = sa.seg[i].end - sa.seg[i].start;
    if (!st && !(work = malloc((longest + 2) * sizeof *work)))
        st = QT_ERROR(QT_ENOMEM, "tokenizer: text of %zu bytes", len);
    for (size_t i = 0; i < sa.n && !st; i++) {
        segment g = sa.seg[i];
        if (g.id >= 0) {
            st = idvec_push(&out, g.id);
            continue;
        }
        size_t m = 0;
        if (tok->add_prefix_space && cps[g.start] != ' ') work[m++] = ' ';
        memcpy(work + m, cps + g.start, (g.end - g.start) * sizeof *cps);
        st = encode_text(tok, work, m + g.end - g.start, &s, &pa, &pb, &out);
    }
    if (!st && (flags & QT_TOK_ADD_SPECIAL))
        for (int i = 0; i < tok->n_suffix && !st; i++) st = idvec_push(&out, tok->suffix[i]);
    free(raw), free(norm), free(work), free(sa.seg), free(sb.seg), free(pa.seg), free(pb.seg);
    free(s.bytes), free(s.mapped), free(s.sym), free(s.heap);
    if (st) {
        free(out.ids);
        return st;
    }
    *ids = out.ids, *n = out.n;
    return QT_OK;
}

/* ----------------------------------------------------------------- decode ---- */

qt_status qt_tokenizer_decode(const qt_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                              char **text, size_t *len) {
    *text = NULL, *len = 0;
    if (!tok || (!ids && n)) return QT_ERROR(QT_EINVAL, "tokenizer_decode: NULL argument");
    size_t cap = 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_ids || !tok->id_str[ids[i]])
            return QT_ERROR(QT_EINVAL, "%s: decode: ids[%zu] = %d is not a token (vocab of %d)",
                            tok->src, i, ids[i], tok->n_ids);
        cap += strlen(tok->id_str[ids[i]]);
    }
    char *buf = malloc(cap), *o = buf;
    if (!buf) return QT_ERROR(QT_ENOMEM, "%s: decode of %zu ids", tok->src, n);
    size_t maxl = 0;
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(tok->id_str[ids[i]]);
        if (tl > maxl) maxl = tl;
    }
    uint32_t *cp = malloc((maxl + 1) * sizeof *cp);
    if (!cp) {
        free(buf);
        return QT_ERROR(QT_ENOMEM, "%s: decode of %zu ids", tok->src, n);
    }
    for (size_t i = 0; i < n; i++) {
        if ((flags & QT_TOK_SKIP_SPECIAL) && tok->id_special[ids[i]]) continue;
        const char *t = tok->id_str[ids[i]];
        size_t tl = strlen(t);
        /* HF's ByteLevel decoder: a token all of whose chars are in the alphabet becomes
         * their bytes, any other token (an added one like " <mask>") its own UTF-8 */
        size_t nc = qt_utf8_decode_lossy((const uint8_t *)t, tl, cp);
        bool all = true;
        for (size_t k = 0; k < nc && all; k++) all = cp_to_byte(cp[k]) >= 0;
        if (all) {
            for (size_t k = 0; k < nc; k++) *o++ = (char)cp_to_byte(cp[k]);
        } else {
            memcpy(o, t, tl);
            o += tl;
        }
    }
    free(cp);
    *o = 0;
    *text = buf, *len = (size_t)(o - buf);
    return QT_OK;
}

/* ---------------------------------------------------------------- queries ---- */

int32_t qt_tokenizer_vocab_size(const qt_tokenizer *tok) { return tok->n_ids; }
int32_t qt_tokenizer_bos(const qt_tokenizer *tok) { return tok->bos; }
int32_t qt_tokenizer_eos(const qt_tokenizer *tok) { return tok->eos; }

const char *qt_tokenizer_token(const qt_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids ? tok->id_str[id] : NULL;
}

bool qt_tokenizer_is_special(const qt_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && tok->id_special[id];
}

int32_t qt_tokenizer_token_id(const qt_tokenizer *tok, const char *token) {
    for (int k = 0; k < tok->n_added; k++) {
        const char *s = tok->id_str[tok->added[k].id];
        if (s && strcmp(s, token) == 0) return tok->added[k].id;
    }
    return qt_tok_vocab_get(tok, token, strlen(token));
}
