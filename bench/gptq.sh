#!/usr/bin/env bash
# GPTQ benchmark: time and peak memory to GPTQ-quantize a model in qtrain and in a peer,
# PyTorch on the CPU running the reference algorithm (bench/gptq_torch.py), on the same
# model, the same calibration set (its SHA-256 checked equal) and the same thread count;
# then the perplexity of both results on the same text. Prints the ratios.
# usage: bash bench/gptq.sh [--model CKPT.h5] [--samples N] [--threads T] [--out DIR]
#   default: the pretrained model of bench/qat_experiment.sh (runs/exp/pretrain), 128
#   sequences of 512 tokens, all cores. Installs torch + transformers if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
model=runs/exp/pretrain/checkpoint.h5
samples=128
threads=$(nproc)
out=runs/bench-gptq
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bash bench/gptq.sh [--model CKPT.h5] [--samples N] [--threads T] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -f "$model" ] || { echo "$model: no such checkpoint (run bench/qat_experiment.sh first)" >&2; exit 2; }
python3 -c "import torch, transformers" 2>/dev/null || pip install -q torch transformers safetensors
Q=build/qtrain
mkdir -p "$out"
data=$(sed -n 's/^  train: "\(.*\)"$/\1/p' "$(dirname "$model")/recipe.yaml" | head -1)
vf=$(sed -n 's/^  val_fraction: \(.*\)$/\1/p' "$(dirname "$model")/recipe.yaml" | head -1)
size=$(stat -c %s "$data")
val=$out/val.txt
tail -c "$(python3 -c "print(int($size * $vf))")" "$data" >"$val"
rm -rf "$out/float-hf" "$out/gptq"
$Q export "$model" --format hf --out "$out/float-hf" >/dev/null

echo "== qtrain: GPTQ int4 g128 sym, $samples x 512 calibration tokens, $threads threads"
/usr/bin/time -f "%e %M" -o "$out/qtrain.time" $Q quantize recipes/ptq_gptq_int4.yaml \
  --set model.from="$model" --set data.train="$data" --set data.val_fraction="$vf" \
  --set quantize.calibration.samples="$samples" --set quantize.compare=false \
  --set train.threads="$threads" --set export.gptq="$out/gptq" --set output.dir="$out" | tee "$out/qtrain.log"
q_secs=$(sed -n 's/.* weights quantized in \([0-9.]*\) s/\1/p' "$out/qtrain.log")
q_rss=$(cut -d' ' -f2 "$out/qtrain.time")
q_ppl=$($Q eval "$out/gptq" --data "$val" --context 512 --stride 256 2>/dev/null | sed -n 's/.*perplexity \([0-9.]*\)$/\1/p')
q_hash=$(python3 -c "import json; print(json.load(open('$out/gptq/config.json'))['qtrain']['calibration_hash'])")

echo "== torch (reference GPTQ on CPU): same model, calibration, threads"
python3 bench/gptq_torch.py "$out/float-hf" "$data" "$vf" "$samples" 512 1234 "$threads" "$val" "$out/torch.json"
read -r t_secs t_rss t_ppl t_hash < <(python3 -c "
import json; j = json.load(open('$out/torch.json')); print(j['seconds'], j['peak_rss_kb'], j['ppl'], j['calib_hash'])")
[ "$q_hash" = "$t_hash" ] || { echo "calibration sets differ: qtrain $q_hash, torch $t_hash" >&2; exit 1; }
echo
echo "calibration set: $q_hash (identical in both)"
printf "%-8s %10s %14s %12s\n" "" "GPTQ s" "peak RSS MiB" "ppl"
printf "%-8s %10.1f %14.0f %12.4f\n" qtrain "$q_secs" "$(echo "$q_rss / 1024" | bc -l)" "$q_ppl"
printf "%-8s %10.1f %14.0f %12.4f\n" torch "$t_secs" "$(echo "$t_rss / 1024" | bc -l)" "$t_ppl"
python3 -c "print(f'ratios (torch / qtrain): time {$t_secs / $q_secs:.2f}x, peak memory {$t_rss / $q_rss:.2f}x; perplexity qtrain / torch {$q_ppl / $t_ppl:.4f}')"
