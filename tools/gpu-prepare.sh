#!/usr/bin/env bash
# Run on the development machine before a GPU session: prepares everything tools/gpu-check.sh wants carried to the
# GPU machine (which has nvcc, CMake, ninja, g++, PyTorch and PEFT, but no network and none of vidlora's C++
# dependencies), checks it fits the 64 MiB a device call carries, and prints the call.
#   .gpu-deps/   Eigen, fmt, nlohmann_json, Catch2, Google Benchmark (tools/gpu-deps.sh)
#   .whl/site/   bitsandbytes 0.50.2 unpacked with only its CUDA 13 library (the NF4 baselines)
# Both are git-ignored (.gpu-deps by .gitignore, .whl by .git/info/exclude, added here when missing).
#
#   bash tools/gpu-prepare.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

bash tools/gpu-deps.sh

bnb_version=0.50.2
if [[ ! -d .whl/site/bitsandbytes ]]; then
  exclude="$(git rev-parse --git-path info/exclude)"  # (.git is a file in a linked worktree)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
  rm -rf .whl
  mkdir -p .whl/site
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_24_x86_64 -d .whl "bitsandbytes==$bnb_version"
  (cd .whl/site && python3 -m zipfile -e ../bitsandbytes-*.whl .)
  # only the CUDA 13 library: the others would not fit the carry
  find .whl/site/bitsandbytes -maxdepth 1 -name 'libbitsandbytes_*' ! -name 'libbitsandbytes_cuda13*' -delete
  rm -f .whl/*.whl
fi
ls .whl/site/bitsandbytes/libbitsandbytes_cuda13* >/dev/null

total=$(du -sm .gpu-deps .whl | awk '{s += $1} END {print s}')
echo "gpu-prepare: .gpu-deps and .whl take ${total} MiB of the 64 MiB a device call carries"
if (( total > 60 )); then
  echo "gpu-prepare: too big to carry with room to spare" >&2
  exit 1
fi
cat <<'CALL'
gpu-prepare: ready. The device call (docs/cuda.md, "Running on a GPU"):
  run(carry=[".gpu-deps", ".whl"], timeout_s=600,
      command="VIDLORA_GPU_CHECK_SANITIZE=0 VIDLORA_GPU_CHECK_BUDGET_S=540 bash tools/gpu-check.sh 2>&1 | tee $OUT/gpu-check.txt")
(gpu-check.sh stops itself by the budget and leaves $OUT/logs.tgz after each part; a second call only fits when
the first ended early and the session has more than the machine's start left.)
CALL
