#pragma once
// Caption tokenisation for the metrics: whitespace-separated words (Python's str.split(), which
// pycocoevalcap uses) or single characters (Unicode code points, whitespace dropped) for Korean,
// where word-level matching is coarse because particles attach to the words. WhitespaceTokenizer and
// CharacterTokenizer are the two as CaptionTokenizer policies (eval/caption_tokenizer.hpp).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/eval/caption_tokenizer.hpp>

namespace vidlora::eval {

enum class Tokenization {
  Whitespace,  // split on runs of whitespace, as Python's str.split()
  Characters,  // every non-whitespace code point is a token (no WordNet, no stemming: exact characters)
};

namespace detail {

// Length of the UTF-8 sequence starting at s[i] (1 for an invalid or truncated lead byte, which then
// stands for itself) and the code point it encodes (0xFFFD for invalid bytes).
inline std::size_t utf8_next(std::string_view s, std::size_t i, char32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  auto cont = [&](std::size_t k) { return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80; };
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  if ((b0 & 0xE0) == 0xC0 && cont(1)) {
    cp = (char32_t(b0 & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
    return 2;
  }
  if ((b0 & 0xF0) == 0xE0 && cont(1) && cont(2)) {
    cp = (char32_t(b0 & 0x0F) << 12) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 6) |
         (static_cast<unsigned char>(s[i + 2]) & 0x3F);
    return 3;
  }
  if ((b0 & 0xF8) == 0xF0 && cont(1) && cont(2) && cont(3)) {
    cp = (char32_t(b0 & 0x07) << 18) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 12) |
         (char32_t(static_cast<unsigned char>(s[i + 2]) & 0x3F) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3F);
    return 4;
  }
  cp = 0xFFFD;
  return 1;
}

// The code points Python's str.isspace() accepts (so str.split() and our split agree).
constexpr bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace detail

// Splits one caption into tokens.
inline std::vector<std::string> tokenize(std::string_view text, Tokenization mode = Tokenization::Whitespace) {
  std::vector<std::string> tokens;
  std::string current;
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = 0;
    const std::size_t len = detail::utf8_next(text, i, cp);
    const std::string_view piece = text.substr(i, len);
    i += len;
    if (detail::is_space(cp)) {
      if (!current.empty()) tokens.push_back(std::move(current)), current.clear();
      continue;
    }
    if (mode == Tokenization::Characters) {
      tokens.emplace_back(piece);
    } else {
      current.append(piece);
    }
  }
  if (!current.empty()) tokens.push_back(std::move(current));
  return tokens;
}

// The two tokenisations as CaptionTokenizer policies.
struct WhitespaceTokenizer {
  std::vector<std::string> tokenize(std::string_view text) const {
    return eval::tokenize(text, Tokenization::Whitespace);
  }
  std::string name() const { return "whitespace"; }
};
struct CharacterTokenizer {
  std::vector<std::string> tokenize(std::string_view text) const {
    return eval::tokenize(text, Tokenization::Characters);
  }
  std::string name() const { return "characters"; }
};
static_assert(CaptionTokenizer<WhitespaceTokenizer> && CaptionTokenizer<CharacterTokenizer>);

// ASCII lower-casing (METEOR's case folding; Hangul has no case, other scripts are left as they are).
inline std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace vidlora::eval
