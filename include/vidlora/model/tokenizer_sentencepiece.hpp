#pragma once
// SentencePieceTokenizer: a LLaMA / Vicuna tokenizer.model through libsentencepiece, producing the ids
// transformers' LlamaTokenizer produces for the same file (added tokens split out first, prefix space
// on the first text run only unless `legacy`, BOS on by default) and decoding as its decoder chain does.

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/added_tokens.hpp>
#include <vidlora/model/detail/unicode.hpp>
#include <vidlora/model/tokenizer.hpp>

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace vidlora::model {

namespace detail {

// The few fields of sentencepiece's ModelProto (protobuf wire format) this tokenizer needs.
struct SentencePieceModelInfo {
  std::vector<int> piece_types;      // SentencePiece.Type: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  bool add_dummy_prefix = true;      // NormalizerSpec.add_dummy_prefix (default true)
  std::string without_dummy_prefix;  // the model re-serialized with add_dummy_prefix = false
};

class ProtoReader {
 public:
  ProtoReader(std::string_view bytes, std::string_view source) : bytes_(bytes), source_(source) {}
  bool done() const { return pos_ >= bytes_.size(); }
  std::size_t pos() const { return pos_; }

  std::uint64_t varint() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      require(pos_ < bytes_.size(), "{}: not a SentencePiece model (truncated varint at byte {})", source_, pos_);
      const auto b = static_cast<unsigned char>(bytes_[pos_++]);
      value |= std::uint64_t{b & 0x7Fu} << shift;
      if (!(b & 0x80)) return value;
    }
    fail("{}: not a SentencePiece model (varint longer than 10 bytes at byte {})", source_, pos_);
  }

  // Reads a field; returns its number and wire type, leaving a length-delimited payload in `payload`.
  std::pair<std::uint32_t, std::uint32_t> field(std::string_view& payload, std::uint64_t& value) {
    const std::uint64_t key = varint();
    const auto number = static_cast<std::uint32_t>(key >> 3), wire = static_cast<std::uint32_t>(key & 7);
    require(number != 0, "{}: not a SentencePiece model (field number 0 at byte {})", source_, pos_);
    switch (wire) {
      case 0: value = varint(); break;
      case 1: skip(8); break;
      case 2: {
        const std::uint64_t n = varint();
        require(n <= bytes_.size() - pos_, "{}: not a SentencePiece model (field {} claims {} bytes, {} left)", source_,
                number, n, bytes_.size() - pos_);
        payload = bytes_.substr(pos_, n);
        pos_ += n;
        break;
      }
      case 5: skip(4); break;
      default: fail("{}: not a SentencePiece model (wire type {} at byte {})", source_, wire, pos_);
    }
    return {number, wire};
  }

 private:
  void skip(std::size_t n) {
    require(n <= bytes_.size() - pos_, "{}: not a SentencePiece model (truncated at byte {})", source_, pos_);
    pos_ += n;
  }
  std::string_view bytes_, source_;
  std::size_t pos_ = 0;
};

inline void append_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

inline SentencePieceModelInfo read_sentencepiece_model(std::string_view bytes, std::string_view source) {
  SentencePieceModelInfo info;
  ProtoReader top(bytes, source);
  bool saw_normalizer = false;
  std::size_t field_start = 0;
  while (!top.done()) {
    std::string_view payload;
    std::uint64_t value = 0;
    const auto [number, wire] = top.field(payload, value);
    if (number == 1 && wire == 2) {  // ModelProto.pieces
      int type = 1;
      ProtoReader piece(payload, source);
      while (!piece.done()) {
        std::string_view p;
        std::uint64_t v = 0;
        const auto [n, w] = piece.field(p, v);
        if (n == 3 && w == 0) type = static_cast<int>(v);
      }
      info.piece_types.push_back(type);
    }
    if (number == 3 && wire == 2) {  // ModelProto.normalizer_spec: re-emit with add_dummy_prefix = false appended
      saw_normalizer = true;
      ProtoReader spec(payload, source);
      while (!spec.done()) {
        std::string_view p;
        std::uint64_t v = 0;
        const auto [n, w] = spec.field(p, v);
        if (n == 3 && w == 0) info.add_dummy_prefix = v != 0;
      }
      std::string patched(payload);
      patched += "\x18";
      patched.push_back('\0');
      info.without_dummy_prefix.push_back('\x1A');
      append_varint(info.without_dummy_prefix, patched.size());
      info.without_dummy_prefix += patched;
    } else {
      info.without_dummy_prefix.append(bytes.substr(field_start, top.pos() - field_start));
    }
    field_start = top.pos();
  }
  require(!info.piece_types.empty(), "{}: not a SentencePiece model (no pieces)", source);
  if (!saw_normalizer) info.without_dummy_prefix += std::string("\x1A\x02\x18\x00", 4);
  return info;
}

inline std::string read_binary_file(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "cannot open {} '{}'", what, path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace detail

struct SentencePieceOptions {
  bool legacy = false;   // transformers' `legacy`: prefix space on every text run after an added token too
  bool add_bos = true;   // LlamaTokenizer's add_bos_token
  bool add_eos = false;  // LlamaTokenizer's add_eos_token
};

class SentencePieceTokenizer {
 public:
  using Options = SentencePieceOptions;

  // Loads a tokenizer.model; errors name the file and what is wrong with it.
  static SentencePieceTokenizer from_file(const std::string& path, Options options = {}) {
    return SentencePieceTokenizer(detail::read_binary_file(path, "SentencePiece model"), path, options);
  }

  // `serialized`: the bytes of a tokenizer.model; `source` names it in errors.
  SentencePieceTokenizer(std::string_view serialized, std::string_view source, Options options = {})
      : options_(options), source_(source) {
    const detail::SentencePieceModelInfo info = detail::read_sentencepiece_model(serialized, source_);
    add_prefix_space_ = info.add_dummy_prefix;
    load(processor_, serialized);
    load(encoder_, info.without_dummy_prefix);
    require(static_cast<std::size_t>(processor_->GetPieceSize()) == info.piece_types.size(),
            "{}: sentencepiece reports {} pieces, the file holds {}", source_, processor_->GetPieceSize(),
            info.piece_types.size());
    piece_types_ = info.piece_types;
    for (int id = 0; id < pieces(); ++id) {
      const int type = piece_types_[static_cast<std::size_t>(id)];
      special_.push_back(type == kUnknown || type == kControl);
      if (type == kUnknown || type == kControl || type == kUserDefined)
        added_list_.push_back({.content = processor_->IdToPiece(id), .id = id, .special = special_.back()});
    }
    rebuild_matcher();
  }

  // The tokens a Hugging Face directory adds beside tokenizer.model (tokenizer.json's "added_tokens", or
  // tokenizer_config.json's "added_tokens_decoder"; `from` names the file), as transformers' LLaMA tokenizers take
  // them: a token with a piece's id must be that piece and gives it its flags (`special`: decode with skip_special
  // drops it; split out of the text before the model sees it); ids past the model's pieces (LLaVA's <image> and
  // <video> past a 32,000-piece model) extend the vocabulary, in order, with no gap.
  void add_tokens(const std::vector<detail::AddedToken>& tokens, std::string_view from) {
    std::vector<detail::AddedToken> sorted = tokens;
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    for (const auto& t : sorted) {
      if (t.id < pieces()) {
        const std::string& piece = processor_->IdToPiece(t.id);
        require(piece == t.content, "{}: added token '{}' has id {}, but {}'s piece {} is '{}'", from, t.content, t.id,
                source_, t.id, piece);
        const auto it =
            std::find_if(added_list_.begin(), added_list_.end(), [&](const auto& a) { return a.id == t.id; });
        if (it != added_list_.end())
          *it = t;
        else
          added_list_.push_back(t);
        special_[static_cast<std::size_t>(t.id)] = t.special;
        continue;
      }
      require(t.id == vocab_size(),
              "{}: added token '{}' has id {}, but the vocabulary ends at {} ({} pieces in {} and {} added after "
              "them): added ids must follow the model's without a gap",
              from, t.content, t.id, vocab_size(), pieces(), source_, extra_.size());
      require(!token_to_id(t.content).has_value(), "{}: added token '{}' (id {}) is already token {}", from, t.content,
              t.id, token_to_id(t.content).value_or(-1));
      extra_.push_back(t.content);
      special_.push_back(t.special);
      added_list_.push_back(t);
    }
    rebuild_matcher();
  }

  int pieces() const { return processor_->GetPieceSize(); }  // the model's; added tokens follow
  int vocab_size() const { return pieces() + static_cast<int>(extra_.size()); }
  std::optional<int> bos_id() const { return optional_id(processor_->bos_id()); }
  std::optional<int> eos_id() const { return optional_id(processor_->eos_id()); }
  std::optional<int> pad_id() const { return optional_id(processor_->pad_id()); }
  std::optional<int> unk_id() const { return optional_id(processor_->unk_id()); }
  const Options& options() const { return options_; }

  std::optional<int> token_to_id(std::string_view piece) const {
    for (std::size_t i = 0; i < extra_.size(); ++i)
      if (extra_[i] == piece) return pieces() + static_cast<int>(i);
    const int id = processor_->PieceToId(piece);
    if (id == processor_->unk_id() && piece != processor_->IdToPiece(id)) return std::nullopt;
    return id;
  }
  const std::string& id_to_token(int id) const {
    check_id(id);
    return id < pieces() ? processor_->IdToPiece(id) : extra_[static_cast<std::size_t>(id - pieces())];
  }
  bool is_special(int id) const {
    check_id(id);
    return special_[static_cast<std::size_t>(id)];
  }

  std::vector<int> encode(std::string_view text) const { return encode(text, EncodeOptions{}); }

  std::vector<int> encode(std::string_view text, EncodeOptions call) const {
    std::vector<int> ids;
    if (call.add_bos.value_or(options_.add_bos)) ids.push_back(require_id(bos_id(), "BOS"));
    std::vector<detail::TextPiece> pieces;
    added_.split(text, pieces);
    std::vector<int> run;
    std::string buffer;
    for (const auto& piece : pieces) {
      if (piece.token >= 0) {
        ids.push_back(piece.token);
        continue;
      }
      // HF's Metaspace: spaces become U+2581 and a prefix U+2581 is added to the run at offset 0
      // (to every run when legacy) unless it already starts with one; encoder_ adds no prefix itself.
      const bool first = piece.text.data() == text.data();
      std::string_view input = piece.text;
      if (add_prefix_space_ && (first || options_.legacy) && input.front() != ' ') {
        buffer.clear();
        buffer.push_back(' ');
        buffer.append(input);
        input = buffer;
      }
      const auto status = encoder_->Encode(input, &run);
      require(status.ok(), "{}: sentencepiece encode failed: {}", source_, status.ToString());
      ids.insert(ids.end(), run.begin(), run.end());
    }
    if (call.add_eos.value_or(options_.add_eos)) ids.push_back(require_id(eos_id(), "EOS"));
    return ids;
  }

  // transformers' LLaMA decoder chain: U+2581 -> space, runs of <0xXX> byte pieces joined (one U+FFFD per
  // byte when they are not valid UTF-8), concatenated, then one leading space stripped.
  std::string decode(std::span<const int> ids, bool skip_special = false) const {
    std::string out, bytes;
    const auto flush_bytes = [&] {
      if (bytes.empty()) return;
      if (detail::is_valid_utf8(bytes)) {
        out += bytes;
      } else {
        for (std::size_t i = 0; i < bytes.size(); ++i) out += "\xEF\xBF\xBD";
      }
      bytes.clear();
    };
    for (int id : ids) {
      check_id(id);
      if (skip_special && is_special(id)) continue;
      const std::string& piece = id_to_token(id);
      if (id < pieces() && piece_types_[static_cast<std::size_t>(id)] == kByte && piece.size() == 6) {
        bytes.push_back(static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
        continue;
      }
      flush_bytes();
      for (std::size_t i = 0; i < piece.size();) {
        if (piece.compare(i, 3, kSpaceMark) == 0) {
          out.push_back(' ');
          i += 3;
        } else {
          out.push_back(piece[i++]);
        }
      }
    }
    flush_bytes();
    if (add_prefix_space_ && !out.empty() && out.front() == ' ') out.erase(0, 1);
    return out;
  }

 private:
  static constexpr int kUnknown = 2, kControl = 3, kUserDefined = 4, kByte = 6;
  static constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581

  static std::optional<int> optional_id(int id) { return id >= 0 ? std::optional<int>(id) : std::nullopt; }
  void rebuild_matcher() {
    added_ = detail::AddedTokenMatcher{};
    for (const auto& t : added_list_) added_.add(t);
  }

  void load(std::shared_ptr<sentencepiece::SentencePieceProcessor>& processor, std::string_view bytes) {
    processor = std::make_shared<sentencepiece::SentencePieceProcessor>();
    const auto status = processor->LoadFromSerializedProto(bytes);
    require(status.ok(), "{}: sentencepiece cannot load the model: {}", source_, status.ToString());
  }
  void check_id(int id) const {
    require(id >= 0 && id < vocab_size(), "{}: token id {} is outside the vocabulary [0, {})", source_, id,
            vocab_size());
  }
  int require_id(std::optional<int> id, std::string_view which) const {
    require(id.has_value(), "{}: the model has no {} token", source_, which);
    return *id;
  }

  Options options_;
  std::string source_;
  bool add_prefix_space_ = true;
  std::shared_ptr<sentencepiece::SentencePieceProcessor> processor_;  // the model as stored: ids <-> pieces
  std::shared_ptr<sentencepiece::SentencePieceProcessor> encoder_;    // same model, add_dummy_prefix = false
  std::vector<int> piece_types_;
  std::vector<std::string> extra_;              // added tokens past the model's pieces, id pieces() + index
  std::vector<bool> special_;                   // per id
  std::vector<detail::AddedToken> added_list_;  // what added_ matches
  detail::AddedTokenMatcher added_;
};

static_assert(Tokenizer<SentencePieceTokenizer>);

}  // namespace vidlora::model
