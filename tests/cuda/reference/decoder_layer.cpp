#include "decoder_layer.hpp"
#include "matrix_vector.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>

#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/decoder_layer_cpu.hpp>
#include <vidlora/model/linear_slot.hpp>
#include <vidlora/model/rotary.hpp>
#include <vidlora/quant/quantized_weight.hpp>

namespace ref {
namespace {
template <class Base>
void run_decoder_layer(const DecoderLayerCase& c, DecoderLayer& r) {
  using Slot = vidlora::model::LinearSlot<16, 32, Base>;
  vidlora::model::DecoderConfig config;
  config.architecture = c.qwen3 ? vidlora::model::Architecture::Qwen3 : vidlora::model::Architecture::Llama;
  config.hidden_size = static_cast<int>(c.hidden);
  config.intermediate_size = static_cast<int>(c.intermediate);
  config.num_hidden_layers = 1;
  config.num_attention_heads = static_cast<int>(c.q_heads);
  config.num_key_value_heads = static_cast<int>(c.kv_heads);
  config.head_dim = static_cast<int>(c.head_dim);
  config.vocab_size = 32;
  config.rms_norm_eps = 1e-6;
  config.rope_theta = 10000.0;
  config.validate();
  const auto uniform = [&](long n, std::uint64_t stream, float lo, float hi) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i)
      v[static_cast<std::size_t>(i)] =
          lo + (hi - lo) * vidlora::random_uniform(c.seed, stream, static_cast<std::uint64_t>(i));
    return v;
  };
  vidlora::model::DecoderLayerWeights<Slot> layer;
  r.norm1 = uniform(c.hidden, 1, 0.8f, 1.2f);
  r.norm2 = uniform(c.hidden, 2, 0.8f, 1.2f);
  layer.norm1 = Eigen::Map<const vidlora::Vector>(r.norm1.data(), c.hidden);
  layer.norm2 = Eigen::Map<const vidlora::Vector>(r.norm2.data(), c.hidden);
  if (c.qwen3) {
    r.q_norm = uniform(c.head_dim, 3, 0.8f, 1.2f);
    r.k_norm = uniform(c.head_dim, 4, 0.8f, 1.2f);
    layer.q_norm = Eigen::Map<const vidlora::Vector>(r.q_norm.data(), c.head_dim);
    layer.k_norm = Eigen::Map<const vidlora::Vector>(r.k_norm.data(), c.head_dim);
  }
  const long qf = c.q_heads * c.head_dim, kvf = c.kv_heads * c.head_dim, d = c.hidden, f = c.intermediate;
  const long outs[7] = {qf, kvf, kvf, d, f, f, d}, ins[7] = {d, d, d, qf, d, d, f};
  for (int m = 0; m < 7; ++m) {
    r.in[m] = ins[m];
    r.out[m] = outs[m];
    const float bound = 1.0f / std::sqrt(static_cast<float>(ins[m]));
    r.w[m] = uniform(outs[m] * ins[m], 10 + static_cast<std::uint64_t>(m), -bound, bound);
    if (c.nf4) r.q[m] = quantize(true, r.w[m], 64, true);
    const bool with_lora = std::find(c.lora_slots.begin(), c.lora_slots.end(), m) != c.lora_slots.end();
    vidlora::lora::LoraOptions o;
    o.dropout = c.dropout;
    o.seed = c.seed;
    o.layer = static_cast<std::uint32_t>(m);
    layer.slots.emplace_back(to_matrix(r.w[m], outs[m], ins[m]), std::nullopt, with_lora, o);
    if (with_lora) {
      auto& lin = layer.slots.back().lora();
      const std::vector<float> bv = uniform(outs[m] * 16, 20 + static_cast<std::uint64_t>(m), -0.1f, 0.1f);
      lin.lora_B() = to_matrix(bv, outs[m], 16);
      r.a[m] = to_vector(lin.lora_A());
      r.b[m] = bv;
      r.scaling = lin.scaling();
    }
  }
  const long tokens = c.batch * c.seq_len;
  r.x = uniform(tokens * d, 30, -1.0f, 1.0f);
  r.d_out = uniform(tokens * d, 31, -1.0f, 1.0f);
  vidlora::model::SequenceBatch batch{c.batch, c.seq_len, c.key_mask};
  std::vector<Eigen::Index> positions(static_cast<std::size_t>(tokens));
  for (long i = 0; i < tokens; ++i) positions[static_cast<std::size_t>(i)] = i % c.seq_len;
  vidlora::model::RotaryTable rope(static_cast<int>(c.head_dim), config.rope_theta);
  vidlora::model::CpuLayerExecutor<Slot> exec(layer, config, rope, positions, batch, true);
  typename vidlora::model::CpuLayerExecutor<Slot>::saved_type saved;
  r.y = to_vector(vidlora::model::decoder_layer_forward_steps(exec, to_matrix(r.x, tokens, d), saved));
  r.dx = to_vector(vidlora::model::decoder_layer_backward_steps(exec, saved, to_matrix(r.d_out, tokens, d)));
  r.q_rot = to_vector(saved.q);
  r.k_rot = to_vector(saved.k);
  r.v = to_vector(saved.v);
  r.h_mid = to_vector(saved.h_mid);
  r.gate = to_vector(saved.gate);
  r.up = to_vector(saved.up);
  for (int m = 0; m < 7; ++m)
    if (layer.slots[static_cast<std::size_t>(m)].has_lora()) {
      r.grad_a[m] = to_vector(layer.slots[static_cast<std::size_t>(m)].lora().grad_A());
      r.grad_b[m] = to_vector(layer.slots[static_cast<std::size_t>(m)].lora().grad_B());
    }
}
}  // namespace

DecoderLayer decoder_layer(const DecoderLayerCase& c) {
  DecoderLayer r;
  if (c.nf4) {
    run_decoder_layer<vidlora::quant::NF4Weight>(c, r);
  } else {
    run_decoder_layer<vidlora::lora::DenseWeight>(c, r);
  }
  return r;
}

}  // namespace ref
