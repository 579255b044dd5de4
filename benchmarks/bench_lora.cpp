// LoRA forward+backward against the frozen GEMM alone, at in = out = 4096, tokens = 2048.
//   bench_lora --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// Rows come from type lists of LoraLinear configurations (ranks × bases): a new configuration is
// one more entry in a list, no new benchmark code.
#include <benchmark/benchmark.h>

#include <vidlora/lora.hpp>
#if __has_include(<vidlora/quant.hpp>)
#include <vidlora/quant.hpp>
#define VIDLORA_BENCH_HAS_NF4 1
#endif

#include <string>
#include <type_traits>

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
  else if constexpr (std::is_same_v<Base, NF4Weight>) return "NF4Weight";
#endif
  else return "Base";
}

template <class Layer>
std::string layer_name() {
  return "LoraLinear<" + std::to_string(Layer::rank) + "," + std::to_string(Layer::alpha) + "," +
         base_name<typename Layer::base_type>() + ">";
}

double gemm_flops(Eigen::Index m, Eigen::Index k, Eigen::Index n) { return 2.0 * m * k * n; }

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
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

template <class... Layers>
void register_forward_backward(TypeList<Layers...>) {
  (benchmark::RegisterBenchmark(("lora_forward_backward/" + layer_name<Layers>()).c_str(),
                                lora_forward_backward<Layers>)
       ->Unit(benchmark::kMillisecond)
       ->Iterations(kIterations)
       ->UseRealTime(),
   ...);
}

template <class... Layers>
void register_forward(TypeList<Layers...>) {
  (benchmark::RegisterBenchmark(("lora_forward/" + layer_name<Layers>()).c_str(), lora_forward<Layers>)
       ->Unit(benchmark::kMillisecond)
       ->Iterations(kIterations)
       ->UseRealTime(),
   ...);
}

// Ranks × bases for forward+backward; the QLoRA base for forward (the training-time path of a frozen NF4 W).
using ForwardBackwardLayers =
    TypeList<LoraLinear<8, 16>, LoraLinear<16, 32>, LoraLinear<32, 64>, LoraLinear<64, 128>>;
#ifdef VIDLORA_BENCH_HAS_NF4
using ForwardLayers = TypeList<LoraLinear<16, 32, DenseWeight>, LoraLinear<16, 32, NF4Weight>>;
#else
using ForwardLayers = TypeList<LoraLinear<16, 32, DenseWeight>>;
#endif

const bool registered = [] {
  benchmark::RegisterBenchmark("frozen_forward_backward/DenseWeight", frozen_forward_backward<DenseWeight>)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(kIterations)
      ->UseRealTime();
  register_forward_backward(ForwardBackwardLayers{});
  benchmark::RegisterBenchmark("frozen_forward/DenseWeight", frozen_forward<DenseWeight>)
      ->Unit(benchmark::kMillisecond)
      ->Iterations(kIterations)
      ->UseRealTime();
  register_forward(ForwardLayers{});
  return true;
}();

}  // namespace
