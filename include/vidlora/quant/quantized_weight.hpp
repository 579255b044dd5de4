#pragma once
// A frozen LoRA base kept 4-bit: W [out, in] stored as quantized blocks and decoded a panel of
// rows at a time inside apply(), so no dense float copy of W ever exists. NF4Weight is QLoRA's.

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/quant/quantizer.hpp>

namespace vidlora::quant {

template <class Format, int BlockSize = 64, bool DoubleQuant = true>
class QuantizedWeight {
  static_assert(QuantFormat<Format>,
                "QuantizedWeight<Format, BlockSize>: Format is not a 4-bit format (vidlora::quant::QuantFormat: a "
                "tag like NF4 or FP4 with a name and 16 code values)");
  static_assert(valid_blocksize(BlockSize), "QuantizedWeight: BlockSize must be a power of two in 32..4096");

 public:
  using scalar_type = float;
  using matrix_type = Matrix;
  using format = Format;
  using quantizer = Quantizer<Format, BlockSize>;
  static constexpr int blocksize = BlockSize;
  static constexpr bool double_quant = DoubleQuant;
  static constexpr bool exact_merge = false;  // add_dense re-quantizes, so merge/unmerge round

  // Quantizes `weight` [out, in] (row-major, flattened as PyTorch flattens it); `weight` is dropped.
  explicit QuantizedWeight(const Matrix& weight) : rows_(weight.rows()), cols_(weight.cols()) {
    require(weight.size() > 0, "{}Weight: empty weight {}", Format::name, shape_string(weight));
    require(all_finite(weight), "{}Weight: weight {} contains NaN or Inf", Format::name, shape_string(weight));
    blocks_ = quantizer::quantize(as_span(weight), DoubleQuant);
  }

  Eigen::Index out_features() const { return rows_; }
  Eigen::Index in_features() const { return cols_; }
  const QuantizedBlocks& blocks() const { return blocks_; }

  // x: [tokens, in] -> x·Wᵀ: [tokens, out], W decoded one panel of rows at a time.
  Matrix apply(const Matrix& x) const {
    require(x.cols() == cols_, "{}Weight::apply: input {} does not match weight [{}, {}]", Format::name,
            shape_string(x), rows_, cols_);
    Matrix y(x.rows(), rows_);
    Matrix panel;
    for (Eigen::Index r0 = 0; r0 < rows_; r0 += panel_rows()) {
      const Eigen::Index p = std::min(panel_rows(), rows_ - r0);
      decode_rows(r0, p, panel);
      y.middleCols(r0, p).noalias() = x * panel.transpose();
    }
    return y;
  }

  // dy: [tokens, out] -> dy·W: [tokens, in].
  Matrix apply_transposed(const Matrix& dy) const {
    require(dy.cols() == rows_, "{}Weight::apply_transposed: gradient {} does not match weight [{}, {}]",
            Format::name, shape_string(dy), rows_, cols_);
    Matrix dx = Matrix::Zero(dy.rows(), cols_);
    Matrix panel;
    for (Eigen::Index r0 = 0; r0 < rows_; r0 += panel_rows()) {
      const Eigen::Index p = std::min(panel_rows(), rows_ - r0);
      decode_rows(r0, p, panel);
      dx.noalias() += dy.middleCols(r0, p) * panel;
    }
    return dx;
  }

  // The dequantized W [out, in] (for merging, checkpoints and tests; not used by apply).
  Matrix to_dense() const {
    Matrix w;
    decode_rows(0, rows_, w);
    return w;
  }

  // W ← quantize(dequantize(W) + delta): merging into a 4-bit base rounds, as PEFT's does.
  void add_dense(const Matrix& delta) {
    require(delta.rows() == rows_ && delta.cols() == cols_, "{}Weight: cannot add {} to weight [{}, {}]",
            Format::name, shape_string(delta), rows_, cols_);
    Matrix w = to_dense();
    w += delta;
    require(all_finite(w), "{}Weight: adding {} made the weight NaN or Inf", Format::name, shape_string(delta));
    blocks_ = quantizer::quantize(as_span(w), DoubleQuant);
  }

 private:
  // Rows per decoded panel: about 1 Mi floats (4 MiB) of scratch, at least 16 rows.
  Eigen::Index panel_rows() const {
    return std::max<Eigen::Index>(16, (Eigen::Index{1} << 20) / std::max<Eigen::Index>(1, cols_));
  }

  void decode_rows(Eigen::Index r0, Eigen::Index count, Matrix& out) const {
    out.resize(count, cols_);
    dequantize_range<Format>(blocks_, static_cast<std::size_t>(r0 * cols_), as_span(out));
  }

  Eigen::Index rows_;
  Eigen::Index cols_;
  QuantizedBlocks blocks_;
};

using NF4Weight = QuantizedWeight<NF4, 64, true>;  // QLoRA: NF4, blocks of 64, double-quantized absmax
using FP4Weight = QuantizedWeight<FP4, 64, true>;

static_assert(lora::FrozenWeight<NF4Weight>);
static_assert(lora::FrozenWeight<FP4Weight>);

}  // namespace vidlora::quant

namespace vidlora {
using quant::FP4Weight;
using quant::NF4Weight;
using quant::QuantizedWeight;
}  // namespace vidlora
