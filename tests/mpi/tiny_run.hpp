#pragma once
// The tiny captioning problem of tests/trainer (tests/support/tiny_captioning.hpp), for training runs on one rank
// (comm::Single) and under mpiexec (comm::Mpi).

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <vidlora/comm/single.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

#include "tiny_captioning.hpp"

namespace vidlora::test {

// Two short stages, no dropout (the dropout test sets it).
inline TrainerConfig tiny_config(const std::filesystem::path& out, int batch, int accumulation) {
  TrainerConfig c = tiny::two_stage_config(out, batch, accumulation);
  c.lora_dropout = 0.0;
  return c;
}

template <class Comm = comm::Single>
tiny::Trainer<Comm> make_tiny(
    const TrainerConfig& c, Comm comm = Comm{},
    train::FeatureFn f = [](const train::Clip& clip) { return tiny::features(clip); }) {
  return tiny::make_trainer(c, std::move(f), std::move(comm));
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
