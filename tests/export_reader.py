#!/usr/bin/env python3
"""export_reader.py - reads qtrain's exported checkpoints with code that shares nothing
with qtrain, written from the published layouts:

  - GPTQ: AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py (pack: qweight holds
    32/bits input rows per int32 LSB first, 3-bit as one bit stream; qzeros z-1 along
    the output columns; g_idx) and vLLM's gptq.py;
  - AWQ: AutoAWQ awq/modules/linear/gemm.py (order [0, 2, 4, 6, 1, 3, 5, 7] along the
    output columns, zeros as is);
  - bitsandbytes NF4 (transformers' serialization of Params4bit / QuantState.as_dict):
    nibbles high-first, quant_map[code] * absmax, the nested absmax as
    nested_quant_map[u8] * nested_absmax[block / 256] + nested_offset, all maps read from
    the file itself;
  - compressed-tensors FP8: E4M3 (bias 7, no infinities, S.1111.111 = NaN) * weight_scale;
  - with --reference (needs torch, bitsandbytes, transformers; run by hand, not in CI,
    since PyPI's torch is the CUDA build): bitsandbytes' own QuantState.from_dict +
    dequantize_4bit, torch.float8_e4m3fn, and transformers loading the bitsandbytes
    exports (every Linear4bit must dequantize to the expected weights);
  - safetensors: parsed here with numpy (u64 header length, JSON header, buffer).

Usage: export_reader.py <test_export binary>. It runs the binary with
QT_EXPORT_DUMP=<tmp>, which keeps each export as <tmp>/<case> beside
<tmp>/<case>.expected.safetensors (every parameter as qtrain dequantizes it, f32), then
dequantizes each export independently and requires bit-for-bit equality, and checks the
config keys transformers / vLLM read. Needs numpy (and with --reference torch,
bitsandbytes and transformers): a missing package fails the test (it does not skip).
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

REFERENCE = "--reference" in sys.argv
if REFERENCE:
    sys.argv.remove("--reference")
    import torch
    import bitsandbytes.functional as bnbf
    import transformers

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL", what)


# ----------------------------------------------------------------- safetensors ----

NP_DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I32": np.int32,
         "U8": np.uint8, "I8": np.int8, "F8_E4M3": np.uint8}


def read_st(path):
    """-> (metadata dict, {name: (dtype string, numpy array)})"""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n].decode("utf-8"))
    buf = raw[8 + n:]
    meta = hdr.pop("__metadata__", {})
    out = {}
    end = 0
    for name, e in hdr.items():
        b, en = e["data_offsets"]
        end = max(end, en)
        a = np.frombuffer(buf[b:en], dtype=NP_DT[e["dtype"]]).reshape(e["shape"])
        out[name] = (e["dtype"], a)
    check(end == len(buf), f"{path}: buffer {len(buf)} bytes, tensors cover {end}")
    return meta, out


def to_f32(dt, a):
    if dt == "F32":
        return a.astype(np.float32)
    if dt == "F16":
        return a.astype(np.float32)
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(dt)


# ------------------------------------------------------------------ dequantizers ----

def unpack_stream(words, nvals, bits):
    """words (rows, W) int32, each row a little-endian bit stream of nvals values of
    `bits` bits -> (rows, nvals) int64."""
    w = np.ascontiguousarray(words.astype("<u4"))
    bitarr = np.unpackbits(w.view(np.uint8), axis=1, bitorder="little")
    bitarr = bitarr[:, :nvals * bits].reshape(w.shape[0], nvals, bits).astype(np.int64)
    return (bitarr << np.arange(bits, dtype=np.int64)).sum(axis=2)


def deq_gptq(t, pre, qc):
    bits = qc["bits"]
    qw = t[pre + ".qweight"][1]
    qz = t[pre + ".qzeros"][1]
    sdt, sc = t[pre + ".scales"]
    sc = to_f32(sdt, sc)
    ng, out = sc.shape
    inn = qw.shape[0] * 32 // bits
    check(qw.shape == (inn * bits // 32, out), f"{pre}.qweight shape {qw.shape}")
    check(qz.shape == (ng, out * bits // 32), f"{pre}.qzeros shape {qz.shape}")
    q = unpack_stream(qw.T, inn, bits)            # (out, in): column o's stream over inputs
    z = unpack_stream(qz, out, bits) + 1          # (ng, out), v1 stores z - 1
    g = t[pre + ".g_idx"][1].astype(np.int64)
    gs = qc["group_size"]
    if not qc["desc_act"]:
        check(np.array_equal(g, np.arange(inn) // (gs if gs > 0 else inn)),
              f"{pre}.g_idx is not i // group_size without desc_act")
    zz = z[g, :].T                                # (out, in)
    ss = sc[g, :].T
    return (q - zz).astype(np.float32) * ss


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def awq_unpack(p):
    """(rows, out/8) int32 -> (rows, out)"""
    u = p.astype("<u4")
    rows, c8 = u.shape
    out = np.zeros((rows, c8 * 8), dtype=np.int64)
    for k in range(8):
        out[:, AWQ_ORDER[k]::8] = (u >> (4 * k)) & 15
    return out


def deq_awq(t, pre, qc):
    q = awq_unpack(t[pre + ".qweight"][1])        # (in, out)
    z = awq_unpack(t[pre + ".qzeros"][1])         # (ng, out)
    sdt, sc = t[pre + ".scales"]
    sc = to_f32(sdt, sc)
    inn = q.shape[0]
    G = qc["group_size"]
    check(G > 0 and inn % G == 0 and sc.shape[0] == inn // G, f"{pre}: group_size {G}")
    g = np.arange(inn) // G
    w = (q - z[g, :]).astype(np.float32) * sc[g, :]
    return w.T


def deq_bnb(t, pre, shape):
    keys = {k: v for k, v in t.items() if k.startswith(pre + ".weight.")}
    want = {pre + ".weight." + s for s in ("absmax", "quant_map", "quant_state.bitsandbytes__nf4")}
    nested = pre + ".weight.nested_absmax" in keys
    if nested:
        want |= {pre + ".weight.nested_absmax", pre + ".weight.nested_quant_map"}
    check(set(keys) == want, f"{pre}: quant_state keys {sorted(keys)}")
    js = json.loads(bytes(keys[pre + ".weight.quant_state.bitsandbytes__nf4"][1]).decode())
    check(js["quant_type"] == "nf4" and js["shape"] == list(shape), f"{pre}: quant_state {js}")
    if nested:
        check(js["nested_blocksize"] == 256 and js["nested_dtype"] == "float32",
              f"{pre}: nested fields {js}")
    packed = np.array(t[pre + ".weight"][1])
    check(tuple(packed.shape) == ((shape[0] * shape[1] + 1) // 2, 1), f"{pre}.weight shape")
    if not REFERENCE:
        n = shape[0] * shape[1]
        codes = np.empty(2 * packed.size, np.uint8)
        codes[0::2] = packed.reshape(-1) >> 4  # element 2j in the high nibble
        codes[1::2] = packed.reshape(-1) & 15
        qmap = to_f32(*keys[pre + ".weight.quant_map"])
        absmax = keys[pre + ".weight.absmax"]
        if nested:
            nmap = to_f32(*keys[pre + ".weight.nested_quant_map"])
            nabs = to_f32(*keys[pre + ".weight.nested_absmax"])
            a = np.asarray(absmax[1]).reshape(-1)
            blk = np.arange(a.size) // js["nested_blocksize"]
            am = (nmap[a] * nabs[blk]).astype(np.float32) + np.float32(js["nested_offset"])
        else:
            am = to_f32(*absmax).reshape(-1)
        b = np.arange(n) // js["blocksize"]
        return (qmap[codes[:n]] * am[b]).astype(np.float32).reshape(shape)
    qs = {k: torch.from_numpy(np.array(v[1])) for k, v in keys.items()}
    state = bnbf.QuantState.from_dict(qs, device=torch.device("cpu"))
    packed = torch.from_numpy(packed)
    if shape[1] % js["blocksize"]:
        # bitsandbytes 0.50.2's CPU kernel (cdequantize_blockwise_cpu_nf4_*) walks blocks
        # row by row and misreads a block that spans rows (its own quantize_4bit output
        # included); the format, and the CUDA kernels, are flat over the whole tensor,
        # so give the CPU kernel the flat shape.
        state.shape = torch.Size([shape[0] * shape[1]])
    w = bnbf.dequantize_4bit(packed, state, quant_type="nf4")
    return w.float().numpy().reshape(shape)


def deq_fp8(t, pre, strategy):
    dt, w = t[pre + ".weight"]
    check(dt == "F8_E4M3", f"{pre}.weight dtype {dt}")
    sdt, s = t[pre + ".weight_scale"]
    s = to_f32(sdt, s)
    if strategy == "channel":
        check(s.shape == (w.shape[0], 1), f"{pre}.weight_scale shape {s.shape}")
    else:
        check(s.shape == (1,), f"{pre}.weight_scale shape {s.shape}")
    if REFERENCE:
        wf = torch.from_numpy(np.array(w)).view(torch.float8_e4m3fn).float()
        return (wf * torch.from_numpy(np.array(s)).reshape(-1, 1)).numpy()
    return (e4m3(np.asarray(w)) * np.asarray(s, np.float32).reshape(-1, 1)).astype(np.float32)


def e4m3(b):
    """FP8 E4M3 (OCP): sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is
    subnormal (m / 8 * 2^-6); S.1111.111 is NaN; no infinities."""
    b = b.astype(np.int32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> 3) & 15
    m = b & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return (sign * v).astype(np.float32)


# ----------------------------------------------------------------------- checks ----

def check_config(case, cfg, qc):
    arch = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
    a = (cfg.get("architectures") or ["?"])[0]
    check(a in arch and cfg.get("model_type") == arch[a], f"{case}: architectures {a}")
    check(("qwen2" in case) == (a == "Qwen2ForCausalLM"), f"{case}: architecture {a}")
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "rms_norm_eps"):
        check(k in cfg, f"{case}: config.json lacks {k}")
    m = qc.get("quant_method")
    if m == "gptq":
        for k in ("bits", "group_size", "desc_act", "sym", "damp_percent", "static_groups",
                  "true_sequential", "checkpoint_format"):
            check(k in qc, f"{case}: gptq config lacks {k}")
        check(qc["checkpoint_format"] == "gptq", f"{case}: checkpoint_format")
    elif m == "awq":
        check(qc.get("bits") == 4 and qc.get("version") == "gemm" and "zero_point" in qc and
              "group_size" in qc and "modules_to_not_convert" in qc, f"{case}: awq config {qc}")
    elif m == "bitsandbytes":
        check(qc.get("load_in_4bit") is True and qc.get("load_in_8bit") is False and
              qc.get("bnb_4bit_quant_type") == "nf4" and
              isinstance(qc.get("bnb_4bit_use_double_quant"), bool) and
              qc.get("bnb_4bit_compute_dtype") in ("float16", "bfloat16", "float32") and
              qc.get("bnb_4bit_quant_storage") == "uint8", f"{case}: bnb config {qc}")
    elif m == "compressed-tensors":
        check(qc.get("format") == "float-quantized" and
              qc.get("quantization_status") == "compressed", f"{case}: ct config {qc}")
        g = qc.get("config_groups", {}).get("group_0", {})
        w = g.get("weights") or {}
        check(g.get("targets") == ["Linear"] and g.get("input_activations") is None,
              f"{case}: group_0 {g}")
        check(w.get("num_bits") == 8 and w.get("type") == "float" and
              w.get("symmetric") is True and w.get("dynamic") is False and
              w.get("strategy") in ("channel", "tensor"), f"{case}: weights {w}")
        check(isinstance(qc.get("ignore"), list), f"{case}: ignore")
    else:
        check(False, f"{case}: quant_method {m}")


def load_transformers(dump, case):
    """bitsandbytes exports: transformers builds the model, each Linear4bit's weight must
    dequantize to what qtrain expects; the float tensors must match too."""
    d = os.path.join(dump, case)
    m = transformers.AutoModelForCausalLM.from_pretrained(d)
    _, exp = read_st(os.path.join(dump, case + ".expected.safetensors"))
    n4 = 0
    sd = dict(m.named_parameters())
    for name, (_, e) in exp.items():
        mod = m.get_submodule(name[:-len(".weight")]) if name.endswith(".weight") else None
        if mod is not None and type(mod).__name__ == "Linear4bit":
            qs = mod.weight.quant_state
            flat = bnbf.QuantState(absmax=qs.absmax, shape=torch.Size([e.size]), code=qs.code,
                                   blocksize=qs.blocksize, quant_type=qs.quant_type,
                                   dtype=qs.dtype, offset=qs.offset, state2=qs.state2)
            got = bnbf.dequantize_4bit(mod.weight.data, flat).float().numpy().reshape(e.shape)
            n4 += 1
        else:
            got = sd[name].detach().float().numpy()
        check(got.shape == e.shape and np.array_equal(got.astype(np.float32), e),
              f"{case}: transformers' {name} differs")
    check(n4 >= 14, f"{case}: transformers built only {n4} Linear4bit layers")
    return n4


def read_case(dump, case):
    d = os.path.join(dump, case)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    qc = cfg["quantization_config"]
    check_config(case, cfg, qc)
    meta, t = read_st(os.path.join(d, "model.safetensors"))
    check(meta.get("format") == "pt", f"{case}: __metadata__ format")
    check(meta.get("qtrain.format") == cfg["qtrain"]["format"], f"{case}: provenance agrees")
    if qc["quant_method"] == "gptq":
        with open(os.path.join(d, "quantize_config.json")) as f:
            check(json.load(f) == qc, f"{case}: quantize_config.json != quantization_config")
    _, exp = read_st(os.path.join(dump, case + ".expected.safetensors"))
    used = set()
    nq = 0
    for name, (_, e) in exp.items():
        pre = name[:-len(".weight")] if name.endswith(".weight") else None
        m = qc["quant_method"]
        if name in t and t[name][0] in ("F32", "F16", "BF16"):
            got = to_f32(*t[name])
            used.add(name)
        elif m in ("gptq", "awq") and pre and pre + ".qweight" in t:
            got = deq_gptq(t, pre, qc) if m == "gptq" else deq_awq(t, pre, qc)
            used |= {k for k in t if k.startswith(pre + ".") and k != name}
            nq += 1
        elif m == "bitsandbytes" and name in t and t[name][0] == "U8":
            got = deq_bnb(t, pre, e.shape)
            used |= {k for k in t if k.startswith(name)}
            nq += 1
        elif m == "compressed-tensors" and name in t and t[name][0] == "F8_E4M3":
            strat = qc["config_groups"]["group_0"]["weights"]["strategy"]
            got = deq_fp8(t, pre, strat)
            used |= {name, pre + ".weight_scale"}
            nq += 1
        else:
            check(False, f"{case}: no tensor for {name}")
            continue
        same = got.shape == e.shape and np.array_equal(got.view(np.uint32), e.view(np.uint32))
        if not same and got.shape == e.shape:
            k = int(np.argmax(got.view(np.uint32) != e.view(np.uint32)))
            check(False, f"{case}: {name}: element {k} read {got.flat[k]!r}, qtrain "
                         f"{e.flat[k]!r}")
        else:
            check(same, f"{case}: {name}: shape {got.shape} vs {e.shape}")
    tied = cfg.get("tie_word_embeddings")
    check(("lm_head.weight" in exp) != bool(tied), f"{case}: lm_head vs tie_word_embeddings")
    check(set(t) == used, f"{case}: tensors not accounted for: {sorted(set(t) - used)}")
    check(nq >= 14, f"{case}: only {nq} quantized layers read")
    return nq


def main():
    if len(sys.argv) != 2:
        print("usage: export_reader.py <test_export binary>")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "dump")
        env = dict(os.environ, QT_EXPORT_DUMP=dump)
        r = subprocess.run([sys.argv[1]], env=env, capture_output=True, text=True)
        check(r.returncode == 0, f"test_export exited {r.returncode}:\n{r.stdout[-3000:]}")
        cases = sorted(c for c in os.listdir(dump) if os.path.isdir(os.path.join(dump, c)))
        kinds = {c.split("_")[0] for c in cases}
        check(len(cases) >= 15 and kinds == {"gptq", "awq", "bnb", "fp8"},
              f"expected the exporter cases, found {cases}")
        for c in cases:
            n = read_case(dump, c)
            print(f"{c}: {n} quantized layers read and equal")
            if c.startswith("bnb") and REFERENCE:
                n = load_transformers(dump, c)
                print(f"{c}: transformers loads it, {n} Linear4bit layers equal")
    print(f"export_reader: {len(FAILS)} failed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
