// The Trainer with its decoder step on the device (train::DecoderStep<backend::Cuda>, train/cuda/decoder_step.cuh)
// against the same Trainer with the CPU step (DecoderStep<backend::Cpu>) on the tiny captioning problem
// (tests/support/tiny_captioning.hpp), LoRA dropout on, batches with padding: issue 14's equivalence gate in fp32 —
// the first step's loss to 1e-5 relative and its LoRA and projector gradients to 1e-4 normwise, ten AdamW steps
// (stage 1 then stage 2) with the loss curve to 1e-4 and the LoRA and projector parameters to 1e-4 normwise — then two
// device runs bit for bit, and a device run interrupted and resumed bit for bit as one run through. The device runs'
// projector is CudaMlp2xGelu (its forward and backward on the device too), as a GPU preset's train_captioner's.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/core/backend.hpp>
#include <vidlora/model/cuda/cuda_mlp2x_gelu.cuh>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/train/trainer.hpp>

#include "../support/tiny_captioning.hpp"
#include "support/cuda_test.cuh"

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

namespace tiny = test::tiny;

// On the device, the projector type a GPU preset's train_captioner trains with: its forward and backward there too.
template <class B>
using TinyProjectorOn = std::conditional_t<B::on_device, model::cuda::CudaMlp2xGelu, model::Mlp2xGelu>;
template <class B>
using TinyTrainerOn = Trainer<presets::Cpu, TinyProjectorOn<B>, lora::DenseWeight, comm::Single, B>;

template <class B>
TinyTrainerOn<B> make_tiny_trainer_on(const TrainerConfig& c) {
  const auto weights = model::random_decoder_weights(tiny::decoder_config(), 3);
  return TinyTrainerOn<B>(c, tiny::decoder_config(), weights,
                          TinyProjectorOn<B>(model::Mlp2xGelu(tiny::kVision, tiny::kHidden, 11)), tiny::codec(),
                          [](const train::Clip& clip) { return tiny::features(clip); });
}

// 10 clips, batches of 2 (captions of 4 and 5 tokens: padded), 5 steps per epoch; stage 1 and stage 2 one epoch each.
TrainerConfig trainer_step_config(const std::string& name) {
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 1;
  c.stages[0].learning_rate = 1e-2;
  c.stages[1].epochs = 1;
  c.stages[1].learning_rate = 5e-3;
  c.batch_size = 2;
  c.gradient_accumulation_steps = 1;
  c.lora_dropout = 0.1;
  c.seed = 5;
  c.output_dir = fs::temp_directory_path() / ("vidlora_cuda_trainer_step_" + name);
  c.progress = nullptr;
  fs::remove_all(c.output_dir);
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

struct TrainerStepRun {
  std::vector<double> losses;
  TrainedTensors tensors;
};

template <class B>
TrainerStepRun run_tiny_on(const TrainerConfig& c, bool resume = false) {
  auto trainer = make_tiny_trainer_on<B>(c);
  TrainerStepRun r;
  r.losses = trainer.train(tiny::clips(10), {}, resume).losses;
  r.tensors = trained_tensors_of(trainer);
  return r;
}

}  // namespace

TEST_CASE("a device decoder step gives the CPU step's first loss and gradients (LoRA and projector)",
          "[trainer][cuda]") {
  TrainerConfig c = trainer_step_config("first");
  c.stages[0].epochs = 0;  // a stage-2 step: LoRA and projector trained
  c.max_steps_this_run = 1;
  c.max_grad_norm = 1e9;  // the raw gradients (no clipping)
  const TrainerStepRun cpu = run_tiny_on<backend::Cpu>(c);
  fs::remove_all(c.output_dir);
  const TrainerStepRun gpu = run_tiny_on<backend::Cuda>(c);
  fs::remove_all(c.output_dir);
  REQUIRE(cpu.losses.size() == 1);
  REQUIRE(gpu.losses.size() == 1);
  CHECK(std::fabs(gpu.losses[0] - cpu.losses[0]) <= 1e-5 * std::fabs(cpu.losses[0]));
  CHECK(cuda_test::normwise_error(gpu.tensors.lora_grad, cpu.tensors.lora_grad) <= 1e-4);
  CHECK(cuda_test::normwise_error(gpu.tensors.projector_grad, cpu.tensors.projector_grad) <= 1e-4);
  CHECK(gpu.tensors.dropout_steps == cpu.tensors.dropout_steps);  // one mask per micro-batch, the CPU's counters
  CHECK(cpu.tensors.dropout_steps.front() == 1);
}

TEST_CASE(
    "ten steps with the device decoder step follow the CPU run; two device runs and a resumed one agree bit for bit",
    "[trainer][cuda]") {
  const TrainerConfig c = trainer_step_config("ten");
  const TrainerStepRun cpu = run_tiny_on<backend::Cpu>(c);
  fs::remove_all(c.output_dir);
  const TrainerStepRun gpu = run_tiny_on<backend::Cuda>(c);
  fs::remove_all(c.output_dir);
  REQUIRE(cpu.losses.size() == 10);
  REQUIRE(gpu.losses.size() == 10);
  CHECK(std::fabs(gpu.losses[0] - cpu.losses[0]) <= 1e-5 * std::fabs(cpu.losses[0]));
  for (std::size_t s = 0; s < cpu.losses.size(); ++s) {
    INFO("step " << s + 1 << ": cpu " << cpu.losses[s] << ", gpu " << gpu.losses[s]);
    CHECK(std::fabs(gpu.losses[s] - cpu.losses[s]) <= 1e-4 * std::fabs(cpu.losses[s]));
  }
  CHECK(cuda_test::normwise_error(gpu.tensors.lora, cpu.tensors.lora) <= 1e-4);
  CHECK(cuda_test::normwise_error(gpu.tensors.projector, cpu.tensors.projector) <= 1e-4);
  CHECK(gpu.tensors.dropout_steps == cpu.tensors.dropout_steps);

  const TrainerStepRun again = run_tiny_on<backend::Cuda>(c);
  fs::remove_all(c.output_dir);
  CHECK(again.losses == gpu.losses);
  CHECK(again.tensors.lora == gpu.tensors.lora);
  CHECK(again.tensors.projector == gpu.tensors.projector);

  // Interrupted after step 7 (in stage 2), resumed from its checkpoint: the LoRA values the device model starts from
  // are the checkpoint's.
  TrainerConfig first = c;
  first.max_steps_this_run = 7;
  const TrainerStepRun head = run_tiny_on<backend::Cuda>(first);
  const TrainerStepRun tail = run_tiny_on<backend::Cuda>(c, /*resume=*/true);
  fs::remove_all(c.output_dir);
  std::vector<double> joined = head.losses;
  joined.insert(joined.end(), tail.losses.begin(), tail.losses.end());
  CHECK(joined == gpu.losses);
  CHECK(tail.tensors.lora == gpu.tensors.lora);
  CHECK(tail.tensors.projector == gpu.tensors.projector);
}

TEST_CASE("the evaluation after each epoch runs on the device: the CPU run's eval loss and captions",
          "[trainer][cuda]") {
  // Two epochs of stage 1 and one of stage 2 with four val clips: every evaluation's loss (the device's, summed over
  // the supervised tokens without dropout) to 1e-5 of the CPU's, and the same greedy captions from the device KV cache.
  TrainerConfig c = trainer_step_config("eval");
  c.stages[0].epochs = 2;
  const auto val = test::tiny::clips(4, 10);
  std::vector<train::EvalResult> evals[2];
  int i = 0;
  for (const bool device : {false, true}) {
    fs::remove_all(c.output_dir);
    const auto r = device ? make_tiny_trainer_on<backend::Cuda>(c).train(test::tiny::clips(10), val)
                          : make_tiny_trainer_on<backend::Cpu>(c).train(test::tiny::clips(10), val);
    evals[i++] = r.evals;
  }
  fs::remove_all(c.output_dir);
  REQUIRE(evals[0].size() >= 2);  // after each epoch (early stopping may end a stage sooner)
  REQUIRE(evals[1].size() == evals[0].size());
  for (std::size_t e = 0; e < evals[0].size(); ++e) {
    INFO("evaluation " << e + 1 << ": cpu loss " << evals[0][e].eval_loss << ", gpu " << evals[1][e].eval_loss);
    CHECK(std::fabs(evals[1][e].eval_loss - evals[0][e].eval_loss) <= 1e-5 * std::fabs(evals[0][e].eval_loss));
    CHECK(evals[1][e].captions == evals[0][e].captions);
  }
}

TEST_CASE("the preset's gradient checkpointing reaches the device step and changes no bit of the run",
          "[trainer][cuda]") {
  // TrainerConfig::gradient_checkpointing (the preset's, through DecoderOptions) switches the device model to
  // recomputing each layer from its saved input; the recomputation runs the same kernels on the same values.
  const TrainerConfig plain = trainer_step_config("ckpt_plain");
  TrainerConfig ckpt = trainer_step_config("ckpt_on");
  ckpt.gradient_checkpointing = true;
  const TrainerStepRun without = run_tiny_on<backend::Cuda>(plain);
  fs::remove_all(plain.output_dir);
  const TrainerStepRun with = run_tiny_on<backend::Cuda>(ckpt);
  fs::remove_all(ckpt.output_dir);
  REQUIRE(with.losses.size() == 10);
  CHECK(with.losses == without.losses);
  CHECK(with.tensors.lora == without.tensors.lora);
  CHECK(with.tensors.projector == without.tensors.projector);
  CHECK(with.tensors.dropout_steps == without.tensors.dropout_steps);
}

TEST_CASE("the device step's memory: every step's record under the run's cap, a cap too small a named error",
          "[trainer][cuda]") {
  // Each step record carries the device allocator's stats: the cap is max_memory_gb, the peak within it.
  TrainerConfig c = trainer_step_config("memory");
  c.device_memory.max_memory_gb = 1.0;
  const TrainerStepRun run = run_tiny_on<backend::Cuda>(c);
  REQUIRE(run.losses.size() == 10);
  std::ifstream log(c.output_dir / "train_log.jsonl");
  std::string line;
  int steps = 0;
  while (std::getline(log, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j["type"] != "step") continue;
    ++steps;
    REQUIRE(j.contains("memory"));
    const MemoryStats m = memory_stats_from_json(j["memory"]);
    CHECK(m.cap_bytes == std::size_t{1} << 30);
    CHECK(m.peak_allocated_bytes > 0);
    CHECK(m.peak_allocated_bytes <= m.peak_reserved_bytes);
    CHECK(m.peak_reserved_bytes <= m.cap_bytes);
  }
  CHECK(steps == 10);
  fs::remove_all(c.output_dir);

  // A cap under the model's own weights: the first call stops with the allocator's error (the tensor named), not a
  // skipped step.
  namespace tiny = test::tiny;
  using D = model::Decoder<presets::Cpu::lora_r, presets::Cpu::lora_alpha>;
  model::DecoderOptions o;
  o.target_modules = {"q_proj", "v_proj"};
  D decoder(tiny::decoder_config(), model::random_decoder_weights(tiny::decoder_config(), 3), o);
  model::Mlp2xGelu projector(tiny::kVision, tiny::kHidden, 11);
  const train::TrainableTensors tensors(projector, decoder);
  train::DecoderStep<backend::Cuda, D> step(decoder, tensors, {.memory_cap_bytes = 4096});
  const std::vector<int> ids{3, 5, 8, 10};
  const model::SequenceBatch batch{1, 4, {1, 1, 1, 1}};
  const std::vector<int> labels{-100, 5, 8, 10};
  using Failure = train::DecoderStep<backend::Cuda, D>::DeviceFailure;
  CHECK_THROWS_AS(step.loss_and_backward(decoder.embed(ids), batch, labels, {}), Failure);
  try {
    step.loss_and_backward(decoder.embed(ids), batch, labels, {});
  } catch (const Failure& e) {
    CHECK_THAT(e.what(), Catch::Contains("out of device memory") && Catch::Contains("--max-memory-gb"));
  }
  CHECK_FALSE(step.take_step_memory().has_value());  // no step finished
}
