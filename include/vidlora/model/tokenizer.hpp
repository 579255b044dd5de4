#pragma once
// concept Tokenizer: what the trainer and generation need from a tokenizer, whichever file it came from.

#include <concepts>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vidlora::model {

// Per-call switches; an unset field keeps the tokenizer's own default (LLaMA: BOS on, EOS off; Qwen2: both off).
struct EncodeOptions {
  std::optional<bool> add_bos = std::nullopt;
  std::optional<bool> add_eos = std::nullopt;
};

// A text <-> token-id mapping. encode() splits the tokenizer's added/special tokens out of the text
// first, so a rendered chat template ("<|im_start|>user\n...") encodes to the right ids.
// decode(encode(s)) == s for NFC text (and, with the LLaMA BOS, after decode drops it).
template <class T>
concept Tokenizer = requires(const T& tokenizer, std::string_view text, std::span<const int> ids, int id) {
  { tokenizer.encode(text) } -> std::same_as<std::vector<int>>;
  { tokenizer.encode(text, EncodeOptions{}) } -> std::same_as<std::vector<int>>;
  { tokenizer.decode(ids) } -> std::same_as<std::string>;
  { tokenizer.decode(ids, true) } -> std::same_as<std::string>;  // skip special tokens
  { tokenizer.vocab_size() } -> std::same_as<int>;
  { tokenizer.bos_id() } -> std::same_as<std::optional<int>>;
  { tokenizer.eos_id() } -> std::same_as<std::optional<int>>;
  { tokenizer.pad_id() } -> std::same_as<std::optional<int>>;
  { tokenizer.token_to_id(text) } -> std::same_as<std::optional<int>>;
  { tokenizer.id_to_token(id) } -> std::convertible_to<std::string_view>;
};

}  // namespace vidlora::model
