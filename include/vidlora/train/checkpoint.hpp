#pragma once
// The trainer's checkpoint: one safetensors file, written atomically, that a resumed run continues from bit for
// bit. Tensors: every trainable parameter (param/<name>, TrainableTensors::tensor_map) and the current stage's
// AdamW moments (adam/<name>/exp_avg, adam/<name>/exp_avg_sq). Metadata: "format": "vidlora" and
// "trainer_state", a JSON object with the position, the AdamW step counts, every LoRA layer's dropout step
// counter, the early-stopping state, the best score and evaluation, and the configuration fingerprint a resume
// must agree with ("config"), which names the base model (TrainerConfig::base_model_fingerprint) and the data
// (data_fingerprint) as well as the settings. Fields added since the first checkpoints are optional when read ("ranks"
// in the fingerprint, "best_result"), so older checkpoints still resume; one without the base model's or the data's
// fingerprint resumes with a warning that it cannot be checked.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/train_result.hpp>
#include <vidlora/train/trainer_config.hpp>

namespace vidlora::train {

// Where a run is, counted in optimizer steps: what a resume continues from.
struct TrainingPosition {
  std::size_t stage = 0;
  int epoch = 0;
  long step_in_epoch = 0;
  long stage_step =
      0;  // the schedule's position in the stage: steps taken, not those skipped for a loss-scale overflow
  long global_step = 0;
};

// The files under TrainerConfig::output_dir: the checkpoint a resume reads, and the best evaluation's parameters.
inline std::filesystem::path last_checkpoint_path(const std::filesystem::path& output_dir) {
  return output_dir / "checkpoints" / "last.safetensors";
}
inline std::filesystem::path best_parameters_path(const std::filesystem::path& output_dir) {
  return output_dir / "checkpoints" / "best.safetensors";
}

// The data a run trains and evaluates on, as a checkpoint records it: FNV-1a (64 bits) over every clip's id and
// caption, the training clips then the held-out ones, each in its order, with the counts. Another data set of the
// same size, other captions or another train / held-out split give another value.
inline std::string data_fingerprint(const std::vector<Clip>& train, const std::vector<Clip>& val) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  const auto add = [&](std::string_view bytes) {
    for (const unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
    h = (h ^ 0xffu) * 0x100000001b3ull;  // a byte no UTF-8 text holds ends each field: ("ab","c") != ("a","bc")
  };
  for (const auto* clips : {&train, &val}) {
    add(clips == &train ? "train" : "val");
    for (const Clip& c : *clips) {
      add(c.id);
      add(c.caption);
    }
  }
  return fmt::format("fnv1a64:{:016x} ({} train + {} val clips)", h, train.size(), val.size());
}

// The configuration fields a checkpoint must agree with, as strings. `ranks`: the data-parallel processes;
// `train_clips`: the training set's size; `data`: data_fingerprint of the run's clips ("" → not recorded).
template <presets::Preset P, lora::FrozenWeight Base, class Projector>
std::map<std::string, std::string> checkpoint_fingerprint(const TrainerConfig& config,
                                                          const model::DecoderConfig& decoder,
                                                          const Projector& projector, int ranks,
                                                          std::size_t train_clips, const std::string& data = {}) {
  std::map<std::string, std::string> f;
  if (!config.base_model_fingerprint.empty()) f["base_model"] = config.base_model_fingerprint;
  if (!config.prompt.empty()) f["prompt"] = config.prompt;
  if (!data.empty()) f["data"] = data;
  f["preset"] = config.preset;
  f["lora_r"] = std::to_string(P::lora_r);
  f["lora_alpha"] = std::to_string(P::lora_alpha);
  f["base"] = std::is_same_v<Base, lora::DenseWeight> ? "dense" : "4bit";
  f["lr_scheduler"] = std::string(P::lr_policy::name);
  if (!config.initial_adapter.empty()) f["initial_adapter"] = config.initial_adapter.string();
  f["num_frames"] = std::to_string(config.num_frames);
  f["frame_sampler"] = config.frame_sampler;
  f["precision"] = config.precision;
  f["batch_size"] = std::to_string(config.batch_size);
  f["gradient_accumulation_steps"] = std::to_string(config.gradient_accumulation_steps);
  f["ranks"] = std::to_string(ranks);  // with the two above: checked as their product (open_checkpoint)
  f["weight_decay"] = fmt::format("{}", config.weight_decay);
  f["max_grad_norm"] = fmt::format("{}", config.max_grad_norm);
  f["label_smoothing"] = fmt::format("{}", config.label_smoothing);
  f["lora_dropout"] = fmt::format("{}", config.lora_dropout);
  f["target_modules"] = fmt::format("{}", fmt::join(config.target_modules, ","));
  f["seed"] = std::to_string(config.seed);
  f["max_caption_tokens"] = std::to_string(config.max_caption_tokens);
  f["batch_invariant"] = config.batch_invariant ? "true" : "false";
  for (std::size_t s = 0; s < config.stages.size(); ++s) {
    const auto& st = config.stages[s];
    f[fmt::format("stage{}", s + 1)] =
        fmt::format("epochs={} lr={} warmup={} lora={}", st.epochs, st.learning_rate, st.warmup_ratio, st.train_lora);
  }
  f["decoder"] = fmt::format("hidden={} layers={} heads={} kv={} inter={} vocab={}", decoder.hidden_size,
                             decoder.num_hidden_layers, decoder.num_attention_heads, decoder.num_key_value_heads,
                             decoder.intermediate_size, decoder.vocab_size);
  f["projector"] = fmt::format("{}->{}", projector.in_features(), projector.out_features());
  f["train_clips"] = std::to_string(train_clips);
  return f;
}

// Every LoRA layer's dropout step counter, in the decoder's for_each_lora order, and back.
template <class Decoder>
std::vector<std::uint64_t> lora_dropout_steps(Decoder& decoder) {
  std::vector<std::uint64_t> steps;
  decoder.for_each_lora([&](const std::string&, auto& l) { steps.push_back(l.step()); });
  return steps;
}
template <class Decoder>
void restore_lora_dropout_steps(Decoder& decoder, const std::vector<std::uint64_t>& steps) {
  std::size_t i = 0;
  decoder.for_each_lora([&](const std::string&, auto& l) {
    if (i < steps.size()) l.set_step(steps[i++]);
  });
}

// The trainer state a checkpoint's metadata holds besides the optimizer's step counts.
struct TrainerState {
  TrainingPosition position;
  std::vector<std::uint64_t> dropout_steps;  // lora_dropout_steps
  EarlyStopping stopper;
  std::optional<double> best_score;  // the early-stopping metric of the best evaluation
  std::optional<EvalResult> best;
  std::map<std::string, std::string> fingerprint;  // checkpoint_fingerprint
  // optim::GradScaler::state_dict() (torch's keys; the empty object without loss scaling). Checkpoints written before
  // loss scaling existed have none: read back as the empty object.
  nlohmann::json grad_scaler = nlohmann::json::object();
};

// Writes a checkpoint: `parameters` (TrainableTensors::tensor_map), the optimizer's moments and step counts when
// there is one, and `state`.
inline void write_checkpoint(const std::filesystem::path& path, io::TensorMap parameters, const optim::AdamW* optimizer,
                             const TrainerState& state) {
  nlohmann::json adam = nlohmann::json::object();
  if (optimizer) {
    for (const auto& name : optimizer->parameter_names()) {
      const auto& st = optimizer->state(name);
      parameters.emplace("adam/" + name + "/exp_avg", io::TensorData::from_matrix(st.exp_avg));
      parameters.emplace("adam/" + name + "/exp_avg_sq", io::TensorData::from_matrix(st.exp_avg_sq));
      adam[name] = st.step;
    }
  }
  const EarlyStopping& stopper = state.stopper;
  const TrainingPosition& pos = state.position;
  nlohmann::json json = {
      {"stage", pos.stage},
      {"epoch", pos.epoch},
      {"step_in_epoch", pos.step_in_epoch},
      {"stage_step", pos.stage_step},
      {"global_step", pos.global_step},
      {"adam_steps", optimizer ? optimizer->steps_taken() : 0},
      {"adam_param_steps", adam},
      {"dropout_steps", state.dropout_steps},
      {"stopper",
       {{"best", stopper.best_score() ? nlohmann::json(*stopper.best_score()) : nlohmann::json(nullptr)},
        {"best_step", stopper.best_step()},
        {"best_evaluation", stopper.best_evaluation()},
        {"counter", stopper.patience_counter()},
        {"evaluations", stopper.evaluations()}}},
      {"best_score", state.best_score ? nlohmann::json(*state.best_score) : nlohmann::json(nullptr)},
      {"best_result", state.best ? eval_result_to_json(*state.best) : nlohmann::json(nullptr)},
      {"config", state.fingerprint},
      {"grad_scaler", state.grad_scaler}};
  io::write_safetensors(path, parameters, {{"format", "vidlora"}, {"trainer_state", json.dump()}});
}

// A checkpoint opened for --resume: its tensors and its trainer_state, and what could not be checked (a checkpoint
// written before it recorded the base model's or the data's fingerprint), one line each for the log.
struct Checkpoint {
  io::SafetensorsFile file;
  nlohmann::json state;
  std::vector<std::string> warnings = {};
};

// The trainer state of the checkpoint `file` (its "trainer_state" metadata); `path` names it in the error, after
// `context` (the caller's, e.g. "--resume: ").
inline nlohmann::json checkpoint_trainer_state(const io::SafetensorsFile& file, const std::filesystem::path& path,
                                               std::string_view context = {}) {
  const auto it = file.metadata().find("trainer_state");
  require(it != file.metadata().end(), "{}{} is not a vidlora trainer checkpoint (no trainer_state)", context,
          path.string());
  return nlohmann::json::parse(it->second);
}
// The configuration fingerprint the checkpoint at `path` was written with (checkpoint_fingerprint's fields).
inline std::map<std::string, std::string> checkpoint_configuration(const std::filesystem::path& path) {
  return checkpoint_trainer_state(io::SafetensorsFile::open(path), path)
      .at("config")
      .get<std::map<std::string, std::string>>();
}

// Opens the checkpoint at `path` and checks it against this run's `fingerprint`: every field must agree but the
// split of a step's clips into ranks × batch_size × gradient_accumulation_steps, whose product must.
inline Checkpoint open_checkpoint(const std::filesystem::path& path,
                                  const std::map<std::string, std::string>& fingerprint) {
  require(std::filesystem::exists(path), "--resume: no checkpoint at {}", path.string());
  auto f = io::SafetensorsFile::open(path);
  auto state = checkpoint_trainer_state(f, path, "--resume: ");
  const auto theirs = state.at("config").get<std::map<std::string, std::string>>();
  const auto& mine = fingerprint;
  // The data order, schedule and position count optimizer steps, so the clips per step must agree; how they
  // split into ranks, micro-batches and accumulation may change (a checkpoint of N ranks resumes on M).
  const auto field = [&](const std::map<std::string, std::string>& m, const char* k) {
    const auto at = m.find(k);
    return at == m.end() ? 1L : std::stol(at->second);  // checkpoints before data parallel: one rank
  };
  const auto split = [&](const std::map<std::string, std::string>& m) {
    const long r = field(m, "ranks"), b = field(m, "batch_size"), a = field(m, "gradient_accumulation_steps");
    return std::pair{r * b * a, fmt::format("{} ({} × {} × {})", r * b * a, r, b, a)};
  };
  require(split(theirs).first == split(mine).first,
          "--resume: the checkpoint {} was made with another configuration: clips per step (ranks × batch_size × "
          "gradient_accumulation_steps) is {} there but {} now",
          path.string(), split(theirs).second, split(mine).second);
  // Fields newer than the checkpoint format: a checkpoint written before them does not name them and resumes.
  const auto added_later = [](const std::string& k) {
    return k == "max_caption_tokens" || k == "batch_invariant" || k == "frame_sampler" || k == "prompt";
  };
  // What the run trains on: the base model and the data, each recorded when one side can name it.
  std::vector<std::string> warnings;
  const std::map<std::string, std::string_view> trained_on{
      {"base_model",
       "another base model (TrainerConfig::base_model_fingerprint; train_captioner: the model directory --model)"},
      {"data",
       "other data (the clips' ids and captions, train then held-out: another data set or another split; a video "
       "added, or removed or missing since, changes it too; an AI-Hub download's ids are its labels' paths below "
       "the data folder, so naming a folder above or below it changes them all)"}};
  for (const auto& [k, what] : trained_on) {
    const auto o = theirs.find(k), m = mine.find(k);
    if (o != theirs.end() && m != mine.end()) {
      require(o->second == m->second, "--resume: the checkpoint {} was trained on {}: {} is '{}' there but '{}' now",
              path.string(), what, k, o->second, m->second);
    } else if (o == theirs.end() && m != mine.end()) {
      warnings.push_back(fmt::format(
          "warning: the checkpoint {} records no {} fingerprint (it was written before checkpoints did): this resume "
          "cannot check that it trains on the same {}",
          path.string(), k, k == "data" ? "data" : "base model"));
    } else if (o != theirs.end()) {
      warnings.push_back(fmt::format(
          "warning: this run gives no {} fingerprint: this resume cannot check that it trains on the checkpoint's {}",
          k, k == "data" ? "data" : "base model"));
    }
  }
  for (const auto& [k, v] : mine) {
    if (k == "ranks" || k == "batch_size" || k == "gradient_accumulation_steps" || trained_on.count(k)) continue;
    const auto o = theirs.find(k);
    if (o == theirs.end() && added_later(k)) continue;
    require(o != theirs.end() && o->second == v,
            "--resume: the checkpoint {} was made with another configuration: {} is '{}' there but '{}' now",
            path.string(), k, o == theirs.end() ? std::string("(absent)") : o->second, v);
  }
  return Checkpoint{std::move(f), std::move(state), std::move(warnings)};
}

// The trainer state of an opened checkpoint; the early-stopping state goes into a stopper made with `stopping`.
inline TrainerState trainer_state_from_json(const nlohmann::json& state, const EarlyStoppingOptions& stopping) {
  TrainerState s{.position = {},
                 .dropout_steps = {},
                 .stopper = EarlyStopping(stopping),
                 .best_score = {},
                 .best = {},
                 .fingerprint = state.at("config").get<std::map<std::string, std::string>>()};
  s.position.stage = state.at("stage").get<std::size_t>();
  s.position.epoch = state.at("epoch").get<int>();
  s.position.step_in_epoch = state.at("step_in_epoch").get<long>();
  s.position.stage_step = state.at("stage_step").get<long>();
  s.position.global_step = state.at("global_step").get<long>();
  s.dropout_steps = state.at("dropout_steps").get<std::vector<std::uint64_t>>();
  const auto& st = state.at("stopper");
  s.stopper.restore(st.at("best").is_null() ? std::nullopt : std::optional<double>(st.at("best").get<double>()),
                    st.at("best_step").get<long>(), st.at("best_evaluation").get<long>(), st.at("counter").get<int>(),
                    st.at("evaluations").get<long>());
  if (!state.at("best_score").is_null()) s.best_score = state.at("best_score").get<double>();
  // The best evaluation so far, so that TrainResult::best survives a resume (checkpoints written before this
  // field existed have none: then only later evaluations can set it).
  if (state.contains("best_result") && !state.at("best_result").is_null())
    s.best = eval_result_from_json(state.at("best_result"));
  if (state.contains("grad_scaler")) s.grad_scaler = state.at("grad_scaler");
  return s;
}

// Restores the AdamW moments and step counts of the parameters `optimizer` steps that the checkpoint holds
// (a stage's fresh optimizer, built before the restore).
inline void restore_optimizer(optim::AdamW& optimizer, const Checkpoint& checkpoint) {
  const auto& f = checkpoint.file;
  const auto& steps = checkpoint.state.at("adam_param_steps");
  for (const auto& name : optimizer.parameter_names()) {
    if (!steps.contains(name)) continue;
    optim::AdamWState s{f.matrix("adam/" + name + "/exp_avg"), f.matrix("adam/" + name + "/exp_avg_sq"),
                        steps.at(name).get<long>()};
    optimizer.restore_state(name, std::move(s));
  }
  optimizer.set_steps_taken(checkpoint.state.at("adam_steps").get<long>());
}

}  // namespace vidlora::train
