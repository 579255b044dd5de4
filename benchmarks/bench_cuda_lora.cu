// LoRA forward + backward in bf16 (in = out = 4096, tokens 8192, r = 16) against the frozen layer's own bf16
// GEMMs (forward x·Wᵀ and input gradient dy·W) in the same binary. Goal: within 1.15x.
#include <benchmark/benchmark.h>

#include <cuda_bf16.h>

#include <vidlora/lora/cuda/lora_linear.cuh>

#include "cuda_bench_support.cuh"

using vidlora::cuda::DeviceBuffer;
namespace lc = vidlora::lora::cuda;
using bf16 = __nv_bfloat16;

namespace {
constexpr std::int64_t kTokens = 8192, kIn = 4096, kOut = 4096, kRank = 16;

struct Layer {
  DeviceBuffer<bf16> x{kTokens * kIn}, w{kOut * kIn}, a{kRank * kIn}, b{kOut * kRank}, y{kTokens * kOut},
      dy{kTokens * kOut}, dx{kTokens * kIn}, storage;
  DeviceBuffer<float> ga{kRank * kIn}, gb{kOut * kRank};
  lc::LoraLinearParams p;
  lc::LoraWorkspace<bf16> ws;
  explicit Layer(float dropout) {
    for (auto* buf : {&x, &w, &a, &b, &dy}) buf->fill_bytes(0);
    ga.fill_bytes(0);
    gb.fill_bytes(0);
    p.tokens = kTokens; p.in = kIn; p.out = kOut; p.rank = kRank; p.scaling = 2.0f; p.dropout = dropout;
    p.w = w.data(); p.a = a.data(); p.b = b.data(); p.grad_a = ga.data(); p.grad_b = gb.data();
    const auto sizes = lc::lora_workspace_sizes(p);
    storage = DeviceBuffer<bf16>(static_cast<std::size_t>(sizes.total()));
    ws = lc::LoraWorkspace<bf16>::carve(storage.data(), sizes);
  }
};

constexpr double kFrozenFlops = 2.0 * 2.0 * kTokens * kIn * kOut;  // forward + input gradient

void BM_frozen_gemms_bf16(benchmark::State& state) {
  Layer l(0.0f);
  vidlora::cuda::GemmRunner gemm;
  using namespace vidlora::cuda;
  cuda_bench::time_iterations(state, [&] {
    gemm.run(linear_forward(kTokens, kIn, kOut, DType::BF16, false, DType::BF16), l.x.data(), l.w.data(), l.y.data());
    gemm.run(linear_input_grad(kTokens, kIn, kOut, DType::BF16, DType::BF16), l.dy.data(), l.w.data(), l.dx.data());
  });
  state.counters["GFLOP/s(frozen)"] = benchmark::Counter(kFrozenFlops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_lora_forward_backward_bf16(benchmark::State& state) {
  Layer l(static_cast<float>(state.range(0)) / 100.0f);
  vidlora::cuda::GemmRunner gemm;
  cuda_bench::time_iterations(state, [&] {
    lc::lora_forward<bf16>(gemm, l.p, l.ws, l.x.data(), l.y.data());
    lc::lora_backward<bf16>(gemm, l.p, l.ws, l.x.data(), l.dy.data(), l.dx.data());
  });
  state.counters["GFLOP/s(frozen)"] = benchmark::Counter(kFrozenFlops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
}  // namespace

BENCHMARK(BM_frozen_gemms_bf16)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_lora_forward_backward_bf16)->Arg(0)->Arg(5)->ArgName("dropout_pct")->UseManualTime()->Unit(benchmark::kMillisecond);

VIDLORA_CUDA_BENCHMARK_MAIN()
