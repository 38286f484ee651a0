"""PyTorch eager peer of `qtrain train` for bench/train.sh: the same Llama (RMSNorm,
RoPE rotate-half, GQA, SwiGLU, untied head), the same batch of byte tokens, AdamW with
the same hyperparameters, fp32 on CPU with the same thread count. Prints one JSON line:
tokens/s over all steps (first included, as qtrain's log) and peak RSS."""
import argparse, json, math, resource, time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
for k, v in dict(dim=128, layers=4, heads=4, kv_heads=2, ffn=384, vocab=256, seq=128,
                 batch=16, steps=60, threads=2, seed=1337).items():
    ap.add_argument("--" + k.replace("_", "-"), type=int, default=v)
ap.add_argument("--data", required=True)
ap.add_argument("--lr", type=float, default=2e-3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
hd = a.dim // a.heads


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
ang = torch.outer(torch.arange(a.seq).float(), inv)
cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()


def rope(x):
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


P = {"emb": torch.randn(a.vocab, a.dim) * 0.02, "norm": torch.ones(a.dim),
     "head": torch.randn(a.vocab, a.dim) * 0.02}
for l in range(a.layers):
    P.update({f"{l}.n1": torch.ones(a.dim), f"{l}.n2": torch.ones(a.dim),
              f"{l}.q": torch.randn(a.dim, a.dim) * 0.02,
              f"{l}.k": torch.randn(a.kv_heads * hd, a.dim) * 0.02,
              f"{l}.v": torch.randn(a.kv_heads * hd, a.dim) * 0.02,
              f"{l}.o": torch.randn(a.dim, a.dim) * 0.02,
              f"{l}.g": torch.randn(a.ffn, a.dim) * 0.02,
              f"{l}.u": torch.randn(a.ffn, a.dim) * 0.02,
              f"{l}.d": torch.randn(a.dim, a.ffn) * 0.02})
for p in P.values():
    p.requires_grad_(True)
decay = [p for k, p in P.items() if p.dim() == 2]
nodecay = [p for k, p in P.items() if p.dim() == 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                         {"params": nodecay, "weight_decay": 0.0}],
                        lr=a.lr, betas=(0.9, 0.95), eps=1e-8)


def forward(ids):
    B, T = ids.shape
    x = P["emb"][ids]
    for l in range(a.layers):
        h = rms(x, P[f"{l}.n1"])
        q = (h @ P[f"{l}.q"].T).view(B, T, a.heads, hd).transpose(1, 2)
        k = (h @ P[f"{l}.k"].T).view(B, T, a.kv_heads, hd).transpose(1, 2)
        v = (h @ P[f"{l}.v"].T).view(B, T, a.kv_heads, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True,
                                           enable_gqa=True)
        x = x + o.transpose(1, 2).reshape(B, T, a.dim) @ P[f"{l}.o"].T
        h = rms(x, P[f"{l}.n2"])
        x = x + (F.silu(h @ P[f"{l}.g"].T) * (h @ P[f"{l}.u"].T)) @ P[f"{l}.d"].T
    return rms(x, P["norm"]) @ P["head"].T


data = torch.frombuffer(bytearray(open(a.data, "rb").read()), dtype=torch.uint8).long()
g = torch.Generator().manual_seed(a.seed)
t0 = time.perf_counter()
for step in range(a.steps):
    idx = torch.randint(0, len(data) - a.seq - 1, (a.batch,), generator=g)
    batch = torch.stack([data[i: i + a.seq + 1] for i in idx])
    logits = forward(batch[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, a.vocab), batch[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
    opt.step()
el = time.perf_counter() - t0
print(json.dumps({"tokens_per_s": a.steps * a.batch * a.seq / el, "loss": loss.item(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": torch.__version__}))
