#!/usr/bin/env bash
# Training throughput on CPU: `qtrain train` vs PyTorch eager on the same Llama, batch,
# data and thread count; prints tokens/s and peak RSS of both and their ratios.
# usage: bash bench/train.sh [--threads N] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
steps=60
while [ $# -gt 0 ]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "usage: bash bench/train.sh [--threads N] [--steps N]" >&2; exit 2 ;;
  esac
done
python3 -c "import torch" 2>/dev/null || python3 -m pip install --quiet torch
bash scripts/setup.sh >/dev/null
data=build/data/fortunes.txt
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 - "$threads" "$steps" "$data" "$out" <<'PY'
import json, re, resource, subprocess, sys
threads, steps, data, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = dict(dim=128, layers=4, heads=4, kv_heads=2, ffn=384, seq=128, batch=16)
q = subprocess.run(
    ["build/qtrain", "train", "recipes/quickstart.yaml",
     "--set", f"train.steps={steps}", "--set", f"train.threads={threads}",
     "--set", "schedule.warmup=5", "--set", f"output.log_every={steps}",
     "--set", "output.eval_batches=1", "--set", "output.sample_tokens=0",
     "--set", f"output.dir={out}/run"], capture_output=True, text=True, check=True)
q_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
q_tps = float(re.findall(r"(\d+) tok/s", q.stdout)[-1])
args = ["python3", "bench/bench_train_torch.py", "--data", data, "--steps", str(steps),
        "--threads", threads] + [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]
t = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
print(f"model: Llama dim {cfg['dim']}, {cfg['layers']} layers, {cfg['heads']}/{cfg['kv_heads']} "
      f"heads, ffn {cfg['ffn']}, vocab 256; batch {cfg['batch']} x {cfg['seq']} tokens; "
      f"{steps} steps; {threads} threads")
print(f"{'':8} | {'tokens/s':>9} | {'peak RSS MB':>11}")
print(f"{'qtrain':8} | {q_tps:>9.0f} | {q_rss:>11.1f}")
print(f"{'torch':8} | {t['tokens_per_s']:>9.0f} | {t['peak_rss_mb']:>11.1f}   ({t['torch']})")
print(f"speed ratio qtrain/torch: {q_tps / t['tokens_per_s']:.2f}x (goal >= 1.5); "
      f"memory ratio qtrain/torch: {q_rss / t['peak_rss_mb']:.2f} (goal <= 1)")
PY
