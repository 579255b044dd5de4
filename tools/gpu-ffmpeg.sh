#!/usr/bin/env bash
# Builds FFmpeg's shared libraries, small, for the GPU machine: the same upstream release as this machine's
# libavcodec-dev (Debian's source tarball, its SHA-256 checked against the Debian source package's .dsc), so the
# programs built here against Debian's headers load them through LD_LIBRARY_PATH (same sonames, same symbol versions),
# with only what the demo clips and common camera files need: the H.264, HEVC, MPEG-4, VP9 and MJPEG decoders, the
# MP4/MOV, Matroska/WebM and AVI demuxers, the file protocol, libswscale; no programs, no devices, no filters, no
# external libraries, no assembly. About 5 MB against the 167 MB that Debian's libraries and their dependencies take
# (more than a device call carries), and a minute on two cores. tools/gpu-prepare.sh calls it.
#
#   bash tools/gpu-ffmpeg.sh PREFIX      (the libraries in PREFIX/lib; a build there already is kept)
set -euo pipefail
[[ $# == 1 ]] || { echo "usage: tools/gpu-ffmpeg.sh PREFIX" >&2; exit 2; }
prefix="$(mkdir -p "$1" && cd "$1" && pwd)"
full="$(dpkg-query -W -f='${Version}' libavcodec-dev 2>/dev/null || true)"  # 7:5.1.9-0+deb12u1
[[ -n "$full" ]] || { echo "gpu-ffmpeg: libavcodec-dev is not installed (bash tools/install-deps.sh)" >&2; exit 1; }
debian="${full#*:}"      # 5.1.9-0+deb12u1
upstream="${debian%-*}"  # 5.1.9
flags=(--enable-shared --disable-static --disable-programs --disable-doc --disable-autodetect --disable-everything
  --disable-x86asm --disable-avdevice --disable-avfilter --disable-postproc --disable-network
  --enable-decoder=h264,hevc,mpeg4,vp9,mjpeg --enable-parser=h264,hevc,mpeg4video,vp9,mjpeg
  --enable-demuxer=mov,matroska,avi --enable-protocol=file --enable-swscale)
stamp="$prefix/VERSION"  # the version and the flags it was built with
if [[ -f "$stamp" && "$(cat "$stamp")" == "$debian ${flags[*]}" && -f "$prefix/lib/libavcodec.so" ]]; then
  echo "gpu-ffmpeg: FFmpeg $upstream already in $prefix"
  exit 0
fi
work="$prefix/src"
rm -rf "$stamp" "$work" "$prefix/lib" "$prefix/include"  # (no stamp until the build below is whole)
mkdir -p "$work"
pool=http://deb.debian.org/debian/pool/main/f/ffmpeg
security=http://deb.debian.org/debian-security/pool/updates/main/f/ffmpeg
fetch() {  # fetch FILE: from the main archive, else the security archive
  curl -fsS --retry 3 --max-time 600 -o "$work/$1" "$pool/$1" || curl -fsS --retry 3 --max-time 600 -o "$work/$1" "$security/$1"
}
tarball="ffmpeg_$upstream.orig.tar.xz"
fetch "ffmpeg_$debian.dsc" || { echo "gpu-ffmpeg: cannot download ffmpeg_$debian.dsc from deb.debian.org" >&2; exit 1; }
fetch "$tarball" || { echo "gpu-ffmpeg: cannot download $tarball from deb.debian.org" >&2; exit 1; }
want="$(awk -v f="$tarball" '/^Checksums-Sha256:/{s=1; next} /^[^ ]/{s=0} s && $3 == f {print $1}' "$work/ffmpeg_$debian.dsc")"
have="$(sha256sum "$work/$tarball" | cut -d' ' -f1)"
[[ -n "$want" && "$want" == "$have" ]] ||
  { echo "gpu-ffmpeg: $tarball's SHA-256 $have is not the .dsc's '$want'" >&2; exit 1; }
tar -xf "$work/$tarball" -C "$work"
cd "$work/ffmpeg-$upstream"
./configure --prefix="$prefix" "${flags[@]}" >"$work/configure.log" 2>&1 || { tail -20 "$work/configure.log"; echo "gpu-ffmpeg: configure failed" >&2; exit 1; }
make -j "$(nproc)" >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; echo "gpu-ffmpeg: build failed" >&2; exit 1; }
make install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log"; echo "gpu-ffmpeg: install failed" >&2; exit 1; }
cd "$prefix"
rm -rf "$work"
echo "$debian ${flags[*]}" >"$stamp"
echo "gpu-ffmpeg: FFmpeg $upstream (Debian $debian's sources) in $prefix/lib, $(du -sh lib | cut -f1)"
