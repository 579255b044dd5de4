#pragma once
// Sum-then-divide normalisation over the micro-batches of one gradient-accumulation step.
//
// Averaging each micro-batch's token mean and then averaging those (what transformers did until
// v4.46, late 2024) weights a token in a short micro-batch more than one in a long micro-batch.
// The step's loss is Σ_all tokens loss / N_step, where N_step counts the valid tokens of every
// micro-batch of the step; each micro-batch therefore contributes loss_sum / N_step and gradients
// scaled by 1 / N_step, and the contributions simply add up.

#include <span>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/loss/cross_entropy.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>

namespace vidlora::loss {

// Tokens whose target is not ignore_index: count these over every micro-batch of a step first.
inline long count_valid_tokens(std::span<const int> targets, int ignore_index = -100) {
  long n = 0;
  for (const int t : targets) n += t != ignore_index ? 1 : 0;
  return n;
}

// One optimizer step's worth of micro-batches: each call returns that micro-batch's loss and
// gradients already divided by the step's total valid-token count, so the gradients can be added
// into the parameters' .grad as they come; loss() is the step's token-mean loss once all are in.
class GradientAccumulationStep {
 public:
  // `total_valid_tokens`: count_valid_tokens summed over all micro-batches of the step.
  explicit GradientAccumulationStep(long total_valid_tokens, CrossEntropyOptions options = {})
      : total_(total_valid_tokens), options_(options) {
    require(total_valid_tokens >= 0, "GradientAccumulationStep: total_valid_tokens must be >= 0, got {}",
            total_valid_tokens);
    require(options.reduction == Reduction::Mean,
            "GradientAccumulationStep: the step normalises a mean; Reduction::Sum needs no accumulator");
    options_.total_valid_tokens = total_valid_tokens;
  }

  // The micro-batch's cross-entropy over full logits [T, V], divided by the step's token count.
  template <class Derived>
  CrossEntropyResultOf<typename Derived::Scalar> cross_entropy(const Eigen::MatrixBase<Derived>& logits,
                                                               std::span<const int> targets) {
    check_room(targets);
    auto r = loss::cross_entropy(logits, targets, options_);
    record(r.valid_tokens, r.loss_sum);
    return r;
  }

  // The micro-batch's streamed LM-head cross-entropy, divided by the step's token count.
  template <class Scalar>
  LmHeadCrossEntropyResultOf<Scalar> lm_head_cross_entropy(const MatrixOf<Scalar>& hidden,
                                                           const MatrixOf<Scalar>& head_weight,
                                                           std::span<const int> targets, const LmHeadOptions& lm = {}) {
    check_room(targets);
    auto r = loss::lm_head_cross_entropy(hidden, head_weight, targets, options_, lm);
    record(r.valid_tokens, r.loss_sum);
    return r;
  }

  // Σ loss_sum so far / total_valid_tokens: the step's loss once complete() (0 if total is 0).
  double loss() const { return total_ > 0 ? loss_sum_ / static_cast<double>(total_) : 0.0; }
  double loss_sum() const { return loss_sum_; }
  long valid_tokens_seen() const { return seen_; }
  long total_valid_tokens() const { return total_; }
  bool complete() const { return seen_ == total_; }

 private:
  void check_room(std::span<const int> targets) const {
    const long n = count_valid_tokens(targets, options_.ignore_index);
    require(seen_ + n <= total_,
            "GradientAccumulationStep: this micro-batch's {} valid tokens would bring the step to {}, "
            "more than its declared total_valid_tokens = {}",
            n, seen_ + n, total_);
  }
  void record(long valid, double loss_sum) {
    seen_ += valid;
    loss_sum_ += loss_sum;
  }

  long total_;
  CrossEntropyOptions options_;
  long seen_ = 0;
  double loss_sum_ = 0.0;
};

}  // namespace vidlora::loss
