#!/usr/bin/env bash
# tests/gpu/bundle.sh - for a GPU machine that has the CUDA driver, cuBLAS and python3
# but not our build dependencies (OpenBLAS, HDF5, libyaml, cJSON), as the lent device
# machines here: builds build-gpu/ on this machine (Release, QT_CUDA=ON, portable CPU
# code, sm_80 + sm_90) and packs the five programs tests/gpu/run.sh needs, with every
# shared library they use except glibc, libstdc++ and cuBLAS, into .gpu-bundle.tar.xz.
# There: mkdir -p .gpu && tar xJf .gpu-bundle.tar.xz -C .gpu &&
#        bash tests/gpu/run.sh --prebuilt .gpu
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DQT_CUDA=ON -DQT_NATIVE=OFF \
  -DQT_CUDA_ARCHS="80-real;90-real" >/dev/null
progs=(test_cuda_ops test_cuda_model test_cuda_quant qtrain gpu_train)
cmake --build build-gpu -j"$(nproc)" --target "${progs[@]}" >/dev/null
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
for p in "${progs[@]}"; do cp "build-gpu/$p" .gpu/bin/; done
for p in .gpu/bin/*; do ldd "$p" | awk '$3 ~ /^\// {print $3}'; done | sort -u |
  grep -v -E 'libcublas|libstdc\+\+|libgcc_s|/libc\.so|/libm\.so|ld-linux' |
  while read -r l; do cp -L "$l" .gpu/lib/; done
tar cJf .gpu-bundle.tar.xz -C .gpu bin lib
echo "bundle: .gpu-bundle.tar.xz ($(du -h .gpu-bundle.tar.xz | cut -f1)); carry it with build/data/fortunes.txt"
