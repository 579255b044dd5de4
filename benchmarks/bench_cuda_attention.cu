// Causal attention forward + backward of one sequence on the device, the decoder's shapes (32 query heads, head dim
// 128, MHA as LLaVA-NeXT-Video-7B's decoder): the row kernels (model/cuda/attention.cuh, one block per query row,
// deterministic dk/dv) against the tiled kernels (model/cuda/flash_attention.cuh) with fp32 FMA, TF32, and bf16 /
// fp16 tile products (16-bit operand tiles; for bf16 also 32-row tiles against the default, 64 where the card gives
// the shared memory; with 16-bit operands the kernels keep their tiles in registers on sm_80+ (model/cuda/
// flash_attention_mma.cuh), kernel 6 is bf16 on the shared-memory tiles, and kernel 7 the register tiles reading q, k,
// v and dO as bf16 (AttentionParams::q16 …, rounded once before the timed loop: what SDPA reads, and what the decoder
// hands them), kernel 8 the same with the forward's and dq's key tiles and dk/dv's query tiles in two stages
// (FlashAttentionOptions::pipelined: cp.async copies of the next tile in flight), in the same run; and the bf16 forward alone, those four
// kernels (BM_attention_fwd). Sequence lengths: 2,432 (the H100 preset's 16 frames × 144 + 128 tokens) and
// 4,096 (the issue's attention gate, whose baseline is PyTorch's SDPA flash backend in bf16:
// benchmarks/cuda_pytorch.py's `torch_sdpa_flash_fwd_bwd_bf16_T4096`). Counter: TFLOP/s at 4·T²·H·d·(1 + 2.5)/2
// (causal: half the pairs; backward 2.5× the forward's two products), the usual flash-attention accounting.
//
//   bench_cuda_attention --benchmark_min_time=0.2      (tools/gpu-check.sh runs it)

#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>

#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/io/cuda/round_16bit.cuh>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/flash_attention.cuh>

#include "cuda_bench_support.cuh"

namespace {

using vidlora::cuda::DeviceBuffer;
using namespace vidlora::model::cuda;

enum Kernel : int {
  kRow = 0,
  kTiledFp32 = 1,
  kTiledTf32 = 2,
  kTiledBf16 = 3,
  kTiledF16 = 4,
  kTiledBf16Tile32 = 5,
  kTiledBf16Shared = 6,
  kTiledBf16Inputs16 = 7,
  kTiledBf16Pipelined = 8
};

const char* kernel_label(Kernel k) {
  switch (k) {
    case kRow: return "row kernels";
    case kTiledFp32: return "tiled, fp32 FMA";
    case kTiledTf32: return "tiled, TF32 WMMA";
    case kTiledBf16: return "tiled, bf16: register tiles (sm_80+)";
    case kTiledF16: return "tiled, fp16: register tiles (sm_80+)";
    case kTiledBf16Shared: return "tiled, bf16 WMMA on shared-memory tiles";
    case kTiledBf16Tile32: return "tiled, bf16 WMMA, tile 32";
    case kTiledBf16Inputs16: return "tiled, bf16: register tiles (sm_80+) reading bf16 q, k, v, dO";
    case kTiledBf16Pipelined: return "tiled, bf16: register tiles (sm_80+) reading bf16 q, k, v, dO, two key stages";
  }
  return "?";
}

FlashAttentionOptions options_of(Kernel kernel) {
  const FlashOperands ops = kernel == kTiledBf16 || kernel == kTiledBf16Tile32 || kernel == kTiledBf16Shared ||
                                    kernel == kTiledBf16Inputs16 || kernel == kTiledBf16Pipelined
                                ? FlashOperands::BF16
                            : kernel == kTiledF16 ? FlashOperands::F16
                                                  : FlashOperands::F32;
  FlashAttentionOptions o{kernel == kTiledTf32, kernel == kTiledBf16Tile32 ? 32 : 0, ops};
  o.register_tiles = kernel != kTiledBf16Shared;
  o.pipelined = kernel == kTiledBf16Pipelined;
  return o;
}

// Kernel 7's inputs: bf16 copies of q, k, v (and d_out for a backward), for the register-tile kernels to read instead
// (n = 0: none, the pointers stay null).
struct Bf16Inputs {
  DeviceBuffer<std::uint16_t> q, k, v, d_out;
  Bf16Inputs(AttentionParams& p, std::size_t n, bool backward) : q(n), k(n), v(n), d_out(backward ? n : 0) {
    const auto round = [n](const float* x, DeviceBuffer<std::uint16_t>& b) {
      vidlora::io::cuda::round_to_16bit(x, b.data(), static_cast<std::int64_t>(n), vidlora::cuda::DType::BF16, nullptr);
      return b.data();
    };
    p.q16 = round(p.q, q);
    p.k16 = round(p.k, k);
    p.v16 = round(p.v, v);
    if (backward) p.d_out16 = round(p.d_out, d_out);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  }
};

void BM_attention_fwd_bwd(benchmark::State& state) {
  const std::int64_t t = state.range(0), heads = 32, d = 128;
  const auto kernel = static_cast<Kernel>(state.range(1));
  const auto n = static_cast<std::size_t>(t * heads * d);
  DeviceBuffer<float> q(n), k(n), v(n), out(n), d_out(n), dq(n), dk(n), dv(n);
  DeviceBuffer<float> lse(static_cast<std::size_t>(heads * t)), row_dot(static_cast<std::size_t>(heads * t));
  cuda_bench::fill_uniform(q, 1, -2.0f, 2.0f);
  cuda_bench::fill_uniform(k, 2, -2.0f, 2.0f);
  cuda_bench::fill_uniform(v, 3);
  cuda_bench::fill_uniform(d_out, 4, -1e-3f, 1e-3f);
  AttentionParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.out = out.data();
  p.lse = lse.data();
  p.d_out = d_out.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  p.row_dot = row_dot.data();
  p.forward_out = out.data();  // the tiled backward's row_dot from the output, as the decoder runs it
  p.tq = p.tk = t;
  p.q_heads = p.kv_heads = heads;
  p.head_dim = d;
  const FlashAttentionOptions o = options_of(kernel);
  const bool inputs_16bit = kernel == kTiledBf16Inputs16 || kernel == kTiledBf16Pipelined;
  const Bf16Inputs inputs16(p, inputs_16bit ? n : 0, true);
  cuda_bench::time_iterations(state, [&] {
    if (kernel == kRow) {
      attention_forward(p);
      attention_backward(p);
    } else {
      flash_attention_forward(p, o);
      flash_attention_backward(p, o);
    }
  });
  const double flops = 4.0 * static_cast<double>(t) * static_cast<double>(t) * heads * d * 3.5 / 2.0;
  state.counters["TFLOP_per_s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  std::string label = kernel_label(kernel);
  if (kernel == kTiledBf16Pipelined && flash_mma_takes(p, FlashOperands::BF16))  // where two cost no resident block
    label += ", dk/dv query stages " + std::to_string(flash_mma_dkv_stages(p, FlashOperands::BF16, true));
  state.SetLabel(label);
}

BENCHMARK(BM_attention_fwd_bwd)
    ->ArgNames({"T", "kernel"})
    ->ArgsProduct({{2432, 4096},
                   {kRow, kTiledFp32, kTiledTf32, kTiledBf16, kTiledF16, kTiledBf16Tile32, kTiledBf16Shared,
                    kTiledBf16Inputs16, kTiledBf16Pipelined}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// The forward alone, bf16: the register-tile kernel (model/cuda/flash_attention_mma.cuh, where the GPU takes it)
// against the shared-memory tiles in the same run; PyTorch's SDPA flash forward is
// benchmarks/cuda_pytorch.py's `torch_sdpa_flash_fwd_bf16_T4096`. TFLOP/s at 4·T²·H·d/2.
void BM_attention_fwd(benchmark::State& state) {
  const std::int64_t t = state.range(0), heads = 32, d = 128;
  const auto kernel = static_cast<Kernel>(state.range(1));
  const auto n = static_cast<std::size_t>(t * heads * d);
  DeviceBuffer<float> q(n), k(n), v(n), out(n), lse(static_cast<std::size_t>(heads * t));
  cuda_bench::fill_uniform(q, 1, -2.0f, 2.0f);
  cuda_bench::fill_uniform(k, 2, -2.0f, 2.0f);
  cuda_bench::fill_uniform(v, 3);
  AttentionParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.out = out.data();
  p.lse = lse.data();
  p.tq = p.tk = t;
  p.q_heads = p.kv_heads = heads;
  p.head_dim = d;
  const FlashAttentionOptions o = options_of(kernel);
  const bool inputs_16bit = kernel == kTiledBf16Inputs16 || kernel == kTiledBf16Pipelined;
  const Bf16Inputs inputs16(p, inputs_16bit ? n : 0, false);
  cuda_bench::time_iterations(state, [&] { flash_attention_forward(p, o); });
  const double flops = 4.0 * static_cast<double>(t) * static_cast<double>(t) * heads * d / 2.0;
  state.counters["TFLOP_per_s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(kernel != kTiledBf16Shared && !flash_mma_takes(p, FlashOperands::BF16)
                     ? "tiled, bf16 WMMA (no register-tile forward on this GPU)"
                     : kernel_label(kernel));
}

BENCHMARK(BM_attention_fwd)
    ->ArgNames({"T", "kernel"})
    ->ArgsProduct({{2432, 4096}, {kTiledBf16, kTiledBf16Shared, kTiledBf16Inputs16, kTiledBf16Pipelined}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

VIDLORA_CUDA_BENCHMARK_MAIN()
