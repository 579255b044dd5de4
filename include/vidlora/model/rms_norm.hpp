#pragma once
// RMSNorm as LLaMA / Qwen define it: y = w ⊙ (x / √(mean(x²) + eps)), the mean taken in float64
// here (float32 in transformers), the weight applied after normalisation. Rows are normalised
// independently; a [tokens, heads·head_dim] matrix viewed as [tokens·heads, head_dim] gives Qwen3's
// per-head q_norm / k_norm.

#include <Eigen/Core>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/elementwise.hpp>

namespace vidlora::model {

// x: [rows, n] -> y [rows, n]; inv_rms [rows] receives 1/√(mean(x²)+eps) for the backward.
template <class T>
MatrixOf<T> rms_norm(const Eigen::Ref<const MatrixOf<T>>& x, const VectorOf<T>& weight, double eps,
                     VectorOf<T>* inv_rms = nullptr) {
  require(x.cols() == weight.size(), "rms_norm: input {} does not match weight [{}]", shape_string(x), weight.size());
  const Eigen::Index rows = x.rows(), n = x.cols();
  MatrixOf<T> y(rows, n);
  if (inv_rms) inv_rms->resize(rows);
  for (Eigen::Index i = 0; i < rows; ++i) {
    const double ss = x.row(i).template cast<double>().squaredNorm();
    const T r = static_cast<T>(rms_inverse(ss, static_cast<int>(n), eps));
    if (inv_rms) (*inv_rms)(i) = r;
    y.row(i) = (x.row(i) * r).cwiseProduct(weight.transpose());
  }
  return y;
}

// dL/dx from dL/dy, given the forward input x and its inv_rms (the weight is frozen: no dL/dw).
template <class T>
MatrixOf<T> rms_norm_backward(const Eigen::Ref<const MatrixOf<T>>& x, const VectorOf<T>& weight,
                              const VectorOf<T>& inv_rms, const Eigen::Ref<const MatrixOf<T>>& dy) {
  const Eigen::Index rows = x.rows(), n = x.cols();
  MatrixOf<T> dx(rows, n);
  for (Eigen::Index i = 0; i < rows; ++i) {
    const T r = inv_rms(i);
    double c = 0;
    for (Eigen::Index j = 0; j < n; ++j) c += static_cast<double>(dy(i, j)) * weight(j) * x(i, j);
    const T cm = static_cast<T>(c / static_cast<double>(n));
    for (Eigen::Index j = 0; j < n; ++j) dx(i, j) = rms_norm_input_grad<T>(dy(i, j) * weight(j), x(i, j), r, cm);
  }
  return dx;
}

// Views a row-major [rows, heads·d] matrix as [rows·heads, d] (same storage).
template <class T>
Eigen::Map<MatrixOf<T>> per_head_view(MatrixOf<T>& m, Eigen::Index head_dim) {
  return Eigen::Map<MatrixOf<T>>(m.data(), m.size() / head_dim, head_dim);
}
template <class T>
Eigen::Map<const MatrixOf<T>> per_head_view(const MatrixOf<T>& m, Eigen::Index head_dim) {
  return Eigen::Map<const MatrixOf<T>>(m.data(), m.size() / head_dim, head_dim);
}

}  // namespace vidlora::model
