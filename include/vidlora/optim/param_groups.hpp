#pragma once
// Parameter-group builders: which parameters get weight decay.

#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/optim/parameter.hpp>

namespace vidlora::optim {

// transformers' Trainer.get_decay_parameter_names: a parameter decays unless its lower-cased name
// matches one of "bias", "layernorm", "rmsnorm", "(^|.)norm($|.)", "_norm($|.)". Norm layers found
// by type in transformers (nn.LayerNorm) carry these names in every model vidlora loads
// (input_layernorm, post_attention_layernorm, model.norm, q_norm, k_norm).
inline bool decays_in_transformers(std::string_view name) {
  static const std::regex no_decay(R"(bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.))",
                                   std::regex::ECMAScript | std::regex::optimize);
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return !std::regex_search(lower, no_decay);
}

// The recipe's option: only LoRA's B matrices decay (names containing "lora_B").
inline bool decays_lora_b_only(std::string_view name) { return name.find("lora_B") != std::string_view::npos; }

// Splits params into {"decay": weight_decay, "no_decay": 0} by a predicate on the name, keeping order.
template <class Predicate>
std::vector<ParamGroup> split_by_decay(std::span<const Parameter> params, double weight_decay, Predicate decays) {
  ParamGroup decay{.params = {}, .weight_decay = weight_decay, .lr_scale = 1.0, .name = "decay"};
  ParamGroup no_decay{.params = {}, .weight_decay = 0.0, .lr_scale = 1.0, .name = "no_decay"};
  for (const Parameter& p : params) (decays(std::string_view(p.name)) ? decay : no_decay).params.push_back(p);
  return {std::move(decay), std::move(no_decay)};
}

// transformers' Trainer.create_optimizer grouping: decay everything but biases and norms.
inline std::vector<ParamGroup> transformers_groups(std::span<const Parameter> params, double weight_decay) {
  return split_by_decay(params, weight_decay, decays_in_transformers);
}

// The recipe's "decay lora_B only" grouping.
inline std::vector<ParamGroup> lora_b_only_groups(std::span<const Parameter> params, double weight_decay) {
  return split_by_decay(params, weight_decay, decays_lora_b_only);
}

}  // namespace vidlora::optim
