#!/usr/bin/env bash
# test_ptq_cli.sh QTRAIN - post-training quantization and export through the command line:
#  - bad quantize:/export: sections and flags fail (exit 2) naming the file, key or layer,
#    and leave no output (nor a temporary) behind;
#  - a tiny float run, then `qtrain quantize` with rtn / gptq / awq into every export
#    format; each file is read back and compared with the float model (the report line);
#  - `qtrain eval` of an export gives the candidate perplexity the report printed;
#  - `qtrain compare` of a model with itself: KL 0, top-1 100%;
#  - `qtrain export` of a QAT checkpoint is its fake-quant model exactly (KL 0), of a
#    float one a round-to-nearest file;
#  - provenance (version, method, calibration hash, recipe) in the files' metadata.
# Prints "test_ptq_cli: N passed, M failed".
set -u
Q=$1
. "$(dirname "$0")/cli_lib.sh"
# nothing at PATH and no temporary beside it
absent() {
  if [ -e "$1" ] || ls "$1".tmp* >/dev/null 2>&1; then bad "partial output left at $1: $(ls -d "$1"* 2>&1)"; else ok; fi
}
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" | head -1; }

for i in $(seq 1 300); do echo "the cat sat on the mat and the dog sat on the log $i."; done >"$tmp/text.txt"
head -c 1500 "$tmp/text.txt" >"$tmp/val.txt"
cat >"$tmp/float.yaml" <<YAML
model: {dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 128, max_seq_len: 64}
data: {train: $tmp/text.txt, seq_len: 32, val_fraction: 0.1}
train: {steps: 30, batch_size: 4, threads: 2}
schedule: {warmup: 3}
output: {dir: $tmp/float, log_every: 10, eval_batches: 2, sample_tokens: 0}
YAML
"$Q" train "$tmp/float.yaml" >"$tmp/float.log" 2>&1 || bad "float run failed: $(tail -3 "$tmp/float.log")"
F=$tmp/float/checkpoint.h5

# qrecipe NAME QUANTIZE-SECTION [EXPORT-SECTION]: $tmp/NAME.yaml quantizes the float run
qrecipe() {
  cat >"$tmp/$1.yaml" <<YAML
name: $1
model: {from: $F}
data: {train: $tmp/text.txt, tokenizer: model, val_fraction: 0.1}
quantize:
$2
  calibration: {samples: 8, seq_len: 32, seed: 3}
  compare_data: $tmp/val.txt
  compare_context: 64
${3:-}
output: {dir: $tmp/$1}
YAML
}

# --- bad input --------------------------------------------------------------------
qrecipe b1 '  method: spqr'
expect 2 "quantize.method must be one of" -- quantize "$tmp/b1.yaml"
expect 2 "$tmp/b1.yaml:5:" -- quantize "$tmp/b1.yaml"
qrecipe b2 '  {method: gptq, format: nf4}'
qrecipe b2 '  method: gptq
  format: nf4'
expect 2 "quantize.format: gptq needs an int format" -- quantize "$tmp/b2.yaml"
qrecipe b3 '  method: gptq
  format: int4
  group_size: 48' "export: {gptq: $tmp/b3/out}"
expect 2 "model.layers.0.self_attn.q_proj.weight" -- quantize "$tmp/b3.yaml"
absent "$tmp/b3/out"
qrecipe b4 '  method: awq
  format: int4
  group_size: 32
  calibration: {samples: 100000}' "export: {awq: $tmp/b4/out}"
sed -i 's/  calibration: {samples: 8, seq_len: 32, seed: 3}//' "$tmp/b4.yaml"
expect 2 "calibration asks for 100000 sequences" -- quantize "$tmp/b4.yaml"
absent "$tmp/b4/out"
qrecipe b5 '  method: rtn
  format: fp4' 
expect 2 "no exporter writes fp4" -- quantize "$tmp/b5.yaml"
qrecipe b6 '  method: rtn
  format: int4
  group_size: 32' "export: {gguf: $tmp/b6/m.gguf}"
expect 2 "model.layers.0" -- quantize "$tmp/b6.yaml" # int4 has no GGUF encoding
absent "$tmp/b6/m.gguf"
qrecipe b7 '  method: rtn
  format: q8_0'
sed -i "s#model: {from: .*}#model: {from: $(dirname "$0")/fixtures/gguf_reference.gguf}#" "$tmp/b7.yaml"
expect 2 "gguf_reference.gguf" -- quantize "$tmp/b7.yaml" # not a llama GGUF
qrecipe b8 '  method: gptq
  format: int4
  group_size: 32
  act_order: true' "export: {awq: $tmp/b8/out}"
"$Q" quantize "$tmp/b8.yaml" >"$tmp/b8.log" 2>&1
rc=$?
# refused before the (long) GPTQ run: an AWQ file cannot hold act-order
[ $rc -eq 2 ] && ! grep -q "block 1/" "$tmp/b8.log" && ok || bad "act-order into awq: exit $rc: $(cat "$tmp/b8.log")"
absent "$tmp/b8/out"
expect 2 "expected gguf, gptq, awq, bnb-nf4 or fp8" -- export "$F" --format onnx --out "$tmp/x"
absent "$tmp/x"
expect 2 "is not a qtrain export" -- export "$F" --format fp8 --out "$tmp/float" --no-compare
[ -f "$F" ] && ok || bad "an export over the training run's directory deleted it"
expect 2 "usage" -- compare "$F" "$F"
expect 2 "--quant" -- export "$F" --format gguf --out "$tmp/x.gguf" --quant int11
absent "$tmp/x.gguf"

# --- quantize into every format -----------------------------------------------------
# run NAME: quantize as $tmp/NAME.yaml says; the report line must come out
run() {
  "$Q" quantize "$tmp/$1.yaml" >"$tmp/$1.log" 2>&1 || { bad "$1: $(tail -3 "$tmp/$1.log")"; return 1; }
  grep -q "KL divergence mean" "$tmp/$1.log" && ok || bad "$1: no comparison: $(tail -3 "$tmp/$1.log")"
}
qrecipe gptq '  method: gptq
  format: int4
  group_size: 32
  act_order: true' "export: {gptq: $tmp/out/gptq}"
run gptq
qrecipe awq '  method: awq
  format: int4
  group_size: 32' "export: {awq: $tmp/out/awq}"
run awq
qrecipe rtn '  method: rtn
  format: q8_0' "export: {gguf: $tmp/out/q8.gguf}"
run rtn
qrecipe nf4 '  method: rtn
  format: nf4
  group_size: 64' "export: {bnb_nf4: $tmp/out/nf4}"
run nf4
qrecipe fp8 '  method: rtn
  format: fp8_e4m3
  granularity: channel' "export: {fp8: $tmp/out/fp8}"
run fp8
for d in gptq awq nf4 fp8; do
  [ -f "$tmp/out/$d/config.json" ] && [ -f "$tmp/out/$d/model.safetensors" ] && ok || bad "$d: files missing: $(ls "$tmp/out/$d" 2>&1)"
done
# the report's candidate perplexity is what qtrain eval says of the file
for e in gptq:$tmp/out/gptq awq:$tmp/out/awq rtn:$tmp/out/q8.gguf; do
  name=${e%%:*}
  file=${e#*:}
  rep=$(grep "KL divergence" "$tmp/$name.log" | field candidate)
  ev=$("$Q" eval "$file" --data "$tmp/val.txt" --context 64 2>/dev/null | sed -n 's/.*perplexity \([0-9.]*\)$/\1/p')
  [ -n "$rep" ] && [ "$rep" = "$ev" ] && ok || bad "$name: report ppl '$rep' != eval '$ev'"
done
# gptq and awq took calibration data: its hash is in the file; so are method and version
grep -q '"calibration_hash":[[:space:]]*"sha256:[0-9a-f]\{64\}"' "$tmp/out/gptq/config.json" && ok ||
  bad "gptq config.json has no calibration hash: $(grep -o '"qtrain".*' "$tmp/out/gptq/config.json" | head -c 300)"
grep -q '"method":[[:space:]]*"awq"' "$tmp/out/awq/config.json" && ok || bad "awq config.json has no method"
"$Q" info "$tmp/out/q8.gguf" >"$tmp/info.txt" 2>&1
grep -q "qtrain.method .*rtn" "$tmp/info.txt" && grep -q "qtrain.version" "$tmp/info.txt" && ok ||
  bad "gguf provenance: $(grep qtrain "$tmp/info.txt")"

# --- compare ------------------------------------------------------------------------
self=$("$Q" compare "$F" "$F" --data "$tmp/val.txt" --context 64 2>&1)
grep -q "KL divergence mean 0.000000, p99 0.000000, max 0.000000; top-1 agreement 100.00%" <<<"$self" &&
  grep -q "(+0.00%)" <<<"$self" && ok || bad "compare with itself: $self"
cmpq=$("$Q" compare "$F" "$tmp/out/gptq" --data "$tmp/val.txt" --context 64 2>&1)
k=$(field "mean" <<<"$cmpq")
[ -n "$k" ] && awk "BEGIN{exit !($k > 0)}" && ok || bad "compare with the gptq export: $cmpq"

# --- export ---------------------------------------------------------------------------
"$Q" export "$F" --format gguf --out "$tmp/out/rtn.gguf" --data "$tmp/val.txt" >"$tmp/ex1.log" 2>&1 &&
  grep -q "round to nearest" "$tmp/ex1.log" && grep -q "KL divergence" "$tmp/ex1.log" && ok ||
  bad "export float to gguf: $(cat "$tmp/ex1.log")"
# a QAT checkpoint: exported weights are the fake-quant weights, bit for bit
sed -e "s#^model: .*#model: {from: $F}#; s#steps: 30#steps: 8#; s#dir: $tmp/float#dir: $tmp/qat#" \
  -e "s#^data: {train#data: {tokenizer: model, train#" "$tmp/float.yaml" >"$tmp/qat.yaml"
printf 'qat:\n  weight: {format: int4, group_size: 32}\n' >>"$tmp/qat.yaml"
"$Q" train "$tmp/qat.yaml" >"$tmp/qat.log" 2>&1 || bad "qat run: $(tail -3 "$tmp/qat.log")"
"$Q" export "$tmp/qat/checkpoint.h5" --format gptq --out "$tmp/out/qat-gptq" --data "$tmp/val.txt" >"$tmp/ex2.log" 2>&1 ||
  bad "export qat: $(cat "$tmp/ex2.log")"
grep -q "converted from QAT" "$tmp/ex2.log" &&
  grep -q "KL divergence mean 0.000000, p99 0.000000, max 0.000000; top-1 agreement 100.00%" "$tmp/ex2.log" && ok ||
  bad "QAT export differs from the QAT model: $(cat "$tmp/ex2.log")"
expect 2 "--quant does not apply" -- export "$tmp/qat/checkpoint.h5" --format gptq --out "$tmp/y" --quant int8
absent "$tmp/y"
# without --data a checkpoint compares on its own validation split
"$Q" export "$tmp/qat/checkpoint.h5" --format gptq --out "$tmp/out/qat2" >"$tmp/ex3.log" 2>&1 &&
  grep -q "validation part" "$tmp/ex3.log" && ok || bad "export without --data: $(cat "$tmp/ex3.log")"

finish test_ptq_cli
