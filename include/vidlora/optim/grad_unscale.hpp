#pragma once
// Unscaling fp16-trained gradients: torch's _amp_foreach_non_finite_check_and_unscale_, one element at a
// time. unscale_element is what the CUDA kernel (optim/cuda/grad_unscale.cuh) runs per element;
// unscale_range is the CPU loop and the kernel's reference. fmt-free, so nvcc compiles it.
//
// Contract (torch's): found_inf looks at the gradient *before* it is multiplied, so a finite scaled
// gradient that overflows when the scale is below 1 is not reported; a non-finite gradient is multiplied
// anyway (inf stays inf, NaN stays NaN); inv_scale == 1 leaves every value untouched.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <vidlora/core/portability.hpp>

namespace vidlora::optim {

// Inf or NaN: the exponent bits are all ones (no reliance on isfinite under fast-math flags).
VIDLORA_HOST_DEVICE inline bool is_nonfinite(float x) {
#if defined(__CUDA_ARCH__)
  const unsigned bits = __float_as_uint(x);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
#endif
  return (bits & 0x7f800000u) == 0x7f800000u;
}

// g ← g · inv_scale (untouched when inv_scale == 1); true when g was Inf or NaN before.
VIDLORA_HOST_DEVICE inline bool unscale_element(float& g, float inv_scale) {
  const bool bad = is_nonfinite(g);
  if (inv_scale != 1.0f) g = g * inv_scale;
  return bad;
}

// The reciprocal torch takes: in double, then rounded to float (float division can be inexact under some
// compile options, so torch does not divide in float).
inline float reciprocal_scale(float scale) { return static_cast<float>(1.0 / static_cast<double>(scale)); }

// Every element of g[0, n) unscaled; true when any was Inf or NaN.
inline bool unscale_range(float* g, std::size_t n, float inv_scale) {
  bool found = false;
  for (std::size_t i = 0; i < n; ++i) found |= unscale_element(g[i], inv_scale);
  return found;
}

}  // namespace vidlora::optim
