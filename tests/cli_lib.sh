# cli_lib.sh - what the command-line tests share (source it after setting Q, the qtrain
# binary): a scratch directory removed on exit, pass/fail counters and
#   ok                          count a passed check
#   bad MESSAGE                 count a failed check and print "FAIL: MESSAGE"
#   expect CODE NEEDLE -- ARGS  qtrain ARGS exits CODE with NEEDLE in its stderr
#   finish NAME                 print "NAME: N passed, M failed"; status 1 on any failure
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
