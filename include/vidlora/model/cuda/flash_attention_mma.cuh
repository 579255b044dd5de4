#pragma once
// The causal GQA attention forward with its tiles in registers (FlashAttention-2's forward), for 16-bit operands on
// sm_80+ at head dims 64 and 128: model/cuda/flash_attention.cuh's contract (AttentionParams: visibility, scale 1/√d,
// out and lse, fp32 in and out) and its rounding points (Q, K, V rounded to bf16 / fp16 as they enter a tile, P as
// the softmax makes it; scores, softmax statistics and accumulators fp32; l sums P before it is rounded), without
// its shared-memory round trips: each warp owns 16 query rows and keeps their Q fragments, scores S, probabilities P
// and output accumulator O in registers as the mma.sync m16n8k16 fragments of the PTX ISA (the accumulator layout of
// S is the A-operand layout of P, so P never leaves the registers); only the K and V tiles go through shared memory,
// where the four warps of a block share them.
//
//   grid (query tiles of 64 rows, q heads), 128 threads; per key tile of 64: K, V → shared memory (16-bit pairs),
//   S = Q·Kᵀ (mma), scale and mask, the row max over the four lanes of a row (two shuffles), P = 2^(S − m) (the
//   scores in log2 units, as FlashAttention-2), O = O·α + P·V (mma); at the end the row sums over the four lanes,
//   out = O / l and lse = m·ln 2 + ln l.
//
// Sums run in a fixed order (no atomics): two runs give the same bits. Not the bits of the shared-memory kernels
// (other sum orders, exp2 against exp): the backward, which recomputes P from this lse, is checked against the CPU
// with the same tolerances. The body is written once per thread over a policy (`thread()`, `sync()`, `shfl_xor`,
// `mma`: the warp-wide product), so a host test runs it on host threads with the fragment layouts written from the
// PTX ISA (tests/cuda_host/simt_block.hpp) against the CPU attention.
// fmt-free (nvcc compiles it).

#include <cmath>
#include <cstdint>
#include <string>

#include <vidlora/core/portability.hpp>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/flash_operands.cuh>

namespace vidlora::model::cuda {

inline constexpr int kMmaWarps = 4;
inline constexpr int kMmaThreads = 32 * kMmaWarps;
inline constexpr int kMmaQueryRows = 16 * kMmaWarps;  // a block's query tile: 16 rows per warp
inline constexpr int kMmaKeys = 64;                   // a key tile

// The head dims the register-tile forward is compiled for (the decoders' 128, CLIP ViT-L/14's 64).
VIDLORA_HOST_DEVICE constexpr bool flash_mma_head_dim(std::int64_t d) { return d == 64 || d == 128; }

// Shared memory at head dim D: the K and V tiles, kMmaKeys rows of D 16-bit values as 32-bit words of two, each row
// 4 words longer than its data (a row is then 4 banks from the next: a fragment's 8 rows × 4 lanes fall on 32
// different banks for K, and on 16 banks with pairs of lanes reading one word for V), and a flag per key of the tile
// (inside the sequence and not masked).
template <int D>
struct FlashMmaSmem {
  static constexpr int row_words = D / 2 + 4;
  static constexpr int tile_words = kMmaKeys * row_words;
  static constexpr int words = 2 * tile_words + kMmaKeys;
  static constexpr std::int64_t bytes = std::int64_t{words} * 4;
};

// Two floats as one register of two 16-bit operands, the first in the low half (the PTX ISA's element order),
// rounded as the format rounds.
template <class F>
VIDLORA_HOST_DEVICE inline std::uint32_t mma_pack(float lo, float hi) {
  return static_cast<std::uint32_t>(F::from_float(lo)) | (static_cast<std::uint32_t>(F::from_float(hi)) << 16);
}

// The forward of query tile `qt` (rows [64·qt, 64·qt + 64)), query head `h`. `W` provides: `format` (a
// FlashOperandFormat of bf16 or fp16); int thread() (0..127; lane = thread % 32, warp = thread / 32); void sync() (the
// block's barrier); float shfl_xor(float v, int lane_mask) (the warp's butterfly exchange); void mma(float (&c)[4],
// const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) (c += a·b for the warp's 16×16 A and 16×8 B fragments,
// fp32 accumulation: mma.sync.aligned.m16n8k16.row.col). With g = lane / 4 and t = lane % 4 a lane holds: of A (row
// r, column k) rows g and g + 8, columns 2t, 2t + 1 and 8 more (registers: (g, 2t), (g + 8, 2t), (g, 2t + 8),
// (g + 8, 2t + 8), two values each); of B (k, n) rows 2t, 2t + 1 and 8 more of column g; of C rows g and g + 8,
// columns 2t and 2t + 1. `smem` holds FlashMmaSmem<D>::words.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int D, class W>
VIDLORA_HOST_DEVICE void flash_mma_forward_block(W& w, const AttentionParams& p, std::int64_t qt, std::int64_t h,
                                                 std::uint32_t* smem) {
  using F = typename W::format;
  static_assert(F::bytes == 2, "flash_mma_forward_block: 16-bit operands (bf16 or fp16)");
  static_assert(flash_mma_head_dim(D), "flash_mma_forward_block: head dim 64 or 128");
  constexpr int kd = D / 16;         // k-steps of S = Q·Kᵀ over the head dim
  constexpr int ns = kMmaKeys / 8;   // S's n-tiles of 8 keys
  constexpr int no = D / 8;          // O's n-tiles of 8 columns
  constexpr int kv = kMmaKeys / 16;  // k-steps of O += P·V over the keys
  constexpr int rw = FlashMmaSmem<D>::row_words;
  std::uint32_t* ks = smem;
  std::uint32_t* vs = smem + FlashMmaSmem<D>::tile_words;
  std::uint32_t* key_ok = vs + FlashMmaSmem<D>::tile_words;
  const int tid = w.thread(), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const std::int64_t i0 = qt * kMmaQueryRows;
  const std::int64_t row[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};  // this lane's two query rows
  const bool row_in[2] = {row[0] < p.tq, row[1] < p.tq};
  const std::int64_t qstride = p.q_heads * D, kvstride = p.kv_heads * D, kvh = kv_head_of(p, h);
  const float* qh = p.q + h * D;
  // Q's fragments for every k-step, once (zeros past tq).
  std::uint32_t qf[kd][4];
  VIDLORA_UNROLL
  for (int kk = 0; kk < kd; ++kk) {
    const int c = kk * 16 + 2 * t;
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float* q = qh + (row_in[r] ? row[r] : 0) * qstride;
      qf[kk][r] = row_in[r] ? mma_pack<F>(q[c], q[c + 1]) : 0u;
      qf[kk][r + 2] = row_in[r] ? mma_pack<F>(q[c + 8], q[c + 9]) : 0u;
    }
  }
  float o[no][4];
  VIDLORA_UNROLL
  for (int n = 0; n < no; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // the rows' running max score, in log2 units
  float l[2] = {0.0f, 0.0f};            // this lane's part of the rows' sums of P
  const float scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));
  const std::int64_t key_end = flash_key_end(p, i0, kMmaQueryRows);
  for (std::int64_t k0 = 0; k0 < key_end; k0 += kMmaKeys) {
    // K and V rows [k0, k0 + 64) of kv head kvh as 16-bit pairs (zeros past tk), and which keys are valid.
    for (int e = tid; e < kMmaKeys * (D / 2); e += kMmaThreads) {
      const int r = e / (D / 2), cw = e % (D / 2);
      const std::int64_t j = k0 + r, at = j * kvstride + kvh * D + 2 * cw;
      const bool in = j < p.tk;
      ks[r * rw + cw] = in ? mma_pack<F>(p.k[at], p.k[at + 1]) : 0u;
      vs[r * rw + cw] = in ? mma_pack<F>(p.v[at], p.v[at + 1]) : 0u;
    }
    for (int e = tid; e < kMmaKeys; e += kMmaThreads) {
      const std::int64_t j = k0 + e;
      key_ok[e] = j < p.tk && (p.key_mask == nullptr || p.key_mask[j] != 0) ? 1u : 0u;
    }
    w.sync();
    // S = Q·Kᵀ: B(k, n) = K[key n][column k], two consecutive columns per word.
    float s[ns][4];
    VIDLORA_UNROLL
    for (int n = 0; n < ns; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const std::uint32_t* krow = ks + (n * 8 + g) * rw + t;
      VIDLORA_UNROLL
      for (int kk = 0; kk < kd; ++kk) {
        const std::uint32_t b[2] = {krow[kk * 8], krow[kk * 8 + 4]};
        w.mma(s[n], qf[kk], b);
      }
    }
    // Scaled scores in log2 units (-inf where not visible) and the rows' max over the tile (the four lanes of a row
    // differ in t: lane bits 0 and 1).
    float mx[2] = {-INFINITY, -INFINITY};
    VIDLORA_UNROLL
    for (int n = 0; n < ns; ++n) VIDLORA_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2, c = n * 8 + 2 * t + (e & 1);
      const bool visible = row_in[r] && key_ok[c] != 0u && k0 + c <= p.q_offset + row[r];
      const float x = visible ? s[n][e] * scale_log2 : -INFINITY;
      s[n][e] = x;
      mx[r] = x > mx[r] ? x : mx[r];
    }
    float alpha[2];
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float a = w.shfl_xor(mx[r], 1);
      mx[r] = a > mx[r] ? a : mx[r];
      const float b = w.shfl_xor(mx[r], 2);
      mx[r] = b > mx[r] ? b : mx[r];
      const float mn = m[r] > mx[r] ? m[r] : mx[r];
      alpha[r] = m[r] == -INFINITY ? 1.0f : exp2f(m[r] - mn);  // O and l are 0 until a key is visible
      m[r] = mn;
    }
    float sum[2] = {0.0f, 0.0f};
    VIDLORA_UNROLL
    for (int n = 0; n < ns; ++n) VIDLORA_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int r = e / 2;
      const float pv = s[n][e] == -INFINITY ? 0.0f : exp2f(s[n][e] - m[r]);
      s[n][e] = pv;
      sum[r] += pv;
    }
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
    VIDLORA_UNROLL
    for (int n = 0; n < no; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // O += P·V. P's A fragment of k-step kk is S's accumulators of n-tiles 2kk and 2kk + 1; B(k, n) = V[key k][column
    // n]: the 16-bit halves of column n of rows 2t, 2t + 1, 2t + 8, 2t + 9.
    VIDLORA_UNROLL
    for (int kk = 0; kk < kv; ++kk) {
      const std::uint32_t a[4] = {mma_pack<F>(s[2 * kk][0], s[2 * kk][1]), mma_pack<F>(s[2 * kk][2], s[2 * kk][3]),
                                  mma_pack<F>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  mma_pack<F>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      const std::uint32_t* v0 = vs + (kk * 16 + 2 * t) * rw;
      VIDLORA_UNROLL
      for (int n = 0; n < no; ++n) {
        const int col = n * 8 + g, word = col / 2, shift = (col % 2) * 16;
        const auto half = [&](int r) { return (v0[r * rw + word] >> shift) & 0xffffu; };
        const std::uint32_t b[2] = {half(0) | (half(1) << 16), half(8) | (half(9) << 16)};
        w.mma(o[n], a, b);
      }
    }
    w.sync();  // every warp is done with K and V before the next tile overwrites them
  }
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += w.shfl_xor(l[r], 1);
    l[r] += w.shfl_xor(l[r], 2);
  }
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) {
    if (!row_in[r]) continue;
    float* out = p.out + row[r] * qstride + h * D;
    VIDLORA_UNROLL
    for (int n = 0; n < no; ++n) {
      out[n * 8 + 2 * t] = l[r] > 0.0f ? o[n][2 * r] / l[r] : 0.0f;
      out[n * 8 + 2 * t + 1] = l[r] > 0.0f ? o[n][2 * r + 1] / l[r] : 0.0f;
    }
    if (t == 0 && p.lse) p.lse[h * p.tq + row[r]] = l[r] > 0.0f ? m[r] * 0.6931471805599453f + logf(l[r]) : -INFINITY;
  }
}

}  // namespace vidlora::model::cuda

#if defined(__CUDACC__)
#include <vidlora/core/cuda/status.cuh>

namespace vidlora::model::cuda {
namespace detail {

template <FlashOperands K>
struct FlashMmaDeviceWarp {
  using format = FlashOperandFormat<K>;
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ void sync() { __syncthreads(); }
  __device__ float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
  __device__ void mma(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (K == FlashOperands::BF16)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    (void)c, (void)a, (void)b;
    __trap();  // never launched: flash_mma_forward_takes checks the kernel's architecture
#endif
  }
};

template <int D, FlashOperands K>
__global__ void __launch_bounds__(kMmaThreads) flash_mma_forward_kernel(AttentionParams p) {
  __shared__ std::uint32_t smem[FlashMmaSmem<D>::words];
  FlashMmaDeviceWarp<K> w;
  flash_mma_forward_block<D>(w, p, blockIdx.x, blockIdx.y, smem);
}

// Whether the kernel was compiled for sm_80+ (mma.sync m16n8k16 with bf16 / fp16 operands): a binary built for an
// older architecture and JIT-compiled for this one runs the older architecture's code.
template <int D, FlashOperands K>
bool flash_mma_kernel_built() {
  static const bool built = [] {
    cudaFuncAttributes a{};
    return cudaFuncGetAttributes(&a, flash_mma_forward_kernel<D, K>) == cudaSuccess && a.ptxVersion >= 80;
  }();
  return built;
}

template <int D>
void launch_flash_mma(const AttentionParams& p, FlashOperands k, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.tq + kMmaQueryRows - 1) / kMmaQueryRows), static_cast<unsigned>(p.q_heads));
  if (k == FlashOperands::BF16)
    flash_mma_forward_kernel<D, FlashOperands::BF16><<<grid, kMmaThreads, 0, stream>>>(p);
  else
    flash_mma_forward_kernel<D, FlashOperands::F16><<<grid, kMmaThreads, 0, stream>>>(p);
  VIDLORA_CUDA_CHECK_LAUNCH("cuda::flash_mma_forward");
}

}  // namespace detail

// Whether the register-tile forward takes this problem on the current device: 16-bit operands, head dim 64 or 128,
// a GPU of compute capability 8.0 or newer and the kernel built for one.
inline bool flash_mma_forward_takes(const AttentionParams& p, FlashOperands k) {
  if (k == FlashOperands::F32 || !flash_mma_head_dim(p.head_dim)) return false;
  int device = 0, major = 0;
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) return false;
  const bool bf16 = k == FlashOperands::BF16;
  if (p.head_dim == 64)
    return bf16 ? detail::flash_mma_kernel_built<64, FlashOperands::BF16>()
                : detail::flash_mma_kernel_built<64, FlashOperands::F16>();
  return bf16 ? detail::flash_mma_kernel_built<128, FlashOperands::BF16>()
              : detail::flash_mma_kernel_built<128, FlashOperands::F16>();
}

// The forward: out [tq, q_heads·d] and lse [q_heads, tq], as flash_attention_forward, where flash_mma_forward_takes.
inline void flash_mma_forward(const AttentionParams& p, FlashOperands k, cudaStream_t stream = nullptr) {
  const char* who = "cuda::flash_mma_forward";
  vidlora::cuda::check_arg(p.q && p.k && p.v && p.out, who, "needs q, k, v and out");
  vidlora::cuda::check_arg(p.tq > 0 && p.tk > 0 && p.q_heads > 0 && p.kv_heads > 0 && p.q_heads % p.kv_heads == 0, who,
                           "needs tq, tk > 0 and q_heads a multiple of kv_heads");
  vidlora::cuda::check_arg(flash_mma_forward_takes(p, k), who,
                           "takes bf16 / fp16 operands at head dim 64 or 128 on sm_80+ (got " +
                               std::string(flash_operands_name(k)) + ", head dim " + std::to_string(p.head_dim) +
                               "): use flash_attention_forward");
  if (p.head_dim == 64)
    detail::launch_flash_mma<64>(p, k, stream);
  else
    detail::launch_flash_mma<128>(p, k, stream);
}

}  // namespace vidlora::model::cuda
#endif
