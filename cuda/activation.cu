/*
 * activation.cu - SiLU, GELU (tanh approximation), SwiGLU and dropout on CUDA, the same
 * maths as the CPU reference (autograd/ops_activation.c):
 *   SiLU:   x * sigmoid(x)                       d/dx = s (1 + x (1 - s))
 *   GELU:   0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi)
 *   SwiGLU: silu(gate) * up                      (in[0] gate, in[1] up)
 *   Dropout: y = u >= p ? x / (1 - p) : 0 with u = qt_rand_uniform(seed, i); attrs f[0]
 *           p, u seed. The mask is BIT-IDENTICAL to the CPU's: rand_u64/rand_uniform
 *           below repeat autograd/rand.c's integer arithmetic (splitmix64); the element
 *           index is the flat index into the tensor, as on the CPU.
 * Inputs f32 or bf16 (gate and up of SwiGLU independently); the output has in[0]'s
 * dtype. Device expf/tanhf differ from the CPU's qt_expf/tanhf by an ulp or two.
 * Grid-stride elementwise kernels; backward accumulates into the f32 grads.
 */
#include "common.cuh"

#define ACT_THREADS 256
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

__device__ __forceinline__ float act_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* autograd/rand.c, verbatim arithmetic */
__device__ __forceinline__ uint64_t act_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
__device__ __forceinline__ uint64_t act_rand_u64(uint64_t seed, uint64_t index) {
    return act_mix64(act_mix64(seed + 0x9e3779b97f4a7c15ULL) + index * 0x9e3779b97f4a7c15ULL);
}
__device__ __forceinline__ float act_rand_uniform(uint64_t seed, uint64_t index) {
    return (float)(act_rand_u64(seed, index) >> 40) * (1.0f / 16777216.0f); /* 24 bits */
}

/* ---- silu ---- */
template <typename T>
__global__ void silu_fwd_kernel(const T *x, T *y, int64_t N) {
    QT_GRID_LOOP(i, N) {
        float v = qt_ld(x, i);
        qt_st(y, i, v * act_sigmoid(v));
    }
}
template <typename T>
__global__ void silu_bwd_kernel(const T *x, const float *dy, float *dx, int64_t N) {
    QT_GRID_LOOP(i, N) {
        float v = qt_ld(x, i), s = act_sigmoid(v);
        dx[i] += dy[i] * s * (1.0f + v * (1.0f - s));
    }
}

static qt_status silu_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    if (N == 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T, {
        silu_fwd_kernel<T><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const T *)n->in[0]->data, (T *)n->out->data, N);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}
static qt_status silu_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    int64_t N = qt_numel(n->out);
    if (!dx || N == 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T, {
        silu_bwd_kernel<T><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const T *)n->in[0]->data, n->out->grad, dx, N);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

/* ---- gelu (tanh) ---- */
template <typename T>
__global__ void gelu_fwd_kernel(const T *x, T *y, int64_t N) {
    QT_GRID_LOOP(i, N) {
        float v = qt_ld(x, i);
        qt_st(y, i, 0.5f * v * (1.0f + tanhf(GELU_K * (v + GELU_C * v * v * v))));
    }
}
template <typename T>
__global__ void gelu_bwd_kernel(const T *x, const float *dy, float *dx, int64_t N) {
    QT_GRID_LOOP(i, N) {
        float v = qt_ld(x, i);
        float t = tanhf(GELU_K * (v + GELU_C * v * v * v));
        float dt = GELU_K * (1.0f + 3.0f * GELU_C * v * v) * (1.0f - t * t);
        dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
}

static qt_status gelu_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    if (N == 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T, {
        gelu_fwd_kernel<T><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const T *)n->in[0]->data, (T *)n->out->data, N);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}
static qt_status gelu_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    int64_t N = qt_numel(n->out);
    if (!dx || N == 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T, {
        gelu_bwd_kernel<T><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const T *)n->in[0]->data, n->out->grad, dx, N);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}

/* ---- swiglu: gate G, up U; output has gate's dtype ---- */
template <typename G, typename U>
__global__ void swiglu_fwd_kernel(const G *g, const U *u, G *y, int64_t N) {
    QT_GRID_LOOP(i, N) {
        float gv = qt_ld(g, i);
        qt_st(y, i, gv * act_sigmoid(gv) * qt_ld(u, i));
    }
}
/* dg, du may each be NULL */
template <typename G, typename U>
__global__ void swiglu_bwd_kernel(const G *g, const U *u, const float *dy, float *dg,
                                  float *du, int64_t N) {
    QT_GRID_LOOP(i, N) {
        float gv = qt_ld(g, i), uv = qt_ld(u, i), s = act_sigmoid(gv);
        if (dg) dg[i] += dy[i] * uv * s * (1.0f + gv * (1.0f - s));
        if (du) du[i] += dy[i] * gv * s;
    }
}

static qt_status swiglu_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    if (N == 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, G, QT_DISPATCH_FLOAT(n->in[1]->dtype, U, {
        swiglu_fwd_kernel<G, U><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const G *)n->in[0]->data, (const U *)n->in[1]->data, (G *)n->out->data, N);
        QT_CUDA_LAUNCHED();
    }));
    return QT_OK;
}
static qt_status swiglu_bwd(qt_ctx *ctx, qt_node *n) {
    float *dg = n->in[0]->grad, *du = n->in[1]->grad;
    int64_t N = qt_numel(n->out);
    if ((!dg && !du) || N == 0) return QT_OK;
    QT_DISPATCH_FLOAT(n->in[0]->dtype, G, QT_DISPATCH_FLOAT(n->in[1]->dtype, U, {
        swiglu_bwd_kernel<G, U><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const G *)n->in[0]->data, (const U *)n->in[1]->data, n->out->grad, dg, du, N);
        QT_CUDA_LAUNCHED();
    }));
    return QT_OK;
}

/* ---- dropout ---- */
template <typename T>
__global__ void dropout_fwd_kernel(const T *x, T *y, int64_t N, float p, float keep,
                                   uint64_t seed) {
    QT_GRID_LOOP(i, N) {
        qt_st(y, i, act_rand_uniform(seed, (uint64_t)i) >= p ? qt_ld(x, i) * keep : 0.0f);
    }
}
__global__ void dropout_bwd_kernel(const float *dy, float *dx, int64_t N, float p, float keep,
                                   uint64_t seed) {
    QT_GRID_LOOP(i, N) {
        if (act_rand_uniform(seed, (uint64_t)i) >= p) dx[i] += dy[i] * keep;
    }
}

static qt_status dropout_fwd(qt_ctx *ctx, qt_node *n) {
    int64_t N = qt_numel(n->out);
    if (N == 0) return QT_OK;
    float p = n->a.dropout.p, keep = 1.0f / (1.0f - p);
    QT_DISPATCH_FLOAT(n->in[0]->dtype, T, {
        dropout_fwd_kernel<T><<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(
            (const T *)n->in[0]->data, (T *)n->out->data, N, p, keep, n->a.dropout.seed);
        QT_CUDA_LAUNCHED();
    });
    return QT_OK;
}
static qt_status dropout_bwd(qt_ctx *ctx, qt_node *n) {
    float *dx = n->in[0]->grad;
    int64_t N = qt_numel(n->out);
    if (!dx || N == 0) return QT_OK;
    float p = n->a.dropout.p, keep = 1.0f / (1.0f - p);
    dropout_bwd_kernel<<<qt_blocks(N, ACT_THREADS), ACT_THREADS>>>(n->out->grad, dx, N, p,
                                                                   keep, n->a.dropout.seed);
    QT_CUDA_LAUNCHED();
    return QT_OK;
}

void qt_cuda_register_activation(qt_backend *be) {
    be->forward[QT_OP_SILU] = silu_fwd;
    be->backward[QT_OP_SILU] = silu_bwd;
    be->forward[QT_OP_GELU] = gelu_fwd;
    be->backward[QT_OP_GELU] = gelu_bwd;
    be->forward[QT_OP_SWIGLU] = swiglu_fwd;
    be->backward[QT_OP_SWIGLU] = swiglu_bwd;
    be->forward[QT_OP_DROPOUT] = dropout_fwd;
    be->backward[QT_OP_DROPOUT] = dropout_bwd;
}
