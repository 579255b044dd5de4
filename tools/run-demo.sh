#!/usr/bin/env bash
# The main command: on a fresh Debian 12 machine, installs what it needs, builds the two demo programs,
# generates the demo clips, runs the demo-only stage 0, trains stage 1 + stage 2, captions the held-out
# clips and prints METEOR / CIDEr-D / BLEU-4 / ROUGE-L / unique ratio next to the most-frequent-caption
# baseline.
#
# usage: tools/run-demo.sh [WORK_DIR=demo_run]
# Environment: DEMO_CLIPS (600), DEMO_SEED (1), DEMO_SHAPE (48: the shape's size in the 96 px clips, half the frame),
#              DEMO_SHAPES (circle,triangle: the shapes the clips draw; circle,square is the harder pair, see
#              docs/trainer.md),
#              EPOCHS1 (10), EPOCHS2 (48), LR1 (5e-3), LR2 (3e-3), FRAMES (4),
#              SAMPLER (uniform | scene_change | motion), STAGE0_EPOCHS (8), IMAGE_SIZE (48), JOBS (2),
#              POOL (2: LLaVA-NeXT-Video's 2x2 pooling of a 48 px frame's 36 patch tokens to 9; 1: all 36),
#              POSITIONS (sincos_2d | clip_init: the random encoder's position embedding), VISION_HIDDEN (192),
#              VISION_LAYERS (2: the features are the input of the last layer),
#              CHANGE_POOL (2: after the 4 frames, the 9 tokens of the clip's largest frame-to-frame change, the
#              two neighbouring frames' absolute difference through the encoder pooled 2x2; 0: none),
#              LABEL_SMOOTHING (unset: the Cpu preset's 0.1), TRAIN_SEED (0: train_captioner --seed, the data
#              order, LoRA init and dropout), PATIENCE (48: every stage-2 epoch runs, the best by CIDEr-D is kept),
#              BUILD_DIR (build/ci)
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi

root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-demo_run}
clips=${DEMO_CLIPS:-600}
seed=${DEMO_SEED:-1}
shape=${DEMO_SHAPE:-48}
shapes=${DEMO_SHAPES:-circle,triangle}
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
# The clips are made again when data/ was made with other settings (count, seed, shape size or shapes).
data_args="$clips $seed 96 $shape $shapes"
if [[ ! -f data/manifest.jsonl || "$(cat data/run-demo-data.args 2>/dev/null)" != "$data_args" ]]; then
  stamp "generating $clips demo clips"
  rm -rf data
  "$root/tools/make_demo_data.sh" data "$clips" "$seed" "$jobs" 96 "$shape" "$shapes" >/dev/null
  echo "$data_args" > data/run-demo-data.args
  fresh_data=1
fi

# Stage 0 is skipped when model/ already holds its output for the same settings (an interrupted or repeated
# run); with other settings it is redone and the earlier training results move aside (see below).
stage0_args=(--stage0-epochs "${STAGE0_EPOCHS:-8}" --pool "${POOL:-2}" --image-size "${IMAGE_SIZE:-48}"
  --positions "${POSITIONS:-sincos_2d}" --vision-hidden "${VISION_HIDDEN:-192}"
  --vision-layers "${VISION_LAYERS:-2}" --change-pool "${CHANGE_POOL:-2}")
fresh_model=${fresh_data:-0}
if [[ -f model/vidlora_demo.json && "$(cat model/run-demo-stage0.args 2>/dev/null)" == "${stage0_args[*]}" ]]; then
  stamp "stage 0: model/ is already built with these settings (${stage0_args[*]}); delete model/ to rebuild it"
else
  stamp "stage 0 (demo only): SentencePiece tokenizer, caption-text pretraining, random CLIP-architecture ViT"
  # train_captioner --stage0 refuses to write over a model directory: it writes model.partial/ (run-demo's own;
  # an interrupted stage 0 leaves only that), which replaces model/ when done; model/ is replaced only when it is a
  # demo model, never anything else.
  if [[ -e model && -n "$(ls -A model 2>/dev/null)" && ! -f model/vidlora_demo.json ]]; then
    echo "run-demo: $work/model exists and is not a demo model (no vidlora_demo.json); move it or give another" \
      "work directory" >&2
    exit 1
  fi
  rm -rf model.partial
  "$bin/train_captioner" --stage0 --data data --model model.partial "${stage0_args[@]}"
  echo "${stage0_args[*]}" > model.partial/run-demo-stage0.args
  rm -rf model
  mv model.partial model
  fresh_model=1
fi

# An interrupted run (out/checkpoints/last.safetensors) resumes; a finished one resumes too, which only
# rewrites its outputs. Results made with another stage-0 model move aside to out.previous-<time>/.
run_args=(--data data --model model --out out --sampler "${SAMPLER:-uniform}" --frames "${FRAMES:-4}"
  --epochs1 "${EPOCHS1:-10}" --lr1 "${LR1:-5e-3}" --epochs2 "${EPOCHS2:-48}" --lr2 "${LR2:-3e-3}" --metric cider_d
  ${LABEL_SMOOTHING:+--label-smoothing "$LABEL_SMOOTHING"} --seed "${TRAIN_SEED:-0}" --patience "${PATIENCE:-48}")
if [[ $fresh_model == 0 && -f out/checkpoints/last.safetensors && "$(cat out/run-demo.args 2>/dev/null)" == "${run_args[*]}" ]]; then
  stamp "stage 1 + stage 2: resuming the run in $work/out (delete out/ to start over)"
  run_args+=(--resume)
else
  stamp "stage 1 (projector) + stage 2 (LoRA + projector)"
  mkdir -p out && echo "${run_args[*]}" > out/run-demo.args.new
  run_args+=(--move-aside)
fi
# On a terminal the progress is one updating line; in a log, one line every 25 steps.
rc=0
if [[ -t 2 ]]; then
  "$bin/train_captioner" "${run_args[@]}" || rc=$?
else
  "$bin/train_captioner" "${run_args[@]}" --log-lines 2> >(awk '!/^stage [12]\/2 \| epoch/ || ++n % 25 == 1 { print; fflush() }' >&2) || rc=$?
fi
[[ -f out/run-demo.args.new ]] && mv out/run-demo.args.new out/run-demo.args
if [[ $rc == 130 || $rc == 143 ]]; then
  echo "run-demo: interrupted; run the same command again to resume from the checkpoint" >&2
  exit "$rc"
elif [[ $rc != 0 ]]; then
  echo "run-demo: training failed (exit $rc)" >&2
  exit "$rc"
fi

stamp "captioning three held-out clips with the base model + adapter (caption program)"
mapfile -t held < <(grep -o '"video":"[^"]*"' out/val_captions.jsonl | head -3 | sed 's/"video":"\(.*\)"/\1/')
"$bin/caption" --model model --trained out --sampler "${SAMPLER:-uniform}" --frames "${FRAMES:-4}" "${held[@]:0:3}"

stamp "done: outputs in $work/out (adapter/, projector.safetensors, val_captions.jsonl, train_log.jsonl, curves.svg)"
