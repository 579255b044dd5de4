#pragma once
// The cross-entropy normalizer and target-range predicate, shared by the CPU loss
// (loss/cross_entropy_options.hpp) and the CUDA loss (loss/cuda/cross_entropy.cuh). fmt-free: nvcc 13
// includes this header.

#include <cstdint>

#include <vidlora/core/portability.hpp>

namespace vidlora::loss {

// What the summed loss over `valid_tokens` non-ignored tokens is divided by: 1 for Reduction::Sum; for
// Reduction::Mean, total_valid_tokens when it is > 0 (the whole gradient-accumulation step's count), else
// valid_tokens. 0 when nothing is valid: the loss is then 0 by definition.
VIDLORA_HOST_DEVICE inline double ce_normalizer(bool sum_reduction, long valid_tokens, long total_valid_tokens = 0) {
  if (sum_reduction) return 1.0;
  if (total_valid_tokens > 0) return static_cast<double>(total_valid_tokens);
  return static_cast<double>(valid_tokens);
}

// Whether a (non-ignored) target is a class of a `vocab`-class problem: 0 <= target < vocab.
VIDLORA_HOST_DEVICE inline bool ce_target_in_range(std::int64_t target, std::int64_t vocab) {
  return target >= 0 && target < vocab;
}

}  // namespace vidlora::loss
