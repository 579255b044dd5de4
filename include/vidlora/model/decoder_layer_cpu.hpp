#pragma once
// The CPU executor of decoder_layer_forward_steps / decoder_layer_backward_steps (model/decoder_layer_steps.hpp):
// Eigen matrices, the layer's LinearSlots (frozen base + LoRA), model::rms_norm, RotaryTable and
// model::attention_forward / attention_backward. model::Decoder runs every block through it, in one of two
// places: a right-padded training batch (activations kept for backward), or one sequence continuing a KV
// cache (generation: slots infer without caching, K/V appended to the cache).

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include <vidlora/core/backend.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/decoder_layer_steps.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/rms_norm.hpp>
#include <vidlora/model/rotary.hpp>
#include <vidlora/model/sequence_batch.hpp>

namespace vidlora::model {

// The frozen norms and the seven linear slots of one block (kDecoderModules order).
template <class Slot>
struct DecoderLayerWeights {
  using vector_type = VectorOf<typename Slot::scalar_type>;
  vector_type norm1, norm2;              // input_layernorm, post_attention_layernorm [hidden]
  vector_type q_norm, k_norm;            // qwen3 [head_dim]
  std::vector<Slot> slots;               // q, k, v, o, gate, up, down
  std::array<std::uint64_t, 7> steps{};  // LoRA dropout steps at the last checkpointed forward
};

template <class Slot>
class CpuLayerExecutor {
 public:
  using scalar_type = typename Slot::scalar_type;
  using tensor_type = MatrixOf<scalar_type>;
  using rows_type = VectorOf<scalar_type>;
  using saved_type = DecoderLayerSavedOf<tensor_type, rows_type, std::vector<tensor_type>>;  // softmax per sequence
  using backend_policy = backend::Cpu;

  // A training (or evaluation) batch: row b·seq_len + t is token t of sequence b, at positions[row].
  CpuLayerExecutor(DecoderLayerWeights<Slot>& layer, const DecoderConfig& config, RotaryTable& rope,
                   std::span<const Eigen::Index> positions, const SequenceBatch& batch, bool training)
      : layer_(layer), config_(config), rope_(rope), positions_(positions), batch_(&batch), training_(training) {}

  // One sequence continuing a KV cache of `past` positions ([past, kv_features] each): its K/V are appended.
  CpuLayerExecutor(DecoderLayerWeights<Slot>& layer, const DecoderConfig& config, RotaryTable& rope,
                   std::span<const Eigen::Index> positions, tensor_type& k_cache, tensor_type& v_cache,
                   Eigen::Index past)
      : layer_(layer),
        config_(config),
        rope_(rope),
        positions_(positions),
        k_cache_(&k_cache),
        v_cache_(&v_cache),
        past_(past) {}

  bool qk_norm() const { return config_.qk_norm(); }

  tensor_type copy(const tensor_type& x) const { return x; }
  tensor_type add(const tensor_type& a, const tensor_type& b) const { return a + b; }
  void accumulate(tensor_type& a, const tensor_type& b) const { a += b; }

  tensor_type rms_norm(const tensor_type& x, LayerNorm which, rows_type* inv) const {
    const double eps = config_.rms_norm_eps;
    if (!per_head(which)) return model::rms_norm<scalar_type>(x, weight(which), eps, inv);
    const tensor_type y = model::rms_norm<scalar_type>(per_head_view(x, config_.head_dim), weight(which), eps, inv);
    return Eigen::Map<const tensor_type>(y.data(), x.rows(), x.cols());
  }
  tensor_type rms_norm_backward(const tensor_type& x, LayerNorm which, const rows_type& inv,
                                const tensor_type& dy) const {
    if (!per_head(which)) return model::rms_norm_backward<scalar_type>(x, weight(which), inv, dy);
    const tensor_type dx = model::rms_norm_backward<scalar_type>(per_head_view(x, config_.head_dim), weight(which), inv,
                                                                 per_head_view(dy, config_.head_dim));
    return Eigen::Map<const tensor_type>(dx.data(), dy.rows(), dy.cols());
  }

  tensor_type linear(LayerLinear m, const tensor_type& x) {
    Slot& s = slot(m);
    return cached() ? s.infer(x) : s.forward(x, training_);
  }
  // The CPU slots keep their own input (lora::LoraLinear caches dropout(x)), so the step list neither keeps the
  // attention output nor recomputes any slot input for them; linear_backward does not read x.
  bool backward_takes_input(LayerLinear) const { return false; }
  tensor_type linear_backward(LayerLinear m, const tensor_type& dy, const tensor_type& /*x: not read*/ = {}) {
    require(!cached(), "CpuLayerExecutor: no backward through a KV-cache forward");
    return slot(m).backward(dy);
  }

  void rope(tensor_type& x, bool inverse) const { rope_.apply(x, positions_, inverse); }

  tensor_type attention(saved_type& a) const {
    const AttentionShape shape = attention_shape();
    if (cached()) {
      const Eigen::Index n = a.k.rows();
      k_cache_->conservativeResize(past_ + n, Eigen::NoChange);
      v_cache_->conservativeResize(past_ + n, Eigen::NoChange);
      k_cache_->bottomRows(n) = a.k;
      v_cache_->bottomRows(n) = a.v;
      return attention_forward<scalar_type>(a.q, *k_cache_, *v_cache_, shape, past_, {});
    }
    const Eigen::Index t = batch_->seq_len;
    tensor_type attn(a.q.rows(), config_.q_features());
    a.attention.resize(static_cast<std::size_t>(batch_->batch));
    const std::int64_t work = batch_->batch * t * t * config_.q_features();
    parallel_for(Eigen::Index{0}, batch_->batch, work, [&](Eigen::Index b) {
      attn.middleRows(b * t, t) =
          attention_forward<scalar_type>(a.q.middleRows(b * t, t), a.k.middleRows(b * t, t), a.v.middleRows(b * t, t),
                                         shape, 0, batch_->mask_of(b), &a.attention[static_cast<std::size_t>(b)]);
    });
    return attn;
  }

  QkvGrads<tensor_type> attention_backward(const saved_type& a, const tensor_type& d_attn) const {
    require(!cached(), "CpuLayerExecutor: no backward through a KV-cache forward");
    const AttentionShape shape = attention_shape();
    const Eigen::Index t = batch_->seq_len;
    QkvGrads<tensor_type> g{tensor_type::Zero(a.q.rows(), a.q.cols()), tensor_type::Zero(a.k.rows(), a.k.cols()),
                            tensor_type::Zero(a.v.rows(), a.v.cols())};
    const std::int64_t work = 2 * batch_->batch * t * t * config_.q_features();
    parallel_for(Eigen::Index{0}, batch_->batch, work, [&](Eigen::Index b) {
      model::attention_backward<scalar_type>(a.q.middleRows(b * t, t), a.k.middleRows(b * t, t),
                                             a.v.middleRows(b * t, t), shape, a.attention[static_cast<std::size_t>(b)],
                                             d_attn.middleRows(b * t, t), g.dq.middleRows(b * t, t),
                                             g.dk.middleRows(b * t, t), g.dv.middleRows(b * t, t));
    });
    return g;
  }

  tensor_type swiglu(const tensor_type& gate, const tensor_type& up) const {
    tensor_type m(gate.rows(), gate.cols());
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = silu(gate.data()[i]) * up.data()[i];
    return m;
  }
  SwigluGrads<tensor_type> swiglu_backward(const tensor_type& gate, const tensor_type& up,
                                           const tensor_type& dm) const {
    SwigluGrads<tensor_type> g{tensor_type(dm.rows(), dm.cols()), tensor_type(dm.rows(), dm.cols())};
    for (Eigen::Index i = 0; i < dm.size(); ++i) {
      const scalar_type x = gate.data()[i];
      g.dgate.data()[i] = dm.data()[i] * up.data()[i] * silu_grad(x);
      g.dup.data()[i] = dm.data()[i] * silu(x);
    }
    return g;
  }

 private:
  bool cached() const { return k_cache_ != nullptr; }
  static bool per_head(LayerNorm which) { return which == LayerNorm::q_head || which == LayerNorm::k_head; }
  const rows_type& weight(LayerNorm which) const {
    switch (which) {
      case LayerNorm::input: return layer_.norm1;
      case LayerNorm::post_attention: return layer_.norm2;
      case LayerNorm::q_head: return layer_.q_norm;
      case LayerNorm::k_head: break;
    }
    return layer_.k_norm;
  }
  Slot& slot(LayerLinear m) { return layer_.slots.at(static_cast<std::size_t>(m)); }
  AttentionShape attention_shape() const {
    return {config_.num_attention_heads, config_.num_key_value_heads, config_.head_dim};
  }

  DecoderLayerWeights<Slot>& layer_;
  const DecoderConfig& config_;
  RotaryTable& rope_;
  std::span<const Eigen::Index> positions_;
  const SequenceBatch* batch_ = nullptr;  // training batch, or null with a KV cache
  bool training_ = false;
  tensor_type* k_cache_ = nullptr;
  tensor_type* v_cache_ = nullptr;
  Eigen::Index past_ = 0;
};

}  // namespace vidlora::model
