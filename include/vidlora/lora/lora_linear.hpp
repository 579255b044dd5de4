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

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/lora/dropout.hpp>
#include <vidlora/lora/frozen_weight.hpp>

namespace vidlora::lora {

// Run-time settings of one LoRA layer (aggregate: `LoraOptions o{}; o.dropout = 0.1;`).
struct LoraOptions {
  double dropout = 0.0;      // probability of zeroing an element of x on the LoRA branch, in [0, 1)
  std::uint64_t seed = 0;    // drives lora_A's initialisation and the dropout masks
  bool use_rslora = false;   // scaling = Alpha / √Rank instead of Alpha / Rank
  std::uint32_t layer = 0;   // RNG stream index: layers sharing a seed draw different A and masks
  // > 0: PEFT's lora_alpha at run time, used instead of the template Alpha (which is then only the
  // default). The rank shapes the code and stays a template parameter (lora::dispatch_rank); alpha
  // only sets one scalar, so a run-time value costs nothing and needs no instantiation per alpha.
  double alpha = 0.0;
};

namespace detail {
// Runs fn(thread_id, threads) once per OpenMP thread (once, sequentially, without OpenMP or for
// small work); Eigen products inside run single-threaded, so each phase costs one fork/join.
template <class Fn>
void for_each_share(Eigen::Index work, Fn&& fn) {
#if defined(_OPENMP)
  if (work >= (Eigen::Index{1} << 16) && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    fn(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  fn(0, 1);
}

// The contiguous share [begin, begin + count) of [0, n) that thread `id` of `threads` owns.
struct Share {
  Eigen::Index begin, count;
};
inline Share share_of(Eigen::Index n, int id, int threads) {
  const Eigen::Index begin = n * id / threads, end = n * (id + 1) / threads;
  return {begin, end - begin};
}

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
      : options_(checked_options(options)),
        base_(checked_weight(std::move(weight))),
        bias_(),
        has_bias_(false) {
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
    // One pass per share of token rows: dropout(x), h = dropout(x)·Aᵀ, y += h·(scaling·Bᵀ).
    detail::for_each_share(x.size(), [&](int id, int threads) {
      const auto [t0, nt] = detail::share_of(tokens, id, threads);
      if (nt == 0) return;
      if (dropped_) {
        masked_rows(x, xd_, t0, nt);
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
    // Rows of tokens: g, and dx += mask ⊙ (g·A).
    detail::for_each_share(dy.size(), [&](int id, int threads) {
      const auto [t0, nt] = detail::share_of(tokens, id, threads);
      if (nt == 0) return;
      g.middleRows(t0, nt).noalias() = scaling_ * (dy.middleRows(t0, nt) * b_);
      if (!dropped_) {
        dx.middleRows(t0, nt).noalias() += g.middleRows(t0, nt) * a_;
      } else {
        matrix_type dxd = g.middleRows(t0, nt) * a_;
        masked_rows(dxd, dxd, 0, nt, t0);
        dx.middleRows(t0, nt) += dxd;
      }
    });
    // Columns of A and rows of B: grad_A += gᵀ·dropout(x), grad_B += scaling·dyᵀ·h (no reduction across threads).
    detail::for_each_share(dy.size(), [&](int id, int threads) {
      const auto [c0, nc] = detail::share_of(in, id, threads);
      if (nc > 0) grad_a_.middleCols(c0, nc).noalias() += g.transpose() * xd_.middleCols(c0, nc);
      const auto [o0, no] = detail::share_of(out, id, threads);
      if (no > 0) grad_b_.middleRows(o0, no).noalias() += scaling_ * (dy.middleCols(o0, no).transpose() * h_);
    });
    return dx;
  }

  // Frees what the last forward cached for backward (dropout(x) and x·Aᵀ); gradient checkpointing
  // calls it and recomputes the forward before backward. backward() then needs a new forward().
  void release_cache() {
    xd_.resize(0, 0);
    h_.resize(0, 0);
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
  static constexpr double sqrt_constexpr(double v) {  // Newton iteration; std::sqrt is not constexpr in C++20
    double r = v > 1 ? v : 1.0;
    for (int i = 0; i < 64; ++i) r = 0.5 * (r + v / r);
    return r;
  }

  static LoraOptions checked_options(const LoraOptions& o) {
    require(o.dropout >= 0.0 && o.dropout < 1.0, "LoraLinear: dropout {} is outside [0, 1)", o.dropout);
    require(o.alpha >= 0.0 && std::isfinite(o.alpha), "LoraLinear: alpha {} must be finite and >= 0 (0: the template Alpha)",
            o.alpha);
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
    scaling_ = static_cast<scalar_type>(options_.use_rslora ? alpha_value() / std::sqrt(double{Rank})
                                                            : alpha_value() / Rank);
    const Eigen::Index in = in_features(), out = out_features();
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    CounterRng rng(options_.seed, init_stream(options_.layer));
    a_.resize(Rank, in);
    for (Eigen::Index i = 0; i < a_.size(); ++i) a_.data()[i] = static_cast<scalar_type>(rng.uniform(-bound, bound));
    b_ = matrix_type::Zero(out, Rank);
    grad_a_ = matrix_type::Zero(Rank, in);
    grad_b_ = matrix_type::Zero(out, Rank);
  }

  // dst rows [r0, r0 + n) = src rows [r0, r0 + n) ⊙ mask of the current step, where the mask row of
  // dst row r0 + k is token row `token0 + k` (token0 defaults to r0). src and dst may alias.
  void masked_rows(const matrix_type& src, matrix_type& dst, Eigen::Index r0, Eigen::Index n,
                   Eigen::Index token0 = -1) const {
    const float p = static_cast<float>(options_.dropout);
    const std::uint64_t seed = options_.seed, stream = mask_stream_;
    const Eigen::Index cols = src.cols();
    const std::uint64_t first = static_cast<std::uint64_t>((token0 < 0 ? r0 : token0) * cols);
    const scalar_type* s = src.data() + r0 * cols;
    scalar_type* d = dst.data() + r0 * cols;
    const std::uint64_t count = static_cast<std::uint64_t>(n * cols);
    for (std::uint64_t i = 0; i < count; ++i)
      d[i] = s[i] * static_cast<scalar_type>(dropout_scale(seed, stream, first + i, p));
  }

  LoraOptions options_;
  Base base_;           // frozen W [out, in]
  vector_type bias_;    // [out] when has_bias_
  bool has_bias_;
  scalar_type scaling_{};
  matrix_type a_, b_;            // [Rank, in], [out, Rank]
  matrix_type grad_a_, grad_b_;  // same shapes
  matrix_type xd_;               // dropout(x) of the last forward  [tokens, in]
  matrix_type h_;                // dropout(x)·Aᵀ                   [tokens, Rank]
  std::uint64_t step_ = 0, mask_stream_ = 0;
  bool dropped_ = false, cached_ = false, merged_ = false;
};

}  // namespace vidlora::lora

namespace vidlora {
using lora::LoraLinear;
using lora::LoraOptions;
}  // namespace vidlora
