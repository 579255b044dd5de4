#pragma once
// Trainer runs on the tiny captioning problem that the CPU and the device trainer tests share
// (tests/cuda/test_trainer_step.cu, tests/trainer/test_decoder_step.cpp): the decoder steps' adapters and input, the
// step tests' configuration, the trained tensors of a run, and checks whose body is the same on either backend (the
// caller makes the trainer).

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <vidlora/model/decoder.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/projector_tensors.hpp>
#include <vidlora/train/trainer.hpp>

#include "tiny_captioning.hpp"

namespace vidlora::test {

using StepDecoder = model::Decoder<presets::Cpu::lora_r, presets::Cpu::lora_alpha>;

// The decoder-step tests' adapters: LoRA on q, v and down (so that the layer's other linears stay frozen) at
// `dropout`, its masks drawn from `seed`.
inline model::DecoderOptions step_decoder_options(double dropout, std::uint64_t seed) {
  model::DecoderOptions o;
  o.target_modules = {"q_proj", "v_proj", "down_proj"};
  o.lora.dropout = dropout;
  o.lora.seed = seed;
  return o;
}

// Two sequences of 6 tokens of the tiny vocabulary, the second padded by one; each first token and the padding are
// not supervised: the decoder-step tests' input.
struct TwoSequences {
  std::vector<int> ids{3, 5, 8, 10, 11, 2, 3, 6, 9, 13, 14, 0};
  model::SequenceBatch batch{2, 6, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}};
  std::vector<int> labels{-100, 5, 8, 10, 11, 2, -100, 6, 9, 13, 14, -100};
};

// Every LoRA slot's dropout counter, in the decoder's order.
template <class Decoder>
std::vector<std::uint64_t> dropout_steps_of(Decoder& d) {
  std::vector<std::uint64_t> steps;
  d.for_each_lora([&](const std::string&, auto& l) { steps.push_back(l.step()); });
  return steps;
}

// 10 clips, batches of 2 (captions of 4 and 5 tokens: padded), 5 steps per epoch; stage 1 and stage 2 one epoch each.
inline TrainerConfig trainer_step_config(const std::string& name) {
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 1;
  c.stages[0].learning_rate = 1e-2;
  c.stages[1].epochs = 1;
  c.stages[1].learning_rate = 5e-3;
  c.batch_size = 2;
  c.gradient_accumulation_steps = 1;
  c.lora_dropout = 0.1;
  c.seed = 5;
  // Named after this process too: the CUDA tests run as several CTest tests at once (on a GPU and on the emulated
  // sm_75 and sm_90), each a process of the same cases.
  c.output_dir =
      std::filesystem::temp_directory_path() / ("vidlora_trainer_step_" + name + "_" + std::to_string(::getpid()));
  c.progress = nullptr;
  std::filesystem::remove_all(c.output_dir);
  return c;
}

// The trained tensors after a run: every LoRA factor, then the projector's weights and biases, each flattened.
struct TrainedTensors {
  std::vector<float> lora, lora_grad, projector, projector_grad;
  std::vector<std::uint64_t> dropout_steps;
};

template <class T>
TrainedTensors trained_tensors_of(T& trainer) {
  TrainedTensors t;
  const auto put = [](std::vector<float>& out, const auto& m) { out.insert(out.end(), m.data(), m.data() + m.size()); };
  trainer.decoder().for_each_lora([&](const std::string&, auto& l) {
    put(t.lora, l.lora_A());
    put(t.lora, l.lora_B());
    put(t.lora_grad, l.grad_A());
    put(t.lora_grad, l.grad_B());
    t.dropout_steps.push_back(l.step());
  });
  const train::ProjectorTensors p = train::projector_tensors(trainer.projector());
  for (const auto& [name, m] : p.weights) put(t.projector, *m);
  for (const auto& [name, m] : p.grad_weights) put(t.projector_grad, *m);
  for (const auto& [name, v] : p.biases) put(t.projector, *v);
  for (const auto& [name, v] : p.grad_biases) put(t.projector_grad, *v);
  return t;
}

// Checkpoints after every step (each one brings a device run's values and AdamW state to the host) and an
// evaluation after each epoch (which reads them there and on the device) change no bit of the run: its losses,
// evaluations and final tensors (the best-result restore included). A run stopped after step 7 and resumed with its
// val clips gives the same. make(config) returns a Trainer on the backend under test.
template <class Make>
void check_syncs_change_no_bit(Make make, const std::string& name) {
  namespace fs = std::filesystem;
  TrainerConfig plain = trainer_step_config(name + "_plain");
  plain.stages[0].epochs = 2;
  TrainerConfig every = trainer_step_config(name + "_every");
  every.stages[0].epochs = 2;
  every.checkpoint_every = 1;
  const auto val = tiny::clips(4, 10);
  struct Run {
    std::vector<double> losses;
    std::vector<train::EvalResult> evals;
    TrainedTensors tensors;
  };
  const auto run = [&](const TrainerConfig& c, bool resume) {
    auto trainer = make(c);
    auto r = trainer.train(tiny::clips(10), val, resume);
    return Run{std::move(r.losses), std::move(r.evals), trained_tensors_of(trainer)};
  };
  const Run a = run(plain, false);
  const Run b = run(every, false);
  fs::remove_all(every.output_dir);
  TrainerConfig head = every;
  head.max_steps_this_run = 7;
  const Run first = run(head, false);
  const Run rest = run(every, true);
  fs::remove_all(plain.output_dir);
  fs::remove_all(every.output_dir);
  REQUIRE(a.losses.size() > 7);
  REQUIRE(a.evals.size() >= 2);
  CHECK(b.losses == a.losses);
  CHECK(b.tensors.lora == a.tensors.lora);
  CHECK(b.tensors.projector == a.tensors.projector);
  // Each process returns its own losses and evaluations: the stopped run's, then the resumed one's.
  const auto joined = [](auto head_part, const auto& tail_part) {
    head_part.insert(head_part.end(), tail_part.begin(), tail_part.end());
    return head_part;
  };
  CHECK(joined(first.losses, rest.losses) == a.losses);
  CHECK(rest.tensors.lora == a.tensors.lora);
  CHECK(rest.tensors.projector == a.tensors.projector);
  const std::vector<train::EvalResult> resumed_evals = joined(first.evals, rest.evals);
  for (const auto* other : {&b.evals, &resumed_evals}) {
    REQUIRE(other->size() == a.evals.size());
    for (std::size_t e = 0; e < a.evals.size(); ++e) {
      INFO("evaluation " << e + 1);
      CHECK((*other)[e].eval_loss == a.evals[e].eval_loss);
      CHECK((*other)[e].captions == a.evals[e].captions);
    }
  }
}

}  // namespace vidlora::test
