#pragma once
// Dense row-major matrices: activations are [tokens, features], weights [out, in] as in PyTorch.

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <span>
#include <string>

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

// True when every element is finite (no NaN, no ±Inf).
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& m) {
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
