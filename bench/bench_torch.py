#!/usr/bin/env python3
"""bench_torch.py - the PyTorch peer of bench_ops.c: the SAME cases, shapes and method.

Eager fp32 on CPU, torch.set_num_threads(N). Inputs are built once (float inputs with
requires_grad=True); one repetition is { clear the inputs' grads (x.grad = None);
forward; y.backward(dy) with a fixed random dy (1 for a scalar loss) }, timed with
time.perf_counter; W warm-up repetitions are dropped and the median of R is reported.

What torch runs for each case (what a PyTorch user would write):
  linear_*         F.linear(x, w) (no bias)              -> MKL sgemm
  bmm_*            torch.matmul(a, b)                     -> MKL batched sgemm
  attention_*      F.scaled_dot_product_attention(q, k, v, is_causal=True,
                   enable_gqa=True) where the installed torch has enable_gqa (>= 2.5),
                   else k/v repeat_interleave'd to the query heads first; --json prints
                   which, and the backward node torch recorded (its flash CPU kernel
                   or the math fallback).
  rmsnorm_*        F.rms_norm (torch >= 2.4), else x * rsqrt(mean(x^2) + eps) * w
  swiglu_*         F.silu(gate) * up
  cross_entropy_*  F.cross_entropy(logits, targets) with int64 targets
  llama_block_768  pre-norm Llama block: rms_norm, q/k/v/o linears, HF rotate-half RoPE,
                   SDPA as above, residual adds, SwiGLU MLP.

Usage: bench_torch.py [--threads N] [--reps R] [--warmup W] [--case SUBSTR] [--json]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

T, DIM, FFN, NH, NKV, HD, VOCAB = 512, 768, 3072, 12, 4, 64, 32000
NORM_EPS = 1e-5
ROPE_THETA = 10000.0

def _has_gqa():
    """Whether SDPA takes enable_gqa (torch >= 2.5): ask it, on a tiny input."""
    q, kv = torch.zeros(1, 2, 2, 4), torch.zeros(1, 1, 2, 4)
    try:
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


HAS_GQA = _has_gqa()
HAS_RMS_NORM = hasattr(F, "rms_norm")


def sdpa(q, k, v):
    if HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    group = q.shape[1] // k.shape[1]
    if group > 1:  # HF repeat_kv order: query head h reads kv head h // group
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def rms_norm(x, w):
    if HAS_RMS_NORM:
        return F.rms_norm(x, (x.shape[-1],), w, NORM_EPS)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * w


def rope(x):
    """HF Llama apply_rotary_pos_emb (rotate-half), positions 0..T-1, x (B, H, T, D)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = torch.outer(torch.arange(x.shape[-2], dtype=torch.float32), inv_freq)
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def block(x, attn_norm, wq, wk, wv, wo, mlp_norm, w_gate, w_up, w_down):
    h = rms_norm(x, attn_norm)
    q = F.linear(h, wq).view(1, T, NH, HD).transpose(1, 2)
    k = F.linear(h, wk).view(1, T, NKV, HD).transpose(1, 2)
    v = F.linear(h, wv).view(1, T, NKV, HD).transpose(1, 2)
    a = sdpa(rope(q), rope(k), v).transpose(1, 2).reshape(1, T, DIM)
    x2 = x + F.linear(a, wo)
    h2 = rms_norm(x2, mlp_norm)
    return x2 + F.linear(F.silu(F.linear(h2, w_gate)) * F.linear(h2, w_up), w_down)


# name, forward, inputs as (name, shape, std) with std 0 meaning int64 targets in [0, VOCAB)
CASES = [
    ("linear_768x3072", lambda x, w: F.linear(x, w),
     [("x", (T, DIM), 1.0), ("w", (FFN, DIM), 0.036)]),
    ("linear_3072x768", lambda x, w: F.linear(x, w),
     [("x", (T, FFN), 1.0), ("w", (DIM, FFN), 0.018)]),
    ("bmm_8x512x64x512", torch.matmul,
     [("a", (8, T, HD), 1.0), ("b", (8, HD, T), 1.0)]),
    ("attention_gqa_12q4kv", sdpa,
     [("q", (1, NH, T, HD), 1.0), ("k", (1, NKV, T, HD), 1.0), ("v", (1, NKV, T, HD), 1.0)]),
    ("attention_mha_12h", sdpa,
     [("q", (1, NH, T, HD), 1.0), ("k", (1, NH, T, HD), 1.0), ("v", (1, NH, T, HD), 1.0)]),
    ("rmsnorm_512x768", rms_norm, [("x", (T, DIM), 1.0), ("w", (DIM,), 1.0)]),
    ("swiglu_512x3072", lambda g, u: F.silu(g) * u,
     [("gate", (T, FFN), 1.0), ("up", (T, FFN), 1.0)]),
    ("cross_entropy_512x32000", F.cross_entropy,
     [("logits", (T, VOCAB), 1.0), ("targets", (T,), 0.0)]),
    ("llama_block_768", block,
     [("x", (1, T, DIM), 1.0), ("attn_norm", (DIM,), 1.0),
      ("wq", (NH * HD, DIM), 0.036), ("wk", (NKV * HD, DIM), 0.036),
      ("wv", (NKV * HD, DIM), 0.036), ("wo", (DIM, NH * HD), 0.036),
      ("mlp_norm", (DIM,), 1.0), ("w_gate", (FFN, DIM), 0.036),
      ("w_up", (FFN, DIM), 0.036), ("w_down", (DIM, FFN), 0.018)]),
]


def make_inputs(specs, gen):
    ins = []
    for _, shape, std in specs:
        if std > 0:
            ins.append((torch.randn(shape, generator=gen) * std).requires_grad_(True))
        else:
            ins.append(torch.randint(0, VOCAB, shape, generator=gen, dtype=torch.int64))
    return ins


def run_case(fwd, specs, seed, warmup, reps):
    gen = torch.Generator().manual_seed(seed)
    ins = make_inputs(specs, gen)
    floats = [t for t in ins if t.is_floating_point()]
    dy = None
    tot, fw, bw = [], [], []
    node = ""
    for r in range(warmup + reps):
        t0 = time.perf_counter()
        for t in floats:
            t.grad = None
        y = fwd(*ins)
        t1 = time.perf_counter()
        if dy is None:  # the fixed upstream gradient, made outside any timing
            dy = torch.ones_like(y) if y.numel() == 1 else torch.randn(y.shape, generator=gen)
            node = type(y.grad_fn).__name__
            t0 += time.perf_counter() - t1
            t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        if r >= warmup:
            tot.append((t2 - t0) * 1e3)
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
    for (name, _, _), t in zip(specs, ins):
        if t.is_floating_point() and (t.grad is None or not torch.isfinite(t.grad).all()):
            sys.exit(f"{name}: gradient missing or not finite")
    return {"ms": statistics.median(tot), "min_ms": min(tot), "fwd_ms": statistics.median(fw),
            "bwd_ms": statistics.median(bw), "grad_fn": node}


def blas_summary():
    """The BLAS torch calls: the BLAS_INFO setting and the library line of its config."""
    cfg = torch.__config__.show()
    info = next((p.split("=", 1)[1] for p in cfg.replace(",", "\n").split()
                 if p.startswith("BLAS_INFO=")), "?")
    lib = next((ln.strip(" -") for ln in cfg.splitlines()
                if "Math Kernel Library" in ln or "OpenBLAS" in ln or "BLIS" in ln), "")
    return f"BLAS_INFO={info}" + (f" ({lib})" if lib else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--case", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    attn = ("SDPA is_causal=True enable_gqa=True" if HAS_GQA
            else "SDPA is_causal=True, k/v repeat_interleave")
    meta = {"meta": True, "threads": threads, "reps": a.reps, "warmup": a.warmup,
            "torch": torch.__version__, "blas": blas_summary(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "attention": attn,
            "rmsnorm": "F.rms_norm" if HAS_RMS_NORM else "composite"}
    if a.json:
        print(json.dumps(meta), flush=True)
    else:
        print(f"# threads {threads}, reps {a.reps} (median), warmup {a.warmup}, "
              f"torch {torch.__version__}, {meta['blas']}, attention: {attn}", flush=True)
    ran = 0
    for i, (name, fwd, specs) in enumerate(CASES):
        if a.case and a.case not in name:
            continue
        r = run_case(fwd, specs, 1000 * i, a.warmup, a.reps)
        ran += 1
        if a.json:
            print(json.dumps({"case": name, **{k: (round(v, 4) if isinstance(v, float)
                                                   else v) for k, v in r.items()},
                              "reps": a.reps, "threads": threads}), flush=True)
        else:
            print(f"{name} {r['ms']:.3f}", flush=True)
    if not ran:
        sys.exit(f"bench_torch: no case matches '{a.case}'")


if __name__ == "__main__":
    main()
