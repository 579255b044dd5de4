#pragma once
// One linear layer of the decoder: a frozen base (any lora::FrozenWeight: dense float, NF4 ...)
// with an optional bias, and, when the module is a LoRA target, a LoraLinear around that base.

#include <cstdint>
#include <optional>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/lora_linear.hpp>

namespace vidlora::model {

template <int Rank, int Alpha, lora::FrozenWeight Base>
class LinearSlot {
 public:
  using scalar_type = typename Base::scalar_type;
  using matrix_type = MatrixOf<scalar_type>;
  using vector_type = VectorOf<scalar_type>;
  using lora_type = lora::LoraLinear<Rank, Alpha, Base>;

  // weight: W [out, in]; bias: [out] or empty; with_lora: wrap in a LoraLinear (a LoRA target).
  LinearSlot(matrix_type weight, std::optional<vector_type> bias, bool with_lora, lora::LoraOptions options = {}) {
    if (with_lora) {
      if (bias) {
        lora_.emplace(std::move(weight), std::move(*bias), options);
      } else {
        lora_.emplace(std::move(weight), options);
      }
    } else {
      require(weight.size() > 0, "LinearSlot: empty weight {}", shape_string(weight));
      if (bias)
        require(bias->size() == weight.rows(), "LinearSlot: bias of {} for weight {}", bias->size(),
                shape_string(weight));
      base_.emplace(std::move(weight));
      bias_ = std::move(bias);
    }
  }

  bool has_lora() const { return lora_.has_value(); }
  lora_type& lora() { return *lora_; }
  const lora_type& lora() const { return *lora_; }
  Eigen::Index in_features() const { return lora_ ? lora_->in_features() : base_->in_features(); }
  Eigen::Index out_features() const { return lora_ ? lora_->out_features() : base_->out_features(); }
  const Base& base() const { return lora_ ? lora_->base() : *base_; }
  // The bias [out], or null without one.
  const vector_type* bias() const {
    if (lora_) return lora_->has_bias() ? &lora_->bias() : nullptr;
    return bias_ ? &*bias_ : nullptr;
  }

  // x: [tokens, in] -> [tokens, out]; a LoRA slot caches what its backward needs.
  matrix_type forward(const matrix_type& x, bool training) {
    if (lora_) {
      cached_rows_ = x.rows();
      return lora_->forward(x, training);
    }
    return infer(x);
  }

  // The same output without caching anything (no dropout): inference and KV-cache decoding.
  matrix_type infer(const matrix_type& x) const {
    require(x.cols() == in_features(), "LinearSlot: input {} does not match weight [{}, {}]", shape_string(x),
            out_features(), in_features());
    matrix_type y = base().apply(x);
    if (lora_) {
      if (lora_->has_bias()) y.rowwise() += lora_->bias().transpose();
      if (!lora_->merged()) {
        const matrix_type h = x * lora_->lora_A().transpose();
        y.noalias() += (lora_->scaling() * h) * lora_->lora_B().transpose();
      }
    } else if (bias_) {
      y.rowwise() += bias_->transpose();
    }
    return y;
  }

  // dy: [tokens, out] -> dx: [tokens, in]; LoRA grads accumulate, the frozen base gets none.
  matrix_type backward(const matrix_type& dy) {
    if (lora_) return lora_->backward(dy);
    return base_->apply_transposed(dy);
  }

  // Drops the LoRA branch's cached input (gradient checkpointing keeps no per-layer activations).
  void release() {
    if (!lora_ || cached_rows_ == 0) return;
    lora_->release_cache();
    cached_rows_ = 0;
  }

  // Bytes the LoRA branch holds for backward: dropout(x) [tokens, in] and x·Aᵀ [tokens, Rank].
  std::size_t cached_bytes() const {
    return lora_ ? static_cast<std::size_t>(cached_rows_) * static_cast<std::size_t>(in_features() + Rank) *
                       sizeof(scalar_type)
                 : 0;
  }

  // Bytes of the frozen weight as stored (4-bit codes + block scales for quantized bases).
  std::size_t weight_bytes() const {
    const Base& b = base();
    if constexpr (requires { b.blocks().storage_bytes(); }) {
      return b.blocks().storage_bytes();
    } else if constexpr (requires { b.storage_bytes(); }) {
      return b.storage_bytes();
    } else {
      return static_cast<std::size_t>(b.out_features() * b.in_features()) * sizeof(scalar_type);
    }
  }

  // Bytes of the bias (0 without one).
  std::size_t bias_bytes() const {
    if (lora_) return lora_->has_bias() ? static_cast<std::size_t>(lora_->bias().size()) * sizeof(scalar_type) : 0;
    return bias_ ? static_cast<std::size_t>(bias_->size()) * sizeof(scalar_type) : 0;
  }

  // Dropout step of the LoRA branch (recomputation must replay the same mask).
  std::uint64_t step() const { return lora_ ? lora_->step() : 0; }
  void set_step(std::uint64_t s) {
    if (lora_) lora_->set_step(s);
  }

 private:
  std::optional<Base> base_;  // without LoRA
  std::optional<vector_type> bias_;
  std::optional<lora_type> lora_;
  Eigen::Index cached_rows_ = 0;
};

}  // namespace vidlora::model
