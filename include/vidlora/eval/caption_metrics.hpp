#pragma once
// All caption metrics of one evaluation at once: BLEU-4, METEOR, CIDEr-D, ROUGE-L and diversity.

#include <span>
#include <string>
#include <vector>

#include <vidlora/eval/bleu.hpp>
#include <vidlora/eval/cider.hpp>
#include <vidlora/eval/diversity.hpp>
#include <vidlora/eval/meteor.hpp>
#include <vidlora/eval/rouge.hpp>

namespace vidlora::eval {

struct CaptionMetricsOptions {
  Tokenization tokenization = Tokenization::Whitespace;
  MeteorOptions meteor{};
  CiderOptions cider{};
  double rouge_beta = 1.2;
};

struct CaptionMetrics {
  double bleu4 = 0.0;
  double meteor = 0.0;
  double cider_d = 0.0;
  double rouge_l = 0.0;
  Diversity diversity{};
};

// candidates[i] is scored against references[i] (one or more).
inline CaptionMetrics caption_metrics(std::span<const std::string> candidates,
                                      std::span<const std::vector<std::string>> references,
                                      const CaptionMetricsOptions& options = {}) {
  const auto corpus = make_corpus(candidates, references, options.tokenization);
  CaptionMetrics out;
  out.bleu4 = bleu(corpus).bleu4();
  out.cider_d = cider_d(corpus, options.cider).cider_d;
  out.rouge_l = rouge_l(corpus, options.rouge_beta).rouge_l;
  out.meteor = meteor(make_corpus(candidates, references, options.tokenization, /*lowercase=*/true), options.meteor).meteor;
  out.diversity = diversity(candidates, options.tokenization);
  return out;
}

}  // namespace vidlora::eval
