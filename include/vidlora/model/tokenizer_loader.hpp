#pragma once
// load_tokenizer: the tokenizer of a HF model directory, whichever of the two supported kinds it ships.

#include <vidlora/core/error.hpp>
#include <vidlora/model/tokenizer_byte_level_bpe.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <variant>

namespace vidlora::model {

using AnyTokenizer = std::variant<SentencePieceTokenizer, ByteLevelBpeTokenizer>;

// A tokenizer.json with Qwen2's byte-level pipeline is loaded as ByteLevelBpeTokenizer; otherwise (LLaMA
// directories ship a Metaspace tokenizer.json beside tokenizer.model) tokenizer.model is loaded as
// SentencePieceTokenizer. Throws when neither applies, naming the directory.
inline AnyTokenizer load_tokenizer(const std::filesystem::path& directory) {
  const auto json_path = directory / "tokenizer.json";
  const auto model_path = directory / "tokenizer.model";
  if (std::filesystem::exists(json_path)) {
    std::ifstream in(json_path);
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
      fail("tokenizer file '{}' does not parse as JSON: {}", json_path.string(), e.what());
    }
    const auto& pre = json.contains("pre_tokenizer") ? json["pre_tokenizer"] : nlohmann::json();
    const bool byte_level = pre.is_object() && pre.value("type", std::string()) == "Sequence" &&
                            pre.contains("pretokenizers") &&
                            pre["pretokenizers"].dump().find("\"ByteLevel\"") != std::string::npos;
    if (byte_level || !std::filesystem::exists(model_path)) return ByteLevelBpeTokenizer(json, json_path.string());
  }
  require(std::filesystem::exists(model_path), "'{}' holds neither tokenizer.json nor tokenizer.model",
          directory.string());
  return SentencePieceTokenizer::from_file(model_path.string());
}

}  // namespace vidlora::model
