#pragma once
// 4-bit code books (NF4, FP4) and the element-wise encode/decode every quantizer path shares.

#include <array>
#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include <vidlora/core/portability.hpp>

namespace vidlora::quant {

// A 4-bit format: a name and the 16 values its codes decode to, in [-1, 1], indexed by code.
template <class F>
concept QuantFormat = requires {
  { F::name } -> std::convertible_to<std::string_view>;
  requires std::same_as<std::remove_cvref_t<decltype(F::code)>, std::array<float, 16>>;
};

// NormalFloat4 (QLoRA): quantiles of N(0, 1) normalised to [-1, 1], sorted, with an exact zero.
// The values are bitsandbytes' `get_4bit_type("nf4")`.
struct NF4 {
  static constexpr std::string_view name = "nf4";
  static constexpr std::array<float, 16> code = {-1.0f,
                                                 -0.6961928009986877f,
                                                 -0.5250730514526367f,
                                                 -0.39491748809814453f,
                                                 -0.28444138169288635f,
                                                 -0.18477343022823334f,
                                                 -0.09105003625154495f,
                                                 0.0f,
                                                 0.07958029955625534f,
                                                 0.16093020141124725f,
                                                 0.24611230194568634f,
                                                 0.33791524171829224f,
                                                 0.44070982933044434f,
                                                 0.5626170039176941f,
                                                 0.7229568362236023f,
                                                 1.0f};
};

// FP4 as bitsandbytes defines it: sign bit, 2 exponent bits (bias 2), 1 mantissa bit, in
// bit-pattern order, divided by the largest magnitude (12) so the range is [-1, 1]. Code 8
// (sign bit, zero magnitude) decodes to +0 there, not -0.
struct FP4 {
  static constexpr std::string_view name = "fp4";
  static constexpr std::array<float, 16> code = {0.0f / 12.0f,  0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,
                                                 4.0f / 12.0f,  6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
                                                 0.0f / 12.0f,  -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
                                                 -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f};
};

static_assert(QuantFormat<NF4> && QuantFormat<FP4>);

namespace detail {

// Indices of `v` in ascending value order; a stable sort, so +0 (code 0) precedes -0 (code 8)
// in FP4, which is the order bitsandbytes' argsort produces and its rounding depends on.
template <std::size_t N>
constexpr std::array<std::uint8_t, N> stable_argsort(const std::array<float, N>& v) {
  std::array<std::uint8_t, N> order{};
  for (std::size_t i = 0; i < N; ++i) order[i] = static_cast<std::uint8_t>(i);
  for (std::size_t i = 1; i < N; ++i)
    for (std::size_t j = i; j > 0 && v[order[j]] < v[order[j - 1]]; --j) {
      const auto t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  return order;
}

}  // namespace detail

// Derived tables of a format: codes in ascending order and the float32 midpoints between them.
template <QuantFormat Format>
struct CodeBook {
  static constexpr std::array<float, 16> code = Format::code;
  static constexpr std::array<std::uint8_t, 16> sorted_order = detail::stable_argsort(code);
  static constexpr std::array<float, 15> midpoints = [] {
    std::array<float, 15> m{};
    for (std::size_t i = 0; i < 15; ++i) m[i] = (code[sorted_order[i]] + code[sorted_order[i + 1]]) / 2.0f;
    return m;
  }();
  // Both values of every packed byte: pairs[byte] = {code[byte >> 4], code[byte & 15]}.
  static constexpr std::array<std::array<float, 2>, 256> pairs = [] {
    std::array<std::array<float, 2>, 256> p{};
    for (std::size_t b = 0; b < 256; ++b) p[b] = {code[b >> 4], code[b & 15u]};
    return p;
  }();
  // The code a scaled value of exactly 0 maps to (also what pads an odd element count).
  static constexpr std::uint8_t zero_code = [] {
    int k = 0;
    for (float m : midpoints) k += (m < 0.0f);
    return sorted_order[k];
  }();
};

// Nearest code to `scaled` (already in [-1, 1]): the number of midpoints strictly below it picks
// the bucket, so a value exactly on a midpoint goes to the lower code.
template <QuantFormat Format>
VIDLORA_HOST_DEVICE constexpr std::uint8_t encode_4bit(float scaled) {
#if defined(__CUDA_ARCH__)  // device code cannot read the host tables; only nvcc's device pass of a CUDA TU gets here
  (void)scaled;
  __trap();  // no kernel quantizes (quant/cuda takes its tables through Params)
  return 0;
#else
  int k = 0;
  for (int i = 0; i < 15; ++i) k += (CodeBook<Format>::midpoints[i] < scaled) ? 1 : 0;
  return CodeBook<Format>::sorted_order[k];
#endif
}

// Value of a 4-bit code times its block's absmax.
template <QuantFormat Format>
VIDLORA_HOST_DEVICE constexpr float decode_4bit(std::uint8_t code, float absmax) {
  return Format::code[code & 0xFu] * absmax;
}

}  // namespace vidlora::quant

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using quant::FP4;
using quant::NF4;
using quant::QuantFormat;
}  // namespace vidlora
