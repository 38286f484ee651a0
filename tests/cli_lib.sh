# cli_lib.sh - what the command-line tests share (source it after setting Q, the qtrain
# binary): a scratch directory removed on exit, pass/fail counters and
#   ok                          count a passed check
#   bad MESSAGE                 count a failed check and print "FAIL: MESSAGE"
#   expect CODE NEEDLE -- ARGS  qtrain ARGS exits CODE with NEEDLE in its stderr
#   finish NAME                 print "NAME: N passed, M failed"; status 1 on any failure
#   tiny_data, tiny_recipe NAME the tiny training setup (below)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect() {
  local code=$1 needle=$2
  shift 3
  local err rc
  err=$("$Q" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -eq "$code" ] && grep -qF -- "$needle" <<<"$err"; then ok; else
    bad "qtrain $*: exit $rc (want $code), stderr: $err (want '$needle')"
  fi
}
finish() {
  echo "$1: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

# The tiny training setup the train/QAT/LoRA command-line tests share: tiny_data writes
# $tmp/text.txt (400 short English lines); tiny_recipe NAME prints a recipe for a 2-layer,
# 64-wide Llama on its bytes (k/v projections 2 heads x 16 = 32 wide), 30 steps, output
# in $tmp/NAME.
tiny_data() {
  for i in $(seq 1 400); do echo "the cat sat on the mat and the dog sat on the log $i."; done >"$tmp/text.txt"
}
tiny_recipe() {
  cat <<YAML
model: {dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 128, max_seq_len: 64}
data: {train: $tmp/text.txt, seq_len: 32, val_fraction: 0.1}
train: {steps: 30, batch_size: 4, threads: 2}
schedule: {warmup: 3}
output: {dir: $tmp/$1, log_every: 10, eval_batches: 2, sample_tokens: 0}
YAML
}
