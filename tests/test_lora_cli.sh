#!/usr/bin/env bash
# test_lora_cli.sh QTRAIN - LoRA and QLoRA through the command line:
#  - bad lora: sections exit 2 naming the file:line and key (rank -1, base bogus), the
#    layer (a rank larger than it), the target (one that matches nothing), or the
#    unsupported combination (lora + qat, an NF4 base on cuda); nothing is written;
#  - a tiny float run, then LoRA from its checkpoint: the loss goes down, the start line
#    says what is trained, the PEFT adapter is written (PEFT's tensor names, B moved off
#    zero), and the base weights in the LoRA checkpoint equal the float run's bit for bit
#    (compared through `qtrain export --format hf`, f32);
#  - the same with an NF4 base (QLoRA);
#  - --resume of the finished LoRA run restores the adapters from the checkpoint;
#  - lora.adapter: the saved adapter loaded back, trained at lr 0, evaluates to the same
#    validation loss as the run that wrote it; onto another model it exits 2.
# Prints "test_lora_cli: N passed, M failed".
set -u
Q=$1
. "$(dirname "$0")/cli_lib.sh"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

tiny_data
base() { tiny_recipe "$1"; } # cli_lib.sh

# --- bad input --------------------------------------------------------------------
{ base b1; printf 'lora:\n  rank: -1\n'; } >"$tmp/b1.yaml"
expect 2 "$tmp/b1.yaml:7:" -- train "$tmp/b1.yaml"
expect 2 "lora.rank must be an integer" -- train "$tmp/b1.yaml"
{ base b2; printf 'lora:\n  rank: 999\n'; } >"$tmp/b2.yaml"
expect 2 "lora.rank 999 is larger than model.layers.0." -- train "$tmp/b2.yaml"
{ base b3; printf 'lora:\n  rank: 4\n  targets: [nope_proj]\n'; } >"$tmp/b3.yaml"
expect 2 '"nope_proj" matches no Linear layer' -- train "$tmp/b3.yaml"
{ base b4; printf 'lora:\n  rank: 4\n  base: bogus\n'; } >"$tmp/b4.yaml"
expect 2 "$tmp/b4.yaml:8:" -- train "$tmp/b4.yaml"
expect 2 "lora.base must be one of float|nf4" -- train "$tmp/b4.yaml"
{ base b5; printf 'lora:\n  rank: 4\nqat:\n  weight: {format: int4, group_size: 16}\n  activation: {format: int8}\n'; } >"$tmp/b5.yaml"
expect 2 "with lora, qat: may only set qat.weight.format" -- train "$tmp/b5.yaml"
{ base b6; printf 'lora:\n  rank: 4\n  base: nf4\n'; } >"$tmp/b6.yaml"
expect 2 "lora.base nf4 runs on the CPU only" -- train "$tmp/b6.yaml" --set train.device=cuda
{ base b7; printf 'lora:\n  rank: 4\n  dropout: 1\n'; } >"$tmp/b7.yaml"
expect 2 "lora.dropout must be a number in [0, 0.999]" -- train "$tmp/b7.yaml"
{ base b8; printf 'lora:\n  rank: 4\n  targets: q_proj\n'; } >"$tmp/b8.yaml"
expect 2 "lora.targets must be a list of strings" -- train "$tmp/b8.yaml"
if ls "$tmp"/b*/checkpoint.h5 >/dev/null 2>&1; then bad "a refused recipe wrote a checkpoint"; else ok; fi
"$Q" train --keys | grep -q "^lora.targets" && ok || bad "train --keys does not list lora.targets"

# --- float, then LoRA / QLoRA from its checkpoint ------------------------------------
base float >"$tmp/float.yaml"
"$Q" train "$tmp/float.yaml" >"$tmp/float.log" 2>&1 || bad "float run failed: $(tail -3 "$tmp/float.log")"
# lora_run NAME LORA-SECTION [--set ...]: $tmp/NAME.yaml fine-tunes the float checkpoint
# for 30 steps at lr 1e-2 (no decay) with that lora: section, into $tmp/NAME
lora_run() {
  local name=$1 section=$2
  shift 2
  { base "$name" | sed "s#^model: .*#model: {from: $tmp/float/checkpoint.h5}#
                        s#^data: {train#data: {tokenizer: model, train#"
    printf 'optimizer: {lr: 1.0e-2, weight_decay: 0.0}\nlora:\n%s\n' "$section"; } >"$tmp/$name.yaml"
  "$Q" train "$tmp/$name.yaml" "$@" >"$tmp/$name.log" 2>&1 || bad "$name run failed: $(tail -3 "$tmp/$name.log")"
}
# losses NAME: "first last" from the summary line "loss A -> B"
losses() { sed -n 's/.*loss \([0-9.]*\) -> \([0-9.]*\).*/\1 \2/p' "$tmp/$1.log"; }
# vl NAME: the last validation loss the run printed
vl() { sed -n 's/^eval step [0-9]*: val loss \([0-9.]*\).*/\1/p' "$tmp/$1.log" | tail -1; }
# falls NAME: the training loss went down by at least 2% over the run, and the final
# validation loss (the same held-out windows, the same batches) is below the base's
falls() {
  local l v0 v
  l=$(losses "$1")
  v0=$(vl float)
  v=$(vl "$1")
  if [ -n "$l" ] && awk -v a="${l% *}" -v b="${l#* }" 'BEGIN { exit !(b < 0.98 * a) }'; then ok
  else bad "$1: the training loss did not go down: '$l'"; fi
  if [ -n "$v" ] && [ -n "$v0" ] && awk -v a="$v0" -v b="$v" 'BEGIN { exit !(b < a) }'; then ok
  else bad "$1: validation loss $v, not below the base's $v0"; fi
}
# hf_of NAME: the weights of $tmp/NAME/checkpoint.h5 as an HF checkpoint (f32)
hf_of() {
  "$Q" export "$tmp/$1/checkpoint.h5" --format hf --no-merge --out "$tmp/$1-hf" >/dev/null 2>&1 ||
    bad "export of $1 failed"
}
# same_tensors A B: every tensor of safetensors file A equals B's bit for bit (stdlib only)
same_tensors() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    head.pop("__metadata__", None)
    data = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in head.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
if a.keys() != b.keys():
    sys.exit(f"tensor names differ: {sorted(a.keys() ^ b.keys())}")
diff = [k for k in a if a[k] != b[k]]
if diff:
    sys.exit(f"{len(diff)} tensors differ, e.g. {diff[0]}")
PY
}
hf_of float

lora_run lora '  rank: 4
  alpha: 8'
falls lora
grep -q "LoRA: r 4, alpha 8 (scaling 2), 14 layers (all-linear), " "$tmp/lora.log" && ok ||
  bad "the LoRA run does not say what it trains: $(grep -m1 LoRA "$tmp/lora.log")"
[ -s "$tmp/lora/adapter/adapter_config.json" ] && [ -s "$tmp/lora/adapter/adapter_model.safetensors" ] &&
  ok || bad "no PEFT adapter in $tmp/lora/adapter: $(ls "$tmp/lora/adapter" 2>&1)"
grep -q "adapter" "$tmp/lora.log" && ok || bad "the run does not say where the adapter is"
# PEFT's names, 2 layers x 7 Linear x (A, B), and B trained off its zero init
python3 - "$tmp/lora/adapter/adapter_model.safetensors" <<'PY' && ok || bad "adapter tensors"
import json, struct, sys, array
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = {k: v for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
names = sorted(head)
want = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
if len(names) != 28 or want not in head:
    sys.exit(f"{len(names)} tensors: {names[:3]}...")
if head[want]["shape"] != [64, 4] or head[want]["dtype"] != "F32":
    sys.exit(f"{want}: {head[want]}")
o = head[want]["data_offsets"]
b = array.array("f", raw[8 + n + o[0]:8 + n + o[1]])
if max(abs(x) for x in b) == 0:
    sys.exit("lora_B is still zero after training")
PY
hf_of lora
same_tensors "$tmp/float-hf/model.safetensors" "$tmp/lora-hf/model.safetensors" && ok ||
  bad "LoRA changed the base weights"

# --resume of the finished run: the adapters (and their optimizer) come back from the
# checkpoint's buffers, no step is taken, and the adapter written again is the same
cp -r "$tmp/lora/adapter" "$tmp/lora-adapter-1"
"$Q" train "$tmp/lora.yaml" --resume >"$tmp/resume.log" 2>&1 || bad "resume failed: $(tail -3 "$tmp/resume.log")"
same_tensors "$tmp/lora-adapter-1/adapter_model.safetensors" "$tmp/lora/adapter/adapter_model.safetensors" &&
  ok || bad "the adapter resumed from the checkpoint differs from the one the run wrote"

lora_run qlora '  rank: 4
  alpha: 8
  base: nf4'
falls qlora
grep -q "QLoRA base: NF4, 4.1" "$tmp/qlora.log" && ok ||
  bad "the QLoRA run does not describe its base: $(grep -m1 LoRA "$tmp/qlora.log")"
# a QLoRA checkpoint stores the base as trained against: the adapted layers NF4-rounded
# (the f32 copies are released while training). Training must not move it: the base of
# the trained run equals that of the same run at lr 0
lora_run qlora0 '  rank: 4
  alpha: 8
  base: nf4' --set optimizer.lr=0 --set train.steps=1 --set schedule.warmup=0
hf_of qlora
hf_of qlora0
same_tensors "$tmp/qlora0-hf/model.safetensors" "$tmp/qlora-hf/model.safetensors" && ok ||
  bad "QLoRA changed the base weights in the checkpoint"

# QAT + LoRA: the frozen base through int4 g16 (fake-quantized once), adapters in f32
lora_run qatlora '  rank: 4
  alpha: 8
qat:
  weight: {format: int4, group_size: 16}'
falls qatlora
grep -q "QAT + LoRA: the base fake-quantized to int4" "$tmp/qatlora.log" && ok ||
  bad "the QAT + LoRA run does not describe its base: $(grep -m1 LoRA "$tmp/qatlora.log")"

# the adapter loaded back (lora.adapter), not trained (lr 0): the same validation loss
lora_run again '  rank: 4' --set "lora.adapter=$tmp/lora/adapter" --set optimizer.lr=0 \
  --set train.steps=1 --set schedule.warmup=0
grep -q "from $tmp/lora/adapter" "$tmp/again.log" && ok || bad "the run does not name its adapter"
[ -n "$(vl lora)" ] && [ "$(vl lora)" = "$(vl again)" ] && ok ||
  bad "the loaded adapter evaluates to '$(vl again)', the run that wrote it to '$(vl lora)'"

# an adapter of another model (dim 32, not 64): exit 2 naming the tensor
{ base wrong | sed 's/dim: 64, /dim: 32, /; s/ffn_dim: 128/ffn_dim: 64/'
  printf 'lora:\n  adapter: %s\n' "$tmp/lora/adapter"; } >"$tmp/wrong.yaml"
expect 2 "q_proj.lora_A.weight has shape [4, 64], expected [4, 32]" -- train "$tmp/wrong.yaml"

echo "train loss first last: lora $(losses lora), qlora $(losses qlora), qat+lora $(losses qatlora); val loss: base $(vl float), lora $(vl lora), qlora $(vl qlora), qat+lora $(vl qatlora)"
finish test_lora_cli
