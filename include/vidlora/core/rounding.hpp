#pragma once
// Single correctly rounded additions and multiplications that a compiler may not contract into a fused
// multiply-add. nvcc contracts `a*b + c` into one FMA by default (one rounding); the CPU reference, built
// for baseline x86-64 (no FMA instructions), rounds twice. Host-device formulas whose GPU result must equal
// the CPU's bit for bit spell such expressions with these (on the host they are the plain operators).

#include <type_traits>

#include <vidlora/core/portability.hpp>

namespace vidlora {

template <class T>
VIDLORA_HOST_DEVICE inline T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fmul_rn(a, b);
  else if constexpr (std::is_same_v<T, double>)
    return __dmul_rn(a, b);
  else
    return a * b;
#else
  return a * b;
#endif
}

template <class T>
VIDLORA_HOST_DEVICE inline T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fadd_rn(a, b);
  else if constexpr (std::is_same_v<T, double>)
    return __dadd_rn(a, b);
  else
    return a + b;
#else
  return a + b;
#endif
}

// a - b, rounded once (negation is exact).
template <class T>
VIDLORA_HOST_DEVICE inline T sub_rn(T a, T b) {
  return add_rn(a, -b);
}

}  // namespace vidlora
