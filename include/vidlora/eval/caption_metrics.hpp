#pragma once
// All caption metrics of one evaluation at once: BLEU-4, METEOR, CIDEr-D, ROUGE-L and diversity, plus
// METEOR on a morpheme tokenisation when one is given (the Korean METEOR users report, see docs/eval.md).

#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <vidlora/eval/bleu.hpp>
#include <vidlora/eval/caption_tokenizer.hpp>
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
  // When set, CaptionMetrics::meteor_morphemes is METEOR on these tokens, e.g. a MecabKoTokenizer with
  // MecabKoUnits::OktUnits for numbers comparable with nltk meteor_score over KoNLPy Okt morphs.
  std::optional<AnyCaptionTokenizer> morpheme_tokenizer{};
};

struct CaptionMetrics {
  double bleu4 = 0.0;
  double meteor = 0.0;  // on CaptionMetricsOptions::tokenization
  double cider_d = 0.0;
  double rouge_l = 0.0;
  Diversity diversity{};
  // METEOR on CaptionMetricsOptions::morpheme_tokenizer's tokens; NaN when none was given.
  double meteor_morphemes = std::numeric_limits<double>::quiet_NaN();
  std::string meteor_morphemes_tokenizer;  // its name(), e.g. "mecab-ko-dic okt-units"; empty when none
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
  out.meteor =
      meteor(make_corpus(candidates, references, options.tokenization, /*lowercase=*/true), options.meteor).meteor;
  out.diversity = diversity(candidates, options.tokenization);
  if (options.morpheme_tokenizer) {
    AnyCaptionTokenizer tokenizer = *options.morpheme_tokenizer;  // shares the analyser
    require(static_cast<bool>(tokenizer), "caption_metrics: morpheme_tokenizer is set but holds no tokenizer");
    out.meteor_morphemes = meteor(candidates, references, tokenizer, options.meteor).meteor;
    out.meteor_morphemes_tokenizer = tokenizer.name();
  }
  return out;
}

}  // namespace vidlora::eval

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using eval::CaptionMetricsOptions;
}  // namespace vidlora
