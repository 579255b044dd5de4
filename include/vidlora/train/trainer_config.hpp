#pragma once
// TrainerConfig: a run's settings, defaulted from a preset (from_preset) and adjustable before training, and the
// StageSettings of each of its stages.

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <vidlora/eval/caption_metrics.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/optim/grad_scaler.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/memory_cap.hpp>

namespace vidlora::train {

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
  int num_frames = 8;  // frames sampled per clip; the caller's FeatureFn samples this many
  // The frame sampler of the caller's FeatureFn ("uniform", "scene_change", "motion"): the Trainer only records it, in
  // the checkpoints' configuration, so that a resume with another sampler is refused and caption can sample as the run
  // was trained.
  std::string frame_sampler = "uniform";
  std::string precision = "fp32";  // "fp32", "fp16" or "bf16" (presets::precision_of<P>); the CPU trainer: fp32;
                                   // a device trainer: fp32 or "tf32" (GEMMs on TF32 tensor cores)
  // Dynamic loss scaling (optim::GradScaler: torch.amp.GradScaler's rules): the loss gradient × scale, the gradients
  // unscaled before clipping, a step whose gradients hold Inf/NaN skipped with the scale halved, the scale doubled
  // after growth_interval clean steps; the state goes into checkpoints. from_preset enables it for the fp16 presets
  // (T4, L4). Any precision may enable it: a power-of-two scale leaves a step without overflow the bits of the same
  // step unscaled.
  optim::GradScalerOptions loss_scaler{.enabled = false};
  double weight_decay = 0.01;
  double max_grad_norm = 1.0;
  double label_smoothing = 0.0;
  double lora_dropout = 0.0;
  std::vector<std::string> target_modules;
  bool load_in_4bit = false;
  bool gradient_checkpointing = false;
  // Device runs (a backend with on_device): the cap on what the decoder step's caching allocator holds
  // (max_memory_gb; 0: the preset's vram_gb minus presets::kDeviceMemoryReserveGiB), and whether the checkpointed
  // block inputs wait in pinned host memory (with gradient_checkpointing). The CPU trainer refuses both.
  presets::DeviceMemoryOptions device_memory{};
  bool offload_checkpoints = false;
  // Device runs: clipping and AdamW on the device (train/device_optimizer.hpp) whenever the step's gradients are final
  // there (one rank, or the ranks summed on the device by comm::Nccl); the moments live there too and come to the host
  // for checkpoints. false: on the host's cores, the gradients copied down and the values up every step (the CPU
  // build always steps on the host).
  bool optimizer_on_device = true;
  // Device runs over a communicator that sums device buffers (comm::Nccl): each rank's last micro-batch of a step
  // starts the sums of a block's LoRA gradients over the ranks as soon as its backward has written them, while the
  // blocks below still run (DecoderStep<Cuda>::overlap_sums_with_next_call). The same bits either way; false: every
  // sum after the step's last backward (the baseline of docs/distributed.md's measurement).
  bool overlap_gradient_sums = true;
  // Device runs: the dense 16-bit tensor peak (TFLOP/s) that the step records' and the progress line's MFU divide by.
  // Unset: the preset's card's (P::peak_tflops_16bit); 0: no MFU. train_captioner sets the GPU that runs
  // (train::dense_16bit_peak_tflops; 0 for a GPU it does not know), so a T4 preset run on an A100 is not measured
  // against a T4.
  std::optional<double> mfu_peak_tflops;
  std::uint64_t seed = 0;
  // evaluation
  int patience = 5;
  std::string early_stopping_metric = "eval_loss";  // or a metric: meteor, cider_d, bleu4, rouge_l, unique_ratio,
                                                    // meteor_morphemes (needs caption_metrics.morpheme_tokenizer)
  double collapse_threshold = 0.5;
  // Tokenisation of the evaluation metrics; morpheme_tokenizer adds METEOR on morphemes, e.g.
  // eval::CachingTokenizer<eval::MecabKoTokenizer> for the Korean METEOR users report (docs/eval.md).
  eval::CaptionMetricsOptions caption_metrics{};
  model::GenerationOptions generation{};
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
  // The caller's digest of the frozen base model the run trains on (train_captioner: demo::model_fingerprint of
  // --model): checkpoints record it and a resume must give the same ("" → none recorded, nothing checked).
  std::string base_model_fingerprint;
  // The question each training sequence asks before its caption, where the caller sets it apart from the model
  // (train_captioner: --prompt with a Hugging Face model): checkpoints record it and a resume must give the same
  // ("" → none recorded, nothing checked; a checkpoint without one resumes).
  std::string prompt;
  // A PEFT adapter directory (e.g. trained with PEFT in Python) the run starts from: its lora_A / lora_B,
  // lora_alpha and rsLoRA replace the fresh initialisation and the preset's alpha (the adapter written at the
  // end keeps them). Its r must be P::lora_r and its modules exactly the run's LoRA layers; otherwise an
  // error names the difference. Empty: fresh LoRA (Kaiming-uniform A, zero B).
  std::filesystem::path initial_adapter{};
  std::ostream* progress = &std::cerr;  // nullptr: silent
  bool progress_newlines = false;       // true: one line per step (logs); false: '\r' updates

  // Every preset field that a run reads: stage 1 from the recipe (P::stage1), stage 2 from the preset
  // (presets::stage2_of<P>: P::learning_rate, P::warmup_ratio), and the preset's batch × accumulation,
  // frames, precision (and the fp16 presets' loss scaling), label smoothing, patience, weight decay, clipping,
  // dropout, target set, 4-bit base and gradient checkpointing. tests/trainer/test_trainer_config.cpp compares each field with its P:: constant.
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
    c.loss_scaler = optim::GradScaler::options_for_precision(presets::precision_of<P>());
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

}  // namespace vidlora::train

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using train::StageSettings;
using train::TrainerConfig;
}  // namespace vidlora
