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
//   vidlora_demo.json      {"prompt": text after the video, "pool_stride": n, "encoder_id": name}

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/trainer.hpp>
#if VIDLORA_DEMO_MECAB  // examples/CMakeLists.txt defines it when vidlora::mecab (MeCab) is available
#include <vidlora/eval/caching_tokenizer.hpp>
#include <vidlora/eval/mecab_tokenizer.hpp>
#endif

namespace demo {

namespace fs = std::filesystem;

// examples/support/demo_features.cpp: sampler + CLIP preprocessing + encoder (+ pooling).
vidlora::Matrix clip_features(const std::filesystem::path& video, const std::string& sampler, int frames,
                              const vidlora::model::ClipVision& encoder, int pool_stride);

// --key value / --flag arguments; positional ones in `rest`.
struct Args {
  std::map<std::string, std::string> kv;
  std::vector<std::string> rest;
  Args(int argc, char** argv, const std::vector<std::string>& flags) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        a = a.substr(2);
        if (const auto eq = a.find('='); eq != std::string::npos) {
          kv[a.substr(0, eq)] = a.substr(eq + 1);
        } else if (std::find(flags.begin(), flags.end(), a) != flags.end()) {
          kv[a] = "1";
        } else {
          vidlora::require(i + 1 < argc, "option --{} needs a value", a);
          kv[a] = argv[++i];
        }
      } else {
        rest.push_back(a);
      }
    }
  }
  bool has(const std::string& k) const { return kv.count(k) > 0; }
  std::string str(const std::string& k, const std::string& def) const { return has(k) ? kv.at(k) : def; }
  int integer(const std::string& k, int def) const { return has(k) ? std::stoi(kv.at(k)) : def; }
  double real(const std::string& k, double def) const { return has(k) ? std::stod(kv.at(k)) : def; }
};

inline nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  vidlora::require(in.good(), "cannot open {}", p.string());
  return nlohmann::json::parse(in);
}

inline void write_table(const fs::path& path, const vidlora::model::TensorTable& t) {
  vidlora::io::TensorMap m;
  for (const auto& [name, e] : t.tensors()) m.emplace(name, vidlora::io::TensorData::from_floats(e.data, e.shape));
  vidlora::io::write_safetensors(path, m, {{"format", "pt"}});
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
      encoder_id = j.value("encoder_id", std::string("encoder"));
    }
  }

  int vision_tokens_per_frame() const {
    const int g = vision_config.grid() / pool_stride;
    return g * g;
  }

  vidlora::TextCodec codec() const {
    const auto* tok = &*tokenizer;
    vidlora::TextCodec c;
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
  std::function<vidlora::Matrix(const fs::path&)> features(const std::string& sampler, int frames,
                                                            const fs::path& cache_dir) const {
    auto cache = std::make_shared<vidlora::FeatureCache>(cache_dir);
    const auto* enc = &*vision;
    const int pool = pool_stride;
    const std::string id = fmt::format("{}-pool{}", encoder_id, pool);
    vidlora::require(sampler == "uniform" || sampler == "scene_change" || sampler == "motion",
                     "unknown sampler '{}' (uniform, scene_change, motion)", sampler);
    return [cache, enc, pool, id, sampler, frames](const fs::path& video) {
      return cache->get({video, sampler, frames, id},
                        [&](const fs::path& v) { return clip_features(v, sampler, frames, *enc, pool); });
    };
  }
};

// MeCab + mecab-ko-dic in Okt units, for the Korean METEOR users report (nltk over KoNLPy Okt morphemes;
// docs/eval.md); nullopt, with the reason printed, when the demo was built without MeCab or the dictionary
// is not installed (tools/install-deps.sh).
inline std::optional<vidlora::eval::AnyCaptionTokenizer> korean_morpheme_tokenizer() {
#if VIDLORA_DEMO_MECAB
  try {
    return vidlora::eval::AnyCaptionTokenizer(
        vidlora::eval::CachingTokenizer<vidlora::eval::MecabKoTokenizer>(vidlora::eval::MecabKoTokenizer()));
  } catch (const vidlora::Error& e) {
    fmt::print("(no Korean morpheme METEOR: {})\n", e.what());
    return std::nullopt;
  }
#else
  fmt::print("(no Korean morpheme METEOR: built without MeCab, see tools/install-deps.sh)\n");
  return std::nullopt;
#endif
}

}  // namespace demo
