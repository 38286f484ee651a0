#!/usr/bin/env bash
# test_qat_cli.sh QTRAIN - QAT through the command line:
#  - bad qat: sections fail at recipe load (exit 2) naming the file and key, or before
#    the first step naming the layer;
#  - a tiny float run, then QAT fine-tuning from its checkpoint (model.from: x.h5);
#  - `qtrain eval` of the QAT checkpoint (fake-quant) equals `eval --convert` (weights
#    quantized for real, dequantized values) to every printed digit;
#  - `eval --qat RECIPE` on the float checkpoint (round-to-nearest PTQ) differs from the
#    float perplexity.
# Prints "test_qat_cli: N passed, M failed".
set -u
Q=$1
. "$(dirname "$0")/cli_lib.sh"

ppl() { sed -n 's/.*perplexity \([0-9.]*\)$/\1/p'; }

tiny_data
head -c 2000 "$tmp/text.txt" >"$tmp/val.txt" # evaluation text: small, evals are many
base() { tiny_recipe "$1"; } # cli_lib.sh

# --- bad input --------------------------------------------------------------------
{ base b1; printf 'qat:\n  weight: {format: int9}\n'; } >"$tmp/b1.yaml"
expect 2 "$tmp/b1.yaml:7:" -- train "$tmp/b1.yaml"
expect 2 "qat.weight.format must be one of" -- train "$tmp/b1.yaml"
{ base b2; printf 'qat:\n  weight: {format: int4, group_size: 48}\n'; } >"$tmp/b2.yaml"
expect 2 "does not divide" -- train "$tmp/b2.yaml"
expect 2 "model.layers.0.self_attn.q_proj" -- train "$tmp/b2.yaml"
{ base b3; printf 'qat:\n  weight: {format: fp8_e4m3, granularity: group}\n'; } >"$tmp/b3.yaml"
expect 2 "qat.weight.granularity" -- train "$tmp/b3.yaml"
{ base b4; printf 'qat:\n  activation: {format: int8}\n  embeddings: true\n'; } >"$tmp/b4.yaml"
expect 2 "qat.activation.format int8 cannot apply to the token embedding" -- train "$tmp/b4.yaml"
{ base b5; printf 'qat:\n  weight: {format: int4, group_size: 16}\n  layers: ["*.q_projection"]\n'; } >"$tmp/b5.yaml"
expect 2 '"*.q_projection" matches no Linear layer' -- train "$tmp/b5.yaml"
{ base b6; printf 'qat:\n  weight: {format: q4_k}\n'; } >"$tmp/b6.yaml"
expect 2 "256" -- train "$tmp/b6.yaml"
{ base b6x; printf 'qat:\n  weight: {format: iq4_xs}\n'; } >"$tmp/b6x.yaml"
expect 2 "256" -- train "$tmp/b6x.yaml"
{ base b7; printf 'qat:\n  activation: {format: int8, granularity: per_token, dynamic: false}\n'; } >"$tmp/b7.yaml"
expect 2 "per_token scales are dynamic" -- train "$tmp/b7.yaml"
{ base b8; printf 'qat:\n  layers: "*_proj"\n'; } >"$tmp/b8.yaml"
expect 2 "qat.layers must be a list of strings" -- train "$tmp/b8.yaml"
if ls "$tmp"/b*/checkpoint.h5 >/dev/null 2>&1; then bad "a refused recipe wrote a checkpoint"; else ok; fi

# --- float, then QAT from its checkpoint -------------------------------------------
base float >"$tmp/float.yaml"
"$Q" train "$tmp/float.yaml" >"$tmp/float.log" 2>&1 || bad "float run failed: $(tail -3 "$tmp/float.log")"
# qat_run NAME STEPS QAT-SECTION: $tmp/NAME.yaml fine-tunes the float checkpoint for
# STEPS steps with that qat: section (its tokenizer), trained into $tmp/NAME
qat_run() {
  { base "$1" | sed "s#^model: .*#model: {from: $tmp/float/checkpoint.h5}#; s#steps: 30#steps: $2#
                     s#^data: {train#data: {tokenizer: model, train#"
    printf 'qat:\n%s\n' "$3"; } >"$tmp/$1.yaml"
  "$Q" train "$tmp/$1.yaml" >"$tmp/$1.log" 2>&1 || bad "$1 run failed: $(tail -3 "$tmp/$1.log")"
}
# ppl_of NAME [eval flags]: perplexity of $tmp/NAME/checkpoint.h5 on the evaluation text
ppl_of() {
  local name=$1
  shift
  "$Q" eval "$tmp/$name/checkpoint.h5" --data "$tmp/val.txt" --context 64 "$@" 2>&1 | ppl
}
qat_run qat 20 '  weight: {format: int4, group_size: 16}
  activation: {format: int8}
  layers: ["*_proj"]
  start_step: 5'
grep -q "QAT: int4 g16" "$tmp/qat.log" && ok || bad "the QAT run does not say what it fake-quantizes: $(head -3 "$tmp/qat.log")"

fq=$("$Q" eval "$tmp/qat/checkpoint.h5" --data "$tmp/val.txt" --context 64 2>&1)
cv=$("$Q" eval "$tmp/qat/checkpoint.h5" --data "$tmp/val.txt" --context 64 --convert 2>&1)
p_fq=$(ppl <<<"$fq")
p_cv=$(ppl <<<"$cv")
[ -n "$p_fq" ] && [ "$p_fq" = "$p_cv" ] && ok || bad "fake-quant ppl '$p_fq' != converted ppl '$p_cv' ($fq / $cv)"
grep -q "fake-quant" <<<"$fq" && grep -q "converted" <<<"$cv" && ok || bad "eval does not say how it quantized: $fq"

fl=$(ppl_of float)
rtn=$(ppl_of float --qat "$tmp/qat.yaml")
[ -n "$fl" ] && [ -n "$rtn" ] && [ "$fl" != "$rtn" ] && ok || bad "RTN ppl '$rtn' vs float '$fl'"
expect 2 "has no qat: section" -- eval "$tmp/float/checkpoint.h5" --data "$tmp/val.txt" --qat "$tmp/float.yaml"
expect 2 "--convert needs a QAT model" -- eval "$tmp/float/checkpoint.h5" --data "$tmp/val.txt" --convert

# a GGUF non-linear format: fake-quant eval equals the converted weights' eval
qat_run iq 6 '  weight: {format: iq4_nl}'
i1=$(ppl_of iq)
i2=$(ppl_of iq --convert)
[ -n "$i1" ] && [ "$i1" = "$i2" ] && ok || bad "iq4_nl: fake-quant '$i1' != converted '$i2'"

# static per-tensor activations: the observers' ranges are saved with the checkpoint and
# used by eval (calibrating afresh on the first window, as --qat does, gives another number)
qat_run st 12 '  weight: {format: int8, group_size: 16}
  activation: {format: int8, granularity: per_tensor, dynamic: false, observer: minmax}'
s1=$(ppl_of st)
s2=$(ppl_of st --convert)
s3=$(ppl_of st --qat "$tmp/st.yaml")
[ -n "$s1" ] && [ "$s1" = "$s2" ] && ok || bad "static: fake-quant '$s1' != converted '$s2'"
[ -n "$s3" ] && [ "$s1" != "$s3" ] && ok || bad "static: trained observer ranges not used ('$s1' == fresh '$s3')"

# learnable scales (LSQ): trained next to the weights, saved, and shipped as learned
qat_run ls 12 '  weight: {format: int4, group_size: 16, symmetric: false, scale_dtype: f32, learnable: true}'
l1=$(ppl_of ls)
l2=$(ppl_of ls --convert)
l3=$(ppl_of ls --qat "$tmp/ls.yaml")
[ -n "$l1" ] && [ "$l1" = "$l2" ] && ok || bad "LSQ: fake-quant '$l1' != converted '$l2'"
[ -n "$l3" ] && [ "$l1" != "$l3" ] && ok || bad "LSQ: learned scales not used ('$l1' == re-initialised '$l3')"
expect 2 "qat.weight.learnable needs scale_dtype f32" -- train "$tmp/ls.yaml" --set qat.weight.scale_dtype=f16

# the resolved recipe (into every checkpoint) reads back as it was, lists and quotes included
{ base rt; printf 'qat:\n  weight: {format: int4, group_size: 16}\n  layers: ["*.q_proj", "*.mlp.*", "*[ab\\"]x"]\n'; } >"$tmp/rt.yaml"
"$Q" train "$tmp/rt.yaml" --check >"$tmp/rt1.yaml" 2>/dev/null || bad "--check rt.yaml"
"$Q" train "$tmp/rt1.yaml" --check >"$tmp/rt2.yaml" 2>/dev/null || bad "--check of the resolved recipe: $(head -c 300 "$tmp/rt1.yaml")"
cmp -s "$tmp/rt1.yaml" "$tmp/rt2.yaml" && grep -qF '"*[ab\"]x"' "$tmp/rt1.yaml" && ok ||
  bad "resolved recipe does not round-trip: $(grep -A2 layers "$tmp/rt1.yaml")"

finish test_qat_cli
