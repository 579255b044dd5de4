#pragma once
// Model shapes the memory estimate and presets refer to (values from the models' HF config.json files).

#include <string_view>

namespace vidlora::presets {

struct ModelShape {
  std::string_view name;
  long hidden = 0;        // hidden_size (D)
  long intermediate = 0;  // intermediate_size (I)
  long layers = 0;        // num_hidden_layers
  long heads = 0;         // num_attention_heads
  long kv_heads = 0;      // num_key_value_heads
  long head_dim = 0;      // head_dim
  long vocab = 0;         // vocab_size
  bool tied_embeddings = false;
  bool qk_norm = false;         // Qwen3's per-head q_norm / k_norm: the step keeps q, k before them and their 1/rms
  long vision_hidden = 1024;    // projector input: CLIP ViT-L/14-336 hidden size
  long tokens_per_frame = 144;  // after LLaVA-NeXT-Video's 2x2 pooling of 576 patch tokens
  long text_tokens = 128;       // prompt + caption tokens per sample

  // The seven LoRA-targetable linears of one decoder layer, as (in, out).
  constexpr long linear_in(std::string_view module) const {
    if (module == "o_proj") return heads * head_dim;
    if (module == "down_proj") return intermediate;
    return hidden;
  }
  constexpr long linear_out(std::string_view module) const {
    if (module == "q_proj") return heads * head_dim;
    if (module == "k_proj" || module == "v_proj") return kv_heads * head_dim;
    if (module == "gate_proj" || module == "up_proj") return intermediate;
    if (module == "o_proj" || module == "down_proj") return hidden;
    return 0;  // unknown module name: contributes nothing (the estimate reports it)
  }
  constexpr long layer_linear_params() const {
    long sum = 0;
    for (std::string_view m : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
      sum += linear_in(m) * linear_out(m);
    return sum;
  }
  constexpr long embedding_params() const { return vocab * hidden * (tied_embeddings ? 1 : 2); }
  constexpr long projector_params() const {  // Mlp2xGelu: linear_1 [D, Dv] + bias, linear_2 [D, D] + bias
    return vision_hidden * hidden + hidden + hidden * hidden + hidden;
  }
  constexpr long tokens_per_sample(int num_frames) const { return num_frames * tokens_per_frame + text_tokens; }
};

namespace models {
// LLaVA-NeXT-Video-7B: Vicuna-7B decoder + CLIP ViT-L/14-336.
inline constexpr ModelShape LlavaNextVideo7B{.name = "LLaVA-NeXT-Video-7B",
                                             .hidden = 4096,
                                             .intermediate = 11008,
                                             .layers = 32,
                                             .heads = 32,
                                             .kv_heads = 32,
                                             .head_dim = 128,
                                             .vocab = 32064};
// Qwen3-4B decoder (tied embeddings) with a CLIP ViT-L/14-336 projector.
inline constexpr ModelShape Qwen3_4B{.name = "Qwen3-4B",
                                     .hidden = 2560,
                                     .intermediate = 9728,
                                     .layers = 36,
                                     .heads = 32,
                                     .kv_heads = 8,
                                     .head_dim = 128,
                                     .vocab = 151936,
                                     .tied_embeddings = true,
                                     .qk_norm = true};
// Qwen3-8B decoder with a CLIP ViT-L/14-336 projector.
inline constexpr ModelShape Qwen3_8B{.name = "Qwen3-8B",
                                     .hidden = 4096,
                                     .intermediate = 12288,
                                     .layers = 36,
                                     .heads = 32,
                                     .kv_heads = 8,
                                     .head_dim = 128,
                                     .vocab = 151936,
                                     .qk_norm = true};
// Qwen3-1.7B decoder (tied embeddings) with a CLIP ViT-L/14-336 projector.
inline constexpr ModelShape Qwen3_1_7B{.name = "Qwen3-1.7B",
                                       .hidden = 2048,
                                       .intermediate = 6144,
                                       .layers = 28,
                                       .heads = 16,
                                       .kv_heads = 8,
                                       .head_dim = 128,
                                       .vocab = 151936,
                                       .tied_embeddings = true,
                                       .qk_norm = true};
// The demo captioner trained by the Cpu preset on this machine's bundled clips.
inline constexpr ModelShape Demo{.name = "vidlora-demo",
                                 .hidden = 256,
                                 .intermediate = 688,
                                 .layers = 4,
                                 .heads = 4,
                                 .kv_heads = 2,
                                 .head_dim = 64,
                                 .vocab = 2000,
                                 .tied_embeddings = true,
                                 .vision_hidden = 192,
                                 .tokens_per_frame = 16,
                                 .text_tokens = 48};
}  // namespace models

}  // namespace vidlora::presets
