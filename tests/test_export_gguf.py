#!/usr/bin/env python3
"""test_export_gguf.py DIR - reads the GGUF files test_export_gguf wrote into DIR (run it
with QT_EXPORT_GGUF_DIR=DIR) with gguf-py (PyPI `gguf`, llama.cpp's own Python reader) and
checks them against the <file>.expected.safetensors beside each, which the C test wrote
from the quantizer core's dequantization in llama.cpp's layout:
  - every tensor is there with the expected ggml type and shape (ne innermost first),
    and no other tensor is;
  - gguf.quants.dequantize of its bytes equals the expected f32 values exactly;
  - the metadata keys listed as "kv.<key>" hold those values; the hyperparameter keys
    llama.cpp needs are present; tokenizer arrays have vocab_size entries.
Exits non-zero on any failure (and when gguf or safetensors cannot be imported)."""
import glob
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize
from safetensors import safe_open

fails = 0
passes = 0


def check(ok, msg):
    global fails, passes
    if ok:
        passes += 1
    else:
        fails += 1
        print("FAIL", msg)


def value(field):
    v = field.contents()
    return v


def main(d):
    files = sorted(glob.glob(os.path.join(d, "*.gguf")))
    check(len(files) >= 3, f"expected at least 3 .gguf files in {d}, found {len(files)}")
    for path in files:
        name = os.path.basename(path)
        exp_path = path + ".expected.safetensors"
        check(os.path.exists(exp_path), f"{name}: {exp_path} missing")
        if not os.path.exists(exp_path):
            continue
        r = gguf.GGUFReader(path)
        with safe_open(exp_path, "np") as f:
            meta = f.metadata() or {}
            expected = {k: f.get_tensor(k) for k in f.keys()}
        arch = value(r.fields["general.architecture"])
        for k, v in meta.items():
            if not k.startswith("kv."):
                continue
            key = k[3:]
            check(key in r.fields, f"{name}: key {key} missing")
            if key in r.fields:
                got = value(r.fields[key])
                check(str(got) == v, f"{name}: {key} = {got!r}, expected {v!r}")
        for key in ["context_length", "embedding_length", "block_count", "feed_forward_length",
                    "attention.head_count", "attention.head_count_kv",
                    "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.dimension_count",
                    "vocab_size"]:
            check(f"{arch}.{key}" in r.fields, f"{name}: {arch}.{key} missing")
        for key in ["general.file_type", "general.name", "tokenizer.ggml.tokens",
                    "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                    "qtrain.calibration_hash", "qtrain.format"]:
            check(key in r.fields, f"{name}: {key} missing")
        n_vocab = value(r.fields[f"{arch}.vocab_size"])
        check(len(value(r.fields["tokenizer.ggml.tokens"])) == n_vocab, f"{name}: token count")
        check(len(value(r.fields["tokenizer.ggml.token_type"])) == n_vocab, f"{name}: token_type count")
        # bytes tokenizer: token b is bytes_to_unicode(b) (gpt-2 encoder.py)
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
            list(range(ord("\xae"), ord("\xff") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        b2u = {b: chr(c) for b, c in zip(bs, cs)}
        toks = value(r.fields["tokenizer.ggml.tokens"])
        check(all(toks[b] == b2u[b] for b in range(256)), f"{name}: byte tokens")

        seen = set()
        for t in r.tensors:
            seen.add(t.name)
            check(t.name in expected, f"{name}: unexpected tensor {t.name}")
            if t.name not in expected:
                continue
            e = expected[t.name]
            want_type = meta.get("type." + t.name)
            check(t.tensor_type.name == want_type, f"{name}: {t.name} type {t.tensor_type.name}, expected {want_type}")
            check(list(t.shape) == list(reversed(e.shape)), f"{name}: {t.name} ne {list(t.shape)}, expected {list(reversed(e.shape))}")
            got = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
            ef = e.reshape(-1).astype(np.float32)
            same = got.shape == ef.shape and np.array_equal(got.view(np.uint32), ef.view(np.uint32))
            if not same and got.shape == ef.shape:
                diff = np.abs(got - ef)
                i = int(np.argmax(diff))
                msg = f"max |diff| {diff[i]:.3g} at {i} (got {got[i]!r}, expected {ef[i]!r})"
            else:
                msg = f"shape {got.shape} vs {ef.shape}"
            check(same, f"{name}: {t.name} ({t.tensor_type.name}) dequantized values differ: {msg}")
        check(seen == set(expected), f"{name}: missing tensors {sorted(set(expected) - seen)}")
    print(f"test_export_gguf.py: {passes} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: test_export_gguf.py DIR")
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
