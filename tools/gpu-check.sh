#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: configure for that GPU's architecture, build the CUDA tests and the CUDA
# benchmarks, run them, and print one table. Meant to finish in well under 10 minutes.
#
#   bash tools/gpu-check.sh [build-dir]        (default build/gpu-check)
#
# The GPU image has nvcc, CMake and ninja but not vidlora's C++ dependencies: first run tools/gpu-deps.sh on the
# development machine and carry `.gpu-deps` (used automatically when present).
#
# Carried extras, used when present: `.gpu-prebuilt/` (the programs tools/gpu-prepare.sh built on the development
# machine for sm_90: used instead of a build here when they are for this GPU's architecture, from these sources
# (tools/gpu-source-hash.sh) and their libraries load; VIDLORA_GPU_CHECK_BUILD=1 builds anyway) and `.whl/site/`
# (bitsandbytes, unpacked, for the PyTorch comparison).
#
# Order, the gates first: the build (the NCCL programs in it; -k 0, so a unit that fails to compile costs only its
# programs), the CUDA tests tag by tag (`tests`), the 7B preset steps (`presets`: issue 14's gate), the attention
# gate (`attention`: the bf16 kernels at T 4096 against SDPA flash, estimated at about 30 s), train_captioner and
# caption as a user builds them, on the GPU (`programs`: tests/programs/gpu_programs.sh over tools/gpu-prepare.sh's
# .gpu-programs, up to 150 s per preset, VIDLORA_GPU_CHECK_PROGRAMS_CAP_S), the transformers + PEFT +
# bitsandbytes step (`hf`: the preset gate's baseline: T4, L4 and the checkpointing A100 / H100 steps,
# VIDLORA_GPU_CHECK_HF_PRESETS), NCCL (`nccl`: issue 15), the other kernel benchmarks and PyTorch comparisons (`bench`), the fp32-frozen
# preset baselines (`fp32`) and memcheck (`memcheck`). VIDLORA_GPU_CHECK_PARTS (a comma list of those names, default
# all) runs only some: a second call on the same warm machine, whose build directory is still there, runs what the
# first one's deadline skipped. One deadline bounds the whole run
# (VIDLORA_GPU_CHECK_BUDGET_S, default 540 s: under the device call's 600 s): every step's limit is cut to what is
# left, and a step with under 15 s left is skipped. Each table row is printed as it is made ("row: ..."), and with
# $OUT set (the device machine's folder that comes back) the logs are tarred into $OUT/logs.tgz after each part,
# so a run cut short still returns what it did.
#
# Environment: VIDLORA_JOBS (build parallelism, default nproc), VIDLORA_GPU_BENCH_MIN_TIME (seconds per
# benchmark, default 0.2), VIDLORA_GPU_CHECK_SKIP_BENCH=1 to run only the tests (the parts tests, programs, nccl and
# memcheck, whatever VIDLORA_GPU_CHECK_PARTS says), VIDLORA_GPU_CHECK_SANITIZE=0 to skip the compute-sanitizer memcheck
# pass over the CUDA tests (run by default, one process per tag, each capped at 90 s).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build/gpu-check}"
jobs="${VIDLORA_JOBS:-$(nproc)}"
min_time="${VIDLORA_GPU_BENCH_MIN_TIME:-0.2}"
log="$build/gpu-check-logs"
start=$(date +%s)
# One overall deadline (the device call is killed at its timeout_s, taking the table and the log tar with it):
# every step's cap is cut to what is left, and a step with under 15 s left is skipped.
deadline=$(( start + ${VIDLORA_GPU_CHECK_BUDGET_S:-540} ))
cap_s() { local left=$(( deadline - $(date +%s) )); (( left < $1 )) && echo "$left" || echo "$1"; }
run_capped() {  # run_capped <cap seconds> cmd...: timeout with the cap cut to the deadline; 124 without running when none left
  local c; c=$(cap_s "$1"); shift
  (( c < 15 )) && { echo "gpu-check: skipped (deadline): $*" >&2; return 124; }
  timeout -k 10 "$c" "$@"
}
unpack() {  # unpack ARCHIVE.tar.xz DIR: with tar, or Python's tarfile where the machine has no xz
  tar -C "$2" -xJf "$1" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
}
snapshot() { [[ -n "${OUT:-}" ]] && tar czf "$OUT/logs.tgz" -C "$build" gpu-check-logs 2>/dev/null; return 0; }

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: nvidia-smi not found: no NVIDIA GPU on this machine" >&2
  exit 77
fi
gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')"
if [[ -z "$cap" ]]; then
  echo "gpu-check: could not read the compute capability from nvidia-smi" >&2
  exit 1
fi
nvcc_bin="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
toolkit_root="$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")"
toolkit_lib="$toolkit_root/lib64:$toolkit_root/lib:$toolkit_root/targets/x86_64-linux/lib"  # cuBLASLt, the runtime
echo "gpu-check: $gpu_name (sm_$cap), nvcc $("$nvcc_bin" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"

mkdir -p "$build" "$log"
ld_machine="${LD_LIBRARY_PATH-}"  # the machine's own (where the driver's library may be found): the programs part keeps it
extra=()
if [[ -d "$here/.gpu-deps/usr" ]]; then  # C++ dependencies carried from the dev machine (tools/gpu-deps.sh)
  extra+=(-DCMAKE_PREFIX_PATH="$here/.gpu-deps/usr")
  export LD_LIBRARY_PATH="$here/.gpu-deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
known_parts=tests,presets,attention,programs,hf,nccl,bench,fp32,memcheck
parts=",${VIDLORA_GPU_CHECK_PARTS:-$known_parts},"
for p in ${parts//,/ }; do
  [[ ",$known_parts," == *",$p,"* ]] || { echo "gpu-check: VIDLORA_GPU_CHECK_PARTS: '$p' is not one of $known_parts" >&2; exit 2; }
done
part() { [[ "$parts" == *",$1,"* ]]; }  # part NAME: this run includes it
[[ "${VIDLORA_GPU_CHECK_SKIP_BENCH:-0}" == 1 ]] && parts=",tests,programs,nccl,memcheck,"
bin="$build"  # where the programs are: the build here, or the carried prebuilt ones
cuda_tests="$build/tests/cuda/vidlora_cuda_tests"  # (tests/cuda/CMakeLists.txt defines it)
benches=(bench_cuda_quant bench_cuda_optim bench_cuda_lora bench_cuda_attention)
targets=(vidlora_cuda_tests vidlora_cuda_host_tests)
[[ "${VIDLORA_GPU_CHECK_SKIP_BENCH:-0}" == 1 ]] || targets+=("${benches[@]}" bench_cuda_preset_step)
# NCCL from PyTorch's wheel (nvidia-nccl) when the toolkit has none: the NCCL tests need it (and MPI for mpiexec's).
nccl_py="$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)"
if [[ -n "$nccl_py" && -f "$nccl_py/include/nccl.h" ]]; then
  nccl_lib="$(ls "$nccl_py"/lib/libnccl.so* 2>/dev/null | head -n1)"
  [[ -n "$nccl_lib" ]] && extra+=(-DVIDLORA_NCCL_INCLUDE_DIR="$nccl_py/include" -DVIDLORA_NCCL_LIBRARY="$nccl_lib")
fi
built=0
nccl_targets=()
nccl_bin="$build/tests/mpi"   # where the NCCL programs are
host_tests="$build/tests/vidlora_cuda_host_tests"
ld_python="${LD_LIBRARY_PATH-}"  # the python parts' library path: never the toolkit's (torch brings its own)

# The programs tools/gpu-prepare.sh built on the development machine for this architecture from these very sources
# (.gpu-prebuilt/ARCH and SOURCE), when the loader finds their libraries (the toolkit's and NCCL's directories are
# added for them when needed): no build here (a review estimates about 150 s of the budget for it; not timed on a
# GPU). VIDLORA_GPU_CHECK_BUILD=1 builds anyway.
# They travel xz-compressed (.gpu-prebuilt/programs.tar.xz: a quarter of their size, for the 64 MiB carry) and are
# unpacked into the build directory.
carried_prebuilt="$here/.gpu-prebuilt"
prebuilt="$build/prebuilt"
use_prebuilt() {
  [[ "${VIDLORA_GPU_CHECK_BUILD:-0}" != 1 && -f "$carried_prebuilt/programs.tar.xz" ]] || return 1
  local want_arch have_hash want_hash dirs p
  want_arch="$(cat "$carried_prebuilt/ARCH" 2>/dev/null)"
  [[ "$want_arch" == "$cap" ]] || { echo "gpu-check: .gpu-prebuilt is for sm_$want_arch, this GPU is sm_$cap: building"; return 1; }
  have_hash="$(bash "$here/tools/gpu-source-hash.sh" "$here")"
  want_hash="$(cat "$carried_prebuilt/SOURCE" 2>/dev/null)"
  [[ "$have_hash" == "$want_hash" ]] || { echo "gpu-check: .gpu-prebuilt was built from other sources: building"; return 1; }
  rm -rf "$prebuilt" && mkdir -p "$prebuilt"
  unpack "$carried_prebuilt/programs.tar.xz" "$prebuilt" ||
    { echo "gpu-check: .gpu-prebuilt/programs.tar.xz does not unpack: building"; return 1; }
  [[ -x "$prebuilt/vidlora_cuda_tests" ]] || { echo "gpu-check: .gpu-prebuilt has no vidlora_cuda_tests: building"; return 1; }
  missing() { for p in "$prebuilt"/vidlora_* "$prebuilt"/bench_cuda_*; do [[ -x "$p" ]] && ldd "$p" 2>&1 | grep "not found"; done; }
  if [[ -n "$(missing)" ]]; then  # the toolkit's libraries (cuBLASLt, the runtime) and NCCL's, for these programs only
    dirs="$toolkit_lib${nccl_py:+:$nccl_py/lib}"
    export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if [[ -n "$(missing)" ]]; then
      echo "gpu-check: .gpu-prebuilt's programs miss libraries here: building"; missing | sort -u | head -5
      return 1
    fi
  fi
  return 0
}
needs_build=0  # the parts that run the tests or benchmarks built here (programs and hf bring or compile their own)
for p in tests presets attention nccl bench fp32 memcheck; do part "$p" && needs_build=1; done
if [[ $needs_build == 0 ]]; then
  echo "gpu-check: no build (the parts asked for need none)"
elif use_prebuilt; then
  echo "gpu-check: using the programs built on the development machine (.gpu-prebuilt, sm_$cap, these sources)"
  bin="$prebuilt"
  cuda_tests="$prebuilt/vidlora_cuda_tests"
  host_tests="$prebuilt/vidlora_cuda_host_tests"
  nccl_bin="$prebuilt"
  [[ -x "$prebuilt/vidlora_nccl_tests_one_process" ]] && nccl_targets=(vidlora_nccl_tests_one_process vidlora_nccl_trainer_tests_one_process)
  built=1
elif timeout 120 cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
     -DVIDLORA_BUILD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cap" -DVIDLORA_BUILD_EXAMPLES=OFF \
     -DVIDLORA_BUILD_VIDEO=OFF "${extra[@]}" >"$log/configure.txt" 2>&1; then
  # The NCCL programs in the same parallel build (the GPU idles while they would build later), and -k 0: one unit
  # that fails to compile must not cost the programs that do compile.
  if grep -q "vidlora::nccl_core ON" "$log/configure.txt"; then
    nccl_targets=(vidlora_nccl_tests_one_process vidlora_nccl_trainer_tests_one_process)
    grep -q "vidlora::nccl ON" "$log/configure.txt" && nccl_targets+=(vidlora_nccl_tests)
  fi
  run_capped 300 cmake --build "$build" --target "${targets[@]}" "${nccl_targets[@]}" -j "$jobs" -- -k 0 \
    >"$log/build.txt" 2>&1 || { grep -E "error|FAILED" "$log/build.txt" | head -40; echo "gpu-check: build had failures ($log/build.txt)" >&2; }
  [[ -x "$cuda_tests" ]] && built=1
else
  tail -30 "$log/configure.txt"
  echo "gpu-check: configure failed ($log/configure.txt)" >&2
fi
if [[ $needs_build == 1 && $built == 0 ]]; then
  echo "gpu-check: no $cuda_tests after the build, and no usable .gpu-prebuilt/ (tools/gpu-prepare.sh)" >&2
  [[ -f "$log/build.txt" ]] && tail -n 60 "$log/build.txt"
  snapshot
  exit 1
fi
[[ $needs_build == 1 ]] && echo "gpu-check: built in $(( $(date +%s) - start )) s"

rows=()
status=0
# The register-tile attention failed its test (in this run or an earlier one on this build directory): the rest runs
# on the shared-memory kernels.
off_marker() { [[ -f "$log/register_tiles_off" ]] && export VIDLORA_ATTENTION_REGISTER_TILES=0; return 0; }
off_marker
row() { rows+=("$(printf '%-46s %-10s %s' "$1" "$2" "$3")"); printf 'row: %s\n' "${rows[-1]}"; }
summary() { grep -E "passed|failed" "$1" | tail -n1; }

if part tests; then
  run_capped 60 "$host_tests" >"$log/cuda_host.txt" 2>&1
  rc=$?; [[ $rc == 0 ]] && row "tests: cuda_host (CPU side)" PASS "$(summary "$log/cuda_host.txt")" || { row "tests: cuda_host (CPU side)" FAIL "see $log/cuda_host.txt"; status=1; }

  # The register-tile attention first (model/cuda/flash_attention_mma.cuh, what every bf16 / fp16 step on sm_80+
  # runs): if it fails, the rest of the run goes on the shared-memory kernels (VIDLORA_ATTENTION_REGISTER_TILES=0), so
  # that one kernel's failure does not hide what the decoder, trainer and preset rows would show. ([model] below
  # leaves it out: it ran here.)
  run_capped 60 "$cuda_tests" -w NoTests "cuda register-tile attention*" >"$log/cuda_register_tiles.txt" 2>&1
  case $? in
    0) row "tests: register-tile attention" PASS "$(summary "$log/cuda_register_tiles.txt")"
       rm -f "$log/register_tiles_off" ;;
    77) row "tests: register-tile attention" SKIP "no CUDA device" ;;
    *) row "tests: register-tile attention" FAIL "see $log/cuda_register_tiles.txt; the rest runs on shared-memory tiles"
       status=1
       grep -E "FAILED|with expansion|^  [A-Z]|failed" "$log/cuda_register_tiles.txt" | head -20
       touch "$log/register_tiles_off"  # also for a later call's parts on this build directory
       off_marker ;;
  esac

  for tag in core quant optim loss model lora layer decoder trainer; do
    spec="[$tag]"
    [[ $tag == model ]] && spec="[model]~cuda register-tile attention*"
    run_capped 90 "$cuda_tests" "$spec" >"$log/cuda_$tag.txt" 2>&1
    rc=$?
    case $rc in
      0) row "tests: cuda [$tag]" PASS "$(summary "$log/cuda_$tag.txt")" ;;
      77) row "tests: cuda [$tag]" SKIP "no CUDA device" ;;
      *) row "tests: cuda [$tag]" FAIL "exit $rc, see $log/cuda_$tag.txt"; status=1
         grep -E "FAILED|with expansion|^  [A-Z]|failed" "$log/cuda_$tag.txt" | head -20 ;;
    esac
  done
  snapshot
fi

# Issue 14's preset gate: LLaVA-NeXT-Video-7B's decoder, one stage-2 step per GPU preset under its card's cap
# (benchmarks/bench_cuda_preset_step.cu; a step that does not fit reports the allocator's error). One process per
# preset, each with its own JSON: a preset that times out or crashes costs only its own row. Google Benchmark names a
# run BM_preset_stage2_step/<preset>/iterations:3/manual_time; the rows and the HF comparison key it by <preset>.
preset_steps() {  # preset_steps NAME...: run them, print their rows, merge every preset JSON into preset_step.json
  local p rc f
  for p in "$@"; do
    f="$log/preset_step_${p//\//_}.json"
    rm -f "$f"  # (a build directory reused: no earlier run's row)
    if (( $(cap_s 120) < 15 )); then row "preset step: 7B $p" SKIP "deadline"; continue; fi
    run_capped 120 "$bin/bench_cuda_preset_step" --benchmark_filter="^BM_preset_stage2_step/$p/iterations:" \
      --benchmark_out="$f" --benchmark_out_format=json >>"$log/preset_step.txt" 2>>"$log/preset_step.err"
    rc=$?
    if [[ $rc == 77 ]]; then row "preset step: 7B" SKIP "no CUDA device"; return; fi
    if [[ $rc != 0 ]]; then
      row "preset step: 7B $p" FAIL "exit $rc, see $log/preset_step.err"; status=1
    elif ! grep -q '"name"' "$f" 2>/dev/null; then  # ran, but no benchmark in its JSON: the filter matched nothing
      row "preset step: 7B $p" FAIL "no benchmark ran (filter), see $log/preset_step.txt"; status=1
    fi
  done
  command -v python3 >/dev/null 2>&1 || return
  while IFS=$'\t' read -r name result detail; do
    row "$name" "$result" "$detail"
    case "$result" in "NO FIT"* | ERROR) status=1 ;; esac  # a preset that does not fit or fails fails the gate
  done < <(python3 - "$log" "$@" <<'PY'
import glob, json, os, sys
def key(name):  # BM_preset_stage2_step/T4/fp32_frozen/iterations:3/manual_time -> T4/fp32_frozen
    return "/".join(s for s in name.split("/")[1:] if ":" not in s and s != "manual_time")
merged = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "preset_step_*.json"))):
    try:
        merged += json.load(open(f))["benchmarks"]
    except (OSError, ValueError, KeyError):  # cut by its limit: its FAIL row is already there
        pass
for b in merged:
    b["key"] = key(b["name"])  # the HF comparison's key
json.dump({"benchmarks": merged}, open(os.path.join(sys.argv[1], "preset_step.json"), "w"))
for b in merged:
    if b["key"] not in sys.argv[2:]:
        continue
    name = "preset step: 7B " + b["key"]
    if b.get("error_occurred"):  # "NO FIT (cap): …", "NO FIT (card): …" or "ERROR: …" (bench_cuda_preset_step's skip_with)
        message = b.get("error_message", "")
        result, _, detail = message.partition(": ")
        if result not in ("NO FIT (cap)", "NO FIT (card)", "ERROR", "SKIP (card)"):
            result, detail = "ERROR", message
        print(f"{name}\t{result}\t{detail[:200]}")
    else:
        print(f"{name}\t{b['real_time']:.0f} {b['time_unit']}\t{b['tokens_per_s']:.0f} tok/s, peak {b['peak_GiB']:.2f} "
              f"(in use {b.get('peak_in_use_GiB', 0):.2f}) of {b['cap_GiB']:.2f} GiB, "
              f"{b.get('cache_releases', 0):.0f} cache releases, MFU {100 * b['MFU']:.1f}% of "
              f"{b.get('peak_TFLOPs', 0):.0f} TFLOP/s ({b.get('label', '')})")
PY
)
}
# The four presets first (the gate), then the checkpointing rows (the HF baseline's fallbacks); the fp32 baselines
# come last of all.
if part presets; then
  : >"$log/preset_step.txt"
  : >"$log/preset_step.err"
  rm -f "$log"/preset_step_*.json  # (a build directory reused: no earlier run's rows)
  preset_steps T4 L4 A100 H100 A100_checkpointing H100_checkpointing
fi
snapshot

# The PyTorch / PEFT / bitsandbytes comparisons, where the GPU image's python3 has torch.
[[ -d "$here/.whl/site" ]] && export PYTHONPATH="$here/.whl/site${PYTHONPATH:+:$PYTHONPATH}"

# A benchmark program's rows: bench_rows PROGRAM CSV [ARGS...] runs it into $log/CSV.csv and prints a row per run.
bench_rows() {
  local b=$1 csv="$log/$2.csv" err="$log/$2.err" rc name _iters real _cpu unit bps rest detail counter
  shift 2
  run_capped 90 "$bin/$b" --benchmark_min_time="$min_time" --benchmark_format=csv "$@" >"$csv" 2>"$err"
  rc=$?
  if [[ $rc == 77 ]]; then
    row "bench: $b" SKIP "no CUDA device"
  elif [[ $rc == 0 ]]; then
    # name,iterations,real_time,cpu_time,time_unit,bytes_per_second,items_per_second,label,error_occurred,error_message,<counters>
    while IFS=, read -r name _iters real _cpu unit bps rest; do
      [[ "$name" == name || -z "$name" ]] && continue
      name="${name//\"/}"
      detail=""
      [[ -n "$bps" ]] && detail="$(awk -v b="$bps" 'BEGIN{printf "%.1f GB/s", b/1e9}')"
      counter="$(echo "$rest" | awk -F, '{print $NF}')"
      if [[ -z "$detail" && -n "$counter" && "$name" == BM_attention_fwd/* ]]; then
        detail="$(awk -v c="$counter" 'BEGIN{printf "%.1f TFLOP/s (causal, forward)", c}')"
      elif [[ -z "$detail" && -n "$counter" && "$b" == bench_cuda_attention ]]; then
        detail="$(awk -v c="$counter" 'BEGIN{printf "%.1f TFLOP/s (causal, fwd + 2.5x bwd)", c}')"
      elif [[ -z "$detail" && -n "$counter" && "$b" == bench_cuda_lora ]]; then
        detail="$(awk -v c="$counter" 'BEGIN{printf "%.0f GFLOP/s (frozen-equivalent)", c}')"
      elif [[ -z "$detail" && -n "$counter" ]]; then  # bench_cuda_optim's trainer rows: the values stepped
        detail="$(awk -v c="$counter" 'BEGIN{printf "%.0f values", c}')"
      fi
      row "bench: $name" "$(printf '%.3f %s' "$real" "$unit")" "$detail"
    done <"$csv"
  else
    row "bench: $b${*:+ $*}" FAIL "exit $rc, see $err"; status=1
  fi
}
# cuda_pytorch.py's comparisons into $log/CSV.csv: torch_rows CSV BENCH...
torch_rows() {
  local csv="$log/$1.csv" err="$log/$1.err" name ms
  shift
  if ! env LD_LIBRARY_PATH="$ld_python" python3 -c "import torch" >/dev/null 2>&1; then
    row "torch: $*" SKIP "no torch in this python3"
    return
  fi
  if PYTHONUNBUFFERED=1 run_capped 120 env LD_LIBRARY_PATH="$ld_python" python3 "$here/benchmarks/cuda_pytorch.py" "$@" >"$csv" 2>"$err"; then
    while IFS=, read -r name ms; do
      [[ "$name" == \#* || -z "$name" ]] && continue
      row "torch: $name" "$ms ms" ""
    done <"$csv"
  else
    row "torch: benchmarks/cuda_pytorch.py $*" FAIL "see $err"
  fi
  grep '^#' "$err" | head -10
}
# Goal ratios from the CSVs (real_time column 3, bytes_per_second column 6); a program's rows may be in two CSVs
# (bench_cuda_attention's gate rows in bench_cuda_attention_gate.csv).
t() { cat "$log/$1".csv "$log/$1"_gate.csv 2>/dev/null | awk -F, -v n="$2" '{g=$1; gsub(/"/,"",g)} g==n {print $3; exit}'; }
bw() { cat "$log/$1".csv "$log/$1"_gate.csv 2>/dev/null | awk -F, -v n="$2" '{g=$1; gsub(/"/,"",g)} g==n {print $6; exit}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
# Speed-up over PyTorch (torch ms / vidlora ms; goal >= 1: at least as fast).
tms() { cat "$log/$1".csv "$log/$1"_gate.csv 2>/dev/null | awk -F, -v n="$2" '{g=$1; gsub(/"/,"",g)} g==n {f = ($5 ~ /us/) ? 1e-3 : ($5 ~ /ns/) ? 1e-6 : ($5 ~ /ms/) ? 1 : 1e3; print $3 * f; exit}'; }
pms() { cat "$log"/pytorch*.csv 2>/dev/null | awk -F, -v n="$1" '$1==n {print $2; exit}'; }
speedup() { row "vs torch: $1" "$(ratio "$(pms "$3")" "$(tms "${2%%:*}" "${2#*:}")")" ">= 1.00 ($3)"; }
A=bench_cuda_attention
# bf16: register tiles (3; 7 reading bf16 q, k, v, dO, as SDPA does; 8 the same in two key stages), shared-memory
# tiles (6)
attention_gate='^BM_attention_fwd(_bwd)?/T:4096/kernel:[3678]/'

# The attention gate: forward + backward at T 4096, 32 heads, head dim 128, bf16, against SDPA flash in bf16 (goal: at
# least 0.9 of its speed), and the forward alone (kernel 3 is the shared-memory one too when the register-tile test
# failed: VIDLORA_ATTENTION_REGISTER_TILES=0).
if part attention; then
  rm -f "$log/${A}_gate.csv" "$log/pytorch_attention.csv"
  bench_rows "$A" "${A}_gate" --benchmark_filter="$attention_gate"
  torch_rows pytorch_attention sdpa
  row "goal: sdpa flash bf16 / tiled bf16 attention, T4096" "$(ratio "$(pms torch_sdpa_flash_fwd_bwd_bf16_T4096)" "$(tms $A BM_attention_fwd_bwd/T:4096/kernel:7/manual_time)")" ">= 0.90 (bf16 inputs, as SDPA's)"
  row "goal: sdpa flash bf16 / tiled bf16 attention, T4096, two key stages" "$(ratio "$(pms torch_sdpa_flash_fwd_bwd_bf16_T4096)" "$(tms $A BM_attention_fwd_bwd/T:4096/kernel:8/manual_time)")" ">= 0.90 (FlashAttentionOptions::pipelined)"
  speedup "attention fwd+bwd T4096, bf16 register tiles, fp32 inputs" "$A:BM_attention_fwd_bwd/T:4096/kernel:3/manual_time" torch_sdpa_flash_fwd_bwd_bf16_T4096
  speedup "attention fwd+bwd T4096, bf16 shared-memory tiles" "$A:BM_attention_fwd_bwd/T:4096/kernel:6/manual_time" torch_sdpa_flash_fwd_bwd_bf16_T4096
  speedup "attention fwd T4096, bf16 register tiles${VIDLORA_ATTENTION_REGISTER_TILES:+ (off: shared-memory)}, bf16 inputs" "$A:BM_attention_fwd/T:4096/kernel:7/manual_time" torch_sdpa_flash_fwd_bf16_T4096
  speedup "attention fwd T4096, bf16 register tiles, bf16 inputs, two key stages" "$A:BM_attention_fwd/T:4096/kernel:8/manual_time" torch_sdpa_flash_fwd_bf16_T4096
  speedup "attention fwd T4096, bf16 register tiles, fp32 inputs" "$A:BM_attention_fwd/T:4096/kernel:3/manual_time" torch_sdpa_flash_fwd_bf16_T4096
  speedup "attention fwd T4096, bf16 shared-memory tiles" "$A:BM_attention_fwd/T:4096/kernel:6/manual_time" torch_sdpa_flash_fwd_bf16_T4096
  snapshot
fi

# train_captioner and caption on the GPU as a user runs them (.gpu-programs from tools/gpu-prepare.sh: the GPU presets'
# builds for this architecture, the Cpu preset's caption, their libraries and the clips): tests/programs/gpu_programs.sh,
# the checks CTest runs on the emulation (both stages, Ctrl-C and a bit-identical resume, fp32 against 16 bits, the
# cap's error, the adapter read by the CPU caption, caption's GPU captions against the run's evaluation), less the
# emulation's launch report. Each program runs through a wrapper that puts its carried libraries and the toolkit's
# before the machine's own library path (the script's python3 keeps the machine's).
if part programs; then
  pdir="$here/.gpu-programs"
  prun="$build/programs"
  if [[ ! -f "$pdir/programs.tar.xz" ]]; then
    row "programs" SKIP "no .gpu-programs (tools/gpu-prepare.sh)"
  elif [[ "$(cat "$pdir/ARCH")" != "$cap" ]]; then
    row "programs" SKIP "built for sm_$(cat "$pdir/ARCH"), this GPU is sm_$cap (VIDLORA_GPU_PREPARE_ARCH=$cap)"
  elif [[ "$(bash "$here/tools/gpu-source-hash.sh" "$here" --programs)" != "$(cat "$pdir/SOURCE")" ]]; then
    row "programs" SKIP "built from other sources: tools/gpu-prepare.sh again"
  elif ! { rm -rf "$prun" && mkdir -p "$prun/run" && unpack "$pdir/programs.tar.xz" "$prun"; }; then
    row "programs" FAIL ".gpu-programs/programs.tar.xz does not unpack"; status=1
  else
    ld_programs="$prun/lib:$toolkit_lib${ld_machine:+:$ld_machine}"
    for f in "$prun"/bin/*; do
      printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$ld_programs" "$f" >"$prun/run/${f##*/}"
      chmod +x "$prun/run/${f##*/}"
    done
    programs_cap="${VIDLORA_GPU_CHECK_PROGRAMS_CAP_S:-150}"
    for p in $(cat "$pdir/PRESETS"); do
      name="programs: $p on sm_$cap"
      missing="$(for f in "$prun/bin/train_captioner_$p" "$prun/bin/caption_$p" "$prun/bin/caption_Cpu"; do
                   [[ -x "$f" ]] || echo "${f##*/}: missing"; LD_LIBRARY_PATH="$ld_programs" ldd "$f" 2>&1 | grep "not found"
                 done | tr -s ' \n\t' ' ' | head -c 300)"
      if [[ -n "$missing" ]]; then
        row "$name" FAIL "libraries not found: $missing"; status=1; continue
      fi
      if (( $(cap_s "$programs_cap") < 15 )); then row "$name" SKIP "deadline"; continue; fi
      run_capped "$programs_cap" env VIDLORA_REAL_GPU=1 DEMO_DATA="$prun/demo" \
        bash "$here/tests/programs/gpu_programs.sh" "$p" "$prun/run/train_captioner_$p" "$prun/run/caption_Cpu" "$here" \
        "$prun/work_$p" "$prun/run/caption_$p" >"$log/programs_$p.txt" 2>&1
      rc=$?
      # A cut run leaves its program behind (train_captioner answers SIGTERM by finishing its step and writing a
      # checkpoint): nothing of it may hold the GPU while the next part runs.
      if pgrep -f "$prun/bin/" >/dev/null 2>&1; then
        pkill -TERM -f "$prun/bin/"; sleep 5; pkill -KILL -f "$prun/bin/"
      fi
      detail="$(grep -c '^ok:' "$log/programs_$p.txt") ok, $(grep -c '^skipped' "$log/programs_$p.txt") skipped, $(grep -c '^FAILED' "$log/programs_$p.txt") failed (train, resume, fp32, cap, caption): $log/programs_$p.txt"
      case $rc in
        0) row "$name" PASS "$detail" ;;
        124) row "$name" TIMEOUT "cut by its cap or the deadline, $detail"; status=1 ;;
        *) row "$name" FAIL "exit $rc, $detail"; status=1; grep -E "^FAILED" "$log/programs_$p.txt" | head -10 ;;
      esac
      # the runs' text logs for logs.tgz (their checkpoints, adapters and clips would make it too big to come back)
      rm -rf "$log/programs_work_$p" && mkdir -p "$log/programs_work_$p"
      (cd "$prun/work_$p" 2>/dev/null &&
        find . -type f \( -name '*.out' -o -name '*.err' -o -name '*.jsonl' \) -size -2048k -print0 | tar --null -cf - -T -) |
        tar -xf - -C "$log/programs_work_$p" 2>/dev/null
    done
  fi
  snapshot
fi

# The preset gate's baseline: the same steps in transformers + PEFT + bitsandbytes (benchmarks/hf_preset_step.py),
# with the settings from the preset types (examples/presets_table.cpp --json, compiled here: it needs only fmt).
# Compared with this run's preset rows, or with an earlier call's (preset_step.json, left in the build directory).
if part hf && (( $(cap_s 60) >= 15 )) &&
   env LD_LIBRARY_PATH="$ld_python" python3 -c "import torch, transformers, peft" >/dev/null 2>&1; then
  fmt_flags=()
  [[ -d "$here/.gpu-deps/usr" ]] && fmt_flags=(-I"$here/.gpu-deps/usr/include" -L"$here/.gpu-deps/usr/lib/x86_64-linux-gnu")
  if "${CXX:-g++}" -std=c++20 -O1 -I"$here/include" "${fmt_flags[@]}" -DVIDLORA_ACTIVE_PRESET=Cpu \
       "$here/examples/presets_table.cpp" -o "$build/presets_table" -lfmt >"$log/presets_table.txt" 2>&1 &&
     "$build/presets_table" --json >"$log/presets.json"; then
    # one JSON line per preset as each finishes: what a timeout leaves is still read
    # The configurations HF + PEFT can be expected to fit (A100 and H100 without checkpointing are not: each costs a
    # 7B build for an out-of-memory row); VIDLORA_GPU_CHECK_HF_PRESETS= (empty) runs every one.
    hf_only="${VIDLORA_GPU_CHECK_HF_PRESETS-T4,L4,A100_checkpointing,H100_checkpointing}"
    PYTHONUNBUFFERED=1 run_capped 240 env LD_LIBRARY_PATH="$ld_python" python3 "$here/benchmarks/hf_preset_step.py" "$log/presets.json" \
      ${hf_only:+--only "$hf_only"} >"$log/hf_preset_step.jsonl" 2>"$log/hf_preset_step.err"
    hf_rc=$?
    [[ $hf_rc == 0 ]] || { row "hf step: benchmarks/hf_preset_step.py" FAIL "exit $hf_rc, see $log/hf_preset_step.err"; tail -n 5 "$log/hf_preset_step.err"; }
    while IFS=$'\t' read -r name result detail; do row "$name" "$result" "$detail"; done < <(python3 - "$log/hf_preset_step.jsonl" "$log/preset_step.json" <<'PY'
import json, sys
hf = []
for line in open(sys.argv[1]):
    try:
        hf.append(json.loads(line))
    except ValueError:  # blank, or the last line cut by the deadline
        pass
ours = {}
try:
    for b in json.load(open(sys.argv[2]))["benchmarks"]:  # keyed as the HF names: T4, A100_checkpointing, ...
        ours[b["key"]] = b
except (OSError, ValueError, KeyError):
    pass
for r in hf:
    name = r["name"]
    if "error" in r:
        print(f"hf step: 7B {name}\tNO RUN\t{r['error'][:160]}")
        continue
    print(f"hf step: 7B {name}\t{1e3 * r['step_s']:.0f} ms\t{r['tokens_per_s']:.0f} tok/s, peak {r['peak_reserved_gib']:.2f} "
          f"GiB reserved ({r['peak_allocated_gib']:.2f} allocated) of {r['cap_gib']:.2f}; {r['dtype']}, "
          f"{'NF4' if r['nf4'] else 'dense'}")
    o = ours.get(name)
    if o and not o.get("error_occurred"):
        print(f"goal: 7B {name} tokens/s vidlora / HF\t{o['tokens_per_s'] / r['tokens_per_s']:.2f}\t>= 2.0 "
              f"(vidlora {o.get('label', '').split('; ', 3)[-1]}, HF {r['dtype']})")
        print(f"goal: 7B {name} peak memory vidlora / HF\t{o['peak_GiB'] / r['peak_reserved_gib']:.2f}\t<= 0.6 "
              f"(reserved bytes, both)")
if hf:
    print(f"hf step: versions\t-\t{json.dumps(hf[0].get('versions', {}))}")
PY
)
  else
    row "hf step: presets_table --json" FAIL "see $log/presets_table.txt"
  fi
fi
snapshot

if part nccl; then
  # NCCL with one rank against comm::Single: the all-reduce, then the CUDA Trainer over it. In one process over a
  # comm::Single bootstrap (vidlora::nccl_core: CUDA and NCCL, no MPI needed), and the all-reduce also under mpiexec
  # when configure found MPI (vidlora::nccl). NCCL refuses two ranks on one GPU.
  nccl_row() {  # name, rc, log
    case $2 in
      0) row "tests: $1" PASS "$(tail -n1 "$3")" ;;
      77) row "tests: $1" SKIP "no CUDA device" ;;
      *) row "tests: $1" FAIL "exit $2, see $3"; status=1; tail -n 12 "$3" ;;
    esac
  }
  if [[ $built == 1 && ${#nccl_targets[@]} -gt 0 ]]; then
    if [[ -x "$nccl_bin/vidlora_nccl_tests_one_process" && -x "$nccl_bin/vidlora_nccl_trainer_tests_one_process" ]]; then
      for t in vidlora_nccl_tests_one_process vidlora_nccl_trainer_tests_one_process; do
        run_capped 120 "$nccl_bin/$t" >"$log/$t.txt" 2>&1
        nccl_row "$t (comm::Single bootstrap)" $? "$log/$t.txt"
      done
      if [[ " ${nccl_targets[*]} " == *" vidlora_nccl_tests "* ]]; then
        mpiexec_bin="$(sed -n 's/^MPIEXEC_EXECUTABLE:[A-Z]*=//p' "$build/CMakeCache.txt")"
        run_capped 60 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$mpiexec_bin" -np 1 \
          "$build/tests/mpi/vidlora_nccl_tests" >"$log/vidlora_nccl_tests.txt" 2>&1
        nccl_row "vidlora_nccl_tests (mpiexec, one rank)" $? "$log/vidlora_nccl_tests.txt"
      else
        row "tests: nccl under mpiexec" SKIP "no MPI here (the one-process tests above cover the NCCL calls)"
      fi
    else
      row "tests: nccl" FAIL "not built, see $log/build.txt"; status=1
    fi
  else
    row "tests: nccl" SKIP "vidlora::nccl_core not built here (needs NCCL: nccl.h, libnccl)"
  fi
fi
snapshot

# The other kernel benchmarks and PyTorch comparisons.
if part bench; then
  rm -f "$log/pytorch.csv"
  for b in bench_cuda_quant bench_cuda_optim bench_cuda_lora; do bench_rows "$b" "$b"; done
  bench_rows "$A" "$A" --benchmark_filter="-$attention_gate"
  snapshot
  torch_rows pytorch lora adamw nf4 qlora
  row "goal: nf4 dequant f32 / D2D copy bandwidth" "$(ratio "$(bw bench_cuda_quant 'BM_dequantize_nf4<float>/manual_time')" "$(bw bench_cuda_quant 'BM_copy_baseline<float>/manual_time')")" ">= 0.70"
  row "goal: nf4 dequant bf16 / D2D copy bandwidth" "$(ratio "$(bw bench_cuda_quant 'BM_dequantize_nf4<__nv_bfloat16>/manual_time')" "$(bw bench_cuda_quant 'BM_copy_baseline<__nv_bfloat16>/manual_time')")" ">= 0.70"
  row "goal: adamw / D2D copy bandwidth" "$(ratio "$(bw bench_cuda_optim BM_adamw_multi_tensor/manual_time)" "$(bw bench_cuda_optim BM_copy_baseline/manual_time)")" ">= 0.70"
  row "goal: grad norm+clip / D2D copy bandwidth" "$(ratio "$(bw bench_cuda_optim BM_grad_norm_clip/manual_time)" "$(bw bench_cuda_optim BM_copy_baseline/manual_time)")" ">= 0.70"
  # The Trainer's optimizer phase per step at the H100 preset's 181 M trainable values: host (copies both ways, the
  # host's passes) over device (DeviceAdamW, the values copied down) wall time.
  row "trainer optimizer step 181M: host / device" "$(ratio "$(t bench_cuda_optim BM_trainer_optimizer_host/iterations:3/real_time)" "$(t bench_cuda_optim BM_trainer_optimizer_device/iterations:3/real_time)")" "speed-up"
  L=bench_cuda_lora
  for fused in 0 1; do
    fn=$([[ $fused == 1 ]] && echo "fused expand" || echo "cuBLASLt expand")
    for d in 0 5; do
      row "goal: lora fwd+bwd / frozen, dropout $d%, $fn" "$(ratio "$(t $L "BM_lora_forward_backward_bf16/dropout_pct:$d/fused:$fused/manual_time")" "$(t $L "BM_frozen_gemms_bf16/autotune:0/manual_time")")" "<= 1.15"
    done
  done
  speedup "frozen bf16 GEMMs (heuristic)" "$L:BM_frozen_gemms_bf16/autotune:0/manual_time" torch_frozen_linear_fwd_bwd_bf16
  # Every tiled kernel (fp32, TF32, bf16 and fp16 on register tiles where the GPU takes them, bf16 at tile 32, bf16
  # on shared-memory tiles) against SDPA flash in bf16 and against our row kernels.
  for kern in 1 2 3 4 5 6 7 8; do
    case $kern in 1) kn=fp32 ;; 2) kn=TF32 ;; 3) kn=bf16 ;; 4) kn=fp16 ;; 5) kn="bf16 tile 32" ;; 6) kn="bf16 shared-memory tiles" ;; 7) kn="bf16, bf16 inputs" ;; 8) kn="bf16, bf16 inputs, two key stages" ;; esac
    speedup "attention fwd+bwd T4096, tiled $kn" "$A:BM_attention_fwd_bwd/T:4096/kernel:$kern/manual_time" torch_sdpa_flash_fwd_bwd_bf16_T4096
    row "tiled $kn attention / row kernels, T4096" "$(ratio "$(t $A BM_attention_fwd_bwd/T:4096/kernel:0/manual_time)" "$(t $A "BM_attention_fwd_bwd/T:4096/kernel:$kern/manual_time")")" "speed-up"
  done
  for d in 0 5; do
    speedup "lora fwd+bwd, dropout $d%" "$L:BM_lora_forward_backward_bf16/dropout_pct:$d/fused:0/manual_time" peft_lora_fwd_bwd_bf16_dropout$d
    speedup "qlora nf4 fwd+bwd, dropout $d%" "$L:BM_qlora_nf4_forward_backward_bf16/dropout_pct:$d/fused:0/manual_time" peft_qlora_nf4_fwd_bwd_bf16_dropout$d
  done
  speedup "adamw 40Mi (torch fused)" "bench_cuda_optim:BM_adamw_multi_tensor/manual_time" torch_adamw_fused_40Mi
  speedup "adamw 40Mi (torch foreach)" "bench_cuda_optim:BM_adamw_multi_tensor/manual_time" torch_adamw_foreach_40Mi
  speedup "grad norm + clip 40Mi" "bench_cuda_optim:BM_grad_norm_clip/manual_time" torch_clip_grad_norm_40Mi
  speedup "nf4 dequantize 8192x8192 bf16 (bnb)" "bench_cuda_quant:BM_dequantize_nf4<__nv_bfloat16>/manual_time" bnb_dequantize_nf4_8192x8192_bf16
  speedup "nf4 gemv 8192x8192 (bnb: bf16 x)" "bench_cuda_quant:BM_dequant_gemv_nf4/manual_time" bnb_gemv_4bit_8192x8192_bf16
fi
snapshot

# The fp32-frozen baselines of the preset step (what the 16-bit frozen GEMMs gain), when time is left.
part fp32 && preset_steps T4/fp32_frozen H100/fp32_frozen
snapshot

# compute-sanitizer memcheck over the CUDA tests (out-of-bounds and misaligned accesses the value checks miss).
if part memcheck && [[ "${VIDLORA_GPU_CHECK_SANITIZE:-1}" != 0 ]] && command -v compute-sanitizer >/dev/null 2>&1; then
  for tag in core quant optim loss model lora layer decoder trainer; do  # one process per tag: a fault cannot hide the later tags
    run_capped 90 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 "$cuda_tests" "[$tag]" \
      >"$log/memcheck_$tag.txt" 2>&1
    rc=$?
    case $rc in
      0) row "memcheck: cuda [$tag]" PASS "$(grep -E 'ERROR SUMMARY' "$log/memcheck_$tag.txt" | tail -n1)" ;;
      124) row "memcheck: cuda [$tag]" TIMEOUT "90 s cap, see $log/memcheck_$tag.txt" ;;
      *) row "memcheck: cuda [$tag]" FAIL "exit $rc, see $log/memcheck_$tag.txt"; status=1
         grep -E "Invalid|ERROR SUMMARY|^=========     at|by thread" "$log/memcheck_$tag.txt" | head -8 ;;
    esac
  done
fi

echo
echo "== vidlora gpu-check: $gpu_name (sm_$cap), $(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - start )) s =="
printf '%-46s %-10s %s\n' "check" "result" "detail"
printf '%s\n' "${rows[@]}"
echo "logs: $log"
snapshot
exit $status
