// Multi-tensor AdamW and global grad-norm + clip against a device-to-device copy of the same bytes
// (goal: >= 70% of copy bandwidth). AdamW moves 7 floats per parameter (p, g, m, v read; p, m, v written),
// the norm pass reads g and the clip pass reads and writes it.
#include <benchmark/benchmark.h>

#include <vidlora/optim/cuda/multi_tensor.cuh>

#include "cuda_bench_support.cuh"

using vidlora::cuda::DeviceBuffer;
namespace oc = vidlora::optim::cuda;

namespace {
constexpr std::int64_t kParams = std::int64_t{40} << 20;  // 40 Mi parameters (a 7B model's r=16 all-linear LoRA)

struct State {
  std::vector<std::int64_t> sizes;
  DeviceBuffer<float> p{static_cast<std::size_t>(kParams)}, g{static_cast<std::size_t>(kParams)},
      m{static_cast<std::size_t>(kParams)}, v{static_cast<std::size_t>(kParams)};
  DeviceBuffer<oc::TensorSlot> slots;
  DeviceBuffer<oc::Chunk> chunks;
  DeviceBuffer<double> partial, result{2};
  oc::MultiTensorLaunch launch;
  State() {
    for (auto* b : {&p, &g, &m, &v}) b->fill_bytes(0);
    // 448 tensors of mixed sizes summing to kParams (LoRA A/B pairs of 7 modules x 32 layers).
    std::vector<oc::TensorSlot> host;
    // Each tensor starts 256-byte aligned, as a separate cudaMalloc would place it (the float4 paths need 16).
    const std::int64_t n = 448, each = kParams / n / 64 * 64;
    const auto step = vidlora::optim::AdamWStepParams::make(1e-4, 0.01, 0.9, 0.999, 1e-8, 10);
    for (std::int64_t t = 0; t < n; ++t) {
      const std::int64_t len = t + 1 == n ? kParams - each * (n - 1) : each;
      const std::int64_t off = t * each;
      host.push_back({p.data() + off, g.data() + off, m.data() + off, v.data() + off, len, step});
      sizes.push_back(len);
    }
    slots = DeviceBuffer<oc::TensorSlot>(host);
    const auto c = oc::make_chunks(sizes);
    chunks = DeviceBuffer<oc::Chunk>(c);
    partial = DeviceBuffer<double>(c.size());
    launch = {slots.data(), chunks.data(), static_cast<std::int64_t>(c.size()), oc::kDefaultChunk};
  }
};

void BM_copy_baseline(benchmark::State& state) {
  DeviceBuffer<float> src(static_cast<std::size_t>(kParams)), dst(static_cast<std::size_t>(kParams));
  cuda_bench::time_iterations(state, [&] {
    VIDLORA_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.bytes(), cudaMemcpyDeviceToDevice, nullptr));
  });
  state.SetBytesProcessed(state.iterations() * kParams * 4 * 2);  // read + write
}

void BM_adamw_multi_tensor(benchmark::State& state) {
  State s;
  cuda_bench::time_iterations(state, [&] { oc::adamw_step(s.launch); });
  state.SetBytesProcessed(state.iterations() * kParams * 4 * 7);
}

void BM_grad_norm_clip(benchmark::State& state) {
  State s;
  cuda_bench::time_iterations(state, [&] { oc::grad_norm_clip(s.launch, 1e-30, s.partial.data(), s.result.data()); });
  state.SetBytesProcessed(state.iterations() * kParams * 4 *
                          3);  // norm read + clip read/write (gradients are 0: coef applied)
}
}  // namespace

BENCHMARK(BM_copy_baseline)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_adamw_multi_tensor)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_grad_norm_clip)->UseManualTime()->Unit(benchmark::kMicrosecond);

VIDLORA_CUDA_BENCHMARK_MAIN()
