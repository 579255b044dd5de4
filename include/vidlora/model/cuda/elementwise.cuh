#pragma once
// RMSNorm (forward/backward), RoPE (rotate-half, forward/inverse) and SwiGLU (forward/backward) on the GPU, and
// for the CLIP tower LayerNorm (forward) and quick_gelu. Per element they call model/elementwise.hpp's host-device
// functions, the CPU reference's own formulas; the row statistics (Σ x², Σ dy·w·x; LayerNorm's mean and variance)
// are accumulated in double as model::rms_norm and model::layer_norm do.
//
// RMSNorm's forward, RoPE and SwiGLU's forward can also write their output rounded to bf16 or fp16 (Output16) as they
// write the fp32 values: what a 16-bit consumer reads next (the frozen GEMMs' operands, the register-tile attention's
// inputs), without a separate rounding pass over the fp32 output (io::cuda::round_to_16bit's bits exactly).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/core/rounding.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/rope_frequencies.hpp>

namespace vidlora::model::cuda {

// A 16-bit copy of a kernel's float output, in the output's layout: each value rounded to nearest even to bf16 or
// fp16 bits by io/half.hpp's conversions (what io::cuda::round_to_16bit writes). Null bits: no copy.
struct Output16 {
  std::uint16_t* bits = nullptr;
  bool bf16 = true;  // else fp16
};
VIDLORA_HOST_DEVICE inline void store_16bit(const Output16& o, std::int64_t i, float v) {
  if (o.bits != nullptr) o.bits[i] = o.bf16 ? io::float_to_bf16_bits(v) : io::float_to_fp16_bits(v);
}

struct RmsNormParams {
  const float* x = nullptr;       // [rows, n]
  const float* weight = nullptr;  // [n]
  float* y = nullptr;             // [rows, n]
  float* inv_rms = nullptr;       // [rows] (optional in forward, input of backward)
  const float* dy = nullptr;      // backward: [rows, n]
  float* dx = nullptr;            // backward: [rows, n]
  std::int64_t rows = 0, n = 0;
  double eps = 1e-6;
  Output16 y16;  // forward: y rounded to 16 bits too [rows, n] (optional)
};

// One output element of the forward: (x·r)·w in float, as model::rms_norm.
VIDLORA_HOST_DEVICE inline float rms_norm_element(float x, float r, float w) { return (x * r) * w; }

// LayerNorm over rows (CLIP): y = float((x − mean)·inv)·w + b, the statistics in double (biased variance).
struct LayerNormParams {
  const float* x = nullptr;       // [rows, n]
  const float* weight = nullptr;  // [n]
  const float* bias = nullptr;    // [n]
  float* y = nullptr;             // [rows, n]
  std::int64_t rows = 0, n = 0;
  double eps = 1e-5;
};
// One output element, as model::layer_norm computes it: the normalised value rounded to float, then one float
// product and one float sum (single roundings: nvcc may not contract them into an FMA).
VIDLORA_HOST_DEVICE inline float layer_norm_element(float x, double mean, double inv, float w, float b) {
  return vidlora::add_rn(vidlora::mul_rn(static_cast<float>((static_cast<double>(x) - mean) * inv), w), b);
}
// 1 / √(var + eps) from the row's Σ (x − mean)² over n values.
VIDLORA_HOST_DEVICE inline double layer_norm_inverse(double sum_squared_deviations, std::int64_t n, double eps) {
  return 1.0 / std::sqrt(sum_squared_deviations / static_cast<double>(n) + eps);
}

// RoPE over x [tokens, heads·head_dim] in place; position of row t = positions[t]; cos/sin tables
// [max_position, head_dim/2] built on the host by rope_tables (RotaryTable's formula).
struct RopeParams {
  float* x = nullptr;
  const std::int32_t* positions = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  std::int64_t tokens = 0, heads = 0, head_dim = 0;
  bool inverse = false;
  Output16 x16;  // the rotated x rounded to 16 bits too [tokens, heads·head_dim] (optional)
};

// cos/sin tables [positions, head_dim/2] of `rope`'s frequencies exactly as model::RotaryTable builds them (both by
// model::rope_table_row). Row p holds absolute position first + p (a KV-cache step builds only its own positions' rows).
inline void rope_tables(const RopeFrequencies& rope, std::int64_t positions, std::vector<float>& cos_table,
                        std::vector<float>& sin_table, std::int64_t first = 0) {
  vidlora::cuda::check_arg(!rope.inv_freq.empty(), "rope_tables", "no RoPE frequencies (an empty inv_freq)");
  const std::size_t half = rope.inv_freq.size();
  cos_table.resize(static_cast<std::size_t>(positions) * half);
  sin_table.resize(cos_table.size());
  for (std::int64_t p = 0; p < positions; ++p)
    rope_table_row(rope, first + p, cos_table.data() + static_cast<std::size_t>(p) * half,
                   sin_table.data() + static_cast<std::size_t>(p) * half);
}

// One rotated pair: element `pair` (0 .. tokens·heads·half) of the launch; the kernel's per-thread body.
VIDLORA_HOST_DEVICE inline void rope_pair(const RopeParams& p, std::int64_t pair) {
  const std::int64_t half = p.head_dim / 2;
  const std::int64_t i = pair % half;
  const std::int64_t th = pair / half;  // token·heads + head
  const std::int64_t t = th / p.heads;
  float* head = p.x + th * p.head_dim;
  const std::int64_t pos = p.positions[t];
  const float c = p.cos[pos * half + i], s = p.sin[pos * half + i];
  if (p.inverse)
    rope_rotate_inverse(head[i], head[i + half], c, s);
  else
    rope_rotate(head[i], head[i + half], c, s);
  store_16bit(p.x16, th * p.head_dim + i, head[i]);
  store_16bit(p.x16, th * p.head_dim + i + half, head[i + half]);
}

// SwiGLU: h = silu(gate) ⊙ up; backward dgate = dh·up·silu'(gate), dup = dh·silu(gate).
struct SwigluParams {
  const float* gate = nullptr;
  const float* up = nullptr;
  float* h = nullptr;         // forward output
  const float* dh = nullptr;  // backward input
  float* dgate = nullptr;
  float* dup = nullptr;
  std::int64_t n = 0;
  Output16 h16;  // forward: h rounded to 16 bits too (optional)
};

VIDLORA_HOST_DEVICE inline void swiglu_forward_element(const SwigluParams& p, std::int64_t i) {
  const float h = silu(p.gate[i]) * p.up[i];
  p.h[i] = h;
  store_16bit(p.h16, i, h);
}
VIDLORA_HOST_DEVICE inline void swiglu_backward_element(const SwigluParams& p, std::int64_t i) {
  const float g = p.gate[i], d = p.dh[i];
  p.dgate[i] = d * p.up[i] * silu_grad(g);
  p.dup[i] = d * silu(g);
}

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
namespace vidlora::model::cuda {
namespace detail {

template <int Threads>
__device__ double block_sum(double v, double* s) {
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = Threads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  const double r = s[0];
  __syncthreads();
  return r;
}

template <int Threads>
__global__ void rms_norm_kernel(RmsNormParams p) {
  VIDLORA_STATIC_SHARED(8, double, s, [Threads]);
  const std::int64_t row = blockIdx.x;
  const float* x = p.x + row * p.n;
  double ss = 0.0;
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads) ss += static_cast<double>(x[j]) * x[j];
  ss = block_sum<Threads>(ss, s);
  const float r = static_cast<float>(rms_inverse(ss, static_cast<int>(p.n), p.eps));
  if (threadIdx.x == 0 && p.inv_rms) p.inv_rms[row] = r;
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads) {
    const float y = rms_norm_element(x[j], r, p.weight[j]);
    p.y[row * p.n + j] = y;
    store_16bit(p.y16, row * p.n + j, y);
  }
}

template <int Threads>
__global__ void layer_norm_kernel(LayerNormParams p) {
  VIDLORA_STATIC_SHARED(8, double, s, [Threads]);
  const std::int64_t row = blockIdx.x;
  const float* x = p.x + row * p.n;
  double sum = 0.0;
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads) sum += static_cast<double>(x[j]);
  const double mean = block_sum<Threads>(sum, s) / static_cast<double>(p.n);
  double sq = 0.0;
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads) {
    const double d = static_cast<double>(x[j]) - mean;
    sq += d * d;
  }
  const double inv = layer_norm_inverse(block_sum<Threads>(sq, s), p.n, p.eps);
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads)
    p.y[row * p.n + j] = layer_norm_element(x[j], mean, inv, p.weight[j], p.bias[j]);
}

template <class = void>
__global__ void quick_gelu_kernel(float* x, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    x[i] = model::quick_gelu(x[i]);
}

template <int Threads>
__global__ void rms_norm_backward_kernel(RmsNormParams p) {
  VIDLORA_STATIC_SHARED(8, double, s, [Threads]);
  const std::int64_t row = blockIdx.x;
  const float* x = p.x + row * p.n;
  const float* dy = p.dy + row * p.n;
  double c = 0.0;
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads) c += static_cast<double>(dy[j]) * p.weight[j] * x[j];
  c = block_sum<Threads>(c, s);
  const float cm = static_cast<float>(c / static_cast<double>(p.n));
  const float r = p.inv_rms[row];
  for (std::int64_t j = threadIdx.x; j < p.n; j += Threads)
    p.dx[row * p.n + j] = rms_norm_input_grad<float>(dy[j] * p.weight[j], x[j], r, cm);
}

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void rope_kernel(RopeParams p, std::int64_t pairs) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < pairs;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    rope_pair(p, i);
}

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void swiglu_kernel(SwigluParams p, bool backward) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (backward)
      swiglu_backward_element(p, i);
    else
      swiglu_forward_element(p, i);
  }
}

}  // namespace detail

inline void rms_norm(const RmsNormParams& p, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.rows > 0 && p.n > 0 && p.x && p.weight && p.y, "cuda::rms_norm", "empty or null input");
  VIDLORA_LAUNCH(static_cast<unsigned>(p.rows), 256, 0, stream, detail::rms_norm_kernel<256>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("rms_norm_kernel");
}
inline void rms_norm_backward(const RmsNormParams& p, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.rows > 0 && p.n > 0 && p.x && p.weight && p.inv_rms && p.dy && p.dx,
                           "cuda::rms_norm_backward", "empty or null input");
  vidlora::cuda::check_arg(p.y16.bits == nullptr, "cuda::rms_norm_backward",
                           "writes no 16-bit output (y16 is the forward's)");
  VIDLORA_LAUNCH(static_cast<unsigned>(p.rows), 256, 0, stream, detail::rms_norm_backward_kernel<256>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("rms_norm_backward_kernel");
}
inline void layer_norm(const LayerNormParams& p, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.rows > 0 && p.n > 0 && p.x && p.weight && p.bias && p.y, "cuda::layer_norm",
                           "empty or null input");
  VIDLORA_LAUNCH(static_cast<unsigned>(p.rows), 256, 0, stream, detail::layer_norm_kernel<256>)(p);
  VIDLORA_CUDA_CHECK_LAUNCH("layer_norm_kernel");
}
// x = quick_gelu(x) in place over n values.
inline void quick_gelu(float* x, std::int64_t n, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(n > 0 && x, "cuda::quick_gelu", "empty or null input");
  VIDLORA_LAUNCH(vidlora::cuda::grid_size(n, 256), 256, 0, stream, detail::quick_gelu_kernel<>)(x, n);
  VIDLORA_CUDA_CHECK_LAUNCH("quick_gelu_kernel");
}
inline void rope(const RopeParams& p, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.head_dim > 0 && p.head_dim % 2 == 0 && p.tokens > 0 && p.heads > 0, "cuda::rope",
                           "needs tokens, heads > 0 and an even head_dim");
  const std::int64_t pairs = p.tokens * p.heads * (p.head_dim / 2);
  VIDLORA_LAUNCH(vidlora::cuda::grid_size(pairs, 256), 256, 0, stream, detail::rope_kernel<>)(p, pairs);
  VIDLORA_CUDA_CHECK_LAUNCH("rope_kernel");
}
inline void swiglu(const SwigluParams& p, bool backward, cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.n > 0, "cuda::swiglu", "empty input");
  vidlora::cuda::check_arg(!backward || p.h16.bits == nullptr, "cuda::swiglu",
                           "the backward writes no 16-bit output (h16 is the forward's)");
  VIDLORA_LAUNCH(vidlora::cuda::grid_size(p.n, 256), 256, 0, stream, detail::swiglu_kernel<>)(p, backward);
  VIDLORA_CUDA_CHECK_LAUNCH("swiglu_kernel");
}

}  // namespace vidlora::model::cuda
#endif
