#!/usr/bin/env bash
# The QAT experiment (issue: quantizer core + QAT): does QAT recover the perplexity that
# round-to-nearest PTQ loses?
#   1. pretrain a ~24M-parameter Llama on the fortunes text (recipes/pretrain_llama.yaml,
#      shortened by the overrides below to fit a 2-core machine);
#   2. perplexity on the held-out tail of the text (the run's validation split) of the
#      float model, and of its RTN PTQ in int4 g32 (weights only) and 8da4w (int8
#      dynamic per-token activations + int4 g32 weights);
#   3. fine-tune from the float checkpoint for the same number of steps with QAT in each
#      format (recipes/qat_int4.yaml, recipes/qat_8da4w.yaml) and, as a control, in float;
#   4. a table: float, PTQ, QAT, float fine-tune (and its PTQ), and the share of the PTQ
#      gap QAT recovered.
# usage: bash bench/qat_experiment.sh [--pretrain-steps N] [--qat-steps N] [--out DIR]
# Reuses DIR/<run>/checkpoint.h5 of every run that exists. About 90 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
pt_steps=700
qat_steps=200
out=runs/qat-experiment
while [ $# -gt 0 ]; do
  case $1 in
    --pretrain-steps) pt_steps=$2; shift 2 ;;
    --qat-steps) qat_steps=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: bash bench/qat_experiment.sh [--pretrain-steps N] [--qat-steps N] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -x build/qtrain ] || bash scripts/setup.sh >/dev/null
Q=build/qtrain
mkdir -p "$out"
data=build/data/fortunes.txt
# the validation split: the last 1% of the bytes (data.val_fraction 0.01)
size=$(stat -c %s "$data")
tail -c $((size / 100)) "$data" >"$out/val.txt"

if [ ! -f "$out/pretrain/checkpoint.h5" ]; then
  $Q train recipes/pretrain_llama.yaml --set train.steps="$pt_steps" --set train.batch_size=8 \
    --set train.grad_accum=1 --set data.seq_len=256 --set schedule.warmup=50 \
    --set optimizer.lr=1e-3 --set output.dir="$out/pretrain" --set output.log_every=25 \
    --set output.eval_every=0 --set output.checkpoint_every=100 --set output.sample_tokens=0 \
    | tee "$out/pretrain.log"
fi
float=$out/pretrain/checkpoint.h5

finetune() { # name recipe [extra --set ...]
  local name=$1 recipe=$2
  shift 2
  [ -f "$out/$name/checkpoint.h5" ] && return
  $Q train "$recipe" --set model.from="$float" --set train.steps="$qat_steps" \
    --set output.dir="$out/$name" --set output.eval_every=0 --set output.checkpoint_every=0 "$@" \
    | tee "$out/$name.log"
}
# harsher formats than the two the issue names, where RTN costs this small model more:
# int4 with one scale per output channel, and int2 in groups of 32
sed 's/weight: {format: int4, granularity: group, group_size: 32,/weight: {format: int4, granularity: channel, group_size: 0,/' \
  recipes/qat_int4.yaml >"$out/int4_channel.yaml"
sed 's/weight: {format: int4, granularity: group, group_size: 32,/weight: {format: int2, granularity: group, group_size: 32,/' \
  recipes/qat_int4.yaml >"$out/int2_group.yaml"
finetune qat_int4 recipes/qat_int4.yaml
finetune qat_8da4w recipes/qat_8da4w.yaml
finetune float_ft recipes/qat_int4.yaml --set qat.weight.format=none
finetune qat_int4_channel "$out/int4_channel.yaml"
finetune qat_int2_group "$out/int2_group.yaml"

ppl() { # model [eval flags...] -> perplexity
  $Q eval "$@" --data "$out/val.txt" --context 512 --stride 256 | tee -a "$out/evals.log" |
    sed -n 's/.*perplexity \([0-9.]*\)$/\1/p'
}
: >"$out/evals.log"
f=$(ppl "$float")
ff=$(ppl "$out/float_ft/checkpoint.h5")
row() { # label recipe qat-ckpt
  local rtn q qc rtn_ft
  rtn=$(ppl "$float" --qat "$2")
  rtn_ft=$(ppl "$out/float_ft/checkpoint.h5" --qat "$2")
  q=$(ppl "$3")
  qc=$(ppl "$3" --convert)
  python3 - "$1" "$f" "$rtn" "$q" "$qc" "$ff" "$rtn_ft" <<'PY'
import sys
label, f, rtn, q, qc, ff, rtn_ft = sys.argv[1], *map(float, sys.argv[2:])
rec = (rtn - q) / (rtn - f) if rtn != f else float("nan")
rec_ft = (rtn_ft - q) / (rtn_ft - ff) if rtn_ft != ff else float("nan")
print(f"| {label} | {f:.4f} | {rtn:.4f} | {q:.4f} | {qc:.4f} | {ff:.4f} | {rtn_ft:.4f} | "
      f"{100 * rec:.0f}% | {100 * rec_ft:.0f}% |")
PY
}
{
  echo "QAT experiment: ~24M-parameter Llama, bytes, perplexity per byte on $(wc -c <"$out/val.txt") held-out bytes"
  echo "(pretrain $pt_steps steps; QAT and float fine-tune $qat_steps steps each, from the float checkpoint)"
  echo
  echo "| format | float | PTQ RTN | QAT | QAT converted | float FT | float FT + RTN | recovered (vs float) | recovered (vs float FT) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  row "int4 g32 (weights)" recipes/qat_int4.yaml "$out/qat_int4/checkpoint.h5"
  row "8da4w" recipes/qat_8da4w.yaml "$out/qat_8da4w/checkpoint.h5"
  row "int4 per-channel (weights)" "$out/int4_channel.yaml" "$out/qat_int4_channel/checkpoint.h5"
  row "int2 g32 (weights)" "$out/int2_group.yaml" "$out/qat_int2_group/checkpoint.h5"
  echo
  echo "recovered = (PTQ - QAT) / (PTQ - float): the share of the PTQ perplexity gap QAT closes."
} | tee "$out/results.md"
