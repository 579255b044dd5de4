#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything, runs every test, then the
# video decoder tests under AddressSanitizer + UBSan beside a short libFuzzer run of the safetensors parser.
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

# The safetensors parser under libFuzzer for a minute (VIDLORA_FUZZ_SECONDS to change), on one core while the
# sanitizer build below takes the others: its output is shown when it ends.
mkdir -p build
fuzz_log=build/fuzz.log
bash tools/fuzz.sh >"$fuzz_log" 2>&1 &
fuzz_pid=$!
trap 'kill "$fuzz_pid" 2>/dev/null || true' EXIT  # on a failed step (libFuzzer ends at its time limit)

# Decoder tests under ASan + UBSan (the decoder parses untrusted files).
cmake --preset asan
cmake --build --preset asan -j "$jobs" --target vidlora_video_tests vidlora_io_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/asan/tests/vidlora_video_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/asan/tests/vidlora_io_tests

fuzz_status=0
wait "$fuzz_pid" || fuzz_status=$?
trap - EXIT
cat "$fuzz_log"
if [ "$fuzz_status" -ne 0 ]; then
  echo "fuzz: tools/fuzz.sh failed (exit $fuzz_status): the log is above and in $fuzz_log" >&2
  exit "$fuzz_status"
fi
