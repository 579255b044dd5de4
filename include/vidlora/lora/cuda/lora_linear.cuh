#pragma once
// LoraLinear forward / backward on the GPU over a dense or 4-bit (NF4 / FP4) frozen base:
//   y  = x·Wᵀ (+ bias) + scaling · dropout(x)·Aᵀ·Bᵀ
//   g  = scaling · dy·B;   grad_A += gᵀ·dropout(x);   grad_B += scaling · dyᵀ·h;   dx = dy·W + mask ⊙ (g·A)
// The low-rank terms are written first and the frozen GEMM adds them in its epilogue (beta = 1), so LoRA
// adds no read-modify-write pass over y or dx.
// the same steps as lora::LoraLinear, with cuBLASLt GEMMs (core/cuda/gemm.cuh) and the dropout mask from
// lora::dropout_scale at the same (seed, stream, row-major offset), so CPU and GPU drop the same elements.
// A quantized base is dequantized into a workspace matrix before its GEMM (QLoRA's compute path).
// Operands are of one element type T (float or __nv_bfloat16); grad_A / grad_B are float (fp32 accumulation). A float
// layer may run its frozen GEMMs on 16-bit operands (LoraLinearParams::base_operands: bf16 or fp16 tensor cores,
// fp32 accumulation and output), the LoRA pieces staying fp32.

#include <cstdint>
#include <string>
#include <type_traits>

#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/lora/cuda/low_rank_expand.cuh>
#include <vidlora/lora/dropout.hpp>
#include <vidlora/quant/cuda/dequantize.cuh>

namespace vidlora::lora::cuda {

enum class BaseKind : std::uint8_t { Dense, NF4, FP4 };

struct LoraLinearParams {
  std::int64_t tokens = 0, in = 0, out = 0, rank = 0;
  float scaling = 1.0f;
  float dropout = 0.0f;  // in [0, 1); 0: no mask (inference, or a layer without dropout)
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;  // lora::dropout_stream(layer, step), as the CPU layer's mask_stream
  BaseKind base = BaseKind::Dense;
  const void* w = nullptr;            // Dense: [out, in] of T
  quant::cuda::Quantized4bitView qw;  // NF4 / FP4: numel = out·in
  const void* bias = nullptr;         // [out] of T, or null
  const void* a = nullptr;            // [rank, in] of T
  const void* b = nullptr;            // [out, rank] of T
  float* grad_a = nullptr;            // [rank, in] accumulated
  float* grad_b = nullptr;            // [out, rank] accumulated
  vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32;
  // The rank-r expansions (scaling·h·Bᵀ, mask ⊙ (g·A)) by low_rank_expand.cuh's kernel instead of cuBLASLt + a mask
  // pass. Off by default: on an H200 at tokens 8192, in = out = 4096, r = 16 the kernel takes 70-85 µs against
  // cuBLASLt's 35-38 µs (docs/cuda.md); it is exact and tested, and kept as the starting point of a faster one.
  bool fused_expand = false;
  // The backward rebuilds dropout(x) = x ⊙ mask into the workspace's xd from x and the stored keep bits (the same
  // products, so the same bits) instead of reading the forward's: the caller then need not keep xd from forward to
  // backward, only the keep bits, and passes x to the backward. The decoder block executor does this.
  bool rebuild_dropout_input = false;
  // The frozen GEMMs' operands (forward x and W, backward dy and W). F32: the layer's element type T. BF16 or F16 (a
  // float layer only): x or dy rounded to nearest even into the workspace's op16, W dequantized (4-bit) or converted
  // (dense fp32) into w_dense in that type, multiplied on 16-bit tensor cores with fp32 accumulation into the float y
  // or dx that already holds the low-rank term (beta = 1). What autocast does to a frozen linear, except that the
  // output stays fp32 instead of being rounded to 16 bits. The LoRA pieces keep `compute`.
  vidlora::cuda::DType base_operands = vidlora::cuda::DType::F32;
  bool narrow_base() const { return base_operands != vidlora::cuda::DType::F32; }
  // Forward with 16-bit base operands: x already rounded to base_operands' bits, [tokens, in] (the decoder block rounds
  // a norm's output once for the slots that read it: q, k and v; gate and up), which the frozen GEMM reads instead of
  // rounding x itself. The same bits, one rounding pass fewer. Null: x is rounded here, into the workspace's op16.
  const void* x16 = nullptr;
};

// Element counts (of T) of the workspace pieces a layer needs; the caller allocates them once. Every piece is
// padded to 256 bytes, so that pieces carved from a cudaMalloc'd block keep the alignment cuBLASLt's fastest
// kernels and the vectorised passes want.
struct LoraWorkspaceSizes {
  std::int64_t xd =
      0;  // [tokens, in]: dropout(x), kept from forward for backward, or rebuilt there (0 without dropout)
  std::int64_t mask = 0;     // keep bits, 4 per byte: (tokens·in + 3) / 4 bytes as whole T (0 without dropout)
  std::int64_t h = 0;        // [tokens, rank]: dropout(x)·Aᵀ, kept from forward for backward
  std::int64_t g = 0;        // [tokens, rank]: scaling·dy·B
  std::int64_t w_dense = 0;  // [out, in]: dequantized base (0 for a dense base), 16-bit with narrow base operands
  std::int64_t op16 = 0;     // narrow base operands: x [tokens, in] or dy [tokens, out] in 16 bits (the larger)
  std::int64_t total() const { return xd + mask + h + g + w_dense + op16; }
};

inline void check_lora(const LoraLinearParams& p) {
  const char* who = "cuda::LoraLinear";
  // Every check builds its message only when it fails: this runs before each of the layer's steps.
  vidlora::cuda::check_arg(p.tokens > 0 && p.in > 0 && p.out > 0 && p.rank > 0, who, [&] {
    return "tokens " + std::to_string(p.tokens) + ", in " + std::to_string(p.in) + ", out " + std::to_string(p.out) +
           ", rank " + std::to_string(p.rank) + " must all be positive";
  });
  vidlora::cuda::check_arg(p.dropout >= 0.0f && p.dropout < 1.0f, who,
                           [&] { return "dropout " + std::to_string(p.dropout) + " is outside [0, 1)"; });
  vidlora::cuda::check_arg(p.a != nullptr && p.b != nullptr, who, "lora_A and lora_B are required");
  if (p.base == BaseKind::Dense) {
    vidlora::cuda::check_arg(p.w != nullptr, who, "dense base without a weight pointer");
  } else {
    quant::cuda::check_view(p.qw, who);
    vidlora::cuda::check_arg(p.qw.numel == p.out * p.in, who, [&] {
      return "quantized base holds " + std::to_string(p.qw.numel) + " elements, the layer needs " +
             std::to_string(p.out * p.in);
    });
  }
}

// The workspace of a layer with operands of type T (float or bf16): element counts of T.
template <class T>
LoraWorkspaceSizes lora_workspace_sizes(const LoraLinearParams& p) {
  constexpr std::int64_t per_256 = 256 / static_cast<std::int64_t>(sizeof(T));
  auto pad = [](std::int64_t n) { return (n + per_256 - 1) / per_256 * per_256; };
  LoraWorkspaceSizes s;
  const bool drop = p.dropout > 0.0f;
  const std::int64_t mask_bytes = drop ? (p.tokens * p.in + 3) / 4 : 0;
  s.xd = pad(drop ? p.tokens * p.in : 0);
  s.mask = pad((mask_bytes + static_cast<std::int64_t>(sizeof(T)) - 1) / static_cast<std::int64_t>(sizeof(T)));
  s.h = pad(p.tokens * p.rank);
  s.g = pad(p.tokens * p.rank);
  // 16-bit values as whole T (the piece of n of them holds n · 2 bytes)
  auto halves = [](std::int64_t n) { return (2 * n + static_cast<std::int64_t>(sizeof(T)) - 1) / sizeof(T); };
  if (p.narrow_base()) {
    s.w_dense = pad(halves(p.out * p.in));  // a dense fp32 base is converted too
    s.op16 = pad(halves(p.tokens * (p.in > p.out ? p.in : p.out)));
  } else {
    s.w_dense = pad(p.base == BaseKind::Dense ? 0 : p.out * p.in);
  }
  return s;
}

// x·mask at row-major offset i: the element the CPU's masked_rows writes.
VIDLORA_HOST_DEVICE inline float dropout_element(float x, std::uint64_t seed, std::uint64_t stream, std::uint64_t i,
                                                 float p) {
  return x * dropout_scale(seed, stream, i, p);
}

// Workspace pointers carved from one allocation of lora_workspace_sizes(p).total() elements of T.
template <class T>
struct LoraWorkspace {
  T *xd = nullptr, *h = nullptr, *g = nullptr, *w_dense = nullptr;
  std::uint8_t* mask = nullptr;  // the forward's keep bits, read by the backward
  void* op16 = nullptr;          // narrow base operands: the 16-bit x or dy
  static LoraWorkspace carve(T* base, const LoraWorkspaceSizes& s) {
    LoraWorkspace w;
    auto take = [&base](std::int64_t n) {
      T* p = n ? base : nullptr;
      base += n;
      return p;
    };
    w.xd = take(s.xd);
    w.mask = reinterpret_cast<std::uint8_t*>(take(s.mask));
    w.h = take(s.h);
    w.g = take(s.g);
    w.w_dense = take(s.w_dense);
    w.op16 = take(s.op16);
    return w;
  }
};

inline LowRankExpandParams expansion(const void* l, const void* r, void* out, std::int64_t rows, std::int64_t cols,
                                     std::int64_t rank, float alpha, RLayout layout, const std::uint8_t* keep_bits,
                                     float dropout) {
  LowRankExpandParams e;
  e.l = l;
  e.r = r;
  e.out = out;
  e.rows = rows;
  e.cols = cols;
  e.rank = static_cast<int>(rank);
  e.alpha = alpha;
  e.layout = layout;
  e.keep_bits = keep_bits;
  e.dropout = dropout;
  return e;
}

// op16: the workspace's piece, or (a forward whose x is rounded already: p.x16) any non-null pointer.
inline void check_narrow_base(const LoraLinearParams& p, const void* w_dense, const void* op16, vidlora::cuda::DType t,
                              const char* who) {
  using vidlora::cuda::DType;
  vidlora::cuda::check_arg(t == DType::F32, who, [&] {
    return std::string("16-bit base operands (") + vidlora::cuda::dtype_name(p.base_operands) +
           ") are for a float layer, not a " + vidlora::cuda::dtype_name(t) + " one";
  });
  vidlora::cuda::check_arg(w_dense != nullptr && op16 != nullptr, who,
                           "16-bit base operands need the workspace's w_dense and op16 pieces "
                           "(lora_workspace_sizes with base_operands set; a forward given x16 needs no op16)");
}

// The frozen GEMMs, the layer's and a slot's without LoRA: y = x·Wᵀ + beta·y (+ bias), dx = dy·W + beta·dx, at the
// layer's element type (compute: p.compute) or on 16-bit operands (p.base_operands; fp32 accumulation).
template <class T, class Exec>
void frozen_forward_step(Exec& exec, const LoraLinearParams& p, const LoraWorkspace<T>& ws, const T* x, T* y,
                         float beta, vidlora::cuda::DType t) {
  using namespace vidlora::cuda;
  if (!p.narrow_base()) {
    GemmProblem g = linear_forward(p.tokens, p.in, p.out, t, p.bias != nullptr, t);
    g.compute = p.compute;
    exec.gemm(g, x, exec.base_weight(p, ws), y, 1.0f, beta, p.bias);
    return;
  }
  check_narrow_base(p, ws.w_dense, p.x16 != nullptr ? p.x16 : ws.op16, t,
                    "cuda::LoraLinear forward");  // a float layer only
  if constexpr (std::is_same_v<T, float>) {
    const void* x16 = p.x16;  // rounded by its producer, or here
    if (x16 == nullptr) {
      exec.round_operand(x, ws.op16, p.tokens * p.in, p.base_operands);
      x16 = ws.op16;
    }
    exec.gemm(linear_forward(p.tokens, p.in, p.out, p.base_operands, p.bias != nullptr, t), x16,
              exec.base_weight_narrow(p, ws.w_dense), y, 1.0f, beta, p.bias);
  }
}
template <class T, class Exec>
void frozen_input_grad_step(Exec& exec, const LoraLinearParams& p, const LoraWorkspace<T>& ws, const T* dy, T* dx,
                            float beta, vidlora::cuda::DType t) {
  using namespace vidlora::cuda;
  if (!p.narrow_base()) {
    GemmProblem g = linear_input_grad(p.tokens, p.in, p.out, t, t);
    g.compute = p.compute;
    exec.gemm(g, dy, exec.base_weight(p, ws), dx, 1.0f, beta, nullptr);
    return;
  }
  check_narrow_base(p, ws.w_dense, ws.op16, t, "cuda::LoraLinear backward");  // a float layer only
  if constexpr (std::is_same_v<T, float>) {
    exec.round_operand(dy, ws.op16, p.tokens * p.out, p.base_operands);
    exec.gemm(linear_input_grad(p.tokens, p.in, p.out, p.base_operands, t), ws.op16,
              exec.base_weight_narrow(p, ws.w_dense), dx, 1.0f, beta, nullptr);
  }
}

// The forward and backward as a sequence of GEMM problems and dropout passes over an executor:
//   exec.gemm(problem, a, b, c, alpha, beta, bias)          C = alpha·op(A)·op(B) + beta·C (+ bias)
//   exec.dropout(src, dst, n, params, mask)                 dst = src ⊙ mask, drawing the mask; keep bits -> mask
//   exec.reapply_dropout(src, dst, n, dropout, mask)        dst = src ⊙ mask from the stored keep bits (no drawing)
//   exec.expand(expansion)                                   out = alpha·L·R (⊙ stored mask): low_rank_expand.cuh
//   exec.base_weight(params, workspace) -> const T*         W dense (dequantized for a 4-bit base)
//   exec.round_operand(src, dst, n, dtype)                  16-bit base operands: dst = src rounded to bf16 / fp16
//   exec.base_weight_narrow(params, w16) -> const void*     16-bit base operands: W in bf16 / fp16 (into w16)
// The CUDA executor runs cuBLASLt and the kernels; the CPU tests run the same steps with a host executor.
template <class T, class Exec>
void lora_forward_steps(Exec& exec, const LoraLinearParams& p, const LoraWorkspace<T>& ws, const T* x, T* y,
                        vidlora::cuda::DType t) {
  using namespace vidlora::cuda;
  check_lora(p);
  auto with = [&p](GemmProblem g) {
    g.compute = p.compute;
    return g;
  };
  const T* xd = x;
  if (p.dropout > 0.0f) {
    exec.dropout(x, ws.xd, p.tokens * p.in, p, ws.mask);
    xd = ws.xd;
  }
  // h = dropout(x)·Aᵀ;  y = scaling·h·Bᵀ;  y = x·Wᵀ + y (+ bias). The frozen GEMM goes last so that adding the
  // low-rank term is its epilogue's read of C (beta = 1), hidden under a compute-bound GEMM, instead of a
  // separate read-modify-write pass over y.
  exec.gemm(with(linear_forward(p.tokens, p.in, p.rank, t, false, t)), xd, p.a, ws.h, 1.0f, 0.0f, nullptr);
  exec.expand(expansion(ws.h, p.b, y, p.tokens, p.out, p.rank, p.scaling, RLayout::ColsByRank, nullptr, p.dropout));
  frozen_forward_step<T>(exec, p, ws, x, y, 1.0f, t);
}

template <class T, class Exec>
void lora_backward_steps(Exec& exec, const LoraLinearParams& p, const LoraWorkspace<T>& ws, const T* x, const T* dy,
                         T* dx, vidlora::cuda::DType t) {
  using namespace vidlora::cuda;
  check_lora(p);
  check_arg(p.grad_a && p.grad_b, "cuda::LoraLinear::backward", "grad_a and grad_b are required");
  auto with = [&p](GemmProblem g) {
    g.compute = p.compute;
    return g;
  };
  // g = scaling·dy·B  [tokens, rank];  dx = mask ⊙ (g·A);  dx = dy·W + dx  (the frozen GEMM last, as in forward)
  exec.gemm(with(linear_input_grad(p.tokens, p.rank, p.out, t, t)), dy, p.b, ws.g, p.scaling, 0.0f, nullptr);
  // dx = mask ⊙ (g·A) in one pass, with the keep bits the forward stored
  const bool drop = p.dropout > 0.0f;
  if (drop && p.rebuild_dropout_input) {
    check_arg(ws.xd != nullptr && x != nullptr, "cuda::LoraLinear::backward",
              "rebuild_dropout_input needs the input x and the workspace's xd to rebuild dropout(x) into");
    exec.reapply_dropout(x, ws.xd, p.tokens * p.in, p.dropout, ws.mask);
  }
  exec.expand(
      expansion(ws.g, p.a, dx, p.tokens, p.in, p.rank, 1.0f, RLayout::RankByCols, drop ? ws.mask : nullptr, p.dropout));
  const T* xd = drop ? ws.xd : x;
  frozen_input_grad_step<T>(exec, p, ws, dy, dx, 1.0f, t);
  // grad_A += gᵀ·dropout(x)  [rank, in];  grad_B += scaling·dyᵀ·h  [out, rank]  (fp32 outputs)
  exec.gemm(with(linear_weight_grad(p.tokens, p.in, p.rank, t, DType::F32)), ws.g, xd, p.grad_a, 1.0f, 1.0f, nullptr);
  exec.gemm(with(linear_weight_grad(p.tokens, p.rank, p.out, t, DType::F32)), dy, ws.h, p.grad_b, p.scaling, 1.0f,
            nullptr);
}

}  // namespace vidlora::lora::cuda

#if VIDLORA_KERNELS
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <vidlora/io/cuda/round_16bit.cuh>
#include <vidlora/io/half.hpp>

namespace vidlora::lora::cuda {

template <class T>
constexpr vidlora::cuda::DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>, "LoraLinear: float or bf16");
  return std::is_same_v<T, float> ? vidlora::cuda::DType::F32 : vidlora::cuda::DType::BF16;
}

namespace detail {
// dst = src ⊙ mask, four consecutive elements per thread: one Philox call gives their keep bits
// (lora::dropout_keep_bits4), stored one byte per group for the backward; loads and stores are vectorised
// when src and dst are aligned for it.
template <class T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

template <class T>
__global__ void dropout_kernel(const T* src, T* dst, std::int64_t n, std::uint64_t seed, std::uint64_t stream, float p,
                               std::uint8_t* mask, bool vectorized) {
  const std::int64_t groups = (n + 3) / 4;
  for (std::int64_t q = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < groups;
       q += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::uint8_t bits = dropout_keep_bits4(seed, stream, static_cast<std::uint64_t>(q), p);
    if (mask) mask[q] = bits;
    const std::int64_t i0 = 4 * q;
    if (vectorized && i0 + 4 <= n) {
      const Vec4<T> s = *reinterpret_cast<const Vec4<T>*>(src + i0);
      Vec4<T> d;
      VIDLORA_UNROLL
      for (int k = 0; k < 4; ++k) d.v[k] = static_cast<T>(static_cast<float>(s.v[k]) * dropout_factor(bits, k, p));
      *reinterpret_cast<Vec4<T>*>(dst + i0) = d;
    } else {
      for (int k = 0; k < 4 && i0 + k < n; ++k)
        dst[i0 + k] = static_cast<T>(static_cast<float>(src[i0 + k]) * dropout_factor(bits, k, p));
    }
  }
}

// dst = src ⊙ mask from stored keep bits (the backward's passes: no random numbers drawn; src == dst in place).
template <class T>
__global__ void apply_mask_kernel(const T* src, T* dst, std::int64_t n, const std::uint8_t* mask, float p,
                                  bool vectorized) {
  const std::int64_t groups = (n + 3) / 4;
  for (std::int64_t q = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < groups;
       q += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::uint8_t bits = mask[q];
    const std::int64_t i0 = 4 * q;
    if (vectorized && i0 + 4 <= n) {
      Vec4<T> d = *reinterpret_cast<const Vec4<T>*>(src + i0);
      VIDLORA_UNROLL
      for (int k = 0; k < 4; ++k) d.v[k] = static_cast<T>(static_cast<float>(d.v[k]) * dropout_factor(bits, k, p));
      *reinterpret_cast<Vec4<T>*>(dst + i0) = d;
    } else {
      for (int k = 0; k < 4 && i0 + k < n; ++k)
        dst[i0 + k] = static_cast<T>(static_cast<float>(src[i0 + k]) * dropout_factor(bits, k, p));
    }
  }
}

// The executor of lora_forward_steps / lora_backward_steps on one stream.
struct CudaLoraExec {
  vidlora::cuda::GemmRunner& runner;
  cudaStream_t stream;
  void gemm(const vidlora::cuda::GemmProblem& g, const void* a, const void* b, void* c, float alpha, float beta,
            const void* bias) {
    runner.run(g, a, b, c, alpha, beta, bias, stream);
  }
  template <class T>
  void dropout(const T* src, T* dst, std::int64_t n, const LoraLinearParams& p, std::uint8_t* mask) {
    const bool vectorized = reinterpret_cast<std::uintptr_t>(src) % sizeof(Vec4<T>) == 0 &&
                            reinterpret_cast<std::uintptr_t>(dst) % sizeof(Vec4<T>) == 0;
    VIDLORA_LAUNCH(vidlora::cuda::grid_size((n + 3) / 4, 256), 256, 0, stream, dropout_kernel<T>)
    (src, dst, n, p.seed, p.stream, p.dropout, mask, vectorized);
    VIDLORA_CUDA_CHECK_LAUNCH("dropout_kernel");
  }
  template <class T>
  void reapply_dropout(const T* src, T* dst, std::int64_t n, float dropout, const std::uint8_t* mask) {
    const bool vectorized = reinterpret_cast<std::uintptr_t>(src) % sizeof(Vec4<T>) == 0 &&
                            reinterpret_cast<std::uintptr_t>(dst) % sizeof(Vec4<T>) == 0;
    VIDLORA_LAUNCH(vidlora::cuda::grid_size((n + 3) / 4, 256), 256, 0, stream, apply_mask_kernel<T>)
    (src, dst, n, mask, dropout, vectorized);
    VIDLORA_CUDA_CHECK_LAUNCH("apply_mask_kernel");
  }
  // The fused kernel when it takes the shape (and `fused` is on), else a cuBLASLt GEMM and, for a masked
  // expansion, a second pass applying the keep bits.
  bool fused = false;
  vidlora::cuda::DType dtype = vidlora::cuda::DType::F32;
  vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32;
  template <class T>
  void expand_as(const LowRankExpandParams& e) {
    if (fused && low_rank_expand<T>(e, stream)) return;
    using namespace vidlora::cuda;
    GemmProblem g = e.layout == RLayout::ColsByRank ? linear_forward(e.rows, e.rank, e.cols, dtype, false, dtype)
                                                    : linear_input_grad(e.rows, e.cols, e.rank, dtype, dtype);
    g.compute = compute;
    runner.run(g, e.l, e.r, e.out, e.alpha, 0.0f, nullptr, stream);
    if (e.keep_bits)
      reapply_dropout(static_cast<const T*>(e.out), static_cast<T*>(e.out), e.rows * e.cols, e.dropout, e.keep_bits);
  }
  void expand(const LowRankExpandParams& e) {
    if (dtype == vidlora::cuda::DType::BF16)
      expand_as<__nv_bfloat16>(e);
    else
      expand_as<float>(e);
  }
  // 16-bit base operands: src (float) rounded into dst.
  void round_operand(const float* src, void* dst, std::int64_t n, vidlora::cuda::DType t) {
    io::cuda::round_to_16bit(src, static_cast<std::uint16_t*>(dst), n, t, stream);
  }
  // 16-bit base operands: W in p.base_operands' type in w16 (a 4-bit base decoded straight into it, each value
  // code·scale rounded once; a dense fp32 base rounded).
  const void* base_weight_narrow(const LoraLinearParams& p, void* w16) {
    const bool bf = p.base_operands == vidlora::cuda::DType::BF16;
    if (p.base == BaseKind::Dense) {
      round_operand(static_cast<const float*>(p.w), w16, p.out * p.in, p.base_operands);
    } else if (p.base == BaseKind::NF4) {
      if (bf)
        quant::cuda::dequantize_4bit<quant::NF4>(p.qw, static_cast<__nv_bfloat16*>(w16), stream);
      else
        quant::cuda::dequantize_4bit<quant::NF4>(p.qw, static_cast<__half*>(w16), stream);
    } else {
      if (bf)
        quant::cuda::dequantize_4bit<quant::FP4>(p.qw, static_cast<__nv_bfloat16*>(w16), stream);
      else
        quant::cuda::dequantize_4bit<quant::FP4>(p.qw, static_cast<__half*>(w16), stream);
    }
    return w16;
  }
  template <class T>
  const T* base_weight(const LoraLinearParams& p, const LoraWorkspace<T>& ws) {
    if (p.base == BaseKind::Dense) return static_cast<const T*>(p.w);
    if (p.base == BaseKind::NF4)
      quant::cuda::dequantize_4bit<quant::NF4>(p.qw, ws.w_dense, stream);
    else
      quant::cuda::dequantize_4bit<quant::FP4>(p.qw, ws.w_dense, stream);
    return ws.w_dense;
  }
};
}  // namespace detail

// y [tokens, out] = base(x) (+ bias) + scaling·dropout(x)·Aᵀ·Bᵀ; leaves dropout(x), its keep bits and h in the workspace.
template <class T>
void lora_forward(vidlora::cuda::GemmRunner& gemm, const LoraLinearParams& p, const LoraWorkspace<T>& ws, const T* x,
                  T* y, cudaStream_t s = nullptr) {
  detail::CudaLoraExec exec{gemm, s, p.fused_expand, dtype_of<T>(), p.compute};
  lora_forward_steps<T>(exec, p, ws, x, y, dtype_of<T>());
}

// dx [tokens, in] from dy [tokens, out]; grad_A, grad_B accumulate. Needs the forward's workspace and its
// input x (read without dropout, or with rebuild_dropout_input; else the workspace holds dropout(x)).
template <class T>
void lora_backward(vidlora::cuda::GemmRunner& gemm, const LoraLinearParams& p, const LoraWorkspace<T>& ws, const T* x,
                   const T* dy, T* dx, cudaStream_t s = nullptr) {
  detail::CudaLoraExec exec{gemm, s, p.fused_expand, dtype_of<T>(), p.compute};
  lora_backward_steps<T>(exec, p, ws, x, dy, dx, dtype_of<T>());
}

// A frozen linear without LoRA (a slot the run does not adapt): y [tokens, out] = x·Wᵀ (+ bias), and its input
// gradient dx [tokens, in] = dy·W, by the steps the LoRA layer's frozen GEMM runs (16-bit operands included). `ws`
// needs w_dense for a 4-bit base and op16 for narrow operands (lora_workspace_sizes<float> of p; not the forward's
// when p.x16 holds x's bits).
inline void frozen_forward(vidlora::cuda::GemmRunner& gemm, const LoraLinearParams& p, const LoraWorkspace<float>& ws,
                           const float* x, float* y, cudaStream_t s = nullptr) {
  detail::CudaLoraExec exec{gemm, s, false, vidlora::cuda::DType::F32, p.compute};
  frozen_forward_step<float>(exec, p, ws, x, y, 0.0f, vidlora::cuda::DType::F32);
}
inline void frozen_input_grad(vidlora::cuda::GemmRunner& gemm, const LoraLinearParams& p,
                              const LoraWorkspace<float>& ws, const float* dy, float* dx, cudaStream_t s = nullptr) {
  detail::CudaLoraExec exec{gemm, s, false, vidlora::cuda::DType::F32, p.compute};
  frozen_input_grad_step<float>(exec, p, ws, dy, dx, 0.0f, vidlora::cuda::DType::F32);
}

}  // namespace vidlora::lora::cuda
#endif
