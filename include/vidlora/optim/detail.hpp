#pragma once
// Private helpers of vidlora::optim (not part of the API).

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>

#include <fmt/format.h>

#include <vidlora/core/matrix.hpp>

namespace vidlora::optim::detail {

// Index of the first NaN/Inf element, if any.
inline std::optional<Eigen::Index> first_nonfinite(const Matrix& m) {
  if (const auto i = vidlora::first_nonfinite(as_span(m))) return static_cast<Eigen::Index>(*i);
  return std::nullopt;
}

// "NaN at (1, 2)" for a message.
inline std::string describe_element(const Matrix& m, Eigen::Index flat) {
  return fmt::format("{} at ({}, {})", m.data()[flat], flat / m.cols(), flat % m.cols());
}

}  // namespace vidlora::optim::detail
