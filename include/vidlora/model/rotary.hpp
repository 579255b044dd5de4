#pragma once
// Rotary position embedding (RoPE), Hugging Face's default variant in the rotate-half layout:
// element i of a head pairs with element i + head_dim/2 and both rotate by θ_i = pos · θ^(-2i/d).
// Angles are formed in float32 as transformers does (inv_freq and pos·inv_freq rounded to float).

#include <cmath>
#include <span>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/elementwise.hpp>

namespace vidlora::model {

class RotaryTable {
 public:
  RotaryTable() = default;
  RotaryTable(int head_dim, double theta) : head_dim_(head_dim), theta_(theta) {
    require(head_dim > 0 && head_dim % 2 == 0, "RotaryTable: head_dim {} must be even", head_dim);
    inv_freq_.resize(head_dim / 2);
    for (int i = 0; i < head_dim / 2; ++i) inv_freq_(i) = rope_inv_freq(i, head_dim, theta);
  }

  int head_dim() const { return head_dim_; }

  // Grows the cos / sin tables to cover positions [0, n).
  void reserve(Eigen::Index n) {
    const Eigen::Index have = cos_.rows(), half = head_dim_ / 2;
    if (n <= have) return;
    cos_.conservativeResize(n, half);
    sin_.conservativeResize(n, half);
    for (Eigen::Index p = have; p < n; ++p)
      for (Eigen::Index i = 0; i < half; ++i) {
        const RopeCosSin cs = rope_cos_sin(static_cast<std::int64_t>(p), inv_freq_(i));
        cos_(p, i) = cs.cos;
        sin_(p, i) = cs.sin;
      }
  }

  // Rotates every head of x [tokens, heads·head_dim] in place; row t is at position positions[t].
  // inverse = true applies the transpose rotation (the backward of the forward rotation).
  template <class T>
  void apply(MatrixOf<T>& x, std::span<const Eigen::Index> positions, bool inverse) {
    require(static_cast<Eigen::Index>(positions.size()) == x.rows() && x.cols() % head_dim_ == 0,
            "RotaryTable: {} positions for input {} (head_dim {})", positions.size(), shape_string(x), head_dim_);
    Eigen::Index max_pos = 0;
    for (auto p : positions) max_pos = std::max(max_pos, p);
    reserve(max_pos + 1);
    const Eigen::Index heads = x.cols() / head_dim_, half = head_dim_ / 2;
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const Eigen::Index p = positions[static_cast<std::size_t>(t)];
      T* row = x.row(t).data();
      for (Eigen::Index h = 0; h < heads; ++h) {
        T* head = row + h * head_dim_;
        for (Eigen::Index i = 0; i < half; ++i) {
          const T c = static_cast<T>(cos_(p, i)), s = static_cast<T>(sin_(p, i));
          if (inverse) {
            rope_rotate_inverse(head[i], head[i + half], c, s);
          } else {
            rope_rotate(head[i], head[i + half], c, s);
          }
        }
      }
    }
  }

 private:
  int head_dim_ = 0;
  double theta_ = 10000.0;
  Vector inv_freq_;  // [head_dim/2]
  Matrix cos_, sin_; // [positions, head_dim/2]
};

}  // namespace vidlora::model

namespace vidlora {
using model::RotaryTable;
}  // namespace vidlora
