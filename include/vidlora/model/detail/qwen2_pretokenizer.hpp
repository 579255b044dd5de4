#pragma once
// Qwen2's pre-tokeniser regex, matched by hand (leftmost-first alternation, greedy, as Oniguruma runs it):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// \s is the White_Space property, \p{L} / \p{N} the general categories (tables from unicodedata).
// Internal to vidlora::model; include <vidlora/model.hpp> instead.

#include <vidlora/model/detail/unicode.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace vidlora::model::detail {

enum class CharClass : std::uint8_t { kLetter, kNumber, kSpace, kNewline, kOther };  // kNewline: \r or \n

struct ClassifiedChar {
  char32_t cp;
  CharClass cls;
  std::uint32_t offset;  // byte offset in the text
};

inline CharClass classify(char32_t cp) {
  if (cp == '\r' || cp == '\n') return CharClass::kNewline;
  if (is_letter(cp)) return CharClass::kLetter;
  if (is_number(cp)) return CharClass::kNumber;
  if (is_white_space(cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

// Lower-cases the letters the contraction alternative can meet; U+017F (long s) case-folds to 's'.
inline char32_t fold_contraction_letter(char32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp == 0x17F) return 's';
  return cp;
}

// Splits valid UTF-8 `text` into the byte ranges the Qwen2 regex matches (Split, behaviour Isolated).
// `chars` is scratch space. Each piece is appended to `pieces` as a string_view into `text`.
inline void qwen2_pretokenize(std::string_view text, std::vector<ClassifiedChar>& chars,
                              std::vector<std::string_view>& pieces) {
  chars.clear();
  for (std::size_t pos = 0; pos < text.size();) {
    char32_t cp = 0;
    const std::size_t n = decode_utf8(text, pos, cp);
    require(n != 0, "tokenizer input: invalid UTF-8 at byte {} (0x{:02X})", pos, static_cast<unsigned char>(text[pos]));
    chars.push_back({cp, classify(cp), static_cast<std::uint32_t>(pos)});
    pos += n;
  }
  const std::size_t count = chars.size();
  const auto cls = [&](std::size_t i) { return i < count ? chars[i].cls : CharClass::kOther; };
  const auto is_space = [&](std::size_t i) {
    return i < count && (chars[i].cls == CharClass::kSpace || chars[i].cls == CharClass::kNewline);
  };
  const auto offset = [&](std::size_t i) {
    return i < count ? chars[i].offset : static_cast<std::uint32_t>(text.size());
  };

  for (std::size_t i = 0; i < count;) {
    std::size_t end = i;
    const char32_t c0 = chars[i].cp;
    // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (c0 == '\'' && i + 1 < count) {
      const char32_t a = fold_contraction_letter(chars[i + 1].cp);
      const char32_t b = i + 2 < count ? fold_contraction_letter(chars[i + 2].cp) : 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd')
        end = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        end = i + 3;
    }
    // 2. [^\r\n\p{L}\p{N}]?\p{L}+
    if (end == i) {
      std::size_t j = i;
      if (cls(j) == CharClass::kLetter) {
        end = j;
      } else if (cls(j) != CharClass::kNumber && cls(j) != CharClass::kNewline && cls(j + 1) == CharClass::kLetter) {
        end = j + 1;
      }
      if (end != i || cls(i) == CharClass::kLetter)
        while (cls(end) == CharClass::kLetter && end < count) ++end;
    }
    // 3. \p{N}
    if (end == i && cls(i) == CharClass::kNumber) end = i + 1;
    // 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
    if (end == i) {
      std::size_t j = i;
      if (c0 == ' ' && cls(i + 1) == CharClass::kOther && i + 1 < count) j = i + 1;
      if (cls(j) == CharClass::kOther && j < count) {
        while (j < count && cls(j) == CharClass::kOther) ++j;
        while (j < count && cls(j) == CharClass::kNewline) ++j;
        end = j;
      }
    }
    if (end == i) {  // whitespace run [i, run_end)
      std::size_t run_end = i;
      std::size_t last_newline = count;
      while (is_space(run_end)) {
        if (chars[run_end].cls == CharClass::kNewline) last_newline = run_end;
        ++run_end;
      }
      if (last_newline != count) {
        end = last_newline + 1;  // 5. \s*[\r\n]+
      } else if (run_end == count || run_end - i == 1) {
        end = run_end;  // 6. \s+(?!\S) at the end of the text, or 7. \s+ for a single space
      } else {
        end = run_end - 1;  // 6. \s+(?!\S): leave the last space to the word after it
      }
    }
    pieces.push_back(text.substr(offset(i), offset(end) - offset(i)));
    i = end;
  }
}

}  // namespace vidlora::model::detail
