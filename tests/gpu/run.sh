#!/usr/bin/env bash
# tests/gpu/run.sh - issue 8's GPU check in one script, for a machine with an NVIDIA GPU
# (under 8 minutes on one H100):
#   1. build Release with CUDA (build-gpu/), or take prebuilt binaries (--prebuilt DIR);
#   2. every CPU-vs-GPU parity test (label cuda): ops in f32 and bf16, whole models,
#      fake-quant bit for bit; fresh random inputs each run;
#   3. the quickstart recipe trained on the CPU (f32) and on the GPU (f32, and bf16 the
#      default GPU mode) for the same steps: the loss curves must agree (f32: 1e-3
#      relative at every logged step; bf16: 3e-2);
#   4. the GPU benchmark (bench/gpu_train) against PyTorch eager on the same card
#      (bench/gpu_train_torch.py), GPT-2 124M and SmolLM2 135M shapes, batch 8 x 1024;
#   5. a final table. Logs go to $OUT (default build-gpu/out).
# usage: bash tests/gpu/run.sh [--prebuilt DIR] [--steps N] [--skip-bench]
#   --prebuilt DIR: DIR/bin holds the five programs (test_cuda_ops test_cuda_model
#   test_cuda_quant qtrain gpu_train), DIR/lib the shared libraries they need that the
#   machine lacks (for a GPU machine without OpenBLAS/HDF5/libyaml/cJSON packages).
# Exit status: 0 when every test and the loss comparison passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PREBUILT="" STEPS=300 BENCH=1
while (($#)); do
  case "$1" in
    --prebuilt) PREBUILT=$(cd "$2" && pwd); shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --skip-bench) BENCH=0; shift ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/build-gpu/out}
mkdir -p "$OUT"
LOG=$OUT/gpu_run.log
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }
T0=$(date +%s)
declare -a ROWS=()
row() { ROWS+=("$1"); }
FAILED=0

say "== GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
# Our programs get their libraries through QTLIB only (never exported: python3 and
# PyTorch keep the machine's own). cuBLAS comes from the machine: the CUDA toolkit, or
# the nvidia-cublas wheel PyTorch uses.
QTLIB=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
  if ls "$d"/libcublas.so.* >/dev/null 2>&1; then QTLIB=$d; break; fi
done
say "   cuBLAS from: ${QTLIB:-(not found: the default library path)}"
qtx() { LD_LIBRARY_PATH="$QTLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }

if [ -z "$PREBUILT" ]; then
  say "== build (Release, QT_CUDA=ON)"
  if cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DQT_CUDA=ON -DQT_CUDA_ARCHS=native \
       >>"$LOG" 2>&1 &&
     cmake --build build-gpu -j"$(nproc)" --target test_cuda_ops test_cuda_model \
       test_cuda_quant qtrain gpu_train >>"$LOG" 2>&1; then
    BIN=$ROOT/build-gpu
  else
    say "build FAILED (tail of $LOG):"; tail -30 "$LOG"; exit 1
  fi
else
  BIN=$PREBUILT/bin
  [ -d "$PREBUILT/lib" ] && QTLIB="$QTLIB:$PREBUILT/lib"
  say "== prebuilt binaries from $BIN"
fi
say "   build/setup $(( $(date +%s) - T0 )) s"

say "== parity tests (label cuda)"
for t in test_cuda_ops test_cuda_model test_cuda_quant; do
  if [ ! -x "$BIN/$t" ]; then row "$t|MISSING"; FAILED=1; continue; fi
  s=$(date +%s)
  qtx timeout 150 "$BIN/$t" >"$OUT/$t.log" 2>&1
  rc=$?
  grep -E '^FAIL|^  |: [0-9]+ passed' "$OUT/$t.log" | tail -60 | tee -a "$LOG"
  summary=$(grep -E ': [0-9]+ passed, [0-9]+ failed' "$OUT/$t.log" | tail -1)
  case $rc in
    0) row "$t|PASS|${summary#*: }|$(( $(date +%s) - s )) s" ;;
    77) row "$t|SKIP|$(tail -1 "$OUT/$t.log")|" ; FAILED=1 ;;
    *) row "$t|FAIL (rc $rc)|${summary#*: }|$(( $(date +%s) - s )) s"; FAILED=1
       tail -5 "$OUT/$t.log" | tee -a "$LOG" ;;
  esac
done

say "== quickstart, $STEPS steps: CPU f32 vs GPU f32 vs GPU bf16"
DATA=build/data/fortunes.txt
[ -s "$DATA" ] || DATA=${QT_QUICKSTART_DATA:-}
if [ -z "$DATA" ] || [ ! -s "$DATA" ]; then
  say "no quickstart data (run scripts/setup.sh, or set QT_QUICKSTART_DATA)"; row "quickstart|NO DATA"; FAILED=1
else
  for mode in cpu:f32 cuda:f32 cuda:bf16; do
    dev=${mode%:*} dt=${mode#*:}
    s=$(date +%s)
    qtx "$BIN/qtrain" train recipes/quickstart.yaml --set train.steps="$STEPS" \
      --set data.train="$DATA" --set train.device="$dev" --set train.dtype="$dt" \
      --set schedule.warmup=$((STEPS / 5)) \
      --set output.dir="$OUT/qs_${dev}_${dt}" --set output.log_every=10 \
      --set output.eval_every=0 --set output.sample_tokens=0 >"$OUT/qs_${dev}_${dt}.log" 2>&1
    rc=$?
    say "   $dev $dt: rc $rc, $(( $(date +%s) - s )) s, $(grep -E '^step +[0-9]+/' "$OUT/qs_${dev}_${dt}.log" | tail -1)"
    [ $rc -eq 0 ] || { tail -5 "$OUT/qs_${dev}_${dt}.log" | tee -a "$LOG"; FAILED=1; }
  done
  cmp_losses() { # $1 run, $2 tolerance: worst relative gap to the CPU curve over logged steps
    python3 - "$OUT/qs_cpu_f32/metrics.jsonl" "$OUT/$1/metrics.jsonl" "$2" <<'PY'
import json, sys
def curve(p):
    try:
        return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r}
    except OSError:
        return {}
a, b, tol = curve(sys.argv[1]), curve(sys.argv[2]), float(sys.argv[3])
common = sorted(set(a) & set(b))
if not common:
    print("no common steps|FAIL"); sys.exit(1)
worst = max(abs(b[s] - a[s]) / abs(a[s]) for s in common)
last = common[-1]
ok = worst <= tol and len(common) == len(a)
print(f"{len(common)} logged steps, final loss {b[last]:.4f} vs CPU {a[last]:.4f}, "
      f"worst rel gap {worst:.2e} (tol {tol:g})|{'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
  }
  for spec in cuda_f32:1e-3 cuda_bf16:3e-2; do
    r=$(cmp_losses "qs_${spec%:*}" "${spec#*:}") || FAILED=1
    say "   ${spec%:*} vs cpu_f32: ${r%|*}"
    row "quickstart ${spec%:*} vs CPU|${r#*|}|${r%|*}|"
  done
fi

if ((BENCH)); then
  say "== benchmark: batch 8 x 1024, bf16 compute, f32 master weights"
  # QAT prepares Llama-family models only (GPT-2's Conv1D weights are transposed)
  for spec in gpt2:none smollm2:none smollm2:int4; do
    m=${spec%:*} q=${spec#*:} prof=0
    [ "$q" = none ] && prof=${QT_PROFILE_STEPS:-2}
    qtx timeout 240 "$BIN/gpu_train" --model "$m" --qat "$q" --batch 8 --seq 1024 --steps 10 \
      --profile "$prof" \
      >"$OUT/bench_${m}_${q}.log" 2>&1 || { say "   gpu_train $m $q FAILED"; tail -3 "$OUT/bench_${m}_${q}.log" | tee -a "$LOG"; }
    grep -E '^gpu_train|^RESULT' "$OUT/bench_${m}_${q}.log" | tee -a "$LOG"
    sed -n '/^profile of/,$p' "$OUT/bench_${m}_${q}.log" >>"$LOG"
  done
  for m in gpt2 smollm2; do
    timeout 240 python3 bench/gpu_train_torch.py --model "$m" --batch 8 --seq 1024 --steps 10 \
      >"$OUT/bench_${m}_torch.log" 2>&1 || { say "   torch $m FAILED"; tail -3 "$OUT/bench_${m}_torch.log" | tee -a "$LOG"; }
    grep -E '^gpu_train|^RESULT' "$OUT/bench_${m}_torch.log" | tee -a "$LOG"
  done
fi

say ""
say "===== issue 8 GPU table ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(( $(date +%s) - T0 )) s) ====="
for r in "${ROWS[@]}"; do IFS='|' read -r a b c d <<<"$r"; say "$(printf '%-30s %-12s %s %s' "$a" "$b" "$c" "$d")"; done
if ((BENCH)); then
  python3 - "$OUT" <<'PY' | tee -a "$LOG"
import glob, os, re, sys
res = {}
for p in glob.glob(os.path.join(sys.argv[1], "bench_*.log")):
    for line in open(p):
        if line.startswith("RESULT"):
            kv = dict(x.split("=") for x in line.split()[1:])
            res[(kv["model"], kv["mode"])] = kv
print(f"{'model':10} {'run':7} {'ms/step':>9} {'tok/s':>9} {'MFU':>6} {'vs torch':>9} {'vs bf16':>8}")
for m in ("gpt2", "smollm2"):
    t = res.get((m, "torch"))
    b = res.get((m, "bf16"))
    for mode in ("bf16", "int4", "torch"):
        r = res.get((m, mode))
        if not r:
            if not (m == "gpt2" and mode == "int4"):  # QAT prepares Llama-family only
                print(f"{m:10} {mode:7} {'(no result)':>9}")
            continue
        vt = f"{float(r['tok_s']) / float(t['tok_s']):.2f}x" if t and mode != "torch" else ""
        vb = f"{float(r['ms_step']) / float(b['ms_step']):.2f}x" if b and mode == "int4" else ""
        print(f"{m:10} {mode:7} {float(r['ms_step']):9.1f} {float(r['tok_s']):9.0f} "
              f"{100 * float(r['mfu']):5.1f}% {vt:>9} {vb:>8}")
PY
fi
say "total $(( $(date +%s) - T0 )) s; logs in $OUT"
exit $FAILED
