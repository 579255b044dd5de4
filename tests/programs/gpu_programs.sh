#!/usr/bin/env bash
# A GPU preset's build of train_captioner (its GPU path) as a user runs it, on 12 generated clips and on the Hugging
# Face fixture: the frames encoded by the device tower, both stages and the evaluation on the device in the preset's
# precision (T4: fp16 with loss scaling over NF4 weights; H100: bf16 operands over NF4 weights, on a demo decoder of
# head dim 64 so that the attention runs on the register tiles), the step log's memory, an interrupted run resumed to
# the same bits as an uninterrupted one, fp32 against the 16-bit run, the memory cap's error, caption (the CPU
# program) reading the GPU run's adapter and projector, and caption's build for the preset (CAPTION_GPU_BIN: its GPU
# path) giving the GPU run's evaluation captions.
# Two places run it:
#   - CTest, on the CUDA emulation (tests/cuda_emu: train_captioner_emu_<preset>, caption_emu_<preset>), where the
#     emulation's launch report (VIDLORA_EMU_REPORT) also shows which kernels ran;
#   - tools/gpu-check.sh on a real GPU (VIDLORA_REAL_GPU=1: the programs tools/gpu-prepare.sh built for it), where
#     there is no launch report and no `ffmpeg` command: DEMO_DATA names the clips made here beforehand with
#     --make-data, the same clips the emulated run makes for itself.
#   gpu_programs.sh PRESET TRAIN_BIN CAPTION_BIN SOURCE_DIR WORK_DIR CAPTION_GPU_BIN
#   gpu_programs.sh --make-data SOURCE_DIR OUT_DIR          (OUT_DIR/data and OUT_DIR/hfdata, what DEMO_DATA names)
set -uo pipefail
make_data() {  # make_data SOURCE_DIR NAME: the clips a run trains on (NAME data, or hfdata for the Hugging Face run)
  case $2 in
    data) "$1/tools/make_demo_data.sh" data 12 1 2 64 >/dev/null ;;
    hfdata) "$1/tools/make_demo_data.sh" hfdata 4 3 2 48 >/dev/null ;;
  esac
}
if [[ ${1:-} == --make-data ]]; then
  mkdir -p "$3" && cd "$3" && make_data "$2" data && make_data "$2" hfdata
  exit
fi
preset=$1 emu=$2 caption=$3 root=$4 work=$5 caption_gpu=$6
real_gpu=${VIDLORA_REAL_GPU:-0}
if ((real_gpu)); then where="GPU"; else where="(emulated) GPU"; fi
demo_data() {  # demo_data NAME: made here, or copied from DEMO_DATA on a real GPU
  if ((real_gpu)); then
    cp -r "${DEMO_DATA:?DEMO_DATA names the clips gpu_programs.sh --make-data made}/$1" "$1"
  else
    make_data "$root" "$1"
  fi || { echo "FAILED: demo data $1"; exit 1; }
}
launches() {  # launches NAME CONDITION...: a check of the emulation's launch report, skipped on a real GPU
  if ((real_gpu)); then echo "skipped (a real GPU has no launch report): $1"; else check "$@"; fi
}
case $preset in
  T4) precision=fp16 loss_scale=65536.0 cap_gib=14 hidden=128 r=8 frames=4 checkpointing=1 ;;
  H100) precision=bf16 loss_scale=None cap_gib=78 hidden=256 r=64 frames=16 checkpointing=0 ;;
  *) echo "FAILED: no expectations for preset $preset"; exit 1 ;;
esac
export precision loss_scale cap_gib
. "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$work"
demo_data data
run 0 stage0 "$emu" --stage0 --data data --model model --stage0-epochs 1 --image-size 32 --hidden "$hidden"
train=("$emu" --data data --model model --epochs1 1 --epochs2 1 --val-fraction 0.25 --log-lines --batch 1 --accum 1
  --max-new-tokens 8)

run 0 full env VIDLORA_EMU_REPORT="$PWD/full.kernels" "${train[@]}" --out full
check "the run trains on the $where" grep -q "^backend: Cuda" full.out
check "the $preset preset runs in $precision" grep -q "^precision: $precision " full.out
# The attention's path (the emulation's launch report): the register tiles (mma.sync) on sm_90 with bf16, the
# shared-memory tiles (FMA loops over fp16) on sm_75.
if [[ $preset == H100 ]]; then
  launches "the attention runs on the register tiles (mma.sync)" bash -c \
    'grep -q "flash_mma_forward_kernel" full.kernels && grep -q "flash_mma_backward_dkv_kernel" full.kernels &&
     ! grep -q "^mma_m16n8k16 0$" full.kernels'
else
  launches "the attention runs on the shared-memory tiles, no mma.sync" bash -c \
    'grep -q "flash_attention_kernel" full.kernels && grep -q "^mma_m16n8k16 0$" full.kernels &&
     ! grep -q flash_mma full.kernels'
fi
launches "the NF4 weights are dequantized on the device" grep -q "dequantize_4bit_kernel" full.kernels
check "the adapter, projector, captions, log and curves are written" \
  test -f full/adapter/adapter_model.safetensors -a -f full/projector.safetensors -a -s full/val_captions.jsonl \
  -a -f full/curves.svg
check "every step logs the Cuda backend, the loss scale and the device memory under the $preset cap" python3 - <<'PY'
import json, math, os
loss_scale = eval(os.environ["loss_scale"])
steps = [r for r in map(json.loads, open("full/train_log.jsonl")) if r.get("type") == "step"]
assert len(steps) == 14, len(steps)
for r in steps:
    m = r["memory"]
    assert r["backend"] == "Cuda" and r.get("loss_scale") == loss_scale, r
    assert math.isfinite(r["loss"]) and r["loss"] > 0, r
    assert m["cap_bytes"] == int(os.environ["cap_gib"]) << 30 and 0 < m["allocated_bytes"] <= m["peak_allocated_bytes"] <= m["cap_bytes"], m
PY

# Stopped after 3 optimizer steps (the Ctrl-C path), then resumed: every logged number, the adapter, the projector
# and the captions are the uninterrupted run's, bit for bit.
run 130 interrupted "${train[@]}" --out resumed --max-steps 3
check "the interrupted run wrote a checkpoint" test -f resumed/checkpoints/last.safetensors
run 0 resume "${train[@]}" --out resumed --resume
check "the resumed run continues from the checkpoint" grep -q "resumed from" resume.err
check "the resumed run logs the uninterrupted run's numbers, bit for bit" python3 - <<'PY'
import json
def numbers(path):
    out = []
    for r in map(json.loads, open(path)):
        if r.get("type") in ("step", "eval"):
            out.append({k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s", "memory", "eta_s")})
    return out
full, resumed = numbers("full/train_log.jsonl"), numbers("resumed/train_log.jsonl")
assert len(full) == len(resumed) and len(full) >= 16, (len(full), len(resumed))
for a, b in zip(full, resumed):
    assert a == b, (a, b)
PY
for f in adapter/adapter_model.safetensors projector.safetensors val_captions.jsonl; do
  check "the resumed run's $f is the uninterrupted run's" cmp -s "full/$f" "resumed/$f"
done

# The saved layer inputs in pinned host memory (--offload-checkpoints; the H100 preset keeps its layer inputs without
# checkpointing: nothing to offload): the same numbers, bit for bit. Clipping and AdamW on the host
# (--host-optimizer): the same AdamW arithmetic, but the gradient norm summed in another order (a tree per chunk on
# the device, eight interleaved lanes per 64 Ki chunk on the host), so the logged norms may differ in their last bits
# and a clip coefficient by an ulp.
if ((checkpointing)); then
  run 0 offload "${train[@]}" --out offload --offload-checkpoints
  check "--offload-checkpoints gives the default run's numbers and adapter, bit for bit, with less device memory" \
    python3 - <<'PY'
import json
def records(path):
    return [r for r in map(json.loads, open(path)) if r.get("type") in ("step", "eval")]
full, offload = records("full/train_log.jsonl"), records("offload/train_log.jsonl")
assert len(full) == len(offload) >= 16
for a, b in zip(full, offload):
    for k in ("loss", "grad_norm", "lr", "eval_loss"):
        assert a.get(k) == b.get(k), (k, a, b)
peak = lambda rs: max(r["memory"]["peak_allocated_bytes"] for r in rs if r["type"] == "step")
print("device peak: default", peak(full), "bytes, offloaded", peak(offload))
assert peak(offload) < peak(full)
PY
  check "--offload-checkpoints writes the default run's adapter" \
    cmp -s full/adapter/adapter_model.safetensors offload/adapter/adapter_model.safetensors
fi
run 0 host_optimizer env VIDLORA_EMU_REPORT="$PWD/host_optimizer.kernels" "${train[@]}" --out host_optimizer \
  --host-optimizer
launches "--host-optimizer steps AdamW on the host (no device AdamW launch), the device optimizer by default" \
  bash -c '! grep -q adamw_kernel host_optimizer.kernels && grep -q adamw_kernel full.kernels'
check "--host-optimizer gives the default run's losses to 1e-6 and gradient norms to 1e-12" python3 - <<'PY'
import json
def records(path):
    return [r for r in map(json.loads, open(path)) if r.get("type") in ("step", "eval")]
full, host = records("full/train_log.jsonl"), records("host_optimizer/train_log.jsonl")
assert len(full) == len(host) >= 16
worst = {"loss": 0.0, "grad_norm": 0.0, "eval_loss": 0.0}
for a, c in zip(full, host):
    assert a.get("lr") == c.get("lr"), (a, c)
    for k in worst:
        if k in a:
            worst[k] = max(worst[k], abs(a[k] - c[k]) / abs(a[k]))
print("--host-optimizer against the device optimizer, largest relative differences:", worst)
assert worst["loss"] < 1e-6 and worst["eval_loss"] < 1e-6 and worst["grad_norm"] < 1e-12, worst
PY

# fp32 on the same device path: the 16-bit run's losses within 1e-2 (relative) of it.
run 0 fp32 "${train[@]}" --out fp32 --precision fp32
check "$precision gives the fp32 run's step losses to 1e-2" python3 - <<'PY'
import json, os
def losses(path):
    return [r["loss"] for r in map(json.loads, open(path)) if r.get("type") == "step"]
a, b = losses("full/train_log.jsonl"), losses("fp32/train_log.jsonl")
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"largest relative difference of the {os.environ['precision']} and fp32 step losses: {worst:.2e}")
assert len(a) == len(b) == 14 and worst < 1e-2, (a, b)
PY

# A cap below what the step needs: an error naming the tensor and the sizes, and nothing written as a result.
run 1 capped "${train[@]}" --out capped --max-memory-gb 0.0011
check "a step above the memory cap is an error naming the tensor and the sizes" \
  grep -qE "allocating '[^']+' of [0-9.]+ KiB \\([0-9]+ bytes\\) does not fit under the cap: in use .* cap 1.13 MiB" capped.err
check "the capped run wrote no adapter" test ! -e capped/adapter

video=$(ls data/videos/*.mp4 | head -2 | tail -1)
run 0 caption "$caption" --model model --trained full --jsonl captions.jsonl "$video"
check "caption (CPU) reads the GPU run's adapter (r $r) and projector" \
  bash -c "grep -q '\"caption\"' captions.jsonl && grep -q 'caption: adapter full/adapter (r $r, alpha $((2 * r)))' caption.err"
check "caption samples as the GPU run was trained" \
  grep -q "caption: sampler uniform, $frames frames per clip as full was trained" caption.err
check "caption (CPU) holds the decoder's weights in NF4 as the GPU run trained over them" bash -c \
  'grep -q "caption: the decoder.s weights in NF4 as full was trained" caption.err &&
   grep -q "caption: the decoder.s linear weights in nf4: " caption.err'

# caption's own GPU build: every clip encoded up front by the device tower (into a cache of its own, so that the tower
# runs), then the projector and the generation on the device, in the preset's precision over its NF4
# weights: the captions of the GPU run's best evaluation (val_captions.jsonl), which ran the same code on the same bits.
# (This demo model's captions are still empty after its two epochs, so here that shows the path runs end to end and
# stops where the evaluation stopped; the Hugging Face fixture below, whose random weights give non-empty captions,
# compares text, with a control that must differ.)
# (Both score "video" keys the same way: the paths as the run and caption were given them.)
same_captions() {  # same_captions VAL_JSONL CAPTION_JSONL: every captioned video's text is the evaluation's
  python3 - "$1" "$2" <<'PY'
import json, sys
want = {r["video"]: r["caption"] for r in map(json.loads, open(sys.argv[1]))}
got = {r["video"]: r["caption"] for r in map(json.loads, open(sys.argv[2]))}
print("evaluation:", want)
print("caption:   ", got)
assert got and set(got) == set(want), (sorted(got), sorted(want))
assert all(got[v] == want[v] for v in got), [(v, got[v], want[v]) for v in got if got[v] != want[v]]
PY
}
differ() { ! "$@" >/dev/null 2>&1; }  # differ COMMAND...: COMMAND fails
mapfile -t val_videos < <(python3 -c 'import json; [print(json.loads(l)["video"]) for l in open("full/val_captions.jsonl")]')
run 0 caption_gpu env VIDLORA_EMU_REPORT="$PWD/caption_gpu.kernels" "$caption_gpu" --model model --trained full \
  --max-new-tokens 8 --cache caption_gpu_cache --jsonl caption_gpu.jsonl "${val_videos[@]}"
check "caption's $preset build captions on the $where in $precision" \
  grep -q "^caption: on the GPU in $precision " caption_gpu.err
launches "caption's $preset build encodes with the device tower and generates with the device decoder" bash -c \
  'grep -q "clip_embed_kernel" caption_gpu.kernels && grep -q "rms_norm_kernel" caption_gpu.kernels &&
   grep -q "projector_gelu_kernel" caption_gpu.kernels'
launches "caption's $preset build runs the NF4 weights (every GPU preset loads them so), dequantized on the device" \
  grep -q "dequantize_4bit_kernel" caption_gpu.kernels
check "caption's $preset build gives the GPU run's evaluation captions" same_captions full/val_captions.jsonl caption_gpu.jsonl
run 1 caption_gpu_missing "$caption_gpu" --model model --trained full --max-new-tokens 8 no_such_clip.mp4 "${val_videos[0]}"
check "a missing video is named, and the others are captioned" bash -c \
  'grep -q "caption: no_such_clip.mp4: " caption_gpu_missing.err && grep -q "$0" caption_gpu_missing.out' "${val_videos[0]}"
run 2 caption_gpu_cpu_precision "$caption" --model model --trained full --precision bf16 "${val_videos[0]}"
check "the CPU build refuses a 16-bit --precision" grep -q "computes in fp32" caption_gpu_cpu_precision.err
run 2 caption_gpu_base "$caption_gpu" --model model --trained full --base fp32 "${val_videos[0]}"
check "caption's $preset build refuses --base fp32 (the preset loads the weights in NF4)" \
  grep -q "option --base: the $preset preset's build holds the decoder's weights in nf4 on the GPU" caption_gpu_base.err

# The Hugging Face LLaVA-NeXT-Video fixture, loaded to the device as the preset says: the loss falls. (Its layers
# are 16 wide: narrower than the H100 preset's r 64, which LoraLinear refuses.)
if ((r <= 16)); then
demo_data hfdata
run 0 hf "$emu" --model "$root/tests/fixtures/model/llava_next_video_hf" --data hfdata --out hf --epochs1 3 \
  --epochs2 3 --lr1 3e-3 --lr2 3e-3 --frames 2 --batch 2 --accum 1 --val-fraction 0.5 --log-lines --max-new-tokens 8
check "the Hugging Face model trains on the $where and its loss falls" python3 - <<'PY'
import json
losses = [r["loss"] for r in map(json.loads, open("hf/train_log.jsonl")) if r.get("type") == "step"]
print("step losses:", ["%.4f" % x for x in losses])
assert len(losses) >= 6 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
PY
check "the Hugging Face run writes a PEFT adapter" test -f hf/adapter/adapter_config.json
# Its captions are not empty (random weights): caption's GPU build gives them, token for token.
mapfile -t hf_val < <(python3 -c 'import json; [print(json.loads(l)["video"]) for l in open("hf/val_captions.jsonl")]')
run 0 hf_caption_gpu "$caption_gpu" --model "$root/tests/fixtures/model/llava_next_video_hf" --trained hf \
  --max-new-tokens 8 --jsonl hf_caption_gpu.jsonl "${hf_val[@]}"
check "caption's $preset build gives the Hugging Face run's evaluation captions" \
  same_captions hf/val_captions.jsonl hf_caption_gpu.jsonl
run 0 hf_caption_gpu_1frame "$caption_gpu" --model "$root/tests/fixtures/model/llava_next_video_hf" --trained hf \
  --max-new-tokens 8 --frames 1 --jsonl hf_caption_gpu_1frame.jsonl "${hf_val[@]}"
check "the control: from 1 frame instead of the run's 2, caption's GPU build gives other captions" \
  differ same_captions hf/val_captions.jsonl hf_caption_gpu_1frame.jsonl
# A copy of the fixture with yarn RoPE (factor 4: other frequencies and cos/sin x 1.139): the device decoder takes it,
# as the CPU one does (the GPU builds refused RoPE scaling before), and rotates otherwise: other captions from the same
# adapter and projector. (The device path's equality with the CPU decoder under each RoPE type is tests/cuda's.)
rm -rf hf_yarn && cp -r "$root/tests/fixtures/model/llava_next_video_hf" hf_yarn
python3 - <<'PY'
import json
c = json.load(open("hf_yarn/config.json"))
c["text_config"]["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
json.dump(c, open("hf_yarn/config.json", "w"), indent=2)
PY
run 0 hf_caption_gpu_yarn "$caption_gpu" --model hf_yarn --trained hf --allow-other-model --max-new-tokens 8 \
  --jsonl hf_caption_gpu_yarn.jsonl "${hf_val[@]}"
check "caption's $preset build runs a yarn-RoPE model on the $where" \
  bash -c 'test -s hf_caption_gpu_yarn.jsonl && ! grep -q "not supported" hf_caption_gpu_yarn.err'
check "the yarn model's captions differ from the unscaled model's" \
  differ same_captions hf/val_captions.jsonl hf_caption_gpu_yarn.jsonl
fi

echo "$failures failed"
exit $((failures > 0))
