#pragma once
// Element-wise pieces of softmax cross-entropy, written once for the CPU reference and CUDA kernels:
// an online (running max, running sum of exponentials) log-sum-exp, the per-token loss and the
// per-logit gradient.

#include <cmath>

#include <vidlora/core/portability.hpp>

namespace vidlora::loss {

// Running log-sum-exp over a stream of values or of already-reduced blocks:
// after any sequence of add()/merge() calls, value() = log Σ exp(x) over everything seen.
// `sum` is kept relative to `max`, so no exponential ever overflows. A NaN value makes max (and the value) NaN for
// good, whatever is added or merged after it and whichever side of a merge it is on: a NaN logit is never lost in a
// reduction tree (where a block that saw only NaN would otherwise look empty, its max still -inf).
struct OnlineLogSumExp {
  double max = -INFINITY;
  double sum = 0.0;  // Σ exp(x - max)

  // Folds in a block whose own maximum is `block_max` and whose Σ exp(x - block_max) is `block_sum`.
  VIDLORA_HOST_DEVICE void merge(double block_max, double block_sum) {
    if (block_max != block_max) {  // the block saw a NaN: so has everything it is merged into
      max = sum = block_max;
      return;
    }
    if (block_max == -INFINITY) return;  // an empty block (or one of -inf logits) adds nothing
    if (block_max > max) {
      sum = sum * std::exp(max - block_max) + block_sum;
      max = block_max;
    } else {
      sum += block_sum * std::exp(block_max - max);
    }
  }
  VIDLORA_HOST_DEVICE void add(double x) { merge(x, 1.0); }
  VIDLORA_HOST_DEVICE void merge(const OnlineLogSumExp& other) { merge(other.max, other.sum); }
  VIDLORA_HOST_DEVICE double value() const { return max + std::log(sum); }
};

// Loss of one token with label smoothing ε over V classes, as PyTorch defines it:
// (1-ε)·(lse - z_target) + ε·(lse - mean_j z_j), i.e. (1-ε)·nll + ε·(-mean_j log p_j).
VIDLORA_HOST_DEVICE inline double cross_entropy_token_loss(double lse, double target_logit, double logit_sum,
                                                           double vocab, double label_smoothing) {
  const double nll = lse - target_logit;
  const double smooth = lse - logit_sum / vocab;
  return (1.0 - label_smoothing) * nll + label_smoothing * smooth;
}

// d(token loss)/d z_j = p_j - (1-ε)·[j == target] - ε/V, with p_j = exp(z_j - lse).
VIDLORA_HOST_DEVICE inline double cross_entropy_logit_grad(double prob, bool is_target, double label_smoothing,
                                                           double inv_vocab) {
  return prob - label_smoothing * inv_vocab - (is_target ? 1.0 - label_smoothing : 0.0);
}

}  // namespace vidlora::loss
