// Korean morpheme METEOR: caption pairs per second on one core (goal >= 10,000), on the 240 pairs of
// tests/fixtures/eval/korean_caption_pairs.jsonl (50-200 characters each).
//  - BM_MeteorMecabOktUnits: MecabKoTokenizer (Okt units, eojeol memo: the default) on both texts + METEOR,
//    the trainer's path. The memo is cleared (outside the timing) before every iteration, so each
//    evaluation of the 240 pairs analyses their words itself.
//  - BM_MeteorMecabOktUnitsMemoPerPair: the same with an empty memo for every pair (only the words the
//    caption and its reference share, or that repeat in one of them, are found): the worst case.
//  - BM_MeteorMecabOktUnitsWholeSentence (baseline): MeCab on every whole caption, the previous path.
//  - BM_MeteorMecabMorphemes: raw morphemes, memo as in BM_MeteorMecabOktUnits.
//  - BM_MecabTokenizeOnly / BM_MecabTokenizeOnlyWholeSentence: the analyser alone (both texts of every pair).
//  - BM_MeteorWhitespace (baseline): the whitespace-token METEOR vidlora had before, same pairs.
// The Python reference (KoNLPy Okt morphs + nltk meteor_score) is timed by benchmarks/korean_meteor_okt.py.
// Needs mecab-ko-dic (tools/install-deps.sh; VIDLORA_MECAB_KO_DIC overrides where).
#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <vidlora/eval.hpp>
#include <vidlora/eval/mecab_tokenizer.hpp>

namespace {

struct Pairs {
  std::vector<std::string> candidates;
  std::vector<std::vector<std::string>> references;
};

const Pairs& pairs() {
  static const Pairs p = [] {
    Pairs out;
    const std::string path = std::string(VIDLORA_SOURCE_DIR) + "/tests/fixtures/eval/korean_caption_pairs.jsonl";
    std::ifstream in(path);
    vidlora::require(static_cast<bool>(in), "bench_eval_mecab: cannot open {}", path);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line);
      out.candidates.push_back(j.at("caption"));
      out.references.push_back({j.at("reference").get<std::string>()});
    }
    return out;
  }();
  return p;
}

template <class Tokenizer>
void run_meteor(benchmark::State& state, Tokenizer& tokenizer) {
  const auto& p = pairs();
  double score = 0.0;
  for (auto _ : state) {
    score = vidlora::eval::meteor(p.candidates, p.references, tokenizer).meteor;
    benchmark::DoNotOptimize(score);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<long>(p.candidates.size()));
  state.counters["meteor"] = score;
  state.counters["pairs_per_s"] =
      benchmark::Counter(static_cast<double>(p.candidates.size()), benchmark::Counter::kIsIterationInvariantRate);
}

using vidlora::eval::MecabKoAnalysis;
using vidlora::eval::MecabKoTokenizer;
using vidlora::eval::MecabKoUnits;

// Every iteration with an empty eojeol memo (cleared outside the timing).
void run_meteor_cold_memo(benchmark::State& state, MecabKoTokenizer tokenizer) {
  const auto& p = pairs();
  double score = 0.0;
  for (auto _ : state) {
    state.PauseTiming();
    tokenizer.clear_memo();
    state.ResumeTiming();
    score = vidlora::eval::meteor(p.candidates, p.references, tokenizer).meteor;
    benchmark::DoNotOptimize(score);
  }
  const std::size_t hits = tokenizer.memo_hits(), misses = tokenizer.memo_misses();  // every iteration cold
  state.SetItemsProcessed(state.iterations() * static_cast<long>(p.candidates.size()));
  state.counters["meteor"] = score;
  state.counters["pairs_per_s"] =
      benchmark::Counter(static_cast<double>(p.candidates.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["word_hit_share"] =
      static_cast<double>(hits) / static_cast<double>(std::max<std::size_t>(1, hits + misses));
  state.counters["whole_sentence_share"] = static_cast<double>(tokenizer.whole_sentence_fallbacks()) /
                                           static_cast<double>(2 * p.candidates.size() * state.iterations());
}

void BM_MeteorMecabOktUnits(benchmark::State& state) {
  run_meteor_cold_memo(state, MecabKoTokenizer(vidlora::eval::default_mecab_ko_dictionary(), MecabKoUnits::OktUnits));
}
void BM_MeteorMecabMorphemes(benchmark::State& state) {
  run_meteor_cold_memo(state, MecabKoTokenizer(vidlora::eval::default_mecab_ko_dictionary(), MecabKoUnits::Morphemes));
}
void BM_MeteorMecabOktUnitsWholeSentence(benchmark::State& state) {
  MecabKoTokenizer tokenizer(vidlora::eval::default_mecab_ko_dictionary(), MecabKoUnits::OktUnits,
                             MecabKoAnalysis::WholeSentence);
  run_meteor(state, tokenizer);
}
void BM_MeteorMecabOktUnitsMemoPerPair(benchmark::State& state) {
  MecabKoTokenizer tokenizer(vidlora::eval::default_mecab_ko_dictionary(), MecabKoUnits::OktUnits);
  const auto& p = pairs();
  double sum = 0.0;
  for (auto _ : state) {
    sum = 0.0;
    for (std::size_t i = 0; i < p.candidates.size(); ++i) {
      state.PauseTiming();
      tokenizer.clear_memo();
      state.ResumeTiming();
      sum += vidlora::eval::meteor(std::span(&p.candidates[i], 1), std::span(&p.references[i], 1), tokenizer).meteor;
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<long>(p.candidates.size()));
  state.counters["meteor"] = sum / static_cast<double>(p.candidates.size());
  state.counters["pairs_per_s"] =
      benchmark::Counter(static_cast<double>(p.candidates.size()), benchmark::Counter::kIsIterationInvariantRate);
}
void BM_MeteorWhitespace(benchmark::State& state) {
  vidlora::eval::WhitespaceTokenizer tokenizer;
  run_meteor(state, tokenizer);
}
void tokenize_only(benchmark::State& state, MecabKoAnalysis analysis) {
  MecabKoTokenizer tokenizer(vidlora::eval::default_mecab_ko_dictionary(), MecabKoUnits::OktUnits, analysis);
  const auto& p = pairs();
  for (auto _ : state) {
    state.PauseTiming();
    tokenizer.clear_memo();
    state.ResumeTiming();
    for (std::size_t i = 0; i < p.candidates.size(); ++i) {
      benchmark::DoNotOptimize(tokenizer.tokenize(p.candidates[i]));
      benchmark::DoNotOptimize(tokenizer.tokenize(p.references[i][0]));
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<long>(p.candidates.size()));
  state.counters["pairs_per_s"] =
      benchmark::Counter(static_cast<double>(p.candidates.size()), benchmark::Counter::kIsIterationInvariantRate);
}
void BM_MecabTokenizeOnly(benchmark::State& state) { tokenize_only(state, MecabKoAnalysis::EojeolMemo); }
void BM_MecabTokenizeOnlyWholeSentence(benchmark::State& state) {
  tokenize_only(state, MecabKoAnalysis::WholeSentence);
}

}  // namespace

BENCHMARK(BM_MeteorWhitespace)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeteorMecabOktUnitsWholeSentence)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeteorMecabOktUnits)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeteorMecabOktUnitsMemoPerPair)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeteorMecabMorphemes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MecabTokenizeOnlyWholeSentence)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MecabTokenizeOnly)->Unit(benchmark::kMillisecond);

namespace {
// The trainer's case over many evaluations: the references are the same at every evaluation, so a
// CachingTokenizer analyses them once; every candidate text is new (a per-iteration number in front makes
// each text unseen by the CachingTokenizer). The tokenizer lives across evaluations as the trainer's does,
// so its eojeol memo is warm: apart from the number, the candidates' words were seen before (an upper
// bound for a trained model whose captions reuse the vocabulary; BM_MeteorMecabOktUnits is the cold case).
void BM_MeteorMecabOktUnitsCachedReferences(benchmark::State& state) {
  vidlora::eval::CachingTokenizer<vidlora::eval::MecabKoTokenizer> tokenizer(vidlora::eval::MecabKoTokenizer(
      vidlora::eval::default_mecab_ko_dictionary(), vidlora::eval::MecabKoUnits::OktUnits));
  const auto& p = pairs();
  std::vector<std::string> fresh(p.candidates.size());
  long round = 0;
  double score = 0.0;
  for (auto _ : state) {
    state.PauseTiming();
    ++round;
    for (std::size_t i = 0; i < fresh.size(); ++i) fresh[i] = std::to_string(round) + " " + p.candidates[i];
    state.ResumeTiming();
    score = vidlora::eval::meteor(fresh, p.references, tokenizer).meteor;
    benchmark::DoNotOptimize(score);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<long>(p.candidates.size()));
  state.counters["meteor"] = score;
  state.counters["pairs_per_s"] =
      benchmark::Counter(static_cast<double>(p.candidates.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["memo_hit_share"] =
      static_cast<double>(tokenizer.hits()) / static_cast<double>(tokenizer.hits() + tokenizer.misses());
}
}  // namespace

BENCHMARK(BM_MeteorMecabOktUnitsCachedReferences)->Unit(benchmark::kMillisecond);
