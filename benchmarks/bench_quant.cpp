// NF4 / FP4 dequantization against memcpy of the same float output, and the 4-bit frozen base
// against the dense one (alone and inside LoraLinear<16, 32, Base>). Rows come from type lists:
// a new format or base adds its rows by adding a type.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/quant.hpp>

using namespace vidlora;

namespace {

std::vector<float> random_values(std::size_t n, std::uint64_t seed) {
  CounterRng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
  return v;
}

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double scale) {
  CounterRng rng(seed);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return m;
}

constexpr std::size_t kElements = std::size_t{1} << 24;  // a 4096 x 4096 weight

// Baseline: copying the dequantized size of float data (reads 4 B, writes 4 B per element).
void BM_memcpy_float(benchmark::State& state) {
  const std::vector<float> src = random_values(kElements, 1);
  std::vector<float> dst(kElements);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), kElements * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kElements * 2 * sizeof(float)));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kElements));
}
BENCHMARK(BM_memcpy_float)->Unit(benchmark::kMillisecond)->UseRealTime();

// Bytes counted: packed codes and scales read, float output written.
template <class Q, bool DoubleQuant>
void BM_dequantize(benchmark::State& state) {
  const auto q = Q::quantize(random_values(kElements, 2), DoubleQuant);
  std::vector<float> out(kElements);
  for (auto _ : state) {
    quant::dequantize_range<typename Q::format>(q, 0, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(
      static_cast<std::int64_t>(state.iterations() * (q.storage_bytes() + kElements * sizeof(float))));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kElements));
}
BENCHMARK_TEMPLATE(BM_dequantize, Quantizer<NF4, 64>, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_dequantize, Quantizer<NF4, 64>, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_dequantize, Quantizer<NF4, 256>, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_dequantize, Quantizer<FP4, 64>, true)->Unit(benchmark::kMillisecond)->UseRealTime();

template <class Q, bool DoubleQuant>
void BM_quantize(benchmark::State& state) {
  const std::vector<float> x = random_values(kElements, 3);
  for (auto _ : state) {
    auto q = Q::quantize(x, DoubleQuant);
    benchmark::DoNotOptimize(q.packed.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kElements * sizeof(float)));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kElements));
}
BENCHMARK_TEMPLATE(BM_quantize, Quantizer<NF4, 64>, true)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quantize, Quantizer<FP4, 64>, true)->Unit(benchmark::kMillisecond);

// LoraLinear<16, 32, Base> forward at in = out = 4096; range(0) = tokens. FLOPs: the frozen
// GEMM plus the two rank-16 products.
template <class Base>
void BM_lora_forward(benchmark::State& state) {
  const Eigen::Index tokens = state.range(0), dim = 4096, rank = 16;
  LoraLinear<16, 32, Base> layer(random_matrix(dim, dim, 4, 0.02));
  layer.lora_B() = random_matrix(dim, rank, 5, 0.02);
  const Matrix x = random_matrix(tokens, dim, 6, 1.0);
  for (auto _ : state) {
    Matrix y = layer.forward(x, false);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * tokens * dim * dim + 2.0 * 2.0 * tokens * dim * rank;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK_TEMPLATE(BM_lora_forward, DenseWeight)->Arg(256)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_lora_forward, NF4Weight)->Arg(256)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_lora_forward, FP4Weight)->Arg(256)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
