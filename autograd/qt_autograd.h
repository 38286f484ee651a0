/*
 * qt_autograd.h - the public interface of qtrain's tensor and autograd engine.
 *
 * What a tensor is (decided once, see ../shared/STYLE.md):
 *   - contiguous row-major, up to 4 dims (ndim 0 is a scalar), one dtype, one device;
 *   - `data` is owned by whoever allocated it: a context's arena (per-step activations,
 *     freed all at once by qt_ctx_reset) or a qt_paramset (one flat buffer that lives as
 *     long as the model);
 *   - `grad` is always f32, same element count as the tensor, contiguous.
 *
 * Who owns gradients:
 *   - parameters (registered in a qt_paramset) own a slot of the set's flat grad buffer;
 *     backward ADDS into it, so calling forward+backward k times accumulates k micro-
 *     batches; qt_paramset_zero_grad clears it (the optimizer step's job);
 *   - every other tensor's grad is per-backward: qt_backward allocates it zeroed in the
 *     arena. Backward kernels always accumulate (+=) into their inputs' grads, which makes
 *     fan-out (one tensor feeding several ops) correct with no extra code.
 *
 * Errors: ops return the new tensor, or NULL when they fail; the failure is sticky in
 * the context (like cairo's status): every later op on that context returns NULL, and
 * qt_ctx_status() tells what went wrong first, with a message naming the op, the
 * shapes involved and file:line. So model code reads as a straight line of calls and
 * checks once. Nothing in this library exits or aborts on bad input.
 */
#ifndef QT_AUTOGRAD_H
#define QT_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status ---- */

/* One list, so codes and their messages cannot drift apart. */
#define QT_STATUS_LIST(X)                                  \
    X(QT_OK, "ok")                                         \
    X(QT_EINVAL, "invalid argument")                       \
    X(QT_ESHAPE, "shape mismatch")                         \
    X(QT_EDTYPE, "unsupported dtype")                      \
    X(QT_EDEVICE, "unsupported device")                    \
    X(QT_ENOMEM, "out of memory")                          \
    X(QT_EIO, "I/O error")                                 \
    X(QT_EFORMAT, "malformed input")                       \
    X(QT_ENOTSUP, "not supported")                         \
    X(QT_ESTATE, "invalid state")                          \
    X(QT_ENUMERIC, "non-finite value")

typedef enum {
#define QT_STATUS_ENUM(name, msg) name,
    QT_STATUS_LIST(QT_STATUS_ENUM)
#undef QT_STATUS_ENUM
        QT_STATUS_COUNT
} qt_status;

/* Short fixed text of a status code ("shape mismatch"). */
const char *qt_status_str(qt_status s);
/* The calling thread's last error message ("file.c:12: matmul: ..."), "" if none. */
const char *qt_error_message(void);
/* Records a message for the calling thread and returns `s`. Use through QT_ERROR. */
qt_status qt_error_set(qt_status s, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void qt_error_clear(void);
#define QT_ERROR(s, ...) qt_error_set((s), __FILE__, __LINE__, __VA_ARGS__)

/* ------------------------------------------------------------------- log ---- */

/* Libraries do not print: what they have to say beyond a status (a note about an input,
 * a step of a long job) goes to one process-wide callback that the program installs
 * (the qtrain CLI prints it). No callback installed: messages are dropped. */
typedef enum { QT_LOG_DEBUG, QT_LOG_INFO, QT_LOG_WARN, QT_LOG_ERROR } qt_log_level;
/* msg is one message without a trailing newline, valid during the call only. */
typedef void (*qt_log_fn)(void *user, qt_log_level level, const char *msg);
/* Installs fn (NULL: silent) for every thread; set it once, before the work starts. */
void qt_log_set(qt_log_fn fn, void *user);
/* Formats a message (up to 2 KiB) and hands it to the callback, if any. */
void qt_log(qt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress of long work (loading, tokenizing, evaluation windows, calibration passes,
 * GPTQ/AWQ blocks, export, checkpoint writes), through one process-wide callback like
 * the log's: the program draws it (qtrain: a live line on a terminal, periodic lines
 * otherwise, nothing under --quiet). A task is named by a short string ("eval",
 * "calibrate", "gptq"); a call with done == 0 starts it, done == total ends it, calls in
 * between may come as often as the work likes (the drawer rate-limits). total 0: unknown.
 * unit names what is counted ("tokens", "layers", "bytes", "windows"). The strings are
 * valid during the call only. Called from the thread that runs the work. */
typedef void (*qt_progress_fn)(void *user, const char *task, int64_t done, int64_t total,
                               const char *unit);
/* Installs fn (NULL: no progress drawn); set it once, before the work starts. */
void qt_progress_set(qt_progress_fn fn, void *user);
void qt_progress(const char *task, int64_t done, int64_t total, const char *unit);

/* ----------------------------------------------------------------- dtypes ---- */

typedef enum {
    QT_F32,
    QT_BF16,
    QT_F16,
    QT_I8,
    QT_U8,
    QT_I32,
    /* fp8 (E4M3, E5M2) values are stored as bytes (QT_U8) by the quantizer core (ptq/) */
    QT_DTYPE_COUNT
} qt_dtype;

size_t qt_dtype_size(qt_dtype t);
const char *qt_dtype_name(qt_dtype t);

/* Scalar conversions: round to nearest even, NaN kept NaN, overflow to inf. */
uint16_t qt_f32_to_bf16(float x);
float qt_bf16_to_f32(uint16_t x);
uint16_t qt_f32_to_f16(float x);
float qt_f16_to_f32(uint16_t x);

typedef enum { QT_DEV_CPU, QT_DEV_CUDA, QT_DEV_KIND_COUNT } qt_device_kind;
typedef struct {
    qt_device_kind kind;
    int index; /* cuda:N; 0 for cpu */
} qt_device;

/* ----------------------------------------------------------------- tensor ---- */

#define QT_MAX_DIMS 4

typedef struct qt_tensor {
    void *data;           /* (numel) elements of `dtype`, row-major */
    float *grad;          /* (numel) f32, NULL until backward needs it or if no grad */
    int64_t shape[QT_MAX_DIMS];
    int ndim;             /* 0..4; 0 = scalar with one element */
    qt_dtype dtype;
    qt_device device;
    bool requires_grad;
    bool is_param;        /* grad lives in a qt_paramset and accumulates across backward */
    int32_t node;         /* index of the tape node that produced it, -1 for a leaf */
    const char *name;     /* parameters: the checkpoint name; may be NULL otherwise */
} qt_tensor;

int64_t qt_numel(const qt_tensor *t);
/* Dimension d, negative counts from the end (-1 = last). */
int64_t qt_dim(const qt_tensor *t, int d);
bool qt_same_shape(const qt_tensor *a, const qt_tensor *b);
/* "[2, 3, 4]" into buf; returns buf. */
const char *qt_shape_str(const qt_tensor *t, char *buf, size_t n);

/* ---------------------------------------------------------------- context ---- */

/* A context holds one step's arena (activations, their grads, scratch), the tape, the
 * grad mode and the sticky status. One context per thread of work. */
typedef struct qt_ctx qt_ctx;

qt_ctx *qt_ctx_new(void);
void qt_ctx_free(qt_ctx *ctx);
/* Forgets the tape and every arena tensor; keeps the arena's memory (consolidated into
 * one chunk of the high-water size, so a steady loop allocates nothing). Clears the
 * sticky status. Parameters are untouched. */
void qt_ctx_reset(qt_ctx *ctx);
/* Names the current step of the context: a value unique in the process, new at
 * qt_ctx_new and at every reset. An arena tensor pointer is only meaningful with the
 * generation it was made in (the next step, or a new context at the same address, may
 * put another tensor there). For caches kept across ops by code above the engine. */
uint64_t qt_ctx_generation(const qt_ctx *ctx);
/* QT_OK, or the first error since the last reset (message in qt_ctx_error). */
qt_status qt_ctx_status(const qt_ctx *ctx);
const char *qt_ctx_error(const qt_ctx *ctx);
/* Grad mode: when off, ops record nothing (evaluation). Returns the previous mode. */
bool qt_ctx_set_grad_enabled(qt_ctx *ctx, bool enabled);
/* Called by backward once a parameter's grad is final for this backward pass: after
 * the earliest-recorded op that reads it has run its backward (so later ops, run first,
 * have all contributed). Data-parallel training starts moving a bucket of grads while
 * the rest of backward still runs. A non-OK return stops the backward with that status.
 * On a device the grad is final in stream order (kernels queued, not finished). NULL
 * clears; the hook stays set across resets until cleared. */
typedef qt_status (*qt_grad_hook)(void *user, qt_tensor *param);
void qt_ctx_set_grad_hook(qt_ctx *ctx, qt_grad_hook fn, void *user);
bool qt_ctx_grad_enabled(const qt_ctx *ctx);
/* Number of recorded tape nodes (tests and diagnostics). */
int qt_ctx_tape_len(const qt_ctx *ctx);
/* Bytes the arena holds now, and its high-water mark. */
size_t qt_ctx_arena_bytes(const qt_ctx *ctx);
size_t qt_ctx_arena_peak(const qt_ctx *ctx);
/* The same for a device's arena (the CPU's is the one above). */
size_t qt_ctx_arena_peak_on(const qt_ctx *ctx, qt_device dev);

/* Fails the context from code built on the engine (a layer that finds bad shapes):
 * the first failure wins and sticks until reset; also sets the thread's message.
 * Returns NULL so a constructor can `return QT_CTX_FAIL(...)`. */
qt_tensor *qt_ctx_fail(qt_ctx *ctx, qt_status s, const char *file, int line,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define QT_CTX_FAIL(ctx, s, ...) qt_ctx_fail((ctx), (s), __FILE__, __LINE__, __VA_ARGS__)

/* ---------------------------------------------------------------- devices ---- */

/* Whether tensors of a device kind can be made: always for CPU; CUDA once qt_cuda_init
 * (cuda/qt_cuda.h) has registered its backend. */
bool qt_device_available(qt_device_kind kind);
const char *qt_device_name(qt_device dev); /* "cpu", "cuda" */
/* Where qt_tensor_new and the tensors made from host data go (CPU by default). Ops put
 * their outputs on their inputs' device, whatever this says. */
void qt_ctx_set_device(qt_ctx *ctx, qt_device dev);
qt_device qt_ctx_device(const qt_ctx *ctx);
/* The dtype layers compute activations in (f32 by default; bf16 on CUDA): read by the
 * model code, which casts its inputs and f32 weights to it. The engine itself never
 * converts silently. */
void qt_ctx_set_compute_dtype(qt_ctx *ctx, qt_dtype dtype);
qt_dtype qt_ctx_compute_dtype(const qt_ctx *ctx);
/* Copies bytes between any two places (host<->device, device<->device). */
qt_status qt_device_copy(qt_device dst_dev, void *dst, qt_device src_dev, const void *src,
                         size_t bytes);
/* Long-lived device memory outside any arena (optimizer state); NULL on failure with the
 * thread error set. On the CPU these are malloc/free. */
void *qt_device_alloc(qt_device dev, size_t bytes);
void qt_device_free(qt_device dev, void *p);
/* Waits for the device's queued work; reports an asynchronous kernel error. */
qt_status qt_device_sync(qt_device dev);
/* Copies a tensor's values (numel elements of its dtype) / its f32 grad to host memory. */
qt_status qt_tensor_read(const qt_tensor *t, void *dst);
qt_status qt_tensor_read_grad(const qt_tensor *t, float *dst);
/* A copy of t on dev, in the arena (not recorded: no grad flows through it). */
qt_tensor *qt_tensor_to(qt_ctx *ctx, const qt_tensor *t, qt_device dev);

/* Arena tensors (freed by qt_ctx_reset). shape has `ndim` entries. NULL on error. */
qt_tensor *qt_tensor_new(qt_ctx *ctx, qt_dtype dtype, int ndim, const int64_t *shape);
qt_tensor *qt_tensor_zeros(qt_ctx *ctx, qt_dtype dtype, int ndim, const int64_t *shape);
/* Copies `data` (numel elements of dtype). */
qt_tensor *qt_tensor_from(qt_ctx *ctx, qt_dtype dtype, int ndim, const int64_t *shape,
                          const void *data);
/* Scratch memory from the arena, 64-byte aligned. Sets the context error on failure. */
void *qt_ctx_alloc(qt_ctx *ctx, size_t bytes);

/* ------------------------------------------------------------- parameters ---- */

/* All parameters of a model in one flat f32 buffer, their grads in another, so the
 * optimizer and the gradient all-reduce are single passes over single buffers. */
enum {
    QT_PARAM_NO_DECAY = 1 << 0, /* norms, biases: AdamW skips weight decay */
    QT_PARAM_FROZEN = 1 << 1,   /* no grad slot, never updated */
};

typedef struct qt_paramset {
    qt_tensor **params; /* (n) in registration order */
    uint32_t *flags;    /* (n) QT_PARAM_* */
    size_t *offset;     /* (n) element offset of each param in `data` */
    size_t *goffset;    /* (n) element offset in `grad`, (size_t)-1 when frozen */
    int n, cap;
    float *data;        /* (n_total) all values */
    float *grad;        /* (n_grad) grads of the non-frozen params */
    size_t n_total, n_grad;
    bool allocated;
    qt_device device;   /* where the parameters live now (qt_paramset_to) */
    float *ddata;       /* (n_total) on `device`, NULL on the CPU */
    float *dgrad;       /* (n_grad) on `device`, NULL on the CPU */
} qt_paramset;

void qt_paramset_init(qt_paramset *ps);
void qt_paramset_free(qt_paramset *ps);
/* Declares a parameter; its data pointer is set by qt_paramset_alloc. The name is
 * copied. Returns NULL (and sets the thread error) on failure or after alloc. */
qt_tensor *qt_paramset_add(qt_paramset *ps, const char *name, int ndim,
                           const int64_t *shape, uint32_t flags);
/* Allocates the flat buffers (values zeroed) and points every parameter into them. */
qt_status qt_paramset_alloc(qt_paramset *ps);
qt_tensor *qt_paramset_find(const qt_paramset *ps, const char *name);
/* Moves the values and grads to dev: every parameter's data/grad then points into the
 * device copies (ddata, dgrad); `data` and `grad` stay the host buffers, refreshed from
 * the device by qt_paramset_pull and when moving back to the CPU. */
qt_status qt_paramset_to(qt_paramset *ps, qt_device dev);
/* Copies the device values into ps->data (checkpoints and exports read the host). */
qt_status qt_paramset_pull(qt_paramset *ps);
/* Gives the host memory of parameter t back to the OS (madvise MADV_DONTNEED on the
 * whole pages inside its range): its values read as 0 afterwards until written again,
 * which brings the memory back. For weights held elsewhere meanwhile (QLoRA's NF4 base);
 * host parameters only. */
qt_status qt_paramset_release(qt_paramset *ps, const qt_tensor *t);
void qt_paramset_zero_grad(qt_paramset *ps);

/* ---------------------------------------------------------------- autograd ---- */

/* Backward from a one-element loss: d loss / d loss = 1. */
qt_status qt_backward(qt_ctx *ctx, qt_tensor *loss);
/* Backward from any recorded tensor with an upstream gradient dy (numel floats), as
 * torch's y.backward(dy). */
qt_status qt_backward_from(qt_ctx *ctx, qt_tensor *y, const float *dy);

/* -------------------------------------------------------------------- ops ---- */

/* Every op below: inputs f32 on the same device unless stated; returns a new arena
 * tensor or NULL (sticky context error). */

/* C = op(A) op(B), op = transpose when ta/tb. A (..., M, K) [ta: (..., K, M)],
 * B (..., K, N) [tb: (..., N, K)] with the same leading dims, or B 2-D and shared by
 * every batch (a Linear weight). C (..., M, N). Through cblas_sgemm. */
qt_tensor *qt_matmul(qt_ctx *ctx, qt_tensor *a, qt_tensor *b, bool ta, bool tb);

/* Elementwise with broadcasting over leading dims: the smaller operand's shape must be
 * a suffix of the larger's (a bias (N) onto (B, T, N)); the result has the larger. */
qt_tensor *qt_add(qt_ctx *ctx, qt_tensor *a, qt_tensor *b);
qt_tensor *qt_sub(qt_ctx *ctx, qt_tensor *a, qt_tensor *b);
qt_tensor *qt_mul(qt_ctx *ctx, qt_tensor *a, qt_tensor *b);
qt_tensor *qt_div(qt_ctx *ctx, qt_tensor *a, qt_tensor *b);
qt_tensor *qt_scale(qt_ctx *ctx, qt_tensor *x, float s);

/* Reductions over one axis (negative counts from the end), which is removed from the
 * shape; QT_AXIS_ALL reduces everything to a scalar. */
#define QT_AXIS_ALL 127
qt_tensor *qt_sum(qt_ctx *ctx, qt_tensor *x, int axis);
qt_tensor *qt_mean(qt_ctx *ctx, qt_tensor *x, int axis);

/* Same data, new shape (same numel); one entry may be -1 (inferred). No copy. */
qt_tensor *qt_reshape(qt_ctx *ctx, qt_tensor *x, int ndim, const int64_t *shape);
/* Output dim i is input dim perm[i]; materialised contiguous. */
qt_tensor *qt_permute(qt_ctx *ctx, qt_tensor *x, const int *perm);
qt_tensor *qt_transpose(qt_ctx *ctx, qt_tensor *x, int d0, int d1);

/* weight (V, D) f32, ids i32 of any shape (<= 3 dims) -> (ids..., D). Backward
 * scatter-adds into weight's grad. An id outside [0, V) is an error. */
qt_tensor *qt_embedding(qt_ctx *ctx, qt_tensor *weight, qt_tensor *ids);

/* Over the last dim D. weight (D). RMSNorm: x / sqrt(mean(x^2) + eps) * w (Llama).
 * LayerNorm: (x - mean) / sqrt(var + eps) * w + b, biased variance; bias may be NULL. */
qt_tensor *qt_rmsnorm(qt_ctx *ctx, qt_tensor *x, qt_tensor *weight, float eps);
qt_tensor *qt_layernorm(qt_ctx *ctx, qt_tensor *x, qt_tensor *weight, qt_tensor *bias,
                        float eps);

/* Softmax over the last dim. */
qt_tensor *qt_softmax(qt_ctx *ctx, qt_tensor *x);

/* Causal scaled-dot-product attention with grouped-query heads, fused (softmax never
 * materialised beyond one query block; backward recomputes it from the saved
 * log-sum-exp). q (B, H, T, D); k, v (B, Hkv, Tk, D) with H % Hkv == 0 and Tk >= T:
 * query i sees keys j <= i + (Tk - T). scale <= 0 means 1/sqrt(D). -> (B, H, T, D). */
qt_tensor *qt_attention(qt_ctx *ctx, qt_tensor *q, qt_tensor *k, qt_tensor *v, float scale);

/* Rotary embedding, HF/Llama rotate-half convention, on x (..., T, D), D even:
 * position of row t is pos0 + t; inv_freq[i] = theta^(-2i/D). */
qt_tensor *qt_rope(qt_ctx *ctx, qt_tensor *x, float theta, int64_t pos0);

qt_tensor *qt_silu(qt_ctx *ctx, qt_tensor *x);
/* GELU, tanh approximation (GPT-2's "gelu_new", torch approximate="tanh"). */
qt_tensor *qt_gelu(qt_ctx *ctx, qt_tensor *x);
/* silu(gate) * up, same shapes. */
qt_tensor *qt_swiglu(qt_ctx *ctx, qt_tensor *gate, qt_tensor *up);
/* Inverted dropout: zero with probability p, scale kept values by 1/(1-p). The mask
 * is a pure function of (seed, element index): the same on any thread count, and
 * recomputed in backward instead of stored. p == 0 returns x unchanged. */
qt_tensor *qt_dropout(qt_ctx *ctx, qt_tensor *x, float p, uint64_t seed);

/* Mean cross-entropy of logits (..., V) against i32 targets (...), fused with the
 * log-softmax; targets equal to ignore_index are left out of the mean. -> scalar.
 * If every target is ignored the loss is 0 (torch returns NaN). */
qt_tensor *qt_cross_entropy(qt_ctx *ctx, qt_tensor *logits, qt_tensor *targets,
                            int32_t ignore_index);

/* x converted to dtype (f32 <-> bf16, round to nearest even); grad flows back as f32.
 * Returns x itself when it already has that dtype. */
qt_tensor *qt_cast(qt_ctx *ctx, qt_tensor *x, qt_dtype dtype);

/* Ops defined above the engine (qat/'s fake-quant, lora/'s NF4 matmul), as
 * torch.autograd.Function. forward writes out (f32, allocated with the shape given, on
 * in[0]'s device) from the inputs; backward ACCUMULATES d loss / d in[i] into in[i]->grad
 * for every input whose grad is non-NULL, from out->grad. Both see the same inputs and
 * `state`, which must stay valid until backward has run (memory from qt_ctx_alloc is
 * right). Errors: return a status (with QT_ERROR's message); the context fails. */
typedef struct qt_custom_fn {
    const char *name;
    qt_status (*forward)(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                         void *state);
    qt_status (*backward)(qt_ctx *ctx, qt_tensor *const *in, int n_in, qt_tensor *out,
                          void *state);
} qt_custom_fn;
/* 1..4 inputs (f32; bf16 too on a GPU, where the caller's functions must handle it);
 * the output is f32. On a GPU the functions get device tensors and launch their own
 * kernels. */
qt_tensor *qt_custom(qt_ctx *ctx, const qt_custom_fn *fn, int n_in, qt_tensor *const *in,
                     int ndim, const int64_t *shape, void *state);

/* ------------------------------------------------------------- op registry ---- */

typedef enum {
    QT_OP_MATMUL,
    QT_OP_ADD,
    QT_OP_SUB,
    QT_OP_MUL,
    QT_OP_DIV,
    QT_OP_SCALE,
    QT_OP_SUM,
    QT_OP_MEAN,
    QT_OP_RESHAPE,
    QT_OP_PERMUTE,
    QT_OP_EMBEDDING,
    QT_OP_RMSNORM,
    QT_OP_LAYERNORM,
    QT_OP_SOFTMAX,
    QT_OP_ATTENTION,
    QT_OP_ROPE,
    QT_OP_SILU,
    QT_OP_GELU,
    QT_OP_SWIGLU,
    QT_OP_DROPOUT,
    QT_OP_CROSS_ENTROPY,
    QT_OP_CUSTOM, /* qt_custom: forward and backward supplied by the caller */
    QT_OP_CAST,
    QT_OP_COUNT
} qt_op;

/* Name of an op ("matmul"); whether it has a backward on `dev`; whether it is marked
 * non-differentiable. A test walks every op through these. */
const char *qt_op_name(qt_op op);
bool qt_op_has_backward(qt_op op, qt_device_kind dev);
bool qt_op_has_forward(qt_op op, qt_device_kind dev);
bool qt_op_is_nondifferentiable(qt_op op);

/* ------------------------------------------------------------------ misc ---- */

/* A simple op profiler for finding where a step's time goes: when enabled, every op's
 * forward and backward kernel runs between two device synchronisations and its wall
 * time is added to the op's row (this serialises the GPU: for profiling only, never
 * for timing). qt_profile_report prints the rows, slowest first, per step. */
void qt_profile_enable(bool on);
void qt_profile_reset(void);
void qt_profile_report(FILE *f, int steps);

/* Deterministic counter-based random numbers (splitmix64 of seed and index): the same
 * values on any thread count. Uniform in [0, 1) and standard normal. */
uint64_t qt_rand_u64(uint64_t seed, uint64_t index);
float qt_rand_uniform(uint64_t seed, uint64_t index);
float qt_rand_normal(uint64_t seed, uint64_t index);
/* The OpenBLAS kernel family in use ("SkylakeX", "Haswell", "Prescott", ...). */
const char *qt_blas_corename(void);
/* OpenBLAS 0.3.21 (Debian 12) does not know recent Xeons and falls back to its SSE3
 * "Prescott" kernels, 2-3x slower than the AVX2/AVX-512 ones the CPU can run. Its kernel
 * family is fixed when the library loads, from OPENBLAS_CORETYPE, so only a program's
 * start can fix it: this returns the family to ask for ("SkylakeX" or "Haswell") when
 * OPENBLAS_CORETYPE is unset and the fallback was taken on a CPU that can do better, or
 * NULL when nothing should change (an explicit OPENBLAS_CORETYPE is always kept). */
const char *qt_blas_better_coretype(void);
/* For a program's main() only: when qt_blas_better_coretype() names a family, restart
 * the program (execv of /proc/self/exe with the same argv) with OPENBLAS_CORETYPE set.
 * Returns when nothing needs to change or the restart is impossible. */
void qt_blas_reexec_if_slow(char **argv);
/* Threads the CPU kernels use (OpenMP and OpenBLAS together). */
void qt_set_num_threads(int n);
int qt_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* QT_AUTOGRAD_H */
