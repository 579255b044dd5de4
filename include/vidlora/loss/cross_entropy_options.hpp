#pragma once
// Options shared by cross_entropy and lm_head_cross_entropy, and the checks on their inputs.

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <Eigen/Core>

#include <vidlora/core/error.hpp>
#include <vidlora/loss/ce_normalizer.hpp>

namespace vidlora::loss {

// How per-token losses become one number.
enum class Reduction {
  Mean,  // Σ loss / number of non-ignored tokens (or / total_valid_tokens when that is set)
  Sum,   // Σ loss over non-ignored tokens
};

struct CrossEntropyOptions {
  double label_smoothing = 0.0;  // ε in [0, 1], as torch's label_smoothing
  int ignore_index = -100;       // targets equal to this contribute no loss and no gradient
  Reduction reduction = Reduction::Mean;
  // Mean only. When > 0, divide by this many tokens instead of this call's own valid count: the
  // number of valid tokens over every micro-batch of a gradient-accumulation step (transformers'
  // num_items_in_batch), so that summing the micro-batch results gives the step's true token mean.
  long total_valid_tokens = 0;
  // Multiplies the gradient only, never the loss: the loss scale of an fp16 step (optim::GradScaler::scale(),
  // torch's scaler.scale(loss).backward()). A power of two scales every gradient of the backward exactly, so the
  // unscaled gradients are the bits of a run without it unless a value overflowed (which the scaler then finds).
  double grad_factor = 1.0;
};

namespace detail {

// Checks the options and targets against a [rows, vocab] problem; returns the indices of the
// non-ignored rows. `who` names the calling function in error messages.
inline std::vector<Eigen::Index> check_targets(const char* who, std::span<const int> targets, Eigen::Index rows,
                                               Eigen::Index vocab, const CrossEntropyOptions& options) {
  require(options.label_smoothing >= 0.0 && options.label_smoothing <= 1.0,
          "{}: label_smoothing must be in [0, 1], got {}", who, options.label_smoothing);
  require(options.total_valid_tokens >= 0, "{}: total_valid_tokens must be >= 0, got {}", who,
          options.total_valid_tokens);
  require(options.reduction == Reduction::Mean || options.total_valid_tokens == 0,
          "{}: total_valid_tokens ({}) only applies to Reduction::Mean", who, options.total_valid_tokens);
  require(std::isfinite(options.grad_factor) && options.grad_factor > 0.0,
          "{}: grad_factor (the loss scale) must be finite and > 0, got {}", who, options.grad_factor);
  require(vocab > 0, "{}: the vocabulary is empty", who);
  std::vector<Eigen::Index> valid;
  valid.reserve(static_cast<std::size_t>(rows));
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const int t = targets[i];
    if (t == options.ignore_index) continue;
    if (!ce_target_in_range(t, vocab))
      fail("{}: target {} at position {} is outside [0, {}) and is not ignore_index ({})", who, t, i, vocab,
           options.ignore_index);
    valid.push_back(static_cast<Eigen::Index>(i));
  }
  const long n_valid = static_cast<long>(valid.size());
  require(options.total_valid_tokens == 0 || n_valid <= options.total_valid_tokens,
          "{}: {} valid tokens in this micro-batch exceed total_valid_tokens = {}", who, n_valid,
          options.total_valid_tokens);
  return valid;
}

// What the summed loss is divided by: 1 (Sum), the step's token total, or this call's valid count.
// 0 when there is nothing to divide (no valid token): the loss is then 0 by definition. loss::ce_normalizer
// (loss/ce_normalizer.hpp) is the formula, shared with the CUDA loss.
inline double normalizer(const CrossEntropyOptions& options, long valid_tokens) {
  return ce_normalizer(options.reduction == Reduction::Sum, valid_tokens, options.total_valid_tokens);
}

inline void check_lse(const char* who, Eigen::Index row, double lse) {
  if (!std::isfinite(lse)) fail("{}: log-sum-exp of row {} is {} (NaN or +Inf in the logits)", who, row, lse);
}

}  // namespace detail
}  // namespace vidlora::loss

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using loss::CrossEntropyOptions;
}  // namespace vidlora
