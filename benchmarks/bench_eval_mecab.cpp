// Korean morpheme METEOR: caption pairs per second on one core (goal >= 10,000), on the 240 pairs of
// tests/fixtures/eval/korean_caption_pairs.jsonl (50-200 characters each).
//  - BM_MeteorMecabOktUnits: MecabKoTokenizer (Okt units) on both texts + METEOR, the trainer's path.
//  - BM_MeteorMecabMorphemes: the same with raw morphemes.
//  - BM_MecabTokenizeOnly: the analyser alone (both texts of every pair).
//  - BM_MeteorWhitespace (baseline): the whitespace-token METEOR vidlora had before, same pairs.
// The Python reference (KoNLPy Okt morphs + nltk meteor_score) is timed by benchmarks/korean_meteor_okt.py.
// Needs mecab-ko-dic (tools/install-deps.sh; VIDLORA_MECAB_KO_DIC overrides where).
#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <fstream>
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

void BM_MeteorMecabOktUnits(benchmark::State& state) {
  vidlora::eval::MecabKoTokenizer tokenizer(vidlora::eval::default_mecab_ko_dictionary(),
                                            vidlora::eval::MecabKoUnits::OktUnits);
  run_meteor(state, tokenizer);
}
void BM_MeteorMecabMorphemes(benchmark::State& state) {
  vidlora::eval::MecabKoTokenizer tokenizer(vidlora::eval::default_mecab_ko_dictionary(),
                                            vidlora::eval::MecabKoUnits::Morphemes);
  run_meteor(state, tokenizer);
}
void BM_MeteorWhitespace(benchmark::State& state) {
  vidlora::eval::WhitespaceTokenizer tokenizer;
  run_meteor(state, tokenizer);
}
void BM_MecabTokenizeOnly(benchmark::State& state) {
  vidlora::eval::MecabKoTokenizer tokenizer(vidlora::eval::default_mecab_ko_dictionary(),
                                            vidlora::eval::MecabKoUnits::OktUnits);
  const auto& p = pairs();
  for (auto _ : state) {
    for (std::size_t i = 0; i < p.candidates.size(); ++i) {
      benchmark::DoNotOptimize(tokenizer.tokenize(p.candidates[i]));
      benchmark::DoNotOptimize(tokenizer.tokenize(p.references[i][0]));
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<long>(p.candidates.size()));
  state.counters["pairs_per_s"] =
      benchmark::Counter(static_cast<double>(p.candidates.size()), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_MeteorWhitespace)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeteorMecabOktUnits)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MeteorMecabMorphemes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MecabTokenizeOnly)->Unit(benchmark::kMillisecond);

namespace {
// The trainer's case: the references are the same at every evaluation, so a CachingTokenizer analyses them
// once; every candidate is new (a per-iteration number in front makes each text unseen by the memo).
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
