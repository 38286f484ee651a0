#!/usr/bin/env python3
"""test_quant_gguf_interop.py GGML_QUANT_TOOL - qtrain's GGUF block quantizers against
llama.cpp's own, with and without an importance matrix, byte for byte.

The oracle is ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix) of the
libggml-base.so that PyPI's llama-cpp-python installs (called with ctypes): the function
llama-quantize calls for every tensor, with the imatrix entry of the tensor (one value
per column) or NULL. Dequantization is compared with ggml's dequantize_row_<type> from the
same library and with gguf-py's gguf.quants.dequantize, bit for bit.

For each of Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS, each row
length (32-multiples 32, 96, 800 for the 32-element types, 256, 512, 1024 for all) and each
importance vector (none; log-normal; log-normal with a quarter of the columns 0; all ones;
values from 1e-6 to 1e6), a matrix of adversarial rows (all zeros, constant, outliers,
1e-30, f32 denormals, 1e-7, 1e4, half-integer and integer ties, sparse, one sign only, a
zero block inside) and random rows (normal and Student-t(3), scales 1e-3 .. 1e2) goes
through tests/ggml_quant_tool.c (qtrain's qt_quantize with fmt.importance, which also
checks that the row API and fake_quant agree with it) and through ggml_quantize_chunk.

Prints a line per type: blocks identical / blocks compared. Exits 1 on any difference or
when llama_cpp, gguf or numpy cannot be imported (no silent skip).
"""
import ctypes
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf.constants import GGML_QUANT_SIZES
    import llama_cpp
except Exception as e:  # the interop test needs all of them: fail, never skip
    print(f"FAIL: cannot import numpy / gguf / llama_cpp (scripts/python_deps.sh): {e}")
    sys.exit(1)

T = gguf.GGMLQuantizationType
TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "IQ4_NL", "IQ4_XS"]


def load_ggml():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    return lib


def test_rows(cols, rng):
    rows = []

    def put(v):
        rows.append(np.asarray(v, np.float64).astype(np.float32))

    put(np.zeros(cols))
    put(np.full(cols, 0.37))
    put(np.full(cols, -1.5))
    v = rng.standard_normal(cols) * 0.02
    v[rng.choice(cols, max(1, cols // 128), replace=False)] = rng.choice([4.0, -3.5], max(1, cols // 128))
    put(v)
    put(rng.standard_normal(cols) * 1e-30)
    put(rng.standard_normal(cols) * 1e-40)
    put(rng.standard_normal(cols) * 1e-7)
    put(rng.standard_normal(cols) * 1e4)
    put(rng.integers(-8, 9, cols) * 0.5)
    put(rng.integers(-16, 17, cols).astype(np.float64))
    v = np.zeros(cols)
    idx = rng.choice(cols, max(1, cols // 40), replace=False)
    v[idx] = rng.standard_normal(len(idx))
    put(v)
    put(rng.uniform(0.1, 1.0, cols))
    put(-rng.uniform(0.1, 1.0, cols))
    v = rng.standard_normal(cols)
    v[:32] = 0.0
    put(v)
    for r in range(14):
        s = 10.0 ** rng.uniform(-3, 2)
        put((rng.standard_t(3, cols) if r % 3 == 0 else rng.standard_normal(cols)) * s)
    return np.stack(rows)


def importance(kind, cols, rng):
    if kind == "none":
        return None
    if kind == "lognormal":
        return np.exp(rng.standard_normal(cols) * 1.5).astype(np.float32)
    if kind == "lognormal+zeros":
        w = np.exp(rng.standard_normal(cols)).astype(np.float32)
        w[rng.choice(cols, cols // 4, replace=False)] = 0.0
        return w
    if kind == "ones":
        return np.ones(cols, np.float32)
    if kind == "wide":
        return (10.0 ** rng.uniform(-6, 6, cols)).astype(np.float32)
    raise ValueError(kind)


def ggml_quantize(lib, tname, x, imat):
    qtype = int(T[tname])
    rows, cols = x.shape
    block, size = GGML_QUANT_SIZES[T[tname]]
    dst = np.zeros(rows * (cols // block) * size, np.uint8)
    xs = np.ascontiguousarray(x, np.float32)
    im = None if imat is None else np.ascontiguousarray(imat, np.float32)
    got = lib.ggml_quantize_chunk(qtype, xs.ctypes.data, dst.ctypes.data, 0, rows, cols,
                                  None if im is None else im.ctypes.data)
    assert got == dst.size, (tname, got, dst.size)
    return dst.reshape(rows, -1)


def ggml_dequantize(lib, tname, b, rows, cols):
    fn = getattr(lib, "dequantize_row_" + tname.lower().replace("_k", "_K"))
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    out = np.zeros(rows * cols, np.float32)
    bb = np.ascontiguousarray(b)
    fn(bb.ctypes.data, out.ctypes.data, rows * cols)
    return out.reshape(rows, cols)


def main(tool):
    lib = load_ggml()
    rng = np.random.default_rng(20250118)
    ok = True
    stats = {t: [0, 0] for t in TYPES}
    with tempfile.TemporaryDirectory() as tmp:
        for tname in TYPES:
            block, size = GGML_QUANT_SIZES[T[tname]]
            lengths = [256, 512, 1024] + ([32, 96, 800] if block == 32 else [])
            for cols in lengths:
                x = test_rows(cols, rng)
                rows = x.shape[0]
                for kind in ["none", "lognormal", "lognormal+zeros", "ones", "wide"]:
                    imat = importance(kind, cols, rng)
                    case = f"{tname} cols {cols} imatrix {kind}"
                    xp, ip = os.path.join(tmp, "x.f32"), os.path.join(tmp, "imat.f32")
                    bp, dp = os.path.join(tmp, "bytes.bin"), os.path.join(tmp, "deq.f32")
                    x.tofile(xp)
                    if imat is not None:
                        imat.tofile(ip)
                    r = subprocess.run([tool, tname.lower(), str(rows), str(cols), xp,
                                        ip if imat is not None else "-", bp, dp],
                                       capture_output=True, text=True)
                    if r.returncode != 0:
                        print(f"FAIL {case}: ggml_quant_tool rc {r.returncode}: {r.stderr.strip()}")
                        ok = False
                        continue
                    ours = np.fromfile(bp, np.uint8).reshape(rows, -1)
                    ref = ggml_quantize(lib, tname, x, imat)
                    ob = ours.reshape(-1, size)
                    rb = ref.reshape(-1, size)
                    same = np.all(ob == rb, axis=1)
                    stats[tname][0] += int(same.sum())
                    stats[tname][1] += len(same)
                    if not same.all():
                        first = int(np.argmin(same))
                        print(f"FAIL {case}: {int((~same).sum())} of {len(same)} blocks differ from "
                              f"ggml_quantize_chunk (first: row {first // (cols // block)}, "
                              f"block {first % (cols // block)})")
                        ok = False
                    deq = np.fromfile(dp, np.float32).reshape(rows, cols)
                    gd = ggml_dequantize(lib, tname, ref, rows, cols)
                    pd = gguf.quants.dequantize(ref, T[tname]).astype(np.float32).reshape(rows, cols)
                    for name, want in (("ggml dequantize_row", gd), ("gguf-py dequantize", pd)):
                        if same.all() and not np.array_equal(deq.view(np.uint32), want.view(np.uint32)):
                            nd = int(np.sum(deq.view(np.uint32) != want.view(np.uint32)))
                            print(f"FAIL {case}: {nd} dequantized values differ from {name}")
                            ok = False
    for tname in TYPES:
        same, total = stats[tname]
        print(f"{tname}: {same}/{total} blocks byte-identical to ggml_quantize_chunk "
              f"(with and without imatrix)")
    print("test_quant_gguf_interop:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: test_quant_gguf_interop.py GGML_QUANT_TOOL")
    sys.exit(main(sys.argv[1]))
