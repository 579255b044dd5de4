// caption: captions video files with a base model (a model directory, see demo_common.hpp) plus a trained
// PEFT adapter and projector (train_captioner's outputs). `caption --help` lists the options.
//
// A GPU preset's build (VIDLORA_CAPTION_ON_CUDA: nvcc present) runs on the GPU as train_captioner's evaluation does:
// every clip's frames encoded up front by the device vision tower into the feature cache (then the tower is released),
// then each caption generated over the device decoder's KV cache (the frozen weights as the preset loads them, NF4 with
// load_in_4bit; the search on the host), at the preset's device precision or --precision's, under the memory cap.
//
// Prints one line per video on stdout: path<TAB>caption, a backslash, newline, carriage return or tab in either as
// \\, \n, \r, \t and the other line breaks as one_line.hpp says (and, with --jsonl FILE, one JSON object per
// video into FILE, the text as it is). A video that cannot be captioned is reported on stderr and the others go on;
// the exit status is then 1. Progress (clips done, rate, ETA) goes to stderr: an updating line on a terminal, else
// one line per clip.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vidlora/core/memory_stats.hpp>
#include <vidlora/io/atomic_file.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/lora/rank_dispatch.hpp>
#include <vidlora/model/held_adapter.hpp>
#include <vidlora/model/peft_decoder.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/quant/quantized_weight.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/generation_config.hpp>
#include <vidlora/train/checkpoint.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/decoder_step.hpp>
#include <vidlora/train/evaluation.hpp>
#include <vidlora/train/feature_cache.hpp>
#include <vidlora/train/trainable_tensors.hpp>

#include "demo_common.hpp"
#include "hf_model.hpp"
#include "one_line.hpp"
#if defined(VIDLORA_CAPTION_ON_CUDA)
#include <vidlora/model/cuda/cuda_mlp2x_gelu.cuh>
#include <vidlora/train/cuda/decoder_step.cuh>

#include "gpu_program.hpp"
#endif

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

demo::CommandLine command_line() {
  using namespace demo;
  return CommandLine(
      "caption",
      "caption --model DIR --trained DIR [options] VIDEO...\n"
      "       caption --model HF_DIR [--adapter DIR] [options] VIDEO...\n"
      "\n"
      "Captions each VIDEO with the base model in --model plus the adapter/ and projector.safetensors that\n"
      "train_captioner wrote into --trained. --model may be a Hugging Face LLaVA / LLaVA-NeXT-Video\n"
      "save_pretrained directory: its processor, prompt format and tokenizer are used, --adapter adds a PEFT\n"
      "adapter (any r up to 256: one that is not 4, 8, 16, ... 256 is held zero-padded at the next of\n"
      "those; the projector too when it carries one, modules_to_save [\"multi_modal_projector\"]),\n"
      "--trained adds train_captioner's adapter and projector. A VIDEO that is a directory stands for the\n"
      "video files under it (.mp4 .mkv .webm .mov .avi, at any depth, in path order). Prints path<TAB>caption\n"
      "per video, one line each (a caption's line breaks, tabs and backslashes escaped: \\n, \\t, \\\\, ...;\n"
      "--jsonl keeps them); errors and progress go to stderr.\n"
      "With HF_DIR, its generation_config.json sets the generation as in transformers' generate()\n"
      "(sampling, penalties, EOS ids); the options below override it. A GPU preset's build\n"
      "(built with nvcc) encodes the frames and generates on the GPU; the Cpu preset's runs on the CPU (a 7B\n"
      "model: about 28 GB of host memory for its fp32 weights, under 7 GB with --base nf4; minutes per clip).\n"
      "FFmpeg's last error for a video is part of the error naming the video; FFmpeg's own lines show from\n"
      "the level VIDLORA_FFMPEG_LOG names (quiet|fatal|error|warning|info|debug; default info, FFmpeg's).",
      {
          text("model", "DIR", "base model directory: the demo's, or a Hugging Face LLaVA one (default demo_model)"),
          text("trained", "DIR", "train_captioner's output directory (default vidlora_out; optional with HF_DIR)"),
          flag("allow-other-model",
               "caption with --model although --trained was trained on another base model (its checkpoint names "
               "the model; without this, an error)"),
          text("adapter", "DIR",
               "HF_DIR only: a PEFT LoRA adapter directory for that model (with the projector when it saves one, "
               "modules_to_save)"),
          text("prompt", "TEXT", "HF_DIR only: the question in the chat template (default: Describe this video.)"),
          text("base", "NAME",
               "frozen decoder weights: nf4 (bitsandbytes' load_in_4bit, double-quantized; a 7B's in 3.3 GB) or "
               "fp32 (26 GB); default: the trained run's, else fp32; GPU builds: nf4 only"),
          text("jsonl", "FILE", "also write {\"video\", \"caption\"} lines to FILE"),
          text("cache", "DIR",
               "feature cache (default TRAINED/feature_cache; with HF_DIR and no --trained, ./vidlora_feature_cache)"),
          text("sampler", "NAME",
               fmt::format("frame sampler: {} (default: --trained's, else uniform)",
                           vidlora::video::sampling_policy_names())),
          integer("frames", "N", "frames per clip (default: those --trained was trained with, else the preset's)", 1),
          integer("num-beams", "N", fmt::format("beam width (default {}; 1: greedy)", kDefaultNumBeams), 1),
          real("length-penalty", "X", fmt::format("beam search length penalty (default {:g})", kDefaultLengthPenalty),
               -std::numeric_limits<double>::infinity()),
          real_above("repetition-penalty", "X",
                     fmt::format("repetition penalty, > 0 (default {:g}; 1: off)", kDefaultRepetitionPenalty), 0),
          integer("no-repeat-ngram-size", "N",
                  fmt::format("no repeated n-grams of this size (default {}; 0: off)", kDefaultNoRepeatNgramSize)),
          integer("max-new-tokens", "N",
                  fmt::format("longest caption in tokens (default: generation_config.json's max_new_tokens, else "
                              "its max_length with the prompt counted, else {})",
                              kDefaultMaxNewTokens),
                  1),
          integer("min-new-tokens", "N", "no EOS before this many tokens (default 0: off)"),
          flag("do-sample", "sample the captions (transformers' do_sample) instead of the most probable tokens"),
          flag("greedy", "do not sample, whatever generation_config.json says (the most probable tokens, or beams)"),
          real_above("temperature", "X", "sampling: divide the scores by X, > 0 (default 1: off)", 0),
          integer("top-k", "N", "sampling: keep the N most probable tokens (default 50; 0: off)"),
          real("top-p", "X",
               "sampling: keep the most probable tokens whose probabilities sum to X, in [0, 1] (default 1: off)"),
          real("min-p", "X",
               "sampling: drop tokens below X times the most probable's probability, in [0, 1] (default 0: off)"),
          integer("seed", "N",
                  "sampling: seed of the draws (default 0; each video draws its own stream, named by its path)"),
          flag("ignore-generation-config",
               "HF_DIR only: leave its generation_config.json out (vidlora's defaults and these options only)"),
          text("precision", "NAME",
               "GPU builds: fp32, tf32, bf16 (sm_80+) or fp16 instead of the preset's device precision (as "
               "train_captioner trains); the CPU build computes in fp32"),
          real("max-memory-gb", "X",
               "GPU builds: cap on the device memory in GiB (default: the preset's vram_gb minus 2 GiB)"),
      });
}

// Where the work runs: the GPU in a GPU preset's build made with nvcc, with the frozen weights as the preset loads
// them (NF4 when it says load_in_4bit, as train_captioner trains); the CPU otherwise, in fp32.
#if defined(VIDLORA_CAPTION_ON_CUDA)
static_assert(ActivePreset::backend_policy::on_device, "caption: VIDLORA_CAPTION_ON_CUDA is for the GPU presets");
constexpr bool kOnGpu = true;
using CaptionBase = std::conditional_t<ActivePreset::load_in_4bit, quant::NF4Weight, lora::DenseWeight>;
#else
constexpr bool kOnGpu = false;
using CaptionBase = lora::DenseWeight;
#endif

// --base's name of a frozen-weight policy.
template <class Base>
constexpr std::string_view base_name() {
  return std::is_same_v<Base, quant::NF4Weight> ? "nf4" : "fp32";
}

// The GPU build's precision (--precision, else the preset's on its GPU: bf16 on A100 / H100, fp16 on T4 / L4, what
// train_captioner trains in) and memory cap (--max-memory-gb); fp32 and no cap on the CPU.
struct DeviceSettings {
  std::string precision = "fp32";
  presets::DeviceMemoryOptions memory;
};
DeviceSettings device_settings(const demo::CommandLine& a) {
  DeviceSettings d;
  if constexpr (kOnGpu) d.precision = std::string(presets::device_precision_of<ActivePreset>());
  if (a.has("precision")) {
    d.precision = demo::checked_precision<ActivePreset>(a.str("precision", ""), "captions");
    if (!kOnGpu && d.precision != "fp32")
      throw demo::UsageError(
          fmt::format("option --precision: this {} build was made without nvcc and captions on the CPU, in fp32",
                      ActivePreset::name));
  }
  if (a.has("max-memory-gb")) {
    if (!kOnGpu)
      throw demo::UsageError(
          "option --max-memory-gb: this build captions on the CPU (a GPU preset's build made with "
          "nvcc captions on the GPU)");
    d.memory.max_memory_gb = a.real("max-memory-gb", 0.0);
  }
  if (a.has("base") && a.str("base", "") != "nf4" && a.str("base", "") != "fp32")
    throw demo::UsageError(fmt::format("option --base: '{}' is neither nf4 nor fp32", a.str("base", "")));
  if (kOnGpu && a.has("base") && a.str("base", "") != base_name<CaptionBase>())
    throw demo::UsageError(
        fmt::format("option --base: the {} preset's build holds the decoder's weights in {} on the "
                    "GPU (its load_in_4bit), not {}",
                    ActivePreset::name, base_name<CaptionBase>(), a.str("base", "")));
  return d;
}

// A failure of the GPU rather than of a clip: every clip would fail the same way, so caption stops.
struct DeviceStop : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The first Ctrl-C (SIGINT / SIGTERM) stops caption after the clip in hand, with the captions so far written (--jsonl
// too); a second one ends it at once.
volatile std::sig_atomic_t g_stop = 0;
void on_stop_signal(int signal) {
  g_stop = 1;
  std::signal(signal, SIG_DFL);
}

// The feature cache directory, made if missing and checked writable before any clip is encoded: a clip's features are
// stored there and read back (a GPU build encodes every clip up front, then releases the tower), so a cache caption
// cannot write would fail every clip after its encoding.
fs::path writable_cache(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw demo::UsageError(
        fmt::format("the feature cache {} cannot be made ({}): give --cache DIR", dir, ec.message()));
  const fs::path probe = fs::path(dir) / fmt::format(".caption-write-check-{}", ::getpid());
  if (std::FILE* f = std::fopen(probe.c_str(), "wb")) {
    std::fclose(f);
    fs::remove(probe, ec);
    return dir;
  }
  throw demo::UsageError(fmt::format(
      "the feature cache {} is not writable ({}): give --cache DIR, a writable directory", dir, std::strerror(errno)));
}

// --jsonl FILE is written at the end (atomically: a temporary file beside it, then renamed), so a file there that
// cannot be created is found before the model loads and any clip is captioned, not after all of them.
void check_writable_output(const fs::path& file) {
  std::error_code is_dir_error;
  if (fs::is_directory(file, is_dir_error))
    throw demo::UsageError(fmt::format("option --jsonl: {} is a directory; give a file name", file.string()));
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  const fs::path probe = dir / fmt::format(".{}.caption-write-check-{}", file.filename().string(), ::getpid());
  if (std::FILE* f = std::fopen(probe.c_str(), "wb")) {
    std::fclose(f);
    std::error_code ec;
    fs::remove(probe, ec);
    return;
  }
  throw demo::UsageError(fmt::format("option --jsonl: {} cannot be written: cannot create a file in {} ({})",
                                     file.string(), dir.string(), std::strerror(errno)));
}

// Progress on stderr: one updating line on a terminal, else one line per clip (logs); `what` names the pass.
void show_progress(std::string_view what, std::size_t done, std::size_t total, double seconds, bool terminal) {
  const double per = done > 0 ? seconds / static_cast<double>(done) : 0.0;
  fmt::print(stderr, "{}{}[{}/{}] {:.2f} s/clip, ETA {:.0f} s{}", terminal ? "\r" : "caption: ", what, done, total, per,
             per * static_cast<double>(total - done), terminal ? "   " : "\n");
  if (terminal && done == total) fmt::print(stderr, "\n");
}

// The features of every video, or the error that kept a video from them (its message, given again in its turn).
struct VideoFeatures {
  demo::ClipFeatures feats;
  std::map<std::string, std::string> failed;
  Matrix operator()(const fs::path& video) const {
    if (const auto it = failed.find(video.string()); it != failed.end()) fail("{}", it->second);
    return feats(video);
  }
};

// The GPU build: every video's frames encoded up front by the device tower into the feature cache, then the tower's
// memory given back, so that it never shares the card with the decoder (as train_captioner does). A video that fails
// here (missing, corrupt) is reported in its turn; a failure of the GPU stops caption.
VideoFeatures encode_up_front(const demo::CommandLine& a, demo::ClipFeatures feats,
                              [[maybe_unused]] const demo::DeviceEncoder& encoder) {
  VideoFeatures v{std::move(feats), {}};
#if defined(VIDLORA_CAPTION_ON_CUDA)
  const bool terminal = ::isatty(2) == 1;
  const bool progress = a.rest.size() > 1;
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < a.rest.size() && !g_stop; ++i) {
    try {
      v.feats.ensure(a.rest[i]);
    } catch (const std::exception& e) {
      if (demo::is_device_failure(e)) throw DeviceStop(fmt::format("encoding {}: {}", a.rest[i], e.what()));
      v.failed[a.rest[i]] = e.what();
    }
    if (progress)
      show_progress("encoding ", i + 1, a.rest.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), terminal);
  }
  encoder.release_device();
#else
  (void)a;
#endif
  return v;
}

// The generation settings: the command line over the Hugging Face directory's generation_config.json (`file`, unless
// --ignore-generation-config) over vidlora's defaults, checked before any model loads; said on stderr. The EOS ids and
// the prompt's ids come per clip (train::generate_caption), and each video's draws their own stream.
GenerationOptions generation_options(const demo::CommandLine& a, const model::GenerationConfigFile& file) {
  GenerationOptions g;
  g.max_new_tokens = demo::kDefaultMaxNewTokens;
  file.apply(g);
  if (a.has("do-sample") && a.has("greedy")) throw demo::UsageError("--do-sample and --greedy contradict each other");
  if (a.has("max-new-tokens")) {  // it takes precedence over a max_length, as in transformers
    g.max_new_tokens = a.integer("max-new-tokens", 0);
    g.max_length = 0;
  }
  if (a.has("min-new-tokens")) {  // it takes precedence over a min_length, as in transformers
    g.min_new_tokens = a.integer("min-new-tokens", 0);
    g.min_length = 0;
  }
  g.num_beams = a.integer("num-beams", g.num_beams);
  g.length_penalty = a.real("length-penalty", g.length_penalty);
  g.repetition_penalty = a.real("repetition-penalty", g.repetition_penalty);
  g.no_repeat_ngram_size = a.integer("no-repeat-ngram-size", g.no_repeat_ngram_size);
  if (a.has("do-sample")) g.do_sample = true;
  if (a.has("greedy")) g.do_sample = false;
  g.temperature = a.real("temperature", g.temperature);
  g.top_k = a.integer("top-k", g.top_k);
  g.top_p = a.real("top-p", g.top_p);
  g.min_p = a.real("min-p", g.min_p);
  g.seed = static_cast<std::uint64_t>(a.integer("seed", 0));
  if (a.has("length-penalty") && g.num_beams == 1)
    throw demo::UsageError("--length-penalty applies to beam search: give --num-beams N (N > 1)");
  for (const char* sampling_only : {"temperature", "top-k", "top-p", "min-p", "seed"})
    if (a.has(sampling_only) && !g.do_sample)
      throw demo::UsageError(fmt::format(
          "--{} applies when sampling: give --do-sample{}", sampling_only,
          file.do_sample.value_or(false) ? " (--greedy turned off generation_config.json's do_sample)" : ""));
  try {
    file.check_supported(g);
  } catch (const vidlora::Error& e) {
    throw demo::UsageError(fmt::format("{} (--ignore-generation-config leaves the file out)", e.what()));
  }
  try {
    model::check_generation(g);
  } catch (const vidlora::Error& e) {
    throw demo::UsageError(file.file.empty() ? std::string(e.what())
                                             : fmt::format("{} (with {}'s settings: {}; the options override them, "
                                                           "--ignore-generation-config leaves them out)",
                                                           e.what(), file.file.string(), file.summary()));
  }
  if (g.min_new_tokens > 0 && g.max_new_tokens > 0 && g.min_new_tokens > g.max_new_tokens)
    fmt::print(stderr,
               "caption: warning: min_new_tokens {} is larger than max_new_tokens {}: generation stops at {} tokens "
               "(transformers warns the same)\n",
               g.min_new_tokens, g.max_new_tokens, g.max_new_tokens);
  if (!file.file.empty())
    fmt::print(
        stderr, "caption: {}{}: {}{}\n", file.file.string(),
        file.file.filename() == "config.json" ? " (no generation_config.json beside it)" : "", file.summary(),
        file.not_used.empty() ? std::string() : fmt::format(" (not used here: {})", fmt::join(file.not_used, ", ")));
  std::string how = g.do_sample ? fmt::format("sampling (temperature {:g}, top_k {}, top_p {:g}, min_p {:g}, seed {})",
                                              g.temperature, g.top_k, g.top_p, g.min_p, g.seed)
                    : g.num_beams > 1
                        ? fmt::format("beam search ({} beams, length penalty {:g})", g.num_beams, g.length_penalty)
                        : std::string("greedy");
  if (g.repetition_penalty != 1.0) how += fmt::format(", repetition penalty {:g}", g.repetition_penalty);
  if (g.no_repeat_ngram_size > 0) how += fmt::format(", no repeated {}-grams", g.no_repeat_ngram_size);
  if (g.min_new_tokens > 0) how += fmt::format(", at least {} tokens", g.min_new_tokens);
  if (g.min_length > 0) how += fmt::format(", at least {} ids with the prompt", g.min_length);
  fmt::print(stderr, "caption: generation: {}, up to {}, ending at the end of the turn{}\n", how,
             g.max_length > 0 ? fmt::format("{} ids with the prompt", g.max_length)
                              : fmt::format("{} tokens", g.max_new_tokens),
             g.extra_eos_token_ids.empty() ? std::string()
                                           : fmt::format(" or at ids {}", fmt::join(g.extra_eos_token_ids, ", ")));
  return g;
}

// Captions every video of a.rest; returns the exit status (1 when any video failed). The projection and the generation
// are what train_captioner's evaluation runs for a val clip (train::generate_caption over the preset's decoder step):
// on the GPU build the projector on the device (CudaMlp2xGelu::apply_on_device) and the search over the device
// decoder's KV cache (DecoderStep<backend::Cuda>::generate), on the CPU otherwise.
template <class DecoderT>
int caption_videos(const demo::CommandLine& a, const DeviceSettings& settings, const GenerationOptions& generation,
                   DecoderT& decoder, model::Mlp2xGelu projector, const train::TextCodec& codec,
                   const VideoFeatures& feats) {
#if defined(VIDLORA_CAPTION_ON_CUDA)
  using Backend = backend::Cuda;
  model::cuda::CudaMlp2xGelu held{std::move(projector)};
#else
  using Backend = backend::Cpu;
  model::Mlp2xGelu& held = projector;
#endif
  // The step's TrainableTensors take tensors it could train (the projector's and the LoRA factors): none is trained.
  const train::TrainableTensors tensors(held, decoder);
  using Step = train::DecoderStep<Backend, DecoderT>;
  Step step(decoder, tensors,
            train::decoder_step_settings(settings.precision,
                                         kOnGpu ? presets::memory_cap_bytes<ActivePreset>(settings.memory) : 0));
#if defined(VIDLORA_CAPTION_ON_CUDA)
  held.use_allocator(step.device_allocator());  // the projector's device memory under the cap too, as in training
  // ... which it gives back before the step (and its allocator) goes: this is destroyed first.
  struct ReleaseProjector {
    model::cuda::CudaMlp2xGelu& p;
    ~ReleaseProjector() { p.release_device(); }
  } release_projector{held};
#endif
  const auto caption_of = [&](const std::string& video, const Matrix& features) {
    GenerationOptions options = generation;
    options.stream = train::fnv1a64(video);  // a video's draws do not depend on the others captioned with it
#if defined(VIDLORA_CAPTION_ON_CUDA)
    try {
      return train::generate_caption(step, decoder, codec, options,
                                     held.apply_on_device(features, tensors.values_version()));
    } catch (const typename Step::DeviceFailure& e) {
      throw DeviceStop(e.what());
    } catch (const model::cuda::CudaMlp2xGelu::DeviceFailure& e) {
      throw DeviceStop(e.what());
    }
#else
    return train::generate_caption(step, decoder, codec, options, held.apply(features));
#endif
  };
  const bool terminal = ::isatty(2) == 1;
  const bool progress = a.rest.size() > 1;
  const auto start = std::chrono::steady_clock::now();
  std::string jsonl;
  int status = 0;
  std::size_t empty = 0, captioned = 0;  // captions the model ended at once (an undertrained model's do)
  const auto write_jsonl = [&] {
    if (a.has("jsonl")) io::write_file_atomically(a.str("jsonl", ""), jsonl);
  };
  for (std::size_t i = 0; i < a.rest.size(); ++i) {
    if (g_stop) {
      if (progress && terminal) fmt::print(stderr, "\r\033[K");
      fmt::print(stderr, "caption: stopped (Ctrl-C) after {} of {} videos{}\n", i, a.rest.size(),
                 a.has("jsonl") ? fmt::format("; their captions are in {}", a.str("jsonl", "")) : std::string());
      write_jsonl();
      return 130;
    }
    const std::string& v = a.rest[i];
    try {
      const std::string text = caption_of(v, feats(v));
      ++captioned;
      empty += text.empty();
      if (progress && terminal) fmt::print(stderr, "\r\033[K");
      fmt::print("{}\t{}\n", demo::one_line(v), demo::one_line(text));
      std::fflush(stdout);
      jsonl += nlohmann::json{{"video", v}, {"caption", text}}.dump(-1, ' ', false,
                                                                    nlohmann::json::error_handler_t::replace) +
               "\n";
    } catch (const DeviceStop&) {
      write_jsonl();  // the captions so far
      throw;
    } catch (const std::exception& e) {
      if (progress && terminal) fmt::print(stderr, "\r\033[K");
      fmt::print(stderr, "caption: {}: {}\n", v, e.what());
      status = 1;
    }
    if (progress)
      show_progress("", i + 1, a.rest.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), terminal);
  }
  write_jsonl();
  if (empty > 0)
    fmt::print(stderr, "caption: {} of {} captions are empty: {}\n", empty, captioned,
               generation.min_new_tokens > 0
                   ? "its tokens decode to no text (special or byte tokens that make no character)"
                   : fmt::format("the model ended {} at once (an undertrained model does; --min-new-tokens N makes "
                                 "it write N tokens first)",
                                 empty == 1 ? "it" : "them"));
  return status;
}

// A PEFT adapter directory, read and checked before any clip is encoded: its factors' module list, rank and alpha as
// the decoder's options.
struct AdapterOnDisk {
  fs::path dir;
  lora::PeftAdapter adapter;
  model::DecoderOptions options;
  model::HeldAdapter held;  // its factors at the compiled rank the decoder holds them at (zero-padded beyond r)
};

// The adapter in `adapter_dir` (none: the base model's LoRA-free decoder), and the projector to caption with: the one
// the adapter carries (modules_to_save, as PEFT saves a fine-tune of projector + LoRA), else `projector_file`'s (set
// into `projector` already), else the model's. An adapter's projector that differs from `projector_file`'s is an
// error (`conflict_hint` says what to do): which one the captions come from would be a guess.
std::optional<AdapterOnDisk> read_adapter(const std::optional<fs::path>& adapter_dir,
                                          const std::optional<fs::path>& projector_file, model::Mlp2xGelu& projector,
                                          const model::DecoderConfig& config, std::string_view conflict_hint) {
  if (!adapter_dir) return std::nullopt;
  require(fs::exists(*adapter_dir / "adapter_config.json"),
          "{} is not a PEFT adapter directory: it has no adapter_config.json", adapter_dir->string());
  AdapterOnDisk a{*adapter_dir, lora::load_peft_adapter(*adapter_dir), {}, {}};
  a.options = model::decoder_options_for(a.adapter, config, {}, model::SavedModules::loaded_by_caller);
  try {
    a.held = model::hold_adapter(a.adapter, a.options);
  } catch (const vidlora::Error& e) {  // (an r above the largest compiled rank)
    fail("PEFT adapter {}: {}", a.dir.string(), e.what());
  }
  const int rank = a.held.rank;
  const std::string r_is =
      a.held.padded() ? fmt::format("r = {} is held at rank {} (the next compiled rank), which", a.held.r, rank)
                      : fmt::format("r = {}", rank);
  for (const auto& [module, w] : a.adapter.modules)  // LoraLinear's bound (PEFT allows a larger r; tiny models only)
    require(rank <= std::min(w.A.cols(), w.B.rows()),
            "PEFT adapter {}: {} is above min(in {}, out {}) of {}; vidlora's LoRA layers take a rank <= min(in, out)",
            a.dir.string(), r_is, w.A.cols(), w.B.rows(), module);
  model::Mlp2xGelu carried = projector;
  const bool carries = train::load_projector_from_adapter(a.dir, a.adapter, carried);
  fmt::print(stderr, "caption: adapter {} (r {}, alpha {}{}{})\n", a.dir.string(), a.adapter.spec.r,
             a.adapter.spec.lora_alpha, carries ? ", with its projector" : "",
             a.held.padded() ? fmt::format("; held at rank {}, lora_A and lora_B padded with zeros", rank) : "");
  if (carries) {
    require(!projector_file || train::same_projector_values(carried, projector),
            "the adapter {} carries a projector (modules_to_save) that differs from {}: {}", a.dir.string(),
            projector_file ? projector_file->string() : std::string(), conflict_hint);
    projector = std::move(carried);
  }
  return a;
}

// The decoder's linear weights held in `Base`, said on stderr (a 7B's take minutes to load and most of the process's
// memory).
template <class DecoderT>
void print_decoder_base(const DecoderT& decoder) {
  fmt::print(stderr, "caption: the decoder's linear weights in {}: {} of its {}\n",
             base_name<typename DecoderT::base_type>(), format_bytes(decoder.linear_weight_bytes()),
             format_bytes(decoder.weight_bytes()));
}

// The decoder with `adapter` (whichever preset's build or library trained it: at its rank and alpha, or held
// zero-padded at the next compiled rank with PEFT's scaling, model/held_adapter.hpp), or without one, captioning the
// videos; its frozen linear weights held in `Base`.
template <class Base, class Weights, class Codec>
int caption_with_adapter(const demo::CommandLine& a, const DeviceSettings& settings,
                         const GenerationOptions& generation, const model::DecoderConfig& config,
                         const Weights& weights, const std::optional<AdapterOnDisk>& adapter,
                         model::Mlp2xGelu projector, const Codec& codec, const VideoFeatures& feats) {
  if (!adapter) {
    model::Decoder<ActivePreset::lora_r, ActivePreset::lora_alpha, Base> decoder(config, weights);
    print_decoder_base(decoder);
    return caption_videos(a, settings, generation, decoder, std::move(projector), codec, feats);
  }
  return lora::dispatch_rank(adapter->held.rank, [&]<int R>() {
    model::Decoder<R, R, Base> decoder(config, weights, adapter->options);
    print_decoder_base(decoder);
    try {
      if (adapter->held.padded())
        decoder.load_adapter(adapter->held.factors);
      else
        decoder.load_adapter(io::SafetensorsFile::open(adapter->dir / lora::kAdapterWeightsName));
    } catch (const vidlora::Error& e) {  // the tensor's name and shapes alone do not say it is the adapter's
      fail("PEFT adapter {} does not fit the model: {}", adapter->dir.string(), e.what());
    }
    return caption_videos(a, settings, generation, decoder, std::move(projector), codec, feats);  // (called once)
  });
}

// `trained` captions only with the base model it was trained on: its checkpoint names that model (base_model:
// demo::model_fingerprint of train_captioner's --model), and another model of the same shapes would run the trained
// tensors on other weights and caption garbage without an error. --allow-other-model lets a user caption with a
// changed copy on purpose (the same weights with another config.json, say).
void check_trained_on(const demo::CommandLine& a, const fs::path& trained, const fs::path& model_dir) {
  if (a.has("allow-other-model") || !fs::exists(trained / "projector.safetensors")) return;  // (the caller says so)
  const fs::path checkpoint = train::last_checkpoint_path(trained);
  if (!fs::exists(checkpoint)) {
    fmt::print(stderr,
               "caption: warning: {} has no checkpoint ({}): cannot check that it was trained on {}, nor caption as "
               "it was trained (its sampler, frame count and decoder base: uniform, the preset's {} frames and fp32 "
               "unless --sampler, --frames, --base say otherwise)\n",
               trained.string(), checkpoint.string(), model_dir.string(), ActivePreset::num_frames);
    return;
  }
  const auto config = train::checkpoint_configuration(checkpoint);
  const auto it = config.find("base_model");
  if (it == config.end()) return;  // a checkpoint written before checkpoints named the model
  const std::string here = demo::model_fingerprint(model_dir);
  require(it->second == here,
          "{} was trained on another base model than --model {} (base_model is '{}' in {} but '{}' for {}): caption "
          "with the model directory it was trained on (or give --allow-other-model to caption with this one anyway)",
          trained.string(), model_dir.string(), it->second, checkpoint.string(), here, model_dir.string());
}

// How to sample the clips: --sampler and --frames when given, else as the run in `trained` was trained (its last
// checkpoint's configuration: a run of another preset's build, a T4's 4 frames or an H100's 16, or one trained with
// --sampler scene_change, is captioned as it was trained), else uniform and the preset's frames.
struct Sampling {
  std::string sampler = "uniform";
  int frames = ActivePreset::num_frames;
};
Sampling sampling_of(const demo::CommandLine& a, const std::optional<fs::path>& trained) {
  Sampling s;
  const fs::path checkpoint = trained ? train::last_checkpoint_path(*trained) : fs::path();
  if (trained && fs::exists(checkpoint) && !(a.has("sampler") && a.has("frames"))) {
    const auto config = train::checkpoint_configuration(checkpoint);
    std::vector<std::string> taken;
    if (const auto it = config.find("frame_sampler"); !a.has("sampler") && it != config.end()) {
      s.sampler = it->second;  // older checkpoints do not name it: uniform
      taken.push_back("sampler " + s.sampler);
    }
    if (!a.has("frames")) {
      const auto it = config.find("num_frames");
      require(it != config.end(), "{}: its configuration has no num_frames (give --frames)", checkpoint.string());
      s.frames = std::stoi(it->second);
      taken.push_back(fmt::format("{} frames per clip", s.frames));
    }
    if (!taken.empty())
      fmt::print(stderr, "caption: {} as {} was trained (--sampler, --frames to change)\n", fmt::join(taken, ", "),
                 trained->string());
  }
  if (a.has("sampler")) s.sampler = a.str("sampler", s.sampler);
  if (a.has("frames")) s.frames = a.integer("frames", s.frames);
  return s;
}

// The CPU build's decoder base: --base, else the base `trained` was trained on (its last checkpoint's "base": a GPU
// preset's run trains its LoRA factors over NF4 weights, and captions come from that model), else fp32.
[[maybe_unused]] std::string decoder_base(const demo::CommandLine& a, const std::optional<fs::path>& trained) {
  if (a.has("base")) return a.str("base", "");
  const fs::path checkpoint = trained ? train::last_checkpoint_path(*trained) : fs::path();
  if (!trained || !fs::exists(checkpoint)) return "fp32";
  const auto config = train::checkpoint_configuration(checkpoint);
  const auto it = config.find("base");
  if (it == config.end() || it->second != "4bit") return "fp32";
  fmt::print(stderr, "caption: the decoder's weights in NF4 as {} was trained (--base fp32 to change)\n",
             trained->string());
  return "nf4";
}

// caption_with_adapter over the decoder base decoder_base() names: the CPU build's fp32 or NF4; a GPU build's, the
// preset's (NF4 in every GPU preset; device_settings refuses another --base).
template <class Weights, class Codec>
int caption_on_base(const demo::CommandLine& a, const DeviceSettings& settings, const GenerationOptions& generation,
                    const model::DecoderConfig& config, const Weights& weights,
                    const std::optional<AdapterOnDisk>& adapter, model::Mlp2xGelu projector, const Codec& codec,
                    const VideoFeatures& feats, const std::optional<fs::path>& trained) {
  if constexpr (!kOnGpu)
    if (decoder_base(a, trained) == "nf4")
      return caption_with_adapter<quant::NF4Weight>(a, settings, generation, config, weights, adapter,
                                                    std::move(projector), codec, feats);
  return caption_with_adapter<CaptionBase>(a, settings, generation, config, weights, adapter, std::move(projector),
                                           codec, feats);
}

// The GPU build's vision tower (gpu_program.hpp: a device copy at the run's precision, released after the up-front
// encoding), after checking the GPU and naming it and the precision on stderr; none (the CPU tower) otherwise.
demo::DeviceEncoder device_encoder([[maybe_unused]] const DeviceSettings& settings,
                                   [[maybe_unused]] const model::ClipVision& vision) {
#if defined(VIDLORA_CAPTION_ON_CUDA)
  demo::check_running_gpu<ActivePreset>("caption", settings.memory, stderr, false);
  fmt::print(stderr, "caption: on the GPU in {} ({})\n", settings.precision,
             settings.precision == presets::device_precision_of<ActivePreset>()
                 ? "the preset's, as train_captioner trains"
                 : "--precision");
  return demo::device_encoder(vision, settings.precision, presets::memory_cap_bytes<ActivePreset>(settings.memory));
#else
  return {};
#endif
}

// --model is a Hugging Face LLaVA / LLaVA-NeXT-Video directory: its processor, prompt and tokenizer; the
// adapter (--adapter, or --trained's adapter/) at whatever rank it was trained with.
int caption_hf(const demo::CommandLine& a, const DeviceSettings& settings, const GenerationOptions& generation,
               const fs::path& dir) {
  // The train_captioner run captioned as it was trained (its sampler, frames and decoder base): --trained, or the run
  // whose OUT/adapter --adapter names (the whole trained model).
  std::optional<fs::path> run;
  if (a.has("trained")) {
    run = fs::path(a.str("trained", ""));
    check_trained_on(a, *run, dir);  // before the model loads (minutes for a 7B)
  } else if (a.has("adapter")) {     // OUT/adapter of a train_captioner run: checked the same
    fs::path adapter = fs::path(a.str("adapter", "")).lexically_normal();
    if (!adapter.has_filename()) adapter = adapter.parent_path();  // (a trailing '/')
    const fs::path out = adapter.has_parent_path() ? adapter.parent_path() : fs::path(".");
    if (fs::exists(out / "projector.safetensors") && fs::exists(train::last_checkpoint_path(out))) {
      check_trained_on(a, out, dir);
      run = out;
    }
  }
  const fs::path cache = writable_cache(a.str(
      "cache", (a.has("trained") ? fs::path(a.str("trained", "")) / "feature_cache" : fs::path("vidlora_feature_cache"))
                   .string()));
  const demo::HfModel m(dir, a.str("prompt", demo::kDefaultHfPrompt));
  std::optional<fs::path> adapter_dir;
  std::optional<fs::path> projector_file;
  if (a.has("trained")) {
    const fs::path trained = a.str("trained", "");
    require(fs::exists(trained / "projector.safetensors"),
            "{} has no projector.safetensors: is it a finished train_captioner output directory?", trained.string());
    projector_file = trained / "projector.safetensors";
    if (fs::exists(trained / "adapter" / "adapter_config.json")) adapter_dir = trained / "adapter";
  }
  if (a.has("adapter")) adapter_dir = fs::path(a.str("adapter", ""));
  model::Mlp2xGelu projector = m.projector();
  if (projector_file) train::load_projector(*projector_file, projector);
  const std::optional<AdapterOnDisk> adapter =
      read_adapter(adapter_dir, projector_file, projector, m.config.text,
                   a.has("adapter") ? "caption with one of them (--adapter alone, or --trained alone)"
                                    : "they are not one run's (rewrite one of them, or caption with --adapter alone)");
  const auto codec = m.codec();
  const Sampling sampling = sampling_of(a, run);
  const demo::DeviceEncoder encoder = device_encoder(settings, m.vision);
  const VideoFeatures feats =
      encode_up_front(a, m.features(sampling.sampler, sampling.frames, cache, encoder.encoder), encoder);
  return caption_on_base(a, settings, generation, m.config.text, m.weights, adapter, std::move(projector), codec, feats,
                         run);
}

// Each VIDEO that is a directory stands for the video files under it (train::kVideoExtensions, any case), at any
// depth (symbolic links to folders are not followed), in path order: `caption ... clips/` captions a folder of clips.
// One that holds none is a usage error.
std::vector<std::string> expand_video_arguments(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const std::string& arg : args) {
    std::error_code ec;
    if (!fs::is_directory(arg, ec)) {
      out.push_back(arg);
      continue;
    }
    std::vector<fs::path> found;
    for (fs::recursive_directory_iterator it(arg, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec)) {
      std::string ext = it->path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
      if (it->is_regular_file(ec) && std::find(std::begin(train::kVideoExtensions), std::end(train::kVideoExtensions),
                                               ext) != std::end(train::kVideoExtensions))
        found.push_back(it->path());
    }
    if (ec) throw demo::UsageError(fmt::format("VIDEO {}: the directory cannot be read: {}", arg, ec.message()));
    if (found.empty())
      throw demo::UsageError(fmt::format("VIDEO {}: the directory holds no video file ({})", arg,
                                         fmt::join(train::kVideoExtensions, ", ")));
    std::sort(found.begin(), found.end());  // path order: a/x.mp4 before a-b/x.mp4
    for (const fs::path& p : found) out.push_back(p.string());
  }
  return out;
}

int caption_main(demo::CommandLine a) {
  if (a.rest.empty()) throw demo::UsageError("no VIDEO given");
  a.rest = expand_video_arguments(a.rest);
  const DeviceSettings settings = device_settings(a);  // its usage errors before any model loads
  if (a.has("sampler") && !demo::is_sampler(a.str("sampler", "")))
    throw demo::UsageError(
        fmt::format("option --sampler: '{}' is not one of {}", a.str("sampler", ""), video::sampling_policy_names()));
  if (a.has("jsonl")) check_writable_output(a.str("jsonl", ""));
  const fs::path model_dir = a.str("model", "demo_model");
  if (demo::model_kind(model_dir) == demo::ModelKind::HuggingFace) {
    const GenerationOptions generation =
        generation_options(a, a.has("ignore-generation-config") ? model::GenerationConfigFile{}
                                                                : model::read_generation_config(model_dir));
    return caption_hf(a, settings, generation, model_dir);
  }
  for (const char* hf_only : {"adapter", "prompt", "ignore-generation-config"})
    if (a.has(hf_only))
      throw demo::UsageError(
          fmt::format("--{} applies to a Hugging Face model directory; {} is the demo's", hf_only, model_dir.string()));
  const GenerationOptions generation = generation_options(a, model::GenerationConfigFile{});
  const fs::path trained = a.str("trained", "vidlora_out");
  require(fs::exists(trained / "projector.safetensors"),
          "{} has no projector.safetensors: is it a finished train_captioner output directory?", trained.string());
  check_trained_on(a, trained, model_dir);
  const fs::path cache = writable_cache(a.str("cache", (trained / "feature_cache").string()));
  const demo::DemoModel m(model_dir);
  model::Mlp2xGelu projector(m.vision_config.hidden_size, m.decoder_config.hidden_size, 0);
  train::load_projector(trained / "projector.safetensors", projector);
  std::optional<fs::path> adapter_dir;  // none: a stage-1-only run, the projector alone
  if (fs::exists(trained / "adapter" / "adapter_config.json")) adapter_dir = trained / "adapter";
  const std::optional<AdapterOnDisk> adapter =
      read_adapter(adapter_dir, trained / "projector.safetensors", projector, m.decoder_config,
                   "they are not one run's (train again, or restore the run's files)");
  const auto codec = m.codec();
  const Sampling sampling = sampling_of(a, trained);
  const demo::DeviceEncoder encoder = device_encoder(settings, *m.vision);
  const VideoFeatures feats =
      encode_up_front(a, m.features(sampling.sampler, sampling.frames, cache, encoder.encoder), encoder);
  return caption_on_base(a, settings, generation, m.decoder_config, *m.decoder_weights, adapter, std::move(projector),
                         codec, feats, trained);
}

}  // namespace

int main(int argc, char** argv) {
  auto cli = command_line();
  try {
    cli.parse(argc, argv);
    if (cli.help_requested()) {
      fmt::print("{}", cli.usage());
      return 0;
    }
    demo::capture_ffmpeg_log();
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    return caption_main(cli);
  } catch (const demo::UsageError& e) {
    fmt::print(stderr, "caption: {}\n(caption --help lists the options)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "caption: {}\n", e.what());
    return 1;
  }
}
