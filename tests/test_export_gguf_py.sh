#!/usr/bin/env bash
# test_export_gguf_py.sh TEST_EXPORT_GGUF TEST_EXPORT_GGUF_PY - runs the C test keeping its
# GGUF files and expected values in a temporary directory, then checks them with gguf-py.
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
QT_EXPORT_GGUF_DIR=$tmp "$1" >"$tmp/c.log" 2>&1 || { cat "$tmp/c.log"; echo "FAIL: $1"; exit 1; }
tail -1 "$tmp/c.log"
python3 "$2" "$tmp"
