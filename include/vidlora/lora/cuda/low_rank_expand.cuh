#pragma once
// The LoRA layer's rank-r expansions on the GPU:  out[T, N] = alpha · L[T, r] · R  (⊙ a stored dropout mask)
//   forward   y_lora = scaling · h · Bᵀ     L = h [T, r],  R = lora_B [N = out, r]   (RLayout::ColsByRank)
//   backward  dx_lora = mask ⊙ (g · A)      L = g [T, r],  R = lora_A [r, N = in]    (RLayout::RankByCols)
// With K = r ≤ 32 these products are bound by writing `out` (T·N values). A cuBLASLt GEMM reaches about half
// the write bandwidth on them (H200, bf16, T = 8192, N = 4096, r = 16: 33-37 µs for 64 MiB); this kernel keeps
// each thread's R strip in registers and the block's L rows in shared memory, so it only streams `out`, and it
// applies the dropout keep bits in the same pass instead of a second read-modify-write over dx.
//
// The per-element math (alpha · Σ_k L[t,k]·R(n,k), k ascending, then the keep factor) is host-device code run
// by the CPU tests; the kernel distributes it. Shapes the kernel does not take (rank > 32, N not a multiple of
// the strip width, misaligned output) return false from low_rank_expand and the caller uses cuBLASLt.

#include <cstdint>
#include <string>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/lora/dropout.hpp>

namespace vidlora::lora::cuda {

enum class RLayout : std::uint8_t {
  ColsByRank,  // R stored [N, r]: R(n, k) = r[n·r + k]  (lora_B)
  RankByCols,  // R stored [r, N]: R(n, k) = r[k·N + n]  (lora_A)
};

struct LowRankExpandParams {
  const void* l = nullptr;  // [rows, rank] of T
  const void* r = nullptr;  // see RLayout, of T
  void* out = nullptr;      // [rows, cols] of T, written (not accumulated)
  std::int64_t rows = 0, cols = 0;
  int rank = 0;
  float alpha = 1.0f;
  RLayout layout = RLayout::ColsByRank;
  const std::uint8_t* keep_bits = nullptr;  // dropout keep bits of out's row-major offsets (4 per byte), or null
  float dropout = 0.0f;                     // the p the bits were drawn with
};

VIDLORA_HOST_DEVICE inline std::int64_t low_rank_r_index(const LowRankExpandParams& p, std::int64_t n, int k) {
  return p.layout == RLayout::ColsByRank ? n * p.rank + k : static_cast<std::int64_t>(k) * p.cols + n;
}

// One output value from its fp32 dot product: alpha · acc, times the keep factor of offset i when masked.
VIDLORA_HOST_DEVICE inline float low_rank_value(const LowRankExpandParams& p, float acc, std::int64_t i) {
  float v = p.alpha * acc;
  if (p.keep_bits) v *= dropout_factor(p.keep_bits[i >> 2], static_cast<int>(i & 3), p.dropout);
  return v;
}

// Host reference of out[t, n] in the kernel's order (float operands; the CPU tests).
inline float low_rank_expand_element(const LowRankExpandParams& p, const float* l, const float* r, std::int64_t t,
                                     std::int64_t n) {
  float acc = 0.0f;
  for (int k = 0; k < p.rank; ++k) acc += l[t * p.rank + k] * r[low_rank_r_index(p, n, k)];
  return low_rank_value(p, acc, t * p.cols + n);
}

// The strip width (output values per thread) the kernel uses for element size `elem_bytes` and `rank`, or 0
// when it takes no such shape: 16-byte strips (8 bf16 or 4 float) up to rank 16, 4 values up to rank 32.
inline int low_rank_strip(std::size_t elem_bytes, int rank) {
  if (rank < 1 || rank > 32) return 0;
  if (elem_bytes == 2) return rank <= 16 ? 8 : 4;
  return 4;
}

inline void check_low_rank(const LowRankExpandParams& p) {
  vidlora::cuda::check_arg(p.l && p.r && p.out && p.rows > 0 && p.cols > 0 && p.rank > 0, "cuda::low_rank_expand",
                           "needs L, R, out and positive rows " + std::to_string(p.rows) + ", cols " +
                               std::to_string(p.cols) + ", rank " + std::to_string(p.rank));
}

}  // namespace vidlora::lora::cuda

#if VIDLORA_KERNELS
#include <cuda_bf16.h>

namespace vidlora::lora::cuda {
namespace detail {

inline constexpr int kExpandThreads = 256;
inline constexpr int kExpandRows = 64;  // rows of L staged per block

template <class T, int kCols>
struct alignas(kCols * sizeof(T)) Strip {
  T v[kCols];
};

// Block (x, y): columns [x·256·kCols, +256·kCols), rows [y·64, +64). Thread j keeps R(n, k) for its kCols
// columns in registers (zero past rank), reads the block's L rows from shared memory (one broadcast address
// per step) and writes kCols values per row with one vector store, neighbours' stores adjacent.
template <class T, int kRank, int kCols>
__global__ void __launch_bounds__(kExpandThreads, 1) low_rank_expand_kernel(LowRankExpandParams p) {
  VIDLORA_STATIC_SHARED(4, float, ls, [kExpandRows][kRank]);
  const T* L = static_cast<const T*>(p.l);
  const T* R = static_cast<const T*>(p.r);
  T* out = static_cast<T*>(p.out);
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.y) * kExpandRows;
  const int rows_here = static_cast<int>(p.rows - row0 < kExpandRows ? p.rows - row0 : kExpandRows);
  for (int idx = threadIdx.x; idx < kExpandRows * kRank; idx += kExpandThreads) {
    const int rr = idx / kRank, k = idx % kRank;
    ls[rr][k] = (rr < rows_here && k < p.rank) ? static_cast<float>(L[(row0 + rr) * p.rank + k]) : 0.0f;
  }
  const std::int64_t n0 = (static_cast<std::int64_t>(blockIdx.x) * kExpandThreads + threadIdx.x) * kCols;
  const bool active = n0 < p.cols;  // cols % kCols == 0: an active strip is whole
  float rv[kCols][kRank];
  VIDLORA_UNROLL
  for (int c = 0; c < kCols; ++c) VIDLORA_UNROLL
  for (int k = 0; k < kRank; ++k)
    rv[c][k] = (active && k < p.rank) ? static_cast<float>(R[low_rank_r_index(p, n0 + c, k)]) : 0.0f;
  __syncthreads();
  if (!active) return;
  for (int rr = 0; rr < rows_here; ++rr) {
    float acc[kCols];
    VIDLORA_UNROLL
    for (int c = 0; c < kCols; ++c) acc[c] = 0.0f;
    VIDLORA_UNROLL
    for (int k = 0; k < kRank; ++k) {
      const float lv = ls[rr][k];
      VIDLORA_UNROLL
      for (int c = 0; c < kCols; ++c) acc[c] += lv * rv[c][k];
    }
    const std::int64_t i0 = (row0 + rr) * p.cols + n0;
    Strip<T, kCols> s;
    VIDLORA_UNROLL
    for (int c = 0; c < kCols; ++c) s.v[c] = static_cast<T>(low_rank_value(p, acc[c], i0 + c));
    *reinterpret_cast<Strip<T, kCols>*>(out + i0) = s;
  }
}

template <class T, int kRank, int kCols>
void launch_low_rank_expand(const LowRankExpandParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(vidlora::cuda::ceil_div(p.cols, std::int64_t{kExpandThreads} * kCols)),
                  static_cast<unsigned>(vidlora::cuda::ceil_div(p.rows, kExpandRows)));
  VIDLORA_LAUNCH(grid, kExpandThreads, 0, stream, low_rank_expand_kernel<T, kRank, kCols>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("low_rank_expand_kernel");
}

}  // namespace detail

// Runs the expansion when the kernel takes the shape (see low_rank_strip; cols a multiple of the strip and out
// aligned to it; rows within the grid's y limit) and returns true; returns false, doing nothing, otherwise.
template <class T>
bool low_rank_expand(const LowRankExpandParams& p, cudaStream_t stream = nullptr) {
  check_low_rank(p);
  const int strip = low_rank_strip(sizeof(T), p.rank);
  if (strip == 0 || p.cols % strip != 0 || p.rows > std::int64_t{65535} * detail::kExpandRows ||
      reinterpret_cast<std::uintptr_t>(p.out) % (strip * sizeof(T)) != 0)
    return false;
  if constexpr (sizeof(T) == 2) {
    if (strip == 8)
      detail::launch_low_rank_expand<T, 16, 8>(p, stream);
    else
      detail::launch_low_rank_expand<T, 32, 4>(p, stream);
  } else {
    if (p.rank <= 16)
      detail::launch_low_rank_expand<T, 16, 4>(p, stream);
    else
      detail::launch_low_rank_expand<T, 32, 4>(p, stream);
  }
  return true;
}

}  // namespace vidlora::lora::cuda
#endif
