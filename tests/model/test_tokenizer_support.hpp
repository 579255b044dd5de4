#pragma once
// Shared by the tokenizer tests: fixture paths and the recorded reference ids (tools/reference/tokenizer_fixtures.py).

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include <vidlora/model/detail/unicode.hpp>

#include "fixtures.hpp"

namespace vidlora::test {

inline const nlohmann::json& tokenizer_fixture() {
  static const nlohmann::json fixture = load_fixture("model/tokenizer_ids.json");
  return fixture;
}

inline std::vector<std::string> tokenizer_corpus_lines() {
  std::ifstream in(fixture_path("model/tokenizer_corpus.txt"));
  if (!in)
    throw Error(
        "cannot open fixture model/tokenizer_corpus.txt (regenerate with tools/reference/tokenizer_fixtures.py)");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

// True when the text holds a precomposed Hangul syllable (U+AC00..U+D7A3).
inline bool contains_hangul(const std::string& s) {
  for (char32_t cp : model::detail::utf8_to_code_points(s, "test text"))
    if (cp >= 0xAC00 && cp <= 0xD7A3) return true;
  return false;
}

}  // namespace vidlora::test
