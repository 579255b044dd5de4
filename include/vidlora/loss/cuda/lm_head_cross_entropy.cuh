#pragma once
// The LM-head cross-entropy streamed over the vocabulary on the GPU: logits = hidden · Wᵀ are produced
// [rows, chunk] at a time by cuBLASLt and never held as [rows, vocab] (loss::lm_head_cross_entropy is the CPU
// path). Forward: per chunk, the logits GEMM and one block per row folding the chunk's online log-sum-exp,
// logit sum and (when the target falls in the chunk) target logit into that row's running state; then each
// row's lse and token loss. Backward (the head is frozen: only d loss / d hidden): per chunk, the logits again,
// d loss / d logits in place (loss::cross_entropy_logit_grad), and grad_hidden += G · W_chunk (GEMM, beta 1
// after the first chunk). Deterministic: every sum has a fixed order (one block per row, a fixed tree, the
// chunks in order, the row losses summed on the host in row order), so two runs give the same bits.
// The sequence is lm_head_ce_steps over an executor: LmHeadCeCudaExecutor runs it with the kernels, the CPU
// tests (tests/cuda_host/test_lm_head_steps.cpp) with a host executor against loss::lm_head_cross_entropy.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/loss/ce_normalizer.hpp>
#include <vidlora/loss/cuda/cross_entropy.cuh>
#include <vidlora/loss/log_sum_exp.hpp>

namespace vidlora::loss::cuda {

// Rows [begin, begin + count) of the head weight: one GEMM's worth of the vocabulary.
struct VocabChunk {
  std::int64_t begin = 0, count = 0;
};

// The chunks covering [0, vocab) in order, each chunk_size rows but the last (vocab need not be a multiple).
inline std::vector<VocabChunk> vocab_chunks(std::int64_t vocab, std::int64_t chunk_size) {
  vidlora::cuda::check_arg(vocab > 0, "cuda::lm_head_cross_entropy", "the vocabulary is empty");
  vidlora::cuda::check_arg(chunk_size > 0, "cuda::lm_head_cross_entropy",
                           "chunk_size must be positive, got " + std::to_string(chunk_size));
  std::vector<VocabChunk> out;
  for (std::int64_t v = 0; v < vocab; v += chunk_size)
    out.push_back({v, chunk_size < vocab - v ? chunk_size : vocab - v});
  return out;
}

// loss::CrossEntropyOptions + loss::LmHeadOptions in the fmt-free form nvcc can include.
struct LmHeadCeOptions {
  double label_smoothing = 0.0;      // ε in [0, 1]
  std::int32_t ignore_index = -100;  // targets equal to this take no loss and get a zero gradient row
  bool sum_reduction = false;        // false: mean over valid tokens (or over total_valid_tokens when > 0)
  long total_valid_tokens = 0;
  std::int64_t chunk_size = 8192;  // vocabulary rows per chunk: the [rows, chunk] logits buffer is the peak
  double grad_factor = 1.0;        // multiplies the gradient only (an upstream gradient or a loss scale)
  // The logits and d hidden GEMMs: fp32, or TF32 tensor cores (sm_80+; cuBLASLt runs fp32 where there are none).
  vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32;
};

// A problem's sizes; hidden [rows, dim], head [vocab, head_dim] (head_dim must equal dim), targets [n_targets].
struct LmHeadCeShape {
  std::int64_t rows = 0, dim = 0, vocab = 0, head_dim = 0, n_targets = 0;
};

inline std::string lm_head_shape_string(std::int64_t r, std::int64_t c) {
  std::string s = "[";  // appended piecewise: g++ 12 warns (-Wrestrict) on "[" + std::to_string(...)
  s += std::to_string(r);
  s += ", ";
  s += std::to_string(c);
  s += "]";
  return s;
}

// Checks the shapes and options (naming the tensor and its shape) and the targets (range, as check_ce_targets);
// returns the number of valid (non-ignored) targets.
inline long check_lm_head_ce(const LmHeadCeShape& s, const std::vector<std::int32_t>& targets,
                             const LmHeadCeOptions& o) {
  constexpr const char* who = "cuda::lm_head_cross_entropy";
  vidlora::cuda::check_arg(s.rows > 0 && s.dim > 0, who, "hidden " + lm_head_shape_string(s.rows, s.dim) + " is empty");
  vidlora::cuda::check_arg(s.head_dim == s.dim, who,
                           "hidden " + lm_head_shape_string(s.rows, s.dim) + " and head weight " +
                               lm_head_shape_string(s.vocab, s.head_dim) + " disagree on the hidden size");
  vidlora::cuda::check_arg(static_cast<std::int64_t>(targets.size()) == s.rows, who,
                           "hidden " + lm_head_shape_string(s.rows, s.dim) +
                               " needs one target per row, got targets [" + std::to_string(targets.size()) + "]");
  vidlora::cuda::check_arg(o.chunk_size > 0, who, "chunk_size must be positive, got " + std::to_string(o.chunk_size));
  // As the CPU loss (loss::check_targets): 0 would zero every gradient, NaN poison them, without a word.
  vidlora::cuda::check_arg(std::isfinite(o.grad_factor) && o.grad_factor > 0.0, who,
                           "grad_factor (the loss scale) must be finite and > 0, got " + std::to_string(o.grad_factor));
  vidlora::cuda::check_arg(o.total_valid_tokens >= 0 && (!o.sum_reduction || o.total_valid_tokens == 0), who,
                           "total_valid_tokens (" + std::to_string(o.total_valid_tokens) +
                               ") must be >= 0 and only applies to the mean reduction");
  const long valid = check_ce_targets(targets, s.vocab, o.ignore_index, o.label_smoothing);
  vidlora::cuda::check_arg(
      o.total_valid_tokens == 0 || valid <= o.total_valid_tokens, who,
      std::to_string(valid) + " valid tokens exceed total_valid_tokens = " + std::to_string(o.total_valid_tokens));
  return valid;
}

// One row's running statistics over the chunks seen so far: what the fold kernel keeps per row.
struct LmHeadRowState {
  OnlineLogSumExp lse;
  double logit_sum = 0.0;     // Σ_j z_j (label smoothing)
  double target_logit = 0.0;  // z_target, set by the chunk holding the target
  // Folds one chunk's reduced statistics in; `target_in_chunk` with its logit when the target lies in it.
  VIDLORA_HOST_DEVICE void fold(const RowStats& chunk, bool target_in_chunk, float target_z) {
    lse.merge(chunk.lse);
    logit_sum += chunk.logit_sum;
    if (target_in_chunk) target_logit = static_cast<double>(target_z);
  }
  VIDLORA_HOST_DEVICE double token_loss(double vocab, double label_smoothing) const {
    return cross_entropy_token_loss(lse.value(), target_logit, logit_sum, vocab, label_smoothing);
  }
};

// What lm_head_ce_steps returns: loss = loss_sum / normalizer (0 when no target is valid).
struct LmHeadCeResult {
  double loss = 0.0, loss_sum = 0.0, normalizer = 0.0;
  long valid_tokens = 0;
};

// The streamed cross-entropy as a sequence of executor calls (the CUDA executor below; a host executor in the
// CPU tests). Executor: zero_grad(), reset_rows(), chunk_logits(VocabChunk), fold_chunk(VocabChunk),
// finish_rows(row_loss, row_lse) (host vectors), chunk_logit_grad(VocabChunk, scale), accumulate_grad(VocabChunk,
// beta). with_grad: also d loss / d hidden (scaled by options.grad_factor).
template <class Exec>
LmHeadCeResult lm_head_ce_steps(Exec& e, const LmHeadCeShape& shape, const std::vector<std::int32_t>& targets,
                                const LmHeadCeOptions& o, bool with_grad) {
  LmHeadCeResult r;
  r.valid_tokens = check_lm_head_ce(shape, targets, o);
  if (r.valid_tokens == 0) {  // loss 0 and a zero gradient, as loss::cross_entropy defines it
    if (with_grad) e.zero_grad();
    return r;
  }
  r.normalizer = ce_normalizer(o.sum_reduction, r.valid_tokens, o.total_valid_tokens);
  const std::vector<VocabChunk> chunks = vocab_chunks(shape.vocab, o.chunk_size);
  e.reset_rows();
  for (const VocabChunk& c : chunks) {
    e.chunk_logits(c);
    e.fold_chunk(c);
  }
  std::vector<double> row_loss, row_lse;
  e.finish_rows(row_loss, row_lse);
  for (std::size_t i = 0; i < targets.size(); ++i) {  // row order: the same sum on every run
    if (targets[i] == o.ignore_index) continue;
    vidlora::cuda::check_arg(std::isfinite(row_lse[i]), "cuda::lm_head_cross_entropy",
                             "log-sum-exp of row " + std::to_string(i) + " is " + std::to_string(row_lse[i]) +
                                 " (NaN or +Inf in the logits)");
    r.loss_sum += row_loss[i];
  }
  r.loss = r.loss_sum / r.normalizer;
  if (!with_grad) return r;
  const double scale = o.grad_factor / r.normalizer;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    e.chunk_logits(chunks[i]);
    e.chunk_logit_grad(chunks[i], scale);
    e.accumulate_grad(chunks[i], i == 0 ? 0.0f : 1.0f);
  }
  return r;
}

}  // namespace vidlora::loss::cuda

#if VIDLORA_KERNELS
namespace vidlora::loss::cuda {

// Device pointers of one streamed cross-entropy; `logits` is the [rows, chunk] workspace (a chunk of c columns
// is stored packed, row stride c).
struct LmHeadCeParams {
  const float* hidden = nullptr;          // [rows, dim]
  const float* head = nullptr;            // [vocab, dim]
  const std::int32_t* targets = nullptr;  // [rows]
  float* logits = nullptr;                // [rows, chunk]
  LmHeadRowState* state = nullptr;        // [rows]
  double* row_loss = nullptr;             // [rows]
  double* row_lse = nullptr;              // [rows]
  float* grad_hidden = nullptr;           // [rows, dim]
  std::int64_t rows = 0, dim = 0, vocab = 0;
  std::int32_t ignore_index = -100;
  double label_smoothing = 0.0;
  // per chunk
  std::int64_t begin = 0, count = 0;
  double scale = 1.0;
};

namespace detail {

template <class = void>
__global__ void lm_head_reset_kernel(LmHeadCeParams p) {
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < p.rows;
       r += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    p.state[r] = LmHeadRowState{};
}

// One block per row: the chunk's statistics in Threads strided lanes and a fixed tree, folded into the row.
template <int Threads>
__global__ void lm_head_fold_kernel(LmHeadCeParams p) {
  VIDLORA_STATIC_SHARED(8, double, s_max, [Threads]);
  VIDLORA_STATIC_SHARED(8, double, s_sum, [Threads]);
  VIDLORA_STATIC_SHARED(8, double, s_lsum, [Threads]);
  const std::int64_t row = blockIdx.x;
  const std::int32_t t = p.targets[row];
  if (t == p.ignore_index) return;
  const float* z = p.logits + row * p.count;
  RowStats st;
  for (std::int64_t j = threadIdx.x; j < p.count; j += Threads) st.add(z[j]);
  s_max[threadIdx.x] = st.lse.max;
  s_sum[threadIdx.x] = st.lse.sum;
  s_lsum[threadIdx.x] = st.logit_sum;
  __syncthreads();
  for (int w = Threads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) {
      OnlineLogSumExp a{s_max[threadIdx.x], s_sum[threadIdx.x]};
      a.merge(s_max[threadIdx.x + w], s_sum[threadIdx.x + w]);
      s_max[threadIdx.x] = a.max;
      s_sum[threadIdx.x] = a.sum;
      s_lsum[threadIdx.x] += s_lsum[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    RowStats total;
    total.lse = OnlineLogSumExp{s_max[0], s_sum[0]};
    total.logit_sum = s_lsum[0];
    const bool in_chunk = t >= p.begin && t < p.begin + p.count;
    p.state[row].fold(total, in_chunk, in_chunk ? z[t - p.begin] : 0.0f);
  }
}

template <class = void>
__global__ void lm_head_finish_kernel(LmHeadCeParams p) {
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < p.rows;
       r += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const bool ignored = p.targets[r] == p.ignore_index;
    p.row_lse[r] = ignored ? 0.0 : p.state[r].lse.value();
    p.row_loss[r] = ignored ? 0.0 : p.state[r].token_loss(static_cast<double>(p.vocab), p.label_smoothing);
  }
}

// d loss / d z in place over the chunk (zero rows for ignored targets).
template <class = void>
__global__ void lm_head_logit_grad_kernel(LmHeadCeParams p) {
  const std::int64_t n = p.rows * p.count;
  const double inv_vocab = 1.0 / static_cast<double>(p.vocab);
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / p.count, j = p.begin + i % p.count;
    const std::int32_t t = p.targets[row];
    p.logits[i] = t == p.ignore_index
                      ? 0.0f
                      : ce_grad_element(p.logits[i], p.row_lse[row], j == t, p.label_smoothing, inv_vocab, p.scale);
  }
}

}  // namespace detail

// The CUDA executor of lm_head_ce_steps. Owns its workspace ([rows, chunk] logits, per-row state, losses, lse), from
// `allocator` under tags "lm_head.logits", ... (null: cudaMalloc).
class LmHeadCeCudaExecutor {
 public:
  // hidden [rows, dim], head [vocab, dim], grad_hidden [rows, dim] (may be null without a backward): device.
  LmHeadCeCudaExecutor(vidlora::cuda::GemmRunner& gemm, const float* hidden, const float* head, float* grad_hidden,
                       const LmHeadCeShape& shape, const std::vector<std::int32_t>& targets, const LmHeadCeOptions& o,
                       cudaStream_t stream = nullptr, vidlora::cuda::CudaCachingAllocator* allocator = nullptr)
      : gemm_(gemm), stream_(stream), compute_(o.compute) {
    // Its uploads (the targets) run on the legacy default stream, which a non-blocking stream's kernels do not wait for.
    vidlora::cuda::require_legacy_ordered_stream(stream, "cuda::lm_head_cross_entropy");
    const std::int64_t chunk = o.chunk_size < shape.vocab ? o.chunk_size : shape.vocab;
    const auto rows = static_cast<std::size_t>(shape.rows);
    targets_ = vidlora::cuda::DeviceBuffer<std::int32_t>(allocator, targets, "lm_head.targets");
    logits_ = vidlora::cuda::DeviceBuffer<float>(allocator, rows * static_cast<std::size_t>(chunk > 0 ? chunk : 1),
                                                 "lm_head.logits");
    state_ = vidlora::cuda::DeviceBuffer<LmHeadRowState>(allocator, rows, "lm_head.row_state");
    row_loss_ = vidlora::cuda::DeviceBuffer<double>(allocator, rows, "lm_head.row_loss");
    row_lse_ = vidlora::cuda::DeviceBuffer<double>(allocator, rows, "lm_head.row_lse");
    p_.hidden = hidden;
    p_.head = head;
    p_.targets = targets_.data();
    p_.logits = logits_.data();
    p_.state = state_.data();
    p_.row_loss = row_loss_.data();
    p_.row_lse = row_lse_.data();
    p_.grad_hidden = grad_hidden;
    p_.rows = shape.rows;
    p_.dim = shape.dim;
    p_.vocab = shape.vocab;
    p_.ignore_index = o.ignore_index;
    p_.label_smoothing = o.label_smoothing;
  }

  void zero_grad() {
    vidlora::cuda::check_arg(p_.grad_hidden != nullptr, "cuda::lm_head_cross_entropy", "no grad_hidden to write");
    VIDLORA_CUDA_CHECK(
        cudaMemsetAsync(p_.grad_hidden, 0, static_cast<std::size_t>(p_.rows * p_.dim) * sizeof(float), stream_));
  }
  void reset_rows() {
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(p_.rows, 256), 256, 0, stream_, detail::lm_head_reset_kernel<>)(p_);
    VIDLORA_CUDA_CHECK_LAUNCH("lm_head_reset_kernel");
  }
  void chunk_logits(const VocabChunk& c) {
    gemm_.run(with_compute(vidlora::cuda::linear_forward(p_.rows, p_.dim, c.count, vidlora::cuda::DType::F32)),
              p_.hidden, p_.head + c.begin * p_.dim, p_.logits, 1.0f, 0.0f, nullptr, stream_);
  }
  void fold_chunk(const VocabChunk& c) {
    LmHeadCeParams p = p_;
    p.begin = c.begin;
    p.count = c.count;
    constexpr int T = 256;
    VIDLORA_LAUNCH(static_cast<unsigned>(p.rows), T, 0, stream_, detail::lm_head_fold_kernel<T>)(p);
    VIDLORA_CUDA_CHECK_LAUNCH("lm_head_fold_kernel");
  }
  void finish_rows(std::vector<double>& row_loss, std::vector<double>& row_lse) {
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(p_.rows, 256), 256, 0, stream_, detail::lm_head_finish_kernel<>)(p_);
    VIDLORA_CUDA_CHECK_LAUNCH("lm_head_finish_kernel");
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    row_loss = row_loss_.download();
    row_lse = row_lse_.download();
  }
  void chunk_logit_grad(const VocabChunk& c, double scale) {
    LmHeadCeParams p = p_;
    p.begin = c.begin;
    p.count = c.count;
    p.scale = scale;
    VIDLORA_LAUNCH(vidlora::cuda::grid_size(p.rows * p.count, 256), 256, 0, stream_,
                   detail::lm_head_logit_grad_kernel<>)
    (p);
    VIDLORA_CUDA_CHECK_LAUNCH("lm_head_logit_grad_kernel");
  }
  // grad_hidden = G · W_chunk + beta · grad_hidden.
  void accumulate_grad(const VocabChunk& c, float beta) {
    vidlora::cuda::check_arg(p_.grad_hidden != nullptr, "cuda::lm_head_cross_entropy", "no grad_hidden to write");
    gemm_.run(with_compute(vidlora::cuda::linear_input_grad(p_.rows, p_.dim, c.count, vidlora::cuda::DType::F32)),
              p_.logits, p_.head + c.begin * p_.dim, p_.grad_hidden, 1.0f, beta, nullptr, stream_);
  }

 private:
  vidlora::cuda::GemmProblem with_compute(vidlora::cuda::GemmProblem g) const {
    g.compute = compute_;
    return g;
  }
  vidlora::cuda::GemmRunner& gemm_;
  cudaStream_t stream_ = nullptr;
  vidlora::cuda::Compute compute_ = vidlora::cuda::Compute::F32;
  LmHeadCeParams p_;
  vidlora::cuda::DeviceBuffer<std::int32_t> targets_;
  vidlora::cuda::DeviceBuffer<float> logits_;
  vidlora::cuda::DeviceBuffer<LmHeadRowState> state_;
  vidlora::cuda::DeviceBuffer<double> row_loss_, row_lse_;
};

// Loss of logits = hidden · headᵀ against `targets` (host), streamed over the vocabulary; with grad_hidden (device
// [rows, dim]) also d loss / d hidden · options.grad_factor. Every pointer is device memory. Synchronizes the
// stream once (the row losses are summed on the host). Its workspace comes from `allocator` (null: cudaMalloc).
inline LmHeadCeResult lm_head_cross_entropy(vidlora::cuda::GemmRunner& gemm, const float* hidden, const float* head,
                                            const LmHeadCeShape& shape, const std::vector<std::int32_t>& targets,
                                            const LmHeadCeOptions& options, float* grad_hidden,
                                            cudaStream_t stream = nullptr,
                                            vidlora::cuda::CudaCachingAllocator* allocator = nullptr) {
  vidlora::cuda::check_arg(hidden && head, "cuda::lm_head_cross_entropy", "needs hidden and head pointers");
  check_lm_head_ce(shape, targets, options);  // before any allocation sized by the shape
  LmHeadCeCudaExecutor exec(gemm, hidden, head, grad_hidden, shape, targets, options, stream, allocator);
  return lm_head_ce_steps(exec, shape, targets, options, grad_hidden != nullptr);
}

}  // namespace vidlora::loss::cuda
#endif
