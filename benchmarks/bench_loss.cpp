// Streamed LM-head cross-entropy against the naive path (full [T, V] logits, cross_entropy, then
// grad_hidden = grad · W) at Qwen2's vocabulary (V = 152064) and Qwen2-0.5B's hidden size (D = 896).
//
// Memory: every heap byte the process allocates goes through the malloc wrappers below, so the
// `peak_MiB` counter is the real peak of bytes allocated during one call above what was live before
// it (outputs included: grad_hidden is [T, D] on both paths; the naive path also holds [T, V]
// logits and [T, V] grad). Tokens: argument 0 (default list below); VIDLORA_BENCH_LOSS_TOKENS=4096
// in the environment runs the T = 4096 instead.

#include <benchmark/benchmark.h>

#include <malloc.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <vidlora/core.hpp>
#include <vidlora/loss.hpp>

// ---- heap accounting: glibc's allocator wrapped, every live byte counted ----
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace heap {
std::atomic<long long> live{0};
std::atomic<long long> peak{0};

inline void* note_alloc(void* p) {
  if (p) {
    const long long now =
        live.fetch_add(static_cast<long long>(malloc_usable_size(p))) + static_cast<long long>(malloc_usable_size(p));
    long long seen = peak.load(std::memory_order_relaxed);
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  return p;
}
inline void note_free(void* p) {
  if (p) live.fetch_sub(static_cast<long long>(malloc_usable_size(p)));
}
// Peak bytes above the live bytes at the moment of reset().
struct Window {
  long long base = 0;
  void reset() {
    base = live.load();
    peak.store(base);
  }
  long long peak_extra() const { return peak.load() - base; }
};
}  // namespace heap

extern "C" {
void* malloc(std::size_t n) { return heap::note_alloc(__libc_malloc(n)); }
void* calloc(std::size_t n, std::size_t size) { return heap::note_alloc(__libc_calloc(n, size)); }
void* realloc(void* p, std::size_t n) {
  heap::note_free(p);
  return heap::note_alloc(__libc_realloc(p, n));
}
void* memalign(std::size_t align, std::size_t n) { return heap::note_alloc(__libc_memalign(align, n)); }
void* aligned_alloc(std::size_t align, std::size_t n) { return heap::note_alloc(__libc_memalign(align, n)); }
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  void* p = heap::note_alloc(__libc_memalign(align, n));
  if (!p) return 12;  // ENOMEM
  *out = p;
  return 0;
}
void free(void* p) {
  heap::note_free(p);
  __libc_free(p);
}
}

namespace {

using namespace vidlora;

constexpr Eigen::Index kVocab = 152064;  // Qwen2 / Qwen2-VL vocabulary
constexpr Eigen::Index kDim = 896;       // Qwen2-0.5B hidden size
constexpr double kLabelSmoothing = 0.1;  // the L4 / A100 / H100 presets

struct Problem {
  Matrix hidden;             // [T, D]
  Matrix weight;             // [V, D]
  std::vector<int> targets;  // [T], all valid (ignored tokens would only help the streamed path)
};

const Problem& problem(Eigen::Index tokens) {
  static Problem p;
  if (p.hidden.rows() != tokens) {
    CounterRng rng(1);
    if (p.weight.rows() != kVocab) {
      p.weight.resize(kVocab, kDim);
      for (Eigen::Index i = 0; i < p.weight.size(); ++i)
        p.weight.data()[i] = static_cast<float>(rng.uniform(-0.05, 0.05));
    }
    p.hidden.resize(tokens, kDim);
    for (Eigen::Index i = 0; i < p.hidden.size(); ++i) p.hidden.data()[i] = static_cast<float>(rng.uniform(-1, 1));
    p.targets.resize(static_cast<std::size_t>(tokens));
    for (auto& t : p.targets) t = static_cast<int>(rng.next_u32() % kVocab);
  }
  return p;
}

// The two paths, as policies: each returns the loss and keeps grad_hidden alive until it returns.
struct Naive {
  static std::string name() { return "naive_full_logits"; }
  static double run(const Problem& p, bool head_grad) {
    const Matrix logits = p.hidden * p.weight.transpose();  // [T, V]
    const loss::CrossEntropyResult r =
        loss::cross_entropy(logits, p.targets, CrossEntropyOptions{.label_smoothing = kLabelSmoothing});
    const Matrix grad_hidden = r.grad * p.weight;  // [T, D]
    benchmark::DoNotOptimize(grad_hidden.data());
    if (head_grad) {
      const Matrix grad_weight = r.grad.transpose() * p.hidden;  // [V, D]
      benchmark::DoNotOptimize(grad_weight.data());
    }
    return r.loss;
  }
};

template <Eigen::Index Chunk>
struct Streamed {
  static std::string name() { return "streamed_chunk" + std::to_string(Chunk); }
  static double run(const Problem& p, bool head_grad) {
    const auto r = loss::lm_head_cross_entropy(
        p.hidden, p.weight, p.targets, CrossEntropyOptions{.label_smoothing = kLabelSmoothing},
        loss::LmHeadOptions{.chunk_size = Chunk, .compute_head_grad = head_grad});
    benchmark::DoNotOptimize(r.grad_hidden.data());
    return r.loss;
  }
};

template <class Path, bool HeadGrad>
void BM_LmHeadCrossEntropy(benchmark::State& state) {
  const Eigen::Index tokens = state.range(0);
  const Problem& p = problem(tokens);
  heap::Window window;
  long long peak = 0;
  double loss = 0;
  for (auto _ : state) {
    window.reset();
    loss = Path::run(p, HeadGrad);
    peak = std::max(peak, window.peak_extra());
  }
  const double gemms = HeadGrad ? 3.0 : 2.0;  // the useful work: logits, grad_hidden (, grad_W)
  state.counters["peak_MiB"] = static_cast<double>(peak) / (1024.0 * 1024.0);
  state.counters["GFLOP/s"] = benchmark::Counter(gemms * 2.0 * double(tokens) * double(kVocab) * double(kDim) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["loss"] = loss;
  state.SetItemsProcessed(state.iterations() * tokens);
  state.SetLabel(Path::name() + (HeadGrad ? "+head_grad" : ""));
}

std::vector<std::int64_t> token_counts() {
  if (const char* env = std::getenv("VIDLORA_BENCH_LOSS_TOKENS")) return {std::atoll(env)};
  return {512};
}

void apply_args(benchmark::internal::Benchmark* b) {
  for (const auto t : token_counts()) b->Arg(t);
  b->ArgName("T")->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
}

}  // namespace

// Lm-head grad only (the LoRA case: head frozen).
BENCHMARK_TEMPLATE(BM_LmHeadCrossEntropy, Naive, false)->Apply(apply_args);
BENCHMARK_TEMPLATE(BM_LmHeadCrossEntropy, Streamed<4096>, false)->Apply(apply_args);
BENCHMARK_TEMPLATE(BM_LmHeadCrossEntropy, Streamed<8192>, false)->Apply(apply_args);
BENCHMARK_TEMPLATE(BM_LmHeadCrossEntropy, Streamed<16384>, false)->Apply(apply_args);
// With the head's gradient as well (two passes over the vocabulary).
BENCHMARK_TEMPLATE(BM_LmHeadCrossEntropy, Naive, true)->Apply(apply_args);
BENCHMARK_TEMPLATE(BM_LmHeadCrossEntropy, Streamed<8192>, true)->Apply(apply_args);
