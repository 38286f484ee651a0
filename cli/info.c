/*
 * info.c - `qtrain info FILE`: what a file holds: a qtrain checkpoint (its run, steps,
 * model and parameters, a LoRA run's adapter merged in), a GGUF file (metadata and
 * tensors) or a safetensors file (tensors).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* One metadata value, short: scalars as they are, arrays as type and length. */
static void print_gguf_value(const qt_gguf *g, int64_t i) {
    const char *k = qt_gguf_key_at(g, i);
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        uint64_t u64; int64_t i64; float f32; double f64; bool b;
    } v;
    switch (qt_gguf_kv_type(g, i)) {
    case QT_GGUF_U8: qt_gguf_get_u8(g, k, &v.u8); printf("%u", v.u8); break;
    case QT_GGUF_I8: qt_gguf_get_i8(g, k, &v.i8); printf("%d", v.i8); break;
    case QT_GGUF_U16: qt_gguf_get_u16(g, k, &v.u16); printf("%u", v.u16); break;
    case QT_GGUF_I16: qt_gguf_get_i16(g, k, &v.i16); printf("%d", v.i16); break;
    case QT_GGUF_U32: qt_gguf_get_u32(g, k, &v.u32); printf("%u", v.u32); break;
    case QT_GGUF_I32: qt_gguf_get_i32(g, k, &v.i32); printf("%d", v.i32); break;
    case QT_GGUF_U64: qt_gguf_get_u64(g, k, &v.u64); printf("%llu", (unsigned long long)v.u64); break;
    case QT_GGUF_I64: qt_gguf_get_i64(g, k, &v.i64); printf("%lld", (long long)v.i64); break;
    case QT_GGUF_F32: qt_gguf_get_f32(g, k, &v.f32); printf("%g", (double)v.f32); break;
    case QT_GGUF_F64: qt_gguf_get_f64(g, k, &v.f64); printf("%g", v.f64); break;
    case QT_GGUF_BOOL: qt_gguf_get_bool(g, k, &v.b); printf("%s", v.b ? "true" : "false"); break;
    case QT_GGUF_STRING: {
        const char *str = NULL;
        size_t len = 0;
        qt_gguf_get_str(g, k, &str, &len);
        printf("\"%.*s%s\"", len > 60 ? 60 : (int)len, str, len > 60 ? "..." : "");
        break;
    }
    case QT_GGUF_ARRAY: {
        qt_gguf_type et;
        uint64_t n = 0;
        qt_gguf_get_arr(g, k, &et, &n, NULL);
        printf("[%s x %llu]", qt_gguf_type_name(et), (unsigned long long)n);
        break;
    }
    default: printf("?");
    }
}

static int info_gguf(const char *path) {
    qt_gguf *g = NULL;
    if (qt_gguf_open(path, &g) != QT_OK) {
        fprintf(stderr, "qtrain info: %s\n", qt_error_message());
        return 2;
    }
    int64_t nt = qt_gguf_tensor_count(g);
    size_t bytes = 0;
    for (int64_t i = 0; i < nt; i++) bytes += qt_gguf_tensor_at(g, i)->nbytes;
    printf("%s: GGUF v%u, %lld metadata keys, %lld tensors, %zu bytes of tensor data\n", path,
           qt_gguf_version(g), (long long)qt_gguf_kv_count(g), (long long)nt, bytes);
    for (int64_t i = 0; i < qt_gguf_kv_count(g); i++) {
        printf("  %-44s ", qt_gguf_key_at(g, i));
        print_gguf_value(g, i);
        printf("\n");
    }
    for (int64_t i = 0; i < nt; i++) {
        const qt_gguf_tensor *t = qt_gguf_tensor_at(g, i);
        printf("  %-44s %-5s [", t->name, qt_ggml_type_name(t->type));
        for (int d = 0; d < t->n_dims; d++) printf(d ? ", %lld" : "%lld", (long long)t->ne[d]);
        printf("]\n");
    }
    qt_gguf_close(g);
    return 0;
}

int qt_cmd_info(int argc, char **argv) {
    bool help = argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"));
    if (argc != 1 || argv[0][0] == '-') {
        fprintf(help ? stdout : stderr,
                "usage: qtrain info FILE   (a qtrain checkpoint, a GGUF or a safetensors file)\n");
        return help ? 0 : 2;
    }
    const char *path = argv[0];
    unsigned char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "qtrain info: %s: %s\n", path, strerror(errno));
        return 2;
    }
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    if (got == 8 && !memcmp(magic, "\x89HDF\r\n\x1a\n", 8)) {
        qt_loaded_model t;
        qt_model_source src = {.path = path};
        int rc = qt_cli_open("info", &src, &t);
        if (rc) return rc;
        const qt_recipe *rp = &t.r;
        printf("%s: qtrain checkpoint of run \"%s\" after %ld steps (data epoch %ld, seed %ld)\n",
               path, rp->name, t.cs.step, t.cs.data_epoch, t.cs.seed);
        qt_paramset *ps = qt_model_params(&t.m);
        if (rp->model.from[0]) printf("  model: fine-tuned from %s", rp->model.from);
        else printf("  model: llama, %d layers, dim %d, %d heads (%d kv), ffn %d, vocab %d",
                    rp->model.n_layers, rp->model.dim, rp->model.n_heads, rp->model.n_kv_heads,
                    rp->model.ffn_dim, rp->model.vocab_size);
        printf(", %zu parameters; tokenizer %s\n", ps->n_total, rp->data.tokenizer);
        if (t.lora[0]) printf("  adapter: %s, merged into the weights below\n", t.lora);
        for (int i = 0; i < ps->n; i++) {
            char b[64];
            printf("  %-48s %s\n", ps->params[i]->name, qt_shape_str(ps->params[i], b, sizeof b));
        }
        qt_model_close(&t);
        return 0;
    }
    if (got >= 4 && !memcmp(magic, "GGUF", 4)) return info_gguf(path);
    qt_safetensors *st = NULL;
    qt_status s = qt_safetensors_open(path, &st);
    if (s != QT_OK) {
        fprintf(stderr, "qtrain info: %s is not a qtrain checkpoint, GGUF or readable "
                        "safetensors file: %s\n", path, qt_error_message());
        return 2;
    }
    int n = qt_safetensors_count(st);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += qt_safetensors_at(st, i)->nbytes;
    printf("%s: safetensors, %d tensors, %zu bytes of data\n", path, n, bytes);
    for (int i = 0; i < n; i++) {
        const qt_st_tensor *t = qt_safetensors_at(st, i);
        printf("  %-48s %-5s [", t->name, qt_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
        printf("]\n");
    }
    qt_safetensors_close(st);
    return 0;
}
