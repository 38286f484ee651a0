#!/usr/bin/env bash
# bench/lora_experiment.sh - issue 6's experiment: LoRA and QLoRA fine-tunes of a
# pretrained model on an instruction set, held-out loss (response tokens only) before
# and after, and the QLoRA/LoRA gap.
#   --base CKPT   the pretrained model (default: the QAT experiment's, runs/exp/pretrain)
#   --steps N     optimizer steps of each fine-tune (default 150)
#   --out DIR     runs and the table (default runs/lora_exp)
# The instruction set (bench/make_instruct.py) is three tasks built from the quickstart
# text: uppercase a sentence, repeat it, give its first word. Both fine-tunes use
# recipes/lora_llama.yaml / qlora_nf4.yaml unchanged except for the data and the steps;
# "before" is the same recipe at learning rate 0 for one step (B = 0: the base model).
# Also QAT + LoRA (recipes/qat_lora.yaml: the base through int4 g32), and the merged
# checkpoints exported in 4 bits, compared with their merged adapter models.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=runs/exp/pretrain/checkpoint.h5 STEPS=150 OUT=runs/lora_exp
while (($#)); do
  case "$1" in
    --base) BASE=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "lora_experiment: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -s "$BASE" ] || { echo "lora_experiment: no base model $BASE (bash bench/qat_experiment.sh makes it)" >&2; exit 2; }
mkdir -p "$OUT"
python3 bench/make_instruct.py build/data/fortunes.txt "$OUT/instruct.jsonl"
common=(--set model.from="$BASE" --set data.train="$OUT/instruct.jsonl" --set data.format=jsonl
        --set output.log_every=25 --set output.eval_every=0 --set output.checkpoint_every=0)
run() { # name recipe extra...
  local name=$1 recipe=$2; shift 2
  /usr/bin/time -v build/qtrain train "$recipe" "${common[@]}" --set output.dir="$OUT/$name" "$@" \
    >"$OUT/$name.log" 2>"$OUT/$name.time" || { tail -5 "$OUT/$name.log" "$OUT/$name.time"; exit 1; }
  echo "$name: $(grep -E '^eval step' "$OUT/$name.log" | tail -1), $(grep -E 'Elapsed' "$OUT/$name.time" | sed 's/.*: //') wall, peak RSS $(grep -E 'Maximum resident' "$OUT/$name.time" | awk '{printf "%.0f MiB", $NF/1024}')"
}
run before recipes/lora_llama.yaml --set train.steps=1 --set optimizer.lr=0 --set schedule.warmup=0
run lora recipes/lora_llama.yaml --set train.steps="$STEPS"
run qlora recipes/qlora_nf4.yaml --set train.steps="$STEPS"
run qatlora recipes/qat_lora.yaml --set train.steps="$STEPS"
# merged and exported in 4 bits, each against its merged adapter model (the reference the
# export report names)
export4() { # name format
  build/qtrain export "$OUT/$1/checkpoint.h5" --format "$2" --out "$OUT/$1-$2" >"$OUT/$1-$2.log" 2>&1 ||
    { tail -3 "$OUT/$1-$2.log"; exit 1; }
  echo "$1 -> $2: $(grep -E 'compare' "$OUT/$1-$2.log" | sed 's/.*tokens: //')"
}
export4 qlora bnb-nf4
export4 qlora gptq
export4 qatlora gptq
python3 - "$OUT" <<'PY' | tee "$OUT/results.md"
import re, sys
out = sys.argv[1]
def val(name):
    v = [float(m.group(1)) for m in re.finditer(r"val loss ([0-9.]+)", open(f"{out}/{name}.log").read())]
    return v[-1]
b, l, q, a = val("before"), val("lora"), val("qlora"), val("qatlora")
print("| run | held-out loss (response tokens) | vs before |")
print("| --- | --- | --- |")
print(f"| base model (before) | {b:.4f} | |")
print(f"| LoRA, float base | {l:.4f} | {100 * (l - b) / b:+.1f}% |")
print(f"| QLoRA, NF4 base | {q:.4f} | {100 * (q - b) / b:+.1f}% |")
print(f"| QAT + LoRA, int4 g32 fake-quant base | {a:.4f} | {100 * (a - b) / b:+.1f}% |")
print(f"\nQLoRA's final loss is {100 * (q - l) / l:+.2f}% from LoRA's (goal: within 2%).")
PY
