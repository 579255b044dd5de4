#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything, runs every test, then the
# video decoder tests under AddressSanitizer + UBSan and a short libFuzzer run of the safetensors parser.
# What each part costs on 2 cores (CI's limit is 30 minutes): docs/benchmarks.md, "CI time budget".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash tools/install-deps.sh
jobs="${VIDLORA_JOBS:-$(nproc)}"
# The CUDA toolkit lives in /usr/local/cuda on our machines: compile every CUDA test and benchmark there
# (they report SKIPPED without a GPU).
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi

# Every test module is expected here (install-deps.sh installed their dependencies): a module that would be
# skipped is a configure error, so a green run always covers everything. The CUDA tests too when nvcc is found.
expect=(-DVIDLORA_EXPECT_ALL_TESTS=ON)
if [ -n "${CUDACXX:-}" ] || command -v nvcc >/dev/null; then expect+=(-DVIDLORA_REQUIRE_CUDA=ON); fi
cmake --preset ci "${expect[@]}"
cmake --build --preset ci -j "$jobs"
ctest --preset ci -j "$jobs"

# Decoder tests under ASan + UBSan (the decoder parses untrusted files).
cmake --preset asan
cmake --build --preset asan -j "$jobs" --target vidlora_video_tests vidlora_io_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/asan/tests/vidlora_video_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/asan/tests/vidlora_io_tests

# The safetensors parser under libFuzzer for a minute (VIDLORA_FUZZ_SECONDS to change).
bash tools/fuzz.sh
