/*
 * loop.c - the training loop a recipe drives (qt_train_run), written to be read top to
 * bottom:
 *
 *   set up      threads and devices; the model (qt_model_open) and what is trained
 *               (trainable.c: the model, QAT's scales, LoRA's adapters; ZeRO-1 slices);
 *               the data; metrics.jsonl and the run's summary; a resumed checkpoint;
 *               the GPU; gradient averaging across ranks
 *   each step   batch and forward/backward over the micro-batches (gradient
 *               accumulation), reduce (the mean over ranks), clip (global norm), update
 *               (AdamW at the schedule's rate: warmup, then cosine/linear/constant
 *               decay), log, eval (validation loss, perplexity, a sample), checkpoint
 *   tear down   the final state, the LoRA adapter in PEFT's layout
 *
 * A step whose loss or grad norm is not finite is skipped (train.max_bad_steps in a row
 * end the run). Nothing is printed: rank 0 reports through opts->on_event and writes
 * metrics.jsonl.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train_internal.h"
#ifdef QT_HAVE_CUDA
#include "qt_cuda.h"
#endif

/* Everything one run holds, set up once and torn down once. */
typedef struct {
    const qt_recipe *r;
    const qt_train_opts *opts;
    const char *rpath;        /* names the recipe in messages */
    qt_dist single, *d;       /* this rank (single: a process of its own) */
    bool root;                /* rank 0: reports and writes */
    bool cuda;
    int gpu;                  /* the rank's GPU */
    qt_train_result *res;

    bool have_model;
    qt_loaded_model lm;       /* model, tokenizer, QAT */
    qt_lora *lora;            /* LoRA adapters on the model, or NULL */
    qt_trainables ts;         /* what is trained */
    qt_dataset ds;
    qt_chat_template chat;
    bool jsonl;               /* data.train is prompt/response or text records */
    qt_ctx *ctx;
    int64_t B, T;             /* batch (per rank) and sequence length */
    int32_t *ids, *tgt;       /* (B, T) one micro-batch's inputs and targets */
    FILE *metrics;            /* rank 0's metrics.jsonl */
    char ckpt[QT_PATH_MAX + 32];
    char *recipe_text;        /* the resolved recipe, stored in checkpoints */
    qt_dist_grads *grads;     /* averaging across ranks; NULL in one process */
    long start, stop_at;      /* the first step of this run; the step to stop after */
    double t0, tokens;        /* the loop's start; tokens seen by all ranks */
    int bad_run;              /* non-finite steps in a row */
} train_run;

/* ---- reporting ------------------------------------------------------------------ */

static void emit(const train_run *s, qt_train_event *ev) {
    ev->steps = s->r->train.steps;
    if (s->root && s->opts && s->opts->on_event) s->opts->on_event(s->opts->user, ev);
}

/* One line of the run's report. */
static void __attribute__((format(printf, 2, 3))) say(const train_run *s, const char *fmt, ...) {
    if (!s->root || !s->opts || !s->opts->on_event) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(s, &(qt_train_event){.kind = QT_TRAIN_EV_LINE, .text = line});
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

/* ---- set up --------------------------------------------------------------------- */

/* Options, threads, and the GPU and NCCL before anything is loaded or written. */
static qt_status start(train_run *s, const qt_recipe *r, const qt_train_opts *opts,
                       qt_train_result *res) {
    memset(s, 0, sizeof *s);
    s->r = r;
    s->opts = opts;
    s->res = res;
    double *losses = res->losses;
    long max_losses = res->max_losses;
    float *weights = res->weights;
    size_t max_weights = res->max_weights;
    memset(res, 0, sizeof *res);
    res->losses = losses;
    res->max_losses = max_losses;
    res->weights = weights;
    res->max_weights = max_weights;
    s->single = (qt_dist){.world = 1, .local_world = 1};
    s->d = opts && opts->dist ? opts->dist : &s->single;
    s->root = s->d->rank == 0;
    s->rpath = opts && opts->recipe_path ? opts->recipe_path : "recipe";
    s->stop_at = opts && opts->stop_at > 0 ? opts->stop_at : r->train.steps;
    qt_dist *d = s->d;
    /* what data parallel cannot do yet, before any device or file is touched */
    if (d->world > 1 && r->distributed.zero && !strcmp(r->train.device, "cuda"))
        return QT_ERROR(QT_ENOTSUP, "%s: distributed.zero 1 runs on the CPU only for now; use "
                                    "distributed.zero 0 with train.device cuda", s->rpath);
    if (r->train.threads > 0) qt_set_num_threads(r->train.threads);
    else if (d->local_world > 1) { /* the node's cores, shared among its ranks */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        qt_set_num_threads(cores / d->local_world > 1 ? (int)(cores / d->local_world) : 1);
    }
    s->cuda = !strcmp(r->train.device, "cuda");
    bool nccl = s->cuda && d->world > 1 &&
                (!strcmp(r->distributed.backend, "nccl") ||
#ifdef QT_HAVE_NCCL
                 !strcmp(r->distributed.backend, "auto"));
#else
                 false);
#endif
    /* a rank's GPU: its local rank; one visible GPU (a launcher that sets
     * CUDA_VISIBLE_DEVICES per rank) is the rank's own */
    s->gpu = d->local_rank;
#ifdef QT_HAVE_CUDA
    if (s->cuda && qt_cuda_device_count() == 1) s->gpu = 0;
    if (s->cuda) {
        qt_status cst = qt_cuda_init(s->gpu);
        if (cst != QT_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", qt_error_message());
            return QT_ERROR(cst, "train.device cuda: %s", why);
        }
    }
#endif
    return nccl ? qt_dist_nccl_init(d, s->gpu) : QT_OK;
}

/* QAT's static observers under data parallel: a batch's range is every rank's. */
static qt_status global_range(void *user, float range[2]) {
    double v[2] = {-(double)range[0], range[1]}; /* one max: -min and max */
    qt_status st = qt_dist_reduce_f64(user, v, 2, QT_DIST_MAX);
    range[0] = (float)-v[0];
    range[1] = (float)v[1];
    return st;
}

/* The model as the recipe describes it, with QAT's fake-quant or LoRA's adapters. */
static qt_status open_model(train_run *s) {
    const qt_recipe *r = s->r;
    qt_model_source src = {.recipe = r, .recipe_path = s->rpath, .qat = true};
    qt_status st = qt_model_open(&src, &s->lm);
    if (st != QT_OK) return st;
    s->have_model = true;
    if (s->lm.qat && s->d->world > 1) qt_qat_set_range_reducer(s->lm.qat, global_range, s->d);
    /* with lora, a qat: section is the base's format (QAT + LoRA), applied by the attach */
    return qt_recipe_lora_attach(r, s->rpath, &s->lm.m, false, &s->lora);
}

/* data.chat_template resolved against the model's template (qt_chat_template_resolve);
 * auto with a template qtrain does not recognise says so, for JSONL data. */
static qt_status chat_template(train_run *s) {
    const qt_recipe *r = s->r;
    char src[QT_PATH_MAX], note[256];
    char *jinja = NULL;
    qt_status st = QT_OK;
    memset(&s->chat, 0, sizeof s->chat);
    if (!strcmp(r->data.chat_template, "none")) return QT_OK;
    const qt_tokenizer *tok = s->lm.tok;
    if (tok) st = qt_recipe_chat_source(r, src, sizeof src);
    if (st == QT_OK && tok && src[0]) st = qt_chat_template_read(src, &jinja);
    if (st == QT_OK)
        st = qt_chat_template_resolve(r->data.chat_template, jinja, tok, &s->chat, note,
                                      sizeof note);
    if (st == QT_OK && note[0] && s->jsonl) say(s, "%s", note);
    free(jinja);
    return st;
}

/* output.dir, and the training data (this rank's shard of it). */
static qt_status open_data(train_run *s) {
    const qt_recipe *r = s->r;
    qt_status st = qt_make_dirs(r->output.dir);
    qt_data_format fmt = !strcmp(r->data.format, "jsonl")  ? QT_DATA_JSONL
                         : !strcmp(r->data.format, "text") ? QT_DATA_TEXT
                                                           : QT_DATA_AUTO;
    s->jsonl = fmt == QT_DATA_JSONL || (fmt == QT_DATA_AUTO && ends_with(r->data.train, ".jsonl"));
    if (st == QT_OK) st = chat_template(s);
    qt_dataset_config dc = {.path = r->data.train, .format = fmt, .tok = s->lm.tok,
                            .seq_len = r->data.seq_len, .val_fraction = r->data.val_fraction,
                            .seed = (uint64_t)r->train.seed, .cache_dir = r->output.dir,
                            .chat = &s->chat};
    if (st == QT_OK) st = qt_dataset_open(&s->ds, &dc);
    if (st == QT_OK && s->d->world > 1) st = qt_dataset_shard(&s->ds, s->d->rank, s->d->world);
    return st;
}

/* What is trained: the whole model, plus QAT's buffers; or LoRA's adapters alone.
 * ZeRO-1 (data parallel only) slices the first trained set's optimizer. */
static qt_status build_trainables(train_run *s) {
    const qt_recipe *r = s->r;
    qt_adamw_config oc = {.lr = r->optimizer.lr, .beta1 = r->optimizer.betas[0],
                          .beta2 = r->optimizer.betas[1], .eps = r->optimizer.eps,
                          .weight_decay = r->optimizer.weight_decay};
    bool zero = r->distributed.zero == 1 && s->d->world > 1;
    qt_paramset *ps = qt_model_params(&s->lm.m);
    if (s->lora) return qt_trainables_lora(&s->ts, ps, s->lora, &oc, s->d, zero);
    qt_status st = qt_trainables_model(&s->ts, ps, &oc, s->d, zero);
    if (st == QT_OK && s->lm.qat)
        st = qt_trainables_add_qat(&s->ts, s->lm.qat, &oc, r->qat.weight.lr_ratio,
                                   r->qat.start_step);
    return st;
}

/* "LoRA: r 16, alpha 16 (scaling 1), 14 layers (all-linear), 1.2M trainable ..." */
static void say_lora(const train_run *s, size_t n_base) {
    const qt_lora *l = s->lora;
    char targets[256] = "all-linear", line[1024];
    size_t used = 0;
    for (int i = 0; i < l->cfg.n_targets && used < sizeof targets; i++)
        used += (size_t)snprintf(targets + used, sizeof targets - used, "%s%s", i ? ", " : "",
                                 l->cfg.targets[i]);
    size_t n = l->params.n_total;
    int k = snprintf(line, sizeof line,
                     "LoRA: r %d, alpha %g (scaling %g%s), %d layers (%s), %zu trainable "
                     "parameters (%.3f%% of %zu)", l->cfg.rank, (double)l->cfg.alpha,
                     (double)l->scaling, l->cfg.rslora ? ", rsLoRA" : "", l->n, targets, n,
                     100.0 * (double)n / (double)(n + n_base), n + n_base);
#define APPEND(...)                                                                         \
    if (k >= 0 && (size_t)k < sizeof line) k += snprintf(line + k, sizeof line - (size_t)k, __VA_ARGS__)
    if (l->cfg.dropout > 0) APPEND(", dropout %g", (double)l->cfg.dropout);
    if (l->cfg.nf4) APPEND("; QLoRA base: NF4, %.3f bits per parameter", qt_lora_nf4_bits(l));
    if (l->cfg.base_fq) {
        char fs[64];
        APPEND("; QAT + LoRA: the base fake-quantized to %s",
               qt_qformat_str(&l->cfg.base_fmt, fs, sizeof fs));
    }
    if (s->r->lora.adapter[0]) APPEND("; from %s", s->r->lora.adapter);
#undef APPEND
    say(s, "%s", line);
}

/* The run's summary: model, data, batch, data parallel, QAT, LoRA, chat template. */
static void say_setup(train_run *s) {
    const qt_recipe *r = s->r;
    const qt_dist *d = s->d;
    const qt_paramset *ps = qt_model_params(&s->lm.m);
    say(s, "qtrain train %s: %s%s%s, %.2fM parameters; %lld tokens%s (%s), %lld train / %lld "
           "val windows of %lld; batch %lld x %d accum; %d threads",
        r->name, s->lm.m.arch == QT_ARCH_GPT2 ? "GPT-2" : "Llama",
        r->model.from[0] ? " from " : " (new)", r->model.from, (double)ps->n_total / 1e6,
        (long long)s->ds.n_tokens, s->ds.from_cache ? " from cache" : "", r->data.tokenizer,
        (long long)s->ds.n_train, (long long)s->ds.n_val, (long long)s->T, (long long)s->B,
        r->train.grad_accum, qt_get_num_threads());
    if (d->world > 1)
        say(s, "data parallel: %d ranks on %d node(s), %s, batch %lld per rank (%lld "
               "global), buckets of %g MiB%s%s", d->world, d->world / d->local_world,
            d->nccl ? "NCCL" : s->cuda ? "MPI (GPU grads through the host)" : "MPI",
            (long long)s->B, (long long)s->B * d->world, (double)r->distributed.bucket_mb,
            r->distributed.overlap ? " overlapped with backward" : "",
            r->distributed.zero ? ", ZeRO-1 (optimizer state sharded)" : "");
    if (s->lm.qat) {
        char desc[256];
        say(s, "QAT: %s, fake-quant from step %ld", qt_qat_describe(s->lm.qat, desc, sizeof desc),
            r->qat.start_step);
    }
    if (s->lora) say_lora(s, ps->n_total);
    const qt_chat_template *c = &s->chat;
    if (s->jsonl && c->family != QT_CHAT_NONE)
        say(s, "chat template: %s%s%s%s (prompt masked, response and its end marker trained)",
            c->family == QT_CHAT_CHATML ? "ChatML" : "Llama 3",
            c->system[0] ? ", system message \"" : "", c->system, c->system[0] ? "\"" : "");
}

/* The step's buffers and context, metrics.jsonl (a resumed run appends), the resolved
 * recipe beside it, and the summary. */
static qt_status open_outputs(train_run *s) {
    const qt_recipe *r = s->r;
    s->B = r->train.batch_size;
    s->T = r->data.seq_len;
    s->ctx = qt_ctx_new();
    s->ids = malloc((size_t)(s->B * s->T) * sizeof(int32_t));
    s->tgt = malloc((size_t)(s->B * s->T) * sizeof(int32_t));
    if (!s->ctx || !s->ids || !s->tgt) return QT_ERROR(QT_ENOMEM, "train: out of memory");
    snprintf(s->ckpt, sizeof s->ckpt, "%s/checkpoint.h5", r->output.dir);
    s->recipe_text = qt_recipe_text(r);
    if (!s->root) return QT_OK;
    char path[QT_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->output.dir);
    s->metrics = fopen(path, s->opts && s->opts->resume ? "a" : "w");
    if (!s->metrics) return QT_ERROR(QT_EIO, "%s: cannot write metrics: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/recipe.yaml", r->output.dir);
    FILE *f = fopen(path, "w");
    if (f) {
        qt_recipe_write(f, r);
        fclose(f);
    }
    say_setup(s);
    return QT_OK;
}

/* Every rank reads the same checkpoint, on any number of ranks. */
static qt_status resume(train_run *s) {
    qt_ckpt_state cs;
    qt_status st = qt_trainables_load(&s->ts, s->ckpt, s->r->train.seed, &cs);
    if (st == QT_OK) st = qt_dataset_seek(&s->ds, cs.data_epoch, cs.data_pos);
    if (st != QT_OK) return st;
    s->start = cs.step;
    say(s, "resumed from %s at step %ld", s->ckpt, s->start);
    return QT_OK;
}

/* train.device cuda: the parameters, their grads and the optimizer state move to the
 * GPU (a rank's local rank; the engine calls it device 0, each process owning one),
 * after a resume has loaded them on the host; new tensors of the step go there, and
 * activations are bf16 unless train.dtype says f32. */
static qt_status to_device(train_run *s) {
    if (!s->cuda) return QT_OK;
#ifdef QT_HAVE_CUDA
    const char *dt = s->r->train.dtype;
    bool bf16 = !strcmp(dt, "bf16") || !strcmp(dt, "auto");
    qt_status st = qt_cuda_init(s->gpu);
    if (st != QT_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", qt_error_message());
        return QT_ERROR(st, "train.device cuda: %s", why);
    }
    const qt_device gpu = {QT_DEV_CUDA, 0}; /* the process's GPU (cudaSetDevice above) */
    st = qt_trainables_to(&s->ts, gpu);
    if (st != QT_OK) return st;
    qt_ctx_set_device(s->ctx, gpu);
    qt_ctx_set_compute_dtype(s->ctx, bf16 ? QT_BF16 : QT_F32);
    say(s, "device: %s; %s activations, f32 master weights", qt_cuda_device_desc(),
        bf16 ? "bf16" : "f32");
    return QT_OK;
#else /* the recipe's validation refuses it first */
    return QT_ERROR(QT_ENOTSUP, "train.device cuda: built without CUDA");
#endif
}

/* Data parallel: the trained grads' averaging across ranks; then the ranks start the
 * clock together (setup takes each its own time). */
static qt_status start_averaging(train_run *s) {
    const qt_recipe *r = s->r;
    qt_status st = QT_OK;
    if (s->d->world > 1) {
        qt_paramset *sets[2];
        qt_dist_grads_config gc = {.bucket_bytes = (size_t)(r->distributed.bucket_mb * 1048576.0),
                                   .overlap = r->distributed.overlap};
        int n = qt_trainables_grads(&s->ts, sets, &gc.zero);
        st = qt_dist_grads_new(s->d, sets, n, &gc, &s->grads);
    }
    if (st == QT_OK) st = qt_dist_barrier(s->d);
    if (st == QT_OK && s->opts && s->opts->stop_at > 0 && s->stop_at <= s->start)
        st = QT_ERROR(QT_EINVAL, "--stop-at %ld: %s is already at step %ld", s->stop_at, s->ckpt,
                      s->start);
    return st;
}

/* ---- one step ------------------------------------------------------------------- */

/* Targets that count (not -100, a masked prompt token) among n. */
static int64_t counted_targets(const int32_t *tgt, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += tgt[i] != -100;
    return c;
}

/* Batch and forward/backward of each micro-batch: grads accumulate (+=) over them, each
 * loss scaled by 1/grad_accum; *loss: this rank's mean. */
static qt_status forward_backward(train_run *s, long step, double *loss) {
    const qt_recipe *r = s->r;
    qt_dist *d = s->d;
    int accum = r->train.grad_accum;
    int64_t shape[2] = {s->B, s->T};
    qt_status st = QT_OK;
    for (int micro = 0; micro < accum && st == QT_OK; micro++) {
        /* a fresh dropout mask per micro-batch and rank, the same again after a resume
         * (one process: the step's micro-batch index, as before data parallel) */
        if (s->ts.micro_begin)
            s->ts.micro_begin(&s->ts, ((uint64_t)step * (uint64_t)accum + (uint64_t)micro) *
                                          (uint64_t)d->world + (uint64_t)d->rank);
        qt_ctx_reset(s->ctx);
        qt_dataset_next(&s->ds, s->B, s->ids, s->tgt);
        qt_tensor *x = qt_tensor_from(s->ctx, QT_I32, 2, shape, s->ids);
        qt_tensor *y = qt_tensor_from(s->ctx, QT_I32, 2, shape, s->tgt);
        qt_tensor *l = qt_cross_entropy(s->ctx, qt_model_forward(s->ctx, &s->lm.m, x), y, -100);
        /* Masked targets (prompt tokens) make the ranks' means cover different counts:
         * rank r's mean weighted by world n_r / n (n = every rank's count) averages to
         * the mean over the global batch's tokens, as one process with it computes */
        float w = 1.0f;
        if (d->world > 1 && s->ds.mask) {
            int64_t n_local = counted_targets(s->tgt, s->B * s->T), n_all = n_local;
            st = qt_dist_reduce_i64(d, &n_all, 1, QT_DIST_SUM);
            if (n_all > 0) w = (float)((double)n_local * d->world / (double)n_all);
        }
        l = qt_scale(s->ctx, l, w / (float)accum);
        /* the last micro-batch completes the grads: their buckets move as they do */
        if (s->grads && micro == accum - 1) qt_dist_grads_arm(s->grads, s->ctx);
        if (st == QT_OK && !l)
            st = QT_ERROR(qt_ctx_status(s->ctx), "step %ld: %s", step, qt_ctx_error(s->ctx));
        else if (st == QT_OK)
            st = qt_backward(s->ctx, l);
        float lv = 0.0f;
        if (st == QT_OK) st = qt_tensor_read(l, &lv);
        *loss += lv;
        s->tokens += (double)(s->B * s->T) * d->world;
    }
    return st;
}

/* Data parallel: the mean over ranks of the per-rank means, the global batch's loss and
 * grads (ZeRO-1: this rank's slice of them). After a failure: nothing more starts. */
static qt_status reduce(train_run *s, qt_status st, double *loss) {
    if (s->grads && st == QT_OK) st = qt_dist_grads_finish(s->grads, s->ctx);
    else if (s->grads) qt_dist_grads_disarm(s->grads, s->ctx);
    if (st == QT_OK && s->d->world > 1) {
        st = qt_dist_reduce_f64(s->d, loss, 1, QT_DIST_SUM);
        *loss /= s->d->world;
    }
    return st;
}

/* A non-finite loss or grad norm: the grads are dropped and the step skipped. */
static qt_status skip_step(train_run *s, long step, double loss, double gnorm) {
    s->bad_run++;
    s->res->skipped_steps++;
    say(s, "step %ld: loss %g, grad norm %g: not finite, step skipped (%d in a row)", step, loss,
        gnorm, s->bad_run);
    qt_trainables_zero_grad(&s->ts);
    if (s->bad_run >= s->r->train.max_bad_steps)
        return QT_ERROR(QT_ENUMERIC, "training diverged: %d non-finite steps in a row "
                                     "(train.max_bad_steps); lower optimizer.lr?", s->bad_run);
    return QT_OK;
}

/* Global-norm clipping: every trained grad scaled by grad_clip / norm above grad_clip. */
static qt_status clip(train_run *s, double gnorm) {
    float c = s->r->train.grad_clip;
    if (c > 0 && gnorm > c) return qt_trainables_clip(&s->ts, (float)(c / gnorm));
    return QT_OK;
}

/* The step's numbers: the result, rank 0's progress event and its metrics line. */
static void log_step(train_run *s, long step, double loss, float lr, double gnorm) {
    const qt_recipe *r = s->r;
    qt_train_result *res = s->res;
    if (step == s->start) res->first_loss = loss;
    res->last_loss = loss;
    res->steps = step + 1;
    if (res->losses && step < res->max_losses) res->losses[step] = loss;
    bool logged = step % r->output.log_every == 0 || step == r->train.steps - 1;
    double el = qt_now_s() - s->t0, tps = s->tokens / (el > 0 ? el : 1e-9);
    double eta = el / (double)(step + 1 - s->start) * (double)(r->train.steps - step - 1);
    emit(s, &(qt_train_event){.kind = QT_TRAIN_EV_STEP, .step = step + 1, .logged = logged,
                              .loss = loss, .lr = lr, .grad_norm = gnorm, .tokens_per_s = tps,
                              .elapsed_s = el, .eta_s = eta});
    if (logged && s->metrics) {
        fprintf(s->metrics,
                "{\"step\": %ld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                "\"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}\n",
                step + 1, loss, (double)lr, gnorm, tps, el);
        fflush(s->metrics);
    }
}

/* Mean validation loss over eval_batches batches, grad mode off. Data parallel: batch i
 * is world * B windows, rank r scoring its slice of B, so N ranks with batch B score the
 * windows one process with batch N B does. */
static qt_status val_loss(train_run *s, double *loss_out) {
    const qt_dataset *ds = &s->ds;
    qt_dist *d = s->d;
    int64_t B = s->B, shape[2] = {B, ds->seq_len};
    int batches = s->r->output.eval_batches;
    double total = 0.0;
    qt_status st = QT_OK;
    bool prev = qt_ctx_set_grad_enabled(s->ctx, false);
    for (int i = 0; i < batches && st == QT_OK; i++) {
        qt_ctx_reset(s->ctx);
        qt_dataset_val(ds, ((int64_t)i * d->world + d->rank) * B, B, s->ids, s->tgt);
        qt_tensor *x = qt_tensor_from(s->ctx, QT_I32, 2, shape, s->ids);
        qt_tensor *y = qt_tensor_from(s->ctx, QT_I32, 2, shape, s->tgt);
        qt_tensor *l = qt_cross_entropy(s->ctx, qt_model_forward(s->ctx, &s->lm.m, x), y, -100);
        if (!l) {
            st = QT_ERROR(qt_ctx_status(s->ctx), "eval: %s", qt_ctx_error(s->ctx));
            break;
        }
        float lv = 0.0f;
        st = qt_tensor_read(l, &lv);
        if (st == QT_OK && d->world > 1 && ds->mask) {
            /* the batch's mean over every rank's counted tokens */
            double v[2] = {0, (double)counted_targets(s->tgt, B * ds->seq_len)};
            v[0] = lv * v[1];
            st = qt_dist_reduce_f64(d, v, 2, QT_DIST_SUM);
            total += v[1] > 0 ? v[0] / v[1] : 0.0;
        } else {
            total += lv;
        }
    }
    qt_ctx_set_grad_enabled(s->ctx, prev);
    if (st != QT_OK) return st;
    if (d->world > 1 && ds->mask) {
        *loss_out = total / batches;
        return QT_OK;
    }
    st = qt_dist_reduce_f64(d, &total, 1, QT_DIST_SUM);
    *loss_out = total / ((double)batches * d->world);
    return st;
}

/* Validation loss and perplexity; on rank 0 a sample of text after it. */
static qt_status eval(train_run *s, long step) {
    const qt_recipe *r = s->r;
    double vl = 0.0;
    qt_status st = val_loss(s, &vl);
    if (st != QT_OK) return st;
    s->res->val_loss = vl;
    s->res->val_ppl = exp(vl);
    if (!s->root) return QT_OK;
    emit(s, &(qt_train_event){.kind = QT_TRAIN_EV_EVAL, .step = step + 1, .val_loss = vl,
                              .val_ppl = exp(vl)});
    fprintf(s->metrics, "{\"step\": %ld, \"val_loss\": %.6f, \"val_ppl\": %.4f}\n", step + 1, vl,
            exp(vl));
    fflush(s->metrics);
    if (r->output.sample_tokens > 0) {
        char *text = NULL;
        if (qt_generate(s->ctx, &s->lm.m, s->lm.tok, r->output.sample_prompt,
                        r->output.sample_tokens, (int)r->data.seq_len, 0.8f,
                        (uint64_t)r->train.seed + (uint64_t)step, &text) == QT_OK)
            emit(s, &(qt_train_event){.kind = QT_TRAIN_EV_SAMPLE, .step = step + 1, .text = text});
        free(text);
    }
    return QT_OK;
}

/* The checkpoint after `step`: host copies current, the ranks' agreement checked, rank 0
 * writes (atomically: a kill mid-write leaves the previous one). */
static qt_status checkpoint(train_run *s, long step) {
    qt_ckpt_state cs = {.step = step + 1, .data_epoch = s->ds.epoch, .data_pos = s->ds.pos,
                        .seed = s->r->train.seed};
    qt_status st = qt_trainables_pull(&s->ts);
    if (st == QT_OK) st = qt_trainables_check_agree(&s->ts, s->d, step + 1);
    if (st == QT_OK) st = qt_trainables_save(&s->ts, s->d, s->ckpt, &cs, s->recipe_text);
    return st;
}

/* One optimizer step; *stop after the checkpoint --stop-at asked for. */
static qt_status train_step(train_run *s, long step, bool *stop) {
    const qt_recipe *r = s->r;
    float lr = qt_lr_at(step, r->train.steps, r->optimizer.lr, r->schedule.warmup,
                        r->schedule.decay, r->schedule.min_lr_ratio);
    if (s->ts.step_begin) s->ts.step_begin(&s->ts, step);
    double loss = 0.0, gnorm = 0.0;
    qt_status st = forward_backward(s, step, &loss);
    st = reduce(s, st, &loss);
    if (st == QT_OK) st = qt_trainables_grad_norm(&s->ts, s->d, &gnorm);
    if (st != QT_OK) return st;
    if (!isfinite(loss) || !isfinite(gnorm)) return skip_step(s, step, loss, gnorm);
    s->bad_run = 0;
    st = clip(s, gnorm);
    if (st == QT_OK) st = qt_trainables_update(&s->ts, s->d, step, lr);
    if (st != QT_OK) return st;
    log_step(s, step, loss, lr, gnorm);
    bool last = step == r->train.steps - 1;
    if ((last || (r->output.eval_every && (step + 1) % r->output.eval_every == 0)) &&
        s->ds.n_val > 0)
        st = eval(s, step);
    if (st == QT_OK && (last || step + 1 == s->stop_at ||
                        (r->output.checkpoint_every && (step + 1) % r->output.checkpoint_every == 0))) {
        st = checkpoint(s, step);
        *stop = step + 1 == s->stop_at; /* checkpointed, done */
    }
    return st;
}

/* ---- tear down ------------------------------------------------------------------ */

/* The adapters as PEFT writes them, in <output.dir>/adapter/ (after the final pull: the
 * paramset goes back to the CPU, whose copies the writer reads). */
static qt_status save_adapter(train_run *s) {
    qt_paramset *aps = qt_lora_params(s->lora);
    if (aps->device.kind != QT_DEV_CPU) {
        qt_status st = qt_paramset_to(aps, (qt_device){QT_DEV_CPU, 0});
        if (st != QT_OK) return st;
    }
    const qt_recipe *r = s->r;
    char dir[QT_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/adapter", r->output.dir);
    qt_status st = qt_lora_save_peft(s->lora, dir, r->model.from[0] ? r->model.from : r->name);
    if (st == QT_OK) say(s, "LoRA adapter (PEFT): %s/", dir);
    return st;
}

/* The final state out (the adapter; the weights for a test), then everything freed. */
static qt_status finish(train_run *s, qt_status st) {
    qt_train_result *res = s->res;
    if (s->t0 > 0) res->seconds = qt_now_s() - s->t0;
    if (st == QT_OK) st = qt_trainables_pull(&s->ts);
    if (st == QT_OK && s->lora && s->root) st = save_adapter(s);
    if (st == QT_OK && res->weights && s->ts.hold_frozen) st = s->ts.hold_frozen(&s->ts, true);
    if (st == QT_OK && res->weights) {
        const qt_paramset *ps = qt_model_params(&s->lm.m);
        size_t n = ps->n_total < res->max_weights ? ps->n_total : res->max_weights;
        memcpy(res->weights, ps->data, n * sizeof(float));
    }
    qt_dist_grads_free(s->grads);
    free(s->recipe_text);
    if (s->metrics) fclose(s->metrics);
    free(s->ids);
    free(s->tgt);
    qt_ctx_free(s->ctx);
    qt_trainables_free(&s->ts);
    qt_lora_free(s->lora); /* its hook off the model first */
    if (s->have_model) qt_model_close(&s->lm);
    qt_dataset_close(&s->ds);
    return st;
}

qt_status qt_train_run(const qt_recipe *r, const qt_train_opts *opts, qt_train_result *res) {
    train_run s;
    qt_status st = start(&s, r, opts, res);
    if (st != QT_OK) return st;
    st = open_model(&s);
    if (st == QT_OK) st = open_data(&s);
    if (st == QT_OK) st = build_trainables(&s);
    if (st == QT_OK) st = open_outputs(&s);
    if (st == QT_OK && opts && opts->resume) st = resume(&s);
    if (st == QT_OK) st = to_device(&s);
    if (st == QT_OK) st = start_averaging(&s);
    if (st != QT_OK) return finish(&s, st);
    s.t0 = qt_now_s();
    bool stop = false;
    for (long step = s.start; st == QT_OK && !stop && step < r->train.steps; step++)
        st = train_step(&s, step, &stop);
    return finish(&s, st);
}
