#pragma once
// ROUGE-L as pycocoevalcap's Rouge: per caption, the longest common subsequence with each reference
// gives precision lcs/|c| and recall lcs/|r|; the largest precision and the largest recall over the
// references (taken separately) make F = (1+β²)·P·R / (R + β²·P) with β = 1.2; the corpus score is
// the mean over captions. An empty candidate or no common token scores 0.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <vidlora/eval/corpus.hpp>

namespace vidlora::eval {

struct RougeScore {
  double rouge_l = 0.0;
  std::vector<double> per_caption;
};

// Length of the longest common subsequence of a and b (O(|a|·|b|) time, O(|b|) memory).
inline std::size_t lcs_length(const TokenIds& a, const TokenIds& b) {
  std::vector<std::size_t> row(b.size() + 1, 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = 0;  // row[j - 1] of the previous i
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = a[i - 1] == b[j - 1] ? diag + 1 : std::max(up, row[j - 1]);
      diag = up;
    }
  }
  return row[b.size()];
}

inline RougeScore rouge_l(const CaptionCorpus& corpus, double beta = 1.2) {
  RougeScore out;
  double sum = 0.0;
  for (std::size_t c = 0; c < corpus.candidates.size(); ++c) {
    const auto& cand = corpus.candidates[c];
    double prec = 0.0, rec = 0.0;
    for (const auto& ref : corpus.references[c]) {
      const double lcs = static_cast<double>(lcs_length(ref, cand));
      if (!cand.empty()) prec = std::max(prec, lcs / static_cast<double>(cand.size()));
      if (!ref.empty()) rec = std::max(rec, lcs / static_cast<double>(ref.size()));
    }
    const double score = (prec != 0 && rec != 0) ? ((1 + beta * beta) * prec * rec) / (rec + beta * beta * prec) : 0.0;
    out.per_caption.push_back(score);
    sum += score;
  }
  out.rouge_l = sum / static_cast<double>(corpus.candidates.size());
  return out;
}

inline RougeScore rouge_l(std::span<const std::string> candidates, std::span<const std::vector<std::string>> references,
                          Tokenization mode = Tokenization::Whitespace) {
  return rouge_l(make_corpus(candidates, references, mode));
}

}  // namespace vidlora::eval
