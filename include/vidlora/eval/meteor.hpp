#pragma once
// METEOR with exact-match alignment only, as nltk's meteor_score (3.10) with its stemming and WordNet
// stages switched off: tokens are ASCII-lower-cased; walking the candidate from its last token back,
// each token is aligned to the last still unaligned equal reference token. With m aligned tokens,
// P = m/|c|, R = m/|r|, Fmean = P·R / (α·P + (1-α)·R), and the fragmentation penalty
// γ·(chunks/m)^β counts chunks as runs adjacent in both sentences. Score = Fmean·(1 - penalty),
// 0 when nothing aligns; with several references the best one counts; the corpus score is the mean.
// Defaults α = 0.9, β = 3, γ = 0.5. The METEOR 1.5 jar differs where its alignment search finds
// fewer chunks and on identical sentences (no penalty there): see docs/eval.md.

#include <algorithm>
#include <bitset>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <vidlora/eval/corpus.hpp>

namespace vidlora::eval {

struct MeteorOptions {
  double alpha = 0.9;  // weight of precision against recall in Fmean
  double beta = 3.0;   // shape of the fragmentation penalty
  double gamma = 0.5;  // largest fragmentation penalty
};

struct MeteorScore {
  double meteor = 0.0;  // mean over captions
  std::vector<double> per_caption;
};

namespace detail {

// Walks nltk's _match_enums alignment (below) from the last candidate token back and calls
// on_match(candidate index, reference index) for each aligned pair, in that (descending) order. Short
// sentences (the captions) are matched by scanning, with no allocation; long ones through a map of
// positions.
template <class OnMatch>
void meteor_align(const TokenIds& candidate, const TokenIds& reference, OnMatch&& on_match) {
  constexpr std::size_t kScanLimit = 4096;  // candidate x reference token pairs (a bit per reference token)
  if (candidate.size() * reference.size() <= kScanLimit) {
    std::bitset<kScanLimit> aligned;
    for (std::size_t i = candidate.size(); i-- > 0;)
      for (std::size_t j = reference.size(); j-- > 0;)
        if (reference[j] == candidate[i] && !aligned[j]) {
          aligned[j] = true;
          on_match(i, j);
          break;
        }
    return;
  }
  std::unordered_map<std::uint32_t, std::vector<std::size_t>> positions;
  for (std::size_t j = 0; j < reference.size(); ++j) positions[reference[j]].push_back(j);
  for (std::size_t i = candidate.size(); i-- > 0;) {
    const auto it = positions.find(candidate[i]);
    if (it == positions.end() || it->second.empty()) continue;
    on_match(i, it->second.back());
    it->second.pop_back();
  }
}

}  // namespace detail

// The exact-match alignment of nltk's _match_enums: pairs (candidate index, reference index) sorted
// by candidate index.
inline std::vector<std::pair<std::size_t, std::size_t>> meteor_alignment(const TokenIds& candidate,
                                                                         const TokenIds& reference) {
  std::vector<std::pair<std::size_t, std::size_t>> matches;
  detail::meteor_align(candidate, reference, [&](std::size_t i, std::size_t j) { matches.emplace_back(i, j); });
  std::reverse(matches.begin(), matches.end());
  return matches;
}

// Sentence METEOR of one candidate against one reference.
inline double meteor_sentence(const TokenIds& candidate, const TokenIds& reference, const MeteorOptions& options = {}) {
  // Matches and chunks, counted on the walk (a chunk boundary between two successive matches is the same
  // in either direction).
  std::size_t matched = 0, chunks = 0, last_i = 0, last_j = 0;
  detail::meteor_align(candidate, reference, [&](std::size_t i, std::size_t j) {
    if (matched == 0 || !(i + 1 == last_i && j + 1 == last_j)) ++chunks;
    ++matched, last_i = i, last_j = j;
  });
  if (matched == 0 || candidate.empty() || reference.empty()) return 0.0;
  const double m = static_cast<double>(matched);
  const double precision = m / static_cast<double>(candidate.size());
  const double recall = m / static_cast<double>(reference.size());
  const double fmean = (precision * recall) / (options.alpha * precision + (1 - options.alpha) * recall);
  const double penalty = options.gamma * std::pow(static_cast<double>(chunks) / m, options.beta);
  return (1 - penalty) * fmean;
}

// `corpus` should be made with lowercase = true (the string overload does so).
inline MeteorScore meteor(const CaptionCorpus& corpus, const MeteorOptions& options = {}) {
  require(options.alpha >= 0 && options.alpha <= 1, "meteor: alpha must be in [0, 1], got {}", options.alpha);
  require(options.gamma >= 0 && options.gamma <= 1, "meteor: gamma must be in [0, 1], got {}", options.gamma);
  MeteorScore out;
  double sum = 0.0;
  for (std::size_t c = 0; c < corpus.candidates.size(); ++c) {
    double best = 0.0;
    for (const auto& ref : corpus.references[c])
      best = std::max(best, meteor_sentence(corpus.candidates[c], ref, options));
    out.per_caption.push_back(best);
    sum += best;
  }
  out.meteor = sum / static_cast<double>(corpus.candidates.size());
  return out;
}

inline MeteorScore meteor(std::span<const std::string> candidates, std::span<const std::vector<std::string>> references,
                          Tokenization mode = Tokenization::Whitespace, const MeteorOptions& options = {}) {
  return meteor(make_corpus(candidates, references, mode, /*lowercase=*/true), options);
}

// With any CaptionTokenizer, e.g. a morpheme analyser (eval/mecab_tokenizer.hpp): tokens are ASCII-lower-cased
// after tokenising, as nltk's meteor_score does.
template <class Tokenizer>
requires(!std::same_as<std::remove_cvref_t<Tokenizer>, Tokenization>) MeteorScore
    meteor(std::span<const std::string> candidates, std::span<const std::vector<std::string>> references,
           Tokenizer& tokenizer, const MeteorOptions& options = {}) {
  return meteor(make_corpus(candidates, references, tokenizer, /*lowercase=*/true), options);
}

}  // namespace vidlora::eval

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using eval::MeteorOptions;
}  // namespace vidlora
