#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything, runs every test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash tools/install-deps.sh
jobs="${VIDLORA_JOBS:-$(nproc)}"
cmake --preset ci
cmake --build --preset ci -j "$jobs"
ctest --preset ci -j "$jobs"
