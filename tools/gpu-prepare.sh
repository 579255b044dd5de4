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
#   .gpu-programs/  train_captioner and caption built for GPU presets (default H100 and T4) for that architecture, caption
#                for the Cpu preset, their libraries (FFmpeg built small: tools/gpu-ffmpeg.sh) and the clips they train
#                on, in one programs.tar.xz, with the architecture and the hash of the sources (examples/ included):
#                gpu-check.sh's `programs` part runs tests/programs/gpu_programs.sh with them
#                (VIDLORA_GPU_PREPARE_PROGRAMS=0 leaves them out; 2 to 3 minutes per preset on two cores with ccache
#                warm, measured on 2026-12-06; a cold build not timed).
# All four are git-ignored (.gpu-deps, .gpu-prebuilt and .gpu-programs by .gitignore, .whl by .git/info/exclude,
# added here when missing).
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

# What the programs part will build, checked and its FFmpeg made first: an unknown preset or an FFmpeg that cannot be
# downloaded stops here, not after the long build below.
program_presets="${VIDLORA_GPU_PREPARE_PROGRAMS-H100,T4}"
[[ "$program_presets" == 0 ]] && program_presets=""
IFS=, read -r -a program_preset_list <<<"$program_presets"
mapfile -t program_preset_list < <(printf '%s\n' "${program_preset_list[@]}" | awk 'NF && !seen[$0]++')  # once each
for p in "${program_preset_list[@]}"; do
  case $p in
    T4 | H100) ;;  # the presets tests/programs/gpu_programs.sh has expectations for
    *) echo "gpu-prepare: VIDLORA_GPU_PREPARE_PROGRAMS: '$p' is not T4 or H100 (tests/programs/gpu_programs.sh checks those)" >&2
       exit 2 ;;
  esac
done
(( ${#program_preset_list[@]} )) && bash tools/gpu-ffmpeg.sh build-gpu-ffmpeg
# The sources' hashes before anything is built: an edit during the long builds would otherwise give the programs a
# hash they were not built from (checked again at the end).
source_hash="$(bash tools/gpu-source-hash.sh)"
programs_hash="$(bash tools/gpu-source-hash.sh --programs)"

arch="${VIDLORA_GPU_PREPARE_ARCH:-90}"  # of the prebuilt tests and of the programs
carried=(.gpu-deps .whl)
if [[ "${VIDLORA_GPU_PREPARE_PREBUILT:-1}" == 1 ]]; then
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
  rm -rf .gpu-prebuilt "$b/prebuilt"
  mkdir -p .gpu-prebuilt "$b/prebuilt"
  for p in "${programs[@]}"; do
    f="$(find "$b" -type f -name "$p" -perm -u+x ! -path "$b/prebuilt/*" | head -n1)"
    [[ -n "$f" ]] || { echo "gpu-prepare: $p not found in $b" >&2; exit 1; }
    cp "$f" "$b/prebuilt/"
  done
  # xz: a quarter of their size (the carry is 64 MiB); gpu-check.sh unpacks them
  tar -C "$b/prebuilt" -cf - "${programs[@]}" | xz -T0 -6 >.gpu-prebuilt/programs.tar.xz
  echo "$arch" >.gpu-prebuilt/ARCH
  echo "$source_hash" >.gpu-prebuilt/SOURCE
  carried+=(.gpu-prebuilt)
fi

# train_captioner and caption as a user builds them for a GPU preset (examples/, with FFmpeg and SentencePiece), for
# `arch`, and caption for the Cpu preset: gpu-check.sh's `programs` part runs tests/programs/gpu_programs.sh with them
# on the GPU (both stages, resume, fp32 against 16 bits, the cap, caption), as CTest runs it on the emulation. The GPU
# machine has none of their libraries, and Debian's FFmpeg with its dependencies is 167 MB: the libraries travel in
# .gpu-programs/programs.tar.xz (lib/), with FFmpeg built small from Debian's sources (tools/gpu-ffmpeg.sh), and so do
# the clips (demo/, made here: the GPU machine has no `ffmpeg` command). VIDLORA_GPU_PREPARE_PROGRAMS: the GPU presets
# (default H100,T4: bf16, and fp16 with loss scaling on the Hugging Face fixture), 0 to leave them out.
if (( ${#program_preset_list[@]} )); then
  stage=build-gpu-programs-stage
  rm -rf "$stage" .gpu-programs
  mkdir -p "$stage/bin" "$stage/lib" .gpu-programs
  build_programs() {  # build_programs PRESET DIR TARGET... [-- CMAKE ARGS...]: into $stage/bin as TARGET_PRESET
    local p=$1 b=$2 t targets=() args=()
    shift 2
    while (( $# )) && [[ $1 != -- ]]; do targets+=("$1"); shift; done
    (( $# )) && shift && args=("$@")
    mkdir -p "$b"
    cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIDLORA_PRESET="$p" -DVIDLORA_BUILD_TESTS=OFF \
      -DVIDLORA_BUILD_BENCHMARKS=OFF -DVIDLORA_WITH_MPI=OFF -DVIDLORA_WITH_MECAB=OFF "${args[@]}" \
      >"$b/prepare-configure.log" 2>&1 ||
      { tail -30 "$b/prepare-configure.log"; echo "gpu-prepare: configure of $b failed" >&2; exit 1; }
    echo "gpu-prepare: building ${targets[*]} for the $p preset in $b (minutes on two cores)"
    cmake --build "$b" --target "${targets[@]}" -j "$(nproc)" >"$b/prepare-build.log" 2>&1 ||
      { grep -E "error|FAILED" "$b/prepare-build.log" | head -20; echo "gpu-prepare: build failed ($b/prepare-build.log)" >&2; exit 1; }
    for t in "${targets[@]}"; do cp "$b/examples/$t" "$stage/bin/${t}_$p"; done
  }
  for p in "${program_preset_list[@]}"; do
    build_programs "$p" "build-gpu$arch-programs-$p" train_captioner caption -- -DVIDLORA_BUILD_CUDA=ON \
      -DVIDLORA_REQUIRE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch"
    grep -q "VIDLORA_TRAIN_ON_CUDA" "build-gpu$arch-programs-$p/build.ninja" ||
      { echo "gpu-prepare: build-gpu$arch-programs-$p's train_captioner does not train on the GPU" >&2; exit 1; }
  done
  build_programs Cpu build-gpu-programs-Cpu caption -- -DVIDLORA_BUILD_CUDA=OFF
  # Every library the loader takes from this machine's system directories, with FFmpeg's from the small build; not
  # the C and C++ runtimes and zlib (every machine has them, newer), nor the CUDA toolkit's (the GPU machine's own).
  for f in "$stage"/bin/*; do
    LD_LIBRARY_PATH="$PWD/build-gpu-ffmpeg/lib" ldd "$f" | awk '$2 == "=>" {print $1, $3}'
  done | sort -u | while read -r name path; do
    case "$name" in
      linux-vdso* | ld-linux* | libc.so.* | libm.so.* | libstdc++.so.* | libgcc_s.so.* | libdl.so.* | libpthread.so.* | \
      librt.so.* | libz.so.*) continue ;;
    esac
    [[ "$path" == not ]] && { echo "gpu-prepare: $name not found for the programs" >&2; exit 1; }
    [[ "$path" == /usr/local/cuda* ]] && continue
    cp -L "$path" "$stage/lib/$name"
  done
  bash tests/programs/gpu_programs.sh --make-data "$here" "$stage/demo" ||
    { echo "gpu-prepare: the clips for the programs could not be made (tools/make_demo_data.sh needs ffmpeg)" >&2; exit 1; }
  tar -C "$stage" -cf - bin lib demo | xz -T0 -6 >.gpu-programs/programs.tar.xz
  echo "$arch" >.gpu-programs/ARCH
  echo "${program_preset_list[*]}" >.gpu-programs/PRESETS
  echo "$programs_hash" >.gpu-programs/SOURCE
  carried+=(.gpu-programs)
fi

if [[ "$(bash tools/gpu-source-hash.sh)" != "$source_hash" || "$(bash tools/gpu-source-hash.sh --programs)" != "$programs_hash" ]]; then
  echo "gpu-prepare: the sources changed while the programs were built: run it again" >&2
  rm -f .gpu-prebuilt/SOURCE .gpu-programs/SOURCE  # (gpu-check.sh then never takes these programs for those sources)
  exit 1
fi
# The call carries the working tree (tracked files and untracked ones git does not ignore) as well.
# (A tracked file deleted from the tree is still listed: du counts the others.)
tree=$(git ls-files -z -co --exclude-standard | { du -cb --files0-from=- 2>/dev/null || true; } | tail -n1 | cut -f1)
total=$(( $(du -sb "${carried[@]}" | awk '{s += $1} END {print s}') + tree ))
total=$(( (total + (1 << 20) - 1) >> 20 ))
echo "gpu-prepare: ${carried[*]} and the working tree ($(( tree >> 20 )) MiB) take ${total} MiB of the 64 MiB a device call carries"
if (( total > 60 )); then
  echo "gpu-prepare: too big to carry with room to spare (VIDLORA_GPU_PREPARE_PROGRAMS=0 leaves .gpu-programs out)" >&2
  exit 1
fi
list="$(printf '"%s", ' "${carried[@]}")"
cat <<CALL
gpu-prepare: ready. The device call (docs/cuda.md, "Running on a GPU"):
  run(carry=[${list%, }], timeout_s=600,
      command="VIDLORA_GPU_CHECK_SANITIZE=0 VIDLORA_GPU_CHECK_BUDGET_S=540 bash tools/gpu-check.sh 2>&1 | tee \$OUT/gpu-check.txt")
(gpu-check.sh stops itself by the budget and leaves \$OUT/logs.tgz after each part; a second call on the same
warm machine runs what the first skipped: VIDLORA_GPU_CHECK_PARTS=hf,nccl,bench, for example; it fits when
the first ended early and the session has more than the machine's start left.)
CALL
