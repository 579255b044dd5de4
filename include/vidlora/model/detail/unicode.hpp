#pragma once
// UTF-8 decoding/encoding, lossy UTF-8 repair, \p{L} / \p{N} / White_Space lookups and NFC, for the tokenizers.
// Internal to vidlora::model; include <vidlora/model.hpp> instead.

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/unicode_tables.hpp>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace vidlora::model::detail {

// Decodes one UTF-8 sequence at text[pos]; returns its length, or 0 when the bytes there are not
// well-formed UTF-8 (overlong, surrogate, > U+10FFFF or truncated).
inline std::size_t decode_utf8(std::string_view text, std::size_t pos, char32_t& cp) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char b0 = byte(pos);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
    cp = b0 & 0x1Fu;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    cp = b0 & 0x0Fu;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    cp = b0 & 0x07u;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (std::size_t k = 1; k < n; ++k) {
    if (pos + k >= text.size()) return 0;
    const unsigned char b = byte(pos + k);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  return n;
}

inline bool is_valid_utf8(std::string_view text) {
  for (std::size_t pos = 0; pos < text.size();) {
    char32_t cp = 0;
    const std::size_t n = decode_utf8(text, pos, cp);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Code points of valid UTF-8 text; throws naming `what` and the byte offset otherwise.
inline std::u32string utf8_to_code_points(std::string_view text, std::string_view what) {
  std::u32string out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    char32_t cp = 0;
    const std::size_t n = decode_utf8(text, pos, cp);
    require(n != 0, "{}: invalid UTF-8 at byte {} (0x{:02X})", what, pos, static_cast<unsigned char>(text[pos]));
    out.push_back(cp);
    pos += n;
  }
  return out;
}

// Bytes as UTF-8, each maximal ill-formed subsequence replaced by one U+FFFD (what Rust's
// String::from_utf8_lossy and Python's errors="replace" do).
inline std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t pos = 0; pos < bytes.size();) {
    char32_t cp = 0;
    const std::size_t n = decode_utf8(bytes, pos, cp);
    if (n != 0) {
      out.append(bytes.substr(pos, n));
      pos += n;
      continue;
    }
    // Maximal subpart: the lead byte plus the continuation bytes that were still acceptable.
    std::size_t skip = 1;
    const auto b0 = static_cast<unsigned char>(bytes[pos]);
    const std::size_t need = b0 >= 0xF0 && b0 <= 0xF4   ? 4
                             : b0 >= 0xE0 && b0 <= 0xEF ? 3
                             : b0 >= 0xC2 && b0 <= 0xDF ? 2
                                                        : 1;
    for (std::size_t k = 1; k < need && pos + k < bytes.size(); ++k) {
      const auto b = static_cast<unsigned char>(bytes[pos + k]);
      unsigned char lo = 0x80, hi = 0xBF;
      if (k == 1) {
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
      }
      if (b < lo || b > hi) break;
      skip = k + 1;
    }
    out.append("\xEF\xBF\xBD");
    pos += skip;
  }
  return out;
}

template <std::size_t N>
bool in_ranges(const CodePointRange (&table)[N], char32_t cp) {
  const auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                                   [](char32_t c, const CodePointRange& r) { return c < r.first; });
  return it != std::begin(table) && cp <= std::prev(it)->last;
}

inline bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetterRanges, cp);
}
inline bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, cp);
}
inline bool is_white_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return in_ranges(kWhiteSpaceRanges, cp);
}

// ---- NFC (canonical decomposition, canonical ordering, canonical composition; UAX #15) ----

inline constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
inline constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
inline constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

inline std::uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                                   [](char32_t c, const CombiningClassRange& r) { return c < r.first; });
  return it != std::begin(kCombiningClasses) && cp <= std::prev(it)->last ? std::prev(it)->ccc : 0;
}

inline const CanonicalDecomposition* find_decomposition(char32_t cp) {
  const auto it = std::lower_bound(std::begin(kCanonicalDecompositions), std::end(kCanonicalDecompositions), cp,
                                   [](const CanonicalDecomposition& d, char32_t c) { return d.cp < c; });
  return it != std::end(kCanonicalDecompositions) && it->cp == cp ? &*it : nullptr;
}

inline void decompose_into(std::u32string& out, char32_t cp) {
  if (cp >= kHangulS && cp < kHangulS + kHangulSCount) {
    const char32_t s = cp - kHangulS;
    out.push_back(kHangulL + s / kHangulNCount);
    out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) out.push_back(kHangulT + s % kHangulTCount);
    return;
  }
  if (const auto* d = cp >= 0xC0 ? find_decomposition(cp) : nullptr) {
    decompose_into(out, d->first);
    if (d->second != 0) decompose_into(out, d->second);
    return;
  }
  out.push_back(cp);
}

// The primary composite of (a, b), or 0 when the pair does not compose.
inline char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV && b < kHangulV + kHangulVCount)
    return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
  if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
      b < kHangulT + kHangulTCount)
    return a + (b - kHangulT);
  struct Pair {
    std::uint64_t key;
    char32_t composite;
  };
  static const std::vector<Pair> pairs = [] {
    std::vector<Pair> p;
    for (const auto& d : kCanonicalDecompositions)
      if (d.composes) p.push_back({(std::uint64_t{d.first} << 21) | d.second, d.cp});
    std::sort(p.begin(), p.end(), [](const Pair& x, const Pair& y) { return x.key < y.key; });
    return p;
  }();
  const std::uint64_t key = (std::uint64_t{a} << 21) | b;
  const auto it =
      std::lower_bound(pairs.begin(), pairs.end(), key, [](const Pair& p, std::uint64_t k) { return p.key < k; });
  return it != pairs.end() && it->key == key ? it->composite : 0;
}

// True when the text contains a code point NFC may change; text without one is already NFC.
inline bool may_change_under_nfc(std::string_view text) {
  for (std::size_t pos = 0; pos < text.size();) {
    const auto b0 = static_cast<unsigned char>(text[pos]);
    if (b0 < 0x80) {
      ++pos;
      continue;
    }
    if (b0 >= 0xC2 && b0 < 0xCC && pos + 1 < text.size() &&
        (static_cast<unsigned char>(text[pos + 1]) & 0xC0) == 0x80) {
      pos += 2;  // below U+0300 (the first combining mark) nothing changes
      continue;
    }
    char32_t cp = 0;
    const std::size_t n = decode_utf8(text, pos, cp);
    if (n == 0) return true;  // let nfc() report the bad byte
    if (in_ranges(kNfcUnstableRanges, cp)) return true;
    pos += n;
  }
  return false;
}

// Unicode Normalization Form C of valid UTF-8 text (throws on invalid UTF-8, naming `what`).
inline std::string nfc(std::string_view text, std::string_view what = "text") {
  if (!may_change_under_nfc(text)) return std::string(text);
  std::u32string decomposed;
  decomposed.reserve(text.size());
  for (char32_t cp : utf8_to_code_points(text, what)) decompose_into(decomposed, cp);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < decomposed.size();) {
    if (combining_class(decomposed[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < decomposed.size() && combining_class(decomposed[j]) != 0) ++j;
    std::stable_sort(decomposed.begin() + static_cast<std::ptrdiff_t>(i),
                     decomposed.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition: a character joins the last starter unless blocked.
  std::u32string composed;
  composed.reserve(decomposed.size());
  std::ptrdiff_t starter = -1;
  int last_class = -1;  // class of the previous kept character; -1: none since the starter
  for (char32_t cp : decomposed) {
    const int cc = combining_class(cp);
    if (starter >= 0 && (last_class == -1 || last_class < cc)) {  // not blocked
      if (const char32_t c = compose_pair(composed[static_cast<std::size_t>(starter)], cp)) {
        composed[static_cast<std::size_t>(starter)] = c;
        continue;
      }
    }
    if (cc == 0) {
      starter = static_cast<std::ptrdiff_t>(composed.size());
      last_class = -1;
    } else {
      last_class = cc;
    }
    composed.push_back(cp);
  }
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : composed) append_utf8(out, cp);
  return out;
}

}  // namespace vidlora::model::detail
