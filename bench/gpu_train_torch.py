"""gpu_train_torch.py - the PyTorch eager peer of bench/gpu_train.c: the same model
shapes (GPT-2 124M, SmolLM2 135M), the same batch, the same step (forward, backward,
global grad norm, AdamW), the same precision mode (f32 master weights and AdamW state,
bf16 autocast for the compute), timed the same way (CUDA-synchronised wall clock over
`steps` steps after `warmup`). Attention is torch's fused scaled_dot_product_attention
(causal), which picks its flash kernel; AdamW is torch's default (foreach).

usage: python3 gpu_train_torch.py --model gpt2|smollm2 [--batch B] [--seq T] [--steps S]
Prints "RESULT model=... mode=torch ms_step=... tok_s=... mfu=..." like gpu_train.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class GPT2Block(nn.Module):
    def __init__(s, C, H):
        super().__init__()
        s.H = H
        s.ln1, s.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        s.attn, s.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        s.fc, s.fc_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(s, x):
        B, T, C = x.shape
        q, k, v = s.attn(s.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, s.H, C // s.H).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + s.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + s.fc_proj(F.gelu(s.fc(s.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(s, V=50257, P=1024, C=768, L=12, H=12):
        super().__init__()
        s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
        s.blocks = nn.ModuleList(GPT2Block(C, H) for _ in range(L))
        s.lnf = nn.LayerNorm(C)
        s.L, s.C = L, C

    def forward(s, ids):
        x = s.wte(ids) + s.wpe(torch.arange(ids.shape[1], device=ids.device))
        for b in s.blocks:
            x = b(x)
        return s.lnf(x) @ s.wte.weight.t()  # tied head, as GPT-2


def rope(x, theta):
    T, D = x.shape[-2], x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
    ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], -1) * sin.to(x.dtype)


class LlamaBlock(nn.Module):
    def __init__(s, C, H, Hkv, F_, theta):
        super().__init__()
        s.H, s.Hkv, s.hd, s.theta = H, Hkv, C // H, theta
        s.n1, s.n2 = nn.RMSNorm(C, eps=1e-5), nn.RMSNorm(C, eps=1e-5)
        s.q = nn.Linear(C, C, bias=False)
        s.k = nn.Linear(C, Hkv * s.hd, bias=False)
        s.v = nn.Linear(C, Hkv * s.hd, bias=False)
        s.o = nn.Linear(C, C, bias=False)
        s.gate, s.up = nn.Linear(C, F_, bias=False), nn.Linear(C, F_, bias=False)
        s.down = nn.Linear(F_, C, bias=False)

    def forward(s, x):
        B, T, C = x.shape
        h = s.n1(x)
        q = s.q(h).view(B, T, s.H, s.hd).transpose(1, 2)
        k = s.k(h).view(B, T, s.Hkv, s.hd).transpose(1, 2)
        v = s.v(h).view(B, T, s.Hkv, s.hd).transpose(1, 2)
        q, k = rope(q, s.theta), rope(k, s.theta)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + s.o(a.transpose(1, 2).reshape(B, T, C))
        h = s.n2(x)
        return x + s.down(F.silu(s.gate(h)) * s.up(h))


class Llama(nn.Module):
    def __init__(s, V=49152, C=576, L=30, H=9, Hkv=3, F_=1536, theta=100000.0):
        super().__init__()
        s.embed = nn.Embedding(V, C)
        s.blocks = nn.ModuleList(LlamaBlock(C, H, Hkv, F_, theta) for _ in range(L))
        s.norm = nn.RMSNorm(C, eps=1e-5)
        s.L, s.C = L, C

    def forward(s, ids):
        x = s.embed(ids)
        for b in s.blocks:
            x = b(x)
        return s.norm(x) @ s.embed.weight.t()  # tied, as SmolLM2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    a = ap.parse_args()
    torch.manual_seed(1)
    dev = "cuda"
    m = (GPT2() if a.model == "gpt2" else Llama()).to(dev)
    for mod in m.modules():  # GPT-2's init scale (gpu_train.c's models use it too)
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            nn.init.normal_(mod.weight, std=0.02)
            if getattr(mod, "bias", None) is not None:
                nn.init.zeros_(mod.bias)
    V = m.wte.weight.shape[0] if a.model == "gpt2" else m.embed.weight.shape[0]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    ids = torch.randint(0, V, (a.batch, a.seq), device=dev)
    tgt = torch.randint(0, V, (a.batch, a.seq), device=dev)
    for s in range(a.warmup + a.steps):
        if s == a.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = m(ids)
        loss = F.cross_entropy(logits.float().view(-1, V), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1e9)  # the norm pass, no clipping
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    el = time.perf_counter() - t0
    N = sum(p.numel() for p in m.parameters())
    tok_s = a.batch * a.seq * a.steps / el
    mfu = (6 * N + 6 * m.L * m.C * a.seq) * tok_s / (a.peak_tflops * 1e12)
    print(f"gpu_train_torch: {a.model}, {N / 1e6:.1f}M params, batch {a.batch} x {a.seq}, "
          f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, "
          f"last loss {loss.item():.4f}")
    print(f"RESULT model={a.model} mode=torch ms_step={1e3 * el / a.steps:.2f} "
          f"tok_s={tok_s:.0f} mfu={mfu:.4f} loss={loss.item():.4f}")


if __name__ == "__main__":
    main()
