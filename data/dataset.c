/*
 * dataset.c - training data: read text or JSONL, tokenize once (bytes or a BPE
 * tokenizer) into a cache file, split train/validation, shuffle windows per epoch, and
 * keep a resumable position (see qt_data.h).
 *
 * Cache file (little-endian): "QTTOKS01", u64 n_tokens, u64 flags (1 = has mask),
 * u64 source size, i64 source mtime, u64 tokenizer fingerprint, u64 format, then
 * i32 tokens[n_tokens] and, with a mask, u8 mask[n_tokens]. Any mismatch of the
 * source or tokenizer simply retokenizes; the cache is written to a temporary file and
 * renamed into place. Prompt/response records through a chat template: chat_template.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "qt_data.h"

/* ---- growable token stream ----------------------------------------------------------- */
typedef struct {
    int32_t *tok;
    uint8_t *mask;
    int64_t n, cap;
    bool masked; /* some token is masked */
} stream;

static bool stream_push(stream *s, const int32_t *ids, int64_t n, uint8_t m) {
    if (n == 0) return true;
    if (s->n + n > s->cap) {
        int64_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + n) cap *= 2;
        int32_t *t = realloc(s->tok, (size_t)cap * sizeof *t);
        if (!t) return false;
        s->tok = t;
        uint8_t *mk = realloc(s->mask, (size_t)cap);
        if (!mk) return false;
        s->mask = mk;
        s->cap = cap;
    }
    memcpy(s->tok + s->n, ids, (size_t)n * sizeof(int32_t));
    memset(s->mask + s->n, m, (size_t)n);
    if (!m && n) s->masked = true;
    s->n += n;
    return true;
}

/* Tokenizes text and appends it; bytes when tok is NULL. */
static qt_status push_text(stream *s, const qt_tokenizer *tok, const char *text, size_t len,
                           unsigned flags, uint8_t m, const char *where) {
    if (!tok) {
        int32_t buf[512];
        for (size_t i = 0; i < len;) {
            size_t k = 0;
            for (; k < 512 && i < len; k++, i++) buf[k] = (unsigned char)text[i];
            if (!stream_push(s, buf, (int64_t)k, m)) return QT_ERROR(QT_ENOMEM, "%s: out of memory", where);
        }
        return QT_OK;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    qt_status st = qt_tokenizer_encode(tok, text, len, flags, &ids, &n);
    if (st != QT_OK) return QT_ERROR(st, "%s: tokenizing failed: %s", where, qt_error_message());
    bool ok = stream_push(s, ids, (int64_t)n, m);
    free(ids);
    return ok ? QT_OK : QT_ERROR(QT_ENOMEM, "%s: out of memory", where);
}

/* The end of one document: EOS for a tokenizer that has one, a newline for bytes. */
static qt_status push_end(stream *s, const qt_tokenizer *tok, const char *where) {
    int32_t e = tok ? qt_tokenizer_eos(tok) : '\n';
    if (e < 0) return QT_OK;
    if (s->n && s->tok[s->n - 1] == e) return QT_OK; /* the post-processor added it */
    return stream_push(s, &e, 1, 1) ? QT_OK : QT_ERROR(QT_ENOMEM, "%s: out of memory", where);
}

/* One prompt/response record through a chat template: the rendered text's ids exactly
 * (special tokens parsed, nothing added). The prompt part is the longest common prefix of
 * the prompt's ids and the whole record's (a BPE merge across the boundary, such as a
 * response opening with a newline, goes to the response); the loss sees the response
 * through its last end marker, and nothing after it (ChatML's trailing newline). */
static qt_status push_chat(stream *s, const qt_tokenizer *tok, const qt_chat_template *chat,
                           const char *prompt, const char *resp, const char *where) {
    char *text = NULL;
    size_t plen = 0, n = 0, np = 0;
    int32_t *ids = NULL, *pids = NULL;
    qt_status st = qt_chat_template_render(chat, prompt, resp, &text, &plen);
    if (st == QT_OK) st = qt_tokenizer_encode(tok, text, strlen(text), QT_TOK_PARSE_SPECIAL, &ids, &n);
    if (st == QT_OK) st = qt_tokenizer_encode(tok, text, plen, QT_TOK_PARSE_SPECIAL, &pids, &np);
    free(text);
    if (st != QT_OK) {
        free(ids);
        free(pids);
        return QT_ERROR(st, "%s: tokenizing failed: %s", where, qt_error_message());
    }
    size_t k = 0, end = n, e = 0;
    while (k < np && k < n && pids[k] == ids[k]) k++;
    int32_t end_id = qt_chat_template_end_id(chat, tok);
    for (size_t i = k; i < n; i++)
        if (ids[i] == end_id) end = i + 1;
    e = end > k ? end : k;
    bool ok = stream_push(s, ids, (int64_t)k, 0) && stream_push(s, ids + k, (int64_t)(e - k), 1) &&
              stream_push(s, ids + e, (int64_t)(n - e), 0);
    free(ids);
    free(pids);
    return ok ? QT_OK : QT_ERROR(QT_ENOMEM, "%s: out of memory", where);
}

static qt_status tokenize_jsonl(stream *s, const qt_tokenizer *tok, const qt_chat_template *chat,
                                const char *path, char *buf, size_t len) {
    bool templated = tok && chat && chat->family != QT_CHAT_NONE;
    char where[600];
    long line = 0;
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *stop = nl ? nl : end;
        line++;
        *stop = 0;
        char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        snprintf(where, sizeof where, "%s:%ld", path, line);
        if (*q) {
            cJSON *o = cJSON_Parse(q);
            if (!o || !cJSON_IsObject(o)) {
                cJSON_Delete(o);
                return QT_ERROR(QT_EFORMAT, "%s: not a JSON object", where);
            }
            cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
            cJSON *prompt = cJSON_GetObjectItemCaseSensitive(o, "prompt");
            cJSON *resp = cJSON_GetObjectItemCaseSensitive(o, "response");
            qt_status st = QT_OK;
            if (cJSON_IsString(text)) {
                st = push_text(s, tok, text->valuestring, strlen(text->valuestring),
                               QT_TOK_ADD_SPECIAL, 1, where);
            } else if (templated && cJSON_IsString(prompt) && cJSON_IsString(resp)) {
                st = push_chat(s, tok, chat, prompt->valuestring, resp->valuestring, where);
            } else if (cJSON_IsString(prompt) && cJSON_IsString(resp)) {
                /* BOS (if any) with the prompt; the loss sees only the response and EOS */
                st = push_text(s, tok, prompt->valuestring, strlen(prompt->valuestring),
                               QT_TOK_ADD_SPECIAL, 0, where);
                if (st == QT_OK && s->n && tok && qt_tokenizer_eos(tok) >= 0 &&
                    s->tok[s->n - 1] == qt_tokenizer_eos(tok))
                    s->n--; /* a post-processor's EOS belongs after the response */
                if (st == QT_OK)
                    st = push_text(s, tok, resp->valuestring, strlen(resp->valuestring), 0, 1, where);
            } else {
                st = QT_ERROR(QT_EFORMAT, "%s: expected a string \"text\", or strings \"prompt\" "
                                          "and \"response\"", where);
            }
            bool chat_record = templated && !cJSON_IsString(text);
            cJSON_Delete(o);
            if (st == QT_OK && !chat_record) st = push_end(s, tok, where); /* chat: the end marker */
            if (st != QT_OK) return st;
        }
        p = stop + 1;
    }
    return QT_OK;
}

/* ---- cache ------------------------------------------------------------------------- */
#define CACHE_MAGIC "QTTOKS01"

static uint64_t fingerprint(const qt_tokenizer *tok, qt_data_format fmt,
                            const qt_chat_template *chat) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)fmt; /* FNV-1a */
    if (!tok) return h;
    if (chat && chat->family != QT_CHAT_NONE) { /* the rendering is part of the tokens */
        h = (h ^ ((uint64_t)chat->family * 2 + chat->trim)) * 1099511628211ULL;
        for (const char *c = chat->system; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    }
    int32_t n = qt_tokenizer_vocab_size(tok);
    for (int32_t i = 0; i < n; i++) {
        const char *t = qt_tokenizer_token(tok, i);
        for (const char *c = t ? t : ""; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
    }
    h ^= (uint64_t)(qt_tokenizer_bos(tok) + 7) * 31 + (uint64_t)(qt_tokenizer_eos(tok) + 7);
    return h;
}

static void cache_path(char *out, size_t n, const char *dir, const char *src, uint64_t fp) {
    const char *base = strrchr(src, '/');
    base = base ? base + 1 : src;
    snprintf(out, n, "%s/%s.%016llx.qtok", dir, base, (unsigned long long)fp);
}

static bool cache_load(const char *path, const struct stat *src, uint64_t fp, stream *s) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[8];
    uint64_t h[6];
    bool ok = fread(magic, 1, 8, f) == 8 && !memcmp(magic, CACHE_MAGIC, 8) &&
              fread(h, sizeof h[0], 6, f) == 6 && h[2] == (uint64_t)src->st_size &&
              (int64_t)h[3] == (int64_t)src->st_mtime && h[4] == fp && h[0] < ((uint64_t)1 << 40);
    if (ok) {
        s->n = s->cap = (int64_t)h[0];
        s->tok = malloc((size_t)(s->n ? s->n : 1) * sizeof(int32_t));
        s->mask = malloc((size_t)(s->n ? s->n : 1));
        ok = s->tok && s->mask && fread(s->tok, sizeof(int32_t), (size_t)s->n, f) == (size_t)s->n;
        if (ok && (h[1] & 1)) {
            ok = fread(s->mask, 1, (size_t)s->n, f) == (size_t)s->n;
            s->masked = true;
        } else if (ok) {
            memset(s->mask, 1, (size_t)s->n);
        }
    }
    fclose(f);
    if (!ok) {
        free(s->tok);
        free(s->mask);
        memset(s, 0, sizeof *s);
    }
    return ok;
}

/* Best effort: a cache that cannot be written only costs the next run a retokenization. */
static void cache_save(const char *path, const struct stat *src, uint64_t fp, const stream *s) {
    if (s->n == 0) return; /* nothing worth caching; the open fails anyway */
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    uint64_t h[6] = {(uint64_t)s->n, s->masked ? 1u : 0u, (uint64_t)src->st_size,
                     (uint64_t)(int64_t)src->st_mtime, fp, 0};
    bool ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(h, sizeof h[0], 6, f) == 6 &&
              fwrite(s->tok, sizeof(int32_t), (size_t)s->n, f) == (size_t)s->n &&
              (!s->masked || fwrite(s->mask, 1, (size_t)s->n, f) == (size_t)s->n);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) unlink(tmp);
}

/* ---- the dataset ------------------------------------------------------------------- */

static void shuffle(qt_dataset *ds) {
    for (int64_t i = 0; i < ds->n_train; i++) ds->order[i] = i;
    /* Fisher-Yates driven by the counter RNG: the order is a function of (seed, epoch) */
    uint64_t s = ds->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)ds->epoch;
    for (int64_t i = ds->n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)(qt_rand_u64(s, (uint64_t)i) % (uint64_t)(i + 1));
        int64_t t = ds->order[i];
        ds->order[i] = ds->order[j];
        ds->order[j] = t;
    }
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

qt_status qt_dataset_open(qt_dataset *ds, const qt_dataset_config *cfg) {
    memset(ds, 0, sizeof *ds);
    const char *path = cfg->path;
    if (cfg->seq_len < 1) return QT_ERROR(QT_EINVAL, "%s: seq_len must be positive", path);
    qt_data_format fmt = cfg->format;
    if (fmt == QT_DATA_AUTO) fmt = ends_with(path, ".jsonl") ? QT_DATA_JSONL : QT_DATA_TEXT;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return QT_ERROR(QT_EIO, "%s: cannot open training data: %s", path, strerror(errno));
    uint64_t fp = fingerprint(cfg->tok, fmt, cfg->chat);
    char cpath[1100] = "";
    stream s = {0};
    qt_status st = QT_OK;
    if (cfg->cache_dir) cache_path(cpath, sizeof cpath, cfg->cache_dir, path, fp);
    if (cpath[0] && cache_load(cpath, &sb, fp, &s)) {
        ds->from_cache = true;
    } else {
        char *buf = NULL;
        size_t len = 0;
        if (!S_ISREG(sb.st_mode)) return QT_ERROR(QT_EIO, "%s: not a regular file", path);
        st = qt_read_file(path, 0, &buf, &len);
        if (st != QT_OK) return st;
        if (fmt == QT_DATA_JSONL) st = tokenize_jsonl(&s, cfg->tok, cfg->chat, path, buf, len);
        else st = push_text(&s, cfg->tok, buf, len, QT_TOK_ADD_SPECIAL, 1, path);
        free(buf);
        if (st == QT_OK && cpath[0]) cache_save(cpath, &sb, fp, &s);
    }
    if (st != QT_OK) {
        free(s.tok);
        free(s.mask);
        return st;
    }
    ds->tokens = s.tok;
    ds->mask = s.masked ? s.mask : NULL;
    if (!s.masked) free(s.mask);
    ds->n_tokens = s.n;
    ds->seq_len = cfg->seq_len;
    ds->seed = cfg->seed;
    ds->world = 1;
    int64_t n_val_tok = (int64_t)((double)s.n * (double)cfg->val_fraction);
    ds->val_start = s.n - n_val_tok;
    ds->n_train = ds->val_start > 0 ? (ds->val_start - 1) / cfg->seq_len : 0;
    ds->n_val = n_val_tok > 0 ? (n_val_tok - 1) / cfg->seq_len : 0;
    if (ds->n_train < 1 || (cfg->val_fraction > 0 && ds->n_val < 1)) {
        qt_dataset_close(ds);
        return QT_ERROR(QT_EINVAL,
                        "%s: %lld tokens is too little for one training window and one "
                        "validation window of %lld tokens (val_fraction %g)",
                        path, (long long)s.n, (long long)cfg->seq_len + 1,
                        (double)cfg->val_fraction);
    }
    ds->order = malloc((size_t)ds->n_train * sizeof(int64_t));
    if (!ds->order) {
        qt_dataset_close(ds);
        return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
    }
    shuffle(ds);
    return QT_OK;
}

qt_status qt_dataset_open_bytes(qt_dataset *ds, const char *path, int64_t seq_len,
                                float val_fraction, uint64_t seed) {
    qt_dataset_config c = {.path = path, .format = QT_DATA_TEXT, .seq_len = seq_len,
                           .val_fraction = val_fraction, .seed = seed};
    return qt_dataset_open(ds, &c);
}

void qt_dataset_close(qt_dataset *ds) {
    free(ds->tokens);
    free(ds->mask);
    free(ds->order);
    memset(ds, 0, sizeof *ds);
}

qt_status qt_dataset_shard(qt_dataset *ds, int rank, int world) {
    if (world < 1 || rank < 0 || rank >= world)
        return QT_ERROR(QT_EINVAL, "dataset: rank %d of world %d", rank, world);
    if (ds->n_train < world)
        return QT_ERROR(QT_EINVAL, "dataset: %lld training windows cannot feed %d ranks",
                        (long long)ds->n_train, world);
    ds->rank = rank;
    ds->world = world;
    return QT_OK;
}

static void window(const qt_dataset *ds, int64_t start, int32_t *ids, int32_t *targets) {
    memcpy(ids, ds->tokens + start, (size_t)ds->seq_len * sizeof(int32_t));
    for (int64_t j = 0; j < ds->seq_len; j++) {
        int64_t p = start + 1 + j;
        targets[j] = ds->mask && !ds->mask[p] ? -100 : ds->tokens[p];
    }
}

/* The next epoch's order: reshuffled, from the start. */
static void next_epoch(qt_dataset *ds) {
    ds->epoch++;
    ds->pos -= ds->n_train;
    shuffle(ds);
}

void qt_dataset_next(qt_dataset *ds, int64_t B, int32_t *ids, int32_t *targets) {
    /* One call on every rank reads one global batch of world * B windows, order[pos ..
     * pos + world B): rank r its contiguous slice from pos + r B, so row b of rank r is
     * row r B + b of the batch one process with batch world B reads. An epoch boundary
     * inside the batch moves to the next epoch's order at the same window on every rank,
     * and every rank ends at the same (epoch, pos). pos == n_train wraps lazily, at the
     * next read (the position a checkpoint stores). */
    int64_t start = (int64_t)ds->rank * B;
    for (int64_t b = 0; b < B; b++) {
        while (ds->pos + start + b >= ds->n_train) next_epoch(ds); /* pos may go negative */
        window(ds, ds->order[ds->pos + start + b] * ds->seq_len, ids + b * ds->seq_len,
               targets + b * ds->seq_len);
    }
    ds->pos += (int64_t)ds->world * B;
    while (ds->pos > ds->n_train) next_epoch(ds);
}

void qt_dataset_val(const qt_dataset *ds, int64_t first, int64_t B, int32_t *ids,
                    int32_t *targets) {
    for (int64_t b = 0; b < B; b++) {
        int64_t w = ds->n_val ? (first + b) % ds->n_val : 0;
        window(ds, ds->val_start + w * ds->seq_len, ids + b * ds->seq_len,
               targets + b * ds->seq_len);
    }
}

qt_status qt_dataset_seek(qt_dataset *ds, int64_t epoch, int64_t pos) {
    if (epoch < 0 || pos < 0 || pos > ds->n_train)
        return QT_ERROR(QT_EINVAL, "dataset: bad position (epoch %lld, index %lld) for %lld "
                                   "windows", (long long)epoch, (long long)pos,
                        (long long)ds->n_train);
    ds->epoch = epoch;
    ds->pos = pos;
    shuffle(ds);
    return QT_OK;
}
