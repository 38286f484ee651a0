#!/usr/bin/env python3
"""transformers' own GGUF loader (gguf-py dequantization, its own q/k un-permutation) on
the SmolLM2 GGUF, the same ids as smollm2_logits.c, compared with the logits that program
wrote. Not in CI; run by smollm2_check.sh.

    pip install torch transformers gguf accelerate
    python3 tests/real/smollm2_reference.py MODEL.gguf QT_LOGITS.f32
"""
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

IDS = [[504, 3575, 282, 4649, 314, 7042], [504, 3575, 282, 4521, 314, 11452]]


def main(gguf_path, qt_path):
    d, f = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(IDS)).logits.float().numpy()
    for b in range(len(IDS)):
        row = ref[b, -2]
        top = np.argsort(-row)[:5]
        print(f"transformers seq {b}: top-5", " ".join(f"{i} ({row[i]:.4f})" for i in top))
    ours = np.fromfile(qt_path, dtype="<f4").reshape(ref.shape)
    err = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    ok = err <= 1e-4 * scale
    print(f"qtrain vs transformers: max|diff| {err:.3g}, max|ref| {scale:.3g}: "
          f"{'ok' if ok else 'MISMATCH'} (tolerance 1e-4 * max|ref|)")
    return ok


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(0 if main(sys.argv[1], sys.argv[2]) else 1)
