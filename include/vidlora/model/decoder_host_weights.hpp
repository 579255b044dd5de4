#pragma once
// DecoderHostWeights: a decoder's weights as plain host vectors — what another backend uploads (the CUDA model,
// model/cuda/decoder_model.cuh) — with its shape and a check that every tensor has the size its shape says.
// fmt-free (nvcc includes it); model/decoder_weights_export.hpp fills it from a model::Decoder.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/error_type.hpp>
#include <vidlora/model/rope_frequencies.hpp>

namespace vidlora::model {

// A 4-bit (NF4/FP4) frozen weight as quant::QuantizedBlocks stores it.
struct HostQuantized4bit {
  bool nf4 = true;                    // else FP4
  std::vector<std::uint8_t> packed;   // ceil(numel / 2) bytes
  std::vector<float> absmax;          // one per block; empty when double-quantized
  std::vector<std::uint8_t> qabsmax;  // double-quantized: one code per block
  std::vector<float> nested_absmax;   // double-quantized: one per 256 blocks
  float absmax_offset = 0.0f;
  int blocksize = 64;
};

// One linear slot: the frozen base (dense or 4-bit), its bias and, on a LoRA target, the adapters.
struct HostLinearWeights {
  std::int64_t in = 0, out = 0;
  bool quantized = false;
  std::vector<float> w;     // dense base [out, in] (empty when quantized)
  HostQuantized4bit q;      // quantized base
  std::vector<float> bias;  // [out] or empty
  // LoRA (empty lora_a: a frozen slot)
  std::int64_t rank = 0;
  std::vector<float> lora_a, lora_b;  // [rank, in], [out, rank]
  float scaling = 0.0f;
  float dropout = 0.0f;
  std::uint64_t seed = 0;
  std::uint32_t layer_index = 0;  // lora::LoraOptions::layer (layer·7 + module): the dropout RNG stream
  std::uint64_t step = 0;         // dropout step (lora::LoraLinear::step())
  bool has_lora() const { return !lora_a.empty(); }
};

struct HostLayerWeights {
  std::vector<float> norm1, norm2;           // [hidden]
  std::vector<float> q_norm, k_norm;         // qwen3 [head_dim]; empty otherwise
  std::array<HostLinearWeights, 7> linears;  // q, k, v, o, gate, up, down
};

struct DecoderHostWeights {
  std::int64_t hidden = 0, intermediate = 0, q_heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double rms_norm_eps = 1e-6;
  // The RoPE frequencies as the CPU decoder holds them (its RotaryTable's), dynamic NTK's state included: the device
  // model updates its copy once per forward, as model::Decoder does, so both rotate with the same frequencies.
  RopeFrequencyState rope;
  bool qk_norm = false;
  // > 0: the config's sliding window; longer sequences are refused, as model::Decoder refuses them (within the window
  // sliding-window attention is full attention)
  std::int64_t sliding_window = 0;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> head;        // [vocab, hidden] (the embeddings when tied)
  std::vector<HostLayerWeights> layers;
};

// HF-style name of slot m of layer l ("layers.3.mlp.up_proj"), for messages and tensor names.
inline std::string host_slot_name(std::size_t l, std::size_t m) {
  static constexpr const char* modules[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  std::string s = "layers.";
  s += std::to_string(l);
  s += m < 4 ? ".self_attn." : ".mlp.";
  s += modules[m < 7 ? m : 6];
  return s;
}

namespace detail {
inline void check_host_size(std::size_t got, std::int64_t rows, std::int64_t cols, const std::string& name) {
  if (static_cast<std::int64_t>(got) == rows * cols) return;
  std::string msg = "decoder host weights: ";
  msg += name;
  msg += " has ";
  msg += std::to_string(got);
  msg += " values for [";
  msg += std::to_string(rows);
  if (cols != 1) {
    msg += ", ";
    msg += std::to_string(cols);
  }
  msg += "]";
  throw Error(msg);
}
}  // namespace detail

// Throws vidlora::Error naming the first tensor whose size does not match the shape (or a bad shape).
inline void check_decoder_host_weights(const DecoderHostWeights& w) {
  if (w.hidden <= 0 || w.intermediate <= 0 || w.q_heads <= 0 || w.kv_heads <= 0 || w.head_dim <= 0 || w.vocab <= 0 ||
      w.head_dim % 2 != 0 || w.q_heads % w.kv_heads != 0 || w.layers.empty())
    throw Error(
        "decoder host weights: needs positive sizes, an even head_dim, q_heads a multiple of kv_heads and "
        "at least one layer (hidden " +
        std::to_string(w.hidden) + ", heads " + std::to_string(w.q_heads) + "/" + std::to_string(w.kv_heads) +
        ", head_dim " + std::to_string(w.head_dim) + ", layers " + std::to_string(w.layers.size()) + ")");
  using detail::check_host_size;
  check_host_size(w.final_norm.size(), w.hidden, 1, "norm.weight");
  check_host_size(w.head.size(), w.vocab, w.hidden, "lm_head.weight");
  check_host_size(w.rope.current().inv_freq.size(), w.head_dim / 2, 1,
                  "rope inv_freq (one per rotation pair: set rope, e.g. from model::default_rope_frequencies)");
  const std::int64_t d = w.hidden, f = w.intermediate, qf = w.q_heads * w.head_dim, kvf = w.kv_heads * w.head_dim;
  const std::int64_t outs[7] = {qf, kvf, kvf, d, f, f, d}, ins[7] = {d, d, d, qf, d, d, f};
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const HostLayerWeights& layer = w.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    check_host_size(layer.norm1.size(), d, 1, p + "input_layernorm.weight");
    check_host_size(layer.norm2.size(), d, 1, p + "post_attention_layernorm.weight");
    if (w.qk_norm) {
      check_host_size(layer.q_norm.size(), w.head_dim, 1, p + "self_attn.q_norm.weight");
      check_host_size(layer.k_norm.size(), w.head_dim, 1, p + "self_attn.k_norm.weight");
    }
    for (std::size_t m = 0; m < 7; ++m) {
      const HostLinearWeights& s = layer.linears[m];
      const std::string name = host_slot_name(l, m);
      if (s.in != ins[m] || s.out != outs[m])
        throw Error("decoder host weights: " + name + " is [" + std::to_string(s.out) + ", " + std::to_string(s.in) +
                    "], the shape needs [" + std::to_string(outs[m]) + ", " + std::to_string(ins[m]) + "]");
      if (s.quantized) {
        check_host_size(s.q.packed.size(), (s.out * s.in + 1) / 2, 1, name + ".weight (packed 4-bit codes)");
        if (s.q.blocksize <= 0 || (s.q.blocksize & (s.q.blocksize - 1)) != 0)
          throw Error("decoder host weights: " + name + " has blocksize " + std::to_string(s.q.blocksize) +
                      " (a power of two is needed)");
        const std::int64_t blocks = (s.out * s.in + s.q.blocksize - 1) / s.q.blocksize;
        if (s.q.qabsmax.empty())
          check_host_size(s.q.absmax.size(), blocks, 1, name + ".weight absmax");
        else
          check_host_size(s.q.qabsmax.size(), blocks, 1, name + ".weight qabsmax");
      } else {
        check_host_size(s.w.size(), s.out, s.in, name + ".weight");
      }
      if (!s.bias.empty()) check_host_size(s.bias.size(), s.out, 1, name + ".bias");
      if (!s.has_lora()) continue;
      if (s.rank <= 0) throw Error("decoder host weights: " + name + " has LoRA rank " + std::to_string(s.rank));
      check_host_size(s.lora_a.size(), s.rank, s.in, name + ".lora_A.weight");
      check_host_size(s.lora_b.size(), s.out, s.rank, name + ".lora_B.weight");
      if (!(s.dropout >= 0.0f && s.dropout < 1.0f))
        throw Error("decoder host weights: " + name + " has LoRA dropout " + std::to_string(s.dropout) +
                    " (outside [0, 1))");
    }
  }
}

}  // namespace vidlora::model
