#pragma once
// load_tokenizer: the tokenizer of a HF model directory, whichever of the two supported kinds it ships.

#include <vidlora/core/error.hpp>
#include <vidlora/model/tokenizer_byte_level_bpe.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <map>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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
// What tokenizer.json's post_processor puts around one text, as transformers 5 takes it for a LLaMA tokenizer (its
// tokenizer_config.json's add_bos_token / add_eos_token are then not read): nothing when there is none, else a
// TemplateProcessing with at most one special token before the text (BOS) and one after it (EOS). Anything else is
// an error naming it.
struct TemplateEnds {
  std::optional<std::pair<std::string, int>> before, after;  // token name, id
};

inline TemplateEnds sentencepiece_post_processor(const nlohmann::json& tokenizer_json, const std::string& from) {
  TemplateEnds out;
  if (!tokenizer_json.contains("post_processor") || tokenizer_json["post_processor"].is_null()) return out;
  const auto& pp = tokenizer_json["post_processor"];
  const std::string type =
      pp.is_object() && pp.contains("type") && pp["type"].is_string() ? pp["type"].get<std::string>() : pp.dump();
  require(type == "TemplateProcessing",
          "tokenizer file '{}': post_processor {} is not supported (TemplateProcessing with a special token before "
          "and after the text, or none)",
          from, type);
  const TemplateSingle single = template_processing_single(pp, from);
  const auto id_of = [&](const std::string& name) {
    const auto& specials = pp.contains("special_tokens") ? pp["special_tokens"] : nlohmann::json();
    const auto& ids =
        specials.is_object() && specials.contains(name) && specials[name].is_object() && specials[name].contains("ids")
            ? specials[name]["ids"]
            : nlohmann::json();
    require(ids.is_array() && ids.size() == 1 && ids[0].is_number_integer(),
            "tokenizer file '{}': post_processor special token '{}' has no single id in \"special_tokens\"", from,
            name);
    return std::pair{name, ids[0].get<int>()};
  };
  for (const auto* side : {&single.before, &single.after}) {
    require(side->size() <= 1,
            "tokenizer file '{}': post_processor puts two special tokens {} the text ('{}', '{}'), which is not "
            "supported",
            from, side == &single.before ? "before" : "after", side->size() > 1 ? (*side)[0] : "",
            side->size() > 1 ? (*side)[1] : "");
    if (!side->empty()) (side == &single.before ? out.before : out.after) = id_of(side->front());
  }
  return out;
}

// A true / false field of tokenizer_config.json (legacy, add_bos_token, add_eos_token): `fallback` when absent or
// null, an error naming the file when it is anything else.
inline bool config_flag(const nlohmann::json* config, const char* key, bool fallback, const std::string& from) {
  if (!config || !config->is_object() || !config->contains(key) || (*config)[key].is_null()) return fallback;
  require((*config)[key].is_boolean(), "tokenizer file '{}': \"{}\" {} is not true or false", from, key,
          (*config)[key].dump());
  return (*config)[key].get<bool>();
}

// The special tokens tokenizer_config.json names, as transformers 5 reads them. `named`: the standard fields
// (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token, in that order), then the other
// top-level "*_token" fields and the entries of an "extra_special_tokens" object (by key); each becomes a special
// token, one the directory adds as not special included. `listed`: "extra_special_tokens" as a non-empty list, else
// transformers 4's "additional_special_tokens"; one the directory adds keeps its flags. Each entry is a string or
// {"content": …}; a null field names nothing.
struct ConfigSpecialTokens {
  std::vector<std::string> named, listed;
  // transformers' special_tokens_map (what a chat template sees as variables): each named token by its key, the
  // standard fields first, an "extra_special_tokens" object's entry replacing a top-level field of the same key.
  std::vector<std::pair<std::string, std::string>> by_key;
};

inline ConfigSpecialTokens config_special_tokens(const nlohmann::json* config, const std::string& from) {
  ConfigSpecialTokens out;
  if (!config || !config->is_object()) return out;
  const auto token_of = [&](const std::string& key, const nlohmann::json& entry) -> std::string {
    const nlohmann::json& content = entry.is_object() && entry.contains("content") ? entry["content"] : entry;
    require(content.is_string(), "tokenizer file '{}': \"{}\" entry {} is not a token string", from, key, entry.dump());
    return content.get<std::string>();
  };
  const auto add = [](std::vector<std::string>& to, std::string token) {
    if (std::find(to.begin(), to.end(), token) == to.end()) to.push_back(std::move(token));
  };
  const auto name = [&](const std::string& key, std::string token) {
    const auto it = std::find_if(out.by_key.begin(), out.by_key.end(), [&](const auto& e) { return e.first == key; });
    if (it != out.by_key.end())
      it->second = token;
    else
      out.by_key.emplace_back(key, token);
    add(out.named, std::move(token));
  };
  static constexpr std::string_view kStandard[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                                   "pad_token", "cls_token", "mask_token"};
  for (const std::string_view standard : kStandard) {
    const std::string key(standard);
    if (config->contains(key) && !(*config)[key].is_null()) name(key, token_of(key, (*config)[key]));
  }
  for (const auto& [key, value] : config->items()) {
    const bool standard = std::find(std::begin(kStandard), std::end(kStandard), key) != std::end(kStandard);
    const bool token_field =
        key.ends_with("_token") && (value.is_string() || (value.is_object() && value.contains("content")));
    if (!standard && token_field) name(key, token_of(key, value));
  }
  const auto field = [&](const char* key) { return config->contains(key) ? (*config)[key] : nlohmann::json(); };
  const nlohmann::json extra = field("extra_special_tokens"), additional = field("additional_special_tokens");
  require(extra.is_null() || extra.is_array() || extra.is_object(),
          "tokenizer file '{}': \"extra_special_tokens\" {} is neither a list nor an object", from, extra.dump());
  require(additional.is_null() || additional.is_array(),
          "tokenizer file '{}': \"additional_special_tokens\" {} is not a list", from, additional.dump());
  if (extra.is_object())
    for (const auto& [key, value] : extra.items()) name(key, token_of("extra_special_tokens", value));
  const nlohmann::json& list = extra.is_array() && !extra.empty() ? extra : additional;
  const char* list_key = extra.is_array() && !extra.empty() ? "extra_special_tokens" : "additional_special_tokens";
  if (list.is_array())
    for (const auto& entry : list) add(out.listed, token_of(list_key, entry));
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
  std::optional<nlohmann::json> json, config;
  const std::string config_name = (directory / "tokenizer_config.json").string();
  if (std::filesystem::exists(directory / "tokenizer_config.json"))
    config = detail::read_tokenizer_json(directory / "tokenizer_config.json");
  if (std::filesystem::exists(json_path)) {
    json = detail::read_tokenizer_json(json_path);
    const auto& pre = json->contains("pre_tokenizer") ? (*json)["pre_tokenizer"] : nlohmann::json();
    const bool byte_level = pre.is_object() && pre.value("type", std::string()) == "Sequence" &&
                            pre.contains("pretokenizers") &&
                            pre["pretokenizers"].dump().find("\"ByteLevel\"") != std::string::npos;
    if (byte_level || !std::filesystem::exists(model_path)) {
      ByteLevelBpeTokenizer tokenizer(*json, json_path.string());
      // The special tokens tokenizer_config.json names must be tokens tokenizer.json adds (special where named):
      // transformers would add a missing one, or make a vocabulary entry or a non-special added token special, which
      // this tokenizer does not do, so each of those is an error naming the token.
      std::map<std::string, bool> added;  // content -> special
      if (json->contains("added_tokens") && (*json)["added_tokens"].is_array())
        for (const auto& t : (*json)["added_tokens"])
          if (t.is_object() && t.contains("content") && t["content"].is_string())
            added[t["content"].get<std::string>()] = t.value("special", false);
      const auto specials = detail::config_special_tokens(config ? &*config : nullptr, config_name);
      for (const auto* group : {&specials.named, &specials.listed})
        for (const auto& token : *group) {
          const auto it = added.find(token);
          require(it != added.end(),
                  "tokenizer file '{}' names the special token '{}', which {} does not add (transformers would add "
                  "it{}): not supported; add it to tokenizer.json's added_tokens",
                  config_name, token, json_path.string(),
                  tokenizer.token_to_id(token) ? " over its vocabulary entry"
                                               : fmt::format(" as id {}", tokenizer.vocab_size()));
          require(it->second || group == &specials.listed,
                  "tokenizer file '{}' names the special token '{}', which {} adds as not special (transformers would "
                  "make it special): not supported; mark it special in tokenizer.json's added_tokens",
                  config_name, token, json_path.string());
        }
      return tokenizer;
    }
  }
  require(std::filesystem::exists(model_path), "'{}' holds neither tokenizer.json nor tokenizer.model",
          directory.string());
  // tokenizer_config.json's `legacy` (a prefix space on every text run after an added token, not only the first),
  // which transformers 5 applies over tokenizer.json's. BOS / EOS come from tokenizer.json's post-processor when
  // there is one (transformers 5 then ignores add_bos_token / add_eos_token), else from those two flags, whose
  // defaults are LlamaTokenizer's documented ones (BOS yes, EOS no; transformers 4 applies them, 5.24 adds no BOS
  // when add_bos_token is absent).
  SentencePieceOptions options;
  options.legacy = detail::config_flag(config ? &*config : nullptr, "legacy", false, config_name);
  detail::TemplateEnds ends;
  if (json) {
    ends = detail::sentencepiece_post_processor(*json, json_path.string());
    options.add_bos = ends.before.has_value();
    options.add_eos = ends.after.has_value();
  } else {
    options.add_bos = detail::config_flag(config ? &*config : nullptr, "add_bos_token", true, config_name);
    options.add_eos = detail::config_flag(config ? &*config : nullptr, "add_eos_token", false, config_name);
  }
  SentencePieceTokenizer tokenizer = SentencePieceTokenizer::from_file(model_path.string(), options);
  const auto check_end = [&](const auto& end, std::optional<int> model_id, const char* what) {
    if (end)
      require(model_id == end->second,
              "tokenizer file '{}': the post_processor puts '{}' (id {}) {} the text, but {}'s {} is {}",
              json_path.string(), end->first, end->second, what == std::string_view("BOS") ? "before" : "after",
              model_path.string(), what, model_id ? std::to_string(*model_id) : std::string("not defined"));
  };
  check_end(ends.before, tokenizer.bos_id(), "BOS");
  check_end(ends.after, tokenizer.eos_id(), "EOS");

  std::string from;
  auto added =
      detail::sentencepiece_added_tokens(directory, json ? &*json : nullptr, config ? &*config : nullptr, from);
  // The special tokens tokenizer_config.json names (detail::config_special_tokens), as transformers takes them: a
  // named one becomes special, a listed one the directory adds keeps its flags, a piece of the model becomes special,
  // a new one is added, special, after the others (the named first).
  const auto specials = detail::config_special_tokens(config ? &*config : nullptr, config_name);
  for (auto& a : added)
    if (std::find(specials.named.begin(), specials.named.end(), a.content) != specials.named.end()) a.special = true;
  if (!added.empty()) tokenizer.add_tokens(added, from);
  std::vector<detail::AddedToken> named;
  int next_id = tokenizer.vocab_size();
  for (const auto* group : {&specials.named, &specials.listed})
    for (const auto& token : *group) {
      if (std::any_of(added.begin(), added.end(), [&](const auto& a) { return a.content == token; })) continue;
      if (std::any_of(named.begin(), named.end(), [&](const auto& a) { return a.content == token; })) continue;
      const auto id = tokenizer.token_to_id(token);
      if (id && *id >= tokenizer.pieces()) continue;  // added by the directory under another entry
      named.push_back({.content = token, .id = id ? *id : next_id++, .special = true});
    }
  if (!named.empty()) tokenizer.add_tokens(named, config_name);
  return tokenizer;
}

}  // namespace vidlora::model
