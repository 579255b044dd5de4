#pragma once
// cuBLASLt GEMM in vidlora's row-major convention:  C[M,N] = alpha · op(A) · op(B) + beta · C  (+ bias[N] per
// column, i.e. per output feature), fp32 / fp16 / bf16 operands, fp32 accumulation (optionally TF32 for fp32
// operands), heuristic algorithm cached per problem.
//
// A row-major matrix is the column-major matrix of its transpose, so the row-major problem is run as the
// column-major  Cᵀ[N,M] = op(B)ᵀ · op(A)ᵀ : operands swapped, M and N swapped, transpose flags kept.
// That mapping, the shape checks and the cache key are host code (tested on the CPU, tests/cuda_host).
//
// Linear layer y = x·Wᵀ + b with x [T,in], W [out,in]:
//   forward   y [T,out]  = x · Wᵀ     linear_forward()
//   dx        dx [T,in]  = dy · W     linear_input_grad()
//   dW        dW [out,in]= dyᵀ · x    linear_weight_grad()

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <string>
#include <unordered_map>

#include <vidlora/core/cuda/status.cuh>

namespace vidlora::cuda {

enum class DType : std::uint8_t { F32, F16, BF16 };
enum class Op : std::uint8_t { N, T };
// How fp32 operands are multiplied: exact fp32, or TF32 tensor cores (10-bit mantissa inputs).
enum class Compute : std::uint8_t { F32, TF32 };

inline std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

// A row-major problem. lda/ldb/ldc are row strides in elements (0: packed, i.e. the stored row length).
struct GemmProblem {
  std::int64_t m = 0, n = 0, k = 0;
  Op op_a = Op::N, op_b = Op::N;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  DType a_type = DType::F32, b_type = DType::F32, c_type = DType::F32;
  Compute compute = Compute::F32;
  bool bias = false;  // bias[n] (type c_type) added to every row of C

  // Stored shape (rows, cols) of A and B as row-major matrices.
  std::int64_t a_rows() const { return op_a == Op::N ? m : k; }
  std::int64_t a_cols() const { return op_a == Op::N ? k : m; }
  std::int64_t b_rows() const { return op_b == Op::N ? k : n; }
  std::int64_t b_cols() const { return op_b == Op::N ? n : k; }
  std::int64_t lda_or_packed() const { return lda ? lda : a_cols(); }
  std::int64_t ldb_or_packed() const { return ldb ? ldb : b_cols(); }
  std::int64_t ldc_or_packed() const { return ldc ? ldc : n; }
};

// The same problem as cuBLAS(Lt) sees it, column-major: D[rows=m, cols=n] = op(A)[m,k] · op(B)[k,n].
struct ColumnMajorGemm {
  std::int64_t m = 0, n = 0, k = 0;
  Op op_a = Op::N, op_b = Op::N;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  // Stored (rows, cols) of each column-major operand: what cublasLtMatrixLayoutCreate is given.
  std::int64_t a_rows = 0, a_cols = 0, b_rows = 0, b_cols = 0;
  bool swapped = true;  // operand A of this call is the row-major problem's B
};

inline ColumnMajorGemm to_column_major(const GemmProblem& p) {
  ColumnMajorGemm c;
  c.m = p.n;
  c.n = p.m;
  c.k = p.k;
  c.op_a = p.op_b;
  c.op_b = p.op_a;
  c.lda = p.ldb_or_packed();
  c.ldb = p.lda_or_packed();
  c.ldc = p.ldc_or_packed();
  c.a_rows = c.op_a == Op::N ? c.m : c.k;
  c.a_cols = c.op_a == Op::N ? c.k : c.m;
  c.b_rows = c.op_b == Op::N ? c.k : c.n;
  c.b_cols = c.op_b == Op::N ? c.n : c.k;
  return c;
}

// Refuses empty or negative sizes, strides shorter than a row, and type combinations cuBLASLt has no
// fp32-accumulating kernel for (A and B must share a type; C is that type or f32; TF32 only for f32).
inline void check_gemm(const GemmProblem& p) {
  const char* who = "cuda::gemm";
  check_arg(p.m > 0 && p.n > 0 && p.k > 0, who,
            "sizes m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
                " must all be positive");
  check_arg(p.lda_or_packed() >= p.a_cols(), who,
            "lda " + std::to_string(p.lda) + " is shorter than a row of A (" + std::to_string(p.a_cols()) + ")");
  check_arg(p.ldb_or_packed() >= p.b_cols(), who,
            "ldb " + std::to_string(p.ldb) + " is shorter than a row of B (" + std::to_string(p.b_cols()) + ")");
  check_arg(p.ldc_or_packed() >= p.n, who,
            "ldc " + std::to_string(p.ldc) + " is shorter than a row of C (" + std::to_string(p.n) + ")");
  check_arg(p.a_type == p.b_type, who,
            std::string("A is ") + dtype_name(p.a_type) + " but B is " + dtype_name(p.b_type));
  check_arg(p.c_type == p.a_type || p.c_type == DType::F32, who,
            std::string("C must be ") + dtype_name(p.a_type) + " or f32, not " + dtype_name(p.c_type));
  check_arg(p.compute == Compute::F32 || p.a_type == DType::F32, who, "TF32 compute needs f32 operands");
}

// Everything the heuristic's choice depends on: the problem plus the operands' address alignment (cuBLASLt
// picks vectorised kernels only for 16-byte aligned operands, and its heuristic may rank kernels differently
// for 16- and 256-byte aligned ones; PyTorch likewise reports alignments up to 256).
inline constexpr std::uint16_t kMaxOperandAlignment = 256;

struct GemmKey {
  GemmProblem p;
  std::uint16_t alignment = kMaxOperandAlignment;  // min over A, B, C, bias of address_alignment

  bool operator==(const GemmKey& o) const {
    return p.m == o.p.m && p.n == o.p.n && p.k == o.p.k && p.op_a == o.p.op_a && p.op_b == o.p.op_b &&
           p.lda_or_packed() == o.p.lda_or_packed() && p.ldb_or_packed() == o.p.ldb_or_packed() &&
           p.ldc_or_packed() == o.p.ldc_or_packed() && p.a_type == o.p.a_type && p.b_type == o.p.b_type &&
           p.c_type == o.p.c_type && p.compute == o.p.compute && p.bias == o.p.bias && alignment == o.alignment;
  }
};

struct GemmKeyHash {
  std::size_t operator()(const GemmKey& k) const {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    auto mix = [&h](std::uint64_t v) {
      for (int i = 0; i < 8; ++i) {
        h ^= (v >> (8 * i)) & 0xFFu;
        h *= 1099511628211ull;
      }
    };
    const GemmProblem& p = k.p;
    mix(static_cast<std::uint64_t>(p.m));
    mix(static_cast<std::uint64_t>(p.n));
    mix(static_cast<std::uint64_t>(p.k));
    mix(static_cast<std::uint64_t>(p.lda_or_packed()));
    mix(static_cast<std::uint64_t>(p.ldb_or_packed()));
    mix(static_cast<std::uint64_t>(p.ldc_or_packed()));
    mix(static_cast<std::uint64_t>(p.op_a) | static_cast<std::uint64_t>(p.op_b) << 8 |
        static_cast<std::uint64_t>(p.a_type) << 16 | static_cast<std::uint64_t>(p.b_type) << 24 |
        static_cast<std::uint64_t>(p.c_type) << 32 | static_cast<std::uint64_t>(p.compute) << 40 |
        static_cast<std::uint64_t>(p.bias) << 48);
    mix(static_cast<std::uint64_t>(k.alignment));
    return static_cast<std::size_t>(h);
  }
};

// The largest power of two (<= 256, the alignment cudaMalloc guarantees) dividing the address.
inline std::uint16_t address_alignment(const void* ptr) {
  const auto a = reinterpret_cast<std::uintptr_t>(ptr);
  if (a == 0) return kMaxOperandAlignment;  // absent operand (no bias)
  std::uint16_t align = kMaxOperandAlignment;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// The three linear-layer problems for x [tokens, in], W [out, in] (all packed, same dtype `t`).
inline GemmProblem linear_forward(std::int64_t tokens, std::int64_t in, std::int64_t out, DType t, bool bias = false,
                                  DType c = DType::F32) {
  GemmProblem p;
  p.m = tokens;
  p.n = out;
  p.k = in;
  p.op_a = Op::N;
  p.op_b = Op::T;
  p.a_type = p.b_type = t;
  p.c_type = c;
  p.bias = bias;
  return p;
}
inline GemmProblem linear_input_grad(std::int64_t tokens, std::int64_t in, std::int64_t out, DType t,
                                     DType c = DType::F32) {
  GemmProblem p;
  p.m = tokens;
  p.n = in;
  p.k = out;
  p.op_a = Op::N;
  p.op_b = Op::N;
  p.a_type = p.b_type = t;
  p.c_type = c;
  return p;
}
inline GemmProblem linear_weight_grad(std::int64_t tokens, std::int64_t in, std::int64_t out, DType t,
                                      DType c = DType::F32) {
  GemmProblem p;
  p.m = out;
  p.n = in;
  p.k = tokens;
  p.op_a = Op::T;
  p.op_b = Op::N;
  p.a_type = p.b_type = t;
  p.c_type = c;
  return p;
}

}  // namespace vidlora::cuda

#if VIDLORA_HAS_CUDA_RUNTIME
#include <cmath>
#include <memory>

namespace vidlora::cuda {

inline cudaDataType_t to_cuda(DType t) {
  return t == DType::F32 ? CUDA_R_32F : t == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
}
inline cublasOperation_t to_cublas(Op o) { return o == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T; }

// How a plan's algorithm is chosen on its first use.
//   Heuristic: cuBLASLt's first heuristic answer (deterministic: the same algorithm on every run).
//   Autotune:  the fastest of up to kAutotuneCandidates heuristic answers, timed on the real operands with
//              the output written to scratch memory (beta != 0 reads scratch, so accumulating outputs are
//              untouched). Faster for skinny shapes; the choice may differ between runs (summation order).
enum class GemmTuning : std::uint8_t { Heuristic, Autotune };
inline constexpr int kAutotuneCandidates = 8;

// One cuBLASLt handle, one workspace and the plan cache. Not thread-safe; one per stream/thread.
class GemmRunner {
 public:
  explicit GemmRunner(std::size_t workspace_bytes = std::size_t{32} << 20, GemmTuning tuning = GemmTuning::Heuristic)
      : workspace_bytes_(workspace_bytes), tuning_(tuning) {
    VIDLORA_CUBLAS_CHECK(cublasLtCreate(&handle_));
    if (workspace_bytes_) VIDLORA_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
  }
  ~GemmRunner() {
    cache_.clear();
    if (workspace_) (void)cudaFree(workspace_);
    if (handle_) (void)cublasLtDestroy(handle_);
  }
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // C = alpha·op(A)·op(B) + beta·C (+ bias). beta != 0 reads C. Asynchronous on `stream`.
  void run(const GemmProblem& p, const void* a, const void* b, void* c, float alpha = 1.0f, float beta = 0.0f,
           const void* bias = nullptr, cudaStream_t stream = nullptr) {
    check_gemm(p);
    check_arg(p.bias == (bias != nullptr), "cuda::gemm",
              p.bias ? "the problem has a bias but no bias pointer" : "a bias pointer for a problem without bias");
    GemmKey key{p,
                std::min({address_alignment(a), address_alignment(b), address_alignment(c), address_alignment(bias)})};
    Plan& plan = plan_for(key, a, b, alpha, beta, bias, stream);
    if (p.bias)
      check(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
            "cublasLtMatmulDescSetAttribute(BIAS_POINTER)", key, beta);
    // Row-major -> column-major: the first cuBLASLt operand is B.
    check(cublasLtMatmul(handle_, plan.op, &alpha, b, plan.a, a, plan.b, &beta, c, plan.c, c, plan.c, &plan.algo,
                         workspace_, workspace_bytes_, stream),
          "cublasLtMatmul", key, beta);
  }

  // The GEMM a key stands for, for error messages: shapes, transposes, leading dimensions, types, bias, alignment.
  static std::string describe(const GemmKey& key, float beta) {
    const GemmProblem& p = key.p;
    auto op = [](Op o) { return o == Op::N ? "N" : "T"; };
    return "m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
           " op_a=" + op(p.op_a) + " op_b=" + op(p.op_b) + " lda=" + std::to_string(p.lda_or_packed()) +
           " ldb=" + std::to_string(p.ldb_or_packed()) + " ldc=" + std::to_string(p.ldc_or_packed()) + " " +
           dtype_name(p.a_type) + " x " + dtype_name(p.b_type) + " -> " + dtype_name(p.c_type) +
           (p.compute == Compute::TF32 ? " (TF32)" : "") + (p.bias ? " + bias" : "") + " beta=" + std::to_string(beta) +
           " operand alignment " + std::to_string(key.alignment) + " B";
  }

  std::size_t cached_plans() const { return cache_.size(); }
  GemmTuning tuning() const { return tuning_; }
  // Candidates timed by autotuning so far (0 under Heuristic): tells a test that the tuner really ran.
  std::size_t autotune_trials() const { return autotune_trials_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    Plan() = default;
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    ~Plan() {
      if (a) (void)cublasLtMatrixLayoutDestroy(a);
      if (b) (void)cublasLtMatrixLayoutDestroy(b);
      if (c) (void)cublasLtMatrixLayoutDestroy(c);
      if (op) (void)cublasLtMatmulDescDestroy(op);
    }
  };

  // A cuBLAS call of the GEMM `key` that failed: its status and the GEMM it was for.
  static void check(cublasStatus_t status, const char* call, const GemmKey& key, float beta) {
    if (status != CUBLAS_STATUS_SUCCESS)
      throw CudaError(std::string("cuda::gemm: ") + call + " failed with " + cublas_status_name(status) + " for " +
                      describe(key, beta));
  }

  Plan& plan_for(const GemmKey& key, const void* a, const void* b, float alpha, float beta, const void* bias,
                 cudaStream_t stream) {
    if (auto it = cache_.find(key); it != cache_.end()) return *it->second;
    const GemmProblem& p = key.p;
    const ColumnMajorGemm g = to_column_major(p);
    auto plan = std::make_unique<Plan>();
    const cublasComputeType_t compute = p.compute == Compute::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    VIDLORA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, compute, CUDA_R_32F));
    const cublasOperation_t ta = to_cublas(g.op_a), tb = to_cublas(g.op_b);
    VIDLORA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    VIDLORA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (p.bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      VIDLORA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      const cudaDataType_t bt = to_cuda(p.c_type);
      VIDLORA_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
      // The heuristic reads the bias pointer's alignment from the descriptor (cublasLt.h, BIAS_POINTER).
      VIDLORA_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    // Operand A of the column-major call is the row-major B (type b_type), and vice versa.
    VIDLORA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, to_cuda(p.b_type), static_cast<std::uint64_t>(g.a_rows),
                                                    static_cast<std::uint64_t>(g.a_cols), g.lda));
    VIDLORA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, to_cuda(p.a_type), static_cast<std::uint64_t>(g.b_rows),
                                                    static_cast<std::uint64_t>(g.b_cols), g.ldb));
    VIDLORA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, to_cuda(p.c_type), static_cast<std::uint64_t>(g.m),
                                                    static_cast<std::uint64_t>(g.n), g.ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    VIDLORA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, cublasStatus_t (*)(cublasLtMatmulPreference_t)>
        pref_guard(pref, &cublasLtMatmulPreferenceDestroy);
    const std::uint64_t ws = workspace_bytes_;
    VIDLORA_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    // The heuristic otherwise assumes 256-byte aligned operands; tell it what the key guarantees.
    const std::uint32_t align = key.alignment;
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      VIDLORA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
    cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates] = {};
    int returned = 0;
    const int wanted = tuning_ == GemmTuning::Autotune ? kAutotuneCandidates : 1;
    // (cuBLASLt answers NOT_SUPPORTED itself when no algorithm fits: the error names the GEMM either way.)
    check(cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c, pref, wanted, results,
                                         &returned),
          "cublasLtMatmulAlgoGetHeuristic", key, beta);
    check_arg(
        returned > 0 && results[0].state == CUBLAS_STATUS_SUCCESS, "cuda::gemm",
        std::string("cuBLASLt has no algorithm for ") + describe(key, beta) +
            (returned > 0 ? std::string(" (its first answer's state: ") + cublas_status_name(results[0].state) + ")"
                          : std::string()));
    plan->algo = results[0].algo;
    if (returned > 1) plan->algo = fastest(*plan, g, p, results, returned, a, b, alpha, beta, bias, stream);
    return *cache_.emplace(key, std::move(plan)).first->second;
  }

  // Times each candidate (one warm-up, then the best of 3 runs) into a zeroed scratch output of C's layout;
  // candidates cuBLASLt refuses at run time are skipped. Returns the fastest algorithm.
  cublasLtMatmulAlgo_t fastest(Plan& plan, const ColumnMajorGemm& g, const GemmProblem& p,
                               const cublasLtMatmulHeuristicResult_t* results, int count, const void* a, const void* b,
                               float alpha, float beta, const void* bias, cudaStream_t stream) {
    const std::size_t c_bytes = static_cast<std::size_t>(g.ldc) * static_cast<std::size_t>(g.n) * dtype_size(p.c_type);
    void* scratch = nullptr;
    VIDLORA_CUDA_CHECK(cudaMalloc(&scratch, c_bytes));
    std::unique_ptr<void, cudaError_t (*)(void*)> scratch_guard(scratch, &cudaFree);
    VIDLORA_CUDA_CHECK(cudaMemsetAsync(scratch, 0, c_bytes, stream));
    if (p.bias)
      VIDLORA_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    cudaEvent_t start = nullptr, stop = nullptr;
    VIDLORA_CUDA_CHECK(cudaEventCreate(&start));
    std::unique_ptr<CUevent_st, cudaError_t (*)(cudaEvent_t)> start_guard(start, &cudaEventDestroy);
    VIDLORA_CUDA_CHECK(cudaEventCreate(&stop));
    std::unique_ptr<CUevent_st, cudaError_t (*)(cudaEvent_t)> stop_guard(stop, &cudaEventDestroy);
    cublasLtMatmulAlgo_t best = results[0].algo;
    float best_ms = INFINITY;
    for (int i = 0; i < count; ++i) {
      if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
      const cublasLtMatmulAlgo_t* algo = &results[i].algo;
      auto launch = [&] {
        return cublasLtMatmul(handle_, plan.op, &alpha, b, plan.a, a, plan.b, &beta, scratch, plan.c, scratch, plan.c,
                              algo, workspace_, workspace_bytes_, stream);
      };
      if (launch() != CUBLAS_STATUS_SUCCESS) continue;
      float ms = INFINITY;
      for (int rep = 0; rep < 3; ++rep) {
        VIDLORA_CUDA_CHECK(cudaEventRecord(start, stream));
        VIDLORA_CUBLAS_CHECK(launch());
        VIDLORA_CUDA_CHECK(cudaEventRecord(stop, stream));
        VIDLORA_CUDA_CHECK(cudaEventSynchronize(stop));
        float t = 0;
        VIDLORA_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
        ms = std::min(ms, t);
      }
      ++autotune_trials_;
      if (ms < best_ms) {
        best_ms = ms;
        best = results[i].algo;
      }
    }
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream));  // scratch is freed on return
    return best;
  }

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  GemmTuning tuning_ = GemmTuning::Heuristic;
  std::size_t autotune_trials_ = 0;
  std::unordered_map<GemmKey, std::unique_ptr<Plan>, GemmKeyHash> cache_;
};

}  // namespace vidlora::cuda
#endif
