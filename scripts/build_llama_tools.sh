#!/usr/bin/env bash
# Builds llama.cpp's command-line tools that qtrain's interop tests use as oracles:
# llama-imatrix (tests/test_imatrix_llamacpp.sh), llama-quantize and llama-perplexity
# (the same sources, a few seconds more once libllama is built). The sources are the
# llama.cpp that PyPI's llama-cpp-python 0.3.36 vendors, the version scripts/python_deps.sh
# installs, so the tools and the Python bindings run the same ggml:
#   pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
# into build/llama-src, extracted there, built (Release, CPU, GGML_NATIVE off, no network
# features) into build/llama-tools; the tools end up in build/llama-tools/bin.
# Idempotent: exits at once when the three tools are there (from this version).
# Nothing of llama.cpp is committed to the repository; this only fetches and builds it.
# The first build compiles ggml, libllama and llama-common: 1927 s (32 min) measured with
# -j2 on a 2-core machine that other jobs kept at a load of about 11; less when idle.
#
#   bash scripts/build_llama_tools.sh      # prints the bin directory on its last line
set -euo pipefail
cd "$(dirname "$0")/.."
VER=0.3.36
SRC=$PWD/build/llama-src
OUT=$PWD/build/llama-tools
TOOLS=(llama-imatrix llama-quantize llama-perplexity)
PY=${PYTHON:-python3}

have_all() {
  [ "$(cat "$OUT/version" 2>/dev/null)" = "$VER" ] || return 1
  for t in "${TOOLS[@]}"; do [ -x "$OUT/bin/$t" ] || return 1; done
}

mkdir -p "$SRC" "$OUT"
# one builder at a time (tests of the Release and sanitizer builds may both call this)
exec 9>"$OUT/.lock"
flock 9
if have_all; then
  echo "build_llama_tools: llama.cpp tools of llama-cpp-python $VER already built"
  echo "$OUT/bin"
  exit 0
fi

t0=$(date +%s)
tarball=$SRC/llama_cpp_python-$VER.tar.gz
if [ ! -f "$tarball" ]; then
  echo "build_llama_tools: pip download llama-cpp-python==$VER (source distribution)"
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$SRC"
fi
tree=$SRC/llama_cpp_python-$VER/vendor/llama.cpp
if [ ! -f "$tree/CMakeLists.txt" ]; then
  tar -xzf "$tarball" -C "$SRC"
fi
[ -f "$tree/CMakeLists.txt" ] || { echo "build_llama_tools: no llama.cpp in $tarball" >&2; exit 1; }

echo "build_llama_tools: building ${TOOLS[*]} (a few minutes the first time)"
cmake -S "$tree" -B "$OUT" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DGGML_CCACHE=OFF >"$OUT/cmake.log" 2>&1 ||
  { tail -20 "$OUT/cmake.log" >&2; exit 1; }
cmake --build "$OUT" -j"$(nproc)" --target "${TOOLS[@]}" >"$OUT/build.log" 2>&1 ||
  { tail -30 "$OUT/build.log" >&2; exit 1; }
for t in "${TOOLS[@]}"; do
  [ -x "$OUT/bin/$t" ] || { echo "build_llama_tools: $OUT/bin/$t was not built" >&2; exit 1; }
done
echo "$VER" >"$OUT/version"
echo "build_llama_tools: built in $(($(date +%s) - t0)) s"
echo "$OUT/bin"
