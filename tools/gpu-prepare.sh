#!/usr/bin/env bash
# Run on the development machine before a GPU session: prepares everything tools/gpu-check.sh wants carried to the
# GPU machine (which has nvcc, CMake, ninja, g++, PyTorch and PEFT, but no network and none of vidlora's C++
# dependencies), checks it fits the 64 MiB a device call carries, and prints the call.
#   .gpu-deps/   Eigen, fmt, nlohmann_json, Catch2, Google Benchmark (tools/gpu-deps.sh)
#   .whl/site/   bitsandbytes 0.50.2 unpacked with only its CUDA 13 library (the NF4 baselines)
#   .gpu-prebuilt/  the CUDA tests, the host tests, the benchmarks and the NCCL one-process tests built here for sm_90
#                (H100 / H200; build-gpu90/), with the architecture and the hash of the sources
#                (tools/gpu-source-hash.sh): gpu-check.sh then skips its build there (a review estimates about
#                150 s of its 540 for today's tests; not timed on a GPU) when both match and the programs' libraries
#                load; VIDLORA_GPU_PREPARE_PREBUILT=0 skips this part (minutes on two cores: 4 for an incremental
#                build; a cold one not timed), VIDLORA_GPU_PREPARE_ARCH another architecture.
# All three are git-ignored (.gpu-deps and .gpu-prebuilt by .gitignore, .whl by .git/info/exclude, added here when
# missing).
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

carried=(.gpu-deps .whl)
if [[ "${VIDLORA_GPU_PREPARE_PREBUILT:-1}" == 1 ]]; then
  arch="${VIDLORA_GPU_PREPARE_ARCH:-90}"
  b="build-gpu$arch"
  # gpu-check.sh's configure (tools/gpu-check.sh), for `arch`
  mkdir -p "$b"
  cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIDLORA_BUILD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DVIDLORA_BUILD_EXAMPLES=OFF -DVIDLORA_BUILD_VIDEO=OFF >"$b/prepare-configure.log" 2>&1 ||
    { tail -30 "$b/prepare-configure.log"; echo "gpu-prepare: configure of $b failed" >&2; exit 1; }
  programs=(vidlora_cuda_tests vidlora_cuda_host_tests bench_cuda_quant bench_cuda_optim bench_cuda_lora
            bench_cuda_attention bench_cuda_preset_step)
  grep -q "vidlora::nccl_core ON" "$b/prepare-configure.log" &&
    programs+=(vidlora_nccl_tests_one_process vidlora_nccl_trainer_tests_one_process)
  echo "gpu-prepare: building ${programs[*]} for sm_$arch in $b (minutes on two cores)"
  cmake --build "$b" --target "${programs[@]}" -j "$(nproc)" >"$b/prepare-build.log" 2>&1 ||
    { grep -E "error|FAILED" "$b/prepare-build.log" | head -20; echo "gpu-prepare: build failed ($b/prepare-build.log)" >&2; exit 1; }
  rm -rf .gpu-prebuilt
  mkdir -p .gpu-prebuilt
  for p in "${programs[@]}"; do
    f="$(find "$b" -type f -name "$p" -perm -u+x | head -n1)"
    [[ -n "$f" ]] || { echo "gpu-prepare: $p not found in $b" >&2; exit 1; }
    cp "$f" .gpu-prebuilt/
  done
  echo "$arch" >.gpu-prebuilt/ARCH
  bash tools/gpu-source-hash.sh >.gpu-prebuilt/SOURCE
  carried+=(.gpu-prebuilt)
fi

total=$(du -sm "${carried[@]}" | awk '{s += $1} END {print s}')
echo "gpu-prepare: ${carried[*]} take ${total} MiB of the 64 MiB a device call carries"
if (( total > 60 )); then
  echo "gpu-prepare: too big to carry with room to spare" >&2
  exit 1
fi
list="$(printf '"%s", ' "${carried[@]}")"
cat <<CALL
gpu-prepare: ready. The device call (docs/cuda.md, "Running on a GPU"):
  run(carry=[${list%, }], timeout_s=600,
      command="VIDLORA_GPU_CHECK_SANITIZE=0 VIDLORA_GPU_CHECK_BUDGET_S=540 bash tools/gpu-check.sh 2>&1 | tee \$OUT/gpu-check.txt")
(gpu-check.sh stops itself by the budget and leaves \$OUT/logs.tgz after each part; a second call on the same
warm machine runs what the first skipped: VIDLORA_GPU_CHECK_PARTS=attention,nccl,bench, for example; it fits when
the first ended early and the session has more than the machine's start left.)
CALL
