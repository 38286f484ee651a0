#!/usr/bin/env python3
"""gptq_torch.py HF_DIR TEXT VAL_FRACTION SAMPLES SEQ_LEN SEED THREADS VAL_TEXT OUT_JSON

The peer of bench/gptq.sh: GPTQ of the same float model (an HF directory qtrain wrote),
on the same calibration set, in PyTorch on the CPU with the same thread count, the way
the reference implementation (IST-DASLab/gptq llama.py + gptq.py) runs it: inputs of
the first decoder layer captured, then layer by layer, true-sequential groups (q/k/v, o,
gate/up, down) with H accumulated by forward hooks over every calibration sequence, one
sequence per forward, each group quantized (damp 1%, lazy blocks of 128, int4 g128
symmetric as the reference's Quantizer computes it), the layer's outputs recomputed with
the quantized weights as the next layer's inputs. Written here from that description.

The calibration set is drawn exactly as ptq/calib.c draws it (bytes of the text's
training part, windows of SEQ_LEN + 1, a splitmix64 partial Fisher-Yates) and its
SHA-256 is printed, so the caller can check it equals the hash qtrain recorded.
Writes OUT_JSON: {seconds, peak_rss_kb, ppl, calib_hash}; the perplexity is on VAL_TEXT
with qtrain eval's sliding windows (context 512, stride 256).
"""
import hashlib
import json
import math
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def calibration(text, val_fraction, n, length, seed):
    toks = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    val_start = len(toks) - int(len(toks) * val_fraction)
    avail = val_start // (length + 1)
    idx = list(range(avail))
    s = seed
    out = []
    for i in range(n):
        s, r = splitmix(s)
        j = i + r % (avail - i)
        idx[i], idx[j] = idx[j], idx[i]
        out.append(toks[idx[i] * (length + 1): idx[i] * (length + 1) + length])
    ids = np.stack(out)
    h = hashlib.sha256(ids.astype("<i4").tobytes()).hexdigest()
    return torch.from_numpy(ids), "sha256:" + h


class Quantizer:
    """The reference's asymmetric/symmetric min-max quantizer, per output row."""

    def __init__(self, bits, sym):
        self.maxq = 2 ** bits - 1
        self.sym = sym

    def find_params(self, x):
        xmin = torch.minimum(x.min(1).values, torch.zeros(x.shape[0]))
        xmax = torch.maximum(x.max(1).values, torch.zeros(x.shape[0]))
        if self.sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = torch.where(xmin < 0, -xmax, xmin)
        both = (xmin == 0) & (xmax == 0)
        xmin[both], xmax[both] = -1, 1
        self.scale = ((xmax - xmin) / self.maxq).unsqueeze(1)
        if self.sym:
            self.zero = torch.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.round(-xmin.unsqueeze(1) / self.scale)

    def quantize(self, x):
        q = torch.clamp(torch.round(x / self.scale) + self.zero, 0, self.maxq)
        return self.scale * (q - self.zero)


class GPTQ:
    def __init__(self, layer):
        self.layer = layer
        self.cols = layer.weight.shape[1]
        self.H = torch.zeros(self.cols, self.cols)
        self.n = 0

    def add_batch(self, inp):
        inp = inp.reshape(-1, inp.shape[-1]).t().float()
        tmp = 1  # one sequence per forward, as the reference
        self.H *= self.n / (self.n + tmp)
        self.n += tmp
        inp = math.sqrt(2 / self.n) * inp
        self.H += inp @ inp.t()

    def quantize(self, bits, group, blocksize=128, percdamp=0.01):
        W = self.layer.weight.data.clone().float()
        q = Quantizer(bits, True)
        H = self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0
        Q = torch.zeros_like(W)
        H[range(self.cols), range(self.cols)] += percdamp * torch.mean(torch.diag(H))
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        Hinv = torch.linalg.cholesky(H, upper=True)
        for i1 in range(0, self.cols, blocksize):
            i2 = min(i1 + blocksize, self.cols)
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            for i in range(i2 - i1):
                w = W1[:, i]
                d = Hinv1[i, i]
                if (i1 + i) % group == 0:
                    q.find_params(W[:, i1 + i:i1 + i + group])
                qw = q.quantize(w.unsqueeze(1)).flatten()
                Q1[:, i] = qw
                err = (w - qw) / d
                W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err
            Q[:, i1:i2] = Q1
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
        self.layer.weight.data = Q.to(self.layer.weight.dtype)


@torch.no_grad()
def gptq_model(model, calib, bits, group):
    layers = model.model.layers
    cache = {"inps": [], "kw": None}

    class Catcher(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, **kw):
            cache["inps"].append(x)
            cache["kw"] = kw
            raise ValueError

    layers[0] = Catcher(layers[0])
    for j in range(calib.shape[0]):
        try:
            model(calib[j:j + 1])
        except ValueError:
            pass
    layers[0] = layers[0].m
    inps, kw = cache["inps"], cache["kw"]
    seq = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
           ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    for layer in layers:
        mods = dict(layer.named_modules())
        for names in seq:
            g = {n: GPTQ(mods[n]) for n in names}
            hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: g[n].add_batch(i[0].data))
                  for n in names]
            for x in inps:
                layer(x, **kw)
            for h in hs:
                h.remove()
            for n in names:
                g[n].quantize(bits, group)
        inps = [layer(x, **kw) for x in inps]
        inps = [x[0] if isinstance(x, tuple) else x for x in inps]


@torch.no_grad()
def perplexity(model, text, ctx=512, stride=256):
    toks = torch.tensor(list(text), dtype=torch.long)
    n = len(toks)
    nll, count, prev_end, begin = 0.0, 0, 0, 0
    while begin < n - 1:
        end = min(begin + ctx + 1, n)
        inp = toks[begin:end - 1].unsqueeze(0)
        logits = model(inp).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        for j in range(end - begin - 1):
            pos = begin + 1 + j
            if pos >= prev_end:
                nll -= float(lp[j, toks[pos]])
                count += 1
        prev_end = end
        if end == n:
            break
        begin += stride
    return math.exp(nll / count)


def main():
    (hf, text_path, val_fraction, samples, seq_len, seed, threads, val_path, out) = sys.argv[1:10]
    torch.set_num_threads(int(threads))
    from transformers import LlamaForCausalLM
    text = open(text_path, "rb").read()
    calib, h = calibration(text, float(val_fraction), int(samples), int(seq_len), int(seed))
    model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32)
    model.eval()
    t0 = time.time()
    gptq_model(model, calib, 4, 128)
    secs = time.time() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ppl = perplexity(model, open(val_path, "rb").read())
    json.dump({"seconds": secs, "peak_rss_kb": rss, "ppl": ppl, "calib_hash": h}, open(out, "w"))
    print(f"torch gptq: {secs:.1f} s, peak RSS {rss / 1024:.0f} MiB, ppl {ppl:.4f}, {h}")


if __name__ == "__main__":
    main()
