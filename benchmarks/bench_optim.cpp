// AdamW step and clip_grad_norm over ~50M float parameters against memory-bound baselines that move
// the same bytes (memcpy, and a stream kernel with AdamW's 4-read/3-write pattern).
//   bench_optim --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// Bytes are counted as reads + writes of the arrays each kernel must touch.
#include <benchmark/benchmark.h>

#include <vidlora/optim.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using namespace vidlora;

constexpr Eigen::Index kRows = 4096, kCols = 1536, kTensors = 8;  // 8 × 6.29M = 50.3M parameters
constexpr double kParams = double(kRows) * kCols * kTensors;

struct Model {
  std::vector<Matrix> values, grads;
  std::vector<optim::Parameter> params;
  Model() {
    values.reserve(kTensors);
    grads.reserve(kTensors);
    for (int t = 0; t < kTensors; ++t) {
      values.push_back(Matrix::Constant(kRows, kCols, 0.02f));
      grads.push_back(Matrix::Constant(kRows, kCols, 1e-3f * float(t + 1)));
      params.push_back({"layers." + std::to_string(t) + ".weight", &values.back(), &grads.back()});
    }
  }
};

void set_bytes(benchmark::State& state, double bytes_per_iteration) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iteration * double(state.iterations())));
  state.counters["params"] = kParams;
}

// p, g, m, v read (16 B) and p, m, v written (12 B) per parameter; the refusal check reads g once more.
void BM_AdamWStep(benchmark::State& state) {
  Model model;
  AdamW opt(model.params);
  opt.step(1e-4);  // warm-up: the zeroed moments are fresh pages until first written
  for (auto _ : state) {
    opt.step(1e-4);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 28.0 * kParams);
}
BENCHMARK(BM_AdamWStep)->Unit(benchmark::kMillisecond)->UseRealTime();

// The norm reads g (4 B); scaling reads and writes g (8 B): 12 B per parameter when it clips.
void BM_ClipGradNorm(benchmark::State& state) {
  Model model;
  double max_norm = 0.999 * clip_grad_norm(model.params, 1e30);
  for (auto _ : state) {
    benchmark::DoNotOptimize(clip_grad_norm(model.params, max_norm));
    max_norm *= 0.999;  // stay above max_norm so every iteration scales
  }
  set_bytes(state, 12.0 * kParams);
}
BENCHMARK(BM_ClipGradNorm)->Unit(benchmark::kMillisecond)->UseRealTime();

// What the optimizer does each training step: clip, then AdamW (40 B per parameter).
void BM_ClipThenAdamW(benchmark::State& state) {
  Model model;
  AdamW opt(model.params);
  opt.step(1e-4);  // warm-up, as above
  double max_norm = 0.999 * clip_grad_norm(model.params, 1e30);
  for (auto _ : state) {
    benchmark::DoNotOptimize(clip_grad_norm(model.params, max_norm));
    opt.step(1e-4);
    max_norm *= 0.999;
  }
  set_bytes(state, 40.0 * kParams);
}
BENCHMARK(BM_ClipThenAdamW)->Unit(benchmark::kMillisecond)->UseRealTime();

// Baseline: memcpy of 14 B per parameter (14 read + 14 written = AdamW's 28 B), split over threads.
void BM_MemcpyBaseline(benchmark::State& state) {
  const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(kParams) * 14 / 4;  // floats
  std::vector<float> src(static_cast<std::size_t>(n), 1.0f), dst(static_cast<std::size_t>(n), 0.0f);
  constexpr std::ptrdiff_t kChunk = std::ptrdiff_t{1} << 20;
  const std::ptrdiff_t chunks = (n + kChunk - 1) / kChunk;
  std::memcpy(dst.data(), src.data(), static_cast<std::size_t>(n) * sizeof(float));  // warm-up
  for (auto _ : state) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (std::ptrdiff_t c = 0; c < chunks; ++c) {
      const std::ptrdiff_t begin = c * kChunk, count = std::min(kChunk, n - begin);
      std::memcpy(dst.data() + begin, src.data() + begin, static_cast<std::size_t>(count) * sizeof(float));
    }
    benchmark::ClobberMemory();
  }
  set_bytes(state, 28.0 * kParams);
}
BENCHMARK(BM_MemcpyBaseline)->Unit(benchmark::kMillisecond)->UseRealTime();

// Baseline: AdamW's access pattern (read p, g, m, v; write p, m, v) with one add each, no Adam math.
void BM_StreamBaseline(benchmark::State& state) {
  Model model;
  std::vector<Matrix> m(kTensors, Matrix::Zero(kRows, kCols)), v(kTensors, Matrix::Zero(kRows, kCols));
  for (int t = 0; t < kTensors; ++t) m[t].setConstant(0.0f), v[t].setConstant(0.0f);  // touch every page
  for (auto _ : state) {
    for (int t = 0; t < kTensors; ++t) {
      float* p = model.values[t].data();
      const float* g = model.grads[t].data();
      float* mt = m[t].data();
      float* vt = v[t].data();
      const std::ptrdiff_t n = model.values[t].size();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
      for (std::ptrdiff_t i = 0; i < n; ++i) {
        mt[i] = mt[i] + g[i];
        vt[i] = vt[i] + g[i];
        p[i] = p[i] + mt[i] * vt[i];
      }
    }
    benchmark::ClobberMemory();
  }
  set_bytes(state, 28.0 * kParams);
}
BENCHMARK(BM_StreamBaseline)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
