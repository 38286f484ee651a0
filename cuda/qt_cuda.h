/*
 * qt_cuda.h - the CUDA backend's C interface (issue 8).
 *
 * qt_cuda_init registers the backend with the engine; from then on tensors can live on
 * QT_DEV_CUDA and every op runs there through the same constructors (qt_matmul, ...).
 * Tensors on the GPU are f32 or bf16; grads are always f32 (the engine's rule). The
 * default GPU training mode is f32 master weights and optimizer state with bf16
 * activations (qt_ctx_set_compute_dtype(ctx, QT_BF16)); matrix products then run on the
 * tensor cores with f32 accumulation.
 *
 * Every CUDA and cuBLAS call is checked: a failure becomes a qt_status with the call's
 * file:line in the thread's message. Kernels launch on the legacy default stream, so
 * work is ordered; host copies synchronise.
 *
 * The flat-buffer helpers below serve the optimizer, gradient clipping and the QAT/QLoRA
 * layers; they take device pointers.
 */
#ifndef QT_CUDA_H
#define QT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "qt_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices visible (0 when there is no driver or no GPU; never fails). */
int qt_cuda_device_count(void);
/* Selects GPU `device`, creates the cuBLAS handle and registers the backend. Fails with
 * QT_EDEVICE (and a message) when there is no such GPU. Idempotent. */
qt_status qt_cuda_init(int device);
/* "NVIDIA H100 80GB HBM3, sm_90, 132 SMs" after init, "" before. */
const char *qt_cuda_device_desc(void);
/* Attention's path: 0 = tensor cores (chunked cuBLAS products, the default), 1 = the
 * fused CUDA-core kernels (least memory). QT_ATTENTION=fused in the environment picks 1.
 * Both save the same log-sum-exp; a node's backward follows its forward's path. */
void qt_cuda_set_attention_impl(int fused);
/* Query rows per chunk of the tensor-core path (0: from a 512 MiB budget for the chunk
 * buffers, the default). Tests set it small to cross chunk edges. */
void qt_cuda_set_attention_chunk(int64_t rows);
/* Device memory in use now (all of this process's and the driver's), bytes. */
size_t qt_cuda_used_bytes(void);

/* One AdamW step on a flat range, the update of optim/adamw.c (torch.optim.AdamW):
 * p *= decay; m += (g - m) b1c; v = v b2 + b2c g^2; p -= step (m / (sqrt(v)/bc2_sqrt + eps)). */
qt_status qt_cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float decay,
                        float b1c, float b2, float b2c, float eps, float step_size,
                        float bc2_sqrt);
/* Sum of squares of x (n floats), accumulated in double, in a fixed order. */
qt_status qt_cuda_sumsq(const float *x, size_t n, double *out);
/* x *= s over n floats. */
qt_status qt_cuda_scale(float *x, size_t n, float s);

#ifdef __cplusplus
}
#endif
#endif /* QT_CUDA_H */
