// LoRA forward + backward in bf16 (in = out = 4096, tokens 8192, r = 16) against the frozen layer's own bf16
// GEMMs (forward x·Wᵀ and input gradient dy·W) in the same binary. Goal: within 1.15x. Also the QLoRA layer
// (NF4 base, double-quantized absmax, dequantized to bf16 before each GEMM, as bitsandbytes' Linear4bit does).
// Operands are random: GEMMs on zeros run faster than on real data. Then the float QLoRA layer the decoder step runs
// (fp32 activations, NF4 base) with its frozen GEMMs on fp32 operands at TF32 (the baseline) against bf16 and fp16
// operands (LoraLinearParams::base_operands: the input rounded and the base decoded to 16 bits per call).
#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>

#include <cuda_bf16.h>

#include <vidlora/lora/cuda/lora_linear.cuh>

#include "cuda_bench_support.cuh"

using vidlora::cuda::DeviceBuffer;
namespace lc = vidlora::lora::cuda;
using bf16 = __nv_bfloat16;

namespace {
constexpr std::int64_t kTokens = 8192, kIn = 4096, kOut = 4096, kRank = 16;

// A layer of element type T (bf16, or float: the decoder step's), its frozen GEMMs on `base` operands (F32: T's).
template <class T>
struct LayerOf {
  DeviceBuffer<T> x{kTokens * kIn}, w{kOut * kIn}, a{kRank * kIn}, b{kOut * kRank}, y{kTokens * kOut},
      dy{kTokens * kOut}, dx{kTokens * kIn}, storage;
  DeviceBuffer<float> ga{kRank * kIn}, gb{kOut * kRank};
  // NF4 base: packed codes, one 8-bit absmax code per 64 elements, one float per 256 blocks.
  DeviceBuffer<std::uint8_t> packed{kOut * kIn / 2}, qabsmax{kOut * kIn / 64};
  DeviceBuffer<float> nested{kOut * kIn / 64 / 256};
  lc::LoraLinearParams p;
  lc::LoraWorkspace<T> ws;
  LayerOf(float dropout, bool nf4, vidlora::cuda::DType base = vidlora::cuda::DType::F32,
          vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32) {
    cuda_bench::fill_uniform(x, 1);
    cuda_bench::fill_uniform(w, 2, -0.02f, 0.02f);
    cuda_bench::fill_uniform(a, 3, -0.015f, 0.015f);
    cuda_bench::fill_uniform(b, 4, -0.01f, 0.01f);
    cuda_bench::fill_uniform(dy, 5, -1e-3f, 1e-3f);
    packed.fill_bytes(0x5A);
    qabsmax.fill_bytes(0x80);
    cuda_bench::fill_uniform(nested, 6, 0.01f, 0.02f);
    ga.fill_bytes(0);
    gb.fill_bytes(0);
    p.tokens = kTokens;
    p.in = kIn;
    p.out = kOut;
    p.rank = kRank;
    p.scaling = 2.0f;
    p.dropout = dropout;
    p.a = a.data();
    p.b = b.data();
    p.grad_a = ga.data();
    p.grad_b = gb.data();
    if (nf4) {
      p.base = lc::BaseKind::NF4;
      p.qw = {packed.data(), nullptr, qabsmax.data(), nested.data(), 0.0f, kOut * kIn, 6};
    } else {
      p.w = w.data();
    }
    p.base_operands = base;
    p.compute = compute;
    const auto sizes = lc::lora_workspace_sizes<T>(p);
    storage = DeviceBuffer<T>(static_cast<std::size_t>(sizes.total()));
    ws = lc::LoraWorkspace<T>::carve(storage.data(), sizes);
  }
};
using Layer = LayerOf<bf16>;

constexpr double kFrozenFlops = 2.0 * 2.0 * kTokens * kIn * kOut;  // forward + input gradient

void BM_frozen_gemms_bf16(benchmark::State& state) {
  Layer l(0.0f, false);
  vidlora::cuda::GemmRunner gemm(std::size_t{32} << 20, state.range(0) ? vidlora::cuda::GemmTuning::Autotune
                                                                       : vidlora::cuda::GemmTuning::Heuristic);
  using namespace vidlora::cuda;
  cuda_bench::time_iterations(state, [&] {
    gemm.run(linear_forward(kTokens, kIn, kOut, DType::BF16, false, DType::BF16), l.x.data(), l.w.data(), l.y.data());
    gemm.run(linear_input_grad(kTokens, kIn, kOut, DType::BF16, DType::BF16), l.dy.data(), l.w.data(), l.dx.data());
  });
  state.counters["GFLOP/s(frozen)"] =
      benchmark::Counter(kFrozenFlops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Args: dropout percent, fused (1: the rank-r expansions by low_rank_expand's kernel; 0: cuBLASLt + mask pass).
void run_lora(benchmark::State& state, bool nf4) {
  Layer l(static_cast<float>(state.range(0)) / 100.0f, nf4);
  l.p.fused_expand = state.range(1) != 0;
  vidlora::cuda::GemmRunner gemm;
  cuda_bench::time_iterations(state, [&] {
    lc::lora_forward<bf16>(gemm, l.p, l.ws, l.x.data(), l.y.data());
    lc::lora_backward<bf16>(gemm, l.p, l.ws, l.x.data(), l.dy.data(), l.dx.data());
  });
  state.counters["GFLOP/s(frozen)"] =
      benchmark::Counter(kFrozenFlops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_lora_forward_backward_bf16(benchmark::State& state) { run_lora(state, false); }
void BM_qlora_nf4_forward_backward_bf16(benchmark::State& state) { run_lora(state, true); }

// Each GEMM of the LoRA layer on its own (piece 0-7, named in the label): where the time over the frozen
// GEMMs goes.
void BM_lora_gemm_piece_bf16(benchmark::State& state) {
  Layer l(0.0f, false);
  vidlora::cuda::GemmRunner gemm;
  using namespace vidlora::cuda;
  const auto t = DType::BF16;
  const char* names[] = {"h=x.At", "y=s.h.Bt",   "y=x.Wt+y", "g=s.dy.B",
                         "dx=g.A", "dx=dy.W+dx", "gA+=gt.x", "gB+=s.dyt.h"};
  const int piece = static_cast<int>(state.range(0));
  state.SetLabel(names[piece]);
  cuda_bench::time_iterations(state, [&] {
    switch (piece) {
      case 0: gemm.run(linear_forward(kTokens, kIn, kRank, t, false, t), l.x.data(), l.a.data(), l.ws.h); break;
      case 1: gemm.run(linear_forward(kTokens, kRank, kOut, t, false, t), l.ws.h, l.b.data(), l.y.data(), 2.0f); break;
      case 2:
        gemm.run(linear_forward(kTokens, kIn, kOut, t, false, t), l.x.data(), l.w.data(), l.y.data(), 1.0f, 1.0f);
        break;
      case 3: gemm.run(linear_input_grad(kTokens, kRank, kOut, t, t), l.dy.data(), l.b.data(), l.ws.g, 2.0f); break;
      case 4: gemm.run(linear_input_grad(kTokens, kIn, kRank, t, t), l.ws.g, l.a.data(), l.dx.data()); break;
      case 5:
        gemm.run(linear_input_grad(kTokens, kIn, kOut, t, t), l.dy.data(), l.w.data(), l.dx.data(), 1.0f, 1.0f);
        break;
      case 6:
        gemm.run(linear_weight_grad(kTokens, kIn, kRank, t, DType::F32), l.ws.g, l.x.data(), l.ga.data(), 1.0f, 1.0f);
        break;
      default:
        gemm.run(linear_weight_grad(kTokens, kRank, kOut, t, DType::F32), l.dy.data(), l.ws.h, l.gb.data(), 2.0f, 1.0f);
        break;
    }
  });
}

// The fused rank-r expansion alone (args: 0 = y = s·h·Bᵀ, 1 = dx = mask ⊙ (g·A) with dropout bits): compare with
// pieces 1 and 4 above (the same products by cuBLASLt, without the mask).
void BM_low_rank_expand_bf16(benchmark::State& state) {
  Layer l(0.05f, false);
  const bool backward = state.range(0) != 0;
  lc::LowRankExpandParams e = backward ? lc::expansion(l.ws.g, l.a.data(), l.dx.data(), kTokens, kIn, kRank, 1.0f,
                                                       lc::RLayout::RankByCols, l.ws.mask, 0.05f)
                                       : lc::expansion(l.ws.h, l.b.data(), l.y.data(), kTokens, kOut, kRank, 2.0f,
                                                       lc::RLayout::ColsByRank, nullptr, 0.05f);
  VIDLORA_CUDA_CHECK(cudaMemset(l.ws.mask, 0x5A, static_cast<std::size_t>(kTokens * kIn / 4)));
  state.SetLabel(backward ? "dx=mask.(g.A)" : "y=s.h.Bt");
  cuda_bench::time_iterations(state, [&] {
    if (!lc::low_rank_expand<bf16>(e)) state.SkipWithError("the kernel declined the shape");
  });
  state.SetBytesProcessed(state.iterations() * kTokens * kOut * 2);  // the output written
}

// The forward's dropout pass alone (x -> dropout(x) and the keep bits, 33.5 M bf16 elements): its cost in the
// dropout rows above (the backward only applies the stored bits).
void BM_lora_dropout_pass_bf16(benchmark::State& state) {
  Layer l(0.05f, false);
  vidlora::cuda::GemmRunner gemm;
  lc::detail::CudaLoraExec exec{gemm, nullptr};
  cuda_bench::time_iterations(state, [&] { exec.dropout(l.x.data(), l.ws.xd, kTokens * kIn, l.p, l.ws.mask); });
  state.SetBytesProcessed(state.iterations() * (kTokens * kIn * 2 * 2 + kTokens * kIn / 4));  // x, dropout(x), bits
}
// The decoder step's layer: float activations, NF4 base, dropout 0.05, LoRA GEMMs on TF32. Arg: the frozen GEMMs'
// operands, 0 fp32 (TF32 tensor cores: the baseline), 1 bf16, 2 fp16.
void BM_qlora_float_layer(benchmark::State& state) {
  using vidlora::cuda::DType;
  const DType base = state.range(0) == 0 ? DType::F32 : state.range(0) == 1 ? DType::BF16 : DType::F16;
  LayerOf<float> l(0.05f, true, base, vidlora::cuda::Compute::TF32);
  vidlora::cuda::GemmRunner gemm;
  state.SetLabel(std::string("frozen GEMMs on ") +
                 (base == DType::F32 ? "fp32 operands (TF32)" : vidlora::cuda::dtype_name(base)));
  cuda_bench::time_iterations(state, [&] {
    lc::lora_forward<float>(gemm, l.p, l.ws, l.x.data(), l.y.data());
    lc::lora_backward<float>(gemm, l.p, l.ws, l.x.data(), l.dy.data(), l.dx.data());
  });
  state.counters["GFLOP/s(frozen)"] =
      benchmark::Counter(kFrozenFlops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
}  // namespace

BENCHMARK(BM_qlora_float_layer)->ArgName("base")->DenseRange(0, 2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_frozen_gemms_bf16)->ArgName("autotune")->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_lora_forward_backward_bf16)
    ->ArgNames({"dropout_pct", "fused"})
    ->ArgsProduct({{0, 5}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_qlora_nf4_forward_backward_bf16)
    ->ArgNames({"dropout_pct", "fused"})
    ->ArgsProduct({{0, 5}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_lora_gemm_piece_bf16)->ArgName("piece")->DenseRange(0, 7)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_low_rank_expand_bf16)->ArgName("backward")->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_lora_dropout_pass_bf16)->UseManualTime()->Unit(benchmark::kMicrosecond);

VIDLORA_CUDA_BENCHMARK_MAIN()
