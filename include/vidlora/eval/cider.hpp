#pragma once
// CIDEr-D as pycocoevalcap's Cider (Vedantam et al. with the CIDEr-D changes): for n = 1..4 each
// sentence becomes a tf-idf vector, tf = n-gram count, idf = log(N) - log(max(1, df)) with N the
// number of captions and df the number of captions whose references contain the n-gram (document
// frequency from the reference set only). Per reference the candidate's weights are clipped to the
// reference's (Σ min(c, r)·r / (|c|·|r|)) and multiplied by the length penalty exp(-δ²/2σ²), σ = 6;
// the n = 1..4 similarities are averaged, averaged over references and multiplied by 10. δ is, as in
// the reference code, the difference of the two sentences' bigram counts (their lengths minus one).
// With a single caption log(N) = 0 and every score is 0.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include <vidlora/eval/corpus.hpp>

namespace vidlora::eval {

struct CiderOptions {
  double sigma = 6.0;  // σ of the Gaussian length penalty
  int max_n = 4;       // n-gram orders 1..max_n (at most 4)
};

struct CiderScore {
  double cider_d = 0.0;  // mean over captions
  std::vector<double> per_caption;
};

inline CiderScore cider_d(const CaptionCorpus& corpus, const CiderOptions& options = {}) {
  const int n = options.max_n;
  require(n >= 1 && n <= detail::kMaxNgram, "cider_d: max_n must be in [1, {}], got {}", detail::kMaxNgram, n);
  require(options.sigma > 0, "cider_d: sigma must be > 0, got {}", options.sigma);
  const std::size_t captions = corpus.candidates.size();

  std::vector<std::vector<detail::NgramMap<int>>> ref_counts(captions);
  detail::NgramMap<double> document_frequency;
  for (std::size_t c = 0; c < captions; ++c) {
    std::unordered_set<detail::Ngram, detail::NgramHash> seen;
    for (const auto& ref : corpus.references[c]) {
      ref_counts[c].push_back(detail::ngram_counts(ref, n));
      for (const auto& [g, k] : ref_counts[c].back()) seen.insert(g);
    }
    for (const auto& g : seen) document_frequency[g] += 1.0;
  }
  const double log_captions = std::log(static_cast<double>(captions));

  struct Vector {
    std::array<detail::NgramMap<double>, detail::kMaxNgram> weights;
    std::array<double, detail::kMaxNgram> norm{};
    long length = 0;  // number of bigrams, as the reference code counts it
  };
  auto to_vector = [&](const detail::NgramMap<int>& counts) {
    Vector v;
    for (const auto& [g, tf] : counts) {
      const auto it = document_frequency.find(g);
      const double df = std::log(std::max(1.0, it == document_frequency.end() ? 0.0 : it->second));
      const double w = static_cast<double>(tf) * (log_captions - df);
      v.weights[g.n - 1][g] = w;
      v.norm[g.n - 1] += w * w;
      if (g.n == 2) v.length += tf;
    }
    for (auto& x : v.norm) x = std::sqrt(x);
    return v;
  };

  CiderScore out;
  double sum = 0.0;
  for (std::size_t c = 0; c < captions; ++c) {
    const Vector hyp = to_vector(detail::ngram_counts(corpus.candidates[c], n));
    std::array<double, detail::kMaxNgram> score{};
    for (const auto& counts : ref_counts[c]) {
      const Vector ref = to_vector(counts);
      const double delta = static_cast<double>(hyp.length - ref.length);
      const double penalty = std::exp(-(delta * delta) / (2 * options.sigma * options.sigma));
      for (int k = 0; k < n; ++k) {
        double val = 0.0;
        for (const auto& [g, w] : hyp.weights[k]) {
          const auto it = ref.weights[k].find(g);
          const double r = it == ref.weights[k].end() ? 0.0 : it->second;
          val += std::min(w, r) * r;  // clipping: the candidate cannot gain by repeating an n-gram
        }
        if (hyp.norm[k] != 0 && ref.norm[k] != 0) val /= hyp.norm[k] * ref.norm[k];
        score[k] += val * penalty;
      }
    }
    double mean = 0.0;
    for (int k = 0; k < n; ++k) mean += score[k];
    mean /= n;
    const double caption_score = mean / static_cast<double>(ref_counts[c].size()) * 10.0;
    out.per_caption.push_back(caption_score);
    sum += caption_score;
  }
  out.cider_d = sum / static_cast<double>(captions);
  return out;
}

inline CiderScore cider_d(std::span<const std::string> candidates, std::span<const std::vector<std::string>> references,
                          Tokenization mode = Tokenization::Whitespace, const CiderOptions& options = {}) {
  return cider_d(make_corpus(candidates, references, mode), options);
}

}  // namespace vidlora::eval

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using eval::CiderOptions;
}  // namespace vidlora
