#pragma once
// Build-time preset selection and the one table from a preset's name to its type.
// CMake's -DVIDLORA_PRESET=<name> defines VIDLORA_PRESET_<name>; without it the Cpu preset is active.

#include <string_view>
#include <tuple>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/presets/gpu_presets.hpp>

namespace vidlora::presets {

// The one table of presets; a runtime name maps to a type only through it.
using AllPresets = std::tuple<Cpu, T4, L4, A100, H100>;

// Calls f(P{}) with the preset type whose name is `name`; unknown names throw, listing the known ones.
template <class F>
decltype(auto) with_preset(std::string_view name, F&& f) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) -> decltype(auto) {
    using R = decltype(f(std::tuple_element_t<0, AllPresets>{}));
    if constexpr (std::is_void_v<R>) {
      const bool found = ((std::tuple_element_t<I, AllPresets>::name == name
                               ? (f(std::tuple_element_t<I, AllPresets>{}), true)
                               : false) ||
                          ...);
      if (!found) fail("unknown preset '{}'; known presets: Cpu, T4, L4, A100, H100", name);
    } else {
      R result{};
      const bool found = ((std::tuple_element_t<I, AllPresets>::name == name
                               ? (result = f(std::tuple_element_t<I, AllPresets>{}), true)
                               : false) ||
                          ...);
      if (!found) fail("unknown preset '{}'; known presets: Cpu, T4, L4, A100, H100", name);
      return result;
    }
  }(std::make_index_sequence<std::tuple_size_v<AllPresets>>{});
}

// Calls f(P{}) for every preset in table order.
template <class F>
void for_each_preset(F&& f) {
  std::apply([&](auto... p) { (f(p), ...); }, AllPresets{});
}

}  // namespace vidlora::presets

namespace vidlora {
#if defined(VIDLORA_PRESET_T4)
using ActivePreset = presets::T4;
#elif defined(VIDLORA_PRESET_L4)
using ActivePreset = presets::L4;
#elif defined(VIDLORA_PRESET_A100)
using ActivePreset = presets::A100;
#elif defined(VIDLORA_PRESET_H100)
using ActivePreset = presets::H100;
#else
using ActivePreset = presets::Cpu;
#endif
}  // namespace vidlora
