#pragma once
// load_tokenizer: the tokenizer of a HF model directory, whichever of the two supported kinds it ships.

#include <vidlora/core/error.hpp>
#include <vidlora/model/tokenizer_byte_level_bpe.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace vidlora::model {

using AnyTokenizer = std::variant<SentencePieceTokenizer, ByteLevelBpeTokenizer>;

namespace detail {
inline nlohmann::json read_tokenizer_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(static_cast<bool>(in), "cannot open tokenizer file '{}'", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    fail("tokenizer file '{}' does not parse as JSON: {}", path.string(), e.what());
  }
}

// The tokens added beside tokenizer.model: tokenizer.json's "added_tokens" when the directory has one (what
// AutoTokenizer loads), else tokenizer_config.json's "added_tokens_decoder" (what the slow LlamaTokenizer reads).
inline std::vector<AddedToken> sentencepiece_added_tokens(const std::filesystem::path& directory,
                                                          const nlohmann::json* tokenizer_json,
                                                          const nlohmann::json* tokenizer_config, std::string& from) {
  std::vector<AddedToken> out;
  if (tokenizer_json) {
    from = (directory / "tokenizer.json").string();
    const auto& list = tokenizer_json->contains("added_tokens") ? (*tokenizer_json)["added_tokens"] : nlohmann::json();
    require(list.is_null() || list.is_array(), "tokenizer file '{}': \"added_tokens\" is not a list", from);
    if (list.is_array())
      for (const auto& t : list) {
        require(t.is_object() && t.contains("id") && t["id"].is_number_integer(),
                "tokenizer file '{}': added token {} has no integer \"id\"", from, t.dump());
        out.push_back(added_token_from_json(t, t["id"].get<int>(), from));
      }
    return out;
  }
  if (!tokenizer_config) return out;
  from = (directory / "tokenizer_config.json").string();
  const nlohmann::json& config = *tokenizer_config;
  if (!config.is_object() || !config.contains("added_tokens_decoder")) return out;
  const auto& decoder = config["added_tokens_decoder"];
  require(decoder.is_object(), "tokenizer file '{}': \"added_tokens_decoder\" is not an object", from);
  for (const auto& [key, t] : decoder.items()) {
    int id = -1;
    try {
      std::size_t used = 0;
      id = std::stoi(key, &used);
      require(used == key.size(), "");
    } catch (...) {
      fail("tokenizer file '{}': added_tokens_decoder key '{}' is not a token id", from, key);
    }
    out.push_back(added_token_from_json(t, id, from));
  }
  return out;
}
}  // namespace detail

// A tokenizer.json with Qwen2's byte-level pipeline is loaded as ByteLevelBpeTokenizer; otherwise (LLaMA
// directories ship a Metaspace tokenizer.json beside tokenizer.model) tokenizer.model is loaded as
// SentencePieceTokenizer, with the tokens the directory adds beside it (detail::sentencepiece_added_tokens).
// Throws when neither applies, naming the directory.
inline AnyTokenizer load_tokenizer(const std::filesystem::path& directory) {
  const auto json_path = directory / "tokenizer.json";
  const auto model_path = directory / "tokenizer.model";
  std::optional<nlohmann::json> json;
  if (std::filesystem::exists(json_path)) {
    json = detail::read_tokenizer_json(json_path);
    const auto& pre = json->contains("pre_tokenizer") ? (*json)["pre_tokenizer"] : nlohmann::json();
    const bool byte_level = pre.is_object() && pre.value("type", std::string()) == "Sequence" &&
                            pre.contains("pretokenizers") &&
                            pre["pretokenizers"].dump().find("\"ByteLevel\"") != std::string::npos;
    if (byte_level || !std::filesystem::exists(model_path)) return ByteLevelBpeTokenizer(*json, json_path.string());
  }
  require(std::filesystem::exists(model_path), "'{}' holds neither tokenizer.json nor tokenizer.model",
          directory.string());
  // tokenizer_config.json's `legacy` (a prefix space on every text run after an added token, not only the first),
  // which transformers 5 applies over tokenizer.json's; its add_bos_token / add_eos_token it does not (the ids come
  // from tokenizer.json's post-processor), and neither does this loader.
  std::optional<nlohmann::json> config;
  SentencePieceOptions options;
  if (std::filesystem::exists(directory / "tokenizer_config.json")) {
    config = detail::read_tokenizer_json(directory / "tokenizer_config.json");
    if (config->is_object() && config->contains("legacy") && !(*config)["legacy"].is_null()) {
      require((*config)["legacy"].is_boolean(), "tokenizer file '{}': \"legacy\" {} is not true or false",
              (directory / "tokenizer_config.json").string(), (*config)["legacy"].dump());
      options.legacy = (*config)["legacy"].get<bool>();
    }
  }
  SentencePieceTokenizer tokenizer = SentencePieceTokenizer::from_file(model_path.string(), options);
  std::string from;
  const auto added =
      detail::sentencepiece_added_tokens(directory, json ? &*json : nullptr, config ? &*config : nullptr, from);
  if (!added.empty()) tokenizer.add_tokens(added, from);
  return tokenizer;
}

}  // namespace vidlora::model
