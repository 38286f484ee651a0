#!/usr/bin/env python3
"""The reverse of test_lora_peft: PEFT loads an adapter qtrain saved, and its logits must
equal qtrain's. Run by hand (needs torch, transformers, peft):

    QT_LORA_REVERSE_DIR=/tmp/lora_rev build/test_lora_peft
    python3 tests/lora_peft_reverse.py /tmp/lora_rev

test_lora_peft leaves in that directory adapter/ (qt_lora_save_peft of the fixture
adapter with its A and B changed, as training would), ids.bin (2, 7) int32 and
logits.bin (2, 7, 64) float32, qtrain's logits with that adapter on
tests/fixtures/lora/base; and adapter_subset/ + logits_subset.bin, an adapter on layer
1's attention only (target_modules saved as full module names). This script loads the base with transformers, the adapter with
PeftModel.from_pretrained, checks that every A and B in the file reached the model
unchanged (PEFT only warns about missing or unexpected keys), and compares the logits:
||peft - qtrain|| / ||qtrain|| <= 1e-4. Exit status 0 on success.
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "fixtures", "lora", "base")
B, T, V = 2, 7, 64


def check(root, adapter_name, logits_name):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = os.path.join(root, adapter_name)
    ids = torch.from_numpy(np.fromfile(os.path.join(root, "ids.bin"), dtype="<i4").reshape(B, T))
    want = torch.from_numpy(np.fromfile(os.path.join(root, logits_name), dtype="<f4")
                            .reshape(B, T, V))
    base = AutoModelForCausalLM.from_pretrained(BASE, attn_implementation="eager",
                                                dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    model.eval()

    ok = True
    # every tensor of the file, in the model under PEFT's in-memory name
    params = dict(model.named_parameters())
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    n_lora = sum(1 for n in params if ".lora_A." in n or ".lora_B." in n)
    if n_lora != len(saved):
        print(f"model has {n_lora} LoRA tensors, the file {len(saved)}")
        ok = False
    for name, t in saved.items():
        mem = name.replace(".lora_A.weight", ".lora_A.default.weight") \
                  .replace(".lora_B.weight", ".lora_B.default.weight")
        p = params.get(mem)
        if p is None or p.shape != t.shape or not torch.equal(p.detach(), t):
            print(f"{name}: not loaded as saved ({None if p is None else tuple(p.shape)} vs "
                  f"{tuple(t.shape)})")
            ok = False
    print(f"{adapter_name}: {len(saved)} tensors loaded by PEFT {'unchanged' if ok else 'WITH ERRORS'}; "
          f"r {model.peft_config['default'].r}, alpha {model.peft_config['default'].lora_alpha}, "
          f"targets {sorted(model.peft_config['default'].target_modules)}")

    with torch.no_grad():
        got = model(input_ids=ids.long()).logits.float()
    rel = ((got - want).norm() / want.norm()).item()
    mx = ((got - want).abs().max() / want.abs().max()).item()
    good = rel <= 1e-4
    ok &= good
    print(f"PEFT on qtrain's adapter vs qtrain: ||diff||/||ref|| {rel:.3g}, "
          f"max|diff|/max|ref| {mx:.3g} {'ok' if good else 'MISMATCH'}")
    with model.disable_adapter(), torch.no_grad():
        off = model(input_ids=ids.long()).logits.float()
    moved = ((off - want).norm() / want.norm()).item()
    print(f"(the adapter moves the logits by {moved:.3f} relative, so the match is not trivial)")
    return ok


def main(root):
    ok = True
    # adapter/: the fixture adapter retouched; adapter_subset/: layer 1's attention only,
    # target_modules as full module names
    for a, lg in (("adapter", "logits.bin"), ("adapter_subset", "logits_subset.bin")):
        if os.path.isdir(os.path.join(root, a)):
            ok &= check(root, a, lg)
        else:
            print(f"{a}: missing in {root}")
            ok = False
    return ok


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(0 if main(sys.argv[1]) else 1)
