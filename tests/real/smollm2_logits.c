/*
 * smollm2_logits.c - a real-model check of qt_model_load_gguf (not in CI; built when
 * QT_REAL_MODEL_TESTS is ON, run by tests/real/smollm2_check.sh).
 *
 *   smollm2_logits MODEL.gguf [LOGITS.f32]
 *
 * Prints the file's metadata summary (architecture, name, file type, tensor types), the
 * config the loader derived, load time and memory (VmRSS / VmHWM), then runs one forward
 * pass on two fixed id sequences of SmolLM2's vocabulary (no tokenizer needed):
 *   "The capital of France is Paris"   = 504 3575 282 4649 314 7042
 *   "The capital of Germany is Berlin" = 504 3575 282 4521 314 11452
 * and prints the top-5 next-token ids after "... is" (with their strings from
 * tokenizer.ggml.tokens), and the perplexity of each sequence's last five tokens. A
 * sound load puts " Paris" / " Berlin" first. LOGITS.f32, when given, receives the
 * (2, 6, vocab) logits as raw little-endian f32 for smollm2_reference.py to compare
 * with transformers' own GGUF loader.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qt_formats.h"
#include "qt_layers.h"

enum { B = 2, T = 6 };
static const int32_t IDS[B][T] = {{504, 3575, 282, 4649, 314, 7042},
                                  {504, 3575, 282, 4521, 314, 11452}};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* VmRSS / VmHWM of this process in MiB (-1 when /proc is not there). */
static void mem_mib(double *rss, double *hwm) {
    *rss = *hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long kb;
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) *rss = (double)kb / 1024;
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) *hwm = (double)kb / 1024;
    }
    fclose(f);
}

static const char *tok(const qt_gguf *g, int64_t id) {
    const char *s = "?";
    if (g && qt_gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)id, &s, NULL) != QT_OK)
        s = "?";
    return s;
}

static void summary(const char *path) {
    qt_gguf *g;
    if (qt_gguf_open(path, &g) != QT_OK) {
        fprintf(stderr, "%s\n", qt_error_message());
        exit(1);
    }
    const char *arch = "?", *name = "?";
    uint32_t ft = 0;
    qt_gguf_get_str(g, "general.architecture", &arch, NULL);
    qt_gguf_get_str(g, "general.name", &name, NULL);
    qt_gguf_get_u32(g, "general.file_type", &ft);
    printf("file: %s\n  GGUF v%u, %lld keys, %lld tensors, architecture \"%s\", name \"%s\", "
           "file_type %u\n",
           path, qt_gguf_version(g), (long long)qt_gguf_kv_count(g),
           (long long)qt_gguf_tensor_count(g), arch, name, ft);
    int64_t count[QT_GGML_TYPE_LIMIT] = {0};
    for (int64_t i = 0; i < qt_gguf_tensor_count(g); i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        if ((int)t->type < QT_GGML_TYPE_LIMIT) count[t->type]++;
    }
    printf("  tensor types:");
    for (int t = 0; t < QT_GGML_TYPE_LIMIT; t++)
        if (count[t]) printf(" %s x%lld", qt_ggml_type_name((qt_ggml_type)t), (long long)count[t]);
    printf("\n");
    qt_gguf_close(g);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL.gguf [LOGITS.f32]\n", argv[0]);
        return 2;
    }
    summary(argv[1]);
    double rss0, hwm0, rss1, hwm1;
    mem_mib(&rss0, &hwm0);
    qt_model m;
    double t0 = now();
    qt_status s = qt_model_load_gguf(&m, argv[1]);
    double t1 = now();
    if (s != QT_OK) {
        fprintf(stderr, "load failed: %s: %s\n", qt_status_str(s), qt_error_message());
        return 1;
    }
    mem_mib(&rss1, &hwm1);
    const qt_llama_config *c = &m.llama.cfg;
    printf("config: vocab %d, dim %d, layers %d, heads %d (kv %d), ffn %d, rope_theta %g, "
           "norm_eps %g, max_seq_len %d, tied %d, qkv_bias %d; %lld parameters (f32 %.1f MiB)\n",
           c->vocab_size, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->ffn_dim,
           (double)c->rope_theta, (double)c->norm_eps, c->max_seq_len, c->tied_embeddings,
           c->qkv_bias, (long long)m.llama.params.n_total,
           (double)m.llama.params.n_total * 4 / 1048576.0);
    printf("load: %.2f s; RSS %.0f -> %.0f MiB, peak %.0f MiB\n", t1 - t0, rss0, rss1, hwm1);

    qt_ctx *ctx = qt_ctx_new();
    qt_ctx_set_grad_enabled(ctx, false);
    int64_t shape[2] = {B, T};
    qt_tensor *x = qt_tensor_from(ctx, QT_I32, 2, shape, IDS);
    double t2 = now();
    qt_tensor *y = x ? qt_model_forward(ctx, &m, x) : NULL;
    double t3 = now();
    if (!y) {
        fprintf(stderr, "forward failed: %s\n", qt_ctx_error(ctx));
        return 1;
    }
    const int64_t V = c->vocab_size;
    const float *lg = y->data;
    mem_mib(&rss1, &hwm1);
    printf("forward (%d x %d tokens): %.3f s; peak RSS %.0f MiB\n", B, T, t3 - t2, hwm1);

    qt_gguf *g = NULL;
    if (qt_gguf_open(argv[1], &g) != QT_OK) g = NULL; /* only for token strings */
    int bad = 0;
    for (int b = 0; b < B; b++) {
        const float *row = lg + ((int64_t)b * T + (T - 2)) * V; /* after "... is" */
        int top[5] = {-1, -1, -1, -1, -1};
        for (int k = 0; k < 5; k++)
            for (int64_t v = 0; v < V; v++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken |= top[j] == v;
                if (!taken && (top[k] < 0 || row[v] > row[top[k]])) top[k] = (int)v;
            }
        printf("seq %d: top-5 after \"%s ... %s\":", b, tok(g, IDS[b][0]), tok(g, IDS[b][T - 2]));
        for (int k = 0; k < 5; k++)
            printf("  %d %s (%.4f)", top[k], tok(g, top[k]), (double)row[top[k]]);
        printf("\n");
        if (top[0] != IDS[b][T - 1]) bad++;
        /* perplexity of tokens 1..T-1 */
        double nll = 0;
        for (int t = 0; t < T - 1; t++) {
            const float *r = lg + ((int64_t)b * T + t) * V;
            double mx = -INFINITY, z = 0;
            for (int64_t v = 0; v < V; v++) mx = r[v] > mx ? r[v] : mx;
            for (int64_t v = 0; v < V; v++) z += exp((double)r[v] - mx);
            nll += mx + log(z) - r[IDS[b][t + 1]];
        }
        printf("seq %d: perplexity of its last %d tokens %.3f\n", b, T - 1, exp(nll / (T - 1)));
    }
    if (argc == 3) {
        FILE *f = fopen(argv[2], "wb");
        size_t n = (size_t)(B * T * V);
        if (!f || fwrite(lg, sizeof(float), n, f) != n) {
            fprintf(stderr, "cannot write %s\n", argv[2]);
            return 1;
        }
        fclose(f);
        printf("logits (%d, %d, %lld) f32 written to %s\n", B, T, (long long)V, argv[2]);
    }
    qt_gguf_close(g);
    qt_ctx_free(ctx);
    qt_model_free(&m);
    printf("%s\n", bad ? "UNEXPECTED: a capital is not the top prediction"
                       : "ok: both capitals predicted first");
    return bad ? 1 : 0;
}
