#pragma once
// The one table from a sampling policy's run-time name ("uniform", "scene_change", "motion": what a
// command line or a feature cache key says) to its type, as presets::with_preset does for presets.

#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/video/policies.hpp>
#include <vidlora/video/sampling_policy.hpp>

namespace vidlora::video {

using AllSamplingPolicies = std::tuple<Uniform, SceneChange, Motion>;

// "uniform, scene_change, motion": the names the table knows, for messages and usage texts.
inline std::string sampling_policy_names() {
  std::string out;
  std::apply([&](auto... p) { ((out += (out.empty() ? "" : ", ") + std::string(decltype(p)::name)), ...); },
             AllSamplingPolicies{});
  return out;
}

// Calls f(Policy{}) with the policy whose name is `name` and returns what f returns; an unknown name is
// an error listing the known ones.
template <class F>
decltype(auto) with_sampling_policy(std::string_view name, F&& f) {
  using R = decltype(f(Uniform{}));
  return [&]<std::size_t... I>(std::index_sequence<I...>)->R {
    if constexpr (std::is_void_v<R>) {
      const bool found = ((std::tuple_element_t<I, AllSamplingPolicies>::name == name
                               ? (f(std::tuple_element_t<I, AllSamplingPolicies>{}), true)
                               : false) ||
                          ...);
      if (!found) fail("unknown sampler '{}' ({})", name, sampling_policy_names());
    } else {
      std::optional<R> result;
      ((std::tuple_element_t<I, AllSamplingPolicies>::name == name
            ? (result.emplace(f(std::tuple_element_t<I, AllSamplingPolicies>{})), true)
            : false) ||
       ...);
      if (!result) fail("unknown sampler '{}' ({})", name, sampling_policy_names());
      return std::move(*result);
    }
  }
  (std::make_index_sequence<std::tuple_size_v<AllSamplingPolicies>>{});
}

}  // namespace vidlora::video
