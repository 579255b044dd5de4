#pragma once
// A PEFT adapter trained in Python, mapped onto a Decoder: decoder_options_for(adapter, config) gives
// the DecoderOptions whose LoRA slots are exactly the adapter's modules, with its dropout, rsLoRA and
// (run-time) lora_alpha; lora::dispatch_rank(adapter.spec.r, ...) picks the compile-time Rank. Every
// adapter module must be a decoder linear layer, and every decoder layer its target_modules select
// (resolved as PEFT does, under the adapter's own module names) must have tensors: errors name them.
// The modules an adapter saves whole beside LoRA (modules_to_save: a LLaVA fine-tune's multi_modal_projector) are not
// the decoder's: an adapter with such tensors is refused unless the caller says it loads them
// (SavedModules::loaded_by_caller, after train::load_projector_from_adapter), so that none is dropped unnoticed.

#include <regex>
#include <set>
#include <string>

#include <vidlora/core/error.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/decoder.hpp>

namespace vidlora::model {

enum class SavedModules { refuse, loaded_by_caller };

inline DecoderOptions decoder_options_for(const lora::PeftAdapter& adapter, const DecoderConfig& config,
                                          DecoderOptions options = {}, SavedModules saved = SavedModules::refuse) {
  require(saved == SavedModules::loaded_by_caller || adapter.saved_tensors.empty(),
          "PEFT adapter: it saves modules beside LoRA (modules_to_save [{}]: {}), which the decoder does not hold; "
          "load them (train::load_projector_from_adapter for the multi_modal_projector) and pass "
          "SavedModules::loaded_by_caller",
          fmt::join(adapter.spec.modules_to_save, ", "), fmt::join(adapter.saved_tensors, ", "));
  static const std::regex linear(
      R"(^(.*)layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$)");
  std::string prefix;
  bool first = true;
  std::set<std::string> present;
  options.target_modules.clear();
  for (const auto& entry : adapter.modules) {
    std::smatch m;
    require(std::regex_match(entry.first, m, linear),
            "PEFT adapter: module '{}' is not a decoder linear layer (q/k/v/o_proj, gate/up/down_proj); vidlora puts "
            "LoRA on those only",
            entry.first);
    const int layer = std::stoi(m[2].str());
    require(layer < config.num_hidden_layers, "PEFT adapter: module '{}' is in layer {} of a {}-layer decoder",
            entry.first, layer, config.num_hidden_layers);
    const std::string proj = m[4].str();
    const bool attention_proj = proj == "q_proj" || proj == "k_proj" || proj == "v_proj" || proj == "o_proj";
    require(attention_proj == (m[3].str() == "self_attn"), "PEFT adapter: module '{}' is under the wrong block",
            entry.first);
    if (first) prefix = m[1].str();
    require(m[1].str() == prefix, "PEFT adapter: modules '{}' and '{}layers…' use different prefixes", entry.first,
            prefix);
    first = false;
    present.insert(entry.first);
    options.target_modules.push_back(entry.first.substr(prefix.size()));
  }
  require(!present.empty(), "PEFT adapter: no decoder modules");
  const lora::PeftTargets targets = adapter.spec.targets();
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (std::size_t k = 0; k < kDecoderModules.size(); ++k) {
      const std::string name =
          fmt::format("{}layers.{}.{}.{}", prefix, l, k < 4 ? "self_attn" : "mlp", kDecoderModules[k]);
      require(!targets.matches(name) || present.count(name) > 0,
              "PEFT adapter: target_modules selects '{}' but the adapter has no lora_A / lora_B for it", name);
    }
  options.lora.dropout = adapter.spec.lora_dropout;
  options.lora.use_rslora = adapter.spec.use_rslora;
  options.lora.alpha = adapter.spec.lora_alpha;
  return options;
}

}  // namespace vidlora::model
