#pragma once
// The element-wise AdamW update, shared by the CPU loop and the CUDA kernel.

#include <cmath>

#include <vidlora/core/portability.hpp>

#if defined(__FMA__) || defined(__CUDA_ARCH__)
#define VIDLORA_HAS_FMA 1  // fused multiply-add is an instruction here: use it where PyTorch's kernels do
#else
#define VIDLORA_HAS_FMA 0
#endif

namespace vidlora::optim {

// One tensor's scalars for one step, computed on the host in double exactly as PyTorch's
// _single_tensor_adam does and then rounded to float, as PyTorch rounds a Python scalar applied to a
// float32 tensor. Passed by value to kernels (a Params struct, not positional scalars).
struct AdamWStepParams {
  float decay_factor;      // 1 - lr · weight_decay
  float beta1_weight;      // 1 - beta1 (lerp weight of m toward g)
  float beta2;
  float one_minus_beta2;
  float bias_correction2_sqrt;  // (1 - beta2^t)^0.5
  float eps;
  float neg_step_size;     // -lr / (1 - beta1^t)

  static AdamWStepParams make(double lr, double weight_decay, double beta1, double beta2, double eps, long step) {
    const double t = static_cast<double>(step);
    const double bias_correction1 = 1.0 - std::pow(beta1, t);
    const double bias_correction2 = 1.0 - std::pow(beta2, t);
    return {static_cast<float>(1.0 - lr * weight_decay),
            static_cast<float>(1.0 - beta1),
            static_cast<float>(beta2),
            static_cast<float>(1.0 - beta2),
            static_cast<float>(std::pow(bias_correction2, 0.5)),
            static_cast<float>(eps),
            static_cast<float>(-(lr / bias_correction1))};
  }
};

VIDLORA_HOST_DEVICE VIDLORA_FORCE_INLINE float fused_multiply_add(float a, float b, float c) {
#if VIDLORA_HAS_FMA
  return std::fma(a, b, c);
#else
  return a * b + c;  // two roundings; within an ulp of the fused result
#endif
}

// start + weight · (end - start), as ATen's vectorised lerp (fused; the small-weight form for |w| < 0.5).
VIDLORA_HOST_DEVICE VIDLORA_FORCE_INLINE float lerp(float start, float end, float weight) {
  const float diff = end - start;
  return (weight < 0.5f && weight > -0.5f) ? fused_multiply_add(weight, diff, start)
                                           : fused_multiply_add(weight - 1.0f, diff, end);
}

// One element of torch.optim.AdamW (amsgrad=False), in PyTorch's order:
//   p *= 1 - lr·wd;  m = lerp(m, g, 1-β1);  v = v·β2 + (1-β2)·g·g;
//   p += (-lr/bc1) · m / (sqrt(v)/sqrt(bc2) + eps)
VIDLORA_HOST_DEVICE VIDLORA_FORCE_INLINE void adamw_update(float& p, float g, float& m, float& v,
                                                          const AdamWStepParams& s) {
  p = p * s.decay_factor;
  m = lerp(m, g, s.beta1_weight);
  v = fused_multiply_add(s.one_minus_beta2 * g, g, v * s.beta2);
  const float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p = p + (s.neg_step_size * m) / denom;
}

}  // namespace vidlora::optim
