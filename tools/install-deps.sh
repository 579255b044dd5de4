#!/usr/bin/env bash
# Installs what vidlora's build, tests, benchmarks and examples need on Debian 12, when missing.
# Idempotent: a second run installs nothing.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config git ca-certificates
  libeigen3-dev libfmt-dev nlohmann-json3-dev catch2 libbenchmark-dev
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev ffmpeg
  libsentencepiece-dev sentencepiece
  clang libclang-rt-14-dev clang-format
  libmecab-dev mecab python3-pip
  libopenmpi-dev openmpi-bin
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# mecab-ko-dic, the Korean dictionary for MeCab (the Korean morpheme METEOR, docs/eval.md). Debian packages
# MeCab but no Korean dictionary; PyPI's python-mecab-ko-dic wheel holds mecab-ko-dic 2.1.1 (Apache-2.0,
# Eunjeon project) compiled, which Debian's MeCab 0.996 loads. pip only downloads the wheel (checked against
# its sha256); nothing is installed into Python. VIDLORA_MECAB_KO_DIC overrides the directory.
MECAB_KO_DIC="${VIDLORA_MECAB_KO_DIC:-/usr/local/lib/mecab/dic/mecab-ko-dic}"
MECAB_KO_DIC_WHEEL="python_mecab_ko_dic-2.1.1.post2-py3-none-any.whl"
MECAB_KO_DIC_SHA256="ef8f4e80c8976f1340a7264abb0c96f384fe059fd897584aeba0151753c6ae9b"
if [ -f "$MECAB_KO_DIC/sys.dic" ]; then
  echo "install-deps: mecab-ko-dic present in $MECAB_KO_DIC"
else
  echo "install-deps: installing mecab-ko-dic 2.1.1 (PyPI python-mecab-ko-dic==2.1.1.post2) into $MECAB_KO_DIC"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "python-mecab-ko-dic==2.1.1.post2"
  echo "$MECAB_KO_DIC_SHA256  $tmp/$MECAB_KO_DIC_WHEEL" | sha256sum --check --quiet
  python3 -m zipfile -e "$tmp/$MECAB_KO_DIC_WHEEL" "$tmp/wheel"
  $SUDO mkdir -p "$MECAB_KO_DIC"
  $SUDO cp "$tmp"/wheel/mecab_ko_dic/dictionary/* "$MECAB_KO_DIC/"
  $SUDO cp "$tmp"/wheel/python_mecab_ko_dic-2.1.1.post2.dist-info/LICENSE "$MECAB_KO_DIC/LICENSE"
  echo "mecab-ko-dic 2.1.1 from PyPI python-mecab-ko-dic==2.1.1.post2 (sha256 $MECAB_KO_DIC_SHA256)" |
    $SUDO tee "$MECAB_KO_DIC/SOURCE" >/dev/null
  echo "테스트 문장입니다." | mecab -r /dev/null -d "$MECAB_KO_DIC" -Owakati >/dev/null
fi
