#pragma once
// CPU references for the CUDA tests, compiled by the host compiler (reference.cpp): the vidlora CPU
// policies behind a std::vector interface, so the .cu test files never include fmt (which nvcc 13 rejects
// in C++20) or the policies' Eigen code.

#include <cstdint>
#include <vector>

#include <vidlora/optim/adamw_update.hpp>

namespace ref {

struct Quantized {
  std::vector<std::uint8_t> packed, qabsmax;
  std::vector<float> absmax, nested_absmax;
  float absmax_offset = 0.0f;
  std::vector<float> dequantized;
};
// quant::Quantizer<NF4 or FP4, blocksize 64 or 128>.
Quantized quantize(bool nf4, const std::vector<float>& values, int blocksize, bool double_quant);

// optim::adamw_update_range.
void adamw(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v,
           const vidlora::optim::AdamWStepParams& s);

// optim::clip_grad_norm over the tensors; scales them in place; returns the norm.
double clip_grad_norm(std::vector<std::vector<float>>& grads, double max_norm);

struct CrossEntropy {
  double loss = 0;
  std::vector<float> grad;
};
// loss::cross_entropy (mean over valid tokens, ignore_index -100).
CrossEntropy cross_entropy(const std::vector<float>& logits, long rows, long vocab, const std::vector<int>& targets,
                           double label_smoothing);

// model::rms_norm / rms_norm_backward.
void rms_norm(const std::vector<float>& x, const std::vector<float>& w, long rows, long n, double eps,
              std::vector<float>& y, std::vector<float>& inv_rms);
void rms_norm_backward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& inv_rms,
                       const std::vector<float>& dy, long rows, long n, std::vector<float>& dx);

// model::RotaryTable::apply in place.
void rope(std::vector<float>& x, long tokens, long heads, int head_dim, const std::vector<long>& positions,
          bool inverse, double theta);

// model::attention_forward / attention_backward (dq, dk, dv returned, zero-initialised).
void attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, long tq, long tk,
               long q_heads, long kv_heads, long head_dim, long q_offset, const std::vector<int>& key_mask,
               const std::vector<float>& d_out, std::vector<float>& out, std::vector<float>& dq, std::vector<float>& dk,
               std::vector<float>& dv);

struct Lora {
  std::vector<float> a, b;  // the adapters used ([16, in], [out, 16])
  std::vector<float> y, dx, grad_a, grad_b;
  float scaling = 0;
  std::vector<float> dense_w;  // the base actually multiplied (dequantized for NF4)
  Quantized q;                 // NF4 base (double-quantized, blocksize 64)
};
// lora::LoraLinear<16, 32, DenseWeight or quant::NF4Weight>, one training forward + backward.
Lora lora(bool nf4, long tokens, long in, long out, double dropout, std::uint64_t seed, std::uint32_t layer,
          const std::vector<float>& w, const std::vector<float>& bias, const std::vector<float>& x,
          const std::vector<float>& dy);

}  // namespace ref
