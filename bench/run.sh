#!/usr/bin/env bash
# bench/run.sh - qtrain vs PyTorch, forward+backward of the same ops on the same shapes
# and thread count, printed as a table of ratios (torch_ms / qtrain_ms: > 1 means
# qtrain is faster).
#
#   bash bench/run.sh [--threads N] [--reps R] [--rounds K] [--case SUBSTR]
#
# --threads defaults to nproc. --rounds K runs both sides K times, alternating, and keeps
# each case's best median (for a noisy, shared machine). Installs torch from PyPI if
# python3 cannot import it (CI never does: this script is not a test). Builds
# build/bench_ops in Release when it is missing or older than its sources.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

threads="$(nproc)"
reps=20
rounds=1
case_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --case) case_args=(--case "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

# --- torch (from PyPI, only when missing) -------------------------------------------
if ! python3 -c "import torch" 2>/dev/null; then
  echo "run.sh: torch not importable; installing it from PyPI (pip install torch)" >&2
  python3 -m pip install torch >&2
fi

# --- bench_ops (Release), rebuilt when missing or stale ---------------------------------
bin=build/bench_ops
stale=0
if [[ ! -x "$bin" ]]; then
  stale=1
elif [[ -n "$(find CMakeLists.txt bench autograd -newer "$bin" \
               \( -name '*.c' -o -name '*.h' -o -name CMakeLists.txt \) -print -quit)" ]]; then
  stale=1
fi
if [[ $stale == 1 ]]; then
  echo "run.sh: building $bin (Release)" >&2
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >&2
  # Only the benchmark and what it links: others' unfinished targets cannot break it.
  cmake --build build -j "$(nproc)" --target bench_ops >&2
  touch "$bin" # up to date now even if no input of it changed (a CMakeLists.txt edit)
fi
build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' build/CMakeCache.txt 2>/dev/null || true)"
if [[ "$build_type" != "Release" ]]; then
  echo "run.sh: warning: build/ is configured as '${build_type:-?}', not Release" >&2
fi

# --- run both sides -------------------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Other work on the machine skews the timings badly (an OpenMP barrier waits for a time
# slice); the table reports the load seen before and after.
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
for ((r = 0; r < rounds; r++)); do
  echo "run.sh: round $((r + 1))/$rounds: qtrain" >&2
  "$bin" --threads "$threads" --reps "$reps" --json ${case_args[@]+"${case_args[@]}"} \
    > "$tmp/qt.$r.jsonl"
  echo "run.sh: round $((r + 1))/$rounds: torch" >&2
  python3 bench/bench_torch.py --threads "$threads" --reps "$reps" --json \
    ${case_args[@]+"${case_args[@]}"} > "$tmp/pt.$r.jsonl"
done

# --- table ----------------------------------------------------------------------------
load_after="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
python3 - "$tmp" "$rounds" "$build_type" "$load_before" "$load_after" <<'EOF'
import glob, json, math, os, sys

tmp, rounds, build_type, load_before, load_after = sys.argv[1:6]
rounds = int(rounds)

def load(prefix):
    meta, best, order = {}, {}, []
    for path in sorted(glob.glob(os.path.join(tmp, prefix + ".*.jsonl"))):
        for line in open(path):
            rec = json.loads(line)
            if rec.get("meta"):
                meta = rec
                continue
            name = rec["case"]
            if name not in best:
                order.append(name)
                best[name] = rec
            elif rec["ms"] < best[name]["ms"]:
                best[name] = rec
    return meta, best, order

qm, qt, order = load("qt")
pm, pt, _ = load("pt")

cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass

w = max([len("case")] + [len(n) for n in order])
print(f"{'case':<{w}} | {'qtrain ms':>10} | {'torch ms':>10} | {'ratio':>6}")
print(f"{'-' * w}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 6}")
logs = []
for name in order:
    q = qt[name]["ms"]
    p = pt.get(name, {}).get("ms")
    if p is None:
        print(f"{name:<{w}} | {q:>10.3f} | {'-':>10} | {'-':>6}")
        continue
    ratio = p / q
    logs.append(math.log(ratio))
    print(f"{name:<{w}} | {q:>10.3f} | {p:>10.3f} | {ratio:>6.2f}")
if logs:
    print(f"{'geomean':<{w}} | {'':>10} | {'':>10} | {math.exp(sum(logs) / len(logs)):>6.2f}")
print()
print("ratio = torch_ms / qtrain_ms (> 1: qtrain faster); median of "
      f"{qm.get('reps')} fwd+bwd reps after {qm.get('warmup')} warm-up, "
      f"best of {rounds} round(s)")
print(f"threads: qtrain {qm.get('threads')}, torch {pm.get('threads')}")
print(f"cpu: {cpu} ({os.cpu_count()} logical cpus); load average before {load_before}, "
      f"after {load_after}")
print(f"qtrain: build type {build_type or '?'}, {qm.get('openblas_config', '?')}, "
      f"core {qm.get('openblas_core', '?')}")
env_ct = os.environ.get("OPENBLAS_CORETYPE")
print(f"OPENBLAS_CORETYPE: {env_ct if env_ct is not None else 'unset'}")
print(f"torch: {pm.get('torch', '?')}, {pm.get('blas', '?')}, "
      f"cpu capability {pm.get('cpu_capability', '?')}")
print(f"torch attention: {pm.get('attention', '?')} "
      f"(backward node: {pt.get('attention_gqa_12q4kv', {}).get('grad_fn', '?')}); "
      f"rmsnorm: {pm.get('rmsnorm', '?')}")
core = qm.get("openblas_core", "").lower()
flags = ""
try:
    flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags"))
except (OSError, StopIteration):
    pass
if core in ("prescott", "core2", "nehalem", "katmai", "coppermine", "northwood", "banias") \
        and " avx2 " in flags:
    print(f"WARNING: OpenBLAS runs its generic '{qm.get('openblas_core')}' (SSE) kernels on "
          "an AVX2/AVX-512 CPU it does not recognise; SGEMM is ~8x slower than it could be. "
          "Try OPENBLAS_CORETYPE=SkylakeX (AVX-512) or Haswell (AVX2).")
EOF
