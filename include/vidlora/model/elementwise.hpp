#pragma once
// Element-wise pieces of the decoder and the vision side, written once as VIDLORA_HOST_DEVICE
// functions so a CUDA kernel runs the same math the CPU reference does.

#include <cmath>
#include <cstdint>

#include <vidlora/core/portability.hpp>
#include <vidlora/core/rounding.hpp>

namespace vidlora::model {

// SiLU (swish): x·σ(x), the gate activation of the SwiGLU MLP.
template <class T>
VIDLORA_HOST_DEVICE inline T silu(T x) {
  return x / (T(1) + std::exp(-x));
}

// d silu / dx = σ(x)·(1 + x·(1 - σ(x))).
template <class T>
VIDLORA_HOST_DEVICE inline T silu_grad(T x) {
  const T s = T(1) / (T(1) + std::exp(-x));
  return s * (T(1) + x * (T(1) - s));
}

// GELU with the exact erf form (torch's default "gelu", LLaVA's projector): x·Φ(x).
template <class T>
VIDLORA_HOST_DEVICE inline T gelu_erf(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
}

// d gelu / dx = Φ(x) + x·φ(x).
template <class T>
VIDLORA_HOST_DEVICE inline T gelu_erf_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
  const T pdf = T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
  return cdf + x * pdf;
}

// CLIP's quick_gelu: x·σ(1.702·x).
template <class T>
VIDLORA_HOST_DEVICE inline T quick_gelu(T x) {
  return x / (T(1) + std::exp(T(-1.702) * x));
}

// 1 / √(mean(x²) + eps) from the sum of squares of n values (RMSNorm's scale).
VIDLORA_HOST_DEVICE inline double rms_inverse(double sum_squares, int n, double eps) {
  return 1.0 / std::sqrt(sum_squares / n + eps);
}

// RMSNorm backward for one element: with y = w·x·r, r = (mean(x²)+eps)^-½ and
// c = mean(dy·w·x), dx = r·(dy·w - x·r²·c).
template <class T>
VIDLORA_HOST_DEVICE inline T rms_norm_input_grad(T dy_times_w, T x, T r, T c) {
  return r * (dy_times_w - x * r * r * c);
}

// One rotate-half RoPE pair (HF layout: element i pairs with i + head_dim/2).
// Forward rotates (a, b) = (x[i], x[i+half]) by +θ; backward (inverse) by -θ. Every product and sum is
// rounded on its own (core/rounding.hpp), so the CUDA kernel, which nvcc would otherwise fuse into FMAs,
// gives the CPU's bits.
template <class T>
VIDLORA_HOST_DEVICE inline void rope_rotate(T& a, T& b, T cos_theta, T sin_theta) {
  const T a0 = a, b0 = b;
  a = sub_rn(mul_rn(a0, cos_theta), mul_rn(b0, sin_theta));
  b = add_rn(mul_rn(b0, cos_theta), mul_rn(a0, sin_theta));
}
template <class T>
VIDLORA_HOST_DEVICE inline void rope_rotate_inverse(T& a, T& b, T cos_theta, T sin_theta) {
  const T a0 = a, b0 = b;
  a = add_rn(mul_rn(a0, cos_theta), mul_rn(b0, sin_theta));
  b = sub_rn(mul_rn(b0, cos_theta), mul_rn(a0, sin_theta));
}

// RoPE's angle table, formed in float32 as transformers does: model::rope_table_row builds the rows of
// model::RotaryTable's and the CUDA backend's cos / sin tables with rope_cos_sin, and rope_inv_freq gives the default
// frequencies (host code: the tables are built once).
// inv_freq of pair i: 1 / θ^(2i/d), the exponent and the power each rounded to float.
inline float rope_inv_freq(int pair, int head_dim, double theta) {
  const float exponent = static_cast<float>(2 * pair) / static_cast<float>(head_dim);
  const float base_pow = static_cast<float>(std::pow(theta, static_cast<double>(exponent)));
  return 1.0f / base_pow;
}

// cos and sin of the angle position · inv_freq (a float product), each evaluated in double and rounded
// to float.
struct RopeCosSin {
  float cos;
  float sin;
};
inline RopeCosSin rope_cos_sin(std::int64_t position, float inv_freq) {
  const float angle = static_cast<float>(position) * inv_freq;
  return {static_cast<float>(std::cos(static_cast<double>(angle))),
          static_cast<float>(std::sin(static_cast<double>(angle)))};
}

}  // namespace vidlora::model
