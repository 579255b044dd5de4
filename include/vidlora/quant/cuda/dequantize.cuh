#pragma once
// NF4 / FP4 dequantization on the GPU, bit-exact with quant::Quantizer<Format>::dequantize, and the fused
// dequantize-GEMV for batch-1 decoding (y = W·x with W never materialised).
//
// Layout (quant/quantizer.hpp): element 2j in the high nibble of byte j, one scale per `blocksize` elements,
// either float absmax or double-quantized (8-bit code over the signed dynamic map × nested absmax of its
// 256-block, plus the offset). The per-element math is host-device code below, run by the CPU tests over
// every element; the kernels only distribute it.
//
// Code tables travel in the Params struct (kernel parameter space) and are staged in shared memory:
// the shared decode_4bit / decode_dynamic index host `constexpr` arrays that device code cannot read.
// The signed dynamic map comes from quant/dynamic_map.hpp (fmt-free, so nvcc can include it).

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <type_traits>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/math.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/quant/dynamic_map.hpp>
#include <vidlora/quant/format.hpp>

namespace vidlora::quant::cuda {

// Where a quantized tensor's pieces are (device pointers for kernels, host pointers for the CPU tests).
struct Quantized4bitView {
  const std::uint8_t* packed = nullptr;   // ceil(numel / 2) bytes
  const float* absmax = nullptr;          // one per block, or null when double-quantized
  const std::uint8_t* qabsmax = nullptr;  // double-quantized: one code per block
  const float* nested_absmax = nullptr;   // double-quantized: one per 256 blocks
  float absmax_offset = 0.0f;
  std::int64_t numel = 0;
  int blocksize_log2 = 6;  // blocksize = 1 << blocksize_log2
};

// The 256-entry signed dynamic map of double quantization, staged into DecodeTables for the kernels.
inline const std::array<float, 256>& dynamic_map_table() { return kSignedDynamicMap; }

// A format's tables by value: 16 code values and the 256-entry dynamic map.
struct DecodeTables {
  float code[16];
  float dynamic_map[256];
};

template <QuantFormat Format>
DecodeTables make_decode_tables() {
  DecodeTables t{};
  for (int i = 0; i < 16; ++i) t.code[i] = Format::code[static_cast<std::size_t>(i)];
  const auto& map = dynamic_map_table();
  for (int i = 0; i < 256; ++i) t.dynamic_map[i] = map[static_cast<std::size_t>(i)];
  return t;
}

// log2 of a power-of-two blocksize in [32, 4096]; -1 otherwise.
inline int blocksize_log2(int blocksize) {
  for (int l = 5; l <= 12; ++l)
    if (blocksize == (1 << l)) return l;
  return -1;
}

// Scale of block `b`: absmax[b], or map[qabsmax[b]]·nested[b/256] + offset rounded twice as the CPU does.
VIDLORA_HOST_DEVICE inline float block_scale(const Quantized4bitView& q, const float* dynamic_map, std::int64_t b) {
  if (q.absmax) return q.absmax[b];
  return vidlora::cuda::add_rn(vidlora::cuda::mul_rn(dynamic_map[q.qabsmax[b]], q.nested_absmax[b >> 8]),
                               q.absmax_offset);
}

// Both elements of packed byte `j` (elements 2j and 2j+1; the second is padding when 2j+1 == numel).
VIDLORA_HOST_DEVICE inline void dequantize_byte(const Quantized4bitView& q, const float* code, const float* dynamic_map,
                                                std::int64_t j, float& first, float& second) {
  const std::uint8_t byte = q.packed[j];
  const std::int64_t e = 2 * j;
  const float s0 = block_scale(q, dynamic_map, e >> q.blocksize_log2);
  first = code[byte >> 4] * s0;
  const std::int64_t e1 = e + 1;
  const float s1 =
      ((e1 >> q.blocksize_log2) == (e >> q.blocksize_log2)) ? s0 : block_scale(q, dynamic_map, e1 >> q.blocksize_log2);
  second = code[byte & 0xFu] * s1;
}

// y[r] = Σ_c W[r, c] · x[c] for W [rows, cols] stored as one flattened quantized tensor (row-major).
struct DequantGemvParams {
  Quantized4bitView w;
  std::int64_t rows = 0, cols = 0;  // cols even: every row starts on a byte boundary
  const float* x = nullptr;         // [cols]
  float* y = nullptr;               // [rows]
};

// Host-side reference of one GEMV row in the kernel's per-byte order (used by the CPU tests).
inline float dequant_gemv_row(const DequantGemvParams& p, const DecodeTables& t, std::int64_t r) {
  float acc = 0.0f;
  for (std::int64_t jb = 0; jb < p.cols / 2; ++jb) {
    float a, b;
    dequantize_byte(p.w, t.code, t.dynamic_map, (r * p.cols) / 2 + jb, a, b);
    acc += a * p.x[2 * jb] + b * p.x[2 * jb + 1];
  }
  return acc;
}

// Messages built only on failure: these run before every dequantization (each frozen GEMM of a 4-bit layer).
inline void check_view(const Quantized4bitView& q, const char* who) {
  vidlora::cuda::check_arg(q.packed != nullptr && q.numel > 0, who, "empty quantized tensor");
  vidlora::cuda::check_arg((q.absmax != nullptr) != (q.qabsmax != nullptr && q.nested_absmax != nullptr), who,
                           "give either absmax or qabsmax + nested_absmax");
  vidlora::cuda::check_arg(q.blocksize_log2 >= 5 && q.blocksize_log2 <= 12, who, [&] {
    return "blocksize 2^" + std::to_string(q.blocksize_log2) + " is outside [32, 4096]";
  });
}

inline void check_gemv(const DequantGemvParams& p) {
  check_view(p.w, "dequant_gemv");
  vidlora::cuda::check_arg(
      p.rows > 0 && p.cols > 0 && p.cols % 2 == 0 && p.rows * p.cols == p.w.numel, "dequant_gemv", [&] {
        return "W [" + std::to_string(p.rows) + ", " + std::to_string(p.cols) +
               "] needs an even column count and rows·cols == numel (" + std::to_string(p.w.numel) + ")";
      });
}

}  // namespace vidlora::quant::cuda

#if VIDLORA_KERNELS
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace vidlora::quant::cuda {

namespace detail {
VIDLORA_DEVICE inline void store(float* p, float v) { *p = v; }
VIDLORA_DEVICE inline void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
VIDLORA_DEVICE inline void store(__half* p, float v) { *p = __float2half_rn(v); }

__device__ inline void stage_tables(const DecodeTables& t, float* code, float* map) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    map[i] = t.dynamic_map[i];
    if (i < 16) code[i] = t.code[i];
  }
  __syncthreads();
}

// The packed unit whose decoded values fill one 16-byte store: 2 bytes (4 floats) or 4 bytes (8 bf16 or fp16).
template <class Out>
using PackedUnit = std::conditional_t<sizeof(Out) == 4, std::uint16_t, std::uint32_t>;

// The values of one packed unit (byte b holds elements 2b and 2b + 1), all under scale s, as one 16-byte store.
template <class Out>
__device__ inline void decode_unit(Out* o, PackedUnit<Out> w, const float* code, float s) {
  constexpr int kBytes = static_cast<int>(sizeof(PackedUnit<Out>));
  float v[2 * kBytes];
  VIDLORA_UNROLL
  for (int b = 0; b < kBytes; ++b) {
    const std::uint32_t byte = (static_cast<std::uint32_t>(w) >> (8 * b)) & 0xFFu;
    v[2 * b] = code[byte >> 4] * s;
    v[2 * b + 1] = code[byte & 0xFu] * s;
  }
  if constexpr (sizeof(Out) == 4) {
    *reinterpret_cast<float4*>(o) = make_float4(v[0], v[1], v[2], v[3]);
  } else {  // 8 two-byte values: one 16-byte store
    union {
      uint4 u;
      Out h[8];
    } pack;
    VIDLORA_UNROLL
    for (int i = 0; i < 8; ++i) store(&pack.h[i], v[i]);
    *reinterpret_cast<uint4*>(o) = pack.u;
  }
}

// Units per thread per step of the grid-stride loops: the loads of all of them are issued before any is
// decoded, so each thread keeps several independent reads in flight.
inline constexpr int kDequantUnroll = 4;

// Lane l of a warp decodes packed unit g (PackedUnit: 4 or 8 elements, one scale: blocks hold >= 32
// elements), so a warp's reads are contiguous and each lane writes one 16-byte store next to its neighbours'
// (fully coalesced); kDequantUnroll units per thread at a grid stride apart. The grid is capped (grid-stride),
// so the tables are staged once per resident block. The last partial unit and unaligned tensors take the
// per-byte path.
template <class Out>
__global__ void dequantize_4bit_kernel(Quantized4bitView q, DecodeTables t, Out* out, bool vectorized) {
  using Unit = PackedUnit<Out>;
  constexpr std::int64_t kPerUnit = 2 * static_cast<std::int64_t>(sizeof(Unit));
  VIDLORA_STATIC_SHARED(4, float, code, [16]);
  VIDLORA_STATIC_SHARED(4, float, map, [256]);
  stage_tables(t, code, map);
  const std::int64_t bytes = (q.numel + 1) / 2;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t first_scalar = 0;
  if (vectorized) {
    const std::int64_t units = q.numel / kPerUnit;
    const auto* packed = reinterpret_cast<const Unit*>(q.packed);
    for (std::int64_t g0 = tid; g0 < units; g0 += kDequantUnroll * stride) {
      Unit w[kDequantUnroll];
      float s[kDequantUnroll];
      VIDLORA_UNROLL
      for (int u = 0; u < kDequantUnroll; ++u) {
        const std::int64_t g = g0 + u * stride;
        if (g < units) {
          w[u] = packed[g];
          s[u] = block_scale(q, map, (g * kPerUnit) >> q.blocksize_log2);
        }
      }
      VIDLORA_UNROLL
      for (int u = 0; u < kDequantUnroll; ++u) {
        const std::int64_t g = g0 + u * stride;
        if (g < units) decode_unit(out + g * kPerUnit, w[u], code, s[u]);
      }
    }
    first_scalar = units * static_cast<std::int64_t>(sizeof(Unit));
  }
  for (std::int64_t j = first_scalar + tid; j < bytes; j += stride) {
    float a, b;
    dequantize_byte(q, code, map, j, a, b);
    store(out + 2 * j, a);
    if (2 * j + 1 < q.numel) store(out + 2 * j + 1, b);
  }
}

// One warp per output row; shuffle reduction. Vectorised: lane l takes packed words l, l + 32, ... of the row
// (8 weights, one scale each) and the 8 matching inputs as two float4 loads, so the warp's weight reads are
// 128 contiguous bytes and its input reads 1 KiB contiguous per step.
template <class = void>  // a template: header kernels get one definition across TUs
__global__ void dequant_gemv_kernel(DequantGemvParams p, DecodeTables t, bool vectorized) {
  VIDLORA_STATIC_SHARED(4, float, code, [16]);
  VIDLORA_STATIC_SHARED(4, float, map, [256]);
  stage_tables(t, code, map);
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t warps = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  const std::int64_t row_bytes = p.cols / 2;
  for (std::int64_t r = warp; r < p.rows; r += warps) {
    float acc = 0.0f;
    const std::int64_t base = r * row_bytes;
    if (vectorized) {
      const std::int64_t row_words = row_bytes / 4;
      const auto* words = reinterpret_cast<const std::uint32_t*>(p.w.packed + base);
      const auto* x4 = reinterpret_cast<const float4*>(p.x);
#if defined(__CUDACC__)
#pragma unroll 4
#endif
      for (std::int64_t k = lane; k < row_words; k += 32) {
        const std::uint32_t w = words[k];
        const float s = block_scale(p.w, map, (2 * base + 8 * k) >> p.w.blocksize_log2);
        const float4 xa = x4[2 * k], xb = x4[2 * k + 1];
        const float xs[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        VIDLORA_UNROLL
        for (int b = 0; b < 4; ++b) {
          const std::uint32_t byte = (w >> (8 * b)) & 0xFFu;
          acc += (code[byte >> 4] * s) * xs[2 * b] + (code[byte & 0xFu] * s) * xs[2 * b + 1];
        }
      }
    } else {
      for (std::int64_t jb = lane; jb < row_bytes; jb += 32) {
        float a, b;
        dequantize_byte(p.w, code, map, base + jb, a, b);
        acc += a * p.x[2 * jb] + b * p.x[2 * jb + 1];
      }
    }
    VIDLORA_UNROLL
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xFFFFFFFFu, acc, off);
    if (lane == 0) p.y[r] = acc;
  }
}
}  // namespace detail

// out[0, numel) = dequantized q (device pointers). Out: float, __nv_bfloat16 or __half (each value code·scale in
// fp32, rounded once to nearest even).
template <QuantFormat Format, class Out>
void dequantize_4bit(const Quantized4bitView& q, Out* out, cudaStream_t stream = nullptr) {
  check_view(q, "dequantize_4bit");
  const bool vectorized = reinterpret_cast<std::uintptr_t>(q.packed) % sizeof(detail::PackedUnit<Out>) == 0 &&
                          reinterpret_cast<std::uintptr_t>(out) % 16 == 0;
  const int threads = 256;
  const unsigned blocks =
      vidlora::cuda::grid_size((q.numel + 7) / 8, threads, std::int64_t{8} * vidlora::cuda::multiprocessor_count());
  VIDLORA_LAUNCH(blocks, threads, 0, stream, detail::dequantize_4bit_kernel<Out>)
  (q, make_decode_tables<Format>(), out, vectorized);
  VIDLORA_CUDA_CHECK_LAUNCH("dequantize_4bit_kernel");
}

template <QuantFormat Format>
void dequant_gemv(const DequantGemvParams& p, cudaStream_t stream = nullptr) {
  check_gemv(p);
  // Word steps need rows of whole words that share a scale (cols % 8 == 0, blocks >= 32), a 4-byte aligned
  // weight and a 16-byte aligned input.
  const bool vectorized = p.cols % 8 == 0 && reinterpret_cast<std::uintptr_t>(p.w.packed) % 4 == 0 &&
                          reinterpret_cast<std::uintptr_t>(p.x) % 16 == 0;
  const int threads = 256;
  const unsigned blocks = vidlora::cuda::grid_size(p.rows * 32, threads);
  VIDLORA_LAUNCH(blocks, threads, 0, stream, detail::dequant_gemv_kernel<>)
  (p, make_decode_tables<Format>(), vectorized);
  VIDLORA_CUDA_CHECK_LAUNCH("dequant_gemv_kernel");
}

}  // namespace vidlora::quant::cuda
#endif
