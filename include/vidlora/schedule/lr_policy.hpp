#pragma once
// concept LrPolicy: what Scheduler<Policy> needs from a learning-rate policy tag.

#include <concepts>
#include <string_view>
#include <type_traits>

#include <vidlora/schedule/options.hpp>

namespace vidlora::schedule {

// An LrPolicy is an empty tag type with three static members:
//   name                      the schedule's name as transformers / PyTorch call it ("cosine", ...)
//   validate(options)         throws vidlora::Error naming any option the policy cannot use
//   lr(step, options)         the learning rate of 0-based optimizer step `step` (>= 0), given options
//                             that passed both Scheduler's common checks and validate()
template <class P>
concept LrPolicy = std::is_empty_v<P> && requires(long step, const ScheduleOptions& options) {
  { P::name } -> std::convertible_to<std::string_view>;
  P::validate(options);
  { P::lr(step, options) } -> std::same_as<double>;
};

// Linear warmup multiplier as transformers computes it: step / max(1, warmup_steps).
inline double warmup_factor(long step, long warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(warmup_steps > 1 ? warmup_steps : 1);
}

}  // namespace vidlora::schedule

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using schedule::LrPolicy;
}  // namespace vidlora
