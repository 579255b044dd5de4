#pragma once
// export_decoder_weights: copies a model::Decoder's frozen weights (dense fp32, or NF4/FP4 blocks as stored),
// biases, norms, LM head and current LoRA adapters into a DecoderHostWeights, for a backend that uploads them
// (model/cuda/decoder_model.cuh). What the device decoder cannot run yet is an error naming it.

#include <string>
#include <type_traits>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_host_weights.hpp>
#include <vidlora/quant/quantized_weight.hpp>

namespace vidlora::model {

namespace detail {
template <class M>
std::vector<float> host_values(const M& m) {  // row-major [rows, cols] as float
  std::vector<float> v(static_cast<std::size_t>(m.size()));
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      v[static_cast<std::size_t>(r * m.cols() + c)] = static_cast<float>(m(r, c));
  return v;
}
}  // namespace detail

template <int Rank, int Alpha, lora::FrozenWeight Base>
DecoderHostWeights export_decoder_weights(const Decoder<Rank, Alpha, Base>& decoder) {
  static_assert(std::is_same_v<typename Base::scalar_type, float>,
                "export_decoder_weights: the device decoder takes float weights (dense fp32 or 4-bit blocks)");
  const DecoderConfig& c = decoder.config();
  DecoderHostWeights w;
  w.hidden = c.hidden_size;
  w.intermediate = c.intermediate_size;
  w.q_heads = c.num_attention_heads;
  w.kv_heads = c.num_key_value_heads;
  w.head_dim = c.head_dim;
  w.vocab = c.vocab_size;
  w.rms_norm_eps = c.rms_norm_eps;
  w.rope = decoder.rope_frequencies();
  w.qk_norm = c.qk_norm();
  w.sliding_window = c.sliding_window > 0 ? static_cast<std::int64_t>(c.sliding_window) : 0;
  w.final_norm = detail::host_values(decoder.final_norm().transpose());
  w.head = detail::host_values(decoder.head_weight());
  for (Eigen::Index l = 0; l < decoder.num_layers(); ++l) {
    const auto& layer = decoder.layer_weights(l);
    HostLayerWeights& out = w.layers.emplace_back();
    out.norm1 = detail::host_values(layer.norm1.transpose());
    out.norm2 = detail::host_values(layer.norm2.transpose());
    if (c.qk_norm()) {
      out.q_norm = detail::host_values(layer.q_norm.transpose());
      out.k_norm = detail::host_values(layer.k_norm.transpose());
    }
    for (std::size_t m = 0; m < 7; ++m) {
      const auto& slot = layer.slots[m];
      HostLinearWeights& s = out.linears[m];
      s.in = slot.in_features();
      s.out = slot.out_features();
      const Base& base = slot.base();
      if constexpr (requires { base.blocks(); }) {
        const auto& b = base.blocks();
        s.quantized = true;
        s.q.nf4 = std::is_same_v<typename Base::format, quant::NF4>;
        s.q.packed = b.packed;
        s.q.absmax = b.absmax;
        s.q.qabsmax = b.qabsmax;
        s.q.nested_absmax = b.nested_absmax;
        s.q.absmax_offset = b.absmax_offset;
        s.q.blocksize = b.blocksize;
      } else if constexpr (requires { base.dense(); }) {
        s.w = detail::host_values(base.dense());
      } else {
        static_assert(sizeof(Base) == 0, "export_decoder_weights: a base that is neither dense nor 4-bit blocks");
      }
      if (const auto* bias = slot.bias()) s.bias = detail::host_values(bias->transpose());
      if (!slot.has_lora()) continue;
      const auto& lin = slot.lora();
      require(!lin.merged(), "export_decoder_weights: {} has its LoRA merged into the base; unmerge it first",
              decoder.module_path(l, kDecoderModules[m]));
      s.rank = Rank;
      s.lora_a = detail::host_values(lin.lora_A());
      s.lora_b = detail::host_values(lin.lora_B());
      s.scaling = static_cast<float>(lin.scaling());
      s.dropout = static_cast<float>(lin.options().dropout);
      s.seed = lin.options().seed;
      s.layer_index = lin.options().layer;
      s.step = lin.step();
    }
  }
  check_decoder_host_weights(w);
  return w;
}

}  // namespace vidlora::model
