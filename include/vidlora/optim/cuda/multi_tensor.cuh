#pragma once
// Multi-tensor AdamW, global gradient norm and clipping on the GPU: one launch over many tensors.
//
// The host cuts every tensor into chunks of `chunk` elements and uploads a table of (tensor, start) pairs;
// block b of a launch handles chunk b. Per element the AdamW kernel calls optim::adamw_update, the function
// the CPU path runs (bit-exact whatever nvcc's --fmad: it spells its roundings, see docs/cuda.md).
// Gradient norm: per-chunk Σ g² in double (float4 loads when aligned, block tree), then the chunk partials
// summed in chunk order by one block -> the norm does not depend on the launch geometry's timing.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/optim/adamw_update.hpp>
#include <vidlora/optim/clip_coefficient.hpp>

namespace vidlora::optim::cuda {

// One tensor's device pointers (m, v, p may be null for the norm/clip launches).
struct TensorSlot {
  float* p = nullptr;
  const float* g = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  std::int64_t n = 0;
  AdamWStepParams step{};  // per tensor: param groups may differ in lr / weight decay
};

struct Chunk {
  std::int32_t tensor;
  std::int64_t begin;  // first element of the tensor in this chunk
};

inline constexpr std::int64_t kDefaultChunk = std::int64_t{1} << 14;  // 16Ki: many blocks per SM wave

// Chunks of `chunk` elements over every tensor, in tensor order (empty tensors contribute none).
inline std::vector<Chunk> make_chunks(const std::vector<std::int64_t>& sizes, std::int64_t chunk = kDefaultChunk) {
  vidlora::cuda::check_arg(chunk > 0, "make_chunks", "chunk must be positive");
  std::vector<Chunk> out;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    vidlora::cuda::check_arg(sizes[t] >= 0, "make_chunks",
                             "tensor " + std::to_string(t) + " has negative size " + std::to_string(sizes[t]));
    for (std::int64_t b = 0; b < sizes[t]; b += chunk) out.push_back({static_cast<std::int32_t>(t), b});
  }
  return out;
}

// The clip coefficient: optim::clip_coefficient (optim/clip_coefficient.hpp), the one clip_grad_norm uses.
using vidlora::optim::clip_coefficient;

// g² in double: the term both the CPU clip and the kernels sum.
VIDLORA_HOST_DEVICE inline double square(float g) { return static_cast<double>(g) * static_cast<double>(g); }

struct MultiTensorLaunch {
  const TensorSlot* tensors = nullptr;  // device array
  const Chunk* chunks = nullptr;        // device array
  std::int64_t num_chunks = 0;
  std::int64_t chunk = kDefaultChunk;
};

}  // namespace vidlora::optim::cuda

#if VIDLORA_KERNELS
namespace vidlora::optim::cuda {
namespace detail {

// Whether every pointer is 16-byte aligned and the chunk starts on a multiple of 4 elements: then a thread
// moves float4s (4 elements per load) and only the chunk's last n % 4 elements go one by one.
__device__ inline bool float4_ready(const TensorSlot& t, std::int64_t begin) {
  const auto bits = reinterpret_cast<std::uintptr_t>(t.p) | reinterpret_cast<std::uintptr_t>(t.g) |
                    reinterpret_cast<std::uintptr_t>(t.m) | reinterpret_cast<std::uintptr_t>(t.v);
  return (bits & 15u) == 0 && (begin & 3) == 0;
}

__device__ inline void adamw_float4(float4& p, const float4& g, float4& m, float4& v, const AdamWStepParams& s) {
  adamw_update(p.x, g.x, m.x, v.x, s);
  adamw_update(p.y, g.y, m.y, v.y, s);
  adamw_update(p.z, g.z, m.z, v.z, s);
  adamw_update(p.w, g.w, m.w, v.w, s);
}

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void adamw_kernel(MultiTensorLaunch l) {
  const Chunk c = l.chunks[blockIdx.x];
  const TensorSlot t = l.tensors[c.tensor];
  const std::int64_t end = (c.begin + l.chunk < t.n) ? c.begin + l.chunk : t.n;
  std::int64_t first_scalar = c.begin;
  if (float4_ready(t, c.begin)) {
    const std::int64_t quads = (end - c.begin) / 4;
    for (std::int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
      const std::int64_t i = c.begin + 4 * q;
      float4 p = *reinterpret_cast<const float4*>(t.p + i), m = *reinterpret_cast<const float4*>(t.m + i),
             v = *reinterpret_cast<const float4*>(t.v + i);
      const float4 g = *reinterpret_cast<const float4*>(t.g + i);
      adamw_float4(p, g, m, v, t.step);
      *reinterpret_cast<float4*>(t.p + i) = p;
      *reinterpret_cast<float4*>(t.m + i) = m;
      *reinterpret_cast<float4*>(t.v + i) = v;
    }
    first_scalar = c.begin + 4 * quads;
  }
  for (std::int64_t i = first_scalar + threadIdx.x; i < end; i += blockDim.x) {
    float p = t.p[i], m = t.m[i], v = t.v[i];
    adamw_update(p, t.g[i], m, v, t.step);
    t.p[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}

template <int Threads>
__device__ double block_sum(double x) {
  VIDLORA_STATIC_SHARED(8, double, s, [Threads]);
  s[threadIdx.x] = x;
  __syncthreads();
  for (int w = Threads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

__device__ inline bool grad_float4_ready(const TensorSlot& t, std::int64_t begin) {
  return (reinterpret_cast<std::uintptr_t>(t.g) & 15u) == 0 && (begin & 3) == 0;
}

template <int Threads>
__global__ void sum_squares_kernel(MultiTensorLaunch l, double* partial) {
  const Chunk c = l.chunks[blockIdx.x];
  const TensorSlot t = l.tensors[c.tensor];
  const std::int64_t end = (c.begin + l.chunk < t.n) ? c.begin + l.chunk : t.n;
  double acc = 0.0;
  std::int64_t first_scalar = c.begin;
  if (grad_float4_ready(t, c.begin)) {
    const std::int64_t quads = (end - c.begin) / 4;
    for (std::int64_t q = threadIdx.x; q < quads; q += Threads) {
      const float4 g = *reinterpret_cast<const float4*>(t.g + c.begin + 4 * q);
      acc += (square(g.x) + square(g.y)) + (square(g.z) + square(g.w));
    }
    first_scalar = c.begin + 4 * quads;
  }
  for (std::int64_t i = first_scalar + threadIdx.x; i < end; i += Threads) acc += square(t.g[i]);
  const double total = block_sum<Threads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// One block: partials summed in a fixed order; result[0] = norm, result[1] = clip coefficient (or 1).
template <int Threads>
__global__ void finish_norm_kernel(const double* partial, std::int64_t n, double max_norm, double* result) {
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += Threads) acc += partial[i];
  const double total = block_sum<Threads>(acc);
  if (threadIdx.x == 0) {
    const double norm = sqrt(total);
    const double coef = clip_coefficient(norm, max_norm);
    result[0] = norm;
    result[1] = (isfinite(norm) && coef < 1.0) ? coef : 1.0;
  }
}

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void scale_kernel(MultiTensorLaunch l, const double* result) {
  const double coef = result[1];
  if (coef == 1.0) return;
  const float scale = static_cast<float>(coef);
  const Chunk c = l.chunks[blockIdx.x];
  const TensorSlot t = l.tensors[c.tensor];
  float* g = const_cast<float*>(t.g);
  const std::int64_t end = (c.begin + l.chunk < t.n) ? c.begin + l.chunk : t.n;
  std::int64_t first_scalar = c.begin;
  if (grad_float4_ready(t, c.begin)) {
    const std::int64_t quads = (end - c.begin) / 4;
    for (std::int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
      float4* p4 = reinterpret_cast<float4*>(g + c.begin + 4 * q);
      float4 v = *p4;
      v.x *= scale;
      v.y *= scale;
      v.z *= scale;
      v.w *= scale;
      *p4 = v;
    }
    first_scalar = c.begin + 4 * quads;
  }
  for (std::int64_t i = first_scalar + threadIdx.x; i < end; i += blockDim.x) g[i] *= scale;
}

}  // namespace detail

inline constexpr int kMultiTensorThreads = 512;

// One AdamW step over every tensor of the launch (device tables).
inline void adamw_step(const MultiTensorLaunch& l, cudaStream_t stream = nullptr) {
  if (l.num_chunks == 0) return;
  VIDLORA_LAUNCH(static_cast<unsigned>(l.num_chunks), kMultiTensorThreads, 0, stream, detail::adamw_kernel<>)(l);
  VIDLORA_CUDA_CHECK_LAUNCH("adamw_kernel");
}

// Global L2 norm of every gradient into result[0] (device double[2]); when max_norm > 0 and the norm is finite
// and above it, every gradient is scaled by float(max_norm / (norm + 1e-6)). `partial`: device double[num_chunks].
inline void grad_norm_clip(const MultiTensorLaunch& l, double max_norm, double* partial, double* result,
                           cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(l.num_chunks > 0, "grad_norm_clip", "no gradient elements");
  constexpr int T = kMultiTensorThreads;
  VIDLORA_LAUNCH(static_cast<unsigned>(l.num_chunks), T, 0, stream, detail::sum_squares_kernel<T>)(l, partial);
  VIDLORA_CUDA_CHECK_LAUNCH("sum_squares_kernel");
  VIDLORA_LAUNCH(1, T, 0, stream, detail::finish_norm_kernel<T>)
  (partial, l.num_chunks, max_norm > 0 ? max_norm : INFINITY, result);
  VIDLORA_CUDA_CHECK_LAUNCH("finish_norm_kernel");
  if (max_norm > 0) {
    VIDLORA_LAUNCH(static_cast<unsigned>(l.num_chunks), T, 0, stream, detail::scale_kernel<>)(l, result);
    VIDLORA_CUDA_CHECK_LAUNCH("scale_kernel");
  }
}

}  // namespace vidlora::optim::cuda
#endif
