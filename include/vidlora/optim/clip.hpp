#pragma once
// clip_grad_norm: global L2 gradient clipping as torch.nn.utils.clip_grad_norm_.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/optim/clip_coefficient.hpp>
#include <vidlora/optim/detail.hpp>
#include <vidlora/optim/parameter.hpp>

namespace vidlora::optim {

struct ClipOptions {
  // false (torch's default): a NaN/Inf norm is returned and no gradient is touched (torch would scale
  // them by a NaN or 0 coefficient; vidlora leaves them for AdamW::step to refuse, naming the
  // parameter). true: throw vidlora::Error naming the first parameter with a non-finite gradient.
  bool error_if_nonfinite = false;
};

namespace detail {
// Σ g² in double over fixed 64Ki-element chunks summed in order: the same value for any thread count.
inline double sum_of_squares(const Matrix& g) {
  constexpr std::ptrdiff_t kChunk = std::ptrdiff_t{1} << 16;
  const std::ptrdiff_t n = g.size();
  const std::ptrdiff_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
  const float* data = g.data();
  parallel_for(std::ptrdiff_t{0}, chunks, n, [&](std::ptrdiff_t c) {
    // 8 interleaved accumulators: a fixed summation order that the compiler can still vectorise.
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const std::ptrdiff_t begin = c * kChunk, end = std::min(n, (c + 1) * kChunk);
    std::ptrdiff_t i = begin;
    for (; i + 8 <= end; i += 8)
      for (int l = 0; l < 8; ++l) lanes[l] += static_cast<double>(data[i + l]) * static_cast<double>(data[i + l]);
    for (; i < end; ++i) lanes[0] += static_cast<double>(data[i]) * static_cast<double>(data[i]);
    partial[static_cast<std::size_t>(c)] =
        ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}
}  // namespace detail

// Global L2 norm of every gradient (accumulated in double); when it exceeds max_norm, every gradient
// is multiplied by max_norm / (norm + 1e-6). Returns the norm before clipping. A NaN/Inf norm (a NaN
// or Inf gradient) is returned unclipped or thrown, per options; check it with std::isfinite.
inline double clip_grad_norm(std::span<const Parameter> params, double max_norm, ClipOptions options = {}) {
  require(std::isfinite(max_norm) && max_norm > 0.0, "clip_grad_norm: max_norm must be finite and > 0 (got {})",
          max_norm);
  double sum = 0.0;
  for (const Parameter& p : params) {
    require(p.grad != nullptr, "clip_grad_norm: parameter '{}' has no grad matrix", p.name);
    sum += detail::sum_of_squares(*p.grad);
  }
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm)) {
    if (options.error_if_nonfinite) {
      for (const Parameter& p : params)
        if (const auto bad = detail::first_nonfinite(*p.grad))
          fail("clip_grad_norm: the gradient norm is {} because the gradient of '{}' {} has {}", norm, p.name,
               shape_string(*p.grad), detail::describe_element(*p.grad, *bad));
      fail("clip_grad_norm: the gradient norm is {} (sum of squares overflowed)", norm);
    }
    return norm;
  }
  const double coef = clip_coefficient(norm, max_norm);
  if (coef < 1.0) {
    const float scale = static_cast<float>(coef);
    for (const Parameter& p : params) *p.grad *= scale;
  }
  return norm;
}

// Over every parameter of every group (e.g. AdamW::groups()).
inline double clip_grad_norm(std::span<const ParamGroup> groups, double max_norm, ClipOptions options = {}) {
  std::vector<Parameter> all;
  for (const ParamGroup& g : groups) all.insert(all.end(), g.params.begin(), g.params.end());
  return clip_grad_norm(std::span<const Parameter>(all), max_norm, options);
}

}  // namespace vidlora::optim

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using optim::clip_grad_norm;
using optim::ClipOptions;
}  // namespace vidlora
