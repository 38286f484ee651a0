#!/usr/bin/env bash
# The PTQ experiment (issue: PTQ algorithms, calibration and exports): on the pretrained
# ~24M-parameter Llama of the QAT experiment (bench/qat_experiment.sh), perplexity on the
# held-out text and the parity report (KL divergence from the float model, top-1
# agreement) of every method and format, each measured on the exported file read back:
#   float; RTN, GPTQ and AWQ at int4 g128 and int3 g128; NF4; FP8; Q8_0, Q4_0, Q4_K
#   (GGUF rows also through llama.cpp: tests/llamacpp_ppl.py); and at int4 g32 the QAT
#   checkpoint of the QAT experiment next to RTN and GPTQ of the float model.
# usage: bash bench/ptq_experiment.sh [--out DIR] [--samples N]
#   DIR: the QAT experiment's directory (default runs/exp): DIR/pretrain/checkpoint.h5,
#   DIR/val.txt, DIR/qat_int4/checkpoint.h5. Results: DIR/ptq/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/exp
samples=128
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --samples) samples=$2; shift 2 ;;
    *) echo "usage: bash bench/ptq_experiment.sh [--out DIR] [--samples N]" >&2; exit 2 ;;
  esac
done
Q=build/qtrain
float=$out/pretrain/checkpoint.h5
val=$out/val.txt
[ -f "$float" ] && [ -f "$val" ] || { echo "run bench/qat_experiment.sh --out $out first" >&2; exit 2; }
d=$out/ptq
mkdir -p "$d"
res=$d/results.md
rows=$d/rows.txt
: >"$rows"

# row NAME METHOD FORMAT EXPORT-KEY [--set ...]: quantize the float model, export, and
# record the report of the exported file against the float model
row() { # a failed row is reported and skipped
  row_ "$@" || echo "$1: FAILED, see $d/$1.log" >&2
}
row_() {
  local name=$1 method=$2 format=$3 key=$4
  shift 4
  local path=$d/$name
  [ "$key" = gguf ] && path=$d/$name.gguf
  local exp=(--set export."$key"="$path")
  [ "$key" = none ] && exp=()
  local log=$d/$name.log
  if ! grep -q "KL divergence" "$log" 2>/dev/null; then
    rm -rf "$path"
    $Q quantize recipes/ptq_gptq_int4.yaml --set name="$name" --set model.from="$float" \
      --set quantize.method="$method" --set quantize.format="$format" --set export.gptq= \
      "${exp[@]}" --set quantize.calibration.samples="$samples" \
      --set quantize.compare_data="$val" --set quantize.compare_context=512 \
      --set output.dir="$d" "$@" >"$log" 2>&1 || { echo "$name failed: $(tail -3 "$log")" >&2; return 1; }
  fi
  local rep secs llcpp=""
  rep=$(grep "KL divergence" "$log" | tail -1)
  [ "$key" = none ] && name="$name (in memory)"
  secs=$(sed -n 's/.* weights quantized in \([0-9.]*\) s/\1/p' "$log")
  if [ "$key" = gguf ]; then # llama.cpp on the same file: non-overlapping 512-token windows
    local qe lc
    qe=$($Q eval "$path" --data "$val" --context 512 --stride 512 2>/dev/null | sed -n 's/.*perplexity \([0-9.]*\)$/\1/p')
    lc=$(python3 tests/llamacpp_ppl.py "$path" "$val" 512 2>/dev/null | sed -n 's/^llamacpp perplexity \([0-9.]*\).*/\1/p')
    llcpp="$lc (qtrain $qe)"
  fi
  echo "$name|$method|$format|$rep|$secs|$llcpp" >>"$rows"
  echo "$name: $rep" >&2
}

row rtn_int4_sym rtn int4 gptq
row gptq_int4 gptq int4 gptq
row rtn_int4_asym rtn int4 awq --set quantize.symmetric=false
row awq_int4 awq int4 awq
row rtn_int3_sym rtn int3 gptq
row gptq_int3 gptq int3 gptq
# int3 asymmetric: no exporter holds it exactly (GPTQ v1 cannot store a zero point of 0,
# AWQ GEMM is 4-bit): measured in memory
row rtn_int3_asym rtn int3 none --set quantize.symmetric=false --set export.write=false
row awq_int3 awq int3 none --set export.write=false
row awq_int4_duo awq int4 awq --set quantize.awq_duo=true
row awq_int3_duo awq int3 none --set export.write=false --set quantize.awq_duo=true
row nf4 rtn nf4 bnb_nf4 --set quantize.group_size=64
row fp8 rtn fp8_e4m3 fp8 --set quantize.granularity=channel
row q8_0 rtn q8_0 gguf --set quantize.group_size=0
row q4_0 rtn q4_0 gguf --set quantize.group_size=0
row q4_k rtn q4_k gguf --set quantize.group_size=0
row rtn_int4_g32 rtn int4 gptq --set quantize.group_size=32
row gptq_int4_g32 gptq int4 gptq --set quantize.group_size=32
# the QAT checkpoint (int4 g32 symmetric f16, 200 steps of QAT from the float model),
# exported bit for bit; compared with the float model, and with the float model fine-tuned
# for the same 200 steps (float_ft: the reference QAT should be measured against), next to
# RTN of that fine-tuned model in the same format
qat=$out/qat_int4/checkpoint.h5
ft=$out/float_ft/checkpoint.h5
if [ -f "$qat" ] && [ -f "$ft" ]; then
  if ! grep -q "KL divergence" "$d/qat_int4_g32.log" 2>/dev/null; then
    rm -rf "$d/qat_int4_g32"
    $Q export "$qat" --format gptq --out "$d/qat_int4_g32" --no-compare >"$d/qat_int4_g32.log" 2>&1
    $Q compare "$float" "$d/qat_int4_g32" --data "$val" --context 512 >>"$d/qat_int4_g32.log" 2>&1
  fi
  if ! grep -q "KL divergence" "$d/qat_int4_g32_vs_ft.log" 2>/dev/null; then
    $Q compare "$ft" "$d/qat_int4_g32" --data "$val" --context 512 >"$d/qat_int4_g32_vs_ft.log" 2>&1
  fi
  if ! grep -q "KL divergence" "$d/ft_rtn_int4_g32.log" 2>/dev/null; then
    rm -rf "$d/ft_rtn_int4_g32"
    $Q quantize recipes/ptq_gptq_int4.yaml --set name=ft_rtn --set model.from="$ft" \
      --set quantize.method=rtn --set quantize.group_size=32 --set export.gptq="$d/ft_rtn_int4_g32" \
      --set quantize.compare_data="$val" --set quantize.compare_context=512 --set output.dir="$d" \
      >"$d/ft_rtn_int4_g32.log" 2>&1 || true
  fi
  echo "qat_int4_g32 (vs float)|qat|int4 g32|$(grep "KL divergence" "$d/qat_int4_g32.log" | tail -1)||" >>"$rows"
  echo "rtn_int4_g32 of float_ft (vs float_ft)|rtn|int4 g32|$(grep "KL divergence" "$d/ft_rtn_int4_g32.log" | tail -1)||" >>"$rows"
  echo "qat_int4_g32 (vs float_ft)|qat|int4 g32|$(grep "KL divergence" "$d/qat_int4_g32_vs_ft.log" | tail -1)||" >>"$rows"
fi

{
  echo "PTQ experiment: ~24M-parameter Llama (bytes), perplexity per byte on $(wc -c <"$val") held-out bytes"
  echo "(context 512, stride 256), each row measured on its exported file read back by qtrain;"
  echo "calibration $samples x 512 tokens of the training text. KLD: KL(float || quantized) per token."
  echo
  echo "| row | method | format | ppl | vs float | KLD mean | KLD p99 | top-1 | quantize s | llama.cpp ppl (ctx 512, stride 512) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  first=1
  while IFS='|' read -r name method format rep secs llcpp; do
    ref=$(sed -n 's/.*perplexity reference \([0-9.]*\).*/\1/p' <<<"$rep")
    if [ $first = 1 ]; then echo "| float | - | f32 | $ref | | | | | | |"; first=0; fi
    ppl=$(sed -n 's/.*candidate \([0-9.]*\) .*/\1/p' <<<"$rep")
    rel=$(sed -n 's/.*candidate [0-9.]* (\([-+0-9.]*%\)).*/\1/p' <<<"$rep")
    km=$(sed -n 's/.*mean \([0-9.]*\),.*/\1/p' <<<"$rep")
    kp=$(sed -n 's/.*p99 \([0-9.]*\),.*/\1/p' <<<"$rep")
    t1=$(sed -n 's/.*top-1 agreement \([0-9.]*%\).*/\1/p' <<<"$rep")
    echo "| $name | $method | $format | $ppl | $rel | $km | $kp | $t1 | $secs | $llcpp |"
  done <"$rows"
} >"$res"
cat "$res"
