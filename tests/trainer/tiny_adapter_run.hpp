#pragma once
// The tiny training run whose PEFT adapter is the fixture tests/fixtures/trainer/adapter/: the tiny LLaMA
// fixture, a character codec, 8 clips with seeded random features, 1 + 2 epochs at lr 2e-2 on the Cpu
// preset. tests/trainer/test_peft_interop.cpp runs it and compares with the fixture;
// tools/fixtures/write_trainer_adapter.cpp runs it to regenerate the fixture.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/io/safetensors.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace vidlora::test {

// ids 10..49 for 'a'..; the decode only counts tokens (the run's captions are not checked).
inline train::TextCodec tiny_codec() {
  train::TextCodec codec;
  codec.encode = [](const std::string& s) {
    std::vector<int> ids;
    for (char ch : s) ids.push_back(10 + (ch - 'a') % 40);
    return ids;
  };
  codec.decode = [](const std::vector<int>& ids) { return std::to_string(ids.size()); };
  codec.prompt_ids = {1, 60, 5};
  codec.placeholder_id = 60;
  codec.eos_id = 2;
  return codec;
}

inline std::vector<train::Clip> tiny_clips() {
  std::vector<train::Clip> clips;
  for (int i = 0; i < 8; ++i) {
    train::Clip clip;
    clip.id = fmt::format("c{}", i);
    clip.video = fmt::format("c{}.mp4", i);
    clip.caption = std::string(3 + i % 3, static_cast<char>('a' + i));
    clips.push_back(clip);
  }
  return clips;
}

inline Matrix tiny_features(const train::Clip& cl) {
  return model::random_normal(4, 8, 1.0, 5, static_cast<std::uint64_t>(cl.id[1]));
}

// Trains the tiny run on the LLaMA fixture in model_dir; the adapter lands in output_dir / "adapter".
inline void train_tiny_adapter(const std::filesystem::path& model_dir, const std::filesystem::path& output_dir) {
  const auto config = model::DecoderConfig::from_file(model_dir / "config.json");
  const auto weights = io::SafetensorsFile::open(model_dir / "model.safetensors");
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 2;
  c.stages[0].learning_rate = c.stages[1].learning_rate = 2e-2;
  c.output_dir = output_dir;
  c.progress = nullptr;
  Trainer<presets::Cpu> t(c, config, weights, model::Mlp2xGelu(8, config.hidden_size, 3), tiny_codec(), tiny_features);
  t.train(tiny_clips(), {});
}

}  // namespace vidlora::test
