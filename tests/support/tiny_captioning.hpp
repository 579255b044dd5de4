#pragma once
// The tiny captioning problem the Trainer tests train on (tests/trainer/test_trainer.cpp, tests/mpi): 15 words,
// clips whose 4 × 12 features carry their colour, shape and motion as directions plus seeded noise, a 2-layer
// 32-wide LLaMA decoder and an Mlp2xGelu projector, each from a fixed seed.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <vidlora/comm/single.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace vidlora::test::tiny {

// Words 3.. of a tiny vocabulary; 0 pad, 1 video placeholder, 2 eos.
inline const std::vector<std::string> kWords{"<pad>", "<video>", "</s>",  "describe", ":",
                                             "red",   "blue",    "green", "circle",   "square",
                                             "moves", "left",    "right", "stays",    "."};
inline constexpr int kVision = 12, kHidden = 32, kTokensPerClip = 4;

// Whitespace-separated words of kWords. An unknown word throws (failing the test that trains on it; a REQUIRE
// would need a Catch run, and tests/mpi/main.cpp's fault programs train outside one).
inline train::TextCodec codec() {
  train::TextCodec c;
  c.encode = [](const std::string& text) {
    std::vector<int> ids;
    std::istringstream in(text);
    std::string w;
    while (in >> w) {
      const auto it = std::find(kWords.begin(), kWords.end(), w);
      require(it != kWords.end(), "tiny codec: unknown word '{}' in \"{}\"", w, text);
      ids.push_back(static_cast<int>(it - kWords.begin()));
    }
    return ids;
  };
  c.decode = [](const std::vector<int>& ids) {
    std::string s;
    for (int id : ids) s += (s.empty() ? "" : " ") + kWords.at(static_cast<std::size_t>(id));
    return s;
  };
  c.prompt_ids = {3, 1, 4};
  c.placeholder_id = 1;
  c.eos_id = 2;
  c.pad_id = 0;
  return c;
}

// Clips offset … offset + n − 1; clip i: colour i % 3, shape (i / 3) % 2, motion (i / 6) % 2 (captions of
// different lengths: "moves left" against "stays").
inline std::vector<train::Clip> clips(int n, int offset = 0) {
  const char* colour[3] = {"red", "blue", "green"};
  const char* shape[2] = {"circle", "square"};
  const char* motion[2] = {"moves left", "stays"};
  std::vector<train::Clip> out;
  for (int k = 0; k < n; ++k) {
    const int i = k + offset;
    train::Clip c;
    c.id = fmt::format("clip_{:03}", i);
    c.video = fmt::format("videos/clip_{:03}.mp4", i);
    c.caption = fmt::format("{} {} {} .", colour[i % 3], shape[(i / 3) % 2], motion[(i / 6) % 2]);
    out.push_back(c);
  }
  return out;
}

// [kTokensPerClip, kVision]: seeded noise plus one direction each for colour, shape and motion.
inline Matrix features(const train::Clip& c) {
  const int i = std::stoi(c.id.substr(5));
  Matrix f = model::random_normal(kTokensPerClip, kVision, 0.1, 99, static_cast<std::uint64_t>(i));
  f.col(i % 3).array() += 2.0f;
  f.col(3 + (i / 3) % 2).array() += 2.0f;
  f.col(5 + (i / 6) % 2).array() += 2.0f;
  return f;
}

inline model::DecoderConfig decoder_config() {
  return model::llama_config(kHidden, 64, 2, 4, 2, static_cast<int>(kWords.size()));
}

// Two short stages (2 epochs each, lr 1e-2 then 5e-3) of batch × accumulation clips per step, the Cpu preset's LoRA
// dropout, seed 5, silent, captions of up to 6 tokens: the trainer tests' run.
inline TrainerConfig two_stage_config(const std::filesystem::path& out, int batch = 2, int accumulation = 2) {
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 2;
  c.stages[0].learning_rate = 1e-2;
  c.stages[1].epochs = 2;
  c.stages[1].learning_rate = 5e-3;
  c.batch_size = batch;
  c.gradient_accumulation_steps = accumulation;
  c.seed = 5;
  c.output_dir = out;
  c.progress = nullptr;
  c.generation.max_new_tokens = 6;
  return c;
}

template <class Comm = comm::Single>
using Trainer = vidlora::Trainer<presets::Cpu, model::Mlp2xGelu, lora::DenseWeight, Comm>;

// A trainer of the tiny problem: decoder weights from seed 3, projector from seed 11.
template <class Comm = comm::Single>
Trainer<Comm> make_trainer(
    const TrainerConfig& c, train::FeatureFn f = [](const train::Clip& clip) { return features(clip); },
    Comm comm = Comm{}) {
  const auto weights = model::random_decoder_weights(decoder_config(), 3);
  return Trainer<Comm>(c, decoder_config(), weights, model::Mlp2xGelu(kVision, kHidden, 11), codec(), std::move(f),
                       std::move(comm));
}

}  // namespace vidlora::test::tiny
