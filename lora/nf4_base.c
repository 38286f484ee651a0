/*
 * nf4_base.c - QLoRA's frozen base weight (Dettmers et al. 2023): NF4, blocksize 64,
 * double-quantized absmax, packed as bitsandbytes' Params4bit stores it, so each matrix
 * costs 4 + 8/64 + 32/(64*256) = 4.127 bits per parameter (../shared/FORMATS.md).
 *
 * The quantizer core (ptq/) decides every code and absmax; this file only packs its
 * result and undoes the packing. A block's absmax is rebuilt as the core does it,
 * dynamic_map[q] * absmax2 + offset in two f32 operations (this file is compiled with
 * -ffp-contract=off, as ptq/ is), and construction checks it equals the core's value
 * bit for bit. The matmul never holds more than a tile of dequantized rows.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "lora_internal.h"
#include "qt_quant.h"

#define NF4_TILE_ROWS 128 /* rows dequantized at a time: 128 x in floats of scratch */

static inline float block_absmax(const qt_nf4_base *b, const float *map, int64_t k) {
    float v = map[b->absmax_q[k]] * b->absmax2[k / 256];
    return v + b->offset;
}

void qt_nf4_base_free(qt_nf4_base *b) {
    if (!b) return;
    free(b->packed);
    free(b->absmax_q);
    free(b->absmax2);
    free(b);
}

size_t qt_nf4_base_bytes(const qt_nf4_base *b) {
    return (size_t)(b->n + 1) / 2 + (size_t)b->nblocks + (size_t)b->n2 * sizeof(float) +
           sizeof(float);
}

qt_status qt_nf4_base_new(const float *w, int64_t rows, int64_t cols, int blocksize,
                          qt_nf4_base **out) {
    *out = NULL;
    qt_qformat f = {.kind = QT_QF_NF4, .bits = 4, .group_size = blocksize ? blocksize : 64,
                    .double_quant = true};
    qt_qtensor q;
    qt_status st = qt_quantize(&f, w, rows, cols, &q);
    if (st != QT_OK) return st;
    qt_nf4_base *b = calloc(1, sizeof *b);
    if (!b) {
        qt_qtensor_free(&q);
        return QT_ERROR(QT_ENOMEM, "qlora: out of memory");
    }
    b->rows = rows;
    b->cols = cols;
    b->n = rows * cols;
    b->blocksize = f.group_size;
    b->nblocks = q.n_scales;
    b->n2 = q.n_absmax2;
    b->offset = q.offset;
    b->packed = calloc((size_t)(b->n + 1) / 2, 1);
    b->absmax_q = malloc((size_t)b->nblocks);
    b->absmax2 = malloc((size_t)(b->n2 ? b->n2 : 1) * sizeof(float));
    if (!b->packed || !b->absmax_q || !b->absmax2 || !q.absmax_q || !q.absmax2) {
        qt_nf4_base_free(b);
        qt_qtensor_free(&q);
        return QT_ERROR(QT_ENOMEM, "qlora: out of memory (or no double-quant state)");
    }
    for (int64_t i = 0; i < b->n; i++)
        b->packed[i / 2] |= (uint8_t)((q.codes[i] & 15) << (i % 2 ? 0 : 4));
    memcpy(b->absmax_q, q.absmax_q, (size_t)b->nblocks);
    memcpy(b->absmax2, q.absmax2, (size_t)b->n2 * sizeof(float));
    const float *map = qt_dynamic_map();
    for (int64_t k = 0; k < b->nblocks; k++) {
        float a = block_absmax(b, map, k);
        if (memcmp(&a, &q.scales[k], sizeof a) != 0) {
            st = QT_ERROR(QT_ESTATE, "qlora: block %lld's absmax rebuilds as %.9g, the quantizer "
                                     "core has %.9g", (long long)k, a, q.scales[k]);
            break;
        }
    }
    qt_qtensor_free(&q);
    if (st != QT_OK) {
        qt_nf4_base_free(b);
        return st;
    }
    *out = b;
    return QT_OK;
}

void qt_nf4_base_rows(const qt_nf4_base *b, int64_t r0, int64_t r1, float *out) {
    const float *code = qt_nf4_codebook(), *map = qt_dynamic_map();
    const int64_t s = r0 * b->cols, e = r1 * b->cols;
    for (int64_t i = s; i < e;) {
        int64_t k = i / b->blocksize, be = (k + 1) * b->blocksize < e ? (k + 1) * b->blocksize : e;
        const float a = block_absmax(b, map, k);
        for (; i < be; i++) {
            uint8_t c = (uint8_t)(b->packed[i / 2] >> (i % 2 ? 0 : 4)) & 15;
            out[i - s] = code[c] * a;
        }
    }
}

/* ---- the matmul op ------------------------------------------------------------------- */

typedef struct {
    const qt_nf4_base *b;
    float *tile; /* (NF4_TILE_ROWS * cols) scratch */
} nf4_op;

static qt_status nf4_fwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state) {
    nf4_op *s = state;
    const qt_nf4_base *b = s->b;
    const int64_t K = b->cols, N = b->rows, M = qt_numel(in[0]) / K;
    const float *x = in[0]->data;
    float *y = out->data;
    for (int64_t r0 = 0; r0 < N; r0 += NF4_TILE_ROWS) {
        int64_t r1 = r0 + NF4_TILE_ROWS < N ? r0 + NF4_TILE_ROWS : N;
        qt_nf4_base_rows(b, r0, r1, s->tile);
        /* y[:, r0:r1] = x (M, K) tile^T (K, r1-r0) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)(r1 - r0),
                    (blasint)K, 1.0f, x, (blasint)K, s->tile, (blasint)K, 0.0f, y + r0,
                    (blasint)N);
    }
    return QT_OK;
}

static qt_status nf4_bwd(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state) {
    nf4_op *s = state;
    const qt_nf4_base *b = s->b;
    float *dx = in[0]->grad;
    if (!dx) return QT_OK;
    const int64_t K = b->cols, N = b->rows, M = qt_numel(in[0]) / K;
    const float *dy = out->grad;
    for (int64_t r0 = 0; r0 < N; r0 += NF4_TILE_ROWS) {
        int64_t r1 = r0 + NF4_TILE_ROWS < N ? r0 + NF4_TILE_ROWS : N;
        qt_nf4_base_rows(b, r0, r1, s->tile);
        /* dx (M, K) += dy[:, r0:r1] (M, r1-r0) tile (r1-r0, K) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)M, (blasint)K,
                    (blasint)(r1 - r0), 1.0f, dy + r0, (blasint)N, s->tile, (blasint)K, 1.0f,
                    dx, (blasint)K);
    }
    return QT_OK;
}

static const qt_custom_fn nf4_fn = {"qlora_nf4_linear", nf4_fwd, nf4_bwd};

qt_tensor *qt_nf4_linear(qt_ctx *ctx, qt_tensor *x, const qt_nf4_base *b) {
    if (qt_ctx_status(ctx) != QT_OK) return NULL;
    if (!x) return QT_CTX_FAIL(ctx, QT_EINVAL, "qlora: input is NULL");
    if (x->device.kind != QT_DEV_CPU || x->dtype != QT_F32)
        return QT_CTX_FAIL(ctx, QT_ENOTSUP, "qlora: the NF4 base runs on the CPU in f32 only "
                                            "for now (got %s %s)",
                           qt_device_name(x->device), qt_dtype_name(x->dtype));
    if (x->ndim < 1 || qt_dim(x, -1) != b->cols) {
        char s[64];
        return QT_CTX_FAIL(ctx, QT_ESHAPE, "qlora: input %s, the base has %lld inputs",
                           qt_shape_str(x, s, sizeof s), (long long)b->cols);
    }
    nf4_op *s = qt_ctx_alloc(ctx, sizeof *s);
    int64_t tr = b->rows < NF4_TILE_ROWS ? b->rows : NF4_TILE_ROWS;
    float *tile = qt_ctx_alloc(ctx, (size_t)(tr * b->cols) * sizeof(float));
    if (!s || !tile) return NULL;
    s->b = b;
    s->tile = tile;
    int64_t shape[QT_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = b->rows;
    return qt_custom(ctx, &nf4_fn, 1, &x, x->ndim, shape, s);
}
