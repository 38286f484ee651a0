#!/usr/bin/env bash
# test_lora_export.sh QTRAIN - a LoRA run's checkpoint used as a model (issue 6):
#  - a tiny float run, then LoRA (r 4) and QLoRA (NF4 base) runs from its checkpoint;
#  - `qtrain eval` of each LoRA checkpoint scores the adapted model: on the validation
#    windows the run evaluated (the same bytes, context 32, stride 32: the same 256
#    predictions with the same contexts) it gives the run's final val loss (1e-3 rel.);
#  - `qtrain export --format hf` of it (the adapter merged in, QLoRA: into the dequantized
#    NF4 base), evaluated, gives that loss again, and so does `export --merge ADAPTER_DIR`
#    (--nf4 for QLoRA) of the float base checkpoint;
#  - `qtrain export --format gguf` of the LoRA checkpoint reports its KL divergence against
#    the merged adapter model and says so;
#  - --merge of a directory without adapter_config.json exits 2 naming it.
# Prints "test_lora_export: N passed, M failed".
set -u
Q=$1
. "$(dirname "$0")/cli_lib.sh"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

tiny_data
base() { tiny_recipe "$1"; } # cli_lib.sh
# the run's validation windows as a file: bytes [val_start, val_start + 8 * 32 + 1), with
# val_start as data/dataset.c computes it (val_fraction a float)
python3 - "$tmp/text.txt" "$tmp/val.txt" <<'PY'
import struct, sys
raw = open(sys.argv[1], "rb").read()
frac = struct.unpack("f", struct.pack("f", 0.1))[0]
start = len(raw) - int(len(raw) * frac)
open(sys.argv[2], "wb").write(raw[start:start + 8 * 32 + 1])
PY

base float >"$tmp/float.yaml"
"$Q" train "$tmp/float.yaml" >"$tmp/float.log" 2>&1 || bad "float run failed: $(tail -3 "$tmp/float.log")"
lora_run() { # lora_run NAME LORA-SECTION: 20 steps at lr 1e-2 from the float checkpoint
  { base "$1" | sed "s#^model: .*#model: {from: $tmp/float/checkpoint.h5}#
                     s#^data: {train#data: {tokenizer: model, train#
                     s#steps: 30#steps: 20#"
    printf 'optimizer: {lr: 1.0e-2, weight_decay: 0.0}\nlora:\n%s\n' "$2"; } >"$tmp/$1.yaml"
  "$Q" train "$tmp/$1.yaml" >"$tmp/$1.log" 2>&1 || bad "$1 run failed: $(tail -3 "$tmp/$1.log")"
}
# vl NAME: the last validation loss the run printed
vl() { sed -n 's/^eval step [0-9]*: val loss \([0-9.]*\).*/\1/p' "$tmp/$1.log" | tail -1; }
# ev MODEL: qtrain eval's loss on the validation windows
ev() {
  "$Q" eval "$1" --data "$tmp/val.txt" --context 32 --stride 32 2>"$tmp/ev.err" |
    sed -n 's/.*: loss \([0-9.]*\),.*/\1/p'
}
# same WHAT WANT GOT: equal to 1e-3 relative
same() {
  if [ -n "$2" ] && [ -n "$3" ] && awk -v a="$2" -v b="$3" \
    'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-3 * a) }'; then ok
  else bad "$1: loss '$3', want '$2' $(cat "$tmp/ev.err" 2>/dev/null | tail -2)"; fi
}
summary=""
# check NAME NF4FLAG: eval, export hf, export --merge of the base
check() {
  local name=$1 want got
  want=$(vl "$name")
  same "the float checkpoint's eval (the windows match the run's)" "$(vl float)" "$(ev "$tmp/float/checkpoint.h5")"
  # the adapter moved the loss off the base's, so an unmerged model cannot pass below
  awk -v a="$(vl float)" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d > 1e-3 * a) }' &&
    ok || bad "$name: val loss $want, the base's $(vl float): the adapter changed nothing"
  got=$(ev "$tmp/$name/checkpoint.h5")
  same "qtrain eval of the $name checkpoint" "$want" "$got"
  grep -q "merged its adapter into the model (LoRA r 4 on the $3 base, 14 layers)" "$tmp/ev.err" && ok ||
    bad "eval of $name does not say it merged: $(cat "$tmp/ev.err")"
  "$Q" export "$tmp/$name/checkpoint.h5" --format hf --out "$tmp/$name-hf" >/dev/null 2>&1 ||
    bad "export hf of $name failed"
  local got_hf got_m
  got_hf=$(ev "$tmp/$name-hf")
  same "the $name checkpoint exported (hf)" "$want" "$got_hf"
  "$Q" export "$tmp/float/checkpoint.h5" --merge "$tmp/$name/adapter" $2 --format hf \
    --out "$tmp/$name-merged" >"$tmp/merge.log" 2>&1 || bad "export --merge $name failed: $(tail -2 "$tmp/merge.log")"
  got_m=$(ev "$tmp/$name-merged")
  same "the float base with $name/adapter merged (hf)" "$want" "$got_m"
  summary="$summary $name: run $want, eval $got, hf $got_hf, --merge $got_m;"
}

lora_run lora '  rank: 4
  alpha: 8'
check lora "" float
lora_run qlora '  rank: 4
  alpha: 8
  base: nf4'
check qlora --nf4 nf4

# QAT + LoRA: the checkpoint stores the base fake-quantized as trained against; loading
# it must not fake-quantize again (not idempotent), so eval equals the run's
lora_run qatlora '  rank: 4
  alpha: 8
qat:
  weight: {format: int4, group_size: 16}'
want=$(vl qatlora)
got=$(ev "$tmp/qatlora/checkpoint.h5")
same "qtrain eval of the QAT + LoRA checkpoint" "$want" "$got"
grep -q "LoRA r 4 on the fake-quantized base" "$tmp/ev.err" && ok ||
  bad "eval of qatlora does not say it merged: $(cat "$tmp/ev.err")"
summary="$summary qatlora: run $want, eval $got;"

# a quantized export of the LoRA checkpoint, compared with the merged adapter model
"$Q" export "$tmp/lora/checkpoint.h5" --format gguf --out "$tmp/lora.gguf" >"$tmp/gguf.log" 2>&1 ||
  bad "export gguf of the LoRA checkpoint failed: $(tail -3 "$tmp/gguf.log")"
grep -q "reference: the merged adapter model (LoRA r 4 on the float base)" "$tmp/gguf.log" && ok ||
  bad "the gguf export does not name its reference: $(cat "$tmp/gguf.log")"
grep -q "compare $tmp/lora.gguf: .* KL divergence mean" "$tmp/gguf.log" && ok ||
  bad "the gguf export reports no KL: $(cat "$tmp/gguf.log")"
kl=$(sed -n 's/.*KL divergence mean \([0-9.]*\).*/\1/p' "$tmp/gguf.log")
# q8_0 of the merged weights against them: a small KL
[ -n "$kl" ] && awk -v k="$kl" 'BEGIN { exit !(k < 0.01) }' && ok || bad "gguf KL '$kl'"

# bad input
mkdir -p "$tmp/empty"
expect 2 "--merge $tmp/empty: not a PEFT adapter directory (no adapter_config.json" -- \
  export "$tmp/float/checkpoint.h5" --merge "$tmp/empty" --format hf --out "$tmp/x"
expect 2 "--merge $tmp/nowhere: not a PEFT adapter directory" -- \
  export "$tmp/float/checkpoint.h5" --merge "$tmp/nowhere" --format hf --out "$tmp/x"
expect 2 "--nf4 applies to --merge" -- export "$tmp/float/checkpoint.h5" --nf4 --format hf --out "$tmp/x"

echo "val loss: base $(vl float);$summary gguf KL $kl"
finish test_lora_export
