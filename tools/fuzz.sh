#!/usr/bin/env bash
# Fuzzes the safetensors parser with libFuzzer (clang, ASan + UBSan) for VIDLORA_FUZZ_SECONDS (default 60),
# starting from tests/fuzz/corpus. Exits non-zero on any crash, leak or sanitizer report.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
seconds="${VIDLORA_FUZZ_SECONDS:-60}"
out="${VIDLORA_FUZZ_DIR:-build/fuzz}"
mkdir -p "$out/corpus"
if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found (tools/install-deps.sh installs it)"; exit 1
fi
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude $(pkg-config --cflags eigen3) tests/fuzz/fuzz_safetensors.cpp -o "$out/fuzz_safetensors" -lfmt
"$out/fuzz_safetensors" -max_total_time="$seconds" -rss_limit_mb=2048 -dict=tests/fuzz/safetensors.dict \
  -artifact_prefix="$out/" "$out/corpus" tests/fuzz/corpus 2>&1 | tail -n 5
echo "fuzz: safetensors parser ran ${seconds}s without a finding"
