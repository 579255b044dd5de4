#pragma once
// ByteLevelBpeTokenizer: a HF tokenizer.json byte-level BPE as Qwen2 / Qwen3 ship it: added tokens split
// out first (leftmost-longest), NFC, Qwen2's regex pre-tokeniser, GPT-2's byte-to-unicode mapping, BPE
// merges by rank (with a per-tokenizer cache), ByteLevel decoding with lossy UTF-8.

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/added_tokens.hpp>
#include <vidlora/model/detail/qwen2_pretokenizer.hpp>
#include <vidlora/model/detail/unicode.hpp>
#include <vidlora/model/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vidlora::model {

namespace detail {

// Qwen2's split regex, as tokenizer.json stores it.
inline constexpr std::string_view kQwen2SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's reversible byte -> printable code point mapping (printable Latin-1 bytes map to themselves).
inline const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace detail

class ByteLevelBpeTokenizer {
 public:
  // Loads a tokenizer.json; errors name the file and what is wrong with it.
  static ByteLevelBpeTokenizer from_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    require(static_cast<bool>(in), "cannot open tokenizer file '{}'", path);
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
      fail("tokenizer file '{}' does not parse as JSON: {}", path, e.what());
    }
    return ByteLevelBpeTokenizer(json, path);
  }

  // `json`: the parsed tokenizer.json; `source` names it in errors.
  ByteLevelBpeTokenizer(const nlohmann::json& json, std::string_view source) : source_(source) {
    try {
      load(json);
    } catch (const nlohmann::json::exception& e) {
      fail("tokenizer file '{}' has an unexpected layout: {}", source_, e.what());
    }
  }

  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  std::optional<int> bos_id() const { return bos_; }
  std::optional<int> eos_id() const { return eos_; }
  std::optional<int> pad_id() const { return pad_; }
  // Qwen's conventions: no BOS, <|endoftext|> pads; the chat template ends a turn with <|im_end|>.
  void set_special_ids(std::optional<int> bos, std::optional<int> eos, std::optional<int> pad) {
    for (auto id : {bos, eos, pad})
      require(!id || (*id >= 0 && *id < vocab_size()), "{}: special id {} outside the vocabulary", source_, *id);
    bos_ = bos;
    eos_ = eos;
    pad_ = pad;
  }

  std::optional<int> token_to_id(std::string_view token) const {
    const auto it = token_to_id_.find(token);
    return it == token_to_id_.end() ? std::nullopt : std::optional<int>(it->second);
  }
  const std::string& id_to_token(int id) const {
    check_id(id);
    return id_to_token_[static_cast<std::size_t>(id)];
  }
  bool is_special(int id) const {
    check_id(id);
    return special_[static_cast<std::size_t>(id)];
  }

  std::vector<int> encode(std::string_view text) const { return encode(text, EncodeOptions{}); }

  std::vector<int> encode(std::string_view text, EncodeOptions call) const {
    std::vector<int> ids;
    if (call.add_bos.value_or(false)) ids.push_back(require_id(bos_, "BOS"));
    std::vector<detail::TextPiece> raw_pieces, pieces;
    raw_added_.split(text, raw_pieces);
    std::vector<std::string> normalized_runs;  // keeps the NFC text alive while its pieces are in use
    normalized_runs.reserve(raw_pieces.size());
    for (const auto& piece : raw_pieces) {
      if (piece.token >= 0) {
        pieces.push_back(piece);
        continue;
      }
      std::string_view run = piece.text;
      if (nfc_) {
        normalized_runs.push_back(detail::nfc(run, "tokenizer input"));
        run = normalized_runs.back();
      }
      normalized_added_.split(run, pieces);
    }
    std::vector<detail::ClassifiedChar> chars;
    std::vector<std::string_view> words;
    for (const auto& piece : pieces) {
      if (piece.token >= 0) {
        ids.push_back(piece.token);
        continue;
      }
      words.clear();
      detail::qwen2_pretokenize(piece.text, chars, words);
      for (std::string_view word : words) append_bpe(word, ids);
    }
    if (call.add_eos.value_or(false)) ids.push_back(require_id(eos_, "EOS"));
    return ids;
  }

  // Concatenates the tokens' bytes (added tokens as written) and repairs invalid UTF-8 with U+FFFD.
  std::string decode(std::span<const int> ids, bool skip_special = false) const {
    std::string bytes;
    for (int id : ids) {
      check_id(id);
      if (skip_special && special_[static_cast<std::size_t>(id)]) continue;
      bytes += token_bytes_[static_cast<std::size_t>(id)];
    }
    return detail::utf8_lossy(bytes);
  }

  std::size_t merge_count() const { return merges_.size(); }

  // Forgets the per-word BPE results (benchmarks measure the uncached path with it).
  void clear_cache() const {
    std::lock_guard lock(cache_->mutex);
    cache_->words.clear();
  }

 private:
  struct Merge {
    int rank;
    int merged;
  };
  static std::uint64_t pair_key(int a, int b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  void load(const nlohmann::json& json) {
    require(json.is_object(), "tokenizer file '{}': expected a JSON object at the top level", source_);
    require(json.contains("model") && json["model"].is_object(), "tokenizer file '{}': no \"model\" object", source_);
    const auto& model = json["model"];
    const std::string type = model.value("type", std::string("BPE"));
    require(type == "BPE", "tokenizer file '{}': unknown model type '{}' (supported: BPE)", source_, type);
    require(!model.value("byte_fallback", false), "tokenizer file '{}': BPE byte_fallback is not supported", source_);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      require(!model.contains(key) || model[key].is_null() || model[key].get<std::string>().empty(),
              "tokenizer file '{}': BPE {} is not supported", source_, key);
    ignore_merges_ = model.value("ignore_merges", false);
    check_normalizer(json.value("normalizer", nlohmann::json()));
    check_pre_tokenizer(json.value("pre_tokenizer", nlohmann::json()));
    check_post_processor(json.value("post_processor", nlohmann::json()));

    require(model.contains("vocab") && model["vocab"].is_object(), "tokenizer file '{}': model.vocab is not an object",
            source_);
    int max_id = -1;
    for (const auto& [token, id_json] : model["vocab"].items()) {
      const int id = id_json.get<int>();
      require(id >= 0, "tokenizer file '{}': token '{}' has negative id {}", source_, token, id);
      token_to_id_[token] = id;
      max_id = std::max(max_id, id);
    }
    std::vector<detail::AddedToken> added;
    for (const auto& t : json.value("added_tokens", nlohmann::json::array())) {
      require(t.is_object() && t.contains("id") && t["id"].is_number_integer(),
              "tokenizer file '{}': added token {} has no integer \"id\"", source_, t.dump());
      added.push_back(detail::added_token_from_json(t, t["id"].get<int>(), source_));
      max_id = std::max(max_id, added.back().id);
    }
    id_to_token_.assign(static_cast<std::size_t>(max_id + 1), std::string());
    token_bytes_.assign(id_to_token_.size(), std::string());
    special_.assign(id_to_token_.size(), false);

    // Inverse of the byte-to-unicode mapping, to turn each token back into its bytes.
    std::unordered_map<char32_t, unsigned char> unicode_to_byte;
    for (int b = 0; b < 256; ++b)
      unicode_to_byte[detail::byte_to_unicode()[static_cast<std::size_t>(b)]] = static_cast<unsigned char>(b);
    for (const auto& [token, id] : token_to_id_) {
      id_to_token_[static_cast<std::size_t>(id)] = token;
      std::string& bytes = token_bytes_[static_cast<std::size_t>(id)];
      for (char32_t cp : detail::utf8_to_code_points(token, "tokenizer vocabulary")) {
        const auto it = unicode_to_byte.find(cp);
        if (it != unicode_to_byte.end())
          bytes.push_back(static_cast<char>(it->second));
        else
          detail::append_utf8(bytes, cp);  // not a byte-level character: kept as written
      }
    }
    byte_ids_.fill(-1);
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      detail::append_utf8(ch, detail::byte_to_unicode()[static_cast<std::size_t>(b)]);
      if (const auto it = token_to_id_.find(ch); it != token_to_id_.end())
        byte_ids_[static_cast<std::size_t>(b)] = it->second;
    }
    for (const auto& a : added) {
      id_to_token_[static_cast<std::size_t>(a.id)] = a.content;
      token_bytes_[static_cast<std::size_t>(a.id)] = a.content;
      special_[static_cast<std::size_t>(a.id)] = a.special;
      token_to_id_[a.content] = a.id;
      (a.normalized ? normalized_added_ : raw_added_).add(a);
    }

    // Merges: "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20).
    const auto& merges = model.contains("merges") ? model["merges"] : nlohmann::json::array();
    require(merges.is_array(), "tokenizer file '{}': model.merges is not an array", source_);
    int rank = 0;
    for (const auto& m : merges) {
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const auto space = s.find(' ');
        require(space != std::string::npos && space > 0 && space + 1 < s.size() &&
                    s.find(' ', space + 1) == std::string::npos,
                "tokenizer file '{}': merge {} '{}' is not two tokens separated by one space", source_, rank, s);
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        require(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                "tokenizer file '{}': merge {} is neither \"a b\" nor [\"a\", \"b\"]: {}", source_, rank, m.dump());
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      }
      const auto a = token_to_id(left), b = token_to_id(right), ab = token_to_id(left + right);
      require(a && b && ab, "tokenizer file '{}': merge {} '{} {}' uses a token missing from the vocabulary", source_,
              rank, left, right);
      merges_.emplace(pair_key(*a, *b), Merge{rank, *ab});
      ++rank;
    }
    if (const auto eot = token_to_id("<|endoftext|>")) pad_ = eot;
    if (const auto im_end = token_to_id("<|im_end|>")) eos_ = im_end;
  }

  void check_normalizer(const nlohmann::json& normalizer) {
    if (normalizer.is_null()) return;
    const std::string type = normalizer.value("type", std::string());
    if (type == "NFC") {
      nfc_ = true;
    } else if (type == "Sequence") {
      for (const auto& n : normalizer.at("normalizers")) check_normalizer(n);
    } else {
      fail("tokenizer file '{}': normalizer '{}' is not supported (supported: NFC)", source_, type);
    }
  }

  void check_pre_tokenizer(const nlohmann::json& pre) {
    const auto unsupported = [&](std::string_view why) {
      fail(
          "tokenizer file '{}': pre_tokenizer {} is not supported ({}); expected Qwen2's Sequence[Split(regex, "
          "Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]",
          source_, pre.dump(), why);
    };
    if (pre.is_null() || pre.value("type", std::string()) != "Sequence") unsupported("not a Sequence");
    const auto& steps = pre.at("pretokenizers");
    if (steps.size() != 2) unsupported("expected two steps");
    const auto& split = steps[0];
    if (split.value("type", std::string()) != "Split") unsupported("first step is not Split");
    if (!split.contains("pattern") || !split["pattern"].contains("Regex") ||
        split["pattern"]["Regex"].get<std::string>() != detail::kQwen2SplitPattern)
      unsupported("Split pattern is not Qwen2's regex");
    if (split.value("behavior", std::string()) != "Isolated" || split.value("invert", false))
      unsupported("Split is not Isolated");
    const auto& byte_level = steps[1];
    if (byte_level.value("type", std::string()) != "ByteLevel" || byte_level.value("add_prefix_space", false) ||
        byte_level.value("use_regex", true))
      unsupported("second step is not ByteLevel without prefix space and regex");
  }

  // A post-processor that puts tokens around the text (BOS / EOS by a template) would change every encoding, and
  // this tokenizer adds none: only what adds nothing passes (none, ByteLevel's offsets, a template of the text alone,
  // or a Sequence of those); anything else is an error naming it.
  void check_post_processor(const nlohmann::json& post) {
    if (post.is_null()) return;
    const std::string type = post.is_object() ? post.value("type", std::string()) : std::string();
    if (type == "ByteLevel") return;
    if (type == "Sequence" && post.contains("processors") && post["processors"].is_array()) {
      for (const auto& step : post["processors"]) check_post_processor(step);
      return;
    }
    require(type == "TemplateProcessing",
            "tokenizer file '{}': post_processor {} is not supported (Qwen's tokenizers have none, ByteLevel, or a "
            "template of the text alone)",
            source_, post.dump());
    const auto single = detail::template_processing_single(post, source_);
    require(single.before.empty() && single.after.empty(),
            "tokenizer file '{}': post_processor {} puts tokens around the text, which is not supported (Qwen's "
            "tokenizers add none: no post-processor, ByteLevel, or a template of the text alone)",
            source_, post.dump());
  }

  // Byte-level BPE of one pre-tokenised word, appended to `out`; results are cached by the word's bytes.
  void append_bpe(std::string_view word, std::vector<int>& out) const {
    {
      std::lock_guard lock(cache_->mutex);
      if (const auto it = cache_->words.find(word); it != cache_->words.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int> symbols;
    symbols.reserve(word.size());
    bool whole_word_in_vocab = false;
    if (ignore_merges_) {
      std::string mapped;
      for (unsigned char b : word) detail::append_utf8(mapped, detail::byte_to_unicode()[b]);
      if (const auto id = token_to_id(mapped)) {
        symbols.push_back(*id);
        whole_word_in_vocab = true;
      }
    }
    if (!whole_word_in_vocab) {
      for (unsigned char b : word)
        if (byte_ids_[b] >= 0)
          symbols.push_back(byte_ids_[b]);  // a byte missing from the vocabulary is dropped, as HF does
      // Repeatedly merge the adjacent pair of lowest rank (leftmost on ties) until none is a merge;
      // pairs[i] describes (symbols[i], symbols[i + 1]) and only the neighbours of a merge are looked up again.
      constexpr Merge kNoMerge{std::numeric_limits<int>::max(), -1};
      const auto lookup = [&](std::size_t i) {
        const auto it = merges_.find(pair_key(symbols[i], symbols[i + 1]));
        return it == merges_.end() ? kNoMerge : it->second;
      };
      std::vector<Merge> pairs;
      if (symbols.size() > 1) {
        pairs.reserve(symbols.size() - 1);
        for (std::size_t i = 0; i + 1 < symbols.size(); ++i) pairs.push_back(lookup(i));
      }
      while (!pairs.empty()) {
        std::size_t best = 0;
        for (std::size_t i = 1; i < pairs.size(); ++i)
          if (pairs[i].rank < pairs[best].rank) best = i;
        if (pairs[best].merged < 0) break;
        symbols[best] = pairs[best].merged;
        symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
        pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(best));
        if (best < pairs.size()) pairs[best] = lookup(best);
        if (best > 0) pairs[best - 1] = lookup(best - 1);
      }
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
    std::lock_guard lock(cache_->mutex);
    if (cache_->words.size() >= kCacheCapacity) cache_->words.clear();
    cache_->words.emplace(std::string(word), std::move(symbols));
  }

  void check_id(int id) const {
    require(id >= 0 && id < vocab_size() && !id_to_token_[static_cast<std::size_t>(id)].empty(),
            "{}: token id {} is not in the vocabulary (size {})", source_, id, vocab_size());
  }
  int require_id(std::optional<int> id, std::string_view which) const {
    require(id.has_value(), "{}: the tokenizer has no {} token", source_, which);
    return *id;
  }

  static constexpr std::size_t kCacheCapacity = 1 << 16;

  std::string source_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, int, detail::StringHash, std::equal_to<>> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<std::string> token_bytes_;  // the bytes each token stands for
  std::vector<bool> special_;
  std::array<int, 256> byte_ids_{};
  std::unordered_map<std::uint64_t, Merge> merges_;
  detail::AddedTokenMatcher raw_added_, normalized_added_;
  std::optional<int> bos_, eos_, pad_;
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int>, detail::StringHash, std::equal_to<>> words;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();  // behind a pointer: the tokenizer stays movable
};

static_assert(Tokenizer<ByteLevelBpeTokenizer>);

}  // namespace vidlora::model
