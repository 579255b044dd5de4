#pragma once
// Build-time preset selection and the one table from a preset's name to its type, both built from the one
// list of names (presets/preset_list.hpp). CMake's -DVIDLORA_PRESET=<name> defines VIDLORA_ACTIVE_PRESET=<name>
// (a name from the list); without it the Cpu preset is active.

#include <array>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/preset_list.hpp>

namespace vidlora::presets {

// The one table of presets; a runtime name maps to a type only through it.
#define VIDLORA_PRESET_TUPLE_ELEMENT(name) \
  , std::tuple<name> {}
using AllPresets = decltype(std::tuple_cat(std::tuple<> {} VIDLORA_PRESETS(VIDLORA_PRESET_TUPLE_ELEMENT)));
#undef VIDLORA_PRESET_TUPLE_ELEMENT

// The names of AllPresets, in table order.
#define VIDLORA_PRESET_NAME(name) std::string_view{#name},
inline constexpr std::array kPresetNames{VIDLORA_PRESETS(VIDLORA_PRESET_NAME)};
#undef VIDLORA_PRESET_NAME

// "Cpu, T4, L4, A100, H100": the known names for messages.
inline std::string known_preset_names() {
  std::string out;
  for (std::string_view n : kPresetNames) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

namespace detail {
template <class Tuple>
struct NamesMatch;
template <class... P>
struct NamesMatch<std::tuple<P...>> {
  static constexpr bool value = [] {
    std::size_t i = 0;
    return ((P::name == kPresetNames[i++]) && ...);
  }();
};
}  // namespace detail
static_assert(detail::NamesMatch<AllPresets>::value,
              "vidlora: every preset in presets/preset_list.hpp must have a type whose ::name is its own name");

// Calls f(P{}) with the preset type whose name is `name`; unknown names throw, listing the known ones.
template <class F>
decltype(auto) with_preset(std::string_view name, F&& f) {
  return [&]<std::size_t... I>(std::index_sequence<I...>)->decltype(auto) {
    using R = decltype(f(std::tuple_element_t<0, AllPresets>{}));
    if constexpr (std::is_void_v<R>) {
      const bool found =
          ((std::tuple_element_t<I, AllPresets>::name == name ? (f(std::tuple_element_t<I, AllPresets>{}), true)
                                                              : false) ||
           ...);
      if (!found) fail("unknown preset '{}'; known presets: {}", name, known_preset_names());
    } else {
      R result{};
      const bool found = ((std::tuple_element_t<I, AllPresets>::name == name
                               ? (result = f(std::tuple_element_t<I, AllPresets>{}), true)
                               : false) ||
                          ...);
      if (!found) fail("unknown preset '{}'; known presets: {}", name, known_preset_names());
      return result;
    }
  }
  (std::make_index_sequence<std::tuple_size_v<AllPresets>>{});
}

// Calls f(P{}) for every preset in table order.
template <class F>
void for_each_preset(F&& f) {
  std::apply([&](auto... p) { (f(p), ...); }, AllPresets{});
}

}  // namespace vidlora::presets

// The spelling used before VIDLORA_ACTIVE_PRESET (a frozen migration guard, not a list of presets): refuse it
// rather than silently fall back to Cpu.
#if defined(VIDLORA_PRESET_T4) || defined(VIDLORA_PRESET_L4) || defined(VIDLORA_PRESET_A100) || \
    defined(VIDLORA_PRESET_H100) || defined(VIDLORA_PRESET_Cpu)
#error \
    "vidlora: VIDLORA_PRESET_<name> no longer selects the preset; define VIDLORA_ACTIVE_PRESET=<name> (CMake's vidlora_use_preset does)"
#endif

namespace vidlora {
#if defined(VIDLORA_ACTIVE_PRESET)
using ActivePreset = presets::VIDLORA_ACTIVE_PRESET;
#else
using ActivePreset = presets::Cpu;
#endif
}  // namespace vidlora
