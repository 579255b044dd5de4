// Tokenizer encode throughput on the Korean + English caption corpus (tests/fixtures/model/tokenizer_corpus.txt),
// one caption at a time: ByteLevelBpeTokenizer (Qwen2 tokenizer.json, BPE cache warm and cold) vs
// SentencePieceTokenizer (LLaMA tokenizer.model) vs raw libsentencepiece as the baseline.
// (Named bench_model_* so benchmarks/CMakeLists.txt links vidlora::model, i.e. libsentencepiece.)
#include <benchmark/benchmark.h>

#include <vidlora/model/tokenizer_byte_level_bpe.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>

#include <sentencepiece_processor.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::filesystem::path fixture(const char* name) {
  return std::filesystem::path(__FILE__).parent_path() / ".." / "tests" / "fixtures" / "model" / name;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::ifstream in(fixture("tokenizer_corpus.txt"));
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(line);
    if (out.empty()) throw std::runtime_error("empty corpus " + fixture("tokenizer_corpus.txt").string());
    return out;
  }();
  return lines;
}

std::int64_t corpus_bytes() {
  std::int64_t n = 0;
  for (const auto& line : corpus()) n += static_cast<std::int64_t>(line.size());
  return n;
}

template <class Encode>
void run(benchmark::State& state, Encode&& encode) {
  std::size_t tokens = 0;
  for (auto _ : state) {
    for (const auto& line : corpus()) tokens += encode(line);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

void BM_LibSentencePiece_Encode(benchmark::State& state) {  // baseline: the C++ library alone
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.Load(fixture("tokenizer.model").string()).ok()) throw std::runtime_error("cannot load tokenizer.model");
  std::vector<int> ids;
  run(state, [&](const std::string& line) {
    (void)sp.Encode(line, &ids);
    return ids.size();
  });
}

void BM_SentencePieceTokenizer_Encode(benchmark::State& state) {
  const auto tokenizer = vidlora::model::SentencePieceTokenizer::from_file(fixture("tokenizer.model").string());
  run(state, [&](const std::string& line) { return tokenizer.encode(line).size(); });
}

void BM_ByteLevelBpe_Encode_WarmCache(benchmark::State& state) {
  const auto tokenizer = vidlora::model::ByteLevelBpeTokenizer::from_file(fixture("tokenizer.json").string());
  run(state, [&](const std::string& line) { return tokenizer.encode(line).size(); });
}

void BM_ByteLevelBpe_Encode_ColdCache(benchmark::State& state) {
  const auto tokenizer = vidlora::model::ByteLevelBpeTokenizer::from_file(fixture("tokenizer.json").string());
  run(state, [&](const std::string& line) {
    tokenizer.clear_cache();  // every word goes through the merge loop
    return tokenizer.encode(line).size();
  });
}

}  // namespace

BENCHMARK(BM_LibSentencePiece_Encode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SentencePieceTokenizer_Encode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ByteLevelBpe_Encode_WarmCache)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ByteLevelBpe_Encode_ColdCache)->Unit(benchmark::kMillisecond);
