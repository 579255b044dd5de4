#!/usr/bin/env bash
# Installs what vidlora's build, tests, benchmarks and examples need on Debian 12, when missing.
# Idempotent: a second run installs nothing.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config git ca-certificates
  libeigen3-dev libfmt-dev nlohmann-json3-dev catch2 libbenchmark-dev
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev ffmpeg
  libsentencepiece-dev sentencepiece
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
