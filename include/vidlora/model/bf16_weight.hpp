#pragma once
// Bf16Weight: a lora::FrozenWeight that stores W [out, in] as bfloat16 (half the bytes of float32,
// how most HF checkpoints ship) and computes in float32, widening row tiles of W on the fly inside
// apply(): no dense float copy of W is kept. Rounding to bf16 is round-to-nearest-even as torch's cast.

#include <algorithm>
#include <cstdint>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/lora/frozen_weight.hpp>

namespace vidlora::model {

class Bf16Weight {
 public:
  using scalar_type = float;
  using matrix_type = Matrix;
  static constexpr bool exact_merge = false;  // add_dense re-rounds to bf16
  static constexpr Eigen::Index kTileRows = 256;

  explicit Bf16Weight(const Matrix& weight) : rows_(weight.rows()), cols_(weight.cols()) {
    require(weight.size() > 0, "Bf16Weight: empty weight {}", shape_string(weight));
    require(all_finite(weight), "Bf16Weight: weight {} contains NaN or Inf", shape_string(weight));
    store(weight);
  }

  Eigen::Index out_features() const { return rows_; }
  Eigen::Index in_features() const { return cols_; }
  std::size_t storage_bytes() const { return bits_.size() * sizeof(std::uint16_t); }

  Matrix apply(const Matrix& x) const {  // x·Wᵀ  [tokens, out]
    require(x.cols() == cols_, "Bf16Weight::apply: input {} does not match weight [{}, {}]", shape_string(x), rows_,
            cols_);
    Matrix y(x.rows(), rows_);
    Matrix tile;
    for (Eigen::Index r0 = 0; r0 < rows_; r0 += kTileRows) {
      const Eigen::Index n = std::min(kTileRows, rows_ - r0);
      decode(r0, n, tile);
      y.middleCols(r0, n).noalias() = x * tile.transpose();
    }
    return y;
  }

  Matrix apply_transposed(const Matrix& dy) const {  // dy·W  [tokens, in]
    require(dy.cols() == rows_, "Bf16Weight::apply_transposed: gradient {} does not match weight [{}, {}]",
            shape_string(dy), rows_, cols_);
    Matrix dx = Matrix::Zero(dy.rows(), cols_);
    Matrix tile;
    for (Eigen::Index r0 = 0; r0 < rows_; r0 += kTileRows) {
      const Eigen::Index n = std::min(kTileRows, rows_ - r0);
      decode(r0, n, tile);
      dx.noalias() += dy.middleCols(r0, n) * tile;
    }
    return dx;
  }

  Matrix to_dense() const {
    Matrix w;
    decode(0, rows_, w);
    return w;
  }

  void add_dense(const Matrix& delta) {
    require(delta.rows() == rows_ && delta.cols() == cols_, "Bf16Weight: cannot add {} to weight [{}, {}]",
            shape_string(delta), rows_, cols_);
    store(to_dense() + delta);
  }

 private:
  void store(const Matrix& w) {
    bits_.resize(static_cast<std::size_t>(w.size()));
    for (Eigen::Index i = 0; i < w.size(); ++i)
      bits_[static_cast<std::size_t>(i)] = io::float_to_bf16_bits(w.data()[i]);
  }
  void decode(Eigen::Index r0, Eigen::Index n, Matrix& out) const {
    out.resize(n, cols_);
    const std::uint16_t* src = bits_.data() + r0 * cols_;
    for (Eigen::Index i = 0; i < n * cols_; ++i) out.data()[i] = io::bf16_bits_to_float(src[i]);
  }

  Eigen::Index rows_, cols_;
  std::vector<std::uint16_t> bits_;  // [out, in] row-major bf16
};

static_assert(lora::FrozenWeight<Bf16Weight>);

}  // namespace vidlora::model
