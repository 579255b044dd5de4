#pragma once
// Scheduler<Policy>: a learning-rate schedule as a pure function of the optimizer step.

#include <cmath>
#include <string_view>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/schedule/lr_policy.hpp>
#include <vidlora/schedule/options.hpp>
#include <vidlora/schedule/policies.hpp>

namespace vidlora::schedule {

// lr(step) is the learning rate of the optimizer step with 0-based index `step`: the value a
// transformers LambdaLR scheduler holds after `step` calls of scheduler.step(). Step 0 of a warmup
// therefore has lr 0, as in transformers.
template <class Policy>
class Scheduler {
  static_assert(LrPolicy<Policy>,
                "Scheduler<Policy>: Policy is not a learning-rate policy (it must model vidlora::schedule::LrPolicy: "
                "Constant, Linear, Cosine, CosineRestarts or WarmRestarts)");

 public:
  using policy_type = Policy;

  explicit Scheduler(ScheduleOptions options) : options_(std::move(options)) {
    const auto& o = options_;
    require(std::isfinite(o.base_lr) && o.base_lr >= 0.0, "Scheduler: base_lr must be finite and >= 0 (got {})",
            o.base_lr);
    require(o.total_steps > 0, "Scheduler: total_steps must be > 0 (got {})", o.total_steps);
    require(o.warmup_steps >= 0, "Scheduler: warmup_steps must be >= 0 (got {})", o.warmup_steps);
    require(o.warmup_steps <= o.total_steps, "Scheduler: warmup_steps {} is longer than training (total_steps {})",
            o.warmup_steps, o.total_steps);
    if constexpr (LrPolicy<Policy>) Policy::validate(o);
  }

  double lr(long step) const {
    require(step >= 0, "Scheduler: step must be >= 0 (got {})", step);
    if constexpr (LrPolicy<Policy>) {
      return Policy::lr(step, options_);
    } else {
      return 0.0;
    }
  }
  double operator()(long step) const { return lr(step); }

  const ScheduleOptions& options() const { return options_; }
  double base_lr() const { return options_.base_lr; }
  long warmup_steps() const { return options_.warmup_steps; }
  long total_steps() const { return options_.total_steps; }

 private:
  ScheduleOptions options_;
};

// Maps a scheduler name (transformers' SchedulerType values, plus PyTorch's "cosine_warm_restarts")
// to its policy and calls f(Policy{}); the one place a runtime name becomes a type.
// "constant" maps to Constant: transformers' get_constant_schedule ignores warmup, so a caller
// mirroring it passes warmup_steps = 0.
template <class F>
decltype(auto) visit_lr_policy(std::string_view name, F&& f) {
  if (name == "constant" || name == Constant::name) return std::forward<F>(f)(Constant{});
  if (name == Linear::name) return std::forward<F>(f)(Linear{});
  if (name == Cosine::name) return std::forward<F>(f)(Cosine{});
  if (name == CosineRestarts::name) return std::forward<F>(f)(CosineRestarts{});
  if (name == WarmRestarts::name) return std::forward<F>(f)(WarmRestarts{});
  fail(
      "unknown lr scheduler '{}' (expected constant, constant_with_warmup, linear, cosine, cosine_with_restarts "
      "or cosine_warm_restarts)",
      name);
}

}  // namespace vidlora::schedule

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using schedule::Scheduler;
}  // namespace vidlora
