// Training steps of the CPU Trainer: the step's clips as one micro-batch of batch_size clips with float32
// gradient sums (TrainerConfig::batch_invariant = false, the baseline) against each clip its own micro-batch with
// float64 sums (batch_invariant = true: the step's gradient independent of the split over ranks and micro-batches).
//
//   cmake --build build/ci --target bench_train
//   OMP_NUM_THREADS=1 build/ci/benchmarks/bench_train --benchmark_repetitions=5
//       --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true   (one command)
//
// Two problems, 16 clips per iteration in steps of batch 4 × accumulation 1 (the Cpu preset's), stage 2 only
// (projector + LoRA on the seven modules), no validation clips:
//   demo: the demo's decoder (hidden 128, intermediate 344, 2 layers, 4 heads / 2 KV heads), 4 frames × 36
//         visual tokens of a 192-wide encoder, captions of 8-15 words over 600 ids (~160 tokens a clip);
//   tiny: tests/mpi's problem (hidden 32, 2 layers, 4 visual tokens, 12-wide features, ~12 tokens a clip).
// tokens/s counts every sequence position the decoder runs (visual, prompt and caption tokens), over CPU time; each
// iteration also builds the Trainer and writes its checkpoint and outputs (the same in both).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/model/random_weights.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/train/trainer.hpp>

namespace {

using namespace vidlora;

struct Problem {
  model::DecoderConfig decoder;
  int vision = 0, visual_tokens = 0, min_words = 0, max_words = 0;
};

Problem demo_problem() { return {model::llama_config(128, 344, 2, 4, 2, 600), 192, 144, 8, 15}; }
Problem tiny_problem() { return {model::llama_config(32, 64, 2, 4, 2, 15), 12, 4, 2, 4}; }

// Captions are space-separated token ids (5 and up: 0-4 are pad, placeholder, EOS and the prompt's).
train::TextCodec id_codec() {
  train::TextCodec c;
  c.encode = [](const std::string& text) {
    std::vector<int> ids;
    std::istringstream in(text);
    for (int id; in >> id;) ids.push_back(id);
    return ids;
  };
  c.decode = [](const std::vector<int>& ids) { return fmt::format("{}", fmt::join(ids, " ")); };
  c.prompt_ids = {3, 1, 4};
  c.placeholder_id = 1;
  c.eos_id = 2;
  c.pad_id = 0;
  return c;
}

std::vector<train::Clip> clips(const Problem& p, int n, long& tokens) {
  std::vector<train::Clip> out;
  tokens = 0;
  for (int i = 0; i < n; ++i) {
    const int words = p.min_words + i % (p.max_words - p.min_words + 1);
    std::vector<int> ids;
    for (int w = 0; w < words; ++w) ids.push_back(5 + (7 * i + 3 * w) % (p.decoder.vocab_size - 5));
    out.push_back({.id = fmt::format("{:03}", i),
                   .video = fmt::format("{:03}.mp4", i),
                   .caption = fmt::format("{}", fmt::join(ids, " ")),
                   .category = "",
                   .source = {}});
    tokens += 3 - 1 + p.visual_tokens + words + 1;  // prompt with the placeholder spliced, caption, EOS
  }
  return out;
}

void train_steps(benchmark::State& state, const Problem& p, bool batch_invariant) {
  TrainerConfig c = TrainerConfig::from_preset<presets::Cpu>();
  c.stages[0].epochs = 0;
  c.stages[1].epochs = 1;
  c.batch_size = 4;
  c.gradient_accumulation_steps = 1;
  c.lora_dropout = 0.0;
  c.batch_invariant = batch_invariant;
  c.output_dir = std::filesystem::temp_directory_path() / "vidlora_bench_train";
  c.progress = nullptr;
  long tokens = 0;
  const auto train = clips(p, 16, tokens);
  const auto weights = model::random_decoder_weights(p.decoder, 3);
  const train::FeatureFn features = [&p](const train::Clip& clip) {
    return model::random_normal(p.visual_tokens, p.vision, 1.0, 99, std::stoull(clip.id));
  };
  for (auto _ : state) {
    Trainer<presets::Cpu, model::Mlp2xGelu, lora::DenseWeight> t(
        c, p.decoder, weights, model::Mlp2xGelu(p.vision, p.decoder.hidden_size, 11), id_codec(), features);
    benchmark::DoNotOptimize(t.train(train, {}).losses);
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  std::filesystem::remove_all(c.output_dir);
}

void BM_TrainDemo_BatchedFloat32(benchmark::State& s) { train_steps(s, demo_problem(), false); }
void BM_TrainDemo_PerClipFloat64(benchmark::State& s) { train_steps(s, demo_problem(), true); }
void BM_TrainTiny_BatchedFloat32(benchmark::State& s) { train_steps(s, tiny_problem(), false); }
void BM_TrainTiny_PerClipFloat64(benchmark::State& s) { train_steps(s, tiny_problem(), true); }

}  // namespace

BENCHMARK(BM_TrainDemo_BatchedFloat32)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainDemo_PerClipFloat64)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainTiny_BatchedFloat32)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainTiny_PerClipFloat64)->Unit(benchmark::kMillisecond);
