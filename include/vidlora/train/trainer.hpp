#pragma once
// Trainer<Preset, Projector, Base>: the two-stage LLaVA-style captioner training loop.
//
//   stage 1: projector only (decoder frozen; its LoRA factors exist but are neither stepped nor saved)
//   stage 2: LoRA on the preset's target modules + projector
// Each stage: its epochs, learning rate and warmup ratio (TrainerConfig::stages, from the recipe's stage 1
// and the preset's stage 2), Scheduler<P::lr_policy>, AdamW with transformers' decay groups (weight decay on
// everything but biases / norms), clip_grad_norm(max_grad_norm), label smoothing, batch_size ×
// gradient_accumulation_steps micro-batches normalised by the step's supervised-token count
// (CrossEntropyOptions::total_valid_tokens), LoRA dropout, NF4 base when load_in_4bit.
// After each epoch: eval loss, generated captions for the val clips, caption metrics, diversity,
// early stopping (eval loss by default), best parameters kept, mode-collapse warning.
// Checkpoints (one safetensors file, written atomically) every N steps and at each epoch end;
// resume restores parameters, AdamW moments, LoRA dropout counters and the position, so the loss
// curve continues exactly. A NaN/Inf loss skips the step; three in a row stop the run (the last
// good checkpoint stays). A clip whose features cannot be computed is skipped and logged.
// Data parallel (Comm = comm::Mpi, docs/distributed.md): each rank reads its shard of every step's clips
// (comm/shard.hpp), the step's token count and the gradients are summed over the ranks, evaluation is sharded
// and scored once on rank 0; rank 0 alone writes checkpoints, logs, progress and outputs.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <vidlora/comm/communicator.hpp>
#include <vidlora/comm/gradient_buckets.hpp>
#include <vidlora/comm/shard.hpp>
#include <vidlora/comm/single.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/eval/caption_metrics.hpp>
#include <vidlora/eval/caption_metrics_json.hpp>
#include <vidlora/eval/diversity.hpp>
#include <vidlora/io/atomic_file.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/splice.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/optim/param_groups.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/quant/quantized_weight.hpp>
#include <vidlora/schedule/rules.hpp>
#include <vidlora/schedule/scheduler.hpp>
#include <vidlora/train/clip_gradient_sum.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/generation.hpp>
#include <vidlora/train/progress.hpp>
#include <vidlora/train/training_log.hpp>

namespace vidlora::train {

// Set by a SIGINT handler (the example programs install one); the trainer checks it between steps.
inline std::atomic<bool>& interrupt_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

struct StageSettings {
  std::string name;
  bool train_lora = false;
  int epochs = 1;
  double learning_rate = 1e-4;
  double warmup_ratio = 0.0;
};

// Run-time configuration, defaulted from a preset (from_preset) and adjustable before training.
// The learning-rate policy and the LoRA rank / alpha are the preset's types and constants (Trainer<P> runs
// Scheduler<P::lr_policy> and Decoder<P::lora_r, P::lora_alpha>), so they are not fields here.
struct TrainerConfig {
  std::string preset;
  std::vector<StageSettings> stages;  // stage 1: the recipe's (P::stage1); stage 2: the preset's lr and warmup
  int batch_size = 1;
  int gradient_accumulation_steps = 1;
  int num_frames = 8;              // frames sampled per clip; the caller's FeatureFn samples this many
  std::string precision = "fp32";  // "fp32", "fp16" or "bf16" (presets::precision_of<P>); the CPU trainer: fp32
  double weight_decay = 0.01;
  double max_grad_norm = 1.0;
  double label_smoothing = 0.0;
  double lora_dropout = 0.0;
  std::vector<std::string> target_modules;
  bool load_in_4bit = false;
  bool gradient_checkpointing = false;
  std::uint64_t seed = 0;
  // evaluation
  int patience = 5;
  std::string early_stopping_metric = "eval_loss";  // or a metric: meteor, cider_d, bleu4, rouge_l, unique_ratio,
                                                    // meteor_morphemes (needs caption_metrics.morpheme_tokenizer)
  double collapse_threshold = 0.5;
  // Tokenisation of the evaluation metrics; morpheme_tokenizer adds METEOR on morphemes, e.g.
  // eval::CachingTokenizer<eval::MecabKoTokenizer> for the Korean METEOR users report (docs/eval.md).
  eval::CaptionMetricsOptions caption_metrics{};
  GenerationOptions generation{};
  // outputs
  std::filesystem::path output_dir = "vidlora_out";
  long checkpoint_every = 0;      // optimizer steps; 0: only at epoch ends
  int max_caption_tokens = 1024;  // longer captions are truncated (then EOS), with one report line per clip
  long max_steps_this_run = 0;    // > 0: save a checkpoint and stop (as Ctrl-C) after this many steps of this process
  int max_nan_in_a_row = 3;
  // Each clip its own micro-batch and the step's gradients summed in float64 (train/clip_gradient_sum.hpp): the
  // step's gradient, so the run, does not depend on how its clips are split over ranks and micro-batches
  // (1 rank × batch 4 = 2 ranks × batch 2, bit for bit; LoRA dropout masks too). false: batch_size clips per
  // micro-batch, gradients summed in float32 (splits differ by rounding, docs/distributed.md).
  bool batch_invariant = true;
  std::string base_model_name_or_path;  // written into the PEFT adapter_config.json ("" → null)
  // A PEFT adapter directory (e.g. trained with PEFT in Python) the run starts from: its lora_A / lora_B,
  // lora_alpha and rsLoRA replace the fresh initialisation and the preset's alpha (the adapter written at the
  // end keeps them). Its r must be P::lora_r and its modules exactly the run's LoRA layers; otherwise an
  // error names the difference. Empty: fresh LoRA (Kaiming-uniform A, zero B).
  std::filesystem::path initial_adapter{};
  std::ostream* progress = &std::cerr;  // nullptr: silent
  bool progress_newlines = false;       // true: one line per step (logs); false: '\r' updates

  // Every preset field that a run reads: stage 1 from the recipe (P::stage1), stage 2 from the preset
  // (presets::stage2_of<P>: P::learning_rate, P::warmup_ratio), and the preset's batch × accumulation,
  // frames, precision, label smoothing, patience, weight decay, clipping, dropout, target set, 4-bit base and
  // gradient checkpointing. tests/trainer/test_trainer_config.cpp compares each field with its P:: constant.
  template <class P>
  static TrainerConfig from_preset() {
    static_assert(presets::check_preset<P>());
    TrainerConfig c;
    c.preset = std::string(P::name);
    for (const presets::StageConfig& s : {presets::stage1_of<P>(), presets::stage2_of<P>()})
      c.stages.push_back({std::string(s.name), s.train_lora, s.num_epochs, s.learning_rate, s.warmup_ratio});
    c.batch_size = P::batch_size;
    c.gradient_accumulation_steps = P::gradient_accumulation_steps;
    c.num_frames = P::num_frames;
    c.precision = std::string(presets::precision_of<P>());
    c.weight_decay = P::weight_decay;
    c.max_grad_norm = P::max_grad_norm;
    c.label_smoothing = P::label_smoothing;
    c.lora_dropout = P::lora_dropout;
    for (auto m : P::target_set::modules) c.target_modules.emplace_back(m);
    c.load_in_4bit = P::load_in_4bit;
    c.gradient_checkpointing = P::gradient_checkpointing;
    c.patience = P::patience;
    return c;
  }
};

// Text side of the model: tokenizer functions and the prompt (holding the video placeholder).
struct TextCodec {
  std::function<std::vector<int>(const std::string&)> encode;  // caption text -> ids (no BOS/EOS)
  std::function<std::string(const std::vector<int>&)> decode;  // ids -> text (specials dropped)
  std::vector<int> prompt_ids;                                 // the rendered prompt with one placeholder token
  int placeholder_id = 0;
  int eos_id = -1;
  int pad_id = 0;
};

// Features of one clip [visual tokens, vision hidden]; throws when the clip cannot be decoded.
using FeatureFn = std::function<Matrix(const Clip&)>;

enum class TrainStatus { Finished, EarlyStopped, Interrupted, NanStopped };
inline std::string_view to_string(TrainStatus s) {
  switch (s) {
    case TrainStatus::Finished: return "finished";
    case TrainStatus::EarlyStopped: return "early-stopped";
    case TrainStatus::Interrupted: return "interrupted";
    case TrainStatus::NanStopped: return "stopped after repeated NaN losses";
  }
  return "?";
}

struct EvalResult {
  int stage = 0, epoch = 0;
  long step = 0;
  double eval_loss = 0.0;
  eval::CaptionMetrics metrics{};
  std::vector<std::string> captions;  // one per val clip (skipped clips excluded)
  std::vector<std::size_t> clip_index;
  bool collapsed = false;
};

struct TrainResult {
  TrainStatus status = TrainStatus::Finished;
  long steps = 0;              // global optimizer steps done (restored ones included)
  std::vector<double> losses;  // step losses of this process (NaN for skipped steps)
  long skipped_nan_steps = 0;
  std::vector<std::string> skipped_clips;  // clips whose features failed ("id: reason")
  std::vector<EvalResult> evals;
  std::optional<EvalResult> best;
};

namespace detail {

// Bias vectors are Eigen column vectors; the optimizer sees [1, n] row-matrix shadows.
struct BiasShadow {
  Vector* value;
  Vector* grad;
  Matrix v, g;
  void pull() {
    v = value->transpose();
    g = grad->transpose();
  }
  void push() { *value = v.row(0).transpose(); }
};

}  // namespace detail

// Named trainable tensors of a projector, with HF (LLaVA) key names.
struct ProjectorTensors {
  std::vector<std::pair<std::string, Matrix*>> weights, grad_weights;
  std::vector<std::pair<std::string, Vector*>> biases, grad_biases;
  std::vector<std::string> absent_biases;  // a bias-free projector's bias names (a file holding one is refused)
};
inline ProjectorTensors projector_tensors(model::Mlp2xGelu& p) {
  ProjectorTensors t;
  int k = 1;
  for (model::Linear* l : {&p.linear_1(), &p.linear_2()}) {
    const std::string n = fmt::format("multi_modal_projector.linear_{}.", k++);
    t.weights.emplace_back(n + "weight", &l->weight());
    t.grad_weights.emplace_back(n + "weight", &l->grad_weight());
    if (!l->has_bias()) {  // multimodal_projector_bias false: no bias tensor to train or save
      t.absent_biases.push_back(n + "bias");
      continue;
    }
    t.biases.emplace_back(n + "bias", &l->bias());
    t.grad_biases.emplace_back(n + "bias", &l->grad_bias());
  }
  return t;
}
inline ProjectorTensors projector_tensors(model::Linear& l) {
  ProjectorTensors t;
  t.weights.emplace_back("multi_modal_projector.linear_1.weight", &l.weight());
  t.grad_weights.emplace_back("multi_modal_projector.linear_1.weight", &l.grad_weight());
  if (!l.has_bias()) {
    t.absent_biases.push_back("multi_modal_projector.linear_1.bias");
    return t;
  }
  t.biases.emplace_back("multi_modal_projector.linear_1.bias", &l.bias());
  t.grad_biases.emplace_back("multi_modal_projector.linear_1.bias", &l.grad_bias());
  return t;
}

// Writes the projector's weights with HF key names (multi_modal_projector.linear_1.weight …).
template <class P>
void save_projector(const std::filesystem::path& path, P& projector) {
  io::TensorMap t;
  const ProjectorTensors pt = projector_tensors(projector);
  for (const auto& [name, m] : pt.weights) t.emplace(name, io::TensorData::from_matrix(*m));
  for (const auto& [name, v] : pt.biases) t.emplace(name, io::TensorData::from_vector(*v));
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  io::write_safetensors(path, t, {{"format", "pt"}});
}
template <class P>
void load_projector(const std::filesystem::path& path, P& projector) {
  const auto f = io::SafetensorsFile::open(path);
  const ProjectorTensors pt = projector_tensors(projector);
  for (const auto& [name, m] : pt.weights) {
    const Matrix x = f.matrix(name);
    require(x.rows() == m->rows() && x.cols() == m->cols(), "load_projector {}: {} is {}, expected {}", path.string(),
            name, shape_string(x), shape_string(*m));
    *m = x;
  }
  for (const auto& name : pt.absent_biases)
    require(!f.contains(name),
            "load_projector {}: the file has {} but the projector has no bias "
            "(multimodal_projector_bias: false)",
            path.string(), name);
  for (const auto& [name, v] : pt.biases) {
    const Vector x = f.vector(name);
    require(x.size() == v->size(), "load_projector {}: {} has {} values, expected {}", path.string(), name, x.size(),
            v->size());
    *v = x;
  }
}

template <presets::Preset P, class ProjectorT = model::Mlp2xGelu,
          lora::FrozenWeight Base = std::conditional_t<P::load_in_4bit, quant::NF4Weight, lora::DenseWeight>,
          comm::Communicator Comm = comm::Single>
class Trainer {
  static_assert(Comm::buffers == comm::Buffers::Host,
                "Trainer: the CPU trainer sums host buffers: use comm::Single, comm::Mpi or comm::AnyCommunicator "
                "(comm::Nccl sums device buffers, for the CUDA trainer)");

 public:
  using preset_type = P;
  using communicator_type = Comm;
  using decoder_type = model::Decoder<P::lora_r, P::lora_alpha, Base>;
  using projector_type = ProjectorT;

  // Builds the decoder from `weights` with LoRA slots on config.target_modules.
  // `comm`: the ranks this trainer is one of (default: one process).
  template <model::TensorSource S>
  Trainer(TrainerConfig config, const model::DecoderConfig& decoder_config, const S& weights, ProjectorT projector,
          TextCodec codec, FeatureFn features, Comm comm = Comm{})
      : config_(std::move(config)),
        decoder_(decoder_config, weights, decoder_options(config_)),
        projector_(std::move(projector)),
        codec_(std::move(codec)),
        features_(std::move(features)),
        comm_(std::move(comm)) {
    local_out_ = config_.progress;
    if (comm_.rank() != 0) config_.progress = nullptr;  // progress and reports from rank 0 only
    check_config();
    const ProjectorTensors pt = projector_tensors(projector_);
    for (std::size_t i = 0; i < pt.weights.size(); ++i)
      proj_params_.push_back({pt.weights[i].first, pt.weights[i].second, pt.grad_weights[i].second});
    shadows_.reserve(pt.biases.size());
    for (std::size_t i = 0; i < pt.biases.size(); ++i) {
      shadows_.push_back({pt.biases[i].second, pt.grad_biases[i].second, {}, {}});
      shadows_.back().pull();
    }
    for (std::size_t i = 0; i < pt.biases.size(); ++i)
      proj_params_.push_back({pt.biases[i].first, &shadows_[i].v, &shadows_[i].g});
    decoder_.for_each_lora([&](const std::string& path, typename decoder_type::lora_type& l) {
      lora_params_.push_back({path + ".lora_A.weight", &l.lora_A(), &l.grad_A()});
      lora_params_.push_back({path + ".lora_B.weight", &l.lora_B(), &l.grad_B()});
    });
    if (!config_.initial_adapter.empty()) load_initial_adapter();
  }

  Trainer(const Trainer&) = delete;  // parameters are referenced by address
  Trainer& operator=(const Trainer&) = delete;

  decoder_type& decoder() { return decoder_; }
  ProjectorT& projector() { return projector_; }
  const TrainerConfig& config() const { return config_; }
  Comm& communicator() { return comm_; }
  std::filesystem::path checkpoint_path() const { return config_.output_dir / "checkpoints" / "last.safetensors"; }
  std::filesystem::path best_path() const { return config_.output_dir / "checkpoints" / "best.safetensors"; }

  // The configuration fields a checkpoint must agree with, as strings.
  std::map<std::string, std::string> fingerprint() const {
    std::map<std::string, std::string> f;
    f["preset"] = config_.preset;
    f["lora_r"] = std::to_string(P::lora_r);
    f["lora_alpha"] = std::to_string(P::lora_alpha);
    f["base"] = std::is_same_v<Base, lora::DenseWeight> ? "dense" : "4bit";
    f["lr_scheduler"] = std::string(P::lr_policy::name);
    if (!config_.initial_adapter.empty()) f["initial_adapter"] = config_.initial_adapter.string();
    f["num_frames"] = std::to_string(config_.num_frames);
    f["precision"] = config_.precision;
    f["batch_size"] = std::to_string(config_.batch_size);
    f["gradient_accumulation_steps"] = std::to_string(config_.gradient_accumulation_steps);
    f["ranks"] = std::to_string(comm_.size());  // with the two above: checked as their product (load_checkpoint)
    f["weight_decay"] = fmt::format("{}", config_.weight_decay);
    f["max_grad_norm"] = fmt::format("{}", config_.max_grad_norm);
    f["label_smoothing"] = fmt::format("{}", config_.label_smoothing);
    f["lora_dropout"] = fmt::format("{}", config_.lora_dropout);
    f["target_modules"] = fmt::format("{}", fmt::join(config_.target_modules, ","));
    f["seed"] = std::to_string(config_.seed);
    for (std::size_t s = 0; s < config_.stages.size(); ++s) {
      const auto& st = config_.stages[s];
      f[fmt::format("stage{}", s + 1)] =
          fmt::format("epochs={} lr={} warmup={} lora={}", st.epochs, st.learning_rate, st.warmup_ratio, st.train_lora);
    }
    const auto& dc = decoder_.config();
    f["decoder"] =
        fmt::format("hidden={} layers={} heads={} kv={} inter={} vocab={}", dc.hidden_size, dc.num_hidden_layers,
                    dc.num_attention_heads, dc.num_key_value_heads, dc.intermediate_size, dc.vocab_size);
    f["projector"] = fmt::format("{}->{}", projector_.in_features(), projector_.out_features());
    f["train_clips"] = std::to_string(train_.size());
    return f;
  }

  // Trains on `train` and evaluates on `val`. resume: continue from checkpoint_path().
  TrainResult train(std::vector<Clip> train, std::vector<Clip> val, bool resume = false) {
    train_ = std::move(train);
    val_ = std::move(val);
    require(!train_.empty(), "Trainer: no training clips");
    result_ = {};
    pos_ = {};
    nan_streak_ = 0;
    best_.reset();
    best_score_.reset();
    stop_requested_ = false;
    rank_tokens_.assign(static_cast<std::size_t>(comm_.size()), 0.0);
    rank_seconds_.assign(static_cast<std::size_t>(comm_.size()), 0.0);
    if (comm_.rank() == 0) std::filesystem::create_directories(config_.output_dir / "checkpoints");
    std::optional<nlohmann::json> restored;
    if (resume) {
      restored = load_checkpoint(checkpoint_path());
    } else if (comm_.rank() == 0) {
      std::filesystem::remove(best_path());  // a previous run's best must not become this run's output
    }
    if (comm_.rank() == 0)
      log_.emplace(config_.output_dir / "train_log.jsonl",
                   JsonlLogOptions{.resume_from_step = restored ? pos_.global_step : -1});
    started_ = std::chrono::steady_clock::now();
    steps_this_run_ = 0;
    total_steps_ = 0;
    for (std::size_t s = 0; s < config_.stages.size(); ++s) total_steps_ += stage_steps(s);

    for (std::size_t s = pos_.stage; s < config_.stages.size(); ++s) {
      const StageSettings& st = config_.stages[s];
      if (st.epochs <= 0) continue;
      const bool fresh_stage = !(restored && s == pos_.stage);
      if (fresh_stage) {
        pos_.stage = s;
        pos_.epoch = 0;
        pos_.step_in_epoch = 0;
        pos_.stage_step = 0;
        stopper_ = EarlyStopping({.patience = config_.patience, .threshold = 0.0, .mode = metric_mode()});
      }
      build_optimizer(s);
      if (!fresh_stage) restore_optimizer(*restored);
      restored.reset();
      const long per_epoch = steps_per_epoch();
      const long total = static_cast<long>(st.epochs) * per_epoch;
      schedule::ScheduleOptions so{.base_lr = st.learning_rate,
                                   .warmup_steps = schedule::warmup_steps_for(st.warmup_ratio, total),
                                   .total_steps = total};
      const schedule::Scheduler<typename P::lr_policy> sched(so);
      const auto lr_of = [&sched](long k) { return sched.lr(k); };
      bool stop_stage = false;
      for (int e = pos_.epoch; e < st.epochs && !stop_stage; ++e) {
        pos_.epoch = e;
        const std::vector<std::size_t> order = epoch_order(s, e);
        for (long k = pos_.step_in_epoch; k < per_epoch; ++k) {
          pos_.step_in_epoch = k;
          const double lr = lr_of(pos_.stage_step);
          const bool ok = train_step(order, k, lr, static_cast<int>(s), e, st.epochs);
          if (!ok && nan_streak_ >= config_.max_nan_in_a_row) {
            say(fmt::format("{} NaN/Inf losses in a row: stopping; the last good checkpoint ({}) is kept", nan_streak_,
                            checkpoint_path().string()));
            result_.status = TrainStatus::NanStopped;
            return finish();
          }
          pos_.step_in_epoch = k + 1;
          if (ok && config_.checkpoint_every > 0 && pos_.global_step % config_.checkpoint_every == 0)
            save_checkpoint(checkpoint_path());
          if ((comm_.size() == 1 ? interrupt_requested().load() : stop_requested_) ||
              (config_.max_steps_this_run > 0 && steps_this_run_ >= config_.max_steps_this_run)) {
            save_checkpoint(checkpoint_path());
            say(fmt::format("interrupted: checkpoint saved to {}; continue with --resume", checkpoint_path().string()));
            result_.status = TrainStatus::Interrupted;
            return finish();
          }
        }
        // end of epoch
        if (val_.empty()) {
          pos_.epoch = e + 1;
          pos_.step_in_epoch = 0;
          save_checkpoint(checkpoint_path());
          continue;
        }
        const EvalResult ev = evaluate(static_cast<int>(s) + 1, e + 1);
        const double score = metric_value(ev);
        const bool stop = stopper_(score, pos_.global_step);
        if (stopper_.last_was_best()) {
          if (!best_score_ || better(score, *best_score_)) {
            best_score_ = score;
            best_ = ev;
            save_params(best_path());
            write_val_captions(ev);
          }
        }
        pos_.epoch = e + 1;
        pos_.step_in_epoch = 0;
        save_checkpoint(checkpoint_path());
        if (stop) {
          say(fmt::format("early stopping in {}: {} did not improve for {} evaluations", st.name,
                          config_.early_stopping_metric, config_.patience));
          result_.status = TrainStatus::EarlyStopped;
          stop_stage = true;
        }
      }
      pos_.stage = s + 1;
      pos_.epoch = 0;
      pos_.step_in_epoch = 0;
      pos_.stage_step = 0;
    }
    if (result_.status != TrainStatus::EarlyStopped) result_.status = TrainStatus::Finished;
    return finish();
  }

  // Eval loss, captions and metrics over the val clips with the current parameters.
  EvalResult evaluate(int stage = 0, int epoch = 0) {
    EvalResult ev;
    ev.stage = stage;
    ev.epoch = epoch;
    ev.step = pos_.global_step;
    double loss_sum = 0.0;
    long valid = 0;
    loss::CrossEntropyOptions ce;
    ce.label_smoothing = config_.label_smoothing;
    std::vector<std::vector<std::string>> refs;
    std::vector<double> clip_loss;  // per clip, summed in clip order on rank 0 when sharded
    std::vector<long> clip_valid;
    for (std::size_t i = 0; i < val_.size(); ++i) {
      if (!comm::owns_eval_clip(i, comm_.rank(), comm_.size())) continue;
      const Matrix* feats = features_of(val_[i]);
      if (!feats) continue;
      const Matrix visual = projector_.apply(*feats);
      const auto answer = answer_ids(val_[i]);
      const auto seq = model::splice_visual_tokens<float>(codec_.prompt_ids, answer, codec_.placeholder_id, visual,
                                                          decoder_.embed_tokens());
      const auto batch = model::collate<float>({seq}, decoder_.embed_tokens(), codec_.pad_id);
      const Matrix hidden = decoder_.forward(batch.embeds, batch.batch, false);
      const auto targets = model::next_token_targets(batch.labels, batch.batch);
      const auto r = loss::lm_head_cross_entropy<float>(hidden, decoder_.head_weight(), targets, ce);
      loss_sum += r.loss_sum;
      valid += r.valid_tokens;
      clip_loss.push_back(r.loss_sum);
      clip_valid.push_back(r.valid_tokens);
      ev.captions.push_back(caption(visual));
      ev.clip_index.push_back(i);
      refs.push_back({val_[i].caption});
    }
    if (comm_.size() > 1) gather_evaluation(ev, refs, clip_loss, clip_valid, loss_sum, valid);
    ev.eval_loss = valid > 0 ? loss_sum / static_cast<double>(valid) : std::nan("");
    if (comm_.rank() == 0 && !ev.captions.empty())
      ev.metrics = eval::caption_metrics(ev.captions, refs, config_.caption_metrics);
    const auto collapse = eval::check_mode_collapse(ev.metrics.diversity, config_.collapse_threshold);
    ev.collapsed = collapse.collapsed;
    if (comm_.size() > 1) {  // rank 0's result on every rank: the same early-stopping decisions everywhere
      std::string text = comm_.rank() == 0
                             ? eval_result_to_json(ev).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                             : std::string();
      comm_.broadcast(text, fmt::format("the evaluation after step {}", pos_.global_step));
      if (comm_.rank() != 0) ev = eval_result_from_json(nlohmann::json::parse(text));
    }
    if (collapse.collapsed) say("warning: " + collapse.message);
    if (log_) {
      EvalRecord rec{
          .stage = stage, .epoch = epoch, .step = pos_.global_step, .eval_loss = ev.eval_loss, .metrics = {}};
      for (const auto& [name, value] : eval::caption_score_values(ev.metrics)) rec.metrics[name] = value;
      rec.metrics["mode_collapse"] = ev.collapsed ? 1.0 : 0.0;
      log_->write(rec);
    }
    say(fmt::format("eval stage {} epoch {}: loss {:.4f} | METEOR {:.4f} CIDEr-D {:.4f} BLEU-4 {:.4f} ROUGE-L {:.4f} | "
                    "unique {:.2f} distinct-1 {:.3f} distinct-2 {:.3f}",
                    stage, epoch, ev.eval_loss, ev.metrics.meteor, ev.metrics.cider_d, ev.metrics.bleu4,
                    ev.metrics.rouge_l, ev.metrics.diversity.unique_ratio, ev.metrics.diversity.distinct_1,
                    ev.metrics.diversity.distinct_2) +
        (ev.metrics.meteor_morphemes_tokenizer.empty()
             ? std::string()
             : fmt::format(" | METEOR ({}) {:.4f}", ev.metrics.meteor_morphemes_tokenizer,
                           ev.metrics.meteor_morphemes)));
    result_.evals.push_back(ev);
    return ev;
  }

  // Caption for projected visual tokens [n, hidden] (generation options from the config).
  std::string caption(const Matrix& visual) {
    const auto seq = model::splice_visual_tokens<float>(codec_.prompt_ids, std::vector<int>{}, codec_.placeholder_id,
                                                        visual, decoder_.embed_tokens());
    GenerationOptions g = config_.generation;
    g.eos_token_id = codec_.eos_id;
    return codec_.decode(generate(decoder_, seq.embeds, g).ids);
  }

  // Writes the PEFT adapter (when a LoRA stage ran), the projector and the run's summary.
  void save_outputs(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    bool lora_trained = false;
    for (const auto& s : config_.stages) lora_trained |= s.train_lora && s.epochs > 0;
    if (lora_trained && !lora_params_.empty()) {
      lora::AdapterSpec spec;
      spec.r = P::lora_r;
      spec.lora_alpha = P::lora_alpha;
      decoder_.for_each_lora([&](const std::string&, typename decoder_type::lora_type& l) {
        spec.lora_alpha = l.alpha_value();  // an initial_adapter's alpha and rsLoRA, when the run started from one
        spec.use_rslora = l.options().use_rslora;
      });
      spec.lora_dropout = config_.lora_dropout;
      spec.target_modules = config_.target_modules;
      spec.base_model_name_or_path = config_.base_model_name_or_path;
      // A decoder inside a LLaVA checkpoint: a plain name list would also put LoRA on the vision tower's
      // q/k/v_proj when PEFT loads the adapter, so the targets are a regex limited to the language model.
      if (const std::string first = decoder_.module_path(0, "q_proj");
          first.find("language_model.") != std::string::npos)
        spec.target_regex = fmt::format(R"(.*language_model.*\.({}))", fmt::join(config_.target_modules, "|"));
      lora::AdapterModules modules;
      decoder_.for_each_lora([&](const std::string& path, typename decoder_type::lora_type& l) {
        // A checkpoint in the older LLaVA layout (language_model.model.*) is model.language_model.* in
        // transformers 5's modules, the names PEFT gives an adapter of it.
        const std::string legacy = "language_model.model.";
        const std::string name = path.starts_with(legacy) ? "model.language_model." + path.substr(legacy.size()) : path;
        modules[name] = lora::AdapterWeights{l.lora_A(), l.lora_B()};
      });
      lora::save_peft_adapter(dir / "adapter", spec, modules);
    }
    save_projector(dir / "projector.safetensors", projector_);
  }

 private:
  struct Position {
    std::size_t stage = 0;
    int epoch = 0;
    long step_in_epoch = 0;
    long stage_step = 0;
    long global_step = 0;
  };

  static model::DecoderOptions decoder_options(const TrainerConfig& c) {
    model::DecoderOptions o;
    o.target_modules = c.target_modules;
    o.lora.dropout = c.lora_dropout;
    o.lora.seed = c.seed;
    o.gradient_checkpointing = c.gradient_checkpointing;
    if (!c.initial_adapter.empty()) {
      const lora::AdapterSpec spec = lora::load_peft_adapter(c.initial_adapter).spec;
      require(spec.r == P::lora_r,
              "Trainer: initial_adapter '{}' has r {}, but preset {} trains r {}: continue it with a preset of rank {}",
              c.initial_adapter.string(), spec.r, P::name, P::lora_r, spec.r);
      o.lora.alpha = spec.lora_alpha;
      o.lora.use_rslora = spec.use_rslora;
    }
    return o;
  }

  // The part of a module path every key layout shares: "layers.3.self_attn.q_proj".
  static std::string layer_path(const std::string& module) {
    const auto at = module.rfind("layers.");
    return at == std::string::npos ? module : module.substr(at);
  }

  // TrainerConfig::initial_adapter: the adapter's modules must be exactly this run's LoRA layers.
  void load_initial_adapter() {
    const auto& dir = config_.initial_adapter;
    const lora::PeftAdapter adapter = lora::load_peft_adapter(dir);
    std::set<std::string> ours, theirs;
    decoder_.for_each_lora(
        [&](const std::string& path, typename decoder_type::lora_type&) { ours.insert(layer_path(path)); });
    for (const auto& entry : adapter.modules) theirs.insert(layer_path(entry.first));
    for (const auto& m : theirs)
      require(ours.count(m) == 1,
              "Trainer: initial_adapter '{}' adapts {}, which this run does not train (target_modules {})",
              dir.string(), m, fmt::join(config_.target_modules, ","));
    for (const auto& m : ours)
      require(theirs.count(m) == 1, "Trainer: initial_adapter '{}' has no LoRA for {}, which this run trains",
              dir.string(), m);
    decoder_.load_adapter(io::SafetensorsFile::open(dir / lora::kAdapterWeightsName));
  }

  void check_config() const {
    require(config_.batch_size >= 1, "Trainer: batch_size must be >= 1 (got {})", config_.batch_size);
    require(config_.gradient_accumulation_steps >= 1, "Trainer: gradient_accumulation_steps must be >= 1 (got {})",
            config_.gradient_accumulation_steps);
    require(!config_.stages.empty(), "Trainer: no stages");
    require(config_.num_frames >= 1, "Trainer: num_frames must be >= 1 (got {})", config_.num_frames);
    require(config_.precision == "fp32",
            "Trainer: precision '{}' (preset {}) is not supported by the CPU trainer, which computes in fp32; set "
            "TrainerConfig::precision = \"fp32\" to train this preset on the CPU",
            config_.precision, config_.preset);
    require(config_.max_nan_in_a_row >= 1, "Trainer: max_nan_in_a_row must be >= 1");
    require(projector_.out_features() == decoder_.config().hidden_size,
            "Trainer: the projector gives {} features but the decoder's hidden size is {}", projector_.out_features(),
            decoder_.config().hidden_size);
    require(std::count(codec_.prompt_ids.begin(), codec_.prompt_ids.end(), codec_.placeholder_id) == 1,
            "Trainer: the prompt must hold the video placeholder (id {}) exactly once", codec_.placeholder_id);
    require(codec_.encode && codec_.decode, "Trainer: the text codec needs encode and decode functions");
    (void)metric_mode();
  }

  Mode metric_mode() const {
    const auto& m = config_.early_stopping_metric;
    if (m == "eval_loss") return Mode::Min;
    const eval::CaptionScore* score = eval::find_caption_score(m);
    if (!score) fail("Trainer: unknown early_stopping_metric '{}' (eval_loss, {})", m, eval::caption_score_names());
    require(score->group != eval::ScoreGroup::Morphemes || config_.caption_metrics.morpheme_tokenizer.has_value(),
            "Trainer: early_stopping_metric '{}' needs caption_metrics.morpheme_tokenizer set", m);
    return score->higher_is_better ? Mode::Max : Mode::Min;
  }
  double metric_value(const EvalResult& ev) const {
    const auto& m = config_.early_stopping_metric;
    if (m == "eval_loss") return ev.eval_loss;
    return eval::find_caption_score(m)->get(ev.metrics);  // checked by metric_mode(); NaN when not scored
  }
  bool better(double a, double b) const { return metric_mode() == Mode::Min ? a < b : a > b; }

  long steps_per_epoch() const {
    const long per_step = static_cast<long>(config_.batch_size) * config_.gradient_accumulation_steps * comm_.size();
    return (static_cast<long>(train_.size()) + per_step - 1) / per_step;
  }
  long stage_steps(std::size_t s) const {
    return config_.stages[s].epochs > 0 ? static_cast<long>(config_.stages[s].epochs) * steps_per_epoch() : 0;
  }

  // A seeded permutation of the training clips for (stage, epoch): the same on resume.
  std::vector<std::size_t> epoch_order(std::size_t stage, int epoch) const {
    std::vector<std::size_t> order(train_.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    CounterRng rng(config_.seed ^ 0x7261696eULL, stage * 100003 + static_cast<std::uint64_t>(epoch));
    for (std::size_t i = order.size(); i > 1; --i) {
      const auto j = static_cast<std::size_t>(rng.uniform() * static_cast<double>(i)) % i;
      std::swap(order[i - 1], order[j]);
    }
    return order;
  }

  std::vector<int> answer_ids(const Clip& c) {
    std::vector<int> ids = codec_.encode(c.caption);
    const std::size_t keep =
        static_cast<std::size_t>(std::max(1, config_.max_caption_tokens) - (codec_.eos_id >= 0 ? 1 : 0));
    if (ids.size() > keep) {
      if (truncated_.insert(key_of(c)).second) {
        say(fmt::format("caption of clip {} has {} tokens: truncated to {} (max_caption_tokens {})", c.id, ids.size(),
                        keep, config_.max_caption_tokens));
        if (log_)
          log_->write(nlohmann::json{{"type", "truncate"},
                                     {"step", pos_.global_step},
                                     {"clip", c.id},
                                     {"tokens", ids.size()},
                                     {"kept", keep}});
      }
      ids.resize(keep);
    }
    if (codec_.eos_id >= 0) ids.push_back(codec_.eos_id);
    return ids;
  }

  // Features of a clip (memoised), or nullptr after logging why it is skipped.
  const Matrix* features_of(const Clip& c) {
    const std::string key = c.video.string() + "\n" + c.id;
    if (auto it = cache_.find(key); it != cache_.end()) return &it->second;
    if (failed_.count(key)) return nullptr;
    try {
      Matrix f = features_(c);
      require(f.cols() == projector_.in_features(), "features {} do not match the projector's input width {}",
              shape_string(f), projector_.in_features());
      return &cache_.emplace(key, std::move(f)).first->second;
    } catch (const std::exception& e) {
      failed_.insert(key);
      const std::string what = fmt::format("{}: {}", c.id, e.what());
      result_.skipped_clips.push_back(what);
      say_local("skipping clip " + what);
      if (log_)
        log_->write(nlohmann::json{{"type", "skip"}, {"step", pos_.global_step}, {"clip", c.id}, {"reason", e.what()}});
      return nullptr;
    }
  }

  std::vector<optim::Parameter> stage_params(std::size_t s) {
    std::vector<optim::Parameter> p = proj_params_;
    if (config_.stages[s].train_lora) p.insert(p.end(), lora_params_.begin(), lora_params_.end());
    return p;
  }
  void build_optimizer(std::size_t s) {
    const auto params = stage_params(s);
    optimizer_.emplace(optim::transformers_groups(params, config_.weight_decay));
  }

  void zero_all_grads() {
    projector_.zero_grad();
    decoder_.zero_grad();
  }

  // One optimizer step over the clips order[k·B·A, (k+1)·B·A). Returns false when the step was skipped (NaN).
  bool train_step(const std::vector<std::size_t>& order, long k, double lr, int stage, int epoch, int epochs) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::size_t per_rank = static_cast<std::size_t>(config_.batch_size) * config_.gradient_accumulation_steps;
    const comm::IndexRange shard =
        comm::step_shard(static_cast<std::size_t>(k), per_rank, comm_.rank(), comm_.size(), order.size());
    const std::size_t step_begin = static_cast<std::size_t>(k) * per_rank * static_cast<std::size_t>(comm_.size());
    std::vector<std::size_t> clips, slots;  // clips[i] is the step's slots[i]-th clip (over every rank)
    for (std::size_t i = shard.begin; i < shard.end; ++i)
      if (features_of(train_[order[i]])) {
        clips.push_back(order[i]);
        slots.push_back(i - step_begin);
      }
    zero_all_grads();
    for (auto& sh : shadows_) sh.pull();
    long total_valid = 0;
    std::vector<std::vector<int>> answers(clips.size());
    for (std::size_t i = 0; i < clips.size(); ++i) {
      answers[i] = answer_ids(train_[clips[i]]);
      total_valid += static_cast<long>(answers[i].size());
    }
    const long local_valid = total_valid;
    std::size_t step_clips = clips.size();
    // batch_invariant: each clip its own micro-batch, the gradients summed clip by clip in float64.
    const bool per_clip = config_.batch_invariant;
    if (comm_.size() > 1) {  // normalise by the whole step's token count, over every rank
      std::array<double, 3> counts{static_cast<double>(total_valid), static_cast<double>(clips.size()),
                                   per_clip ? 1.0 : 0.0};
      comm_.all_reduce_sum(std::span<double>(counts), fmt::format("step {}: token counts", pos_.global_step + 1));
      total_valid = static_cast<long>(counts[0]);
      step_clips = static_cast<std::size_t>(counts[1]);
      check_same_summation(counts[2]);
      if (config_.lora_dropout > 0.0 && !per_clip) {  // each rank its own dropout masks, a function of (step, rank)
        const auto stride = static_cast<std::uint64_t>(2 * config_.gradient_accumulation_steps);
        const auto first = (static_cast<std::uint64_t>(pos_.global_step) * static_cast<std::uint64_t>(comm_.size()) +
                            static_cast<std::uint64_t>(comm_.rank())) *
                           stride;
        decoder_.for_each_lora([&](const std::string&, typename decoder_type::lora_type& l) { l.set_step(first); });
      }
    }
    double loss = 0.0;
    loss::CrossEntropyOptions ce;
    ce.label_smoothing = config_.label_smoothing;
    ce.total_valid_tokens = total_valid;
    std::string nonfinite_error;
    const auto params = stage_params(static_cast<std::size_t>(stage));
    ClipGradientSum clip_sums;
    if (per_clip) clip_sums.reset(gradient_storage(params));
    const std::size_t micro = per_clip ? 1 : static_cast<std::size_t>(config_.batch_size);
    try {
      for (std::size_t mb = 0; mb < clips.size(); mb += micro) {
        const std::size_t mb_end = std::min(clips.size(), mb + micro);
        if (per_clip && config_.lora_dropout > 0.0) set_clip_dropout_step(per_rank, slots[mb]);
        Eigen::Index rows = 0;
        for (std::size_t i = mb; i < mb_end; ++i) rows += cache_.at(key_of(train_[clips[i]])).rows();
        Matrix feats(rows, projector_.in_features());
        Eigen::Index r = 0;
        for (std::size_t i = mb; i < mb_end; ++i) {
          const Matrix& f = cache_.at(key_of(train_[clips[i]]));
          feats.middleRows(r, f.rows()) = f;
          r += f.rows();
        }
        const Matrix visual = projector_.forward(feats);
        std::vector<model::SplicedSequence> seqs;
        r = 0;
        for (std::size_t i = mb; i < mb_end; ++i) {
          const Eigen::Index n = cache_.at(key_of(train_[clips[i]])).rows();
          seqs.push_back(model::splice_visual_tokens<float>(codec_.prompt_ids, answers[i], codec_.placeholder_id,
                                                            Matrix(visual.middleRows(r, n)), decoder_.embed_tokens()));
          r += n;
        }
        const auto batch = model::collate<float>(seqs, decoder_.embed_tokens(), codec_.pad_id);
        auto res = decoder_.loss_and_backward(batch.embeds, batch.batch, batch.labels, ce);
        loss += res.loss;
        projector_.backward(model::gather_rows<float>(res.grad_embeds, batch.visual_rows));
        if (per_clip) clip_sums.take();
      }
    } catch (const Error& e) {  // the loss refuses NaN/Inf logits: same as a NaN loss
      nonfinite_error = e.what();
      loss = std::nan("");
    }
    if (per_clip) {  // the ranks' float64 sums, rounded to float32 once
      clip_sums.all_reduce_sum(comm_, fmt::format("step {}: gradients", pos_.global_step + 1));
      clip_sums.store();
    }
    for (auto& sh : shadows_) sh.g = sh.grad->transpose();
    if (comm_.size() > 1) reduce_step(per_clip ? std::vector<optim::Parameter>{} : params, loss, local_valid, t0);
    bool finite = std::isfinite(loss) && step_clips > 0;
    for (const auto& p : params) finite = finite && all_finite(*p.grad);
    double grad_norm = std::nan("");
    ++pos_.global_step;
    ++pos_.stage_step;
    ++steps_this_run_;
    if (!finite) {
      ++nan_streak_;
      ++result_.skipped_nan_steps;
      result_.losses.push_back(std::nan(""));
      say(fmt::format("step {}: loss {} is not finite{}; step skipped ({} in a row)", pos_.global_step, loss,
                      nonfinite_error.empty() ? "" : " (" + nonfinite_error + ")", nan_streak_));
      if (log_)
        log_->write(nlohmann::json{
            {"type", "nan_skip"}, {"step", pos_.global_step}, {"stage", stage + 1}, {"epoch", epoch + 1}});
      zero_all_grads();
      return false;
    }
    nan_streak_ = 0;
    grad_norm = optim::clip_grad_norm(std::span<const optim::ParamGroup>(optimizer_->groups()), config_.max_grad_norm);
    optimizer_->step(lr);
    for (auto& sh : shadows_) sh.push();
    result_.losses.push_back(loss);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (log_)
      log_->write(StepRecord{.stage = stage + 1,
                             .epoch = epoch + 1,
                             .step = pos_.global_step,
                             .total_steps = total_steps_,
                             .loss = loss,
                             .lr = lr,
                             .grad_norm = grad_norm,
                             .tokens = total_valid,
                             .tokens_per_s = dt > 0 ? static_cast<double>(total_valid) / dt : 0.0,
                             .elapsed_s = elapsed});
    if (config_.progress) {
      ProgressState ps{.stage = stage + 1,
                       .stages = static_cast<int>(config_.stages.size()),
                       .epoch = epoch + 1,
                       .epochs = epochs,
                       .step = pos_.global_step,
                       .total_steps = total_steps_,
                       .steps_this_run = steps_this_run_,
                       .elapsed_s = elapsed,
                       .loss = loss,
                       .lr = lr,
                       .tokens_per_s = dt > 0 ? static_cast<double>(total_valid) / dt : 0.0};
      *config_.progress << (config_.progress_newlines ? "" : "\r") << format_progress(ps)
                        << (config_.progress_newlines ? "\n" : "") << std::flush;
    }
    return true;
  }

  static std::string key_of(const Clip& c) { return c.video.string() + "\n" + c.id; }

  void say(const std::string& s) const {
    if (config_.progress) *config_.progress << (config_.progress_newlines ? "" : "\n") << s << '\n' << std::flush;
  }
  // A message about this rank's own data (a skipped clip): from every rank, prefixed with the rank when several.
  void say_local(const std::string& s) const {
    if (comm_.size() == 1) return say(s);
    if (local_out_) *local_out_ << fmt::format("\n[rank {}] {}\n", comm_.rank(), s) << std::flush;
  }

  // ---- data parallel ----
  // The token-count sum also counts the ranks that sum their gradients clip by clip: all or none must.
  void check_same_summation(double per_clip_ranks) const {
    if (per_clip_ranks != 0.0 && per_clip_ranks != static_cast<double>(comm_.size()))
      throw comm::CommError(fmt::format(
          "rank {} of {}: step {}: {} of the ranks sum gradients clip by clip (batch_invariant) and the others do "
          "not: every rank must run the same configuration",
          comm_.rank(), comm_.size(), pos_.global_step + 1, per_clip_ranks));
  }

  // The float32 storage the backward pass accumulates `params`' gradients into (a bias's, not its shadow).
  std::vector<std::span<float>> gradient_storage(const std::vector<optim::Parameter>& params) {
    std::vector<std::span<float>> out;
    for (const auto& p : params) {
      const auto sh = std::find_if(shadows_.begin(), shadows_.end(), [&](const auto& s) { return &s.g == p.grad; });
      if (sh != shadows_.end())
        out.emplace_back(sh->grad->data(), static_cast<std::size_t>(sh->grad->size()));
      else
        out.emplace_back(p.grad->data(), static_cast<std::size_t>(p.grad->size()));
    }
    return out;
  }

  // LoRA dropout masks of the step's `slot`-th clip: a function of (step, slot), whatever rank and micro-batch
  // the clip is in (per_rank × ranks clips a step; one forward per clip, replayed by gradient checkpointing).
  void set_clip_dropout_step(std::size_t per_rank, std::size_t slot) {
    const auto per_step = static_cast<std::uint64_t>(per_rank) * static_cast<std::uint64_t>(comm_.size());
    const std::uint64_t s = static_cast<std::uint64_t>(pos_.global_step) * per_step + slot;
    decoder_.for_each_lora([&](const std::string&, typename decoder_type::lora_type& l) { l.set_step(s); });
  }

  // Sums the step's loss, gradients (`params`; none when ClipGradientSum summed them) and stop requests over the
  // ranks; records each rank's throughput.
  void reduce_step(const std::vector<optim::Parameter>& params, double& loss, long local_valid,
                   std::chrono::steady_clock::time_point t0) {
    const std::size_t n = static_cast<std::size_t>(comm_.size()), me = static_cast<std::size_t>(comm_.rank());
    std::vector<double> s(2 + 2 * n, 0.0);  // loss, stop requests, tokens per rank, compute seconds per rank
    s[0] = loss;
    s[1] = interrupt_requested().load() ? 1.0 : 0.0;
    s[2 + me] = static_cast<double>(local_valid);
    s[2 + n + me] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const long step = pos_.global_step + 1;
    comm_.all_reduce_sum(std::span<double>(s), fmt::format("step {}: loss", step));
    std::vector<std::span<float>> grads;
    for (const auto& p : params) grads.emplace_back(p.grad->data(), static_cast<std::size_t>(p.grad->size()));
    comm::GradientBuckets(std::move(grads)).all_reduce_sum(comm_, fmt::format("step {}: gradients", step));
    loss = s[0];
    stop_requested_ = s[1] > 0.0;
    std::vector<double> tokens_per_s(n);
    for (std::size_t r = 0; r < n; ++r) {
      rank_tokens_[r] += s[2 + r];
      rank_seconds_[r] += s[2 + n + r];
      tokens_per_s[r] = s[2 + n + r] > 0 ? s[2 + r] / s[2 + n + r] : 0.0;
    }
    if (log_)
      log_->write(nlohmann::json{{"type", "ranks"},
                                 {"step", step},
                                 {"tokens", std::span<const double>(s).subspan(2, n)},
                                 {"compute_s", std::span<const double>(s).subspan(2 + n, n)},
                                 {"tokens_per_s", tokens_per_s}});
  }

  // Sharded evaluation: every rank's clips on rank 0, in clip order (captions, and the loss summed in clip order
  // as one rank sums it). Other ranks keep only their counts; rank 0's result is broadcast afterwards.
  void gather_evaluation(EvalResult& ev, std::vector<std::vector<std::string>>& refs,
                         const std::vector<double>& clip_loss, const std::vector<long>& clip_valid, double& loss_sum,
                         long& valid) {
    std::string mine;
    const auto put = [&mine](const void* p, std::size_t bytes) { mine.append(static_cast<const char*>(p), bytes); };
    for (std::size_t j = 0; j < ev.captions.size(); ++j) {
      const std::uint64_t index = ev.clip_index[j], length = ev.captions[j].size();
      const std::int64_t v = clip_valid[j];
      put(&index, 8);
      put(&clip_loss[j], 8);
      put(&v, 8);
      put(&length, 8);
      put(ev.captions[j].data(), ev.captions[j].size());
    }
    const auto parts = comm_.gather(mine, fmt::format("the evaluation captions after step {}", pos_.global_step));
    if (comm_.rank() != 0) return;
    struct Item {
      std::uint64_t index;
      double loss;
      std::int64_t valid;
      std::string caption;
    };
    std::vector<Item> items;
    for (const std::string& part : parts) {
      std::size_t at = 0;
      const auto get = [&](void* p, std::size_t bytes) {
        require(at + bytes <= part.size(), "Trainer: a truncated evaluation record from another rank");
        std::memcpy(p, part.data() + at, bytes);
        at += bytes;
      };
      while (at < part.size()) {
        Item it{};
        std::uint64_t length = 0;
        get(&it.index, 8);
        get(&it.loss, 8);
        get(&it.valid, 8);
        get(&length, 8);
        require(at + length <= part.size(), "Trainer: a truncated evaluation caption from another rank");
        it.caption = part.substr(at, length);
        at += length;
        items.push_back(std::move(it));
      }
    }
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.index < b.index; });
    ev.captions.clear();
    ev.clip_index.clear();
    refs.clear();
    loss_sum = 0.0;
    valid = 0;
    for (auto& it : items) {
      loss_sum += it.loss;
      valid += it.valid;
      ev.clip_index.push_back(static_cast<std::size_t>(it.index));
      ev.captions.push_back(std::move(it.caption));
      refs.push_back({val_[it.index].caption});
    }
  }

  // ---- checkpoints ----
  io::TensorMap param_tensors() {
    io::TensorMap t;
    for (auto& sh : shadows_) sh.pull();
    for (const auto& p : proj_params_) t.emplace("param/" + p.name, io::TensorData::from_matrix(*p.value));
    for (const auto& p : lora_params_) t.emplace("param/" + p.name, io::TensorData::from_matrix(*p.value));
    return t;
  }
  void set_params(const io::SafetensorsFile& f) {
    for (auto& sh : shadows_) sh.pull();
    auto load = [&](const optim::Parameter& p) {
      const Matrix m = f.matrix("param/" + p.name);
      require(m.rows() == p.value->rows() && m.cols() == p.value->cols(), "checkpoint {}: {} is {}, expected {}",
              f.source(), p.name, shape_string(m), shape_string(*p.value));
      *p.value = m;
    };
    for (const auto& p : proj_params_) load(p);
    for (const auto& p : lora_params_) load(p);
    for (auto& sh : shadows_) sh.push();
  }
  void save_params(const std::filesystem::path& path) {
    if (comm_.rank() != 0) return;
    io::write_safetensors(path, param_tensors(), {{"format", "vidlora"}});
  }

  void save_checkpoint(const std::filesystem::path& path) {
    if (comm_.rank() != 0) return;  // rank 0 writes; every rank holds the same parameters
    io::TensorMap t = param_tensors();
    nlohmann::json adam = nlohmann::json::object();
    if (optimizer_) {
      for (const auto& name : optimizer_->parameter_names()) {
        const auto& st = optimizer_->state(name);
        t.emplace("adam/" + name + "/exp_avg", io::TensorData::from_matrix(st.exp_avg));
        t.emplace("adam/" + name + "/exp_avg_sq", io::TensorData::from_matrix(st.exp_avg_sq));
        adam[name] = st.step;
      }
    }
    std::vector<std::uint64_t> dropout_steps;
    decoder_.for_each_lora(
        [&](const std::string&, typename decoder_type::lora_type& l) { dropout_steps.push_back(l.step()); });
    nlohmann::json state = {
        {"stage", pos_.stage},
        {"epoch", pos_.epoch},
        {"step_in_epoch", pos_.step_in_epoch},
        {"stage_step", pos_.stage_step},
        {"global_step", pos_.global_step},
        {"adam_steps", optimizer_ ? optimizer_->steps_taken() : 0},
        {"adam_param_steps", adam},
        {"dropout_steps", dropout_steps},
        {"stopper",
         {{"best", stopper_.best_score() ? nlohmann::json(*stopper_.best_score()) : nlohmann::json(nullptr)},
          {"best_step", stopper_.best_step()},
          {"best_evaluation", stopper_.best_evaluation()},
          {"counter", stopper_.patience_counter()},
          {"evaluations", stopper_.evaluations()}}},
        {"best_score", best_score_ ? nlohmann::json(*best_score_) : nlohmann::json(nullptr)},
        {"best_result", best_ ? eval_result_to_json(*best_) : nlohmann::json(nullptr)},
        {"config", fingerprint()}};
    io::write_safetensors(path, t, {{"format", "vidlora"}, {"trainer_state", state.dump()}});
  }

  nlohmann::json load_checkpoint(const std::filesystem::path& path) {
    require(std::filesystem::exists(path), "--resume: no checkpoint at {}", path.string());
    const auto f = io::SafetensorsFile::open(path);
    const auto it = f.metadata().find("trainer_state");
    require(it != f.metadata().end(), "--resume: {} is not a vidlora trainer checkpoint (no trainer_state)",
            path.string());
    const auto state = nlohmann::json::parse(it->second);
    const auto theirs = state.at("config").get<std::map<std::string, std::string>>();
    const auto mine = fingerprint();
    // The data order, schedule and position count optimizer steps, so the clips per step must agree; how they
    // split into ranks, micro-batches and accumulation may change (a checkpoint of N ranks resumes on M).
    const auto field = [&](const std::map<std::string, std::string>& f, const char* k) {
      const auto at = f.find(k);
      return at == f.end() ? 1L : std::stol(at->second);  // checkpoints before data parallel: one rank
    };
    const auto split = [&](const std::map<std::string, std::string>& f) {
      const long r = field(f, "ranks"), b = field(f, "batch_size"), a = field(f, "gradient_accumulation_steps");
      return std::pair{r * b * a, fmt::format("{} ({} × {} × {})", r * b * a, r, b, a)};
    };
    require(split(theirs).first == split(mine).first,
            "--resume: the checkpoint {} was made with another configuration: clips per step (ranks × batch_size × "
            "gradient_accumulation_steps) is {} there but {} now",
            path.string(), split(theirs).second, split(mine).second);
    for (const auto& [k, v] : mine) {
      if (k == "ranks" || k == "batch_size" || k == "gradient_accumulation_steps") continue;
      const auto o = theirs.find(k);
      require(o != theirs.end() && o->second == v,
              "--resume: the checkpoint {} was made with another configuration: {} is '{}' there but '{}' now",
              path.string(), k, o == theirs.end() ? std::string("(absent)") : o->second, v);
    }
    set_params(f);
    pos_.stage = state.at("stage").get<std::size_t>();
    pos_.epoch = state.at("epoch").get<int>();
    pos_.step_in_epoch = state.at("step_in_epoch").get<long>();
    pos_.stage_step = state.at("stage_step").get<long>();
    pos_.global_step = state.at("global_step").get<long>();
    std::size_t i = 0;
    const auto ds = state.at("dropout_steps").get<std::vector<std::uint64_t>>();
    decoder_.for_each_lora([&](const std::string&, typename decoder_type::lora_type& l) {
      if (i < ds.size()) l.set_step(ds[i++]);
    });
    const auto& st = state.at("stopper");
    stopper_ = EarlyStopping({.patience = config_.patience, .threshold = 0.0, .mode = metric_mode()});
    stopper_.restore(st.at("best").is_null() ? std::nullopt : std::optional<double>(st.at("best").get<double>()),
                     st.at("best_step").get<long>(), st.at("best_evaluation").get<long>(), st.at("counter").get<int>(),
                     st.at("evaluations").get<long>());
    if (!state.at("best_score").is_null()) best_score_ = state.at("best_score").get<double>();
    // The best evaluation so far, so that TrainResult::best survives a resume (checkpoints written before
    // this field existed have none: then only later evaluations can set it).
    if (state.contains("best_result") && !state.at("best_result").is_null())
      best_ = eval_result_from_json(state.at("best_result"));
    checkpoint_file_.emplace(f);
    say(fmt::format("resumed from {} at step {} (stage {}, epoch {}, step {} of the epoch)", path.string(),
                    pos_.global_step, pos_.stage + 1, pos_.epoch + 1, pos_.step_in_epoch));
    return state;
  }

  void restore_optimizer(const nlohmann::json& state) {
    require(checkpoint_file_.has_value(), "Trainer: no checkpoint to restore the optimizer from");
    const auto& f = *checkpoint_file_;
    const auto& steps = state.at("adam_param_steps");
    for (const auto& name : optimizer_->parameter_names()) {
      if (!steps.contains(name)) continue;
      optim::AdamWState s{f.matrix("adam/" + name + "/exp_avg"), f.matrix("adam/" + name + "/exp_avg_sq"),
                          steps.at(name).get<long>()};
      optimizer_->restore_state(name, std::move(s));
    }
    optimizer_->set_steps_taken(state.at("adam_steps").get<long>());
    checkpoint_file_.reset();
  }

  // The best evaluation in the checkpoint's metadata. Non-finite numbers are written as null (JSON has no
  // NaN, as in the training log) and read back as NaN.
  static nlohmann::json eval_result_to_json(const EvalResult& ev) {
    nlohmann::json j = eval::caption_metrics_to_json(ev.metrics);
    j["stage"] = ev.stage;
    j["epoch"] = ev.epoch;
    j["step"] = ev.step;
    j["eval_loss"] = detail::finite_or_null(ev.eval_loss);
    j["captions"] = ev.captions;
    j["clip_index"] = ev.clip_index;
    j["collapsed"] = ev.collapsed;
    return j;
  }

  static EvalResult eval_result_from_json(const nlohmann::json& j) {
    EvalResult ev;
    ev.stage = j.at("stage").get<int>();
    ev.epoch = j.at("epoch").get<int>();
    ev.step = j.at("step").get<long>();
    ev.eval_loss =
        j.at("eval_loss").is_null() ? std::numeric_limits<double>::quiet_NaN() : j.at("eval_loss").get<double>();
    ev.metrics = eval::caption_metrics_from_json(j);
    ev.captions = j.at("captions").get<std::vector<std::string>>();
    ev.clip_index = j.at("clip_index").get<std::vector<std::size_t>>();
    ev.collapsed = j.at("collapsed").get<bool>();
    return ev;
  }

  void write_val_captions(const EvalResult& ev) {
    if (comm_.rank() != 0) return;
    std::string text;
    for (std::size_t i = 0; i < ev.captions.size(); ++i) {
      const Clip& c = val_[ev.clip_index[i]];
      text +=
          nlohmann::json{
              {"id", c.id}, {"video", c.video.string()}, {"reference", c.caption}, {"caption", ev.captions[i]}}
              .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
          "\n";
    }
    io::write_file_atomically(config_.output_dir / "val_captions.jsonl", text);
  }

  TrainResult finish() {
    if (config_.progress && !config_.progress_newlines) *config_.progress << '\n';
    result_.steps = pos_.global_step;
    result_.best = best_;
    if (result_.status != TrainStatus::NanStopped && result_.status != TrainStatus::Interrupted) {
      if (comm_.size() > 1) comm_.barrier("the end of training (rank 0 writes the best parameters)");
      if (std::filesystem::exists(best_path())) set_params(io::SafetensorsFile::open(best_path()));
      if (comm_.rank() == 0) save_outputs(config_.output_dir);
    }
    if (comm_.size() > 1) {
      std::string line = "throughput per rank (supervised tokens / compute seconds, this run):";
      for (std::size_t r = 0; r < rank_tokens_.size(); ++r)
        line += fmt::format(" rank {} {:.0f}/s", r, rank_seconds_[r] > 0 ? rank_tokens_[r] / rank_seconds_[r] : 0.0);
      say(line);
    }
    if (log_) {
      log_.reset();
      try {
        write_training_curves(
            config_.output_dir / "train_log.jsonl", config_.output_dir / "curves.svg",
            {.metric = config_.early_stopping_metric, .higher_is_better = metric_mode() == Mode::Max});
      } catch (const std::exception& e) {
        say(fmt::format("could not draw the curves: {}", e.what()));
      }
    }
    return result_;
  }

  TrainerConfig config_;
  decoder_type decoder_;
  ProjectorT projector_;
  TextCodec codec_;
  FeatureFn features_;
  Comm comm_;
  std::ostream* local_out_ = nullptr;               // config.progress as given (rank-local messages on every rank)
  bool stop_requested_ = false;                     // some rank was interrupted (summed with the step)
  std::vector<double> rank_tokens_, rank_seconds_;  // this run's supervised tokens and compute time per rank
  std::vector<detail::BiasShadow> shadows_;
  std::vector<optim::Parameter> proj_params_, lora_params_;
  std::optional<optim::AdamW> optimizer_;
  std::vector<Clip> train_, val_;
  std::map<std::string, Matrix> cache_;
  std::set<std::string> failed_;
  std::set<std::string> truncated_;  // clips whose caption was truncated (reported once each)
  Position pos_;
  EarlyStopping stopper_{};
  std::optional<double> best_score_;
  std::optional<EvalResult> best_;
  int nan_streak_ = 0;
  long total_steps_ = 0, steps_this_run_ = 0;
  std::chrono::steady_clock::time_point started_{};
  std::optional<JsonlLog> log_;
  std::optional<io::SafetensorsFile> checkpoint_file_;
  TrainResult result_;
};

}  // namespace vidlora::train

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using train::StageSettings;
using train::Trainer;
using train::TrainerConfig;
using train::TrainResult;
}  // namespace vidlora
