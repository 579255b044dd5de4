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
