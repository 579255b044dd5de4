#!/usr/bin/env bash
# Generates the demo captioning dataset with nothing but bash and the `ffmpeg` command, in the AI-Hub
# layout vidlora::train::read_aihub reads:
#   OUT/videos/clip_NNNNN.mp4   H.264, SIZExSIZE, 10 fps, 2-4 s: a coloured background, a white or
#                               coloured circle/square (or triangle) moving in one direction (or standing still),
#                               some with a scene cut to another background, some with a short shake
#   OUT/labels/clip_NNNNN.json  {"clip_id", "video": {...}, "category", "caption": {"korean", "english"},
#                                "metadata": {...}}, the Korean caption from a template grammar
#   OUT/manifest.jsonl          the same clips as {"video": "videos/…", "caption": "…"} lines
# Deterministic: the same N and seed give the same captions and byte-identical videos on the same
# ffmpeg build (x264 single-threaded, bitexact muxing, no metadata). Clips are encoded in parallel.
#
# usage: tools/make_demo_data.sh OUT [N=300] [SEED=1] [JOBS=nproc] [SIZE=96] [SHAPE=SIZE/4] [SHAPES=circle,square]
# SHAPE: the circle's diameter, the square's side and the triangle's base and height in pixels
# SHAPES: the shapes the clips draw from, two or three of circle, square, triangle (an isosceles triangle, apex up)
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,/^# usage/p' "$0" | sed 's/^# \{0,1\}//'
  exit $(( $# < 1 ))
fi
out=$1
count=${2:-300}
seed=${3:-1}
jobs=${4:-$(nproc 2>/dev/null || echo 2)}
size=${5:-96}
shape_px=${6:-$(( size / 4 ))}
shapes_arg=${7:-circle,square}
fps=10

command -v ffmpeg >/dev/null || { echo "make_demo_data.sh: the ffmpeg command is required (apt-get install ffmpeg)" >&2; exit 1; }
[[ "$(ffmpeg -hide_banner -encoders 2>/dev/null)" == *libx264* ]] ||
  { echo "make_demo_data.sh: this ffmpeg has no libx264 encoder (Debian's ffmpeg package has it)" >&2; exit 1; }
[[ "$count" =~ ^[0-9]+$ && "$count" -ge 1 ]] || { echo "make_demo_data.sh: N must be a positive integer, got '$count'" >&2; exit 1; }
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "make_demo_data.sh: SEED must be a non-negative integer, got '$seed'" >&2; exit 1; }
[[ "$size" =~ ^[0-9]+$ && "$size" -ge 32 && $((size % 2)) -eq 0 ]] || { echo "make_demo_data.sh: SIZE must be an even integer >= 32" >&2; exit 1; }
[[ "$shape_px" =~ ^[0-9]+$ && "$shape_px" -ge 4 && "$shape_px" -le $(( size * 2 / 3 )) ]] ||
  { echo "make_demo_data.sh: SHAPE must be an integer from 4 to 2/3 of SIZE ($(( size * 2 / 3 ))), got '$shape_px'" >&2; exit 1; }
IFS=, read -r -a shape_names <<< "$shapes_arg"
(( ${#shape_names[@]} >= 2 && ${#shape_names[@]} <= 3 )) ||
  { echo "make_demo_data.sh: SHAPES must name two or three shapes, got '$shapes_arg'" >&2; exit 1; }
for s in "${shape_names[@]}"; do
  [[ $s == circle || $s == square || $s == triangle ]] ||
    { echo "make_demo_data.sh: SHAPES: unknown shape '$s' (circle, square, triangle)" >&2; exit 1; }
  [[ $(printf '%s\n' "${shape_names[@]}" | grep -cx "$s") == 1 ]] ||
    { echo "make_demo_data.sh: SHAPES names '$s' twice" >&2; exit 1; }
done

mkdir -p "$out/videos" "$out/labels"

# ---- vocabulary: Korean adjective, English word, RGB ----
color_ko=(빨간 파란 초록 노란 보라 검은 흰 주황)
color_en=(red blue green yellow purple black white orange)
article_en=(a a a a a a a an)  # "a red", "an orange"
color_rgb=(E02020 2040E0 20A040 F0D020 8030C0 101010 F0F0F0 F08020)
declare -A shape_ko_of=([circle]=원이 [square]=사각형이 [triangle]=삼각형이)
motion_ko=("왼쪽에서 오른쪽으로 움직인다." "오른쪽에서 왼쪽으로 움직인다." "위에서 아래로 움직인다." "아래에서 위로 움직인다." "제자리에 멈춰 있다.")
motion_en=("moves from left to right" "moves from right to left" "moves from top to bottom" "moves from bottom to top" "stays in place")
motion_id=(left_to_right right_to_left top_to_bottom bottom_to_top still)

# ---- deterministic random numbers: a 64-bit LCG (Knuth's MMIX constants) seeded per clip ----
rng=0
seed_rng() {  # seed_rng SEED INDEX
  rng=$(( ($1 * 6364136223846793005 + $2 * 1442695040888963407 + 0x9E3779B97F4A7C15) ))
  next; next; next
}
next() { rng=$(( rng * 6364136223846793005 + 1442695040888963407 )); }
# pick K: r = a number in [0, K) from the high bits
pick() { next; r=$(( ((rng >> 33) & 0x7FFFFFFF) % $1 )); }

margin=$(( size / 24 ))
travel=$(( size - shape_px - 2 * margin ))
jobfile=$(mktemp)
manifest_tmp="$out/.manifest.jsonl.tmp"  # made by the shell as any file (0644 under umask 022), not mktemp's 0600
: > "$manifest_tmp"
trap 'rm -f "$jobfile" "$manifest_tmp"' EXIT

for (( i = 0; i < count; ++i )); do
  printf -v id 'clip_%05d' "$i"
  seed_rng "$seed" "$i"
  pick 8; bg=$r
  pick 7; fg=$(( (bg + 1 + r) % 8 ))
  pick ${#shape_names[@]}; shape=${shape_names[r]}
  pick 5; motion=$r
  pick 3; dur=$(( 2 + r ))
  pick 20; event_roll=$r          # 0-5: scene cut, 6-9: shake, else nothing
  pick $(( size - shape_px - 2 * margin + 1 )); pos=$(( margin + r ))   # the fixed coordinate

  case $motion in
    0) x="$margin+$travel*t/$dur"; y=$pos ;;
    1) x="$margin+$travel-$travel*t/$dur"; y=$pos ;;
    2) x=$pos; y="$margin+$travel*t/$dur" ;;
    3) x=$pos; y="$margin+$travel-$travel*t/$dur" ;;
    4) x=$pos; y=$(( (size - shape_px) / 2 )) ;;
  esac

  caption_ko="${color_ko[bg]} 배경에서 ${color_ko[fg]} ${shape_ko_of[$shape]} ${motion_ko[motion]}"
  caption_en="${article_en[fg]^} ${color_en[fg]} $shape ${motion_en[motion]} on ${article_en[bg]} ${color_en[bg]} background."
  category=moving_shape
  event_json='"event": "none"'
  base="color=c=0x${color_rgb[bg]}:s=${size}x${size}:r=$fps:d=$dur[base]"
  if (( event_roll < 6 )); then
    # scene cut at 40-80% of the clip (the last ones leave a short second scene of a few frames)
    pick 5; cut_tenths=$(( dur * (4 + r) ))          # tenths of a second: dur * 0.4..0.8
    # a third colour; never black <-> white, a cut that hue/saturation histograms (SceneChange) cannot see
    pick 6; bg2=$(( (bg + 1 + r) % 8 ))
    while (( bg2 == fg || bg2 == bg || (bg + bg2 == 11 && (bg == 5 || bg == 6)) )); do bg2=$(( (bg2 + 1) % 8 )); done
    cut="$((cut_tenths / 10)).$((cut_tenths % 10))"
    second=$(( dur * 10 - cut_tenths ))
    base="color=c=0x${color_rgb[bg]}:s=${size}x${size}:r=$fps:d=$dur[bg1];color=c=0x${color_rgb[bg2]}:s=${size}x${size}:r=$fps:d=$dur[bg2];[bg1][bg2]overlay=enable='gte(t,$cut)'[base]"
    caption_ko+=" 장면이 바뀌어 ${color_ko[bg2]} 배경이 나타난다."
    caption_en+=" The scene changes to a ${color_en[bg2]} background."
    category=scene_change
    event_json="\"event\": \"scene_change\", \"scene_change_s\": $cut, \"second_background\": \"${color_en[bg2]}\", \"second_scene_s\": $((second / 10)).$((second % 10))"
  elif (( event_roll < 10 )); then
    # a 0.6 s shake of the shape, starting in the first half
    pick $(( dur * 5 - 6 + 1 )); start_tenths=$(( 2 + r ))
    start="$((start_tenths / 10)).$((start_tenths % 10))"
    amp=$(( shape_px / 4 ))
    x="$x+$amp*sin(2*PI*6*(t-$start))*between(t,$start,$start+0.6)"
    caption_ko+=" 잠시 빠르게 흔들린다."
    caption_en+=" It briefly shakes fast."
    category=motion_burst
    event_json="\"event\": \"shake\", \"shake_start_s\": $start, \"shake_duration_s\": 0.6"
  fi

  rgb=${color_rgb[fg]}
  if [[ $shape == circle ]]; then
    half="$(( (shape_px - 1) / 2 )).$(( (shape_px - 1) % 2 * 5 ))"
    fgsrc="color=c=0x$rgb:s=${shape_px}x${shape_px}:r=$fps:d=$dur,format=rgba,geq=r=$((16#${rgb:0:2})):g=$((16#${rgb:2:2})):b=$((16#${rgb:4:2})):a='255*lte(hypot(X-$half,Y-$half),$shape_px/2)'[fg]"
  elif [[ $shape == triangle ]]; then
    # pixel (X, Y) is inside when its centre is: |X + 0.5 - SHAPE/2| <= (Y + 0.5) / 2
    fgsrc="color=c=0x$rgb:s=${shape_px}x${shape_px}:r=$fps:d=$dur,format=rgba,geq=r=$((16#${rgb:0:2})):g=$((16#${rgb:2:2})):b=$((16#${rgb:4:2})):a='255*lte(abs(2*X+1-$shape_px),Y+0.5)'[fg]"
  else
    fgsrc="color=c=0x$rgb:s=${shape_px}x${shape_px}:r=$fps:d=$dur[fg]"
  fi
  graph="$base;$fgsrc;[base][fg]overlay=x='$x':y='$y':eval=frame:shortest=1,format=yuv420p[v]"
  # one line per clip for xargs: the output name and the filter graph, NUL-separated
  printf '%s\0%s\0' "$out/videos/$id.mp4" "$graph" >> "$jobfile"

  cat > "$out/labels/$id.json" <<EOF
{
  "clip_id": "$id",
  "video": {"file_name": "$id.mp4", "width": $size, "height": $size, "fps": $fps, "duration_s": $dur},
  "category": "$category",
  "caption": {"korean": "$caption_ko", "english": "$caption_en"},
  "metadata": {"generator": "tools/make_demo_data.sh", "seed": $seed, "index": $i, "background": "${color_en[bg]}", "shape": "$shape", "shape_color": "${color_en[fg]}", "motion": "${motion_id[motion]}", $event_json}
}
EOF
  printf '{"video": "videos/%s.mp4", "caption": "%s"}\n' "$id" "$caption_ko" >> "$manifest_tmp"
done
mv "$manifest_tmp" "$out/manifest.jsonl"
trap 'rm -f "$jobfile"' EXIT

# encode OUT GRAPH: x264 single-threaded and bitexact so the bytes do not depend on the machine load, and with its
# assembly off (asm=0) so they do not depend on the CPU: x264 picks its SIMD functions by the host's instruction
# set, and with its AVX2 or AVX-512 functions it encodes other bytes than with its C or SSE2 code (measured: three
# sets, three results), so the same command gave other clips, and another trained demo, on a host with AVX-512
# than on one without (docs/trainer.md, "Demo results"). The C code costs no measurable time on these 96 px clips.
encode() {
  ffmpeg -nostdin -hide_banner -loglevel error -y -filter_complex "$2" -map '[v]' \
    -c:v libx264 -preset veryfast -crf 23 -threads 1 -filter_threads 1 -x264-params asm=0 \
    -fflags +bitexact -flags:v +bitexact -map_metadata -1 "$1.tmp.mp4" && mv "$1.tmp.mp4" "$1"
}
export -f encode
xargs -0 -n 2 -P "$jobs" bash -c 'encode "$0" "$1" || { echo "make_demo_data.sh: encoding $0 failed" >&2; exit 255; }' < "$jobfile" ||
  { echo "make_demo_data.sh: some clips could not be encoded (see above)" >&2; exit 1; }
echo "make_demo_data.sh: $count clips (seed $seed, ${size}x${size}, $fps fps) in $out"
