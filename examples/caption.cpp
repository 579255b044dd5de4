// caption: captions video files with a base model (a model directory, see demo_common.hpp) plus a trained
// PEFT adapter and projector (train_captioner's outputs). `caption --help` lists the options.
//
// Prints one line per video on stdout: path<TAB>caption (and, with --jsonl FILE, one JSON object per video
// into FILE). A video that cannot be captioned is reported on stderr and the others go on; the exit status
// is then 1. Progress (clips done, rate, ETA) goes to stderr when it is a terminal.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include <vidlora/io/atomic_file.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/train/generation.hpp>

#include "demo_common.hpp"

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

demo::CommandLine command_line() {
  using namespace demo;
  return CommandLine(
      "caption",
      "caption --model DIR --trained DIR [options] VIDEO...\n"
      "\n"
      "Captions each VIDEO with the base model in --model plus the adapter/ and projector.safetensors that\n"
      "train_captioner wrote into --trained. Prints path<TAB>caption per video; errors go to stderr.",
      {
          text("model", "DIR", "base model directory (default demo_model)"),
          text("trained", "DIR", "train_captioner's output directory (default vidlora_out)"),
          text("jsonl", "FILE", "also write {\"video\", \"caption\"} lines to FILE"),
          text("cache", "DIR", "feature cache (default TRAINED/feature_cache)"),
          text("sampler", "NAME", "frame sampler: uniform, scene_change or motion (default uniform)"),
          integer("frames", "N", "frames per clip (default: the preset's)", 1),
          integer("num-beams", "N", "beam width (default 1: greedy)", 1),
          real("length-penalty", "X", "beam search length penalty (default 1)", -1e9),
          real("repetition-penalty", "X", "repetition penalty (default 1)"),
          integer("no-repeat-ngram-size", "N", "no repeated n-grams of this size (default 0: off)"),
          integer("max-new-tokens", "N", "longest caption in tokens (default 64)", 1),
      });
}

// One updating line on stderr: clips done, seconds per clip, time left.
void show_progress(std::size_t done, std::size_t total, double seconds) {
  const double per = done > 0 ? seconds / static_cast<double>(done) : 0.0;
  fmt::print(stderr, "\r[{}/{}] {:.2f} s/clip, ETA {:.0f} s   ", done, total, per,
             per * static_cast<double>(total - done));
  if (done == total) fmt::print(stderr, "\n");
}

int caption_main(const demo::CommandLine& a) {
  if (a.rest.empty()) throw demo::UsageError("no VIDEO given");
  const demo::DemoModel m(a.str("model", "demo_model"));
  const fs::path trained = a.str("trained", "vidlora_out");
  require(fs::exists(trained / "projector.safetensors"),
          "{} has no projector.safetensors: is it a finished train_captioner output directory?", trained.string());
  model::DecoderOptions o;
  if (fs::exists(trained / "adapter" / "adapter_config.json")) {
    const auto spec = lora::load_peft_adapter(trained / "adapter").spec;
    require(spec.r == ActivePreset::lora_r && spec.lora_alpha == ActivePreset::lora_alpha,
            "adapter r {} alpha {} but this {} build has r {} alpha {}", spec.r, spec.lora_alpha, ActivePreset::name,
            ActivePreset::lora_r, ActivePreset::lora_alpha);
    o.target_modules = spec.target_modules;
  }
  model::Decoder<ActivePreset::lora_r, ActivePreset::lora_alpha> decoder(m.decoder_config, *m.decoder_weights, o);
  if (!o.target_modules.empty())
    decoder.load_adapter(io::SafetensorsFile::open(trained / "adapter" / "adapter_model.safetensors"));
  model::Mlp2xGelu projector(m.vision_config.hidden_size, m.decoder_config.hidden_size, 0);
  load_projector(trained / "projector.safetensors", projector);
  const auto codec = m.codec();
  GenerationOptions g;
  g.max_new_tokens = a.integer("max-new-tokens", 64);
  g.num_beams = a.integer("num-beams", 1);
  g.length_penalty = a.real("length-penalty", 1.0);
  g.repetition_penalty = a.real("repetition-penalty", 1.0);
  g.no_repeat_ngram_size = a.integer("no-repeat-ngram-size", 0);
  g.eos_token_id = codec.eos_id;
  const auto feats = m.features(a.str("sampler", "uniform"), a.integer("frames", ActivePreset::num_frames),
                                a.str("cache", (trained / "feature_cache").string()));
  const bool progress = ::isatty(2) == 1 && a.rest.size() > 1;
  const auto start = std::chrono::steady_clock::now();
  std::string jsonl;
  int status = 0;
  for (std::size_t i = 0; i < a.rest.size(); ++i) {
    const std::string& v = a.rest[i];
    try {
      const Matrix visual = projector.apply(feats(v));
      const auto seq = model::splice_visual_tokens<float>(codec.prompt_ids, std::vector<int>{}, codec.placeholder_id,
                                                          visual, decoder.embed_tokens());
      const std::string text = codec.decode(generate(decoder, seq.embeds, g).ids);
      if (progress) fmt::print(stderr, "\r\033[K");
      fmt::print("{}\t{}\n", v, text);
      std::fflush(stdout);
      jsonl += nlohmann::json{{"video", v}, {"caption", text}}.dump(-1, ' ', false,
                                                                    nlohmann::json::error_handler_t::replace) +
               "\n";
    } catch (const std::exception& e) {
      if (progress) fmt::print(stderr, "\r\033[K");
      fmt::print(stderr, "caption: {}: {}\n", v, e.what());
      status = 1;
    }
    if (progress)
      show_progress(i + 1, a.rest.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (a.has("jsonl")) io::write_file_atomically(a.str("jsonl", ""), jsonl);
  return status;
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
