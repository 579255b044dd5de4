#pragma once
// CachingTokenizer<T>: any CaptionTokenizer with a memo of the texts it has seen, for analysers that cost
// more than the metric itself (MeCab: ~50 µs per caption). The trainer scores the same reference captions
// after every epoch, and collapsed or early models repeat captions, so those are analysed once. Exact:
// a cached text gives the tokens the wrapped tokenizer gave it. When `max_entries` texts are held, the
// memo is cleared and refilled (captions of one evaluation fit many times over in the default).

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/caption_tokenizer.hpp>

namespace vidlora::eval {

template <class Tokenizer>
class CachingTokenizer {
  static_assert(CaptionTokenizer<Tokenizer>, "CachingTokenizer<T>: T must be a CaptionTokenizer (tokenize(), name())");

 public:
  explicit CachingTokenizer(Tokenizer tokenizer, std::size_t max_entries = 1u << 17)
      : tokenizer_(std::move(tokenizer)), max_entries_(max_entries) {
    require(max_entries > 0, "CachingTokenizer: max_entries must be > 0");
  }

  std::vector<std::string> tokenize(std::string_view text) {
    if (const auto it = memo_.find(text); it != memo_.end()) {
      ++hits_;
      return it->second;
    }
    auto tokens = tokenizer_.tokenize(text);
    if (memo_.size() >= max_entries_) memo_.clear();
    memo_.emplace(std::string(text), tokens);
    ++misses_;
    return tokens;
  }
  std::string name() const { return std::string(tokenizer_.name()); }  // the tokens are the wrapped tokenizer's

  std::size_t hits() const { return hits_; }
  std::size_t misses() const { return misses_; }
  std::size_t size() const { return memo_.size(); }
  Tokenizer& wrapped() { return tokenizer_; }

 private:
  Tokenizer tokenizer_;
  std::size_t max_entries_;
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::vector<std::string>, TextHash, std::equal_to<>> memo_;
  std::size_t hits_ = 0, misses_ = 0;
};

}  // namespace vidlora::eval
