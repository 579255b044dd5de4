#pragma once
// The programs' path for a Hugging Face LLaVA / LLaVA-NeXT-Video save_pretrained directory (--model HF_DIR),
// beside the demo's own model directory (demo_common.hpp's DemoModel):
//   frames ──the directory's processor config (model::LlavaProcessor)──▶ pixels ──its CLIP tower (+ pooling)──▶
//   features (cached) ──its projector (trained from the checkpoint's values)──▶ its decoder (LoRA, the preset's
//   recipe); the prompt is its chat template around --prompt, tokenised by its tokenizer.
// model_kind() tells the two kinds apart and names what is missing from a directory that is neither.

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vidlora/io/checkpoint_dir.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/frame_encoder.hpp>
#include <vidlora/model/llava_processor.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/trainer.hpp>
#include <vidlora/video/policy_table.hpp>

#include "clip_features.hpp"
#include "demo_common.hpp"

namespace demo {

// examples/support/hf_features.cpp: sampler at the video's size + processor preprocessing + CLIP tower (+ pooling),
// with the sampling's note (support/sampling_notes.hpp).
vidlora::train::NotedFeatures hf_clip_features(const std::filesystem::path& video, const std::string& sampler,
                                               int frames, const vidlora::video::ClipPreprocessOptions& preprocessing,
                                               const vidlora::model::FrameEncoder& encoder, int pool_stride);

// The question the captioner is asked when --prompt is not given.
inline constexpr const char* kDefaultHfPrompt = "Describe this video.";

enum class ModelKind { Demo, HuggingFace };

// Which kind of model directory `dir` is: a LLaVA / LLaVA-NeXT-Video save_pretrained directory or the demo's
// (train_captioner --stage0). Throws, naming the directory and every file it lacks, when it is neither.
inline ModelKind model_kind(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const std::string supported =
      "--model takes a Hugging Face LLaVA / LLaVA-NeXT-Video save_pretrained directory (model_type llava or "
      "llava_next_video) or the demo's model directory (train_captioner --stage0)";
  vidlora::require(fs::is_directory(dir), "model directory {} does not exist; {}", dir.string(), supported);
  const auto has = [&](const char* name) { return fs::is_regular_file(dir / name); };
  const auto missing_list = [&](const std::vector<std::pair<std::string, bool>>& parts) {
    std::string out;
    for (const auto& [what, present] : parts)
      if (!present) out += (out.empty() ? "" : ", ") + what;
    return out;
  };
  vidlora::require(has("config.json"), "{} is not a supported model directory: it has no config.json; {}", dir.string(),
                   supported);
  std::ifstream in(dir / "config.json");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    vidlora::fail("{}: config.json does not parse as JSON: {}", dir.string(), e.what());
  }
  const std::string type = config.is_object() ? config.value("model_type", std::string()) : std::string();
  if (type == "llava" || type == "llava_next_video") {
    const std::string missing = missing_list({
        {"the weights (model.safetensors or model.safetensors.index.json)",
         has("model.safetensors") || has("model.safetensors.index.json")},
        {"the tokenizer (tokenizer.json or tokenizer.model)", has("tokenizer.json") || has("tokenizer.model")},
        {"the processor (processor_config.json, video_preprocessor_config.json or preprocessor_config.json)",
         has("processor_config.json") || has("preprocessor_config.json") || has("video_preprocessor_config.json")},
    });
    vidlora::require(missing.empty(),
                     "{} is a {} directory but lacks {} (save the processor too: "
                     "processor.save_pretrained(dir))",
                     dir.string(), type, missing);
    return ModelKind::HuggingFace;
  }
  if (type == "llama" || type == "qwen2" || type == "qwen3") {
    const std::string missing = missing_list({{"vision_config.json", has("vision_config.json")},
                                              {"vision.safetensors", has("vision.safetensors")},
                                              {"model.safetensors", has("model.safetensors")},
                                              {"tokenizer.model", has("tokenizer.model")}});
    vidlora::require(missing.empty(),
                     "{} has a bare {} decoder config.json but is not a supported model directory: it lacks {} (a "
                     "demo model directory holds them); {}",
                     dir.string(), type, missing, supported);
    return ModelKind::Demo;
  }
  vidlora::fail("{}: model_type \"{}\" is not supported; {}", dir.string(), type, supported);
}

struct HfModel {
  std::filesystem::path dir;
  vidlora::model::LlavaConfig config;
  vidlora::io::CheckpointDir weights;
  vidlora::model::ClipVision vision;
  vidlora::model::LlavaProcessor processor;
  std::string question;

  HfModel(const std::filesystem::path& d, std::string q)
      : dir(d),
        config(read_config(d)),
        weights(vidlora::io::CheckpointDir::open(d)),
        vision(config.vision, weights, vidlora::model::ClipVisionOptions::from(config)),
        processor(d, config),
        question(std::move(q)) {}

  // The prompt with one placeholder, the caption's ids (no BOS/EOS) and the end-of-turn token.
  vidlora::train::TextCodec codec() const {
    const auto* p = &processor;
    vidlora::train::TextCodec c;
    c.encode = [p](const std::string& s) { return p->answer_ids(s); };
    c.decode = [p](const std::vector<int>& ids) { return p->decode(ids); };
    c.placeholder_id = processor.placeholder_id();
    c.prompt_ids = processor.prompt_ids(question);
    const std::string eos(processor.chat_template().response_suffix);
    const auto eos_id = std::visit([&](const auto& t) { return t.token_to_id(eos); }, processor.tokenizer());
    vidlora::require(eos_id.has_value(), "{}: the tokenizer has no {} token (the end of the assistant's turn)",
                     dir.string(), eos);
    c.eos_id = *eos_id;
    c.pad_id = std::visit([](const auto& t) { return t.pad_id(); }, processor.tokenizer()).value_or(0);
    return c;
  }

  // The checkpoint's projector (stage 1 trains it from there).
  vidlora::model::Mlp2xGelu projector() const { return vidlora::model::Mlp2xGelu::load(weights, config); }

  // Features of a video through the sampler named `sampler`, cached under an id naming this checkpoint by content
  // (model_fingerprint: its JSON files, tokenizer and weights, sampled past 2 MiB a file), so an edited config or
  // processor file, or other weights, never reuse stale features.
  // encoder: the tower that runs (a GPU build's device copy of `vision`); null: `vision` on the CPU.
  ClipFeatures features(const std::string& sampler, int frames, const std::filesystem::path& cache_dir,
                        std::shared_ptr<const vidlora::model::FrameEncoder> encoder = nullptr) const {
    auto cache = std::make_shared<vidlora::train::FeatureCache>(cache_dir);
    auto enc =
        encoder ? std::move(encoder)
                : std::make_shared<const vidlora::model::FrameEncoder>(vidlora::model::FrameEncoder::borrowing(vision));
    const auto pre = processor.frame_preprocessing();
    const int pool = config.spatial_pool_stride;
    const std::string id = fmt::format("hf-{:016x}-pool{}{}", vidlora::train::fnv1a64(model_fingerprint(dir)), pool,
                                       enc->variant().empty() ? std::string() : "-" + enc->variant());
    vidlora::video::with_sampling_policy(sampler, [](auto) {});  // an unknown name is an error listing the known ones
    const auto compute = [enc, pre, pool, sampler, frames](const std::filesystem::path& v) {
      return hf_clip_features(v, sampler, frames, pre, *enc, pool);
    };
    return cached_clip_features(std::move(cache), sampler, frames, id, compute);
  }

 private:
  static vidlora::model::LlavaConfig read_config(const std::filesystem::path& d) {
    try {
      return vidlora::model::LlavaConfig::from_file(d / "config.json");
    } catch (const vidlora::Error& e) {
      vidlora::fail("{}: {}", (d / "config.json").string(), e.what());
    }
  }
};

}  // namespace demo
