// Trainer: loss goes down, resume reproduces the loss curve, outputs load back, NaN and bad clips are skipped.
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include <vidlora/io/safetensors.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/schedule/policies.hpp>
#include <vidlora/schedule/rules.hpp>
#include <vidlora/schedule/scheduler.hpp>
#include <vidlora/train/trainer.hpp>

#include "tiny_captioning.hpp"

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

namespace tiny = test::tiny;

TrainerConfig tiny_trainer_config(const fs::path& out) { return tiny::two_stage_config(out); }

using TinyTrainer = tiny::Trainer<>;

struct Fresh {
  fs::path dir;
  explicit Fresh(const std::string& name) : dir(fs::temp_directory_path() / ("vidlora_trainer_" + name)) {
    fs::remove_all(dir);
  }
  ~Fresh() { fs::remove_all(dir); }
};

TinyTrainer make(
    const TrainerConfig& c, train::FeatureFn f = [](const train::Clip& clip) { return tiny::features(clip); }) {
  return tiny::make_trainer(c, std::move(f));
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

double mean(const std::vector<double>& v, std::size_t from, std::size_t to) {
  double s = 0;
  for (std::size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("two-stage training lowers the loss and writes outputs that load back", "[trainer]") {
  Fresh tmp("outputs");
  auto config = tiny_trainer_config(tmp.dir);
  config.stages[0].epochs = 3;
  config.stages[1].epochs = 5;
  auto trainer = make(config);
  const auto result = trainer.train(tiny::clips(24), tiny::clips(6, 24));
  // 24 clips / (2 x 2) = 6 steps per epoch, 8 epochs
  REQUIRE(result.steps == 48);
  REQUIRE(result.losses.size() == 48);
  REQUIRE(result.evals.size() == 8);
  CHECK(mean(result.losses, 42, 48) < 0.6 * mean(result.losses, 0, 6));
  CHECK(result.evals.back().eval_loss < result.evals.front().eval_loss);

  // The adapter holds the trainer's (best) LoRA factors; a fresh decoder loading it gives the same logits.
  const auto adapter = lora::load_peft_adapter(tmp.dir / "adapter");
  CHECK(adapter.spec.r == presets::Cpu::lora_r);
  CHECK(adapter.spec.lora_alpha == presets::Cpu::lora_alpha);
  REQUIRE(adapter.modules.size() == 2 * 7);
  const auto& q = adapter.modules.at("model.layers.1.self_attn.q_proj");
  CHECK(q.A == trainer.decoder().slot(1, "q_proj").lora().lora_A());
  CHECK(q.B == trainer.decoder().slot(1, "q_proj").lora().lora_B());
  CHECK(q.B.norm() > 0.0f);  // stage 2 moved B off zero

  model::DecoderOptions o;
  o.target_modules = config.target_modules;
  model::Decoder<presets::Cpu::lora_r, presets::Cpu::lora_alpha> fresh(
      tiny::decoder_config(), model::random_decoder_weights(tiny::decoder_config(), 3), o);
  fresh.load_adapter(io::SafetensorsFile::open(tmp.dir / "adapter" / "adapter_model.safetensors"));
  const std::vector<int> ids{3, 5, 8, 10, 11};
  const Matrix a = trainer.decoder().logits(trainer.decoder().forward(trainer.decoder().embed(ids), {1, 5, {}}, false));
  const Matrix b = fresh.logits(fresh.forward(fresh.embed(ids), {1, 5, {}}, false));
  CHECK((a - b).cwiseAbs().maxCoeff() == 0.0f);

  // Projector weights under HF names round-trip.
  model::Mlp2xGelu p(tiny::kVision, tiny::kHidden, 12345);
  train::load_projector(tmp.dir / "projector.safetensors", p);
  CHECK(p.linear_1().weight() == trainer.projector().linear_1().weight());
  CHECK(p.linear_2().bias() == trainer.projector().linear_2().bias());
  const auto proj = io::SafetensorsFile::open(tmp.dir / "projector.safetensors");
  CHECK(proj.contains("multi_modal_projector.linear_1.weight"));
  CHECK(proj.contains("multi_modal_projector.linear_2.bias"));

  CHECK(fs::exists(tmp.dir / "val_captions.jsonl"));
  CHECK(fs::exists(tmp.dir / "curves.svg"));
  CHECK(fs::exists(tmp.dir / "train_log.jsonl"));
}

TEST_CASE("resume after an interruption continues the identical loss curve", "[trainer]") {
  Fresh a("resume_a"), b("resume_b");
  std::vector<double> straight;
  std::optional<train::EvalResult> straight_best;
  {
    auto trainer = make(tiny_trainer_config(a.dir));
    const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16));
    straight = r.losses;
    straight_best = r.best;
  }
  REQUIRE(straight.size() == 16);  // 4 steps per epoch, 2 + 2 epochs
  auto config = tiny_trainer_config(b.dir);
  std::vector<double> resumed;
  for (long stop : {3L, 6L}) {  // stop inside stage 1, then inside stage 2
    config.max_steps_this_run = stop;
    auto trainer = make(config);
    const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16), /*resume=*/stop != 3);
    CHECK(r.status == train::TrainStatus::Interrupted);
    resumed.insert(resumed.end(), r.losses.begin(), r.losses.end());
  }
  config.max_steps_this_run = 0;
  {
    auto trainer = make(config);
    const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16), true);
    CHECK(r.status == train::TrainStatus::Finished);
    resumed.insert(resumed.end(), r.losses.begin(), r.losses.end());
    // The best evaluation survives the resumes, whichever epoch it came from.
    REQUIRE(straight_best.has_value());
    REQUIRE(r.best.has_value());
    CHECK(r.best->stage == straight_best->stage);
    CHECK(r.best->epoch == straight_best->epoch);
    CHECK(r.best->step == straight_best->step);
    CHECK(r.best->eval_loss == straight_best->eval_loss);
    CHECK(r.best->metrics.cider_d == straight_best->metrics.cider_d);
    CHECK(r.best->metrics.diversity.most_common == straight_best->metrics.diversity.most_common);
    CHECK(r.best->captions == straight_best->captions);
  }
  REQUIRE(resumed.size() == straight.size());
  for (std::size_t i = 0; i < straight.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(resumed[i] == straight[i]);  // bit-identical
  }
}

TEST_CASE("a stage that stopped early stays stopped when its checkpoint is resumed", "[trainer]") {
  // Stage 2 at learning rate 0: its second evaluation cannot beat its first, so patience 1 stops it after 2 of 4
  // epochs. The checkpoint written then is the run's last; resuming from it (what a crash before any later checkpoint
  // leaves, and what resuming a finished run does) must not train the stopped stage for another epoch.
  Fresh tmp("early_stop_resume");
  auto config = tiny_trainer_config(tmp.dir);
  config.stages[0].epochs = 1;
  config.stages[1].epochs = 4;
  config.stages[1].learning_rate = 0.0;
  config.early_stopping_metric = "eval_loss";
  config.patience = 1;
  long steps = 0;
  {
    auto trainer = make(config);
    const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16));
    REQUIRE(r.status == train::TrainStatus::EarlyStopped);
    REQUIRE(r.evals.size() == 3);  // stage 1's one, stage 2's two
    steps = static_cast<long>(r.losses.size());
    CHECK(steps == 3 * 4);  // 4 steps an epoch: stage 1's epoch and stage 2's two
  }
  auto trainer = make(config);
  const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16), /*resume=*/true);
  CHECK(r.losses.empty());  // no step of the stopped stage again
  CHECK(r.evals.empty());
}

TEST_CASE("resume at any step equals not stopping: losses, trained tensors and outputs", "[trainer][property]") {
  Fresh a("resume_any_a");
  std::vector<double> straight;
  Matrix straight_b, straight_w;
  std::string straight_captions;
  {
    auto trainer = make(tiny_trainer_config(a.dir));
    straight = trainer.train(tiny::clips(16), tiny::clips(4, 16)).losses;
    straight_b = trainer.decoder().slot(1, "v_proj").lora().lora_B();
    straight_w = trainer.projector().linear_2().weight();
    straight_captions = read_text(a.dir / "val_captions.jsonl");
  }
  REQUIRE(straight.size() == 16);
  for (long stop = 1; stop < 16; ++stop) {  // every step boundary, inside and between epochs and stages
    INFO("interrupted after step " << stop);
    Fresh b("resume_any_b");
    auto config = tiny_trainer_config(b.dir);
    config.max_steps_this_run = stop;
    std::vector<double> resumed;
    {
      auto trainer = make(config);
      const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16));
      REQUIRE(r.status == train::TrainStatus::Interrupted);
      resumed = r.losses;
    }
    config.max_steps_this_run = 0;
    auto trainer = make(config);
    const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16), /*resume=*/true);
    REQUIRE(r.status == train::TrainStatus::Finished);
    resumed.insert(resumed.end(), r.losses.begin(), r.losses.end());
    CHECK(resumed == straight);  // bit-identical
    CHECK(trainer.decoder().slot(1, "v_proj").lora().lora_B() == straight_b);
    CHECK(trainer.projector().linear_2().weight() == straight_w);
    CHECK(read_text(b.dir / "val_captions.jsonl") == straight_captions);
  }
}

TEST_CASE("resuming a finished run keeps its best evaluation", "[trainer]") {
  Fresh tmp("resume_best");
  const auto config = tiny_trainer_config(tmp.dir);
  std::optional<train::EvalResult> first;
  {
    auto trainer = make(config);
    const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16));
    REQUIRE(r.status == train::TrainStatus::Finished);
    first = r.best;
  }
  REQUIRE(first.has_value());
  auto trainer = make(config);
  const auto r = trainer.train(tiny::clips(16), tiny::clips(4, 16), /*resume=*/true);  // nothing left to train
  CHECK(r.status == train::TrainStatus::Finished);
  CHECK(r.losses.empty());
  REQUIRE(r.best.has_value());  // restored from the checkpoint, not re-evaluated
  CHECK(r.best->step == first->step);
  CHECK(r.best->eval_loss == first->eval_loss);
  CHECK(r.best->metrics.meteor == first->metrics.meteor);
  CHECK(r.best->captions == first->captions);
  CHECK(r.best->clip_index == first->clip_index);
}

TEST_CASE("a checkpoint that cannot be written stops the run with the file named and the last one intact",
          "[trainer]") {
  // A full disk, simulated per process: RLIMIT_FSIZE caps the size of any file this process writes, and with
  // SIGXFSZ ignored a write past it fails with EFBIG, as a write to a full disk fails with ENOSPC.
  Fresh tmp("disk_full");
  auto config = tiny_trainer_config(tmp.dir);
  config.max_steps_this_run = 2;
  {
    auto trainer = make(config);
    REQUIRE(trainer.train(tiny::clips(16), tiny::clips(4, 16)).status == train::TrainStatus::Interrupted);
  }
  const fs::path last = tmp.dir / "checkpoints" / "last.safetensors";
  REQUIRE(fs::exists(last));
  auto read_all = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string before = read_all(last);
  const auto checkpoint_bytes = static_cast<rlim_t>(before.size());

  struct rlimit saved {};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit cap = saved;
  cap.rlim_cur = checkpoint_bytes / 2;  // the logs fit, a parameter file does not
  REQUIRE(setrlimit(RLIMIT_FSIZE, &cap) == 0);
  std::string message;
  try {
    config.max_steps_this_run = 4;  // runs into the end of epoch 1: best.safetensors, then last.safetensors
    auto trainer = make(config);
    trainer.train(tiny::clips(16), tiny::clips(4, 16), /*resume=*/true);
  } catch (const Error& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);

  INFO(message);
  CHECK(message.find("File too large") != std::string::npos);  // the reason
  CHECK(message.find(tmp.dir.string()) != std::string::npos);  // and the file
  CHECK(message.find(".safetensors") != std::string::npos);
  CHECK(read_all(last) == before);                                     // the last checkpoint as it was
  for (const auto& entry : fs::recursive_directory_iterator(tmp.dir))  // no half-written files left
    CHECK(entry.path().extension() != ".tmp");

  config.max_steps_this_run = 0;  // room again: the run resumes from that checkpoint and finishes
  auto trainer = make(config);
  CHECK(trainer.train(tiny::clips(16), tiny::clips(4, 16), true).status == train::TrainStatus::Finished);
}

TEST_CASE("resume refuses a checkpoint of another configuration and names the field", "[trainer]") {
  Fresh tmp("refuse");
  auto config = tiny_trainer_config(tmp.dir);
  config.max_steps_this_run = 2;
  {
    auto trainer = make(config);
    trainer.train(tiny::clips(8), tiny::clips(2, 8));
  }
  config.batch_size = 1;
  auto trainer = make(config);
  CHECK_THROWS_WITH(trainer.train(tiny::clips(8), tiny::clips(2, 8), true),
                    Catch::Contains("clips per step (ranks × batch_size × "
                                    "gradient_accumulation_steps) is 4 (1 × 2 × 2) there but "
                                    "2 (1 × 1 × 2) now"));
}

TEST_CASE("a NaN loss skips its step and three in a row stop with the checkpoint intact", "[trainer]") {
  Fresh tmp("nan");
  auto config = tiny_trainer_config(tmp.dir);
  config.batch_size = 1;
  config.gradient_accumulation_steps = 1;
  config.stages[0].epochs = 1;
  config.stages[1].epochs = 1;
  {
    // clip_003's features are NaN: its step is skipped once per epoch, the others train.
    auto trainer = make(config, [](const train::Clip& c) {
      Matrix f = tiny::features(c);
      if (c.id == "clip_003") f(0, 0) = std::nanf("");
      return f;
    });
    const auto r = trainer.train(tiny::clips(6), tiny::clips(2, 6));
    CHECK(r.skipped_nan_steps == 2);
    REQUIRE(r.losses.size() == 12);
    CHECK(std::count_if(r.losses.begin(), r.losses.end(), [](double v) { return std::isnan(v); }) == 2);
    CHECK(all_finite(trainer.projector().linear_1().weight()));
    CHECK(r.status == train::TrainStatus::Finished);
  }
  // A good checkpoint after 2 steps, then a resumed run where every clip's loss is NaN.
  fs::remove_all(tmp.dir);
  config.max_steps_this_run = 2;
  {
    auto trainer = make(config);
    trainer.train(tiny::clips(6), tiny::clips(2, 6));
  }
  const fs::path ckpt = tmp.dir / "checkpoints" / "last.safetensors";
  auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string before = read(ckpt);
  config.max_steps_this_run = 0;
  config.checkpoint_every = 1;
  auto trainer = make(config, [](const train::Clip& c) {
    Matrix f = tiny::features(c);
    f(0, 0) = std::nanf("");
    return f;
  });
  const auto r = trainer.train(tiny::clips(6), tiny::clips(2, 6), true);
  CHECK(r.status == train::TrainStatus::NanStopped);
  CHECK(r.skipped_nan_steps == 3);
  CHECK(r.steps == 5);
  CHECK(read(ckpt) == before);
}

TEST_CASE("steps whose every clip was skipped are not NaN steps: three in a row do not stop the run", "[trainer]") {
  // One clip a step; five of the six training clips cannot be decoded, so five of each epoch's six steps have no
  // clip, at least three of them in a row whatever the shuffle: each is skipped (no loss, no update), but none is a
  // NaN loss, so max_nan_in_a_row (3) does not stop the run.
  Fresh tmp("empty_steps");
  auto config = tiny_trainer_config(tmp.dir);
  config.batch_size = 1;
  config.gradient_accumulation_steps = 1;
  config.stages[0].epochs = 1;
  config.stages[1].epochs = 1;
  auto trainer = make(config, [](const train::Clip& c) {
    const std::set<std::string> bad{"clip_000", "clip_001", "clip_002", "clip_003", "clip_005"};  // not the val clips
    if (bad.count(c.id)) throw Error(c.id + ": the video cannot be decoded");
    return tiny::features(c);
  });
  const auto r = trainer.train(tiny::clips(6), tiny::clips(2, 6));
  CHECK(r.status == train::TrainStatus::Finished);
  CHECK(r.skipped_clips.size() == 5);
  CHECK(r.skipped_nan_steps == 0);
  CHECK(r.skipped_empty_steps == 10);  // five a stage
  REQUIRE(r.losses.size() == 12);
  CHECK(std::count_if(r.losses.begin(), r.losses.end(), [](double v) { return std::isnan(v); }) == 10);
}

TEST_CASE("an epoch none of whose clips has features stops the run: nothing to train on", "[trainer]") {
  // Every training clip fails (a vision tower that fails on every clip, a data set of unreadable videos): the first
  // epoch's steps are all empty skips, and the run stops after it with an error naming the stage and the count,
  // instead of writing untrained outputs after every epoch of empty steps.
  Fresh tmp("no_features");
  auto config = tiny_trainer_config(tmp.dir);
  config.batch_size = 1;
  config.gradient_accumulation_steps = 1;
  auto trainer = make(config, [](const train::Clip& c) -> Matrix {
    if (c.id < "clip_006") throw Error(c.id + ": the video cannot be decoded");  // not the val clips
    return tiny::features(c);
  });
  CHECK_THROWS_WITH(trainer.train(tiny::clips(6), tiny::clips(2, 6)),
                    Catch::Contains("none of its 6 steps had a clip with features") &&
                        Catch::Contains("nothing to train on") && Catch::Contains("epoch 1"));
  CHECK_FALSE(std::filesystem::exists(tmp.dir / "adapter"));
}

TEST_CASE("a clip whose video cannot be decoded is skipped and named", "[trainer]") {
  Fresh tmp("badclip");
  auto config = tiny_trainer_config(tmp.dir);
  config.stages[1].epochs = 1;
  auto trainer = make(config, [](const train::Clip& c) {
    if (c.id == "clip_002") throw Error("video file videos/clip_002.mp4: no decodable frames");
    return tiny::features(c);
  });
  const auto r = trainer.train(tiny::clips(8), tiny::clips(2, 8));
  CHECK(r.status == train::TrainStatus::Finished);
  REQUIRE(r.skipped_clips.size() == 1);
  CHECK_THAT(r.skipped_clips[0], Catch::StartsWith("clip_002: video file videos/clip_002.mp4"));
  CHECK(r.steps == 3 * 2);
  std::ifstream log(tmp.dir / "train_log.jsonl");
  std::string all((std::istreambuf_iterator<char>(log)), {});
  CHECK_THAT(all, Catch::Contains("\"type\":\"skip\""));
}

TEST_CASE("a clip whose features have no rows (no visual tokens) is skipped and named", "[trainer]") {
  // As a clip that cannot be decoded: the CPU step would train it as text alone, the device projector refuses an
  // empty GEMM, so both builds leave it out the same way.
  Fresh tmp("emptyclip");
  auto config = tiny_trainer_config(tmp.dir);
  config.stages[1].epochs = 1;
  auto trainer = make(config, [](const train::Clip& c) {
    const Matrix f = tiny::features(c);
    return c.id == "clip_003" ? Matrix(Matrix(0, f.cols())) : f;
  });
  const auto r = trainer.train(tiny::clips(8), tiny::clips(2, 8));
  CHECK(r.status == train::TrainStatus::Finished);
  REQUIRE(r.skipped_clips.size() == 1);
  CHECK_THAT(r.skipped_clips[0], Catch::StartsWith("clip_003: no visual tokens"));
  CHECK(r.steps == 3 * 2);
}

TEST_CASE("the trainer scores METEOR on a plugged-in tokenisation and stops early on it", "[trainer][eval]") {
  Fresh tmp("meteor_morphemes");
  auto config = tiny_trainer_config(tmp.dir);
  config.stages[0].epochs = 1;
  config.stages[1].epochs = 2;
  config.early_stopping_metric = "meteor_morphemes";
  CHECK_THROWS_WITH(make(config), Catch::Contains("'meteor_morphemes' needs caption_metrics.morpheme_tokenizer"));
  config.caption_metrics.morpheme_tokenizer = eval::CharacterTokenizer{};  // any CaptionTokenizer (MeCab in use)
  auto trainer = make(config);
  const auto val = tiny::clips(6, 24);
  const auto result = trainer.train(tiny::clips(12), val);
  REQUIRE(result.evals.size() == 3);
  eval::CharacterTokenizer characters;
  double best = -1.0;
  for (const auto& ev : result.evals) {
    std::vector<std::vector<std::string>> refs;
    for (std::size_t i : ev.clip_index) refs.push_back({val[i].caption});
    CHECK(ev.metrics.meteor_morphemes == Approx(eval::meteor(ev.captions, refs, characters).meteor).margin(1e-12));
    CHECK(ev.metrics.meteor_morphemes_tokenizer == "characters");
    best = std::max(best, ev.metrics.meteor_morphemes);
  }
  REQUIRE(result.best.has_value());
  CHECK(result.best->metrics.meteor_morphemes == best);
  std::ifstream log(tmp.dir / "train_log.jsonl");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"meteor_morphemes\"") != std::string::npos);
}

namespace {
// A preset whose scheduler, learning rate and warmup differ from every other preset's.
struct CpuLinear : presets::Cpu {
  static constexpr std::string_view name = "CpuLinear";
  using lr_policy = schedule::Linear;
  static constexpr double learning_rate = 3e-3;
  static constexpr double warmup_ratio = 0.25;
};
}  // namespace

TEST_CASE("a run's learning rates follow Scheduler<P::lr_policy> at the recipe's stage 1 and the preset's stage 2",
          "[trainer][presets]") {
  Fresh tmp("schedule");
  TrainerConfig c = TrainerConfig::from_preset<CpuLinear>();
  c.stages[0].epochs = 1;  // fewer epochs keep the test short; rates and warmups stay the preset's / recipe's
  c.stages[1].epochs = 2;
  c.batch_size = 2;
  c.gradient_accumulation_steps = 2;
  c.seed = 5;
  c.output_dir = tmp.dir;
  c.progress = nullptr;
  Trainer<CpuLinear, model::Mlp2xGelu> trainer(c, tiny::decoder_config(),
                                               model::random_decoder_weights(tiny::decoder_config(), 3),
                                               model::Mlp2xGelu(tiny::kVision, tiny::kHidden, 11), tiny::codec(),
                                               [](const train::Clip& clip) { return tiny::features(clip); });
  const auto result = trainer.train(tiny::clips(16), {});  // 16 clips / (2 x 2) = 4 steps per epoch
  REQUIRE(result.steps == 12);
  std::map<int, std::vector<double>> lr_by_stage;
  std::ifstream log(tmp.dir / "train_log.jsonl");
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("type") == "step") lr_by_stage[j.at("stage").get<int>()].push_back(j.at("lr").get<double>());
  }
  REQUIRE(lr_by_stage.size() == 2);
  const std::vector<double>& stage1 = lr_by_stage.begin()->second;
  const std::vector<double>& stage2 = lr_by_stage.rbegin()->second;
  REQUIRE(stage1.size() == 4);
  REQUIRE(stage2.size() == 8);
  const schedule::Scheduler<schedule::Linear> s1({.base_lr = 2e-4,  // the recipe's stage 1
                                                  .warmup_steps = schedule::warmup_steps_for(0.1, 4),
                                                  .total_steps = 4});
  const schedule::Scheduler<schedule::Linear> s2({.base_lr = 3e-3,  // CpuLinear::learning_rate, warmup_ratio
                                                  .warmup_steps = schedule::warmup_steps_for(0.25, 8),
                                                  .total_steps = 8});
  REQUIRE(s2.warmup_steps() == 2);
  for (std::size_t k = 0; k < stage1.size(); ++k) CHECK(stage1[k] == s1.lr(static_cast<long>(k)));
  for (std::size_t k = 0; k < stage2.size(); ++k) CHECK(stage2[k] == s2.lr(static_cast<long>(k)));
  // Linear, not the Cpu preset's cosine: the two differ after warmup.
  const schedule::Scheduler<schedule::Cosine> cosine(s2.options());
  CHECK(stage2[4] != Approx(cosine.lr(4)).epsilon(1e-6));  // 2e-3 (linear) against 2.25e-3 (cosine)
}

TEST_CASE("the CPU trainer refuses a half-precision preset unless told to compute in fp32", "[trainer][presets]") {
  Fresh tmp("precision");
  TrainerConfig c = tiny_trainer_config(tmp.dir);
  c.precision = "bf16";
  CHECK_THROWS_WITH(make(c), Catch::Contains("precision 'bf16'") && Catch::Contains("fp32"));
  // TF32 is a device precision (GEMMs on tensor cores): the CPU trainer refuses it too, saying it runs fp32 only.
  c.precision = "tf32";
  CHECK_THROWS_WITH(make(c),
                    Catch::Contains("precision 'tf32'") && Catch::Contains("CPU trainer, which computes in fp32;"));
}

TEST_CASE("a bias-free projector (multimodal_projector_bias false) registers, saves and loads no bias tensors",
          "[trainer][projector]") {
  model::Mlp2xGelu p(6, 5, 3, /*bias=*/false);
  const train::ProjectorTensors pt = train::projector_tensors(p);
  CHECK(pt.weights.size() == 2);
  CHECK(pt.biases.empty());
  CHECK(pt.grad_biases.empty());
  CHECK(pt.absent_biases ==
        std::vector<std::string>{"multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_2.bias"});
  const fs::path dir = fs::temp_directory_path() / "vidlora_bias_free_projector";
  fs::create_directories(dir);
  train::save_projector(dir / "projector.safetensors", p);
  const auto f = io::SafetensorsFile::open(dir / "projector.safetensors");
  CHECK(f.contains("multi_modal_projector.linear_2.weight"));
  CHECK_FALSE(f.contains("multi_modal_projector.linear_1.bias"));
  CHECK_FALSE(f.contains("multi_modal_projector.linear_2.bias"));
  model::Mlp2xGelu q(6, 5, 99, false);
  train::load_projector(dir / "projector.safetensors", q);
  CHECK(q.linear_2().weight() == p.linear_2().weight());
  // A file with biases does not load into a bias-free projector: the error names the tensor.
  model::Mlp2xGelu with_bias(6, 5, 3, true);
  train::save_projector(dir / "biased.safetensors", with_bias);
  CHECK_THROWS_WITH(train::load_projector(dir / "biased.safetensors", q),
                    Catch::Contains("multi_modal_projector.linear_1.bias") && Catch::Contains("no bias"));
  fs::remove_all(dir);
}

TEST_CASE("a stage whose learning rate is 0 at every step is reported as training nothing", "[trainer][schedule]") {
  Fresh tmp("lr_zero_stage");
  TrainerConfig c = tiny_trainer_config(tmp.dir);
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 2;
  c.batch_size = 4;  // 4 clips: one step per epoch; stage 1 warms up over its one step (lr 0 there), stage 2 does not
  c.gradient_accumulation_steps = 1;
  std::ostringstream progress;
  c.progress = &progress;
  c.progress_newlines = true;
  auto t = make(c);
  t.train(tiny::clips(4), {});
  const std::string said = progress.str();
  CHECK_THAT(said, Catch::Contains("warning: " + c.stages[0].name +
                                   " has 1 optimizer step and its learning rate is 0 at each (1 warmup step): it "
                                   "trains nothing"));
  CHECK_THAT(said, !Catch::Contains("warning: " + c.stages[1].name));
}
