/*
 * test_gguf_model.c - qt_model_load_gguf (layers/gguf_load.c) against the HF loader and
 * transformers (fixtures from tests/fixtures/gen_gguf_model_fixture.py, which converts the
 * tiny HF checkpoints the way llama.cpp's convert_hf_to_gguf.py does):
 *   - tiny_llama_f32.gguf (q/k rows permuted, GQA 4/2 heads) loads to the same config and
 *     bit-identical weights as tiny_llama/ loaded by qt_model_load_hf, so its logits equal
 *     the HF load's (checked at 1e-5 relative) and transformers' (1e-4, as test_model);
 *   - tiny_llama_q8.gguf (2-D weights Q8_0) gives transformers' logits for the HF model
 *     whose weights went through gguf-py's Q8_0 quantize + dequantize (1e-4 relative);
 *   - tiny_qwen2_f16.gguf (qwen2 keys, q/k/v bias, F16 weights, tied, no vocab_size key)
 *     likewise against the F16-rounded model;
 *   - a model 256 wide whose tensors are Q6_K, Q4_K (attn_q), Q4_0 (attn_k), BF16, Q4_1,
 *     Q5_1, F16, Q8_0 and F32: each parameter equals qt_ggml_dequantize of its bytes,
 *     q/k rows un-permuted after dequantization;
 *   - a mini model written here with qt_gguf_writer: the q/k un-permutation checked row
 *     by row, tied output, vocabulary from tokenizer.ggml.tokens or token_embd; and every
 *     bad input a clean status whose message names the file and the key or tensor:
 *     truncated files, missing file, missing / extra / wrongly shaped / integer tensors,
 *     rope_freqs, wrong or missing architecture, missing key, key of the wrong type,
 *     inconsistent heads, head size, rope scaling, experts.
 * Tolerance rule: max|ours - ref| <= tol * max|ref| over the whole (B, T, vocab) tensor.
 * QT_TEST_VERBOSE=1 prints the message of each bad input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qt_formats.h"
#include "qt_layers.h"
#include "model_util.h"
#include "testutil.h"

static char *fx(const char *rel) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 1024, "%s/%s", QT_FIXTURES, rel);
    return b;
}

static char tmpdir[64];

static char *tmp(const char *name) {
    static char buf[8][256];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 256, "%s/%s", tmpdir, name);
    return b;
}

/* max|got - want| <= tol * max|want|, printed. */
static void compare(const char *what, const float *got, const float *want, int64_t n, double tol) {
    double maxerr = 0, maxref = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= maxerr)) maxerr = e; /* NaN sticks */
        if (fabs(want[i]) > maxref) maxref = fabs(want[i]);
    }
    printf("%-34s max|diff| = %.3g, max|ref| = %.3g\n", what, maxerr, maxref);
    CHECK(maxref > 0.5 && maxerr <= tol * maxref, "%s: max err %.3g over tolerance %.3g", what,
          maxerr, tol * maxref);
}

static void compare_ref(const char *what, qt_model *m, const qt_st_tensor *ids,
                        const qt_st_tensor *want, double tol) {
    int64_t n = 0;
    float *got = qt_test_run_logits(m, ids, &n);
    CHECK(got && want && (int64_t)(want->nbytes / 4) == n, "%s: logits shape", what);
    if (got && want && (int64_t)(want->nbytes / 4) == n) compare(what, got, want->data, n, tol);
    free(got);
}

static bool same_params(qt_model *a, qt_model *b) {
    qt_paramset *pa = qt_model_params(a), *pb = qt_model_params(b);
    if (pa->n != pb->n || pa->n_total != pb->n_total) return false;
    for (int i = 0; i < pa->n; i++)
        if (strcmp(pa->params[i]->name, pb->params[i]->name) ||
            !qt_same_shape(pa->params[i], pb->params[i]))
            return false;
    return memcmp(pa->data, pb->data, pa->n_total * sizeof(float)) == 0;
}

static bool zeroed(const qt_model *m) {
    static const qt_model z;
    return memcmp(m, &z, sizeof z) == 0;
}

/* ----------------------------------------------------------------- parity ---- */

static void test_parity(const qt_safetensors *ref, const qt_safetensors *gref) {
    const qt_st_tensor *ids = qt_safetensors_get(ref, "ids");
    const qt_st_tensor *gids = qt_safetensors_get(gref, "ids");
    CHECK(ids && gids && ids->nbytes == gids->nbytes &&
              !memcmp(ids->data, gids->data, ids->nbytes),
          "both fixtures use the same ids");
    if (!ids) return;

    qt_model hf, gg;
    qt_status s = qt_model_load_hf(&hf, fx("tiny_llama"));
    CHECK(s == QT_OK, "load tiny_llama: %s", qt_error_message());
    qt_status s2 = qt_model_load_gguf(&gg, fx("tiny_llama_f32.gguf"));
    CHECK(s2 == QT_OK, "load tiny_llama_f32.gguf: %s: %s", qt_status_str(s2), qt_error_message());
    if (s == QT_OK && s2 == QT_OK) {
        const qt_llama_config *a = &hf.llama.cfg, *b = &gg.llama.cfg;
        CHECK(gg.arch == QT_ARCH_LLAMA && a->vocab_size == b->vocab_size && a->dim == b->dim &&
                  a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
                  a->n_kv_heads == b->n_kv_heads && a->ffn_dim == b->ffn_dim &&
                  a->rope_theta == b->rope_theta && a->norm_eps == b->norm_eps &&
                  a->max_seq_len == b->max_seq_len && !b->tied_embeddings && !b->qkv_bias,
              "f32 gguf: config equals the HF one");
        CHECK(same_params(&hf, &gg), "f32 gguf: weights bit-identical to the HF load "
                                     "(q/k permutation undone)");
        int64_t n1 = 0, n2 = 0;
        float *l1 = qt_test_run_logits(&hf, ids, &n1), *l2 = qt_test_run_logits(&gg, ids, &n2);
        CHECK(l1 && l2 && n1 == n2, "logits");
        if (l1 && l2 && n1 == n2) compare("llama f32 gguf vs HF load", l2, l1, n1, 1e-5);
        free(l1);
        free(l2);
        compare_ref("llama f32 gguf vs transformers", &gg, ids,
                    qt_safetensors_get(ref, "llama_logits"), 1e-4);
    }
    if (s == QT_OK) qt_model_free(&hf);
    if (s2 == QT_OK) qt_model_free(&gg);

    s = qt_model_load_gguf(&gg, fx("tiny_llama_q8.gguf"));
    CHECK(s == QT_OK, "load tiny_llama_q8.gguf: %s", qt_error_message());
    if (s == QT_OK) {
        compare_ref("llama q8_0 gguf vs transformers", &gg, ids,
                    qt_safetensors_get(gref, "llama_q8_logits"), 1e-4);
        qt_model_free(&gg);
    }

    s = qt_model_load_gguf(&gg, fx("tiny_qwen2_f16.gguf"));
    CHECK(s == QT_OK, "load tiny_qwen2_f16.gguf: %s", qt_error_message());
    if (s == QT_OK) {
        CHECK(gg.llama.cfg.qkv_bias && gg.llama.cfg.tied_embeddings &&
                  gg.llama.lm_head == gg.llama.embed && gg.llama.layers[1].bk &&
                  gg.llama.cfg.vocab_size == 64 && gg.llama.cfg.norm_eps == 1e-6f,
              "qwen2 gguf: bias, tied, vocab from tokenizer.ggml.tokens, eps");
        compare_ref("qwen2 f16 gguf vs transformers", &gg, ids,
                    qt_safetensors_get(gref, "qwen2_f16_logits"), 1e-4);
        qt_model_free(&gg);
    }
}

/* ------------------------------------------------------- mini model, mutated ---- */

/* vocab 32, dim 32, 1 layer, 2 heads of 16, 1 kv head, ffn 64, all F32. */
enum { MV = 32, MD = 32, MF = 64, MH = 2, MKV = 1, HD = MD / MH };

typedef enum {
    M_OK, M_TIED, M_VOCAB_FROM_TOKENS, M_VOCAB_FROM_EMBD, M_NO_ARCH, M_ARCH_GPT2,
    M_MISSING_TENSOR, M_WRONG_SHAPE, M_EXTRA_TENSOR, M_ROPE_FREQS, M_INT_TENSOR,
    M_KEY_TYPE, M_MISSING_KEY, M_BAD_HEADS, M_KEY_LENGTH, M_ROPE_SCALING, M_MOE,
    M_NEG_KEY, M_BAD_KV, M_MANY_LAYERS, M_VOCAB_MISMATCH, M_COUNT
} mutation;

static float DATA[MF * MF]; /* every tensor's values: a prefix of this */

static void write_mini(const char *path, mutation mu) {
    qt_gguf_writer *w;
    if (qt_gguf_writer_init(&w) != QT_OK) {
        printf("writer init: %s\n", qt_error_message());
        exit(2);
    }
    const char *arch = mu == M_ARCH_GPT2 ? "gpt2" : "llama";
    if (mu != M_NO_ARCH) qt_gguf_writer_set_str(w, "general.architecture", arch, strlen(arch));
    char k[96];
#define K(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    qt_gguf_writer_set_u32(w, K("context_length"), 128);
    if (mu != M_MISSING_KEY) qt_gguf_writer_set_u32(w, K("embedding_length"), MD);
    if (mu == M_KEY_TYPE) qt_gguf_writer_set_str(w, K("block_count"), "1", 1);
    else qt_gguf_writer_set_u32(w, K("block_count"), mu == M_MANY_LAYERS ? 1000000000 : 1);
    if (mu == M_NEG_KEY) qt_gguf_writer_set_i32(w, K("feed_forward_length"), -64);
    else qt_gguf_writer_set_u64(w, K("feed_forward_length"), MF); /* any integer type */
    qt_gguf_writer_set_u32(w, K("attention.head_count"), mu == M_BAD_HEADS ? 3 : MH);
    qt_gguf_writer_set_i32(w, K("attention.head_count_kv"), mu == M_BAD_KV ? 3 : MKV);
    qt_gguf_writer_set_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-5f);
    qt_gguf_writer_set_f32(w, K("rope.freq_base"), 50000.0f);
    qt_gguf_writer_set_u32(w, K("rope.dimension_count"), HD);
    if (mu != M_VOCAB_FROM_TOKENS && mu != M_VOCAB_FROM_EMBD)
        qt_gguf_writer_set_u32(w, K("vocab_size"), mu == M_VOCAB_MISMATCH ? MV + 8 : MV);
    if (mu == M_KEY_LENGTH) qt_gguf_writer_set_u32(w, K("attention.key_length"), 8);
    if (mu == M_ROPE_SCALING) qt_gguf_writer_set_str(w, K("rope.scaling.type"), "linear", 6);
    if (mu == M_MOE) qt_gguf_writer_set_u32(w, K("expert_count"), 4);
#undef K
    if (mu == M_VOCAB_FROM_TOKENS) {
        char names[MV][8];
        const char *toks[MV];
        for (int i = 0; i < MV; i++) {
            snprintf(names[i], sizeof names[i], "t%d", i);
            toks[i] = names[i];
        }
        qt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, MV);
    }
    struct {
        const char *name;
        int64_t ne0, ne1; /* ne1 0: 1-D */
    } ts[] = {
        {"token_embd.weight", MD, MV},
        {"blk.0.attn_norm.weight", MD, 0},
        {"blk.0.attn_q.weight", MD, MD},
        {"blk.0.attn_k.weight", MD, HD * MKV},
        {"blk.0.attn_v.weight", MD, mu == M_WRONG_SHAPE ? MD : HD * MKV},
        {"blk.0.attn_output.weight", MD, MD},
        {"blk.0.ffn_norm.weight", MD, 0},
        {"blk.0.ffn_gate.weight", MD, MF},
        {"blk.0.ffn_up.weight", MD, MF},
        {"blk.0.ffn_down.weight", MF, MD},
        {"output_norm.weight", MD, 0},
        {"output.weight", MD, MV},
        {"blk.1.attn_norm.weight", MD, 0}, /* M_EXTRA_TENSOR */
        {"rope_freqs.weight", HD / 2, 0},  /* M_ROPE_FREQS */
    };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        const char *nm = ts[i].name;
        if (mu == M_MISSING_TENSOR && !strcmp(nm, "blk.0.attn_k.weight")) continue;
        if (mu == M_TIED && !strcmp(nm, "output.weight")) continue;
        if (mu != M_EXTRA_TENSOR && !strcmp(nm, "blk.1.attn_norm.weight")) continue;
        if (mu != M_ROPE_FREQS && !strcmp(nm, "rope_freqs.weight")) continue;
        int64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        int nd = ts[i].ne1 ? 2 : 1;
        qt_ggml_type t = QT_GGML_F32;
        if (mu == M_INT_TENSOR && !strcmp(nm, "blk.0.ffn_norm.weight")) t = QT_GGML_I32;
        int64_t numel = ne[0] * (nd == 2 ? ne[1] : 1);
        qt_gguf_writer_add_tensor(w, nm, t, nd, ne, DATA, (size_t)numel * 4);
    }
    qt_status s = qt_gguf_writer_write(w, path);
    qt_gguf_writer_free(w);
    if (s != QT_OK) {
        printf("write %s: %s\n", path, qt_error_message());
        exit(2);
    }
}

static void test_mini(void) {
    for (int i = 0; i < MF * MF; i++) DATA[i] = 0.5f * sinf(0.37f * (float)i + 0.1f);
    const char *p = tmp("mini.gguf");

    qt_model m;
    write_mini(p, M_OK);
    qt_status s = qt_model_load_gguf(&m, p);
    CHECK(s == QT_OK, "mini: %s", qt_error_message());
    if (s == QT_OK) {
        const qt_llama *L = &m.llama;
        CHECK(L->cfg.vocab_size == MV && L->cfg.ffn_dim == MF && L->cfg.n_kv_heads == MKV &&
                  L->cfg.rope_theta == 50000.0f && L->cfg.max_seq_len == 128 &&
                  !L->cfg.tied_embeddings && L->lm_head != L->embed,
              "mini: config");
        /* GGUF row h*hd + 2i + j is HF row h*hd + j*hd/2 + i; v is not permuted */
        const float *q = L->layers[0].wq->data, *kk = L->layers[0].wk->data;
        const float *v = L->layers[0].wv->data;
        bool okq = true, okk = true;
        for (int h = 0; h < MH; h++)
            for (int i = 0; i < HD / 2; i++)
                for (int j = 0; j < 2; j++)
                    for (int c = 0; c < MD; c++) {
                        float want = DATA[(h * HD + 2 * i + j) * MD + c];
                        okq &= q[(h * HD + j * HD / 2 + i) * MD + c] == want;
                        if (h < MKV) okk &= kk[(h * HD + j * HD / 2 + i) * MD + c] == want;
                    }
        CHECK(okq && okk, "mini: q (%d heads) and k (%d head) rows un-permuted", MH, MKV);
        CHECK(!memcmp(v, DATA, HD * MKV * MD * sizeof(float)), "mini: v rows as in the file");
        int32_t idv[5] = {1, 5, 9, 30, 2};
        qt_st_tensor ids = {.name = "ids", .dtype = QT_I32, .ndim = 2,
                            .shape = {1, 5}, .data = idv, .nbytes = sizeof idv};
        int64_t n = 0;
        float *lg = qt_test_run_logits(&m, &ids, &n);
        bool finite = lg && n == 5 * MV;
        for (int64_t i = 0; finite && i < n; i++) finite = isfinite(lg[i]);
        CHECK(finite, "mini: forward gives finite logits");
        free(lg);
        qt_model_free(&m);
    }

    write_mini(p, M_TIED);
    s = qt_model_load_gguf(&m, p);
    CHECK(s == QT_OK && m.llama.cfg.tied_embeddings && m.llama.lm_head == m.llama.embed,
          "mini without output.weight: tied: %s", qt_error_message());
    if (s == QT_OK) qt_model_free(&m);

    write_mini(p, M_VOCAB_FROM_TOKENS);
    s = qt_model_load_gguf(&m, p);
    CHECK(s == QT_OK && m.llama.cfg.vocab_size == MV,
          "mini, vocab from tokenizer.ggml.tokens: %s", qt_error_message());
    if (s == QT_OK) qt_model_free(&m);

    write_mini(p, M_VOCAB_FROM_EMBD);
    s = qt_model_load_gguf(&m, p);
    CHECK(s == QT_OK && m.llama.cfg.vocab_size == MV, "mini, vocab from token_embd: %s",
          qt_error_message());
    if (s == QT_OK) qt_model_free(&m);

    /* bad inputs: status, *m zeroed, message naming the file and the culprit */
    static const struct {
        mutation mu;
        qt_status want;
        const char *names;
    } bad[] = {
        {M_NO_ARCH, QT_EFORMAT, "general.architecture"},
        {M_ARCH_GPT2, QT_ENOTSUP, "gpt2"},
        {M_MISSING_TENSOR, QT_EFORMAT, "blk.0.attn_k.weight"},
        {M_WRONG_SHAPE, QT_ESHAPE, "blk.0.attn_v.weight"},
        {M_EXTRA_TENSOR, QT_EFORMAT, "blk.1.attn_norm.weight"},
        {M_ROPE_FREQS, QT_ENOTSUP, "rope_freqs.weight"},
        {M_INT_TENSOR, QT_EDTYPE, "blk.0.ffn_norm.weight"},
        {M_KEY_TYPE, QT_EFORMAT, "llama.block_count"},
        {M_MISSING_KEY, QT_EFORMAT, "llama.embedding_length"},
        {M_BAD_HEADS, QT_EFORMAT, "llama.attention.head_count"},
        {M_KEY_LENGTH, QT_ENOTSUP, "llama.attention.key_length"},
        {M_ROPE_SCALING, QT_ENOTSUP, "llama.rope.scaling.type"},
        {M_MOE, QT_ENOTSUP, "llama.expert_count"},
        {M_NEG_KEY, QT_EFORMAT, "llama.feed_forward_length"},
        {M_BAD_KV, QT_EFORMAT, "llama.attention.head_count_kv"},
        {M_MANY_LAYERS, QT_EFORMAT, "llama.block_count"},
        {M_VOCAB_MISMATCH, QT_ESHAPE, "token_embd.weight"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_mini(p, bad[i].mu);
        memset(&m, 0xab, sizeof m);
        s = qt_model_load_gguf(&m, p);
        const char *msg = qt_error_message();
        if (getenv("QT_TEST_VERBOSE"))
            printf("  mutation %d: %s: %s\n", (int)bad[i].mu, qt_status_str(s), msg);
        CHECK(s == bad[i].want && zeroed(&m) && strstr(msg, p) && strstr(msg, bad[i].names),
              "mutation %d: expected %s naming %s, got %s: %s", (int)bad[i].mu,
              qt_status_str(bad[i].want), bad[i].names, qt_status_str(s), msg);
        if (s == QT_OK) qt_model_free(&m);
    }
    unlink(p);
}

/* ------------------------------------------------------- every tensor type ---- */

/* Valid bytes of n elements of `type`: random, with every f16 scale set to a small
 * finite value (random bits there could be Inf/NaN). */
static unsigned char *make_bytes(qt_ggml_type type, int64_t n, unsigned *seed, size_t *nbytes) {
    *nbytes = qt_ggml_nbytes(type, n);
    unsigned char *b = malloc(*nbytes);
    for (size_t i = 0; i < *nbytes; i++) b[i] = (unsigned char)(rand_r(seed) >> 7);
    size_t bs = qt_ggml_type_size(type);
    int f16_at[2] = {-1, -1};
    switch (type) {
    case QT_GGML_Q4_0: case QT_GGML_Q5_0: case QT_GGML_Q8_0: f16_at[0] = 0; break;
    case QT_GGML_Q4_1: case QT_GGML_Q5_1: case QT_GGML_Q4_K: f16_at[0] = 0; f16_at[1] = 2; break;
    case QT_GGML_Q6_K: f16_at[0] = 208; break;
    default: break;
    }
    bool plain = type == QT_GGML_F16 || type == QT_GGML_BF16 || type == QT_GGML_F32;
    for (int64_t i = 0; plain && i < n; i++) {
        float x = (float)(rand_r(seed) % 2001 - 1000) / 1000.0f;
        uint16_t h = type == QT_GGML_F16 ? qt_f32_to_f16(x) : qt_f32_to_bf16(x);
        if (type == QT_GGML_F32) memcpy(b + 4 * i, &x, 4);
        else memcpy(b + 2 * i, &h, 2);
    }
    for (size_t blk = 0; blk < *nbytes / bs; blk++)
        for (int k = 0; k < 2; k++)
            if (f16_at[k] >= 0) {
                uint16_t h = qt_f32_to_f16(0.001f * (float)(1 + rand_r(seed) % 20));
                memcpy(b + blk * bs + (size_t)f16_at[k], &h, 2);
            }
    return b;
}

/* A model 256 wide (K-quant blocks are 256 long) whose tensors use every type the issue
 * names; each loaded parameter must equal qt_ggml_dequantize of its bytes, q and k
 * with rows un-permuted after dequantization. */
static void test_types(void) {
    enum { WV = 8, WD = 256, WF = 256, WH = 2, WKV = 1, WHD = WD / WH };
#define L0 "model.layers.0."
    static const struct {
        const char *gguf, *hf;
        qt_ggml_type type;
        int64_t ne0, ne1;
        int perm_heads; /* 0: not permuted */
    } ts[] = {
        {"token_embd.weight", "model.embed_tokens.weight", QT_GGML_Q6_K, WD, WV, 0},
        {"blk.0.attn_norm.weight", L0 "input_layernorm.weight", QT_GGML_F32, WD, 0, 0},
        {"blk.0.attn_q.weight", L0 "self_attn.q_proj.weight", QT_GGML_Q4_K, WD, WD, WH},
        {"blk.0.attn_k.weight", L0 "self_attn.k_proj.weight", QT_GGML_Q4_0, WD, WHD * WKV, WKV},
        {"blk.0.attn_v.weight", L0 "self_attn.v_proj.weight", QT_GGML_BF16, WD, WHD * WKV, 0},
        {"blk.0.attn_output.weight", L0 "self_attn.o_proj.weight", QT_GGML_Q6_K, WD, WD, 0},
        {"blk.0.ffn_norm.weight", L0 "post_attention_layernorm.weight", QT_GGML_F32, WD, 0, 0},
        {"blk.0.ffn_gate.weight", L0 "mlp.gate_proj.weight", QT_GGML_Q4_1, WD, WF, 0},
        {"blk.0.ffn_up.weight", L0 "mlp.up_proj.weight", QT_GGML_Q5_1, WD, WF, 0},
        {"blk.0.ffn_down.weight", L0 "mlp.down_proj.weight", QT_GGML_F16, WF, WD, 0},
        {"output_norm.weight", "model.norm.weight", QT_GGML_F32, WD, 0, 0},
        {"output.weight", "lm_head.weight", QT_GGML_Q8_0, WD, WV, 0},
    };
#undef L0
    enum { NT = sizeof ts / sizeof ts[0] };
    unsigned char *bytes[NT];
    size_t nb[NT];
    unsigned seed = 12345;
    qt_gguf_writer *w;
    qt_gguf_writer_init(&w);
    qt_gguf_writer_set_str(w, "general.architecture", "llama", 5);
    qt_gguf_writer_set_u32(w, "llama.context_length", 64);
    qt_gguf_writer_set_u32(w, "llama.embedding_length", WD);
    qt_gguf_writer_set_u32(w, "llama.block_count", 1);
    qt_gguf_writer_set_u32(w, "llama.feed_forward_length", WF);
    qt_gguf_writer_set_u32(w, "llama.attention.head_count", WH);
    qt_gguf_writer_set_u32(w, "llama.attention.head_count_kv", WKV);
    qt_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    qt_gguf_writer_set_u32(w, "llama.vocab_size", WV);
    for (int i = 0; i < NT; i++) {
        int64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        int nd = ts[i].ne1 ? 2 : 1;
        bytes[i] = make_bytes(ts[i].type, ne[0] * (nd == 2 ? ne[1] : 1), &seed, &nb[i]);
        qt_gguf_writer_add_tensor(w, ts[i].gguf, ts[i].type, nd, ne, bytes[i], nb[i]);
    }
    const char *p = tmp("types.gguf");
    qt_status s = qt_gguf_writer_write(w, p);
    qt_gguf_writer_free(w);
    CHECK(s == QT_OK, "write %s: %s", p, qt_error_message());
    qt_model m;
    if (s == QT_OK) s = qt_model_load_gguf(&m, p);
    CHECK(s == QT_OK, "load %s: %s", p, qt_error_message());
    for (int i = 0; i < NT && s == QT_OK; i++) {
        int64_t rows = ts[i].ne1 ? ts[i].ne1 : 1, cols = ts[i].ne0, n = rows * cols;
        float *deq = malloc((size_t)n * sizeof *deq), *want = malloc((size_t)n * sizeof *want);
        qt_status ds = qt_ggml_dequantize(ts[i].type, bytes[i], deq, n);
        memcpy(want, deq, (size_t)n * sizeof *want);
        if (ts[i].perm_heads) { /* HF row h*hd + j*hd/2 + r = GGUF row h*hd + 2r + j */
            int64_t hd = rows / ts[i].perm_heads;
            for (int64_t h = 0; h < ts[i].perm_heads; h++)
                for (int64_t r = 0; r < hd / 2; r++)
                    for (int j = 0; j < 2; j++)
                        memcpy(want + (h * hd + j * hd / 2 + r) * cols,
                               deq + (h * hd + 2 * r + j) * cols, (size_t)cols * sizeof *want);
        }
        qt_tensor *t = qt_paramset_find(&m.llama.params, ts[i].hf);
        bool finite = true;
        for (int64_t k = 0; k < n; k++) finite &= isfinite(want[k]);
        CHECK(ds == QT_OK && finite && t && qt_numel(t) == n &&
                  !memcmp(t->data, want, (size_t)n * sizeof *want),
              "%s (%s): loaded values equal qt_ggml_dequantize%s", ts[i].gguf,
              qt_ggml_type_name(ts[i].type), ts[i].perm_heads ? ", rows un-permuted" : "");
        free(deq);
        free(want);
    }
    if (s == QT_OK) qt_model_free(&m);
    for (int i = 0; i < NT; i++) free(bytes[i]);
    unlink(p);
}

/* ------------------------------------------------------------ truncation ---- */

static void test_truncated(void) {
    FILE *f = fopen(fx("tiny_llama_q8.gguf"), "rb");
    CHECK(f != NULL, "open q8 fixture");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    bool ok = fread(b, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    CHECK(ok, "read q8 fixture");
    const char *p = tmp("trunc.gguf");
    long cuts[] = {0, 3, 4, 8, 23, 24, 100, 1000, n / 2, n - 32, n - 1};
    for (size_t i = 0; ok && i < sizeof cuts / sizeof cuts[0]; i++) {
        FILE *o = fopen(p, "wb");
        if (!o || fwrite(b, 1, (size_t)cuts[i], o) != (size_t)cuts[i]) {
            printf("cannot write %s\n", p);
            exit(2);
        }
        fclose(o);
        qt_model m;
        memset(&m, 0xab, sizeof m);
        qt_status s = qt_model_load_gguf(&m, p);
        CHECK(s != QT_OK && zeroed(&m) && strstr(qt_error_message(), p),
              "truncated to %ld of %ld bytes: %s: %s", cuts[i], n, qt_status_str(s),
              qt_error_message());
        if (s == QT_OK) qt_model_free(&m);
    }
    unlink(p);
    free(b);

    qt_model m;
    qt_status s = qt_model_load_gguf(&m, tmp("does_not_exist.gguf"));
    CHECK(s == QT_EIO && strstr(qt_error_message(), "does_not_exist.gguf"), "missing file: %s",
          qt_error_message());
    s = qt_model_load_gguf(&m, NULL);
    CHECK(s == QT_EINVAL, "NULL path");
    /* a HF file is no GGUF */
    s = qt_model_load_gguf(&m, fx("tiny_llama/model.safetensors"));
    CHECK(s == QT_EFORMAT && zeroed(&m), "safetensors given as GGUF: %s", qt_error_message());
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/qt_gguf_model_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    qt_safetensors *ref = NULL, *gref = NULL;
    qt_status s = qt_safetensors_open(fx("model_logits.safetensors"), &ref);
    CHECK(s == QT_OK, "open model_logits.safetensors: %s", qt_error_message());
    qt_status s2 = qt_safetensors_open(fx("gguf_model_logits.safetensors"), &gref);
    CHECK(s2 == QT_OK, "open gguf_model_logits.safetensors: %s", qt_error_message());
    if (s == QT_OK && s2 == QT_OK) test_parity(ref, gref);
    test_mini();
    test_types();
    test_truncated();
    qt_safetensors_close(ref);
    qt_safetensors_close(gref);
    rmdir(tmpdir);
    return qt_test_finish("test_gguf_model");
}
