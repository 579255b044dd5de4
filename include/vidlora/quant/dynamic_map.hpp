#pragma once
// The signed 8-bit dynamic map (Dettmers 2016, as bitsandbytes' create_dynamic_map builds it) and
// blockwise 8-bit quantization over it: the second level of double quantization.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <vidlora/core/portability.hpp>

namespace vidlora::quant {

namespace detail {

// torch.linspace(0.1, 1, steps) in float32 as its CPU kernel computes it: a float step, the
// first half counted up from start and the second half down from end, each point rounded once
// (a fused multiply-add; in double the product and sum are exact, so one cast is that rounding).
constexpr float linspace_point(int idx, int steps) {
  const float start = 0.1f, end = 1.0f;
  const float step = (end - start) / static_cast<float>(steps - 1);
  return idx < steps / 2 ? static_cast<float>(double{start} + double{step} * idx)
                         : static_cast<float>(double{end} - double{step} * (steps - idx - 1));
}

}  // namespace detail

// 256 sorted values in [-0.99297, 1]: for exponent e = 0..6, 2^e means of a linspace over
// [0.1, 1] scaled by 10^(e-6), both signs, plus 0 and 1.
constexpr std::array<float, 256> signed_dynamic_map() {
  constexpr double kPow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::array<float, 256> data{};
  std::size_t n = 0;
  for (int e = 0; e < 7; ++e) {
    const int steps = (1 << e) + 1;
    const float scale = static_cast<float>(kPow10[e]);
    for (int i = 0; i + 1 < steps; ++i) {
      const float mean = (detail::linspace_point(i, steps) + detail::linspace_point(i + 1, steps)) / 2.0f;
      data[n++] = scale * mean;
      data[n++] = -(scale * mean);
    }
  }
  data[n++] = 0.0f;
  data[n++] = 1.0f;
  std::sort(data.begin(), data.end());
  return data;
}

inline constexpr std::array<float, 256> kSignedDynamicMap = signed_dynamic_map();
inline constexpr int kNestedBlocksize = 256;  // blocksize of the 8-bit level of double quantization

// Nearest entry of the sorted 256-value map to `scaled` (in [-1, 1]); on an exact tie in
// distance the lower code wins, as an argmin over |scaled - code| picks it.
VIDLORA_HOST_DEVICE inline std::uint8_t encode_dynamic(float scaled) {
#if defined(__CUDA_ARCH__)  // device code cannot read the host table; only nvcc's device pass of a CUDA TU gets here
  (void)scaled;
  __trap();  // no kernel quantizes (quant/cuda takes its tables through Params)
  return 0;
#else
  const auto& map = kSignedDynamicMap;
  int lo = 0, hi = 255;  // invariant: map[lo] <= scaled <= map[hi] once clamped
  if (scaled <= map[0]) return 0;
  if (scaled >= map[255]) return 255;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (map[mid] <= scaled)
      lo = mid;
    else
      hi = mid;
  }
  return static_cast<std::uint8_t>(std::fabs(scaled - map[lo]) <= std::fabs(map[hi] - scaled) ? lo : hi);
#endif
}

// Blockwise 8-bit quantization of `values` (blocks of kNestedBlocksize, the last may be partial):
// codes[i] = nearest map entry to values[i] / absmax[block]. Values must be finite.
inline void quantize_dynamic_blockwise(std::span<const float> values, std::vector<std::uint8_t>& codes,
                                       std::vector<float>& absmax) {
  const std::size_t n = values.size();
  const std::size_t blocks = (n + kNestedBlocksize - 1) / kNestedBlocksize;
  codes.assign(n, 0);
  absmax.assign(blocks, 0.0f);
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t begin = b * kNestedBlocksize, end = std::min(n, begin + kNestedBlocksize);
    float m = 0.0f;
    for (std::size_t i = begin; i < end; ++i) m = std::max(m, std::fabs(values[i]));
    absmax[b] = m;
    const float inv = 1.0f / std::max(m, 1e-38f);
    for (std::size_t i = begin; i < end; ++i) codes[i] = encode_dynamic(std::clamp(values[i] * inv, -1.0f, 1.0f));
  }
}

// Value of an 8-bit code: map[code] * absmax of its block.
VIDLORA_HOST_DEVICE inline float decode_dynamic(std::uint8_t code, float absmax) {
#if defined(__CUDA_ARCH__)  // the dequantize kernels take the map through their Params (quant/cuda/dequantize.cuh)
  (void)code;
  (void)absmax;
  __trap();
  return 0.0f;
#else
  return kSignedDynamicMap[code] * absmax;
#endif
}

}  // namespace vidlora::quant
