#pragma once
// The files a run leaves for its user in TrainerConfig::output_dir (besides train_log.jsonl, curves.svg and the
// checkpoints): the PEFT adapter (adapter/, when a LoRA stage ran), projector.safetensors, and the best
// evaluation's captions (val_captions.jsonl).

#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <vidlora/io/atomic_file.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/train/dataset.hpp>
#include <vidlora/train/projector_tensors.hpp>
#include <vidlora/train/train_result.hpp>
#include <vidlora/train/trainer_config.hpp>

namespace vidlora::train {

// Writes dir/adapter/ (PEFT adapter_config.json + adapter_model.safetensors; when a stage of `config` trains LoRA
// and the decoder has LoRA layers; a LLaVA checkpoint's adapter carries the projector too, modules_to_save) and
// dir/projector.safetensors.
template <class Decoder, class Projector>
void save_run_outputs(const std::filesystem::path& dir, const TrainerConfig& config, Decoder& decoder,
                      Projector& projector) {
  std::filesystem::create_directories(dir);
  bool lora_trained = false;
  for (const auto& s : config.stages) lora_trained |= s.train_lora && s.epochs > 0;
  bool has_lora = false;
  decoder.for_each_lora([&](const std::string&, auto&) { has_lora = true; });
  if (lora_trained && has_lora) {
    lora::AdapterSpec spec;
    spec.r = Decoder::lora_type::rank;
    spec.lora_alpha = Decoder::lora_type::alpha;
    decoder.for_each_lora([&](const std::string&, auto& l) {
      spec.lora_alpha = l.alpha_value();  // an initial_adapter's alpha and rsLoRA, when the run started from one
      spec.use_rslora = l.options().use_rslora;
    });
    spec.lora_dropout = config.lora_dropout;
    spec.target_modules = config.target_modules;
    spec.base_model_name_or_path = config.base_model_name_or_path;
    // A decoder inside a LLaVA checkpoint: a plain name list would also put LoRA on the vision tower's
    // q/k/v_proj when PEFT loads the adapter, so the targets are a regex limited to the language model; and the
    // trained projector goes into the adapter as a modules_to_save module (PEFT's way to save "projector + LoRA"),
    // so PeftModel.from_pretrained gives the whole trained model.
    io::TensorMap saved;
    if (const std::string first = decoder.module_path(0, "q_proj");
        first.find("language_model.") != std::string::npos) {
      spec.target_regex = fmt::format(R"(.*language_model.*\.({}))", fmt::join(config.target_modules, "|"));
      spec.modules_to_save = {"multi_modal_projector"};
      saved = projector_adapter_tensors(projector);
    }
    lora::AdapterModules modules;
    decoder.for_each_lora([&](const std::string& path, auto& l) {
      // A checkpoint in the older LLaVA layout (language_model.model.*) is model.language_model.* in
      // transformers 5's modules, the names PEFT gives an adapter of it.
      const std::string legacy = "language_model.model.";
      const std::string name = path.starts_with(legacy) ? "model.language_model." + path.substr(legacy.size()) : path;
      modules[name] = lora::AdapterWeights{l.lora_A(), l.lora_B()};
    });
    lora::save_peft_adapter(dir / "adapter", spec, modules, saved);
  }
  save_projector(dir / "projector.safetensors", projector);
}

// Writes `path` (val_captions.jsonl), atomically: {"id", "video", "reference", "caption"} per clip of `ev`, whose
// clip_index points into `val`.
inline void write_val_captions(const std::filesystem::path& path, const std::vector<Clip>& val, const EvalResult& ev) {
  std::string text;
  for (std::size_t i = 0; i < ev.captions.size(); ++i) {
    const Clip& c = val[ev.clip_index[i]];
    text +=
        nlohmann::json{{"id", c.id}, {"video", c.video.string()}, {"reference", c.caption}, {"caption", ev.captions[i]}}
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
        "\n";
  }
  io::write_file_atomically(path, text);
}

}  // namespace vidlora::train
