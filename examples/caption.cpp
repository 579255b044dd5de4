// caption: captions video files with a base model (a model directory, see demo_common.hpp) plus a trained
// PEFT adapter and projector (train_captioner's outputs). `caption --help` lists the options.
//
// Prints one line per video on stdout: path<TAB>caption (and, with --jsonl FILE, one JSON object per video
// into FILE). A video that cannot be captioned is reported on stderr and the others go on; the exit status
// is then 1. Progress (clips done, rate, ETA) goes to stderr: an updating line on a terminal, else one line per clip.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vidlora/io/atomic_file.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/lora/rank_dispatch.hpp>
#include <vidlora/model/peft_decoder.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/train/checkpoint.hpp>

#include "demo_common.hpp"
#include "hf_model.hpp"

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
      "adapter (any rank), --trained adds train_captioner's adapter and projector. Prints path<TAB>caption per\n"
      "video; errors and progress go to stderr. Runs on the CPU in every build, a GPU preset's too (a 7B model:\n"
      "about 28 GB of host memory for its fp32 weights, minutes per clip).",
      {
          text("model", "DIR", "base model directory: the demo's, or a Hugging Face LLaVA one (default demo_model)"),
          text("trained", "DIR", "train_captioner's output directory (default vidlora_out; optional with HF_DIR)"),
          text("adapter", "DIR", "HF_DIR only: a PEFT LoRA adapter directory for that model"),
          text("prompt", "TEXT", "HF_DIR only: the question in the chat template (default: Describe this video.)"),
          text("jsonl", "FILE", "also write {\"video\", \"caption\"} lines to FILE"),
          text("cache", "DIR", "feature cache (default TRAINED/feature_cache)"),
          text("sampler", "NAME",
               "frame sampler: uniform, scene_change or motion (default: --trained's, else uniform)"),
          integer("frames", "N", "frames per clip (default: those --trained was trained with, else the preset's)", 1),
          integer("num-beams", "N", "beam width (default 1: greedy)", 1),
          real("length-penalty", "X", "beam search length penalty (default 1)", -1e9),
          real("repetition-penalty", "X", "repetition penalty (default 1)"),
          integer("no-repeat-ngram-size", "N", "no repeated n-grams of this size (default 0: off)"),
          integer("max-new-tokens", "N", "longest caption in tokens (default 64)", 1),
      });
}

// Progress on stderr: one updating line on a terminal, else one line per clip (logs).
void show_progress(std::size_t done, std::size_t total, double seconds, bool terminal) {
  const double per = done > 0 ? seconds / static_cast<double>(done) : 0.0;
  fmt::print(stderr, "{}[{}/{}] {:.2f} s/clip, ETA {:.0f} s{}", terminal ? "\r" : "caption: ", done, total, per,
             per * static_cast<double>(total - done), terminal ? "   " : "\n");
  if (terminal && done == total) fmt::print(stderr, "\n");
}

GenerationOptions generation_options(const demo::CommandLine& a, int eos_id) {
  GenerationOptions g;
  g.max_new_tokens = a.integer("max-new-tokens", 64);
  g.num_beams = a.integer("num-beams", 1);
  g.length_penalty = a.real("length-penalty", 1.0);
  g.repetition_penalty = a.real("repetition-penalty", 1.0);
  g.no_repeat_ngram_size = a.integer("no-repeat-ngram-size", 0);
  g.eos_token_id = eos_id;
  return g;
}

// Captions every video of a.rest; returns the exit status (1 when any video failed).
template <class DecoderT, class ProjectorT>
int caption_videos(const demo::CommandLine& a, DecoderT& decoder, const ProjectorT& projector,
                   const train::TextCodec& codec, const std::function<Matrix(const fs::path&)>& feats) {
  const GenerationOptions g = generation_options(a, codec.eos_id);
  const bool terminal = ::isatty(2) == 1;
  const bool progress = a.rest.size() > 1;
  const auto start = std::chrono::steady_clock::now();
  std::string jsonl;
  int status = 0;
  for (std::size_t i = 0; i < a.rest.size(); ++i) {
    const std::string& v = a.rest[i];
    try {
      const Matrix visual = projector.apply(feats(v));
      const auto seq = model::splice_visual_tokens<float>(codec.prompt_ids, std::vector<int>{}, codec.placeholder_id,
                                                          visual, decoder.embed_tokens());
      const std::string text = codec.decode(model::generate(decoder, seq.embeds, g).ids);
      if (progress && terminal) fmt::print(stderr, "\r\033[K");
      fmt::print("{}\t{}\n", v, text);
      std::fflush(stdout);
      jsonl += nlohmann::json{{"video", v}, {"caption", text}}.dump(-1, ' ', false,
                                                                    nlohmann::json::error_handler_t::replace) +
               "\n";
    } catch (const std::exception& e) {
      if (progress && terminal) fmt::print(stderr, "\r\033[K");
      fmt::print(stderr, "caption: {}: {}\n", v, e.what());
      status = 1;
    }
    if (progress)
      show_progress(i + 1, a.rest.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), terminal);
  }
  if (a.has("jsonl")) io::write_file_atomically(a.str("jsonl", ""), jsonl);
  return status;
}

// The decoder with the PEFT adapter in `adapter_dir` at the rank and alpha it was trained with (whichever preset's
// build or library trained it), or without one, captioning the videos.
template <class Weights, class ProjectorT, class Codec, class Features>
int caption_with_adapter(const demo::CommandLine& a, const model::DecoderConfig& config, const Weights& weights,
                         const std::optional<fs::path>& adapter_dir, const ProjectorT& projector, const Codec& codec,
                         const Features& feats) {
  if (!adapter_dir) {
    model::Decoder<ActivePreset::lora_r, ActivePreset::lora_alpha> decoder(config, weights);
    return caption_videos(a, decoder, projector, codec, feats);
  }
  require(fs::exists(*adapter_dir / "adapter_config.json"),
          "{} is not a PEFT adapter directory: it has no adapter_config.json", adapter_dir->string());
  const lora::PeftAdapter adapter = lora::load_peft_adapter(*adapter_dir);
  fmt::print(stderr, "caption: adapter {} (r {}, alpha {})\n", adapter_dir->string(), adapter.spec.r,
             adapter.spec.lora_alpha);
  const model::DecoderOptions options = model::decoder_options_for(adapter, config);
  return lora::dispatch_rank(adapter.spec.r, [&]<int R>() {
    model::Decoder<R, R> decoder(config, weights, options);
    decoder.load_adapter(io::SafetensorsFile::open(*adapter_dir / "adapter_model.safetensors"));
    return caption_videos(a, decoder, projector, codec, feats);
  });
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

// --model is a Hugging Face LLaVA / LLaVA-NeXT-Video directory: its processor, prompt and tokenizer; the
// adapter (--adapter, or --trained's adapter/) at whatever rank it was trained with.
int caption_hf(const demo::CommandLine& a, const fs::path& dir) {
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
  const auto codec = m.codec();
  const Sampling sampling =
      sampling_of(a, a.has("trained") ? std::optional<fs::path>(a.str("trained", "")) : std::nullopt);
  const auto feats = m.features(sampling.sampler, sampling.frames,
                                a.str("cache", (a.has("trained") ? fs::path(a.str("trained", "")) / "feature_cache"
                                                                 : fs::path("vidlora_feature_cache"))
                                                   .string()));
  return caption_with_adapter(a, m.config.text, m.weights, adapter_dir, projector, codec, feats);
}

int caption_main(const demo::CommandLine& a) {
  if (a.rest.empty()) throw demo::UsageError("no VIDEO given");
  const fs::path model_dir = a.str("model", "demo_model");
  if (demo::model_kind(model_dir) == demo::ModelKind::HuggingFace) return caption_hf(a, model_dir);
  for (const char* hf_only : {"adapter", "prompt"})
    if (a.has(hf_only))
      throw demo::UsageError(
          fmt::format("--{} applies to a Hugging Face model directory; {} is the demo's", hf_only, model_dir.string()));
  const demo::DemoModel m(model_dir);
  const fs::path trained = a.str("trained", "vidlora_out");
  require(fs::exists(trained / "projector.safetensors"),
          "{} has no projector.safetensors: is it a finished train_captioner output directory?", trained.string());
  model::Mlp2xGelu projector(m.vision_config.hidden_size, m.decoder_config.hidden_size, 0);
  train::load_projector(trained / "projector.safetensors", projector);
  const auto codec = m.codec();
  const Sampling sampling = sampling_of(a, trained);
  const auto feats =
      m.features(sampling.sampler, sampling.frames, a.str("cache", (trained / "feature_cache").string()));
  std::optional<fs::path> adapter_dir;  // none: a stage-1-only run, the projector alone
  if (fs::exists(trained / "adapter" / "adapter_config.json")) adapter_dir = trained / "adapter";
  return caption_with_adapter(a, m.decoder_config, *m.decoder_weights, adapter_dir, projector, codec, feats);
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
    return caption_main(cli);
  } catch (const demo::UsageError& e) {
    fmt::print(stderr, "caption: {}\n(caption --help lists the options)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "caption: {}\n", e.what());
    return 1;
  }
}
