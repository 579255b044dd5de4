// The cuBLASLt calls vidlora makes (core/cuda/gemm.cuh), on the CPU: column-major D = alpha·op(A)·op(B) + beta·C
// (+ bias[row]), every product and sum in fp32 in k order (cuBLASLt's order is its own: the tests' tolerances hold
// either way), TF32 compute rounding A and B to TF32 first. What cuBLASLt refuses is refused here too, with the
// status it answers: type combinations outside its table for the compute type (cublasLtMatmul: CUBLAS_COMPUTE_32F
// takes A = B in {16F, 16BF, 32F} with C = D in {A's type, 32F}; the FAST_TF32 compute only 32F), a bias whose type is
// not D's (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE), leading dimensions below the stored rows, operands whose span is not
// inside one allocation of cudaMalloc or cudaMallocHost (the runtime's table, cuda_emu_runtime.cpp).
#include "cuda_emu.hpp"

#include <cstring>
#include <new>
#include <vector>

struct cublasLtContext {
  int unused = 0;
};

namespace {

struct Desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int bias_type = -1;
};
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t));
struct Layout {
  cudaDataType_t type;
  std::uint64_t rows, cols;
  std::int64_t ld;
};
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t));

Desc& desc(cublasLtMatmulDesc_t d) { return *reinterpret_cast<Desc*>(d); }
void product(const Desc& d, const Layout& a, const void* A, const Layout& b, const void* B, const Layout& c,
             const void* C, const Layout& o, void* D, float alpha, float beta);
const Layout& layout(cublasLtMatrixLayout_t l) { return *reinterpret_cast<const Layout*>(l); }

float load(const void* p, cudaDataType_t t, std::size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: std::abort();
  }
}
void store(void* p, cudaDataType_t t, std::size_t i, float v) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: std::abort();
  }
}
// TF32: 10 explicit mantissa bits, rounded to nearest (ties away from zero, as cvt.rna.tf32.f32).
float to_tf32(float x) {
  std::uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &b, 4);
  return x;
}

cublasStatus_t unsupported(const char* why) {
  std::fprintf(stderr, "vidlora cuBLASLt emulation: not supported: %s\n", why);
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

// The checks cuBLASLt makes before it has an algorithm (heuristic) or runs one (matmul).
cublasStatus_t check(const Desc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& dl) {
  if (d.scale != CUDA_R_32F) return unsupported("scale type other than 32F");
  if (a.type != b.type) return unsupported("A and B of different types");
  if (c.type != dl.type) return unsupported("C and D of different types");
  if (d.compute == CUBLAS_COMPUTE_32F_FAST_TF32) {
    if (a.type != CUDA_R_32F || c.type != CUDA_R_32F) return unsupported("FAST_TF32 compute with non-32F operands");
  } else if (d.compute == CUBLAS_COMPUTE_32F) {
    const bool ok_ab = a.type == CUDA_R_32F || a.type == CUDA_R_16F || a.type == CUDA_R_16BF;
    const bool ok_c = c.type == CUDA_R_32F || c.type == a.type;
    if (!ok_ab || !ok_c) return unsupported("type combination outside cublasLtMatmul's table for COMPUTE_32F");
  } else {
    return unsupported("compute type other than 32F and 32F_FAST_TF32");
  }
  if (d.epilogue != CUBLASLT_EPILOGUE_DEFAULT && d.epilogue != CUBLASLT_EPILOGUE_BIAS)
    return unsupported("epilogue other than DEFAULT and BIAS");
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && d.bias_type != -1 && d.bias_type != static_cast<int>(dl.type))
    return unsupported("bias type other than D's");
  // op(A) is m x k (stored m x k, or k x m transposed), op(B) k x n (k x n, or n x k).
  const std::uint64_t m = dl.rows, n = dl.cols;
  const bool ta = d.trans_a != CUBLAS_OP_N, tb = d.trans_b != CUBLAS_OP_N;
  const std::uint64_t k = ta ? a.rows : a.cols;
  if ((ta ? a.cols : a.rows) != m || (tb ? b.cols : b.rows) != k || (tb ? b.rows : b.cols) != n || c.rows != m ||
      c.cols != n) {
    std::fprintf(stderr, "vidlora cuBLASLt emulation: shapes disagree (m=%llu n=%llu k=%llu)\n",
                 static_cast<unsigned long long>(m), static_cast<unsigned long long>(n),
                 static_cast<unsigned long long>(k));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  for (const Layout* l : {&a, &b, &c, &dl})
    if (l->ld < static_cast<std::int64_t>(l->rows) || l->ld < 1) {
      std::fprintf(stderr, "vidlora cuBLASLt emulation: leading dimension %lld below the %llu stored rows\n",
                   static_cast<long long>(l->ld), static_cast<unsigned long long>(l->rows));
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  auto* raw = new cublasLtMatmulDescOpaque_t{};
  new (raw) Desc{compute, scale};
  *d = raw;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, std::size_t size) {
  Desc& x = desc(d);
  auto take = [&](auto& field) {
    if (size != sizeof(field)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return take(x.trans_a);
    case CUBLASLT_MATMUL_DESC_TRANSB: return take(x.trans_b);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return take(x.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return take(x.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return take(x.bias_type);
    default: return unsupported("a matmul descriptor attribute the emulation does not know");
  }
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, std::uint64_t rows,
                                          std::uint64_t cols, std::int64_t ld) {
  auto* raw = new cublasLtMatrixLayoutOpaque_t{};
  new (raw) Layout{type, rows, cols, ld};
  *l = raw;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new cublasLtMatmulPreferenceOpaque_t{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, std::size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* returned) {
  const cublasStatus_t s = check(desc(d), layout(a), layout(b), layout(c), layout(dl));
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  // Up to four "algorithms" (numbered in the algo's first word), so that autotuning has candidates to time: all
  // of them compute the same thing here.
  const int count = requested < 4 ? requested : 4;
  for (int i = 0; i < count; ++i) {
    std::memset(&results[i], 0, sizeof(results[i]));
    results[i].algo.data[0] = static_cast<std::uint64_t>(i);
    results[i].state = CUBLAS_STATUS_SUCCESS;
    results[i].wavesCount = 1.0f;
  }
  *returned = count;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t dd, const void* alpha_p, const void* A,
                              cublasLtMatrixLayout_t al, const void* B, cublasLtMatrixLayout_t bl, const void* beta_p,
                              const void* C, cublasLtMatrixLayout_t cl, void* D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t*, void*, std::size_t, cudaStream_t stream) {
  // Copies: the descriptors may be destroyed once the call returns, before the queued product runs.
  const Desc d = desc(dd);
  const Layout a = layout(al), b = layout(bl), c = layout(cl), o = layout(dl);
  if (const cublasStatus_t s = check(d, a, b, c, o); s != CUBLAS_STATUS_SUCCESS) return s;
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && !d.bias) return CUBLAS_STATUS_INVALID_VALUE;
  // Every element each operand's layout spans must lie in one device allocation.
  auto bytes = [](cudaDataType_t t) { return t == CUDA_R_32F ? std::size_t{4} : std::size_t{2}; };
  auto spans = [&](const void* p, const Layout& l, const char* name) {
    const std::size_t n = (static_cast<std::size_t>(l.ld) * (l.cols - 1) + l.rows) * bytes(l.type);
    if (l.cols == 0 || l.rows == 0 || vidlora_emu::in_device_memory(p, n)) return true;
    std::fprintf(stderr, "vidlora cuBLASLt emulation: %s (%p, %zu bytes) is not within one device allocation\n", name,
                 p, n);
    return false;
  };
  if (!spans(A, a, "A") || !spans(B, b, "B") || (*static_cast<const float*>(beta_p) != 0.0f && !spans(C, c, "C")) ||
      !spans(D, o, "D"))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (d.epilogue == CUBLASLT_EPILOGUE_BIAS && !vidlora_emu::in_device_memory(d.bias, o.rows * bytes(o.type))) {
    std::fprintf(stderr, "vidlora cuBLASLt emulation: the bias (%p, %llu values) is not device memory\n", d.bias,
                 static_cast<unsigned long long>(o.rows));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  // alpha and beta are host scalars (CUBLASLT_POINTER_MODE_HOST, the default): read at the call.
  const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  vidlora_emu::enqueue(stream, [=] { product(d, a, A, b, B, c, C, o, D, alpha, beta); });
  return CUBLAS_STATUS_SUCCESS;
}

namespace {
// D = alpha·op(A)·op(B) + beta·C (+ bias), when the stream's work reaches it.
void product(const Desc& d, const Layout& a, const void* A, const Layout& b, const void* B, const Layout& c,
             const void* C, const Layout& o, void* D, float alpha, float beta) {
  const std::size_t m = o.rows, n = o.cols;
  const std::size_t k = d.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const bool tf32 = d.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  // op(A) as rows of k, op(B) as columns of k (contiguous for the dot products): op(X)'s element (row, col) of a
  // column-major X, transposed or not.
  auto gather = [&](const void* x, const Layout& l, cublasOperation_t t, std::size_t count, bool rows) {
    std::vector<float> g(count * k);
    const auto ld = static_cast<std::size_t>(l.ld);
    for (std::size_t i = 0; i < count; ++i)
      for (std::size_t p = 0; p < k; ++p) {
        const std::size_t row = rows ? i : p, col = rows ? p : i;
        const float v = load(x, l.type, t == CUBLAS_OP_N ? row + col * ld : col + row * ld);
        g[i * k + p] = tf32 ? to_tf32(v) : v;
      }
    return g;
  };
  const std::vector<float> ar = gather(A, a, d.trans_a, m, true), bc = gather(B, b, d.trans_b, n, false);
  std::vector<float> out(m * n);
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t i = 0; i < m; ++i) {
      float acc = 0.0f;
      const float* x = &ar[i * k];
      const float* y = &bc[j * k];
      for (std::size_t p = 0; p < k; ++p) acc += x[p] * y[p];
      float v = alpha * acc;
      if (beta != 0.0f) v += beta * load(C, c.type, i + j * static_cast<std::size_t>(c.ld));
      if (d.epilogue == CUBLASLT_EPILOGUE_BIAS) v += load(d.bias, o.type, i);
      out[i + j * m] = v;
    }
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t i = 0; i < m; ++i) store(D, o.type, i + j * static_cast<std::size_t>(o.ld), out[i + j * m]);
}
}  // namespace
