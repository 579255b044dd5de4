// train_captioner: the two-stage captioner trainer, built for one preset (-DVIDLORA_PRESET=Cpu|T4|L4|A100|H100).
// `train_captioner --help` lists every option; kTrainOptions below is that list.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <iostream>
#include <unistd.h>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vidlora/core/memory_stats.hpp>
#include <vidlora/eval/caption_metrics.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/train/random_vision_weights.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/train/dataset.hpp>

#include <vidlora/comm/any_communicator.hpp>
#include <vidlora/comm/tcp.hpp>
#if defined(VIDLORA_TRAIN_ON_CUDA)
#include <vidlora/model/cuda/cuda_mlp2x_gelu.cuh>
#endif
#if defined(VIDLORA_MPI)  // built with vidlora::mpi (cmake/VidloraMpi.cmake): mpirun -np N train_captioner ...
#include <vidlora/comm/mpi.hpp>
#endif
#if defined(VIDLORA_TRAIN_NCCL)  // a GPU preset built with vidlora::nccl: the ranks sum gradients on their GPUs
#include <vidlora/comm/cuda/nccl.hpp>
#endif
#if defined(VIDLORA_TRAIN_ON_CUDA)
#include <vidlora/comm/cuda/local_device.hpp>
#endif

#include "demo_attributes.hpp"
#include "demo_common.hpp"
#include "one_line.hpp"
#include "hf_model.hpp"
#if defined(VIDLORA_TRAIN_ON_CUDA)
#include "gpu_program.hpp"
#endif

#if __has_include(<sentencepiece_trainer.h>)
#include <sentencepiece_trainer.h>
#define VIDLORA_HAVE_SPM_TRAINER 1
#endif

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

// The first SIGINT/SIGTERM asks the trainer to save a checkpoint and stop after the current step (or, in a GPU build's
// up-front clip encoding, to stop at the next clip); a second one ends the program at once.
volatile std::sig_atomic_t g_signal = 0;
void on_stop_signal(int sig) {
  if (train::interrupt_requested().exchange(true)) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_signal = sig;
  static const char msg[] =
      "\ntrain_captioner: stopping after this step and saving a checkpoint, or at the next clip while encoding (again "
      "to quit now)\n";
  [[maybe_unused]] const auto n = ::write(2, msg, sizeof msg - 1);
}

// SIGINT and SIGTERM to `handler` (on_stop_signal, or SIG_DFL: the program ends at once).
void handle_stop_signals(void (*handler)(int)) {
  std::signal(SIGINT, handler);
  std::signal(SIGTERM, handler);
}
// The exit status of a run stopped by the first signal: 128 + its number, as the shell reports one.
int stopped_exit_status() { return g_signal == SIGTERM ? 143 : 130; }

// --metric's values: eval_loss and the caption scores (eval::caption_scores, the names the training log writes).
std::string early_stopping_metric_names() { return "eval_loss, " + eval::caption_score_names(); }
bool is_early_stopping_metric(const std::string& name) {
  return name == "eval_loss" || std::any_of(eval::caption_scores.begin(), eval::caption_scores.end(),
                                            [&](const auto& s) { return s.name == name; });
}

// --data as the program reads it: a .jsonl manifest, an AI-Hub tree (labels/ + videos/, or train/ and val/ ones), a
// directory with manifest.jsonl and no labels/ (that manifest), or else an AI-Hub download as unpacked (its
// Dataset::layout is printed once read); a directory with a tree and manifest.jsonl is read as a tree, saying so.
fs::path dataset_source(const fs::path& data) {
  std::error_code ec;
  const fs::path manifest = data / "manifest.jsonl";
  if (!fs::is_directory(data, ec) || !fs::is_regular_file(manifest, ec)) return data;
  const bool tree =
      fs::is_directory(data / "labels", ec) ||
      (fs::is_directory(data / "train", ec) && fs::is_directory(data / "val", ec) &&
       (fs::is_directory(data / "train" / "labels", ec) || fs::is_directory(data / "val" / "labels", ec)));
  if (!tree) return manifest;
  fmt::print("data: reading the AI-Hub tree in {} (labels/, videos/), not its manifest.jsonl (--data {} reads that)\n",
             data.string(), manifest.string());
  return data;
}

// The defaults of the options TrainerConfig does not hold, written once: the usage text states them and the program
// reads them (TrainerConfig's own, the preset's and the recipe's, come from TrainerConfig::from_preset<ActivePreset>).
namespace defaults {
constexpr const char* kData = "demo_data";
constexpr const char* kModel = "demo_model";
constexpr const char* kOut = "vidlora_out";
constexpr double kValFraction = 0.1;
constexpr int kSeed = 0;
constexpr double kCommTimeout = 600.0;
// stage 0 (the demo model)
constexpr int kStage0Epochs = 12, kVocab = 160, kHidden = 128, kIntermediate = 344, kLayers = 2, kImageSize = 32,
              kPool = 2, kPatch = 8, kVisionHidden = 64, kVisionLayers = 2, kChangePool = 0;
constexpr double kStage0Lr = 3e-3;
constexpr const char* kPositions = "clip_init";
}  // namespace defaults

// How --data is read: the held-out fraction, and --caption-field.
train::DatasetOptions dataset_options(const demo::Args& a) {
  return {.val_fraction = a.real("val-fraction", defaults::kValFraction),
          .seed = 0,
          .caption_field = a.str("caption-field", "")};
}

demo::CommandLine command_line() {
  using namespace demo;
  const TrainerConfig d = TrainerConfig::from_preset<ActivePreset>();
  return CommandLine(
      "train_captioner",
      "train_captioner --data DIR --model DIR [--out DIR] [options]   stage 1 + stage 2, then held-out metrics\n"
      "       train_captioner --dry-run [--preset NAME]                  the configuration and its memory estimate\n"
      "       train_captioner --stage0 --data DIR --model NEW_DIR        demo only: tokenizer, tiny decoder, random "
      "ViT\n"
      "\n"
      "DIR for --data: an AI-Hub directory (labels/*.json + videos/), a manifest FILE.jsonl, a directory with\n"
      "manifest.jsonl and no labels/ (a directory with both reads labels/ and says so), or an AI-Hub download\n"
      "as unpacked (Training/ and Validation/ with label JSON and videos in folders at any depth).\n"
      "DIR for --model: a Hugging Face LLaVA / LLaVA-NeXT-Video save_pretrained directory (with its processor),\n"
      "trained with the preset's recipe (on the GPU in a GPU preset's build, else on the CPU), or the demo's\n"
      "(--stage0).\n"
      "Outputs in --out: adapter/ (PEFT), projector.safetensors, val_captions.jsonl, train_log.jsonl, curves.svg,\n"
      "checkpoints/ (last + best). Ctrl-C saves a checkpoint and stops (exit 130); --resume continues.\n"
      "FFmpeg's last error for a video is part of the error naming the video; FFmpeg's own lines show from\n"
      "the level VIDLORA_FFMPEG_LOG names (quiet|fatal|error|warning|info|debug; default info, FFmpeg's).",
      {
          flag("dry-run",
               "print the configuration (with where each value comes from) and exit; with --data, also how the data\n"
               "is read (what is skipped, a few clips) and each stage's optimizer steps on it"),
          flag("stage0", "demo only: build the model directory --model from the captions in --data"),
          text("preset", "NAME",
               fmt::format("the preset this binary was built for: {} (others: shown with --dry-run only)",
                           ActivePreset::name)),
          text("data", "DIR", fmt::format("training data (default {})", defaults::kData)),
          text("caption-field", "FIELD",
               "where the labels keep the caption, instead of a \"caption\" field: a JSON pointer\n"
               "(/annotations/0/description) or a field name (description); a label without one is skipped,\n"
               "the summary naming the text it holds"),
          text("model", "DIR",
               fmt::format("model directory: a Hugging Face LLaVA / LLaVA-NeXT-Video one, or the demo's "
                           "(default {}; written by --stage0)",
                           defaults::kModel)),
          text("prompt", "TEXT",
               "Hugging Face model only: the question in its chat template (default: Describe "
               "this video.)"),
          text("out", "DIR", fmt::format("output directory (default {})", defaults::kOut)),
          flag("resume", "continue the run in --out from checkpoints/last.safetensors"),
          flag("move-aside", "if --out holds another run's results, move them to OUT.previous-<time>/"),
          text("cache", "DIR", "feature cache (default OUT/feature_cache)"),
          text("sampler", "NAME",
               fmt::format("frame sampler: {} (default {})", video::sampling_policy_names(), d.frame_sampler)),
          integer("frames", "N", fmt::format("frames per clip (default: the preset's, {})", d.num_frames), 1),
          integer("epochs1", "N", fmt::format("stage 1 epochs (default {})", d.stages[0].epochs)),
          integer("epochs2", "N", fmt::format("stage 2 epochs (default {})", d.stages[1].epochs)),
          real("lr1", "X", fmt::format("stage 1 learning rate (default {:g})", d.stages[0].learning_rate)),
          real("lr2", "X", fmt::format("stage 2 learning rate (default {:g})", d.stages[1].learning_rate)),
          integer("batch", "N",
                  fmt::format("clips per batch (run one clip at a time unless --float32-batches; default {})",
                              d.batch_size),
                  1),
          integer("accum", "N", fmt::format("gradient accumulation steps (default {})", d.gradient_accumulation_steps),
                  1),
          flag("float32-batches",
               "micro-batches of --batch clips with float32 gradient sums instead of one clip at a time summed in "
               "float64: the run then depends on how a step's clips are split over ranks and batches"),
          integer("seed", "N",
                  fmt::format("seed of the data order, LoRA init and dropout (default {})", defaults::kSeed)),
          integer("patience", "N", fmt::format("early-stopping patience in evaluations (default {})", d.patience), 1),
          real("label-smoothing", "X",
               fmt::format("label smoothing of both stages' cross-entropy (default: the preset's, {:g})",
                           d.label_smoothing)),
          text("metric", "NAME",
               fmt::format("early-stopping metric: {} (default {})", early_stopping_metric_names(),
                           d.early_stopping_metric)),
          real("val-fraction", "X",
               fmt::format("held-out fraction of the data, in [0, 1) (default {:g})", defaults::kValFraction)),
          integer("max-caption-tokens", "N",
                  fmt::format("captions longer than this are truncated, with a report line (default {})",
                              d.max_caption_tokens),
                  1),
          real("max-memory-gb", "X",
               "GPU builds: cap on the device memory of the decoder step in GiB (default: the preset's vram_gb minus "
               "2 GiB), so that a bigger card behaves like the preset's"),
          flag("offload-checkpoints",
               "GPU builds with gradient checkpointing: keep the checkpointed layer inputs in pinned host memory"),
          flag("host-optimizer",
               "GPU builds: clip and step AdamW on the host's cores (the gradients copied down every step) instead "
               "of on the GPU"),
          flag("sums-after-backward",
               "GPU builds over NCCL: sum the LoRA gradients over the ranks after the step's last backward instead of "
               "block by block during it (the same numbers; the baseline for timing the overlap)"),
          text("precision", "NAME",
               "GPU builds: fp32, tf32 (TF32 GEMMs), bf16 (sm_80+) or fp16 (16-bit frozen GEMMs) instead of the "
               "preset's; the CPU build computes in fp32"),
          real("loss-scale", "X",
               "initial dynamic loss scale (torch.amp.GradScaler's rules; default: 65536 for the fp16 presets, off "
               "for the others); 0 turns loss scaling off"),
          text("init-adapter", "DIR",
               "start LoRA from this PEFT adapter (e.g. trained with PEFT in Python): its factors and alpha, and its "
               "projector when it saves one (modules_to_save); its r must be the preset's"),
          integer("checkpoint-every", "N", "also save a checkpoint every N optimizer steps (default: epoch ends)"),
          integer("max-steps", "N", "stop as Ctrl-C does after N optimizer steps of this run (0: no limit)"),
          integer("num-beams", "N",
                  fmt::format("beam width of the evaluation captions (default {}; 1: greedy)", kDefaultNumBeams), 1),
          integer("max-new-tokens", "N", fmt::format("longest evaluation caption (default {})", kDefaultMaxNewTokens),
                  1),
          real_above(
              "repetition-penalty", "X",
              fmt::format("evaluation repetition penalty, > 0 (default {:g}; 1: off)", kDefaultRepetitionPenalty), 0),
          integer("no-repeat-ngram-size", "N",
                  fmt::format("evaluation: no repeated n-grams of this size (default {}; 0: off)",
                              kDefaultNoRepeatNgramSize)),
          flag("log-lines",
               "progress as one line per step (for logs) instead of one updating line (the default when stderr is "
               "not a terminal)"),
          text("comm", "KIND",
               "data parallel: single, mpi, tcp or nccl (default with more than one rank: nccl in a GPU build with "
               "NCCL, one GPU per rank; else mpi under mpirun / srun, tcp under a launcher without MPI that sets RANK, "
               "WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as torchrun does); docs/distributed.md"),
          real("comm-timeout", "S",
               fmt::format("mpi, tcp, nccl: seconds a rank waits for the others before the job stops with an error "
                           "(default {:g})",
                           defaults::kCommTimeout)),
          integer("stage0-epochs", "N",
                  fmt::format("stage 0: epochs of caption-text pretraining (default {})", defaults::kStage0Epochs)),
          real("stage0-lr", "X", fmt::format("stage 0: learning rate (default {:g})", defaults::kStage0Lr)),
          integer("vocab", "N", fmt::format("stage 0: tokenizer vocabulary size (default {})", defaults::kVocab), 8),
          integer("hidden", "N", fmt::format("stage 0: decoder width (default {})", defaults::kHidden), 8),
          integer("intermediate", "N", fmt::format("stage 0: decoder MLP width (default {})", defaults::kIntermediate),
                  8),
          integer("layers", "N", fmt::format("stage 0: decoder layers (default {})", defaults::kLayers), 1),
          integer("image-size", "N",
                  fmt::format("stage 0: vision encoder input size in pixels (default {})", defaults::kImageSize), 8),
          integer("pool", "N", fmt::format("stage 0: pooling stride of the patch grid (default {})", defaults::kPool),
                  1),
          integer("patch", "N",
                  fmt::format("stage 0: vision encoder patch size in pixels (default {})", defaults::kPatch), 1),
          integer("vision-hidden", "N",
                  fmt::format("stage 0: vision encoder width (default {}; MLP 2x)", defaults::kVisionHidden), 4),
          integer("vision-layers", "N",
                  fmt::format("stage 0: vision encoder layers (default {}); the features are the input of the last one",
                              defaults::kVisionLayers),
                  1),
          text("positions", "KIND",
               fmt::format("stage 0: the random encoder's position embedding, clip_init or sincos_2d (default {})",
                           defaults::kPositions)),
          integer("change-pool", "N",
                  fmt::format("stage 0: after the frames, the tokens of the clip's largest frame-to-frame change (the "
                              "two neighbouring frames' absolute difference through the encoder), pooled by N (default "
                              "{}: none)",
                              defaults::kChangePool),
                  0),
      });
}

// The options only --stage0 reads (the demo model's sizes and its pretraining), and those it reads besides: any other
// option given with --stage0, and any of these without it, would be ignored, so each is an error naming it.
const std::set<std::string>& stage0_only_options() {
  static const std::set<std::string> names{"stage0-epochs", "stage0-lr",  "vocab",      "hidden", "intermediate",
                                           "layers",        "image-size", "pool",       "patch",  "vision-hidden",
                                           "vision-layers", "positions",  "change-pool"};
  return names;
}
const std::set<std::string>& stage0_also_reads() {
  static const std::set<std::string> names{"stage0", "data", "model", "val-fraction", "preset", "caption-field"};
  return names;
}

// Options that do not apply to what the command line asks for (stage 0 or training), or that contradict each other.
void check_mode_options(const demo::Args& a) {
  const auto options = [](const std::vector<std::string>& names) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "--" : ", --") + n;
    return list;
  };
  std::vector<std::string> not_applying;
  for (const auto& name : a.given())
    if (a.has("stage0") ? !stage0_only_options().count(name) && !stage0_also_reads().count(name)
                        : stage0_only_options().count(name) > 0)
      not_applying.push_back(name);
  if (!not_applying.empty() && a.has("stage0"))
    throw demo::UsageError(fmt::format(
        "{} do{} not apply to --stage0, which only builds the demo model directory --model (from --data, with the "
        "stage 0 options); train it with a second command, without --stage0",
        options(not_applying), not_applying.size() == 1 ? "es" : ""));
  if (!not_applying.empty())
    throw demo::UsageError(fmt::format(
        "{} appl{} to --stage0 only (the demo model's sizes and pretraining); a training run takes them from the "
        "model directory --model",
        options(not_applying), not_applying.size() == 1 ? "ies" : "y"));
  if (const double f = a.real("val-fraction", defaults::kValFraction); !(f >= 0.0 && f < 1.0))
    throw demo::UsageError(
        fmt::format("option --val-fraction: {} is not in [0, 1) (the held-out share; 1 leaves no training clips)", f));
  try {
    train::detail::check_options(dataset_options(a));
  } catch (const vidlora::Error& e) {
    throw demo::UsageError(fmt::format("option --caption-field: {}", e.what()));
  }
  if (a.has("resume") && a.has("move-aside"))
    throw demo::UsageError(
        "--resume and --move-aside contradict each other: --resume continues the run in --out, --move-aside moves "
        "that run's results aside for a fresh one; give one of them");
}

// Whether a run scales its loss without --loss-scale: a GPU preset's when its device step computes in fp16 (`runs`: the
// preset's device precision or --precision's; torch.amp.GradScaler's rules), the Cpu preset's as the preset says.
template <class P>
bool loss_scaled_by_default(std::string_view runs) {
  if constexpr (P::backend_policy::on_device)
    return runs == "fp16";
  else
    return TrainerConfig::from_preset<P>().loss_scaler.enabled;
}

// The run's configuration, one value a line with where it comes from: the preset (its P:: field), the recipe's
// stage 1 / stage 2, a command-line option (a value that differs from the preset's: only configure() changes
// them), or the trainer's default.
template <class P>
void print_configuration(const TrainerConfig& c) {
  const TrainerConfig d = TrainerConfig::from_preset<P>();
  const std::string preset = fmt::format("preset {}", P::name);
  const auto row = [](std::string_view name, const auto& value, const std::string& source) {
    fmt::print("  {:<28} {:<34} {}\n", name, fmt::format("{}", value), source);
  };
  // `from` when the value is the preset's default, else the option that changed it.
  const auto source = [](bool is_default, const std::string& from, std::string_view option) {
    return is_default ? from : fmt::format("command line ({})", option);
  };
  fmt::print("preset {} (vram {} GB, cuda_arch {}); each value with its source\n", P::name, P::vram_gb, P::cuda_arch);
  for (std::size_t i = 0; i < c.stages.size(); ++i) {
    const StageSettings& s = c.stages[i];
    const StageSettings& ds = d.stages[i];
    const bool first = i == 0;
    const std::string n = std::to_string(i + 1);
    const std::string recipe = first ? "recipe stage 1" : "recipe stage 2";
    fmt::print(" {} ({}): {}\n", s.name, first ? "the recipe's values" : "the preset's learning rate and warmup",
               s.train_lora ? "projector + LoRA" : "projector only (decoder frozen, no LoRA)");
    row("epochs", s.epochs, source(s.epochs == ds.epochs, recipe, "--epochs" + n));
    row("learning_rate", s.learning_rate,
        source(s.learning_rate == ds.learning_rate, first ? recipe : preset + "::learning_rate", "--lr" + n));
    row("warmup_ratio", s.warmup_ratio,
        source(s.warmup_ratio == ds.warmup_ratio, first ? recipe : preset + "::warmup_ratio", "(set in code)"));
  }
  fmt::print(" both stages:\n");
  row("lr_scheduler", P::lr_policy::name, preset + "::lr_policy (Scheduler<P::lr_policy>)");
  row("batch_size", c.batch_size, source(c.batch_size == d.batch_size, preset + "::batch_size", "--batch"));
  row("gradient_accumulation_steps", c.gradient_accumulation_steps,
      source(c.gradient_accumulation_steps == d.gradient_accumulation_steps, preset + "::gradient_accumulation_steps",
             "--accum"));
  row("batch_invariant", c.batch_invariant,
      source(c.batch_invariant == d.batch_invariant, "trainer default", "--float32-batches"));
  row("num_frames", c.num_frames, source(c.num_frames == d.num_frames, preset + "::num_frames", "--frames"));
  row("frame_sampler", c.frame_sampler, source(c.frame_sampler == d.frame_sampler, "default", "--sampler"));
  // What the device step runs: the preset's on its GPU (device_precision_of), or the command line's.
  const std::string_view runs = c.precision == d.precision ? presets::device_precision_of<P>() : c.precision;
  row("precision", c.precision,
      source(c.precision == d.precision, preset + "::fp16 / bf16", "--precision") +
          (c.precision == "fp32" ? ""
           : P::backend_policy::on_device
               ? fmt::format("; the device step runs {} ({})", runs, presets::device_precision_meaning(runs))
               : "; the CPU trainer computes in fp32 only"));
  const auto& ls = c.loss_scaler;
  const bool scaled_by_precision = loss_scaled_by_default<P>(runs);
  row("loss scaling",
      ls.enabled ? fmt::format("dynamic from {:g} (x{:g} / {} steps, x{:g})", ls.init_scale, ls.growth_factor,
                               ls.growth_interval, ls.backoff_factor)
                 : std::string("off"),
      source(ls.enabled == scaled_by_precision && ls.init_scale == d.loss_scaler.init_scale,
             (c.precision == d.precision ? preset + "::" + std::string(presets::precision_of<P>())
                                         : "--precision " + c.precision) +
                 (scaled_by_precision ? " (an fp16 step: torch.amp.GradScaler's rules)" : " (no fp16 step to scale)"),
             "--loss-scale"));
  row("label_smoothing", c.label_smoothing,
      source(c.label_smoothing == d.label_smoothing, preset + "::label_smoothing", "--label-smoothing"));
  row("weight_decay", c.weight_decay,
      source(c.weight_decay == d.weight_decay, preset + "::weight_decay", "(set in code)"));
  row("max_grad_norm", c.max_grad_norm,
      source(c.max_grad_norm == d.max_grad_norm, preset + "::max_grad_norm", "(set in code)"));
  row("early stopping patience", c.patience, source(c.patience == d.patience, preset + "::patience", "--patience"));
  row("early stopping metric", c.early_stopping_metric,
      source(c.early_stopping_metric == d.early_stopping_metric, "trainer default", "--metric"));
  if (c.initial_adapter.empty()) {
    row("LoRA r / alpha", fmt::format("{} / {}", P::lora_r, P::lora_alpha),
        preset + "::lora_r / lora_alpha (lora::max_rank_for_vram, default_alpha)");
    row("LoRA dropout", c.lora_dropout,
        source(c.lora_dropout == d.lora_dropout, preset + "::lora_dropout", "(set in code)"));
  } else {  // the adapter's alpha, rsLoRA and dropout replace the preset's (its r must be the preset's)
    const lora::AdapterSpec spec = lora::read_adapter_spec(c.initial_adapter);
    const std::string from = "--init-adapter " + c.initial_adapter.string();
    row("LoRA r / alpha", fmt::format("{} / {}{}", spec.r, spec.lora_alpha, spec.use_rslora ? " (rsLoRA)" : ""), from);
    row("LoRA dropout", spec.lora_dropout, from);
  }
  row("LoRA target modules", fmt::format("{}", fmt::join(c.target_modules, ",")),
      source(c.target_modules == d.target_modules, preset + "::target_set", "(set in code)"));
  row("frozen base", c.load_in_4bit ? "NF4 (QLoRA)" : "dense",
      source(c.load_in_4bit == d.load_in_4bit, preset + "::load_in_4bit", "(set in code)"));
  row("gradient_checkpointing", c.gradient_checkpointing,
      source(c.gradient_checkpointing == d.gradient_checkpointing, preset + "::gradient_checkpointing",
             "(set in code)"));
  if constexpr (P::backend_policy::on_device) {
    row("device memory cap", format_bytes(presets::memory_cap_bytes<P>(c.device_memory)),
        source(
            c.device_memory.max_memory_gb == d.device_memory.max_memory_gb,
            fmt::format("{}::vram_gb ({} GiB) - {} GiB reserve", preset, P::vram_gb, presets::kDeviceMemoryReserveGiB),
            "--max-memory-gb"));
    row("offload_checkpoints", c.offload_checkpoints,
        source(c.offload_checkpoints == d.offload_checkpoints, "trainer default", "--offload-checkpoints"));
    row("optimizer_on_device", c.optimizer_on_device,
        source(c.optimizer_on_device == d.optimizer_on_device,
               "trainer default (clip + AdamW on the GPU when the step's gradients are final there)",
               "--host-optimizer"));
    row("overlap_gradient_sums", c.overlap_gradient_sums,
        source(c.overlap_gradient_sums == d.overlap_gradient_sums,
               "trainer default (with --comm nccl: each block's sums start as its backward ends)",
               "--sums-after-backward"));
    if (c.mfu_peak_tflops)  // check_running_gpu: the GPU that runs, not the preset's card
      row("MFU peak (TFLOP/s)", *c.mfu_peak_tflops > 0.0 ? fmt::format("{:g}", *c.mfu_peak_tflops) : "none",
          *c.mfu_peak_tflops > 0.0 ? "this GPU's dense 16-bit tensor peak"
                                   : "this GPU's peak is not known: no MFU (the preset's card: " +
                                         fmt::format("{:g}", P::peak_tflops_16bit) + ")");
    else
      row("MFU peak (TFLOP/s)", P::peak_tflops_16bit, preset + "::peak_tflops_16bit (dense 16-bit tensor peak)");
  } else {
    row("device memory cap", "none", "the decoder step runs on the CPU (backend Cpu)");
  }
  row("seed", c.seed, source(c.seed == d.seed, "default", "--seed"));
  const auto e = presets::estimate_memory<P>(P::default_model, runs);
  fmt::print(
      "  memory estimate for {}: frozen {:.2f} GiB + trainable state {:.2f} GiB + activations {:.2f} GiB + "
      "overhead {:.2f} GiB = {:.2f} GiB of {:.2f} GiB usable -> {}\n",
      P::default_model.name, e.frozen_weights / presets::kGiB, e.trainable_state / presets::kGiB,
      e.activations / presets::kGiB, e.overhead / presets::kGiB, e.total() / presets::kGiB, e.budget / presets::kGiB,
      e.fits() ? "fits" : "DOES NOT FIT");
  if constexpr (P::backend_policy::on_device)
    if (e.activations_device != e.activations)
      fmt::print("  the device step ({}: {}) holds {:.2f} GiB of activations, {:.2f} GiB in all -> {}\n", runs,
                 presets::device_precision_meaning(runs), e.activations_device / presets::kGiB,
                 e.total_device() / presets::kGiB, e.total_device() <= e.budget ? "fits" : "DOES NOT FIT");
}

template <class P = ActivePreset>
TrainerConfig configure(const demo::Args& a) {
  TrainerConfig c = TrainerConfig::from_preset<P>();
  c.stages[0].epochs = a.integer("epochs1", c.stages[0].epochs);
  c.stages[1].epochs = a.integer("epochs2", c.stages[1].epochs);
  if (c.stages[0].epochs == 0 && c.stages[1].epochs == 0)
    throw demo::UsageError("--epochs1 0 and --epochs2 0: no stage trains, so there is nothing to do");
  c.stages[0].learning_rate = a.real("lr1", c.stages[0].learning_rate);
  c.stages[1].learning_rate = a.real("lr2", c.stages[1].learning_rate);
  c.batch_size = a.integer("batch", c.batch_size);
  c.gradient_accumulation_steps = a.integer("accum", c.gradient_accumulation_steps);
  c.num_frames = a.integer("frames", c.num_frames);
  c.frame_sampler = a.str("sampler", c.frame_sampler);
  c.seed = static_cast<std::uint64_t>(a.integer("seed", defaults::kSeed));
  c.checkpoint_every = a.integer("checkpoint-every", 0);
  c.generation.num_beams = a.integer("num-beams", demo::kDefaultNumBeams);
  c.generation.max_new_tokens = a.integer("max-new-tokens", demo::kDefaultMaxNewTokens);
  c.generation.repetition_penalty = a.real("repetition-penalty", demo::kDefaultRepetitionPenalty);
  c.generation.no_repeat_ngram_size = a.integer("no-repeat-ngram-size", demo::kDefaultNoRepeatNgramSize);
  c.early_stopping_metric = a.str("metric", c.early_stopping_metric);
  if (a.has("sampler") && !demo::is_sampler(c.frame_sampler))
    throw demo::UsageError(
        fmt::format("option --sampler: '{}' is not one of {}", c.frame_sampler, video::sampling_policy_names()));
  if (a.has("metric") && !is_early_stopping_metric(c.early_stopping_metric))
    throw demo::UsageError(
        fmt::format("option --metric: '{}' is not one of {}", c.early_stopping_metric, early_stopping_metric_names()));
  c.patience = a.integer("patience", c.patience);
  c.label_smoothing = a.real("label-smoothing", c.label_smoothing);
  if (!(c.label_smoothing >= 0.0 && c.label_smoothing < 1.0))
    throw demo::UsageError(fmt::format("option --label-smoothing: {} is not in [0, 1)", c.label_smoothing));
  c.output_dir = a.str("out", defaults::kOut);
  // One line per step where stderr is not a terminal (a log file, a pipe): '\r' updates would pile into one line.
  c.progress_newlines = a.has("log-lines") || !::isatty(STDERR_FILENO);
  c.batch_invariant = !a.has("float32-batches");
  c.max_caption_tokens = a.integer("max-caption-tokens", c.max_caption_tokens);
  c.max_steps_this_run = a.integer("max-steps", 0);
  c.initial_adapter = a.str("init-adapter", "");
  if (a.has("precision")) c.precision = demo::checked_precision<P>(a.str("precision", ""), "trains");
  // Loss scaling follows what the device step computes in (fp16 scales, bf16 / tf32 / fp32 do not); --loss-scale below
  // overrides it.
  c.loss_scaler.enabled =
      loss_scaled_by_default<P>(a.has("precision") ? std::string_view(c.precision) : presets::device_precision_of<P>());
  if (a.has("loss-scale")) {
    const double scale = a.real("loss-scale", 0.0);
    if (!(scale >= 0.0 && scale <= static_cast<double>(std::numeric_limits<float>::max())))
      throw demo::UsageError(fmt::format(
          "option --loss-scale: {} is not a scale in [0, float's largest] (0 turns loss scaling off)", scale));
    c.loss_scaler.enabled = scale > 0.0;
    if (scale > 0.0) c.loss_scaler.init_scale = scale;
  }
  if constexpr (!P::backend_policy::on_device)
    if (a.has("host-optimizer"))
      throw demo::UsageError(
          fmt::format("option --host-optimizer: the {} preset trains on the CPU, where the optimizer always runs on "
                      "the host; it is "
                      "for the GPU presets' builds (cmake --preset T4, L4, A100 or H100)",
                      P::name));
  if (a.has("max-memory-gb") || a.has("offload-checkpoints") || a.has("host-optimizer") ||
      a.has("sums-after-backward")) {
    const std::string option = a.has("max-memory-gb")         ? "--max-memory-gb"
                               : a.has("offload-checkpoints") ? "--offload-checkpoints"
                               : a.has("host-optimizer")      ? "--host-optimizer"
                                                              : "--sums-after-backward";
    if constexpr (!P::backend_policy::on_device)
      throw demo::UsageError(fmt::format(
          "option {}: the {} preset trains on the CPU, which has no device memory; it is for the GPU presets' builds "
          "(cmake --preset T4, L4, A100 or H100)",
          option, P::name));
    c.device_memory.max_memory_gb = a.real("max-memory-gb", 0.0);
    c.offload_checkpoints = a.has("offload-checkpoints");
    c.optimizer_on_device = !a.has("host-optimizer");
    c.overlap_gradient_sums = !a.has("sums-after-backward");
    if (!(c.device_memory.max_memory_gb >= 0.0))
      throw demo::UsageError(
          fmt::format("option --max-memory-gb: {} is not a number of GiB >= 0", c.device_memory.max_memory_gb));
    if (c.offload_checkpoints && !c.gradient_checkpointing)
      throw demo::UsageError(fmt::format(
          "option --offload-checkpoints: the {} preset trains without gradient checkpointing, so there is nothing to "
          "offload",
          P::name));
  }
  return c;
}

// ---- demo-only stage 0 ----
int stage0(const demo::Args& a) {
#if !defined(VIDLORA_HAVE_SPM_TRAINER)
  fail("--stage0 needs libsentencepiece's trainer (sentencepiece_trainer.h)");
#else
  const fs::path data = dataset_source(a.str("data", defaults::kData)), out = a.str("model", defaults::kModel);
  // Stage 0 writes a new model directory: never over a model (perhaps a trained one) or anything else already there.
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec)))
    throw demo::UsageError(fmt::format(
        "--stage0: the model directory {} already exists{}; stage 0 writes a new one: give another --model path, or "
        "remove {} first",
        out.string(), fs::is_directory(out, ec) ? " and is not empty" : " (not a directory)", out.string()));
  // The encoder's grid settings are checked before the minutes of stage 0 are spent.
  const int image_size = a.integer("image-size", defaults::kImageSize), patch = a.integer("patch", defaults::kPatch);
  const int change_pool = a.integer("change-pool", defaults::kChangePool);
  if (image_size % patch != 0)
    throw demo::UsageError(fmt::format("--image-size {} is not a multiple of --patch {}", image_size, patch));
  if (change_pool > 0 && (image_size / patch) % change_pool != 0)
    throw demo::UsageError(fmt::format("--change-pool {} does not divide the {}x{} patch grid", change_pool,
                                       image_size / patch, image_size / patch));
  fs::create_directories(out);
  const auto ds = train::read_dataset(data, dataset_options(a));
  if (!ds.layout.empty()) fmt::print("data: read as {}\n", ds.layout);
  fmt::print("stage 0: {}\n", ds.summary());
  // 1. SentencePiece tokenizer on the train captions only.
  {
    std::string text;
    for (const auto& c : ds.train) text += c.caption + "\n";
    const fs::path corpus = out / "captions.txt";
    std::ofstream(corpus) << text;
    const std::string args = fmt::format(
        "--input={} --model_prefix={} --vocab_size={} --model_type=unigram --character_coverage=1.0 "
        "--pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3 --user_defined_symbols=<video> --hard_vocab_limit=false "
        "--num_threads=2 --minloglevel=2",
        corpus.string(), (out / "tokenizer").string(), a.integer("vocab", defaults::kVocab));
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    require(status.ok(), "SentencePiece training failed: {}", status.ToString());
    fs::remove(out / "tokenizer.vocab");
  }
  model::SentencePieceOptions so;
  so.add_bos = false;
  const auto tok = model::SentencePieceTokenizer::from_file((out / "tokenizer.model").string(), so);
  // 2. Tiny decoder, pretrained on the caption text (LoRA on every linear, merged into the base).
  model::DecoderConfig dc =
      model::llama_config(a.integer("hidden", defaults::kHidden), a.integer("intermediate", defaults::kIntermediate),
                          a.integer("layers", defaults::kLayers), 4, 2, tok.vocab_size());
  dc.tie_word_embeddings = true;
  model::TensorTable weights = model::random_decoder_weights(dc, 7);
  {
    model::DecoderOptions o;
    o.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    o.lora.seed = 7;
    model::Decoder<32, 64> dec(dc, weights, o);
    std::vector<optim::Parameter> params;
    dec.for_each_lora([&](const std::string& path, auto& l) {
      params.push_back({path + ".lora_A.weight", &l.lora_A(), &l.grad_A()});
      params.push_back({path + ".lora_B.weight", &l.lora_B(), &l.grad_B()});
    });
    optim::AdamW adam(optim::transformers_groups(params, 0.0));
    std::vector<std::vector<int>> seqs;
    std::set<std::string> seen;
    for (const auto& c : ds.train) {
      if (!seen.insert(c.caption).second) continue;
      std::vector<int> ids{*tok.bos_id()};
      for (int id : tok.encode(c.caption, model::EncodeOptions{false, false})) ids.push_back(id);
      ids.push_back(*tok.eos_id());
      seqs.push_back(std::move(ids));
    }
    const int epochs = a.integer("stage0-epochs", defaults::kStage0Epochs), batch = 16;
    const long steps_per_epoch = (static_cast<long>(seqs.size()) + batch - 1) / batch, total = epochs * steps_per_epoch;
    schedule::Scheduler<schedule::Cosine> sched(
        {.base_lr = a.real("stage0-lr", defaults::kStage0Lr), .warmup_steps = total / 20, .total_steps = total});
    long step = 0;
    for (int e = 0; e < epochs; ++e) {
      CounterRng rng(11, static_cast<std::uint64_t>(e));
      std::vector<std::size_t> order(seqs.size());
      std::iota(order.begin(), order.end(), 0);
      for (std::size_t i = order.size(); i > 1; --i)
        std::swap(order[i - 1], order[static_cast<std::size_t>(rng.uniform() * i) % i]);
      double epoch_loss = 0;
      for (long k = 0; k < steps_per_epoch; ++k, ++step) {
        const std::size_t b0 = static_cast<std::size_t>(k) * batch, b1 = std::min(order.size(), b0 + batch);
        long len = 0;
        for (std::size_t i = b0; i < b1; ++i) len = std::max<long>(len, static_cast<long>(seqs[order[i]].size()));
        model::SequenceBatch sb{static_cast<Eigen::Index>(b1 - b0), len, {}};
        std::vector<int> ids(static_cast<std::size_t>(sb.tokens()), 0), labels(ids.size(), -100);
        sb.attention_mask.assign(ids.size(), 0);
        for (std::size_t i = b0; i < b1; ++i)
          for (std::size_t t = 0; t < seqs[order[i]].size(); ++t) {
            const std::size_t r = (i - b0) * static_cast<std::size_t>(len) + t;
            ids[r] = labels[r] = seqs[order[i]][t];
            sb.attention_mask[r] = 1;
          }
        adam.zero_grad();
        const auto res = dec.loss_and_backward(dec.embed(ids), sb, labels);
        optim::clip_grad_norm(std::span<const optim::ParamGroup>(adam.groups()), 1.0);
        adam.step(sched.lr(step));
        epoch_loss += res.loss;
      }
      fmt::print("stage 0 epoch {}/{}: caption LM loss {:.4f}\n", e + 1, epochs, epoch_loss / steps_per_epoch);
    }
    // merge: W <- W + scaling·B·A
    dec.for_each_lora([&](const std::string& path, auto& l) {
      const std::string key = path + ".weight";
      Matrix w = model::load_matrix(weights, key, l.out_features(), l.in_features());
      w += l.delta_weight();
      weights.insert(key, w);
    });
  }
  demo::write_table(out / "model.safetensors", weights);
  nlohmann::json cfg = {{"model_type", "llama"},
                        {"hidden_size", dc.hidden_size},
                        {"intermediate_size", dc.intermediate_size},
                        {"num_hidden_layers", dc.num_hidden_layers},
                        {"num_attention_heads", dc.num_attention_heads},
                        {"num_key_value_heads", dc.num_key_value_heads},
                        {"vocab_size", dc.vocab_size},
                        {"rms_norm_eps", dc.rms_norm_eps},
                        {"rope_theta", dc.rope_theta},
                        {"tie_word_embeddings", true},
                        {"bos_token_id", *tok.bos_id()},
                        {"eos_token_id", *tok.eos_id()},
                        {"pad_token_id", 0}};
  io::write_file_atomically(out / "config.json", cfg.dump(2));
  // 3. A seeded random CLIP-architecture ViT (knows nothing of the captions).
  model::ClipVisionConfig vc;
  vc.hidden_size = a.integer("vision-hidden", defaults::kVisionHidden);
  vc.intermediate_size = 2 * vc.hidden_size;
  vc.num_hidden_layers = a.integer("vision-layers", defaults::kVisionLayers);
  vc.num_attention_heads = 4;
  vc.image_size = image_size;
  vc.patch_size = patch;
  const std::string positions = a.str("positions", defaults::kPositions);
  demo::write_table(out / "vision.safetensors",
                    train::random_clip_vision_weights(vc, 17, train::random_vision_positions_from_string(positions)));
  io::write_file_atomically(out / "vision_config.json", nlohmann::json{{"model_type", "clip_vision_model"},
                                                                       {"hidden_size", vc.hidden_size},
                                                                       {"intermediate_size", vc.intermediate_size},
                                                                       {"num_hidden_layers", vc.num_hidden_layers},
                                                                       {"num_attention_heads", vc.num_attention_heads},
                                                                       {"image_size", vc.image_size},
                                                                       {"patch_size", vc.patch_size},
                                                                       {"hidden_act", "quick_gelu"}}
                                                            .dump(2));
  io::write_file_atomically(
      out / "vidlora_demo.json",
      nlohmann::json{{"prompt", " 설명:"},
                     {"pool_stride", a.integer("pool", defaults::kPool)},
                     {"change_pool_stride", change_pool},
                     {"encoder_id", fmt::format("random-clip-seed17-{}px-patch{}-w{}-l{}-{}", vc.image_size,
                                                vc.patch_size, vc.hidden_size, vc.num_hidden_layers, positions)}}
          .dump(2));
  fmt::print("stage 0: model written to {} (vocab {}, decoder {}x{}, vision {}px/{} patches)\n", out.string(),
             dc.vocab_size, dc.num_hidden_layers, dc.hidden_size, vc.image_size, vc.patch_size);
  return 0;
#endif
}

// The command that continues an interrupted run: the same arguments with --resume (and without --move-aside).
std::string resume_command(int argc, char** argv) {
  std::string cmd = argv[0];
  bool has_resume = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--move-aside") continue;
    has_resume = has_resume || arg == "--resume";
    cmd += ' ';
    cmd += arg.find_first_of(" \t'\"$") == std::string_view::npos ? std::string(arg) : fmt::format("'{}'", arg);
  }
  return has_resume ? cmd : cmd + " --resume";
}

#if defined(VIDLORA_MPI)
// The MPI session of a data-parallel run (--comm mpi, or started by mpirun / srun with several ranks).
std::optional<comm::MpiSession>& mpi_session() {
  static std::optional<comm::MpiSession> session;
  return session;
}
#endif

// How many ranks an MPI launcher (mpirun, srun --mpi=pmix) started; 1 in a build without MPI.
int mpi_launched_ranks() {
#if defined(VIDLORA_MPI)
  return comm::launched_world_size();
#else
  return 1;
#endif
}

// --comm: "single", "mpi", "tcp" or "nccl"; by default single unless the launcher's environment says this process is
// one of several ranks: then nccl in a GPU build with NCCL (gradients summed on the GPUs), else mpi under an MPI
// launcher and tcp under one without MPI (torchrun's WORLD_SIZE).
std::string comm_kind(const demo::Args& a) {
  const std::string kind = a.str("comm", "");
  if (kind == "single" || kind == "mpi" || kind == "tcp" || kind == "nccl") return kind;
  if (!kind.empty()) throw demo::UsageError(fmt::format("--comm: unknown kind '{}' (single, mpi, tcp, nccl)", kind));
  const bool by_mpi = mpi_launched_ranks() > 1;
  if (!by_mpi && comm::tcp_launched_world_size() <= 1) return "single";
#if defined(VIDLORA_TRAIN_NCCL)
  return "nccl";
#else
  return by_mpi ? "mpi" : "tcp";
#endif
}

// --comm's kind when this build has it, else a usage error saying what the build lacks.
std::string available_comm_kind(const demo::Args& a) {
  const std::string kind = comm_kind(a);
#if !defined(VIDLORA_TRAIN_NCCL)
  if (kind == "nccl")
    throw demo::UsageError(
        "--comm nccl: this train_captioner was built without NCCL (a GPU preset's build with MPI and the CUDA "
        "toolkit's NCCL: nccl.h and libnccl); use --comm mpi or --comm tcp");
#endif
#if !defined(VIDLORA_MPI)
  if (kind == "mpi")
    throw demo::UsageError(
        "--comm mpi: this train_captioner was built without MPI (install libopenmpi-dev and openmpi-bin, then "
        "reconfigure: VIDLORA_WITH_MPI); --comm tcp needs no MPI (a launcher such as torchrun sets RANK, WORLD_SIZE, "
        "MASTER_ADDR and MASTER_PORT)");
#endif
  return kind;
}

// Whether the ranks meet over TCP: --comm tcp, or NCCL's bootstrap when no MPI launcher started them.
bool over_tcp(const std::string& kind) { return kind == "tcp" || (kind == "nccl" && mpi_launched_ranks() <= 1); }

// The dry run's row: how the ranks of this run would sum their gradients.
// The processes the launcher started: WORLD_SIZE for TCP (or NCCL bootstrapped over it), else mpirun's / srun's.
int launched_ranks(const std::string& kind) {
  return over_tcp(kind) ? comm::tcp_options_from_environment().size : mpi_launched_ranks();
}

void print_comm_row(const demo::Args& a) {
  const std::string kind = available_comm_kind(a);
  const int launched = launched_ranks(kind);
  const std::string ranks = fmt::format("{} rank{}", launched, launched == 1 ? "" : "s");
  const std::string value = kind == "single" ? std::string("one process")
                            : kind == "mpi"  ? ranks + ", gradients summed on the hosts (MPI)"
                            : kind == "tcp"  ? ranks + ", gradients summed on the hosts (TCP)"
                                             : ranks + ", one GPU each, gradients summed on them (NCCL)";
  const std::string launcher = over_tcp(kind) ? "a launcher without MPI (RANK, WORLD_SIZE)" : "mpirun / srun";
  const std::string source = a.has("comm") ? std::string("--comm")
                             : launched > 1
                                 ? fmt::format("started by {} with {} ranks", launcher, launched)
                                 : std::string("not started by mpirun, srun or torchrun (docs/distributed.md)");
  fmt::print("  {:<28} {:<34} {}\n", "data parallel", value, source);
}

// The ranks of this run: comm::Single, or comm::Mpi over every process mpirun / srun started, or comm::Tcp over the
// processes a launcher without MPI started (torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), or comm::Nccl over
// either (one GPU each, bootstrapped by that comm::Mpi or comm::Tcp).
comm::AnyCommunicator make_communicator(const demo::Args& a, int& argc, char**& argv) {
  const std::string kind = available_comm_kind(a);
  if (kind == "single") return comm::Single{};
  const double timeout = a.real("comm-timeout", defaults::kCommTimeout);
  if (!(timeout > 0)) throw demo::UsageError(fmt::format("--comm-timeout must be > 0 seconds (got {})", timeout));
  const auto seconds = std::chrono::duration<double>(timeout);
  const long per_rank =
      a.integer("batch", ActivePreset::batch_size) * a.integer("accum", ActivePreset::gradient_accumulation_steps);
  if (over_tcp(kind)) {
    comm::Tcp tcp = comm::Tcp::from_environment(seconds);
    if (tcp.rank() != 0) std::freopen("/dev/null", "w", stdout);  // reports from rank 0; errors from every rank
    const std::string where = fmt::format("rank 0 at {}:{}", tcp.options().address, tcp.options().port);
#if defined(VIDLORA_TRAIN_NCCL)
    if (kind == "nccl") {
      comm::BasicNccl<comm::Tcp> nccl(std::move(tcp), {.timeout = seconds});
      fmt::print(
          "data parallel: {} ranks (NCCL bootstrapped over TCP, {}; gradients summed on the GPUs; rank 0 on GPU {}), "
          "{} clips per rank per step; collective timeout {:g} s\n",
          nccl.size(), where, nccl.device(), per_rank, timeout);
      return comm::AnyCommunicator(std::move(nccl));
    }
#endif
#if defined(VIDLORA_TRAIN_ON_CUDA)  // one GPU per rank here too, the gradients summed on the hosts
    VIDLORA_CUDA_CHECK(cudaSetDevice(comm::local_device(-1)));
#endif
    fmt::print(
        "data parallel: {} ranks (TCP, {}; gradients summed on the hosts), {} clips per rank per step; collective "
        "timeout {:g} s\n",
        tcp.size(), where, per_rank, timeout);
    return comm::AnyCommunicator(std::move(tcp));
  }
#if defined(VIDLORA_MPI)
  auto& session = mpi_session();
  session.emplace(&argc, &argv);
  if (session->rank() != 0) std::freopen("/dev/null", "w", stdout);  // reports from rank 0; errors from every rank
  comm::Mpi mpi({.timeout = seconds});
#if defined(VIDLORA_TRAIN_NCCL)
  if (kind == "nccl") {
    comm::Nccl nccl(std::move(mpi), {.timeout = seconds});
    fmt::print(
        "data parallel: {} ranks (NCCL, gradients summed on the GPUs; rank 0 on GPU {}), {} clips per rank per step; "
        "collective timeout {:g} s\n",
        nccl.size(), nccl.device(), per_rank, timeout);
    return comm::AnyCommunicator(std::move(nccl));
  }
#endif
#if defined(VIDLORA_TRAIN_ON_CUDA)  // one GPU per rank here too, the gradients summed on the hosts
  const int device = comm::local_device(-1);
  VIDLORA_CUDA_CHECK(cudaSetDevice(device));
  fmt::print("data parallel: {} ranks (MPI, gradients summed on the hosts; rank 0 on GPU {}), ", mpi.size(), device);
#else
  fmt::print("data parallel: {} ranks (MPI), ", mpi.size());
#endif
  fmt::print("{} clips per rank per step; collective timeout {:g} s\n", per_rank, timeout);
  return comm::AnyCommunicator(std::move(mpi));
#else
  (void)argc;
  (void)argv;
  return comm::Single{};  // not reached: available_comm_kind refused every other kind
#endif
}

// Where the trainer's decoder step runs: the preset's backend. A GPU preset built without nvcc never trains
// (train_main exits 2 first) and compiles its training code for the CPU.
// The projector's forward and backward run there too (its parameters, AdamW and outputs stay the host's).
#if defined(VIDLORA_TRAIN_ON_CUDA)
using TrainBackend = presets::backend_of<ActivePreset>;
static_assert(TrainBackend::on_device, "train_captioner: VIDLORA_TRAIN_ON_CUDA is for the GPU presets");
using TrainProjector = model::cuda::CudaMlp2xGelu;
#else
using TrainBackend = backend::Cpu;
using TrainProjector = model::Mlp2xGelu;
#endif

// The vision tower that encodes the frames: on a GPU build, the device copy demo::device_encoder makes
// (gpu_program.hpp), which encode_clips_up_front runs over every clip and then releases before the Trainer exists; a
// clip whose up-front encoding failed is skipped by the Trainer, naming it. Null (the CPU tower) on a CPU build.
#if defined(VIDLORA_TRAIN_ON_CUDA)
using demo::is_device_failure;
#else
// The CPU build encodes nothing up front.
bool is_device_failure(const std::exception&) { return false; }
#endif

demo::DeviceEncoder train_encoder([[maybe_unused]] const model::ClipVision& vision,
                                  [[maybe_unused]] const TrainerConfig& config) {
#if defined(VIDLORA_TRAIN_ON_CUDA)
  return demo::device_encoder(vision, config.precision, presets::memory_cap_bytes<ActivePreset>(config.device_memory));
#else
  return {};
#endif
}

// The closing line: the files this run left in `out` (no adapter/ after a projector-only run, no val_captions.jsonl
// without held-out clips).
void print_outputs(const fs::path& out) {
  std::vector<std::string> written;
  for (const auto& [name, what] :
       std::vector<std::pair<std::string, std::string>>{{"adapter", "adapter/ (PEFT)"},
                                                        {"projector.safetensors", "projector.safetensors"},
                                                        {"val_captions.jsonl", "val_captions.jsonl"},
                                                        {"train_log.jsonl", "train_log.jsonl"},
                                                        {"curves.svg", "curves.svg"}})
    if (fs::exists(out / name)) written.push_back(what);
  fmt::print("outputs in {}: {}\n", out.string(), fmt::join(written, ", "));
}

// --dry-run with --data: the data as the run would read it (how, what it skipped, a few clips) and the optimizer steps
// each stage would take on it (as the Trainer counts them: ranks x batch x accumulation clips a step), so a long run's
// data is checked first.
void print_data_plan(const demo::Args& a, const TrainerConfig& c) {
  const fs::path data = dataset_source(a.str("data", defaults::kData));
  const auto ds = train::read_dataset(data, dataset_options(a));
  if (!ds.layout.empty()) fmt::print("data: read as {}\n", ds.layout);
  fmt::print("data: {}\n", ds.summary());
  const auto show = [](std::string_view split, const std::vector<train::Clip>& clips, std::size_t n) {
    for (std::size_t i = 0; i < std::min(n, clips.size()); ++i)
      fmt::print("  {} {}: {} — {}\n", split, clips[i].id, clips[i].video.string(), demo::one_line(clips[i].caption));
  };
  show("train", ds.train, 3);
  show("held-out", ds.val, 2);
  const std::string kind = available_comm_kind(a);  // as the Trainer counts: every rank takes batch x accumulation
  const int ranks = kind == "single" ? 1 : launched_ranks(kind);
  const long per_step = static_cast<long>(c.batch_size) * c.gradient_accumulation_steps * ranks;
  const long per_epoch = (static_cast<long>(ds.train.size()) + per_step - 1) / per_step;
  for (const auto& st : c.stages) {
    if (st.epochs <= 0) continue;
    const long total = static_cast<long>(st.epochs) * per_epoch;
    const auto s = [](long n) { return n == 1 ? "" : "s"; };
    fmt::print("{}: {} epoch{} x {} optimizer step{} ({} training clip{}, {} per step{}) = {} step{}, warmup {}\n",
               st.name, st.epochs, s(st.epochs), per_epoch, s(per_epoch), ds.train.size(),
               s(static_cast<long>(ds.train.size())), per_step,
               ranks > 1 ? fmt::format(" over {} ranks", ranks) : std::string(), total, s(total),
               schedule::warmup_steps_for(st.warmup_ratio, total));
  }
}

int train_main(const demo::Args& a, int argc, char** argv) {
  check_mode_options(a);
  // As the early-stopping metric, the Korean morpheme METEOR needs MeCab's Korean dictionary: said now, before any
  // output or data is touched, --dry-run (of any preset) included.
  std::optional<eval::AnyCaptionTokenizer> morphemes;
  if (a.str("metric", "") == "meteor_morphemes") {
    morphemes = demo::korean_morpheme_tokenizer();
    if (!morphemes)
      throw demo::UsageError(
          "option --metric: meteor_morphemes needs MeCab with the Korean dictionary (mecab-ko-dic), which is not "
          "available here (the line above says why; tools/install-deps.sh installs both)");
  }
  if (a.has("preset") && a.str("preset", "") != ActivePreset::name) {
    const std::string asked = a.str("preset", "");
    try {
      presets::with_preset(asked, [](auto) {});  // an unknown name is an error listing the known ones
    } catch (const Error& e) {
      throw demo::UsageError(e.what());
    }
    const std::string build =
        fmt::format("cmake --preset {0} && cmake --build build/{0} --target train_captioner", asked);
    if (!a.has("dry-run"))
      throw demo::UsageError(
          fmt::format("this train_captioner is built for the {} preset (presets are chosen at build "
                      "time); build it for {} with: {}",
                      ActivePreset::name, asked, build));
    fmt::print("note: this binary is built for the {} preset; showing the {} preset (build it with: {})\n",
               ActivePreset::name, asked, build);
    presets::with_preset(asked, [&](auto p) {
      using P = decltype(p);
      const TrainerConfig c = configure<P>(a);
      print_configuration<P>(c);
      if (a.has("data")) print_data_plan(a, c);
    });
    return 0;
  }
  TrainerConfig config = configure(a);
  config.caption_metrics.morpheme_tokenizer = std::move(morphemes);
  if (a.has("dry-run")) {
    print_configuration<ActivePreset>(config);
    print_comm_row(a);
    if (a.has("data")) print_data_plan(a, config);
    return 0;
  }
#if !defined(VIDLORA_TRAIN_ON_CUDA)
  if constexpr (ActivePreset::backend_policy::on_device) {
    fmt::print(stderr,
               "train_captioner: this is the {} build without a CUDA toolkit, so it only shows its configuration "
               "(--dry-run). Build it with nvcc available (CUDACXX) to train on the GPU, or with "
               "-DVIDLORA_PRESET=Cpu to train on the CPU.\n",
               ActivePreset::name);
    return 2;
  } else
#endif
  {
    if (a.has("stage0")) return stage0(a);
    if constexpr (ActivePreset::backend_policy::on_device) {  // what this preset's GPU runs (bf16 needs sm_80+)
      if (a.has("precision")) {
        fmt::print("precision: {} ({}; from --precision)\n", config.precision,
                   presets::device_precision_meaning(config.precision));
      } else {
        const std::string_view device = presets::device_precision_of<ActivePreset>();
        fmt::print("precision: {} ({}; the preset says {})\n", device, presets::device_precision_meaning(device),
                   config.precision);
        config.precision = std::string(device);
      }
    }
    // Evaluations also score the Korean morpheme METEOR (metric meteor_morphemes) where MeCab is available.
    if (!config.caption_metrics.morpheme_tokenizer)
      config.caption_metrics.morpheme_tokenizer = demo::korean_morpheme_tokenizer();
    const fs::path data = dataset_source(a.str("data", defaults::kData));
    comm::AnyCommunicator ranks = make_communicator(a, argc, argv);
#if defined(VIDLORA_TRAIN_ON_CUDA)
    if constexpr (ActivePreset::backend_policy::on_device)
      // The GPU this rank took (make_communicator sets it), before any context on another; MFU against its peak.
      config.mfu_peak_tflops =
          demo::check_running_gpu<ActivePreset>("train_captioner", config.device_memory, stdout, true);
#endif
    // What can be refused is refused before anything in --out moves (--move-aside) or any clip is encoded (hours on
    // a big set): an --out that is a file, a resume without its checkpoint, a model directory that is not one, data
    // without a usable clip.
    if (std::error_code ec; fs::exists(config.output_dir, ec) && !fs::is_directory(config.output_dir, ec))
      throw demo::UsageError(fmt::format("option --out: {} exists and is not a directory", config.output_dir.string()));
    if (a.has("resume") && !fs::exists(train::last_checkpoint_path(config.output_dir)))
      throw demo::UsageError(fmt::format("--resume: no checkpoint at {}: nothing to resume (start without --resume)",
                                         train::last_checkpoint_path(config.output_dir).string()));
    const fs::path model_dir = a.str("model", defaults::kModel);
    const bool hf = demo::model_kind(model_dir) == demo::ModelKind::HuggingFace;
    if (!hf && a.has("prompt"))
      throw demo::UsageError(
          fmt::format("--prompt applies to a Hugging Face model directory; {} is the demo's", model_dir.string()));
    const auto ds = train::read_dataset(data, dataset_options(a));
    if (!ds.layout.empty()) fmt::print("data: read as {}\n", ds.layout);
    fmt::print("{}\n", ds.summary());
    if (ds.train.empty())
      fail("--data {}: no clip to train on (the summary above says what was read and skipped)", data.string());
    if (!a.has("resume") && ranks.rank() == 0) {
      if (const auto moved = demo::prepare_output_dir(config.output_dir, a.has("move-aside")); !moved.empty())
        fmt::print("{}\n", moved);
    }
    ranks.barrier("the output directory (rank 0 prepares it)");
    const std::string sampler = config.frame_sampler;
    const int frames = config.num_frames;
    const fs::path cache = a.str("cache", (fs::path(config.output_dir) / "feature_cache").string());
    // One trainer for either kind of model directory (hf_model.hpp: a Hugging Face LLaVA one).
    const auto run = [&](const model::DecoderConfig& decoder_config, const auto& weights, model::Mlp2xGelu projector,
                         const train::TextCodec& codec, const demo::ClipFeatures& feats,
                         const demo::DeviceEncoder& encoder) {
      // A clip's note (a short or damaged clip) is told by the rank that encodes it, and again from the cache by rank 0
      // only (which reads every clip): not once per rank.
      feats.tell_cached_notes(ranks.rank() == 0);
      if constexpr (TrainBackend::on_device) {  // the tower leaves the card before the decoder comes to it
        std::vector<const train::Clip*> clips;
        for (const auto& c : ds.train) clips.push_back(&c);
        for (const auto& c : ds.val) clips.push_back(&c);
        handle_stop_signals(on_stop_signal);  // the first Ctrl-C stops the encoding at the next clip
        // A CUDA error or the memory cap is the tower's, not a clip's: every clip would fail the same way, so the run
        // stops here instead of training on nothing. Clip failures print on every rank.
        const demo::UpFrontEncoding e =
            demo::encode_clips_up_front(feats, clips, ranks, ranks.rank() == 0 ? stdout : nullptr,
                                        &train::interrupt_requested(), is_device_failure, stderr);
        if (e.interrupted) return std::optional<TrainResult>();
        if (!clips.empty() && e.failed == clips.size())
          fail("none of the {} clips could be encoded (the first failures are above): nothing to train on",
               clips.size());
        handle_stop_signals(SIG_DFL);  // while the model loads, Ctrl-C ends the program, as before the encoding
        encoder.release_device();
      }
      Trainer<ActivePreset, TrainProjector,
              std::conditional_t<ActivePreset::load_in_4bit, quant::NF4Weight, lora::DenseWeight>,
              comm::AnyCommunicator, TrainBackend>
          trainer(
              config, decoder_config, weights, TrainProjector(std::move(projector)), codec,
              [feats](const train::Clip& c) { return feats(c.video); }, std::move(ranks));
      print_configuration<ActivePreset>(trainer.config());
      if constexpr (TrainBackend::on_device)
        fmt::print(
            "backend: {} (the vision tower, the decoder's and the projector's forward and backward, the "
            "evaluation's loss and generation on the GPU; gradient sums, clipping and AdamW on the {})\n",
            TrainBackend::name,
            trainer.config().optimizer_on_device ? "GPU (the CPU when ranks sum on the hosts)"
                                                 : "CPU (--host-optimizer)");
      handle_stop_signals(on_stop_signal);
      return std::optional<TrainResult>(trainer.train(ds.train, ds.val, a.has("resume")));
    };
    std::optional<TrainResult> result;
    if (hf) {
      const demo::HfModel m(model_dir, a.str("prompt", demo::kDefaultHfPrompt));
      config.base_model_name_or_path = fs::absolute(model_dir).lexically_normal().string();
      config.base_model_fingerprint = demo::model_fingerprint(model_dir);  // a resume must train on the same model
      config.prompt = a.str("prompt", demo::kDefaultHfPrompt);             // ... with the same question
      fmt::print("model: {} ({}, decoder {}x{}, vision {}px, {} visual tokens per frame; prompt format {})\n",
                 model_dir.string(), m.config.video_token_id >= 0 ? "LLaVA-NeXT-Video" : "LLaVA",
                 m.config.text.num_hidden_layers, m.config.text.hidden_size, m.config.vision.image_size,
                 m.processor.tokens_per_frame(), m.processor.chat_template().name);
      if (fs::exists(model_dir / "generation_config.json"))
        fmt::print(
            "model: its generation_config.json is for caption; the evaluation captions here are {} (--num-beams, "
            "--repetition-penalty, --no-repeat-ngram-size, --max-new-tokens), the same at every evaluation\n",
            config.generation.num_beams > 1 ? fmt::format("beam search with {} beams", config.generation.num_beams)
                                            : std::string("greedy"));
      const demo::DeviceEncoder encoder = train_encoder(m.vision, config);
      result = run(m.config.text, m.weights, m.projector(), m.codec(),
                   m.features(sampler, frames, cache, encoder.encoder), encoder);
    } else {
      const demo::DemoModel m(model_dir);
      config.base_model_fingerprint = demo::model_fingerprint(model_dir);
      const demo::DeviceEncoder encoder = train_encoder(*m.vision, config);
      result = run(m.decoder_config, *m.decoder_weights,
                   model::Mlp2xGelu(m.vision_config.hidden_size, m.decoder_config.hidden_size, config.seed + 1),
                   m.codec(), m.features(sampler, frames, cache, encoder.encoder), encoder);
    }
    if (!result) {  // stopped during the up-front encoding: nothing trained, nothing to resume
      fmt::print(
          "interrupted during the up-front clip encoding: the clips encoded so far are in the feature cache {} and are "
          "read from there when you run the same command again\n",
          cache.string());
      return stopped_exit_status();
    }
    const TrainResult& r = *result;
    fmt::print("training {} after {} steps ({} NaN steps skipped, {}{}{} clips skipped)\n", to_string(r.status),
               r.steps, r.skipped_nan_steps,
               r.skipped_empty_steps > 0
                   ? fmt::format("{} skipped for having no clip with features, ", r.skipped_empty_steps)
                   : std::string(),
               config.loss_scaler.enabled
                   ? fmt::format("{} skipped for a gradient overflow at the loss scale, ", r.skipped_overflow_steps)
                   : std::string(),
               r.skipped_clips.size());
    if (r.status == train::TrainStatus::Interrupted) {
      fmt::print(
          "interrupted after step {}: the checkpoint is {} (no adapter or projector was written); continue with:\n  "
          "{}\n",
          r.steps, (config.output_dir / "checkpoints" / "last.safetensors").string(), resume_command(argc, argv));
      return stopped_exit_status();
    }
    if (r.status == train::TrainStatus::NanStopped) {
      fmt::print("the last good checkpoint is {}; no outputs were written\n",
                 (config.output_dir / "checkpoints" / "last.safetensors").string());
      return 3;
    }
    if (!r.best) {
      print_outputs(config.output_dir);
      return 0;
    }
    // Held-out quality next to the most-frequent-caption baseline.
    std::map<std::string, int> freq;
    for (const auto& c : ds.train) ++freq[c.caption];
    const auto top = std::max_element(freq.begin(), freq.end(), [](auto& x, auto& y) { return x.second < y.second; });
    std::vector<std::string> baseline;
    std::vector<std::vector<std::string>> refs;
    for (std::size_t i : r.best->clip_index) {
      baseline.push_back(top->first);
      refs.push_back({ds.val[i].caption});
    }
    const auto b = eval::caption_metrics(baseline, refs, config.caption_metrics);
    const auto& q = r.best->metrics;
    fmt::print("\nheld-out clips: {} (best: stage {} epoch {}, eval loss {:.4f})\n", refs.size(), r.best->stage,
               r.best->epoch, r.best->eval_loss);
    fmt::print("| metric | vidlora captioner | most-frequent-caption baseline |\n|---|---|---|\n");
    fmt::print("| METEOR (whitespace) | {:.4f} | {:.4f} |\n", q.meteor, b.meteor);
    if (config.caption_metrics.morpheme_tokenizer)  // the users' Okt METEOR, via MeCab (docs/eval.md)
      fmt::print("| METEOR ({}) | {:.4f} | {:.4f} |\n", q.meteor_morphemes_tokenizer, q.meteor_morphemes,
                 b.meteor_morphemes);
    fmt::print("| CIDEr-D | {:.4f} | {:.4f} |\n| BLEU-4 | {:.4f} | {:.4f} |\n", q.cider_d, b.cider_d, q.bleu4, b.bleu4);
    fmt::print("| ROUGE-L | {:.4f} | {:.4f} |\n| unique-caption ratio | {:.3f} | {:.3f} |\n", q.rouge_l, b.rouge_l,
               q.diversity.unique_ratio, b.diversity.unique_ratio);
    fmt::print("| distinct-1 / distinct-2 | {:.3f} / {:.3f} | {:.3f} / {:.3f} |\n", q.diversity.distinct_1,
               q.diversity.distinct_2, b.diversity.distinct_1, b.diversity.distinct_2);
    // On the demo data: is each attribute of the clip named right (the captions' grammar, demo_attributes.hpp)?
    std::vector<std::string> reference_text;
    for (const auto& rs : refs) reference_text.push_back(rs.front());
    const auto parsable = demo::attributes_right(reference_text, reference_text);
    if (!refs.empty() && parsable[0] * 2 >= static_cast<int>(refs.size())) {
      const auto ours = demo::attributes_right(r.best->captions, reference_text);
      const auto base = demo::attributes_right(baseline, reference_text);
      const auto ours_balanced = demo::attributes_balanced_accuracy(r.best->captions, reference_text);
      const auto base_balanced = demo::attributes_balanced_accuracy(baseline, reference_text);
      const double n = static_cast<double>(refs.size());
      // balanced: the mean over the attribute's values of the share named right (a rare shake counts as much as
      // the common no-shake), so a captioner that never names the rare value cannot look good
      fmt::print(
          "\n| attribute named right (of {} clips) | vidlora captioner | balanced | most-frequent-caption baseline "
          "| balanced |\n|---|---|---|---|---|\n",
          refs.size());
      for (std::size_t k = 0; k < demo::kAttributeNames.size(); ++k)
        fmt::print("| {} | {:.0f}% ({}) | {:.0f}% | {:.0f}% ({}) | {:.0f}% |\n", demo::kAttributeNames[k],
                   100.0 * ours[k] / n, ours[k], 100.0 * ours_balanced[k], 100.0 * base[k] / n, base[k],
                   100.0 * base_balanced[k]);
    }
    for (std::size_t k = 0; k < std::min<std::size_t>(5, r.best->captions.size()); ++k)
      fmt::print("  {}: {}\n    reference: {}\n", ds.val[r.best->clip_index[k]].id, r.best->captions[k],
                 ds.val[r.best->clip_index[k]].caption);
    print_outputs(config.output_dir);
    return 0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress and summaries appear as they happen, also in a pipe
  auto cli = command_line();
  try {
    cli.parse(argc, argv);
    if (cli.help_requested()) {
      fmt::print("{}", cli.usage());
      return 0;
    }
    demo::capture_ffmpeg_log();
    if (!cli.rest.empty()) throw demo::UsageError(fmt::format("unexpected argument '{}'", cli.rest.front()));
    return train_main(cli, argc, argv);
  } catch (const demo::UsageError& e) {
    fmt::print(stderr, "train_captioner: {}\n(train_captioner --help lists the options)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "train_captioner: {}\n", e.what());
#if defined(VIDLORA_MPI)
    // The other ranks may wait in a collective for this one: end them all (the last checkpoint is whole).
    if (auto& session = mpi_session(); session && session->size() > 1) {
      fmt::print(stderr, "train_captioner: rank {} of {}: stopping every rank (MPI_Abort)\n", session->rank(),
                 session->size());
      session->abort(1);
    }
#endif
    return 1;
  }
}
