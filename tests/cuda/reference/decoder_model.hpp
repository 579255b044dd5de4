#pragma once
// CPU reference of a whole decoder training step for tests/cuda/test_decoder_model.cu, compiled by the host
// compiler (decoder_model.cpp): a tiny model::Decoder (random weights, LoRA on every slot with random A and B),
// Decoder::loss_and_backward (the streamed lm_head_cross_entropy) and a few steps of clip_grad_norm +
// optim::adamw_update_range, with the weights exported as the device model uploads them.

#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/model/decoder_host_weights.hpp>

namespace vidlora::model {
struct DecoderConfig;
}

namespace ref {

struct DecoderModelCase {
  int layers = 2, hidden = 64, intermediate = 96, heads = 4, kv_heads = 2, vocab = 50;
  bool qwen3 = false;  // per-head q/k norms
  bool qwen2 = false;  // q/k/v biases
  bool nf4 = false;    // NF4 (double-quantized, blocks of 64) frozen linears
  long batch = 2, seq_len = 7;
  long pad_last = 0;       // right padding of the last sequence (attention mask 0, labels -100)
  int ignored_labels = 0;  // labels set to ignore_index inside the first sequence (a prompt)
  double label_smoothing = 0.0;
  long chunk = 16;  // vocabulary chunk of the streamed loss
  double dropout = 0.0;
  std::uint64_t seed = 1;
  int steps = 1;  // forward + backward + clip + AdamW steps (the first one's gradients are reported)
  double lr = 1e-2, weight_decay = 0.01, max_grad_norm = 1.0;
  // RoPE: "default", or a scaled type with parameters that change every rotation pair's frequency or part of them at
  // these lengths (ref::scaled_rope): "linear", "dynamic" (past max_position_embeddings from the first step),
  // "yarn", "llama3"
  std::string rope_type = "default";
  // the slots with LoRA (the others run the frozen base alone)
  std::vector<std::string> target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
};

struct DecoderModelRun {
  vidlora::model::DecoderHostWeights weights;  // as before the first step
  std::vector<float> embeds;                   // [batch·seq_len, hidden]
  std::vector<int> labels, attention_mask;
  std::vector<double> losses;  // one per step
  long valid_tokens = 0;
  std::vector<std::vector<float>> grads;  // first step, every LoRA factor (DecoderModel::lora_tensors order)
  std::vector<float> grad_embeds;         // first step
};

DecoderModelRun decoder_model(const DecoderModelCase& c);

// Sets `config`'s RoPE to `rope_type` (DecoderModelCase::rope_type) with fixed test parameters, for head_dim 16 at
// a few positions: linear ×2; dynamic ×2 past max_position_embeddings 4; yarn ×4 from 4,096 positions (pairs 0-2
// kept, 3-5 mixed, 6-7 ÷ 4; cos and sin × 1.139); llama3 ×8 from 64 positions (pair 0 kept, pairs 1-2 smoothed, the rest ÷ 8).
void scaled_rope(vidlora::model::DecoderConfig& config, const std::string& rope_type);

}  // namespace ref
