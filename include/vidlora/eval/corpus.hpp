#pragma once
// CaptionCorpus: candidates and their references, tokenised once and interned to integer ids, the
// form every metric works on. N-gram keys and counts shared by BLEU, CIDEr-D and diversity.

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/tokenize.hpp>

namespace vidlora::eval {

using TokenIds = std::vector<std::uint32_t>;

struct CaptionCorpus {
  std::vector<TokenIds> candidates;               // [captions][tokens]
  std::vector<std::vector<TokenIds>> references;  // [captions][references][tokens]
  std::vector<std::string> vocabulary;            // id -> token
};

// Tokenises candidates[i] and references[i] (at least one reference each) with `tokenizer`, any
// CaptionTokenizer; `lowercase` folds the ASCII case of the tokens (as nltk lowercases after tokenising).
template <class Tokenizer>
requires(!std::same_as<std::remove_cvref_t<Tokenizer>, Tokenization>) CaptionCorpus
    make_corpus(std::span<const std::string> candidates, std::span<const std::vector<std::string>> references,
                Tokenizer& tokenizer, bool lowercase = false) {
  check_caption_tokenizer<std::remove_const_t<Tokenizer>>();
  require(candidates.size() == references.size(), "caption metrics: {} candidates but {} reference lists",
          candidates.size(), references.size());
  require(!candidates.empty(), "caption metrics: no candidates to score");
  CaptionCorpus corpus;
  std::unordered_map<std::string, std::uint32_t> ids;
  auto intern = [&](const std::string& text) {
    TokenIds out;
    auto tokens = tokenizer.tokenize(text);
    out.reserve(tokens.size());
    for (auto& t : tokens) {
      if (lowercase) t = ascii_lower(std::move(t));
      auto [it, inserted] = ids.try_emplace(t, static_cast<std::uint32_t>(corpus.vocabulary.size()));
      if (inserted) corpus.vocabulary.push_back(t);
      out.push_back(it->second);
    }
    return out;
  };
  corpus.candidates.reserve(candidates.size());
  corpus.references.reserve(references.size());
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    require(!references[i].empty(), "caption metrics: caption {} has no reference", i);
    corpus.candidates.push_back(intern(candidates[i]));
    auto& refs = corpus.references.emplace_back();
    for (const auto& r : references[i]) refs.push_back(intern(r));
  }
  return corpus;
}

// The same with one of the two built-in tokenisations.
inline CaptionCorpus make_corpus(std::span<const std::string> candidates,
                                 std::span<const std::vector<std::string>> references,
                                 Tokenization mode = Tokenization::Whitespace, bool lowercase = false) {
  if (mode == Tokenization::Characters) {
    CharacterTokenizer characters;
    return make_corpus(candidates, references, characters, lowercase);
  }
  WhitespaceTokenizer words;
  return make_corpus(candidates, references, words, lowercase);
}

namespace detail {

inline constexpr int kMaxNgram = 4;

// An n-gram (n <= 4) of token ids; unused slots hold the sentinel.
struct Ngram {
  std::array<std::uint32_t, kMaxNgram> ids{~0u, ~0u, ~0u, ~0u};
  int n = 0;
  bool operator==(const Ngram&) const = default;
};

struct NgramHash {
  std::size_t operator()(const Ngram& g) const noexcept {
    std::uint64_t h = 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(g.n);
    for (auto id : g.ids) h = (h ^ id) * 0x100000001B3ull + (h >> 29);
    return static_cast<std::size_t>(h);
  }
};

template <class Value>
using NgramMap = std::unordered_map<Ngram, Value, NgramHash>;

// Counts of every n-gram of order 1..max_n in `tokens`.
inline NgramMap<int> ngram_counts(const TokenIds& tokens, int max_n) {
  NgramMap<int> counts;
  const int len = static_cast<int>(tokens.size());
  for (int n = 1; n <= max_n; ++n)
    for (int i = 0; i + n <= len; ++i) {
      Ngram g;
      g.n = n;
      std::copy(tokens.begin() + i, tokens.begin() + i + n, g.ids.begin());
      ++counts[g];
    }
  return counts;
}

}  // namespace detail
}  // namespace vidlora::eval
