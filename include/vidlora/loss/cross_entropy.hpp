#pragma once
// Softmax cross-entropy over full logits [T, V] with label smoothing and ignore_index, and its
// gradient, matching torch.nn.functional.cross_entropy(logits, targets, ignore_index, label_smoothing).

#include <cmath>
#include <span>
#include <type_traits>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/loss/log_sum_exp.hpp>

namespace vidlora::loss {

template <class Scalar>
struct CrossEntropyResultOf {
  double loss = 0.0;        // the reduced loss (see CrossEntropyOptions::reduction)
  MatrixOf<Scalar> grad;    // d loss / d logits, [T, V]; zero rows for ignored tokens
  long valid_tokens = 0;    // tokens whose target is not ignore_index
  double loss_sum = 0.0;    // Σ per-token loss over the valid tokens
  double normalizer = 0.0;  // loss = loss_sum / normalizer (0 when there was nothing to divide)
};
using CrossEntropyResult = CrossEntropyResultOf<float>;

namespace detail {

template <class Scalar>
CrossEntropyResultOf<Scalar> cross_entropy_dense(const MatrixOf<Scalar>& logits, std::span<const int> targets,
                                                 const CrossEntropyOptions& options) {
  constexpr const char* who = "cross_entropy";
  const Eigen::Index rows = logits.rows(), vocab = logits.cols();
  require(static_cast<Eigen::Index>(targets.size()) == rows, "{}: logits {} need one target per row, got targets [{}]",
          who, shape_string(logits), targets.size());
  const std::vector<Eigen::Index> valid = check_targets(who, targets, rows, vocab, options);

  CrossEntropyResultOf<Scalar> result;
  result.valid_tokens = static_cast<long>(valid.size());
  const double norm = normalizer(options, result.valid_tokens);
  if (result.valid_tokens == 0) {  // nothing to learn from: loss 0, zero gradient
    result.grad = MatrixOf<Scalar>::Zero(rows, vocab);
    return result;
  }
  result.normalizer = norm;
  result.grad.resize(rows, vocab);

  const double eps = options.label_smoothing;
  const double inv_vocab = 1.0 / static_cast<double>(vocab);
  const double scale = options.grad_factor / norm;                          // grad_factor: the loss scale
  const Scalar off_target = static_cast<Scalar>(-eps * inv_vocab * scale);  // grad term every logit gets
  const Scalar on_target = static_cast<Scalar>(-(1.0 - eps) * scale);       // extra term on the target
  std::vector<double> token_loss(static_cast<std::size_t>(rows), 0.0), token_lse(static_cast<std::size_t>(rows), 0.0);

  parallel_for(Eigen::Index{0}, rows, rows * vocab, [&](Eigen::Index i) {
    const int t = targets[static_cast<std::size_t>(i)];
    if (t == options.ignore_index) {
      result.grad.row(i).setZero();
      return;
    }
    const auto z = logits.row(i).array();
    const Scalar m = z.maxCoeff();
    const double sum_exp = static_cast<double>((z - m).exp().sum());
    const double lse = static_cast<double>(m) + std::log(sum_exp);
    const double logit_sum = eps > 0 ? static_cast<double>(z.sum()) : 0.0;
    token_lse[static_cast<std::size_t>(i)] = lse;
    token_loss[static_cast<std::size_t>(i)] =
        cross_entropy_token_loss(lse, static_cast<double>(z(t)), logit_sum, static_cast<double>(vocab), eps);
    // p_j·scale - ε/V·scale, then the target's extra -(1-ε)·scale (cross_entropy_logit_grad, vectorised)
    result.grad.row(i).array() = (z - static_cast<Scalar>(lse)).exp() * static_cast<Scalar>(scale) + off_target;
    result.grad(i, t) += on_target;
  });

  for (const Eigen::Index i : valid) {  // fixed order: the same sum on any thread count
    check_lse(who, i, token_lse[static_cast<std::size_t>(i)]);
    result.loss_sum += token_loss[static_cast<std::size_t>(i)];
  }
  result.loss = result.loss_sum / norm;
  return result;
}

}  // namespace detail

// Cross-entropy of logits [T, V] against targets [T] (class indices or ignore_index).
// Mean (default): Σ_valid loss_i / N with N the valid tokens here (or options.total_valid_tokens);
// loss_i = (1-ε)·(lse_i - z_i,t) + ε·(lse_i - mean_j z_ij). No valid token: loss 0, zero gradient
// (PyTorch's mean is NaN there; 0 is what gradient accumulation needs).
template <class Derived>
CrossEntropyResultOf<typename Derived::Scalar> cross_entropy(const Eigen::MatrixBase<Derived>& logits,
                                                             std::span<const int> targets,
                                                             const CrossEntropyOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "cross_entropy: logits must be float or double");
  if constexpr (std::is_same_v<Derived, MatrixOf<Scalar>>) {
    return detail::cross_entropy_dense<Scalar>(logits.derived(), targets, options);
  } else {
    const MatrixOf<Scalar> evaluated = logits;
    return detail::cross_entropy_dense<Scalar>(evaluated, targets, options);
  }
}

}  // namespace vidlora::loss
