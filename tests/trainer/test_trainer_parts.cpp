// The Trainer's parts on their own: TrainableTensors (names, order, bias shadows, param/<name> round trip) and the
// checkpoint file (state and AdamW moments round trip, older checkpoints without "ranks" / "best_result", the
// fingerprint check naming the field).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/param_groups.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/checkpoint.hpp>
#include <vidlora/train/evaluation.hpp>
#include <vidlora/train/trainable_tensors.hpp>

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

model::Decoder<4, 8> tiny_decoder() {
  const auto c = model::llama_config(16, 32, 2, 2, 1, 20);
  model::DecoderOptions o;
  o.target_modules = {"q_proj", "v_proj"};
  return model::Decoder<4, 8>(c, model::random_decoder_weights(c, 3), o);
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_trainer_parts_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> names(const std::vector<optim::Parameter>& ps) {
  std::vector<std::string> n;
  for (const auto& p : ps) n.push_back(p.name);
  return n;
}

}  // namespace

TEST_CASE("trainable tensors: HF projector names, then each LoRA layer's A and B in decoder order", "[trainer]") {
  auto decoder = tiny_decoder();
  model::Mlp2xGelu projector(6, 16, /*seed=*/5);
  train::TrainableTensors t(projector, decoder);
  CHECK(names(t.projector()) ==
        std::vector<std::string>{"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.weight",
                                 "multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_2.bias"});
  REQUIRE(t.lora().size() == 8);  // 2 layers × (q_proj, v_proj) × (A, B)
  CHECK(t.lora()[0].name == decoder.module_path(0, "q_proj") + ".lora_A.weight");
  CHECK(t.lora()[1].name == decoder.module_path(0, "q_proj") + ".lora_B.weight");
  CHECK(t.for_stage(false).size() == 4);
  CHECK(t.for_stage(true).size() == 12);
  // The optimizer sees each bias as a [1, n] row; push() writes a stepped row back into the column vector.
  const optim::Parameter& bias = t.projector()[2];
  REQUIRE(bias.value->rows() == 1);
  REQUIRE(bias.value->cols() == 16);
  CHECK(bias.value->row(0).transpose() == projector.linear_1().bias());
  (*bias.value)(0, 3) = 42.0f;
  t.push();
  CHECK(projector.linear_1().bias()(3) == 42.0f);
  projector.linear_1().grad_bias().setConstant(0.5f);
  t.pull_grads();
  CHECK(bias.grad->isConstant(0.5f));
}

TEST_CASE("trainable tensors: param/<name> maps load back into another model, shapes checked", "[trainer]") {
  const fs::path dir = fresh_dir("tensors");
  auto decoder = tiny_decoder();
  model::Mlp2xGelu projector(6, 16, /*seed=*/5);
  train::TrainableTensors t(projector, decoder);
  decoder.for_each_lora([](const std::string&, auto& l) { l.lora_B().setRandom(); });
  projector.linear_2().bias().setRandom();
  t.save(dir / "best.safetensors");

  auto other_decoder = tiny_decoder();
  model::Mlp2xGelu other_projector(6, 16, /*seed=*/9);
  train::TrainableTensors other(other_projector, other_decoder);
  other.load(io::SafetensorsFile::open(dir / "best.safetensors"));
  CHECK(other_projector.linear_1().weight() == projector.linear_1().weight());
  CHECK(other_projector.linear_2().bias() == projector.linear_2().bias());
  for (std::size_t i = 0; i < t.lora().size(); ++i) CHECK(*other.lora()[i].value == *t.lora()[i].value);

  model::Mlp2xGelu wider(7, 16, /*seed=*/5);
  train::TrainableTensors mismatched(wider, other_decoder);
  CHECK_THROWS_WITH(mismatched.load(io::SafetensorsFile::open(dir / "best.safetensors")),
                    Catch::Contains("multi_modal_projector.linear_1.weight is [16, 6], expected [16, 7]"));
}

TEST_CASE("checkpoint: the trainer state and the AdamW moments come back as written", "[trainer]") {
  const fs::path dir = fresh_dir("checkpoint");
  auto decoder = tiny_decoder();
  model::Mlp2xGelu projector(6, 16, /*seed=*/5);
  train::TrainableTensors t(projector, decoder);
  const auto params = t.for_stage(true);
  optim::AdamW adam(optim::transformers_groups(params, 0.01));
  for (const auto& p : params) p.grad->setConstant(0.25f);
  adam.step(1e-3);
  adam.step(1e-3);

  train::TrainerConfig config = train::TrainerConfig::from_preset<presets::Cpu>();
  config.early_stopping_metric = "cider_d";
  const auto fingerprint =
      train::checkpoint_fingerprint<presets::Cpu, lora::DenseWeight>(config, decoder.config(), projector, 1, 10);
  CHECK(fingerprint.at("projector") == "6->16");
  CHECK(fingerprint.at("base") == "dense");
  const train::EarlyStoppingOptions stopping{.patience = 3, .threshold = 0.0, .mode = train::Mode::Max};
  train::EarlyStopping stopper(stopping);
  stopper(0.5, 4);
  stopper(0.25, 8);  // no improvement: counter 1
  train::EvalResult best;
  best.stage = 2;
  best.epoch = 1;
  best.step = 4;
  best.eval_loss = std::nan("");  // written as null, read back as NaN
  best.captions = {"red circle", "blue square"};
  best.clip_index = {0, 2};
  best.metrics.cider_d = 0.5;
  const train::TrainerState state{
      .position = {.stage = 1, .epoch = 2, .step_in_epoch = 3, .stage_step = 9, .global_step = 12},
      .dropout_steps = {7, 8, 9, 10},
      .stopper = stopper,
      .best_score = 0.5,
      .best = best,
      .fingerprint = fingerprint};
  const fs::path path = train::last_checkpoint_path(dir);
  fs::create_directories(path.parent_path());
  train::write_checkpoint(path, t.tensor_map(), &adam, state);

  const train::Checkpoint c = train::open_checkpoint(path, fingerprint);
  const train::TrainerState back = train::trainer_state_from_json(c.state, stopping);
  CHECK(back.position.stage == 1);
  CHECK(back.position.epoch == 2);
  CHECK(back.position.step_in_epoch == 3);
  CHECK(back.position.stage_step == 9);
  CHECK(back.position.global_step == 12);
  CHECK(back.dropout_steps == std::vector<std::uint64_t>{7, 8, 9, 10});
  CHECK(back.stopper.best_score() == std::optional<double>(0.5));
  CHECK(back.stopper.best_step() == 4);
  CHECK(back.stopper.patience_counter() == 1);
  CHECK(back.stopper.evaluations() == 2);
  CHECK(back.best_score == std::optional<double>(0.5));
  REQUIRE(back.best.has_value());
  CHECK(std::isnan(back.best->eval_loss));
  CHECK(back.best->captions == best.captions);
  CHECK(back.best->clip_index == best.clip_index);
  CHECK(back.best->metrics.cider_d == 0.5);
  CHECK(back.fingerprint == fingerprint);
  // A caption limit or batch rounding other than the checkpoint's would change the data or the sums: refused.
  train::TrainerConfig shorter = config;
  shorter.max_caption_tokens = 64;
  CHECK_THROWS_WITH(train::open_checkpoint(path, train::checkpoint_fingerprint<presets::Cpu, lora::DenseWeight>(
                                                     shorter, decoder.config(), projector, 1, 10)),
                    Catch::Contains("max_caption_tokens is '1024' there but '64' now"));
  train::TrainerConfig float32_batches = config;
  float32_batches.batch_invariant = false;
  CHECK_THROWS_WITH(train::open_checkpoint(path, train::checkpoint_fingerprint<presets::Cpu, lora::DenseWeight>(
                                                     float32_batches, decoder.config(), projector, 1, 10)),
                    Catch::Contains("batch_invariant is 'true' there but 'false' now"));
  CHECK(c.file.metadata().at("format") == "vidlora");

  optim::AdamW fresh(optim::transformers_groups(params, 0.01));
  train::restore_optimizer(fresh, c);
  CHECK(fresh.steps_taken() == 2);
  for (const auto& name : adam.parameter_names()) {
    CHECK(fresh.state(name).step == 2);
    CHECK(fresh.state(name).exp_avg == adam.state(name).exp_avg);
    CHECK(fresh.state(name).exp_avg_sq == adam.state(name).exp_avg_sq);
  }
}

TEST_CASE("checkpoint: an older one (no ranks, no best_result) opens, another configuration is refused by name",
          "[trainer]") {
  const fs::path dir = fresh_dir("older");
  std::map<std::string, std::string> mine{
      {"seed", "0"}, {"batch_size", "2"}, {"gradient_accumulation_steps", "2"}, {"ranks", "1"}};
  std::map<std::string, std::string> older{{"seed", "0"}, {"batch_size", "2"}, {"gradient_accumulation_steps", "2"}};
  const nlohmann::json state = {
      {"stage", 0},
      {"epoch", 0},
      {"step_in_epoch", 1},
      {"stage_step", 1},
      {"global_step", 1},
      {"adam_steps", 0},
      {"adam_param_steps", nlohmann::json::object()},
      {"dropout_steps", std::vector<std::uint64_t>{}},
      {"stopper", {{"best", nullptr}, {"best_step", -1}, {"best_evaluation", -1}, {"counter", 0}, {"evaluations", 0}}},
      {"best_score", nullptr},
      {"config", older}};
  io::TensorMap tensors;
  tensors.emplace("param/x", io::TensorData::from_matrix(Matrix::Zero(1, 1)));
  io::write_safetensors(dir / "old.safetensors", tensors, {{"format", "vidlora"}, {"trainer_state", state.dump()}});
  const train::Checkpoint c = train::open_checkpoint(dir / "old.safetensors", mine);  // "ranks" absent: one
  const train::TrainerState s = train::trainer_state_from_json(c.state, {});
  CHECK(s.position.global_step == 1);
  CHECK_FALSE(s.best.has_value());
  CHECK_FALSE(s.best_score.has_value());

  // Two ranks of batch 1 take the same clips per step (2 × 1 × 2 = 1 × 2 × 2) ...
  std::map<std::string, std::string> two_ranks = mine;
  two_ranks["ranks"] = "2";
  two_ranks["batch_size"] = "1";
  CHECK_NOTHROW(train::open_checkpoint(dir / "old.safetensors", two_ranks));
  // ... two ranks of batch 2 do not.
  two_ranks["batch_size"] = "2";
  CHECK_THROWS_WITH(train::open_checkpoint(dir / "old.safetensors", two_ranks),
                    Catch::Contains("clips per step (ranks × batch_size × gradient_accumulation_steps) is 4 (1 × 2 × "
                                    "2) there but 8 (2 × 2 × 2) now"));
  // Fields newer than the checkpoint: absent there, they do not stop the resume; present, they must agree.
  std::map<std::string, std::string> newer = mine;
  newer["max_caption_tokens"] = "64";
  newer["batch_invariant"] = "true";
  CHECK_NOTHROW(train::open_checkpoint(dir / "old.safetensors", newer));
  std::map<std::string, std::string> reseeded = mine;
  reseeded["seed"] = "1";
  CHECK_THROWS_WITH(train::open_checkpoint(dir / "old.safetensors", reseeded),
                    Catch::Contains("seed is '0' there but '1' now"));
  CHECK_THROWS_WITH(train::open_checkpoint(dir / "missing.safetensors", mine),
                    Catch::Contains("--resume: no checkpoint at"));
}

TEST_CASE("checkpoint: a resume on another base model or other data is refused, naming it and both values",
          "[trainer]") {
  const fs::path dir = fresh_dir("trained_on");
  auto decoder = tiny_decoder();
  model::Mlp2xGelu projector(6, 16, /*seed=*/5);
  train::TrainableTensors t(projector, decoder);
  const auto clip = [](std::string id, std::string caption) {
    train::Clip c;
    c.id = std::move(id);
    c.caption = std::move(caption);
    return c;
  };
  const std::vector<train::Clip> train_clips{clip("a", "red circle"), clip("b", "blue")};
  const std::vector<train::Clip> val_clips{clip("c", "green square")};
  const std::string data = train::data_fingerprint(train_clips, val_clips);
  CHECK_THAT(data, Catch::Matches("fnv1a64:[0-9a-f]{16} \\(2 train \\+ 1 val clips\\)"));
  // Same ids and sizes, one caption changed; the same clips split otherwise; a boundary moved between fields.
  auto recaptioned = train_clips;
  recaptioned[1].caption = "blue square";
  CHECK(train::data_fingerprint(recaptioned, val_clips) != data);
  CHECK(train::data_fingerprint({train_clips[0]}, {train_clips[1], val_clips[0]}) != data);
  auto moved = train_clips;
  moved[0] = clip("ar", "ed circle");
  CHECK(train::data_fingerprint(moved, val_clips) != data);
  CHECK(train::data_fingerprint(train_clips, val_clips) == data);

  train::TrainerConfig config = train::TrainerConfig::from_preset<presets::Cpu>();
  config.base_model_fingerprint = "model-A";
  const auto fingerprint_of = [&](const train::TrainerConfig& c, const std::string& d) {
    return train::checkpoint_fingerprint<presets::Cpu, lora::DenseWeight>(c, decoder.config(), projector, 1, 2, d);
  };
  const auto mine = fingerprint_of(config, data);
  CHECK(mine.at("base_model") == "model-A");
  CHECK(mine.at("data") == data);
  const fs::path path = dir / "last.safetensors";
  train::write_checkpoint(path, t.tensor_map(), nullptr,
                          {.position = {},
                           .dropout_steps = {},
                           .stopper = train::EarlyStopping(),
                           .best_score = {},
                           .best = {},
                           .fingerprint = mine});
  CHECK(train::open_checkpoint(path, mine).warnings.empty());

  train::TrainerConfig other_model = config;
  other_model.base_model_fingerprint = "model-B";
  CHECK_THROWS_WITH(train::open_checkpoint(path, fingerprint_of(other_model, data)),
                    Catch::Contains("was trained on another base model") &&
                        Catch::Contains("base_model is 'model-A' there but 'model-B' now"));
  const std::string other_data = train::data_fingerprint(recaptioned, val_clips);
  CHECK_THROWS_WITH(train::open_checkpoint(path, fingerprint_of(config, other_data)),
                    Catch::Contains("was trained on other data") &&
                        Catch::Contains(fmt::format("data is '{}' there but '{}' now", data, other_data)));

  // The question a Hugging Face run asks (--prompt): another one is refused by name; none recorded resumes.
  train::TrainerConfig asked = config;
  asked.prompt = "Describe the video.";
  const auto with_prompt = fingerprint_of(asked, data);
  CHECK(with_prompt.at("prompt") == "Describe the video.");
  CHECK_FALSE(mine.contains("prompt"));
  const fs::path prompt_path = dir / "prompt.safetensors";
  train::write_checkpoint(prompt_path, t.tensor_map(), nullptr,
                          {.position = {},
                           .dropout_steps = {},
                           .stopper = train::EarlyStopping(),
                           .best_score = {},
                           .best = {},
                           .fingerprint = with_prompt});
  train::TrainerConfig reasked = config;
  reasked.prompt = "What happens?";
  CHECK_THROWS_WITH(train::open_checkpoint(prompt_path, fingerprint_of(reasked, data)),
                    Catch::Contains("prompt is 'Describe the video.' there but 'What happens?' now"));
  CHECK(train::open_checkpoint(prompt_path, with_prompt).warnings.empty());
  CHECK(train::open_checkpoint(path, with_prompt).warnings.empty());  // written before prompts were recorded

  // A checkpoint written before either fingerprint resumes, saying what it cannot check.
  auto older = mine;
  older.erase("base_model");
  older.erase("data");
  const fs::path old_path = dir / "old.safetensors";
  train::write_checkpoint(old_path, t.tensor_map(), nullptr,
                          {.position = {},
                           .dropout_steps = {},
                           .stopper = train::EarlyStopping(),
                           .best_score = {},
                           .best = {},
                           .fingerprint = older});
  const train::Checkpoint c = train::open_checkpoint(old_path, mine);
  REQUIRE(c.warnings.size() == 2);
  CHECK_THAT(c.warnings[0], Catch::Contains("records no base_model fingerprint") &&
                                Catch::Contains("cannot check that it trains on the same base model"));
  CHECK_THAT(c.warnings[1], Catch::Contains("records no data fingerprint") &&
                                Catch::Contains("cannot check that it trains on the same data"));
}

TEST_CASE("evaluation: the early-stopping metric's direction and value", "[trainer]") {
  train::TrainerConfig config;
  CHECK(train::early_stopping_mode(config) == train::Mode::Min);
  config.early_stopping_metric = "meteor";
  CHECK(train::early_stopping_mode(config) == train::Mode::Max);
  config.early_stopping_metric = "meteor_morphemes";
  CHECK_THROWS_WITH(train::early_stopping_mode(config), Catch::Contains("needs caption_metrics.morpheme_tokenizer"));
  config.early_stopping_metric = "bleu";
  CHECK_THROWS_WITH(train::early_stopping_mode(config), Catch::Contains("unknown early_stopping_metric 'bleu'"));
  train::EvalResult ev;
  ev.eval_loss = 1.5;
  ev.metrics.rouge_l = 0.25;
  CHECK(train::early_stopping_value("eval_loss", ev) == 1.5);
  CHECK(train::early_stopping_value("rouge_l", ev) == 0.25);
  CHECK(train::improves(train::Mode::Min, 1.0, 2.0));
  CHECK_FALSE(train::improves(train::Mode::Max, 1.0, 2.0));
  CHECK_FALSE(train::improves(train::Mode::Min, std::nan(""), 2.0));
}
