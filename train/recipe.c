/*
 * recipe.c - YAML recipes read with libyaml into qt_recipe.
 *
 * One table (keys[] below) names every key, its type, bounds and meaning; parsing,
 * --set overrides, `qtrain train --keys` and the resolved-recipe dump all walk it, so a
 * key cannot be documented in one place and parsed differently in another. Unknown
 * keys, wrong types, out-of-range values and duplicates are errors that name
 * file:line:col (libyaml's marks, made 1-based).
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "train_internal.h"

typedef enum { K_STR, K_INT, K_LONG, K_FLOAT, K_BOOL, K_FLOAT2, K_STRLIST } key_kind;

typedef struct {
    const char *key;
    key_kind kind;
    size_t off, size;
    double min, max;     /* numeric bounds, inclusive */
    const char *choices; /* K_STR: "a|b|c", or NULL for free text */
    const char *doc;
} keydef;

#define F(field) offsetof(qt_recipe, field), sizeof(((qt_recipe *)0)->field)
#define BIG 1e18

static const keydef keys[] = {
    {"name", K_STR, F(name), 0, 0, NULL, "run name, used in logs"},
    {"model.from", K_STR, F(model.from), 0, 0, NULL,
     "HF checkpoint directory or .gguf file to start from (its config wins over the sizes "
     "below); empty = a new model"},
    {"model.arch", K_STR, F(model.arch), 0, 0, "llama", "architecture of a new model"},
    {"model.vocab_size", K_INT, F(model.vocab_size), 1, 1 << 24, NULL,
     "vocabulary size (256 with the bytes tokenizer)"},
    {"model.dim", K_INT, F(model.dim), 1, 1 << 16, NULL, "hidden size"},
    {"model.n_layers", K_INT, F(model.n_layers), 1, 1024, NULL, "transformer blocks"},
    {"model.n_heads", K_INT, F(model.n_heads), 1, 1024, NULL, "attention heads"},
    {"model.n_kv_heads", K_INT, F(model.n_kv_heads), 1, 1024, NULL,
     "key/value heads (grouped-query attention); divides n_heads"},
    {"model.ffn_dim", K_INT, F(model.ffn_dim), 1, 1 << 20, NULL, "SwiGLU inner size"},
    {"model.max_seq_len", K_INT, F(model.max_seq_len), 1, 1 << 20, NULL,
     "longest sequence the model is meant for"},
    {"model.rope_theta", K_FLOAT, F(model.rope_theta), 1.0001, BIG, NULL, "RoPE base"},
    {"model.norm_eps", K_FLOAT, F(model.norm_eps), 1e-12, 1, NULL, "RMSNorm epsilon"},
    {"model.tied_embeddings", K_BOOL, F(model.tied_embeddings), 0, 0, NULL,
     "lm_head shares the embedding matrix"},
    {"data.train", K_STR, F(data.train), 0, 0, NULL,
     "training text: a UTF-8 file or a directory of them"},
    {"data.tokenizer", K_STR, F(data.tokenizer), 0, 0, NULL,
     "bytes (one token per byte), model (model.from's tokenizer.json or GGUF tokenizer), or "
     "a tokenizer.json path"},
    {"data.format", K_STR, F(data.format), 0, 0, "auto|text|jsonl",
     "text: the file is one document; jsonl: {\"text\"} or {\"prompt\", \"response\"} per "
     "line (loss on the response only); auto: by extension"},
    {"data.chat_template", K_STR, F(data.chat_template), 0, 0, "auto|none|chatml|llama3",
     "prompt/response records rendered as the chat template renders a user turn and an "
     "assistant turn: chatml or llama3; auto: the model's template (tokenizer_config.json "
     "chat_template, GGUF tokenizer.chat_template) when it is one of those; none: plain text"},
    {"data.val_fraction", K_FLOAT, F(data.val_fraction), 0, 0.5, NULL,
     "share of the text held out for validation (taken from the end)"},
    {"data.seq_len", K_INT, F(data.seq_len), 2, 1 << 20, NULL, "tokens per training sequence"},
    {"train.steps", K_LONG, F(train.steps), 1, BIG, NULL, "optimizer steps"},
    {"train.batch_size", K_INT, F(train.batch_size), 1, 1 << 20, NULL,
     "sequences per micro-batch"},
    {"train.grad_accum", K_INT, F(train.grad_accum), 1, 1 << 20, NULL,
     "micro-batches per optimizer step"},
    {"train.seed", K_LONG, F(train.seed), 0, BIG, NULL,
     "seed of initialisation, data order and dropout"},
    {"train.threads", K_INT, F(train.threads), 0, 4096, NULL, "CPU threads; 0 = all cores"},
    {"train.device", K_STR, F(train.device), 0, 0, "cpu|cuda",
     "where the step runs: cpu, or cuda (GPU 0; qtrain built with QT_CUDA)"},
    {"train.dtype", K_STR, F(train.dtype), 0, 0, "auto|f32|bf16",
     "activation dtype: bf16 (f32 master weights and optimizer state, bf16 compute; GPU "
     "only), f32, or auto (bf16 on cuda, f32 on cpu)"},
    {"train.grad_clip", K_FLOAT, F(train.grad_clip), 0, BIG, NULL,
     "clip the global grad norm to this; 0 = off"},
    {"train.max_bad_steps", K_INT, F(train.max_bad_steps), 1, 1 << 20, NULL,
     "stop after this many non-finite losses/grads in a row (each is skipped)"},
    {"optimizer.name", K_STR, F(optimizer.name), 0, 0, "adamw", "optimizer"},
    {"optimizer.lr", K_FLOAT, F(optimizer.lr), 0, 10, NULL, "peak learning rate"},
    {"optimizer.betas", K_FLOAT2, F(optimizer.betas), 0, 0.999999, NULL, "AdamW [beta1, beta2]"},
    {"optimizer.eps", K_FLOAT, F(optimizer.eps), 1e-30, 1, NULL, "AdamW epsilon"},
    {"optimizer.weight_decay", K_FLOAT, F(optimizer.weight_decay), 0, 10, NULL,
     "decoupled weight decay (never on norms and biases)"},
    {"schedule.warmup", K_LONG, F(schedule.warmup), 0, BIG, NULL,
     "linear warmup steps from 0 to lr"},
    {"schedule.decay", K_STR, F(schedule.decay), 0, 0, "cosine|linear|constant",
     "shape after warmup"},
    {"schedule.min_lr_ratio", K_FLOAT, F(schedule.min_lr_ratio), 0, 1, NULL,
     "final lr as a fraction of lr (cosine, linear)"},
    {"qat.weight.format", K_STR, F(qat.weight.format), 0, 0,
     "none|int2|int3|int4|int5|int6|int7|int8|nf4|fp4|fp8_e4m3|fp8_e5m2|q8_0|q4_0|q4_1|q5_0|"
     "q5_1|q2_k|q3_k|q4_k|q5_k|q6_k|iq4_nl|iq4_xs",
     "weight fake-quant format (the quantizer core's; what `convert` and export produce)"},
    {"qat.weight.granularity", K_STR, F(qat.weight.granularity), 0, 0, "group|channel|tensor",
     "int: one scale per group of inputs, per output row, or per matrix; fp8: channel|tensor"},
    {"qat.weight.group_size", K_INT, F(qat.weight.group_size), 0, 65536, NULL,
     "int: inputs per group (divides every selected layer's in_features); nf4/fp4: blocksize; "
     "0 = format default (int 32, nf4/fp4 64)"},
    {"qat.weight.symmetric", K_BOOL, F(qat.weight.symmetric), 0, 0, NULL,
     "int: symmetric (zero point 2^(b-1)) or asymmetric (a zero point per group)"},
    {"qat.weight.scale_dtype", K_STR, F(qat.weight.scale_dtype), 0, 0, "f32|f16|bf16",
     "int: dtype the scales are stored (and rounded) in"},
    {"qat.weight.double_quant", K_BOOL, F(qat.weight.double_quant), 0, 0, NULL,
     "nf4/fp4: 8-bit double quantization of the absmax (bitsandbytes' compress_statistics)"},
    {"qat.weight.learnable", K_BOOL, F(qat.weight.learnable), 0, 0, NULL,
     "int with scale_dtype f32: learn the scales (and asymmetric zero points) with LSQ, "
     "starting from the quantizer's; convert ships the learned ones"},
    {"qat.weight.lr_ratio", K_FLOAT, F(qat.weight.lr_ratio), 1e-6, 100, NULL,
     "learnable: their learning rate as a fraction of optimizer.lr (AdamW moves a value by "
     "about lr per step whatever its size, and scales are ~amax/7.5)"},
    {"qat.activation.format", K_STR, F(qat.activation.format), 0, 0,
     "none|int2|int3|int4|int5|int6|int7|int8", "activation fake-quant on the inputs of the "
     "selected Linear layers"},
    {"qat.activation.granularity", K_STR, F(qat.activation.granularity), 0, 0,
     "per_token|per_tensor", "per_token: a scale per token (dynamic); per_tensor: one scale "
     "(static, from an observer)"},
    {"qat.activation.dynamic", K_BOOL, F(qat.activation.dynamic), 0, 0, NULL,
     "scales from each batch (per_token) or from an observer (per_tensor: false)"},
    {"qat.activation.symmetric", K_BOOL, F(qat.activation.symmetric), 0, 0, NULL,
     "symmetric or asymmetric (torchao's 8da4w: asymmetric)"},
    {"qat.activation.observer", K_STR, F(qat.activation.observer), 0, 0, "minmax|moving_average",
     "static range: running min/max, or a moving average of each batch's"},
    {"qat.activation.averaging_constant", K_FLOAT, F(qat.activation.averaging_constant), 1e-6, 1,
     NULL, "moving_average: min += c (batch_min - min) (torch's default 0.01)"},
    {"qat.layers", K_STRLIST, F(qat.layers), 0, 0, NULL,
     "module-name globs of the Linear layers to fake-quant, e.g. [\"*.q_proj\", \"*.mlp.*\"]; "
     "[] = every Linear"},
    {"qat.embeddings", K_BOOL, F(qat.embeddings), 0, 0, NULL,
     "also fake-quant the token embedding (weights only)"},
    {"qat.lm_head", K_BOOL, F(qat.lm_head), 0, 0, NULL, "also fake-quant the output projection"},
    {"qat.start_step", K_LONG, F(qat.start_step), 0, BIG, NULL,
     "fake-quant turns on at this step (torchtune: about half-way works best)"},
    {"lora.rank", K_INT, F(lora.rank), 0, 65536, NULL,
     "LoRA rank r of the adapters (at most min(in, out) of every target layer); 0 = no "
     "LoRA"},
    {"lora.alpha", K_FLOAT, F(lora.alpha), 1e-6, 1e6, NULL,
     "adapter scaling alpha: the update is (alpha / r) B A"},
    {"lora.dropout", K_FLOAT, F(lora.dropout), 0, 0.999, NULL,
     "dropout on the adapters' input while training (PEFT's lora_dropout)"},
    {"lora.rslora", K_BOOL, F(lora.rslora), 0, 0, NULL,
     "rank-stabilized LoRA: scaling alpha / sqrt(r) instead of alpha / r"},
    {"lora.targets", K_STRLIST, F(lora.targets), 0, 0, NULL,
     "Linear layers that get adapters: short names (q_proj, ..., down_proj), module-name "
     "globs (\"model.layers.1*.mlp.*\"), or all-linear (every decoder Linear, not lm_head; "
     "[] is the same); each must match a layer"},
    {"lora.base", K_STR, F(lora.base), 0, 0, "float|nf4",
     "the frozen base of the target layers: float, or nf4 (QLoRA: NF4 blocks of 64 with "
     "double-quantized absmax; CPU only for now)"},
    {"lora.adapter", K_STR, F(lora.adapter), 0, 0, NULL,
     "PEFT adapter directory to start from (its r, alpha, dropout and targets win over the "
     "keys above); empty = new adapters"},
    {"quantize.method", K_STR, F(quantize.method), 0, 0, "none|rtn|gptq|awq",
     "qtrain quantize: post-training quantization algorithm"},
    {"quantize.format", K_STR, F(quantize.fmt.format), 0, 0,
     "int2|int3|int4|int5|int6|int7|int8|nf4|fp4|fp8_e4m3|fp8_e5m2|q8_0|q4_0|q4_1|q5_0|q5_1|"
     "q2_k|q3_k|q4_k|q5_k|q6_k|iq4_nl|iq4_xs",
     "weight format (the quantizer core's; gptq/awq: int)"},
    {"quantize.granularity", K_STR, F(quantize.fmt.granularity), 0, 0, "group|channel|tensor",
     "int: per group of inputs, per output row, per matrix; fp8: channel|tensor"},
    {"quantize.group_size", K_INT, F(quantize.fmt.group_size), 0, 65536, NULL,
     "int: inputs per scale (0 = 128); nf4/fp4: blocksize (0 = 64)"},
    {"quantize.symmetric", K_STR, F(quantize.symmetric), 0, 0, "auto|true|false",
     "int: symmetric scales (auto: true for rtn/gptq, false for awq, as they ship)"},
    {"quantize.scale_dtype", K_STR, F(quantize.fmt.scale_dtype), 0, 0, "f32|f16|bf16",
     "int: dtype of the stored scales (GPTQ/AWQ files hold f16)"},
    {"quantize.double_quant", K_BOOL, F(quantize.fmt.double_quant), 0, 0, NULL,
     "nf4/fp4: double-quantize the block absmax (QLoRA)"},
    {"quantize.layers", K_STRLIST, F(quantize.layers), 0, 0, NULL,
     "module-name globs to quantize (\"*.mlp.*\"); empty = every Linear of the blocks"},
    {"quantize.damp", K_FLOAT, F(quantize.damp), 0, 10, NULL,
     "gptq: damping, a fraction of mean(diag(H)) added to the diagonal"},
    {"quantize.block_size", K_INT, F(quantize.block_size), 1, 65536, NULL,
     "gptq: columns per lazy batch update"},
    {"quantize.act_order", K_BOOL, F(quantize.act_order), 0, 0, NULL,
     "gptq: quantize columns in decreasing Hessian diagonal (desc_act)"},
    {"quantize.static_groups", K_BOOL, F(quantize.static_groups), 0, 0, NULL,
     "gptq with act_order: group scales fixed before the reordering"},
    {"quantize.awq_grid", K_INT, F(quantize.awq_grid), 1, 1000, NULL,
     "awq: points of the scale exponent grid"},
    {"quantize.clip", K_BOOL, F(quantize.clip), 0, 0, NULL, "awq: search weight clipping"},
    {"quantize.awq_duo", K_BOOL, F(quantize.awq_duo), 0, 0, NULL,
     "awq: AutoAWQ's duo_scaling, scales from activations and weights (false: llm-awq's, "
     "activations only)"},
    {"quantize.batch", K_INT, F(quantize.batch), 1, 1 << 20, NULL,
     "calibration sequences per forward pass"},
    {"quantize.calibration.data", K_STR, F(quantize.calibration.data), 0, 0, NULL,
     "calibration text; empty = the training part of data.train"},
    {"quantize.calibration.samples", K_INT, F(quantize.calibration.samples), 1, 1 << 20, NULL,
     "calibration sequences"},
    {"quantize.calibration.seq_len", K_INT, F(quantize.calibration.seq_len), 1, 1 << 20, NULL,
     "tokens per calibration sequence"},
    {"quantize.calibration.seed", K_LONG, F(quantize.calibration.seed), 0, BIG, NULL,
     "which sequences are drawn"},
    {"quantize.compare", K_BOOL, F(quantize.compare), 0, 0, NULL,
     "after export, compare each file with the float model (perplexity, KL, top-1)"},
    {"quantize.compare_data", K_STR, F(quantize.compare_data), 0, 0, NULL,
     "text to compare on; empty = the validation part of data.train"},
    {"quantize.compare_context", K_INT, F(quantize.compare_context), 0, 1 << 20, NULL,
     "window of the comparison (stride half of it); 0 = data.seq_len"},
    {"export.gguf", K_STR, F(export.gguf), 0, 0, NULL, "GGUF file to write (llama.cpp)"},
    {"export.gptq", K_STR, F(export.gptq), 0, 0, NULL,
     "directory to write as a GPTQ checkpoint (vLLM, transformers)"},
    {"export.awq", K_STR, F(export.awq), 0, 0, NULL, "directory to write as an AWQ GEMM checkpoint"},
    {"export.bnb_nf4", K_STR, F(export.bnb_nf4), 0, 0, NULL,
     "directory to write as a bitsandbytes NF4 checkpoint (transformers)"},
    {"export.fp8", K_STR, F(export.fp8), 0, 0, NULL,
     "directory to write as FP8 E4M3 compressed-tensors (vLLM)"},
    {"export.write", K_BOOL, F(export.write), 0, 0, NULL,
     "false: write nothing, compare the quantized model in memory (formats no exporter "
     "writes, experiments)"},
    {"export.gguf_float", K_STR, F(export.gguf_float), 0, 0, "f32|f16",
     "GGUF type of the weights left unquantized (embedding, lm_head)"},
    {"export.st_float", K_STR, F(export.st_float), 0, 0, "f32|f16|bf16",
     "safetensors dtype of the tensors left unquantized"},
    {"distributed.backend", K_STR, F(distributed.backend), 0, 0, "auto|mpi|nccl",
     "under mpirun: how gradients move between ranks; auto = nccl with train.device cuda in "
     "a build with NCCL, else mpi (MPI_Allreduce; GPU grads staged through the host)"},
    {"distributed.bucket_mb", K_FLOAT, F(distributed.bucket_mb), 0.01, 4096, NULL,
     "gradient all-reduce bucket size in MiB (PyTorch DDP's bucket_cap_mb)"},
    {"distributed.zero", K_INT, F(distributed.zero), 0, 1, NULL,
     "1 = ZeRO-1: each rank keeps the AdamW moments of its slice of the parameters "
     "(gradients reduce-scattered, parameters all-gathered; CPU only for now)"},
    {"distributed.overlap", K_BOOL, F(distributed.overlap), 0, 0, NULL,
     "start each bucket's all-reduce as soon as backward has finished its gradients"},
    {"output.dir", K_STR, F(output.dir), 0, 0, NULL, "run directory (metrics, checkpoints)"},
    {"output.log_every", K_INT, F(output.log_every), 1, 1 << 30, NULL,
     "print and record metrics every N steps"},
    {"output.eval_every", K_INT, F(output.eval_every), 0, 1 << 30, NULL,
     "validation loss every N steps; 0 = only at the end"},
    {"output.eval_batches", K_INT, F(output.eval_batches), 1, 1 << 20, NULL,
     "validation micro-batches per evaluation"},
    {"output.checkpoint_every", K_INT, F(output.checkpoint_every), 0, 1 << 30, NULL,
     "checkpoint every N steps; 0 = only at the end"},
    {"output.sample_tokens", K_INT, F(output.sample_tokens), 0, 1 << 20, NULL,
     "tokens of text sampled at each evaluation; 0 = none"},
    {"output.sample_prompt", K_STR, F(output.sample_prompt), 0, 0, NULL, "prompt of the sample"},
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))

void qt_recipe_defaults(qt_recipe *r) {
    memset(r, 0, sizeof *r);
    strcpy(r->name, "run");
    strcpy(r->model.arch, "llama");
    r->model.vocab_size = 256;
    r->model.dim = 128;
    r->model.n_layers = 4;
    r->model.n_heads = 4;
    r->model.n_kv_heads = 4;
    r->model.ffn_dim = 384;
    r->model.max_seq_len = 256;
    r->model.rope_theta = 10000.0f;
    r->model.norm_eps = 1e-5f;
    strcpy(r->data.tokenizer, "bytes");
    strcpy(r->data.format, "auto");
    strcpy(r->data.chat_template, "auto");
    r->data.val_fraction = 0.05f;
    r->data.seq_len = 128;
    r->train.steps = 1000;
    r->train.batch_size = 8;
    r->train.grad_accum = 1;
    r->train.seed = 1337;
    r->train.grad_clip = 1.0f;
    r->train.max_bad_steps = 5;
    strcpy(r->train.device, "cpu");
    strcpy(r->train.dtype, "auto");
    strcpy(r->optimizer.name, "adamw");
    r->optimizer.lr = 1e-3f;
    r->optimizer.betas[0] = 0.9f;
    r->optimizer.betas[1] = 0.95f;
    r->optimizer.eps = 1e-8f;
    r->optimizer.weight_decay = 0.1f;
    r->schedule.warmup = 100;
    strcpy(r->schedule.decay, "cosine");
    r->schedule.min_lr_ratio = 0.1f;
    strcpy(r->distributed.backend, "auto");
    r->distributed.bucket_mb = 25.0f;
    r->distributed.overlap = true;
    strcpy(r->output.dir, "runs/run");
    r->output.log_every = 10;
    r->output.eval_every = 0;
    r->output.eval_batches = 8;
    r->output.sample_tokens = 200;
    r->lora.alpha = 16.0f;
    r->lora.dropout = 0.05f;
    strcpy(r->lora.targets, "all-linear");
    strcpy(r->lora.base, "float");
    strcpy(r->qat.weight.format, "none");
    strcpy(r->qat.weight.granularity, "group");
    r->qat.weight.symmetric = true;
    strcpy(r->qat.weight.scale_dtype, "f16");
    r->qat.weight.double_quant = true;
    r->qat.weight.lr_ratio = 0.1f;
    strcpy(r->qat.activation.format, "none");
    strcpy(r->qat.activation.granularity, "per_token");
    r->qat.activation.dynamic = true;
    strcpy(r->qat.activation.observer, "moving_average");
    r->qat.activation.averaging_constant = 0.01f;
    strcpy(r->quantize.method, "none");
    strcpy(r->quantize.fmt.format, "int4");
    strcpy(r->quantize.fmt.granularity, "group");
    strcpy(r->quantize.fmt.scale_dtype, "f16");
    r->quantize.fmt.double_quant = true;
    strcpy(r->quantize.symmetric, "auto");
    r->quantize.damp = 0.01f;
    r->quantize.block_size = 128;
    r->quantize.awq_grid = 20;
    r->quantize.clip = true;
    r->quantize.batch = 8;
    r->quantize.calibration.samples = 128;
    r->quantize.calibration.seq_len = 512;
    r->quantize.calibration.seed = 1234;
    r->quantize.compare = true;
    r->export.write = true;
    strcpy(r->export.gguf_float, "f32");
    strcpy(r->export.st_float, "f16");
}

bool qt_recipe_has_qat(const qt_recipe *r) {
    return strcmp(r->qat.weight.format, "none") || strcmp(r->qat.activation.format, "none");
}

bool qt_recipe_has_lora(const qt_recipe *r) { return r->lora.rank > 0 || r->lora.adapter[0]; }

static const keydef *find_key(const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].key, key)) return &keys[i];
    return NULL;
}

/* true if `prefix` names a section: some key starts with "prefix." */
static bool is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (int i = 0; i < N_KEYS; i++)
        if (!strncmp(keys[i].key, prefix, n) && keys[i].key[n] == '.') return true;
    return false;
}

static const char *kind_name(key_kind k) {
    switch (k) {
    case K_STR: return "a string";
    case K_INT:
    case K_LONG: return "an integer";
    case K_FLOAT: return "a number";
    case K_BOOL: return "true or false";
    case K_STRLIST: return "a list of strings";
    default: return "a list of two numbers";
    }
}

/* Parses one scalar into the field; on error writes the reason into why. */
static bool parse_scalar(const keydef *k, const char *s, int slot, qt_recipe *r, char *why,
                         size_t whyn) {
    char *dst = (char *)r + k->off;
    char *end;
    errno = 0;
    switch (k->kind) {
    case K_STR: {
        if (strlen(s) >= k->size) {
            snprintf(why, whyn, "%s is longer than %zu bytes", k->key, k->size - 1);
            return false;
        }
        if (k->choices) {
            bool ok = false;
            const char *c = k->choices;
            size_t n = strlen(s);
            while (*c) {
                const char *bar = strchr(c, '|');
                size_t len = bar ? (size_t)(bar - c) : strlen(c);
                if (len == n && !strncmp(c, s, n)) ok = true;
                c += len + (bar ? 1 : 0);
            }
            if (!ok) {
                snprintf(why, whyn, "%s must be one of %s, got \"%s\"", k->key, k->choices, s);
                return false;
            }
        }
        strcpy(dst, s);
        return true;
    }
    case K_INT:
    case K_LONG: {
        long long v = strtoll(s, &end, 10);
        if (!*s || *end || errno || v < k->min || v > k->max) {
            snprintf(why, whyn, "%s must be an integer in [%.0f, %.0f], got \"%s\"", k->key,
                     k->min, k->max, s);
            return false;
        }
        if (k->kind == K_INT) *(int *)dst = (int)v;
        else *(long *)dst = (long)v;
        return true;
    }
    case K_FLOAT:
    case K_FLOAT2: {
        double v = strtod(s, &end);
        if (!*s || *end || errno || !isfinite(v) || v < k->min || v > k->max) {
            snprintf(why, whyn, "%s must be a number in [%g, %g], got \"%s\"", k->key, k->min,
                     k->max, s);
            return false;
        }
        ((float *)dst)[slot] = (float)v;
        return true;
    }
    case K_STRLIST: { /* appends one entry; entries are '\n'-separated */
        size_t have = strlen(dst), add = strlen(s);
        if (!add || strchr(s, '\n')) {
            snprintf(why, whyn, "%s entries must be non-empty single-line strings", k->key);
            return false;
        }
        if (have + add + 2 > k->size) {
            snprintf(why, whyn, "%s is longer than %zu bytes in all", k->key, k->size - 1);
            return false;
        }
        if (have) dst[have++] = '\n';
        memcpy(dst + have, s, add + 1);
        return true;
    }
    case K_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) *(bool *)dst = true;
        else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
            *(bool *)dst = false;
        else {
            snprintf(why, whyn, "%s must be true or false, got \"%s\"", k->key, s);
            return false;
        }
        return true;
    }
    return false;
}

typedef struct {
    const char *path;
    yaml_document_t *doc;
    qt_recipe *r;
    char seen[N_KEYS];
} walk_ctx;

static qt_status fail_at(const walk_ctx *w, const yaml_node_t *n, qt_status st, const char *msg) {
    return QT_ERROR(st, "%s:%zu:%zu: %s", w->path, n->start_mark.line + 1,
                    n->start_mark.column + 1, msg);
}

static qt_status walk(walk_ctx *w, yaml_node_t *map, const char *prefix) {
    char why[700];
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(w->doc, p->value);
        if (!kn || !vn) return QT_ERROR(QT_EFORMAT, "%s: malformed YAML document", w->path);
        if (kn->type != YAML_SCALAR_NODE) return fail_at(w, kn, QT_EFORMAT, "keys must be plain names");
        char path[256];
        int len = snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "",
                           (const char *)kn->data.scalar.value);
        if (len < 0 || (size_t)len >= sizeof path) return fail_at(w, kn, QT_EINVAL, "key too long");
        if (is_section(path)) {
            if (vn->type != YAML_MAPPING_NODE) {
                snprintf(why, sizeof why, "%s must be a mapping of keys (e.g. %s: {key: value})",
                         path, path);
                return fail_at(w, vn, QT_EINVAL, why);
            }
            qt_status st = walk(w, vn, path);
            if (st != QT_OK) return st;
            continue;
        }
        const keydef *k = find_key(path);
        if (!k) {
            snprintf(why, sizeof why, "unknown key '%s' (see `qtrain train --keys`)", path);
            return fail_at(w, kn, QT_EINVAL, why);
        }
        if (w->seen[k - keys]++) {
            snprintf(why, sizeof why, "key '%s' is given twice", path);
            return fail_at(w, kn, QT_EINVAL, why);
        }
        if (k->kind == K_FLOAT2) {
            if (vn->type != YAML_SEQUENCE_NODE ||
                vn->data.sequence.items.top - vn->data.sequence.items.start != 2) {
                snprintf(why, sizeof why, "%s must be a list of two numbers, like [0.9, 0.95]", path);
                return fail_at(w, vn, QT_EINVAL, why);
            }
            for (int i = 0; i < 2; i++) {
                yaml_node_t *e = yaml_document_get_node(w->doc, vn->data.sequence.items.start[i]);
                if (!e || e->type != YAML_SCALAR_NODE) {
                    snprintf(why, sizeof why, "%s must be a list of two numbers", path);
                    return fail_at(w, vn, QT_EINVAL, why);
                }
                if (!parse_scalar(k, (const char *)e->data.scalar.value, i, w->r, why, sizeof why))
                    return fail_at(w, e, QT_EINVAL, why);
            }
            continue;
        }
        if (k->kind == K_STRLIST) {
            if (vn->type != YAML_SEQUENCE_NODE) {
                snprintf(why, sizeof why, "%s must be a list of strings, like [\"*.q_proj\"]", path);
                return fail_at(w, vn, QT_EINVAL, why);
            }
            ((char *)w->r + k->off)[0] = 0;
            for (yaml_node_item_t *it = vn->data.sequence.items.start;
                 it < vn->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(w->doc, *it);
                if (!e || e->type != YAML_SCALAR_NODE) {
                    snprintf(why, sizeof why, "%s must be a list of strings", path);
                    return fail_at(w, e ? e : vn, QT_EINVAL, why);
                }
                if (!parse_scalar(k, (const char *)e->data.scalar.value, 0, w->r, why, sizeof why))
                    return fail_at(w, e, QT_EINVAL, why);
            }
            continue;
        }
        if (vn->type != YAML_SCALAR_NODE) {
            snprintf(why, sizeof why, "%s must be %s", path, kind_name(k->kind));
            return fail_at(w, vn, QT_EINVAL, why);
        }
        if (!parse_scalar(k, (const char *)vn->data.scalar.value, 0, w->r, why, sizeof why))
            return fail_at(w, vn, QT_EINVAL, why);
    }
    return QT_OK;
}

/* Parses from a file or, when f is NULL, from `text`; `path` names the source. */
static qt_status load_from(const char *path, FILE *f, const char *text, qt_recipe *r) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return QT_ERROR(QT_ENOMEM, "%s: cannot initialise the YAML parser", path);
    if (f) yaml_parser_set_input_file(&parser, f);
    else yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    qt_status st = QT_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        st = QT_ERROR(QT_EFORMAT, "%s:%zu:%zu: YAML syntax error: %s", path,
                      parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                      parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        return st;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    walk_ctx w = {.path = path, .doc = &doc, .r = r};
    if (!root) st = QT_ERROR(QT_EFORMAT, "%s: the recipe is empty", path);
    else if (root->type != YAML_MAPPING_NODE)
        st = fail_at(&w, root, QT_EFORMAT, "a recipe is a mapping of sections (model:, data:, ...)");
    else st = walk(&w, root, "");
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return st;
}

qt_status qt_recipe_load(const char *path, qt_recipe *r) {
    FILE *f = fopen(path, "rb");
    if (!f) return QT_ERROR(QT_EIO, "%s: cannot open recipe: %s", path, strerror(errno));
    qt_status st = load_from(path, f, NULL, r);
    fclose(f);
    return st;
}

qt_status qt_recipe_load_string(const char *name, const char *text, qt_recipe *r) {
    return load_from(name, NULL, text, r);
}

qt_status qt_recipe_set(qt_recipe *r, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return QT_ERROR(QT_EINVAL, "--set %s: expected key=value", assignment);
    char key[256], why[700];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof key) return QT_ERROR(QT_EINVAL, "--set: key too long");
    memcpy(key, assignment, n);
    key[n] = 0;
    const keydef *k = find_key(key);
    if (!k) return QT_ERROR(QT_EINVAL, "--set %s: unknown key '%s' (see `qtrain train --keys`)",
                            assignment, key);
    const char *v = eq + 1;
    if (k->kind == K_FLOAT2) { /* "[a, b]" or "a,b" */
        char buf[128];
        snprintf(buf, sizeof buf, "%s", v);
        char *s = buf;
        if (*s == '[') s++;
        char *close = strchr(s, ']');
        if (close) *close = 0;
        char *comma = strchr(s, ',');
        if (!comma) return QT_ERROR(QT_EINVAL, "--set %s: %s needs two numbers, like [0.9,0.95]",
                                    assignment, key);
        *comma = 0;
        char *b = comma + 1;
        while (*b == ' ') b++;
        if (!parse_scalar(k, s, 0, r, why, sizeof why) || !parse_scalar(k, b, 1, r, why, sizeof why))
            return QT_ERROR(QT_EINVAL, "--set: %s", why);
        return QT_OK;
    }
    if (k->kind == K_STRLIST) { /* "a,b,c" or "[a, b]"; empty = [] */
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", v);
        char *s = buf;
        if (*s == '[') s++;
        char *close = strchr(s, ']');
        if (close) *close = 0;
        ((char *)r + k->off)[0] = 0;
        for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
            while (*tok == ' ' || *tok == '"') tok++;
            size_t n2 = strlen(tok);
            while (n2 && (tok[n2 - 1] == ' ' || tok[n2 - 1] == '"')) tok[--n2] = 0;
            if (n2 && !parse_scalar(k, tok, 0, r, why, sizeof why))
                return QT_ERROR(QT_EINVAL, "--set: %s", why);
        }
        return QT_OK;
    }
    if (!parse_scalar(k, v, 0, r, why, sizeof why)) return QT_ERROR(QT_EINVAL, "--set: %s", why);
    return QT_OK;
}

qt_status qt_recipe_validate(const qt_recipe *r, const char *path) {
    const char *p = path ? path : "recipe";
    if (!r->data.train[0]) return QT_ERROR(QT_EINVAL, "%s: data.train is required", p);
    if (r->schedule.warmup > r->train.steps)
        return QT_ERROR(QT_EINVAL, "%s: schedule.warmup (%ld) exceeds train.steps (%ld)", p,
                        r->schedule.warmup, r->train.steps);
    if (!r->output.dir[0]) return QT_ERROR(QT_EINVAL, "%s: output.dir is required", p);
    if (!r->data.tokenizer[0]) return QT_ERROR(QT_EINVAL, "%s: data.tokenizer is empty", p);
    if (!strcmp(r->data.tokenizer, "model") && !r->model.from[0])
        return QT_ERROR(QT_EINVAL, "%s: data.tokenizer \"model\" needs model.from", p);
    if (r->qat.weight.learnable && !strcmp(r->qat.weight.format, "none"))
        return QT_ERROR(QT_EINVAL, "%s: qat.weight.learnable needs qat.weight.format (an int "
                                   "format with scale_dtype f32)", p);
    if (qt_recipe_has_qat(r)) {
        qt_recipe_qat q;
        qt_status st = qt_recipe_qat_config(r, p, &q);
        if (st != QT_OK) return st;
    }
    if (qt_recipe_has_lora(r)) {
        if (qt_recipe_has_qat(r)) { /* QAT + LoRA: the frozen base through qat.weight */
            qt_recipe_qat q;
            qt_status st = qt_recipe_qat_config(r, p, &q);
            if (st != QT_OK) return st;
            if (!q.cfg.weight_on || q.cfg.act.mode != QT_ACT_NONE || q.cfg.learnable ||
                r->qat.start_step > 0)
                return QT_ERROR(QT_ENOTSUP, "%s: with lora, qat: may only set qat.weight.format "
                                            "(the frozen base passes through it, as torchao's "
                                            "QAT-LoRA); activations, learnable scales and "
                                            "qat.start_step are not supported with adapters", p);
            if (!strcmp(r->lora.base, "nf4"))
                return QT_ERROR(QT_EINVAL, "%s: lora.base nf4 and qat.weight are two ways to "
                                           "quantize the base: choose one", p);
            if (r->lora.adapter[0])
                return QT_ERROR(QT_ENOTSUP, "%s: lora.adapter with a qat: section is not "
                                            "supported yet (start new adapters)", p);
        }
        if (!strcmp(r->lora.base, "nf4") && !strcmp(r->train.device, "cuda"))
            return QT_ERROR(QT_ENOTSUP, "%s: lora.base nf4 runs on the CPU only for now (QLoRA's "
                                        "NF4 base has no CUDA kernels): use train.device cpu or "
                                        "lora.base float", p);
        int n = 0;
        for (const char *t = r->lora.targets; *t; n++) {
            const char *nl = strchr(t, '\n');
            size_t len = nl ? (size_t)(nl - t) : strlen(t);
            if (len >= 96) /* qt_lora keeps each target in 96 bytes */
                return QT_ERROR(QT_EINVAL, "%s: lora.targets entry \"%.*s\" is longer than 95 "
                                           "bytes", p, (int)len, t);
            t += len + (nl ? 1 : 0);
        }
        if (n > QT_RECIPE_LORA_MAX_TARGETS)
            return QT_ERROR(QT_EINVAL, "%s: lora.targets has %d entries, at most %d are taken "
                                       "(use a glob)", p, n, QT_RECIPE_LORA_MAX_TARGETS);
    }
    if (r->model.from[0]) return QT_OK; /* sizes come from the checkpoint */
    if (!strcmp(r->data.tokenizer, "bytes") && r->model.vocab_size < 256)
        return QT_ERROR(QT_EINVAL, "%s: model.vocab_size must be >= 256 with the bytes tokenizer, "
                                   "got %d", p, r->model.vocab_size);
    if (r->model.dim % r->model.n_heads || r->model.n_heads % r->model.n_kv_heads ||
        (r->model.dim / r->model.n_heads) % 2)
        return QT_ERROR(QT_EINVAL,
                        "%s: model.dim (%d) must split into n_heads (%d) heads of even size, and "
                        "n_heads into n_kv_heads (%d) groups", p, r->model.dim, r->model.n_heads,
                        r->model.n_kv_heads);
    if (r->data.seq_len > r->model.max_seq_len)
        return QT_ERROR(QT_EINVAL, "%s: data.seq_len (%d) exceeds model.max_seq_len (%d)", p,
                        r->data.seq_len, r->model.max_seq_len);
#ifndef QT_HAVE_CUDA
    if (!strcmp(r->train.device, "cuda"))
        return QT_ERROR(QT_ENOTSUP, "%s: train.device cuda: this qtrain was built without CUDA "
                                    "(configure with -DQT_CUDA=ON on a machine with nvcc)", p);
#endif
    if (!strcmp(r->train.dtype, "bf16") && strcmp(r->train.device, "cuda"))
        return QT_ERROR(QT_EINVAL, "%s: train.dtype bf16 needs train.device cuda (the CPU "
                                   "kernels are the f32 reference)", p);
    if (!strcmp(r->distributed.backend, "nccl") && strcmp(r->train.device, "cuda"))
        return QT_ERROR(QT_EINVAL, "%s: distributed.backend nccl needs train.device cuda (NCCL "
                                   "moves GPU memory); use mpi or auto on the CPU", p);
#ifndef QT_HAVE_NCCL
    if (!strcmp(r->distributed.backend, "nccl"))
        return QT_ERROR(QT_ENOTSUP, "%s: distributed.backend nccl: this qtrain was built without "
                                    "NCCL (it needs CUDA, MPI and libnccl); use auto or mpi", p);
#endif
    return QT_OK;
}

/* A YAML double-quoted scalar of the n bytes at s (\" and \\ escaped), so a path or
 * glob holding either reads back as it was. */
static void print_quoted(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') fputc('\\', f);
        fputc(s[i], f);
    }
    fputc('"', f);
}

static void print_value(FILE *f, const keydef *k, const qt_recipe *r) {
    const char *src = (const char *)r + k->off;
    switch (k->kind) {
    case K_STR: print_quoted(f, src, strlen(src)); break;
    case K_INT: fprintf(f, "%d", *(const int *)src); break;
    case K_LONG: fprintf(f, "%ld", *(const long *)src); break;
    case K_FLOAT: fprintf(f, "%g", (double)*(const float *)src); break;
    case K_BOOL: fprintf(f, "%s", *(const bool *)src ? "true" : "false"); break;
    case K_FLOAT2:
        fprintf(f, "[%g, %g]", (double)((const float *)src)[0], (double)((const float *)src)[1]);
        break;
    case K_STRLIST:
        fputc('[', f);
        for (const char *p = src; *p;) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            if (p != src) fputs(", ", f);
            print_quoted(f, p, n);
            p += n + (nl ? 1 : 0);
        }
        fputc(']', f);
        break;
    }
}

void qt_recipe_print_keys(FILE *f) {
    qt_recipe d;
    qt_recipe_defaults(&d);
    fprintf(f, "%-26s %-22s %-14s %s\n", "key", "type", "default", "meaning");
    for (int i = 0; i < N_KEYS; i++) {
        const keydef *k = &keys[i];
        char type[64];
        if (k->choices) snprintf(type, sizeof type, "%s", k->choices);
        else snprintf(type, sizeof type, "%s", kind_name(k->kind));
        fprintf(f, "%-26s %-22s ", k->key, type);
        char val[64];
        FILE *m = fmemopen(val, sizeof val, "w");
        if (m) {
            print_value(m, k, &d);
            fclose(m);
        } else {
            val[0] = 0;
        }
        fprintf(f, "%-14s %s\n", val, k->doc);
    }
}

void qt_recipe_write(FILE *f, const qt_recipe *r) {
    const char *prev = ""; /* previous key: the sections it shares with this one stay open */
    for (int i = 0; i < N_KEYS; i++) {
        const char *key = keys[i].key;
        /* length of the common section prefix (whole components ending in '.') */
        size_t common = 0;
        for (size_t j = 0; key[j] && key[j] == prev[j]; j++)
            if (key[j] == '.') common = j + 1;
        int depth = 0;
        for (size_t j = 0; j < common; j++) depth += key[j] == '.';
        /* open the sections after the common prefix */
        const char *p = key + common;
        for (const char *dot; (dot = strchr(p, '.')); p = dot + 1) {
            fprintf(f, "%*s%.*s:\n", 2 * depth, "", (int)(dot - p), p);
            depth++;
        }
        fprintf(f, "%*s%s: ", 2 * depth, "", p);
        print_value(f, &keys[i], r);
        fputc('\n', f);
        prev = key;
    }
}

char *qt_recipe_text(const qt_recipe *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    qt_recipe_write(f, r);
    fclose(f);
    return buf;
}
