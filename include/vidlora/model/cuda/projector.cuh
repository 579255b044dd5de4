#pragma once
// LLaVA's projector (model::Mlp2xGelu: linear_1 → GELU with erf → linear_2) with its forward and backward on the
// device: on a GPU preset the projector's GEMMs run where the decoder's do instead of on the host's cores (at the H100
// preset's 18,432 visual tokens a micro-batch, 2.3 TFLOP of fp32 products per micro-batch).
//
// Written as steps over an executor, like lora_forward_steps:
//   exec.gemm(problem, a, b, c, alpha, beta, bias)   C = alpha·op(A)·op(B) + beta·C (+ bias)   (cuBLASLt)
//   exec.gelu(z, a, n)                                a = gelu_erf(z)
//   exec.gelu_backward(z, da, n)                      da *= gelu_erf_grad(z)
//   exec.column_sums(dy, rows, cols, out)             out[c] += Σ_r dy[r, c] (rows in order)
// The CUDA executor runs cuBLASLt and the kernels below; tests/cuda_host runs the same steps with a host executor
// against model::Mlp2xGelu, and tests/cuda/test_projector.cu the device against it.
// fmt-free (nvcc compiles it); model/cuda/cuda_mlp2x_gelu.cuh wraps it as the Trainer's projector type.

#include <cstdint>

#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/model/elementwise.hpp>

namespace vidlora::model::cuda {

struct ProjectorShape {
  std::int64_t tokens = 0, in = 0, hidden = 0;
  bool bias = true;
};

// Device (or, in the host tests, host) pointers: weights [hidden, in] and [hidden, hidden], biases [hidden], and
// the gradients they accumulate into.
struct ProjectorWeights {
  const float *w1 = nullptr, *b1 = nullptr, *w2 = nullptr, *b2 = nullptr;
  float *grad_w1 = nullptr, *grad_b1 = nullptr, *grad_w2 = nullptr, *grad_b2 = nullptr;
};

// x [tokens, in] -> z = x·W1ᵀ + b1, a = gelu(z) [tokens, hidden] (kept for the backward), y = a·W2ᵀ + b2.
template <class Exec>
void projector_forward_steps(Exec& exec, const ProjectorShape& s, const ProjectorWeights& w, const float* x, float* z,
                             float* a, float* y) {
  using namespace vidlora::cuda;
  exec.gemm(linear_forward(s.tokens, s.in, s.hidden, DType::F32, s.bias), x, w.w1, z, 1.0f, 0.0f,
            s.bias ? w.b1 : nullptr);
  exec.gelu(z, a, s.tokens * s.hidden);
  exec.gemm(linear_forward(s.tokens, s.hidden, s.hidden, DType::F32, s.bias), a, w.w2, y, 1.0f, 0.0f,
            s.bias ? w.b2 : nullptr);
}

// dy [tokens, hidden] -> dx [tokens, in]; the four gradients accumulate. da [tokens, hidden]: scratch. dx null: no
// input gradient (the Trainer's features are frozen: the last GEMM, a fifth of the backward's FLOPs, is not run).
template <class Exec>
void projector_backward_steps(Exec& exec, const ProjectorShape& s, const ProjectorWeights& w, const float* x,
                              const float* z, const float* a, const float* dy, float* da, float* dx) {
  using namespace vidlora::cuda;
  // linear_2: grad_W2 += dyᵀ·a, grad_b2 += Σ dy, da = dy·W2
  exec.gemm(linear_weight_grad(s.tokens, s.hidden, s.hidden, DType::F32), dy, a, w.grad_w2, 1.0f, 1.0f, nullptr);
  if (s.bias) exec.column_sums(dy, s.tokens, s.hidden, w.grad_b2);
  exec.gemm(linear_input_grad(s.tokens, s.hidden, s.hidden, DType::F32), dy, w.w2, da, 1.0f, 0.0f, nullptr);
  // GELU, then linear_1: grad_W1 += daᵀ·x, grad_b1 += Σ da, dx = da·W1
  exec.gelu_backward(z, da, s.tokens * s.hidden);
  exec.gemm(linear_weight_grad(s.tokens, s.in, s.hidden, DType::F32), da, x, w.grad_w1, 1.0f, 1.0f, nullptr);
  if (s.bias) exec.column_sums(da, s.tokens, s.hidden, w.grad_b1);
  if (dx != nullptr)
    exec.gemm(linear_input_grad(s.tokens, s.in, s.hidden, DType::F32), da, w.w1, dx, 1.0f, 0.0f, nullptr);
}

// One column's sum, rows in order: the column_sums kernel's per-thread body.
VIDLORA_HOST_DEVICE inline float projector_column_sum(const float* dy, std::int64_t rows, std::int64_t cols,
                                                      std::int64_t c) {
  float acc = 0.0f;
  for (std::int64_t r = 0; r < rows; ++r) acc += dy[r * cols + c];
  return acc;
}

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>

namespace vidlora::model::cuda {
namespace detail {

template <class = void>  // a template: header kernels get one definition across TUs
__global__ void projector_gelu_kernel(const float* z, float* a, std::int64_t n, bool backward) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    a[i] = backward ? a[i] * gelu_erf_grad(z[i]) : gelu_erf(z[i]);
}

template <class = void>
__global__ void projector_column_sums_kernel(const float* dy, std::int64_t rows, std::int64_t cols, float* out) {
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
       c += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[c] += projector_column_sum(dy, rows, cols, c);
}

struct CudaProjectorExec {
  vidlora::cuda::GemmRunner& gemm_runner;
  cudaStream_t stream = nullptr;
  void gemm(const vidlora::cuda::GemmProblem& g, const void* a, const void* b, void* c, float alpha, float beta,
            const void* bias) {
    gemm_runner.run(g, a, b, c, alpha, beta, bias, stream);
  }
  void gelu(const float* z, float* a, std::int64_t n) {
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(n, 256), 256, 0, stream, projector_gelu_kernel<>)(z, a, n, false);
    VIDLORA_CUDA_CHECK_LAUNCH("projector_gelu_kernel");
  }
  void gelu_backward(const float* z, float* da, std::int64_t n) {
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(n, 256), 256, 0, stream, projector_gelu_kernel<>)(z, da, n, true);
    VIDLORA_CUDA_CHECK_LAUNCH("projector_gelu_kernel");
  }
  void column_sums(const float* dy, std::int64_t rows, std::int64_t cols, float* out) {
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(cols, 256), 256, 0, stream, projector_column_sums_kernel<>)
    (dy, rows, cols, out);
    VIDLORA_CUDA_CHECK_LAUNCH("projector_column_sums_kernel");
  }
};

}  // namespace detail

}  // namespace vidlora::model::cuda
#endif
