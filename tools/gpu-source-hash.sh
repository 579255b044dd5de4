#!/usr/bin/env bash
# Prints one hash of the sources the GPU programs are built from (include/, tests/, benchmarks/, cmake/ and the
# top-level CMake files): tools/gpu-prepare.sh writes it next to the programs it builds (.gpu-prebuilt/SOURCE), and
# tools/gpu-check.sh uses those programs only when the checkout it runs in gives the same hash.
#
#   bash tools/gpu-source-hash.sh [repository root]
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$root"
find include tests benchmarks cmake CMakeLists.txt CMakePresets.json -type f ! -path '*/__pycache__/*' -print0 2>/dev/null |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
