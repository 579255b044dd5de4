#pragma once
// Shared pieces of the CUDA benchmarks: event timing for Google Benchmark's manual time, and a main that
// exits 77 without a device.

#include <cstdint>
#include <cstdio>

#include <benchmark/benchmark.h>

#include <vidlora/core/cuda/memory.cuh>

namespace cuda_bench {

namespace detail {
template <class T>
__global__ void fill_uniform_kernel(T* out, std::int64_t n, std::uint32_t seed, float lo, float hi) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ seed * 0x85EBCA77u;  // a cheap integer hash
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    h *= 0x297A2D39u;
    h ^= h >> 15;
    out[i] = static_cast<T>(lo + (hi - lo) * static_cast<float>(h >> 8) * (1.0f / 16777216.0f));
  }
}
}  // namespace detail

// Random operands (uniform in [lo, hi)): GEMMs on zeros run faster than on real data, so benchmarks use these.
template <class T>
void fill_uniform(vidlora::cuda::DeviceBuffer<T>& b, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  const auto n = static_cast<std::int64_t>(b.size());
  if (n == 0) return;
  detail::fill_uniform_kernel<T><<<1024, 256>>>(b.data(), n, seed, lo, hi);
  VIDLORA_CUDA_CHECK_LAUNCH("fill_uniform_kernel");
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
}

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

#define VIDLORA_CUDA_BENCHMARK_MAIN()                                 \
  int main(int argc, char** argv) {                                   \
    if (vidlora::cuda::device_count() == 0) {                         \
      std::printf("no CUDA device: skipping\n");                      \
      return 77;                                                      \
    }                                                                 \
    benchmark::Initialize(&argc, argv);                               \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1; \
    benchmark::RunSpecifiedBenchmarks();                              \
    benchmark::Shutdown();                                            \
    return 0;                                                         \
  }
