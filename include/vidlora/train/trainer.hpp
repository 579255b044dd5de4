#pragma once
// Trainer<Preset, Projector, Base, Comm>: the two-stage LLaVA-style captioner training loop.
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
// good checkpoint stays). Loss scaling (TrainerConfig::loss_scaler, the fp16 presets): the loss gradient carries
// optim::GradScaler's scale, the gradients are unscaled before clipping, and a step whose gradients overflowed is
// skipped with the scale halved (not counted as a NaN step); the scaler's state is checkpointed. A clip whose
// features cannot be computed is skipped and logged.
// Data parallel (Comm = comm::Mpi, docs/distributed.md): each rank reads its shard of every step's clips
// (comm/shard.hpp), the step's token count and the gradients are summed over the ranks, evaluation is sharded
// and scored once on rank 0; rank 0 alone writes checkpoints, logs, progress and outputs. With comm::Nccl (the
// CUDA trainer, one GPU per rank) the device steps sum the gradients over the ranks on the GPUs (comm::DeviceSum)
// and the host's collectives go to its bootstrap comm::Mpi.
//
// This header holds the loop (stages, epochs, the step, early stopping, Ctrl-C) and the data-parallel exchange;
// it composes the parts beside it: trainer_config.hpp (TrainerConfig), text_codec.hpp, train_result.hpp
// (TrainResult, EvalResult), trainable_tensors.hpp (what is trained, by name), loss_scaling.hpp (GradScaler's
// step policy), checkpoint.hpp (the checkpoint
// file, fingerprint and resume), evaluation.hpp (eval loss, captions, the early-stopping metric) and
// run_outputs.hpp (adapter, projector, val captions), decoder_step.hpp (where the decoder's loss and backward run:
// the CPU, or the device for a Cuda preset) and device_optimizer.hpp (a Cuda preset's unscale, clipping and AdamW on
// the device when the step's gradients are final there; the host's optim::AdamW stays the optimizer of record).

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <concepts>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
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
#include <vidlora/comm/device_sum.hpp>
#include <vidlora/comm/gradient_buckets.hpp>
#include <vidlora/comm/shard.hpp>
#include <vidlora/comm/single.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/eval/caption_metrics.hpp>
#include <vidlora/eval/diversity.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
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
#include <vidlora/train/checkpoint.hpp>
#include <vidlora/train/clip_gradient_sum.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/decoder_step.hpp>
#include <vidlora/train/device_optimizer.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/evaluation.hpp>
#include <vidlora/train/lora_mfu.hpp>
#include <vidlora/train/loss_scaling.hpp>
#include <vidlora/train/progress.hpp>
#include <vidlora/train/run_outputs.hpp>
#include <vidlora/train/text_codec.hpp>
#include <vidlora/train/train_result.hpp>
#include <vidlora/train/trainable_tensors.hpp>
#include <vidlora/train/trainer_config.hpp>
#include <vidlora/train/training_log.hpp>

namespace vidlora::train {

// Set by a SIGINT handler (the example programs install one); the trainer checks it between steps.
inline std::atomic<bool>& interrupt_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

// Features of one clip [visual tokens, vision hidden]; throws when the clip cannot be decoded.
using FeatureFn = std::function<Matrix(const Clip&)>;

// Backend: where the decoder's step runs (train/decoder_step.hpp), the preset's by default.
template <presets::Preset P, class ProjectorT = model::Mlp2xGelu,
          lora::FrozenWeight Base = std::conditional_t<P::load_in_4bit, quant::NF4Weight, lora::DenseWeight>,
          comm::Communicator Comm = comm::Single, backend::Backend Backend = presets::backend_of<P>>
class Trainer {
  static_assert(Comm::buffers == comm::Buffers::Host || Backend::on_device,
                "Trainer: a device-buffer communicator (comm::Nccl) sums the gradients of a device decoder step: use "
                "it with backend::Cuda; the CPU trainer sums host buffers (comm::Single, comm::Mpi, "
                "comm::AnyCommunicator)");

 public:
  using preset_type = P;
  using communicator_type = Comm;
  using decoder_type = model::Decoder<P::lora_r, P::lora_alpha, Base>;
  using projector_type = ProjectorT;
  using backend_type = Backend;
  using decoder_step_type = DecoderStep<Backend, decoder_type>;
  static_assert(DecoderStepPolicy<decoder_step_type, decoder_type>);

  // Builds the decoder from `weights` with LoRA slots on config.target_modules.
  // `comm`: the ranks this trainer is one of (default: one process).
  template <model::TensorSource S>
  Trainer(TrainerConfig config, const model::DecoderConfig& decoder_config, const S& weights, ProjectorT projector,
          TextCodec codec, FeatureFn features, Comm comm = Comm{})
      : config_(with_initial_adapter(std::move(config))),
        decoder_(decoder_config, weights, decoder_options(config_)),
        projector_(std::move(projector)),
        codec_(std::move(codec)),
        features_(std::move(features)),
        comm_(std::move(comm)),
        tensors_(projector_, decoder_),
        decoder_step_(decoder_, tensors_, decoder_step_settings(config_)),
        device_sum_(comm::device_sum_of(comm_)) {
    local_out_ = config_.progress;
    if (comm_.rank() != 0) config_.progress = nullptr;  // progress and reports from rank 0 only
    check_config();
    if (!config_.initial_adapter.empty()) load_initial_adapter();
    if constexpr (kGradEmbedsOnDevice) decoder_step_.keep_grad_embeds_on_device(true);  // for backward_rows
  }

  Trainer(const Trainer&) = delete;  // parameters are referenced by address
  // A projector allocating from the decoder step's allocator gives its tensors back before that allocator goes (it is
  // a later member, destroyed first).
  ~Trainer() {
    if constexpr (kProjectorAllocator) projector_.release_device();
  }
  Trainer& operator=(const Trainer&) = delete;

  decoder_type& decoder() { return decoder_; }
  ProjectorT& projector() { return projector_; }
  const TrainerConfig& config() const { return config_; }
  Comm& communicator() { return comm_; }
  std::filesystem::path checkpoint_path() const { return last_checkpoint_path(config_.output_dir); }
  std::filesystem::path best_path() const { return best_parameters_path(config_.output_dir); }

  // The configuration fields a checkpoint must agree with, as strings.
  std::map<std::string, std::string> fingerprint() const {
    return checkpoint_fingerprint<P, Base>(config_, decoder_.config(), projector_, comm_.size(), train_.size(),
                                           data_fingerprint_);
  }

  // Trains on `train` and evaluates on `val`. resume: continue from checkpoint_path().
  TrainResult train(std::vector<Clip> train, std::vector<Clip> val, bool resume = false) {
    train_ = std::move(train);
    val_ = std::move(val);
    require(!train_.empty(), "Trainer: no training clips");
    data_fingerprint_ = data_fingerprint(train_, val_);
    result_ = {};
    pos_ = {};
    nan_streak_ = 0;
    loss_scaling_ = LossScaling(config_.loss_scaler);
    best_.reset();
    best_score_.reset();
    stop_requested_ = false;
    rank_tokens_.assign(static_cast<std::size_t>(comm_.size()), 0.0);
    rank_seconds_.assign(static_cast<std::size_t>(comm_.size()), 0.0);
    std::optional<Checkpoint> restored;
    if (resume) {
      restored = load_checkpoint(checkpoint_path());  // (before anything is created: a refused resume leaves nothing)
    } else if (comm_.rank() == 0) {
      std::filesystem::remove(best_path());  // a previous run's best must not become this run's output
    }
    if (comm_.rank() == 0) std::filesystem::create_directories(config_.output_dir / "checkpoints");
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
        stopper_ = EarlyStopping(stopping_options());
      }
      build_optimizer(s);
      if (!fresh_stage) restore_optimizer(*optimizer_, *restored);
      restored.reset();
      const long per_epoch = steps_per_epoch();
      const long total = static_cast<long>(st.epochs) * per_epoch;
      schedule::ScheduleOptions so{.base_lr = st.learning_rate,
                                   .warmup_steps = schedule::warmup_steps_for(st.warmup_ratio, total),
                                   .total_steps = total};
      const schedule::Scheduler<typename P::lr_policy> sched(so);
      const auto lr_of = [&sched](long k) { return sched.lr(k); };
      if (fresh_stage && total > 0) {  // (the first step with lr > 0 comes at once unless the stage has no such step)
        long k = 0;
        while (k < total && lr_of(k) == 0.0) ++k;
        if (k == total && st.learning_rate == 0.0)
          say(fmt::format("warning: {} has learning rate 0: its {} step{} train nothing", st.name, total,
                          total == 1 ? "" : "s"));
        else if (k == total)
          say(fmt::format(
              "warning: {} has {} optimizer step{} and its learning rate is 0 at each ({} warmup step{}): it trains "
              "nothing; more clips or epochs, or a smaller batch × accumulation, give it steps",
              st.name, total, total == 1 ? "" : "s", so.warmup_steps, so.warmup_steps == 1 ? "" : "s"));
      }
      bool stop_stage = false;
      for (int e = pos_.epoch; e < st.epochs && !stop_stage; ++e) {
        pos_.epoch = e;
        const std::vector<std::size_t> order = epoch_order(s, e);
        const long first_step = pos_.step_in_epoch, empty_before = result_.skipped_empty_steps;
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
        // end of epoch; an epoch none of whose steps had a clip with features trained nothing, nor will the next
        if (per_epoch > first_step && result_.skipped_empty_steps - empty_before == per_epoch - first_step)
          fail(
              "Trainer: {} epoch {}: none of its {} steps had a clip with features (every clip of this rank's "
              "shards failed: {} clips so far, each named above): nothing to train on; the last checkpoint ({}) is "
              "kept",
              st.name, e + 1, per_epoch - first_step, failed_.size(), checkpoint_path().string());
        if (val_.empty()) {
          pos_.epoch = e + 1;
          pos_.step_in_epoch = 0;
          save_checkpoint(checkpoint_path());
          continue;
        }
        const EvalResult ev = evaluate(static_cast<int>(s) + 1, e + 1);
        const double score = early_stopping_value(config_.early_stopping_metric, ev);
        const bool stop = stopper_(score, pos_.global_step);
        if (stopper_.last_was_best()) {
          if (!best_score_ || improves(early_stopping_mode(config_), score, *best_score_)) {
            best_score_ = score;
            best_ = ev;
            if (comm_.rank() == 0) {
              tensors_.save(best_path());
              write_val_captions(config_.output_dir / "val_captions.jsonl", val_, ev);
            }
          }
        }
        // A stage that stops early is done: its checkpoint says so (every epoch counted), so that a run resumed from it
        // (a crash before the next stage's first checkpoint, or a finished run resumed) goes on with the next stage
        // instead of training the stopped one for another epoch.
        pos_.epoch = stop ? st.epochs : e + 1;
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
    sync_host_values();  // the projector's apply reads the host's values
    EvalResult ev;
    ev.stage = stage;
    ev.epoch = epoch;
    ev.step = pos_.global_step;
    double loss_sum = 0.0;
    long valid = 0;
    std::vector<std::vector<std::string>> refs;
    std::vector<double> clip_loss;  // per clip, summed in clip order on rank 0 when sharded
    std::vector<long> clip_valid;
    for (std::size_t i = 0; i < val_.size(); ++i) {
      if (!comm::owns_eval_clip(i, comm_.rank(), comm_.size())) continue;
      const Matrix* feats = features_of(val_[i]);
      if (!feats) continue;
      const Matrix visual = project_for_evaluation(*feats);
      const auto r = answer_loss(decoder_step_, decoder_, codec_, visual, answer_ids(val_[i]), config_.label_smoothing);
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
    if (log_) log_->write(eval_record(ev));
    say(eval_summary(ev));
    result_.evals.push_back(ev);
    return ev;
  }

  // Caption for projected visual tokens [n, hidden] (generation options from the config).
  std::string caption(const Matrix& visual) {
    return generate_caption(decoder_step_, decoder_, codec_, config_.generation, visual);
  }

  // Writes the PEFT adapter (when a LoRA stage ran), the projector and the run's summary.
  void save_outputs(const std::filesystem::path& dir) { save_run_outputs(dir, config_, decoder_, projector_); }

 private:
  // The device step's cap: the user's max_memory_gb, else the preset's vram_gb minus the reserve; none on the CPU
  // (check_config refuses the device settings there).
  static DecoderStepSettings decoder_step_settings(const TrainerConfig& c) {
    std::size_t cap = 0;
    if constexpr (Backend::on_device) cap = presets::memory_cap_bytes<P>(c.device_memory);
    return train::decoder_step_settings(c.precision, cap, c.offload_checkpoints);
  }

  // TrainerConfig::initial_adapter's lora_dropout replaces the preset's (as its alpha and rsLoRA do, decoder_options):
  // PEFT continuing the adapter trains with it, and the adapter written at the end says it.
  static TrainerConfig with_initial_adapter(TrainerConfig c) {
    if (!c.initial_adapter.empty()) c.lora_dropout = lora::read_adapter_spec(c.initial_adapter).lora_dropout;
    return c;
  }

  static model::DecoderOptions decoder_options(const TrainerConfig& c) {
    model::DecoderOptions o;
    o.target_modules = c.target_modules;
    o.lora.dropout = c.lora_dropout;
    o.lora.seed = c.seed;
    o.gradient_checkpointing = c.gradient_checkpointing;
    if (!c.initial_adapter.empty()) {
      const lora::AdapterSpec spec = lora::read_adapter_spec(c.initial_adapter);
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

  // TrainerConfig::initial_adapter: the adapter's modules must be exactly this run's LoRA layers; the projector it
  // carries, if any, replaces the model's.
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
    try {
      decoder_.load_adapter(io::SafetensorsFile::open(dir / lora::kAdapterWeightsName));
    } catch (const Error& e) {  // a tensor's name and shapes alone do not say they are the adapter's
      fail("Trainer: initial_adapter '{}' does not fit the model: {}", dir.string(), e.what());
    }
    // An adapter that carries the projector (modules_to_save, as PEFT saves a fine-tune of projector + LoRA) starts
    // the projector too; one saving any other module is refused there.
    load_projector_from_adapter(dir, adapter, projector_);
    tensors_.values_changed();
  }

  void check_config() const {
    require(config_.batch_size >= 1, "Trainer: batch_size must be >= 1 (got {})", config_.batch_size);
    require(config_.gradient_accumulation_steps >= 1, "Trainer: gradient_accumulation_steps must be >= 1 (got {})",
            config_.gradient_accumulation_steps);
    require(!config_.stages.empty(), "Trainer: no stages");
    require(config_.num_frames >= 1, "Trainer: num_frames must be >= 1 (got {})", config_.num_frames);
    require(config_.precision == "fp32" ||
                (Backend::on_device &&
                 (config_.precision == "tf32" || config_.precision == "bf16" || config_.precision == "fp16")),
            "Trainer: precision '{}' (preset {}) is not supported by the {} trainer, which computes in {}; set "
            "TrainerConfig::precision = {} to train this preset{}",
            config_.precision, config_.preset, Backend::on_device ? "GPU" : "CPU",
            Backend::on_device ? "fp32, tf32 (TF32 GEMMs), bf16 or fp16 (16-bit frozen GEMMs)" : "fp32",
            Backend::on_device ? "\"fp32\", \"tf32\", \"bf16\" or \"fp16\"" : "\"fp32\"",
            Backend::on_device ? "" : " on the CPU");
    require(config_.max_nan_in_a_row >= 1, "Trainer: max_nan_in_a_row must be >= 1");
    require(!device_sum_ || (Backend::on_device && kProjectorBrackets),
            "Trainer: the communicator sums gradients on the device (comm::Nccl), but {} (backend {}, preset {}); "
            "train with backend::Cuda and model::cuda::CudaMlp2xGelu, or use comm::Mpi",
            Backend::on_device ? "the projector keeps its gradients on the host"
                               : "this trainer's decoder step runs on the CPU",
            Backend::name, config_.preset);
    (void)optim::GradScaler(config_.loss_scaler);  // its options are checked there (GradScaler: ...)
    require(Backend::on_device || config_.device_memory.max_memory_gb == 0.0,
            "Trainer: max_memory_gb {} caps device memory, but this trainer's decoder step runs on the CPU (backend "
            "{}, preset {}): leave it 0",
            config_.device_memory.max_memory_gb, Backend::name, config_.preset);
    require(Backend::on_device || !config_.offload_checkpoints,
            "Trainer: offload_checkpoints moves device checkpoints to host memory, but this trainer's decoder step "
            "runs on the CPU (backend {}, preset {})",
            Backend::name, config_.preset);
    require(!config_.mfu_peak_tflops || (std::isfinite(*config_.mfu_peak_tflops) && *config_.mfu_peak_tflops >= 0.0),
            "Trainer: mfu_peak_tflops must be a finite number of TFLOP/s >= 0 (0: no MFU), got {}",
            config_.mfu_peak_tflops.value_or(0.0));
    require(Backend::on_device || !config_.mfu_peak_tflops,
            "Trainer: mfu_peak_tflops sets the GPU peak of the steps' MFU, but this trainer's decoder step runs on the "
            "CPU (backend {}, preset {}), whose steps report none: leave it unset",
            Backend::name, config_.preset);
    require(!config_.offload_checkpoints || config_.gradient_checkpointing,
            "Trainer: offload_checkpoints needs gradient_checkpointing (there are no checkpoints to offload without "
            "it; preset {})",
            config_.preset);
    require(projector_.out_features() == decoder_.config().hidden_size,
            "Trainer: the projector gives {} features but the decoder's hidden size is {}", projector_.out_features(),
            decoder_.config().hidden_size);
    require(std::count(codec_.prompt_ids.begin(), codec_.prompt_ids.end(), codec_.placeholder_id) == 1,
            "Trainer: the prompt must hold the video placeholder (id {}) exactly once", codec_.placeholder_id);
    require(codec_.encode && codec_.decode, "Trainer: the text codec needs encode and decode functions");
    (void)early_stopping_mode(config_);
  }

  EarlyStoppingOptions stopping_options() const {
    return {.patience = config_.patience, .threshold = 0.0, .mode = early_stopping_mode(config_)};
  }

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
      require(f.rows() > 0, "no visual tokens (features {})", shape_string(f));  // a clip of nothing to caption
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

  std::vector<optim::Parameter> stage_params(std::size_t s) { return tensors_.for_stage(config_.stages[s].train_lora); }
  void build_optimizer(std::size_t s) {
    const auto params = stage_params(s);
    sync_host_values();  // from the old stage's device optimizer, before it goes
    if constexpr (DeviceOptimizer<Backend>::available) device_optimizer_.reset();  // the old stage's moments
    optimizer_.emplace(optim::transformers_groups(params, config_.weight_decay));
    ++optimizer_generation_;  // also after restore_optimizer: the device optimizer binds to the restored state
  }

  // A device decoder step that keeps d loss / d embeds on the device, and a projector that takes its gradient rows from
  // there (CudaMlp2xGelu::backward_rows): the step's [tokens, hidden] gradients then never cross to the host.
  static constexpr bool kGradEmbedsOnDevice =
      requires(decoder_step_type & s, ProjectorT& p, const float* g, std::span<const Eigen::Index> rows) {
    s.keep_grad_embeds_on_device(true);
    { s.kept_grad_embeds() } -> std::same_as<const float*>;
    p.backward_rows(g, std::int64_t{}, std::int64_t{}, rows);
  };

  // And a projector whose output can stay on the device, and a decoder step that splices it into its input there
  // (model::splice_layout): per micro-batch the visual tokens neither come down to the host nor go up again.
  static constexpr bool kSpliceOnDevice =
      kGradEmbedsOnDevice && requires(decoder_step_type & s, ProjectorT& p, const Matrix& x,
                                      const model::SplicedLayout& l, const loss::CrossEntropyOptions& ce) {
    { p.forward_on_device(x) } -> std::same_as<const float*>;
    s.loss_and_backward_spliced(l, static_cast<const float*>(nullptr), ce);
  };

  // A projector that allocates its device tensors from a caching allocator takes the decoder step's: they count under
  // the run's cap and in its memory stats (model::cuda::CudaMlp2xGelu::use_allocator).
  static constexpr bool kProjectorAllocator = requires(ProjectorT & p, decoder_step_type& s) {
    p.use_allocator(s.device_allocator());
    p.release_device();
  };

  // A projector that also evaluates on the device (model::cuda::CudaMlp2xGelu::apply_on_device): the val clips' visual
  // tokens are projected there, not by the host's cores.
  static constexpr bool kProjectorEvaluatesOnDevice = requires(ProjectorT & p, const Matrix& x) {
    { p.apply_on_device(x, std::uint64_t{}) } -> std::same_as<Matrix>;
  };
  Matrix project_for_evaluation(const Matrix& features) {
    if constexpr (kProjectorEvaluatesOnDevice)
      return projector_.apply_on_device(features, tensors_.values_version());
    else
      return projector_.apply(features);
  }

  // A projector whose tensors live on the device (model::cuda::CudaMlp2xGelu) can be stepped there.
  static constexpr bool kProjectorOnDevice = requires(ProjectorT & p, const float* g) {
    { p.device_parameter(g) } -> std::same_as<std::optional<optim::DeviceParameter>>;
    p.values_current(std::uint64_t{});
  };

  // Where the optimizer's parameters (in its group order) live on the device, when every one does and the step's
  // gradients will be final there: one rank or the ranks summed on the device, and (batch_invariant) the float64 sums
  // rounded there. Empty: the host steps (also the CPU build, and TrainerConfig::optimizer_on_device = false).
  std::vector<optim::DeviceParameter> device_parameters([[maybe_unused]] bool device_rounds) {
    if constexpr (!DeviceOptimizer<Backend>::available) {
      return {};
    } else {
      if (!config_.optimizer_on_device || !optimizer_) return {};
      if (config_.batch_invariant ? !device_rounds : (comm_.size() > 1 && !device_sum_)) return {};
      std::vector<optim::DeviceParameter> out;
      for (const optim::ParamGroup& g : optimizer_->groups()) {
        for (const std::span<float> storage : tensors_.gradient_storage(g.params)) {
          std::optional<optim::DeviceParameter> d = decoder_step_.device_parameter(storage.data());
          if constexpr (kProjectorOnDevice)
            if (!d) d = projector_.device_parameter(storage.data());
          if (!d) return {};
          out.push_back(*d);
        }
      }
      return out;
    }
  }
  // The trainable values on the host again after device optimizer steps, which leave the new values on the device
  // (where the next step reads them) until something on the host reads them: a checkpoint, the evaluation (the
  // projector's apply), the best parameters, the outputs, a new stage's optimizer, the host's own optimizer step.
  void sync_host_values() {
    if constexpr (DeviceOptimizer<Backend>::available) {
      if (!host_values_stale_) return;
      device_optimizer_->download_values();  // into the host's matrices (the biases' shadows)
      host_values_stale_ = false;
      tensors_.push();  // shadows to biases; the version moves, but the device copies are these values:
      decoder_step_.values_current(tensors_.values_version());
      if constexpr (kProjectorOnDevice) projector_.values_current(tensors_.values_version());
    }
  }
  // A checkpoint replaces the values and the moments: whatever the device optimizer still holds (newer than the host's
  // only when an earlier train() on this Trainer ended in an exception) must not come back over them. The restored
  // values move the version, so the device steps upload them; the device optimizer binds again to the restored state.
  void discard_device_values() {
    if constexpr (DeviceOptimizer<Backend>::available) {
      host_values_stale_ = false;
      device_optimizer_.reset();
    }
  }
  // The host AdamW's state is current (a checkpoint is written, or the host steps next): the device's moments into it.
  void optimizer_state_to_host() {
    if constexpr (DeviceOptimizer<Backend>::available)
      if (optimizer_) device_optimizer_.copy_state_to(*optimizer_);
  }

  // A projector that keeps its gradients on the device for a step (model::cuda::CudaMlp2xGelu) takes the step's
  // bracket as the decoder step does (train/decoder_step.hpp).
  static constexpr bool kProjectorBrackets = requires(ProjectorT & p, const float* g) {
    p.begin_step(true, std::uint64_t{});
    { p.sums_on_device(g) } -> std::same_as<bool>;
    p.finish_step(std::function<std::span<double>(const float*)>{}, comm::DeviceSum{}, std::string_view{});
  };
  static_assert(Comm::buffers == comm::Buffers::Host || kProjectorBrackets,
                "Trainer: a device-buffer communicator (comm::Nccl) sums the projector's gradients on the device: "
                "use a projector that keeps them there (model::cuda::CudaMlp2xGelu)");

  // The communicator of the host's collectives (token counts, loss, host gradients): comm_, or comm::Nccl's bootstrap.
  decltype(auto) host_comm() { return comm::host_collectives(comm_); }

  // Whether a gradient's storage is one of `storage` (the step's trained tensors', TrainableTensors::gradient_storage).
  static std::function<bool(const float*)> trained_gradient(std::vector<std::span<float>> storage) {
    return [storage = std::move(storage)](const float* g) {
      return std::any_of(storage.begin(), storage.end(), [g](std::span<float> t) { return t.data() == g; });
    };
  }

  // The host decoder's LoRA gradients only while a step may have written them: under the device optimizer they stay
  // on the device, and the host's (0.72 GB on the H100 preset) stay the zeros they were.
  void zero_all_grads() {
    projector_.zero_grad();
    if (!host_lora_grads_zero_) decoder_.zero_grad();
    host_lora_grads_zero_ = true;
  }

  // ---- one optimizer step ----
  // train_step runs these parts in order: the step's clips and token counts (step_clips), where its gradients are
  // summed and where the optimizer runs (begin_gradients), the micro-batches' losses and backward passes
  // (run_micro_batches), the gradients handed over and summed over the ranks (finish_gradients), their check
  // (check_gradients), then either a skipped step (skip_overflow_step, skip_empty_step, skip_nan_step) or the
  // optimizer's step (apply_step) and its record (report_step).

  // The step's clips on this rank and the step's token counts over every rank.
  struct StepClips {
    std::vector<std::size_t> clips, slots;  // clips[i] is the step's slots[i]-th clip (over every rank)
    std::vector<std::vector<int>> answers;  // answers[i]: clips[i]'s answer ids
    std::size_t per_rank = 0;               // batch × accumulation: the clips a rank takes per step
    long local_valid = 0;                   // supervised tokens on this rank
    long total_valid = 0;                   // over every rank: what the loss is normalised by
    std::size_t total_clips = 0;            // clips with features, over every rank
  };

  // Where the step's gradients go.
  struct StepGradients {
    bool per_clip = false;          // batch_invariant: each clip its own micro-batch, the gradients summed in float64
    bool device_rounds = false;     // the device rounds its float64 sums to float32 itself and hands over that
    bool host_sums = false;         // the device's float64 sums go to the step's ClipGradientSum
    bool device_optimizer = false;  // unscale, clipping and AdamW on the device
    std::vector<std::span<float>> trained;  // the host gradients the step trains
  };

  // What the micro-batches gave.
  struct MicroBatchTotals {
    double loss = 0.0;            // summed over the micro-batches (NaN when the loss refused the logits)
    double flops = 0.0;           // 4·N + 6·L·d·T per sequence position this rank ran (train/lora_mfu.hpp)
    std::string nonfinite_error;  // the loss's refusal, if any
  };

  // The gradients' state after the hand-over.
  struct GradientCheck {
    bool finite = false;    // the loss and every trained gradient are finite
    bool overflow = false;  // loss scaling: the scaled gradients overflowed (torch's found_inf)
    double grad_norm = std::nan("");
  };

  // One optimizer step over the clips order[k·B·A, (k+1)·B·A). Returns false when the step was skipped (NaN, or no
  // clip with features); true after an overflow skip, which is not a NaN step.
  bool train_step(const std::vector<std::size_t>& order, long k, double lr, int stage, int epoch, int epochs) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepClips batch = step_clips(order, k);
    zero_all_grads();
    tensors_.pull();
    const auto params = stage_params(static_cast<std::size_t>(stage));
    ClipGradientSum clip_sums;
    const StepGradients grads = begin_gradients(params, clip_sums);
    // What finish_step hands over, after the micro-batches (every rank, also one whose step failed: the device sums
    // are collectives); with a device sum, this rank's last micro-batch starts them block by block.
    const std::string grads_what = fmt::format("step {}: gradients", pos_.global_step + 1);
    const StepHandOver hand_over{.sums = grads.host_sums ? &clip_sums : nullptr,
                                 .trained = trained_gradient(grads.trained),
                                 .across_ranks = device_sum_,
                                 .what = grads_what,
                                 .keep_on_device = grads.device_optimizer};
    MicroBatchTotals run = run_micro_batches(batch, grads.per_clip, hand_over, clip_sums);
    finish_gradients(grads, hand_over, clip_sums, params, run.loss, batch.local_valid, t0);
    const GradientCheck check = check_gradients(grads.device_optimizer, run.loss, batch.total_clips, params);
    ++pos_.global_step;
    ++steps_this_run_;
    if (check.finite && check.overflow) return skip_overflow_step(run.loss, lr, stage, epoch);
    if (batch.total_clips == 0) return skip_empty_step(stage, epoch);
    if (check.finite || !loss_scaling_.enabled()) ++pos_.stage_step;
    if (!check.finite) return skip_nan_step(run.loss, run.nonfinite_error, stage, epoch);
    nan_streak_ = 0;
    const AppliedStep applied = apply_step(grads.device_optimizer, lr, check.grad_norm);
    result_.losses.push_back(run.loss);
    report_step(StepReport{.stage = stage,
                           .epoch = epoch,
                           .epochs = epochs,
                           .loss = run.loss,
                           .lr = lr,
                           .grad_norm = applied.grad_norm,
                           .tokens = batch.total_valid,
                           .flops = run.flops,
                           .loss_scale = applied.loss_scale,
                           .t0 = t0});
    return true;
  }

  // The clips order[k·B·A, (k+1)·B·A) that fall to this rank and have features, their answers, and the token and clip
  // counts summed over the ranks (with the ranks' dropout masks set for a step that is not summed clip by clip).
  StepClips step_clips(const std::vector<std::size_t>& order, long k) {
    StepClips b;
    b.per_rank = static_cast<std::size_t>(config_.batch_size) * config_.gradient_accumulation_steps;
    const comm::IndexRange shard =
        comm::step_shard(static_cast<std::size_t>(k), b.per_rank, comm_.rank(), comm_.size(), order.size());
    const std::size_t step_begin = static_cast<std::size_t>(k) * b.per_rank * static_cast<std::size_t>(comm_.size());
    for (std::size_t i = shard.begin; i < shard.end; ++i)
      if (features_of(train_[order[i]])) {
        b.clips.push_back(order[i]);
        b.slots.push_back(i - step_begin);
      }
    b.answers.resize(b.clips.size());
    for (std::size_t i = 0; i < b.clips.size(); ++i) {
      b.answers[i] = answer_ids(train_[b.clips[i]]);
      b.local_valid += static_cast<long>(b.answers[i].size());
    }
    b.total_valid = b.local_valid;
    b.total_clips = b.clips.size();
    if (comm_.size() > 1) {  // normalise by the whole step's token count, over every rank
      const bool per_clip = config_.batch_invariant;
      std::array<double, 3> counts{static_cast<double>(b.local_valid), static_cast<double>(b.clips.size()),
                                   per_clip ? 1.0 : 0.0};
      host_comm().all_reduce_sum(std::span<double>(counts), fmt::format("step {}: token counts", pos_.global_step + 1));
      b.total_valid = static_cast<long>(counts[0]);
      b.total_clips = static_cast<std::size_t>(counts[1]);
      check_same_summation(counts[2]);
      if (config_.lora_dropout > 0.0 && !per_clip) {  // each rank its own dropout masks, a function of (step, rank)
        const auto stride = static_cast<std::uint64_t>(2 * config_.gradient_accumulation_steps);
        const auto first = (static_cast<std::uint64_t>(pos_.global_step) * static_cast<std::uint64_t>(comm_.size()) +
                            static_cast<std::uint64_t>(comm_.rank())) *
                           stride;
        decoder_.for_each_lora([&](const std::string&, typename decoder_type::lora_type& l) { l.set_step(first); });
      }
    }
    return b;
  }

  // Opens the step's gradient bracket: the decoder step's, the projector's (its device tensors under the run's cap),
  // the optimizer bound to the device when every trained gradient is final there, and the float64 sums clip by clip.
  StepGradients begin_gradients(const std::vector<optim::Parameter>& params, ClipGradientSum& clip_sums) {
    StepGradients g;
    g.per_clip = config_.batch_invariant;
    decoder_step_.begin_step(g.per_clip);  // a device step keeps its LoRA gradients there until finish_step
    // Per clip, a device step sums its tensors' clips there. When no other rank's sums are to come (one rank, or the
    // ranks summed on the device) it also rounds them to float32 there and hands over that, half the bytes: the
    // ClipGradientSum then holds only the tensors summed on the host. Otherwise it copies its float64 sums into the
    // ClipGradientSum, which sums them over the ranks on the host.
    g.device_rounds = g.per_clip && Backend::on_device && (comm_.size() == 1 || device_sum_);
    g.host_sums = g.per_clip && !g.device_rounds;
    g.trained = tensors_.gradient_storage(params);
    if constexpr (kProjectorAllocator)  // the projector's device tensors under the run's cap, from the first step
      projector_.use_allocator(decoder_step_.device_allocator());
    // The optimizer on the device (train/device_optimizer.hpp) when every trained tensor lives there and its gradient
    // is final there: the step's gradients then stay on the device, and so do the new values until the host reads them.
    const std::vector<optim::DeviceParameter> on_device_params = device_parameters(g.device_rounds);
    g.device_optimizer = !on_device_params.empty();
    // The host's LoRA gradients are written by this step (its backward, the device's hand-over, the sums) unless the
    // device optimizer keeps them on the device.
    if (!g.device_optimizer) host_lora_grads_zero_ = false;
    if constexpr (DeviceOptimizer<Backend>::available) {
      if (g.device_optimizer) {
        if (!device_optimizer_.bound_to(optimizer_generation_, on_device_params)) sync_host_values();
        device_optimizer_.bind(*optimizer_, optimizer_generation_, on_device_params, decoder_step_.device_allocator());
      } else if (device_optimizer_.bound()) {
        sync_host_values();  // the host steps: it continues from the device's values and moments
        device_optimizer_.release_into(*optimizer_);
      }
    }
    // After the binding, whose sync may move the values' version: the projector's weights are those of this version.
    if constexpr (kProjectorBrackets) projector_.begin_step(g.per_clip, tensors_.values_version());
    if (g.per_clip) {
      const auto on_device = [this](std::span<float> t) {
        if constexpr (kProjectorBrackets)
          if (projector_.sums_on_device(t.data())) return true;
        return decoder_step_.sums_on_device(t.data());
      };
      std::vector<std::span<float>> storage = g.trained;
      if (g.device_rounds) std::erase_if(storage, on_device);
      require(!device_sum_ || storage.empty(),
              "Trainer: step {}: the communicator sums gradients on the device, but a trained tensor's gradient is "
              "summed on the host",
              pos_.global_step + 1);
      clip_sums.reset(std::move(storage), on_device);
    }
    return g;
  }

  // The step's micro-batches (one clip each when summed clip by clip, else batch_size clips): projector forward, the
  // decoder's loss and backward, the projector's backward. A loss that refuses its logits (NaN / Inf) ends them.
  MicroBatchTotals run_micro_batches(const StepClips& batch, bool per_clip, const StepHandOver& hand_over,
                                     ClipGradientSum& clip_sums) {
    MicroBatchTotals run;
    loss::CrossEntropyOptions ce;
    ce.label_smoothing = config_.label_smoothing;
    ce.total_valid_tokens = batch.total_valid;
    ce.grad_factor = loss_scaling_.grad_factor();  // 1 without loss scaling
    const std::size_t micro = per_clip ? 1 : static_cast<std::size_t>(config_.batch_size);
    try {
      for (std::size_t mb = 0; mb < batch.clips.size(); mb += micro) {
        const std::size_t mb_end = std::min(batch.clips.size(), mb + micro);
        if (per_clip && config_.lora_dropout > 0.0) set_clip_dropout_step(batch.per_rank, batch.slots[mb]);
        if constexpr (Backend::on_device)
          if (device_sum_ && device_sum_.overlaps() && config_.overlap_gradient_sums && mb_end == batch.clips.size())
            decoder_step_.overlap_sums_with_next_call(hand_over);
        run.loss += micro_batch(batch, mb, mb_end, ce, run.flops);
        if (per_clip) clip_sums.take();
      }
    } catch (const comm::CommError&) {
      throw;  // the ranks' communication failed (a device step's overlapped sums): not a refused loss; the run stops
    } catch (const Error& e) {  // the loss refuses NaN/Inf logits: same as a NaN loss
      run.nonfinite_error = e.what();
      run.loss = std::nan("");
    }
    return run;
  }

  // One micro-batch, the step's clips [mb, mb_end): its loss; its gradients accumulate; `flops` grows by its
  // sequences' useful FLOPs on a device step.
  double micro_batch(const StepClips& batch, std::size_t mb, std::size_t mb_end, const loss::CrossEntropyOptions& ce,
                     double& flops) {
    std::vector<Eigen::Index> counts;  // visual tokens per clip
    Eigen::Index rows = 0;
    for (std::size_t i = mb; i < mb_end; ++i) {
      counts.push_back(cache_.at(key_of(train_[batch.clips[i]])).rows());
      rows += counts.back();
    }
    Matrix feats(rows, projector_.in_features());
    Eigen::Index r = 0;
    for (std::size_t i = mb; i < mb_end; ++i) {
      feats.middleRows(r, counts[i - mb]) = cache_.at(key_of(train_[batch.clips[i]]));
      r += counts[i - mb];
    }
    const auto answers = std::span<const std::vector<int>>(batch.answers).subspan(mb, mb_end - mb);
    if constexpr (kSpliceOnDevice) {  // the visual tokens stay on the device, spliced there
      const float* visual = projector_.forward_on_device(feats);
      const model::SplicedLayout layout = model::splice_layout<float>(codec_.prompt_ids, answers, codec_.placeholder_id,
                                                                      counts, decoder_.embed_tokens(), codec_.pad_id);
      flops += sequence_flops(layout.batch);
      const double loss = decoder_step_.loss_and_backward_spliced(layout, visual, ce).loss;
      projector_.backward_rows(decoder_step_.kept_grad_embeds(), layout.batch.tokens(), decoder_.embed_tokens().cols(),
                               layout.visual_rows);
      return loss;
    } else {
      const Matrix visual = projector_.forward(feats);
      std::vector<model::SplicedSequence> seqs;
      r = 0;
      for (std::size_t i = 0; i < answers.size(); ++i) {
        seqs.push_back(model::splice_visual_tokens<float>(codec_.prompt_ids, answers[i], codec_.placeholder_id,
                                                          Matrix(visual.middleRows(r, counts[i])),
                                                          decoder_.embed_tokens()));
        r += counts[i];
      }
      const auto collated = model::collate<float>(seqs, decoder_.embed_tokens(), codec_.pad_id);
      if constexpr (Backend::on_device) flops += sequence_flops(collated.batch);
      auto res = decoder_step_.loss_and_backward(collated.embeds, collated.batch, collated.labels, ce);
      if constexpr (kGradEmbedsOnDevice)  // the visual rows of d loss / d embeds, gathered on the device
        projector_.backward_rows(decoder_step_.kept_grad_embeds(), collated.embeds.rows(), collated.embeds.cols(),
                                 collated.visual_rows);
      else
        projector_.backward(model::gather_rows<float>(res.grad_embeds, collated.visual_rows));
      return res.loss;
    }
  }

  // Closes the gradient bracket: the device's gradients to the host, once (summed over the ranks there first with a
  // device communicator), the float64 sums over the ranks rounded to float32 once, and the loss and the remaining
  // gradients summed over the ranks. Every rank, also one whose step failed: the sums are collectives (the step is
  // then skipped on all).
  void finish_gradients(const StepGradients& g, const StepHandOver& hand_over, ClipGradientSum& clip_sums,
                        const std::vector<optim::Parameter>& params, double& loss, long local_valid,
                        std::chrono::steady_clock::time_point t0) {
    decoder_step_.finish_step(hand_over);
    if constexpr (kProjectorBrackets) {
      std::function<std::span<double>(const float*)> sums_of;
      if (g.host_sums) sums_of = [&clip_sums](const float* t) { return clip_sums.sums_of(t); };
      projector_.finish_step(sums_of, device_sum_, hand_over.what, g.device_optimizer);
    }
    if (g.per_clip) {  // the ranks' float64 sums (on the host unless the device summed them), rounded to float32 once
      if (!device_sum_) clip_sums.all_reduce_sum(host_comm(), hand_over.what);
      clip_sums.store();
    }
    tensors_.pull_grads();
    if (comm_.size() > 1)
      reduce_step(g.per_clip || device_sum_ ? std::vector<optim::Parameter>{} : params, loss, local_valid, t0);
  }

  // Whether the step can go on: the loss finite and the step not empty; then, with loss scaling, the gradients
  // unscaled and checked for overflow; else every trained gradient finite. On the device the unscale, the check and
  // the global norm's clip run there (the norm is kept for the step's record).
  GradientCheck check_gradients(bool device_optimizer, double loss, std::size_t total_clips,
                                const std::vector<optim::Parameter>& params) {
    GradientCheck c;
    c.finite = std::isfinite(loss) && total_clips > 0;
    if (device_optimizer) {
      // On the device: unscale (found_inf), then the global norm, which is not finite exactly when a gradient is not
      // (the host's check), and the clip, which the norm's kernel applies only to a finite norm. With loss scaling the
      // scaler records once: an overflow in the scaled gradients, or in the unscaled ones (a scale below 1 multiplies
      // them), is an overflow step.
      if constexpr (DeviceOptimizer<Backend>::available) {
        if (c.finite) {
          const bool found =
              loss_scaling_.enabled() && device_optimizer_->unscale_overflowed(loss_scaling_.inv_scale());
          if (!found) c.grad_norm = device_optimizer_->clip_grad_norm(config_.max_grad_norm);
          if (loss_scaling_.enabled())
            c.overflow = loss_scaling_.record_overflow(found || !std::isfinite(c.grad_norm));
          else
            c.finite = std::isfinite(c.grad_norm);
        }
      }
    } else if (c.finite && loss_scaling_.enabled()) {
      c.overflow = loss_scaling_.unscale_overflowed(optimizer_->groups());  // every gradient × 1/scale, before clipping
    } else {
      for (const auto& p : params) c.finite = c.finite && all_finite(*p.grad);
    }
    return c;
  }

  // What every skipped step does after its own counters: its loss (or NaN) in the curve, a line, a log record, the
  // gradients zeroed, and the step's memory peaks dropped so that the next step's start afresh.
  void end_skipped_step(double loss, const std::string& message, nlohmann::json record) {
    result_.losses.push_back(loss);
    say(message);
    if (log_) log_->write(record);
    zero_all_grads();
    (void)decoder_step_.take_step_memory();
  }

  // A finite loss whose gradients overflowed: the scale was too large for them. Not a NaN step: the run goes on at
  // the smaller scale. The schedule does not advance (pos_.stage_step stays), as accelerate holds the scheduler back
  // when the scaler skipped the optimizer step.
  bool skip_overflow_step(double loss, double lr, int stage, int epoch) {
    const optim::GradScalerUpdate u = loss_scaling_.skip(/*unscaled=*/true);
    ++result_.skipped_overflow_steps;
    nan_streak_ = 0;  // its loss was finite: the NaN losses before it and after it are not in a row
    end_skipped_step(loss,
                     fmt::format("step {}: gradients overflowed at loss scale {:g}: step skipped, loss scale {:g}",
                                 pos_.global_step, u.scale_before, u.scale_after),
                     nlohmann::json{{"type", "overflow_skip"},
                                    {"step", pos_.global_step},
                                    {"stage", stage + 1},
                                    {"epoch", epoch + 1},
                                    {"loss", detail::finite_or_null(loss)},
                                    {"lr", lr},
                                    {"loss_scale", u.scale_after}});
    return true;
  }

  // A step whose every clip was skipped (their features failed) has no gradients for the scaler to find: it keeps
  // its scale, and the schedule goes on as it does without loss scaling. Not in the streak of NaN steps that stops a
  // run either.
  bool skip_empty_step(int stage, int epoch) {
    ++pos_.stage_step;
    ++result_.skipped_empty_steps;
    end_skipped_step(
        std::nan(""),
        fmt::format("step {}: none of its clips has features (each one is among the skipped clips); step skipped",
                    pos_.global_step),
        nlohmann::json{{"type", "empty_skip"}, {"step", pos_.global_step}, {"stage", stage + 1}, {"epoch", epoch + 1}});
    return false;
  }

  // A NaN / Inf loss or gradient. Under loss scaling torch's scaler finds the NaN gradients, skips the optimizer step
  // and backs off, and accelerate then holds the scheduler back, as after an overflow; otherwise the schedule goes on
  // over the skipped step (train_step advances it before this).
  bool skip_nan_step(double loss, const std::string& nonfinite_error, int stage, int epoch) {
    (void)loss_scaling_.skip(/*unscaled=*/false);
    ++nan_streak_;
    ++result_.skipped_nan_steps;
    end_skipped_step(
        std::nan(""),
        fmt::format("step {}: loss {} is not finite{}; step skipped ({} in a row)", pos_.global_step, loss,
                    nonfinite_error.empty() ? "" : " (" + nonfinite_error + ")", nan_streak_),
        nlohmann::json{{"type", "nan_skip"}, {"step", pos_.global_step}, {"stage", stage + 1}, {"epoch", epoch + 1}});
    return false;
  }

  struct AppliedStep {
    double grad_norm = 0.0;            // the global norm before clipping
    std::optional<double> loss_scale;  // the scale the scaler moved to (none without loss scaling)
  };

  // The optimizer's step at `lr`: on the device, whose gradients check_gradients unscaled and clipped there
  // (`device_norm`: their norm), or clipping and AdamW on the host and the new values pushed to where the decoder step
  // reads them.
  AppliedStep apply_step(bool device_optimizer, double lr, double device_norm) {
    AppliedStep a;
    if (device_optimizer) {
      a.grad_norm = device_norm;
      if constexpr (DeviceOptimizer<Backend>::available) {
        device_optimizer_->step(lr);
        host_values_stale_ = true;  // the new values stay on the device, where the next step reads them
      }
    } else {
      a.grad_norm =
          optim::clip_grad_norm(std::span<const optim::ParamGroup>(optimizer_->groups()), config_.max_grad_norm);
      optimizer_->step(lr);
    }
    a.loss_scale = loss_scaling_.stepped();
    if (!device_optimizer) tensors_.push();  // also tells the decoder step that the values changed
    return a;
  }

  struct StepReport {
    int stage = 0, epoch = 0, epochs = 0;  // 0-based stage and epoch; the stage's epochs
    double loss = 0.0, lr = 0.0, grad_norm = 0.0;
    long tokens = 0;     // supervised tokens over every rank
    double flops = 0.0;  // this rank's useful FLOPs
    std::optional<double> loss_scale;
    std::chrono::steady_clock::time_point t0;  // the step's start
  };

  // A stepped step's log record and progress line: loss, lr, gradient norm, tokens/s, memory peaks, loss scale, MFU.
  void report_step(const StepReport& s) {
    const std::optional<MemoryStats> memory = decoder_step_.take_step_memory();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.t0).count();
    std::optional<double> mfu;  // this rank's useful FLOPs over the step's wall time, of its GPU's peak
    const double peak_tflops = config_.mfu_peak_tflops.value_or(P::peak_tflops_16bit);
    if (Backend::on_device && peak_tflops > 0.0 && dt > 0.0) mfu = lora_mfu(s.flops, dt, peak_tflops * 1e12);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const double tokens_per_s = dt > 0 ? static_cast<double>(s.tokens) / dt : 0.0;
    if (log_)
      log_->write(StepRecord{.stage = s.stage + 1,
                             .epoch = s.epoch + 1,
                             .step = pos_.global_step,
                             .total_steps = total_steps_,
                             .loss = s.loss,
                             .lr = s.lr,
                             .grad_norm = s.grad_norm,
                             .tokens = s.tokens,
                             .tokens_per_s = tokens_per_s,
                             .elapsed_s = elapsed,
                             .memory = memory,
                             .loss_scale = s.loss_scale,
                             .mfu = mfu,
                             .backend = std::string(Backend::name)});
    if (config_.progress) {
      ProgressState ps{.stage = s.stage + 1,
                       .stages = static_cast<int>(config_.stages.size()),
                       .epoch = s.epoch + 1,
                       .epochs = s.epochs,
                       .step = pos_.global_step,
                       .total_steps = total_steps_,
                       .steps_this_run = steps_this_run_,
                       .elapsed_s = elapsed,
                       .loss = s.loss,
                       .lr = s.lr,
                       .tokens_per_s = tokens_per_s,
                       .backend = Backend::on_device ? std::string(Backend::name) : std::string(),
                       .memory = memory ? memory_progress_text(*memory) : std::string(),
                       .mfu = mfu.value_or(0.0)};
      *config_.progress << (config_.progress_newlines ? "" : "\r") << format_progress(ps)
                        << (config_.progress_newlines ? "\n" : "") << std::flush;
    }
  }

  static std::string key_of(const Clip& c) { return c.video.string() + "\n" + c.id; }

  // The useful FLOPs of a micro-batch's sequences: each runs its own length n (the mask's ones, no padding) at
  // lora_training_flops_per_token(n) per position.
  double sequence_flops(const model::SequenceBatch& b) const {
    double flops = 0.0;
    for (Eigen::Index i = 0; i < b.batch; ++i) {
      const auto mask = b.mask_of(i);
      const double n =
          mask.empty() ? static_cast<double>(b.seq_len) : static_cast<double>(std::count(mask.begin(), mask.end(), 1));
      flops += n * lora_training_flops_per_token(decoder_.config(), n);
    }
    return flops;
  }

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
    host_comm().all_reduce_sum(std::span<double>(s), fmt::format("step {}: loss", step));
    std::vector<std::span<float>> grads;
    for (const auto& p : params) grads.emplace_back(p.grad->data(), static_cast<std::size_t>(p.grad->size()));
    comm::GradientBuckets(std::move(grads)).all_reduce_sum(host_comm(), fmt::format("step {}: gradients", step));
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
  void save_checkpoint(const std::filesystem::path& path) {
    if (comm_.rank() != 0) return;  // rank 0 writes; every rank holds the same parameters
    sync_host_values();             // the values and the moments the device optimizer holds
    optimizer_state_to_host();
    write_checkpoint(path, tensors_.tensor_map(), optimizer_ ? &*optimizer_ : nullptr,
                     {.position = pos_,
                      .dropout_steps = lora_dropout_steps(decoder_),
                      .stopper = stopper_,
                      .best_score = best_score_,
                      .best = best_,
                      .fingerprint = fingerprint(),
                      .grad_scaler = loss_scaling_.state()});
  }

  // Restores the parameters and the trainer state; the caller restores the optimizer once its stage built it.
  Checkpoint load_checkpoint(const std::filesystem::path& path) {
    Checkpoint checkpoint = open_checkpoint(path, fingerprint());
    for (const auto& warning : checkpoint.warnings) say(warning);
    discard_device_values();
    tensors_.load(checkpoint.file);
    TrainerState state = trainer_state_from_json(checkpoint.state, stopping_options());
    pos_ = state.position;
    restore_lora_dropout_steps(decoder_, state.dropout_steps);
    stopper_ = std::move(state.stopper);
    best_score_ = state.best_score;
    best_ = std::move(state.best);
    if (const std::string said = loss_scaling_.restore(state.grad_scaler); !said.empty()) say(said);
    say(fmt::format("resumed from {} at step {} (stage {}, epoch {}, step {} of the epoch)", path.string(),
                    pos_.global_step, pos_.stage + 1, pos_.epoch + 1, pos_.step_in_epoch));
    return checkpoint;
  }

  TrainResult finish() {
    sync_host_values();  // the run's values, for the outputs and the caller
    if (config_.progress && !config_.progress_newlines) *config_.progress << '\n';
    result_.steps = pos_.global_step;
    result_.best = best_;
    if (result_.status != TrainStatus::NanStopped && result_.status != TrainStatus::Interrupted) {
      if (comm_.size() > 1) comm_.barrier("the end of training (rank 0 writes the best parameters)");
      if (std::filesystem::exists(best_path())) {
        tensors_.load(io::SafetensorsFile::open(best_path()));
      }
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
            {.metric = config_.early_stopping_metric, .higher_is_better = early_stopping_mode(config_) == Mode::Max});
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
  TrainableTensors tensors_;
  decoder_step_type decoder_step_;  // the decoder's loss and backward on Backend (after decoder_ and tensors_)
  comm::DeviceSum device_sum_;      // comm_'s sums of device buffers (comm::Nccl), else empty: the host sums gradients
  std::optional<optim::AdamW> optimizer_;      // the optimizer of record (its state is what checkpoints save)
  std::uint64_t optimizer_generation_ = 0;     // counts build_optimizer calls: a device optimizer binds to one
  DeviceOptimizer<Backend> device_optimizer_;  // steps optimizer_ on the device when the step's gradients are there
  bool host_lora_grads_zero_ = false;          // the host decoder's LoRA gradients are all zero (zero_all_grads)
  bool host_values_stale_ = false;             // it stepped since the host's values were last synced (sync_host_values)
  std::vector<Clip> train_, val_;
  std::string data_fingerprint_;  // of train_ and val_ (data_fingerprint), recorded in the checkpoints
  std::map<std::string, Matrix> cache_;
  std::set<std::string> failed_;
  std::set<std::string> truncated_;  // clips whose caption was truncated (reported once each)
  TrainingPosition pos_;
  EarlyStopping stopper_{};
  std::optional<double> best_score_;
  std::optional<EvalResult> best_;
  int nan_streak_ = 0;
  LossScaling loss_scaling_;  // config_.loss_scaler, from train()
  long total_steps_ = 0, steps_this_run_ = 0;
  std::chrono::steady_clock::time_point started_{};
  std::optional<JsonlLog> log_;
  TrainResult result_;
};

}  // namespace vidlora::train

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using train::Trainer;
}  // namespace vidlora
