#pragma once
// Private helpers of vidlora::optim (not part of the API).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include <vidlora/core/matrix.hpp>

#if defined(_OPENMP)
#define VIDLORA_OPTIM_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define VIDLORA_OPTIM_PARALLEL_FOR
#endif

namespace vidlora::optim::detail {

// True when every element is finite: an integer test of the exponent bits that vectorises (Eigen's
// allFinite costs ~20 ns per element here, 8x the AdamW update itself).
inline bool all_finite_fast(const float* data, std::ptrdiff_t n) {
  std::uint32_t worst = 0;
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    const std::uint32_t exponent = bits & 0x7f800000u;
    worst = exponent > worst ? exponent : worst;
  }
  return worst != 0x7f800000u;  // an all-ones exponent is Inf or NaN
}

// Index of the first NaN/Inf element, if any.
inline std::optional<Eigen::Index> first_nonfinite(const Matrix& m) {
  if (all_finite_fast(m.data(), m.size())) return std::nullopt;
  const float* data = m.data();
  for (Eigen::Index i = 0; i < m.size(); ++i)
    if (!std::isfinite(data[i])) return i;
  return std::nullopt;
}

// "NaN at (1, 2)" for a message.
inline std::string describe_element(const Matrix& m, Eigen::Index flat) {
  return fmt::format("{} at ({}, {})", m.data()[flat], flat / m.cols(), flat % m.cols());
}

}  // namespace vidlora::optim::detail
