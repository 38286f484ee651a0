#!/usr/bin/env bash
# Installs the Python packages the interop tests read qtrain's files with (PyPI, CPU
# only): numpy, safetensors, gguf (gguf-py) and llama-cpp-python (built from source:
# a few minutes the first time). Only what is missing. A test that needs one of these
# fails when it is absent; it never skips.
set -euo pipefail
PY=${PYTHON:-python3}
if ! $PY -m pip --version >/dev/null 2>&1; then
  echo "python_deps: installing python3-pip"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip python3-venv >/dev/null
fi
need=()
$PY -c "import numpy" 2>/dev/null || need+=(numpy)
$PY -c "import safetensors" 2>/dev/null || need+=(safetensors)
$PY -c "import gguf" 2>/dev/null || need+=(gguf)
if ((${#need[@]})); then
  echo "python_deps: pip install ${need[*]}"
  $PY -m pip install -q "${need[@]}" 2>&1 | tail -2 || $PY -m pip install -q --break-system-packages "${need[@]}"
fi
if ! $PY -c "import llama_cpp" 2>/dev/null; then
  # llama.cpp for this CPU family without -march=native (the wheel builds from source)
  echo "python_deps: pip install llama-cpp-python (builds llama.cpp, a few minutes)"
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  $PY -m pip install -q llama-cpp-python 2>&1 | tail -2 ||
    $PY -m pip install -q --break-system-packages llama-cpp-python
fi
$PY -c "import numpy, safetensors, gguf, llama_cpp" && echo "python_deps: ok"
