#pragma once
// Grouped-query causal attention of one sequence, forward and backward, with a key-padding mask.
// Query head h reads key/value head h / (q_heads / kv_heads). Scores q·kᵀ/√d, softmax per row with
// the max subtracted and the sum taken in float64; masked keys get probability exactly 0.

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>

namespace vidlora::model {

struct AttentionShape {
  Eigen::Index q_heads = 0, kv_heads = 0, head_dim = 0;
  Eigen::Index group() const { return q_heads / kv_heads; }
};

// q: [Tq, Hq·d], k, v: [Tk, Hkv·d] (rotated). Query i sits at absolute position q_offset + i and sees
// key j when j <= q_offset + i (causal) and key_mask[j] != 0 (empty key_mask: all keys valid).
// out: [Tq, Hq·d]. probs (optional) receives the softmax, head h at rows [h·Tq, (h+1)·Tq).
template <class T>
MatrixOf<T> attention_forward(const Eigen::Ref<const MatrixOf<T>>& q, const Eigen::Ref<const MatrixOf<T>>& k,
                              const Eigen::Ref<const MatrixOf<T>>& v, const AttentionShape& s, Eigen::Index q_offset,
                              std::span<const int> key_mask, MatrixOf<T>* probs = nullptr) {
  const Eigen::Index tq = q.rows(), tk = k.rows(), d = s.head_dim;
  require(q.cols() == s.q_heads * d && k.cols() == s.kv_heads * d && v.cols() == k.cols() && v.rows() == tk,
          "attention: q {} k {} v {} do not match {} query heads, {} kv heads, head_dim {}", shape_string(q),
          shape_string(k), shape_string(v), s.q_heads, s.kv_heads, d);
  require(key_mask.empty() || static_cast<Eigen::Index>(key_mask.size()) == tk, "attention: key mask of {} for {} keys",
          key_mask.size(), tk);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  MatrixOf<T> out(tq, s.q_heads * d);
  if (probs) probs->resize(s.q_heads * tq, tk);
  MatrixOf<T> scores(tq, tk);
  for (Eigen::Index h = 0; h < s.q_heads; ++h) {
    const Eigen::Index g = h / s.group();
    scores.noalias() = (q.middleCols(h * d, d) * k.middleCols(g * d, d).transpose()) * scale;
    for (Eigen::Index i = 0; i < tq; ++i) {
      const Eigen::Index last = std::min(tk - 1, q_offset + i);
      T m = -std::numeric_limits<T>::infinity();
      for (Eigen::Index j = 0; j <= last; ++j)
        if (key_mask.empty() || key_mask[static_cast<std::size_t>(j)]) m = std::max(m, scores(i, j));
      double sum = 0;
      for (Eigen::Index j = 0; j < tk; ++j) {
        const bool visible = j <= last && (key_mask.empty() || key_mask[static_cast<std::size_t>(j)]);
        const T e = visible ? std::exp(scores(i, j) - m) : T(0);
        scores(i, j) = e;
        sum += e;
      }
      scores.row(i) *= sum > 0 ? static_cast<T>(1.0 / sum) : T(0);  // a row with no visible key stays 0
    }
    out.middleCols(h * d, d).noalias() = scores * v.middleCols(g * d, d);
    if (probs) probs->middleRows(h * tq, tq) = scores;
  }
  return out;
}

// Backward of attention_forward given its probs: accumulates into dq [Tq, Hq·d], dk, dv [Tk, Hkv·d].
template <class T>
void attention_backward(const Eigen::Ref<const MatrixOf<T>>& q, const Eigen::Ref<const MatrixOf<T>>& k,
                        const Eigen::Ref<const MatrixOf<T>>& v, const AttentionShape& s, const MatrixOf<T>& probs,
                        const Eigen::Ref<const MatrixOf<T>>& d_out, Eigen::Ref<MatrixOf<T>> dq,
                        Eigen::Ref<MatrixOf<T>> dk, Eigen::Ref<MatrixOf<T>> dv) {
  const Eigen::Index tq = q.rows(), d = s.head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d)));
  MatrixOf<T> dp, ds;
  for (Eigen::Index h = 0; h < s.q_heads; ++h) {
    const Eigen::Index g = h / s.group();
    const auto p = probs.middleRows(h * tq, tq);
    const auto doh = d_out.middleCols(h * d, d);
    dp.noalias() = doh * v.middleCols(g * d, d).transpose();   // [Tq, Tk]
    dv.middleCols(g * d, d).noalias() += p.transpose() * doh;  // [Tk, d]
    const VectorOf<T> row_dot = (dp.cwiseProduct(p)).rowwise().sum();
    ds = p.cwiseProduct(dp.colwise() - row_dot) * scale;  // softmax backward, then the 1/√d
    dq.middleCols(h * d, d).noalias() += ds * k.middleCols(g * d, d);
    dk.middleCols(g * d, d).noalias() += ds.transpose() * q.middleCols(h * d, d);
  }
}

}  // namespace vidlora::model
