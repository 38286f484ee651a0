#!/usr/bin/env bash
# Runs every test twice: in the Release build (build/, with the CUDA backend when the
# toolkit is there; its GPU tests report themselves skipped without a GPU) and in an
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-san/, CPU only). Extra arguments go to ctest (e.g.
# -L autograd). Exits non-zero if anything fails to build or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
bash scripts/python_deps.sh # the interop tests' readers: gguf-py, llama.cpp, numpy
jobs=$(nproc)

echo "== Release build: ctest $*"
(cd build && ctest --output-on-failure -j1 "$@")

echo "== ASan+UBSan build: ctest $*"
# the sanitizers check the host code; nvcc takes no -fsanitize, so CUDA stays in Release
cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DQT_SANITIZE=ON -DQT_CUDA=OFF \
  -DQT_MPI="${QT_MPI:-AUTO}" >/dev/null
cmake --build build-san -j"$jobs" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-san && ctest --output-on-failure -j1 "$@")
