#!/usr/bin/env bash
# bench/dist.sh - data-parallel scaling on this machine: build/bench_dist on 1 rank, then
# on N ranks over shared memory (Open MPI's default on one node) and over TCP (the
# transport between nodes; its bytes are counted on the loopback interface). Every rank
# runs one thread. Weak scaling: each rank keeps batch B, so N ranks train N B per step.
#
#   bash bench/dist.sh [--ranks N] [--steps S] [--batch B] [--rounds R] [--bucket-mb M]
#                      [--no-overlap]
#
# Also, for the same cores used other ways: 1 rank with N threads and batch N B (the
# OpenMP way), and N single-rank jobs at once, unconnected (the efficiency the machine
# allows with no communication at all: N ranks share its cores, caches and memory).
# Prints bench_dist's lines, then a table: ms per step, tokens/s, scaling efficiency
# = tokens/s on N ranks / (N x tokens/s on 1 rank), the wait for gradients after
# backward (communication the overlap did not hide), bytes per step per rank (payload
# handed to collectives, bytes on the wire) against the ring all-reduce's 2(N-1)/N x
# gradient bytes. With R rounds each configuration runs R times and keeps its fastest.
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=2 steps=20 batch=16 rounds=1 extra=()
while (($#)); do
  case $1 in
    --ranks) ranks=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --bucket-mb) extra+=(--bucket-mb "$2"); shift 2 ;;
    --no-overlap) extra+=(--no-overlap); shift ;;
    *) echo "usage: bash bench/dist.sh [--ranks N] [--steps S] [--batch B] [--rounds R] [--bucket-mb M] [--no-overlap]" >&2; exit 2 ;;
  esac
done
[ -x build/bench_dist ] || { echo "bench/dist.sh: build/bench_dist is missing (bash scripts/setup.sh with MPI)" >&2; exit 1; }
[ -s build/data/fortunes.txt ] || { echo "bench/dist.sh: build/data/fortunes.txt is missing (bash scripts/setup.sh)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
mpi=(mpirun --oversubscribe --bind-to none)
args=(--steps "$steps" --batch "$batch" --threads 1 ${extra[@]+"${extra[@]}"})
out=$(mktemp)
trap 'rm -f "$out"' EXIT
best() { # best LABEL CMD...: the fastest of $rounds runs, its line labelled
  local label=$1 line keep="" t kt
  shift
  for _ in $(seq 1 "$rounds"); do
    line=$("$@" | grep '^bench_dist:')
    echo "$line"
    t=$(sed -n 's/.*ms_per_step \([0-9.]*\).*/\1/p' <<<"$line")
    if [ -z "$keep" ] || awk -v a="$t" -v b="$kt" 'BEGIN{exit !(a < b)}'; then keep=$line kt=$t; fi
  done
  echo "$label $keep" >>"$out"
}
echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
best one build/bench_dist "${args[@]}"
# one rank with N threads: the same cores used the other way
best threads build/bench_dist --steps "$steps" --batch $((batch * ranks)) --threads "$ranks"
# the same N single-rank jobs at once: what sharing the machine costs without any
# communication (the ceiling for N ranks here)
alone() {
  local pids=() i
  for i in $(seq 1 "$ranks"); do build/bench_dist "${args[@]}" >"$out.$i" & pids+=($!); done
  wait "${pids[@]}"
  # the slowest of them, as a synchronous job would go at its pace
  sort -t' ' -k11 -g "$out".[0-9]* | tail -1 | sed "s/ranks 1 /ranks $ranks /"
  rm -f "$out".[0-9]*
}
best apart alone
best shm "${mpi[@]}" -np "$ranks" build/bench_dist "${args[@]}"
best tcp "${mpi[@]}" --mca btl self,tcp -np "$ranks" build/bench_dist "${args[@]}"
echo
awk -v n="$ranks" '
function f(k,   i) { for (i = 1; i <= NF; i++) if ($i == k) return $(i + 1) }
function index_of(k,   i) { for (i = 1; i <= NF; i++) if ($i == k) return i }
{ ms[$1] = f("ms_per_step"); tps[$1] = f("tok_per_s"); pay[$1] = f("payload_mb");
  wire[$1] = f("wire_mb"); ring[$1] = f("ring_mb"); grad = f("grad_mb"); wait[$1] = f("comm_wait_ms"); waitmax[$1] = $(index_of("comm_wait_ms") + 2) }
END {
  printf "%-22s %9s %9s %11s %15s %11s %10s %10s\n", "run", "ms/step", "tok/s", "efficiency",
         "wait ms min/max", "payload MB", "wire MB", "ring MB"
  printf "%-22s %9.1f %9.0f %11s %15s %11s %10s %10s\n", "1 rank", ms["one"], tps["one"], "1.00", "-", "-", "-", "-"
  printf "%-22s %9.1f %9.0f %11.2f %15s %11s %10s %10s\n", "1 rank, " n " threads", ms["threads"], tps["threads"],
         tps["threads"] / (n * tps["one"]), "-", "-", "-", "-"
  printf "%-22s %9.1f %9.0f %11.2f %15s %11s %10s %10s\n", n " x 1 rank, no comm", ms["apart"], n * tps["apart"],
         tps["apart"] / tps["one"], "-", "-", "-", "-"
  split("shm tcp", ks, " ")
  for (j = 1; j <= 2; j++) { k = ks[j]
    printf "%-22s %9.1f %9.0f %11.2f %15s %11.3f %10s %10.3f\n", n " ranks (" (k == "shm" ? "shared mem" : "TCP") ")",
           ms[k], tps[k], tps[k] / (n * tps["one"]), sprintf("%.1f / %.1f", wait[k], waitmax[k]), pay[k], k == "tcp" ? sprintf("%.3f", wire[k]) : "-", ring[k] }
  printf "gradient: %.3f MB per step; wire / ring over TCP: %.3f\n", grad, wire["tcp"] / ring["tcp"]
}' "$out"
