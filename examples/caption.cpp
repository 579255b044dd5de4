// caption: captions video files with a base model (a model directory, see demo_common.hpp) plus a trained
// PEFT adapter and projector (train_captioner's outputs).
//
//   caption --model demo_model --trained vidlora_out [--sampler uniform] [--frames 8] [--num-beams 1]
//           [--length-penalty 1] [--repetition-penalty 1] [--no-repeat-ngram-size 0] [--max-new-tokens 64] VIDEO...
// Prints one line per video: path<TAB>caption. A video that cannot be decoded prints an error line and
// the program goes on (exit status 1 at the end).
#include <iostream>

#include <fmt/format.h>

#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/presets.hpp>
#include <vidlora/train/generation.hpp>

#include "demo_common.hpp"

namespace fs = std::filesystem;
using namespace vidlora;

int main(int argc, char** argv) {
  try {
    const demo::Args a(argc, argv, {});
    if (a.rest.empty()) {
      fmt::print(stderr, "usage: caption --model DIR --trained DIR [options] VIDEO...\n");
      return 2;
    }
    const demo::DemoModel m(a.str("model", "demo_model"));
    const fs::path trained = a.str("trained", "vidlora_out");
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
    int status = 0;
    for (const auto& v : a.rest) {
      try {
        const Matrix visual = projector.apply(feats(v));
        const auto seq = model::splice_visual_tokens<float>(codec.prompt_ids, std::vector<int>{}, codec.placeholder_id,
                                                            visual, decoder.embed_tokens());
        fmt::print("{}\t{}\n", v, codec.decode(generate(decoder, seq.embeds, g).ids));
      } catch (const std::exception& e) {
        fmt::print("{}\terror: {}\n", v, e.what());
        status = 1;
      }
    }
    return status;
  } catch (const std::exception& e) {
    fmt::print(stderr, "caption: {}\n", e.what());
    return 1;
  }
}
