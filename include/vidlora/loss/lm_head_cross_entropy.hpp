#pragma once
// Cross-entropy of an LM head streamed over the vocabulary: logits = hidden · Wᵀ are produced
// [T, chunk] at a time and never held as a whole [T, V] matrix.
//
// Without the head's gradient (the LoRA case: the head is frozen) it is ONE pass over the
// vocabulary. Per chunk: Z = h·W_cᵀ, the online log-sum-exp of each row, E = exp(Z - running max)
// in place, and acc += E·W_c with acc rescaled whenever a row's running max grows (the
// flash-attention recurrence). At the end
//   grad_h_i = scale · (acc_i / s_i - (1-ε)·W[t_i] - (ε/V)·Σ_j W_j),
// which is Σ_j (p_ij - (1-ε)[j=t_i] - ε/V)·W_j·scale. Two GEMMs of T·V·D each, as the naive path.
// With the head's gradient it is TWO passes: the first gives each row's lse; the second
// recomputes each chunk's logits, forms G = d loss / d Z for the chunk and does
// grad_h += G·W_c and grad_W[c] = Gᵀ·h (four GEMMs; the naive path does three).
// Extra memory: O(T·chunk) for one chunk of logits plus O(T·D) (the accumulator, and a compacted
// copy of the hidden rows when some targets are ignored: ignored rows are skipped entirely).
// Either way the target logit is h_i·W[t_i] and Σ_j z_ij = h_i·Σ_j W_j, both in double.

#include <algorithm>
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

struct LmHeadOptions {
  Eigen::Index chunk_size = 8192;  // vocabulary rows per chunk; the [T, chunk] workspace is the peak
  bool compute_head_grad = false;  // the head is frozen during LoRA training: skip d loss / d W
};

template <class Scalar>
struct LmHeadCrossEntropyResultOf {
  double loss = 0.0;                  // as cross_entropy(hidden·Wᵀ, targets, options).loss
  MatrixOf<Scalar> grad_hidden;       // d loss / d hidden, [T, D]; zero rows for ignored tokens
  MatrixOf<Scalar> grad_head_weight;  // d loss / d W, [V, D]; empty unless compute_head_grad
  long valid_tokens = 0;
  double loss_sum = 0.0;
  double normalizer = 0.0;  // loss = loss_sum / normalizer (0 when no token was valid)
};
using LmHeadCrossEntropyResult = LmHeadCrossEntropyResultOf<float>;

namespace detail {

template <class Scalar>
LmHeadCrossEntropyResultOf<Scalar> lm_head_cross_entropy_streamed(const MatrixOf<Scalar>& hidden,
                                                                  const MatrixOf<Scalar>& head_weight,
                                                                  std::span<const int> targets,
                                                                  const CrossEntropyOptions& options,
                                                                  const LmHeadOptions& lm) {
  constexpr const char* who = "lm_head_cross_entropy";
  using Mat = MatrixOf<Scalar>;
  const Eigen::Index rows = hidden.rows(), dim = hidden.cols(), vocab = head_weight.rows();
  require(head_weight.cols() == dim, "{}: hidden {} and head weight {} disagree on the hidden size", who,
          shape_string(hidden), shape_string(head_weight));
  require(static_cast<Eigen::Index>(targets.size()) == rows, "{}: hidden {} needs one target per row, got targets [{}]",
          who, shape_string(hidden), targets.size());
  require(lm.chunk_size > 0, "{}: chunk_size must be positive, got {}", who, lm.chunk_size);
  const std::vector<Eigen::Index> valid = check_targets(who, targets, rows, vocab, options);

  LmHeadCrossEntropyResultOf<Scalar> result;
  result.valid_tokens = static_cast<long>(valid.size());
  result.grad_hidden = Mat::Zero(rows, dim);
  if (lm.compute_head_grad) result.grad_head_weight = Mat::Zero(vocab, dim);
  if (result.valid_tokens == 0) return result;  // loss 0, zero gradients (see cross_entropy)
  const double norm = normalizer(options, result.valid_tokens);
  result.normalizer = norm;

  // Only valid rows take part: compact them when some are ignored.
  const auto n = static_cast<Eigen::Index>(valid.size());
  Mat compacted;
  if (n < rows) {
    compacted.resize(n, dim);
    for (Eigen::Index k = 0; k < n; ++k) compacted.row(k) = hidden.row(valid[static_cast<std::size_t>(k)]);
  }
  const Mat& h = n < rows ? compacted : hidden;  // [n, D]
  std::vector<int> t(static_cast<std::size_t>(n));
  for (Eigen::Index k = 0; k < n; ++k)
    t[static_cast<std::size_t>(k)] = targets[static_cast<std::size_t>(valid[static_cast<std::size_t>(k)])];

  const double eps = options.label_smoothing;
  const double inv_vocab = 1.0 / static_cast<double>(vocab);
  const double scale = options.grad_factor / norm;  // grad_factor: the loss scale
  const bool single_pass = !lm.compute_head_grad;
  const Eigen::Index chunk = std::min(lm.chunk_size, vocab);

  std::vector<OnlineLogSumExp> lse(static_cast<std::size_t>(n));
  Mat z(n, chunk);              // one chunk of logits, later exponentials / gradients: [n, chunk]
  Mat acc;                      // single pass: Σ_j exp(z_ij - running max_i)·W_j, [n, D]
  VectorOf<double> weight_sum;  // ε > 0: Σ_j W_j, [D]; then Σ_j z_ij = h_i · Σ_j W_j
  if (single_pass) acc = Mat::Zero(n, dim);
  if (eps > 0) weight_sum = VectorOf<double>::Zero(dim);

  // Pass 1: each row's log-sum-exp (and, single pass, acc).
  for (Eigen::Index v0 = 0; v0 < vocab; v0 += chunk) {
    const Eigen::Index c = std::min(chunk, vocab - v0);
    const auto w_c = head_weight.middleRows(v0, c);  // [c, D]
    auto z_c = z.leftCols(c);
    z_c.noalias() = h * w_c.transpose();
    parallel_for(Eigen::Index{0}, n, n * c, [&](Eigen::Index k) {
      const auto kk = static_cast<std::size_t>(k);
      auto row = z_c.row(k).array();
      const double old_max = lse[kk].max;
      // NaN when the chunk holds one (Eigen's default maxCoeff may skip it, and std::max would drop it): the row's
      // log-sum-exp is then NaN and refused below.
      const auto chunk_max = static_cast<double>(row.template maxCoeff<Eigen::PropagateNaN>());
      const double new_max = chunk_max != chunk_max ? chunk_max : std::max(old_max, chunk_max);
      if (single_pass) {
        row = (row - static_cast<Scalar>(new_max)).exp();  // exponentials relative to the running max
        lse[kk].merge(new_max, static_cast<double>(row.sum()));
        if (new_max > old_max) acc.row(k) *= static_cast<Scalar>(std::exp(old_max - new_max));  // 0 at first
      } else {
        lse[kk].merge(new_max, static_cast<double>((row - static_cast<Scalar>(new_max)).exp().sum()));
      }
    });
    if (single_pass) acc.noalias() += z_c * w_c;
    if (eps > 0) weight_sum += w_c.colwise().sum().transpose().template cast<double>();
  }

  // The target logit h_i·W[t_i] and, for label smoothing, Σ_j z_ij = h_i·Σ_j W_j, in double.
  std::vector<double> target_logit(static_cast<std::size_t>(n)), logit_sum(static_cast<std::size_t>(n), 0.0);
  for (Eigen::Index k = 0; k < n; ++k) {
    const auto kk = static_cast<std::size_t>(k);
    target_logit[kk] = h.row(k).template cast<double>().dot(head_weight.row(t[kk]).template cast<double>());
    if (eps > 0) logit_sum[kk] = h.row(k).template cast<double>().dot(weight_sum.transpose());
  }

  std::vector<double> row_lse(static_cast<std::size_t>(n));
  for (Eigen::Index k = 0; k < n; ++k) {  // fixed order: the same sum on any thread count
    const auto kk = static_cast<std::size_t>(k);
    row_lse[kk] = lse[kk].value();
    check_lse(who, valid[kk], row_lse[kk]);
    result.loss_sum +=
        cross_entropy_token_loss(row_lse[kk], target_logit[kk], logit_sum[kk], static_cast<double>(vocab), eps);
  }
  result.loss = result.loss_sum / norm;

  if (single_pass) {
    // grad_h_i = scale·(acc_i / s_i - (1-ε)·W[t_i] - (ε/V)·Σ_j W_j)
    const Eigen::Matrix<Scalar, 1, Eigen::Dynamic> smooth =
        eps > 0 ? (weight_sum.transpose() * (eps * inv_vocab * scale)).template cast<Scalar>().eval()
                : Eigen::Matrix<Scalar, 1, Eigen::Dynamic>::Zero(dim).eval();
    const auto on_target = static_cast<Scalar>((1.0 - eps) * scale);
    for (Eigen::Index k = 0; k < n; ++k) {
      const auto kk = static_cast<std::size_t>(k);
      result.grad_hidden.row(valid[kk]) =
          acc.row(k) * static_cast<Scalar>(scale / lse[kk].sum) - on_target * head_weight.row(t[kk]) - smooth;
    }
    return result;
  }

  // Pass 2 (head gradient wanted): recompute each chunk, G = d loss / d Z, then both products.
  const auto off_target = static_cast<Scalar>(-eps * inv_vocab * scale);
  const auto on_target = static_cast<Scalar>(-(1.0 - eps) * scale);
  Mat grad_h = Mat::Zero(n, dim);
  for (Eigen::Index v0 = 0; v0 < vocab; v0 += chunk) {
    const Eigen::Index c = std::min(chunk, vocab - v0);
    const auto w_c = head_weight.middleRows(v0, c);
    auto z_c = z.leftCols(c);
    z_c.noalias() = h * w_c.transpose();
    parallel_for(Eigen::Index{0}, n, n * c, [&](Eigen::Index k) {
      const auto kk = static_cast<std::size_t>(k);
      auto row = z_c.row(k).array();
      row = (row - static_cast<Scalar>(row_lse[kk])).exp() * static_cast<Scalar>(scale) + off_target;
      if (t[kk] >= v0 && t[kk] < v0 + c) row(t[kk] - v0) += on_target;
    });
    grad_h.noalias() += z_c * w_c;
    result.grad_head_weight.middleRows(v0, c).noalias() = z_c.transpose() * h;  // valid rows only
  }
  for (Eigen::Index k = 0; k < n; ++k) result.grad_hidden.row(valid[static_cast<std::size_t>(k)]) = grad_h.row(k);
  return result;
}

}  // namespace detail

// Cross-entropy of logits = hidden · head_weightᵀ (hidden [T, D], head_weight [V, D]) without ever
// forming [T, V]: the vocabulary is processed `lm.chunk_size` rows at a time. Same loss, options,
// errors and no-valid-token rule as cross_entropy; returns d loss / d hidden and, when asked,
// d loss / d head_weight.
template <class Scalar>
LmHeadCrossEntropyResultOf<Scalar> lm_head_cross_entropy(const MatrixOf<Scalar>& hidden,
                                                         const MatrixOf<Scalar>& head_weight,
                                                         std::span<const int> targets,
                                                         const CrossEntropyOptions& options = {},
                                                         const LmHeadOptions& lm = {}) {
  static_assert(std::is_floating_point_v<Scalar>, "lm_head_cross_entropy: hidden must be float or double");
  return detail::lm_head_cross_entropy_streamed<Scalar>(hidden, head_weight, targets, options, lm);
}

// The same with only the chunk size given (head gradient not computed).
template <class Scalar>
LmHeadCrossEntropyResultOf<Scalar> lm_head_cross_entropy(const MatrixOf<Scalar>& hidden,
                                                         const MatrixOf<Scalar>& head_weight,
                                                         std::span<const int> targets,
                                                         const CrossEntropyOptions& options, Eigen::Index chunk_size) {
  LmHeadOptions lm;
  lm.chunk_size = chunk_size;
  return lm_head_cross_entropy(hidden, head_weight, targets, options, lm);
}

}  // namespace vidlora::loss
