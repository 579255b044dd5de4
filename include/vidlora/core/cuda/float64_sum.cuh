#pragma once
// take_into_float64: one clip's float32 gradient added into a float64 sum on the device and zeroed for the next clip
// (train::ClipGradientSum::take, on the device): what a device step that keeps its gradients there for a whole
// optimizer step (train::DecoderStep<Cuda>, model::cuda::CudaMlp2xGelu) runs after each clip. Each element on its own,
// so the order of the clips is the only order of the additions. round_from_float64: the step's sums back to float32
// (ClipGradientSum::store, on the device).

#include <cstdint>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>

#if VIDLORA_KERNELS
namespace vidlora::cuda {

namespace detail {
template <class = void>  // a template: header kernels get one definition across TUs
__global__ void take_into_float64_kernel(float* g, double* sum, std::int64_t n, bool first) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    sum[i] = (first ? 0.0 : sum[i]) + static_cast<double>(g[i]);
    g[i] = 0.0f;
  }
}
template <class = void>
__global__ void round_from_float64_kernel(const double* sum, float* g, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    g[i] = __double2float_rn(sum[i]);
}
}  // namespace detail

// sum (first: =) += g in float64, then g = 0, over n elements of device memory, on `stream`.
inline void take_into_float64(float* g, double* sum, std::int64_t n, bool first, cudaStream_t stream = nullptr) {
  if (n == 0) return;
  VIDLORA_LAUNCH(grid_size(n, 256), 256, 0, stream, detail::take_into_float64_kernel<>)(g, sum, n, first);
  VIDLORA_CUDA_CHECK_LAUNCH("take_into_float64_kernel");
}

// g = float32(sum), rounded to nearest even once per element (ClipGradientSum::store's static_cast, on the device:
// the same bits), over n elements of device memory, on `stream`: a step's sums handed over in float32 when no other
// rank's sums are still to come (one rank, or ranks already summed on the device).
inline void round_from_float64(const double* sum, float* g, std::int64_t n, cudaStream_t stream = nullptr) {
  if (n == 0) return;
  VIDLORA_LAUNCH(grid_size(n, 256), 256, 0, stream, detail::round_from_float64_kernel<>)(sum, g, n);
  VIDLORA_CUDA_CHECK_LAUNCH("round_from_float64_kernel");
}

}  // namespace vidlora::cuda
#endif
