#!/usr/bin/env bash
# test_export_llamacpp.sh GGUF_EXPORT_TOOL QTRAIN LLAMACPP_PPL_PY - llama.cpp runs what
# qtrain's GGUF exporter writes, and computes the same perplexity qtrain does:
#  - gguf_export_tool trains a tiny byte-level Llama on repetitive text and writes it as
#    F32, Q8_0, Q4_0, Q4_K, IQ4_NL and IQ4_XS GGUF files (bytes tokenizer); then a Qwen2-style one (q/k/v
#    bias, architecture "qwen2") as F32, Q8_0 and Q6_K;
#  - for each, llamacpp_ppl.py (llama-cpp-python) loads it, generates, checks that its
#    token ids are the bytes, and prints its perplexity on held-out text with
#    non-overlapping windows of N tokens; `qtrain eval FILE --context N --stride N` does the
#    same in qtrain; the two must agree within 1% (llama.cpp quantizes activations to 8
#    bits for quantized matmuls and keeps an F16 KV cache, so they are close, not equal);
#  - qtrain's perplexity of the F32 file equals (to 0.1%) the tool's perplexity of the
#    model in memory before export, so an exporter and loader wrong in the same way (which
#    both readers would then agree on) are caught too;
#  - the trained model must beat a uniform guess by far (ppl < 64 of 256) so that a wrong
#    layout could not hide behind a near-uniform output.
# Fails (no skip) when llama_cpp cannot be imported.
set -u
TOOL=$1 Q=$2 PY=$3
N=128
. "$(dirname "$0")/cli_lib.sh"

if ! python3 -c "import llama_cpp" 2>"$tmp/imp.err"; then
  echo "FAIL: python3 cannot import llama_cpp (pip install llama-cpp-python): $(tail -1 "$tmp/imp.err")"
  exit 1
fi

animals=(cat dog cow hen fox owl)
places=(mat log rug bed box hill)
for i in $(seq 1 600); do
  echo "the ${animals[$((i % 6))]} sat on the ${places[$((i * 7 % 6))]} and the ${animals[$((i * 5 % 6))]} ran to the ${places[$((i % 6))]}."
done >"$tmp/train.txt"
for i in $(seq 601 640); do
  echo "the ${animals[$((i % 6))]} sat on the ${places[$((i * 7 % 6))]} and the ${animals[$((i * 5 % 6))]} ran to the ${places[$((i % 6))]}."
done | head -c 1500 >"$tmp/eval.txt"

# run_case ARCH TOOL-FLAGS TYPES...: trains, exports and compares one model
run_case() {
  local arch=$1 flags=$2
  shift 2
  local dir="$tmp/$arch"
  mkdir -p "$dir"
  if "$TOOL" $flags "$tmp/train.txt" "$tmp/eval.txt" $N "$dir" 80 "$@" >"$dir/tool.log" 2>&1; then ok; else
    bad "$arch: gguf_export_tool: $(tail -3 "$dir/tool.log")"
    return
  fi
  grep -E "^step" "$dir/tool.log" | tail -1
  local fppl
  fppl=$(sed -n 's/^float perplexity \([0-9.]*\)$/\1/p' "$dir/tool.log")
  echo "$arch: float model in memory: ppl $fppl"
  for t in "$@"; do
    compare "$arch" "$t" "$dir/model_$t.gguf" "$fppl"
  done
}

# compare ARCH TYPE FILE FLOAT_PPL
compare() {
  local arch=$1 t=$2 f=$3 fppl=$4 qout qppl lout lrc lppl
  qout=$("$Q" eval "$f" --data "$tmp/eval.txt" --context $N --stride $N 2>&1)
  qppl=$(sed -n 's/.*perplexity \([0-9.]*\)$/\1/p' <<<"$qout")
  lout=$(python3 "$PY" "$f" "$tmp/eval.txt" $N 2>&1)
  lrc=$?
  lppl=$(sed -n 's/^llamacpp perplexity \([0-9.]*\)$/\1/p' <<<"$lout")
  if [ -z "$qppl" ]; then bad "$arch $t: qtrain eval: $qout"; return; fi
  if [ $lrc -ne 0 ] || [ -z "$lppl" ]; then bad "$arch $t: llamacpp_ppl.py (rc $lrc): $lout"; return; fi
  ok
  echo "$arch $t: qtrain ppl $qppl, llama.cpp ppl $lppl"
  if python3 -c "import sys; q, l = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(l / q - 1) < 0.01 else 1)" "$qppl" "$lppl"; then ok; else
    bad "$arch $t: llama.cpp perplexity $lppl differs from qtrain's $qppl by 1% or more"
  fi
  if [ "$t" = f32 ]; then
    if python3 -c "import sys; q, f = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(q / f - 1) < 0.001 else 1)" "$qppl" "$fppl"; then ok; else
      bad "$arch f32: qtrain's perplexity of the exported file $qppl differs from the model's own $fppl"
    fi
  fi
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 64 else 1)" "$qppl"; then ok; else
    bad "$arch $t: perplexity $qppl: the model learned nothing (uniform is 256)"
  fi
}

run_case llama "" f32 q8_0 q4_0 q4_k iq4_nl iq4_xs
run_case qwen2 --qkv-bias f32 q8_0 q6_k
finish test_export_llamacpp
