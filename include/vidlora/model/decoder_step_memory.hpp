#pragma once
// What a training step of decoder_loss_and_backward_steps (model/decoder_model_steps.hpp) keeps alive on the device,
// tensor by tensor, as model::cuda::DecoderLayerExecutor and DecoderModel allocate it through their caching
// allocator: per block, the executor's tables, the saved activations of DecoderLayerSavedOf (the attention output
// too when o_proj has LoRA) and each LoRA slot's cache: its dropout keep bits and h = dropout(x)·Aᵀ, the kept pieces
// of lora::cuda::lora_workspace_sizes (a slot's input comes back from the step list: model/decoder_layer_steps.hpp);
// with gradient checkpointing, a checkpointed block only its input. presets::estimate_memory counts the same tensors, and
// tests/cuda_host/test_decoder_memory_host.cpp checks both against a host caching allocator's measured bytes while
// the step list runs. constexpr, fmt-free (nvcc compiles it).
//
// Per token and block, fp32, llama (no q/k head norm), with LoRA on the slots S:  2·D + qf + 2·kvf + 2·I + H + 2
// (h_in, h_mid, q, k, v, gate, up, the attention's log-sum-exp, two 1/rms)  +  qf if o_proj is in S (the attention
// output)  +  Σ_{s in S} (in_s/16 with dropout (keep bits, 4 per byte) + r (h)). Before the slots took their input
// back from the step list, each kept dropout(x) or x (in_s) and g (r) as well: on the 7B with all seven slots at
// r = 32 with dropout, 80.8k values per token and block against 49.1k now.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/model/decoder_layer_steps.hpp>
#include <vidlora/model/decoder_model_steps.hpp>

namespace vidlora::model {

// One linear slot as the step allocates for it: LoRA or frozen (a frozen slot keeps nothing).
struct SlotMemoryShape {
  bool lora = false;
  std::int64_t rank = 0;
  bool dropout = false;  // LoRA dropout > 0 in a training forward: its keep bits are kept
};

struct DecoderMemoryShape {
  std::int64_t batch = 1, seq_len = 0;
  std::int64_t hidden = 0, intermediate = 0, q_heads = 0, kv_heads = 0, head_dim = 0, layers = 0;
  bool qk_norm = false;                    // Qwen3's per-head norms: q, k before them and their 1/rms are kept too
  bool masked = false;                     // an attention mask (each block executor holds a device copy)
  std::array<SlotMemoryShape, 7> slots{};  // q, k, v, o, gate, up, down
  std::int64_t value_bytes = 4;            // activation element size: fp32 (the device step today)

  constexpr std::int64_t tokens() const { return batch * seq_len; }
  constexpr std::int64_t q_features() const { return q_heads * head_dim; }
  constexpr std::int64_t kv_features() const { return kv_heads * head_dim; }
  constexpr std::int64_t slot_in(LayerLinear m) const {
    return m == LayerLinear::o ? q_features() : m == LayerLinear::down ? intermediate : hidden;
  }
};

inline constexpr std::array<std::string_view, 7> kSlotMemoryNames{
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

// Elements of T a LoRA slot's forward keeps for its backward: lora_workspace_sizes<T>'s keep bits and h (pieces
// padded to 256 bytes). dropout(x), g and a 4-bit base's dense copy are temporaries of one call.
constexpr std::int64_t lora_kept_workspace_elements(std::int64_t tokens, std::int64_t in, std::int64_t rank,
                                                    bool dropout, std::int64_t element_bytes = 4) {
  const std::int64_t per_256 = 256 / element_bytes;
  auto pad = [per_256](std::int64_t n) { return (n + per_256 - 1) / per_256 * per_256; };
  const std::int64_t mask_bytes = dropout ? (tokens * in + 3) / 4 : 0;
  return pad((mask_bytes + element_bytes - 1) / element_bytes) + pad(tokens * rank);
}

// Calls f(name, bytes) for every tensor one block holds from its forward to its backward (name relative to the
// block: "q", "self_attn.q_proj.x", "rope.cos", ...). packed: the block's saved activations (for_each_saved_activation's
// tensors) wait in bf16 (DecoderStepOptions::pack_saved), 2 bytes a value.
template <class F>
constexpr void for_each_block_tensor(const DecoderMemoryShape& s, F&& f, bool packed = false) {
  const std::int64_t t = s.tokens(), v = packed ? 2 : s.value_bytes;  // v: the saved activations' bytes
  const std::int64_t r = s.value_bytes;                               // the rest's
  // the executor's tables: positions and the mask as int32, RoPE cos / sin [seq_len, head_dim / 2] fp32
  f("rope.positions", t * 4);
  f("rope.cos", s.seq_len * (s.head_dim / 2) * 4);
  f("rope.sin", s.seq_len * (s.head_dim / 2) * 4);
  if (s.masked) f("attention_mask", t * 4);
  // DecoderLayerSavedOf
  f("h_in", t * s.hidden * v);
  f("input_layernorm.inv", t * r);
  if (s.qk_norm) {
    f("q_raw", t * s.q_features() * v);
    f("k_raw", t * s.kv_features() * v);
    f("q_norm.inv", t * s.q_heads * r);
    f("k_norm.inv", t * s.kv_heads * r);
  }
  f("q", t * s.q_features() * v);
  f("k", t * s.kv_features() * v);
  f("v", t * s.kv_features() * v);
  f("attention.lse", t * s.q_heads * 4);  // fp32 in every precision
  if (s.slots[static_cast<std::size_t>(LayerLinear::o)].lora)
    f("self_attn.attention", t * s.q_features() * v);  // o_proj's input, for its LoRA backward
  f("h_mid", t * s.hidden * v);
  f("post_attention_layernorm.inv", t * r);
  f("gate", t * s.intermediate * v);
  f("up", t * s.intermediate * v);
  // the LoRA slots' caches
  for (std::size_t m = 0; m < 7; ++m) {
    const SlotMemoryShape& slot = s.slots[m];
    if (!slot.lora) continue;
    const std::int64_t in = s.slot_in(static_cast<LayerLinear>(m));
    f(kSlotMemoryNames[m], lora_kept_workspace_elements(t, in, slot.rank, slot.dropout, r) * r);
  }
}

// bytes as the caching allocator holds them (its size class) or as asked.
constexpr std::int64_t held_bytes(std::int64_t bytes, bool size_classes) {
  if (bytes <= 0) return 0;
  return size_classes ? static_cast<std::int64_t>(allocation_size_class(static_cast<std::size_t>(bytes))) : bytes;
}

// What one block holds from its forward to its backward (packed: its saved activations in bf16).
constexpr std::int64_t block_bytes(const DecoderMemoryShape& s, bool size_classes = false, bool packed = false) {
  std::int64_t n = 0;
  for_each_block_tensor(
      s, [&](std::string_view, std::int64_t b) { n += held_bytes(b, size_classes); }, packed);
  return n;
}

// What a checkpointed block holds instead: its input [tokens, hidden].
constexpr std::int64_t checkpoint_bytes(const DecoderMemoryShape& s, bool size_classes = false) {
  return held_bytes(s.tokens() * s.hidden * s.value_bytes, size_classes);
}

// What decoder_loss_and_backward_steps holds on the device when the LM-head loss starts: every block's state (a
// checkpointed block's input instead, nothing when it is offloaded to host memory; with pack_saved every other
// block's saved activations in bf16), the last block's output, the final norm's output and its 1/rms. The most any point of the
// step holds adds the loss's and one block backward's temporaries to this; with checkpointing the recomputed block
// replaces the last one's state.
constexpr std::int64_t step_bytes_at_loss(const DecoderMemoryShape& s, const DecoderStepOptions& o,
                                          bool size_classes = false) {
  std::int64_t n = 0;
  const std::size_t layers = static_cast<std::size_t>(s.layers);
  for (std::size_t l = 0; l < layers; ++l)
    if (!checkpoints_layer(o, l, layers))
      n += block_bytes(s, size_classes, packs_layer(o, l, layers));
    else if (!o.offload_checkpoints)
      n += checkpoint_bytes(s, size_classes);  // an offloaded input is in host memory
  const std::int64_t hidden = held_bytes(s.tokens() * s.hidden * s.value_bytes, size_classes);
  return n + 2 * hidden + held_bytes(s.tokens() * s.value_bytes, size_classes);
}

}  // namespace vidlora::model
