#pragma once
// A naive column-major GEMM with cuBLAS(Lt) semantics, run on a vidlora::cuda::ColumnMajorGemm: lets the CPU
// tests check the row-major -> column-major mapping (and every GEMM problem the CUDA code issues) without a GPU.

#include <cstdint>

#include <vidlora/core/cuda/gemm.cuh>

namespace vidlora_test {

// D(i,j) = alpha·Σ_l op(A)(i,l)·op(B)(l,j) + beta·C(i,j) + bias[i]; column-major, D aliases C.
inline void column_major_gemm(const vidlora::cuda::ColumnMajorGemm& g, const float* a, const float* b, float* c,
                              float alpha, float beta, const float* bias) {
  using vidlora::cuda::Op;
  for (std::int64_t j = 0; j < g.n; ++j)
    for (std::int64_t i = 0; i < g.m; ++i) {
      double acc = 0.0;
      for (std::int64_t l = 0; l < g.k; ++l) {
        const float av = g.op_a == Op::N ? a[i + l * g.lda] : a[l + i * g.lda];
        const float bv = g.op_b == Op::N ? b[l + j * g.ldb] : b[j + l * g.ldb];
        acc += static_cast<double>(av) * bv;
      }
      float& d = c[i + j * g.ldc];
      const float prior = beta != 0.0f ? beta * d : 0.0f;
      d = static_cast<float>(alpha * acc) + prior + (bias ? bias[i] : 0.0f);
    }
}

// The row-major problem through its column-major form, as GemmRunner::run issues it (operands swapped).
inline void run_row_major(const vidlora::cuda::GemmProblem& p, const float* a, const float* b, float* c, float alpha,
                          float beta, const float* bias) {
  vidlora::cuda::check_gemm(p);
  column_major_gemm(vidlora::cuda::to_column_major(p), b, a, c, alpha, beta, bias);
}

}  // namespace vidlora_test
