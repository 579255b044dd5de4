// NF4 dequantization bandwidth against a device-to-device copy (goal: >= 70%), both counted as bytes moved
// (read + written: the copy reads and writes the output's bytes; the dequantizer reads the packed codes and the
// double-quantized scales and writes the output), on an 8192 x 8192 weight (128-256 MB of output, well past
// the 50-60 MB L2), and the fused dequantize-GEMV (batch-1 decoding) against reading the packed weight once.
#include <cstdint>

#include <benchmark/benchmark.h>

#include <cuda_bf16.h>

#include <vidlora/quant/cuda/dequantize.cuh>

#include "cuda_bench_support.cuh"

using vidlora::cuda::DeviceBuffer;

namespace {
constexpr std::int64_t kRows = 8192, kCols = 8192, kNumel = kRows * kCols;
constexpr std::int64_t kQuantizedBytes = kNumel / 2 + kNumel / 64 + kNumel / 64 / 256 * 4;  // codes + scales

struct Nf4Weight {
  DeviceBuffer<std::uint8_t> packed{static_cast<std::size_t>(kNumel / 2)},
      qabsmax{static_cast<std::size_t>(kNumel / 64)};
  DeviceBuffer<float> nested{static_cast<std::size_t>(kNumel / 64 / 256)};
  vidlora::quant::cuda::Quantized4bitView view;
  Nf4Weight() {
    packed.fill_bytes(0x5A);
    qabsmax.fill_bytes(0x80);
    nested.fill_bytes(0);
    view = {packed.data(), nullptr, qabsmax.data(), nested.data(), 0.01f, kNumel, 6};
  }
};

template <class Out>
void BM_dequantize_nf4(benchmark::State& state) {
  Nf4Weight w;
  DeviceBuffer<Out> out(static_cast<std::size_t>(kNumel));
  cuda_bench::time_iterations(state,
                              [&] { vidlora::quant::cuda::dequantize_4bit<vidlora::quant::NF4>(w.view, out.data()); });
  state.SetBytesProcessed(state.iterations() * (kNumel * static_cast<std::int64_t>(sizeof(Out)) + kQuantizedBytes));
}

template <class Out>
void BM_copy_baseline(benchmark::State& state) {
  DeviceBuffer<Out> src(static_cast<std::size_t>(kNumel)), dst(static_cast<std::size_t>(kNumel));
  cuda_bench::time_iterations(state, [&] {
    VIDLORA_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.bytes(), cudaMemcpyDeviceToDevice, nullptr));
  });
  state.SetBytesProcessed(state.iterations() * kNumel * static_cast<std::int64_t>(sizeof(Out)) * 2);  // read + write
}

void BM_dequant_gemv_nf4(benchmark::State& state) {
  Nf4Weight w;
  DeviceBuffer<float> x(static_cast<std::size_t>(kCols)), y(static_cast<std::size_t>(kRows));
  x.fill_bytes(0);
  vidlora::quant::cuda::DequantGemvParams p{w.view, kRows, kCols, x.data(), y.data()};
  cuda_bench::time_iterations(state, [&] { vidlora::quant::cuda::dequant_gemv<vidlora::quant::NF4>(p); });
  state.SetBytesProcessed(state.iterations() * kQuantizedBytes);  // packed weight + scales read
}
}  // namespace

BENCHMARK(BM_copy_baseline<float>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_dequantize_nf4<float>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_copy_baseline<__nv_bfloat16>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_dequantize_nf4<__nv_bfloat16>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_dequant_gemv_nf4)->UseManualTime()->Unit(benchmark::kMicrosecond);

VIDLORA_CUDA_BENCHMARK_MAIN()
