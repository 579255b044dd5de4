#!/usr/bin/env bash
# Formats (default) or checks (--check) every C++ and CUDA source of the tree with .clang-format.
# The layout is defined by clang-format 14 (Debian 12's `clang-format` package); other versions may differ.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT="${CLANG_FORMAT:-clang-format}"
mode=(-i)
if [ "${1:-}" = "--check" ]; then mode=(--dry-run --Werror); fi
mapfile -t files < <(find include tests examples benchmarks tools -path tests/fixtures -prune -o -type f \
                       \( -name '*.hpp' -o -name '*.cpp' -o -name '*.cuh' -o -name '*.cu' -o -name '*.h' \) -print | sort)
"$CLANG_FORMAT" --style=file "${mode[@]}" "${files[@]}"
echo "format: ${#files[@]} files $([ "${mode[0]}" = -i ] && echo formatted || echo follow .clang-format)"
