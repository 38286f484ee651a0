#!/usr/bin/env python3
"""llama.cpp itself (the PyPI package llama-cpp-python, which builds it from source) on
the GGUF fixtures and on SmolLM2, against the logits qtrain is checked against. Not in
CI: building llama.cpp takes 10+ minutes.

    pip install llama-cpp-python numpy safetensors
    python3 tests/real/llamacpp_compare.py [SMOLLM2.gguf QT_LOGITS.f32]

- tests/fixtures/tiny_llama_f32.gguf and tiny_llama_q8.gguf: llama.cpp's logits on the
  fixture ids against transformers' (model_logits.safetensors llama_logits,
  gguf_model_logits.safetensors llama_q8_logits), which test_gguf_model.c holds qtrain's
  to at 1e-4. Agreement proves the fixtures are laid out as llama.cpp expects (its
  interleaved RoPE needs the q/k permutation the generator applied), so undoing that
  permutation in gguf_load.c undoes llama.cpp's convention, not one of our own making.
- SmolLM2 (optional arguments): llama.cpp against the logits smollm2_logits.c wrote,
  twice: on the Q4_1 file as it is, where llama.cpp's CPU matmuls round activations to
  8 bits (Q8_1) for quantized weights, so only top-1 agreement and a loose bound (10% of
  max|logit|) are asked; and on an F32 copy (every tensor dequantized by gguf-py, same
  names, layout and metadata, written to a temporary file), where the weights are the
  ones qtrain computes with and the logits must agree to 1e-3 * max|ref|.
The KV cache is F32 (type_k/type_v 0), not llama.cpp's default f16.
"""
import os
import sys

import tempfile

import gguf
import numpy as np
from gguf.quants import dequantize
from safetensors.numpy import load_file

import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
SMOL_IDS = [[504, 3575, 282, 4649, 314, 7042], [504, 3575, 282, 4521, 314, 11452]]


def llamacpp_logits(path, ids):
    """(len(ids), T, vocab) logits, one sequence at a time from a fresh context."""
    m = llama_cpp.Llama(model_path=path, n_ctx=64, logits_all=True, verbose=False,
                        n_threads=2, type_k=0, type_v=0)  # 0 = GGML_TYPE_F32 KV cache
    out = []
    for seq in ids:
        m.reset()
        m.eval([int(t) for t in seq])
        out.append(np.array(m.scores[: len(seq)], dtype=np.float32))
    return np.stack(out)


def f32_copy(src, dst):
    """src with every tensor dequantized to F32 (general.file_type 0), all else as is."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))  # outermost first
        w.add_tensor(t.name, dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def report(what, got, want, tol):
    err = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    top = float((got.argmax(-1) == want.argmax(-1)).mean())
    ok = err <= tol * scale
    print(f"{what}: max|llama.cpp - ref| {err:.3g}, max|ref| {scale:.3g}, top-1 agreement "
          f"{top:.3f}: {'ok' if ok else 'MISMATCH'} (tolerance {tol:g} * max|ref|)")
    return ok


def main():
    ref = load_file(os.path.join(FIX, "model_logits.safetensors"))
    gref = load_file(os.path.join(FIX, "gguf_model_logits.safetensors"))
    ids = ref["ids"]
    ok = report("tiny_llama_f32.gguf", llamacpp_logits(os.path.join(FIX, "tiny_llama_f32.gguf"), ids),
                ref["llama_logits"], 1e-3)
    ok &= report("tiny_llama_q8.gguf", llamacpp_logits(os.path.join(FIX, "tiny_llama_q8.gguf"), ids),
                 gref["llama_q8_logits"], 3e-2)
    if len(sys.argv) == 3:
        got = llamacpp_logits(sys.argv[1], SMOL_IDS)
        ours = np.fromfile(sys.argv[2], dtype="<f4").reshape(got.shape)
        for b in range(len(SMOL_IDS)):
            row = got[b, -2]
            print(f"llama.cpp seq {b}: top-5", " ".join(f"{i} ({row[i]:.4f})" for i in np.argsort(-row)[:5]))
        ok &= report("SmolLM2 Q4_1 file (ref: qtrain)", got, ours, 0.1)
        ok &= float((got[:, -2].argmax(-1) == ours[:, -2].argmax(-1)).mean()) == 1.0
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "smollm2_f32.gguf")
            f32_copy(sys.argv[1], p)
            got = llamacpp_logits(p, SMOL_IDS)
        ok &= report("SmolLM2 F32 copy (ref: qtrain)", got, ours, 1e-3)
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
