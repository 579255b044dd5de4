#!/usr/bin/env bash
# Run on the (Debian 12) development machine, not the GPU machine: copies the C++ dependencies that the
# GPU image lacks (Eigen, fmt, nlohmann_json, Catch2 v2, Google Benchmark: headers, libraries and CMake
# package files, in their /usr layout so the package files stay relocatable) into .gpu-deps/usr, which
# git ignores. Carry `.gpu-deps` to the GPU machine; tools/gpu-check.sh uses it when present.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dst="$here/.gpu-deps/usr"
rm -rf "$here/.gpu-deps"
mkdir -p "$dst"
copy() {  # copy /usr/<path> (file, link or folder) to .gpu-deps/usr/<path>
  for p in "$@"; do
    if compgen -G "/usr/$p" >/dev/null; then
      for f in /usr/$p; do
        mkdir -p "$dst/$(dirname "${f#/usr/}")"
        cp -a "$f" "$dst/$(dirname "${f#/usr/}")/"
      done
    else
      echo "gpu-deps: /usr/$p not found (run tools/install-deps.sh first)" >&2
      exit 1
    fi
  done
}
copy include/eigen3 share/eigen3/cmake \
     include/fmt 'lib/x86_64-linux-gnu/libfmt.so*' lib/x86_64-linux-gnu/cmake/fmt \
     include/nlohmann share/cmake/nlohmann_json \
     include/catch2 lib/cmake/Catch2 'lib/libCatch2*' \
     include/benchmark 'lib/x86_64-linux-gnu/libbenchmark*' lib/x86_64-linux-gnu/cmake/benchmark
exclude="$(git -C "$here" rev-parse --git-path info/exclude)"
grep -qx '/.gpu-deps/' "$exclude" 2>/dev/null || echo '/.gpu-deps/' >>"$exclude"
echo "gpu-deps: $(du -sh "$here/.gpu-deps" | cut -f1) in $here/.gpu-deps (carry it: run(carry=[\".gpu-deps\"]))"
