#pragma once
// BLEU-1..4 at corpus level, as pycocoevalcap's Bleu(4): clipped n-gram counts (each n-gram's count
// clipped to its largest count in any one reference), precisions pooled over the corpus, the
// "closest" reference length per caption (ties to the shorter one), one brevity penalty
// exp(1 - r/c) over the corpus totals, and its smoothing constants (1e-15 on matches, 1e-9 on counts)
// so that a precision with no match gives a tiny, not an undefined, score.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <vidlora/eval/corpus.hpp>

namespace vidlora::eval {

struct BleuScore {
  std::array<double, 4> bleu{};           // corpus BLEU-1, BLEU-2, BLEU-3, BLEU-4
  std::vector<double> bleu4_per_caption;  // sentence BLEU-4 of each caption (same smoothing)
  long candidate_length = 0;              // Σ candidate tokens (c)
  long reference_length = 0;              // Σ closest reference lengths (r)
  double bleu4() const { return bleu[3]; }
};

inline BleuScore bleu(const CaptionCorpus& corpus) {
  constexpr int n = 4;
  constexpr double tiny = 1e-15, small = 1e-9;  // pycocoevalcap's constants
  BleuScore out;
  std::array<long, n> total_guess{}, total_correct{};
  for (std::size_t c = 0; c < corpus.candidates.size(); ++c) {
    const auto& cand = corpus.candidates[c];
    const long testlen = static_cast<long>(cand.size());
    // The largest count of each n-gram in any single reference, and the closest reference length.
    detail::NgramMap<int> max_counts;
    long reflen = -1;
    for (const auto& ref : corpus.references[c]) {
      for (const auto& [g, k] : detail::ngram_counts(ref, n)) {
        int& m = max_counts[g];
        m = std::max(m, k);
      }
      const long l = static_cast<long>(ref.size());
      if (reflen < 0 || std::labs(l - testlen) < std::labs(reflen - testlen) ||
          (std::labs(l - testlen) == std::labs(reflen - testlen) && l < reflen))
        reflen = l;
    }
    std::array<long, n> guess{}, correct{};
    for (int k = 0; k < n; ++k) guess[k] = std::max(0L, testlen - k);
    for (const auto& [g, k] : detail::ngram_counts(cand, n)) {
      const auto it = max_counts.find(g);
      if (it != max_counts.end()) correct[g.n - 1] += std::min(it->second, k);
    }
    out.candidate_length += testlen;
    out.reference_length += reflen;
    double b = 1.0, b4 = 0.0;
    for (int k = 0; k < n; ++k) {
      total_guess[k] += guess[k];
      total_correct[k] += correct[k];
      b *= (static_cast<double>(correct[k]) + tiny) / (static_cast<double>(guess[k]) + small);
      if (k == n - 1) b4 = std::pow(b, 1.0 / n);
    }
    const double ratio = (static_cast<double>(testlen) + tiny) / (static_cast<double>(reflen) + small);
    if (ratio < 1) b4 *= std::exp(1 - 1 / ratio);
    out.bleu4_per_caption.push_back(b4);
  }
  double b = 1.0;
  for (int k = 0; k < n; ++k) {
    b *= (static_cast<double>(total_correct[k]) + tiny) / (static_cast<double>(total_guess[k]) + small);
    out.bleu[k] = std::pow(b, 1.0 / (k + 1));
  }
  const double ratio =
      (static_cast<double>(out.candidate_length) + tiny) / (static_cast<double>(out.reference_length) + small);
  if (ratio < 1)
    for (auto& v : out.bleu) v *= std::exp(1 - 1 / ratio);
  return out;
}

inline BleuScore bleu(std::span<const std::string> candidates, std::span<const std::vector<std::string>> references,
                      Tokenization mode = Tokenization::Whitespace) {
  return bleu(make_corpus(candidates, references, mode));
}

}  // namespace vidlora::eval
