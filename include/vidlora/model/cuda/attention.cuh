#pragma once
// Grouped-query causal attention of one sequence on the GPU, forward and backward, fp32: the second
// implementation of model::attention_forward / attention_backward (same visibility rule, scores q·kᵀ/√d,
// max-subtracted softmax with the sum in double, key-padding mask). One block per (query row, query head);
// scores live in shared memory, so keys are limited to kMaxAttentionKeys. The backward recomputes the
// probabilities from the saved log-sum-exp and accumulates dk/dv with atomics (summation order differs from
// the CPU: compare with a tolerance). A tiled flash-style kernel is future work (docs/cuda.md).

#include <cmath>
#include <cstdint>

#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>

namespace vidlora::model::cuda {

inline constexpr std::int64_t kMaxAttentionKeys = 8192;  // 32 KiB of float scores per block

// Floats per shared score row: tk rounded up to 32, so that the compiler's unrolled, vectorised reads of
// prob[j] near j = tk stay inside the allocation (compute-sanitizer's memcheck flags them otherwise).
VIDLORA_HOST_DEVICE constexpr std::int64_t attention_row_floats(std::int64_t tk) { return (tk + 31) / 32 * 32; }

struct AttentionParams {
  const float* q = nullptr;                // [tq, q_heads·d]
  const float* k = nullptr;                // [tk, kv_heads·d]
  const float* v = nullptr;                // [tk, kv_heads·d]
  const std::int32_t* key_mask = nullptr;  // [tk] or null (all keys valid)
  float* out = nullptr;                    // [tq, q_heads·d]
  float* lse = nullptr;                    // [q_heads, tq]: max + log Σ exp (−inf for a row with no visible key)
  // backward
  const float* d_out = nullptr;
  float* dq = nullptr;  // accumulated (+=)
  float* dk = nullptr;  // accumulated (atomicAdd)
  float* dv = nullptr;  // accumulated (atomicAdd)
  std::int64_t tq = 0, tk = 0, q_heads = 0, kv_heads = 0, head_dim = 0, q_offset = 0;
};

// Whether query i sees key j (causal from absolute position q_offset + i, and not masked).
VIDLORA_HOST_DEVICE inline bool attention_visible(const AttentionParams& p, std::int64_t i, std::int64_t j) {
  return j <= p.q_offset + i && j < p.tk && (p.key_mask == nullptr || p.key_mask[j] != 0);
}
// The key/value head query head h reads.
VIDLORA_HOST_DEVICE inline std::int64_t kv_head_of(const AttentionParams& p, std::int64_t h) {
  return h / (p.q_heads / p.kv_heads);
}

inline void check_attention(const AttentionParams& p, const char* who) {
  vidlora::cuda::check_arg(
      p.tq > 0 && p.tk > 0 && p.head_dim > 0 && p.q_heads > 0 && p.kv_heads > 0 && p.q_heads % p.kv_heads == 0, who,
      "needs tq, tk, head_dim > 0 and q_heads a multiple of kv_heads");
  vidlora::cuda::check_arg(p.tk <= kMaxAttentionKeys, who,
                           std::to_string(p.tk) + " keys exceed the " + std::to_string(kMaxAttentionKeys) +
                               " this kernel holds in shared memory");
}

}  // namespace vidlora::model::cuda

#if defined(__CUDACC__)
namespace vidlora::model::cuda {
namespace detail {

inline constexpr int kAttnThreads = 128;

__device__ inline double attn_block_reduce(double v, double* s, bool is_max) {
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = kAttnThreads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w)
      s[threadIdx.x] = is_max ? fmax(s[threadIdx.x], s[threadIdx.x + w]) : s[threadIdx.x] + s[threadIdx.x + w];
    __syncthreads();
  }
  const double r = s[0];
  __syncthreads();
  return r;
}

// Fills prob[j] (shared) with the softmax row of (i, h); returns max + log(sum) (or -inf).
__device__ inline float attention_probs(const AttentionParams& p, std::int64_t i, std::int64_t h, float* prob,
                                        double* red) {
  const std::int64_t d = p.head_dim, g = kv_head_of(p, h);
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));
  const float* qi = p.q + i * p.q_heads * d + h * d;
  double m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < p.tk; j += kAttnThreads) {
    float s = -INFINITY;
    if (attention_visible(p, i, j)) {
      const float* kj = p.k + j * p.kv_heads * d + g * d;
      float acc = 0.0f;
      for (std::int64_t c = 0; c < d; ++c) acc += qi[c] * kj[c];
      s = acc * scale;
      m = fmax(m, static_cast<double>(s));
    }
    prob[j] = s;
  }
  m = attn_block_reduce(m, red, true);
  double sum = 0.0;
  for (std::int64_t j = threadIdx.x; j < p.tk; j += kAttnThreads) {
    const float e = attention_visible(p, i, j) ? expf(prob[j] - static_cast<float>(m)) : 0.0f;
    prob[j] = e;
    sum += e;
  }
  sum = attn_block_reduce(sum, red, false);
  const float inv = sum > 0 ? static_cast<float>(1.0 / sum) : 0.0f;
  for (std::int64_t j = threadIdx.x; j < p.tk; j += kAttnThreads) prob[j] *= inv;
  __syncthreads();
  return sum > 0 ? static_cast<float>(m + log(sum)) : -INFINITY;
}

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void attention_forward_kernel(AttentionParams p) {
  extern __shared__ float prob[];
  __shared__ double red[kAttnThreads];
  const std::int64_t i = blockIdx.x, h = blockIdx.y, d = p.head_dim, g = kv_head_of(p, h);
  const float lse = attention_probs(p, i, h, prob, red);
  if (threadIdx.x == 0 && p.lse) p.lse[h * p.tq + i] = lse;
  for (std::int64_t c = threadIdx.x; c < d; c += kAttnThreads) {
    float acc = 0.0f;
    for (std::int64_t j = 0; j < p.tk; ++j) acc += prob[j] * p.v[j * p.kv_heads * d + g * d + c];
    p.out[i * p.q_heads * d + h * d + c] = acc;
  }
}

// Second shared array: dp[j] (after prob[j]).
template <class = void>  // a template: header kernels get one definition across TUs
__global__ void attention_backward_kernel(AttentionParams p) {
  extern __shared__ float smem[];
  float* prob = smem;
  float* ds = smem + attention_row_floats(p.tk);
  __shared__ double red[kAttnThreads];
  const std::int64_t i = blockIdx.x, h = blockIdx.y, d = p.head_dim, g = kv_head_of(p, h);
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));
  attention_probs(p, i, h, prob, red);
  const float* doi = p.d_out + i * p.q_heads * d + h * d;
  const float* qi = p.q + i * p.q_heads * d + h * d;
  double row_dot = 0.0;
  for (std::int64_t j = threadIdx.x; j < p.tk; j += kAttnThreads) {
    float dp = 0.0f;
    if (prob[j] != 0.0f) {
      const float* vj = p.v + j * p.kv_heads * d + g * d;
      for (std::int64_t c = 0; c < d; ++c) dp += doi[c] * vj[c];
    }
    ds[j] = dp;
    row_dot += static_cast<double>(dp) * prob[j];
  }
  row_dot = attn_block_reduce(row_dot, red, false);
  for (std::int64_t j = threadIdx.x; j < p.tk; j += kAttnThreads)
    ds[j] = prob[j] * (ds[j] - static_cast<float>(row_dot)) * scale;
  __syncthreads();
  for (std::int64_t c = threadIdx.x; c < d; c += kAttnThreads) {
    float acc = 0.0f;
    for (std::int64_t j = 0; j < p.tk; ++j) acc += ds[j] * p.k[j * p.kv_heads * d + g * d + c];
    p.dq[i * p.q_heads * d + h * d + c] += acc;
  }
  // dk[j] += ds_j·q_i, dv[j] += p_j·dout_i : one (j, c) pair per thread step.
  for (std::int64_t jc = threadIdx.x; jc < p.tk * d; jc += kAttnThreads) {
    const std::int64_t j = jc / d, c = jc % d;
    if (prob[j] == 0.0f && ds[j] == 0.0f) continue;
    atomicAdd(p.dk + j * p.kv_heads * d + g * d + c, ds[j] * qi[c]);
    atomicAdd(p.dv + j * p.kv_heads * d + g * d + c, prob[j] * doi[c]);
  }
}

}  // namespace detail

inline void attention_forward(const AttentionParams& p, cudaStream_t stream = nullptr) {
  check_attention(p, "cuda::attention_forward");
  const dim3 grid(static_cast<unsigned>(p.tq), static_cast<unsigned>(p.q_heads));
  const std::size_t smem = static_cast<std::size_t>(attention_row_floats(p.tk)) * sizeof(float);
  if (smem > 48 * 1024)
    VIDLORA_CUDA_CHECK(cudaFuncSetAttribute(detail::attention_forward_kernel<>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  detail::attention_forward_kernel<><<<grid, detail::kAttnThreads, smem, stream>>>(p);
  VIDLORA_CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

inline void attention_backward(const AttentionParams& p, cudaStream_t stream = nullptr) {
  check_attention(p, "cuda::attention_backward");
  vidlora::cuda::check_arg(p.d_out && p.dq && p.dk && p.dv, "cuda::attention_backward", "needs d_out, dq, dk, dv");
  const dim3 grid(static_cast<unsigned>(p.tq), static_cast<unsigned>(p.q_heads));
  const std::size_t smem = 2 * static_cast<std::size_t>(attention_row_floats(p.tk)) * sizeof(float);
  if (smem > 48 * 1024)
    VIDLORA_CUDA_CHECK(cudaFuncSetAttribute(detail::attention_backward_kernel<>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  detail::attention_backward_kernel<><<<grid, detail::kAttnThreads, smem, stream>>>(p);
  VIDLORA_CUDA_CHECK_LAUNCH("attention_backward_kernel");
}

}  // namespace vidlora::model::cuda
#endif
