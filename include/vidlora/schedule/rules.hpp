#pragma once
// Recipe rules around schedules: warmup length from a ratio, and the linear scaling rule.

#include <cmath>
#include <limits>

#include <vidlora/core/error.hpp>

namespace vidlora::schedule {

// Warmup steps for a warmup ratio, as transformers' TrainingArguments.get_warmup_steps computes it:
// ceil(total_steps · ratio) in double precision (so 100 · 0.07 -> 7.000000000000001 -> 8, as there).
// ratio must be in [0, 1): transformers reads a value >= 1 as an absolute step count, not a ratio.
inline long warmup_steps_for(double ratio, long total_steps) {
  require(std::isfinite(ratio) && ratio >= 0.0 && ratio < 1.0,
          "warmup_steps_for: warmup ratio must be in [0, 1) (got {})", ratio);
  require(total_steps >= 0, "warmup_steps_for: total_steps must be >= 0 (got {})", total_steps);
  return static_cast<long>(std::ceil(static_cast<double>(total_steps) * ratio));
}

inline constexpr int kReferenceBatchSize = 16;  // the batch the recipe's learning rates are tuned for

// Linear scaling rule (Goyal et al. 2017): the learning rate grows with the effective batch
// batch_size · gradient_accumulation relative to the reference batch of 16.
// constexpr, so presets can fold it; a bad argument throws vidlora::Error (a compile error in constexpr use).
constexpr double adjusted_lr(double base_lr, int batch_size, int gradient_accumulation) {
  if (!(base_lr >= 0.0 && base_lr <= std::numeric_limits<double>::max()))  // also rejects NaN
    fail("adjusted_lr: base_lr must be finite and >= 0 (got {})", base_lr);
  if (batch_size < 1) fail("adjusted_lr: batch_size must be >= 1 (got {})", batch_size);
  if (gradient_accumulation < 1)
    fail("adjusted_lr: gradient_accumulation must be >= 1 (got {})", gradient_accumulation);
  const double effective = static_cast<double>(batch_size) * static_cast<double>(gradient_accumulation);
  return base_lr * effective / static_cast<double>(kReferenceBatchSize);
}

}  // namespace vidlora::schedule
