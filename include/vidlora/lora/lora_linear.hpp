#pragma once
// LoraLinear<Rank, Alpha, Base>: a frozen linear layer plus a trainable low-rank update,
//   y = x·Wᵀ (+ bias) + scaling · dropout(x)·Aᵀ·Bᵀ,   scaling = Alpha / Rank (or Alpha / √Rank, rsLoRA),
// as PEFT's lora.Linear computes it. W [out, in] stays in the Base policy (dense or 4-bit); the
// low-rank branch is computed beside it, never by forming W + B·A.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/lora/dropout.hpp>
#include <vidlora/lora/frozen_weight.hpp>

namespace vidlora::lora {

// Run-time settings of one LoRA layer (aggregate: `LoraOptions o{}; o.dropout = 0.1;`).
struct LoraOptions {
  double dropout = 0.0;     // probability of zeroing an element of x on the LoRA branch, in [0, 1)
  std::uint64_t seed = 0;   // drives lora_A's initialisation and the dropout masks
  bool use_rslora = false;  // scaling = Alpha / √Rank instead of Alpha / Rank
  std::uint32_t layer = 0;  // RNG stream index: layers sharing a seed draw different A and masks
  // > 0: PEFT's lora_alpha at run time, used instead of the template Alpha (which is then only the
  // default). The rank shapes the code and stays a template parameter (lora::dispatch_rank); alpha
  // only sets one scalar, so a run-time value costs nothing and needs no instantiation per alpha.
  double alpha = 0.0;
};

namespace detail {
// scalar_type of a base, or float when it has none (so a bad Base reports the static_assert first).
template <class B>
struct base_scalar {
  using type = float;
};
template <class B>
requires requires { typename B::scalar_type; }
struct base_scalar<B> {
  using type = typename B::scalar_type;
};
}  // namespace detail

template <int Rank, int Alpha, class Base = DenseWeight>
class LoraLinear {
  static_assert(Rank > 0, "LoraLinear<Rank, Alpha, Base>: Rank must be a positive integer (got Rank <= 0)");
  static_assert(Alpha > 0, "LoraLinear<Rank, Alpha, Base>: Alpha must be a positive integer (got Alpha <= 0)");
  static_assert(FrozenWeight<Base>,
                "LoraLinear<Rank, Alpha, Base>: Base must satisfy vidlora::lora::FrozenWeight "
                "(scalar_type, out_features(), in_features(), apply(x), apply_transposed(dy), to_dense(), "
                "add_dense(delta), exact_merge), e.g. DenseWeight or quant::NF4Weight");

 public:
  static constexpr int rank = Rank;
  static constexpr int alpha = Alpha;
  using base_type = Base;
  using scalar_type = typename detail::base_scalar<Base>::type;
  using matrix_type = MatrixOf<scalar_type>;
  using vector_type = VectorOf<scalar_type>;

  // The scaling PEFT uses for this Rank and Alpha.
  static constexpr double scaling_for(bool use_rslora) {
    return use_rslora ? static_cast<double>(Alpha) / sqrt_constexpr(static_cast<double>(Rank))
                      : static_cast<double>(Alpha) / static_cast<double>(Rank);
  }

  // weight: the frozen W [out, in], handed to Base (which may quantize it).
  explicit LoraLinear(matrix_type weight, LoraOptions options = {})
      : options_(checked_options(options)), base_(checked_weight(std::move(weight))), bias_(), has_bias_(false) {
    init_adapters();
  }

  // bias: [out], added after the frozen product (frozen, like W).
  LoraLinear(matrix_type weight, vector_type bias, LoraOptions options = {})
      : options_(checked_options(options)),
        base_(checked_weight(std::move(weight))),
        bias_(std::move(bias)),
        has_bias_(true) {
    require(bias_.size() == base_.out_features(), "LoraLinear: bias has {} elements, weight [{}, {}] needs {}",
            bias_.size(), base_.out_features(), base_.in_features(), base_.out_features());
    require(all_finite(bias_), "LoraLinear: bias of {} elements contains NaN or Inf", bias_.size());
    init_adapters();
  }

  Eigen::Index in_features() const { return base_.in_features(); }
  Eigen::Index out_features() const { return base_.out_features(); }
  scalar_type scaling() const { return scaling_; }
  // The alpha in effect: LoraOptions::alpha when set, else the template Alpha.
  double alpha_value() const { return options_.alpha > 0 ? options_.alpha : static_cast<double>(Alpha); }
  const LoraOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  bool has_bias() const { return has_bias_; }
  const vector_type& bias() const { return bias_; }
  bool merged() const { return merged_; }
  Eigen::Index trainable_parameters() const { return Rank * (in_features() + out_features()); }

  matrix_type& lora_A() { return a_; }  // [Rank, in]
  matrix_type& lora_B() { return b_; }  // [out, Rank]
  const matrix_type& lora_A() const { return a_; }
  const matrix_type& lora_B() const { return b_; }
  matrix_type& grad_A() { return grad_a_; }  // [Rank, in], accumulated by backward()
  matrix_type& grad_B() { return grad_b_; }  // [out, Rank]
  const matrix_type& grad_A() const { return grad_a_; }
  const matrix_type& grad_B() const { return grad_b_; }
  void zero_grad() {
    grad_a_.setZero();
    grad_b_.setZero();
  }

  // Dropout step counter: every training forward with dropout > 0 uses step() and then advances it.
  std::uint64_t step() const { return step_; }
  void set_step(std::uint64_t step) { step_ = step; }

  // x: [tokens, in] -> y: [tokens, out]. Caches what backward() needs.
  matrix_type forward(const matrix_type& x, bool training) {
    require(x.cols() == in_features(), "LoraLinear: input x {} does not match weight [{}, {}] (x must be [tokens, {}])",
            shape_string(x), out_features(), in_features(), in_features());
    matrix_type y = base_.apply(x);
    if (has_bias_) y.rowwise() += bias_.transpose();
    if (merged_) {  // B·A already lives in the base
      cached_ = false;
      return y;
    }
    dropped_ = training && options_.dropout > 0.0;
    if (dropped_) mask_stream_ = dropout_stream(options_.layer, step_++);
    const Eigen::Index tokens = x.rows();
    xd_.resize(tokens, in_features());
    h_.resize(tokens, Rank);
    const matrix_type bt = scaling_ * b_.transpose();  // [Rank, out]
    if (dropped_) draw_keep_bits(x.size());
    // One pass per block of token rows: dropout(x), h = dropout(x)·Aᵀ, y += h·(scaling·Bᵀ).
    parallel_blocks(tokens, kTokenBlock, x.size(), [&](Eigen::Index t0, Eigen::Index nt) {
      if (dropped_) {
        masked_rows<false>(x, xd_, t0, t0, nt, t0);
      } else {
        xd_.middleRows(t0, nt) = x.middleRows(t0, nt);
      }
      h_.middleRows(t0, nt).noalias() = xd_.middleRows(t0, nt) * a_.transpose();
      y.middleRows(t0, nt).noalias() += h_.middleRows(t0, nt) * bt;
    });
    cached_ = true;
    return y;
  }

  // dy: [tokens, out] -> dx: [tokens, in]; grad_A and grad_B accumulate (+=), as in PyTorch.
  matrix_type backward(const matrix_type& dy) {
    require(!merged_, "LoraLinear: backward() on a merged layer (B·A is folded into the frozen base); unmerge() first");
    require(cached_, "LoraLinear: backward() needs a forward() on the unmerged layer first");
    require(dy.rows() == h_.rows() && dy.cols() == out_features(),
            "LoraLinear: gradient dy {} does not match the forward output [{}, {}]", shape_string(dy), h_.rows(),
            out_features());
    const Eigen::Index tokens = dy.rows(), in = in_features(), out = out_features();
    matrix_type dx = base_.apply_transposed(dy);
    matrix_type g(tokens, Rank);  // d loss / d h = scaling·dy·B  [tokens, Rank]
    // Blocks of token rows: g, and dx += mask ⊙ (g·A).
    parallel_blocks(tokens, kTokenBlock, dy.size(), [&](Eigen::Index t0, Eigen::Index nt) {
      g.middleRows(t0, nt).noalias() = scaling_ * (dy.middleRows(t0, nt) * b_);
      if (!dropped_) {
        dx.middleRows(t0, nt).noalias() += g.middleRows(t0, nt) * a_;
      } else {
        // dx += mask ⊙ (g·A) with the forward's keep bits (not drawn again), in cache-sized row chunks.
        const Eigen::Index chunk = std::max<Eigen::Index>(1, (Eigen::Index{1} << 15) / in);
        matrix_type dxd(std::min(chunk, nt), in);
        for (Eigen::Index r = 0; r < nt; r += chunk) {
          const Eigen::Index rows = std::min(chunk, nt - r);
          dxd.topRows(rows).noalias() = g.middleRows(t0 + r, rows) * a_;
          masked_rows<true>(dxd, dx, 0, t0 + r, rows, t0 + r);
        }
      }
    });
    // Blocks of columns of A, then of rows of B: grad_A += gᵀ·dropout(x), grad_B += scaling·dyᵀ·h (no
    // reduction across threads).
    const Eigen::Index blocks_a = (in + kFeatureBlock - 1) / kFeatureBlock;
    const Eigen::Index blocks_b = (out + kFeatureBlock - 1) / kFeatureBlock;
    parallel_for(Eigen::Index{0}, blocks_a + blocks_b, dy.size(), [&](Eigen::Index k) {
      if (k < blocks_a) {
        const Eigen::Index c0 = k * kFeatureBlock, nc = std::min(kFeatureBlock, in - c0);
        grad_a_.middleCols(c0, nc).noalias() += g.transpose() * xd_.middleCols(c0, nc);
      } else {
        const Eigen::Index o0 = (k - blocks_a) * kFeatureBlock, no = std::min(kFeatureBlock, out - o0);
        grad_b_.middleRows(o0, no).noalias() += scaling_ * (dy.middleCols(o0, no).transpose() * h_);
      }
    });
    return dx;
  }

  // Frees what the last forward cached for backward (dropout(x) and x·Aᵀ); gradient checkpointing
  // calls it and recomputes the forward before backward. backward() then needs a new forward().
  void release_cache() {
    xd_.resize(0, 0);
    h_.resize(0, 0);
    keep_bits_ = {};
    cached_ = false;
  }
  // Elements the last forward keeps for backward: [tokens, in] + [tokens, Rank].
  Eigen::Index cached_elements() const { return xd_.size() + h_.size(); }

  // scaling · B·A  [out, in]: what merge() adds to the base.
  matrix_type delta_weight() const { return (scaling_ * b_) * a_; }

  // Folds scaling·B·A into the frozen base (inference); forward then skips the LoRA branch.
  void merge() {
    require(!merged_, "LoraLinear: merge() on a layer that is already merged");
    base_.add_dense(delta_weight());
    merged_ = true;
    cached_ = false;
  }
  // Removes scaling·B·A from the base again (exact for dense bases; re-rounds quantized ones).
  void unmerge() {
    require(merged_, "LoraLinear: unmerge() on a layer that is not merged");
    base_.add_dense(-delta_weight());
    merged_ = false;
  }

 private:
  // The blocks the products are split into across threads (parallel_blocks): fixed, so that the result
  // does not depend on the thread count. Token rows for x·Aᵀ, h·Bᵀ, dy·B and g·A; features (columns of
  // A, rows of B) for the weight gradients.
  static constexpr Eigen::Index kTokenBlock = 128, kFeatureBlock = 64;

  static constexpr double sqrt_constexpr(double v) {  // Newton iteration; std::sqrt is not constexpr in C++20
    double r = v > 1 ? v : 1.0;
    for (int i = 0; i < 64; ++i) r = 0.5 * (r + v / r);
    return r;
  }

  static LoraOptions checked_options(const LoraOptions& o) {
    require(o.dropout >= 0.0 && o.dropout < 1.0, "LoraLinear: dropout {} is outside [0, 1)", o.dropout);
    require(o.alpha >= 0.0 && std::isfinite(o.alpha),
            "LoraLinear: alpha {} must be finite and >= 0 (0: the template Alpha)", o.alpha);
    return o;
  }

  static matrix_type checked_weight(matrix_type w) {
    require(w.size() > 0, "LoraLinear: empty weight {}", shape_string(w));
    require(all_finite(w), "LoraLinear: weight {} contains NaN or Inf", shape_string(w));
    require(Rank <= std::min(w.rows(), w.cols()), "LoraLinear: rank {} exceeds min(out, in) = {} of weight {}", Rank,
            std::min(w.rows(), w.cols()), shape_string(w));
    return w;
  }

  // lora_A ~ U(-1/√in, 1/√in) (PEFT's kaiming_uniform_(a=√5)), lora_B = 0.
  void init_adapters() {
    scaling_ =
        static_cast<scalar_type>(options_.use_rslora ? alpha_value() / std::sqrt(double{Rank}) : alpha_value() / Rank);
    const Eigen::Index in = in_features(), out = out_features();
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    CounterRng rng(options_.seed, init_stream(options_.layer));
    a_.resize(Rank, in);
    for (Eigen::Index i = 0; i < a_.size(); ++i) a_.data()[i] = static_cast<scalar_type>(rng.uniform(-bound, bound));
    b_ = matrix_type::Zero(out, Rank);
    grad_a_ = matrix_type::Zero(Rank, in);
    grad_b_ = matrix_type::Zero(out, Rank);
  }

  // The current step's mask for x [tokens, in] (n elements), packed as the CUDA kernel packs it: byte q holds
  // the keep bits of row-major offsets 4q .. 4q + 3 (lora::dropout_keep_bits4, one Philox block per byte), so
  // offset i is kept iff random_uniform(seed, stream, i) >= p — the mask dropout_scale gives element by element.
  // Drawn once per forward (blocks vectorised across lanes) and reused by backward.
  void draw_keep_bits(Eigen::Index n) {
    const Eigen::Index blocks = (n + 3) / 4;
    keep_bits_.resize(static_cast<std::size_t>(blocks));
    const float p = static_cast<float>(options_.dropout);
    parallel_shares(n, [&](int id, int threads) {
      const auto [b0, nb] = share_of(blocks, id, threads);
      if (nb > 0)
        dropout_keep_bits4_blocks(options_.seed, mask_stream_, static_cast<std::uint64_t>(b0),
                                  static_cast<std::uint64_t>(nb), p, keep_bits_.data() + b0);
    });
  }

  // dst rows [d0, d0 + n) = (Accumulate: +=) src rows [s0, s0 + n) ⊙ mask, where the mask row of row k is token
  // row token0 + k. Factor of a kept element: static_cast<scalar_type>(1.0f / (1.0f - p)), as dropout_scale.
  template <bool Accumulate>
  void masked_rows(const matrix_type& src, matrix_type& dst, Eigen::Index s0, Eigen::Index d0, Eigen::Index n,
                   Eigen::Index token0) const {
    const float p = static_cast<float>(options_.dropout);
    const scalar_type keep = static_cast<scalar_type>(1.0f / (1.0f - p));
    scalar_type factors[16][4];  // factors[bits][k]: element k of a group of four under keep bits `bits`
    for (int b = 0; b < 16; ++b)
      for (int k = 0; k < 4; ++k) factors[b][k] = (b >> k) & 1 ? keep : scalar_type(0);
    const Eigen::Index cols = src.cols();
    const std::uint64_t first = static_cast<std::uint64_t>(token0 * cols);
    const scalar_type* s = src.data() + s0 * cols;
    scalar_type* d = dst.data() + d0 * cols;
    const std::uint64_t count = static_cast<std::uint64_t>(n * cols);
    const std::uint8_t* bits = keep_bits_.data();
    const auto put = [&](std::uint64_t i, scalar_type f) {
      if constexpr (Accumulate) {
        d[i] += s[i] * f;
      } else {
        d[i] = s[i] * f;
      }
    };
    std::uint64_t i = 0;
    for (; i < count && ((first + i) & 3u) != 0; ++i) put(i, factors[bits[(first + i) >> 2]][(first + i) & 3u]);
    for (; i + 4 <= count; i += 4) {  // whole groups of four
      const scalar_type* f = factors[bits[(first + i) >> 2]];
      for (int k = 0; k < 4; ++k) put(i + k, f[k]);
    }
    for (; i < count; ++i) put(i, factors[bits[(first + i) >> 2]][(first + i) & 3u]);
  }

  LoraOptions options_;
  Base base_;         // frozen W [out, in]
  vector_type bias_;  // [out] when has_bias_
  bool has_bias_;
  scalar_type scaling_{};
  matrix_type a_, b_;                    // [Rank, in], [out, Rank]
  matrix_type grad_a_, grad_b_;          // same shapes
  matrix_type xd_;                       // dropout(x) of the last forward  [tokens, in]
  matrix_type h_;                        // dropout(x)·Aᵀ                   [tokens, Rank]
  std::vector<std::uint8_t> keep_bits_;  // the last training forward's mask, 4 keep bits per byte ((tokens·in + 3) / 4)
  std::uint64_t step_ = 0, mask_stream_ = 0;
  bool dropped_ = false, cached_ = false, merged_ = false;
};

}  // namespace vidlora::lora

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using lora::LoraLinear;
using lora::LoraOptions;
}  // namespace vidlora
