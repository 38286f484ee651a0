/*
 * loop.c - the training loop a recipe drives: data, model, AdamW with warmup and
 * cosine/linear/constant decay, gradient accumulation, global-norm clipping, a guard
 * against non-finite losses and grads, periodic evaluation with perplexity and a text
 * sample, progress lines and JSONL metrics.
 *
 * Besides the model's own paramset a run may train a second one, checkpointed as its
 * "buffers": QAT's learned scales, or LoRA's adapters. With LoRA the base model is
 * frozen: the optimizer, clipping and zeroing touch the adapters only, and the model's
 * optimizer holds no state (it is still written, empty, so a checkpoint reads the same).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "loop.h"
#include "qt_export.h"
#include "qat_recipe.h"
#include "qt_data.h"
#include "qt_dist.h"
#include "qt_layers.h"
#include "qt_lora.h"
#include "qt_train.h"
#ifdef QT_HAVE_CUDA
#include "qt_cuda.h"
#endif

double qt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

float qt_lr_at(long step, long steps, float lr, long warmup, const char *decay,
               float min_ratio) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (!strcmp(decay, "constant") || steps <= warmup) return lr;
    double t = (double)(step - warmup) / (double)(steps - warmup); /* 0 .. 1 */
    if (t > 1.0) t = 1.0;
    double f = !strcmp(decay, "linear") ? 1.0 - t : 0.5 * (1.0 + cos(M_PI * t));
    return (float)(lr * (min_ratio + (1.0 - min_ratio) * f));
}

/* mkdir -p */
static qt_status make_dirs(const char *path) {
    char buf[QT_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST)
            return QT_ERROR(QT_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return QT_ERROR(QT_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
    return QT_OK;
}

/* Targets that count (not -100, a masked prompt token) among n. */
static int64_t counted_targets(const int32_t *tgt, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += tgt[i] != -100;
    return c;
}

/* Mean validation loss over eval_batches batches, grad mode off. Data parallel: batch i
 * is world * B windows, rank r scoring its slice of B, so N ranks with batch B score the
 * windows one process with batch N B does. */
static qt_status evaluate(qt_ctx *ctx, qt_model *m, const qt_dataset *ds, int64_t B,
                          int batches, int32_t *ids, int32_t *tgt, qt_dist *d,
                          double *loss_out) {
    int64_t shape[2] = {B, ds->seq_len};
    double total = 0.0;
    bool prev = qt_ctx_set_grad_enabled(ctx, false);
    for (int i = 0; i < batches; i++) {
        qt_ctx_reset(ctx);
        qt_dataset_val(ds, ((int64_t)i * d->world + d->rank) * B, B, ids, tgt);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
        qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
        qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, m, x), y, -100);
        if (!l) {
            qt_ctx_set_grad_enabled(ctx, prev);
            return QT_ERROR(qt_ctx_status(ctx), "eval: %s", qt_ctx_error(ctx));
        }
        float lv = 0.0f;
        qt_status st = qt_tensor_read(l, &lv);
        if (st != QT_OK) {
            qt_ctx_set_grad_enabled(ctx, prev);
            return st;
        }
        if (d->world > 1 && ds->mask) { /* the batch's mean over every rank's counted tokens */
            double v[2] = {0, (double)counted_targets(tgt, B * ds->seq_len)};
            v[0] = lv * v[1];
            st = qt_dist_reduce_f64(d, v, 2, QT_DIST_SUM);
            if (st != QT_OK) {
                qt_ctx_set_grad_enabled(ctx, prev);
                return st;
            }
            total += v[1] > 0 ? v[0] / v[1] : 0.0;
        } else {
            total += lv;
        }
    }
    qt_ctx_set_grad_enabled(ctx, prev);
    if (d->world > 1 && ds->mask) {
        *loss_out = total / batches;
        return QT_OK;
    }
    qt_status st = qt_dist_reduce_f64(d, &total, 1, QT_DIST_SUM);
    *loss_out = total / ((double)batches * d->world);
    return st;
}

int qt_model_context(const qt_model *m) {
    int n = m->arch == QT_ARCH_GPT2 ? m->gpt2.cfg.n_positions : m->llama.cfg.max_seq_len;
    if (m->arch == QT_ARCH_LLAMA && m->llama.cfg.sliding_window &&
        (n == 0 || m->llama.cfg.sliding_window < n))
        n = m->llama.cfg.sliding_window;
    return n > 0 ? n : 2048;
}

static int model_vocab(const qt_model *m) {
    return m->arch == QT_ARCH_GPT2 ? m->gpt2.cfg.vocab_size : m->llama.cfg.vocab_size;
}

qt_status qt_generate(qt_ctx *ctx, qt_model *m, const qt_tokenizer *tok, const char *prompt,
                      int n_new, int max_ctx, float temperature, uint64_t seed, char **out) {
    *out = NULL;
    int32_t *p = NULL;
    size_t plen = 0;
    if (tok) {
        qt_status st = qt_tokenizer_encode(tok, prompt, strlen(prompt), QT_TOK_ADD_SPECIAL, &p, &plen);
        if (st != QT_OK) return st;
    }
    size_t cap = (tok ? plen : strlen(prompt)) + (size_t)n_new + 1;
    int32_t *toks = malloc(cap * sizeof(int32_t));
    if (!toks) {
        free(p);
        return QT_ERROR(QT_ENOMEM, "generate: out of memory");
    }
    size_t n = 0;
    if (tok) {
        memcpy(toks, p, plen * sizeof(int32_t));
        n = plen;
    } else {
        for (const char *c = prompt; *c; c++) toks[n++] = (unsigned char)*c;
    }
    free(p);
    if (n == 0) toks[n++] = tok && qt_tokenizer_bos(tok) >= 0 ? qt_tokenizer_bos(tok) : '\n';
    bool prev = qt_ctx_set_grad_enabled(ctx, false);
    qt_status st = QT_OK;
    int V = model_vocab(m), Vs = tok ? V : (V < 256 ? V : 256); /* bytes: sample bytes only */
    int32_t eos = tok ? qt_tokenizer_eos(tok) : -1;
    for (int k = 0; k < n_new; k++) {
        size_t start = n > (size_t)max_ctx ? n - (size_t)max_ctx : 0;
        int64_t shape[2] = {1, (int64_t)(n - start)};
        qt_ctx_reset(ctx);
        qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, toks + start);
        qt_tensor *lg = qt_cast(ctx, qt_model_forward(ctx, m, x), QT_F32);
        if (!lg) {
            st = QT_ERROR(qt_ctx_status(ctx), "generate: %s", qt_ctx_error(ctx));
            break;
        }
        float *last = qt_ctx_alloc(ctx, (size_t)V * sizeof(float)); /* logits cast to f32 */
        if (!last) {
            st = QT_ERROR(QT_ENOMEM, "generate: %s", qt_ctx_error(ctx));
            break;
        }
        st = qt_device_copy((qt_device){QT_DEV_CPU, 0}, last, lg->device,
                            (const float *)lg->data + (shape[1] - 1) * V, (size_t)V * sizeof(float));
        if (st != QT_OK) break;
        /* sample from softmax(logits / T) */
        float mx = -INFINITY;
        for (int v = 0; v < Vs; v++) mx = fmaxf(mx, last[v]);
        double z = 0.0;
        for (int v = 0; v < Vs; v++) z += exp((last[v] - mx) / temperature);
        double u = qt_rand_uniform(seed, (uint64_t)k) * z, acc = 0.0;
        int pick = Vs - 1;
        for (int v = 0; v < Vs; v++) {
            acc += exp((last[v] - mx) / temperature);
            if (acc >= u) {
                pick = v;
                break;
            }
        }
        toks[n++] = pick;
        if (pick == eos) break;
    }
    qt_ctx_set_grad_enabled(ctx, prev);
    if (st == QT_OK) {
        if (tok) {
            size_t len;
            st = qt_tokenizer_decode(tok, toks, n, QT_TOK_SKIP_SPECIAL, out, &len);
        } else {
            *out = malloc(n + 1);
            if (!*out) st = QT_ERROR(QT_ENOMEM, "generate: out of memory");
            else {
                for (size_t i = 0; i < n; i++) (*out)[i] = (char)toks[i];
                (*out)[n] = 0;
            }
        }
    }
    free(toks);
    return st;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

static qt_status lora_prepare(const qt_recipe *r, const char *rpath, qt_model *m,
                              bool base_as_stored, qt_lora **out);

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

qt_status qt_checkpoint_lora_merge(const char *path, const qt_recipe *r, qt_model *m,
                                   char *desc, size_t n) {
    if (desc && n) desc[0] = 0;
    if (!qt_recipe_has_lora(r)) return QT_OK;
    qt_lora *l = NULL;
    qt_status st = lora_prepare(r, path, m, true, &l);
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
        if (desc && n) snprintf(desc, n, "%s", d);
        /* stderr: generate's stdout is the text */
        fprintf(stderr, "%s: merged its adapter into the model (%s, %d layers)\n", path, d,
                l->n);
    }
    qt_lora_free(l); /* the merged weights stay in the model; the hook is gone */
    if (st == QT_OK) unfreeze(m);
    return st;
}

/* depth guards a checkpoint whose recipe names itself (or a cycle) as model.from.
 * A checkpoint trained from another (model.from: base.h5) stores every weight but only
 * its recipe: the chain of recipes rebuilds the model's shape (and tokenizer), so the
 * base files must stay where they were; only the outermost checkpoint's weights are
 * read (the inner ones would be overwritten). A LoRA run's checkpoint is its adapted
 * model: the base, its adapters merged in. */
static qt_status recipe_model(const qt_recipe *r, qt_model *m, qt_tokenizer **tok, int depth) {
    memset(m, 0, sizeof *m);
    *tok = NULL;
    const char *from = r->model.from;
    bool gguf = ends_with(from, ".gguf"), h5 = ends_with(from, ".h5");
    qt_tokenizer *base_tok = NULL; /* a checkpoint's own tokenizer */
    qt_status st;
    if (h5) {
        /* a qtrain checkpoint: the model its recipe describes, with its trained weights */
        if (depth > 8)
            return QT_ERROR(QT_EINVAL, "%s: model.from chain deeper than 8 checkpoints (a cycle?)",
                            from);
        char *text = NULL;
        qt_recipe base;
        qt_recipe_defaults(&base);
        st = qt_checkpoint_recipe(from, &text);
        if (st == QT_OK) st = qt_recipe_load_string(from, text, &base);
        free(text);
        if (st == QT_OK) st = recipe_model(&base, m, &base_tok, depth + 1);
        if (st == QT_OK && depth == 0) {
            qt_ckpt_state cs;
            st = qt_checkpoint_load(from, qt_model_params(m), NULL, &cs);
            /* a LoRA run's checkpoint: the frozen base, its adapters merged in */
            if (st == QT_OK) st = qt_checkpoint_lora_merge(from, &base, m, NULL, 0);
            if (st != QT_OK) {
                qt_model_free(m);
                qt_tokenizer_free(base_tok);
                base_tok = NULL;
            }
        }
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
        if (model_vocab(m) < 256)
            st = QT_ERROR(QT_EINVAL, "data.tokenizer bytes needs a vocabulary of >= 256, the "
                                     "model has %d", model_vocab(m));
    } else if (!strcmp(tk, "model")) {
        char path[QT_PATH_MAX + 32];
        if (!from[0]) st = QT_ERROR(QT_EINVAL, "data.tokenizer \"model\" needs model.from");
        else if (h5) {
            *tok = base_tok; /* NULL when the checkpoint was trained on bytes */
            base_tok = NULL;
        } else if (gguf) st = qt_tokenizer_load_gguf(from, tok);
        else {
            snprintf(path, sizeof path, "%s/tokenizer.json", from);
            st = qt_tokenizer_load_json(path, tok);
        }
    } else {
        st = qt_tokenizer_load_json(tk, tok);
    }
    qt_tokenizer_free(base_tok);
    if (st == QT_OK && *tok && qt_tokenizer_vocab_size(*tok) > model_vocab(m))
        st = QT_ERROR(QT_EINVAL, "the tokenizer has %d ids, more than the model's vocabulary of %d",
                      qt_tokenizer_vocab_size(*tok), model_vocab(m));
    if (st != QT_OK) {
        qt_tokenizer_free(*tok);
        *tok = NULL;
        qt_model_free(m);
    }
    return st;
}

qt_status qt_recipe_model(const qt_recipe *r, qt_model *m, qt_tokenizer **tok) {
    return recipe_model(r, m, tok, 0);
}

/* Where data.tokenizer's chat template lives: model.from (a HF dir or GGUF; through a
 * checkpoint's chain of recipes to the model it started from), the tokenizer.json path
 * (its tokenizer_config.json), or nowhere for bytes (""). */
static qt_status chat_template_source(const qt_recipe *r, char *out, size_t n, int depth) {
    const char *tk = r->data.tokenizer, *from = r->model.from;
    out[0] = 0;
    if (!strcmp(tk, "bytes")) return QT_OK;
    if (strcmp(tk, "model")) {
        snprintf(out, n, "%s", tk);
        return QT_OK;
    }
    if (!ends_with(from, ".h5") || depth > 8) {
        snprintf(out, n, "%s", from);
        return QT_OK;
    }
    char *text = NULL;
    qt_recipe base;
    qt_recipe_defaults(&base);
    qt_status st = qt_checkpoint_recipe(from, &text);
    if (st == QT_OK) st = qt_recipe_load_string(from, text, &base);
    free(text);
    return st == QT_OK ? chat_template_source(&base, out, n, depth + 1) : st;
}

/* data.chat_template resolved against the model's template (qt_chat_template_resolve);
 * auto with a template qtrain does not recognise prints one line, for JSONL data. */
static qt_status recipe_chat_template(const qt_recipe *r, const qt_tokenizer *tok, bool jsonl,
                                      qt_chat_template *chat) {
    char src[QT_PATH_MAX], note[256];
    char *jinja = NULL;
    qt_status st = QT_OK;
    memset(chat, 0, sizeof *chat);
    if (!strcmp(r->data.chat_template, "none")) return QT_OK;
    if (tok) st = chat_template_source(r, src, sizeof src, 0);
    if (st == QT_OK && tok && src[0]) st = qt_chat_template_read(src, &jinja);
    if (st == QT_OK) st = qt_chat_template_resolve(r->data.chat_template, jinja, tok, chat, note,
                                                   sizeof note);
    if (st == QT_OK && note[0] && jsonl) printf("%s\n", note);
    free(jinja);
    return st;
}

_Static_assert(QT_RECIPE_LORA_MAX_TARGETS == QT_LORA_MAX_TARGETS, "lora.targets capacity");

/* The recipe's lora: section on m: new adapters (A's init from train.seed) or those of
 * the PEFT adapter lora.adapter; *out stays NULL without LoRA. Errors (a target that
 * matches nothing, a rank larger than a layer, an adapter of another model) name the
 * recipe, the section and the layer. */
static qt_status lora_prepare(const qt_recipe *r, const char *rpath, qt_model *m,
                              bool base_as_stored, qt_lora **out) {
    *out = NULL;
    if (!qt_recipe_has_lora(r)) return QT_OK;
    char tbuf[QT_LORA_MAX_TARGETS][96];
    const char *tptr[QT_LORA_MAX_TARGETS];
    int n = 0;
    for (const char *t = r->lora.targets; *t && n < QT_LORA_MAX_TARGETS; n++) {
        const char *nl = strchr(t, '\n');
        size_t len = nl ? (size_t)(nl - t) : strlen(t);
        snprintf(tbuf[n], sizeof tbuf[n], "%.*s", (int)len, t); /* validated: < 96 bytes */
        tptr[n] = tbuf[n];
        t += len + (nl ? 1 : 0);
    }
    bool nf4 = !strcmp(r->lora.base, "nf4");
    qt_lora_config c = {.rank = r->lora.rank, .alpha = r->lora.alpha, .rslora = r->lora.rslora,
                        .dropout = r->lora.dropout, .targets = n ? tptr : NULL, .n_targets = n,
                        .nf4 = nf4, .seed = (uint64_t)r->train.seed};
    /* QAT + LoRA: the base through qat.weight (validated); not again for a checkpoint's
     * base, stored as trained against (fake-quant is not idempotent: amax shrinks) */
    if (qt_recipe_has_qat(r) && !base_as_stored) {
        qt_recipe_qat q;
        qt_status st = qt_recipe_qat_config(r, rpath, &q);
        if (st != QT_OK) return st;
        c.base_fq = true;
        c.base_fmt = q.cfg.weight;
    }
    qt_status st = r->lora.adapter[0] ? qt_lora_load_peft(out, m, r->lora.adapter, nf4)
                                      : qt_lora_attach(out, m, &c);
    if (st != QT_OK) {
        char why[768];
        snprintf(why, sizeof why, "%s", qt_error_message());
        *out = NULL;
        if (r->lora.adapter[0])
            return QT_ERROR(st, "%s: lora.adapter %s: %s", rpath, r->lora.adapter, why);
        return QT_ERROR(st, "%s: %s", rpath, why); /* "lora.rank 99 is larger than ..." */
    }
    return QT_OK;
}

/* "LoRA: r 16, alpha 16 (scaling 1), 14 layers (all-linear), 1.2M trainable ..." */
static void print_lora(const qt_lora *l, const qt_recipe *r, size_t n_base) {
    char targets[256] = "all-linear";
    size_t used = 0;
    for (int i = 0; i < l->cfg.n_targets && used < sizeof targets; i++)
        used += (size_t)snprintf(targets + used, sizeof targets - used, "%s%s", i ? ", " : "",
                                 l->cfg.targets[i]);
    size_t n = l->params.n_total;
    printf("LoRA: r %d, alpha %g (scaling %g%s), %d layers (%s), %zu trainable parameters "
           "(%.3f%% of %zu)", l->cfg.rank, (double)l->cfg.alpha, (double)l->scaling,
           l->cfg.rslora ? ", rsLoRA" : "", l->n, targets, n,
           100.0 * (double)n / (double)(n + n_base), n + n_base);
    if (l->cfg.dropout > 0) printf(", dropout %g", (double)l->cfg.dropout);
    if (l->cfg.nf4) printf("; QLoRA base: NF4, %.3f bits per parameter", qt_lora_nf4_bits(l));
    if (l->cfg.base_fq) {
        char fs[64];
        printf("; QAT + LoRA: the base fake-quantized to %s",
               qt_qformat_str(&l->cfg.base_fmt, fs, sizeof fs));
    }
    if (r->lora.adapter[0]) printf("; from %s", r->lora.adapter);
    printf("\n");
}

static void print_sample(const char *text) {
    printf("----- sample -----\n");
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        putchar(c == '\n' || c == '\t' || c >= 32 ? c : '?');
    }
    printf("\n------------------\n");
}

/* train.device cuda: the parameters, their grads and the optimizer state move to the
 * GPU gpu_index (a rank's local rank; the engine calls it device 0, each process owning
 * one), after a resume has loaded them on the host; new tensors of the step go there,
 * and activations are bf16 unless train.dtype says f32. */
static qt_status use_device(const qt_recipe *r, int gpu_index, qt_ctx *ctx, qt_paramset *ps,
                            qt_adamw *opt, qt_paramset *qps, qt_adamw *qopt) {
    bool cuda = !strcmp(r->train.device, "cuda");
    bool bf16 = !strcmp(r->train.dtype, "bf16") || (cuda && !strcmp(r->train.dtype, "auto"));
    if (!cuda) return QT_OK;
#ifdef QT_HAVE_CUDA
    qt_status st = qt_cuda_init(gpu_index);
    if (st != QT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_ERROR(st, "train.device cuda: %s", why);
    }
    const qt_device gpu = {QT_DEV_CUDA, 0}; /* the process's GPU (cudaSetDevice above) */
    st = qt_paramset_to(ps, gpu);
    if (st == QT_OK) st = qt_adamw_to_device(opt, ps);
    if (st == QT_OK && qps) st = qt_paramset_to(qps, gpu);
    if (st == QT_OK && qopt && qopt->m) st = qt_adamw_to_device(qopt, qps);
    if (st != QT_OK) return st;
    qt_ctx_set_device(ctx, gpu);
    qt_ctx_set_compute_dtype(ctx, bf16 ? QT_BF16 : QT_F32);
    printf("device: %s; %s activations, f32 master weights\n", qt_cuda_device_desc(),
           bf16 ? "bf16" : "f32");
    return QT_OK;
#else /* the recipe's validation refuses it first */
    (void)gpu_index, (void)ctx, (void)ps, (void)opt, (void)qps, (void)qopt, (void)bf16;
    return QT_ERROR(QT_ENOTSUP, "train.device cuda: built without CUDA");
#endif
}

/* The host copies of the parameters and moments, current (for a checkpoint). */
static qt_status pull_state(qt_paramset *ps, qt_adamw *opt, qt_paramset *qps, qt_adamw *qopt) {
    qt_status st = qt_paramset_pull(ps);
    if (st == QT_OK) st = qt_adamw_pull(opt, ps);
    if (st == QT_OK && qps) st = qt_paramset_pull(qps);
    if (st == QT_OK && qopt && qopt->m) st = qt_adamw_pull(qopt, qps);
    return st;
}

/* The adapters as PEFT writes them, in <output.dir>/adapter/ (after pull_state: the
 * paramset goes back to the CPU, whose copies the writer reads). */
static qt_status save_adapter(const qt_recipe *r, qt_lora *l) {
    qt_paramset *aps = qt_lora_params(l);
    if (aps->device.kind != QT_DEV_CPU) {
        qt_status st = qt_paramset_to(aps, (qt_device){QT_DEV_CPU, 0});
        if (st != QT_OK) return st;
    }
    char dir[QT_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/adapter", r->output.dir);
    qt_status st = qt_lora_save_peft(l, dir, r->model.from[0] ? r->model.from : r->name);
    if (st == QT_OK) printf("LoRA adapter (PEFT): %s/\n", dir);
    return st;
}

/* The trained paramsets in the order qt_dist_grads takes them: the model's (LoRA: the
 * adapters), then QAT's learnable scales if any. ZeRO-1 shards the first. */
static int trained_sets(qt_paramset *ps, qt_paramset *qps, bool lora, bool has_qopt,
                        qt_paramset *out[2]) {
    int n = 0;
    if (!lora) out[n++] = ps;
    if (has_qopt) out[n++] = qps;
    return n;
}

/* QAT's static observers under data parallel: a batch's range is every rank's. */
static qt_status global_range(void *user, float range[2]) {
    double v[2] = {-(double)range[0], range[1]}; /* one max: -min and max */
    qt_status st = qt_dist_reduce_f64(user, v, 2, QT_DIST_MAX);
    range[0] = (float)-v[0];
    range[1] = (float)v[1];
    return st;
}

/* ZeRO-1 checkpoint: every rank's slice of the moments gathered on rank 0 into a full
 * optimizer state (only rank 0 writes the file). */
static qt_status zero_full_moments(qt_dist *d, const qt_adamw *slice, const qt_paramset *ps,
                                   qt_adamw *full) {
    memset(full, 0, sizeof *full);
    qt_status st = d->rank == 0 ? qt_adamw_init(full, ps, slice->cfg) : QT_OK;
    if (st == QT_OK) st = qt_dist_gather_moments(d, slice, full);
    return st;
}

/* ZeRO-1 resume: the checkpoint's full moments (of the model's parameters, or with
 * `buffers` of the second paramset's), this rank's slice of them kept. */
static qt_status zero_load_moments(const char *ckpt, qt_paramset *ps, qt_adamw *slice,
                                   bool buffers, qt_ckpt_state *cs) {
    qt_adamw full;
    qt_status st = qt_adamw_init(&full, ps, slice->cfg);
    if (st != QT_OK) return st;
    st = buffers ? qt_checkpoint_load_buffers(ckpt, ps, &full)
                 : qt_checkpoint_load(ckpt, ps, &full, cs);
    if (st == QT_OK) {
        memcpy(slice->m, full.m + slice->lo, slice->n * sizeof(float));
        memcpy(slice->v, full.v + slice->lo, slice->n * sizeof(float));
        slice->step = full.step;
    }
    qt_adamw_free(&full);
    return st;
}

/* Ranks must hold the same weights bit for bit (the same averaged grads, the same
 * update; the same observed ranges); checked at each checkpoint, so a reduction that is
 * not bitwise identical everywhere, or a rank that went its own way, is an error rather
 * than a silent drift. */
static qt_status check_ranks_agree(qt_dist *d, qt_paramset *const *sets, int n, long step) {
    if (d->world == 1) return QT_OK;
    for (int k = 0; k < n; k++) {
        int64_t hi = (int64_t)qt_dist_digest(sets[k]), lo = hi;
        qt_status st = qt_dist_reduce_i64(d, &hi, 1, QT_DIST_MAX);
        if (st == QT_OK) st = qt_dist_reduce_i64(d, &lo, 1, QT_DIST_MIN);
        if (st != QT_OK) return st;
        if (hi != lo)
            return QT_ERROR(QT_ESTATE, "step %ld: the ranks hold different values in the "
                                       "parameters of %s, ... (a collective that is not "
                                       "bitwise identical on every rank?)", step,
                            sets[k]->n ? sets[k]->params[0]->name : "?");
    }
    return QT_OK;
}

qt_status qt_train_run(const qt_recipe *r, const qt_train_opts *opts, qt_train_result *res) {
    bool resume = opts && opts->resume;
    long stop_at = opts && opts->stop_at > 0 ? opts->stop_at : r->train.steps;
    double *losses = res->losses;
    long max_losses = res->max_losses;
    float *weights = res->weights;
    size_t max_weights = res->max_weights;
    memset(res, 0, sizeof *res);
    res->losses = losses;
    res->max_losses = max_losses;
    res->weights = weights;
    res->max_weights = max_weights;
    qt_dist single = {.world = 1, .local_world = 1};
    qt_dist *d = opts && opts->dist ? opts->dist : &single;
    bool root = d->rank == 0;
    const char *rpath = opts && opts->recipe_path ? opts->recipe_path : "recipe";
    /* what data parallel cannot do yet, before any device or file is touched */
    if (d->world > 1 && r->distributed.zero && !strcmp(r->train.device, "cuda"))
        return QT_ERROR(QT_ENOTSUP, "%s: distributed.zero 1 runs on the CPU only for now; use "
                                    "distributed.zero 0 with train.device cuda", rpath);
    if (r->train.threads > 0) qt_set_num_threads(r->train.threads);
    else if (d->local_world > 1) { /* the node's cores, shared among its ranks */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        qt_set_num_threads(cores / d->local_world > 1 ? (int)(cores / d->local_world) : 1);
    }
    bool cuda = !strcmp(r->train.device, "cuda");
    bool nccl = cuda && d->world > 1 &&
                (!strcmp(r->distributed.backend, "nccl") ||
#ifdef QT_HAVE_NCCL
                 !strcmp(r->distributed.backend, "auto"));
#else
                 false);
#endif
    /* a rank's GPU: its local rank; one visible GPU (a launcher that sets
     * CUDA_VISIBLE_DEVICES per rank) is the rank's own */
    int gpu = d->local_rank;
#ifdef QT_HAVE_CUDA
    if (cuda && qt_cuda_device_count() == 1) gpu = 0;
    if (cuda) { /* before anything is loaded or written */
        qt_status cst = qt_cuda_init(gpu);
        if (cst != QT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", qt_error_message());
            return QT_ERROR(cst, "train.device cuda: %s", why);
        }
    }
#endif
    if (nccl) {
        qt_status nst = qt_dist_nccl_init(d, gpu);
        if (nst != QT_OK) return nst;
    }
    qt_model model;
    qt_tokenizer *tok = NULL;
    qt_status st = qt_recipe_model(r, &model, &tok);
    if (st != QT_OK) return st;
    qt_paramset *ps = qt_model_params(&model);
    qt_recipe_qat qcfg;
    qt_qat *qat = NULL;
    /* with lora, a qat: section is the base's format (QAT + LoRA), applied by lora_prepare */
    if (!qt_recipe_has_lora(r)) st = qt_recipe_qat_prepare(r, rpath, &model, &qcfg, &qat);
    if (qat && d->world > 1) qt_qat_set_range_reducer(qat, global_range, d);
    qt_lora *lora = NULL;
    if (st == QT_OK) st = lora_prepare(r, rpath, &model, false, &lora);
    if (st == QT_OK) st = make_dirs(r->output.dir);
    qt_dataset ds = {0};
    qt_data_format fmt = !strcmp(r->data.format, "jsonl")  ? QT_DATA_JSONL
                         : !strcmp(r->data.format, "text") ? QT_DATA_TEXT
                                                           : QT_DATA_AUTO;
    qt_chat_template chat;
    bool jsonl = fmt == QT_DATA_JSONL || (fmt == QT_DATA_AUTO && ends_with(r->data.train, ".jsonl"));
    if (st == QT_OK) st = recipe_chat_template(r, tok, jsonl, &chat);
    qt_dataset_config dc = {.path = r->data.train, .format = fmt, .tok = tok,
                            .seq_len = r->data.seq_len, .val_fraction = r->data.val_fraction,
                            .seed = (uint64_t)r->train.seed, .cache_dir = r->output.dir,
                            .chat = &chat};
    if (st == QT_OK) st = qt_dataset_open(&ds, &dc);
    if (st == QT_OK && d->world > 1) st = qt_dataset_shard(&ds, d->rank, d->world);
    if (st != QT_OK) {
        qt_dataset_close(&ds);
        qt_lora_free(lora);
        qt_qat_free(qat);
        qt_tokenizer_free(tok);
        qt_model_free(&model);
        return st;
    }
    qt_adamw opt;
    qt_adamw_config oc = {.lr = r->optimizer.lr, .beta1 = r->optimizer.betas[0],
                          .beta2 = r->optimizer.betas[1], .eps = r->optimizer.eps,
                          .weight_decay = r->optimizer.weight_decay};
    /* ZeRO-1: the first trained paramset's moments for this rank's slice only */
    bool zero = r->distributed.zero == 1 && d->world > 1;
    /* LoRA: the base is frozen, so the model's optimizer is sized for nothing (an empty
     * paramset): no moments for the base, and no step can move it, weight decay included */
    qt_paramset none;
    qt_paramset_init(&none);
    size_t zlo = 0, zhi = 0;
    if (zero && !lora) qt_dist_shard(d, d->rank, ps->n_grad, &zlo, &zhi);
    st = zero && !lora ? qt_adamw_init_slice(&opt, ps, oc, zlo, zhi)
                       : qt_adamw_init(&opt, lora ? &none : ps, oc);
    /* The second paramset ("buffers" in checkpoints): QAT's learnable scales get their
     * own AdamW (lr * qat.weight.lr_ratio, no decay); LoRA's adapters get the recipe's */
    qt_paramset *qps = qat ? qt_qat_buffers(qat) : lora ? qt_lora_params(lora) : NULL;
    qt_adamw qopt = {0};
    bool has_qopt = false;
    if (st == QT_OK && qps && qps->n_grad > 0) {
        qt_adamw_config qoc = oc;
        if (qat) qoc.weight_decay = 0.0f;
        if (zero && lora) qt_dist_shard(d, d->rank, qps->n_grad, &zlo, &zhi);
        st = zero && lora ? qt_adamw_init_slice(&qopt, qps, qoc, zlo, zhi)
                          : qt_adamw_init(&qopt, qps, qoc);
        has_qopt = st == QT_OK;
    }
    qt_paramset *sets[2];
    int n_sets = trained_sets(ps, qps, lora != NULL, has_qopt, sets);
    /* the sharded paramset's optimizer, when ZeRO-1 is on */
    qt_adamw *zopt = !zero ? NULL : lora ? &qopt : &opt;
    qt_ctx *ctx = st == QT_OK ? qt_ctx_new() : NULL;
    int64_t B = r->train.batch_size, T = r->data.seq_len;
    int32_t *ids = malloc((size_t)(B * T) * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)(B * T) * sizeof(int32_t));
    FILE *metrics = NULL;
    char path[QT_PATH_MAX + 32];
    if (st == QT_OK && (!ctx || !ids || !tgt)) st = QT_ERROR(QT_ENOMEM, "train: out of memory");
    if (st == QT_OK && root) {
        snprintf(path, sizeof path, "%s/metrics.jsonl", r->output.dir);
        metrics = fopen(path, resume ? "a" : "w"); /* a resumed run appends */
        if (!metrics) st = QT_ERROR(QT_EIO, "%s: cannot write metrics: %s", path, strerror(errno));
    }
    if (st == QT_OK && root) {
        snprintf(path, sizeof path, "%s/recipe.yaml", r->output.dir);
        FILE *f = fopen(path, "w");
        if (f) {
            qt_recipe_write(f, r);
            fclose(f);
        }
        printf("qtrain train %s: %s%s%s, %.2fM parameters; %lld tokens%s (%s), %lld train / %lld "
               "val windows of %lld; batch %lld x %d accum; %d threads\n",
               r->name, model.arch == QT_ARCH_GPT2 ? "GPT-2" : "Llama",
               r->model.from[0] ? " from " : " (new)", r->model.from, (double)ps->n_total / 1e6,
               (long long)ds.n_tokens, ds.from_cache ? " from cache" : "", r->data.tokenizer,
               (long long)ds.n_train, (long long)ds.n_val, (long long)T, (long long)B,
               r->train.grad_accum, qt_get_num_threads());
        if (d->world > 1)
            printf("data parallel: %d ranks on %d node(s), %s, batch %lld per rank (%lld "
                   "global), buckets of %g MiB%s%s\n", d->world, d->world / d->local_world,
                   nccl ? "NCCL" : cuda ? "MPI (GPU grads through the host)" : "MPI",
                   (long long)B, (long long)B * d->world, (double)r->distributed.bucket_mb,
                   r->distributed.overlap ? " overlapped with backward" : "",
                   zero ? ", ZeRO-1 (optimizer state sharded)" : "");
        if (qat) {
            char desc[256];
            printf("QAT: %s, fake-quant from step %ld\n", qt_qat_describe(qat, desc, sizeof desc),
                   r->qat.start_step);
        }
        if (lora) print_lora(lora, r, ps->n_total);
        if (jsonl && chat.family != QT_CHAT_NONE)
            printf("chat template: %s%s%s%s (prompt masked, response and its end marker trained)\n",
                   chat.family == QT_CHAT_CHATML ? "ChatML" : "Llama 3",
                   chat.system[0] ? ", system message \"" : "", chat.system,
                   chat.system[0] ? "\"" : "");
        fflush(stdout);
    }

    char ckpt[QT_PATH_MAX + 32];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", r->output.dir);
    char *recipe_text = NULL;
    size_t recipe_len = 0;
    FILE *mem = open_memstream(&recipe_text, &recipe_len);
    if (mem) {
        qt_recipe_write(mem, r);
        fclose(mem);
    }
    long start = 0;
    if (st == QT_OK && resume) { /* every rank reads the same checkpoint, any world size */
        qt_ckpt_state cs;
        st = zero && !lora ? zero_load_moments(ckpt, ps, &opt, false, &cs)
                           : qt_checkpoint_load(ckpt, ps, &opt, &cs);
        if (st == QT_OK && cs.seed != r->train.seed)
            st = QT_ERROR(QT_EINVAL, "%s: checkpoint was trained with seed %ld, the recipe says %ld",
                          ckpt, cs.seed, r->train.seed);
        if (st == QT_OK && qps && zero && lora) {
            st = zero_load_moments(ckpt, qps, &qopt, true, NULL);
        } else if (st == QT_OK && qps) {
            st = qt_checkpoint_load_buffers(ckpt, qps, has_qopt ? &qopt : NULL);
        }
        /* QLoRA: the checkpoint's base (the dequantized NF4) went back into the released
         * f32 copies; the NF4 already holds it */
        if (st == QT_OK && lora) st = qt_lora_release_base(lora);
        if (st == QT_OK) st = qt_dataset_seek(&ds, cs.data_epoch, cs.data_pos);
        if (st == QT_OK) {
            start = cs.step;
            if (root) printf("resumed from %s at step %ld\n", ckpt, start);
        }
    }

    if (st == QT_OK) st = use_device(r, gpu, ctx, ps, &opt, qps, has_qopt ? &qopt : NULL);
    qt_dist_grads *grads = NULL;
    if (st == QT_OK && d->world > 1) {
        qt_dist_grads_config gc = {.bucket_bytes = (size_t)(r->distributed.bucket_mb * 1048576.0),
                                   .overlap = r->distributed.overlap, .zero = zero};
        st = qt_dist_grads_new(d, sets, n_sets, &gc, &grads);
    }
    /* ranks start the clock together: setup takes each its own time */
    if (st == QT_OK) st = qt_dist_barrier(d);
    int64_t shape[2] = {B, T};
    /* the live bar only for a single process: mpirun hands rank 0 a pseudo-terminal
     * even when its own output goes to a file */
    bool tty = d->world == 1 && isatty(STDOUT_FILENO);
    if (st == QT_OK && opts && opts->stop_at > 0 && stop_at <= start)
        st = QT_ERROR(QT_EINVAL, "--stop-at %ld: %s is already at step %ld", stop_at, ckpt, start);
    double t0 = qt_now_s(), tokens = 0;
    int bad_run = 0;
    for (long step = start; st == QT_OK && step < r->train.steps; step++) {
        float lr = qt_lr_at(step, r->train.steps, r->optimizer.lr, r->schedule.warmup,
                            r->schedule.decay, r->schedule.min_lr_ratio);
        if (qat) qt_qat_set_enabled(qat, step >= r->qat.start_step);
        /* learnable scales start from the weights fake-quant will see (a resumed run past
         * start_step has them from the checkpoint) */
        if (has_qopt && step == r->qat.start_step && step > 0) qt_qat_init_scales(qat);
        double loss = 0.0;
        for (int micro = 0; micro < r->train.grad_accum && st == QT_OK; micro++) {
            /* a fresh dropout mask per micro-batch and rank, the same again after a resume
             * (one process: the step's micro-batch index, as before data parallel) */
            if (lora)
                qt_lora_set_step(lora, ((uint64_t)step * (uint64_t)r->train.grad_accum +
                                        (uint64_t)micro) * (uint64_t)d->world + (uint64_t)d->rank);
            qt_ctx_reset(ctx);
            qt_dataset_next(&ds, B, ids, tgt);
            qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, ids);
            qt_tensor *y = qt_tensor_from(ctx, QT_I32, 2, shape, tgt);
            qt_tensor *l = qt_cross_entropy(ctx, qt_model_forward(ctx, &model, x), y, -100);
            /* Masked targets (prompt tokens) make the ranks' means cover different counts:
             * rank r's mean weighted by world n_r / n (n = every rank's count) averages to
             * the mean over the global batch's tokens, as one process with it computes */
            float w = 1.0f;
            if (d->world > 1 && ds.mask) {
                int64_t n_local = counted_targets(tgt, B * T), n_all = n_local;
                st = qt_dist_reduce_i64(d, &n_all, 1, QT_DIST_SUM);
                if (n_all > 0) w = (float)((double)n_local * d->world / (double)n_all);
            }
            l = qt_scale(ctx, l, w / (float)r->train.grad_accum);
            /* the last micro-batch completes the grads: their buckets move as they do */
            if (grads && micro == r->train.grad_accum - 1) qt_dist_grads_arm(grads, ctx);
            if (st == QT_OK && !l)
                st = QT_ERROR(qt_ctx_status(ctx), "step %ld: %s", step, qt_ctx_error(ctx));
            else if (st == QT_OK)
                st = qt_backward(ctx, l);
            float lv = 0.0f;
            if (st == QT_OK) st = qt_tensor_read(l, &lv);
            loss += lv;
            tokens += (double)(B * T) * d->world;
        }
        /* the mean over ranks of the per-rank means: the global batch's loss and grads */
        if (grads && st == QT_OK) st = qt_dist_grads_finish(grads, ctx);
        else if (grads) qt_dist_grads_disarm(grads, ctx);
        if (st == QT_OK && d->world > 1) {
            st = qt_dist_reduce_f64(d, &loss, 1, QT_DIST_SUM);
            loss /= d->world;
        }
        if (st != QT_OK) break;
        double sq = 0.0, qsq = 0.0; /* LoRA: the norm is the adapters' alone */
        if (!lora) st = zero ? qt_grad_sumsq_range(ps, zlo, zhi, &sq) : qt_grad_sumsq(ps, &sq);
        if (st == QT_OK && has_qopt)
            st = zero && lora ? qt_grad_sumsq_range(qps, zlo, zhi, &qsq) : qt_grad_sumsq(qps, &qsq);
        if (st == QT_OK && zero) { /* ZeRO-1: each rank holds its slice's sum */
            double *part = lora ? &qsq : &sq;
            st = qt_dist_reduce_f64(d, part, 1, QT_DIST_SUM);
        }
        if (st != QT_OK) break;
        double gnorm = sqrt(sq + qsq);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            bad_run++;
            res->skipped_steps++;
            if (root)
                printf("step %ld: loss %g, grad norm %g: not finite, step skipped (%d in a row)\n",
                       step, loss, gnorm, bad_run);
            if (!lora) qt_paramset_zero_grad(ps);
            if (has_qopt) qt_paramset_zero_grad(qps);
            if (bad_run >= r->train.max_bad_steps)
                st = QT_ERROR(QT_ENUMERIC, "training diverged: %d non-finite steps in a row "
                                           "(train.max_bad_steps); lower optimizer.lr?", bad_run);
            continue;
        }
        bad_run = 0;
        if (r->train.grad_clip > 0 && gnorm > r->train.grad_clip) {
            float s = (float)(r->train.grad_clip / gnorm);
            if (!lora) st = qt_grad_scale(ps, s);
            if (st == QT_OK && has_qopt) st = qt_grad_scale(qps, s);
            if (st != QT_OK) break;
        }
        if (!lora) {
            st = qt_adamw_step(&opt, ps, lr);
            if (st == QT_OK && zero) st = qt_dist_allgather_params(d, ps);
            if (st != QT_OK) break;
            qt_paramset_zero_grad(ps);
        }
        if (lora && has_qopt) {
            st = qt_adamw_step(&qopt, qps, lr);
            if (st == QT_OK && zero) st = qt_dist_allgather_params(d, qps);
            if (st != QT_OK) break;
            qt_paramset_zero_grad(qps);
        } else if (has_qopt) { /* QAT: not before fake-quant is on (bias correction) */
            if (step >= r->qat.start_step) {
                st = qt_adamw_step(&qopt, qps, lr * r->qat.weight.lr_ratio);
                if (st != QT_OK) break;
                qt_qat_after_step(qat);
            }
            qt_paramset_zero_grad(qps);
        }
        if (step == start) res->first_loss = loss;
        res->last_loss = loss;
        res->steps = step + 1;
        if (res->losses && step < res->max_losses) res->losses[step] = loss;

        bool last = step == r->train.steps - 1;
        bool log_now = step % r->output.log_every == 0 || last;
        if (tty && !log_now) { /* a live bar between log lines, on a terminal only */
            double el = qt_now_s() - t0;
            int w = (int)(30 * (step + 1) / r->train.steps);
            printf("\r[%.*s%.*s] %ld/%ld loss %.4f %.0f tok/s eta %.0fs ", w,
                   "##############################", 30 - w, "..............................",
                   step + 1, r->train.steps, loss, tokens / (el > 0 ? el : 1e-9),
                   el / (double)(step + 1 - start) * (double)(r->train.steps - step - 1));
            fflush(stdout);
        }
        if (log_now && root) {
            if (tty) printf("\r\033[K");
            double el = qt_now_s() - t0, tps = tokens / (el > 0 ? el : 1e-9);
            double eta = el / (double)(step + 1 - start) * (double)(r->train.steps - step - 1);
            printf("step %6ld/%ld  loss %.4f  lr %.2e  gnorm %.3f  %.0f tok/s  %.0fs  eta %.0fs\n",
                   step + 1, r->train.steps, loss, (double)lr, gnorm, tps, el, eta);
            fflush(stdout);
            fprintf(metrics,
                    "{\"step\": %ld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                    "\"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}\n",
                    step + 1, loss, (double)lr, gnorm, tps, el);
            fflush(metrics);
        }
        bool eval_now = last || (r->output.eval_every && (step + 1) % r->output.eval_every == 0);
        if (eval_now && ds.n_val > 0) {
            double vl = 0.0;
            st = evaluate(ctx, &model, &ds, B, r->output.eval_batches, ids, tgt, d, &vl);
            if (st != QT_OK) break;
            res->val_loss = vl;
            res->val_ppl = exp(vl);
            if (root) {
                printf("eval step %ld: val loss %.4f, perplexity %.3f (per byte)\n", step + 1,
                       vl, exp(vl));
                fprintf(metrics, "{\"step\": %ld, \"val_loss\": %.6f, \"val_ppl\": %.4f}\n",
                        step + 1, vl, exp(vl));
                fflush(metrics);
            }
            if (root && r->output.sample_tokens > 0) {
                char *text = NULL;
                if (qt_generate(ctx, &model, tok, r->output.sample_prompt, r->output.sample_tokens,
                                (int)r->data.seq_len, 0.8f, (uint64_t)r->train.seed + (uint64_t)step,
                                &text) == QT_OK)
                    print_sample(text);
                free(text);
            }
        }
        if (last || step + 1 == stop_at ||
            (r->output.checkpoint_every && (step + 1) % r->output.checkpoint_every == 0)) {
            qt_ckpt_state cs = {.step = step + 1, .data_epoch = ds.epoch, .data_pos = ds.pos,
                                .seed = r->train.seed};
            st = pull_state(ps, &opt, qps, has_qopt ? &qopt : NULL);
            /* QAT's buffers too: static observers' ranges are frozen parameters */
            qt_paramset *agree[3];
            int n_agree = 0;
            for (int k = 0; k < n_sets; k++) agree[n_agree++] = sets[k];
            if (qat && qps && !has_qopt) agree[n_agree++] = qps;
            if (st == QT_OK) st = check_ranks_agree(d, agree, n_agree, step + 1);
            qt_adamw full = {0}; /* ZeRO-1: the whole state, on rank 0 */
            if (st == QT_OK && zopt) st = zero_full_moments(d, zopt, lora ? qps : ps, &full);
            const qt_adamw *wopt = zopt && !lora ? &full : &opt;
            const qt_adamw *wqopt = zopt && lora ? &full : has_qopt ? &qopt : NULL;
            /* QLoRA: the base as trained against (dequantized NF4) for the file, then
             * released again */
            if (st == QT_OK && root && lora) st = qt_lora_restore_base(lora);
            if (st == QT_OK && root)
                st = qt_checkpoint_save(ckpt, ps, wopt, &cs, recipe_text, qps, wqopt);
            if (st == QT_OK && root && lora) st = qt_lora_release_base(lora);
            qt_adamw_free(&full);
            if (st != QT_OK || step + 1 == stop_at) break; /* stop_at: checkpointed, done */
        }
    }
    res->seconds = qt_now_s() - t0;
    if (st == QT_OK) st = pull_state(ps, &opt, qps, has_qopt ? &qopt : NULL);
    if (st == QT_OK && lora && root) st = save_adapter(r, lora);
    if (st == QT_OK && res->weights && lora) st = qt_lora_restore_base(lora);
    if (st == QT_OK && res->weights) {
        size_t n = ps->n_total < res->max_weights ? ps->n_total : res->max_weights;
        memcpy(res->weights, ps->data, n * sizeof(float));
    }
    qt_dist_grads_free(grads);
    free(recipe_text);
    if (metrics) fclose(metrics);
    free(ids);
    free(tgt);
    qt_ctx_free(ctx);
    qt_adamw_free(&opt);
    if (has_qopt) qt_adamw_free(&qopt);
    qt_lora_free(lora);
    qt_qat_free(qat);
    qt_model_free(&model);
    qt_tokenizer_free(tok);
    qt_dataset_close(&ds);
    return st;
}
