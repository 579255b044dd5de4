#pragma once
// Streamed label-smoothed cross-entropy on the GPU: one block per token row reads the vocabulary once for
// the online log-sum-exp (loss::OnlineLogSumExp, the CPU's streamed path), the logit sum and the target
// logit, then once more to write d loss / d logits (loss::cross_entropy_logit_grad). Per-row losses go to
// `row_loss`; the host (or a caller's reduction) sums them in row order and divides by the normalizer,
// exactly as loss::cross_entropy does.

#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/loss/ce_normalizer.hpp>
#include <vidlora/loss/log_sum_exp.hpp>

namespace vidlora::loss::cuda {

struct CrossEntropyParams {
  const float* logits = nullptr;          // [rows, vocab], row stride ld (0: vocab)
  const std::int32_t* targets = nullptr;  // [rows]
  std::int64_t rows = 0, vocab = 0, ld = 0;
  std::int32_t ignore_index = -100;
  double label_smoothing = 0.0;
  double grad_scale = 1.0;     // 1 / normalizer (times an upstream factor); gradient skipped when grad == null
  float* grad = nullptr;       // [rows, vocab] packed; ignored rows are zeroed
  double* row_loss = nullptr;  // [rows]; 0 for ignored rows
};

// The divisor of the summed loss for `valid` non-ignored tokens: Sum -> 1, Mean -> total_valid (when > 0) or
// valid; 0 when nothing is valid. loss::ce_normalizer (loss/ce_normalizer.hpp), which loss::detail::normalizer
// calls too.
using vidlora::loss::ce_normalizer;

// Checks targets on the host (before upload); returns the number of valid tokens. The range test is
// loss::ce_target_in_range, as in loss::detail::check_targets (which throws vidlora::Error instead).
inline long check_ce_targets(const std::vector<std::int32_t>& targets, std::int64_t vocab, std::int32_t ignore_index,
                             double label_smoothing) {
  vidlora::cuda::check_arg(label_smoothing >= 0.0 && label_smoothing <= 1.0, "cuda::cross_entropy",
                           "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  vidlora::cuda::check_arg(vocab > 0, "cuda::cross_entropy", "the vocabulary is empty");
  long valid = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const std::int32_t t = targets[i];
    if (t == ignore_index) continue;
    vidlora::cuda::check_arg(ce_target_in_range(t, vocab), "cuda::cross_entropy",
                             "target " + std::to_string(t) + " at position " + std::to_string(i) + " is outside [0, " +
                                 std::to_string(vocab) + ") and is not ignore_index (" + std::to_string(ignore_index) +
                                 ")");
    ++valid;
  }
  return valid;
}

// One row's statistics as the kernel accumulates them; the CPU tests fold rows through the same struct.
struct RowStats {
  OnlineLogSumExp lse;
  double logit_sum = 0.0;
  VIDLORA_HOST_DEVICE void add(float z) {
    lse.add(static_cast<double>(z));
    logit_sum += static_cast<double>(z);
  }
  VIDLORA_HOST_DEVICE void merge(const RowStats& o) {
    lse.merge(o.lse);
    logit_sum += o.logit_sum;
  }
};

// d loss / d z_j for one element, scaled: what the kernel writes.
VIDLORA_HOST_DEVICE inline float ce_grad_element(float z, double lse, bool is_target, double eps, double inv_vocab,
                                                 double scale) {
  return static_cast<float>(cross_entropy_logit_grad(exp(static_cast<double>(z) - lse), is_target, eps, inv_vocab) *
                            scale);
}

}  // namespace vidlora::loss::cuda

#if VIDLORA_KERNELS
namespace vidlora::loss::cuda {
namespace detail {

template <int Threads>
__global__ void cross_entropy_kernel(CrossEntropyParams p) {
  VIDLORA_STATIC_SHARED(8, double, s_max, [Threads]);
  VIDLORA_STATIC_SHARED(8, double, s_sum, [Threads]);
  VIDLORA_STATIC_SHARED(8, double, s_lsum, [Threads]);
  const std::int64_t row = blockIdx.x;
  const std::int64_t ld = p.ld ? p.ld : p.vocab;
  const float* z = p.logits + row * ld;
  const std::int32_t t = p.targets[row];
  if (t == p.ignore_index) {
    if (threadIdx.x == 0) p.row_loss[row] = 0.0;
    if (p.grad)
      for (std::int64_t j = threadIdx.x; j < p.vocab; j += Threads) p.grad[row * p.vocab + j] = 0.0f;
    return;
  }
  RowStats st;
  for (std::int64_t j = threadIdx.x; j < p.vocab; j += Threads) st.add(z[j]);
  s_max[threadIdx.x] = st.lse.max;
  s_sum[threadIdx.x] = st.lse.sum;
  s_lsum[threadIdx.x] = st.logit_sum;
  __syncthreads();
  for (int w = Threads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) {
      OnlineLogSumExp a{s_max[threadIdx.x], s_sum[threadIdx.x]};
      a.merge(s_max[threadIdx.x + w], s_sum[threadIdx.x + w]);
      s_max[threadIdx.x] = a.max;
      s_sum[threadIdx.x] = a.sum;
      s_lsum[threadIdx.x] += s_lsum[threadIdx.x + w];
    }
    __syncthreads();
  }
  const OnlineLogSumExp total{s_max[0], s_sum[0]};
  const double lse = total.value();
  if (threadIdx.x == 0)
    p.row_loss[row] = cross_entropy_token_loss(lse, static_cast<double>(z[t]), s_lsum[0], static_cast<double>(p.vocab),
                                               p.label_smoothing);
  if (p.grad) {
    const double inv_vocab = 1.0 / static_cast<double>(p.vocab);
    for (std::int64_t j = threadIdx.x; j < p.vocab; j += Threads)
      p.grad[row * p.vocab + j] = ce_grad_element(z[j], lse, j == t, p.label_smoothing, inv_vocab, p.grad_scale);
  }
}

}  // namespace detail

inline void cross_entropy(const CrossEntropyParams& p, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.rows > 0 && p.vocab > 0 && p.logits && p.targets && p.row_loss, "cuda::cross_entropy",
                           "needs rows > 0, vocab > 0, logits, targets and row_loss");
  constexpr int T = 256;
  VIDLORA_LAUNCH(static_cast<unsigned>(p.rows), T, 0, stream, detail::cross_entropy_kernel<T>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("cross_entropy_kernel");
}

}  // namespace vidlora::loss::cuda
#endif
