#!/usr/bin/env bash
# train_captioner and caption on a Hugging Face LLaVA-NeXT-Video save_pretrained directory
# (tests/fixtures/model/llava_next_video_hf, written with its processor by
# tools/reference/llava_processor_cases.py) and two generated clips: training runs and its loss falls, the
# adapter is a PEFT adapter for that model (language-model-only regex targets, LLaVA key names and shapes)
# that caption loads, caption writes one line per clip with a progress line, and directories that are not a
# supported model are errors naming what is missing.
#   hf_model.sh BIN_DIR SOURCE_DIR WORK_DIR
set -uo pipefail
bin=$1 root=$2 work=$3
. "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$work"
"$root/tools/make_demo_data.sh" data 4 3 2 48 >/dev/null || { echo "FAILED: demo data"; exit 1; }
hf=$root/tests/fixtures/model/llava_next_video_hf

run 0 train "$bin/train_captioner" --model "$hf" --data data --out out --epochs1 3 --epochs2 3 --lr1 3e-3 --lr2 3e-3 \
  --frames 2 --batch 2 --val-fraction 0.5 --log-lines --max-new-tokens 8
check "training names the model and its prompt format" grep -q "LLaVA-NeXT-Video.*4 visual tokens per frame; prompt format llava_next_video" train.out
check "the adapter is written" test -f out/adapter/adapter_model.safetensors
check "the projector is written" test -f out/projector.safetensors
# The training loss falls: the mean of the last 3 step losses is below that of the first 3.
check "the training loss falls" python3 - <<'EOF'
import json
losses = [r["loss"] for r in map(json.loads, open("out/train_log.jsonl")) if r.get("type") == "step"]
print("step losses:", ["%.4f" % x for x in losses])
assert len(losses) >= 6 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
EOF
# (PEFT 0.21 loads it onto the transformers 5.24 model with LoRA on the 14 decoder layers only, checked by hand.)
check "the adapter is a PEFT adapter for the LLaVA model" python3 - "$hf" <<'EOF'
import json, struct, sys
cfg = json.load(open("out/adapter/adapter_config.json"))
print("target_modules:", cfg["target_modules"], "base:", cfg["base_model_name_or_path"])
assert isinstance(cfg["target_modules"], str) and "language_model" in cfg["target_modules"], cfg["target_modules"]
assert cfg["base_model_name_or_path"].rstrip("/").endswith("llava_next_video_hf")
raw = open("out/adapter/adapter_model.safetensors", "rb").read()
header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
header.pop("__metadata__", None)
r = cfg["r"]
a = header["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"]["shape"]
b = header["base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"]["shape"]
assert a == [r, 16] and b == [16, r], (a, b)
# The trained projector rides along as PEFT saves it (modules_to_save), so PeftModel.from_pretrained is the whole model.
assert cfg["modules_to_save"] == ["multi_modal_projector"], cfg["modules_to_save"]
projector = {k for k in header if k.startswith("base_model.model.model.multi_modal_projector.")}
assert projector == {f"base_model.model.model.multi_modal_projector.linear_{i}.{t}" for i in (1, 2)
                     for t in ("weight", "bias")}, projector
assert all(k.startswith("base_model.model.model.language_model.layers.") for k in set(header) - projector), list(header)[:3]
EOF

# A resume asks the question the run was trained with: another --prompt is refused, naming both.
run 1 reprompt "$bin/train_captioner" --model "$hf" --data data --out out --epochs1 3 --epochs2 3 --lr1 3e-3 --lr2 3e-3 \
  --frames 2 --batch 2 --val-fraction 0.5 --log-lines --max-new-tokens 8 --resume --prompt "What moves?"
check "a resume with another --prompt is refused, naming it" grep -q "prompt is '.*' there but 'What moves?' now" reprompt.err

clips=(data/videos/*.mp4)
run 0 caption "$bin/caption" --model "$hf" --trained out --jsonl captions.jsonl --frames 2 --max-new-tokens 6 "${clips[@]}"
check "caption prints one line per clip" test "$(wc -l <caption.out)" -eq "${#clips[@]}"
check "caption writes one JSONL line per clip" test "$(wc -l <captions.jsonl)" -eq "${#clips[@]}"
check "caption shows progress on stderr" grep -q "\[${#clips[@]}/${#clips[@]}\] .* s/clip" caption.err
run 0 adapter "$bin/caption" --model "$hf" --adapter out/adapter --frames 2 --max-new-tokens 6 "${clips[0]}"
check "caption --adapter loads the PEFT adapter" grep -q "^${clips[0]}	" adapter.out
check "caption --adapter takes the trained projector from the adapter" grep -q "with its projector" adapter.err
check "the adapter alone captions as --trained does (its projector is the trained one)" \
  test "$(head -n1 adapter.out)" = "$(grep "^${clips[0]}	" caption.out)"
# The same adapter with its projector's linear_2 negated (the video tokens negated): captioned with that projector,
# not the checkpoint's; and beside --trained, which projector to caption with would be a guess.
cp -r out/adapter other_adapter
python3 - <<'EOF'
import json, struct
path = "other_adapter/adapter_model.safetensors"
raw = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
a, b = json.loads(raw[8:8 + n])["base_model.model.model.multi_modal_projector.linear_2.weight"]["data_offsets"]
for i in range(8 + n + a + 3, 8 + n + b, 4):
    raw[i] ^= 0x80  # every float's sign bit
open(path, "wb").write(raw)
EOF
run 0 negated "$bin/caption" --model "$hf" --adapter other_adapter --frames 2 --max-new-tokens 6 "${clips[0]}"
check "an adapter's projector is the one captions come from (negated: other captions)" \
  test "$(head -n1 negated.out)" != "$(head -n1 adapter.out)"
run 1 two_projectors "$bin/caption" --model "$hf" --trained out --adapter other_adapter --frames 2 --max-new-tokens 6 \
  "${clips[0]}"
check "an --adapter projector unlike --trained's is refused, naming both" \
  grep -q "other_adapter carries a projector (modules_to_save) that differs from out/projector.safetensors" two_projectors.err
run 0 short_clip "$bin/caption" --model "$hf" --frames 500 --max-new-tokens 6 "${clips[0]}"
check "a clip with fewer frames than --frames is said to use all it has" \
  grep -q "note: ${clips[0]} has [0-9]* frames, fewer than the 500 asked: all [0-9]* are used" short_clip.err
# An adapter of r 16 on this 16-wide model (k_proj / v_proj are 8 out): PEFT takes r > min(in, out), vidlora's LoRA
# layers do not; refused before any clip is encoded, naming the module and the adapter. So is r 12, held at 16.
python3 - <<'EOF'
import json, os, struct
raw = open("out/adapter/adapter_model.safetensors", "rb").read()
header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
header.pop("__metadata__", None)
for r in (16, 12):
    os.makedirs(f"rank{r}", exist_ok=True)
    out, blob = {}, b""
    for k, v in sorted(header.items()):
        if ".lora_" not in k:
            continue
        shape = [r, v["shape"][1]] if ".lora_A." in k else [v["shape"][0], r]
        n = 4 * shape[0] * shape[1]
        out[k] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + n]}
        blob += bytes(n)
    h = json.dumps(out).encode()
    h += b" " * (-len(h) % 8)
    open(f"rank{r}/adapter_model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + blob)
    cfg = json.load(open("out/adapter/adapter_config.json"))
    cfg.update(r=r, lora_alpha=2 * r, modules_to_save=None)
    json.dump(cfg, open(f"rank{r}/adapter_config.json", "w"))
EOF
run 1 rank16 "$bin/caption" --model "$hf" --adapter rank16 --frames 2 --max-new-tokens 6 "${clips[0]}"
check "an adapter whose r is above a layer's min(in, out) is refused naming the module" \
  grep -q "PEFT adapter rank16: r = 16 is above min(in 16, out 8) of model.language_model.layers.0.self_attn.k_proj" rank16.err
run 1 rank12 "$bin/caption" --model "$hf" --adapter rank12 --frames 2 --max-new-tokens 6 "${clips[0]}"
check "an adapter whose held rank is above a layer's min(in, out) is refused saying so" \
  grep -q "PEFT adapter rank12: r = 12 is held at rank 16 (the next compiled rank), which is above min(in 16, out 8) of model.language_model.layers.0.self_attn.k_proj" \
  rank12.err
# An adapter of a rank vidlora does not compile (PEFT allows any r) is held zero-padded at the next compiled rank,
# its alpha rescaled: r 6 cut from the trained r 8 captions as that r 8 adapter with its last two ranks zero and
# lora_alpha 16 · 8 / 6 (the model tests compare such adapters with PEFT's logits: tests/model/test_peft_decoder.cpp).
python3 - <<'EOF'
import json, os, struct
src = "out/adapter"
raw = open(f"{src}/adapter_model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = header.pop("__metadata__", None)
data = raw[8 + n:]
cfg = json.load(open(f"{src}/adapter_config.json"))
r = cfg["r"]
assert r == 8, r

def write(out, keep, alpha):
    os.makedirs(out, exist_ok=True)
    tensors, blob = {}, b""
    for k, v in sorted(header.items()):
        assert v["dtype"] == "F32", v
        t = data[v["data_offsets"][0]:v["data_offsets"][1]]
        shape = list(v["shape"])
        if ".lora_A." in k:  # [r, in]: the first `keep` rows, then zeros up to the size written
            rows, cols = shape
            size = keep if out == "rank6" else r
            t = t[:keep * cols * 4] + bytes((size - keep) * cols * 4)
            shape = [size, cols]
        elif ".lora_B." in k:  # [out, r]: the first `keep` columns of each row, then zeros
            rows, cols = shape
            size = keep if out == "rank6" else r
            t = b"".join(t[i * cols * 4:i * cols * 4 + keep * 4] + bytes((size - keep) * 4) for i in range(rows))
            shape = [rows, size]
        tensors[k] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(t)]}
        blob += t
    if meta is not None:
        tensors["__metadata__"] = meta
    h = json.dumps(tensors).encode()
    h += b" " * (-len(h) % 8)
    open(f"{out}/adapter_model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + blob)
    c = dict(cfg, r=keep if out == "rank6" else r, lora_alpha=alpha)
    json.dump(c, open(f"{out}/adapter_config.json", "w"))

write("rank6", 6, cfg["lora_alpha"])
write("rank8_zeroed", 6, cfg["lora_alpha"] * 8 / 6)
EOF
run 0 rank6 "$bin/caption" --model "$hf" --adapter rank6 --cache cache_hf --frames 2 --max-new-tokens 12 "${clips[@]}"
check "an r 6 adapter is held at rank 8, said on stderr" \
  grep -q "caption: adapter rank6 (r 6, alpha 16, with its projector; held at rank 8, lora_A and lora_B padded with zeros)" \
  rank6.err
run 0 rank8_zeroed "$bin/caption" --model "$hf" --adapter rank8_zeroed --cache cache_hf --frames 2 --max-new-tokens 12 \
  "${clips[@]}"
check "... and captions as the r 8 adapter with those ranks zero and alpha 16 · 8 / 6" cmp rank6.out rank8_zeroed.out
run 0 rank8 "$bin/caption" --model "$hf" --adapter out/adapter --cache cache_hf --frames 2 --max-new-tokens 12 \
  "${clips[@]}"
check "(the two ranks cut off change the captions)" bash -c '! cmp -s rank6.out rank8.out'
run 0 base "$bin/caption" --model "$hf" --frames 2 --max-new-tokens 6 "${clips[0]}"
check "caption captions with the bare checkpoint too" grep -q "^${clips[0]}	" base.out
# --base nf4 holds the decoder's linear weights as bitsandbytes' load_in_4bit does: its captions are those of the fp32
# decoder over the weights transformers + bitsandbytes hold after a 4-bit load of this model
# (tests/fixtures/model/llava_next_video_hf_nf4, tools/reference/nf4_decoder_fixture.py); over the original weights
# fp32 gives other captions (quantization changes this model's).
mkdir -p hf_nf4 && cp "$hf"/* hf_nf4/ && cp "$root/tests/fixtures/model/llava_next_video_hf_nf4/model.safetensors" hf_nf4/
run 0 nf4 "$bin/caption" --model "$hf" --base nf4 --cache cache_hf --frames 2 --max-new-tokens 12 "${clips[@]}"
check "--base nf4 says so, with the weights' size" grep -q "the decoder's linear weights in nf4: .* of its " nf4.err
run 0 bnb "$bin/caption" --model hf_nf4 --cache cache_bnb --frames 2 --max-new-tokens 12 "${clips[@]}"
check "--base nf4 captions as fp32 over the weights bitsandbytes dequantizes" cmp nf4.out bnb.out
run 0 fp32 "$bin/caption" --model "$hf" --base fp32 --cache cache_hf --frames 2 --max-new-tokens 12 "${clips[@]}"
check "the default base is fp32" grep -q "the decoder's linear weights in fp32: " bnb.err
check "fp32 over the original weights captions otherwise" bash -c '! cmp -s nf4.out fp32.out'
# A run trained over an NF4 base (a GPU preset's: its checkpoint's "base" is 4bit) is captioned over one by default.
cp -r out out4bit
python3 - <<'EOF'
import json, struct
path = "out4bit/checkpoints/last.safetensors"
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
state = json.loads(header["__metadata__"]["trainer_state"])
assert state["config"]["base"] == "dense", state["config"]["base"]
state["config"]["base"] = "4bit"
header["__metadata__"]["trainer_state"] = json.dumps(state)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
EOF
run 0 trained4 "$bin/caption" --model "$hf" --trained out4bit --cache cache_hf --max-new-tokens 12 "${clips[@]}"
check "caption says it takes an NF4 base as the run was trained" \
  grep -q "the decoder's weights in NF4 as out4bit was trained (--base fp32 to change)" trained4.err
run 0 trained4_nf4 "$bin/caption" --model "$hf" --trained out --base nf4 --cache cache_hf --max-new-tokens 12 \
  "${clips[@]}"
check "... and captions as --base nf4 does" cmp trained4.out trained4_nf4.out
run 0 trained4_fp32 "$bin/caption" --model "$hf" --trained out4bit --base fp32 --cache cache_hf --max-new-tokens 12 \
  "${clips[@]}"
check "--base fp32 overrides it" \
  bash -c '! cmp -s trained4.out trained4_fp32.out && ! grep -q "as out4bit was trained (--base" trained4_fp32.err'
run 0 adapter4 "$bin/caption" --model "$hf" --adapter out4bit/adapter --cache cache_hf --max-new-tokens 12 "${clips[@]}"
check "--adapter OUT/adapter is captioned as the run OUT was trained (its base and frames)" bash -c \
  'grep -q "the decoder.s weights in NF4 as out4bit was trained" adapter4.err && cmp -s adapter4.out trained4.out'
run 1 bad_video "$bin/caption" --model "$hf" --frames 2 --max-new-tokens 6 "${clips[0]}" missing.mp4
check "a bad video is reported on stderr only" bash -c 'grep -q missing.mp4 bad_video.err && ! grep -q missing.mp4 bad_video.out'

# The feature cache follows the checkpoint: the same directory hits it, and a changed config.json (the vision
# feature layer, same file size) or other weights make new features instead of reusing stale ones.
cp -rp "$hf" hfcopy
count() { find cache -name '*.safetensors' | wc -l; }
run 0 cache1 "$bin/caption" --model hfcopy --cache cache --frames 2 --max-new-tokens 6 "${clips[0]}"
first=$(count)
run 0 cache2 "$bin/caption" --model hfcopy --cache cache --frames 2 --max-new-tokens 6 "${clips[0]}"
check "the same checkpoint reuses its cached features" test "$(count)" -eq "$first" -a "$first" -gt 0
sed -i 's/"vision_feature_layer": -2/"vision_feature_layer": -1/' hfcopy/config.json
check "the config edit keeps the file size (a size-only key would miss it)" \
  test "$(stat -c %s hfcopy/config.json)" -eq "$(stat -c %s "$hf/config.json")"
run 0 cache3 "$bin/caption" --model hfcopy --cache cache --frames 2 --max-new-tokens 6 "${clips[0]}"
check "a changed config.json gives new features" test "$(count)" -eq $((2 * first))
touch hfcopy/model.safetensors
run 0 cache4 "$bin/caption" --model hfcopy --cache cache --frames 2 --max-new-tokens 6 "${clips[0]}"
check "a touched but unchanged weight file reuses them" test "$(count)" -eq $((2 * first))
python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(-1, 2); b = f.read(1); f.seek(-1, 2); f.write(bytes([b[0] ^ 1]))' \
  hfcopy/model.safetensors
run 0 cache5 "$bin/caption" --model hfcopy --cache cache --frames 2 --max-new-tokens 6 "${clips[0]}"
check "other weights (one bit of the last tensor) give new features" test "$(count)" -eq $((3 * first))
# A run captions with the model it was trained on: its checkpoint names it, and other weights of the same shapes would
# caption garbage without an error; --allow-other-model takes them on purpose.
run 1 other_model "$bin/caption" --model hfcopy --trained out --cache cache --frames 2 --max-new-tokens 6 "${clips[0]}"
check "caption refuses --trained with another base model, naming both" \
  grep -q "out was trained on another base model than --model hfcopy" other_model.err
run 0 other_model_allowed "$bin/caption" --model hfcopy --trained out --allow-other-model --cache cache --frames 2 \
  --max-new-tokens 6 "${clips[0]}"
run 1 other_model_adapter "$bin/caption" --model hfcopy --adapter out/adapter/ --cache cache --frames 2 \
  --max-new-tokens 6 "${clips[0]}"
check "... and so does --adapter OUT/adapter of that run (it carries the trained projector: the whole model)" \
  grep -q "out was trained on another base model than --model hfcopy" other_model_adapter.err

# generation_config.json sets caption's generation as transformers' generate() takes it: sampling, reproducible for a
# seed, each video its own draws; the options override it; what vidlora does not do is refused naming it; editing it
# keeps the cached features (the fingerprint leaves it out).
cp -rp "$hf" hfgen
printf '{"do_sample": true, "temperature": 1.5, "top_k": 0, "eos_token_id": [2], "pad_token_id": 0}\n' \
  >hfgen/generation_config.json
gencount() { find gencache -name '*.safetensors' | wc -l; }
run 0 sample1 "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 12 "${clips[@]}"
check "caption says what generation_config.json sets" grep -qF \
  "generation_config.json: do_sample true, temperature 1.5, top_k 0, eos_token_id 2 (not used here: pad_token_id)" \
  sample1.err
check "... and how it generates" \
  grep -qF "generation: sampling (temperature 1.5, top_k 0, top_p 1, min_p 0, seed 0), up to 12 tokens, ending at the end of the turn or at ids 2" sample1.err
run 0 sample2 "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 12 "${clips[@]}"
check "sampled captions are the same for the same seed" cmp sample1.out sample2.out
run 0 sample3 "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 12 --seed 7 "${clips[@]}"
check "another --seed samples other captions" bash -c '! cmp -s sample1.out sample3.out'
run 0 sample_one "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 12 "${clips[1]}"
check "a video's sampled caption does not depend on the others captioned with it" \
  bash -c "grep -F '${clips[1]}	' sample1.out | cmp - sample_one.out"
run 0 greedy "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 6 --greedy "${clips[0]}"
check "--greedy overrides generation_config.json's do_sample (the bare checkpoint's caption)" cmp greedy.out base.out
run 0 ignore "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 6 --ignore-generation-config \
  "${clips[0]}"
check "--ignore-generation-config leaves the file out" cmp ignore.out base.out
check "... and does not read it" bash -c '! grep -q "generation_config.json:" ignore.err'
before=$(gencount)
printf '{"do_sample": true, "typical_p": 0.9}\n' >hfgen/generation_config.json
run 2 typical "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 6 "${clips[0]}"
check "a generation setting vidlora does not do is refused naming it" grep -qF \
  "typical_p = 0.9 is not supported by vidlora's generation when sampling (--ignore-generation-config leaves" typical.err
run 0 typical_greedy "$bin/caption" --model hfgen --cache gencache --frames 2 --max-new-tokens 6 --greedy "${clips[0]}"
check "... and accepted where it would not act (typical_p without sampling)" cmp typical_greedy.out base.out
check "editing generation_config.json keeps the cached features" test "$(gencount)" -eq "$before" -a "$before" -gt 0
run 2 temperature_greedy "$bin/caption" --model "$hf" --frames 2 --temperature 0.7 "${clips[0]}"
check "--temperature without sampling is a usage error" grep -qF -- "--temperature applies when sampling" \
  temperature_greedy.err
run 2 beam_sampling "$bin/caption" --model "$hf" --frames 2 --do-sample --num-beams 2 "${clips[0]}"
check "sampling with beams is refused" grep -qF "beam sampling" beam_sampling.err
run 2 length_penalty "$bin/caption" --model "$hf" --frames 2 --length-penalty 0.5 "${clips[0]}"
check "--length-penalty without beams is a usage error" grep -qF -- "--length-penalty applies to beam search" \
  length_penalty.err

# Directories that are not a supported model: the error names what is missing.
mkdir -p empty partial other
run 1 empty "$bin/caption" --model empty x.mp4
check "a directory without config.json is named as such" grep -q "empty is not a supported model directory: it has no config.json" empty.err
run 1 missing_dir "$bin/train_captioner" --model nowhere --data data --out out2
check "a missing model directory is an error" grep -q "model directory nowhere does not exist" missing_dir.err
cp "$hf/config.json" "$hf"/model*.safetensors* partial/
run 1 partial "$bin/caption" --model partial x.mp4
check "a LLaVA directory without tokenizer and processor names both" \
  grep -q "lacks the tokenizer (tokenizer.json or tokenizer.model), the processor (processor_config.json" partial.err
sed 's/"llava_next_video"/"qwen2_vl"/' "$hf/config.json" >other/config.json
run 1 other "$bin/train_captioner" --model other --data data --out out3
check "an unsupported model_type is named" grep -q 'model_type "qwen2_vl" is not supported' other.err

echo "$failures failed"
exit $((failures > 0))
