#pragma once
// vidlora eval: caption metrics (BLEU-4, METEOR, CIDEr-D, ROUGE-L) matched to pycocoevalcap / nltk,
// on whitespace tokens, characters or any CaptionTokenizer, and caption diversity with a mode-collapse check.
// The MeCab Korean morpheme tokenizer is separate: <vidlora/eval/mecab_tokenizer.hpp> (vidlora::mecab).

#include <vidlora/eval/caption_tokenizer.hpp>
#include <vidlora/eval/tokenize.hpp>
#include <vidlora/eval/caching_tokenizer.hpp>
#include <vidlora/eval/corpus.hpp>
#include <vidlora/eval/bleu.hpp>
#include <vidlora/eval/meteor.hpp>
#include <vidlora/eval/cider.hpp>
#include <vidlora/eval/rouge.hpp>
#include <vidlora/eval/diversity.hpp>
#include <vidlora/eval/caption_metrics.hpp>
#include <vidlora/eval/caption_metrics_json.hpp>

namespace vidlora {
using eval::AnyCaptionTokenizer;
using eval::bleu;
using eval::BleuScore;
using eval::CachingTokenizer;
using eval::caption_metrics;
using eval::CaptionCorpus;
using eval::CaptionMetrics;
using eval::CaptionMetricsOptions;
using eval::CaptionTokenizer;
using eval::CharacterTokenizer;
using eval::check_mode_collapse;
using eval::cider_d;
using eval::CiderOptions;
using eval::CiderScore;
using eval::Diversity;
using eval::diversity;
using eval::make_corpus;
using eval::meteor;
using eval::MeteorOptions;
using eval::MeteorScore;
using eval::ModeCollapseCheck;
using eval::rouge_l;
using eval::RougeScore;
using eval::Tokenization;
using eval::WhitespaceTokenizer;
}  // namespace vidlora
