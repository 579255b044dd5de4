#pragma once
// CPU reference of one decoder block for tests/cuda/test_decoder_layer.cu, compiled by the host compiler
// (decoder_layer.cpp): model::decoder_layer_*_steps over model::CpuLayerExecutor — what model::Decoder runs —
// behind a std::vector interface (no fmt, no Eigen in the .cu file).

#include <cstdint>
#include <vector>

#include "reference.hpp"

namespace ref {

// One decoder block (model::decoder_layer_*_steps over model::CpuLayerExecutor), LoRA rank 16 alpha 32.
struct DecoderLayerCase {
  long batch = 1, seq_len = 0, hidden = 0, intermediate = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  bool qwen3 = false;    // per-head q_norm / k_norm
  bool nf4 = false;      // frozen bases NF4 (blocksize 64, double-quantized), else dense fp32
  double dropout = 0.0;  // LoRA dropout
  std::uint64_t seed = 1;
  std::vector<int> lora_slots;  // slots with LoRA: 0 q, 1 k, 2 v, 3 o, 4 gate, 5 up, 6 down
  std::vector<int> key_mask;    // [batch·seq_len] or empty
};
struct DecoderLayer {
  // weights and inputs (what the device side uploads)
  std::vector<float> norm1, norm2, q_norm, k_norm;
  std::vector<float> w[7];        // dense [out, in] as given to the slot (quantized by it when nf4)
  Quantized q[7];                 // nf4: the bases as NF4Weight stores them
  std::vector<float> a[7], b[7];  // LoRA adapters (empty for a frozen slot)
  float scaling = 0;
  long in[7] = {}, out[7] = {};
  std::vector<float> x, d_out;  // block input [tokens, hidden], d loss / d output
  // results
  std::vector<float> y, dx;                             // block output, d loss / d input
  std::vector<float> q_rot, k_rot, v, h_mid, gate, up;  // what each forward step produced
  std::vector<float> grad_a[7], grad_b[7];
};
// One training forward + backward of the block on the CPU.
DecoderLayer decoder_layer(const DecoderLayerCase& c);

}  // namespace ref
