#!/usr/bin/env bash
# The demo's clips are the same bytes on every x86-64 host: tools/make_demo_data.sh with tools/run-demo.sh's
# settings (96 px, shapes 48 px, circle and triangle, data seed 1) writes clips 0-7 and their labels with the MD5
# recorded below, which is what every number in docs/trainer.md's "Demo results" was trained on. x264 picks its
# SIMD functions by the host's CPU and encodes other bytes with its AVX2 or AVX-512 ones, so without the script's
# asm=0 this test passes only on hosts like the one that recorded it. The bytes also depend on FFmpeg's and
# x264's versions: with others than Debian 12's (FFmpeg 5.1, x264 core 164 r3095) the test is skipped (77).
#   demo_data_bytes.sh SOURCE_DIR WORK_DIR
set -uo pipefail
root=$1 work=$2
recorded=11fefcf79d03c1e18d2c8fe45eee2862  # clips 0-7: videos/*.mp4 then labels/*.json, concatenated
. "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$work"
"$root/tools/make_demo_data.sh" data 8 1 2 96 48 circle,triangle >/dev/null || { echo "FAILED: demo data"; exit 1; }
ffmpeg_version=$(ffmpeg -version | sed -n '1s/^ffmpeg version \([0-9]*\.[0-9]*\).*/\1/p')
x264_version=$(grep -a -o 'x264 - core [0-9]* r[0-9]*' data/videos/clip_00000.mp4 | head -n 1)
if [[ $ffmpeg_version != 5.1 || $x264_version != "x264 - core 164 r3095" ]]; then
  echo "skipped: the recorded bytes are FFmpeg 5.1's and x264 core 164 r3095's; this host has FFmpeg" \
       "'$ffmpeg_version' and '$x264_version'"
  exit 77
fi
names=()
for i in 0 1 2 3 4 5 6 7; do names+=("data/videos/clip_0000$i.mp4"); done
for i in 0 1 2 3 4 5 6 7; do names+=("data/labels/clip_0000$i.json"); done
got=$(cat "${names[@]}" | md5sum | cut -d' ' -f1)
check "the demo's clips 0-7 and their labels are the recorded bytes (got $got)" test "$got" = "$recorded" ||
  md5sum "${names[@]}"
exit $((failures > 0))
