#pragma once
// LoRA model-FLOPs utilisation: the share of the GPU's dense 16-bit tensor peak that a LoRA training step's useful
// arithmetic reaches, as the project's GPU goals count it (issue 14; the same formula for HF + PEFT and Unsloth):
//
//   MFU = tokens/s x (4·N + 6·L·d·T) / peak
//
// N: the frozen decoder's matmul weights (every layer's q, k, v, o, gate, up and down, and the LM head; not the
// embedding table, which is a lookup, nor the LoRA factors, which are well under 1% of N). A frozen weight costs 2
// FLOPs per token forward and 2 backward (the input gradient; no weight gradient), hence 4·N.
// 6·L·d·T: causal attention over T positions with d = heads x head_dim (QKᵀ and AV take 2·d·T FLOPs each per token
// and layer over the full square: 2·d·T together when causal, and twice that backward).
// tokens/s counts every sequence position the step ran (prompt, video and caption tokens, not padding), so MFU does
// not depend on how many of them were supervised. The recomputation of gradient checkpointing is not useful work
// and is not counted, as in PaLM's definition.

#include <string_view>

#include <vidlora/model/config.hpp>

namespace vidlora::train {

// N: the decoder's frozen matmul weights per token (LM head included, embeddings excluded).
inline double decoder_matmul_parameters(const model::DecoderConfig& c) {
  const double h = c.hidden_size, q = c.q_features(), kv = c.kv_features(), i = c.intermediate_size;
  const double per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
  return per_layer * c.num_hidden_layers + static_cast<double>(c.vocab_size) * h;
}

// 4·N + 6·L·d·T: a LoRA training step's FLOPs per token at sequence length T, from the counts themselves
// (N: matmul_params, L: layers, d: attention_width = heads x head_dim; e.g. from a presets::ModelShape) ...
inline double lora_training_flops_per_token(double matmul_params, long layers, long attention_width, double seq_len) {
  return 4.0 * matmul_params + 6.0 * static_cast<double>(layers) * static_cast<double>(attention_width) * seq_len;
}
// ... or from a decoder's config.
inline double lora_training_flops_per_token(const model::DecoderConfig& c, double seq_len) {
  return lora_training_flops_per_token(decoder_matmul_parameters(c), c.num_hidden_layers, c.q_features(), seq_len);
}

// The share of `peak_flops` (FLOP/s) that `useful_flops` done in `seconds` reach (a step of sequences of different
// lengths: the sum of n · lora_training_flops_per_token(n) over them); 0 when the peak or the time is not positive.
inline double lora_mfu(double useful_flops, double seconds, double peak_flops) {
  return peak_flops > 0.0 && seconds > 0.0 ? useful_flops / seconds / peak_flops : 0.0;
}

// The dense 16-bit tensor peak (TFLOP/s) of the GPU a run is on, from its name and compute capability as
// cudaGetDeviceProperties gives them (the vendor's datasheet numbers, without sparsity: bf16 where the GPU has it,
// else fp16): the MFU denominator for the card that ran, which is not the preset's card when a T4 preset runs on an
// H100. 0 for a GPU not in the table (MFU is then not reported).
inline double dense_16bit_peak_tflops(std::string_view name, int major, int minor) {
  const auto has = [name](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (major == 9 && minor == 0) {
    if (has("H100 NVL")) return 835.0;
    if (has("H100 PCIe")) return 756.0;
    if (has("H100") || has("H200")) return 989.0;  // SXM ("H100 80GB HBM3"), GH200 / H200; the higher peak if unsure
    return 0.0;
  }
  if (major == 8 && minor == 0 && has("A100")) return 312.0;
  if (major == 8 && minor == 9 && has("L4") && !has("L40")) return 121.0;
  if (major == 7 && minor == 5 && has("T4")) return 65.0;
  return 0.0;
}

}  // namespace vidlora::train
