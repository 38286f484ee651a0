#!/usr/bin/env bash
# Installs what qtrain needs to build (Debian/Ubuntu packages), then configures and
# builds Release into build/. Safe to re-run: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev libyaml-dev libhdf5-dev
      libopenmpi-dev openmpi-bin fortunes)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The CUDA backend builds wherever the CUDA toolkit is (no GPU needed to build it);
# QT_CUDA=ON (CI sets it) makes a missing toolkit an error instead of a CPU-only build.
# Likewise QT_MPI=ON for MPI (data parallel under mpirun); NCCL comes with CUDA + MPI.
cuda_args=(-DQT_CUDA="${QT_CUDA:-AUTO}" -DQT_MPI="${QT_MPI:-AUTO}")
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/qtrain"

# The quickstart's training text: English prose from Debian's fortunes package (quotes,
# literature, science, ...), the "%" separators between entries dropped.
F=/usr/share/games/fortunes
if [ ! -s build/data/fortunes.txt ]; then
  mkdir -p build/data
  files=()
  for n in literature wisdom people humorists fortunes science platitudes education work \
           politics love food pets sports miscellaneous medicine law kids goedel magic \
           songs-poems computers cookie definitions; do
    [ -f "$F/$n" ] && files+=("$F/$n")
  done
  grep -hv '^%$' "${files[@]}" >build/data/fortunes.txt.tmp
  mv build/data/fortunes.txt.tmp build/data/fortunes.txt
  echo "setup: wrote build/data/fortunes.txt ($(wc -c <build/data/fortunes.txt) bytes)"
fi
