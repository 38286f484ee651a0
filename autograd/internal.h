/*
 * internal.h - what the autograd's own files share and nothing else sees: the context
 * layout, tape nodes, the op definition table and the helpers every op uses.
 *
 * An op lives in one file as a pair: a forward kernel and a backward kernel per device
 * kind, plus a public constructor (qt_matmul, ...) that checks shapes, makes the output
 * and calls qt_op_run. Backward kernels ACCUMULATE into the grads of their inputs
 * (in->grad may be NULL when an input needs no grad: skip it).
 */
#ifndef QT_AUTOGRAD_INTERNAL_H
#define QT_AUTOGRAD_INTERNAL_H

#include "qt_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QT_MAX_INPUTS 4

/* ---- per-op attributes ---------------------------------------------------------------
 * Each op's constructor fills its own member of qt_op_attrs; its kernels, the CPU's and
 * every backend's, read that member and no other (the node's op is the union's tag).
 * Ops without attributes (reshape, embedding, softmax, silu, gelu, swiglu, cast) leave it
 * zeroed. Fields marked "set by forward" are written by the forward kernel for its
 * backward. */

/* matmul: C = op(A) op(B), op(A) (M,K), op(B) (K,N), `batch` products; shared: B is 2-D
 * and the same for every batch (a Linear weight) */
typedef struct {
    bool ta, tb, shared;
    int64_t M, N, K, batch;
} qt_matmul_attrs;

/* add, sub, mul, div: the result viewed as (outer, inner); `small` names the operand
 * repeated over outer: 0 = a, 1 = b, -1 = neither (same shapes) */
typedef struct {
    int64_t outer, inner;
    int small;
} qt_bcast_attrs;

/* scale: y = s x */
typedef struct {
    float s;
} qt_scale_attrs;

/* sum, mean: input viewed as (pre, len, post), output (pre, post) = mul * sum over len */
typedef struct {
    int64_t pre, len, post;
    float mul; /* 1 (sum) or 1/len (mean) */
} qt_reduce_attrs;

/* permute: the permutation padded to 4 dims with leading size-1 dims */
typedef struct {
    int perm[4];
} qt_permute_attrs;

/* rmsnorm, layernorm (has_bias: layernorm's third input is the bias) */
typedef struct {
    float eps;
    bool has_bias;
} qt_norm_attrs;

/* attention: scale already resolved by the constructor (<= 0 -> 1/sqrt(D)) */
typedef struct {
    float scale;
    int path; /* set by forward: which implementation a backend ran, so that backward
                 follows it (cuda/attention.cu's att_path; the CPU has one path, 0) */
} qt_attention_attrs;

/* rope: angle = (pos0 + t) * theta^(-2i/D) */
typedef struct {
    float theta;
    int64_t pos0;
} qt_rope_attrs;

/* dropout: element i is dropped when qt_rand_uniform(seed, i) < p */
typedef struct {
    float p;
    uint64_t seed;
} qt_dropout_attrs;

/* cross_entropy */
typedef struct {
    int32_t ignore_index;
    int64_t count; /* set by forward: targets that are not ignore_index (the mean's
                      denominator, which backward divides by) */
} qt_ce_attrs;

/* QT_OP_CUSTOM: the caller's forward/backward and its opaque state */
typedef struct {
    const struct qt_custom_fn *fn;
    void *state;
} qt_custom_attrs;

typedef union {
    qt_matmul_attrs matmul;       /* QT_OP_MATMUL */
    qt_bcast_attrs bcast;         /* QT_OP_ADD, _SUB, _MUL, _DIV */
    qt_scale_attrs scale;         /* QT_OP_SCALE */
    qt_reduce_attrs reduce;       /* QT_OP_SUM, _MEAN */
    qt_permute_attrs permute;     /* QT_OP_PERMUTE */
    qt_norm_attrs norm;           /* QT_OP_RMSNORM, _LAYERNORM */
    qt_attention_attrs attention; /* QT_OP_ATTENTION */
    qt_rope_attrs rope;           /* QT_OP_ROPE */
    qt_dropout_attrs dropout;     /* QT_OP_DROPOUT */
    qt_ce_attrs ce;               /* QT_OP_CROSS_ENTROPY */
    qt_custom_attrs custom;       /* QT_OP_CUSTOM */
} qt_op_attrs;

/* A tape node is written per recorded op: an attribute struct that outgrows matmul's
 * should be a pointer into the arena instead. */
#ifdef __cplusplus
static_assert(sizeof(qt_op_attrs) <= 40, "qt_op_attrs grew past matmul's 40 bytes");
#else
_Static_assert(sizeof(qt_op_attrs) <= 40, "qt_op_attrs grew past matmul's 40 bytes");
#endif

typedef struct qt_node {
    qt_op op;
    int n_in;
    qt_tensor *in[QT_MAX_INPUTS];
    qt_tensor *out;
    qt_op_attrs a; /* the member of op (see qt_op_attrs) */
    void *saved;   /* op-specific arena memory kept for backward (e.g. log-sum-exp) */
} qt_node;

typedef qt_status (*qt_kernel_fn)(qt_ctx *ctx, qt_node *n);

/* A device backend (STYLE.md "Backends"): memory and one forward/backward kernel per op.
 * The CPU kernels sit in each op's qt_op_def; another device kind registers its table
 * with qt_backend_register (cuda/ does in qt_cuda_init), so the engine never links a
 * device library. Device pointers are opaque to the engine: it only hands them to the
 * backend's functions and kernels. */
typedef enum { QT_COPY_H2D, QT_COPY_D2H, QT_COPY_D2D } qt_copy_kind;
typedef struct qt_backend {
    const char *name;
    void *(*alloc)(size_t bytes); /* NULL on failure, with the thread error set */
    void (*free)(void *p);
    qt_status (*zero)(void *p, size_t bytes);
    qt_status (*copy)(void *dst, const void *src, size_t bytes, qt_copy_kind kind);
    qt_status (*sync)(void); /* waits for queued work; reports asynchronous errors */
    qt_kernel_fn forward[QT_OP_COUNT];
    qt_kernel_fn backward[QT_OP_COUNT];
} qt_backend;

/* Installs the backend for a device kind other than CPU (NULL removes it). */
void qt_backend_register(qt_device_kind kind, const qt_backend *be);
/* The backend of a device kind, NULL for CPU or when none is registered. */
const qt_backend *qt_backend_get(qt_device_kind kind);

typedef struct {
    const char *name;
    qt_kernel_fn forward[QT_DEV_KIND_COUNT];
    qt_kernel_fn backward[QT_DEV_KIND_COUNT]; /* NULL where the op has none */
    bool nondifferentiable;                   /* explicit mark: no backward by design */
} qt_op_def;

/* One definition per op, each in its op family's file; the table in optable.c. */
extern const qt_op_def qt_opdef_matmul, qt_opdef_add, qt_opdef_sub, qt_opdef_mul,
    qt_opdef_div, qt_opdef_scale, qt_opdef_sum, qt_opdef_mean, qt_opdef_reshape,
    qt_opdef_permute, qt_opdef_embedding, qt_opdef_rmsnorm, qt_opdef_layernorm,
    qt_opdef_softmax, qt_opdef_attention, qt_opdef_rope, qt_opdef_silu, qt_opdef_gelu,
    qt_opdef_swiglu, qt_opdef_dropout, qt_opdef_cross_entropy, qt_opdef_custom,
    qt_opdef_cast;
const qt_op_def *qt_op_get(qt_op op);
/* The kernel that runs op on a device kind (the CPU's from the op table, another kind's
 * from its registered backend); NULL when there is none. */
qt_kernel_fn qt_op_kernel(qt_op op, qt_device_kind dev, bool backward);

/* ---- arena: chunked bump allocator, reset per step --------------------------------- */
typedef struct qt_arena_chunk {
    struct qt_arena_chunk *next;
    size_t size, used;
    unsigned char *base; /* (size) 64-byte aligned */
} qt_arena_chunk;

typedef struct {
    const struct qt_backend *be; /* NULL: host memory (malloc); else the device's alloc */
    qt_arena_chunk *head;  /* current chunk first */
    size_t total;          /* bytes held in all chunks */
    size_t in_use;         /* bytes handed out since the last reset */
    size_t peak;           /* high-water of in_use */
} qt_arena;

void *qt_arena_alloc(qt_arena *a, size_t bytes);
void qt_arena_reset(qt_arena *a);
void qt_arena_free(qt_arena *a);

struct qt_ctx {
    qt_arena arena;  /* host: tensor headers, CPU tensors, kernels' host scratch */
    qt_arena darena[QT_DEV_KIND_COUNT]; /* device memory per device kind ([CPU] unused) */
    qt_device dev;   /* where qt_tensor_new puts new tensors */
    qt_dtype compute_dtype; /* qt_ctx_set_compute_dtype */
    qt_node *tape;   /* (tape_cap) recorded nodes, in forward order */
    int tape_len, tape_cap;
    bool grad_enabled;
    qt_status status;
    char error[512];
    uint64_t generation; /* qt_ctx_generation: bumped by every reset */
    qt_grad_hook grad_hook; /* qt_ctx_set_grad_hook */
    void *grad_hook_user;
};

#define QT_FAIL QT_CTX_FAIL

/* Checks the context is healthy and the inputs are non-NULL f32 tensors on one device.
 * op names the caller for messages. Returns false (with the context failed) if not. */
bool qt_check_inputs(qt_ctx *ctx, const char *op, int n, qt_tensor *const *ts);

/* Arena memory on a device (the host arena for CPU), 256-byte aligned. Kernels'
 * device scratch and saved tensors come from here. Sets the context error on failure. */
void *qt_ctx_alloc_on(qt_ctx *ctx, qt_device dev, size_t bytes);
/* An arena tensor on `dev` (qt_tensor_new is this with the context's device). */
qt_tensor *qt_tensor_new_on(qt_ctx *ctx, qt_device dev, qt_dtype dtype, int ndim,
                            const int64_t *shape);
/* Zeroes `bytes` at p on dev (memset on the CPU). */
qt_status qt_device_zero(qt_device dev, void *p, size_t bytes);

/* A fresh arena tensor with the shape given, the dtype (f32 or bf16) and device of
 * `like`. */
qt_tensor *qt_new_like_shape(qt_ctx *ctx, const qt_tensor *like, int ndim,
                             const int64_t *shape);

/* Runs the op's forward on the output `out` already allocated and, when grad mode is
 * on and an input requires grad, appends the node to the tape and marks out. `a` is the
 * op's attributes (NULL: none). Returns out, or NULL with the context failed. */
qt_tensor *qt_op_run(qt_ctx *ctx, qt_op op, int n_in, qt_tensor *const *in, qt_tensor *out,
                     const qt_op_attrs *a);

/* qt_op_run for QT_OP_CUSTOM: the node carries fn and state (a.custom). */
qt_tensor *qt_op_run_custom(qt_ctx *ctx, const struct qt_custom_fn *fn, void *state, int n_in,
                            qt_tensor *const *in, qt_tensor *out);

/* ---- what every backend's kernels of one op share (host code) ---------------------- */

/* permute: the output's shape padded to 4 dims and the input stride of each output dim,
 * so out[i0,i1,i2,i3] = in[sum ik * st[k]] (from a.permute). */
void qt_perm_geometry(const qt_node *n, int64_t os[4], int64_t st[4]);
/* embedding: fails the context unless every id (host copy) is in [0, V). */
qt_status qt_check_ids(qt_ctx *ctx, const int32_t *ids, int64_t n, int64_t V);
/* cross-entropy: fails the context unless every target (host copy) is in [0, V) or the
 * ignore index; *count gets the targets that count. */
qt_status qt_ce_count(qt_ctx *ctx, const int32_t *t, int64_t n, int64_t V, int32_t ignore,
                      int64_t *count);

/* ---- shared kernel helpers --------------------------------------------------------- */
static inline float *qt_f32(const qt_tensor *t) { return (float *)t->data; }

/* Row-major SGEMM: C = alpha op(A) op(B) + beta C, op(A) (M,K), op(B) (K,N). */
void qt_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc);

/* Splits x at the last dim: rows = numel / last. */
static inline int64_t qt_rows(const qt_tensor *t) {
    int64_t d = t->ndim ? t->shape[t->ndim - 1] : 1;
    return d ? qt_numel(t) / d : 0;
}


/* expf that GCC can vectorize (libm's expf is an opaque call): Cephes' range reduction
 * 2^n * exp(r), |r| <= ln2/2, degree-6 polynomial; rel. error ~2 ulp. Overflow -> inf,
 * underflow -> 0 (denormal results are flushed), NaN propagates. */
static inline float qt_expf(float x) {
    float xc = x < -87.33654f ? -87.33654f : (x > 88.3762626647949f ? 88.3762626647949f : x);
    float t = xc * 1.44269504088896341f + 12582912.0f; /* round(x log2 e) via 1.5*2^23 */
    union { float f; int32_t i; } u = {t}, sc;
    float fn = t - 12582912.0f;
    int32_t n = u.i - 0x4B400000;
    float r = xc - fn * 0.693359375f - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    sc.i = (n + 127) << 23;
    float y = p * sc.f;
    y = x > 88.72283935546875f ? __builtin_inff() : y;
    y = x < -87.33654f ? 0.0f : y;
    return x != x ? x : y;
}

#ifdef __cplusplus
}
#endif
#endif /* QT_AUTOGRAD_INTERNAL_H */
