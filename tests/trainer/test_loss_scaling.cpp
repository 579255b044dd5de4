// The Trainer's dynamic loss scaling (TrainerConfig::loss_scaler, optim::GradScaler): a power-of-two scale leaves
// every step's bits as they are without it, the scale grows and resumes on torch's schedule, overflowing gradients
// skip their step and halve the scale, and a NaN loss backs the scale off as torch's scaler does.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <fixtures.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/train/trainer.hpp>

#include "tiny_captioning.hpp"

using namespace vidlora;

namespace {

namespace tiny = test::tiny;

// The trainer tests' two stages (4 steps an epoch on 16 clips), with LoRA dropout.
TrainerConfig scaling_config(const std::filesystem::path& out) {
  TrainerConfig c = tiny::two_stage_config(out);
  c.lora_dropout = 0.1;
  return c;
}

// One clip a step, one epoch a stage (6 clips: 6 steps a stage), with or without loss scaling from torch's defaults.
TrainerConfig one_clip_steps_config(const std::filesystem::path& out, bool scaled) {
  TrainerConfig c = scaling_config(out);
  c.batch_size = 1;
  c.gradient_accumulation_steps = 1;
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 1;
  c.loss_scaler = {.enabled = scaled};
  return c;
}

// The records of one type in a run's train_log.jsonl, in order.
std::vector<nlohmann::json> log_records(const std::filesystem::path& out, const std::string& type) {
  std::ifstream in(out / "train_log.jsonl");
  REQUIRE(in.good());
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("type", "") == type) records.push_back(std::move(j));
  }
  return records;
}

struct ScaledRun {
  std::vector<double> losses;
  Matrix lora_b, projector_w;
  train::TrainResult result;
};

ScaledRun scaled_run(const TrainerConfig& c, bool resume = false) {
  auto trainer = tiny::make_trainer(c);
  ScaledRun r;
  r.result = trainer.train(tiny::clips(16), tiny::clips(4, 16), resume);
  r.losses = r.result.losses;
  r.lora_b = trainer.decoder().slot(1, "v_proj").lora().lora_B();
  r.projector_w = trainer.projector().linear_2().weight();
  return r;
}

}  // namespace

TEST_CASE("a loss-scaled run is the unscaled run bit for bit while its scale grows on torch's schedule",
          "[trainer][loss_scaling]") {
  test::TempDir a("scaling_plain"), b("scaling_scaled");
  auto plain = scaling_config(a.path);
  REQUIRE_FALSE(plain.loss_scaler.enabled);  // the Cpu preset is fp32: no scaling unless asked
  const ScaledRun unscaled = scaled_run(plain);
  auto config = scaling_config(b.path);
  config.loss_scaler = {.init_scale = 65536.0, .growth_interval = 3, .enabled = true};
  const ScaledRun scaled = scaled_run(config);
  REQUIRE(scaled.losses.size() == 16);  // 4 steps per epoch, 2 + 2 epochs
  CHECK(scaled.result.skipped_overflow_steps == 0);
  for (std::size_t i = 0; i < scaled.losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(scaled.losses[i] == unscaled.losses[i]);
  }
  CHECK(scaled.lora_b == unscaled.lora_b);
  CHECK(scaled.projector_w == unscaled.projector_w);
  CHECK(scaled.lora_b.norm() > 0.0f);
  // The scale after step k's update: ×2 after every 3 clean steps (tracker reset), as torch's _amp_update_scale_.
  const auto steps = log_records(b.path, "step");
  REQUIRE(steps.size() == 16);
  for (std::size_t k = 0; k < steps.size(); ++k) {
    INFO("step " << k + 1);
    CHECK(steps[k].at("loss_scale").get<double>() == 65536.0 * std::pow(2.0, static_cast<double>((k + 1) / 3)));
  }
  CHECK_FALSE(log_records(a.path, "step").front().contains("loss_scale"));
}

TEST_CASE("a resumed loss-scaled run continues its scale and growth tracker exactly", "[trainer][loss_scaling]") {
  test::TempDir a("scaling_straight"), b("scaling_resumed");
  auto config = scaling_config(a.path);
  config.loss_scaler = {.init_scale = 1024.0, .growth_interval = 3, .enabled = true};
  const ScaledRun straight = scaled_run(config);
  config.output_dir = b.path;
  std::vector<double> resumed;
  for (long stop : {4L, 5L}) {  // stop after steps 4 and 9: the tracker at 1 and 0 (growth at step 9)
    config.max_steps_this_run = stop;
    const ScaledRun part = scaled_run(config, /*resume=*/stop != 4);
    CHECK(part.result.status == train::TrainStatus::Interrupted);
    resumed.insert(resumed.end(), part.losses.begin(), part.losses.end());
  }
  config.max_steps_this_run = 0;
  const ScaledRun last = scaled_run(config, true);
  resumed.insert(resumed.end(), last.losses.begin(), last.losses.end());
  REQUIRE(resumed.size() == straight.losses.size());
  for (std::size_t i = 0; i < resumed.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(resumed[i] == straight.losses[i]);
  }
  CHECK(last.lora_b == straight.lora_b);
  // The resumed log's scales continue: step k's scale is 1024 · 2^(k / 3) in both.
  const auto steps = log_records(b.path, "step");
  REQUIRE(steps.size() == 16);
  for (std::size_t k = 0; k < steps.size(); ++k) {
    INFO("step " << k + 1);
    CHECK(steps[k].at("loss_scale").get<double>() == 1024.0 * std::pow(2.0, static_cast<double>((k + 1) / 3)));
  }
  // The checkpoint holds the scaler's state under torch's keys.
  const auto ckpt = io::SafetensorsFile::open(b.path / "checkpoints" / "last.safetensors");
  const auto state = nlohmann::json::parse(ckpt.metadata().at("trainer_state"));
  CHECK(state.at("grad_scaler").at("scale").get<double>() == 1024.0 * 32.0);  // 16 steps: 5 growths
  CHECK(state.at("grad_scaler").at("_growth_tracker").get<long>() == 1);
  CHECK(state.at("grad_scaler").at("growth_interval").get<long>() == 3);
}

// The tiny model with its final norm's weight × 1e6: logits (and the loss) a million times larger, and every gradient
// with them, so that a loss scale near float's largest power of two overflows them, as fp16's range does at 2^16.
tiny::Trainer<> loud_trainer(const TrainerConfig& c) {
  auto weights = model::random_decoder_weights(tiny::decoder_config(), 3);
  std::vector<float> norm = weights.read_float("model.norm.weight");
  for (float& w : norm) w *= 1e6f;
  weights.insert("model.norm.weight", {static_cast<std::int64_t>(norm.size())}, norm);
  return tiny::Trainer<>(
      c, tiny::decoder_config(), weights, model::Mlp2xGelu(tiny::kVision, tiny::kHidden, 11), tiny::codec(),
      [](const train::Clip& clip) { return tiny::features(clip); }, comm::Single{});
}

TEST_CASE("gradients that overflow at the loss scale skip their steps and halve it until they fit",
          "[trainer][loss_scaling]") {
  test::TempDir tmp("scaling_overflow");
  auto config = scaling_config(tmp.path);
  // The first step's gradient norm G without scaling. A scale s overflows some gradient element when
  // s·max|g| > FLT_MAX, and max|g| >= G / sqrt(n) for n gradient elements (n < 2^14 here): s = 2^12 · FLT_MAX / G
  // overflows at least 12 - 7 = 5 halvings in a row, more than max_nan_in_a_row (3), which an overflow must not
  // count against.
  double first_norm = 0.0;
  {
    test::TempDir probe("scaling_probe");
    auto c = config;
    c.output_dir = probe.path;
    c.max_steps_this_run = 1;
    auto t = loud_trainer(c);
    (void)t.train(tiny::clips(16), tiny::clips(4, 16));
    first_norm = log_records(probe.path, "step").at(0).at("grad_norm").get<double>();
  }
  REQUIRE(first_norm > 1e3);
  const int top = static_cast<int>(std::floor(std::log2(std::numeric_limits<float>::max() / first_norm))) + 12;
  REQUIRE(top <= 127);
  config.loss_scaler = {.init_scale = std::ldexp(1.0, top), .enabled = true};
  auto trainer = loud_trainer(config);
  const Matrix w0 = trainer.projector().linear_2().weight();
  const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16));
  CHECK(r.status == train::TrainStatus::Finished);
  CHECK(r.skipped_nan_steps == 0);
  const long skips = r.skipped_overflow_steps;
  REQUIRE(skips < 16);
  // Every step is one record, an overflow_skip or a step; replayed, each shows the scale torch's rules give: halved by
  // each skip, unchanged by a clean step (growth_interval 2000). A later batch may overflow again.
  const auto overflows = log_records(tmp.path, "overflow_skip");
  const auto steps = log_records(tmp.path, "step");
  CHECK(static_cast<long>(overflows.size()) == skips);
  REQUIRE(overflows.size() + steps.size() == 16);
  std::vector<const nlohmann::json*> by_step(16, nullptr);
  for (const auto* list : {&overflows, &steps})
    for (const auto& rec : *list) by_step.at(rec.at("step").get<std::size_t>() - 1) = &rec;
  // The learning rate of a stage's step is its scheduler's at the number of steps the stage has taken: a skipped step
  // does not advance the schedule (accelerate's rule under fp16), so a skip repeats the rate of the step after it.
  const auto stage_lr = [&config](std::size_t stage, long position) {
    const StageSettings& st = config.stages[stage];
    const long total = static_cast<long>(st.epochs) * 4;  // 16 clips, 4 per step
    const schedule::Scheduler<presets::Cpu::lr_policy> sched(
        {.base_lr = st.learning_rate,
         .warmup_steps = schedule::warmup_steps_for(st.warmup_ratio, total),
         .total_steps = total});
    return sched.lr(position);
  };
  double scale = std::ldexp(1.0, top);
  long leading = 0;  // the skips before the first clean step
  bool clean_seen = false;
  long position = 0;  // the schedule's position in the current stage
  for (std::size_t k = 0; k < by_step.size(); ++k) {
    INFO("step " << k + 1);
    REQUIRE(by_step[k] != nullptr);
    const bool skipped = by_step[k]->at("type") == "overflow_skip";
    if (skipped) scale /= 2.0;
    clean_seen = clean_seen || !skipped;
    if (!clean_seen) ++leading;
    CHECK(by_step[k]->at("loss_scale").get<double>() == scale);
    CHECK(std::isfinite(r.losses[k]));  // the loss itself was finite either way
    if (k == 8) position = 0;           // stage 2 starts at step 9
    CHECK(by_step[k]->at("lr").get<double>() == stage_lr(k < 8 ? 0 : 1, position));
    if (!skipped) ++position;
  }
  CHECK(leading > config.max_nan_in_a_row);  // an overflow is not a NaN step: the run went on
  CHECK(trainer.projector().linear_2().weight() != w0);

  // Stopped right after the skipped steps: nothing moved, and the optimizer never stepped.
  test::TempDir only("scaling_overflow_only");
  config.output_dir = only.path;
  config.max_steps_this_run = leading;
  auto stopped = loud_trainer(config);
  (void)stopped.train(tiny::clips(16), tiny::clips(4, 16));
  CHECK(stopped.projector().linear_2().weight() == w0);
  const auto ckpt = io::SafetensorsFile::open(only.path / "checkpoints" / "last.safetensors");
  const auto state = nlohmann::json::parse(ckpt.metadata().at("trainer_state"));
  CHECK(state.at("adam_steps").get<long>() == 0);
  CHECK(state.at("global_step").get<long>() == leading);
  CHECK(state.at("grad_scaler").at("scale").get<double>() == std::ldexp(1.0, top - static_cast<int>(leading)));
}

TEST_CASE("below a scale of 1, a gradient the unscale takes past FLT_MAX skips the step as an overflow",
          "[trainer][loss_scaling]") {
  // torch's scaler checks before it multiplies and would step on the Inf (optim/grad_scaler.hpp replays that); the
  // Trainer's policy skips the step and halves the scale instead, as its device path does from the clip norm.
  train::LossScaling scaling(optim::GradScalerOptions{.init_scale = 0.25});
  Matrix w = Matrix::Ones(1, 2), g = Matrix::Constant(1, 2, 1.0f);
  Matrix w2 = Matrix::Ones(2, 1), g2 = Matrix::Constant(2, 1, 1e38f);  // finite; x 4 is past FLT_MAX
  const std::vector<optim::ParamGroup> groups{{{{"w", &w, &g}}, 0.0, 1.0, "a"}, {{{"w2", &w2, &g2}}, 0.0, 1.0, "b"}};
  CHECK(scaling.unscale_overflowed(groups));
  CHECK(std::isinf(g2(0, 0)));
  const optim::GradScalerUpdate u = scaling.skip(/*unscaled=*/true);
  CHECK(u.skipped);
  CHECK(u.scale_before == 0.25f);
  CHECK(u.scale_after == 0.125f);
  // A clean step at the smaller scale unscales and steps.
  g = Matrix::Constant(1, 2, 1.0f);
  g2 = Matrix::Constant(2, 1, 1.0f);
  CHECK_FALSE(scaling.unscale_overflowed(groups));
  CHECK(g(0, 0) == 8.0f);
  CHECK(scaling.stepped() == 0.125);
}

TEST_CASE("a NaN loss under loss scaling is a NaN step that also halves the scale", "[trainer][loss_scaling]") {
  test::TempDir tmp("scaling_nan");
  const auto config = one_clip_steps_config(tmp.path, true);
  auto trainer = tiny::make_trainer(config, [](const train::Clip& c) {
    Matrix f = tiny::features(c);
    if (c.id == "clip_003") f(0, 0) = std::nanf("");
    return f;
  });
  const auto r = trainer.train(tiny::clips(6), tiny::clips(2, 6));
  CHECK(r.status == train::TrainStatus::Finished);
  CHECK(r.skipped_nan_steps == 2);  // clip_003 once per epoch
  CHECK(r.skipped_overflow_steps == 0);
  CHECK(log_records(tmp.path, "step").back().at("loss_scale").get<double>() == 65536.0 / 4.0);
  // The schedule is held back over each NaN step, as accelerate does when the scaler skipped the optimizer step: the
  // step after it takes the learning rate the NaN step would have had, i.e. the one a run without the NaN clip gives
  // at that step.
  test::TempDir clean_tmp("scaling_nan_clean");
  auto clean_config = config;
  clean_config.output_dir = clean_tmp.path;
  auto clean = tiny::make_trainer(clean_config);
  (void)clean.train(tiny::clips(6), tiny::clips(2, 6));
  std::map<long, nlohmann::json> clean_steps, steps;
  for (const auto& s : log_records(clean_tmp.path, "step")) clean_steps[s.at("step").get<long>()] = s;
  for (const auto& s : log_records(tmp.path, "step")) steps[s.at("step").get<long>()] = s;
  const auto nans = log_records(tmp.path, "nan_skip");
  REQUIRE(nans.size() == 2);
  int checked = 0;
  for (const auto& n : nans) {
    const long step = n.at("step").get<long>();
    INFO("NaN step " << step);
    if (!steps.count(step + 1) || steps.at(step + 1).at("stage") != n.at("stage")) continue;  // its stage's last step
    REQUIRE(clean_steps.count(step) == 1);
    CHECK(steps.at(step + 1).at("lr").get<double>() == clean_steps.at(step).at("lr").get<double>());
    CHECK(steps.at(step + 1).at("lr").get<double>() != clean_steps.at(step + 1).at("lr").get<double>());
    ++checked;
  }
  CHECK(checked >= 1);
}

TEST_CASE("a step whose every clip was skipped keeps the loss scale and the schedule", "[trainer][loss_scaling]") {
  // One clip a step; clip_003's features fail, so its step has no clip: a skipped step, as without loss scaling, that
  // neither halves the scale (there are no gradients for the scaler to find) nor holds the schedule back. The
  // learning rates and the scale of every other step are those of the same run without loss scaling / with the scale
  // of a run that never met the empty step.
  const auto run = [](const std::filesystem::path& out, bool scaled) {
    auto trainer = tiny::make_trainer(one_clip_steps_config(out, scaled), [](const train::Clip& c) {
      if (c.id == "clip_003") throw Error("clip_003: the video cannot be decoded");
      return tiny::features(c);
    });
    return trainer.train(tiny::clips(6), tiny::clips(2, 6));
  };
  test::TempDir scaled_tmp("scaling_empty"), plain_tmp("scaling_empty_plain");
  const auto scaled = run(scaled_tmp.path, true);
  const auto plain = run(plain_tmp.path, false);
  CHECK(scaled.status == train::TrainStatus::Finished);
  CHECK(scaled.skipped_clips.size() == 1);  // its features are tried once, then the clip is left out
  CHECK(scaled.skipped_empty_steps == plain.skipped_empty_steps);
  CHECK(scaled.skipped_empty_steps >= 1);
  CHECK(scaled.skipped_nan_steps == 0);  // no clip, no loss: not a NaN step
  CHECK(log_records(scaled_tmp.path, "empty_skip").size() == static_cast<std::size_t>(scaled.skipped_empty_steps));
  CHECK(scaled.skipped_overflow_steps == 0);
  const auto scaled_steps = log_records(scaled_tmp.path, "step"), plain_steps = log_records(plain_tmp.path, "step");
  REQUIRE(scaled_steps.size() == plain_steps.size());
  for (std::size_t k = 0; k < scaled_steps.size(); ++k) {
    INFO("step " << scaled_steps[k].at("step"));
    CHECK(scaled_steps[k].at("step") == plain_steps[k].at("step"));
    CHECK(scaled_steps[k].at("lr").get<double>() == plain_steps[k].at("lr").get<double>());
    CHECK(scaled_steps[k].at("loss_scale").get<double>() == 65536.0);
  }
}

TEST_CASE("resuming across loss scaling on and off says what it does with the saved scale", "[trainer][loss_scaling]") {
  test::TempDir tmp("scaling_switch");
  auto config = scaling_config(tmp.path);
  config.max_steps_this_run = 2;
  (void)scaled_run(config);  // no scaling
  std::ostringstream said;
  config.progress = &said;
  config.progress_newlines = true;
  config.loss_scaler = {.init_scale = 256.0, .enabled = true};
  (void)scaled_run(config, true);
  CHECK_THAT(said.str(), Catch::Contains("holds no loss-scaler state") && Catch::Contains("starting at scale 256"));
  said.str("");
  config.loss_scaler.enabled = false;
  (void)scaled_run(config, true);
  CHECK_THAT(said.str(), Catch::Contains("loss scale (256) is not used"));
}

TEST_CASE("a communication failure inside a step stops the run: it is never taken for a NaN loss", "[trainer]") {
  // A device step's sums over the ranks start inside its last micro-batch (DecoderStep<Cuda>::
  // overlap_sums_with_next_call); a comm::CommError from there is a vidlora::Error like the loss's refusal of NaN
  // logits, which the Trainer counts as a skipped NaN step and goes on. It must stop the run instead, with its
  // message. A projector whose third forward throws one stands in for it here.
  struct FailingProjector : model::Mlp2xGelu {
    using model::Mlp2xGelu::Mlp2xGelu;
    int calls = 0;
    Matrix forward(const Matrix& x) {
      if (++calls == 3)
        throw comm::CommError("rank 0 of 2: step 3: gradients (LoRA), layer 1: rank 1 closed its connection");
      return model::Mlp2xGelu::forward(x);
    }
  };
  test::TempDir tmp("comm_failure_in_step");
  auto config = scaling_config(tmp.path);
  config.batch_size = 1;
  config.gradient_accumulation_steps = 1;
  const auto weights = model::random_decoder_weights(tiny::decoder_config(), 3);
  Trainer<presets::Cpu, FailingProjector, lora::DenseWeight> trainer(
      config, tiny::decoder_config(), weights, FailingProjector(tiny::kVision, tiny::kHidden, 11), tiny::codec(),
      [](const train::Clip& c) { return tiny::features(c); });
  CHECK_THROWS_AS(trainer.train(tiny::clips(6), tiny::clips(2, 6)), comm::CommError);
  CHECK(trainer.projector().calls == 3);  // stopped there, not after a skipped step
}
