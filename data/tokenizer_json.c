/*
 * tokenizer_json.c - reads a HF tokenizer.json (the `tokenizers` serialization, as
 * written by Tokenizer.save) into a qt_tokenizer.
 *
 * Accepted: model BPE (vocab {token: id}, merges as "a b" strings or [a, b] pairs,
 * ignore_merges, unk_token; dropout, continuing_subword_prefix, end_of_word_suffix and
 * byte_fallback must be off), added_tokens, normalizer null or NFC, pre_tokenizer
 * ByteLevel or a Sequence of Split (a regex qtrain knows: GPT-2, Llama-3, Qwen2, \p{N},
 * \p{N}+) / Digits / ByteLevel last, post_processor ByteLevel / TemplateProcessing /
 * Sequence of those, decoder ByteLevel or null. Everything else is QT_ENOTSUP naming the file and the
 * field, never a silent approximation: ids that differ from HF's are worse than none.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "qt_data.h"
#include "tokenizer_internal.h"

/* "type" of a JSON object, or NULL. */
static const char *type_of(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* true when key is absent, null, false, 0 or "" */
static bool is_off(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v) ||
           (cJSON_IsNumber(v) && v->valuedouble == 0) || (cJSON_IsString(v) && !v->valuestring[0]);
}

static bool get_bool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* An integer id in [0, QT_TOK_MAX_ID); false for anything else (checked before any
 * cast, so a hostile 1e300 is not undefined behaviour). */
static bool get_id(const cJSON *v, int64_t *id) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < QT_TOK_MAX_ID))
        return false;
    *id = (int64_t)v->valuedouble;
    return (double)*id == v->valuedouble;
}

static qt_status load_model(qt_tokenizer *tok, const cJSON *model) {
    const char *src = tok->src;
    if (!cJSON_IsObject(model))
        return QT_ERROR(QT_EFORMAT, "%s: \"model\" is missing or not an object", src);
    const char *type = type_of(model);
    if (type && strcmp(type, "BPE"))
        return QT_ERROR(QT_ENOTSUP, "%s: model.type is \"%s\"; only \"BPE\" is supported", src,
                        type);
    static const char *const off[] = {"dropout", "continuing_subword_prefix", "end_of_word_suffix",
                                      "byte_fallback"};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
        if (!is_off(model, off[i]))
            return QT_ERROR(QT_ENOTSUP,
                            "%s: model.%s is set; byte-level BPE without it is all "
                            "qtrain implements",
                            src, off[i]);
    tok->ignore_merges = get_bool(model, "ignore_merges", false);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return QT_ERROR(QT_EFORMAT, "%s: model.vocab is missing or not an object", src);
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int64_t id;
        if (!get_id(e, &id))
            return QT_ERROR(QT_EFORMAT, "%s: model.vocab[\"%s\"] is not an integer id in [0, %d)",
                            src, e->string, QT_TOK_MAX_ID);
        qt_status st = qt_tok_add_vocab(tok, e->string, id);
        if (st) return st;
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) {
        tok->unk_id = qt_tok_vocab_get(tok, unk->valuestring, strlen(unk->valuestring));
        if (tok->unk_id < 0)
            return QT_ERROR(QT_EFORMAT, "%s: model.unk_token \"%s\" is not in the vocab", src,
                            unk->valuestring);
    }
    return QT_OK;
}

static qt_status load_merges(qt_tokenizer *tok, const cJSON *model) {
    const char *src = tok->src;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!merges || cJSON_IsNull(merges)) return QT_OK;
    if (!cJSON_IsArray(merges))
        return QT_ERROR(QT_EFORMAT, "%s: model.merges is not an array", src);
    const cJSON *m;
    int i = 0;
    char where[48];
    cJSON_ArrayForEach(m, merges) {
        snprintf(where, sizeof where, "model.merges[%d]", i++);
        qt_status st;
        if (cJSON_IsString(m)) {
            /* HF splits on ' ' and wants exactly two parts */
            const char *s = m->valuestring, *sp = strchr(s, ' ');
            if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
                return QT_ERROR(QT_EFORMAT, "%s: %s is \"%s\", expected \"left right\"", src, where,
                                s);
            char *left = strndup(s, (size_t)(sp - s));
            if (!left) return QT_ERROR(QT_ENOMEM, "%s: merges", src);
            st = qt_tok_add_merge(tok, left, sp + 1, where);
            free(left);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            st = qt_tok_add_merge(tok, cJSON_GetArrayItem(m, 0)->valuestring,
                                  cJSON_GetArrayItem(m, 1)->valuestring, where);
        } else {
            return QT_ERROR(QT_EFORMAT, "%s: %s is neither \"a b\" nor [\"a\", \"b\"]", src, where);
        }
        if (st) return st;
    }
    return QT_OK;
}

static qt_status load_added(qt_tokenizer *tok, const cJSON *added) {
    const char *src = tok->src;
    if (!added || cJSON_IsNull(added)) return QT_OK;
    if (!cJSON_IsArray(added)) return QT_ERROR(QT_EFORMAT, "%s: added_tokens is not an array", src);
    const cJSON *a;
    int i = 0;
    cJSON_ArrayForEach(a, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        int64_t idv;
        if (!get_id(id, &idv) || !cJSON_IsString(content))
            return QT_ERROR(QT_EFORMAT,
                            "%s: added_tokens[%d] needs an integer \"id\" and a string "
                            "\"content\"",
                            src, i);
        qt_added_token o = {
            .special = get_bool(a, "special", false),
            .lstrip = get_bool(a, "lstrip", false),
            .rstrip = get_bool(a, "rstrip", false),
            .single_word = get_bool(a, "single_word", false),
            .normalized = get_bool(a, "normalized", !get_bool(a, "special", false)),
        };
        qt_status st = qt_tok_add_added(tok, content->valuestring, idv, &o);
        if (st) return st;
        i++;
    }
    return QT_OK;
}

static qt_status add_step(qt_tokenizer *tok, qt_split_kind k) {
    if (tok->n_steps == QT_TOK_MAX_STEPS)
        return QT_ERROR(QT_ENOTSUP, "%s: pre_tokenizer has more than %d splitting steps", tok->src,
                        QT_TOK_MAX_STEPS);
    tok->steps[tok->n_steps++] = k;
    return QT_OK;
}

/* One pre-tokenizer; `last`: nothing follows it in its Sequence. */
static qt_status load_pre(qt_tokenizer *tok, const cJSON *p, bool last, int depth) {
    const char *src = tok->src, *type = type_of(p);
    if (!type) return QT_ERROR(QT_EFORMAT, "%s: pre_tokenizer without a \"type\"", src);
    if (!strcmp(type, "Sequence") && depth == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return QT_ERROR(QT_EFORMAT, "%s: pre_tokenizer.pretokenizers is not an array", src);
        int n = cJSON_GetArraySize(list);
        for (int i = 0; i < n; i++) {
            qt_status st = load_pre(tok, cJSON_GetArrayItem(list, i), i == n - 1, depth + 1);
            if (st) return st;
        }
        return QT_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        /* after ByteLevel the text is in the byte alphabet, where \p{L} means something
         * else: it has to be the last step */
        if (!last)
            return QT_ERROR(QT_ENOTSUP, "%s: pre_tokenizer ByteLevel followed by more steps", src);
        if (get_bool(p, "add_prefix_space", false)) {
            if (tok->n_steps)
                return QT_ERROR(QT_ENOTSUP, "%s: ByteLevel add_prefix_space after another step",
                                src);
            tok->add_prefix_space = true;
        }
        return get_bool(p, "use_regex", true) ? add_step(tok, QT_SPLIT_GPT2) : QT_OK;
    }
    if (!strcmp(type, "Digits"))
        return add_step(tok, get_bool(p, "individual_digits", false) ? QT_SPLIT_DIGITS
                                                                     : QT_SPLIT_DIGIT_RUNS);
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        if (!cJSON_IsString(re))
            return QT_ERROR(QT_ENOTSUP, "%s: pre_tokenizer Split needs pattern {\"Regex\": ...}",
                            src);
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") ||
            get_bool(p, "invert", false))
            return QT_ERROR(QT_ENOTSUP,
                            "%s: pre_tokenizer Split: only behavior \"Isolated\" without "
                            "invert is supported",
                            src);
        int k = qt_split_from_regex(re->valuestring);
        if (k < 0)
            return QT_ERROR(QT_ENOTSUP,
                            "%s: pre_tokenizer Split regex \"%s\" is not one qtrain "
                            "implements (GPT-2, Llama-3, Qwen2, \\p{N}, \\p{N}+)",
                            src, re->valuestring);
        return add_step(tok, (qt_split_kind)k);
    }
    return QT_ERROR(QT_ENOTSUP, "%s: pre_tokenizer type \"%s\" is not supported", src, type);
}

/* TemplateProcessing's "single": special tokens before $A go to prefix, after to suffix. */
static qt_status load_template(qt_tokenizer *tok, const cJSON *p) {
    const char *src = tok->src;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    if (!cJSON_IsArray(single))
        return QT_ERROR(QT_EFORMAT, "%s: TemplateProcessing.single is not an array", src);
    bool after = false;
    tok->n_prefix = tok->n_suffix = 0;
    const cJSON *piece;
    cJSON_ArrayForEach(piece, single) {
        if (cJSON_GetObjectItemCaseSensitive(piece, "Sequence")) {
            after = true;
            continue;
        }
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(piece, "SpecialToken");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
        if (!cJSON_IsString(name))
            return QT_ERROR(QT_EFORMAT,
                            "%s: TemplateProcessing piece is neither "
                            "Sequence nor SpecialToken",
                            src);
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(specials, name->valuestring), "ids");
        if (!cJSON_IsArray(ids))
            return QT_ERROR(QT_EFORMAT,
                            "%s: TemplateProcessing.special_tokens has no ids for \"%s\"", src,
                            name->valuestring);
        const cJSON *id;
        cJSON_ArrayForEach(id, ids) {
            int *n = after ? &tok->n_suffix : &tok->n_prefix;
            int64_t idv;
            if (!get_id(id, &idv) || *n == QT_TOK_MAX_TEMPLATE)
                return QT_ERROR(QT_EFORMAT, "%s: TemplateProcessing \"%s\": bad id or more than %d",
                                src, name->valuestring, QT_TOK_MAX_TEMPLATE);
            (after ? tok->suffix : tok->prefix)[(*n)++] = (int32_t)idv;
        }
    }
    return QT_OK;
}

static qt_status load_post(qt_tokenizer *tok, const cJSON *p, int depth) {
    if (!p || cJSON_IsNull(p)) return QT_OK;
    const char *type = type_of(p);
    if (!type) return QT_ERROR(QT_EFORMAT, "%s: post_processor without a \"type\"", tok->src);
    if (!strcmp(type, "ByteLevel")) return QT_OK; /* only moves offsets */
    if (!strcmp(type, "TemplateProcessing")) return load_template(tok, p);
    if (!strcmp(type, "Sequence") && depth == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors"), *q;
        if (!cJSON_IsArray(list))
            return QT_ERROR(QT_EFORMAT, "%s: post_processor.processors is not an array", tok->src);
        cJSON_ArrayForEach(q, list) {
            qt_status st = load_post(tok, q, depth + 1);
            if (st) return st;
        }
        return QT_OK;
    }
    return QT_ERROR(QT_ENOTSUP, "%s: post_processor type \"%s\" is not supported", tok->src, type);
}

static int32_t first_present(const qt_tokenizer *tok, const char *const *names) {
    for (; *names; names++) {
        int32_t id = qt_tokenizer_token_id(tok, *names);
        if (id >= 0) return id;
    }
    return -1;
}

static qt_status load(qt_tokenizer *tok, const cJSON *root) {
    const char *src = tok->src;
    if (!cJSON_IsObject(root))
        return QT_ERROR(QT_EFORMAT, "%s: top level is not a JSON object", src);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    qt_status st = load_model(tok, model);
    if (!st) st = load_added(tok, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
    if (!st) st = load_merges(tok, model);
    if (st) return st;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        if (!type_of(norm) || strcmp(type_of(norm), "NFC"))
            return QT_ERROR(QT_ENOTSUP, "%s: normalizer \"%s\" is not supported (null or NFC)", src,
                            type_of(norm) ? type_of(norm) : "?");
        tok->nfc = true;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre) && (st = load_pre(tok, pre, true, 0))) return st;
    if ((st = load_post(tok, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), 0)))
        return st;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec) && (!type_of(dec) || strcmp(type_of(dec), "ByteLevel")))
        return QT_ERROR(QT_ENOTSUP, "%s: decoder \"%s\" is not supported (ByteLevel or null)", src,
                        type_of(dec) ? type_of(dec) : "?");
    static const char *const bos[] = {"<|begin_of_text|>", "<s>", "<|endoftext|>", NULL};
    static const char *const eos[] = {"<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>",
                                      NULL};
    tok->bos = first_present(tok, bos);
    tok->eos = first_present(tok, eos);
    if (tok->n_prefix > 0) tok->bos = tok->prefix[0];
    return qt_tok_finish(tok);
}

qt_status qt_tokenizer_load_json(const char *path, qt_tokenizer **out) {
    *out = NULL;
    if (!path) return QT_ERROR(QT_EINVAL, "tokenizer_load_json: NULL path");
    char *buf;
    size_t len = 0;
    qt_status st = qt_read_file(path, 0, &buf, &len);
    if (st) return st;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
    if (!root) {
        st = QT_ERROR(QT_EFORMAT, "%s: not valid JSON (parse stopped at byte %zu of %zu)", path,
                      end && end >= buf ? (size_t)(end - buf) : (size_t)0, len);
        free(buf);
        return st;
    }
    free(buf);
    qt_tokenizer *tok;
    if ((st = qt_tok_new(path, &tok))) {
        cJSON_Delete(root);
        return st;
    }
    st = load(tok, root);
    cJSON_Delete(root);
    if (st) {
        qt_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return QT_OK;
}
