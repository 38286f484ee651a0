#!/usr/bin/env bash
# test_dist.sh QTRAIN CKPT_DIFF - data parallel training under mpirun (ctest -L mpi):
#  - equivalence: 2 ranks with batch B give the losses (every step, from metrics.jsonl)
#    and the weights and AdamW moments (the final checkpoints, ckpt_diff) of 1 rank with
#    batch 2B, to 1e-5 relative after 20 steps: plain, with gradient accumulation, with
#    buckets far smaller than a tensor (many overlapped all-reduces per step) and without
#    overlap, prompt/response data (masked prompts: ranks' token counts differ), ZeRO-1,
#    QAT (int4 weights, and int8 activations with static observed ranges: both compared
#    at step 5, before a rounding flip can come; learnable LSQ scales, a second
#    paramset), QLoRA (NF4 base, with and without ZeRO-1) and float LoRA;
#  - resume on another number of ranks: 2 ranks stop at step 10, 1 rank resumes (and the
#    other way round; and ZeRO-1 on 2 ranks, resumed on 2, and QLoRA with ZeRO-1 on 2,
#    resumed on 1); each ends where 20 straight steps on 1 rank do;
#  - faults, each under a 60 s timeout: a rank that fails on bad input (rank 0 cannot
#    write its metrics) ends every rank with exit 2 and a message naming the rank; a
#    killed rank ends the job non-zero with the rank named; a job killed while rank 0
#    writes a checkpoint leaves the previous checkpoint intact and loadable;
#  - refused combinations exit 2 naming the key or flag.
# Prints "test_dist: N passed, M failed".
set -u
Q=$1
DIFF=$2
. "$(dirname "$0")/cli_lib.sh"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# CI runs as root; Open MPI refuses that unless told
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Under the ASan build: Open MPI's plugins leak at MPI_Init and are unloaded by
# MPI_Finalize, so LeakSanitizer reports unnamed frames no suppression can match; leak
# checks stay on for the single-process runs (the same loop), off in ranks under mpirun
MPIRUN=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}detect_leaks=0" mpirun --oversubscribe --bind-to none)
TOL=1e-5

tiny_data
# recipe NAME: the tiny model, 20 steps, one thread per rank, metrics every step
recipe() {
  tiny_recipe "$1" | sed 's/steps: 30, batch_size: 4, threads: 2/steps: 20, batch_size: 8, threads: 1/
                           s/log_every: 10/log_every: 1/'
}
# run NP NAME RECIPE [args...]: trains $tmp/RECIPE.yaml on NP ranks (1 = no mpirun) into
# $tmp/NAME, log in $tmp/NAME.log; extra args go to qtrain
run() {
  local np=$1 name=$2 rfile=$3
  shift 3
  local cmd=("$Q" train "$tmp/$rfile.yaml" --set "output.dir=$tmp/$name" "$@")
  if [ "$np" -gt 1 ]; then cmd=(timeout 120 "${MPIRUN[@]}" -np "$np" "${cmd[@]}"); fi
  "${cmd[@]}" >"$tmp/$name.log" 2>&1 || bad "$name ($np ranks) failed: $(tail -5 "$tmp/$name.log")"
}
# same_losses A B [MIN_STEPS]: every logged step's loss (at least MIN_STEPS of them, 10 by
# default) and every validation loss within TOL relative
same_losses() {
  python3 - "$tmp/$1/metrics.jsonl" "$tmp/$2/metrics.jsonl" "$TOL" "${3:-10}" <<'PY' && ok || bad "losses of $1 and $2 differ"
import json, sys
def steps(p, key):
    return {r["step"]: r[key] for r in map(json.loads, open(p)) if key in r}
tol, need = float(sys.argv[3]), int(sys.argv[4])
worst, n = 0.0, 0
for key in ("loss", "val_loss"):
    a, b = steps(sys.argv[1], key), steps(sys.argv[2], key)
    if a.keys() != b.keys():
        worst = float("inf")
        continue
    worst = max([worst] + [abs(a[k] - b[k]) / abs(b[k]) for k in b])
    n += len(b) if key == "loss" else 0
print(f"{sys.argv[1]}: {n} steps, worst loss gap {worst:.2e}")
sys.exit(0 if n >= need and worst <= tol else 1)
PY
}
# same_ckpt A B [--params-only]: the final checkpoints within TOL
same_ckpt() {
  local out
  if out=$("$DIFF" "$tmp/$1/checkpoint.h5" "$tmp/$2/checkpoint.h5" "$TOL" ${3:-} 2>&1); then ok; else
    bad "checkpoints of $1 and $2: $out"
  fi
  echo "$1 vs $2: $out"
}
# equiv NAME RECIPE [args]: RECIPE on 1 rank with batch 8 and on 2 ranks with batch 4
equiv() {
  local name=$1 rfile=$2
  shift 2
  run 1 "$name-1" "$rfile" "$@"
  run 2 "$name-2" "$rfile" --set train.batch_size=4 "$@"
  same_losses "$name-2" "$name-1"
  same_ckpt "$name-2" "$name-1"
}

# --- equivalence ---------------------------------------------------------------------
recipe plain >"$tmp/plain.yaml"
equiv plain plain
grep -q "data parallel: 2 ranks" "$tmp/plain-2.log" && ok || bad "no data-parallel banner: $(head -3 "$tmp/plain-2.log")"
[ "$(grep -c '^step ' "$tmp/plain-2.log")" -eq 20 ] && ok || bad "rank 0 alone should log (20 step lines)"
# gradient accumulation: 2 ranks x batch 2 x 2 micro-batches = 1 rank x 4 x 2
run 1 accum-1 plain --set train.batch_size=4 --set train.grad_accum=2
run 2 accum-2 plain --set train.batch_size=2 --set train.grad_accum=2
same_losses accum-2 accum-1
same_ckpt accum-2 accum-1
# 16 KiB buckets: most tensors span several, dozens of all-reduces start during backward
run 2 buckets-2 plain --set train.batch_size=4 --set distributed.bucket_mb=0.015625
same_losses buckets-2 plain-1
same_ckpt buckets-2 plain-1
run 2 nooverlap-2 plain --set train.batch_size=4 --set distributed.overlap=false
same_ckpt nooverlap-2 plain-1
# prompt/response JSONL: the prompts' targets are masked, so the ranks' batches count
# different numbers of tokens (some none); each rank's mean is weighted by its count
python3 - "$tmp/sft.jsonl" <<'PY'
import json, random, sys
random.seed(1)
words = ["what", "is", "the", "cat", "on", "mat", "why", "how"]
with open(sys.argv[1], "w") as f:
    for i in range(300):
        p = f"Q{i}: " + " ".join(random.choice(words) for _ in range(random.randint(2, 30)))
        r = " ".join(random.choice(["it", "sat", "there", "because", "yes", "no"]) for _ in range(random.randint(1, 12)))
        f.write(json.dumps({"prompt": p, "response": r}) + "\n")
PY
recipe sft | sed "s#train: $tmp/text.txt#train: $tmp/sft.jsonl#" >"$tmp/sft.yaml"
equiv sft sft # the validation loss too, over batches split by ranks
# ZeRO-1: the moments sharded, gathered into the checkpoint
run 2 zero-2 plain --set train.batch_size=4 --set distributed.zero=1
same_losses zero-2 plain-1
same_ckpt zero-2 plain-1
same_ckpt zero-2 plain-2
grep -q "ZeRO-1" "$tmp/zero-2.log" && ok || bad "the banner should say ZeRO-1"

# QAT: int4 g32 weights on every projection. Fake-quant rounds to a grid, so a last-bit
# difference in a weight (2 ranks sum a batch's gradient in another order than one
# process does) can move it across a rounding boundary; from that step on the two runs
# follow different, equally valid trajectories. Measured on an AMD EPYC in the ASan
# build: losses equal to 7 digits and checkpoints within 1.5e-7 through step 10, the
# first flip in step 11's forward (its loss 9e-7 apart, the moments 1.2e-4 after it),
# losses 1.2e-4 apart by step 15 and weights 1.2e-3 after 20 steps, against batch 8 and
# against one process accumulating 4 x 2 micro-batches alike. On the Intel Xeon CI
# machine before it, the 2 ranks matched 4 x 2 for 20 steps and 4 x 2 flipped against
# batch 8 instead. Where the first flip lands depends on the CPU and the build, and no
# tolerance separates a flip from a real error, so the runs are compared where no flip
# has come yet, as the observer case below is:
# the losses of steps 1-5 and the whole checkpoint of step 5 (weights and AdamW moments,
# against the batch-8 run), within TOL, one schedule of 20 steps for both. Both then
# resume to step 20, and the first step whose losses differ by more than TOL is printed
# for the record (not checked: that is the flip).
{ recipe qat; printf 'qat:\n  weight: {format: int4, group_size: 32}\n'; } >"$tmp/qat.yaml"
run 1 qat-1 qat --stop-at 5
run 2 qat-2 qat --set train.batch_size=4 --stop-at 5
same_losses qat-2 qat-1 5
same_ckpt qat-2 qat-1
run 1 qat-1 qat --resume
run 2 qat-2 qat --set train.batch_size=4 --resume
python3 - "$tmp/qat-2/metrics.jsonl" "$tmp/qat-1/metrics.jsonl" "$TOL" <<'PY'
import json, sys
a, b = ({r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r} for p in sys.argv[1:3])
flip = [k for k in sorted(b) if k in a and abs(a[k] - b[k]) > float(sys.argv[3]) * abs(b[k])]
print(f"qat: 2 ranks vs 1 over {len(b)} steps: " +
      (f"losses first differ by more than {sys.argv[3]} at step {flip[0]} (a rounding flip)" if flip
       else "no loss differs by more than " + sys.argv[3]))
PY
# int8 activations with static ranges (moving-average observers, saved as the
# checkpoint's buffers): each batch's range is reduced over the ranks, so every rank
# observes the global batch, as one process with batch 8 does (4 x 2 accumulated would
# update the observers twice a step). Quantized activations are more sensitive still
# than quantized weights: a last-bit difference flips a rounding near step 15-17 here
# (measured: losses equal to 1e-7 until then; where depends on the build, and on other
# data it came at step 9), so this compares the checkpoints of step 5 (weights, moments
# and observer ranges; one schedule of 20 steps for both). Without the reduction the
# observer ranges differ from the first step (0.116 apart at step 10).
{ recipe obs; printf 'qat:\n  weight: {format: int4, group_size: 32}\n  activation: {format: int8, granularity: per_tensor, dynamic: false}\n'; } >"$tmp/obs.yaml"
run 1 obs-1 obs --stop-at 5
run 2 obs-2 obs --set train.batch_size=4 --stop-at 5
same_losses obs-2 obs-1 5
same_ckpt obs-2 obs-1
# learnable LSQ scales: a second trained paramset, its grads in buckets of their own
{ recipe lsq; printf 'qat:\n  weight: {format: int4, group_size: 32, scale_dtype: f32, learnable: true}\n'; } >"$tmp/lsq.yaml"
equiv lsq lsq
# ZeRO-1 shards the model's parameters; the scales are all-reduced beside them
run 2 lsq-zero-2 lsq --set train.batch_size=4 --set distributed.zero=1
same_ckpt lsq-zero-2 lsq-1

# LoRA and QLoRA on the plain run's weights (dropout 0: masks are drawn per rank)
for kind in float nf4; do
  { recipe "lora-$kind" | sed "s#^model: .*#model: {from: $tmp/plain-1/checkpoint.h5}#
                             s#^data: {train#data: {tokenizer: model, train#"
    printf 'optimizer: {lr: 1.0e-2, weight_decay: 0.0}\nlora: {rank: 4, dropout: 0.0, base: %s}\n' "$kind"; } >"$tmp/lora-$kind.yaml"
  equiv "lora-$kind" "lora-$kind"
done
run 2 qlora-zero-2 lora-nf4 --set train.batch_size=4 --set distributed.zero=1
same_losses qlora-zero-2 lora-nf4-1
same_ckpt qlora-zero-2 lora-nf4-1
[ -f "$tmp/lora-nf4-2/adapter/adapter_model.safetensors" ] && ok || bad "rank 0 should write the PEFT adapter"

# --- resume on another number of ranks --------------------------------------------------
run 2 r21 plain --set train.batch_size=4 --stop-at 10
grep -q "^step     10/20" "$tmp/r21.log" && ! grep -q "^step     11/20" "$tmp/r21.log" && ok ||
  bad "--stop-at 10 should stop after step 10"
run 1 r21 plain --resume
same_ckpt r21 plain-1
run 1 r12 plain --stop-at 10
run 2 r12 plain --set train.batch_size=4 --resume
same_ckpt r12 plain-1
# the resumed run's metrics continue the first run's: all 20 steps, same losses
same_losses r12 plain-1
# ZeRO-1's sharded moments through a checkpoint: 2 ranks stop, 2 resume; QLoRA's
# adapters' moments: 2 ranks with ZeRO-1 stop, 1 rank resumes
run 2 rz plain --set train.batch_size=4 --set distributed.zero=1 --stop-at 10
run 2 rz plain --set train.batch_size=4 --set distributed.zero=1 --resume
same_ckpt rz plain-1
run 2 rqz lora-nf4 --set train.batch_size=4 --set distributed.zero=1 --stop-at 10
run 1 rqz lora-nf4 --resume
same_ckpt rqz lora-nf4-1

# --- faults ------------------------------------------------------------------------------
# rank 0 cannot write its metrics (a directory is in the way); rank 1 has gone on to the
# first all-reduce: both must end, exit 2, the failing rank named
mkdir -p "$tmp/f1/metrics.jsonl"
start=$(date +%s)
timeout 60 "${MPIRUN[@]}" -np 2 "$Q" train "$tmp/plain.yaml" --set train.batch_size=4 \
  --set "output.dir=$tmp/f1" >"$tmp/f1.log" 2>&1
rc=$?
[ "$rc" -eq 2 ] && ok || bad "a bad output on rank 0: exit $rc, want 2: $(tail -5 "$tmp/f1.log")"
grep -q "rank 0 of 2: .*metrics.jsonl: cannot write metrics" "$tmp/f1.log" && ok ||
  bad "the failing rank and file should be named: $(tail -5 "$tmp/f1.log")"
echo "bad input on rank 0: exit $rc after $(($(date +%s) - start)) s"

# a rank killed mid-run: a long run, rank 1 killed once training is under way
recipe long >"$tmp/long.yaml"
start=$(date +%s)
timeout 60 "${MPIRUN[@]}" -np 2 "$Q" train "$tmp/long.yaml" --set train.batch_size=4 \
  --set train.steps=100000 --set "output.dir=$tmp/kill" >"$tmp/kill.log" 2>&1 &
job=$!
# rank_pid R NAME: the pid of rank R's qtrain in run NAME (Open MPI puts the rank in its
# environment; mpirun and timeout have none)
rank_pid() {
  local p
  for p in $(pgrep -f "output.dir=$tmp/$2" 2>/dev/null); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return; }
  done
}
for _ in $(seq 1 200); do grep -q '"step": 5,' "$tmp/kill/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
victim=$(rank_pid 1 kill)
if [ -n "$victim" ]; then kill -9 "$victim"; ok; else bad "no rank 1 process to kill"; fi
wait "$job"
rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && ok || bad "a killed rank: exit $rc (124 = hung until the timeout)"
grep -qiE "rank 1|process rank 1" "$tmp/kill.log" && ok || bad "the killed rank should be named: $(tail -8 "$tmp/kill.log")"
echo "rank 1 killed: exit $rc after $(($(date +%s) - start)) s"

# killed while rank 0 writes a checkpoint (every step writes one; the kill lands when a
# temporary file has appeared): the previous checkpoint stays whole, and training
# resumes from it. The write may finish between the look and the kill; an attempt whose
# kill left no temporary file behind did not test the point, so up to 5 are made.
recipe ck | sed 's/dim: 64, n_layers: 2/dim: 256, n_layers: 4/; s/ffn_dim: 128/ffn_dim: 768/' >"$tmp/ck.yaml"
mid_write=0
for attempt in 1 2 3 4 5; do
  rm -rf "$tmp/ck"
  timeout 60 "${MPIRUN[@]}" -np 2 "$Q" train "$tmp/ck.yaml" --set train.batch_size=4 \
    --set train.steps=100000 --set output.checkpoint_every=1 --set "output.dir=$tmp/ck" >"$tmp/ck.log" 2>&1 &
  job=$!
  victim=
  for _ in $(seq 1 300); do victim=$(rank_pid 0 ck); [ -n "$victim" ] && break; sleep 0.05; done
  killed=0
  shopt -s nullglob
  end=$((SECONDS + 30))
  while [ -n "$victim" ] && ((SECONDS < end)); do # kill the moment a temporary checkpoint appears (no fork)
    partial=("$tmp"/ck/checkpoint.h5.tmp.*)
    if [ -f "$tmp/ck/checkpoint.h5" ] && ((${#partial[@]})); then
      kill -9 "$victim" 2>/dev/null && killed=1
      break
    fi
  done
  partial=("$tmp"/ck/checkpoint.h5.tmp.*)
  shopt -u nullglob
  wait "$job"
  if [ "$killed" -eq 1 ] && ((${#partial[@]})); then mid_write=1; break; fi
done
[ "$mid_write" -eq 1 ] && ok || bad "5 attempts never killed rank 0 in the middle of a checkpoint write"
"$Q" info "$tmp/ck/checkpoint.h5" >"$tmp/ck-info.log" 2>&1 && ok || bad "the previous checkpoint is unreadable: $(tail -3 "$tmp/ck-info.log")"
at=$(sed -n 's/.* after \([0-9]*\) steps .*/\1/p' "$tmp/ck-info.log")
"$Q" train "$tmp/ck.yaml" --set train.steps=100000 --set output.checkpoint_every=1 \
  --set "output.dir=$tmp/ck" --resume --stop-at "$((at + 1))" >"$tmp/ck-resume.log" 2>&1 &&
  grep -q "resumed from .* at step $at" "$tmp/ck-resume.log" && ok ||
  bad "resuming from the surviving checkpoint (step ${at:-?}) failed: $(tail -3 "$tmp/ck-resume.log")"
echo "killed while checkpointing (attempt $attempt): the checkpoint of step ${at:-?} survived and resumed"

# --- refused -------------------------------------------------------------------------------
expect 2 "is already at step 20" -- train "$tmp/plain.yaml" --set "output.dir=$tmp/plain-1" --resume --stop-at 5
expect 2 "--stop-at takes a step number >= 1" -- train "$tmp/plain.yaml" --stop-at 0
expect 2 "distributed.backend nccl needs train.device cuda" -- train "$tmp/plain.yaml" --set distributed.backend=nccl
expect 2 "distributed.zero must be an integer in [0, 1]" -- train "$tmp/plain.yaml" --set distributed.zero=2

finish test_dist
