#pragma once
// Which linear layers get a LoRA adapter: the recipe's module sets, named as Hugging Face
// LLaMA / Qwen checkpoints name them, and PEFT's matching rule.

#include <array>
#include <concepts>
#include <cstddef>
#include <string_view>

namespace vidlora::lora {

// A target-module policy: a constexpr array of HF module names.
template <class T>
concept TargetModuleSet = requires {
  { T::modules.size() } -> std::convertible_to<std::size_t>;
  { T::modules[0] } -> std::convertible_to<std::string_view>;
};

// Attention projections only.
struct Basic {
  static constexpr std::array<std::string_view, 4> modules{"q_proj", "k_proj", "v_proj", "o_proj"};
};

// Attention projections plus the MLP's gate and up projections (down_proj stays frozen).
struct AttentionGateUp {
  static constexpr std::array<std::string_view, 6> modules{"q_proj", "k_proj",    "v_proj",
                                                           "o_proj", "gate_proj", "up_proj"};
};

// Attention and MLP projections (all seven linear layers of a decoder block).
struct Extended {
  static constexpr std::array<std::string_view, 7> modules{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                           "gate_proj", "up_proj", "down_proj"};
};

// PEFT's rule for a list of target names: the full module path equals a name or ends in ".<name>".
constexpr bool matches_target(std::string_view module_path, std::string_view target) {
  if (module_path == target) return true;
  return module_path.size() > target.size() && module_path.ends_with(target) &&
         module_path[module_path.size() - target.size() - 1] == '.';
}

// True when `module_path` (e.g. "model.layers.0.self_attn.q_proj") gets an adapter under Set.
template <TargetModuleSet Set>
constexpr bool is_target(std::string_view module_path) {
  for (std::string_view name : Set::modules)
    if (matches_target(module_path, name)) return true;
  return false;
}

static_assert(TargetModuleSet<Basic> && TargetModuleSet<AttentionGateUp> && TargetModuleSet<Extended>);

}  // namespace vidlora::lora

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using lora::AttentionGateUp;
using lora::Basic;
using lora::Extended;
using lora::TargetModuleSet;
}  // namespace vidlora
