#pragma once
// Shared by train_captioner.cpp and caption.cpp: the model directory, the text codec, the
// feature function (sampler + frozen CLIP-architecture encoder + on-disk cache), argument parsing.
//
// Model directory (written by `train_captioner --stage0`, or any LLaVA-style pieces):
//   tokenizer.model        SentencePiece model with a "<video>" user-defined symbol
//   config.json            decoder config (model_type llama / qwen2 / qwen3)
//   model.safetensors      decoder weights (model.* keys)
//   vision_config.json     CLIP vision config
//   vision.safetensors     CLIP vision weights (vision_model.* keys)
//   vidlora_demo.json      {"prompt": text after the video, "pool_stride": n, "encoder_id": name,
//                           "change_pool_stride": n (0 or absent: none; else the clip's largest change is
//                           appended as one more image's tokens, pooled by n: train::video_change_features)}

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/trainer.hpp>
#include <vidlora/video/policy_table.hpp>
#include <vidlora/eval/caption_tokenizer.hpp>

#include "clip_features.hpp"
#include "command_line.hpp"

namespace demo {

namespace fs = std::filesystem;

// examples/support/demo_features.cpp: FFmpeg's own log lines on stderr from the level VIDLORA_FFMPEG_LOG names
// (quiet, panic, fatal, error, warning, info — FFmpeg's default and the programs' —, verbose, debug); its last error
// for a video is part of the program's error for that video either way (video::capture_ffmpeg_log).
void capture_ffmpeg_log();

// examples/support/demo_features.cpp: sampler + CLIP preprocessing + encoder (+ pooling), then, when
// change_pool_stride > 0, the tokens of the clip's largest change pooled by it; with the sampling's note
// (support/sampling_notes.hpp: a short clip, damage FFmpeg decoded through).
vidlora::train::NotedFeatures clip_features(const std::filesystem::path& video, const std::string& sampler, int frames,
                                            const vidlora::model::FrameEncoder& encoder, int pool_stride,
                                            int change_pool_stride);

// The programs' options are declared in a CommandLine (command_line.hpp); configure() reads them through it.
using Args = CommandLine;

// The generation options' defaults (train_captioner's evaluation, caption): the usage texts state them, the programs
// read them.
inline constexpr int kDefaultNumBeams = 1, kDefaultMaxNewTokens = 64, kDefaultNoRepeatNgramSize = 0;
inline constexpr double kDefaultRepetitionPenalty = 1.0, kDefaultLengthPenalty = 1.0;

// --precision's value, checked against the preset P a program is built for: fp32, tf32 (TF32 GEMMs), bf16 (sm_80+) or
// fp16 on a GPU preset's build; fp32 only on the Cpu preset's, which `runs` (e.g. "trains") on the CPU.
template <class P>
std::string checked_precision(const std::string& precision, std::string_view runs) {
  if (precision != "fp32" && precision != "tf32" && precision != "bf16" && precision != "fp16")
    throw UsageError(fmt::format("option --precision: '{}' is not one of fp32, tf32, bf16, fp16", precision));
  if constexpr (!P::backend_policy::on_device) {
    if (precision != "fp32")
      throw UsageError(fmt::format(
          "option --precision: the {} preset {} on the CPU, which computes in fp32; {} is for the GPU presets' builds "
          "(cmake --preset T4, L4, A100 or H100)",
          P::name, runs, precision));
  } else if ((precision == "bf16" || precision == "tf32") && P::cuda_arch < 80) {
    throw UsageError(fmt::format(
        "option --precision: {} needs a GPU of sm_80 or newer; the {} preset's is sm_{} (fp16 or fp32 there)",
        precision, P::name, P::cuda_arch));
  }
  return precision;
}

// The base model a run trains on, as its checkpoints record it (TrainerConfig::base_model_fingerprint) and as a
// Hugging Face model's feature cache is keyed (HfModel::features): FNV-1a (64
// bits) over the model directory's files that the programs read (*.safetensors, *.json, *.model, *.txt; by name;
// not generation_config.json, which only caption's generation settings come from: editing it keeps the features
// and a run's resume),
// each its name, its size and its bytes: all of them for a file up to 2 MiB (a demo model, configs, tokenizers),
// else the first MiB (a safetensors file's header with its shapes, and the first tensors) and 256 blocks of 4 KiB
// spread evenly over the rest, the last one ending the file. A 7B model's
// 4-5 GB shards cost 2 MiB of reading each, where a hash of every byte would read 14 GB at every start and resume;
// weights of the same shapes trained otherwise differ in every block sampled.
inline std::string model_fingerprint(const fs::path& dir) {
  constexpr std::uintmax_t kWholeFileBytes = std::uintmax_t{1} << 20, kBlockBytes = 4096;
  constexpr int kSampledBlocks = 256;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".safetensors" || ext == ".json" || ext == ".model" || ext == ".txt") &&
        e.path().filename() != "generation_config.json")
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::uint64_t h = 0xcbf29ce484222325ull;
  const auto add = [&h](const char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ull;
  };
  std::uintmax_t total = 0;
  std::vector<char> buffer;
  for (const auto& file : files) {
    const std::string name = file.filename().string();
    const std::uintmax_t size = fs::file_size(file);
    total += size;
    add(name.data(), name.size() + 1);
    add(reinterpret_cast<const char*>(&size), sizeof size);
    std::ifstream in(file, std::ios::binary);
    vidlora::require(in.good(), "model directory {}: cannot read {}", dir.string(), name);
    const auto read = [&](std::uintmax_t offset, std::uintmax_t n) {
      buffer.resize(static_cast<std::size_t>(n));
      in.seekg(static_cast<std::streamoff>(offset));
      in.read(buffer.data(), static_cast<std::streamsize>(n));
      vidlora::require(in.gcount() == static_cast<std::streamsize>(n), "model directory {}: {} ended while read",
                       dir.string(), name);
      add(buffer.data(), buffer.size());
    };
    if (size <= 2 * kWholeFileBytes) {
      read(0, size);
      continue;
    }
    read(0, kWholeFileBytes);
    const std::uintmax_t rest = size - kWholeFileBytes - kBlockBytes;  // the blocks start after the head, up to here
    for (int b = 1; b <= kSampledBlocks; ++b)
      read(kWholeFileBytes + rest * static_cast<std::uintmax_t>(b) / kSampledBlocks, kBlockBytes);
  }
  return fmt::format("fnv1a64:{:016x} ({} files, {} bytes)", h, files.size(), total);
}

// Whether `name` is a frame sampler's (video::with_sampling_policy's table; video::sampling_policy_names lists them).
inline bool is_sampler(std::string_view name) {
  try {
    vidlora::video::with_sampling_policy(name, [](auto) {});
    return true;
  } catch (const vidlora::Error&) {
    return false;
  }
}

inline nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  vidlora::require(in.good(), "cannot open {}", p.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    vidlora::fail("{} does not parse as JSON: {}", p.string(), e.what());
  }
}

inline void write_table(const fs::path& path, const vidlora::model::TensorTable& t) {
  vidlora::io::TensorMap m;
  for (const auto& [name, e] : t.tensors()) m.emplace(name, vidlora::io::TensorData::from_floats(e.data, e.shape));
  vidlora::io::write_safetensors(path, m, {{"format", "pt"}});
}

// What a training run writes into its output directory (the feature cache is shared between runs and
// is not a result).
inline const std::vector<std::string>& run_outputs() {
  static const std::vector<std::string> names{"checkpoints", "train_log.jsonl",       "val_captions.jsonl",
                                              "adapter",     "projector.safetensors", "curves.svg"};
  return names;
}

// Before a fresh (not --resume) run into `out`: a directory holding another run's results is refused, so
// two runs' files never mix, or with move_aside those results move to `<out>.previous-<time>/`.
// Returns a line saying what was done, or "" when the directory held no results.
inline std::string prepare_output_dir(const fs::path& out, bool move_aside) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& n : run_outputs())  // (an empty folder holds no results: a --resume that found no checkpoint)
    if (fs::exists(out / n) && !(fs::is_directory(out / n, ec) && fs::is_empty(out / n, ec))) found.push_back(n);
  if (found.empty()) return {};
  std::string list;
  for (const auto& n : found) list += (list.empty() ? "" : ", ") + n;
  if (!move_aside)
    throw UsageError(
        fmt::format("{} already holds another run's results ({}); continue that run with --resume, write to another "
                    "directory with --out, or pass --move-aside to move them to {}.previous-<time>/",
                    out.string(), list, out.string()));
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  fs::path aside = out.string() + ".previous-" + stamp;
  for (int k = 2; fs::exists(aside); ++k) aside = fmt::format("{}.previous-{}-{}", out.string(), stamp, k);
  fs::create_directories(aside);
  for (const auto& n : found) fs::rename(out / n, aside / n);
  return fmt::format("moved the previous run's results ({}) from {} to {}", list, out.string(), aside.string());
}

struct DemoModel {
  fs::path dir;
  vidlora::model::DecoderConfig decoder_config;
  vidlora::model::ClipVisionConfig vision_config;
  std::optional<vidlora::io::SafetensorsFile> decoder_weights;
  std::optional<vidlora::model::ClipVision> vision;
  std::optional<vidlora::model::SentencePieceTokenizer> tokenizer;
  std::string prompt = " 설명:";
  int pool_stride = 1;
  int change_pool_stride = 0;  // 0: no change tokens
  std::string encoder_id;

  explicit DemoModel(const fs::path& d) : dir(d) {
    vidlora::require(fs::exists(d / "config.json"), "model directory {} has no config.json (run --stage0 first?)",
                     d.string());
    decoder_config = vidlora::model::DecoderConfig::from_file(d / "config.json");
    vision_config = vidlora::model::ClipVisionConfig::from_json(read_json(d / "vision_config.json"));
    decoder_weights.emplace(vidlora::io::SafetensorsFile::open(d / "model.safetensors"));
    vision.emplace(vision_config, vidlora::io::SafetensorsFile::open(d / "vision.safetensors"));
    vidlora::model::SentencePieceOptions so;
    so.add_bos = false;
    tokenizer.emplace(vidlora::model::SentencePieceTokenizer::from_file((d / "tokenizer.model").string(), so));
    if (fs::exists(d / "vidlora_demo.json")) {
      const auto j = read_json(d / "vidlora_demo.json");
      prompt = j.value("prompt", prompt);
      pool_stride = j.value("pool_stride", 1);
      change_pool_stride = j.value("change_pool_stride", 0);
      vidlora::require(
          change_pool_stride >= 0 && (change_pool_stride == 0 || vision_config.grid() % change_pool_stride == 0),
          "{}: change_pool_stride {} does not divide the {}x{} patch grid", (d / "vidlora_demo.json").string(),
          change_pool_stride, vision_config.grid(), vision_config.grid());
      encoder_id = j.value("encoder_id", std::string("encoder"));
    }
  }

  int vision_tokens_per_frame() const {
    const int g = vision_config.grid() / pool_stride;
    return g * g;
  }

  vidlora::train::TextCodec codec() const {
    const auto* tok = &*tokenizer;
    vidlora::train::TextCodec c;
    c.encode = [tok](const std::string& s) { return tok->encode(s, vidlora::model::EncodeOptions{false, false}); };
    c.decode = [tok](const std::vector<int>& ids) { return tok->decode(ids, true); };
    const auto video = tok->token_to_id("<video>");
    vidlora::require(video.has_value(), "{}: the tokenizer has no <video> token", (dir / "tokenizer.model").string());
    c.placeholder_id = *video;
    c.prompt_ids.clear();
    if (tok->bos_id()) c.prompt_ids.push_back(*tok->bos_id());
    c.prompt_ids.push_back(*video);
    for (int id : tok->encode(prompt, vidlora::model::EncodeOptions{false, false})) c.prompt_ids.push_back(id);
    c.eos_id = tok->eos_id().value_or(-1);
    c.pad_id = tok->pad_id().value_or(0);
    return c;
  }

  // Features of a video through the sampler named `sampler` ("uniform", "scene_change", "motion"), cached.
  // encoder: the tower that runs (a GPU build's device copy of `vision`); null: `vision` on the CPU.
  ClipFeatures features(const std::string& sampler, int frames, const fs::path& cache_dir,
                        std::shared_ptr<const vidlora::model::FrameEncoder> encoder = nullptr) const {
    auto cache = std::make_shared<vidlora::train::FeatureCache>(cache_dir);
    auto enc =
        encoder
            ? std::move(encoder)
            : std::make_shared<const vidlora::model::FrameEncoder>(vidlora::model::FrameEncoder::borrowing(*vision));
    const int pool = pool_stride, change = change_pool_stride;
    const std::string id =
        fmt::format("{}-pool{}{}{}", encoder_id, pool, change > 0 ? fmt::format("-change{}", change) : std::string(),
                    enc->variant().empty() ? std::string() : "-" + enc->variant());
    vidlora::video::with_sampling_policy(sampler, [](auto) {});  // an unknown name is an error listing the known ones
    const auto compute = [enc, pool, change, sampler, frames](const fs::path& v) {
      return clip_features(v, sampler, frames, *enc, pool, change);
    };
    return cached_clip_features(std::move(cache), sampler, frames, id, compute);
  }
};

// MeCab + mecab-ko-dic in Okt units, for the Korean METEOR users report (nltk over KoNLPy Okt morphemes;
// docs/eval.md); nullopt, with the reason printed, when the demo was built without MeCab or the dictionary
// is not installed (tools/install-deps.sh). Compiled once, in support/morpheme_tokenizer.cpp (MeCab's memo uses
// GCC vector types, which a GPU preset's train_captioner, compiled by nvcc, cannot include).
std::optional<vidlora::eval::AnyCaptionTokenizer> korean_morpheme_tokenizer();

}  // namespace demo
