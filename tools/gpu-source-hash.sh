#!/usr/bin/env bash
# Prints one hash of the sources the GPU programs are built from (include/, tests/, benchmarks/, cmake/ and the
# top-level CMake files; with --programs also examples/, for train_captioner and caption): tools/gpu-prepare.sh
# writes it next to the programs it builds (.gpu-prebuilt/SOURCE, .gpu-programs/SOURCE), and tools/gpu-check.sh uses
# those programs only when the checkout it runs in gives the same hash.
#
#   bash tools/gpu-source-hash.sh [repository root] [--programs]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dirs=(include tests benchmarks cmake CMakeLists.txt CMakePresets.json)
for a in "$@"; do
  case $a in
    --programs) dirs+=(examples) ;;
    *) root="$a" ;;
  esac
done
cd "$root"
find "${dirs[@]}" -type f ! -path '*/__pycache__/*' -print0 2>/dev/null |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
