#pragma once
// A frozen LoRA base kept 4-bit: W [out, in] stored as quantized blocks and decoded a panel of
// rows at a time inside apply(), so no dense float copy of W ever exists. NF4Weight is QLoRA's.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>
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
    require(weight.size() > 0, "{} weight: empty weight {}", Format::name, shape_string(weight));
    require(all_finite(weight), "{} weight: weight {} contains NaN or Inf", Format::name, shape_string(weight));
    blocks_ = quantizer::quantize(as_span(weight), DoubleQuant);
  }

  Eigen::Index out_features() const { return rows_; }
  Eigen::Index in_features() const { return cols_; }
  const QuantizedBlocks& blocks() const { return blocks_; }

  // x: [tokens, in] -> x·Wᵀ: [tokens, out]. W is decoded one panel of rows at a time; with
  // OpenMP the panels run on separate threads, each owning its output columns and its scratch.
  Matrix apply(const Matrix& x) const {
    require(x.cols() == cols_, "{} weight::apply: input {} does not match weight [{}, {}]", Format::name,
            shape_string(x), rows_, cols_);
    Matrix y(x.rows(), rows_);
    const Eigen::Index step = slab(cols_, rows_), panels = (rows_ + step - 1) / step;
    auto panel_product = [&](Eigen::Index k) {
      const Eigen::Index r0 = k * step, p = std::min(step, rows_ - r0);
      const auto panel = decode(r0, p, 0, cols_);  // [p, in]
      y.middleCols(r0, p).noalias() = x * panel.transpose();
    };
    for_panels(panels, panel_product);
    return y;
  }

  // dy: [tokens, out] -> dy·W: [tokens, in], W decoded in slabs of columns [out, w] so each
  // slab (and thread) owns its columns of the result and nothing is reduced across slabs.
  Matrix apply_transposed(const Matrix& dy) const {
    require(dy.cols() == rows_, "{} weight::apply_transposed: gradient {} does not match weight [{}, {}]", Format::name,
            shape_string(dy), rows_, cols_);
    Matrix dx(dy.rows(), cols_);
    const Eigen::Index step = slab(rows_, cols_), slabs = (cols_ + step - 1) / step;
    auto slab_product = [&](Eigen::Index k) {
      const Eigen::Index c0 = k * step, w = std::min(step, cols_ - c0);
      const auto panel = decode(0, rows_, c0, w);  // [out, w]
      dx.middleCols(c0, w).noalias() = dy * panel;
    };
    for_panels(slabs, slab_product);
    return dx;
  }

  // The dequantized W [out, in] (for merging, checkpoints and tests; not used by apply).
  Matrix to_dense() const { return decode(0, rows_, 0, cols_); }

  // W ← quantize(dequantize(W) + delta): merging into a 4-bit base rounds, as PEFT's does.
  void add_dense(const Matrix& delta) {
    require(delta.rows() == rows_ && delta.cols() == cols_, "{} weight: cannot add {} to weight [{}, {}]", Format::name,
            shape_string(delta), rows_, cols_);
    Matrix w = to_dense();
    w += delta;
    require(all_finite(w), "{} weight: adding {} made the weight NaN or Inf", Format::name, shape_string(delta));
    blocks_ = quantizer::quantize(as_span(w), DoubleQuant);
  }

 private:
  // fn(k) for every panel: one per OpenMP thread when there are several (Eigen single-threaded inside),
  // and at top level for a single panel (also single-threaded: the vidlora target defines
  // EIGEN_DONT_PARALLELIZE, so that results do not depend on the thread count). (A single panel inside
  // `omp parallel if (false)` made Eigen open a nested team per call: with two threads an NF4-base training
  // step took 1.40 s against 0.83 s with one; bench_model.)
  // A panel decodes about 1 Mi weights (slab()), far above kParallelMinWork: several panels always share out.
  template <class Fn>
  static void for_panels(Eigen::Index count, Fn&& fn) {
    parallel_for(Eigen::Index{0}, count, count * (std::int64_t{1} << 20), fn, Schedule::Dynamic);
  }

  // Lines per decoded panel when each line is `length` floats long: about 1 Mi floats (4 MiB) of
  // scratch, at least 16 lines, at most `count`.
  static Eigen::Index slab(Eigen::Index length, Eigen::Index count) {
    const Eigen::Index lines = std::max<Eigen::Index>(16, (Eigen::Index{1} << 20) / std::max<Eigen::Index>(1, length));
    return std::min(lines, count);
  }

  // Decodes W[r0 : r0 + rows, c0 : c0 + cols] into this thread's scratch (a panel is at most ~4 MiB; the
  // buffer is reused rather than a fresh multi-megabyte matrix per call) and returns a view of it, valid
  // until the thread's next decode.
  Eigen::Map<const Matrix> decode(Eigen::Index r0, Eigen::Index rows, Eigen::Index c0, Eigen::Index cols) const {
    thread_local std::vector<float> scratch;
    const auto n = static_cast<std::size_t>(rows * cols);
    if (scratch.size() < n) scratch.resize(n);
    float* out = scratch.data();
    if (c0 == 0 && cols == cols_) {  // whole rows are one contiguous range
      dequantize_range<Format>(blocks_, static_cast<std::size_t>(r0 * cols_), std::span<float>(out, n));
    } else {
      for (Eigen::Index r = 0; r < rows; ++r)
        dequantize_range<Format>(blocks_, static_cast<std::size_t>((r0 + r) * cols_ + c0),
                                 std::span<float>(out + r * cols, static_cast<std::size_t>(cols)));
    }
    return Eigen::Map<const Matrix>(out, rows, cols);
  }

  Eigen::Index rows_;
  Eigen::Index cols_;
  QuantizedBlocks blocks_;
};

using NF4Weight = QuantizedWeight<NF4, 64, true>;  // QLoRA: NF4, blocks of 64, double-quantized absmax
using FP4Weight = QuantizedWeight<FP4, 64, true>;

// Both model lora::FrozenWeight (checked in lora/qlora.hpp: lora builds on quant, never the reverse).

}  // namespace vidlora::quant

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using quant::FP4Weight;
using quant::NF4Weight;
}  // namespace vidlora
