// One LLaVA-style training step of a small decoder: hidden 512, intermediate 1408, 8 layers,
// 8 heads, vocab 32000, LoRA r=16 alpha=32 on all seven modules, batch 4 × (8 frames × 16 visual
// tokens + 64 text tokens) = 4 × 192 tokens, Mlp2xGelu projector (1024 → 512) trained too.
// Step = projector forward, decoder forward, streamed LM-head cross-entropy, backward to the
// projector. Rows: the baseline (all activations kept), gradient checkpointing per layer, and an
// NF4 base. Counters: tokens/s, activation bytes held after forward and at peak, frozen linear
// weight bytes.
//   OMP_NUM_THREADS=2 bench_model --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// The PyTorch + PEFT eager baseline of the same step: benchmarks/model_pytorch.py.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include <vidlora/loss.hpp>
#include <vidlora/model.hpp>
#include <vidlora/quant.hpp>

namespace {

using namespace vidlora;

constexpr int kBatch = 4, kFrames = 8, kFrameTokens = 16, kText = 64, kVisionHidden = 1024;
constexpr int kSeq = kFrames * kFrameTokens + kText;

const model::DecoderConfig& config() {
  static const model::DecoderConfig c = model::llama_config(512, 1408, 8, 8, 8, 32000);
  return c;
}
const model::TensorTable& weights() {
  static const model::TensorTable w = model::random_decoder_weights(config(), 1);
  return w;
}

struct StepInputs {
  Matrix features;  // [batch · 128, 1024] vision features
  std::vector<std::vector<int>> prompts, answers;
};
const StepInputs& step_inputs() {
  static const StepInputs in = [] {
    StepInputs s;
    s.features = model::random_normal(kBatch * kFrames * kFrameTokens, kVisionHidden, 1.0, 2, 0);
    CounterRng rng(3);
    for (int b = 0; b < kBatch; ++b) {
      std::vector<int> prompt{1};
      prompt.push_back(31999);  // one placeholder, expanded to the 128 visual tokens
      for (int i = 0; i < 15; ++i) prompt.push_back(static_cast<int>(rng.next_u32() % 31000) + 2);
      std::vector<int> answer;
      for (int i = 0; i < kText - 16; ++i) answer.push_back(static_cast<int>(rng.next_u32() % 31000) + 2);
      s.prompts.push_back(prompt);
      s.answers.push_back(answer);
    }
    return s;
  }();
  return in;
}

template <class Base>
void train_step(benchmark::State& state, bool checkpointing) {
  model::DecoderOptions options;
  options.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  options.gradient_checkpointing = checkpointing;
  auto decoder = std::make_unique<model::Decoder<16, 32, Base>>(config(), weights(), options);
  model::Mlp2xGelu projector(kVisionHidden, config().hidden_size, 4);
  const StepInputs& in = step_inputs();
  CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  for (auto _ : state) {
    decoder->zero_grad();
    projector.zero_grad();
    const Matrix visual = projector.forward(in.features);
    std::vector<model::SplicedSequence> seqs;
    for (int b = 0; b < kBatch; ++b)
      seqs.push_back(model::splice_visual_tokens<float>(
          in.prompts[static_cast<std::size_t>(b)], in.answers[static_cast<std::size_t>(b)], 31999,
          Matrix(visual.middleRows(b * 128, 128)), decoder->embed_tokens()));
    const model::SplicedBatch batch = model::collate(seqs, decoder->embed_tokens(), 0);
    const auto result = decoder->loss_and_backward(batch.embeds, batch.batch, batch.labels, ce);
    projector.backward(model::gather_rows<float>(result.grad_embeds, batch.visual_rows));
    benchmark::DoNotOptimize(result.loss);
  }
  state.SetItemsProcessed(state.iterations() * kBatch * kSeq);
  state.counters["act_after_fwd_MB"] = static_cast<double>(decoder->activation_stats().after_forward) / 1e6;
  state.counters["act_peak_MB"] = static_cast<double>(decoder->activation_stats().peak) / 1e6;
  state.counters["linear_weights_MB"] = static_cast<double>(decoder->linear_weight_bytes()) / 1e6;
}

void BM_TrainStep_Dense(benchmark::State& state) { train_step<DenseWeight>(state, false); }
void BM_TrainStep_Dense_Checkpointing(benchmark::State& state) { train_step<DenseWeight>(state, true); }
void BM_TrainStep_NF4(benchmark::State& state) { train_step<NF4Weight>(state, false); }

}  // namespace

BENCHMARK(BM_TrainStep_Dense)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_TrainStep_Dense_Checkpointing)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_TrainStep_NF4)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
