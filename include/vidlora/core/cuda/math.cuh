#pragma once
// Correctly rounded single operations that the compiler may not contract into a fused multiply-add.
// nvcc contracts a*b + c into one FMA by default; the CPU reference (g++ -std=c++20, no -march) rounds twice.
// Kernels that must agree bit for bit with the CPU write such expressions with these.

#include <vidlora/core/portability.hpp>

namespace vidlora::cuda {

VIDLORA_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
VIDLORA_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace vidlora::cuda
