#!/usr/bin/env bash
# test_cli.sh QTRAIN - the command line's contract on bad input: a message naming the
# file, key or flag, exit code 2, nothing half-written. Prints "test_cli: N passed, M failed".
set -u
Q=$1
. "$(dirname "$0")/cli_lib.sh"

printf 'model:\n  dim: 64\n  colour: red\n' >"$tmp/unknown.yaml"
printf 'train:\n  steps: many\n' >"$tmp/type.yaml"
printf 'data:\n  train: %s/none.txt\noutput:\n  dir: %s/out\n' "$tmp" "$tmp" >"$tmp/nodata.yaml"
printf '' >"$tmp/empty.txt"
printf 'data:\n  train: %s/empty.txt\noutput:\n  dir: %s/out2\n' "$tmp" "$tmp" >"$tmp/emptydata.yaml"

expect 2 "unknown command 'frobnicate'" -- frobnicate
expect 2 "usage" --
expect 2 "$tmp/unknown.yaml:3:3: unknown key 'model.colour'" -- train "$tmp/unknown.yaml"
expect 2 "$tmp/type.yaml:2:10: train.steps must be an integer" -- train "$tmp/type.yaml"
expect 2 "cannot open recipe" -- train "$tmp/missing.yaml"
expect 2 "unknown key 'train.nope'" -- train "$tmp/nodata.yaml" --set train.nope=1
expect 2 "$tmp/none.txt: cannot open training data" -- train "$tmp/nodata.yaml"
expect 2 "$tmp/empty.txt" -- train "$tmp/emptydata.yaml"
expect 2 "unexpected argument '--bogus'" -- train "$tmp/nodata.yaml" --bogus
expect 2 "--steps needs a positive integer" -- demo --steps -3
expect 2 "unknown option '--fast'" -- demo --fast

# nothing half-written: the failed runs left no run directory content but what they made
if [ ! -e "$tmp/out/checkpoint.h5" ] && ! ls "$tmp"/out*/*.tmp.* >/dev/null 2>&1; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
  echo "FAIL: a failed run left a checkpoint or temporary file"
fi

if "$Q" train --keys | grep -q "optimizer.lr"; then pass=$((pass + 1)); else
  fail=$((fail + 1))
  echo "FAIL: train --keys does not list optimizer.lr"
fi

# a tiny end-to-end run through the CLI: train, then eval / generate / info on its checkpoint
for i in $(seq 1 300); do echo "the cat sat on the mat and the dog sat on the log $i."; done >"$tmp/text.txt"
cat >"$tmp/tiny.yaml" <<YAML
name: tiny
model: {dim: 32, n_layers: 1, n_heads: 2, n_kv_heads: 1, ffn_dim: 64, max_seq_len: 32}
data: {train: $tmp/text.txt, seq_len: 32, val_fraction: 0.1}
train: {steps: 30, batch_size: 4}
schedule: {warmup: 5}
output: {dir: $tmp/run, log_every: 10, eval_batches: 2, sample_tokens: 20}
YAML
check() { # check NAME CMD...: exit 0
  local name=$1
  shift
  if "$@" >"$tmp/out.txt" 2>&1; then pass=$((pass + 1)); else
    fail=$((fail + 1))
    echo "FAIL: $name: $(tail -3 "$tmp/out.txt")"
  fi
}
has() { # has NAME PATTERN FILE
  if grep -q -- "$2" "$3"; then pass=$((pass + 1)); else
    fail=$((fail + 1))
    echo "FAIL: $1: '$2' not in $3"
  fi
}
check "train tiny" "$Q" train "$tmp/tiny.yaml"
check "checkpoint written" test -s "$tmp/run/checkpoint.h5"
has "metrics written" '"val_ppl"' "$tmp/run/metrics.jsonl"
check "eval" "$Q" eval "$tmp/run/checkpoint.h5" --data "$tmp/text.txt" --context 32 --stride 16
has "eval prints perplexity" "perplexity" "$tmp/out.txt"
check "generate" "$Q" generate "$tmp/run/checkpoint.h5" --prompt "the cat" --tokens 10
check "info" "$Q" info "$tmp/run/checkpoint.h5"
has "info names parameters" "model.layers.0.mlp.down_proj.weight" "$tmp/out.txt"
check "resume" "$Q" train "$tmp/tiny.yaml" --set train.steps=40 --resume

# train.device: a GPU run's refusals, whatever machine this is. bf16 activations need the
# GPU; static activation ranges and LSQ scales are CPU-only; a build without CUDA says so
# (exit 2); with CUDA but no GPU, the device error (exit 1) comes before anything is
# written; on a GPU machine the run trains.
expect 2 "train.dtype bf16 needs train.device cuda" -- train "$tmp/tiny.yaml" --set train.dtype=bf16
cuda_out="$tmp/cuda_run"
err=$("$Q" train "$tmp/tiny.yaml" --set train.device=cuda --set output.dir="$cuda_out" 2>&1 >/dev/null)
rc=$?
if { [ $rc -eq 2 ] && grep -qF "built without CUDA" <<<"$err"; } ||
   { [ $rc -eq 1 ] && grep -qF "train.device cuda: " <<<"$err" && [ ! -e "$cuda_out/metrics.jsonl" ]; } ||
   { [ $rc -eq 0 ] && [ -s "$cuda_out/checkpoint.h5" ]; }; then ok; else
  bad "train.device=cuda: exit $rc, stderr: $err"
fi
err=$("$Q" train "$tmp/tiny.yaml" --set train.device=cuda --set qat.activation.format=int8 \
      --set qat.activation.dynamic=false --set qat.activation.granularity=per_tensor --check 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 2 ] && grep -qE "runs on the CPU only|built without CUDA" <<<"$err"; then ok; else
  bad "static activation QAT on cuda: exit $rc, stderr: $err"
fi
has "resume says so" "resumed from" "$tmp/out.txt"
expect 2 "no checkpoint to resume from" -- train "$tmp/tiny.yaml" --set output.dir="$tmp/none" --resume
expect 2 "--stride needs an integer" -- eval "$tmp/run/checkpoint.h5" --data "$tmp/text.txt" --stride x
expect 2 "$tmp/text.txt: not an HDF5 file" -- eval "$tmp/text.txt" --data "$tmp/text.txt"
expect 2 "is not a qtrain checkpoint, GGUF or readable safetensors" -- info "$tmp/text.txt"
check "info on a GGUF" "$Q" info "$(dirname "$0")/fixtures/gguf_reference.gguf"
has "info lists GGUF metadata" "general.architecture\|tensors" "$tmp/out.txt"
head -c 3000 "$tmp/run/checkpoint.h5" >"$tmp/trunc.h5"
expect 2 "trunc.h5" -- generate "$tmp/trunc.h5"

# every shipped recipe is valid (recipes/ sits next to tests/)
for r in "$(dirname "$0")"/../recipes/*.yaml; do
  check "recipe $(basename "$r") validates" "$Q" train "$r" --check
done

finish test_cli
