#pragma once
// Grouped-query causal attention of one sequence on the GPU, forward and backward, fp32: the second
// implementation of model::attention_forward / attention_backward (same visibility rule, scores q·kᵀ/√d,
// max-subtracted softmax with the sum in double, key-padding mask). One block per (query row, query head);
// scores live in shared memory, so keys are limited to kMaxAttentionKeys. The backward recomputes the
// probabilities and accumulates dk/dv either with atomics (summation order differs between runs) or, when the
// caller passes a row_dot scratch, in a second kernel that gives each (key, kv head) one block and sums its
// query rows in a fixed order (deterministic: two runs give the same bits; what training uses). Either way the
// order differs from the CPU: compare with a tolerance. A tiled flash-style kernel is future work (docs/cuda.md).

#include <cmath>
#include <cstdint>
#include <string>

#include <vidlora/core/cuda/launch.cuh>
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
  float* dk = nullptr;  // accumulated (atomicAdd, or += by the deterministic kernel)
  float* dv = nullptr;  // accumulated (atomicAdd, or += by the deterministic kernel)
  // [q_heads, tq] scratch: Σ_j p_ij·dp_ij per query row. Given, dk/dv are summed deterministically (a second kernel,
  // which reads lse as the forward saved it); null, by atomics.
  float* row_dot = nullptr;
  // The tiled kernels' backward (model/cuda/flash_attention.cuh) only: the forward's output [tq, q_heads·d]. Given,
  // row_dot is Σ_c dO·O per row (FlashAttention-2's D: O = Σ_j p·V, so it is Σ_j p·dp), computed before the dq
  // kernel, which then walks the keys once instead of twice.
  const float* forward_out = nullptr;
  // The register-tile kernels (model/cuda/flash_attention_mma.cuh) only: q, k, v and d_out already rounded to the
  // operands' 16 bits (the bf16 / fp16 patterns of the fp32 tensors, rounded to nearest even as
  // io::cuda::round_to_16bit does; same layouts; 16-byte aligned). Given, those kernels read them instead of the fp32
  // ones: half the bytes, and the same bits (they round the fp32 values the same way themselves). Every other kernel
  // reads the fp32 tensors, which stay required.
  const std::uint16_t* q16 = nullptr;
  const std::uint16_t* k16 = nullptr;
  const std::uint16_t* v16 = nullptr;
  const std::uint16_t* d_out16 = nullptr;
  // The register-tile forward only: out rounded to the operands' 16 bits too ([tq, q_heads·d], each value as
  // io::cuda::round_to_16bit rounds it), for a 16-bit consumer of the output (the decoder's o_proj frozen GEMM). Every
  // other kernel refuses it.
  std::uint16_t* out16 = nullptr;
  std::int64_t tq = 0, tk = 0, q_heads = 0, kv_heads = 0, head_dim = 0, q_offset = 0;
};

// Whether query i sees key j (causal from absolute position q_offset + i, and not masked).
VIDLORA_HOST_DEVICE inline bool attention_visible(const AttentionParams& p, std::int64_t i, std::int64_t j) {
  return j <= p.q_offset + i && j < p.tk && (p.key_mask == nullptr || p.key_mask[j] != 0);
}
// The first query row that sees key j (causality only; the key mask is checked separately).
VIDLORA_HOST_DEVICE inline std::int64_t attention_first_query(const AttentionParams& p, std::int64_t j) {
  return j - p.q_offset > 0 ? j - p.q_offset : 0;
}

// One past the last key any of the query rows [i0, i0 + bq) sees (causality; the mask is checked per pair).
VIDLORA_HOST_DEVICE inline std::int64_t flash_key_end(const AttentionParams& p, std::int64_t i0, int bq) {
  const std::int64_t last_row = (i0 + bq < p.tq ? i0 + bq : p.tq) - 1;
  return p.q_offset + last_row + 1 < p.tk ? p.q_offset + last_row + 1 : p.tk;
}

// d loss / d score of one visible pair: p·(dp − Σ_j p·dp)·scale.
VIDLORA_HOST_DEVICE inline float attention_score_grad(float prob, float dp, float row_dot, float scale) {
  return prob * (dp - row_dot) * scale;
}
inline constexpr std::int64_t kMaxDeterministicHeadDim = 256;  // the kv-grad kernel keeps d/32 values per lane

// The key/value head query head h reads.
VIDLORA_HOST_DEVICE inline std::int64_t kv_head_of(const AttentionParams& p, std::int64_t h) {
  return h / (p.q_heads / p.kv_heads);
}

inline void check_attention(const AttentionParams& p, const char* who) {
  vidlora::cuda::check_arg(
      p.tq > 0 && p.tk > 0 && p.head_dim > 0 && p.q_heads > 0 && p.kv_heads > 0 && p.q_heads % p.kv_heads == 0, who,
      "needs tq, tk, head_dim > 0 and q_heads a multiple of kv_heads");
  vidlora::cuda::check_arg(
      p.row_dot == nullptr || (p.head_dim <= kMaxDeterministicHeadDim && p.lse != nullptr), who,
      "the deterministic dk/dv kernel needs head_dim <= " + std::to_string(kMaxDeterministicHeadDim) + " (got " +
          std::to_string(p.head_dim) + ") and the forward's lse");
  vidlora::cuda::check_arg(p.tk <= kMaxAttentionKeys, who,
                           std::to_string(p.tk) + " keys exceed the " + std::to_string(kMaxAttentionKeys) +
                               " this kernel holds in shared memory");
}

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
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
  VIDLORA_DYNAMIC_SHARED(16, float, prob);
  VIDLORA_STATIC_SHARED(8, double, red, [kAttnThreads]);
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
  VIDLORA_DYNAMIC_SHARED(16, float, smem);
  float* prob = smem;
  float* ds = smem + attention_row_floats(p.tk);
  VIDLORA_STATIC_SHARED(8, double, red, [kAttnThreads]);
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
    ds[j] = attention_score_grad(prob[j], ds[j], static_cast<float>(row_dot), scale);
  __syncthreads();
  for (std::int64_t c = threadIdx.x; c < d; c += kAttnThreads) {
    float acc = 0.0f;
    for (std::int64_t j = 0; j < p.tk; ++j) acc += ds[j] * p.k[j * p.kv_heads * d + g * d + c];
    p.dq[i * p.q_heads * d + h * d + c] += acc;
  }
  if (p.row_dot) {  // dk/dv by attention_kv_grad_kernel
    if (threadIdx.x == 0) p.row_dot[h * p.tq + i] = static_cast<float>(row_dot);
    return;
  }
  // dk[j] += ds_j·q_i, dv[j] += p_j·dout_i : one (j, c) pair per thread step.
  for (std::int64_t jc = threadIdx.x; jc < p.tk * d; jc += kAttnThreads) {
    const std::int64_t j = jc / d, c = jc % d;
    if (prob[j] == 0.0f && ds[j] == 0.0f) continue;
    atomicAdd(p.dk + j * p.kv_heads * d + g * d + c, ds[j] * qi[c]);
    atomicAdd(p.dv + j * p.kv_heads * d + g * d + c, prob[j] * doi[c]);
  }
}

inline constexpr int kKvGradWarps = 4;
inline constexpr int kKvGradPerLane = static_cast<int>(kMaxDeterministicHeadDim / 32);

// Deterministic dk/dv: one block per (key j, kv head g); its warps take the visible (query head, row) pairs
// round-robin in a fixed order, each lane holding d/32 columns; a pair's two dot products are warp butterflies
// (every lane ends with the same bits); the warps' partial sums are added in warp order.
template <class = void>  // a template: header kernels get one definition across TUs
__global__ void attention_kv_grad_kernel(AttentionParams p) {
  VIDLORA_STATIC_SHARED(4, float, s_dk, [kKvGradWarps][kMaxDeterministicHeadDim]);
  VIDLORA_STATIC_SHARED(4, float, s_dv, [kKvGradWarps][kMaxDeterministicHeadDim]);
  const std::int64_t j = blockIdx.x, g = blockIdx.y, d = p.head_dim;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));
  float dk[kKvGradPerLane] = {}, dv[kKvGradPerLane] = {}, kr[kKvGradPerLane] = {}, vr[kKvGradPerLane] = {};
  const bool key_valid = p.key_mask == nullptr || p.key_mask[j] != 0;
  const std::int64_t first = attention_first_query(p, j);
  if (key_valid && first < p.tq) {
    const std::int64_t group = p.q_heads / p.kv_heads, rows = p.tq - first;
    for (int u = 0; u < kKvGradPerLane; ++u) {
      const std::int64_t c = lane + 32 * u;
      if (c < d) {
        kr[u] = p.k[j * p.kv_heads * d + g * d + c];
        vr[u] = p.v[j * p.kv_heads * d + g * d + c];
      }
    }
    for (std::int64_t n = warp; n < group * rows; n += kKvGradWarps) {
      const std::int64_t h = g * group + n / rows, i = first + n % rows;
      const float* qi = p.q + i * p.q_heads * d + h * d;
      const float* doi = p.d_out + i * p.q_heads * d + h * d;
      float qr[kKvGradPerLane] = {}, dr[kKvGradPerLane] = {};
      float s = 0.0f, dp = 0.0f;
      for (int u = 0; u < kKvGradPerLane; ++u) {
        const std::int64_t c = lane + 32 * u;
        if (c < d) {
          qr[u] = qi[c];
          dr[u] = doi[c];
        }
        s += qr[u] * kr[u];
        dp += dr[u] * vr[u];
      }
      for (int off = 16; off > 0; off /= 2) {
        s += __shfl_xor_sync(0xffffffffu, s, off);
        dp += __shfl_xor_sync(0xffffffffu, dp, off);
      }
      const float prob = expf(s * scale - p.lse[h * p.tq + i]);
      const float ds = attention_score_grad(prob, dp, p.row_dot[h * p.tq + i], scale);
      for (int u = 0; u < kKvGradPerLane; ++u) {
        dk[u] += ds * qr[u];
        dv[u] += prob * dr[u];
      }
    }
  }
  for (int u = 0; u < kKvGradPerLane; ++u) {
    const std::int64_t c = lane + 32 * u;
    if (c < d) {
      s_dk[warp][c] = dk[u];
      s_dv[warp][c] = dv[u];
    }
  }
  __syncthreads();
  for (std::int64_t c = threadIdx.x; c < d; c += kKvGradWarps * 32) {
    float a = 0.0f, b = 0.0f;
    for (int w = 0; w < kKvGradWarps; ++w) {
      a += s_dk[w][c];
      b += s_dv[w][c];
    }
    p.dk[j * p.kv_heads * d + g * d + c] += a;
    p.dv[j * p.kv_heads * d + g * d + c] += b;
  }
}

// Lets `kernel` (one of the row kernels, whose `red` takes kAttnThreads doubles of static shared memory) launch with
// `dynamic` bytes of dynamic shared memory: a GPU gives a block 48 KiB of static and dynamic together, and up to its
// opt-in maximum with cudaFuncAttributeMaxDynamicSharedMemorySize set, which it refuses above that maximum less the
// static bytes; a clear error here then, naming the keys.
template <class Kernel>
void allow_row_kernel_shared(Kernel kernel, std::size_t dynamic, std::int64_t tk, const char* who) {
  const std::size_t statics = sizeof(double) * kAttnThreads;
  if (statics + dynamic <= 48 * 1024) return;
  int device = 0, optin = 0;
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  vidlora::cuda::check_arg(statics + dynamic <= static_cast<std::size_t>(optin), who, [&] {
    return std::to_string(tk) + " keys need " + std::to_string(statics + dynamic) +
           " bytes of shared memory per block; this GPU gives " + std::to_string(optin) +
           " (the tiled kernels, flash_attention.cuh, have no key limit)";
  });
  VIDLORA_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dynamic)));
}

}  // namespace detail

inline void attention_forward(const AttentionParams& p, cudaStream_t stream = nullptr) {
  check_attention(p, "cuda::attention_forward");
  vidlora::cuda::check_arg(p.out16 == nullptr, "cuda::attention_forward",
                           "writes no 16-bit output (out16: the register-tile kernels only)");
  const dim3 grid(static_cast<unsigned>(p.tq), static_cast<unsigned>(p.q_heads));
  const std::size_t smem = static_cast<std::size_t>(attention_row_floats(p.tk)) * sizeof(float);
  detail::allow_row_kernel_shared(detail::attention_forward_kernel<>, smem, p.tk, "cuda::attention_forward");
  VIDLORA_LAUNCH(grid, detail::kAttnThreads, smem, stream, detail::attention_forward_kernel<>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

inline void attention_backward(const AttentionParams& p, cudaStream_t stream = nullptr) {
  check_attention(p, "cuda::attention_backward");
  vidlora::cuda::check_arg(p.d_out && p.dq && p.dk && p.dv, "cuda::attention_backward", "needs d_out, dq, dk, dv");
  const dim3 grid(static_cast<unsigned>(p.tq), static_cast<unsigned>(p.q_heads));
  const std::size_t smem = 2 * static_cast<std::size_t>(attention_row_floats(p.tk)) * sizeof(float);
  detail::allow_row_kernel_shared(detail::attention_backward_kernel<>, smem, p.tk, "cuda::attention_backward");
  VIDLORA_LAUNCH(grid, detail::kAttnThreads, smem, stream, detail::attention_backward_kernel<>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("attention_backward_kernel");
  if (p.row_dot) {
    const dim3 kv_grid(static_cast<unsigned>(p.tk), static_cast<unsigned>(p.kv_heads));
    VIDLORA_LAUNCH(kv_grid, detail::kKvGradWarps * 32, 0, stream, detail::attention_kv_grad_kernel<>)(p);
    VIDLORA_CUDA_CHECK_LAUNCH("attention_kv_grad_kernel");
  }
}

}  // namespace vidlora::model::cuda
#endif
