#!/usr/bin/env bash
# train_captioner and caption as a user meets them, on 12 generated clips: Ctrl-C's path (--max-steps stops a
# run the same way) exits 130 and writes no outputs, a fresh run into a used --out is refused, --resume
# finishes, --move-aside keeps the old results, long captions are truncated with a report, and caption keeps
# its errors on stderr. Stage 0's --change-pool appends the clip's change tokens to its frames' tokens.
#   end_to_end.sh BIN_DIR SOURCE_DIR WORK_DIR
set -uo pipefail
bin=$1 root=$2 work=$3
. "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$work"
"$root/tools/make_demo_data.sh" data 12 1 2 64 >/dev/null || { echo "FAILED: demo data"; exit 1; }
check "make_demo_data.sh writes manifest.jsonl with the mode of any new file (umask), not mktemp's 0600" \
  test "$(stat -c %a data/manifest.jsonl)" == "$(printf '%o' $((0666 & ~0$(umask))))"
run 2 badpool "$bin/train_captioner" --stage0 --data data --model badmodel --image-size 32 --change-pool 3
check "a --change-pool that does not divide the patch grid is refused before stage 0 runs" \
  bash -c 'grep -q -- "--change-pool 3 does not divide the 4x4 patch grid" badpool.err && test ! -e badmodel'
run 0 stage0 "$bin/train_captioner" --stage0 --data data --model model --stage0-epochs 1 --image-size 32 --change-pool 2
check "stage 0 writes the change tokens' pooling into vidlora_demo.json" grep -q '"change_pool_stride": 2' model/vidlora_demo.json
sum_model() { cat model/* | cksum; }
model_sum=$(sum_model)
run 2 stage0_again "$bin/train_captioner" --stage0 --data data --model model --stage0-epochs 1
check "stage 0 into an existing model directory is refused, naming it" \
  grep -q -- "--stage0: the model directory model already exists and is not empty.*remove model first" stage0_again.err
check "the refused stage 0 left the model as it was" test "$(sum_model)" == "$model_sum"
run 2 stage0_options "$bin/train_captioner" --stage0 --data data --model model2 --out out --frames 4 --max-steps 1
check "options that do not apply to --stage0 are refused, naming them" \
  bash -c 'grep -q -- "--frames, --max-steps, --out do not apply to --stage0" stage0_options.err && test ! -e model2'
check "a data directory with labels/ and manifest.jsonl is read as an AI-Hub tree, saying so" \
  grep -q "data: reading the AI-Hub tree in data (labels/, videos/), not its manifest.jsonl (--data data/manifest.jsonl reads that)" stage0.out
mkdir -p data_manifest && cp -r data/videos data/manifest.jsonl data_manifest/
run 0 stage0_manifest "$bin/train_captioner" --stage0 --data data_manifest --model model_manifest --stage0-epochs 1 \
  --image-size 32
check "a data directory with manifest.jsonl and no labels/ reads the manifest" \
  grep -q "stage 0: [0-9]* train + [0-9]* val clips; read 12 labels, none skipped" stage0_manifest.out
# The same clips as an AI-Hub download is unpacked: labels and videos in Training / Validation folders at any depth.
i=0
for label in data/labels/*.json; do
  side=1.Training && [[ $i -ge 9 ]] && side=2.Validation
  prefix=T && [[ $i -ge 9 ]] && prefix=V
  stem=$(basename "$label" .json)
  mkdir -p "download/01.데이터/$side/라벨링데이터/${prefix}L_도형" "download/01.데이터/$side/원천데이터/${prefix}S_도형"
  cp "$label" "download/01.데이터/$side/라벨링데이터/${prefix}L_도형/"
  cp data/videos/"$stem".* "download/01.데이터/$side/원천데이터/${prefix}S_도형/"
  i=$((i + 1))
done
run 2 caption_field_bad "$bin/train_captioner" --stage0 --data download --model model_download --caption-field '/a/~2'
check "a --caption-field that is not a JSON pointer is a usage error" \
  grep -q "option --caption-field: dataset: caption_field '/a/~2' is not a JSON pointer" caption_field_bad.err
run 0 stage0_download "$bin/train_captioner" --stage0 --data download --model model_download --stage0-epochs 1 \
  --image-size 32 --caption-field /caption/korean
check "an unpacked AI-Hub download is read from its folders, split by Training / Validation, saying so" \
  bash -c 'grep -q "data: read as an AI-Hub download: labels and videos found in the folders below download, split by its Training and Validation folders" stage0_download.out &&
           grep -q "stage 0: 9 train + 3 val clips; read 12 labels, none skipped" stage0_download.out'
run 0 dry_data "$bin/train_captioner" --dry-run --data download --caption-field /caption/korean --epochs1 1 --epochs2 2
run 0 dry_data_t4 "$bin/train_captioner" --dry-run --preset T4 --data download --caption-field /caption/korean
check "--dry-run of another preset with --data shows its steps on the data" \
  bash -c 'grep -q "^stage1-projector: 1 epoch x 1 optimizer step (9 training clips, 16 per step) = 1 step, warmup 1$" dry_data_t4.out &&
           grep -q "^stage2-projector+lora: 4 epochs x 1 optimizer step (9 training clips, 16 per step) = 4 steps, warmup 1$" dry_data_t4.out'
check "--dry-run with --data says how the data is read, shows clips and each stage's steps, and writes nothing" \
  bash -c 'grep -q "data: read as an AI-Hub download" dry_data.out &&
           grep -q "data: 9 train + 3 val clips; read 12 labels, none skipped" dry_data.out &&
           grep -q "^  train 01.데이터/1.Training/라벨링데이터/TL_도형/clip_00000: .*clip_00000.mp4 — " dry_data.out &&
           grep -Eq ": 2 epochs x [0-9]+ optimizer steps? \(9 training clips, [0-9]+ per step\) = [0-9]+ steps?, warmup [0-9]+" dry_data.out &&
           test ! -e vidlora_out'
train=("$bin/train_captioner" --data data --model model --out out --epochs1 1 --epochs2 1 --val-fraction 0.25 --log-lines)

# Refused before any data is read or anything written: a --resume with no checkpoint (a fresh run into the same --out
# then starts), an --out that is a file, two stages of 0 epochs, and data none of whose labels gives a clip.
run 2 resume_nothing "$bin/train_captioner" --data data --model model --out fresh_out --resume
check "--resume without a checkpoint is refused, and leaves nothing behind" \
  bash -c 'grep -q -- "--resume: no checkpoint at fresh_out/checkpoints/last.safetensors: nothing to resume" resume_nothing.err && test ! -e fresh_out'
touch out_file
run 2 out_is_file "$bin/train_captioner" --data data --model model --out out_file
check "--out naming a file is a usage error" grep -q "option --out: out_file exists and is not a directory" out_is_file.err
run 2 no_epochs "$bin/train_captioner" --data data --model model --out no_epochs_out --epochs1 0 --epochs2 0
check "two stages of 0 epochs are refused" grep -q -- "--epochs1 0 and --epochs2 0: no stage trains" no_epochs.err
mkdir -p data_unusable/labels data_unusable/videos
echo '{"caption": {"korean": "영상이 없는 라벨"}}' >data_unusable/labels/lonely.json
run 1 no_clips "$bin/train_captioner" --data data_unusable --model model --out no_clips_out
check "data without a usable clip is an error naming --data, after the summary of what was skipped" \
  bash -c 'grep -q "labels/lonely.json: missing video" no_clips.out && grep -q -- "--data data_unusable: no clip to train on" no_clips.err'

run 130 interrupted "${train[@]}" --max-steps 2
check "interrupted run says how to resume" bash -c 'grep -A1 "continue with:" interrupted.out | grep -q -- "--max-steps 2 --resume"'
check "interrupted run wrote a checkpoint" test -f out/checkpoints/last.safetensors
check "interrupted run wrote no adapter" test ! -e out/adapter
check "interrupted run printed no results table" bash -c '! grep -q "held-out clips" interrupted.out'
run 1 no_clips_move_aside "$bin/train_captioner" --data data_unusable --model model --out out --move-aside
check "a run refused for its data moves nothing aside" \
  bash -c 'test -f out/checkpoints/last.safetensors && ! ls -d out.previous-* 2>/dev/null'

run 1 other_sampler "${train[@]}" --resume --sampler motion
check "a resume with another --sampler is refused, naming it" \
  grep -q "frame_sampler is 'uniform' there but 'motion' now" other_sampler.err

# The same shapes, other weights (a second stage-0 epoch); the same clips, one caption changed.
run 0 stage0_other "$bin/train_captioner" --stage0 --data data --model model_other --stage0-epochs 2 --image-size 32 \
  --change-pool 2
run 1 other_model "${train[@]}" --resume --model model_other
check "a resume on another base model is refused, naming it and both fingerprints" \
  grep -q "was trained on another base model.*base_model is 'fnv1a64:[0-9a-f]* ([0-9]* files, [0-9]* bytes)' there but 'fnv1a64:" other_model.err
cp -r data data_other && python3 - data_other <<'PY'
import json, pathlib, sys
label = sorted(pathlib.Path(sys.argv[1], "labels").glob("*.json"))[0]
j = json.loads(label.read_text())
j["caption"] = {"korean": "다른 캡션"}
label.write_text(json.dumps(j, ensure_ascii=False))
PY
run 1 other_data "${train[@]}" --resume --data data_other
check "a resume on other data of the same size is refused, naming it and both fingerprints" \
  grep -q "was trained on other data.*data is 'fnv1a64:[0-9a-f]* ([0-9]* train + [0-9]* val clips)' there but 'fnv1a64:" other_data.err

run 2 refused "${train[@]}"
check "a fresh run into a used --out is refused, naming --resume" grep -q "already holds another run's results.*--resume" refused.err

run 0 resumed "${train[@]}" --resume
check "the resumed run continues from the checkpoint" grep -q "resumed from" resumed.err
check "the resumed run writes the adapter" test -f out/adapter/adapter_config.json
check "the resumed run writes the captions" test -s out/val_captions.jsonl
# 32 px frames in 8 px patches, pooled 2x2 (stage 0's default --pool): 4 tokens for each of the preset's 8 frames,
# then the change image's 16 patches pooled 2x2: 4
check "every clip's cached features are 8 x 4 frame tokens + 4 change tokens" python3 -c '
import glob, json, struct, sys
files = glob.glob("out/feature_cache/*.safetensors")
rows = set()
for f in files:
    b = open(f, "rb").read()
    rows.add(tuple(json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["features"]["shape"]))
sys.exit(0 if files and rows == {(36, 64)} else "found " + str(rows))'

run 0 moved "${train[@]}" --move-aside --max-caption-tokens 4
check "--move-aside says where the old results went" grep -q "moved the previous run's results" moved.out
check "the old results are kept aside" bash -c 'ls out.previous-*/train_log.jsonl >/dev/null'
check "long captions are truncated with a report line" grep -q "tokens: truncated to 3 (max_caption_tokens 4)" moved.err

video=$(ls data/videos/*.mp4 | head -1)
run 2 caption_jsonl "$bin/caption" --model model --trained out --jsonl no_such_dir/captions.jsonl "$video"
check "caption refuses a --jsonl it cannot create before captioning, naming it and why" \
  bash -c 'grep -q "option --jsonl: no_such_dir/captions.jsonl cannot be written: .*No such file or directory" caption_jsonl.err && test ! -s caption_jsonl.out'
run 1 caption_other_model "$bin/caption" --model model_other --trained out "$video"
check "caption refuses a run trained on another base model, naming both" \
  grep -q "out was trained on another base model than --model model_other" caption_other_model.err
mkdir -p jsonl_dir
run 2 caption_jsonl_dir "$bin/caption" --model model --trained out --jsonl jsonl_dir "$video"
check "--jsonl naming a directory is refused before any clip is captioned" \
  bash -c 'grep -q "option --jsonl: jsonl_dir is a directory" caption_jsonl_dir.err && test ! -s caption_jsonl_dir.out'
run 1 caption "$bin/caption" --model model --trained out --jsonl captions.jsonl "$video" missing.mp4
check "caption prints the good video's caption on stdout" grep -q "^$video	" caption.out
check "caption keeps errors off stdout" bash -c '! grep -q missing.mp4 caption.out'
check "caption reports the bad video on stderr" grep -q "missing.mp4" caption.err
check "caption writes the JSONL" grep -q '"caption"' captions.jsonl
run 0 caption_short "$bin/caption" --model model --trained out --frames 500 "$video"
check "a clip with fewer frames than --frames is said to use all it has (demo model)" \
  grep -q "note: $video has [0-9]* frames, fewer than the 500 asked: all [0-9]* are used" caption_short.err
# A clip FFmpeg decodes through damage: 8 bytes in the middle of the first P slice of 24 bytes or more past 55% of
# its data scrambled (the MP4's mdat holds only the video's length-prefixed NAL units; tests/video/clips.hpp's
# scrambled_frame_clip does the same by frame).
python3 - "$video" scrambled.mp4 <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
m = b.find(b'mdat')
end, begin = m - 4 + struct.unpack('>I', b[m - 4:m])[0], m + 4
past, at = begin + (end - begin) * 55 // 100, begin
while at + 4 <= end:
    size, nal = struct.unpack('>I', b[at:at + 4])[0], at + 4
    if b[nal] & 0x1f == 1 and size >= 24 and nal + size >= past:  # a non-IDR slice
        for k in range(nal + size // 2, nal + size // 2 + 8):
            b[k] ^= 0xA5
        break
    at = nal + size
else:
    sys.exit('no slice of 24 bytes or more to scramble in ' + sys.argv[1])
open(sys.argv[2], 'wb').write(b)
PY
run 0 caption_scrambled "$bin/caption" --model model --trained out scrambled.mp4
check "a clip FFmpeg decodes through damage is captioned, with a note naming it and where the damage starts" \
  bash -c 'grep -q "^scrambled.mp4	" caption_scrambled.out &&
           grep -q "note: scrambled.mp4: FFmpeg concealed damage in [1-9][0-9]* of [0-9]* decoded frames, the first at [0-9.]* s: its bitstream is corrupt there" caption_scrambled.err'
check "a clean clip gets no such note" bash -c '! grep -q "concealed damage" caption.err caption_short.err'
# Its features now come from the feature cache, which kept the note with them: told again, once (and the short clip's).
run 0 caption_scrambled_cached "$bin/caption" --model model --trained out scrambled.mp4 scrambled.mp4
check "a damaged clip's note comes back with its cached features, once" bash -c \
  'test "$(grep -c "note: scrambled.mp4: FFmpeg concealed damage in [1-9][0-9]* of [0-9]* decoded frames" \
         caption_scrambled_cached.err)" -eq 1 && test "$(grep -c "^scrambled.mp4	" caption_scrambled_cached.out)" -eq 2'
run 0 caption_short_cached "$bin/caption" --model model --trained out --frames 500 "$video"
check "so does a short clip's" \
  grep -q "note: $video has [0-9]* frames, fewer than the 500 asked: all [0-9]* are used" caption_short_cached.err
# A damaged video: FFmpeg's last error is part of the program's error for the clip; FFmpeg's own lines show as
# FFmpeg's default level would (nothing hidden), VIDLORA_FFMPEG_LOG=quiet keeps them off, and a level it does not
# know is an error naming it.
tail -c +2000 "$video" >nohead.mp4
run 1 caption_damaged "$bin/caption" --model model --trained out nohead.mp4
check "a damaged video's error carries FFmpeg's own message, and FFmpeg's lines show by default" \
  bash -c 'grep -q "nohead.mp4: video file nohead.mp4: not a readable video (.*; FFmpeg: .*)" caption_damaged.err &&
           grep -q "^\[mov" caption_damaged.err'
VIDLORA_FFMPEG_LOG=quiet run 1 caption_damaged_quiet "$bin/caption" --model model --trained out nohead.mp4
check "VIDLORA_FFMPEG_LOG=quiet keeps FFmpeg's lines off, its message still in the error" \
  bash -c '! grep -q "^\[mov" caption_damaged_quiet.err && grep -q "; FFmpeg: " caption_damaged_quiet.err'
VIDLORA_FFMPEG_LOG=loud run 1 caption_bad_log "$bin/caption" --model model --trained out "$video"
check "an unknown VIDLORA_FFMPEG_LOG is an error naming it" \
  grep -q "VIDLORA_FFMPEG_LOG=loud: not one of quiet, panic, fatal, error, warning, info, verbose, debug" caption_bad_log.err
# A directory stands for its video files, at any depth, in path order; one without any is a usage error.
mkdir -p folder/inner empty_folder && cp "$video" folder/b.mp4 && cp "$video" folder/inner/a.MP4 && touch folder/notes.txt
run 0 caption_dir "$bin/caption" --model model --trained out folder
check "caption of a directory captions its videos in path order, and nothing else" \
  test "$(cut -f1 caption_dir.out | tr '\n' ' ')" == "folder/b.mp4 folder/inner/a.MP4 "
empty_captions_said() {  # the empty captions on stdout are the ones stderr counts (none: no such line)
  local n
  n=$(grep -c "$(printf '\t')\$" caption_dir.out)
  if [[ $n -gt 0 ]]; then grep -q "caption: $n of 2 captions are empty" caption_dir.err
  else ! grep -q "captions are empty" caption_dir.err; fi
}
check "empty captions are counted on stderr, with what to do" empty_captions_said
run 2 caption_empty_dir "$bin/caption" --model model --trained out empty_folder
check "caption of a directory without videos is a usage error naming it" \
  grep -q "VIDEO empty_folder: the directory holds no video file" caption_empty_dir.err

echo "$failures failed"
exit $((failures > 0))
