/*
 * tokenizer_vocab.c - a built tokenizer back as the arrays a GGUF's tokenizer.ggml.* keys
 * hold (the inverse of qt_tokenizer_from_vocab), for the GGUF exporter. Token types follow
 * llama.cpp's convert_hf_to_gguf.py (TextModel.get_vocab_base): an id with no token is
 * "[PAD<id>]" of type UNUSED, a special added token is CONTROL, any other added token
 * USER_DEFINED, the rest NORMAL (UNKNOWN for the unk token). Merges come back in rank
 * order as "left right". The pre-tokenizer is named as llama.cpp's llama-vocab.cpp
 * knows it ("gpt-2", "llama-bpe", "smollm", "qwen2").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qt_data.h"
#include "tokenizer_internal.h"

/* llama.cpp's name for the pre-tokenizer, or NULL when it has none that splits alike. */
static const char *pre_name(const qt_tokenizer *tok) {
    if (tok->add_prefix_space) return NULL;
    if (tok->n_steps == 1 && tok->steps[0] == QT_SPLIT_GPT2 && !tok->nfc && !tok->ignore_merges)
        return "gpt-2";
    if (tok->n_steps == 1 && tok->steps[0] == QT_SPLIT_LLAMA3 && !tok->nfc && tok->ignore_merges)
        return "llama-bpe";
    if (tok->n_steps == 2 && tok->steps[0] == QT_SPLIT_DIGITS && tok->steps[1] == QT_SPLIT_GPT2 &&
        !tok->nfc && !tok->ignore_merges)
        return "smollm";
    if (tok->n_steps == 1 && tok->steps[0] == QT_SPLIT_QWEN2 && tok->nfc && !tok->ignore_merges)
        return "qwen2";
    return NULL;
}

void qt_tokenizer_vocab_free(qt_tokenizer_vocab *v) {
    if (!v) return;
    for (int32_t i = 0; v->tokens && i < v->n_tokens; i++) free((char *)v->tokens[i]);
    for (int32_t i = 0; v->merges && i < v->n_merges; i++) free((char *)v->merges[i]);
    free((void *)v->tokens);
    free((void *)v->merges);
    free((void *)v->token_types);
    memset(v, 0, sizeof *v);
}

qt_status qt_tokenizer_to_vocab(const qt_tokenizer *tok, qt_tokenizer_vocab *v) {
    memset(v, 0, sizeof *v);
    if (!tok) return QT_ERROR(QT_EINVAL, "tokenizer_to_vocab: NULL tokenizer");
    v->pre = pre_name(tok);
    if (!v->pre)
        return QT_ERROR(QT_ENOTSUP,
                        "%s: the tokenizer's pre-tokenizer has no llama.cpp name (GGUF knows "
                        "gpt-2, llama-bpe, smollm, qwen2; add_prefix_space is not supported)",
                        tok->src);
    int32_t n = tok->n_ids;
    char **tokens = calloc((size_t)(n ? n : 1), sizeof *tokens);
    int32_t *types = malloc((size_t)(n ? n : 1) * sizeof *types);
    char **merges = calloc(tok->mcount ? tok->mcount : 1, sizeof *merges);
    v->tokens = (const char *const *)tokens, v->token_types = types;
    v->merges = (const char *const *)merges;
    v->n_tokens = n, v->n_merges = (int32_t)tok->mcount;
    if (!tokens || !types || !merges) goto oom;
    for (int32_t id = 0; id < n; id++) {
        const char *s = tok->id_str[id];
        types[id] = QT_TOKTYPE_NORMAL;
        if (!s) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", (int)id);
            types[id] = QT_TOKTYPE_UNUSED;
            if (!(tokens[id] = strdup(pad))) goto oom;
            continue;
        }
        if (!(tokens[id] = strdup(s))) goto oom;
        if (id == tok->unk_id) types[id] = QT_TOKTYPE_UNKNOWN;
        for (int a = 0; a < tok->n_added; a++)
            if (tok->added[a].id == id)
                types[id] = tok->added[a].special ? QT_TOKTYPE_CONTROL : QT_TOKTYPE_USER_DEFINED;
    }
    /* merges: the hash table (left << 32 | right) -> rank, laid out by rank */
    for (size_t i = 0; i < tok->mcap; i++) {
        if (tok->mkeys[i] == UINT64_MAX) continue;
        int32_t r = tok->mrank[i];
        int32_t l = (int32_t)(tok->mkeys[i] >> 32), rt = (int32_t)(tok->mkeys[i] & 0xffffffffu);
        if (r < 0 || (size_t)r >= tok->mcount || merges[r] || l >= n || rt >= n ||
            !tok->id_str[l] || !tok->id_str[rt]) {
            qt_tokenizer_vocab_free(v);
            return QT_ERROR(QT_ESTATE, "%s: merge table is inconsistent at rank %d", tok->src,
                            (int)r);
        }
        size_t ln = strlen(tok->id_str[l]), rn = strlen(tok->id_str[rt]);
        char *m = malloc(ln + rn + 2);
        if (!m) goto oom;
        memcpy(m, tok->id_str[l], ln);
        m[ln] = ' ';
        memcpy(m + ln + 1, tok->id_str[rt], rn + 1);
        merges[r] = m;
    }
    v->bos_id = tok->bos, v->eos_id = tok->eos;
    v->add_bos = tok->n_prefix > 0 && tok->bos >= 0 && tok->prefix[0] == tok->bos;
    v->add_eos = tok->n_suffix > 0 && tok->eos >= 0 && tok->suffix[tok->n_suffix - 1] == tok->eos;
    return QT_OK;
oom:
    qt_tokenizer_vocab_free(v);
    return QT_ERROR(QT_ENOMEM, "%s: tokenizer_to_vocab: out of memory", tok->src);
}
