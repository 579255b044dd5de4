#pragma once
// The reference files' conversions between the tests' std::vector<float> and the CPU policies' row-major Matrix.

#include <vector>

#include <vidlora/core/matrix.hpp>

namespace ref {

inline vidlora::Matrix to_matrix(const std::vector<float>& v, long rows, long cols) {
  return Eigen::Map<const vidlora::Matrix>(v.data(), rows, cols);
}

template <class M>
std::vector<float> to_vector(const M& m) {
  return std::vector<float>(m.data(), m.data() + m.size());
}

}  // namespace ref
