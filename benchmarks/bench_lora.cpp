// LoRA forward+backward against the frozen GEMM alone, at in = out = 4096, tokens = 2048.
//   OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive bench_lora --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// "Time" is wall-clock; "CPU" is the whole process's CPU time (all threads). Aggregates add "min" (the
// least-disturbed repetition). lora_vs_frozen/* times the frozen pair and the LoRA layer alternately in
// every iteration and reports ratio_min = fastest LoRA step / fastest frozen step, robust to shared cores.
// Rows come from type lists of LoraLinear configurations (ranks × bases): a new configuration is
// one more entry in a list, no new benchmark code.
#include <benchmark/benchmark.h>

#include <vidlora/lora.hpp>
#if __has_include(<vidlora/quant.hpp>)
#include <vidlora/quant.hpp>
#define VIDLORA_BENCH_HAS_NF4 1
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using namespace vidlora;

constexpr Eigen::Index kIn = 4096, kOut = 4096, kTokens = 2048;
constexpr int kIterations = 2;  // each iteration is ~2·69 GFLOP: keep runs short on 2 shared cores

template <class... Ts>
struct TypeList {};

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double scale) {
  CounterRng rng(seed, 1);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return m;
}

struct Inputs {
  Matrix w = random_matrix(kOut, kIn, 1, 0.02);
  Matrix x = random_matrix(kTokens, kIn, 2, 1.0);
  Matrix dy = random_matrix(kTokens, kOut, 3, 1.0);
};
const Inputs& inputs() {
  static const Inputs in;
  return in;
}

template <class Base>
std::string base_name() {
  if constexpr (std::is_same_v<Base, DenseWeight>) return "DenseWeight";
#ifdef VIDLORA_BENCH_HAS_NF4
  else if constexpr (std::is_same_v<Base, NF4Weight>)
    return "NF4Weight";
#endif
  else
    return "Base";
}

template <class Layer>
std::string layer_name() {
  return "LoraLinear<" + std::to_string(Layer::rank) + "," + std::to_string(Layer::alpha) + "," +
         base_name<typename Layer::base_type>() + ">";
}

double gemm_flops(Eigen::Index m, Eigen::Index k, Eigen::Index n) { return 2.0 * m * k * n; }

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Baseline: the frozen layer alone, forward x·Wᵀ and backward dy·W (no LoRA, no bias).
template <class Base>
void frozen_forward_backward(benchmark::State& state) {
  const Inputs& in = inputs();
  const Base base(in.w);
  for (auto _ : state) {
    Matrix y = base.apply(in.x);
    Matrix dx = base.apply_transposed(in.dy);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
  }
  set_flops(state, 2 * gemm_flops(kTokens, kIn, kOut));
}

template <class Base>
void frozen_forward(benchmark::State& state) {
  const Inputs& in = inputs();
  const Base base(in.w);
  for (auto _ : state) {
    Matrix y = base.apply(in.x);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, gemm_flops(kTokens, kIn, kOut));
}

// The frozen GEMMs plus the LoRA branch: 2 low-rank products forward, 4 backward (grad_A, grad_B, dx).
template <class Layer>
void lora_forward_backward(benchmark::State& state) {
  const Inputs& in = inputs();
  Layer layer(in.w, LoraOptions{.seed = 1});
  layer.lora_B() = random_matrix(kOut, Layer::rank, 4, 0.01);
  for (auto _ : state) {
    Matrix y = layer.forward(in.x, true);
    Matrix dx = layer.backward(in.dy);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
  }
  const double r = Layer::rank;
  set_flops(state, 2 * gemm_flops(kTokens, kIn, kOut) + 6 * gemm_flops(kTokens, kIn, r));
}

template <class Layer>
void lora_forward(benchmark::State& state) {
  const Inputs& in = inputs();
  Layer layer(in.w, LoraOptions{.seed = 1});
  layer.lora_B() = random_matrix(kOut, Layer::rank, 4, 0.01);
  for (auto _ : state) {
    Matrix y = layer.forward(in.x, false);
    benchmark::DoNotOptimize(y.data());
  }
  set_flops(state, gemm_flops(kTokens, kIn, kOut) + 2 * gemm_flops(kTokens, kIn, Layer::rank));
}

template <int... Ranks>
struct RankList {};

// The fastest repetition: on a shared machine the least-disturbed run is the best estimate of the cost.
double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

// Frozen pair (y = x·Wᵀ, dx = dy·W) and the LoRA layer's forward + backward timed alternately in each iteration,
// so both see the same load; reports lora / frozen of the fastest iteration of each ("ratio_min").
template <class Layer>
void time_against_frozen(benchmark::State& state, const typename Layer::base_type& base, Layer& layer, const Matrix& x,
                         const Matrix& dy) {
  using clock = std::chrono::steady_clock;
  double best_frozen = 1e30, best_lora = 1e30;
  for (auto _ : state) {
    const auto t0 = clock::now();
    Matrix y0 = base.apply(x);
    Matrix dx0 = base.apply_transposed(dy);
    const auto t1 = clock::now();
    Matrix y = layer.forward(x, true);
    Matrix dx = layer.backward(dy);
    const auto t2 = clock::now();
    benchmark::DoNotOptimize(y0.data());
    benchmark::DoNotOptimize(dx0.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
    const double frozen = std::chrono::duration<double>(t1 - t0).count();
    const double lora = std::chrono::duration<double>(t2 - t1).count();
    best_frozen = std::min(best_frozen, frozen);
    best_lora = std::min(best_lora, lora);
    state.SetIterationTime(lora);
  }
  state.counters["ratio_min"] = best_lora / best_frozen;
  state.counters["frozen_min_ms"] = best_frozen * 1e3;
  state.counters["lora_min_ms"] = best_lora * 1e3;
}

// The LoRA layer against its frozen pair (time_against_frozen) at the default shape, no dropout.
template <class Layer>
void lora_vs_frozen(benchmark::State& state) {
  const Inputs& in = inputs();
  const typename Layer::base_type base(in.w);
  Layer layer(in.w, LoraOptions{.seed = 1});
  layer.lora_B() = random_matrix(kOut, Layer::rank, 4, 0.01);
  time_against_frozen(state, base, layer, in.x, in.dy);
}

// Dropout's cost at the recipe's p = 0.05 against p = 0: LoraLinear<16, 32> at in = out = 2048, 1024 tokens, on
// one thread, interleaved with the frozen pair as lora_vs_frozen (ratio_min = fastest LoRA step / fastest frozen).
constexpr Eigen::Index kDropoutIn = 2048, kDropoutOut = 2048, kDropoutTokens = 1024;

// Runs the enclosing scope on one OpenMP thread (Eigen's GEMMs and LoraLinear's shares both follow it).
struct OneThread {
#if defined(_OPENMP)
  int saved = omp_get_max_threads();
  OneThread() { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved); }
#endif
};

template <class Layer>
void dropout_vs_frozen(benchmark::State& state, double dropout) {
  const OneThread one_thread;
  const Matrix w = random_matrix(kDropoutOut, kDropoutIn, 1, 0.02);
  const Matrix x = random_matrix(kDropoutTokens, kDropoutIn, 2, 1.0);
  const Matrix dy = random_matrix(kDropoutTokens, kDropoutOut, 3, 1.0);
  const typename Layer::base_type base(w);
  Layer layer(w, LoraOptions{.dropout = dropout, .seed = 1});
  layer.lora_B() = random_matrix(kDropoutOut, Layer::rank, 4, 0.01);
  time_against_frozen(state, base, layer, x, dy);
}

// The mask alone: what drawing it costs per element of x [1024, 2048] at p = 0.05, one thread.
//   dropout_mask/per_element: dropout_scale per element (one Philox block per element; the old CPU path)
//   dropout_mask/keep_bits:   dropout_keep_bits (one Philox block per 4 elements, the GPU's bits), packed
void dropout_mask_per_element(benchmark::State& state) {
  const Matrix x = random_matrix(kDropoutTokens, kDropoutIn, 2, 1.0);
  Matrix xd(x.rows(), x.cols());
  const std::uint64_t n = static_cast<std::uint64_t>(x.size()), stream = lora::dropout_stream(0, 0);
  for (auto _ : state) {
    for (std::uint64_t i = 0; i < n; ++i) xd.data()[i] = x.data()[i] * lora::dropout_scale(1, stream, i, 0.05f);
    benchmark::DoNotOptimize(xd.data());
  }
  state.counters["ns_per_element"] = benchmark::Counter(
      static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void dropout_mask_keep_bits(benchmark::State& state) {
  const std::uint64_t n = static_cast<std::uint64_t>(kDropoutTokens * kDropoutIn), stream = lora::dropout_stream(0, 0);
  std::vector<std::uint8_t> bits((n + 3) / 4);
  for (auto _ : state) {
    lora::dropout_keep_bits4_blocks(1, stream, 0, bits.size(), 0.05f, bits.data());
    benchmark::DoNotOptimize(bits.data());
  }
  state.counters["ns_per_element"] = benchmark::Counter(
      static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

template <class Layer>
void register_layer(const std::string& prefix, void (*fn)(benchmark::State&)) {
  benchmark::RegisterBenchmark((prefix + layer_name<Layer>()).c_str(), fn)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(kIterations)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->ComputeStatistics("min", min_of);
}

// One row per rank × base: LoraLinear<r, 2r, Base> (alpha = 2r, the recipe's rule).
template <class Base, int... Ranks>
void register_ranks(RankList<Ranks...>, bool backward) {
  (register_layer<LoraLinear<Ranks, 2 * Ranks, Base>>(backward ? "lora_forward_backward/" : "lora_forward/",
                                                      backward
                                                          ? lora_forward_backward<LoraLinear<Ranks, 2 * Ranks, Base>>
                                                          : lora_forward<LoraLinear<Ranks, 2 * Ranks, Base>>),
   ...);
}

template <class Ranks, class... Bases>
void register_grid(TypeList<Bases...>, bool backward) {
  (register_ranks<Bases>(Ranks{}, backward), ...);
}

template <class Base, int... Ranks>
void register_interleaved(RankList<Ranks...>) {
  (benchmark::RegisterBenchmark(("lora_vs_frozen/" + layer_name<LoraLinear<Ranks, 2 * Ranks, Base>>()).c_str(),
                                lora_vs_frozen<LoraLinear<Ranks, 2 * Ranks, Base>>)
       ->Unit(benchmark::kMillisecond)
       ->Iterations(4)
       ->UseManualTime(),
   ...);
}

#ifdef VIDLORA_BENCH_HAS_NF4
using Bases = TypeList<DenseWeight, NF4Weight>;
#else
using Bases = TypeList<DenseWeight>;
#endif
using ForwardBackwardRanks = RankList<8, 16, 32, 64>;
using ForwardRanks = RankList<16>;  // QLoRA's rank: NF4 vs dense forward

const bool registered = [] {
  benchmark::RegisterBenchmark("frozen_forward_backward/DenseWeight", frozen_forward_backward<DenseWeight>)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(kIterations)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->ComputeStatistics("min", min_of);
  register_grid<ForwardBackwardRanks>(Bases{}, true);
  benchmark::RegisterBenchmark("frozen_forward/DenseWeight", frozen_forward<DenseWeight>)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(kIterations)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->ComputeStatistics("min", min_of);
  register_grid<ForwardRanks>(Bases{}, false);
  register_interleaved<DenseWeight>(ForwardBackwardRanks{});
  for (const double p : {0.0, 0.05})
    benchmark::RegisterBenchmark(("dropout_vs_frozen/" + layer_name<LoraLinear<16, 32>>() +
                                  "/one_thread/dropout:" + (p == 0.0 ? std::string("0") : std::string("0.05")))
                                     .c_str(),
                                 dropout_vs_frozen<LoraLinear<16, 32>>, p)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(6)
        ->UseManualTime();
  benchmark::RegisterBenchmark("dropout_mask/per_element", dropout_mask_per_element)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(4)
      ->UseRealTime();
  benchmark::RegisterBenchmark("dropout_mask/keep_bits", dropout_mask_keep_bits)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(4)
      ->UseRealTime();
  return true;
}();

}  // namespace
