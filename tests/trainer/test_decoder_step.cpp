// train::DecoderStep, the Trainer's backend seam (train/decoder_step.hpp): the Cpu policy is the CPU decoder's own
// step; a Cpu preset's Trainer runs it and says so in its step records; a device backend shows on the progress line.
// (The Cuda policy against this one: tests/cuda/test_trainer_step.cu.)
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/comm/any_communicator.hpp>
#include <vidlora/comm/single.hpp>
#include <vidlora/core/backend.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/decoder_step.hpp>
#include <vidlora/train/progress.hpp>
#include <vidlora/train/trainer.hpp>

#include "tiny_captioning.hpp"
#include "trainer_runs.hpp"

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

using test::StepDecoder;

// The tiny decoder (weights of seed 3) with the step tests' adapters at `dropout` and B off zero, so that A's
// gradients are not all zero.
StepDecoder step_decoder(double dropout) {
  StepDecoder d(test::tiny::decoder_config(), model::random_decoder_weights(test::tiny::decoder_config(), 3),
                test::step_decoder_options(dropout, 9));
  d.for_each_lora([](const std::string&, auto& l) { l.lora_B().setConstant(0.01f); });
  return d;
}

}  // namespace

TEST_CASE("the Cpu decoder step is Decoder::loss_and_backward: loss, gradients and dropout counters bit for bit",
          "[trainer][backend]") {
  namespace tiny = test::tiny;
  using D = StepDecoder;
  D direct = step_decoder(0.25), stepped = step_decoder(0.25);
  model::Mlp2xGelu projector(tiny::kVision, tiny::kHidden, 11);
  const train::TrainableTensors tensors(projector, stepped);
  train::DecoderStep<backend::Cpu, D> step(stepped, tensors);
  static_assert(train::DecoderStepPolicy<decltype(step), D>);

  const test::TwoSequences in;
  const auto& [ids, batch, labels] = in;
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  ce.total_valid_tokens = 13;
  for (int call = 0; call < 2; ++call) {  // the second call sees the first one's accumulated gradients and counters
    const auto want = direct.loss_and_backward(direct.embed(ids), batch, labels, ce);
    const auto got = step.loss_and_backward(stepped.embed(ids), batch, labels, ce);
    CHECK(got.loss == want.loss);
    CHECK(got.valid_tokens == want.valid_tokens);
    CHECK(got.grad_embeds == want.grad_embeds);
  }
  std::vector<const Matrix*> want_grads, got_grads;
  std::vector<std::uint64_t> want_steps, got_steps;
  direct.for_each_lora([&](const std::string&, auto& l) {
    want_grads.push_back(&l.grad_A());
    want_grads.push_back(&l.grad_B());
    want_steps.push_back(l.step());
  });
  stepped.for_each_lora([&](const std::string&, auto& l) {
    got_grads.push_back(&l.grad_A());
    got_grads.push_back(&l.grad_B());
    got_steps.push_back(l.step());
  });
  REQUIRE(got_grads.size() == want_grads.size());
  for (std::size_t i = 0; i < got_grads.size(); ++i) CHECK(*got_grads[i] == *want_grads[i]);
  CHECK(got_steps == want_steps);
  CHECK(got_steps.front() == 2);  // dropout drew a mask per call
  CHECK(want_grads.front()->norm() > 0.0f);
}

TEST_CASE("a loss refused for NaN logits has drawn its dropout masks: the Cpu step's counters move",
          "[trainer][backend]") {
  // The reference for the device step, which copies its counters back on the same refusal
  // (tests/cuda/test_trainer_step.cu): the masks after a refused call are those after a call that succeeded.
  namespace tiny = test::tiny;
  using D = StepDecoder;
  D refused = step_decoder(0.25), clean = step_decoder(0.25);
  model::Mlp2xGelu projector(tiny::kVision, tiny::kHidden, 11);
  const train::TrainableTensors tensors(projector, refused);
  train::DecoderStep<backend::Cpu, D> step(refused, tensors);
  const test::TwoSequences in;
  const auto& [ids, batch, labels] = in;
  Matrix bad = refused.embed(ids);
  bad(4, 0) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(step.loss_and_backward(bad, batch, labels, {}), Catch::Contains("NaN or +Inf in the logits"));
  (void)clean.loss_and_backward(clean.embed(ids), batch, labels, {});
  CHECK(test::dropout_steps_of(refused) == test::dropout_steps_of(clean));
  CHECK(test::dropout_steps_of(refused).front() == 1);
  // The next call's masks are the clean run's: the same loss, bit for bit.
  const auto want = clean.loss_and_backward(clean.embed(ids), batch, labels, {});
  const auto got = step.loss_and_backward(refused.embed(ids), batch, labels, {});
  CHECK(got.loss == want.loss);
}

TEST_CASE("the Cpu decoder step's evaluation: the loss without dropout, summed, and generation with the KV cache",
          "[trainer][backend]") {
  namespace tiny = test::tiny;
  using D = StepDecoder;
  D dec = step_decoder(0.25), no_dropout = step_decoder(0.0);
  model::Mlp2xGelu projector(tiny::kVision, tiny::kHidden, 11);
  const train::TrainableTensors tensors(projector, dec);
  train::DecoderStep<backend::Cpu, D> step(dec, tensors);

  const test::TwoSequences in;
  const auto& [ids, batch, labels] = in;
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  const train::EvalLoss got = step.eval_loss(dec.embed(ids), batch, labels, ce);
  // The mean loss of the same decoder without dropout, times its token count: the evaluation's sum.
  const auto want = no_dropout.loss_and_backward(no_dropout.embed(ids), batch, labels, ce);
  CHECK(got.valid_tokens == want.valid_tokens);
  CHECK(got.valid_tokens == 9);
  CHECK(got.loss_sum / static_cast<double>(got.valid_tokens) == Approx(want.loss).epsilon(1e-6));

  // Generation: model::generate with the decoder's KV cache, the ids Decoder::generate_greedy gives.
  const std::vector<int> prompt{3, 4, 1, 1};
  model::GenerationOptions g;
  g.max_new_tokens = 5;
  CHECK(step.generate(dec.embed(prompt), g).ids == dec.generate_greedy(std::span<const int>(prompt), 5));
  dec.for_each_lora([](const std::string&, auto& l) { CHECK(l.step() == 0); });  // no mask drawn by either
}

TEST_CASE("TrainableTensors' values version moves on every write a device step must see, and only then",
          "[trainer][backend]") {
  namespace tiny = test::tiny;
  using D = model::Decoder<presets::Cpu::lora_r, presets::Cpu::lora_alpha>;
  model::DecoderOptions o;
  o.target_modules = {"q_proj", "v_proj"};
  D decoder(tiny::decoder_config(), model::random_decoder_weights(tiny::decoder_config(), 3), o);
  model::Mlp2xGelu projector(tiny::kVision, tiny::kHidden, 11);
  train::TrainableTensors tensors(projector, decoder);
  const std::uint64_t v0 = tensors.values_version();
  // reading, pulling and saving change no value
  tensors.pull();
  tensors.pull_grads();
  const io::TensorMap saved = tensors.tensor_map();
  CHECK(tensors.values_version() == v0);
  tensors.push();  // after an optimizer step
  CHECK(tensors.values_version() == v0 + 1);
  const fs::path file = fs::temp_directory_path() / "vidlora_values_version.safetensors";
  io::write_safetensors(file, saved, {{"format", "vidlora"}});
  tensors.load(io::SafetensorsFile::open(file));  // a checkpoint or the best parameters
  CHECK(tensors.values_version() == v0 + 2);
  tensors.values_changed();  // an adapter loaded into the decoder
  CHECK(tensors.values_version() == v0 + 3);
  fs::remove(file);
}

TEST_CASE("a Cpu preset's Trainer runs the Cpu decoder step and its step records name the backend",
          "[trainer][backend]") {
  namespace tiny = test::tiny;
  static_assert(std::is_same_v<tiny::Trainer<>::backend_type, backend::Cpu>);
  static_assert(std::is_same_v<Trainer<presets::Cpu>::backend_type, presets::backend_of<presets::Cpu>>);
  const fs::path out = fs::temp_directory_path() / "vidlora_decoder_step_backend_record";
  fs::remove_all(out);
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 1;
  c.batch_size = 2;
  c.gradient_accumulation_steps = 1;
  c.output_dir = out;
  c.progress = nullptr;
  auto trainer = tiny::make_trainer(c);
  const auto result = trainer.train(tiny::clips(4), {});
  REQUIRE(result.steps == 4);
  std::ifstream log(out / "train_log.jsonl");
  std::string line;
  int steps = 0;
  while (std::getline(log, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j["type"] != "step") continue;
    ++steps;
    CHECK(j["backend"] == "Cpu");
    CHECK_FALSE(j.contains("memory"));  // the CPU step tracks no device memory
  }
  CHECK(steps == 4);
  fs::remove_all(out);
}

TEST_CASE("the progress line names a device backend and leaves the CPU's line as it was", "[trainer][backend]") {
  train::ProgressState s{.step = 5, .total_steps = 10, .steps_this_run = 5, .elapsed_s = 5.0, .loss = 1.5};
  const std::string cpu = train::format_progress(s);
  CHECK_THAT(cpu, Catch::EndsWith("ETA 5s"));
  s.backend = "Cuda";
  CHECK(train::format_progress(s) == cpu + " | Cuda");
  s.memory = "mem 1.00 MiB (peak 3.00 GiB, cap 14.00 GiB)";
  CHECK(train::format_progress(s) == cpu + " | Cuda | mem 1.00 MiB (peak 3.00 GiB, cap 14.00 GiB)");
  s.mfu = 0.4126;
  CHECK(train::format_progress(s) == cpu + " | Cuda | mem 1.00 MiB (peak 3.00 GiB, cap 14.00 GiB) | MFU 41.3%");
  CHECK(train::to_json(train::StepRecord{.step = 1, .mfu = 0.4126})["mfu"] == 0.4126);
  CHECK_FALSE(train::to_json(train::StepRecord{.step = 1}).contains("mfu"));
  CHECK(train::to_json(train::StepRecord{.step = 1, .backend = "Cuda"})["backend"] == "Cuda");
  CHECK_FALSE(train::to_json(train::StepRecord{.step = 1}).contains("backend"));
}

TEST_CASE("the CPU trainer refuses the device memory and MFU settings, naming them", "[trainer][backend]") {
  namespace tiny = test::tiny;
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.progress = nullptr;
  c.output_dir = fs::temp_directory_path() / "vidlora_decoder_step_device_settings";
  c.device_memory.max_memory_gb = 4.0;
  CHECK_THROWS_WITH(tiny::make_trainer(c), Catch::Contains("max_memory_gb 4 caps device memory") &&
                                               Catch::Contains("runs on the CPU (backend Cpu, preset Cpu)"));
  c.device_memory.max_memory_gb = 0.0;
  c.offload_checkpoints = true;
  CHECK_THROWS_WITH(tiny::make_trainer(c), Catch::Contains("offload_checkpoints"));
  c.offload_checkpoints = false;
  c.mfu_peak_tflops = 312.0;
  CHECK_THROWS_WITH(tiny::make_trainer(c),
                    Catch::Contains("mfu_peak_tflops sets the GPU peak") && Catch::Contains("backend Cpu, preset Cpu"));
  c.mfu_peak_tflops = -1.0;
  CHECK_THROWS_WITH(tiny::make_trainer(c), Catch::Contains("mfu_peak_tflops must be a finite number"));
  c.mfu_peak_tflops.reset();
  CHECK_NOTHROW(tiny::make_trainer(c));
}

namespace {
// A device-buffer communicator (comm::Nccl's shape) on one rank, its buffers plain memory: its sums are the identity.
struct OneRankDeviceComm {
  static constexpr comm::Buffers buffers = comm::Buffers::Device;
  comm::Single host;
  static int rank() { return 0; }
  static int size() { return 1; }
  void all_reduce_sum(std::span<float>, std::string_view) {}
  void all_reduce_sum(std::span<double>, std::string_view) {}
  void all_reduce_sum_group(std::span<const std::span<float>>, std::string_view) {}
  void all_reduce_sum_group(std::span<const std::span<double>>, std::string_view) {}
  comm::Single& bootstrap() { return host; }
  void broadcast(std::string&, std::string_view) {}
  std::vector<std::string> gather(const std::string& s, std::string_view) { return {s}; }
  void barrier(std::string_view) {}
};
}  // namespace

TEST_CASE("the CPU trainer refuses a communicator that sums gradients on the device, naming it", "[trainer][backend]") {
  // comm::Nccl held by the AnyCommunicator of a program: known at run time only. (Held directly, the Trainer's
  // static_assert refuses it: a device-buffer communicator needs backend::Cuda.)
  namespace tiny = test::tiny;
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.progress = nullptr;
  c.output_dir = fs::temp_directory_path() / "vidlora_decoder_step_device_comm";
  CHECK_THROWS_WITH(tiny::make_trainer<comm::AnyCommunicator>(c, {}, comm::AnyCommunicator(OneRankDeviceComm{})),
                    Catch::Contains("sums gradients on the device (comm::Nccl)") &&
                        Catch::Contains("decoder step runs on the CPU (backend Cpu, preset Cpu)"));
  CHECK_NOTHROW(tiny::make_trainer<comm::AnyCommunicator>(c, {}, comm::AnyCommunicator(comm::Single{})));
}

TEST_CASE("checkpoints after every step and evaluations change no bit of a run, nor does a resume with val clips",
          "[trainer][backend]") {
  // The CPU half of the device trainer's check (tests/cuda/test_trainer_step.cu runs the same body on backend::Cuda).
  using CpuTrainer = Trainer<presets::Cpu, model::Mlp2xGelu, lora::DenseWeight, comm::Single, backend::Cpu>;
  test::check_syncs_change_no_bit(
      [](const TrainerConfig& c) {
        return CpuTrainer(c, test::tiny::decoder_config(),
                          model::random_decoder_weights(test::tiny::decoder_config(), 3),
                          model::Mlp2xGelu(test::tiny::kVision, test::tiny::kHidden, 11), test::tiny::codec(),
                          [](const train::Clip& clip) { return test::tiny::features(clip); });
      },
      "cpu_sync");
}
