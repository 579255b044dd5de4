#pragma once
// Helpers of the CUDA tests: random inputs, NaN poison, error measures (no fmt, no Eigen).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/rng.hpp>

namespace cuda_test {

inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * vidlora::random_uniform(seed, 17, i);
  return v;
}

// Fills a device buffer with 0xFF bytes: NaN for float/double/bf16, so unwritten outputs fail comparisons.
template <class T>
void poison(vidlora::cuda::DeviceBuffer<T>& b) {
  b.fill_bytes(0xFF);
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
}

// max_i |got - want| / max(|want|, floor); NaN anywhere gives +inf.
template <class A, class B>
double elementwise_relative_error(const std::vector<A>& got, const std::vector<B>& want, double floor = 1e-3) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (std::isnan(g) || std::isnan(w)) return INFINITY;
    worst = std::max(worst, std::fabs(g - w) / std::max(std::fabs(w), floor));
  }
  return worst;
}

// max_i |got - want| / max_i |want| (normwise): for results that are sums of many terms, where elements
// near zero carry the rounding of much larger terms. NaN anywhere gives +inf.
template <class A, class B>
double normwise_error(const std::vector<A>& got, const std::vector<B>& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (std::isnan(g) || std::isnan(w)) return INFINITY;
    diff = std::max(diff, std::fabs(g - w));
    scale = std::max(scale, std::fabs(w));
  }
  return diff / std::max(scale, 1e-30);
}

template <class T>
std::size_t bit_mismatches(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return n;
}

}  // namespace cuda_test
