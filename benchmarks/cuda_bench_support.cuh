#pragma once
// Shared pieces of the CUDA benchmarks: event timing for Google Benchmark's manual time, and a main that
// exits 77 without a device.

#include <cstdio>

#include <benchmark/benchmark.h>

#include <vidlora/core/cuda/memory.cuh>

namespace cuda_bench {

// Times fn() (asynchronous on the default stream) with CUDA events, once per benchmark iteration.
template <class Fn>
void time_iterations(benchmark::State& state, Fn&& fn) {
  vidlora::cuda::Event start, stop;
  fn();  // warm-up: plan caches, first-launch costs
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto _ : state) {
    start.record(nullptr);
    fn();
    stop.record(nullptr);
    stop.synchronize();
    state.SetIterationTime(static_cast<double>(stop.elapsed_ms_since(start)) / 1e3);
  }
}

}  // namespace cuda_bench

#define VIDLORA_CUDA_BENCHMARK_MAIN()                                          \
  int main(int argc, char** argv) {                                           \
    if (vidlora::cuda::device_count() == 0) {                                 \
      std::printf("no CUDA device: skipping\n");                              \
      return 77;                                                              \
    }                                                                         \
    benchmark::Initialize(&argc, argv);                                       \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;         \
    benchmark::RunSpecifiedBenchmarks();                                      \
    benchmark::Shutdown();                                                    \
    return 0;                                                                 \
  }
