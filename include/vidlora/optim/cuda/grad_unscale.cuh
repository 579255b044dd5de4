#pragma once
// Multi-tensor "unscale + found-inf" on the GPU: torch's _amp_foreach_non_finite_check_and_unscale_ over
// every trainable gradient in one launch, on multi_tensor.cuh's chunk table (TensorSlot::g is the
// gradient; p, m, v are not read). Per element it runs optim::unscale_element, the function the CPU path
// (optim::unscale_range, GradScaler::unscale) runs, so the result is bit-identical: one float multiply.
//
// found_inf is a device float that the kernel only ever sets to 1 (torch's contract): zero it once per
// step, then launch for every group of gradients, then read it back (found_inf_to_host) and hand it to
// GradScaler::record_unscaled. Every writer stores the same value, so the result does not depend on order.

#include <cstdint>

#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/optim/cuda/multi_tensor.cuh>
#include <vidlora/optim/grad_unscale.hpp>

namespace vidlora::optim::cuda {

struct UnscaleParams {
  float inv_scale = 1.0f;      // GradScaler::inv_scale(): float(1 / double(scale))
  float* found_inf = nullptr;  // device float, set to 1 when any gradient is Inf/NaN (before unscaling)
};

}  // namespace vidlora::optim::cuda

#if VIDLORA_KERNELS
namespace vidlora::optim::cuda {
namespace detail {

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void unscale_kernel(MultiTensorLaunch l, UnscaleParams u) {
  const Chunk c = l.chunks[blockIdx.x];
  const TensorSlot t = l.tensors[c.tensor];
  float* g = const_cast<float*>(t.g);
  const std::int64_t end = (c.begin + l.chunk < t.n) ? c.begin + l.chunk : t.n;
  bool bad = false;
  std::int64_t first_scalar = c.begin;
  if (grad_float4_ready(t, c.begin)) {
    const std::int64_t quads = (end - c.begin) / 4;
    for (std::int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
      float4* p4 = reinterpret_cast<float4*>(g + c.begin + 4 * q);
      float4 v = *p4;
      bad |= unscale_element(v.x, u.inv_scale);
      bad |= unscale_element(v.y, u.inv_scale);
      bad |= unscale_element(v.z, u.inv_scale);
      bad |= unscale_element(v.w, u.inv_scale);
      *p4 = v;
    }
    first_scalar = c.begin + 4 * quads;
  }
  for (std::int64_t i = first_scalar + threadIdx.x; i < end; i += blockDim.x) bad |= unscale_element(g[i], u.inv_scale);
  // Any thread of any block may set it: an atomic exchange, as plain stores of the same value from many threads are a
  // data race (the racecheck build, tests/cuda_emu, reports them).
  if (bad) (void)atomicExch(u.found_inf, 1.0f);
}

}  // namespace detail

// Unscales every gradient of the launch by p.inv_scale and sets *p.found_inf = 1 if any was Inf/NaN.
inline void unscale_and_check(const MultiTensorLaunch& l, const UnscaleParams& p, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.found_inf != nullptr, "unscale_and_check", "found_inf is null");
  if (l.num_chunks == 0) return;
  VIDLORA_LAUNCH(static_cast<unsigned>(l.num_chunks), kMultiTensorThreads, 0, stream, detail::unscale_kernel<>)(l, p);
  VIDLORA_CUDA_CHECK_LAUNCH("unscale_kernel");
}

// Waits for `stream` and returns whether *found_inf is set (the one host synchronisation a skipped-step
// decision needs).
inline bool found_inf_to_host(const float* found_inf, cudaStream_t stream = nullptr) {
  float host = 0.0f;
  VIDLORA_CUDA_CHECK(cudaMemcpyAsync(&host, found_inf, sizeof host, cudaMemcpyDeviceToHost, stream));
  VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host != 0.0f;
}

}  // namespace vidlora::optim::cuda
#endif
