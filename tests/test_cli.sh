#!/usr/bin/env bash
# test_cli.sh QTRAIN - the command line's contract on bad input: a message naming the
# file, key or flag, exit code 2, nothing half-written. Prints "test_cli: N passed, M failed".
set -u
Q=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

# expect CODE NEEDLE -- ARGS...: exit code CODE and NEEDLE in stderr
expect() {
  local code=$1 needle=$2
  shift 3
  local err rc
  err=$("$Q" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -eq "$code" ] && grep -qF -- "$needle" <<<"$err"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: qtrain $*: exit $rc (want $code), stderr: $err (want '$needle')"
  fi
}

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

echo "test_cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
