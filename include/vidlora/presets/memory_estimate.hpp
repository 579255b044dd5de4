#pragma once
// A constexpr training-memory estimate for a preset on a model shape, and the compile-time check that it fits.
//
// What it counts (bytes):
// - frozen decoder linears: NF4 (0.5 B/param) + double-quantized absmax (1 B per 64-block + 4 B per 256 blocks)
//   when load_in_4bit, else 2 B/param (fp16/bf16) or 4 B/param (fp32 presets); embeddings and LM head stay
//   16-bit (bitsandbytes never quantizes them); norms are negligible and ignored.
// - trainable state, fp32: LoRA A/B and the projector, each with grads and two AdamW moments (16 B/param); the
//   device step adds its float64 sums over the step's clips (8 B/param, TrainerConfig::batch_invariant, the default).
//   With the optimizer on the device (TrainerConfig::optimizer_on_device) all 24 B/param are device memory.
// - activations per micro-batch: what the device step (decoder_loss_and_backward_steps over the CUDA executors)
//   holds when its loss starts, counted tensor by tensor by model::step_bytes_at_loss (model/decoder_step_memory.hpp;
//   tests/cuda_host/test_decoder_memory_host.cpp measures the same bytes through a caching allocator): per block
//   and token 2·D + qf + 2·kvf + 2·I + H + 2 values (its input, the attention residual, q, k, v, the MLP's gate and up,
//   the attention's log-sum-exp, two 1/rms), the attention output (qf) when o_proj has LoRA, and each LoRA slot's
//   cache (its dropout keep bits, 4 per byte, and h of rank r: a slot's input comes back from the step list); with
//   gradient checkpointing every block but the last keeps only its input (D). The
//   values are counted at the preset's compute precision (2 bytes for fp16 / bf16 presets); `activations_fp32` is
//   the same count at 4 bytes; `activations_device` what the device step holds today: fp32, with the saved
//   activations of every block but the last in bf16 for the bf16 presets (presets::device_precision_of). The streamed cross-entropy adds T x 8192 fp32
//   logits. Qwen3's head norms (ModelShape::qk_norm) add q and k before them and their 1/rms.
// - the device projector (model::cuda::CudaMlp2xGelu, under the decoder step's cap) holds its input, z, GELU(z) and its
//   output (spliced into the decoder's input on the device) for the micro-batch's visual tokens through the decoder's
//   step: (Dv + 3·D) fp32 values per visual token (`projector_activations_device`).
// - vision features are cached on disk, so the frozen CLIP encoder is not resident while training.
// - a fixed runtime overhead (CUDA context, cuBLASLt workspace, allocator slack) of 1 GiB on GPU presets.

#include <array>
#include <string_view>

#include <vidlora/model/decoder_step_memory.hpp>
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
  double activations = 0;       // per micro-batch (batch_size samples), at the preset's compute precision
  double activations_fp32 = 0;  // the same tensors in fp32
  // What the device step holds today at its precision (presets::device_precision_of<P>() unless estimate_memory is
  // given another): fp32 values, with the saved activations of every block but the last in bf16 for "bf16"
  // (DecoderStepOptions::pack_saved).
  double activations_device = 0;
  double clip_sums_device = 0;  // the device step's float64 per-clip gradient sums (batch_invariant): 8 B/param
  double projector_activations_device = 0;  // the device projector's x, z, GELU(z), y of the micro-batch
  constexpr double total_device() const {
    return total() - activations + activations_device + clip_sums_device + projector_activations_device;
  }
  double overhead = 0;
  double budget = 0;  // usable bytes of the preset's memory
  long tokens_per_sample = 0;

  constexpr double total() const { return frozen_weights + trainable_state + activations + overhead; }
  constexpr bool fits() const { return total() <= budget; }
};

// The device step's memory shape for preset P on model m: a micro-batch of P::batch_size samples, LoRA of rank
// P::lora_r on P::target_set with dropout P::lora_dropout, values of `value_bytes`.
template <Preset P>
constexpr model::DecoderMemoryShape decoder_memory_shape(const ModelShape& m, long value_bytes) {
  constexpr std::array<std::string_view, 7> slots{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};
  model::DecoderMemoryShape s;
  s.batch = P::batch_size;
  s.seq_len = m.tokens_per_sample(P::num_frames);
  s.hidden = m.hidden;
  s.intermediate = m.intermediate;
  s.q_heads = m.heads;
  s.kv_heads = m.kv_heads;
  s.head_dim = m.head_dim;
  s.layers = m.layers;
  s.qk_norm = m.qk_norm;
  s.masked = true;
  s.value_bytes = value_bytes;
  for (std::size_t i = 0; i < slots.size(); ++i)
    for (auto module : P::target_set::modules)
      if (std::string_view(module) == slots[i]) s.slots[i] = {true, P::lora_r, P::lora_dropout > 0.0};
  return s;
}

// device_precision: what the device step runs (train_captioner --precision may change it from the preset's).
template <Preset P>
constexpr MemoryEstimate estimate_memory(const ModelShape& m,
                                         std::string_view device_precision = device_precision_of<P>()) {
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
  e.clip_sums_device = 8.0 * (e.lora_params + e.projector_params);

  e.tokens_per_sample = m.tokens_per_sample(P::num_frames);
  const double tokens = static_cast<double>(e.tokens_per_sample) * P::batch_size;
  const long act_bytes = (P::fp16 || P::bf16) ? 2 : 4;
  model::DecoderStepOptions step;
  step.checkpoint_layers = P::gradient_checkpointing;
  const double logits = tokens * static_cast<double>(kStreamedLogitsChunk) * 4.0;
  e.activations = static_cast<double>(model::step_bytes_at_loss(decoder_memory_shape<P>(m, act_bytes), step)) + logits;
  e.activations_fp32 = static_cast<double>(model::step_bytes_at_loss(decoder_memory_shape<P>(m, 4), step)) + logits;
  model::DecoderStepOptions device = step;
  device.pack_saved = device_precision == "bf16";
  e.activations_device = static_cast<double>(model::step_bytes_at_loss(decoder_memory_shape<P>(m, 4), device)) + logits;
  const double visual_tokens =
      static_cast<double>(P::num_frames) * static_cast<double>(m.tokens_per_frame) * static_cast<double>(P::batch_size);
  e.projector_activations_device = visual_tokens * static_cast<double>(m.vision_hidden + 3 * m.hidden) * 4.0;

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
