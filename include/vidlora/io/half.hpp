#pragma once
// bfloat16 and IEEE binary16 (fp16) <-> float32, as bit patterns, matching PyTorch's CPU casts
// (`.to(torch.bfloat16)`, `.half()`): round to nearest, ties to even; overflow to ±inf; subnormals
// kept (no flush to zero); NaNs as torch's (x86 F16C / AVX-512) casts produce them: float -> bf16
// gives 0xFFFF, float <-> fp16 keeps sign and top payload bits and sets the quiet bit.
// Checked bit for bit against torch in tests/fixtures/io/dtype_conversion.json.

#include <bit>
#include <cstdint>

#include <vidlora/core/portability.hpp>

namespace vidlora::io {

namespace detail {
// The device pass uses the intrinsics; nvcc's host pass (a .cu that includes this) takes std::bit_cast.
VIDLORA_HOST_DEVICE inline std::uint32_t float_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  return std::bit_cast<std::uint32_t>(value);
#endif
}
VIDLORA_HOST_DEVICE inline float bits_float(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  return std::bit_cast<float>(bits);
#endif
}
}  // namespace detail

// bf16 is the top half of a float32: widening is exact.
VIDLORA_HOST_DEVICE inline float bf16_bits_to_float(std::uint16_t bits) {
  return detail::bits_float(static_cast<std::uint32_t>(bits) << 16);
}

// float32 -> bf16 bits, round to nearest even. Every NaN becomes 0xFFFF, as torch's CPU cast does.
VIDLORA_HOST_DEVICE inline std::uint16_t float_to_bf16_bits(float value) {
  const std::uint32_t u = detail::float_bits(value);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFFu;
  const std::uint32_t rounding_bias = 0x7FFFu + ((u >> 16) & 1u);  // ties go to the even bf16
  return static_cast<std::uint16_t>((u + rounding_bias) >> 16);    // carries into the exponent (-> inf) are right
}

// fp16 bits -> float32 (exact: every binary16 value, subnormals included, is a float32).
VIDLORA_HOST_DEVICE inline float fp16_bits_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  std::uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0x1Fu)  // inf, or NaN made quiet (as vcvtph2ps does)
    return detail::bits_float(sign | (mantissa ? 0x7FC00000u : 0x7F800000u) | (mantissa << 13));
  if (exponent != 0) return detail::bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0) return detail::bits_float(sign);  // ±0
  // Subnormal: mantissa · 2^-24; normalise it into a float32.
  std::uint32_t e = 113;  // float exponent field of 2^-14
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return detail::bits_float(sign | (e << 23) | ((mantissa & 0x3FFu) << 13));
}

// float32 -> fp16 bits, round to nearest even; |x| >= 65520 -> inf; NaN -> quiet NaN with the sign and
// the top 9 payload bits kept (as vcvtps2ph does).
VIDLORA_HOST_DEVICE inline std::uint16_t float_to_fp16_bits(float value) {
  const std::uint32_t u = detail::float_bits(value);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t magnitude = u & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  const std::uint32_t exponent = magnitude >> 23;
  if (exponent >= 143) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65536 (and inf)
  if (exponent >= 113) {                                                   // normal fp16 range
    std::uint32_t h = ((exponent - 112u) << 10) | ((magnitude >> 13) & 0x3FFu);
    const std::uint32_t rest = magnitude & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry to the next binade or inf
    return static_cast<std::uint16_t>(sign | h);
  }
  // Subnormal fp16 (or zero): the value in units of 2^-24 is m · 2^(exponent - 126).
  if (exponent < 102) return sign;  // below 2^-25: rounds to ±0 (2^-25 itself is a tie to the even 0)
  const std::uint32_t m = (magnitude & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - exponent;  // 14 .. 24
  std::uint32_t h = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (h & 1u))) ++h;  // 0x3FF + 1 = 0x400 is the smallest normal: right
  return static_cast<std::uint16_t>(sign | h);
}

// Round-trips through the narrow format: the float a value becomes when stored as bf16 / fp16.
VIDLORA_HOST_DEVICE inline float round_to_bf16(float value) { return bf16_bits_to_float(float_to_bf16_bits(value)); }
VIDLORA_HOST_DEVICE inline float round_to_fp16(float value) { return fp16_bits_to_float(float_to_fp16_bits(value)); }

}  // namespace vidlora::io
