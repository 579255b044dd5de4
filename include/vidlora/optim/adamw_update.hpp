#pragma once
// The element-wise AdamW update: adamw_update is what a CUDA kernel runs per element;
// adamw_update_range is the CPU loop, the same operations vectorised with Eigen packets.

#include <Eigen/Core>

#include <cmath>
#include <cstddef>

#include <vidlora/core/parallel.hpp>
#include <vidlora/core/portability.hpp>
#include <vidlora/core/rounding.hpp>

#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace vidlora::optim {

// One tensor's scalars for one step, computed on the host in double exactly as PyTorch's
// _single_tensor_adam does and then rounded to float, as PyTorch rounds a Python scalar applied to a
// float32 tensor. Passed by value to kernels (a Params struct, not positional scalars).
struct AdamWStepParams {
  float decay_factor;  // 1 - lr · weight_decay
  float beta1_weight;  // 1 - beta1 (lerp weight of m toward g)
  float beta2;
  float one_minus_beta2;
  float bias_correction2_sqrt;  // (1 - beta2^t)^0.5
  float eps;
  float neg_step_size;  // -lr / (1 - beta1^t)

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
  // ATen's lerp takes start + w·(end - start) for |w| < 0.5, else end + (w - 1)·(end - start).
  VIDLORA_HOST_DEVICE bool small_lerp_weight() const { return beta1_weight < 0.5f && beta1_weight > -0.5f; }
};

// start + weight · (end - start) in ATen's two forms. ATen's vectorised CPU kernel fuses the
// multiply-add; vidlora rounds twice (an ulp apart at most) so that the CPU loop below, which has no
// portable fused multiply-add, agrees bit for bit with this function. The products and sums are spelled with
// core/rounding.hpp's single roundings, so a CUDA kernel keeps that agreement whatever nvcc's --fmad (the
// programs are built with its default, which would contract `a*b + c` into one rounding).
VIDLORA_HOST_DEVICE inline float lerp(float start, float end, float weight) {
  const float diff = sub_rn(end, start);
  return (weight < 0.5f && weight > -0.5f) ? add_rn(start, mul_rn(weight, diff))
                                           : add_rn(end, mul_rn(sub_rn(weight, 1.0f), diff));
}

// One element of torch.optim.AdamW (amsgrad=False), in PyTorch's order:
//   p *= 1 - lr·wd;  m = lerp(m, g, 1-β1);  v = v·β2 + ((1-β2)·g)·g;
//   p += ((-lr/bc1) · m) / (sqrt(v)/sqrt(bc2) + eps)
// (Each product and sum rounded on its own, as the CPU loop rounds them: see lerp.)
VIDLORA_HOST_DEVICE inline void adamw_update(float& p, float g, float& m, float& v, const AdamWStepParams& s) {
  p = mul_rn(p, s.decay_factor);
  m = lerp(m, g, s.beta1_weight);
  v = add_rn(mul_rn(v, s.beta2), mul_rn(mul_rn(s.one_minus_beta2, g), g));
  const float denom = add_rn(std::sqrt(v) / s.bias_correction2_sqrt, s.eps);
  p = add_rn(p, mul_rn(s.neg_step_size, m) / denom);
}

namespace detail {
// out = sqrt(in), correctly rounded and vectorised: Eigen's packet sqrt is a 1-2 bit approximation under
// its default EIGEN_FAST_MATH, and GCC will not vectorise std::sqrt under errno semantics.
inline void sqrt_exact(const float* in, float* out, std::size_t n) {
  std::size_t i = 0;
#if defined(__AVX__)
  for (; n - i >= 8; i += 8) _mm256_storeu_ps(out + i, _mm256_sqrt_ps(_mm256_loadu_ps(in + i)));
#endif
#if defined(__SSE2__) || defined(_M_X64)
  for (; n - i >= 4; i += 4) _mm_storeu_ps(out + i, _mm_sqrt_ps(_mm_loadu_ps(in + i)));
#endif
  for (; i < n; ++i) out[i] = std::sqrt(in[i]);
}
}  // namespace detail

// adamw_update over n contiguous elements on the CPU, vectorised with Eigen arrays (the scalar loop
// does not vectorise: 7x slower at 50M parameters). Every operation is the one above, in the same
// order and correctly rounded, so each element equals adamw_update's result.
inline void adamw_update_range(float* p, const float* g, float* m, float* v, std::ptrdiff_t n,
                               const AdamWStepParams& s) {
  constexpr std::ptrdiff_t kBlock = 4096;  // 4 arrays × 16 KiB: one block's passes stay in L1/L2
  const std::ptrdiff_t blocks = (n + kBlock - 1) / kBlock;
  const bool small = s.small_lerp_weight();
  parallel_for(std::ptrdiff_t{0}, blocks, n * 10, [&](std::ptrdiff_t b) {  // ~10 operations per element
    const std::ptrdiff_t begin = b * kBlock;
    const std::ptrdiff_t len = (n - begin < kBlock) ? n - begin : kBlock;
    Eigen::Map<Eigen::ArrayXf> P(p + begin, len), M(m + begin, len), V(v + begin, len);
    const Eigen::Map<const Eigen::ArrayXf> G(g + begin, len);
    P = P * s.decay_factor;
    if (small)
      M = M + s.beta1_weight * (G - M);
    else
      M = G + (s.beta1_weight - 1.0f) * (G - M);
    V = V * s.beta2 + (s.one_minus_beta2 * G) * G;
    alignas(64) float root[kBlock];
    detail::sqrt_exact(V.data(), root, static_cast<std::size_t>(len));
    const Eigen::Map<const Eigen::ArrayXf> R(root, len);
    P = P + (s.neg_step_size * M) / (R / s.bias_correction2_sqrt + s.eps);
  });
}

}  // namespace vidlora::optim
