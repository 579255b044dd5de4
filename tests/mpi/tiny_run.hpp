#pragma once
// The tiny captioning problem of tests/trainer (12-wide features, a 2-layer 32-wide decoder, 15 words), for
// training runs on one rank (comm::Single) and under mpiexec (comm::Mpi).

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/comm/single.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace vidlora::test {

inline const std::vector<std::string> kWords{"<pad>", "<video>", "</s>",  "describe", ":",
                                             "red",   "blue",    "green", "circle",   "square",
                                             "moves", "left",    "right", "stays",    "."};
inline constexpr int kVision = 12, kHidden = 32, kTokensPerClip = 4;

inline train::TextCodec tiny_codec() {
  train::TextCodec c;
  c.encode = [](const std::string& text) {
    std::vector<int> ids;
    std::istringstream in(text);
    std::string w;
    while (in >> w) ids.push_back(static_cast<int>(std::find(kWords.begin(), kWords.end(), w) - kWords.begin()));
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

// Captions of different lengths ("stays" vs "moves left"), so the ranks' token counts differ.
inline std::vector<train::Clip> tiny_clips(int n, int offset = 0) {
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

inline Matrix tiny_features(const train::Clip& c) {
  const int i = std::stoi(c.id.substr(5));
  Matrix f = model::random_normal(kTokensPerClip, kVision, 0.1, 99, static_cast<std::uint64_t>(i));
  f.col(i % 3).array() += 2.0f;
  f.col(3 + (i / 3) % 2).array() += 2.0f;
  f.col(5 + (i / 6) % 2).array() += 2.0f;
  return f;
}

inline model::DecoderConfig tiny_decoder_config() {
  return model::llama_config(kHidden, 64, 2, 4, 2, static_cast<int>(kWords.size()));
}

// Two short stages, no dropout (masks are drawn per micro-batch, so they differ between splits of a step).
inline TrainerConfig tiny_config(const std::filesystem::path& out, int batch, int accumulation) {
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 2;
  c.stages[0].learning_rate = 1e-2;
  c.stages[1].epochs = 2;
  c.stages[1].learning_rate = 5e-3;
  c.batch_size = batch;
  c.gradient_accumulation_steps = accumulation;
  c.lora_dropout = 0.0;
  c.seed = 5;
  c.output_dir = out;
  c.progress = nullptr;
  c.generation.max_new_tokens = 6;
  return c;
}

template <class Comm = comm::Single>
using TinyTrainer = Trainer<presets::Cpu, model::Mlp2xGelu, lora::DenseWeight, Comm>;

template <class Comm = comm::Single>
TinyTrainer<Comm> make_tiny(
    const TrainerConfig& c, Comm comm = Comm{},
    train::FeatureFn f = [](const train::Clip& clip) { return tiny_features(clip); }) {
  const auto weights = model::random_decoder_weights(tiny_decoder_config(), 3);
  return TinyTrainer<Comm>(c, tiny_decoder_config(), weights, model::Mlp2xGelu(kVision, kHidden, 11), tiny_codec(),
                           std::move(f), std::move(comm));
}

// Every trainable tensor of a trainer, in a fixed order: [projector weights and biases, LoRA A and B...].
template <class T>
std::vector<Matrix> trainable_tensors(T& trainer) {
  std::vector<Matrix> out;
  auto& p = trainer.projector();
  out.push_back(p.linear_1().weight());
  out.push_back(p.linear_1().bias().transpose());
  out.push_back(p.linear_2().weight());
  out.push_back(p.linear_2().bias().transpose());
  trainer.decoder().for_each_lora([&](const std::string&, auto& l) {
    out.push_back(l.lora_A());
    out.push_back(l.lora_B());
  });
  return out;
}

// max |a - b| / max |b| over all tensors (normwise, as the project compares sums).
inline double normwise_difference(const std::vector<Matrix>& a, const std::vector<Matrix>& b) {
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>((a[i] - b[i]).cwiseAbs().maxCoeff()));
    scale = std::max(scale, static_cast<double>(b[i].cwiseAbs().maxCoeff()));
  }
  return a.size() == b.size() ? diff / std::max(scale, 1e-30) : INFINITY;
}

}  // namespace vidlora::test
