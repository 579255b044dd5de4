// Issue 14's "every preset trains the seed's model" gate, as a benchmark: LLaVA-NeXT-Video-7B's decoder
// (presets::models::LlavaNextVideo7B: 32 layers, hidden 4096, MLP 11008, 32 heads, vocab 32064), one stage-2 decoder
// step per GPU preset with that preset's values — batch × (num_frames × 144 video + 128 text tokens), LoRA of rank
// lora_r on its target set with its dropout, the frozen base in NF4 with double-quantized absmax (load_in_4bit),
// gradient checkpointing as it says — on model::cuda::DecoderModel under the preset card's memory cap
// (presets::memory_cap_bytes<P>(): vram_gb − 2 GiB), the allocator DecoderStep<Cuda> gives a training run.
//
// The frozen NF4 codes and absmax codes are random bytes (a step's cost does not depend on the values; quantizing
// 6.5 B random normals on the host would take minutes), the LoRA factors small uniform values, the input embeddings
// uniform, and the labels those of a caption: the last 128 positions of each sequence supervised. One step per
// iteration, timed with CUDA events after a warm-up step; counters: tokens/s (every position), the allocator's peak
// (reserved bytes) and its cap in GiB, and LoRA-MFU against the dense 16-bit peak of the GPU that ran
// (train::dense_16bit_peak_tflops; train/lora_mfu.hpp), not the preset's card's.
// A preset whose step does not fit its cap ends with the allocator's error (the tensor, the sizes) as the
// benchmark's error. The step runs in presets::device_precision_of<P>(), as train_captioner runs it: bf16 (A100, H100:
// the frozen GEMMs on bf16 operands, the saved activations in bf16, the LoRA and LM-head GEMMs on TF32) or fp16 (T4,
// L4: the frozen GEMMs on fp16 operands, the rest TF32 where the GPU has it). The baseline rows (/fp32_frozen) run the
// same step with the frozen GEMMs on fp32 operands (TF32 on sm_80+), what the step ran before its 16-bit GEMMs.
//
//   bench_cuda_preset_step [--benchmark_filter=T4]        (tools/gpu-check.sh runs it)

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/lora/target_modules.hpp>
#include <vidlora/model/cuda/decoder_model.cuh>
#include <vidlora/model/decoder_host_weights.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/memory_cap.hpp>
#include <vidlora/train/lora_mfu.hpp>

#include "cuda_bench_support.cuh"

namespace {

using namespace vidlora;

// A step stopped by the memory cap is "NO FIT (cap): <the allocator's message naming the tensor>", by the card's own
// memory below the cap "NO FIT (card): …", anything else "ERROR: …" (tools/gpu-check.sh prints the part before the
// colon as the row's result; every one fails the gate). A GPU smaller than the preset's cap is "SKIP (card): …".
struct CardTooSmall : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void skip_with(benchmark::State& state, const std::exception& e) {
  std::string kind = "ERROR: ";
  if (const auto* m = dynamic_cast<const DeviceMemoryError*>(&e))
    kind = m->reason == DeviceMemoryError::Reason::cap ? "NO FIT (cap): " : "NO FIT (card): ";
  else if (dynamic_cast<const CardTooSmall*>(&e))
    kind = "SKIP (card): ";
  state.SkipWithError((kind + e.what()).c_str());
}

// A cheap 64-bit generator for the host bytes (splitmix64).
struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  void fill(std::vector<std::uint8_t>& bytes) {
    std::size_t i = 0;
    for (; i + 8 <= bytes.size(); i += 8) {
      const std::uint64_t v = next();
      for (int k = 0; k < 8; ++k) bytes[i + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(v >> (8 * k));
    }
    for (; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(next());
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
};

// The 7B decoder's host weights for preset P: NF4 bases with random codes, LoRA on P's target set.
template <class P>
model::DecoderHostWeights random_nf4_weights(const presets::ModelShape& m) {
  model::DecoderHostWeights w;
  w.hidden = m.hidden;
  w.intermediate = m.intermediate;
  w.q_heads = m.heads;
  w.kv_heads = m.kv_heads;
  w.head_dim = m.head_dim;
  w.vocab = m.vocab;
  w.rope = model::RopeFrequencyState(model::default_rope_frequencies(static_cast<int>(m.head_dim), 10000.0));  // LLaMA
  w.final_norm.assign(static_cast<std::size_t>(m.hidden), 1.0f);
  SplitMix rng{7};
  w.head.resize(static_cast<std::size_t>(m.vocab * m.hidden));
  for (float& v : w.head) v = rng.uniform(-0.02f, 0.02f);
  w.layers.resize(static_cast<std::size_t>(m.layers));
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    model::HostLayerWeights& layer = w.layers[l];
    layer.norm1.assign(static_cast<std::size_t>(m.hidden), 1.0f);
    layer.norm2.assign(static_cast<std::size_t>(m.hidden), 1.0f);
    for (std::size_t s = 0; s < 7; ++s) {  // the host slots are the seven linears in lora::Extended's order
      const std::string_view module = lora::Extended::modules[s];
      model::HostLinearWeights& lin = layer.linears[s];
      lin.in = m.linear_in(module);
      lin.out = m.linear_out(module);
      lin.quantized = true;
      const std::int64_t numel = lin.in * lin.out, blocks = (numel + 63) / 64;
      lin.q.nf4 = true;
      lin.q.blocksize = 64;
      lin.q.packed.resize(static_cast<std::size_t>((numel + 1) / 2));
      rng.fill(lin.q.packed);
      lin.q.qabsmax.resize(static_cast<std::size_t>(blocks));
      rng.fill(lin.q.qabsmax);
      lin.q.nested_absmax.assign(static_cast<std::size_t>((blocks + 255) / 256), 0.05f);
      lin.q.absmax_offset = 0.03f;
      if (std::ranges::find(P::target_set::modules, module) == P::target_set::modules.end()) continue;  // frozen
      lin.rank = P::lora_r;
      lin.lora_a.resize(static_cast<std::size_t>(lin.rank * lin.in));
      for (float& v : lin.lora_a) v = rng.uniform(-0.01f, 0.01f);
      lin.lora_b.assign(static_cast<std::size_t>(lin.out * lin.rank), 0.001f);
      lin.scaling = static_cast<float>(P::lora_alpha) / static_cast<float>(P::lora_r);
      lin.dropout = static_cast<float>(P::lora_dropout);
      lin.seed = 42;
      lin.layer_index = static_cast<std::uint32_t>(l * 7 + s);
    }
  }
  return w;
}

// WideFrozen: the baseline, the frozen GEMMs on fp32 operands (TF32 where the GPU has it).
template <class P, bool WideFrozen = false>
void BM_preset_stage2_step(benchmark::State& state) {
  constexpr presets::ModelShape m = presets::models::LlavaNextVideo7B;
  const std::int64_t seq_len = m.tokens_per_sample(P::num_frames), batch = P::batch_size;
  const std::size_t cap = presets::memory_cap_bytes<P>();
  try {
    std::size_t free_bytes = 0, total_bytes = 0;  // a card smaller than the preset's cap cannot show whether it fits
    VIDLORA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (total_bytes < cap)
      throw CardTooSmall("this GPU has " + std::to_string(total_bytes >> 20) + " MiB, the preset's cap is " +
                         std::to_string(cap >> 20) + " MiB");
    const model::DecoderHostWeights weights = random_nf4_weights<P>(m);
    vidlora::cuda::CudaCachingAllocator allocator(CachingAllocatorOptions{.cap_bytes = cap});
    vidlora::cuda::GemmRunner gemm;
    model::cuda::DecoderModel dev(gemm, weights, nullptr, &allocator);
    dev.set_gradient_checkpointing(P::gradient_checkpointing);
    constexpr std::string_view precision = presets::device_precision_of<P>();  // what train_captioner runs
    dev.set_gemm_compute(precision == "fp32" ? vidlora::cuda::Compute::F32 : vidlora::cuda::Compute::TF32);
    dev.set_pack_saved(precision == "bf16");
    const vidlora::cuda::DType frozen = WideFrozen            ? vidlora::cuda::DType::F32
                                        : precision == "bf16" ? vidlora::cuda::DType::BF16
                                        : precision == "fp16" ? vidlora::cuda::DType::F16
                                                              : vidlora::cuda::DType::F32;
    dev.set_base_operands(frozen);

    model::cuda::DeviceTensor embeds(&allocator, batch * seq_len, m.hidden, "inputs_embeds");
    cuda_bench::fill_uniform(embeds.buffer, 11, -0.05f, 0.05f);
    model::cuda::DecoderBatch b;
    b.batch = batch;
    b.seq_len = seq_len;
    std::vector<int> labels(static_cast<std::size_t>(batch * seq_len), -100);
    SplitMix rng{3};
    for (std::int64_t s = 0; s < batch; ++s)
      for (std::int64_t t = seq_len - m.text_tokens; t < seq_len; ++t)
        labels[static_cast<std::size_t>(s * seq_len + t)] =
            static_cast<int>(rng.next() % static_cast<std::uint64_t>(m.vocab));
    loss::cuda::LmHeadCeOptions ce;
    ce.label_smoothing = P::label_smoothing;

    std::size_t peak = 0, peak_in_use = 0, releases = 0;
    const auto step = [&] {
      dev.zero_grad();
      const auto r = dev.loss_and_backward(embeds, b, labels, ce);  // synchronizes once (the loss)
      peak = std::max(peak, r.memory.peak_reserved_bytes);
      peak_in_use = std::max(peak_in_use, r.memory.peak_allocated_bytes);
      releases = std::max(releases, static_cast<std::size_t>(r.memory.cache_releases));
    };
    step();  // warm-up: cuBLASLt plans, the allocator's first blocks
    vidlora::cuda::Event start, stop;
    double seconds = 0.0;
    for (auto _ : state) {
      try {  // a timed step that throws (the cap, through fragmentation) ends the loop with its message
        start.record(nullptr);
        step();
        stop.record(nullptr);
        stop.synchronize();
      } catch (const std::exception& e) {
        skip_with(state, e);
        break;
      }
      const double s = static_cast<double>(stop.elapsed_ms_since(start)) / 1e3;
      state.SetIterationTime(s);
      seconds += s;
    }
    if (state.error_occurred()) return;
    const double per_step = seconds / static_cast<double>(state.iterations());
    const double matmul_params = static_cast<double>(m.layers * m.layer_linear_params() + m.vocab * m.hidden);
    const double tokens = static_cast<double>(batch * seq_len);
    const double flops = tokens * train::lora_training_flops_per_token(matmul_params, m.layers, m.heads * m.head_dim,
                                                                       static_cast<double>(seq_len));
    state.counters["tokens_per_s"] = tokens / per_step;
    state.counters["peak_GiB"] = static_cast<double>(peak) / presets::kGiB;  // reserved: what the cap bounds
    // In use at the peak (what presets::estimate_memory and the replay in docs/presets.md count), and the times the
    // allocator gave its cached blocks back to fit under the cap (each a device-wide synchronization).
    state.counters["peak_in_use_GiB"] = static_cast<double>(peak_in_use) / presets::kGiB;
    state.counters["cache_releases"] = static_cast<double>(releases);
    state.counters["cap_GiB"] = static_cast<double>(cap) / presets::kGiB;
    // MFU of the GPU that ran (the preset's card only when it is that card): an H100 running the T4 preset's step is
    // measured against the H100's peak. 0 for a GPU the table does not know.
    cudaDeviceProp prop{};
    VIDLORA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const double peak_tflops = train::dense_16bit_peak_tflops(prop.name, prop.major, prop.minor);
    state.counters["MFU"] = train::lora_mfu(flops, per_step, peak_tflops * 1e12);
    state.counters["peak_TFLOPs"] = peak_tflops;
    state.SetLabel(std::string(P::name) + ": " + std::to_string(batch) + " x " + std::to_string(seq_len) +
                   " tokens; r " + std::to_string(P::lora_r) +
                   (P::gradient_checkpointing ? "; checkpointing" : "; no checkpointing") + "; frozen GEMMs " +
                   vidlora::cuda::dtype_name(frozen) + (precision == "bf16" ? ", bf16 saved activations" : "") +
                   (precision == "fp32" ? ", the rest fp32" : ", the rest TF32 / fp32") + "; MFU of " + prop.name);
  } catch (const std::exception& e) {  // before the timed loop (weights, the model, the warm-up step)
    skip_with(state, e);
    for (auto _ : state) {
    }
  }
}

BENCHMARK(BM_preset_stage2_step<presets::T4>)
    ->Name("BM_preset_stage2_step/T4")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_preset_stage2_step<presets::T4, true>)
    ->Name("BM_preset_stage2_step/T4/fp32_frozen")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_preset_stage2_step<presets::L4>)
    ->Name("BM_preset_stage2_step/L4")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_preset_stage2_step<presets::A100>)
    ->Name("BM_preset_stage2_step/A100")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_preset_stage2_step<presets::H100>)
    ->Name("BM_preset_stage2_step/H100")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_preset_stage2_step<presets::H100, true>)
    ->Name("BM_preset_stage2_step/H100/fp32_frozen")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
// Not presets: the A100 and H100 rows with gradient checkpointing (a fallback if a step's saved activations do not fit,
// and the configuration transformers + PEFT can run on those cards: presets_table --json's "fallbacks").
struct A100Checkpointing : presets::A100 {
  static constexpr bool gradient_checkpointing = true;
};
struct H100Checkpointing : presets::H100 {
  static constexpr bool gradient_checkpointing = true;
};
BENCHMARK(BM_preset_stage2_step<A100Checkpointing>)
    ->Name("BM_preset_stage2_step/A100_checkpointing")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_preset_stage2_step<H100Checkpointing>)
    ->Name("BM_preset_stage2_step/H100_checkpointing")
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

}  // namespace

VIDLORA_CUDA_BENCHMARK_MAIN()
