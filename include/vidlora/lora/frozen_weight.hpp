#pragma once
// The frozen base weight of a LoraLinear: a policy that stores W [out, in] in some format and
// applies it. DenseWeightOf<Scalar> keeps W as it is; quant::NF4Weight keeps it 4-bit.

#include <concepts>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>

namespace vidlora::lora {

// What LoraLinear needs from its frozen base. `x` is [tokens, in], `dy` is [tokens, out].
template <class B>
concept FrozenWeight = requires(const B& b, B& mut, const MatrixOf<typename B::scalar_type>& m) {
  typename B::scalar_type;
  { b.out_features() } -> std::convertible_to<Eigen::Index>;
  { b.in_features() } -> std::convertible_to<Eigen::Index>;
  { b.apply(m) } -> std::same_as<MatrixOf<typename B::scalar_type>>;             // x·Wᵀ  [tokens, out]
  { b.apply_transposed(m) } -> std::same_as<MatrixOf<typename B::scalar_type>>;  // dy·W  [tokens, in]
  { b.to_dense() } -> std::same_as<MatrixOf<typename B::scalar_type>>;           // W     [out, in]
  mut.add_dense(m);                                                              // W += m (merge/unmerge)
  { B::exact_merge } -> std::convertible_to<bool>;  // false when add_dense rounds (quantized formats)
};

// W kept densely in `Scalar` (float for training, double for float64 references).
template <class Scalar>
class DenseWeightOf {
 public:
  using scalar_type = Scalar;
  using matrix_type = MatrixOf<Scalar>;
  static constexpr bool exact_merge = true;

  explicit DenseWeightOf(matrix_type weight) : w_(std::move(weight)) {
    require(w_.size() > 0, "DenseWeight: empty weight {}", shape_string(w_));
    require(all_finite(w_), "DenseWeight: weight {} contains NaN or Inf", shape_string(w_));
  }

  Eigen::Index out_features() const { return w_.rows(); }
  Eigen::Index in_features() const { return w_.cols(); }
  // Blocks of token rows on the available threads (parallel_blocks: the same bits at any thread count).
  matrix_type apply(const matrix_type& x) const {
    matrix_type y(x.rows(), w_.rows());
    parallel_blocks(x.rows(), kTokenBlock, x.rows() * w_.size(), [&](Eigen::Index t0, Eigen::Index n) {
      y.middleRows(t0, n).noalias() = x.middleRows(t0, n) * w_.transpose();
    });
    return y;
  }
  matrix_type apply_transposed(const matrix_type& dy) const {
    matrix_type dx(dy.rows(), w_.cols());
    parallel_blocks(dy.rows(), kTokenBlock, dy.rows() * w_.size(), [&](Eigen::Index t0, Eigen::Index n) {
      dx.middleRows(t0, n).noalias() = dy.middleRows(t0, n) * w_;
    });
    return dx;
  }
  matrix_type to_dense() const { return w_; }
  const matrix_type& dense() const { return w_; }
  void add_dense(const matrix_type& delta) {
    require(delta.rows() == w_.rows() && delta.cols() == w_.cols(), "DenseWeight: cannot add {} to weight {}",
            shape_string(delta), shape_string(w_));
    w_ += delta;
  }

 private:
  static constexpr Eigen::Index kTokenBlock = 128;
  matrix_type w_;  // [out, in]
};

using DenseWeight = DenseWeightOf<float>;
using DenseWeight64 = DenseWeightOf<double>;

static_assert(FrozenWeight<DenseWeight>);
static_assert(FrozenWeight<DenseWeight64>);

}  // namespace vidlora::lora

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using lora::DenseWeight;
using lora::FrozenWeight;
}  // namespace vidlora
