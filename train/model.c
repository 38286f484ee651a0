/*
 * model.c - the one path from a name to a model (qt_model_open): a recipe's model:
 * section (model.from: a qtrain checkpoint, an HF directory, a GGUF file; or new from
 * the sizes) or a CLI verb's MODEL, with its tokenizer, the recipe it was trained with,
 * the checkpoint's state, a LoRA run's adapters merged in and QAT's fake-quant.
 *
 * A checkpoint trained from another (model.from: base.h5) stores every weight but only
 * its recipe: the chain of recipes rebuilds the model's shape (and tokenizer), so the
 * base files must stay where they were; only the outermost checkpoint's weights are
 * read (the inner ones would be overwritten). A LoRA run's checkpoint is its adapted
 * model: the base, its adapters merged in.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "train_internal.h"

#define QT_MAX_CHAIN 8 /* model.from checkpoints within checkpoints (a cycle otherwise) */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

int qt_model_vocab(const qt_model *m) {
    return m->arch == QT_ARCH_GPT2 ? m->gpt2.cfg.vocab_size : m->llama.cfg.vocab_size;
}

int qt_model_context(const qt_model *m) {
    int n = m->arch == QT_ARCH_GPT2 ? m->gpt2.cfg.n_positions : m->llama.cfg.max_seq_len;
    if (m->arch == QT_ARCH_LLAMA && m->llama.cfg.sliding_window &&
        (n == 0 || m->llama.cfg.sliding_window < n))
        n = m->llama.cfg.sliding_window;
    return n > 0 ? n : 2048;
}

/* The recipe a checkpoint stores, over the defaults. */
static qt_status checkpoint_recipe(const char *path, qt_recipe *r) {
    char *text = NULL;
    qt_recipe_defaults(r);
    qt_status st = qt_checkpoint_recipe(path, &text);
    if (st == QT_OK) st = qt_recipe_load_string(path, text, r);
    free(text);
    return st;
}

/* After merging, the model is trained like any other (model.from of a QAT or a further
 * run): LoRA's attach froze every base parameter, so give back the grad slots it had. */
static void unfreeze(qt_model *m) {
    qt_paramset *ps = qt_model_params(m);
    for (int i = 0; i < ps->n; i++) {
        if (ps->goffset[i] == (size_t)-1) continue; /* frozen from the start */
        ps->params[i]->requires_grad = true;
        ps->params[i]->grad = (ps->dgrad ? ps->dgrad : ps->grad) + ps->goffset[i];
    }
}

/* A LoRA run's checkpoint at path (r: its own recipe; nothing to do without a lora:
 * section), loaded into m (the base): attaches the adapters as r's lora: section says
 * (lora.base nf4: onto the NF4 base), loads them from the checkpoint's buffers and merges
 * them, W = base + scaling B A, so m is a plain float model equal to the adapter model.
 * desc (n bytes) gets "LoRA r 4 on the float base", or "" without LoRA. */
static qt_status merge_lora(const char *path, const qt_recipe *r, qt_model *m, char *desc,
                            size_t n) {
    if (n) desc[0] = 0;
    if (!qt_recipe_has_lora(r)) return QT_OK;
    qt_lora *l = NULL;
    qt_status st = qt_recipe_lora_attach(r, path, m, true, &l);
    if (st == QT_OK) {
        st = qt_checkpoint_load_buffers(path, qt_lora_params(l), NULL);
        if (st != QT_OK) {
            char why[768];
            snprintf(why, sizeof why, "%s", qt_error_message());
            st = QT_ERROR(st, "%s: the LoRA adapters (checkpoint buffers): %s", path, why);
        }
    }
    if (st == QT_OK) st = qt_lora_merge(l);
    if (st == QT_OK) {
        char d[128];
        snprintf(d, sizeof d, "LoRA r %d on the %s base", l->cfg.rank,
                 l->cfg.nf4 ? "nf4" : qt_recipe_has_qat(r) ? "fake-quantized" : "float");
        if (n) snprintf(desc, n, "%s", d);
        qt_log(QT_LOG_INFO, "%s: merged its adapter into the model (%s, %d layers)", path, d,
               l->n);
    }
    qt_lora_free(l); /* the merged weights stay in the model; the hook is gone */
    if (st == QT_OK) unfreeze(m);
    return st;
}

static qt_status model_of_recipe(const qt_recipe *r, int depth, qt_model *m, qt_tokenizer **tok,
                                 char *lora, size_t nlora);

/* The model a checkpoint's recipe describes, and at depth 0 the checkpoint's weights
 * (cs: its state) with its adapters merged (merge) into it; deeper checkpoints of the
 * chain give their shapes and tokenizers only. *r: the checkpoint's recipe. */
static qt_status open_checkpoint(const char *path, int depth, bool merge, qt_recipe *r,
                                 qt_model *m, qt_tokenizer **tok, qt_ckpt_state *cs,
                                 char *lora, size_t nlora) {
    if (depth > QT_MAX_CHAIN)
        return QT_ERROR(QT_EINVAL, "%s: model.from chain deeper than %d checkpoints (a cycle?)",
                        path, QT_MAX_CHAIN);
    qt_status st = checkpoint_recipe(path, r);
    if (st == QT_OK) st = model_of_recipe(r, depth + 1, m, tok, NULL, 0);
    if (st != QT_OK || depth > 0) return st;
    qt_ckpt_state own;
    st = qt_checkpoint_load(path, qt_model_params(m), NULL, cs ? cs : &own);
    if (st == QT_OK && merge) st = merge_lora(path, r, m, lora, nlora);
    if (st != QT_OK) {
        qt_model_free(m);
        qt_tokenizer_free(*tok);
        *tok = NULL;
    }
    return st;
}

/* The model r's model: section describes and its data.tokenizer (*tok NULL for bytes).
 * lora (may be NULL): what was merged into model.from, a LoRA run's checkpoint. */
static qt_status model_of_recipe(const qt_recipe *r, int depth, qt_model *m, qt_tokenizer **tok,
                                 char *lora, size_t nlora) {
    memset(m, 0, sizeof *m);
    *tok = NULL;
    const char *from = r->model.from;
    bool gguf = ends_with(from, ".gguf"), h5 = ends_with(from, ".h5");
    qt_tokenizer *base_tok = NULL; /* a checkpoint's own tokenizer */
    qt_status st;
    if (h5) { /* a qtrain checkpoint: the model its recipe describes, with its weights */
        qt_recipe base;
        st = open_checkpoint(from, depth, true, &base, m, &base_tok, NULL, lora, nlora);
    } else if (from[0]) {
        st = qt_export_load(m, from); /* GGUF, HF, or an HF export of a quantized model */
    } else {
        qt_llama_config cfg = {.vocab_size = r->model.vocab_size, .dim = r->model.dim,
                               .n_layers = r->model.n_layers, .n_heads = r->model.n_heads,
                               .n_kv_heads = r->model.n_kv_heads, .ffn_dim = r->model.ffn_dim,
                               .max_seq_len = r->model.max_seq_len,
                               .rope_theta = r->model.rope_theta, .norm_eps = r->model.norm_eps,
                               .tied_embeddings = r->model.tied_embeddings};
        m->arch = QT_ARCH_LLAMA;
        st = qt_llama_init(&m->llama, &cfg, (uint64_t)r->train.seed);
    }
    if (st != QT_OK) return st;
    const char *tk = r->data.tokenizer;
    if (!strcmp(tk, "bytes")) {
        if (qt_model_vocab(m) < 256)
            st = QT_ERROR(QT_EINVAL, "data.tokenizer bytes needs a vocabulary of >= 256, the "
                                     "model has %d", qt_model_vocab(m));
    } else if (!strcmp(tk, "model")) {
        if (!from[0]) st = QT_ERROR(QT_EINVAL, "data.tokenizer \"model\" needs model.from");
        else if (h5) {
            *tok = base_tok; /* NULL when the checkpoint was trained on bytes */
            base_tok = NULL;
        } else if (gguf) st = qt_tokenizer_load_gguf(from, tok);
        else {
            char *path = qt_path_join(from, "tokenizer.json");
            st = path ? qt_tokenizer_load_json(path, tok)
                      : QT_ERROR(QT_ENOMEM, "%s: out of memory", from);
            free(path);
        }
    } else {
        st = qt_tokenizer_load_json(tk, tok);
    }
    qt_tokenizer_free(base_tok);
    if (st == QT_OK && *tok && qt_tokenizer_vocab_size(*tok) > qt_model_vocab(m))
        st = QT_ERROR(QT_EINVAL, "the tokenizer has %d ids, more than the model's vocabulary of %d",
                      qt_tokenizer_vocab_size(*tok), qt_model_vocab(m));
    if (st != QT_OK) {
        qt_tokenizer_free(*tok);
        *tok = NULL;
        qt_model_free(m);
    }
    return st;
}

qt_status qt_recipe_chat_source(const qt_recipe *r, char *out, size_t n) {
    qt_recipe base;
    for (int depth = 0;; depth++) {
        const char *tk = r->data.tokenizer, *from = r->model.from;
        out[0] = 0;
        if (!strcmp(tk, "bytes")) return QT_OK;
        if (strcmp(tk, "model")) {
            snprintf(out, n, "%s", tk);
            return QT_OK;
        }
        if (!ends_with(from, ".h5") || depth > QT_MAX_CHAIN) {
            snprintf(out, n, "%s", from);
            return QT_OK;
        }
        char path[QT_PATH_MAX];
        snprintf(path, sizeof path, "%s", from); /* from may point into base */
        qt_status st = checkpoint_recipe(path, &base); /* through the chain of recipes */
        if (st != QT_OK) return st;
        r = &base;
    }
}

/* A pretrained model as it is (an HF directory or a GGUF file) with its own tokenizer,
 * described by a recipe of defaults with model.from = path. */
static qt_status open_pretrained(const char *path, bool dir, qt_loaded_model *lm) {
    qt_recipe *r = &lm->r;
    qt_recipe_defaults(r);
    snprintf(r->model.from, sizeof r->model.from, "%s", path);
    snprintf(r->data.tokenizer, sizeof r->data.tokenizer, "model");
    if (dir) { /* an export of a bytes model has no tokenizer.json */
        char *tj = qt_path_join(path, "tokenizer.json");
        struct stat sb;
        if (!tj) return QT_ERROR(QT_ENOMEM, "%s: out of memory", path);
        if (stat(tj, &sb) != 0) {
            qt_log(QT_LOG_WARN, "%s has no tokenizer.json: reading text as bytes", path);
            snprintf(r->data.tokenizer, sizeof r->data.tokenizer, "bytes");
        }
        free(tj);
    }
    snprintf(r->name, sizeof r->name, "pretrained");
    return model_of_recipe(r, 0, &lm->m, &lm->tok, NULL, 0);
}

/* QAT fake-quant on the loaded model: the qat: section of src->qat_recipe when given
 * (any model, e.g. a float one: round-to-nearest PTQ of that format), else that of the
 * model's own recipe (a QAT-trained model is evaluated quantized; a recipe trains so). */
static qt_status apply_qat(const qt_model_source *src, qt_loaded_model *lm) {
    const char *name = src->path ? "the checkpoint's recipe"
                                 : src->recipe_path ? src->recipe_path : "recipe";
    const qt_recipe *from = &lm->r;
    qt_recipe qr;
    if (src->qat_recipe) {
        qt_recipe_defaults(&qr);
        qt_status st = qt_recipe_load(src->qat_recipe, &qr);
        if (st == QT_OK && !qt_recipe_has_qat(&qr))
            st = QT_ERROR(QT_EINVAL, "%s: has no qat: section (qat.weight.format or "
                                     "qat.activation.format)", src->qat_recipe);
        if (st != QT_OK) return st;
        from = &qr;
        name = src->qat_recipe;
    } else if (!src->qat) {
        return QT_OK;
    }
    /* QAT + LoRA: the qat: section is the base's format: a checkpoint's is already in the
     * merged weights, a recipe's is applied by the LoRA attach (qt_recipe_lora_attach) */
    if (!src->qat_recipe && (src->path ? lm->lora[0] != 0 : qt_recipe_has_lora(from)))
        return QT_OK;
    qt_status st = qt_recipe_qat_prepare(from, name, &lm->m, &lm->qcfg, &lm->qat);
    /* a checkpoint trained with static activation observers: the ranges it learned (with
     * --qat on another model they calibrate on the first batch instead) */
    if (st == QT_OK && lm->qat && !src->qat_recipe && lm->checkpoint[0] && qt_qat_buffers(lm->qat))
        st = qt_checkpoint_load_buffers(lm->checkpoint, qt_qat_buffers(lm->qat), NULL);
    if (st != QT_OK) {
        qt_qat_free(lm->qat);
        lm->qat = NULL;
    }
    return st;
}

qt_status qt_model_open(const qt_model_source *src, qt_loaded_model *lm) {
    memset(lm, 0, sizeof *lm);
    qt_status st;
    if (!src->path) {
        lm->r = *src->recipe;
        st = model_of_recipe(&lm->r, 0, &lm->m, &lm->tok, lm->lora, sizeof lm->lora);
    } else {
        const char *path = src->path;
        struct stat sb;
        bool dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
        if (dir || ends_with(path, ".gguf")) {
            st = open_pretrained(path, dir, lm);
        } else { /* a qtrain checkpoint (anything else fails as one, naming the file) */
            snprintf(lm->checkpoint, sizeof lm->checkpoint, "%s", path);
            st = open_checkpoint(path, 0, !src->keep_lora_base, &lm->r, &lm->m, &lm->tok,
                                 &lm->cs, lm->lora, sizeof lm->lora);
        }
    }
    if (st != QT_OK) return st;
    st = apply_qat(src, lm);
    if (st != QT_OK) {
        qt_model_free(&lm->m);
        qt_tokenizer_free(lm->tok);
        lm->tok = NULL;
    }
    return st;
}

void qt_model_close(qt_loaded_model *lm) {
    qt_qat_free(lm->qat);
    lm->qat = NULL;
    qt_model_free(&lm->m);
    qt_tokenizer_free(lm->tok);
    lm->tok = NULL;
}
