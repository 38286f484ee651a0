#!/usr/bin/env python3
"""test_imatrix_llamacpp.py IMATRIX_TOOL BUILD_LLAMA_TOOLS_SH - qtrain's importance matrix
and imatrix quantization against llama.cpp's own llama-imatrix and llama-quantize.

scripts/build_llama_tools.sh builds the tools from the llama.cpp that PyPI's
llama-cpp-python 0.3.36 vendors (minutes the first time, then reused). Then, in a
temporary directory:

1. imatrix_tool model: a random byte-level Llama (dim 256, ffn 512, 2 blocks) as an F32
   GGUF; llama.cpp tokenizes text to its bytes and adds no BOS (checked with
   llama_cpp.Llama), so both sides see the same tokens.
2. The same chunks on both sides: llama-imatrix -c 128 cuts the text's N tokens into
   floor(N / 128) chunks of 128 (first token not replaced: no BOS), evaluated with an F32
   KV cache and flash attention off (-ctk f32 -ctv f32 -fa off) so its activations are f32
   like qtrain's; imatrix_tool collect cuts the same chunks. Compared, per entry:
   names, metadata (general.type, datasets, chunk_count, chunk_size) and counts exactly;
   the sums of squares within a relative 1e-4 (each side sums x^2 in token order, but the
   activations come from different matmul and attention kernels, so the f32 sums are not
   bit-identical; the test prints the measured maximum relative difference, 3.5e-6 on
   the development machine). The legacy .dat files (--output-format dat) likewise.
3. Files: qtrain reading llama's GGUF imatrix and writing it again gives the same bytes;
   writing it in the legacy format gives llama-imatrix's own .dat byte for byte; the .dat
   read and written again is unchanged. qtrain's quant_weights of an entry are
   llama-quantize's load_imatrix (sums / count; legacy values / ncall).
4. Quantization: for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS,
   `llama-quantize --pure [--imatrix F] model.gguf out TYPE` against imatrix_tool quantize
   (qt_ptq_run RTN with cfg.imatrix, qt_export_gguf): every blk.* weight byte-identical,
   with llama's imatrix, without one, with qtrain's own imatrix given to llama-quantize
   (Q4_K, IQ4_NL: llama.cpp reads qtrain's file) and with the legacy .dat (Q4_K).

Exits 1 on any failure, including a missing package or a tool that does not build.
"""
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    import llama_cpp
except Exception as e:  # no silent skip
    print(f"FAIL: cannot import numpy / gguf / llama_cpp (scripts/python_deps.sh): {e}")
    sys.exit(1)

CTX = 128
REL_TOL = 1e-4
TYPES = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q8_0": "Q8_0",
         "q2_k": "Q2_K", "q3_k": "Q3_K_S", "q4_k": "Q4_K_S", "q5_k": "Q5_K_S", "q6_k": "Q6_K",
         "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS"}
failures = []


def fail(msg):
    print("FAIL:", msg)
    failures.append(msg)


def run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{what}: rc {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
        return None
    return r


def text_bytes(n, seed=7):
    """Deterministic prose-like ASCII: words from a fixed list, sentences, newlines."""
    words = ("the a of and to in is that it was for on are as with his they at be this "
             "from have or by one had not but what all were when we there can an your "
             "which their said if do will each about how up out them then she many some so "
             "these would other into has more her two like him see time could no make than "
             "first been its who now people my made over did down only way find use may "
             "water long little very after words called just where most know").split()
    rng = np.random.default_rng(seed)
    out, sentence = [], 0
    while sum(len(w) + 1 for w in out) < n + 64:
        w = words[int(rng.integers(len(words)))]
        if sentence == 0:
            w = w.capitalize()
        sentence += 1
        if sentence > int(rng.integers(6, 14)):
            w += "." if rng.random() < 0.8 else ","
            sentence = 0
        out.append(w + ("\n" if rng.random() < 0.05 else " "))
    return "".join(out).encode()[:n]


def gguf_imatrix(path):
    r = gguf.GGUFReader(path)
    kv = {}
    for k, f in r.fields.items():
        if not k.startswith("GGUF."):
            kv[k] = f.contents()
    return kv, {t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in r.tensors}


def dat_imatrix(path):
    b = open(path, "rb").read()
    p = 0

    def i32():
        nonlocal p
        v = struct.unpack_from("<i", b, p)[0]
        p += 4
        return v
    ent = {}
    for _ in range(i32()):
        n = i32()
        name = b[p:p + n].decode()
        p += n
        ncall, nval = i32(), i32()
        ent[name] = (ncall, np.frombuffer(b, np.float32, nval, p).copy())
        p += 4 * nval
    chunks = i32()
    n = i32()
    return ent, chunks, b[p:p + n].decode()


def rel_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(b.astype(np.float64)), 1e-30)))


def compare_gguf_imatrix(ours, ref):
    ko, to = gguf_imatrix(ours)
    kr, tr = gguf_imatrix(ref)
    if ko != kr:
        fail(f"imatrix metadata differs: qtrain {ko} llama.cpp {kr}")
    if sorted(to) != sorted(tr):
        fail(f"imatrix tensors differ: qtrain {sorted(to)} llama.cpp {sorted(tr)}")
        return None
    worst = 0.0
    for name in sorted(tr):
        if name.endswith(".counts"):
            if not np.array_equal(to[name], tr[name]):
                fail(f"{name}: qtrain {to[name]} llama.cpp {tr[name]}")
        else:
            d = rel_diff(to[name], tr[name])
            worst = max(worst, d)
            if not d < REL_TOL:
                fail(f"{name}: sums differ by a relative {d:.3g} (tolerance {REL_TOL})")
    return worst


def compare_dat(ours, ref):
    eo, co, do = dat_imatrix(ours)
    er, cr, dr = dat_imatrix(ref)
    if (co, do) != (cr, dr) or sorted(eo) != sorted(er):
        fail(f"legacy imatrix header/entries differ: qtrain {co} {do!r} {sorted(eo)[:3]}.. "
             f"llama.cpp {cr} {dr!r} {sorted(er)[:3]}..")
        return None
    worst = 0.0
    for name in er:
        if eo[name][0] != er[name][0]:
            fail(f"{name}: ncall {eo[name][0]} vs {er[name][0]}")
        d = rel_diff(eo[name][1], er[name][1])
        worst = max(worst, d)
        if not d < REL_TOL:
            fail(f"{name} (.dat): values differ by a relative {d:.3g}")
    return worst


def blk_tensors(path):
    return {t.name: (t.tensor_type.name, np.array(t.data).tobytes())
            for t in gguf.GGUFReader(path).tensors
            if t.name.startswith("blk.") and len(t.shape) == 2}


def compare_quant(tool, qbin, tmp, t, imat, imat_llama=None, tag=""):
    """llama-quantize and qtrain on the same model and imatrix, blk.* bytes."""
    lq = os.path.join(tmp, f"llama_{t}{tag}.gguf")
    oq = os.path.join(tmp, f"ours_{t}{tag}.gguf")
    imat_llama = imat if imat_llama is None else imat_llama
    cmd = [qbin, "--pure"] + (["--imatrix", imat_llama] if imat_llama != "-" else [])
    if not run(cmd + [os.path.join(tmp, "model.gguf"), lq, TYPES[t], "2"], f"llama-quantize {t}{tag}"):
        return
    if not run([tool, "quantize", os.path.join(tmp, "model.gguf"), imat, t, oq], f"imatrix_tool quantize {t}{tag}"):
        return
    a, b = blk_tensors(lq), blk_tensors(oq)
    if sorted(a) != sorted(b) or len(a) != 14:
        fail(f"{t}{tag}: tensor sets differ ({len(a)} vs {len(b)})")
        return
    bad = [n for n in a if a[n] != b[n]]
    if bad:
        fail(f"{t}{tag}: {len(bad)} of {len(a)} weights differ from llama-quantize "
             f"(first {bad[0]}: {a[bad[0]][0]} vs {b[bad[0]][0]})")
    else:
        print(f"{t}{tag}: {len(a)}/{len(a)} weights byte-identical to llama-quantize "
              f"({a[next(iter(a))][0]})")


def main(tool, build_sh):
    r = subprocess.run(["bash", build_sh], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-2000:])
        print("FAIL: scripts/build_llama_tools.sh failed")
        return 1
    bindir = r.stdout.strip().splitlines()[-1]
    imx, qbin = os.path.join(bindir, "llama-imatrix"), os.path.join(bindir, "llama-quantize")
    print(r.stdout.strip().splitlines()[0])
    with tempfile.TemporaryDirectory() as tmp:
        model, text = os.path.join(tmp, "model.gguf"), os.path.join(tmp, "calib.txt")
        if not run([tool, "model", model], "imatrix_tool model"):
            return 1
        data = text_bytes(32 * CTX + 77)  # 32 chunks and a remainder llama.cpp drops
        open(text, "wb").write(data)
        llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
        if llm.tokenize(data, add_bos=True, special=False) != list(data):
            fail("llama.cpp does not tokenize the text to its bytes without BOS")
        common = ["-m", model, "-f", text, "-c", str(CTX), "--no-ppl", "-t", "2", "-fa", "off",
                  "-ctk", "f32", "-ctv", "f32"]
        ref_g, ref_d = os.path.join(tmp, "ref.gguf"), os.path.join(tmp, "ref.dat")
        ours_g, ours_d = os.path.join(tmp, "ours.gguf"), os.path.join(tmp, "ours.dat")
        ok = run([imx] + common + ["-o", ref_g], "llama-imatrix")
        ok = ok and run([imx] + common + ["-o", ref_d, "--output-format", "dat"], "llama-imatrix dat")
        ok = ok and run([tool, "collect", model, text, str(CTX), ours_g], "imatrix_tool collect")
        ok = ok and run([tool, "collect", model, text, str(CTX), ours_d, "dat"], "imatrix_tool collect dat")
        if not ok:
            return 1
        w = compare_gguf_imatrix(ours_g, ref_g)
        if w is not None:
            print(f"imatrix (GGUF): 14 entries, counts equal, sums max relative difference "
                  f"{w:.3g} (tolerance {REL_TOL})")
        w = compare_dat(ours_d, ref_d)
        if w is not None:
            print(f"imatrix (.dat): values max relative difference {w:.3g}")
        # files: qtrain's reader and writers against llama.cpp's own bytes
        for src, dst, fmt, want in [(ref_g, "conv.gguf", [], ref_g), (ref_g, "conv.dat", ["dat"], ref_d),
                                    (ref_d, "conv2.dat", ["dat"], ref_d)]:
            out = os.path.join(tmp, dst)
            if run([tool, "convert", src, out] + fmt, f"convert {os.path.basename(src)}"):
                same = open(out, "rb").read() == open(want, "rb").read()
                print(f"convert {os.path.basename(src)} -> {dst}: "
                      f"{'byte-identical to' if same else 'DIFFERS from'} llama.cpp's {os.path.basename(want)}")
                if not same:
                    fail(f"{dst} differs from {os.path.basename(want)}")
        # quant_weights as llama-quantize's load_imatrix computes them
        kv, t = gguf_imatrix(ref_g)
        ent, _, _ = dat_imatrix(ref_d)
        name = "blk.1.ffn_down.weight"
        for src, want in [(ref_g, t[name + ".in_sum2"] / np.float32(t[name + ".counts"][0])),
                          (ref_d, ent[name][1] / np.float32(ent[name][0]))]:
            out = os.path.join(tmp, "w.f32")
            if run([tool, "weights", src, name, out], "imatrix_tool weights"):
                got = np.fromfile(out, np.float32)
                if not np.array_equal(got, want.astype(np.float32)):
                    fail(f"quant_weights of {name} from {os.path.basename(src)} differ from "
                         f"llama-quantize's")
        # quantization with the same imatrix: bytes of llama-quantize
        for t in TYPES:
            compare_quant(tool, qbin, tmp, t, ref_g)
            compare_quant(tool, qbin, tmp, t, "-", tag=" (no imatrix)")
        for t in ["q4_k", "iq4_nl"]:
            compare_quant(tool, qbin, tmp, t, ours_g, tag=" (qtrain's imatrix)")
        compare_quant(tool, qbin, tmp, "q4_k", ref_d, tag=" (legacy .dat)")
    print("test_imatrix_llamacpp:", "PASS" if not failures else f"FAIL ({len(failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: test_imatrix_llamacpp.py IMATRIX_TOOL BUILD_LLAMA_TOOLS_SH")
    sys.exit(main(sys.argv[1], sys.argv[2]))
