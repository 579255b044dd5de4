#pragma once
// Added (special) tokens are split out of the text before any model sees it, leftmost-longest,
// as HF tokenizers' AddedVocabulary does. Internal to vidlora::model; include <vidlora/model.hpp>.

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/unicode.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace vidlora::model::detail {

struct AddedToken {
  std::string content;
  int id = -1;
  bool special = false;     // dropped by decode(..., skip_special = true)
  bool normalized = false;  // matched after normalisation instead of on the raw text
  bool lstrip = false;      // swallows White_Space on its left
  bool rstrip = false;      // swallows White_Space on its right
};

// A run of text, or one added token (token >= 0).
struct TextPiece {
  std::string_view text;
  int token = -1;
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken& token) {
    if (token.content.empty()) return;
    tokens_.push_back(token);
    auto& bucket = by_first_byte_[static_cast<unsigned char>(token.content[0])];
    bucket.push_back(tokens_.size() - 1);
    std::stable_sort(bucket.begin(), bucket.end(), [&](std::size_t a, std::size_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }

  bool empty() const { return tokens_.empty(); }

  // Appends the pieces of `text` to `out`: text runs (never empty) and added tokens, in order.
  void split(std::string_view text, std::vector<TextPiece>& out) const {
    std::size_t run_start = 0;
    for (std::size_t pos = 0; pos < text.size();) {
      const auto& bucket = by_first_byte_[static_cast<unsigned char>(text[pos])];
      const AddedToken* hit = nullptr;
      for (std::size_t index : bucket) {  // longest first
        if (text.substr(pos).starts_with(tokens_[index].content)) {
          hit = &tokens_[index];
          break;
        }
      }
      if (!hit) {
        ++pos;
        continue;
      }
      std::size_t run_end = pos;
      if (hit->lstrip)
        while (run_end > run_start) {
          std::size_t start = run_end - 1;  // back to the lead byte of the previous character
          while (start > run_start && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
          char32_t cp = 0;
          if (decode_utf8(text, start, cp) != run_end - start || !is_white_space(cp)) break;
          run_end = start;
        }
      if (run_end > run_start) out.push_back({text.substr(run_start, run_end - run_start), -1});
      out.push_back({text.substr(pos, hit->content.size()), hit->id});
      pos += hit->content.size();
      if (hit->rstrip)
        for (char32_t cp = 0; pos < text.size();) {
          const std::size_t n = decode_utf8(text, pos, cp);
          if (n == 0 || !is_white_space(cp)) break;
          pos += n;
        }
      run_start = pos;
    }
    if (run_start < text.size()) out.push_back({text.substr(run_start), -1});
  }

 private:
  std::vector<AddedToken> tokens_;
  std::array<std::vector<std::size_t>, 256> by_first_byte_{};
};

// One added token as tokenizer.json's "added_tokens" entries and tokenizer_config.json's "added_tokens_decoder"
// values write it (`id` given separately for the latter, where it is the key). `single_word` true is refused: the
// matcher does not implement it. Errors name `source` and the token.
inline AddedToken added_token_from_json(const nlohmann::json& t, int id, std::string_view source) {
  require(t.is_object() && t.contains("content") && t["content"].is_string(),
          "tokenizer file '{}': added token {} has no \"content\" string", source, t.dump());
  AddedToken token;
  try {
    token = {.content = t["content"].get<std::string>(),
             .id = id,
             .special = t.value("special", false),
             .normalized = t.value("normalized", false),
             .lstrip = t.value("lstrip", false),
             .rstrip = t.value("rstrip", false)};
  } catch (const nlohmann::json::exception&) {
    fail("tokenizer file '{}': added token {} has a field of the wrong type", source, t.dump());
  }
  require(token.id >= 0, "tokenizer file '{}': added token '{}' has negative id {}", source, token.content, token.id);
  require(!t.value("single_word", false),
          "tokenizer file '{}': added token '{}' has single_word true, which is not supported", source, token.content);
  return token;
}

// The "single" template of a tokenizer.json TemplateProcessing post_processor: the special tokens it names before
// and after the one text ($A), by name. Any other piece, a second text or none is an error naming `source`. Both
// tokenizers read it: the SentencePiece loader takes BOS / EOS from it, the byte-level tokenizer requires it empty.
struct TemplateSingle {
  std::vector<std::string> before, after;
};

inline TemplateSingle template_processing_single(const nlohmann::json& post_processor, std::string_view source) {
  require(post_processor.contains("single") && post_processor["single"].is_array(),
          "tokenizer file '{}': the TemplateProcessing post_processor has no \"single\" list", source);
  TemplateSingle out;
  bool text_seen = false;
  for (const auto& piece : post_processor["single"]) {
    if (piece.is_object() && piece.contains("Sequence")) {
      const auto& sequence = piece["Sequence"];
      require(!text_seen && sequence.is_object() && sequence.contains("id") && sequence["id"] == "A",
              "tokenizer file '{}': post_processor template piece {} is not supported (one text, $A)", source,
              piece.dump());
      text_seen = true;
      continue;
    }
    require(piece.is_object() && piece.contains("SpecialToken") && piece["SpecialToken"].is_object() &&
                piece["SpecialToken"].contains("id") && piece["SpecialToken"]["id"].is_string(),
            "tokenizer file '{}': post_processor template piece {} is not supported", source, piece.dump());
    (text_seen ? out.after : out.before).push_back(piece["SpecialToken"]["id"].get<std::string>());
  }
  require(text_seen, "tokenizer file '{}': the post_processor template has no text ($A)", source);
  return out;
}

}  // namespace vidlora::model::detail
