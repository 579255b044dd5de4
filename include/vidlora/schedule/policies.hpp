#pragma once
// The learning-rate policies. Each is an empty tag modelling LrPolicy; the formulas follow
// transformers' get_*_schedule_with_warmup lambdas (multiplier × base_lr, as LambdaLR applies them)
// and PyTorch's CosineAnnealingWarmRestarts, operation for operation, so the doubles agree.

#include <cmath>
#include <numbers>
#include <string_view>

#include <vidlora/core/error.hpp>
#include <vidlora/schedule/lr_policy.hpp>
#include <vidlora/schedule/options.hpp>

namespace vidlora::schedule {

// base_lr after linear warmup (transformers' get_constant_schedule_with_warmup). With warmup_steps = 0
// it is transformers' get_constant_schedule.
struct Constant {
  static constexpr std::string_view name = "constant_with_warmup";
  static void validate(const ScheduleOptions&) {}
  static double lr(long step, const ScheduleOptions& o) {
    if (step < o.warmup_steps) return o.base_lr * warmup_factor(step, o.warmup_steps);
    return o.base_lr * 1.0;
  }
};
using ConstantWithWarmup = Constant;

// Linear decay from base_lr at the end of warmup to 0 at total_steps, 0 beyond
// (transformers' get_linear_schedule_with_warmup).
struct Linear {
  static constexpr std::string_view name = "linear";
  static void validate(const ScheduleOptions&) {}
  static double lr(long step, const ScheduleOptions& o) {
    if (step < o.warmup_steps) return o.base_lr * warmup_factor(step, o.warmup_steps);
    const long span = o.total_steps - o.warmup_steps;
    const double m = static_cast<double>(o.total_steps - step) / static_cast<double>(span > 1 ? span : 1);
    return o.base_lr * (m > 0.0 ? m : 0.0);
  }
};

namespace detail {
// progress through the post-warmup part of training: 0 at the end of warmup, 1 at total_steps.
inline double progress(long step, const ScheduleOptions& o) {
  const long span = o.total_steps - o.warmup_steps;
  return static_cast<double>(step - o.warmup_steps) / static_cast<double>(span > 1 ? span : 1);
}
inline void require_cycles(std::string_view policy, const ScheduleOptions& o) {
  if (!o.num_cycles) return;
  const double c = *o.num_cycles;
  require(std::isfinite(c) && c > 0.0, "Scheduler<{}>: num_cycles must be finite and > 0 (got {})", policy, c);
}
}  // namespace detail

// Half-cosine (num_cycles 0.5 by default) from base_lr to 0 over the post-warmup steps, clamped at 0
// (transformers' get_cosine_schedule_with_warmup: max(0, ½(1 + cos(π · num_cycles · 2 · progress)))).
// Beyond total_steps the cosine keeps going (it rises again for num_cycles 0.5), exactly as transformers.
struct Cosine {
  static constexpr std::string_view name = "cosine";
  static constexpr double default_num_cycles = 0.5;
  static void validate(const ScheduleOptions& o) { detail::require_cycles("Cosine", o); }
  static double lr(long step, const ScheduleOptions& o) {
    if (step < o.warmup_steps) return o.base_lr * warmup_factor(step, o.warmup_steps);
    const double cycles = o.num_cycles.value_or(default_num_cycles);
    const double m = 0.5 * (1.0 + std::cos(std::numbers::pi * cycles * 2.0 * detail::progress(step, o)));
    return o.base_lr * (m > 0.0 ? m : 0.0);
  }
};

// A Cosine with hard restarts: num_cycles (default 1) half-cosines from base_lr to 0, each jumping back
// to base_lr, and 0 from total_steps on (transformers' get_cosine_with_hard_restarts_schedule_with_warmup:
// ½(1 + cos(π · ((num_cycles · progress) mod 1))) while progress < 1).
struct CosineRestarts : Cosine {
  static constexpr std::string_view name = "cosine_with_restarts";
  static constexpr double default_num_cycles = 1.0;
  static void validate(const ScheduleOptions& o) { detail::require_cycles("CosineRestarts", o); }
  static double lr(long step, const ScheduleOptions& o) {
    if (step < o.warmup_steps) return o.base_lr * warmup_factor(step, o.warmup_steps);
    const double progress = detail::progress(step, o);
    if (progress >= 1.0) return o.base_lr * 0.0;
    const double cycles = o.num_cycles.value_or(default_num_cycles);
    const double m = 0.5 * (1.0 + std::cos(std::numbers::pi * std::fmod(cycles * progress, 1.0)));
    return o.base_lr * (m > 0.0 ? m : 0.0);
  }
};

// SGDR (PyTorch CosineAnnealingWarmRestarts) after a linear warmup: steps [0, warmup) rise linearly
// to base_lr as in every other policy; step s >= warmup is SGDR's epoch e = s - warmup, with cycles of
// t0, t0·t_mult, t0·t_mult², ... steps, each annealing base_lr -> eta_min:
//   lr = eta_min + (base_lr - eta_min) · (1 + cos(π · T_cur / T_i)) / 2.
// T_cur / T_i come from PyTorch's closed form step(epoch), including its log-based cycle index for
// t_mult > 1 (n = int(log(e/t0 · (t_mult-1) + 1) / log(t_mult))). total_steps only bounds the warmup:
// SGDR has no end, so the cycles continue past total_steps as they do in PyTorch.
struct WarmRestarts {
  static constexpr std::string_view name = "cosine_warm_restarts";
  static void validate(const ScheduleOptions& o) {
    require(o.t0 >= 1, "Scheduler<WarmRestarts>: t0 must be >= 1 (got {})", o.t0);
    require(o.t_mult >= 1, "Scheduler<WarmRestarts>: t_mult must be >= 1 (got {})", o.t_mult);
    require(std::isfinite(o.eta_min) && o.eta_min >= 0.0,
            "Scheduler<WarmRestarts>: eta_min must be finite and >= 0 (got {})", o.eta_min);
  }
  static double lr(long step, const ScheduleOptions& o) {
    if (step < o.warmup_steps) return o.base_lr * warmup_factor(step, o.warmup_steps);
    const long epoch = step - o.warmup_steps;
    double t_cur = 0.0, t_i = 0.0;
    if (epoch < o.t0) {
      t_cur = static_cast<double>(epoch);
      t_i = static_cast<double>(o.t0);
    } else if (o.t_mult == 1) {
      t_cur = static_cast<double>(epoch % o.t0);
      t_i = static_cast<double>(o.t0);
    } else {
      const double x = static_cast<double>(epoch) / static_cast<double>(o.t0) * static_cast<double>(o.t_mult - 1) + 1.0;
      const long n = static_cast<long>(std::log(x) / std::log(static_cast<double>(o.t_mult)));  // int() truncates
      long power = 1;  // t_mult^n, exact (bounded by epoch·(t_mult-1)/t0 + 1)
      for (long k = 0; k < n; ++k) power *= o.t_mult;
      t_cur = static_cast<double>(epoch) - static_cast<double>(o.t0 * (power - 1)) / static_cast<double>(o.t_mult - 1);
      t_i = static_cast<double>(o.t0 * power);
    }
    return o.eta_min + (o.base_lr - o.eta_min) * (1.0 + std::cos(std::numbers::pi * t_cur / t_i)) / 2.0;
  }
};

static_assert(LrPolicy<Constant> && LrPolicy<Linear> && LrPolicy<Cosine> && LrPolicy<CosineRestarts> &&
              LrPolicy<WarmRestarts>);

}  // namespace vidlora::schedule

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using schedule::Constant;
using schedule::ConstantWithWarmup;
using schedule::Cosine;
using schedule::CosineRestarts;
using schedule::Linear;
using schedule::WarmRestarts;
}  // namespace vidlora
