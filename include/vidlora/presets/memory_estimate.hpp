#pragma once
// A constexpr training-memory estimate for a preset on a model shape, and the compile-time check that it fits.
//
// What it counts (bytes):
// - frozen decoder linears: NF4 (0.5 B/param) + double-quantized absmax (1 B per 64-block + 4 B per 256 blocks)
//   when load_in_4bit, else 2 B/param (fp16/bf16) or 4 B/param (fp32 presets); embeddings and LM head stay
//   16-bit (bitsandbytes never quantizes them); norms are negligible and ignored.
// - trainable state, fp32: LoRA A/B and the projector, each with grads and two AdamW moments (16 B/param).
// - activations per sample: with a memory-efficient attention (no T x T scores), a decoder layer keeps about
//   5D + 2(H + KV)·hd + 4I values per token; with gradient checkpointing only each layer's input (D) is kept
//   plus one layer's activations during recompute. The streamed cross-entropy adds T x 8192 fp32 logits.
// - vision features are cached on disk, so the frozen CLIP encoder is not resident while training.
// - a fixed runtime overhead (CUDA context, cuBLASLt workspace, allocator slack) of 1 GiB on GPU presets.

#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/model_shape.hpp>

namespace vidlora::presets {

inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
inline constexpr long kStreamedLogitsChunk = 8192;
inline constexpr double kUsableFraction = 0.95;  // leave 5% of the card for fragmentation

struct MemoryEstimate {
  double frozen_weights = 0;    // decoder linears (NF4 or 16-bit) + embeddings / LM head
  double trainable_state = 0;   // LoRA + projector: params, grads, AdamW m and v
  double lora_params = 0;       // count, not bytes
  double projector_params = 0;  // count
  double activations = 0;       // per micro-batch (batch_size samples)
  double overhead = 0;
  double budget = 0;  // usable bytes of the preset's memory
  long tokens_per_sample = 0;

  constexpr double total() const { return frozen_weights + trainable_state + activations + overhead; }
  constexpr bool fits() const { return total() <= budget; }
};

template <Preset P>
constexpr MemoryEstimate estimate_memory(const ModelShape& m) {
  MemoryEstimate e{};
  const double weight_bytes = (P::fp16 || P::bf16) ? 2.0 : 4.0;
  const double linear = static_cast<double>(m.layers) * static_cast<double>(m.layer_linear_params());
  if constexpr (P::load_in_4bit) {
    const double blocks = linear / 64.0;
    e.frozen_weights = linear * 0.5 + blocks * 1.0 + (blocks / 256.0) * 4.0;
  } else {
    e.frozen_weights = linear * weight_bytes;
  }
  e.frozen_weights += static_cast<double>(m.embedding_params()) * weight_bytes;

  double lora = 0;
  for (auto module : P::target_set::modules)
    lora += static_cast<double>(P::lora_r) * (m.linear_in(module) + m.linear_out(module));
  e.lora_params = lora * static_cast<double>(m.layers);
  e.projector_params = static_cast<double>(m.projector_params());
  e.trainable_state = 16.0 * (e.lora_params + e.projector_params);

  e.tokens_per_sample = m.tokens_per_sample(P::num_frames);
  const double tokens = static_cast<double>(e.tokens_per_sample) * P::batch_size;
  const double act_bytes = (P::fp16 || P::bf16) ? 2.0 : 4.0;
  const double per_layer_per_token = 5.0 * m.hidden + 2.0 * (m.heads + m.kv_heads) * m.head_dim + 4.0 * m.intermediate;
  const double layer_inputs = static_cast<double>(m.layers) * m.hidden;
  const double kept = P::gradient_checkpointing ? layer_inputs + per_layer_per_token
                                                : static_cast<double>(m.layers) * per_layer_per_token + layer_inputs;
  e.activations = tokens * kept * act_bytes + tokens * static_cast<double>(kStreamedLogitsChunk) * 4.0;

  e.overhead = P::cuda_arch > 0 ? 1.0 * kGiB : 0.0;
  e.budget = static_cast<double>(P::vram_gb) * kGiB * kUsableFraction;
  return e;
}

template <Preset P>
constexpr bool fits_in_memory(const ModelShape& m) {
  return estimate_memory<P>(m).fits();
}

// Instantiating this rejects, at compile time, a preset whose memory cannot hold the model.
template <Preset P, const ModelShape& Model>
struct AssertFits {
  static_assert(fits_in_memory<P>(Model),
                "vidlora: this preset cannot fit this model in its memory (estimate_memory<Preset>(model).total() > "
                "budget): enable load_in_4bit or gradient_checkpointing, or lower batch_size or num_frames");
  static constexpr bool value = true;
};

// Every shipped preset fits its default model.
static_assert(fits_in_memory<T4>(T4::default_model), "T4 preset must fit its default model");
static_assert(fits_in_memory<L4>(L4::default_model), "L4 preset must fit its default model");
static_assert(fits_in_memory<A100>(A100::default_model), "A100 preset must fit its default model");
static_assert(fits_in_memory<H100>(H100::default_model), "H100 preset must fit its default model");
static_assert(fits_in_memory<Cpu>(Cpu::default_model), "Cpu preset must fit its default model");

}  // namespace vidlora::presets
