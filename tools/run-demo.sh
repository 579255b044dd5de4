#!/usr/bin/env bash
# The main command: on a fresh Debian 12 machine, installs what it needs, builds the two demo programs,
# generates the demo clips, runs the demo-only stage 0, trains stage 1 + stage 2, captions the held-out
# clips and prints METEOR / CIDEr-D / BLEU-4 / ROUGE-L / unique ratio next to the most-frequent-caption
# baseline.
#
# usage: tools/run-demo.sh [WORK_DIR=demo_run]
# Environment: DEMO_CLIPS (300), DEMO_SEED (1), EPOCHS1 (2), EPOCHS2 (12), LR1 (5e-3), LR2 (3e-3),
#              SAMPLER (uniform | scene_change | motion), STAGE0_EPOCHS (8), IMAGE_SIZE (48), JOBS (2),
#              POOL (1: all 36 patch tokens of a 48 px frame; 2: LLaVA-NeXT-Video 2x2 pooling to 9),
#              BUILD_DIR (build/ci)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-demo_run}
clips=${DEMO_CLIPS:-300}
seed=${DEMO_SEED:-1}
jobs=${JOBS:-2}
start=$(date +%s)
stamp() { echo "[run-demo $(( $(date +%s) - start ))s] $*"; }

stamp "installing dependencies"
bash "$root/tools/install-deps.sh"

build=${BUILD_DIR:-$root/build/ci}
stamp "building train_captioner and caption (cmake --preset ci -B $build)"
(cd "$root" && cmake --preset ci -B "$build" >/dev/null && cmake --build "$build" --target train_captioner caption -j "$jobs")
bin="$build/examples"

mkdir -p "$work"
cd "$work"
if [[ ! -f data/manifest.jsonl || "$(wc -l < data/manifest.jsonl)" -ne "$clips" ]]; then
  stamp "generating $clips demo clips"
  rm -rf data
  "$root/tools/make_demo_data.sh" data "$clips" "$seed" "$jobs" >/dev/null
fi

stamp "stage 0 (demo only): SentencePiece tokenizer, caption-text pretraining, random CLIP-architecture ViT"
"$bin/train_captioner" --stage0 --data data --model model --stage0-epochs "${STAGE0_EPOCHS:-8}" --pool "${POOL:-1}" \
  --image-size "${IMAGE_SIZE:-48}"

stamp "stage 1 (projector) + stage 2 (LoRA + projector)"
rm -rf out
"$bin/train_captioner" --data data --model model --out out --sampler "${SAMPLER:-uniform}" \
  --epochs1 "${EPOCHS1:-2}" --lr1 "${LR1:-5e-3}" --epochs2 "${EPOCHS2:-12}" --lr2 "${LR2:-3e-3}" \
  --metric cider_d --log-lines | grep -v '^stage [12]/2 | epoch' || { echo "training failed" >&2; exit 1; }

stamp "captioning three held-out clips with the base model + adapter (caption program)"
mapfile -t held < <(grep -o '"video":"[^"]*"' out/val_captions.jsonl | head -3 | sed 's/"video":"\(.*\)"/\1/')
"$bin/caption" --model model --trained out "${held[@]:0:3}"

stamp "done: outputs in $work/out (adapter/, projector.safetensors, val_captions.jsonl, train_log.jsonl, curves.svg)"
