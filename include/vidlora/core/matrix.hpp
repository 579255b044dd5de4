#pragma once
// Dense row-major matrices: activations are [tokens, features], weights [out, in] as in PyTorch.

#include <Eigen/Core>

#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>

namespace vidlora {

template <class Scalar>
using MatrixOf = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

using Matrix = MatrixOf<float>;    // the library's working precision
using MatrixD = MatrixOf<double>;  // float64, for references and finite differences

template <class Scalar>
using VectorOf = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
using Vector = VectorOf<float>;

// "[rows, cols]" for error messages.
template <class Derived>
std::string shape_string(const Eigen::EigenBase<Derived>& m) {
  return fmt::format("[{}, {}]", m.rows(), m.cols());
}

// True when every element is finite (no NaN, no ±Inf): the one finite-value check of the library.
// Contiguous float/double storage is tested on the exponent bits, a loop that vectorises (Eigen's
// allFinite costs ~20 ns per element, 8x an AdamW update); expressions fall back to allFinite.
template <class Scalar>
requires std::same_as<Scalar, float> || std::same_as<Scalar, double>
bool all_finite(std::span<const Scalar> values) {
  using Bits = std::conditional_t<std::same_as<Scalar, float>, std::uint32_t, std::uint64_t>;
  constexpr Bits exponent_mask = static_cast<Bits>(std::same_as<Scalar, float> ? 0x7f800000ull : 0x7ff0000000000000ull);
  Bits worst = 0;
  for (const Scalar v : values) {
    const Bits exponent = std::bit_cast<Bits>(v) & exponent_mask;
    worst = exponent > worst ? exponent : worst;
  }
  return worst != exponent_mask;  // an all-ones exponent is Inf or NaN
}
// Index of the first NaN/Inf value, for an error message naming it (std::nullopt when all are finite).
template <class Scalar>
requires std::same_as<Scalar, float> || std::same_as<Scalar, double> std::optional<std::size_t> first_nonfinite(
    std::span<const Scalar> values) {
  if (all_finite(values)) return std::nullopt;
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) return i;
  return std::nullopt;
}
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& m) {
  using Scalar = typename Derived::Scalar;
  if constexpr ((std::same_as<Scalar, float> ||
                 std::same_as<Scalar, double>)&&std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>)
    return all_finite(std::span<const Scalar>(m.derived().data(), static_cast<std::size_t>(m.size())));
  else
    return m.allFinite();
}

// A contiguous view over a row-major matrix's storage.
template <class Scalar>
std::span<const Scalar> as_span(const MatrixOf<Scalar>& m) {
  return {m.data(), static_cast<std::size_t>(m.size())};
}
template <class Scalar>
std::span<Scalar> as_span(MatrixOf<Scalar>& m) {
  return {m.data(), static_cast<std::size_t>(m.size())};
}

}  // namespace vidlora
